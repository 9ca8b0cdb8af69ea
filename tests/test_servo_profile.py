"""How fast a servo follows its goals: the motion-profile registers and the Velocity Limit,
as the emulator models them (the e-manuals' factory values and what each register caps)
and as connect sets them, so that every servo follows its goals at up to its joint's
max_velocity, the speed every bound above the driver (act()'s step, the catch-up, the
executor's seam check) takes it for. On dynamixel-sdk against the emulated chains."""

from __future__ import annotations

import logging
import math
import time

import pytest

from dxl_fixtures import emulated
from shallowpi.errors import ConfigError
from shallowpi.hardware.dynamixel import protocol as p
from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.control_table import model_by_name
from shallowpi.hardware.dynamixel.emulator import EmulatedServo, ServoChain, build_chains
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.robots.spec import RobotSpec

UNCALIBRATED = RobotCalibration("uncalibrated", "any")
Y = "YM080-230-R099-RH"
X = "XM430-W350"


def _write(servo: EmulatedServo, field: str, value: int) -> int:
    """A WRITE of one field as the bus would send it, through the servo's access rules:
    its status error code (0: done)."""
    fld = servo.model.field(field)
    return servo.write(fld.address, fld.to_unsigned(value).to_bytes(fld.size, "little"))


def _speed(servo: EmulatedServo, clock: list[float], seconds: float = 0.5) -> float:
    """rad/s the shaft turns from the centre toward a goal 3 rad on (further than it gets in
    `seconds`), on the emulator's clock (`clock[0]`, monotonic s, advanced here: no sleeping)."""
    present = servo.model.field("present_position")
    servo.plant.move_to(0.0)  # torque off: the hand puts the shaft at the centre
    clock[0] += 1.0
    servo.read(present.address, present.size, clock[0])
    assert _write(servo, "goal_position", servo.rad_to_ticks(0.0)) == 0  # torque-on holds there
    assert _write(servo, "torque_enable", 1) == 0
    assert _write(servo, "goal_position", servo.rad_to_ticks(3.0)) == 0
    clock[0] += seconds
    servo.read(present.address, present.size, clock[0])
    assert _write(servo, "torque_enable", 0) == 0
    return servo.ticks_to_rad(servo.get("present_position")) / seconds


def test_an_emulated_servo_reads_its_factory_profile_and_turns_at_the_speed_its_registers_allow():
    """The emulator read 0 where a factory YM080 reads 2020 (20.2 rev/min) in Profile Velocity
    and 161 (1,610 rev/min^2) in Profile and Acceleration Limit, and capped its shaft at
    the model's default Velocity Limit whatever the registers held: no test could show a
    servo another tool set, or one the driver set right."""
    with ServoChain("arm", [EmulatedServo(1, Y), EmulatedServo(2, X)], baud=4_000_000) as chain, \
            DynamixelBus("arm", chain.path, 4_000_000, {1: Y, 2: X}) as bus:
        factory = {f: bus.read_one(1, f) for f in ("profile_velocity", "profile_acceleration", "acceleration_limit",
                                                    "velocity_limit")}
        assert factory == {"profile_velocity": 2020, "profile_acceleration": 161, "acceleration_limit": 161,
                           "velocity_limit": 2020}
        assert (bus.read_one(2, "profile_velocity"), bus.read_one(2, "profile_acceleration")) == (0, 0)
    ym080, xm430 = model_by_name(Y), model_by_name(X)
    y, x = EmulatedServo(1, Y), EmulatedServo(2, X)
    rpm, clock = 2 * math.pi / 60, [time.monotonic()]
    assert _speed(y, clock) == pytest.approx(20.2 * rpm, rel=0.01)  # the factory profile: 2.12 of its 3.37 rad/s
    assert _write(y, "profile_velocity", 1000) == 0
    assert _speed(y, clock) == pytest.approx(10.0 * rpm, rel=0.01)  # another tool's slower profile
    assert _write(y, "profile_velocity", 0) == 0
    assert _speed(y, clock) == pytest.approx(20.2 * rpm, rel=0.01)  # no profile: the Velocity Limit still caps a Y
    assert _write(y, "velocity_limit", 3000) == 0
    assert _speed(y, clock) == pytest.approx(30.0 * rpm, rel=0.01)
    assert _write(y, "velocity_limit", 3500) == 0
    assert _speed(y, clock) == pytest.approx(ym080.no_load_rad_s, rel=0.01)  # 35 rev/min let, 32.2 turned at most
    # A Y servo refuses a profile above its limit registers (a Data Limit Error), as the manual says.
    assert _write(y, "profile_velocity", 3501) == p.ERR_DATA_LIMIT
    assert _write(y, "profile_acceleration", 162) == p.ERR_DATA_LIMIT
    assert (y.get("profile_velocity"), y.get("profile_acceleration")) == (0, 161)
    # X: Profile Velocity 0 is no profile, at the motor's no-load speed; another caps it.
    assert _speed(x, clock) == pytest.approx(xm430.no_load_rad_s, rel=0.01)
    assert _write(x, "profile_velocity", 50) == 0
    assert _speed(x, clock) == pytest.approx(50 * 0.229 * rpm, rel=0.01)


