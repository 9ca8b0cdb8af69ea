"""The store's own file operations beside the durable writes (shallowpi/durable_files.py):
atomic JSON, row checksums, plain-string paths, the writer lock, a received file opened
only if it is a regular file.

`EpisodeStore` (data/store.py) orders its writes so that one atomic rename is the commit
point; these and durable_files' writes are the pieces it orders. The writer lock is an
`flock` on `.shallowpi.lock`, which holds the writer's pid while it writes: a lock file
that is not empty when taken means the last writer died holding the store.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from shallowpi.durable_files import FileLockHeld, release_file_lock, replace_text, take_file_lock
from shallowpi.errors import StoreError

LOCK_NAME = ".shallowpi.lock"


def checksum(rows: np.ndarray) -> str:
    """sha256 (hex) of an array's bytes in C order: what EpisodeInfo.checksums records."""
    return hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest()


def file_in(folder: str | os.PathLike[str], name: str) -> str:
    """`folder/name` as a plain string, for the names a store makes per episode or frame.

    pathlib interns every name it parses and on Python 3.12 interned strings are never
    freed, so a `Path` built per episode (`episodes/1234.json`) or per frame leaks its name
    for the life of the process: a recorder's store stays open for hours (record_soak).
    """
    return os.path.join(folder, name)


def write_json(path: str | Path, value: Any, durable: bool, replaced: Callable[[], None] | None = None) -> None:
    """Replace `path` with `value` as JSON in one rename (`replace_text`). numpy scalars
    are written as the Python numbers they hold (a script's `np.bool_` success mark, an
    `np.int64` seed); StoreError, before anything is written, for a value JSON cannot hold."""
    replace_text(path, _json_text(value, str(path)), durable, replaced)


def json_ready(value: Any, what: str) -> Any:
    """`value` as it will read back from its JSON file: numpy scalars as Python numbers,
    tuples as lists, number keys as strings. Raises StoreError naming `what` (one line) for
    anything JSON cannot hold (a set, an array, an object), so a caller can refuse it
    before it writes anything."""
    return json.loads(_json_text(value, what))


def _json_text(value: Any, what: str) -> str:
    try:
        return json.dumps(value, default=_numpy_scalar)
    except (TypeError, ValueError) as exc:  # json's "not JSON serializable", a circular reference
        raise StoreError(f"{what} cannot be stored as JSON: {exc}") from None


def _numpy_scalar(value: Any) -> Any:
    """json's `default` hook: a numpy scalar as the Python number it holds; TypeError otherwise."""
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def read_json(path: str | Path) -> Any:
    """The JSON value in `path` (FileNotFoundError, json.JSONDecodeError as raised)."""
    with open(path) as file:
        return json.load(file)


class NotRegularFile(OSError):
    """What `open_regular` found instead of a regular file: `kind` is "a link" or "not a
    regular file" (a FIFO, a socket, a device, a folder)."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(f"{path} is {kind}")
        self.kind = kind


# Opened for reading without following a link in the last step, nor waiting (a FIFO's open
# waits for a writer), nor taking a terminal as the process's own.
_NO_FOLLOW_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY


def open_regular(path: str | os.PathLike[str], dir_fd: int | None = None) -> BinaryIO:
    """`path` (relative to the folder open as `dir_fd`, when given) open for reading, if it
    is a regular file. A store received from elsewhere may hold a symbolic link or a FIFO
    where a file of ours belongs: its type is that of the file opened (fstat), not of a name
    looked at before, so nothing is read through a link and no read waits on a FIFO.
    Raises NotRegularFile for anything else, FileNotFoundError when it is gone."""
    try:
        fd = os.open(path, _NO_FOLLOW_READ, dir_fd=dir_fd)
    except OSError as error:
        if error.errno == errno.ELOOP:  # the last step is a link
            raise NotRegularFile(path, "a link") from None
        if error.errno == errno.ENXIO:  # a socket
            raise NotRegularFile(path, "not a regular file") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise NotRegularFile(path, "not a regular file")
    return os.fdopen(fd, "rb")


def take_writer_lock(folder: Path) -> tuple[int, bool]:
    """Take the store's writer lock; returns its fd and whether the last writer died
    holding it (it left its pid in the file, which a clean close empties).

    Raises StoreError naming the holder's pid when another process writes the store, or
    saying so when this process does (a store opened for writing and not closed: a
    notebook's cell run again opens anew while its variable still holds the first)."""
    try:
        return take_file_lock(folder / LOCK_NAME, f"pid {os.getpid()}")
    except FileLockHeld as held:
        if held.holder == f"pid {os.getpid()}":
            raise StoreError(f"{folder.name} is open for writing in this process already (a store opened with "
                             "mode 'a' and not closed); close() that one first, or use it") from None
        raise StoreError(f"{folder.name} is being written by {held.holder}; wait for it or stop it (a recording: "
                         "or record into another dataset)") from None


def writer_holding(path: Path) -> str | None:
    """'pid 1234' if a writer holds the store's (or a delete's compacted copy's) lock at
    `path` now, else None: asked with a shared lock through a read-only open, so nothing is
    created and no write access is needed. OSError other than a missing lock file passes."""
    try:
        fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 64).decode(errors="replace").strip() or "another process"
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def release_writer_lock(fd: int | None, clean: bool = False) -> None:
    """Release the lock; `clean`: the writer closed the store as it should (the pid goes)."""
    if fd is not None:
        release_file_lock(fd, clean)
