"""EpisodeStore: round trips, commit/discard, delete, merge, check, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

from disk_fixtures import SyncWatch
from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.store import PROVENANCE_DIR, StoreSettings
from shallowpi.data.store_check import check_store
from shallowpi.data.store_swap import SWAPPED_OUT
from shallowpi.errors import StoreError
from store_fixtures import (
    JOINTS,
    arm_features,
    as_layout_1,
    die_holding_lock,
    make_store,
    synthetic_frame,
)


def test_round_trip_numeric_exact_and_images_close(tmp_path, rng):
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    frames = [synthetic_frame(rng, t) for t in range(25)]
    writer = store.begin_episode("stack the blocks", robot="arm", calibration_id="c1", fps=30)
    for t, frame in enumerate(frames):
        writer.add_frame(frame, t / 30, capture_times={"observation.images.front": t / 30 - 0.01})
    info = writer.commit(success=True, dropped_frames=2, extra={"overruns": 1})

    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(reopened) == 1 and reopened.num_frames == 25
    episode = reopened.read_episode(0)
    np.testing.assert_array_equal(episode["observation.state"], np.stack([f["observation.state"] for f in frames]))
    np.testing.assert_array_equal(episode["action"], np.stack([f["action"] for f in frames]))
    np.testing.assert_allclose(episode["observation.images.front.timestamp"], np.arange(25) / 30 - 0.01)
    np.testing.assert_allclose(episode["observation.state.timestamp"], np.arange(25) / 30)
    images = episode["observation.images.front"].astype(float)
    truth = np.stack([f["observation.images.front"] for f in frames]).astype(float)
    assert np.abs(images - truth).mean() < 6  # JPEG at quality 90 on smooth frames
    stored = reopened.episode(0)
    assert stored == info
    assert (stored.task, stored.robot, stored.calibration_id, stored.success, stored.dropped_frames) == (
        "stack the blocks", "arm", "c1", True, 2)
    assert stored.extra == {"overruns": 1}
    assert stored.duration_s == pytest.approx(25 / 30)


def test_replay_buffer_layout_reads_with_zarr_format_2(tmp_path):
    import zarr

    make_store(tmp_path / "s.zarr", episodes=3, length=10).close()
    # zarr-python 2 (Python 3.10) has no zarr_format argument: format 2 is all it knows.
    version = {"zarr_format": 2} if int(zarr.__version__.split(".")[0]) >= 3 else {}
    root = zarr.open(str(tmp_path / "s.zarr"), mode="r", **version)
    np.testing.assert_array_equal(root["meta/episode_ends"][:], [10, 21, 33])
    assert root["data/observation.state"].shape == (33, 6)
    assert root["data/observation.images.front"].chunks == (1, 24, 32, 3)
    zarray = json.loads((tmp_path / "s.zarr" / "data" / "observation.images.front" / ".zarray").read_text())
    assert zarray["compressor"] == {"id": "imagecodecs_jpeg", "level": 90}  # portable to older imagecodecs
    # The store reads camera frames without zarr (chunk_files); they are zarr's frames.
    store, camera = EpisodeStore.open(tmp_path / "s.zarr"), "observation.images.front"
    np.testing.assert_array_equal(store.read(camera, 0, 33), root[f"data/{camera}"][:])
    np.testing.assert_array_equal(store.read(camera, 17, 18), root[f"data/{camera}"][17:18])
    np.testing.assert_array_equal(store.read(camera, 30, 99), root[f"data/{camera}"][30:33])


def test_discard_and_uncommitted_tail_leave_committed_episodes(tmp_path, rng):
    store = make_store(tmp_path / "s.zarr", episodes=2)
    before = store.read_episode(1)
    writer = store.begin_episode("spill")
    for t in range(30):  # more than one image batch reaches the disk
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    writer.discard()
    assert store.num_frames == 41
    assert store._group["data/observation.images.front"].shape[0] == 41

    writer = store.begin_episode("killed mid-episode")
    for t in range(30):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    die_holding_lock(store)  # simulate a dead writer: lock released
    assert store._group["data/observation.images.front"].shape[0] > 41
    reader = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(reader) == 2  # readers ignore the tail
    report = check_store(reader)
    assert report.problems == [] and "uncommitted" in " ".join(report.notes)  # a tail is no damage
    recovered = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    assert recovered._group["data/observation.images.front"].shape[0] == 41
    assert recovered.check() == []
    after = recovered.read_episode(1)
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


def test_delete_compacts_and_keeps_the_rest_identical(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=4, length=10)
    kept = [store.read_episode(i) for i in (0, 2, 3)]
    infos = [store.episode(i) for i in (0, 2, 3)]
    store.delete_episodes([1])
    assert len(store) == 3
    assert list(store.episode_ends) == [10, 22, 35]
    for i, (episode, info) in enumerate(zip(kept, infos)):
        for key, value in store.read_episode(i).items():
            np.testing.assert_array_equal(value, episode[key])  # images copied as bytes
        assert store.episode(i).task == info.task and store.episode(i).index == i
    assert store.check() == []
    assert not (tmp_path / "s.zarr.compacting").exists() and not (tmp_path / "s.zarr.old").exists()


def test_interrupted_delete_swap_is_finished_on_open(tmp_path, caplog):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=5)
    store.close()
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "s.zarr.compacting")
    (tmp_path / "s.zarr.compacting" / ".complete").touch()
    (tmp_path / "s.zarr" / SWAPPED_OUT).touch()  # as the swap marks the store it moves out
    (tmp_path / "s.zarr").rename(tmp_path / "s.zarr.old")  # killed between the two renames
    with caplog.at_level("WARNING", logger="shallowpi.data.store_swap"):
        assert len(EpisodeStore.open(tmp_path / "s.zarr", mode="a")) == 2
    assert not (tmp_path / "s.zarr.old").exists()
    # Said: the user never saw the delete's "deleted" line, and running it again removes others.
    assert "s.zarr: finished a `dataset delete` cut short between its renames" in caplog.text


def test_ctrl_c_in_a_deletes_swap_waits_until_the_delete_has_said_it_is_done(tmp_path, monkeypatch):
    """Ctrl-C between the swap's renames or before the "deleted" line (as the old copy was
    removed) printed "interrupted" after the delete had happened; run again, the same
    command removed the episode that had taken the deleted one's index."""
    import signal

    from shallowpi.data import store_edit

    store = make_store(tmp_path / "s.zarr", episodes=3, length=5)
    tasks = [store.episode(i).task for i in range(3)]
    renames, said = [], []
    real_replace = os.replace

    def replace(src, dst):
        if str(dst).endswith("s.zarr.old"):  # Ctrl-C lands as the swap's first rename starts
            os.kill(os.getpid(), signal.SIGINT)
        if str(dst).endswith((".old", "s.zarr")):
            renames.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(store_edit.os, "replace", replace)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # an xdist worker ignores SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            store.delete_episodes([1], swapped=lambda: said.append(len(renames)))
    finally:
        signal.signal(signal.SIGINT, before)
        monkeypatch.undo()
    assert said == [2]  # both renames made, then the line, then the Ctrl-C
    store.close()
    with EpisodeStore.open(tmp_path / "s.zarr") as reopened:
        assert [reopened.episode(i).task for i in range(2)] == [tasks[0], tasks[2]]


