"""tools/bench/padded_dims.py: the `on-path` variant changes the sampler's padded action
dimensions only, and brings them to 0 as training's flow path does."""

from __future__ import annotations

import pytest
import torch

from bench_scripts import load_bench
from shallowpi.policy import Pi0Model, load_preset
from shallowpi.policy.sampler import ChunkSampler
from test_policy_sampler import _inputs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _on_path_reference(sampler: ChunkSampler, raw, state, noise, real: int) -> torch.Tensor:
    """The Euler loop written out, the padded velocity replaced by the noise."""
    model, steps = sampler.model, sampler.num_steps
    with torch.no_grad():
        cache = model.prefix_cache(model.embed_prefix(*raw))
        state_token, terms = model.embed_state(state), sampler.actions.step_terms(steps, cache.instruction)
        x = noise
        for step in range(steps):
            v = sampler._velocity(cache, state_token, x, terms[step])
            x = x - torch.cat([v[..., :real], noise[..., real:]], dim=-1) / steps
    return x


def test_the_padding_held_on_its_path_ends_at_zero_and_the_real_dimensions_move_as_the_model_says():
    padded_dims = load_bench("padded_dims")
    torch.manual_seed(0)
    model = Pi0Model(load_preset("tiny")).eval()
    real = model.cfg.action_dim - 3
    sampler = ChunkSampler(model)
    raw, state, noise = _inputs(model)
    as_is = sampler(*raw, state, noise)
    with padded_dims.padding_on_path(real):
        on_path = sampler(*raw, state, noise)
    assert on_path[..., real:].abs().max() < 1e-5 < as_is[..., real:].abs().max()
    torch.testing.assert_close(on_path, _on_path_reference(sampler, raw, state, noise, real), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampler(*raw, state, noise), as_is)  # the sampler is itself again after
