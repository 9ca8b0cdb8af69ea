"""`Policy`: the π0 model plus everything between it and recorded data.

Batches arrive as the training dataset yields them (lerobot feature names):
    observation.state            float32 [B, S_real]
    observation.images.<role>    uint8   [B, H, W, 3]
    action                       float32 [B, C, A_real]   (training only)
    action_is_pad                bool    [B, C]            (training only)
    task                         list[str] (or one str)
The policy normalises state and action with the dataset's mean/std or min/max
(`cfg.normalization`; kept as buffers, so they travel inside the checkpoint), zero-pads
them to the model's widths, crops (randomly in training, centred otherwise:
`cfg.crop_scale`), resizes and rescales the images to [-1, 1], tokenises the task (never
cutting it), and calls the model.

Checkpoints: a directory with `model.safetensors`; its header metadata holds the format
tag, the PolicyConfig and the features (camera roles, real state/action sizes).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shallowpi.policy.action_space import mask_of, offsets_from, targets_from
from shallowpi.policy.augment import crop
from shallowpi.policy.config import PolicyConfig
from shallowpi.policy.model import Pi0Model, Prefix
from shallowpi.policy.sampler import ChunkSampler
from shallowpi.policy.tokenizer import check_prompt, make_tokenizer, tokenize
from shallowpi.policy.weights import CheckpointError

FORMAT = "shallowpi-policy"
FORMAT_VERSION = "1"
STATE = "observation.state"
ACTION = "action"
IMAGE_PREFIX = "observation.images."


@dataclass
class Features:
    """What the policy reads and writes, fixed at training time."""

    state_dim: int
    action_dim: int
    cameras: list[str]  # camera roles, in prefix order

    @property
    def image_keys(self) -> list[str]:
        """The cameras' dataset keys, `observation.images.<role>`, in prefix order."""
        return [IMAGE_PREFIX + c for c in self.cameras]

    @classmethod
    def from_sample(cls, item: dict[str, Any]) -> Features:
        """The features of one dataset item (lerobot names)."""
        if STATE not in item or ACTION not in item:
            raise CheckpointError(
                f"dataset items lack '{STATE}' or '{ACTION}' (have {sorted(item)}); "
                "record with a robot that stores joint state and actions"
            )
        cams = [k[len(IMAGE_PREFIX) :] for k in item if k.startswith(IMAGE_PREFIX)]
        return cls(int(item[STATE].shape[-1]), int(item[ACTION].shape[-1]), sorted(cams))

    def check_against(self, other: Features, what: str) -> None:
        """Raise one line if `other` (e.g. a dataset's) does not match these."""
        if (self.state_dim, self.action_dim) != (other.state_dim, other.action_dim):
            raise CheckpointError(
                f"{what} has state/action sizes {other.state_dim}/{other.action_dim} but the "
                f"checkpoint expects {self.state_dim}/{self.action_dim}; use a matching dataset"
            )
        missing = [c for c in self.cameras if c not in other.cameras]
        if missing:
            raise CheckpointError(
                f"{what} lacks camera(s) {missing} the checkpoint was trained on "
                f"(has {other.cameras})"
            )


MIN_SCALE = 1e-2  # the smallest per-dimension scale of state and action (robot units)

@dataclass
class ModelInputs:
    """A batch as the model reads it, before any weight touches it: the same for every
    policy with the same features, normaliser statistics and sizes (a teacher and the
    student cut from it), so one preparation serves both.

    images [B, N, 3, H, W] in [-1, 1], image_masks [B, N] (False: camera missing),
    tokens / token_masks [B, L], state [B, state_dim] normalised and zero-padded; with actions:
    actions [B, C, A] normalised and zero-padded, weights [B, C, A] 1.0 on the real action
    dims of non-padded steps (0 elsewhere: what a loss sums over).
    """

    images: Tensor
    image_masks: Tensor
    tokens: Tensor
    token_masks: Tensor
    state: Tensor
    actions: Tensor | None = None
    weights: Tensor | None = None

    def first(self, m: int) -> ModelInputs:
        """The first m samples of the batch (views, no copy)."""
        values = (getattr(self, f.name) for f in dataclasses.fields(self))  # astuple would deep-copy
        return ModelInputs(*(None if x is None else x[:m] for x in values))


@dataclass
class FlowOutputs:
    """One flow-matching forward: velocity and target [B, C, A], weights [B, C, A] (as in
    ModelInputs), x_t [B, C, A] the noisy chunk it was evaluated at, and the action
    queries' attention over the prefix keys at the requested joint layers
    ({layer: [B, h, C, P]}, see Pi0Model.velocity_with_attention). velocity is None when
    it was not asked for (`flow_outputs(..., velocity=False)`)."""

    velocity: Tensor | None
    target: Tensor
    weights: Tensor
    x_t: Tensor
    attention: dict[int, Tensor]