def test_a_reader_leaves_a_running_deletes_swap_to_it_and_opens_what_it_swaps_in(tmp_path):
    """Between a live delete's two renames the store's folder is missing, as after a crash
    there, and a reader opening it finished the swap itself, without a lock: the delete then
    failed on the marker the reader had removed (run again, it removed a second episode), or
    on the original the reader had moved back. The delete holds its copy's writer lock
    throughout; a reader now leaves a locked swap alone, waits for the store to come back,
    and finishes only a swap no process runs."""
    import threading

    from shallowpi.data.durable_io import release_writer_lock, take_writer_lock
    from shallowpi.data.store_swap import finish_interrupted_swap

    store = tmp_path / "s.zarr"
    make_store(store, episodes=3, length=5).close()
    staging, old = tmp_path / "s.zarr.compacting", tmp_path / "s.zarr.old"
    make_store(staging, episodes=2, length=5).close()  # the compacted copy
    (staging / ".complete").touch()
    lock, _ = take_writer_lock(staging)  # the delete's, taken before its first rename
    (store / SWAPPED_OUT).touch()
    store.rename(old)  # the first rename: the store's folder is missing now
    with pytest.raises(StoreError, match=r"s\.zarr is being swapped in by a running `dataset delete`"):
        finish_interrupted_swap(store, wait_s=0.2)
    assert old.is_dir() and (staging / ".complete").is_file() and not store.exists()  # left alone
    opened = []
    reader = threading.Thread(target=lambda: opened.append(len(EpisodeStore.open(store))))
    reader.start()
    time.sleep(0.2)
    assert reader.is_alive() and not store.exists()  # waiting for the delete, touching nothing
    (staging / ".complete").unlink()  # the delete's second rename
    staging.rename(store)
    reader.join(5)
    assert opened == [2]
    release_writer_lock(lock, clean=True)  # (a swap no process runs: the test above)


