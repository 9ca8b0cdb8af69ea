"""What moves an emulated servo's shaft: the `JointPlant` seam.

An emulated servo (emulator.py) owns the control table and the protocol; the plant owns
the physics. The servo tells its plant the goal and whether torque is on, and asks it
for the shaft's state whenever a host reads Present Position/Velocity/Current:

    plant.set_torque(True)
    plant.set_goal(0.5)             # radians at the output shaft, 0 = the centre tick
    plant.read(time.monotonic())    # -> JointState(position, velocity, current)

Units are SI at the servo's output shaft: radians (0 = the model's centre tick, e.g.
2048 on X-series), rad/s, amperes. Calibration, drive direction and the robot's joint
units (metres, gripper opening) are the driver's business, not the plant's.

`read(now)` takes the emulator's monotonic clock so a kinematic plant can integrate;
a plant with its own clock (the MuJoCo twin, which steps physics on simulated time)
may ignore it and return its latest state. `move_to(position)` is the operator's hand:
it sets the shaft angle directly (a leader arm moved by a person, a joint back-driven
with torque off).

The default, `TrackingPlant`, moves toward the goal at a bounded speed when torque is
on and stays where it is (or where it was moved) when torque is off. A twin supplies
its own plant per servo through `PlantFactory` (see `emulator.ServoChain`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class JointState:
    """The shaft's state at one instant, SI at the output shaft (0 rad = the centre tick)."""

    position: float  # rad
    velocity: float  # rad/s
    current: float  # A


@runtime_checkable
class JointPlant(Protocol):
    """The physics behind one emulated servo (see the module docstring for the contract).

    Called from the emulator's bus thread and, for `move_to`, from the operator's thread:
    implementations must be safe to call from both.
    """

    def set_torque(self, enabled: bool) -> None:
        """Torque on (track goals: the emulator gives its Goal Position register's at once,
        as a real servo drives to it) or off (go limp)."""
        ...

    def set_goal(self, position: float) -> None:
        """New goal, rad at the output shaft; followed only while torque is on."""
        ...

    def read(self, now: float) -> JointState:
        """The state at `now` (time.monotonic() s); may advance a kinematic plant."""
        ...

    def move_to(self, position: float) -> None:
        """Put the shaft at `position` rad directly, as a hand moving the joint would."""
        ...


# (bus name, servo id, model name) -> the plant that moves that servo.
PlantFactory = Callable[[str, int, str], JointPlant]


class TrackingPlant:
    """Kinematic servo: heads for the goal at `max_speed` rad/s while torque is on.

    Position only integrates inside `read(now)` (no physics between reads); the reported
    current is `amps_per_rad_s * |velocity|` (A), a stand-in for load. Thread-safe.
    """

    def __init__(self, position: float = 0.0, max_speed: float = 6.0, amps_per_rad_s: float = 0.05) -> None:
        self.max_speed = max_speed
        self.amps_per_rad_s = amps_per_rad_s
        self._position = position
        self._goal = position
        self._velocity = 0.0
        self._torque = False
        self._last: float | None = None
        self._lock = threading.Lock()  # the operator's hand and the bus thread both move it

    def set_torque(self, enabled: bool) -> None:
        """Torque on or off; the goal is kept (the servo's `set_goal` follows with its
        register's value when torque comes on, as a real servo drives to it)."""
        with self._lock:
            self._torque = enabled

    def set_goal(self, position: float) -> None:
        """New goal, rad at the output shaft; followed only while torque is on."""
        with self._lock:
            self._goal = position

    def move_to(self, position: float) -> None:
        """Put the shaft at `position` rad; with torque off the goal follows, so it stays there."""
        with self._lock:
            self._position = position
            if not self._torque:
                self._goal = position

    def read(self, now: float) -> JointState:
        """The state at `now` (monotonic s): with torque on, the position first moves toward
        the goal by at most `max_speed` x the time since the last read. The first read only
        starts the clock."""
        with self._lock:
            dt = 0.0 if self._last is None else max(0.0, now - self._last)
            self._last = now
            self._velocity = 0.0
            if self._torque and dt > 0:
                error = self._goal - self._position
                step = max(-self.max_speed * dt, min(self.max_speed * dt, error))
                self._position += step
                self._velocity = step / dt
            return JointState(self._position, self._velocity, self.amps_per_rad_s * abs(self._velocity))
