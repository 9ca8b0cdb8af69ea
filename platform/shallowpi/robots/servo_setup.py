"""What `DynamixelRobot.connect` does to each bus it opened before torque goes on:
`settle_torque` checks the servos and writes the EEPROM fields this driver needs, keeping
torque on where a killed run left the servos holding (so that connect need not drop the
arm), and `configure_servos` sets modes, disarms bus watchdogs, checks the position limits
and caps the grippers' current.

EEPROM fields can only be written with torque off: `eeprom_fixes` lists what differs from
what this driver needs, and torque goes off only when there is something to write or the
servos are not already holding in their configured mode (`holding_as_configured`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.calibration import JointConverter
from shallowpi.hardware.dynamixel.control_table import TORQUE_ON_BY_GOAL_UPDATE, OperatingMode
from shallowpi.hardware.dynamixel.motor_bus import MotorBus
from shallowpi.robots.calibration import check_position_limits, check_servo_frame
from shallowpi.robots.spec import MotorSpec

log = logging.getLogger(__name__)


def eeprom_fixes(robot: str, bus: MotorBus, bus_name: str, ids: list[int]) -> dict[int, dict[str, int]]:
    """{servo id: {EEPROM field: value to write}} for the servos of the bus set otherwise
    than this driver needs (each written only when it differs):
    - Return Delay Time 0: replies without the factory 0.5 ms pause, so ten servos'
      replies fit in the time one would otherwise take;
    - the X series' Drive Mode without "torque on by goal update"
      (TORQUE_ON_BY_GOAL_UPDATE), which another tool may have set."""
    fixes: dict[int, dict[str, int]] = {}
    for servo_id in ids:
        if bus.read_one(servo_id, "return_delay_time") != 0:
            fixes.setdefault(servo_id, {})["return_delay_time"] = 0
        if bus.motors[servo_id].series == "X" and \
                (mode := bus.read_one(servo_id, "drive_mode")) & TORQUE_ON_BY_GOAL_UPDATE:
            log.warning("robot %s: servo %d on bus '%s' had Drive Mode's 'torque on by goal update' "
                        "set; cleared (a goal written with torque off would power it)", robot, servo_id, bus_name)
            fixes.setdefault(servo_id, {})["drive_mode"] = mode & ~TORQUE_ON_BY_GOAL_UPDATE
    return fixes


def holding_as_configured(robot: str, bus: MotorBus, bus_name: str, modes: Mapping[int, OperatingMode]) -> bool:
    """Whether every servo of the bus ({id: configured operating mode}) has torque on (a run
    before this one, killed, left them holding) in its configured mode (a change is an
    EEPROM write)."""
    for servo_id, mode in modes.items():
        if not bus.read_one(servo_id, "torque_enable") or bus.read_one(servo_id, "operating_mode") != mode:
            return False
    log.info("robot %s: the servos on bus '%s' hold with torque on, as configured: kept on", robot, bus_name)
    return True


def settle_torque(robot: str, bus: MotorBus, bus_name: str, motors: Sequence[MotorSpec]) -> bool:
    """Verify the bus's servos, check that each reads in the frame the calibration was taken
    in (`check_servo_frame`), and write the EEPROM fields this driver needs (`eeprom_fixes`)
    with torque off. Returns True, torque left on, when nothing had to be written and the
    servos were found holding as configured (a killed run): the loaded arm is not dropped
    and taken up again where it sagged. Raises BusError / PlatformError."""
    bus.verify()
    ids = [m.id for m in motors]
    check_servo_frame(robot, bus, bus_name, ids)
    fixes = eeprom_fixes(robot, bus, bus_name, ids)
    holding = not fixes and holding_as_configured(robot, bus, bus_name, {m.id: m.mode for m in motors})
    if not holding:
        bus.set_torque(False, ids)
    for servo_id, fields in fixes.items():
        for field, value in fields.items():
            bus.write_one(servo_id, field, value)
    return holding


def configure_servos(robot: str, bus: MotorBus, bus_name: str, motors: Sequence[MotorSpec],
                     convert: Mapping[str, JointConverter], limits: Mapping[str, tuple[float, float]]) -> None:
    """Disarm the bus watchdogs, set each servo's operating mode, check that its joint's
    `limits` (lower, upper; joint units) map inside what the servo allows
    (`check_position_limits`), cap a current-based servo's push (`cap_current`), and
    refuse a servo reporting a hardware error. Raises BusError / PlatformError."""
    for motor in motors:
        # A bus watchdog another program armed would stop the servo after any pause in
        # traffic longer than its period (the reset wait, the warm-up: this driver talks
        # only while it controls), then refuse every goal until cleared, a sync write's
        # silently. 0 disarms it and clears its error.
        if (armed := bus.read_one(motor.id, "bus_watchdog")) != 0:
            log.warning("robot %s: servo %d on bus '%s' had its bus watchdog %s; disarmed", robot, motor.id,
                        bus_name, "tripped" if armed == -1 else f"set to {armed}")
            bus.write_one(motor.id, "bus_watchdog", 0, check_alert=False)
    for motor in motors:
        bus.set_operating_mode(motor.mode, [motor.id])
        check_position_limits(robot, bus, motor, convert[motor.joint], *limits[motor.joint])
        cap_current(robot, bus, motor)
    bus.raise_on_hardware_errors([m.id for m in motors])


def cap_current(robot: str, bus: MotorBus, motor: MotorSpec) -> None:
    """Write the motor's `max_current_a` as its Goal Current and read it back: in current-
    based position mode the servo pushes with at most that (a gripper that must not
    crush). PlatformError when it exceeds the servo's Current Limit or does not read back."""
    if motor.max_current_a is None:
        return
    ticks = round(motor.max_current_a / motor.model.current_unit_a)
    limit = bus.read_one(motor.id, "current_limit")
    if ticks > limit:
        raise PlatformError(
            f"robot '{robot}': joint '{motor.joint}' max_current_a {motor.max_current_a:g} A is above servo "
            f"{motor.id}'s Current Limit ({limit * motor.model.current_unit_a:.2f} A); lower it in the robot config")
    bus.write_one(motor.id, "goal_current", ticks)
    if (back := bus.read_one(motor.id, "goal_current")) != ticks:
        raise PlatformError(f"robot '{robot}': servo {motor.id} ('{motor.joint}') reads Goal Current {back}, "
                            f"sent {ticks}; check it with `platform doctor`")
