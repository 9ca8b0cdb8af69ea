"""Calibration (scripted through the prompt callback), its file and id, and teleoperation:
leader arms mapped into the follower's joint space, keyboard jogging."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time

import numpy as np
import pytest

from dxl_fixtures import centred, emulated, robot_spec
from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.motor_bus import ServoFaultError
from shallowpi.robots.calibration import (
    UNCALIBRATED,
    CalibrationError,
    RobotCalibration,
    archive_path,
    arm_motors,
    calibrate,
    calibration_id,
    load_calibration,
    save_calibration,
    update_calibration,
)
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.teleop.base import Teleoperator
from shallowpi.teleop.keyboard import KeyboardJog
from shallowpi.teleop.leader import GripperMap, LeaderFollower

ZERO = {i: 0.05 * i for i in range(1, 8)}  # shaft angle (rad) at each joint's zero pose


class ScriptedOperator:
    """Plays the person at the prompts: poses the emulated arm by hand. The sweep takes each
    joint 1 rad (shaft) either side of its zero, the gripper (ID 7) `opening` from closed;
    the IDs in `left_out` stay at their zero, as a person who forgot them."""

    def __init__(self, chain, zero=None, opening=-0.8, left_out=()):
        self.chain, self.prompts = chain, []
        self.zero, self.opening, self.left_out = zero or ZERO, opening, set(left_out)

    def __call__(self, message: str) -> None:
        self.prompts.append(message)
        servos = self.chain.servos
        if "holding torque" in message:  # the arm is supported: nothing to move
            self.torque_at_warning = {i: servo.torque for i, servo in servos.items()}
        elif "zero pose" in message:
            for i, servo in servos.items():
                servo.plant.move_to(self.zero[i])
        else:  # the sweep: each joint to both ends; the gripper opens (by default toward negative ticks)
            for end in (1.0, -1.0):
                for i, servo in servos.items():
                    if i not in self.left_out:
                        servo.plant.move_to(self.zero[i] + (self.opening if i == 7 else end))
                time.sleep(0.15)
            for i, servo in servos.items():
                servo.plant.move_to(self.zero[i])


def _calibrate_leader(spec, chains):
    operator = ScriptedOperator(chains["leader"])
    motors = {m.id: m.model for m in arm_motors(spec, "leader")}
    with DynamixelBus("leader", spec.buses["leader"].port, 1_000_000, motors) as bus:
        result = calibrate(spec, {"leader": bus}, operator, ["leader"])
    return result, operator


def test_scripted_calibration_records_offsets_ranges_and_gripper_direction(tmp_path):
    with emulated("arm") as (spec, chains):
        result, operator = _calibrate_leader(spec, chains)
    assert len(operator.prompts) == 2 and all(p.startswith("[leader]") for p in operator.prompts)
    leader = result.arms["leader"]
    tick = spec.leaders[0].motors[0].model.radians_per_tick
    for m in spec.leaders[0].motors:
        c = leader[m.joint]
        assert c.homing_offset == pytest.approx(2048 + ZERO[m.id] / tick, abs=1)
        if m.joint == "gripper":
            assert (c.direction, c.span_ticks) == (-1, pytest.approx(0.8 / tick, abs=2))
        else:
            assert c.range_max - c.homing_offset == pytest.approx(1.0 / tick, abs=2)
            assert c.homing_offset - c.range_min == pytest.approx(1.0 / tick, abs=2)
    assert result.id.startswith("arm-") and "follower" not in result.arms

    assert calibration_id("arm", tmp_path) == UNCALIBRATED
    path = save_calibration(result, tmp_path)
    assert path == tmp_path / "arm" / "calibration.json"
    assert calibration_id("arm", tmp_path) == result.id
    assert load_calibration("arm", tmp_path) == result
    # Every malformed shape is one CalibrationError, never a bare AttributeError or the like.
    for text in ("{not json", "[]", '{"id": "a", "robot": "arm", "arms": []}',
                 '{"id": "a", "robot": "arm", "arms": {"follower": [1]}}',
                 '{"id": "a", "robot": "arm", "arms": {"follower": {"gripper": 3}}}',
                 '{"id": "a", "robot": "arm", "arms": {"follower": {"gripper": {"homing_offset": "x"}}}}'):
        path.write_text(text)
        with pytest.raises(CalibrationError, match=r"malformed"):
            load_calibration("arm", tmp_path)


def test_a_calibration_file_from_a_newer_shallowpi_says_upgrade_not_recalibrate(tmp_path):
    """A later format, or a field this code does not know (a newer shallowpi's, at the top or
    in a motor's entry), was called malformed with the advice to calibrate every arm again:
    that gives a new id, and every store recorded with the old one refuses new takes. It says
    upgrade now, and names what it does not read; a file without a format is format 1."""
    spec = robot_spec("arm")
    _, saved, path = update_calibration(spec, {"follower": centred(spec, spec.motors)}, tmp_path)
    data = json.loads(path.read_text())
    assert data["format"] == 1
    del data["format"]
    path.write_text(json.dumps(data))
    assert load_calibration("arm", tmp_path) == saved  # written before the field was
    motor = next(iter(data["arms"]["follower"]))
    for edit, named in ((lambda d: d.update(format=2), "format 2"),
                        (lambda d: d.update(leader_gains={}), "fields leader_gains"),
                        (lambda d: d["arms"]["follower"][motor].update(backlash_ticks=3), "motor fields backlash_ticks")):
        changed = json.loads(json.dumps(data))
        edit(changed)
        path.write_text(json.dumps(changed))
        with pytest.raises(CalibrationError) as raised:
            load_calibration("arm", tmp_path)
        message = str(raised.value)
        assert named in message and "upgrade shallowpi" in message and "malformed" not in message
        assert "do not calibrate again" in message


def test_recalibrating_only_a_leader_keeps_the_id_that_episodes_and_policies_carry():
    """The id names the followers' joint frame: policies record it and `deploy` refuses a
    robot calibrated otherwise. Redoing only the leader arm moves no follower zero, so the
    id stays; a follower whose entries change gets a new one."""
    with emulated("arm") as (spec, chains):
        follower = centred(spec, spec.motors)
        before = RobotCalibration("arm-earlier", "arm", {"follower": follower})
        redone = {}
        for arm in ("leader", "follower"):
            motors = {m.id: m.model for m in arm_motors(spec, arm)}
            with DynamixelBus(arm, spec.buses[arm].port, 1_000_000, motors) as bus:
                redone[arm] = calibrate(spec, {arm: bus}, ScriptedOperator(chains[arm]), [arm], before)
    assert redone["leader"].id == "arm-earlier" and set(redone["leader"].arms) == {"follower", "leader"}
    assert redone["leader"].arms["follower"] == follower
    # the follower's zero pose is ZERO, off the centre ticks it had: a new frame, a new id
    assert redone["follower"].id != "arm-earlier" and redone["follower"].id.startswith("arm-")


def test_two_calibrations_of_one_robot_saving_at_once_keep_both_arms(tmp_path, monkeypatch):
    """Two `platform calibrate` runs, an arm each (a terminal per arm), saving at the same
    moment: each merges into the file as it is then, under the folder's lock, so both arms
    are kept. Each merged into the file as it was when it started, the last save dropped
    the other's arm. The save is slowed so the two overlap every time."""
    import threading

    from shallowpi.robots import calibration as calibration_module

    spec = robot_spec("bimanual")
    measured = {arm: {arm: centred(spec, arm_motors(spec, arm))} for arm in ("follower_left", "follower_right")}
    real_save = calibration_module.save_calibration

    def slow_save(calibration, root=None):
        time.sleep(0.3)  # the window between reading the file and renaming the new one over it
        return real_save(calibration, root)

    monkeypatch.setattr(calibration_module, "save_calibration", slow_save)
    runs = [threading.Thread(target=update_calibration, args=(spec, arms, tmp_path)) for arms in measured.values()]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    saved = load_calibration("bimanual", tmp_path)
    assert set(saved.arms) == {"follower_left", "follower_right"}
    for arm, entries in measured.items():
        assert saved.arms[arm] == entries[arm]


def test_recalibrating_a_follower_keeps_the_file_it_replaces(tmp_path):
    """Episodes carry only the calibration id: once a follower is recalibrated, the frame
    they were recorded in lives on only in the replaced file, so it is kept."""
    spec = robot_spec("arm")
    first = {"follower": centred(spec, spec.motors)}
    moved = {"follower": {j: dataclasses.replace(c, homing_offset=c.homing_offset + 100)
                          for j, c in first["follower"].items()}}
    _, one, path = update_calibration(spec, first, tmp_path)
    assert not (path.parent / "calibrations").exists()  # nothing was replaced
    replaced, two, _ = update_calibration(spec, moved, tmp_path)
    assert replaced == one and two.id != one.id
    kept = RobotCalibration.from_json(archive_path(one, tmp_path).read_text())
    assert kept == one and archive_path(one, tmp_path).parent == path.parent / "calibrations"
    # The replaced file is kept as it was, byte for byte, not as this code writes it again.
    before = path.read_bytes().replace(b"\n", b"\r\n")  # the same calibration, written otherwise
    path.write_bytes(before)
    back = {"follower": first["follower"]}
    assert load_calibration("arm", tmp_path) == two
    _, three, _ = update_calibration(spec, back, tmp_path)
    assert three.id != two.id and archive_path(two, tmp_path).read_bytes() == before


def test_calibrating_a_holding_arm_warns_before_it_goes_limp_and_writes_nothing_before_the_first_enter():
    """A killed recording or a faulted deploy leaves a follower holding: calibrate names the
    servos holding torque and waits before switching it off (the arm would drop). Another
    tool's Homing Offset is cleared only after the zero-pose Enter, so Ctrl-C at a prompt
    leaves the servos as they were found."""
    with emulated("arm") as (spec, chains):
        follower = chains["follower"].servos
        for servo in follower.values():
            servo.set("torque_enable", 1)
        follower[2].set("homing_offset", 700)
        motors = {m.id: m.model for m in arm_motors(spec, "follower")}

        class Interrupted(ScriptedOperator):
            def __call__(self, message: str) -> None:
                super().__call__(message)
                if "zero pose" in message:
                    self.offset_at_zero_prompt = follower[2].get("homing_offset")
                    raise KeyboardInterrupt

        operator = Interrupted(chains["follower"])
        with DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors) as bus, \
                pytest.raises(KeyboardInterrupt):
            calibrate(spec, {"follower": bus}, operator, ["follower"])
        assert operator.prompts[0] == ("holding torque: follower servo(s) 1, 2, 3, 4, 5, 6, 7; they go limp next "
                                       "(Ctrl-C too releases them): support the arm(s), then press Enter")
        assert all(operator.torque_at_warning.values())  # still holding while the person takes it
        assert operator.offset_at_zero_prompt == 700 and follower[2].get("homing_offset") == 700
        assert not any(servo.torque for servo in follower.values())
        # Not holding: no warning; the offset is cleared once the zero pose is confirmed.
        operator = ScriptedOperator(chains["follower"])
        with DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors) as bus:
            calibrate(spec, {"follower": bus}, operator, ["follower"])
        assert "zero pose" in operator.prompts[0] and len(operator.prompts) == 2
        assert follower[2].get("homing_offset") == 0


