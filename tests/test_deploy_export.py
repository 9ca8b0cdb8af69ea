"""ONNX export and the backends: every path computes the torch policy's chunk.

The bundle (chunk, prefix and step graphs of the tiny preset) is exported once per module;
the export itself refuses a graph whose parity exceeds 1e-4 (export_onnx.PARITY_TOL).
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pytest

from deploy_fixtures import observation, tiny_checkpoint

pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'shallowpi[export]'")
pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) not installed: pip install 'shallowpi[export]'")

from shallowpi.deploy.backends import BackendError, BackendOptions, Inpainting, make_backend
from shallowpi.deploy.bundle import Bundle, build_bundle
from shallowpi.policy.action_selection import rtc_weights


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Bundle:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("export")
    try:
        yield build_bundle(tiny_checkpoint(root / "ckpt"), root / "bundle")
    finally:
        torch.set_num_threads(threads)


def test_every_graph_passes_the_checker_and_matches_torch_within_1e4(bundle):
    import onnx

    from shallowpi.deploy.export_onnx import PARITY_TOL, parity
    from shallowpi.policy import Policy

    assert set(bundle.graphs) == {"chunk", "prefix", "step"}
    for path in bundle.graphs.values():
        onnx.checker.check_model(str(path), full_check=True)
    diffs = parity(Policy.load(bundle.weights), bundle.graphs, seed=7)
    assert set(diffs) == {"chunk", "chunk (inpainted)", "prefix+step"}
    assert all(d <= PARITY_TOL for d in diffs.values()), diffs


def test_the_graphs_are_folded_to_plain_onnx_ops(bundle):
    """Cleaned by constant folding with shape inference, in place of the exporter's slow
    optimizer (export_onnx's docstring): what that optimizer left, plain ONNX ops with no
    library function to inline and no CastLike (folding without shape inference left ten;
    a TensorRT parser or an older runtime may lack the op)."""
    import onnx

    for name, path in bundle.graphs.items():
        model = onnx.load(str(path))
        ops = {node.op_type for node in model.graph.node}
        assert not model.functions, name
        assert "CastLike" not in ops, name
        assert all(node.domain in ("", "ai.onnx") for node in model.graph.node), (name, ops)
        # Folding unrolled the Euler steps into copies of the expert's weights: one of each
        # is kept (the teacher's chunk graph went from 46 to 22 MB; 8.5 MB without provenance).
        contents = [(t.data_type, tuple(t.dims), onnx.numpy_helper.to_array(t).tobytes())
                    for t in model.graph.initializer]
        assert len(contents) == len(set(contents)), name


def test_the_graphs_carry_no_trace_of_the_machine_that_made_them(bundle):
    """The exporter labels every node with its Python stack trace (13 of the teacher's 22 MB
    chunk graph), naming this machine's source files: a bundle for the robot drops them."""
    import onnx

    from conftest import REPO_ROOT

    for name, path in bundle.graphs.items():
        assert str(REPO_ROOT).encode() not in path.read_bytes(), name
        assert not any(node.metadata_props for node in onnx.load(str(path)).graph.node), name


def test_numpy_preprocessing_equals_the_torch_policys(bundle, rng):
    from shallowpi.deploy.preprocess import Preprocessor
    from shallowpi.policy import Policy

    policy = Policy.load(bundle.weights)
    for size in [(24, 32), (16, 16), (40, 12), (8, 8)]:  # shrink, same, tall, grow
        obs = observation(rng, size=size)
        (images, image_masks, tokens, token_masks), state, _ = policy._model_inputs(obs)
        got = Preprocessor(bundle)(obs)
        assert np.abs(got.images - images.numpy()).max() < 1e-5, size
        assert (got.image_masks == image_masks.numpy()).all()
        assert (got.tokens == tokens.numpy()).all() and (got.token_masks == token_masks.numpy()).all()
        assert np.abs(got.state - state.numpy()).max() < 1e-6


def test_a_missing_camera_is_masked_out_as_in_the_policy(bundle, rng):
    from shallowpi.deploy.preprocess import Preprocessor

    obs = observation(rng)
    del obs["observation.images.front"]
    got = Preprocessor(bundle)(obs)
    assert not got.image_masks.any() and (got.images == -1).all()


@pytest.fixture(scope="module")
def backends(bundle):
    return {
        "torch": make_backend("torch", bundle),
        "onnxruntime": make_backend("onnxruntime", bundle, BackendOptions(threads=1)),
        "onnxruntime split": make_backend("onnxruntime", bundle, BackendOptions(graph="split", threads=1)),
    }


def test_every_backend_gives_the_policys_chunk_for_the_same_noise(bundle, backends, rng):
    import torch

    from shallowpi.policy import Policy

    obs = observation(rng)
    policy = Policy.load(bundle.weights)
    chunks = {}
    for name, backend in backends.items():
        backend.reset(3)
        chunks[name] = backend.infer(obs)
    backends["torch"].reset(3)
    noise = torch.from_numpy(backends["torch"].noise())
    reference = policy.sample_actions(obs, noise=noise).numpy()  # the reference path, [C, A_real]
    assert reference.shape == (4, 7)
    for name, chunk in chunks.items():
        assert chunk.shape == reference.shape and chunk.dtype == np.float32
        assert np.abs(chunk - reference).max() <= 1e-4, name


@pytest.mark.parametrize("mask", ["hard", "soft"])
def test_inpainting_keeps_the_frozen_prefix_and_backends_agree(backends, rng, mask):
    obs = observation(rng)
    target = rng.normal(0, 1, (4, 7)).astype(np.float32)
    # soft: the executor's default, real-time chunking's weights (1, 1, then 0.37 and 0.08
    # over the overlap's last two rows), so each backend blends rows it does not freeze
    inpainting = (Inpainting.hard_prefix(target, frozen=2) if mask == "hard"
                  else Inpainting(target, rtc_weights(4, frozen=2, overlap=4)))
    assert mask == "hard" or 0 < inpainting.weight[2] < 1
    chunks = {}
    for name, backend in backends.items():
        backend.reset(5)
        chunks[name] = backend.infer(obs, inpainting)
        # the frozen rows are the target, in robot units (normalised and back, no zero padding)
        assert np.abs(chunks[name][:2] - target[:2]).max() < 1e-5, name
    backends["torch"].reset(5)
    free = backends["torch"].infer(obs)
    assert np.abs(free[:2] - target[:2]).max() > 1e-2  # without it they would differ
    for name, chunk in chunks.items():
        assert np.abs(chunk - chunks["torch"]).max() <= 1e-4, name


def test_warm_up_runs_chunks_before_the_robot_moves(backends, rng, monkeypatch):
    times = backends["onnxruntime"].warm_up(observation(rng), runs=2)
    assert len(times) == 2 and all(t > 0 for t in times)
    # the inpainted path too (every rtc chunk after the first), last: its time is the
    # executor's first delay estimate
    backend, asked = backends["torch"], []
    infer = backend.infer
    monkeypatch.setattr(backend, "infer", lambda obs, inpainting=None, noise=None: (
        asked.append(inpainting), infer(obs, inpainting, noise=noise))[1])
    backend.warm_up(observation(rng), runs=3)
    assert asked[0] is None and all(a is not None and 0 < a.weight.max() <= 1 for a in asked[1:]) and len(asked) == 3


def test_a_chunk_the_runtime_fails_to_compute_is_one_line_before_the_loop_as_in_it(bundle, rng):
    """The parity check and the warm-up run chunks before the loop (which makes a backend's
    failure a fault): onnxruntime's own error types (CUDA out of memory, a TensorRT enqueue
    failure on a Jetson) went past them as tracebacks. A real one here: a session of the
    wrong graph, whose inputs the chunk's feed does not have."""
    import onnxruntime as ort

    backend = make_backend("onnxruntime", bundle, BackendOptions(threads=1))
    backend._session = ort.InferenceSession(str(bundle.graphs["step"]), providers=["CPUExecutionProvider"])
    for run in (lambda: backend.infer(observation(rng)), lambda: backend.warm_up(observation(rng), runs=2)):
        with pytest.raises(BackendError) as failed:
            run()
        said = str(failed.value)
        assert said.startswith("the onnxruntime backend failed to compute a chunk (") and "\n" not in said, said


def test_backend_errors_name_the_fix(bundle, tmp_path):
    with pytest.raises(BackendError, match="unknown backend 'tflite'; choose one of: torch, onnxruntime, tensorrt"):
        make_backend("tflite", bundle)
    with pytest.raises(BackendError, match=r"none of the providers .* pass jetson\.providers=\[CPUExecutionProvider\] "
                       "or install onnxruntime-gpu"):
        make_backend("onnxruntime", bundle, BackendOptions(providers=("NoSuchExecutionProvider",)))
    bare = build_bundle(bundle.path.parent / "ckpt", tmp_path / "bare", graphs=())
    with pytest.raises(BackendError, match=r"has no chunk graph \(it was built for the torch backend\); rebuild it "
                       r"from the checkpoint: platform deploy --policy CKPT --backend onnxruntime --bundle-only"):
        make_backend("onnxruntime", bare)


def test_a_graph_onnx_runtime_cannot_run_is_said_in_one_line(tmp_path, monkeypatch):
    """The export checks each graph in ONNX Runtime: an op it cannot run raised
    onnxruntime's own error past the command's handling, a traceback after minutes of
    exporting."""
    from shallowpi.deploy import export_onnx
    from shallowpi.policy.policy import Policy

    def cannot_run(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation for Foo\nmore")

    monkeypatch.setattr(export_onnx, "parity", cannot_run)
    policy = Policy.load(tiny_checkpoint(tmp_path / "ckpt"))
    (tmp_path / "graphs").mkdir()
    with pytest.raises(export_onnx.ExportError) as refused:
        export_onnx.export_graphs(policy, tmp_path / "graphs", graphs=("step",))
    said = str(refused.value)
    assert said.startswith("ONNX Runtime cannot run the exported graphs: RuntimeError: [ONNXRuntimeError] : 9 : "
                           "NOT_IMPLEMENTED") and "\n" not in said and said.endswith("deploy with --backend torch, "
                                                                                    "or report it with the log "
                                                                                    "(--verbose)")


def _import_cut_by_ctrl_c() -> None:
    """What Ctrl-C inside a lazy import became: an ImportError raised from the interrupt."""
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt as exc:
        raise ImportError("cannot import name 'fx' from partially initialized module") from exc


def _ctrl_c_swallowed() -> None:
    """A library's `except BaseException` around Ctrl-C, then an error of its own: no chain."""
    import os
    import signal
    import time

    lost = False
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler runs between bytecodes: here at the latest
    except KeyboardInterrupt:
        lost = True
    if lost:
        raise RuntimeError("lost")


@pytest.mark.parametrize("ctrl_c", [_import_cut_by_ctrl_c, _ctrl_c_swallowed], ids=["in the chain", "swallowed"])
def test_ctrl_c_the_exporter_catches_is_still_an_interrupt(tmp_path, ctrl_c, own_signals):
    """torch's export catches Exception: Ctrl-C during a bundle's export was once said as
    "exporting the chunk graph failed: TorchExportError ...; deploy with --backend torch"
    (exit 2), not "interrupted" (130). A KeyboardInterrupt anywhere in the exporter's error
    chain, or one its handler raised during the export, is raised as KeyboardInterrupt."""
    import signal

    import torch

    from shallowpi.deploy import export_onnx

    class Interrupted(torch.nn.Module):
        def forward(self, x):
            ctrl_c()
            return x * 2

    signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, whatever pytest runs under
    raised: BaseException | None = None
    try:  # not pytest.raises: a KeyboardInterrupt getting through would end the whole session
        export_onnx._export(Interrupted(), (torch.ones(2),), tmp_path / "chunk.onnx", ["x"], ["y"])
    except BaseException as exc:
        raised = exc
    assert isinstance(raised, KeyboardInterrupt), f"{type(raised).__name__}: {raised}"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the caller's again


def test_a_backend_says_where_it_really_runs_not_what_the_profile_asked(bundle, caplog):
    """The Orin profile asks TensorRT, then CUDA, in fp16; an onnxruntime without them (this
    machine's, or a Jetson's whose TensorRT provider fails to build) runs on the CPU in fp32,
    and deploy's banner printed "on cuda (fp16)" all the same."""
    import onnxruntime as ort

    asked = BackendOptions(device="cuda", precision="fp16", threads=1,
                           providers=("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
    backend = make_backend("onnxruntime", bundle, asked)
    if "CUDAExecutionProvider" not in ort.get_available_providers():  # a CPU-only onnxruntime, as here
        assert backend.runs_on() == "CPU (fp32)" and backend.providers == ["CPUExecutionProvider"]
    else:  # a GPU build: whichever provider the session took, named as such
        assert backend.runs_on().startswith(backend.providers[0].removesuffix("ExecutionProvider") + " (")
    torch_backend = make_backend("torch", bundle, BackendOptions(device="cpu", precision="bf16", threads=1))
    assert torch_backend.runs_on() == "cpu (fp32)"  # casts are for a GPU: the CPU computes in fp32


def test_tensorrt_engines_are_keyed_by_bundle_version_gpu_precision_and_the_code_that_builds_them():
    """The builder too: a bundle copied unchanged keeps its digest across a code update on
    the robot, and an engine built before a change of the build's flags was reused."""
    from shallowpi.deploy.backends import tensorrt_backend
    from shallowpi.deploy.backends.tensorrt_backend import builder_digest, engine_key

    base = ("a" * 64, "10.3.0", "Orin (16 SMs)", "fp16", builder_digest())
    keys = {engine_key(*base)}
    for i, other in enumerate(("b" * 64, "10.4.0", "Orin (8 SMs)", "bf16", "c" * 64)):
        keys.add(engine_key(*base[:i], other, *base[i + 1 :]))
    assert len(keys) == 6 and engine_key(*base) == engine_key(*base)
    source = inspect.getsource(tensorrt_backend.TensorRTBackend._build)
    assert "set_flag" in source and builder_digest() == hashlib.sha256(source.encode()).hexdigest()


def test_onnxruntimes_engine_cache_is_keyed_by_the_runtime_versions_too(bundle, tmp_path):
    """onnxruntime's TensorRT provider names its engine files without the versions that built
    them: after a JetPack upgrade the stale engine would fail to load and the provider fall
    back to CUDA in fp32 at every start. Its cache folder carries them."""
    from shallowpi.deploy.backends.onnxrt import _runtime_versions
    from shallowpi.deploy.backends.tensorrt_backend import engine_cache_dir

    options = BackendOptions(cache_dir=str(tmp_path))
    folders = {engine_cache_dir(bundle, options, runtime) for runtime in
               ("onnxruntime 1.20.0 tensorrt 8.6.2", "onnxruntime 1.20.0 tensorrt 10.3.0", "onnxruntime 1.22.0")}
    assert len(folders) == 3 and all(f.name.startswith(bundle.digest[:24]) and f.is_dir() for f in folders)
    import onnxruntime as ort

    assert _runtime_versions().startswith(f"onnxruntime {ort.__version__}")
    # On a Jetson, by its L4T release too: the provider loads the system's TensorRT, which a
    # JetPack upgrade changes whether or not the venv can import its Python bindings.
    from test_deploy_jetson import ORIN_RELEASE, fake_jetson

    orin = fake_jetson(tmp_path / "orin", "nvidia,tegra234", "NVIDIA Jetson AGX Orin")
    before = _runtime_versions(orin)
    assert before.startswith(f"onnxruntime {ort.__version__} L4T R36 (release), REVISION: 4.0")
    (orin / "etc/nv_tegra_release").write_text(ORIN_RELEASE.replace("REVISION: 4.0", "REVISION: 4.3"))
    assert _runtime_versions(orin) != before
    # and by the precision: an fp32 run after an fp16 one would load the fp16 engine
    from shallowpi.deploy.backends.onnxrt import engine_build

    builds = {engine_build(BackendOptions(cache_dir=str(tmp_path), precision=p)) for p in ("fp16", "fp32")}
    assert len({engine_cache_dir(bundle, options, b) for b in builds}) == 2


def test_tensorrt_feeds_are_cast_to_the_engines_types_and_their_shapes_checked():
    """TensorRT 8.x (JetPack 6.0) has no int64 inputs: the parser narrows `tokens` to int32,
    and the int64 buffer bound as it read id, 0, id, 0, ... The feeds take the engine's
    dtypes (read from the engine at load); a shape the engine was not built for is one line."""
    from shallowpi.deploy.backends.tensorrt_backend import engine_feeds

    tokens = np.array([[5, 9, 2]], np.int64)
    ready = engine_feeds({"tokens": tokens, "state": np.zeros((1, 7), np.float64)},
                         {"tokens": np.dtype(np.int32), "state": np.dtype(np.float32)},
                         {"tokens": (1, -1), "state": (1, 7)})
    assert ready["tokens"].dtype == np.int32 and ready["tokens"].tolist() == [[5, 9, 2]]
    assert ready["state"].dtype == np.float32 and ready["state"].flags["C_CONTIGUOUS"]
    with pytest.raises(BackendError, match=r"input 'state' is \(1, 6\), the backend feeds \(1, 7\)"):
        engine_feeds({"state": np.zeros((1, 7))}, {"state": np.dtype(np.float32)}, {"state": (1, 6)})
    with pytest.raises(BackendError, match="wants an input 'noise' the backend does not feed"):
        engine_feeds({}, {"noise": np.dtype(np.float32)}, {"noise": (1, 8, 7)})


def test_tensorrt_backend_up_to_the_import(bundle):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match=r"tensorrt is not importable here.*--backend onnxruntime"):
            make_backend("tensorrt", bundle)
        pytest.skip("tensorrt is not importable here: the engine build runs on a GPU machine or a Jetson")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="needs a CUDA GPU"):
            make_backend("tensorrt", bundle)
        return
    backend = make_backend("tensorrt", bundle, BackendOptions(device="cuda", precision="fp32"))
    assert backend.engine_path.is_file()


NO_TORCH = """
import sys, json
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers", "lerobot", "safetensors"):
            raise ModuleNotFoundError(f"{name} is blocked: the robot side must not need it", name=name)
sys.meta_path.insert(0, Block())
import numpy as np
from shallowpi.deploy.bundle import Bundle
from shallowpi.deploy.backends import make_backend, BackendOptions
import shallowpi.deploy.executor, shallowpi.deploy.jetson
backend = make_backend("onnxruntime", Bundle.load(sys.argv[1]), BackendOptions(threads=1))
backend.reset(3)
obs = {"observation.state": np.array(json.loads(sys.argv[2]), np.float32),
       "observation.images.front": np.full((24, 32, 3), 128, np.uint8), "task": "pick up the cube"}
print(json.dumps(backend.infer(obs).tolist()))
from shallowpi.deploy.backends import BackendError
try:  # the torch backend on this install: one line, not a ModuleNotFoundError traceback
    make_backend("torch", Bundle.load(sys.argv[1]))
except BackendError as exc:
    print(exc, file=sys.stderr)
"""


def test_the_robot_side_runs_the_onnx_backend_without_torch(bundle, backends):
    import json
    import subprocess
    import sys

    from conftest import subprocess_env

    state = [0.1, -0.2, 0.3, 0.0, 0.5, -0.5, 0.2]
    result = subprocess.run([sys.executable, "-c", NO_TORCH, str(bundle.path), json.dumps(state)],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the torch backend needs torch, which is not installed here: install it, or choose another backend " \
           "(onnxruntime, tensorrt)" in result.stderr
    backends["torch"].reset(3)
    obs = {"observation.state": np.array(state, np.float32),
           "observation.images.front": np.full((24, 32, 3), 128, np.uint8), "task": "pick up the cube"}
    assert np.abs(np.array(json.loads(result.stdout)) - backends["torch"].infer(obs)).max() <= 1e-4


def test_a_policy_over_what_one_onnx_file_holds_is_refused_at_once(bundle, monkeypatch):
    """π0's ~13 GB of fp32 weights cannot go into one ONNX file (protobuf's 2 GB): the
    export ran to its end and failed in onnx.save with a traceback."""
    from shallowpi.deploy import export_onnx
    from shallowpi.policy.policy import Policy

    policy = Policy.load(bundle.path.parent / "ckpt")
    monkeypatch.setattr(export_onnx, "ONNX_MAX_BYTES", 1000)  # the tiny policy as if it were π0
    with pytest.raises(export_onnx.ExportError, match=r"GB in fp32, over the 0.0 GB an ONNX file holds .* "
                                                      "deploy it with --backend torch"):
        export_onnx.export_graphs(policy, bundle.path.parent, ("chunk",))


def test_a_graph_the_installed_onnxruntime_cannot_load_is_one_line(bundle, tmp_path):
    """An older onnxruntime on the robot than the graph needs raised onnxruntime's own error
    type, which the command line printed as a traceback."""
    import shutil

    import onnx

    from shallowpi.deploy.bundle import Bundle, write_manifest

    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    graph = onnx.load(str(copy / "graphs" / "chunk.onnx"))
    graph.ir_version = 99  # a graph from an exporter newer than this onnxruntime reads
    onnx.save(graph, str(copy / "graphs" / "chunk.onnx"))
    write_manifest(copy, {"code_sha256": "x"})
    with pytest.raises(BackendError, match=r"onnxruntime .* cannot load the bundle's chunk graph .*IR version: 99"
                                           r".* upgrade it") as refused:
        make_backend("onnxruntime", Bundle.load(copy), BackendOptions(providers=("CPUExecutionProvider",)))
    assert "\n" not in str(refused.value)


def test_a_graph_bundle_runs_on_a_robot_whose_model_code_differs_but_not_its_runtime_code(bundle, tmp_path):
    """A bundle with graphs carries the model's computation: the robot runs only the code
    around them (preprocessing, tokens, action decoding, selection). Another model file in
    the robot's clone is no reason to refuse it (the old warning fired on any such change,
    so operators learned to ignore it); another runtime file is."""
    import json
    import shutil

    from shallowpi.deploy.bundle import Bundle, write_manifest

    assert bundle.graphs and bundle.runs_here_as_built
    copy = tmp_path / "copy"
    shutil.copytree(bundle.path, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    kept = {k: manifest[k] for k in ("created", "commit", "runtime_sha256")}
    write_manifest(copy, {**kept, "code_sha256": "0" * 64})
    assert Bundle.load(copy).runs_here_as_built is True
    write_manifest(copy, {**kept, "code_sha256": "0" * 64, "runtime_sha256": "1" * 64})
    assert Bundle.load(copy).runs_here_as_built is False


@pytest.mark.parametrize("graph", ["chunk", "split"])
def test_onnxruntime_says_which_provider_took_the_bundles_nodes(bundle, graph):
    """A Jetson's TensorRT provider leaves the ops it lacks to CUDA or the CPU; the backend
    reads the sessions' assignment and runs_on names what fell off the first provider. Here
    the CPU has every node of the bundle's graphs: runs_on stays bare."""
    import onnx
    import onnxruntime as ort

    if not hasattr(ort.InferenceSession, "get_provider_graph_assignment_info"):
        pytest.skip("this onnxruntime has no assignment API")
    backend = make_backend("onnxruntime", bundle, BackendOptions(graph=graph, threads=1))
    (share,) = backend.placement.shares
    names = ["chunk"] if graph == "chunk" else ["prefix", "step"]
    exported = sum(len(onnx.load(bundle.graphs[name], load_external_data=False).graph.node) for name in names)
    assert share.provider == "CPUExecutionProvider" and 0 < share.nodes <= exported  # after the basic fusions
    assert "MatMul" in share.ops and backend.runs_on() == "CPU (fp32)"


@pytest.mark.parametrize("graph", ["chunk", "split"])
def test_an_engine_cache_tensorrt_cannot_read_is_set_aside_not_blamed_on_the_graph(bundle, backends, tmp_path,
                                                                                   monkeypatch, rng, graph):
    """A power cut during or just after the TensorRT provider's first build left an empty
    engine file in its cache: every later deploy failed at session creation (EP_FAIL
    "could not deserialize engine from cache"), said as "cannot load the bundle's chunk
    graph ...; upgrade it, or rebuild the bundle", neither of which helps. No TensorRT here:
    its provider is stood in for around the real sessions (onnxruntime.InferenceSession
    with the CPU provider); the provider's own failure is onnxruntime's error type and text."""
    import os
    from pathlib import Path

    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_pybind11_state import EPFail

    real_session = ort.InferenceSession
    built: list[Path] = []

    def tensorrt_stand_in(path, sess_options=None, providers=(), **kwargs):
        cache = next(Path(p[1]["trt_engine_cache_path"]) for p in providers if not isinstance(p, str))
        engine = cache / f"TensorrtExecutionProvider_TRTKernel_graph_{Path(path).stem}_sm87.engine"
        if engine.exists() and engine.stat().st_size == 0:
            raise EPFail(f"[ONNXRuntimeError] : 11 : EP_FAIL : TensorRT EP could not deserialize engine from cache: "
                         f"{engine}")
        if not engine.exists():
            engine.write_bytes(b"engine")
            built.append(engine)
        return real_session(path, sess_options, providers=[p for p in providers if isinstance(p, str)], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", tensorrt_stand_in)
    options = BackendOptions(providers=("TensorrtExecutionProvider", "CPUExecutionProvider"), graph=graph,
                             cache_dir=str(tmp_path), threads=1)
    locked: dict[str, bool] = {}  # path synced -> whether the cache's lock was held then (its file exists)
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        path = os.readlink(f"/proc/self/fd/{fd}")
        locked[path] = any(Path(path).is_relative_to(e.parent) and Path(f"{e.parent}.lock").exists() for e in built)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    make_backend("onnxruntime", bundle, options)  # the first deploy builds the engines
    # which the provider writes unsynchronised: synced before a second deploy may read them
    assert all(locked.get(str(engine)) for engine in built) and locked.get(str(built[0].parent))
    built[0].write_bytes(b"")  # as a power cut during a build leaves an engine
    backend = make_backend("onnxruntime", bundle, options)
    cache = built[0].parent
    assert (cache.with_name(cache.name + ".unreadable") / built[0].name).read_bytes() == b""
    assert built[-1].read_bytes() == b"engine" and len(built) == 2 * (1 if graph == "chunk" else 2)
    obs = observation(rng)
    reference = "onnxruntime" if graph == "chunk" else "onnxruntime split"
    backends[reference].reset(3)
    backend.reset(3)
    assert np.array_equal(backend.infer(obs), backends[reference].infer(obs))
