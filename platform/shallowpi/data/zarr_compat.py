"""The few zarr calls the store makes, for zarr-python 3 (Python >= 3.11) and 2 (3.10).

Both write the same zarr format 2 layout; only opening a group and creating an array are
spelled differently. The robot's computer on JetPack 6 has Python 3.10, so zarr 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zarr

ZARR_MAJOR = int(zarr.__version__.split(".")[0])

if ZARR_MAJOR >= 3:
    # zarr 3 skips chunks equal to the fill value, and to know, compares every chunk
    # with it before encoding: ~6 ms for one 480x640x3 frame, more than the JPEG
    # encode. Camera frames are never all fill value, so the check only costs (it
    # cut store writes from ~90 to ~35 frames/s; see BENCHMARKS.md). zarr 2 writes
    # every chunk by default. The setting is per process and only read at write time.
    zarr.config.set({"array.write_empty_chunks": True})


def open_group(path: Path, mode: str) -> Any:
    """The zarr group at `path`, in zarr format 2 whichever zarr-python is installed."""
    if ZARR_MAJOR >= 3:
        return zarr.open_group(str(path), mode=mode, zarr_format=2)
    return zarr.open_group(str(path), mode=mode)


def create_array(group: Any, name: str, shape: tuple[int, ...], chunks: tuple[int, ...],
                 dtype: str, compressor: Any) -> Any:
    """A zarr format 2 array with one numcodecs `compressor` (None: raw), fill value 0
    and '.'-separated chunk keys (`data/<key>/0.0.0`), the layout both versions read."""
    if ZARR_MAJOR >= 3:
        return group.create_array(
            name, shape=shape, chunks=chunks, dtype=dtype, compressors=compressor,
            fill_value=0,
        )
    return group.create_dataset(
        name, shape=shape, chunks=chunks, dtype=dtype, compressor=compressor, fill_value=0,
        dimension_separator=".",
    )
