"""Export to and import from LeRobotDataset, checked with lerobot's own loader, offline."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from shallowpi.data import EpisodeStore
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
    from shallowpi.data.lerobot_interop import export_lerobot

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


def test_progress_counts_every_frame(exported):
    _, _, calls = exported
    assert calls[0] == (0, 27) and calls[-1] == (27, 27)
    assert [done for done, _ in calls] == list(range(28))


def test_import_brings_the_export_back(exported, tmp_path):
    from shallowpi.data.lerobot_interop import import_lerobot

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
        assert (got.length, got.task, got.robot, got.fps) == (info.length, info.task, info.robot, info.fps)
        want_rows, got_rows = source.read_episode(info.index), back.read_episode(got.index)
        for key in ("observation.state", "action"):
            np.testing.assert_array_equal(got_rows[key], want_rows[key])
        np.testing.assert_allclose(got_rows["timestamp"], np.arange(info.length) / 30, atol=1e-6)
        for key in CAMERAS:
            # Three lossy passes now: store JPEG, AV1, store JPEG again.
            error = np.abs(got_rows[key].astype(float) - want_rows[key]).mean()
            assert error < MAX_IMAGE_MEAN_ABS_ERROR + 2, (key, error)


def test_export_refuses_an_occupied_directory_in_one_line(exported, tmp_path):
    from shallowpi.data.lerobot_interop import export_lerobot

    root, out, _ = exported
    with pytest.raises(PlatformError, match="already exists") as caught:
        export_lerobot(root / "src.zarr", out)
    assert "\n" not in str(caught.value)
    assert not (out.parent / (out.name + ".partial")).exists()


def test_import_of_missing_or_foreign_directories_is_one_line(tmp_path):
    from shallowpi.data.lerobot_interop import import_lerobot

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
    assert not any(p.name.endswith(".zarr") or p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_a_store_is_not_a_lerobot_dataset(exported, tmp_path):
    from shallowpi.data.lerobot_interop import import_lerobot

    root, _, _ = exported
    with pytest.raises(PlatformError, match="not a LeRobotDataset"):
        import_lerobot(root / "src.zarr", tmp_path / "x.zarr")


def test_export_of_a_foreign_store_is_one_line(tmp_path):
    from shallowpi.data.lerobot_interop import export_lerobot

    with pytest.raises(PlatformError, match="no dataset at"):
        export_lerobot(tmp_path / "missing.zarr", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_without_lerobot_the_error_says_how_to_install_it(tmp_path, monkeypatch):
    import sys

    from shallowpi.data.lerobot_interop import LerobotMissingError, export_lerobot

    make_store(tmp_path / "s.zarr", episodes=1, length=2).close()
    monkeypatch.setitem(sys.modules, "lerobot.datasets.lerobot_dataset", None)  # import fails
    with pytest.raises(LerobotMissingError, match=r"pip install -e '\.\[lerobot\]' on Python >= 3\.12") as caught:
        export_lerobot(tmp_path / "s.zarr", tmp_path / "out")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()
