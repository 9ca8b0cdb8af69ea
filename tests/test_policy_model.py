"""Structure and behaviour of the π0 model: pi0 sizes on the meta device, tiny for the rest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from shallowpi.errors import ConfigError
from shallowpi.policy import Features, Pi0Model, Policy, load_preset
from shallowpi.policy.model import block_causal_mask, count_parameters
from shallowpi.policy.tokenizer import ByteTokenizer, tokenize
from shallowpi.policy.weights import CheckpointError, key_mapping

# Published sizes: google/gemma-2b (256,000-token vocabulary) and the SigLIP So400m/14-224
# vision tower. PaliGemma adds 1,152 image-location/segmentation tokens to Gemma's vocabulary.
GEMMA_2B = 2_506_172_416
SIGLIP_SO400M_VISION = 412_442_352
PALIGEMMA_EXTRA_VOCAB = 1_152


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pi0_preset_matches_published_sizes_on_meta_device():
    cfg = load_preset("pi0")
    with torch.device("meta"):
        model = Pi0Model(cfg)
    projector = count_parameters(model.vision.projector)
    assert projector == 1152 * 2048 + 2048
    assert count_parameters(model.vision) - projector == SIGLIP_SO400M_VISION
    assert count_parameters(model.vlm) - PALIGEMMA_EXTRA_VOCAB * 2048 == GEMMA_2B
    # Gemma 300M expert: 18 layers of width 1024, MLP 4096, 8 query heads and 1 kv head of 256.
    per_layer = 1024 * 2048 + 2 * 1024 * 256 + 2048 * 1024 + 3 * 1024 * 4096 + 2 * 1024
    assert count_parameters(model.expert) == 18 * per_layer + 1024
    assert len(model.vlm.layers) == len(model.expert.layers) == 18
    assert model.vlm.layers[0].k_proj.weight.shape == (256, 2048)  # multi-query: one kv head
    assert model.expert.layers[0].q_proj.weight.shape == (2048, 1024)
    assert cfg.prefix_len == 3 * 256 + 48 and cfg.suffix_len == 51


def test_pi0_forward_shapes_on_meta_device():
    cfg = dataclasses.replace(load_preset("pi0").with_depth(2), num_cameras=2)
    with torch.device("meta"):
        model = Pi0Model(cfg)
        B = 2
        images = torch.zeros(B, 2, 3, 224, 224)
        prefix = model.embed_prefix(
            images, torch.ones(B, 2, dtype=torch.bool),
            torch.zeros(B, 48, dtype=torch.long), torch.ones(B, 48, dtype=torch.bool),
        )
        assert prefix.embs.shape == (B, 2 * 256 + 48, 2048)
        v = model.velocity(prefix, torch.zeros(B, 32), torch.zeros(B, 50, 32), torch.zeros(B))
    assert v.shape == (B, 50, 32)


def test_block_causal_mask_is_the_documented_example():
    pad = torch.tensor([[1, 1, 0, 1, 1, 1, 1]], dtype=torch.bool)
    blocks = torch.tensor([[0, 0, 0, 1, 1, 0, 0]])
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 1, 0, 0, 0],
            [1, 1, 0, 1, 1, 1, 1],
            [1, 1, 0, 1, 1, 1, 1],
            [1, 1, 0, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(block_causal_mask(pad, blocks)[0], expected)


def _tiny(seed: int = 0) -> Pi0Model:
    torch.manual_seed(seed)
    model = Pi0Model(load_preset("tiny"))
    with torch.no_grad():  # RMSNorm scales start at 0; randomise so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _inputs(model: Pi0Model, B: int = 3):
    cfg = model.cfg
    s = cfg.vision.image_size
    images = torch.rand(B, cfg.num_cameras, 3, s, s) * 2 - 1
    tokens, mask = tokenize(ByteTokenizer(), ["pick", "place the cube", ""], cfg.max_text_tokens)
    prefix = model.embed_prefix(images, torch.ones(B, cfg.num_cameras, dtype=torch.bool), tokens, mask)
    return prefix, torch.randn(B, cfg.state_dim)


def test_cached_denoise_step_equals_joint_forward_and_never_copies_the_cache():
    model = _tiny()
    prefix, state = _inputs(model)
    B, C, A = 3, model.cfg.chunk_len, model.cfg.action_dim
    x, t = torch.randn(B, C, A), torch.tensor([0.1, 0.5, 1.0])
    cache = model.prefix_cache(prefix)
    P = cache.prefix_len
    pointers = [k.data_ptr() for k in cache.keys]
    prefix_keys = [k[:, :, :P].clone() for k in cache.keys]
    for _ in range(3):
        torch.testing.assert_close(
            model.denoise_step(cache, state, x, t), model.velocity(prefix, state, x, t),
            atol=1e-5, rtol=1e-5,
        )
    assert [k.data_ptr() for k in cache.keys] == pointers
    for kept, now in zip(prefix_keys, cache.keys):
        assert torch.equal(kept, now[:, :, :P])


@pytest.mark.parametrize("vision", [True, False])
def test_after_a_cast_to_bfloat16_the_joint_forward_and_the_cached_path_agree(vision):
    # The training path (velocity: the loss, a teacher's velocity, attention maps) fed the
    # float32 embeddings of the projections that stay float32 into bfloat16 layers and raised.
    model = _tiny().cast_towers(torch.bfloat16, vision=vision)
    prefix, state = _inputs(model)
    B, C, A = 3, model.cfg.chunk_len, model.cfg.action_dim
    x, t = torch.randn(B, C, A), torch.tensor([0.1, 0.5, 1.0])
    joint = model.velocity(prefix, state, x, t)
    assert joint.dtype == torch.float32
    torch.testing.assert_close(model.denoise_step(model.prefix_cache(prefix), state, x, t), joint, atol=3e-2, rtol=3e-2)
    velocity, maps = model.velocity_with_attention(prefix, state, x, t, layers=[0])
    assert torch.equal(velocity, joint) and torch.isfinite(maps[0]).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_chunk_attends_with_a_finite_mask(dtype, monkeypatch):
    # MASK_VALUE (-2.38e38, finite so a fully masked row softmaxes to uniform, not NaN) is
    # -inf in float16: a padded text token's row, or a missing camera's, was all -inf there.
    import torch.nn.functional as F

    masks = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, **kwargs):
        if attn_mask is not None:  # the vision encoder attends unmasked
            masks.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model = _tiny().cast_towers(dtype)
    prefix, state = _inputs(model)  # the third prompt is empty: padded text rows
    chunk = model.sample_actions(prefix, state, noise=torch.randn(3, model.cfg.chunk_len, model.cfg.action_dim))
    assert masks and all(m.dtype == dtype and torch.isfinite(m).all() for m in masks)
    assert torch.isfinite(chunk).all()


def test_sample_actions_is_deterministic_given_noise_and_depends_on_the_prompt():
    model = _tiny()
    prefix, state = _inputs(model)
    noise = torch.randn(3, model.cfg.chunk_len, model.cfg.action_dim)
    a1 = model.sample_actions(prefix, state, noise=noise)
    a2 = model.sample_actions(prefix, state, noise=noise)
    assert a1.shape == noise.shape and torch.equal(a1, a2)
    # Same images, state and noise in every row; only the prompt differs.
    same = dataclasses.replace(prefix, embs=prefix.embs.clone(), pad=prefix.pad.clone())
    P_img = model.cfg.num_cameras * model.cfg.vision.num_patches
    same.embs[:, :P_img] = prefix.embs[:1, :P_img]
    a3 = model.sample_actions(same, state[[0, 0, 0]], noise=noise[[0, 0, 0]])
    assert not torch.allclose(a3[0], a3[1], atol=1e-4)
    same.embs[1], same.pad[1] = same.embs[0], same.pad[0]
    a4 = model.sample_actions(same, state[[0, 0, 0]], noise=noise[[0, 0, 0]])
    torch.testing.assert_close(a4[0], a4[1])


def test_every_parameter_gets_a_gradient_from_the_loss():
    model = _tiny().train()
    prefix, state = _inputs(model)
    actions = torch.randn(3, model.cfg.chunk_len, model.cfg.action_dim)
    model.loss(prefix, state, actions).mean().backward()
    dead = set(model.dead_parameter_names())
    assert "vlm.norm.weight" in dead and "vlm.layers.1.q_proj.weight" in dead
    assert "vlm.layers.1.k_proj.weight" not in dead
    for name, p in model.named_parameters():
        if name in dead:
            assert p.grad is None or p.grad.abs().sum() == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_keep_layers_copies_the_chosen_layers_into_a_shallower_model():
    teacher = Pi0Model(load_preset("small"))
    keep = [round(x) for x in np.linspace(0, 17, 6)]
    assert keep == [0, 3, 7, 10, 14, 17]
    student = teacher.keep_layers(keep)
    assert len(student.vlm.layers) == len(student.expert.layers) == 6
    for s_idx, t_idx in enumerate(keep):
        for tower in ("vlm", "expert"):
            s_layer = getattr(student, tower).layers[s_idx]
            t_layer = getattr(teacher, tower).layers[t_idx]
            assert torch.equal(s_layer.q_proj.weight, t_layer.q_proj.weight)
            assert s_layer.q_proj.weight.data_ptr() != t_layer.q_proj.weight.data_ptr()
    assert torch.equal(student.vision.patch_embed.weight, teacher.vision.patch_embed.weight)
    with pytest.raises(ValueError):
        teacher.keep_layers([3, 1])


def test_key_mapping_covers_every_parameter_once():
    cfg = load_preset("tiny")
    mapping = key_mapping(cfg)
    assert set(mapping) == set(Pi0Model(cfg).state_dict())
    assert len(set(mapping.values())) == len(mapping)


def test_presets_that_break_joint_attention_are_refused():
    cfg = load_preset("tiny")
    with pytest.raises(ConfigError, match="depth"):
        dataclasses.replace(cfg, expert=dataclasses.replace(cfg.expert, depth=3))


def test_byte_tokenizer_pads_and_masks():
    tok = ByteTokenizer()
    ids, mask = tokenize(tok, ["ab", "a longer task than fits"], 6)
    assert ids[0].tolist() == [1, ord("a") + 2, ord("b") + 2, ord("\n") + 2, 0, 0]
    assert mask.sum(1).tolist() == [4, 6]
    assert tok.decode(tok.encode("héllo")) == "héllo"


def _features() -> Features:
    return Features(state_dim=3, action_dim=2, cameras=["front"])


def _batch(B: int = 2, C: int = 4):
    return {
        "observation.state": torch.randn(B, 3),
        "observation.images.front": torch.randint(0, 255, (B, 24, 32, 3), dtype=torch.uint8),
        "action": torch.randn(B, C, 2),
        "action_is_pad": torch.zeros(B, C, dtype=torch.bool),
        "task": ["pick"] * B,
    }


def test_policy_save_load_roundtrip_keeps_stats_and_actions(tmp_path):
    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), _features())
    policy.set_stats({
        "observation.state": {"mean": np.ones(3), "std": np.full(3, 2.0)},
        "action": {"mean": np.array([5.0, -5.0]), "std": np.array([0.5, 0.0])},
    })
    loss, _ = policy.loss(_batch())
    assert torch.isfinite(loss)
    policy.save(tmp_path / "ckpt")
    loaded = Policy.load(tmp_path / "ckpt")
    obs = {k: v[0] for k, v in _batch().items() if k.startswith("observation")} | {"task": "pick"}
    noise = torch.randn(1, 4, 8)
    a = policy.eval().sample_actions(obs, noise=noise)
    b = loaded.sample_actions(obs, noise=noise)
    assert a.shape == (4, 2) and torch.equal(a, b)
    assert torch.equal(loaded.action_norm.std, torch.tensor([0.5, 1.0]))  # std 0 -> 1
    assert loaded.action_mean.tolist() == [5.0, -5.0]  # the offline baseline, in the header


def test_policy_load_refuses_foreign_files(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="not a shallowpi policy"):
        Policy.load(tmp_path)
    with pytest.raises(CheckpointError, match="no policy checkpoint"):
        Policy.load(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="not a readable"):
        Policy.load(tmp_path / "bad")
    # read_metadata (eval reads it after load) fails the same way, never with a traceback
    for path, message in ((tmp_path / "missing", "no policy checkpoint"), (tmp_path / "bad", "not a readable")):
        with pytest.raises(CheckpointError, match=message):
            Policy.read_metadata(path)


def test_a_checkpoint_path_with_a_tilde_loads_and_reads_its_header(tmp_path, monkeypatch):
    # `--policy=~/ckpt` reaches us unexpanded (bash expands ~ only at a word's start)
    monkeypatch.setenv("HOME", str(tmp_path))
    Policy(load_preset("tiny"), _features()).save(tmp_path / "ckpt")
    assert Policy.load("~/ckpt").cfg == load_preset("tiny")
    assert "config" in Policy.read_metadata("~/ckpt")


def test_features_that_do_not_match_the_checkpoint_are_named():
    trained = Features(state_dim=6, action_dim=6, cameras=["front", "wrist"])
    trained.check_against(Features(6, 6, ["front", "top", "wrist"]), "dataset d")  # extra camera: fine
    with pytest.raises(CheckpointError, match="state/action sizes 7/6"):
        trained.check_against(Features(7, 6, ["front", "wrist"]), "dataset d")
    with pytest.raises(CheckpointError, match=r"lacks camera\(s\) \['wrist'\]"):
        trained.check_against(Features(6, 6, ["front"]), "dataset d")


def test_sample_actions_inpaints_like_the_deploy_backends():
    """`inpaint=(target, weight)`: rows of weight 1 come out as the target (robot units),
    weight 0 everywhere is the plain chunk, and fractional rows differ from both."""
    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), _features()).eval()
    policy.set_stats({
        "observation.state": {"mean": np.zeros(3), "std": np.ones(3)},
        "action": {"mean": np.array([1.0, -1.0]), "std": np.array([0.5, 2.0])},
    })
    with torch.no_grad():
        for p in policy.model.parameters():  # RMSNorm scales start at 0; randomise
            p.add_(torch.randn_like(p) * 0.1)
    obs = {k: v[0] for k, v in _batch().items() if k.startswith("observation")} | {"task": "pick"}
    noise = torch.randn(1, 4, 8)
    target = np.array([[0.3, 0.4], [0.5, 0.6], [0.7, 0.8], [0.9, 1.0]], np.float32)
    with torch.no_grad():
        plain = policy.sample_actions(obs, noise=noise)
        none = policy.sample_actions(obs, noise=noise, inpaint=(target, np.zeros(4)))
        soft = policy.sample_actions(obs, noise=noise, inpaint=(target, np.array([1.0, 1.0, 0.4, 0.0])))
    assert torch.allclose(none, plain, atol=1e-6)
    assert np.abs(soft[:2].numpy() - target[:2]).max() < 1e-5
    assert (soft[2] - plain[2]).abs().max() > 1e-3 and (soft[2] - torch.from_numpy(target[2])).abs().max() > 1e-3
