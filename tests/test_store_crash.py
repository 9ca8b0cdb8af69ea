"""SIGKILL a recording writer at random moments; every committed episode must survive.

One store lives through all trials, as a lab's dataset would through many crashes: each
trial reopens it (cutting the dead writer's tail), records until killed, and then every
episode ever logged as committed is compared against its checksums from commit time.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from crash_writer import digest
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.data.store_check import check_store
from shallowpi.errors import StoreError
from store_fixtures import as_layout_1, make_store

TRIALS = 30


def _committed(log: Path) -> dict[int, dict]:
    if not log.exists():
        return {}
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return {r["index"]: r for r in records}


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_at_most_the_episode_in_flight(tmp_path):
    store_path, log = tmp_path / "crash.zarr", tmp_path / "commits.jsonl"
    # One server forks each trial's writer with the imports done (an interpreter a trial was
    # half the test's time); the server must stay single-threaded to fork safely, so numpy's
    # BLAS pool (a native thread) is kept from starting, as `platform` itself does.
    env = subprocess_env(PYTHONPATH=subprocess_env()["PYTHONPATH"] + ":" + str(Path(__file__).parent),
                         OPENBLAS_NUM_THREADS="1")
    chooser = random.Random(1234)
    episodes_seen = []
    waited_for = 0  # commits the test saw before killing: a lower bound on the episodes
    # The dataset starts as a layout-1 store (metadata in one list), as one recorded before
    # layout 2 would: the first writer moves it, and its episodes must survive every kill.
    old = make_store(store_path, episodes=2, length=6, settings=StoreSettings(durable=True, image_batch=4,
                                                                            numeric_chunk_rows=64))
    old_digests = [digest(old.read_episode(i)) for i in range(2)]
    old.close()
    as_layout_1(store_path)
    unlogged: set[int] = {0, 1}  # committed, then killed before the writer logged it (or not by it)
    errors = tmp_path / "writers.err"  # a file, not a pipe: 30 writers' warnings could fill one
    with errors.open("wb") as stderr:
        server = subprocess.Popen(
            [sys.executable, str(Path(__file__).parent / "crash_writer.py"), "--fork", str(store_path), str(log)],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            start_new_session=True,  # its own process group: one kill ends it and its writer
        )
    try:
        assert server.stdout.readline().strip() == b"ready", errors.read_text()[-2000:]
        for trial in range(TRIALS):
            server.stdin.write(f"{trial}\n".encode())
            server.stdin.flush()
            said = server.stdout.readline()
            assert said.startswith(b"writer "), errors.read_text()[-2000:]
            pid = int(said.split()[1])
            assert server.stdout.readline().strip() == b"ready", errors.read_text()[-2000:]
            # Let it commit 0-2 episodes (so the dataset grows however slow the machine is),
            # then kill it anywhere: in a frame, an image flush, a commit or the log write.
            waits = chooser.choice([0, 1, 1, 2])
            waited_for += waits
            for _ in range(waits):
                assert server.stdout.readline().startswith(b"committed"), errors.read_text()[-2000:]
            time.sleep(chooser.uniform(0.0, 0.5))
            os.kill(pid, signal.SIGKILL)
            # The server reaps it and says how it ended, after the lines the writer printed.
            while (said := server.stdout.readline()).startswith(b"committed"):
                pass
            assert said == f"ended {-signal.SIGKILL}\n".encode(), \
                f"writer died on its own ({said!r}): {errors.read_text()[-2000:]}"

            committed = _committed(log)
            with EpisodeStore.open(store_path) as reader:  # before recovery: the dead writer's tail is there
                report = check_store(reader, decode_images=False)
                assert report.problems == [], report.problems  # a tail is no damage: `dataset check` exits 0
                assert report.tail is None or report.tail.writer is None
            store = EpisodeStore.open(store_path, mode="a")  # recovery runs here
            try:
                # Logged commits are all there; each kill adds at most one unlogged episode, the
                # one it interrupted between commit and logging, and that is the newest.
                new_unlogged = set(range(len(store))) - committed.keys() - unlogged
                assert new_unlogged <= {len(store) - 1}
                unlogged |= new_unlogged
                assert committed.keys() <= set(range(len(store)))
                assert store.check(decode_images=False) == []  # every frame is decoded once, below
                assert store.layout == 2
                assert [digest(store.read_episode(i)) for i in range(2)] == old_digests
                for index, record in committed.items():
                    assert store.episode(index).length == record["length"]
                    assert digest(store.read_episode(index)) == record["digest"], f"episode {index} changed"
                episodes_seen.append(len(store))
            finally:
                store.close()
        server.stdin.close()  # EOF: the server ends
        assert server.wait(timeout=30) == 0, errors.read_text()[-2000:]
    finally:
        if server.poll() is None:  # a failed assertion: the server and the writer it waits on
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    with EpisodeStore.open(store_path) as store:
        assert store.check(decode_images=True) == []
    # The kills landed at different moments, so the dataset grew by different amounts.
    assert episodes_seen[-1] >= waited_for > 0
    assert len(set(np.diff(episodes_seen))) > 1


def test_a_commit_that_fails_after_its_commit_point_keeps_the_episode(tmp_path, monkeypatch):
    """The commit record's rename is the commit point; its folder's fsync comes after. If
    that sync fails, the caller (the recorder's writer) discards the take: the discard must
    not cut rows the store on disk already counts, or the next open refuses the store."""
    import shallowpi.durable_files as durable_files
    from store_fixtures import synthetic_frame

    store = make_store(tmp_path / "s.zarr", episodes=2, settings=StoreSettings(durable=True))
    writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(1)
    for t in range(25):
        writer.add_frame(synthetic_frame(rng, t), t / 30.0)
    real_sync = durable_files.fsync_path

    def failing_sync(path):
        if Path(path).name == "meta" and (Path(path) / ".zattrs").read_text().count('"episodes": 3'):
            raise OSError(5, "Input/output error")
        real_sync(path)

    monkeypatch.setattr(durable_files, "fsync_path", failing_sync)
    with pytest.raises(OSError, match="Input/output error"):
        writer.commit(success=True)
    writer.discard()  # what the writer thread does with a take whose commit raised
    monkeypatch.setattr(durable_files, "fsync_path", real_sync)
    store.close()
    reopened = EpisodeStore.open(tmp_path / "s.zarr", mode="a")  # a damaged store is refused here
    assert len(reopened) == 3 and reopened.episode(2).length == 25
    assert check_store(reopened).ok
    reopened.close()


def test_a_commit_that_fails_before_its_commit_point_leaves_the_episode_ends_as_on_disk(tmp_path, monkeypatch):
    """The commit record's write fails (a full disk): the take is discarded and the next one
    committed. The writer's cached episode ends had taken the failed take's end already, so
    it read the next episode's rows from the wrong place, and called it damaged."""
    import errno

    import shallowpi.data.store as store_module
    from store_fixtures import synthetic_frame

    store = make_store(tmp_path / "s.zarr", episodes=2)
    assert len(store.episode_ends) == 2  # loaded: the cache the commit appends to
    rng = np.random.default_rng(4)
    real_write = store_module.write_json
    failing = [True]

    def full_once(path, data, durable, **kwargs):
        if Path(path).name == ".zattrs" and failing:
            failing.clear()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data, durable, **kwargs)

    monkeypatch.setattr(store_module, "write_json", full_once)
    for length, fails in ((7, True), (9, False)):
        writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
        for t in range(length):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        if fails:
            with pytest.raises(OSError, match="No space left"):
                writer.commit(success=True)
            writer.discard()
        else:
            writer.commit(success=True)
    start = int(store.episode_ends[1])
    assert len(store) == 3 and store.episode_range(2) == (start, start + 9)
    assert store.episode(2).length == 9 and store.read_episode(2)["observation.state"].shape[0] == 9
    store.close()
    with EpisodeStore.open(tmp_path / "s.zarr") as reopened:
        assert reopened.episode_range(2) == (start, start + 9) and check_store(reopened).ok


