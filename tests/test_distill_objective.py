"""The distillation objective: three terms, each weighted and switchable, a frozen teacher
on the same draws, attention KL against an explicit softmax, NaN named by term."""

from __future__ import annotations

import pytest
import torch

import shallowpi.policy.model as model_module
from distill_fixtures import batch_of, teacher_policy
from policy_fakes import FakeChunks
from shallowpi.distill.objective import AttentionPairs, DistillationObjective, LossWeights
from shallowpi.distill.student import build_student
from shallowpi.errors import ConfigError
from shallowpi.policy.policy import Policy
from shallowpi.train.objective import step_noise
from shallowpi.train.trainer import TrainConfig, Trainer, TrainingError

pytestmark = pytest.mark.usefixtures("one_torch_thread")
KEPT = [0, 3]


def _objective(weights: LossWeights, pairs: dict[int, int] | None = None, data=None):
    data = data or FakeChunks()
    teacher = teacher_policy(data, depth=4)
    student, _ = build_student(teacher, KEPT)
    return DistillationObjective(student, teacher, weights, AttentionPairs(pairs or {1: 3})), data


def _grads(weights: LossWeights):
    objective, data = _objective(weights)
    objective.train()
    batch = batch_of(data, [0, 5, 22, 47])
    noise, t = step_noise(0, 0, 4, objective.noise_spec())
    out = objective.loss(objective.policy, batch, noise, t)
    out.total.backward()
    grads = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
                       for p in objective.policy.parameters()])
    assert all(p.grad is None for p in objective.teacher.parameters())
    return grads, out


def test_each_term_changes_the_gradient_and_weight_zero_removes_it():
    full, out = _grads(LossWeights(1.0, 1.0, 1.0))
    assert set(out.terms) == {"task", "output", "attention"}
    assert all(v > 0 for v in out.terms.values())
    total = sum(out.terms.values())
    torch.testing.assert_close(out.total.detach(), total)
    alone = {name: _grads(LossWeights(**{n: float(n == name) for n in ("task", "output", "attention")}))
             for name in out.terms}
    for name, (grad, terms) in alone.items():
        assert set(terms.terms) == {name}  # a weight-0 term is not even computed
        assert grad.abs().sum() > 0, name
        assert not torch.allclose(grad, full), name
    # The gradients add up: weight 0 removes exactly that term's share.
    torch.testing.assert_close(sum(g for g, _ in alone.values()), full, atol=1e-5, rtol=1e-4)
    without_attention, _ = _grads(LossWeights(1.0, 1.0, 0.0))
    torch.testing.assert_close(without_attention, alone["task"][0] + alone["output"][0], atol=1e-5, rtol=1e-4)
    # Weights scale their term.
    doubled, _ = _grads(LossWeights(0.0, 2.0, 0.0))
    torch.testing.assert_close(doubled, 2 * alone["output"][0], atol=1e-5, rtol=1e-4)


