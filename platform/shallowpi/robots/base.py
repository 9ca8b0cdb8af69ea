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
from typing import Any

import numpy as np

from shallowpi.errors import PlatformError
from shallowpi.robots.observation import Observation


def speed_bounded(goal: np.ndarray, last: np.ndarray, tick_step: np.ndarray, lower: np.ndarray,
                  upper: np.ndarray) -> np.ndarray:
    """`goal` [J] moved at most `tick_step` [J] (one control period at top speed) from `last`
    [J], then clipped to the limits [J]: the command bound of the twin's `act()`, which the
    DART recorder applies to its labels too (record/dart.py). `DynamixelRobot` clips to the
    limits first so that a goal left outside them walks back in; from a goal inside them
    both orders give the same command."""
    return np.clip(np.clip(goal, last - tick_step, last + tick_step), lower, upper)


def ticks_in(seconds: float, fps: float) -> int:
    """The control ticks that fit in `seconds` at `fps` Hz: 4.1 s at 30 Hz is 123 (int() of
    the product, 122.99999..., gave 122)."""
    return math.floor(seconds * fps + 1e-6)


class RobotError(PlatformError):
    """A robot used wrongly (not connected, torque off, bad action)."""

    exit_code = 4


class SafeStateError(RobotError):
    """`hold()` or `torque_off()` could not be confirmed; the message says where and what to do."""


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
        outside its limits is held where it is (act() brings it back at the velocity
        bound, never at the servo's full speed); a twin, whose actuators take goals within
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

    def __enter__(self) -> Robot:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()
