"""Distil a teacher checkpoint into a k-layer student on one episode store.

`distill` is what `platform distill` runs once it has a teacher: check the teacher (its
hash, its features against the dataset), take the teacher's train / held-out split (the
episodes recorded since it trained join training), choose the layers (greedy measures
them on training windows; the strategies are compared on held-out ones, or on the
training ones when none is held out, greedy's search windows then), cut the student,
train it with the distillation objective through the one training loop
(train/trainer.py: same data order, noise, checkpoints, DDP/FSDP, logs), then write the
report.

The student's checkpoints are ordinary policy checkpoints (eval, eval --sim and deploy load
them without the teacher); their header also records the teacher checkpoint's path and
sha256, the kept layer indices, the loss weights and the attention pairing ([] with the
attention term off). The run folder adds distill.json: the same facts, the surgery's
parameter counts, and how each selection strategy's student starts (velocity error
against the teacher before training).

The long CPU work outside training (choosing the layers, the report's closed loop) shows
progress as training does: a bar with an ETA on a terminal, plain lines otherwise, none
with --no-progress (`TrainConfig.progress`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

from shallowpi.distill.objective import AttentionPairs, DistillationObjective
from shallowpi.distill.settings import DistillConfig
from shallowpi.distill.student import (
    SELECTIONS,
    Probe,
    build_student,
    check_student_depth,
    layer_view,
    select_layers,
)
from shallowpi.durable_files import replace_text
from shallowpi.errors import ConfigError
from shallowpi.policy.fit import rate_mismatch, trained_rate
from shallowpi.policy.policy import Features, Policy
from shallowpi.policy.tokenizer import check_prompts
from shallowpi.policy.weights import CheckpointError
from shallowpi.train.checkpoint import checkpoint_weights, latest_checkpoint
from shallowpi.train.distributed import init_distributed, pick_device, rank0_value
from shallowpi.train.finetune import (
    DatasetFactory,
    Split,
    recorded_facts,
    run_task_texts,
    scored_split,
    without_seen_scenes,
)
from shallowpi.train.objective import NoiseSpec, step_noise
from shallowpi.train.offline_eval import evenly_spaced
from shallowpi.train.progress import ProgressBar
from shallowpi.train.trainer import TrainConfig, Trainer, check_launch, check_run_folder

log = logging.getLogger(__name__)


def checkpoint_sha256(checkpoint: Path) -> str:
    """sha256 of a policy checkpoint's model.safetensors (a folder or the file itself)."""
    file = checkpoint / "model.safetensors" if checkpoint.is_dir() else checkpoint
    if not file.is_file():
        raise CheckpointError(f"no teacher checkpoint at {checkpoint} (expected model.safetensors)")
    digest = hashlib.sha256()
    with file.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_teacher(checkpoint: Path, expected_sha256: str | None, what: str = "--teacher-sha256") -> tuple[Policy, str]:
    """The teacher policy (eval mode, CPU) and its sha256; CheckpointError if the hash is not
    the expected one (`what` says where the expectation came from). For a step folder's EMA
    average (`checkpoint` .../step_N/ema, which `weights_to_use` picks for step_N) the error
    says so, and whether the hash expected is that of step_N's own weights."""
    sha = checkpoint_sha256(checkpoint)
    if expected_sha256 is not None and sha != expected_sha256:
        raw = checkpoint.parent / "model.safetensors"
        if checkpoint.name == "ema" and raw.is_file():
            # `--teacher step_N --teacher-sha256 <step_N/model.safetensors'>` named the raw
            # weights; the EMA average was hashed, as the one the run is judged by.
            which = "that of" if checkpoint_sha256(raw) == expected_sha256 else "not that of either"
            raise CheckpointError(
                f"teacher checkpoint {checkpoint} (the EMA weights of {checkpoint.parent.name}, the ones its run is "
                f"judged by, were hashed) has sha256 {sha[:16]}... but {what} expects {expected_sha256[:16]}..., "
                f"{which} the step's own weights ({raw}): pass the EMA file's sha256, or --teacher {raw} to distil "
                "from the step's own weights"
            )
        raise CheckpointError(
            f"teacher checkpoint {checkpoint} has sha256 {sha[:16]}... but {what} expects "
            f"{expected_sha256[:16]}...; it changed or is another checkpoint: pass the right one"
        )
    return Policy.load(checkpoint), sha


