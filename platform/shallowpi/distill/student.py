"""The student: k of the teacher's joint layers, in both towers, initialised from the teacher.

Joint layer i is `vlm.layers[i]` with `expert.layers[i]` (the expert's queries read the
VLM's keys of the same layer), so a student keeps one index set and applies it to both
towers; everything outside the layers (vision encoder, embeddings, projections, final
norms, normaliser statistics) is copied whole. The authors' released code (their openpi
fork of arXiv 2601.20262, as read for this project's issue 14) remaps only the expert's
layers, through a misplaced argument, leaving the VLM with the teacher's layers 0..k-1;
`build_student` checks, layer by layer and tower by tower, that every kept layer is the
teacher's, so that bug cannot pass silently.

Which layers (`select_layers`):
    uniform  round(linspace(0, L-1, k)), the paper's: 18 -> 6 keeps [0, 3, 7, 10, 14, 17]
    first    0 .. k-1 in both towers (what the released code keeps in the VLM only; an ablation)
    greedy   measured: drop, one at a time, the layer whose removal changes the teacher's
             velocity least on probe windows (training ones), until k remain; this project's
             method, in the spirit of layer-pruning by influence (ShortGPT, arXiv 2403.03853,
             scores layers one at a time; this one re-scores after each removal)

Axes as in policy/model.py: B batch, C chunk, A action dims.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from shallowpi.errors import ConfigError
from shallowpi.policy.model import Pi0Model, Prefix, count_parameters
from shallowpi.policy.policy import Policy
from shallowpi.policy.weights import CheckpointError

SELECTIONS = ("uniform", "first", "greedy")


# ----------------------------------------------------------------------------- which layers


def check_student_depth(depth: int, k: int) -> None:
    """Raise ConfigError unless 1 <= k < depth (a student as deep as its teacher is no cut)."""
    if not 1 <= k < depth:
        raise ConfigError(
            f"a student keeps 1 to {depth - 1} of the teacher's {depth} layers, got distill.layers={k}; "
            f"pick --layers between 1 and {depth - 1}"
        )


def uniform_layers(depth: int, k: int) -> list[int]:
    """np.round(np.linspace(0, depth - 1, k)), as the authors' code computes it (half to
    even, on linspace's floating-point values: 18 -> 6 keeps [0, 3, 7, 10, 14, 17])."""
    return [int(i) for i in np.round(np.linspace(0, depth - 1, k))]


def first_layers(depth: int, k: int) -> list[int]:
    """Layers 0 .. k-1, in both towers (an ablation)."""
    return list(range(k))


@dataclass
class Probe:
    """Fixed inputs on which a layer subset's velocity is compared with the full teacher's:
    the teacher's prefix (it depends on no joint layer), normalised state [B, state_dim], noisy
    chunk x_t [B, C, A], time t [B] and weights [B, C, A] (1 on real dims of real steps)."""

    prefix: Prefix
    state: Tensor
    x_t: Tensor
    t: Tensor
    weights: Tensor


@dataclass
class GreedyTrace:
    """What greedy selection measured: the layer dropped at each round and the velocity
    MSE (normalised units) of the remaining subset against the full teacher."""

    dropped: list[int] = field(default_factory=list)
    mse: list[float] = field(default_factory=list)


def layer_view(model: Pi0Model, indices: list[int]) -> Pi0Model:
    """A shallower model that *shares* the teacher's modules (no copy): its towers hold
    layers `indices` of `model`'s. For measuring subsets only; never train it."""
    view = copy.copy(model)
    view._modules = dict(model._modules)
    view.cfg = model.cfg.with_depth(len(indices))
    for name in ("vlm", "expert"):
        tower = copy.copy(getattr(model, name))
        tower._modules = dict(tower._modules)
        tower._modules["layers"] = nn.ModuleList(getattr(model, name).layers[i] for i in indices)
        tower.cfg = view.cfg.vlm if name == "vlm" else view.cfg.expert
        view._modules[name] = tower
    return view


@torch.no_grad()
def greedy_layers(model: Pi0Model, k: int, probe: Probe) -> tuple[list[int], GreedyTrace]:
    """Remove layers one at a time, each round the one whose removal moves the velocity on
    `probe` least (MSE against the full model); stop at k. Costs sum(L..k+1) forwards."""
    reference = model.velocity(probe.prefix, probe.state, probe.x_t, probe.t)  # [B, C, A]
    denom = probe.weights.sum().clamp(min=1.0)

    def error(indices: list[int]) -> float:
        v = layer_view(model, indices).velocity(probe.prefix, probe.state, probe.x_t, probe.t)
        return float(((v - reference).square() * probe.weights).sum() / denom)

    kept, trace = list(range(model.cfg.depth)), GreedyTrace()
    while len(kept) > k:
        scores = {i: error([j for j in kept if j != i]) for i in kept}
        drop = min(scores, key=scores.__getitem__)
        kept.remove(drop)
        trace.dropped.append(drop)
        trace.mse.append(scores[drop])
    return kept, trace


