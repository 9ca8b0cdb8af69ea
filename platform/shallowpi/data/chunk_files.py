"""Camera frames written straight to their zarr chunk files, encoded on a thread pool.

A camera array holds one frame per chunk, so a frame's chunk file is just the codec's
output for that frame, named `<row>.0.0.0` (zarr format 2, "." separator). Writing it
directly skips zarr-python 3's per-chunk asyncio machinery, which costs the store more
CPU than the JPEG encode itself (BENCHMARKS.md, "Episode store"), and lets the frames of
a batch encode in parallel: imagecodecs and Blosc release the GIL while they work.

Each file appears by an atomic rename of a `.partial` file, as zarr's own local store
does; the store's recovery deletes `.partial` leftovers. The caller grows the array's
shape first, as zarr does, so a crash leaves at most a tail the store already knows how
to cut.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from numcodecs.abc import Codec

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                       thread_name_prefix="shallowpi-encode")
        return _POOL


def chunk_name(row: int, frame_ndim: int) -> str:
    """The chunk file of `row` in a one-frame-per-chunk array: "17.0.0.0" for HxWxC."""
    return str(row) + ".0" * frame_ndim


def encode_frame(codec: Codec | None, frame: np.ndarray) -> bytes:
    """The bytes zarr would store for this one-frame chunk."""
    chunk = np.ascontiguousarray(frame)[np.newaxis]  # the chunk's own shape, [1, H, W, C]
    if codec is None:
        return chunk.tobytes()
    return bytes(codec.encode(chunk))


def _write_one(folder: Path, row: int, frame: np.ndarray, codec: Codec | None, durable: bool) -> None:
    path = folder / chunk_name(row, frame.ndim)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as out:
        out.write(encode_frame(codec, frame))
        if durable:
            # Synced here, on the pool, while recording goes on: the commit then has
            # only the directory and the small arrays left to sync.
            os.fsync(out.fileno())
    os.replace(partial, path)


def write_frames(folder: Path, first_row: int, frames: Sequence[np.ndarray], codec: Codec | None,
                 durable: bool = False) -> None:
    """Encode `frames` in parallel and write them as rows first_row, first_row + 1, ...
    of the one-frame-per-chunk array in `folder`; returns when all are written (and, if
    `durable`, on stable storage)."""
    folder = Path(folder)
    futures = [_pool().submit(_write_one, folder, first_row + i, frame, codec, durable)
               for i, frame in enumerate(frames)]
    for future in futures:
        future.result()  # re-raises the first failure
