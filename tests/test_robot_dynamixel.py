"""DynamixelRobot on emulated chains: configs, observe/act, clamping, faults, features."""

from __future__ import annotations

import math
import re
import time
from contextlib import contextmanager

import numpy as np
import pytest

from dxl_fixtures import centred, emulated, robot_spec
from shallowpi.data.features import robot_features
from shallowpi.errors import ConfigError, PlatformError
from shallowpi.hardware.camera import CameraTimeout, Frame
from shallowpi.hardware.dynamixel.emulator import build_chains
from shallowpi.hardware.dynamixel.motor_bus import BusError, ServoFaultError
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.robots.spec import RobotSpec, parse_ports

UNCALIBRATED = RobotCalibration("uncalibrated", "any")


@pytest.mark.parametrize("name", ["arm", "bimanual", "humanoid"])
def test_every_joint_has_a_motor_and_the_contract_is_kept(name):
    spec = robot_spec(name)
    assert [m.joint for m in spec.motors] == spec.joint_names
    assert all(m.bus in spec.buses for m in spec.motors)
    assert spec.leaders, "every robot has leader arms"
    kinds = {j.name: j.kind for j in spec.joints}
    assert {n for n, k in kinds.items() if k == "gripper"} == {n for n in spec.joint_names if n.endswith("gripper")}


def test_humanoid_arms_mix_series_and_bimanual_grippers_use_current_based_position():
    humanoid = robot_spec("humanoid")
    left_arm = {m.model.series for m in humanoid.motors if m.bus == "left_arm"}
    assert left_arm == {"X", "Y"}  # so reads on it are bulk reads
    assert humanoid.motors[humanoid.joint_names.index("lift")].metres_per_rad > 0
    bimanual = robot_spec("bimanual")
    grippers = [m for m in bimanual.motors if m.joint.endswith("gripper")]
    assert {m.mode.name for m in grippers} == {"CURRENT_BASED_POSITION"}
    assert {m.model.name for m in bimanual.motors} == {"XM540-W270", "XM430-W350"}


def test_config_errors_are_one_line_and_name_the_key():
    spec = robot_spec("arm")
    with pytest.raises(ConfigError, match=r"unknown bus\(es\) nope .* its buses are: follower, leader"):
        spec.with_ports({"nope": "/dev/null"})
    raw = {"name": "x", "fps": 30, "joints": [{"name": "a", "lower": 0, "upper": 1, "max_velocity": 1}],
           "buses": {"b": {"port": "/dev/null", "baud": 1000000}},
           "motors": {"a": {"bus": "b", "id": 1, "model": "XL430-W250", "mode": "current"}}}
    with pytest.raises(ConfigError, match=r"XL430-W250 \(joint 'a'\) has no current mode"):
        RobotSpec.from_config(raw)
    for metres_per_rad in (0, -0.15):  # 0 divided ticks by zero at the first goal; < 0 flipped the stage unseen
        stage = {**raw, "motors": {"a": {"bus": "b", "id": 1, "model": "XL430-W250", "metres_per_rad": metres_per_rad}}}
        with pytest.raises(ConfigError, match=rf"motor for 'a' has metres_per_rad {metres_per_rad:g}; give metres per "
                                              r"radian > 0 \(a reversed stage is direction: -1\)"):
            RobotSpec.from_config(stage)
    # Two buses on one port would write each other's servos (IDs repeat across arms).
    with pytest.raises(ConfigError, match=r"robot 'arm': buses 'follower' and 'leader' both name port /dev/pts/3; "
                                          r"give each bus its own"):
        spec.with_ports({"follower": "/dev/pts/3", "leader": "/dev/pts/3"})
    shared = {**raw, "motors": {"a": {"bus": "b", "id": 1, "model": "XL430-W250"}},
              "buses": {"b": {"port": "/dev/null", "baud": 1000000}, "c": {"port": "/dev/null", "baud": 1000000}}}
    with pytest.raises(ConfigError, match=r"configs/robot/x.yaml: buses 'b' and 'c' both name port /dev/null"):
        RobotSpec.from_config(shared)
    assert parse_ports('{"follower": "/dev/pts/3"}') == {"follower": "/dev/pts/3"}
    assert parse_ports("follower=/dev/pts/3,leader=/dev/pts/4") == {"follower": "/dev/pts/3", "leader": "/dev/pts/4"}


def test_a_speed_a_servo_reaches_on_a_higher_supply_or_a_grippers_passes_the_top_speed_check():
    """Refused is only a speed past 1.25x the no-load speed at the recommended voltage: an
    XM540-W270 on 14.8 V turns 37 rev/min (1.23x its 30 at 12 V), and a gripper's speed in
    open fraction/s depends on its calibrated span, which a config does not know."""
    raw = _robot_config("bimanual")
    raw["joints"][0].update(max_velocity=3.8)  # left_waist, XM540-W270: 37 rev/min = 3.87 rad/s at 14.8 V
    raw["joints"][6].update(max_velocity=40.0)  # left_gripper
    spec = RobotSpec.from_config(raw)
    assert (spec.joints[0].max_velocity, spec.joints[6].max_velocity) == (3.8, 40.0)
    raw["joints"][0].update(max_velocity=4.0)
    with pytest.raises(ConfigError, match=r"joint 'left_waist' max_velocity 4 rad/s is above what its XM540-W270"):
        RobotSpec.from_config(raw)


def _robot_config(name: str) -> dict:
    from omegaconf import OmegaConf

    from shallowpi import config

    return OmegaConf.to_container(config.compose([f"robot={name}"]).robot, resolve=True)


