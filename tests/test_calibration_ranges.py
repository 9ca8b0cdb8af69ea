"""What calibration and connect check each joint's range against: a leader its own sweep
(not the follower's limits), a follower its servo model's own position limits (a Y servo's
signed about 0, not an X's 0..4095), and an entry measured as the kind of joint it is now."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import pytest

from dxl_fixtures import centred, emulated
from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.calibration import MotorCalibration
from shallowpi.robots.calibration import CalibrationError, RobotCalibration, arm_motors, calibrate
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.teleop.leader import LeaderFollower


class Hand:
    """Plays the operator at `calibrate`'s prompts on an emulated chain: at the zero pose
    every shaft goes to `zero` (rad from its centre tick); through the sweep each goes
    through `path` (rad from its zero; `paths` gives some servo IDs their own), waiting
    `dwell_s` at each point so the sampler (a read every 20 ms) sees it."""

    def __init__(self, chain, zero: float = 0.0, path: Sequence[float] = (0.5, -0.5, 0.0),
                 paths: Mapping[int, Sequence[float]] | None = None, dwell_s: float = 0.1) -> None:
        self.chain, self.zero, self.path, self.paths, self.dwell_s = chain, zero, path, dict(paths or {}), dwell_s

    def __call__(self, message: str) -> None:
        servos = self.chain.servos
        if "zero pose" in message:
            for servo in servos.values():
                servo.plant.move_to(self.zero)
        elif "Move every joint" in message:
            steps = max(len(p) for p in (self.path, *self.paths.values()))
            for step in range(steps):
                for i, servo in servos.items():
                    path = self.paths.get(i, self.path)
                    servo.plant.move_to(self.zero + path[min(step, len(path) - 1)])
                time.sleep(self.dwell_s)


def _calibrate(spec, chains, arm: str, hand: Hand) -> RobotCalibration:
    motors = {m.id: m.model for m in arm_motors(spec, arm)}
    with DynamixelBus(arm, spec.buses[arm].port, spec.buses[arm].baud, motors) as bus:
        return calibrate(spec, {arm: bus}, hand, [arm])


def test_a_bimanual_leader_zeroed_off_its_servos_centre_calibrates_and_leads():
    """The bimanual's limits (+-3.1 rad = +-2021 ticks) were checked on its leaders against
    the one turn their servos read, so a leader zero had to sit within ticks 2021..2074
    (+-2.3 deg) of every joint: a zero pose held by hand 0.05 rad off was refused "re-seat
    the horn". A leader is checked against what it was swept through."""
    with emulated("bimanual") as (spec, chains):
        gripper = next(m.id for m in spec.leaders[0].motors if m.joint == "left_gripper")
        calibration = _calibrate(spec, chains, "leader_left", Hand(chains["leader_left"], zero=0.05,
                                                                   paths={gripper: (0.6, 0.0)}))
        servos = chains["leader_left"].servos
        for servo in servos.values():
            servo.plant.move_to(0.05 + 0.3)
        time.sleep(0.05)
        with LeaderFollower(spec, calibration, ["left"]) as teleop:
            action = teleop.read()
    tick = spec.leaders[0].motors[0].model.radians_per_tick
    for m in spec.leaders[0].motors:
        assert action[m.joint] == pytest.approx(0.5 if m.id == gripper else 0.3, abs=3 * tick), m.joint


def test_a_leader_horn_a_spline_off_connects_and_reads_its_pose():
    """Zeroed one XM430 horn spline (360/25 deg, 164 ticks) off the centre tick, every
    leader joint's +-3.1 rad ran past tick 4095: teleoperation refused to connect, though
    the leader was swept through 800 ticks either side of its zero, nowhere near a turn."""
    with emulated("bimanual") as (spec, chains):
        leader = spec.leaders[0]
        zero = 2048 + 164
        entries = {m.joint: MotorCalibration(zero, m.direction, zero - 800, zero + 800, 500 if "gripper" in m.joint
                                             else 0, m.id, m.model.number) for m in leader.motors}
        calibration = RobotCalibration("c1", "bimanual", {"leader_left": entries})
        servos = chains["leader_left"].servos
        for servo in servos.values():
            servo.plant.move_to(servo.ticks_to_rad(zero - 400))
        time.sleep(0.05)
        with LeaderFollower(spec, calibration, ["left"]) as teleop:
            action = teleop.read()
    tick = leader.motors[0].model.radians_per_tick
    assert action["left_waist"] == pytest.approx(-400 * tick, abs=2 * tick)
    assert action["left_gripper"] == 0.0  # 400 ticks past closed: clipped at closed


