"""Success rate of a policy in the simulation twin: closed loop, one action chunk at a time.

Each episode resets the twin from its seed, then repeats: observe -> the policy predicts an
action chunk -> the robot executes the first `replan_every` actions of it, one control
period each, without looking -> observe again. This is how π0 runs on a robot: a chunk
is cheap to execute open loop and expensive to predict, and executing only its first
part keeps the policy reacting to what happened (a whole 50-step chunk is 1.7 s at 30 Hz
of not looking; replanning every step makes the arm jitter between samples and costs 50x
the inference). Half the chunk is the default.

Which action runs at each tick is decided by the executor's own bookkeeping
(policy/action_selection.py: replanning as above, temporal ensembling, or real-time
chunking), so this measures what the robot runs. `delay_ticks` simulates inference
latency: a chunk asked for at tick n is used from tick n + delay_ticks on, the robot
running the chunk before meanwhile (or holding, with none).

Episodes run through the same runner as the scripted expert's (robots/sim/episode.py):
success is the task's own detector, judged at the episode's last tick. An episode runs to
the task's time limit, or ends early once the detector has said "success" continuously
for `stop_after_success_s`: a success that holds that long is the one the end-of-episode
judge would see had the policy stood still, and it saves simulating (and rendering) the
rest.

The robot is the twin in-process (`--sim direct`, robots/sim/direct.py) or behind the
emulated servo chains and software RealSenses (`--sim stack`, robots/sim/stack.py): the
same loop, the policy then driving the real drivers as it would on the robot.

Language: in a robot's scenes the objects of its other tasks are present too, so each
episode also asks the other tasks' detectors whether the policy did one of them instead
of the task it was told (`other_tasks`); the report counts those per instruction.

The loop takes any `ChunkPolicy`: a callable from an observation dict (lerobot keys, made
by robots/observation.py's `lerobot_row`, plus `task`, the instruction text) to a [C, A]
array of joint goals in robot units, the first of which is sent next.
`evaluate/sim_checkpoint.py` wraps a trained checkpoint as one; tests
wrap the scripted expert. Strategy rtc needs an `InpaintingPolicy` (a checkpoint is one):
each chunk is made to agree with the running one under real-time chunking's soft mask, as
the executor's deploy backends do by default. Nothing here imports torch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shallowpi.errors import ConfigError
from shallowpi.evaluate.interval import rate_with_interval, wilson_interval
from shallowpi.policy.action_selection import (
    ActionSelectionConfig,
    ActionSelector,
    Guidance,
    Strategy,
)
from shallowpi.robots.observation import Observation, lerobot_row
from shallowpi.robots.sim.episode import EVAL_SEEDS, Episode, EpisodeResult, EpisodeRules
from shallowpi.robots.sim.episode import SimRobot as EpisodeRobot
from shallowpi.robots.sim.tasks import Task
from shallowpi.robots.sim.twin import SimError, SimTwin
from shallowpi.train.progress import ProgressBar

log = logging.getLogger(__name__)


class ChunkPolicy(Protocol):
    """What the loop evaluates: observation -> [C, A] joint goals (robot units), C >= 1."""

    def __call__(self, observation: Mapping[str, Any]) -> np.ndarray:
        """Observation (unbatched, lerobot keys + `task`) -> [C, A] joint goals, next first."""
        ...


@runtime_checkable
class InpaintingPolicy(Protocol):
    """A ChunkPolicy that can make its chunk agree with another (real-time chunking)."""

    def inpainted(self, observation: Mapping[str, Any], target: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Like `__call__`, each row pulled towards `target` [C, A] by `weight` [C] in [0, 1]."""
        ...


class SimRobot(EpisodeRobot, Protocol):
    """What the loop needs of a robot: DirectSimRobot or StackSimRobot (an episode's
    robot, robots/sim/episode.py, with its camera roles)."""

    cameras: Any  # camera roles, in order (a sequence, or a dict keyed by role)


@runtime_checkable
class EpisodeAware(Protocol):
    """A policy that wants to know when an episode starts (noise seed, internal state)."""

    def reset(self, seed: int) -> None:
        """Called before each episode with its scene seed, before the first observation."""
        ...


