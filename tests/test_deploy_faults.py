"""The executor's faults and the operator's word: what holds with torque on (a policy,
camera or recording fault: the servos are sound), what turns torque off (a servo fault, an
e-stop), and how a stop, a second signal or the dashboard's keys end a run. Lockstep
(simulated time) unless a test says realtime."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from executor_fakes import CountingRobot, FailingBackend, StallingBackend, StepBackend, run
from shallowpi.deploy.executor import Executor
from shallowpi.deploy.settings import ExecutorConfig


def test_a_servo_fault_whose_hold_fails_turns_torque_off():
    robot = CountingRobot(fault_at=15)  # the overloaded servo switched its own torque off
    executor, report, robot, _ = run("rtc", robot=robot, ticks=60)
    assert report.ended == "fault" and executor.safety.faults == 1 and not executor.held_after_fault
    assert robot.calls[-2:] == ["hold", "torque_off"]
    assert executor.status.state.value == "fault" and "overload" in executor.status.message
    assert "robot is safe: torque off (could not hold position: " in executor.status.message


def test_a_bus_fault_the_robot_survives_holding_waits_for_the_operator_with_torque_on():
    """A read that timed out once (a loose cable's moment): the servos confirm holding their
    present pose, so torque stays on, as after a policy fault, until the operator ends it;
    switched off there and then, a humanoid dropped both arms and what they held."""
    from shallowpi.errors import PlatformError

    class OneBadRead(CountingRobot):
        failed = False

        def observe(self):
            if self.ticks == 15 and not self.failed:
                self.failed = True
                raise PlatformError("bus 'arm': no status packet from servo 3 (timeout)")
            return super().observe()

    executor, report, robot, _ = run("rtc", robot=OneBadRead(), ticks=60)
    assert report.ended == "fault" and executor.held_after_fault
    assert robot.calls[-1] == "hold" and "torque_off" not in robot.calls
    assert executor.status.message.endswith("(timeout); robot is safe: holding position")


def test_a_bus_that_did_not_go_limp_leaves_the_sound_buses_holding_as_recording_does():
    """hold_or_release could not confirm one bus's torque off (its adapter gone) while the
    other arm held: the executor switched every bus off, dropping the sound arm its own
    message said was holding."""
    from shallowpi.robots.base import SafeStateError

    class OneBusGone(CountingRobot):
        def hold_or_release(self, fault=None):
            self.calls.append("hold_or_release")
            raise SafeStateError("bus 'left' (could not hold position: no reply) did not switch torque off "
                                 "(not connected); bus 'right' holds position", holding=True)

    executor, report, robot, _ = run("rtc", robot=OneBusGone(fault_at=15), ticks=60)
    assert report.ended == "fault" and executor.held_after_fault and "torque_off" not in robot.calls
    assert "robot NOT confirmed safe: bus 'left'" in executor.status.message
    assert "bus 'right' holds position; cut the servo power" in executor.status.message


def test_a_silent_camera_holds_the_last_command_with_torque_on():
    """The servos are sound when a camera stops (a cable, USB bandwidth): the robot keeps
    what it holds, as after a policy fault, until the operator ends it."""
    from shallowpi.hardware.camera import CameraTimeout

    class CameraGoesSilent(CountingRobot):
        def observe(self):
            if self.ticks >= 15:
                raise CameraTimeout("camera 'front' has sent no frame for 1.02 s (limit 1.00 s)")
            return super().observe()

    executor, report, robot, _ = run("rtc", robot=CameraGoesSilent(), ticks=60)
    assert report.ended == "fault" and executor.safety.faults == 1 and executor.held_after_fault
    assert robot.calls[-1] == "hold last" and "torque_off" not in robot.calls
    assert "camera 'front' has sent no frame" in executor.status.message


def test_a_camera_fault_whose_hold_is_not_confirmed_turns_torque_off_and_says_so():
    """A silent camera leaves the servos sound, so the robot holds its last command; when
    that hold cannot be confirmed the robot is in question after all: it was still reported
    as holding, and the run waited on it with torque on."""
    from shallowpi.hardware.camera import CameraTimeout
    from shallowpi.robots.base import SafeStateError

    class CameraGoesSilentHoldFails(CountingRobot):
        def observe(self):
            if self.ticks >= 15:
                raise CameraTimeout("camera 'front' has sent no frame for 1.02 s (limit 1.00 s)")
            return super().observe()

        def hold(self, goal=None):
            if goal is not None and self.ticks >= 15:
                self.calls.append("hold last")
                raise SafeStateError("robot 'counting': hold not confirmed, servo 2 reads 0, sent 40")
            return super().hold(goal)

    executor, report, robot, _ = run("rtc", robot=CameraGoesSilentHoldFails(), ticks=60)
    assert report.ended == "fault" and not executor.held_after_fault
    assert robot.calls[-2:] == ["hold last", "torque_off"]
    assert "robot NOT confirmed safe: robot 'counting': hold not confirmed" in executor.status.message


def test_a_failed_inference_holds_the_robot_and_reports_the_error():
    robot = CountingRobot()
    executor = Executor(robot, FailingBackend(8, "onnxruntime: out of memory"), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 60)  # a fault of the policy side, reported, not raised
    assert report.ended == "fault" and executor.safety.faults == 1 and report.chunks == 1
    assert robot.calls[-1] == "hold last" and "torque_off" not in robot.calls  # the robot is sound
    assert executor.status.state.value == "fault"
    assert "the backend steps failed: onnxruntime: out of memory" in executor.status.message


@pytest.mark.parametrize("strategy", ["sync", "rtc"])
def test_a_stuck_backend_is_a_fault_that_holds_with_torque_on(strategy):
    """The inference watchdog: a chunk that never comes must not freeze the loop (sync) nor
    leave the robot holding silently forever (async/rtc)."""
    robot = CountingRobot()
    executor = Executor(robot, StallingBackend(8, 3.0), ExecutorConfig(strategy=strategy, realtime=True, warmup_runs=2,
                                                                       max_inference_s=0.3))
    executor.warm_up("count")
    started = time.perf_counter()
    report = executor.run_episode("count", 10_000)
    assert report.ended == "fault" and executor.safety.faults == 1
    assert time.perf_counter() - started < 2.5  # not the stuck call's 3 s (nor the 30 s join)
    assert "torque_off" not in robot.calls and robot.calls[-1] == "hold last"
    assert "is stuck" in executor.status.message and "max_inference_s 0.3" in executor.status.message


def test_after_a_policy_fault_the_robot_stays_powered_until_the_operator_ends_it():
    import threading

    from shallowpi.commands.deploy_holds import hold_until_the_operator_ends

    robot = CountingRobot()
    executor = Executor(robot, FailingBackend(8, "TensorRT: engine failed to run"), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    assert executor.run_episode("count", 60).ended == "fault" and executor.held_after_fault
    published, said = [], []
    threading.Timer(0.3, executor.stop).start()  # the operator, from the dashboard or with Ctrl-C
    started = time.perf_counter()
    hold_until_the_operator_ends(executor, published.append, said.append, period_s=0.02)
    assert time.perf_counter() - started >= 0.25 and len(published) >= 5
    assert "holds its pose with torque on" in said[0] and "torque_off" not in robot.calls
    assert not executor.held_after_fault
    # A servo fault is not the policy's: torque went off there and then, nothing to wait for.
    servo = CountingRobot(fault_at=15)
    executor, _, _, _ = run("rtc", robot=servo, ticks=60)
    assert servo.calls[-1] == "torque_off" and not executor.held_after_fault


def _after_a_policy_fault() -> tuple[CountingRobot, Executor]:
    """A robot and its executor after an episode a backend fault ended: held, torque on,
    waiting for the operator (`held_after_fault`)."""
    robot = CountingRobot()
    executor = Executor(robot, FailingBackend(8, "TensorRT: engine failed to run"),
                        ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    assert executor.run_episode("count", 60).ended == "fault" and executor.held_after_fault
    return robot, executor


def test_with_yes_the_hold_after_a_fault_ends_after_its_limit_as_a_stop():
    """--yes: nobody attends, so the hold after a policy fault lasts deploy.fault_hold_s, then
    ends as the operator's stop would (deploy turns torque off as it disconnects), said in a
    line; a stop sooner still ends it sooner."""
    import threading

    from shallowpi.commands.deploy_holds import hold_until_the_operator_ends

    robot, executor = _after_a_policy_fault()
    said: list[str] = []
    started = time.perf_counter()
    hold_until_the_operator_ends(executor, lambda status: None, said.append, period_s=0.02, limit_s=0.3)
    assert 0.3 <= time.perf_counter() - started < 2.0
    assert executor.stopped and not executor.held_after_fault and executor.safety.faults == 1
    assert "holds its pose with torque on for 0.3 s (--yes: deploy.fault_hold_s), then torque goes off" in said[0]
    assert said[1] == "nobody ended the hold in 0.3 s (--yes: deploy.fault_hold_s): torque goes off, exit 1"
    assert "torque_off" not in robot.calls  # deploy's disconnect turns it off, after the hold

    robot, executor = _after_a_policy_fault()
    said.clear()
    threading.Timer(0.1, executor.stop).start()  # the operator, before the limit
    started = time.perf_counter()
    hold_until_the_operator_ends(executor, lambda status: None, said.append, period_s=0.02, limit_s=30.0)
    assert time.perf_counter() - started < 2.0 and len(said) == 1  # no "nobody ended it" line


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_the_fault_hold_is_a_finite_number_of_seconds(value):
    from shallowpi.errors import ConfigError

    with pytest.raises(ConfigError, match=r"deploy\.fault_hold_s must be"):
        ExecutorConfig(fault_hold_s=value)
    assert ExecutorConfig(fault_hold_s=0).fault_hold_s == 0


def test_a_non_finite_chunk_never_reaches_the_robot():
    class Overflowing(StepBackend):
        def infer(self, obs, inpainting=None):
            chunk = super().infer(obs, inpainting)
            if self.calls >= 4:  # the warm-up's two, one good chunk, then this one
                chunk[3, 1] = np.nan
            return chunk

    robot = CountingRobot()
    executor = Executor(robot, Overflowing(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 60)
    assert report.ended == "fault" and report.chunks == 1
    assert all(np.isfinite(s).all() for s in report.sent) and robot.calls[-1] == "hold last"
    assert "1 non-finite value(s)" in executor.status.message


def test_estop_during_a_synchronous_chunk_cuts_torque_without_waiting_for_it():
    robot = CountingRobot()
    executor = Executor(robot, StallingBackend(8, 2.0, after=2), ExecutorConfig(strategy="sync", realtime=True, warmup_runs=2))
    executor.warm_up("count")
    threading.Timer(0.2, executor.estop).start()
    started = time.perf_counter()
    torque_off_at = []
    original = robot.torque_off
    robot.torque_off = lambda: (torque_off_at.append(time.perf_counter() - started), original())
    report = executor.run_episode("count", 10_000)
    assert report.ended == "e-stop" and robot.calls[-1] == "torque_off"
    assert torque_off_at and torque_off_at[0] < 0.6  # not after the 2 s chunk


@pytest.mark.parametrize("rows", [6, 0])
def test_a_chunk_of_another_length_holds_with_torque_on(rows):
    """H is the first chunk's: the selector indexes every later chunk by it, so a shorter or
    empty one (a graph exported for another horizon, a broken engine) is a policy fault."""
    class Shrinking(StepBackend):
        def infer(self, obs, inpainting=None):
            chunk = super().infer(obs, inpainting)
            return chunk[:rows] if self.calls >= 4 else chunk  # warm-up's two, one good chunk, then this

    robot = CountingRobot()
    executor = Executor(robot, Shrinking(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 60)
    assert report.ended == "fault" and report.chunks == 1 and executor.held_after_fault
    assert robot.calls[-1] == "hold last" and "torque_off" not in robot.calls
    assert f"chunk of shape ({rows}, 2) (expected (8, 2))" in executor.status.message


def test_the_dashboard_is_heard_while_a_synchronous_chunk_is_computed():
    """The dashboard's keys are read when the status goes out (deploy_cmd's publish): the
    wait for a synchronous chunk publishes in its 50 ms slices, so an e-stop pressed then
    cuts torque without waiting for the chunk."""
    robot = CountingRobot()
    pressed = threading.Event()  # the operator's `e`, waiting in the telemetry socket
    started = time.perf_counter()
    torque_off_at: list[float] = []

    def publish(status):
        if pressed.is_set():
            executor.estop()

    executor = Executor(robot, StallingBackend(8, 2.0), ExecutorConfig(strategy="sync", realtime=True, warmup_runs=2),
                        publish=publish)
    executor.warm_up("count")
    original = robot.torque_off
    robot.torque_off = lambda: (torque_off_at.append(time.perf_counter() - started), original())
    threading.Timer(0.3, pressed.set).start()
    report = executor.run_episode("count", 10_000)
    assert report.ended == "e-stop" and robot.calls[-1] == "torque_off"
    assert torque_off_at and torque_off_at[0] < 1.0  # not after the 2 s chunk


def test_a_recording_that_fails_ends_the_episode_holding_with_torque_on():
    from shallowpi.record.writer import WriterError

    def on_tick(obs, sent):
        if obs.time_s >= 10 / 30:
            raise WriterError("the disk is behind: the writer's queue of 256 frames stayed full for 0.25 s")

    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    executor.warm_up("count")
    report = executor.run_episode("count", 60, on_tick=on_tick)
    assert report.ended == "fault" and report.ticks == 11 and executor.held_after_fault  # its 11th tick was sent
    assert robot.calls[-1] == "hold last" and "torque_off" not in robot.calls
    assert "the disk is behind" in executor.status.message


def test_a_backend_still_computing_after_the_episode_is_not_used_again():
    """A chunk in flight when the episode ends and not back max_inference_s later: the next
    episode's chunks would run beside it on the same backend, so the run ends as a fault."""
    robot = CountingRobot()
    executor = Executor(robot, StallingBackend(8, 3.0), ExecutorConfig(strategy="async", realtime=True, warmup_runs=2,
                                                                       max_inference_s=1.0))
    executor.warm_up("count")
    started = time.perf_counter()
    report = executor.run_episode("count", 12)  # 0.4 s: ends before the watchdog's 1 s
    assert time.perf_counter() - started < 2.5
    assert report.ended == "fault" and executor.stopped and executor.held_after_fault
    assert robot.calls[-1] == "hold last" and "torque_off" not in robot.calls
    assert "still computing a chunk 1 s after the episode ended" in executor.status.message


