"""Row (or episode) numbers as [start, stop) ranges, and as people read them: "3, 7-9".

Reports name rows by range so that a camera that stalled for a minute is one [start, stop)
pair in a message or in an episode's metadata, not 1,800 numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RowRanges = list[list[int]]  # [[start, stop), ...], ascending, rows within an episode


def ranges_of(mask: np.ndarray) -> RowRanges:
    """The [start, stop) runs of True in a [N] bool mask."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(mask, bool).view(np.int8), [0]))))
    return [[int(start), int(stop)] for start, stop in zip(edges[::2], edges[1::2])]


def count_rows(ranges: Sequence[Sequence[int]]) -> int:
    """Rows covered by [start, stop) ranges (assumed disjoint, as `ranges_of` makes them)."""
    return sum(stop - start for start, stop in ranges)


def describe_ranges(ranges: Sequence[Sequence[int]], limit: int = 6, unit: str = "rows") -> str:
    """'3, 7-9, 20' for [[3, 4], [7, 10], [20, 21]] (inclusive, as people count rows)."""
    parts = [str(start) if stop - start == 1 else f"{start}-{stop - 1}" for start, stop in ranges[:limit]]
    if len(ranges) > limit:
        parts.append(f"... ({count_rows(ranges)} {unit} in all)")
    return ", ".join(parts)


def describe_indices(indices: Sequence[int], limit: int = 6, unit: str = "episodes") -> str:
    """'0-2, 5' for [0, 1, 2, 5]: episode or chunk numbers, sorted or not."""
    ranges: RowRanges = []
    for i in sorted(set(indices)):
        if ranges and ranges[-1][1] == i:
            ranges[-1][1] = i + 1
        else:
            ranges.append([i, i + 1])
    return describe_ranges(ranges, limit, unit)
