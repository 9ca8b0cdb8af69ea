"""The distillation loss: task + output distillation + attention distillation (Shallow-π).

On one step's shared draws (noise and time from train/objective.step_noise, so student and
teacher see the same x_t = t * noise + (1 - t) * actions):

    task       sum (v_S - (noise - actions))^2     the flow-matching target, as the teacher trained
    output     sum (v_S - v_T)^2                    the frozen teacher's velocity on the same x_t, t
    attention  KL(p_T || p_S), per action query and head, averaged; p = the action queries'
               attention over the vision-language keys (Pi0Model.velocity_with_attention)
               at paired layers (student layer s matches teacher layer t, from the config)

Squared errors sum over the real action dims of non-padded steps (the count the trainer
divides by); the attention term is its mean KL over the non-padded steps' queries times
that count, so every term is on the per-element scale the logs show. Each term has a
weight; weight 0 switches it off (it is
not computed, and with output and attention both off the teacher does not run at all:
the task-only ablation is plain training of the student). Only the action queries'
attention is distilled: the paper reports that distilling every token's attention
collapsed training.

The teacher runs once per step, in eval mode, without gradients, on the same prepared
inputs as the student (images resized and text tokenised once: `Policy.model_inputs`);
only its prefix embedding is its own, since the student's vision encoder trains. With the
output term off, the teacher stops at its last paired attention layer.

`teacher_fraction` < 1 runs the teacher on the batch's first samples only (rounded up) and
takes the output and attention terms over those, rescaled to the whole batch's count: the
teacher's forward, which costs about what the student's forward and backward do, shrinks
with it (BENCHMARKS.md "Distillation" (a)). A recipe change of this platform's, not the
paper's: 1.0 (every sample) is the default.

`teacher_only` episodes (the ones marked failed, with distill.failed_episodes=teacher) train
the student through the output and attention terms only: the teacher's velocity there is a
target, their recorded actions (a demonstration that missed) are not. The task term is then
the squared error over this process's other samples, rescaled to its share's count (as the
teacher's terms are under `teacher_fraction`). It needs `teacher_fraction` 1: samples past
the teacher's share would train nothing. Also this platform's change, not the paper's:
output distillation can use states the task loss must not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from shallowpi.errors import ConfigError
from shallowpi.policy.policy import FlowOutputs, Policy
from shallowpi.policy.weights import CheckpointError
from shallowpi.train.objective import LossTerms, Objective, freeze

TERMS = ("task", "output", "attention")


def check_teacher_fraction(fraction: float) -> float:
    """`fraction` if it is a share of a batch, (0, 1]; else ConfigError (one line)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"distill.teacher_fraction must be in (0, 1], got {fraction}")
    return fraction


@dataclass
class LossWeights:
    """Weight of each term; 0 switches a term off."""

    task: float = 1.0
    output: float = 1.0
    attention: float = 1.0

    def __post_init__(self) -> None:
        for name in TERMS:
            value = getattr(self, name)
            if not value >= 0.0:  # also refuses NaN
                raise ConfigError(f"distill.weights.{name} must be >= 0, got {value}")
            setattr(self, name, float(value))  # an override's `0` is recorded as 0.0, like the preset's
        if not any(getattr(self, n) for n in TERMS):
            raise ConfigError("every distill.weights term is 0; switch at least one on")

    def to_dict(self) -> dict[str, float]:
        """The three weights as {term: weight}."""
        return asdict(self)


