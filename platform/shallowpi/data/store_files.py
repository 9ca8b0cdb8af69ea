"""The cheap half of a store check: every array long enough, every chunk file present.

zarr reads a missing chunk file as zeros and an array shorter than `meta/episode_ends` as
fewer rows, so a damaged store would otherwise train on blank frames and zero actions.
This looks only at file names and `.zarray` shapes (one directory listing an array, no
decoding; BENCHMARKS.md has its cost), so `train`, `export` and `eval` run it on every
store they open (`require_intact`); `dataset check` runs it first, then decodes all.

It also tells what lies past the last committed episode (`Tail`): frames of an episode
in flight while a writer holds the store's lock, or the leftovers of a writer that was
killed, which the next writer (or `platform dataset repair`) removes. Neither harms a
committed episode, so neither is damage.
"""

from __future__ import annotations

import itertools
import os
import shlex
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.durable_io import writer_holding
from shallowpi.data.row_ranges import RowRanges, describe_indices, describe_ranges
from shallowpi.data.store import TICK_KEY, TIMESTAMP_SUFFIX, EpisodeStore
from shallowpi.durable_files import PARTIAL_SUFFIX
from shallowpi.errors import StoreError


def array_names(store: EpisodeStore) -> list[str]:
    """Every array under data/: the tick times, each feature and its capture times."""
    names = [TICK_KEY]
    for key in store.features:
        names += [key, key + TIMESTAMP_SUFFIX]
    return names


@dataclass
class Tail:
    """What lies past the last committed episode."""

    rows: dict[str, int] = field(default_factory=dict)  # array -> rows past the committed end
    partial_files: int = 0  # chunk files a writer had not finished
    writer: str | None = None  # "pid 1234" while a writer holds the lock, else None

    @property
    def frames(self) -> int:
        """Frames of the uncommitted episode: the most rows any array has past the end."""
        return max(self.rows.values(), default=0)

    @property
    def empty(self) -> bool:
        """True when nothing lies past the last committed episode."""
        return not self.rows and not self.partial_files

    def describe(self, store: EpisodeStore) -> str:
        """One line: in flight (a writer is live) or left behind (repairable)."""
        committed = f"{len(store)} committed episodes"
        if self.writer is not None:
            flight = f", {self.frames} frames of the next in flight" if self.frames else ""
            return f"being recorded by {self.writer}: checked the {committed}{flight}"
        repair = f"`platform dataset repair {shlex.quote(str(store.path))}`"
        if self.frames:
            return (f"{self.frames} uncommitted frames past the last committed episode, left by a writer that "
                    f"stopped before committing (no committed episode is affected); the next recording removes "
                    f"them, or {repair} now")
        # No recording looks for these after a writer that closed cleanly: only a repair does.
        return (f"{self.partial_files} unfinished chunk files past the last committed episode, left by a failed "
                f"write (no committed episode is affected); {repair} removes them")


@dataclass
class FileScan:
    """What a store's file names and array shapes say: damage, and the tail past it."""

    problems: list[str] = field(default_factory=list)
    tail: Tail = field(default_factory=Tail)
    rows: dict[str, int] = field(default_factory=dict)  # array -> rows on disk (readable arrays)
    missing: dict[str, RowRanges] = field(default_factory=dict)  # array -> committed rows without a chunk file


def scan_files(store: EpisodeStore) -> FileScan:
    """Lengths and chunk files of every array against the committed episodes."""
    end = store.num_frames
    ends = store.episode_ends
    # The store's own writer (this process holds its lock) is not probed: on NFS, flock is
    # emulated with a process's byte-range locks, which a second descriptor's lock and
    # unlock would release, letting another host's recorder write during a delete.
    own = store.writable and store._lock_fd is not None
    scan = FileScan(tail=Tail(writer=None if own else writer_holding(store.path)))
    for name in array_names(store):
        folder = store.path / "data" / name
        try:
            info = store.array_info(name)
            rows = int(info["shape"][0])
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            scan.problems.append(f"data/{name} has no readable .zarray ({type(exc).__name__}); the array is lost")
            continue
        scan.rows[name] = rows
        if rows < end:
            scan.problems.append(
                f"data/{name} has {rows} rows but meta/episode_ends commits {end}: rows "
                f"{describe_ranges([[rows, end]])} ({_episodes_of(ends, rows, end)}) are missing")
        elif rows > end:
            scan.tail.rows[name] = rows - end
        names, separator = _chunk_files(folder, info)
        scan.tail.partial_files += sum(n.endswith(PARTIAL_SUFFIX) for n in names)
        chunks = sorted({c for c, key in _chunk_keys(info, min(rows, end), separator) if key not in names})
        if chunks:
            missing = scan.missing[name] = _row_ranges(chunks, int(info["chunks"][0]), min(rows, end))
            scan.problems.append(_missing_chunks(name, len(chunks), missing, ends))
    return scan


def file_problems(store: EpisodeStore) -> list[str]:
    """Damage visible without decoding (short arrays, missing chunk files); [] if none."""
    return scan_files(store).problems