@pytest.mark.parametrize(("robot", "change", "says"), [
    # a misspelt key was taken for its default: the joint turned the wrong way, a linear
    # stage became a revolute joint, the leaders were gone, a role took any camera
    ("arm", lambda r: r["motors"]["elbow_flex"].update(dirction=-1),
     r"the motor of 'elbow_flex' has unknown key 'dirction' \(did you mean 'direction'\? motor keys: bus, "),
    ("arm", lambda r: r["motors"]["shoulder_lift"].update(meters_per_rad=0.15),
     r"unknown key 'meters_per_rad' \(did you mean 'metres_per_rad'\?"),
    ("arm", lambda r: r.update(leader=r.pop("leaders")), r"has unknown key 'leader' \(did you mean 'leaders'\?"),
    ("arm", lambda r: r["cameras"]["wrist"].update(serail="123"), r"camera 'wrist' has unknown key 'serail'"),
    # a leader's motors are read from their arm's bus
    ("arm", lambda r: r["leaders"]["leader"]["motors"]["gripper"].update(bus="follower"),
     r"leader 'leader' motor of 'gripper' has unknown key 'bus'"),
    ("arm", lambda r: r["joints"][2].update(max_velocity=float("inf")),
     r"joint 'elbow_flex' has max_velocity inf; give a finite number"),
    ("arm", lambda r: r["joints"][2].update(kind="grip"), r"joint 'elbow_flex' has kind 'grip'; kinds are revolute, "),
    # degrees for radians: every speed bound downstream (act()'s step, the executor's jump
    # check) would have taken 172 rad/s for what an XL330-M288 (103 rev/min) can do
    ("arm", lambda r: r["joints"][2].update(max_velocity=172.0),
     r"joint 'elbow_flex' max_velocity 172 rad/s is above what its XL330-M288 turns \(103 rev/min = 10.8 rad/s at "
     r"no load and the recommended voltage, 1.25x that at most\); max_velocity is in rad/s$"),
    # a linear stage's speed is the servo's times metres_per_rad (57 rev/min x 0.15 m/rad)
    ("arm", lambda r: r["joints"][1].update(max_velocity=1.2),
     r"joint 'shoulder_lift' max_velocity 1.2 m/s is above what its XL430-W250 turns \(57 rev/min = 0.895 m/s "),
    # a leader's linear joint without metres_per_rad took 1.0: its 0.3 rad went to the follower
    # as 0.3 m (0.045 m on the 0.15 m/rad stage); on any other joint it is ignored
    ("arm", lambda r: r["leaders"]["leader"]["motors"]["shoulder_lift"].pop("metres_per_rad"),
     r"leader motor for linear joint 'shoulder_lift' lacks metres_per_rad; give the metres its stage travels per "
     r"radian of the servo's turn"),
    ("arm", lambda r: (r["joints"][1].update(kind="linear"), r["motors"]["shoulder_lift"].pop("metres_per_rad")),
     r"motor for linear joint 'shoulder_lift' lacks metres_per_rad"),
    ("arm", lambda r: r["leaders"]["leader"]["motors"]["elbow_flex"].update(metres_per_rad=0.15),
     r"leader motor for revolute joint 'elbow_flex' has metres_per_rad, which only a linear joint uses; remove it"),
    ("arm", lambda r: r["motors"]["gripper"].update(metres_per_rad=0.15),
     r"motor for gripper joint 'gripper' has metres_per_rad, which only a linear joint uses"),
    ("arm", lambda r: (r["joints"][1].update(kind="revolute"), r["joints"][1].update(upper=1.0, max_velocity=3.0)),
     r"motor for revolute joint 'shoulder_lift' has metres_per_rad"),
    # the humanoid's 99:1 Y-series arm joints turn 32.2 rev/min, 3.37 rad/s
    ("humanoid", lambda r: r["joints"][3].update(max_velocity=4.3),
     r"joint 'left_elbow' max_velocity 4.3 rad/s is above what its YM080-230-R099-RH turns \(32.2 rev/min = 3.37 "),
    ("arm", lambda r: r.update(fps=0), r"fps is 0; give a whole number > 0"),
    ("arm", lambda r: r["cameras"]["front"].update(width=0), r"camera 'front' width is 0; give a whole number > 0"),
    ("arm", lambda r: r["motors"]["elbow_flex"].update(id="three"), r"motor for 'elbow_flex': invalid literal"),
    ("arm", lambda r: r["buses"]["leader"].pop("baud"), r"bus 'leader' lacks baud:"),
    ("arm", lambda r: r["joints"].append(dict(r["joints"][0])), r"joint name\(s\) shoulder_pan listed twice"),
    ("arm", lambda r: r["motors"]["elbow_flex"].update(model="XH430-W210"),
     r"unknown Dynamixel model 'XH430-W210'; known: .* \(another model is a ModelSpec entry in "),
    # a copy-paste slip: the right leader's elbow named left, so the left elbow followed the
    # right leader and the right elbow held still
    ("bimanual", lambda r: r["leaders"]["right"]["motors"].update(
        left_elbow=r["leaders"]["right"]["motors"].pop("right_elbow")),
     r"joint 'left_elbow' is led by both leader 'left' and 'right'"),
])
def test_a_robot_config_with_a_misspelt_key_or_an_impossible_value_is_refused_naming_it(robot, change, says):
    raw = _robot_config(robot)
    RobotSpec.from_config(raw)  # as shipped
    change(raw)
    with pytest.raises(ConfigError, match=rf"^configs/robot/{robot}.yaml: .*{says}"):
        RobotSpec.from_config(raw)


def test_a_joint_named_both_gripper_and_rotation_must_say_its_kind():
    """A gripper_roll was taken for a gripper with a warning: read as a 0..1 opening, its
    direction ignored, moving to one side of zero only, unchecked for speed."""
    raw = {"name": "x", "fps": 30, "buses": {"b": {"port": "/dev/null", "baud": 1000000}},
           "joints": [{"name": "gripper_roll", "lower": -1, "upper": 1, "max_velocity": 1}],
           "motors": {"gripper_roll": {"bus": "b", "id": 1, "model": "XL430-W250"}}}
    with pytest.raises(ConfigError, match=r"joint 'gripper_roll' names a gripper and a rotation; say which in its "
                                          r"joints: entry \(kind: revolute"):
        RobotSpec.from_config(raw)
    raw["joints"][0]["kind"] = "revolute"
    assert RobotSpec.from_config(raw).joints[0].kind == "revolute"


@pytest.mark.parametrize(("change", "expected"), [
    ({"motors": {"elbow_flex": {"mode": "current"}}},
     "follower motor for 'elbow_flex' is in current mode, in which the servo ignores the position goals"),
    ({"motors": {"elbow_flex": {"mode": "pwm"}}}, "follower motor for 'elbow_flex' is in pwm mode"),
    ({"motors": {"elbow_flex": {"mode": "velocity"}}}, "follower motor for 'elbow_flex' is in velocity mode"),
    ({"gripper": {"upper": 10.0}}, "gripper 'gripper' has limits 0..10; a gripper moves within 0 (closed) .. 1"),
    ({"gripper": {"lower": -2.0}}, "gripper 'gripper' has limits -2..1"),
])
def test_a_follower_mode_or_gripper_setting_that_would_drive_into_a_stop_is_refused(change, expected):
    """Each passed every check and got torque on: a follower in current or pwm mode pushed
    with its power-up goal into the hard stop (the driver writes position goals only, which
    those modes ignore); a gripper's upper: 10 drove it turns past open, stalled there at
    max_current_a."""
    from omegaconf import OmegaConf

    from shallowpi import config

    raw = OmegaConf.to_container(config.compose(["robot=arm"]).robot, resolve=True)
    for joint, values in change.get("motors", {}).items():
        raw["motors"][joint].update(values)
    for entry in raw["joints"]:
        if entry["name"] == "gripper":
            entry.update(change.get("gripper", {}))
    with pytest.raises(ConfigError, match=re.escape(expected)):
        RobotSpec.from_config(raw)


def test_an_empty_ports_file_is_said_in_one_line(tmp_path):
    """`platform emulate ... > ports.json &` then `calibrate --ports ports.json` before the
    emulator printed: an IndexError traceback."""
    from shallowpi.robots.spec import parse_ports

    (tmp_path / "ports.json").write_text("")
    with pytest.raises(ConfigError, match=r"--ports file .*ports\.json is empty \(has `platform emulate` printed"):
        parse_ports(str(tmp_path / "ports.json"))


def test_two_buses_on_one_port_two_cameras_on_one_serial_and_a_robot_file_named_otherwise_are_refused(tmp_path):
    """A udev link (/dev/ttyDXL_left) and the device it names are one port; and a copy of
    arm.yaml still named arm would take the arm's calibration file and telemetry socket."""
    from shallowpi import config

    (tmp_path / "ttyDXL_left").symlink_to("/dev/null")
    raw = _robot_config("arm")
    raw["buses"]["leader"]["port"] = str(tmp_path / "ttyDXL_left")
    raw["buses"]["follower"]["port"] = "/dev/null"
    with pytest.raises(ConfigError, match=r"buses 'follower' and 'leader' both name port .*ttyDXL_left \(/dev/null\)"):
        RobotSpec.from_config(raw)
    with pytest.raises(ConfigError, match=r"^robot.name=myarm renames the robot 'arm'; its name keys its calibration, "
                                          r"telemetry and episodes: copy configs/robot/arm.yaml under the new name"):
        config.compose(["robot=arm", "robot.name=myarm"])
    # The last robot= is the one composed (the first was blamed: arm.yaml, which is fine).
    assert config.compose(["robot=arm", "robot=humanoid"]).robot.name == "humanoid"
    # Two roles on one camera: the second's start failed as "another process is using it".
    with pytest.raises(ConfigError, match=r"cameras 'front' and 'wrist' both name serial 0123; give each role its own"):
        RobotSpec.from_config(config.compose(["robot=arm", "robot.cameras.front.serial=0123",
                                              "robot.cameras.wrist.serial=0123"]).robot)


