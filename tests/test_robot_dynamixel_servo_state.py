"""The servo state another tool or a killed run may leave, as connect finds it: an alarm that
keeps torque on a bus found holding, a Y servo set to start with torque on, a Status Return
Level below 2. Each on the emulated chain, which follows the e-manuals there."""

from __future__ import annotations

import logging

import pytest

from dxl_fixtures import emulated
from shallowpi.hardware.dynamixel.emulator import EmulatedServo
from shallowpi.hardware.dynamixel.motor_bus import ServoFaultError
from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot


def test_an_alarm_cuts_torque_only_where_the_servo_shuts_down_on_it():
    """X series: only the errors Shutdown(63) selects cut torque (factory 52 leaves an input
    voltage error out); Y series: Error Codes 9 and 17-20 keep torque on ("Torque ON: Y").
    The emulator cut torque on every error, so an alarm on a holding servo was untestable."""
    x = EmulatedServo(1, "XM430-W350")
    x.write(x.model.field("torque_enable").address, b"\x01")
    x.inject_error("input voltage error")
    assert x.torque and x.alert and not x.faulted
    x.set("shutdown", 52 | 1)  # input voltage selected: now it shuts down
    x.inject_error("input voltage error")
    assert not x.torque and x.faulted
    y = EmulatedServo(2, "YM080-230-R099-RH")
    y.write(y.model.field("torque_enable").address, b"\x01")
    y.inject_error("following error")
    assert y.torque and y.alert
    y.inject_error("overload")
    assert not y.torque and y.faulted


def test_a_failed_connect_switches_off_a_bus_found_holding_with_a_servo_alarm():
    """A killed run left the arm holding; a servo on it then latched an alarm that keeps its
    torque (an input voltage error, which the factory Shutdown leaves out). Connect refused
    it, then closed that bus still holding, with nothing left to watch the alarm: the alarm's
    bus goes limp, as put_back(fault) does, and a later put-back says nothing held."""
    with emulated("arm") as (spec, chains):
        follower = chains["follower"].servos
        killed = DynamixelRobot(spec, RobotCalibration(UNCALIBRATED, "arm"))
        killed.connect()
        for bus in killed.buses.values():
            bus.disconnect()  # the process died: ports closed, torque left on
        chains["follower"].hardware_error(2, "input voltage error")
        assert follower[2].torque  # a real XL430 keeps it on this error
        robot = DynamixelRobot(spec, RobotCalibration(UNCALIBRATED, "arm"))
        with pytest.raises(ServoFaultError, match=r"^bus 'follower' .* servo 2 .* reports input voltage error") as err:
            robot.connect()
        assert "\n" not in str(err.value)
        assert not any(s.torque for s in follower.values())
        robot.put_back()  # a start's clean-up puts back again
        assert not any("left holding" in line for line in robot.torque_off_failures), robot.torque_off_failures
        assert not any(s.torque for s in follower.values())


def test_a_y_servo_set_to_start_with_torque_on_is_cleared_at_connect(caplog):
    """Y Startup Configuration(34) bit 0 restarts the servo with torque on: a restart (a power
    dip) then looked like a servo holding, and check_faults, which knows a restart by torque
    off without an alarm, never saw it. Connect clears the bit (its other bits kept), says
    so naming the servo, and a restart is then found."""
    with emulated("humanoid") as (spec, chains):
        servo = chains["head_lift"].servos[3]
        assert servo.model.series == "Y"
        servo.set("startup_configuration", 0b11)  # Startup Torque On, and RAM Restore
        servo.reboot()
        assert servo.torque  # what a real one does at power-on
        with caplog.at_level(logging.WARNING), DynamixelRobot(spec, RobotCalibration(UNCALIBRATED, "humanoid")) \
                as robot:
            assert servo.get("startup_configuration") == 0b10
            said = [r.getMessage() for r in caplog.records if "startup torque on" in r.getMessage()]
            assert len(said) == 1 and "servo 3 on bus 'head_lift'" in said[0]
            robot.buses["head_lift"].reboot(3)  # a power dip
            with pytest.raises(ServoFaultError, match=r"bus 'head_lift' servo 3 .* has torque off without an alarm"):
                robot.check_faults()


def test_a_status_return_level_below_2_is_set_back_at_connect(caplog):
    """Status Return Level is RAM another tool may lower: at 1 a servo answers reads and pings
    but no write, and connect failed "servo 3 did not answer the write ... check its power
    and cable" though the servo had applied it; at 0 it answers pings only. Connect sets it
    to 2 (a write that waits for no status, read back) and says so in one line."""
    with emulated("arm") as (spec, chains):
        follower = chains["follower"].servos
        follower[3].set("status_return_level", 1)
        follower[5].set("status_return_level", 0)
        with caplog.at_level(logging.WARNING), DynamixelRobot(spec, RobotCalibration(UNCALIBRATED, "arm")) \
                as robot:
            assert {s.get("status_return_level") for s in follower.values()} == {2}
            said = [r.getMessage() for r in caplog.records if "Status Return Level set to 2" in r.getMessage()]
            assert len(said) == 1 and "servo 3 from 1" in said[0] and "servo 5 from 0" in said[0]
            robot.observe()
            robot.hold()
            assert all(s.torque for s in follower.values())