@dataclass
class SimEvalConfig:
    """How many episodes, from which seeds, and how actions are chosen and delayed.

    Times in seconds of simulated time. Raises ConfigError for `episodes < 1`,
    `delay_ticks < 0` or a non-positive `max_seconds`.
    """

    episodes: int = 10
    # Seeds seed_start .. seed_start + episodes - 1. The default is the first held-out
    # scene (robots/sim/episode.py's EVAL_SEEDS), which `platform record` never uses.
    seed_start: int = EVAL_SEEDS.start
    # Replan every K (None: half the chunk), ensemble or rtc: policy/action_selection.py.
    selection: ActionSelectionConfig = field(default_factory=ActionSelectionConfig)
    delay_ticks: int = 0  # simulated inference latency, in control periods
    max_seconds: float | None = None  # cap below the task's own time limit (quick looks)
    stop_after_success_s: float | None = 1.0  # None: always run to the time limit

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ConfigError(f"the number of sim episodes must be at least 1, got {self.episodes}")
        if self.delay_ticks < 0:
            raise ConfigError(f"the inference delay must be >= 0 ticks, got {self.delay_ticks}")
        if self.max_seconds is not None and self.max_seconds <= 0:
            raise ConfigError(f"the episode time must be positive, got {self.max_seconds}")

    @property
    def seeds(self) -> list[int]:
        """The episodes' seeds: seed_start, seed_start + 1, ... (`episodes` of them)."""
        return list(range(self.seed_start, self.seed_start + self.episodes))


@dataclass
class PolicyEpisode(EpisodeResult):
    """One closed-loop episode's result: `replans` counts policy calls (chunks asked for),
    `inference_ms_p50` the median wall time of one call, ms."""

    replans: int = 0
    holds: int = 0  # ticks with no action to run (the first chunk still computing, a late one)
    inference_ms_p50: float = 0.0
    ended: str = "time limit"  # or "success held"
    # The robot's other tasks, judged on the same scene at the end: True where the policy
    # did that one (its detector says success), whatever it was told.
    other_tasks: dict[str, bool] = field(default_factory=dict)
    # Every object's world position (m) when the scene was placed and at the end:
    # {"red_cube": {"start": [x, y, z], "end": [x, y, z]}, ...}, for sorting failures by
    # scene (tools/bench/sim_failures.py).
    objects: dict[str, dict[str, list[float]]] = field(default_factory=dict)


def _chunk_of(policy: ChunkPolicy, obs: Mapping[str, Any], joints: int, guidance: Guidance | None = None) -> np.ndarray:
    # rtc: the chunk agrees with the running one under real-time chunking's soft mask, as
    # the executor's default (deploy.rtc_mask: soft) has the deploy backends inpaint it
    if guidance is None:
        raw = policy(obs)
    else:
        assert isinstance(policy, InpaintingPolicy)  # PolicyAgent.begin refused any other
        raw = policy.inpainted(obs, guidance.target, guidance.weights)
    chunk = np.asarray(raw, dtype=np.float64)
    if chunk.ndim != 2 or chunk.shape[0] < 1 or chunk.shape[1] != joints:
        raise SimError(f"the policy returned actions of shape {chunk.shape}; expected [chunk, {joints}]")
    return chunk


class PolicyAgent:
    """A `ChunkPolicy` behind the executor's action selection, as an episode `Agent`
    (robots/sim/episode.py): a chunk asked for at tick n is used from tick n + delay_ticks."""

    def __init__(self, policy: ChunkPolicy, cfg: SimEvalConfig) -> None:
        self.policy, self.cfg = policy, cfg
        self.finished = False  # a policy has no plan that ends
        self.inference: list[float] = []
        self.holds = 0

    def begin(self, robot: SimRobot, task: Task, seed: int) -> None:
        """A new episode: reset the policy (if it is `EpisodeAware`) with `seed`, start a fresh
        action selector, and clear the tick count, inference times and holds."""
        if self.cfg.selection.strategy is Strategy.RTC and not isinstance(self.policy, InpaintingPolicy):
            raise SimError(f"strategy rtc needs a policy that inpaints its chunk (a checkpoint does); "
                           f"{type(self.policy).__name__} does not: use replan or ensemble")
        if isinstance(self.policy, EpisodeAware):
            self.policy.reset(seed)
        self.task, self.joints = task, len(robot.spec.joints)
        # The executor measures its delay at warm-up, before the first chunk; here the delay
        # is known exactly. From the config's estimate (0) the first guided chunk froze no row.
        selection = self.cfg.selection
        self.selector = ActionSelector(replace(selection, initial_delay=max(selection.initial_delay, self.cfg.delay_ticks)))
        self.arriving: tuple[Any, np.ndarray, int] | None = None  # (request, chunk, the tick it arrives)
        self.tick = 0
        self.inference, self.holds = [], 0

    def next_goal(self, observe: Callable[[], Observation]) -> np.ndarray | None:
        """This tick's action [J] (robot units), or None to hold while no chunk covers it.

        Delivers a chunk whose `delay_ticks` have passed, then asks the policy for a new one
        when the selector wants it (timing the call). Raises SimError when the policy returns
        a chunk that is not [chunk, J].
        """
        selector, delay = self.selector, self.cfg.delay_ticks
        if self.arriving is not None and self.tick >= self.arriving[2]:
            selector.deliver(self.arriving[0], self.arriving[1])
            self.arriving = None
        if selector.wants_chunk():
            request = selector.request()
            inputs = {**lerobot_row(observe()).values, "task": self.task.instruction}
            t0 = time.perf_counter()
            chunk = _chunk_of(self.policy, inputs, self.joints, request.guidance)
            self.inference.append(time.perf_counter() - t0)
            if delay == 0:
                selector.deliver(request, chunk)
            else:
                self.arriving = (request, chunk, self.tick + delay)
        self.tick += 1
        action = selector.next_action()
        self.holds += action is None
        return action