def test_a_delete_cut_after_its_second_rename_never_brings_the_deleted_episodes_back(tmp_path):
    """Killed after the compacted store went in but before the old copy was removed, a
    delete leaves `s.zarr.old`. Once `s.zarr` was renamed by hand, any open (a `dataset
    list`) moved the old copy, deleted episodes and all, back in as `s.zarr`: a `record
    --dataset s` then appended to it. The old copy comes back only while the swap's other
    half (`s.zarr.compacting`) says it was cut; the store's next writable open removes it."""
    from shallowpi.data.store_swap import iter_stores

    make_store(tmp_path / "s.zarr", episodes=3, length=5).close()
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "s.zarr.old")  # the store before its delete
    (tmp_path / "s.zarr.old" / SWAPPED_OUT).touch()  # as the swap marks it
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a"):  # the delete, done; its old copy left
        assert not (tmp_path / "s.zarr.old").exists()  # the writer's open removes a finished swap's leftover
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "s.zarr.old")
    (tmp_path / "s.zarr.old" / SWAPPED_OUT).touch()
    (tmp_path / "s.zarr").rename(tmp_path / "s_v2.zarr")
    assert list(iter_stores(tmp_path)) == [tmp_path / "s_v2.zarr"]
    with pytest.raises(StoreError, match="no dataset at"):
        EpisodeStore.open(tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists() and len(EpisodeStore.open(tmp_path / "s_v2.zarr")) == 3


def test_a_copy_made_by_hand_under_the_swaps_name_is_never_removed(tmp_path):
    """`cp -r kitchen.zarr kitchen.zarr.old` is a natural backup: every writable open (a
    `record --resume`) removed it as a delete's leftover, and a delete replaced it. Only a
    folder the swap marked is its; a delete with such a backup in the way says so first."""
    make_store(tmp_path / "s.zarr", episodes=3, length=5).close()
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "s.zarr.old")  # by hand: no mark
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a") as store:
        assert (tmp_path / "s.zarr.old").is_dir()
        with pytest.raises(StoreError, match=r"s\.zarr\.old exists and is no delete's leftover"):
            store.delete_episodes([0])
        assert len(store) == 3
    assert len(EpisodeStore.open(tmp_path / "s.zarr.old")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr", "s.zarr.old"]  # no .compacting made
    shutil.rmtree(tmp_path / "s.zarr.old")
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a") as store:
        store.delete_episodes([0])  # and the swap leaves nothing behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


def test_a_swap_cut_between_its_renames_is_listed_and_never_taken_for_a_free_name(tmp_path):
    """Only `s.zarr.old` and a complete `s.zarr.compacting` there: `dataset list` showed
    nothing, and a `record` (or merge, import) into that name made a fresh store, after
    which the next edit removed the last copy of its episodes."""
    from shallowpi.data.store_swap import iter_stores

    store = make_store(tmp_path / "s.zarr", episodes=3, length=5)
    store.close()
    shutil.copytree(tmp_path / "s.zarr", tmp_path / "s.zarr.compacting")
    (tmp_path / "s.zarr.compacting" / ".complete").touch()
    (tmp_path / "s.zarr" / SWAPPED_OUT).touch()  # as the swap marks the store it moves out
    (tmp_path / "s.zarr").rename(tmp_path / "s.zarr.old")  # killed between the two renames
    assert list(iter_stores(tmp_path)) == [tmp_path / "s.zarr"]
    other = make_store(tmp_path / "other.zarr", episodes=1, length=5)
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.merge([other], tmp_path / "s.zarr")  # a merge asks the same question
    with pytest.raises(StoreError, match="already exists"):
        EpisodeStore.create(tmp_path / "s.zarr", arm_features())
    assert len(EpisodeStore.open(tmp_path / "s.zarr")) == 3
    assert not (tmp_path / "s.zarr.old").exists() and not (tmp_path / "s.zarr.compacting").exists()


def test_a_merge_killed_part_way_leaves_nothing_under_the_name_asked(tmp_path):
    """kill -9 after two of three episodes: the store is built beside `out` and renamed
    into place whole, so no store that checks clean and lacks episodes is left at `out`,
    and the merge runs again."""
    import subprocess
    import sys
    import textwrap

    from conftest import subprocess_env

    for name, episodes in (("a", 2), ("b", 1)):
        make_store(tmp_path / f"{name}.zarr", episodes=episodes, length=5).close()
    script = textwrap.dedent(f"""
        import os
        from shallowpi.data import EpisodeStore, store_edit
        copied = []
        original = store_edit.append_episode_from
        def append(store, source, index):
            if len(copied) == 2:
                os._exit(9)  # a kill: no cleanup runs
            copied.append(index)
            return original(store, source, index)
        store_edit.append_episode_from = append
        sources = [EpisodeStore.open({str(tmp_path)!r} + f"/{{n}}.zarr") for n in ("a", "b")]
        store_edit.merge(sources, {str(tmp_path / "ab.zarr")!r})
    """)
    killed = subprocess.run([sys.executable, "-c", script], env=subprocess_env(), capture_output=True, text=True)
    assert killed.returncode == 9, killed.stderr
    assert not (tmp_path / "ab.zarr").exists()
    merged = EpisodeStore.merge([EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "b.zarr")],
                                tmp_path / "ab.zarr")
    assert len(merged) == 3 and merged.check() == []
    # The killed merge's folder (`ab.zarr.<random>.creating`) and claim went with the rerun.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "ab.zarr", "b.zarr"]


def test_merge_requires_same_features(tmp_path):
    a = make_store(tmp_path / "a.zarr", episodes=2, length=5, task="task a")
    b = make_store(tmp_path / "b.zarr", episodes=1, length=7, task="task b")
    merged = EpisodeStore.merge([a, b], tmp_path / "ab.zarr")
    assert [e.task for e in merged.episodes] == ["task a", "task a", "task b"]
    np.testing.assert_array_equal(merged.read_episode(2)["action"], b.read_episode(0)["action"])
    other = EpisodeStore.create(tmp_path / "c.zarr", {"action": Feature.vector(["x"])})
    with pytest.raises(StoreError, match="differ in features"):
        EpisodeStore.merge([a, other], tmp_path / "ac.zarr")


