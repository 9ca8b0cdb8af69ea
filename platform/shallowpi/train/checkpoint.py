"""Run checkpoints: the trained policy, its optimiser state and EMA, written atomically.

    checkpoints/step_000250/model.safetensors        the trained Policy (Policy.load reads it)
    checkpoints/step_000250/train_state.safetensors  optimiser state keyed by parameter name,
                                                     ema/<name> tensors, metadata: step,
                                                     param_groups (JSON)
    checkpoints/step_000250/ema/                     the EMA weights as a Policy (with ema on)
    checkpoints/last                                 name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, synced to disk and renamed when
complete, then `last` is replaced: a kill or a power cut at any instant leaves the previous
checkpoint as the newest.
Resume takes the newest step folder (`latest_checkpoint`): every one is complete.
With `keep_last` (policy.train.keep_last) a save then removes the step folders older than
the newest keep_last (`prune_checkpoints`): a π0 checkpoint is ~50 GB, and a default run's
30 saves would write ~1.5 TB. The old ones go only after the new one is whole (a failed save
must leave the newest kept), so the disk needs room for keep_last + 1 checkpoints. Before each save, a disk with less free space than the previous checkpoint
took is said in one line (`space_warning`), before the save fails on it.
The state is always the full (unsharded) one, keyed by parameter name, so a run resumes
under any number of processes, with or without FSDP. Under FSDP only rank 0 holds it
whole, as it saves and as it resumes (it reads the files and broadcasts each tensor to the
others' shards). Only the trained policy is saved: an objective's frozen modules are inputs
of the run, not its result.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from shallowpi.durable_files import fsync_path, fsync_tree, give_umask_modes, replace_text
from shallowpi.errors import PlatformError
from shallowpi.policy.policy import Policy
from shallowpi.train.errors import TrainingError

log = logging.getLogger(__name__)


def checkpoint_weights(checkpoint: Path) -> Path:
    """The weights to use of a training checkpoint folder (checkpoints/step_N): its EMA
    average (`ema/`) when the run kept one, the weights every closed-loop figure is judged
    by; else the folder itself (so too for any other checkpoint or file)."""
    ema = Path(checkpoint) / "ema"
    return ema if (ema / "model.safetensors").is_file() else Path(checkpoint)


def checkpoint_step(path: str | Path, say: Callable[[str], None] = print) -> Path:
    """The checkpoint folder a user means by `path`: a run folder (runs/NAME) or its
    checkpoints/ folder means its newest checkpoint, the `last` marker file the step it
    names; anything else is itself. Says in a line which step it took."""
    given = Path(path).expanduser()
    if given.is_file() and given.name == "last":
        step = given.parent / given.read_text().strip()
        # A kill between a save's rename and the marker's update leaves it naming the step
        # before; the newest complete one is what it stands for.
        if (newest := latest_checkpoint(given.parent.parent)) is not None and newest.name != step.name:
            step = newest
    elif given.is_dir() and not (given / "model.safetensors").is_file() and given.name != "ema":
        run = given.parent if given.name == "checkpoints" else given
        step = latest_checkpoint(run) if (run / "checkpoints").is_dir() else None
        if step is None:
            return given
    else:
        return given
    say(f"{given}: its newest checkpoint, {step}" if given.is_dir() else f"{given}: the step it names, {step}")
    return step


def weights_to_use(checkpoint: str | Path, say: Callable[[str], None] = print) -> Path:
    """`checkpoint_weights` of what a user passed (`checkpoint_step`: a run folder's newest
    checkpoint), saying in a line when a step folder's EMA average was picked (pass a
    checkpoint's own folder, e.g. step_N/ema, to choose)."""
    given = checkpoint_step(checkpoint, say)
    chosen = checkpoint_weights(given)
    if chosen != given:
        say(f"{given.name}: using its EMA weights ({chosen}), the ones the run is judged by")
    return chosen


