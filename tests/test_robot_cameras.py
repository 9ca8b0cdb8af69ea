"""Cameras are never dropped silently: every camera role of a robot config gets a camera at
start-up (its configured serial, or the single connected RealSense no other role names),
or start-up fails with one line naming the role and how to set it; only --no-cameras
records without them. Devices are pyrealsense2 software devices (the real library)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

pytest.importorskip("pyrealsense2", exc_type=ImportError)

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from shallowpi import config
from shallowpi.data import EpisodeStore
from shallowpi.hardware.camera import CameraError
from shallowpi.hardware.realsense import assign_serials
from shallowpi.hardware.realsense_software import SoftwareRealSense
from shallowpi.robots.cameras import realsense_cameras
from shallowpi.robots.spec import RobotSpec


def arm(*overrides: str) -> RobotSpec:
    """The shipped arm config (front and wrist cameras, no serials), small frames."""
    small = [f"robot.cameras.{role}.{k}={v}" for role in ("front", "wrist") for k, v in
             (("width", 64), ("height", 48))]
    return RobotSpec.from_config(config.compose(["robot=arm", *small, *overrides]).robot)


def test_the_shipped_configs_name_no_serials_so_start_up_must_decide():
    for name in ("arm", "bimanual", "humanoid"):
        spec = RobotSpec.from_config(config.compose([f"robot={name}"]).robot)
        assert spec.cameras and all(c.serial is None for c in spec.cameras)
        # The override the README, doctor and the camera errors give (no "+": the key is there).
        pinned = [f"robot.cameras.{c.role}.serial=SN-{c.role}" for c in spec.cameras]
        spec = RobotSpec.from_config(config.compose([f"robot={name}", *pinned]).robot)
        assert all(c.serial == f"SN-{c.role}" for c in spec.cameras)


def test_the_one_unnamed_role_takes_the_one_free_camera_and_says_so(caplog):
    wrist, front = SoftwareRealSense("SW-W", 64, 48), SoftwareRealSense("SW-F", 64, 48)
    spec = arm("robot.cameras.wrist.serial=SW-W")
    caplog.set_level("INFO")
    cameras = realsense_cameras(spec, devices=lambda: [wrist.device, front.device])
    assert {role: c.config.serial for role, c in cameras.items()} == {"front": "SW-F", "wrist": "SW-W"}
    assert any("camera 'front'" in r.getMessage() and "SW-F" in r.getMessage()
               and "robot.cameras.front.serial=SW-F" in r.getMessage() for r in caplog.records)
    camera = cameras["front"]
    camera.warmup_frames = 0  # a software device has no auto-exposure to settle
    with camera:  # the camera it chose is the one that streams
        image = np.full((48, 64, 3), 7, np.uint8)
        front.inject(image)
        np.testing.assert_array_equal(camera.latest().image, image)


@pytest.mark.parametrize("connected", [0, 1, 2])
def test_otherwise_start_up_fails_naming_the_roles_and_the_fix(connected):
    devices = [SoftwareRealSense(f"SW-{i}", 64, 48).device for i in range(connected)]
    with pytest.raises(CameraError) as err:
        realsense_cameras(arm(), devices=lambda: devices)  # two roles, no serials
    message = str(err.value)
    assert "\n" not in message
    assert "camera 'front', 'wrist'" in message and "robot.cameras.front.serial=SERIAL" in message
    assert "platform doctor" in message and "--no-cameras" in message
    assert ("no unassigned RealSense is connected" in message) if connected == 0 else (f"{connected} unassigned" in message)


def test_zero_cameras_connected_for_one_unnamed_role():
    with pytest.raises(CameraError, match=r"camera 'front' of the robot config has no serial and no unassigned "
                                          r"RealSense is connected; set robot.cameras.front.serial=SERIAL"):
        realsense_cameras(arm("robot.cameras.wrist.serial=SW-W"), devices=lambda: [])


def test_a_policy_reading_fewer_cameras_opens_only_those_and_never_takes_a_pinned_one():
    """`platform deploy` opens the roles its policy reads. Here it reads 'front' (no serial);
    'wrist' is pinned to SW-W. With only SW-W connected, front must not take the wrist's
    camera; with SW-F connected too, front gets SW-F and the wrist camera is not opened."""
    wrist, front = SoftwareRealSense("SW-W", 64, 48), SoftwareRealSense("SW-F", 64, 48)
    spec = arm("robot.cameras.wrist.serial=SW-W")
    with pytest.raises(CameraError, match="camera 'front' of the robot config has no serial and no unassigned") as err:
        realsense_cameras(spec, devices=lambda: [wrist.device], roles=["front"])
    assert "--no-cameras" not in str(err.value)  # a record flag: the policy needs its cameras
    cameras = realsense_cameras(spec, devices=lambda: [wrist.device, front.device], roles=["front"])
    assert {role: c.config.serial for role, c in cameras.items()} == {"front": "SW-F"}


def test_recording_without_cameras_is_explicit():
    assert realsense_cameras(arm(), allow_none=True, devices=lambda: []) == {}
    assert assign_serials({"front": "A", "wrist": "B"}, []) == ({"front": "A", "wrist": "B"}, [])


@pytest.mark.slow
def test_record_on_emulated_servos_refuses_uncalibrated_and_cameraless_until_told(tmp_path):
    """`platform record` on `platform emulate`-style ptys through the robot.buses.NAME.port
    overrides: no calibration file and no RealSense here, so it fails in one line and creates
    nothing, until --allow-uncalibrated and --no-cameras say to record joint states only on
    the uncalibrated robot (and not faster than the robot's rate)."""
    with emulated("arm") as (spec, _):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]

        def record(*extra: str) -> subprocess.CompletedProcess:
            return subprocess.run(
                platform_cmd("record", "--robot", "arm", *ports, "--dataset", "cams", "--data-root", str(tmp_path),
                             "--task", "wave", "--episodes", "1", "--episode-time-s", "0.5", "--reset-time-s", "0",
                             "--no-tui", f"telemetry.address={tmp_path}/t.sock", *extra),
                env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")),  # no calibration there
                capture_output=True, text=True, timeout=240)

        # No calibration file: refused before any port opens, as `platform deploy` refuses it.
        uncalibrated = record("--no-cameras")
        assert uncalibrated.returncode != 0 and "Traceback" not in uncalibrated.stderr
        assert uncalibrated.stderr.strip().splitlines()[-1].startswith(
            "error: robot 'arm' has no calibration file"), uncalibrated.stderr[-2000:]
        assert "--allow-uncalibrated" in uncalibrated.stderr and "platform calibrate --robot arm" in uncalibrated.stderr
        assert not (tmp_path / "cams.zarr").exists()
        refused = record("--allow-uncalibrated")
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines()[-1].startswith("error: camera 'front', 'wrist' of the robot config")
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / "cams.zarr").exists()
        # Robot.act bounds a joint's step per call at max_velocity / robot.fps: a loop at twice
        # the robot's rate would double every speed limit.
        faster = record("--no-cameras", "--allow-uncalibrated", "--fps", "60")
        assert faster.returncode != 0 and faster.stderr.strip().splitlines()[-1] == (
            "error: --fps/record.fps 60 is faster than robot 'arm' runs (30 Hz), which would raise its joints' speed limits "
            "by 2x; set robot.fps=60 to record faster")
        assert not (tmp_path / "cams.zarr").exists()
        done = record("--no-cameras", "--allow-uncalibrated")
        assert done.returncode == 0, done.stderr[-2000:]
        assert "recording without cameras" in done.stderr
        assert "robot 'arm' is not calibrated (--allow-uncalibrated)" in done.stderr
    store = EpisodeStore.open(tmp_path / "cams.zarr")
    assert len(store) == 1 and not any(k.startswith("observation.images.") for k in store.features)
    assert store.episode(0).calibration_id == "uncalibrated"
    assert store.check() == []


@pytest.mark.parametrize(("flag", "says"), [("--no-cameras", "error: --no-cameras is for the robot's cameras"),
                                            ("--allow-uncalibrated", "error: --allow-uncalibrated is for the robot")])
def test_robot_only_record_flags_are_refused_in_simulation_rather_than_ignored(tmp_path, flag, says):
    out = subprocess.run(platform_cmd("record", "--robot", "arm", "--sim", "--task", "cube_in_bowl", "--dataset", "x",
                                      "--data-root", str(tmp_path), flag, "--no-tui"),
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and out.stderr.startswith(says), out.stderr
    assert not (tmp_path / "x.zarr").exists()