def test_two_leader_arms_daisy_chained_on_one_bus_are_both_read_and_a_leader_on_a_follower_bus_is_refused():
    """Both bimanual leaders on one adapter (the right one re-ID'd 11..17): the spec took
    it, then connect failed with "servo 11 is not in this bus's config", which it is."""
    from shallowpi.teleop.leader import LeaderFollower

    raw = _robot_config("bimanual")
    right = raw["leaders"]["right"]
    right["bus"] = "leader_left"
    for motor in right["motors"].values():
        motor["id"] += 10
    del raw["buses"]["leader_right"]
    spec = RobotSpec.from_config(raw)
    chains = build_chains(spec.bus_motors())
    try:
        spec = spec.with_ports({bus: chain.path for bus, chain in chains.items()})
        teleop = LeaderFollower(spec, RobotCalibration("uncalibrated", spec.name))
        teleop.connect()
        try:
            action = teleop.read()
        finally:
            teleop.disconnect()
    finally:
        for chain in chains.values():
            chain.stop()
    assert {"left_elbow", "right_elbow", "right_gripper"} <= set(action)
    raw = _robot_config("arm")
    raw["leaders"]["leader"]["bus"] = "follower"
    for motor in raw["leaders"]["leader"]["motors"].values():
        motor["id"] += 10
    with pytest.raises(ConfigError, match=r"bus 'follower' carries follower motors and a leader arm; give the "
                                          r"leader arm its own bus"):
        RobotSpec.from_config(raw)


def test_a_robot_file_that_is_not_valid_yaml_is_one_line_naming_file_line_and_column(tmp_path, monkeypatch):
    import shutil

    from shallowpi import config

    shutil.copytree(config.config_dir(), tmp_path / "configs")
    with open(tmp_path / "configs" / "robot" / "arm.yaml", "a") as f:
        f.write("  shoulder_pan: {bus: follower, id: 1\n")  # a line pasted without its brace
    monkeypatch.setenv("SHALLOWPI_CONFIG_DIR", str(tmp_path / "configs"))
    with pytest.raises(ConfigError, match=r"configs/robot/arm.yaml:\d+:1: not valid YAML: expected ',' or '}'"):
        config.compose(["robot=arm"])


def test_a_speed_scale_slows_every_command_of_the_robot():
    """`deploy --speed-scale 0.5` (a new policy's first run): every joint's top speed, the
    bound each command goes through, halved; a goal far away moves half as far a command."""
    full = robot_spec("arm")
    half = full.with_speed_scale(0.5)
    assert [j.max_velocity for j in half.joints] == [0.5 * j.max_velocity for j in full.joints]
    with pytest.raises(ConfigError, match=r"a speed scale must be in \(0, 1\], got 1.5"):
        full.with_speed_scale(1.5)
    with emulated("arm") as (spec, _), DynamixelRobot(spec.with_speed_scale(0.5), UNCALIBRATED,
                                                            clock=None) as robot:
        start = robot.observe().state.astype(np.float64)
        sent = robot.act(np.clip(start + 10.0, robot.lower, robot.upper))
        step = np.array([j.max_velocity for j in full.joints]) / full.fps
        moved = np.abs(np.asarray(sent, np.float64) - start)
        assert np.all(moved <= 0.5 * step + 1e-6) and np.any(moved > 0.4 * step), (moved, step)


def test_act_never_exceeds_limits_or_the_velocity_bound():
    rng = np.random.default_rng(0)
    # clock=None: a step a call (the bound in time, up to 1.25 steps, is test_robot_speed_bound's)
    with emulated("arm") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED, clock=None) as robot:
        lower, upper, step = robot.lower, robot.upper, robot.max_step
        previous = robot.observe().state.astype(np.float64)
        previous = np.clip(previous, lower, upper)
        for _ in range(40):
            wild = rng.uniform(-10, 10, size=len(lower))  # far outside every limit
            sent = robot.act(wild).astype(np.float64)
            assert np.all(sent >= lower - 1e-6) and np.all(sent <= upper + 1e-6)
            assert np.all(np.abs(sent - previous) <= step + 1e-6)
            previous = sent
        # what reached the servos is what act() returned, within a tick of rounding.
        # Goal writes are not acknowledged; a read's reply proves the chain has them.
        robot.observe()
        follower = chains["follower"]
        for motor, value in zip(spec.motors, previous):
            ticks = follower.servos[motor.id].get("goal_position")
            assert robot._convert[motor.joint].to_joint(ticks) == pytest.approx(value, abs=motor.model.radians_per_tick)


def test_a_joint_found_outside_its_limits_is_held_there_then_brought_back_at_the_velocity_bound():
    """shoulder_pan rests at 2.9 rad with torque off (limits +-2.6): connect and hold keep it
    there (they used to clip the goal to 2.6, a 0.3 rad step at the servo's full speed), a
    goal further out leaves it there, and act() walks it back inside at max_velocity / fps
    a tick, never farther out."""
    with emulated("arm") as (spec, chains):
        servo = chains["follower"].servos[next(m.id for m in spec.motors if m.joint == "shoulder_pan")]
        with DynamixelRobot(spec, UNCALIBRATED, clock=None) as robot:
            j = spec.joint_names.index("shoulder_pan")
            outside = robot.observe().state[j]
            servo.plant.move_to(servo.ticks_to_rad(servo.get("present_position")) + 2.9 - float(outside))
            robot.torque_off()
            robot.connect()
            start = float(robot.observe().state[j])
            assert start > robot.upper[j] + 0.2, start
            held = float(robot.hold()[j])
            assert held == pytest.approx(start, abs=0.01)
            for action in ({"shoulder_pan": 4.0}, {}):  # further out, or left out: held where it is
                assert float(robot.act(action)[j]) == pytest.approx(held, abs=1e-6)
            previous, step = held, float(robot.max_step[j])
            for _ in range(12):
                sent = float(robot.act({"shoulder_pan": 0.0})[j])
                assert previous - step - 1e-6 <= sent <= previous + 1e-9  # inward, within the bound
                previous = sent
            assert previous == pytest.approx(held - 12 * step, abs=1e-5) and previous < robot.upper[j]


