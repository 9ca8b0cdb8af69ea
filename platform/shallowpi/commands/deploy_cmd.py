"""Run a policy through the on-device executor, on the robot or its twin: bundle, backend, loop.

  platform deploy --policy runs/kitchen-small/checkpoints/step_001500 --jetson thor --sim
  platform deploy --policy CKPT --jetson orin --sim stack --episodes 3 --no-tui
  platform deploy --policy CKPT --sim --strategy sync|async|ensemble|rtc --delay-ms 300
  platform deploy --policy CKPT --sim --backend torch --record deployed --json run.json
  platform deploy --policy CKPT --backend onnxruntime --bundle-only   the bundle alone, on the workstation
  platform deploy --policy CKPT.bundle --jetson orin --robot arm --task "put the red cube in the bowl" \\
      'robot.cameras.front.serial="SERIAL"'             on the robot, the bundle built beforehand

What happens: the Jetson profile (configs/jetson/, --jetson) is checked against this
machine (one line: what to change for full speed, or that this is not that Jetson and the
best local backend runs instead); the checkpoint becomes a deploy bundle (weights, stats,
config, exported ONNX graphs, sha256 manifest; kept next to it as CKPT.bundle and reused
while it verifies; --policy may also name a bundle); the backend is warmed up while the
robot holds its pose; then each episode runs the executor at the robot's rate: inference
on its own thread, the action chosen by --strategy, every command clamped by the robot, a
watchdog holding position when no action is due or a frame is stale, a bound on the jump
at each chunk seam. It prints success, inference latency, the loop's period (on the twin's
simulated time, the wall time a tick took instead, chunks computed in it included: no
period the loop keeps) and the safety counts; the live status goes out as telemetry
(`platform monitor` attaches). Its log, and the lines it prints, go to a file as they happen,
with the dashboard or without: beside --json (run.json: run.log), else in deploy-logs/ beside
the bundle.

Without --sim it drives the robot of --robot (configs/robot/) on its configured ports
(override them as robot.buses.NAME.port=PATH) with its RealSense cameras, on the wall
clock; --task is the instruction; before each episode the robot holds for --reset-time-s
while the scene is set; success is not judged (keep the episodes with --record). An
uncalibrated robot is refused unless --allow-uncalibrated. Once the backend is warm it
waits for Enter before the robot first moves, and after the last episode it holds its pose
until Enter (or the dashboard's s) releases it: support the arm, torque then goes off
(--yes: neither wait; torque off at the end). A stop (s, Ctrl-C) turns torque off after
the run. After a policy or camera fault it holds its pose with torque on until the
operator stops or e-stops (--yes: for deploy.fault_hold_s, then torque off and exit 1).
With --record, a disk that falls behind (a hung USB drive, an NFS mount) keeps the robot
holding between episodes until the episode's recording is queued; the status goes on, the
e-stop ends the wait (a stop too, unless one ended that episode), and the episode is then
not kept.

--sim direct runs the twin in-process, --sim stack behind emulated servos and software
RealSense cameras (the real drivers). In simulation the loop runs on the twin's time and
each chunk lands ceil(measured latency x fps) ticks after it was asked for, as on a robot
(--realtime paces the loop by the wall clock instead, inference truly beside it).
Robot, task, camera size and image codec come from the checkpoint's training store (or
--dataset), as for `platform eval --sim` (without one, the policy's input size); --robot,
--task override them. Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.cli import add_config_flags, at_least, overrides_from, ready_output, user_path
from shallowpi.commands.console import LinePrinter, interrupt_on_signals, torque_off_line
from shallowpi.commands.deploy_holds import (
    hold_until_released,
    hold_until_the_operator_ends,
    wait_for_go,
)
from shallowpi.commands.deploy_policy import policy_bundle, start_state_of
from shallowpi.commands.deploy_recording import DeploymentRecorder
from shallowpi.durable_files import replace_text
from shallowpi.terminal import is_terminal, why_no_dashboard

log = logging.getLogger(__name__)

HELP = "run a policy on the robot or its twin through the on-device executor (bundle, backend, watchdog)"

# How an episode ends short of its time or success (EpisodeReport.ended): a run holding one
# is not the run asked for (--json "complete").
CUT_SHORT = ("stopped", "e-stop", "fault")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --policy, the robot and Jetson flags, and the executor's flags."""
    parser.add_argument("--policy", type=user_path, required=True,
                        help="checkpoint folder (model.safetensors; a run folder means its newest) or a "
                             "deploy bundle folder")
    add_config_flags(parser, robot=True, jetson=True)
    parser.add_argument("--sim", nargs="?", const="direct", choices=["direct", "stack"],
                        help="run in the MuJoCo twin: direct (in-process, default) or stack (emulated drivers); "
                             "without it, drive the robot")
    parser.add_argument("--task", help="task name or instruction (twin: default the training store's); "
                                       "on the robot, the instruction (required)")
    parser.add_argument("--dataset", help="--sim: render the twin as this dataset was recorded (its size and "
                                          "image codec), as `eval --sim --dataset` does; default the checkpoint's "
                                          "training store (a name under the data root, or a path)")
    parser.add_argument("--episodes", type=at_least(1), default=3, help="episodes to run (default 3)")
    parser.add_argument("--seed", type=at_least(0), help="--sim: seed of the first episode (default 1000, the twins' "
                        "first held-out scene)")
    parser.add_argument("--episode-time-s", type=at_least(0, float, above=True),
                        help="episode length, s (twin: at most the task's limit; robot: default record.episode_time_s)")
    parser.add_argument("--reset-time-s", type=at_least(0, float),
                        help="robot: seconds it holds before each episode while the scene is set "
                             "(default record.reset_time_s)")
    parser.add_argument("--yes", action="store_true",
                        help="robot: start without asking (by default, once the backend is warm, it waits for Enter "
                             "before the robot first moves); for a run nobody attends, with an e-stop within reach: "
                             "torque goes off after the last episode, and after a fault once the robot has held "
                             "deploy.fault_hold_s (exit 1)")
    parser.add_argument("--speed-scale", type=at_least(0, float, above=True), metavar="S",
                        help="robot: every joint's top speed times S (0 < S <= 1; the velocity bound each command "
                             "goes through), e.g. 0.5 for a new policy's first run; a policy then sees its arm lag "
                             "what it was trained on")
    parser.add_argument("--allow-uncalibrated", action="store_true",
                        help="robot: run without a calibration file (raw servo angles; emulated servos)")
    parser.add_argument("--allow-calibration-change", action="store_true",
                        help="robot: run a policy trained under another calibration than the robot's "
                             "(only when the recalibration did not move the joints' zeros)")
    parser.add_argument("--allow-code-change", action="store_true",
                        help="robot: run a bundle built where the robot-side code (preprocessing, tokens, action "
                             "decoding and selection) differs from this checkout's (refused otherwise: check out "
                             "the commit the bundle names)")
    parser.add_argument("--allow-aspect-change", action="store_true",
                        help="robot: run a policy trained on frames of another aspect ratio than a camera's "
                             "(it will see other black bars and scale: expect it to do worse)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime", "tensorrt"],
                        help="override the profile's backend")
    parser.add_argument("--strategy", choices=["sync", "async", "ensemble", "rtc"],
                        help="action selection (default: deploy.strategy, rtc): sync waits for each chunk, the "
                             "robot holding; async asks for the next chunk while the current one runs and switches "
                             "at its seam; ensemble averages the overlapping chunks' actions (ACT's temporal "
                             "ensembling); rtc inpaints the next chunk's start to the actions still to run "
                             "(real-time chunking)")
    parser.add_argument("--replan-every", type=at_least(1), metavar="K",
                        help="a new chunk every K actions (default: action_selection.replan_every, half the chunk)")
    parser.add_argument("--delay-ms", type=at_least(0, float),
                        help="--sim: inject this much inference delay (the delay experiment; refused on a robot)")
    parser.add_argument("--realtime", action="store_true", help="--sim: pace the loop by the wall clock")
    parser.add_argument("--bundle", type=user_path,
                        help="where to build the bundle from a checkpoint: a new folder or a bundle "
                             "(default: CKPT.bundle)")
    parser.add_argument("--bundle-only", action="store_true",
                        help="build (or verify) the bundle and exit, running nothing: on the workstation, for a robot "
                             "that is not attached (the backend of the --jetson profile named, not this "
                             "machine's); copy the folder to the robot")
    parser.add_argument("--record", metavar="DATASET", help="store the executed episodes in this dataset (an "
                        "existing one must hold this robot's features at its rate and calibration)")
    parser.add_argument("--allow-mixed-calibration", action="store_true",
                        help="let --record add episodes of another calibration id to a dataset; recorded in the store")
    parser.add_argument("--json", type=user_path, help="also write the report as JSON here, and the run's log beside "
                        "it (run.json: run.log; without --json, deploy-logs/ beside the bundle)")
    parser.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the dashboard")


