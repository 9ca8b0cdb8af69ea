"""The `Teleoperator` seam: anything that says, each tick, where the follower should go.

Leader arms, a keyboard and the twin's scripted experts (robots/sim/experts.py) all
implement it, so recording runs the same loop whoever is in charge.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Teleoperator(Protocol):
    """`read()` returns follower joint goals in the follower's units (rad, m, 0..1): by
    joint name, or a vector in the robot config's joint order.

    By name it may cover only some joints (a leader arm covers its own); the robot holds
    the rest. It never clamps: limits and velocity bounds are the robot's `act()`'s job.
    """

    def read(self) -> dict[str, float] | np.ndarray:
        """This tick's follower goals (see the class docstring)."""
        ...
