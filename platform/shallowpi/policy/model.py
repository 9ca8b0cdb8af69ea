"""The π0 architecture in plain PyTorch: one code path for every size.

A PaliGemma-style prefix (SigLIP ViT -> image tokens, language tokens, Gemma decoder) and an
action expert (a second, narrower Gemma of the same depth) whose tokens attend, at every
layer, to the keys and values of the prefix. The expert predicts the flow-matching velocity
of a noisy action chunk; sampling integrates it with Euler steps from noise (t=1) to data
(t=0). The towers' layers are in gemma.py, the vision encoder in siglip.py; here, read
top-down: masks -> time embedding and Euler integration -> the prefix's KV cache -> the
model (embed_prefix, embed_suffix, velocity, velocity_with_attention, loss, prefix_cache,
denoise_step, sample_actions).

Axis legend used in shape comments:
    B batch             N cameras           H, W image height/width (pixels)
    P prefix tokens     S suffix tokens     T = P + S, all tokens
    L text tokens       C chunk length      A action (or state) dim, padded
    D tower width       F MLP width         h query heads   k kv heads   E head dim

Layer indexing: `vlm.layers[i]` and `expert.layers[i]` form joint layer i. A student keeps
the same index set in both towers (see `keep_layers`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from shallowpi.errors import ConfigError
from shallowpi.policy.conditioning import pooled_instruction, repeat_per_camera, zero_linear
from shallowpi.policy.config import PolicyConfig
from shallowpi.policy.gemma import (
    MASK_VALUE,
    GemmaTower,
    attend,
    attention_probs,
    rope_tables,
)
from shallowpi.policy.inpaint import euler_times, inpainted_euler
from shallowpi.policy.siglip import VisionEncoder

# ----------------------------------------------------------------------------- masks


def block_causal_mask(pad: Tensor, blocks: Tensor) -> Tensor:
    """Which token may attend to which: bool [B, T, T] (query, key).

    `blocks` [B, T] is 1 where a new block starts and 0 where a token joins the block
    before it; a token sees every valid token whose block is not later than its own.
    `pad` [B, T] is False for padding, which nothing sees. In π0 the prefix (images + text)
    is one block, the state token a second and the action chunk a third:

        tokens:  img img txt | state | act act act        blocks: 0 0 0 1 1 0 0
                 img img txt   state   act act act
        img      1   1   1     .       .   .   .          prefix: bidirectional, blind
        img      1   1   1     .       .   .   .                  to the suffix, so its
        txt      1   1   1     .       .   .   .                  keys/values can be cached
        state    1   1   1     1       .   .   .          state: sees prefix + itself
        act      1   1   1     1       1   1   1          actions: see everything,
        act      1   1   1     1       1   1   1                   bidirectional in-chunk
        act      1   1   1     1       1   1   1

    With a padded text token (pad = 1 1 0 1 1 1 1) column 3 is all '.', and so is row 3.
    """
    level = torch.cumsum(blocks, dim=1)  # [B, T]
    visible = level[:, None, :] <= level[:, :, None]  # [B, T(query), T(key)]
    return visible & pad[:, None, :] & pad[:, :, None]


def mask_to_bias(mask: Tensor) -> Tensor:
    """bool [B, Tq, Tk] -> additive float32 bias [B, 1, Tq, Tk] for `attend`."""
    zero = torch.zeros((), dtype=torch.float32, device=mask.device)
    return torch.where(mask, zero, MASK_VALUE)[:, None]


def time_embedding(t: Tensor, dim: int, min_period: float, max_period: float) -> Tensor:
    """Sinusoidal embedding of flow-matching time t [B] -> [B, dim] (sin half, cos half)."""
    dtype = torch.float64 if t.device.type != "mps" else torch.float32
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=dtype, device=t.device)
    period = min_period * (max_period / min_period) ** fraction  # [dim/2]
    angle = t.to(dtype)[:, None] * (2 * math.pi / period)  # [B, dim/2]
    return torch.cat([angle.sin(), angle.cos()], dim=1).to(t.dtype)


def euler_integrate(velocity: Callable[[Tensor, Tensor], Tensor], noise: Tensor, steps: int) -> Tensor:
    """Integrate dx/dt = velocity(x, t) from x = noise at t=1 to t=0 in `steps` Euler steps."""
    B, dt = noise.shape[0], -1.0 / steps
    x = noise
    for time in euler_times(steps):
        t = torch.full((B,), time, dtype=torch.float32, device=noise.device)
        x = x + dt * velocity(x, t)
    return x


# ----------------------------------------------------------------------------- the model


@dataclass
class Prefix:
    """The embedded prefix of one batch: tokens [B, P, D_vlm], pad [B, P], blocks [B, P];
    and the pooled instruction [B, D_vlm] when the action expert reads it directly
    (`task_conditioning: expert`), else None."""

    embs: Tensor
    pad: Tensor
    blocks: Tensor
    instruction: Tensor | None = None


@dataclass
class KVCache:
    """Per-layer keys and values of the prefix, in buffers with room for the suffix.

    keys[i], values[i]: [B, k, P + S, E]. `prefix_cache` fills [:P] once; every
    `denoise_step` overwrites [P:] with the suffix's own keys and values in place, so the
    prefix part is never copied (lerobot clones the whole cache at each of the 10 steps).
    `bias` [B, 1, S, P + S] is the suffix rows of the block-causal mask and `cos`/`sin`
    [B, 1, S, E] the suffix's RoPE tables; they depend on the padding only, not on the step,
    so they are computed once per chunk too. `instruction` is the prefix's (`Prefix`).
    """

    keys: list[Tensor]
    values: list[Tensor]
    prefix_len: int
    bias: Tensor
    cos: Tensor
    sin: Tensor
    instruction: Tensor | None = None

    @classmethod
    def empty(cls, cfg: PolicyConfig, batch: int, prefix_len: int, dtype: torch.dtype,
              device: torch.device) -> KVCache:
        """Zeroed buffers for a prefix of `prefix_len` tokens and the suffix after it."""
        T, S, g = prefix_len + cfg.suffix_len, cfg.suffix_len, cfg.vlm

        def kv() -> list[Tensor]:
            return [torch.zeros(batch, g.num_kv_heads, T, g.head_dim, dtype=dtype, device=device)
                    for _ in range(cfg.depth)]

        table = torch.zeros(batch, 1, S, g.head_dim, dtype=dtype, device=device)
        bias = torch.zeros(batch, 1, S, T, dtype=torch.float32, device=device)
        return cls(kv(), kv(), prefix_len, bias, table, table.clone())


class Pi0Model(nn.Module):
    """π0: VLM prefix + action expert, trained by flow matching, sampled by Euler steps."""

    def __init__(self, cfg: PolicyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg.vision, out_width=cfg.vlm.width, film=cfg.task_conditioning == "film")
        self.vlm = GemmaTower(cfg.vlm, vocab_size=cfg.vocab_size)
        self.expert = GemmaTower(cfg.expert)
        d = cfg.expert.width
        self.state_proj = nn.Linear(cfg.state_dim, d)
        self.action_in_proj = nn.Linear(cfg.action_dim, d)
        self.action_time_mlp_in = nn.Linear(2 * d, d)
        self.action_time_mlp_out = nn.Linear(d, d)
        self.action_out_proj = nn.Linear(d, cfg.action_dim)
        self.instruction_proj = None
        if cfg.task_conditioning == "expert":  # policy/conditioning.py
            self.instruction_proj = zero_linear(cfg.vlm.width, d)

    # -- inputs -> tokens

    def embed_prefix(
        self, images: Tensor, image_masks: Tensor, tokens: Tensor, token_masks: Tensor
    ) -> Prefix:
        """images [B, N, 3, H, W] in [-1, 1], image_masks [B, N], tokens/token_masks [B, L]."""
        B, N = images.shape[:2]
        txt = self.vlm.embed(tokens)  # [B, L, D]
        # π0 itself ("tokens") reads the instruction through attention only: pool only when
        # a conditioning path reads the pooled vector.
        reads_pooled = self.vision.film is not None or self.instruction_proj is not None
        pooled = pooled_instruction(txt, token_masks) if reads_pooled else None  # [B, D]
        film = repeat_per_camera(pooled, N) if self.vision.film is not None else None  # [B*N, D]
        img = self.vision(images.flatten(0, 1).to(self.vision.patch_embed.weight.dtype), film)
        img = img.view(B, N * img.shape[1], -1)  # [B, N*patches, D], camera-major
        img_pad = image_masks.repeat_interleave(img.shape[1] // N, dim=1)  # [B, N*patches]
        embs = torch.cat([img, txt.to(img.dtype)], dim=1)  # [B, P, D]
        pad = torch.cat([img_pad, token_masks], dim=1)  # [B, P]
        instruction = pooled if self.instruction_proj is not None else None
        return Prefix(embs, pad, torch.zeros_like(pad, dtype=torch.long), instruction)

    def embed_suffix(
        self, state: Tensor, x_t: Tensor, t: Tensor, instruction: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """state [B, A], noisy actions x_t [B, C, A], time t [B] -> tokens [B, S, D], pad, blocks:
        the state token, then one token an action (`embed_state`, `embed_actions`)."""
        B, C, _ = x_t.shape
        state_tok = self.embed_state(state)
        embs = torch.cat([state_tok, self.embed_actions(x_t, t, instruction).to(state_tok.dtype)], dim=1)
        pad = torch.ones(B, 1 + C, dtype=torch.bool, device=x_t.device)
        blocks = torch.zeros(B, 1 + C, dtype=torch.long, device=x_t.device)
        blocks[:, :2] = 1  # state opens a block, the first action token another
        return embs, pad, blocks

    def embed_state(self, state: Tensor) -> Tensor:
        """state [B, A] (normalised) -> the state token [B, 1, D]. The same at every Euler
        step of a chunk: the fast sampler computes it once."""
        return self.state_proj(state.to(self.state_proj.weight.dtype))[:, None]

    def embed_actions(self, x_t: Tensor, t: Tensor, instruction: Tensor | None = None) -> Tensor:
        """Noisy actions x_t [B, C, A] at time t [B] -> action tokens [B, C, D]: each action
        projected, concatenated with t's sinusoidal embedding and mixed by a two-layer MLP.

        With `task_conditioning: expert` the pooled instruction [B, D_vlm] (`Prefix`) is
        projected and added to the time embedding, so every action token carries it into
        the expert directly (policy/conditioning.py); it is ignored otherwise.
        """
        act = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))  # [B, C, D]
        temb = time_embedding(t, act.shape[-1], self.cfg.time_min_period, self.cfg.time_max_period)
        if self.instruction_proj is not None:
            assert instruction is not None, "task_conditioning 'expert' needs the prefix's instruction"
            temb = temb + self.instruction_proj(instruction.to(self.instruction_proj.weight.dtype))
        temb = temb.to(act.dtype)[:, None].expand_as(act)  # [B, C, D]
        return self.action_time_mlp_out(F.silu(self.action_time_mlp_in(torch.cat([act, temb], -1))))

    # -- the joint forward (training and teacher velocities)

    def velocity(self, prefix: Prefix, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Predicted velocity v [B, C, A] at noisy actions x_t [B, C, A] and time t [B].

        All T = P + S tokens pass through the towers together: at each layer i the VLM
        projects the prefix tokens and expert layer i the suffix tokens, both attend over
        all keys under the block-causal mask, and each tower finishes its own tokens.
        """
        return self._joint_forward(prefix, state, x_t, t, ())[0]

    def velocity_with_attention(
        self, prefix: Prefix, state: Tensor, x_t: Tensor, t: Tensor, layers: Collection[int],
        velocity: bool = True,
    ) -> tuple[Tensor | None, dict[int, Tensor]]:
        """`velocity`, and at each joint layer in `layers` the action queries' attention over
        the vision-language keys, for attention distillation (Shallow-π).

        -> v [B, C, A] (the same tensor `velocity` computes, bit for bit), and
        {layer: probabilities [B, h, C, P]}: for each of the C action tokens (the state
        token excluded) and each query head, a distribution over the P prefix keys (image
        and text tokens), softmax(q k^T / sqrt(E)) over those keys alone; padded keys get 0
        and each row sums to 1. It is the layer's attention row restricted to the prefix
        and renormalised (the rest of the row is the suffix keys). Explicit and in float32,
        differentiable; the layer's own output still comes from the fused attention.
        `velocity` False: the maps alone, v None, the layers above the last one asked for not
        run (a teacher distilled by attention only). Raises ConfigError for a layer outside
        0 .. depth - 1.
        """
        wanted = set(layers)
        outside = sorted(i for i in wanted if not 0 <= i < self.cfg.depth)
        if outside:
            raise ConfigError(f"attention layer(s) {outside} outside this model's joint layers "
                              f"0-{self.cfg.depth - 1}; pick layers it has")
        return self._joint_forward(prefix, state, x_t, t, wanted,
                                   stop_after=None if velocity else max(wanted, default=-1))

    def _joint_forward(
        self, prefix: Prefix, state: Tensor, x_t: Tensor, t: Tensor, wanted: Collection[int],
        stop_after: int | None = None,
    ) -> tuple[Tensor | None, dict[int, Tensor]]:
        """(v [B, C, A], {layer: maps}); `stop_after` set: (None, maps) once that layer's
        maps are taken, the layers above it not run."""
        if stop_after is not None and stop_after < 0:
            return None, {}
        suffix, s_pad, s_blocks = self.embed_suffix(state, x_t, t, prefix.instruction)
        pad = torch.cat([prefix.pad, s_pad], dim=1)  # [B, T]
        bias = mask_to_bias(block_causal_mask(pad, torch.cat([prefix.blocks, s_blocks], 1)))
        positions = torch.cumsum(pad, dim=1) - 1  # [B, T]; padding does not advance them
        # In each tower's own dtype, as prefix_cache and denoise_step do: after cast_towers
        # the state, action and time projections stay float32 (the prefix too, with vision=False).
        dtype = self.vlm.layers[0].q_proj.weight.dtype
        cos, sin = rope_tables(positions, self.cfg.vlm.head_dim, dtype)
        P, C = prefix.embs.shape[1], self.cfg.chunk_len
        x_pre, x_suf = prefix.embs.to(dtype), suffix.to(self.expert.layers[0].q_proj.weight.dtype)
        maps: dict[int, Tensor] = {}
        for i, (vlm_layer, exp_layer) in enumerate(zip(self.vlm.layers, self.expert.layers)):
            q1, k1, v1 = vlm_layer.qkv(x_pre, cos[:, :, :P], sin[:, :, :P])
            q2, k2, v2 = exp_layer.qkv(x_suf, cos[:, :, P:], sin[:, :, P:])
            if i in wanted:  # the action queries (the last C) over the prefix keys
                maps[i] = attention_probs(q2[:, :, -C:], k1, bias[:, :, -C:, :P])  # [B, h, C, P]
            if i == stop_after:
                return None, maps
            out = attend(
                torch.cat([q1, q2.to(q1.dtype)], 2),
                torch.cat([k1, k2.to(k1.dtype)], 2),
                torch.cat([v1, v2.to(v1.dtype)], 2),
                bias,
            )  # [B, T, h*E]
            x_pre = vlm_layer.finish(x_pre, out[:, :P])
            x_suf = exp_layer.finish(x_suf, out[:, P:])
        x_suf = self.expert.norm(x_suf)  # the prefix's output is never read: no VLM head
        return self.action_out_proj(x_suf[:, -self.cfg.chunk_len :].float()), maps

    def loss(
        self,
        prefix: Prefix,
        state: Tensor,
        actions: Tensor,
        noise: Tensor | None = None,
        t: Tensor | None = None,
    ) -> Tensor:
        """Flow-matching loss per element [B, C, A] (mean it, or mask padding first).

        x_t = t * noise + (1 - t) * actions moves from data (t=0) to noise (t=1) at constant
        velocity u = noise - actions; the model regresses u. t ~ Beta(1.5, 1) scaled into
        (0.001, 1), which weights the noisier times as π0 does.
        """
        if noise is None:
            noise = torch.randn_like(actions)
        if t is None:
            t = self.sample_time(actions.shape[0], actions.device)
        tt = t[:, None, None]
        x_t = tt * noise + (1 - tt) * actions
        v = self.velocity(prefix, state, x_t, t)
        return F.mse_loss(v, noise - actions, reduction="none")

    def sample_time(self, batch: int, device: torch.device) -> Tensor:
        """Flow-matching times t [batch] float32 on `device`: Beta(time_beta_alpha,
        time_beta_beta) * time_scale + time_offset, drawn from torch's global generator."""
        cfg = self.cfg
        beta = torch.distributions.Beta(
            torch.tensor(cfg.time_beta_alpha), torch.tensor(cfg.time_beta_beta)
        )
        return (beta.sample((batch,)) * cfg.time_scale + cfg.time_offset).to(device)

    # -- sampling: prefix once, then the expert alone at every Euler step

    @torch.no_grad()
    def prefix_cache(self, prefix: Prefix) -> KVCache:
        """Run the VLM over the prefix once; keep each layer's keys and values."""
        B, P, _ = prefix.embs.shape
        S = self.cfg.suffix_len
        s_pad = torch.ones(B, S, dtype=torch.bool, device=prefix.pad.device)
        s_blocks = torch.zeros(B, S, dtype=torch.long, device=prefix.pad.device)
        s_blocks[:, :2] = 1
        pad = torch.cat([prefix.pad, s_pad], 1)  # [B, T]
        bias = mask_to_bias(block_causal_mask(pad, torch.cat([prefix.blocks, s_blocks], 1)))
        positions = torch.cumsum(pad, dim=1) - 1  # [B, T]
        dtype = self.vlm.layers[0].q_proj.weight.dtype
        cos, sin = rope_tables(positions, self.cfg.vlm.head_dim, dtype)
        cache = KVCache.empty(self.cfg, B, P, dtype, prefix.embs.device)
        cache.bias.copy_(bias[:, :, P:])
        cache.cos.copy_(cos[:, :, P:])
        cache.sin.copy_(sin[:, :, P:])
        cache.instruction = prefix.instruction
        x = prefix.embs.to(dtype)
        for layer, key_buf, val_buf in zip(self.vlm.layers, cache.keys, cache.values):
            q, k, v = layer.qkv(x, cos[:, :, :P], sin[:, :, :P])  # k, v [B, k, P, E]
            key_buf[:, :, :P], val_buf[:, :, :P] = k, v
            x = layer.finish(x, attend(q, k, v, bias[:, :, :P, :P]))
        return cache

    @torch.no_grad()
    def denoise_step(self, cache: KVCache, state: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Velocity [B, C, A] from the expert alone, its queries over cached prefix keys."""
        x, _, _ = self.embed_suffix(state, x_t, t, cache.instruction)  # [B, S, D]
        x = x.to(self.expert.layers[0].q_proj.weight.dtype)
        P = cache.prefix_len
        for i, layer in enumerate(self.expert.layers):
            q, k, v = layer.qkv(x, cache.cos, cache.sin)  # q [B, h, S, E], k/v [B, k, S, E]
            cache.keys[i][:, :, P:] = k  # the suffix slots only; [:P] is untouched
            cache.values[i][:, :, P:] = v
            x = layer.finish(x, attend(q, cache.keys[i], cache.values[i], cache.bias))
        x = self.expert.norm(x)
        return self.action_out_proj(x[:, -self.cfg.chunk_len :].to(self.action_out_proj.weight.dtype)).float()

    @torch.no_grad()
    def sample_actions(
        self, prefix: Prefix, state: Tensor, noise: Tensor | None = None, num_steps: int | None = None
    ) -> Tensor:
        """Integrate dx/dt = v from noise at t=1 to actions at t=0. -> [B, C, A]."""
        B = state.shape[0]
        steps = num_steps or self.cfg.num_steps
        if noise is None:
            noise = torch.randn(B, self.cfg.chunk_len, self.cfg.action_dim, device=state.device)
        cache = self.prefix_cache(prefix)
        return euler_integrate(lambda x, t: self.denoise_step(cache, state, x, t), noise.to(state.device, torch.float32), steps)

    def sample_inpainted(self, prefix: Prefix, state: Tensor, noise: Tensor, target: Tensor, weight: Tensor,
                         num_steps: int | None = None) -> Tensor:
        """`sample_actions` with real-time chunking's inpainting (policy/inpaint.py): target
        [B, C, A] normalised, weight [B, C, 1] in [0, 1] (1: the row equals the target).
        -> [B, C, A]. The deploy chunk graph traces this; `Policy.sample_actions` runs it."""
        cache = self.prefix_cache(prefix)

        def velocity(x: Tensor, t: float) -> Tensor:
            return self.denoise_step(cache, state, x, torch.full((x.shape[0],), t, device=x.device))

        return inpainted_euler(velocity, noise, target, weight, num_steps or self.cfg.num_steps)

    # -- precision

    def cast_towers(self, dtype: torch.dtype, vision: bool = True) -> Pi0Model:
        """VLM, expert and (with `vision`) the vision encoder in `dtype`, e.g. bfloat16 on
        a GPU; in place.

        The state, action and time projections stay in float32, as openpi and lerobot keep
        them: they read and write the flow-matching state itself, which the Euler steps
        integrate in float32. lerobot's bfloat16 mode keeps the vision encoder in float32
        too (`vision=False` does the same).
        """
        for tower in (self.vision, self.vlm, self.expert) if vision else (self.vlm, self.expert):
            tower.to(dtype)
        return self

    # -- surgery

    def dead_parameter_names(self) -> list[str]:
        """Weights no output depends on: the VLM's final norm, and in its last layer all but
        the key/value path (the prefix's last hidden state is never read; π0 has no text
        head). The trainer freezes them so DDP sees no unused parameters."""
        last = f"vlm.layers.{self.cfg.depth - 1}."
        keep = (f"{last}attn_norm.", f"{last}k_proj.", f"{last}v_proj.")
        return [
            name
            for name, _ in self.named_parameters()
            if name == "vlm.norm.weight" or (name.startswith(last) and not name.startswith(keep))
        ]


    def keep_layers(self, indices: list[int]) -> Pi0Model:
        """A new model whose towers keep joint layers `indices` (same in VLM and expert).

        Shares no storage with self: the student's weights are copies, each in the dtype it
        has here, and every copied tensor's name is checked by load_state_dict(strict=True).
        """
        depth = self.cfg.depth
        if not indices or sorted(set(indices)) != list(indices) or indices[-1] >= depth:
            raise ValueError(f"layer indices must be increasing and < {depth}, got {indices}")
        student = Pi0Model(self.cfg.with_depth(len(indices))).to(next(self.parameters()).device)
        state = {}
        for name, tensor in self.state_dict().items():
            tower, _, rest = name.partition(".layers.")
            if tower in ("vlm", "expert") and rest:
                teacher_idx, _, tail = rest.partition(".")
                if int(teacher_idx) not in indices:
                    continue
                name = f"{tower}.layers.{indices.index(int(teacher_idx))}.{tail}"
            state[name] = tensor.clone()
        # assign: each tensor keeps its own dtype (a teacher after cast_towers mixes bf16
        # towers with float32 projections; one cast for all would round the projections).
        student.load_state_dict(state, strict=True, assign=True)
        return student


def count_parameters(module: nn.Module) -> int:
    """The number of parameter elements in `module`, trainable or not."""
    return sum(p.numel() for p in module.parameters())
