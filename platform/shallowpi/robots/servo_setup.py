"""What `DynamixelRobot.connect` does to each bus it opened before torque goes on:
`settle_torque` checks the servos (each answering every instruction:
`answer_every_instruction`) and writes the EEPROM fields this driver needs, keeping
torque on where a killed run left the servos holding (so that connect need not drop the
arm), and `configure_servos` sets modes, disarms bus watchdogs, switches the motion
profiles off, checks the position limits and caps the grippers' current.

EEPROM fields can only be written with torque off: `eeprom_fixes` lists what differs from
what this driver needs, and torque goes off only when there is something to write or the
servos are not already holding in their configured mode (`holding_as_configured`).

Every speed bound above this layer (act()'s step a tick, the catch-up, the executor's seam
check) takes a joint's max_velocity for how fast its servo follows a goal. What a servo
does with a goal is set by registers another tool may have left otherwise (RAM and the Y
series' Hybrid area keep them until power-off, or for good once saved): a velocity- or
time-based profile, a Velocity Limit below the joint's speed (the Y series caps its motion
there; a factory YM080 at 20.2 rev/min, 2.12 rad/s). Connect puts them in the one state
those bounds assume: no profile (`clear_profiles`, `eeprom_fixes`) and, on the Y series,
a Velocity Limit at least the joint's speed (`velocity_limit_fix`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from shallowpi.errors import ConfigError, PlatformError
from shallowpi.hardware.dynamixel.calibration import JointConverter
from shallowpi.hardware.dynamixel.control_table import (
    PROFILE_TIME_BASED,
    TORQUE_ON_BY_GOAL_UPDATE,
    OperatingMode,
)
from shallowpi.hardware.dynamixel.motor_bus import BusError, MotorBus
from shallowpi.robots.calibration import check_position_limits, check_servo_frame
from shallowpi.robots.spec import MotorSpec

log = logging.getLogger(__name__)

# Startup Configuration(34) bit 0 of the Y series, "Startup Torque On": the servo powers up
# with torque on, holding where it is. A servo that restarted (a power dip) then reads as
# holding, and `DynamixelRobot.check_faults`, which knows a restart by torque off without an
# alarm, would not see it: the run went on recording goals that joint never followed.
STARTUP_TORQUE_ON = 0x01
# Status Return Level 2: the servo answers every instruction. Below it (1: reads and pings
# only; 0: pings only) an acknowledged write is never answered and fails as if the servo were
# unplugged, though it applied the write.
ANSWERS_ALL = 2


def eeprom_fixes(robot: str, bus: MotorBus, bus_name: str, motors: Sequence[MotorSpec]) -> dict[int, dict[str, int]]:
    """{servo id: {EEPROM field: value to write}} for the servos of the bus set otherwise
    than this driver needs (each written only when it differs):
    - Return Delay Time 0: replies without the factory 0.5 ms pause, so ten servos'
      replies fit in the time one would otherwise take;
    - Drive Mode without a time-based profile (PROFILE_TIME_BASED, X and Y series) and, on
      the X series, without "torque on by goal update" (TORQUE_ON_BY_GOAL_UPDATE), which
      another tool may have set; its other bits as they are;
    - on the Y series, a Velocity Limit the joint's max_velocity fits under
      (`velocity_limit_fix`), said in one line for the bus;
    - on the Y series, Startup Configuration without Startup Torque On (STARTUP_TORQUE_ON),
      which another tool may have set; its other bits as they are.
    Raises ConfigError for a max_velocity the servo cannot reach, BusError."""
    fixes: dict[int, dict[str, int]] = {}
    raised: dict[tuple[int, int], list[int]] = {}  # (read, written): the servos
    for motor in motors:
        servo_id = motor.id
        if bus.read_one(servo_id, "return_delay_time") != 0:
            fixes.setdefault(servo_id, {})["return_delay_time"] = 0
        mode = cleared = bus.read_one(servo_id, "drive_mode")
        if motor.model.series == "X" and mode & TORQUE_ON_BY_GOAL_UPDATE:
            log.warning("robot %s: servo %d on bus '%s' had Drive Mode's 'torque on by goal update' "
                        "set; cleared (a goal written with torque off would power it)", robot, servo_id, bus_name)
            cleared &= ~TORQUE_ON_BY_GOAL_UPDATE
        if mode & PROFILE_TIME_BASED:
            log.warning("robot %s: servo %d on bus '%s' had Drive Mode's time-based profile set; cleared (each goal "
                        "would take the profile's time, however near, and the joint lag its goals)",
                        robot, servo_id, bus_name)
            cleared &= ~PROFILE_TIME_BASED
        if cleared != mode:
            fixes.setdefault(servo_id, {})["drive_mode"] = cleared
        startup = bus.read_one(servo_id, "startup_configuration") if motor.model.series == "Y" else 0
        if startup & STARTUP_TORQUE_ON:
            log.warning("robot %s: servo %d on bus '%s' had Startup Configuration's 'startup torque on' set; "
                        "cleared (a servo that restarted would come back holding, and the restart go unseen)",
                        robot, servo_id, bus_name)
            fixes.setdefault(servo_id, {})["startup_configuration"] = startup & ~STARTUP_TORQUE_ON
        if (limit := velocity_limit_fix(robot, bus, bus_name, motor)) is not None:
            raised.setdefault(limit, []).append(servo_id)
            fixes.setdefault(servo_id, {})["velocity_limit"] = limit[1]
    if raised:
        log.warning("robot %s: Velocity Limit (in 0.01 rev/min) raised to the joints' max_velocity on "
                    "bus '%s' (below it the servo would lag its goals): %s", robot, bus_name,
                    "; ".join(f"servo{'s' * (len(ids) > 1)} {', '.join(map(str, ids))} from {old} to {new}"
                              for (old, new), ids in raised.items()))
    return fixes


def velocity_limit_fix(robot: str, bus: MotorBus, bus_name: str, motor: MotorSpec) -> tuple[int, int] | None:
    """(Velocity Limit read, Velocity Limit to write) when the servo's limit is below the
    shaft speed its joint's max_velocity asks (`MotorSpec.max_speed_rad_s`); None when it is
    not, on a gripper, and on the X series, whose Velocity Limit bounds Goal Velocity only.
    The Y series' caps the servo's motion itself (factory: the YM080's rated 20.2 of its
    32.2 rev/min at no load), so the joint would lag its goals: it is raised to the speed
    asked, rounded up to the register's 0.01 rev/min. ConfigError (one line, naming the
    register and the value another tool or the factory left) when the speed asked is past
    the servo's no-load speed, which no register setting reaches."""
    need = motor.max_speed_rad_s
    if motor.model.series != "Y" or need is None:
        return None
    unit = motor.model.velocity_unit_rad_s
    limit = bus.read_one(motor.id, "velocity_limit")
    if need <= limit * unit:
        return None
    if need > motor.model.no_load_rad_s:
        address = motor.model.field("velocity_limit").address
        raise ConfigError(
            f"robot '{robot}': joint '{motor.joint}' max_velocity asks {need:.3g} rad/s of servo {motor.id} on bus "
            f"'{bus_name}', above its Velocity Limit({address}) {limit} ({limit * unit:.3g} rad/s) and its "
            f"{motor.model.name}'s no-load speed ({motor.model.no_load_rpm:g} rev/min = "
            f"{motor.model.no_load_rad_s:.3g} rad/s), past which the limit is not raised; lower max_velocity in "
            f"configs/robot/{robot}.yaml")
    return limit, math.ceil(need / unit - 1e-9)  # 1e-9: a speed at a whole unit is not one unit more


