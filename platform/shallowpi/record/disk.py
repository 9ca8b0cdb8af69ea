"""Room on the disk for the episodes to come, checked at start and before each episode.

An episode takes (bytes per frame on disk) x (frames per episode). Camera frames dominate
and their compressed size depends on the scene, so bytes per frame are measured from
episodes on disk: the store's last one when recording resumes, then each episode this
session commits (the largest of the last few, so a busier scene is not underestimated).
Until a first measurement the raw (uncompressed) size stands in; it is an upper bound,
so it warns but never refuses. Episodes still queued for the writer have not taken their
room yet and count as taken.
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


class DiskBudget:
    """Free space at `path` against the cost of an episode of `episode_rows` frames.

    `learn(store, index)` measures a committed episode (call it from the writer thread,
    which owns the store); `check_room` runs on the control loop and only reads numbers.
    """

    def __init__(self, path: os.PathLike[str] | str, features: Mapping[str, Feature], episode_rows: int,
                 reserve_bytes: int = 32 * 10**6, remember: int = 5) -> None:
        self.path = Path(path)
        self.episode_rows = episode_rows
        self.reserve_bytes = reserve_bytes
        self.raw_frame_bytes = raw_frame_bytes(features)
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

    def free_bytes(self) -> int:
        """Free bytes on the file system of `path`, or of its nearest existing parent (a
        store not created yet). OSError from `shutil.disk_usage` passes through."""
        path = self.path
        while not path.exists() and path != path.parent:  # a new store: the folder it will be made in
            path = path.parent
        return shutil.disk_usage(path).free

    def require_reserve(self) -> None:
        """Raise `DiskSpaceError` if the free space is already below the reserve: then no
        episode may start, whatever it turns out to take (checked before a store is made)."""
        free = self.free_bytes()
        if free < self.reserve_bytes:
            raise DiskSpaceError(f"{_mb(free)} free at {self.path.parent}, below the {_mb(self.reserve_bytes)} "
                                 "that stay free (record.disk_reserve_mb): no episode fits; free space or record "
                                 "into another --data-root")

    def episodes_that_fit(self, queued: int = 0) -> int:
        """Full-length episodes the free space holds beyond the reserve, after `queued`
        episodes the writer has yet to write."""
        room = self.free_bytes() - self.reserve_bytes - queued * self.episode_bytes()
        return max(0, int(room // max(self.episode_bytes(), 1.0)))

    def learn(self, store: Any, index: int) -> None:
        """Measure committed episode `index` of `store` (from the writer thread)."""
        info = store.episode(index)
        if info.length <= 0:
            return
        per_frame = episode_disk_bytes(store, index) / info.length
        with self._lock:
            self._measured.append(per_frame)

    def describe(self, queued: int = 0) -> str:
        """One line: free space, an episode's size and how many episodes fit."""
        how = "measured" if self.measured else "uncompressed, an upper bound until one is recorded"
        fit = self.episodes_that_fit(queued)
        return (f"disk: {_mb(self.free_bytes())} free at {self.path}; an episode of {self.episode_rows} frames "
                f"takes ~{_mb(self.episode_bytes())} ({how}): {'about' if self.measured else 'at least'} "
                f"{fit} fit")

    def check_room(self, episode: int, queued: int = 0) -> None:
        """Raise `DiskSpaceError` if episode `episode` (its index in the store) cannot fit.
        Unmeasured, the estimate is an upper bound: it warns and lets the episode start,
        unless the free space is below the reserve already."""
        if self.episodes_that_fit(queued) >= 1:
            return
        line = (f"no room for episode {episode}: {_mb(self.free_bytes())} free at {self.path}, "
                f"{queued} episode(s) still being written, an episode takes ~{_mb(self.episode_bytes())} "
                f"and {_mb(self.reserve_bytes)} stay free (record.disk_reserve_mb)")
        if not self.measured and self.free_bytes() >= self.reserve_bytes:
            log.warning("%s (uncompressed; starting anyway, it is likely smaller)", line)
            return
        raise DiskSpaceError(f"{line}; free space or record into another --data-root")