def probe_windows(dataset: Dataset, policy: Policy, count: int, seed: int = 0) -> Probe:
    """`count` evenly spaced windows of `dataset` with fixed noise and time, on the policy's
    device: the inputs on which layer subsets are compared with the full teacher."""
    picks = evenly_spaced(len(dataset), count)
    batch = default_collate([dataset[i] for i in picks])
    inputs = policy.model_inputs(batch)
    noise, t = (x.to(policy.device) for x in step_noise(0, seed, len(picks), NoiseSpec.of(policy.cfg)))
    tt = t[:, None, None]
    x_t = tt * noise + (1 - tt) * inputs.actions
    with torch.no_grad():
        prefix = policy.embed(inputs)
    return Probe(prefix, inputs.state, x_t, t, inputs.weights)


@torch.no_grad()
def selection_errors(teacher: Policy, k: int, search: Probe, judge: Probe, chosen: dict[str, list[int]],
                     strategies: tuple[str, ...] = SELECTIONS) -> dict[str, dict[str, Any]]:
    """Each of `strategies`' layers and the velocity MSE (normalised units, real dims) of the
    untrained student against the teacher on `judge` (held-out windows; with no episode
    held out, training ones: those `search` holds, so greedy is judged on its own search
    windows there): how each starts. Layers already chosen are reused; greedy, when not,
    searches on `search` (training windows: a choice made on `judge` would flatter it
    there), O(depth^2) passes."""
    model = teacher.model
    reference = model.velocity(judge.prefix, judge.state, judge.x_t, judge.t)
    denom = judge.weights.sum().clamp(min=1.0)
    out = {}
    for strategy in strategies:
        kept = chosen.get(strategy) or select_layers(strategy, model, k, search)[0]
        v = layer_view(model, kept).velocity(judge.prefix, judge.state, judge.x_t, judge.t)
        out[strategy] = {"layers": kept, "velocity_mse": float(((v - reference).square() * judge.weights).sum() / denom)}
    return out


def choice_passes(depth: int, k: int, select: str, strategies: tuple[str, ...]) -> int:
    """Velocity passes (the full teacher's or a subset of its layers) that choosing `select`'s
    k layers and comparing `strategies` on the judging windows costs: greedy's search, when
    it runs (chosen, or compared), 1 + sum(depth .. k+1) (`greedy_layers`), and the
    comparison one for the teacher plus one per strategy (`selection_errors`)."""
    searched = select == "greedy" or "greedy" in strategies
    return (1 + sum(range(k + 1, depth + 1)) if searched else 0) + 1 + len(strategies)


@contextmanager
def teacher_pass_progress(teacher: Policy, total: int, enabled: bool) -> Iterator[ProgressBar]:
    """A progress bar (ProgressBar: rich on a terminal, else a plain line every 30 s and one
    at the end; nothing when not `enabled`) counting velocity passes of `teacher`'s model,
    and of every layer subset viewed from it, while the block runs: the greedy search is
    minutes on a CPU, silent otherwise. Counted where each pass ends, the action output
    projection, which every `layer_view` shares with the teacher (student.py's search takes
    no callback)."""
    bar = ProgressBar("choosing layers", total, enabled=enabled)
    hook = teacher.model.action_out_proj.register_forward_hook(lambda *_: bar.step()) if enabled else None
    try:
        yield bar
    finally:
        if hook is not None:
            hook.remove()
        bar.close()


