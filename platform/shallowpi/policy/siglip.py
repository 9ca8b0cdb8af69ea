"""The SigLIP-style vision encoder of π0's prefix: image -> patch tokens in the VLM's width.

A patch (or convolutional, conv_stem.py) stem, learned position embeddings, pre-LayerNorm
ViT layers and a linear projector into the Gemma backbone's width (Zhai et al. 2023, as
PaliGemma uses it). Optionally FiLM-modulated by the instruction (conditioning.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shallowpi.policy.conditioning import FiLM
from shallowpi.policy.config import VisionConfig
from shallowpi.policy.conv_stem import ConvStem
from shallowpi.policy.gemma import gelu_tanh
from shallowpi.policy.keypoints import KEYPOINT_BLOCKS, KeypointToken


class VisionLayer(nn.Module):
    """SigLIP encoder layer: pre-LayerNorm multi-head attention and GELU MLP, with biases."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.num_heads = cfg.num_heads
        self.norm1 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.o_proj = nn.Linear(cfg.width, cfg.width)
        self.norm2 = nn.LayerNorm(cfg.width, eps=1e-6)
        self.fc1 = nn.Linear(cfg.width, cfg.mlp_dim)
        self.fc2 = nn.Linear(cfg.mlp_dim, cfg.width)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T, D]
        """x [B, T, D] -> [B, T, D]: bidirectional attention over all T tokens, then the MLP."""
        B, T, D = x.shape
        h = self.norm1(x)
        q, k, v = (
            proj(h).view(B, T, self.num_heads, D // self.num_heads).transpose(1, 2)
            for proj in (self.q_proj, self.k_proj, self.v_proj)
        )  # [B, h, T, E] each
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
        x = x + self.o_proj(attn)
        return x + self.fc2(gelu_tanh(self.fc1(self.norm2(x))))


class VisionEncoder(nn.Module):
    """Image [B, 3, H, W] in [-1, 1] -> tokens [B, num_tokens, D_vlm] (the patches, then the
    keypoint token when `cfg.keypoints` > 0)."""

    def __init__(self, cfg: VisionConfig, out_width: int, film: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        if cfg.stem == "conv":  # policy/conv_stem.py: same token grid, convolutions first
            self.patch_embed = ConvStem(cfg.width, cfg.patch_size, cfg.stem_channels)
        else:
            self.patch_embed = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        # policy/keypoints.py: where the stem's features are, one token after the patches.
        self.keypoints = (
            KeypointToken(self.patch_embed.channels_after(KEYPOINT_BLOCKS), cfg.keypoints, cfg.width)
            if cfg.keypoints
            else None
        )
        self.pos_embed = nn.Embedding(cfg.num_tokens, cfg.width)
        self.layers = nn.ModuleList(VisionLayer(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=1e-6)
        self.projector = nn.Linear(cfg.width, out_width)
        # policy/conditioning.py: the instruction (pooled VLM text embedding) modulates
        # the tokens before the ViT layers when task_conditioning is "film".
        self.film = FiLM(out_width, cfg.width) if film else None

    def forward(self, images: Tensor, instruction: Tensor | None = None) -> Tensor:
        """images [B, 3, H, W]; instruction [B, D_vlm] (required with FiLM, else ignored)."""
        if self.keypoints is None:
            x = self.patch_embed(images).flatten(2).transpose(1, 2)  # [B, patches, Dv]
        else:
            grid, early = self.patch_embed.forward_with_map(images, KEYPOINT_BLOCKS)
            x = torch.cat([grid.flatten(2).transpose(1, 2), self.keypoints(early)], dim=1)  # [B, patches + 1, Dv]
        x = x + self.pos_embed.weight
        if self.film is not None:
            assert instruction is not None, "a FiLM vision encoder needs the pooled instruction"
            x = self.film(x, instruction)
        for layer in self.layers:
            x = layer(x)
        return self.projector(self.norm(x))  # [B, num_tokens, D_vlm]