def select_layers(
    strategy: str, model: Pi0Model, k: int, probe: Probe | None = None
) -> tuple[list[int], GreedyTrace | None]:
    """The k joint layers a student keeps (increasing), and greedy's trace (else None).
    Raises ConfigError for an unknown strategy, k outside 1..depth-1, or greedy without
    a probe."""
    depth = model.cfg.depth
    if strategy not in SELECTIONS:
        raise ConfigError(f"unknown layer selection '{strategy}'; choose one of: {', '.join(SELECTIONS)}")
    check_student_depth(depth, k)
    if strategy == "uniform":
        return uniform_layers(depth, k), None
    if strategy == "first":
        return first_layers(depth, k), None
    if probe is None:
        raise ConfigError("greedy layer selection needs probe windows (training data); none were given")
    return greedy_layers(model, k, probe)


# ----------------------------------------------------------------------------- the surgery


@dataclass
class Surgery:
    """What `build_student` did: the teacher layers kept (student layer j = teacher layer
    kept[j], in both towers) and the parameter counts it checked."""

    kept: list[int]
    teacher_depth: int
    teacher_params: int
    student_params: int
    copied_params: int  # = student_params: every student weight comes from the teacher
    dropped_params: int  # the teacher's weights in the layers left out

    def summary(self) -> str:
        """One line: the layers kept and the parameters copied and dropped."""
        return (
            f"student keeps teacher layers {self.kept} of 0-{self.teacher_depth - 1} in both towers: "
            f"{self.copied_params:,} parameters copied, {self.dropped_params:,} dropped "
            f"({self.student_params / self.teacher_params:.1%} of the teacher's {self.teacher_params:,})"
        )


def _layer_params(model: Pi0Model, indices: list[int]) -> int:
    return sum(count_parameters(t.layers[i]) for t in (model.vlm, model.expert) for i in indices)


@torch.no_grad()
def build_student(teacher: Policy, kept: list[int]) -> tuple[Policy, Surgery]:
    """A Policy of depth len(kept) whose joint layer j is the teacher's layer kept[j] in the
    VLM and in the expert; every other weight and the normaliser statistics are copies.

    Shares no storage with the teacher. Raises ConfigError for indices that are not
    increasing, unique and within the teacher's depth (k = depth is allowed here: the
    identity cut, which must reproduce the teacher exactly), and CheckpointError when a
    copied weight is not the teacher's (the surgery checks itself).
    """
    depth = teacher.cfg.depth
    if not kept or list(kept) != sorted(set(kept)) or kept[0] < 0 or kept[-1] >= depth:
        raise ConfigError(f"student layers must be increasing, unique and in 0-{depth - 1}, got {kept}")
    cut = teacher.model.keep_layers(list(kept))  # strict load: every student tensor present, shapes equal
    student = Policy(teacher.cfg.with_depth(len(kept)), copy.deepcopy(teacher.features))
    student.to(teacher.device)
    student.model.load_state_dict(cut.state_dict(), strict=True, assign=True)  # dtypes as the teacher's
    student.state_norm.load_state_dict(teacher.state_norm.state_dict())
    student.action_norm.load_state_dict(teacher.action_norm.state_dict())
    student.action_mean = copy.deepcopy(teacher.action_mean)

    # Check, do not trust: each student layer, in both towers, is the teacher layer it names,
    # and everything outside the layers is the teacher's.
    # (Raised, not asserted: the check must survive `python -O`.)
    for tower in ("vlm", "expert"):
        for j, i in enumerate(kept):
            ours = getattr(student.model, tower).layers[j].state_dict()
            theirs = getattr(teacher.model, tower).layers[i].state_dict()
            for name, tensor in ours.items():
                if name not in theirs or tensor.shape != theirs[name].shape or not torch.equal(tensor, theirs[name]):
                    raise CheckpointError(f"student {tower}.layers.{j}.{name} is not teacher layer {i}'s")
    teacher_sd = teacher.state_dict()
    for name, tensor in student.state_dict().items():
        if ".layers." in name and name.split(".")[1] in ("vlm", "expert"):
            continue
        if not torch.equal(tensor, teacher_sd[name]):
            raise CheckpointError(f"student {name} differs from the teacher's (a weight outside the layers)")

    dropped = [i for i in range(depth) if i not in kept]
    report = Surgery(
        kept=list(kept),
        teacher_depth=depth,
        teacher_params=count_parameters(teacher),
        student_params=count_parameters(student),
        copied_params=count_parameters(student),
        dropped_params=_layer_params(teacher.model, dropped),
    )
    assert report.copied_params + report.dropped_params == report.teacher_params, report
    assert _layer_params(student.model, list(range(len(kept)))) == _layer_params(teacher.model, list(kept))
    return student, report
