"""Where a store's numeric arrays hold NaN or infinity, and which training windows touch it.

Pure array work over concatenated rows and `meta/episode_ends` (the replay-buffer layout),
so a reader (train, check) scans arrays it already holds: one pass, no store access.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shallowpi.data.row_ranges import RowRanges, ranges_of
from shallowpi.data.windows import ChunkWindows


@dataclass(frozen=True)
class NonFinite:
    """Rows of one episode where a feature holds a NaN or an infinity."""

    feature: str
    episode: int
    rows: tuple[int, ...]  # frame numbers within the episode

    def describe(self, limit: int = 3) -> str:
        """'action episode 4 rows 10, 11, 12 (+5 more)': at most `limit` rows named."""
        shown = ", ".join(str(r) for r in self.rows[:limit])
        more = f" (+{len(self.rows) - limit} more)" if len(self.rows) > limit else ""
        return f"{self.feature} episode {self.episode} row{'s' if len(self.rows) > 1 else ''} {shown}{more}"


def bad_rows(values: np.ndarray) -> np.ndarray:
    """[N] bool: rows of `values` [N, ...] holding any non-finite number (integers: none)."""
    if not np.issubdtype(values.dtype, np.floating):
        return np.zeros(len(values), dtype=bool)
    return ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)


def nonfinite_ranges(values: np.ndarray) -> RowRanges:
    """The [start, stop) runs of rows of `values` [N, ...] holding a non-finite number
    (what the writer records per episode and array); [] when all are finite."""
    return ranges_of(bad_rows(values)) if len(values) else []


def find_nonfinite(
    feature: str, values: np.ndarray, episode_ends: np.ndarray, episodes: Sequence[int] | None = None
) -> list[NonFinite]:
    """Non-finite rows of `values` [N, ...] (N = episode_ends[-1]) by episode, in episode
    order; only the chosen `episodes` (default: all)."""
    ends = np.asarray(episode_ends, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1]])
    bad = bad_rows(values)
    chosen = range(len(ends)) if episodes is None else episodes
    found = []
    for e in chosen:
        rows = np.flatnonzero(bad[starts[e] : ends[e]])
        if len(rows):
            found.append(NonFinite(feature, int(e), tuple(int(r) for r in rows)))
    return found


def windows_touching(
    windows: ChunkWindows, episode_ends: np.ndarray, state_bad: np.ndarray, action_bad: np.ndarray
) -> np.ndarray:
    """[len(windows)] bool: windows whose observation row has a bad state, or whose action
    chunk (padding included: it repeats the episode's last action) reads a bad action row.

    state_bad, action_bad: [N] bool over the store's rows (`bad_rows`).
    """
    rows = windows.rows()  # the observation row of each window, in window order
    if not len(rows):
        return np.zeros(0, dtype=bool)
    ends = np.asarray(episode_ends, dtype=np.int64)
    last = ends[np.searchsorted(ends, rows, side="right")] - 1  # each window's episode's last row
    lo = np.minimum(rows + windows.action_offset, last)
    hi = np.minimum(rows + windows.action_offset + windows.chunk_len - 1, last)
    before = np.concatenate([[0], np.cumsum(action_bad)])  # bad action rows before row i
    return state_bad[rows] | (before[hi + 1] - before[lo] > 0)