def run(args: argparse.Namespace, camera_devices: Callable[[], list[Any]] | None = None) -> int:
    """Deploy the policy for --episodes episodes, on the twin (--sim) or the robot, and
    print a summary. `camera_devices` lists the RealSense devices on the robot (default:
    USB; tests pass pyrealsense2 software devices).

    Returns 1 when the safety layer counted a fault, or --record's writer failed (an
    episode's recording lost), else 0. Raises ConfigError for --episodes < 1 or a policy
    that does not fit the robot, and the drivers' one-line errors. The robot is
    disconnected (torque off) and telemetry closed however it ends. Once the bundle is
    ready the run keeps a log file (`_log_path`): every log record, the lines it prints,
    and what ended it, on disk as they happen.
    """
    from shallowpi.tui.launch import RUN_LOG

    with contextlib.ExitStack() as logs:
        try:
            return _run(args, camera_devices, logs)
        except BaseException:
            # In the file only (nothing without one): the terminal gets main's one line.
            logging.getLogger(RUN_LOG).exception("the deployment ended on an error")
            raise


def _log_path(args: argparse.Namespace, bundle_path: Path) -> Path:
    """Where a deployment keeps its log: beside --json (run.json: run.log), else in a
    deploy-logs/ folder beside the bundle (CKPT.bundle's folder, where it was built or copied
    to), one deploy-<date>-<time>.log per run."""
    if args.json:
        return args.json.with_suffix(".log") if args.json.suffix != ".log" else args.json.with_name(f"{args.json.name}.log")
    return bundle_path.parent / "deploy-logs" / f"deploy-{time.strftime('%Y%m%d-%H%M%S')}.log"