def test_calibration_names_every_joint_the_sweep_left_out():
    """The sweep's range bounds the follower's goals: a joint left out would be held still,
    a gripper never opened has no travel. Refused in one line naming them all."""
    with emulated("arm") as (spec, chains):
        motors = {m.id: m.model for m in arm_motors(spec, "follower")}
        bus = DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors)
        with bus, pytest.raises(CalibrationError, match=r"^elbow_flex, gripper on arm 'follower' barely moved during "
                                                        r"the sweep; move every joint through its whole range"):
            calibrate(spec, {"follower": bus}, ScriptedOperator(chains["follower"], left_out=(3, 7)), ["follower"])


class NoisyOperator(ScriptedOperator):
    """The sweep with a burst of line noise on one servo between its two ends."""

    def __call__(self, message: str) -> None:
        if "zero pose" in message:
            return super().__call__(message)
        self.prompts.append(message)
        servos = self.chain.servos
        for i, servo in servos.items():
            servo.plant.move_to(self.zero[i] + (self.opening if i == 7 else 1.0))
        time.sleep(0.15)
        self.chain.corrupt(3)
        time.sleep(0.4)  # the sampler's read fails: its thread ended, the sweep cut at one end
        self.chain.corrupt(3, False)
        for i, servo in servos.items():
            servo.plant.move_to(self.zero[i] - (0.0 if i == 7 else 1.0))
        time.sleep(0.15)


