"""Jogging the joints a teleoperator leaves out, from the recorder's keys.

A humanoid's leader arms drive its arms; nothing drives its head or its lift, which
otherwise hold the pose they had at connect all session. `JoggedTeleop` adds those joints
to a teleoperator's goals, stepped by the dashboard's ], + and - keys (telemetry/keys.py)
through a `KeyboardJog`. The robot's `act()` bounds each step by the joint's velocity
limit, as it bounds a leader's move.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from shallowpi.robots.spec import JointSpec
from shallowpi.teleop.keyboard import KeyboardJog

# A jog command's value (telemetry.status.Command) -> the KeyboardJog key it presses.
JOG_KEYS = {"jog_next": "]", "jog_up": "w", "jog_down": "s"}
STEPS_PER_RANGE = 50


class JoggedTeleop:
    """A `Teleoperator`: `inner`'s goals, and the jogged goals of `joints` (the ones it
    leaves out) once a jog key was pressed; before that they are left out too, and the
    robot holds them. Connects, disconnects and counts servo links through `inner`."""

    def __init__(self, inner: Any, joints: Sequence[JointSpec]) -> None:
        if not joints:
            raise ValueError("JoggedTeleop needs at least one joint to jog")
        self.inner = inner
        self.joints = list(joints)
        self._jog: KeyboardJog | None = None

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
        return {**goals, **self._jog.read()} if self._jog is not None else dict(goals)

    def jog(self, command: str, holding: Mapping[str, float]) -> str:
        """Apply one jog command (`JOG_KEYS`: "jog_next", "jog_up", "jog_down"); `holding`:
        the goals the robot holds now by joint name, where the first command starts every
        jogged joint; the first ] picks the first joint. Returns the line for the operator:
        the joint picked and its goal. KeyError for another command, or a `holding` without
        a jogged joint."""
        key = JOG_KEYS[command]
        if self._jog is None:
            self._jog = KeyboardJog(self.joints, holding, keys=lambda: [], steps_per_range=STEPS_PER_RANGE)
            if key == "]":
                key = ""  # the first joint is picked already: say which
        self._jog.press(key)
        joint = self.joints[self._jog.selected]
        unit = {"linear": " m", "revolute": " rad"}.get(joint.kind, "")
        return (f"jog {joint.name}: goal {self._jog.target[joint.name]:+.3f}{unit} (+ / - step "
                f"{self._jog.step(joint.name):.3f}{unit}; ] picks the next of {', '.join(j.name for j in self.joints)})")
