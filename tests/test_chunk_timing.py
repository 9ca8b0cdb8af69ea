"""tools/bench/chunk_timing.py: the teacher and its cuts, timed on torch and on ONNX Runtime."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench
from deploy_fixtures import tiny_checkpoint


@pytest.mark.slow
def test_the_onnx_chunk_graphs_compute_the_policys_chunk_and_count_less_for_a_cut(tmp_path):
    chunk_timing = load_bench("chunk_timing")
    models = chunk_timing.teacher_and_cuts(tiny_checkpoint(tmp_path / "teacher", depth=4), [4, 2])
    assert list(models) == ["teacher", "2"]  # the teacher's own depth is the teacher
    graphs = {name: chunk_timing.OnnxChunk(policy, tmp_path / "onnx" / name) for name, policy in models.items()}
    for graph in graphs.values():
        assert graph.max_abs_diff < 1e-4  # the exported graph computes the torch module's chunk
        assert graph().shape == (1, models["teacher"].cfg.chunk_len, models["teacher"].cfg.action_dim)
    # Half the joint layers: fewer FLOPs, more than half of them (vision and the input and
    # output projections stay).
    assert 0.5 < graphs["2"].flops / graphs["teacher"].flops < 1.0
    times = chunk_timing.interleaved_onnx_times(graphs, rounds=3)
    assert {name: len(t) for name, t in times.items()} == {"teacher": 3, "2": 3}
    assert all(t > 0 for ts in times.values() for t in ts)
