"""The executor: strategies, measured delays, the three RTC faults of lerobot 0.6.1, and
the watchdog. Lockstep (simulated time, each chunk arriving ceil(measured latency x fps)
ticks after its request) unless a test says realtime."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from executor_fakes import (
    CountingRobot,
    FailingBackend,
    LoadedRobot,
    StepBackend,
    run,
)
from shallowpi.deploy.backends.base import BackendError
from shallowpi.deploy.executor import Executor
from shallowpi.deploy.settings import ExecutorConfig
from shallowpi.errors import ConfigError
from shallowpi.policy.action_selection import ActionSelectionConfig
from shallowpi.record.clock import LOOP_SWITCH_INTERVAL_S
from shallowpi.robots.base import SafeStateError


def commands(report) -> list[float]:
    """The first joint's command at each tick that was not a hold (holds repeat the last)."""
    values = [float(s[0]) for s in report.sent]
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]



@pytest.mark.parametrize("strategy", ["sync", "async", "rtc"])
@pytest.mark.parametrize("latencies", [(0.0,), (0.1,), (0.2, 0.05, 0.15, 0.0)])
def test_no_action_is_skipped_or_repeated_whatever_the_latency(strategy, latencies):
    # lerobot 0.6.1 fault 1: indexing the new chunk by the latency estimate skips actions
    # (estimate too high) or replays them (too low). Here: by the actions consumed.
    _, report, _, _ = run(strategy, latencies)
    sent = commands(report)
    assert sent[:1] == [-1.0] or sent[0] == 0.0
    sent = [v for v in sent if v >= 0]
    assert sent == list(np.arange(len(sent), dtype=float)), sent[:20]
    assert report.steps == len(sent) > 20
    assert report.max_step == pytest.approx(1.0)  # one count a tick (the top speed), seams included


def test_the_first_chunk_starts_at_its_first_action_however_late_it_comes():
    # lerobot 0.6.1 fault 1, first chunk: it arrives while the robot holds, so nothing of it
    # has run; starting it at the estimated delay would jump the arm ahead.
    _, report, robot, _ = run("rtc", latencies=(0.4, 0.0), warm=False, ticks=40)
    values = [float(s[0]) for s in report.sent]
    first = next(i for i, v in enumerate(values) if v != -1.0)
    assert first >= 10  # held ~12 ticks for the cold first chunk
    assert values[first] == 0.0 and report.max_seam_jump == pytest.approx(1.0)
    assert robot.calls[0] == "hold"


def test_a_cold_start_does_not_inflate_the_delay_estimate():
    # lerobot 0.6.1 fault 3: the first (cold) chunk's latency counted as a delay.
    executor, report, _, _ = run("rtc", latencies=(0.5, 0.02), warm=True, ticks=60)
    # 0.5 s is 15 ticks at 30 Hz, 0.02 s one (a few on a busy machine)
    assert executor.initial_delay < 8  # from the warmed-up latency, measured
    assert report.delays and max(report.delays) < 8, report.delays
    _, cold, _, _ = run("rtc", latencies=(0.5, 0.02), warm=False, ticks=60)
    assert cold.latency_ms[0] > 450 and max(cold.delays) < 8, cold.delays  # the cold one not counted


def test_rtc_inpaints_towards_the_current_chunk_in_robot_units_never_zeros():
    # lerobot 0.6.1 fault 2: the frozen prefix zero-padded in normalised space (the dataset
    # mean). Here the target is the current chunk's remaining actions, padded with its last.
    _, _, _, backend = run("rtc", latencies=(0.0, 0.1), chunk_len=8, ticks=40, replan_every=4)
    guided = [p for p in backend.inpaintings[1:] if p is not None]
    assert guided
    for inpainting in guided:
        target = inpainting.target[:, 0]
        frozen = int((inpainting.weight == 1.0).sum())
        assert frozen >= 1 and set(inpainting.weight[:frozen]) == {1.0}
        overlap = 8 - 4  # K = 4 of 8 sent before the request
        assert list(np.diff(target[:overlap])) == [1.0] * (overlap - 1)  # the chunk's own steps
        assert (target[overlap:] == target[overlap - 1]).all() and (target != 0).any()


@pytest.mark.parametrize("mask", ["soft", "hard"])
def test_rtc_masks_the_overlap_softly_or_only_its_frozen_prefix(mask):
    # soft: the frozen prefix at 1, then RTC's decaying weights over the rest of the overlap
    # (a cross-fade onto the new chunk); hard: 1 on the frozen prefix, 0 after.
    _, _, _, backend = run("rtc", latencies=(0.0, 0.05), chunk_len=16, ticks=60, replan_every=8, rtc_mask=mask)
    guided = [p for p in backend.inpaintings[1:] if p is not None]
    # the frozen prefix is the measured delay (2-3 ticks; a very loaded machine may stretch it
    # to the whole overlap of 16 - K = 8, which leaves nothing between to check)
    partial = [p for p in guided if (p.weight == 1.0).sum() < 8]
    assert partial
    for inpainting in partial:
        weight = inpainting.weight
        frozen = int((weight == 1.0).sum())
        assert frozen >= 1 and (weight[:frozen] == 1.0).all() and (weight[8:] == 0.0).all()
        between = weight[frozen:8]
        if mask == "soft":
            assert len(between) and ((between > 0) & (between < 1)).all() and (np.diff(between) < 0).all()
        else:
            assert (between == 0.0).all()


