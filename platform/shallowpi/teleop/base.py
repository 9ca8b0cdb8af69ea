"""The `Teleoperator` seam: whatever produces the operator's command each tick."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Teleoperator(Protocol):
    """`read()` returns follower joint -> target in the follower's units (rad, m, 0..1).

    It may name only some joints (a leader arm covers its own); the robot holds the rest.
    It never clamps: limits and velocity bounds are the robot's `act()`'s job.
    """

    def connect(self) -> None: ...
    def disconnect(self) -> None: ...
    def read(self) -> dict[str, float]: ...
