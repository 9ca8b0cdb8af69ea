"""Teleoperate and record episodes into a zarr dataset.

  platform record --robot arm --dataset kitchen --task "put the red cube in the bowl" --episodes 50 \\
      'robot.cameras.front.serial="SERIAL"'  on the robot (serials: `platform doctor`; see below)
  platform record --robot humanoid --dataset sim_humanoid --sim direct --task cube_in_bowl --episodes 5 --no-tui
  platform record --robot arm --dataset sim_arm --sim stack --task cube_in_bowl --episodes 2 --no-tui
  platform record --robot arm --dataset kitchen --task "put the red cube in the bowl" --resume --episodes 10

On `platform emulate`'s servos (the ports it prints), joint states only:

  platform record --robot arm robot.buses.follower.port=/dev/pts/4 robot.buses.leader.port=/dev/pts/5 \\
      --dataset try --task wave --no-cameras --allow-uncalibrated

On the robot every camera role of the config is recorded: a role names its RealSense by
robot.cameras.ROLE.serial (`platform doctor` lists the serials); a single role without
one takes the single connected camera no other role names, and says so; otherwise the
recording does not start. --no-cameras records joint states only. A robot without a
calibration file (`platform calibrate`) is refused unless --allow-uncalibrated.

Each episode records for --episode-time-s (or until the scripted expert finishes, in
simulation), then a reset period of --reset-time-s lets you put the scene back. Frames are
written by a background writer: the next episode starts when the reset ends, whatever
the writer still has queued. Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops
cleanly (the episode in flight is kept, or discarded with record.on_interrupt=discard); a
SIGKILL loses at most the takes not yet committed (the one in flight, and any the writer still had queued: the dashboard
shows them as saving). In simulation (--sim [direct|stack]) the twin runs on simulated time and the task's
scripted expert is the operator; --task names one of the robot's tasks (`platform sim
--robot R --list`). --sim stack puts the real drivers in the loop: DynamixelRobot talks to
emulated servo chains on ptys whose servos are the twin's joints, and the cameras are read
through RealSenseCamera from software devices fed with the renders; same ticks, same
simulated time, joint states quantised to servo ticks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from shallowpi import config
from shallowpi.cli import add_config_flags, at_least, overrides_from
from shallowpi.commands.console import LinePrinter, interrupt_on_signals, torque_off_line
from shallowpi.errors import PlatformError
from shallowpi.terminal import in_background, is_terminal, why_no_dashboard

HELP = "teleoperate and record episodes (real robot, --sim direct or --sim stack)"
log = logging.getLogger(__name__)


def _record_defaults() -> dict[str, Any]:
    """configs/config.yaml's `record` section, for --help (plain YAML: no Hydra on --help)."""
    import yaml

    try:
        return dict(yaml.safe_load((config.config_dir() / "config.yaml").read_text()).get("record") or {})
    except (OSError, PlatformError, AttributeError, yaml.YAMLError):
        return {}


def _robot_rates() -> str:
    """Each robot config's control rate, "arm 30, bimanual 50, ..." (Hz), for --help (plain YAML)."""
    import yaml

    rates = []
    try:
        for name in config.group_choices("robot"):
            fps = (yaml.safe_load((config.config_dir() / "robot" / f"{name}.yaml").read_text()) or {}).get("fps")
            rates.append(f"{name} {fps:g}" if isinstance(fps, (int, float)) else name)
    except (OSError, PlatformError, AttributeError, yaml.YAMLError):
        return "?"
    return ", ".join(rates)


