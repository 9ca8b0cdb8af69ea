"""Files written whole and durably: what every stage that writes a file a later run relies
on uses (the episode store, checkpoints, calibrations, bundles, run records).

A file is replaced by writing `name.<pid>.<random>.partial`, syncing it and renaming it over
`name`: POSIX rename is atomic against a killed process, and the sync before it keeps a
power cut after the rename from leaving an empty file under the name (filesystems without
ext4's rename heuristic, XFS among them, flush nothing on rename). The folder is synced
after, so the rename itself survives. Each write has its own partial file, so two
processes replacing one file (two deploys caching the same engine) each publish whole
bytes; sweeps of a killed writer's leftovers match the `.partial` ending. A folder is
published the same way: its files synced (`fsync_tree`), then one rename.

The file locks beside them (`take_file_lock`, `hold_file_lock`) are `flock`s: the kernel
drops one with its process, however that ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

PARTIAL_SUFFIX = ".partial"  # every partial file's ending (a sweep of a killed writer's leftovers matches it)
LOCK_POLL_S = 0.05  # how often `hold_file_lock` tries again while another process holds the lock
# A lock file's mode before the umask: what open() gives any new file (the umask alone decides
# who shares it), since every taker opens it read-write.
LOCK_MODE = 0o666


def fsync_path(path: str | Path) -> None:
    """fsync a file or a folder by path; a path that does not exist is skipped."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        with errors_named(path):  # an fsync's EIO or ENOSPC (NFS) names no file
            os.fsync(fd)
    finally:
        os.close(fd)


def naming(exc: OSError, path: str | Path) -> OSError:
    """`exc`, or where it names no file (a write's or close's ENOSPC, EDQUOT, EIO: Python
    gives the file object's errors no name) the same error naming `path`, so the CLI's one
    line says which disk refused (`cli.file_system_error`) instead of "free space on the
    disk this command writes to". Raise it `from exc`."""
    if exc.filename is not None or exc.errno is None:
        return exc
    return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), os.fspath(path))


