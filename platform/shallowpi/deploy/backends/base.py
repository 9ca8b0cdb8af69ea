"""`Backend`: a verified bundle -> `infer(observation) -> chunk`, whatever runs the graph.

Every backend shares the numpy pre- and post-processing (deploy/preprocess.py): the
observation becomes the model's inputs, the graph's normalised actions become robot units.
A subclass only computes the normalised chunk, in `_chunk`. Noise comes from a numpy
generator the caller can reseed, so two backends given the same seed see the same noise
and can be compared action for action.

Real-time chunking needs the next chunk to agree with actions already committed; none of
these backends has gradients, so `infer` takes an `Inpainting` (a weight a row, policy/inpaint.py).

Names -> classes in one table (`BACKENDS`), imported lazily: the onnxruntime backend must
load on a robot without torch.
"""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.deploy.bundle import Bundle
from shallowpi.deploy.preprocess import STATE, ModelInputs, Preprocessor
from shallowpi.errors import PlatformError
from shallowpi.policy.action_selection import rtc_weights
from shallowpi.policy.action_space import mask_of, offsets_from, targets_from

log = logging.getLogger(__name__)


class BackendError(PlatformError):
    """A backend that cannot run here (missing library, provider, graph or device)."""


@dataclass(frozen=True)
class Inpainting:
    """What the next chunk must agree with. target [C, A] in robot units (the current chunk's
    actions for the same steps, padded with its last pose, never zeros), weight [C] in [0, 1]
    (1: must equal the target; a hard prefix is 1 on the frozen rows and 0 after)."""

    target: np.ndarray
    weight: np.ndarray

    @classmethod
    def hard_prefix(cls, target: np.ndarray, frozen: int) -> Inpainting:
        """target [C, A] robot units; the first `frozen` rows must equal it, the rest are free."""
        weight = np.zeros(len(target))
        weight[:frozen] = 1.0
        return cls(np.asarray(target), weight)


@dataclass
class BackendOptions:
    """device: cpu | cuda (torch), precision: fp32 | fp16 | bf16 | fp8 (what the profile
    asks; a backend uses the nearest it supports and logs it), providers (onnxruntime, in
    order of preference), graph: chunk | split (onnxruntime), cache_dir for TensorRT
    engines, threads: intra-op threads on the CPU (None: the library's default)."""

    device: str = "cpu"
    precision: str = "fp32"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    graph: str = "chunk"
    cache_dir: str | None = None
    threads: int | None = None
    cuda_graph: bool = True


