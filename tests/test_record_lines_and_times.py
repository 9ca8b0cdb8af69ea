"""The recorder's session as a log and a store read it: every episode said saved on the
--no-tui lines however many commits finish together, and each row's capture times on the
episode clock that `deploy --record` keeps (0 at the take's first observation)."""

from __future__ import annotations

import io
import re
import time

import numpy as np
import pytest

from recorder_fixtures import JOINTS, FakeArm, SineTeleop, make_session, open_store
from shallowpi.commands.console import LinePrinter
from shallowpi.commands.record_cmd import _ProgressLines
from shallowpi.data import EpisodeStore, episode_writer
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.record.clock import TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.observation import Frame, Observation

pytestmark = pytest.mark.timeout(120)


def _said_saved(lines: list[str]) -> list[int]:
    """The episode numbers the lines say are saved ("episode 3 saved", "episodes 0-2, 4 saved")."""
    said = []
    for line in lines:
        for match in re.finditer(r"episodes? ([\d, -]+) saved", line):
            for part in match.group(1).split(","):
                first, _, last = part.strip().partition("-")
                said += range(int(first), int(last or first) + 1)
    return said


def test_every_episode_is_said_saved_when_several_commits_finish_at_once(tmp_path, monkeypatch):
    """A slow disk: five 3-frame takes handed over, each commit 0.1 s. `_mark_saved`
    replaced the message once a take before a single publish, so the --no-tui lines said
    "episode 4 saved" alone, and a script waiting for episodes 0-3 waited on."""
    commit = episode_writer.EpisodeWriter.commit

    def slow_commit(self, *args, **kwargs):
        time.sleep(0.1)  # the fsyncs of a busy SD card
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", slow_commit)
    stream = io.StringIO()
    printer = LinePrinter(stream=stream)
    lines = _ProgressLines(5, printer)
    store = open_store(tmp_path / "slow.zarr")
    session, _, writer = make_session(store, episodes=5, episode_time_s=0.1, reset_time_s=0.0, publish=lines.publish)
    result = session.run()
    writer.close()  # as record's put_away: the takes still saving are committed, then said
    session.writer_closed()
    lines.publish(session.status)
    printer.close()
    assert not result.fault and len(store) == 5
    said = [line for line in stream.getvalue().splitlines() if " saved" in line]
    assert sorted(_said_saved(said)) == [0, 1, 2, 3, 4], said
    assert said[-1] == "[record] episodes 0-4 saved (15 frames)"
    assert session.status.episodes_saved == 5 and {e.state for e in session.status.episodes} == {"saved"}


class _CameraArm(FakeArm):
    """FakeArm with a front camera whose picture is 10 ms old at each observation; joint 0
    reads the tick's number, so a stored row names its observation."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[float, float]] = []  # (observation time_s, picture time_s), by tick

    def observe(self) -> Observation:
        now = time.monotonic()
        tick = len(self.seen)
        self.seen.append((now, now - 0.01))
        state = self.position.copy()
        state[0] = tick
        return Observation(now, state, {"front": Frame(np.full((8, 8, 3), tick % 256, np.uint8), now - 0.01, tick)})


def test_capture_times_are_on_the_episode_clock_after_a_begin_that_waited(tmp_path):
    """On the wall clock, the first take's begin waits 0.3 s for the writer (a full queue).
    The row times counted from the tick's start, before that wait, while every age was
    measured from the observation after it: row 0's capture times were 0.3 s early against
    the rows after it (and the state's, for every row, the tick's start, not its reading).
    Now 0 is the take's first observation, the state is stamped when it was read and each
    picture when it was captured; a row's time is never after its state's."""
    features = robot_features(JOINTS, {"front": (8, 8)})
    store = EpisodeStore.create(tmp_path / "wall.zarr", features, StoreSettings(durable=False))
    writer = BackgroundWriter(store)
    begin = writer.begin

    def full_queue_begin(*args, **kwargs):
        time.sleep(0.3)  # the wait for room, at the top of the tick, before it observes
        return begin(*args, **kwargs)

    writer.begin = full_queue_begin
    arm = _CameraArm()
    config = SessionConfig(task="wave", episodes=1, episode_time_s=0.2, reset_time_s=0.0, fps=30, robot="fake")
    session = RecordingSession(config, arm, SineTeleop(), writer, TickClock(30), JOINTS)
    result = session.run()
    writer.close()
    assert not result.fault and len(store) == 1
    episode = store.read_episode(0)
    ticks = episode["observation.state"][:, 0].astype(int)
    seen = np.array(arm.seen)[ticks]  # each row's observation and picture times, on the robot's clock
    zero = seen[0, 0]
    np.testing.assert_allclose(episode["observation.state.timestamp"], seen[:, 0] - zero, rtol=0, atol=1e-9)
    np.testing.assert_allclose(episode["observation.images.front.timestamp"], seen[:, 1] - zero, rtol=0, atol=1e-9)
    assert episode["timestamp"][0] == 0.0
    assert np.all(episode["timestamp"] <= episode["observation.state.timestamp"])
    assert episode["timestamp"][1] < 0.1  # one tick after the first row, not the writer's wait
