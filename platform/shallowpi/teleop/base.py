"""The `Teleoperator` seam: anything that says, each tick, where the follower should go.

Leader arms, a keyboard and the twin's scripted experts all implement it, so recording
runs the same loop whoever is in charge.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Teleoperator(Protocol):
    def read(self) -> dict[str, float] | np.ndarray:
        """The action for this tick: follower joint goals, by joint name or in the robot
        config's joint order."""
        ...
