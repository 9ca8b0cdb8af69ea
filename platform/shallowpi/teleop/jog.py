"""Jogging the joints a teleoperator leaves out, from the recorder's keys.

A humanoid's leader arms drive its arms; nothing drives its head or its lift, which
otherwise hold the pose they had at connect all session. `JoggedTeleop` adds those joints
to a teleoperator's goals, stepped by the dashboard's ], + and - keys (telemetry/keys.py)
between takes, so that each take records them still.

Each step is taken from the goal the robot holds now, not from the last target: keys
pressed faster than the joint moves (a held key's auto-repeat) then leave the target at
most one step ahead of the joint, which stops within a step of where it was when the key
was released. Targets stay inside the limits the robot's `act()` clips to (the config's,
narrowed to the calibrated sweep), so the line the operator reads is where the joint goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shallowpi.joints import METRIC_UNITS
from shallowpi.robots.spec import JointSpec

STEPS_PER_RANGE = 50  # a step: 1/50 of the joint's range (0.124 rad of a +-3.1 rad head, 8 mm of a 0.4 m lift)


class JoggedTeleop:
    """A `Teleoperator`: `inner`'s goals by joint name, and those of `joints` (the ones it
    leaves out) once one was jogged; until then they are left out too and the robot holds
    them. `limits`: joint name -> (lower, upper) the robot clips to, in joint units.
    Connects, disconnects and counts servo links through `inner`. ValueError without a
    joint to jog, or a joint without limits."""

    def __init__(self, inner: Any, joints: Sequence[JointSpec], limits: Mapping[str, tuple[float, float]]) -> None:
        if not joints:
            raise ValueError("JoggedTeleop needs at least one joint to jog")
        self.inner = inner
        self.joints = list(joints)
        self.limits = {j.name: (float(limits[j.name][0]), float(limits[j.name][1])) for j in self.joints}
        self.steps = {j.name: (j.upper - j.lower) / STEPS_PER_RANGE for j in self.joints}
        self.picked: int | None = None  # index into `joints`; None before the first key
        self.targets: dict[str, float] = {}  # the jogged joints' goals, from the first step on

    def connect(self) -> None:
        """Connect `inner`."""
        self.inner.connect()

    def disconnect(self) -> None:
        """Disconnect `inner`."""
        self.inner.disconnect()

    @property
    def link_counts(self) -> Any:
        """`inner`'s `link_counts` (leader arms' servo links); AttributeError where it has
        none, as for a teleoperator without buses."""
        return self.inner.link_counts

    def read(self) -> dict[str, float]:
        """`inner`'s goals by joint name, and the jogged joints' goals (joint units)."""
        goals = self.inner.read()
        if isinstance(goals, np.ndarray):
            raise TypeError("JoggedTeleop needs a teleoperator whose goals are by joint name")
        return {**goals, **self.targets}

    def pick_next(self) -> str:
        """Pick the next joint (the first, at the first call); the operator's line."""
        self.picked = 0 if self.picked is None else (self.picked + 1) % len(self.joints)
        joint = self.joints[self.picked]
        return f"jog {joint.name} (+ / - step it by {self.steps[joint.name]:.3f}{_unit(joint)})"

    def step(self, sign: int, holding: Mapping[str, float]) -> str:
        """Move the picked joint's goal one step up (`sign` +1) or down (-1) from `holding`,
        the goal the robot holds now (joint units, by name), within the robot's limits; the
        operator's line: the joint and its new goal, and where a limit stopped it."""
        if self.picked is None:
            self.pick_next()
        joint = self.joints[self.picked]
        low, high = self.limits[joint.name]
        wanted = float(holding[joint.name]) + sign * self.steps[joint.name]
        self.targets[joint.name] = min(high, max(low, wanted))
        unit = _unit(joint)
        at_limit = f" (at its limit, {low if sign < 0 else high:+.3f}{unit})" if not low <= wanted <= high else ""
        return f"jog {joint.name}: goal {self.targets[joint.name]:+.3f}{unit}{at_limit}"


def _unit(joint: JointSpec) -> str:
    """The unit after a number of the joint's kind, with its space (" rad", " m"); empty for
    a gripper's opening."""
    return f" {METRIC_UNITS[joint.kind]}" if joint.kind in METRIC_UNITS else ""
