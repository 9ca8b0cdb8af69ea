"""Fine-tune (or train from scratch) the π0 teacher on one episode store.

`finetune` is what `platform train` runs: split the store's episodes into train and
held-out (saying so when none is left to hold out), build the datasets and the policy
(normalisation statistics from the training split), write the run folder's config and
split, train, and evaluate on the held-out episodes (on the training episodes, labelled
as such, when there are none). The dataset class is a parameter so tests can pass an
in-memory one; `platform train` passes one checked by train/store_checks.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from shallowpi.durable_files import replace_text
from shallowpi.policy.action_space import delta_dims
from shallowpi.policy.config import PolicyConfig
from shallowpi.policy.fit import camera_shapes_of
from shallowpi.policy.policy import Features, Policy
from shallowpi.policy.tokenizer import build_vocabulary, check_prompts
from shallowpi.train.checkpoint import checkpoint_weights, latest_checkpoint
from shallowpi.train.errors import TrainingError
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.trainer import TrainConfig, Trainer, launched

log = logging.getLogger(__name__)

# (store_path, chunk_len, episodes) -> a dataset with the ChunkDataset contract: its items,
# `stats(delta_dims=)`, `task_texts()`, `joint_names()`, `fps()` and, with
# policy.actions=delta, `action_kinds()`.
DatasetFactory = Callable[[Path, int, "list[int] | None"], Dataset]


@dataclass
class Split:
    """Episode indices to train on and to hold out for offline evaluation."""

    train: list[int]
    held_out: list[int]

    @classmethod
    def of(cls, episodes: list[int], fraction: float, tasks: Mapping[int, str] | None = None) -> Split:
        """Hold out round(len(episodes) * fraction) episodes (none for fraction 0, else at least
        one if there are two), shared among the tasks in proportion to their episodes (largest
        remainder), each task's last ones. `tasks`: episode -> task text; None: all episodes one task (the
        episodes it lacks form one together). Per task, because a store recorded task by task would
        otherwise hold out only its last task's episodes: the held-out evaluation and the
        distiller's probe would see one task, which would also train on fewer demonstrations.
        A task keeps at least one episode to train on where it can; what its share cannot
        hold out comes from the last episodes, as without tasks (a store whose every
        episode has its own instruction splits as before). Raises TrainingError when no
        episode is left to train on."""
        if not episodes:
            raise TrainingError("the dataset holds no episodes; record some first (platform record)")
        n_out = 0 if len(episodes) < 2 or fraction == 0 else max(1, round(len(episodes) * fraction))
        if n_out >= len(episodes):
            raise TrainingError(
                f"policy.train.eval_fraction={fraction} holds out all {len(episodes)} episodes, leaving "
                "none to train on; lower it"
            )
        groups: dict[str | None, list[int]] = {}  # None: no task known (apart from "", a task)
        for e in episodes:
            groups.setdefault(tasks.get(e) if tasks is not None else None, []).append(e)
        members = list(groups.values())
        exact = [n_out * len(m) / len(episodes) for m in members]
        share = [int(x) for x in exact]
        for i in sorted(range(len(members)), key=lambda i: exact[i] - share[i], reverse=True)[: n_out - sum(share)]:
            share[i] += 1
        held_out = {e for m, k in zip(members, share) for e in m[len(m) - min(k, len(m) - 1):]}
        short = n_out - len(held_out)  # what tasks too small to spare one could not give
        if short:
            held_out.update([e for e in episodes if e not in held_out][-short:])
        return cls(sorted(set(episodes) - held_out), sorted(held_out))

    @classmethod
    def recorded_in(cls, header: Mapping[str, str]) -> Split | None:
        """The split a checkpoint's header records (None when it records none), the failed
        episodes a student learned from its teacher alone (`teacher_only`) counted as
        trained on: its recorded `episodes` name them too."""
        if "train" not in header or "held_out" not in header:
            return None
        trained = json.loads(header["train"]) + json.loads(header.get("teacher_only", "[]"))
        return cls(sorted(trained), json.loads(header["held_out"]))

    def identities(self, store: Path) -> dict[str, str]:
        """{episode index: what that episode is} for every episode of the split: its start
        time, length and task (`_recording`) hashed to 12 hex digits. Recorded with a run
        (split.json, the checkpoint's header) because the split names episodes by index, and
        an index names another episode after `dataset delete` compacts the store, or in
        another store of the same name. Empty for a store that is not on disk."""
        infos = _episode_infos(store, sorted(set(self.train) | set(self.held_out)))
        return {str(i): _digest(_recording(info)) for i, info in infos.items()}

    def check_same_episodes(self, store: Path, recorded: Mapping[str, str] | None, run: str,
                            advice: str = "pass another --run to start afresh, or the --dataset it was trained on",
                            ) -> dict[str, str]:
        """The split's `identities` in `store`; TrainingError (one line) unless they are
        those `run` recorded (None, a run from before they were recorded, passes). A
        held-out episode trained on, or another dataset's statistics under this one's name,
        would pass silently otherwise. `advice` ends the line."""
        now = self.identities(store)
        if not recorded:
            return now
        changed = sorted((int(i) for i, ident in recorded.items() if now.get(i) != ident))
        if changed:
            raise TrainingError(
                f"{run} was trained on other episodes than {store} holds under the numbers {changed[:5]}"
                f"{' ...' if len(changed) > 5 else ''} (another dataset of that name, or episodes deleted or "
                f"re-recorded since, which renumbers them): {advice}")
        return now

    def check_held_out(self, store: Path, require: bool, fraction: float | None = None) -> None:
        """Say so when no episode is held out (one episode, or `fraction` 0: asked for, so
        said as a plain log line): the final evaluation then scores training episodes.
        Raises TrainingError instead when `require`."""
        if self.held_out:
            return
        if fraction == 0:
            if require:
                raise TrainingError("policy.train.eval_fraction=0 holds out no episode, which "
                                    "policy.train.require_held_out=true refuses; raise the one or drop the other")
            log.info("policy.train.eval_fraction=0: no episode held out; the final evaluation scores training "
                     "episodes %s", _episode_runs(self.train))
            return
        msg = (
            f"{store.name}: {len(self.train)} episode(s), none held out, so the evaluation scores "
            "training episodes and says nothing about new scenes; record more episodes"
        )
        if require:
            raise TrainingError(f"{msg} (policy.train.require_held_out=true)")
        log.warning("%s (policy.train.require_held_out=true refuses this)", msg)

    def scenes(self, store: Path, episodes: list[int] | None = None) -> dict[int, str]:
        """{episode: its scene, hashed to 12 hex digits} for `episodes` (default: the
        training ones). A twin's episode is its task and scene seed (`extra.seed`): recorded
        again, in this store or another, it is the same scene. Any other is its identity
        (`_recording`: start time, length, task): the same recording, copied or imported
        again. A checkpoint records its training scenes so that a student distilled from it
        on another store holds none of them out (distill/distiller.py). Empty for a store
        that is not on disk."""
        infos = _episode_infos(store, self.train if episodes is None else episodes)
        return {i: _digest(f"{info.scene[0]}\0seed {info.scene[1]}" if info.scene is not None
                           else _recording(info)) for i, info in infos.items()}

    def eval_episodes(self) -> tuple[list[int], str]:
        """The episodes to evaluate on, and what they are, said plainly."""
        if self.held_out:
            return self.held_out, f"held-out episodes {self.held_out}"
        return self.train, f"training episodes {self.train} (no held-out episodes)"


def _episode_infos(store: Path, episodes: list[int]) -> dict[int, Any]:
    """{episode: its EpisodeInfo} for those of `episodes` the store holds; {} for a store
    not on disk (an in-memory dataset in tests: nothing on disk to name)."""
    from shallowpi.data.store import EpisodeStore

    if not Path(store).exists():
        return {}
    with EpisodeStore.open(store) as opened:
        return {i: opened.episode(i) for i in episodes if i < len(opened)}


def _recording(info: Any) -> str:
    """What names one recording of an episode: its start time, length and task; for an
    episode imported from LeRobot, which has no start time (0.0, its dropped frames not
    counted), its length, task and checksums, the same in every import of the dataset
    (one length and task alone would name many episodes of one import as one, and a
    student would not hold them out). An episode imported before imports stored 0.0 keeps
    the name it had, its import's clock (`store_edit.start_known` tells it an import for
    merges): a run trained on it still resumes, and two such imports of one dataset stay
    two recordings here."""
    if not info.start_time and info.imported:
        return f"imported {info.length} {info.task} {sorted(info.checksums.items())}"
    return f"{info.start_time!r} {info.length} {info.task}"


def _digest(text: str) -> str:
    """`text`'s sha256, 12 hex digits: the identities and scenes a checkpoint records."""
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def finetune(
    store: Path,
    policy_cfg: PolicyConfig,
    train_cfg: TrainConfig,
    run_dir: Path,
    *,
    episodes: list[int],
    make_dataset: DatasetFactory,
    tasks: Mapping[int, str] | None = None,
    resume: bool = False,
    init_from: Path | None = None,
    resolved_config: Any = None,
) -> dict[str, Any]:
    """Train, checkpoint, and evaluate; returns the final metrics and the eval report.
    `tasks` (episode -> task text, `commands.train_cmd.episode_tasks`) shares the held-out
    episodes among the tasks (`Split.of`); None splits the episodes as one task."""
    from shallowpi.train.offline_eval import evaluate

    split_path = run_dir / "split.json"
    if resume and split_path.is_file():
        data = json.loads(split_path.read_text())
        split = Split(data["train"], data["held_out"])
        identities = split.check_same_episodes(store, data.get("episodes"), f"the run being resumed ({run_dir})")
        kept = set(episodes)
        if dropped := sorted(e for e in split.train if e not in kept):
            raise TrainingError(f"the run being resumed ({run_dir}) trains on episodes {dropped[:5]}, which this "
                                "run's settings leave out (policy.train.successful_only, or marked failed since); "
                                "resume with the settings it started with, or pass another --run")
    else:
        split = Split.of(sorted(episodes), train_cfg.eval_fraction, tasks)
        if seen := scenes_of(init_from):  # begun from one of ours: its scenes are not held out either
            split, _ = without_seen_scenes(split, store, seen, f"the checkpoint it began from ({init_from})")
        identities = split.identities(store)
    split.check_held_out(store, train_cfg.require_held_out, train_cfg.eval_fraction)
    train_set = make_dataset(store, policy_cfg.chunk_len, split.train)
    if len(train_set) == 0:
        raise TrainingError(f"{store} has no training samples in episodes {split.train}")
    features = Features.from_sample(train_set[0])
    # The held-out episodes the evaluation can score (skip_nonfinite: not one wholly NaN).
    scoring, scored_what = scored_split(split, make_dataset, store, policy_cfg.chunk_len, train_cfg.require_held_out)
    texts = run_task_texts(train_set, make_dataset, store, policy_cfg.chunk_len, scoring)
    policy_cfg = _with_delta_dims(_with_vocabulary(policy_cfg, texts), train_set)
    # What the run learned so far, through the --init it began from too: resumed without
    # that flag, its checkpoints must not forget those scenes (a student distilled from it
    # would hold them out).
    resumed = latest_checkpoint(run_dir) if resume else None
    torch.manual_seed(train_cfg.seed)  # the initial weights are part of the run's recipe
    # Under torchrun only rank 0 reads --init's weights: the others' are replaced by rank 0's
    # as the trainer wraps the policy (train/distributed.py `wrap_policy`).
    policy = _initial_policy(policy_cfg, features, init_from, resumed, reads=launched().main)
    # No instruction cut, no two that encode alike: refused before step 0, in one line.
    check_prompts(policy.tokenizer, texts, policy.cfg.max_text_tokens)
    policy.set_stats(train_set.stats(delta_dims=policy.cfg.delta_dims))
    run_dir.mkdir(parents=True, exist_ok=True)
    # What step 0 began from, kept by every checkpoint (a resume without --init keeps the
    # first start's): distill tells a teacher trained from its --init from another by it.
    began_from = str(init_from.resolve()) if init_from is not None else \
        Policy.read_metadata(resumed).get("init") if resumed is not None else None
    trainer = Trainer(
        FlowMatchingObjective(policy), train_set, train_cfg, run_dir, resume=resume,
        run_metadata={"dataset": str(store), "held_out": json.dumps(split.held_out), "train": json.dumps(split.train),
                      "episodes": json.dumps(identities),
                      "scenes": json.dumps(sorted({*split.scenes(store).values(), *scenes_of(init_from),
                                                   *scenes_of(resumed)})),
                      **recorded_facts(train_set), **({"init": began_from} if began_from else {})},
    )
    if trainer.dist.main:
        if resolved_config is not None:
            from shallowpi.config import save_resolved

            save_resolved(_trained_config(resolved_config, policy_cfg, policy.cfg), run_dir)
        replace_text(split_path, json.dumps({"train": split.train, "held_out": split.held_out,  # resume reads it
                                             "episodes": identities}))
    last = trainer.fit()
    saved = latest_checkpoint(run_dir)
    weights = checkpoint_weights(saved) if saved is not None else None
    result: dict[str, Any] = {"train": last, "checkpoint": str(saved), "weights": str(weights)}
    if trainer.dist.main:
        # The saved weights, as `platform eval` loads them: the EMA average when the run kept
        # one; and a sharded policy's forward would gather from ranks that have left.
        sharded = train_cfg.fsdp and trainer.dist.grouped
        scored = Policy.load(weights, device=trainer.device) if sharded or weights != saved else policy
        eval_episodes, what = scoring.eval_episodes()[0], scored_what
        report = evaluate(scored, make_dataset(store, policy_cfg.chunk_len, eval_episodes), max_samples=128, data=what)
        result["eval"] = report.to_dict()
        replace_text(run_dir / "eval.json", json.dumps(result["eval"], indent=2))  # a kill leaves the old one whole
        # The table's first line names the episodes, as runs: 250 of them in brackets were
        # 1,268 characters of one log line. eval.json keeps the lists whole (`_short_lists`).
        log.info("%s", dataclasses.replace(report, data=_short_lists(what)).table())
    return result


