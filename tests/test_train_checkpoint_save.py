"""A checkpoint's save: the weights it writes, and what it costs the run while it writes them."""

from __future__ import annotations

import pytest
import torch

from policy_fakes import FakeChunks, tiny_policy
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.policy.config import PolicyConfig
from shallowpi.train.checkpoint import Checkpointer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _checkpointer(run_dir, policy: Policy) -> Checkpointer:
    """A Checkpointer of `policy` after one AdamW step (so the optimiser has state)."""
    optimizer = torch.optim.AdamW(policy.parameters())
    sum(p.sum() for p in policy.parameters()).backward()
    optimizer.step()
    return Checkpointer(run_dir, policy, optimizer, sharded=False, main=True, metadata={"dataset": "d"})


def _teacher(data: FakeChunks) -> Policy:
    """The `teacher` preset (word tokenizer, convolutional stem) for `data`, with its statistics."""
    cfg = PolicyConfig.from_dict({**load_preset("teacher").to_dict(), "vocabulary": ["reach", "the", "target"]})
    policy = Policy(cfg, Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    return policy


def test_a_save_initialises_no_policy_to_copy_the_weights_into(tmp_path):
    """Each save built a randomly initialised Policy on rank 0 to copy the weights into,
    twice with EMA: at π0's 3.2 B parameters ~40-80 s of single-threaded init a save, and
    ~13 GB of host memory more, while the other ranks waited. The init drew from torch's
    generator, so rank 0's random stream (dropout, noise, augmentation) also moved on at
    every save where the others' did not."""
    policy = tiny_policy(FakeChunks())
    checkpointer = _checkpointer(tmp_path, policy)
    ema = {k: v.detach() + 1.0 for k, v in policy.state_dict().items()}
    drawn = torch.random.get_rng_state()
    saved = checkpointer.save(1, ema=ema, ema_rate=0.9)
    assert torch.equal(torch.random.get_rng_state(), drawn)  # nothing was randomly initialised
    weights, average = Policy.load(saved), Policy.load(saved / "ema")
    for name, tensor in policy.state_dict().items():
        assert torch.equal(weights.state_dict()[name], tensor) and torch.equal(average.state_dict()[name], ema[name])
    assert (weights.action_mean == policy.action_mean).all() and (average.action_mean == policy.action_mean).all()


@pytest.mark.parametrize("preset", ["tiny", "teacher"])
def test_a_checkpoints_weight_files_are_byte_for_byte_a_new_policys_with_the_weights_copied_in(tmp_path, preset):
    """What a save writes (weights and EMA weights: tensors, dtypes, header) is what it
    wrote when it copied them into a newly initialised Policy and saved that: nothing the
    policy computes at init (its tokenizer, buffers) is lost by not initialising one."""
    data = FakeChunks(cameras=("front", "wrist"), size=(64, 64))
    policy = tiny_policy(data) if preset == "tiny" else _teacher(data)
    checkpointer = _checkpointer(tmp_path / "run", policy)
    ema = {k: v.detach() * 0.5 for k, v in policy.state_dict().items()}
    saved = checkpointer.save(3, ema=ema, ema_rate=0.99)
    meta = {"step": "3", "dataset": "d"}
    for state, folder, extra in ((policy.state_dict(), saved, {}), (ema, saved / "ema", {"ema": "0.99"})):
        copied = Policy(policy.cfg, policy.features)  # the way it was done
        copied.load_state_dict(state, strict=True)
        copied.action_mean = policy.action_mean
        reference = copied.save(tmp_path / "reference" / folder.name, {**meta, **extra})
        assert _contents(folder / "model.safetensors") == _contents(reference)


def _contents(path) -> tuple[dict[str, str], dict[str, tuple[str, list[int], list[int]]], bytes]:
    """A safetensors file's header metadata, its tensors' dtypes, shapes and places, and the bytes
    of their data: the whole file but the header's order, which safetensors' writer does
    not keep (two saves of one policy differ in it)."""
    import json
    import struct

    data = path.read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    tensors = {k: (v["dtype"], v["shape"], v["data_offsets"]) for k, v in header.items() if k != "__metadata__"}
    return header["__metadata__"], tensors, data[8 + size :]
