"""A trained checkpoint in the twin: what to evaluate it on, and the checkpoint as a
`ChunkPolicy` (evaluate/sim_eval.py).

What: the robot and camera size the checkpoint's training store recorded (the checkpoint
names its store; each episode names its robot and fps, the store's features give the
image size), and every task of that robot (a language-conditioned policy is judged on
each instruction, one row each). A flag overrides each; a store that is gone (a
checkpoint copied to another machine) leaves the flags.

What the policy sees: camera frames pass through the training store's image codec (JPEG
at 90 by default) before the policy, so the closed loop feeds the policy what training
fed it (a JPEG round trip moves a 64x64 render by ~3/255 per pixel on average; the
mean of that is measured in BENCHMARKS.md "Closed loop").

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
from numcodecs.abc import Codec

from shallowpi.data.codecs import as_stored
from shallowpi.policy.fit import missing_cameras, rate_mismatch, size_mismatch
from shallowpi.policy.policy import Features, Policy
from shallowpi.policy.weights import CheckpointError
from shallowpi.robots.sim.tasks import Task, make_tasks
from shallowpi.robots.sim.twin import SimError, TwinSpec

# Where the render size came from when neither --sim-size nor a store gave it.
POLICY_INPUT_SIZE = "the policy's input size (no store named)"
POLICY_INPUT_SIZE_STORE_GONE = "the policy's input size (its store is not here)"


@dataclass
class SimTarget:
    """What `sim_target` decided to evaluate a checkpoint on, and where each answer came from."""

    robot: str
    tasks: list[Task]  # evaluated in this order, one report each
    size: tuple[int, int] | None  # render width, height; None: no flag, no store (eval: the policy's input size)
    fps: float | None = None  # the store's recording rate, to check against the twin's
    sources: dict[str, str] = field(default_factory=dict)  # robot/task/size -> the flag or the store
    image_codec: tuple[str, int] | None = None  # the store's (codec name, quality) for frames
    all_tasks: dict[str, Task] = field(default_factory=dict)  # every task of the robot, by name

    def others(self, task: Task) -> list[Task]:
        """The robot's tasks other than `task` (fresh objects: a task keeps its start poses)."""
        return [t for name, t in make_tasks(self.robot).items() if name != task.name]

    def not_as_trained_note(self, policy: str, store: Path | None, remedy: str = "") -> str | None:
        """The line to print when the twin cannot be shown as training saw it: `policy`
        names no training store, or names `store` and it is not on this machine (rendered
        at the policy's input size or --sim-size, without the store's image codec), then
        `remedy`. None when the store was read. `eval --sim` and `deploy --sim` say it alike."""
        if store is not None and store.exists():
            return None
        width, height = self.size or (0, 0)
        missing = f"{policy}'s training store {store} is not here" if store else f"{policy} names no training store"
        size = (f"its input size {width}x{height}" if self.sources["size"] in (POLICY_INPUT_SIZE, POLICY_INPUT_SIZE_STORE_GONE)
                else f"{width}x{height} ({self.sources['size']})")
        return f"{missing}: rendering at {size} without the store's image codec" + (f"; {remedy}" if remedy else "")


@dataclass
class StoreFacts:
    """What a store says about how it was recorded."""

    robots: set[str]
    tasks: set[str]  # task texts
    fps: set[float]
    size: tuple[int, int] | None  # width, height of its (first) camera
    image_codec: tuple[str, int] | None = None  # codec name and quality of its camera frames

    @classmethod
    def read(cls, path: Path) -> StoreFacts:
        """Open the store read-only and collect its facts (reads every episode's metadata).

        Raises StoreError when the store cannot be opened or is damaged.
        """
        from shallowpi.data.features import FeatureKind
        from shallowpi.data.store import EpisodeStore

        with EpisodeStore.open(path) as store:
            episodes = store.episodes
            images = [f for f in store.features.values() if f.kind is FeatureKind.IMAGE]
            codec = (store.settings.image_codec, store.settings.image_quality)
        size = (images[0].shape[1], images[0].shape[0]) if images else None
        return cls(
            {e.robot for e in episodes if e.robot},
            {e.task for e in episodes if e.task},
            {float(e.fps) for e in episodes},
            size,
            codec if images else None,
        )


