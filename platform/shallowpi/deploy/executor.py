"""The executor: a fixed-rate control loop that sends a policy's actions, with inference
beside it and a watchdog in front of the robot.

Per tick (period 1 / fps):

    observe                       -> joint state + frames; a fault: hold, torque off, stop
    chunks that arrived           -> ActionSelector.deliver (takes over at the count of
                                     actions sent since its observation: measured, never
                                     an index from a latency estimate)
    a chunk due and frames fresh  -> request it from this observation (rtc: with the
                                     current chunk's committed actions to inpaint)
    the action for this tick      -> seam bound -> Robot.act (clamps: limits, velocity)
    none (queue dry, stale frame) -> keep sending the last command (the servos' goal, not
                                     the measured pose: a closed gripper keeps its squeeze)

Strategies (`ExecutorConfig.strategy`):
    sync      the reference: the loop waits for each chunk (the robot stands still while
              it is computed), then executes K of its actions
    async     replan every K actions on the inference thread; the new chunk takes over
              where the robot has got to
    ensemble  a chunk every K actions, overlapping predictions averaged (ACT)
    rtc       real-time chunking: async, and the next chunk is made to agree with the
              actions that run while it is computed, and to fade from the current chunk
              into its own plan over the rest of the overlap (`rtc_mask`: soft, RTC's
              weights; hard, the frozen prefix alone). Inpainting, not guidance: no
              backend here has gradients

The faults of lerobot 0.6.1's real-time chunking, and what prevents each here:
  - it indexes the new chunk by its latency estimate: skipped actions, or a jump on the
    first chunk -> the selector indexes by the actions actually consumed, and the first
    chunk (which arrives while the robot holds) starts at its index 0
  - it zero-pads the frozen prefix in normalised space, so the seam decodes to the dataset
    mean -> the inpainting target is the current chunk in robot units, padded with its
    last pose, normalised by the backend with the bundle's statistics
  - cold-start latency inflates its delay estimate -> the backend is warmed up before the
    robot moves, the first chunk's delay is not counted, and the initial estimate is the
    warmed-up latency (measured)

Safety: every command goes through Robot.act (limits and velocity); at a seam (the first
action of a newly arrived chunk) a jump from the last command above `seam_ticks` ticks of
a joint's top speed (max_velocity / fps: one unit for radians, metres and gripper
openings) is counted, and the commands ramp to the new chunk at top speed until it is
within a tick (a chunk arriving during that ramp moves its goal, and counts as a jump
only by how far it departs from the plan being ramped to); at the episode's first seam (the robot at rest on its measured pose, the
policy's first action far from it) the robot closes on the policy's actions at
`start_speed` instead, along a straight line in joint space (robots/catch_up.py), as the
homing before it and `platform record`'s catch-up move; the watchdog holds when no
action is due or the stalest camera's frame is older than `max_frame_age_s` (stale
chunks are dropped: it resumes on a chunk computed from a fresh frame); a servo fault
holds, then turns torque off; a camera fault (silent past its timeout, lost) holds with
torque on, the servos being sound; the inference watchdog
(a chunk not back `max_inference_s` after its request, or still computing that long after
the episode's end), a backend that raises, a chunk that is not finite or not [H, joints]
(H the first chunk's) and an `on_tick` that raises (a recording whose disk fails or falls
behind) hold and end the episode as a fault with torque on (the robot is sound);
`stop()` (SIGINT, SIGTERM) ends the loop at the next tick and `estop()` turns torque off
at the next tick (while a synchronous chunk is computed, within 50 ms), before waiting on
the inference thread.

What is not the episode loop (stop and e-stop, the status, what a fault does to the
robot, the warm-up and the homing before an episode) is `ExecutorControl`, its base class
(executor_control.py).

Robot-side: imports without torch.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from shallowpi.deploy.backends.base import Backend, Inpainting
from shallowpi.deploy.executor_control import (
    EpisodeReport,
    ExecutorControl,
    InferenceFault,
    policy_input,
)
from shallowpi.deploy.inference import Done, LockstepInference, ThreadedInference
from shallowpi.deploy.settings import ExecutorConfig, Strategy
from shallowpi.errors import PlatformError
from shallowpi.policy.action_selection import ActionSelector
from shallowpi.record.clock import SimulatedClock, TickClock, prompt_gil_handover
from shallowpi.robots.base import Robot
from shallowpi.robots.catch_up import CatchUp
from shallowpi.robots.observation import Observation
from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus

if TYPE_CHECKING:
    from numcodecs.abc import Codec

__all__ = ["EpisodeReport", "Executor", "InferenceFault", "policy_input"]

log = logging.getLogger(__name__)

# The fraction of top speed at which an episode's start closes on a far first action when
# deploy.start_speed is null: record.catch_up_speed's default (configs/config.yaml), the
# platform's speed for a robot closing on a far goal before its ordinary control begins.
# Null start_speed turns off the homing to the demonstrations' start pose (each episode
# starts where the last one ended); it asks for no top-speed lunge at the first action,
# which is then as far away as an unhomed robot's pose can be from the policy's plan.
OPENING_SPEED = 0.25


def _arrived(seam: str | bool) -> str:
    """The seam state once a chunk is delivered: "moved" while a ramp to the last one is still
    limiting the commands (it goes on, to the new chunk), else "new"."""
    return "moved" if seam in ("limiting", "moved") else "new"


def observed_at(clock: TickClock, selector: ActionSelector, done: Done) -> float:
    """The time on `clock` (s) of the observation a delivered chunk was computed from, which
    the dashboard's chunk age counts from. On the twin's simulated clock the chunk came the
    whole ticks since its request later (lockstep: ceil(latency x fps)); on a wall clock, its
    measured latency earlier. (Now minus the wall latency on the simulated clock had the age
    up to a period after delivery; now, under sync on a robot, left out the latency.)"""
    if clock.simulated:
        return clock.now() - (selector.tick - done.request.tick) * clock.period
    return clock.now() - done.latency_s

class Executor(ExecutorControl):
    """Runs a backend on a connected robot. `fps` defaults to the robot's spec.

    publish      called with the live ExecutorStatus every tick (telemetry)
    start_state  the pose [J] the demonstrations started from (the checkpoint's), which
                 `go_to_start()` takes the robot to before each episode's reset, at
                 cfg.start_speed (the robot's, not the twin's: its episodes start at home)
    image_codec  the training store's frame codec, applied before the policy (the twin, whose
                 frames are rendered at the store's size, where JPEG q90 changes the policy's
                 input by 0.023 on average at 64x64; a robot's 640x480 frames change 14x less
                 at a 64-pixel input (0.0016), 3.6x less at 224 (0.0027 against a 224x224
                 render's 0.0096), so its command passes none: BENCHMARKS.md)
    """

    def __init__(self, robot: Robot, backend: Backend, cfg: ExecutorConfig, fps: float | None = None,
                 publish: Callable[[ExecutorStatus], None] | None = None, image_codec: Codec | None = None,
                 start_state: np.ndarray | None = None) -> None:
        super().__init__(robot, backend, cfg, fps, publish, image_codec, start_state)
        # The episodes' clock (`_run_episode`) is the twin's simulated time unless realtime:
        # its "period" is then the wall time a tick took, the chunks computed inside it
        # included, and the dashboards and lines say so rather than show it as a loop period.
        self.status.loop.simulated = not cfg.realtime
        self._requested_at = 0.0  # time.perf_counter() of the last chunk request (inference watchdog)
        # Since when the robot has waited for a chunk it may act on: the first request no
        # accepted chunk answered yet (a backend whose chunks all come back too old).
        self._unanswered_since: float | None = None
        self._latencies: deque[float] = deque(maxlen=120)
        self._opening_line = ""  # the episode's opening approach, as the status message last said it
        self._opening_told = 0  # the episode's tick it was said at

    # -- one episode

    def run_episode(self, task: str, max_ticks: int, seed: int = 0,
                    success: Callable[[], bool] | None = None, stop_after_success_ticks: int | None = None,
                    on_tick: Callable[[Observation, np.ndarray], None] | None = None) -> EpisodeReport:
        """Run until `max_ticks`, `success()` has held `stop_after_success_ticks` ticks, stop,
        e-stop or a fault. `on_tick(observation, sent)` sees every tick (recording)."""
        with prompt_gil_handover(self.cfg.realtime):  # the inference thread runs Python too
            return self._run_episode(task, max_ticks, seed, success, stop_after_success_ticks, on_tick)

    def _run_episode(self, task: str, max_ticks: int, seed: int, success: Callable[[], bool] | None,
                     stop_after_success_ticks: int | None,
                     on_tick: Callable[[Observation, np.ndarray], None] | None) -> EpisodeReport:
        cfg, robot = self.cfg, self.robot
        self.backend.reset(seed)
        report = EpisodeReport(seed, None)
        selector = ActionSelector(cfg.selection_for(self.initial_delay))
        runner: Any = None
        clock = TickClock(self.fps) if cfg.realtime else SimulatedClock(self.fps)
        self._link_start, self._link_warned = robot.link_counts(), False
        self._opening_line = ""
        self.status.task = task
        self.status.message, self.status.reset_left_s = "", 0.0  # the warm-up's or the reset's is over
        held = self.hold_measured(report)  # None: a fault, handled; the episode runs no tick
        self._unanswered_since = None
        holding = True  # nothing to send until the first chunk (not a watchdog hold)
        last = held
        # "new": a chunk just arrived; "limiting": still ramping to it; "moved": a chunk arrived
        # during that ramp (the ramp goes on, to it)
        seam: str | bool = False
        opening: CatchUp | None = None  # the episode's start, closing slowly on the policy's actions
        succeeded, chunk_time = 0, None
        chosen: np.ndarray | None = None  # the last action the selection chose
        stuck = False  # the inference thread still in the backend after the episode
        try:
            runner = (ThreadedInference(self.backend, cfg.injected_delay_s) if cfg.realtime
                      else LockstepInference(self.backend, self.fps, cfg.injected_delay_s))
            # The loop starts now: the hold and the runner's start before it are no period
            # of it (every period counts in the report's p99, not only a window's).
            clock.restart()
            for _ in range(max_ticks if held is not None else 0):
                if self._stop.is_set():
                    report.ended = "e-stop" if self._estop.is_set() else "stopped"
                    break
                clock.wait()
                if (obs := self._observe(report, last)) is None:
                    break
                stale = obs.oldest_frame_s() > cfg.max_frame_age_s
                # Deliver before asking: a chunk arriving on the tick the next one is due
                # must be in place when the selector decides.
                try:
                    for done in runner.poll(selector.tick):
                        if self._deliver(selector, done, report):
                            seam, chunk_time = _arrived(seam), observed_at(clock, selector, done)
                    self._check_inference_time(selector)
                    if not stale and selector.wants_chunk():
                        for done in self._request(selector, runner, obs, task, report):  # sync: here and now
                            if self._deliver(selector, done, report):
                                seam, chunk_time = _arrived(seam), observed_at(clock, selector, done)
                except InferenceFault as exc:  # the robot is sound: hold it, keep torque on
                    self._fault(exc, report, last, torque_off=False)
                    break
                if self._stop.is_set():  # stopped, or a servo faulted, while a sync chunk was computed
                    if report.ended != "fault":
                        report.ended = "e-stop" if self._estop.is_set() else "stopped"
                    break
                if stale:
                    self.safety.stale_frames += 1
                    report.stale_frames += 1
                    if selector.queue_depth or selector.pending:  # chunks from before: drop them
                        selector = ActionSelector(cfg.selection_for(selector.delay_estimate))
                        self._unanswered_since = None  # the camera's wait, not the backend's
                action = None if stale else selector.next_action()
                planned = chosen  # the plan the robot was following (a ramp's goal)
                if action is not None:
                    if chosen is not None:
                        report.max_step = max(report.max_step, float(self._ticks(action, chosen).max()))
                    chosen = np.asarray(action, np.float32)
                try:
                    if action is None:
                        if not holding:
                            # The last command, not the measured pose (robot.hold()): a gripper
                            # closed on an object stops short of its goal and squeezes by the
                            # gap, a joint under load sags below its goal; re-aimed at where
                            # they are, the grip would loosen and the arm settle lower.
                            held, holding = last, True
                            report.holds += 1
                            self.safety.holds += 1
                        report.hold_ticks += 1
                        sent = robot.act(held)
                    else:
                        action = np.asarray(action, np.float32)
                        if seam == "new" and not report.steps:  # the episode's first seam, from rest
                            opening = self._opening(action, last, report)
                            seam = False
                        if opening is not None:
                            # Chunks that arrive meanwhile are planned from where the robot got to:
                            # their seams are this approach's gap, not jumps of their own (a top-
                            # speed ramp on each would undo the slow start, and count it again).
                            action, seam = self._approach(opening, action, last, report.ticks), False
                            opening = None if opening.done else opening
                        elif seam:  # limit every command until the new chunk is within reach
                            action, limited = self._bound_seam(action, last, report, str(seam), planned)
                            seam = "limiting" if limited else False
                        sent = robot.act(action)
                        report.steps += 1
                        clamped = np.flatnonzero(np.abs(sent - action) > cfg.clamp_tolerance)
                        if clamped.size:  # which joints: a limit the policy presses on, or a seam
                            report.clamps += 1
                            self.safety.clamps += 1
                            for i in clamped:
                                name = self.status.joint_names[i]
                                report.clamped_joints[name] = report.clamped_joints.get(name, 0) + 1
                        holding = False
                except PlatformError as exc:
                    self._fault(exc, report, last)
                    break
                last = np.asarray(sent, np.float32)
                clock.command_sent()  # a late command (a sync chunk, a slow frame): the next one a period on
                report.sent.append(last)
                report.ticks += 1
                if on_tick is not None:
                    try:
                        on_tick(obs, last)
                    except PlatformError as exc:  # the recording's (a failed or lagging disk): the robot is sound
                        self._fault(exc, report, last, torque_off=False)
                        break
                self._tick_status(obs, last, selector, clock, holding, chunk_time)
                if success is not None and stop_after_success_ticks:
                    succeeded = succeeded + 1 if success() else 0
                    if succeeded >= stop_after_success_ticks:
                        report.ended = "success held"
                        break
        except BaseException as exc:  # a bug: the last command is where the robot stays
            self._set(ExecutorState.FAULT, f"stopped by {type(exc).__name__}: {exc}")
            try:
                robot.hold(last)
            except PlatformError as hold_exc:
                log.error("hold failed: %s", hold_exc)
            raise
        finally:
            if self._estop.is_set():  # before anything that may wait on a busy inference thread
                self._torque_off()
            if runner is not None:  # stopped (a fault, an e-stop): do not wait long on a stuck backend
                stopping = self._stop.is_set()
                ended = runner.close(join_s=0.2 if stopping else cfg.max_inference_s,
                                     on_wait=lambda: self._still_waiting(report))
                stuck = not ended and not self._stop.is_set()
                if self._estop.is_set() and not stopping:  # e-stopped during that wait
                    self._torque_off()
                    report.ended = "e-stop"
        if stuck:  # its next chunk would run beside the stuck one, on the same backend
            self._fault(InferenceFault(f"the backend {self.backend.name} is still computing a chunk "
                                       f"{cfg.max_inference_s:g} s after the episode ended (deploy.max_inference_s): "
                                       "no further episode starts on it"),
                        report, last, torque_off=False)
        if not self._estop.is_set() and report.ended != "fault":
            try:
                robot.hold(last)  # keeps a grip's squeeze (Robot.hold)
            except PlatformError as exc:  # as in a tick: what can hold holds, bus by bus
                self._fault(exc, report, last)
        if report.ended in ("stopped", "e-stop"):  # the operator's word: said as the final state
            self._set_stopped()
        # A fault ends an episode as a failure whatever the scene shows (a diverged twin was
        # reset to its load poses by MuJoCo).
        report.success = None if success is None else report.ended != "fault" and success()
        # Every period of the episode, as its overruns: the dashboard's window of the last
        # 600 had forgotten a slow start by the end of a long episode.
        report.period_p50_ms, report.period_p99_ms = clock.take_percentiles_ms()
        report.overruns = clock.overruns
        link = robot.link_counts().since(self._link_start)
        report.link_exchanges, report.link_failed_tries = link.exchanges, link.failed_tries
        return report

    def _request(self, selector: ActionSelector, runner: Any, obs: Observation, task: str,
                 report: EpisodeReport) -> list[Done]:
        request = selector.request()
        guidance = request.guidance
        inpainting = None
        if guidance is not None:
            inpainting = (Inpainting(guidance.target, guidance.weights) if self.cfg.rtc_mask == "soft"
                          else Inpainting.hard_prefix(guidance.target, guidance.frozen))
        runner.submit(request, policy_input(obs, task, self.image_codec), inpainting)
        self._requested_at = time.perf_counter()
        if self._unanswered_since is None:
            self._unanswered_since = self._requested_at
        if self.cfg.strategy is not Strategy.SYNC:
            return []
        # Wait in slices: a stop or an e-stop is obeyed while the chunk is computed, the
        # servos' alarms are read (the robot holds, unobserved, for as long as it takes), and
        # a chunk that never comes is a fault, not a frozen loop.
        while not self._stop.is_set():
            done = runner.wait(timeout_s=0.05)
            if done:
                return done
            self._check_inference_time(selector)
            self._publish(self.status)  # the dashboard's stop and e-stop are read as the status goes out
            self.watch_faults(report)
        return []

    def _still_waiting(self, report: EpisodeReport) -> bool:
        """Between the slices of a wait on the inference thread at an episode's end: publish
        (the dashboard's commands are read then) and read the servos' alarms (a fault is
        the episode's); False once stopped, to wait no longer."""
        self._publish(self.status)
        self.watch_faults(report)
        return not self._stop.is_set()

    def _check_inference_time(self, selector: ActionSelector) -> None:
        """InferenceFault when the pending chunk is overdue by the wall clock, or no chunk
        fit to act on has come for as long: each came back older than max_chunk_age_s and
        was dropped (realtime only; a request each time kept the first test from firing)."""
        if not self.cfg.realtime:
            return
        now = time.perf_counter()
        if selector.pending is not None and now - self._requested_at > self.cfg.max_inference_s:
            raise InferenceFault(f"no chunk {now - self._requested_at:.1f} s after its request (deploy.max_inference_s "
                                 f"{self.cfg.max_inference_s:g}): the backend {self.backend.name} is stuck")
        if self._unanswered_since is not None and now - self._unanswered_since > self.cfg.max_inference_s:
            raise InferenceFault(
                f"no chunk fit to act on for {now - self._unanswered_since:.1f} s (deploy.max_inference_s "
                f"{self.cfg.max_inference_s:g}): every one came back over deploy.max_chunk_age_s "
                f"{self.cfg.max_chunk_age_s:g} s after it was asked for; the backend {self.backend.name} is too slow")

    def _deliver(self, selector: ActionSelector, done: Done, report: EpisodeReport) -> bool:
        """Hand a finished chunk to the selector; True when it was taken (False: asked before
        the watchdog dropped the chunks, or back too old). Every chunk that comes back is
        timed, the ones dropped too: a latency p99 of the kept ones alone would hide the
        hiccups that got them dropped."""
        if done.error is None:
            report.latency_ms.append(1e3 * done.latency_s)
            self._latencies.append(1e3 * done.latency_s)
        if done.request is not selector.pending:  # asked before the watchdog dropped the chunks
            return False
        if done.error is not None:  # the backend's (onnxruntime, TensorRT, torch): the robot is sound
            raise InferenceFault(f"the backend {self.backend.name} failed: {done.error}") from done.error
        chunk = np.asarray(done.chunk)
        expected = selector.chunk_len  # H is the first chunk's: the selector indexes every chunk by it
        if (chunk.ndim != 2 or chunk.shape[1] != len(self.status.joint_names) or len(chunk) < 1
                or (expected is not None and len(chunk) != expected) or not np.isfinite(chunk).all()):
            # Never to the robot: a NaN (an fp16 overflow, a broken engine) or a malformed chunk
            shape = f"({expected or 'H >= 1'}, {len(self.status.joint_names)})"
            raise InferenceFault(f"the backend {self.backend.name} returned a chunk of shape {chunk.shape} (expected "
                                 f"{shape}) with {int((~np.isfinite(chunk)).sum())} non-finite value(s); holding")
        if self.cfg.realtime and done.latency_s > self.cfg.max_chunk_age_s:
            # Planned from a picture this old: ask again from the next observation, the robot
            # holding meanwhile (the chunks before it are older still: dropped too), rather
            # than act on a scene that may have changed.
            selector.discard(done.request)
            report.stale_chunks += 1
            log.warning("a chunk came back %.2f s after it was asked for (deploy.max_chunk_age_s %g): dropped, "
                        "asked again", done.latency_s, self.cfg.max_chunk_age_s)
            return False
        selector.deliver(done.request, done.chunk)
        self._unanswered_since = None
        if report.chunks:  # as the selector's estimate, the first (cold) chunk's is not counted
            # The episode's every delay: the selector keeps only its window's (delay_window),
            # where an early spike no longer shows at the episode's end.
            report.delays.append(selector.tick - done.request.tick)
        report.chunks += 1
        return True

    def _ticks(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Each joint's change from b to a, in ticks of its top speed, [J]."""
        return np.abs(np.asarray(a) - np.asarray(b)) / self.tick_step

    def _bound_seam(self, action: np.ndarray, last: np.ndarray, report: EpisodeReport, seam: str,
                    planned: np.ndarray | None) -> tuple[np.ndarray, bool]:
        """A jump from the last command above `seam_ticks` ticks of top speed: counted at
        the seam's first action (`seam` "new"), and each command goes one tick at top speed
        towards the chunk (what Robot.act allows, so the ramp is the seam's, not a clamp the
        policy pressed on) until the chunk is within one tick ("limiting"). A chunk that
        arrives during the ramp ("moved") moves its goal: the gap the ramp has not closed yet
        is the jump already counted (under rtc the new chunk is inpainted to agree with the
        old plan, not with the ramped robot), so it counts only where it departs both from
        the action `planned` before it and from the last command (a chunk computed from the
        robot's state, under sync or async, or after a stale frame's hold, starts where the
        robot is). (command, limited?)."""
        if seam == "new":
            action, tripped = self._seam_jump(action, last, report, "ramping to the new chunk")
            if not tripped:
                return action, False
        else:
            if seam == "moved" and planned is not None:
                self._seam_jump(action, last, report, "the ramp goes on to the new chunk", also=planned)
            action = np.clip(action, self.lower, self.upper)
            if float(self._ticks(action, last).max()) <= 1.0:
                return action, False
        return last + np.clip(action - last, -self.tick_step, self.tick_step), True

    def _seam_jump(self, action: np.ndarray, last: np.ndarray, report: EpisodeReport,
                   then: str, also: np.ndarray | None = None) -> tuple[np.ndarray, bool]:
        """A seam's first action against the last command (and `also`: each joint's jump the
        smaller of the two): its jump in ticks of top speed kept in `max_seam_jump`, and
        above `seam_ticks` counted (`seam_trips`) and logged, the joints named, with what
        `then` happens; (the action clipped to the robot's limits, tripped?)."""
        # Against what the robot will take: a policy pressing past a limit is a clamp, not a seam.
        action = np.clip(action, self.lower, self.upper)
        ticks = self._ticks(action, last)
        if also is not None:
            ticks = np.minimum(ticks, self._ticks(action, also))
        jump = float(ticks.max())
        report.max_seam_jump = max(report.max_seam_jump, jump)
        if jump <= self.cfg.seam_ticks:
            return action, False
        report.seam_trips += 1
        self.safety.seam_trips += 1
        joints = ", ".join(f"{self.status.joint_names[i]} {ticks[i]:.1f}"
                           for i in np.flatnonzero(ticks > self.cfg.seam_ticks))
        log.warning("seam jump above %.1f ticks at top speed (%s): %s", self.cfg.seam_ticks, joints, then)
        return action, True

    def _opening(self, action: np.ndarray, last: np.ndarray, report: EpisodeReport) -> CatchUp | None:
        """The episode's first seam: the robot holds its measured pose (`last`) and the policy's
        first `action` is more than `seam_ticks` away (no start pose recorded or homed to, a
        policy that does not begin where its demonstrations did): counted as a seam, and a
        CatchUp that closes on the policy's actions at deploy.start_speed of top speed
        (OPENING_SPEED with start_speed null), as the homing before the episode moves,
        rather than at the top speed of the ramps between chunks. None when it is within
        reach."""
        speed = OPENING_SPEED if self.cfg.start_speed is None else float(self.cfg.start_speed)
        _, tripped = self._seam_jump(action, last, report,
                                     f"closing on the policy's first action at {speed:.0%} of top speed")
        if not tripped:
            return None
        # In ticks of Robot.act's own bound (tick_step, at the robot's rate), as the seam ramps:
        # a step of the approach is never a clamp, whatever the loop's rate.
        return CatchUp(self.status.joint_names, self.tick_step, self.lower, self.upper, speed, self.fps,
                       goal="the policy's first action", then="the policy drives")

    def _approach(self, opening: CatchUp, action: np.ndarray, last: np.ndarray, tick: int) -> np.ndarray:
        """This tick's command (episode tick `tick`) of the episode's opening approach: a slow
        step from the last one toward `action` (the chunk's, which goes on advancing: a policy
        whose actions never come within a tick of the robot's is followed at this speed
        throughout), or `action` itself once every joint is within a tick of it. Its progress
        is the status message, as homing's."""
        command = np.asarray(opening(action, last), np.float32)
        if opening.done:
            if self.status.message == self._opening_line:  # not a message said since (a link warning)
                self.status.message = ""
        elif tick >= self._opening_told + self.fps or not self._opening_line:
            # At most once a second (a line printer shows each change): each new chunk moves the
            # goal, and the seconds left with it.
            self.status.message = self._opening_line = opening.describe()
            self._opening_told = tick
        return command

    # -- waits between episodes

    def watched_wait(self, what: str, limit_s: float | None = None) -> Callable[[], bool]:
        """The `give_up` of a wait between episodes that may last without end, the robot
        holding its pose with torque on: `what` it waits for, as the dashboard says it (room
        in `deploy --record`'s queue: BackgroundWriter's waits behind a disk that stalls, a
        hung USB drive or NFS mount, ask it every 0.1 s). Each call does what the loop's own
        waits do (a sync chunk's, the inference thread's at an episode's end): publishes the
        status, so the dashboard shows the wait and its commands are obeyed, turns torque off
        at once after an e-stop, and reads the servos' alarms once a second (`watch_faults`).

        True, to give the wait up: after an e-stop, or once the run was stopped since the
        wait began (a stop from the dashboard or a signal, a fault, the operator ending a
        hold after a fault). A run stopped before it began (an episode a stop or a fault
        ended, whose recording is still to be kept) waits on for the disk: the e-stop ends
        that, a signal leaves at once, and `limit_s` (--yes: deploy.fault_hold_s, nobody
        attends) bounds a hold after a fault, ended then as the operator's stop would."""
        began = time.monotonic()
        stopped, held, faults = self.stopped, self.held_after_fault, self.safety.faults

        def give_up() -> bool:
            status = self.status
            if status.state is ExecutorState.RUNNING:  # the episode is over: the robot holds
                status.state = ExecutorState.HOLD
            if status.state is not ExecutorState.FAULT:  # a fault's own line stays (it may be the disk's)
                status.message = f"the disk is behind: waiting for {what}; the robot holds, an e-stop gives it up"
            self._publish(status)  # the dashboard's commands are obeyed as it goes out
            if self._estop.is_set():
                self._torque_off()  # now: the wait may never end, and the run is over
                if status.state is ExecutorState.FAULT:  # the fault stays the run's last word (done())
                    status.estopped = True
                    self._publish(status)
                else:
                    self._set_stopped()
                return True
            self.watch_faults()
            if (held and limit_s is not None and self.held_after_fault
                    and time.monotonic() - began >= limit_s):
                log.warning("nobody ended the hold in %g s (--yes: deploy.fault_hold_s) while waiting for %s: "
                            "torque goes off", limit_s, what)
                self.stop()  # the hold's end, as the operator's stop would (hold_until_the_operator_ends)
            return ((self.stopped and not stopped) or (held and not self.held_after_fault)
                    or self.safety.faults > faults)

        return give_up

    # -- faults and safe states

    def _tick_status(self, obs: Observation, sent: np.ndarray, selector: ActionSelector,
                     clock: TickClock, holding: bool, chunk_time: float | None) -> None:
        s = self.status
        s.state = ExecutorState.HOLD if holding else ExecutorState.RUNNING
        s.commanded = [float(x) for x in sent]
        s.measured = [float(x) for x in np.asarray(obs.state).reshape(-1)]
        s.queue_depth = selector.queue_depth
        s.delay_ticks = selector.delay_estimate
        s.chunk_age_ms = 0.0 if chunk_time is None else 1e3 * (clock.now() - chunk_time)
        if self._latencies:
            s.inference_ms = list(self._latencies)[-60:]
            s.inference_p50_ms, s.inference_p99_ms = (float(x) for x in np.percentile(self._latencies, [50, 99]))
        s.loop.period_p50_ms, s.loop.period_p99_ms = clock.percentiles_ms()
        s.loop.overruns = clock.overruns
        link = self.robot.link_counts().since(self._link_start)
        s.loop.link_exchanges, s.loop.link_failed_tries = link.exchanges, link.failed_tries
        s.loop.link_worst, s.loop.link_worst_failed = link.worst()
        if not self._link_warned and (warning := link.warning("this episode")):
            log.warning("%s", warning)  # retried, nothing lost yet: a fault in the making
            s.message, self._link_warned = warning, True
        self._publish(s)

