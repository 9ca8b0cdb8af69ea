"""The student cut from the teacher: which layers (both towers), exact copies, refusals."""

from __future__ import annotations

import pytest
import torch

import shallowpi.policy.model as model_module
from distill_fixtures import batch_of, teacher_policy
from policy_fakes import FakeChunks
from shallowpi.distill.student import (
    Probe,
    build_student,
    check_student_depth,
    first_layers,
    greedy_layers,
    select_layers,
    uniform_layers,
)
from shallowpi.errors import ConfigError
from shallowpi.policy.weights import CheckpointError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _velocity(policy, batch, seed=0):
    inputs = policy.model_inputs(batch)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(inputs.actions.shape, generator=gen)
    t = torch.rand(inputs.actions.shape[0], generator=gen)
    with torch.no_grad():
        return policy.flow_outputs(inputs, noise, t).velocity


def test_uniform_is_the_papers_map():
    assert uniform_layers(18, 6) == [0, 3, 7, 10, 14, 17]
    assert uniform_layers(18, 18) == list(range(18))
    assert uniform_layers(18, 1) == [0]
    assert first_layers(18, 6) == [0, 1, 2, 3, 4, 5]


def test_all_layers_uniformly_kept_is_the_teacher():
    data = FakeChunks()
    teacher = teacher_policy(data, depth=4)
    student, surgery = build_student(teacher, uniform_layers(4, 4))
    batch = batch_of(data, [0, 7, 30])
    assert torch.equal(_velocity(student, batch), _velocity(teacher, batch))
    assert surgery.copied_params == surgery.teacher_params and surgery.dropped_params == 0
    assert student.action_mean is not None and (student.action_mean == teacher.action_mean).all()  # its baseline
    # No shared storage: training the student never moves the teacher.
    assert not {p.data_ptr() for p in student.parameters()} & {p.data_ptr() for p in teacher.parameters()}


@pytest.mark.parametrize("strategy, expected", [("uniform", [0, 2, 5]), ("first", [0, 1, 2])])
def test_both_towers_keep_the_selected_layers(strategy, expected):
    data = FakeChunks()
    teacher = teacher_policy(data, depth=6)
    kept, _ = select_layers(strategy, teacher.model, 3)
    assert kept == expected
    student, surgery = build_student(teacher, kept)
    assert student.cfg.vlm.depth == student.cfg.expert.depth == 3 and surgery.kept == expected
    for tower in ("vlm", "expert"):  # the released code remapped only the expert
        for j, i in enumerate(expected):
            ours = getattr(student.model, tower).layers[j].state_dict()
            theirs = getattr(teacher.model, tower).layers[i].state_dict()
            for name in theirs:
                assert torch.equal(ours[name], theirs[name]), f"{tower}.layers.{j}.{name} != teacher {i}"
    layer = sum(p.numel() for t in (teacher.model.vlm, teacher.model.expert) for p in t.layers[0].parameters())
    assert surgery.dropped_params == 3 * layer
    assert surgery.student_params == surgery.teacher_params - 3 * layer


def test_a_student_whose_vlm_keeps_the_first_layers_is_caught(monkeypatch):
    """The authors' released code: the expert remapped to [0, 2, 5], the VLM left at [0, 1, 2]."""
    data = FakeChunks()
    teacher = teacher_policy(data, depth=6)
    right = model_module.Pi0Model.keep_layers

    def buggy(self, indices):
        student = right(self, indices)
        first = right(self, list(range(len(indices))))
        student.vlm.load_state_dict(first.vlm.state_dict())
        return student

    monkeypatch.setattr(model_module.Pi0Model, "keep_layers", buggy)
    with pytest.raises(CheckpointError, match=r"student vlm.layers.1.* is not teacher layer 2's"):
        build_student(teacher, [0, 2, 5])


def test_a_teacher_in_mixed_precision_is_cut_without_rounding_its_float32_weights():
    """After cast_towers the towers are bf16 and the state/action/time projections float32;
    the student keeps each weight's dtype (and value) as the teacher holds it."""
    teacher = teacher_policy(FakeChunks(), depth=4)
    teacher.model.cast_towers(torch.bfloat16)
    student, _ = build_student(teacher, [0, 3])
    dtypes = {name: t.dtype for name, t in teacher.state_dict().items()}
    assert {torch.bfloat16, torch.float32} <= set(dtypes.values())
    for name, tensor in student.state_dict().items():
        if ".layers." not in name:
            assert tensor.dtype == dtypes[name], name


def test_greedy_drops_the_layer_that_changes_nothing_first():
    data = FakeChunks()
    teacher = teacher_policy(data, depth=4)
    with torch.no_grad():  # joint layer 2 adds nothing to either residual stream
        for tower in (teacher.model.vlm, teacher.model.expert):
            tower.layers[2].o_proj.weight.zero_()
            tower.layers[2].mlp.down_proj.weight.zero_()
    inputs = teacher.model_inputs(batch_of(data, list(range(0, 120, 10))))
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(inputs.state.shape[0], generator=gen)
    x_t = torch.randn(inputs.actions.shape, generator=gen)
    probe = Probe(teacher.embed(inputs), inputs.state, x_t, t, inputs.weights)
    kept, trace = greedy_layers(teacher.model, 2, probe)
    assert trace.dropped[0] == 2 and trace.mse[0] == pytest.approx(0.0, abs=1e-10)
    assert len(kept) == 2 and 2 not in kept and trace.mse[1] > 0
    assert select_layers("greedy", teacher.model, 2, probe)[0] == kept


def test_student_depths_out_of_range_are_refused_in_one_line():
    data = FakeChunks()
    teacher = teacher_policy(data, depth=4)
    for k in (0, 4, 7):
        with pytest.raises(ConfigError, match=rf"keeps 1 to 3 of the teacher's 4 layers, got distill.layers={k}"):
            select_layers("uniform", teacher.model, k)
    with pytest.raises(ConfigError, match="choose one of: uniform, first, greedy"):
        select_layers("random", teacher.model, 2)
    with pytest.raises(ConfigError, match="needs probe windows"):
        select_layers("greedy", teacher.model, 2)
    with pytest.raises(ConfigError, match=r"increasing, unique and in 0-3"):
        build_student(teacher, [2, 1])
    check_student_depth(18, 6)