def test_zero_watchdog_holds_at_nominal_latency():
    for strategy in ("sync", "async", "ensemble", "rtc"):
        _, report, _, _ = run(strategy, latencies=(0.01,), ticks=60)
        assert report.holds == 0 and report.seam_trips == 0, strategy


def test_the_watchdog_holds_when_the_queue_runs_dry_and_resumes_on_a_fresh_chunk():
    _, report, robot, _ = run("async", latencies=(0.0, 0.5), chunk_len=4, replan_every=4, ticks=60)
    assert report.holds >= 2 and report.hold_ticks > 10
    # the episode's start, then its end keeping the last command: a watchdog hold re-sends it through act()
    assert robot.calls == ["hold", "hold last"]
    sent = [v for v in commands(report) if v >= 0]
    assert sent == list(np.arange(len(sent), dtype=float))  # resumed where it stopped


def test_a_watchdog_hold_keeps_the_servos_goal_not_the_measured_pose():
    """A gripper closed on an object stops short of its goal (the squeeze is the gap) and a
    joint under load sags below it: holding the measured pose would let go and sink."""
    _, report, _, _ = run("async", latencies=(0.0, 0.5), chunk_len=4, replan_every=4, ticks=60,
                          robot=LoadedRobot())
    assert report.holds >= 2
    sent = np.array([s[0] for s in report.sent])
    moving = sent[sent > sent[0]]
    assert len(moving) and (np.diff(moving) >= 0).all()  # no command ever steps back to the sagged pose