def test_joint_limits_past_the_servos_position_limits_refuse_to_connect_in_one_line():
    """Calibrated with its zero at tick 3900 and swept +-2.6 rad (unwrapped past the turn's
    end), shoulder_pan's +2.5 rad (the sweep less its 2 % margin) is tick ~5527: the XL430 in position mode refuses goals
    past 4095, and a sync write has no reply to say so, so the joint would stop short while
    act() reported the goal sent."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    with emulated("arm") as (spec, chains):
        follower = centred(spec, spec.motors)
        near_the_end = RobotCalibration("c1", "arm", {"follower": {**follower,
                                                                    "shoulder_pan": MotorCalibration(3900, 1, 2205, 5595)}})
        with pytest.raises(PlatformError, match=r"joint 'shoulder_pan' limits -2\.496\d*\.\.2\.496\d* map to ticks 2273\.\.5527, "
                                                r"past servo 1's position limits 0\.\.4095 on bus 'follower'") as err:
            DynamixelRobot(spec, near_the_end).connect()
        assert len(str(err.value).splitlines()) == 1
        assert not any(s.torque for s in chains["follower"].servos.values())  # nothing was driven


def test_position_limit_registers_another_tool_narrowed_are_named_as_the_cause():
    """Min/Max Position Limit set to 1000..3000 by another tool: the refusal said the travel
    crossed the end of the servo's turn and to re-seat the horn, which would change nothing."""
    with emulated("arm") as (spec, chains):
        servo = chains["follower"].servos[1]
        servo.set("min_position_limit", 1000)
        servo.set("max_position_limit", 3000)
        with pytest.raises(PlatformError, match=r"joint 'shoulder_pan' limits -2\.6\.\.2\.6 map to ticks \d+\.\.\d+, "
                                                r"past servo 1's Min/Max Position Limit registers 1000\.\.3000 on bus "
                                                r"'follower', narrowed from the full turn 0\.\.4095 \(another tool set "
                                                r"them\): write them back to 0 and 4095"):
            DynamixelRobot(spec, UNCALIBRATED).connect()
        assert not any(s.torque for s in chains["follower"].servos.values())


def test_a_joint_held_back_never_sees_its_goal_run_away():
    """The arm pressed against the table while the commands go on down: the goal used to
    run on a step a tick, the servo pushing ever harder and jumping there at full servo
    speed once freed. The goal leads the measured position by at most LEAD_TICKS steps."""
    from shallowpi.hardware.dynamixel.plant import TrackingPlant

    class Table(TrackingPlant):
        """shoulder_pan's shaft cannot go below -0.5 rad."""

        def read(self, now):
            state = super().read(now)
            if state.position < -0.5:
                self.move_to(-0.5)
                return type(state)(-0.5, 0.0, state.current)
            return state

    def plants(bus, servo_id, model):
        return Table() if (bus, servo_id) == ("follower", 1) else TrackingPlant()

    # clock=None: each act() one control period, whatever the machine's load makes of 5 ms
    with emulated("arm", plants) as (spec, chains), DynamixelRobot(spec, UNCALIBRATED, clock=None) as robot:
        pan = spec.joint_names.index("shoulder_pan")
        for _ in range(40):  # 40 ticks at 0.1 rad a tick: -4 rad, were the goal free
            robot.observe()
            sent = robot.act({"shoulder_pan": -2.6})
            time.sleep(0.005)
        lead = DynamixelRobot.LEAD_TICKS * spec.joints[pan].max_velocity / spec.fps
        assert sent[pan] == pytest.approx(-0.5 - lead, abs=0.01)
        tick = spec.motors[pan].model.radians_per_tick
        on_the_bus = (chains["follower"].servos[1].get("goal_position") - 2048) * tick
        assert on_the_bus == pytest.approx(-0.5 - lead, abs=0.01)
        assert sent[pan] > -1.1  # not -2.6
        # A lasting hold of the last command (after a policy fault) pushes no harder either.
        assert robot.hold(sent - 1.0)[pan] == pytest.approx(-0.5 - lead, abs=0.01)


def test_a_multi_turn_gripper_counting_from_another_turn_keeps_torque_off():
    """bimanual.yaml's grippers run in current-based position mode, which counts whole
    turns from power-up: one turn off, the half-open gripper reads far below closed, and
    act() would drive it a whole turn into its end stop. Connect refuses in one line."""
    import math

    with emulated("bimanual") as (spec, chains):
        servo = chains["follower_left"].servos[7]
        servo.plant.move_to(0.3 - 2 * math.pi)  # half open (uncalibrated span: a quarter turn), a turn down
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=r"robot 'bimanual': joint 'left_gripper' reads -3\.81 \(tick -1852\), "
                                                r"over half a turn outside its limits 0\.\.1 \(ticks 2048\.\.3072\)"):
            DynamixelRobot(spec, UNCALIBRATED).connect()
        assert not any(s.torque for c in chains.values() for s in c.servos.values())
        servo.plant.move_to(0.3)  # the same pose, counted in the right turn
        time.sleep(0.05)
        with DynamixelRobot(spec, UNCALIBRATED) as robot:
            assert robot.observe().state[spec.joint_names.index("left_gripper")] == pytest.approx(0.3 / (math.pi / 2),
                                                                                                 abs=0.01)


@contextmanager
def _extended_pan(homed: bool = False, zero: int = 4300, sweep: tuple[int, int] = (2946, 5654)):
    """arm.yaml with shoulder_pan's XL430 in extended position mode (a multi-turn count that
    restarts inside ticks 0..4095 at power-up; `turns_homed_externally: true` where
    `homed`), on emulated chains, calibrated with its zero at tick `zero` and swept through
    ticks `sweep`; by default 2946..5654: limits (the sweep less 2 % at each end) at ticks
    3000..5600, 0.63 of a turn across the end of the turn. Yields (spec, chains, calibration)."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    raw = _robot_config("arm")
    raw["motors"]["shoulder_pan"].update(mode="extended_position")
    if homed:
        raw["motors"]["shoulder_pan"]["turns_homed_externally"] = True
    spec = RobotSpec.from_config(raw)
    chains = build_chains(spec.bus_motors())
    try:
        spec = spec.with_ports({bus: chain.path for bus, chain in chains.items()})
        calibration = RobotCalibration("c1", "arm", {"follower": {**centred(spec, spec.motors),
                                                                  "shoulder_pan": MotorCalibration(zero, 1, *sweep)}})
        yield spec, chains, calibration
    finally:
        for chain in chains.values():
            chain.stop()


def test_a_multi_turn_joint_whose_limits_cross_the_end_of_its_power_up_turn_keeps_torque_off():
    """An extended-position-mode servo counts from tick 0..4095 at power-up: shoulder_pan,
    limits at ticks 3000..5600 (0.63 turn), at tick 5500 read 1404 after a power cycle, less
    than half a turn below its limits, which connect let through: the robot took the joint
    for 1596 ticks below its lower limit, and the first goal clipped into the limits drove
    it the long way, about a turn, into its stop. Connect refuses such a travel whatever
    the pose, in one line, torque off."""
    with _extended_pan() as (spec, chains, calibration):
        servo = chains["follower"].servos[1]
        for tick in (5500 - 4096, 5500):  # after a power cycle, then the same pose as calibrated
            servo.plant.move_to(servo.ticks_to_rad(tick))
            time.sleep(0.05)
            with pytest.raises(PlatformError) as err:
                DynamixelRobot(spec, calibration).connect()
            assert re.fullmatch(
                r"robot 'arm': joint 'shoulder_pan' travels through ticks 2946\.\.5654 of servo 1 on bus 'follower' "
                r"\(its limits -1\.99\d*\.\.1\.99\d* and its calibration's sweep\), across the end of the turn its "
                r"count restarts in at power-up \(0\.\.4095\): after a power cycle part of that travel reads a whole "
                r"turn off, and a goal from there drives the joint about a turn, into a stop; re-seat its horn so the "
                r"travel lies within ticks 0\.\.4095, then `platform calibrate --robot arm --arm follower` \(or, if "
                r"your lab brings it up on the turn it was calibrated on, say so with turns_homed_externally: true in "
                r"its motor entry\)", str(err.value)), str(err.value)
            assert not any(s.torque for s in chains["follower"].servos.values())


def test_a_multi_turn_joint_resting_at_its_stop_past_the_turn_s_end_keeps_torque_off():
    """The travel judged is the whole sweep, not the limits narrowed to it: shoulder_pan
    swept through ticks 2000..4110 has its limits at 2042..4068, inside the power-up turn,
    but a limp arm rests at its hard stop, tick 4110, which reads 14 after a power cycle:
    connect took the joint for -4.58 rad where it stood at +1.70."""
    with _extended_pan(zero=3000, sweep=(2000, 4110)) as (spec, chains, calibration):
        servo = chains["follower"].servos[1]
        servo.plant.move_to(servo.ticks_to_rad(4110 - 4096))  # at the stop, after a power cycle
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=r"joint 'shoulder_pan' travels through ticks 2000\.\.4110 of servo 1"):
            DynamixelRobot(spec, calibration).connect()
        assert not any(s.torque for s in chains["follower"].servos.values())


def test_a_y_series_joint_keeps_its_turn_count_so_its_travel_may_cross_the_turn_s_end():
    """A Y series keeps its multi-turn count through power-off (its Multi-turn Backup
    Battery): the humanoid's wrist roll zeroed 0.3 rad off its servo's centre and swept
    +-3.2 rad about it crosses the end of the turn about the centre, and is no fault."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.robots.calibration import check_turn_travel, swept_limits

    spec = robot_spec("humanoid")
    motor = next(m for m in spec.motors if m.joint == "left_wrist_roll")
    joint = next(j for j in spec.joints if j.name == motor.joint)
    per_rad = motor.model.ticks_per_turn / (2 * math.pi)
    zero = round(0.3 * per_rad)
    entry = MotorCalibration(zero, 1, zero - round(3.2 * per_rad), zero + round(3.2 * per_rad))
    calibration = RobotCalibration("c1", "humanoid", {"left_arm": {**centred(spec, spec.motors), motor.joint: entry}})
    convert = calibration.converter(motor, joint.kind)
    assert entry.range_max > motor.model.ticks_per_turn // 2  # past the end of the turn about the centre
    check_turn_travel("humanoid", motor, convert, *swept_limits(calibration, joint, motor, convert))