def test_merge_refuses_an_episode_twice(tmp_path):
    """`dataset merge r1 r1` made a store holding every scene twice, without a word: trained
    on twice, and on both sides of a held-out split."""
    import shutil

    a = make_store(tmp_path / "a.zarr", episodes=2, length=5, scene_seeds=[0, 1])
    with pytest.raises(StoreError, match=r"a.zarr is given twice"):
        EpisodeStore.merge([a, EpisodeStore.open(tmp_path / "a.zarr")], tmp_path / "aa.zarr")
    a.close()
    shutil.copytree(tmp_path / "a.zarr", tmp_path / "copy.zarr")
    with pytest.raises(StoreError, match=r"a.zarr episode 0 and copy.zarr episode 0 are one recording"):
        EpisodeStore.merge([EpisodeStore.open(tmp_path / "a.zarr"), EpisodeStore.open(tmp_path / "copy.zarr")],
                           tmp_path / "ac.zarr", allow_repeated_scenes=True)
    # Recorded apart, from the same first seed: the same scenes of the same task.
    b = make_store(tmp_path / "b.zarr", episodes=2, length=5, seed=3, scene_seeds=[5, 1])
    with pytest.raises(StoreError, match=r"a.zarr episode 1 and b.zarr episode 1 are the same scene \(seed 1, "):
        EpisodeStore.merge([EpisodeStore.open(tmp_path / "a.zarr"), b], tmp_path / "ab.zarr")
    assert len(EpisodeStore.merge([EpisodeStore.open(tmp_path / "a.zarr"), b], tmp_path / "ab.zarr",
                                  allow_repeated_scenes=True)) == 4  # two policies' rollouts of the same seeds
    other_task = make_store(tmp_path / "c.zarr", episodes=2, length=5, task="push the block", scene_seeds=[0, 1])
    merged = EpisodeStore.merge([EpisodeStore.open(tmp_path / "a.zarr"), other_task], tmp_path / "ac2.zarr")
    assert len(merged) == 4  # one layout, two instructions: two demonstrations
    # A merged store beside one of its parts: robot recordings carry no seed, their checksums tell.
    with pytest.raises(StoreError, match=r"ac2.zarr episode 2 and c.zarr episode 0 are one recording"):
        EpisodeStore.merge([merged, EpisodeStore.open(tmp_path / "c.zarr")], tmp_path / "again.zarr")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".zarr")) == []  # refused: nothing left


def test_delete_and_merge_keep_how_every_episode_was_recorded(tmp_path):
    a = make_store(tmp_path / "a.zarr", episodes=2, length=5, task="task a")
    b = make_store(tmp_path / "b.zarr", episodes=1, length=5, task="task b")
    for store, noise in ((a, "0.005"), (b, "0.01")):  # two sessions started in the same second
        (store.path / PROVENANCE_DIR).mkdir()
        (store.path / PROVENANCE_DIR / "record-20261204-131500.yaml").write_text(f"record:\n  sim_noise: {noise}\n")
    (a.path / PROVENANCE_DIR / "record-20261204-131500.log").write_text("dashboard log")
    a.delete_episodes([0])
    assert sorted(p.name for p in (a.path / PROVENANCE_DIR).iterdir()) == [
        "record-20261204-131500.log", "record-20261204-131500.yaml"]
    merged = EpisodeStore.merge([a, b], tmp_path / "ab.zarr")
    kept = {p.name: p.read_text() for p in (merged.path / PROVENANCE_DIR).iterdir()}
    assert kept == {"record-20261204-131500.yaml": "record:\n  sim_noise: 0.005\n",
                    "record-20261204-131500.log": "dashboard log",
                    "record-20261204-131500.b.yaml": "record:\n  sim_noise: 0.01\n"}
    assert merged.check() == []


def test_merged_frames_share_their_files_and_outlive_the_sources_edits(tmp_path):
    a = make_store(tmp_path / "a.zarr", episodes=2, length=5, task="task a")
    b = make_store(tmp_path / "b.zarr", episodes=1, length=5, task="task b")
    before = [a.read_episode(0), a.read_episode(1), b.read_episode(0)]
    merged = EpisodeStore.merge([a, b], tmp_path / "ab.zarr")
    frame = merged.path / "data" / "observation.images.front" / "0.0.0.0"
    assert frame.stat().st_nlink == 2  # linked, not copied: the frames were written once
    a.delete_episodes([0])  # rewrites a (its kept frames linked again), then drops the old folder
    b.close()
    shutil.rmtree(b.path)
    merged.close()
    reopened = EpisodeStore.open(tmp_path / "ab.zarr")
    assert reopened.check() == []
    for i, episode in enumerate(before):
        for key, value in reopened.read_episode(i).items():
            np.testing.assert_array_equal(value, episode[key])


def test_merge_keeps_joint_kinds_whichever_store_comes_first(tmp_path):
    """Joint kinds (which joints are grippers, for delta actions and plots) do not take part
    in comparing features: a first store without them (a lerobot import) dropped them."""
    kinds = ("revolute",) * 5 + ("gripper",)
    plain = make_store(tmp_path / "plain.zarr", episodes=1, length=5)
    kinded = make_store(tmp_path / "kinded.zarr", episodes=1, length=5, kinds=kinds)
    assert not plain.features["action"].kinds
    for order, name in (([plain, kinded], "pk.zarr"), ([kinded, plain], "kp.zarr")):
        merged = EpisodeStore.merge(order, tmp_path / name)
        assert merged.features["action"].kinds == kinds and merged.features["observation.state"].kinds == kinds


