"""Train or fine-tune the π0 teacher on a recorded dataset.

  platform train --dataset kitchen --policy small            from scratch, runs/kitchen-small/
  platform train --dataset kitchen --policy small --resume   continue after an interruption
  platform train --dataset kitchen --policy pi0 --init ~/ckpt/pi0_base
                                                             fine-tune lerobot/openpi π0 weights
  platform train --dataset kitchen policy.train.steps=300 policy.train.ema=0.999

The run folder holds the resolved config, the train/held-out split, metrics.jsonl,
TensorBoard logs (tb/), checkpoints/step_N/ (safetensors) and eval.json. Held-out episodes
(policy.train.eval_fraction of them, shared among the tasks, each task's last ones) are
evaluated at the end: see `platform eval`. With a single episode none is held out: a
warning says so, the evaluation is labelled as one on training episodes, and
policy.train.require_held_out=true refuses such a run instead.

Before step 0 the store is checked: episodes of different fps are refused, different
calibration ids warned about, and NaN/inf in observation.state or action named by feature,
episode and row (policy.train.skip_nonfinite=true skips the windows touching them instead).

Several GPUs (one process each, DDP; FSDP when policy.train.fsdp=true):
  torchrun --nproc_per_node 8 -m shallowpi -- train --dataset kitchen --policy pi0 --run NAME
The `--` before the command keeps torchrun from reading `--run` as its own `--run-path`.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from shallowpi.cli import (
    add_config_flags,
    at_least,
    device_name,
    name_over_limit,
    overrides_from,
    user_path,
)

HELP = "train or fine-tune the π0 teacher on a dataset"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the dataset and policy flags and the shared training flags."""
    add_config_flags(parser, dataset=True, policy=True)
    add_training_flags(
        parser,
        run="run folder name under runs/ (default: DATASET-POLICY)",
        resume="continue the run from its last checkpoint",
        init="start from a checkpoint: ours (a step's trained weights, not its EMA average: name step_N/ema "
             "for that; a run folder: its newest step), or a lerobot/openpi π0 directory",
        steps="training steps (== policy.train.steps=N)",
    )


