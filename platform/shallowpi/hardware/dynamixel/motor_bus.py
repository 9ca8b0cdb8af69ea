"""`MotorBus`: the seam robots stand on, in raw control-table units, with its errors.

A robot (robots/dynamixel_robot.py), calibration and the teleop leader see a servo bus only
through this protocol; `DynamixelBus` (bus.py) is its dynamixel-sdk implementation. The
contract: values are raw control-table integers (ticks, signed where the field is), fields
are snake_case e-manual names, `ids=None` means every configured servo, and a failure
after the implementation's retries raises `BusError` (`ServoFaultError` when a servo
reports a hardware error) whose message is one line naming the bus, the servo and what to
check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.control_table import ModelSpec, OperatingMode, model_by_number


class BusError(PlatformError):
    """A bus or a servo on it failed; the message names both and what to check."""

    exit_code = 4


class ServoFaultError(BusError):
    """A servo reports a hardware error (overload, overheating, ...); `bus` names its bus
    (empty where unknown)."""

    def __init__(self, message: str, bus: str = "") -> None:
        super().__init__(message)
        self.bus = bus


class BaudRateError(BusError):
    """The port cannot run at the baud rate asked (the other rates may still work)."""


@dataclass(frozen=True)
class ServoInfo:
    """What a PING (or broadcast ping) learns about one servo."""

    id: int
    model_number: int
    firmware: int | None = None

    @property
    def model(self) -> ModelSpec | None:
        """The control table for `model_number`, or None for a model this driver lacks."""
        return model_by_number(self.model_number)

    @property
    def model_name(self) -> str:
        """The model's name, or "unknown model N" when this driver lacks it."""
        return self.model.name if self.model else f"unknown model {self.model_number}"


@dataclass
class LinkTally:
    """A bus's exchanges since it was made, and the tries among them that failed.

    An exchange is one request and the replies it asks for (a sync read of every servo is
    one; a sync write asks for none and is not counted). A try fails when a reply is lost,
    late, corrupt or malformed; the bus retries it, so a flaky cable or a servo whose
    transceiver drops one reply in three fails tries for hours without an error, each
    costing the loop a reply timeout. Counted here, the robot's status shows it before the
    chain fails outright. `failed_by_id`: per servo, the failed tries it was the first
    silent or malformed reply of (a write's failures name none).
    """

    exchanges: int = 0
    failed_tries: int = 0
    failed_by_id: dict[int, int] = field(default_factory=dict)


@runtime_checkable
class MotorBus(Protocol):
    """The robot's view of a servo bus (raw units). `DynamixelBus` is the real one.

    Contract for every implementation: values are raw control-table integers (ticks, signed
    where the field is), fields are snake_case e-manual names, `ids=None` means every
    configured servo, and a failure after the implementation's retries raises `BusError`
    (`ServoFaultError` when a servo reports a hardware error) with a one-line message.
    """

    name: str
    tally: LinkTally  # exchanges and failed tries since the bus was made

    @property
    def is_connected(self) -> bool:
        """True while the port is open (False again after a port that vanished)."""
        ...

    def connect(self) -> None:
        """Open the port; a no-op when connected. BusError if it cannot be opened."""
        ...

    def disconnect(self) -> None:
        """Close the port without touching torque; never raises."""
        ...

    def scan(self) -> dict[int, ServoInfo]:
        """Every servo that answers a broadcast ping, ID -> info, configured or not."""
        ...

    def verify(self) -> dict[int, ServoInfo]:
        """Every configured ID answers and is the configured model, else BusError."""
        ...

    def read(
        self, fields: Sequence[str], ids: Iterable[int] | None = None
    ) -> dict[str, dict[int, int]]:
        """Nearby fields from many servos in one transaction: {field: {id: value}}."""
        ...

    def write(self, field: str, values: Mapping[int, int]) -> None:
        """One field on many servos in one unacknowledged transaction: {id: value}."""
        ...

    def read_one(self, servo_id: int, field: str) -> int:
        """One field of one servo from one READ; a refusal in its status packet raises."""
        ...

    def write_one(self, servo_id: int, field: str, value: int, *, check_alert: bool = True) -> None:
        """One field on one servo, acknowledged; `check_alert=False` ignores the alert bit."""
        ...

    def set_torque(self, enabled: bool, ids: Iterable[int] | None = None) -> None:
        """Torque Enable on or off; switching off must reach every servo even if one fails."""
        ...

    def set_operating_mode(self, mode: OperatingMode, ids: Iterable[int]) -> None:
        """Set Operating Mode (an EEPROM field: torque goes off where it changes)."""
        ...

    def hardware_errors(self, ids: Iterable[int] | None = None) -> dict[int, list[str]]:
        """Decoded hardware errors of the servos that report one: {id: ["overload", ...]}."""
        ...

    def raise_on_hardware_errors(self, ids: Iterable[int] | None = None) -> None:
        """ServoFaultError naming the first faulted servo (and how many more), if any."""
        ...
