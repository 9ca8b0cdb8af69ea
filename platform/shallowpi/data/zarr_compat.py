"""The few zarr calls the store makes, for zarr-python 3 (Python >= 3.11) and 2 (3.10).

Both write the same zarr format 2 layout; only opening a group and creating an array are
spelled differently. The robot's computer on JetPack 6 has Python 3.10, so zarr 2.

Both zarr-pythons' local stores replace a file without an fsync: zarr 2 and zarr 3.1.3+ by
writing `<name>.<uuid>.partial` and renaming it over `<name>`, zarr 3.1.0-3.1.2 in place.
Most of a store's files are written once, but some are replaced while earlier episodes
depend on them: an array's `.zarray`
at every resize, and a chunk of numbers that two episodes share. A power cut after such a
rename and before the data reached the disk can leave the file empty on filesystems
without ext4's rename heuristic (`auto_da_alloc`; XFS, the RHEL family's default, has
none): an empty `.zarray` makes the whole store unreadable, an empty shared chunk reads as
zeros for the episodes already committed. So the store opens its groups on a local store
that syncs a replacing file before the rename (`SyncedRewrites*`); new files keep zarr's
path and are synced by the store's commit protocol (data/store.py), before its commit point,
as are the folders (a rename lost in a power cut leaves the old, intact file).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import zarr

from shallowpi.durable_files import PARTIAL_SUFFIX, fsync_path, replace_bytes

ZARR_MAJOR = int(zarr.__version__.split(".")[0])

# zarr 3 skips chunks equal to the fill value, and to know, compares every chunk with it
# before encoding: ~6 ms for one 480x640x3 frame, more than the JPEG encode. Camera frames
# are never all fill value, so the check only costs (it cut store writes from ~90 to ~35
# frames/s; see BENCHMARKS.md); and a chunk of numbers that is all zeros (a robot at rest
# at its zero pose) would be no file, which `require_intact` cannot tell from a lost one.
# So the store's arrays write every chunk, as zarr 2 does by default: set on each array
# the store creates or opens (`create_array`, `open_group`'s members), never in zarr's
# process-wide config, which belongs to the program that imports shallowpi.
ARRAY_CONFIG = {"write_empty_chunks": True}

if ZARR_MAJOR >= 3:
    import asyncio

    from zarr.storage import LocalStore

    class SyncedRewritesLocalStore(LocalStore):
        """zarr 3's LocalStore, except that a write replacing an existing file goes
        through `replace_bytes`, synced (module docstring) while `synced`."""

        synced = True

        def _replacing(self, key: str) -> str | None:
            path = os.path.join(self.root, key)
            return path if self.synced and os.path.isfile(path) else None

        async def set(self, key: str, value: Any) -> None:
            """Write `value` (a zarr Buffer) under `key`: a new file as zarr writes it, a
            replacing one synced before its rename (off the event loop, as zarr's own)."""
            path = self._replacing(key)
            if path is None:
                return await super().set(key, value)
            self._check_writable()
            await asyncio.to_thread(replace_bytes, path, value.as_buffer_like(), sync_folder=False)

        def set_sync(self, key: str, value: Any) -> None:
            """`set` for zarr's synchronous paths."""
            path = self._replacing(key)
            if path is None:
                return super().set_sync(key, value)
            self._check_writable()
            replace_bytes(path, value.as_buffer_like(), sync_folder=False)
else:
    from zarr.storage import DirectoryStore

    class SyncedRewritesDirectoryStore(DirectoryStore):
        """zarr 2's DirectoryStore, except that a write replacing an existing file is
        fsynced before zarr renames it into place (module docstring) while `synced`."""

        synced = True

        def _tofile(self, a: Any, fn: str) -> None:  # zarr 2 calls it with `<name>.<uuid>.partial`
            super()._tofile(a, fn)
            target = fn.rsplit(".", 2)[0]
            if self.synced and fn.endswith(PARTIAL_SUFFIX) and os.path.isfile(target):
                fsync_path(fn)


if ZARR_MAJOR >= 3:
    class StoreGroup(zarr.Group):
        """zarr 3's Group, except that an array looked up in it (`group["data/<key>"]`)
        writes every chunk (ARRAY_CONFIG). An array's runtime config is fixed when it is
        opened, from zarr's global config unless given; `Array.with_config` is not in
        every zarr 3 this runs on (3.1.0 has none), so the array is made again from what
        the lookup read, with the config given: no second read of its metadata."""

        def __getitem__(self, path: str) -> Any:
            node = super().__getitem__(path)
            if not isinstance(node, zarr.Array):
                return node
            inner = node._async_array
            return zarr.Array(type(inner)(metadata=inner.metadata, store_path=inner.store_path, config=ARRAY_CONFIG))


def open_group(path: Path, mode: str) -> Any:
    """The zarr group at `path`, in zarr format 2 whichever zarr-python is installed, on a
    local store that syncs each file it replaces before the rename (module docstring)."""
    if ZARR_MAJOR >= 3:
        store = SyncedRewritesLocalStore(str(path), read_only=mode == "r")
        return StoreGroup(zarr.open_group(store, mode=mode, zarr_format=2)._async_group)
    return zarr.open_group(SyncedRewritesDirectoryStore(str(path)), mode=mode)


def sync_rewrites(group: Any, synced: bool) -> None:
    """Whether the local store under `group` (from `open_group`) syncs the files it
    replaces: off for a store made without durability (StoreSettings.durable, benchmarks)."""
    group.store.synced = synced


def create_array(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
                 dtype: str, compressor: Any) -> Any:
    """A zarr format 2 array with one numcodecs `compressor` (None: raw), fill value 0
    and '.'-separated chunk keys (`data/<key>/0.0.0`), the layout both versions read,
    that writes every chunk (ARRAY_CONFIG)."""
    if ZARR_MAJOR >= 3:
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, compressors=compressor,
            fill_value=0, config=ARRAY_CONFIG,
        )
    return group.create_dataset(
        name, shape=shape, chunks=chunks, dtype=dtype, compressor=compressor, fill_value=0,
        dimension_separator=".",
    )
