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
from shallowpi.deploy.executor_control import EpisodeReport
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
    recorder.end(EpisodeReport(0, None))


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


def test_a_deployment_episode_keeps_its_cameras_drops_and_the_executors_holds(tmp_path):
    """A real RealSense driver (pyrealsense2's software device) whose frame numbers skip
    two frames before the episode and two during it. The episode was committed with
    dropped_frames 0 (the store's default, read as "none dropped" by whoever filters
    rollouts for retraining) and without the executor's holds or any stale-frame count.
    Now: the drops during the episode, counted as `platform record` counts a take's; its
    rows holding a picture over three periods old (extra.stale_frames, record's meaning);
    the executor's holds, hold ticks and watchdog stale ticks."""
    pytest.importorskip("pyrealsense2", exc_type=ImportError)
    from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
    from shallowpi.hardware.realsense_software import SoftwareRealSense

    device = SoftwareRealSense("SW-front", 16, 16, fps=30)
    camera = RealSenseCamera(RealSenseConfig("front", "SW-front", 16, 16, 30, warmup_frames=0),
                             open_device=device.open_device)
    target = _target()
    target.cameras = {"front": camera}
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), target, ["front"])
    try:
        with camera:
            last = None
            for number in (0, 1, 4):  # two lost before the episode: not its drops
                device.inject(np.full((16, 16, 3), number, np.uint8), frame_number=number)
                last = camera.latest(newer_than=last).sequence
            on_tick = recorder.begin("count", "counting", 30.0)
            for tick, number in enumerate((5, 6, 9, 10)):  # 7 and 8 lost during it
                device.inject(np.full((16, 16, 3), number, np.uint8), frame_number=number)
                got = camera.latest(newer_than=last)
                last = got.sequence
                # The last row's picture is 0.2 s old at its tick: six periods, stale.
                seen = got.host_time_s + (0.2 if tick == 3 else 0.0)
                on_tick(Observation(seen, np.zeros(2, np.float32), {"front": Frame(got.image, got.host_time_s, got.sequence)}),
                        np.zeros(2, np.float32))
            report = EpisodeReport(0, None, ticks=4, holds=2, hold_ticks=7, stale_frames=1, ended="time limit")
            recorder.end(report)
    finally:
        recorder.close()
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        episode = store.episode(0)
        assert episode.length == 4
        assert episode.dropped_frames == 2
        assert {key: episode.extra[key] for key in ("holds", "hold_ticks", "watchdog_stale_frames", "stale_frames",
                                                    "repeated_pictures")} == \
            {"holds": 2, "hold_ticks": 7, "watchdog_stale_frames": 1, "stale_frames": 1, "repeated_pictures": 0}
        assert episode.extra["camera_serials"] == {"front": "SW-front"}
