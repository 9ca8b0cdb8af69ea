"""The progress bar of long policy work (training, evaluation in the twin): done of total,
elapsed, ETA and one free-text field for the current numbers. rich, on stderr, so a
command's stdout keeps only its results; silent when disabled (other ranks, tests, logs)
or when stderr is closed (`2>&-`).

Where rich cannot draw live (a log file, CI, `platform demo` piped, and a terminal with
TERM=dumb: Emacs' shell, some IDE consoles) it draws nothing until the end, so a 10-minute
training would look hung: there, a plain line every `every_s` says the same (done of
total, elapsed, ETA, the numbers)."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from shallowpi.terminal import is_interactive


class ProgressBar:
    """A rich progress bar on stderr, started on construction; a no-op when not `enabled`
    or when there is no stderr. Where rich cannot draw live on it (no terminal, or
    TERM=dumb): a plain line every `every_s` seconds instead.

    `completed` is kept either way, so callers can read it back. Call `close()` (in a
    `finally`) to stop the bar's refresh thread and leave the terminal clean.
    """

    def __init__(self, label: str, total: int, completed: int = 0, enabled: bool = True,
                 every_s: float = 30.0, stream: TextIO | None = None) -> None:
        self.completed = completed
        self._bar: Any = None
        self._lines: PlainLines | None = None
        stream = stream if stream is not None else sys.stderr
        if not enabled or stream is None:  # None: stderr closed at start, nowhere to show it
            return
        # Not "is it a tty": on a TERM=dumb terminal rich's bar shows nothing until stop().
        if not is_interactive(stream):
            self._lines = PlainLines(label, total, completed, every_s, stream)
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn(label),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=Console(file=stream),
        )
        self._task = self._bar.add_task(label, total=total, completed=completed, info="")
        self._bar.start()

    def update(self, completed: int, info: str | None = None) -> None:
        """Set the done count (absolute, not a delta); `info` replaces the free-text field."""
        self.completed = completed
        if self._bar is not None:
            fields = {} if info is None else {"info": info}
            self._bar.update(self._task, completed=completed, **fields)
        if self._lines is not None:
            self._lines.update(completed, info)

    def step(self) -> None:
        """Count one more done."""
        self.update(self.completed + 1)

    def close(self) -> None:
        """Stop the bar (or print the last plain line if it is not printed yet)."""
        if self._bar is not None:
            self._bar.stop()
        if self._lines is not None:
            self._lines.close()


class PlainLines:
    """`label done/total, elapsed, eta, info` every `every_s` seconds, and once at the end:
    the progress bar where rich cannot draw one live. `total` None: not known yet (`?`)."""

    def __init__(self, label: str, total: int | None, start: int, every_s: float, stream: TextIO) -> None:
        self.label, self.total, self.start, self.every_s, self.stream = label, total, start, every_s, stream
        self.t0 = self.last = time.monotonic()
        self.done, self.info, self.printed = start, "", start

    def update(self, completed: int, info: str | None = None, total: int | None = None) -> None:
        """As `Progress.update` (`completed` absolute; `total`, when given, replaces the
        total); prints when `every_s` seconds have passed since the last line."""
        self.done, self.info = completed, self.info if info is None else info
        if total is not None:
            self.total = total
        if time.monotonic() - self.last >= self.every_s:
            self._print()

    def close(self) -> None:
        """Print the last state unless the last line already said it."""
        if self.done != self.printed:
            self._print()

    def _print(self) -> None:
        self.last, self.printed = time.monotonic(), self.done
        elapsed = self.last - self.t0
        rate = (self.done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = f"{_clock((self.total - self.done) / rate)}" if rate > 0 and self.total is not None else "?"
        info = f" {self.info}" if self.info else ""
        total = "?" if self.total is None else self.total
        print(f"{self.label} {self.done}/{total} {_clock(elapsed)} eta {eta}{info}", file=self.stream, flush=True)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