def test_a_bus_failure_during_the_sweep_saves_nothing():
    """The sampler thread died on a bus error; its traceback was printed, the sweep kept the
    readings up to it plus one final read, and every joint was saved with half its range."""
    with emulated("arm") as (spec, chains):
        motors = {m.id: m.model for m in arm_motors(spec, "leader")}
        with DynamixelBus("leader", spec.buses["leader"].port, 1_000_000, motors) as bus, \
                pytest.raises(CalibrationError, match=r"^\[leader\] the bus failed during the sweep .*nothing was saved"):
            calibrate(spec, {"leader": bus}, NoisyOperator(chains["leader"]), ["leader"])


def _calibrate_follower(spec, chains):
    motors = {m.id: m.model for m in arm_motors(spec, "follower")}
    with DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors) as bus:
        return calibrate(spec, {"follower": bus}, ScriptedOperator(chains["follower"]), ["follower"])


def test_follower_goals_stay_inside_the_range_swept_at_calibration():
    """arm.yaml allows every revolute joint +-2.6 rad and the lift 0..0.4 m, one number for
    every arm built to it; this arm's sweep went 1 rad (shaft) either side of zero. A goal
    past the sweep (a leader, a policy) stops 2 % of the swept range short of its end (a
    sweep goes to the hard stops, where a goal would stall the servo), not at the config's
    limit."""
    with emulated("arm") as (spec, chains):
        calibration = _calibrate_follower(spec, chains)
        elbow, lift = spec.joint_names.index("elbow_flex"), spec.joint_names.index("shoulder_lift")
        with DynamixelRobot(spec, calibration, clock=None) as robot:
            limits = robot.limits()
            assert limits["elbow_flex"][:2] == pytest.approx((-0.96, 0.96), abs=0.01)  # 2 % of 2 rad kept clear
            # 1 rad x 0.15 m/rad either side of zero: the config's 0 binds below, the sweep above
            assert limits["shoulder_lift"][:2] == pytest.approx((0.0, 0.144), abs=0.002)
            assert limits["gripper"][:2] == (0.0, 1.0)
            for _ in range(80):  # far past the sweep, at the velocity bound
                robot.observe()
                sent = robot.act({"elbow_flex": 2.0, "shoulder_lift": 0.4})
                time.sleep(0.005)
            assert sent[elbow] == pytest.approx(0.96, abs=0.01) and sent[lift] == pytest.approx(0.144, abs=0.002)
            shaft = chains["follower"].servos[3].plant.read(time.monotonic()).position
            assert shaft - ZERO[3] < 0.96 + 0.02  # the servo stopped short of the sweep's end
    # A sweep that never reached the config's range is no limit at all: refused.
    far = dataclasses.replace(calibration, arms={"follower": {
        **calibration.arms["follower"],
        "shoulder_lift": dataclasses.replace(calibration.arms["follower"]["shoulder_lift"], range_max=100)}})
    with pytest.raises(PlatformError, match=r"joint 'shoulder_lift' was swept through .* outside its config limits 0\.\.0\.4"):
        DynamixelRobot(spec, far)
    # Overlapping them by less than the margin: the limits came out inverted (lower > upper).
    lift = calibration.arms["follower"]["shoulder_lift"]
    sliver = dataclasses.replace(calibration, arms={"follower": {
        **calibration.arms["follower"], "shoulder_lift": dataclasses.replace(lift, range_max=lift.homing_offset + 10)}})
    with pytest.raises(PlatformError, match=r"joint 'shoulder_lift' was swept through -0\.15\.\.0\.002\d* .* outside"):
        DynamixelRobot(spec, sliver)


def test_an_arm_on_another_usb_adapter_than_at_calibration_is_refused_before_a_port_opens(tmp_path, monkeypatch):
    """/dev/ttyUSBn numbers adapters in the order USB finds them: after a reboot two arms
    that answer alike (same IDs, same models) can swap ports, and every other check passes.
    The calibration keeps the adapter each arm was measured through (udev's
    /dev/serial/by-id name); a bus on another one is refused, the swap named."""
    from shallowpi.hardware.dynamixel import port as port_module

    by_id = tmp_path / "by-id"
    by_id.mkdir()
    monkeypatch.setattr(port_module, "SERIAL_BY_ID", by_id)
    first, second = "usb-FTDI_USB__-__Serial_Converter_FT1AAAA-if00-port0", "usb-FTDI_USB__-__Serial_Converter_FT2BBBB-if00-port0"
    with emulated("arm") as (spec, chains):
        (by_id / first).symlink_to(spec.buses["follower"].port)
        (by_id / second).symlink_to(spec.buses["leader"].port)
        calibration = _calibrate_follower(spec, chains)
        assert calibration.adapters == {"follower": first}
        assert RobotCalibration.from_json(calibration.to_json()).adapters == {"follower": first}
        DynamixelRobot(spec, calibration, clock=None)  # the same adapter: taken
        swapped = spec.with_ports({"follower": spec.buses["leader"].port, "leader": spec.buses["follower"].port})
        with pytest.raises(CalibrationError, match=rf"bus 'follower' \(.*\) is on USB adapter {second}, but was "
                                                   rf"calibrated through {first}; another adapter \(replaced\?\)"):
            DynamixelRobot(swapped, calibration, clock=None)
        both = dataclasses.replace(calibration, adapters={"follower": first, "leader": second})
        with pytest.raises(CalibrationError, match=r"bus 'leader' .* it is the adapter arm 'follower' was calibrated "
                                                   r"through: the two are swapped: name the port by its adapter \("
                                                   rf"robot.buses.leader.port=/dev/serial/by-id/{second}\)"):
            LeaderFollower(swapped, both)
        # The follower's adapter replaced: recorded without a sweep, the id (and with it the
        # policies and stores made under it) kept.
        replacement = "usb-FTDI_USB__-__Serial_Converter_FT3CCCC-if00-port0"
        (by_id / first).unlink()
        (by_id / replacement).symlink_to(spec.buses["follower"].port)
        with pytest.raises(CalibrationError, match="calibrate --robot arm --arm follower --adapter-only"):
            DynamixelRobot(spec, calibration, clock=None)
        save_calibration(calibration, tmp_path / "robots")
        _, adopted, _ = update_calibration(spec, {}, tmp_path / "robots", adopt=["follower"])
        assert adopted.id == calibration.id and adopted.adapters == {"follower": replacement}
        DynamixelRobot(spec, adopted, clock=None)
        # Swapped ports are no replaced adapter: adopting the other arm's would give this arm its zeros.
        save_calibration(dataclasses.replace(adopted, adapters={"follower": replacement, "leader": second}),
                         tmp_path / "robots")
        with pytest.raises(CalibrationError, match=rf"arm 'follower' is on the USB adapter arm 'leader' was "
                                                   rf"calibrated through \({second}\): the ports are swapped"):
            update_calibration(swapped, {}, tmp_path / "robots", adopt=["follower"])


