"""A function that dies of a signal, as native code does, for run_isolated's tests."""

from __future__ import annotations

import os
import signal


def die_of(signum: int, progress=None) -> None:
    if progress is not None:
        progress(1, 2)
    signal.signal(signum, signal.SIG_DFL)  # Python must not turn it into an exception
    os.kill(os.getpid(), signum)


def work_silently(pid_file: str, done_file: str, seconds: float, progress=None) -> None:
    """Write this process's pid to `pid_file`, work `seconds` without a progress call (as
    an encoder does on one camera's video), then write `done_file`."""
    import time
    from pathlib import Path

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    Path(done_file).write_text("done")
