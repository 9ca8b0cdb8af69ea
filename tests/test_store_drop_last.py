"""`EpisodeStore.drop_last_episode`: what the recorder's d / r between takes use; in place,
crash-safe, and the store takes the next episode at the same index."""

from __future__ import annotations

import os

import numpy as np

from shallowpi.data import EpisodeStore
from store_fixtures import make_store, synthetic_frame


def test_drop_last_episode_in_place_and_record_the_next_at_its_index(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=3, length=10)
    kept = [store.read_episode(i) for i in range(2)]
    dropped = store.drop_last_episode()
    assert dropped.index == 2 and len(store) == 2 and store.num_frames == 10 + 11
    assert store.check() == []
    assert not (tmp_path / "s.zarr" / "episodes" / "2.json").exists()
    writer = store.begin_episode("again", robot="arm", fps=30)
    for t in range(5):
        writer.add_frame(synthetic_frame(np.random.default_rng(1), t), t / 30)
    info = writer.commit(success=True)
    assert info.index == 2 and info.length == 5 and store.check() == []
    store.close()
    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert [e.task for e in reopened.episodes] == ["put the red cube in the bowl"] * 2 + ["again"]
    for i in range(2):
        for key, value in kept[i].items():
            np.testing.assert_array_equal(reopened.read_episode(i)[key], value)


def test_a_crash_after_the_commit_record_is_cut_by_the_next_open(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    # The one atomic write, then "die" before the tail is cut.
    store._write_commit_record(1, int(store.episode_ends[0]), store.summary)
    os.close(store._lock_fd)  # the process died: the kernel drops its lock, its pid stays in the file
    store._lock_fd = None
    reopened = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    assert len(reopened) == 1 and reopened.check() == []