def test_the_humanoid_arms_follow_their_goals_at_the_configured_speed_on_factory_servos(caplog):
    """humanoid.yaml gives its Y-series arm joints 2.5 rad/s, which the YM080 reaches (32.2
    rev/min at no load, 3.37 rad/s), but a factory one caps its motion at 2020 x 0.01 rev/min
    (2.12 rad/s) in both Profile Velocity and Velocity Limit: the arm fell behind every goal
    moving at the configured speed, 0.39 rad more each second, which no bound above the
    driver knew. Connect raises the Velocity Limit (EEPROM) to the joint's speed and switches
    the profile off; the shaft then turns at the configured speed."""
    unit = model_by_name(Y).velocity_unit_rad_s
    with emulated("humanoid") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED) as robot:
        elbow = next(m for m in spec.motors if m.joint == "left_elbow")
        bus = robot.buses[elbow.bus]
        present = bus.read(["present_position"], [elbow.id])["present_position"][elbow.id]
        bus.write("goal_position", {elbow.id: present + round(2.5 / elbow.model.radians_per_tick)})  # 2.5 rad on
        time.sleep(0.3)
        velocity = bus.read(["present_velocity"], [elbow.id])["present_velocity"][elbow.id] * unit
        assert velocity >= 2.5  # the joint's max_velocity
        for motor in spec.motors:
            servo, joint = chains[motor.bus].servos[motor.id], spec.joints[spec.joint_names.index(motor.joint)]
            assert (servo.get("profile_velocity"), servo.get("profile_acceleration")) == (0, 0), motor.joint
            if motor.model.series == "Y" and joint.kind == "revolute":
                assert servo.get("velocity_limit") * unit >= joint.max_velocity, motor.joint
    assert "Velocity Limit (in 0.01 rev/min) raised to the joints' max_velocity on bus 'left_arm' " \
           "(below it the servo would lag its goals): servos 1, 2, 3, 4, 5, 6, 7 from 2020 to 2388" in caplog.text


def _mixed(max_velocity: float = 2.5) -> dict:
    """A Y-series joint and an X-series one on one bus."""
    return {"name": "mixed", "fps": 30,
            "joints": [{"name": "elbow", "lower": -3.0, "upper": 3.0, "max_velocity": max_velocity},
                       {"name": "wrist", "lower": -3.0, "upper": 3.0, "max_velocity": 3.0}],
            "buses": {"arm": {"port": "/dev/null", "baud": 4_000_000}},
            "motors": {"elbow": {"bus": "arm", "id": 1, "model": Y}, "wrist": {"bus": "arm", "id": 2, "model": X}}}