def test_other_joint_kinds_are_refused_naming_the_joint_and_unknown_ones_still_join(tmp_path):
    """Kinds were left out of comparing features so that a store without them (recorded
    before they were kept, a lerobot import) still matched; two different lists matched
    too, and the first one stayed: `deploy --record` after a joint's kind was fixed in the
    robot file stored the new takes under the old kinds, and a merge labelled every episode
    with the first store's (training's delta-action joints and plot units follow them)."""
    kinds = ("revolute",) * 5 + ("gripper",)
    fixed = ("revolute",) * 4 + ("linear", "gripper")
    make_store(tmp_path / "kinded.zarr", episodes=1, length=5, kinds=kinds).close()
    make_store(tmp_path / "fixed.zarr", episodes=1, length=5, seed=3, kinds=fixed).close()
    make_store(tmp_path / "plain.zarr", episodes=1, length=5, seed=5).close()
    with pytest.raises(StoreError, match=r"^other joint kinds: joint_4 is revolute in kinded.zarr and linear in "
                                         r"this robot's spec .*; record into another dataset"):
        EpisodeStore.open_or_create(tmp_path / "kinded.zarr", arm_features(kinds=fixed))
    assert Feature.vector(JOINTS, kinds=kinds) != Feature.vector(JOINTS, kinds=fixed)
    assert Feature.vector(JOINTS, kinds=kinds) == Feature.vector(JOINTS) == Feature.vector(JOINTS, kinds=fixed)
    EpisodeStore.open_or_create(tmp_path / "kinded.zarr", arm_features()).close()  # kinds unknown: as before
    EpisodeStore.open_or_create(tmp_path / "plain.zarr", arm_features(kinds=fixed)).close()
    EpisodeStore.open_or_create(tmp_path / "kinded.zarr", arm_features(kinds=kinds)).close()

    def opened(*names: str) -> list[EpisodeStore]:
        return [EpisodeStore.open(tmp_path / f"{name}.zarr") for name in names]

    refused = r"^other joint kinds: joint_4 is revolute in kinded.zarr and linear in fixed.zarr .*cannot be merged"
    with pytest.raises(StoreError, match=refused):
        EpisodeStore.merge(opened("kinded", "fixed"), tmp_path / "kf.zarr")
    with pytest.raises(StoreError, match=refused):  # a store without kinds between them hides nothing
        EpisodeStore.merge(opened("kinded", "plain", "fixed"), tmp_path / "kpf.zarr")
    assert not (tmp_path / "kf.zarr").exists() and not (tmp_path / "kpf.zarr").exists()
    with EpisodeStore.open(tmp_path / "kinded.zarr", mode="a") as into, pytest.raises(StoreError, match=refused):
        into.append_episode_from(EpisodeStore.open(tmp_path / "fixed.zarr"), 0)
    merged = EpisodeStore.merge(opened("plain", "fixed"), tmp_path / "pf.zarr")
    assert merged.features["action"].kinds == fixed and len(merged) == 2


def test_merge_reencodes_when_codecs_differ(tmp_path):
    a = make_store(tmp_path / "a.zarr", episodes=1, length=5)
    b = make_store(tmp_path / "b.zarr", episodes=1, length=5,
                   settings=StoreSettings(image_codec="blosc-lz4", durable=False))
    merged = EpisodeStore.merge([b, a], tmp_path / "ba.zarr")
    np.testing.assert_array_equal(merged.read_episode(1)["observation.images.front"],
                                  a.read_episode(0)["observation.images.front"])
    assert merged.check() == []


@pytest.mark.bad_store
def test_check_names_a_corrupted_episode(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=5)
    store._group["data/action"][7] = np.full(6, 9.0, np.float32)  # silent bit rot in episode 1
    frame = tmp_path / "s.zarr" / "data" / "observation.images.front" / "2.0.0.0"
    frame.write_bytes(b"not a jpeg")
    problems = store.check()
    assert any(p.startswith("episode 1: action does not match") for p in problems)
    assert any("episode 0: frame 2 of observation.images.front does not decode" in p for p in problems)


def test_one_writer_at_a_time(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=1, length=3)
    with pytest.raises(StoreError, match="is open for writing in this process already"):
        EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    store.close()
    EpisodeStore.open(tmp_path / "s.zarr", mode="a").close()


@pytest.mark.bad_store
@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no dataset at"),
        (lambda p: p.mkdir(), "is not a zarr store"),
        (lambda p: (p.mkdir(), (p / ".zgroup").write_text('{"zarr_format": 2}')), "not a Shallow-π episode store"),
        (lambda p: (p.mkdir(), (p / ".zgroup").write_text("{truncated")), "is damaged"),
    ],
)
def test_bad_stores_give_one_line_errors(tmp_path, setup, message):
    path = tmp_path / "bad.zarr"
    setup(path)
    with pytest.raises(StoreError, match=message) as err:
        EpisodeStore.open(path)
    assert "\n" not in str(err.value)


