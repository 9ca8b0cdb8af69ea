"""Spatial-softmax keypoints: where in the image each learned feature is, as one token.

Levine, Finn, Darrell and Abbeel 2016, "End-to-End Training of Deep Visuomotor Policies"
(and Finn et al. 2016, "Deep Spatial Autoencoders"): a 1x1 convolution makes K feature
maps, a softmax over each map's positions (with a learned temperature) turns it into a
distribution over the image, and its expectation is a point (x, y). robomimic and
Diffusion Policy pool their ResNet features the same way. Here the K points, read from the
conv stem's stride-4 map, join a camera's ViT tokens as one more token (a linear map of the
2K coordinates, with its own position embedding). Why: at 64x64 with patch 16 a token covers
16x16 pixels, wider than the bowl in the humanoid's head camera, and its teacher carried the
cube to the bowl's average position when the bowl stood at either end of its range: where a
thing is may need a finer carrier than the grid. (Training without random crops has since
removed most of that failure; this token is not yet trained in closed loop: BENCHMARKS.md
"Closed loop", "Random crops off".)

    features [B, C, H, W] -> points [B, K, 2]: (x, y) in [-1, 1], -1 the left / top edge
    points [B, K, 2] -> token [B, 1, width]
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# The conv stem's blocks run before the keypoints are read: 2 stride-2 blocks, a stride-4
# map (16x16 of a 64x64 image), each cell seeing 7x7 pixels: colour blobs, not objects.
KEYPOINT_BLOCKS = 2


def grid_coordinates(height: int, width: int, device=None, dtype=None) -> tuple[Tensor, Tensor]:
    """Each cell centre's x and y, [H * W] each, in [-1, 1] (align_corners=False, like
    `F.grid_sample`): cell j of W has x = (2j + 1) / W - 1."""
    ys = (2 * torch.arange(height, device=device, dtype=dtype) + 1) / height - 1
    xs = (2 * torch.arange(width, device=device, dtype=dtype) + 1) / width - 1
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return x.reshape(-1), y.reshape(-1)


class SpatialSoftmax(nn.Module):
    """features [B, C, H, W] -> K expected positions [B, K, 2] (x, y in [-1, 1]).

    A 1x1 convolution to K maps, a softmax over each map's H * W cells at a learned
    temperature (started at 1), then the probability-weighted mean of the cells' centres."""

    def __init__(self, channels: int, keypoints: int) -> None:
        super().__init__()
        self.maps = nn.Conv2d(channels, keypoints, kernel_size=1)
        self.log_temperature = nn.Parameter(torch.zeros(()))

    def forward(self, features: Tensor) -> Tensor:
        """features [B, C, H, W] -> points [B, K, 2]."""
        H, W = features.shape[-2:]
        logits = self.maps(features).flatten(2) / self.log_temperature.exp()  # [B, K, H*W]
        probs = logits.softmax(dim=-1)
        x, y = grid_coordinates(H, W, features.device, probs.dtype)
        return torch.stack([probs @ x, probs @ y], dim=-1)  # [B, K, 2]


class KeypointToken(nn.Module):
    """The conv stem's stride-4 features [B, C, H, W] -> one token [B, 1, width]: K spatial-
    softmax points, their 2K coordinates mapped linearly to the ViT's width."""

    def __init__(self, channels: int, keypoints: int, width: int) -> None:
        super().__init__()
        self.points = SpatialSoftmax(channels, keypoints)
        self.proj = nn.Linear(2 * keypoints, width)

    def forward(self, features: Tensor) -> Tensor:
        """features [B, C, H, W] -> token [B, 1, width]."""
        return self.proj(self.points(features).flatten(1)).unsqueeze(1)
