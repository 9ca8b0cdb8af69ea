"""ONNX Runtime backend: the bundle's graphs on the CPU, CUDA or TensorRT execution provider.

graph "chunk" runs the unrolled chunk graph (one call a chunk, inpainting inside);
"split" runs the prefix graph once and the step graph per Euler step (inpainting in numpy),
which costs a copy of the KV cache in and out of each step but exports and builds faster.
The sessions record which provider each node went to (ort_placement.py): `runs_on` names
the nodes that fell off the first provider, and TensorRT's engines when it built more than one.
The TensorRT provider caches its engines under `cache_dir`, in a folder keyed by the
bundle's digest, the onnxruntime and TensorRT versions and the precision asked
(tensorrt_backend.engine_cache_dir): the provider names its engine files by subgraph and
the GPU's compute capability, so after a JetPack upgrade, or an fp32 run after an fp16 one,
a file of the same name would be another build's. It writes them itself, unsynchronised:
`open_sessions` syncs them, and sets aside a cache it can no longer read.

No torch here: this is the robot's backend on a Jetson without a torch wheel.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from shallowpi.deploy.backends.base import Backend, BackendError, BackendOptions
from shallowpi.deploy.backends.ort_placement import RECORD_ASSIGNMENT, session_placement
from shallowpi.deploy.bundle import Bundle
from shallowpi.deploy.preprocess import ModelInputs
from shallowpi.durable_files import fsync_path, fsync_tree, hold_file_lock
from shallowpi.policy.inpaint import inpainted_euler

log = logging.getLogger(__name__)

CHUNK_INPUTS = ("images", "image_masks", "tokens", "token_masks", "state", "noise", "target", "weight")
# onnxruntime's error (EP_FAIL) when TensorRT cannot read an engine file the provider cached;
# a hard failure of the session, not a fallback to the next provider.
ENGINE_UNREADABLE = "TensorRT EP could not deserialize engine from cache"
SET_ASIDE_SUFFIX = ".unreadable"  # <engine cache><this>: the last cache set aside as unreadable

T = TypeVar("T")


class SplitGraphs:
    """prefix + step sessions as one chunk function (shared with export_onnx.parity).

    The prefix graph's outputs (the KV cache, and the pooled instruction for a policy
    whose expert reads it) go back into every step under their own names.
    """

    def __init__(self, prefix: Any, step: Any, num_steps: int) -> None:
        self.prefix, self.step, self.num_steps = prefix, step, num_steps

    def __call__(self, prefix_inputs: Mapping[str, np.ndarray], state: np.ndarray, noise: np.ndarray,
                 target: np.ndarray | None = None, weight: np.ndarray | None = None) -> np.ndarray:
        names = [out.name for out in self.prefix.get_outputs()]
        cache = dict(zip(names, self.prefix.run(None, dict(prefix_inputs))))

        def velocity(x: np.ndarray, t: float) -> np.ndarray:
            feed = {"x_t": x.astype(np.float32), "t": np.full((x.shape[0],), t, np.float32), "state": state, **cache}
            return self.step.run(None, feed)[0]

        target = np.zeros_like(noise) if target is None else target
        weight = np.zeros((*noise.shape[:2], 1), np.float32) if weight is None else weight
        return inpainted_euler(velocity, noise, target, weight, self.num_steps).astype(np.float32)


def _runtime_versions(root: Path = Path("/")) -> str:
    """onnxruntime's version, TensorRT's where it is importable, and the L4T release on a
    Jetson: what builds the provider's engines (engine_cache_dir keys its folder by them).
    The provider loads the system's TensorRT whether or not its Python bindings are in the
    venv: a JetPack upgrade (TensorRT 8.6 -> 10) under the same onnxruntime wheel kept the
    key, and the old engines failed to load on every start."""
    import importlib.util

    import onnxruntime as ort

    from shallowpi.deploy.jetson import detect

    versions = f"onnxruntime {ort.__version__}"
    if (machine := detect(root)).is_jetson:
        versions += f" L4T {machine.l4t}"
    if importlib.util.find_spec("tensorrt") is not None:
        try:  # JetPack's bindings: built against the system's numpy, which a venv may not have
            import tensorrt

            versions += f" tensorrt {tensorrt.__version__}"
        except Exception as exc:  # the version only names a cache folder: the provider loads its own libraries
            log.warning("tensorrt is installed but does not import (%s); its engine cache is keyed without "
                        "its version", exc)
            versions += " tensorrt ?"
    return versions


def engine_build(options: BackendOptions) -> str:
    """What the TensorRT provider's engines are built by and for: the runtime versions and
    the precision asked (its engine file names carry neither)."""
    return f"{_runtime_versions()} {options.precision}"


def session_options(providers: tuple[str, ...], options: BackendOptions, bundle: Bundle) -> list[Any]:
    """The providers ONNX Runtime has, in the asked order, with TensorRT's precision and
    engine cache set. Logs the ones it lacks; raises BackendError if none is left."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    chosen: list[Any] = []
    for name in providers:
        if name not in available:
            log.warning("onnxruntime here lacks %s (has %s); skipping it", name, ", ".join(available))
            continue
        if name == "TensorrtExecutionProvider":
            from shallowpi.deploy.backends.tensorrt_backend import engine_cache_dir

            if options.precision in ("bf16", "fp8"):
                log.info("onnxruntime's TensorRT provider builds fp16 for %s", options.precision)
            cache = engine_cache_dir(bundle, options, engine_build(options))
            if not any(cache.iterdir()):  # else the session loads them in seconds
                log.info("onnxruntime's TensorRT provider builds this bundle's engines now (minutes, once); "
                         "cached in %s", cache)
            chosen.append((name, {
                "trt_fp16_enable": options.precision in ("fp16", "bf16", "fp8"),
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
            }))
        elif name == "CUDAExecutionProvider" and options.precision == "fp32":
            # Its matmuls and convolutions take TF32 (10 mantissa bits) by default on Ampere
            # and later (an Orin, a Thor): fp32 asked is computed in fp32.
            chosen.append((name, {"use_tf32": "0"}))
        else:
            chosen.append(name)
    if not chosen:
        raise BackendError(
            f"none of the providers {list(providers)} is in this onnxruntime (has {available}); "
            "pass jetson.providers=[CPUExecutionProvider] or install onnxruntime-gpu"
        )
    return chosen


