"""`LinePrinter`: progress lines (`--no-tui`) printed off the control loop.

    printer = LinePrinter()
    printer.say("[deploy] episode 1/3 ...")   # never blocks the caller
    printer.close()                           # the queued lines printed, in order

A `print(..., flush=True)` on the loop thread blocks for as long as stdout does: a pipe
nobody reads (`platform deploy --no-tui | less`, paused), a terminal scrolled back, a slow
ssh link. The control loop and the e-stop it obeys would wait behind it. So the loop only
queues a line, and a daemon thread writes it; when the queue is full the newest lines are
dropped and the next line queued says how many went before it.
"""

from __future__ import annotations

import queue
import sys
import threading
from typing import TextIO


class LinePrinter:
    """Lines written to `stream` (default: sys.stdout when written) by a daemon thread,
    in order; `say` never blocks. `capacity` lines wait at most (further ones are counted
    as dropped)."""

    def __init__(self, capacity: int = 256, stream: TextIO | None = None) -> None:
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue(maxsize=capacity)
        self._stream = stream
        self._lock = threading.Lock()  # say() may come from the loop and from the main thread
        self._dropped = 0  # since the last line queued
        self._closed = False
        self._thread = threading.Thread(target=self._write_lines, name="shallowpi-lines", daemon=True)
        self._thread.start()

    def say(self, line: str) -> None:
        """Queue `line` (no newline) for printing; drops it when `capacity` lines wait."""
        with self._lock:
            if self._closed:
                return
            try:
                self._queue.put_nowait((line, self._dropped))
                self._dropped = 0
            except queue.Full:
                self._dropped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Print what is queued (waiting at most `timeout_s` for a stream that does not
        take it), then stop the thread; later `say` calls are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._queue.put(None, timeout=timeout_s)  # the end marker, behind the queued lines
        except queue.Full:
            return  # the stream takes nothing: give up on it (the thread is a daemon)
        self._thread.join(timeout_s)

    def _write_lines(self) -> None:
        while (item := self._queue.get()) is not None:
            line, dropped = item
            if dropped:
                line = f"{line}  ({dropped} line(s) before this dropped: stdout was not read fast enough)"
            stream = self._stream or sys.stdout
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be shown
                return