def run_policy_episode(
    robot: SimRobot,
    task: Task,
    policy: ChunkPolicy,
    seed: int,
    cfg: SimEvalConfig,
    watch: Callable[[Observation], None] | None = None,
    on_step: Callable[[], None] | None = None,
    others: Sequence[Task] = (),
) -> PolicyEpisode:
    """One closed-loop episode through the episode runner (robots/sim/episode.py).
    `watch` sees an observation after every tick (so the twin renders every tick: only
    for videos); `on_step` is told of every tick; `others` (the robot's other tasks) are
    judged on the scene at the end."""
    agent = PolicyAgent(policy, cfg)
    seconds = None if cfg.max_seconds is None else min(task.seconds, cfg.max_seconds)
    rules = EpisodeRules(seconds=seconds, stop_after_success_s=cfg.stop_after_success_s)
    episode = Episode.start(robot, task, agent, seed, rules)
    result = episode.run(watch=watch, on_step=on_step)
    return PolicyEpisode(
        **asdict(result),
        replans=len(agent.inference),
        holds=agent.holds,
        inference_ms_p50=1e3 * float(np.median(agent.inference)) if agent.inference else 0.0,
        ended=episode.ended or "time limit",
        # After a fault nothing is judged on the scene (a diverged twin was reset to its load poses).
        other_tasks={other.name: not episode.failed and _judge_other(other, task, robot.twin) for other in others},
        objects={obj: {"start": _json_position(start), "end": _json_position(robot.twin.body_pose(obj)[0])}
                 for obj, start in task.start.items()},
    )


def _json_position(position: np.ndarray) -> list[float]:
    """A position in m as a JSON list of m, rounded to 0.1 mm."""
    return [round(float(x), 4) for x in position]


def _judge_other(other: Task, told: Task, twin: SimTwin) -> bool:
    """Whether `other`'s detector says success on the scene `told` placed (a push measures
    from where the block started, so it is given this scene's start poses)."""
    other.start = dict(told.start)
    return bool(other.success(twin))


@dataclass
class SimEvalReport:
    """Every episode of one evaluation, with its success rate and 95 % Wilson interval.

    `to_dict()` is one task's entry in what `platform eval --sim --json` writes (the
    caller's `context` first);
    `table()` is the text printed for people.
    """

    robot: str
    task: str
    instruction: str
    cameras: list[str]
    render_size: tuple[int, int]  # width, height
    selection: ActionSelectionConfig
    delay_ticks: int
    episodes: list[PolicyEpisode]
    wall_seconds: float
    # Where robot, task and render size came from, the checkpoint, ...: set by the caller.
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def successes(self) -> int:
        """How many episodes the task's detector judged successful."""
        return sum(e.success for e in self.episodes)

    @property
    def success_rate(self) -> float:
        """Fraction of episodes the task's detector judged successful (0 with no episodes)."""
        return self.successes / max(len(self.episodes), 1)

    @property
    def interval(self) -> tuple[float, float]:
        """95 % Wilson interval of the success rate."""
        return wilson_interval(self.successes, len(self.episodes))

    def other_task_counts(self) -> dict[str, int]:
        """Per other task: episodes that failed the told task and did that one instead."""
        names = sorted({n for e in self.episodes for n in e.other_tasks})
        return {n: sum(e.other_tasks.get(n, False) and not e.success for e in self.episodes) for n in names}

    def to_dict(self) -> dict[str, Any]:
        """This task's JSON entry: the caller's `context`, the settings, success rate and
        95 % interval, other tasks done instead, and every episode's fields."""
        return {
            **self.context,
            "robot": self.robot,
            "task": self.task,
            "instruction": self.instruction,
            "cameras": self.cameras,
            "render_size": list(self.render_size),
            "strategy": self.selection.strategy.value,
            "replan_every": self.selection.replan_every,
            "delay_ticks": self.delay_ticks,
            "success_rate": self.success_rate,
            "successes": self.successes,
            "interval95": list(self.interval),
            "other_task_instead": self.other_task_counts(),
            "wall_seconds": self.wall_seconds,
            "episodes": [asdict(e) for e in self.episodes],
        }

    def table(self) -> str:
        """A text table: a header line with the settings, one row per episode (seed, result,
        steps, sim and wall seconds, replans, holds, median inference ms), then the success
        rate with its interval and any other task done instead."""
        w, h = self.render_size
        sel = self.selection
        k = sel.replan_every
        every = "half the chunk" if k is None else f"{k} action{'s' if k != 1 else ''}"
        delay = f", {self.delay_ticks} ticks' inference delay" if self.delay_ticks else ""
        lines = [
            f"{self.robot} / {self.task} ('{self.instruction}'), {sel.strategy.value}: a chunk every "
            f"{every}{delay}, cameras {', '.join(self.cameras)} at {w}x{h}",
            f"{'seed':>6} {'result':8} {'steps':>6} {'sim s':>6} {'wall s':>7} {'replans':>7} "
            f"{'holds':>5} {'infer p50 ms':>12}",
        ]
        for e in self.episodes:
            result = "success" if e.success else "FAIL"
            lines.append(
                f"{e.seed:>6} {result:8} {e.steps:>6} {e.sim_seconds:>6.1f} {e.wall_seconds:>7.1f} "
                f"{e.replans:>7} {e.holds:>5} {e.inference_ms_p50:>12.1f}"
            )
        n = len(self.episodes)
        lines.append(f"success {rate_with_interval(self.successes, n)}, {self.wall_seconds:.1f} s wall")
        for name, count in self.other_task_counts().items():
            lines.append(f"did {name} instead: {count}/{n}")
        return "\n".join(lines)