def engine_cache(providers: list[Any]) -> str | None:
    """The TensorRT provider's engine cache folder among `session_options`' providers, or None
    without that provider."""
    return next((p[1]["trt_engine_cache_path"] for p in providers if not isinstance(p, str)), None)


def engine_cache_lock(providers: list[Any]) -> contextlib.AbstractContextManager[None]:
    """Held while sessions are made with TensorRT's provider among `providers`: the flock on
    `<engine cache>.lock`, as the tensorrt backend builds under (`cached_engine`). The
    provider writes its engines into the cache itself, unsynchronised; a second deploy of the
    same bundle would build beside the first, or load an engine file the first is writing.
    The second waits and then loads the cached engines in seconds. No lock without it."""
    cache = engine_cache(providers)
    if cache is None:
        return contextlib.nullcontext()

    def waiting(holder: str) -> None:
        log.info("waiting for %s, which is building onnxruntime's TensorRT engines in %s", holder, cache)

    return hold_file_lock(Path(cache + ".lock"), f"pid {os.getpid()} (deploy)", on_wait=waiting)


def open_sessions(make: Callable[[], T], providers: list[Any]) -> T:
    """`make()`, which opens the backend's sessions with `providers`, under the engine
    cache's lock (`engine_cache_lock`). With TensorRT's provider among them, the engine
    files it wrote are synced to disk before the lock is let go.

    The provider writes its engines itself, unsynchronised, and reads a cached one back at
    every later start: a power cut during the first build (minutes) or just after it left
    an empty or cut-short file, and every later session failed with onnxruntime's
    "could not deserialize engine from cache" (a rebuilt bundle keeps its digest, so its
    cache folder). Such a cache is set aside as `<folder>.unreadable` (replacing one set
    aside before: kept to look at, at most one folder's worth of disk) and `make()` tried
    once more, which builds the engines again. BackendError in one line naming the folder
    to remove when that fails too, or the folder cannot be moved; other errors pass
    unchanged."""
    cache = engine_cache(providers)
    with engine_cache_lock(providers):
        if cache is None:
            return make()
        try:
            made = make()
        except Exception as exc:
            if ENGINE_UNREADABLE not in str(exc):
                raise
            aside = Path(cache + SET_ASIDE_SUFFIX)
            try:
                shutil.rmtree(aside, ignore_errors=True)
                Path(cache).rename(aside)
                Path(cache).mkdir()
            except OSError as moving:
                raise BackendError(f"onnxruntime's TensorRT provider cannot read an engine it cached in {cache} "
                                   f"({_first_line(exc)}), and the folder cannot be moved aside ({moving}); remove "
                                   "it, and the next deploy builds the engines again (minutes)") from None
            log.warning("onnxruntime's TensorRT provider cannot read an engine it cached (%s); moved its cache to "
                        "%s and building the engines again (minutes)", _first_line(exc), aside)
            try:
                made = make()
            except Exception as again:
                if ENGINE_UNREADABLE not in str(again):
                    raise
                raise BackendError(f"onnxruntime's TensorRT provider cannot read the engines it cached in {cache}, "
                                   f"even built again ({_first_line(again)}); remove that folder, or deploy without "
                                   "TensorRT (jetson.providers=[CUDAExecutionProvider,CPUExecutionProvider])") \
                    from None
        # The engines, and the folder's entries: a power cut after this leaves them whole.
        fsync_tree(cache)
        fsync_path(Path(cache).parent)
        return made