def _run(args: argparse.Namespace, camera_devices: Callable[[], list[Any]] | None,
         logs: contextlib.ExitStack) -> int:
    """`run`, its log file entered on `logs` once the bundle is ready."""
    from shallowpi import config
    from shallowpi.commands.deploy_targets import robot_target, twin_target
    from shallowpi.deploy.backends import BackendOptions, make_backend
    from shallowpi.deploy.executor import Executor
    from shallowpi.deploy.jetson import JetsonProfile, detect, plan
    from shallowpi.deploy.reference import check as check_reference
    from shallowpi.errors import ConfigError, PlatformError
    from shallowpi.robots.base import ticks_in
    from shallowpi.telemetry.publisher import TelemetryPublisher

    if args.episodes < 1:
        raise ConfigError(f"--episodes must be at least 1, got {args.episodes}")
    ready_output(args.json, "--json")  # before the robot moves, not after the run
    if args.realtime and not args.sim:
        raise ConfigError("--realtime is for --sim: on the robot the loop always runs on the wall clock")
    if args.bundle_only and (args.sim or args.record):
        raise ConfigError("--bundle-only builds the bundle and runs nothing: drop --sim and --record, or "
                          "--bundle-only to run it")
    if args.seed is not None and not args.sim:
        raise ConfigError("--seed picks the twin's scenes, for --sim: the robot's scene is the one in front of it")
    # The twins' first held-out scene (robots/sim/episode.EVAL_SEEDS, not imported: the
    # robot's side runs without MuJoCo); on the robot the number only labels the episodes.
    args.seed = 1000 if args.seed is None else args.seed
    if args.sim and (args.reset_time_s is not None or args.allow_uncalibrated or args.allow_calibration_change
                     or args.allow_aspect_change or args.yes or args.speed_scale is not None
                     or args.allow_code_change):
        raise ConfigError("--reset-time-s, --yes, --speed-scale, --allow-uncalibrated, --allow-calibration-change, "
                          "--allow-code-change and --allow-aspect-change are for the robot: the twin resets itself, "
                          "renders the training frames' size, moves at the speeds it was recorded at, and only "
                          "warns of a bundle built by other code")
    if args.speed_scale is not None and args.speed_scale > 1:
        raise ConfigError(f"--speed-scale must be in (0, 1]: it can only slow the robot, got {args.speed_scale:g}")
    # key=value overrides are checked against the robot that runs: --robot's (the default
    # robot's refused `robot.buses.left_arm.port=...` for a humanoid); in the twin without
    # --robot the training store names it, which only the target knows, and its compose
    # checks the robot's keys then.
    overrides = (args.overrides if args.robot or not args.sim
                 else [o for o in args.overrides if not o.lstrip("+~").startswith("robot.")])
    base = config.compose(overrides_from(argparse.Namespace(robot=args.robot, jetson=args.jetson,
                                                            data_root=args.data_root, overrides=overrides)))
    args.twin_store = None
    if args.dataset:
        if not args.sim:
            raise ConfigError("--dataset sets how the twin renders, for --sim: the robot's cameras are its own")
        args.twin_store = config.resolve_dataset(args.dataset, config.data_root(base))
        if not args.twin_store.exists():  # a typo would show the policy other renders, silently
            raise ConfigError(f"--dataset {args.dataset}: no dataset at {args.twin_store}")
    # A slower policy on a real arm is an experiment nobody should run by accident: by the
    # flag or by the config key it sets.
    if (args.delay_ms or float(base.deploy.injected_delay_s or 0.0)) and not args.sim:
        raise ConfigError("--delay-ms (deploy.injected_delay_s) is the delay experiment, for --sim only: "
                          "never on the robot")
    # The composed profile: `jetson.providers=[...]`, `jetson.precision=...` apply (the backends'
    # errors name them).
    asked = JetsonProfile.from_config(base.jetson)
    decision = plan(asked, detect(_sysroot()), cuda=_has_cuda, backend=args.backend)
    profile = decision.profile
    # A bundle made to be copied is for the machine --jetson names, not this one (a CUDA
    # workstation's own backend, torch, would export no graph for the Jetson to run).
    backend_name = args.backend or (asked.backend if args.bundle_only else profile.backend)
    options = BackendOptions(device=profile.device, precision=profile.precision, providers=profile.providers)
    plan_line = decision.message
    if backend_name == "torch" and not args.bundle_only:
        # The plan names the profile's device and precision; torch here may run others (no
        # CUDA GPU; towers cast on a GPU only): the line, and --json's "plan", say what runs.
        options, otherwise = _torch_runs_otherwise(options)
        plan_line += otherwise
    print(f"--bundle-only: a bundle for {asked.name} ({backend_name}), nothing runs here" if args.bundle_only
          else plan_line, flush=True)
    # The deploy settings are checked before the bundle: a misspelt strategy was news only
    # after minutes of export (the target's config, composed again, is what runs).
    _executor_config(args, base, realtime=bool(args.realtime or not args.sim))
    bundle = policy_bundle(args, backend_name)
    if args.bundle_only:
        at = f" built at commit {bundle.commit}" if bundle.commit else ""
        print(f"bundle {bundle.path} (sha256 {bundle.digest[:12]}, graphs: {', '.join(bundle.graphs) or 'none'}){at}: "
              f"copy it to the robot, run that commit's code there, and deploy with --policy {bundle.path.name}",
              flush=True)
        return 0
    from shallowpi.tui.launch import RUN_LOG, dashboard_lost, log_to_file

    # On disk from here: the dashboard's terminal holds its lines in memory until the end, which
    # a SIGKILL or a native crash never reaches.
    logs.enter_context(log_to_file(_log_path(args, bundle.path)))
    run_log = logging.getLogger(RUN_LOG)  # the lines it prints, in the file only (the terminal has them)
    run_log.info("deploy %s (%s) on %s: %s", bundle.path, backend_name, "the twin" if args.sim else "the robot", plan_line)
    if not args.sim and not args.yes and not is_terminal(sys.stdin):  # before any port opens
        raise ConfigError("on the robot deploy waits for Enter before the robot first moves, and stdin is not a "
                          "terminal: run it in one, or pass --yes for a run nobody attends (keep an e-stop within "
                          "reach)")
    target = twin_target(args, bundle) if args.sim else robot_target(args, bundle, camera_devices)
    cfg = target.cfg
    exec_cfg = _executor_config(args, cfg, realtime=bool(args.realtime or not args.sim))
    backend = make_backend(backend_name, bundle, options)
    parity = check_reference(backend, exec_cfg.parity_tolerance)  # before anything connects
    if parity is None and target.on_hardware:
        raise ConfigError(f"bundle {bundle.path} has no reference chunks (built before they were kept), so nothing "
                          f"would check the {backend_name} backend against the policy before the robot moves: rebuild "
                          "it from its checkpoint (`platform deploy --policy CKPT --bundle-only`)")
    print(f"backend {backend_name} on {backend.runs_on()}, strategy {exec_cfg.strategy.value}, "
          f"{target.description} at {target.fps:g} Hz", flush=True)
    print(f"parity: {parity.line()}" if parity else
          f"parity not checked: bundle {bundle.path} has no reference chunks (built before they were kept); the "
          "robot refuses it", flush=True)

    robot = target.robot
    start_state = start_state_of(bundle, target, exec_cfg.start_speed)
    publisher = TelemetryPublisher.from_config(cfg.telemetry, robot=cfg.robot.name, kind="executor")
    try:  # a store it refuses stops the run before any port opens
        recorder = (DeploymentRecorder(args.record, cfg, target, bundle.cameras, args.allow_mixed_calibration,
                                       policy_sha256=bundle.checkpoint_digest)
                    if args.record else None)
    except BaseException:
        publisher.close()
        raise
    # The dashboard child is given the terminal as its stderr (launch.spawn_dashboard): ours
    # may be a file. A terminal it cannot take (stdin no terminal, this run in the background)
    # is said once, then plain lines.
    no_dashboard = "" if args.no_tui else why_no_dashboard(sys.stdin, sys.stdout)
    use_tui = no_dashboard is None
    printer = LinePrinter()  # from here on lines are queued: stdout must never stall the loop
    if no_dashboard:
        printer.say(f"[deploy] plain lines, no dashboard: {no_dashboard}")
    lines = _Lines(args.episodes, printer)
    executor: Executor | None = None
    dashboard = None
    terminal = None  # the terminal's modes before the dashboard took it
    held_output: list[str] = []  # episode lines wait while the dashboard owns the terminal

    def say(line: str) -> None:
        run_log.info("%s", line)  # between episodes, not a tick's: the loop may write a line to the file
        if dashboard is not None:
            held_output.append(line)
        else:
            printer.say(line)

    def publish(status: Any) -> None:
        nonlocal dashboard
        publisher.publish(status)
        for request in publisher.commands():
            _obey(executor, request.command)
        # one waitid a tick: exited, or stopped by the kernel (a run put in the background)
        if dashboard is not None and (why := dashboard_lost(dashboard)) is not None:
            dashboard = _dashboard_lost(why, terminal, executor, held_output, printer.say)
        if dashboard is None:
            lines.publish(status)

    def waiting(reset_s: float, left_s: float) -> bool:  # the robot holds before an episode
        if executor is None:
            return False
        executor.resetting(reset_s, left_s)  # published: the dashboard counts down, commands obeyed
        if executor.estopped and robot.is_connected:
            robot.torque_off()  # now, not after the cleanup
        else:
            executor.watch_faults()  # hands at the robot: an overload is handled as in a tick
        return executor.stopped

    reports = []
    recording = None  # what --record kept and lost, once its writer closed (RecordingOutcome)
    quiet = contextlib.ExitStack()
    putting_away = threading.Event()
    failed_before_motion = False  # a run that fails before the robot first moves leaves it as found
    failure: BaseException | None = None  # ... unless a servo fault is why (its bus goes limp)
    moving = False
    try:
        # From the robot's connect until the run takes the signals over (_stop_on_signals),
        # SIGTERM and SIGHUP as Ctrl-C: by default they killed it with torque on. As record does.
        quiet.callback(_restore_signals, interrupt_on_signals())
        target.connect()
        executor = Executor(robot, backend, exec_cfg, fps=target.fps, publish=publish,
                            image_codec=target.image_codec,  # the twin's store codec, as eval --sim
                            start_state=start_state)
        executor.status.profile, executor.status.episodes_total = profile.name, args.episodes
        executor.status.success_judged = not target.on_hardware
        quiet.callback(_restore_signals, _stop_on_signals(executor, putting_away))
        target.prepare(args.seed)
        warm = executor.warm_up(target.instruction)
        delay = ("sync waits for each chunk" if exec_cfg.strategy.value == "sync"
                 else f"initial delay {executor.initial_delay} ticks")
        say(f"warmed up: {', '.join(f'{1e3 * t:.0f}' for t in warm)} ms; {delay}")
        if target.on_hardware and not args.yes and not executor.stopped:
            printer.flush()
            wait_for_go(executor, publish, args.episodes)
        if use_tui and not executor.stopped:  # its own process: repaints must not take the GIL from the loop
            from shallowpi.tui.launch import TerminalState, hold_terminal_logs, spawn_dashboard

            printer.flush()  # the lines so far, before the dashboard takes the terminal
            quiet.enter_context(hold_terminal_logs())
            terminal = TerminalState.save()
            dashboard = spawn_dashboard(str(publisher.address), token=publisher.local_token)
        moving = True
        # --yes: nobody attends, so a hold after a fault is bounded as the one after the last
        # episode is skipped (an overnight script hung with the arm powered until Ctrl-C).
        fault_hold_s = exec_cfg.fault_hold_s if args.yes else None
        for episode in range(args.episodes):
            if executor.stopped:
                break
            seed = args.seed + episode
            executor.status.episode = episode
            if not executor.go_to_start():  # the robot: to the demonstrations' start pose first
                break
            if target.on_hardware and executor.hold_measured() is None:  # a fault: handled, the run ends
                break
            target.start_episode(seed, waiting)
            if executor.stopped:  # stopped while the robot held for the reset
                break
            on_tick = None
            if recorder:
                from shallowpi.record.writer import WaitAbandoned  # loaded with the recorder

                # A disk that stalls (a hung USB drive, an NFS mount) holds the writer's queue
                # full for as long as it likes: the wait for room publishes, obeys the e-stop
                # and reads the servos' alarms as the executor's own waits do.
                try:
                    on_tick = recorder.begin(target.instruction, cfg.robot.name, target.fps,
                                             give_up=executor.watched_wait(f"room to record episode {episode + 1}"))
                except WaitAbandoned:  # an e-stop, a stop or a fault while it waited: nothing begun
                    break
                except PlatformError as exc:  # the writer failed on an episode before (it runs seconds behind)
                    executor.policy_fault(exc)
                    break
            report = executor.run_episode(target.instruction, ticks_in(target.episode_s, target.fps), seed,
                                          success=target.success_check(),
                                          stop_after_success_ticks=int(target.fps), on_tick=on_tick)
            if recorder:
                try:  # its holds and stale frames too
                    recorder.end(report, seed if args.sim else None,
                                 give_up=executor.watched_wait(f"room to keep episode {episode + 1}'s recording",
                                                               limit_s=fault_hold_s))
                except WaitAbandoned:  # the run stopped while it waited: that episode is not kept (said at close)
                    pass
                except PlatformError as exc:  # as at begin: a fault with torque on, not an error out of the run
                    executor.policy_fault(exc, report.sent[-1] if report.sent else None)
            executor.status.successes += bool(report.success)
            # Its commands were for the episode (the recording, a fault's hold): the summary reads
            # none, and a run of hundreds of episodes kept every one (~160 bytes a tick).
            del report.sent[:-1]
            reports.append(report)
            say(_episode_line(episode, args.episodes, report, seeded=not target.on_hardware))
        if target.on_hardware and executor.held_after_fault:
            hold_until_the_operator_ends(executor, publish, say, keys=dashboard is not None, limit_s=fault_hold_s)
        executor.done(len(reports))
        if target.on_hardware and not args.yes and not executor.stopped:
            hold_until_released(executor, publish, keys=dashboard is not None)
            if executor.held_after_fault:  # a servo faulted as it held: the sound buses hold on
                hold_until_the_operator_ends(executor, publish, say, keys=dashboard is not None,
                                             limit_s=fault_hold_s)
    except BaseException as exc:
        # An error before the first motion (a backend that will not warm up); Ctrl-C at the
        # go question is the operator's word, and turns torque off.
        failed_before_motion = not moving and not isinstance(exc, KeyboardInterrupt)
        failure = exc
        raise
    finally:
        try:
            putting_away.set()  # a signal from here on waits for torque off instead of cutting it short
            target.disconnect(as_found=failed_before_motion, fault=failure)  # first: torque off whatever else the cleanup meets
            if target.on_hardware:
                torque = torque_off_line(target.robot)
                run_log.info("%s", torque)
                held_output.append(torque)  # printed below, however the run ended
        finally:
            publisher.close()
            if dashboard is not None:
                from shallowpi.tui.launch import wait_dashboard

                if wait_dashboard(dashboard) != 0:  # it hung and was stopped, or died: as record does,
                    terminal.restore()  # undo what it left on the terminal before the summary prints
            quiet.close()  # the signal handlers go back only once the robot is off
            printer.close()
            # The recording before any print: a terminal closed under the run (an SSH
            # session dropped, SIGHUP) fails every print with EIO, and the last episode's
            # queued frames and commit went with the process.
            if recorder:
                recording = recorder.close()
            with contextlib.suppress(OSError):  # the terminal gone: nobody to tell
                for line in held_output:
                    print(line)
    summary = _summary(reports, executor, judged=not target.on_hardware, simulated=not exec_cfg.realtime,
                       seeded=not target.on_hardware)
    run_log.info("%s", summary["line"])
    if args.json:
        # Stopped early (Ctrl-C, a stop key) or by a fault, the last episode was cut off and
        # judged a failure: `complete` says whether the run is the one asked for. An episode
        # whose recording was lost (a commit that failed after the loop: `end` only queues it)
        # leaves it incomplete too.
        complete = (len(reports) == args.episodes and not any(r.ended in CUT_SHORT for r in reports)
                    and (recording is None or recording.ok))
        # Written aside and renamed over: a file of that name this user may not write (a
        # colleague's run.json in a shared folder the output check found writable) is
        # replaced, not the lost end of a run that drove the robot.
        replace_text(args.json, json.dumps({**summary, "episodes_asked": args.episodes, "complete": complete,
                                         "recording": recording.as_json() if recording else None,
                                         "profile": profile.name, "plan": plan_line,
                                         # what the policy was told, and (the twin) the task judged
                                         "task": target.task_name, "instruction": target.instruction,
                                         "backend": backend_name, "runs_on": backend.runs_on(),
                                         "parity_std": parity.error_std if parity else None,
                                         "bundle_sha256": bundle.digest, "strategy": exec_cfg.strategy.value,
                                         "rtc_mask": exec_cfg.rtc_mask, "seam_ticks": exec_cfg.seam_ticks,
                                         # the delay that ran: --delay-ms, else deploy.injected_delay_s
                                         "delay_ms": float(exec_cfg.injected_delay_s) * 1e3,
                                         "speed_scale": args.speed_scale or 1.0,
                                         "bundle": str(bundle.path)}, indent=2))
    with contextlib.suppress(OSError):  # after the JSON: a terminal gone must not cost the file
        print(summary["line"])
    faults = executor.safety.faults if executor else 0
    # A recording that failed (said on stderr as the recorder closed) fails the run as
    # `platform record` does: a script must not take the episodes for kept.
    return 1 if faults or (recording is not None and recording.failure is not None) else 0


