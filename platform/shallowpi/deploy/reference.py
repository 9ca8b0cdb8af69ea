"""The bundle's reference chunks: what the policy computes, checked on the robot before it moves.

The export compares each ONNX graph with torch on the workstation (export_onnx.parity).
What the robot runs is another computation: a TensorRT engine built there, in fp16 on an
Orin, with kernels TensorRT picked for that GPU; onnxruntime's CUDA provider. A layer that
overflows in fp16 gives a chunk that is not the policy's, and nothing else would show it
before the arm moved. So a bundle carries one observation, one draw of noise and two chunks
the torch policy computes from them in float32 (`reference.npz`, deploy/export_reference.py):
the plain one, and one inpainted towards a target as every chunk after a run's first is
under real-time chunking (a branch of its own). `check` runs the robot's backend on the same
inputs and measures the largest difference, in units of each action dimension's standard
deviation (the scale the policy was trained in; under policy.actions=delta that of the
offsets, the state cancelling out).

The default tolerance is 0.05 std. Measured on the shipped arm teacher's bundle (BENCHMARKS.md
"Deployment", tools/bench/deploy_parity.py): onnxruntime differs from torch by 5e-7 std,
torch under CPU autocast by about 1e-3 in fp16 and 8e-3 in bf16 (autocast stands in for a
mixed-precision engine here; no TensorRT engine was measured), and another draw of noise
changes the chunk by 0.05 std at the median joint (0.03-0.27). So a sound reduced-precision
computation passes with room to spare, and one that is off by as much as the policy's own
sampling spread, or by whole stds as an overflow is, does not.

This module imports without torch (the robot side).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.deploy.backends.base import Inpainting
from shallowpi.deploy.preprocess import IMAGE_PREFIX, STATE
from shallowpi.errors import PlatformError

REFERENCE = "reference.npz"
DEFAULT_TOLERANCE_STD = 0.05


class ParityError(PlatformError):
    """The robot's backend computes other chunks than the policy on the bundle's reference."""


@dataclass(frozen=True)
class Parity:
    """The backend's chunks against the reference: the largest difference (`error_std`, in
    action standard deviations), in which chunk (`chunk`: "plain" or "inpainted") and where
    (`step`, and `joint`, an index into the action named by `joint_name`)."""

    error_std: float
    chunk: str
    step: int
    joint: int
    joint_name: str

    def line(self) -> str:
        """One line for the banner and the report."""
        return (f"{self.error_std:.1e} action std from the torch policy's float32 chunks at the largest "
                f"({self.chunk} chunk, step {self.step}, {self.joint_name})")


def check(backend: Any, tolerance_std: float = DEFAULT_TOLERANCE_STD) -> Parity | None:
    """Run `backend` on its bundle's reference observation and noise, plain and inpainted;
    the `Parity` of its chunks against the reference, or None for a bundle built before
    references were written. Raises ParityError (one line) when a chunk is not finite, has
    another shape, or differs by more than `tolerance_std`: the backend must not drive the
    robot."""
    bundle = backend.bundle
    path = bundle.path / REFERENCE
    if not path.is_file():
        return None
    with np.load(path) as saved:
        obs: dict[str, Any] = {STATE: saved["state"], "task": str(saved["task"])}
        obs.update({IMAGE_PREFIX + role: saved[f"image_{role}"] for role in bundle.cameras})
        noise = saved["noise"]
        expected = {"plain": saved["actions"], "inpainted": saved["inpainted"]}
        inpainting = Inpainting(saved["inpaint_target"], saved["inpaint_weight"])
    where = f"the {backend.name} backend on {backend.runs_on()}"
    std = np.maximum(bundle.action_stats.std[: expected["plain"].shape[-1]], 1e-6)
    names = json.loads(bundle.checkpoint_metadata.get("joint_names") or "[]")
    worst: Parity | None = None
    for chunk, got in (("plain", backend.infer(obs, noise=noise)),
                       ("inpainted", backend.infer(obs, inpainting, noise=noise))):
        if got.shape != expected[chunk].shape:
            raise ParityError(f"{where} computes a {chunk} chunk of shape {got.shape} from the bundle's reference, "
                              f"the policy {expected[chunk].shape}: {_remedy(backend)}")
        if not np.isfinite(got).all():
            raise ParityError(f"{where} computes a non-finite {chunk} chunk from the bundle's reference "
                              f"observation: {_remedy(backend)}")
        error = np.abs(got - expected[chunk]) / std
        step, joint = np.unravel_index(int(np.argmax(error)), error.shape)
        if worst is None or error[step, joint] > worst.error_std:
            name = names[joint] if joint < len(names) else f"action {joint}"
            worst = Parity(float(error[step, joint]), chunk, int(step), int(joint), name)
    assert worst is not None
    if not worst.error_std <= tolerance_std:
        raise ParityError(f"{where} differs from the torch policy's float32 chunk by {worst.error_std:.3f} action std "
                          f"(> deploy.parity_tolerance {tolerance_std:g}) at step {worst.step} of the {worst.chunk} "
                          f"chunk, {worst.joint_name}, on the bundle's reference observation: {_remedy(backend)}")
    return worst


def _remedy(backend: Any) -> str:
    """What to run instead, by backend."""
    if backend.name == "tensorrt":
        return "its engine is not the policy; build it in float32 (jetson.precision=fp32) or run --backend onnxruntime"
    if backend.name == "onnxruntime" and backend.providers[0] != "CPUExecutionProvider":
        # The robot's install has no torch: another backend is no way out there. Through
        # TensorRT fp32 is TF32 (onnxruntime cannot say otherwise); the CUDA provider computes
        # fp32 asked in fp32.
        cuda = "jetson.precision=fp32 jetson.providers=[CUDAExecutionProvider,CPUExecutionProvider]"
        if backend.providers[0] == "CUDAExecutionProvider" and backend.options.precision == "fp32":
            return "it already computes in fp32 on CUDA: run it on the CPU (jetson.providers=[CPUExecutionProvider]), " \
                   "and report this with the bundle"
        return f"rerun in fp32 on the CUDA provider ({cuda}), and report this with the bundle"
    return "run another backend (--backend), and report this with the bundle"
