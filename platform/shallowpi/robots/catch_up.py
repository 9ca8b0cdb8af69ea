"""`CatchUp`: a robot closes slowly on a far goal before its ordinary control begins.

Two places need it. Teleoperation: connected, a follower holds where it rests and the
leader arms may be anywhere; sent the leader's pose at once, the robot's velocity bound
would take every joint there at its top speed (3 rad/s on the arm: half a turn in a
second, toward whoever stands beside it), each joint on its own clock, so the hand sweeps
a path nobody chose. GELLO's teleoperation script refuses to start with the arms more
than 0.8 rad apart, then moves the follower over 25 steps. Deployment: on the robot an
episode starts where the last one ended (the twin resets to its home pose), so before
each one the robot goes to the pose the demonstrations started from.

Here the robot always starts, at `speed` x its top speed, along the straight line in
joint space to the goal (every joint arrives together), and hands over once each joint is
within one full-speed tick of it (so the hand-over moves no joint further than `act()`
allows in one tick anyway). The recorder begins no episode and the executor runs no
policy before that: the actions recorded are the operator's, never this ramp.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

import numpy as np

from shallowpi.errors import PlatformError
from shallowpi.robots.base import Robot

log = logging.getLogger(__name__)


def speed_problem(speed: float | None, setting: str) -> str | None:
    """Why `speed` cannot be a catch-up speed named `setting` in messages (a fraction of each
    joint's top speed, in (0, 1]; None turns the catch-up off), or None when it can. One
    rule for CatchUp, `record.catch_up_speed` and `deploy.start_speed`, each raising its
    own error type."""
    if speed is None or 0.0 < speed <= 1.0:
        return None
    return f"{setting} must be in (0, 1] (a fraction of each joint's top speed) or null, got {speed}"


class CatchUp:
    """Rate-limits the goals [J] a robot is sent (a leader's pose, a start pose) until it
    has reached them.

    `full_step` float[J]: how far each joint goes in one tick of the loop at its top speed
    (joint units: rad, m, gripper opening); `lower`/`upper`
    float[J]: the limits `act()` clips to (a goal outside them is caught up to where the
    robot will hold it; a joint resting outside them is ramped back in from where it is,
    `act()` taking a goal between it and the limit); `speed` in (0, 1]: the fraction of the
    top speed; `fps`: the loop's rate, for the seconds told to the operator; `goal` and
    `then` name the goal and what follows in the operator's line. Raises PlatformError for a speed
    outside (0, 1] or vectors of different sizes.
    """

    def __init__(self, joint_names: Sequence[str], full_step: np.ndarray, lower: np.ndarray,
                 upper: np.ndarray, speed: float, fps: float, goal: str = "the leader",
                 then: str = "recording starts") -> None:
        if problem := speed_problem(speed, "a catch-up speed"):
            raise PlatformError(problem)
        self.names = list(joint_names)
        self._index = {name: i for i, name in enumerate(self.names)}
        self.fps = float(fps)
        self.full_step = np.asarray(full_step, np.float64)
        self.lower, self.upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        if not len(self.names) == self.full_step.size == self.lower.size == self.upper.size:
            raise PlatformError(f"catch-up: {len(self.names)} joints but {self.full_step.size} speeds and "
                                f"{self.lower.size}/{self.upper.size} limits")
        self.speed = float(speed)
        self.goal, self.then = goal, then
        self.done = False
        self._goal: np.ndarray | None = None  # the ramp's last goal [J]
        self._gap = np.zeros_like(self.full_step)  # wanted - the ramp's goal [J], last tick

    @classmethod
    def for_robot(cls, robot: Robot, speed: float, fps: float | None = None, **words: str) -> CatchUp:
        """From a `Robot`: its spec's joints' `max_velocity` over the loop's rate `fps`
        (default the robot's; a loop slower than the robot moves further a tick, so the
        fraction of top speed holds in time), its `joint_limits()`; `words`: `goal` and
        `then` (see the class)."""
        spec = robot.spec
        rate = float(fps or spec.fps)
        lower, upper = robot.joint_limits()
        full_step = np.array([j.max_velocity for j in spec.joints], np.float64) / rate
        names = [j.name for j in spec.joints]
        return cls(names, full_step, lower, upper, speed, rate, **words)

    def __call__(self, wanted: Mapping[str, float] | np.ndarray, present: np.ndarray) -> Mapping[str, float] | np.ndarray:
        """This tick's goal: `wanted` itself once caught up, else one slow step from the
        last ramp goal toward it (from `present` float[J], the measured state, on the first
        tick). Joints `wanted` does not name keep the ramp's goal (brought inside the limits)."""
        if self.done:
            return wanted
        first = self._goal is None
        if first:
            # Where the robot is, limits or not: started from the limit, the ramp's first goal
            # took a joint resting outside its limits back to the limit at its top speed (the
            # velocity bound's step a tick, not the ramp's), and the operator was told the
            # distance from the limit.
            self._goal = np.asarray(present, np.float64).reshape(-1).copy()
        target = np.clip(self._vector(wanted), self.lower, self.upper)
        self._gap = target - self._goal
        if np.all(np.abs(self._gap) <= self.full_step):
            self.done = True
            if not first:
                log.info("the robot has reached %s", self.goal)
            return wanted
        if first:
            worst = self._worst()
            log.warning("%s (%s is %.2f away)", self.describe(), self.names[worst], abs(self._gap[worst]))
        # The slowest joint (in ticks of its slow step) sets the pace; the others move
        # proportionally, so the whole arm travels a straight line in joint space.
        ticks = float(np.max(np.abs(self._gap) / (self.speed * self.full_step)))
        self._goal = self._goal + self._gap / max(ticks, 1.0)
        return self._goal.copy()

    def seconds_left(self) -> float:
        """Seconds at the slow speed still to go, as of the last call (0 when caught up)."""
        if self.done:
            return 0.0
        return float(np.max(np.abs(self._gap) / (self.speed * self.full_step))) / self.fps

    def describe(self) -> str:
        """One line for the operator: the joint furthest away (in time) and the whole
        seconds left, so that it changes once a second (line printers show every change)."""
        if self._goal is None:
            return f"reading {self.goal} before the robot moves"
        return (f"the robot is closing on {self.goal} at {self.speed:.0%} of its top speed: {self.names[self._worst()]} "
                f"furthest, about {math.ceil(self.seconds_left())} s to go; {self.then} once it is there")

    def _worst(self) -> int:
        """The joint furthest from its goal in time (gap over its step)."""
        return int(np.argmax(np.abs(self._gap) / self.full_step))

    def _vector(self, wanted: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """`wanted` as float64[J]; joints a mapping leaves out keep the ramp's goal."""
        assert self._goal is not None
        if not isinstance(wanted, Mapping):
            target = np.asarray(wanted, np.float64).reshape(-1)
            if target.size != len(self.names):
                raise PlatformError(f"the teleoperator sent {target.size} goals; the robot has {len(self.names)} joints")
            return target
        target = self._goal.copy()
        for name, value in wanted.items():
            if name not in self._index:
                raise PlatformError(f"the teleoperator names joint '{name}', which the robot does not have; "
                                    f"joints: {', '.join(self.names)}")
            target[self._index[name]] = float(value)
        return target
