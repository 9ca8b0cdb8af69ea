"""`dataset check`: is every committed episode of a store what was recorded?

In order, cheapest first:

1. files (store_files): every array as long as meta/episode_ends, every chunk file of
   every committed row present; a live writer's episode in flight, or a killed writer's
   tail, is reported as such and judged no further.
2. the episodes agree: one frame rate (a training window must not span two), one
   calibration (a warning, unless the store records that mixing was allowed); `train`
   judges the same (train/store_checks.py).
3. numbers: each array decodes, matches its checksum from commit time, holds no NaN/inf
   (reported by episode, array and row; stores written before the writer flagged them
   are scanned all the same), tick times never go backwards.
4. camera frames: each decodes to a whole frame from a whole file (a JPEG cut short
   decodes without an error: chunk_files.cut_short), on every core (`workers`), with a
   `progress(done, total)` callback, since a lab store takes minutes.

Everything judged is committed: a check running beside a recording exits clean.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from typing import Any

import numpy as np

from shallowpi.data import chunk_files
from shallowpi.data.chunk_files import UNREADABLE
from shallowpi.data.features import FeatureKind
from shallowpi.data.nonfinite import nonfinite_ranges
from shallowpi.data.row_ranges import RowRanges, describe_indices, describe_ranges
from shallowpi.data.store import TICK_KEY, EpisodeInfo, EpisodeStore
from shallowpi.data.store_files import FileScan, Tail, array_names, scan_files
from shallowpi.data.store_rules import mixed_fps
from shallowpi.errors import StoreEditedError, StoreError

Progress = Callable[[int, int], None]  # (frames done, frames in total)
# Frames a worker decodes per task: large enough to amortise the hand-off, small enough
# for a smooth progress bar.
DECODE_BATCH = 64


def permission_denied(exc: BaseException) -> bool:
    """Whether `exc` is, or was raised from, a PermissionError (zarr may wrap a read's)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, PermissionError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@dataclass
class CheckReport:
    """What `check_store` found. Only `problems` mean damage (exit 1)."""

    episodes: int
    frames: int
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # suspicious but usable (mixed calibration)
    tail: Tail | None = None  # past the last committed episode: in flight or left by a kill
    notes: list[str] = field(default_factory=list)  # one line per tail or writer, not damage
    # episode -> array -> [start, stop) rows (within the episode) holding NaN or inf
    nonfinite: dict[int, dict[str, RowRanges]] = field(default_factory=dict)
    # Rows whose camera frames were decoded: all of `frames`, or each episode's first and
    # last without decode_images (--quick); None for a store without cameras.
    decoded_rows: int | None = None

    @property
    def ok(self) -> bool:
        """No problems (warnings, notes and non-finite rows do not count)."""
        return not self.problems


def check_store(
    store: EpisodeStore,
    decode_images: bool = True,
    workers: int | None = None,
    pool: str = "thread",
    progress: Progress | None = None,
) -> CheckReport:
    """Verify every committed episode of `store`.

    `decode_images`: every camera frame (else each episode's first and last);
    `workers`: decoders at once (default: every core); `pool`: "thread" or "process"
    (forkserver workers, which import the caller's `__main__` again: a script needs its
    `if __name__ == "__main__":` guard); `progress(done, total)` counts camera frames.
    Raises nothing for damage: it is all in the report, each line naming the array, episode
    and rows. Raises StoreEditedError when the store was edited during the check (a delete,
    a recorder's d or r): the rows read before and after the edit are of two stores, and
    their mismatch is no damage; StoreError (one line) when a process worker died.
    """
    report = CheckReport(len(store), store.num_frames)
    files = scan_files(store)
    report.problems += files.problems
    if files.tail.writer is not None or not files.tail.empty:
        report.tail = files.tail
        report.notes.append(files.tail.describe(store))
    infos = _episode_infos(store, report)
    _check_mixing(store, [i for i in infos if i is not None], report)
    for name in array_names(store):
        if name in files.rows and not _is_image(store, name):
            _check_numeric(store, name, files, infos, report)
    _check_frames(store, files, decode_images, workers or _cores(), pool, progress, report)
    # The frames are read from their files directly, past the reader's edit check: an edit
    # meanwhile shows as frames "missing" from rows that were renumbered. Asked once more.
    store.require_unchanged(StoreEditedError(
        f"{store.path.name} was edited while it was checked (a delete, a recorder's d or r): what was read is "
        "of two versions of it, so nothing is reported; run the check again"))
    return report


def repair_store(store_path: os.PathLike[str] | str) -> Tail:
    """Remove what a stopped writer left past the last committed episode, recording
    nothing; returns what was removed (empty if there was nothing).

    Raises StoreError if a writer is live (its episode is not a leftover) or if the store
    is damaged in a way trimming cannot mend (an array shorter than its episodes)."""
    with EpisodeStore.open(store_path) as store:
        tail = scan_files(store).tail
    if tail.writer is not None:
        raise StoreError(f"{store.path.name} is being recorded by {tail.writer}; its episode in flight "
                         "is no leftover: stop the recording, then repair")
    if not tail.empty:
        # Opening for writing is what removes a tail (the store's own recovery); its sweep
        # for unfinished chunk files runs there only after a writer died, so ask for it.
        with EpisodeStore.open(store_path, mode="a") as writable:
            if tail.partial_files:
                writable._recover(sweep=True)
    return tail


# --- the episodes agree -----------------------------------------------------------------


def _episode_infos(store: EpisodeStore, report: CheckReport) -> list[EpisodeInfo | None]:
    """Every committed episode's metadata, None (and a problem) for one whose file does not
    read: the check goes on with the others (it stopped at the first, exit 3, naming one)."""
    infos: list[EpisodeInfo | None] = []
    for index in range(len(store)):
        try:
            infos.append(store.episode(index))
        except StoreError as exc:
            infos.append(None)
            if permission_denied(exc):  # sound, only not ours: deleting it would lose it
                report.problems.append(f"episode {index}: its metadata file (episodes/{index}.json) is {UNREADABLE}, "
                                       "so its rows are not judged")
                continue
            report.problems.append(f"episode {index}: its metadata file (episodes/{index}.json) does not read, so "
                                   f"its rows are not judged; `platform dataset delete` it to keep the rest")
    return infos


def _check_mixing(store: EpisodeStore, episodes: list[EpisodeInfo], report: CheckReport) -> None:
    """The rules of store_rules, judged on the `episodes` already in the store (older
    stores, or ones written elsewhere, may break them)."""
    if len(mixed_fps(episodes)) > 1:
        rates = _groups_text(_grouped(episodes, lambda e: float(e.fps)), lambda fps: f"{fps:g} Hz")
        report.problems.append(
            f"episodes mix frame rates: {rates}; a window of rows would span different times: keep one rate "
            "a dataset (`platform dataset delete` the others in a copy, or record them into another dataset)")
    # An episode without a calibration id (a LeRobot import) is compared with none.
    by_calibration = {c: i for c, i in _grouped(episodes, lambda e: e.calibration_id).items() if c}
    if len(by_calibration) > 1 and not store.summary.allow_mixed_calibration:
        ids = _groups_text(by_calibration, str)
        report.warnings.append(
            f"episodes mix calibration ids: {ids}; the same joint value may mean different poses in them "
            "(re-record, or accept it with --allow-mixed-calibration on the next `record --resume`)")


def _grouped(episodes: list[EpisodeInfo], key: Callable[[EpisodeInfo], Any]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for episode in episodes:
        groups.setdefault(key(episode), []).append(episode.index)
    return groups


def _groups_text(groups: dict[Any, list[int]], name: Callable[[Any], str]) -> str:
    """'30 Hz (episodes 0-1), 15 Hz (episode 2)'."""
    return ", ".join(f"{name(value)} (episode{'s' if len(indices) > 1 else ''} {describe_indices(indices)})"
                     for value, indices in groups.items())


# --- numbers ----------------------------------------------------------------------------


def _is_image(store: EpisodeStore, name: str) -> bool:
    return name in store.features and store.features[name].kind is FeatureKind.IMAGE


def _check_numeric(store: EpisodeStore, name: str, files: FileScan, infos: list[EpisodeInfo | None],
                   report: CheckReport) -> None:
    """Decode `name` block by block, then judge each episode whose rows all decoded."""
    info = store.array_info(name)
    end, block = min(files.rows[name], store.num_frames), int(info["chunks"][0])
    values = np.zeros((end, *info["shape"][1:]), dtype=np.dtype(info["dtype"]))
    lost: RowRanges = list(files.missing.get(name, []))  # named by the files scan already
    for start in range(0, end, block):
        stop = min(start + block, end)
        if any(a <= start and stop <= b for a, b in lost):
            continue
        try:
            values[start:stop] = store.read(name, start, stop)
        except StoreEditedError:  # not damage: the check read two versions of the store
            raise
        except Exception as exc:  # any codec or zarr error: these rows are unreadable
            lost.append([start, stop])
            rows = f"data/{name}: rows {describe_ranges([[start, stop]])}"
            report.problems.append(f"{rows} are {UNREADABLE}" if permission_denied(exc)
                                   else f"{rows} do not decode ({type(exc).__name__})")
    for episode, (start, stop) in zip(infos, _episode_spans(store.episode_ends)):
        if episode is None or stop > end or any(a < stop and start < b for a, b in lost):
            continue  # already named as missing or undecodable
        rows, where = values[start:stop], f"episode {episode.index}"
        expected = episode.checksums.get(name)
        if expected is not None and hashlib.sha256(np.ascontiguousarray(rows).tobytes()).hexdigest() != expected:
            report.problems.append(f"{where}: {name} does not match its checksum from commit time")
        if ranges := nonfinite_ranges(rows):
            report.nonfinite.setdefault(episode.index, {})[name] = ranges
            report.problems.append(f"{where}: {name} holds NaN/inf at rows {describe_ranges(ranges)} "
                                   f"(of {stop - start})")
        if name == TICK_KEY and len(backwards := np.flatnonzero(np.diff(rows) < 0)):
            report.problems.append(f"{where}: tick times go backwards at rows "
                                   f"{describe_indices((backwards + 1).tolist(), unit='rows')}")


def _episode_spans(ends: np.ndarray) -> list[tuple[int, int]]:
    starts = np.concatenate(([0], ends[:-1])) if len(ends) else ends
    return [(int(a), int(b)) for a, b in zip(starts, ends)]


# --- camera frames ----------------------------------------------------------------------


def _check_frames(store: EpisodeStore, files: FileScan, decode_all: bool, workers: int, pool: str,
                  progress: Progress | None, report: CheckReport) -> None:
    spans = _episode_spans(store.episode_ends)
    if decode_all:
        rows = range(store.num_frames)
    else:
        rows = sorted({row for start, stop in spans for row in (start, stop - 1)})
    cameras = [k for k in store.features if _is_image(store, k) and k in files.rows]
    if cameras:
        report.decoded_rows = len(rows)
    tasks = []  # (camera, arguments of chunk_files.undecodable_frames): one frame a chunk
    for key in cameras:
        info = store.array_info(key)
        frame_nbytes = int(np.prod(info["chunks"])) * np.dtype(info["dtype"]).itemsize
        # Rows the files scan named (no row, or no chunk file) are not read again.
        missing = np.zeros(store.num_frames, bool)
        missing[min(files.rows[key], store.num_frames):] = True
        for a, b in files.missing.get(key, []):
            missing[a:b] = True
        present = [r for r in rows if not missing[r]]
        for i in range(0, len(present), DECODE_BATCH):
            tasks.append((key, (str(store.path / "data" / key), present[i : i + DECODE_BATCH],
                                len(info["shape"]) - 1, frame_nbytes, info["compressor"], info.get("filters"))))
    total, done = sum(len(args[1]) for _, args in tasks), 0
    if progress:
        progress(0, total)
    if not tasks:
        return
    with _executor(pool, min(workers, len(tasks))) as executor:
        try:
            futures = [(key, len(args[1]), executor.submit(chunk_files.undecodable_frames, *args))
                       for key, args in tasks]
            for key, count, future in futures:
                for row, what in future.result():
                    episode = int(np.searchsorted(store.episode_ends, row, side="right"))
                    report.problems.append(f"episode {episode}: frame {row - spans[episode][0]} of {key} {what}")
                done += count
                if progress:
                    progress(done, total)
        except BaseException as exc:
            # Ctrl-C (or an error): the with-block's exit waits for every batch still queued
            # (a lab store's check ran on for 30 s after Ctrl-C before saying "interrupted");
            # drop them, so it waits only for the `workers` batches already decoding.
            executor.shutdown(wait=False, cancel_futures=True)
            if isinstance(exc, BrokenProcessPool):  # 84 lines of two tracebacks, for one cause
                raise StoreError(f"a decoding process of the check of {store.path.name} died (killed, out of "
                                 "memory, or a script without `if __name__ == \"__main__\":` ran again in it); "
                                 "check again with pool=\"thread\"") from exc
            raise


def _cores() -> int:
    """Cores this process may run on (a container or taskset may allow fewer than exist)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _executor(pool: str, workers: int) -> Executor:
    if pool == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shallowpi-check")
    if pool == "process":
        # Not fork: zarr's event-loop thread (and any lock a thread holds) would be
        # copied into the child mid-flight. Workers only import the chunk reader.
        return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("forkserver"))
    raise ValueError(f"pool must be 'thread' or 'process', not {pool!r}")
