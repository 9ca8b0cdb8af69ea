"""`platform deploy` without --sim: the executor drives the robot through its real drivers,
dynamixel-sdk on emulated servo chains (ptys) and pyrealsense2's software device as the
RealSense camera the policy reads."""

from __future__ import annotations

import re
import threading
import time

import numpy as np
import pytest

from deploy_fixtures import tiny_checkpoint
from dxl_fixtures import emulated, robot_spec
from shallowpi.cli import parse_command
from shallowpi.data.store import EpisodeStore
from shallowpi.errors import ConfigError
from shallowpi.hardware.realsense_software import SoftwareRealSense

SIZE = {f"robot.cameras.{role}.{k}": v for role in ("front", "wrist") for k, v in (("width", 64), ("height", 48))}


class _FrontCamera:
    """A software RealSense streaming a moving gradient at 30 Hz until closed."""

    def __init__(self) -> None:
        self.device = SoftwareRealSense("SW-front", 64, 48, fps=30)
        self._on = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        i = 0
        while self._on.is_set():
            frame = np.add.outer(np.arange(48), np.arange(64) + i).astype(np.uint8)
            self.device.inject(np.repeat(frame[..., None], 3, -1))
            i += 1
            time.sleep(1 / 30)

    def __enter__(self) -> _FrontCamera:
        self._on.set()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._on.clear()
        self._thread.join(5)


def _deploy_words(ckpt, spec, tmp_path, *extra: str) -> list[str]:
    return ["deploy", "--policy", str(ckpt), "--robot", "arm", "--backend", "torch", "--no-tui",
            *extra, f"robot.buses.follower.port={spec.buses['follower'].port}",
            *(f"{k}={v}" for k, v in SIZE.items()), f"telemetry.address={tmp_path}/deploy.sock"]


@pytest.mark.slow
def test_without_sim_the_executor_drives_the_servos_and_records_what_it_sent(tmp_path, capsys):
    """Two 1-second episodes on the wall clock with a 0.3 s reset between them: the servos'
    goals follow the commands within the joint limits, torque is off at the end, and the
    recorded store holds both episodes with the camera's frames, the sent actions, the
    robot's calibration id and no success flag (nothing judges it on the robot)."""
    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",))
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        start_goals = {i: s.get("goal_position") for i, s in chains["follower"].servos.items()}
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave hello", "--episodes", "2",
                                           "--episode-time-s", "1", "--reset-time-s", "0.3",
                                           "--record", str(tmp_path / "deployed")))
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        servos = chains["follower"].servos
        torque_after = [s.torque for s in servos.values()]
        moved = [i for i, s in servos.items() if s.get("goal_position") != start_goals[i]]
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the arm (follower on /dev/pts/" in out and "cameras front" in out
    assert "not calibrated" in out  # no calibration file: said before the robot moves
    assert "reset the scene: episode 2 starts in 0.3 s" in out
    assert out.count(": not judged (") == 2 and "2 episodes, success not judged on the robot" in out
    assert moved, "no servo goal changed: the commands did not reach the bus"
    assert not any(torque_after), "torque stayed on after the deploy ended"
    store = EpisodeStore.open(tmp_path / "deployed.zarr")
    assert len(store) == 2
    lower = np.array([j.lower for j in arm.joints]) - 1e-5
    upper = np.array([j.upper for j in arm.joints]) + 1e-5
    for index in range(2):
        info, rows = store.episode(index), store.read_episode(index)
        assert info.length == 30, info.length  # 1 s at 30 Hz
        assert info.calibration_id == "uncalibrated" and info.success is None and info.task == "wave hello"
        assert rows["observation.images.front"].shape == (30, 48, 64, 3)
        assert rows["observation.images.front"].std() > 0  # the camera's frames, not a blank
        assert ((rows["action"] >= lower) & (rows["action"] <= upper)).all()


def test_without_sim_a_policy_that_does_not_fit_the_robot_or_no_task_is_one_line(tmp_path):
    """Checked before any port opens: the instruction is required, and a policy's state
    size and cameras must be the robot's."""
    arm = robot_spec("arm")
    seven = tiny_checkpoint(tmp_path / "seven", state=len(arm.joints), cameras=("front",))
    five = tiny_checkpoint(tmp_path / "five", state=5, cameras=("front",))
    side = tiny_checkpoint(tmp_path / "side", state=len(arm.joints), cameras=("side",))
    cases = [(seven, [], "pass the instruction to give the policy: --task"),
             (five, ["--task", "wave"], "state/action sizes 5/5 but robot 'arm' has 7 joints"),
             (side, ["--task", "wave"], "reads camera(s) ['side'] that robot 'arm' lacks")]
    for ckpt, extra, message in cases:
        args = parse_command(_deploy_words(ckpt, arm, tmp_path, *extra))
        with pytest.raises(ConfigError, match=re.escape(message)):
            args.run(args)