def test_after_an_inference_fault_and_at_the_end_the_robot_keeps_its_last_command():
    """The holds that last (a policy fault, torque on until the operator ends it; an
    episode's end) keep the servos' goal: Robot.hold(last), not hold() re-aimed at a
    measured pose that a squeezing gripper or a loaded joint sits short of."""
    for backend, ended in ((FailingBackend(8, "TensorRT: engine failed to run"), "fault"),
                           (StepBackend(8), "time limit")):
        robot = LoadedRobot()
        executor = Executor(robot, backend, ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
        executor.warm_up("count")
        report = executor.run_episode("count", 20)
        assert report.ended == ended and robot.calls[-1] == "hold last"
        np.testing.assert_array_equal(robot.position, report.sent[-1])  # the goal kept, no step back


def test_an_exception_in_the_loop_keeps_the_last_command_and_is_raised():
    """A bug (here in the recording hook): the robot keeps its last command, and the
    exception goes on to the caller, not swallowed."""
    robot = LoadedRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    sent = []

    def on_tick(obs, command):
        sent.append(command)
        if len(sent) == 5:
            raise KeyError("a bug in the hook")

    with pytest.raises(KeyError, match="a bug in the hook"):
        executor.run_episode("count", 20, on_tick=on_tick)
    assert robot.calls[-1] == "hold last" and executor.status.state.value == "fault"
    np.testing.assert_array_equal(robot.position, sent[-1])


def test_a_stale_camera_frame_holds_drops_old_chunks_and_resumes_on_a_fresh_one():
    robot = CountingRobot(frozen_frames=(20, 35))
    _, report, robot, _ = run("async", latencies=(0.0,), robot=robot, ticks=60, chunk_len=30)
    values = [float(s[0]) for s in report.sent]
    assert report.stale_frames > 0 and report.holds >= 1
    frozen_ticks = values[27:35]  # from tick 28, 8 ticks (> 0.25 s) into the freeze, it holds
    assert len(set(frozen_ticks)) == 1
    assert values[-1] > values[30]  # moving again on a chunk computed from a fresh frame


def test_the_seam_bound_limits_and_counts_a_jump():
    class Ahead(StepBackend):  # the episode's first chunk starts at the robot (its opening is the next test's)
        def infer(self, obs, inpainting=None):
            self.offset = 5.0 if self.calls >= 3 else 0.0  # after the warm-up's two and the first chunk
            return super().infer(obs, inpainting)

    robot = CountingRobot(max_step=1.0)  # clamps at its top speed, one count a tick
    backend = Ahead(8, (0.0,))  # every later chunk starts 5 counts (5 ticks at top speed) beyond the last command
    executor = Executor(robot, backend, ExecutorConfig(strategy="async", realtime=False, seam_ticks=2.0, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 30)
    # One ramp, never closed: each chunk starts 5 beyond the robot, which ramps at the plan's own
    # speed; those arriving during it continue it (the next test), counted once.
    assert report.seam_trips == 1 and report.max_seam_jump > 5.0
    jumps = np.abs(np.diff([float(s[0]) for s in report.sent]))
    assert jumps.max() <= 1.0 + 1e-6  # within a chunk 1 a tick; at each seam a ramp at top speed
    assert report.clamps == 0 and robot.clamped == 0  # the ramp is the seam's, to the end: the robot clamped nothing


def test_chunks_arriving_during_a_seams_ramp_continue_it_and_count_no_trip_of_their_own():
    """The policy changes its plan once, by 10 ticks; under rtc every later chunk is
    inpainted to agree with that plan, not with the robot still ramping to it. Each chunk
    that arrived during the ramp had counted the gap left as a trip of its own (4 trips,
    10, 8, 6 and 4 ticks, for one ramp), inflating the safety count the strategies are
    compared by. A chunk that departs from both the plan and the robot during the ramp
    still counts; one that starts where the robot is (computed from its state, as sync's
    and async's are) does not."""
    class Replan(StepBackend):
        def __init__(self, chunk_len: int, detour: float | str | None) -> None:
            super().__init__(chunk_len, (0.0,))
            self.detour = detour

        def infer(self, obs, inpainting=None):
            self.calls += 1
            joints = len(obs["observation.state"])
            if self.calls == 6 and self.detour is not None:  # mid-ramp, a plan of its own
                at = float(obs["observation.state"][0]) + 1.0 if self.detour == "robot" else self.detour
                return np.full((self.chunk_len, joints), at, np.float32)
            if inpainting is not None and self.calls > 4:  # agree with the chunk in force
                return np.asarray(inpainting.target, np.float32)
            return np.full((self.chunk_len, joints), 0.0 if self.calls < 4 else 10.0, np.float32)

    for detour, trips in ((None, 1), (-5.0, 2), ("robot", 1)):
        robot = CountingRobot()
        robot.position[:] = 0
        executor = Executor(robot, Replan(8, detour), ExecutorConfig(
            strategy="rtc", realtime=False, warmup_runs=2, seam_ticks=2.0, rtc_mask="hard",
            selection=ActionSelectionConfig(replan_every=2)))
        executor.warm_up("x")
        report = executor.run_episode("x", 30)
        values = [float(s[0]) for s in report.sent]
        assert np.abs(np.diff(values)).max() <= 1.0 + 1e-6  # one ramp at top speed, whatever arrives
        assert report.seam_trips == executor.safety.seam_trips == trips, (detour, values)
        assert report.max_seam_jump == pytest.approx(10.0), detour  # the plan's jump; the detour's, from the robot, is less


class Reach(StepBackend):
    """Every chunk holds one goal: 10 (11 ticks of top speed from the robot's -1), and 20
    once the robot has reached 10 (a jump of 10 between chunks)."""

    def infer(self, obs, inpainting=None):
        self.calls += 1
        self.reached = getattr(self, "reached", False) or float(obs["observation.state"][0]) == 10.0
        return np.full((self.chunk_len, 2), 20.0 if self.reached else 10.0, np.float32)


def test_the_opening_speed_is_record_catch_up_speeds_default():
    """deploy.start_speed null means record.catch_up_speed's default: the executor, which runs
    on the robot without the config tree, keeps its own copy (OPENING_SPEED), and a change of
    the configured default that leaves the copy behind would give the two paths that close on
    a far goal two speeds."""
    from shallowpi.config import compose
    from shallowpi.deploy.executor import OPENING_SPEED

    assert compose().record.catch_up_speed == OPENING_SPEED


@pytest.mark.parametrize(("start_speed", "step"), [(0.25, 0.25), (0.5, 0.5), (None, 0.25)])
def test_an_episodes_far_first_action_is_approached_at_the_start_speed(start_speed, step):
    """The robot holds its measured pose as the episode starts; a first chunk 11 ticks of top
    speed away (no start pose homed to, deploy.start_speed null, a policy that does not begin
    where its demonstrations did) was ramped to at 100 % of top speed, where the homing
    before it and record's catch-up go at 25 %. Now the opening closes on it at
    deploy.start_speed (null: record.catch_up_speed's default, 0.25), counted as one seam
    trip however many chunks arrive on the way; a jump between chunks later still ramps
    at top speed."""
    robot = CountingRobot(max_step=1.0)  # clamps at its top speed, one count a tick
    executor = Executor(robot, Reach(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2,
                                                          start_speed=start_speed))
    executor.warm_up("reach")
    counts: list[tuple[int, int]] = []  # (seam trips, clamps) after each tick
    said: list[str] = []  # the status message after each tick
    report = executor.run_episode("reach", int(11 / step) + 40, on_tick=lambda obs, sent: (
        counts.append((executor.safety.seam_trips, executor.safety.clamps)), said.append(executor.status.message)))
    values = np.array([float(s[0]) for s in report.sent])
    moving = np.flatnonzero(values != -1.0)[0]  # held until the first chunk came
    opening = np.diff(values[moving - 1:])[: int(10 / step)]  # the approach until within a tick of 10
    np.testing.assert_allclose(opening, step, rtol=1e-5)
    reached = np.flatnonzero(values == 10.0)[0]
    assert reached - moving < int(11 / step) + 1  # then the policy's own action, within a tick
    later = np.diff(values[reached:])
    assert values[-1] == 20.0 and later.max() == pytest.approx(1.0)  # between chunks: top speed, as before
    # The opening: one seam trip, its jump the largest, no clamp (the robot took every step asked).
    assert counts[reached] == (1, 0) and report.max_seam_jump == pytest.approx(11.0)
    assert report.seam_trips == executor.safety.seam_trips >= 2 and report.holds == 0
    # On the dashboard as the homing is: the joint furthest and the seconds left, gone once there.
    assert said[moving].startswith(f"the robot is closing on the policy's first action at {step:.0%} of its top "
                                   "speed: j0 furthest, about ") and said[reached] == "" == executor.status.message


def test_the_seam_bound_is_in_ticks_of_each_joints_top_speed():
    """One bound for radians, metres and gripper openings: a 2 cm jump of a 0.2 m/s lift
    (3 ticks at 30 Hz) is a jump; 0.2 rad of a 3 rad/s joint (2 ticks) is not. A bound in
    joint units (the old 0.25) passed the lift's jump and every one smaller than 25 cm."""
    class Lift(StepBackend):
        def infer(self, obs, inpainting=None):
            self.calls += 1
            state = np.asarray(obs["observation.state"], np.float32)
            return np.tile(state + np.array([0.2, self.lift], np.float32), (self.chunk_len, 1))

    for lift, trips in ((0.0, False), (0.02, True)):
        robot = CountingRobot()
        robot.spec.joints[0].max_velocity, robot.spec.joints[1].max_velocity = 3.0, 0.2  # rad/s, m/s
        backend = Lift(8)
        backend.lift = lift
        executor = Executor(robot, backend, ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2))
        executor.warm_up("reach")
        report = executor.run_episode("reach", 20)
        assert (report.seam_trips > 0) is trips, (lift, report.seam_trips)
        assert report.max_seam_jump == pytest.approx(3.0 if trips else 2.0, rel=1e-3)


def test_the_robot_clamps_are_counted_beyond_a_tolerance():
    _, report, _, _ = run("async", robot=CountingRobot(max_step=0.5), ticks=30)
    assert report.clamps > 0
    # Every joint follows the same step numbers here, so each was clamped on every counted tick.
    assert report.clamped_joints == {"j0": report.clamps, "j1": report.clamps}
    # A trained arm policy sits a hair past the shoulder limit its demonstrations touched:
    # the robot clamps those commands all the same, but they are not what an operator's
    # clamp count is for (it read 40 % of ticks).
    _, report, robot, _ = run("async", robot=CountingRobot(max_step=0.999), ticks=30)
    assert report.clamps == 0 and robot.clamped > 0


def test_stop_from_another_thread_ends_cleanly_and_estop_turns_torque_off():
    for method, last in (("stop", "hold last"), ("estop", "torque_off")):
        robot = CountingRobot()
        executor = Executor(robot, StepBackend(8, (0.01,)), ExecutorConfig(strategy="rtc", realtime=True, warmup_runs=2))
        executor.warm_up("count")
        threading.Timer(0.3, getattr(executor, method)).start()
        published = []
        executor._publish = lambda status, seen=published: seen.append((status.state.value, status.message))
        report = executor.run_episode("count", 10_000)
        assert report.ended == ("stopped" if method == "stop" else "e-stop") and report.ticks < 100
        assert robot.calls[-1] == last
        # The final status says so (it stayed "running": a dashboard showed a robot moving
        # after its e-stop, and `monitor --lines` called a finished run vanished).
        assert published[-1] == ("stopped", "e-stopped: torque off" if method == "estop"
                                 else "stopped by the operator; the robot holds its pose")
        assert executor.status.estopped is (method == "estop")  # `monitor --lines` exits 1 on it
    finished = Executor(CountingRobot(), StepBackend(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    finished.warm_up("count")
    finished.run_episode("count", 20)
    finished.done(1)
    assert (finished.status.state.value, finished.status.message) == ("done", "done: 1 episode(s)")


@pytest.mark.parametrize("method", ["stop", "estop"])
def test_a_stop_while_the_last_ticks_sync_chunk_is_computed_ends_the_episode_as_stopped(method):
    """The loop left a stop seen after a sync chunk to its top, which the last tick never
    reaches: the episode read "time limit" (a --json `complete: true`, a recording marked
    as run out) and the final status never said stopped."""
    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    computed = executor.backend.infer

    def stopped_meanwhile(obs, inpainting=None):
        getattr(executor, method)()  # the operator's key while the chunk was computed
        return computed(obs, inpainting)

    executor.backend.infer = stopped_meanwhile
    report = executor.run_episode("count", 1)
    assert report.ended == ("stopped" if method == "stop" else "e-stop") and report.ticks == 0
    assert executor.status.state.value == "stopped"
    assert robot.calls[-1] == ("hold last" if method == "stop" else "torque_off")


def test_a_hold_that_fails_before_or_after_the_ticks_is_handled_as_a_fault_in_a_tick():
    """The holds outside the loop (the episode's start, its end, the homing's and the reset's
    first) raised past the fault handling: the run's clean-up switched every bus off (a
    humanoid's sound arm dropped what it held), no FAULT showed and the episode's report
    was lost. Now each is a fault as in a tick: hold what can hold, release the rest."""
    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    robot.fault_at = 0  # the overloaded servo let go before the first tick
    report = executor.run_episode("count", 10)
    assert (report.ended, report.ticks, report.success) == ("fault", 0, None)
    assert robot.calls[-3:] == ["hold", "hold", "torque_off"]  # hold_or_release: the hold failed, torque off
    assert executor.status.state.value == "fault" and executor.stopped

    class LetGoAtTheEnd(CountingRobot):
        def hold(self, goal=None):
            if goal is not None and self.ticks >= 5:  # the last command no longer confirmed
                self.calls.append("hold last")
                raise SafeStateError("robot 'counting': hold not confirmed, servo 3 has torque off")
            return super().hold(goal)

    robot = LetGoAtTheEnd()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 5, success=lambda: True)
    assert (report.ended, report.ticks, report.success) == ("fault", 5, False)
    assert robot.calls[-2:] == ["hold last", "hold"] and executor.held_after_fault  # the rest holds
    assert executor.hold_measured() is not None  # the reset's hold: confirmed here


def test_the_servos_alarms_are_read_once_a_second_while_the_robot_holds_for_the_reset():
    """The reset countdown held the robot for seconds of hands at it and read no alarm: an
    overload there went unseen until the next episode's first observe. watch_faults reads
    them once a second and handles a fault as in a tick."""
    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2))
    executor._alarms_read_at = time.monotonic()  # read just now
    robot.alarm = "servo 3 on bus arm reports an overload"
    executor.watch_faults()
    assert not executor.stopped  # not yet a second since the last read
    executor._alarms_read_at -= 1.0
    executor.watch_faults()
    assert executor.stopped and executor.status.state.value == "fault"
    assert "overload" in executor.status.message and robot.calls[-1] == "hold"  # hold_or_release: it holds


