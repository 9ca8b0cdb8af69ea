"""Hold Ctrl-C, SIGTERM and SIGHUP over a step that must not be cut between its parts.

A delete's swap (two renames) and the line that says it happened are one step: cut after
the renames and before the line, the user saw "interrupted", ran the same delete again,
and removed the episode that had taken the deleted one's index.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Within the block, SIGINT, SIGTERM and SIGHUP are noted, not acted on; on leaving it
    the handlers are put back and the first one noted is raised again, so it acts then (a
    Ctrl-C: KeyboardInterrupt after the block). Keep the block short: the user's Ctrl-C
    waits for it. Off the main thread (where Python cannot set handlers) a plain block."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []

    def note(signum: int, _frame: Any) -> None:
        noted.append(signum)

    before = {sig: signal.signal(sig, note) for sig in DEFERRED}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        if noted:
            os.kill(os.getpid(), noted[0])
