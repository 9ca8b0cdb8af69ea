"""A real RecordingSession on a small fake robot (no devices, no MuJoCo), for tests of the
recorder's episode flow, keys and numbering: the real writer, store and clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.record.clock import SimulatedClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.base import LinkCounts, Robot
from shallowpi.robots.observation import Observation
from shallowpi.telemetry.status import Command, Request

JOINTS = ["shoulder", "elbow", "gripper"]


class FakeArm:
    """Follows its command exactly; counts torque-off calls."""

    name = "fake"

    def __init__(self) -> None:
        self.position = np.zeros(len(JOINTS), np.float32)
        self.torque_offs = 0
        self.holds = 0

    def observe(self) -> Observation:
        return Observation(time_s=time.monotonic(), state=self.position.copy())

    def act(self, action: Mapping[str, float] | np.ndarray) -> np.ndarray:
        if isinstance(action, Mapping):
            action = np.array([action[n] for n in JOINTS], np.float32)
        self.position = np.asarray(action, np.float32)
        return self.position.copy()

    def hold(self) -> None:
        self.holds += 1

    def torque_off(self) -> None:
        self.torque_offs += 1

    def hold_or_release(self, fault=None):
        return Robot.hold_or_release(self, fault)  # the contract's own: hold, else torque off

    def link_counts(self) -> LinkCounts:
        return LinkCounts()  # no servo bus


class SineTeleop:
    def __init__(self) -> None:
        self.t = 0

    def read(self) -> dict[str, float]:
        self.t += 1
        return {n: float(np.sin(0.05 * self.t + i)) for i, n in enumerate(JOINTS)}


def open_store(path: Path) -> EpisodeStore:
    if path.exists():
        return EpisodeStore.open(path, mode="a")
    return EpisodeStore.create(path, robot_features(JOINTS, {}), StoreSettings(durable=False))


def make_session(store: EpisodeStore, *, episodes: int = 3, episode_time_s: float = 1.0,
                 reset_time_s: float = 1.0, fps: float = 30.0, realtime: bool = False,
                 autostart: bool = True, commands: Callable[[], list[Command]] | None = None,
                 publish: Callable | None = None, hold_at_end: bool = False,
                 camera_serials: Mapping[str, str] | None = None,
                 ) -> tuple[RecordingSession, FakeArm, BackgroundWriter]:
    arm = FakeArm()
    writer = BackgroundWriter(store)
    config = SessionConfig(task="wave", episodes=episodes, episode_time_s=episode_time_s,
                           reset_time_s=reset_time_s, fps=fps, autostart=autostart, robot="fake",
                           dataset=store.path.stem, hold_at_end=hold_at_end,
                           camera_serials=camera_serials or {})
    session = RecordingSession(config, arm, SineTeleop(), writer, SimulatedClock(fps, realtime=realtime),
                               JOINTS, commands=commands, publish=publish)
    return session, arm, writer


class TickScript:
    """Commands by tick: `{tick: [Command or Request, ...]}`; records the status message after each."""

    def __init__(self, script: dict[int, list[Command | Request]]) -> None:
        self.script = script
        self.tick = 0

    def __call__(self) -> list[Command | Request]:
        commands = self.script.get(self.tick, [])
        self.tick += 1
        return commands