def help_epilog() -> str:
    """The dashboard's keys in every state, and where to watch a recording from."""
    from shallowpi.telemetry import keys

    return (
        "dashboard keys (a key with no meaning in a state says \"ignored while <state>\"; c shows the\n"
        "next camera). Episodes are numbered as the store numbers them, everywhere:\n"
        f"{keys.table()}\n\n"
        "on a robot, after the last episode (done) the follower still follows the leader, nothing\n"
        "recorded: bring it to rest, then q or Ctrl-C turns torque off (record.hold_at_end=false:\n"
        "torque off at once)\n\n"
        "watch or drive a running recorder from another terminal (e.g. over SSH):\n"
        "  platform monitor --robot R [--control]      the same dashboard\n"
        "  platform monitor --robot R --lines          one plain status line a second"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the record flags; the help shows the config's `record` defaults and the
    dashboard keys."""
    defaults = _record_defaults()
    parser.epilog = help_epilog()
    add_config_flags(parser, robot=True, dataset=True)
    parser.add_argument("--task", help="what the operator does, in words (in simulation: a task name)")
    parser.add_argument("--sim", nargs="?", const="direct", choices=["direct", "stack"],
                        help="record in the MuJoCo twin: `direct` runs it in-process (the default); "
                             "`stack` runs it behind emulated servo chains and software RealSenses, "
                             "through the real drivers")
    parser.add_argument("--episodes", type=at_least(1),
                        help=f"episodes to record in this run (default {defaults.get('episodes', '?')}: record.episodes)")
    parser.add_argument("--episode-time-s", type=at_least(0, float, above=True),
                        help=f"seconds per episode (default {defaults.get('episode_time_s', '?')}: "
                             "record.episode_time_s)")
    parser.add_argument("--reset-time-s", type=at_least(0, float),
                        help=f"seconds between episodes to reset the scene (default {defaults.get('reset_time_s', '?')}: "
                             "record.reset_time_s)")
    parser.add_argument("--fps", type=at_least(0, float, above=True),
                        help=f"control and recording rate in Hz (default: the robot's: {_robot_rates()}; "
                             "a rate above it is refused; in simulation only the robot's own: set robot.fps=N)")
    parser.add_argument("--resume", action="store_true",
                        help="add episodes to an existing dataset (same features, robot and fps; same calibration "
                             "unless --allow-mixed-calibration)")
    parser.add_argument("--allow-mixed-calibration", action="store_true",
                        help="let --resume add episodes of another calibration id; recorded in the store")
    parser.add_argument("--seed", type=at_least(0),
                        help="simulation: seed of the first episode (default: 0, or with --resume one past "
                             "the seeds already in the dataset)")
    parser.add_argument("--realtime", action="store_true",
                        help="simulation: pace ticks at wall-clock speed (default: as fast as it renders)")
    parser.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the dashboard")
    parser.add_argument("--no-cameras", action="store_true",
                        help="on the robot: record joint states only (record.allow_no_cameras=true); "
                             "without it, every camera role of the config must find its camera")
    parser.add_argument("--allow-uncalibrated", action="store_true",
                        help="on the robot: record although it has no calibration file (record.allow_uncalibrated="
                             "true; e.g. on emulated servos): joint limits then guard nothing real, and the episodes "
                             "carry the id 'uncalibrated' for good. Without it such a robot is refused")


def run(args: argparse.Namespace) -> int:
    """Record episodes into the dataset with the dashboard or plain progress lines.

    Returns 1 when the recording stopped on a fault (the episodes committed so far are kept),
    else 0. Raises PlatformError for a missing --dataset or --task, a store that exists
    without --resume (or is missing with it), --no-cameras or --allow-uncalibrated with
    --sim, a rate above the robot's (it would raise the joints' speed limits, before anything
    connects), a robot without a calibration file and no --allow-uncalibrated (before any port
    opens), or --fps in simulation; ConfigError for a record.* number that is not finite or
    out of range, or with --resume a store.* override the store was not created with (both
    before anything connects); the disk-budget checks raise before a store is created.
    """
    from omegaconf import OmegaConf

    from shallowpi.data.store import PROVENANCE_DIR, EpisodeStore
    from shallowpi.record.disk import DiskBudget
    from shallowpi.record.rig import build_rig, camera_changes, first_seed
    from shallowpi.record.session import RecordingSession, SessionConfig
    from shallowpi.record.settings import (
        STORE_KEYS,
        check_record_numbers,
        queue_frames,
        refuse_other_settings,
        reserve_bytes,
        store_settings,
    )
    from shallowpi.record.writer import BackgroundWriter
    from shallowpi.telemetry.publisher import TelemetryPublisher
    from shallowpi.tui.launch import RUN_LOG, log_to_file

    overrides = overrides_from(args)
    cfg = config.compose(overrides + (["record.allow_no_cameras=true"] if args.no_cameras else [])
                         + (["record.allow_uncalibrated=true"] if args.allow_uncalibrated else []))
    dataset = args.dataset or cfg.dataset
    if not dataset:
        raise PlatformError("name the dataset to record into: --dataset NAME (or a path to a .zarr store)")
    if not args.task:
        raise PlatformError("say what the episodes show: --task \"put the red cube in the bowl\"")
    if args.no_cameras and args.sim:
        raise PlatformError("--no-cameras is for the robot's cameras; the twin always renders its own: drop it with --sim")
    if args.allow_uncalibrated and args.sim:
        raise PlatformError("--allow-uncalibrated is for the robot: the twin needs no calibration; drop it with --sim")
    if args.seed is not None and not args.sim:
        raise PlatformError("--seed picks the twin's scenes, for --sim: the robot's scene is the one in front of it")
    if args.realtime and not args.sim:
        raise PlatformError("--realtime is for --sim: on the robot the loop always runs on the wall clock")
    store_path = config.resolve_dataset(dataset, config.data_root(cfg))
    if store_path.exists() and not args.resume:
        raise PlatformError(f"{store_path} already exists; pass --resume to add episodes, or choose another --dataset")
    if args.resume and not store_path.exists():
        raise PlatformError(f"--resume: no dataset at {store_path} yet; drop --resume to create it")

    rec = cfg.record
    from shallowpi.robots.catch_up import speed_problem

    if problem := speed_problem(rec.catch_up_speed, "record.catch_up_speed"):  # before anything connects
        raise PlatformError(problem)
    check_record_numbers(rec)  # a NaN sim_noise, queue_mb, ...: one line now, not a fault (or a traceback) later
    settings = store_settings(cfg.store)  # a new store's: a bad one is refused before anything connects
    fps, robot_hz = float(args.fps or rec.fps or cfg.robot.fps), float(cfg.robot.fps)  # --fps > 0 (parsed)
    if args.resume:
        # A store writes with the settings it was created with: an explicit store.* override
        # asking for others would be ignored while the provenance said it applied. And what
        # the store itself refuses (format 1, another fps), from a reader: before anything
        # connects, and before the writable open, which moves a layout-1 store to layout 2
        # for good.
        with EpisodeStore.open(store_path) as existing:
            refuse_other_settings(existing, cfg.store, {o.partition("=")[0].lstrip("+~") for o in overrides})
            existing.check_recordable(fps=fps, allow_mixed_calibration=args.allow_mixed_calibration)
    size = config.parse_size(rec.sim_size, "record.sim_size") if args.sim else None
    if fps > robot_hz:
        # Robot.act moves a joint at most max_velocity / robot.fps a call: a faster loop would
        # multiply every joint's speed limit (the executor refuses the same). Before anything
        # connects.
        raise PlatformError(f"--fps/record.fps {fps:g} is faster than robot '{cfg.robot.name}' runs ({robot_hz:g} Hz), "
                            f"which would raise its joints' speed limits by {fps / robot_hz:.2g}x; set "
                            f"robot.fps={fps:g} to record faster")
    session_numbers = dict(
        episodes=rec.episodes if args.episodes is None else args.episodes,
        episode_time_s=rec.episode_time_s if args.episode_time_s is None else args.episode_time_s,
        reset_time_s=rec.reset_time_s if args.reset_time_s is None else args.reset_time_s,
        fps=fps, on_interrupt=rec.on_interrupt)
    # What the session refuses (record.on_interrupt=maybe, record.episodes=0), refused now: a
    # robot's connect switches its torque on, and a socket bound here was held through the
    # twin's build by a command that was to fail anyway.
    SessionConfig(task="", **session_numbers)
    # The telemetry socket first: a second recorder of this robot fails here, before it
    # connects to anything or creates a store. The status always goes out on it, so
    # `platform monitor --robot R` can attach.
    publisher = TelemetryPublisher.from_config(cfg.telemetry, robot=cfg.robot.name)
    # From the robot's connect until the session takes the signals over (_stop_on_signals):
    # a recorder killed in between left every servo holding with nothing attached.
    interrupt_on_signals()
    try:
        rig = build_rig(cfg, args.sim, args.task, seed=args.seed or 0, size=size, realtime=args.realtime)
    except BaseException:
        publisher.close()
        raise
    store = writer = None
    ran = False  # the session began: its end turns torque off; a refusal before it leaves the robot as found
    closers: list[Any] = [publisher.close]
    printer = LinePrinter()  # --no-tui lines: the recording loop never waits on stdout
    # record-<stamp>.log in the store's .shallowpi/, with the dashboard or without (--no-tui under
    # systemd or nohup kept none): its handler from the store's making to the session's last line.
    logs = contextlib.ExitStack()
    lines = logging.getLogger(RUN_LOG)  # the file only: the terminal has these lines already
    try:
        try:
            if fps != rig.clock.hz:
                if rig.clock.simulated:
                    # The twin steps one period of its own rate per tick; change both together.
                    raise PlatformError(f"in simulation the loop runs at the robot's rate ({rig.clock.hz:g} Hz); "
                                        f"use robot.fps={fps:g} instead of --fps")
                rig.clock = type(rig.clock)(fps)
            session_cfg = SessionConfig(
                task=rig.task_text, **session_numbers, robot=cfg.robot.name, dataset=store_path.stem,
                calibration_id=rig.calibration_id, camera_serials=rig.camera_serials, autostart=True,
                # somebody to end it: a dashboard, or Ctrl-C on a terminal
                hold_at_end=bool(rec.get("hold_at_end", True)) and not args.sim and is_terminal(sys.stdin)
                and not in_background(sys.stdin),  # Ctrl-C cannot reach a job run with &
            )
            disk = DiskBudget(store_path, rig.features, session_cfg.episode_rows, reserve_bytes=reserve_bytes(rec),
                              numeric_chunk_rows=settings.numeric_chunk_rows)
            disk.require_reserve()  # before a store is made: a full disk leaves nothing behind
            if args.resume:
                # What needs the rig (its features, its calibration), refused from a reader too:
                # the writable open moves a layout-1 store to layout 2 for good.
                with EpisodeStore.open(store_path) as existing:
                    _check_resume(existing, rig.features, cfg.robot.name)
                    existing.check_recordable(fps=fps, calibration_id=rig.calibration_id,
                                              allow_mixed_calibration=args.allow_mixed_calibration)
                store = EpisodeStore.open(store_path, mode="a")
                _check_resume(store, rig.features, cfg.robot.name)  # the store at the name may have been replaced
                store.check_recordable(fps=fps, calibration_id=rig.calibration_id,
                                       allow_mixed_calibration=args.allow_mixed_calibration)
                disk.numeric_chunk_rows = store.settings.numeric_chunk_rows  # its own, episodes or none
                if args.allow_mixed_calibration:
                    store.allow_mixed_calibration()
                if (changed := camera_changes(store, rig.camera_serials)) is not None:
                    log.warning("%s", changed)
            # Simulation: every episode of a store gets its own scene. A refused --seed is refused
            # before a new store is made: one left behind empty would block the rerun it advises.
            seed = None if rig.scene is None else first_seed(store, args.seed, session_cfg.episodes)
            if store is None:
                store_path.parent.mkdir(parents=True, exist_ok=True)
                store = EpisodeStore.create(store_path, rig.features, settings)
            if rig.scene is not None:
                rig.scene.seed = seed
            for key in STORE_KEYS:  # the provenance names the settings the episodes are written with: the store's
                OmegaConf.update(cfg, f"store.{key}", getattr(store.settings, key), force_add=True)
            stamp = session_stamp(store_path / PROVENANCE_DIR)
            config.save_resolved(cfg, store_path / PROVENANCE_DIR, f"record-{stamp}.yaml")
            logs.enter_context(log_to_file(store_path / PROVENANCE_DIR / f"record-{stamp}.log"))
            if len(store):
                disk.learn(store, len(store) - 1)
            log.info("%s", disk.describe())
            if disk.measured:  # a resumed store: refuse before anything runs (unmeasured, the session warns)
                disk.check_room(len(store))
            writer = BackgroundWriter(store, capacity_frames=queue_frames(rec.queue_mb, rig.features),
                                      on_commit=lambda info: disk.learn(store, info.index))
            # The dashboard child is given the terminal as its stderr (launch.spawn_dashboard):
            # ours may be a file. A terminal it cannot take (stdin no terminal, this run in the
            # background) is said once, then plain lines.
            no_dashboard = "" if args.no_tui else why_no_dashboard(sys.stdin, sys.stdout)
            use_tui = no_dashboard is None
            if no_dashboard:
                printer.say(f"[record] plain lines, no dashboard: {no_dashboard}")
            reporter = _ProgressLines(session_cfg.episodes, printer)
            reporter.on = not use_tui  # and from the moment a dashboard dies

            def publish(status: Any) -> None:
                publisher.publish(status)
                if reporter.on:
                    reporter.publish(status)

            # The dying dashboard took the local token with it: with remote control off, a new
            # `monitor --control` is refused like any other, and only Ctrl-C is left.
            attach = ("`platform monitor --control` attaches a dashboard" if cfg.telemetry.allow_remote_control else
                      "telemetry.allow_remote_control=false: a new `platform monitor` can watch but not drive it")

            def dashboard_lost(why: str) -> None:
                printer.say(f"[record] {why}; the recording goes on with these lines (Ctrl-C stops it; {attach})")
                reporter.on = True

            session = RecordingSession(session_cfg, rig.robot, rig.teleop, writer, rig.clock, rig.joint_names,
                                       scene=rig.scene, cameras=rig.cameras, publish=publish,
                                       commands=publisher.commands, joint_limits=rig.joint_limits, disk=disk,
                                       catch_up=_catch_up(rig, rec.catch_up_speed, fps))
            _stop_on_signals(session)

            def put_away() -> None:
                # The robot put away (torque off, ports closed) before the writer drains its
                # queue: up to record.queue_mb of frames on a disk that is behind, and nothing
                # reads the dashboard's E-STOP meanwhile. The status goes on meanwhile, each take
                # said saved as it commits, and the last takes saved: watchers and the lines say
                # so, not "saving".
                rig.close()
                saving = _SavingStatus(session, writer, rig.robot, publish)
                writer.close(on_wait=saving)
                saving.done()

            ran = True
            if use_tui:
                from shallowpi.tui.recorder_app import run_recorder_dashboard

                # put away before the dashboard's feed closes, so it (and any monitor) sees "saved"
                result = run_recorder_dashboard(session, publisher, on_dashboard_lost=dashboard_lost,
                                                put_away=put_away)  # its log file: `logs`, above
            else:
                result = session.run()
                put_away()
            if writer.failure is not None and not result.fault:  # the last commit failed after the loop ended
                result.fault = str(writer.failure)
            writer = None
            # The store, not the session's notes: marks and deletes made after saving are in it.
            # This run's episodes only: every episode's metadata is a file read (seconds on a
            # store of 100k), and an old one unreadable must not cost this run its summary.
            committed = [store.episode(i) for i in range(session.first_episode, len(store))]
            total = len(store)
        finally:
            try:
                # The robot first, as put_away() does, however the run ended (an unexpected error
                # out of the session too): torque off before the writer drains up to
                # record.queue_mb of frames, seconds on a disk that is behind, with the follower
                # holding and nothing reading an E-STOP.
                try:
                    rig.close(as_found=not ran)
                finally:  # a robot that failed to close must not cost the takes still queued
                    if writer is not None:
                        # An error out of the session: the takes queued are still saved, and said
                        # so as they commit (the robot was off once it ran, as in put_away).
                        writer.close(on_wait=_SavingStatus(session, writer, rig.robot, publish) if ran else None)
                    if store is not None:
                        store.close()
            finally:
                for close in closers:  # the telemetry: dashboards keep their E-STOP until the robot is off
                    close()
                printer.close()  # after the robot is off: a stalled stdout must not keep it powered
                # A terminal closed under the run (SIGHUP: EIO on every print) leaves no one to tell;
                # the takes are on disk by now, and the exit code still says how the run ended.
                with contextlib.suppress(OSError):
                    if not args.sim:  # said however the run ended, once rig.close() has turned torque off
                        torque = torque_off_line(rig.robot)
                        lines.info("%s", torque)
                        print(torque, flush=True)
        summary = final_summary(committed, result, store_path, total)
        stopped = f"recording stopped: {result.fault}; {_kept(committed, store_path)}" if result.fault else ""
        with contextlib.suppress(OSError):
            print(summary)
            if stopped:
                print(f"error: {stopped}", file=sys.stderr)
        # The session's end in its log file too (the terminal's copy is gone with the terminal).
        lines.info("%s", summary)
        if stopped:
            lines.error("%s", stopped)
        return 1 if result.fault else 0
    except BaseException:
        # What ended the session, with its traceback, in the file only: the terminal gets the
        # one-line error from main (an unexpected one its traceback there too).
        lines.exception("the recording ended on an error")
        raise
    finally:
        logs.close()


def session_stamp(provenance: Path) -> str:
    """This session's name among the store's provenance files (`record-<stamp>.yaml` and
    `.log` in `provenance`): the local date and time to the second, numbered (`-2`, `-3`...)
    when a session of that second has its files there already, whose config this one's
    would otherwise have replaced (a restart loop under systemd; the hour a DST change
    repeats)."""
    base = time.strftime("%Y%m%d-%H%M%S")
    stamp, n = base, 1
    while (provenance / f"record-{stamp}.yaml").exists():
        n += 1
        stamp = f"{base}-{n}"
    return stamp


def final_summary(committed: list[Any], result: Any, store_path: Any, total: int) -> str:
    """What this run left in the store, read back from it, and a command that can show it."""
    marked = [e.success for e in committed if e.success is not None]
    if committed:
        first, last = committed[0].index, committed[-1].index
        span = f"episode {first}" if first == last else f"episodes {first}-{last}"
        text = f"recorded {len(committed)} episode(s) into {store_path} ({span}; it holds {total})"
    else:
        text = f"recorded no episode into {store_path} (it holds {total})"
    text += (f", {sum(marked)}/{len(marked)} successful" if marked else "")
    text += (f", {result.discarded} take(s) discarded" if result.discarded else "")
    text += (f", {result.deleted} deleted after saving" if result.deleted else "")
    text += (f", {result.lost} take(s) LOST: the writer failed before saving them" if result.lost else "")
    # Quoted: a path with spaces or shell characters is pasted back as one argument.
    root, store = shlex.quote(str(store_path.parent)), shlex.quote(str(store_path))
    if committed:
        text += (f"\nlook at them: platform dataset list --data-root {root}   "
                 f"platform dataset show {store} --episode {committed[-1].index}")
    elif total:
        text += f"\nlook at the store: platform dataset show {store} --episode {total - 1}"
    return text


def _kept(committed: list[Any], store_path: Any) -> str:
    """What a stopped recording kept, for its last line."""
    if not committed:
        return f"no episode of this run was saved (those already in {store_path.name} are intact)"
    first, last = committed[0].index, committed[-1].index
    span = f"episode {first}" if first == last else f"episodes {first}-{last}"
    return f"kept {len(committed)} episode(s) of this run: {span} of {store_path.name}"


class _SavingStatus:
    """The recorder's status while the writer saves what it still holds after the loop has
    ended: `BackgroundWriter.close`'s `on_wait`, called every 0.5 s of a wait of up to
    record.queue_mb of frames (minutes on a disk that is behind). Nothing went out
    meanwhile: a dashboard or `platform monitor` froze on the "saving" count and after 2 s
    said STALE ("its loop may be stuck"), and an operator who believed it and killed the
    recorder lost exactly the takes still queued. Each call marks the takes committed since
    the last look saved (their line first, as the loop says it), refreshes the writer's
    counters, says "robot off; saving N queued take(s)" and publishes; `done()`, after the
    close, publishes the last word."""

    def __init__(self, session: Any, writer: Any, robot: Any, publish: Callable[[Any], None]) -> None:
        self._session, self._writer, self._robot, self._publish = session, writer, robot, publish
        self._waited = False  # whether the close took long enough to call us
        self._said, self._pending = "", -1  # the message of the last look, and the takes it said queued
        # After a fault its line stays first: the last status's message is how a monitor
        # says the recorder ended ("ended on a fault: ...").
        self._fault = session.status.message if session.result.fault else ""

    def __call__(self) -> None:
        """One look while the writer drains; never raises (the takes' saving must go on)."""
        self._waited = True
        status = self._session.status
        try:
            status.message = ""  # the saved takes' line alone, not appended to the last look's
            # The takes committed so far are marked saved (after a writer failure, those it
            # never committed lost): the same look as after the close, made while it drains.
            self._session.writer_closed()
            saved = status.message
            self._session.refresh_writer_status()
            pending = self._saving_count()
            if saved or pending != self._pending:  # else the last look's words stand (--no-tui prints each new one)
                saving = f"{self._robot_state()}; saving {pending} queued take(s)"
                self._said, self._pending = "; ".join(filter(None, [self._fault, saved, saving])), pending
            status.message = self._said
            self._publish(status)
        except Exception:  # a status problem must never stop the saving
            log.exception("status publish failed")

    def done(self) -> None:
        """After the close: the takes committed since the last look said saved (or, after a
        writer failure, those never committed counted lost), and the final status published."""
        status = self._session.status
        if self._waited:
            status.message = ""  # "saving N" is over: the last takes' line, or the end below
        self._session.writer_closed()
        if self._waited and not status.message:  # every take was said saved during the wait
            failure = self._writer.failure
            status.message = (f"{self._robot_state()}; " + (f"saving stopped: {failure}" if failure is not None
                                                             else "every queued take saved"))
        if self._fault and not status.message.startswith(self._fault):
            status.message = f"{self._fault}; {status.message}"
        self._session.refresh_writer_status()
        self._publish(status)

    def _saving_count(self) -> int:
        """Takes handed over to be kept and not yet committed: the dashboard's rows saving,
        while the status lists every take of the run (EPISODES_KEPT); past that, the
        writer's count, which also counts a discard still queued behind them."""
        status = self._session.status
        if status.episodes_earlier:
            return status.writer.pending_episodes
        return sum(summary.state == "saving" for summary in status.episodes)

    def _robot_state(self) -> str:
        """What the looks say of the robot: off, or, where its disconnect could not switch a
        bus off, that it may still hold and what to do (`torque_off_line`)."""
        return torque_off_line(self._robot) if getattr(self._robot, "torque_off_failures", None) else "robot off"


def _catch_up(rig: Any, speed: float | None, fps: float) -> Any:
    """The slow start for a teleoperator moved by hand (robots/catch_up.py); None in the
    twin, whose scene sets the robot's pose at each episode, or when the config turns it off."""
    from shallowpi.robots.catch_up import CatchUp

    if rig.scene is not None or speed is None:
        return None
    return CatchUp.for_robot(rig.robot, float(speed), fps)


def _check_resume(store: Any, features: dict[str, Any], robot: str) -> None:
    """Refuse (one line) `--resume` into `store` with other features than this robot's
    (a joint whose kind changed in the robot file named with both kinds) or of another robot."""
    from shallowpi.data.features import check_joint_kinds

    check_joint_kinds(store.features, store.path.name, features, "this robot's spec",
                      "record into another --dataset, or set the kind back in the robot file")
    if store.features != features:
        differ = sorted(set(store.features) ^ set(features)) or sorted(
            k for k in features if store.features.get(k) != features[k])
        raise PlatformError(f"{store.path.name} was recorded with other features ({', '.join(differ)}); "
                            "record into another --dataset")
    robots = set(store.summary.robots)
    if robots and robots != {robot}:
        raise PlatformError(f"{store.path.name} holds episodes of robot {', '.join(sorted(robots))}, not {robot}")


def _stop_on_signals(session: Any) -> None:
    def stop(signum: int, frame: Any) -> None:
        log.info("signal %d: stopping after this tick", signum)
        session.request_stop()

    # SIGHUP: the SSH session or terminal the recorder runs in closed. By default it kills
    # the process outright, losing the takes still saving with the servos left on their goals.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)


class _ProgressLines:
    """--no-tui: one line per second and one per event, for logs and scripts, queued to
    `printer` (the recording loop never waits on stdout)."""

    def __init__(self, episodes: int, printer: LinePrinter) -> None:
        self.episodes, self.printer = episodes, printer
        self.on = True
        self._last_line = 0.0
        self._last_message = ""

    def publish(self, status: Any) -> None:
        """A status line at most once a second, and one for each new status message."""
        from shallowpi.tui.panels import loop_timing_text
        from shallowpi.tui.recorder_render import clock_text, run_position

        now = time.monotonic()
        if status.message != self._last_message:
            self._last_message = status.message
            self.printer.say(f"[record] {status.message}")
        if now - self._last_line < 1.0:
            return
        self._last_line = now
        w, loop = status.writer, status.loop
        timing = loop_timing_text(loop.simulated, loop.period_p99_ms, p50_ms=loop.period_p50_ms,
                                  overruns=loop.overruns)
        self.printer.say(
            f"[record] episode {status.episode} ({run_position(status)}) {status.state.value} "
            f"{clock_text(status)} | {timing} | writer queue "
            f"{w.queue_text} (max {w.high_water}), {w.mb_per_s:.1f} MB/s of frames (last 5 s), "
            f"waited {w.backpressure_ms:.0f} ms")