def test_a_multi_turn_joint_the_lab_homes_connects_across_the_end_of_its_turn():
    """`turns_homed_externally: true` is the lab's word that the servo comes up counting as
    at calibration: the motor carries it, and the same travel across the turn's end
    connects, reading the joint where it is."""
    with _extended_pan(homed=True) as (spec, chains, calibration):
        assert spec.motors[0].turns_homed_externally and not spec.motors[1].turns_homed_externally
        servo = chains["follower"].servos[1]
        servo.plant.move_to(servo.ticks_to_rad(5500))
        time.sleep(0.05)
        with DynamixelRobot(spec, calibration) as robot:
            assert robot.observe().state[0] == pytest.approx(1200 * 2 * np.pi / 4096, abs=0.01)


def test_a_multi_turn_gripper_within_its_power_up_turn_reads_true_after_any_power_cycle():
    """bimanual.yaml's grippers count turns (current-based position mode) from ticks
    0..4095 at power-up. Closed at tick 3000 with a 2600-tick opening, the travel crosses
    that turn's end: after a power cycle the gripper at tick 5500 read 1404, an opening of
    -0.61, within half a turn of its limits, and the first goal (closed, 3000) drove it
    1596 ticks on, past its open stop. Refused at every pose now; with the horn re-seated
    (closed at tick 500) the travel lies within the turn, and after a power cycle anywhere
    in it the gripper connects and reads its real opening."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    def power_cycle(servo, tick: int) -> None:
        """The shaft at `tick` of the calibration's count, as the servo counts it after a
        power-up: within its first turn, 0..4095."""
        servo.plant.move_to(servo.ticks_to_rad(tick % 4096))
        time.sleep(0.05)

    with emulated("bimanual") as (spec, chains):
        entries = centred(spec, spec.motors)
        arms = {bus: {m.joint: entries[m.joint] for m in spec.motors if m.bus == bus} for bus in spec.follower_buses()}
        servo, g = chains["follower_left"].servos[7], spec.joint_names.index("left_gripper")
        for closed, refused in ((3000, True), (500, False)):
            calibration = RobotCalibration("c1", "bimanual", {**arms, "follower_left": {
                **arms["follower_left"], "left_gripper": MotorCalibration(closed, 1, closed, closed + 2600, 2600)}})
            for opening in (0.0, 0.5, 0.96):
                power_cycle(servo, closed + round(opening * 2600))
                if refused:
                    with pytest.raises(PlatformError, match=r"joint 'left_gripper' travels through ticks 3000\.\.5600 of "
                                                            r"servo 7 on bus 'follower_left' \(its limits 0\.\.1 and its "
                                                            r"calibration's sweep\), across the end of the turn"):
                        DynamixelRobot(spec, calibration).connect()
                    assert not any(s.torque for c in chains.values() for s in c.servos.values())
                    continue
                with DynamixelRobot(spec, calibration) as robot:
                    assert robot.observe().state[g] == pytest.approx(opening, abs=0.002)


def test_connect_keeps_torque_off_when_a_servo_refuses_the_present_pose_as_its_goal():
    """A joint moved by hand past its servo's position limits: the servo refuses that goal
    (a sync write, so no reply says so) and keeps its old one, which torque-on would drive
    to at full servo speed. Connect reads the goals back and leaves torque off."""
    from shallowpi.hardware.dynamixel.control_table import OperatingMode

    with emulated("arm") as (spec, chains):
        wrist = next(m for m in spec.motors if m.joint == "wrist_flex")
        servo = chains["follower"].servos[wrist.id]
        servo.set("operating_mode", int(OperatingMode.POSITION))
        servo.set("goal_position", 2048)
        servo.set("min_position_limit", 200)  # the joint limits (-2.6..2.6 rad: ticks 353..3743) still fit inside
        servo.plant.move_to(-2.95)  # ~ tick 125, below the servo's limit
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=rf"robot 'arm': torque stays off: goal position bus 'follower' servo "
                                                rf"{wrist.id} reads 2048, sent 1\d\d; a joint is probably outside"):
            DynamixelRobot(spec, UNCALIBRATED).connect()
        assert not any(s.torque for s in chains["follower"].servos.values())


def test_torque_on_by_goal_update_another_tool_set_is_cleared_at_connect(caplog):
    """Drive Mode bit 3 (X series): a Goal Position write turns torque on. The driver writes
    goals with torque off (the present pose before torque-on; a hold after an e-stop), so
    with the bit set another tool left, those writes would power the servo. Connect clears
    it and says so, and the time-based profile (bit 2) with it (test_servo_profile: the
    other bits stay)."""
    with emulated("arm") as (spec, chains):
        wrist = next(m for m in spec.motors if m.joint == "wrist_flex")
        servo = chains["follower"].servos[wrist.id]
        servo.set("drive_mode", 0x08 | 0x04)
        with DynamixelRobot(spec, UNCALIBRATED):
            assert servo.get("drive_mode") == 0
        assert f"servo {wrist.id} on bus 'follower' had Drive Mode's 'torque on by goal update' set; cleared" \
            in caplog.text


def test_a_bus_watchdog_another_program_left_tripped_is_cleared_at_connect(caplog):
    """A tripped Bus Watchdog(98) leaves the goals read-only, and sync writes have no reply:
    every act() would be dropped without a word, the arm standing still. Connect clears it."""
    with emulated("arm") as (spec, chains):
        wrist = next(m for m in spec.motors if m.joint == "wrist_flex")
        servo = chains["follower"].servos[wrist.id]
        servo.set("bus_watchdog", -1)
        with DynamixelRobot(spec, UNCALIBRATED) as robot:
            assert servo.get("bus_watchdog") == 0
            before = servo.get("goal_position")
            for _ in range(3):
                robot.observe()
                robot.act({"wrist_flex": 1.0})
            assert servo.get("goal_position") != before  # the goals reach the servo
        assert f"servo {wrist.id} on bus 'follower' had its bus watchdog tripped; disarmed" in caplog.text


def test_a_calibration_missing_a_joint_is_refused_for_follower_and_leader():
    """A calibrated robot whose file lacks a motor (an arm calibrated alone, a joint added
    since) used to drive that joint about the default zero, the centre tick: anywhere in a
    real joint's travel. Only a robot never calibrated gets the default."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.robots.calibration import CalibrationError
    from shallowpi.teleop.leader import LeaderFollower

    with emulated("arm") as (spec, chains):
        only_the_pan = RobotCalibration("c1", "arm", {"follower": {"shoulder_pan": MotorCalibration(2048, 1, 0, 4095)}})
        with pytest.raises(CalibrationError, match=r"calibration c1 of robot 'arm' has no entry for joint "
                                                   r"'shoulder_lift' on arm 'follower'; calibrate it: "
                                                   r"`platform calibrate --robot arm --arm follower`"):
            DynamixelRobot(spec, only_the_pan)
        with pytest.raises(CalibrationError, match=r"no entry for joint 'shoulder_pan' on arm 'leader'"):
            LeaderFollower(spec, only_the_pan)
        assert not any(s.torque for s in chains["follower"].servos.values())