def answer_every_instruction(robot: str, bus: MotorBus, bus_name: str, ids: Sequence[int]) -> None:
    """Status Return Level 2 (ANSWERS_ALL) on each servo of `ids`, just pinged (`verify`).
    The register is RAM, kept until power-off, and another tool may have lowered it: at 1 the
    servo answers no write, and each acknowledged write failed "did not answer ... check its
    power and cable" though the servo had applied it; at 0 it answers no read either. Where
    the level reads below 2, or no read is answered, 2 is written without waiting for a
    status (a sync write) and read back; said in one line for the bus. Raises BusError when
    the servo still does not answer, or reads back another level."""
    found: list[str] = []
    for servo_id in ids:
        try:
            level = bus.read_one(servo_id, "status_return_level")
        except BusError:
            level = None  # it answered the ping: Status Return Level 0 answers nothing else
        if level is not None and level >= ANSWERS_ALL:
            continue
        bus.write("status_return_level", {servo_id: ANSWERS_ALL})
        if (back := bus.read_one(servo_id, "status_return_level")) != ANSWERS_ALL:
            raise BusError(f"robot '{robot}': servo {servo_id} on bus '{bus_name}' reads Status Return Level "
                           f"{back} after {ANSWERS_ALL} was written; check it with `platform doctor`")
        found.append(f"servo {servo_id} from {'0 (no read answered)' if level is None else level}")
    if found:
        log.warning("robot %s: Status Return Level set to %d on bus '%s' (below it a servo answers no write, "
                    "another tool's setting): %s", robot, ANSWERS_ALL, bus_name, ", ".join(found))


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
    answer_every_instruction(robot, bus, bus_name, ids)
    check_servo_frame(robot, bus, bus_name, ids)
    fixes = eeprom_fixes(robot, bus, bus_name, motors)
    holding = not fixes and holding_as_configured(robot, bus, bus_name, {m.id: m.mode for m in motors})
    if not holding:
        bus.set_torque(False, ids)
    for servo_id, fields in fixes.items():
        for field, value in fields.items():
            bus.write_one(servo_id, field, value)
    return holding