def test_a_servo_fault_while_holding_after_a_policy_fault_is_handled_as_in_a_tick():
    """A servo overloading in the hold after a policy fault was e-stopped: every bus limp (a
    humanoid's sound arm dropped what it held), the run shown as stopped by the operator,
    the fault uncounted. It is a fault as in a tick: counted, FAULT shown, what confirms
    holding holds (Robot.hold_or_release) and waits for the operator's stop; a robot left
    holding nothing is limp, and the wait ends there."""
    from shallowpi.commands.deploy_holds import hold_until_the_operator_ends
    from shallowpi.telemetry.executor_status import ExecutorState

    def policy_fault() -> tuple[Executor, CountingRobot]:
        robot, executor = _after_a_policy_fault()
        robot.alarm = "servo 3 on bus arm reports an overload"
        return executor, robot

    executor, robot = policy_fault()

    def operator(status) -> None:  # stops once the overload is shown
        if executor.safety.faults == 2:
            executor.stop()

    started = time.perf_counter()
    hold_until_the_operator_ends(executor, operator, [].append, period_s=0.02)
    assert time.perf_counter() - started < 2.5  # read once a second, as observe() reads
    assert not executor.estopped and "torque_off" not in robot.calls and robot.calls[-1] == "hold"
    assert executor.status.state is ExecutorState.FAULT and "overload" in executor.status.message
    executor, robot = policy_fault()
    robot.fault_at = robot.ticks  # the overloaded servo let go: its hold is not confirmed
    threading.Timer(5.0, executor.stop).start()  # an operator, should the wait go on
    started = time.perf_counter()
    hold_until_the_operator_ends(executor, lambda status: None, [].append, period_s=0.02)
    assert time.perf_counter() - started < 2.5 and not executor.held_after_fault  # nothing holds: no wait
    assert executor.safety.faults == 2 and not executor.estopped and robot.calls[-1] == "torque_off"


