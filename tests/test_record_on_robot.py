"""`platform record` on a robot: how a run ends (the real command on emulated servo chains,
the real dynamixel-sdk on ptys, its standard input a pseudo-terminal as an operator's is),
and which camera recorded which role."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import threading
import time

import pytest

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from recorder_fixtures import make_session, open_store
from shallowpi.data import EpisodeStore
from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.record.rig import Rig, camera_changes

ELBOW = 3  # servo ID of elbow_flex, on the leader and the follower chain


class _Output:
    """The lines a process writes, read on a thread as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            assert time.monotonic() < deadline, f"no {text!r} in: {''.join(self.lines)[-3000:]}"
            time.sleep(0.05)

    def text(self) -> str:
        """Everything, once the stream has ended."""
        self._reader.join(30)
        return "".join(self.lines)


@pytest.mark.slow
def test_after_the_last_episode_the_follower_keeps_following_until_ctrl_c(tmp_path):
    """The run's end turned torque off at once, dropping the follower wherever the last take
    left it. With somebody at the terminal, teleoperation goes on after the last episode,
    torque on and nothing recorded, so the operator brings the arm to rest with the leader;
    Ctrl-C then ends a complete run (exit 0, not "interrupted") and turns torque off."""
    with emulated("arm") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        main, side = pty.openpty()
        proc = subprocess.Popen(
            platform_cmd("record", "--robot", "arm", *ports, "--dataset", "end", "--data-root", str(tmp_path),
                         "--task", "wave", "--episodes", "1", "--episode-time-s", "0.5", "--reset-time-s", "0",
                         "--no-tui", "--no-cameras", "--allow-uncalibrated", f"telemetry.address={tmp_path}/t.sock"),
            env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), stdin=side,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        os.close(side)
        output = _Output(proc.stdout)
        try:
            output.wait_for("all 1 episode(s) recorded; the follower still follows")
            follower, leader = chains["follower"].servos, chains["leader"].servos
            time.sleep(1.0)  # the last take's commit, and a second of the hold
            assert all(servo.torque for servo in follower.values()), "torque went off at the end of the run"
            before = follower[ELBOW].get("goal_position")
            leader[ELBOW].plant.move_to(leader[ELBOW].plant.read(time.monotonic()).position + 0.3)
            time.sleep(1.5)
            moved = (follower[ELBOW].get("goal_position") - before) * follower[ELBOW].model.radians_per_tick
            assert proc.poll() is None, output.text()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            torque_after = [servo.torque for servo in follower.values()]
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(main)
    out = output.text()
    assert proc.returncode == 0, out[-3000:]
    assert moved == pytest.approx(0.3, abs=0.05), "the follower stopped following the leader after the last take"
    assert "recorded 1 episode(s)" in out and "interrupted" not in out
    assert "torque is off: the arms no longer hold their pose" in out and not any(torque_after)
    store = EpisodeStore.open(tmp_path / "end.zarr")
    assert len(store) == 1 and store.episode(0).length == 15  # the hold recorded nothing


def test_episodes_name_the_camera_of_each_role_and_a_resume_says_when_that_changed(tmp_path):
    """Two roles' serials set the other way round in the config (copied from another rig)
    record the wrist view as "front", a policy then trains on the wrong picture, and nothing
    in the store said which camera was which. Each episode now names them, and record
    --resume warns when a role's camera differs from the store's last episode."""
    cameras = {role: RealSenseCamera(RealSenseConfig(role, serial, 64, 48, 30))
               for role, serial in (("front", "849312070001"), ("wrist", "849312070002"))}
    rig = Rig(robot=None, teleop=None, features={}, joint_names=[], clock=None, task_text="wave", cameras=cameras)
    assert rig.camera_serials == {"front": "849312070001", "wrist": "849312070002"}
    store = open_store(tmp_path / "cams.zarr")
    assert camera_changes(store, rig.camera_serials) is None  # nothing recorded yet
    session, _, writer = make_session(store, episodes=1, reset_time_s=0.0, camera_serials=rig.camera_serials)
    session.run()
    writer.close()
    assert store.episode(0).extra["camera_serials"] == rig.camera_serials
    assert camera_changes(store, rig.camera_serials) is None
    swapped = camera_changes(store, {"front": "849312070002", "wrist": "849312070001"})
    assert swapped.startswith("camera 'front' is 849312070002, was 849312070001; 'wrist' is 849312070001, was")
    assert "(cameras swapped between roles?)" in swapped and "against robot.cameras.ROLE.serial" in swapped
    assert "(a camera replaced?)" in camera_changes(store, {"front": "849312079999", "wrist": "849312070002"})


@pytest.mark.slow
def test_a_resume_refused_after_the_robot_connected_leaves_an_arm_found_holding_holding(tmp_path):
    """A killed run left the follower holding; `record --resume` into a store of another
    robot is refused once the robot has connected (the store's features are compared with
    the rig's): the clean-up switched torque off and the arm dropped. It is closed as found."""
    from shallowpi.data.features import robot_features
    from shallowpi.robots.calibration import RobotCalibration
    from shallowpi.robots.dynamixel_robot import DynamixelRobot

    EpisodeStore.create(tmp_path / "other.zarr", robot_features(["a", "b"], {})).close()
    with emulated("arm") as (spec, chains):
        killed = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        killed.connect()
        for bus in killed.buses.values():
            bus.disconnect()  # the process died: ports closed, torque left on
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        refused = subprocess.run(
            platform_cmd("record", "--robot", "arm", *ports, "--dataset", "other", "--data-root", str(tmp_path),
                         "--task", "wave", "--resume", "--no-tui", "--no-cameras", "--allow-uncalibrated",
                         f"telemetry.address={tmp_path}/t.sock"),
            env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=120)
        torque = {servo.get("torque_enable") for servo in chains["follower"].servos.values()}
    assert refused.returncode != 0 and "recorded with other features" in refused.stderr, refused.stderr[-2000:]
    assert torque == {1}, "the refusal dropped the arm a killed run had left holding"
    assert "torque off NOT confirmed (bus 'follower': left holding, as a killed run left it)" in refused.stdout


def test_a_setting_the_session_refuses_is_refused_before_the_robot_is_touched(tmp_path):
    """record.on_interrupt=maybe (or record.episodes=0) was refused only once the robot had
    connected (its torque switched on) and the telemetry socket was bound, when the session
    was configured: a typo is now one line with no packet sent to a servo."""
    with emulated("arm") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        for setting, said in (("record.on_interrupt=maybe", "record.on_interrupt must be save or discard"),
                              ("record.reset_time_s=-1", "reset time >= 0")):
            refused = subprocess.run(
                platform_cmd("record", "--robot", "arm", *ports, "--dataset", "d", "--data-root", str(tmp_path),
                             "--task", "wave", "--no-tui", "--no-cameras", "--allow-uncalibrated", setting,
                             f"telemetry.address={tmp_path}/t.sock"),
                env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=120)
            assert refused.returncode == 2 and said in refused.stderr, refused.stderr[-2000:]
        served = {name: chain.packets_served for name, chain in chains.items()}
    assert served == {name: 0 for name in served}, "the refused runs talked to the servos"
    assert not (tmp_path / "t.sock").exists() and not (tmp_path / "d.zarr").exists()
