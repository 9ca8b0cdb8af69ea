"""One trainer per run folder: an exclusive `flock` on `<run>/.lock`, which names its holder.

Two trainers in one folder (`--resume` launched twice, a SLURM requeue while the first job
still runs) both trained: each cut the other's metrics.jsonl back to its own resume step
and deleted the other's checkpoint in the making. The kernel drops the lock with the
process, however it ends (SIGKILL, OOM), so a stale lock file never blocks a resume.

Not the store's writer lock (data/durable_io.take_writer_lock): that one raises StoreError
with advice for a recording, and its pid alone names no one on another node of a cluster.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import weakref
from pathlib import Path

from shallowpi.train.errors import TrainingError

LOCK_NAME = ".lock"


class RunLock:
    """The run folder's lock, taken at construction and held until `release` (or until the
    object is collected, or the process exits). Raises TrainingError (one line, naming the
    holder's pid and host) when another process holds it."""

    def __init__(self, run_dir: Path) -> None:
        path = run_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise TrainingError(f"run folder {run_dir} is in use by another training process ({holder}); wait for "
                                f"it to end or stop it (two trainers would overwrite each other's metrics and "
                                f"checkpoints), or pass another --run") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._release = weakref.finalize(self, _unlock, fd)

    def release(self) -> None:
        """Let the next trainer in (idempotent). The file stays, emptied: unlinked, a trainer
        that opened it just before would lock the gone file while another locks a new one."""
        self._release()


def _unlock(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)
