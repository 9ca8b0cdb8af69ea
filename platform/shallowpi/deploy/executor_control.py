"""`ExecutorControl`: everything an `Executor` (deploy/executor.py) does besides its
episode loop: the stop and e-stop it obeys from other threads (signal handlers, telemetry
commands), the status it publishes, what a fault does to the robot (a servo's: hold, then
torque off; a camera's or the policy's: hold the last command, torque on, until the
operator ends it), and the phases around episodes: the warm-up (the backend on a thread,
the robot held and the operator heard) and the homing to the pose the demonstrations
started from (robots/catch_up.py). `InferenceFault`, `EpisodeReport` and `policy_input`
are the loop's vocabulary, here so that both modules share them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from shallowpi.data.codecs import as_stored
from shallowpi.data.features import IMAGE_PREFIX
from shallowpi.deploy.backends.base import Backend, BackendError
from shallowpi.deploy.settings import ExecutorConfig
from shallowpi.errors import ConfigError, PlatformError
from shallowpi.hardware.camera import CameraError
from shallowpi.record.clock import SimulatedClock, TickClock
from shallowpi.robots.base import Robot
from shallowpi.robots.observation import Observation, lerobot_row
from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus, SafetyCounts

if TYPE_CHECKING:
    from numcodecs.abc import Codec

log = logging.getLogger("shallowpi.deploy.executor")  # one logger for the executor's lines


class InferenceFault(PlatformError):
    """The policy side failed the robot: no chunk in time, or one that is not finite."""


@dataclass
class EpisodeReport:
    """One episode as the executor ran it. Latencies in ms, delays in ticks (measured)."""

    seed: int
    success: bool | None
    ticks: int = 0
    steps: int = 0  # actions sent from chunks
    chunks: int = 0  # taken by the selector (stale_chunks: dropped)
    latency_ms: list[float] = field(default_factory=list)  # every chunk back, those dropped as stale too
    delays: list[int] = field(default_factory=list)  # ticks from request to delivery, each chunk taken but the first
    holds: int = 0
    hold_ticks: int = 0
    seam_trips: int = 0
    max_seam_jump: float = 0.0  # ticks of top speed (ExecutorConfig.seam_ticks)
    # The largest change of any joint between two consecutive actions the selection chose,
    # in ticks of its top speed (above 1: faster than the robot goes; before the seam ramp
    # and the robot's clamps, which bound what is sent): a seam smoothed at its first
    # action must not hide a jump a few ticks later.
    max_step: float = 0.0
    clamps: int = 0
    clamped_joints: dict[str, int] = field(default_factory=dict)  # ticks each joint was clamped
    stale_frames: int = 0
    stale_chunks: int = 0  # dropped: back later than max_chunk_age_s after they were asked for
    period_p50_ms: float = 0.0  # the loop's period over every tick of the episode
    period_p99_ms: float = 0.0
    overruns: int = 0
    link_exchanges: int = 0  # with the servos, and the tries of those that were retried (LinkCounts)
    link_failed_tries: int = 0
    ended: str = "time limit"  # success held | stopped | e-stop | fault
    sent: list[np.ndarray] = field(default_factory=list, repr=False)  # every command, in order



def policy_input(obs: Observation, task: str, image_codec: Codec | None = None) -> dict[str, Any]:
    """What a backend reads: the observation under lerobot's names, plus the task text;
    with `image_codec` (the training store's), each camera frame passed through it, as the
    training loader decoded it (`data/codecs.as_stored`)."""
    values = lerobot_row(obs).values
    if image_codec is not None:
        values = {key: as_stored(image_codec, value) if key.startswith(IMAGE_PREFIX) else value
                  for key, value in values.items()}
    return {**values, "task": task}


class ExecutorControl:
    """The robot's and the operator's side of an `Executor` (module docstring); the
    parameters are Executor's."""

    def __init__(self, robot: Robot, backend: Backend, cfg: ExecutorConfig, fps: float | None = None,
                 publish: Callable[[ExecutorStatus], None] | None = None, image_codec: Codec | None = None,
                 start_state: np.ndarray | None = None) -> None:
        self.robot, self.backend, self.cfg = robot, backend, cfg
        self.image_codec = image_codec
        # The pose [J] the demonstrations started from: with cfg.start_speed, go_to_start()
        # takes the robot there before each episode's reset (a robot's episode would start
        # where the last ended; the twin's start at its home pose).
        self.start_state = None if start_state is None else np.asarray(start_state, np.float64)
        self.fps = float(fps or robot.spec.fps)
        if self.fps > float(robot.spec.fps) + 1e-9:  # Robot.act bounds a step at max_velocity / spec.fps
            raise ConfigError(f"executor at {self.fps:g} Hz is faster than the robot's {robot.spec.fps:g} Hz; its "
                              "per-command velocity bound assumes the robot's rate")
        self._publish = publish or (lambda status: None)
        self._stop = threading.Event()
        self._estop = threading.Event()
        self._held_after_fault = threading.Event()  # a policy-side fault, torque on, until the operator ends it
        self._alarms_read_at = time.monotonic()  # watch_faults: the servos' alarms, once a second
        spec = robot.spec  # a twin's TwinSpec or a robot's RobotSpec: both list their joints
        # One tick of each joint's top speed (Robot.act's per-command bound): the unit of
        # seam jumps and steps, the same for radians, metres and gripper openings.
        self.tick_step = np.array([float(j.max_velocity) for j in spec.joints]) / float(spec.fps)
        self.status = ExecutorStatus(
            robot=getattr(spec, "robot", None) or getattr(spec, "name", ""), strategy=cfg.strategy.value,
            backend=backend.name, joint_names=[j.name for j in spec.joints],
        )
        # The limits the robot clips every command to (a hardware robot's narrowed to its
        # calibrated sweep): the dashboard's bars, and the seam measured against them.
        self.lower, self.upper = robot.joint_limits()
        self.status.joint_lower, self.status.joint_upper = self.lower.tolist(), self.upper.tolist()
        self.status.loop.target_hz = self.fps
        self.safety: SafetyCounts = self.status.safety
        self.initial_delay = 0  # ticks, from the warmed-up latency
        self._link_start = robot.link_counts()  # the servo link's counts when the episode began
        self._link_warned = False  # its warning is given once an episode

    # -- control from other threads (signal handlers, telemetry commands)

    def stop(self) -> None:
        """End at the next tick, holding the robot's pose with torque on (`estop` cuts it
        there and then); `platform deploy` turns torque off when it disconnects after the run,
        so a humanoid's arms go limp then: support them. After a policy-side fault it is the
        operator's word that ends the hold (`held_after_fault`)."""
        self._held_after_fault.clear()
        self._stop.set()

    def estop(self) -> None:
        """Torque off at the next tick."""
        self._held_after_fault.clear()
        self._estop.set()
        self._stop.set()

    @property
    def held_after_fault(self) -> bool:
        """Whether the policy side failed (a stuck backend, an error, a non-finite chunk), or
        a servo or bus fault left the robot (or its sound buses) holding its pose with torque
        on (Robot.hold_or_release): true until stop() or estop().
        `platform deploy` keeps the robot powered until then rather than let its arms drop
        while no one is holding them."""
        return self._held_after_fault.is_set()

    @property
    def stopped(self) -> bool:
        """Whether stop() or estop() was called (or a fault stopped it)."""
        return self._stop.is_set()

    @property
    def estopped(self) -> bool:
        """Whether estop() was called: torque must go off, not only the loop stop."""
        return self._estop.is_set()

    # -- warm-up

    def warm_up(self, task: str) -> list[float]:
        """Compute `warmup_runs` chunks on a real observation before the robot moves; the
        last one's latency (+ injected delay) sets the initial delay estimate in ticks.

        The backend computes on a thread (a first TensorRT run may build its engine for
        minutes) while this one publishes the status, so a monitor's stop or e-stop is read,
        and an e-stop turns torque off at once, and reads the servos' alarms once a second
        (the robot holds, torque on, all that while). Raises what the backend raised, a
        servo fault, or, on the wall clock, BackendError when the warm chunk takes longer than
        deploy.max_chunk_age_s: every chunk would come back too old to act on and be dropped,
        and the run would fault after deploy.max_inference_s, the arm homed and the scene
        reset for nothing."""
        self._set(ExecutorState.WARMING, f"warming up {self.backend.name}")
        observed = policy_input(self.robot.observe(), task, self.image_codec)
        outcome: dict[str, Any] = {}

        def compute() -> None:
            try:
                outcome["times"] = self.backend.warm_up(observed, self.cfg.warmup_runs)
            except BaseException as exc:  # raised again on the caller's thread
                outcome["error"] = exc

        worker = threading.Thread(target=compute, name="warm-up", daemon=True)
        worker.start()
        checked, torque_cut = time.monotonic(), False
        while worker.is_alive():
            worker.join(timeout=0.05)
            self._publish(self.status)  # commands are read as the status goes out
            if self._estop.is_set() and not torque_cut:
                self._torque_off()
                torque_cut = True
                self._set_stopped()  # the monitor sees it done; the run ends once the backend is back
            elif not torque_cut and time.monotonic() - checked >= 1.0:
                try:
                    self.robot.check_faults()
                except PlatformError as exc:
                    self._set(ExecutorState.FAULT, f"fault: {exc}")
                    raise
                checked = time.monotonic()
        if "error" in outcome:
            raise outcome["error"]
        times = outcome["times"]
        # (Not after a stop or an e-stop during the warm-up: the run ends on that.)
        if self.cfg.realtime and not self._stop.is_set() and \
                (took := times[-1] + self.cfg.injected_delay_s) > self.cfg.max_chunk_age_s:
            raise BackendError(
                f"{self.backend.name} takes {took:.2f} s a chunk warm, over deploy.max_chunk_age_s "
                f"{self.cfg.max_chunk_age_s:g}: every chunk would be dropped as too old to act on; deploy a faster "
                "backend or profile, or raise deploy.max_chunk_age_s")
        self.initial_delay = max(1, math.ceil((times[-1] + self.cfg.injected_delay_s) * self.fps))
        log.info("%s warm: %.0f ms a chunk, initial delay %d ticks", self.backend.name, 1e3 * times[-1],
                 self.initial_delay)
        return times

    def go_to_start(self) -> bool:
        """On the robot, after an episode (and before the first): go to `start_state` at
        cfg.start_speed of its top speed, on a straight line in joint space
        (robots/catch_up.py), HOMING on the dashboard with the joint furthest away and the
        seconds left, as the field's evaluation scripts return the arms to their start pose
        before the scene is reset (ACT's, for one). The gripper goes to its start opening on
        the way: what it holds is let go. True once there, at once without a start pose
        or speed (the twin: each of its episodes starts at its home pose); False when a
        stop ended the run on the way (the robot then holds where it got to; an e-stop
        turns torque off) or a fault did (handled as in an episode: a servo's holds what can
        hold and releases the rest, bus by bus; a camera's holds with torque on)."""
        if self.start_state is None or self.cfg.start_speed is None:
            return True
        from shallowpi.robots.catch_up import CatchUp

        catch_up = CatchUp.for_robot(self.robot, float(self.cfg.start_speed), self.fps,
                                     goal="the demonstrations' start pose", then="the reset countdown starts")
        clock = TickClock(self.fps) if self.cfg.realtime else SimulatedClock(self.fps)
        report = EpisodeReport(-1, None)  # what _fault marks; a fault here ends the run
        if (last := self.hold_measured(report)) is None:
            return False
        told = ""
        while True:
            if self._stop.is_set():
                if self._estop.is_set():
                    self._torque_off()
                else:
                    try:
                        self.robot.hold(last)
                    except PlatformError as exc:
                        log.error("hold failed: %s", exc)
                self._set_stopped()
                return False
            clock.wait()
            if (obs := self._observe(report, last)) is None:
                return False
            try:
                last = np.asarray(self.robot.act(catch_up(self.start_state, obs.state)), np.float32)
                clock.command_sent()  # after a slow frame, the next command a period on (TickClock)
            except PlatformError as exc:
                self._fault(exc, report, last)
                return False
            # The dashboard's joints follow the robot on its way, not the last episode's end.
            self.status.commanded = [float(x) for x in last]
            self.status.measured = [float(x) for x in np.asarray(obs.state).reshape(-1)]
            if catch_up.done:
                self._set(ExecutorState.RESET, "")
                return True
            if (line := catch_up.describe()) != told:  # once a second: a line printer shows each
                told = line
                self._set(ExecutorState.HOMING, line)
            else:
                self._publish(self.status)  # commands are read as the status goes out

    def resetting(self, reset_s: float, left_s: float) -> None:
        """Publish that the robot holds for `reset_s` seconds before episode
        `status.episode` while the operator sets the scene, `left_s` of them still to go:
        the dashboard counts down, and a stop or e-stop sent meanwhile is obeyed."""
        self.status.reset_left_s = max(0.0, left_s)
        self._set(ExecutorState.RESET,
                  f"set the scene: episode {self.status.episode + 1} starts in {reset_s:g} s (the robot holds)")

    def hold_measured(self, report: EpisodeReport | None = None) -> np.ndarray | None:
        """Hold the robot at its measured pose (Robot.hold) and return the command sent;
        None when it cannot be confirmed holding (a servo its own protection switched off),
        handled as a fault in a tick is (`_fault`: what can hold holds, the rest goes limp,
        bus by bus, FAULT shown, the run ends) rather than left to the run's clean-up, which
        switched every bus off and dropped the sound arm's load. `report`: the episode's,
        marked as ended by the fault."""
        try:
            return np.asarray(self.robot.hold(), np.float32)
        except PlatformError as exc:
            self._fault(exc, report or EpisodeReport(-1, None), None)
            return None

    def watch_faults(self, report: EpisodeReport | None = None) -> None:
        """Read the servos' alarms (Robot.check_faults), at most once a second, while the
        robot holds without observing: the reset countdown (seconds of hands at the robot), a
        sync chunk's computation, the wait for the inference thread at an episode's end.
        A fault is handled as in a tick (`_fault`), marks `report` (the episode's, if any)
        and stops the run. observe() reads them as often in a tick; those waits read none."""
        now = time.monotonic()
        if now - self._alarms_read_at < 1.0:
            return
        self._alarms_read_at = now
        try:
            self.robot.check_faults()
        except PlatformError as exc:
            self._fault(exc, report or EpisodeReport(-1, None), None)

    def policy_fault(self, exc: PlatformError, last: np.ndarray | None = None) -> None:
        """A fault of the policy's side found between episodes (the recording's writer,
        seconds behind the loop, failing at an episode's begin or end): the robot is sound,
        so it is handled as one in a tick (`_fault`, torque on): counted, FAULT shown, the
        robot holding `last` (else its measured pose) until the operator ends it, the run
        stopped."""
        self._fault(exc, EpisodeReport(-1, None), last, torque_off=False)

    def _observe(self, report: EpisodeReport, last: np.ndarray) -> Observation | None:
        """The robot's observation, or None once its fault is handled: a silent camera
        leaves the servos sound, so it holds `last` with torque on, as for a policy fault
        (torque off would drop a humanoid's arms and what they hold); a servo's holds what
        can hold and releases the rest, bus by bus (`_fault`)."""
        try:
            return self.robot.observe()
        except PlatformError as exc:
            self._fault(exc, report, last, torque_off=not isinstance(exc, CameraError))
            return None

    def _fault(self, exc: PlatformError, report: EpisodeReport, last: np.ndarray | None,
               torque_off: bool = True) -> None:
        """A servo or bus fault (`torque_off`: the robot itself is in question): hold the
        last goal where it can be confirmed and switch torque off where it cannot, bus by
        bus (Robot.hold_or_release: one arm's overloaded gripper no longer drops the sound
        arm, and what it carries); what still holds waits for the operator to end it
        (`held_after_fault`), its alarms read. A camera or inference fault (the robot is
        sound): keep the last command, torque on, for the operator to end; the last command,
        not the measured pose, so a gripper closed on an object does not let go (Robot.hold)."""
        self.safety.faults += 1
        report.ended = "fault"
        log.error("fault: %s; holding%s", exc, ", else torque off" if torque_off else " (torque stays on)")
        holding, said = not torque_off, ""
        try:
            if torque_off:
                state = self.robot.hold_or_release(exc)
                holding, said = state.holding, f"; {state.message}"
            else:
                self.robot.hold(last)
        except PlatformError as hold_exc:
            log.error("hold failed: %s", hold_exc)
            # A bus that had to go limp did not confirm it (or, the robot sound, its hold
            # failed). The buses that hold (the message names them) keep holding, as
            # recording leaves them; with none, every bus is switched off.
            holding = bool(getattr(hold_exc, "holding", False))
            if not holding:
                self._torque_off()
            said = f"; robot NOT confirmed safe: {hold_exc}; cut the servo power"
        if holding and not self._stop.is_set():  # a stop asked for already (the same tick) is the operator's word
            self._held_after_fault.set()
        elif not holding:  # a servo fault in a hold after a fault left nothing holding: nothing to wait for
            self._held_after_fault.clear()
        self._set(ExecutorState.FAULT, f"fault: {exc}{said}")
        self._stop.set()

    def _torque_off(self) -> None:
        try:
            self.robot.torque_off()
        except PlatformError as exc:
            log.error("torque off failed: %s", exc)
            self.status.message = f"TORQUE OFF FAILED: {exc}"

    def done(self, episodes: int) -> None:
        """The run is over: its final status, so a dashboard and `monitor --lines` tell a
        finished run from one that vanished. DONE when every episode ran; STOPPED when the
        operator ended it (also before an episode began, during a reset); a fault keeps FAULT."""
        if self.status.state is ExecutorState.FAULT:
            return
        if self.stopped:
            self._set_stopped()
        else:
            self._set(ExecutorState.DONE, f"done: {episodes} episode(s)")

    def _set_stopped(self) -> None:
        """STOPPED, saying whether torque went off (an e-stop) or the robot holds (a stop)."""
        self.status.estopped = self.estopped
        self._set(ExecutorState.STOPPED, "e-stopped: torque off" if self.estopped
                  else "stopped by the operator; the robot holds its pose")

    # -- status

    def _set(self, state: ExecutorState, message: str | None = None) -> None:
        self.status.state = state
        if message is not None:
            self.status.message = message
        self._publish(self.status)