def _complete_steps(root: Path) -> list[Path]:
    """The complete step_N folders of a checkpoints/ folder `root` (a step number and a
    training state), newest first."""
    steps = [p for p in root.glob("step_*") if p.name[5:].isdigit() and (p / "train_state.safetensors").is_file()]
    return sorted(steps, key=lambda p: int(p.name[5:]), reverse=True)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run folder, or None. A step folder appears only
    by renaming a finished one into place, so every step_* folder is complete: the newest is
    taken even when a kill came between that rename and the `last` marker's update (the
    marker alone would resume from the step before, then refuse to overwrite this one)."""
    steps = _complete_steps(run_dir / "checkpoints")
    return steps[0] if steps else None


# A step folder being removed is first renamed to this prefix + its name (`prune_checkpoints`).
PRUNED_PREFIX = ".pruned_"


def prune_checkpoints(run_dir: Path, keep_last: int, keep: tuple[Path, ...] = ()) -> list[Path]:
    """Remove the run's complete step folders older than its newest `keep_last`: never the
    one checkpoints/last names, nor those in `keep`, nor a step folder without training
    state (not one a save made: a copy, a user's own). Returns the step folders removed.

    Each is first renamed to checkpoints/.pruned_step_N, the renames synced, then deleted: a
    kill or a power cut mid-removal leaves a hidden folder (`remove_pruned` finishes it),
    never a step_N folder with files missing that a resume, `eval` or a learning curve would
    take for a checkpoint. Only for the holder of the run folder's lock, once the newest
    checkpoint is durable and `last` names it. OSError from a rename or a removal passes
    through."""
    root = run_dir / "checkpoints"
    marker = root / "last"
    named = marker.read_text().strip() if marker.is_file() else None
    steps = _complete_steps(root)
    spared = {p.name for p in steps[:keep_last]} | {p.name for p in keep} | {named}
    doomed = [p for p in steps if p.name not in spared]
    remove_pruned(run_dir)  # a leftover of a cut removal, perhaps of one of these names
    hidden = []
    for path in doomed:
        hidden.append(root / f"{PRUNED_PREFIX}{path.name}")
        path.rename(hidden[-1])
    if hidden:
        # The renames reach the disk before any removal: a power cut must not bring back a
        # step_N folder whose files the removal had already unlinked.
        fsync_path(root)
    for path in hidden:
        shutil.rmtree(path)
    return doomed


def remove_pruned(run_dir: Path) -> list[Path]:
    """Remove the run's checkpoints/.pruned_step_* (`prune_checkpoints` killed mid-removal
    leaves one: at π0 size tens of GB); returns those removed. Only for the holder of the
    run folder's lock."""
    pruned = sorted(p for p in (run_dir / "checkpoints").glob(f"{PRUNED_PREFIX}step_*") if p.is_dir())
    for path in pruned:
        shutil.rmtree(path)
    return pruned


# The free space a save wants beyond the previous checkpoint's size: the next one is the
# same size, give or take its metadata.
SPACE_MARGIN = 1.1


