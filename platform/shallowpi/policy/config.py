"""Sizes of the π0-architecture policy: one dataclass tree, presets in configs/policy/.

`PolicyConfig` holds three towers (vision encoder, VLM decoder, action expert) and the
flow-matching settings. Every size (pi0, small, tiny) is the same code with other numbers.
The VLM and the expert attend jointly at every layer, so they share depth, head count and
head size; `__post_init__` checks that, and every other mistake a preset can make.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from shallowpi.errors import ConfigError, refuse_unknown_keys
from shallowpi.policy.action_space import ACTION_SPACES

# How the instruction reaches the actions besides the prefix's text tokens
# (policy/conditioning.py says what each does).
TASK_CONDITIONING = ("tokens", "film", "expert")


@dataclass
class VisionConfig:
    """SigLIP-style ViT: patches -> pre-LayerNorm encoder -> linear projection to the VLM width."""

    width: int = 1152
    depth: int = 27
    mlp_dim: int = 4304
    num_heads: int = 16
    patch_size: int = 14
    image_size: int = 224
    # "patch": SigLIP's one patchify convolution; "conv": stride-2 3x3 convolutions first
    # (policy/conv_stem.py), the same token grid, for small models trained from scratch.
    stem: str = "patch"
    stem_channels: int = 16  # the conv stem's first layer; doubling each layer up to width
    # Spatial-softmax points per camera read from the conv stem's stride-4 map, given to the
    # ViT as one more token (policy/keypoints.py); 0: none, the token grid alone. Only the
    # teacher preset's YAML names it: elsewhere add it, +policy.vision.keypoints=K (and stem).
    keypoints: int = 0

    def __post_init__(self) -> None:
        if self.stem not in ("patch", "conv"):
            raise ConfigError(f"unknown vision.stem '{self.stem}'; choose one of: patch, conv")
        if self.keypoints < 0:
            raise ConfigError(f"vision.keypoints must be >= 0, got {self.keypoints}")
        if self.keypoints and (self.stem != "conv" or self.patch_size < 4):
            raise ConfigError(
                "vision.keypoints reads the conv stem's stride-4 map: it needs vision.stem=conv "
                f"and patch_size >= 4 (got stem={self.stem}, patch_size={self.patch_size})"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"vision.image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.width % self.num_heads:
            raise ConfigError(f"vision.width {self.width} is not divisible by num_heads {self.num_heads}")

    @property
    def num_patches(self) -> int:
        """Patch tokens per camera: (image_size / patch_size)^2."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """Image tokens per camera: the patches, and the keypoint token when there is one."""
        return self.num_patches + (1 if self.keypoints else 0)


@dataclass
class GemmaConfig:
    """One Gemma decoder tower: RMSNorm, multi-query attention with RoPE, GeGLU MLP."""

    width: int = 2048
    depth: int = 18
    mlp_dim: int = 16384
    num_heads: int = 8
    num_kv_heads: int = 1
    head_dim: int = 256

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}"
            )
        if self.depth < 1:
            raise ConfigError(f"depth must be >= 1, got {self.depth}")


@dataclass
class PolicyConfig:
    """Everything that fixes the shapes of the model's weights, plus flow-matching settings."""

    name: str = "pi0"
    vision: VisionConfig = field(default_factory=VisionConfig)
    vlm: GemmaConfig = field(default_factory=GemmaConfig)
    expert: GemmaConfig = field(
        default_factory=lambda: GemmaConfig(width=1024, mlp_dim=4096)
    )
    vocab_size: int = 257152
    # Cameras the prefix holds, in order; a camera missing from an observation is masked out.
    num_cameras: int = 3
    max_text_tokens: int = 48
    # Padded state/action sizes (openpi's max_state_dim/max_action_dim); real data is shorter.
    state_dim: int = 32
    action_dim: int = 32
    chunk_len: int = 50
    # Flow matching: t ~ Beta(alpha, beta) * scale + offset; t=1 is noise, t=0 is data.
    time_beta_alpha: float = 1.5
    time_beta_beta: float = 1.0
    time_scale: float = 0.999
    time_offset: float = 0.001
    time_min_period: float = 4e-3
    time_max_period: float = 4.0
    num_steps: int = 10
    # "bytes" = built-in byte-level tokenizer; "words" = one token a word of `vocabulary`
    # (built from the training store's task texts by `platform train`); otherwise a path
    # to tokenizer.json or *.model.
    tokenizer: str = "bytes"
    vocabulary: list[str] = field(default_factory=list)
    # Each camera frame is cropped to this fraction of its sides before the resize: at a
    # random place in training, centred at inference (policy/augment.py). 1.0: off.
    crop_scale: float = 1.0
    # State and action scaling: "meanstd" (x - mean) / std, or "minmax" to [-1, 1] over the
    # training data's range (a 0..1 gripper that opens and closes fully keeps its absolute
    # scale: 0 -> -1, 1 -> 1, whatever fraction of the time it is closed).
    normalization: str = "meanstd"
    # How the instruction reaches the actions besides the prefix's text tokens
    # (policy/conditioning.py): "tokens" (π0 as published), "film", "expert".
    task_conditioning: str = "tokens"
    # "absolute": the model predicts joint targets; "delta": every joint but the grippers as
    # an offset from the chunk's state (policy/action_space.py, openpi's ALOHA recipe).
    # `delta_dims` (the offset action dimensions) is filled by `platform train` from the
    # joint kinds the store recorded (its joint names for an older store) and saved with
    # the checkpoint.
    actions: str = "absolute"
    delta_dims: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.vlm, dict):
            self.vlm = GemmaConfig(**self.vlm)
        if isinstance(self.expert, dict):
            self.expert = GemmaConfig(**self.expert)
        vlm, exp = self.vlm, self.expert
        shared = ("depth", "num_heads", "num_kv_heads", "head_dim")
        for key in shared:
            if getattr(vlm, key) != getattr(exp, key):
                raise ConfigError(
                    f"vlm.{key}={getattr(vlm, key)} but expert.{key}={getattr(exp, key)}; the two "
                    "towers attend jointly at every layer, so depth, heads and head_dim must match"
                )
        if exp.width % 2:
            raise ConfigError(f"expert.width must be even (sinusoidal time embedding), got {exp.width}")
        if self.tokenizer == "words" and self.vocabulary and len(self.vocabulary) + 3 > self.vocab_size:
            raise ConfigError(
                f"the task texts have {len(self.vocabulary)} distinct words, more than vocab_size "
                f"{self.vocab_size} - 3 special tokens holds; raise policy.vocab_size"
            )
        if self.normalization not in ("meanstd", "minmax"):
            raise ConfigError(f"unknown policy.normalization '{self.normalization}'; choose one of: meanstd, minmax")
        if self.task_conditioning not in TASK_CONDITIONING:
            raise ConfigError(f"unknown policy.task_conditioning '{self.task_conditioning}'; "
                              f"choose one of: {', '.join(TASK_CONDITIONING)}")
        if self.actions not in ACTION_SPACES:
            raise ConfigError(f"unknown policy.actions '{self.actions}'; choose one of: {', '.join(ACTION_SPACES)}")
        if self.delta_dims and self.actions != "delta":
            raise ConfigError(f"policy.delta_dims {self.delta_dims} belong to policy.actions=delta, not '{self.actions}'")
        if len(set(self.delta_dims)) != len(self.delta_dims) or any(not 0 <= d < self.action_dim for d in self.delta_dims):
            raise ConfigError(f"policy.delta_dims {self.delta_dims} must be distinct action indices in 0..{self.action_dim - 1}")
        if not 0.0 < self.crop_scale <= 1.0:
            raise ConfigError(f"policy.crop_scale must be in (0, 1], got {self.crop_scale}")
        if self.num_cameras < 1 or self.chunk_len < 1 or self.num_steps < 1:
            raise ConfigError("num_cameras, chunk_len and num_steps must be >= 1")

    @property
    def depth(self) -> int:
        """Joint layers: the VLM's depth (the expert's is the same)."""
        return self.vlm.depth

    @property
    def prefix_len(self) -> int:
        """Prefix tokens P: every camera's image tokens, then the text tokens."""
        return self.num_cameras * self.vision.num_tokens + self.max_text_tokens

    @property
    def suffix_len(self) -> int:
        """Suffix tokens S: one state token and `chunk_len` action tokens."""
        return 1 + self.chunk_len  # state token + action tokens

    def to_dict(self) -> dict[str, Any]:
        """Every field as nested plain dicts (what a checkpoint's header stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """The config `to_dict` wrote, or a preset's model keys. ConfigError for an unknown key
        (also inside vision/vlm/expert) or a size that fails the checks."""
        refuse_unknown_keys("policy config", data, cls)
        try:
            return cls(**data)
        except TypeError as exc:  # a bad key inside vision/vlm/expert
            raise ConfigError(f"bad policy config: {exc}") from None

    def with_depth(self, depth: int) -> PolicyConfig:
        """The same model with `depth` layers in both the VLM and the expert (a student's shape)."""
        return dataclasses.replace(
            self,
            vlm=dataclasses.replace(self.vlm, depth=depth),
            expert=dataclasses.replace(self.expert, depth=depth),
        )


def load_preset(name: str) -> PolicyConfig:
    """configs/policy/<name>.yaml as a PolicyConfig (without the rest of the run config)."""
    from omegaconf import OmegaConf

    from shallowpi.config import config_dir, group_choices

    path = config_dir() / "policy" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(
            f"unknown policy '{name}'; choose one of: {', '.join(group_choices('policy'))}"
        )
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    return PolicyConfig.from_dict(model_section(data))


def model_section(data: dict[str, Any]) -> dict[str, Any]:
    """The keys of a policy config group that define the model (drops training-only keys)."""
    known = {f.name for f in dataclasses.fields(PolicyConfig)}
    return {k: v for k, v in data.items() if k in known}
