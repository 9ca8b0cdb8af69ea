"""Writing a bundle's reference chunks (the workstation side of deploy/reference.py).

One observation (per camera a smooth image with some noise, a state near the training mean,
an instruction of the policy's own words), one draw of noise, and what the torch policy
computes from them in float32 on the CPU: the plain chunk, and a chunk inpainted towards a
target under real-time chunking's weights, the path every chunk after a run's first takes
(its own branch of the exported graph, its own module in torch). Needs torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.deploy.backends.base import Inpainting
from shallowpi.deploy.preprocess import IMAGE_PREFIX, STATE
from shallowpi.deploy.reference import REFERENCE, ParityError
from shallowpi.policy.action_selection import rtc_weights


def reference_observation(bundle: Any, seed: int = 0) -> dict[str, Any]:
    """A fixed observation for `bundle`'s policy: per camera a smooth uint8 image [S, S, 3]
    (S the policy's image size) with some noise, a state near the training mean (robot
    units), and up to four words of the policy's vocabulary (empty for a byte or a file
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
    """Compute `bundle`'s reference chunks with the torch backend (float32, CPU) and write
    them to bundle.path/reference.npz: the observation, the noise [1, C, A], the plain chunk
    and the inpainted one [C, A_real] (robot units) with the inpainting's target and
    weights. The caller writes the manifest after. ParityError when the policy's own chunk
    is not finite (a bundle whose reference could pass nothing)."""
    from shallowpi.deploy.backends.torch_backend import TorchBackend

    obs = reference_observation(bundle, seed)
    backend = TorchBackend(bundle)
    noise = np.random.default_rng(seed + 1).standard_normal((1, backend.chunk_len, backend.action_dim))
    noise = noise.astype(np.float32)
    plain = backend.infer(obs, noise=noise)
    # Towards the plain chunk moved by half a std: the inpainting must pull the result there.
    target = plain + 0.5 * bundle.action_stats.std[: plain.shape[-1]]
    n = len(plain)
    weight = rtc_weights(n, max(1, n // 5), max(1, n // 2)).astype(np.float32)
    inpainted = backend.infer(obs, Inpainting(target, weight), noise=noise)
    if not (np.isfinite(plain).all() and np.isfinite(inpainted).all()):
        raise ParityError(f"the policy of {bundle.path} computes a non-finite chunk in float32 on its reference "
                          "observation: check the checkpoint")
    images = {key[len(IMAGE_PREFIX):]: value for key, value in obs.items() if key.startswith(IMAGE_PREFIX)}
    path = bundle.path / REFERENCE
    np.savez_compressed(path, state=obs[STATE], task=np.asarray(obs["task"]), noise=noise, actions=plain,
                        inpaint_target=target, inpaint_weight=weight, inpainted=inpainted,
                        **{f"image_{role}": image for role, image in images.items()})
    return path
