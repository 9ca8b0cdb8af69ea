"""Euler sampling with inpainting: the gradient-free form of real-time chunking.

Real-time chunking (Black et al. 2025) makes the next chunk agree with the actions that
will run while it is computed. Its guidance needs the velocity's gradient; a backend
without gradients (an ONNX or TensorRT graph) instead overwrites, before every Euler step,
the rows that must agree with where the flow would be had it started from them:

    x_t[i] <- w_i * (t * noise[i] + (1 - t) * target[i]) + (1 - w_i) * x_t[i]

and the result's rows blend with the target by the same weight. w_i = 1 on the frozen
prefix; after it, the executor's default (`deploy.rtc_mask: soft`) gives RTC's decaying
weights over the rest of the overlap, so the new chunk fades from the current one into its
own plan, and `hard` gives 0 (the new chunk free from its first unfrozen action, where a
change of plan shows as a jump at the seam). With w = 0 everywhere this is exactly
`policy.model.euler_integrate`. `target` is in the model's normalised units: convert from
robot units first, never zero-pad (zero decodes to the dataset mean, or under min-max
scaling the middle of its range: lerobot 0.6.1's seam fault).

Generic over numpy arrays and torch tensors (only arithmetic): the ONNX chunk graph traces
it, the split-graph backend runs it in numpy, and `Policy.sample_actions(inpaint=...)` in
torch (`platform eval --sim --strategy rtc`). Here in policy/ and torch-free: the robot side
imports it without torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

X = TypeVar("X")


def euler_times(steps: int) -> list[float]:
    """The times t at which `steps` Euler steps from t=1 to t=0 read the velocity:
    1, 1 - 1/steps, ..., 1/steps. One grid for every integrator here (this one,
    `policy.model.euler_integrate`, and the fast sampler's time table)."""
    dt = -1.0 / steps
    return [1.0 + step * dt for step in range(steps)]


def inpainted_euler(velocity: Callable[[X, float], X], noise: X, target: X, weight: X, steps: int) -> X:
    """Integrate dx/dt = velocity(x, t) from noise (t=1) to t=0 in `steps` Euler steps.

    noise, target [B, C, A]; weight [B, C, 1] in [0, 1] (broadcast over A). -> [B, C, A].
    """
    dt = -1.0 / steps
    x = noise
    for t in euler_times(steps):
        x = weight * (t * noise + (1.0 - t) * target) + (1.0 - weight) * x
        x = x + dt * velocity(x, t)
    return weight * target + (1.0 - weight) * x