@dataclass
class AttentionPairs:
    """Which teacher layer each distilled student layer matches: {student: teacher}."""

    pairs: dict[int, int] = field(default_factory=dict)

    @classmethod
    def default(cls, kept: list[int]) -> AttentionPairs:
        """One middle student layer, paired with the teacher layer it was copied from."""
        s = len(kept) // 2
        return cls({s: kept[s]})

    @classmethod
    def from_config(cls, value: Any, kept: list[int]) -> AttentionPairs:
        """null -> default; else [[student, teacher], ...]."""
        if value is None:
            return cls.default(kept)
        try:
            listed = [(int(s), int(t)) for s, t in value]
        except (TypeError, ValueError):
            raise ConfigError(f"distill.attention_pairs must be [[student_layer, teacher_layer], ...], got {value}") from None
        students = [s for s, _ in listed]
        if len(set(students)) != len(students):
            raise ConfigError(f"distill.attention_pairs pairs a student layer twice: {value}; one teacher layer each")
        return cls(dict(listed))

    def check(self, student_depth: int, teacher_depth: int) -> None:
        """ConfigError (one line) when there is no pair (the attention term would have
        nothing to distill: switch it off with distill.weights.attention=0) or a pair lies
        outside either model's layers."""
        if not self.pairs:
            raise ConfigError("distill.attention_pairs is empty; pair a layer ([[3, 10]]) or switch the attention "
                              "term off with distill.weights.attention=0")
        for s, t in self.pairs.items():
            if not 0 <= s < student_depth:
                raise ConfigError(
                    f"attention layer {s} is outside the student's layers 0-{student_depth - 1}; "
                    "fix distill.attention_pairs"
                )
            if not 0 <= t < teacher_depth:
                raise ConfigError(
                    f"attention layer {t} is outside the teacher's layers 0-{teacher_depth - 1}; "
                    "fix distill.attention_pairs"
                )

    @classmethod
    def check_config(cls, value: Any, attention_weight: float, student_depth: int, teacher_depth: int) -> None:
        """`check` on distill.attention_pairs before anything is trained or searched for it
        (the teacher's training, the greedy selection's hours): ConfigError in one line.
        Nothing to check when the term is off or the pairs are the default (null)."""
        if attention_weight and value is not None:
            cls.from_config(value, []).check(student_depth, teacher_depth)

    def to_list(self) -> list[list[int]]:
        """The pairs as [[student, teacher], ...], sorted by student layer (the config's form)."""
        return [[s, t] for s, t in sorted(self.pairs.items())]


def attention_kl(teacher: Tensor, student: Tensor) -> Tensor:
    """KL(teacher || student) per row: probabilities [..., P] -> [...]. Keys both give
    probability 0 (padding) add nothing; a student probability below 1e-30 where the
    teacher's is not is clamped there (a large, finite penalty rather than inf, but one
    without a gradient: float32 softmax reaches it only at logit gaps above ~69)."""
    t = teacher.float()
    log_t = t.clamp_min(1e-30).log()
    log_s = student.float().clamp_min(1e-30).log()
    return (t * (log_t - log_s)).sum(-1)


