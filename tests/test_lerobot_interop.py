"""Export to and import from LeRobotDataset, checked with lerobot's own loader, offline."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from shallowpi.data import EpisodeStore
from shallowpi.data.lerobot_interop import STAGING_SUFFIX
from shallowpi.errors import PlatformError
from store_fixtures import make_store

# Before anything imports huggingface_hub, which reads it once: nothing may come from a hub.
os.environ["HF_HUB_OFFLINE"] = "1"
pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
pytestmark = pytest.mark.lerobot

REPO_ID = "local/interop-test"
CAMERAS = ("observation.images.front", "observation.images.wrist")
# AV1 at lerobot's default quality on top of the store's JPEG, on 24x32 test frames.
MAX_IMAGE_MEAN_ABS_ERROR = 6.0


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A 3-episode store and its export, made once for the module (video encoding is
    the slow part)."""
    from shallowpi.data.lerobot_export import export_lerobot

    root = tmp_path_factory.mktemp("interop")
    make_store(root / "src.zarr", episodes=3, length=8).close()
    calls: list[tuple[int, int]] = []
    out = export_lerobot(root / "src.zarr", root / "lerobot", repo_id=REPO_ID,
                         progress=lambda done, total: calls.append((done, total)))
    return root, out, calls


def _load_with_lerobot(root):
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset(REPO_ID, root=root, video_backend="pyav")


def test_lerobot_loads_the_export_frame_for_frame(exported):
    root, out, _ = exported
    source = EpisodeStore.open(root / "src.zarr")
    dataset = _load_with_lerobot(out)
    assert dataset.num_episodes == len(source) == 3
    assert len(dataset) == source.num_frames == 8 + 9 + 10
    assert dataset.fps == 30
    assert dataset.meta.features["observation.state"]["names"] == list(source.features["observation.state"].names)
    assert dataset.meta.robot_type == "arm"

    row = 0
    for info in source.episodes:
        episode = source.read_episode(info.index)
        for frame in range(info.length):
            item = dataset[row]
            assert int(item["episode_index"]) == info.index
            assert int(item["frame_index"]) == frame
            assert item["task"] == info.task
            np.testing.assert_array_equal(item["observation.state"].numpy(), episode["observation.state"][frame])
            np.testing.assert_array_equal(item["action"].numpy(), episode["action"][frame])
            for key in CAMERAS:
                image = item[key].numpy()  # float CHW in [0, 1]
                assert image.shape == (3, 24, 32)
                error = np.abs(image.transpose(1, 2, 0) * 255.0 - episode[key][frame]).mean()
                assert error < MAX_IMAGE_MEAN_ABS_ERROR, (key, row, error)
            row += 1


def test_success_marks_leave_as_lerobots_next_success(exported):
    """The fixture's episodes are marked successful, failed, successful: lerobot's own
    success column says so on each episode's last frame and nowhere else."""
    root, out, _ = exported
    source = EpisodeStore.open(root / "src.zarr")
    assert [e.success for e in source.episodes] == [True, False, True]
    dataset = _load_with_lerobot(out)
    assert dataset.meta.features["next.success"]["dtype"] == "bool"
    column = np.asarray(dataset.hf_dataset.with_format("numpy")["next.success"]).reshape(-1)
    last_rows = np.cumsum([e.length for e in source.episodes]) - 1
    assert np.flatnonzero(column).tolist() == [last_rows[0], last_rows[2]]


def test_progress_counts_every_frame(exported):
    _, _, calls = exported
    assert calls[0] == (0, 27) and calls[-1] == (27, 27)
    assert [done for done, _ in calls] == list(range(28))


