"""What one recording run is asked to do and how it ended, and the two seams it drives.

`SessionConfig` (episodes, their length, the rate, what Ctrl-C does) and `SessionResult`
(what was kept, discarded, deleted or lost, and the fault) for `RecordingSession`
(session.py); `Teleoperator` and `Scene` are the protocols of who leads the follower and
of what a simulated or scripted setup adds.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shallowpi.data.store import EpisodeInfo
from shallowpi.errors import ConfigError, PlatformError


class Teleoperator(Protocol):
    """Whoever says where the follower goes each tick (teleop/base.py has the full seam)."""

    def read(self) -> Mapping[str, float] | np.ndarray:
        """This tick's follower goals in joint units (rad, m, gripper 0..1): by joint name, or
        float [J] in the robot config's joint order (a scripted expert's)."""
        ...


class Scene(Protocol):
    """What a simulated (or scripted) setup adds: a reset per episode, a success check."""

    def reset(self, episode: int) -> None:
        """Set up the scene of this run's `episode`-th kept episode (0 first; a re-recorded
        take gets the same number), before its first tick."""
        ...

    def success(self) -> bool | None:
        """Whether the task succeeded, judged when the episode ends; None if unknown."""
        ...

    def done(self) -> bool:
        """The scripted demonstration is over: end the episode early."""
        ...

    def metadata(self) -> dict[str, Any]:
        """Stored in the episode's `extra` (e.g. its seed)."""
        ...


class OnInterrupt(str, enum.Enum):
    """What Ctrl-C or SIGTERM does to the episode being recorded: save it or discard it."""

    SAVE = "save"
    DISCARD = "discard"


@dataclass
class SessionConfig:
    """What one recording run does: `episodes` takes of `episode_time_s` seconds at `fps`
    Hz, `reset_time_s` seconds apart. `robot`, `dataset`, `calibration_id` and
    `camera_serials` label the episodes and the status.

    Raises PlatformError unless episodes >= 1, episode time > 0, reset time >= 0 and
    fps > 0; ValueError for an unknown `on_interrupt`.
    """

    task: str
    episodes: int = 5
    episode_time_s: float = 20.0
    reset_time_s: float = 5.0
    fps: float = 30.0
    autostart: bool = True  # False: idle until a key (`platform record` always starts at once)
    # After the last episode, go on teleoperating (state DONE, nothing recorded) until q or
    # Ctrl-C: ending at once turns torque off and drops the follower where the take left it.
    hold_at_end: bool = False
    on_interrupt: OnInterrupt = OnInterrupt.SAVE  # what Ctrl-C / SIGTERM does to the episode in flight
    thumbnail_every: int = 6  # ticks between dashboard thumbnails
    robot: str = ""
    dataset: str = ""
    calibration_id: str = ""
    camera_serials: Mapping[str, str] = field(default_factory=dict)  # role -> serial, stored with each episode

    def __post_init__(self) -> None:
        times = (self.episode_time_s, self.reset_time_s, self.fps)
        # math.isfinite: nan passes every comparison below, inf every lower bound
        if (self.episodes < 1 or not all(map(math.isfinite, times)) or self.episode_time_s <= 0
                or self.reset_time_s < 0 or self.fps <= 0):
            raise PlatformError(
                "episodes >= 1, episode time > 0, reset time >= 0 and fps > 0 (finite) are needed; "
                f"got {self.episodes}, {self.episode_time_s}, {self.reset_time_s}, {self.fps}"
            )
        try:
            self.on_interrupt = OnInterrupt(self.on_interrupt)
        except ValueError:
            raise ConfigError(f"record.on_interrupt must be {' or '.join(o.value for o in OnInterrupt)}, "
                              f"got {self.on_interrupt!r}") from None

    @property
    def episode_rows(self) -> int:
        """Rows in a full-length episode: round(episode_time_s * fps), at least one."""
        return max(1, round(self.episode_time_s * self.fps))


@dataclass
class SessionResult:
    """How a run ended: the episodes the writer had committed when the loop ended (the
    latest 256; takes still queued then are not in it: read the store for the final
    count), how many it discarded, deleted or lost, the fault's one line (empty if none),
    and whether Ctrl-C or SIGTERM stopped it."""

    committed: list[EpisodeInfo] = field(default_factory=list)
    discarded: int = 0
    fault: str = ""
    interrupted: bool = False
    deleted: int = 0  # episodes this run saved, then deleted with d / r
    lost: int = 0  # takes handed to a writer that failed before committing them
