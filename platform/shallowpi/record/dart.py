"""DART-style demonstrations: the robot executes the expert's goals plus noise, the store
records the expert's clean goals (Laskey et al. 2017, "DART: Noise Injection for Robust
Imitation Learning").

A policy trained on clean demonstrations never sees the states its own small errors lead
to, nor what to do there (covariate shift). Perturbing what the robot *executes* makes
the demonstrations visit those states, and because the expert keeps planning from the
true scene while its clean goals are what is stored, the labels there say how to get
back. Used for the scripted experts in the twin (`record.sim_noise`), where the expert
is a program; a human teleoperator corrects by themselves.

The noise is an Ornstein-Uhlenbeck process per joint (correlation time `tau_s`): i.i.d.
noise on position goals is mostly filtered out by the servos' own tracking, a slowly
drifting offset moves the arm off the expert's path the way a policy's bias would.
Its standard deviation is `scale` times each joint's range (upper - lower); grippers are
left alone (a gripper that opens mid-grasp teaches dropping, not recovering).

`NoisyExecution` wraps the recording robot: `act(goal)` bounds the goal as the robot bounds
a command (within each joint's top speed of the last label, then within its limits), sends
that + noise and returns it, and the session records it as the action. Without the speed
bound the labels held what no robot does: the arm expert, leaving its stretched-out (singular)
home pose, asks its lift stage for up to 5 ticks of top speed in one tick, which the robot
clamps; recorded unclamped, a policy learns to ask for it too.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from shallowpi.errors import ConfigError, PlatformError
from shallowpi.robots.base import LinkCounts, SafeState, speed_bounded
from shallowpi.robots.observation import Observation


class SimRobot(Protocol):
    """What `NoisyExecution` wraps: the `Robot` methods a recording uses (robots/base.py)."""

    def observe(self) -> Observation:
        """This tick's observation."""

    def act(self, action: np.ndarray) -> np.ndarray:
        """Send joint goals [J]; returns float32 [J] sent."""

    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Every goal := the present position (or `goal`, kept); returns float32 [J] held."""

    def hold_or_release(self, fault: PlatformError | None = None) -> SafeState:
        """After a fault: hold, else torque off; what was done (robots/base.py)."""

    def torque_off(self) -> None:
        """Torque off; `act()` refuses until connected again."""

    def link_counts(self) -> LinkCounts:
        """Exchanges with the servos and failed tries so far (all zero without a bus)."""

    def disconnect(self) -> None:
        """Torque off, then close the devices."""


class OUNoise:
    """Per-joint Ornstein-Uhlenbeck noise: x += -x dt / tau + sigma sqrt(2 dt / tau) N(0, 1),
    stationary std `sigma` [J], starting from 0 each `reset`."""

    def __init__(self, sigma: np.ndarray, tau_s: float, dt: float, seed: int = 0) -> None:
        if not (0 < tau_s < math.inf and 0 < dt < math.inf):  # nan fails a comparison; an infinite tau is no noise
            raise ConfigError(f"the noise needs a positive, finite correlation time and period, got {tau_s}, {dt}")
        self.sigma = np.asarray(sigma, dtype=np.float64)
        self.decay = np.exp(-dt / tau_s)
        self.rng = np.random.default_rng(seed)
        self.x = np.zeros_like(self.sigma)

    def reset(self, seed: int) -> None:
        """Back to 0, with a fresh random stream from `seed`."""
        self.rng = np.random.default_rng(seed)
        self.x = np.zeros_like(self.sigma)

    def __call__(self) -> np.ndarray:
        # The exact discretisation keeps the stationary std at sigma for any dt / tau.
        self.x = self.decay * self.x + self.sigma * np.sqrt(1 - self.decay**2) * self.rng.standard_normal(self.x.shape)
        return self.x.copy()


class NoisyExecution:
    """A robot that executes goals + noise and reports the clean goals as sent.

    `lower`/`upper` [J] are the joint limits and `max_velocity` [J] each joint's top speed
    (robot units a second), which bound the clean goals as `Robot.act` bounds a command;
    `quiet` the joints left without noise (grippers).
    """

    def __init__(self, robot: SimRobot, lower: Sequence[float], upper: Sequence[float], joint_names: Sequence[str],
                 scale: float, tau_s: float, fps: float, max_velocity: Sequence[float], quiet: Sequence[str] = (),
                 seed: int = 0) -> None:
        if not 0 <= scale < math.inf:  # nan passed `scale < 0`, and reached the arm as a NaN action
            raise ConfigError(f"record.sim_noise must be >= 0 and finite (a fraction of each joint's range), "
                              f"got {scale}")
        self.robot, self.scale = robot, scale
        self.lower, self.upper = np.asarray(lower, np.float64), np.asarray(upper, np.float64)
        self.tick_step = np.asarray(max_velocity, np.float64) / fps  # [J], the most a goal moves in a tick
        self._label: np.ndarray | None = None  # the last clean goal; None at an episode's start
        self.joint_names = list(joint_names)
        sigma = scale * (self.upper - self.lower)
        sigma[[self.joint_names.index(j) for j in quiet]] = 0.0
        self.noise = OUNoise(sigma, tau_s, 1.0 / fps, seed)
        self.executed: np.ndarray | None = None  # the last goal actually sent (for tests, telemetry)

    def reset_noise(self, seed: int) -> None:
        """A fresh noise stream for an episode (call with the episode's scene seed, after the
        scene's reset: the episode's first goal is then bounded by the limits only)."""
        self.noise.reset(seed)
        self._label = None

    def observe(self) -> Observation:
        """The wrapped robot's observation."""
        return self.robot.observe()

    def act(self, action: np.ndarray | Mapping[str, float]) -> np.ndarray:
        """Bound the goal (within `tick_step` of the last clean goal, then within the limits),
        send it plus noise; returns that clean bounded goal, float32 [J] (`executed` keeps
        what the robot sent). Raises ConfigError for a mapping."""
        if isinstance(action, Mapping):
            raise ConfigError("record.sim_noise needs the expert's goals as a vector, not a mapping")
        clean = np.asarray(action, dtype=np.float64)
        if self._label is None:  # an episode's first goal: the limits only
            clean = np.clip(clean, self.lower, self.upper)
        else:
            clean = speed_bounded(clean, self._label, self.tick_step, self.lower, self.upper)
        self._label = clean
        self.executed = self.robot.act(clean + self.noise())
        return clean.astype(np.float32)

    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Safety is never noisy: holding position is the robot's own. The last command
        the robot was sent is `executed`, not what act() returned (the clean goal)."""
        return self.robot.hold(goal)

    def hold_or_release(self, fault: PlatformError | None = None) -> SafeState:
        """The wrapped robot's own hold or release after a fault (robots/base.py)."""
        return self.robot.hold_or_release(fault)

    def torque_off(self) -> None:
        """The wrapped robot's torque off."""
        self.robot.torque_off()

    def check_faults(self) -> None:
        """The wrapped robot's alarms (robots/base.py), read also while a fault waits for its
        acknowledgement (record/fault_hold.py): without it that read failed on every noisy
        recording, and `--sim stack`'s emulated servos went unwatched."""
        self.robot.check_faults()

    def link_counts(self) -> LinkCounts:
        """The wrapped robot's servo link counts."""
        return self.robot.link_counts()

    def disconnect(self) -> None:
        """Disconnect the wrapped robot."""
        self.robot.disconnect()
