"""The fast ChunkSampler computes the reference model's chunk: on the CPU here, and with a
CUDA graph where a GPU is present (those tests are skipped without one)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from shallowpi.policy import Features, Pi0Model, Policy, load_preset
from shallowpi.policy.sampler import ChunkSampler
from shallowpi.policy.tokenizer import ByteTokenizer, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _model(device: str = "cpu", conditioning: str = "tokens") -> Pi0Model:
    torch.manual_seed(0)
    model = Pi0Model(dataclasses.replace(load_preset("tiny"), task_conditioning=conditioning))
    with torch.no_grad():  # RMSNorm scales start at 0; randomise so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model.to(device).eval()


def _inputs(model: Pi0Model, B: int = 3, seed: int = 0):
    """(images, image_masks, tokens, token_masks), state, noise on the model's device."""
    cfg, dev = model.cfg, next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = torch.rand(B, cfg.num_cameras, 3, s, s, generator=g) * 2 - 1
    # Prompts of different lengths: the padded text tokens must stay masked in both paths.
    texts = ["pick", "place the cube in the bowl", ""][:B]
    tokens, mask = tokenize(ByteTokenizer(), texts, cfg.max_text_tokens)
    raw = (images.to(dev), torch.ones(B, cfg.num_cameras, dtype=torch.bool, device=dev), tokens.to(dev), mask.to(dev))
    state = torch.randn(B, cfg.state_dim, generator=g).to(dev)
    noise = torch.randn(B, cfg.chunk_len, cfg.action_dim, generator=g).to(dev)
    return raw, state, noise


def _reference(model: Pi0Model, raw, state, noise, num_steps: int | None = None):
    with torch.no_grad():
        return model.sample_actions(model.embed_prefix(*raw), state, noise=noise, num_steps=num_steps)


@pytest.mark.parametrize("conditioning", ["tokens", "film", "expert"])
def test_sampler_gives_the_reference_chunk(conditioning):
    # "expert" adds the instruction to the action embedding that the sampler folds.
    model = _model(conditioning=conditioning)
    sampler = ChunkSampler(model)
    raw, state, noise = _inputs(model)
    torch.testing.assert_close(sampler(*raw, state, noise), _reference(model, raw, state, noise),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sampler(*raw, state, noise, num_steps=4),
                               _reference(model, raw, state, noise, num_steps=4), atol=1e-5, rtol=1e-5)


def test_bfloat16_towers_stay_close_to_float32_and_return_float32():
    model = _model()
    raw, state, noise = _inputs(model)
    expected = _reference(model, raw, state, noise)
    model.cast_towers(torch.bfloat16)
    assert model.vlm.layers[0].q_proj.weight.dtype == torch.bfloat16
    assert model.vision.layers[0].fc1.weight.dtype == torch.bfloat16
    assert model.action_out_proj.weight.dtype == torch.float32
    got = ChunkSampler(model)(*raw, state, noise)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: chunks agree to a few hundredths, not to float32's 1e-6.
    assert (got - expected).abs().max() < 0.1 * expected.abs().max()
    torch.testing.assert_close(got, _reference(model, raw, state, noise), atol=2e-2, rtol=2e-2)


def _policy() -> Policy:
    torch.manual_seed(0)
    return Policy(load_preset("tiny"), Features(state_dim=3, action_dim=2, cameras=["front"]))


def test_policy_acts_through_the_sampler_only_while_prepared():
    policy = _policy()
    obs = {
        "observation.state": np.zeros(3, np.float32),
        "observation.images.front": np.full((12, 16, 3), 200, np.uint8),
        "task": "pick",
    }
    noise = torch.randn(1, 4, 8)
    reference = policy.eval().sample_actions(obs, noise=noise)
    policy.prepare_inference()
    assert policy._sampler is not None
    torch.testing.assert_close(policy.sample_actions(obs, noise=noise), reference, atol=1e-5, rtol=1e-5)
    # Training changes the weights, so the sampler's fused snapshot must go with train().
    policy.train()
    assert policy._sampler is None
    with torch.no_grad():
        policy.model.expert.layers[0].mlp.down_proj.weight.add_(1.0)
    changed = policy.eval().sample_actions(obs, noise=noise)
    assert not torch.allclose(changed, reference)
    torch.testing.assert_close(policy.prepare_inference().sample_actions(obs, noise=noise), changed,
                               atol=1e-5, rtol=1e-5)


@cuda
@pytest.mark.parametrize("conditioning", ["tokens", "expert"])
def test_cuda_graph_replays_the_reference_chunk_for_new_inputs(conditioning):
    # "expert": the instruction's term of the folded action embedding is made inside the graph.
    model = _model("cuda", conditioning=conditioning)
    graphed, eager = ChunkSampler(model), ChunkSampler(model, cuda_graph=False)
    assert graphed.use_graph and not eager.use_graph
    for seed in (0, 1):  # a second call must read the new inputs, not replay the first's
        raw, state, noise = _inputs(model, seed=seed)
        reference = _reference(model, raw, state, noise)
        torch.testing.assert_close(graphed(*raw, state, noise), reference, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(eager(*raw, state, noise), reference, atol=1e-4, rtol=1e-4)
    raw, state, noise = _inputs(model, B=1)  # another batch size: a graph of its own
    torch.testing.assert_close(graphed(*raw, state, noise), _reference(model, raw, state, noise),
                               atol=1e-4, rtol=1e-4)
    assert len(graphed._graphs) == 2


@cuda
def test_bfloat16_cuda_graph_matches_bfloat16_reference():
    model = _model("cuda").cast_towers(torch.bfloat16)
    raw, state, noise = _inputs(model)
    torch.testing.assert_close(ChunkSampler(model)(*raw, state, noise), _reference(model, raw, state, noise),
                               atol=2e-2, rtol=2e-2)
