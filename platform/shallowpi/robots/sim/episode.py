"""One simulated episode, whoever drives it: reset from a seed, act, settle, judge at the end.

    episode = Episode.start(robot, task, ScriptedAgent(), seed)    # twin reset from `seed`
    result = episode.run()                                         # EpisodeResult

    # or tick by tick, when another loop owns the ticks (the recorder):
    goal = episode.next_goal(robot.observe)    # the agent's goal for this tick
    robot.act(goal)
    if episode.over(): ...                     # after each act
    episode.success()                          # the task's detector, on the twin now

The rules are the same for the recorder's scripted demonstrations (record/rig.py), the
`platform sim` expert runs and `eval --sim` (evaluate/sim_eval.py); only the agent and
the `EpisodeRules` differ:

- the episode ends at its time limit (the task's, or `rules.seconds`);
- an agent that says it is `finished` (a scripted expert at the end of its plan) gets
  `settle_s` more ticks for the scene to come to rest;
- with `stop_after_success_s`, it ends once the task's detector has said "success" on
  round(stop_after_success_s x fps) consecutive ticks (1 s at 30 Hz: 30 ticks, 29 periods
  apart; a success that holds is the one the end-of-episode judge would see);
- success is judged once, at the end, by the task's detector.

Scene seeds are split here, once: `eval --sim` holds out `EVAL_SEEDS`, and a recording
never uses them (record/rig.py's `first_seed`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from shallowpi.robots.base import ticks_in
from shallowpi.robots.observation import Observation
from shallowpi.robots.sim.experts import ScriptedExpert, make_expert
from shallowpi.robots.sim.tasks import Task
from shallowpi.robots.sim.twin import PhysicsUnstable, SimError

# eval --sim's held-out scenes start at 1000 (its default --seed); recordings use the seeds
# below and, past them, from the range's end on.
EVAL_SEEDS = range(1_000, 1_000_000)


class SimRobot(Protocol):
    """What an episode needs of a simulated robot (`DirectSimRobot`, `StackSimRobot`)."""

    spec: Any  # .fps
    twin: Any  # SimTwin: the task's detector and the experts read it

    def reset(self, seed: int | None = None, task: Task | None = None) -> None:
        """Reset the twin: home pose, `task`'s objects placed from `seed`."""

    def observe(self) -> Observation:
        """This tick's observation (renders the cameras)."""

    def act(self, action: np.ndarray) -> np.ndarray:
        """Send joint goals [J] and advance one control period; returns float32 [J] sent."""


class Agent(Protocol):
    """Whatever chooses the goals: a scripted expert, a policy behind action selection."""

    def begin(self, robot: SimRobot, task: Task, seed: int) -> None:
        """A new episode: the twin was just reset from `seed`."""

    def next_goal(self, observe: Callable[[], Observation]) -> np.ndarray | None:
        """Joint goals float64 [J] for this tick, or None to hold the last goal sent (a
        policy whose chunk is not there yet); `observe()` gives this tick's observation
        (rendered only if called: an expert never looks)."""

    @property
    def finished(self) -> bool:
        """Nothing more to do: the episode may settle and end (a policy never is)."""


class ScriptedAgent:
    """The task's scripted expert (robots/sim/experts.py) as an `Agent`: planned at
    `begin` from the reset twin, privileged (it reads the twin, never the cameras)."""

    def __init__(self) -> None:
        self.expert: ScriptedExpert | None = None

    def begin(self, robot: SimRobot, task: Task, seed: int) -> None:
        """Plan the task's expert from the just-reset twin; SimError if the task has none."""
        self.expert = make_expert(robot.twin, task)

    def next_goal(self, observe: Callable[[], Observation]) -> np.ndarray:
        """The expert's joint goals for this tick (`observe` is never called); SimError
        before `begin`."""
        if self.expert is None:
            raise SimError("the scripted agent has no episode: Episode.start() begins it")
        return self.expert.read()

    @property
    def finished(self) -> bool:
        """Whether the expert's plan has ended."""
        return self.expert is not None and self.expert.done


@dataclass(frozen=True)
class EpisodeRules:
    """How an episode ends. `seconds`: its time limit (None: the task's own; math.inf:
    none, when another loop ends it, as the recorder does by its episode length).
    `settle_s`: ticks after the agent is finished. `stop_after_success_s`: end once
    success has been seen on round(s x fps) consecutive ticks (None: never early)."""

    seconds: float | None = None
    settle_s: float = 0.5
    stop_after_success_s: float | None = None


