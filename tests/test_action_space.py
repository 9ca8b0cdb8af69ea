"""policy.actions=delta: joints predicted as offsets from the chunk's state, grippers absolute,
and absolute targets out of every path (torch policy, RTC inpainting, deploy backends)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deploy_fixtures import observation
from shallowpi.data.features import Feature, robot_features
from shallowpi.data.store import EpisodeStore
from shallowpi.data.training import ChunkDataset
from shallowpi.data.windows import ChunkWindows
from shallowpi.errors import ConfigError, StoreError
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.policy.action_space import delta_dims, mask_of, offsets_from, targets_from
from shallowpi.policy.weights import CheckpointError
from shallowpi.robots.spec import RobotSpec
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ARM = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_yaw", "wrist_roll", "gripper"]


def test_offsets_and_targets_are_inverse_and_grippers_stay_absolute():
    rng = np.random.default_rng(0)
    actions, state = rng.normal(size=(3, 5, 7)).astype(np.float32), rng.normal(size=(3, 7)).astype(np.float32)
    mask = mask_of(delta_dims(ARM, ARM), 7)
    assert mask.tolist() == [1, 1, 1, 1, 1, 1, 0]
    offsets = offsets_from(actions, state, mask)
    assert np.allclose(offsets[..., :6], actions[..., :6] - state[:, None, :6]) and np.array_equal(offsets[..., 6], actions[..., 6])
    assert np.allclose(targets_from(offsets, state, mask), actions, atol=1e-6)
    as_torch = targets_from(torch.from_numpy(offsets), torch.from_numpy(state), torch.from_numpy(mask))
    assert torch.allclose(as_torch, torch.from_numpy(actions), atol=1e-6)


def test_delta_dims_skip_grippers_and_need_actions_on_the_states_joints():
    both = ["left_" + j for j in ARM] + ["right_" + j for j in ARM]
    assert delta_dims(both, both) == [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
    assert delta_dims([*ARM, "base_x"], ARM) == [0, 1, 2, 3, 4, 5]  # extra state after the joints: fine
    with pytest.raises(ConfigError, match=r"policy\.actions=delta needs actions that command the state's joints"):
        delta_dims(ARM, list(reversed(ARM)))
    with pytest.raises(ConfigError, match="needs the store's joint names"):
        delta_dims((), ())  # a store imported without names
    with pytest.raises(ConfigError, match="is a gripper"):
        delta_dims(["gripper"], ["gripper"])


def test_the_recorded_joint_kinds_say_which_joints_are_grippers():
    """A robot spec may name its gripper anything (`kind: gripper`); the store keeps the
    kinds beside the names, and they decide. Only a store without them falls back to names."""
    hand = ["shoulder", "elbow", "hand"]
    assert delta_dims(hand, hand) == [0, 1, 2]  # by name alone the hand would be an offset
    assert delta_dims(hand, hand, ("revolute", "revolute", "gripper")) == [0, 1]
    assert delta_dims(ARM, ARM, ("revolute",) * 7) == list(range(7))  # the kinds win over a name


def test_without_written_kinds_the_spec_and_the_policy_read_a_name_the_same_way():
    """One rule (shallowpi/joints.py) for a joint nobody gave a kind: a robot file without
    `kind:` and a kindless store (lerobot's `gripper.pos`) must agree on which joints are
    grippers, or a recording and its policy would disagree about what is an offset."""
    names = ["shoulder.pos", "elbow.pos", "gripper.pos", "Left_Gripper", "wrist_roll"]
    raw = {"name": "x", "fps": 30, "joints": [{"name": n, "lower": 0, "upper": 1, "max_velocity": 1} for n in names],
           "buses": {"b": {"port": "/dev/null", "baud": 1000000}},
           "motors": {n: {"bus": "b", "id": i + 1, "model": "XL430-W250"} for i, n in enumerate(names)}}
    kinds = RobotSpec.from_config(raw).joint_kinds
    assert kinds == ["revolute", "revolute", "gripper", "gripper", "revolute"]
    by_name = delta_dims(names, names)
    assert by_name == [i for i, kind in enumerate(kinds) if kind != "gripper"] == [0, 1, 4]
    assert delta_dims(names, names, kinds) == by_name


def test_a_store_keeps_joint_kinds_and_an_older_store_without_them_still_takes_episodes(tmp_path):
    kinds = ("revolute", "revolute", "gripper")
    EpisodeStore.create(tmp_path / "k.zarr", robot_features(["a", "b", "hand"], {}, kinds)).close()
    reopened = EpisodeStore.open(tmp_path / "k.zarr")
    assert reopened.features["action"].kinds == kinds and reopened.features["observation.state"].kinds == kinds
    # kinds take no part in equality: a store recorded before they were kept matches today's features
    assert robot_features(["a", "b", "hand"], {}) == robot_features(["a", "b", "hand"], {}, kinds)
    assert "kinds" not in Feature.vector(["a"]).to_json()  # written only when known, as older stores read it
    with pytest.raises(StoreError, match="unknown joint kind"):
        Feature.vector(["a"], kinds=["wheel"])
    with pytest.raises(StoreError, match="2 joint kinds for a feature of shape"):
        Feature.vector(["a"], kinds=["revolute", "gripper"])


def test_offset_dimensions_are_checked_where_they_are_set():
    tiny = load_preset("tiny")
    for dims in ([0, 0], [-1], [tiny.action_dim]):
        with pytest.raises(ConfigError, match="must be distinct action indices"):
            dataclasses.replace(tiny, actions="delta", delta_dims=dims)
    with pytest.raises(ConfigError, match=r"belong to policy\.actions=delta"):
        dataclasses.replace(tiny, delta_dims=[0])
    with pytest.raises(CheckpointError, match=r"without policy\.delta_dims"):
        Policy(dataclasses.replace(tiny, actions="delta"), Features(7, 7, ["front"]))
    with pytest.raises(CheckpointError, match="reach past the data's 7 actions"):
        Policy(dataclasses.replace(tiny, actions="delta", delta_dims=[0, 7]), Features(7, 7, ["front"]))


def test_chunk_rows_are_every_window_at_once():
    rng = np.random.default_rng(1)
    ends = np.cumsum(rng.integers(1, 9, size=6))
    for offset in (0, 1):
        for chunk in (1, 4):
            windows = ChunkWindows(ends, chunk, episodes=[0, 2, 5], action_offset=offset)
            rows, action_rows, is_pad = windows.chunk_rows()
            for i in range(len(windows)):
                w = windows[i]
                assert rows[i] == w.row
                assert np.array_equal(action_rows[i], w.action_rows) and np.array_equal(is_pad[i], w.is_pad)


def test_the_action_statistics_are_over_what_the_model_predicts(tmp_path):
    make_store(tmp_path / "s.zarr", episodes=3, length=12).close()
    data = ChunkDataset(tmp_path / "s.zarr", 4, episodes=[0, 2], image_keys=[])
    offsets = []
    for i in range(len(data)):
        item = data[i]
        chunk = item["action"].numpy() - item["observation.state"].numpy()[None, :6] * np.array([1, 1, 0, 1, 1, 1])
        offsets.append(chunk[~item["action_is_pad"].numpy()])
    offsets = np.concatenate(offsets)
    stats = data.stats(delta_dims=[0, 1, 3, 4, 5])["action"]
    for key, expected in (("mean", offsets.mean(0)), ("std", offsets.std(0)), ("min", offsets.min(0)), ("max", offsets.max(0))):
        assert np.allclose(stats[key], expected, atol=1e-5), key
    plain = data.stats()["action"]
    assert not np.allclose(plain["mean"], stats["mean"])  # the offsets are not the rows
    assert np.allclose(stats["row_mean"], plain["mean"], atol=1e-5)  # the absolute mean, for the baseline


def _delta_policy(actions: str = "delta") -> Policy:
    cfg = dataclasses.replace(load_preset("tiny"), actions=actions, delta_dims=[0, 1, 2, 3, 4, 5] if actions == "delta" else [])
    torch.manual_seed(0)
    policy = Policy(cfg, Features(7, 7, ["front"]))
    with torch.no_grad():  # the model's output must not depend on the state for this check
        policy.model.state_proj.weight.zero_()
        policy.model.state_proj.bias.zero_()
    rng = np.random.default_rng(0)
    policy.set_stats({key: {"mean": rng.normal(0, 0.5, 7), "std": rng.uniform(0.2, 1.0, 7)}
                      for key in ("observation.state", "action")})
    return policy.eval()


@pytest.mark.parametrize("actions", ["delta", "absolute"])
def test_a_delta_policys_chunk_moves_with_the_state_and_its_gripper_does_not(actions):
    """With the state token silenced, the model predicts the same thing whatever the state:
    a delta policy's joint targets then follow the state one for one, its gripper does not
    move; an absolute policy's targets do not move at all."""
    policy = _delta_policy(actions)
    obs = observation(np.random.default_rng(2))
    moved = {**obs, "observation.state": obs["observation.state"] + np.float32(0.3)}
    noise = torch.randn(1, policy.cfg.chunk_len, policy.cfg.action_dim, generator=torch.Generator().manual_seed(0))
    expected = 0.3 if actions == "delta" else 0.0
    for path in ("reference", "fast sampler"):  # Pi0Model.sample_actions, then ChunkSampler
        if path == "fast sampler":
            policy.prepare_inference()
        with torch.no_grad():
            a, b = (policy.sample_actions(o, noise=noise).numpy() for o in (obs, moved))
        shift = b - a
        assert np.allclose(shift[:, :6], expected, atol=1e-5) and np.allclose(shift[:, 6], 0.0, atol=1e-5), path


def test_a_delta_policy_trains_on_offsets_and_inpaints_towards_absolute_targets():
    policy = _delta_policy()
    rng = np.random.default_rng(3)
    batch = {"observation.state": rng.normal(size=(2, 7)).astype(np.float32),
             "observation.images.front": rng.integers(0, 256, (2, 24, 32, 3), dtype=np.uint8),
             "action": rng.normal(size=(2, policy.cfg.chunk_len, 7)).astype(np.float32),
             "action_is_pad": np.zeros((2, policy.cfg.chunk_len), bool), "task": ["pick up the cube"] * 2}
    inputs = policy.model_inputs(batch)
    mask = np.array([1, 1, 1, 1, 1, 1, 0], np.float32)
    offsets = torch.from_numpy(batch["action"] - batch["observation.state"][:, None] * mask)
    assert torch.allclose(inputs.actions[..., :7], policy.action_norm(offsets), atol=1e-5)
    # the trainer's own path (loss_terms) learns the same targets as the distiller's (model_inputs)
    noise, t = torch.randn(inputs.actions.shape), torch.tensor([0.3, 0.8])
    total, count = policy.loss_terms(batch, noise, t)
    out = policy.flow_outputs(inputs, noise, t)
    expected = (((out.velocity - out.target) ** 2)[..., :7]).sum()
    assert torch.allclose(total, expected, rtol=1e-4) and count == 2 * policy.cfg.chunk_len * 7
    obs = observation(rng)
    target = rng.normal(size=(policy.cfg.chunk_len, 7)).astype(np.float32)
    weight = np.r_[np.ones(2), np.zeros(policy.cfg.chunk_len - 2)].astype(np.float32)
    with torch.no_grad():
        chunk = policy.sample_actions(obs, inpaint=(target, weight)).numpy()
    assert np.abs(chunk[:2] - target[:2]).max() < 1e-5  # the frozen rows are the absolute target


def test_the_deploy_backend_adds_the_state_back_as_the_policy_does(tmp_path):
    from shallowpi.deploy.backends import Inpainting, make_backend
    from shallowpi.deploy.bundle import build_bundle

    policy = _delta_policy()
    policy.save(tmp_path / "ckpt")
    backend = make_backend("torch", build_bundle(tmp_path / "ckpt", tmp_path / "bundle", graphs=()))
    obs = observation(np.random.default_rng(4))
    backend.reset(3)
    noise = backend.noise()
    chunk = backend.infer(obs, noise=noise)
    with torch.no_grad():
        reference = Policy.load(tmp_path / "ckpt").sample_actions(obs, noise=torch.from_numpy(noise)).numpy()
    assert np.abs(chunk - reference).max() <= 1e-4
    assert json.loads((tmp_path / "bundle" / "manifest.json").read_text())["version"] == 2  # older readers refuse it
    target = chunk + np.float32(0.5)
    frozen = backend.infer(obs, Inpainting.hard_prefix(target, frozen=2), noise=noise)
    assert np.abs(frozen[:2] - target[:2]).max() < 1e-4


def test_training_with_delta_actions_saves_the_offset_joints_and_their_statistics(tmp_path):
    from shallowpi.commands.train_cmd import chunk_dataset
    from shallowpi.train.errors import TrainingError
    from shallowpi.train.finetune import finetune
    from shallowpi.train.trainer import TrainConfig

    # joint_5 is this arm's gripper by the kind the recorder stored, not by its name
    make_store(tmp_path / "s.zarr", episodes=4, length=12, kinds=("revolute",) * 5 + ("gripper",)).close()
    cfg = dataclasses.replace(load_preset("tiny"), actions="delta")
    train = TrainConfig(steps=2, batch_size=4, lr=1e-3, min_lr=1e-4, warmup_steps=1, save_every=2, log_every=1,
                        workers=0, progress=False, tensorboard=False)
    run = finetune(tmp_path / "s.zarr", cfg, train, tmp_path / "run", episodes=[0, 1, 2, 3], make_dataset=chunk_dataset)
    policy = Policy.load(run["checkpoint"])
    assert policy.cfg.actions == "delta" and policy.cfg.delta_dims == [0, 1, 2, 3, 4]
    episodes = json.loads((tmp_path / "run" / "split.json").read_text())["train"]
    expected = ChunkDataset(tmp_path / "s.zarr", cfg.chunk_len, episodes, image_keys=[]).stats(delta_dims=range(5))
    assert np.allclose(policy.action_norm.mean.numpy(), expected["action"]["mean"], atol=1e-5)
    # the offline baseline stays the training mean *absolute* action
    rows = ChunkDataset(tmp_path / "s.zarr", cfg.chunk_len, episodes, image_keys=[]).stats()["action"]["mean"]
    assert np.allclose(policy.action_mean, rows, atol=1e-5)
    assert np.isfinite(run["eval"]["policy_mse"])
    with pytest.raises(TrainingError, match="predicts delta actions"):  # --init keeps its own action space
        finetune(tmp_path / "s.zarr", load_preset("tiny"), train, tmp_path / "run2", episodes=[0, 1, 2, 3],
                 make_dataset=chunk_dataset, init_from=Path(run["checkpoint"]))
