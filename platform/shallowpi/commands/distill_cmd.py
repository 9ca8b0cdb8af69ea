"""Distil the π0 teacher into a shallow student (Shallow-π): k of its layers in both towers.

  platform distill --dataset kitchen                    teacher first if needed, 6-layer student
  platform distill --dataset kitchen --teacher runs/kitchen-small/checkpoints/step_001500
  platform distill --dataset kitchen --layers 4 --select greedy
  platform distill --dataset kitchen distill.weights.attention=0 distill.weights.output=0
                                                        the task-loss-only ablation
  platform distill --dataset kitchen --resume           continue after an interruption

Without --teacher, the teacher is the run `platform train --dataset NAME --policy P` makes
(runs/NAME-P): reused once complete (at policy.train.steps, or at the steps it was trained
for, `platform train --steps N`), continued if interrupted (run the same command again,
without --resume: that flag is the student's), trained first (from --init when given, else
from scratch) through the same path as `platform train` if absent; one trained with another
model config than P and the `policy.*` overrides ask, or with other training settings (the
policy.train recipe a resume must keep: seed, batch, learning rate, ...; the EMA rate), is
refused, in one line (a seed sweep needs a teacher per seed: --runs-dir OTHER). `--resume`
continues the student with the teacher its run recorded. A student keeps its teacher's
model config: with a teacher given (or recorded), a `policy.*` model override it does not
match is refused (`policy.train.*` keys are the student's training, not the model's). The
student's run folder (default runs/NAME-T-studentK, T the teacher's preset) holds what a
training run holds (config.yaml, metrics.jsonl with the task/output/attention terms, tb/,
checkpoints/ as ordinary policy checkpoints that also record the teacher's sha256, the kept
layers and the loss weights), distill.json, and report.md with its plots (its closed-loop
part runs teacher and student in the twin, distill.sim_episodes a task each: minutes on a
CPU; distill.sim_episodes=0 skips it, distill.report=false the whole report). Settings:
configs/distill/ (any `distill.KEY=VALUE` override); --steps sets the student's steps. The
student trains with the `train:` settings of --policy's preset; with --teacher and no
--policy, those of the preset the teacher was built from (its batch, learning rate, EMA;
command-line overrides of the teacher's own training are not recorded in it, pass them
again).

Several GPUs (DDP; FSDP with policy.train.fsdp=true), the teacher whole on each:
  torchrun --nproc_per_node 8 -m shallowpi -- distill --dataset kitchen --teacher CKPT --run NAME
(the `--` before the command keeps torchrun from reading `--run` as its own `--run-path`)
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shallowpi.cli import add_config_flags, overrides_from, user_path
from shallowpi.commands.train_cmd import add_training_flags
from shallowpi.errors import ConfigError

if TYPE_CHECKING:
    from shallowpi.distill.settings import DistillConfig
    from shallowpi.policy.config import PolicyConfig
    from shallowpi.train.trainer import TrainConfig

# Settings that choose the episodes: the teacher's (policy.train), never the student's alone.
TEACHERS_EPISODES_KEYS = ("successful_only", "skip_nonfinite")
# Model settings a checkpoint's config holds that training fills in from the data, not the
# preset's: the cameras it was given (Policy), and the word vocabulary and the offset
# dimensions where the preset leaves them empty (train/finetune.py). Compared only where asked.
FILLED_BY_TRAINING = ("num_cameras", "vocabulary", "delta_dims")
HELP = "distil the teacher into a k-layer student (trains the teacher first if needed)"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the dataset and policy flags, the teacher and layer flags, and the shared
    training flags."""
    add_config_flags(parser, dataset=True)
    parser.add_argument("--policy", help="preset (configs/policy/) whose train: settings the student uses, and the "
                        "teacher's when it is trained here (default: a given --teacher's own preset, else small)")
    parser.add_argument("--teacher", type=user_path, metavar="CKPT",
                        help="teacher checkpoint folder, or a run folder for its newest (default: train or reuse "
                             "runs/DATASET-POLICY)")
    parser.add_argument("--teacher-sha256", metavar="HEX", help="refuse a teacher whose model.safetensors has another sha256")
    parser.add_argument("--layers", type=int, metavar="K",
                        help="joint layers the student keeps in both towers (default 6; == distill.layers=K)")
    parser.add_argument("--select",
                        help="which layers: uniform (the default, the paper's), first, greedy (== distill.select=...)")
    add_training_flags(
        parser,
        run="student run folder name (default: DATASET-<the teacher's preset>-studentK)",
        resume="continue the student's run from its last checkpoint",
        init="teacher training starts from this checkpoint (ours or lerobot/openpi π0)",
        steps="student training steps (== distill.steps=N)",
    )