@pytest.mark.bad_store
def test_truncated_metadata_is_named(tmp_path):
    make_store(tmp_path / "s.zarr", episodes=2, length=4).close()
    as_layout_1(tmp_path / "s.zarr")
    meta = tmp_path / "s.zarr" / "meta" / ".zattrs"
    episodes = json.loads(meta.read_text())["episodes"]
    episodes[0]["length"] = 99
    meta.write_text(json.dumps({"episodes": episodes}))
    with pytest.raises(StoreError, match="episode 0 has 99 frames"):
        EpisodeStore.open(tmp_path / "s.zarr")


@pytest.mark.bad_store
def test_wrong_episode_metadata_is_named_when_read(tmp_path):
    """Layout 2 reads an episode's metadata when asked for it (so opening costs the same
    at any size), and checks it against meta/episode_ends then."""
    make_store(tmp_path / "s.zarr", episodes=2, length=4).close()
    info = tmp_path / "s.zarr" / "episodes" / "0.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "length": 99}))
    store = EpisodeStore.open(tmp_path / "s.zarr")
    assert store.episode(1).length == 5
    with pytest.raises(StoreError, match="episode 0 has 99 frames") as err:
        _ = store.episodes
    assert "\n" not in str(err.value)
    info.write_text("{trunc")
    with pytest.raises(StoreError, match=r"metadata of episode 0 \(episodes/0.json\) does not read"):
        EpisodeStore.open(tmp_path / "s.zarr").episode(0)


def test_commit_rewrites_only_files_of_constant_size(tmp_path, rng):
    """The commit record does not grow with the episodes, and an episode's file is
    written once: a commit costs the same at any store size (tools/bench/store_scale.py)."""
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    sizes = []
    for _ in range(40):
        writer = store.begin_episode("t", robot="arm", calibration_id="c", fps=30)
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
        writer.commit()
        sizes.append((tmp_path / "s.zarr" / "meta" / ".zattrs").stat().st_size)
    assert max(sizes) - min(sizes) <= 2  # the counts gain a digit, nothing else grows
    first_episode = (tmp_path / "s.zarr" / "episodes" / "0.json").stat().st_mtime_ns
    store.close()
    reopened = EpisodeStore.open(tmp_path / "s.zarr")
    assert len(reopened) == 40 and reopened.num_frames == 40
    assert reopened._infos == {} and reopened._ends_loaded is None  # nothing per-episode read
    assert reopened.episode(39).index == 39
    assert (tmp_path / "s.zarr" / "episodes" / "0.json").stat().st_mtime_ns == first_episode


def test_a_writable_store_keeps_a_bounded_number_of_episodes_in_memory(tmp_path, rng, monkeypatch):
    """A recorder commits for hours into one open store: the metadata it keeps must not
    grow with the episodes (issue 10 item 17), while every episode still reads back."""
    from shallowpi.data import store as store_module

    monkeypatch.setattr(store_module, "WRITER_CACHED_EPISODES", 4)
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    for e in range(10):
        writer = store.begin_episode(f"task {e}", robot="arm", calibration_id="c", fps=30)
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
        writer.commit(success=e % 2 == 0)
        store.episode(0)  # a reader in the recording process (the disk budget reads the newest)
        assert len(store._infos) <= 4
    store.set_success(1, True)
    assert len(store._infos) <= 4
    assert [i.task for i in store.episodes] == [f"task {e}" for e in range(10)]  # read back from disk
    assert store.episode(1).success is True and len(store._infos) <= 4
    store.close()
    with EpisodeStore.open(tmp_path / "s.zarr") as reader:  # a reader caches what it reads
        assert len(reader.episodes) == 10 and len(reader._infos) == 10


def test_layout_1_stores_read_as_they_are_and_move_on_first_write(tmp_path, rng):
    make_store(tmp_path / "s.zarr", episodes=3, length=4).close()
    before = EpisodeStore.open(tmp_path / "s.zarr")
    episodes, data = before.episodes, [before.read_episode(i) for i in range(3)]
    as_layout_1(tmp_path / "s.zarr")
    old = EpisodeStore.open(tmp_path / "s.zarr")
    assert (old.layout, old.version, old.episodes) == (1, 2, episodes)
    assert old.summary.calibration_ids == ("cal-test",)
    assert not (tmp_path / "s.zarr" / "episodes").exists()  # a reader changes nothing
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a") as moved:
        assert (moved.layout, moved.version, moved.episodes) == (2, 3, episodes)
        writer = moved.begin_episode("next", robot="arm", calibration_id="cal-test", fps=30)
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
        writer.commit()
    assert "episodes" not in json.loads((tmp_path / "s.zarr" / "meta" / ".zattrs").read_text())
    after = EpisodeStore.open(tmp_path / "s.zarr")
    assert after.episodes[:3] == episodes and len(after) == 4
    for i in range(3):
        for key, value in after.read_episode(i).items():
            np.testing.assert_array_equal(value, data[i][key])
    assert after.check() == []