def _sysroot() -> Path:

    return Path(os.environ.get("SHALLOWPI_SYSROOT", "/"))  # tests point it at fake system files


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def _torch_runs_otherwise(options: Any) -> tuple[Any, str]:
    """What torch runs as, asked `options` (BackendOptions, left as they are): (the options to
    run with: device cpu where the profile asks CUDA on a machine without it, else `options`
    itself; the plan line's ending that says what runs instead, '' when torch runs as asked).
    Torch casts its towers to the asked precision on a GPU only (TorchBackend), so the ending
    also says fp32 ("profile cuda: torch on cuda (bf16)" ran on cpu in fp32)."""
    from dataclasses import replace

    from shallowpi.deploy.backends.torch_backend import DTYPES, NAMES

    asked = f"{options.device} ({options.precision})"
    why = ""
    if options.device.split(":")[0] == "cuda" and not _has_cuda():  # cuda:0 as well
        # A copy: the caller's options still say what the profile asked.
        options, why = replace(options, device="cpu"), "torch sees no CUDA GPU here"
    precision = NAMES[DTYPES[options.precision]] if options.device.split(":")[0] == "cuda" else "fp32"
    if (runs := f"{options.device} ({precision})") == asked:
        return options, ""
    return options, f"; {why or f'torch computes in {precision} on {options.device}'}: it runs on {runs}, not {asked}"


