"""Absolute or delta actions: what the model learns to predict for each joint of a chunk.

`policy.actions: absolute` (the default, π0 as lerobot trains it): every action is the
joint target itself. `policy.actions: delta`: every joint except the grippers is predicted
as an offset from the joint state the chunk was computed from, so the same reach is the
same prediction wherever the arm starts; grippers stay absolute (open and closed are
places, not motions). This is openpi's recipe for bimanual ALOHA data
(`LeRobotAlohaDataConfig.use_delta_joint_actions`, on by default there), after Physical
Intelligence's π0 paper.

The robot never sees an offset: `targets_from` adds the state back before an action
leaves the policy (torch `Policy.sample_actions`, the deploy backends in numpy), and the
normaliser's statistics are taken over the offsets (`offset_stats`). The functions are
plain arithmetic, generic over numpy arrays and torch tensors, and torch-free: the robot
side imports them.

Shapes: actions [..., C, A] and state [..., A] in robot units (the state's first A
dimensions are the joints the actions command, in the same order: `delta_dims` checks the
names); `mask` [A] is 1.0 on the offset dimensions and 0.0 on the absolute ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from shallowpi.errors import ConfigError
from shallowpi.joints import named_gripper

if TYPE_CHECKING:
    from shallowpi.data.windows import ChunkWindows

ACTION_SPACES = ("absolute", "delta")
X = TypeVar("X")


def delta_dims(state_names: Sequence[str], action_names: Sequence[str], action_kinds: Sequence[str] = ()) -> list[int]:
    """The action dimensions predicted as offsets: every joint but the grippers. A gripper
    is what the robot spec calls one (`action_kinds`, which the recorder stores with the
    joint names) or, for a store that does not say (older, or imported from lerobot), a
    joint whose name says "gripper". ConfigError (one line) when the store names no joints,
    when the actions do not command the state's joints in the state's order (no offset
    could be taken), or when every joint is a gripper."""
    if not action_names:
        raise ConfigError("policy.actions=delta needs the store's joint names (its action feature has none); "
                          "train with policy.actions=absolute")
    if list(action_names) != list(state_names)[: len(action_names)]:
        raise ConfigError(
            f"policy.actions=delta needs actions that command the state's joints in its order; the store's "
            f"actions are {list(action_names)} and its state {list(state_names)}; train with policy.actions=absolute"
        )
    if action_kinds:
        dims = [i for i, kind in enumerate(action_kinds) if kind != "gripper"]
    else:
        dims = [i for i, name in enumerate(action_names) if not named_gripper(name)]
    if not dims:
        raise ConfigError(f"policy.actions=delta: every action of {list(action_names)} is a gripper, "
                          "which stays absolute; train with policy.actions=absolute")
    return dims


def mask_of(dims: Sequence[int], action_dim: int) -> np.ndarray:
    """float32 [action_dim]: 1.0 on `dims` (offsets), 0.0 elsewhere (absolute)."""
    mask = np.zeros(action_dim, np.float32)
    mask[list(dims)] = 1.0
    return mask


def offsets_from(actions: X, state: X, mask: X) -> X:
    """Absolute actions [..., C, A] -> what the model predicts: the offset from `state`
    [..., A] on the masked dimensions, unchanged elsewhere."""
    return actions - state[..., None, :] * mask  # type: ignore[operator, index]


def targets_from(predicted: X, state: X, mask: X) -> X:
    """The inverse of `offsets_from`: what the model predicted [..., C, A] -> absolute
    joint targets for the robot."""
    return predicted + state[..., None, :] * mask  # type: ignore[operator, index]


def offset_stats(state: np.ndarray, action: np.ndarray, windows: ChunkWindows, mask: np.ndarray,
                 index: np.ndarray | None = None, block: int = 4096) -> dict[str, np.ndarray]:
    """Mean, std, min, max [A] of what the model is trained to predict: every unpadded
    entry of the chunk of every window in `index` (default: all of `windows`), offset from
    the window's state on the masked dimensions; and `row_mean` [A], the mean absolute
    action over the same windows' rows (the offline evaluation's baseline stays absolute).

    state [N_rows, S] and action [N_rows, A] are a store's columns. Blocks of `block`
    windows keep the memory at a few block x C x A arrays.
    """
    A = action.shape[1]
    index = np.arange(len(windows)) if index is None else np.asarray(index)
    count, total, squares = 0, np.zeros(A), np.zeros(A)
    low, high = np.full(A, np.inf), np.full(A, -np.inf)
    row_total = np.zeros(A)  # the windows' own (absolute) actions, for row_mean
    for start in range(0, len(index), block):
        rows, chunk, is_pad = windows.chunk_rows(index[start:start + block])
        row_total += action[rows].astype(np.float64).sum(0)
        values = offsets_from(action[chunk], state[rows, :A], mask)[~is_pad].astype(np.float64)  # [n, A]
        count += len(values)
        total += values.sum(0)
        squares += (values**2).sum(0)
        if len(values):
            low, high = np.minimum(low, values.min(0)), np.maximum(high, values.max(0))
    if count == 0:
        raise ConfigError("no action chunk to take offset statistics from")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    row_mean = row_total / len(index)
    return {key: value.astype(np.float32) for key, value in
            (("mean", mean), ("std", std), ("min", low), ("max", high), ("row_mean", row_mean))}