def test_a_servo_fault_while_the_robot_waits_for_the_operator_is_a_fault_not_an_estop(monkeypatch):
    """Waiting for Enter before the first move, and holding after the last episode until
    released, a servo alarm was handled with estop(): every bus limp, the run shown as
    e-stopped by the operator, the fault uncounted (exit 0, --json faults 0). It is handled
    as in a tick, as the reset's wait handles it: counted, FAULT shown, what confirms
    holding holds for the operator (held_after_fault), and the wait ends."""
    import os
    import pty
    import sys

    from shallowpi.commands.deploy_holds import hold_until_released, wait_for_go
    from shallowpi.telemetry.executor_status import ExecutorState

    main, side = pty.openpty()  # deploy's terminal: nobody presses Enter
    monkeypatch.setattr(sys, "stdin", os.fdopen(side, "r"))
    try:
        for waiting in ("go", "released"):
            robot = CountingRobot()
            executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
            executor.warm_up("count")
            if waiting == "go":
                robot.alarm = "servo 3 on bus arm reports an overload"
                started = time.perf_counter()
                wait_for_go(executor, lambda status: None, episodes=1, period_s=0.02)
            else:
                executor.run_episode("count", 10)
                executor.done(1)
                robot.alarm = "servo 3 on bus arm reports an overload"
                started = time.perf_counter()
                hold_until_released(executor, lambda status: None, keys=True, period_s=0.02)
            assert time.perf_counter() - started < 2.5, waiting
            assert executor.safety.faults == 1 and executor.stopped and not executor.estopped, waiting
            assert executor.status.state is ExecutorState.FAULT and "overload" in executor.status.message
            assert executor.held_after_fault and "torque_off" not in robot.calls, waiting
    finally:
        os.close(main)


