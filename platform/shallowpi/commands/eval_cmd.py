"""Evaluate a policy checkpoint: offline action error, or success rate in the twin (--sim).

  platform eval --policy runs/kitchen-small/checkpoints/step_001500 --dataset kitchen
  platform eval --policy CKPT --dataset kitchen --episodes 18 19    chosen episodes
  platform eval --policy CKPT --dataset other_store                 every episode of it

  platform eval --policy CKPT --sim                     10 episodes of each task of the robot
  platform eval --policy CKPT --sim stack               through the emulated servos and RealSenses
  platform eval --policy CKPT --sim --sim-episodes 50 --json sim.json
  platform eval --policy CKPT --sim --png looks/ --video looks/   a filmstrip, an .mp4 each
  platform eval --policy CKPT --sim --robot arm --task push_block_left --sim-size 64x64
  platform eval --policy CKPT --sim --replan-every 10 --episode-time-s 5   quick look
  platform eval --policy CKPT --sim --strategy rtc --delay-ticks 3   as the robot runs it
  platform eval --policy CKPT --sim --scenes shared    every task doable: does it follow the words?

Offline: by default the held-out episodes recorded with the checkpoint (its training
split) are used when the dataset is the one it was trained on, else every episode; the
report says which they are (held-out, training episodes when none was held out, or another
store's). Errors are in the robot's units (radians, metres for a linear joint; grippers
0..1) over the predicted chunk's non-padded steps.

--sim: runs the policy in closed loop in the robot's MuJoCo twin (`direct`, the default:
in-process; `stack`: behind emulated Dynamixel chains and software RealSense cameras, the
drivers the robot runs; both on simulated time): observe, predict an action chunk, execute its first --replan-every actions (default
half the chunk), observe again, until the task's time limit or until the task's success
detector has held for a second; success is that detector at the last tick, reported with
its 95 % Wilson interval, and beside it how often the policy did another of the robot's
tasks instead of the one it was told (every task's objects are on the table; with
`--scenes shared` every task is doable in every scene, so only the instruction says which
to do). --strategy
picks how each tick's action comes from the chunks, exactly as the executor does
(`action_selection` in configs/config.yaml: replan, ensemble, rtc); --delay-ticks makes
each chunk arrive that many control periods after its observation, as a slow inference
would on the robot. Robot and camera size are those the checkpoint's training store
recorded (or the store given with --dataset), the tasks every task of that robot, one row
each; --robot, --task and --sim-size override them. Camera frames pass through the
training store's image codec before the policy (as the training loader decoded them). Episodes use seeds --seed, --seed+1, ... (default from 1000:
`platform record` used 0, 1, ... for the training scenes). Rendering runs on the CPU with
MUJOCO_GL=egl.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shallowpi.cli import at_least, device_name, overrides_from, ready_output, user_path

SIM_MODES = ("direct", "stack")
SIM_EPISODES = 10  # --sim's default episode count (its first seed: EVAL_SEEDS.start)
# Offline windows evaluated when --samples is not given (evenly spaced over the episodes).
OFFLINE_SAMPLES = 256
HELP = "offline action error of a policy checkpoint, or its success rate in the twin (--sim)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the offline flags and the `--sim` group."""
    parser.add_argument("--policy", type=user_path, required=True,
                        help="checkpoint folder (holds model.safetensors; its EMA average when kept), or a run "
                             "folder: its newest step")
    parser.add_argument("--dataset", help="dataset name (datasets/NAME.zarr) or a path; with --sim, "
                                          "the store whose robot and task to use (default: the training store)")
    parser.add_argument("--data-root", help="folder holding the .zarr stores (default: datasets/)")
    parser.add_argument("--episodes", type=int, nargs="+", metavar="INDEX",
                        help="offline: the store's episode indices to evaluate (with --sim, the count is --sim-episodes)")
    parser.add_argument("--samples", type=at_least(1), metavar="N",
                        help="offline: at most N training windows (an observation and the action chunk after it) "
                             f"of those episodes (default {OFFLINE_SAMPLES})")
    parser.add_argument("--steps", type=at_least(1), metavar="N",
                        help="Euler steps of the flow-matching sampler, not training steps (default: the "
                             "checkpoint's, 10)")
    parser.add_argument("--json", type=user_path, help="also write the report as JSON here")
    parser.add_argument("--device", type=device_name, default="auto",
                        help="run the policy on auto (a GPU when there is one), cpu, cuda, cuda:1 (default: auto)")
    sim = parser.add_argument_group("in the simulation twin (--sim)")
    # Not `choices=`: `--sim robot.fps=15` must leave the override alone (see `run`).
    sim.add_argument("--sim", nargs="?", const="direct", metavar="{direct,stack}",
                     help="success rate in the robot's twin instead: direct (default, in-process) or "
                          "stack (through the emulated servos and software RealSenses)")
    sim.add_argument("--sim-episodes", type=at_least(1), metavar="N", help=f"episodes to run (default {SIM_EPISODES})")
    sim.add_argument("--seed", type=at_least(0), help="seed of the first episode (default 1000, the first held-out scene)")
    sim.add_argument("--robot", help="robot to simulate (default: the training store's)")
    sim.add_argument("--task", help="one task (default: every task of the robot, a row each; `platform sim --list`)")
    sim.add_argument("--sim-size", metavar="WxH", help="render size (default: the training store's)")
    sim.add_argument("--scenes", choices=["own", "shared"],
                     help="each task's own scenes (default), or scenes where every task of the robot is "
                          "doable, so following the instruction is what tells them apart")
    sim.add_argument("--replan-every", type=at_least(1), metavar="K",
                     help="a new chunk every K actions (default: half the chunk; 1 for ensemble)")
    sim.add_argument("--strategy", choices=["replan", "ensemble", "rtc"],
                     help="how each tick's action comes from the chunks (default: action_selection.strategy, "
                          "replan). deploy's sync is replan here, its async replan with --delay-ticks")
    sim.add_argument("--delay-ticks", type=at_least(0), metavar="N",
                     help="simulated inference latency in control periods (default 0)")
    sim.add_argument("--episode-time-s", type=at_least(0, float, above=True), help="stop episodes sooner than the task's time limit")
    sim.add_argument("--video", type=user_path, metavar="DIR", help="write an .mp4 of each episode here")
    sim.add_argument("--png", type=user_path, metavar="DIR", help="write a filmstrip .png of each episode here")
    sim.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Dispatch to `run_sim` (--sim) or `run_offline`; returns its exit code.

    `--sim key=value` is taken as `--sim direct` plus that override. Raises ConfigError for
    an unknown --sim mode, a --sim-only flag without --sim, an offline-only one (--episodes,
    --samples) with it, or no --dataset offline.
    """
    from shallowpi import config
    from shallowpi.errors import ConfigError

    if args.sim is not None and args.sim not in SIM_MODES:
        if "=" not in args.sim:
            raise ConfigError(f"unknown --sim mode '{args.sim}'; choose one of: {', '.join(SIM_MODES)}")
        # `--sim key=value`: argparse took the override for the mode.
        args.overrides, args.sim = [args.sim, *args.overrides], "direct"
    if args.sim:
        for flag in ("episodes", "samples"):
            if getattr(args, flag) is not None:
                raise ConfigError(f"--{flag} is for the offline error; with --sim the count is --sim-episodes N")
        from shallowpi.robots.sim.episode import EVAL_SEEDS

        args.sim_episodes = SIM_EPISODES if args.sim_episodes is None else args.sim_episodes
        args.seed = EVAL_SEEDS.start if args.seed is None else args.seed
        args.scenes = args.scenes or "own"
        for path, flag in ((args.json, "--json"), (args.video, "--video"), (args.png, "--png")):
            ready_output(path, flag, folder=flag != "--json")  # before the evaluation, not after it
        return run_sim(args)
    for flag in ("sim_episodes", "seed", "robot", "task", "sim_size", "scenes", "replan_every", "strategy",
                 "delay_ticks", "episode_time_s", "video", "png"):
        if getattr(args, flag) is not None:
            raise ConfigError(f"--{flag.replace('_', '-')} belongs to --sim; add --sim")
    if not args.dataset:
        raise ConfigError("pass --dataset NAME for the offline action error, or --sim for the twin")
    cfg = config.compose(overrides_from(argparse.Namespace(data_root=args.data_root, overrides=args.overrides)))
    ready_output(args.json, "--json")
    return run_offline(args, config.resolve_dataset(args.dataset, config.data_root(cfg)))


def run_offline(args: argparse.Namespace, store: Path) -> int:
    """Print the policy's action error on `store`'s episodes; returns 0.

    Episodes: --episodes, else the checkpoint's held-out ones when `store` is its training
    store, else all. Errors are in the robot's units (rad, m; grippers 0..1). Writes --json if
    given. Raises CheckpointError when the dataset's features do not fit the policy.
    """
    import json

    from shallowpi.commands.train_cmd import chunk_dataset, store_episodes
    from shallowpi.policy.fit import rate_mismatch, trained_rate
    from shallowpi.policy.policy import Features
    from shallowpi.policy.weights import CheckpointError
    from shallowpi.train.offline_eval import evaluate

    weights, policy, meta = load_for_eval(args.policy, args.device)
    same_store = Path(meta.get("dataset", "")).resolve() == store.resolve()
    held_out = json.loads(meta["held_out"]) if same_store and "held_out" in meta else None
    trained = json.loads(meta["train"]) if same_store and "train" in meta else None
    if trained is not None:  # a student that learned failed demonstrations from its teacher has seen them too
        trained = sorted(trained + json.loads(meta.get("teacher_only", "[]")))
    if same_store and "episodes" in meta:
        # The split names episodes by number: after a `dataset delete` or a re-recording the
        # numbers name others, and a training episode would be scored as held out.
        from shallowpi.train.finetune import Split

        Split(trained or [], held_out or []).check_same_episodes(
            store, json.loads(meta["episodes"]), f"the checkpoint {args.policy}",
            "its held-out episodes cannot be told apart any more: evaluate it in closed loop "
            "(`platform eval --sim`), or on another dataset")
    episodes = args.episodes or held_out or store_episodes(store)
    what = describe_episodes(episodes, store, same_store, held_out, trained)
    dataset = chunk_dataset(store, policy.cfg.chunk_len, episodes)
    policy.features.check_against(Features.from_sample(dataset[0]), f"dataset {store.name}")
    # A chunk predicted at one rate against one recorded at another: the error means nothing.
    if (trained_hz := trained_rate(meta)) is not None and (problem := rate_mismatch([trained_hz], dataset.fps(),
                                                                                      f"dataset {store.name}")):
        raise CheckpointError(f"{problem}; evaluate it on episodes recorded at {trained_hz:g} Hz")
    samples = OFFLINE_SAMPLES if args.samples is None else args.samples
    report = evaluate(policy, dataset, max_samples=samples, num_steps=args.steps, data=what)
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(weights)} | report.to_dict(), indent=2))
    return 0


def load_for_eval(given: Path, device: str) -> tuple[Path, Any, dict[str, str]]:
    """The weights `given` names (a step folder's EMA average when the run kept one; a run
    folder, its checkpoints/ or `last`: the newest step), the policy loaded from them on
    `device` ("auto": a GPU when there is one) and prepared for the fast sampler, the path
    the robot's executor runs, and their metadata. CheckpointError for weights that do not load."""
    from shallowpi.policy.policy import Policy
    from shallowpi.train.checkpoint import weights_to_use
    from shallowpi.train.distributed import pick_device

    weights = weights_to_use(given)
    policy = Policy.load(weights, device=str(pick_device(device))).prepare_inference()
    return weights, policy, Policy.read_metadata(weights)