def configure_servos(robot: str, bus: MotorBus, bus_name: str, motors: Sequence[MotorSpec],
                     convert: Mapping[str, JointConverter], limits: Mapping[str, tuple[float, float]]) -> None:
    """Disarm the bus watchdogs, set each servo's operating mode, switch its motion profile
    off (`clear_profiles`), check that its joint's `limits` (lower, upper; joint units) map
    inside what the servo allows (`check_position_limits`), cap a current-based servo's
    push (`cap_current`), and refuse a servo reporting a hardware error. Raises BusError /
    PlatformError."""
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
    # After the modes: the profile registers are RAM, and a mode change may reset RAM.
    clear_profiles(robot, bus, bus_name, motors)
    bus.raise_on_hardware_errors([m.id for m in motors])


def clear_profiles(robot: str, bus: MotorBus, bus_name: str, motors: Sequence[MotorSpec]) -> None:
    """Profile Acceleration and Profile Velocity 0 on each servo, written where they differ,
    said in one line for the bus: no profile, so the servo follows each goal as sent, at up
    to the speed of its motor (X series) or its Velocity Limit (Y, `velocity_limit_fix`),
    never at a profile's capped speed and acceleration. Both are RAM (the Y series' Hybrid
    area), kept until power-off: another tool's values (Dynamixel Wizard, a ROS driver)
    stay in them, and a factory Y servo has a trapezoidal one, 20.2 rev/min at 2.8 rad/s^2.
    0 is in every model's range (Y: 0 up to the Velocity/Acceleration Limit). Raises BusError."""
    found: list[str] = []
    for motor in motors:
        values = []
        # Acceleration first: a time-based X profile refuses one over half its Profile Velocity.
        for field in ("profile_acceleration", "profile_velocity"):
            if (value := bus.read_one(motor.id, field)) != 0:
                bus.write_one(motor.id, field, 0)
            values.append(value)
        if any(values):
            found.append(f"servo {motor.id} had {values[1]}/{values[0]}")
    if found:
        log.info("robot %s: motion profiles switched off on bus '%s' (Profile Velocity/Acceleration 0): %s",
                 robot, bus_name, ", ".join(found))


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