def test_a_servo_alarm_during_a_sync_chunks_computation_ends_the_episode_as_a_fault():
    """The robot holds, unobserved, while a sync chunk is computed (seconds on a slow
    backend), and after the episode while the inference thread finishes: no servo alarm was
    read there. They are, once a second, and a fault is the episode's."""
    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8, (0.0, 0.0, 1.6)),
                        ExecutorConfig(strategy="sync", realtime=True, warmup_runs=2))
    executor.warm_up("count")
    executor._alarms_read_at -= 0.5  # half a second since the last read when the wait begins
    robot.alarm = "servo 3 on bus arm reports an overload"
    started = time.monotonic()
    report = executor.run_episode("count", 30)
    assert report.ended == "fault" and report.ticks == 0 and time.monotonic() - started < 1.5
    assert "overload" in executor.status.message and executor.status.state.value == "fault"


def test_realtime_loop_keeps_its_period_while_inference_runs_on_its_thread():
    _, report, _, _ = run("rtc", latencies=(0.05,), realtime=True, ticks=45)
    sent = [v for v in commands(report) if v >= 0]
    assert sent == list(np.arange(len(sent), dtype=float)) and len(sent) > 30
    assert report.period_p99_ms < 33.4 * 3  # loose here (a shared CPU); the bench measures it
    assert report.chunks >= 5 and all(d >= 1 for d in report.delays)


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown deploy strategy 'fast'; choose one of: sync, async, ensemble, rtc"):
        ExecutorConfig(strategy="fast")
    with pytest.raises(ConfigError, match=r"seam_ticks must be at least 1 \(a tick at top speed"):
        ExecutorConfig(seam_ticks=0.5)
    with pytest.raises(ConfigError, match=r"deploy\.seam_bound \(joint units\) is now deploy\.seam_ticks"):
        ExecutorConfig.from_config({"seam_bound": 0.25})  # an old setting: its unit changed
    from shallowpi import config

    with pytest.raises(ConfigError, match=r"deploy\.seam_bound \(joint units\) is now deploy\.seam_ticks"):
        config.compose(["deploy.seam_bound=0.3"])  # ... and on the command line
    # `selection` is a field but not a deploy key: it comes from the action_selection section.
    for section in ({"stratgy": "rtc"}, {"selection": {}}):
        with pytest.raises(ConfigError, match=rf"unknown deploy keys \['{next(iter(section))}'\]; valid keys: .*strategy") as err:
            ExecutorConfig.from_config(section)
        assert "selection" not in str(err.value).partition("valid keys:")[2]
    with pytest.raises(ConfigError, match=r"unknown action_selection keys \['horizon'\]; valid keys: .*replan_every"):
        ExecutorConfig.from_config({"strategy": "rtc"}, {"horizon": 3})


