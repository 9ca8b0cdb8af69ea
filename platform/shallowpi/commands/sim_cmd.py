"""Run a robot's scripted expert in its MuJoCo twin: success rate, speed, and a look.

  platform sim --robot humanoid --list                       the humanoid's tasks
  platform sim --robot humanoid --task cube_in_bowl --episodes 10
  platform sim --robot arm --task push_block_left --seed 7 --png strip.png
  platform sim --robot bimanual --task handover --size 224x224 --video handover.mp4
  platform sim --robot arm --task cube_in_bowl --episodes 100 --no-render   physics only

Each episode resets the twin from its seed (seeds S, S+1, ...), runs the expert through
`--sim direct` (the in-process robot: observe, then act, one control period of simulated
time per tick) and judges success at the end. Cameras render on the CPU with
MUJOCO_GL=egl at the robot config's camera size unless --size says otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shallowpi import config
from shallowpi.cli import add_config_flags, at_least, overrides_from, ready_output, user_path
from shallowpi.errors import PlatformError

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
    success rate and speed (steps/s, times real time). Returns 0.

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
        if path and not str(path).lower().endswith(suffix):  # the writer's format, whatever the name says
            raise PlatformError(f"{flag} {path}: it writes a {suffix} file; name it so (e.g. {Path(path).stem}{suffix})")
        ready_output(path, flag)  # before the episodes run

    video = VideoWriter(args.video, spec.fps) if args.video else None
    strip = StripWriter(args.png, roles=cameras, fps=spec.fps) if args.png else None
    results = []
    started = time.perf_counter()
    with DirectSimRobot(spec, cameras=cameras) as robot:
        for episode in range(args.episodes):
            seed = args.seed + episode

            def watch(obs: Observation) -> None:
                images = [obs.frames[role].image for role in cameras]
                if video is not None:
                    video.add(images)
                if strip is not None:
                    strip.add(images)

            result = run_episode(robot, task, ScriptedAgent(), seed, watch=watch if cameras else None)
            results.append(result)
            if strip is not None:
                strip.end_episode(f"episode {episode}  seed {seed}  {'success' if result.success else 'FAILED'}  "
                                  f"{result.sim_seconds:.1f} s")
            print(
                f"episode {episode} seed {seed}: {'success' if result.success else 'FAILED'} "
                f"in {result.steps} steps ({result.steps / result.wall_seconds:.0f} steps/s)",
                flush=True,
            )
    wall = time.perf_counter() - started
    if video is not None:
        video.close()
        print(f"video: {args.video}")
    if strip is not None:
        strip.close()
        print(f"frames: {args.png}")
    steps = sum(r.steps for r in results)
    sim_seconds = sum(r.sim_seconds for r in results)
    successes = sum(r.success for r in results)
    print(
        f"{robot_name} / {task.name} ('{task.instruction}'): success {successes}/{len(results)} "
        f"({100.0 * successes / len(results):.0f}%), {steps / wall:.0f} steps/s, "
        f"{sim_seconds / wall:.2f}x real time, cameras: {', '.join(cameras) or 'off'}"
        + (f" at {spec.render_width}x{spec.render_height}" if cameras else "")
    )
    return 0
