"""The slow start of teleoperation (robots/catch_up.py): the follower closes on leader arms
posed far from it at a fraction of its top speed, on a straight line, and the recorder
begins no episode before it has; then the leader's goals pass through untouched. Checked
alone, in the recorder's loop, and on dynamixel-sdk against emulated servo chains."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from dxl_fixtures import centred, emulated
from recorder_fixtures import JOINTS, FakeArm, open_store
from shallowpi.cli import main
from shallowpi.data import EpisodeStore
from shallowpi.data.features import ACTION_KEY, STATE_KEY, robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.errors import PlatformError
from shallowpi.record.clock import SimulatedClock, TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.catch_up import CatchUp

STEP = np.array([0.1, 0.05, 0.2])  # each joint's move in one act() at top speed


def _catch_up(speed: float = 0.25) -> CatchUp:
    return CatchUp(JOINTS, STEP, np.full(3, -3.0), np.full(3, 3.0), speed, fps=30.0)


def test_the_follower_closes_on_a_straight_line_at_the_slow_speed_then_goals_pass_through():
    catch_up = _catch_up()
    present, leader = np.zeros(3), np.array([1.2, -0.3, 0.4])
    goals = [present]
    while not catch_up.done:
        goal = catch_up(leader, present)
        assert len(goals) < 100
        goals.append(np.asarray(goal, np.float64))
    moves = np.diff(np.stack(goals[:-1]), axis=0)  # the last goal is the leader's own
    # No joint faster than its slow step; the slowest joint (in its own steps) at that pace.
    assert np.all(np.abs(moves) <= 0.25 * STEP + 1e-12)
    assert np.max(np.abs(moves) / (0.25 * STEP), axis=1) == pytest.approx(np.ones(len(moves)))
    # Every joint travels the same fraction of its gap each tick: a straight line in joint space.
    fractions = moves / leader
    assert fractions == pytest.approx(np.repeat(fractions[:, :1], 3, axis=1))
    # Handed over within one full-speed step of the leader, the leader's goal itself.
    assert np.all(np.abs(leader - goals[-2]) <= STEP)
    assert goals[-1] is not None and np.array_equal(goals[-1], leader)
    assert len(goals) - 2 == pytest.approx((1.2 - 0.1) / 0.025, abs=1)  # the shoulder's slow ticks
    moving = {"shoulder": 2.0, "elbow": -1.0}
    assert catch_up(moving, present) is moving  # caught up: untouched, even far away
    assert catch_up.seconds_left() == 0.0


def test_a_goal_past_a_limit_is_caught_up_at_the_limit_and_a_bad_goal_is_one_line():
    catch_up = _catch_up(speed=1.0)
    for _ in range(40):
        goal = catch_up({"shoulder": 5.0}, np.zeros(3))  # the robot would hold it at 3.0
        if catch_up.done:
            break
    assert catch_up.done and goal == {"shoulder": 5.0}
    with pytest.raises(PlatformError, match="names joint 'wrist', which the robot does not have"):
        _catch_up()({"wrist": 0.0}, np.zeros(3))
    with pytest.raises(PlatformError, match="sent 2 goals; the robot has 3 joints"):
        _catch_up()(np.zeros(2), np.ones(3))
    for speed in (0.0, 1.5):
        with pytest.raises(PlatformError, match=r"catch-up speed must be in \(0, 1\]"):
            _catch_up(speed)


def test_a_robot_resting_outside_its_limits_is_ramped_back_from_where_it_is(caplog):
    """The ramp started from the measured pose clipped to the limits: a shoulder resting at
    1.5 with limits +-0.5 had its first goal at 0.475, a 1.0 rad step (the robot's velocity
    bound then took it at top speed), and the operator was told it was 0.50 away. It starts
    where the robot is, and the line says the real distance."""
    catch_up = CatchUp(JOINTS, STEP, np.array([-0.5, -3.0, -3.0]), np.array([0.5, 3.0, 3.0]), 0.25, fps=30.0)
    present = np.array([1.5, 0.0, 0.0])
    goals = [present]
    with caplog.at_level("WARNING", logger="shallowpi.robots.catch_up"):
        while not catch_up.done:
            goal = catch_up({"shoulder": 0.2, "elbow": 0.0, "gripper": 0.0}, present)
            assert len(goals) < 100
            goals.append(np.asarray(goal, np.float64) if not isinstance(goal, dict) else goal)
    assert "(shoulder is 1.30 away)" in caplog.text
    ramp = np.stack(goals[:-1])
    assert np.all(np.abs(np.diff(ramp, axis=0)) <= 0.25 * STEP + 1e-12)  # the slow step, from the first tick
    assert abs(ramp[-1, 0] - 0.2) <= STEP[0] and len(ramp) - 1 == pytest.approx((1.3 - 0.1) / 0.025, abs=1.5)
    # A joint the goal leaves out is brought inside its limits on the ramp too.
    catch_up = CatchUp(JOINTS, STEP, np.array([-0.5, -3.0, -3.0]), np.array([0.5, 3.0, 3.0]), 0.25, fps=30.0)
    first = np.asarray(catch_up({"elbow": 0.0}, present), np.float64)
    assert first[0] == pytest.approx(1.5 - 0.25 * STEP[0])


def test_on_emulated_servos_a_follower_parked_outside_its_limits_comes_back_at_the_slow_speed():
    """The pan's limits narrowed to +-0.5 and its follower parked at 1.1: connected, it is
    held there; the catch-up's ramp back in used to be clipped to the limit by act(), which
    took the pan there at its top speed (3 rad/s, not 0.25 x 3). Every goal sent now lies
    between where the pan was and the limit, one slow step a tick, and the measured pan
    follows at that speed."""
    from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.teleop.leader import LeaderFollower

    with emulated("arm") as (spec, chains):
        joints = tuple(dataclasses.replace(j, lower=-0.5, upper=0.5) if j.name == "shoulder_pan" else j
                       for j in spec.joints)
        spec = dataclasses.replace(spec, joints=joints)
        calibration = dataclasses.replace(RobotCalibration(UNCALIBRATED, "arm"),
                                          arms={"follower": centred(spec, spec.motors)})
        pan = spec.joint_names.index("shoulder_pan")
        chains["follower"].servos[spec.motors[pan].id].plant.move_to(1.1)
        chains["leader"].servos[next(m.id for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
                                ].plant.move_to(0.2)
        time.sleep(0.05)
        with LeaderFollower(spec, calibration) as teleop, DynamixelRobot(spec, calibration) as robot:
            catch_up, clock = CatchUp.for_robot(robot, 0.25), TickClock(30.0)
            slow = 0.25 * 3.0 / 30.0  # rad a tick
            lead = float(robot.max_lead[pan])
            sent, measured = [], []
            while not catch_up.done:
                state = robot.observe().state
                measured.append((time.monotonic(), float(state[pan])))
                sent.append(float(robot.act(catch_up(teleop.read(), state))[pan]))
                assert len(sent) < 60
                clock.wait()
    assert measured[0][1] == pytest.approx(1.1, abs=0.01)
    ramp = np.array([measured[0][1], *sent[:-1]])  # the last is the leader's own goal
    assert np.all(np.diff(ramp) <= 0)  # inward
    # One slow step beyond the last goal at most, but after a goal act() held back to
    # max_lead from a pan lagging it (a loaded machine: CI, at load 10, saw one goal more
    # than a slow step beyond the last) the next may make up that ground, staying within
    # max_lead of the pan.
    here = np.array([p for _, p in measured[:len(ramp) - 1]])
    held = np.r_[False, np.abs(ramp[1:-1] - (here[:-1] - lead)) < 1e-6]  # the goal before each step, held back
    bound = np.where(held, np.minimum(ramp[:-1] - slow, here - lead), ramp[:-1] - slow)
    assert np.all(ramp[1:] >= bound - 1e-5), (ramp, here)
    assert abs(sent[-1] - 0.2) <= 3.0 / 30.0 + 1e-5 and len(sent) >= 0.8 / slow - 2
    (t0, p0), (t1, p1) = measured[0], measured[-1]
    assert p0 - p1 > 0.7 and (p0 - p1) / (t1 - t0) < 0.25 * 3.0 * 1.15  # wall-clock speed, jitter allowed


class _StillLeader:
    """A leader arm held still, posed away from the follower."""

    def __init__(self, pose: dict[str, float]) -> None:
        self.pose = pose

    def read(self) -> dict[str, float]:
        return dict(self.pose)


def test_the_recorder_begins_no_episode_before_the_follower_has_caught_up(tmp_path):
    store = open_store(tmp_path / "d.zarr")
    arm, writer = FakeArm(), BackgroundWriter(store)
    pose = {"shoulder": 1.0, "elbow": 0.0, "gripper": 0.5}
    statuses: list[tuple[str, str, list[float]]] = []
    config = SessionConfig(task="wave", episodes=1, episode_time_s=0.5, reset_time_s=0.0, fps=30.0, robot="fake")
    session = RecordingSession(config, arm, _StillLeader(pose), writer, SimulatedClock(30.0), JOINTS,
                               publish=lambda s: statuses.append((s.state.value, s.message, list(s.follower))),
                               catch_up=_catch_up())
    result = session.run()
    writer.close()
    assert not result.fault and len(store) == 1
    # Gripper: 0.5 at 0.25 x 0.2 a tick is 10 ticks, shoulder 1.0 at 0.025 is 40: the
    # shoulder sets the pace, and recording begins once it is within a full step (0.1).
    before = [s for s in statuses if s[0] != "recording"][:36]
    assert all("the robot is closing on the leader at 25% of its top speed: shoulder" in m for _, m, _ in before[1:])
    followed = np.array([f for _, _, f in statuses])
    assert np.all(np.abs(np.diff(followed[:37], axis=0)) <= 0.25 * STEP + 1e-6)
    episode = store.read_episode(0)
    np.testing.assert_allclose(episode[ACTION_KEY], np.tile([1.0, 0.0, 0.5], (15, 1)), atol=1e-6)
    assert np.all(np.abs(episode[STATE_KEY][0] - [1.0, 0.0, 0.5]) <= STEP + 1e-6)


def test_on_emulated_servos_a_far_leader_is_reached_slowly_before_recording(tmp_path):
    """The hardware path: LeaderFollower and DynamixelRobot on dynamixel-sdk against the
    emulator, the wall clock at the arm's 30 Hz. The follower rests at zero, the leader is
    posed 1.0 rad away at the pan and -0.8 at the elbow: the follower's measured pan never
    moves faster than a quarter of its 3 rad/s, and the first row recorded is the leader's."""
    from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.teleop.leader import LeaderFollower

    with emulated("arm") as (spec, chains):
        store = EpisodeStore.create(tmp_path / "d.zarr", robot_features(spec.joint_names, {}),
                                    StoreSettings(durable=False))
        by_joint = {m.joint: m.id for m in spec.leaders[0].motors}
        chains["leader"].servos[by_joint["shoulder_pan"]].plant.move_to(1.0)
        chains["leader"].servos[by_joint["elbow_flex"]].plant.move_to(-0.8)
        calibration = dataclasses.replace(RobotCalibration(UNCALIBRATED, "arm"),
                                          arms={"follower": centred(spec, spec.motors)})
        with LeaderFollower(spec, calibration) as teleop, DynamixelRobot(spec, calibration) as robot:
            writer = BackgroundWriter(store)
            states: list[tuple[str, float, list[float]]] = []
            config = SessionConfig(task="reach", episodes=1, episode_time_s=0.2, reset_time_s=0.0, fps=30.0)
            session = RecordingSession(
                config, robot, teleop, writer, TickClock(30.0), spec.joint_names,
                publish=lambda s: states.append((s.state.value, time.monotonic(), list(s.follower))),
                catch_up=CatchUp.for_robot(robot, 0.25))
            result = session.run()
            writer.close()
    assert not result.fault and len(store) == 1
    pan = spec.joint_names.index("shoulder_pan")
    began = next(i for i, (s, _, _) in enumerate(states) if s == "recording")
    waiting = [(t, f[pan]) for _, t, f in states[:began]]
    assert len(waiting) >= 30  # ~1.3 s at 0.75 rad/s
    (t0, p0), (t1, p1) = waiting[0], waiting[-1]
    assert p1 - p0 > 0.8 and (p1 - p0) / (t1 - t0) < 0.25 * 3.0 * 1.15  # wall-clock speed, jitter allowed
    first = store.read_episode(0)[ACTION_KEY][0]
    assert first[pan] == pytest.approx(1.0, abs=0.01)
    assert first[spec.joint_names.index("elbow_flex")] == pytest.approx(-0.8, abs=0.01)


def test_record_refuses_a_catch_up_speed_outside_0_to_1_before_anything_connects(tmp_path, capsys):
    code = main(["record", "--robot", "arm", "--dataset", str(tmp_path / "d.zarr"), "--task", "t",
                 "record.catch_up_speed=4", f"telemetry.address={tmp_path / 't.sock'}"])
    assert code != 0
    assert "record.catch_up_speed must be in (0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "d.zarr").exists()
