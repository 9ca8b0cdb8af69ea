"""A store's names on disk beside `NAME.zarr` during a delete's swap, and finishing a swap
a crash cut: `platform dataset delete` writes a compacted copy to `NAME.zarr.compacting`,
moves the store to `NAME.zarr.old` (marked `.swapped-out`, so a backup someone named so
by hand is never taken for it) and the copy in (data/store_edit.py). Whoever next opens,
lists or makes a store of that name finishes a swap cut between the two renames.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

COMPACTING_SUFFIX = ".compacting"
OLD_SUFFIX = ".old"  # a delete's swap moves the store there before the compacted copy goes in
SWAPPED_OUT = ".swapped-out"  # marks that folder as the swap's, not a copy someone named so by hand


def name_taken(path: Path) -> bool:
    """Whether a store (or a delete's swap cut between its two renames, finished here) holds
    `path`: what every command that makes a store there asks first. A new store beside a
    cut swap's copies would be taken for them, and the next edit would remove the last."""
    if not path.exists():
        finish_interrupted_swap(path)
    return path.exists()


def finish_interrupted_swap(path: Path) -> None:
    """A delete swaps a compacted copy in with two renames; finish a swap cut in between.

    Only called when `path` is missing: the compacted copy goes in if it was complete,
    else the original comes back. Only while the copy is there: a swap cut after its
    second rename leaves `NAME.zarr.old` alone beside the new store (the writer's next open
    removes it), and once that store was renamed or removed by hand, bringing the old copy
    back would resurrect the episodes the delete removed.
    """
    staging = path.with_name(path.name + COMPACTING_SUFFIX)
    old = path.with_name(path.name + OLD_SUFFIX)
    if (staging / ".complete").exists():
        (staging / ".complete").unlink()
        os.replace(staging, path)
        remove_swapped_out(path)
    elif (old / SWAPPED_OUT).exists() and staging.exists():
        os.replace(old, path)
        (path / SWAPPED_OUT).unlink(missing_ok=True)


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