def run(args: argparse.Namespace) -> int:
    """Distil the teacher (given, or trained/reused under runs/) into a k-layer student.

    Returns 0; prints the teacher, the student and the report (rank 0 only, under
    torchrun). Raises ConfigError for an unknown key in a `train:` section or no dataset,
    StoreError for a missing, damaged or empty store, TrainingError for settings the
    launched processes cannot train with (`check_launch`: the teacher's, when it is
    trained here, and the student's), before any teacher is trained.
    """
    from shallowpi import config
    from shallowpi.commands.train_cmd import (
        chunk_dataset,
        compose_for_store,
        episode_tasks,
        init_checkpoint,
        run_folder,
        run_settings,
        runs_folder,
    )
    from shallowpi.distill.distiller import distill
    from shallowpi.distill.objective import AttentionPairs
    from shallowpi.distill.student import check_student_depth
    from shallowpi.policy.config import PolicyConfig, model_section
    from shallowpi.policy.policy import Policy
    from shallowpi.train.checkpoint import checkpoint_step, checkpoint_weights, weights_to_use
    from shallowpi.train.distributed import close_distributed
    from shallowpi.train.store_checks import checked_factory
    from shallowpi.train.trainer import check_launch, check_run_folder, launched

    if args.teacher is not None and args.init is not None:  # --init starts the teacher's training, skipped here
        raise ConfigError(f"--init {args.init} starts the teacher's training, and --teacher {args.teacher} is "
                          "already trained: give one of the two")
    # A run folder (or its `last` marker) means its newest checkpoint, as in train, eval and deploy.
    args.teacher = checkpoint_step(args.teacher, say=log.info) if args.teacher is not None else None
    args.init = init_checkpoint(args)
    overrides = overrides_from(args)
    if args.teacher is not None and not any(o.partition("=")[0].lstrip("+~") == "policy" for o in overrides):
        # The student trains with its teacher's recipe (batch, learning rate, EMA), not the
        # root config's `small`, unless a preset is named.
        preset = _preset_of(checkpoint_weights(args.teacher), unreadable=None)
        if preset in config.group_choices("policy"):
            overrides.insert(0, f"policy={preset}")
    for key, value in (("layers", args.layers), ("select", args.select), ("steps", args.steps),
                       ("teacher_sha256", args.teacher_sha256)):
        if value is not None:
            overrides.append(f"distill.{key}={value}")
    # Composed with the store's robot: config.yaml and the report say which robot the data came from.
    cfg, store, episodes = compose_for_store(overrides)
    policy_data, dcfg, teacher_train, student_train = distill_settings(cfg, run_settings(args))
    failed = _failed_episodes(store, episodes, teacher_train.successful_only) if dcfg.failed_episodes == "teacher" else []
    runs = runs_folder(args)
    policy_cfg = PolicyConfig.from_dict(model_section(policy_data))

    if args.teacher is None:  # refused now, not after training the teacher it would be cut from
        check_student_depth(policy_cfg.depth, dcfg.layers)
        AttentionPairs.check_config(dcfg.attention_pairs, dcfg.weights.attention, dcfg.layers, policy_cfg.depth)
    # The student's run folder is known before any teacher is trained (a teacher trained
    # here is of --policy's preset), and checked first: a student that cannot start or
    # resume there is refused before an hour of teacher training, not after.
    # The default name only without --run: naming the teacher's preset reads its checkpoint.
    run_dir = run_folder(args, "" if args.run_name else (
        f"{store.stem}-{_preset_of(args.teacher) if args.teacher else policy_cfg.name}-student{dcfg.layers}"))
    check_run_folder(run_dir, args.resume)
    given = args.teacher if args.teacher is not None else _resumed_teacher(run_dir) if args.resume else None
    if given is not None:  # its model is the student's: a model override it does not match would be dropped
        _check_teacher_model(given, policy_cfg, overrides, "--teacher" if args.teacher is not None else
                             "the run being resumed")
    if given is None and _ours(args.init):
        # A teacher begun from one of ours keeps that checkpoint's model, trained here or
        # reused: an override it does not match would be recorded and not applied. Before
        # any training (the first run only logged it, and its rerun was refused).
        _check_teacher_model(args.init, policy_cfg, overrides, "the teacher is trained from --init, whose model it keeps")
    if given is None:  # runs/NAME-P's teacher, when complete; else it is trained (or continued) here
        run_folder(args, f"{store.stem}-{policy_cfg.name}", "the teacher")  # a name too long: one line, not its mkdir's
        given, teacher_train = _reusable_teacher(store, policy_cfg, teacher_train, runs, args.init)
    if given is not None and args.init is not None and \
            (began := Policy.read_metadata(given).get("init")) != str(Path(args.init).resolve()):
        # --init starts a teacher's training, and none is trained here: it was dropped
        # without a word, the student cut from a teacher the --init never touched. (A
        # teacher this --init began, rerun or resumed, records it and goes on.)
        raise ConfigError(f"--init {args.init} starts the teacher's training, and this distill would use the teacher "
                          f"{given}, trained already from {began or 'no --init'}: drop --init to distil from it, or "
                          "pass --runs-dir OTHER to train one from --init there")
    # Under torchrun: what the trainer would refuse of these processes, for the teacher
    # trained here and for the student, now; not after the teacher's training (an hour at
    # π0 size) and the choice of layers, or after the student's run folder was written.
    if given is None:
        check_launch(teacher_train, "policy.train")
    check_launch(student_train, "distill.train")
    make_dataset = checked_factory(store, episodes + failed, chunk_dataset, teacher_train.skip_nonfinite)
    # A step folder's EMA average when the run kept one: the teacher every figure judged.
    tasks = episode_tasks(store)
    teacher = weights_to_use(given or _teacher_run(store, policy_cfg, teacher_train, runs, episodes, tasks,
                                                   make_dataset, args.init, cfg), say=log.info)
    result = distill(store, teacher, dcfg, student_train, run_dir, episodes=episodes, make_dataset=make_dataset,
                     teacher_only=failed, tasks=tasks, resume=args.resume, resolved_config=cfg)
    close_distributed()  # under torchrun: join the group's threads before the interpreter exits
    if not launched().main:  # under torchrun the results are said once, by rank 0
        return 0
    print(f"teacher: {teacher}")
    print(f"student: {result['checkpoint']} (teacher layers {result['distill']['kept_layers']})")
    if result["report"]:
        print(f"report: {result['report']}")
    return 0


