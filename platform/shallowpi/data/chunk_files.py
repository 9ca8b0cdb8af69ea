"""Camera frames written straight to their zarr chunk files, encoded on a thread pool,
and read back the same way, for training and to verify them (`dataset check`).

A camera array holds one frame per chunk, so a frame's chunk file is just the codec's
output for that frame, named `<row>.0.0.0` (zarr format 2, "." separator). Writing it
directly skips zarr-python 3's per-chunk asyncio machinery, which costs the store more
CPU than the JPEG encode itself (BENCHMARKS.md, "Episode store"), and lets the frames of
a batch encode in parallel: imagecodecs and Blosc release the GIL while they work.

Reading skips zarr too. zarr-python 3 reads one chunk through its event-loop thread and
two executor hand-offs (file read, then decode): ~1 ms of a ~2 ms frame read on an idle
machine, and on a loaded one each hand-off waits for the scheduler, so a training loader
spent more time waking threads than decoding JPEG (BENCHMARKS.md, "Loader").

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
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from numcodecs.compat import ensure_ndarray_like

from shallowpi.data.codecs import register_image_codecs
from shallowpi.durable_files import replace_bytes
from shallowpi.errors import StoreError

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = -1
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    # A forked child (a DataLoader worker) inherits the pool without its threads, and a
    # job handed to it would wait forever: each process makes its own.
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or os.getpid() != _POOL_PID:
            _POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2),
                                       thread_name_prefix="shallowpi-encode")
            _POOL_PID = os.getpid()
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
    # Synced here (if durable), on the pool, while recording goes on: the commit then has
    # only the directory and the small arrays left to sync. A failed write (a full disk)
    # removes its partial file: nothing after a writer's clean close looks for leftovers.
    replace_bytes(os.path.join(folder, chunk_name(row, frame.ndim)), encode_frame(codec, frame),
                  durable=durable, sync_folder=False)


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


JPEG_START, JPEG_END = b"\xff\xd8", b"\xff\xd9"  # JPEG's start- and end-of-image markers (SOI, EOI)
BLOSC_HEADER_BYTES = 16  # version, versionlz, flags, typesize, then uint32 LE nbytes, blocksize, cbytes


def cut_short(compressor: dict | None, data: bytes) -> str | None:
    """What shows that `data`, one frame's chunk file written with the codec `compressor`
    (its `.zarray` config), holds less than the codec wrote, or None when nothing does.

    Checked before decoding because the codecs decode such a file without an error:
    libjpeg decodes a JPEG cut anywhere after its header to a whole-size frame, the rest
    filled grey (128), and Blosc reads past the end of a buffer shorter than its header
    records (one cut by up to 5 bytes decoded to a whole frame). The JPEG encoder writes
    the end-of-image marker last, and neither `encode_frame` nor zarr appends anything
    after it; a Blosc header records the buffer's whole length (`cbytes`). A file that is
    no JPEG at all is left to the decoder's error. JPEG-XL's decoder refuses a cut
    codestream itself, and a raw frame is judged by its size."""
    codec_id = compressor.get("id") if compressor else None
    if codec_id == "imagecodecs_jpeg" and data.startswith(JPEG_START) and not data.endswith(JPEG_END):
        return f"is cut short: its {len(data)} bytes end without JPEG's end-of-image marker (FF D9)"
    if codec_id == "blosc":
        if len(data) < BLOSC_HEADER_BYTES:
            return f"is {len(data)} bytes, shorter than a Blosc header"
        if len(data) < (recorded := int.from_bytes(data[12:16], "little")):
            return f"is shorter than its Blosc header records: {len(data)} of {recorded} bytes"
    return None


_DECODERS: dict[str, tuple[Codec | None, list[Codec]]] = {}


def _decoder(compressor: dict | None, filters: Sequence[dict] | None) -> tuple[Codec | None, list[Codec]]:
    """The codec objects of a `.zarray`'s `compressor` (None: raw bytes) and `filters`, made
    once per distinct config and shared. Builds a JSON key (µs): look it up once per array,
    not per frame (`FrameLayout.codec`)."""
    key = json.dumps([compressor, filters], sort_keys=True)
    if key not in _DECODERS:
        register_image_codecs()
        _DECODERS[key] = (numcodecs.get_codec(compressor) if compressor else None,
                          [numcodecs.get_codec(f) for f in filters or ()])
    return _DECODERS[key]


# What a file of the store that this user may not read is called (a frame here; an
# episode's metadata or rows in `dataset check` and `dataset info`): no damage, and no case
# for `dataset delete` (the episode is sound, as its owner sees it).
UNREADABLE = "not readable by this user: ask its owner (or check as them)"
NOT_READABLE = f"is {UNREADABLE}"


def undecodable_frames(folder: str, rows: Sequence[int], frame_ndim: int, frame_nbytes: int,
                       compressor: dict | None, filters: Sequence[dict] | None = None) -> list[tuple[int, str]]:
    """(row, what is wrong) for each of `rows` whose chunk file in `folder` does not decode
    to a frame of `frame_nbytes` bytes, with the codec named by the array's `.zarray`, or
    is cut short although it would decode (`cut_short`), or may not be read by this user
    (`NOT_READABLE`: a colleague's file, not damage).

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
            if (cut := cut_short(compressor, data)) is not None:
                bad.append((row, cut))
                continue
            decoded = codec.decode(data) if codec is not None else data
            for f in reversed(filter_codecs):
                decoded = f.decode(decoded)
            nbytes = ensure_ndarray_like(decoded).nbytes
        except FileNotFoundError:
            bad.append((row, "is missing"))
            continue
        except PermissionError:  # a colleague's file: sound, only not this user's to read
            bad.append((row, NOT_READABLE))
            continue
        except Exception as exc:  # any codec error means the same: this frame is lost
            bad.append((row, f"does not decode ({type(exc).__name__})"))
            continue
        if nbytes != frame_nbytes:
            bad.append((row, f"decodes to {nbytes} bytes, not a {frame_nbytes}-byte frame"))
    return bad


@dataclass(frozen=True)
class FrameLayout:
    """How an array that holds one frame per chunk lies on disk, from its `.zarray`."""

    folder: str  # the array's folder (a str: see _write_one)
    shape: tuple[int, ...]  # one frame, e.g. (H, W, C)
    dtype: np.dtype
    compressor: dict | None  # the numcodecs config; None: raw bytes
    fill_value: int | float

    @classmethod
    def of(cls, folder: str | os.PathLike[str], info: dict) -> FrameLayout | None:
        """The layout of the array whose `.zarray` is `info`, or None when its files are not
        one C-order frame a file under "."-separated names with no filters (then read it
        through zarr)."""
        shape, chunks = list(info["shape"]), list(info["chunks"])
        if (chunks != [1, *shape[1:]] or info.get("order", "C") != "C" or info.get("filters")
                or (info.get("dimension_separator") or ".") != "."):
            return None
        return cls(os.fspath(folder), tuple(shape[1:]), np.dtype(info["dtype"]), info.get("compressor"),
                   info.get("fill_value") or 0)

    def chunk_path(self, row: int) -> str:
        """Path of the chunk file holding frame `row`."""
        return os.path.join(self.folder, chunk_name(row, len(self.shape)))

    @cached_property
    def codec(self) -> Codec | None:
        """The decoder of `compressor` (None: raw bytes), looked up on first use, not per
        frame: a training sample reads one frame a camera, and `_decoder`'s JSON key cost
        3-10 µs of each read."""
        return _decoder(self.compressor, None)[0]

    def __getstate__(self) -> dict[str, Any]:
        # Without the codec looked up (image codecs do not pickle): a layout handed to a
        # process pool looks its own up there.
        return {name: value for name, value in self.__dict__.items() if name != "codec"}


def read_frame(layout: FrameLayout, row: int) -> np.ndarray:
    """Row `row` decoded, a writable array of `layout.shape`, the same values zarr reads
    (a missing chunk file reads as the fill value, as in zarr: `require_intact` is the
    guard against that). Decodes in the calling thread; StoreError if the file does not
    decode to one frame, or is cut short (`cut_short`: it would decode, partly grey)."""
    codec = layout.codec
    path = layout.chunk_path(row)
    try:
        with open(path, "rb") as file:
            data = file.read()
    except FileNotFoundError:
        return np.full(layout.shape, layout.fill_value, layout.dtype)
    if (cut := cut_short(layout.compressor, data)) is not None:
        raise StoreError(f"{path} {cut}; `platform dataset check` lists every damaged frame")
    try:
        decoded = ensure_ndarray_like(codec.decode(data) if codec is not None else data)
        frame = decoded.reshape(-1).view(layout.dtype).reshape(layout.shape)
    except Exception as exc:  # any codec or size error means the same: this frame is lost
        raise StoreError(f"{path} does not decode to a {'x'.join(map(str, layout.shape))} frame "
                         f"({type(exc).__name__}); `platform dataset check` lists every damaged frame") from exc
    # The codec's own output is ours to hand out (no copy); raw or Blosc bytes are read-only.
    return frame if frame.flags.writeable else frame.copy()


def read_frames(layout: FrameLayout, start: int, stop: int) -> np.ndarray:
    """Rows start:stop, [stop - start, *layout.shape]; one row decodes in this thread (a
    training sample: no hand-off), more decode in parallel on the encode pool."""
    if stop - start == 1:
        return read_frame(layout, start)[np.newaxis]
    out = np.empty((max(stop - start, 0), *layout.shape), layout.dtype)

    def fill(row: int) -> None:
        out[row - start] = read_frame(layout, row)

    for future in [_pool().submit(fill, row) for row in range(start, stop)]:
        future.result()  # re-raises the first failure
    return out
