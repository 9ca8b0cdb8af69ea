"""The background writer: order, commit/discard, measured back-pressure, failure surfacing."""

from __future__ import annotations

import errno
import itertools
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from disk_fixtures import small_disk
from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.store import StoreSettings
from shallowpi.record.disk import DiskBudget, DiskSpaceError, raw_frame_bytes
from shallowpi.record.writer import BackgroundWriter, WriterError
from store_fixtures import arm_features, synthetic_frame


def test_episodes_arrive_in_order_and_discards_leave_nothing(tmp_path, rng):
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    committed = []
    writer = BackgroundWriter(store, capacity_frames=64, on_commit=committed.append)
    for episode, (length, keep) in enumerate([(12, True), (7, False), (9, True)]):
        writer.begin(episode, f"task {episode}", robot="arm", fps=30)
        for t in range(length):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit(success=True) if keep else writer.discard()
    writer.close()
    assert [info.task for info in committed] == ["task 0", "task 2"]
    assert [info.length for info in committed] == [12, 9]
    assert store.check() == []
    assert writer.stats().pending_episodes == 0


def test_a_full_queue_blocks_and_is_measured_never_dropped(tmp_path, rng):
    big = {"observation.images.cam": Feature.image(480, 640), "observation.state": Feature.vector(["a"]),
           "action": Feature.vector(["a"])}
    store = EpisodeStore.create(tmp_path / "s.zarr", big, StoreSettings(durable=False, image_batch=1))
    writer = BackgroundWriter(store, capacity_frames=2)
    writer.begin(0, "flood")
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # slow to encode on purpose
    waited = sum(writer.add_frame({"observation.images.cam": noise, "observation.state": np.zeros(1),
                                   "action": np.zeros(1)}, t / 30) for t in range(20))
    writer.commit()
    writer.close()
    stats = writer.stats()
    assert waited > 0 and stats.backpressure_s >= waited  # the commit may wait too
    assert stats.high_water == 2
    assert store.episode(0).length == 20  # every frame arrived


def test_a_loop_that_cannot_wait_gets_an_error_instead_of_a_stall(tmp_path, rng, monkeypatch):
    """max_wait_s (the executor's recording): a queue still full after it raises WriterError,
    the frame not queued; the frames queued before it are written."""
    from shallowpi.data import chunk_files

    written = chunk_files.write_frames

    def slow_disk(*args, **kwargs):
        time.sleep(0.5)
        return written(*args, **kwargs)

    monkeypatch.setattr(chunk_files, "write_frames", slow_disk)
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False, image_batch=1))
    writer = BackgroundWriter(store, capacity_frames=2)
    writer.begin(0, "slow disk")
    queued = 0
    with pytest.raises(WriterError, match=re.escape("the disk is behind: the writer's queue of 2 frames stayed full for 0.05 s")):
        for t in range(20):
            started = time.perf_counter()
            writer.add_frame(synthetic_frame(rng, t), t / 30, max_wait_s=0.05)
            assert time.perf_counter() - started < 0.3
            queued += 1
    writer.commit(success=None)
    writer.close()
    assert 2 <= queued < 20 and store.episode(0).length == queued


def test_close_calls_on_wait_while_it_waits_for_the_queue_and_sees_each_commit(tmp_path, rng, monkeypatch):
    """Closing after a recording waits for every take still queued: seconds on a slow disk,
    while the recorder published nothing (dashboards and `platform monitor` said STALE, "its
    loop may be stuck", and a SIGKILL then lost exactly those takes). `on_wait` is called
    every CLOSE_WAIT_SLICE_S of the wait, the commits counted as they land."""
    from shallowpi.data import episode_writer
    from shallowpi.record.writer import CLOSE_WAIT_SLICE_S

    commit = episode_writer.EpisodeWriter.commit

    def slow_commit(self, *args, **kwargs):
        time.sleep(0.4)  # the fsyncs of a busy SD card
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", slow_commit)
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    writer = BackgroundWriter(store, capacity_frames=64)  # all queued at once: ~2.4 s of commits at the close
    for episode in range(6):
        writer.begin(episode, "queued", fps=30)
        for t in range(3):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit()
    looks: list[tuple[float, int]] = []
    started = time.monotonic()
    writer.close(on_wait=lambda: looks.append((time.monotonic(), writer.stats().committed_count)))
    assert not writer.alive and len(store) == 6 and writer.stats().committed_count == 6
    times = [started, *(at for at, _ in looks), time.monotonic()]
    assert len(looks) >= 3, looks
    assert max(b - a for a, b in itertools.pairwise(times)) < CLOSE_WAIT_SLICE_S + 0.3, looks
    counts = [count for _, count in looks]
    assert counts == sorted(counts) and counts[0] < counts[-1], looks


