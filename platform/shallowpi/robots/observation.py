"""`Observation`: what every `Robot.observe()` returns, hardware or twin.

    obs = robot.observe()
    obs.time_s                    # the tick's time [s] (time.monotonic() on hardware, sim time in a twin)
    obs.state                     # float32 [J], the robot's joint order and units
    obs.frames["top"].image       # uint8 [H, W, 3]
    obs.frame_ages_s()            # {"top": 0.012}: how old each camera's frame is at this tick

    row = lerobot_row(obs, t)     # the data boundary: lerobot's flat keys, on the episode clock
    store_writer.add_frame({**row.values, "action": sent}, row.timestamp, row.capture_times)
    policy({**row.values, "task": text})

Every frame's capture time is on the observation's own clock, so a frame's age is a
subtraction whatever the robot: the recorder stores capture times, the executor's watchdog
refuses to act on a frame that is too old. The flat lerobot names (`observation.state`,
`observation.images.<role>`, `<key>.timestamp`) exist only past `lerobot_row`: the
recorder's writer, evaluation and the executor all cross the boundary through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from shallowpi.data.features import IMAGE_PREFIX, STATE_KEY


@dataclass(frozen=True)
class Frame:
    """One camera's frame as the robot saw it at a tick.

    image: uint8 [H, W, 3] RGB. time_s: when it was captured, on the observation's clock
    [s] (arrival on the host for a USB camera; the render's simulated time in a twin).
    sequence: the camera's frame counter (a gap is a dropped frame). depth: float32 [H, W]
    metres aligned to the image, or None for a colour-only camera.
    """

    image: np.ndarray
    time_s: float
    sequence: int
    depth: np.ndarray | None = None


@dataclass(frozen=True)
class Observation:
    """The robot at one tick: `time_s` [s], joint `state` float32 [J] in the robot's joint
    order, and one `Frame` per camera role (robot config order)."""

    time_s: float
    state: np.ndarray
    frames: Mapping[str, Frame] = field(default_factory=dict)

    def frame_ages_s(self) -> dict[str, float]:
        """{role: age of its frame at this tick [s]} (>= 0 unless the clocks disagree)."""
        return {role: self.time_s - frame.time_s for role, frame in self.frames.items()}

    def oldest_frame_s(self) -> float:
        """The largest frame age [s]; 0.0 without cameras (the watchdog's one number)."""
        return max(self.frame_ages_s().values(), default=0.0)

    @property
    def images(self) -> dict[str, np.ndarray]:
        """{role: uint8 [H, W, 3]}."""
        return {role: frame.image for role, frame in self.frames.items()}


def image_key(role: str) -> str:
    """The flat feature name of a camera role's images: `observation.images.<role>`."""
    return IMAGE_PREFIX + role


@dataclass(frozen=True)
class LerobotRow:
    """An observation under lerobot's flat names, on one clock.

    values: {"observation.state": float32 [J], "observation.images.<role>": uint8 [H, W, 3]}
    (a policy's input, a store row without its action). timestamp: the row's time [s].
    capture_times: {"observation.images.<role>": s}, stored as `<key>.timestamp`.
    """

    values: dict[str, np.ndarray]
    timestamp: float
    capture_times: dict[str, float]


def lerobot_row(obs: Observation, time_s: float | None = None) -> LerobotRow:
    """`obs` under lerobot's names: the one place the flat keys are made.

    `time_s` puts the row on another clock (the recorder's episode clock, starting at 0);
    each capture time moves with it, so every frame keeps its age. None keeps `obs.time_s`.
    """
    t = obs.time_s if time_s is None else float(time_s)
    values: dict[str, np.ndarray] = {STATE_KEY: obs.state}
    captured: dict[str, float] = {}
    for role, frame in obs.frames.items():
        key = image_key(role)
        values[key] = frame.image
        captured[key] = t - (obs.time_s - frame.time_s)
    return LerobotRow(values, t, captured)