def sim_target(
    store: Path | None,
    robot: str | None = None,
    task: str | None = None,
    size: tuple[int, int] | None = None,
    shared: bool = False,
    input_size: int | None = None,
) -> SimTarget:
    """Robot, tasks and render size: each from its flag if given, else from the store (the
    tasks: every task of the robot, the policy being told each in turn). `shared`: the
    tasks draw one scene distribution in which each of them is doable (`make_tasks`).
    `input_size`: the policy's image side, the render size when neither the flag nor a
    store gives one (a shipped checkpoint: the nearest to what it trained on; rendering
    larger and resizing would show it other pictures). `eval --sim` and `deploy --sim`
    both go through here, so they show a policy the same twin."""
    facts = StoreFacts.read(store) if store is not None and store.exists() else None
    sources = {}
    robot, sources["robot"] = _given_or_recorded(
        robot, "--robot", facts and facts.robots, store, "robots",
        "cannot tell which robot to simulate ({found}); pass --robot NAME",
    )
    tasks = make_tasks(robot, shared=shared)  # a robot without tasks raises, naming those with a twin
    if task:
        # A check task (make_tasks(checks=True)) is evaluated when named, never by default.
        named = make_tasks(robot, checks=True, shared=shared)
        by_text = {t.instruction: name for name, t in named.items()}
        name = task if task in named else by_text.get(task)
        if name is None:
            raise SimError(
                f"unknown task '{task}' for the {robot} twin (from --task); "
                f"pass --task NAME, one of: {', '.join(named)}"
            )
        chosen, sources["task"] = [named[name]], "--task"
    else:
        chosen, sources["task"] = list(tasks.values()), f"every task of the {robot} twin"
    if size is not None:
        sources["size"] = "--sim-size"
    elif facts is not None and facts.size is not None:
        size, sources["size"] = facts.size, f"store {store}"
    elif input_size is not None:
        size, sources["size"] = (input_size, input_size), POLICY_INPUT_SIZE if store is None else POLICY_INPUT_SIZE_STORE_GONE
    fps = next(iter(facts.fps)) if facts is not None and len(facts.fps) == 1 else None
    codec = facts.image_codec if facts is not None else None
    return SimTarget(robot, chosen, size, fps, sources, codec, tasks)


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
    """One line if the checkpoint cannot drive this twin (`policy/fit.py`: state/action
    sizes, cameras, and the training store's rate when given): a CheckpointError."""
    twin = f"the {spec.robot} twin"
    if problem := size_mismatch(features.state_dim, features.action_dim, len(spec.joints), twin):
        raise CheckpointError(f"{problem}; evaluate it on the robot it was trained on (--robot NAME)")
    if problem := missing_cameras(features.cameras, list(spec.cameras), twin):
        raise CheckpointError(f"{problem}; evaluate it on the robot it was trained on (--robot NAME)")
    # The twin steps one period of its own rate per action.
    if store_fps is not None and (problem := rate_mismatch([store_fps], spec.fps, twin)):
        raise CheckpointError(f"{problem}; pass robot.fps={store_fps:g}")


class CheckpointPolicy:
    """`Policy` as a ChunkPolicy: numpy chunk in robot units, fixed noise per episode seed so
    one evaluation repeats exactly. `image_codec` (a numcodecs codec, the training store's)
    is applied to each camera frame first, as the training loader's decode did."""

    def __init__(self, policy: Policy, num_steps: int | None = None, image_codec: Codec | None = None) -> None:
        self.policy, self.num_steps = policy.eval(), num_steps
        self.image_codec = image_codec
        self._noise = torch.Generator().manual_seed(0)

    @property
    def chunk_len(self) -> int:
        """Actions per returned chunk."""
        return self.policy.cfg.chunk_len

    def reset(self, seed: int) -> None:
        """Reseed the noise chunks are sampled from: one seed, one sequence of noises."""
        self._noise = torch.Generator().manual_seed(seed)

    def model_observation(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """The observation as the policy gets it: frames through the store's codec."""
        obs = dict(observation)
        for key in self.policy.features.image_keys:
            if key in obs:
                obs[key] = as_stored(self.image_codec, np.asarray(obs[key]))
        return obs

    @torch.no_grad()
    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """One chunk [C, A_real] float32, robot units, from the next noise of the episode."""
        return self._sample(observation, None)

    @torch.no_grad()
    def inpainted(self, observation: Mapping[str, Any], target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """The chunk made to agree with `target` [C, A_real] (robot units) row by row by
        `weight` [C] (real-time chunking, as the deploy backends inpaint)."""
        return self._sample(observation, (target, weight))

    def _sample(self, observation: Mapping[str, Any], inpaint: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
        cfg = self.policy.cfg
        noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=self._noise)
        chunk = self.policy.sample_actions(
            self.model_observation(observation), noise=noise.to(self.policy.device), num_steps=self.num_steps,
            inpaint=inpaint,
        )  # [C, A]
        return chunk.float().cpu().numpy()
