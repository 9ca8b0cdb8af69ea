"""Direct instruction conditioning, beside π0's own (the text tokens in the prefix).

In π0 the instruction reaches the actions only through attention: the text tokens sit in
the prefix with the image tokens, and the action expert attends to both. On the twins a
policy trained on one robot's two tasks together loses ~20 points on push against a
push-only policy at the same push exposure (BENCHMARKS.md "Closed loop"): the two tasks
interfere. `PolicyConfig.task_conditioning` adds a direct path, each a switch:

    tokens  π0 as published: the prefix's text tokens only (no extra weights)
    film    FiLM of the vision tokens by the pooled instruction (Perez et al. 2018, "FiLM:
            Visual Reasoning with a General Conditioning Layer"; RT-1 conditions its
            image encoder on the instruction this way): x * (1 + gamma) + beta, per
            channel, before the ViT layers, so every image token the towers see is
            already the instruction's
    expert  the pooled instruction, projected, added to the flow-matching time embedding
            before π0's action-time MLP, so every action token of the action expert (the
            denoiser) carries the instruction from its input on. DiT sums a class label's
            embedding with the time step's the same way (Peebles & Xie 2023, "Scalable
            Diffusion Models with Transformers"; it then feeds the sum to adaLN, here to
            the tokens)
"""


from __future__ import annotations

import torch
from torch import Tensor, nn

# Where Pi0Model keeps the conditioning's weights. π0 checkpoints (lerobot, openpi) have
# none: a model initialised from one keeps these at zero, i.e. starts as that π0.
CONDITIONING_WEIGHTS = ("vision.film.", "instruction_proj.")


def pooled_instruction(text: Tensor, mask: Tensor) -> Tensor:
    """The mean of the instruction's token embeddings over its real tokens.

    text [B, L, D], mask [B, L] (True = a real token) -> [B, D]. An all-padding row gives
    zeros (no instruction: no modulation), never NaN.
    """
    weights = mask.to(text.dtype)[..., None]  # [B, L, 1]
    return (text * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def zero_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """A linear layer that starts at zero: added conditioning begins as no conditioning."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class FiLM(nn.Module):
    """Feature-wise affine modulation: x [B, T, D] by cond [B, D_cond] -> x * (1 + gamma) + beta.

    The projection starts at zero, so an untrained FiLM is the identity and the model
    starts where π0 does.
    """

    def __init__(self, cond_dim: int, width: int) -> None:
        super().__init__()
        self.proj = zero_linear(cond_dim, 2 * width)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """x [B, T, D] modulated per channel by cond [B, D_cond] -> [B, T, D], x's dtype."""
        gamma, beta = self.proj(cond.to(self.proj.weight.dtype)).chunk(2, dim=-1)  # [B, D] each
        return x * (1 + gamma[:, None]) + beta[:, None]


def repeat_per_camera(cond: Tensor, num_cameras: int) -> Tensor:
    """[B, D] -> [B * N, D], matching images flattened camera-minor as `embed_prefix` does."""
    return torch.repeat_interleave(cond, num_cameras, dim=0)
