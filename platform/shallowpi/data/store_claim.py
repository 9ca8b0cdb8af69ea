"""Making a new store (a recording's, a merge's, an import's; an export's folder) as the one
process that makes that name: `claim_new` gives a folder of its own to build in, under a
lock every maker of the name takes, and `publish_folder` renames the result into place
whole, never over something made meanwhile."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from shallowpi.data.store_swap import (
    COMPACTING_SUFFIX,
    OLD_SUFFIX,
    name_bytes,
    name_max,
    name_taken,
)
from shallowpi.durable_files import FileLockHeld, fsync_path, hold_file_lock
from shallowpi.errors import StoreError

# A new store (a recording's, a merge's, an import's) is built in `NAME.zarr.<random>.creating`
# beside its name and renamed into place whole, under `NAME.zarr.create.lock` (`claim_new`).
CREATING_SUFFIX = ".creating"
CLAIM_SUFFIX = ".create.lock"
CLAIM_WAIT_S = 10.0  # how long a maker waits for another making the same name (a create takes ms)
TEMP_NAME_CHARS = 8  # the random part tempfile.mkdtemp puts between its prefix and suffix
STORE_SUFFIX = ".zarr"


def working_names(name: str, suffix: str = CREATING_SUFFIX) -> list[str]:
    """Every name `claim_new(path, suffix)` makes beside a `path` called `name`, the name
    itself among them; for a store (`NAME.zarr`), also those the edits of its life make beside
    it: a delete's swap (`NAME.zarr.old`) and its compacted copy, a new store made as
    `NAME.zarr.compacting` through `claim_new` in its turn. That last one's folder,
    `NAME.zarr.compacting.XXXXXXXX.creating`, is the longest: 29 bytes over the name."""
    names = [name, name + CLAIM_SUFFIX, f"{name}.{'X' * TEMP_NAME_CHARS}{suffix}"]
    if name.endswith(STORE_SUFFIX):
        names += [name + OLD_SUFFIX, *working_names(name + COMPACTING_SUFFIX)]
    return names


def require_name_fits(path: Path, suffix: str = CREATING_SUFFIX) -> None:
    """StoreError (one line) when a name `claim_new(path, suffix)` would make, or a later edit
    of the store at `path` would, is longer than the file system of `path`'s folder takes
    (`name_max`; UTF-8 names count in bytes), giving the longest name that fits. Before
    anything is made: `NAME.zarr.create.lock` was made and the build's folder failed
    (ENAMETOOLONG, a traceback), or a store was made that no delete could edit. A delete's
    compacted copy (`NAME.zarr.compacting`) is judged as the store it copies: its name is
    what the user can change."""
    copy_of = path.name.endswith(STORE_SUFFIX + COMPACTING_SUFFIX)
    store = path.with_name(path.name.removesuffix(COMPACTING_SUFFIX)) if copy_of else path
    limit = name_max(path.parent)
    longest = max(working_names(store.name, suffix), key=name_bytes)
    if name_bytes(longest) <= limit:
        return
    own = name_bytes(store.name)
    added = name_bytes(longest) - own  # the same bytes whatever the name: its working suffixes
    is_store = store.name.endswith(STORE_SUFFIX)
    named = len(store.name) - len(STORE_SUFFIX) if is_store else len(store.name)
    made = (f"a delete builds its copy beside it as NAME{longest[named:]}" if copy_of else
            f"a store is made and edited beside its name as NAME{longest[named:]}" if is_store else
            f"it is made beside its name as NAME{longest[named:]}")
    most = limit - added - (len(STORE_SUFFIX) if is_store else 0)
    fix = (f"rename the store to at most {most} bytes before {STORE_SUFFIX} (no episode was deleted)" if copy_of else
           f"give a dataset name of at most {most} bytes before {STORE_SUFFIX}" if is_store else
           f"give a name of at most {most} bytes")
    raise StoreError(f"{store}: the name is {own} bytes, too long here: {made}, and this file system takes at most "
                     f"{limit} bytes in a name; {fix} (UTF-8 counts bytes)")


@contextlib.contextmanager
def claim_new(path: Path, suffix: str = CREATING_SUFFIX, wait_s: float | None = None) -> Iterator[Path]:
    """Make something new under `path` (a store; an export's folder) as the one process doing
    so: yields where to build it, `path.name` inside a folder made beside `path` for this
    call alone (`NAME.<random><suffix>`), which `publish_folder` moves to `path`. The folder
    goes when the block ends, with whatever is left in it.

    Throughout, holds `NAME.create.lock` beside `path` (`hold_file_lock`), which every maker
    of that name takes, so no two can publish there, and the caller checks under it that the
    name is free. Under it too, the folders killed makers of the name left are removed: none
    is anyone's now. Two makers built in one fixed `NAME.creating`, each removing the other's
    files, and failed with tracebacks or left a half-built store under the name.

    Raises StoreError (one line, naming the holder) when another process holds the name for
    longer than `wait_s` seconds (default CLAIM_WAIT_S; a merge or import into it takes
    minutes) or when a name it makes is too long (`require_name_fits`, before anything is
    made), and OSError when the folder cannot be made (a read-only or full disk)."""
    require_name_fits(path, suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + CLAIM_SUFFIX)
    with contextlib.ExitStack() as claim:
        try:
            claim.enter_context(hold_file_lock(lock, f"pid {os.getpid()}",
                                               wait_s=CLAIM_WAIT_S if wait_s is None else wait_s))
        except FileLockHeld as held:
            raise StoreError(f"{path.name} is being made by {held.holder} (a recording, merge, import or export "
                             "of that name); wait for it to end, or pick another name") from None
        for leftover in path.parent.glob(glob.escape(path.name) + ".????????" + suffix):
            shutil.rmtree(leftover, ignore_errors=True)
        shutil.rmtree(path.with_name(path.name + suffix), ignore_errors=True)  # an older version's fixed one
        folder = Path(tempfile.mkdtemp(prefix=path.name + ".", suffix=suffix, dir=path.parent))
        try:
            yield folder / path.name
        except BaseException:
            _remove(folder, settle_s=0.5)
            raise
        shutil.rmtree(folder, ignore_errors=True)  # published: the empty folder it was built in


def _remove(folder: Path, settle_s: float, limit_s: float = 5.0) -> None:
    """Remove `folder` and what is in it, and again until it has stayed gone `settle_s`
    seconds (at most `limit_s`): a build that failed on a full disk raises while zarr's
    writer thread finishes the chunk writes it had begun, and a late one made its folders
    again (or the removal's last rmdir met its file: ENOTEMPTY, ignored), leaving the folder
    taking space under a name nothing opens (seen under load)."""
    deadline = time.monotonic() + limit_s
    while True:
        shutil.rmtree(folder, ignore_errors=True)
        quiet_until = time.monotonic() + settle_s
        while not folder.exists() and time.monotonic() < quiet_until:
            time.sleep(0.05)
        if not folder.exists() or time.monotonic() > deadline:
            return


def publish_folder(built: Path, path: Path, durable: bool) -> None:
    """Rename `built` (made in a `claim_new` folder, its files synced if `durable`) to `path`,
    and sync the folder that holds it if `durable`. The caller holds `path`'s claim, under
    which no other maker can take the name; StoreError (nothing replaced) when something
    else did meanwhile (a copy by hand): a rename onto an empty folder would replace it."""
    if name_taken(path):
        raise StoreError(f"{path} already exists (made meanwhile by another command); nothing was replaced")
    os.rename(built, path)
    if durable:
        fsync_path(path.parent)


def require_outside_stores(path: str | os.PathLike[str], what: str) -> None:
    """StoreError (one line) when `path`, where a new store, merge, import or export is to be
    made, lies inside an existing store's folder (one holding `.zgroup`, at any depth): a
    store there is no dataset of the data root, and whatever edits the outer store rewrites
    its folder around it. `what` names the output ("merged dataset", "export directory")."""
    given = Path(path)
    # Resolved: a symlink into a store's folder leads inside it too. Outermost first: a
    # store's `meta` and `data` are zarr groups too, and the store is what a delete rewrites.
    for folder in reversed(given.resolve().parents):
        if (folder / ".zgroup").is_file():
            raise StoreError(f"{given} is inside the dataset {folder}; put the {what} beside it, not in its folder "
                             f"(e.g. {folder.parent / given.name})")