@dataclass
class EpisodeResult:
    """How an episode went: its seed, success judged at the end, ticks, simulated seconds,
    and wall seconds since the `Episode` was made."""

    seed: int
    success: bool
    steps: int
    sim_seconds: float
    wall_seconds: float


class Episode:
    """One episode on a simulated robot under `EpisodeRules`; `ended` says why it ended
    ("time limit", "agent finished", "success held", or, failed whatever the scene shows,
    "policy output non-finite" and "physics unstable")."""

    def __init__(self, robot: SimRobot, task: Task, agent: Agent, seed: int, rules: EpisodeRules) -> None:
        self.robot, self.task, self.agent, self.seed, self.rules = robot, task, agent, seed, rules
        fps = robot.spec.fps
        seconds = task.seconds if rules.seconds is None else rules.seconds
        self.limit: int | None = ticks_in(seconds, fps) if math.isfinite(seconds) else None
        self._settle = int(rules.settle_s * fps)
        self._hold = (None if rules.stop_after_success_s is None
                      else max(1, round(rules.stop_after_success_s * fps)))
        self.steps = 0
        self._held = 0
        self.ended: str | None = None
        self.failed = False  # ended by a fault: no success, whatever the detector says
        self._started = time.perf_counter()

    @classmethod
    def start(cls, robot: SimRobot, task: Task, agent: Agent, seed: int,
              rules: EpisodeRules | None = None) -> Episode:
        """Reset the twin from `seed` (objects placed by the task) and begin the agent."""
        robot.reset(seed, task)
        agent.begin(robot, task, seed)
        return cls(robot, task, agent, seed, rules or EpisodeRules())

    def next_goal(self, observe: Callable[[], Observation]) -> np.ndarray | None:
        """The agent's goal for this tick, None to hold (counts the tick; a finished
        agent's ticks settle)."""
        goal = self.agent.next_goal(observe)
        self.steps += 1
        if self.agent.finished:
            self._settle -= 1
        return goal

    def over(self) -> bool:
        """Call once after each act: whether the episode has ended (sets `ended`)."""
        if self.ended is not None:
            return True
        if self._hold is not None:
            self._held = self._held + 1 if self.success() else 0
            if self._held >= self._hold:
                self.ended = "success held"
        if self.ended is None and self.agent.finished and self._settle <= 0:
            self.ended = "agent finished"
        if self.ended is None and self.limit is not None and self.steps >= self.limit:
            self.ended = "time limit"
        return self.ended is not None

    def success(self) -> bool:
        """The task's detector on the twin now."""
        return bool(self.task.success(self.robot.twin))

    def result(self) -> EpisodeResult:
        """The `EpisodeResult` so far, success judged on the twin now (never after a fault)."""
        return EpisodeResult(self.seed, not self.failed and self.success(), self.steps,
                             float(self.robot.twin.time), time.perf_counter() - self._started)

    def run(self, watch: Callable[[Observation], None] | None = None,
            on_step: Callable[[], None] | None = None) -> EpisodeResult:
        """Tick until over; success judged at the end. `watch` sees the observation after
        every act (so every tick renders: only for videos); `on_step` is told of every tick."""
        if self.limit == 0:
            self.ended = "time limit"
        seen: Observation | None = None  # this tick's observation, once made

        def observe() -> Observation:
            nonlocal seen
            if seen is None:
                seen = self.robot.observe()
            return seen

        sent = self.robot.twin.joint_positions()  # holding before the first goal keeps the pose
        while not self.ended:
            goal = self.next_goal(observe)
            if goal is not None and not np.all(np.isfinite(np.asarray(goal, dtype=float))):
                # A robot's executor faults on it: a failed episode, not an aborted evaluation.
                self.ended, self.failed = "policy output non-finite", True
                break
            try:
                sent = self.robot.act(sent if goal is None else goal)
            except PhysicsUnstable:
                self.ended, self.failed = "physics unstable", True
                break
            # No physics runs between this act and the next tick's goal: the observation
            # watched now is the one the agent sees next, made once.
            seen = None
            if watch is not None:
                watch(observe())
            if on_step is not None:
                on_step()
            self.over()
        return self.result()


def run_episode(robot: SimRobot, task: Task, agent: Agent, seed: int, rules: EpisodeRules | None = None,
                watch: Callable[[Observation], None] | None = None) -> EpisodeResult:
    """`Episode.start(...).run(watch)`: one whole episode."""
    return Episode.start(robot, task, agent, seed, rules).run(watch)
