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


# RGB8 colour modes of the D415/D435/D455 colour sensor, (width, height) -> fps (Intel
# RealSense D400 Series datasheet, "RGB sensor" formats; the D405's colour comes from its
# depth imagers and offers the 640x480 rates below as well).
D400_COLOR_FPS = {(1920, 1080): {6, 15, 30}, (1280, 720): {6, 15, 30}, (848, 480): {6, 15, 30, 60},
                  (640, 480): {6, 15, 30, 60}, (640, 360): {6, 15, 30, 60}, (424, 240): {6, 15, 30, 60}}


def test_the_shipped_configs_ask_modes_a_d400_streams_at_least_as_fast_as_the_loop():
    """A mode the camera does not stream stops `platform record` at start on the robot, where
    no test here can see it (the bimanual config asked 50 fps: a D4xx has 30 or 60). A camera
    slower than the loop makes rows repeat a picture."""
    for name in ("arm", "bimanual", "humanoid"):
        spec = RobotSpec.from_config(config.compose([f"robot={name}"]).robot)
        for cam in spec.cameras:
            assert cam.fps in D400_COLOR_FPS.get((cam.width, cam.height), set()), (name, cam)
            assert cam.fps >= spec.fps, (name, cam)


def test_doctor_says_which_role_asks_a_mode_its_camera_does_not_stream():
    from shallowpi.commands.doctor_checks import camera_report

    fast, slow = SoftwareRealSense("SW-60", 640, 480, fps=60), SoftwareRealSense("SW-30", 640, 480, fps=30)
    spec = RobotSpec.from_config(config.compose([
        "robot=bimanual", "robot.cameras.top.serial=SW-60", "robot.cameras.left_wrist.serial=SW-30",
        "robot.cameras.right_wrist.serial=SW-GONE", "robot.cameras.left_wrist.fps=50"]).robot)
    lines = camera_report(spec, devices=lambda: [fast.device, slow.device])
    assert lines[:2] == ["ok: Software RealSense serial SW-60 firmware ?", "ok: Software RealSense serial SW-30 firmware ?"]
    assert "ok: camera 'top' 640x480 at 60 fps is offered by RealSense SW-60" in lines
    assert ("error: camera 'left_wrist' asks 640x480 at 50 fps; RealSense SW-30 streams 640x480 at 30 fps: "
            "set robot.cameras.left_wrist.fps=30") in lines
    assert "missing: camera 'right_wrist' names RealSense SW-GONE, which is not connected" in lines
    assert not any(line.startswith("note") for line in lines)  # 50 fps keeps up with the 50 Hz loop
    # A role without a serial is checked against the camera no other role names; a slow role gets a note.
    spec = RobotSpec.from_config(config.compose(["robot=arm", "robot.cameras.front.fps=15",
                                                 "robot.cameras.wrist.serial=SW-30"]).robot)
    lines = camera_report(spec, devices=lambda: [fast.device, slow.device])
    assert "error: camera 'front' asks 640x480 at 15 fps; RealSense SW-60 streams 640x480 at 60 fps: " \
           "set robot.cameras.front.fps=60" in lines
    assert "ok: camera 'wrist' 640x480 at 30 fps is offered by RealSense SW-30" in lines
    assert lines[-1] == ("note: camera 'front' streams 15 fps, slower than robot 'arm''s 30 Hz loop: about 50% "
                         "of the recorded rows repeat the picture before them")
    assert camera_report(spec, devices=lambda: [])[0] == "missing: no RealSense camera connected"


def test_doctor_checks_each_role_on_the_camera_record_gives_it():
    """A role without a serial is checked on the camera `platform record` gives it (the one
    connected camera no other role names), never on one another role pins: doctor said
    "ok" for SW-W's 30 fps to a role that record opens on SW-F. A setup record refuses
    (two roles without serials, two cameras) is record's error, not "ok"."""
    from shallowpi.commands.doctor_checks import camera_report

    pinned, free = SoftwareRealSense("SW-W", 64, 48, fps=30), SoftwareRealSense("SW-F", 64, 48, fps=15)
    devices = lambda: [pinned.device, free.device]  # noqa: E731
    spec = arm("robot.cameras.wrist.serial=SW-W")
    assert realsense_cameras(spec, devices=devices)["front"].config.serial == "SW-F"
    lines = camera_report(spec, devices=devices)
    assert ("error: camera 'front' asks 64x48 at 30 fps; RealSense SW-F streams 64x48 at 15 fps: "
            "set robot.cameras.front.fps=15") in lines
    assert "ok: camera 'wrist' 64x48 at 30 fps is offered by RealSense SW-W" in lines
    assert not [line for line in lines if "camera 'front'" in line and "SW-W" in line], lines
    assert any(line.startswith("note: camera 'front': no serial") and "'robot.cameras.front.serial=\"SW-F\"' pins it" in line
               for line in lines), lines
    with pytest.raises(CameraError) as refused:
        realsense_cameras(arm(), devices=devices)
    lines = camera_report(arm(), devices=devices)
    assert f"error: {refused.value}" in lines
    assert not [line for line in lines if line.startswith("ok: camera '")], lines


def test_the_one_unnamed_role_takes_the_one_free_camera_and_says_so(caplog):
    wrist, front = SoftwareRealSense("SW-W", 64, 48), SoftwareRealSense("SW-F", 64, 48)
    spec = arm("robot.cameras.wrist.serial=SW-W")
    caplog.set_level("INFO")
    cameras = realsense_cameras(spec, devices=lambda: [wrist.device, front.device])
    assert {role: c.config.serial for role, c in cameras.items()} == {"front": "SW-F", "wrist": "SW-W"}
    assert any("camera 'front'" in r.getMessage() and "SW-F" in r.getMessage()
               and "'robot.cameras.front.serial=\"SW-F\"' pins it" in r.getMessage() for r in caplog.records)
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
    assert "camera 'front', 'wrist'" in message and "'robot.cameras.front.serial=\"SERIAL\"'" in message
    assert "platform doctor" in message and "--no-cameras" in message
    assert ("no unassigned RealSense is connected" in message) if connected == 0 else (f"{connected} unassigned" in message)


def test_zero_cameras_connected_for_one_unnamed_role():
    with pytest.raises(CameraError, match=r"camera 'front' of the robot config has no serial and no unassigned "
                                          r"RealSense is connected; set 'robot.cameras.front.serial=\"SERIAL\"'"):
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
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=240)  # no terminal: no end hold

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
        assert "torque is off: the arms no longer hold their pose" in done.stdout  # a real arm drops now
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
