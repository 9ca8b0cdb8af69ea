"""The distillation objective: three terms, each weighted and switchable, a frozen teacher
on the same draws, attention KL against an explicit softmax, NaN named by term."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import shallowpi.policy.model as model_module
from dist_checks import crash_traces, leave_group
from distill_fixtures import batch_of, teacher_policy
from policy_fakes import FakeChunks
from shallowpi.distill.objective import AttentionPairs, DistillationObjective, LossWeights
from shallowpi.distill.student import build_student
from shallowpi.errors import ConfigError
from shallowpi.policy.policy import Policy
from shallowpi.train.objective import NoiseSpec, step_noise
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
    if objective.uses_teacher:
        assert all(p.grad is None for p in objective.teacher.parameters())
    else:  # task alone: the teacher is not even held (nor moved to the device)
        assert objective.teacher is None and not any(n.startswith("teacher.") for n, _ in objective.named_parameters())
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


def test_a_teacher_fraction_runs_the_teacher_on_the_first_samples_only(monkeypatch):
    """teacher_fraction 0.5 of a batch of 4: the teacher sees samples 0-1; the output term is
    the squared error over those two, scaled to the batch's count; the task term is the
    whole batch's, unchanged. A fraction outside (0, 1] is refused."""
    objective, data = _objective(LossWeights(1.0, 1.0, 1.0))
    objective.teacher_fraction = 0.5
    seen = []
    teacher_forward = objective._teacher
    monkeypatch.setattr(objective, "_teacher", lambda inputs, noise, t: seen.append(len(t)) or teacher_forward(inputs, noise, t))
    batch = batch_of(data, [0, 5, 22, 47])
    noise, t = step_noise(0, 0, 4, objective.noise_spec())
    with torch.no_grad():
        half = objective.loss(objective.policy, batch, noise, t).terms
        inputs = objective.policy.model_inputs(batch)
        student = objective.policy.flow_outputs(inputs, noise, t)
        teacher = objective.teacher.flow_outputs(inputs.first(2), noise[:2], t[:2])
    assert seen == [2]
    weights = inputs.weights
    expected = ((student.velocity[:2] - teacher.velocity).square() * weights[:2]).sum() * weights.sum() / weights[:2].sum()
    torch.testing.assert_close(half["output"], expected, rtol=1e-4, atol=1e-6)
    objective.teacher_fraction = 1.0
    with torch.no_grad():
        whole = objective.loss(objective.policy, batch, noise, t).terms
    torch.testing.assert_close(half["task"], whole["task"])
    assert not torch.allclose(half["output"], whole["output"])
    with pytest.raises(ConfigError, match="teacher_fraction must be in"):
        DistillationObjective(objective.policy, objective.teacher, LossWeights(), AttentionPairs({1: 3}), 0.0)