def test_a_gripper_squeezes_with_at_most_its_configured_current():
    """bimanual.yaml caps each gripper at 0.6 A: connect writes it as Goal Current (the
    XM430's 2.69 mA units), which would otherwise stay at the full Current Limit (3.2 A)."""
    with emulated("bimanual") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED):
        for motor in spec.motors:
            goal = chains[motor.bus].servos[motor.id].get("goal_current")
            if motor.joint.endswith("gripper"):
                assert motor.max_current_a == 0.6 and goal == round(0.6 / 0.00269) == 223
    raw = {"name": "x", "fps": 30, "joints": [{"name": "a", "lower": 0, "upper": 1, "max_velocity": 1}],
           "buses": {"b": {"port": "/dev/null", "baud": 1000000}},
           "motors": {"a": {"bus": "b", "id": 1, "model": "XM430-W350", "max_current_a": 1.0}}}  # position mode
    with pytest.raises(ConfigError, match="max_current_a, which needs mode: current_based_position"):
        RobotSpec.from_config(raw)
    # Current-based position without a cap: the gripper would squeeze with the whole Current Limit.
    uncapped = {**raw, "motors": {"a": {"bus": "b", "id": 1, "model": "XM430-W350", "mode": "current_based_position"}}}
    with pytest.raises(ConfigError, match=r"follower motor for 'a' is in current_based_position mode without "
                                          r"max_current_a; give the most current it may use"):
        RobotSpec.from_config(uncapped)


def test_partial_actions_hold_the_other_joints_and_bad_actions_send_nothing():
    with emulated("arm") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED, clock=None) as robot:
        start = robot.act({})
        sent = robot.act({"gripper": 1.0})
        index = spec.joint_names.index("gripper")
        assert sent[index] == pytest.approx(start[index] + robot.max_step[index])
        assert np.allclose(np.delete(sent, index), np.delete(start, index))
        robot.observe()  # the chain has applied every write sent so far
        goals = {i: s.get("goal_position") for i, s in chains["follower"].servos.items()}
        for bad in ({"elbow_flex": float("nan")}, np.zeros(3)):
            with pytest.raises(PlatformError):
                robot.act(bad)
        with pytest.raises(PlatformError, match=r"has no joint 'elbow'"):
            robot.act({"elbow": 0.0})
        robot.observe()
        assert goals == {i: s.get("goal_position") for i, s in chains["follower"].servos.items()}


def test_features_and_limits_follow_the_config():
    spec = robot_spec("bimanual")
    robot = DynamixelRobot(spec, UNCALIBRATED)
    features = robot_features(spec.joint_names, spec.camera_shapes())  # the one builder of a store's features
    assert features["observation.state"].shape == (14,) and features["action"].dtype == "float32"
    assert features["observation.state"].names == tuple(spec.joint_names)
    assert features["observation.images.top"].shape == (480, 640, 3)
    assert robot.limits()["left_gripper"] == (0.0, 1.0, 4.0)


def test_model_mismatch_against_config_fails_connect_in_one_line():
    spec = robot_spec("arm")
    buses = spec.bus_motors()
    buses["follower"][1][3] = "XM430-W350"  # the servo on the bench is not what the config says
    chains = build_chains(buses)
    try:
        robot = DynamixelRobot(spec.with_ports({b: c.path for b, c in chains.items()}), UNCALIBRATED)
        with pytest.raises(BusError) as err:
            robot.connect()
        assert "\n" not in str(err.value)
        assert "servo 3 is a XM430-W350 (model 1020) but the config says XL330-M288" in str(err.value)
        assert not robot.is_connected
    finally:
        for chain in chains.values():
            chain.stop()


def test_a_servo_fault_stops_observe_with_the_servo_named():
    with emulated("arm") as (spec, chains):
        robot = DynamixelRobot(spec, UNCALIBRATED, fault_check_every=1)
        with robot:
            robot.observe()
            chains["follower"].hardware_error(4, "overheating")
            with pytest.raises(ServoFaultError, match=r"bus 'follower' .* servo 4 \(XL330-M288\) reports overheating"):
                robot.observe()
        assert not any(s.torque for s in chains["follower"].servos.values())


def test_a_servo_fault_is_seen_in_the_tick_it_happens_not_at_the_next_register_poll():
    """The error registers are read once a second (fault_check_every = fps); a faulted servo
    says so in every reply, by its alert bit, which the SDK's sync read dropped: the arm
    went on recording, and commanding a servo whose torque was off, for up to a second."""
    with emulated("arm") as (spec, chains):
        robot = DynamixelRobot(spec, UNCALIBRATED)
        assert robot._fault_check_every > 1  # the registers are not what sees it
        with robot:
            robot.observe()
            robot._ticks = 0  # the next register poll is a second away
            chains["follower"].hardware_error(3, "overload")
            with pytest.raises(ServoFaultError, match=r"servo 3 \(XL330-M288\) reports overload"):
                robot.observe()