def distill_settings(cfg: Any, flags: Mapping[str, Any]) -> tuple[dict[str, Any], DistillConfig, TrainConfig,
                                                                   TrainConfig]:
    """What a distillation runs with, from the composed `cfg` and the run's flag settings
    (`run_settings`: device, progress, ...): (the policy section as a dict, the distill
    settings, the teacher's training settings, the student's: policy.train, then
    distill.train and distill.steps over it). `platform demo` asks the same before it
    records. ConfigError for an unknown or flag-set key in either train section, or a
    distill.train key that chooses the teacher's episodes; TrainingError for a value
    TrainConfig refuses."""
    from omegaconf import OmegaConf

    from shallowpi.commands.train_cmd import check_train_keys
    from shallowpi.distill.settings import DistillConfig
    from shallowpi.train.trainer import TrainConfig

    policy_data = OmegaConf.to_container(cfg.policy, resolve=True)
    dcfg = DistillConfig.from_dict(OmegaConf.to_container(cfg.distill, resolve=True))
    check_train_keys("policy.train", policy_data.get("train", {}))
    check_train_keys("distill.train", dcfg.train)
    for key in TEACHERS_EPISODES_KEYS:
        if key in dcfg.train:  # else accepted, recorded in the checkpoint, and not applied
            raise ConfigError(f"distill.train.{key}: the student trains on its teacher's episodes, which "
                              f"policy.train.{key} chooses; set that instead")
    teacher_train = TrainConfig(**policy_data.get("train", {}), **flags)
    student_train = TrainConfig(**{**policy_data.get("train", {}), **dcfg.train,
                                   **({"steps": dcfg.steps} if dcfg.steps is not None else {}), **flags})
    return policy_data, dcfg, teacher_train, student_train