def test_the_executor_status_travels_as_a_telemetry_envelope():
    from shallowpi.telemetry import envelope
    from shallowpi.telemetry.executor_status import ExecutorStatus

    executor, _, _, _ = run("rtc", latencies=(0.01,), ticks=30)
    status = executor.status.snapshot()
    assert status.state.value == "running" and status.inference_ms and status.commanded
    seq, decoded = envelope.decode(envelope.encode(status, seq=3), ExecutorStatus)
    assert seq == 3 and decoded == status
    assert ExecutorStatus.from_json({"state": "from the future", "unknown": 1}).state.value == "warming"
    from shallowpi.tui.executor_render import status_line

    line = status_line(status)
    assert line.startswith("RUNNING  episode 1/0 (0 ok)") and "rtc on steps" in line and "faults 0" in line
    status.success_judged = False  # on the robot: no detector, so no count to show
    assert "(success not judged)" in status_line(status) and " ok)" not in status_line(status)
    assert envelope.decode(envelope.encode(status, seq=4), ExecutorStatus)[1].success_judged is False


def test_the_reset_before_an_episode_is_published_with_its_countdown_and_cleared_when_it_runs():
    from shallowpi.tui.executor_render import summary

    executor, _, _, _ = run("rtc", latencies=(0.01,), ticks=5)
    executor.status.episode = 1
    executor.resetting(10.0, 7.2)
    status = executor.status.snapshot()
    assert status.state.value == "reset" and status.reset_left_s == pytest.approx(7.2)
    assert status.message == "set the scene: episode 2 starts in 10 s (the robot holds)"
    assert "RESET" in summary(status, connected=True).plain
    assert "the episode starts in 8 s" in summary(status, connected=True).plain
    executor.run_episode("pick", max_ticks=3)
    assert executor.status.state.value == "running" and executor.status.message == ""
    assert "starts in" not in summary(executor.status, connected=True).plain