def test_no_episode_is_removed_while_one_is_being_recorded(tmp_path):
    """The take's writer fixed its first row when it began: a drop under it gave the take
    the dropped episode's rows too (its metadata said 5 frames, its range 9, and `check`
    called it unreadable), and a delete's swap wrote its frames into the folder it removed."""
    from store_fixtures import synthetic_frame

    store = make_store(tmp_path / "s.zarr", episodes=2)
    writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(5)
    for t in range(5):
        writer.add_frame(synthetic_frame(rng, t), t / 30.0)
    for edit in (store.drop_last_episode, lambda: store.delete_episodes([0])):
        with pytest.raises(StoreError, match="an episode is being recorded; commit or discard it before removing"):
            edit()
    writer.commit(success=True)
    store.drop_last_episode()  # between takes, as the recorder's d / r are
    assert len(store) == 2 and check_store(store).ok
    store.close()


def test_a_durable_store_is_synced_whole_before_it_appears(tmp_path, monkeypatch):
    """create() renames a staged store into place: its header, arrays' metadata and the
    folder it lands in are synced (delayed allocation could otherwise leave an empty
    .zattrs after a power cut); benchmarks' non-durable stores skip it."""
    import shallowpi.data.store as store_module
    import shallowpi.data.store_claim as store_claim
    from store_fixtures import arm_features

    synced: list[str] = []
    for module in (store_module, store_claim):  # the build's files; the folder it is published in
        monkeypatch.setattr(module, "fsync_path", lambda p: synced.append(str(p)))
    EpisodeStore.create(tmp_path / "d.zarr", arm_features(), StoreSettings(durable=True)).close()
    # Built as d.zarr inside a folder of this create's own (`d.zarr.<random>.creating`).
    staged = next(p.removesuffix("/.zattrs") for p in synced
                  if re.fullmatch(rf"{re.escape(str(tmp_path))}/d\.zarr\.\w{{8}}\.creating/d\.zarr/\.zattrs", p))
    assert f"{staged}/.zattrs" in synced and f"{staged}/meta/.zattrs" in synced and str(tmp_path) in synced
    assert any(p.startswith(f"{staged}/data/") and p.endswith(".zarray") for p in synced)
    synced.clear()
    EpisodeStore.create(tmp_path / "n.zarr", arm_features(), StoreSettings(durable=False)).close()
    assert not any("n.zarr" in p for p in synced)


