"""Where ONNX Runtime ran a graph's nodes (deploy/backends/ort_placement.py): read from the
profile of a real session, one run of several, and named when they leave the first provider."""

from __future__ import annotations

import numpy as np
import pytest

from shallowpi.deploy.backends.ort_placement import placement_of, run_placement

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'shallowpi[export]'")


def _kernel(op: str, provider: str, dur_us: float, ts: float = 0.0) -> dict:
    return {"cat": "Node", "name": f"{op}_kernel_time", "ts": ts, "dur": dur_us,
            "args": {"op_name": op, "provider": provider}}


def test_a_profile_of_several_runs_is_read_for_its_last_run_only(tmp_path):
    """A provider's first run can hold its engine build: the placement is one run's, the last."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
                               helper.make_node("Add", ["b", "x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "g.onnx")
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "profile")
    session = ort.InferenceSession(str(tmp_path / "g.onnx"), options, providers=["CPUExecutionProvider"])
    for _ in range(3):
        session.run(None, {"x": np.ones((2, 3), np.float32)})
    profile = session.end_profiling()
    placement = run_placement({profile: 1})

    (share,) = placement.shares
    assert share.provider == "CPUExecutionProvider" and share.nodes == 3 == placement.nodes
    assert sorted(share.ops) == ["Add", "Relu", "Sigmoid"] and share.kernel_us > 0
    assert placement.line("CPUExecutionProvider") == ""
    ten = run_placement({profile: 10})  # a split bundle's step graph: one run an Euler step
    assert ten.nodes == 30 and ten.kernel_us == pytest.approx(10 * placement.kernel_us)


def test_the_nodes_another_provider_took_are_named_with_their_share_of_kernel_time():
    """TensorRT's subgraph is one node; the ops it lacked ran on the CPU, most frequent first."""
    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 1100, "args": {}},
        _kernel("TRTKernel_graph_main_0", "TensorrtExecutionProvider", 900),
        {"cat": "Node", "name": "NonZero_fence_before", "ts": 0, "dur": 0, "args": {"op_name": "NonZero"}},
        _kernel("NonZero", "CPUExecutionProvider", 60),
        _kernel("NonZero", "CPUExecutionProvider", 20),
        _kernel("ScatterND", "CPUExecutionProvider", 20),
    ]
    placement = placement_of(events)
    assert [s.provider for s in placement.shares] == ["TensorrtExecutionProvider", "CPUExecutionProvider"]
    assert placement.nodes == 4 and placement.kernel_us == 1000
    assert placement.line("TensorrtExecutionProvider") == "3 of 4 nodes on CPU (NonZero, ScatterND: 10 % of kernel time)"
    assert placement.line("CPUExecutionProvider") == "1 of 4 nodes on Tensorrt (TRTKernel_graph_main_0: 90 % of kernel time)"
    many = placement_of([_kernel(op, "CUDAExecutionProvider", 1) for op in ("A", "B", "C", "D")])
    assert many.line("TensorrtExecutionProvider") == "4 of 4 nodes on CUDA (A, B, C, ...: 100 % of kernel time)"