@contextlib.contextmanager
def errors_named(path: str | Path) -> Iterator[None]:
    """An OSError raised inside that names no file is raised again naming `path` (`naming`),
    from the original; one that names a file passes as it is (not `from` itself)."""
    try:
        yield
    except OSError as exc:
        named = naming(exc, path)
        if named is exc:
            raise
        raise named from exc


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder`, then every folder bottom-up: before a rename
    publishes the folder, what it holds has reached the disk (a power cut after the rename
    must not leave a complete-looking folder of empty files)."""
    for root, _, files in os.walk(folder, topdown=False):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root)


def replace_text(path: str | Path, text: str, durable: bool = True, replaced: Callable[[], None] | None = None) -> None:
    """Replace `path` with `text` in one rename (`replace_bytes`)."""
    replace_bytes(path, text.encode(), durable, replaced)


def replace_bytes(path: str | Path, data: Any, durable: bool = True,
                  replaced: Callable[[], None] | None = None, sync_folder: bool = True) -> int:
    """Replace (or create) `path` with `data` (bytes-like) in one rename of a partial file
    of its own (`partial_name`), synced first if `durable` and its folder after (unless
    `sync_folder` is off: a later sync of the folder makes the rename durable); returns the
    bytes written. After a power cut the name holds the old bytes or the new ones: an
    unsynced file renamed to a name can come back empty where the filesystem does not flush
    on rename (XFS; ext4 flushes only a rename over an existing name). Writers racing on one
    name each publish their own whole bytes, the last rename winning: with one shared
    `path.partial` they wrote into one file, published a torn one, and the second rename
    failed (FileNotFoundError). `replaced` runs right after the rename, before the folder's
    sync: where the rename is a commit point, what it committed is known even if that sync
    then fails. Raises OSError from the write, with the partial file removed, naming `path`
    where the failed call named no file (`naming`: a full disk's ENOSPC from write or close)."""
    partial = partial_name(path)
    try:
        with open(partial, "wb") as out:
            written = out.write(data)
            if durable:
                out.flush()
                os.fsync(out.fileno())
        os.replace(partial, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        if isinstance(exc, OSError) and (named := naming(exc, path)) is not exc:
            raise named from exc
        raise
    if replaced is not None:
        replaced()
    if durable and sync_folder:
        fsync_path(os.path.dirname(path) or ".")
    return written


def current_umask() -> int:
    """This process's umask, read without changing it where Linux says it (/proc/self/status,
    since 4.7); elsewhere set and put back at once, which a thread making a file in between
    would see."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as status:
        for line in status:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def give_umask_modes(folder: str | Path) -> None:
    """Give `folder` and everything under it the modes a plain open() and mkdir() give now
    (0o666 and 0o777, less the umask): what a library wrote through a temporary file
    (mkstemp's 0o600, mkdtemp's 0o700, kept by the move into place) is then shared as the
    user's other files are. Links are left alone, and a folder's setgid bit is kept: in a
    lab's shared 2775 folder what is written later inside must keep the lab's group."""
    mask = current_umask()

    def give(path: str, mode: int) -> None:
        if not os.path.islink(path):
            os.chmod(path, (os.stat(path).st_mode & 0o7000) | (mode & ~mask))

    for root, folders, files in os.walk(folder):
        for name in files:
            give(os.path.join(root, name), 0o666)
        for name in folders:
            give(os.path.join(root, name), 0o777)
    give(str(folder), 0o777)


def owner_and_mode(path: str | Path) -> str:
    """'owner uid 1234, mode 0o2775' of `path`, for a refusal that names whose a file or
    folder is; the error's words where it cannot be looked at either."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return f"owner uid {st.st_uid}, mode {oct(stat.S_IMODE(st.st_mode))}"


def partial_name(path: str | Path) -> str:
    """A name beside `path` that no other write uses: `path.<pid>.<8 hex>.partial`, a plain
    string (pathlib would intern it: episode_writer's names are made per frame)."""
    return f"{os.fspath(path)}.{os.getpid()}.{secrets.token_hex(4)}{PARTIAL_SUFFIX}"


class FileLockHeld(Exception):
    """Another process holds a `take_file_lock` lock; `holder` is what it wrote in the file."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


# Each lock fd this process took, for the fork hook below. An fd of a process that forked
# (a DataLoader worker, a multiprocessing pool) is copied into the child, and flock's lock
# belongs to the open file, not the process: the copy kept the lock held after its taker died
# (a requeued trainer refused until the workers noticed, ~5 s), and an unlock through it (a
# finalizer the child ran) released the parent's.
# Each number maps to its lock file's (st_dev, st_ino): a number is only closed here while it
# is still that file. Closed elsewhere (a double close in any library of the process, a test
# "killing" a writer), the number is given out again, to a pipe say, and closing it as a lock
# closed that: a Popen with preexec_fn, which runs the fork hook, failed with EBADF in CI.
_HELD_LOCKS: dict[int, tuple[int, int]] = {}


def _still_the_lock(fd: int, identity: tuple[int, int]) -> bool:
    """Whether the number `fd` still names the lock file it was taken on (`identity`)."""
    try:
        st = os.fstat(fd)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == identity


def _close_inherited_locks() -> None:
    """In a forked child: close its copies of the parent's lock fds (closing a copy leaves
    the lock with the parent; only an unlock or the last copy's close drops it), each only
    while it is still that lock's file."""
    for fd, identity in _HELD_LOCKS.items():
        if _still_the_lock(fd, identity):
            with contextlib.suppress(OSError):
                os.close(fd)
    _HELD_LOCKS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


def take_file_lock(path: str | Path, holder: str) -> tuple[int, bool]:
    """An exclusive, non-blocking `flock` on `path` (created if missing), with `holder` (who
    takes it: "pid N ...") written in the file for a refused process to name. Returns (the
    fd, whether the file still named an earlier holder: a clean release empties it, so one
    that died holding it left its name). The kernel drops the lock with the process, however
    it ends; a forked child does not hold it. Release it with `release_file_lock`. Raises
    FileLockHeld when another process holds it.

    Made with mode LOCK_MODE, which the umask narrows as it does the files the lock guards:
    a lock made 0o644 in a group-shared folder (setgid, umask 002) was the one file there
    another member could not open read-write, and their `record --resume` was refused."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, LOCK_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        named = os.read(fd, 256).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise FileLockHeld(named) from None
    st = os.fstat(fd)
    _HELD_LOCKS[fd] = (st.st_dev, st.st_ino)
    try:
        died = st.st_size > 0
        os.ftruncate(fd, 0)
        os.write(fd, holder.encode())
    except BaseException:  # a full disk refused the name: held anyway, the lock outlived the failure
        release_file_lock(fd, clean=False)
        raise
    return fd, died


def release_file_lock(fd: int, clean: bool) -> None:
    """Release a `take_file_lock` lock and close its fd; `clean`: empty the file first (the
    holder ended as it should, so the next taker is not told it died). A no-op when released
    already, or when called in a forked child (the fd there is not the lock), or when the
    number no longer names the lock's file (closed elsewhere and given out again: closing it
    would close another file's)."""
    identity = _HELD_LOCKS.pop(fd, None)
    if identity is None or not _still_the_lock(fd, identity):
        return
    with contextlib.suppress(OSError):
        if clean:
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.close(fd)


def take_named_lock(path: str | Path, holder: str, tries: int | None = None) -> int:
    """`take_file_lock` on the file `path` names now, returning its fd. A holder that ends
    removes its file before letting go (`hold_file_lock`, the telemetry publisher), so a
    lock won on a file opened just before is a lock on no name: it is let go and the new
    file taken, up to `tries` times (None: until it holds). Raises FileLockHeld when another
    process holds it, or (holder "another process") when each of the `tries` came too late."""
    for _ in itertools.count() if tries is None else range(tries):
        fd, _ = take_file_lock(path, holder)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            return fd
        release_file_lock(fd, clean=False)  # the file of a holder that has finished since we opened it
    raise FileLockHeld("another process")


@contextlib.contextmanager
def hold_file_lock(path: str | Path, holder: str, wait_s: float | None = None,
                   on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold `take_file_lock`'s lock on `path` for the block, waiting while another process
    holds it: up to `wait_s` seconds (None: as long as it takes), with `on_wait(holder)` called
    once when it starts waiting (to say whom for). The file is removed when the block ends, so
    no lock file stays behind (an engine cache, a data folder): a waiter that got the lock on
    the removed file takes the one the name holds now (`take_named_lock`).
    A holder killed leaves its file, which the next taker removes. Raises FileLockHeld (its
    `holder`) when `wait_s` passed."""
    deadline = None if wait_s is None else time.monotonic() + wait_s
    told = False
    while True:
        try:
            fd = take_named_lock(path, holder)
            break
        except FileLockHeld as held:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if not told and on_wait is not None:
                on_wait(held.holder)
            told = True
            time.sleep(LOCK_POLL_S)
    try:
        yield
    finally:
        # Removed before the release, so that no one can take this file after we let go of it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        release_file_lock(fd, clean=True)
