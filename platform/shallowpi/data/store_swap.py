"""A store's names on disk beside `NAME.zarr` during a delete's swap, and finishing a swap
a crash cut: `platform dataset delete` writes a compacted copy to `NAME.zarr.compacting`,
moves the store to `NAME.zarr.old` (marked `.swapped-out`, so a backup someone named so
by hand is never taken for it) and the copy in (data/store_edit.py). Whoever next opens
or makes a store of that name finishes a swap cut between the two renames (a listing names
it); a swap its delete still runs is left to it.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from shallowpi.data.durable_io import (
    LOCK_NAME,
    release_writer_lock,
    take_writer_lock,
    writer_holding,
)
from shallowpi.durable_files import owner_and_mode
from shallowpi.errors import StoreError

log = logging.getLogger(__name__)

COMPACTING_SUFFIX = ".compacting"
OLD_SUFFIX = ".old"  # a delete's swap moves the store there before the compacted copy goes in
SWAPPED_OUT = ".swapped-out"  # marks that folder as the swap's, not a copy someone named so by hand
NAME_MAX_FALLBACK = 255  # bytes in one name where the file system cannot be asked (ext4's, xfs's, tmpfs's)


def name_max(folder: Path) -> int:
    """The most bytes one file or folder name may hold in `folder`: pathconf's PC_NAME_MAX of
    its nearest existing ancestor (`folder` may be yet to be made), NAME_MAX_FALLBACK where
    that cannot be asked. A longer name is ENAMETOOLONG in every call that touches it, an
    `exists()` among them."""
    for place in (folder, *folder.parents):
        try:
            limit = os.pathconf(place, "PC_NAME_MAX")
        except (FileNotFoundError, NotADirectoryError):
            continue  # not made yet: its parent's file system is where it would be
        except (OSError, ValueError):
            break
        return limit if limit > 0 else NAME_MAX_FALLBACK  # -1: no limit said
    return NAME_MAX_FALLBACK


def name_bytes(name: str) -> int:
    """`name`'s length as the file system counts it: bytes, as encoded (UTF-8: `ü` is 2)."""
    return len(os.fsencode(name))


def name_fits(path: Path) -> bool:
    """Whether `path`'s own name is short enough for the file system of its folder."""
    return name_bytes(path.name) <= name_max(path.parent)


def name_taken(path: Path) -> bool:
    """Whether a store (or a delete's swap cut between its two renames, finished here) holds
    `path`: what every command that makes a store there asks first. A new store beside a
    cut swap's copies would be taken for them, and the next edit would remove the last.
    False for a name longer than the file system takes (nothing can be there): the maker's
    claim (`claim_new`) refuses it in one line, where asking was ENAMETOOLONG's traceback."""
    if not name_fits(path):
        return False
    if not path.exists():
        finish_interrupted_swap(path)
    return path.exists()


def finish_interrupted_swap(path: Path, wait_s: float = 10.0) -> None:
    """A delete swaps a compacted copy in with two renames; finish a swap cut in between.

    Only called when `path` is missing: the compacted copy goes in if it was complete,
    else the original comes back. Only while the copy is there: a swap cut after its
    second rename leaves `NAME.zarr.old` alone beside the new store (the writer's next open
    removes it), and once that store was renamed or removed by hand, bringing the old copy
    back would resurrect the episodes the delete removed.

    Only a swap its delete no longer runs: a live one holds the copy's writer lock from
    before its first rename to after its second, and a reader opening the store in between
    used to finish it under the delete's feet (the delete then failed, or removed a second
    episode when run again). Then this waits up to `wait_s` for the store to reappear;
    StoreError (one line) if it does not.
    """
    staging = path.with_name(path.name + COMPACTING_SUFFIX)
    old = path.with_name(path.name + OLD_SUFFIX)
    if not name_fits(staging):
        return  # no delete can have made its copy under a name this file system cannot hold
    deadline = time.monotonic() + wait_s
    while not path.exists():
        with _copy_lock(staging) as ours:
            if ours:  # no delete runs it: cut by a crash (or none at all)
                if (staging / ".complete").exists():
                    (staging / ".complete").unlink()
                    os.replace(staging, path)
                    remove_swapped_out(path)
                    log.warning("%s: finished a `dataset delete` cut short between its renames: the episodes it "
                                "deleted are gone (running that delete again would remove others)", path.name)
                elif (old / SWAPPED_OUT).exists() and staging.exists():
                    os.replace(old, path)
                    (path / SWAPPED_OUT).unlink(missing_ok=True)
                    log.warning("%s: a `dataset delete` was cut short before its copy was complete; the store is "
                                "as it was, every episode kept", path.name)
                return
        if time.monotonic() > deadline:
            raise StoreError(f"{path.name} is being swapped in by a running `dataset delete` (its copy "
                             f"{staging.name} is locked) and has not come back in {wait_s:g} s; try again")
        time.sleep(0.01)


