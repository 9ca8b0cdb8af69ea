"""`BackgroundWriter`: the store's writer on its own thread, behind a bounded queue.

The control loop hands frames over and goes on; encoding and disk writes happen here. If
the disk falls behind, the queue fills and `add_frame` blocks until there is room: that
is back-pressure, measured (`backpressure_s`) and shown on the dashboard, never a silent
drop. Episodes are committed in order; the next episode may start while the previous
one is still being written.

A failure in the writer thread (disk full, an I/O error, a permission error) stops the
writer and becomes `failure`, a `WriterError` with one line that names the store, what
the operating system said and what to do; the control loop turns it into a fault like a
servo's. Episodes committed before it are kept; the one being written, and any queued
behind it, are dropped, and the session marks each of those takes lost and counts them.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.data.store import EpisodeInfo, EpisodeStore
from shallowpi.errors import PlatformError, written_path
from shallowpi.record.memory import release_free_memory

log = logging.getLogger(__name__)
COMMITTED_KEPT = 256  # committed episodes the writer remembers (the newest)
# `mb_per_s` is the rate over this many seconds: what the disk takes now. (An average since
# the writer started, resets included, showed an hour-old rate after the disk slowed down.)
RATE_WINDOW_S = 5.0
# While `close` waits for the queue to drain, its `on_wait` runs this often [s]: well inside
# the 2 s after which a dashboard or `platform monitor` says a silent recorder is STALE.
CLOSE_WAIT_SLICE_S = 0.5


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


class WriterError(PlatformError):
    """The episode writer stopped: the disk is full, failing or not writable."""


class WaitAbandoned(Exception):
    """A wait for room was given up (its `give_up` said so): the item (a frame, a begin, a
    commit, ...) is not queued. Not a fault of the writer: the caller asked to stop waiting
    (an e-stop)."""


# errno -> (what happened, what to do), for the failures a disk gives a recorder.
_OS_FAILURES: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("the disk is full", "free space or record into another --data-root"),
    errno.EDQUOT: ("the disk quota is used up", "free space or record into another --data-root"),
    errno.EIO: ("an I/O error", "check the drive and its cable (`dmesg`), then record into another --data-root"),
    errno.EACCES: ("permission denied", "make the dataset writable by this user, or record into another --data-root"),
    errno.EPERM: ("operation not permitted",
                  "make the dataset writable by this user, or record into another --data-root"),
    errno.EROFS: ("the file system is read-only", "remount it read-write, or record into another --data-root"),
}


def _os_error(exc: BaseException) -> OSError | None:
    """The `OSError` behind `exc` (itself, or anywhere in its chain: zarr may wrap it)."""
    seen: BaseException | None = exc
    while seen is not None and not isinstance(seen, OSError):
        seen = seen.__cause__ or seen.__context__
    return seen if isinstance(seen, OSError) and seen.errno is not None else None


def describe_failure(exc: BaseException, store_path: os.PathLike[str] | str) -> WriterError:
    """One line for a failure in the writer thread: the store, the OS error and its file,
    and the way out."""
    name = os.fspath(store_path)
    seen = _os_error(exc)
    if seen is not None:
        what, fix = _OS_FAILURES.get(seen.errno, (os.strerror(seen.errno), "check the disk"))
        code = errno.errorcode.get(seen.errno, str(seen.errno))
        failed_at = written_path(seen)
        where = f" at {os.fsdecode(failed_at)}" if failed_at else ""
        return WriterError(f"writing {name} failed: {what} ({code}{where}); {fix}")
    if isinstance(exc, PlatformError):
        return WriterError(f"writing {name} failed: {exc}")
    return WriterError(f"writing {name} failed: {type(exc).__name__}: {exc}")


@dataclass
class WriterStats:
    """The writer's counters, copied by `BackgroundWriter.stats()`; queue sizes are in frames."""

    queue_depth: int = 0
    queue_capacity: int = 0
    high_water: int = 0
    bytes_written: int = 0
    backpressure_s: float = 0.0  # time add_frame spent waiting for room, this episode
    pending_episodes: int = 0
    committed_count: int = 0  # episodes committed so far (`committed()` lists them)
    error: str = ""  # the failure's one line, once the writer stopped on one


