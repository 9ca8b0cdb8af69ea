"""FLOPs of a policy's computation, attention included on the CPU too.

torch's `FlopCounterMode` has formulas for matmuls, convolutions and the CUDA attention
kernels, but none for the kernel `F.scaled_dot_product_attention` picks on the CPU
(`_scaled_dot_product_flash_attention_for_cpu`, and its backward): it counts them as 0.
Every CPU FLOP count made with the bare counter leaves attention out, a part of each layer
that grows with depth, so FLOP-ideal ratios (student against teacher, distillation step
against training step) came out too close to 1. `flop_counter()` adds both formulas, with
π0's multi-query attention (one key/value head for h query heads) counted per query head,
as the math is: 4 * B * h * S_q * S_k * E forward (scores and weighted values), torch's own
backward formula (the scores recomputed, then the four gradient matmuls).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

aten = torch.ops.aten


def _per_query_head(shape: tuple[int, ...], query: tuple[int, ...]) -> tuple[int, ...]:
    """A key/value shape [B, k, S, E] as the h query heads read it: [B, h, S, E]."""
    return (shape[0], query[1], *shape[2:])


def _cpu_attention(query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, _per_query_head(key, query), _per_query_head(value, query))


def _cpu_attention_backward(grad_out, query, key, value, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_backward_flop_count(grad_out, query, _per_query_head(key, query), _per_query_head(value, query))


CPU_ATTENTION_FLOPS = {
    aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention,
    aten._scaled_dot_product_flash_attention_for_cpu_backward: _cpu_attention_backward,
}


def flop_counter() -> FlopCounterMode:
    """A silent `FlopCounterMode` that also counts the CPU's attention kernels (2 FLOPs a
    multiply-add; `get_total_flops()` after the block)."""
    return FlopCounterMode(display=False, custom_mapping=CPU_ATTENTION_FLOPS)