def test_a_calibration_without_adapters_is_warned_of_until_they_are_recorded(tmp_path, monkeypatch, caplog):
    """A calibration made before adapters were recorded (or through a pty) checks nothing: a
    swap of two identical arms' ports would pass. Connect says so, with the command that
    records them without a sweep, until they are recorded; a robot of one bus is not warned."""
    import logging

    from shallowpi.hardware.dynamixel import port as port_module

    by_id = tmp_path / "by-id"
    by_id.mkdir()
    monkeypatch.setattr(port_module, "SERIAL_BY_ID", by_id)
    adapter = "usb-FTDI_USB__-__Serial_Converter_FT1AAAA-if00-port0"
    with emulated("arm") as (spec, chains):
        old = dataclasses.replace(_calibrate_follower(spec, chains), adapters={})  # as made before the record
        (by_id / adapter).symlink_to(spec.buses["follower"].port)
        with caplog.at_level(logging.WARNING, logger="shallowpi.robots.calibration"):
            DynamixelRobot(spec, old, clock=None)
        assert ("the calibration records no USB adapter for follower" in caplog.text
                and "platform calibrate --robot arm --arm follower --adapter-only" in caplog.text), caplog.text
        save_calibration(old, tmp_path / "robots")
        from shallowpi.commands.doctor_checks import calibration_report

        report = calibration_report(spec, tmp_path / "robots")
        assert any(line.startswith("warning: robot 'arm': the calibration records no USB adapter for follower")
                   for line in report), report
        _, adopted, _ = update_calibration(spec, {}, tmp_path / "robots", adopt=["follower"])
        assert adopted.id == old.id and adopted.adapters == {"follower": adapter}
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="shallowpi.robots.calibration"):
            DynamixelRobot(spec, adopted, clock=None)
            single = dataclasses.replace(spec, buses={"follower": spec.buses["follower"]})
            old.check_adapters(single, ["follower"])
        assert "records no USB adapter" not in caplog.text, caplog.text


def test_a_gripper_in_plain_position_mode_is_warned_of_and_kept_clear_of_its_stops(caplog):
    """Current-based position mode caps a gripper's push (the shipped configs); a lab's
    config in plain position mode does not, and a goal at fully closed stalled the servo
    against its stop at full current: such a gripper is kept 2 % of its scale clear of both
    ends, and the robot says why it should not run so."""
    import logging

    from shallowpi.hardware.dynamixel.control_table import OperatingMode

    with emulated("arm") as (spec, chains):
        calibration = _calibrate_follower(spec, chains)
        plain = dataclasses.replace(spec, motors=[
            dataclasses.replace(m, mode=OperatingMode.POSITION, max_current_a=None) if m.joint == "gripper" else m
            for m in spec.motors])
        with caplog.at_level(logging.WARNING):
            assert DynamixelRobot(spec, calibration, clock=None).limits()["gripper"][:2] == (0.0, 1.0)
            assert "plain position mode" not in caplog.text
            assert DynamixelRobot(plain, calibration, clock=None).limits()["gripper"][:2] == pytest.approx((0.02, 0.98))
        assert "gripper 'gripper' runs in plain position mode" in caplog.text
        assert "mode: current_based_position with max_current_a caps the push" in caplog.text


def test_a_leader_gripper_closed_near_the_end_of_its_turn_calibrates_its_real_opening():
    """Closed at ~tick 4000 and opened 0.8 rad toward positive ticks, a position-mode servo
    reads past 4095 from 0: read raw, the sweep took it for a 3,500-tick travel the other
    way, inside the turn, and teleoperation then read the gripper as closed whatever the
    leader did. Unwrapped, the opening is 0.8 rad (~522 ticks) up from 4000, across the end
    of the turn, and teleoperation reads it on across that end too (`_unwrapped`)."""
    with emulated("arm") as (spec, chains):
        tick = spec.leaders[0].motors[0].model.radians_per_tick
        zero = {**ZERO, 7: (4000 - 2048) * tick}
        motors = {m.id: m.model for m in arm_motors(spec, "leader")}
        with DynamixelBus("leader", spec.buses["leader"].port, 1_000_000, motors) as bus:
            calibration = calibrate(spec, {"leader": bus}, ScriptedOperator(chains["leader"], zero, opening=0.8),
                                    ["leader"])
        entry = calibration.arms["leader"]["gripper"]
        assert (entry.direction, entry.span_ticks) == (1, pytest.approx(0.8 / tick, abs=2))
        servo = chains["leader"].servos[7]
        with LeaderFollower(spec, calibration) as teleop:
            readings = []
            for opening in (0.0, 0.04, 0.4, 0.8):  # the last two read from tick 0 up
                servo.plant.move_to(zero[7] + opening)
                time.sleep(0.05)
                readings.append(teleop.read()["gripper"])
            assert servo.get("present_position") < 1000
        assert readings == pytest.approx([0.0, 0.05, 0.5, 1.0], abs=0.01)


def test_calibrate_refuses_a_follower_sweep_its_servo_cannot_drive():
    """A follower joint zeroed near the end of its turn and swept across it: its limits,
    narrowed to that sweep, reach past the servo's position limits (0..4095), so connect
    would refuse it; calibrate says so before saving."""
    with emulated("arm") as (spec, chains):
        tick = spec.motors[0].model.radians_per_tick
        zero = {**ZERO, 1: (4000 - 2048) * tick}  # shoulder_pan, swept +-1 rad: up to ~tick 4650
        motors = {m.id: m.model for m in arm_motors(spec, "follower")}
        with DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors) as bus, \
                pytest.raises(PlatformError, match=r"joint 'shoulder_pan' limits -0\.96[.\d]*\.\.0\.96[.\d]* map to ticks 3\d{3}\.\.4\d{3}, past "
                                                   r"servo 1's position limits 0\.\.4095 on bus 'follower'"):
            calibrate(spec, {"follower": bus}, ScriptedOperator(chains["follower"], zero), ["follower"])