def test_teacher_only_episodes_leave_the_task_term_and_keep_the_teachers_terms():
    """Samples of a teacher-only episode (a failed demonstration) add nothing to the task
    term, which is the others' squared error on the whole batch's scale; the output term is
    the whole batch's, as without them. Every sample teacher-only: no task term left."""
    objective, data = _objective(LossWeights(1.0, 1.0, 0.0))
    batch = batch_of(data, [0, 5, 22, 47])
    episodes = batch["episode_index"].tolist()
    failed = episodes[0]  # its samples, not the batch's others
    assert 0 < episodes.count(failed) < len(episodes)
    noise, t = step_noise(0, 0, 4, objective.noise_spec())
    skipping = DistillationObjective(objective.policy, objective.teacher, LossWeights(1.0, 1.0, 0.0),
                                     AttentionPairs({}), teacher_only=[failed])
    with torch.no_grad():
        whole = objective.loss(objective.policy, batch, noise, t).terms
        skipped = skipping.loss(objective.policy, batch, noise, t).terms
        inputs = objective.policy.model_inputs(batch)
        student = objective.policy.flow_outputs(inputs, noise, t)
    weights = inputs.weights
    taught = weights * torch.tensor([e != failed for e in episodes])[:, None, None]
    expected = ((student.velocity - student.target).square() * taught).sum() * weights.sum() / taught.sum()
    torch.testing.assert_close(skipped["task"], expected, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(skipped["task"], whole["task"])
    torch.testing.assert_close(skipped["output"], whole["output"])
    everyone = DistillationObjective(objective.policy, objective.teacher, LossWeights(1.0, 1.0, 0.0),
                                     AttentionPairs({}), teacher_only=episodes)
    with torch.no_grad():
        alone = everyone.loss(objective.policy, batch, noise, t).terms
    assert float(alone["task"]) == 0.0 and float(alone["output"]) > 0
    with pytest.raises(ConfigError, match="need the output or attention term"):
        DistillationObjective(objective.policy, objective.teacher, LossWeights(1.0, 0.0, 0.0), AttentionPairs({}),
                              teacher_only=[failed])
    with pytest.raises(ConfigError, match=r"need distill\.teacher_fraction=1"):
        DistillationObjective(objective.policy, objective.teacher, LossWeights(), AttentionPairs({1: 3}), 0.5,
                              teacher_only=[failed])


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
    batch = batch_of(data, [1, 19, 33])  # frame 19 of 20: its last three steps are padding
    assert batch["action_is_pad"].any()
    noise, t = step_noise(3, 0, 3, objective.noise_spec())
    calls: list[torch.Tensor] = []
    monkeypatch.setattr(model_module, "attend", _explicit_attend(calls))
    with torch.no_grad():
        out = objective.loss(objective.policy, batch, noise, t)
        # The student's 2 layers, then one teacher pass up to its last paired layer, 2, of
        # which only the queries and keys are computed (no output term: nothing above it).
        assert len(calls) == 2 + 2
        student = calls[:2]
        calls.clear()
        objective.teacher.flow_outputs(objective.policy.model_inputs(batch), noise, t)  # every layer, for reference
        teacher = list(calls)
    P, C = objective.policy.cfg.prefix_len, objective.policy.cfg.chunk_len

    def over_prefix(full):  # the action queries' rows, renormalised over the prefix keys
        rows = full[:, :, -C:, :P]
        return rows / rows.sum(-1, keepdim=True)

    kls = []
    for s, t_layer in ((0, 0), (1, 2)):
        p_t, p_s = over_prefix(teacher[t_layer]), over_prefix(student[s])
        kl = torch.where(p_t > 0, p_t * (p_t.log() - p_s.log()), torch.zeros_like(p_t)).sum(-1)  # [B, h, C]
        kls.append(kl.mean(1)[~batch["action_is_pad"]].mean())  # the padded steps' queries left out
    count = (~batch["action_is_pad"]).sum() * objective.policy.features.action_dim
    expected = torch.stack(kls).mean() * count
    torch.testing.assert_close(out.terms["attention"], expected, atol=1e-5, rtol=1e-4)
    assert out.count == count


def test_attention_maps_stay_float32_under_the_trainers_bf16_autocast():
    """The trainer runs the loss under bf16 autocast, which would round the attention
    logits (and so the maps the KL is taken of) to bf16 precision."""
    from shallowpi.policy.gemma import attention_probs

    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 4, 5, 16, generator=g) * 4, torch.randn(2, 2, 7, 16, generator=g) * 4
    bias = torch.zeros(2, 1, 5, 7)
    exact = attention_probs(q, k, bias)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = attention_probs(q, k, bias)
    assert under.dtype == torch.float32
    torch.testing.assert_close(under, exact, atol=1e-6, rtol=1e-5)


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
    # Named under the section the distiller trains by (policy.train.lr is overridden there).
    with pytest.raises(TrainingError, match=r"loss became nan at step 0 \(term output = nan\); check the data, "
                                            r"or lower distill\.train\.lr$"):
        Trainer(objective, data, cfg, tmp_path, settings="distill.train", init_flag=False).fit()


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
    # A student that tokenises or crops otherwise would hand the teacher wrong inputs.
    teacher = teacher_policy(data, depth=4)
    student, _ = build_student(teacher, KEPT)
    cropped = Policy(dataclasses.replace(student.cfg, crop_scale=0.5), student.features)
    cropped.load_state_dict(student.state_dict())  # the same weights and statistics: only the crop differs
    with pytest.raises(CheckpointError, match=r"the student's policy\.crop_scale is 0\.5, the teacher's 1\.0"):
        DistillationObjective(cropped, teacher, LossWeights(), AttentionPairs({1: 3}))
    with pytest.raises(ConfigError, match=r"distill\.attention_pairs is empty"):
        DistillationObjective(student, teacher, LossWeights(), AttentionPairs({}))
    DistillationObjective(student, teacher, LossWeights(1.0, 1.0, 0.0), AttentionPairs({}))  # no attention term: none needed
    with pytest.raises(ConfigError, match="pairs a student layer twice"):
        AttentionPairs.from_config([[1, 3], [1, 2]], KEPT)