def distill(
    store: Path,
    teacher_checkpoint: Path,
    dcfg: DistillConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    *,
    episodes: list[int],
    make_dataset: DatasetFactory,
    teacher_only: list[int] | None = None,
    tasks: Mapping[int, str] | None = None,
    resume: bool = False,
    resolved_config: Any = None,
) -> dict[str, Any]:
    """Cut, train and report; returns {"checkpoint", "train" (last logged numbers),
    "report" (path or None), "distill" (what distill.json holds)}.
    `tasks` (episode -> task text): a fresh split holds out per task (`Split.of`).

    `episodes` train with every term; `teacher_only` (the store's failed episodes, with
    distill.failed_episodes=teacher) add their samples to the output and attention terms only.

    Raises CheckpointError for a teacher failing its hash (given, or recorded by the run
    being resumed) or whose features do not match the dataset; ConfigError for k outside
    1..depth-1 or an attention layer outside either model; TrainingError as the trainer does
    (NaN loss with the term named; settings the launched processes cannot train with,
    before the teacher is loaded).
    """
    check_run_folder(run_dir, resume)  # here, not after the greedy search (hours on a CPU)
    check_launch(train_cfg, "distill.train")  # so are settings these processes cannot train with
    facts_path = run_dir / "distill.json"
    recorded = json.loads(facts_path.read_text()) if resume and facts_path.is_file() else None
    expected, what = dcfg.teacher_sha256, "distill.teacher_sha256 (--teacher-sha256)"
    if recorded is not None:  # the run's own teacher, whatever --teacher-sha256 also asks
        if expected is not None and expected != recorded["teacher_sha256"]:
            raise CheckpointError(f"--teacher-sha256 {expected[:16]}... is not the teacher the run being resumed "
                                  f"was distilled from ({recorded['teacher_sha256'][:16]}..., {facts_path}); "
                                  "resume with that teacher, or pass another --run")
        expected, what = recorded["teacher_sha256"], f"the run being resumed ({facts_path})"
    teacher, sha = load_teacher(teacher_checkpoint, expected, what)
    check_student_depth(teacher.cfg.depth, dcfg.layers)
    AttentionPairs.check_config(dcfg.attention_pairs, dcfg.weights.attention, dcfg.layers, teacher.cfg.depth)
    if recorded is not None:
        _check_resumed(recorded, dcfg, facts_path)

    # A resumed run keeps the split it started with (episodes added to the store since, or
    # a teacher trained elsewhere, would otherwise give another one and another data order).
    split, split_note = (_recorded_split(recorded, store, episodes, facts_path) if recorded is not None
                         else _split_of(teacher_checkpoint, store, episodes, train_cfg.eval_fraction, tasks,
                                        own_fraction=dcfg.train.get("eval_fraction")))
    split.check_held_out(store, train_cfg.require_held_out, train_cfg.eval_fraction)
    taught_by_teacher = (_recorded_teacher_only(recorded, teacher_only or [], facts_path) if recorded is not None
                         else sorted(set(teacher_only or ()) - set(split.train) - set(split.held_out)))
    if taught_by_teacher:
        log.info("the student learns %d failed episodes from the teacher alone (distill.failed_episodes=teacher)",
                 len(taught_by_teacher))
    elif dcfg.failed_episodes == "teacher":
        log.warning("distill.failed_episodes=teacher, but no training episode is marked failed: "
                    "the student trains as with skip")
    train_set = make_dataset(store, teacher.cfg.chunk_len, sorted(split.train + taught_by_teacher))
    teacher.features.check_against(Features.from_sample(train_set[0]), f"dataset {store.name} (teacher {teacher_checkpoint})")
    # The student reads the teacher's tokens: an instruction of the run's episodes that the
    # teacher's vocabulary lacks, would cut, or encodes as another's is refused here, as
    # `platform train` refuses it.
    # The held-out episodes the evaluation can score (skip_nonfinite: not one wholly NaN, which
    # refused the run as `platform train` did).
    scoring, scored_what = scored_split(split, make_dataset, store, teacher.cfg.chunk_len, train_cfg.require_held_out)
    check_prompts(teacher.tokenizer, run_task_texts(train_set, make_dataset, store, teacher.cfg.chunk_len, scoring),
                  teacher.cfg.max_text_tokens)
    rate = train_set.fps()
    taught = trained_rate(Policy.read_metadata(teacher_checkpoint))
    if taught is not None and rate_mismatch([taught], rate, f"dataset {store.name}"):  # the shared tolerance
        raise CheckpointError(f"teacher {teacher_checkpoint} was trained on episodes recorded at {taught:g} Hz, "
                              f"dataset {store.name} at {rate:g} Hz: its chunks pace actions for another rate")
    eval_episodes, eval_what = scoring.eval_episodes()[0], scored_what
    eval_what += f"; {split_note}" if split_note else ""
    eval_set = make_dataset(store, teacher.cfg.chunk_len, eval_episodes)

    if recorded is not None:
        kept, comparison, greedy = recorded["kept_layers"], recorded["selections"], recorded.get("greedy")
    else:
        # On the training device: greedy search is ~depth^2 teacher passes over the probe,
        # minutes on a GPU at π0 size but hours on its host's CPU.
        device = pick_device(train_cfg.device)
        teacher.to(device)
        # Greedy searches on demonstrated windows only: with failed episodes added, its choice
        # would differ from the same student's without them.
        demonstrated = (make_dataset(store, teacher.cfg.chunk_len, split.train) if taught_by_teacher
                        else train_set)
        search = probe_windows(demonstrated, teacher, dcfg.probe_windows)
        # The held-out episodes' windows; with none held out the training ones, the very
        # windows greedy searched (the report says so: `eval_what`).
        judge = probe_windows(eval_set, teacher, dcfg.probe_windows)
        others = SELECTIONS if dcfg.compare_selections else (dcfg.select,)
        dist = init_distributed(device)
        passes = choice_passes(teacher.cfg.depth, dcfg.layers, dcfg.select, others)
        compared = [o for o in others if o != dcfg.select]
        log.info("choosing the student's %d layers (%s%s): %d velocity passes over %d probe windows",
                 dcfg.layers, dcfg.select, f", compared with {', '.join(compared)}" if compared else "", passes,
                 dcfg.probe_windows)
        # Shown as the trainer shows its steps (rank 0, unless --no-progress): before, this
        # was minutes of silence before the first training line.
        with teacher_pass_progress(teacher, passes, enabled=dist.main and train_cfg.progress):
            kept, trace = select_layers(dcfg.select, teacher.model, dcfg.layers, search)
            greedy = None if trace is None else {"dropped": trace.dropped, "velocity_mse": trace.mse}
            comparison = selection_errors(teacher, dcfg.layers, search, judge, {dcfg.select: kept}, others)
        # Under torchrun every process must cut the same student: each chose, rank 0's
        # choice is the one every process cuts.
        kept, greedy, comparison = rank0_value(dist, device, (kept, greedy, comparison))
        # Off the device until the objective runs it: the task-only ablation never does, and
        # at π0 size the teacher and the probes held ~13 GB of the student's GPU for nothing.
        del search, judge
        teacher.cpu()
    student, surgery = build_student(teacher, kept)
    log.info("%s", surgery.summary())
    # No pairing with the attention term off: the student, its header and the report would
    # name a pairing no loss used (a distill.attention_pairs given with it goes unused too).
    pairs = AttentionPairs.from_config(dcfg.attention_pairs, kept) if dcfg.weights.attention else AttentionPairs()
    objective = DistillationObjective(student, teacher, dcfg.weights, pairs, dcfg.teacher_fraction,
                                      teacher_only=taught_by_teacher)
    facts = {
        "teacher": str(teacher_checkpoint),
        "teacher_sha256": sha,
        "selection": dcfg.select,
        "kept_layers": kept,
        "loss_weights": dcfg.weights.to_dict(),
        "attention_pairs": pairs.to_list(),
        "surgery": {k: v for k, v in vars(surgery).items() if k != "kept"},
        "selections": comparison,
        "greedy": greedy,
        "failed_episodes": dcfg.failed_episodes,
        "teacher_fraction": dcfg.teacher_fraction,
        "split": {"train": split.train, "held_out": split.held_out, "teacher_only": taught_by_teacher,
                  "episodes": Split(split.train + taught_by_teacher, split.held_out).identities(store),
                  "note": split_note},
    }
    # The scenes the student learned, its teacher's included: a student distilled from it in
    # turn holds none of them out either.
    # (From its header: `scenes_of` looks for a folder, and a teacher given as its
    # model.safetensors file lost its scenes.)
    taught_scenes = json.loads(Policy.read_metadata(teacher_checkpoint).get("scenes", "[]"))
    scenes = sorted({*taught_scenes, *Split(split.train + taught_by_teacher, []).scenes(store).values()})
    metadata = {
        "dataset": str(store),
        "held_out": json.dumps(split.held_out),
        "train": json.dumps(split.train),
        "teacher": str(teacher_checkpoint),
        "teacher_sha256": sha,
        "kept_layers": json.dumps(kept),
        "loss_weights": json.dumps(dcfg.weights.to_dict()),
        "attention_pairs": json.dumps(pairs.to_list()),
        "selection": dcfg.select,
        "teacher_only": json.dumps(taught_by_teacher),
        "episodes": json.dumps(facts["split"]["episodes"]),
        "scenes": json.dumps(scenes),
        **recorded_facts(train_set),
    }
    torch.manual_seed(train_cfg.seed)
    trainer = Trainer(objective, train_set, train_cfg, run_dir, resume=resume, run_metadata=metadata,
                      settings="distill.train", init_flag=False)
    if trainer.dist.main:
        if resolved_config is not None:
            from shallowpi.config import save_resolved

            save_resolved(resolved_config, run_dir)
        replace_text(facts_path, json.dumps(facts, indent=2))  # a resume checks itself against it
        replace_text(run_dir / "split.json", json.dumps(facts["split"]))
    last = trainer.fit()
    result: dict[str, Any] = {"train": last, "checkpoint": str(latest_checkpoint(run_dir)), "distill": facts,
                              "report": None}
    if trainer.dist.main and dcfg.report:
        from shallowpi.distill.report import write_report

        teacher.cpu()
        # What was saved, as eval loads it: the EMA weights when the run kept them (the ones
        # every closed-loop figure uses).
        student = Policy.load(checkpoint_weights(latest_checkpoint(run_dir)))
        result["report"] = str(write_report(
            run_dir, teacher, student, facts, dcfg, eval_set, eval_what, store, resolved_config,
            progress=train_cfg.progress,
        ))
    return result


