"""The servo settings `DynamixelRobot.connect` puts right before torque goes on, and whether a
bus's servos were left holding (a killed run), so that connect need not drop the arm.

EEPROM fields can only be written with torque off: `eeprom_fixes` lists what differs from
what this driver needs, and connect turns torque off only when there is something to write
or the servos are not already holding in their configured mode (`holding_as_configured`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from shallowpi.hardware.dynamixel.control_table import TORQUE_ON_BY_GOAL_UPDATE, OperatingMode
from shallowpi.hardware.dynamixel.motor_bus import MotorBus

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
