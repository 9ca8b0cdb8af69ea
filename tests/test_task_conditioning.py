"""Direct instruction conditioning (policy/conditioning.py): `film` and `expert` start as
π0 exactly, make the chunk depend on the instruction row by row, and every path that
computes a chunk (reference, fast sampler, layer cut, ONNX prefix + step) agrees."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from deploy_fixtures import tiny_checkpoint
from shallowpi.errors import ConfigError
from shallowpi.policy import Pi0Model, load_preset
from shallowpi.policy.sampler import ChunkSampler
from shallowpi.policy.tokenizer import ByteTokenizer, tokenize

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MODES = ("film", "expert")
CONDITIONING = ("vision.film.", "instruction_proj.")


def _model(mode: str, randomise_conditioning: bool = True) -> Pi0Model:
    torch.manual_seed(0)
    model = Pi0Model(dataclasses.replace(load_preset("tiny"), task_conditioning=mode))
    with torch.no_grad():  # RMSNorm scales start at 0; randomise so every weight matters
        for name, p in model.named_parameters():
            if randomise_conditioning or not name.startswith(CONDITIONING):
                p.add_(torch.randn_like(p) * 0.1)
    return model.eval()


def _inputs(model: Pi0Model, texts: list[str]):
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    B, s = len(texts), cfg.vision.image_size
    images = (torch.rand(1, cfg.num_cameras, 3, s, s, generator=g) * 2 - 1).expand(B, -1, -1, -1, -1)
    tokens, mask = tokenize(ByteTokenizer(), texts, cfg.max_text_tokens)
    raw = (images, torch.ones(B, cfg.num_cameras, dtype=torch.bool), tokens, mask)
    state = torch.randn(1, cfg.state_dim, generator=g).expand(B, -1)
    noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=g).expand(B, -1, -1)
    return raw, state, noise


def _chunk(model: Pi0Model, raw, state, noise):
    with torch.no_grad():
        return model.sample_actions(model.embed_prefix(*raw), state, noise=noise)


@pytest.mark.parametrize("mode", MODES)
def test_untrained_conditioning_is_pi0_exactly(mode):
    conditioned = _model(mode, randomise_conditioning=False)
    plain = Pi0Model(load_preset("tiny")).eval()
    missing = plain.load_state_dict(conditioned.state_dict(), strict=False)
    assert missing.missing_keys == [] and missing.unexpected_keys
    assert all(k.startswith(CONDITIONING) for k in missing.unexpected_keys)
    raw, state, noise = _inputs(plain, ["push the block", "put the cube in the bowl"])
    assert torch.equal(_chunk(conditioned, raw, state, noise), _chunk(plain, raw, state, noise))


@pytest.mark.parametrize("mode", MODES)
def test_the_instruction_changes_its_own_rows_chunk_only(mode):
    model = _model(mode)
    raw, state, noise = _inputs(model, ["push the block", "push the block", "put the cube in the bowl"])
    chunks = _chunk(model, raw, state, noise)  # same images, state and noise in every row
    torch.testing.assert_close(chunks[0], chunks[1], atol=1e-6, rtol=0)
    assert (chunks[0] - chunks[2]).abs().max() > 1e-2


def test_without_conditioning_weights_the_instruction_still_matters_through_the_prefix():
    model = _model("tokens")  # the control: π0's text tokens alone also condition
    raw, state, noise = _inputs(model, ["push the block", "put the cube in the bowl"])
    chunks = _chunk(model, raw, state, noise)
    assert (chunks[0] - chunks[1]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", MODES)
def test_the_fast_sampler_and_a_layer_cut_carry_the_conditioning(mode):
    model = _model(mode)
    raw, state, noise = _inputs(model, ["push the block", "put the cube in the bowl"])
    torch.testing.assert_close(ChunkSampler(model)(*raw, state, noise), _chunk(model, raw, state, noise),
                               atol=1e-5, rtol=1e-5)
    student = model.keep_layers([0, model.cfg.depth - 1])
    for name, tensor in student.state_dict().items():
        if name.startswith(CONDITIONING):
            assert torch.equal(tensor, model.state_dict()[name]), name
    assert student.cfg.task_conditioning == mode


def test_an_unknown_conditioning_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"task_conditioning 'adaln'.*tokens, film, expert"):
        dataclasses.replace(load_preset("tiny"), task_conditioning="adaln")


def test_the_exported_graphs_carry_the_instruction_and_match_torch(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'shallowpi[export]'")
    pytest.importorskip("onnxscript", reason="onnxscript not installed: pip install 'shallowpi[export]'")
    import onnxruntime as ort

    from shallowpi.deploy.export_onnx import PARITY_TOL, export_graphs, parity
    from shallowpi.policy import Policy

    policy = Policy.load(tiny_checkpoint(tmp_path / "ckpt", task_conditioning="expert"))
    # The chunk graph calls the same prefix_cache/denoise_step inside one graph (covered for
    # π0 in test_deploy_export); the split graphs are where the instruction crosses an I/O.
    graphs = export_graphs(policy, tmp_path, graphs=("prefix", "step"), check=False)
    prefix = ort.InferenceSession(str(graphs["prefix"]), providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(graphs["step"]), providers=["CPUExecutionProvider"])
    assert prefix.get_outputs()[-1].name == "cache_instruction"
    assert "cache_instruction" in {i.name for i in step.get_inputs()}
    diffs = parity(policy, graphs, seed=3)
    assert np.isfinite(diffs["prefix+step"]) and diffs["prefix+step"] <= PARITY_TOL, diffs
