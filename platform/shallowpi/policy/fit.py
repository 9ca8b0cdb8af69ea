"""Whether a trained policy can drive a robot: its state/action sizes against the robot's
joints, the cameras it reads against the robot's camera roles, the rate its demonstrations
were recorded at against the robot's control rate, the aspect ratio of the frames it was
trained on against the robot's cameras and, on a robot, the calibration they were
recorded under against the robot's.

`platform eval --sim` (a twin) and `platform deploy` (a twin, or the robot itself) ask the
same questions before anything moves; each answer is one line naming the mismatch,
and the caller adds the remedy that fits its command and raises its own error. Plain
values in, no torch: the robot side (Python 3.10, no training dependencies) imports this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any


def size_mismatch(state_dim: int, action_dim: int, joints: int, robot: str) -> str | None:
    """Why a policy with these state/action sizes cannot drive `robot` (a phrase such as
    "robot 'arm'" or "the arm twin") with `joints` joints, or None when it can. Both sizes
    must equal the joint count: one absolute target a joint, gripper included."""
    if (state_dim, action_dim) == (joints, joints):
        return None
    return f"the policy has state/action sizes {state_dim}/{action_dim} but {robot} has {joints} joints"


def missing_cameras(cameras: Sequence[str], roles: Sequence[str], robot: str) -> str | None:
    """Why a policy reading `cameras` (role names, in its input order) cannot run on `robot`
    whose cameras are `roles`, or None when each one it reads is there. Extra robot cameras
    are fine: the policy's input order picks the ones it reads."""
    missing = [c for c in cameras if c not in roles]
    if not missing:
        return None
    return f"the policy reads camera(s) {missing} that {robot} lacks (it has {list(roles)})"


def rate_mismatch(recorded_hz: Iterable[float], robot_hz: float, robot: str) -> str | None:
    """Why demonstrations recorded at `recorded_hz` (one entry an episode, or the store's
    rate) cannot be replayed on `robot` running at `robot_hz`, or None when every rate is
    the robot's. A chunk is one action a control period: recorded at 15 Hz and played at
    30 Hz it runs twice as fast as it was shown."""
    rates = sorted({float(r) for r in recorded_hz})
    if all(abs(r - robot_hz) <= 1e-6 for r in rates):
        return None
    shown = ", ".join(f"{r:g}" for r in rates)
    return f"the policy was trained on episodes recorded at {shown} Hz but {robot} runs at {robot_hz:g} Hz"


def trained_calibrations(metadata: Mapping[str, str]) -> list[str] | None:
    """The calibration ids of the episodes a checkpoint learned from: its metadata's
    "calibrations", written by training and distillation. None when it does not say
    (checkpoints from before, or episodes that carried no id)."""
    recorded = json.loads(metadata.get("calibrations") or "[]")
    return list(recorded) or None


def calibration_mismatch(trained: Sequence[str], robot_calibration: str, robot: str) -> str | None:
    """Why a policy that learned joint positions under the calibrations `trained` should not
    drive `robot` calibrated as `robot_calibration`, or None when that is one of them. A new
    calibration moves each joint's zero by however far the arm sat from the old zero pose:
    every position the policy reads and sends would be off by that much."""
    if robot_calibration in trained:
        return None
    return (f"the policy learned from episodes recorded under calibration {', '.join(trained)} but {robot} is "
            f"calibrated as {robot_calibration}")


def trained_rate(metadata: Mapping[str, str]) -> float | None:
    """The frame rate [Hz] a checkpoint's demonstrations were recorded at: its metadata's
    "fps", written by training and distillation, so the check needs no copy of the store.
    None for checkpoints from before it was written."""
    recorded = metadata.get("fps")
    return float(json.loads(recorded)) if recorded else None


def camera_shapes_of(item: Mapping[str, Any]) -> dict[str, list[int]]:
    """{role: [height, width]} of a dataset item's camera images (HWC arrays or tensors):
    what training records in a checkpoint's metadata as "camera_shapes"."""
    prefix = "observation.images."
    return {key[len(prefix):]: [int(value.shape[0]), int(value.shape[1])]
            for key, value in sorted(item.items()) if key.startswith(prefix)}


def trained_camera_shapes(metadata: Mapping[str, str]) -> dict[str, tuple[int, int]] | None:
    """{role: (height, width)} of the frames a checkpoint's policy was trained on (its
    metadata's "camera_shapes"); None for checkpoints from before it was written."""
    recorded = metadata.get("camera_shapes")
    return {role: (int(h), int(w)) for role, (h, w) in json.loads(recorded).items()} if recorded else None


def letterboxed(shape: tuple[int, int], side: int) -> tuple[int, int]:
    """(height, width) in pixels of a (height, width) frame scaled into the policy's `side` x
    `side` input with black bars (the resize-with-pad every path runs)."""
    scale = side / max(shape)
    return round(shape[0] * scale), round(shape[1] * scale)


def aspect_mismatch(trained: Mapping[str, tuple[int, int]], cameras: Mapping[str, tuple[int, int]],
                    robot: str, side: int) -> str | None:
    """Why `robot`'s cameras ({role: (height, width)}) show a policy trained on `trained`
    frames pictures it never saw, or None. The policy letterboxes each frame into its
    `side` x `side` input: another aspect ratio moves the black bars and rescales the scene.
    Frames whose letterboxed pictures differ by at most a pixel (640x360 and 848x480) pass,
    as does another size of the same aspect (the frame is resized anyway)."""
    for role, shape in cameras.items():
        if (want := trained.get(role)) is None:
            continue
        got, seen = letterboxed(shape, side), letterboxed(want, side)
        if max(abs(got[0] - seen[0]), abs(got[1] - seen[1])) > 1:
            return (f"camera '{role}' of {robot} gives {shape[1]}x{shape[0]} frames but the policy was trained on "
                    f"{want[1]}x{want[0]}: another aspect ratio, so other black bars and scale in its "
                    f"{side}x{side} input ({got[1]}x{got[0]} of picture instead of {seen[1]}x{seen[0]})")
    return None