def test_an_executor_faster_than_the_robot_is_refused():
    with pytest.raises(ConfigError, match="executor at 60 Hz is faster than the robot's 30 Hz"):
        Executor(CountingRobot(fps=30.0), StepBackend(8), ExecutorConfig(), fps=60.0)


def test_a_wall_clock_episode_bounds_the_gil_hand_over_and_restores_it():
    import sys

    class Watching(CountingRobot):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[float] = []

        def observe(self):
            self.seen.append(sys.getswitchinterval())
            return super().observe()

    before = sys.getswitchinterval()
    _, report, robot, _ = run("rtc", realtime=True, ticks=6, robot=Watching())
    assert report.ticks == 6 and set(robot.seen[-6:]) == {LOOP_SWITCH_INTERVAL_S}  # (warm-up observes first)
    assert sys.getswitchinterval() == before
    _, _, robot, _ = run("rtc", realtime=False, ticks=3, robot=Watching())
    assert robot.seen[-1] == before  # simulated time: nothing to hand over in time


def test_a_chunk_back_too_long_after_its_observation_is_dropped_and_asked_again():
    """A 1.5 s hiccup (deploy.max_chunk_age_s 1.0): its chunk, planned from a picture 1.5 s
    old, used to be executed once it came (only a chunk not back in max_inference_s, 5 s,
    was a fault). It is dropped, counted, and a fresh chunk asked from the next picture; the
    robot holds meanwhile and then goes on without skipping or repeating an action."""
    _, report, _, backend = run("async", latencies=(0.0, 0.0, 0.0, 1.5, 0.0), realtime=True, ticks=120)
    assert report.stale_chunks == 1 and report.ended == "time limit"
    assert report.hold_ticks >= 30  # ~45 ticks of the 1.5 s wait, at 30 Hz
    sent = [v for v in commands(report) if v >= 0]
    assert sent == list(np.arange(len(sent), dtype=float)) and len(sent) > 40
    assert backend.calls >= 6  # 2 warm-up, the first chunk, the late one, the one asked again, ...
    _, on_time, _, _ = run("async", latencies=(0.0, 0.0, 0.0, 0.5, 0.0), realtime=True, ticks=60)
    assert on_time.stale_chunks == 0  # under the bound: executed as before


@pytest.mark.parametrize("strategy", ["sync", "async", "rtc"])
def test_a_backend_too_slow_every_time_holds_then_faults_and_never_runs_the_old_chunk_on(strategy):
    """Every chunk after the first comes back 0.45 s after its picture (deploy.max_chunk_age_s
    0.3): each is dropped. The robot used to go on with the chunk before it, older still (in
    sync one stale action a 0.45 s wait, past the K it runs), and the episode ran out its time
    frozen as a normal one, since each new request restarted the watchdog. Now the robot
    holds on the actions the first chunk gave, and the episode is a fault once no chunk fit
    to act on has come for deploy.max_inference_s (1 s)."""
    robot = CountingRobot()
    backend = StepBackend(8, (0.0, 0.0, 0.0, 0.45))  # warm-up twice, the first chunk, then slow
    executor = Executor(robot, backend, ExecutorConfig(
        strategy=strategy, realtime=True, warmup_runs=2, max_chunk_age_s=0.3, max_inference_s=1.0,
        selection=ActionSelectionConfig(replan_every=4)))
    executor.warm_up("count")
    began = time.monotonic()
    report = executor.run_episode("count", 300)  # 10 s at 30 Hz
    assert report.ended == "fault" and time.monotonic() - began < 4.0
    assert "no chunk fit to act on for" in executor.status.message
    assert report.chunks == 1 and report.stale_chunks >= 2
    sent = [v for v in commands(report) if v >= 0]  # the robot starts at -1, held until the first chunk
    # The first chunk's actions (0, 1, ...) until the first late one came back, none after it.
    assert sent == list(np.arange(0.0, len(sent))) and len(sent) <= 8
    if strategy == "sync":
        assert len(sent) == 4  # K: sync never runs the rest of a chunk


