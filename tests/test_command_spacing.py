"""A late tick's command is not followed at once by the next one.

A robot bounds each goal's step by the time since its last command (DynamixelRobot's
credit): a tick that ran past the next one's due time (a sync chunk computed in it, a
slow camera read before its command) had the next tick start at once, and its command
follow by under a millisecond, so the robot took almost none of that step. The clock
now times the next tick from when the late command went out (TickClock.command_sent),
in the executor, its homing and the recorder."""

from __future__ import annotations

import time

import numpy as np

from executor_fakes import CountingRobot, StepBackend
from recorder_fixtures import JOINTS, FakeArm, SineTeleop, open_store
from shallowpi.deploy.executor import Executor
from shallowpi.deploy.settings import ExecutorConfig
from shallowpi.policy.action_selection import ActionSelectionConfig
from shallowpi.record.clock import SimulatedClock, TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter

HZ = 30.0


def test_after_a_late_command_the_next_tick_is_a_period_away_and_the_overrun_counts_once():
    clock = TickClock(100)  # 10 ms periods
    clock.restart()
    clock.wait()
    time.sleep(0.035)  # the tick's command goes out three periods late
    clock.command_sent()
    sent = time.monotonic()
    clock.wait()
    assert time.monotonic() - sent >= 0.0095
    assert clock.overruns == 1
    assert clock.percentiles_ms()[1] >= 44.0  # the late tick's whole period is measured, not lost
    clock.command_sent()  # on time: the schedule stays
    before = time.monotonic()
    clock.wait()
    assert 0.005 < time.monotonic() - before < 0.0125 and clock.overruns == 1


def test_a_command_just_inside_the_period_is_not_followed_at_once_either():
    """Commands go out at the start of their ticks; one goes out 16 ms into a 20 ms tick
    (before the deadline): the next tick started 4 ms later, its command with it."""
    clock = TickClock(50)  # 20 ms periods
    clock.restart()
    for _ in range(5):  # the usual: a command as the tick starts
        clock.wait()
        clock.command_sent()
    clock.wait()
    time.sleep(0.016)
    clock.command_sent()
    sent = time.monotonic()
    clock.wait()
    assert time.monotonic() - sent >= 0.018
    assert clock.overruns == 1


def test_a_late_tick_counts_one_overrun_however_late_it_ends():
    """A late command (counted), then a slow write after it, past the new due time too: one
    tick, one overrun (it had counted two)."""
    clock = TickClock(100)
    clock.restart()
    clock.wait()
    time.sleep(0.03)
    clock.command_sent()
    time.sleep(0.03)  # the recording's write, after the command
    clock.wait()
    assert clock.overruns == 1
    clock.command_sent()
    clock.wait()
    assert clock.overruns == 1


def test_the_twins_clock_has_no_late_command():
    clock = SimulatedClock(HZ)
    clock.wait()
    time.sleep(0.05)
    clock.command_sent()
    assert clock.overruns == 0 and clock.now() == clock.ticks / HZ


class _TimedRobot(CountingRobot):
    def __init__(self) -> None:
        super().__init__()
        self.sent_at: list[float] = []

    def act(self, goal):
        self.sent_at.append(time.monotonic())
        return super().act(goal)


def test_under_sync_the_first_command_after_each_chunk_comes_a_period_later():
    """sync computes each chunk inside a tick (150 ms here, 4.5 periods): the commands went
    out 33, 33, 184, 0.3 ms apart, the chunk's first two back to back."""
    robot = _TimedRobot()
    executor = Executor(robot, StepBackend(8, (0.0, 0.0, 0.15)),
                        ExecutorConfig(strategy="sync", realtime=True, warmup_runs=2, seam_ticks=2.0,
                                       selection=ActionSelectionConfig(replan_every=4)))
    executor.warm_up("count")
    report = executor.run_episode("count", 17)
    gaps = np.diff(robot.sent_at)
    assert len(gaps) == 16 and report.overruns >= 3  # four chunks, each a late tick
    assert gaps.min() > 0.7 / HZ, np.round(gaps * 1e3, 1)


class _SlowCameraArm(FakeArm):
    """Its observe() waits 100 ms every 10th tick, as a camera read that blocks."""

    def __init__(self) -> None:
        super().__init__()
        self.observed = 0
        self.sent_at: list[float] = []

    def observe(self):
        self.observed += 1
        if self.observed % 10 == 5:
            time.sleep(0.1)
        return super().observe()

    def act(self, action):
        self.sent_at.append(time.monotonic())
        return super().act(action)


def test_a_recording_after_a_slow_frame_commands_the_follower_a_period_later(tmp_path):
    store = open_store(tmp_path / "slow.zarr")
    writer = BackgroundWriter(store)
    arm = _SlowCameraArm()
    config = SessionConfig(task="wave", episodes=1, episode_time_s=30 / HZ, reset_time_s=0.0, fps=int(HZ),
                           robot="fake")
    result = RecordingSession(config, arm, SineTeleop(), writer, TickClock(HZ), JOINTS).run()
    writer.close()
    assert not result.fault and len(store) == 1
    gaps = np.diff(arm.sent_at)
    assert arm.observed >= 25 and gaps.min() > 0.7 / HZ, np.round(gaps * 1e3, 1)