def test_every_exported_file_gets_the_umask_s_mode(exported):
    """lerobot encodes each video into a NamedTemporaryFile (0600) and moves it in: an
    export's videos were the user's alone while its other files had the umask's mode (664
    in a lab's group-shared folder under umask 002)."""
    _, out, _ = exported
    mask = os.umask(0o022)
    os.umask(mask)
    assert list(out.rglob("*.mp4"))
    modes = {str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert {name: oct(mode) for name, mode in modes.items()
            if mode != (0o777 if (out / name).is_dir() else 0o666) & ~mask} == {}


def test_import_brings_the_export_back(exported, tmp_path):
    from shallowpi.data.lerobot_import import import_lerobot

    root, out, _ = exported
    calls: list[tuple[int, int]] = []
    back_path = import_lerobot(out, tmp_path / "back.zarr", repo_id=REPO_ID,
                               progress=lambda done, total: calls.append((done, total)))
    source = EpisodeStore.open(root / "src.zarr")
    back = EpisodeStore.open(back_path)
    assert back.check() == []
    assert calls[-1] == (27, 27)
    assert back.features == source.features
    assert len(back) == len(source)
    for info, got in zip(source.episodes, back.episodes):
        assert (got.length, got.task, got.robot, got.fps, got.success) == (
            info.length, info.task, info.robot, info.fps, info.success)
        # LeRobot keeps no count of the frames its cameras lost: not counted, not 0.
        assert got.dropped_frames is None and got.dropped_summary == "dropped camera frames not counted"
        want_rows, got_rows = source.read_episode(info.index), back.read_episode(got.index)
        for key in ("observation.state", "action"):
            np.testing.assert_array_equal(got_rows[key], want_rows[key])
        np.testing.assert_allclose(got_rows["timestamp"], np.arange(info.length) / 30, atol=1e-6)
        for key in CAMERAS:
            # Three lossy passes now: store JPEG, AV1, store JPEG again.
            error = np.abs(got_rows[key].astype(float) - want_rows[key]).mean()
            assert error < MAX_IMAGE_MEAN_ABS_ERROR + 2, (key, error)


def test_dataset_import_takes_the_store_settings_it_is_given(exported, tmp_path):
    """`platform dataset import ... store.image_codec=blosc-zstd` composed and then wrote
    JPEG at quality 90: import never passed the store.* settings on (record does)."""
    from shallowpi.cli import main

    _, out, _ = exported
    assert main(["dataset", "import", str(out), "--out", str(tmp_path / "lossless"), "--repo-id", REPO_ID,
                 "store.image_codec=blosc-zstd"]) == 0
    with EpisodeStore.open(tmp_path / "lossless.zarr") as store:
        assert store.settings.image_codec == "blosc-zstd"


def test_what_lerobot_cannot_read_and_an_odd_destination_are_one_line(tmp_path, monkeypatch):
    """lerobot's FrameTimestampError spans many lines and reached the terminal as a
    traceback; `export .` failed on an empty name. A store without observation.state (an
    import of a dataset without one) has no joint units, rather than a KeyError."""
    from types import SimpleNamespace

    from shallowpi.commands.dataset_cmd import joint_units
    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_import import _item

    class Late:
        def __getitem__(self, index):
            raise ValueError("One or several query timestamps unexpectedly violate the tolerance\n(details...)")

    with pytest.raises(PlatformError) as late:
        _item(Late(), 17)
    assert str(late.value) == ("lerobot cannot read row 17 of the dataset: ValueError: One or several query "
                               "timestamps unexpectedly violate the tolerance")
    make_store(tmp_path / "s.zarr", episodes=1, length=4).close()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PlatformError, match="not the working folder itself"):
        export_lerobot(tmp_path / "s.zarr", tmp_path / ".")
    assert joint_units(SimpleNamespace(features={}), "arm") == {}


def test_export_refuses_an_occupied_directory_in_one_line(exported, tmp_path):
    from shallowpi.data.lerobot_export import export_lerobot

    root, out, _ = exported
    with pytest.raises(PlatformError, match="already exists") as caught:
        export_lerobot(root / "src.zarr", out)
    assert "\n" not in str(caught.value)
    assert not (out.parent / (out.name + STAGING_SUFFIX)).exists()


def test_import_of_missing_or_foreign_directories_is_one_line(tmp_path):
    from shallowpi.data.lerobot_import import import_lerobot

    with pytest.raises(PlatformError, match="no LeRobot dataset at") as missing:
        import_lerobot(tmp_path / "nowhere", tmp_path / "a.zarr")
    foreign = tmp_path / "photos"
    (foreign / "meta").mkdir(parents=True)
    with pytest.raises(PlatformError, match="not a LeRobotDataset") as not_lerobot:
        import_lerobot(foreign, tmp_path / "b.zarr")
    (foreign / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0"}))
    with pytest.raises(PlatformError, match="could not be read as a LeRobotDataset") as broken:
        import_lerobot(foreign, tmp_path / "c.zarr")
    for caught in (missing, not_lerobot, broken):
        assert "\n" not in str(caught.value)
    assert not any(p.name.endswith((".zarr", STAGING_SUFFIX)) for p in tmp_path.iterdir())


@pytest.mark.parametrize("missing", [
    "data/chunk-000/file-000.parquet",
    "videos/observation.images.wrist/chunk-000/file-000.mp4",
    "meta/episodes/chunk-000/file-000.parquet",
    "meta/tasks.parquet",
], ids=["data", "video", "episodes-index", "tasks"])
def test_an_incomplete_copy_names_its_first_missing_file(exported, tmp_path, missing):
    """A copy an interrupted rsync left without a file: lerobot went to the hub for it and,
    offline (as the platform always is), said "unset HF_HUB_OFFLINE", the wrong advice."""
    import shutil

    from shallowpi.data.lerobot_import import import_lerobot

    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / missing).unlink()
    with pytest.raises(PlatformError) as caught:
        import_lerobot(copy, tmp_path / "back.zarr", repo_id=REPO_ID)
    named = "meta/episodes/ (the episodes index)" if missing.startswith("meta/episodes") else missing
    assert str(caught.value) == f"files missing under {copy} (an incomplete copy?): {named}; copy the dataset again"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]


