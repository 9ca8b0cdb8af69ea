"""The bundle's reference chunk: what the policy computes, checked on the robot before it moves.

The export compares each ONNX graph with torch on the workstation (export_onnx.parity).
What the robot runs is another computation: a TensorRT engine built there, in fp16 on an
Orin, with kernels TensorRT picked for that GPU; onnxruntime's CUDA provider. A layer that
overflows in fp16 gives a chunk that is not the policy's, and nothing else would show it
before the arm moved. So a bundle carries one observation (images, state, instruction),
one draw of noise and the chunk the torch policy computes from them in float32
(`reference.npz`, written by `write_reference` when the bundle is built), and `check`
runs the robot's backend on the same inputs and measures the difference in units of each
action dimension's standard deviation (the scale the policy was trained in).

The default tolerance is 0.05 std. Measured on the shipped arm teacher's bundle (BENCHMARKS.md
"Deployment", tools/bench/deploy_parity.py): onnxruntime differs from torch by 5e-7 std,
torch under CPU autocast by 9e-4 in fp16 and 6e-3 in bf16 (mixed precision, as a TensorRT
engine computes), and another draw of noise changes the chunk by 0.05 std at the median
joint (0.03-0.27). So a sound reduced-precision engine passes with room to spare, and one
that is off by as much as the policy's own sampling spread, or by whole stds as an
overflow is, does not.

This module imports without torch (the robot side); `write_reference` needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.deploy.preprocess import IMAGE_PREFIX, STATE
from shallowpi.errors import PlatformError

REFERENCE = "reference.npz"
DEFAULT_TOLERANCE_STD = 0.05


class ParityError(PlatformError):
    """The robot's backend computes another chunk than the policy on the bundle's reference."""


@dataclass(frozen=True)
class Parity:
    """The backend's chunk against the reference: the largest difference over the chunk, in
    action standard deviations (`error_std`), where it is (`step`, `joint`: an index into
    the action, named by `joint_name` where the bundle names its joints)."""

    error_std: float
    step: int
    joint: int
    joint_name: str

    def line(self) -> str:
        """One line for the banner and the report."""
        return (f"{self.error_std:.1e} action std from the exported policy at its largest "
                f"(step {self.step}, {self.joint_name})")


def reference_observation(bundle: Any, seed: int = 0) -> dict[str, Any]:
    """A fixed observation for `bundle`'s policy: per camera a smooth uint8 image [S, S, 3]
    (S the policy's image size) with some noise, a state near the training mean (robot
    units), and an instruction of the policy's own words (empty for a byte or a file
    tokenizer, which read any text)."""
    rng = np.random.default_rng(seed)
    size = int(bundle.config["vision"]["image_size"])
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    obs: dict[str, Any] = {}
    for i, role in enumerate(bundle.cameras):
        base = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, 1 - ramp), np.full((size, size), i % 2)], -1)
        image = 255 * np.clip(0.8 * base + 0.2 * rng.random((size, size, 3)), 0, 1)
        obs[IMAGE_PREFIX + role] = image.astype(np.uint8)
    stats = bundle.state_stats
    obs[STATE] = (stats.mean + 0.5 * stats.std * rng.standard_normal(stats.mean.shape)).astype(np.float32)
    words = list(bundle.config.get("vocabulary") or ())
    obs["task"] = " ".join(words[: max(0, int(bundle.config["max_text_tokens"]) - 2)][:4])
    return obs


def write_reference(bundle: Any, seed: int = 0) -> Path:
    """Compute the reference chunk with the torch policy (float32, CPU) for `bundle` and
    write it to bundle.path/reference.npz; the caller writes the manifest after."""
    from shallowpi.deploy.backends.torch_backend import TorchBackend

    obs = reference_observation(bundle, seed)
    backend = TorchBackend(bundle)
    noise = np.random.default_rng(seed + 1).standard_normal((1, backend.chunk_len, backend.action_dim))
    noise = noise.astype(np.float32)
    actions = backend.infer(obs, noise=noise)
    images = {key[len(IMAGE_PREFIX):]: value for key, value in obs.items() if key.startswith(IMAGE_PREFIX)}
    path = bundle.path / REFERENCE
    np.savez_compressed(path, state=obs[STATE], task=np.asarray(obs["task"]), noise=noise, actions=actions,
                        **{f"image_{role}": image for role, image in images.items()})
    return path


def check(backend: Any, tolerance_std: float = DEFAULT_TOLERANCE_STD) -> Parity | None:
    """Run `backend` on its bundle's reference observation and noise; the `Parity` of its
    chunk against the reference, or None for a bundle built before references were written.
    Raises ParityError (one line) when the difference exceeds `tolerance_std` or the chunk
    is not finite: the backend must not drive the robot."""
    bundle = backend.bundle
    path = bundle.path / REFERENCE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        obs: dict[str, Any] = {STATE: saved["state"], "task": str(saved["task"])}
        obs.update({IMAGE_PREFIX + role: saved[f"image_{role}"] for role in bundle.cameras})
        noise, expected = saved["noise"], saved["actions"]
    actions = backend.infer(obs, noise=noise)
    names = json.loads(bundle.checkpoint_metadata.get("joint_names") or "[]")
    if not np.isfinite(actions).all():
        raise ParityError(f"the {backend.name} backend on {backend.runs_on()} computes a non-finite chunk from the "
                          f"bundle's reference observation: {_remedy(backend)}")
    error = np.abs(actions - expected) / np.maximum(bundle.action_stats.std[: expected.shape[-1]], 1e-6)
    step, joint = np.unravel_index(int(np.argmax(error)), error.shape)
    name = names[joint] if joint < len(names) else f"action {joint}"
    parity = Parity(float(error[step, joint]), int(step), int(joint), name)
    if not parity.error_std <= tolerance_std:
        raise ParityError(f"the {backend.name} backend on {backend.runs_on()} differs from the exported policy by "
                          f"{parity.error_std:.3f} action std (> deploy.parity_tolerance {tolerance_std:g}) at step "
                          f"{parity.step}, {name}, on the bundle's reference observation: {_remedy(backend)}")
    return parity


def _remedy(backend: Any) -> str:
    """What to run instead, by backend."""
    if backend.name == "tensorrt":
        return "its engine is not the policy; build it in float32 (jetson.precision=fp32) or run --backend onnxruntime"
    return "run another backend (--backend), and report this with the bundle"