class DistillationObjective(Objective):
    """Student (`self.policy`, trained) against a frozen teacher (`self.teacher`; None in the
    task-only ablation, which never runs it).

    `teacher_only`: store episode indices (matched against the batch's `episode_index` [B])
    whose samples skip the task term (module docstring).

    Raises CheckpointError when the two policies read different features, normalise with
    different statistics or differ in any model setting but their depth (the shared
    prepared inputs would be wrong for one of them), and ConfigError for missing attention
    pairs or one outside either model (when the attention term is on), or `teacher_only`
    episodes with neither teacher term on or with `teacher_fraction` < 1.
    """

    def __init__(self, student: Policy, teacher: Policy, weights: LossWeights, pairs: AttentionPairs,
                 teacher_fraction: float = 1.0, teacher_only: Iterable[int] = ()) -> None:
        super().__init__(student)
        self.teacher_fraction = check_teacher_fraction(teacher_fraction)
        self.teacher_only = sorted({int(e) for e in teacher_only})
        if self.teacher_only and not (weights.output or weights.attention):
            raise ConfigError("episodes taught by the teacher alone need the output or attention term; both are off")
        if self.teacher_only and self.teacher_fraction < 1.0:
            raise ConfigError("episodes taught by the teacher alone need distill.teacher_fraction=1; "
                              "samples past the teacher's share would train nothing")
        if student.features != teacher.features:
            raise CheckpointError(
                f"student features {student.features} differ from the teacher's {teacher.features}; "
                "build the student from this teacher (distill.student.build_student)"
            )
        for a, b in ((student.state_norm, teacher.state_norm), (student.action_norm, teacher.action_norm)):
            if not all(torch.equal(x, y.to(x.device)) for x, y in zip(a.buffers(), b.buffers())):
                raise CheckpointError("student and teacher normalise with different statistics; copy the teacher's")
        # The teacher reads the student's prepared inputs (tokens, crops, sizes) and its velocity
        # is compared with the student's: every model setting but the depth must agree.
        same_shape = teacher.cfg.with_depth(student.cfg.depth)
        differ = [f.name for f in dataclasses.fields(same_shape)
                  if getattr(student.cfg, f.name) != getattr(same_shape, f.name)]
        if differ:
            key = differ[0]
            raise CheckpointError(f"the student's policy.{key} is {getattr(student.cfg, key)!r}, the teacher's "
                                  f"{getattr(teacher.cfg, key)!r}; build the student from this teacher "
                                  "(distill.student.build_student)")
        if weights.attention:
            pairs.check(student.cfg.depth, teacher.cfg.depth)
        self.weights, self.pairs = weights, pairs
        # The task-only ablation never runs the teacher, so it does not hold one: the trainer
        # would move it to the device (at π0 size ~13 GB of accelerator memory) for nothing.
        self.teacher: Policy | None = freeze(teacher) if self.uses_teacher else None

    @property
    def uses_teacher(self) -> bool:
        """True when the output or attention term is on, so the teacher runs each step."""
        return bool(self.weights.output or self.weights.attention)

    def loss(self, model: nn.Module, batch: dict[str, Any], noise: Tensor, t: Tensor) -> LossTerms:
        """The weighted sum of the task, output and attention terms (module docstring).

        noise [B, C, A] and t [B] are shared by student and teacher. The squared errors sum over
        non-padded action elements; the attention term is its mean KL times that count. Terms
        with weight 0 are not computed; the teacher runs only when `uses_teacher`.
        """
        w = self.weights
        inputs = self.policy.model_inputs(batch)
        student_layers = list(self.pairs.pairs) if w.attention else []
        out: FlowOutputs = model(inputs, noise, t, attention_layers=student_layers)
        weights = out.weights  # [B, C, A]
        count = weights.sum()
        terms: dict[str, Tensor] = {}
        if w.task:
            task = (out.velocity - out.target).square() * weights
            if self.teacher_only:
                demonstrated = ~torch.isin(batch["episode_index"].to(weights.device),
                                           torch.tensor(self.teacher_only, device=weights.device))  # [B]
                task = task * demonstrated[:, None, None]
                terms["task"] = task.sum() * (count / (weights * demonstrated[:, None, None]).sum().clamp(min=1.0))
            else:
                terms["task"] = task.sum()
        if self.uses_teacher:
            m = math.ceil(self.teacher_fraction * len(t))  # the samples the teacher sees: the first m
            teacher_out = self._teacher(inputs if m == len(t) else inputs.first(m), noise[:m], t[:m])
            seen = weights[:m].sum()
            if w.output:
                assert teacher_out.velocity is not None
                output = ((out.velocity[:m] - teacher_out.velocity).square() * weights[:m]).sum()
                terms["output"] = output * (count / seen.clamp(min=1.0))  # on the whole batch's scale
            if w.attention:
                # The queries of padded steps (past the episode's end) are left out, as the
                # squared errors leave them out.
                real = (weights[:m] > 0).any(-1).float()  # [m, C]
                kl = torch.stack([
                    attention_kl(teacher_out.attention[tl], out.attention[sl][:m]).mean(1)  # [m, C], heads averaged
                    for sl, tl in self.pairs.pairs.items()
                ]).mean(0)  # [m, C]
                mean_kl = (kl * real).sum() / real.sum().clamp(min=1.0)
                terms["attention"] = mean_kl * count  # its mean on the others' scale
        total = sum(getattr(w, name) * value for name, value in terms.items())
        assert isinstance(total, Tensor)
        if not (w.task or w.output):
            # Attention alone reaches no weight above the paired layer; DDP would wait for
            # their gradients forever. A zero through the velocity gives them exact zeros.
            total = total + 0.0 * out.velocity.sum()
        return LossTerms(total, count, {name: value.detach() for name, value in terms.items()})

    @torch.no_grad()
    def _teacher(self, inputs, noise: Tensor, t: Tensor) -> FlowOutputs:
        assert self.teacher is not None  # loss() calls this only when uses_teacher
        layers = list(self.pairs.pairs.values()) if self.weights.attention else []
        # Attention alone needs no teacher velocity: its layers above the last paired one do not run.
        return self.teacher.flow_outputs(inputs, noise, t, attention_layers=layers, velocity=bool(self.weights.output))
