"""`--sim direct`: a robot that is the twin, in-process, for fast policy evaluation.

Same surface as the hardware robot: `observe()` gives joint state and camera frames with
their (simulated) timestamps, `act()` clamps a goal to the joint limits and the velocity
bound and returns what was sent. Each `act()` advances simulated time by one control
period (1 / fps), so the robot never runs faster or slower than its clock says.
`hold()` and `torque_off()` complete the `Robot` contract (robots/base.py); the twin's
actuators have no limp mode, so torque off holds the present pose, and act() refuses
until connect(), as on the hardware.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from shallowpi.robots.base import Robot, RobotError, speed_bounded
from shallowpi.robots.observation import Frame, Observation
from shallowpi.robots.sim.tasks import Task
from shallowpi.robots.sim.twin import SimError, SimTwin, TwinSpec


class DirectSimRobot(Robot):
    """The twin as a `Robot`, in-process; renders only the camera roles of `cameras` (all
    by default). Raises SimError for a role the twin lacks."""

    def __init__(self, spec: TwinSpec, cameras: Sequence[str] | None = None):
        self.spec = spec
        self.dt = 1.0 / spec.fps
        self.cameras = tuple(spec.cameras if cameras is None else cameras)
        for role in self.cameras:
            if role not in spec.cameras:
                raise SimError(
                    f"unknown camera role '{role}' for {spec.robot}; roles: {', '.join(spec.cameras)}"
                )
        self.twin: SimTwin | None = None
        self.tick = 0
        self._last_goal: np.ndarray | None = None
        self._torque_off = False

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The robot's config name."""
        return self.spec.robot

    @property
    def is_connected(self) -> bool:
        """Whether the twin is loaded (between `connect()` and `disconnect()`)."""
        return self.twin is not None

    def connect(self) -> None:
        """Load and reset the twin, the first time (SimError if it does not load); re-arms
        `act()` after `torque_off()`."""
        if self.twin is None:
            self.twin = SimTwin(self.spec)
            self.reset()
        self._torque_off = False

    def disconnect(self) -> None:
        """Free the twin and its renderer; the next `connect()` loads a new one."""
        if self.twin is not None:
            self.twin.close()
            self.twin = None

    def _twin(self) -> SimTwin:
        if self.twin is None:
            raise SimError(f"sim robot '{self.spec.robot}' is not connected; call connect() first")
        return self.twin

    def reset(self, seed: int | None = None, task: Task | None = None) -> None:
        """Reset the twin (home pose; `task`'s objects placed from `seed`), tick 0, goals at home.
        Raises SimError when not connected."""
        twin = self._twin()
        twin.reset(seed, task.place if task is not None else None)
        self.tick = 0
        self._last_goal = twin.joint_goals()

    # -- control -------------------------------------------------------------------------
    def observe(self) -> Observation:
        """Joint positions and one frame per camera, all at the current simulated time
        (a render is of this instant: every frame's age is 0); frame number = tick."""
        twin = self._twin()
        stamp = twin.time
        frames = {role: Frame(image=twin.render(role), time_s=stamp, sequence=self.tick) for role in self.cameras}
        return Observation(stamp, twin.joint_positions().astype(np.float32), frames)

    def act(self, action: np.ndarray | Mapping[str, float]) -> np.ndarray:
        """Send joint goals (clamped to limits and to max_velocity * dt from the last goal),
        advance one control period; returns the goals actually sent."""
        twin = self._twin()
        if self._torque_off:
            raise RobotError(f"sim robot '{self.name}': torque is off (e-stop or fault); connect() again to drive it")
        goal = self._bounded(self._as_vector(action))
        twin.set_joint_goals(goal)
        twin.step(self.dt)
        self._last_goal = goal
        self.tick += 1
        return goal.astype(np.float32)

    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Every joint's goal := its present position (clipped to the limits), or := `goal`
        [J], the last command kept (clamped as act() clamps); returns float32[J].
        Simulated time does not advance. RobotError for a goal after torque_off(): the
        twin's "limp" is holding its pose, and a stale command must not move it."""
        twin = self._twin()
        if goal is not None and self._torque_off:
            raise RobotError(f"sim robot '{self.name}': torque is off; hold() its present pose or connect() again")
        if goal is None:
            goal = np.clip(twin.joint_positions(), self.spec.lower, self.spec.upper)
        else:
            goal = self._bounded(self._as_vector(goal))
        twin.set_joint_goals(goal)
        self._last_goal = goal
        return goal.astype(np.float32)

    def _bounded(self, goal: np.ndarray) -> np.ndarray:
        """Within max_velocity * dt of the last goal, then within the limits."""
        last = self._last_goal if self._last_goal is not None else self._twin().joint_goals()
        return speed_bounded(goal, last, self.spec.max_velocity * self.dt, self.spec.lower, self.spec.upper)

    def torque_off(self) -> None:
        """The twin's actuators cannot go limp: hold the present pose and refuse act()."""
        self.hold()
        self._torque_off = True

    def _as_vector(self, action: np.ndarray | Mapping[str, float]) -> np.ndarray:
        names = self.spec.joint_names
        if isinstance(action, Mapping):
            unknown = set(action) - set(names)
            if unknown:
                raise SimError(
                    f"unknown joints {sorted(unknown)} for {self.spec.robot}; joints: {', '.join(names)}"
                )
            goal = (
                self._last_goal.copy()
                if self._last_goal is not None
                else self._twin().joint_goals()
            )
            for name, value in action.items():
                goal[names.index(name)] = float(value)
        else:
            goal = np.asarray(action, dtype=np.float64).reshape(-1)
            if goal.shape != (len(names),):
                raise SimError(
                    f"{self.spec.robot}: action has {goal.size} values, expected {len(names)} ({', '.join(names)})"
                )
        if not np.all(np.isfinite(goal)):  # a vector or a mapping: neither may reach the actuators
            raise SimError(f"{self.spec.robot}: action contains NaN or inf")
        return goal
