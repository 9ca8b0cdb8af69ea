"""Load lerobot / openpi π0 PyTorch checkpoints (safetensors) into `Pi0Model`.

The key mapping, written down once. `{i}` is a layer index; `{x}` one of q/k/v.
Prefixes are normalised first: lerobot saves `model.paligemma_with_expert...`, openpi's
PyTorch port `paligemma_with_expert...`, and transformers < 4.52 nested the language model
as `paligemma.language_model.model.*` instead of `paligemma.model.language_model.*`.

    ours                                 <- checkpoint (after normalising the prefix)
    vision.patch_embed.*                 <- {PG}.vision_tower.vision_model.embeddings.patch_embedding.*
    vision.pos_embed.weight              <- {PG}.vision_tower.vision_model.embeddings.position_embedding.weight
    vision.layers.{i}.norm1.*            <- {VIS}.encoder.layers.{i}.layer_norm1.*
    vision.layers.{i}.{x}_proj.*         <- {VIS}.encoder.layers.{i}.self_attn.{x}_proj.*
    vision.layers.{i}.o_proj.*           <- {VIS}.encoder.layers.{i}.self_attn.out_proj.*
    vision.layers.{i}.norm2.*            <- {VIS}.encoder.layers.{i}.layer_norm2.*
    vision.layers.{i}.fc1.*, fc2.*       <- {VIS}.encoder.layers.{i}.mlp.fc1.*, mlp.fc2.*
    vision.norm.*                        <- {VIS}.post_layernorm.*
    vision.projector.*                   <- {PG}.multi_modal_projector.linear.*
    vlm.embed_tokens.weight              <- {PG}.language_model.embed_tokens.weight
                                            (or the tied {PGW}.lm_head.weight when absent)
    vlm.layers.{i}.attn_norm.weight      <- {PG}.language_model.layers.{i}.input_layernorm.weight
    vlm.layers.{i}.{x}_proj.weight       <- {PG}.language_model.layers.{i}.self_attn.{x}_proj.weight (x: q k v o)
    vlm.layers.{i}.mlp_norm.weight       <- {PG}.language_model.layers.{i}.post_attention_layernorm.weight
    vlm.layers.{i}.mlp.{gate,up,down}_proj.weight <- {PG}.language_model.layers.{i}.mlp.*
    vlm.norm.weight                      <- {PG}.language_model.norm.weight
    expert.*                             <- {EX}.* with the same layer names as vlm
    state_proj, action_in_proj, action_out_proj, action_time_mlp_in/out
                                         <- same names (pi05-era `time_mlp_*` also accepted)

where PGW = paligemma_with_expert.paligemma, PG = PGW.model, VIS = PG.vision_tower.vision_model,
EX = paligemma_with_expert.gemma_expert.model. Ignored: both towers' `lm_head` (π0 never
decodes text; the VLM's is tied to the embedding) and non-persistent buffers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

from shallowpi.errors import PlatformError
from shallowpi.policy.conditioning import CONDITIONING_WEIGHTS
from shallowpi.policy.config import GemmaConfig, PolicyConfig, VisionConfig
from shallowpi.policy.model import Pi0Model


class CheckpointError(PlatformError):
    """A checkpoint that is missing, of another architecture, or of other shapes."""


PGW = "paligemma_with_expert.paligemma"
PG = f"{PGW}.model"
VIS = f"{PG}.vision_tower.vision_model"
EX = "paligemma_with_expert.gemma_expert.model"

_GEMMA_LAYER = [
    ("attn_norm.weight", "input_layernorm.weight"),
    ("q_proj.weight", "self_attn.q_proj.weight"),
    ("k_proj.weight", "self_attn.k_proj.weight"),
    ("v_proj.weight", "self_attn.v_proj.weight"),
    ("o_proj.weight", "self_attn.o_proj.weight"),
    ("mlp_norm.weight", "post_attention_layernorm.weight"),
    ("mlp.gate_proj.weight", "mlp.gate_proj.weight"),
    ("mlp.up_proj.weight", "mlp.up_proj.weight"),
    ("mlp.down_proj.weight", "mlp.down_proj.weight"),
]
_VISION_LAYER = [
    ("norm1", "layer_norm1"),
    ("q_proj", "self_attn.q_proj"),
    ("k_proj", "self_attn.k_proj"),
    ("v_proj", "self_attn.v_proj"),
    ("o_proj", "self_attn.out_proj"),
    ("norm2", "layer_norm2"),
    ("fc1", "mlp.fc1"),
    ("fc2", "mlp.fc2"),
]
_HEADS = ["state_proj", "action_in_proj", "action_out_proj", "action_time_mlp_in", "action_time_mlp_out"]


def key_mapping(cfg: PolicyConfig) -> dict[str, str]:
    """ours -> theirs (normalised lerobot names), for every parameter of a model of `cfg`."""
    m: dict[str, str] = {
        "vision.patch_embed.weight": f"{VIS}.embeddings.patch_embedding.weight",
        "vision.patch_embed.bias": f"{VIS}.embeddings.patch_embedding.bias",
        "vision.pos_embed.weight": f"{VIS}.embeddings.position_embedding.weight",
        "vision.norm.weight": f"{VIS}.post_layernorm.weight",
        "vision.norm.bias": f"{VIS}.post_layernorm.bias",
        "vision.projector.weight": f"{PG}.multi_modal_projector.linear.weight",
        "vision.projector.bias": f"{PG}.multi_modal_projector.linear.bias",
        "vlm.embed_tokens.weight": f"{PG}.language_model.embed_tokens.weight",
        "vlm.norm.weight": f"{PG}.language_model.norm.weight",
        "expert.norm.weight": f"{EX}.norm.weight",
    }
    for i in range(cfg.vision.depth):
        for ours, theirs in _VISION_LAYER:
            for p in ("weight", "bias"):
                m[f"vision.layers.{i}.{ours}.{p}"] = f"{VIS}.encoder.layers.{i}.{theirs}.{p}"
    for i in range(cfg.depth):
        for ours, theirs in _GEMMA_LAYER:
            m[f"vlm.layers.{i}.{ours}"] = f"{PG}.language_model.layers.{i}.{theirs}"
            m[f"expert.layers.{i}.{ours}"] = f"{EX}.layers.{i}.{theirs}"
    for head in _HEADS:
        for p in ("weight", "bias"):
            m[f"{head}.{p}"] = f"{head}.{p}"
    return m


def normalise_key(key: str) -> str:
    """A lerobot/openpi key in the one spelling `key_mapping` uses."""
    key = key.removeprefix("model.") if key.startswith("model.paligemma_with_expert") else key
    for head in _HEADS:
        if key.startswith(f"model.{head}."):
            key = key.removeprefix("model.")
    # transformers < 4.52 layout -> current layout
    key = key.replace(f"{PGW}.language_model.model.", f"{PG}.language_model.")
    key = key.replace(f"{PGW}.vision_tower.", f"{PG}.vision_tower.")
    key = key.replace(f"{PGW}.multi_modal_projector.", f"{PG}.multi_modal_projector.")
    key = re.sub(r"^time_mlp_(in|out)\.", r"action_time_mlp_\1.", key)
    return key


def convert_state_dict(theirs: dict[str, Tensor], cfg: PolicyConfig) -> dict[str, Tensor]:
    """A lerobot/openpi state dict -> ours, every key and shape checked."""
    norm = {normalise_key(k): v for k, v in theirs.items()}
    if f"{PG}.language_model.embed_tokens.weight" not in norm and f"{PGW}.lm_head.weight" in norm:
        norm[f"{PG}.language_model.embed_tokens.weight"] = norm[f"{PGW}.lm_head.weight"]
    ours: dict[str, Tensor] = {}
    missing = []
    for our_key, their_key in key_mapping(cfg).items():
        if their_key in norm:
            ours[our_key] = norm[their_key]
        else:
            missing.append(their_key)
    if missing:
        raise CheckpointError(
            f"checkpoint lacks {len(missing)} π0 weights (first: {missing[0]}); "
            "is it a π0 checkpoint of this size (policy preset)?"
        )
    return ours


def load_into(model: Pi0Model, ours: dict[str, Tensor]) -> None:
    """Copy `ours` into `model`, naming the first shape mismatch in one line. The model's
    instruction conditioning (policy/conditioning.py), which π0 checkpoints lack, keeps
    its zero initialisation."""
    own = model.state_dict()
    ours = {**{k: v for k, v in own.items() if k.startswith(CONDITIONING_WEIGHTS)}, **ours}
    for key, value in ours.items():
        if key in own and own[key].shape != value.shape:
            raise CheckpointError(
                f"weight {key} has shape {tuple(value.shape)} in the checkpoint but "
                f"{tuple(own[key].shape)} in the model; pick the policy preset it was trained with"
            )
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in ours.items()}, strict=True)


def config_from_lerobot(directory: Path) -> PolicyConfig:
    """The PolicyConfig of a lerobot/openpi π0 directory (its config.json, else pi0 defaults)."""
    cfg = PolicyConfig()
    path = directory / "config.json"
    if path.is_file():
        data = json.loads(path.read_text())
        if data.get("type", "pi0") not in ("pi0",):
            raise CheckpointError(
                f"{directory} holds a '{data.get('type')}' policy, not pi0; only π0 checkpoints load"
            )
        size = data.get("image_resolution", [224, 224])[0]
        cfg = PolicyConfig(
            vision=VisionConfig(image_size=size),
            vlm=GemmaConfig(),
            expert=GemmaConfig(width=1024, mlp_dim=4096),
            state_dim=data.get("max_state_dim", 32),
            action_dim=data.get("max_action_dim", 32),
            chunk_len=data.get("chunk_size", 50),
            max_text_tokens=data.get("tokenizer_max_length", 48),
            num_steps=data.get("num_inference_steps", 10),
            num_cameras=max(1, len([k for k in data.get("input_features", {}) if "image" in k])),
        )
    return cfg


def load_pi0_directory(directory: str | Path, cfg: PolicyConfig | None = None) -> Pi0Model:
    """A lerobot or openpi π0 PyTorch checkpoint directory (model.safetensors) -> Pi0Model."""
    from safetensors.torch import load_file

    directory = Path(directory).expanduser()
    files = sorted(directory.glob("*.safetensors")) if directory.is_dir() else []
    if not files:
        raise CheckpointError(f"no *.safetensors in {directory}; pass a π0 checkpoint directory")
    cfg = cfg or config_from_lerobot(directory)
    theirs: dict[str, Tensor] = {}
    for f in files:
        theirs.update(load_file(str(f)))
    if not any("paligemma_with_expert" in k for k in theirs):
        raise CheckpointError(
            f"{directory} is not a π0 checkpoint (no paligemma_with_expert weights)"
        )
    model = Pi0Model(cfg)
    load_into(model, convert_state_dict(theirs, cfg))
    return model