def _distill_run(run: Path, fsdp: bool = False, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Trainer:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor

    objective, data = _objective(LossWeights(*weights))
    teacher_before = {k: v.clone() for k, v in objective.teacher.state_dict().items()}
    cfg = TrainConfig(steps=3, batch_size=4, lr=3e-3, warmup_steps=1, save_every=3, log_every=1, workers=0,
                      progress=False, tensorboard=False, fsdp=fsdp)
    trainer = Trainer(objective, data, cfg, run)
    trainer.fit()
    teacher = objective.teacher  # whole, plain and unchanged on every process
    assert not isinstance(teacher, FSDPModule) and not any(isinstance(p, DTensor) for p in teacher.parameters())
    assert not teacher.training
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, teacher_before[k]), k
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in teacher.parameters()}
    return trainer


def _distill_worker(rank: int, world: int, run: str, port: int, fsdp: bool, weights) -> None:
    crash_traces()
    import os

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _distill_run(Path(run), fsdp=fsdp, weights=weights)
    leave_group()


@pytest.mark.slow
@pytest.mark.parametrize("fsdp, weights", [(False, (1.0, 1.0, 1.0)), (True, (1.0, 1.0, 1.0)),
                                           (False, (0.0, 0.0, 1.0))], ids=["ddp", "fsdp", "ddp-attention-only"])
def test_two_gloo_processes_distill_like_one(tmp_path, fsdp, weights):
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_distill_worker, args=(2, str(tmp_path / "two"), port, fsdp, weights), nprocs=2, join=True)
    _distill_run(tmp_path / "one", weights=weights)
    one, two = ([json.loads(x) for x in (tmp_path / r / "metrics.jsonl").read_text().splitlines()]
                for r in ("one", "two"))
    assert len(one) == len(two) == 3
    for x, y in zip(one, two):
        assert x.keys() == y.keys()
        for key in {"loss", "task", "output", "attention"} & x.keys():
            assert x[key] == pytest.approx(y[key], rel=1e-4, abs=1e-7), (x["step"], key)
    # The checkpoints are the same student. Except the vision encoder's key biases: softmax
    # is shift-invariant, so their gradient is zero up to rounding, which Adam normalises
    # into full-size steps of either sign (the same in any run, but not across reductions).
    a = Policy.load(tmp_path / "one" / "checkpoints" / "step_000003").state_dict()
    b = Policy.load(tmp_path / "two" / "checkpoints" / "step_000003").state_dict()
    differ = [k for k in a if not torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4)]
    assert all(k.startswith("model.vision.layers.") and k.endswith("k_proj.bias") for k in differ), differ


def test_flow_outputs_reproduce_the_training_loss():
    """Policy.model_inputs + flow_outputs (what the distiller reads) compute exactly what
    loss_terms (what the teacher trained on) does."""
    data = FakeChunks()
    policy = teacher_policy(data, depth=2)
    batch = batch_of(data, [0, 19, 20, 41])  # 19 and 41: chunks running past the episode end
    noise, t = step_noise(2, 0, 4, NoiseSpec.of(policy.cfg))
    with torch.no_grad():
        total, count = policy.loss_terms(batch, noise, t)
        out = policy(policy.model_inputs(batch), noise, t, attention_layers=[])
    assert torch.equal(out.weights.sum(), count) and count < 4 * 4 * 2  # padded steps excluded
    torch.testing.assert_close(((out.velocity - out.target).square() * out.weights).sum(), total)
    assert out.weights[..., 2:].sum() == 0  # the padded action dims never count


