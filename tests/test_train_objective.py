"""The trainer runs any Objective: frozen modules inside one stay out of DDP/FSDP, the
optimiser and the checkpoints; every objective sees the same noise and time for a step."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from dist_checks import leave_group
from policy_fakes import FakeChunks
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.train.checkpoint import latest_checkpoint
from shallowpi.train.objective import (
    FlowMatchingObjective,
    LossTerms,
    Objective,
    freeze,
    step_noise,
)
from shallowpi.train.trainer import TrainConfig, Trainer, TrainingError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=2,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _policy(data, seed: int = 0) -> Policy:
    torch.manual_seed(seed)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    return policy


class Recording(FlowMatchingObjective):
    """Flow matching that keeps every (noise, time) it was given."""

    def __init__(self, policy: Policy) -> None:
        super().__init__(policy)
        self.draws: list[tuple[torch.Tensor, torch.Tensor]] = []

    def loss(self, model, batch, noise, t) -> LossTerms:
        self.draws.append((noise.cpu().clone(), t.cpu().clone()))
        return super().loss(model, batch, noise, t)


class WithFrozenTeacher(Objective):
    """A toy of the distiller's shape: the student's flow matching passed through a frozen
    module (gradients flow through it to the student), and a frozen teacher policy's loss on
    the same noise and time, logged as a term."""

    def __init__(self, student: Policy, teacher: Policy) -> None:
        super().__init__(student)
        self.teacher = freeze(teacher)
        self.scale = freeze(nn.Linear(1, 1))
        with torch.no_grad():
            self.scale.weight.fill_(1.0)
            self.scale.bias.zero_()
        self.teacher_modes: list[bool] = []

    def loss(self, model, batch, noise, t) -> LossTerms:
        total, count = model(batch, noise, t)
        scaled = self.scale(total.reshape(1, 1)).reshape(())
        teacher_total, _ = self.teacher.loss_terms(batch, noise, t)
        self.teacher_modes.append(self.teacher.training)
        return LossTerms(scaled, count, {"flow_matching": total.detach(), "teacher_flow": teacher_total.detach()})


def _frozen_state(objective: WithFrozenTeacher) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in objective.named_parameters() if not n.startswith("policy.")}


def _check_frozen_stayed_out(trainer: Trainer, before: dict[str, torch.Tensor]) -> None:
    from torch.distributed.fsdp import FSDPModule
    from torch.distributed.tensor import DTensor
    from torch.nn.parallel import DistributedDataParallel

    objective = trainer.objective
    assert isinstance(objective, WithFrozenTeacher)
    # Not wrapped: the loop's module is the policy (or DDP around exactly it) ...
    assert trainer.module is trainer.policy or (
        isinstance(trainer.module, DistributedDataParallel) and trainer.module.module is trainer.policy)
    # ... and the frozen modules are plain, whole modules on every process.
    for module in (objective.teacher, objective.scale):
        assert not isinstance(module, (DistributedDataParallel, FSDPModule))
        assert not any(isinstance(p, DTensor) for p in module.parameters())
    # Not seen by the optimiser, never changed, never put in train mode.
    optimised = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert optimised and not optimised & {id(p) for _, m in objective.frozen_modules() for p in m.parameters()}
    after = _frozen_state(objective)
    assert before.keys() == after.keys() and before
    for name in before:
        assert torch.equal(before[name], after[name]), name
    assert objective.teacher_modes and not any(objective.teacher_modes)
    assert objective.policy.training  # the student trained in train mode


def _run_with_teacher(run: Path, fsdp: bool = False, resume: bool = False) -> Trainer:
    data = FakeChunks()
    objective = WithFrozenTeacher(_policy(data), _policy(data, seed=1))
    before = _frozen_state(objective)
    trainer = Trainer(objective, data, _cfg(fsdp=fsdp), run, resume=resume)
    trainer.fit()
    _check_frozen_stayed_out(trainer, before)
    return trainer


def test_a_frozen_teacher_is_used_but_never_optimised_or_saved(tmp_path):
    trainer = _run_with_teacher(tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    for r in rows:  # the named terms are logged beside the loss; the loss is the scaled student term
        assert r["loss"] == pytest.approx(r["flow_matching"], rel=1e-5)
        assert r["teacher_flow"] > 0 and r["teacher_flow"] != pytest.approx(r["flow_matching"])
    # The checkpoint is the student alone: a Policy with exactly its weights.
    saved = Policy.load(latest_checkpoint(tmp_path))
    trained = trainer.policy.state_dict()
    assert saved.state_dict().keys() == trained.keys()
    for k, v in saved.state_dict().items():
        torch.testing.assert_close(v, trained[k].cpu(), msg=k)


def test_an_objective_with_a_trainable_module_outside_its_policy_is_refused(tmp_path):
    data = FakeChunks()

    class Loose(FlowMatchingObjective):
        def __init__(self, policy: Policy) -> None:
            super().__init__(policy)
            self.head = nn.Linear(2, 2)  # forgot freeze(): would silently never train

    with pytest.raises(TrainingError, match=r"trainable parameters outside its policy \(head.weight, head.bias\)"):
        Trainer(Loose(_policy(data)), data, _cfg(), tmp_path)


def test_noise_and_time_are_a_pure_function_of_seed_and_step(tmp_path):
    """Two objectives over two different models draw the same noise and time at every
    step, equal to step_noise(seed, step): a student and its teacher see the same draws."""
    data = FakeChunks()
    a, b = Recording(_policy(data, seed=0)), Recording(_policy(data, seed=5))
    Trainer(a, data, _cfg(), tmp_path / "a").fit()
    Trainer(b, data, _cfg(), tmp_path / "b").fit()
    assert len(a.draws) == len(b.draws) == 4
    for step, ((na, ta), (nb, tb)) in enumerate(zip(a.draws, b.draws)):
        assert torch.equal(na, nb) and torch.equal(ta, tb)
        noise, t = step_noise(step, 0, 4, a.noise_spec())
        assert torch.equal(na, noise) and torch.equal(ta, t)
    # Another seed, other draws; the same step twice, the same draws.
    assert not torch.equal(step_noise(1, 1, 4, a.noise_spec())[0], step_noise(1, 0, 4, a.noise_spec())[0])
    assert torch.equal(step_noise(3, 0, 4, a.noise_spec())[1], step_noise(3, 0, 4, b.noise_spec())[1])


def _teacher_worker(rank: int, world: int, run: str, port: int, fsdp: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    _run_with_teacher(Path(run), fsdp=fsdp)
    leave_group()


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_gloo_processes_leave_the_frozen_teacher_unwrapped(tmp_path, fsdp):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Each process asserts on its own trainer (an assertion fails the spawn).
    mp.spawn(_teacher_worker, args=(2, str(tmp_path), port, fsdp), nprocs=2, join=True)
    one = tmp_path / "one"
    _run_with_teacher(one)
    for x, y in zip(*(map(json.loads, (r / "metrics.jsonl").read_text().splitlines()) for r in (one, tmp_path))):
        assert x["loss"] == pytest.approx(y["loss"], rel=1e-4)
        assert x["teacher_flow"] == pytest.approx(y["teacher_flow"], rel=1e-4)
