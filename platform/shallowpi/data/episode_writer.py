"""`EpisodeWriter`: one episode's frames on their way into an `EpisodeStore`.

`EpisodeStore.begin_episode` returns one; `add_frame` buffers a tick, `commit` writes the
episode and makes it visible with the store's commit protocol (data/store.py), `discard`
leaves the store as it was. Camera frames go to disk in batches while recording, each
frame its own chunk file (data/chunk_files.py); the numeric rows are small and wait for
the commit, which records their sha256 and any NaN/inf rows in the episode's metadata.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from shallowpi.data import chunk_files
from shallowpi.data.durable_io import NotRegularFile, checksum, file_in, json_ready, open_regular
from shallowpi.data.features import FeatureKind
from shallowpi.data.nonfinite import nonfinite_ranges
from shallowpi.data.row_ranges import describe_ranges
from shallowpi.data.store import TICK_KEY, TIMESTAMP_SUFFIX, EpisodeInfo
from shallowpi.durable_files import PARTIAL_SUFFIX
from shallowpi.errors import StoreError

if TYPE_CHECKING:
    from shallowpi.data.store import EpisodeStore

log = logging.getLogger(__name__)


class EpisodeWriter:
    """Frames of one episode on their way into the store; `commit` or `discard` ends it.

    Camera frames are written while recording, in batches (so an episode need not fit in
    memory); the numeric arrays are small and are written at commit. Made only by
    `EpisodeStore.begin_episode`, whose write steps (`_commit`, `_truncate`, `_fsync_array`)
    it calls: the store owns the commit protocol, the writer owns the episode's frames.
    """

    def __init__(self, store: EpisodeStore, task: str, robot: str, calibration_id: str,
                 fps: float, start_time: float) -> None:
        self._store = store
        self._meta = dict(task=task, robot=robot, calibration_id=calibration_id, fps=float(fps),
                          start_time=float(start_time))
        self._start = store.num_frames
        self._length = 0
        self._numeric: dict[str, list[np.ndarray]] = {TICK_KEY: []}
        self._images: dict[str, list[np.ndarray]] = {}
        self._image_rows: dict[str, int] = {}
        # Frames a merge or delete placed that the commit must sync: copied, or linked from a
        # store that is not durable.
        self._copied = False
        for key, feature in store.features.items():
            self._numeric[key + TIMESTAMP_SUFFIX] = []
            if feature.kind is FeatureKind.IMAGE:
                self._images[key] = []
                self._image_rows[key] = 0
            else:
                self._numeric[key] = []
        self.is_open = True

    def __len__(self) -> int:
        return self._length

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.is_open:
            self.discard()

    def add_frame(
        self,
        values: Mapping[str, np.ndarray],
        timestamp: float,
        capture_times: Mapping[str, float] | None = None,
    ) -> None:
        """Append one frame: a value for every feature, the tick time (s since the episode
        began) and, per feature, when it was captured (defaults to the tick time). The
        values are copied: the caller may reuse its arrays for the next frame."""
        self._require_open()
        features = self._store.features
        missing = features.keys() - values.keys()
        if missing:
            raise StoreError(f"frame lacks {', '.join(sorted(missing))}")
        extra = values.keys() - features.keys()
        if extra:
            raise StoreError(f"frame has keys the store does not hold: {', '.join(sorted(extra))}")
        capture_times = capture_times or {}
        # Every value checked before any is appended: a StoreError leaves the episode's
        # arrays row-aligned, so a caller that goes on cannot shift one key against another.
        # Each a copy of its own (`check_value`): what is held until the commit or the next
        # batch of frames must not be the caller's buffer, which it may refill for the next frame.
        checked = {key: feature.check_value(key, values[key]) for key, feature in features.items()}
        self._numeric[TICK_KEY].append(np.float64(timestamp))
        for key, feature in features.items():
            value = checked[key]
            self._numeric[key + TIMESTAMP_SUFFIX].append(np.float64(capture_times.get(key, timestamp)))
            if feature.kind is FeatureKind.IMAGE:
                self._images[key].append(value)
                if len(self._images[key]) >= self._store.settings.image_batch:
                    self._flush_images(key)
            else:
                self._numeric[key].append(value)
        self._length += 1

    def add_frames_from(self, source: EpisodeStore, start: int, stop: int) -> None:
        """Append rows start:stop of another store with the same features (merge, delete)."""
        self._require_open()
        count = stop - start
        for key, feature in self._store.features.items():
            self._numeric[key + TIMESTAMP_SUFFIX].extend(source.read(key + TIMESTAMP_SUFFIX, start, stop))
            if feature.kind is FeatureKind.IMAGE:
                self._copy_image_rows(source, key, start, stop)
            else:
                self._numeric[key].extend(source.read(key, start, stop))
        self._numeric[TICK_KEY].extend(source.read(TICK_KEY, start, stop))
        self._length += count

    def _copy_image_rows(self, source: EpisodeStore, key: str, start: int, stop: int) -> None:
        store = self._store
        same_encoding = source.array_info(key)["compressor"] == store.array_info(key)["compressor"]
        if not same_encoding:
            # A batch of rows a read: each read looks at whether the source was edited (two
            # stats), and the frames of one batch are what the buffer holds at most anyway.
            batch = store.settings.image_batch
            for block in range(start, stop, batch):
                for frame in source.read(key, block, min(block + batch, stop)):
                    self._images[key].append(frame)
                    if len(self._images[key]) >= batch:
                        self._flush_images(key)
            return
        self._flush_images(key)
        array = store._array(f"data/{key}")
        first = self._start + self._image_rows[key]
        array.resize((first + stop - start, *array.shape[1:]))
        tail = ".0" * len(store.features[key].shape)
        src_folder, dst_folder = source.path / "data" / key, store.path / "data" / key
        linked = True
        for offset, row in enumerate(range(start, stop)):
            src = file_in(src_folder, f"{row}{tail}")
            dst = file_in(dst_folder, f"{first + offset}{tail}")
            # One chunk is one frame, so a frame moves as its encoded bytes.
            tmp = dst + PARTIAL_SUFFIX
            linked = _link_or_copy(src, tmp) and linked
            os.replace(tmp, dst)
        # A link shares the source's file: on stable storage already if the source is durable.
        self._copied = self._copied or not (linked and source.settings.durable)
        self._image_rows[key] += stop - start

    def _flush_images(self, key: str) -> None:
        frames = self._images[key]
        if not frames:
            return
        array = self._store._array(f"data/{key}")
        first = self._start + self._image_rows[key]
        # Shape first, then the chunks (as zarr orders it): a crash leaves a cuttable tail.
        array.resize((first + len(frames), *array.shape[1:]))
        chunk_files.write_frames(self._store.path / "data" / key, first, frames, self._store._image_codec,
                                 durable=self._store.settings.durable)
        self._image_rows[key] += len(frames)
        frames.clear()

    def commit(
        self,
        success: bool | None = None,
        dropped_frames: int | None = 0,
        extra: Mapping[str, Any] | None = None,
        duration_s: float | None = None,
        expect_checksums: Mapping[str, str] | None = None,
    ) -> EpisodeInfo:
        """Write the episode and make it visible, atomically; returns its metadata.

        `expect_checksums` (a copied episode's, from its source): a numeric array whose rows
        hash otherwise raises StoreError before anything is committed, so a copy never
        records fresh checksums over rows its source lost (zarr reads a missing chunk as
        zeros)."""
        self._require_open()
        if self._length == 0:
            raise StoreError("cannot commit an episode with no frames; discard it instead")
        # Refused before anything is written, the writer left open: a value the metadata
        # file cannot hold failed only at its write, after the rows, as a bare TypeError.
        success = _success_mark(success)
        extra = json_ready(dict(extra or {}), "the episode's extra")
        store = self._store
        end = self._start + self._length
        checksums: dict[str, str] = {}
        nonfinite: dict[str, list[list[int]]] = {}
        for key in self._images:
            self._flush_images(key)
        for key, values in self._numeric.items():
            array = store._array(f"data/{key}")
            rows = np.stack(values).astype(array.dtype, copy=False)
            array.resize((end, *array.shape[1:]))
            array[self._start : end] = rows
            checksums[key] = checksum(rows)
            if expect_checksums and key in expect_checksums and expect_checksums[key] != checksums[key]:
                raise StoreError(f"{key} of the episode being copied does not match its checksum from commit time "
                                 "in its source store: `platform dataset check` names the damage")
            if ranges := nonfinite_ranges(rows):
                nonfinite[key] = ranges
                # Kept, as recorded: `dataset check` and training name these rows.
                log.warning("%s episode %d: %s holds NaN/inf at rows %s", store.path.name, len(store),
                            key, describe_ranges(ranges))
        if store.settings.durable:
            for name in store._array_names():
                # Camera chunks were synced as they were written (chunk_files).
                synced = name in self._images and not self._copied
                store._fsync_array(f"data/{name}", self._start, end, chunks=not synced)
        ticks = np.asarray(self._numeric[TICK_KEY])
        if duration_s is None:
            duration_s = float(ticks[-1] - ticks[0]) + 1.0 / self._meta["fps"] if len(ticks) else 0.0
        info = EpisodeInfo(
            index=len(store), length=self._length, success=success, dropped_frames=None if dropped_frames is None else int(dropped_frames),
            duration_s=float(duration_s), extra=extra, checksums=checksums, nonfinite=nonfinite,
            **self._meta,
        )
        store._commit(info, end)
        self.is_open = False
        return info

    def discard(self) -> None:
        """Drop the episode; the store is as it was before `begin_episode`. An episode whose
        commit record was written (a commit that failed after its commit point) is kept:
        its rows are committed, and cutting them would damage the store."""
        self._require_open()
        try:
            if self._store.num_frames <= self._start:
                self._store._truncate(self._start)
        finally:
            self.is_open = False

    def _require_open(self) -> None:
        if not self.is_open:
            raise StoreError("this episode was already committed or discarded")


def _success_mark(success: object) -> bool | None:
    """An episode's success mark as stored: True, False or None (unmarked). A numpy bool
    (`np.bool_`, what a comparison of arrays gives) counts as the bool it holds, and so do
    the integers 0 and 1 (a script's `success=1`, stored as such by older versions, which a
    delete or merge copies back through here); anything else is a StoreError, not a guess
    (`bool("no")` is True)."""
    if success is None or isinstance(success, (bool, np.bool_)):
        return None if success is None else bool(success)
    if isinstance(success, (int, np.integer)) and success in (0, 1):
        return bool(success)
    raise StoreError(f"success must be True, False or None (unmarked), not {type(success).__name__} {success!r}")


def _link_or_copy(src: str, dst: str) -> bool:
    """Make `dst` hold `src`'s bytes: a hard link where the file system allows one (True),
    else a copy (False). A frame's chunk file is written once and only ever replaced, never
    changed in place, so two stores may share it; linking spares a merge or a delete one
    copy and one fsync of every frame (a merge of 200 bimanual episodes moves ~330,000).

    Raises StoreError when `src` is not a regular file: a received store may hold a
    symbolic link for a chunk, which a link would put into the new store as that link and a
    copy would replace with its target's bytes (`~/.ssh/id_rsa` as a frame, shared on with
    the store). Neither the link nor the copy follows one made since the look (`os.link`
    without following, then a look at what was linked; the copy from what was opened)."""
    _require_chunk_file(src, os.lstat(src).st_mode)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(dst)  # a partial file an interrupted edit left
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:  # another file system, or links not supported
        _copy_chunk_file(src, dst)
        return False
    try:
        _require_chunk_file(src, os.lstat(dst).st_mode)  # dst is what was linked, and ours
    except StoreError:
        os.unlink(dst)
        raise
    return True


def _copy_chunk_file(src: str, dst: str) -> None:
    """Copy the regular file `src` to `dst`, from the file opened (never through a link, nor
    waiting on a FIFO: `open_regular`); StoreError as `_require_chunk_file`."""
    try:
        chunk = open_regular(src)
    except NotRegularFile as error:
        raise StoreError(f"{src} is {error.kind}, not a chunk this store wrote; refusing") from None
    with chunk, open(dst, "wb") as out:
        shutil.copyfileobj(chunk, out)


def _require_chunk_file(src: str, mode: int) -> None:
    """Raise StoreError, naming `src`, unless `mode` (its lstat or fstat) is a regular file's."""
    if stat.S_ISREG(mode):
        return
    kind = "a link" if stat.S_ISLNK(mode) else "not a regular file"
    raise StoreError(f"{src} is {kind}, not a chunk this store wrote; refusing")