def test_a_policy_pressing_past_the_robots_limit_is_a_clamp_not_a_seam_jump():
    """The robot clips to its own limits (a hardware robot's narrowed to its calibrated
    sweep, below the config's): a policy holding 5 past one tripped the seam check on every
    chunk, as if it jumped, and ramped there for the whole chunk. Seams are measured against
    what the robot takes; the pressing shows as clamps, and the dashboard's bars as the
    robot's limits."""
    class Narrowed(CountingRobot):  # the config says +-1000, this robot takes up to 20
        def joint_limits(self):
            lower, upper = super().joint_limits()
            return lower, np.minimum(upper, 20.0)

        def act(self, goal):
            return super().act(np.minimum(np.asarray(goal, np.float32), 20.0))

    class Beyond(StepBackend):
        def infer(self, obs, inpainting=None):
            self.calls += 1
            return np.full((self.chunk_len, 2), 25.0, np.float32)

    robot = Narrowed()
    robot.position[:] = 19.0
    executor = Executor(robot, Beyond(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("press")
    report = executor.run_episode("press", 60)
    assert report.chunks > 5 and report.seam_trips == 0 and report.clamps > 40
    assert executor.status.joint_upper == [20.0, 20.0]


def test_with_the_stores_codec_the_policy_sees_each_frame_as_training_decoded_it():
    # deploy --sim hands the twin's frames through the training store's JPEG, as eval --sim
    # does (the renders are the store's size, where the codec shows); without it, as they are.
    from shallowpi.data.codecs import as_stored, image_codec, register_image_codecs
    from shallowpi.robots.observation import Frame, Observation

    register_image_codecs()
    picture = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)

    class Camera(CountingRobot):
        def observe(self) -> Observation:
            obs = super().observe()
            return Observation(obs.time_s, obs.state, {"front": Frame(picture, obs.time_s, self.ticks)})

    class Seeing(StepBackend):
        def __init__(self, chunk_len: int) -> None:
            super().__init__(chunk_len)
            self.seen: list[np.ndarray] = []

        def infer(self, obs, inpainting=None):
            self.seen.append(obs["observation.images.front"])
            return super().infer(obs, inpainting)

    jpeg = image_codec("jpeg", 90)
    for codec, expected in ((jpeg, as_stored(jpeg, picture)), (None, picture)):
        backend = Seeing(8)
        Executor(Camera(), backend, ExecutorConfig(strategy="sync", realtime=False, warmup_runs=2),
                 image_codec=codec).run_episode("count", 10)
        assert backend.seen and all(np.array_equal(frame, expected) for frame in backend.seen)
    assert not np.array_equal(as_stored(jpeg, picture), picture)


def test_an_episode_a_fault_ended_is_a_failure_whatever_the_scene_shows():
    # A diverged twin is reset by MuJoCo to its load poses; a success judged on that scene
    # (or on one a backend fault froze) was counted.
    for backend, success in ((FailingBackend(8, "TensorRT: engine failed to run"), False), (StepBackend(8), True)):
        executor = Executor(CountingRobot(), backend, ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
        executor.warm_up("count")
        report = executor.run_episode("count", 20, success=lambda: True)
        assert report.success is success


class _Tracked(CountingRobot):
    """Keeps every command it took, the approach's included (the report keeps the episode's)."""

    def __init__(self) -> None:
        super().__init__()
        self.taken: list[float] = []

    def act(self, goal) -> np.ndarray:
        sent = super().act(goal)
        self.taken.append(float(sent[0]))
        return sent


def test_before_each_episode_the_robot_goes_slowly_to_the_demonstrations_start_pose():
    """On a robot an episode began where the last one ended (the twin's at its home pose):
    out of the demonstrations' distribution from the second on. Before each episode's reset
    it goes to the pose they started from, at deploy.start_speed of its top speed (one
    count a tick here), and the policy's first chunk is computed there."""
    robot = _Tracked()  # rests at -1
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", warmup_runs=2, start_speed=0.25),
                        start_state=np.array([2.0, 2.0]))
    executor.warm_up("count")
    assert executor.go_to_start() and executor.status.message == ""
    steps = np.diff([-1.0, *robot.taken])
    assert robot.taken[-1] == 2.0 and np.allclose(steps[:-1], 0.25) and 0 < steps[-1] <= 1.0
    report = executor.run_episode("count", 20)
    assert [v for v in commands(report) if v != 2.0][:3] == [3.0, 4.0, 5.0]  # chunks from the start pose
    # A stop on the way: the robot holds where the homing got to, not the pose it left.
    robot = _Tracked()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", warmup_runs=2, start_speed=0.25),
                        start_state=np.array([50.0, 50.0]), publish=lambda s: executor.stop() if s.state.value == "homing"
                        and len(robot.taken) > 3 else None)
    assert not executor.go_to_start()
    assert robot.calls[-1] == "hold last" and robot.position[0] == robot.taken[-1] > -1.0  # -1: where it was
    assert executor.status.state.value == "stopped"
    # Without a start pose (the twin) there is nothing to do.
    assert Executor(CountingRobot(), StepBackend(8), ExecutorConfig()).go_to_start()


