"""Where ONNX Runtime put a graph's nodes: the execution provider each was assigned to.

A session given several providers (TensorRT, then CUDA, then the CPU on a Jetson) splits
the graph when it is created: each provider takes the nodes it supports and the rest go to
the next. TensorRT builds one engine per run of nodes it took, so a node it lacks in the
middle of the graph cuts the engine in two, and nothing but the chunk's latency shows it
(onnxruntime warns only of nodes left to the CPU, without naming them). Sessions made with
the config entry `session.record_ep_graph_assignment_info` (`RECORD_ASSIGNMENT`) report
the assignment (`InferenceSession.get_provider_graph_assignment_info`, in recent
onnxruntime releases): one subgraph per engine of a compiling provider such as TensorRT,
one per node of a kernel provider such as the CPU's, each with its nodes' op types. It is
taken after the basic graph optimisations, before a provider compiles anything, and costs
nothing at run time.

No torch here; the sessions are passed in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

RECORD_ASSIGNMENT = "session.record_ep_graph_assignment_info"
NAMED_OPS = 3  # op types a line names for the nodes off the first provider


@dataclass(frozen=True)
class ProviderShare:
    """The nodes one provider was given: how many, in how many subgraphs (a compiling
    provider's engines), and their op types, most frequent first."""

    provider: str
    nodes: int
    subgraphs: int
    ops: tuple[str, ...]

    @property
    def short_name(self) -> str:
        """'Tensorrt', 'CUDA', 'CPU': the provider's name as runs_on writes it."""
        return self.provider.removesuffix("ExecutionProvider")


@dataclass(frozen=True)
class Placement:
    """A bundle's nodes by provider, most nodes first, over `graphs` graphs (a split bundle's
    prefix and step: two, so two engines are one a graph)."""

    shares: tuple[ProviderShare, ...]
    graphs: int = 1

    @property
    def nodes(self) -> int:
        """Every node of the bundle's graphs, all providers together."""
        return sum(s.nodes for s in self.shares)

    def share(self, provider: str) -> ProviderShare | None:
        """`provider`'s share, None when it was given no node."""
        return next((s for s in self.shares if s.provider == provider), None)

    def line(self, provider: str) -> str:
        """What is not plain about `provider`'s hold on the graph, '' when it has every node
        in one subgraph (or, a kernel provider, every node): e.g. 'Tensorrt in 3 engines; 3 of
        41 nodes on CPU (NonZero, ScatterND)', one clause for the first provider's engines
        and one for each other provider."""
        clauses = []
        first = self.share(provider)
        if first is not None and provider == "TensorrtExecutionProvider" and first.subgraphs > self.graphs:
            over = f" over {self.graphs} graphs" if self.graphs > 1 else ""
            clauses.append(f"{first.short_name} in {first.subgraphs} engines{over}")
        for s in self.shares:
            if s.provider != provider:
                ops = ", ".join(s.ops[:NAMED_OPS]) + (", ..." if len(s.ops) > NAMED_OPS else "")
                clauses.append(f"{s.nodes} of {self.nodes} nodes on {s.short_name} ({ops})")
        return "; ".join(clauses)


def placement_of(subgraphs: Iterable[tuple[str, Sequence[str]]], graphs: int = 1) -> Placement:
    """(provider, its op types) for every assigned subgraph of `graphs` graphs -> the nodes
    by provider."""
    nodes: Counter[str] = Counter()
    count: Counter[str] = Counter()
    ops: dict[str, Counter[str]] = {}
    for provider, op_types in subgraphs:
        count[provider] += 1
        nodes[provider] += len(op_types)
        ops.setdefault(provider, Counter()).update(op_types)
    shares = [ProviderShare(p, nodes[p], count[p], tuple(op for op, _ in ops[p].most_common())) for p in count]
    return Placement(tuple(sorted(shares, key=lambda s: (-s.nodes, s.provider))), graphs)


def session_placement(sessions: Sequence[Any]) -> Placement | None:
    """The placement of every node of `sessions` (made with RECORD_ASSIGNMENT set; a split
    bundle's prefix and step graphs count once each); None when this onnxruntime cannot say
    (a release before the assignment API, or sessions made without the entry)."""
    subgraphs: list[tuple[str, list[str]]] = []
    for session in sessions:
        assignment = getattr(session, "get_provider_graph_assignment_info", None)
        if assignment is None:
            return None
        try:
            assigned = assignment()
        except Exception:  # onnxruntime's Fail: the session was made without RECORD_ASSIGNMENT
            return None
        subgraphs += [(sub.ep_name, [node.op_type for node in sub.get_nodes()]) for sub in assigned]
    return placement_of(subgraphs, len(sessions)) if subgraphs else None
