"""`RecordingSession`: the fixed-rate teleoperation loop and the episode flow around it.

Each tick: commands from the dashboard -> (an episode begins here, if one is due) ->
`robot.observe()` -> `teleop.read()` -> `robot.act()` (clamped by the robot) -> the frame
(that observation, the action sent after it) goes to the background writer -> status out.
Observing first is lerobot's order: row t pairs what the robot saw with what it was told
to do next, which is what a policy learns. An episode begins at the top of a tick, before
that tick observes, so every episode's first row is its own t = 0 and it holds
`round(episode_time_s * fps)` rows. Between episodes a reset period runs the same loop
without recording, so the operator can put the scene back; after the last one, a session
that holds at its end (on a robot) runs it until q or Ctrl-C, so the operator rests the
follower before torque goes off. The loop waits on the disk
only when the writer's queue is full (back-pressure, measured and shown), never on the
screen: the writer and the dashboard have their own threads, and the status sink only
keeps the latest status. Nothing a tick does grows with the number of
episodes recorded, so a long session keeps its tick time and its memory.

Beside it: what a run is asked and how it ended (session_config.py), the cameras'
freshness counts per take (camera_health.py), the writer (writer.py), the clock (clock.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from shallowpi.data.features import ACTION_KEY
from shallowpi.data.row_ranges import describe_indices
from shallowpi.errors import PlatformError
from shallowpi.record.camera_health import CameraHealth
from shallowpi.record.clock import TickClock, prompt_gil_handover
from shallowpi.record.disk import DiskBudget
from shallowpi.record.fault_hold import FaultHold, hold_or_release
from shallowpi.record.session_config import (
    OnInterrupt,
    Scene,
    SessionConfig,
    SessionResult,
    Teleoperator,
)
from shallowpi.record.writer import BackgroundWriter, WaitAbandoned
from shallowpi.robots.base import LinkCounts, Robot
from shallowpi.robots.catch_up import CatchUp
from shallowpi.robots.observation import Observation, lerobot_row
from shallowpi.telemetry import keys
from shallowpi.telemetry.status import (
    EPISODES_KEPT,
    Command,
    EpisodeSummary,
    LoopStatus,
    RecorderState,
    RecorderStatus,
    Request,
    WriterStatus,
)
from shallowpi.telemetry.thumbnail import thumbnail_from_image
from shallowpi.teleop.jog import JoggedTeleop

__all__ = ["OnInterrupt", "RecordingSession", "Scene", "SessionConfig", "SessionResult", "Teleoperator"]

log = logging.getLogger(__name__)


class RecordingSession:
    """The teleoperation loop at `config.fps` and the episode flow around it (module docstring).

    Each tick observes `robot`, reads `teleop`, sends the action and hands the frame to
    `writer`; statuses go to `publish`, dashboard commands come from `commands`. `scene`
    (simulation) resets each episode and judges its success; `disk`, if given, refuses an
    episode the disk has no room for; `catch_up`, if given, brings the follower to the
    teleoperator slowly first, and no episode begins before it has (robots/catch_up.py).
    Episodes are numbered by their store index. Single
    threaded: only `request_stop` may be called from another thread or a signal handler.
    """

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
        commands: Callable[[], Sequence[Command | Request]] | None = None,
        cameras: Mapping[str, Any] | None = None,
        joint_limits: tuple[list[float], list[float]] | None = None,
        disk: DiskBudget | None = None,
        catch_up: CatchUp | None = None,
    ) -> None:
        self.config = config
        self.robot = robot
        self.teleop = teleop
        self.writer = writer
        self.clock = clock
        self.scene = scene
        self.disk = disk
        self.catch_up = catch_up
        self.camera_health = CameraHealth(cameras or {}, config.fps)
        self._link_start = self._link_counts()  # the servo links' counts when the take began
        self._link_warned = False  # its warning is given once a take
        self._publish = publish or (lambda status: None)
        self._commands = commands or list
        self._stop = threading.Event()
        self.status = RecorderStatus(
            robot=config.robot, dataset=config.dataset, task=config.task,
            episodes_total=config.episodes, episode_time_limit_s=config.episode_time_s,
            joint_names=list(joint_names), loop=LoopStatus(target_hz=config.fps),
            jog_joints=[j.name for j in teleop.joints] if isinstance(teleop, JoggedTeleop) else [],
        )
        if joint_limits is not None:
            self.status.joint_lower, self.status.joint_upper = list(joint_limits[0]), list(joint_limits[1])
        self.result = SessionResult()
        # Episodes are numbered by their index in the store, on every screen and line: the
        # next one kept is store index `_store_base + _episode` (kept ones commit in order,
        # and only the one saved last is ever deleted). Episode summaries are appended to
        # the status once (the dashboards list them), kept episodes wait in `_saving` until
        # the writer reports them committed.
        self._take = EpisodeSummary(0, 0, 0.0)  # the take begun last
        self._saving: deque[EpisodeSummary] = deque()
        self._saved_seen = 0  # commits the writer reported so far
        self._store_base = len(writer.store)  # read before the writer thread commits anything
        self.status.first_episode = self.status.episode = self._store_base
        self._state = RecorderState.IDLE
        self._recording = False
        self._finished = False  # every episode asked for is saved (as opposed to stopped early)
        self._episode = 0  # episodes this run has kept so far
        self._frames = 0  # frames of the take in flight
        self._start_tick, self._start_s = 0, 0.0
        self._zero_s: float | None = None  # the take's first observation's time_s: its episode clock's 0
        self._reset_until = 0.0
        self._held_reset_s = 0.0  # the reset countdown left when p held it
        self._last_saved: EpisodeSummary | None = None  # what d / r / s / f act on between takes
        self._deleted: EpisodeSummary | None = None  # the one d / r deleted last, for their answers
        self._ended: tuple[int, str] | None = None  # the take ended last: its store index, how it ended
        self._deferred: list[Request] = []  # commands read during a wait for the writer
        self._sent: np.ndarray | None = None  # the goals act() sent last, where a jog starts
        self._answered = False  # this tick acted on a key, whose answer is the status message
        self._fault_hold: FaultHold | None = None  # the robot watched while a fault waits (watch_after_end)

    @property
    def first_episode(self) -> int:
        """Store index of this run's first episode (the store's length when it began)."""
        return self._store_base

    def request_stop(self) -> None:
        """Ctrl-C / SIGTERM: end at the next tick (episode saved or discarded per config)."""
        self._stop.set()

    def estop_after_end(self) -> None:
        """An E-STOP after the session ended on a fault, while the robot holds position for
        the operator to acknowledge the fault: torque off now, said in the status (published)
        and in the result's fault line."""
        safety = self._torque_off()
        log.error("E-STOP pressed while the robot held after the fault: %s", safety)  # the log says what ended it
        self._held_after_end().torque_went_off()
        self.result.fault = f"{self.result.fault}; then e-stop pressed: {safety}"
        self.status.message = f"E-STOP: {safety}"
        try:
            self._publish(self.status)
        except Exception:  # a dashboard problem must never keep the e-stop from being told
            log.exception("status publish failed")

    def watch_after_end(self) -> None:
        """While the session, ended on a fault, holds the robot for the operator to
        acknowledge it (call it often): its servos' alarms read once a second, a fault
        handled and shown, the status published again (`FaultHold`)."""
        self._held_after_end().watch()

    def _held_after_end(self) -> FaultHold:
        if self._fault_hold is None:
            self._fault_hold = FaultHold(self.robot, self.status, self._publish, self.result)
        return self._fault_hold

    # --- the loop ----------------------------------------------------------------------

    def run(self) -> SessionResult:
        """Record until every episode is saved, a stop, an e-stop or a fault; never raises
        for a device or disk fault (`result.fault` says what happened and how the robot
        was left)."""
        with prompt_gil_handover(not getattr(self.clock, "simulated", False)):  # beside the encoder threads
            return self._loop()

    def _loop(self) -> SessionResult:
        cfg = self.config
        self.clock.restart()
        self.clock.end_take()  # no take before the first `_begin`: no period to keep for one
        if cfg.autostart:  # the first episode begins at the first tick, as every other one
            self._state, self._reset_until = RecorderState.RESETTING, self.clock.now()
        while not self._finished:
            try:  # a PlatformError anywhere in the tick (servo, camera, writer, disk) is a fault
                self._raise_writer_failure()
                if self._stop.is_set():
                    if self._recording:
                        self._end_episode(keep=cfg.on_interrupt is OnInterrupt.SAVE, ended="interrupted")
                    # q or Ctrl-C is how a held end is released: the run was complete.
                    self.result.interrupted = self._state is not RecorderState.DONE
                    break
                commands, self._deferred = [*self._deferred, *map(Request.of, self._commands())], []
                self._answered = bool(commands)
                # An E-STOP acts before anything queued beside it: a STOP ahead of it would
                # hand its take to the writer first, and wait there while the disk is behind.
                commands.sort(key=lambda r: r.command is not Command.ESTOP)
                for command in commands:
                    if self._on_command(command):
                        return self._finish(RecorderState.FAULT)
                if self._stop.is_set() or self._finished:
                    continue

                if (self._state is RecorderState.RESETTING and not self._recording
                        and self.clock.now() >= self._reset_until):
                    # Before this tick observes: the observation below is the episode's t = 0.
                    self._begin()
                observation = self.robot.observe()
                action = self.teleop.read()
                sent = self._sent = self.robot.act(self._catching_up(action, observation))
                self.clock.command_sent()  # after a slow frame, the next command a period on (TickClock)
                if self._recording:
                    t = self._record_frame(observation, sent)
                    self._frames += 1
                    self.status.episode_time_s = t
                    # The row of the take in flight grows with it on the dashboards.
                    self._take.frames, self._take.duration_s = self._frames, self._frames / cfg.fps
                    scene_done = self.scene is not None and self.scene.done()
                    if scene_done or self._frames >= cfg.episode_rows:
                        self._keep_and_continue(RecorderState.RESETTING, "expert done" if scene_done else "time limit")
                elif self._state is RecorderState.RESETTING:
                    self.status.reset_time_left_s = max(0.0, self._reset_until - self.clock.now())
            except WaitAbandoned:  # an E-STOP while the loop waited for the disk
                self._estop()
                return self._finish(RecorderState.FAULT)
            except PlatformError as fault:
                self._fault(fault)
                return self._finish(RecorderState.FAULT)
            self._update_status(self._state, action, observation)
            self.clock.wait()
        return self._finish(RecorderState.STOPPED)

    # --- keys: telemetry/keys.py is the table, this is what each entry does ------------

    def _on_command(self, request: Request) -> bool:
        """Act on one dashboard command as the key table says; True when it ends the
        session with a fault (e-stop). A command with no meaning in the state says so, and
        so does one whose key was pressed for another state, where it meant something else
        (a key pressed twice before the screen caught up)."""
        state, command = self._state, request.command
        if command is Command.ESTOP:
            self._estop()
            return True
        if keys.effect(command, state) is None:
            self.status.message = keys.ignored(command, state)
            return False
        ended = self._ended[1] if self._ended is not None and self._ended[0] == request.episode else None
        overtaken = keys.overtaken(request, state, self._shown_episode, ended)
        meant = self._meant_mark(request) if overtaken is not None else None
        if overtaken is not None and meant is None:
            self.status.message = overtaken
            return False
        if command is Command.QUIT:
            self._stop.set()
        elif command in keys.JOG:
            self._jog(request)
        elif command in (Command.START, Command.NEXT):
            self._begin()
        elif command is Command.STOP:
            self._keep_and_continue(RecorderState.RESETTING, "stopped")
        elif command is Command.PAUSE:
            self._pause_or_resume(state)
        elif command is Command.DISCARD and state is RecorderState.RECORDING:
            self._end_episode(keep=False)
            self._reset(RecorderState.RESETTING)
        elif command is Command.RERECORD and state is RecorderState.RECORDING:
            self._end_episode(keep=False)
            self._begin_again(": take discarded")
        elif command in (Command.DISCARD, Command.RERECORD):
            if self._delete_last_saved():
                if command is Command.RERECORD:
                    self._begin_again(" deleted from the store")
                elif state is RecorderState.DONE:  # one episode short again
                    self._reset(RecorderState.RESETTING)
        elif command in (Command.SUCCESS, Command.FAILURE):
            self._mark(command is Command.SUCCESS, meant)
        return False

    def _jog(self, request: Request) -> None:
        """], + or -: pick or step a joint no leader drives (teleop/jog.py), from the goal
        the robot holds; the next ticks' act() move it, velocity-bounded. Before the first
        tick has sent a goal, the key waits a tick."""
        teleop = self.teleop
        if not isinstance(teleop, JoggedTeleop):
            self.status.message = f"{keys.KEY[request.command]} ignored: the teleoperator drives every joint"
        elif self._sent is None:
            self._deferred.append(request)
        elif request.command is Command.JOG_NEXT:
            self.status.message = teleop.pick_next()
        else:
            holding = dict(zip(self.status.joint_names, self._sent.tolist()))
            self.status.message = teleop.step(1 if request.command is Command.JOG_UP else -1, holding)

    def _meant_mark(self, request: Request) -> EpisodeSummary | None:
        """The episode s / f pressed on another state's screen means, where the recorder
        has moved on since: on a take's recording screen, that take once it has been saved
        ("mark the take" then is "mark that episode" now, between takes or with the next
        take already recording, no reset); on the screen of a reset or a pause, which shows
        the episode to record next, the one saved before it, though the next take has begun
        since ("mark the episode saved last" then, "mark the take" now). None unless that
        is still the episode saved last (a d or r came between: the key is refused)."""
        if request.command not in (Command.SUCCESS, Command.FAILURE) or request.episode is None:
            return None
        if request.seen == RecorderState.RECORDING.value:
            shown = request.episode
        elif request.seen in (RecorderState.RESETTING.value, RecorderState.PAUSED.value):
            shown = request.episode - 1  # they show the next episode; kept ones are numbered in order
        else:
            return None
        target = self._last_saved
        if target is not None and target.index == shown and target.state in ("saving", "saved"):
            return target
        return None

    def _estop_while_waiting(self) -> bool:
        """Asked while the loop waits for the writer (the disk behind): an E-STOP among the
        commands ends the wait (True; the loop then turns torque off), the others wait
        for the next tick in `_deferred`."""
        for command in map(Request.of, self._commands()):
            if command.command is Command.ESTOP:
                return True
            self._deferred.append(command)
        return False

    def _pause_or_resume(self, state: RecorderState) -> None:
        """p: recording -> save the take and hold; resetting -> hold the countdown; paused
        -> the countdown goes on from where it was held. Nothing recorded is lost."""
        if state is RecorderState.RECORDING:
            self._keep_and_continue(RecorderState.PAUSED, "paused")
            self._held_reset_s = self.status.reset_time_left_s = self.config.reset_time_s
        elif state is RecorderState.RESETTING:
            self._held_reset_s = self.status.reset_time_left_s = max(0.0, self._reset_until - self.clock.now())
            self._state = RecorderState.PAUSED
            self.status.message = (f"paused: reset held with {self._held_reset_s:.1f} s left; "
                                   "p resumes it, space records the next episode")
        else:
            self._state = RecorderState.RESETTING
            self._reset_until = self.clock.now() + self._held_reset_s
            self.status.message = f"reset resumed: {self._held_reset_s:.1f} s left"

    def _keep_and_continue(self, then: RecorderState, ended: str) -> None:
        """Save the take, which `ended` says how; the next state is `then` (a reset or a
        pause), or the end."""
        self._end_episode(keep=True, ended=ended)
        if self._episode < self.config.episodes:
            self._reset(then)
        elif self.config.hold_at_end:
            self._state = RecorderState.DONE
            self.status.message = (f"all {self.config.episodes} episode(s) recorded; the follower still follows, "
                                   "nothing is recorded: bring it to rest, then q or Ctrl-C (torque off)")
        else:
            self._finished = True
            # No longer recording: a d or r later in the same tick's keys must not take the
            # episode just saved for the take in flight (the key table ignores them here).
            self._state = RecorderState.STOPPED

    def _reset(self, state: RecorderState) -> None:
        self._state = state
        self._reset_until = self.clock.now() + self.config.reset_time_s
        self.status.reset_time_left_s = self.config.reset_time_s

    def _delete_last_saved(self) -> bool:
        """d / r between takes: delete the episode this run saved last from the store;
        False (and says why) if there is none."""
        summary = self._last_saved
        if summary is None:
            self.status.message = f"nothing to delete: {self._nothing_saved_last()}"
            return False
        self.writer.delete(summary.index, give_up=self._estop_while_waiting)  # after its commit: in order
        self.status.episodes_saved -= summary.state == "saved"
        summary.state = "deleted"
        self._last_saved, self._deleted = None, summary
        self._episode -= 1
        self.result.deleted += 1
        self.status.message = f"episode {summary.index} deleted from the store; it will be recorded again"
        # A committed episode gone: the run's log says so, not only the screen.
        log.info("episode %d deleted from the store (%d frames)", summary.index, summary.frames)
        return True

    def _nothing_saved_last(self) -> str:
        """Why d, r, s or f between takes find no episode saved last: this run saved none
        yet, or the one it saved last was deleted (earlier ones stay saved, and unmarkable
        from here: only the episode saved last is)."""
        if self._deleted is None:
            return "no episode of this run is saved"
        return (f"episode {self._deleted.index}, the one this run saved last, was deleted from the store; "
                "only the episode saved last can be deleted or marked")

    @property
    def _store_index(self) -> int:
        """Store index of the take in flight (or of the next one)."""
        return self._store_base + self._episode

    @property
    def _shown_episode(self) -> int:
        """The episode the status names: the take in flight, else the next one; once all
        are saved, the last one saved."""
        return self._store_index - (1 if self._finished or self._state is RecorderState.DONE else 0)

    # --- episode flow ------------------------------------------------------------------

    def _catching_up(self, action: Any, observation: Observation) -> Any:
        """The goal to send this tick: the teleoperator's, or the catch-up's slow step toward it."""
        if self.catch_up is None or self.catch_up.done:
            return action
        goal = self.catch_up(action, observation.state)
        # describe() changes once a second: the --no-tui lines print each change.
        self.status.message = ("the follower has caught up with the leader" if self.catch_up.done
                               else self.catch_up.describe())
        return goal

    def _begin(self) -> None:
        """Start the next episode in the current tick, before it observes; raises
        `DiskSpaceError` (nothing started) when the disk has no room for it. Before the
        follower has caught up with the teleoperator it starts nothing and says so."""
        if self.catch_up is not None and not self.catch_up.done:
            self.status.message = self.catch_up.describe()
            return
        episode, index = self._episode, self._store_index
        if self.disk is not None:
            # Episodes still queued for the writer have not taken their space yet.
            self.disk.check_room(index, queued=self.writer.stats().pending_episodes)
        if self.scene is not None:
            self.scene.reset(episode)
        self.writer.begin(index, self.config.task, robot=self.config.robot,
                          calibration_id=self.config.calibration_id, fps=self.config.fps,
                          start_time=time.time(), give_up=self._estop_while_waiting)
        self.clock.reset_stats()
        self.camera_health.begin_take()
        self._link_start, self._link_warned = self._link_counts(), False
        summary = self._take = EpisodeSummary(index, 0, 0.0, None, "recording")
        episodes = self.status.episodes
        if episodes and episodes[-1].index == index:
            episodes[-1] = summary  # the take before (discarded, or deleted after saving) is replaced
        else:
            episodes.append(summary)
            if len(episodes) > EPISODES_KEPT:
                episodes.pop(0)
                self.status.episodes_earlier += 1
        self.status.message = f"recording episode {index} ({episode + 1}/{self.config.episodes} of this run)"
        self._state, self._recording, self._frames = RecorderState.RECORDING, True, 0
        self._start_tick, self._start_s = self.clock.ticks, self.clock.tick_start_s()
        self._zero_s = None  # set by the take's first observation, after any wait above
        self.status.episode_time_s = 0.0

    def _begin_again(self, what: str) -> None:
        """r: record the episode whose take was discarded, or which was deleted from the
        store, again now; the answer says `what` became of it: _begin's own "recording
        episode N" would hide it from the screen, the --no-tui lines and the log."""
        self._begin()
        if self._recording:  # else the catch-up's line says why nothing began
            self.status.message = f"episode {self._take.index}{what}; recording it again"
            log.info("%s", self.status.message)

    def _episode_time(self, observation: Observation) -> float:
        """The row's time on the take's episode clock [s], as `deploy --record` stores its
        episodes: on the wall clock, the observation's time from the take's first one (after
        `_begin`, which may wait for the writer), so that every capture time, measured on
        the robot's clock, lands on it too (from the tick's start, they were early by what
        the tick did before it observed: at a take's first tick, all of that wait); under
        simulated time, whole periods, a tick being one period of it (the twin's own clock
        moves in whole physics steps, 1/30 s being 16 or 17 steps of 2 ms)."""
        if getattr(self.clock, "simulated", False):
            return self.clock.tick_time(self._start_tick, self._start_s)
        if self._zero_s is None:
            self._zero_s = observation.time_s
        return observation.time_s - self._zero_s

    def _record_frame(self, observation: Observation, sent: np.ndarray) -> float:
        """Queue the tick's row with the action `sent`; returns its time [s] (`_episode_time`)."""
        row = lerobot_row(observation, self._episode_time(observation))  # each frame keeps its age
        waited = self.writer.add_frame({**row.values, ACTION_KEY: np.asarray(sent, np.float32)},
                                       row.timestamp, row.capture_times, give_up=self._estop_while_waiting)
        if waited > 0:
            self.status.message = f"disk is behind: the loop waited {waited * 1e3:.0f} ms for the writer"
        # A late camera's last picture paired with the present state and action: counted
        # per take, stored with it, shown at once (camera_health.py).
        stale_age = self.camera_health.count_row(observation)
        if stale_age is not None:
            self.status.message = (f"camera picture {stale_age * 1e3:.0f} ms old: {self.camera_health.stale_rows} "
                                   "rows of this take hold a stale picture (r re-records it)")
        return row.timestamp

    def _end_episode(self, keep: bool, safe: bool = False, ended: str = "") -> None:
        """End the take in flight: hand it to the writer to commit, with how it `ended`
        (time limit, expert done, stopped, paused, interrupted: `extra.ended`, as deploy's
        episodes have it, so a review tells a cut take from a whole one), or discard it.
        While the disk is behind the hand-over waits, an E-STOP ending the wait
        (WaitAbandoned: the take is discarded, as every take an E-STOP interrupts); `safe`
        (after a fault or an e-stop, the robot already held or off) waits without asking."""
        summary, frames = self._take, self._frames
        give_up = None if safe else self._estop_while_waiting
        self._recording = False
        self._ended = (summary.index, ended if keep and frames > 0 else "discarded")  # a late key's answer says it
        # Its loop periods and camera drops are the take's: those of the reset after it
        # belong to no take (the dashboard shows the take's drops until the next begins).
        self.clock.end_take()
        self.camera_health.end_take()
        try:
            self._hand_over(summary, frames, keep, give_up, ended)
        except WaitAbandoned:
            self._count_unsaved(summary, lost=False)
            raise
        except PlatformError:
            if summary.state == "recording" and self.writer.failure is not None:
                self._count_unsaved(summary, lost=keep and frames > 0)  # the writer died as it was handed over
            raise

    def _count_unsaved(self, summary: EpisodeSummary, lost: bool) -> None:
        """A take that will not be in the store: `lost` when it was to be kept and the
        writer failed (counted and said so at the end), else discarded (as asked, by an
        E-STOP, or dropped by a fault like any take in flight)."""
        summary.state = "lost" if lost else "discarded"
        if lost:
            self.result.lost += 1
        else:
            self.result.discarded += 1

    def _hand_over(self, summary: EpisodeSummary, frames: int, keep: bool,
                   give_up: Callable[[], bool] | None, ended: str) -> None:
        if self.writer.failure is not None:  # nothing more reaches the store
            self._count_unsaved(summary, lost=keep and frames > 0)
            return
        if keep and frames > 0:
            success = self.scene.success() if self.scene is not None else None
            if summary.success is not None:
                success = summary.success
            p50, p99 = self.clock.take_percentiles_ms()  # every period of the take, as its overruns
            link = self._link_counts().since(self._link_start)
            extra = {"ended": ended, "loop_p50_ms": p50, "loop_p99_ms": p99, "loop_overruns": self.clock.overruns,
                     "link_exchanges": link.exchanges, "link_failed_tries": link.failed_tries,
                     "backpressure_s": self.writer.stats().backpressure_s,
                     "stale_frames": self.camera_health.stale_rows,
                     "repeated_pictures": self.camera_health.repeated_rows}
            if self.config.camera_serials:
                extra["camera_serials"] = dict(self.config.camera_serials)
            if self.scene is not None:
                extra.update(self.scene.metadata())
            self.writer.commit(success=success, dropped_frames=self.camera_health.dropped_this_take(),
                               extra=extra, give_up=give_up)
            summary.frames, summary.duration_s, summary.success = frames, frames / self.config.fps, success
            summary.state = "saving"
            self._saving.append(summary)
            self._last_saved = summary
            self._episode += 1
            self.status.message = f"episode {summary.index} recorded ({frames} frames), saving"
        else:
            self.writer.discard(give_up=give_up)
            self._count_unsaved(summary, lost=False)
            self.status.message = f"episode {summary.index}: take discarded"

    def _mark(self, success: bool, summary: EpisodeSummary | None = None) -> None:
        """s / f: `summary` (the episode the key was pressed for, `_meant_mark`), else the
        take in flight (stored with it at commit), else the episode saved last."""
        summary = summary or (self._take if self._recording else self._last_saved)
        word = "successful" if success else "failed"
        if summary is None:
            self.status.message = f"nothing to mark: {self._nothing_saved_last()}"
            return
        if summary.state in ("saving", "saved"):
            self.writer.mark(summary.index, success, give_up=self._estop_while_waiting)  # after its commit
            summary.success = success  # once queued: an E-STOP ending the wait leaves the store unmarked
            self.status.message = f"episode {summary.index} marked {word} in the store"
        else:
            summary.success = success
            self.status.message = f"episode {summary.index} marked {word} (stored with it)"

    def _fault(self, fault: PlatformError) -> None:
        log.error("fault: %s", fault)
        # The robot first: ending the take may wait on a writer busy with a commit's fsyncs
        # (or raise, if the writer has died too).
        safety = self._safe_state(fault)
        self._drop_take()
        if self.writer.failure is not None:
            self._mark_lost()
        self.result.fault = f"{fault}; {safety}"
        self.status.message = f"FAULT: {fault}; {safety}; episodes already saved are kept"

    def _torque_off(self) -> str:
        """Torque off on every bus (an e-stop); what the operator is told of it."""
        try:
            self.robot.torque_off()
            return "torque off, robot is safe"
        except PlatformError as exc:
            log.error("e-stop: %s", exc)
            return f"torque off FAILED ({exc}); cut the servo power now"

    def _estop(self) -> None:
        safety = self._torque_off()
        # In the log as a fault is: the status and the result's line alone left the
        # recorder's log file without what ended the session.
        log.error("E-STOP pressed: %s%s", safety, "; the take in flight is discarded" if self._recording else "")
        self._drop_take()
        self.result.fault = f"e-stop pressed; {safety}"
        self.status.message = f"E-STOP: {safety}; episodes already saved are kept"

    def _drop_take(self) -> None:
        """Discard the take in flight after a fault or an e-stop; a writer that fails doing
        so is logged (its own failure is reported by the run), never raised past the safe state."""
        if self._recording:
            try:
                self._end_episode(keep=False, safe=True)
            except PlatformError as exc:
                log.error("discarding the take in flight failed: %s", exc)

    def refresh_writer_status(self) -> Any:
        """The writer's counters (queue, high water, MB/s, back-pressure, takes pending) into
        the status, each tick and while the writer drains after the loop; returns the
        writer's stats."""
        stats = self.writer.stats()
        self.status.writer = WriterStatus(stats.queue_depth, stats.queue_capacity, stats.high_water,
                                          self.writer.mb_per_s(), stats.backpressure_s * 1e3, stats.pending_episodes)
        return stats

    def writer_closed(self) -> None:
        """Call while the writer drains after the run and once it is closed: the takes it
        committed after the loop ended are marked saved (the final status counts them); if
        it failed, those it never committed are marked lost and counted."""
        if self.writer.failure is not None:
            self._mark_lost()
        else:
            self._mark_saved(self.writer.stats().committed_count)

    def _mark_saved(self, committed: int) -> None:
        """The takes the writer has committed since the last look (`committed` in all) are
        saved, and the message says so, all of them: several commits finish between two
        looks when the disk was behind, or after the loop ended. One deleted since (d / r
        between takes) stays deleted."""
        saved: list[EpisodeSummary] = []
        while self._saved_seen < committed and self._saving:
            summary = self._saving.popleft()
            self._saved_seen += 1
            if summary.state == "deleted":
                continue
            summary.state = "saved"
            self.status.episodes_saved += 1
            saved.append(summary)
        if not saved:
            return
        # All in one message: it is published once after this look, so one message a take
        # left only the last to be seen (--no-tui prints each message: a script waiting for
        # "episode 3 saved" waited on).
        frames = sum(s.frames for s in saved)
        line = (f"episode {saved[0].index} saved ({frames} frames)" if len(saved) == 1 else
                f"episodes {describe_indices([s.index for s in saved])} saved ({frames} frames)")
        # A key's answer given earlier in this tick stays beside it: replaced before it
        # was published, the operator would never see it.
        said = self.status.message
        self.status.message = f"{said}; {line}" if self._answered and said else line

    def _mark_lost(self) -> None:
        """After a writer failure: the takes it was given and never committed (the one it
        was writing, and those queued behind it) are lost; each says so, and the count."""
        self._mark_saved(self.writer.stats().committed_count)  # these it did commit
        for summary in self._saving:
            if summary.state == "saving":
                summary.state = "lost"
                self.result.lost += 1
        self._saving.clear()

    def _raise_writer_failure(self) -> None:
        """A writer that stopped (disk full, I/O error) is a fault like a servo's."""
        if self.writer.failure is not None:
            raise self.writer.failure

    def _safe_state(self, fault: PlatformError | None = None) -> str:
        """Hold position, else torque off, bus by bus on a robot of several
        (`Robot.hold_or_release`); says which was confirmed, or what failed and what to do."""
        return hold_or_release(self.robot, fault)[0]

    def _link_counts(self) -> LinkCounts:
        """The follower's servo links, and the leader arms' where the teleoperator has buses."""
        leaders = getattr(self.teleop, "link_counts", None)  # a keyboard or a script has none
        return self.robot.link_counts().plus(leaders()) if leaders else self.robot.link_counts()

    def _finish(self, state: RecorderState) -> SessionResult:
        self.result.committed = self.writer.committed()  # those written so far; the writer may go on
        self._update_status(state, None, None)
        return self.result

    # --- status ------------------------------------------------------------------------

    def _update_status(self, state: RecorderState, action: Any, observation: Observation | None) -> None:
        status = self.status
        status.state = state
        status.episode = self._shown_episode
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
        link = self._link_counts().since(self._link_start)
        status.loop = LoopStatus(self.config.fps, p50, p99, self.clock.overruns,
                                 simulated=bool(getattr(self.clock, "simulated", False)),
                                 link_exchanges=link.exchanges, link_failed_tries=link.failed_tries)
        status.loop.link_worst, status.loop.link_worst_failed = link.worst()
        if self._recording and not self._link_warned and (warning := link.warning("this take")):
            log.warning("%s", warning)  # a retried exchange loses nothing, but is a fault in the making
            status.message, self._link_warned = warning, True
        self._mark_saved(self.refresh_writer_status().committed_count)
        if observation is not None and state is not RecorderState.PAUSED:
            self.camera_health.update(status.cameras, observation, p50)
        elif state is RecorderState.PAUSED:
            self.camera_health.pause(status.cameras)
        if observation is not None and self.clock.ticks % self.config.thumbnail_every == 0:
            for role, frame in observation.frames.items():
                status.thumbnails[role] = thumbnail_from_image(frame.image)
        try:
            self._publish(status)
        except Exception:  # a dashboard problem must never stop the recording
            log.exception("status publish failed")

