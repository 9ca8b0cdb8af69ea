"""`DistillConfig`: the `distill:` section of the config (configs/distill/default.yaml)."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from shallowpi.distill.objective import LossWeights, check_teacher_fraction
from shallowpi.distill.student import SELECTIONS
from shallowpi.errors import ConfigError, refuse_fractional, refuse_unknown_keys

# What the student does with the episodes policy.train.successful_only leaves out (marked
# failed, e.g. DART misses): leave them out too, or learn the teacher's velocities on them
# (output and attention terms) without ever learning their recorded actions (the task term).
FAILED_EPISODES = ("skip", "teacher")


@dataclass
class DistillConfig:
    """What to cut and how to train it; see configs/distill/default.yaml for each key."""

    layers: int = 6
    select: str = "uniform"
    probe_windows: int = 32
    compare_selections: bool = True
    weights: LossWeights = field(default_factory=LossWeights)
    attention_pairs: list[list[int]] | None = None
    teacher_fraction: float = 1.0
    failed_episodes: str = "skip"
    steps: int | None = None
    train: dict[str, Any] = field(default_factory=dict)
    teacher_sha256: str | None = None
    report: bool = True
    sim_episodes: int = 10
    sim_episode_time_s: float | None = None
    latency_repeats: int = 10

    def __post_init__(self) -> None:
        # Null only where null means something (the fields whose default is None): a section
        # from a lab's file, or a script, reached here as None and failed with a traceback
        # (weights, train, the counts) or read as false (report, compare_selections).
        for f in fields(self):
            if getattr(self, f.name) is None and f.default is not None:  # MISSING for a factory's
                raise ConfigError(f"distill.{f.name} cannot be null (its default is {_default_of(f)})")
        if isinstance(self.weights, dict) and (null := [k for k, v in self.weights.items() if v is None]):
            raise ConfigError(f"distill.weights.{null[0]} cannot be null (a weight; 0 switches the term off)")
        refuse_fractional("distill", self, ("layers", "probe_windows", "steps", "sim_episodes", "latency_repeats"))
        if self.steps is not None and self.steps < 1:  # 0 read as "unset" and fell back to policy.train.steps
            raise ConfigError(f"distill.steps must be >= 1 (or null: the preset's policy.train.steps), got {self.steps}")
        if isinstance(self.weights, dict):
            unknown = sorted(set(self.weights) - {"task", "output", "attention"})
            if unknown:
                raise ConfigError(f"unknown distill.weights keys {unknown}; valid: task, output, attention")
            self.weights = LossWeights(**self.weights)
        if self.select not in SELECTIONS:
            raise ConfigError(f"unknown distill.select '{self.select}'; choose one of: {', '.join(SELECTIONS)}")
        if self.probe_windows < 1 or self.sim_episodes < 0 or self.latency_repeats < 1:
            raise ConfigError("distill.probe_windows and latency_repeats must be >= 1, sim_episodes >= 0")
        if self.sim_episode_time_s is not None and not self.sim_episode_time_s > 0:  # else refused after training
            raise ConfigError(f"distill.sim_episode_time_s must be > 0 (or null: the task's time limit), "
                              f"got {self.sim_episode_time_s}")
        check_teacher_fraction(self.teacher_fraction)  # here, before a teacher is trained for it
        if self.failed_episodes not in FAILED_EPISODES:
            raise ConfigError(f"unknown distill.failed_episodes '{self.failed_episodes}'; choose one of: "
                              f"{', '.join(FAILED_EPISODES)}")
        if self.failed_episodes == "teacher" and not (self.weights.output or self.weights.attention):
            raise ConfigError("distill.failed_episodes=teacher trains on those episodes through the output or "
                              "attention term, and both are off; switch one on or leave them out (skip)")
        if self.failed_episodes == "teacher" and self.teacher_fraction < 1.0:
            raise ConfigError("distill.failed_episodes=teacher needs distill.teacher_fraction=1: failed samples "
                              "past the teacher's share would train nothing")
        if self.teacher_sha256 is not None:
            self.teacher_sha256 = str(self.teacher_sha256).lower()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillConfig:
        """The config from the `distill:` section; ConfigError for an unknown key or a bad
        value."""
        refuse_unknown_keys("distill", data, cls)
        return cls(**data)


def _default_of(setting: Any) -> str:
    """A DistillConfig field's default as the config spells it: true, 32, {} for a section."""
    if setting.default is MISSING:
        made = setting.default_factory()
        return "{}" if isinstance(made, dict) else str(made.to_dict() if hasattr(made, "to_dict") else made)
    return str(setting.default).lower() if isinstance(setting.default, bool) else str(setting.default)
