"""What a take's numbers cover: the loop period's p50/p99 stored with a recorded episode
and reported for a deployed one are over every tick of it, as its overruns are, not the
live window's last 600; the dashboards' camera drops are the take's, not the camera's
since it started; on the twin's simulated time the executor's "period" is said to be
the wall time a tick took; the episode limit is shown as given."""

from __future__ import annotations

import time

import numpy as np
import pytest

from executor_fakes import CountingRobot, StepBackend
from recorder_fixtures import JOINTS, FakeArm, SineTeleop, open_store
from shallowpi.commands.deploy_cmd import _summary
from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.deploy.executor import Executor
from shallowpi.deploy.settings import ExecutorConfig
from shallowpi.hardware.camera import CameraStats
from shallowpi.record.clock import SimulatedClock, TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.observation import Frame, Observation
from shallowpi.telemetry.executor_status import ExecutorStatus
from shallowpi.telemetry.status import LoopStatus, RecorderState
from shallowpi.tui import recorder_render
from shallowpi.tui.executor_render import status_line as executor_line

pytestmark = pytest.mark.timeout(120)

SLOW_S = 0.025  # a slow tick's extra wall time: far above a fast one's (the twin's GIL hand-over is 5 ms)


class _SlowStartArm(FakeArm):
    """FakeArm whose first `slow` observations take SLOW_S more (a take whose start was
    slow: the disk, a camera, the OS)."""

    def __init__(self, slow: int) -> None:
        super().__init__()
        self.slow, self.observed = slow, 0

    def observe(self) -> Observation:
        self.observed += 1
        if self.observed <= self.slow:
            time.sleep(SLOW_S)
        return super().observe()


def test_a_takes_stored_loop_percentiles_cover_every_tick_not_the_live_window(tmp_path):
    """A 200-tick take whose first 20 ticks were slow, with a live window of 50 periods
    (600 in a recorder): the stored p99 was the window's, the last 50 fast ticks', while
    the overruns beside it count the whole take (a 1000-tick take, its first 400 late:
    p99 11.9 ms stored against 25.4 ms over every tick). The window stays the dashboard's."""
    store = open_store(tmp_path / "slow.zarr")
    writer = BackgroundWriter(store)
    config = SessionConfig(task="wave", episodes=1, episode_time_s=200 / 30, reset_time_s=0.0, fps=30, robot="fake")
    clock = SimulatedClock(30, window=50)
    live: list[float] = []
    session = RecordingSession(config, _SlowStartArm(slow=20), SineTeleop(), writer, clock, JOINTS,
                               publish=lambda s: live.append(s.loop.period_p99_ms))
    result = session.run()
    writer.close()
    assert not result.fault and len(store) == 1 and store.episode(0).length == 200
    extra = store.episode(0).extra
    # 20 of the take's 199 periods took SLOW_S or more: its p99 is among them, its p50 not.
    assert extra["loop_p99_ms"] >= SLOW_S * 1e3, extra
    assert extra["loop_p50_ms"] < SLOW_S * 1e3, extra
    assert live[-1] < SLOW_S * 1e3  # the live window: the last 50 ticks', all fast


def test_an_executors_reported_loop_p99_covers_the_whole_episode():
    """700 ticks, the first 20 slow: the report's period p99 was the last 600 ticks'."""
    executor = Executor(CountingRobot(), StepBackend(8), ExecutorConfig(strategy="async", realtime=False,
                                                                        seam_ticks=2.0, warmup_runs=2))
    executor.warm_up("count")
    ticks = []

    def slow_start(obs, sent) -> None:
        ticks.append(1)
        if len(ticks) <= 20:
            time.sleep(SLOW_S)

    report = executor.run_episode("count", 700, on_tick=slow_start)
    assert report.ticks == 700
    assert report.period_p99_ms >= SLOW_S * 1e3, report.period_p99_ms
    assert executor.status.loop.period_p99_ms < SLOW_S * 1e3  # the dashboard's window: the last 600


def test_the_take_percentiles_are_numpys_over_every_period_from_its_start_to_its_end():
    """The clock keeps every period of a take (from reset_stats to end_take) beside the live
    window: the take's p50/p99 are np.percentile's over all of them, the window's over its
    last 50; the periods between takes are kept in neither take (a recorder may idle for
    hours between them)."""
    clock = TickClock(30, window=50)
    periods = np.random.default_rng(0).uniform(0.02, 0.05, 300)
    clock.reset_stats()
    for period in periods:
        clock._measured(float(period))
        clock.ticks += 1
    take = tuple(np.percentile(periods, [50, 99]) * 1e3)
    assert clock.take_percentiles_ms() == pytest.approx(take, rel=1e-12)
    assert clock.percentiles_ms() == pytest.approx(tuple(np.percentile(periods[-50:], [50, 99]) * 1e3), rel=1e-12)
    clock.end_take()
    for _ in range(100):  # the reset after it: the window's, no take's
        clock._measured(1.0)
        clock.ticks += 1
    assert clock.take_percentiles_ms() == pytest.approx(take, rel=1e-12) and len(clock._take) == 300
    assert clock.percentiles_ms() == (1e3, 1e3)
    clock.reset_stats()
    assert clock.take_percentiles_ms() == (0.0, 0.0) == clock.percentiles_ms()


class _DroppingCamera:
    """A camera as the recorder holds it: counters since it started (`CameraStats`), which
    the test moves as its reader thread would."""

    def __init__(self, dropped_before: int) -> None:
        self.stats = CameraStats(frames=100, dropped=dropped_before)


