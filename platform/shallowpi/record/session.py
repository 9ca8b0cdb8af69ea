"""`RecordingSession`: the fixed-rate teleoperation loop and the episode flow around it.

Each tick: commands from the dashboard -> (an episode begins here, if one is due) ->
`robot.observe()` -> `teleop.read()` -> `robot.act()` (clamped by the robot) -> the frame
(that observation, the action sent after it) goes to the background writer -> status out.
Observing first is lerobot's order: row t pairs what the robot saw with what it was told
to do next, which is what a policy learns. An episode begins at the top of a tick, before
that tick observes, so every episode's first row is its own t = 0 and it holds
`round(episode_time_s * fps)` rows. Between episodes a reset period runs the same loop
without recording, so the operator can put the scene back. Nothing in the loop waits on
the disk or the screen: the writer and the dashboard have their own threads, and the
status sink only keeps the latest status. Nothing a tick does grows with the number of
episodes recorded, so a long session keeps its tick time and its memory.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from shallowpi.data.features import ACTION_KEY
from shallowpi.data.store import EpisodeInfo
from shallowpi.errors import PlatformError
from shallowpi.record.clock import TickClock
from shallowpi.record.disk import DiskBudget
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.base import Robot
from shallowpi.robots.observation import Observation, lerobot_row
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
    def metadata(self) -> dict[str, Any]: ...  # stored in the episode's `extra` (e.g. its seed)


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

    @property
    def episode_rows(self) -> int:
        """Rows in a full-length episode: round(episode_time_s * fps), at least one."""
        return max(1, round(self.episode_time_s * self.fps))


@dataclass
class SessionResult:
    committed: list[EpisodeInfo] = field(default_factory=list)
    discarded: int = 0
    fault: str = ""
    interrupted: bool = False


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
        disk: DiskBudget | None = None,
    ) -> None:
        self.config = config
        self.robot = robot
        self.teleop = teleop
        self.writer = writer
        self.clock = clock
        self.scene = scene
        self.disk = disk
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
        # Episode summaries are appended to the status once (the dashboards list them), kept
        # episodes wait in `_saving` until the writer reports them committed.
        self._recording = EpisodeSummary(0, 0, 0.0)  # the episode begun last
        self._saving: deque[EpisodeSummary] = deque()
        self._saved_seen = 0  # commits the writer reported so far
        self._kept = 0  # episodes this session handed to the writer to commit
        self._store_index: dict[int, int] = {}  # episode -> its index in the store (the last few)
        self._store_base = len(writer.store)  # read before the writer thread commits anything
        self._dropped_at_start = 0
        self._camera_rates: dict[str, tuple[int, float, float]] = {}

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: end at the next tick (episode saved or discarded per config)."""
        self._stop.set()

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SessionResult:
        cfg = self.config
        episode = 0
        state = RecorderState.IDLE
        recording = False
        start_tick, start_s, reset_until = 0, 0.0, 0.0
        frames = 0
        self.clock.restart()
        if cfg.autostart:  # the first episode begins at the first tick, as every other one
            state, reset_until = RecorderState.RESETTING, self.clock.now()
        finished = False  # all episodes recorded (as opposed to stopped early)
        while not finished:
            try:  # a PlatformError anywhere in the tick (servo, camera, writer, disk) is a fault
                self._raise_writer_failure()
                if self._stop.is_set():
                    if recording:
                        self._end_episode(episode, frames, keep=cfg.on_interrupt is OnInterrupt.SAVE)
                    self.result.interrupted = True
                    break
                for command in self._commands():
                    if command is Command.QUIT:
                        self._stop.set()
                    elif command is Command.ESTOP:
                        self._estop(recording, episode, frames)
                        return self._finish(RecorderState.FAULT)
                    elif command is Command.START and state in (RecorderState.IDLE, RecorderState.PAUSED,
                                                                RecorderState.RESETTING):
                        if not recording:
                            state, recording, start_tick, start_s, frames = self._begin(episode)
                    elif command is Command.PAUSE and recording:
                        self._end_episode(episode, frames, keep=False)
                        recording, state = False, RecorderState.PAUSED
                        self.status.message = f"paused: episode {episode} discarded; press space to record it again"
                    elif command in (Command.STOP, Command.DISCARD, Command.RERECORD) and recording:
                        keep = command is Command.STOP
                        self._end_episode(episode, frames, keep=keep)
                        recording = False
                        if keep:
                            episode += 1
                        if episode >= cfg.episodes:
                            finished = True
                        else:
                            state, reset_until = RecorderState.RESETTING, self.clock.now() + cfg.reset_time_s
                            if command is Command.RERECORD:
                                state, recording, start_tick, start_s, frames = self._begin(episode)
                    elif command is Command.NEXT and state is RecorderState.RESETTING:
                        reset_until = self.clock.now()
                    elif command in (Command.SUCCESS, Command.FAILURE):
                        self._mark(episode if recording else episode - 1, command is Command.SUCCESS)
                if self._stop.is_set() or finished:
                    continue

                if state is RecorderState.RESETTING and not recording and self.clock.now() >= reset_until:
                    # Before this tick observes: the observation below is the episode's t = 0.
                    state, recording, start_tick, start_s, frames = self._begin(episode)
                observation = self.robot.observe()
                action = self.teleop.read()
                sent = self.robot.act(action)
                if recording:
                    t = self.clock.tick_time(start_tick, start_s)
                    self._record_frame(observation, sent, t)
                    frames += 1
                    self.status.episode_time_s = t
                    scene_done = self.scene is not None and self.scene.done()
                    if scene_done or frames >= cfg.episode_rows:
                        self._end_episode(episode, frames, keep=True)
                        recording = False
                        episode += 1
                        if episode >= cfg.episodes:
                            finished = True
                        else:
                            state, reset_until = RecorderState.RESETTING, self.clock.now() + cfg.reset_time_s
                elif state is RecorderState.RESETTING:
                    self.status.reset_time_left_s = max(0.0, reset_until - self.clock.now())
            except PlatformError as fault:
                self._fault(fault, recording, episode, frames)
                return self._finish(RecorderState.FAULT)
            self._update_status(state, episode, action, observation)
            self.clock.wait()
        return self._finish(RecorderState.STOPPED)

    # --- episode flow ------------------------------------------------------------------

    def _begin(self, episode: int) -> tuple[RecorderState, bool, int, float, int]:
        """Start `episode` in the current tick, before it observes; raises `DiskSpaceError`
        (nothing started) when the disk has no room for it."""
        if self.disk is not None:
            # Episodes still queued for the writer have not taken their space yet.
            self.disk.check_room(episode, queued=self.writer.stats().pending_episodes)
        if self.scene is not None:
            self.scene.reset(episode)
        self.writer.begin(episode, self.config.task, robot=self.config.robot,
                          calibration_id=self.config.calibration_id, fps=self.config.fps,
                          start_time=time.time())
        self.clock.reset_stats()
        self._dropped_at_start = self._camera_drops()
        summary = self._recording = EpisodeSummary(episode, 0, 0.0, None, "recording")
        episodes = self.status.episodes
        if episodes and episodes[-1].index == episode:
            episodes[-1] = summary  # the attempt before (paused, discarded) is replaced
        else:
            episodes.append(summary)
        self.status.message = f"recording episode {episode + 1}/{self.config.episodes}"
        return RecorderState.RECORDING, True, self.clock.ticks, self.clock.tick_start_s(), 0

    def _record_frame(self, observation: Observation, sent: np.ndarray, t: float) -> None:
        row = lerobot_row(observation, t)  # on the episode clock; each frame keeps its age
        waited = self.writer.add_frame({**row.values, ACTION_KEY: np.asarray(sent, np.float32)},
                                       row.timestamp, row.capture_times)
        if waited > 0:
            self.status.message = f"disk is behind: the loop waited {waited * 1e3:.0f} ms for the writer"

    def _summary(self, episode: int) -> EpisodeSummary | None:
        for summary in reversed(self.status.episodes[-4:]):  # only recent episodes are asked for
            if summary.index == episode:
                return summary
        return None

    def _end_episode(self, episode: int, frames: int, keep: bool) -> None:
        summary = self._recording
        if self.writer.failure is not None:  # nothing more reaches the store
            summary.state = "discarded"
            self.result.discarded += 1
            return
        if keep and frames > 0:
            success = self.scene.success() if self.scene is not None else None
            if summary.success is not None:
                success = summary.success
            p50, p99 = self.clock.percentiles_ms()
            extra = {"loop_p50_ms": p50, "loop_p99_ms": p99, "loop_overruns": self.clock.overruns,
                     "backpressure_s": self.writer.stats().backpressure_s}
            if self.scene is not None:
                extra.update(self.scene.metadata())
            self.writer.commit(success=success, dropped_frames=self._camera_drops() - self._dropped_at_start,
                               extra=extra)
            summary.frames, summary.duration_s, summary.success = frames, frames / self.config.fps, success
            summary.state = "saving"
            self._saving.append(summary)
            # Kept episodes reach the store in order, after those it held at the start.
            self._store_index[episode] = self._store_base + self._kept
            self._kept += 1
            for old in [e for e in self._store_index if e < episode - 2]:
                del self._store_index[old]
            self.status.message = f"episode {episode + 1} recorded ({frames} frames), saving"
        else:
            self.writer.discard()
            summary.state = "discarded"
            self.result.discarded += 1
            self.status.message = f"episode {episode + 1} discarded"

    def _mark(self, episode: int, success: bool) -> None:
        summary = self._summary(episode)
        if summary is None:
            return
        summary.success = success  # applied at commit if the episode is still recording
        if summary.state in ("saving", "saved") and episode in self._store_index:
            self.writer.mark(self._store_index[episode], success)

    def _fault(self, fault: PlatformError, recording: bool, episode: int, frames: int) -> None:
        log.error("fault: %s", fault)
        if recording:
            self._end_episode(episode, frames, keep=False)
        safety = self._safe_state()
        self.result.fault = f"{fault}; {safety}"
        self.status.message = f"FAULT: {fault}; {safety}; episodes already saved are kept"

    def _estop(self, recording: bool, episode: int, frames: int) -> None:
        if recording:
            self._end_episode(episode, frames, keep=False)
        try:
            self.robot.torque_off()
            safety = "torque off, robot is safe"
        except PlatformError as exc:
            log.error("e-stop: %s", exc)
            safety = f"torque off FAILED ({exc}); cut the servo power now"
        self.result.fault = f"e-stop pressed; {safety}"
        self.status.message = f"E-STOP: {safety}; episodes already saved are kept"

    def _raise_writer_failure(self) -> None:
        """A writer that stopped (disk full, I/O error) is a fault like a servo's."""
        if self.writer.failure is not None:
            raise self.writer.failure

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
        self.result.committed = self.writer.committed()  # those written so far; the writer may go on
        self._update_status(state, self.status.episode, None, None)
        return self.result

    # --- status ------------------------------------------------------------------------

    def _camera_drops(self) -> int:
        return sum(_dropped(c) for c in self.cameras.values())

    def _camera_status(self, observation: Observation) -> None:
        """Per camera: measured frame rate (over ~1 s), drops, age of the frame used."""
        now = time.monotonic()
        if not self.cameras:
            # Frames rendered in-process (the twin): one per tick, never dropped or late.
            p50, _ = self.clock.percentiles_ms()
            for role in observation.frames:
                self.status.cameras[role] = CameraStatus(fps=1e3 / p50 if p50 else 0.0)
            return
        ages = observation.frame_ages_s()
        for role, camera in self.cameras.items():
            stats = getattr(camera, "stats", None)
            frames = int(getattr(stats, "frames", 0))
            last_frames, last_time, fps = self._camera_rates.get(role, (frames, now, 0.0))
            if now - last_time >= 1.0:
                fps, last_frames, last_time = (frames - last_frames) / (now - last_time), frames, now
            self._camera_rates[role] = (last_frames, last_time, fps)
            age_ms = ages.get(role, 0.0) * 1e3
            self.status.cameras[role] = CameraStatus(fps=fps, dropped=_dropped(camera), age_ms=age_ms)

    def _update_status(self, state: RecorderState, episode: int, action: Any,
                       observation: Observation | None) -> None:
        status = self.status
        status.state = state
        status.episode = min(episode, self.config.episodes - 1)
        if observation is not None:
            status.follower = [float(v) for v in observation.state]
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
        status.loop = LoopStatus(self.config.fps, p50, p99, self.clock.overruns)
        stats = self.writer.stats()
        status.writer = WriterStatus(stats.queue_depth, stats.queue_capacity, stats.high_water,
                                     self.writer.mb_per_s(), stats.backpressure_s * 1e3, stats.pending_episodes)
        while self._saved_seen < stats.committed_count and self._saving:
            s = self._saving.popleft()
            s.state = "saved"
            self._saved_seen += 1
            status.message = f"episode {s.index + 1} saved ({s.frames} frames)"
        if observation is not None:
            self._camera_status(observation)
        if observation is not None and self.clock.ticks % self.config.thumbnail_every == 0:
            for role, frame in observation.frames.items():
                status.thumbnails[role] = thumbnail_from_image(frame.image)
        try:
            self._publish(status)
        except Exception:  # a dashboard problem must never stop the recording
            log.exception("status publish failed")


def _dropped(camera: Any) -> int:
    stats = getattr(camera, "stats", None)
    return int(getattr(stats, "dropped", 0))
