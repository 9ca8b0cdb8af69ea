"""Which rows make one training sample: the observation at t and the actions t..t+H-1.

(In a format-1 store row t's action was sent *before* its observation: `action_offset=1`
takes t+1..t+H, the actions that followed it.)

Pure index arithmetic over `meta/episode_ends`, kept apart from storage and from torch
so it can be tested exhaustively and reused by any loader.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shallowpi.errors import StoreError


@dataclass(frozen=True)
class Window:
    """One training sample's rows: the observation at `row`, actions at `action_rows` [H]."""

    episode: int  # episode index in the store
    row: int  # the observation's row in data/*
    frame: int  # the observation's frame number within its episode
    action_rows: np.ndarray  # [H] rows of the action chunk, the last row repeated past the end
    is_pad: np.ndarray  # [H] True where the chunk ran past the episode's end


class ChunkWindows:
    """Every frame of the chosen episodes starts one window of `chunk_len` actions.

    `episode_ends` is meta/episode_ends ([E] cumulative row ends). A chunk that runs past
    its episode repeats the last row and marks the rest in `is_pad` (as lerobot's
    `action_is_pad`), so every frame is a sample. Raises StoreError for
    `chunk_len < 1` or an episode index out of range; `windows[i]` raises IndexError.
    """

    def __init__(
        self,
        episode_ends: np.ndarray,
        chunk_len: int,
        episodes: Sequence[int] | None = None,
        action_offset: int = 0,
    ) -> None:
        if chunk_len < 1:
            raise StoreError(f"chunk length must be >= 1, got {chunk_len}")
        ends = np.asarray(episode_ends, dtype=np.int64)
        starts = np.concatenate([[0], ends[:-1]])
        chosen = np.arange(len(ends)) if episodes is None else np.asarray(list(episodes), dtype=np.int64)
        if len(chosen) and (chosen.min() < 0 or chosen.max() >= len(ends)):
            raise StoreError(f"episode indices {chosen.tolist()} out of range 0..{len(ends) - 1}")
        self.chunk_len = chunk_len
        self.action_offset = action_offset
        self.episodes = chosen
        self._starts = starts[chosen]
        self._stops = ends[chosen]
        self._offsets = np.concatenate([[0], np.cumsum(self._stops - self._starts)])
        # One window (`windows[i]`, a loader's every item) in plain ints: numpy's per-call
        # overhead on one-element arrays cost 5-7x this (chunk_rows keeps batches in numpy).
        self._len = int(self._offsets[-1])
        self._offset_list: list[int] = self._offsets.tolist()
        self._start_list: list[int] = self._starts.tolist()
        self._stop_list: list[int] = self._stops.tolist()
        self._episode_list: list[int] = chosen.tolist()
        self._steps = np.arange(action_offset, action_offset + chunk_len, dtype=np.int64)  # [H]

    def __len__(self) -> int:
        return self._len

    @property
    def first_rows(self) -> np.ndarray:
        """int64 [E]: the store row each chosen episode starts at, in `episodes` order."""
        return self._starts

    def rows(self) -> np.ndarray:
        """Every data row of the chosen episodes, in window order."""
        return np.concatenate([np.arange(a, b) for a, b in zip(self._starts, self._stops)] or [np.zeros(0, np.int64)])

    def action_rows(self) -> np.ndarray:
        """The rows of the chosen episodes whose action some window trains on: every row, but
        with `action_offset` 1 (a format-1 store pairs each observation with the next row's
        action) not an episode's first, whose action no chunk reads."""
        spans = zip(self._starts + self.action_offset, self._stops)
        return np.concatenate([np.arange(a, b) for a, b in spans] or [np.zeros(0, np.int64)])

    def chunk_rows(self, index: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Windows `index` (default: all) at once, in that order: observation rows [W],
        action rows [W, H] and is_pad [W, H], as `windows[i]` gives them one at a time."""
        index = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        k = np.searchsorted(self._offsets, index, side="right") - 1
        rows = self._starts[k] + (index - self._offsets[k])
        last = self._stops[k] - 1
        wanted = rows[:, None] + self.action_offset + np.arange(self.chunk_len)[None]
        return rows, np.minimum(wanted, last[:, None]), wanted > last[:, None]

    def __getitem__(self, index: int) -> Window:
        """Window `index` (0..len-1; IndexError otherwise), the same rows as `chunk_rows`."""
        if not 0 <= index < self._len:
            raise IndexError(index)
        index = int(index)
        k = bisect_right(self._offset_list, index) - 1  # the chosen episode holding it
        frame = index - self._offset_list[k]
        row = self._start_list[k] + frame
        last = self._stop_list[k] - 1
        wanted = row + self._steps  # [H]
        return Window(self._episode_list[k], row, frame, np.minimum(wanted, last), wanted > last)
