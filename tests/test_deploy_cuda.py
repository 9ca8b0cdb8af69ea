"""The torch backend on a CUDA GPU as the `cuda` deployment profile runs it (each chunk a
replayed CUDA graph, the towers in bf16): the chunks a robot gets from a workstation's GPU,
plain and inpainted (real-time chunking), against the CPU's float32 chunks.

Skipped without a GPU (CI has none); `tools/bench/gpu_checks.sh` runs them on a lent one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deploy_fixtures import observation, tiny_checkpoint
from shallowpi.deploy.backends import BackendOptions, Inpainting, make_backend
from shallowpi.deploy.bundle import build_bundle
from shallowpi.policy.action_selection import rtc_weights

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("cuda")
    return build_bundle(tiny_checkpoint(root / "ckpt"), root / "bundle", graphs=())  # torch needs no graph


# fp32: cuDNN may run the vision stem's convolutions in TF32 (10-bit mantissa). bf16: 8-bit
# mantissa through 10 Euler steps. Both in robot units (the tiny bundle's stds are 0.2-1).
@pytest.mark.parametrize("precision, tolerance", [("fp32", 5e-3), ("bf16", 6e-2)])
def test_the_cuda_backend_gives_the_cpu_chunks_plain_and_inpainted(bundle, rng, precision, tolerance):
    cpu = make_backend("torch", bundle)
    gpu = make_backend("torch", bundle, BackendOptions(device="cuda", precision=precision))
    assert gpu.runs_on() == f"cuda ({precision})"
    first, second = observation(rng), observation(rng)
    second["task"], second["observation.state"] = "push the block to the left", second["observation.state"] + 2
    assert len(gpu.warm_up(first, runs=3)) == 3  # the plain chunk graph captured, the inpainted path run
    target = rng.normal(0, 1, (4, 7)).astype(np.float32)
    inpainting = Inpainting(target, rtc_weights(4, frozen=2, overlap=4))
    chunks = {}
    for name, obs in (("first", first), ("second", second)):  # the second replays on new inputs
        for inpaint in (None, inpainting):
            cpu.reset(7)
            gpu.reset(7)
            want, got = cpu.infer(obs, inpaint), gpu.infer(obs, inpaint)
            assert got.shape == want.shape == (4, 7) and got.dtype == np.float32
            assert np.isfinite(got).all()
            error = np.abs(got - want).max()
            assert error <= tolerance, f"{name} observation, inpainted {inpaint is not None}: {error:.2e}"
            chunks[name, inpaint is not None] = want
    # a replay that kept the first observation's inputs would fail above: the chunks differ
    assert np.abs(chunks["first", False] - chunks["second", False]).max() > 5 * tolerance
    cpu.reset(7)
    gpu.reset(7)
    frozen = gpu.infer(second, inpainting)[:2]  # the frozen rows are the target, in robot units
    assert np.abs(frozen - target[:2]).max() <= tolerance


def test_fp8_is_computed_in_bf16_and_says_so(bundle):
    """The `thor` profile asks fp8 (TensorRT); the torch backend has no fp8 kernels and casts
    the towers to bf16, and its banner must say bf16, not what was asked."""
    gpu = make_backend("torch", bundle, BackendOptions(device="cuda", precision="fp8"))
    assert gpu.runs_on() == "cuda (bf16)"
    assert {p.dtype for p in gpu.model.vlm.parameters()} == {p.dtype for p in gpu.model.expert.parameters()} \
        == {torch.bfloat16}


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_the_cuda_backend_passes_the_bundles_reference_check_in_every_precision(bundle, precision):
    """What `platform deploy` checks before anything connects (deploy/reference.py): the GPU's
    chunk against the torch policy's float32 one, within the default 0.05 action std."""
    from shallowpi.deploy.reference import check

    parity = check(make_backend("torch", bundle, BackendOptions(device="cuda", precision=precision)))
    assert parity is not None and parity.error_std < 0.05, parity
    print(f"{precision}: {parity.line()}")