def require_intact(store: EpisodeStore, dropping: Iterable[int] = ()) -> None:
    """Raise a one-line StoreError naming the array and rows if any committed row is
    missing (an array shorter than meta/episode_ends, or a chunk file gone), outside the
    episodes `dropping` (a delete need not read the rows it removes: deleting the damaged
    episodes is how the rest of a store is saved). Where the damage lies in whole
    episodes, the message names the delete that keeps the others.

    The cheap part of `dataset check` (no decoding): what `train`, `export` and `eval`
    run before reading a store as data, so zarr's zero fill never passes for recorded
    values.
    """
    key = None if dropping else _intact_key(store)
    if key is not None and key in _INTACT:
        return
    scan = scan_files(store)
    if not scan.problems:
        if key is not None:
            _INTACT.add(key)
        return
    damaged = damaged_episodes(store, scan)
    if damaged is not None and damaged <= set(dropping):
        return
    more = f" (and {len(scan.problems) - 1} more)" if len(scan.problems) > 1 else ""
    where = shlex.quote(str(store.path))
    salvage = "" if damaged is None else (
        f"; `platform dataset delete {where} --episode {' '.join(map(str, sorted(damaged)))}` keeps the rest")
    raise StoreError(f"{store.path.name} is damaged: {scan.problems[0]}{more}; "
                     f"`platform dataset check {where}` lists it all{salvage}")


# Stores `require_intact` found whole in this process: a run's setup asked it of one store
# four or five times (the command, each dataset, the NaN screen), each a listing of every
# camera's chunk files (minutes at tens of millions of frames). Keyed by what a change to
# the committed files changes: the store's identity and committed rows, and each array
# folder's modification time (a chunk file removed or added).
_INTACT: set[tuple[Any, ...]] = set()


def _intact_key(store: EpisodeStore) -> tuple[Any, ...] | None:
    """What `require_intact`'s memo keys a reader's store by; None for a writer's (its
    files are changing), a folder that cannot be looked at, or an array whose chunk files
    lie in nested folders ("/" separated, a store made elsewhere: a file removed there
    changes only its own folder's time)."""
    if store.writable:
        return None
    try:
        if any((store.array_info(name).get("dimension_separator") or ".") != "." for name in array_names(store)):
            return None
        stamps = tuple(os.stat(store.path / "data" / name).st_mtime_ns for name in array_names(store))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return str(store.path.resolve()), store.identity, store.num_frames, stamps


def damaged_episodes(store: EpisodeStore, scan: FileScan) -> set[int] | None:
    """The committed episodes with a row `scan` found missing (a chunk file gone, an array
    cut short); None when an array is lost whole (no readable .zarray: every episode)."""
    if any(name not in scan.rows for name in array_names(store)):
        return None
    ends, end = store.episode_ends, store.num_frames
    damaged: set[int] = set()
    for ranges in scan.missing.values():
        for start, stop in ranges:
            damaged.update(_episode_indices(ends, start, stop))
    for rows in scan.rows.values():
        if rows < end:
            damaged.update(_episode_indices(ends, rows, end))
    return damaged


def _chunk_files(folder: Path, info: dict) -> tuple[set[str], str]:
    """The names in an array's folder (relative chunk keys for '/'-separated arrays)."""
    separator = info.get("dimension_separator") or "."
    try:
        if separator == ".":
            return {entry.name for entry in os.scandir(folder)}, separator
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}, separator
    except FileNotFoundError:
        return set(), separator


def _chunk_keys(info: dict, rows: int, separator: str) -> Iterator[tuple[int, str]]:
    """(chunk index on axis 0, file key) of every chunk that holds one of the first `rows` rows."""
    shape, chunks = info["shape"], info["chunks"]
    along_time = range(-(-rows // chunks[0]))
    others = list(itertools.product(*(range(-(-s // c)) for s, c in zip(shape[1:], chunks[1:]))))
    if others == [(0,) * (len(shape) - 1)]:  # chunked along time only: the store's own layout
        tail = f"{separator}0" * (len(shape) - 1)
        return ((i, f"{i}{tail}") for i in along_time)
    return ((i, separator.join(map(str, (i, *rest)))) for i in along_time for rest in others)


def _row_ranges(chunks: list[int], chunk_rows: int, rows: int) -> RowRanges:
    """The rows that sorted chunk indices hold, as merged [start, stop) ranges."""
    ranges: RowRanges = []
    for c in chunks:
        start, stop = c * chunk_rows, min((c + 1) * chunk_rows, rows)
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = stop
        else:
            ranges.append([start, stop])
    return ranges


def _missing_chunks(name: str, count: int, ranges: RowRanges, ends: np.ndarray) -> str:
    episodes = sorted({e for start, stop in ranges for e in _episode_indices(ends, start, stop)})
    return (f"data/{name}: {count} chunk file{'s' if count > 1 else ''} missing, rows {describe_ranges(ranges)} "
            f"({_plural('episode', episodes)} {describe_indices(episodes)}) would read as zeros")


def _episode_indices(ends: np.ndarray, start: int, stop: int) -> range:
    """The episodes holding rows start:stop, given cumulative ends."""
    return range(int(np.searchsorted(ends, start, side="right")), int(np.searchsorted(ends, stop - 1, side="right")) + 1)


def _episodes_of(ends: np.ndarray, start: int, stop: int) -> str:
    episodes = list(_episode_indices(ends, start, stop))
    return f"{_plural('episode', episodes)} {describe_indices(episodes)}"


def _plural(noun: str, items: Sized) -> str:
    return noun + "s" if len(items) > 1 else noun