def test_a_bad_teacher_fraction_is_refused_with_the_settings_before_any_teacher_trains():
    from shallowpi.distill.settings import DistillConfig

    for bad in (0.0, 1.5):
        with pytest.raises(ConfigError, match=r"distill\.teacher_fraction must be in"):
            DistillConfig(teacher_fraction=bad)
    assert DistillConfig(teacher_fraction=0.5).teacher_fraction == 0.5


def test_the_students_split_keeps_the_teachers_held_out_episodes_and_only_the_allowed_ones(tmp_path):
    import json

    from deploy_fixtures import tiny_checkpoint
    from shallowpi.distill.distiller import _split_of

    store = tmp_path / "s.zarr"
    store.mkdir()
    meta = {"dataset": str(store), "train": json.dumps([0, 1, 2, 3]), "held_out": json.dumps([4])}
    teacher = tiny_checkpoint(tmp_path / "teacher", meta=meta)
    tasks = {e: "bowl" if e < 5 else "push" for e in range(10)}
    split, note = _split_of(teacher, store, [0, 2, 3, 4], 0.1, tasks)  # episode 1 failed: successful_only left it out
    assert (split.train, split.held_out, note) == ([0, 2, 3], [4], "")
    # A teacher trained elsewhere: a fresh split, per task.
    other, _ = _split_of(teacher, tmp_path / "other.zarr", list(range(10)), 0.2, tasks)
    assert other.held_out == [4, 9] and not {4, 9} & set(other.train)


def test_a_teacher_trained_on_another_store_has_its_scenes_kept_out_of_the_students_held_out_episodes(tmp_path):
    """The same twin scenes (task and seed) recorded again in another store: the fresh
    split's held-out episode 4 is a scene the teacher trained on, so it moves to training
    and the report's note says so; a teacher that names no scenes (saved before they were
    recorded) is said to be unchecked. Held out, the teacher's offline error was on a scene
    it had learned."""
    import json

    from deploy_fixtures import tiny_checkpoint
    from shallowpi.distill.distiller import _split_of
    from shallowpi.train.finetune import Split
    from store_fixtures import make_store

    tasks = ["bowl"] * 5 + ["push"] * 5
    seeds = list(range(10))
    make_store(tmp_path / "taught.zarr", episodes=5, length=4, tasks=tasks[:5], scene_seeds=seeds[:5]).close()
    store = tmp_path / "new.zarr"
    make_store(store, episodes=10, length=4, seed=1, tasks=tasks, scene_seeds=seeds).close()
    taught = Split([0, 1, 2, 3, 4], []).scenes(tmp_path / "taught.zarr")  # bowl seeds 0-4
    assert Split([], []).scenes(store, [4]) == {4: taught[4]}  # the same scene, another recording
    assert Split([], []).scenes(store, [9])[9] not in taught.values()  # push, seed 9
    teacher = tiny_checkpoint(tmp_path / "teacher", meta={"scenes": json.dumps(sorted(taught.values()))})
    by_task = dict(enumerate(tasks))
    split, note = _split_of(teacher, store, seeds, 0.2, by_task)
    assert (split.held_out, 4 in split.train) == ([9], True)
    assert note == "episodes [4] not held out: the teacher trained on their scenes"
    # A run begun from the teacher (--init) has learned its scenes too: it records them.
    from shallowpi.train.finetune import scenes_of

    assert scenes_of(teacher) == sorted(taught.values()) and scenes_of(None) == []
    unnamed = tiny_checkpoint(tmp_path / "old-teacher", meta={})
    split, note = _split_of(unnamed, store, seeds, 0.2, by_task)
    assert split.held_out == [4, 9] and "names no training scenes: it may have trained on these scenes" in note
