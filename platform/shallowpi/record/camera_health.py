"""`CameraHealth`: how fresh and how complete the cameras' pictures are, per take and live.

The robot hands the loop a late camera's last picture rather than stall it (only a camera
silent for its timeout is a fault), so a row can pair an old picture with the present
state and action, and a camera slower than the loop hands two rows the same picture. Both
are counted per take and stored with it (`extra.stale_frames`, `extra.repeated_pictures`);
drops are counted from the cameras' own sequence gaps (`dropped_frames`), from each
camera's count when the take began. The dashboard's per-camera rate, drops and age come
from here too: its drops are the take's in flight, and between takes the last take's, the
count stored with it (0 before the first), never the camera's since it started.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from shallowpi.robots.observation import Observation
from shallowpi.telemetry.status import CameraStatus

# A picture more than this many control periods old at its row is stale (a camera and the
# loop out of phase see up to one; a hiccup, more).
STALE_PERIODS = 3


def dropped_frames(camera: Any) -> int:
    """Frames `camera` lost so far (its `stats.dropped`; 0 for a camera that keeps none)."""
    return int(getattr(getattr(camera, "stats", None), "dropped", 0))


class CameraHealth:
    """Counts for the take in flight, and each camera's live status.

    `cameras`: role -> camera object (with a `stats` of `frames` and `dropped` counts), or
    empty for frames rendered in-process (the twin: one a tick, never late). `fps`: the
    control rate in Hz, which sets what counts as stale."""

    def __init__(self, cameras: Mapping[str, Any], fps: float) -> None:
        self.cameras = dict(cameras)
        self.fps = fps
        self.stale_rows = 0  # rows of the take whose picture is older than STALE_PERIODS
        self.repeated_rows = 0  # rows of the take holding a camera's picture of the row before
        self._last_sequences: dict[str, int] = {}
        self._dropped_at_start: dict[str, int] = {}  # role -> the camera's count when the take began
        # role -> the ended take's drops, what the dashboard shows between takes; None while
        # a take runs (counted live). Before the first take: none.
        self._dropped_in_take: dict[str, int] | None = {}
        self._rates: dict[str, tuple[int, float, float]] = {}  # role -> (frames, at, fps)

    def begin_take(self) -> None:
        """A take starts: its counts start from zero."""
        self.stale_rows = self.repeated_rows = 0
        self._last_sequences = {}
        self._dropped_at_start = {role: dropped_frames(camera) for role, camera in self.cameras.items()}
        self._dropped_in_take = None

    def end_take(self) -> None:
        """The take has ended: its drops stay what they are now, stored with it and shown
        until the next take begins (the reset's drops belong to no take)."""
        if self._dropped_in_take is None:
            self._dropped_in_take = self._take_drops()

    def dropped_this_take(self) -> int:
        """Frames the cameras dropped since `begin_take` (until `end_take`, if it has ended)."""
        return sum(self._take_drops().values())

    def count_row(self, observation: Observation) -> float | None:
        """Count one recorded row; returns its oldest picture's age in seconds when that
        picture is stale (the caller says so on the dashboard), else None."""
        sequences = {role: frame.sequence for role, frame in observation.frames.items()}
        if sequences and any(self._last_sequences.get(role) == seq for role, seq in sequences.items()):
            self.repeated_rows += 1
        self._last_sequences = sequences
        age = observation.oldest_frame_s()
        if age > STALE_PERIODS / self.fps:
            self.stale_rows += 1
            return age
        return None

    def update(self, statuses: dict[str, CameraStatus], observation: Observation, loop_p50_ms: float) -> None:
        """Fill `statuses` (role -> CameraStatus): measured rate over ~1 s, drops of the
        take (between takes the last one's), and the age of the picture this tick used.
        In-process frames report the loop's rate."""
        if not self.cameras:
            for role in observation.frames:
                statuses[role] = CameraStatus(fps=1e3 / loop_p50_ms if loop_p50_ms else 0.0)
            return
        now = time.monotonic()
        ages = observation.frame_ages_s()
        dropped = self._take_drops()
        for role, camera in self.cameras.items():
            frames = int(getattr(getattr(camera, "stats", None), "frames", 0))
            last_frames, last_time, fps = self._rates.get(role, (frames, now, 0.0))
            if now - last_time >= 1.0:
                fps, last_frames, last_time = (frames - last_frames) / (now - last_time), frames, now
            self._rates[role] = (last_frames, last_time, fps)
            statuses[role] = CameraStatus(fps=fps, dropped=dropped[role], age_ms=ages.get(role, 0.0) * 1e3)

    def pause(self, statuses: dict[str, CameraStatus]) -> None:
        """Paused: nothing is recorded, so no rate to show, and none carried into the next take."""
        self._rates.clear()
        for role, camera in statuses.items():
            statuses[role] = CameraStatus(fps=0.0, dropped=camera.dropped, age_ms=0.0)

    def _take_drops(self) -> dict[str, int]:
        """role -> frames the camera dropped in the take in flight, else in the last one."""
        if self._dropped_in_take is not None:
            return {role: self._dropped_in_take.get(role, 0) for role in self.cameras}
        return {role: dropped_frames(camera) - self._dropped_at_start.get(role, 0)
                for role, camera in self.cameras.items()}