def test_close_calls_on_wait_while_a_full_queue_has_no_room_for_its_stop(tmp_path, rng):
    """A disk behind fills the queue (record.queue_mb of frames): the close's stop waits for
    room before the thread can be joined, the longest part of the wait. The writer thread
    is held at the episode's begin until the first look, so the queue is full then."""
    import threading

    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    held = threading.Event()
    begin_episode = store.begin_episode

    def begin_held(*args, **kwargs):
        held.wait(30)
        return begin_episode(*args, **kwargs)

    store.begin_episode = begin_held
    writer = BackgroundWriter(store, capacity_frames=4)
    writer.begin(0, "open at the close", fps=30)
    while writer.stats().queue_depth:  # the thread took the begin, and waits in it
        time.sleep(0.01)
    for t in range(4):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    depths: list[int] = []

    def look() -> None:
        depths.append(writer.stats().queue_depth)
        held.set()

    writer.close(on_wait=look)
    assert depths[:1] == [4] and not writer.alive and writer.failure is None
    assert len(store) == 0  # the episode left open was discarded


def test_the_rate_is_the_disks_now_not_an_average_since_the_start(tmp_path, rng, monkeypatch):
    """An average since the writer started (resets included) still showed a fast disk's rate
    long after the disk had slowed down, and a rate while nothing was written. The rate is
    the frame data written over the last RATE_WINDOW_S (here 0.5 s)."""
    from shallowpi.data import chunk_files
    from shallowpi.record import writer as writer_module

    monkeypatch.setattr(writer_module, "RATE_WINDOW_S", 0.5, raising=False)
    delay = [0.0]
    written = chunk_files.write_frames

    def disk(*args, **kwargs):
        time.sleep(delay[0])
        return written(*args, **kwargs)

    monkeypatch.setattr(chunk_files, "write_frames", disk)
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False, image_batch=1))
    writer = BackgroundWriter(store, capacity_frames=256)
    frame_bytes = sum(v.nbytes for v in synthetic_frame(rng, 0).values())
    writer.begin(0, "fast, then slow")
    for t in range(60):  # a fast disk
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    while writer.stats().bytes_written < 60 * frame_bytes:
        time.sleep(0.01)
    time.sleep(0.6)  # a reset: nothing written for longer than the window
    assert writer.mb_per_s() == 0.0
    delay[0] = 0.05  # the disk slows down: a write of 50 ms more
    for t in range(60, 100):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    time.sleep(0.5)
    before = writer.stats().bytes_written
    time.sleep(0.5)
    now = writer.stats().bytes_written - before  # bytes written over the last 0.5 s
    # that pace, to a frame or two at the window's ends; the average since the start was
    # several times more (60 fast frames in it)
    assert writer.mb_per_s() == pytest.approx(now / 0.5 / 1e6, abs=2.5 * frame_bytes / 0.5 / 1e6)
    assert 0 < now < 20 * frame_bytes
    delay[0] = 0.0
    writer.discard()
    writer.close()


def test_writer_failure_reaches_the_loop(tmp_path, rng):
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    writer = BackgroundWriter(store, capacity_frames=4)
    writer.begin(0, "bad frames")
    writer.add_frame({"action": np.zeros(6)}, 0.0)  # lacks features: the writer thread fails
    writer._thread.join(10)
    assert not writer.alive and "lacks" in writer.stats().error
    with pytest.raises(WriterError, match=r"s\.zarr failed: frame lacks"):
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
    assert writer.failure is not None and "lacks" in str(writer.failure)


# --- failures of the disk under the writer --------------------------------------------------


def _noise_frame(rng, t: int) -> dict[str, np.ndarray]:
    frame = synthetic_frame(rng, t, 96, 128)
    frame["observation.images.front"] = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)  # ~30 KB as JPEG
    return frame


def test_a_full_disk_stops_the_writer_with_one_line_and_keeps_committed_episodes(tmp_path, rng, caplog):
    with small_disk(tmp_path / "disk", "1m") as disk:
        store = EpisodeStore.create(disk / "s.zarr", arm_features(96, 128), StoreSettings(image_batch=2))
        writer = BackgroundWriter(store, capacity_frames=4)
        writer.begin(0, "fits", fps=30)
        for t in range(5):
            writer.add_frame(_noise_frame(rng, t), t / 30)
        writer.commit()
        writer.begin(1, "does not fit", fps=30)
        with pytest.raises(WriterError) as raised:
            for t in range(400):  # ~12 MB of frames into 1 MB
                writer.add_frame(_noise_frame(rng, t), t / 30)
        writer.close(10)
        assert not writer.alive
        message = str(raised.value)
        assert message == str(writer.failure) and "\n" not in message
        assert message.startswith(f"writing {disk / 's.zarr'} failed: the disk is full (ENOSPC")
        assert message.endswith("free space or record into another --data-root")
        # One line in the log, no traceback.
        assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
        assert [info.index for info in writer.committed()] == [0]
        store.close()
        kept = EpisodeStore.open(disk / "s.zarr")
        assert len(kept) == 1 and kept.episode(0).task == "fits" and kept.check() == []


