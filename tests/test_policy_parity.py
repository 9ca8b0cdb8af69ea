"""Parity with lerobot 0.6.1's own PI0: same weights -> same velocity field and actions.

lerobot accepts only the full-size gemma_2b / gemma_300m variants and a So400m vision
tower; building that takes ~90 s and ~10 GB here. So the test swaps lerobot's
module-level `get_gemma_config` and its `CONFIG_MAPPING["paligemma"]` for small ones, builds
lerobot's PI0Pytorch at random init, converts its state dict with the same key mapping the
checkpoint loader uses, and compares.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.lerobot, pytest.mark.usefixtures("one_torch_thread")]

modeling_pi0 = pytest.importorskip("lerobot.policies.pi0.modeling_pi0")

from shallowpi.policy.config import GemmaConfig, PolicyConfig, VisionConfig  # noqa: E402
from shallowpi.policy.model import Pi0Model  # noqa: E402
from shallowpi.policy.weights import convert_state_dict, key_mapping, load_into  # noqa: E402

# lerobot hard-codes 8 query heads in its joint attention, so the small towers keep 8.
VLM = dict(width=64, depth=3, mlp_dim=128, num_heads=8, num_kv_heads=1, head_dim=16)
EXPERT = dict(width=32, depth=3, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=16)
VISION = dict(width=32, depth=2, mlp_dim=48, num_heads=4, patch_size=8, image_size=32)
VOCAB = 257152  # lerobot fixes PaliGemma's vocabulary
CHUNK, ACT, STATE, TEXT = 6, 8, 8, 5




def _small_lerobot(monkeypatch):
    from transformers import PaliGemmaConfig
    from transformers.models.siglip import SiglipVisionConfig

    def get_gemma_config(variant):
        sizes = {"gemma_2b": VLM, "gemma_300m": EXPERT}[variant]
        return modeling_pi0.GemmaConfig(**sizes)

    def paligemma_config():
        vision = SiglipVisionConfig(
            hidden_size=VISION["width"],
            intermediate_size=VISION["mlp_dim"],
            num_hidden_layers=VISION["depth"],
            num_attention_heads=VISION["num_heads"],
            patch_size=VISION["patch_size"],
            image_size=VISION["image_size"],
            vision_use_head=False,
        )
        return PaliGemmaConfig(vision_config=vision, projection_dim=VLM["width"])

    real_paligemma = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma

    def small_paligemma(config):
        # lerobot writes So400m's MLP size and a 2048-wide projection into the vision
        # config after asking for it; put the small values back before the model is built.
        config.vision_config.intermediate_size = VISION["mlp_dim"]
        config.vision_config.projection_dim = VLM["width"]
        return real_paligemma(config=config)

    mapping = dict(modeling_pi0.CONFIG_MAPPING)
    mapping["paligemma"] = paligemma_config
    monkeypatch.setattr(modeling_pi0, "get_gemma_config", get_gemma_config)
    monkeypatch.setattr(modeling_pi0, "CONFIG_MAPPING", mapping)
    monkeypatch.setattr(modeling_pi0, "PaliGemmaForConditionalGenerationWithPiGemma", small_paligemma)
    from lerobot.policies.pi0.configuration_pi0 import PI0Config

    lcfg = PI0Config(
        chunk_size=CHUNK,
        n_action_steps=CHUNK,
        max_state_dim=STATE,
        max_action_dim=ACT,
        image_resolution=(VISION["image_size"], VISION["image_size"]),
        dtype="float32",
        device="cpu",
    )
    torch.manual_seed(0)
    model = modeling_pi0.PI0Pytorch(lcfg).eval()
    # lerobot zero-initialises RMSNorm scales; randomise everything so the test sees each weight.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def _ours() -> Pi0Model:
    cfg = PolicyConfig(
        name="parity",
        vision=VisionConfig(**VISION),
        vlm=GemmaConfig(**VLM),
        expert=GemmaConfig(**EXPERT),
        vocab_size=VOCAB,
        num_cameras=2,
        max_text_tokens=TEXT,
        state_dim=STATE,
        action_dim=ACT,
        chunk_len=CHUNK,
    )
    return Pi0Model(cfg).eval()


def test_velocity_and_sampled_actions_match_lerobot(monkeypatch, tmp_path):
    theirs = _small_lerobot(monkeypatch)
    ours = _ours()
    load_into(ours, convert_state_dict(theirs.state_dict(), ours.cfg))

    torch.manual_seed(1)
    B, size = 2, VISION["image_size"]
    images = [torch.rand(B, 3, size, size) * 2 - 1 for _ in range(2)]
    img_masks = [torch.ones(B, dtype=torch.bool), torch.tensor([True, False])]
    tokens = torch.randint(0, VOCAB, (B, TEXT))
    tok_masks = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    state = torch.randn(B, STATE)
    actions = torch.randn(B, CHUNK, ACT)
    noise = torch.randn(B, CHUNK, ACT)
    t = torch.tensor([0.3, 0.9])

    prefix = ours.embed_prefix(
        torch.stack(images, 1), torch.stack(img_masks, 1), tokens, tok_masks
    )
    with torch.no_grad():
        # lerobot's forward returns (u - v)^2 with u = noise - actions: recover v from ours.
        their_loss = theirs(images, img_masks, tokens, tok_masks, state, actions, noise, t)
        our_loss = ours.loss(prefix, state, actions, noise, t)
        x_t = t[:, None, None] * noise + (1 - t[:, None, None]) * actions
        our_v = ours.velocity(prefix, state, x_t, t)
    assert our_loss.shape == their_loss.shape
    torch.testing.assert_close(our_loss, their_loss, atol=1e-4, rtol=1e-4)
    # Velocity itself against lerobot's cached single step at the same point.
    with torch.no_grad():
        their_actions = theirs.sample_actions(
            images, img_masks, tokens, tok_masks, state, noise=noise.clone(), num_steps=10
        )
        our_actions = ours.sample_actions(prefix, state, noise=noise.clone(), num_steps=10)
    assert our_v.abs().max() > 0.01  # not a degenerate all-zero field
    torch.testing.assert_close(our_actions, their_actions, atol=1e-4, rtol=1e-4)
    # The cached expert-only path and the joint path give the same velocity.
    cache = ours.prefix_cache(prefix)
    torch.testing.assert_close(ours.denoise_step(cache, state, x_t, t), our_v, atol=1e-5, rtol=1e-5)

    # The same weights through the directory loader, saved the way lerobot saves a policy:
    # "model."-prefixed keys, and the embedding only as the tied lm_head.
    from safetensors.torch import save_file

    from shallowpi.policy.weights import load_pi0_directory

    saved = {f"model.{k}": v.contiguous() for k, v in theirs.state_dict().items()
             if not k.endswith("language_model.embed_tokens.weight")}
    saved["model.paligemma_with_expert.paligemma.lm_head.weight"] = (
        theirs.paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight.detach().clone()
    )
    directory = tmp_path / "pi0_small"
    directory.mkdir()
    save_file(saved, str(directory / "model.safetensors"))
    loaded = load_pi0_directory(directory, ours.cfg).eval()
    with torch.no_grad():
        loaded_prefix = loaded.embed_prefix(
            torch.stack(images, 1), torch.stack(img_masks, 1), tokens, tok_masks
        )
        v = loaded.velocity(loaded_prefix, state, x_t, t)
    torch.testing.assert_close(v, our_v, atol=1e-6, rtol=1e-6)

    # A π0 checkpoint has no instruction-conditioning weights: a conditioned model
    # initialised from it keeps them at zero and computes that π0's velocity field.
    import dataclasses

    for mode in ("film", "expert"):
        conditioned = load_pi0_directory(directory, dataclasses.replace(ours.cfg, task_conditioning=mode)).eval()
        with torch.no_grad():
            cond_prefix = conditioned.embed_prefix(
                torch.stack(images, 1), torch.stack(img_masks, 1), tokens, tok_masks
            )
            v = conditioned.velocity(cond_prefix, state, x_t, t)
        torch.testing.assert_close(v, our_v, atol=1e-6, rtol=1e-6)


def test_pi0_preset_has_lerobots_parameter_count():
    """At full size (meta device: no memory), ours = lerobot's PI0 minus its two unused
    language-model heads (the VLM's is tied to the embedding; the expert's never runs)."""
    from lerobot.policies.pi0.configuration_pi0 import PI0Config

    from shallowpi.policy import load_preset
    from shallowpi.policy.model import count_parameters

    with torch.device("meta"):
        theirs = modeling_pi0.PI0Pytorch(PI0Config(device="cpu"))
        ours = Pi0Model(load_preset("pi0"))
    pwe = theirs.paligemma_with_expert
    heads = pwe.paligemma.lm_head.weight.numel() + pwe.gemma_expert.lm_head.weight.numel()
    assert count_parameters(ours) == count_parameters(theirs) - heads
    mapped = set(key_mapping(ours.cfg).values())
    theirs_keys = {k for k in theirs.state_dict() if "lm_head" not in k}
    assert mapped == theirs_keys