def _check_resumed(recorded: dict[str, Any], dcfg: DistillConfig, facts_path: Path) -> None:
    """ConfigError (one line) when this run's student settings differ from those of the run
    it resumes (recorded in distill.json): its checkpoints hold that student, trained on
    that objective."""
    now = {"distill.select": dcfg.select, "distill.layers": dcfg.layers,
           "distill.weights": dcfg.weights.to_dict(), "distill.failed_episodes": dcfg.failed_episodes,
           "distill.teacher_fraction": dcfg.teacher_fraction}
    then = {"distill.select": recorded["selection"], "distill.layers": len(recorded["kept_layers"]),
            "distill.weights": recorded["loss_weights"],
            "distill.failed_episodes": recorded.get("failed_episodes", "skip"),  # older runs: skipped
            "distill.teacher_fraction": recorded.get("teacher_fraction", 1.0)}  # older runs: the whole batch
    if dcfg.weights.attention:
        # Resolved, defaults included: a run started with its own pairs and resumed without
        # them switched to the default pair silently (the objective is built from this config).
        now["distill.attention_pairs"] = AttentionPairs.from_config(dcfg.attention_pairs, recorded["kept_layers"]).to_list()
        then["distill.attention_pairs"] = recorded["attention_pairs"]
    for key, value in now.items():
        if value != then[key]:
            raise ConfigError(f"{key}={value} differs from the run being resumed ({then[key]}, {facts_path}); "
                              "resume with its settings, or pass another --run")