def _resumed_teacher(run_dir: Path) -> Path | None:
    """The teacher the student being resumed was distilled from (its distill.json), so that
    `--resume` without --teacher continues with it rather than training or extending
    another. CheckpointError (one line) when that checkpoint is gone."""
    import json

    from shallowpi.policy.weights import CheckpointError

    facts = run_dir / "distill.json"
    if not facts.is_file():  # a run from before distill.json: the teacher is found as for a new run
        return None
    teacher = Path(json.loads(facts.read_text())["teacher"])
    if not teacher.exists():  # a folder, or the model.safetensors file `--teacher` was given as
        raise CheckpointError(f"the run being resumed was distilled from {teacher}, which is gone ({facts}); "
                              "pass --teacher with that checkpoint (its sha256 is checked)")
    log.info("teacher: %s, as the run being resumed (%s)", teacher, facts)
    return teacher


def _failed_episodes(store: Path, kept: list[int], successful_only: bool) -> list[int]:
    """The store's episodes policy.train.successful_only leaves out, for
    distill.failed_episodes=teacher; ConfigError (one line) when successful_only is off
    (every episode already trains with every term)."""
    from shallowpi.commands.train_cmd import store_episodes

    if not successful_only:
        raise ConfigError("distill.failed_episodes=teacher needs policy.train.successful_only=true (without it "
                          "every episode already trains with every term)")
    return sorted(set(store_episodes(store)) - set(kept))


def _reusable_teacher(store: Path, policy_cfg: PolicyConfig, train_cfg: TrainConfig, runs: Path,
                      init: Path | None = None) -> tuple[Path | None, TrainConfig]:
    """The teacher `platform train` would make (runs/NAME-P) when it is complete, at
    policy.train.steps or at the steps its run was asked for, and `train_cfg`; else None
    and the settings to train it, or continue it, with (`_teacher_run`). TrainingError when
    that run was trained on other episodes (`_check_teacher_data`); ConfigError (one line)
    when its model is not `policy_cfg` (the preset and the `policy.*` overrides asked):
    reused, the student was cut from it while config.yaml and the report said the model
    asked. A teacher begun from `init`, one of ours, has that checkpoint's model
    (`platform train` said so when it trained): the --init check in `run` decides.
    ConfigError (one line) when its training settings are not `train_cfg`'s
    (`_recipe_differences`), complete or to be continued."""
    from shallowpi.train.checkpoint import latest_checkpoint, trained_for

    last = latest_checkpoint(runs / f"{store.stem}-{policy_cfg.name}")
    if last is None:
        return None, train_cfg
    _check_teacher_data(last, store)
    if not _ours(init) and (differ := _model_differences(last, policy_cfg)):
        raise ConfigError(f"the teacher at {last} was trained with another model than this command asks "
                          f"({_listed(differ)}): to distil from it, drop those settings (or pass --teacher {last}); "
                          "to train a teacher with them, pass --runs-dir OTHER")
    step, asked = int(last.name.removeprefix("step_")), trained_for(last)
    # Complete at the steps it was trained for (`platform train --steps 300`): reused as
    # it is, not extended into the user's run folder to the preset's count; interrupted,
    # continued to those steps.
    preset = train_cfg.steps
    train_cfg = dataclasses.replace(train_cfg, steps=min(preset, asked or preset))
    complete = step >= train_cfg.steps
    # Reused, a teacher of another recipe was distilled while config.yaml said this one (a
    # seed sweep's `policy.train.seed=7` cut every student from the seed-0 teacher); to be
    # continued, the trainer refused it with advice (--run NAME) that names the student here.
    if differ := _recipe_differences(last, train_cfg, complete):
        why = (f"the teacher at {last} was trained with other training settings than this command asks "
               f"({_listed(differ)}): ")
        raise ConfigError(why + ("to distil from it, drop those settings (distill.train.* sets the student's own, "
                                 f"or pass --teacher {last}); to train a teacher with them, pass --runs-dir OTHER"
                                 if complete else
                                 "to continue it, drop those settings; to train a teacher with them, pass "
                                 "--runs-dir OTHER (or distil from a teacher you give: --teacher CKPT)"))
    if not complete:
        return None, train_cfg
    log.info("teacher: reusing %s%s", last, "" if train_cfg.steps == preset else
             f" (trained for its {asked} steps; `platform train --resume --steps N` trains it further)")
    return last, train_cfg