def checkpoint_bytes(checkpoint: Path) -> int:
    """Bytes of the files under a checkpoint folder (weights, training state, EMA)."""
    return sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged process may still write on the file system of `path` (one
    statvfs), or None where it does not count them (0 blocks in all: some network and
    overlay file systems). OSError from `os.statvfs` passes through."""
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize if stat.f_blocks else None


def space_warning(run_dir: Path, previous: int | None, free: int | None, settings: str = "policy.train",
                  keep_last: int | None = None) -> str | None:
    """The line to say before a save into `run_dir` when `free` bytes on its disk are below
    `previous` (the bytes of the run's previous checkpoint) with SPACE_MARGIN: that save
    would likely fail for lack of space. None when there is room, or nothing to judge by
    (no previous checkpoint, a file system that does not count its free space). `keep_last`:
    the run's setting; the old checkpoints go only after the new one is saved, so keeping
    fewer helps only above 1 (keep_last=N needs room for N + 1)."""
    if previous is None or free is None or free >= previous * SPACE_MARGIN:
        return None
    if keep_last == 1:  # already the fewest: the one kept and the one being saved must both fit
        fix = (f"free some ({settings}.keep_last=1 keeps one, but the previous is removed only after the new one is "
               "saved: the disk needs room for two)")
    else:
        kept = f"{settings}.keep_last={keep_last}" if keep_last else f"{settings}.keep_last=N"
        fix = (f"free some, or keep fewer checkpoints ({kept}; keep_last=N needs room for N + 1, the old removed only "
               "after the new one is saved)")
    return (f"{run_dir}: {_bytes(free)} free on its disk, less than a checkpoint takes ({_bytes(previous)} the last "
            f"one, {SPACE_MARGIN - 1:.0%} margin): the next save may fail for lack of space; {fix}")


def _bytes(n: int) -> str:
    """'51.2 GB', '28.3 MB', '402.5 kB', '512 B'."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def remove_partial_checkpoints(run_dir: Path) -> list[Path]:
    """Remove the run's checkpoints/.tmp_step_* (a save killed mid-write leaves one: at π0
    size tens of GB, which no later save of another step removed); returns those removed.
    Only for the holder of the run folder's lock (train/run_lock.py): another trainer's
    would be a save in progress."""
    partial = sorted(p for p in (run_dir / "checkpoints").glob(".tmp_step_*") if p.is_dir())
    for path in partial:
        shutil.rmtree(path)
    return partial


def mend_last_marker(run_dir: Path) -> Path | None:
    """Point checkpoints/last at the run's newest complete checkpoint when it names another
    (a kill between a save's rename and the marker's update; a resume that trains no step
    never saves, so nothing else would mend it). Returns the step it now names, or None
    when the run has none. Only for the holder of the run folder's lock."""
    newest = latest_checkpoint(run_dir)
    marker = run_dir / "checkpoints" / "last"
    if newest is not None and (not marker.is_file() or marker.read_text().strip() != newest.name):
        replace_text(marker, newest.name)
        return newest
    return None


def trained_for(checkpoint: Path) -> int | None:
    """The step count the checkpoint's run was asked for (`platform train --steps N`, or
    its preset's policy.train.steps), as its training state notes it; None for a checkpoint
    from before it was noted, or one without training state."""
    from safetensors import safe_open

    try:
        with safe_open(str(checkpoint / "train_state.safetensors"), framework="pt") as f:
            noted = json.loads((f.metadata() or {}).get("noted") or "{}")
    except Exception:  # safetensors' own error types: no state, or not readable (load says why)
        return None
    steps = noted.get("steps")
    return int(steps) if steps is not None else None


def _holding(policy: Policy, state: Mapping[str, Tensor]) -> Policy:
    """A Policy of `policy`'s architecture and action mean holding the tensors of `state`
    (a full state dict, on any device), on the CPU in the dtypes a new Policy has: what a
    checkpoint's `Policy.save` writes. RuntimeError naming the keys `state` lacks or has
    over the architecture's (load_state_dict's, strict).

    Built on the meta device, its tensors then taken from `state` (moved to the CPU, not
    copied into it): a randomly initialised one to copy into took ~40-80 s of
    single-threaded init at π0's 3.2 B parameters, twice a save with EMA, and ~13 GB of
    host memory more, while the other ranks waited in their next collective. What the
    meta device leaves empty, the non-persistent buffers (the delta mask, from numpy, is
    real anyway), `save` does not write."""
    with torch.device("meta"):
        held = Policy(policy.cfg, policy.features)
    dtypes = {k: v.dtype for k, v in held.state_dict().items()}  # fp32, as the copy into a new one cast
    held.load_state_dict({k: v.detach().to("cpu", dtypes.get(k, v.dtype)) for k, v in state.items()},
                         strict=True, assign=True)
    held.action_mean = policy.action_mean  # not a weight: the offline baseline, in the header
    return held


@dataclass
class Checkpointer:
    """Saves and restores `policy` (as trained: plain, DDP-wrapped or FSDP-sharded in place)
    and `optimizer`. `sharded`: the policy is FSDP-sharded in a process group, so state is
    gathered and scattered with torch.distributed.checkpoint (every process must call)."""

    run_dir: Path
    policy: Policy
    optimizer: torch.optim.Optimizer
    sharded: bool
    main: bool  # this process writes files
    metadata: dict[str, str]
    # The settings a resumed run must share with the one it continues (Trainer.RECIPE),
    # kept in each checkpoint's training state.
    recipe: dict[str, Any] = field(default_factory=dict)
    # Settings a resume may change but must hear about (Trainer._check_resumed_settings):
    # kept beside the recipe; `loaded_notes` holds the resumed checkpoint's.
    noted: dict[str, Any] = field(default_factory=dict)
    loaded_notes: dict[str, Any] = field(default_factory=dict)
    settings: str = "policy.train"  # the config section a refused recipe key is named under
    # Step folders a save keeps (the newest N; `prune_checkpoints`); None keeps every one.
    # The disk needs room for N + 1: the old ones are removed after the new one is whole.
    keep_last: int | None = None
    # The bytes of the run's previous checkpoint (None: not measured yet), and whether the
    # last save was said to lack space (said again only after a save found room).
    _previous_bytes: int | None = field(default=None, init=False, repr=False)
    _short_said: bool = field(default=False, init=False, repr=False)

    def full_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Full model and optimiser state, optimiser entries keyed by parameter name."""
        if self.sharded:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
                get_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
            return (
                get_model_state_dict(self.policy, options=opts),
                get_optimizer_state_dict(self.policy, self.optimizer, options=opts),
            )
        names = self._param_names()
        raw = self.optimizer.state_dict()
        state = {names[i]: entries for i, entries in raw["state"].items()}
        groups = [{**g, "params": [names[i] for i in g["params"]]} for g in raw["param_groups"]]
        return self.policy.state_dict(), {"state": state, "param_groups": groups}

    def _param_names(self) -> dict[int, str]:
        """Optimizer state index -> parameter name (indices follow the param groups' order)."""
        by_id = {id(p): n for n, p in self.policy.named_parameters()}
        ordered = [by_id[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        return dict(enumerate(ordered))

    def save(self, step: int, ema: dict[str, Tensor] | None = None, ema_rate: float | None = None) -> Path | None:
        """checkpoints/step_XXXXXX on the main process (None elsewhere). Raises
        TrainingError if that checkpoint exists (a checkpoint is never overwritten), and
        OSError naming the temporary folder when the disk refuses a write (full: ENOSPC,
        EDQUOT), safetensors' own error included; the temporary folder is removed whatever
        stopped the write. Before writing, warns once (until a save finds room again) when
        the disk's free space is below the previous checkpoint's size (`space_warning`);
        after `last` names the new one, removes the step folders beyond `keep_last`
        (`prune_checkpoints`; a failed removal is a warning, the run goes on)."""
        from safetensors.torch import save_file

        model_sd, optim_sd = self.full_state()  # collective under FSDP: every rank calls it
        if not self.main:
            return None
        ckpt_root = self.run_dir / "checkpoints"
        final = ckpt_root / f"step_{step:06d}"
        if final.exists():
            raise TrainingError(f"{final} exists; refusing to overwrite a checkpoint")
        self._check_space()
        tmp = ckpt_root / f".tmp_step_{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        meta = {"step": str(step), **self.metadata}
        try:
            _holding(self.policy, model_sd).save(tmp, meta)
            tensors, groups = _flatten_optimizer(optim_sd)
            if ema is not None:
                tensors.update({f"ema/{k}": v.cpu().contiguous() for k, v in ema.items()})
                _holding(self.policy, ema).save(tmp / "ema", {**meta, "ema": str(ema_rate)})
            save_file(tensors, str(tmp / "train_state.safetensors"),
                      metadata={"step": str(step), "param_groups": groups, "recipe": json.dumps(self.recipe),
                                "noted": json.dumps(self.noted)})
            # safetensors writes through a temporary file of mode 0600: the weights were the
            # trainer's alone, and a colleague's eval, distill or deploy of the run refused.
            give_umask_modes(tmp)
            # Synced before and after the rename: a power cut cannot leave `last` naming a
            # checkpoint whose files never reached the disk.
            fsync_tree(tmp)
            tmp.rename(final)
        except BaseException as exc:
            # Half a checkpoint is tens of GB at π0 size: on a full disk it kept the disk
            # full until a later trainer started (remove_partial_checkpoints).
            shutil.rmtree(tmp, ignore_errors=True)
            if (refused := _disk_error(exc, tmp)) is not None:
                raise refused from None
            raise
        fsync_path(ckpt_root)
        replace_text(ckpt_root / "last", final.name)
        self._previous_bytes = checkpoint_bytes(final)
        if self.keep_last is not None:
            # After the new checkpoint and `last` are durable: a kill here leaves it loadable.
            try:
                prune_checkpoints(self.run_dir, self.keep_last, keep=(final,))
            except OSError as exc:  # the checkpoint is saved: not a reason to stop the run
                log.warning("could not remove the checkpoints beyond %s.keep_last=%d in %s (%s); the run goes on",
                            self.settings, self.keep_last, ckpt_root, exc)
        return final

    def _check_space(self) -> None:
        """Warn (`space_warning`) when the run's disk holds less free space than its previous
        checkpoint took: one statvfs a save, the previous size measured once (a resumed
        run's newest checkpoint) and then kept from each save."""
        if self._previous_bytes is None and (previous := latest_checkpoint(self.run_dir)) is not None:
            self._previous_bytes = checkpoint_bytes(previous)
        if self._previous_bytes is None:  # a run's first save: nothing to judge by
            return
        try:
            free = free_bytes(self.run_dir)
        except OSError:  # nothing to judge by; the save itself says what the disk refuses
            free = None
        said = space_warning(self.run_dir, self._previous_bytes, free, self.settings, self.keep_last)
        if said is not None and not self._short_said:
            log.warning("%s", said)
        self._short_said = said is not None

    def load(self, path: Path, device: torch.device) -> tuple[int, dict[str, Tensor]]:
        """Restore model and optimiser from `path`; returns its step and the saved EMA
        tensors (name -> tensor, empty without EMA). Raises TrainingError when the
        checkpoint's policy config, or a setting of `recipe` it recorded, differs from the
        run's (checkpoints from before the recipe was kept are not checked).

        Sharded (every process must call): only the main process reads the files, and
        torch.distributed.checkpoint broadcasts each tensor from it, each process keeping
        its shard. Read by every process, the whole model and optimiser state were in host
        memory once per process at resume (8 processes of π0: ~310 GB), where a save gathers
        them on the main process only: a run that saved could not resume on its node. A
        failure to read reaches every process, as the same error."""
        if not self.sharded:
            model_sd, tensors, meta = self._read(path)
            self._check_recipe(path, meta)
            self._load_replicated(model_sd, _unflatten_optimizer(tensors, meta["param_groups"]), device)
        else:
            import torch.distributed as dist
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            model_sd, tensors, meta = {}, {}, {}
            failed: Exception | None = None
            said: PlatformError | None = None  # what the other processes raise for `failed`
            if self.main:
                try:
                    model_sd, tensors, meta = self._read(path)
                except Exception as exc:  # every process must leave: the others wait for the tensors
                    failed = exc
                    said = exc if isinstance(exc, PlatformError) else TrainingError(f"cannot resume from {path}: {exc}")
            box: list[Any] = [(said, meta)]  # the metadata only: the tensors go one by one below
            dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
            said, meta = box[0]
            if failed is not None:
                raise failed
            if said is not None:
                raise said
            self._check_recipe(path, meta)
            optim_sd = _unflatten_optimizer(tensors, meta["param_groups"]) if self.main else {}
            opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
            set_model_state_dict(self.policy, model_sd, options=opts)
            set_optimizer_state_dict(self.policy, self.optimizer, optim_sd, options=opts)
        # Under FSDP the run keeps no EMA (Trainer refuses it), so the tensors on the main
        # process alone lose nothing.
        ema = {k[len("ema/"):]: v.to(device) for k, v in tensors.items() if k.startswith("ema/")}
        step = int(meta["step"])
        log.info("resumed from %s at step %d", path, step)
        return step, ema

    def _read(self, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor], dict[str, str]]:
        """The checkpoint's model state, its training state's tensors and that file's
        metadata, read into host memory. TrainingError for another policy config or a
        damaged training state; CheckpointError (Policy.load) for damaged weights."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        saved = Policy.load(path)
        if saved.cfg != self.policy.cfg:
            raise TrainingError(f"{path} was trained with another policy config; resume with the same preset")
        try:
            with safe_open(str(path / "train_state.safetensors"), framework="pt") as f:
                meta = f.metadata()
            tensors = load_file(str(path / "train_state.safetensors"))
        except Exception as exc:  # safetensors' own error type: a file cut short, or not one
            raise TrainingError(f"{path}/train_state.safetensors cannot be read ({exc}): the checkpoint is damaged "
                                f"(a copy cut short?); move {path} aside to resume from the step before it") from None
        return saved.state_dict(), tensors, meta

    def _check_recipe(self, path: Path, meta: dict[str, str]) -> None:
        """Keep the checkpoint's notes (`loaded_notes`); TrainingError when a setting of
        `recipe` it recorded differs from the run's."""
        self.loaded_notes = json.loads(meta.get("noted") or "{}")
        for key, (value, before) in recipe_differences(json.loads(meta.get("recipe") or "{}"), self.recipe).items():
            raise TrainingError(f"{self.settings}.{key}={value!r} differs from the run being resumed ({before!r}, "
                                f"{path}): resume with the same settings, or start a new run (--run NAME)")

    def _load_replicated(self, model_sd: dict[str, Tensor], optim_sd: dict[str, Any], device: torch.device) -> None:
        """Model and optimiser state into a plain or DDP-wrapped policy (every process holds
        it whole)."""
        self.policy.load_state_dict(model_sd)
        index = {name: i for i, name in self._param_names().items()}
        raw = self.optimizer.state_dict()
        raw["state"] = {
            index[name]: {k: v.to(device) if k != "step" else v for k, v in entries.items()}
            for name, entries in optim_sd["state"].items()
        }
        # The saved group settings, the implementation flags with them: a run saved before
        # the trainer's AdamW was fused resumes unfused, and so replays its own loss curve.
        for group, saved_group in zip(raw["param_groups"], optim_sd["param_groups"]):
            group.update({k: v for k, v in saved_group.items() if k != "params"})
        self.optimizer.load_state_dict(raw)


def recipe_differences(recorded: Mapping[str, Any], recipe: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (asked, recorded)} for each setting of `recipe` (as JSON holds it: betas a list)
    that `recorded`, a checkpoint's recipe, holds with another value. A key it does not
    record (saved before the key was kept) passes."""
    return {key: (value, recorded[key]) for key, value in recipe.items() if key in recorded and recorded[key] != value}


def ema_change_refused(recorded: float | None, asked: float | None) -> bool:
    """Whether a resume may not go from the EMA rate a run recorded (its notes) to `asked`:
    another rate, or none, than one it kept (its average would be lost or mixed with
    another). Switching one on is allowed: the average starts from the resumed weights."""
    return recorded is not None and recorded != asked


def _disk_error(exc: BaseException, path: Path) -> OSError | None:
    """The OSError a safetensors write reported as its own SafetensorError ("... No space left
    on device (os error 28)"), naming `path`, so the CLI's one line for a disk that refuses a
    write (full: ENOSPC, EDQUOT) says it instead of a traceback; None for any other error."""
    from safetensors import SafetensorError

    found = re.search(r"\(os error (\d+)\)", str(exc)) if isinstance(exc, SafetensorError) else None
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code), str(path))


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, Tensor], str]:
    tensors = {}
    for fqn, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"opt/{fqn}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    return tensors, json.dumps(state["param_groups"])


def _unflatten_optimizer(tensors: dict[str, Tensor], groups: str) -> dict[str, Any]:
    state: dict[str, dict[str, Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("opt/"):
            _, fqn, key = name.split("/", 2)
            state.setdefault(fqn, {})[key] = value
    return {"state": state, "param_groups": json.loads(groups)}
