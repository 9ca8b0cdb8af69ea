"""torch backend: the checkpoint's weights through `ChunkSampler` (CUDA graphs on CUDA).

Plain chunks go through the fast sampler; an inpainted chunk (real-time chunking) through
the same unrolled computation the ONNX chunk graph is traced from (export_onnx.ChunkGraph).
Precision: bf16 / fp16 cast the towers on a GPU (`Pi0Model.cast_towers`); on the CPU
the model stays float32.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from shallowpi.deploy.backends.base import Backend, BackendError, BackendOptions
from shallowpi.deploy.bundle import Bundle
from shallowpi.deploy.export_onnx import ChunkGraph
from shallowpi.deploy.preprocess import ModelInputs
from shallowpi.policy.config import PolicyConfig
from shallowpi.policy.model import Pi0Model
from shallowpi.policy.policy import Policy
from shallowpi.policy.sampler import ChunkSampler
from shallowpi.policy.weights import CheckpointError

log = logging.getLogger(__name__)

# precision asked -> the towers' dtype on a GPU (None: float32). No fp8 kernels here: bf16.
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.bfloat16}
NAMES = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def load_model(weights: Path, device: torch.device) -> Pi0Model:
    """The checkpoint's Pi0Model alone, in eval mode on `device`. The backend needs neither
    the Policy's tokenizer (the bundle's preprocessing tokenizes) nor its normalisation
    (Backend.infer applies the bundle's): `Policy.load` built the tokenizer its config names,
    a path on the training machine (a π0 student's tokenizer.json), and failed wherever that
    path is missing, which on a robot it is. CheckpointError (one line) for weights that do
    not fit the architecture their header describes."""
    from safetensors.torch import load_file

    file = weights / "model.safetensors" if weights.is_dir() else weights
    model = Pi0Model(PolicyConfig.from_dict(json.loads(Policy.read_metadata(file)["config"])))
    state = {k.removeprefix("model."): v for k, v in load_file(str(file)).items() if k.startswith("model.")}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(f"{file} does not match the architecture its header describes") from None
    return model.to(device).eval()


class TorchBackend(Backend):
    """The checkpoint's weights in torch: ChunkSampler, or the inpainted chunk (module docstring)."""

    name = "torch"

    def __init__(self, bundle: Bundle, options: BackendOptions | None = None) -> None:
        super().__init__(bundle, options)
        device = torch.device(self.options.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendError(f"device {device} asked for (jetson.device) but torch sees no CUDA GPU; "
                               "run on the CPU with jetson.device=cpu")
        if self.options.threads:
            torch.set_num_threads(self.options.threads)
        model = load_model(bundle.weights, device)
        dtype = DTYPES.get(self.options.precision) if device.type == "cuda" else None
        if dtype is not None:
            model.cast_towers(dtype)
        self.dtype = NAMES[dtype]  # in the profiles' terms, which the banner compares with the asked
        if self.dtype != self.options.precision:
            log.info("torch computes the chunks in %s on %s (%s asked)", self.dtype, device, self.options.precision)
        self.device, self.model = device, model
        self.sampler = ChunkSampler(self.model, num_steps=bundle.config.get("num_steps"),
                                    cuda_graph=self.options.cuda_graph)
        self.inpainted = ChunkGraph(self.model, self.sampler.num_steps)

    def runs_on(self) -> str:
        """The device and the dtype the towers were cast to (fp32 on a CPU, fp8 as bf16)."""
        return f"{self.device} ({self.dtype})"

    @torch.inference_mode()
    def _chunk(self, inputs: ModelInputs, noise: np.ndarray, target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        def t(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(x)).to(self.device)

        args = (t(inputs.images), t(inputs.image_masks), t(inputs.tokens), t(inputs.token_masks),
                t(inputs.state), t(noise))
        if weight.any():
            x = self.inpainted(*args, t(target), t(weight))
        else:
            x = self.sampler(*args)
        return x.float().cpu().numpy()
