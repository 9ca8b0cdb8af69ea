"""A function that dies of a signal, as native code does, for run_isolated's tests."""

from __future__ import annotations

import os
import signal


def die_of(signum: int, progress=None) -> None:
    if progress is not None:
        progress(1, 2)
    signal.signal(signum, signal.SIG_DFL)  # Python must not turn it into an exception
    os.kill(os.getpid(), signum)