class BackgroundWriter:
    """Owns `store` from its own thread. Call `begin`, `add_frame`..., then `commit`/`discard`.

    After each episode it hands the allocator's free pages back to the OS
    (`release_memory`, record/memory.py), so a long session's resident size stays flat.
    """

    def __init__(
        self,
        store: EpisodeStore,
        capacity_frames: int = 256,
        on_commit: Callable[[EpisodeInfo], None] | None = None,
        release_memory: bool = True,
    ) -> None:
        self.store = store
        self._release_memory = release_memory
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=capacity_frames)
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._stats = WriterStats(queue_capacity=capacity_frames)
        # The newest commits only: a recorder runs for hours, and the store holds them all.
        self._committed: deque[EpisodeInfo] = deque(maxlen=COMMITTED_KEPT)
        self._failure: WriterError | None = None
        self._started = time.monotonic()
        # (time written, bytes) of each frame written in the last RATE_WINDOW_S, and their sum
        self._recent: deque[tuple[float, int]] = deque()
        self._recent_bytes = 0
        self._thread = threading.Thread(target=self._run, name="episode-writer", daemon=True)
        self._thread.start()

    # --- the control loop's side -------------------------------------------------------

    def begin(self, episode: int, task: str, give_up: Callable[[], bool] | None = None, **kwargs: Any) -> None:
        """Queue the start of episode `episode` (its store index) with its `task`; `kwargs`
        (robot, calibration_id, fps, start_time) go to `EpisodeStore.begin_episode`. Raises
        the writer's `failure` (a WriterError) once it has stopped. `give_up`, here and in
        every call below, as for `add_frame`: each may wait for room while the disk is behind."""
        self._put(_Begin(episode, task, kwargs), give_up=give_up)
        with self._lock:
            self._stats.pending_episodes += 1
            self._stats.backpressure_s = 0.0

    def add_frame(self, values: Mapping[str, np.ndarray], timestamp: float,
                  capture_times: Mapping[str, float] | None = None, max_wait_s: float | None = None,
                  give_up: Callable[[], bool] | None = None) -> float:
        """Queue a frame; returns how long it waited for room (0 unless the disk is behind).
        A recorder waits as long as the disk needs (nothing is dropped); a loop that must stay
        responsive (the executor's) passes `max_wait_s`, and gets a WriterError, the frame not
        queued, when the queue stays full that long. `give_up` is asked every 0.1 s of a wait:
        True raises WaitAbandoned, the frame not queued (the recorder's e-stop)."""
        nbytes = sum(np.asarray(v).nbytes for v in values.values())
        return self._put(_Frame(dict(values), timestamp, dict(capture_times or {}), nbytes), max_wait_s, give_up)

    def commit(self, success: bool | None = None, dropped_frames: int = 0,
               extra: Mapping[str, Any] | None = None, give_up: Callable[[], bool] | None = None) -> None:
        """Queue the end of the open episode, kept with its success flag, dropped-frame count and
        extra metadata. An episode with no frames is discarded instead. Raises the writer's
        `failure` once it has stopped."""
        self._put(_Commit(success, dropped_frames, dict(extra or {})), give_up=give_up)

    def discard(self, give_up: Callable[[], bool] | None = None) -> None:
        """Queue dropping the open episode's frames. Raises the writer's `failure` once it
        has stopped."""
        self._put(_Discard(), give_up=give_up)

    def mark(self, store_index: int, success: bool | None, give_up: Callable[[], bool] | None = None) -> None:
        """Set an already committed episode's success flag (after the queue drains to it)."""
        self._put(_Mark(store_index, success), give_up=give_up)

    def delete(self, store_index: int, give_up: Callable[[], bool] | None = None) -> None:
        """Delete a committed episode from the store (after the queue drains to it).

        The last episode goes in place, copying no other episode
        (`EpisodeStore.drop_last_episode`); any other compacts the store (a copy of every
        episode kept) while later frames wait in the queue."""
        self._put(_Delete(store_index), give_up=give_up)

    def stats(self) -> WriterStats:
        """A copy of the counters (cheap: the loop reads it every tick)."""
        with self._lock:
            stats = dataclasses.replace(self._stats)
        stats.queue_depth = self._queue.qsize()
        return stats

    def committed(self) -> list[EpisodeInfo]:
        """The episodes committed so far, in order: the newest `COMMITTED_KEPT` of them
        (`stats().committed_count` counts all; the store lists every one)."""
        with self._lock:
            return list(self._committed)

    def mb_per_s(self) -> float:
        """Frame data handed to the store over the last `RATE_WINDOW_S` seconds (since the
        writer started, when that is sooner), in MB/s: 1e6 bytes of uncompressed frames, not
        bytes on disk. 0 once no frame was written that long (between takes)."""
        now = time.monotonic()
        with self._lock:
            self._forget(now)
            written = self._recent_bytes
        return written / max(min(RATE_WINDOW_S, now - self._started), 1e-6) / 1e6

    def _forget(self, now: float) -> None:
        """Drop the frames written before the rate's window (under `_lock`)."""
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent_bytes -= self._recent.popleft()[1]

    def close(self, timeout: float | None = None, on_wait: Callable[[], None] | None = None) -> None:
        """Finish everything queued (an open episode is discarded), then stop the thread.
        After a failure there is nothing left to finish: `failure` says why.

        Up to a full queue (record.queue_mb of frames) is written first: seconds, or minutes on
        a disk that is behind. `on_wait()` is called every CLOSE_WAIT_SLICE_S of that wait (a
        recorder publishes its status, the saved count rising: a dashboard or `platform
        monitor` that hears nothing for 2 s says the loop may be stuck, and an operator who
        believes it and kills the process loses the takes still queued); an error out of it
        ends the wait, raised, the thread going on. `timeout` [s]: how
        long the thread's end is waited for once everything is queued (None: as long as it
        takes); the thread, a daemon, is left behind after it."""
        while self._thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=CLOSE_WAIT_SLICE_S)
                break
            except queue.Full:  # the disk is behind: the queue drains to make room for the stop
                if on_wait is not None and self._thread.is_alive():
                    on_wait()
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._thread.is_alive():
            left = CLOSE_WAIT_SLICE_S if deadline is None else min(CLOSE_WAIT_SLICE_S, deadline - time.monotonic())
            if left <= 0:
                return
            self._thread.join(left)
            if on_wait is not None and self._thread.is_alive():
                on_wait()

    @property
    def alive(self) -> bool:
        """True while the writer thread runs (False after `close()` or a failure)."""
        return self._thread.is_alive()

    @property
    def failure(self) -> WriterError | None:
        """Why the writer stopped early (None while it runs, or after a clean close)."""
        return self._failure

    def _put(self, item: Any, max_wait_s: float | None = None, give_up: Callable[[], bool] | None = None) -> float:
        if not self._thread.is_alive():
            raise self._failure or WriterError("the episode writer is closed")
        try:
            self._queue.put_nowait(item)
            waited = 0.0
        except queue.Full:
            start = time.monotonic()
            while True:
                longest = 0.5 if give_up is None else 0.1
                slice_s = longest if max_wait_s is None else max(0.0, min(longest, start + max_wait_s - time.monotonic()))
                try:
                    self._queue.put(item, timeout=slice_s)
                    break
                except queue.Full:
                    if not self._thread.is_alive():
                        raise (self._failure or WriterError("the episode writer is closed")) from None
                    if give_up is not None and give_up():
                        raise WaitAbandoned from None
                    if max_wait_s is not None and time.monotonic() - start >= max_wait_s:
                        raise WriterError(f"the disk is behind: the writer's queue of {self._queue.maxsize} frames "
                                          f"stayed full for {max_wait_s:g} s") from None
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
                        now = time.monotonic()
                        self._recent.append((now, item.nbytes))
                        self._recent_bytes += item.nbytes
                        self._forget(now)  # bounded when nobody asks for the rate
                elif isinstance(item, _Commit) and writer is not None:
                    before = len(self.store)
                    try:
                        info = writer.commit(item.success, item.dropped_frames, item.extra) if len(writer) else None
                    except Exception:
                        if len(self.store) > before:  # failed after its commit point (the folder's sync):
                            writer = None             # the episode is in the store, not lost
                            self._episode_done(self.store.episode(before))
                        raise
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
                    if item.store_index == len(self.store) - 1:
                        self.store.drop_last_episode()
                    else:
                        self.store.delete_episodes([item.store_index])
                    with self._lock:
                        kept = [e for e in self._committed if e.index != item.store_index]
                        self._committed = deque(kept, maxlen=COMMITTED_KEPT)
        except Exception as exc:  # the loop sees it through `failure`
            failure = describe_failure(exc, self.store.path)
            if _os_error(exc) is not None or isinstance(exc, PlatformError):
                log.error("%s", failure)
                log.debug("writer failure", exc_info=exc)
            else:  # not the disk: a bug, keep its traceback
                log.exception("episode writer failed")
            with self._lock:
                self._stats.error = str(failure)
            self._failure = failure
        finally:
            if writer is not None and writer.is_open:
                try:
                    writer.discard()
                except Exception as exc:  # e.g. no room left to shrink the arrays: the next open cuts the tail
                    log.warning("could not drop the unfinished episode from %s (%s); the next open of the "
                                "store removes it", self.store.path, exc)

    def _episode_done(self, info: EpisodeInfo | None) -> None:
        with self._lock:
            self._stats.pending_episodes -= 1
            if info is not None:
                self._committed.append(info)
                self._stats.committed_count += 1
        if info is not None and self._on_commit is not None:
            self._on_commit(info)
        if self._release_memory:
            release_free_memory()