def run_task_texts(train_set: Any, make_dataset: DatasetFactory, store: Path, chunk_len: int,
                   split: Split) -> list[str]:
    """Every task text of the run's episodes, sorted: the training set's and the held-out
    episodes' (they are scored at the end; a task only they hold would read as unknown
    words in a vocabulary of the rest, or go unchecked against the policy's tokens)."""
    held_out = make_dataset(store, chunk_len, split.held_out).task_texts() if split.held_out else []
    return sorted({*train_set.task_texts(), *held_out})


def evaluable_episodes(make_dataset: DatasetFactory, store: Path, chunk_len: int, episodes: list[int]) -> list[int]:
    """The episodes of `episodes` a dataset of `make_dataset` can score: all of them, but for
    a factory that skips non-finite windows (train/store_checks.py: `evaluable`), those
    left with one (the others named in one log line)."""
    evaluable = getattr(make_dataset, "evaluable", None)
    return evaluable(store, chunk_len, episodes) if evaluable is not None and episodes else episodes


def scored_split(split: Split, make_dataset: DatasetFactory, store: Path, chunk_len: int,
                 require_held_out: bool) -> tuple[Split, str]:
    """`split` with only the held-out episodes the evaluation can score (`evaluable_episodes`),
    and what the evaluation then scores, said plainly. Held-out episodes none of which can be
    scored leave the training episodes, said so (not "no held-out episodes"); TrainingError
    under `require_held_out` (policy.train.require_held_out), which asks for held-out scores."""
    held = evaluable_episodes(make_dataset, store, chunk_len, split.held_out)
    scored = Split(split.train, held)
    what = scored.eval_episodes()[1]
    if split.held_out and not held:
        if require_held_out:
            raise TrainingError(f"held-out episodes {split.held_out} have no window free of non-finite values "
                                "(policy.train.skip_nonfinite), and policy.train.require_held_out asks for held-out "
                                "scores: record more episodes, or repair or delete those")
        what = f"training episodes {split.train} (held-out episodes {split.held_out} have no finite window to score)"
    return scored, what