def test_a_discard_that_fails_on_a_full_disk_still_releases_the_lock(tmp_path, monkeypatch):
    """Shrinking the arrays rewrites their metadata, which needs a free block: on a full
    disk close() raises, but the lock goes, and the next writer cuts the tail."""
    import errno

    from store_fixtures import synthetic_frame

    store = make_store(tmp_path / "s.zarr", episodes=1)
    writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(2)
    for t in range(10):
        writer.add_frame(synthetic_frame(rng, t), t / 30.0)

    def full(_start):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "_truncate", full)
    with pytest.raises(OSError, match="No space left"):
        store.close()
    monkeypatch.undo()
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a") as again:  # not "locked by another writer"
        assert len(again) == 1 and check_store(again).ok


def test_a_refused_frame_leaves_the_episode_row_aligned(tmp_path):
    """A frame with one bad value is refused whole: the keys before it in the feature order
    must not have been appended, or every later row would pair the wrong image with a state."""
    from store_fixtures import synthetic_frame

    store = make_store(tmp_path / "s.zarr", episodes=0)
    writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(3)
    good = [synthetic_frame(rng, t) for t in range(4)]
    writer.add_frame(good[0], 0.0)
    bad = {**good[1], "observation.images.wrist": np.zeros((5, 5, 3), np.uint8)}  # the last key: wrong shape
    with pytest.raises(StoreError):
        writer.add_frame(bad, 1 / 30)
    writer.add_frame(good[2], 2 / 30)
    writer.commit()
    assert np.array_equal(store.read("observation.state", 0, 2), np.stack([good[0]["observation.state"],
                                                                           good[2]["observation.state"]]))
    image = store.read("observation.images.front", 1, 2)[0].astype(int)  # JPEG: close, not equal
    assert np.abs(image - good[2]["observation.images.front"]).mean() < 3
    assert check_store(store).ok
    store.close()


def test_a_failed_chunk_write_leaves_no_partial_file_and_repair_removes_old_ones(tmp_path, monkeypatch):
    """A frame whose write fails (a full disk) left its `.partial` file behind: the writer's
    discard then succeeded, the close counted as clean, and no later open swept the files,
    though `dataset check` said the next recording would. The write removes its own; a
    repair removes any left (by an older version, say), as check now says."""
    import errno

    from shallowpi.data import chunk_files
    from shallowpi.data.store_check import repair_store

    folder = tmp_path / "frames"
    folder.mkdir()

    def full(fd):  # the bytes written, their sync fails: the partial file exists then
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space left"):
        chunk_files.write_frames(folder, 0, [np.zeros((4, 4, 3), np.uint8)], codec=None, durable=True)
    monkeypatch.undo()
    assert list(folder.iterdir()) == []

    store = make_store(tmp_path / "s.zarr", episodes=1)
    store.close()
    leftover = next((tmp_path / "s.zarr" / "data").rglob("0.0.0.0")).with_name("7.0.0.0.partial")
    leftover.write_bytes(b"half a frame")
    with EpisodeStore.open(tmp_path / "s.zarr") as reader:
        notes = check_store(reader).notes
    assert any("1 unfinished chunk files" in note and "`platform dataset repair" in note for note in notes), notes
    assert repair_store(tmp_path / "s.zarr").partial_files == 1
    assert not leftover.exists()
    with EpisodeStore.open(tmp_path / "s.zarr") as reader:
        assert check_store(reader).ok and check_store(reader).notes == []