def test_calibrate_refuses_a_multi_turn_travel_across_the_end_of_the_turn_counted_at_power_up():
    """arm.yaml's follower gripper (current-based position mode) counts turns, from ticks
    0..4095 at power-up: closed at ~tick 4000 and opened 0.8 rad (~522 ticks) it was saved
    across that turn's end, and after a power cycle part of its travel read a whole turn off,
    which connect could let through. Calibrate says so before saving, as it says what
    connect would refuse; closed elsewhere in the turn, the same opening calibrates."""
    with emulated("arm") as (spec, chains):
        tick = spec.motors[0].model.radians_per_tick
        motors = {m.id: m.model for m in arm_motors(spec, "follower")}
        with DynamixelBus("follower", spec.buses["follower"].port, 1_000_000, motors) as bus:
            with pytest.raises(PlatformError) as err:
                calibrate(spec, {"follower": bus}, ScriptedOperator(chains["follower"], {**ZERO, 7: (4000 - 2048) * tick},
                                                                    opening=0.8), ["follower"])
            assert re.fullmatch(r"robot 'arm': joint 'gripper' travels through ticks 40\d\d\.\.45\d\d of servo 7 on "
                                r"bus 'follower' \(its limits 0\.\.1 and its calibration's sweep\), across the end of "
                                r"the turn its count restarts in at power-up \(0\.\.4095\): .* re-seat its horn so the "
                                r"travel lies within ticks 0\.\.4095, then `platform calibrate --robot arm --arm "
                                r"follower` \(or, .*\)", str(err.value)), str(err.value)
            calibration = calibrate(spec, {"follower": bus}, ScriptedOperator(chains["follower"], opening=0.8),
                                    ["follower"])
        assert calibration.arms["follower"]["gripper"].span_ticks == pytest.approx(0.8 / tick, abs=2)


def test_a_multi_turn_leader_travel_across_the_end_of_its_power_up_turn_is_refused():
    """A leader gripper in extended position mode (a GELLO-style trigger) counts turns from
    0..4095 at power-up: closed at ~tick 4000 and opened 0.8 rad, part of its travel reads a
    turn off after a power cycle and sends the follower there. Refused at calibration and at
    connect. What is checked is the leader's limits narrowed to its sweep (`leader_limits`):
    a multi-turn shoulder zeroed at tick 3000, whose +-2.6 rad config limits would reach
    tick 4695, swept through 2200..3800 only, connects."""
    from omegaconf import OmegaConf

    from shallowpi import config
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.hardware.dynamixel.emulator import build_chains
    from shallowpi.robots.spec import RobotSpec

    raw = OmegaConf.to_container(config.compose(["robot=arm"]).robot, resolve=True)
    for joint in ("gripper", "shoulder_pan"):
        raw["leaders"]["leader"]["motors"][joint]["mode"] = "extended_position"
    spec = RobotSpec.from_config(raw)
    chains = build_chains(spec.bus_motors())
    try:
        spec = spec.with_ports({bus: chain.path for bus, chain in chains.items()})
        tick = spec.leaders[0].motors[0].model.radians_per_tick
        motors = {m.id: m.model for m in arm_motors(spec, "leader")}
        said = (r"robot 'arm': joint 'gripper' travels through ticks 40\d\d\.\.45\d\d of servo 7 on bus 'leader' "
                r"\(its limits 0\.\.1 and its calibration's sweep\), across the end of the turn its count restarts "
                r"in at power-up \(0\.\.4095\)")
        with DynamixelBus("leader", spec.buses["leader"].port, 1_000_000, motors) as bus, \
                pytest.raises(PlatformError, match=said):
            calibrate(spec, {"leader": bus}, ScriptedOperator(chains["leader"], {**ZERO, 7: (4000 - 2048) * tick},
                                                              opening=0.8), ["leader"])
        entries = centred(spec, spec.leaders[0].motors)
        across = RobotCalibration("c1", "arm", {"leader": {**entries, "gripper": MotorCalibration(4000, 1, 4000, 4522, 522)}})
        chains["leader"].servos[7].plant.move_to((4100 - 2048) * tick)
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=said):
            LeaderFollower(spec, across).connect()
        narrow = RobotCalibration("c1", "arm", {"leader": {**entries, "shoulder_pan": MotorCalibration(3000, 1, 2200, 3800)}})
        chains["leader"].servos[1].plant.move_to((3400 - 2048) * tick)
        time.sleep(0.05)
        with LeaderFollower(spec, narrow) as teleop:
            assert teleop.read()["shoulder_pan"] == pytest.approx(400 * tick, abs=2 * tick)
    finally:
        for chain in chains.values():
            chain.stop()


def test_leader_follower_maps_leader_pose_into_follower_joint_space():
    with emulated("arm") as (spec, chains):
        leader_only, _ = _calibrate_leader(spec, chains)
        # A robot drives only calibrated followers: theirs as calibrated about the centre tick.
        follower = centred(spec, spec.motors)
        calibration = dataclasses.replace(leader_only, arms={**leader_only.arms, "follower": follower})
        leader_servos = chains["leader"].servos
        pose = {"shoulder_pan": 0.3, "shoulder_lift": 0.2, "elbow_flex": -0.4, "wrist_flex": 0.1,
                "wrist_yaw": -0.2, "wrist_roll": 0.5}
        for m in spec.leaders[0].motors:
            opening = -0.4  # gripper half open: it opens toward negative ticks
            leader_servos[m.id].plant.move_to(ZERO[m.id] + (opening if m.joint == "gripper" else pose[m.joint]))
        with LeaderFollower(spec, calibration, gripper_map=GripperMap(gain=1.0)) as teleop, \
                DynamixelRobot(spec, calibration) as robot:
            assert isinstance(teleop, Teleoperator)
            action = teleop.read()
            assert set(action) == set(spec.joint_names)
            for joint, value in pose.items():
                # pose is the servo shaft's turn; the linear stage moves metres_per_rad per radian.
                metres_per_rad = next(m.metres_per_rad for m in spec.motors if m.joint == joint) or 1.0
                assert action[joint] == pytest.approx(value * metres_per_rad, abs=0.01)
            assert action["gripper"] == pytest.approx(0.5, abs=0.01)
            sent = robot.act(action)  # the robot still clamps: shoulder_lift upper is 0.4
            assert np.all(sent <= robot.upper) and np.all(sent >= robot.lower)
        assert not any(s.torque for s in leader_servos.values())


