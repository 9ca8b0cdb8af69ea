"""Room on the disk for the episodes to come, checked at start and before each episode.

An episode takes (bytes per frame on disk) x (frames per episode). Camera frames dominate
and their compressed size depends on the scene, so bytes per frame are measured from
episodes on disk: the store's last one when recording resumes, then each episode this
session commits (the largest of the last few, so a busier scene is not underestimated).
Until a first measurement the raw (uncompressed) size stands in; it is an upper bound,
so it warns but never refuses. Episodes still queued for the writer have not taken their
room yet and count as taken.

Bytes are not all an episode takes: every camera frame is a file of its own
(data/chunk_files.py), and a 224x224 JPEG (~9 KB) is smaller than ext4's default 16 KiB
of disk per inode, so a disk of such frames runs out of inodes at about three quarters
full (a 64 MB ext4 refused the 65th episode with 38 MB free, the take in flight lost).
The files an episode makes are known without a measurement (one a camera frame, a few
more), so free inodes are checked as free bytes are, and refuse from the start.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.chunk_files import chunk_name
from shallowpi.data.features import Feature, FeatureKind
from shallowpi.data.store_settings import StoreSettings
from shallowpi.errors import PlatformError

log = logging.getLogger(__name__)


class DiskSpaceError(PlatformError):
    """Not enough free space for the next episode."""


def _mb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def raw_frame_bytes(features: Mapping[str, Feature]) -> int:
    """Bytes of one frame uncompressed: every feature, its capture time and the tick time."""
    values = sum(int(np.prod(f.shape)) * np.dtype(f.dtype).itemsize for f in features.values())
    return values + 8 * (len(features) + 1)


def episode_disk_bytes(store: Any, index: int) -> int:
    """Bytes episode `index` of `store` takes on disk: its camera chunk files as allocated
    (one frame a chunk), its numeric rows at their raw size (an upper bound; they are a
    small part)."""
    start, stop = store.episode_range(index)
    total = 0
    numeric = {key: f for key, f in store.features.items() if f.kind is not FeatureKind.IMAGE}
    total += raw_frame_bytes(numeric) * (stop - start)
    for key, feature in store.features.items():
        if feature.kind is not FeatureKind.IMAGE:
            continue
        total += 8 * (stop - start)  # the frame's capture time
        # Plain strings: a Path per frame would intern every chunk name for good (data/chunk_files.py).
        folder = os.path.join(store.path, "data", key)
        for row in range(start, stop):
            try:
                stat = os.stat(os.path.join(folder, chunk_name(row, len(feature.shape))))
            except FileNotFoundError:
                continue  # an all-zero chunk zarr did not write
            # What the file system allocates (whole blocks), which small frames exceed by far.
            total += max(stat.st_size, getattr(stat, "st_blocks", 0) * 512)
    return total


# Files an episode makes besides its chunk files: its metadata file (episodes/<n>.json) and,
# once in 4096 episodes, a chunk of meta/episode_ends.
EPISODE_META_FILES = 2
# Inodes that stay free: the .partial files of the frames being encoded (one an encode
# thread), the commit record's and an episode file's own, and whatever else on the
# machine needs a file (logs). A few MB's worth of inodes at ext4's default ratio.
RESERVE_FILES = 1024


def free_files(path: os.PathLike[str] | str) -> int | None:
    """Files (inodes) an unprivileged process may still create on the file system of
    `path`, or None where it does not count them (statvfs gives 0 total and 0 free: some
    network and overlay file systems, /proc). OSError from `os.statvfs` passes through."""
    stat = os.statvfs(path)
    if stat.f_files == 0 and stat.f_favail == 0:
        return None
    return stat.f_favail


def episode_files(features: Mapping[str, Feature], episode_rows: int, numeric_chunk_rows: int) -> int:
    """Files an episode of `episode_rows` frames adds to a store at most: a chunk file per
    camera frame, a chunk file of each numeric array (the tick, each numeric feature, each
    feature's capture times) per `numeric_chunk_rows` rows it starts, and its metadata."""
    cameras = sum(1 for f in features.values() if f.kind is FeatureKind.IMAGE)
    numeric_arrays = 1 + len(features) + (len(features) - cameras)
    chunks = -(-episode_rows // max(1, numeric_chunk_rows))  # chunks starting inside the episode
    return cameras * episode_rows + numeric_arrays * chunks + EPISODE_META_FILES


def _count(n: int) -> str:
    return f"{n:,}"


_INODE_ADVICE = ("delete files on that disk or record into another --data-root (a file system made with more "
                 "inodes holds more small frames: mkfs.ext4 -i 8192)")


class DiskBudget:
    """Free space at `path` against the cost of an episode of `episode_rows` frames.

    `learn(store, index)` measures a committed episode (call it from the writer thread,
    which owns the store); `check_room` runs on the control loop and only reads numbers.
    Free inodes are held against the files an episode makes (`episode_files`) with
    `reserve_files` kept free, where the file system counts them.
    `numeric_chunk_rows`: the store's (default: StoreSettings'); a measured store's own
    replaces it (`learn`).
    """

    def __init__(self, path: os.PathLike[str] | str, features: Mapping[str, Feature], episode_rows: int,
                 reserve_bytes: int = 32 * 10**6, remember: int = 5, reserve_files: int = RESERVE_FILES,
                 numeric_chunk_rows: int | None = None) -> None:
        self.path = Path(path)
        self.features = dict(features)
        self.episode_rows = episode_rows
        self.reserve_bytes = reserve_bytes
        self.reserve_files = reserve_files
        self.raw_frame_bytes = raw_frame_bytes(features)
        self.numeric_chunk_rows = numeric_chunk_rows or StoreSettings().numeric_chunk_rows
        self._measured: deque[float] = deque(maxlen=remember)  # bytes per frame, recent episodes
        self._lock = threading.Lock()

    @property
    def measured(self) -> bool:
        """True once a committed episode has been measured (until then the raw size stands in)."""
        return bool(self._measured)

    def frame_bytes(self) -> float:
        """Bytes per frame on disk: the largest recent measurement, else the raw size."""
        with self._lock:
            return max(self._measured) if self._measured else float(self.raw_frame_bytes)

    def episode_bytes(self) -> float:
        """Bytes a full-length episode is expected to take: `frame_bytes()` x episode_rows."""
        return self.frame_bytes() * self.episode_rows

    def episode_files(self) -> int:
        """Files (inodes) a full-length episode adds to the store at most (`episode_files`)."""
        return episode_files(self.features, self.episode_rows, self.numeric_chunk_rows)

    def _existing(self) -> Path:
        """`path`, or its nearest existing parent (a new store: the folder it will be made in)."""
        path = self.path
        while not path.exists() and path != path.parent:
            path = path.parent
        return path

    def free_bytes(self) -> int:
        """Free bytes on the file system of `path`, or of its nearest existing parent (a
        store not created yet). OSError from `shutil.disk_usage` passes through."""
        return shutil.disk_usage(self._existing()).free

    def free_files(self) -> int | None:
        """Files (inodes) that may still be made on the file system of `path` (or of its
        nearest existing parent), None where it does not count them (`free_files`)."""
        return free_files(self._existing())

    def require_reserve(self) -> None:
        """Raise `DiskSpaceError` if the free space or the free inodes are already below
        their reserve: then no episode may start, whatever it turns out to take (checked
        before a store is made)."""
        free = self.free_bytes()
        if free < self.reserve_bytes:
            raise DiskSpaceError(f"{_mb(free)} free at {self.path.parent}, below the {_mb(self.reserve_bytes)} "
                                 "that stay free (record.disk_reserve_mb): no episode fits; free space or record "
                                 "into another --data-root")
        files = self.free_files()
        if files is not None and files < self.reserve_files:
            raise DiskSpaceError(f"{_count(files)} more files (inodes) can be made at {self.path.parent}, below the "
                                 f"{_count(self.reserve_files)} that stay free: no episode fits (each camera frame is "
                                 f"a file); {_INODE_ADVICE}")

    def _bytes_fit(self, queued: int) -> int:
        room = self.free_bytes() - self.reserve_bytes - queued * self.episode_bytes()
        return max(0, int(room // max(self.episode_bytes(), 1.0)))

    def _files_fit(self, queued: int) -> int | None:
        files = self.free_files()
        if files is None:
            return None
        room = files - self.reserve_files - queued * self.episode_files()
        return max(0, room // max(self.episode_files(), 1))

    def episodes_that_fit(self, queued: int = 0) -> int:
        """Full-length episodes the free space and the free inodes hold beyond their
        reserves, after `queued` episodes the writer has yet to write."""
        files_fit = self._files_fit(queued)
        bytes_fit = self._bytes_fit(queued)
        return bytes_fit if files_fit is None else min(bytes_fit, files_fit)

    def learn(self, store: Any, index: int) -> None:
        """Measure committed episode `index` of `store` (from the writer thread), and take
        the store's numeric chunk length for the files an episode makes."""
        self.numeric_chunk_rows = store.settings.numeric_chunk_rows
        info = store.episode(index)
        if info.length <= 0:
            return
        per_frame = episode_disk_bytes(store, index) / info.length
        with self._lock:
            self._measured.append(per_frame)

    def describe(self, queued: int = 0) -> str:
        """One line: free space, an episode's size and how many episodes fit (and, where
        the inodes run out first, that they do)."""
        how = "measured" if self.measured else "uncompressed, an upper bound until one is recorded"
        files_fit, bytes_fit = self._files_fit(queued), self._bytes_fit(queued)
        if files_fit is not None and files_fit < bytes_fit:  # then the number is no estimate
            return (f"disk: {_mb(self.free_bytes())} and {_count(self.free_files() or 0)} files (inodes) free at "
                    f"{self.path}; an episode of {self.episode_rows} frames makes {_count(self.episode_files())} "
                    f"files: {files_fit} fit before the inodes run out ({_count(self.reserve_files)} stay free)")
        return (f"disk: {_mb(self.free_bytes())} free at {self.path}; an episode of {self.episode_rows} frames "
                f"takes ~{_mb(self.episode_bytes())} ({how}): {'about' if self.measured else 'at least'} "
                f"{bytes_fit} fit")

    def check_room(self, episode: int, queued: int = 0) -> None:
        """Raise `DiskSpaceError` if episode `episode` (its index in the store) cannot fit.
        Unmeasured, the estimate of bytes is an upper bound: it warns and lets the episode
        start, unless the free space is below the reserve already. The files an episode
        makes are known without a measurement: too few free inodes always refuse."""
        files_fit = self._files_fit(queued)
        if files_fit is not None and files_fit < 1:
            raise DiskSpaceError(
                f"no room for episode {episode}: {_count(self.free_files() or 0)} more files (inodes) can be made "
                f"at {self.path}, {queued} episode(s) still being written, an episode of {self.episode_rows} frames "
                f"makes {_count(self.episode_files())} files (one a camera frame) and {_count(self.reserve_files)} "
                f"stay free; {_INODE_ADVICE}")
        if self._bytes_fit(queued) >= 1:
            return
        line = (f"no room for episode {episode}: {_mb(self.free_bytes())} free at {self.path}, "
                f"{queued} episode(s) still being written, an episode takes ~{_mb(self.episode_bytes())} "
                f"and {_mb(self.reserve_bytes)} stay free (record.disk_reserve_mb)")
        if not self.measured and self.free_bytes() >= self.reserve_bytes:
            log.warning("%s (uncompressed; starting anyway, it is likely smaller)", line)
            return
        raise DiskSpaceError(f"{line}; free space or record into another --data-root")