def _executor_config(args: argparse.Namespace, cfg: Any, realtime: bool) -> Any:
    from omegaconf import OmegaConf

    from shallowpi.deploy.settings import ExecutorConfig

    section = OmegaConf.to_container(cfg.deploy, resolve=True)
    selection = OmegaConf.to_container(cfg.action_selection, resolve=True)
    if args.strategy:
        section["strategy"] = args.strategy
    if args.replan_every is not None:  # 0 is refused by the selection's own check, not ignored
        selection["replan_every"] = args.replan_every
    if args.delay_ms is not None:
        section["injected_delay_s"] = args.delay_ms / 1e3
    section["realtime"] = realtime  # the twin runs on its own time unless asked
    return ExecutorConfig.from_config(section, selection)


def _dashboard_lost(why: str, terminal: Any, executor: Any, held_output: list[str],
                    say: Callable[[str], None]) -> None:
    """The deploy's dashboard exited while the executor runs (`q` when read-only, a crash, a
    kill) or was stopped by the kernel (`why`, from launch.dashboard_lost): the operator has
    lost the view and the keys, so the executor stops (and the run ends with torque off),
    the terminal is put back as it was, and the held lines go to `say` (queued: this runs
    on the loop). Returns None, the dashboard's new value."""
    terminal.restore()
    if executor is not None and not executor.stopped:
        executor.stop()
        why += "; stopping the executor (torque goes off as it ends: support the arm)"
    say(why)
    for line in held_output:
        say(line)
    held_output.clear()
    return None