def test_leaders_are_read_in_their_configured_mode_and_without_reply_delay_at_calibration_and_teleoperation():
    """A leader servo left in extended position mode by another tool counts whole turns that
    position mode (arm.yaml's) drops: calibrated in one mode and read in the other, its joint
    would be off by turns. Calibration and teleoperation both set the configured mode, and
    Return Delay Time 0 (the factory's 0.5 ms a reply was left on leaders: 4 ms of an
    eight-servo leader's every read)."""
    from shallowpi.hardware.dynamixel.control_table import OperatingMode

    with emulated("arm") as (spec, chains):
        servos = chains["leader"].servos
        for servo in servos.values():
            servo.set("operating_mode", int(OperatingMode.EXTENDED_POSITION))
        assert {s.get("return_delay_time") for s in servos.values()} == {250}  # as from the factory
        _calibrate_leader(spec, chains)
        assert {s.get("operating_mode") for s in servos.values()} == {int(OperatingMode.POSITION)}
        assert {s.get("return_delay_time") for s in servos.values()} == {0}
        for servo in servos.values():
            servo.set("operating_mode", int(OperatingMode.EXTENDED_POSITION))
            servo.set("return_delay_time", 250)
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")):
            assert {s.get("operating_mode") for s in servos.values()} == {int(OperatingMode.POSITION)}
            assert {s.get("return_delay_time") for s in servos.values()} == {0}
            assert not any(s.torque for s in servos.values())


def test_a_leader_moved_past_the_end_of_its_turn_reads_on_not_from_the_far_side():
    """In position mode a servo reads one turn (0..4095): a leader turned by hand past tick
    0 reads ~4095, which converted is the far end of the joint's range, and the follower
    would sweep across it. Readings are unwrapped: the joint reads on past its limit (the
    follower clamps it there), never from the other side."""
    with emulated("arm") as (spec, chains):
        pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
        servo = chains["leader"].servos[pan.id]
        tick = pan.model.radians_per_tick
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:
            readings = []
            # from 3.0 rad below the centre tick (~ tick 92) to 3.3 (past tick 0)
            for rad in (-3.0, -3.1, -3.2, -3.3, -3.2):
                servo.plant.move_to(rad)
                time.sleep(0.05)
                readings.append(teleop.read()["shoulder_pan"])
            assert servo.get("present_position") > 4000  # the servo itself wrapped
        assert readings == pytest.approx([-3.0, -3.1, -3.2, -3.3, -3.2], abs=2 * tick)


def test_a_leader_turned_far_past_its_limit_never_reads_as_the_other_end_of_its_range():
    """The arm's range (±2.6 rad) spans all but ~700 ticks of the turn: a leader turned more
    than that past its limit reads inside the range again, at its other end. Taken as read
    (a reading in range counted as unambiguous), the follower swung across its whole range
    at top speed, closed gripper and all, and the take recorded it as the operator's
    action. Every reading now continues the last one."""
    with emulated("arm") as (spec, chains):
        pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
        servo = chains["leader"].servos[pan.id]
        tick = pan.model.radians_per_tick
        path = (-2.5, -2.9, -3.3, -3.7, -4.0, -3.6, -3.0, -2.5)
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:
            readings = []
            for rad in path:
                servo.plant.move_to(rad)
                time.sleep(0.05)
                readings.append(teleop.read()["shoulder_pan"])
                if rad == -4.0:
                    raw = servo.get("present_position")
        low, high = (round(2048 + x / tick) for x in (-2.6, 2.6))
        assert low <= raw <= high  # the servo itself reads inside the joint's range there
        assert readings == pytest.approx(list(path), abs=2 * tick)


def test_a_leader_whose_status_return_level_was_lowered_is_set_back_at_connect(caplog):
    """Status Return Level is RAM another tool may lower; at 1 a leader servo answers no write,
    and the torque-off at connect failed 'did not answer ... check its power and cable' though
    the servo had applied it (at 0 it answers no read either). The leader's connect sets it
    back, as the follower's does, and says so."""
    with emulated("arm") as (spec, chains):
        leader = chains["leader"].servos
        first, second = sorted(leader)[:2]
        leader[first].set("status_return_level", 1)
        leader[second].set("status_return_level", 0)
        with caplog.at_level(logging.WARNING), LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:
            assert {s.get("status_return_level") for s in leader.values()} == {2}
            assert set(teleop.read()) == {m.joint for m in spec.leaders[0].motors}
        said = [r.getMessage() for r in caplog.records if "Status Return Level set to 2" in r.getMessage()]
        assert len(said) == 1 and f"servo {first} from 1" in said[0] and f"servo {second} from 0" in said[0]


def test_a_leader_turned_over_half_a_turn_during_a_stall_is_not_read_a_turn_off():
    """Each reading continues the last the shorter way round, which assumes reads tens of ms
    apart. The loop stalled (the writer waiting on the disk) while the operator turned the
    wrist from -2.0 to +2.0 rad: continued, that read -4.28, a whole turn off for the rest of
    the run (every later reading continues it), the follower pinned at its lower limit and
    every recorded action that limit. After a stall, a continued reading outside the range
    that a whole turn puts inside is read there; one held past its limit through a stall,
    whose other turn is outside the range too, is still continued (read as a first one, it
    went to the turn nearest the range: the far end, where the follower swung)."""
    with emulated("arm") as (spec, chains):
        roll = next(m for m in spec.leaders[0].motors if m.joint == "wrist_roll")
        servo = chains["leader"].servos[roll.id]
        tick = roll.model.radians_per_tick
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:

            def reads(rad: float, after_s: float = 0.05) -> float:
                servo.plant.move_to(rad)
                time.sleep(after_s)
                return teleop.read()["wrist_roll"]

            assert reads(-2.0) == pytest.approx(-2.0, abs=2 * tick)
            stall = 0.3  # s: twice LeaderFollower.STALL_S
            readings = [reads(2.0, stall)] + [reads(rad) for rad in (1.0, 0.0, -1.0, -2.0)]
            assert readings == pytest.approx([2.0, 1.0, 0.0, -1.0, -2.0], abs=2 * tick)
            # Past the turn's end (-3.0 reads as +3.28, outside the +-2.6 range) after a
            # stall: the turn nearest the range, as a first reading is, then continued.
            readings = [reads(-3.0, stall)] + [reads(rad) for rad in (-2.8, -2.5)]
            assert readings == pytest.approx([-3.0, -2.8, -2.5], abs=2 * tick)
            # Held past +2.6 (3.3 reads as -2.98, outside too) through a stall: still 3.3.
            readings = [reads(rad) for rad in (0.0, 1.5, 2.4, 2.7, 3.0, 3.3)] + [reads(3.3, stall), reads(3.2)]
            assert readings[-3:] == pytest.approx([3.3, 3.3, 3.2], abs=2 * tick)


