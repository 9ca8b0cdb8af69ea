"""`platform record`: end to end in the twin, signals, and faults through the real drivers.

The fault tests run the recording session on the real driver stack: DynamixelRobot and
LeaderFollower over emulated servo chains (the real dynamixel-sdk on ptys) and a
RealSenseCamera reading pyrealsense2's software device.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.hardware.realsense_software import SoftwareRealSense
from shallowpi.record.clock import TickClock
from shallowpi.record.rig import record_features
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.telemetry.status import RecorderState
from shallowpi.teleop.leader import LeaderFollower
from store_fixtures import stamp_episode

SMALL = "record.sim_size=96x96"


def record(tmp_path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--no-tui", SMALL, f"telemetry.address={tmp_path}/t.sock", *args),
        env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_sim_recording_end_to_end_and_resume(tmp_path):
    first = record(tmp_path, "--dataset", "demo", "--episodes", "2", "--reset-time-s", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "recorded 2 episode(s)" in first.stdout and "platform dataset show" in first.stdout
    check = subprocess.run(platform_cmd("dataset", "check", "demo", "--data-root", str(tmp_path)),
                           env=subprocess_env(), capture_output=True, text=True)
    assert check.returncode == 0 and "ok, 2 episodes" in check.stdout

    store = EpisodeStore.open(tmp_path / "demo.zarr")
    assert [e.task for e in store.episodes] == ["put the red cube in the bowl"] * 2
    assert all(e.robot == "arm" and e.success is True and e.length > 60 for e in store.episodes)
    assert {"loop_p50_ms", "loop_p99_ms", "loop_overruns", "backpressure_s"} <= store.episode(0).extra.keys()
    episode = store.read_episode(1)
    assert episode["observation.images.front"].shape[1:] == (96, 96, 3)
    ticks = episode["timestamp"]
    np.testing.assert_allclose(np.diff(ticks), 1 / 30, rtol=1e-6)  # simulated time: no gaps
    # The twin's expert moved the arm: actions change, and the state follows them.
    assert np.ptp(episode["action"], axis=0).max() > 0.2
    assert np.abs(episode["observation.state"][-1] - episode["action"][-1]).max() < 0.1
    assert list((tmp_path / "demo.zarr" / ".shallowpi").glob("record-*.yaml"))

    again = record(tmp_path, "--dataset", "demo", "--episodes", "1", "--reset-time-s", "0")
    assert again.returncode != 0 and "already exists; pass --resume" in again.stderr
    resumed = record(tmp_path, "--dataset", "demo", "--episodes", "1", "--reset-time-s", "0", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(EpisodeStore.open(tmp_path / "demo.zarr")) == 3
    other = subprocess.run(
        platform_cmd("record", "--robot", "humanoid", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "demo", "--resume", "--no-tui", SMALL,
                     f"telemetry.address={tmp_path}/t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert other.returncode != 0
    assert "recorded with other features" in other.stderr and len(other.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_resume_refuses_another_fps_or_calibration_unless_allowed(tmp_path):
    short = ("--dataset", "demo", "--episodes", "1", "--reset-time-s", "0", "--episode-time-s", "0.5")
    first = record(tmp_path, *short)
    assert first.returncode == 0, first.stderr[-3000:]
    slower = record(tmp_path, *short, "--resume", "robot.fps=15")
    assert slower.returncode != 0 and len(slower.stderr.strip().splitlines()) == 1, slower.stderr[-2000:]
    assert "holds episodes at 30 fps, this recording at 15 fps" in slower.stderr and "new dataset" in slower.stderr

    # The store's episode as if recorded under an earlier calibration of the robot.
    store = tmp_path / "demo.zarr"
    stamp_episode(store, 0, calibration_id="cal-before")
    recalibrated = record(tmp_path, *short, "--resume")
    assert recalibrated.returncode != 0 and len(recalibrated.stderr.strip().splitlines()) == 1
    assert "calibration cal-before, this recording of calibration sim-arm" in recalibrated.stderr
    assert "--allow-mixed-calibration" in recalibrated.stderr
    assert len(EpisodeStore.open(store)) == 1  # refused before anything was written

    allowed = record(tmp_path, *short, "--resume", "--allow-mixed-calibration")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    resumed = EpisodeStore.open(store)
    assert [e.calibration_id for e in resumed.episodes] == ["cal-before", "sim-arm"]
    assert resumed.summary.allow_mixed_calibration  # the permission is part of the store


def _start_recording(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "sig", "--no-tui", SMALL,
                     f"telemetry.address={tmp_path}/t.sock", *args),
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"recorder exited: {process.stderr.read()[-2000:]}")
    raise AssertionError(f"'{text}' not printed in {timeout} s")


@pytest.mark.slow
def test_sigterm_stops_cleanly_and_keeps_the_episode_in_flight(tmp_path):
    recorder = _start_recording(tmp_path, "--episodes", "3", "--episode-time-s", "60", "--realtime")
    _wait_for(recorder, "recording episode 0 (1/3 of this run)")
    time.sleep(1.5)
    recorder.send_signal(signal.SIGTERM)
    out, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err[-2000:]
    assert "recorded 1 episode(s)" in out
    store = EpisodeStore.open(tmp_path / "sig.zarr", mode="a")
    assert len(store) == 1 and 20 <= store.episode(0).length < 60 * 30
    assert store.check() == []


@pytest.mark.slow
def test_sigkill_loses_at_most_the_episode_in_flight(tmp_path):
    recorder = _start_recording(tmp_path, "--episodes", "20", "--episode-time-s", "1", "--reset-time-s", "0")
    _wait_for(recorder, "episode 1 saved")
    recorder.send_signal(signal.SIGKILL)
    recorder.communicate(timeout=60)
    store = EpisodeStore.open(tmp_path / "sig.zarr", mode="a")  # cuts the killed episode's tail
    assert len(store) >= 2  # "saved" is printed once the writer committed it
    assert store.check() == []


class _Rig:
    """The arm on emulated servo chains with a software RealSense feeding its front camera."""

    def __init__(self, tmp_path, spec, chains):
        self.chains = chains
        self.device = SoftwareRealSense("SW-front", 64, 48, fps=30)
        self.camera = RealSenseCamera(RealSenseConfig("front", "SW-front", 64, 48, 30, warmup_frames=0,
                                                      timeout_s=0.5), open_device=self.device.open_device)
        calibration = RobotCalibration("uncalibrated", spec.name)
        self.robot = DynamixelRobot(spec, calibration, cameras={"front": self.camera})
        self.teleop = LeaderFollower(spec, calibration)
        features = record_features(list(spec.joint_names), {"front": (48, 64)})
        self.store = EpisodeStore.create(tmp_path / "faults.zarr", features, StoreSettings(durable=False))
        self.committed = threading.Event()
        self.writer = BackgroundWriter(self.store, on_commit=lambda info: self.committed.set())
        self.feeding = threading.Event()
        self.feeding.set()
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def _feed(self):
        i = 0
        while self.feeding.is_set():
            self.device.inject(np.full((48, 64, 3), i % 255, np.uint8))
            i += 1
            time.sleep(1 / 30)

    def __enter__(self):
        self.camera.start()
        self._feeder.start()
        self.robot.connect()
        self.teleop.connect()
        return self

    def __exit__(self, *exc):
        self.feeding.clear()
        self.teleop.disconnect()
        self.robot.disconnect()
        self.camera.stop()
        self.writer.close()

    def session(self, spec):
        config = SessionConfig(task="wave", episodes=5, episode_time_s=0.6, reset_time_s=0.0, fps=30,
                               robot=spec.name)
        return RecordingSession(config, self.robot, self.teleop, self.writer, TickClock(30),
                                list(spec.joint_names), cameras={"front": self.camera})


def _run_until_fault(session, inject):
    box = {}
    loop = threading.Thread(target=lambda: box.setdefault("result", session.run()))
    loop.start()
    inject()
    loop.join(60)
    assert not loop.is_alive(), "the loop did not stop on the fault"
    return box["result"]


@pytest.mark.slow
def test_a_servo_fault_mid_episode_ends_it_and_keeps_committed_episodes(tmp_path):
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        session = rig.session(spec)

        def overload():
            assert rig.committed.wait(30)
            time.sleep(0.2)  # well inside the next episode
            chains["follower"].hardware_error(3, "overload")

        result = _run_until_fault(session, overload)
        rig.writer.close()
        assert "servo 3" in result.fault and "overload" in result.fault.lower()
        assert session.status.state is RecorderState.FAULT and session.status.message.startswith("FAULT")
        assert 1 <= len(rig.store) < 5
        assert rig.store.check() == []


@pytest.mark.slow
def test_a_camera_that_stops_mid_episode_ends_it_and_names_the_camera(tmp_path):
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        session = rig.session(spec)

        def unplug():
            assert rig.committed.wait(30)
            rig.feeding.clear()

        result = _run_until_fault(session, unplug)
        rig.writer.close()
        assert "front" in result.fault
        assert 1 <= len(rig.store) < 5 and rig.store.check() == []
        assert rig.store.episode(0).length == 18  # 0.6 s at 30 Hz
