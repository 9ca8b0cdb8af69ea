"""Fast action-chunk sampling: the path the robot's executor runs.

`Pi0Model.sample_actions` is the reference, written to be read. `ChunkSampler` computes the
same chunk (checked against it in tests/test_policy_sampler.py) with what matters at batch 1:

- The expert's q/k/v projections are one matmul, and so are gate/up: the same weights,
  concatenated once when the sampler is built. Fewer, larger GEMMs. Its attention (50-odd
  queries, one key/value head) is two small matmuls rather than a flash kernel.
- Nothing that is constant over the Euler steps is recomputed per step: the prefix keys and
  values, the suffix's mask rows and RoPE tables live in the `KVCache`, filled once a chunk,
  and the state token is embedded once.
- The action embedding's linear maps are folded, and the output norm is one call
  (`FusedActionProjections`): the Euler steps' times are known in advance, so everything in
  the embedding but the noisy actions is one vector per step. At the small presets' width
  of 64 each operation costs more in dispatch than in arithmetic, and this part runs at
  every step whatever the depth: it was a third of the per-chunk cost that a shallower
  student does not shed (BENCHMARKS.md, Distillation (b13)).
- On CUDA the whole chunk (vision encoder, VLM prefix, then `num_steps` x depth expert
  layers, ~20 kernels a layer) is captured once as a CUDA graph and replayed: one launch per
  chunk instead of thousands. At batch 1 a GPU otherwise spends most of a chunk waiting on
  Python and kernel launches, which is where most of lerobot's PI0 latency goes.

The fused weights are a snapshot taken when the sampler is built: build a new one after the
weights change (`Policy.prepare_inference` does; going back to `train()` drops it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from shallowpi.policy.gemma import GemmaLayer, RMSNorm, apply_rope, attend, gelu_tanh
from shallowpi.policy.inpaint import euler_times
from shallowpi.policy.model import KVCache, Pi0Model, time_embedding


def attend_few_queries(q: Tensor, k: Tensor, v: Tensor, bias: Tensor) -> Tensor:
    """`gemma.attend` for a short suffix over one shared key/value head (π0's multi-query).

    q [B, h, S, E], k/v [B, 1, T, E], bias [B, 1, S, T] -> [B, S, h*E]. All h*S queries meet
    the one key head in a single matmul; softmax in float32. At S=51 queries the fused flash
    kernel SDPA picks on an H200 (it tiles for long sequences) took ~80 µs a call, 180 calls
    a full-size chunk; these few small kernels took the chunk from 44.6 to 36.6 ms
    (BENCHMARKS.md, Policy).
    """
    B, h, S, E = q.shape
    scores = torch.bmm(q.reshape(B, h * S, E), k[:, 0].transpose(1, 2)).view(B, h, S, -1)
    weights = torch.softmax(scores.float() * E**-0.5 + bias, dim=-1).to(v.dtype)
    out = torch.bmm(weights.view(B, h * S, -1), v[:, 0]).view(B, h, S, E)
    return out.transpose(1, 2).flatten(2)


class FusedExpertLayer:
    """One expert layer's weights, fused for inference (plain tensors: nothing trains here)."""

    def __init__(self, layer: GemmaLayer) -> None:
        self.heads, self.kv_heads, self.head_dim = layer.num_heads, layer.num_kv_heads, layer.head_dim
        self.eps = layer.attn_norm.eps
        # Gemma scales by (1 + weight); statistics in float32, like RMSNorm.
        self.attn_scale = 1.0 + layer.attn_norm.weight.detach().float()
        self.mlp_scale = 1.0 + layer.mlp_norm.weight.detach().float()
        self.w_qkv = torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]).detach()
        self.w_o = layer.o_proj.weight.detach()
        self.w_gate_up = torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).detach()
        self.w_down = layer.mlp.down_proj.weight.detach()
        self.split = [self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim]

    def _norm(self, x: Tensor, scale: Tensor) -> Tensor:
        return F.rms_norm(x.float(), scale.shape, scale, self.eps).to(x.dtype)

    def __call__(self, x: Tensor, cache: KVCache, index: int) -> Tensor:
        """x [B, S, D] -> [B, S, D]; writes this layer's suffix keys/values into the cache."""
        B, S, _ = x.shape
        q, k, v = F.linear(self._norm(x, self.attn_scale), self.w_qkv).split(self.split, dim=-1)
        q = apply_rope(q.view(B, S, self.heads, self.head_dim).transpose(1, 2), cache.cos, cache.sin)
        k = apply_rope(k.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2), cache.cos, cache.sin)
        P = cache.prefix_len
        cache.keys[index][:, :, P:] = k
        cache.values[index][:, :, P:] = v.view(B, S, self.kv_heads, self.head_dim).transpose(1, 2)
        mqa = attend_few_queries if self.kv_heads == 1 else attend
        x = x + F.linear(mqa(q, cache.keys[index], cache.values[index], cache.bias), self.w_o)
        gate, up = F.linear(self._norm(x, self.mlp_scale), self.w_gate_up).chunk(2, dim=-1)
        return x + F.linear(gelu_tanh(gate) * up, self.w_down)


