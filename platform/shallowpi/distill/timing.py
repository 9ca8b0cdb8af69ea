"""Action chunks of several policies timed so that their latencies compare.

On a shared CPU the load comes and goes over seconds. Timed in blocks (every chunk of the
teacher, then every chunk of the student) the load of one stretch falls on one model only,
and the ratio of the two medians followed the machine, not the models: a distillation
report measured its student at 1.455x the teacher's time against a FLOP-ideal 0.52, and
four reruns gave 0.57, 0.71, 1.71 and 0.86. Here the models take turns, one chunk each a
round, so a busy stretch falls on every model alike (the same four reruns interleaved:
0.63, 0.76, 0.89, 0.67). The distillation report, `platform demo`'s summary and
tools/bench (chunk_timing.py, latency_ratio.py, reproduce.py) all time chunks here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch

from shallowpi.policy.policy import Policy


def interleaved_chunk_times(models: Mapping[str, Policy], observation: Mapping[str, Any],
                            rounds: int) -> dict[str, list[float]]:
    """Seconds of each model's chunk on `observation`: {name: `rounds` times}, from `rounds`
    rounds of one chunk a model, in the order of `models` (from zero noise, so every round
    computes the same chunk). Warm the models up first (`distill.report.chunk_costs` does,
    as it counts their FLOPs): a first chunk pays for allocations no later one does."""
    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(rounds):
            for name, policy in models.items():
                noise = torch.zeros(1, policy.cfg.chunk_len, policy.cfg.action_dim)
                start = time.perf_counter()
                policy.sample_actions(observation, noise=noise)
                times[name].append(time.perf_counter() - start)
    return times
