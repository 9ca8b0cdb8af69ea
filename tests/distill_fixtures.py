"""A small teacher for distillation tests: the tiny preset at depth 4 (or any), every weight
perturbed so that each layer matters (RMSNorm scales start at 0)."""

from __future__ import annotations

import torch

from policy_fakes import FakeChunks
from shallowpi.policy import Features, Policy, load_preset


def teacher_policy(data: FakeChunks, depth: int = 4, seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    policy = Policy(load_preset("tiny").with_depth(depth), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    with torch.no_grad():
        for p in policy.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return policy.eval()


def batch_of(data: FakeChunks, indices: list[int]) -> dict:
    from torch.utils.data import default_collate

    return default_collate([data[i] for i in indices])