def _first_line(exc: BaseException) -> str:
    """An exception's first line of text (onnxruntime's run on), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class OnnxRuntimeBackend(Backend):
    """The bundle's ONNX graphs in ONNX Runtime sessions (module docstring)."""

    name = "onnxruntime"

    def __init__(self, bundle: Bundle, options: BackendOptions | None = None) -> None:
        super().__init__(bundle, options)
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("the onnxruntime backend needs onnxruntime: pip install onnxruntime "
                               "(onnxruntime-gpu on a CUDA machine; NVIDIA's wheel on a Jetson)") from None
        graph = self.options.graph
        needed = ["chunk"] if graph == "chunk" else ["prefix", "step"]
        if graph not in ("chunk", "split"):
            raise BackendError(f"unknown graph '{graph}'; choose chunk or split")
        missing = [g for g in needed if g not in bundle.graphs]
        if missing:
            raise BackendError(f"bundle {bundle.path} has no {', '.join(missing)} graph (it was built for the "
                               "torch backend); rebuild it from the checkpoint: platform deploy --policy CKPT "
                               "--backend onnxruntime --bundle-only")
        so = ort.SessionOptions()
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        so.add_session_config_entry(RECORD_ASSIGNMENT, "1")  # an onnxruntime without the API ignores it
        providers = session_options(self.options.providers, self.options, bundle)

        def session(name: str) -> Any:
            try:
                made = ort.InferenceSession(str(Path(bundle.graphs[name])), so, providers=providers)
            except Exception as exc:  # onnxruntime's own error types (Fail, InvalidGraph, ...)
                if ENGINE_UNREADABLE in str(exc):
                    raise  # its cache, not the graph: open_sessions sets the cache aside and tries again
                raise BackendError(f"onnxruntime {ort.__version__} cannot load the bundle's {name} graph "
                                   f"({_first_line(exc)}); an older onnxruntime than the graph needs? upgrade it, "
                                   "or rebuild the bundle") from None
            # A provider failing later is an error, not a silent rerun on the next provider
            # (the CPU, on a Jetson): the executor then holds the robot and says why.
            made.disable_fallback()
            return made

        asked = [p if isinstance(p, str) else p[0] for p in providers]
        steps = bundle.config.get("num_steps", 10)
        sessions: list[Any] = open_sessions(lambda: [session(name) for name in needed], providers)
        if graph == "chunk":
            self._session = sessions[0]
        else:
            self._split = SplitGraphs(sessions[0], sessions[1], steps)
        made = sessions[0]
        # What the session took, not what was asked: one that failed to set up (a TensorRT
        # build error, no CUDA driver) is left out of it.
        self.providers = list(made.get_providers())
        if self.providers[:1] != asked[:1]:
            log.warning("onnxruntime runs the graphs on %s, not %s: %s could not be set up here",
                        self.providers[0], asked[0], asked[0])
        self.placement = session_placement(sessions)
        self._runtime = f"onnxruntime {ort.__version__}"
        if self.placement is None:
            log.info("%s does not say which provider runs each node", self._runtime)
        elif self.providers[0] == "TensorrtExecutionProvider" and (cut := self.placement.line(self.providers[0])):
            # TensorRT's graph cut in pieces: each piece's inputs and outputs cross between
            # the engines and the other providers every chunk.
            log.warning("onnxruntime's TensorRT provider does not run the whole graph: %s", cut)

    def runs_on(self) -> str:
        """The provider the session runs on, and the precision it computes in (fp16 only
        through TensorRT with a reduced precision asked; fp32 otherwise, with TF32 matmuls
        through TensorRT, and through CUDA unless fp32 was asked), then the nodes another provider took, e.g. "Tensorrt (fp16); 3 of
        41 nodes on CPU (NonZero)", or on a GPU provider without the assignment record, that
        it is unknown."""
        first = self.providers[0].removesuffix("ExecutionProvider")
        if self.providers[0] == "CUDAExecutionProvider" and self.options.precision != "fp32":
            precision = "fp32, TF32 matmuls"  # its default, which fp32 asked turns off (session_options)
        elif self.providers[0] != "TensorrtExecutionProvider":
            precision = "fp32"
        elif self.options.precision != "fp32":
            precision = "fp16"
        else:
            # TensorRT builds TF32 matmuls (10 mantissa bits) unless its builder is told not
            # to, and onnxruntime's provider has no option to tell it (the tensorrt backend
            # does: --backend tensorrt computes fp32 in fp32).
            precision = "fp32, TF32 matmuls"
        if self.placement is not None:
            fallen = self.placement.line(self.providers[0])
        else:  # on the CPU nothing can fall off it
            fallen = "" if first == "CPU" else f"node placement unknown ({self._runtime} records none)"
        return f"{first} ({precision})" + (f"; {fallen}" if fallen else "")

    def _chunk(self, inputs: ModelInputs, noise: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        prefix = {"images": inputs.images, "image_masks": inputs.image_masks,
                  "tokens": inputs.tokens, "token_masks": inputs.token_masks}
        if self.options.graph == "split":
            return self._split(prefix, inputs.state, noise, target, weight)
        feed = {**prefix, "state": inputs.state, "noise": noise, "target": target, "weight": weight}
        return self._session.run(None, feed)[0]
