"""Random crop at training, the same-size center crop at inference (Diffusion Policy).

A crop of `scale` of each side, at a random position per sample while training and at
the center otherwise, is then resized to the model's input like any image. The shift
makes the policy robust to the few pixels its own errors move the scene by; the center
crop at test keeps the expected view. `scale` 1.0 is off (the whole frame, both modes).

    images uint8 [B, H, W, C] -> uint8 [B, h, w, C], h = round(scale * H), w likewise
"""

from __future__ import annotations

import torch
from torch import Tensor

from shallowpi.errors import ConfigError


def crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(h, w) of a `scale` crop of a height x width image, each side at least 1 pixel.
    ConfigError unless 0 < scale <= 1."""
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"policy.crop_scale must be in (0, 1], got {scale}")
    return max(1, round(scale * height)), max(1, round(scale * width))


def crop(images: Tensor, scale: float, random: bool, generator: torch.Generator | None = None) -> Tensor:
    """A `scale` crop of each image: at a random offset per sample (`random`) or centred."""
    B, H, W = images.shape[:3]
    h, w = crop_size(H, W, scale)
    if (h, w) == (H, W):
        return images
    if not random:
        top, left = (H - h) // 2, (W - w) // 2
        return images[:, top : top + h, left : left + w]
    tops = torch.randint(0, H - h + 1, (B,), generator=generator).tolist()
    lefts = torch.randint(0, W - w + 1, (B,), generator=generator).tolist()
    return torch.stack([images[i, t : t + h, s : s + w] for i, (t, s) in enumerate(zip(tops, lefts))])