def test_an_index_file_cut_short_and_lerobots_own_hub_call_are_said_as_an_incomplete_copy(exported, tmp_path):
    """An episodes index cut short by the copy is named; and should lerobot still find a
    file missing that the check does not know (its hub call, refused offline), the error
    says files are missing, not "unset HF_HUB_OFFLINE"."""
    import shutil

    from shallowpi.data.lerobot_import import import_lerobot

    _, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    index = copy / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
    whole = index.read_bytes()
    index.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(PlatformError, match=rf"^{index} does not read \(\w+\): an incomplete copy of {copy}\? "):
        import_lerobot(copy, tmp_path / "back.zarr", repo_id=REPO_ID)
    index.write_bytes(whole)
    info = json.loads((copy / "meta" / "info.json").read_text())
    # A template of fields the episodes index does not hold: the check leaves its files to lerobot.
    (copy / "meta" / "info.json").write_text(json.dumps({**info, "data_path": "data/{episode_chunk}.parquet"}))
    (copy / "data" / "chunk-000" / "file-000.parquet").unlink()
    with pytest.raises(PlatformError) as caught:
        import_lerobot(copy, tmp_path / "back.zarr", repo_id=REPO_ID)
    assert str(caught.value).startswith(f"files missing under {copy} (an incomplete copy?): lerobot found")
    assert "HF_HUB_OFFLINE" not in str(caught.value)


def test_an_export_into_a_store_folder_is_refused(exported, tmp_path):
    """Made inside a store's folder, an export is what that store's next delete rewrote around."""
    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.errors import StoreError

    root, _, _ = exported
    before = sorted(p.name for p in (root / "src.zarr").iterdir())
    with pytest.raises(StoreError, match=r"src\.zarr/lerobot is inside the dataset .*put the export directory "):
        export_lerobot(root / "src.zarr", root / "src.zarr" / "lerobot")
    assert sorted(p.name for p in (root / "src.zarr").iterdir()) == before


def test_a_store_is_not_a_lerobot_dataset(exported, tmp_path):
    from shallowpi.data.lerobot_import import import_lerobot

    root, _, _ = exported
    with pytest.raises(PlatformError, match="not a LeRobotDataset"):
        import_lerobot(root / "src.zarr", tmp_path / "x.zarr")