@pytest.mark.parametrize("code, words", [
    (errno.EIO, "an I/O error (EIO at "),
    (errno.EACCES, "permission denied (EACCES at "),
    (errno.ENOSPC, "the disk is full (ENOSPC at "),
    (errno.EROFS, "the file system is read-only (EROFS at "),
])
def test_an_os_error_in_the_writer_thread_is_one_line_naming_it(tmp_path, rng, monkeypatch, caplog, code, words):
    """The OS error raised where the bytes meet the file system (the rename that publishes
    a chunk file: the chunk writer's and zarr's own), mid-episode."""
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False, image_batch=2))
    writer = BackgroundWriter(store, capacity_frames=4)
    writer.begin(0, "kept", fps=30)
    for t in range(4):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    writer.commit()
    while writer.stats().pending_episodes:
        time.sleep(0.01)
    replace = os.replace

    def failing_replace(src, dst, *args, **kwargs):
        if "data" in Path(dst).parts:
            raise OSError(code, os.strerror(code), str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", failing_replace)
    writer.begin(1, "lost", fps=30)
    with pytest.raises(WriterError, match=re.escape(words)):
        for t in range(50):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
            time.sleep(0.005)
    writer.close(10)
    monkeypatch.setattr(os, "replace", replace)
    assert not [r for r in caplog.records if r.exc_info and r.levelno >= logging.INFO]
    assert [info.task for info in writer.committed()] == ["kept"]
    store.close()
    reopened = EpisodeStore.open(tmp_path / "s.zarr", mode="a")  # cuts what episode 1 left
    assert len(reopened) == 1 and reopened.check() == []


def test_the_disk_budget_measures_episodes_and_refuses_one_that_cannot_fit(tmp_path, rng):
    with small_disk(tmp_path / "disk", "2m") as disk:
        store = EpisodeStore.create(disk / "s.zarr", arm_features(96, 128), StoreSettings(durable=False))
        budget = DiskBudget(store.path, store.features, episode_rows=10, reserve_bytes=0)
        assert not budget.measured and budget.frame_bytes() == raw_frame_bytes(store.features)
        for episode in range(2):  # the first also creates the numeric chunk files: measure the second
            used_before = shutil.disk_usage(disk).used
            writer = store.begin_episode("one", fps=30)
            for t in range(10):
                writer.add_frame(_noise_frame(rng, t), t / 30)
            writer.commit()
            budget.learn(store, episode)
        # Measured: what the episode took on the disk (its camera files), within 20 %.
        taken = shutil.disk_usage(disk).used - used_before
        assert budget.measured and 0.8 * taken <= budget.episode_bytes() <= 1.2 * taken
        fit = budget.episodes_that_fit()
        assert fit == int(shutil.disk_usage(disk).free // budget.episode_bytes()) and fit >= 1
        assert f"about {fit} fit" in budget.describe()
        budget.check_room(1)  # room: nothing raised
        with pytest.raises(DiskSpaceError, match=rf"no room for episode 1: .* {fit} episode\(s\) still being written"):
            budget.check_room(1, queued=fit)  # what the writer still holds takes the rest
        ballast = disk / "ballast"
        ballast.write_bytes(b"\0" * int(shutil.disk_usage(disk).free - budget.episode_bytes() / 2))
        with pytest.raises(DiskSpaceError, match="free space or record into another --data-root"):
            budget.check_room(1)
        # Unmeasured, an episode too large for the estimate only warns, but free space
        # below the reserve is known without one: refused, also before the store exists.
        unmeasured = DiskBudget(disk / "new.zarr", store.features, episode_rows=10, reserve_bytes=0)
        unmeasured.check_room(0)
        unmeasured.require_reserve()
        reserved = DiskBudget(disk / "new.zarr", store.features, episode_rows=10, reserve_bytes=10**9)
        with pytest.raises(DiskSpaceError, match=r"MB free at .*, below the 1.0 GB that stay free"):
            reserved.require_reserve()
        with pytest.raises(DiskSpaceError, match="no room for episode 0: "):
            reserved.check_room(0)


def test_a_failed_rename_is_described_by_the_file_it_was_writing():
    """A chunk file goes into place by a rename from its .partial: an OSError of such a call
    names the source first, and the line named the finished write's source, not the file
    the full disk refused."""
    from shallowpi.record.writer import describe_failure

    refused = OSError(errno.ENOSPC, "No space left on device", "/d/s.zarr/data/a/3.0.partial", None,
                      "/d/s.zarr/data/a/3.0")
    line = str(describe_failure(refused, "/d/s.zarr"))
    assert line.startswith("writing /d/s.zarr failed: the disk is full (ENOSPC at /d/s.zarr/data/a/3.0); "), line