def test_a_leader_swept_through_more_than_a_turn_is_refused_at_calibration_and_connect():
    """What the check on a leader is for: its servo reads one turn (0..4095), so a joint
    swept through more reads alike at two places in its range, and no reading says where
    it is. Across the turn's end alone it is read on (`_unwrapped`)."""
    with emulated("arm") as (spec, chains):
        roll = next(m for m in spec.leaders[0].motors if m.joint == "wrist_roll")
        spun = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 6.0, 5.0)  # rad: steps of a sixth of a turn, read on
        with pytest.raises(PlatformError, match=rf"robot 'arm': leader joint 'wrist_roll' was swept through ticks "
                                                rf"-?\d+\.\.\d+ at calibration, more than servo {roll.id}'s one turn "
                                                rf"of readings \(0\.\.4095\) on bus 'leader': .*calibrate it again, "
                                                rf"moving it through less than a turn"):
            _calibrate(spec, chains, "leader", Hand(chains["leader"], paths={roll.id: spun}, dwell_s=0.08))
        entries = centred(spec, spec.leaders[0].motors)
        over = RobotCalibration("c1", "arm", {"leader": {**entries, "wrist_roll": MotorCalibration(2048, 1, -100, 4100)}})
        with pytest.raises(PlatformError, match=r"leader joint 'wrist_roll' was swept through ticks -100\.\.4100"):
            LeaderFollower(spec, over).connect()


def test_a_y_servos_position_limit_advice_names_its_own_signed_range():
    """A YM080's positions are signed about 0 (factory limits -262144..262144): every Y servo
    was judged against an X's turn, 0..524287, and told to have its limits "written back" to
    0 and 524287, which would take away the negative half of its travel."""
    with emulated("humanoid") as (spec, chains):
        followers = {bus: centred(spec, [m for m in spec.motors if m.bus == bus]) for bus in spec.follower_buses()}
        roll = next(m for m in spec.motors if m.joint == "left_wrist_roll")
        servo = chains["left_arm"].servos[roll.id]
        assert (servo.get("min_position_limit"), servo.get("max_position_limit")) == (-262144, 262144)
        # Zeroed 30000 ticks up and swept +-250000 about it: the upper limit maps past 262144,
        # whose registers are the factory's: the horn's seat is the cause.
        moved = {**followers["left_arm"], "left_wrist_roll": MotorCalibration(30000, 1, -220000, 280000)}
        calibration = RobotCalibration("c1", "humanoid", {**followers, "left_arm": moved})
        with pytest.raises(PlatformError, match=r"joint 'left_wrist_roll' limits .* past servo 7's position limits "
                                                r"-262144\.\.262144 on bus 'left_arm': its travel crosses the end of "
                                                r"the servo's turn; re-seat the horn so the joint's mid-travel sits "
                                                r"near tick 0,") as err:
            DynamixelRobot(spec, calibration).connect()
        assert "narrowed" not in str(err.value)
        # Registers another tool narrowed: named, with the factory values to write back (the
        # limits: the centred entry's sweep, a whole turn, less SWEEP_MARGIN at each end).
        servo.set("min_position_limit", -200000)
        servo.set("max_position_limit", 200000)
        with pytest.raises(PlatformError, match=r"joint 'left_wrist_roll' limits -3\.01\d*\.\.3\.01\d* map to "
                                                r"ticks -251658\.\.251657, past servo 7's Min/Max Position Limit "
                                                r"registers -200000\.\.200000 on bus 'left_arm', narrowed from the "
                                                r"full turn -262144\.\.262144 \(another tool set them\): write them "
                                                r"back to -262144 and 262144 "):
            DynamixelRobot(spec, RobotCalibration("c1", "humanoid", followers)).connect()
        assert not any(s.torque for s in chains["left_arm"].servos.values())


def test_a_joint_calibrated_as_another_kind_is_refused():
    """Only a gripper's sweep records an opening span: a joint calibrated as revolute and now
    a gripper read raw ticks as its opening and sent every goal to its zero tick; one
    calibrated as a gripper and now revolute turned the gripper's measured way."""
    with emulated("arm") as (spec, chains):
        calibration = _calibrate(spec, chains, "follower", Hand(chains["follower"]))
        gripper_span = calibration.arms["follower"]["gripper"].span_ticks
        assert gripper_span > 0 and calibration.arms["follower"]["wrist_roll"].span_ticks == 0
        regrip = {"wrist_roll": "gripper", "gripper": "revolute"}
        for joint, kind in regrip.items():
            changed = dataclasses.replace(spec, joints=tuple(dataclasses.replace(j, kind=kind) if j.name == joint
                                                             else j for j in spec.joints))
            was = rf"a gripper \(span {gripper_span} ticks\)" if kind == "revolute" else "a revolute or linear joint"
            with pytest.raises(CalibrationError, match=rf"^joint '{joint}' on arm 'follower' of robot 'arm' is a "
                                                       rf"{kind} joint in its config but was calibrated as {was} "
                                                       rf"\(calibration {calibration.id}\); recalibrate it: "
                                                       rf"`platform calibrate --robot arm --arm follower`$"):
                DynamixelRobot(changed, calibration)