def test_export_of_a_foreign_store_is_one_line(tmp_path):
    from shallowpi.data.lerobot_export import export_lerobot

    with pytest.raises(PlatformError, match="no dataset at"):
        export_lerobot(tmp_path / "missing.zarr", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_import_keeps_a_float64_feature_bit_exact(tmp_path):
    """The parquet keeps doubles, but lerobot's item transform makes every value a float32
    tensor: imported through it, a float64 feature kept its dtype and lost its precision
    (1e-8 off). Numbers are read from the columns themselves."""
    from shallowpi.data.features import Feature
    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_import import import_lerobot

    features = {"observation.state": Feature("float64", (3,), names=("a", "b", "c")),
                "action": Feature("float32", (3,), names=("a", "b", "c"))}
    rng = np.random.default_rng(0)
    with EpisodeStore.create(tmp_path / "f64.zarr", features) as store:
        writer = store.begin_episode("hold", robot="arm", fps=30)
        for t in range(5):
            writer.add_frame({"observation.state": 1 / 3 + 1e-9 * rng.standard_normal(3),
                              "action": rng.standard_normal(3).astype(np.float32)}, t / 30)
        writer.commit()
    export_lerobot(tmp_path / "f64.zarr", tmp_path / "lerobot", repo_id=REPO_ID)
    import_lerobot(tmp_path / "lerobot", tmp_path / "back.zarr", repo_id=REPO_ID)
    with EpisodeStore.open(tmp_path / "f64.zarr") as source, EpisodeStore.open(tmp_path / "back.zarr") as back:
        assert back.features["observation.state"].dtype == "float64"
        for key in features:
            np.testing.assert_array_equal(back.read_episode(0)[key], source.read_episode(0)[key])


@pytest.mark.bad_store  # NaN on purpose
def test_export_refuses_numbers_that_would_make_lerobots_statistics_nan(tmp_path):
    """lerobot averages every frame into meta/stats.json: one NaN action made its action
    mean NaN, and every normalised sample with it. The store records such rows at commit;
    export names them, as `train` refuses them, and writes nothing."""
    from shallowpi.data.lerobot_export import export_lerobot
    from store_fixtures import arm_features, synthetic_frame

    store = EpisodeStore.create(tmp_path / "nan.zarr", arm_features())
    rng = np.random.default_rng(0)
    for e in range(2):
        writer = store.begin_episode("wave", robot="arm", fps=30)
        for t in range(6):
            frame = synthetic_frame(rng, t)
            if e == 1 and t in (3, 4):
                frame["action"] = np.full_like(frame["action"], np.nan)
            writer.add_frame(frame, t / 30.0)
        writer.commit()
    store.close()
    with pytest.raises(PlatformError, match=r"^nan.zarr episode 1: action holds NaN/inf at rows 3-4; lerobot's "
                                            r"statistics would be NaN: delete it first \(`platform dataset delete "):
        export_lerobot(tmp_path / "nan.zarr", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # A store whose episodes predate that record (committed without it): the arrays are read.
    meta = tmp_path / "nan.zarr" / "episodes" / "1.json"
    info = json.loads(meta.read_text())
    assert info["nonfinite"]
    meta.write_text(json.dumps({**info, "nonfinite": {}}))
    with pytest.raises(PlatformError, match=r"^nan.zarr episode 1: action holds NaN/inf at rows 3-4"):
        export_lerobot(tmp_path / "nan.zarr", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_lerobot_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_interop import LerobotMissingError

    make_store(tmp_path / "s.zarr", episodes=1, length=2).close()
    monkeypatch.setitem(sys.modules, "lerobot.datasets.lerobot_dataset", None)  # import fails
    with pytest.raises(LerobotMissingError, match=r"pip install -e '\.\[lerobot\]' on Python >= 3\.12") as caught:
        export_lerobot(tmp_path / "s.zarr", tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def _store_of_size(path, height: int, width: int, episodes: int = 2, length: int = 5):
    from shallowpi.data.store import StoreSettings
    from store_fixtures import arm_features, synthetic_frame

    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, arm_features(height, width), StoreSettings(durable=False))
    for e in range(episodes):
        writer = store.begin_episode("tiny", robot="arm", fps=30)
        for t in range(length + e):
            writer.add_frame(synthetic_frame(rng, t, height, width), t / 30.0)
        writer.commit()
    store.close()
    return path


def test_cameras_too_small_for_av1_are_exported_as_h264(tmp_path):
    """16x16 made SVT-AV1 die of SIGFPE (exit 136, a .partial left); H.264 takes it."""
    from shallowpi.data.lerobot_export import export_lerobot

    _store_of_size(tmp_path / "tiny.zarr", 16, 16)
    out = export_lerobot(tmp_path / "tiny.zarr", tmp_path / "lr", repo_id=REPO_ID)
    info = json.loads((out / "meta" / "info.json").read_text())
    assert info["features"]["observation.images.front"]["info"]["video.codec"] == "h264"
    assert "next.success" not in info["features"]  # no episode is marked: no column claims they failed
    source, dataset = EpisodeStore.open(tmp_path / "tiny.zarr"), _load_with_lerobot(out)
    assert len(dataset) == source.num_frames == 11
    for row in range(len(dataset)):
        image = dataset[row]["observation.images.front"].numpy().transpose(1, 2, 0) * 255.0
        assert np.abs(image - source.read("observation.images.front", row, row + 1)[0]).mean() < 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr", "tiny.zarr"]


def test_unmarked_episodes_beside_marked_ones_leave_as_failed_with_a_warning(tmp_path, caplog):
    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_import import import_lerobot

    with make_store(tmp_path / "mixed.zarr", episodes=3, length=4) as store:
        store.set_success(1, None)
    with caplog.at_level("WARNING", logger="shallowpi"):
        export_lerobot(tmp_path / "mixed.zarr", tmp_path / "lr", repo_id=REPO_ID)
    assert "1 of 3 episodes have no success mark (1)" in caplog.text
    back = EpisodeStore.open(import_lerobot(tmp_path / "lr", tmp_path / "back.zarr", repo_id=REPO_ID))
    assert [e.success for e in back.episodes] == [True, False, True]


def test_sizes_no_encoder_takes_are_refused_in_one_line(tmp_path):
    from shallowpi.data.lerobot_export import export_lerobot

    _store_of_size(tmp_path / "odd.zarr", 15, 15)  # AV1: SIGFPE; H.264: odd sizes refused
    with pytest.raises(PlatformError, match=r"no video encoder takes its camera sizes \(libsvtav1: "
                                            r"observation\.images\.front 15x15: crashed \(SIGFPE\); h264: observation\.images\.front 15x15: "
                                            r"refuses this size\); record at") as caught:
        export_lerobot(tmp_path / "odd.zarr", tmp_path / "lr")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.zarr"]


def test_an_encoder_crash_mid_export_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """The crash itself, unprevented: force AV1 on 16x16 frames. The child dies of SIGFPE
    inside SVT-AV1; the command gets one line and no .partial folder."""
    from shallowpi.data import lerobot_export
    from shallowpi.data.isolated import ChildCrashed

    _store_of_size(tmp_path / "tiny.zarr", 16, 16)
    monkeypatch.setattr(lerobot_export, "choose_video_codec", lambda store: "libsvtav1")
    with pytest.raises(ChildCrashed, match=r"exporting tiny\.zarr \(libsvtav1 video encoder\) crashed \(SIGFPE\)") as caught:
        lerobot_export.export_lerobot(tmp_path / "tiny.zarr", tmp_path / "lr")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.zarr"]


def test_a_child_killed_by_a_signal_is_one_line():
    import signal

    from native_crash import die_of
    from shallowpi.data.isolated import ChildCrashed, run_isolated

    seen: list[tuple[int, int]] = []
    with pytest.raises(ChildCrashed, match=r"^the test work crashed \(SIGSEGV\)$"):
        run_isolated(die_of, signal.SIGSEGV, what="the test work", progress=lambda *p: seen.append(p))
    assert seen == [(1, 2)]


def test_sigterm_to_the_export_ends_its_encoder_child_too(tmp_path):
    """`platform dataset export` died of SIGTERM at once (exit -15, no line) and its encoder
    child, orphaned, kept encoding into a folder nobody would use (~12 s). Now the command
    says "interrupted" and ends the child before it exits."""
    import signal
    import subprocess
    import time

    import psutil

    from conftest import platform_cmd, subprocess_env

    make_store(tmp_path / "s.zarr", episodes=3, length=20).close()
    proc = subprocess.Popen(platform_cmd("dataset", "export", str(tmp_path / "s.zarr"), str(tmp_path / "lr"),
                                         "--to", "lerobot"),
                            env=subprocess_env(HF_HUB_OFFLINE="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    parent, children = psutil.Process(proc.pid), []
    deadline = time.monotonic() + 120
    while not children and time.monotonic() < deadline and proc.poll() is None:
        children = [c for c in parent.children() if "shallowpi.data.isolated" in " ".join(c.cmdline())]
        time.sleep(0.01)
    assert children, "the export never started its child"
    proc.send_signal(signal.SIGTERM)  # the parent alone: a `kill PID`, a service manager's stop
    proc.wait(timeout=120)
    # At once: the command ends its child before it exits (an orphan dies only when it next
    # reports progress to the parent gone, seconds later).
    running = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]  # a zombie is dead
    for child in running:  # not left behind by a failing run
        child.kill()
    err = proc.stderr.read()  # after the child's end: it writes to the same stderr
    assert not running, "the encoder child outlived the command"
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing half-written left


def _drop_last_frame(video, into):
    """Re-mux `video` without its last frame: what a frame-dropping encoder leaves."""
    import av

    with av.open(str(video)) as source:
        packets = [p for p in source.demux(source.streams.video[0]) if p.dts is not None]
        with av.open(str(into), "w", format="mp4") as sink:
            stream = sink.add_stream_from_template(template=source.streams.video[0], opaque=True)
            stream.time_base = source.streams.video[0].time_base
            for packet in packets[:-1]:
                packet.stream = stream
                sink.mux(packet)


def test_verification_refuses_a_video_one_frame_short(exported, tmp_path):
    import shutil

    from shallowpi.data.lerobot_verify import verify_lerobot_export

    root, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with EpisodeStore.open(root / "src.zarr") as store:
        verify_lerobot_export(store, copy, REPO_ID)  # the export as written passes
        video = next((copy / "videos" / "observation.images.front").rglob("*.mp4"))
        _drop_last_frame(video, tmp_path / "short.mp4")
        shutil.move(tmp_path / "short.mp4", video)
        with pytest.raises(PlatformError, match=r"episode 2 has 10 rows but its observation\.images\.front "
                                                r"video holds 9 frames") as caught:
            verify_lerobot_export(store, copy, REPO_ID)
    assert "\n" not in str(caught.value)
    # Imported, the same video was taken as it was: lerobot paired every row after the
    # missing frame with the next row's frame. Refused, before a store is made.
    from shallowpi.data.lerobot_import import import_lerobot

    with pytest.raises(PlatformError, match=r"episode 2 has 10 rows but its observation\.images\.front video holds "
                                            r"9 frames: lerobot would pair its rows with the wrong frames") as refused:
        import_lerobot(copy, tmp_path / "back.zarr", repo_id=REPO_ID)
    assert "\n" not in str(refused.value) and not (tmp_path / "back.zarr").exists()


@pytest.mark.parametrize("keep", [0, 700], ids=["empty", "cut-short"])
def test_a_video_that_does_not_read_is_an_incomplete_copy_in_one_line(exported, tmp_path, capsys, keep):
    """A video an interrupted copy left empty or cut short: PyAV's InvalidDataError (a
    ValueError, which the CLI takes for a bug) reached the terminal as a traceback, from
    `dataset import` and from an export's own check."""
    import shutil

    from shallowpi.cli import main
    from shallowpi.data.lerobot_verify import verify_lerobot_export
    from shallowpi.errors import StoreError

    root, out, _ = exported
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    relative = "videos/observation.images.front/chunk-000/file-000.mp4"
    (copy / relative).write_bytes((copy / relative).read_bytes()[:keep])
    assert main(["dataset", "import", str(copy), "--out", str(tmp_path / "back"), "--repo-id", REPO_ID]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: files missing under {copy} (an incomplete copy?): {relative} does not read as a video "
        "(InvalidDataError); copy the dataset again")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy"]
    with EpisodeStore.open(root / "src.zarr") as store, pytest.raises(StoreError) as caught:
        verify_lerobot_export(store, copy, REPO_ID)
    assert str(caught.value) == (f"export of src.zarr: {relative} does not read as a video (InvalidDataError); "
                                 "nothing was exported: run the export again")


def test_two_imports_of_one_dataset_hold_one_recording_for_merge_and_training(exported, tmp_path):
    """Each import stamped its episodes with its own clock: `dataset merge` of two imports
    of one dataset made 6 episodes of 3, rc 0 (trained on twice, a held-out one's copy in
    training), and a student distilled on the second import did not know its teacher's
    episodes. LeRobot keeps no recording time: imports store none, and are named by their
    numbers, which an export and import back keeps too."""
    from shallowpi.data.lerobot_import import import_lerobot
    from shallowpi.errors import StoreError
    from shallowpi.train.finetune import Split

    root, out, _ = exported
    first = import_lerobot(out, tmp_path / "first.zarr", repo_id=REPO_ID)
    second = import_lerobot(out, tmp_path / "second.zarr", repo_id=REPO_ID)
    with EpisodeStore.open(first) as a, EpisodeStore.open(second) as b:
        with pytest.raises(StoreError, match=r"^first.zarr episode 0 and second.zarr episode 0 hold the same "
                                             r"numbers, and one of them has no recording time"):
            EpisodeStore.merge([a, b], tmp_path / "dup.zarr")
        assert [e.start_time for e in a.episodes] == [0.0, 0.0, 0.0]  # not known: no "recorded" in a delete's prompt
        with EpisodeStore.open(root / "src.zarr") as source, pytest.raises(
                StoreError, match=r"^src.zarr episode 0 and first.zarr episode 0 hold the same numbers"):
            EpisodeStore.merge([source, a], tmp_path / "round.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.zarr", "second.zarr"]
    split = Split([0, 1, 2], [])
    assert split.scenes(first) == split.scenes(second)
    assert len(set(split.scenes(first).values())) == 3


def test_import_into_a_read_only_data_root_is_one_line(exported, tmp_path):
    import subprocess

    from conftest import platform_cmd, subprocess_env
    from read_only import read_only_command

    _, out, _ = exported
    ro = tmp_path / "ro"
    ro.mkdir()
    command = read_only_command(ro, platform_cmd("dataset", "import", str(out), "--out", "back",
                                                 "--repo-id", REPO_ID, "--data-root", str(ro)))
    if command is None:
        pytest.skip("cannot make a folder read-only here (root without mount rights)")
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: cannot write {ro}/back.zarr")
    assert list(ro.iterdir()) == []


def test_the_neighbour_check_needs_a_neighbour_the_codec_tells_apart():
    """Numbers of a 16x16 twin recording's last frame of episode 0 through H.264: the
    decoded frame is 13.1 from its row, 11.5 from the row before, which is only 4.4 from
    it in the store (below the codec's error): no shift. A row as far from its own as
    a shifted video's is."""
    from shallowpi.data.lerobot_verify import frame_mismatch

    assert not frame_mismatch(np.array([11.5, 13.1, 18.3]), np.array([4.4, 0.0, 13.8]), 1)
    assert frame_mismatch(np.array([2.0, 9.0, 14.0]), np.array([9.5, 0.0, 12.0]), 1)  # shifted by one
    assert frame_mismatch(np.array([40.0, 40.0]), np.array([0.0, 1.0]), 0)  # far from everything


@pytest.mark.slow
def test_a_16x16_twin_recording_exports_through_the_cli(tmp_path):
    """The issue's scenario end to end: a 16x16 store of the simulated arm. Its renders
    change little from row to row, less than H.264's error at that size; the export
    must pass its own verification (it refused every time, "run the export again")."""
    import subprocess

    from conftest import platform_cmd, subprocess_env

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(platform_cmd(*args, "--data-root", str(tmp_path)), env=subprocess_env(),
                              capture_output=True, text=True, timeout=600)

    recorded = run("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui",
                   "--dataset", "s16", "--episodes", "2", "--episode-time-s", "1", "--reset-time-s", "0",
                   "record.sim_size=16x16", f"telemetry.address={tmp_path}/t.sock")
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    exported = run("dataset", "export", "s16", str(tmp_path / "lr"), "--to", "lerobot")
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert "Traceback" not in exported.stderr
    dataset = _load_with_lerobot(tmp_path / "lr")
    assert len(dataset) == EpisodeStore.open(tmp_path / "s16.zarr").num_frames == 60


def test_an_export_is_on_disk_before_it_appears_under_its_name(tmp_path, monkeypatch):
    from disk_fixtures import SyncWatch
    from shallowpi.data.lerobot_export import export_lerobot

    make_store(tmp_path / "src.zarr", episodes=1, length=4).close()
    watch = SyncWatch(monkeypatch)
    out = export_lerobot(tmp_path / "src.zarr", tmp_path / "lerobot", repo_id=REPO_ID)
    assert watch.rename_to(out).unsynced == [] and any(out.rglob("*.parquet"))
    assert str(tmp_path.resolve()) in watch.synced  # the rename itself


def test_a_depth_camera_is_refused_at_import_not_stored_white(tmp_path):
    """lerobot decodes a depth video as millimetres; taken for a [0, 1] picture and scaled
    by 255, every pixel of every row was stored as 255, without a word."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from shallowpi.data.lerobot_import import import_lerobot

    features = {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
                "action": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
                "observation.images.depth": {"dtype": "video", "shape": (32, 48, 1),
                                             "names": ["height", "width", "channels"], "info": {"is_depth_map": True}}}
    dataset = LeRobotDataset.create("local/depth", fps=10, features=features, root=tmp_path / "depth",
                                    use_videos=True, streaming_encoding=False)
    for t in range(4):
        dataset.add_frame({"observation.state": np.zeros(2, np.float32), "action": np.zeros(2, np.float32),
                           "observation.images.depth": np.full((32, 48, 1), 500 + 200 * t, np.uint16), "task": "x"})
    dataset.save_episode(parallel_encoding=False)
    dataset.finalize()
    with pytest.raises(PlatformError, match=r"depth camera\(s\) observation.images.depth cannot be imported"):
        import_lerobot(tmp_path / "depth", tmp_path / "back.zarr", repo_id="local/depth")
    assert not (tmp_path / "back.zarr").exists()


@pytest.mark.slow  # two exports, each encoding in a spawned child
def test_two_exports_into_one_directory_leave_one_whole_export(tmp_path, monkeypatch):
    """Two exports into one directory wrote into one fixed `lr.shallowpi-partial`: the second
    removed the first's files, and the first then failed to move them in (a traceback). The
    second now waits for the first and is told the directory is taken."""
    from race_fixtures import pause_first, run_both
    from shallowpi.data import lerobot_export

    make_store(tmp_path / "src.zarr", episodes=1, length=4).close()
    out = tmp_path / "lr"
    # The first stops with its export written and verified, before it moves it in.
    ran, go_on = pause_first(monkeypatch, lerobot_export, "_move_into_place", before=True)

    def export():
        return lerobot_export.export_lerobot(tmp_path / "src.zarr", out, repo_id=REPO_ID)

    first, second = run_both(export, export, ran, go_on)
    assert first == out, first
    assert isinstance(second, PlatformError) and "already exists" in str(second), second
    assert "\n" not in str(second)
    assert (out / "meta" / "info.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lr", "src.zarr"]


def test_two_imports_into_one_name_leave_one_whole_store(exported, tmp_path, monkeypatch):
    """Two imports into one new dataset built in one fixed `NAME.zarr.shallowpi-partial`: the
    second removed the first's half-made store. The second now waits for the first and is
    told the name is taken (or who holds it, past the wait), in one line."""
    from race_fixtures import pause_first, run_both
    from shallowpi.data import lerobot_import
    from shallowpi.errors import StoreError

    _, source, _ = exported
    path = tmp_path / "back.zarr"
    ran, go_on = pause_first(monkeypatch, lerobot_import, "_import_episode")
    first, second = run_both(lambda: lerobot_import.import_lerobot(source, path, repo_id=REPO_ID),
                             lambda: lerobot_import.import_lerobot(source, path, repo_id=REPO_ID), ran, go_on)
    assert first == path, first
    assert isinstance(second, StoreError) and ("already exists" in str(second) or "is being made by" in str(second))
    with EpisodeStore.open(path) as store:
        assert len(store) == 3 and store.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.zarr"]



def _dataset_with_a_feature_named(root, name: str) -> None:
    """A LeRobotDataset at `root` (state, action, an image camera) whose camera is then
    renamed `name` in every file that names it: lerobot itself refuses such a name."""
    import pyarrow.parquet as pq
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {"observation.state": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
                "action": {"dtype": "float32", "shape": (2,), "names": ["a", "b"]},
                "cam": {"dtype": "image", "shape": (24, 32, 3), "names": ["height", "width", "channels"]}}
    dataset = LeRobotDataset.create("local/named", fps=10, features=features, root=root, use_videos=False)
    for t in range(3):
        dataset.add_frame({"observation.state": np.zeros(2, np.float32), "action": np.zeros(2, np.float32),
                           "cam": np.full((24, 32, 3), 9 * t, np.uint8), "task": "x"})
    dataset.save_episode()
    dataset.finalize()

    def renamed(text: str) -> str:
        return text.replace('"cam"', json.dumps(name)).replace("stats/cam/", f"stats/{name}/")

    for file in root.rglob("*"):
        if file.suffix == ".json":
            file.write_text(renamed(file.read_text()))
        elif file.suffix == ".parquet":
            table = pq.read_table(file)
            columns = [name if c == "cam" else c.replace("stats/cam/", f"stats/{name}/") for c in table.column_names]
            metadata = {k: renamed(v.decode()).encode() for k, v in (table.schema.metadata or {}).items()}
            pq.write_table(table.rename_columns(columns).replace_schema_metadata(metadata), file)


def test_an_import_never_writes_outside_its_store_for_a_crafted_feature_name(tmp_path):
    """info.json's feature names became the store's folders as they were: a camera named
    "/some/path" had its frames written there."""
    from shallowpi.data.lerobot_import import import_lerobot
    from shallowpi.errors import StoreError

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    _dataset_with_a_feature_named(tmp_path / "crafted", str(elsewhere))
    with pytest.raises(StoreError) as refused:
        import_lerobot(tmp_path / "crafted", tmp_path / "back.zarr", repo_id="local/named")
    assert str(refused.value) == (f"lerobot feature '{elsewhere}' is not a plain name (it holds '/'; no '/' or '..'); "
                                  "this info.json was not written by lerobot; nothing was imported")
    assert list(elsewhere.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crafted", "elsewhere"]  # no store, no staging