class FusedActionProjections:
    """`Pi0Model.embed_actions` and `action_out_proj`, folded for sampling at known times.

    embed_actions(x, t) = W_2 silu(W_1 [W_a x + b_a ; e(t) + u] + b_1) + b_2 (W_a: action_in_proj,
    W_1, W_2: action_time_mlp_in, _out), with e(t) the sinusoidal time embedding and u the
    projected instruction (`task_conditioning: expert`, else 0). Split W_1 = [W_1a | W_1t]:
    the first layer is (W_1a W_a) x + c(t, u), where c(t, u) = W_1a b_a + W_1t (e(t) + u) + b_1
    holds no action. The Euler steps' times are fixed by the step count, so c is a table of
    one row per step (per chunk with u), and a step's embedding is four operations (matmul,
    add, silu, matmul) instead of about a dozen; it also skips W_1a's matmul over the chunk.
    The output is the expert's final norm as one `F.rms_norm`, then action_out_proj. Equal
    to the unfolded arithmetic up to float32 rounding; weights stay float32, as
    `Pi0Model.cast_towers` keeps them.
    """

    def __init__(self, model: Pi0Model) -> None:
        cfg, d = model.cfg, model.cfg.expert.width
        w1 = model.action_time_mlp_in.weight.detach()  # [D, 2D]
        w1a, self.w1t = w1[:, :d], w1[:, d:]
        self.w_in = w1a @ model.action_in_proj.weight.detach()  # [D, A]
        self.b_in = w1a @ model.action_in_proj.bias.detach() + model.action_time_mlp_in.bias.detach()  # [D]
        self.w_mid, self.b_mid = model.action_time_mlp_out.weight.detach(), model.action_time_mlp_out.bias.detach()
        self.instruction_proj = model.instruction_proj
        self.periods = (cfg.time_min_period, cfg.time_max_period)
        self.width = d
        self._per_step: dict[int, Tensor] = {}
        norm: RMSNorm = model.expert.norm
        self.out_eps, self.out_scale = norm.eps, 1.0 + norm.weight.detach().float()
        self.w_out, self.b_out = model.action_out_proj.weight.detach(), model.action_out_proj.bias.detach()

    def step_terms(self, steps: int, instruction: Tensor | None) -> Tensor:
        """c(t, u) for the Euler steps' times t = 1, 1 - 1/steps, ..., 1/steps:
        [steps, 1, 1, D], or [steps, B, 1, D] with the instruction [B, D_vlm]."""
        if steps not in self._per_step:
            t = torch.tensor(euler_times(steps), device=self.w_in.device)
            emb = time_embedding(t, self.width, *self.periods)  # [steps, D]
            self._per_step[steps] = (emb @ self.w1t.T + self.b_in)[:, None, None]
        terms = self._per_step[steps]
        if self.instruction_proj is not None:
            assert instruction is not None, "task_conditioning 'expert' needs the prefix's instruction"
            u = self.instruction_proj(instruction.to(self.w1t.dtype)) @ self.w1t.T  # [B, D]
            terms = terms + u[None, :, None]
        return terms

    def embed(self, x_t: Tensor, term: Tensor) -> Tensor:
        """Noisy actions x_t [B, C, A] and one step's c [B or 1, 1, D] -> tokens [B, C, D]."""
        return F.linear(F.silu(F.linear(x_t, self.w_in) + term), self.w_mid, self.b_mid)

    def velocity(self, x: Tensor) -> Tensor:
        """The expert's last hidden states of the action tokens [B, C, D] -> velocity [B, C, A] float32."""
        # The final norm rounds back to the towers' dtype, as `expert.norm` does (bf16 on a GPU).
        x = F.rms_norm(x.float(), self.out_scale.shape, self.out_scale, self.out_eps).to(x.dtype)
        return F.linear(x.float(), self.w_out, self.b_out)


