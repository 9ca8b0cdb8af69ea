"""`BackgroundWriter`: the store's writer on its own thread, behind a bounded queue.

The control loop hands frames over and goes on; encoding and disk writes happen here. If
the disk falls behind, the queue fills and `add_frame` blocks until there is room: that
is back-pressure, measured (`backpressure_s`) and shown on the dashboard, never a silent
drop. Episodes are committed in order; the next episode may start while the previous
one is still being written.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shallowpi.data.store import EpisodeInfo, EpisodeStore

log = logging.getLogger(__name__)


@dataclass
class _Begin:
    episode: int
    task: str
    kwargs: dict[str, Any]


@dataclass
class _Frame:
    values: dict[str, np.ndarray]
    timestamp: float
    capture_times: dict[str, float]
    nbytes: int


@dataclass
class _Commit:
    success: bool | None
    dropped_frames: int
    extra: dict[str, Any]


@dataclass
class _Discard:
    pass


@dataclass
class _Mark:
    store_index: int
    success: bool | None


@dataclass
class _Delete:
    store_index: int


_STOP = object()


@dataclass
class WriterStats:
    queue_depth: int = 0
    queue_capacity: int = 0
    high_water: int = 0
    bytes_written: int = 0
    backpressure_s: float = 0.0  # time add_frame spent waiting for room, this episode
    pending_episodes: int = 0
    committed: list[EpisodeInfo] = field(default_factory=list)
    error: str = ""


class BackgroundWriter:
    """Owns `store` from its own thread. Call `begin`, `add_frame`..., then `commit`/`discard`."""

    def __init__(
        self,
        store: EpisodeStore,
        capacity_frames: int = 256,
        on_commit: Callable[[EpisodeInfo], None] | None = None,
    ) -> None:
        self.store = store
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity_frames)
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._stats = WriterStats(queue_capacity=capacity_frames)
        self._started = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    # --- the control loop's side -------------------------------------------------------

    def begin(self, episode: int, task: str, **kwargs: Any) -> None:
        with self._lock:
            self._stats.pending_episodes += 1
            self._stats.backpressure_s = 0.0
        self._put(_Begin(episode, task, kwargs))

    def add_frame(self, values: Mapping[str, np.ndarray], timestamp: float,
                  capture_times: Mapping[str, float] | None = None) -> float:
        """Queue a frame; returns how long it waited for room (0 unless the disk is behind)."""
        nbytes = sum(np.asarray(v).nbytes for v in values.values())
        return self._put(_Frame(dict(values), timestamp, dict(capture_times or {}), nbytes))

    def commit(self, success: bool | None = None, dropped_frames: int = 0,
               extra: Mapping[str, Any] | None = None) -> None:
        self._put(_Commit(success, dropped_frames, dict(extra or {})))

    def discard(self) -> None:
        self._put(_Discard())

    def mark(self, store_index: int, success: bool | None) -> None:
        """Set an already committed episode's success flag (after the queue drains to it)."""
        self._put(_Mark(store_index, success))

    def delete(self, store_index: int) -> None:
        """Delete a committed episode from the store (after the queue drains to it).

        Compacts the store (`EpisodeStore.delete_episodes`: a copy of the episodes kept) on
        the writer thread; the loop goes on, later frames wait in the queue meanwhile."""
        self._put(_Delete(store_index))

    def stats(self) -> WriterStats:
        with self._lock:
            stats = WriterStats(**{**self._stats.__dict__, "committed": list(self._stats.committed)})
        stats.queue_depth = self._queue.qsize()
        return stats

    def mb_per_s(self) -> float:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return self.stats().bytes_written / elapsed / 1e6

    def close(self, timeout: float | None = None) -> None:
        """Finish everything queued (an open episode is discarded), then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _put(self, item: Any) -> float:
        if not self._thread.is_alive():
            raise RuntimeError(f"the episode writer stopped: {self._stats.error or 'closed'}")
        try:
            self._queue.put_nowait(item)
            waited = 0.0
        except queue.Full:
            start = time.monotonic()
            while True:
                try:
                    self._queue.put(item, timeout=0.5)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        raise RuntimeError(f"the episode writer stopped: {self._stats.error}") from None
            waited = time.monotonic() - start
        with self._lock:
            self._stats.backpressure_s += waited
            self._stats.high_water = max(self._stats.high_water, self._queue.qsize())
        return waited

    # --- the writer thread -------------------------------------------------------------

    def _run(self) -> None:
        writer = None
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                if isinstance(item, _Begin):
                    writer = self.store.begin_episode(item.task, **item.kwargs)
                elif isinstance(item, _Frame) and writer is not None:
                    writer.add_frame(item.values, item.timestamp, item.capture_times)
                    with self._lock:
                        self._stats.bytes_written += item.nbytes
                elif isinstance(item, _Commit) and writer is not None:
                    info = writer.commit(item.success, item.dropped_frames, item.extra) if len(writer) else None
                    if info is None:
                        writer.discard()
                    writer = None
                    self._episode_done(info)
                elif isinstance(item, _Discard) and writer is not None:
                    writer.discard()
                    writer = None
                    self._episode_done(None)
                elif isinstance(item, _Mark):
                    self.store.set_success(item.store_index, item.success)
                elif isinstance(item, _Delete):
                    self.store.delete_episodes([item.store_index])
                    with self._lock:
                        self._stats.committed = [e for e in self._stats.committed if e.index != item.store_index]
        except Exception as exc:  # the loop sees it through `alive` and `stats().error`
            log.exception("episode writer failed")
            with self._lock:
                self._stats.error = f"{type(exc).__name__}: {exc}"
        finally:
            if writer is not None and writer.is_open:
                writer.discard()

    def _episode_done(self, info: EpisodeInfo | None) -> None:
        with self._lock:
            self._stats.pending_episodes -= 1
            if info is not None:
                self._stats.committed.append(info)
        if info is not None and self._on_commit is not None:
            self._on_commit(info)
