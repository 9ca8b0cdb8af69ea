"""Build lerobot 0.6.1's own PI0Pytorch at any size, offline, for benchmarks.

lerobot accepts only the gemma_2b / gemma_300m variants, So400m vision and a 257,152-token
vocabulary. `small_lerobot_pi0` swaps its module-level config functions for ones that
return our PolicyConfig's sizes while the model is built (the same substitution the parity
test makes), then restores them. Vocabulary size only changes the embedding lookup (and
lerobot's unused lm_heads), so benchmarks may shrink it to save memory.
"""

from __future__ import annotations

from contextlib import ExitStack
from unittest import mock

import torch

from shallowpi.policy.config import PolicyConfig


def small_lerobot_pi0(cfg: PolicyConfig, device: str = "cpu", dtype: str = "float32"):
    """lerobot's PI0Pytorch at `cfg`'s sizes, random weights (N(0, 0.02)), built on `device`.

    dtype "bfloat16" is lerobot's own mixed recipe (towers in bf16; vision encoder, norms
    and projections in float32)."""
    from lerobot.policies.pi0 import modeling_pi0
    from lerobot.policies.pi0.configuration_pi0 import PI0Config
    from transformers import PaliGemmaConfig
    from transformers.models.siglip import SiglipVisionConfig

    if cfg.vlm.num_heads != 8:
        raise ValueError("lerobot's PI0 hard-codes 8 query heads; use a config with num_heads=8")

    def get_gemma_config(variant: str):
        tower = {"gemma_2b": cfg.vlm, "gemma_300m": cfg.expert}[variant]
        return modeling_pi0.GemmaConfig(
            width=tower.width, depth=tower.depth, mlp_dim=tower.mlp_dim,
            num_heads=tower.num_heads, num_kv_heads=tower.num_kv_heads, head_dim=tower.head_dim,
        )

    def paligemma_config():
        v = cfg.vision
        vision = SiglipVisionConfig(
            hidden_size=v.width, intermediate_size=v.mlp_dim, num_hidden_layers=v.depth,
            num_attention_heads=v.num_heads, patch_size=v.patch_size, image_size=v.image_size,
            vision_use_head=False,
        )
        return PaliGemmaConfig(vision_config=vision, projection_dim=cfg.vlm.width)

    real_paligemma = modeling_pi0.PaliGemmaForConditionalGenerationWithPiGemma
    real_gemma = modeling_pi0.CONFIG_MAPPING["gemma"]

    def paligemma(config):
        config.vision_config.intermediate_size = cfg.vision.mlp_dim
        config.vision_config.projection_dim = cfg.vlm.width
        config.text_config.vocab_size = cfg.vocab_size
        return real_paligemma(config=config)

    def gemma(**kwargs):
        return real_gemma(**{**kwargs, "vocab_size": cfg.vocab_size})

    mapping = dict(modeling_pi0.CONFIG_MAPPING)
    mapping["paligemma"] = paligemma_config
    mapping["gemma"] = gemma
    lcfg = PI0Config(
        chunk_size=cfg.chunk_len, n_action_steps=cfg.chunk_len, max_state_dim=cfg.state_dim,
        max_action_dim=cfg.action_dim, image_resolution=(cfg.vision.image_size,) * 2,
        dtype=dtype, device=device, num_inference_steps=cfg.num_steps,
        tokenizer_max_length=cfg.max_text_tokens,
    )
    with ExitStack() as stack:
        stack.enter_context(torch.device(device))  # allocate on the GPU: no 3B-parameter CPU init
        stack.enter_context(mock.patch.object(modeling_pi0, "get_gemma_config", get_gemma_config))
        stack.enter_context(mock.patch.object(modeling_pi0, "CONFIG_MAPPING", mapping))
        stack.enter_context(
            mock.patch.object(modeling_pi0, "PaliGemmaForConditionalGenerationWithPiGemma", paligemma)
        )
        model = modeling_pi0.PI0Pytorch(lcfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    return model