@pytest.mark.parametrize(("strategy", "expected"), [("sync", 0), ("async", 5), ("rtc", 5), ("ensemble", 5)])
def test_the_warm_up_latency_is_the_first_delay_estimate_except_under_sync(strategy, expected):
    """sync waits for every chunk, so its delay is 0 whatever inference takes. It started
    from the warm-up's latency too, and asked for its second chunk that many ticks early
    (after one action of the first, when the warm-up took a chunk's length)."""
    selection = ExecutorConfig(strategy=strategy, realtime=False).selection_for(initial_delay=5)
    assert selection.initial_delay == expected


def test_a_chunk_dropped_as_stale_counts_in_the_latency_percentiles_and_the_json():
    """Latency was recorded only for the chunks kept: the 1.2 s hiccup that got a chunk
    dropped (deploy.max_chunk_age_s 1.0) vanished from p50/p99, and the drop itself from
    per_episode, the summary and --json. Every chunk back is timed now, and the drops and
    chunks are counted there."""
    from shallowpi.commands.deploy_cmd import _summary

    executor, report, _, _ = run("async", latencies=(0.0, 0.0, 0.0, 1.2, 0.0), realtime=True, ticks=90)
    assert report.stale_chunks == 1 and report.ended == "time limit"
    assert len(report.latency_ms) == report.chunks + report.stale_chunks and max(report.latency_ms) >= 1200
    summary = _summary([report], executor, judged=False)
    assert summary["inference_p99_ms"] > 500, summary["inference_p99_ms"]  # the kept ones' alone: a few ms
    assert summary["stale_chunks"] == 1 and summary["chunks"] == report.chunks
    assert {k: summary["per_episode"][0][k] for k in ("chunks", "stale_chunks")} == {
        "chunks": report.chunks, "stale_chunks": 1}
    assert "stale chunks dropped 1" in summary["line"]


def test_every_delay_of_the_episode_is_reported_not_only_the_selectors_window():
    """The episode's delays were the selector's window (its last 10, the estimate's): a
    spike on the second chunk was gone from per_episode and the episode line's "delay N
    ticks max" by the episode's end. Each chunk taken but the first (cold) is reported."""
    from shallowpi.commands.deploy_cmd import _episode_line

    # warm-up twice, the first chunk, then one 0.25 s chunk (8 ticks at 30 Hz), then prompt ones
    _, report, _, _ = run("async", latencies=(0.0, 0.0, 0.0, 0.25, 0.0), ticks=150)
    assert report.chunks > 12 and len(report.delays) == report.chunks - 1  # past the window of 10
    assert report.delays[0] >= 7, report.delays
    assert f"delay {max(report.delays)} ticks max" in _episode_line(0, 1, report)


def test_the_chunk_age_on_the_twins_clock_counts_the_ticks_since_its_observation():
    """On simulated time a 0.1 s chunk arrives ceil(0.1 x 30) = 4 ticks (3 at the least)
    after its request: the dashboard's chunk age counts whole periods from the observation,
    those ticks on arrival. It had subtracted the wall latency from the simulated clock:
    100.2 ms on arrival, a tick and a fraction short."""
    executor = Executor(CountingRobot(), StepBackend(8, (0.1,)),
                        ExecutorConfig(strategy="async", realtime=False, seam_ticks=2.0, warmup_runs=2))
    executor.warm_up("count")
    ages: list[float] = []  # each tick's status, read as the next tick ends
    report = executor.run_episode("count", 60,
                                  on_tick=lambda obs, sent: ages.append(executor.status.chunk_age_ms))
    periods = np.array(ages[20:]) / (1e3 / 30)
    np.testing.assert_allclose(periods, np.round(periods), atol=1e-6)
    assert periods.min() == pytest.approx(min(report.delays)) and min(report.delays) >= 3


def test_a_backend_slower_warm_than_the_chunk_age_limit_is_refused_before_the_robot_moves():
    """A backend whose warm chunk takes longer than deploy.max_chunk_age_s has every chunk
    dropped as too old: the run homed the arm, ran the reset, then faulted after
    deploy.max_inference_s. The warm-up says so, before anything moves; on the twin's
    simulated time (no wall-clock age) nothing is refused."""
    robot = CountingRobot()
    slow = Executor(robot, StepBackend(8, (0.35,)), ExecutorConfig(
        strategy="async", realtime=True, warmup_runs=2, max_chunk_age_s=0.3))
    with pytest.raises(BackendError, match=r"steps takes 0\.\d\d s a chunk warm, over deploy\.max_chunk_age_s 0\.3"):
        slow.warm_up("count")
    assert robot.ticks == 0  # nothing sent
    twin = Executor(CountingRobot(), StepBackend(8, (0.35,)), ExecutorConfig(
        strategy="async", realtime=False, warmup_runs=2, max_chunk_age_s=0.3))
    assert len(twin.warm_up("count")) == 2
