"""Run a robot's scripted expert in its MuJoCo twin: success rate, speed, and a look.

  platform sim --robot humanoid --list                       the humanoid's tasks
  platform sim --robot humanoid --task cube_in_bowl --episodes 10
  platform sim --robot arm --task push_block_left --seed 7 --png strip.png
  platform sim --robot bimanual --task handover --size 224x224 --video handover.mp4
  platform sim --robot arm --task cube_in_bowl --episodes 100 --no-render   physics only

Each episode resets the twin from its seed (seeds S, S+1, ...), runs the expert through
`--sim direct` (the in-process robot: observe, then act, one control period of simulated
time per tick) and judges success at the end. Cameras render on the CPU with
MUJOCO_GL=egl at the robot config's camera size unless --size says otherwise. Ctrl-C or
SIGTERM stops the run keeping the finished episodes' video, strip and summary.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from shallowpi import config
from shallowpi.cli import add_config_flags, at_least, overrides_from, ready_output, user_path
from shallowpi.commands.console import interrupt_on_signals
from shallowpi.deferred_signals import deferred_signals
from shallowpi.errors import PlatformError

if TYPE_CHECKING:
    from shallowpi.robots.sim.episode import EpisodeResult
    from shallowpi.robots.sim.tasks import Task
    from shallowpi.robots.sim.twin import TwinSpec

HELP = "run scripted experts in the simulation twin; success rate and steps/s"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --robot, --task, --list, --episodes, --seed, --sim, --size, --no-render, --video
    and --png."""
    add_config_flags(parser, robot=True, data_root=False)
    parser.add_argument("--task", help="task name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the robot's tasks and exit")
    parser.add_argument("--episodes", type=at_least(1), default=1, help="episodes to run (default 1)")
    parser.add_argument("--seed", type=at_least(0), default=0, help="seed of the first episode (default 0)")
    parser.add_argument(
        "--sim",
        default="direct",
        choices=["direct"],
        help="simulation mode: direct (the in-process twin, the only one here); record, eval and deploy "
             "also take --sim stack (the twin behind the emulated servos and software RealSenses)",
    )
    parser.add_argument(
        "--size", help="render size WIDTHxHEIGHT (default: the robot config's cameras)"
    )
    parser.add_argument(
        "--no-render", action="store_true", help="skip cameras (physics and expert only)"
    )
    parser.add_argument("--video", type=user_path, help="write the episodes' camera views to this .mp4")
    parser.add_argument("--png", type=user_path,
                        help="write frames of every episode to this .png: 8 ticks an episode, each block titled "
                             "with its episode, seed and result, cameras and times labelled")


def _size(text: str | None) -> tuple[int | None, int | None]:
    return config.parse_size(text, "--size") if text else (None, None)


