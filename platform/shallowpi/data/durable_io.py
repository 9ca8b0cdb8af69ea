"""The file operations a store's crash safety rests on: atomic JSON, fsync, the writer lock.

`EpisodeStore` (data/store.py) orders its writes so that one atomic rename is the commit
point; these are the pieces it orders. A JSON file is replaced by writing `name.partial`,
syncing it and renaming it over `name` (POSIX rename is atomic against a killed process;
the folder is synced after, so the rename survives a power cut). The writer lock is an
`flock` on `.shallowpi.lock`, which holds the writer's pid while it writes: a lock file
that is not empty when taken means the last writer died holding the store.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.errors import StoreError

LOCK_NAME = ".shallowpi.lock"
PARTIAL_SUFFIX = ".partial"


def checksum(rows: np.ndarray) -> str:
    """sha256 (hex) of an array's bytes in C order: what EpisodeInfo.checksums records."""
    return hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder by path; a path that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder`, then every folder bottom-up: before a rename
    publishes the folder, what it holds has reached the disk (a power cut after the rename
    must not leave a complete-looking folder of empty files)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def file_in(folder: str | os.PathLike[str], name: str) -> str:
    """`folder/name` as a plain string, for the names a store makes per episode or frame.

    pathlib interns every name it parses and on Python 3.12 interned strings are never
    freed, so a `Path` built per episode (`episodes/1234.json`) or per frame leaks its name
    for the life of the process: a recorder's store stays open for hours (record_soak).
    """
    return os.path.join(folder, name)


def write_json(path: str | Path, value: Any, durable: bool, replaced: Callable[[], None] | None = None) -> None:
    """Replace `path` with `value` as JSON in one rename (`replace_text`)."""
    replace_text(path, json.dumps(value), durable, replaced)


def replace_text(path: str | Path, text: str, durable: bool = True, replaced: Callable[[], None] | None = None) -> None:
    """Replace `path` with `text` in one rename (`replace_bytes`)."""
    replace_bytes(path, text.encode(), durable, replaced)


def replace_bytes(path: str | Path, data: Any, durable: bool = True,
                  replaced: Callable[[], None] | None = None, sync_folder: bool = True) -> int:
    """Replace (or create) `path` with `data` (bytes-like) in one rename of `path.partial`,
    synced first if `durable` and its folder after (unless `sync_folder` is off: a later
    sync of the folder makes the rename durable); returns the bytes written. After a
    power cut the name holds the old bytes or the new ones: renaming an unsynced file over
    a name can leave it empty where the filesystem does not flush on rename (XFS; ext4 only
    for a name that existed). `replaced` runs right after the rename, before the folder's
    sync: where the rename is a commit point, what it committed is known even if that sync
    then fails. Raises OSError from the write, with the partial file removed."""
    partial = os.fspath(path) + PARTIAL_SUFFIX
    try:
        with open(partial, "wb") as out:
            written = out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise
    if replaced is not None:
        replaced()
    if durable and sync_folder:
        fsync_path(os.path.dirname(path) or ".")
    return written


def read_json(path: str | Path) -> Any:
    """The JSON value in `path` (FileNotFoundError, json.JSONDecodeError as raised)."""
    with open(path) as file:
        return json.load(file)


def take_writer_lock(folder: Path) -> tuple[int, bool]:
    """Take the store's writer lock; returns its fd and whether the last writer died
    holding it (it left its pid in the file, which a clean close empties).

    Raises StoreError naming the holder's pid when another process writes the store."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise StoreError(f"{folder.name} is being written by {holder}; stop it or record into another dataset") from None
    died = os.fstat(fd).st_size > 0
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()}".encode())
    return fd, died


def release_writer_lock(fd: int | None, clean: bool = False) -> None:
    """Release the lock; `clean`: the writer closed the store as it should (the pid goes)."""
    if fd is not None:
        with contextlib.suppress(OSError):
            if clean:
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
