"""Attention probabilities for attention distillation (Pi0Model.velocity_with_attention): the
action queries' attention over the vision-language keys at requested joint layers."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import shallowpi.policy.model as model_module
from shallowpi.errors import ConfigError
from shallowpi.policy import Pi0Model, load_preset
from shallowpi.policy.tokenizer import ByteTokenizer, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(depth: int = 3) -> Pi0Model:
    torch.manual_seed(0)
    cfg = dataclasses.replace(load_preset("tiny").with_depth(depth), num_cameras=2)
    model = Pi0Model(cfg)
    with torch.no_grad():  # RMSNorm scales start at 0; randomise so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _batch(model: Pi0Model):
    """3 samples; the second has its second camera dropped, prompts of different lengths
    (the empty one and the short one are padded): padded keys in every row but one."""
    cfg, B = model.cfg, 3
    s = cfg.vision.image_size
    images = torch.rand(B, cfg.num_cameras, 3, s, s) * 2 - 1
    image_masks = torch.tensor([[True, True], [True, False], [True, True]])
    tokens, token_masks = tokenize(ByteTokenizer(), ["pick", "place the cube", ""], cfg.max_text_tokens)
    prefix = model.embed_prefix(images, image_masks, tokens, token_masks)
    state = torch.randn(B, cfg.state_dim)
    x_t = torch.randn(B, cfg.chunk_len, cfg.action_dim)
    return prefix, state, x_t, torch.tensor([0.2, 0.6, 0.9])


def test_shapes_at_pi0_size_on_the_meta_device():
    cfg = dataclasses.replace(load_preset("pi0").with_depth(3), vocab_size=1024)  # quicker to build
    with torch.device("meta"):
        model = Pi0Model(cfg)
        B, P = 2, cfg.prefix_len
        prefix = model_module.Prefix(torch.zeros(B, P, 2048), torch.ones(B, P, dtype=torch.bool),
                                     torch.zeros(B, P, dtype=torch.long))
        v, maps = model.velocity_with_attention(prefix, torch.zeros(B, 32), torch.zeros(B, 50, 32),
                                                torch.zeros(B), layers=[1, 2])
    assert v.shape == (B, 50, 32)
    assert sorted(maps) == [1, 2]
    assert maps[1].shape == (B, 8, 50, P)  # [B, query heads, action tokens, prefix keys]
    assert maps[1].dtype == torch.float32


def test_rows_are_distributions_over_the_unpadded_prefix_keys():
    model = _model()
    prefix, state, x_t, t = _batch(model)
    _, maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[0, 2])
    for probs in maps.values():
        B, h, C, P = probs.shape
        assert (h, C, P) == (model.cfg.expert.num_heads, model.cfg.chunk_len, prefix.embs.shape[1])
        torch.testing.assert_close(probs.sum(-1), torch.ones(B, h, C), atol=1e-6, rtol=0)
        padded = ~prefix.pad[:, None, None, :].expand_as(probs)
        assert padded.any() and torch.all(probs[padded] == 0)  # a dropped camera, short prompts
        assert torch.all(probs[~padded] > 0)


def _explicit_attend(record: list[torch.Tensor]):
    """`attend` written out independently (einsum, kv heads repeated by hand), keeping the
    whole [B, h, T, T] probability matrix of every call."""

    def attend(q, k, v, bias):
        h, kv = q.shape[1], k.shape[1]
        k = torch.cat([k[:, i // (h // kv)][:, None] for i in range(h)], dim=1)
        v = torch.cat([v[:, i // (h // kv)][:, None] for i in range(h)], dim=1)
        scores = torch.einsum("bhqe,bhke->bhqk", q, k) / q.shape[-1] ** 0.5 + bias
        probs = torch.softmax(scores, dim=-1)
        record.append(probs)
        return torch.einsum("bhqk,bhke->bhqe", probs, v).transpose(1, 2).flatten(2)

    return attend


def test_probabilities_equal_the_explicit_attention_restricted_to_the_prefix(monkeypatch):
    model = _model()
    prefix, state, x_t, t = _batch(model)
    full: list[torch.Tensor] = []
    monkeypatch.setattr(model_module, "attend", _explicit_attend(full))
    _, maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[0, 1, 2])
    P, C = prefix.embs.shape[1], model.cfg.chunk_len
    assert len(full) == 3  # one joint attention per layer
    for layer, whole in enumerate(full):
        rows = whole[:, :, -C:, :]  # the action tokens' rows, every key: prefix, state, actions
        expected = rows[..., :P] / rows[..., :P].sum(-1, keepdim=True)
        torch.testing.assert_close(maps[layer], expected, atol=1e-6, rtol=1e-5)
        assert torch.all(rows[..., P:].sum(-1) > 0.01)  # the suffix keys take part of each row


def test_the_request_changes_nothing_else():
    model = _model()
    prefix, state, x_t, t = _batch(model)
    plain = model.velocity(prefix, state, x_t, t)
    v, maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[1])
    none_asked, no_maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[])
    assert torch.equal(v, plain) and torch.equal(none_asked, plain)  # bit for bit
    assert list(maps) == [1] and no_maps == {}


def test_maps_alone_skip_the_layers_above_the_last_one_asked_for():
    """velocity=False (a teacher distilled by attention only): the same maps, bit for bit,
    and no joint layer above the last asked-for one runs."""
    model = _model(depth=4)
    prefix, state, x_t, t = _batch(model)
    _, full = model.velocity_with_attention(prefix, state, x_t, t, layers=[0, 1])
    ran: list[int] = []

    def counted(qkv, layer_index: int):
        def run(*args):
            ran.append(layer_index)
            return qkv(*args)
        return run

    for i, layer in enumerate(model.vlm.layers):
        layer.qkv = counted(layer.qkv, i)
    v, maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[0, 1], velocity=False)
    assert v is None and sorted(maps) == [0, 1]
    assert all(torch.equal(maps[i], full[i]) for i in (0, 1))
    assert sorted(set(ran)) == [0, 1]  # layers 2 and 3 never ran


def test_gradients_flow_through_the_probabilities_to_the_layers_below():
    model = _model().train()
    prefix, state, x_t, t = _batch(model)
    _, maps = model.velocity_with_attention(prefix, state, x_t, t, layers=[1])
    target = torch.softmax(torch.randn_like(maps[1]), dim=-1)
    kl = (target * (target.log() - maps[1].clamp_min(1e-12).log())).sum(-1).mean()  # KL(target || probs)
    kl.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    # The action queries (expert layer 1), the prefix keys (VLM layer 1), everything below.
    for name in ("expert.layers.1.q_proj.weight", "vlm.layers.1.k_proj.weight",
                 "vlm.layers.0.mlp.up_proj.weight", "expert.layers.0.o_proj.weight", "vision.patch_embed.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    # Nothing above layer 1, and not the keys' values or the velocity head.
    for name in ("expert.layers.2.q_proj.weight", "vlm.layers.1.v_proj.weight", "action_out_proj.weight"):
        assert grads[name] is None or torch.all(grads[name] == 0), name


def test_layers_the_model_lacks_are_refused_in_one_line():
    model = _model(depth=2)
    prefix, state, x_t, t = _batch(model)
    with pytest.raises(ConfigError, match=r"attention layer\(s\) \[-1, 2\] outside this model's joint layers 0-1"):
        model.velocity_with_attention(prefix, state, x_t, t, layers=[0, 2, -1])
