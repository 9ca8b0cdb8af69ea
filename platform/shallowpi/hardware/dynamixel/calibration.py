"""Ticks <-> joint units, from one motor's calibration.

Three kinds of joint, one formula each (direction is +1 or -1):

    revolute  rad   = direction * (ticks - homing_offset) * 2 pi / ticks_per_turn
    linear    m     = rad * metres_per_rad                 (a lift on a screw or belt)
    gripper   0..1  = direction * (ticks - homing_offset) / span_ticks   (0 closed, 1 open)

`homing_offset` is the tick at joint zero (for a gripper: fully closed), `span_ticks`
the travel from closed to open. The calibration lives in software (the robot's
calibration file), not in the servos' Homing Offset registers, so it reads the same on
X- and Y-series and a servo swap needs no EEPROM writes. Those registers, and Drive
Mode's reverse bit, stay at 0, the raw frame the file is in (robots/calibration.py:
calibrate clears them, connect refuses a servo another tool set).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.control_table import ModelSpec


@dataclass(frozen=True)
class MotorCalibration:
    """One motor's calibration, in raw ticks; see the module docstring for the formulas.

    Raises PlatformError if `direction` is not +1 or -1.
    """

    homing_offset: int  # ticks at joint zero (gripper: closed)
    direction: int  # +1 or -1
    range_min: int  # lowest tick seen while calibrating
    range_max: int  # highest tick seen while calibrating
    span_ticks: int = 0  # gripper only: closed -> open travel, > 0
    # The servo the sweep was read from (0: not recorded, files from before they were): a
    # file whose joint now names another ID or model is another servo's calibration.
    servo_id: int = 0
    model_number: int = 0

    def __post_init__(self) -> None:
        if self.direction not in (1, -1):
            raise PlatformError(f"calibration direction must be 1 or -1, got {self.direction}")

    def to_dict(self) -> dict[str, int]:
        """The fields as a dict of ints, as the calibration file stores them (the servo's
        ID and model only where recorded: an older file reads and writes as it was)."""
        return {k: v for k, v in asdict(self).items() if v or k not in ("servo_id", "model_number")}

    @classmethod
    def from_dict(cls, data: dict) -> MotorCalibration:
        """From a calibration file's entry, values coerced to int; TypeError on unknown keys."""
        return cls(**{k: int(v) for k, v in data.items()})


@dataclass(frozen=True)
class JointConverter:
    """One joint's conversion: model + calibration + kind."""

    model: ModelSpec
    calibration: MotorCalibration
    kind: str = "revolute"
    metres_per_rad: float = 1.0

    def to_joint(self, ticks: int) -> float:
        """Raw position ticks -> rad (revolute), m (linear) or 0..1 open fraction (gripper).

        Not clamped: a gripper past its calibrated travel reads below 0 or above 1.
        """
        c = self.calibration
        offset = c.direction * (ticks - c.homing_offset)
        if self.kind == "gripper":
            return offset / max(c.span_ticks, 1)
        rad = offset * self.model.radians_per_tick
        return rad * self.metres_per_rad if self.kind == "linear" else rad

    def to_ticks(self, value: float) -> int:
        """Inverse of `to_joint` (rad, m or 0..1 -> ticks), rounded to the nearest tick.

        Not clamped here: position limits are the robot's job.
        """
        c = self.calibration
        if self.kind == "gripper":
            offset = value * c.span_ticks
        else:
            rad = value / self.metres_per_rad if self.kind == "linear" else value
            offset = rad / self.model.radians_per_tick
        return round(c.homing_offset + c.direction * offset)

    def tick_range(self, lower: float, upper: float) -> tuple[int, int]:
        """The joint range `lower`..`upper` (joint units) in ticks, low first whatever the
        direction."""
        low, high = sorted((self.to_ticks(lower), self.to_ticks(upper)))
        return low, high

    def velocity_to_joint(self, raw_velocity: int) -> float:
        """Present Velocity (signed, in the model's `velocity_unit_rpm` ticks) -> rad/s,
        m/s (linear) or open-fraction/s (gripper), with the calibration's direction."""
        rad_s = raw_velocity * self.model.velocity_unit_rad_s
        if self.kind == "gripper":
            return self.calibration.direction * rad_s / (max(self.calibration.span_ticks, 1) * self.model.radians_per_tick)
        rad_s *= self.calibration.direction
        return rad_s * self.metres_per_rad if self.kind == "linear" else rad_s


def unwrap_reading(last: int | None, ticks: int, ticks_per_turn: int) -> int:
    """A position-mode reading (one turn, 0..ticks_per_turn-1) continued from the `last`
    unwrapped one the shorter way round; `ticks` itself when there is no last reading.

    Past the turn's end a servo reads from the other end: a joint moved by hand from 4095
    to 4100 reads 4. No hand turns a joint half a turn between two reads (tens of ms
    apart), so the step from the last reading is taken as the shorter way round."""
    if last is None:
        return ticks
    return last + (ticks - last + ticks_per_turn // 2) % ticks_per_turn - ticks_per_turn // 2


def nearest_turn(ticks: int, low: int, high: int, ticks_per_turn: int) -> int:
    """A single-turn reading (0..ticks_per_turn-1) in the turn that puts it nearest the
    tick range `low`..`high`: the reading itself, or one turn below or above.

    A joint resting just past one end of its range across the servo's turn end (tick
    4095 -> 0) reads from the far end: 4046 for a joint 50 ticks below tick 0. Taken as it
    reads, that is a joint a whole turn away, on the far side of its range."""
    def outside(t: int) -> int:
        return max(low - t, t - high, 0)

    return min((ticks, ticks - ticks_per_turn, ticks + ticks_per_turn), key=outside)


def default_calibration(model: ModelSpec, direction: int, kind: str) -> MotorCalibration:
    """Before anyone calibrated: zero at the centre tick; a gripper opens over a quarter turn."""
    quarter = model.ticks_per_turn // 4
    return MotorCalibration(
        homing_offset=model.center_tick,
        direction=direction,
        range_min=model.center_tick - model.ticks_per_turn // 2,
        range_max=model.center_tick + model.ticks_per_turn // 2 - 1,
        span_ticks=quarter if kind == "gripper" else 0,
    )
