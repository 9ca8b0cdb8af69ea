"""The device a training process takes (`pick_device`), and the CUDA device it makes current.

No GPU here: `check_device` (which asks torch for the GPUs) and torch.cuda.set_device are
stood in for, so what is tested is the decision, not CUDA itself.
"""

from __future__ import annotations

import pytest
import torch

from shallowpi.train import distributed


@pytest.fixture
def made_current(monkeypatch) -> list[torch.device]:
    """The devices `pick_device` makes current, in order (as torch.device; set_device takes
    an index, a name or a device)."""
    current: list[torch.device] = []
    monkeypatch.setattr(distributed, "check_device", lambda name: name)  # as if this machine had the GPUs
    monkeypatch.setattr(torch.cuda, "set_device",
                        lambda d: current.append(torch.device("cuda", d) if isinstance(d, int) else torch.device(d)))
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    return current


@pytest.mark.parametrize(("asked", "local_rank", "expected"), [
    ("cuda:1", None, "cuda:1"),  # one process on the second GPU
    ("cuda", None, "cuda:0"),
    ("cuda", "3", "cuda:3"),  # under torchrun: its LOCAL_RANK's
])
def test_the_cuda_device_a_run_is_given_is_the_processs_current_one(made_current, monkeypatch, asked, local_rank,
                                                                     expected):
    """`--device cuda:1` (train's help offers it) moved the policy to GPU 1 but left the
    current device 0: the loader pins its batches (pin_memory) on the current device, so a
    CUDA context and pinned memory went to GPU 0 beside whatever ran there (a colleague's
    job out of memory, or the run refused in exclusive mode). Only a bare `cuda` set it."""
    if local_rank is not None:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
    assert distributed.pick_device(asked) == torch.device(expected)
    assert made_current == [torch.device(expected)]


@pytest.mark.parametrize("asked", ["cpu", "mps"])
def test_a_device_that_is_not_cuda_makes_no_cuda_device_current(made_current, asked):
    assert distributed.pick_device(asked) == torch.device(asked) and made_current == []