def recorded_facts(train_set: Any) -> dict[str, str]:
    """What a checkpoint records of its training data (JSON values) so that eval --sim and
    deploy check a robot against it with or without the store on that machine: the
    action's joints in order and the rate a chunk's actions are paced at (a robot that
    lists the joints otherwise or runs at another rate is refused), each camera's frame
    shape (another aspect ratio is refused), and the calibrations its joint positions were
    measured under; and the state the episodes typically started in (`start_state`, where a
    dataset can say it), which deploy moves the robot to before each episode."""
    facts = {"joint_names": json.dumps(list(train_set.joint_names()[1])),
             "fps": json.dumps(train_set.fps()),
             "camera_shapes": json.dumps(camera_shapes_of(train_set[0])),
             "calibrations": json.dumps(train_set.calibration_ids())}
    if hasattr(train_set, "start_state"):
        facts["start_state"] = json.dumps([round(float(v), 6) for v in train_set.start_state()])
    return facts


def without_seen_scenes(split: Split, store: Path, seen: Iterable[str], who: str) -> tuple[Split, str]:
    """`split` with the held-out episodes whose scenes (`Split.scenes`) are among `seen` moved
    to training, and a note saying so ("" when none moved): the same scene recorded again
    (in another store, or renumbered by a merge or successful_only) would otherwise score
    `who` (the teacher, the checkpoint a run began from) on what it learned."""
    seen = set(seen)
    moved = sorted(e for e, scene in split.scenes(store, split.held_out).items() if scene in seen)
    if not moved:
        return split, ""
    held_out = [e for e in split.held_out if e not in moved]
    log.info("episodes %s moved from held-out to training: %s trained on their scenes", _episode_runs(moved), who)
    note = f"episodes {moved} not held out: {who} trained on their scenes"
    if not held_out:
        note += f"; none is left unseen by {who}"
    return Split(sorted(split.train + moved), held_out), note