@contextmanager
def _copy_lock(staging: Path) -> Iterator[bool]:
    """True, holding the compacted copy's writer lock (`take_writer_lock`) for the duration,
    when no live delete holds it, or there is no copy; False while a delete runs its swap.
    For a user who may not take it read-write (EACCES, EROFS): False while a delete holds
    it, True (nothing held) when there is no cut swap to finish, else StoreError (one line:
    the swap is its owner's to finish)."""
    if not staging.is_dir():
        yield True
        return
    try:
        fd, _ = take_writer_lock(staging)
    except (StoreError, FileNotFoundError):  # a running delete holds it, or its copy moved in meanwhile
        yield False
        return
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        # A reader who may not write here (a colleague's store, a read-only mount) cannot
        # take the lock read-write, and erred at once with "cannot write .../.shallowpi.lock"
        # while a delete ran its swap. Whether one does is asked with a shared lock, as
        # `durable_io.writer_holding` asks it: then wait as any reader does.
        if _lock_held(staging) or not staging.is_dir():
            # Held: a delete runs its swap. Gone: its copy moved in since this call looked
            # (its lock file with it, so the look above found none): the caller looks again,
            # as after a lock taken in vain, and finds the store.
            yield False
            return
        store = staging.name.removesuffix(COMPACTING_SUFFIX)
        if not (staging / ".complete").exists() and not (staging.with_name(store + OLD_SUFFIX) / SWAPPED_OUT).exists():
            yield True  # no swap to finish (a copy left by a delete cut before its renames): nothing is written
            return
        raise StoreError(f"{store}: a `dataset delete` was cut short between its two renames and this user may "
                         f"not finish it ({staging / LOCK_NAME}: {exc.strerror}; {owner_and_mode(staging)}); the store's "
                         "owner must open it (e.g. `platform dataset info`) to finish the cut delete") from None
    try:
        yield True
    finally:
        release_writer_lock(fd)  # not clean, as the killed delete's was: the store's next writer sweeps


def _lock_held(staging: Path) -> bool:
    """Whether a process holds the writer lock of the compacted copy `staging` now
    (`writer_holding`); False when its lock file cannot be read either: no delete is seen."""
    try:
        return writer_holding(staging) is not None
    except OSError:
        return False


def remove_swapped_out(path: Path) -> None:
    """Remove the copy a delete's swap moved out of `path` (`NAME.zarr.old`), only if the
    swap marked it so: a backup someone made by hand under that name is never touched."""
    old = path.with_name(path.name + OLD_SUFFIX)
    if (old / SWAPPED_OUT).exists():
        shutil.rmtree(old, ignore_errors=True)


def iter_stores(root: Path) -> Iterator[Path]:
    """The stores under a data root, by name; one whose delete was cut between its two
    renames (`NAME.zarr.old` and `NAME.zarr.compacting` there) too, under its name: opening
    it finishes the swap."""
    if root.is_dir():
        names = {p.name for p in root.iterdir() if p.suffix == ".zarr" and p.is_dir()}
        names |= {p.name.removesuffix(OLD_SUFFIX) for p in root.iterdir()
                  if p.name.endswith(".zarr" + OLD_SUFFIX) and (p / SWAPPED_OUT).exists()
                  and p.with_name(p.name.removesuffix(OLD_SUFFIX) + COMPACTING_SUFFIX).is_dir()}
        yield from sorted(root / name for name in names)