def _connected(raw: dict, leave) -> tuple[RobotSpec, dict]:
    spec = RobotSpec.from_config(raw)
    chains = build_chains(spec.bus_motors())
    leave(chains["arm"].servos)
    return spec.with_ports({"arm": chains["arm"].path}), chains


def test_a_profile_or_velocity_limit_another_tool_left_is_undone_at_connect(caplog):
    """RAM (and the Y's Hybrid area) keeps another tool's profile until power-off: ROBOTIS's
    AI Worker runs its YM080s in a time-based profile (Drive Mode 68: bit 2, with the dynamic
    brake), Dynamixel Wizard leaves whatever was last typed. How the arm moved depended on
    which tool had touched it last. Connect clears the time-based bit (the other bits stay),
    zeroes Profile Velocity and Acceleration, and raises a lowered Velocity Limit, each said."""
    caplog.set_level(logging.INFO)

    def another_tool(servos):
        y, x = servos[1], servos[2]
        y.set("drive_mode", 0x44)  # time-based profile + dynamic brake
        y.set("velocity_limit", 1000)  # 10 rev/min
        y.set("profile_velocity", 1000)
        x.set("drive_mode", 0x04)
        x.set("profile_velocity", 50)  # 11.5 rev/min, 1.2 rad/s
        x.set("profile_acceleration", 20)

    spec, chains = _connected(_mixed(), another_tool)
    try:
        y, x = chains["arm"].servos[1], chains["arm"].servos[2]
        with DynamixelRobot(spec, UNCALIBRATED) as robot:
            assert (y.get("drive_mode"), x.get("drive_mode")) == (0x40, 0)
            assert y.get("velocity_limit") == 2388  # 2.5 rad/s in 0.01 rev/min, rounded up
            for servo in (y, x):
                assert (servo.get("profile_velocity"), servo.get("profile_acceleration")) == (0, 0)
            bus = robot.buses["arm"]
            present = bus.read(["present_position"], [2])["present_position"][2]
            bus.write("goal_position", {2: present + 1000})  # 1.5 rad on
            time.sleep(0.2)
            velocity = bus.read(["present_velocity"], [2])["present_velocity"][2]
            assert velocity * x.model.velocity_unit_rad_s >= 3.0  # the wrist's max_velocity
    finally:
        chains["arm"].stop()
    assert "servo 1 on bus 'arm' had Drive Mode's time-based profile set; cleared" in caplog.text
    assert "servo 2 on bus 'arm' had Drive Mode's time-based profile set; cleared" in caplog.text
    assert "on bus 'arm' (below it the servo would lag its goals): servo 1 from 1000 to 2388" in caplog.text
    assert "motion profiles switched off on bus 'arm' (Profile Velocity/Acceleration 0): servo 1 had 1000/161, " \
           "servo 2 had 50/20" in caplog.text


def test_a_max_velocity_past_what_the_servo_turns_under_its_velocity_limit_is_refused_naming_it():
    """3.6 rad/s passes the config's check (1.25x the YM080's 3.37 rad/s no-load speed, for
    a servo on a higher supply) but not a factory Velocity Limit, which connect raises only
    up to the no-load speed: refused in one line naming the register and its value, torque
    off."""
    spec, chains = _connected(_mixed(3.6), lambda servos: None)
    try:
        with pytest.raises(ConfigError, match=r"^robot 'mixed': joint 'elbow' max_velocity asks 3.6 rad/s of servo 1 "
                                              r"on bus 'arm', above its Velocity Limit\(72\) 2020 \(2.12 rad/s\) and "
                                              r"its YM080-230-R099-RH's no-load speed \(32.2 rev/min = 3.37 rad/s\), "
                                              r"past which the limit is not raised; lower max_velocity in "
                                              r"configs/robot/mixed.yaml$"):
            DynamixelRobot(spec, UNCALIBRATED).connect()
        assert not any(s.torque for s in chains["arm"].servos.values())
        assert chains["arm"].servos[1].get("velocity_limit") == 2020
    finally:
        chains["arm"].stop()
