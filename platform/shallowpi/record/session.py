"""`RecordingSession`: the fixed-rate teleoperation loop and the episode flow around it.

Each tick: commands from the dashboard -> `robot.observe()` -> `teleop.read()` ->
`robot.act()` (clamped by the robot) -> the frame (that observation, the action sent after
it) goes to the background writer -> status out. Observing first is lerobot's order: row t
pairs what the robot saw with what it was told to do next, which is what a policy learns.
Between episodes a reset period runs the same loop without recording, so the operator can
put the scene back. Nothing in the loop waits on the disk or the screen: the writer and
the dashboard have their own threads, and the status sink only keeps the latest status.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shallowpi.data.store import EpisodeInfo
from shallowpi.errors import PlatformError
from shallowpi.record.clock import TickClock
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.base import Robot
from shallowpi.telemetry import keys
from shallowpi.telemetry.status import (
    CameraStatus,
    Command,
    EpisodeSummary,
    LoopStatus,
    RecorderState,
    RecorderStatus,
    WriterStatus,
)
from shallowpi.telemetry.thumbnail import thumbnail_from_image

log = logging.getLogger(__name__)


class Teleoperator(Protocol):
    def read(self) -> Mapping[str, float]: ...


class Scene(Protocol):
    """What a simulated (or scripted) setup adds: a reset per episode, a success check."""

    def reset(self, episode: int) -> None: ...
    def success(self) -> bool | None: ...
    def done(self) -> bool: ...  # the scripted demonstration is over; end the episode early


class OnInterrupt(str, enum.Enum):
    SAVE = "save"
    DISCARD = "discard"


@dataclass
class SessionConfig:
    task: str
    episodes: int = 5
    episode_time_s: float = 20.0
    reset_time_s: float = 5.0
    fps: float = 30.0
    autostart: bool = True  # headless runs start at once; the dashboard waits for a key
    on_interrupt: OnInterrupt = OnInterrupt.SAVE  # what Ctrl-C / SIGTERM does to the episode in flight
    thumbnail_every: int = 6  # ticks between dashboard thumbnails
    robot: str = ""
    dataset: str = ""
    calibration_id: str = ""

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.episode_time_s <= 0 or self.reset_time_s < 0 or self.fps <= 0:
            raise PlatformError(
                "episodes >= 1, episode time > 0, reset time >= 0 and fps > 0 are needed; "
                f"got {self.episodes}, {self.episode_time_s}, {self.reset_time_s}, {self.fps}"
            )
        self.on_interrupt = OnInterrupt(self.on_interrupt)


@dataclass
class SessionResult:
    committed: list[EpisodeInfo] = field(default_factory=list)
    discarded: int = 0
    fault: str = ""
    interrupted: bool = False
    deleted: int = 0  # episodes this run saved, then deleted with d / r


class RecordingSession:
    def __init__(
        self,
        config: SessionConfig,
        robot: Robot,
        teleop: Teleoperator,
        writer: BackgroundWriter,
        clock: TickClock,
        joint_names: list[str],
        scene: Scene | None = None,
        publish: Callable[[RecorderStatus], None] | None = None,
        commands: Callable[[], list[Command]] | None = None,
        cameras: Mapping[str, Any] | None = None,
        joint_limits: tuple[list[float], list[float]] | None = None,
    ) -> None:
        self.config = config
        self.robot = robot
        self.teleop = teleop
        self.writer = writer
        self.clock = clock
        self.scene = scene
        self.cameras = dict(cameras or {})
        self._publish = publish or (lambda status: None)
        self._commands = commands or list
        self._stop = threading.Event()
        self.status = RecorderStatus(
            robot=config.robot, dataset=config.dataset, task=config.task,
            episodes_total=config.episodes, episode_time_limit_s=config.episode_time_s,
            joint_names=list(joint_names), loop=LoopStatus(target_hz=config.fps),
        )
        if joint_limits is not None:
            self.status.joint_lower, self.status.joint_upper = list(joint_limits[0]), list(joint_limits[1])
        self.result = SessionResult()
        # Episodes are numbered by their index in the store, on every screen and line: the
        # next one kept is store index `_store_base + _episode` (kept ones commit in order).
        self._summaries: dict[int, EpisodeSummary] = {}  # store index -> its latest take
        self._store_base = len(writer.store)  # read before the writer thread commits anything
        self.status.first_episode = self.status.episode = self._store_base
        self._state = RecorderState.IDLE
        self._recording = False
        self._finished = False  # every episode asked for is saved (as opposed to stopped early)
        self._episode = 0  # episodes this run has kept so far
        self._frames = 0  # frames of the take in flight
        self._start_tick, self._start_s = 0, 0.0
        self._reset_until = 0.0
        self._held_reset_s = 0.0  # the reset countdown left when p held it
        self._last_saved: int | None = None  # store index of the episode d / r / s / f act on
        self._dropped_at_start = 0
        self._camera_rates: dict[str, tuple[int, float, float]] = {}

    @property
    def first_episode(self) -> int:
        """Store index of this run's first episode (the store's length when it began)."""
        return self._store_base

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: end at the next tick (episode saved or discarded per config)."""
        self._stop.set()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SessionResult:
        """Record until every episode is saved, a stop, an e-stop or a fault; never raises
        for a device fault (`result.fault` says what happened and how the robot was left)."""
        cfg = self.config
        if cfg.autostart:
            self._begin()
        while not self._finished:
            if self._stop.is_set():
                if self._recording:
                    self._end_episode(keep=cfg.on_interrupt is OnInterrupt.SAVE)
                self.result.interrupted = True
                break
            for command in self._commands():
                if self._on_command(command):
                    return self._finish(RecorderState.FAULT)
            if self._stop.is_set() or self._finished:
                continue

            try:
                observation = self.robot.observe()
                action = self.teleop.read()
                sent = self.robot.act(action)
            except PlatformError as fault:
                self._fault(fault)
                return self._finish(RecorderState.FAULT)

            now = self.clock.now()
            if self._recording:
                t = self.clock.tick_time(self._start_tick, self._start_s)
                self._record_frame(observation, sent, t)
                self._frames += 1
                self.status.episode_time_s = t
                self._summaries[self._store_index].frames = self._frames
                self._summaries[self._store_index].duration_s = self._frames / cfg.fps
                scene_done = self.scene is not None and self.scene.done()
                if scene_done or t + 1.0 / cfg.fps >= cfg.episode_time_s - 1e-9:
                    self._keep_and_continue(RecorderState.RESETTING)
            elif self._state is RecorderState.RESETTING:
                self.status.reset_time_left_s = max(0.0, self._reset_until - now)
                if now >= self._reset_until:
                    self._begin()
            self._update_status(self._state, action, observation)
            self.clock.wait()
        return self._finish(RecorderState.STOPPED)

    # --- keys: telemetry/keys.py is the table, this is what each entry does ------------

    def _on_command(self, command: Command) -> bool:
        """Act on one dashboard command as the key table says; True when it ends the
        session with a fault (e-stop). A command with no meaning in the state says so."""
        state = self._state
        if command is Command.ESTOP:
            self._estop()
            return True
        if keys.effect(command, state) is None:
            self.status.message = keys.ignored(command, state)
            return False
        if command is Command.QUIT:
            self._stop.set()
        elif command in (Command.START, Command.NEXT):
            self._begin()
        elif command is Command.STOP:
            self._keep_and_continue(RecorderState.RESETTING)
        elif command is Command.PAUSE:
            if state is RecorderState.RECORDING:
                self._keep_and_continue(RecorderState.PAUSED)
                self._held_reset_s = self.config.reset_time_s
            elif state is RecorderState.RESETTING:
                self._held_reset_s = max(0.0, self._reset_until - self.clock.now())
                self._state = RecorderState.PAUSED
                self.status.message = (f"paused: reset held with {self._held_reset_s:.1f} s left; "
                                       "p resumes it, space records the next episode")
            else:
                self._state = RecorderState.RESETTING
                self._reset_until = self.clock.now() + self._held_reset_s
                self.status.message = f"reset resumed: {self._held_reset_s:.1f} s left"
        elif command is Command.DISCARD and state is RecorderState.RECORDING:
            self._end_episode(keep=False)
            self._reset(RecorderState.RESETTING)
        elif command is Command.RERECORD and state is RecorderState.RECORDING:
            self._end_episode(keep=False)
            self._begin()
        elif command in (Command.DISCARD, Command.RERECORD):
            if self._delete_last_saved() and command is Command.RERECORD:
                self._begin()
        elif command in (Command.SUCCESS, Command.FAILURE):
            self._mark(command is Command.SUCCESS)
        return False

    def _keep_and_continue(self, then: RecorderState) -> None:
        """Save the take; the next state is `then` (a reset or a pause), or the end."""
        self._end_episode(keep=True)
        if self._episode >= self.config.episodes:
            self._finished = True
        else:
            self._reset(then)

    def _reset(self, state: RecorderState) -> None:
        self._state = state
        self._reset_until = self.clock.now() + self.config.reset_time_s
        self.status.reset_time_left_s = self.config.reset_time_s

    def _delete_last_saved(self) -> bool:
        """d / r between takes: delete the episode this run saved last; False (and says
        why) if there is none."""
        index = self._last_saved
        if index is None:
            self.status.message = ("nothing to delete: no episode of this run is saved"
                                   + (" (the last one was deleted already)" if self._episode else ""))
            return False
        self.writer.delete(index)
        self._summaries[index].state = "deleted"
        self._last_saved = None
        self._episode -= 1
        self.result.deleted += 1
        self.status.message = f"episode {index} deleted from the store; it will be recorded again"
        return True

    # --- episode flow ------------------------------------------------------------------

    @property
    def _store_index(self) -> int:
        """Store index of the take in flight (or of the next one)."""
        return self._store_base + self._episode

    def _begin(self) -> None:
        episode = self._episode
        if self.scene is not None:
            self.scene.reset(episode)
        self.writer.begin(self._store_index, self.config.task, robot=self.config.robot,
                          calibration_id=self.config.calibration_id, fps=self.config.fps,
                          start_time=time.time())
        self.clock.reset_stats()
        self._dropped_at_start = self._camera_drops()
        index = self._store_index
        self._summaries[index] = EpisodeSummary(index, 0, 0.0, None, "recording")  # replaces a discarded take
        self.status.message = f"recording episode {index} ({episode + 1}/{self.config.episodes} of this run)"
        self._state, self._recording, self._frames = RecorderState.RECORDING, True, 0
        self._start_tick, self._start_s = self.clock.ticks, self.clock.now()
        self.status.episode_time_s = 0.0

    def _record_frame(self, observation: Mapping[str, Any], sent: np.ndarray, t: float) -> None:
        values: dict[str, np.ndarray] = {"observation.state": observation["observation.state"],
                                         "action": np.asarray(sent, np.float32)}
        captured: dict[str, float] = {}
        wall = observation.get("timestamp")
        for key, value in observation.items():
            if key.startswith("observation.images.") and not key.endswith(".timestamp"):
                values[key] = value
                stamp = observation.get(key + ".timestamp")
                if stamp is not None and wall is not None:
                    # Capture time on the episode clock: the tick's time minus the frame's age.
                    captured[key] = t - (float(wall) - float(stamp))
        waited = self.writer.add_frame(values, t, captured)
        if waited > 0:
            self.status.message = f"disk is behind: the loop waited {waited * 1e3:.0f} ms for the writer"

    def _end_episode(self, keep: bool) -> None:
        """End the take in flight: hand it to the writer to commit, or discard it."""
        index, frames = self._store_index, self._frames
        summary = self._summaries[index]
        self._recording = False
        if keep and frames > 0:
            success = self.scene.success() if self.scene is not None else None
            if summary.success is not None:
                success = summary.success
            p50, p99 = self.clock.percentiles_ms()
            extra = {"loop_p50_ms": p50, "loop_p99_ms": p99, "loop_overruns": self.clock.overruns,
                     "backpressure_s": self.writer.stats().backpressure_s}
            self.writer.commit(success=success, dropped_frames=self._camera_drops() - self._dropped_at_start,
                               extra=extra)
            summary.frames, summary.duration_s, summary.success = frames, frames / self.config.fps, success
            summary.state = "saving"
            self._last_saved = index
            self._episode += 1
            self.status.message = f"episode {index} recorded ({frames} frames), saving"
        else:
            self.writer.discard()
            summary.state = "discarded"
            self.result.discarded += 1
            self.status.message = f"episode {index}: take discarded"

    def _mark(self, success: bool) -> None:
        """s / f: the take in flight (stored with it at commit), else the episode saved last."""
        index = self._store_index if self._recording else self._last_saved
        word = "successful" if success else "failed"
        if index is None:
            self.status.message = "nothing to mark: no episode of this run is saved"
            return
        summary = self._summaries[index]
        summary.success = success
        if summary.state in ("saving", "saved"):
            self.writer.mark(index, success)  # after its commit: the writer works in order
            self.status.message = f"episode {index} marked {word} in the store"
        else:
            self.status.message = f"episode {index} marked {word} (stored with it)"

    def _fault(self, fault: PlatformError) -> None:
        log.error("fault: %s", fault)
        if self._recording:
            self._end_episode(keep=False)
        safety = self._safe_state()
        self.result.fault = f"{fault}; {safety}"
        self.status.message = f"FAULT: {fault}; {safety}; episodes already saved are kept"

    def _estop(self) -> None:
        if self._recording:
            self._end_episode(keep=False)
        try:
            self.robot.torque_off()
            safety = "torque off, robot is safe"
        except PlatformError as exc:
            log.error("e-stop: %s", exc)
            safety = f"torque off FAILED ({exc}); cut the servo power now"
        self.result.fault = f"e-stop pressed; {safety}"
        self.status.message = f"E-STOP: {safety}; episodes already saved are kept"

    def _safe_state(self) -> str:
        """Hold position, else torque off; says which was confirmed, or what failed and what to do."""
        try:
            self.robot.hold()
            return "robot is safe: holding position"
        except PlatformError as hold_error:
            log.error("could not hold position: %s", hold_error)
            try:
                self.robot.torque_off()
                return f"robot is safe: torque off (could not hold position: {hold_error})"
            except PlatformError as off_error:
                log.error("could not switch torque off: %s", off_error)
                return (f"robot NOT confirmed safe: could not hold position ({hold_error}) nor switch "
                        f"torque off ({off_error}); cut the servo power before going near the robot")

    def _finish(self, state: RecorderState) -> SessionResult:
        self._update_status(state, None, None)
        return self.result

    # --- status ------------------------------------------------------------------------

    def _camera_drops(self) -> int:
        return sum(_dropped(c) for c in self.cameras.values())

    def _camera_status(self, observation: Mapping[str, Any]) -> None:
        """Per camera: measured frame rate (over ~1 s), drops, age of the frame used."""
        now = time.monotonic()
        if not self.cameras:
            # Frames rendered in-process (the twin): one per tick, never dropped or late.
            p50, _ = self.clock.percentiles_ms()
            for key in observation:
                if key.startswith("observation.images.") and not key.endswith(".timestamp"):
                    role = key.removeprefix("observation.images.")
                    self.status.cameras[role] = CameraStatus(fps=1e3 / p50 if p50 else 0.0)
            return
        for role, camera in self.cameras.items():
            stats = getattr(camera, "stats", None)
            frames = int(getattr(stats, "frames", 0))
            last_frames, last_time, fps = self._camera_rates.get(role, (frames, now, 0.0))
            if now - last_time >= 1.0:
                fps, last_frames, last_time = (frames - last_frames) / (now - last_time), frames, now
            self._camera_rates[role] = (last_frames, last_time, fps)
            stamp = observation.get(f"observation.images.{role}.timestamp")
            wall = observation.get("timestamp")
            age_ms = (float(wall) - float(stamp)) * 1e3 if stamp is not None and wall is not None else 0.0
            self.status.cameras[role] = CameraStatus(fps=fps, dropped=_dropped(camera), age_ms=age_ms)

    def _update_status(self, state: RecorderState, action: Any, observation: Any) -> None:
        status = self.status
        status.state = state
        # The take in flight, else the next one; once all are saved, the last one saved.
        status.episode = self._store_index - (1 if self._finished else 0)
        if observation is not None:
            status.follower = [float(v) for v in observation["observation.state"]]
        if action is not None:
            if isinstance(action, Mapping):
                index = {n: i for i, n in enumerate(status.joint_names)}
                leader = list(status.follower) or [0.0] * len(index)
                for name, value in action.items():
                    if name in index:
                        leader[index[name]] = float(value)
                status.leader = leader
            else:
                status.leader = [float(v) for v in np.asarray(action).reshape(-1)]
        p50, p99 = self.clock.percentiles_ms()
        status.loop = LoopStatus(self.config.fps, p50, p99, self.clock.overruns,
                                 simulated=bool(getattr(self.clock, "simulated", False)))
        stats = self.writer.stats()
        status.writer = WriterStatus(stats.queue_depth, stats.queue_capacity, stats.high_water,
                                     self.writer.mb_per_s(), stats.backpressure_s * 1e3, stats.pending_episodes)
        committed = {(e.index, e.length) for e in stats.committed}
        for s in self._summaries.values():
            if s.state == "saving" and (s.index, s.frames) in committed:
                s.state = "saved"
                status.message = f"episode {s.index} saved ({s.frames} frames)"
        status.episodes = list(self._summaries.values())
        self.result.committed = stats.committed
        if observation is not None and state is not RecorderState.PAUSED:
            self._camera_status(observation)
        elif state is RecorderState.PAUSED:
            # Nothing is recorded: no rate to show, and none carried into the next take.
            self._camera_rates.clear()
            for role, camera in status.cameras.items():
                status.cameras[role] = CameraStatus(fps=0.0, dropped=camera.dropped, age_ms=0.0)
        if observation is not None and self.clock.ticks % self.config.thumbnail_every == 0:
            for key, value in observation.items():
                if key.startswith("observation.images.") and not key.endswith(".timestamp"):
                    status.thumbnails[key.removeprefix("observation.images.")] = thumbnail_from_image(np.asarray(value))
        try:
            self._publish(status)
        except Exception:  # a dashboard problem must never stop the recording
            log.exception("status publish failed")


def _dropped(camera: Any) -> int:
    stats = getattr(camera, "stats", None)
    return int(getattr(stats, "dropped", 0))