def test_a_follower_servo_that_restarted_mid_run_is_a_fault_within_a_second_naming_its_joint():
    """A servo that restarts (a power dip, a loose power lead) answers again at once, torque
    off, no alarm, its goal at its present position. Each tick read positions alone and the
    once-a-second poll the error registers alone: a run recorded episodes whose action and
    state disagreed for that joint, and deploy drove it limp until a hold caught it. The poll
    reads Torque Enable too: on the X series in the same block as the error register, one
    exchange a bus."""
    with emulated("arm") as (spec, chains):
        robot = DynamixelRobot(spec, UNCALIBRATED)
        with robot:
            robot.observe()
            bus = robot.buses["follower"]
            before = bus.tally.exchanges
            robot.check_faults()  # all hold: nothing to say
            assert bus.tally.exchanges - before == 1  # torque with the alarms, in one read
            bus.reboot(3)  # what a power-on leaves in a servo's RAM
            assert not chains["follower"].servos[3].torque and not chains["follower"].servos[3].alert
            with pytest.raises(ServoFaultError, match=r"bus 'follower' servo 3 \('elbow_flex'\) has torque off without "
                               r"an alarm: it restarted \(a power dip or a loose power lead\?\)") as err:
                for _ in range(spec.fps):  # the poll runs once a second of ticks
                    robot.observe()
            assert err.value.bus == "follower" and "\n" not in str(err.value)


def test_a_deliberate_torque_off_is_not_taken_for_a_restarted_servo():
    """Servos switched off on purpose (torque_off(), the buses hold_or_release released after
    a fault) have torque off without an alarm too: not a restart. The buses still holding
    after a release are watched as before."""
    with emulated("bimanual") as (spec, chains):
        robot = DynamixelRobot(spec, UNCALIBRATED)
        with robot:
            robot.observe()
            chains["follower_left"].hardware_error(7, "overload")  # the left gripper
            with pytest.raises(ServoFaultError) as err:
                robot.check_faults()
            state = robot.hold_or_release(err.value)
            assert state.holding and not any(s.torque for s in chains["follower_left"].servos.values())
            assert all(s.torque for s in chains["follower_right"].servos.values())
            robot.check_faults()  # the right arm holds, the left is off as asked: no fault
            # The right arm holds on for the operator: a servo of it restarting is a fault.
            robot.buses["follower_right"].reboot(3)
            with pytest.raises(ServoFaultError, match=r"bus 'follower_right' servo 3 \('right_elbow'\) has torque off"):
                robot.check_faults()
            robot.torque_off()
            robot.check_faults()  # every servo off, as asked


def test_a_restarted_y_series_servo_is_found_and_a_battery_warning_is_no_restart(caplog):
    """The Y series keeps Torque Enable (512) far from its Error Code (153): read apart (an
    arm bus: the Y servos' two reads and its X gripper's one). A battery warning leaves the
    servo working and taking torque (the emulator refused it torque-on, as for a fault):
    neither a fault nor a restart."""
    with emulated("humanoid") as (spec, chains):
        chains["left_arm"].hardware_error(2, "battery warning")
        robot = DynamixelRobot(spec, UNCALIBRATED)
        caplog.set_level("WARNING")
        with robot:
            assert chains["left_arm"].servos[2].torque
            bus = robot.buses["left_arm"]
            before = bus.tally.exchanges
            robot.check_faults()
            assert bus.tally.exchanges - before == 4  # the three, and the warned servo's register
            said = [r.getMessage() for r in caplog.records if "battery" in r.getMessage()]
            assert len(said) == 1 and "servo 2" in said[0]  # at connect, once
            bus.reboot(4)
            with pytest.raises(ServoFaultError, match=r"bus 'left_arm' servo 4 \('left_elbow'\) has torque off without"):
                robot.check_faults()


def test_cameras_hook_feeds_observations():
    class StillCamera:
        def latest(self, max_age_s: float | None = None):
            return np.zeros((480, 640, 3), np.uint8)

    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, cameras={"front": StillCamera()}) as robot:
        obs = robot.observe()
        assert obs.frames["front"].image.shape == (480, 640, 3)
        assert obs.state.dtype == np.float32
        assert obs.frames["front"].time_s == obs.time_s  # a bare image counts as captured now


def test_a_camera_that_fails_inside_latest_is_not_read_again_without_its_age_check():
    """An error raised by the camera itself (here a TypeError) reaches the caller; the
    robot once caught TypeError to call `latest()` again without `max_age_s`."""

    class BrokenCamera:
        calls = 0

        def latest(self, max_age_s: float | None = None):
            self.calls += 1
            raise TypeError("frame buffer of the wrong type")

    camera = BrokenCamera()
    with (emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, cameras={"front": camera}) as robot,
          pytest.raises(TypeError, match="wrong type")):
        robot.observe()
    assert camera.calls == 1


def test_frames_keep_their_arrival_time_so_the_watchdog_sees_their_age():
    class LateCamera:
        def __init__(self) -> None:
            self.sequence = 0

        def latest(self, max_age_s: float | None = None) -> Frame:
            self.sequence += 1
            # Arrived 40 ms ago on the host; the device's own clock is another clock entirely.
            return Frame(np.zeros((48, 64, 3), np.uint8), capture_time_s=123456.0, sequence=self.sequence,
                         host_time_s=time.monotonic() - 0.040)

    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, cameras={"wrist": LateCamera()}) as robot:
        first, second = robot.observe(), robot.observe()
    assert second.frames["wrist"].sequence == first.frames["wrist"].sequence + 1
    age = second.frame_ages_s()["wrist"]
    # The tick's time is taken before the bus read, the frame fetched after it: a little
    # under 40 ms, never more.
    assert 0.020 < age <= 0.040 and second.oldest_frame_s() == age


class FrozenCamera:
    """Delivered one frame `age_s` ago and nothing since (a camera that stalled). Like the
    hardware drivers, it makes a caller that asks for a fresher frame wait `wait_s`, then raises."""

    def __init__(self, age_s: float, wait_s: float = 2.0) -> None:
        self.arrived, self.wait_s = time.monotonic() - age_s, wait_s

    def latest(self, max_age_s: float | None = None) -> Frame:
        if max_age_s is not None and time.monotonic() - self.arrived > max_age_s:
            time.sleep(self.wait_s)
            raise CameraTimeout("camera 'front' frame 7 is stale")
        return Frame(np.zeros((48, 64, 3), np.uint8), capture_time_s=0.0, sequence=7, host_time_s=self.arrived)


def test_a_late_frame_comes_back_at_once_with_its_age_for_the_caller_to_hold_on():
    """A frame 0.4 s old (the executor's watchdog holds past 0.25 s) is returned without
    waiting and without a fault: the robot once waited up to the camera's 2 s timeout for a
    frame younger than five periods, then raised, so a camera hiccup stalled the control
    loop where the executor should hold."""
    from shallowpi.commands.deploy_targets import camera_timeout_for
    from shallowpi.deploy.settings import ExecutorConfig

    camera = FrozenCamera(0.4)
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, cameras={"front": camera}) as robot:
        start = time.monotonic()
        camera.arrived = start - 0.4  # connecting took its own time
        obs = robot.observe()
        took = time.monotonic() - start
    assert took < 1.0, f"observe waited {took:.2f} s for a fresh frame"  # it used to wait the camera's 2 s
    assert 0.4 <= obs.oldest_frame_s() <= 0.4 + took
    assert ExecutorConfig().max_frame_age_s < obs.oldest_frame_s() < robot.camera_timeout_s  # held, not a fault
    # deploy builds the robot with a timeout above whatever hold limit it is given
    for hold in (0.1, ExecutorConfig().max_frame_age_s, 1.5):
        assert camera_timeout_for(hold) > hold and camera_timeout_for(hold) >= 1.0


