"""Control tables as data, keyed by model number.

A servo is a small memory map: every setting and reading is a field at an address with a
size. The X-series share one layout (with a few per-model gaps); the Y-series moved
nearly everything (Goal Position is 116 on X, 532 on Y) and counts 524,288 ticks a turn
instead of 4,096. Nothing else in the driver knows an address: it asks the model.

Field names are the e-manual's, in snake_case (Goal Position -> goal_position).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from shallowpi.errors import PlatformError


class OperatingMode(IntEnum):
    """Operating Mode values (X-series e-manual, "Operating Mode(11)"; Y uses 0, 1, 3)."""

    CURRENT = 0
    VELOCITY = 1
    POSITION = 3
    EXTENDED_POSITION = 4
    CURRENT_BASED_POSITION = 5
    PWM = 16

    @classmethod
    def parse(cls, text: str | int) -> OperatingMode:
        """A config value -> mode: the register value (int) or a name ("extended-position").

        Raises PlatformError listing the names for an unknown name, ValueError for an
        unknown int.
        """
        if isinstance(text, int):
            return cls(text)
        try:
            return cls[text.strip().upper().replace("-", "_")]
        except KeyError:
            choices = ", ".join(m.name.lower() for m in cls)
            raise PlatformError(f"unknown operating mode '{text}'; choose one of: {choices}") from None


@dataclass(frozen=True)
class Field:
    """One control-table entry. `eeprom` fields can only be written with torque off."""

    address: int
    size: int  # bytes: 1, 2 or 4
    signed: bool = False
    writable: bool = True
    eeprom: bool = False

    def to_unsigned(self, value: int) -> int:
        """Two's complement into `size` bytes (-1 -> 0xFFFFFFFF for a 4-byte field).

        Wraps silently: a value out of the field's range is not an error here.
        """
        return value & ((1 << (8 * self.size)) - 1)

    def from_unsigned(self, raw: int) -> int:
        """Raw register bytes (as an unsigned int) -> value, sign-extended if `signed`."""
        bits = 8 * self.size
        if self.signed and raw >= 1 << (bits - 1):
            return raw - (1 << bits)
        return raw


def _ro(address: int, size: int, signed: bool = False) -> Field:
    return Field(address, size, signed=signed, writable=False)


def _ee(address: int, size: int, signed: bool = False) -> Field:
    return Field(address, size, signed=signed, eeprom=True)


def _rw(address: int, size: int, signed: bool = False) -> Field:
    return Field(address, size, signed=signed)


# X-series control table, protocol 2.0. Common to XL330, XL430, XM430 and XM540, see e.g.
# https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/#control-table
X_SERIES_TABLE: dict[str, Field] = {
    "model_number": _ro(0, 2),
    "model_information": _ro(2, 4),
    "firmware_version": _ro(6, 1),
    "id": _ee(7, 1),
    "baud_rate": _ee(8, 1),
    "return_delay_time": _ee(9, 1),
    "drive_mode": _ee(10, 1),
    "operating_mode": _ee(11, 1),
    "secondary_id": _ee(12, 1),
    "protocol_type": _ee(13, 1),
    "homing_offset": _ee(20, 4, signed=True),
    "moving_threshold": _ee(24, 4),
    "temperature_limit": _ee(31, 1),
    "max_voltage_limit": _ee(32, 2),
    "min_voltage_limit": _ee(34, 2),
    "pwm_limit": _ee(36, 2),
    "current_limit": _ee(38, 2),
    "velocity_limit": _ee(44, 4),
    "max_position_limit": _ee(48, 4),
    "min_position_limit": _ee(52, 4),
    "shutdown": _ee(63, 1),
    "torque_enable": _rw(64, 1),
    "led": _rw(65, 1),
    "status_return_level": _rw(68, 1),
    "registered_instruction": _ro(69, 1),
    "hardware_error_status": _ro(70, 1),
    "velocity_i_gain": _rw(76, 2),
    "velocity_p_gain": _rw(78, 2),
    "position_d_gain": _rw(80, 2),
    "position_i_gain": _rw(82, 2),
    "position_p_gain": _rw(84, 2),
    "bus_watchdog": _rw(98, 1, signed=True),
    "goal_pwm": _rw(100, 2, signed=True),
    "goal_current": _rw(102, 2, signed=True),
    "goal_velocity": _rw(104, 4, signed=True),
    "profile_acceleration": _rw(108, 4),
    "profile_velocity": _rw(112, 4),
    "goal_position": _rw(116, 4, signed=True),
    "realtime_tick": _ro(120, 2),
    "moving": _ro(122, 1),
    "moving_status": _ro(123, 1),
    "present_pwm": _ro(124, 2, signed=True),
    "present_current": _ro(126, 2, signed=True),
    "present_velocity": _ro(128, 4, signed=True),
    "present_position": _ro(132, 4, signed=True),
    "velocity_trajectory": _ro(136, 4, signed=True),
    "position_trajectory": _ro(140, 4, signed=True),
    "present_input_voltage": _ro(144, 2),
    "present_temperature": _ro(146, 1),
}

# XL430-W250 has no current sensing: no Current Limit or Goal Current, and address 126 is
# Present Load (0.1 % of max torque), which the driver reads as its "current".
# https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/#control-table
XL430_TABLE: dict[str, Field] = {
    k: v for k, v in X_SERIES_TABLE.items() if k not in ("current_limit", "goal_current")
}

# Y-series (DYNAMIXEL-Y), YM080-230-R099-RH:
# https://emanual.robotis.com/docs/en/dxl/y/ym080-230-r099-rh/#control-table
# No Hardware Error Status: an Error Code (153) holds one numbered error instead.
Y_SERIES_TABLE: dict[str, Field] = {
    "model_number": _ro(0, 2),
    "model_information": _ro(2, 4),
    "firmware_version": _ro(6, 1),
    "id": _ee(7, 1),
    "bus_watchdog": _rw(8, 2, signed=True),  # -1: tripped (as the X series' 1-byte one)
    "secondary_id": _ee(10, 1),
    "protocol_type": _ee(11, 1),
    "baud_rate": _ee(12, 1),
    "return_delay_time": _ee(13, 1),
    "status_return_level": _rw(15, 1),
    "registered_instruction": _ro(16, 1),
    "drive_mode": _ee(32, 1),
    "operating_mode": _ee(33, 1),
    "startup_configuration": _ee(34, 1),
    "moving_threshold": _ee(48, 4),
    "homing_offset": _ee(52, 4, signed=True),
    "inverter_temperature_limit": _ee(56, 1),
    "motor_temperature_limit": _ee(57, 1),
    "max_voltage_limit": _ee(60, 2),
    "min_voltage_limit": _ee(62, 2),
    "pwm_limit": _ee(64, 2),
    "current_limit": _ee(66, 2),
    "acceleration_limit": _ee(68, 4),
    "velocity_limit": _ee(72, 4),
    "max_position_limit": _ee(76, 4, signed=True),
    "min_position_limit": _ee(84, 4, signed=True),
    "controller_state": _ro(152, 1),
    "error_code": _ro(153, 1),
    "velocity_i_gain": _rw(212, 4),
    "velocity_p_gain": _rw(216, 4),
    "position_d_gain": _rw(224, 4),
    "position_i_gain": _rw(228, 4),
    "position_p_gain": _rw(232, 4),
    "profile_acceleration": _rw(240, 4),
    "profile_velocity": _rw(244, 4),
    "torque_enable": _rw(512, 1),
    "led": _rw(513, 1),
    "goal_pwm": _rw(524, 2, signed=True),
    "goal_current": _rw(526, 2, signed=True),
    "goal_velocity": _rw(528, 4, signed=True),
    "goal_position": _rw(532, 4, signed=True),
    "moving_status": _ro(541, 1),
    "realtime_tick": _ro(542, 2),
    "present_pwm": _ro(544, 2, signed=True),
    "present_current": _ro(546, 2, signed=True),
    "present_velocity": _ro(548, 4, signed=True),
    "present_position": _ro(552, 4, signed=True),
    "present_input_voltage": _ro(568, 2),
    "present_inverter_temperature": _ro(570, 1),
    "present_motor_temperature": _ro(571, 1),
}

# Hardware Error Status (70) bits, X-series e-manual "Hardware Error Status(70)".
X_HARDWARE_ERROR_BITS: dict[int, str] = {
    0: "input voltage error",
    2: "overheating",
    3: "motor encoder error",
    4: "electrical shock",
    5: "overload",
}

# Drive Mode (10) bit 3 of the X series (firmware 45 on, 46 on XL330): "Torque On by Goal
# Update", a Goal Position write turns torque on. Another tool may have set it; with it, the
# goals this driver writes with torque off (the present pose before torque-on, a hold
# after an e-stop) would power the servo.
TORQUE_ON_BY_GOAL_UPDATE = 0x08
# Drive Mode's bit 2 on the X series (X: Drive Mode(10), firmware 42 on) and the Y series
# (Drive Mode(32)): "Profile Configuration", 1 a time-based profile. Each goal then takes
# the profile's time (X: Profile Velocity in ms; Y: Profile Time(252)) however near it is:
# the servo no longer follows its goals at a speed. 0 is the velocity-based profile, which
# Profile Velocity 0 switches off.
PROFILE_TIME_BASED = 0x04
# Drive Mode's bit 0 on the X and Y series: the servo mirrors its own readings and goals.
REVERSE_BIT = 0x01

# Error Code (153) values, Y-series e-manual "Error Code(153)".
Y_ERROR_CODES: dict[int, str] = {
    1: "over voltage",
    2: "low voltage",
    3: "inverter overheating",
    4: "motor overheating",
    5: "overload",
    7: "inverter error",
    9: "battery warning",
    10: "battery error",
    11: "magnet error",
    12: "multi-turn error",
    13: "encoder error",
    14: "hall sensor error",
    15: "calibration error",
    17: "following error",
    18: "bus watchdog error",
    19: "over speed",
    20: "position limit reached",
}

# Error words that leave the servo working, torque on (the Y-series e-manual's Error Code
# table): reported, never a fault that stops the robot. A low multi-turn backup battery
# only asks for a new battery; the servo cannot clear it, so treated as a fault it would
# stop the robot at every connect until the battery is changed.
WARNING_ONLY = frozenset({"battery warning"})

# What to check for each error word: the fix half of a one-line error. A servo that shut
# down on an error keeps it latched and refuses torque until it restarts, and no command of
# this platform sends it a REBOOT: the advice names what the operator can do, power-cycle
# the servos (switch their supply off and on).
ERROR_ADVICE: dict[str, str] = {
    "battery warning": "replace the servo's multi-turn backup battery (it keeps working meanwhile)",
    "overload": "the joint is blocked or carries too much load; free it, then power-cycle the servos",
    "overheating": "let the servo cool and lower its duty, then power-cycle the servos",
    "inverter overheating": "let the servo cool and lower its duty, then power-cycle the servos",
    "motor overheating": "let the servo cool and lower its duty, then power-cycle the servos",
    "input voltage error": "check the power supply voltage",
    "over voltage": "check the power supply voltage",
    "low voltage": "check the power supply voltage",
    "electrical shock": "check the power wiring and the motor, then power-cycle the servos",
    "motor encoder error": "the encoder failed; the servo needs service",
}

# Baud Rate register codes -> bits per second (X: "Baud Rate(8)"; Y: "Baud Rate (Bus)(12)").
BAUD_CODES: dict[int, int] = {
    0: 9_600,
    1: 57_600,
    2: 115_200,
    3: 1_000_000,
    4: 2_000_000,
    5: 3_000_000,
    6: 4_000_000,
    7: 4_500_000,
}

ALERT_BIT = 0x80  # status packet error byte: the servo has a hardware error


RAD_S_PER_RPM = 2 * math.pi / 60


@dataclass(frozen=True)
class ModelSpec:
    """Everything the driver and the emulator need to know about one servo model.

    `ticks_per_turn` and `center_tick` map positions to shaft angles; the unit fields
    convert raw velocity and current. `defaults` are the factory values the emulator
    boots with (the e-manual's "Default" column, for the fields it uses).
    """

    name: str
    number: int
    series: str  # "X" or "Y"
    table: Mapping[str, Field]
    ticks_per_turn: int
    center_tick: int
    velocity_unit_rpm: float  # one Present Velocity tick, rev/min
    current_unit_a: float  # one Present Current tick, amperes (XL430: 0.1 % load)
    operating_modes: frozenset[OperatingMode]
    # The e-manual's No Load Speed at the recommended voltage (XL330 5 V, XL430 11.1 V, XM
    # 12 V, Y 24 V), rev/min of the output; the top of each input range turns up to 1.23x
    # faster (XM540-W270 at 14.8 V). Not the Velocity Limit register's default: on the Y
    # series that is the rated continuous speed, 20.2 of 32.2 rev/min.
    no_load_rpm: float
    defaults: Mapping[str, int] = field(default_factory=dict)
    manual: str = ""

    def field(self, name: str) -> Field:
        """The named field (snake_case e-manual name); PlatformError naming the manual if absent."""
        try:
            return self.table[name]
        except KeyError:
            raise PlatformError(
                f"{self.name} has no control-table field '{name}' (see {self.manual})"
            ) from None

    @property
    def no_load_rad_s(self) -> float:
        """`no_load_rpm` in rad/s of the output."""
        return self.no_load_rpm * RAD_S_PER_RPM

    @property
    def velocity_unit_rad_s(self) -> float:
        """One Present Velocity (and Velocity Limit) tick in rad/s of the output."""
        return self.velocity_unit_rpm * RAD_S_PER_RPM

    @property
    def radians_per_tick(self) -> float:
        """One position tick in rad: 2 pi / ticks_per_turn."""
        return 2 * math.pi / self.ticks_per_turn

    @property
    def error_field(self) -> str:
        """The hardware-error register's field: `hardware_error_status` on X-series,
        `error_code` on Y."""
        return "hardware_error_status" if self.series == "X" else "error_code"

    def decode_errors(self, value: int) -> list[str]:
        """The hardware-error register's value as words, e.g. 0x24 -> [overheating, overload]."""
        if self.series == "Y":
            return [] if value == 0 else [Y_ERROR_CODES.get(value, f"error code {value}")]
        return [word for bit, word in X_HARDWARE_ERROR_BITS.items() if value & (1 << bit)]

    def error_value(self, word: str) -> int:
        """The register value that reports `word` (the emulator's fault injection)."""
        table = (
            {w: 1 << b for b, w in X_HARDWARE_ERROR_BITS.items()}
            if self.series == "X"
            else {w: c for c, w in Y_ERROR_CODES.items()}
        )
        if word == "overheating" and self.series == "Y":
            word = "motor overheating"
        if word not in table:
            raise PlatformError(f"{self.name} cannot report '{word}'; it knows: {', '.join(table)}")
        return table[word]


def _x_model(name: str, number: int, *, current_unit_a: float, table=X_SERIES_TABLE,
             no_load_rpm: float, modes=(0, 1, 3, 4, 5, 16), velocity_limit: int = 265,
             current_limit: int = 0) -> ModelSpec:
    defaults = {
        "model_number": number,
        "firmware_version": 52,
        "id": 1,
        "baud_rate": 1,
        "return_delay_time": 250,
        "operating_mode": 3,
        "protocol_type": 2,
        "temperature_limit": 80,
        "max_voltage_limit": 160,
        "min_voltage_limit": 95,
        "pwm_limit": 885,
        "velocity_limit": velocity_limit,
        "max_position_limit": 4095,
        "min_position_limit": 0,
        "shutdown": 52,
        "status_return_level": 2,
        "present_input_voltage": 120,
        "present_temperature": 30,
    }
    if current_limit:
        defaults["current_limit"] = current_limit
    slug = name.lower()
    return ModelSpec(
        name=name, number=number, series="X", table=table, ticks_per_turn=4096,
        center_tick=2048, velocity_unit_rpm=0.229, current_unit_a=current_unit_a,
        operating_modes=frozenset(OperatingMode(m) for m in modes), no_load_rpm=no_load_rpm, defaults=defaults,
        manual=f"https://emanual.robotis.com/docs/en/dxl/x/{slug}/",
    )


MODELS: dict[int, ModelSpec] = {
    m.number: m
    for m in (
        # https://emanual.robotis.com/docs/en/dxl/x/xl330-m077/
        _x_model("XL330-M077", 1190, no_load_rpm=383, current_unit_a=0.001, velocity_limit=2047, current_limit=1750),
        # https://emanual.robotis.com/docs/en/dxl/x/xl330-m288/
        _x_model("XL330-M288", 1200, no_load_rpm=103, current_unit_a=0.001, velocity_limit=445, current_limit=1750),
        # https://emanual.robotis.com/docs/en/dxl/x/xl430-w250/
        _x_model("XL430-W250", 1060, no_load_rpm=57, current_unit_a=0.001, table=XL430_TABLE, modes=(1, 3, 4, 16)),
        # https://emanual.robotis.com/docs/en/dxl/x/xm430-w350/
        _x_model("XM430-W350", 1020, no_load_rpm=46, current_unit_a=0.00269, velocity_limit=200, current_limit=1193),
        # https://emanual.robotis.com/docs/en/dxl/x/xm540-w270/
        _x_model("XM540-W270", 1120, no_load_rpm=30, current_unit_a=0.00269, velocity_limit=128, current_limit=2047),
        # https://emanual.robotis.com/docs/en/dxl/y/ym080-230-r099-rh/
        # 524,288 ticks a turn of the output: the default Electronic Gear Ratio (99/1) scales
        # the motor encoder through the 99:1 reducer, and the default position limits are
        # +-262,144 (half a turn). Zero is the centre; positions are signed.
        ModelSpec(
            name="YM080-230-R099-RH", number=4150, series="Y", table=Y_SERIES_TABLE,
            ticks_per_turn=524_288, center_tick=0, velocity_unit_rpm=0.01, current_unit_a=0.01, no_load_rpm=32.2,
            operating_modes=frozenset({OperatingMode.CURRENT, OperatingMode.VELOCITY,
                                       OperatingMode.POSITION}),
            defaults={
                "model_number": 4150, "firmware_version": 40, "id": 1, "baud_rate": 1,
                "return_delay_time": 250, "status_return_level": 2, "protocol_type": 2,
                "operating_mode": 3, "current_limit": 2080, "velocity_limit": 2020,
                # A velocity-based trapezoidal profile out of the box: 20.2 rev/min (the
                # rated speed) and 1,610 rev/min^2 (2.8 rad/s^2), each at its limit register.
                "acceleration_limit": 161, "profile_acceleration": 161, "profile_velocity": 2020,
                "max_position_limit": 262_144, "min_position_limit": -262_144,
                "inverter_temperature_limit": 80, "motor_temperature_limit": 60,
                "max_voltage_limit": 320, "min_voltage_limit": 160,
                "present_input_voltage": 2400, "present_inverter_temperature": 35,
                "present_motor_temperature": 33,
            },
            manual="https://emanual.robotis.com/docs/en/dxl/y/ym080-230-r099-rh/",
        ),
    )
}

_BY_NAME: dict[str, ModelSpec] = {m.name.lower(): m for m in MODELS.values()}


def model_by_name(name: str) -> ModelSpec:
    """`xm430-w350` (any case, '_' or '-') -> its ModelSpec; unknown -> one-line error."""
    key = name.strip().lower().replace("_", "-")
    if key not in _BY_NAME:
        raise PlatformError(
            f"unknown Dynamixel model '{name}'; known: {', '.join(m.name for m in MODELS.values())} (another "
            "model is a ModelSpec entry in shallowpi/hardware/dynamixel/control_table.py, from its e-manual)"
        )
    return _BY_NAME[key]


def model_by_number(number: int) -> ModelSpec | None:
    """The model a PING reports (Model Number register), or None if this driver lacks it."""
    return MODELS.get(number)


def model_label(number: int) -> str:
    """Name and number for messages, e.g. `XM430-W350 (model 1020)`; `unknown model N` for
    a number this driver lacks."""
    model = MODELS.get(number)
    return f"{model.name} (model {number})" if model else f"unknown model {number}"


def span(model: ModelSpec, names: list[str] | tuple[str, ...]) -> tuple[int, int]:
    """(start address, length) of the smallest block holding every named field."""
    fields = [model.field(n) for n in names]
    start = min(f.address for f in fields)
    end = max(f.address + f.size for f in fields)
    return start, end - start


def baud_code(baud: int) -> int:
    """Bits per second -> the Baud Rate register's code (1_000_000 -> 3).

    Raises PlatformError listing the supported rates.
    """
    for code, bps in BAUD_CODES.items():
        if bps == baud:
            return code
    raise PlatformError(
        f"baud rate {baud} is not one a Dynamixel supports; choose one of: "
        f"{', '.join(str(b) for b in BAUD_CODES.values())}"
    )