def describe_episodes(
    episodes: list[int], store: Path, same_store: bool, held_out: list[int] | None, trained: list[int] | None
) -> str:
    """What the evaluated episodes are to the checkpoint, said plainly: held-out, training
    (the policy has seen them), or another store's. `held_out`/`trained`: the checkpoint's
    split (None when unknown: another store, or a checkpoint older than the record)."""
    from shallowpi.commands.train_cmd import store_episodes

    if not same_store:
        return f"episodes {episodes} of {store.name} (not the training store)"
    if held_out is not None and set(episodes) <= set(held_out):
        return f"held-out episodes {episodes}"
    if trained is None and held_out is not None:  # older checkpoints record the held-out side only
        trained = sorted(set(store_episodes(store)) - set(held_out))
    seen = sorted(set(episodes) & set(trained or []))
    if trained is None:
        return f"episodes {episodes} (the checkpoint does not say which it was trained on)"
    none_held = " (no held-out episodes)" if held_out == [] else ""
    if seen == sorted(episodes):
        return f"training episodes {episodes}{none_held}"
    if seen:
        return f"episodes {episodes} (the policy was trained on {seen})"
    return f"episodes {episodes} (not trained on)"


def run_sim(args: argparse.Namespace) -> int:
    """Run the policy in closed loop in the twin on each target task and print success rates.

    One report per task (95 % Wilson interval); writes --json, videos and filmstrips if
    asked. Returns 0. Raises ConfigError when --replan-every exceeds the chunk length,
    CheckpointError when the policy does not fit the robot.
    """
    import json

    from shallowpi import config
    from shallowpi.data.codecs import image_codec
    from shallowpi.errors import ConfigError
    from shallowpi.evaluate.interval import rate_with_interval
    from shallowpi.evaluate.sim_checkpoint import CheckpointPolicy, check_fits, sim_target
    from shallowpi.evaluate.sim_eval import SimEvalConfig, View, evaluate_in_sim
    from shallowpi.policy.action_selection import ActionSelectionConfig
    from shallowpi.policy.fit import trained_rate
    from shallowpi.robots.sim.episode import EVAL_SEEDS
    from shallowpi.robots.sim.twin import TwinSpec
    from shallowpi.robots.sim.views import StripWriter, VideoWriter

    weights, policy, meta = load_for_eval(args.policy, args.device)
    root_cfg = config.compose(overrides_from(argparse.Namespace(data_root=args.data_root, overrides=[])))
    store = (config.resolve_dataset(args.dataset, config.data_root(root_cfg)) if args.dataset
             else Path(meta["dataset"]) if meta.get("dataset") else None)
    if args.dataset and not store.exists():  # a typo would judge the policy on other renders, silently
        raise ConfigError(f"--dataset {args.dataset}: no dataset at {store}")
    size = config.parse_size(args.sim_size, "--sim-size") if args.sim_size else None
    target = sim_target(store, args.robot, args.task, size, shared=args.scenes == "shared",
                        input_size=policy.cfg.vision.image_size)
    # The robot's config (joints, limits, cameras, fps) is what the twin is built from;
    # key=value overrides still apply (e.g. robot.fps=15).
    # --strategy and --replan-every are sugar for action_selection.* overrides.
    selection_flags = [f"action_selection.{key}={value}" for key, value in
                       (("strategy", args.strategy), ("replan_every", args.replan_every)) if value is not None]
    cfg = config.compose([f"robot={target.robot}", *overrides_from(argparse.Namespace(
        data_root=args.data_root, overrides=args.overrides)), *selection_flags])
    assert target.size is not None  # the flag's, the store's, else the policy's input size
    width, height = target.size
    if note := target.not_as_trained_note(str(args.policy), store,
                                          "pass --dataset STORE to see the twin exactly as training did"):
        print(note, flush=True)
    spec = TwinSpec.from_config(cfg.robot, render_width=width, render_height=height)
    check_fits(policy.features, spec, trained_rate(meta) or target.fps)  # the checkpoint's own, else its store's
    codec = image_codec(*target.image_codec) if target.image_codec else None
    chunk_policy = CheckpointPolicy(policy, num_steps=args.steps, image_codec=codec)
    selection = ActionSelectionConfig.from_config(cfg.action_selection)
    if selection.replan_every is not None and selection.replan_every > chunk_policy.chunk_len:
        raise ConfigError(f"--replan-every {selection.replan_every} is more than the "
                          f"{chunk_policy.chunk_len} actions a chunk of this checkpoint gives")
    selection.replan_every = selection.every(chunk_policy.chunk_len)
    eval_cfg = SimEvalConfig(episodes=args.sim_episodes, seed_start=args.seed, selection=selection,
                             delay_ticks=args.delay_ticks or 0, max_seconds=args.episode_time_s)
    last_seed = args.seed + args.sim_episodes - 1
    if args.seed < EVAL_SEEDS.start or last_seed >= EVAL_SEEDS.stop:
        # `platform record` draws its scenes outside this range: these may be training scenes.
        print(f"warning: seeds {args.seed}..{last_seed} leave the held-out scenes {EVAL_SEEDS.start}.."
              f"{EVAL_SEEDS.stop - 1}: a recording may have trained on them, so this is not an unseen-scene "
              "success rate", flush=True)
    several = len(target.tasks) > 1

    def views_of(task_name: str, roles: list[str]):
        def views(seed: int) -> list[View]:
            stem = f"{task_name}_seed_{seed:04d}" if several else f"seed_{seed:04d}"
            looks: list[View] = []
            if args.video:
                looks.append(VideoWriter(args.video / f"{stem}.mp4", spec.fps))
            if args.png:
                looks.append(StripWriter(args.png / f"{stem}.png", roles=roles, fps=spec.fps))
            return looks
        return views

    reports = []
    with _sim_robot(args.sim, cfg, spec, policy.features.cameras) as robot:
        for task in target.tasks:
            report = evaluate_in_sim(robot, task, chunk_policy, eval_cfg, views=views_of(task.name, list(robot.cameras)),
                                     progress=not args.no_progress, others=target.others(task))
            report.context = {"checkpoint": str(weights), "store": str(store) if store else None,
                              "sources": target.sources, "seed_start": eval_cfg.seed_start,
                              "chunk_actions": chunk_policy.chunk_len, "sim": args.sim, "scenes": args.scenes}
            reports.append(report)
            print(report.table())
    if several:
        print(f"\n{'task':<18} {'success (95 % Wilson interval)':<34} other task instead")
        for r in reports:
            n = len(r.episodes)
            instead = ", ".join(f"{k} {v}/{n}" for k, v in r.other_task_counts().items()) or "-"
            print(f"{r.task:<18} {rate_with_interval(r.successes, n):<34} {instead}")
    for folder, what in ((args.video, "videos"), (args.png, "filmstrips")):
        if folder:
            print(f"{what}: {folder}/*seed_*")
    if args.json:
        args.json.write_text(json.dumps({"robot": target.robot, "sim": args.sim,
                                         "tasks": [r.to_dict() for r in reports]}, indent=2))
    return 0


def _sim_robot(mode: str, cfg, spec, cameras: list[str]):
    """The twin in-process (`direct`) or behind the real drivers (`stack`), unconnected."""
    if mode == "stack":
        from shallowpi.robots.sim.stack import StackSimRobot
        from shallowpi.robots.spec import RobotSpec

        return StackSimRobot(RobotSpec.from_config(cfg.robot), spec)
    from shallowpi.robots.sim.direct import DirectSimRobot

    return DirectSimRobot(spec, cameras=cameras)
