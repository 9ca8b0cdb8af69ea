"""Run a command with one folder read-only, as on a read-only mount (EROFS).

As root, the command runs in its own mount namespace (`unshare -m`) where the folder is
bind-mounted onto itself read-only: nothing outside that one process sees the change. As
another user, the folder loses its write bits instead (the command then meets EACCES, the
same kind of refusal). `read_only_command` returns None where neither is possible.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

_MOUNT_READ_ONLY = 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" "$0" && exec "$@"'


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "sh", "-c", _MOUNT_READ_ONLY, "/tmp", "true"],
                           capture_output=True, timeout=30)
    return probe.returncode == 0


def read_only_command(folder: Path, command: list[str]) -> list[str] | None:
    """`command`, wrapped so that `folder` is read-only while it runs; None if this machine
    cannot make it so (root without mount rights)."""
    if os.geteuid() != 0:
        for path in [*folder.rglob("*"), folder]:  # children first: the folder stays listable
            path.chmod(0o555 if path.is_dir() else 0o444)
        return command
    if not _can_unshare():
        return None
    return ["unshare", "-m", "sh", "-c", _MOUNT_READ_ONLY, str(folder), *command]