def _obey(executor: Any, command: Any) -> None:
    """An executor dashboard's command: e-stop, or stop (its stop and quit keys)."""
    from shallowpi.telemetry.status import Command

    if executor is None:
        return
    if command is Command.ESTOP:
        executor.estop()
    elif command in (Command.STOP, Command.QUIT):
        executor.stop()


def _stop_on_signals(executor: Any, putting_away: threading.Event) -> dict[int, Any]:
    """SIGTERM, SIGINT and SIGHUP stop the executor at its next tick; a second one, while the
    run is still blocked (a backend's warm-up or an engine build, a wait on a stuck chunk), raises
    KeyboardInterrupt to leave at once, torque going off on the way out. After a fault the
    robot holds for the operator: there the first signal is the one that ends the hold. Once
    `putting_away` is set (torque going off) a signal only says to wait: raised inside the
    torque-off writes it left buses powered. Returns the handlers replaced."""
    def stop(signum: int, frame: Any) -> None:
        if putting_away.is_set():
            log.warning("signal %d: torque is going off, wait for it", signum)
            return
        if executor.stopped and not executor.held_after_fault:
            log.warning("signal %d again: leaving now, torque off", signum)
            raise KeyboardInterrupt
        log.info("signal %d: stopping after this tick (again to leave at once)", signum)
        executor.stop()

    # SIGHUP (the terminal or SSH session closed) too: by default it would kill the process
    # with the robot on its last command.
    return {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}