def _recipe_differences(checkpoint: Path, train_cfg: TrainConfig, complete: bool) -> list[str]:
    """The teacher's training settings (`train_cfg`: policy.train) that differ from those the
    run at `checkpoint` recorded, as "policy.train.KEY=ASKED, the teacher's VALUE": the
    recipe a resume must keep (Trainer's RECIPE: seed, batch, learning rate, the episodes'
    choice, ...), compared as the trainer's resume check compares them
    (train/checkpoint.recipe_differences), and the EMA rate. The rate of a `complete` teacher must
    match (distilled are its EMA weights when it kept some, its raw weights when not); one
    to be continued is refused what the trainer refuses (another rate than the one it
    kept; switching one on starts the average from the resumed weights). Keys the
    checkpoint does not record (from before they were kept) pass; [] when its training
    state cannot be read (the trainer, or the teacher's load, says why)."""
    import json

    from safetensors import safe_open

    from shallowpi.train.checkpoint import ema_change_refused, recipe_differences
    from shallowpi.train.trainer import RECIPE

    try:
        with safe_open(str(checkpoint / "train_state.safetensors"), framework="pt") as f:
            meta = f.metadata() or {}
        recorded, noted = json.loads(meta.get("recipe") or "{}"), json.loads(meta.get("noted") or "{}")
    except Exception:  # safetensors' own error types: not readable (the trainer, or the teacher's load, says why)
        return []
    # As the checkpoint holds them (JSON: betas a list), as the trainer records them.
    asked = json.loads(json.dumps({k: v for k, v in dataclasses.asdict(train_cfg).items() if k in RECIPE}))
    differ = [f"policy.train.{key}={value!r}, the teacher's {before!r}"
              for key, (value, before) in recipe_differences(recorded, asked).items()]
    # Complete, the EMA weights are the ones distilled, or the raw ones: the rate must match.
    if "ema" in noted and (noted["ema"] != train_cfg.ema if complete else ema_change_refused(noted["ema"], train_cfg.ema)):
        differ.append(f"policy.train.ema={train_cfg.ema!r}, the teacher's {noted['ema']!r}")
    return differ


def _check_teacher_model(teacher: Path, policy_cfg: PolicyConfig, overrides: list[str], whose: str) -> None:
    """ConfigError (one line) when a `policy.*` model override in `overrides` asks for another
    value than the teacher checkpoint's config holds: the student is cut from the teacher
    and keeps its model, so the override was recorded in config.yaml and the report and
    not applied. `whose` names where the teacher came from (--teacher, the run being
    resumed). `policy.train.*` keys pass: they set the student's training."""
    keys = [key.removeprefix("policy.") for o in overrides
            if (key := o.partition("=")[0].lstrip("+~")).startswith("policy.") and key.split(".")[1] != "train"]
    if keys and (differ := _model_differences(teacher, policy_cfg, keys)):
        raise ConfigError(f"{_listed(differ)}: a student keeps its teacher's model ({whose}: {teacher}), so this "
                          "would be recorded and not applied; drop it (policy.train.* keys set the student's "
                          "training)" + (", or distil without --teacher to train a teacher with it"
                                         if whose == "--teacher" else ""))


def _model_differences(teacher: Path, asked: PolicyConfig, keys: list[str] | None = None) -> list[str]:
    """The model settings `asked` gives otherwise than `teacher`'s checkpoint header, as
    "policy.KEY=ASKED, the teacher's VALUE" (nested keys dotted: policy.vlm.width); only
    those at or under `keys` (e.g. ["vlm.width", "vision"]) when given. Those training fills
    in (FILLED_BY_TRAINING) count where `asked` names a value. [] when the header cannot be
    read or names no config (`load_teacher` says so in one line, later)."""
    import json

    from shallowpi.policy.config import PolicyConfig
    from shallowpi.policy.policy import Policy

    try:
        theirs = _dotted(PolicyConfig.from_dict(json.loads(Policy.read_metadata(teacher)["config"])).to_dict())
    except Exception:  # safetensors raises its own types; any failure means "not readable"
        return []
    differ = []
    for key, value in _dotted(asked.to_dict()).items():
        if key in FILLED_BY_TRAINING and (key == "num_cameras" or not value):
            continue  # the data's cameras; a vocabulary, offsets training built for the teacher
        if keys is not None and not any(key == k or key.startswith(f"{k}.") for k in keys):
            continue
        if value != theirs.get(key):
            differ.append(f"policy.{key}={value!r}, the teacher's {theirs.get(key)!r}")
    return differ


