"""`EpisodeStore.drop_last_episode`: what the recorder's d / r between takes use; in place,
crash-safe, and the store takes the next episode at the same index."""

from __future__ import annotations

import numpy as np

from shallowpi.data import EpisodeStore
from store_fixtures import die_holding_lock, make_store, synthetic_frame


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
    die_holding_lock(store)  # the process died: the kernel drops its lock, its pid stays in the file
    reopened = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    assert len(reopened) == 1 and reopened.check() == []


def _add(store: EpisodeStore, calibration_id: str) -> None:
    writer = store.begin_episode("t", robot="arm", calibration_id=calibration_id, fps=30)
    for t in range(3):
        writer.add_frame(synthetic_frame(np.random.default_rng(t), t), t / 30)
    writer.commit()


def test_dropping_the_last_reads_one_kept_episode_when_the_store_agrees_on_everything(tmp_path):
    """The kept episodes' summary was rebuilt from every kept episode's file: ~0.5 s at
    10,000 episodes (a writable store caches only the latest 256), holding the writer
    while the next take's frames queued. A store of one rate, calibration and robot needs
    the next-to-last episode alone."""
    store = make_store(tmp_path / "s.zarr", episodes=6, length=3)
    store._infos.clear()  # as in a store longer than the writer's cache
    read = []
    load = store._load_episode
    store._load_episode = lambda index: read.append(index) or load(index)
    store.drop_last_episode()
    assert sorted(read) == [4, 5] and store.summary.calibration_ids == ("cal-test",)
    assert EpisodeStore.open(tmp_path / "s.zarr").summary == store.summary


def test_dropping_the_last_leaves_the_summary_of_the_episodes_kept(tmp_path):
    """Values only the dropped episode held leave the summary (the next take is checked
    against it), whichever way it is found."""
    mixed = make_store(tmp_path / "mixed.zarr", episodes=2, length=3)
    mixed.allow_mixed_calibration()
    _add(mixed, "cal-other")
    _add(mixed, "cal-test")
    assert mixed.summary.calibration_ids == ("cal-other", "cal-test")
    mixed.drop_last_episode()  # the next-to-last shows one of two: all are read
    assert mixed.summary.calibration_ids == ("cal-other", "cal-test")
    mixed.drop_last_episode()
    assert mixed.summary.calibration_ids == ("cal-test",) and mixed.summary.allow_mixed_calibration
    unknown = EpisodeStore.create(tmp_path / "unknown.zarr", mixed.features, mixed.settings)
    _add(unknown, "")  # imported: calibration not known
    _add(unknown, "cal-test")
    unknown.drop_last_episode()
    assert unknown.summary.calibration_ids == ()
    unknown.drop_last_episode()
    assert unknown.summary.fps == () and unknown.summary.robots == ()
