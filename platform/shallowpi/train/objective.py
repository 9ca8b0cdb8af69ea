"""What the training loop minimises: an `Objective` maps (batch, noise, time) to a loss.

The loop (train/trainer.py) owns everything around the loss: data order, the noise and
time of each step, distributed wrapping, the optimiser, checkpoints and logs. An objective
owns only the loss, and names the one `Policy` it trains (`objective.policy`). Anything
else it holds (a frozen teacher, a fixed projection) is frozen: the trainer moves it to
the device with the objective, but never wraps it in DDP/FSDP, never hands it to the
optimiser, never checkpoints it, and keeps it in eval mode.

The teacher's flow-matching loss is `FlowMatchingObjective`. The distiller's
three-term loss (task + output + attention, a frozen teacher on the same noise and time)
is another objective on the same loop.

Axes: B batch (this process's share), C action chunk length, A padded action dims.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from shallowpi.policy.config import PolicyConfig
from shallowpi.policy.policy import Policy


@dataclass
class LossTerms:
    """One step's loss on this process's share of the batch.

    total: scalar, differentiable; a *sum* over `count` elements (the trainer divides by the
        count summed over every process, so N processes step exactly like one).
    count: scalar, how many elements `total` sums (e.g. non-padded action values).
    terms: named parts for logging, each a sum over the same `count` elements (a term
        whose natural count differs rescales itself: its mean times `count`); logged as
        term / global count. May be empty.
    """

    total: Tensor
    count: Tensor
    terms: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class NoiseSpec:
    """Shape of the flow-matching noise and distribution of the time of one step.

    noise: [B, chunk_len, action_dim] standard normal. time: Beta(alpha, beta) * scale +
    offset, in (0, 1]. Two objectives with equal specs draw equal noise and time for the
    same (seed, step): a student and its teacher see the same draws.

    The defaults (PolicyConfig: Beta(1.5, 1) * 0.999 + 0.001, t = 1 pure noise) are π0's
    time distribution, weighted toward the noisy end (Black et al. 2024, "π0: A
    Vision-Language-Action Flow Model"; openpi's `Pi0.compute_loss`).
    """

    chunk_len: int
    action_dim: int
    beta_alpha: float
    beta_beta: float
    scale: float
    offset: float

    @classmethod
    def of(cls, cfg: PolicyConfig) -> NoiseSpec:
        """The spec a policy's config implies (chunk, action size, `time_*` settings)."""
        return cls(cfg.chunk_len, cfg.action_dim, cfg.time_beta_alpha, cfg.time_beta_beta,
                   cfg.time_scale, cfg.time_offset)


class Objective(nn.Module):
    """A loss over a trained `Policy` (`self.policy`) and any frozen modules beside it.

    Subclasses implement `loss`, and freeze whatever else they hold in their `__init__`
    (`freeze(module)`); the trainer refuses an objective with a trainable parameter outside
    `self.policy`.
    """

    policy: Policy

    def __init__(self, policy: Policy) -> None:
        super().__init__()
        self.policy = policy

    def noise_spec(self) -> NoiseSpec:
        """The noise and time every step draws (from the trained policy's config)."""
        return NoiseSpec.of(self.policy.cfg)

    def loss(self, model: nn.Module, batch: dict[str, Any], noise: Tensor, t: Tensor) -> LossTerms:
        """The step's loss. `model` is `self.policy` as the trainer runs it (inside DDP, or
        sharded by FSDP): call `model(batch, noise, t, ...)` for the trained policy's
        forward, never `self.policy` directly, or gradients are not synchronised.

        batch: a ChunkDataset batch on the device; noise [B, C, A]; t [B]. Raises nothing of
        its own; a non-finite loss is the trainer's to report.
        """
        raise NotImplementedError

    def frozen_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """Direct children other than the trained policy (named as attributes)."""
        for name, child in self.named_children():
            if child is not self.policy:
                yield name, child

    def train(self, mode: bool = True) -> Objective:
        """Train mode reaches the trained policy only; frozen modules stay in eval mode."""
        self.training = mode
        self.policy.train(mode)
        for _, child in self.frozen_modules():
            child.eval()
        return self


def freeze(module: nn.Module) -> nn.Module:
    """No gradients and eval mode: a module an objective uses but never trains."""
    module.requires_grad_(False)
    return module.eval()


class FlowMatchingObjective(Objective):
    """The π0 teacher's loss: squared error of the predicted velocity (noise - action),
    summed over real action dims and non-padded steps (`Policy.loss_terms`)."""

    def loss(self, model: nn.Module, batch: dict[str, Any], noise: Tensor, t: Tensor) -> LossTerms:
        """`model(batch, noise, t)`: the summed squared velocity error and its element count;
        logged as the `flow_matching` term."""
        total, count = model(batch, noise, t)
        return LossTerms(total, count, {"flow_matching": total.detach()})


def step_noise(step: int, seed: int, batch: int, spec: NoiseSpec) -> tuple[Tensor, Tensor]:
    """The noise [batch, C, A] and time [batch] of global step `step`, for the whole global
    batch (each process takes its rows). A pure function of (seed, step, batch, spec):
    history never enters, so resumed and multi-process runs draw what a straight run draws."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    noise = torch.randn(batch, spec.chunk_len, spec.action_dim, generator=gen)
    beta = np.random.default_rng([seed, step, 7]).beta(spec.beta_alpha, spec.beta_beta, batch)
    t = torch.as_tensor(beta * spec.scale + spec.offset, dtype=torch.float32)
    return noise, t
