"""The training loop for the π0 teacher (and, later, the distilled student).

One loop for one process or many (torchrun: DDP, or FSDP at full size). What makes a run
reproducible and resumable is that nothing random depends on history:
- batch b of step s is a fixed slice of a permutation seeded by (seed, epoch);
- the flow-matching noise and time of step s come from generators seeded by (seed, s),
  drawn for the whole global batch and sliced per rank.
So a run killed at any point and resumed from its last checkpoint replays the same loss
curve, and N processes on a global batch compute the same losses as one process.

Run folder layout (never overwritten; a second run into the same folder needs --resume):
    config.yaml                 resolved config of the run
    split.json                  train / held-out episode indices
    metrics.jsonl               one line per logged step (step, loss, lr, grad_norm)
    tb/                         TensorBoard events
    checkpoints/step_000250/    model.safetensors (a Policy), train_state.safetensors
    checkpoints/last            name of the newest complete checkpoint
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from shallowpi.errors import PlatformError
from shallowpi.policy.policy import Policy
from shallowpi.train.progress import ProgressBar

log = logging.getLogger(__name__)


class TrainingError(PlatformError):
    """A run that cannot start or continue: bad data, existing run folder, NaN loss."""

    exit_code = 4


@dataclass
class TrainConfig:
    """Optimisation settings (configs/policy/<preset>.yaml `train:` section)."""

    steps: int = 1500
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.01
    betas: Sequence[float] = (0.9, 0.95)
    grad_clip: float = 1.0
    ema: float | None = None
    eval_fraction: float = 0.1
    log_every: int = 10
    save_every: int = 250
    workers: int = 1
    fsdp: bool = False
    bf16: bool = True  # autocast matmuls to bfloat16 on CUDA (weights and optimizer stay float32)
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise TrainingError(f"steps and batch_size must be >= 1 (got {self.steps}, {self.batch_size})")
        if self.ema is not None and not 0.0 < self.ema < 1.0:
            raise TrainingError(f"ema must be in (0, 1) or null, got {self.ema}")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine decay to cfg.min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


# ----------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    # In a torch.distributed process group (launched by torchrun), even as its only process.
    grouped: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group when launched by torchrun (or anything else that sets RANK,
    WORLD_SIZE and MASTER_ADDR). A single torchrun process joins too, so FSDP runs the same
    code on one GPU as on eight; a plain `platform train` is not grouped."""
    if not {"RANK", "WORLD_SIZE", "MASTER_ADDR"} <= set(os.environ):
        return Dist()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), grouped=True)


def all_reduce_sum(x: Tensor, d: Dist) -> Tensor:
    if d.world > 1:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
    return x


# ----------------------------------------------------------------------------- data order


