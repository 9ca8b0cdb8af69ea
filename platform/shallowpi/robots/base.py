"""`Robot`: the one contract every robot implements, hardware or twin.

    with robot:                        # connect(); disconnect() (torque off) however it ends
        obs = robot.observe()          # Observation: tick time, state [J], frames with capture times
        sent = robot.act(goal)         # clamped to limits and the velocity bound; what was sent
        robot.hold()                   # every goal := present position, confirmed
        robot.hold(sent)               # ... or := the last command, kept (a grip keeps its squeeze)
        robot.torque_off()             # every bus tried; raises naming those that failed

The recorder calls `hold()` after a fault and `torque_off()` on an e-stop. The executor
calls `hold()` at an episode's start and before turning torque off after a servo or camera
fault, `hold(last command)` after a policy-side fault and at an episode's end, and
`torque_off()` on an e-stop. Both confirm what they did
or raise `SafeStateError` saying what failed, so no caller reports a robot as safe when
it is not. After `torque_off()`, `act()` refuses until the robot is connected again: a
stale command must never re-arm a robot the operator stopped.

Implemented by `DynamixelRobot` (robots/dynamixel_robot.py; arm, bimanual, humanoid) and
the twins (`DirectSimRobot`, robots/sim/direct.py; `StackSimRobot`, robots/sim/stack.py).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shallowpi.errors import PlatformError
from shallowpi.robots.observation import Observation


def speed_bounded(goal: np.ndarray, last: np.ndarray, tick_step: np.ndarray, lower: np.ndarray,
                  upper: np.ndarray) -> np.ndarray:
    """`goal` [J] moved at most `tick_step` [J] (one control period at top speed) from `last`
    [J], then clipped to the limits [J]: the command bound of the twin's `act()`, which the
    DART recorder applies to its labels too (record/dart.py). `DynamixelRobot` clips first,
    to the limits widened to take in `last`, so that a joint outside them walks back in at
    this bound when sent a goal inside them; from a goal inside them both orders give the
    same command."""
    return np.clip(np.clip(goal, last - tick_step, last + tick_step), lower, upper)


def ticks_in(seconds: float, fps: float) -> int:
    """The control ticks that fit in `seconds` at `fps` Hz: 4.1 s at 30 Hz is 123 (int() of
    the product, 122.99999..., gave 122)."""
    return math.floor(seconds * fps + 1e-6)


class RobotError(PlatformError):
    """A robot used wrongly (not connected, torque off, bad action)."""

    exit_code = 4


class SafeStateError(RobotError):
    """`hold()` or `torque_off()` could not be confirmed; the message says where and what to do.
    `holding`: some buses still hold (`hold_or_release` released only the others)."""

    def __init__(self, message: str, holding: bool = False) -> None:
        super().__init__(message)
        self.holding = holding


@dataclass(frozen=True)
class LinkCounts:
    """The robot's exchanges with its servos, and the tries among them that got no valid
    reply (lost, late, corrupt) and were retried: each costs the loop a reply timeout, and
    tries failing while nothing faults are a loose connector or a failing servo found before
    it stops the robot. `failed_by_joint`: the failed tries each joint's servo was the first
    silent one of. Counted from the robot's making; `since()` gives an episode's share."""

    exchanges: int = 0
    failed_tries: int = 0
    failed_by_joint: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def of_buses(cls, buses: Mapping[str, Any], names: Mapping[tuple[str, int], str]) -> LinkCounts:
        """The sum of `buses`' tallies (`MotorBus.tally`), each servo's failed tries under
        its name in `names` ({(bus, servo ID): joint}; "BUS ID N" where it has none)."""
        by_joint: dict[str, int] = {}
        for bus_name, bus in buses.items():
            for servo_id, n in bus.tally.failed_by_id.items():
                joint = names.get((bus_name, servo_id), f"{bus_name} ID {servo_id}")
                by_joint[joint] = by_joint.get(joint, 0) + n
        return cls(sum(b.tally.exchanges for b in buses.values()), sum(b.tally.failed_tries for b in buses.values()),
                   by_joint)

    def plus(self, other: LinkCounts) -> LinkCounts:
        """Both counts together (a robot's and its leader arms')."""
        by_joint = dict(self.failed_by_joint)
        for joint, n in other.failed_by_joint.items():
            by_joint[joint] = by_joint.get(joint, 0) + n
        return LinkCounts(self.exchanges + other.exchanges, self.failed_tries + other.failed_tries, by_joint)

    def since(self, earlier: LinkCounts) -> LinkCounts:
        """What was counted after `earlier` (a count of the same robot, taken before)."""
        return LinkCounts(self.exchanges - earlier.exchanges, self.failed_tries - earlier.failed_tries,
                          {joint: n - earlier.failed_by_joint.get(joint, 0)
                           for joint, n in self.failed_by_joint.items() if n > earlier.failed_by_joint.get(joint, 0)})

    def warning(self, what: str) -> str | None:
        """One line for the operator when tries fail often enough to be a fault in the
        making (3 or more, over 1 % of the exchanges: a sound chain fails none), naming the
        joint most often silent; None otherwise. `what`: the span counted ("this take")."""
        if self.failed_tries < 3 or self.failed_tries <= 0.01 * self.exchanges:
            return None
        joint, n = self.worst()
        where = f", {n} of them {joint}'s servo" if joint else ""
        return (f"servo link: {self.failed_tries} tries over {self.exchanges} exchanges {what} got no valid reply "
                f"and were retried{where}: check that servo's cable and connectors before it stops the robot")

    def worst(self) -> tuple[str, int]:
        """(joint, failed tries) of the joint named most often; ("", 0) when none is."""
        if not self.failed_by_joint:
            return "", 0
        joint = max(self.failed_by_joint, key=lambda j: self.failed_by_joint[j])
        return joint, self.failed_by_joint[joint]


@dataclass(frozen=True)
class SafeState:
    """What `Robot.hold_or_release` did after a fault: `message`, one line for the operator
    ("robot is safe: ..."); `holding`, whether joints still hold with torque on (all of
    them, or the buses that could), for the operator to support and then release."""

    message: str
    holding: bool


class Robot(ABC):
    """Buses + cameras + limits behind connect/observe/act/hold/torque_off.

    `spec` describes the robot (joint names in order, limits, fps, cameras); the action
    and the state are vectors [J] in that joint order, in joint units (radians, metres,
    0..1 gripper opening).
    """

    spec: Any

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """float64[J] lower and upper limits `act()` clips to, in joint units: the spec's
        joints' here; a hardware robot narrows them to its calibration (DynamixelRobot)."""
        return (np.array([float(j.lower) for j in self.spec.joints]),
                np.array([float(j.upper) for j in self.spec.joints]))

    @property
    @abstractmethod
    def name(self) -> str:
        """The robot's config name (arm, bimanual, humanoid)."""

    @property
    @abstractmethod
    def is_connected(self) -> bool:
        """True between a successful `connect()` and `disconnect()`."""
        ...

    @abstractmethod
    def connect(self) -> None:
        """Open the devices and hold the present pose (torque on); raises PlatformError."""

    @abstractmethod
    def disconnect(self) -> None:
        """Torque off (best effort, logged), then close every device; never raises."""

    @abstractmethod
    def observe(self) -> Observation:
        """The tick's time, joint state float32[J] and each camera role's frame with its
        capture time (robots/observation.py); raises PlatformError on a bus, servo or
        camera fault."""

    @abstractmethod
    def act(self, action: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """Clamp to limits and the per-tick velocity bound, send; returns float32[J] sent.

        A mapping names some joints (the others keep their goal); an array gives all J.
        Raises RobotError when not connected or after `torque_off()`."""

    @abstractmethod
    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Hold still and confirm it; returns float32[J], the goals held. Time does not
        advance (a twin is not stepped).

        goal None: every goal := the present position, for a robot whose last command is
        in question (a fault, a connect, a scene reset by hand). A hardware joint found
        outside its limits is held where it is (a goal inside them brings it back at the
        velocity bound, never at the servo's full speed); a twin, whose actuators take goals within
        the limits only, clips.

        goal [J]: keep that goal, the last command act() returned, for a robot sound but
        with nothing new to send (the policy failed, the episode ended). Unlike the present
        position it keeps the gap a servo holds against a load: a gripper closed on an
        object squeezes by its gap to the goal, a loaded joint sits below its goal; re-aimed
        at the measured pose the grip would let go and the joint sag. Clamped as act()
        clamps (limits, velocity, a hardware robot's lead over the measured position),
        never moving further.

        Raises RobotError for a goal after torque_off() (a stale command never re-arms a
        stopped robot); SafeStateError if it cannot be confirmed."""

    def hold_or_release(self, fault: PlatformError | None = None) -> SafeState:
        """After a fault: hold every joint where it is (`hold()`), confirmed; what cannot be
        confirmed holding goes limp (torque off). Returns what was done (SafeState: one line
        for the operator, "robot is safe: holding position" or "...: torque off (could not
        hold position: why)", and whether anything still holds). This default holds or
        releases the robot whole; a robot of several buses releases only the buses that
        cannot hold (DynamixelRobot: a humanoid's sound arm keeps what it carries while the
        faulted one goes limp). `fault`: what happened; a robot of several buses releases the
        bus a servo fault names even where it confirms holding.

        Raises SafeStateError when what had to go limp did not confirm its torque off."""
        try:
            self.hold()
            return SafeState("robot is safe: holding position", holding=True)
        except PlatformError as hold_error:
            try:
                self.torque_off()
            except PlatformError as off_error:
                raise SafeStateError(f"could not hold position ({hold_error}) nor switch torque off "
                                     f"({off_error})") from None
            return SafeState(f"robot is safe: torque off (could not hold position: {hold_error})", holding=False)

    @abstractmethod
    def torque_off(self) -> None:
        """Disable torque on every bus, trying each even if one fails; raises
        SafeStateError naming the buses (and servos) that failed. The robot stays
        connected (observe() still works); act() refuses until connect()."""

    def check_faults(self) -> None:
        """Raise PlatformError for a hardware fault the robot reports (a servo's overload,
        overheating or voltage alarm). `observe()` checks once a second; a caller that holds
        the robot without observing (after a policy fault) calls this."""
        return None  # a twin has no alarms to read

    def link_counts(self) -> LinkCounts:
        """Exchanges with the servos and failed tries since the robot was made (LinkCounts);
        all zero for a robot without a bus (the direct twin)."""
        return LinkCounts()

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
