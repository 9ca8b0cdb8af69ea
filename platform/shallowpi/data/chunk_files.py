"""Camera frames written straight to their zarr chunk files, encoded on a thread pool,
and read back the same way to verify them (`dataset check`).

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

import json
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like

from shallowpi.data.codecs import register_image_codecs

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


def _write_one(folder: str, row: int, frame: np.ndarray, codec: Codec | None, durable: bool) -> None:
    # Plain strings, not pathlib: pathlib interns every name it parses, and on Python 3.12
    # interned strings are never freed, so a recording leaked every chunk file's name
    # (~0.5 KB an episode of 3 cameras; tools/bench/record_soak.py).
    path = os.path.join(folder, chunk_name(row, frame.ndim))
    partial = path + ".partial"
    with open(partial, "wb") as out:
        out.write(encode_frame(codec, frame))
        if durable:
            # Synced here, on the pool, while recording goes on: the commit then has
            # only the directory and the small arrays left to sync.
            os.fsync(out.fileno())
    os.replace(partial, path)


def write_frames(folder: str | os.PathLike[str], first_row: int, frames: Sequence[np.ndarray], codec: Codec | None,
                 durable: bool = False) -> None:
    """Encode `frames` in parallel and write them as rows first_row, first_row + 1, ...
    of the one-frame-per-chunk array in `folder`; returns when all are written (and, if
    `durable`, on stable storage)."""
    folder = os.fspath(folder)
    futures = [_pool().submit(_write_one, folder, first_row + i, frame, codec, durable)
               for i, frame in enumerate(frames)]
    for future in futures:
        future.result()  # re-raises the first failure


_DECODERS: dict[str, tuple[Codec | None, list[Codec]]] = {}


def _decoder(compressor: dict | None, filters: Sequence[dict] | None) -> tuple[Codec | None, list[Codec]]:
    key = json.dumps([compressor, filters], sort_keys=True)
    if key not in _DECODERS:
        register_image_codecs()
        _DECODERS[key] = (numcodecs.get_codec(compressor) if compressor else None,
                          [numcodecs.get_codec(f) for f in filters or ()])
    return _DECODERS[key]


def undecodable_frames(folder: str, rows: Sequence[int], frame_ndim: int, frame_nbytes: int,
                       compressor: dict | None, filters: Sequence[dict] | None = None) -> list[tuple[int, str]]:
    """(row, what is wrong) for each of `rows` whose chunk file in `folder` does not decode
    to a frame of `frame_nbytes` bytes, with the codec named by the array's `.zarray`.

    Reads the files as zarr would, without zarr: a top-level function of plain arguments,
    so a process pool can run it as well as a thread pool (imagecodecs and Blosc release
    the GIL while decoding)."""
    codec, filter_codecs = _decoder(compressor, filters)
    bad = []
    for row in rows:
        path = os.path.join(folder, chunk_name(row, frame_ndim))  # a str: see _write_one
        try:
            with open(path, "rb") as file:
                data = file.read()
            decoded = codec.decode(data) if codec is not None else data
            for f in reversed(filter_codecs):
                decoded = f.decode(decoded)
            nbytes = ensure_ndarray_like(decoded).nbytes
        except FileNotFoundError:
            bad.append((row, "is missing"))
            continue
        except Exception as exc:  # any codec error means the same: this frame is lost
            bad.append((row, f"does not decode ({type(exc).__name__})"))
            continue
        if nbytes != frame_nbytes:
            bad.append((row, f"decodes to {nbytes} bytes, not a {frame_nbytes}-byte frame"))
    return bad
