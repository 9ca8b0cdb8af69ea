"""The terminal of a command that drives a robot: `LinePrinter`, progress lines (`--no-tui`)
printed off the control loop, `discard_typed_ahead`, before a question, and
`interrupt_on_signals`, SIGTERM and SIGHUP (the terminal closed) taken as Ctrl-C.

    printer = LinePrinter()
    printer.say("[deploy] episode 1/3 ...")   # never blocks the caller
    printer.flush()                           # before a dashboard takes the terminal
    printer.close()                           # the queued lines printed, in order

A `print(..., flush=True)` on the loop thread blocks for as long as stdout does: a pipe
nobody reads (`platform deploy --no-tui | less`, paused), a terminal scrolled back, a slow
ssh link. The control loop and the e-stop it obeys would wait behind it. So the loop only
queues a line, and a daemon thread writes it; when the queue is full the newest lines are
dropped and the next line queued says how many went before it.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from typing import Any, TextIO

_END = None  # the queue item that stops the thread

# Said when a command that drove a robot has turned its torque off, however it ended: the
# arms fall under their own weight, and what they held falls with them.
TORQUE_OFF = "torque is off: the arms no longer hold their pose (support them before the next run)"


def torque_off_line(robot: object) -> str:
    """What the operator is told once the robot is put away: TORQUE_OFF, or, where its last
    disconnect could not switch a bus off (`torque_off_failures`: a failed write, an
    unplugged adapter), that the servos may still hold and the power must be cut."""
    if failures := getattr(robot, "torque_off_failures", None):
        return (f"torque off NOT confirmed ({'; '.join(failures)}): those servos may still hold: support the "
                "arm, then cut the servo power before going near the robot")
    return TORQUE_OFF


class LinePrinter:
    """Lines written to `stream` (default: sys.stdout when written) by a daemon thread,
    in order; `say` never blocks. `capacity` lines wait at most (further ones are counted
    as dropped)."""

    def __init__(self, capacity: int = 256, stream: TextIO | None = None) -> None:
        self._queue: queue.Queue[tuple[str, int] | threading.Event | None] = queue.Queue(maxsize=capacity)
        self._stream = stream
        self._lock = threading.Lock()  # say() may come from the loop and from the main thread
        self._dropped = 0  # since the last line queued
        self._closed = False
        self._thread = threading.Thread(target=self._write_lines, name="shallowpi-lines", daemon=True)
        self._thread.start()

    def say(self, line: str) -> None:
        """Queue `line` (no newline) for printing; drops it when `capacity` lines wait, and
        once closed."""
        with self._lock:
            if self._closed:
                return
            try:
                self._queue.put_nowait((line, self._dropped))
                self._dropped = 0
            except queue.Full:
                self._dropped += 1

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until every line queued so far is written (at most `timeout_s`: a stream
        that takes nothing is given up on); True if they were."""
        reached = threading.Event()
        return self._put(reached, time.monotonic() + timeout_s) and reached.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Print what is queued, and how many lines were dropped at the end, within
        `timeout_s` in all; then stop the thread. Later `say` calls are ignored."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            dropped, self._dropped = self._dropped, 0
        deadline = time.monotonic() + timeout_s
        if dropped:
            self._put((f"({dropped} line(s) dropped at the end: stdout was not read fast enough)", 0), deadline)
        if self._put(_END, deadline):
            self._thread.join(max(0.0, deadline - time.monotonic()))

    def _put(self, item: tuple[str, int] | threading.Event | None, deadline: float) -> bool:
        """Queue `item` behind the lines, waiting until `deadline` for room; False when the
        writer is gone (the stream closed) or never made room."""
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                return True
            except queue.Full:
                if time.monotonic() >= deadline:
                    return False
        return False

    def _write_lines(self) -> None:
        while (item := self._queue.get()) is not _END:
            if isinstance(item, threading.Event):  # flush(): everything before it is written
                item.set()
                continue
            line, dropped = item
            if dropped:
                line = f"{line}  ({dropped} line(s) before this dropped: stdout was not read fast enough)"
            stream = self._stream or sys.stdout
            if stream is None:  # started with stdout closed (>&-): nowhere to show them
                return
            try:
                stream.write(line + "\n")
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be shown
                return


def discard_typed_ahead(stream: TextIO | None = None) -> None:
    """Drop what was typed on the terminal before a question was asked: an Enter pressed
    while a backend warmed up ("is it alive?") or during the episodes would otherwise answer
    a safety question nobody had read (the robot moving, an arm let go). A no-op when
    `stream` (default sys.stdin) is not a terminal."""
    stream = stream or sys.stdin
    try:
        fd = stream.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by a test harness, or closed
        return
    if os.isatty(fd):
        import termios  # POSIX; imported here so that the printer needs none

        termios.tcflush(fd, termios.TCIFLUSH)


def interrupt_on_signals() -> dict[int, Any]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does: by default they end the
    process at once, with none of the clean-up a command runs for Ctrl-C (torque off, files
    closed, a summary). Main thread only (Python delivers signals there). Returns the
    handlers replaced, for `signal.signal` to put back."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    return {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
