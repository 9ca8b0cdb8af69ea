"""A convolutional stem in place of the ViT's patchify convolution.

Xiao et al. 2021, "Early Convolutions Help Transformers See Better": replacing the single
stride-p p x p patchify with a few stride-2 3x3 convolutions (then a 1x1 to the ViT's
width) gives the same token grid but trains more stably and sees better from little data.
Here: log2(patch_size) stride-2 3x3 convolutions, each followed by GroupNorm and ReLU
(GroupNorm rather than BatchNorm, as Diffusion Policy does: batch statistics from small,
highly correlated robot batches make a poor normaliser and behave differently in eval).
Channels double from `channels` at the first layer, capped at the ViT width.

    images [B, 3, H, W] -> [B, width, H / patch_size, W / patch_size]
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from shallowpi.errors import ConfigError


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class ConvStem(nn.Module):
    """stride-2 3x3 conv + GroupNorm + ReLU, log2(patch_size) times, then a 1x1 conv."""

    def __init__(self, width: int, patch_size: int, channels: int = 16) -> None:
        super().__init__()
        layers = round(math.log2(patch_size)) if patch_size > 0 else 0
        if patch_size < 2 or 2**layers != patch_size:
            raise ConfigError(
                f"vision.stem=conv needs a power-of-two patch_size >= 2 (one stride-2 conv per "
                f"halving), got {patch_size}"
            )
        blocks: list[nn.Module] = []
        c_in = 3
        for i in range(layers):
            c_out = min(channels * 2**i, width)
            blocks += [
                nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.GroupNorm(_groups(c_out), c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.convs = nn.Sequential(*blocks)
        self.proj = nn.Conv2d(c_in, width, kernel_size=1)

    @property
    def weight(self) -> Tensor:
        """The stem's dtype is its weights' (what `Pi0Model.embed_prefix` casts images to)."""
        return self.proj.weight

    def forward(self, images: Tensor) -> Tensor:
        """images [B, 3, H, W] -> [B, width, H / patch_size, W / patch_size]."""
        return self.proj(self.convs(images))  # [B, width, H / p, W / p]

    def _check_blocks(self, blocks: int) -> None:
        if not 1 <= blocks <= len(self.convs) // 3:  # conv, GroupNorm, ReLU per block
            raise ValueError(f"the stem has {len(self.convs) // 3} stride-2 blocks, asked for the map after {blocks}")

    def channels_after(self, blocks: int) -> int:
        """Channels of the map after the first `blocks` stride-2 blocks (ValueError unless
        1 <= blocks <= the stem's blocks)."""
        self._check_blocks(blocks)
        return self.convs[3 * (blocks - 1)].out_channels

    def forward_with_map(self, images: Tensor, blocks: int) -> tuple[Tensor, Tensor]:
        """`forward`'s grid and the map after the first `blocks` stride-2 blocks
        [B, C, H / 2^blocks, W / 2^blocks] (what policy/keypoints.py reads). ValueError
        unless 1 <= blocks <= the stem's blocks."""
        self._check_blocks(blocks)
        early = self.convs[: 3 * blocks](images)
        return self.proj(self.convs[3 * blocks :](early)), early