def _episode_runs(episodes: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5": episode numbers in a log line, however many
    (`store_checks._episode_list`, imported here: it imports this module)."""
    from shallowpi.train.store_checks import _episode_list

    return _episode_list(episodes)


_EPISODE_LIST = re.compile(r"\[(\d+(?:, \d+)*)\]")  # a Python list of ints, as the split's descriptions print it


def _short_lists(text: str) -> str:
    """`text` (`Split.eval_episodes`, `scored_split`: "held-out episodes [14, 15, 16]") with
    each list of episode numbers written as runs ("held-out episodes 14-16"), for a log line.
    Those descriptions stay whole elsewhere: eval.json, and the reports `platform eval` and
    distill write, say them alike."""
    return _EPISODE_LIST.sub(lambda m: _episode_runs([int(n) for n in m.group(1).split(", ")]), text)


def scenes_of(checkpoint: Path | None) -> list[str]:
    """The scenes one of our checkpoints learned (its "scenes"; none for a lerobot/openpi
    base or a checkpoint saved before they were recorded): a run begun from it (--init) has
    learned them too."""
    if checkpoint is None or not (checkpoint / "model.safetensors").is_file():
        return []
    return json.loads(Policy.read_metadata(checkpoint).get("scenes", "[]"))


def _with_delta_dims(cfg: PolicyConfig, train_set: Any) -> PolicyConfig:
    """With actions=delta: the store's joints are checked (policy/action_space.py: the
    actions must command the state's joints; ConfigError otherwise) and, unless the config
    names them, its non-gripper joints become the offset dimensions."""
    if cfg.actions != "delta":
        return cfg
    names = train_set.joint_names()[1]
    dims = delta_dims(*train_set.joint_names(), train_set.action_kinds())
    if not cfg.delta_dims:
        cfg = PolicyConfig.from_dict({**cfg.to_dict(), "delta_dims": dims})
    log.info("delta actions: %s as offsets from the chunk's state, the rest absolute",
             ", ".join(names[d] for d in cfg.delta_dims if d < len(names)))
    return cfg


def _with_vocabulary(cfg: PolicyConfig, texts: list[str]) -> PolicyConfig:
    """With tokenizer=words and no vocabulary yet: the config with one built from `texts`
    (it travels in the checkpoint's config)."""
    if cfg.tokenizer == "words" and not cfg.vocabulary:
        cfg = PolicyConfig.from_dict({**cfg.to_dict(), "vocabulary": build_vocabulary(texts)})
        log.info("word vocabulary of %d words from %d task texts", len(cfg.vocabulary), len(texts))
    return cfg


# PolicyConfig keys that follow the data, not the preset: never "asked" otherwise.
_DATA_KEYS = ("name", "vocabulary", "num_cameras")


def _differing(asked: PolicyConfig, kept: PolicyConfig) -> list[str]:
    """The model keys `asked` (the preset and overrides) sets otherwise than `kept` (the
    config a checkpoint was trained with), apart from those that follow the data."""
    return [f.name for f in fields(asked) if f.name not in _DATA_KEYS
            and getattr(asked, f.name) != getattr(kept, f.name)]


def _trained_config(resolved: Any, asked: PolicyConfig, trained: PolicyConfig) -> Any:
    """`resolved` (the run's composed config) with the `policy` keys the model kept otherwise
    than asked (an --init of ours, a resumed run's checkpoint) set to the kept values: the
    run's config.yaml says the model it trained, not the preset it was started with."""
    from omegaconf import OmegaConf, open_dict

    differ = _differing(asked, trained)
    if not differ or "policy" not in resolved:
        return resolved
    out = OmegaConf.create(OmegaConf.to_container(resolved, resolve=True))  # the caller's stays as composed
    with open_dict(out):
        for key in differ:
            out.policy[key] = trained.to_dict()[key]
    return out


def _initial_policy(
    cfg: PolicyConfig, features: Features, init_from: Path | None, resumed: Path | None, *, reads: bool = True
) -> Policy:
    """The policy step 0 starts from: fresh (`cfg`), one of our checkpoints (`init_from`, with
    its own config), or a lerobot/openpi π0 directory's weights in `cfg`'s model. A resumed
    run (`resumed`: its newest checkpoint) gets that checkpoint's own config, with or
    without the --init it began from (`_resumed_policy`; the trainer then loads its
    weights). TrainingError for an `init_from` that predicts another action space than `cfg`.

    `reads`: this process reads `init_from`'s weights (rank 0 of a process group, or a
    process alone). One that does not (ranks 1..N-1) builds the same model, its config and
    features read from the checkpoint's header, with fresh weights: the trainer's wrap
    replaces them with rank 0's (DDP's construction, FSDP's `wrap_policy`). Read by every
    process, a π0 checkpoint (~13 GB) was read once per GPU, and each held a state dict of
    it beside its model (8 processes: ~100 GB more host memory on the node) for weights the
    wrap then overwrote with rank 0's. Each process still checks the header against the data
    and the run's config, and what the weights file's header says of it (our checkpoint's
    tensor names and shapes: `_require_weights_fit`; a π0 directory's *.safetensors), so all
    of them refuse a wrong path, model or action space alike. What only reading the weights
    finds (a π0 file of another model, a damaged tensor) rank 0 alone raises; torchrun then
    ends the others."""
    if resumed is not None:
        return _resumed_policy(cfg, features, resumed)
    if init_from is None:
        return Policy(cfg, features)
    if is_our_checkpoint(init_from):
        meta = Policy.read_metadata(init_from)  # the header only: no weights
        kept = PolicyConfig.from_dict(json.loads(meta["config"]))
        saved_features = Features(**json.loads(meta["features"]))
        saved_features.check_against(features, "the dataset")
        _check_same_windows(cfg, kept, f"--init {init_from}")
        # Its weights fix its model; the keys the preset or an override set otherwise are
        # not applied: said once, not dropped silently.
        # (num_cameras follows the data, the vocabulary the store's texts: neither is asked.)
        if differ := _differing(cfg, kept):
            log.warning("--init %s keeps its own policy config: %s", init_from, ", ".join(
                f"policy.{k}={getattr(kept, k)!r} (asked {getattr(cfg, k)!r})" for k in differ))
        if reads:
            return Policy.load(init_from)
        # Policy.load builds Policy(kept, saved_features) too, then reads the weights into it.
        policy = Policy(kept, saved_features)
        _require_weights_fit(init_from, policy)
        return policy
    # A lerobot/openpi π0 directory: take its model, our features and fresh statistics.
    policy = Policy(cfg, features)
    if not reads and not any(init_from.glob("*.safetensors")):  # as load_pi0_directory refuses on rank 0
        raise TrainingError(f"no *.safetensors in {init_from}; pass a π0 checkpoint directory")
    if reads:
        from shallowpi.policy.weights import load_pi0_directory

        policy.model.load_state_dict(load_pi0_directory(init_from, policy.cfg).state_dict())
    return policy


def _require_weights_fit(checkpoint: Path, policy: Policy) -> None:
    """TrainingError (one line) unless `checkpoint`'s model.safetensors names the tensors of
    `policy`'s state and their shapes, read from its header alone (no weight read): what
    Policy.load, on the rank that reads them, refuses for a file of another model."""
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
            shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors' own error types: not a readable weights file
        raise TrainingError(f"--init {checkpoint}: its model.safetensors does not read ({exc})") from None
    wanted = {key: tuple(value.shape) for key, value in policy.state_dict().items()}
    if shapes != wanted:
        differ = sorted(k for k in shapes.keys() | wanted.keys() if shapes.get(k) != wanted.get(k))
        raise TrainingError(f"--init {checkpoint}: its weights are not its config's model ({len(differ)} tensors "
                            f"differ, e.g. {differ[0]}); the checkpoint is damaged or was edited")


def _check_same_windows(cfg: PolicyConfig, kept: PolicyConfig, what: str) -> None:
    """TrainingError (one line) when `kept` (the config of `what`, a checkpoint) predicts
    chunks of another length or another action space than `cfg` asks: the run's windows
    and statistics are cut and computed for `cfg`'s (a broadcast error at step 0 otherwise)."""
    if kept.chunk_len != cfg.chunk_len:
        raise TrainingError(f"{what} predicts chunks of {kept.chunk_len} actions but this run "
                            f"asks for {cfg.chunk_len}; pass policy.chunk_len={kept.chunk_len}")
    if (kept.actions, kept.delta_dims) != (cfg.actions, cfg.delta_dims):
        raise TrainingError(
            f"{what} predicts {kept.actions} actions (offset dimensions {kept.delta_dims}) "
            f"but this run asks for {cfg.actions} ({cfg.delta_dims}); pass policy.actions={kept.actions}"
        )


def _resumed_policy(cfg: PolicyConfig, features: Features, resumed: Path) -> Policy:
    """A policy in the config `resumed` (a run's newest checkpoint) was trained with, its
    weights left to the trainer to load. A run begun from one of our checkpoints (--init)
    trains that checkpoint's config, not the preset's: rebuilt from the preset, its resume
    was refused as "another policy config" although the command was the same. A run begun
    otherwise trained the preset's: a model key asked otherwise now is refused in one line
    (TrainingError), as are another chunk length or action space whatever it began from."""
    meta = Policy.read_metadata(resumed)
    kept = PolicyConfig.from_dict(json.loads(meta["config"]))
    saved_features = Features(**json.loads(meta["features"]))
    saved_features.check_against(features, "the dataset")
    _check_same_windows(cfg, kept, f"the run being resumed ({resumed})")
    differ = ", ".join(f"policy.{k}={getattr(kept, k)!r} (asked {getattr(cfg, k)!r})" for k in _differing(cfg, kept))
    began = Path(meta["init"]) if "init" in meta else None
    # A lerobot/openpi directory it began from gave weights only: the model was the preset's.
    ours = began is not None and (not began.exists() or is_our_checkpoint(began))
    if differ and not ours:
        raise TrainingError(f"the run being resumed ({resumed}) was trained with another policy config: {differ}; "
                            "resume with the same preset and overrides, or pass another --run")
    if differ:
        log.info("resuming %s in the policy config it trained with (that of --init %s): %s", resumed, began, differ)
    return Policy(kept, saved_features)


def is_our_checkpoint(path: Path) -> bool:
    """Whether `path` is one of our policy checkpoints (a model.safetensors whose header
    names our format), whose model a run begun from it keeps; not a lerobot/openpi π0
    directory, which gives weights only. A damaged header raises as Policy.read_metadata does."""
    return (path / "model.safetensors").is_file() and "format" in Policy.read_metadata(path)
