"""The closed loop feeds the policy exactly what training fed it.

A recorded sim episode is replayed in the twin from its seed with its stored actions; at
every tick the live observation, as `platform eval --sim` hands it to the policy, must give
the same model input tensors (images, image masks, tokens, normalised state) as the
training loader's sample of that row. This pins image size, crop/resize, pixel scaling,
camera order, state, the task text, the store-format-2 pairing (row t's action is the one
sent after row t's observation) and the camera codec (training decodes JPEG frames).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from conftest import platform_cmd, subprocess_env
from shallowpi import config
from shallowpi.data.codecs import image_codec
from shallowpi.data.store import EpisodeStore
from shallowpi.data.training import ChunkDataset
from shallowpi.evaluate.sim_checkpoint import CheckpointPolicy
from shallowpi.policy.config import load_preset
from shallowpi.policy.policy import Features, Policy
from shallowpi.robots.observation import lerobot_row
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import TwinSpec

SIZE = (40, 32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    done = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(root), "--dataset", "demo", "--episodes", "1",
                     "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui", "--seed", "7",
                     f"record.sim_size={SIZE[0]}x{SIZE[1]}", f"telemetry.address={root}/t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "demo.zarr"


def _inputs(policy: Policy, obs: dict) -> list[torch.Tensor]:
    (images, image_masks, tokens, token_masks), state, _ = policy._model_inputs(obs)
    return [images, image_masks, tokens, token_masks, state]


def test_a_replayed_episode_gives_the_model_the_inputs_training_gave_it(store):
    dataset = ChunkDataset(store, chunk_len=4)
    with EpisodeStore.open(store) as s:
        codec = image_codec(s.settings.image_codec, s.settings.image_quality)
        assert s.action_offset == 0  # format 2: row t = (observation t, the action sent after it)
        seed = 7  # `--seed 7`, episode 0
    cfg = load_preset("tiny")
    policy = Policy(cfg, Features.from_sample(dataset[0])).eval()
    policy.set_stats(dataset.stats())
    live = CheckpointPolicy(policy, image_codec=codec)
    raw = CheckpointPolicy(policy, image_codec=None)
    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, render_width=SIZE[0], render_height=SIZE[1])
    task = get_task("arm", "cube_in_bowl")
    with DirectSimRobot(spec, cameras=policy.features.cameras) as robot:
        robot.reset(seed, task)
        exact = 0
        live_error, raw_error = [], []
        for row in range(len(dataset)):
            item = dataset[row]
            obs = {**lerobot_row(robot.observe()).values, "task": task.instruction}  # as eval --sim gives it
            # The state is the one recorded, to float rounding (the recorder's reset leaves
            # MuJoCo's solver warm start ~1e-11 rad apart from a fresh one).
            np.testing.assert_allclose(obs["observation.state"], item["observation.state"].numpy(), atol=1e-6)
            trained = _inputs(policy, item)
            got = _inputs(policy, live.model_observation(obs))
            for i in range(1, 4):  # image masks, tokens, token masks: identical
                torch.testing.assert_close(got[i], trained[i], rtol=0, atol=0)
            torch.testing.assert_close(got[4], trained[4], rtol=0, atol=1e-5)  # normalised state
            # Images: identical while the replay's physics is; a pixel on an edge can flip
            # later (the ~1e-11 drift above), and JPEG spreads it over its 8x8 block.
            exact += torch.equal(got[0], trained[0])
            live_error.append(float((got[0] - trained[0]).abs().mean()))
            raw_error.append(float((_inputs(policy, raw.model_observation(obs))[0] - trained[0]).abs().mean()))
            # The stored action is the goal sent after this observation: sending it again
            # reproduces the next recorded state.
            robot.act(item["action"][0].numpy())
    assert exact >= 0.6 * len(dataset), (exact, len(dataset))
    # Without the codec round trip no live frame is what training decoded: the mismatch
    # `platform eval --sim` had (JPEG at 90 moves a pixel by ~1 % of the range on average).
    assert min(raw_error) > 0.005 and np.mean(live_error) < 0.1 * np.mean(raw_error), (live_error, raw_error)


def test_the_chunk_the_policy_returns_starts_with_the_action_to_send_now(store):
    """Training's target chunk for row t starts at the action sent right after observation
    t; the eval loop sends a returned chunk's first action right after the observation it
    was computed from."""
    dataset = ChunkDataset(store, chunk_len=4)
    item = dataset[3]
    with EpisodeStore.open(store) as s:
        actions = s.read("action", 0, s.num_frames)
    np.testing.assert_array_equal(item["action"].numpy(), actions[3:7])