@dataclass
class _Graph:
    """A captured chunk computation and the fixed buffers it reads and writes."""

    graph: torch.cuda.CUDAGraph
    inputs: tuple[Tensor, ...]
    out: Tensor

    def replay(self, *values: Tensor) -> Tensor:
        """Copy `values` into the captured inputs and replay the graph; returns a copy of its output."""
        for buffer, value in zip(self.inputs, values):
            buffer.copy_(value)
        self.graph.replay()
        return self.out.clone()


class ChunkSampler:
    """`sampler(images, image_masks, tokens, token_masks, state, noise) -> actions [B, C, A]`,
    equal to `model.sample_actions(model.embed_prefix(...), state, noise)`.

    model       a Pi0Model in eval mode; its towers may be cast (`Pi0Model.cast_towers`)
    cuda_graph  on a GPU, capture the whole chunk (vision, prefix, Euler loop) as one CUDA
                graph, per input shape and step count, on first use
    """

    def __init__(self, model: Pi0Model, *, num_steps: int | None = None, cuda_graph: bool = True) -> None:
        self.model = model.eval()
        self.cfg = model.cfg
        self.num_steps = num_steps or model.cfg.num_steps
        self.layers = [FusedExpertLayer(layer) for layer in model.expert.layers]
        self.actions = FusedActionProjections(model)
        self.dtype = model.expert.layers[0].q_proj.weight.dtype
        self.device = model.expert.layers[0].q_proj.weight.device
        self.use_graph = cuda_graph and self.device.type == "cuda"
        self._graphs: dict[tuple, _Graph] = {}

    @torch.inference_mode()
    def __call__(
        self, images: Tensor, image_masks: Tensor, tokens: Tensor, token_masks: Tensor,
        state: Tensor, noise: Tensor, num_steps: int | None = None,
    ) -> Tensor:
        """images [B, N, 3, H, W] in [-1, 1], image_masks [B, N], tokens/token_masks [B, L],
        state [B, state_dim] and noise [B, C, A] as Pi0Model takes them."""
        steps = num_steps or self.num_steps
        inputs = (images, image_masks, tokens, token_masks, state, noise.float())
        if not self.use_graph:
            return self._chunk(*inputs, steps=steps)
        key = (*(tuple(x.shape) for x in inputs), steps)
        if key not in self._graphs:
            self._graphs[key] = self._capture(inputs, steps)
        return self._graphs[key].replay(*inputs)

    def _chunk(self, images, image_masks, tokens, token_masks, state, noise, *, steps: int) -> Tensor:
        prefix = self.model.embed_prefix(images, image_masks, tokens, token_masks)
        cache = self.model.prefix_cache(prefix)
        state_token = self.model.embed_state(state)  # [B, 1, D], constant over the Euler steps
        terms = self.actions.step_terms(steps, cache.instruction)  # [steps, B or 1, 1, D]
        x, dt = noise, -1.0 / steps  # Euler from t=1 to t=0, as model.euler_integrate
        for step in range(steps):
            x = x + dt * self._velocity(cache, state_token, x, terms[step])
        return x

    def _velocity(self, cache: KVCache, state_token: Tensor, x_t: Tensor, term: Tensor) -> Tensor:
        actions = self.actions.embed(x_t, term)  # [B, C, D]
        x = torch.cat([state_token, actions.to(state_token.dtype)], dim=1).to(self.dtype)  # [B, S, D]
        for i, layer in enumerate(self.layers):
            x = layer(x, cache, i)
        return self.actions.velocity(x[:, -self.cfg.chunk_len :])

    def _capture(self, example: tuple[Tensor, ...], steps: int) -> _Graph:
        static = tuple(x.detach().clone() for x in example)  # fixed addresses, replayed over
        # Warm up on a side stream first (lazy kernel/library initialisation must not be
        # captured), then record one whole chunk. Its intermediates (the KV cache too) live
        # in the graph's own memory pool, at the same addresses every replay.
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._chunk(*static, steps=steps)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._chunk(*static, steps=steps)
        return _Graph(graph, static, out)
