"""`--sim stack`: the twin through the real drivers (DynamixelRobot over emulated servo
chains, RealSenseCamera over software devices) gives what `--sim direct` gives, up to
servo-tick quantisation, and records a dataset that `platform dataset check` accepts."""

from __future__ import annotations

import dataclasses
import os
import subprocess

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("pyrealsense2", exc_type=ImportError)

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import assert_losses_on
from shallowpi import config
from shallowpi.data import EpisodeStore
from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.plants import quantum
from shallowpi.robots.sim.stack import StackSimRobot
from shallowpi.robots.sim.tasks import make_tasks
from shallowpi.robots.sim.twin import TwinSpec
from shallowpi.robots.spec import RobotSpec


@pytest.mark.parametrize("calibrated", [False, True])
def test_twin_plant_converts_like_the_driver(calibrated: bool) -> None:
    """A goal the driver writes in ticks lands on the twin's joint in joint units, and the
    joint's position reads back as the same ticks: the plant inverts `JointConverter`."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.hardware.dynamixel.emulator import EmulatedServo
    from shallowpi.robots.sim.plants import TwinJoints, twin_plant_factory
    from shallowpi.robots.sim.twin import SimTwin

    cfg = config.compose(["robot=arm"]).robot
    spec = RobotSpec.from_config(cfg)
    arms = {}
    if calibrated:  # off-centre zeros, reversed directions (the config's too), a narrower gripper span
        spec = dataclasses.replace(spec, motors=[dataclasses.replace(m, direction=-1) for m in spec.motors])
        arms = {"follower": {m.joint: MotorCalibration(m.model.center_tick + 37 * (m.id - 4), -1, 0, 4095,
                                                       700 if m.joint == "gripper" else 0)
                             for m in spec.motors}}
    calibration = RobotCalibration("test" if calibrated else UNCALIBRATED, "arm", arms)
    kinds = {j.name: j.kind for j in spec.joints}
    twin = SimTwin(TwinSpec.from_config(cfg, 32, 32))
    twin.reset()
    factory = twin_plant_factory(spec, calibration, TwinJoints(twin))
    for i, motor in enumerate(spec.motors):
        converter = calibration.converter(motor, kinds[motor.joint])
        servo = EmulatedServo(motor.id, motor.model, factory(motor.bus, motor.id, motor.model.name))
        joint = spec.joints[i]
        for value in np.linspace(joint.lower, joint.upper, 7)[1:-1]:
            ticks = converter.to_ticks(value)
            servo.plant.set_goal(servo.ticks_to_rad(ticks))
            assert twin.joint_goals()[i] == pytest.approx(converter.to_joint(ticks), abs=1e-9)
            twin.data.qpos[twin.model.joint(motor.joint).qposadr[0]] = converter.to_joint(ticks)
            assert servo.rad_to_ticks(servo.plant.read(0.0).position) == ticks
    twin.close()


def test_stack_and_direct_observe_the_same_for_the_same_seed_and_actions() -> None:
    cfg = config.compose(["robot=arm"]).robot
    twin_spec = TwinSpec.from_config(cfg, 64, 48)
    task = make_tasks("arm")["cube_in_bowl"]
    with StackSimRobot(RobotSpec.from_config(cfg), twin_spec) as stack, DirectSimRobot(twin_spec) as direct:
        stack.reset(7, task)
        direct.reset(7, task)
        tick = quantum(stack.spec, stack.calibration)  # one servo tick in joint units
        home = direct.twin.joint_goals()
        sweep = np.array([0.03, 0.002, -0.03, 0.04, 0.03, -0.05, 0.03])  # within the velocity bound
        served = sum(c.packets_served for c in stack._chains.values())
        for k in range(25):
            # Goals on the servo grid reach the twin unchanged through the ticks, so both
            # twins run the same physics; the driver still reads back whole ticks.
            goal = np.round((home + sweep * np.sin(k / 5)) / tick) * tick
            np.testing.assert_allclose(stack.act(goal), direct.act(goal), atol=1e-9)
            a, b = stack.observe(), direct.observe()
            np.testing.assert_allclose(a.state, b.state, rtol=0,
                                       atol=0.5 * tick.max() + 1e-7)
            assert np.all(np.abs(a.state - b.state) <= 0.5 * tick + 1e-7)
            assert a.time_s == pytest.approx(b.time_s, abs=1e-12)
            for role in twin_spec.cameras:
                np.testing.assert_array_equal(a.frames[role].image, b.frames[role].image)
            # Both on simulated time: each frame is this tick's render, captured at the tick.
            assert a.frame_ages_s() == b.frame_ages_s() == {role: 0.0 for role in twin_spec.cameras}
        # The state moved, and it came over the bus; every rendered frame was read once.
        assert np.abs(b.state - home).max() > 0.01
        assert sum(c.packets_served for c in stack._chains.values()) > served + 2 * 25
        assert all(c.stats.dropped == 0 for c in stack.cameras.values())


@pytest.mark.slow
def test_record_through_the_stack_is_checked_and_successful(tmp_path) -> None:
    run = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "stack", "--task", "cube_in_bowl", "--episodes", "1",
                     "--no-tui", "record.sim_size=64x64", f"telemetry.address={tmp_path}/t.sock",
                     "--data-root", str(tmp_path), "--dataset", "d"),
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    check = subprocess.run(platform_cmd("dataset", "check", "d", "--data-root", str(tmp_path)),
                           env=subprocess_env(), capture_output=True, text=True)
    assert check.returncode == 0 and "ok, 1 episodes" in check.stdout, check.stdout + check.stderr
    store = EpisodeStore.open(tmp_path / "d.zarr")
    (summary,) = store.episodes
    assert summary.success is True and summary.length > 60
    episode = store.read_episode(0)
    np.testing.assert_allclose(np.diff(episode["timestamp"]), 1 / 30, rtol=1e-6)  # simulated time
    assert episode["observation.images.wrist"].shape[1:] == (64, 64, 3)
    # Each frame is its tick's render: captured at the tick, on the same (simulated) clock.
    np.testing.assert_allclose(episode["observation.images.wrist.timestamp"], episode["timestamp"], atol=1e-9)
    # States are what the driver read: whole servo ticks of each joint.
    spec = RobotSpec.from_config(config.compose(["robot=arm"]).robot)
    ticks = episode["observation.state"] / quantum(spec, RobotCalibration(UNCALIBRATED, "arm"))
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-2)
    assert summary.dropped_frames == 0  # counted by the RealSense drivers from frame numbers
    # Which camera recorded each role, as the driver opened it (a swap shows on --resume).
    assert summary.extra["camera_serials"] == {"front": "SIM-front", "wrist": "SIM-wrist"}


@pytest.mark.slow
def test_stack_episodes_start_at_zero_and_hold_their_rows(tmp_path) -> None:
    """Through the real drivers too: each episode's first row is t = 0, read right after
    its scene was reset, and a 1 s episode holds 30 rows, back to back without a reset."""
    run = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "stack", "--task", "cube_in_bowl", "--episodes", "2",
                     "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui", "record.sim_size=32x32",
                     f"telemetry.address={tmp_path}/t.sock", "--data-root", str(tmp_path), "--dataset", "exact"),
        env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    store = EpisodeStore.open(tmp_path / "exact.zarr")
    assert len(store) == 2 and store.check() == []
    first, second = store.read_episode(0), store.read_episode(1)
    for episode in (first, second):
        np.testing.assert_allclose(episode["timestamp"], np.arange(30) / 30, rtol=0, atol=1e-9)
    # Both start at home as the bus reads it (same ticks), before the expert moved the arm.
    np.testing.assert_array_equal(first["observation.state"][0], second["observation.state"][0])
    assert [e.extra["seed"] for e in store.episodes] == [0, 1]


def test_a_servo_alarm_reaches_check_faults_through_the_drivers() -> None:
    """What the deploy's hold after a policy fault reads once a second: the emulated chain's
    latched overload, decoded by the real driver."""
    from shallowpi.errors import PlatformError

    cfg = config.compose(["robot=arm"]).robot
    with StackSimRobot(RobotSpec.from_config(cfg), TwinSpec.from_config(cfg, 64, 48)) as stack:
        stack.check_faults()  # none yet
        chain = next(iter(stack._chains.values()))
        servo_id = next(iter(chain.servos))
        chain.hardware_error(servo_id, "overload")
        with pytest.raises(PlatformError, match="overload"):
            stack.check_faults()


def test_the_servo_links_counts_reach_the_loop_through_the_drivers() -> None:
    """`deploy --sim stack` shows the servo retries a robot's run would: the exchanges the
    real driver made with the emulated chains, and a flaky servo's failed tries under its
    joint's name (the twin behind the drivers reported none: the base Robot's zeros)."""
    cfg = config.compose(["robot=arm"]).robot
    spec = RobotSpec.from_config(cfg)
    with StackSimRobot(spec, TwinSpec.from_config(cfg, 64, 48)) as stack:
        start = stack.link_counts()
        assert start.exchanges > 0 and start.failed_tries == 0  # connect() read and wrote the servos
        bus, chain = next(iter(stack._chains.items()))
        servo_id = next(iter(chain.servos))
        joint = next(m.joint for m in spec.motors if (m.bus, m.id) == (bus, servo_id))
        chain.flaky(servo_id, 2)
        for _ in range(5):
            stack.act(stack.observe().state)
        link = stack.link_counts().since(start)
        assert link.exchanges > 0 and link.failed_tries > 0
        assert_losses_on(link.failed_by_joint, joint)