def test_a_second_signal_leaves_at_once_unless_the_robot_holds_after_a_fault():
    """Ctrl-C stops at the next tick; pressed again while the run is blocked (a warm-up, an
    engine build) it raises KeyboardInterrupt, torque going off on the way out; once torque
    is going off, a signal only says to wait (raised inside the torque-off writes it left
    buses on). After a fault the first Ctrl-C is the operator's word that ends the hold,
    never an interrupt."""
    import os
    import signal
    import threading

    from shallowpi.commands.deploy_cmd import _restore_signals, _stop_on_signals

    executor = Executor(CountingRobot(), StepBackend(8), ExecutorConfig(strategy="async", realtime=False))
    putting_away = threading.Event()
    previous = _stop_on_signals(executor, putting_away)
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)  # the handler runs in the main thread between bytecodes
        assert executor.stopped
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        putting_away.set()
        os.kill(os.getpid(), signal.SIGINT)  # no interrupt now
        time.sleep(0.05)
    finally:
        _restore_signals(previous)
    faulted = Executor(CountingRobot(), FailingBackend(8, "engine failed"),
                       ExecutorConfig(strategy="async", realtime=False, warmup_runs=2))
    faulted.warm_up("count")
    assert faulted.run_episode("count", 60).ended == "fault" and faulted.stopped and faulted.held_after_fault
    previous = _stop_on_signals(faulted, threading.Event())
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert not faulted.held_after_fault  # the hold ended, no interrupt
    finally:
        _restore_signals(previous)


