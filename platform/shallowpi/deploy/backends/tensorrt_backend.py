"""TensorRT backend: an engine built from the bundle's chunk graph, cached on disk.

Engines are specific to the TensorRT version and the GPU, so the cache key is the bundle's
digest + TensorRT's version + the GPU's name + the precision (`engine_key`); a cached
engine is reused only when all four match, and building one takes minutes on a Jetson, so
it happens when the backend is made, before the warm-up and never while the robot moves.
Precision by profile: fp16 on Orin; bf16/fp8 on Thor (FP8 needs the quantised graph, which
this export does not produce yet: fp8 builds fp16 and says so). The graph computes softmax,
norms and RoPE in float32, but an FP16 build lets TensorRT choose lower precision for any
layer: compare an engine's chunks with ONNX Runtime's before trusting it on a robot.

`tensorrt` is imported only here, and a machine without it gets a one-line BackendError
naming the onnxruntime backend instead. Device memory comes from torch's CUDA allocator.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from shallowpi.deploy.backends.base import Backend, BackendError, BackendOptions
from shallowpi.deploy.bundle import Bundle
from shallowpi.deploy.preprocess import ModelInputs
from shallowpi.durable_files import hold_file_lock, replace_bytes

log = logging.getLogger(__name__)

INPUTS = ("images", "image_masks", "tokens", "token_masks", "state", "noise", "target", "weight")


def builder_digest() -> str:
    """sha256 of the source of `TensorRTBackend._build`, which builds the engines (its flags,
    TF32 off for fp32): a bundle copied unchanged keeps its digest across a `git pull` on the
    robot, and an engine built by the code before would be reused by the code after. The
    method's source only: an edit elsewhere in this file costs no rebuild (minutes on a
    Jetson)."""
    import inspect

    return hashlib.sha256(inspect.getsource(TensorRTBackend._build).encode()).hexdigest()


def engine_key(bundle_digest: str, trt_version: str, gpu: str, precision: str, builder: str = "") -> str:
    """The cache name of an engine: changes whenever any of the five does (`builder`:
    `builder_digest`)."""
    return hashlib.sha256(f"{bundle_digest}|{trt_version}|{gpu}|{precision}|{builder}".encode()).hexdigest()[:24]


def engine_cache_dir(bundle: Bundle, options: BackendOptions, runtime: str = "") -> Path:
    """Where this bundle's engines live: options.cache_dir, else ~/.cache/shallowpi/engines,
    one folder a bundle digest and `runtime` (the versions that build the engines inside,
    and for onnxruntime's provider the precision:
    onnxruntime's TensorRT provider names its engine files without them, so after a
    JetPack upgrade a stale engine would fail to load, and onnxruntime would fall back to
    CUDA in fp32 at every start; this backend's own files carry the TensorRT version)."""
    root = Path(options.cache_dir or os.environ.get("SHALLOWPI_ENGINE_CACHE", "~/.cache/shallowpi/engines"))
    name = bundle.digest[:24] + (f"-{hashlib.sha256(runtime.encode()).hexdigest()[:12]}" if runtime else "")
    path = root.expanduser() / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def engine_feeds(feed: Mapping[str, np.ndarray], dtypes: Mapping[str, np.dtype],
                 shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """`feed` as the engine takes it: each input cast to the engine's dtype (TensorRT 8.x
    has no int64 inputs; its parser narrows the graph's `tokens` to int32, and an int64
    buffer bound as int32 reads id, 0, id, 0, ...), contiguous, its shape checked against
    the engine's (-1: any). Raises BackendError naming an input of another shape or one
    missing."""
    ready = {}
    for name, dtype in dtypes.items():
        if name not in feed:
            raise BackendError(f"the TensorRT engine wants an input '{name}' the backend does not feed")
        array = np.ascontiguousarray(feed[name], dtype=dtype)
        want = tuple(shapes[name])
        if len(want) != array.ndim or any(w not in (-1, a) for w, a in zip(want, array.shape)):
            raise BackendError(f"the TensorRT engine's input '{name}' is {want}, the backend feeds {array.shape}: "
                               "rebuild the engine (delete its cache folder)")
        ready[name] = array
    return ready


def cached_engine(path: Path, build: Callable[[], bytes]) -> bytes:
    """The engine cached at `path`, made by `build` (minutes on a Jetson) and cached there
    first if it is missing.

    One process builds a given engine at a time: the build runs under an `flock` on
    `<engine>.lock` (removed after), and a second deploy of the same bundle on the same GPU
    waits for the first (saying for whom) and then loads the engine it cached, instead of
    building it again beside it. Written whole and synced, or not at all (`replace_bytes`): a
    build killed mid-write, or a robot switched off just after, must not leave a truncated or
    empty engine under the name the next start trusts. Raises what `build` raises, and
    OSError from the cache's disk."""
    def waiting(holder: str) -> None:
        log.info("waiting for %s, which is building the TensorRT engine %s", holder, path.name)

    with hold_file_lock(path.with_name(path.name + ".lock"), f"pid {os.getpid()} (deploy)", on_wait=waiting):
        if not path.is_file():
            replace_bytes(path, build())
        return path.read_bytes()


def import_tensorrt():
    """The tensorrt module, or BackendError saying what to use instead."""
    try:
        import tensorrt
    except ImportError:
        raise BackendError(
            "tensorrt is not importable here; on a Jetson it comes with JetPack (python3-libnvinfer), "
            "on x86 `pip install tensorrt`; or run --backend onnxruntime"
        ) from None
    return tensorrt


class TensorRTBackend(Backend):
    """The chunk graph as a TensorRT engine, built once per key and cached (module docstring)."""

    name = "tensorrt"

    def __init__(self, bundle: Bundle, options: BackendOptions | None = None) -> None:
        super().__init__(bundle, options)
        trt = import_tensorrt()
        try:
            import torch  # device buffers
        except ImportError:  # the robot-side install has no torch: ONNX Runtime's TensorRT provider needs none
            raise BackendError("the tensorrt backend needs torch for its GPU buffers and this install has none; "
                               "run --backend onnxruntime (its TensorRT execution provider builds the engine)") from None

        if not torch.cuda.is_available():
            raise BackendError("the tensorrt backend needs a CUDA GPU; run --backend onnxruntime")
        if "chunk" not in bundle.graphs:
            raise BackendError(f"bundle {bundle.path} has no chunk graph (it was built for the torch backend); "
                               "rebuild it from the checkpoint: platform deploy --policy CKPT --backend tensorrt "
                               "--bundle-only")
        self._torch, self._trt = torch, trt
        # With its SM count: Jetson modules of one family may share a name (an engine is tuned
        # to the GPU it was built on, and a cloned disk image carries the cache to another).
        device = torch.cuda.get_device_properties(torch.cuda.current_device())
        gpu = f"{device.name} ({device.multi_processor_count} SMs)"
        precision = self.options.precision
        key = engine_key(bundle.digest, trt.__version__, gpu, precision, builder_digest())
        path = engine_cache_dir(bundle, self.options) / f"{key}.engine"
        logger = trt.Logger(trt.Logger.WARNING)

        def build() -> bytes:
            log.info("building a TensorRT engine for %s (%s, %s); minutes on a Jetson", bundle.path, gpu, precision)
            return self._build(trt, logger, bundle.graphs["chunk"], precision)

        runtime = trt.Runtime(logger)
        self.engine = runtime.deserialize_cuda_engine(cached_engine(path, build))
        if self.engine is None:  # TensorRT returns None for an engine of another version or a damaged file
            raise BackendError(f"TensorRT could not load the cached engine {path} (another TensorRT, or damaged); "
                               "delete it and run again to rebuild it")
        self.context = self.engine.create_execution_context()
        self.engine_path = path
        # The precision built (fp8 is built as fp16): what runs_on says.
        self.precision = "fp16" if precision == "fp8" else precision
        self._dtypes = {name: np.dtype(trt.nptype(self.engine.get_tensor_dtype(name))) for name in INPUTS}
        self._shapes = {name: tuple(self.engine.get_tensor_shape(name)) for name in INPUTS}

    def runs_on(self) -> str:
        """The GPU and the precision the engine was built in (fp8 asked is built fp16)."""
        return f"cuda ({self.precision})"

    @staticmethod
    def _build(trt, logger, onnx_path: Path, precision: str) -> bytes:
        builder = trt.Builder(logger)
        # TensorRT 10 networks are always explicit-batch (flag 0); 8.x (JetPack 6.0) needs the flag
        explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
        network = builder.create_network(0 if explicit is None or int(trt.__version__.split(".")[0]) >= 10
                                         else 1 << int(explicit))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        if precision in ("fp16", "fp8"):
            if precision == "fp8":
                log.warning("fp8 needs a quantised graph, which this export does not produce: building fp16")
            config.set_flag(trt.BuilderFlag.FP16)
        elif precision == "bf16":
            if not hasattr(trt.BuilderFlag, "BF16"):
                raise BackendError(f"bf16 engines need TensorRT 9 or newer, this is {trt.__version__}; "
                                   "set jetson.precision=fp16")
            config.set_flag(trt.BuilderFlag.BF16)
        else:  # fp32 means fp32: TensorRT computes matmuls in TF32 unless told not to
            config.clear_flag(trt.BuilderFlag.TF32)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see its log above)")
        return bytes(engine)

    def _chunk(self, inputs: ModelInputs, noise: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        torch = self._torch
        feed = {"images": inputs.images, "image_masks": inputs.image_masks, "tokens": inputs.tokens,
                "token_masks": inputs.token_masks, "state": inputs.state, "noise": noise,
                "target": target, "weight": weight}
        keep = []
        for name, array in engine_feeds(feed, self._dtypes, self._shapes).items():
            buffer = torch.from_numpy(array).cuda()
            keep.append(buffer)
            self.context.set_tensor_address(name, buffer.data_ptr())
        out = torch.empty(noise.shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address("actions", out.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError("TensorRT failed to run the chunk engine")
        stream.synchronize()
        return out.cpu().numpy()
