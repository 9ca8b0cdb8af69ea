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

from shallowpi.data.store_swap import name_taken
from shallowpi.durable_files import FileLockHeld, fsync_path, hold_file_lock
from shallowpi.errors import StoreError

# A new store (a recording's, a merge's, an import's) is built in `NAME.zarr.<random>.creating`
# beside its name and renamed into place whole, under `NAME.zarr.create.lock` (`claim_new`).
CREATING_SUFFIX = ".creating"
CLAIM_SUFFIX = ".create.lock"
CLAIM_WAIT_S = 10.0  # how long a maker waits for another making the same name (a create takes ms)


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
    minutes), and OSError when the folder cannot be made (a read-only or full disk)."""
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