def test_a_camera_silent_past_its_timeout_is_a_fault_naming_it():
    with (emulated("arm") as (spec, _),
          DynamixelRobot(spec, UNCALIBRATED, cameras={"front": FrozenCamera(0.6)}, camera_timeout_s=0.5) as robot,
          pytest.raises(CameraTimeout, match=r"camera 'front' has sent no frame for \d\.\d\d s \(limit 0\.50 s\); "
                                             r"check its cable")):
        robot.observe()
    # Frames stopped because the driver's reads raise: the fault says so, not just "the cable".
    failing = FrozenCamera(0.6)
    failing.last_error = "ValueError: depth frame has stride 0"
    with (emulated("arm") as (spec, _),
          DynamixelRobot(spec, UNCALIBRATED, cameras={"front": failing}, camera_timeout_s=0.5) as robot,
          pytest.raises(CameraTimeout, match=r"\(limit 0\.50 s\) \(its driver: ValueError: depth frame has stride 0\)")):
        robot.observe()
    with pytest.raises(PlatformError, match="camera_timeout_s must be positive"):
        DynamixelRobot(robot_spec("arm"), UNCALIBRATED, camera_timeout_s=0)


def test_a_second_ctrl_c_during_torque_off_still_turns_every_bus_off(monkeypatch):
    """A KeyboardInterrupt (the operator's second Ctrl-C, which deploy's handler raised)
    landing inside the first bus's torque-off write cut the loop short: the other arm kept
    torque on while the ports closed. Every bus is still turned off; the interrupt is raised
    after."""
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    write = DynamixelBus.set_torque
    interrupted = []

    def interrupted_once(bus, enabled, *args, **kwargs):
        if not enabled and not interrupted:
            interrupted.append(bus.name)
            raise KeyboardInterrupt
        return write(bus, enabled, *args, **kwargs)

    with emulated("bimanual") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", "bimanual"))
        robot.connect()
        assert all(s.torque for name in spec.follower_buses() for s in chains[name].servos.values())
        monkeypatch.setattr(DynamixelBus, "set_torque", interrupted_once)
        with pytest.raises(KeyboardInterrupt):
            robot.disconnect()
        assert interrupted == ["follower_left"]
        for name in spec.follower_buses():
            assert not any(s.torque for s in chains[name].servos.values()), name


def test_a_reconnect_to_servos_left_holding_keeps_their_torque_on():
    """A run killed with the servos holding (its ports gone, torque on): the next connect
    turned torque off first, dropping a loaded arm, then took it up where it had sagged.
    Servos holding as configured (no EEPROM write needed) keep torque on throughout; one
    that needs a write still goes through torque off."""
    with emulated("arm") as (spec, chains):
        first = DynamixelRobot(spec, UNCALIBRATED)
        first.connect()
        for bus in first.buses.values():
            bus.disconnect()  # the host died: ports closed, nothing sent
        servos = chains["follower"].servos
        dropped: list[int] = []
        for servo in servos.values():
            def watched(on, set_torque=servo.plant.set_torque, servo_id=servo.id):
                if not on:
                    dropped.append(servo_id)
                set_torque(on)
            servo.plant.set_torque = watched
        again = DynamixelRobot(spec, UNCALIBRATED)
        again.connect()
        try:
            assert dropped == [] and all(s.torque for s in servos.values())
            again.observe()
            again.act({"elbow_flex": 0.1})
        finally:
            again.disconnect()
        assert sorted(dropped) == sorted(servos)  # disconnect: torque off, every servo
        # A servo whose Return Delay Time another tool changed needs an EEPROM write: off first.
        third = DynamixelRobot(spec, UNCALIBRATED)
        third.connect()
        for bus in third.buses.values():
            bus.disconnect()
        servos[3].set("return_delay_time", 250)
        dropped.clear()
        with DynamixelRobot(spec, UNCALIBRATED):
            assert sorted(dropped) == sorted(servos) and servos[3].get("return_delay_time") == 0


def test_a_follower_joint_resting_past_a_limit_across_its_turn_end_keeps_torque_off():
    """Zero calibrated at tick 300, swept 40..2000; the joint rests 50 ticks below tick 0 (on
    its stop), which a position-mode servo reads as 4046: converted, a joint far above its
    range, and driving it 'back' the servo turns the long way, nearly a whole turn. Connect
    refuses in one line (the limits: the sweep less 2 % at each end); inside its sweep it
    connects."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    with emulated("arm") as (spec, chains):
        calibration = RobotCalibration("c1", "arm", {"follower": {**centred(spec, spec.motors),
                                                                  "shoulder_pan": MotorCalibration(300, 1, 40, 2000)}})
        servo = chains["follower"].servos[1]
        servo.plant.move_to(servo.ticks_to_rad(-50))
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=r"robot 'arm': joint 'shoulder_pan' reads tick 4046, outside its "
                                                r"limits -0\.33\d*\.\.2\.54\d* \(ticks 79\.\.\d+\) and nearer them across "
                                                r"servo 1's turn end"):
            DynamixelRobot(spec, calibration).connect()
        assert not any(s.torque for s in chains["follower"].servos.values())
        servo.plant.move_to(servo.ticks_to_rad(60))
        time.sleep(0.05)
        with DynamixelRobot(spec, calibration) as robot:
            assert robot.observe().state[0] == pytest.approx(-240 * 2 * np.pi / 4096, abs=0.01)


def test_a_failed_torque_off_at_disconnect_tells_the_operator_to_cut_the_power(monkeypatch, caplog):
    # It was a warning naming the failure only: the run's summary then read as if the arm
    # were limp.
    import logging

    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    write = DynamixelBus.set_torque

    def failing_off(bus, enabled, *args, **kwargs):
        if not enabled:
            raise BusError(f"bus '{bus.name}': servo 1 did not answer")
        return write(bus, enabled, *args, **kwargs)

    with emulated("arm") as (spec, _):
        robot = DynamixelRobot(spec, UNCALIBRATED)
        robot.connect()
        monkeypatch.setattr(DynamixelBus, "set_torque", failing_off)
        with caplog.at_level(logging.ERROR, logger="shallowpi.robots.dynamixel_robot"):
            robot.disconnect()
    said = [r for r in caplog.records if "torque off failed" in r.getMessage()]
    assert said and said[0].levelno == logging.ERROR
    assert "cut the servo power before going near the robot" in said[0].getMessage()


def test_a_y_series_joint_just_past_its_limit_is_not_taken_for_one_across_its_turn_end():
    # The turn-end refusal is for the X series' single-turn position mode: a Y series counts
    # turns in position mode too and reads on past a limit; its elbow, whose +-3.1 rad span
    # most of a turn, 0.05 rad past its limit was refused as if it would turn the long way.
    # (Connect then keeps torque off there for another reason: the servo's own position
    # limits refuse that pose as a goal.)
    from shallowpi.robots.calibration import check_turn_count

    spec = robot_spec("humanoid")
    elbow = next(m for m in spec.motors if m.joint == "left_elbow")
    joint = next(j for j in spec.joints if j.name == "left_elbow")
    assert elbow.model.series == "Y"
    convert = UNCALIBRATED.converter(elbow, joint.kind)
    check_turn_count("humanoid", elbow, convert, joint.lower, joint.upper, joint.upper + 0.05)  # no refusal
    with pytest.raises(PlatformError, match=r"joint 'left_elbow' reads .* over half a turn outside its limits"):
        check_turn_count("humanoid", elbow, convert, joint.lower, joint.upper, joint.upper + 3.25)  # a lost turn
