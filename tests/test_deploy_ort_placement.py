"""Where ONNX Runtime put a graph's nodes (deploy/backends/ort_placement.py): read from a real
session's assignment record, and named when they leave the first provider."""

from __future__ import annotations

import pytest

from shallowpi.deploy.backends.ort_placement import (
    RECORD_ASSIGNMENT,
    placement_of,
    session_placement,
)

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'shallowpi[export]'")


def _three_node_session(path, record: bool):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Sigmoid", ["a"], ["b"]),
                               helper.make_node("Add", ["b", "x"], ["y"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    options = ort.SessionOptions()
    if record:
        options.add_session_config_entry(RECORD_ASSIGNMENT, "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.skipif(not hasattr(ort.InferenceSession, "get_provider_graph_assignment_info"),
                    reason="this onnxruntime has no assignment API (the backend then says nothing of it)")
def test_a_sessions_nodes_are_read_by_provider_and_a_session_made_without_the_record_says_nothing(tmp_path):
    placement = session_placement([_three_node_session(tmp_path / "g.onnx", record=True)])
    (share,) = placement.shares
    assert (share.provider, share.nodes, share.subgraphs) == ("CPUExecutionProvider", 3, 3)  # a kernel provider
    assert sorted(share.ops) == ["Add", "Relu", "Sigmoid"] and placement.line("CPUExecutionProvider") == ""
    two = session_placement([_three_node_session(tmp_path / "g.onnx", record=True)] * 2)  # a split bundle's two
    assert two.nodes == 6
    assert session_placement([_three_node_session(tmp_path / "g.onnx", record=False)]) is None


def test_the_nodes_another_provider_took_and_tensorrts_engines_are_named():
    """TensorRT took the graph in two engines (one subgraph each) and left two op types to the
    CPU between them, most frequent first."""
    placement = placement_of([("TensorrtExecutionProvider", ["MatMul"] * 30 + ["Softmax"] * 5),
                              ("CPUExecutionProvider", ["NonZero"]), ("CPUExecutionProvider", ["ScatterND"]),
                              ("CPUExecutionProvider", ["NonZero"]),
                              ("TensorrtExecutionProvider", ["MatMul"] * 3)])
    assert [(s.provider, s.nodes, s.subgraphs) for s in placement.shares] == [
        ("TensorrtExecutionProvider", 38, 2), ("CPUExecutionProvider", 3, 3)]
    assert placement.line("TensorrtExecutionProvider") == "Tensorrt in 2 engines; 3 of 41 nodes on CPU (NonZero, ScatterND)"
    assert placement.line("CPUExecutionProvider") == "38 of 41 nodes on Tensorrt (MatMul, Softmax)"
    whole = placement_of([("TensorrtExecutionProvider", ["MatMul", "Add"])])
    assert whole.line("TensorrtExecutionProvider") == ""  # one engine, every node: nothing to say
    split = [("TensorrtExecutionProvider", ["MatMul"])] * 2  # a split bundle: one engine for each graph
    assert placement_of(split, graphs=2).line("TensorrtExecutionProvider") == ""
    assert placement_of(split * 2, graphs=2).line("TensorrtExecutionProvider") == "Tensorrt in 4 engines over 2 graphs"
    many = placement_of([("CUDAExecutionProvider", ["A", "B", "C", "D"])])
    assert many.line("TensorrtExecutionProvider") == "4 of 4 nodes on CUDA (A, B, C, ...)"
