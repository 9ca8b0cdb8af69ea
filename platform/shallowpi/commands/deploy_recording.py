"""`platform deploy --record`: the executed episodes kept in an ordinary episode store,
written beside the control loop so that a slow disk never stalls a command or the e-stop."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from shallowpi.deploy.executor_control import EpisodeReport
    from shallowpi.record.camera_health import CameraHealth

log = logging.getLogger(__name__)

# How long a tick may wait for room in the recording's queue (record.queue_mb of frames, as
# `platform record` holds) before the episode ends as a fault with torque on: the loop, and
# the e-stop read with its status, must not stall behind a disk that cannot keep up.
RECORD_MAX_WAIT_S = 0.25


def executed(extra: dict[str, Any]) -> bool:
    """Whether an episode's metadata says a policy drove it (`deploy --record`): it names
    the policy, or (written before it did) says how it ended without the recorder's loop
    statistics, which every take of `platform record` carries."""
    return "policy_sha256" in extra or ("ended" in extra and "loop_p50_ms" not in extra)


def camera_drivers(target: Any, roles: Collection[str]) -> dict[str, Any]:
    """{role: camera driver} of the target's cameras in `roles`, each counting its dropped
    frames in `stats.dropped`: the robot's RealSenses (`target.cameras`), the stack twin's
    software ones (its robot's, made at connect: ask after it); none for the direct twin,
    whose renders are never dropped (its robot's `cameras` are role names)."""
    for owner in (target, getattr(target, "robot", None)):
        cameras = getattr(owner, "cameras", None)
        if isinstance(cameras, Mapping):
            return {role: camera for role, camera in cameras.items() if role in roles}
    return {}


@dataclass(frozen=True)
class RecordingOutcome:
    """What `--record` kept of this run, once the recorder closed: the store's `path`, the
    episodes of this run committed to it (`kept`), those that ended and are not in it (`lost`:
    the writer failed before their commit, or their commit's wait for the disk was given up),
    and why the writer stopped (`failure`, None when it did not). The exit code and --json's
    "complete" read it: a run whose recording failed is not the run asked for."""

    path: Path
    kept: int
    lost: int
    failure: str | None

    @property
    def ok(self) -> bool:
        """Every episode that ended is in the store, and the writer never failed."""
        return self.failure is None and self.lost == 0

    def as_json(self) -> dict[str, Any]:
        """--json's "recording" object."""
        return {"path": str(self.path), "kept": self.kept, "lost": self.lost, "failure": self.failure}


class DeploymentRecorder:
    """--record: the executed episodes in a normal store (observation, the command sent),
    with the target's calibration id (the twin's: `sim-<robot>`). The loop only queues each
    tick; the recorder's own writer thread (record/writer.BackgroundWriter) encodes the
    frames and syncs them to disk, as when recording demonstrations: a JPEG encode or an
    fsync on the control loop would stall the commands and the e-stop behind it. A queue
    full for RECORD_MAX_WAIT_S, or a failed writer, ends the episode as a fault (the robot
    holds, torque on) instead of stalling the loop; the frames before it are kept. The store,
    the queue and the disk's reserve follow `platform record`'s settings (store.*,
    record.queue_mb, record.disk_reserve_mb): an episode the disk has no room for does not
    start, so rollouts cannot fill a Jetson's disk. Between episodes (`begin`, `end`) the
    loop waits for room as long as the disk needs, the robot holding, unless the `give_up`
    it passes ends the wait (Executor.watched_wait: an e-stop, a stop, a fault); an episode
    whose end was given up is not kept (as `platform record` drops a take an E-STOP cut off)."""

    def __init__(self, dataset: str, cfg: Any, target: Any, cameras: list[str],
                 allow_mixed_calibration: bool = False, policy_sha256: str = "") -> None:
        """Opens (or creates) the store before the robot connects: an existing one must hold
        these features at this rate and, unless `allow_mixed_calibration`, this calibration,
        in the current format, as `platform record --resume` asks (StoreError, one line);
        found at the first tick, it ended an episode with the arm powered, and an old-format
        store took episodes paired a row off. Every episode names the policy that drove it
        (`policy_sha256`, its checkpoint's weights), and a store of recorded demonstrations
        is taken with a warning: trained on, it would learn from the policy's rollouts.

        `cfg` is the composed config: a new store is created with its store.* settings (an
        existing one keeps its own, with a warning naming those it differs in), the writer
        queues record.queue_mb of frames, and DiskSpaceError (one line) refuses a disk whose
        free space is already below record.disk_reserve_mb, before a store is made; ConfigError
        for a record.queue_mb or disk_reserve_mb that is not a finite number in range."""
        from shallowpi import config
        from shallowpi.data.features import robot_features
        from shallowpi.data.store import EpisodeStore
        from shallowpi.errors import StoreError
        from shallowpi.record.camera_health import CameraHealth
        from shallowpi.record.disk import DiskBudget
        from shallowpi.record.settings import (
            check_record_numbers,
            queue_frames,
            reserve_bytes,
            store_settings,
            warn_other_settings,
        )
        from shallowpi.record.writer import BackgroundWriter
        from shallowpi.robots.base import ticks_in
        from shallowpi.robots.cameras import camera_serials

        check_record_numbers(cfg.record, ("queue_mb", "disk_reserve_mb"))
        path = config.resolve_dataset(dataset, config.data_root(cfg))
        shapes = target.camera_shapes  # a property that builds its dict: read once
        features = robot_features(target.joint_names, {role: shapes[role] for role in cameras}, target.joint_kinds)
        # Each episode runs at most target.episode_s; the estimate of its size is checked
        # before it begins (`begin`), the reserve now, before a store is made.
        settings = store_settings(cfg.store)
        self.disk = DiskBudget(path, features, max(1, ticks_in(target.episode_s, target.fps)),
                               reserve_bytes=reserve_bytes(cfg.record), numeric_chunk_rows=settings.numeric_chunk_rows)
        self.disk.require_reserve()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Refused from a reader first (open_or_create's `check`): the writable open moves a
        # layout-1 store to layout 2 for good, and a refusal must leave the store as it was.
        self.store = EpisodeStore.open_or_create(path, features, settings, check=lambda store: store.check_recordable(
            fps=target.fps, calibration_id=target.calibration_id, allow_mixed_calibration=allow_mixed_calibration))
        self.disk.numeric_chunk_rows = self.store.settings.numeric_chunk_rows  # its own, episodes or none
        try:
            self.store.check_recordable(fps=target.fps, calibration_id=target.calibration_id,  # a new store too
                                        allow_mixed_calibration=allow_mixed_calibration)
            if allow_mixed_calibration:
                self.store.allow_mixed_calibration()
            warn_other_settings(self.store, cfg.store, f"--record {path.name}")
            if len(self.store):  # the size of an episode on disk, from the store's last one
                self.disk.learn(self.store, len(self.store) - 1)
        except BaseException:
            self.store.close()
            raise
        demonstrations = 0
        for index in range(len(self.store)):
            try:
                demonstrations += not executed(self.store.episode(index).extra)
            except StoreError:  # an old episode's metadata damaged: `dataset check` names it; no reason to refuse
                continue
        if demonstrations:
            log.warning("--record %s: the store holds %d recorded demonstration(s); the policy's episodes join "
                        "them (each names its policy in extra.policy_sha256), and training on the store would "
                        "learn from them too: give --record another name to keep them apart",
                        path.name, demonstrations)
        self.writer = BackgroundWriter(self.store,
                                       capacity_frames=queue_frames(cfg.record.queue_mb, self.store.features),
                                       on_commit=lambda info: self.disk.learn(self.store, info.index))
        self.policy_sha256 = policy_sha256
        self.camera_serials = camera_serials(camera_drivers(target, cameras))  # the stack twin's: at `begin`
        self.path, self._t0, self._rows = path, 0.0, 0
        # In the twin a tick is one period of simulated time, as `platform record` stores it.
        self._simulated = not getattr(target, "on_hardware", True)
        self._keys = frozenset(self.store.features)  # what each row may hold
        self._target, self._roles = target, frozenset(cameras)
        # The episode's camera counts, as `platform record` keeps a take's: drops from the
        # drivers' counters, stale and repeated pictures from the rows (set at `begin`).
        self.camera_health: CameraHealth = CameraHealth({}, target.fps)
        self._next = len(self.store)  # the store index of the next episode begun
        self.calibration_id = target.calibration_id
        # The episodes whose `end` was given up, not kept: (number in this run from 1, store index).
        self.given_up: list[tuple[int, int]] = []
        self._begun = 0  # episodes begun in this run
        self._ended = 0  # episodes of this run with rows handed to `end`: each to be kept (RecordingOutcome)
        self._open = False  # an episode begun and neither committed nor discarded (its end given up)

    def begin(self, task: str, robot: str, fps: float,
              give_up: Callable[[], bool] | None = None) -> Callable[[Any, np.ndarray], None]:
        """Queue a new episode for the ticks that follow; returns the per-tick callback
        (which raises the writer's WriterError once it has failed). Raises DiskSpaceError,
        nothing queued, when the disk has no room for the episode beyond the reserve (the
        episodes the writer still holds count as written), as `platform record` before each
        take. Call it after the target connected (the stack twin's cameras are made then).
        While the writer's queue is full (the disk behind) it waits for room, asking
        `give_up` every 0.1 s: True raises the writer's WaitAbandoned, nothing begun."""
        from shallowpi.record.camera_health import CameraHealth
        from shallowpi.robots.cameras import camera_serials
        from shallowpi.robots.observation import Observation, lerobot_row

        if self._open:  # the episode before, whose end was given up: dropped, never half-kept
            self.writer.discard(give_up=give_up)
            self._open = False
            self._next -= 1  # its store index is the next episode's
        self.disk.check_room(self._next, queued=self.writer.stats().pending_episodes)
        self.writer.begin(self._next, task, robot=robot, calibration_id=self.calibration_id, fps=fps,
                          start_time=time.time(), give_up=give_up)
        self._next += 1
        self._begun += 1
        self._open = True
        self._t0, self._rows = -1.0, 0
        drivers = camera_drivers(self._target, self._roles)
        self.camera_serials = camera_serials(drivers)
        self.camera_health = CameraHealth(drivers, fps)
        self.camera_health.begin_take()

        def on_tick(obs: Any, sent: np.ndarray) -> None:
            # On the episode's clock, as `platform record` keeps it: on the robot, 0 is the
            # first observation and each frame keeps its age; in the twin, row k is k periods
            # (its physics moves in whole 2 ms steps: 1/30 s is 16 or 17 of them).
            self._t0 = obs.time_s if self._t0 < 0 else self._t0
            row = lerobot_row(obs, self._rows / fps if self._simulated else obs.time_s - self._t0)
            self._rows += 1
            # The store's features only: a target may observe a camera the policy does not
            # read (one the store was not made with), which ended the episode as a fault.
            values = {key: value for key, value in row.values.items() if key in self._keys}
            values["action"] = np.asarray(sent, np.float32)
            self.writer.add_frame(values, row.timestamp, row.capture_times, max_wait_s=RECORD_MAX_WAIT_S)
            if obs.frames.keys() - self._roles:  # count the pictures the row holds only
                obs = Observation(obs.time_s, obs.state, {r: f for r, f in obs.frames.items() if r in self._roles})
            self.camera_health.count_row(obs)

        return on_tick

    def end(self, report: EpisodeReport, seed: int | None = None, give_up: Callable[[], bool] | None = None) -> None:
        """Queue the episode's commit, with the executor's `report` of it: its success, how
        it `ended` (time up, success held, stopped, e-stop, fault: a review tells a stopped
        episode from a finished one) and how often the robot held (`holds`, `hold_ticks`;
        `watchdog_stale_frames`: ticks held on a frame older than deploy.max_frame_age_s).
        The camera counts are `platform record`'s, with the same meaning in both kinds of
        store: `dropped_frames` (the drivers' own, during the episode), `extra.stale_frames`
        (rows whose picture is over three periods old), `extra.repeated_pictures`. With the
        policy, the cameras' serials and, in the twin, the scene's `seed` (`eval --sim` and
        training tell its scenes by it: without it a rollout of a held-out scene could be
        trained on unseen). Nothing once the writer has failed (`close` says why).

        While the writer's queue is full (the disk behind) it waits for room, asking
        `give_up` every 0.1 s: True raises the writer's WaitAbandoned, the commit not queued,
        and the episode is not kept (discarded before the next `begin`, or as the writer
        closes: nothing of it reaches the store half-written); `close` names it."""
        from shallowpi.record.writer import WaitAbandoned

        # To be kept: one the writer failed before is counted lost at `close`. One of no rows
        # (a start position never reached, a stop before the first tick) the writer drops by
        # design: not lost.
        if self._rows:
            self._ended += 1
        if self.writer.failure is None:
            health = self.camera_health
            extra = {"ended": report.ended, "policy_sha256": self.policy_sha256,
                     "holds": report.holds, "hold_ticks": report.hold_ticks,
                     "watchdog_stale_frames": report.stale_frames,
                     "stale_frames": health.stale_rows, "repeated_pictures": health.repeated_rows,
                     **({"seed": seed} if seed is not None else {}),
                     **({"camera_serials": self.camera_serials} if self.camera_serials else {})}
            # Counted, not defaulted: an episode said to have dropped none is trusted for retraining.
            try:
                self.writer.commit(success=report.success, dropped_frames=health.dropped_this_take(), extra=extra,
                                   give_up=give_up)
            except WaitAbandoned:
                self.given_up.append((self._begun, self._next - 1))
                raise
            self._open = False

    def close(self) -> RecordingOutcome:
        """Write what is queued (an episode `end` did not commit is discarded), close the
        store and say where it is; returns what this run kept and lost. A writer that stopped
        early (a commit that failed after the last episode: `end` only queues it) is said on
        stderr as an error with the episodes it lost; the caller makes it the exit code."""
        try:
            self.writer.close()
        finally:
            self.store.close()
        failure = self.writer.failure
        kept = self.writer.stats().committed_count
        outcome = RecordingOutcome(self.path, kept, max(0, self._ended - kept),
                                   None if failure is None else str(failure))
        # In the log too (a dashboard's run keeps it in a file: the terminal's lines go with it).
        if failure is not None:
            log.error("recording into %s stopped early: %s; %d episode(s) of this run lost, %d kept",
                      self.path, failure, outcome.lost, kept)
        with contextlib.suppress(OSError):  # a terminal closed under the run: the store is what counts
            if failure is not None:
                print(f"error: recording into {self.path} stopped early: {failure}; {outcome.lost} episode(s) of "
                      f"this run LOST, {kept} kept", file=sys.stderr, flush=True)
            else:
                print(f"recorded into {self.path}")
            if self.given_up:
                # As deploy's own lines number them (episode 1/3), with where each would have been stored.
                episodes = ", ".join(f"{run} (store index {index})" for run, index in self.given_up)
                print(f"not kept: episode {episodes} of this run, whose recording waited for the disk when the run "
                      "was stopped (the wait given up)")
        return outcome