def _recorded_split(recorded: dict[str, Any], store: Path, episodes: list[int],
                    facts_path: Path) -> tuple[Split, str]:
    """The split of the run being resumed (distill.json) and its note; ConfigError (one line) when one of
    its training episodes is no longer in the store (or no longer kept, with
    policy.train.successful_only); TrainingError when its indices name other episodes now
    (`Split.check_same_episodes`)."""
    split = Split(list(recorded["split"]["train"]), list(recorded["split"]["held_out"]))
    Split(split.train + list(recorded["split"].get("teacher_only", [])), split.held_out).check_same_episodes(
        store, recorded["split"].get("episodes"), f"the run being resumed ({facts_path})")
    gone = sorted(set(split.train) - set(episodes))
    if gone:
        raise ConfigError(f"the run being resumed ({facts_path}) trained on episodes {gone}, which the store no "
                          "longer holds or keeps; pass another --run to start afresh")
    return split, recorded["split"].get("note", "")


def _recorded_teacher_only(recorded: dict[str, Any], failed: list[int], facts_path: Path) -> list[int]:
    """The teacher-only episodes of the run being resumed; ConfigError (one line) when one of
    them is no longer in the store or no longer marked failed."""
    then = list(recorded["split"].get("teacher_only", []))
    gone = sorted(set(then) - set(failed))
    if gone:
        raise ConfigError(f"the run being resumed ({facts_path}) learned episodes {gone} from the teacher alone, "
                          "which the store no longer holds as failed; pass another --run to start afresh")
    return then