class _CameraArm(FakeArm):
    """FakeArm with a front camera; `drops[n]` frames are dropped before observation n."""

    def __init__(self, camera: _DroppingCamera, drops: dict[int, int]) -> None:
        super().__init__()
        self.camera, self.drops, self.observed = camera, drops, 0

    def observe(self) -> Observation:
        self.camera.stats.dropped += self.drops.get(self.observed, 0)
        self.camera.stats.frames += 1
        self.observed += 1
        now = time.monotonic()
        picture = Frame(np.zeros((8, 8, 3), np.uint8), now, self.camera.stats.frames)
        return Observation(now, self.position.copy(), {"front": picture})


def test_the_dashboards_camera_drops_are_the_takes_and_between_takes_the_last_ones(tmp_path):
    """A camera that had dropped 5 frames before the session: 2 more in the first take
    (ticks 0-29), 4 during the reset after it (ticks 30-59), 1 in the second take. The
    dashboard counted from the camera's start (5, 7, 11, 12) and its top line kept saying
    "N camera frames dropped" for the rest of the session; now it counts the take's (0,
    then 2), keeps the last take's 2 between takes (as stored with it), then 0 and 1."""
    camera = _DroppingCamera(dropped_before=5)
    arm = _CameraArm(camera, drops={10: 2, 40: 4, 70: 1})
    seen: list[tuple[RecorderState, int, str]] = []  # by tick: state, the front camera's drops, the top line's words

    def publish(status) -> None:
        seen.append((status.state, status.cameras["front"].dropped, recorder_render.safety(status).plain))

    store = EpisodeStore.create(tmp_path / "drops.zarr", robot_features(JOINTS, {"front": (8, 8)}),
                                StoreSettings(durable=False))
    writer = BackgroundWriter(store)
    config = SessionConfig(task="wave", episodes=2, episode_time_s=1.0, reset_time_s=1.0, fps=30, robot="fake")
    session = RecordingSession(config, arm, SineTeleop(), writer, SimulatedClock(30), JOINTS,
                               cameras={"front": camera}, publish=publish)
    result = session.run()
    writer.close()
    assert not result.fault and len(store) == 2
    assert [store.episode(i).dropped_frames for i in range(2)] == [2, 1]  # the takes' (as before)
    assert [dropped for _, dropped, _ in seen[:10]] == [0] * 10
    assert seen[10][:2] == (RecorderState.RECORDING, 2) and "2 camera frames dropped this take" in seen[10][2]
    reset = seen[30:60]
    assert {state for state, _, _ in reset} == {RecorderState.RESETTING}
    assert {dropped for _, dropped, _ in reset} == {2}  # the last take's: the reset's 4 are no take's
    assert all("2 camera frames dropped in the last take" in line for _, _, line in reset)
    assert seen[60][:2] == (RecorderState.RECORDING, 0) and "dropped" not in seen[60][2]
    assert seen[70][1] == 1 and "1 camera frames dropped this take" in seen[70][2]


def test_on_the_twins_time_the_executor_says_its_period_is_the_wall_time_of_a_tick():
    """`deploy --sim` printed "loop p99 1285.0 ms, 0 overruns" for a 30 Hz loop: on
    simulated time the measured "period" is the wall time a tick took, the chunk computed
    inside it included. The status says it is simulated (the dashboard's loop panel and the
    lines then say so, as the recorder's do for the twin), and so do the summary and JSON."""
    twin = Executor(CountingRobot(), StepBackend(8, (0.05,)), ExecutorConfig(strategy="sync", realtime=False,
                                                                            warmup_runs=2))
    twin.warm_up("count")
    report = twin.run_episode("count", 20)
    assert twin.status.loop.simulated
    assert report.period_p99_ms > 40  # a chunk of 50 ms inside a tick of simulated time
    line = executor_line(twin.status)
    assert "sim-time loop, wall p99" in line and "ms a tick" in line and "loop p99" not in line
    summary = _summary([report], twin, judged=True, simulated=True)
    assert f"sim-time loop, wall p99 {report.period_p99_ms:.1f} ms a tick" in summary["line"]
    assert "loop p99" not in summary["line"] and "overruns" not in summary["line"]
    assert summary["loop_p99_ms"] is None and summary["sim_tick_wall_p99_ms"] == report.period_p99_ms

    robot = Executor(CountingRobot(), StepBackend(8), ExecutorConfig(strategy="async", realtime=True, warmup_runs=2))
    assert not robot.status.loop.simulated
    assert "loop p99 0.0 ms, 0 overruns" in executor_line(ExecutorStatus(loop=LoopStatus()))
    on_robot = _summary([report], robot, judged=False)
    assert f"loop p99 {report.period_p99_ms:.1f} ms, 0 overruns" in on_robot["line"]
    assert on_robot["loop_p99_ms"] == report.period_p99_ms and on_robot["sim_tick_wall_p99_ms"] is None


@pytest.mark.parametrize(("limit", "shown"), [(2.5, "t=2.4/2.5s"), (20.0, "t=2.4/20s"), (0.5, "t=2.4/0.5s")])
def test_the_episode_limit_is_shown_as_given(limit, shown):
    """--episode-time-s 2.5 showed t=2.4/2s (the limit to no decimal)."""
    status = recorder_render.RecorderStatus(state=RecorderState.RECORDING, episode_time_s=2.4,
                                            episode_time_limit_s=limit)
    assert recorder_render.clock_text(status) == shown
    assert f" {shown} " in recorder_render.status_line(status)
