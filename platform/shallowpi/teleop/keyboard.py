"""Keyboard jogging: nudge one joint at a time, for simple cases and for checking a robot.

    [ / ]   select the previous / next joint
    w / s   move the selected joint up / down by one step
    0       return the selected joint to where it started

The target starts at the robot's pose (`start`); keys come from `keys()`, any callable
returning the keys pressed since the last call (`TerminalKeys` reads a terminal).
"""

from __future__ import annotations

import logging
import os
import select
import sys
from collections.abc import Callable, Mapping, Sequence

from shallowpi.robots.spec import JointSpec

log = logging.getLogger(__name__)


class KeyboardJog:
    """A `Teleoperator` that jogs one joint at a time from key presses (module docstring).

    The target starts at `start` (joint name -> joint units) and each step is 1 /
    `steps_per_range` of the selected joint's range, clipped to its limits. KeyError if
    `start` lacks a joint.
    """

    def __init__(
        self,
        joints: Sequence[JointSpec],
        start: Mapping[str, float],
        keys: Callable[[], list[str]],
        steps_per_range: int = 50,
    ) -> None:
        self.joints = list(joints)
        self.keys = keys
        self.selected = 0
        self._start = {j.name: float(start[j.name]) for j in self.joints}
        self.target = dict(self._start)
        self._step = {j.name: (j.upper - j.lower) / steps_per_range for j in self.joints}

    def connect(self) -> None:
        """Nothing to open: the keys come from `keys`."""
        pass

    def disconnect(self) -> None:
        """Nothing to close (`TerminalKeys.close` restores the terminal)."""
        pass

    def read(self) -> dict[str, float]:
        """Apply the keys pressed since the last call; the target of every joint, by name."""
        for key in self.keys():
            self.press(key)
        return dict(self.target)

    def press(self, key: str) -> None:
        """Apply one key (`[`, `]`, `w`, `s`, `0`); any other key is ignored."""
        joint = self.joints[self.selected]
        if key == "]":
            self.selected = (self.selected + 1) % len(self.joints)
        elif key == "[":
            self.selected = (self.selected - 1) % len(self.joints)
        elif key in ("w", "s"):
            sign = 1 if key == "w" else -1
            value = self.target[joint.name] + sign * self._step[joint.name]
            self.target[joint.name] = min(joint.upper, max(joint.lower, value))
        elif key == "0":
            self.target[joint.name] = self._start[joint.name]
        else:
            return
        log.info("jog: %s = %.3f", self.joints[self.selected].name, self.target[self.joints[self.selected].name])


class TerminalKeys:
    """Keys typed in this terminal, without Enter (cbreak mode, restored on close)."""

    def __init__(self, stream=None) -> None:
        import termios
        import tty

        self._fd = (stream or sys.stdin).fileno()
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)

    def __call__(self) -> list[str]:
        keys = []
        while select.select([self._fd], [], [], 0)[0]:
            keys.append(os.read(self._fd, 1).decode(errors="ignore"))
        return keys

    def close(self) -> None:
        """Put the terminal's saved mode back (leave cbreak mode)."""
        import termios

        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
