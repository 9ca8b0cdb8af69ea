"""An in-memory stand-in with the item contract of shallowpi.data.training.ChunkDataset.

Items: observation.state float32 [S], observation.images.<role> uint8 [H, W, 3],
action float32 [C, A], action_is_pad bool [C], task str, episode_index, frame_index.
The task is learnable: each step moves every joint a fixed fraction of the way to a target
that depends on the episode, and the target is drawn into the image as a bright column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from shallowpi.policy import Features, Policy, load_preset


class FakeChunks(Dataset):
    def __init__(
        self,
        episodes: int = 6,
        length: int = 20,
        chunk_len: int = 4,
        dims: int = 2,
        size: tuple[int, int] = (12, 16),
        cameras: tuple[str, ...] = ("front",),
        select: list[int] | None = None,
        nan: bool = False,
    ) -> None:
        rng = np.random.default_rng(0)
        self.chunk_len, self.size, self.cameras = chunk_len, size, cameras
        self.targets = rng.uniform(-1, 1, (episodes, dims)).astype(np.float32)
        self.states = []
        for e in range(episodes):
            x = np.zeros(dims, np.float32)
            traj = []
            for _ in range(length + 1):
                traj.append(x.copy())
                x = x + 0.3 * (self.targets[e] - x)
            self.states.append(np.stack(traj))  # [length + 1, dims]
        keep = select if select is not None else list(range(episodes))
        self.index = [(e, f) for e in keep for f in range(length)]
        self.length, self.nan = length, nan

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        e, f = self.index[i]
        traj = self.states[e]
        steps = np.arange(f + 1, f + 1 + self.chunk_len)
        action = traj[np.minimum(steps, self.length)]
        img = np.zeros((*self.size, 3), np.uint8)
        col = int((self.targets[e][0] + 1) / 2 * (self.size[1] - 1))
        img[:, col, :] = 255
        item = {
            "observation.state": torch.from_numpy(traj[f].copy()),
            "action": torch.from_numpy(action.copy()) * (float("nan") if self.nan else 1.0),
            "action_is_pad": torch.from_numpy(steps > self.length),
            "task": "reach the target",
            "episode_index": e,
            "frame_index": f,
        }
        for cam in self.cameras:
            item[f"observation.images.{cam}"] = torch.from_numpy(img)
        return item

    def task_texts(self) -> list[str]:
        return ["reach the target"]

    def joint_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        names = tuple(f"joint_{i}" for i in range(self.states[0].shape[1]))
        return names, names

    def calibration_ids(self) -> list[str]:
        return ["uncalibrated"]

    def fps(self) -> float:
        return 30.0

    def stats(self, delta_dims=()) -> dict:
        assert not delta_dims, "the fake reaches absolute targets only"
        states = np.concatenate(self.states)
        return {
            key: {"mean": states.mean(0), "std": states.std(0), "min": states.min(0), "max": states.max(0)}
            for key in ("observation.state", "action")
        }


def tiny_policy(data: FakeChunks) -> Policy:
    """The `tiny` preset for `data`'s features, seeded (seed 0) and with its statistics."""
    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    return policy


def tiny_train_config(**settings):
    """A TrainConfig for a few seconds of training on FakeChunks: 4 steps of batch 4, a
    checkpoint every 2, on the main process, no progress bar nor TensorBoard; `settings`
    override any of it."""
    from shallowpi.train.trainer import TrainConfig

    base = dict(steps=4, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=2,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **settings})


def tiny_trainer(run: Path, resume: bool = False, **settings):
    """A Trainer of `tiny_policy` on FakeChunks into the run folder `run`, configured by
    `tiny_train_config(**settings)`."""
    from shallowpi.train.objective import FlowMatchingObjective
    from shallowpi.train.trainer import Trainer

    data = FakeChunks()
    return Trainer(FlowMatchingObjective(tiny_policy(data)), data, tiny_train_config(**settings), run, resume=resume)


def logged_losses(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of every line of a run folder's metrics.jsonl."""
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def chunk_depths(monkeypatch) -> list[int]:
    """The depth of each policy whose chunk is computed from now on, in the order they run
    (`Policy.sample_actions` still runs: only the order is recorded)."""
    depths: list[int] = []
    sample_actions = Policy.sample_actions

    def recorded(self, *args, **kwargs):
        depths.append(self.cfg.depth)
        return sample_actions(self, *args, **kwargs)

    monkeypatch.setattr(Policy, "sample_actions", recorded)
    return depths