def _split_of(teacher_checkpoint: Path, store: Path, episodes: list[int], fraction: float,
              tasks: Mapping[int, str] | None, own_fraction: float | None = None) -> tuple[Split, str]:
    """The teacher's own split when it was trained on this store (so the held-out episodes
    stay unseen by both), with the episodes recorded since it trained added to training
    (`_with_new_episodes`); else a fresh one (`fraction` held out) less the scenes the
    teacher trained on (`_unseen`). Either way the student trains only on `episodes`
    (those policy.train.successful_only keeps, when it is set). With the split, a note for
    the report on what its held-out episodes are to the teacher ("" for its own split).
    ConfigError (one line) for `own_fraction` (distill.train.eval_fraction) with the
    teacher's split in force: it would hold out nothing, recorded in config.yaml all the same."""
    meta = Policy.read_metadata(teacher_checkpoint)
    same = Path(meta.get("dataset", "")).resolve() == store.resolve()
    teacher_split = Split.recorded_in(meta)  # a student as teacher: its teacher-only episodes count as trained
    if teacher_split is not None and "episodes" in meta:
        # The same episodes under the same numbers, wherever the store lies now; this very
        # store holding others there (edited since) would put the teacher's training
        # episodes among the student's held-out ones: refused, in one line.
        recorded = json.loads(meta["episodes"])
        if same:
            teacher_split.check_same_episodes(
                store, recorded, f"the teacher {teacher_checkpoint}",
                "train a teacher on the store as it is (distill without --teacher), or pass the --dataset it was "
                "trained on")  # passed: the same episodes
        else:
            same = teacher_split.identities(store) == recorded
    if same and teacher_split is not None:
        if own_fraction is not None:
            raise ConfigError(f"distill.train.eval_fraction={own_fraction}: the student keeps the split of its teacher "
                              f"{teacher_checkpoint} (held-out episodes {teacher_split.held_out}), which "
                              "policy.train.eval_fraction chose when it trained; drop it")
        return _with_new_episodes(teacher_split, store, episodes), ""
    return _unseen(Split.of(sorted(episodes), fraction, tasks), store, meta.get("scenes"))


def _with_new_episodes(teacher_split: Split, store: Path, episodes: list[int]) -> Split:
    """The teacher's split for a student training on `episodes`: the teacher's training
    episodes among them, its held-out ones, and the episodes recorded after it trained
    (neither trained on nor held out by it, so they hold none of its held-out ones) added to
    training, but those of a held-out episode's scene (`Split.scenes`: the same twin scene
    recorded again would score the student on what it learned). Says in a line how many
    joined and how many were left out."""
    allowed, seen = set(episodes), {*teacher_split.train, *teacher_split.held_out}
    taught = [e for e in teacher_split.train if e in allowed]
    new = [e for e in episodes if e not in seen]
    if not new:
        return Split(taught, teacher_split.held_out)
    held_scenes = set(teacher_split.scenes(store, teacher_split.held_out).values())
    kept = [e for e, scene in teacher_split.scenes(store, new).items() if scene not in held_scenes] \
        if held_scenes else new
    log.info("%d episode(s) recorded after the teacher trained join the student's training%s", len(kept),
             f"; {len(new) - len(kept)} left out: their scenes are the held-out episodes'" if len(kept) < len(new)
             else "")
    return Split(sorted(taught + kept), teacher_split.held_out)


def _unseen(split: Split, store: Path, teacher_scenes: str | None) -> tuple[Split, str]:
    """`split` with the held-out episodes whose scenes the teacher trained on (its
    checkpoint's "scenes") moved to training, and the note saying so (`without_seen_scenes`).
    A teacher saved before checkpoints named their scenes cannot be checked: the note says
    that its held-out error may be on scenes it trained on."""
    if not split.held_out:
        return split, ""
    if teacher_scenes is None:
        return split, ("the teacher was trained on another store and names no training scenes: it may have "
                       "trained on these scenes")
    split, note = without_seen_scenes(split, store, json.loads(teacher_scenes), "the teacher")
    return split, note or "scenes the teacher did not train on"
