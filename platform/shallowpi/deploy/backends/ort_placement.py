"""Where ONNX Runtime ran a graph's nodes: each kernel's execution provider in one profiled run.

A session given several providers (TensorRT, then CUDA, then the CPU on a Jetson) splits the
graph: each provider takes the nodes it supports and the rest go to the next one, without a
word. A node left on the CPU costs its inputs' copy off the GPU and its outputs' copy back
on every run, beside its own CPU time, and nothing but the chunk's latency shows it.
ONNX Runtime's profile (`SessionOptions.enable_profiling`, a Chrome trace) names the provider,
op type and duration of every kernel a run executed; this module reads one run out of it.

A provider's engine build (TensorRT's, with dynamic shapes, at the first run) counts as that
run's kernel time, so `run_placement` reads the session's last run, not its first.

No onnxruntime or torch here: the profile is JSON.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KERNEL_SUFFIX = "_kernel_time"  # a node's kernel event; its "_fence_before/after" events take no time
NAMED_OPS = 3  # op types a line names for the nodes off the first provider


@dataclass(frozen=True)
class ProviderShare:
    """The nodes one provider ran in one run: how many, their kernel time in microseconds, and
    their op types, most frequent first (a TensorRT subgraph is one node, op `TRTKernel_...`)."""

    provider: str
    nodes: int
    kernel_us: float
    ops: tuple[str, ...]


@dataclass(frozen=True)
class Placement:
    """One run's nodes by provider, most kernel time first."""

    shares: tuple[ProviderShare, ...]

    @property
    def nodes(self) -> int:
        return sum(s.nodes for s in self.shares)

    @property
    def kernel_us(self) -> float:
        return sum(s.kernel_us for s in self.shares)

    def off(self, provider: str) -> list[ProviderShare]:
        """The shares of every provider but `provider` (the one asked first)."""
        return [s for s in self.shares if s.provider != provider]

    def line(self, provider: str) -> str:
        """'' when every node ran on `provider`; else, e.g. '3 of 41 nodes on CPU (NonZero,
        ScatterND: 18 % of kernel time)', one clause a provider."""
        total_us = self.kernel_us or 1.0
        clauses = []
        for s in self.off(provider):
            ops = ", ".join(s.ops[:NAMED_OPS]) + (", ..." if len(s.ops) > NAMED_OPS else "")
            clauses.append(f"{s.nodes} of {self.nodes} nodes on {s.provider.removesuffix('ExecutionProvider')} "
                           f"({ops}: {100 * s.kernel_us / total_us:.0f} % of kernel time)")
        return "; ".join(clauses)


def placement_of(events: Iterable[Mapping[str, Any]]) -> Placement:
    """The kernel events of a profile (every "Node" event named `*_kernel_time`) by provider."""
    nodes: Counter[str] = Counter()
    time_us: Counter[str] = Counter()
    ops: dict[str, Counter[str]] = {}
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith(KERNEL_SUFFIX):
            continue
        args = event.get("args", {})
        provider = str(args.get("provider", "unknown"))
        nodes[provider] += 1
        time_us[provider] += float(event.get("dur", 0))
        ops.setdefault(provider, Counter())[str(args.get("op_name", "?"))] += 1
    shares = [ProviderShare(p, nodes[p], time_us[p], tuple(op for op, _ in ops[p].most_common())) for p in nodes]
    return Placement(tuple(sorted(shares, key=lambda s: (-s.kernel_us, -s.nodes, s.provider))))


def last_run(events: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The events of a profile's last `model_run` (by its start and duration, in microseconds);
    every event if the profile has no run."""
    runs = [e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"]
    if not runs:
        return list(events)
    start = max(float(e["ts"]) for e in runs)
    end = start + max(float(e.get("dur", 0)) for e in runs if float(e["ts"]) == start)
    return [e for e in events if start <= float(e.get("ts", -1)) <= end]


def run_placement(profiles: Mapping[str | Path, int]) -> Placement:
    """One chunk's placement: the last run of each session's profile, times the runs that
    session makes a chunk (a split bundle: its prefix graph once, its step graph once an
    Euler step; the chunk graph once)."""
    events: list[Mapping[str, Any]] = []
    for path, runs in profiles.items():
        events += last_run(json.loads(Path(path).read_text())) * runs
    return placement_of(events)