class View(Protocol):
    """Something that looks at an episode: robots/sim/views.py's VideoWriter, StripWriter."""

    def add(self, images: Sequence[np.ndarray]) -> None:
        """One tick's camera frames, uint8 [H, W, 3] each, in the robot's camera-role order."""
        ...

    def end_episode(self, title: str) -> None:
        """The episode's outcome in a line, before `close()` (a filmstrip's title)."""
        ...

    def close(self) -> None:
        """The episode is over (called even when it raised): finish and release files."""
        ...


def evaluate_in_sim(
    robot: SimRobot,
    task: Task,
    policy: ChunkPolicy,
    cfg: SimEvalConfig,
    views: Callable[[int], list[View]] | None = None,
    progress: bool = False,
    others: Sequence[Task] = (),
) -> SimEvalReport:
    """`cfg.episodes` episodes on a connected robot; `views(seed)` gives each episode's
    viewers (a video, a filmstrip), fed every tick's camera images in role order;
    `others` are the robot's other tasks, judged at the end of each episode.

    Raises SimError when the robot is not connected or the policy's chunk has the wrong
    shape. `progress` draws a progress bar on stderr, counted in ticks.
    """
    started = time.perf_counter()
    if robot.twin is None:
        raise SimError("the sim robot is not connected; connect() it (or use it as a context manager)")
    spec = robot.twin.spec
    fps = spec.fps
    seconds = task.seconds if cfg.max_seconds is None else min(task.seconds, cfg.max_seconds)
    bar = ProgressBar("sim eval", len(cfg.seeds) * int(seconds * fps), enabled=progress)
    episodes: list[PolicyEpisode] = []
    try:
        for seed in cfg.seeds:
            looking = views(seed) if views is not None else []

            def watch(obs: Observation, looking: list[View] = looking) -> None:
                images = [obs.frames[role].image for role in robot.cameras]
                for view in looking:
                    view.add(images)

            before = bar.completed
            try:
                result = run_policy_episode(
                    robot, task, policy, seed, cfg, watch=watch if looking else None, on_step=bar.step,
                    others=others,
                )
                for view in looking:
                    view.end_episode(f"{task.name}  seed {seed}  {'success' if result.success else 'FAILED'}  "
                                     f"{result.sim_seconds:.1f} s")
            finally:
                for view in looking:
                    view.close()
            episodes.append(result)
            # An episode that ended early leaves its remaining ticks: count them as done.
            bar.update(before + int(seconds * fps), f"{sum(e.success for e in episodes)}/{len(episodes)} succeeded")
            log.debug("seed %d: %s in %d steps", seed, "success" if result.success else "failed", result.steps)
    finally:
        bar.close()
    return SimEvalReport(
        robot=spec.robot,
        task=task.name,
        instruction=task.instruction,
        cameras=list(robot.cameras),
        render_size=(spec.render_width, spec.render_height),
        selection=cfg.selection,
        delay_ticks=cfg.delay_ticks,
        episodes=episodes,
        wall_seconds=time.perf_counter() - started,
    )
