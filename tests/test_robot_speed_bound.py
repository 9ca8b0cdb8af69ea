"""The follower's speed bound is in time, not per call: after a late control tick the loop
starts the next one at once, and two commands a fraction of a millisecond apart each moved
a full step of top speed (twice the configured speed, every replan of a slow policy). On
dynamixel-sdk against the emulated servo chain."""

from __future__ import annotations

import time

import numpy as np
import pytest

from dxl_fixtures import emulated
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot

UNCALIBRATED = RobotCalibration("uncalibrated", "any")


def test_each_command_moves_at_most_top_speed_times_the_time_since_the_last():
    now = [100.0]
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, clock=lambda: now[0]) as robot:
        j = spec.joint_names.index("shoulder_pan")
        step, period = float(robot.max_step[j]), 1.0 / spec.fps
        far = float(robot.observe().state[j]) + 2.0  # every command at the bound
        goals = [float(robot.act({"shoulder_pan": far})[j])]  # the first after connect: one period
        for dt in (period, 0.0003, period, 5.0, period * 0.5):
            now[0] += dt
            goals.append(float(robot.act({"shoulder_pan": far})[j]))
        moves = np.diff(goals)
        assert moves == pytest.approx([step, step * 0.0003 / period, step, 1.25 * step, 0.5 * step], rel=1e-4)
        # A hold of the present pose moves nothing: the next command is a first one again.
        robot.hold()
        now[0] += 0.0001
        held = float(robot.observe().state[j])
        assert float(robot.act({"shoulder_pan": far})[j]) - held == pytest.approx(step, abs=0.01)


def test_a_loop_slower_than_the_robot_keeps_the_top_speed_in_time():
    """A 30 Hz recording or policy on a robot configured faster: the credit of 1.25 robot
    periods a command held every joint to a fraction of its top speed (75 % at 30 Hz on a
    50 Hz robot), and the catch-up handed over while the follower still moved. The credit
    counts the loop's own periods now; a stall in it still gains nothing."""
    now = [100.0]
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, clock=lambda: now[0]) as robot:
        j = spec.joint_names.index("shoulder_pan")
        step, loop = float(robot.max_step[j]), 5.0 / 3.0 / spec.fps  # the loop at 0.6 x robot.fps
        far = float(robot.observe().state[j]) + 3.0
        goals = [float(robot.act({"shoulder_pan": far})[j])]
        for dt in (loop, loop, loop, 5.0, loop):
            now[0] += dt
            goals.append(float(robot.act({"shoulder_pan": far})[j]))
        moves = np.diff(goals)
        # Until three intervals tell the loop's period, a command makes up for 1.25 of the
        # robot's (one or two intervals could be a stall).
        assert moves == pytest.approx([1.25 * step] * 2 + [step * 5 / 3, 1.25 * step * 5 / 3, step * 5 / 3], rel=1e-4)


def test_on_the_wall_clock_commands_sent_back_to_back_barely_move():
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED) as robot:
        j = spec.joint_names.index("shoulder_pan")
        velocity = spec.joints[j].max_velocity
        far = float(robot.observe().state[j]) + 2.0
        begun = time.monotonic()
        goals = [float(robot.act({"shoulder_pan": far})[j]) for _ in range(10)]  # as fast as the bus goes
        took = time.monotonic() - begun
        # A full step per call would be 0.9 rad after the first; in time it is what the
        # seconds the bus round trips took allow.
        assert goals[-1] - goals[0] <= velocity * took + 1e-6


def test_the_second_command_after_a_hold_gains_nothing_from_a_stall():
    """The loop's period is the median of the last intervals: with one interval known, that
    median was the stall itself, and the command after it moved max_velocity x the stall
    (0.41 rad after 0.6 s, against a cap of 1.25 periods)."""
    now = [100.0]
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, clock=lambda: now[0]) as robot:
        j = spec.joint_names.index("shoulder_pan")
        step = float(robot.max_step[j])
        robot.hold()
        far = float(robot.observe().state[j]) + 2.0
        first = float(robot.act({"shoulder_pan": far})[j])
        now[0] += 0.6
        assert float(robot.act({"shoulder_pan": far})[j]) - first == pytest.approx(1.25 * step, rel=1e-4)


class _Sagging:
    """A servo under a load it cannot fully lift: it settles `sag` rad below its goal (a
    proportional controller's steady error), tracking it at `speed` rad/s."""

    def __init__(self, speed: float, sag: float) -> None:
        from shallowpi.hardware.dynamixel.plant import TrackingPlant

        self.plant, self.sag = TrackingPlant(max_speed=speed), sag

    def set_torque(self, enabled: bool) -> None:
        self.plant.set_torque(enabled)

    def set_goal(self, position: float) -> None:
        self.plant.set_goal(position - self.sag)

    def read(self, now: float):
        return self.plant.read(now)

    def move_to(self, position: float) -> None:
        self.plant.move_to(position)


def test_a_joint_lagging_its_goal_under_load_rises_when_commanded_at_a_slow_speed_scale():
    """The lead bound pulled each goal to the measured position + the lead, a lead scaled
    down with --speed-scale: a joint sagging more than that under its load settled lower
    each tick, the goal lower still, and sank toward its limit whatever was commanded
    (0.3 rad commanded, the goal at -0.7 after 2.5 s). The lead is the config's speed's, and
    a goal the joint lags is kept, never pulled back."""
    from shallowpi.hardware.dynamixel.control_table import model_by_name
    from shallowpi.hardware.dynamixel.emulator import top_speed_rad_s

    def plant(bus, servo_id, model):
        from shallowpi.hardware.dynamixel.plant import TrackingPlant

        speed = top_speed_rad_s(model_by_name(model))
        return _Sagging(speed, 0.06) if (bus, servo_id) == wrist else TrackingPlant(max_speed=speed)

    from dxl_fixtures import robot_spec

    arm = robot_spec("arm")
    wrist = next((m.bus, m.id) for m in arm.motors if m.joint == "wrist_flex")
    with emulated("arm", plant) as (spec, _), DynamixelRobot(spec.with_speed_scale(0.1), UNCALIBRATED) as robot:
        j = spec.joint_names.index("wrist_flex")
        start = float(robot.observe().state[j])
        sent = []
        for _ in range(45):  # 1.5 s at 30 Hz
            robot.observe()
            sent.append(float(robot.act({"wrist_flex": start + 0.3})[j]))
            time.sleep(1 / 30)
        assert min(sent) >= start - 0.01 and sent[-1] > start + 0.1
