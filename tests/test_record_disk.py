"""The disk budget's count of inodes: every camera frame is a file, and small frames run a
file system out of inodes long before out of bytes (record/disk.py)."""

from __future__ import annotations

import os

import pytest

from disk_fixtures import small_disk
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.record.disk import DiskBudget, DiskSpaceError
from store_fixtures import arm_features, synthetic_frame

ROWS = 10


def _record(store: EpisodeStore, rng) -> None:
    writer = store.begin_episode("one", fps=30)
    for t in range(ROWS):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    writer.commit()


def test_no_episode_the_budget_lets_start_dies_of_a_full_inode_table(tmp_path, rng):
    """Bytes alone: with 60 MB free the budget let every episode start, and the one the
    inodes could not hold failed on a frame's .partial file (ENOSPC), its take lost."""
    with small_disk(tmp_path / "disk", "64m", inodes=1500) as disk:
        store = EpisodeStore.create(disk / "s.zarr", arm_features(), StoreSettings(durable=False))
        budget = DiskBudget(store.path, store.features, episode_rows=ROWS, reserve_bytes=0)
        started = 0
        with pytest.raises(DiskSpaceError):
            while started < 200:  # 1,500 inodes hold ~70 of these episodes; 64 MB thousands
                budget.check_room(started)
                try:
                    _record(store, rng)
                except OSError as failure:
                    raise AssertionError(f"episode {started} was let start and failed: {failure}") from failure
                budget.learn(store, started)
                started += 1
        assert started >= 1 and budget.free_bytes() > 50 * 10**6
        store.close()
        assert EpisodeStore.open(disk / "s.zarr").check() == []


def test_the_budget_refuses_the_episode_the_inodes_cannot_hold_with_bytes_to_spare(tmp_path, rng):
    """A 64 MB ext4 of 2,048 inodes: the budget said 128 episodes fit, the 65th died of
    ENOSPC on a .partial frame with 38 MB free. Here a 64 MB tmpfs of 300 inodes."""
    from shallowpi.record.disk import episode_files, free_files

    with small_disk(tmp_path / "disk", "64m", inodes=300) as disk:
        store = EpisodeStore.create(disk / "s.zarr", arm_features(), StoreSettings(durable=False))
        budget = DiskBudget(store.path, store.features, episode_rows=ROWS, reserve_bytes=0, reserve_files=20)
        per_episode = budget.episode_files()
        # Two cameras a file a frame; the tick, 4 capture-time and 2 numeric arrays a chunk each; the metadata.
        assert per_episode == episode_files(store.features, ROWS, 1024) == 2 * ROWS + 7 + 2
        made = []
        for episode in range(2):
            before = os.statvfs(disk).f_favail
            _record(store, rng)
            budget.learn(store, episode)
            made.append(before - os.statvfs(disk).f_favail)
        assert made[1] <= made[0] <= per_episode, made  # the first made the numeric chunks too
        fit = budget.episodes_that_fit()
        assert fit == (free_files(disk) - 20) // per_episode >= 1
        assert budget.episodes_that_fit(queued=1) == fit - 1
        bytes_fit = int(budget.free_bytes() // budget.episode_bytes())
        assert bytes_fit > 10 * fit  # bytes alone would have let far more start
        assert f"{fit} fit before the inodes run out" in budget.describe()
        # Every episode it lets start is recorded whole (ENOSPC would raise out of the
        # writer), until it refuses one, bytes to spare.
        episode = 2
        with pytest.raises(DiskSpaceError, match=r"^no room for episode \d+: \d+ more files \(inodes\) can be made "
                                                 r"at .*, 0 episode\(s\) still being written, an episode of 10 frames "
                                                 rf"makes {per_episode} files \(one a camera frame\) and 20 stay free; "
                                                 "delete files on that disk or record into another --data-root"):
            while episode < 100:
                budget.check_room(episode)
                _record(store, rng)
                budget.learn(store, episode)
                episode += 1
        assert episode >= 2 + fit and free_files(disk) < 20 + per_episode
        assert budget.free_bytes() > 10 * budget.episode_bytes()
        # The count of files is no estimate: refused even before any episode is measured.
        fresh = DiskBudget(disk / "new.zarr", store.features, episode_rows=ROWS, reserve_bytes=0, reserve_files=20)
        with pytest.raises(DiskSpaceError, match=r"more files \(inodes\) can be made"):
            fresh.check_room(0)
        reserved = DiskBudget(disk / "new.zarr", store.features, episode_rows=ROWS, reserve_bytes=0,
                              reserve_files=free_files(disk) + 1)
        with pytest.raises(DiskSpaceError, match=r"more files \(inodes\) can be made at .*, below the [\d,]+ that "
                                                 r"stay free: no episode fits \(each camera frame is a file\)"):
            reserved.require_reserve()
        store.close()
        assert EpisodeStore.open(disk / "s.zarr").check() == []


def test_a_file_system_that_counts_no_inodes_is_held_to_its_bytes_alone(tmp_path, monkeypatch):
    """statvfs's 0 files and 0 free (procfs here; some network and overlay file systems)
    means no count, not no room."""
    from shallowpi.record.disk import free_files

    assert free_files("/proc") is None
    assert free_files(tmp_path) == os.statvfs(tmp_path).f_favail
    budget = DiskBudget(tmp_path / "s.zarr", arm_features(), episode_rows=ROWS, reserve_bytes=0)
    assert budget.free_files() == os.statvfs(tmp_path).f_favail

    real = os.statvfs

    def counting(files: int):
        def statvfs(path):  # this disk's bytes, and `files` total and free inodes
            s = real(path)
            return os.statvfs_result((s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, files, files, files,
                                      s.f_flag, s.f_namemax))
        return statvfs

    monkeypatch.setattr(os, "statvfs", counting(10**12))  # inodes never the limit: bytes alone
    by_bytes = budget.episodes_that_fit()
    monkeypatch.setattr(os, "statvfs", counting(0))  # uncounted: held to its bytes, not refused
    assert budget.free_files() is None and budget.episodes_that_fit() == by_bytes > 0
    budget.check_room(0)
    budget.require_reserve()


def test_the_files_of_an_episode_follow_the_stores_numeric_chunk_length():
    from shallowpi.record.disk import episode_files

    features = arm_features()  # 2 cameras; tick + 4 capture-time arrays + 2 numeric arrays
    assert episode_files(features, 900, 1024) == 2 * 900 + 7 * 1 + 2
    assert episode_files(features, 900, 100) == 2 * 900 + 7 * 9 + 2
    assert episode_files(features, 901, 100) == 2 * 900 + 2 + 7 * 10 + 2
