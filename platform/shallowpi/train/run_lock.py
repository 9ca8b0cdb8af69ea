"""One trainer per run folder: an exclusive `flock` on `<run>/.lock`, which names its holder.

Two trainers in one folder (`--resume` launched twice, a SLURM requeue while the first job
still runs) both trained: each cut the other's metrics.jsonl back to its own resume step
and deleted the other's checkpoint in the making. The kernel drops the lock with the
process, however it ends (SIGKILL, OOM), so a stale lock file never blocks a resume.

The lock itself is durable_files.take_file_lock, as the store's writer lock is; the file
names host and pid here (a pid alone names no one on another node of a cluster).
"""

from __future__ import annotations

import os
import socket
import weakref
from pathlib import Path

from shallowpi.durable_files import FileLockHeld, release_file_lock, take_file_lock
from shallowpi.train.errors import TrainingError

LOCK_NAME = ".lock"


class RunLock:
    """The run folder's lock, taken at construction and held until `release` (or until the
    object is collected, or the process exits). Raises TrainingError (one line, naming the
    holder's pid and host) when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        try:
            fd, _ = take_file_lock(run_dir / LOCK_NAME, f"pid {os.getpid()} on {socket.gethostname()}")
        except FileLockHeld as held:
            # The advice fits every caller: `distill`'s --run names the student's folder, not
            # the teacher's it may be refused for ("pass another --run" could not help there).
            raise TrainingError(f"run folder {run_dir} is in use by another training process ({held.holder}): two "
                                f"trainers would overwrite each other's metrics and checkpoints; run this again when "
                                f"it ends (or stop it), or train into another folder") from None
        self._release = weakref.finalize(self, release_file_lock, fd, True)

    def release(self) -> None:
        """Let the next trainer in (idempotent). The file stays, emptied: unlinked, a trainer
        that opened it just before would lock the gone file while another locks a new one."""
        self._release()

