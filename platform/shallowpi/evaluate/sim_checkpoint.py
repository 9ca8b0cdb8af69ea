"""A trained checkpoint in the twin: what to evaluate it on, and the checkpoint as a
`ChunkPolicy` (evaluate/sim_eval.py).

What: the robot, task and camera size the checkpoint's training store recorded (the
checkpoint names its store; each episode names its robot, task text and fps, the store's
features give the image size). A flag overrides each; a store that is gone (a checkpoint
copied to another machine) leaves the flags.

How: `CheckpointPolicy` samples a chunk from the observation; its first action is the one
to send now, as in training (a stored row pairs an observation with the action sent after
it; format-1 stores are shifted to the same pairing when they are read for training).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shallowpi.policy.policy import Features, Policy
from shallowpi.policy.weights import CheckpointError
from shallowpi.robots.sim.tasks import Task, make_tasks
from shallowpi.robots.sim.twin import SimError, TwinSpec


@dataclass
class SimTarget:
    robot: str
    task: Task
    size: tuple[int, int] | None  # render width, height; None: the config's record.sim_size
    fps: float | None = None  # the store's recording rate, to check against the twin's
    sources: dict[str, str] = field(default_factory=dict)  # robot/task/size -> the flag or the store


@dataclass
class StoreFacts:
    """What a store says about how it was recorded."""

    robots: set[str]
    tasks: set[str]  # task texts
    fps: set[float]
    size: tuple[int, int] | None  # width, height of its (first) camera

    @classmethod
    def read(cls, path: Path) -> StoreFacts:
        from shallowpi.data.features import FeatureKind
        from shallowpi.data.store import EpisodeStore

        with EpisodeStore.open(path) as store:
            episodes = store.episodes
            images = [f for f in store.features.values() if f.kind is FeatureKind.IMAGE]
        size = (images[0].shape[1], images[0].shape[0]) if images else None
        return cls(
            {e.robot for e in episodes if e.robot},
            {e.task for e in episodes if e.task},
            {float(e.fps) for e in episodes},
            size,
        )


def sim_target(
    store: Path | None,
    robot: str | None = None,
    task: str | None = None,
    size: tuple[int, int] | None = None,
) -> SimTarget:
    """Robot, task and render size: each from its flag if given, else from the store."""
    facts = StoreFacts.read(store) if store is not None and store.exists() else None
    sources = {}
    robot, sources["robot"] = _given_or_recorded(
        robot, "--robot", facts and facts.robots, store, "robots",
        "cannot tell which robot to simulate ({found}); pass --robot NAME",
    )
    tasks = make_tasks(robot)  # a robot without tasks raises, naming those with a twin
    task, sources["task"] = _given_or_recorded(
        task, "--task", facts and facts.tasks, store, "tasks",
        "cannot tell which task to run ({found}); pass --task NAME, one of: " + ", ".join(tasks),
    )
    by_text = {t.instruction: name for name, t in tasks.items()}
    name = task if task in tasks else by_text.get(task)
    if name is None:
        raise SimError(
            f"unknown task '{task}' for the {robot} twin (from {sources['task']}); "
            f"pass --task NAME, one of: {', '.join(tasks)}"
        )
    if size is not None:
        sources["size"] = "--sim-size"
    elif facts is not None and facts.size is not None:
        size, sources["size"] = facts.size, f"store {store}"
    fps = next(iter(facts.fps)) if facts is not None and len(facts.fps) == 1 else None
    return SimTarget(robot, tasks[name], size, fps, sources)


def _given_or_recorded(
    given: str | None, flag: str, recorded: set[str] | None, store: Path | None, what: str, error: str
) -> tuple[str, str]:
    """The flag's value, else the store's one recorded value; (value, where it came from).
    `recorded` is None when there is no store to read; `error` gets the reason as {found}."""
    if given:
        return given, flag
    if recorded is not None and len(recorded) == 1:
        return next(iter(recorded)), f"store {store}"
    found = f"{store} records {what} {sorted(recorded) or 'none'}" if recorded is not None else _no_store(store)
    raise SimError(error.format(found=found))


def _no_store(store: Path | None) -> str:
    return f"store {store} is not here" if store else "the checkpoint names no store"


def check_fits(features: Features, spec: TwinSpec, store_fps: float | None = None) -> None:
    """One line if the checkpoint cannot drive this twin."""
    joints = len(spec.joints)
    if (features.state_dim, features.action_dim) != (joints, joints):
        raise CheckpointError(
            f"the checkpoint has state/action sizes {features.state_dim}/{features.action_dim} but "
            f"the {spec.robot} twin has {joints} joints; evaluate it on the robot it was trained "
            "on (--robot NAME)"
        )
    missing = [c for c in features.cameras if c not in spec.cameras]
    if missing:
        raise CheckpointError(
            f"the checkpoint was trained on camera(s) {missing} that the {spec.robot} twin lacks "
            f"(it has {list(spec.cameras)}); evaluate it on the robot it was trained on (--robot NAME)"
        )
    if store_fps is not None and abs(store_fps - spec.fps) > 1e-6:
        # The twin steps one period of its own rate per action: a chunk recorded at another
        # rate would play back faster or slower than it was shown.
        raise CheckpointError(
            f"the training store was recorded at {store_fps:g} Hz, the {spec.robot} twin runs at "
            f"{spec.fps} Hz; pass robot.fps={store_fps:g}"
        )


class CheckpointPolicy:
    """`Policy` as a ChunkPolicy: numpy chunk in robot units, fixed noise per episode seed so
    one evaluation repeats exactly."""

    def __init__(self, policy: Policy, num_steps: int | None = None) -> None:
        self.policy, self.num_steps = policy.eval(), num_steps
        self._noise = torch.Generator().manual_seed(0)

    @property
    def chunk_len(self) -> int:
        """Actions per returned chunk."""
        return self.policy.cfg.chunk_len

    def reset(self, seed: int) -> None:
        self._noise = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        cfg = self.policy.cfg
        noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=self._noise)
        chunk = self.policy.sample_actions(
            dict(observation), noise=noise.to(self.policy.device), num_steps=self.num_steps
        )  # [C, A]
        return chunk.float().cpu().numpy()