def test_a_fault_after_the_operator_asked_to_stop_does_not_hold_for_another_stop():
    from shallowpi.deploy.executor import EpisodeReport, InferenceFault

    executor = Executor(CountingRobot(), StepBackend(8), ExecutorConfig(strategy="async", realtime=False))
    executor.stop()  # Ctrl-C, and in the same tick the backend fails
    executor._fault(InferenceFault("the backend steps failed"), EpisodeReport(0, None), np.zeros(2), torque_off=False)
    assert executor.stopped and not executor.held_after_fault


def test_during_the_warm_up_an_estop_cuts_torque_at_once_and_a_servo_alarm_is_read():
    """The warm-up (a first TensorRT run may build its engine for minutes) ran on the
    caller's thread: nothing published, so a monitor's e-stop waited for its end with the
    robot powered, and no servo alarm was read meanwhile."""
    import time

    from shallowpi.errors import PlatformError

    class Timed(CountingRobot):
        def torque_off(self) -> None:
            super().torque_off()
            self.off_at = time.monotonic()

    robot = Timed()
    executor: Executor | None = None

    def publish(status) -> None:  # a monitor's e-stop, read as the status goes out
        if status.state.value == "warming" and executor is not None and not executor.estopped:
            executor.estop()

    executor = Executor(robot, StallingBackend(8, stall_s=1.0, after=0), ExecutorConfig(warmup_runs=2, realtime=True),
                        publish=publish)
    began = time.monotonic()
    executor.warm_up("count")  # two chunks of 1 s
    assert time.monotonic() - began >= 1.9 and robot.off_at - began < 0.5 and not robot.torque
    assert robot.calls.count("torque_off") == 1

    robot = CountingRobot()
    robot.alarm = "servo 3 on bus arm reports overheating"
    executor = Executor(robot, StallingBackend(8, stall_s=2.0, after=0), ExecutorConfig(warmup_runs=2, realtime=True))
    began = time.monotonic()
    with pytest.raises(PlatformError, match="overheating"):
        executor.warm_up("count")
    assert time.monotonic() - began < 1.6  # read within a second, not after the 4 s warm-up