class Backend(ABC):
    """Load a bundle, `warm_up`, then `infer(observation) -> float32 [C, A_real]` in robot units."""

    name = "backend"

    def __init__(self, bundle: Bundle, options: BackendOptions | None = None) -> None:
        self.bundle = bundle
        self.options = options or BackendOptions()
        self.preprocess = Preprocessor(bundle)
        cfg = bundle.config
        self.chunk_len, self.action_dim = cfg["chunk_len"], cfg["action_dim"]
        self.real_action_dim = bundle.features["action_dim"]
        # policy.actions=delta: these dimensions are predicted as offsets from the state.
        self.delta_mask = mask_of(cfg.get("delta_dims", []), self.real_action_dim)
        self._rng = np.random.default_rng(0)

    def runs_on(self) -> str:
        """Where and in what precision the chunks are computed, as the library set it up (not
        as asked: a provider or a precision it lacks falls back). The deploy banner and its
        report say this."""
        return f"{self.options.device} ({self.options.precision})"

    def reset(self, seed: int) -> None:
        """Reseed the noise (one evaluation episode repeats exactly)."""
        self._rng = np.random.default_rng(seed)

    def noise(self) -> np.ndarray:
        """float32 [1, C, A] standard normal from this backend's generator."""
        return self._rng.standard_normal((1, self.chunk_len, self.action_dim)).astype(np.float32)

    def infer(self, obs: Mapping[str, Any], inpainting: Inpainting | None = None,
              noise: np.ndarray | None = None) -> np.ndarray:
        """Observation (lerobot keys + `task`) -> actions float32 [C, A_real], robot units.
        BackendError (one line: the backend and the library's first line) when the library
        fails to compute the chunk (CUDA out of memory, a TensorRT enqueue failure): the
        parity check and the warm-up, before the loop, had shown its own exception types as
        tracebacks; in the loop it is a fault either way."""
        inputs = self.preprocess(obs)
        state = np.asarray(obs[STATE], np.float32)[: self.real_action_dim]  # robot units
        target = np.zeros((1, self.chunk_len, self.action_dim), np.float32)
        weight = np.zeros((1, self.chunk_len, 1), np.float32)
        if inpainting is not None:
            n = min(len(inpainting.target), self.chunk_len)
            goal = offsets_from(np.asarray(inpainting.target[:n], np.float32), state, self.delta_mask)
            target[0, :n, : self.real_action_dim] = self.bundle.action_stats.normalize(goal)
            weight[0, :n, 0] = inpainting.weight[:n]
        try:
            x = self._chunk(inputs, self.noise() if noise is None else noise, target, weight)  # [1, C, A]
        except PlatformError:
            raise
        except Exception as exc:  # onnxruntime's, TensorRT's, torch's own error types
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackendError(f"the {self.name} backend failed to compute a chunk ({why})") from exc
        predicted = self.bundle.action_stats.denormalize(x[0, :, : self.real_action_dim])
        return targets_from(predicted, state, self.delta_mask)

    def warm_up(self, obs: Mapping[str, Any], runs: int = 3) -> list[float]:
        """Run `runs` chunks (allocation, kernel selection, engine build, CUDA graph capture
        happen here, not while the robot waits); returns each one's seconds. The first is
        plain (the robot's first chunk), the rest inpainted towards it, as every chunk of
        real-time chunking after the first is: that path (the torch backend's inpainted
        graph) must not be cold on the robot either, and the last time, which the
        executor takes as its first delay estimate, is a steady-state one."""
        times: list[float] = []
        noise = np.zeros((1, self.chunk_len, self.action_dim), np.float32)
        inpainting = None
        for _ in range(runs):
            t0 = time.perf_counter()
            chunk = self.infer(obs, inpainting, noise=noise)
            times.append(time.perf_counter() - t0)
            if inpainting is None:  # the rest agree with the first, as rtc's chunks do
                inpainting = Inpainting(chunk, rtc_weights(len(chunk), 1, max(1, len(chunk) // 2)))
        log.info("%s warmed up: %s ms", self.name, ", ".join(f"{1e3 * t:.0f}" for t in times))
        return times

    @abstractmethod
    def _chunk(self, inputs: ModelInputs, noise: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Normalised actions [1, C, A] from noise [1, C, A] with inpainting target [1, C, A]
        and weight [1, C, 1] (all zero: plain sampling)."""


# name -> (module, class): one table; modules load only when chosen.
BACKENDS: dict[str, tuple[str, str]] = {
    "torch": ("shallowpi.deploy.backends.torch_backend", "TorchBackend"),
    "onnxruntime": ("shallowpi.deploy.backends.onnxrt", "OnnxRuntimeBackend"),
    "tensorrt": ("shallowpi.deploy.backends.tensorrt_backend", "TensorRTBackend"),
}


def make_backend(name: str, bundle: Bundle, options: BackendOptions | None = None) -> Backend:
    """The backend called `name` over `bundle`. Raises BackendError for an unknown name or
    one that cannot run here (the message says what to install or choose instead)."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}")
    module, cls = BACKENDS[name]
    try:
        backend_class = getattr(importlib.import_module(module), cls)
    except ImportError as exc:  # torch on the robot's torch-free install, say
        raise BackendError(f"the {name} backend needs {exc.name}, which is not installed here: install it, or choose "
                           f"another backend ({', '.join(b for b in BACKENDS if b != name)})") from None
    return backend_class(bundle, options)