def _restore_signals(previous: dict[int, Any]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def _episode_line(index: int, total: int, r: Any, seeded: bool = True) -> str:
    """One episode's line; `seeded`: the twin, whose scene the seed picks (on the robot the
    scene is the one in front of it: no seed said)."""
    result = "not judged" if r.success is None else "success" if r.success else "FAIL"
    lat = np.percentile(r.latency_ms, [50, 99]) if r.latency_ms else (0.0, 0.0)
    seed = f" seed {r.seed}" if seeded else ""
    return (f"episode {index + 1}/{total}{seed}: {result} ({r.ended}, {r.ticks} ticks) | "
            f"{r.chunks} chunks, inference p50 {lat[0]:.0f} p99 {lat[1]:.0f} ms, delay "
            f"{max(r.delays, default=0)} ticks max | holds {r.holds}, seam trips {r.seam_trips}, "
            f"clamps {r.clamps}{_by_joint(r.clamped_joints)}, stale frames {r.stale_frames}"
            + (f", stale chunks dropped {r.stale_chunks}" if r.stale_chunks else ""))


def _by_joint(counts: dict[str, int], shown: int = 3) -> str:
    """' (gripper 50, shoulder_lift 8)': the joints clamped most, so an operator knows which
    limit the policy presses on."""
    if not counts:
        return ""
    top = sorted(counts.items(), key=lambda kv: -kv[1])[:shown]
    return " (" + ", ".join(f"{name} {n}" for name, n in top) + (", ..." if len(counts) > shown else "") + ")"


def _summary(reports: list[Any], executor: Any, judged: bool, simulated: bool = False,
             seeded: bool = True) -> dict[str, Any]:
    """The run's closing line and its JSON; `judged`: success was detected (the twin), so
    `successes` is a count, else None. `seeded`: the twin's scenes were picked by the
    episodes' seeds, else (the robot) each episode's "seed" is None. `simulated`: the loop ran on the twin's simulated
    time, where a tick's measured "period" is the wall time it took (the chunks computed
    inside it included) and nothing overruns: said so, as `sim_tick_wall_p99_ms` in the
    JSON, whose `loop_p99_ms` (the loop's period on the wall clock) is then null."""
    from shallowpi.tui.panels import loop_timing_text

    latencies = [x for r in reports for x in r.latency_ms]
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (0.0, 0.0)
    successes = sum(bool(r.success) for r in reports)
    outcome = f"success {successes}/{len(reports)}" if judged else f"{len(reports)} episodes, success not judged"
    loop_p99 = max((r.period_p99_ms for r in reports), default=0.0)
    safety = executor.safety if executor else None
    counts = {k: getattr(safety, k, 0) for k in ("clamps", "seam_trips", "holds", "stale_frames", "faults")}
    timing = loop_timing_text(simulated, loop_p99, overruns=sum(r.overruns for r in reports))
    line = (f"{outcome} | inference p50 {p50:.0f} ms, p99 {p99:.0f} ms | {timing} | safety: "
            + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items()))
    # Dropped, back past deploy.max_chunk_age_s: the robot held for each (their latencies are in the p99).
    if stale_chunks := sum(r.stale_chunks for r in reports):
        line += f", stale chunks dropped {stale_chunks}"
    if exchanges := sum(r.link_exchanges for r in reports):  # a servo bus (not the direct twin)
        line += f" | servo link: {sum(r.link_failed_tries for r in reports)} of {exchanges} exchanges retried"
    return {"line": line, "successes": successes if judged else None, "episodes": len(reports),
            "inference_p50_ms": float(p50),
            "inference_p99_ms": float(p99), "loop_p99_ms": None if simulated else loop_p99,
            "sim_tick_wall_p99_ms": loop_p99 if simulated else None, "safety": counts,
            "chunks": sum(r.chunks for r in reports), "stale_chunks": stale_chunks,
            "per_episode": [{"seed": r.seed if seeded else None, "success": r.success, "ended": r.ended, "ticks": r.ticks,
                             "chunks": r.chunks, "stale_chunks": r.stale_chunks,
                             "holds": r.holds, "seam_trips": r.seam_trips, "max_seam_jump": r.max_seam_jump,
                             "max_step": r.max_step,
                             "clamps": r.clamps, "clamped_joints": r.clamped_joints,
                             "link_exchanges": r.link_exchanges, "link_failed_tries": r.link_failed_tries,
                             "delays": r.delays, "latency_ms": r.latency_ms} for r in reports]}


class _Lines:
    """--no-tui: a line when the status message changes (warm-up, faults), and the status
    line (tui/executor_render.py, as `platform monitor --lines` prints it) every 2 s, queued
    to `printer` (the loop never waits on stdout)."""

    def __init__(self, episodes: int, printer: LinePrinter, every_s: float = 2.0) -> None:
        self.episodes, self.printer, self.every_s = episodes, printer, every_s
        self._message, self._printed = "", 0.0

    def publish(self, status: Any) -> None:
        """Print the status message if it changed, and the status line every `every_s` while running or holding."""
        from shallowpi.tui.executor_render import status_line

        if status.message and status.message != self._message:
            self._message = status.message
            self.printer.say(f"[deploy] {status.message}")
        if status.state.value in ("running", "hold") and time.monotonic() - self._printed >= self.every_s:
            self._printed = time.monotonic()
            self.printer.say(f"[deploy] {status_line(status)}")
