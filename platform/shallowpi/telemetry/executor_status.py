"""What `platform deploy` publishes every tick (telemetry kind "executor").

Plain dataclasses that travel as JSON, like the recorder's status; the loop, camera and
joint fields reuse telemetry/status.py's records so one dashboard panel shows either.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from shallowpi.telemetry.status import LoopStatus, record_of, status_from_json, status_to_json


class ExecutorState(str, enum.Enum):
    """The executor's phase, as the dashboard shows it; travels as its string value."""

    WARMING = "warming"  # backend warming up; the robot holds its pose
    RESET = "reset"  # on the robot, before an episode: it holds while the operator sets the scene
    HOMING = "homing"  # on the robot, then: it goes slowly to the pose the demonstrations started from
    RUNNING = "running"  # actions from chunks reach the robot
    HOLD = "hold"  # watchdog: no action due or the newest frame too old; goals = present pose
    FAULT = "fault"  # a servo or camera failed: held, then torque off
    STOPPED = "stopped"  # stopped by the operator (Ctrl-C, SIGTERM, e-stop)
    DONE = "done"  # every episode ran


@dataclass
class SafetyCounts:
    """Since the executor started."""

    clamps: int = 0  # commands the robot changed by more than deploy.clamp_tolerance (limits, velocity bound)
    seam_trips: int = 0  # jumps onto a new chunk above deploy.seam_ticks (the commands then ramp to it)
    holds: int = 0  # times the watchdog held position
    stale_frames: int = 0  # ticks whose newest camera frame was older than the bound
    faults: int = 0  # servo/camera faults (hold, then torque off); policy-side ones (hold the last command, torque on)


@dataclass
class ExecutorStatus:
    """What `platform deploy` publishes every tick (telemetry kind "executor").

    Times in ms unless the name says s; joint lists are in the robot's joint order and units
    (rad, m, gripper 0..1).
    """

    kind: ClassVar[str] = "executor"

    state: ExecutorState = ExecutorState.WARMING
    robot: str = ""
    task: str = ""
    strategy: str = ""
    backend: str = ""
    profile: str = ""
    episode: int = 0
    episodes_total: int = 0
    successes: int = 0
    success_judged: bool = True  # False on the robot: no detector there, `successes` stays 0
    episode_time_s: float = 0.0
    reset_left_s: float = 0.0  # state reset: seconds until the episode starts
    inference_ms: list[float] = field(default_factory=list)  # recent chunks, oldest first
    inference_p50_ms: float = 0.0
    inference_p99_ms: float = 0.0
    delay_ticks: int = 0  # the delay estimate (from measured consumption)
    chunk_age_ms: float = 0.0  # since the observation the executing chunk was computed from
    queue_depth: int = 0  # actions left in the newest chunk
    loop: LoopStatus = field(default_factory=LoopStatus)
    joint_names: list[str] = field(default_factory=list)
    joint_lower: list[float] = field(default_factory=list)
    joint_upper: list[float] = field(default_factory=list)
    commanded: list[float] = field(default_factory=list)  # sent at the last tick
    measured: list[float] = field(default_factory=list)  # joint state at the last tick
    safety: SafetyCounts = field(default_factory=SafetyCounts)
    message: str = ""
    estopped: bool = False  # an e-stop turned torque off (its run then ends STOPPED)
    control_allowed: bool = True
    age_s: float = 0.0  # set on receipt: seconds from its publishing to its sending

    def snapshot(self) -> ExecutorStatus:
        """A copy another thread may read while the loop updates this one (lists copied)."""
        clone = object.__new__(ExecutorStatus)
        clone.__dict__.update(self.__dict__)
        for name in ("inference_ms", "joint_names", "joint_lower", "joint_upper", "commanded", "measured"):
            setattr(clone, name, list(getattr(self, name)))
        clone.safety = SafetyCounts(**asdict(self.safety))
        clone.loop = LoopStatus(**asdict(self.loop))
        return clone

    def to_json(self) -> dict[str, Any]:
        """Nested dataclasses as dicts and `state` as its value: what `from_json` reads."""
        return status_to_json(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ExecutorStatus:
        """Tolerant of other versions: unknown keys are ignored, missing ones take defaults."""
        return status_from_json(cls, data, {"loop": record_of(LoopStatus), "safety": record_of(SafetyCounts)})
