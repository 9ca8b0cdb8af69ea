"""`platform deploy --speed-scale` on the robot: the slowed top speed reaches the servos.

The deploy runs through its real drivers on the emulated arm (test_deploy_robot.py's
camera and command line), and its --record store holds what every tick sent.
"""

from __future__ import annotations

import json

import numpy as np

from deploy_fixtures import tiny_checkpoint
from dxl_fixtures import emulated, robot_spec
from shallowpi.cli import parse_command
from shallowpi.data.store import EpisodeStore
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from test_deploy_robot import _deploy_words, _FrontCamera


def _steps_in_ticks(tmp_path, capsys, ckpt, name: str, *extra: str) -> np.ndarray:
    """Deploy one 1-s episode on the emulated arm, recorded as `name`; each tick's change of
    the command sent, per joint, in ticks of the config's top speed (max_velocity / fps),
    float[T-1, J]."""
    with emulated("arm") as (spec, _), _FrontCamera() as camera:
        # Closing on the untrained policy's far first action at full top speed (start_speed
        # 1, not 0.25): every tick of the second moves as fast as the robot allows.
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "1",
                                           "--episode-time-s", "1", "--reset-time-s", "0", "--allow-uncalibrated",
                                           "deploy.start_speed=1", "--record", str(tmp_path / name), *extra))
        code = args.run(args, camera_devices=lambda: [camera.device.device])
    out = capsys.readouterr().out
    assert code == 0, out
    top_step = np.array([j.max_velocity for j in spec.joints]) / spec.fps  # [J], the config's, unscaled
    with EpisodeStore.open(tmp_path / f"{name}.zarr") as store:
        sent = store.read_episode(0)["action"].astype(np.float64)  # [T, J], what Robot.act sent
    return np.abs(np.diff(sent, axis=0)) / top_step


def test_speed_scale_bounds_every_command_the_robot_is_sent(tmp_path, capsys):
    """At --speed-scale 0.5 no tick's command moves a joint more than half its top speed
    allows; without it the same deploy moves past that bound, so the bound is the scale's.
    A tick that comes late earns up to CREDIT_TICKS of credit (Robot.act bounds speed, not
    the step alone), hence the bound 0.5 x CREDIT_TICKS ticks."""
    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"])})
    bound = 0.5 * DynamixelRobot.CREDIT_TICKS + 1e-4  # + float32 rounding of the recorded actions

    slowed = _steps_in_ticks(tmp_path, capsys, ckpt, "slowed", "--speed-scale", "0.5")
    assert slowed.max() <= bound, f"a step of {slowed.max():.3f} ticks of top speed at --speed-scale 0.5"
    assert slowed.max() > 0.4  # it moved at (about) the slowed top speed: the bound was reached, not idled under

    full = _steps_in_ticks(tmp_path, capsys, ckpt, "full")
    assert full.max() > bound, f"the unscaled deploy's largest step, {full.max():.3f} ticks, is within the bound"