@pytest.mark.parametrize("fail_at", range(1, 8))
def test_a_move_to_layout_2_cut_at_any_write_loses_nothing(tmp_path, monkeypatch, fail_at):
    """Kill the move after each of its file writes (the per-episode files, the commit
    record, the header switch, the final record): the store reads whole every time, and
    the next writable open finishes the move."""
    from shallowpi.data import durable_io, store_layout1
    from shallowpi.data import store as store_module

    make_store(tmp_path / "s.zarr", episodes=4, length=3).close()
    episodes = EpisodeStore.open(tmp_path / "s.zarr").episodes
    as_layout_1(tmp_path / "s.zarr")
    real_write, writes = durable_io.write_json, []
    writers = (store_module, store_layout1)  # the modules whose writes the move makes

    def dying_write(path, value, durable, replaced=None):
        writes.append(path)
        if len(writes) == fail_at:
            raise KeyboardInterrupt  # stands in for the kill: nothing after it runs
        real_write(path, value, durable, replaced)

    for module in writers:
        monkeypatch.setattr(module, "write_json", dying_write)
    with pytest.raises(KeyboardInterrupt):
        EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    assert len(writes) == fail_at
    for module in writers:
        monkeypatch.setattr(module, "write_json", real_write)
    assert EpisodeStore.open(tmp_path / "s.zarr").episodes == episodes  # a reader, mid-move
    with EpisodeStore.open(tmp_path / "s.zarr", mode="a") as moved:
        assert moved.layout == 2 and moved.episodes == episodes
        assert moved.check() == []


def test_episodes_of_another_fps_or_calibration_are_refused(tmp_path, rng):
    store = make_store(tmp_path / "s.zarr", episodes=1, length=3)  # 30 fps, calibration cal-test
    with pytest.raises(StoreError, match=r"holds episodes at 30 fps, this episode at 15 fps; .* new dataset"):
        store.begin_episode("t", robot="arm", calibration_id="cal-test", fps=15)
    with pytest.raises(StoreError, match=r"calibration cal-test, this episode of calibration cal-new .* "
                                         r"--allow-mixed-calibration"):
        store.begin_episode("t", robot="arm", calibration_id="cal-new", fps=30)
    store.allow_mixed_calibration()
    writer = store.begin_episode("t", robot="arm", calibration_id="cal-new", fps=30)
    writer.add_frame(synthetic_frame(rng, 0), 0.0)
    writer.commit()
    with pytest.raises(StoreError, match="at 30 fps, this episode at 15 fps"):  # fps never mix
        store.begin_episode("t", robot="arm", calibration_id="cal-new", fps=15)
    store.close()
    reopened = EpisodeStore.open(tmp_path / "s.zarr", mode="a")
    assert reopened.summary.allow_mixed_calibration
    assert reopened.summary.calibration_ids == ("cal-new", "cal-test") and reopened.summary.fps == (30.0,)
    reopened.delete_episodes([0])  # a compaction keeps the permission
    assert reopened.summary.allow_mixed_calibration and reopened.summary.calibration_ids == ("cal-new",)


def test_merge_refuses_another_fps_or_calibration_unless_allowed(tmp_path, rng):
    def store_at(name, fps, calibration):
        store = EpisodeStore.create(tmp_path / name, arm_features(), StoreSettings(durable=False))
        writer = store.begin_episode("t", robot="arm", calibration_id=calibration, fps=fps)
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
        writer.commit()
        return store

    a, slow, recalibrated = store_at("a.zarr", 30, "c1"), store_at("slow.zarr", 15, "c1"), store_at("r.zarr", 30, "c2")
    with pytest.raises(StoreError, match=r"a.zarr holds episodes at 30 fps, slow.zarr at 15 fps") as err:
        EpisodeStore.merge([a, slow], tmp_path / "out.zarr")
    assert "\n" not in str(err.value)
    with pytest.raises(StoreError, match=r"a.zarr holds episodes at 30 fps, slow.zarr at 15 fps"):
        EpisodeStore.merge([a, slow], tmp_path / "out.zarr", allow_mixed_calibration=True)
    with pytest.raises(StoreError, match=r"a.zarr holds episodes of calibration c1, r.zarr of calibration c2"):
        EpisodeStore.merge([a, recalibrated], tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()
    merged = EpisodeStore.merge([a, recalibrated], tmp_path / "out.zarr", allow_mixed_calibration=True)
    assert [e.calibration_id for e in merged.episodes] == ["c1", "c2"]
    merged.close()
    assert EpisodeStore.open(tmp_path / "out.zarr").summary.allow_mixed_calibration
    # A store that allowed mixing passes the permission on to what it merges into.
    later = store_at("later.zarr", 30, "c1")
    again = EpisodeStore.merge([EpisodeStore.open(tmp_path / "out.zarr"), later], tmp_path / "again.zarr")
    assert again.summary.allow_mixed_calibration and len(again) == 3


def test_bad_frames_and_episode_indices(tmp_path, rng):
    store = make_store(tmp_path / "s.zarr", episodes=1, length=3)
    with pytest.raises(StoreError, match="has no episode 5; it has 1"):
        store.episode(5)
    writer = store.begin_episode("t")
    frame = synthetic_frame(rng, 0)
    with pytest.raises(StoreError, match="lacks action"):
        writer.add_frame({k: v for k, v in frame.items() if k != "action"}, 0.0)
    with pytest.raises(StoreError, match="has shape"):
        writer.add_frame({**frame, "action": np.zeros(7)}, 0.0)
    with pytest.raises(StoreError, match="no frames"):
        writer.commit()


@pytest.mark.parametrize("durable", [True, False])
def test_a_file_that_committed_episodes_rely_on_is_synced_before_it_is_replaced(tmp_path, rng, monkeypatch, durable):
    """zarr replaces a file by renaming an unsynced one over it; an array's .zarray (at each
    resize) and a chunk of numbers two episodes share are such files, and a power cut after
    that rename could leave them empty (the whole store unreadable, or the earlier episodes'
    numbers zeros). In a durable store each replacing file is on disk before its rename."""
    settings = StoreSettings(durable=durable, numeric_chunk_rows=64)
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), settings)
    for episode in range(2):
        watch = SyncWatch(monkeypatch) if episode else None
        writer = store.begin_episode("stack the blocks", robot="arm", calibration_id="c1", fps=30)
        for t in range(20):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit(success=True)
        monkeypatch.undo()
    store.close()
    assert watch is not None
    replaced = {r.dst.removeprefix(str((tmp_path / "s.zarr").resolve())): not r.unsynced
                for r in watch.renames if r.replaced}
    # Rows 20-39 land in chunk 0, beside episode 0's; the arrays grew; so did episode_ends.
    assert {"/data/observation.state/0.0", "/data/observation.state/.zarray", "/meta/episode_ends/0",
            "/data/observation.images.front/.zarray"} <= set(replaced)
    unsynced = sorted(name for name, was_synced in replaced.items() if not was_synced)
    assert unsynced == ([] if durable else sorted(replaced))
    assert len(EpisodeStore.open(tmp_path / "s.zarr")) == 2