class Normalizer(nn.Module):
    """x -> (x - mean) / std per dimension, and back. Stats are buffers (saved, not trained)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set(self, mean: Any, std: Any) -> None:
        """Set the per-dimension mean and std [dim] (robot units). A std below 1e-4 becomes 1
        (a joint that never moved); any other is floored at MIN_SCALE."""
        self.mean.copy_(torch.as_tensor(np.asarray(mean), dtype=torch.float32))
        # A joint that never moved has std 0: leave it unscaled rather than divide by ~0.
        # One that barely moved (the arm's passive wrist roll: std 0.0017 rad) must not be
        # scaled up by its tiny spread either: in closed loop a 0.05 rad nudge would reach
        # the model as 30 standard deviations. Its scale is floored at MIN_SCALE robot
        # units (0.6 degrees, 1 cm, 1 % of a gripper's travel).
        std = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        self.std.copy_(torch.where(std < 1e-4, torch.ones_like(std), std.clamp(min=MIN_SCALE)))

    def set_range(self, low: Any, high: Any) -> None:
        """Min-max scaling: [low, high] -> [-1, 1] per dimension (the same two buffers: the
        centre as `mean`, the half range as `std`)."""
        low = np.asarray(low, dtype=np.float64)
        high = np.asarray(high, dtype=np.float64)
        self.set((low + high) / 2, (high - low) / 2)

    def forward(self, x: Tensor) -> Tensor:
        """x [..., dim] in robot units -> normalised units."""
        return (x - self.mean) / self.std

    def inverse(self, x: Tensor) -> Tensor:
        """x [..., dim] in normalised units -> robot units."""
        return x * self.std + self.mean


def resize_with_pad(images: Tensor, size: int) -> Tensor:
    """uint8 [B, H, W, 3] -> float [B, 3, size, size] in [-1, 1], aspect kept, black bars."""
    x = images.permute(0, 3, 1, 2).float() / 255.0  # [B, 3, H, W]
    h, w = x.shape[-2:]
    if (h, w) != (size, size):
        scale = size / max(h, w)
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
        top, left = (size - nh) // 2, (size - nw) // 2
        x = F.pad(x, (left, size - nw - left, top, size - nh - top))
    return x * 2.0 - 1.0


def pad_last(x: Tensor, dim: int) -> Tensor:
    """x zero-padded on the right of its last axis to `dim`; unchanged if already that
    wide or wider."""
    return F.pad(x, (0, dim - x.shape[-1])) if x.shape[-1] < dim else x


class Policy(nn.Module):
    """π0 over recorded features: `loss(batch)` for training, `sample_actions(obs)` to act."""

    def __init__(self, cfg: PolicyConfig, features: Features) -> None:
        super().__init__()
        if features.state_dim > cfg.state_dim or features.action_dim > cfg.action_dim:
            raise CheckpointError(
                f"data has state/action sizes {features.state_dim}/{features.action_dim}, above the "
                f"model's {cfg.state_dim}/{cfg.action_dim}; raise policy.state_dim/action_dim"
            )
        if not features.cameras:
            raise CheckpointError("the policy needs at least one camera (observation.images.*)")
        cfg = PolicyConfig.from_dict({**cfg.to_dict(), "num_cameras": len(features.cameras)})
        if cfg.actions == "delta" and not cfg.delta_dims:
            raise CheckpointError("policy.actions=delta without policy.delta_dims: `platform train` fills them from "
                                  "the store's joint names; a policy built by hand must name them")
        if any(d >= features.action_dim for d in cfg.delta_dims):
            raise CheckpointError(f"policy.delta_dims {cfg.delta_dims} reach past the data's {features.action_dim} actions")
        self.cfg, self.features = cfg, features
        self.tokenizer = make_tokenizer(cfg.tokenizer, cfg.vocabulary)  # first: a missing file fails fast
        self.model = Pi0Model(cfg)
        self.state_norm = Normalizer(features.state_dim)
        self.action_norm = Normalizer(features.action_dim)
        # 1.0 on the action dimensions predicted as offsets from the state (policy.actions=
        # delta), 0.0 on absolute ones; from the config, so not saved with the weights.
        self.register_buffer("delta_mask", torch.from_numpy(mask_of(cfg.delta_dims, features.action_dim)),
                             persistent=False)
        # The training set's mean action [A] (robot units): the offline evaluation's
        # baseline. Not the normaliser's centre, which under min-max is the range's middle.
        # In the checkpoint's header; None for checkpoints written before it was kept.
        self.action_mean: np.ndarray | None = None
        self._sampler: ChunkSampler | None = None

    def set_stats(self, stats: dict[str, dict[str, Any]]) -> None:
        """Dataset statistics: {"observation.state": {"mean", "std", "min", "max"}, "action":
        {...}}; which are used is `cfg.normalization`. The action mean is kept either way
        (`action_mean`)."""
        # Under delta actions the action statistics are the offsets'; the baseline stays absolute.
        self.action_mean = np.asarray(stats[ACTION].get("row_mean", stats[ACTION]["mean"]), dtype=np.float32)
        for key, norm in ((STATE, self.state_norm), (ACTION, self.action_norm)):
            if self.cfg.normalization == "minmax":
                norm.set_range(stats[key]["min"], stats[key]["max"])
            else:
                norm.set(stats[key]["mean"], stats[key]["std"])

    @property
    def device(self) -> torch.device:
        """The device the policy's buffers live on."""
        return self.state_norm.mean.device

    # -- inputs

    def _prefix_and_state(self, obs: dict[str, Any]):
        model_inputs, state, batched = self._model_inputs(obs)
        return self.model.embed_prefix(*model_inputs), state, batched

    def _model_inputs(self, obs: dict[str, Any]):
        """(images [B, N, 3, H, W], image masks, tokens, token masks), normalised state, batched?"""
        state = torch.as_tensor(obs[STATE], dtype=torch.float32, device=self.device)
        batched = state.ndim == 2
        if not batched:
            state = state[None]
        B = state.shape[0]
        images, masks = [], []
        for key in self.features.image_keys:
            if key in obs:
                img = torch.as_tensor(obs[key], device=self.device)
                img = img if batched else img[None]
                img = crop(img, self.cfg.crop_scale, random=self.training)
                images.append(resize_with_pad(img, self.cfg.vision.image_size))
                masks.append(torch.ones(B, dtype=torch.bool, device=self.device))
            else:  # a camera that dropped out: a blank image nothing attends to
                size = self.cfg.vision.image_size
                images.append(-torch.ones(B, 3, size, size, device=self.device))
                masks.append(torch.zeros(B, dtype=torch.bool, device=self.device))
        task = obs.get("task", "")
        texts = [task] * B if isinstance(task, str) else list(task)
        for text in set(texts):  # never cut an instruction silently
            check_prompt(self.tokenizer, text, self.cfg.max_text_tokens)
        tokens, tok_mask = tokenize(self.tokenizer, texts, self.cfg.max_text_tokens)
        model_inputs = (torch.stack(images, 1), torch.stack(masks, 1), tokens.to(self.device), tok_mask.to(self.device))
        state = pad_last(self.state_norm(state), self.cfg.state_dim)
        return model_inputs, state, batched

    def model_inputs(self, batch: dict[str, Any]) -> ModelInputs:
        """A training batch (with `action` and `action_is_pad`) as the model reads it:
        images resized, task tokenised, state and actions normalised and padded."""
        (images, image_masks, tokens, token_masks), state, _ = self._model_inputs(batch)
        actions = self._action_targets(batch)
        valid = ~torch.as_tensor(batch["action_is_pad"], device=self.device)  # [B, C]
        weights = torch.zeros_like(actions)
        weights[..., : self.features.action_dim] = valid[..., None].float()
        return ModelInputs(images, image_masks, tokens, token_masks, state, actions, weights)

    def _action_targets(self, batch: dict[str, Any]) -> Tensor:
        """A batch's action chunks [B, C, A_real] (robot units) as the model learns them:
        offsets from the state where policy.actions=delta, normalised, zero-padded [B, C, A]."""
        actions = torch.as_tensor(batch[ACTION], dtype=torch.float32, device=self.device)
        actions = offsets_from(actions, self._robot_state(batch), self.delta_mask)
        return pad_last(self.action_norm(actions), self.cfg.action_dim)

    def embed(self, inputs: ModelInputs) -> Prefix:
        """The prefix tokens of prepared inputs (runs the vision encoder and text embedding)."""
        return self.model.embed_prefix(inputs.images, inputs.image_masks, inputs.tokens, inputs.token_masks)

    def flow_outputs(
        self, inputs: ModelInputs, noise: Tensor, t: Tensor, attention_layers: Collection[int] = (),
        velocity: bool = True,
    ) -> FlowOutputs:
        """The velocity at x_t = t * noise + (1 - t) * actions, its target noise - actions,
        and the attention maps of `attention_layers`. noise [B, C, A], t [B]. `velocity`
        False: the maps alone (velocity None), the layers above the last map not run. Raises
        ConfigError for an attention layer this model does not have."""
        assert inputs.actions is not None and inputs.weights is not None, "model_inputs() of a training batch"
        tt = t[:, None, None]
        x_t = tt * noise + (1 - tt) * inputs.actions  # [B, C, A]
        v, maps = self.model.velocity_with_attention(self.embed(inputs), inputs.state, x_t, t, attention_layers,
                                                     velocity=velocity)
        return FlowOutputs(None if v is None else v.float(), noise - inputs.actions, inputs.weights, x_t, maps)

    # -- the interface

    def loss_terms(
        self, batch: dict[str, Any], noise: Tensor | None = None, t: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sum of squared velocity errors over real action dims and non-padded steps, and
        how many elements it sums (the trainer divides by the count over all processes)."""
        prefix, state, _ = self._prefix_and_state(batch)
        actions = self._action_targets(batch)
        per_elem = self.model.loss(prefix, state, actions, noise, t)  # [B, C, A]
        per_elem = per_elem[..., : self.features.action_dim].float()
        valid = ~torch.as_tensor(batch["action_is_pad"], device=self.device)  # [B, C]
        weights = valid[..., None].float().expand_as(per_elem)
        return (per_elem * weights).sum(), weights.sum()

    def forward(
        self,
        batch: dict[str, Any] | ModelInputs,
        noise: Tensor | None = None,
        t: Tensor | None = None,
        attention_layers: Collection[int] | None = None,
    ):
        """What DDP/FSDP wrap. `loss_terms(batch, noise, t)` -> (sum, count); or, given
        `attention_layers` (possibly empty) and prepared `ModelInputs`, `flow_outputs`
        (what the distiller needs: velocity, target and attention maps)."""
        if attention_layers is None:
            assert isinstance(batch, dict), "loss_terms takes a batch dict"
            return self.loss_terms(batch, noise, t)
        assert isinstance(batch, ModelInputs) and noise is not None and t is not None
        return self.flow_outputs(batch, noise, t, attention_layers)

    def loss(self, batch: dict[str, Any], noise: Tensor | None = None, t: Tensor | None = None):
        """Mean flow-matching loss over real action dims and non-padded steps; and metrics."""
        total, count = self.loss_terms(batch, noise, t)
        loss = total / count.clamp(min=1.0)
        return loss, {"loss": loss.detach()}

    def prepare_inference(self, dtype: torch.dtype | None = None, cuda_graph: bool = True) -> Policy:
        """Freeze for acting: eval mode, towers in `dtype` (e.g. bfloat16 on a GPU), and a
        `ChunkSampler` (fused weights, CUDA graph on a GPU) behind `sample_actions`.

        The sampler holds a snapshot of the weights; `train()` drops it, so a policy that
        goes back to training never acts on stale weights.
        """
        self.eval()
        if dtype is not None:
            self.model.cast_towers(dtype)
        self._sampler = ChunkSampler(self.model, cuda_graph=cuda_graph)
        return self

    def train(self, mode: bool = True) -> Policy:
        """nn.Module.train; switching to training drops the inference sampler (its weights
        would go stale)."""
        if mode:
            self._sampler = None
        return super().train(mode)

    @torch.no_grad()
    def sample_actions(
        self, obs: dict[str, Any], noise: Tensor | None = None, num_steps: int | None = None,
        inpaint: tuple[Any, Any] | None = None,
    ) -> Tensor:
        """One action chunk in the robot's units: [B, C, A_real] (or [C, A_real] unbatched).

        Through the fast `ChunkSampler` after `prepare_inference()`, else the reference
        `Pi0Model.sample_actions`; both give the same chunk for the same noise. `inpaint`
        = (target [C, A_real] robot units, weight [C] in [0, 1]): real-time chunking's
        inpainting (policy/inpaint.py), the same arithmetic the deploy backends run; the
        rows of weight 1 come out equal to the target.
        """
        model_inputs, state, batched = self._model_inputs(obs)
        if inpaint is not None:
            x = self._inpainted(model_inputs, state, self._robot_state(obs), noise, num_steps, *inpaint)
        elif self._sampler is None:
            prefix = self.model.embed_prefix(*model_inputs)
            x = self.model.sample_actions(prefix, state, noise, num_steps)  # [B, C, A]
        else:
            if noise is None:
                noise = torch.randn(state.shape[0], self.cfg.chunk_len, self.cfg.action_dim, device=self.device)
            x = self._sampler(*model_inputs, state, noise.to(self.device), num_steps)
        predicted = self.action_norm.inverse(x[..., : self.features.action_dim])
        actions = targets_from(predicted, self._robot_state(obs), self.delta_mask)  # absolute, robot units
        return actions if batched else actions[0]

    def _robot_state(self, obs: dict[str, Any]) -> Tensor:
        """The observation's joint state in robot units, [B, A_real]: what delta actions are
        offsets from."""
        state = torch.as_tensor(obs[STATE], dtype=torch.float32, device=self.device)
        return (state if state.ndim == 2 else state[None])[:, : self.features.action_dim]

    def _inpainted(self, model_inputs: tuple, state: Tensor, robot_state: Tensor, noise: Tensor | None,
                   num_steps: int | None, target: Any, weight: Any) -> Tensor:
        B, C, A = state.shape[0], self.cfg.chunk_len, self.cfg.action_dim
        if noise is None:
            noise = torch.randn(B, C, A, device=self.device)
        goal = torch.as_tensor(np.asarray(target, np.float32)[:C], device=self.device)  # [<=C, A_real]
        if len(goal) < C:  # pad with its last row, never zeros (zero is the dataset's centre)
            goal = torch.cat([goal, goal[-1:].expand(C - len(goal), -1)])
        goal = offsets_from(goal[None].expand(B, C, -1), robot_state, self.delta_mask)  # what the model predicts
        goal = pad_last(self.action_norm(goal), A)
        weight = np.asarray(weight, np.float32)[:C]
        w = torch.zeros(B, C, 1, device=self.device)  # rows past the weights: free
        w[:, : len(weight), 0] = torch.as_tensor(weight, device=self.device)
        prefix = self.model.embed_prefix(*model_inputs)
        return self.model.sample_inpainted(prefix, state, noise.to(self.device).float(), goal, w, num_steps)

    # -- checkpoints

    def save(self, directory: Path, extra_metadata: dict[str, str] | None = None) -> Path:
        """Write directory/model.safetensors atomically (tmp + rename); never pickles."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "model.safetensors"
        tmp = directory / "model.safetensors.tmp"
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "config": json.dumps(self.cfg.to_dict()),
            "features": json.dumps(asdict(self.features)),
            **({"action_mean": json.dumps(self.action_mean.tolist())} if self.action_mean is not None else {}),
            **(extra_metadata or {}),
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(tmp), metadata=meta)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Policy:
        """A checkpoint directory (or its model.safetensors) written by `save`. `~` expands.
        CheckpointError for a missing or unreadable file, another format, or weights that do
        not match the architecture the header describes."""
        from safetensors.torch import load_file

        file, meta = _checkpoint_header(path)
        if meta.get("format") != FORMAT:
            raise CheckpointError(
                f"{file} is not a shallowpi policy checkpoint (format {meta.get('format')!r}); "
                "for lerobot/openpi π0 weights use policy.weights.load_pi0_directory"
            )
        cfg = PolicyConfig.from_dict(json.loads(meta["config"]))
        features = Features(**json.loads(meta["features"]))
        policy = cls(cfg, features)
        state = load_file(str(file))
        own = policy.state_dict()
        if set(state) != set(own) or any(own[k].shape != v.shape for k, v in state.items()):
            raise CheckpointError(f"{file} does not match the architecture its header describes")
        policy.load_state_dict(state, strict=True)
        if "action_mean" in meta:
            policy.action_mean = np.asarray(json.loads(meta["action_mean"]), dtype=np.float32)
        return policy.to(device).eval()

    @staticmethod
    def read_metadata(path: str | Path) -> dict[str, str]:
        """The header metadata of a checkpoint directory (or its model.safetensors), e.g.
        `config`, `features`, `dataset`, `held_out`, as strings; no weights are read. `~`
        expands; CheckpointError for a missing or unreadable file, as `load` says it."""
        return _checkpoint_header(path)[1]


def _checkpoint_header(path: str | Path) -> tuple[Path, dict[str, str]]:
    """(model.safetensors path, its header metadata) of a checkpoint directory or file;
    CheckpointError, in one line, when it is missing or not a readable safetensors file."""
    from safetensors import safe_open

    path = Path(path).expanduser()
    file = path / "model.safetensors" if path.is_dir() else path
    if not file.is_file():
        raise CheckpointError(f"no policy checkpoint at {path} (expected model.safetensors)")
    try:
        with safe_open(str(file), framework="pt") as f:
            return file, f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{file} is not a readable safetensors file ({exc})") from None