def test_a_multi_turn_leader_counting_from_another_turn_is_refused_at_connect():
    """A leader gripper in extended position mode (a GELLO-style trigger) restarts its turn
    count at power-up: a turn off, it sent the follower a whole turn's worth past its limit
    (clipped there). Followers were checked at connect; leaders now are too, in one line."""
    import math

    from omegaconf import OmegaConf

    from shallowpi import config
    from shallowpi.hardware.dynamixel.emulator import build_chains
    from shallowpi.robots.spec import RobotSpec

    raw = OmegaConf.to_container(config.compose(["robot=arm"]).robot, resolve=True)
    raw["leaders"]["leader"]["motors"]["gripper"]["mode"] = "extended_position"
    spec = RobotSpec.from_config(raw)
    chains = build_chains(spec.bus_motors())
    try:
        spec = spec.with_ports({bus: chain.path for bus, chain in chains.items()})
        gripper = next(m for m in spec.leaders[0].motors if m.joint == "gripper")
        servo = chains["leader"].servos[gripper.id]
        servo.plant.move_to(0.3 - 2 * math.pi)  # half open, counted a turn down
        time.sleep(0.05)
        with pytest.raises(PlatformError, match=r"robot 'arm': joint 'gripper' reads .* over half a turn outside its "
                                                r"limits"):
            LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")).connect()
        servo.plant.move_to(0.3)  # the same pose, counted in the right turn
        time.sleep(0.05)
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:
            assert 0.0 < teleop.read()["gripper"] < 1.0
    finally:
        for chain in chains.values():
            chain.stop()


