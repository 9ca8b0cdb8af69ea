"""policy/flops.py: the CPU's attention kernels are counted, as the math they do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from shallowpi.policy.flops import flop_counter


@pytest.mark.parametrize("kv_heads", [4, 1])  # 1: π0's multi-query attention
def test_cpu_attention_counts_as_the_matmuls_it_replaces(kv_heads):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 44, 16)
    k, v = torch.randn(2, kv_heads, 50, 16), torch.randn(2, kv_heads, 50, 16)
    mask = torch.zeros(2, 1, 44, 50)
    with torch.no_grad(), flop_counter() as fused:
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=kv_heads != 4)
    with torch.no_grad(), flop_counter() as explicit:
        kk, vv = k.expand(2, 4, 50, 16), v.expand(2, 4, 50, 16)
        torch.softmax(q @ kk.transpose(-1, -2) * 0.25 + mask, dim=-1) @ vv
    assert fused.get_total_flops() == explicit.get_total_flops() == 4 * 2 * 4 * 44 * 50 * 16


def test_cpu_attention_backward_is_counted_with_its_recomputed_scores():
    q = torch.randn(1, 4, 10, 8, requires_grad=True)
    k, v = torch.randn(1, 1, 12, 8, requires_grad=True), torch.randn(1, 1, 12, 8, requires_grad=True)
    with flop_counter() as counter:
        F.scaled_dot_product_attention(q, k, v, attn_mask=torch.zeros(1, 1, 10, 12), enable_gqa=True).sum().backward()
    forward = 4 * 4 * 10 * 12 * 8
    # torch's backward formula: the scores again, then grad_v, grad_scores, grad_q, grad_k.
    assert counter.get_total_flops() == forward + forward // 2 * 5


def test_a_chunk_counts_the_attention_of_every_layer_and_step():
    # The reference path attends with SDPA in the prefix and at every Euler step: the bare
    # counter misses all of it, flop_counter() adds exactly the attention's math.
    from torch.utils.flop_counter import FlopCounterMode

    from shallowpi.policy import Pi0Model, load_preset

    cfg = load_preset("tiny")
    model = Pi0Model(cfg).eval()
    s, n = cfg.vision.image_size, cfg.num_cameras
    inputs = (torch.zeros(1, n, 3, s, s), torch.ones(1, n, dtype=torch.bool),
              torch.zeros(1, cfg.max_text_tokens, dtype=torch.long), torch.ones(1, cfg.max_text_tokens, dtype=torch.bool))
    state, noise = torch.zeros(1, cfg.state_dim), torch.zeros(1, cfg.chunk_len, cfg.action_dim)

    def chunk():
        model.sample_actions(model.embed_prefix(*inputs), state, noise)

    with torch.no_grad(), FlopCounterMode(display=False) as bare:
        chunk()
    with torch.no_grad(), flop_counter() as counted:
        chunk()
    prefix = model.embed_prefix(*inputs).embs.shape[1]
    suffix, heads = cfg.suffix_len, cfg.vlm.num_heads * cfg.vlm.head_dim
    attention = cfg.depth * 4 * heads * (prefix * prefix + cfg.num_steps * suffix * (prefix + suffix))
    # The vision encoder's own attention (bidirectional over its patches) comes on top.
    v = cfg.vision
    attention += n * v.depth * 4 * v.width * v.num_patches**2
    assert counted.get_total_flops() - bare.get_total_flops() == attention
