"""The progress bar of long policy work (training, evaluation in the twin): done of total,
elapsed, ETA and one free-text field for the current numbers. rich, on stderr, so a
command's stdout keeps only its results; silent when disabled (other ranks, tests, logs)."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """A rich progress bar on stderr, started on construction; a no-op when not `enabled`.

    `completed` is kept either way, so callers can read it back. Call `close()` (in a
    `finally`) to stop the bar's refresh thread and leave the terminal clean.
    """

    def __init__(self, label: str, total: int, completed: int = 0, enabled: bool = True) -> None:
        self.completed = completed
        self._bar: Any = None
        if not enabled:
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
            console=Console(stderr=True),
        )
        self._task = self._bar.add_task(label, total=total, completed=completed, info="")
        self._bar.start()

    def update(self, completed: int, info: str | None = None) -> None:
        """Set the done count (absolute, not a delta); `info` replaces the free-text field."""
        self.completed = completed
        if self._bar is not None:
            fields = {} if info is None else {"info": info}
            self._bar.update(self._task, completed=completed, **fields)

    def step(self) -> None:
        self.update(self.completed + 1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