class StepBatches(Sampler[list[int]]):
    """Index lists for steps start..steps-1: this rank's share of each global batch.

    Global sample g (= step * batch + j) is position g % n of a permutation seeded by
    (seed, g // n): epochs reshuffle, and any step's batch is known without replaying.
    """

    def __init__(self, n: int, batch: int, seed: int, start: int, steps: int, d: Dist) -> None:
        if batch % d.world:
            raise TrainingError(f"batch_size {batch} is not divisible by {d.world} processes")
        self.n, self.batch, self.seed, self.start, self.steps, self.d = n, batch, seed, start, steps, d
        self._perms: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def global_batch(self, step: int) -> list[int]:
        g = np.arange(step * self.batch, (step + 1) * self.batch)
        return [int(self._perm(int(i // self.n))[i % self.n]) for i in g]

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch // self.d.world
        for step in range(self.start, self.steps):
            yield self.global_batch(step)[self.d.rank * share : (self.d.rank + 1) * share]

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def step_noise(step: int, seed: int, batch: int, chunk: int, action_dim: int, policy: Policy):
    """The flow-matching noise [batch, C, A] and time [batch] of a global step."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    noise = torch.randn(batch, chunk, action_dim, generator=gen)
    cfg = policy.cfg
    beta = np.random.default_rng([seed, step, 7]).beta(cfg.time_beta_alpha, cfg.time_beta_beta, batch)
    t = torch.as_tensor(beta * cfg.time_scale + cfg.time_offset, dtype=torch.float32)
    return noise, t


# ----------------------------------------------------------------------------- checkpoints


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


def latest_checkpoint(run_dir: Path) -> Path | None:
    marker = run_dir / "checkpoints" / "last"
    if not marker.is_file():
        return None
    path = run_dir / "checkpoints" / marker.read_text().strip()
    return path if (path / "train_state.safetensors").is_file() else None


# ----------------------------------------------------------------------------- the trainer


class Trainer:
    """Fits `policy` on `train_set`; owns the optimiser, schedule, EMA, logs and checkpoints."""

    def __init__(
        self,
        policy: Policy,
        train_set: Dataset,
        cfg: TrainConfig,
        run_dir: Path,
        *,
        resume: bool = False,
        run_metadata: dict[str, str] | None = None,
    ) -> None:
        self.cfg, self.run_dir = cfg, run_dir
        self.device = _pick_device(cfg.device)
        self.dist = init_distributed(self.device)
        self.policy = policy.to(self.device)
        self.train_set = train_set
        self.run_metadata = run_metadata or {}
        self.start_step = 0
        run_dir.mkdir(parents=True, exist_ok=True)
        if len(train_set) == 0:
            raise TrainingError("the training split holds no samples; record more episodes")
        existing = latest_checkpoint(run_dir)
        if existing is None and resume:
            raise TrainingError(f"nothing to resume in {run_dir} (no complete checkpoint)")
        if existing is not None and not resume:
            raise TrainingError(
                f"run folder {run_dir} already holds checkpoints; pass --resume to continue it "
                "or --run NAME for a new run (nothing was overwritten)"
            )
        for name in self.policy.model.dead_parameter_names():
            self.policy.model.get_parameter(name).requires_grad_(False)
        self.module = self._wrap(self.policy)
        params = [p for p in self.policy.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        self.optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": cfg.weight_decay},
                {"params": no_decay, "weight_decay": 0.0},
            ],
            lr=cfg.lr,
            betas=tuple(cfg.betas),
            eps=1e-8,
        )
        self.ema: dict[str, Tensor] | None = None
        if cfg.ema:
            self.ema = {k: v.detach().clone() for k, v in self.policy.state_dict().items()}
        if existing is not None:
            self._load(existing)

    def _wrap(self, policy: Policy) -> nn.Module:
        if not self.dist.grouped:
            return policy
        if self.cfg.fsdp:
            from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

            # Shard layer by layer, so only one layer's full weights exist at a time. The
            # joint forward enters a Gemma layer through qkv() and finish(), not forward():
            # registered, they gather the layer's weights the way forward() would.
            for layer in policy.model.vision.layers:
                fully_shard(layer)
            for tower in (policy.model.vlm, policy.model.expert):
                for layer in tower.layers:
                    fully_shard(layer)
                    register_fsdp_forward_method(layer, "qkv")
                    register_fsdp_forward_method(layer, "finish")
            return fully_shard(policy)
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(policy, device_ids=ids)

    # -- checkpoints

    def _state_dicts(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Full (unsharded) model and optimiser state, optimiser entries keyed by parameter name."""
        if self.cfg.fsdp and self.dist.grouped:
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

    def save(self, step: int) -> Path | None:
        """checkpoints/step_XXXXXX: written into a temporary folder, renamed when complete."""
        from safetensors.torch import save_file

        model_sd, optim_sd = self._state_dicts()  # collective under FSDP: every rank calls it
        if not self.dist.main:
            return None
        ckpt_root = self.run_dir / "checkpoints"
        final = ckpt_root / f"step_{step:06d}"
        if final.exists():
            raise TrainingError(f"{final} exists; refusing to overwrite a checkpoint")
        tmp = ckpt_root / f".tmp_step_{step:06d}"
        shutil.rmtree(tmp, ignore_errors=True)
        snapshot = Policy(self.policy.cfg, self.policy.features)
        snapshot.load_state_dict(model_sd, strict=True)
        snapshot.save(tmp, {"step": str(step), **self.run_metadata})
        tensors, groups = _flatten_optimizer(optim_sd)
        if self.ema is not None:
            tensors.update({f"ema/{k}": v.cpu().contiguous() for k, v in self.ema.items()})
            ema_policy = Policy(self.policy.cfg, self.policy.features)
            ema_policy.load_state_dict({k: v.cpu() for k, v in self.ema.items()})
            ema_policy.save(tmp / "ema", {"step": str(step), "ema": str(self.cfg.ema), **self.run_metadata})
        save_file(tensors, str(tmp / "train_state.safetensors"), metadata={"step": str(step), "param_groups": groups})
        tmp.rename(final)
        marker = ckpt_root / "last.tmp"
        marker.write_text(final.name)
        marker.replace(ckpt_root / "last")
        return final

    def _load(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        saved = Policy.load(path)
        if saved.cfg != self.policy.cfg:
            raise TrainingError(f"{path} was trained with another policy config; resume with the same preset")
        with safe_open(str(path / "train_state.safetensors"), framework="pt") as f:
            meta = f.metadata()
        tensors = load_file(str(path / "train_state.safetensors"))
        optim_sd = _unflatten_optimizer(tensors, meta["param_groups"])
        if self.cfg.fsdp and self.dist.grouped:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.policy, saved.state_dict(), options=opts)
            set_optimizer_state_dict(self.policy, self.optimizer, optim_sd, options=opts)
        else:
            self.policy.load_state_dict(saved.state_dict())
            index = {name: i for i, name in self._param_names().items()}
            raw = self.optimizer.state_dict()
            raw["state"] = {
                index[name]: {k: v.to(self.device) if k != "step" else v for k, v in entries.items()}
                for name, entries in optim_sd["state"].items()
            }
            for group, saved_group in zip(raw["param_groups"], optim_sd["param_groups"]):
                group.update({k: v for k, v in saved_group.items() if k != "params"})
            self.optimizer.load_state_dict(raw)
        if self.ema is not None:
            self.ema = {k: tensors[f"ema/{k}"].to(self.device) for k in self.ema if f"ema/{k}" in tensors} or self.ema
        self.start_step = int(meta["step"])
        log.info("resumed from %s at step %d", path, self.start_step)

    # -- the loop

    def fit(self) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        sampler = StepBatches(len(self.train_set), cfg.batch_size, cfg.seed, self.start_step, cfg.steps, d)
        loader = DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=cfg.workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        metrics_path = self.run_dir / "metrics.jsonl"
        writer = self._tensorboard() if d.main else None
        if d.main:
            _truncate_metrics(metrics_path, self.start_step)
        progress = ProgressBar("train", cfg.steps, self.start_step, enabled=d.main and cfg.progress)
        share = cfg.batch_size // d.world
        last: dict[str, float] = {}
        self.policy.train()
        step = self.start_step
        try:
            for step, batch in enumerate(loader, start=self.start_step):
                last = self._step(step, batch, share)
                if d.main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                    with metrics_path.open("a") as f:
                        f.write(json.dumps({"step": step, **last}) + "\n")
                    if writer is not None:
                        for key, value in last.items():
                            writer.add_scalar(f"train/{key}", value, step)
                progress.update(step + 1, f"loss {last['loss']:.4f} lr {last['lr']:.2e}")
                if (step + 1) % cfg.save_every == 0 or step + 1 == cfg.steps:
                    self.save(step + 1)
        finally:
            progress.close()
            if writer is not None:
                writer.close()
        return last

    def _step(self, step: int, batch: dict[str, Any], share: int) -> dict[str, float]:
        cfg, d = self.cfg, self.dist
        for group in self.optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        noise, t = step_noise(
            step, cfg.seed, cfg.batch_size, self.policy.cfg.chunk_len, self.policy.cfg.action_dim, self.policy
        )
        rows = slice(d.rank * share, (d.rank + 1) * share)
        batch = _to_device(batch, self.device)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and self.device.type == "cuda")
        with autocast:
            total, count = self.module(batch, noise[rows].to(self.device), t[rows].to(self.device))
        # Normalise by the count over all ranks, so DDP's gradient mean equals one process's.
        global_count = all_reduce_sum(count.detach().float(), d)
        loss = total * d.world / global_count
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            [p for p in self.policy.parameters() if p.requires_grad], cfg.grad_clip
        )
        reported = (all_reduce_sum(total.detach().float(), d) / global_count).item()
        if not math.isfinite(reported):
            last = latest_checkpoint(self.run_dir)
            raise TrainingError(
                f"loss became {reported} at step {step}; lower policy.train.lr or check the data"
                + (f" (last good checkpoint: {last})" if last else "")
            )
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for k, v in self.policy.state_dict().items():
                    if v.dtype.is_floating_point:
                        self.ema[k].lerp_(v, 1.0 - cfg.ema)
        return {"loss": reported, "lr": lr_at(step, cfg), "grad_norm": float(grad_norm)}

    def _tensorboard(self):
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.warning("tensorboard is not installed (training extra); no TensorBoard logs")
            return None
        return SummaryWriter(str(self.run_dir / "tb"), purge_step=self.start_step)


# ----------------------------------------------------------------------------- helpers


def _pick_device(name: str) -> torch.device:
    """"auto" is the GPU when there is one; under torchrun each process takes its LOCAL_RANK's."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device(name)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _truncate_metrics(path: Path, start: int) -> None:
    """On resume, drop lines logged after the checkpoint (they will be logged again)."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] < start]
    path.write_text("".join(line + "\n" for line in keep))