def _dotted(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of nested settings: {"vlm": {"width": 32}} -> {"vlm.width": 32}."""
    out: dict[str, Any] = {}
    for key, value in settings.items():
        out.update(_dotted(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def _listed(items: list[str], most: int = 3) -> str:
    """The first `most` of `items` joined for a one-line message, '...' after when there are more."""
    return "; ".join(items[:most]) + ("; ..." if len(items) > most else "")


def _ours(checkpoint: Path | None) -> bool:
    """Whether `checkpoint` (an --init) is one of our policy checkpoints, whose model a run
    begun from it keeps (`finetune._initial_policy`), not a lerobot/openpi π0 directory."""
    from shallowpi.train.finetune import is_our_checkpoint

    try:
        return checkpoint is not None and is_our_checkpoint(checkpoint)
    except Exception:  # a model.safetensors that is not a safetensors file: not ours
        return False


def _teacher_run(store, policy_cfg, train_cfg, runs: Path, episodes, tasks, make_dataset, init, cfg) -> Path:
    """The teacher `platform train` would make, when `_reusable_teacher` has none to reuse:
    continued when interrupted, trained when absent, with `train_cfg` (the settings
    `_reusable_teacher` gave). Returns its last checkpoint."""
    from shallowpi.train.checkpoint import latest_checkpoint
    from shallowpi.train.finetune import finetune
    from shallowpi.train.interrupt import TrainingInterrupted

    run_dir = runs / f"{store.stem}-{policy_cfg.name}"
    last = latest_checkpoint(run_dir)
    log.info("teacher: %s %s", "continuing" if last else "training", run_dir)
    try:
        finetune(store, policy_cfg, train_cfg, run_dir, episodes=episodes, make_dataset=make_dataset,
                 tasks=tasks, resume=last is not None, init_from=init, resolved_config=cfg)
    except TrainingInterrupted:
        # Not the trainer's advice (--resume): here that flag is the student's, and `distill
        # --resume` would finish the teacher, then find no student to resume.
        kept = latest_checkpoint(run_dir)
        raise TrainingInterrupted(f"the teacher's training stopped{f' at {kept}' if kept else ''}: run the same "
                                  "`platform distill` command again (without --resume) to continue it") from None
    done = latest_checkpoint(run_dir)
    assert done is not None
    return done


def _check_teacher_data(checkpoint: Path, store: Path) -> None:
    """TrainingError (one line) when the teacher in the run folder this store's name picks
    was trained on other episodes than the store holds under those numbers: another store
    of the same name (the folder is named by the store's file name only), or one edited
    since. A checkpoint from before the episodes were recorded in it passes."""
    import json

    from shallowpi.policy.policy import Policy
    from shallowpi.train.finetune import Split

    meta = Policy.read_metadata(checkpoint)
    split = Split.recorded_in(meta)
    if split is not None and "episodes" in meta:
        split.check_same_episodes(
            store, json.loads(meta["episodes"]), f"the teacher at {checkpoint} (from {meta.get('dataset', '?')})",
            "pass another --runs-dir (a teacher is trained there on this store), or --teacher CKPT")


def _preset_of(checkpoint: Path, unreadable: str | None = "teacher") -> str | None:
    """The preset name a teacher checkpoint was built from (its header's config);
    `unreadable` when the header cannot be read or names none."""
    import json

    from shallowpi.policy.policy import Policy

    try:
        return json.loads(Policy.read_metadata(checkpoint)["config"])["name"]
    except Exception:  # safetensors raises its own types; any failure means "not readable"
        return unreadable  # load_teacher names the problem in one line