def test_a_writer_checking_its_own_store_keeps_its_lock_where_locks_are_per_process(tmp_path, monkeypatch):
    """On Linux NFS flock is emulated with fcntl byte-range locks, which belong to the whole
    process: `dataset delete`'s own intactness check opened the lock file again, locked and
    unlocked it, and so released the delete's lock; another host's recorder could then
    append while the delete compacted (and lose those episodes at the swap). Emulated here
    with lockf, in this process and in the one that tries the lock."""
    import fcntl

    from shallowpi.data.store_files import require_intact

    make_store(tmp_path / "k.zarr", episodes=2, length=5).close()
    monkeypatch.setattr(fcntl, "flock", fcntl.lockf)
    try_lock = ("import fcntl, sys\nfcntl.flock = fcntl.lockf\nfrom pathlib import Path\n"
                "from shallowpi.data.durable_io import take_writer_lock\n"
                "try:\n    take_writer_lock(Path(sys.argv[1]))\n    print('got it')\n"
                "except Exception as exc:\n    print('refused')\n")
    with EpisodeStore.open(tmp_path / "k.zarr", mode="a") as store:
        require_intact(store)
        other = subprocess.run([sys.executable, "-c", try_lock, str(tmp_path / "k.zarr")], env=subprocess_env(),
                               capture_output=True, text=True, timeout=60)
        assert other.stdout.strip() == "refused", other.stdout + other.stderr


def test_a_delete_holds_a_writer_lock_through_its_swap(tmp_path, monkeypatch):
    """The delete released its lock before the swap: a `record --resume` started while the
    old copy was being removed (seconds on a lab store) took the new store, and the delete
    then failed as "being written" after deleting; one started between the release and the
    rename wrote beside the delete. Every point of the swap now refuses another writer."""
    import shutil

    from shallowpi.data import store_edit

    try_lock = ("import sys\nfrom pathlib import Path\nfrom shallowpi.data.durable_io import take_writer_lock\n"
                "try:\n    take_writer_lock(Path(sys.argv[1]))\n    print('got it')\n"
                "except Exception:\n    print('refused')\n")
    store = make_store(tmp_path / "k.zarr", episodes=3, length=5)
    seen = []
    real_rmtree, real_replace = shutil.rmtree, store_edit.os.replace

    def other_writer() -> None:
        for folder in ("k.zarr", "k.zarr.compacting"):
            if (tmp_path / folder).exists():
                result = subprocess.run([sys.executable, "-c", try_lock, str(tmp_path / folder)],
                                        env=subprocess_env(), capture_output=True, text=True, timeout=60)
                seen.append((folder, result.stdout.strip() or result.stderr[-300:]))

    def rmtree(path, *args, **kwargs):
        if str(path).endswith(".old") and (tmp_path / "k.zarr.old").exists():
            other_writer()  # the old copy about to go: the new store is in place
        return real_rmtree(path, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        if Path(src) in (tmp_path / "k.zarr", tmp_path / "k.zarr.compacting"):
            other_writer()  # before each of the swap's two renames
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    monkeypatch.setattr(store_edit.os, "replace", replace)  # os's own: the swap's renames go through it
    store_edit.delete_episodes(store, [0])
    monkeypatch.undo()
    assert seen and all(outcome == "refused" for _, outcome in seen), seen
    assert len(store) == 2 and store.check() == []
    store.close()


def test_a_delete_whose_reopen_fails_releases_each_lock_once(tmp_path, monkeypatch):
    """The swap released the old lock but left its fd number on the store: when the reopen
    failed, the caller's close() released that number again, truncating and closing
    whatever file had been given it since (a camera's, the log's)."""
    import os as os_module

    from shallowpi.data import store_edit

    store = make_store(tmp_path / "k.zarr", episodes=3, length=5)
    real_open = EpisodeStore.open

    def failing_open(path, mode="r", _locked=None):
        if _locked is not None:
            os_module.close(_locked[0])  # as open() does on a failure: the lock it was given goes
            raise StoreError("the reopen failed")
        return real_open(path, mode)

    monkeypatch.setattr(EpisodeStore, "open", staticmethod(failing_open))
    with pytest.raises(StoreError, match="the reopen failed"):
        store_edit.delete_episodes(store, [0])
    monkeypatch.undo()
    bystander = os_module.open(tmp_path / "bystander.txt", os_module.O_RDWR | os_module.O_CREAT)  # a freed number
    os_module.write(bystander, b"keep me")
    store.close()  # must not release a number it no longer holds
    assert os_module.pread(bystander, 7, 0) == b"keep me"
    os_module.close(bystander)