@pytest.mark.parametrize("edit", ["delete", "drop the last and record it again"])
def test_a_reader_open_during_an_edit_says_so_instead_of_reading_other_rows(tmp_path, edit):
    """Training opens a store, reads numbers and episode boundaries, and reads frames as it
    samples. A `dataset delete` meanwhile swapped in a renumbered copy; a recorder's d or r
    cut the last episode and filled its rows with the next take: the reader paired the old
    numbers with the new (or missing: all-zero) frames. A reader now says so (a training
    set's loader workers too: test_training_data), at the first read after the edit (it
    looked once every 0.25 s, and read what came within that unchecked)."""
    make_store(tmp_path / "k.zarr", episodes=3, length=20).close()
    reader = EpisodeStore.open(tmp_path / "k.zarr")
    assert reader.read("observation.images.front", 40, 42).shape[0] == 2
    with EpisodeStore.open(tmp_path / "k.zarr", mode="a") as store:
        if edit == "delete":
            store.delete_episodes([0])
        else:
            store.drop_last_episode()
            writer = store.begin_episode("the take again", robot="arm", calibration_id="cal-test", fps=30)
            for t, frame in enumerate(synthetic_frame(np.random.default_rng(9), t) for t in range(22)):
                writer.add_frame(frame, t / 30.0)
            writer.commit(success=True)
    with pytest.raises(StoreError, match="was edited while this reader had it open"):
        reader.read("observation.images.front", 40, 42)
    again = EpisodeStore.open(tmp_path / "k.zarr")  # opened again, it reads the store as it is
    assert again.read("observation.images.front", 0, 2).shape[0] == 2


def test_a_reader_opening_while_a_delete_swaps_the_folder_opens_the_new_store(tmp_path, monkeypatch):
    """A delete swaps a compacted copy in with two renames. A reader that read the header of
    the old folder and the commit record of the new one held another store's stamp beside
    the new counts, and its first read failed as edited. It now sees the folder moved
    during its opening and opens again: the new store, whole."""
    make_store(tmp_path / "k.zarr", episodes=3, length=20).close()
    make_store(tmp_path / "other.zarr", episodes=2, length=5).close()
    real = EpisodeStore._read_commit_record
    swapped = []

    def swap_first(store):
        if not swapped:  # between the header's read and the commit record's: the swap
            os.replace(tmp_path / "k.zarr", tmp_path / "k.zarr.old")
            os.replace(tmp_path / "other.zarr", tmp_path / "k.zarr")
            swapped.append(True)
        real(store)

    monkeypatch.setattr(EpisodeStore, "_read_commit_record", swap_first)
    reader = EpisodeStore.open(tmp_path / "k.zarr")
    monkeypatch.undo()
    assert swapped and len(reader) == 2 and reader.num_frames == 5 + 6
    assert reader.read("observation.state", 0, 3).shape == (3, 6)  # not refused as edited
    with EpisodeStore.open(tmp_path / "k.zarr") as fresh:
        assert reader.identity == fresh.identity


@pytest.mark.bad_store
def test_a_store_written_with_settings_this_version_lacks_says_to_upgrade(tmp_path):
    """A store a newer shallowpi wrote, with a settings key this one does not know, read as
    "damaged" (a TypeError from the settings' constructor)."""
    path = tmp_path / "new.zarr"
    make_store(path, episodes=1, length=4).close()
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["shallowpi"]["settings"]["video_codec"] = "av1"
    (path / ".zattrs").write_text(json.dumps(attrs))
    with pytest.raises(StoreError, match=r"written with store settings this shallowpi does not know \(video_codec\): "
                                         r"a newer version wrote it; upgrade shallowpi"):
        EpisodeStore.open(path)
