"""`platform deploy --record` writes as `platform record` does: the config's store settings,
record.queue_mb of frames queued, and record.disk_reserve_mb kept free on the disk (before
the store is made, and before each episode)."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from disk_fixtures import small_disk
from shallowpi import config
from shallowpi.commands.deploy_recording import DeploymentRecorder
from shallowpi.data.store import EpisodeStore
from shallowpi.errors import ConfigError
from shallowpi.record.disk import DiskSpaceError, raw_frame_bytes
from shallowpi.robots.observation import Frame, Observation


def _target(episode_s: float = 20.0) -> SimpleNamespace:
    """What DeploymentRecorder reads of a deploy target: two joints, a 16x16 front camera, 30 Hz."""
    return SimpleNamespace(joint_names=["j0", "j1"], joint_kinds=["revolute", "gripper"],
                           camera_shapes={"front": (16, 16)}, calibration_id="cal-x", fps=30.0, episode_s=episode_s)


def _record_episode(recorder: DeploymentRecorder, ticks: int = 3) -> None:
    on_tick = recorder.begin("count", "counting", 30.0)
    for tick in range(ticks):
        frame = Frame(np.full((16, 16, 3), tick, np.uint8), tick / 30, tick)
        on_tick(Observation(tick / 30, np.zeros(2, np.float32), {"front": frame}), np.zeros(2, np.float32))
    recorder.end(None, "time limit")


def test_a_deployment_recording_queues_record_queue_mb_of_frames(tmp_path):
    """It queued a fixed 256 frames, whatever record.queue_mb said."""
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose(["record.queue_mb=1"]), _target(),
                                  ["front"])
    recorder.close()
    # 1 MB of uncompressed 16x16 frames (with the joints and the times): some 1200, not 256
    capacity = recorder.writer.stats().queue_capacity
    assert capacity == 1_000_000 // raw_frame_bytes(recorder.store.features) and capacity > 1000, capacity


def test_a_deployment_recording_writes_with_the_configs_store_settings(tmp_path, caplog):
    """It created every store as JPEG q90 in 1024-row chunks, whatever store.* said."""
    cfg = config.compose(["store.image_codec=blosc-lz4", "store.numeric_chunk_rows=64"])
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), cfg, _target(), ["front"])
    try:
        settings = recorder.store.settings
        assert (settings.image_codec, settings.image_quality, settings.numeric_chunk_rows) == ("blosc-lz4", 90, 64)
        _record_episode(recorder)
    finally:
        recorder.close()
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert store.settings.image_codec == "blosc-lz4" and len(store) == 1
        assert store.read_episode(0, ["observation.images.front"])["observation.images.front"][:, 0, 0, 0].tolist() \
            == [0, 1, 2]
    # An existing store keeps its own settings: the config's differing ones are named, not taken.
    with caplog.at_level("WARNING", logger="shallowpi"):
        again = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), _target(), ["front"])
        again.close()
    assert again.store.settings.image_codec == "blosc-lz4"
    assert "store.image_codec blosc-lz4 (the config's: jpeg)" in caplog.text
    assert "store.numeric_chunk_rows 64 (the config's: 1024)" in caplog.text


def test_a_deployment_recording_refuses_a_disk_below_the_reserve_before_making_a_store(tmp_path):
    """1 MB free against the default 32 MB record.disk_reserve_mb: rollouts filled a Jetson's disk."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(DiskSpaceError, match=r"below the 32\.0 MB that stay free \(record\.disk_reserve_mb\)"):
            DeploymentRecorder(str(disk / "deployed.zarr"), config.compose([]), _target(), ["front"])
        assert list(disk.iterdir()) == []


def test_a_deployment_episode_the_disk_has_no_room_for_does_not_begin(tmp_path):
    """Measured from the store's last episode (a 4 KB chunk file a frame here), a 1000 s
    episode does not fit in what is left of 512 KB: `begin` refuses it, nothing queued
    (deploy ends the run as a fault, torque on), and the episode before it is kept."""
    with small_disk(tmp_path / "disk", "512k") as disk:
        cfg = config.compose(["record.disk_reserve_mb=0"])
        first = DeploymentRecorder(str(disk / "deployed.zarr"), cfg, _target(episode_s=1000.0), ["front"])
        try:  # unmeasured, the raw size is an upper bound: it warns and lets the episode start
            _record_episode(first)
        finally:
            first.close()
        recorder = DeploymentRecorder(str(disk / "deployed.zarr"), cfg, _target(episode_s=1000.0), ["front"])
        try:
            with pytest.raises(DiskSpaceError, match="no room for episode 1: "):
                recorder.begin("count", "counting", 30.0)
        finally:
            recorder.close()
        assert first.writer.failure is None and recorder.writer.failure is None
        with EpisodeStore.open(disk / "deployed.zarr") as store:
            assert len(store) == 1 and store.check() == []


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("queue_mb", float("nan"), "record.queue_mb must be a finite number > 0, got nan"),
    ("disk_reserve_mb", float("inf"), "record.disk_reserve_mb must be a finite number >= 0, got inf"),
    ("disk_reserve_mb", -1, "record.disk_reserve_mb must be a finite number >= 0, got -1"),
])
def test_a_deployment_recording_refuses_a_queue_or_reserve_out_of_range(tmp_path, setting, value, says):
    """As a lab's config.yaml may say them (an override of these counts takes whole numbers
    only): a NaN was a ValueError traceback."""
    cfg = config.compose([])
    OmegaConf.update(cfg, f"record.{setting}", value)
    with pytest.raises(ConfigError, match=re.escape(says)):
        DeploymentRecorder(str(tmp_path / "deployed.zarr"), cfg, _target(), ["front"])
    assert not (tmp_path / "deployed.zarr").exists()
