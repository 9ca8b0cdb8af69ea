"""shallowpi used as a library, from a researcher's script or notebook: what the CLI never
does (a buffer refilled every frame, numpy values, a store dropped unclosed, a script with
no main guard) must work, and importing or calling shallowpi must leave the process's
global state (zarr's config, the hub's offline mode) as the program had it."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.store import StoreSettings
from shallowpi.errors import StoreError
from store_fixtures import arm_features, make_store, synthetic_frame


def _features() -> dict[str, Feature]:
    return {"observation.state": Feature.vector([f"j{i}" for i in range(3)]),
            "action": Feature.vector([f"j{i}" for i in range(3)]),
            "observation.images.front": Feature.image(8, 8)}


# --- the writer keeps copies of what it is given ----------------------------------------


def test_a_buffer_refilled_every_frame_is_stored_frame_by_frame(tmp_path):
    """A loop that refills one preallocated buffer per frame stored its last value in
    every row the writer still held: 40 frames read back as 1 distinct state row and 2
    distinct images (the writer held the caller's arrays until the commit, or the batch)."""
    frames = 40
    state, image = np.zeros(3, np.float32), np.zeros((8, 8, 3), np.uint8)
    with EpisodeStore.create(tmp_path / "s.zarr", _features(), StoreSettings(durable=False)) as store:
        writer = store.begin_episode("reach", robot="arm", fps=30)
        for t in range(frames):
            state[:] = t  # the same arrays, refilled in place
            image[:] = t
            writer.add_frame({"observation.state": state, "action": state, "observation.images.front": image},
                             t / 30.0)
        writer.commit()
        episode = store.read_episode(0)
    np.testing.assert_array_equal(episode["observation.state"][:, 0], np.arange(frames))
    np.testing.assert_array_equal(episode["action"][:, 0], np.arange(frames))
    # JPEG is lossy, but a flat frame's mean is its value.
    means = episode["observation.images.front"].reshape(frames, -1).mean(axis=1)
    np.testing.assert_allclose(means, np.arange(frames), atol=2)


# --- numpy values in an episode's metadata ------------------------------------------------


def test_numpy_success_marks_and_extras_are_stored_as_json(tmp_path):
    """`commit(success=np.bool_(True), extra={"seed": np.int64(7)})` and `set_success` with
    a numpy bool raised a bare TypeError from json, the writer left open."""
    with make_store(tmp_path / "s.zarr", episodes=1, length=5) as store:
        writer = store.begin_episode("reach", robot="arm", fps=30)
        rng = np.random.default_rng(0)
        for t in range(4):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        info = writer.commit(success=np.bool_(True), extra={"seed": np.int64(7), "gain": np.float32(0.5),
                                                            "ids": (np.int32(1), 2)})
        assert info.success is True and info.extra == {"seed": 7, "gain": 0.5, "ids": [1, 2]}
        store.set_success(1, np.bool_(False))
    on_disk = json.loads((tmp_path / "s.zarr" / "episodes" / "1.json").read_text())
    assert on_disk["success"] is False and on_disk["extra"] == {"seed": 7, "gain": 0.5, "ids": [1, 2]}
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        assert store.episode(1).success is False and store.episode(1).extra["seed"] == 7


def test_an_extra_json_cannot_hold_is_refused_before_anything_is_written(tmp_path):
    with make_store(tmp_path / "s.zarr", episodes=1, length=5) as store:
        frames = store.num_frames
        writer = store.begin_episode("reach", robot="arm", fps=30)
        rng = np.random.default_rng(0)
        for t in range(4):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        with pytest.raises(StoreError, match=r"^the episode's extra cannot be stored as JSON: .*set") as caught:
            writer.commit(extra={"cubes": {1, 2}})
        assert "\n" not in str(caught.value)
        with pytest.raises(StoreError, match=r"^success must be True, False or None"):
            writer.commit(success="no")
        assert writer.is_open and len(store) == 1 and store.num_frames == frames  # nothing written
        writer.commit(success=True, extra={"cubes": [1, 2]})  # the writer goes on
        assert len(store) == 2


# --- a store dropped unclosed lets go of its writer lock ----------------------------------


@pytest.mark.parametrize("opener", ["open", "create", "open_or_create"])
def test_a_writable_store_dropped_unclosed_releases_its_lock_as_a_crash_would(tmp_path, opener):
    """`s = EpisodeStore.open(p, "a"); del s` kept the lock until the kernel restarted:
    a recorder, `record --resume` or `dataset delete` was refused ("being written by pid
    N"). Released as an unclean close is: the pid stays in the lock file, and the next
    writer cuts the episode left half-written."""
    path = tmp_path / "s.zarr"
    features = arm_features()
    if opener == "create":
        store = EpisodeStore.create(path, features, StoreSettings(durable=False, image_batch=2))
    else:
        make_store(path, episodes=1, length=5, settings=StoreSettings(durable=False, image_batch=2)).close()
        store = (EpisodeStore.open(path, "a") if opener == "open"
                 else EpisodeStore.open_or_create(path, features, StoreSettings(durable=False, image_batch=2)))
    committed = store.num_frames
    writer = store.begin_episode("reach", robot="arm", fps=30)
    rng = np.random.default_rng(0)
    for t in range(5):  # frames of two batches on disk, never committed
        writer.add_frame(synthetic_frame(rng, t), t / 30.0)
    del store, writer
    gc.collect()
    assert (path / ".shallowpi.lock").read_text() == f"pid {os.getpid()}"  # not a clean close
    with EpisodeStore.open(path, "a") as again:  # refused before: "being written by pid N"
        assert again.num_frames == committed
        assert again._array("data/observation.images.front").shape[0] == committed  # the tail cut
    assert (path / ".shallowpi.lock").read_text() == ""  # this one closed as it should


def test_a_store_keeps_its_lock_across_a_delete_until_it_is_closed_or_dropped(tmp_path):
    """A delete hands the lock from the store's old folder to its compacted copy (a new
    store object inside): the store keeps holding it, and lets go when dropped."""
    path = tmp_path / "s.zarr"
    store = make_store(path, episodes=3, length=5)
    store.delete_episodes([0])
    gc.collect()
    with pytest.raises(StoreError, match="is open for writing in this process already"):
        EpisodeStore.open(path, "a")
    del store
    gc.collect()
    EpisodeStore.open(path, "a").close()


# --- a training sample is the caller's to change ------------------------------------------


def test_changing_a_sample_in_place_changes_no_other_dataset(tmp_path):
    """`ChunkDataset[i]["observation.state"]` was a view of the numbers every dataset of
    the store shares in the process: `x -= mean` rewrote the held-out set and the stats."""
    from shallowpi.data.training import ChunkDataset

    make_store(tmp_path / "s.zarr", episodes=3, length=6).close()
    train = ChunkDataset(tmp_path / "s.zarr", chunk_len=4, episodes=[0, 1])
    held_out = ChunkDataset(tmp_path / "s.zarr", chunk_len=4, episodes=[0, 2])
    before, stats = held_out[0]["observation.state"].clone(), train.stats()
    sample = train[0]
    sample["observation.state"] -= 100.0
    sample["action"] -= 100.0
    assert np.array_equal(held_out[0]["observation.state"].numpy(), before.numpy())
    assert np.array_equal(train[0]["observation.state"].numpy(), before.numpy())
    np.testing.assert_array_equal(train.stats()["observation.state"]["mean"], stats["observation.state"]["mean"])


# --- zarr's global config is the program's ------------------------------------------------


def test_importing_shallowpi_leaves_zarrs_global_config_alone():
    from conftest import subprocess_env

    code = ("import zarr; before = dict(zarr.config.get('array')); import shallowpi.data, shallowpi.data.store; "
            "after = dict(zarr.config.get('array')); assert after == before, (before, after); print('same')")
    done = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "same", done.stderr


def test_an_all_zero_chunk_of_numbers_is_written_whatever_zarrs_global_config(tmp_path):
    """What the global setting was for: a chunk of numbers equal to the fill value (a robot
    at rest at its zero pose) must be a file, or the store reads as damaged."""
    zarr = pytest.importorskip("zarr")
    if int(zarr.__version__.split(".")[0]) < 3:
        pytest.skip("zarr 2 writes every chunk")
    from shallowpi.data.store_files import require_intact

    zeros = np.zeros(3, np.float32)
    with zarr.config.set({"array.write_empty_chunks": False}):  # zarr 3's default, as a program has it
        with EpisodeStore.create(tmp_path / "s.zarr", _features(), StoreSettings(durable=False)) as store:
            writer = store.begin_episode("rest", robot="arm", fps=30)
            for t in range(5):
                writer.add_frame({"observation.state": zeros, "action": zeros,
                                  "observation.images.front": np.full((8, 8, 3), 9, np.uint8)}, t / 30.0)
            writer.commit()
        assert zarr.config.get("array.write_empty_chunks") is False
    assert (tmp_path / "s.zarr" / "data" / "observation.state" / "0.0").is_file()
    assert (tmp_path / "s.zarr" / "data" / "action" / "0.0").is_file()
    with EpisodeStore.open(tmp_path / "s.zarr") as store:
        require_intact(store)


# --- lerobot: offline only while it works, and encoders from a plain script ---------------


@pytest.mark.lerobot
def test_the_hub_is_offline_only_while_lerobot_works():
    """`_import_lerobot` set HF_HUB_OFFLINE=1 for the whole process: nothing once
    huggingface_hub was imported (it reads the variable at import), else the rest of a
    notebook offline."""
    pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
    from conftest import subprocess_env

    code = textwrap.dedent("""
        import os
        import datasets.config
        from huggingface_hub import constants
        from shallowpi.data.lerobot_interop import _import_lerobot, _quiet_datasets

        _import_lerobot()
        assert "HF_HUB_OFFLINE" not in os.environ, os.environ.get("HF_HUB_OFFLINE")
        assert not constants.is_offline_mode() and not datasets.config.HF_HUB_OFFLINE
        with _quiet_datasets():  # every use of lerobot's datasets is inside it
            assert constants.is_offline_mode() and datasets.config.HF_HUB_OFFLINE
            assert os.environ["HF_HUB_OFFLINE"] == "1"  # for the processes lerobot starts
        assert not constants.is_offline_mode() and not datasets.config.HF_HUB_OFFLINE
        assert "HF_HUB_OFFLINE" not in os.environ
        print("ok")
    """)
    env = subprocess_env()
    del env["HF_HUB_OFFLINE"]
    env.pop("TRANSFORMERS_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]


@pytest.mark.lerobot
@pytest.mark.slow
def test_export_from_a_script_without_a_main_guard(tmp_path):
    """A script calling `export_lerobot` at its top level: every child (spawned by
    multiprocessing, which imports the parent's `__main__` again) ran the script anew and
    exited with status 1, cached as each encoder's refusal: "no video encoder takes its
    camera sizes ... record at an even width and height of at least 32x32" for 64x64."""
    pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
    from conftest import subprocess_env

    script = tmp_path / "export_it.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np
        from shallowpi.data import EpisodeStore, Feature
        from shallowpi.data.lerobot_export import export_lerobot
        from shallowpi.data.store import StoreSettings

        joints = Feature.vector(["a", "b"])
        features = {{"observation.state": joints, "action": joints,
                     "observation.images.front": Feature.image(64, 64)}}
        with EpisodeStore.create({str(tmp_path / "s.zarr")!r}, features, StoreSettings(durable=False)) as store:
            writer = store.begin_episode("reach", robot="arm", fps=30)
            for t in range(3):
                image = np.full((64, 64, 3), 40 * t, np.uint8)
                writer.add_frame({{"observation.state": np.full(2, t, np.float32),
                                   "action": np.full(2, t, np.float32), "observation.images.front": image}}, t / 30)
            writer.commit()
        export_lerobot({str(tmp_path / "s.zarr")!r}, {str(tmp_path / "lr")!r})
        print("exported")
    """))
    done = subprocess.run([sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("exported") == 1  # the script ran once: no child ran it again
    assert (tmp_path / "lr" / "meta" / "info.json").is_file()


@pytest.mark.lerobot
def test_an_encoder_probe_killed_from_outside_is_said_and_never_cached(tmp_path, monkeypatch):
    """A probe's child killed (the OOM killer's SIGKILL) was cached as the encoder's refusal
    of that size for the life of the process: AV1 given up for H.264 at every export."""
    pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
    import psutil

    from shallowpi.data import lerobot_export
    from shallowpi.data.isolated import ChildCrashed

    monkeypatch.setattr(lerobot_export, "_refusals", {})
    path = tmp_path / "s.zarr"
    with EpisodeStore.create(path, {"observation.images.front": Feature.image(64, 64)},
                             StoreSettings(durable=False)):
        pass
    me, killed = psutil.Process(), []

    def kill_the_first_child() -> None:
        # The probe's child only: an earlier test's forkserver or resource tracker may be a
        # child of this process too.
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            for child in me.children():
                with contextlib.suppress(psutil.Error):
                    if "shallowpi.data.isolated" in " ".join(child.cmdline()):
                        child.kill()
                        killed.append(child.pid)
                        return
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_the_first_child)
    watcher.start()
    try:
        with EpisodeStore.open(path) as store, pytest.raises(ChildCrashed) as caught:
            lerobot_export.choose_video_codec(store)
    finally:
        watcher.join()
    assert killed
    assert str(caught.value) == ("checking the libsvtav1 video encoder at 64x64 for s.zarr crashed (SIGKILL); "
                                 "nothing was exported: run it again, and report it if it repeats")
    assert lerobot_export._refusals == {}
    with EpisodeStore.open(path) as store:
        assert lerobot_export.choose_video_codec(store) == "libsvtav1"  # asked again, not remembered


def test_an_episode_marked_1_by_an_older_script_survives_a_delete(tmp_path):
    """A script's `commit(success=1)` was stored as 1 by older versions; a delete or merge
    copies each episode through commit, which took only bools and refused the store."""
    with make_store(tmp_path / "s.zarr", episodes=3, length=5) as store:
        meta = tmp_path / "s.zarr" / "episodes" / "2.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "success": 1}))
    with EpisodeStore.open(tmp_path / "s.zarr", "a") as store:
        store.delete_episodes([0])
        assert len(store) == 2 and store.episode(1).success is True


def test_modes_given_after_a_library_write_keep_a_shared_folders_setgid_bit(tmp_path):
    """give_umask_modes set each folder's mode outright: a lab's setgid 2775 export or
    checkpoint came out 0775, and what members wrote into it later lost the lab's group."""
    from shallowpi.durable_files import give_umask_modes

    top = tmp_path / "export"
    (top / "videos").mkdir(parents=True)
    (top / "videos" / "a.mp4").write_bytes(b"")
    for folder in (top, top / "videos"):
        folder.chmod(0o2700)
    (top / "videos" / "a.mp4").chmod(0o600)
    previous = os.umask(0o002)
    try:
        give_umask_modes(top)
    finally:
        os.umask(previous)
    assert {p.name: oct(p.stat().st_mode & 0o7777) for p in (top, top / "videos", top / "videos" / "a.mp4")} == {
        "export": "0o2775", "videos": "0o2775", "a.mp4": "0o664"}