def run(args: argparse.Namespace) -> int:
    """List the robot's tasks, or run the scripted expert for --episodes and print the
    success rate and speed (steps/s, times real time). Returns 0. Ctrl-C, SIGTERM or SIGHUP
    stops the run with the episodes finished kept: video, strip and summary (then
    KeyboardInterrupt: `platform` exits 130).

    Raises PlatformError without --task, for --video/--png with --no-render or named with
    another suffix than the file they write (--episodes < 1 and a negative --seed do not parse).
    """
    from shallowpi.robots.observation import Observation
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.episode import ScriptedAgent, run_episode
    from shallowpi.robots.sim.tasks import get_task, make_tasks
    from shallowpi.robots.sim.twin import TwinSpec
    from shallowpi.robots.sim.views import StripWriter, VideoWriter

    cfg = config.compose(overrides_from(args))
    robot_name = str(cfg.robot.name)
    if args.list or not args.task:
        tasks = make_tasks(robot_name)
        if not args.list:
            raise PlatformError(f"pass --task; tasks for {robot_name}: {', '.join(tasks)}")
        for name, task in make_tasks(robot_name, checks=True).items():
            note = "" if name in tasks else "   (check task: for tests, never a default)"
            print(f"{name:20s} {task.instruction}{note}")
        return 0
    task = get_task(robot_name, args.task)
    width, height = _size(args.size)
    spec = TwinSpec.from_config(cfg.robot, render_width=width, render_height=height)
    cameras = () if args.no_render else spec.cameras
    if args.no_render and (args.video or args.png):
        raise PlatformError("--video and --png need the cameras; drop --no-render")
    for flag, path, suffix in (("--png", args.png, ".png"), ("--video", args.video, ".mp4")):
        ready_output(path, flag, suffix=suffix)  # before the episodes run

    video = VideoWriter(args.video, spec.fps) if args.video else None
    strip = StripWriter(args.png, roles=cameras, fps=spec.fps) if args.png else None
    results: list[EpisodeResult] = []
    started = finished = time.perf_counter()
    in_flight: int | None = None  # the episode running, None between episodes
    ticks = frames = 0  # its frames so far; all frames written
    # Ctrl-C, SIGTERM or an error mid-run: the episodes finished keep their video, strip and
    # summary (it used to lose all three and leave the video's temporary file behind).
    try:
        with _signals_interrupt(), DirectSimRobot(spec, cameras=cameras) as robot:
            for episode in range(args.episodes):
                seed = args.seed + episode
                in_flight, ticks = episode, 0

                def watch(obs: Observation) -> None:
                    nonlocal ticks, frames
                    images = [obs.frames[role].image for role in cameras]
                    # One step: a signal between the video's frame and the count said one
                    # tick fewer than the video held (a SIGTERM mid-run, under load).
                    with deferred_signals():
                        if video is not None:
                            video.add(images)
                        if strip is not None:
                            strip.add(images)
                        ticks, frames = ticks + 1, frames + 1

                result = run_episode(robot, task, ScriptedAgent(), seed, watch=watch if cameras else None)
                results.append(result)
                in_flight, finished = None, time.perf_counter()
                if strip is not None:
                    strip.end_episode(f"episode {episode}  seed {seed}  {'success' if result.success else 'FAILED'}  "
                                      f"{result.sim_seconds:.1f} s")
                print(
                    f"episode {episode} seed {seed}: {'success' if result.success else 'FAILED'} "
                    f"in {result.steps} steps ({result.steps / result.wall_seconds:.0f} steps/s)",
                    flush=True,
                )
    finally:
        # The frames of an episode cut short are in the video already (it cannot drop them):
        # the strip shows them too, titled so, and both lines say so.
        cut = f" (episode {in_flight} cut short after {ticks} ticks)" if in_flight is not None and ticks else ""
        if strip is not None and cut:
            strip.end_episode(f"episode {in_flight}  seed {args.seed + in_flight}  stopped")
        written = []
        for writer, path, what in ((video, args.video, "video"), (strip, args.png, "frames")):
            if writer is not None:
                writer.close()  # moves the finished file onto `path`; nothing without frames
                written += [f"{what}: {path}{cut}"] if frames else []
        # Every file is closed before anything is printed: after SIGHUP (the terminal gone)
        # a print raises OSError, which left the strip unwritten.
        with contextlib.suppress(OSError):
            for line in written:
                print(line)
            print(_summary(robot_name, task, results, finished - started, args.episodes, cameras, spec), flush=True)
    return 0


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP (the terminal closed) raise KeyboardInterrupt while the episodes
    run, as Ctrl-C does: by default they end the process at once, with no video, strip or
    summary. Nothing is installed off the main thread (Python delivers signals only there)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = interrupt_on_signals()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _summary(robot_name: str, task: Task, results: list[EpisodeResult], wall: float, episodes: int,
             cameras: tuple[str, ...], spec: TwinSpec) -> str:
    """The run's line: success rate and speed over the episodes that finished, in `wall`
    seconds (to the end of the last); a run stopped early says how many of `episodes` ran."""
    head = f"{robot_name} / {task.name} ('{task.instruction}')"
    if not results:
        return f"{head}: stopped before an episode finished"
    steps = sum(r.steps for r in results)
    sim_seconds = sum(r.sim_seconds for r in results)
    successes = sum(r.success for r in results)
    return (
        f"{head}: success {successes}/{len(results)} "
        f"({100.0 * successes / len(results):.0f}%), {steps / wall:.0f} steps/s, "
        f"{sim_seconds / wall:.2f}x real time, cameras: {', '.join(cameras) or 'off'}"
        + (f" at {spec.render_width}x{spec.render_height}" if cameras else "")
        + (f"; stopped after {len(results)} of {episodes} episodes" if len(results) < episodes else "")
    )
