"""Offline evaluation: action error on held-out episodes against a mean-action baseline.

For each evaluated sample the policy predicts a chunk from the observation (fixed noise
seed, so two evaluations of one checkpoint agree); the error is taken in the robot's units
over the non-padded steps. The baseline predicts, at every step, the training set's mean
action (`Policy.action_mean`, kept in the checkpoint): a policy that learned nothing from
the observation scores about the same. A checkpoint written before that was kept uses its
normaliser's centre under mean/std scaling (the same mean), and under min-max falls back to
the mean action of the evaluated samples themselves (a slightly stronger constant: it has
seen them), and the report says so. Never the normaliser's centre: under min-max
scaling that is the middle of the action range, a weaker baseline that flattered the ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from shallowpi.policy.policy import Policy


@dataclass
class EvalReport:
    """Action error of a policy on held-out samples, against predicting the mean action.

    MAE/MSE are per action element in robot units (rad, m, gripper 0..1), over the real
    (not padded) steps of each chunk; the baseline always predicts one mean action, the
    training set's or, for an old checkpoint, the evaluated samples' (`baseline` says which).
    """

    samples: int
    policy_mae: float
    policy_mse: float
    baseline_mae: float
    baseline_mse: float
    # What the samples are, said plainly: "held-out episodes [14, 15]", or "training
    # episodes [0] (no held-out episodes)" when the policy has seen them.
    data: str = "evaluated episodes"
    baseline: str = "training mean action"

    @property
    def ratio(self) -> float:
        """Policy MSE over baseline MSE: < 1 means better than predicting the mean."""
        return self.policy_mse / max(self.baseline_mse, 1e-12)

    def to_dict(self) -> dict[str, float | str]:
        """Every field and the MSE ratio, for JSON (reports written before 2026-12-01 lack
        `baseline`: they divided by the normaliser's centre)."""
        return {**asdict(self), "ratio": self.ratio}

    def table(self) -> str:
        """The report as text: samples, MAE and MSE of policy and baseline, and the MSE ratio."""
        return "\n".join(
            [
                f"{self.data}: {self.samples} samples",
                f"{'':18} {'MAE':>10} {'MSE':>10}",
                f"{'policy':18} {self.policy_mae:10.4f} {self.policy_mse:10.4f}",
                f"{'mean action':18} {self.baseline_mae:10.4f} {self.baseline_mse:10.4f}  ({self.baseline})",
                f"MSE ratio (policy / baseline) {self.ratio:.3f}",
            ]
        )


@torch.no_grad()
def evenly_spaced(n: int, count: int) -> list[int]:
    """Up to `count` distinct indices spread over range(n), first and last included. A
    stride of n // count cut to `count` took only the first ones whenever n < 2 x count
    (the offline evaluation, the distiller's probe and its report each did once)."""
    return torch.linspace(0, n - 1, min(n, count)).round().long().unique().tolist() if n else []


def evaluate(
    policy: Policy,
    dataset: Dataset,
    *,
    max_samples: int = 256,
    batch_size: int = 16,
    seed: int = 0,
    num_steps: int | None = None,
    data: str = "evaluated episodes",
) -> EvalReport:
    """Evaluate on up to `max_samples` evenly spaced samples of `dataset`; `data` names
    what they are in the report (held-out or training episodes)."""
    subset = Subset(dataset, evenly_spaced(len(dataset), max_samples))
    policy.eval()
    gen = torch.Generator().manual_seed(seed)
    sums = dict.fromkeys(("pa", "ps", "count"), 0.0)
    targets, valids = [], []  # kept for the baseline: 256 chunks of a few KB
    for batch in DataLoader(subset, batch_size=batch_size):
        B = batch["action"].shape[0]
        noise = torch.randn(B, policy.cfg.chunk_len, policy.cfg.action_dim, generator=gen)
        pred = policy.sample_actions(batch, noise=noise.to(policy.device), num_steps=num_steps).cpu()
        target = batch["action"].float()  # [B, C, A]
        valid = (~batch["action_is_pad"])[..., None].float().expand_as(target)
        C = min(pred.shape[1], target.shape[1])
        pred, target, valid = pred[:, :C], target[:, :C], valid[:, :C]
        err_p = pred - target
        sums["pa"] += (err_p.abs() * valid).sum().item()
        sums["ps"] += (err_p.square() * valid).sum().item()
        sums["count"] += valid.sum().item()
        targets.append(target.flatten(0, 1))
        valids.append(valid.flatten(0, 1))
    count = max(sums["count"], 1.0)
    target, valid = torch.cat(targets), torch.cat(valids)  # [N, A]
    if policy.action_mean is not None:
        mean, baseline = torch.as_tensor(policy.action_mean, dtype=target.dtype), "training mean action"
    elif policy.cfg.normalization != "minmax":  # an older checkpoint: its normaliser's centre is the mean
        mean, baseline = policy.action_norm.mean.cpu()[: target.shape[-1]], "training mean action"
    else:
        mean = (target * valid).sum(0) / valid.sum(0).clamp(min=1.0)
        baseline = "mean action of the evaluated samples (the checkpoint predates a stored training mean)"
    err_b = (mean - target) * valid
    return EvalReport(
        samples=len(subset),
        policy_mae=sums["pa"] / count,
        policy_mse=sums["ps"] / count,
        baseline_mae=err_b.abs().sum().item() / count,
        baseline_mse=err_b.square().sum().item() / count,
        data=data,
        baseline=baseline,
    )