def test_a_leader_range_across_the_end_of_the_turn_connects_one_over_a_turn_is_refused():
    """Calibrated with its zero near tick 0, a leader's range crosses the end of the turn:
    read on across it (`_unwrapped`), it connects, where the follower's limits (through the
    leader's zero -1195..2195) were once refused. A leader swept through more than a turn
    reads alike at two places in its range: refused in one line."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.robots.base import PlatformError

    with emulated("arm") as (spec, _):
        leader = centred(spec, spec.leaders[0].motors)
        near_zero = RobotCalibration("c1", "arm", {"leader": {**leader, "shoulder_pan": MotorCalibration(500, 1, -1000, 2000)}})
        with LeaderFollower(spec, near_zero) as teleop:
            teleop.read()
        over_a_turn = RobotCalibration("c1", "arm", {"leader": {**leader, "shoulder_pan": MotorCalibration(500, 1, -1000, 3100)}})
        with pytest.raises(PlatformError, match=r"^robot 'arm': leader joint 'shoulder_pan' was swept through ticks "
                                                r"-1000\.\.3100 at calibration, more than servo 1's one turn of "
                                                r"readings \(0\.\.4095\) on bus 'leader': its readings repeat inside "
                                                r"that range, so none says where the joint is; calibrate it again, "
                                                r"moving it through less than a turn \(`platform calibrate --robot "
                                                r"arm --arm leader`\)$"):
            LeaderFollower(spec, over_a_turn).connect()


@pytest.mark.parametrize("word", ["motor encoder error", "electrical shock"])
def test_a_leader_servo_alarm_stops_teleoperation_and_the_follower_holds(word):
    """A leader's reads skipped the alarm check and its registers were never read: a leader
    reporting a motor encoder error (its position untrustworthy) or an electrical shock went
    on driving the follower, no line said. Its alert bit comes free with the sync read (one
    exchange a tick, as before); the fault is one line naming the leader arm, and the
    follower holds as for a leader that stops answering. A leader found so at connect is
    refused."""
    with emulated("arm") as (spec, chains):
        calibration = RobotCalibration(UNCALIBRATED, "arm")
        with LeaderFollower(spec, calibration) as teleop, DynamixelRobot(spec, calibration) as robot:
            bus = teleop.buses["leader"]
            before = bus.tally.exchanges
            teleop.read()
            assert bus.tally.exchanges - before == 1
            chains["leader"].hardware_error(3, word)
            with pytest.raises(ServoFaultError, match=rf"^leader arm 'leader': bus 'leader' .* servo 3 "
                                                      rf"\(XL330-M077\) reports {word}; ") as err:
                teleop.read()
            assert err.value.bus == "leader" and "\n" not in str(err.value)
            state = robot.hold_or_release(err.value)
            assert state.holding and all(s.torque for s in chains["follower"].servos.values())
        with pytest.raises(ServoFaultError, match=rf"^leader arm 'leader': .* servo 3 .* reports {word}"):
            LeaderFollower(spec, calibration).connect()


def test_gripper_map_clips_to_the_opening_range():
    squeeze = GripperMap(gain=1.25, offset=-0.1)
    assert squeeze(0.0) == 0.0 and squeeze(1.0) == 1.0 and squeeze(0.5) == pytest.approx(0.525)


def test_keyboard_jog_moves_the_selected_joint_within_limits():
    spec = robot_spec("humanoid")
    pressed: list[str] = []
    jog = KeyboardJog(spec.joints, {n: 0.0 for n in spec.joint_names}, lambda: [pressed.pop(0) for _ in list(pressed)])
    pressed += ["w", "w", "]", "s"]
    target = jog.read()
    step = (3.1 + 3.1) / 50
    assert target["left_shoulder_pitch"] == pytest.approx(2 * step)
    assert target["left_shoulder_roll"] == pytest.approx(-step)
    jog.selected = spec.joint_names.index("lift")
    pressed += ["s"] * 5  # lift starts at its lower limit: stays there
    assert jog.read()["lift"] == 0.0
    pressed += ["]", "0"]  # wraps to the first joint, then back to its start
    target = jog.read()
    assert jog.selected == 0 and target["left_shoulder_pitch"] == 0.0


def test_a_leader_resting_just_past_its_turn_end_at_connect_reads_its_real_pose():
    # The first reading has nothing to continue from: taken as read, a leader 0.02 rad past
    # its low limit across the turn end (tick -8 reads 4088) was a joint a turn up, and the
    # follower swung to its far limit and stayed a turn off for the whole session.
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    with emulated("arm") as (spec, chains):
        leader = centred(spec, spec.leaders[0].motors)
        zero_at_1700 = RobotCalibration("c1", "arm", {"leader": {**leader, "shoulder_pan": MotorCalibration(1700, 1, 0, 4095)}})
        pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
        servo = chains["leader"].servos[pan.id]
        servo.plant.move_to(servo.ticks_to_rad(-8))
        time.sleep(0.05)
        tick = pan.model.radians_per_tick
        with LeaderFollower(spec, zero_at_1700) as teleop:
            first = teleop.read()["shoulder_pan"]
            assert servo.get("present_position") == pytest.approx(4088, abs=1)  # the servo reads from the far end
            servo.plant.move_to(servo.ticks_to_rad(1700))
            time.sleep(0.05)
            then = teleop.read()["shoulder_pan"]
        assert first == pytest.approx(-1708 * tick, abs=2 * tick) and then == pytest.approx(0.0, abs=2 * tick)


def test_servos_another_tool_shifted_or_mirrored_are_refused_and_calibration_clears_it():
    # The calibration is taken in the servos' raw frame; lerobot's calibration writes Homing
    # Offset, Dynamixel Wizard either or Drive Mode's reverse bit: up to half a turn off, or a
    # follower moving against its leader. Connect refuses (torque off); calibrate clears them.
    with emulated("arm") as (spec, chains):
        follower, leader = chains["follower"].servos, chains["leader"].servos
        follower[1].set("homing_offset", 1024)
        with pytest.raises(PlatformError, match=r"robot 'arm': servo 1 on bus 'follower' has Homing Offset 1024 "
                                                r"\(another tool's calibration\).*platform calibrate --robot arm "
                                                r"--arm follower"):
            DynamixelRobot(spec, RobotCalibration(UNCALIBRATED, "arm")).connect()
        assert not any(s.torque for s in follower.values())
        follower[1].set("homing_offset", 0)
        leader[3].set("drive_mode", leader[3].get("drive_mode") | 1)
        with pytest.raises(PlatformError, match=r"servo 3 on bus 'leader' has Drive Mode reversed"):
            LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")).connect()
        leader[5].set("homing_offset", -300)
        _calibrate_leader(spec, chains)
        assert all(s.get("homing_offset") == 0 and not s.get("drive_mode") & 1 for s in leader.values())
        with LeaderFollower(spec, RobotCalibration(UNCALIBRATED, "arm")) as teleop:
            teleop.read()


def test_a_direction_changed_in_the_config_after_calibration_is_refused():
    # The file's direction was used and the config's silently ignored: a mirrored joint
    # "fixed" with direction: -1 kept moving the same wrong way.
    from shallowpi.robots.calibration import CalibrationError

    with emulated("arm") as (spec, chains):
        calibration, _ = _calibrate_leader(spec, chains)
    pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
    assert calibration.converter(pan, "revolute").calibration.direction == pan.direction
    flipped = dataclasses.replace(pan, direction=-pan.direction)
    with pytest.raises(CalibrationError, match=r"joint 'shoulder_pan' on arm 'leader' of robot 'arm' has direction "
                                               r"-1 in its config but was calibrated with 1"):
        calibration.converter(flipped, "revolute")


def test_a_calibration_read_from_another_servo_is_refused():
    """The file named joints only: IDs swapped in the config (elbow 3 <-> 4) or a servo
    re-ID'd or replaced kept its entry, and joint A's zero and sweep drove servo B, a few
    hundred ticks off, inside every check. Each entry now records the servo it was read
    from; files from before it (no servo recorded) read as they did."""
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration
    from shallowpi.robots.calibration import CalibrationError, RobotCalibration

    with emulated("arm") as (spec, chains):
        calibration, _ = _calibrate_leader(spec, chains)
    pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
    entry = calibration.converter(pan, "revolute").calibration
    assert (entry.servo_id, entry.model_number) == (pan.id, pan.model.number)
    assert RobotCalibration.from_json(calibration.to_json()).arms == calibration.arms  # the file keeps them
    with pytest.raises(CalibrationError, match=rf"joint 'shoulder_pan' on arm 'leader' of robot 'arm' was calibrated "
                                               rf"on servo {pan.id} \(model {pan.model.number}\); the config now says "
                                               rf"servo {pan.id + 1} "):
        calibration.converter(dataclasses.replace(pan, id=pan.id + 1), "revolute")
    older = MotorCalibration(entry.homing_offset, entry.direction, entry.range_min, entry.range_max)
    assert "servo_id" not in older.to_dict()  # an older file's entry: written back as it was, not checked
    legacy = RobotCalibration(calibration.id, "arm", {"leader": {"shoulder_pan": older}})
    assert legacy.converter(dataclasses.replace(pan, id=pan.id + 1), "revolute").calibration == older


def test_a_leader_whose_first_reading_was_guessed_a_turn_off_reads_true_once_inside_its_range():
    # Zero at tick 2300: the range is ticks 605..3995. Resting at tick 100, 505 ticks below it,
    # the leader reads nearer the range a turn up (4196); once moved into its range, where a
    # reading is unambiguous, it reads as it is (the guess was kept for the whole session).
    from shallowpi.hardware.dynamixel.calibration import MotorCalibration

    with emulated("arm") as (spec, chains):
        leader = centred(spec, spec.leaders[0].motors)
        zero_at_2300 = RobotCalibration("c1", "arm", {"leader": {**leader, "shoulder_pan": MotorCalibration(2300, 1, 0, 4095)}})
        pan = next(m for m in spec.leaders[0].motors if m.joint == "shoulder_pan")
        servo, tick = chains["leader"].servos[pan.id], pan.model.radians_per_tick
        servo.plant.move_to(servo.ticks_to_rad(100))
        time.sleep(0.05)
        with LeaderFollower(spec, zero_at_2300) as teleop:
            teleop.read()
            readings = []
            for ticks in (300, 605, 1500, 2300):
                servo.plant.move_to(servo.ticks_to_rad(ticks))
                time.sleep(0.05)
                readings.append(teleop.read()["shoulder_pan"])
        assert readings[1:] == pytest.approx([(605 - 2300) * tick, (1500 - 2300) * tick, 0.0], abs=2 * tick)
