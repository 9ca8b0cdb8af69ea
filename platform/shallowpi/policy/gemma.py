"""Gemma's building blocks for π0's two towers: RMSNorm, rotary embeddings, attention
over a bias, the GeGLU MLP, one decoder layer split around attention, and a tower of them.

The VLM backbone and the action expert are both `GemmaTower`s of the same depth; the model
(model.py) attends their keys and values jointly at every layer, which is why a layer here
stops before attention (`qkv`) and resumes after it (`finish`). Shapes as in model.py's
axis legend. After Gemma (Google DeepMind 2024) as π0 uses it (Black et al. 2024); layout
and initialisation follow openpi's and lerobot's PyTorch ports so their weights load.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shallowpi.policy.config import GemmaConfig

# Added to attention logits where a query may not look. Finite, not -inf: a fully masked
# row (a padded token) then softmaxes to uniform instead of NaN, and there is headroom
# below float32's minimum so adding a logit cannot overflow (same value as openpi).
MASK_VALUE = -2.3819763e38
ROPE_BASE = 10_000.0


# ----------------------------------------------------------------------------- primitives


class RMSNorm(nn.Module):
    """Gemma's RMSNorm: statistics in float32, scale stored as (1 + weight), weight init 0."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., D] normalised by its root mean square over D, in float32; returns x's dtype."""
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x32 * (1.0 + self.weight.float())).type_as(x)


def rope_tables(positions: Tensor, head_dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin tables for rotary embeddings. positions [B, T] -> cos, sin [B, 1, T, E]."""
    inv_freq = 1.0 / ROPE_BASE ** (
        torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim
    )  # [E/2]
    angles = positions.float()[..., None] * inv_freq  # [B, T, E/2]
    angles = torch.cat([angles, angles], dim=-1)  # [B, T, E]
    return angles.cos().to(dtype)[:, None], angles.sin().to(dtype)[:, None]


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (i, i + E/2) of x [B, heads, T, E] by the position's angle."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """Scaled dot-product attention, multi-query aware.

    q [B, h, Tq, E], k/v [B, k, Tk, E] (k divides h), bias [B, 1, Tq, Tk] additive -> [B, Tq, h*E].
    """
    if bias.dtype != q.dtype:  # float16 has no MASK_VALUE: it would round to -inf (NaN rows)
        bias = bias.clamp(min=torch.finfo(q.dtype).min).to(q.dtype)
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, enable_gqa=k.shape[1] != q.shape[1]
    )  # [B, h, Tq, E]
    return out.transpose(1, 2).flatten(2)


def attention_probs(q: Tensor, k: Tensor, bias: Tensor) -> Tensor:
    """The softmax `attend` applies, written out: softmax(q k^T / sqrt(E) + bias) in float32.

    q [B, h, Tq, E], k [B, k, Tk, E] (query head i reads key head i // (h / k), as SDPA's
    enable_gqa does), bias [B, 1, Tq, Tk] additive -> probabilities [B, h, Tq, Tk].
    """
    if k.shape[1] != q.shape[1]:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # [B, h, Tk, E]
    # Under the trainer's bf16 autocast a CUDA matmul runs in bf16 whatever its inputs, and
    # rounds logits of 16-32 by ~0.1: the maps (and the KL distilled from them) stay float32.
    device = q.device.type  # autocast exists for these; the meta device (shape checks) has none
    with torch.autocast(device, enabled=False) if device in ("cuda", "cpu") else contextlib.nullcontext():
        scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) * q.shape[-1] ** -0.5
        return torch.softmax(scores + bias.float(), dim=-1)


def gelu_tanh(x: Tensor) -> Tensor:
    """GELU with the tanh approximation, as Gemma and SigLIP use it."""
    return F.gelu(x, approximate="tanh")


# ----------------------------------------------------------------------------- Gemma


class GeGLU(nn.Module):
    """Gemma's gated MLP: down(gelu(gate(x)) * up(x))."""

    def __init__(self, width: int, mlp_dim: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(width, mlp_dim, bias=False)
        self.up_proj = nn.Linear(width, mlp_dim, bias=False)
        self.down_proj = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # [B, T, D] -> [B, T, D]
        """x [B, T, D] -> [B, T, D], through a gated hidden layer [B, T, F]."""
        return self.down_proj(gelu_tanh(self.gate_proj(x)) * self.up_proj(x))


class GemmaLayer(nn.Module):
    """One pre-norm decoder layer, split in two halves around attention.

    The attention itself is not here: in π0 the VLM and the expert each project their own
    tokens to q/k/v (`qkv`), the keys and values of both towers are attended to jointly,
    and each tower finishes its tokens with its own output projection and MLP (`finish`).
    """

    def __init__(self, cfg: GemmaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        self.attn_norm = RMSNorm(cfg.width)
        self.q_proj = nn.Linear(cfg.width, cfg.num_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.num_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.num_heads * cfg.head_dim, cfg.width, bias=False)
        self.mlp_norm = RMSNorm(cfg.width)
        self.mlp = GeGLU(cfg.width, cfg.mlp_dim)

    def qkv(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x [B, T, D] -> q [B, h, T, E], k and v [B, k, T, E], RoPE applied to q and k."""
        B, T, _ = x.shape
        h = self.attn_norm(x)
        q = self.q_proj(h).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def finish(self, x: Tensor, attn_out: Tensor) -> Tensor:
        """Residual around attention, then around the MLP. x [B, T, D], attn_out [B, T, h*E]."""
        x = x + self.o_proj(attn_out.to(x.dtype))
        return x + self.mlp(self.mlp_norm(x))


class GemmaTower(nn.Module):
    """A stack of Gemma layers (a list, so a student can keep a subset) and a final norm."""

    def __init__(self, cfg: GemmaConfig, vocab_size: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        # Only the VLM reads text; the expert's inputs are projected, not embedded.
        self.embed_tokens = nn.Embedding(vocab_size, cfg.width) if vocab_size else None
        self.layers = nn.ModuleList(GemmaLayer(cfg) for _ in range(cfg.depth))
        self.norm = RMSNorm(cfg.width)

    def embed(self, tokens: Tensor) -> Tensor:
        """tokens [B, L] -> [B, L, D], scaled by sqrt(D) as Gemma does."""
        emb = self.embed_tokens(tokens)
        return emb * torch.tensor(math.sqrt(self.cfg.width), dtype=emb.dtype)
