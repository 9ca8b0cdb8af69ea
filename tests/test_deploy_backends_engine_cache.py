"""onnxruntime's TensorRT engine cache: synced once built, set aside when it no longer loads
(`onnxrt.open_sessions`), and what the banner says TensorRT computes in.

No TensorRT here: its provider's failure to read a cached engine is stood in for by an
exception of onnxruntime's own type and text (EPFail, "TensorRT EP could not deserialize
engine from cache: FILE"); the sessions made otherwise are real CPU sessions.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'shallowpi[export]'")
onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install 'shallowpi[export]'")

from onnxruntime.capi.onnxruntime_pybind11_state import EPFail  # noqa: E402

from shallowpi.deploy.backends import BackendError, BackendOptions  # noqa: E402
from shallowpi.deploy.backends.onnxrt import OnnxRuntimeBackend, open_sessions  # noqa: E402

ENGINE = "TensorrtExecutionProvider_TRTKernel_graph_main_0_0_sm87.engine"  # as the provider names one


def _doubling_graph(path: Path) -> Path:
    """A one-node ONNX graph: y = x + x, float32 [2]."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])
    graph = helper.make_graph([helper.make_node("Add", ["x", "x"], ["y"])], "main", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # one every onnxruntime here reads
    onnx.save(model, str(path))
    return path


def _providers(cache: Path) -> list:
    """TensorRT's provider with its engine cache in `cache` (as session_options sets it), then the CPU."""
    options = {"trt_fp16_enable": False, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}
    return [("TensorrtExecutionProvider", options), "CPUExecutionProvider"]


class TensorrtStandIn:
    """Opens a real CPU session of `graph` the way the TensorRT provider would with its
    cache: an engine file there that TensorRT cannot read (empty, as a power cut during the
    build leaves it) fails the session with onnxruntime's EP_FAIL; a cache without one gets
    the engine written into it (`built` counts those)."""

    def __init__(self, graph: Path, cache: Path) -> None:
        self.graph, self.cache, self.built = graph, cache, 0

    def __call__(self) -> object:
        engine = self.cache / ENGINE
        if engine.exists() and engine.stat().st_size == 0:
            raise EPFail(f"[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize engine from cache: "
                         f"{engine}")
        if not engine.exists():
            engine.write_bytes(b"engine" * 100)
            self.built += 1
        return ort.InferenceSession(str(self.graph), providers=["CPUExecutionProvider"])


def test_an_engine_cache_a_power_cut_left_unreadable_is_set_aside_and_the_engines_built_again(tmp_path, synced,
                                                                                             caplog):
    """A power cut during the provider's first build (minutes), or just after it, left an
    empty engine file in the cache: every later deploy failed at session creation with
    EP_FAIL "could not deserialize engine from cache", reported as "an older onnxruntime
    than the graph needs? upgrade it, or rebuild the bundle", neither of which helps (a
    rebuilt bundle keeps its digest, so its cache folder)."""
    cache = tmp_path / "engines" / "0123abcd-ef"
    cache.mkdir(parents=True)
    (cache / ENGINE).write_bytes(b"")
    standin = TensorrtStandIn(_doubling_graph(tmp_path / "graph.onnx"), cache)
    with caplog.at_level(logging.WARNING, logger="shallowpi.deploy.backends.onnxrt"):
        session = open_sessions(standin, _providers(cache))
    assert session.run(None, {"x": np.array([1.0, 2.0], np.float32)})[0].tolist() == [2.0, 4.0]
    aside = tmp_path / "engines" / "0123abcd-ef.unreadable"
    assert (aside / ENGINE).read_bytes() == b"" and standin.built == 1  # kept to look at; built again
    (said,) = [r.getMessage() for r in caplog.records]
    assert "cannot read an engine it cached" in said and str(aside) in said and "\n" not in said
    # The new engine, its folder and the folder's entry reach the disk before anyone relies on them.
    assert {str(cache / ENGINE), str(cache), str(cache.parent)} <= set(synced)
    # The next deploy loads it: nothing is set aside again, and an older set-aside cache is replaced.
    assert open_sessions(standin, _providers(cache)) is not None and standin.built == 1
    (cache / ENGINE).write_bytes(b"")
    open_sessions(standin, _providers(cache))
    assert sorted(p.name for p in (tmp_path / "engines").iterdir() if p.is_dir()) == [cache.name, aside.name]


def test_engines_the_provider_builds_reach_the_disk_before_the_cache_lock_is_let_go(tmp_path, monkeypatch):
    """The provider writes its engine files unsynchronised: a power cut after the build
    left empty files that the next start failed to read. They are synced while the lock
    still keeps a second deploy from reading them (`hold_file_lock` removes the lock file
    as it lets go)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    locked: dict[str, bool] = {}  # path synced -> whether the cache's lock was held then
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        locked[os.readlink(f"/proc/self/fd/{fd}")] = Path(str(cache) + ".lock").exists()
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    standin = TensorrtStandIn(_doubling_graph(tmp_path / "graph.onnx"), cache)
    open_sessions(standin, _providers(cache))
    assert standin.built == 1
    assert locked.get(str(cache / ENGINE)) is True and locked.get(str(cache)) is True


def _unreadable(cache: Path) -> Callable[[], object]:
    """A provider that can read no engine in `cache`, even one it has just built."""

    def make() -> object:
        (cache / ENGINE).write_bytes(b"engine")
        raise EPFail(f"[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize engine from cache: "
                     f"{cache / ENGINE}")

    return make


def test_a_cache_that_cannot_be_read_even_rebuilt_is_named_to_remove_in_one_line(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    with pytest.raises(BackendError) as refused:
        open_sessions(_unreadable(cache), _providers(cache))
    said = str(refused.value)
    assert said.startswith(f"onnxruntime's TensorRT provider cannot read the engines it cached in {cache}, even "
                           "built again ([ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize") \
        and "; remove that folder" in said and "\n" not in said


def test_a_cache_that_cannot_be_moved_aside_is_named_to_remove_in_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()

    def refused_rename(self, target):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "rename", refused_rename)  # as a read-only cache root would
    with pytest.raises(BackendError) as refused:
        open_sessions(_unreadable(cache), _providers(cache))
    said = str(refused.value)
    assert said.startswith(f"onnxruntime's TensorRT provider cannot read an engine it cached in {cache} (") \
        and "cannot be moved aside ([Errno 13] Permission denied" in said and said.endswith("remove it, and the next "
                                                                                           "deploy builds the engines "
                                                                                           "again (minutes)")


def test_other_session_errors_pass_unchanged_and_leave_the_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ENGINE).write_bytes(b"engine")

    def fails() -> object:
        raise BackendError("onnxruntime cannot load the bundle's chunk graph (IR version 99)")

    with pytest.raises(BackendError, match="IR version 99"):
        open_sessions(fails, _providers(cache))
    assert (cache / ENGINE).read_bytes() == b"engine" and not (tmp_path / "cache.unreadable").exists()


def _backend_on(providers: list[str], precision: str) -> OnnxRuntimeBackend:
    """A backend as its sessions left it, for `runs_on` alone (no TensorRT here to make one)."""
    backend = OnnxRuntimeBackend.__new__(OnnxRuntimeBackend)
    backend.options = BackendOptions(precision=precision)
    backend.providers, backend.placement, backend._runtime = providers, None, f"onnxruntime {ort.__version__}"
    return backend


def test_fp32_through_onnxruntimes_tensorrt_provider_is_said_to_be_tf32_matmuls():
    """TensorRT builds TF32 matmuls unless told not to, and onnxruntime's provider has no
    option to tell it: jetson.precision=fp32 there said "fp32", which the parity check's
    advice offers as the exact way out."""
    trt = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert _backend_on(trt, "fp32").runs_on().startswith("Tensorrt (fp32, TF32 matmuls); ")
    assert _backend_on(trt, "fp16").runs_on().startswith("Tensorrt (fp16); ")
    assert _backend_on(trt[1:], "fp32").runs_on().startswith("CUDA (fp32); ")
    assert _backend_on(trt[2:], "fp16").runs_on() == "CPU (fp32)"


def test_fp32_on_onnxruntimes_cuda_provider_is_computed_in_fp32(monkeypatch):
    """The CUDA provider takes TF32 matmuls by default (use_tf32) on an Orin or a Thor, so
    "CUDA (fp32)" was TF32, and the parity check's advice offered fp32 as the exact way out.
    fp32 asked turns it off; another precision says TF32; the advice on a run already in
    fp32 on CUDA is the CPU."""
    from shallowpi.deploy.backends.onnxrt import session_options
    from shallowpi.deploy.reference import _remedy

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    cuda = ("CUDAExecutionProvider", "CPUExecutionProvider")
    assert session_options(cuda, BackendOptions(precision="fp32"), None) == [
        ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert session_options(cuda, BackendOptions(precision="fp16"), None) == list(cuda)
    assert _backend_on(list(cuda), "fp16").runs_on().startswith("CUDA (fp32, TF32 matmuls); ")
    on_cuda = _backend_on(list(cuda), "fp32")
    on_cuda.name = "onnxruntime"
    assert "already computes in fp32 on CUDA" in _remedy(on_cuda)
    on_trt = _backend_on(["TensorrtExecutionProvider", *cuda], "fp16")
    on_trt.name = "onnxruntime"
    assert "jetson.precision=fp32 jetson.providers=[CUDAExecutionProvider,CPUExecutionProvider]" in _remedy(on_trt)