def add_training_flags(parser: argparse.ArgumentParser, *, run: str, resume: str, init: str, steps: str) -> None:
    """The run flags `platform train` and `platform distill` share (--run, --runs-dir,
    --resume, --init, --steps, --device, --no-progress). The help texts of the four whose
    meaning depends on the command's run are given; read them back with `runs_folder`
    and `run_settings`."""
    parser.add_argument("--run", dest="run_name", metavar="NAME", help=run)
    parser.add_argument("--runs-dir", type=user_path, default=None, help="folder holding run folders (default: runs/ in the checkout, from any working folder)")
    parser.add_argument("--resume", action="store_true", help=resume)
    parser.add_argument("--init", type=user_path, help=init)
    parser.add_argument("--steps", type=at_least(1), help=steps)
    parser.add_argument("--device", type=device_name, default="auto",
                        help="auto (a GPU when there is one), cpu, cuda, cuda:1 (default: auto)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def runs_folder(args: argparse.Namespace) -> Path:
    """The folder holding run folders: --runs-dir, else runs/ in the checkout."""
    from shallowpi import config

    return Path(args.runs_dir) if args.runs_dir else config.REPO_ROOT / "runs"


def run_folder(args: argparse.Namespace, default: str, whose: str = "the run") -> Path:
    """`whose` folder: --run NAME, else `default` (the store's and the preset's names), under
    `runs_folder`. ConfigError (one line) when a name in it is longer than the file system
    takes (`name_over_limit`, in bytes), before the store's screening, an --init's load or
    any file: the folder's mkdir was ENAMETOOLONG's traceback after them. A run makes
    nothing beside its folder (its lock, its checkpoints' .tmp_step_N, its files' .partial
    copies are inside it, under names of their own length), so that limit is its name's."""
    from shallowpi.errors import ConfigError

    runs = runs_folder(args)
    named = args.run_name if whose == "the run" else None
    run_dir = runs / (named or default)
    too_long = name_over_limit(run_dir)
    if too_long is None:
        return run_dir
    part, why = too_long
    fix = ("give a shorter --runs-dir" if part in (runs, *runs.parents) else "give a shorter --run" if named else
           "pass --run NAME with a shorter name" if whose == "the run" else
           "pass --teacher CKPT, or give the dataset a shorter name")
    raise ConfigError(f"{whose}'s folder {run_dir}: {why}; {fix}")


def init_checkpoint(args: argparse.Namespace) -> Path | None:
    """The checkpoint --init names (`checkpoint_step`: a run folder means its newest step; a
    checkpoint's model.safetensors, as `--teacher` takes it, its folder), or None without
    --init. ConfigError when nothing is there: a π0 directory's loader would say only that
    it holds no weights."""
    from shallowpi.errors import ConfigError
    from shallowpi.train.checkpoint import checkpoint_step

    if args.init is None:
        return None
    if not Path(args.init).exists():
        raise ConfigError(f"--init {args.init}: no such checkpoint; give a run folder or a step of ours, or a "
                          "lerobot/openpi π0 directory")
    given = Path(args.init).expanduser()
    if given.is_file() and given.name == "model.safetensors":  # else read as a π0 directory, and refused
        given = given.parent
    return checkpoint_step(given, say=log.info)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields the flags set (--device, --no-progress)."""
    return {"device": args.device, "progress": not args.no_progress}


def resolve_training_store(cfg: Any) -> tuple[Path, list[int]]:
    """The composed config's dataset as a store path and the committed episodes to train
    on: all of them, or with policy.train.successful_only those not marked failed. Raises
    ConfigError without a dataset, StoreError for a missing, damaged or empty store, or one
    whose every episode is marked failed when only the others are asked for."""
    from shallowpi import config
    from shallowpi.errors import ConfigError, StoreError

    if not cfg.get("dataset"):
        raise ConfigError(f"no dataset given; pass --dataset NAME (a store under {config.data_root(cfg)}) or a path")
    store = config.resolve_dataset(cfg.dataset, config.data_root(cfg))
    episodes = store_episodes(store)
    if not cfg.policy.get("train", {}).get("successful_only", False):
        return store, episodes
    from shallowpi.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        kept = [i for i in episodes if s.episode(i).success is not False]
    if not kept:
        raise StoreError(f"every episode of {store} is marked failed; train on all of them "
                         "(policy.train.successful_only=false)")
    if len(kept) < len(episodes):
        log.info("training on the %d of %d episodes not marked failed (policy.train.successful_only)",
                 len(kept), len(episodes))
    return store, kept


def compose_for_store(overrides: list[str]) -> tuple[Any, Path, list[int]]:
    """The config a training run (`train`, `distill`) runs with and records (config.yaml,
    the distillation report's resolved config), its store and the episodes to train on
    (`resolve_training_store`).

    Training reads the robot from the store, never from `robot`; without this the section
    was the root config's default robot (the arm's joints and cameras in a run trained on
    humanoid data). So it is the robot the store was recorded on (its commit record's
    summary), `robot.*` overrides applied to that robot. A store that names no robot's
    config (several robots, an imported one, or none recorded) gets
    `robot: {recorded: [names]}`, warned about: no one robot's settings are claimed. An
    explicit `robot=NAME` is taken only for a store that records none. Raises what
    `resolve_training_store` raises, and ConfigError for a `robot=` the store contradicts."""
    from omegaconf import OmegaConf

    from shallowpi import config
    from shallowpi.data.store import EpisodeStore
    from shallowpi.errors import ConfigError

    def key(override: str) -> str:
        return override.partition("=")[0].lstrip("+~")

    # `robot.*` keys belong to the store's robot, not known yet: another's would refuse
    # them (the humanoid's cameras are unknown to the arm).
    robots_keys = [o for o in overrides if key(o).startswith("robot.")]
    first = config.compose([o for o in overrides if o not in robots_keys])
    store, episodes = resolve_training_store(first)
    with EpisodeStore.open(store) as opened:
        recorded = list(opened.summary.robots)
    asked = next((o.partition("=")[2] for o in reversed(overrides) if key(o) == "robot"), None)
    if asked is not None and recorded and recorded != [asked]:
        raise ConfigError(f"robot={asked}: {store} was recorded on {' and '.join(recorded)}; a run records the "
                          "robot of its data and trains the same without robot=: drop it")
    robot = asked or (recorded[0] if len(recorded) == 1 else None)
    if robot in config.group_choices("robot"):
        if first.robot.get("name") == robot and not robots_keys:
            return first, store, episodes  # composed already (a store of the default robot)
        return config.compose([f"robot={robot}", *(o for o in overrides if key(o) != "robot")]), store, episodes
    # Here no robot= was given (a store recording none takes it): `first` holds all but robot.* keys.
    what = (f"robots {', '.join(recorded)}" if len(recorded) > 1 else "no robot" if not recorded else
            f"robot {recorded[0]}, which has no configs/robot/ file")
    log.warning("%s records %s: the run's config.yaml gives robot.recorded %s, no robot's settings", store, what,
                recorded)
    first.robot = OmegaConf.create({"recorded": recorded})
    return first, store, episodes


# TrainConfig fields the command's flags set (run_settings), not a `train:` section.
FLAG_SET_KEYS = {"device": "--device", "progress": "--no-progress"}


def check_train_keys(where: str, keys: Iterable[str]) -> None:
    """Raises ConfigError naming the keys of a `train:` section (`where`) that TrainConfig
    lacks, or one that a flag sets (FLAG_SET_KEYS: the flag's value would collide with it)."""
    from shallowpi.errors import ConfigError, refuse_unknown_keys
    from shallowpi.train.trainer import TrainConfig

    keys = list(keys)
    for key in keys:
        if key in FLAG_SET_KEYS:
            raise ConfigError(f"{where}.{key} is set by the {FLAG_SET_KEYS[key]} flag, not in the config")
    refuse_unknown_keys(where, keys, TrainConfig, exclude=FLAG_SET_KEYS)


def run(args: argparse.Namespace) -> int:
    """Train the policy on the dataset's episodes in runs/NAME (or --run); returns 0.

    Prints the last checkpoint and the held-out evaluation (rank 0 only, under torchrun).
    Raises ConfigError for no dataset or an unknown `policy.train` key, StoreError for a
    missing, damaged or empty store, TrainingError for settings the launched processes
    cannot train with (`check_launch`) or a run folder holding checkpoints without
    --resume (or none with it) before the store is screened.
    """
    import json

    from omegaconf import OmegaConf

    from shallowpi.policy.config import PolicyConfig, model_section
    from shallowpi.train.distributed import close_distributed
    from shallowpi.train.finetune import finetune
    from shallowpi.train.store_checks import checked_factory
    from shallowpi.train.trainer import TrainConfig, check_launch, check_run_folder, launched

    overrides = overrides_from(args)
    if args.steps is not None:
        overrides.append(f"policy.train.steps={args.steps}")
    # Composed with the store's robot: config.yaml says which robot the data came from.
    cfg, store, episodes = compose_for_store(overrides)
    policy_data = OmegaConf.to_container(cfg.policy, resolve=True)
    policy_cfg = PolicyConfig.from_dict(model_section(policy_data))
    check_train_keys("policy.train", policy_data.get("train", {}))
    train_cfg = TrainConfig(**policy_data.get("train", {}), **run_settings(args))
    # Under torchrun: what the trainer would refuse of these processes, now, not after the
    # store's screening, an --init's load and the run folder's first files.
    check_launch(train_cfg, "policy.train")
    run_dir = run_folder(args, f"{store.stem}-{policy_cfg.name}")
    # Here, as distill does, not only in the trainer: after the store's screening and an
    # --init's load (minutes at π0 size), a run folder that cannot start or resume was news.
    check_run_folder(run_dir, args.resume)
    init_from = init_checkpoint(args)  # after the run folder's check, as its load would come after it
    # Mixed frame rates refuse, mixed calibrations warn, NaN/inf are named (or skipped).
    make_dataset = checked_factory(store, episodes, chunk_dataset, train_cfg.skip_nonfinite)
    result = finetune(
        store, policy_cfg, train_cfg, run_dir,
        episodes=episodes, make_dataset=make_dataset, tasks=episode_tasks(store), resume=args.resume,
        init_from=init_from, resolved_config=cfg,
    )
    close_distributed()  # under torchrun: join the group's threads before the interpreter exits
    if not launched().main:  # under torchrun the results are said once, by rank 0
        return 0
    if result.get("checkpoint"):
        print(f"checkpoint: {result['checkpoint']}")
        if result.get("weights") not in (None, result["checkpoint"]):
            print(f"its EMA weights, the ones to evaluate and deploy: {result['weights']}")
    if "eval" in result:
        print(json.dumps(result["eval"], indent=2))
    return 0


def store_episodes(store: Path) -> list[int]:
    """Indices of the committed episodes of a store (a one-line error if none or missing)."""
    from shallowpi.errors import StoreError

    try:
        from shallowpi.data.store import EpisodeStore
    except ImportError:
        raise StoreError("this checkout has no episode store (shallowpi.data.store)") from None

    from shallowpi.data.store_files import require_intact

    with EpisodeStore.open(store) as s:
        require_intact(s)  # before a run folder exists: a damaged store writes nothing
        count = len(s)
    if count == 0:
        raise StoreError(f"{store} has no episodes; record some first (platform record)")
    return list(range(count))


def episode_tasks(store: Path) -> dict[int, str]:
    """Each committed episode's task text: the training split holds out per task."""
    from shallowpi.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        return {i: e.task for i, e in enumerate(s.episodes)}


def chunk_dataset(store: Path, chunk_len: int, episodes: list[int] | None):
    """A ChunkDataset of `store`'s `episodes` (None: all), each item's action a
    [chunk_len, A] window."""
    from shallowpi.data.training import ChunkDataset

    return ChunkDataset(store, chunk_len, episodes=episodes)