def _explicit_attend(record: list[torch.Tensor]):
    """Joint attention written out (einsum, kv heads repeated by hand), keeping every call's
    whole [B, h, T, T] probability matrix."""

    def attend(q, k, v, bias):
        h, kv = q.shape[1], k.shape[1]
        k = torch.cat([k[:, i // (h // kv)][:, None] for i in range(h)], dim=1)
        v = torch.cat([v[:, i // (h // kv)][:, None] for i in range(h)], dim=1)
        probs = torch.softmax(torch.einsum("bhqe,bhke->bhqk", q, k) / q.shape[-1] ** 0.5 + bias, dim=-1)
        record.append(probs)
        return torch.einsum("bhqk,bhke->bhqe", probs, v).transpose(1, 2).flatten(2)

    return attend


def test_the_attention_term_is_the_kl_of_the_explicit_softmax(monkeypatch):
    objective, data = _objective(LossWeights(0.0, 0.0, 1.0), pairs={0: 0, 1: 2})
    batch = batch_of(data, [1, 9, 33])
    noise, t = step_noise(3, 0, 3, objective.noise_spec())
    calls: list[torch.Tensor] = []
    monkeypatch.setattr(model_module, "attend", _explicit_attend(calls))
    with torch.no_grad():
        out = objective.loss(objective.policy, batch, noise, t)
    assert len(calls) == 2 + 4  # the student's layers, then the teacher's: one teacher pass
    P, C = objective.policy.cfg.prefix_len, objective.policy.cfg.chunk_len
    student, teacher = calls[:2], calls[2:]

    def over_prefix(full):  # the action queries' rows, renormalised over the prefix keys
        rows = full[:, :, -C:, :P]
        return rows / rows.sum(-1, keepdim=True)

    kls = []
    for s, t_layer in ((0, 0), (1, 2)):
        p_t, p_s = over_prefix(teacher[t_layer]), over_prefix(student[s])
        kl = torch.where(p_t > 0, p_t * (p_t.log() - p_s.log()), torch.zeros_like(p_t)).sum(-1)  # [B, h, C]
        kls.append(kl.mean(dim=(1, 2)))
    count = (~batch["action_is_pad"]).sum() * objective.policy.features.action_dim
    expected = torch.stack(kls).mean(0).mean() * count
    torch.testing.assert_close(out.terms["attention"], expected, atol=1e-5, rtol=1e-4)
    assert out.count == count


def test_output_distillation_compares_with_the_teacher_on_the_same_noisy_chunk():
    objective, data = _objective(LossWeights(0.0, 1.0, 0.0))
    batch = batch_of(data, [2, 3])
    noise, t = step_noise(1, 0, 2, objective.noise_spec())
    with torch.no_grad():
        out = objective.loss(objective.policy, batch, noise, t)
        teacher_v = objective.teacher.flow_outputs(objective.teacher.model_inputs(batch), noise, t).velocity
        student = objective.policy.flow_outputs(objective.policy.model_inputs(batch), noise, t)
    expected = ((student.velocity - teacher_v).square() * student.weights).sum()
    torch.testing.assert_close(out.terms["output"], expected)


def test_a_nan_loss_names_its_term(tmp_path):
    data = FakeChunks()
    teacher = teacher_policy(data, depth=4)
    student, _ = build_student(teacher, KEPT)
    with torch.no_grad():
        teacher.model.action_out_proj.weight.fill_(float("nan"))  # the velocity only, not attention
    objective = DistillationObjective(student, teacher, LossWeights(), AttentionPairs({1: 3}))
    cfg = TrainConfig(steps=2, batch_size=4, workers=0, progress=False, tensorboard=False, log_every=1)
    with pytest.raises(TrainingError, match=r"loss became nan at step 0 \(term output = nan\)"):
        Trainer(objective, data, cfg, tmp_path).fit()


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="attention layer 2 is outside the student's layers 0-1"):
        _objective(LossWeights(), pairs={2: 3})
    with pytest.raises(ConfigError, match="attention layer 4 is outside the teacher's layers 0-3"):
        _objective(LossWeights(), pairs={1: 4})
    with pytest.raises(ConfigError, match=r"every distill\.weights term is 0"):
        LossWeights(0.0, 0.0, 0.0)
    with pytest.raises(ConfigError, match=r"distill\.weights\.output must be >= 0"):
        LossWeights(1.0, -1.0, 0.0)
    assert AttentionPairs.from_config(None, [0, 3, 7, 10, 14, 17]).pairs == {3: 10}
    data = FakeChunks()
    other = Policy(teacher_policy(data).cfg, teacher_policy(FakeChunks(dims=3)).features)
    from shallowpi.policy.weights import CheckpointError
    with pytest.raises(CheckpointError, match="differ from the teacher's"):
        DistillationObjective(other, teacher_policy(data), LossWeights(), AttentionPairs({0: 0}))
