"""A robot and a policy small enough to read every action the executor sends.

`CountingRobot` implements the Robot contract in memory (limits, a velocity bound, hold,
torque off, injectable faults and frozen frames). `StepBackend` answers every observation
with the chunk "the next H step numbers": the robot starts at -1 and its state is the last
command, so after o actions 0..o-1 the chunk is o, o+1, ... . An executor that indexes
chunks by the actions actually consumed sends 0, 1, 2, ... whatever the latency; one that
trusts a latency estimate skips or repeats numbers.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np

from shallowpi.deploy.executor import Executor
from shallowpi.deploy.settings import ExecutorConfig
from shallowpi.errors import PlatformError
from shallowpi.policy.action_selection import ActionSelectionConfig
from shallowpi.robots.base import LinkCounts, Robot, SafeStateError
from shallowpi.robots.observation import Frame, Observation


class ServoFault(PlatformError):
    pass


class CountingRobot:
    def __init__(self, joints: int = 2, fps: float = 30.0, max_step: float = 100.0,
                 fault_at: int | None = None, frozen_frames: tuple[int, int] | None = None) -> None:
        # Top speed one count a tick (the executor's unit for seam jumps and steps); act()
        # clamps at `max_step` counts a tick, by default none to speak of.
        self.spec = SimpleNamespace(fps=fps, robot="counting", joints=[
            SimpleNamespace(name=f"j{i}", lower=-1e3, upper=1e3, max_velocity=fps) for i in range(joints)])
        self.position = np.full(joints, -1.0, np.float32)
        self.max_step, self.fault_at, self.frozen_frames = max_step, fault_at, frozen_frames
        self.ticks = 0
        self.calls: list[str] = []  # hold, torque_off, in order
        self.torque = True
        self.clamped = 0  # commands this robot changed, by any amount
        self.alarm: str | None = None  # set: check_faults() raises it (a servo overloading as it holds)

    def link_counts(self) -> LinkCounts:
        return LinkCounts()  # no servo bus

    def joint_limits(self):
        return (np.array([j.lower for j in self.spec.joints], float), np.array([j.upper for j in self.spec.joints], float))

    def observe(self) -> Observation:
        if self.fault_at is not None and self.ticks >= self.fault_at:
            raise ServoFault(f"servo 3 on bus arm reports an overload at tick {self.ticks}")
        now = self.ticks / self.spec.fps
        capture = now
        if self.frozen_frames and self.frozen_frames[0] <= self.ticks < self.frozen_frames[1]:
            capture = self.frozen_frames[0] / self.spec.fps  # the camera stopped delivering
        image = np.zeros((8, 8, 3), np.uint8)
        return Observation(now, self.position.copy(), {"front": Frame(image, capture, self.ticks)})

    def act(self, goal) -> np.ndarray:
        if not self.torque:
            raise PlatformError("torque is off")
        asked = np.asarray(goal, np.float32)
        goal = np.clip(asked, self.position - self.max_step, self.position + self.max_step)
        self.clamped += bool((goal != asked).any())
        self.position = goal.astype(np.float32)
        self.ticks += 1
        return self.position.copy()

    def hold(self, goal=None) -> np.ndarray:
        self.calls.append("hold" if goal is None else "hold last")
        if self.fault_at is not None and self.ticks >= self.fault_at:  # the overloaded servo let go
            raise SafeStateError("robot 'counting': hold not confirmed, servo 3 has torque off")
        if goal is not None:
            self.position = np.asarray(goal, np.float32).copy()  # no time passes: no clamp to apply
        return self.position.copy()

    def torque_off(self) -> None:
        self.calls.append("torque_off")
        self.torque = False

    def hold_or_release(self, fault=None):
        return Robot.hold_or_release(self, fault)  # the contract's own: hold, else torque off

    def check_faults(self) -> None:
        if self.alarm is not None:
            raise ServoFault(self.alarm)


class LoadedRobot(CountingRobot):
    """Measures every joint 0.3 short of its goal (a gripper squeezing an object, a joint
    sagging under load); hold() re-aims the goal there, as the Robot contract says."""

    def observe(self) -> Observation:
        obs = super().observe()
        obs.state[:] = self.position - 0.3
        return obs

    def hold(self, goal=None) -> np.ndarray:
        if goal is not None:
            return super().hold(goal)
        self.calls.append("hold")
        self.position = self.position - 0.3
        return self.position.copy()


class StepBackend:
    """chunk[j] = (last command + 1 + j) on every joint; `latencies` (s) per call, cycling
    on its last value; records each call's inpainting."""

    name = "steps"

    def __init__(self, chunk_len: int = 8, latencies: tuple[float, ...] = (0.0,), offset: float = 0.0) -> None:
        self.chunk_len, self.latencies, self.offset = chunk_len, list(latencies), offset
        self.calls = 0
        self.inpaintings: list = []

    def reset(self, seed: int) -> None:
        pass

    def warm_up(self, obs, runs: int) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            self.infer(obs)
            times.append(time.perf_counter() - t0)
        return times

    def infer(self, obs, inpainting=None) -> np.ndarray:
        latency = self.latencies[min(self.calls, len(self.latencies) - 1)]
        self.calls += 1
        self.inpaintings.append(inpainting)
        time.sleep(latency)
        start = float(obs["observation.state"][0]) + 1.0 + self.offset
        values = start + np.arange(self.chunk_len, dtype=np.float32)
        return np.repeat(values[:, None], len(obs["observation.state"]), axis=1)


class FailingBackend(StepBackend):
    """A StepBackend whose `infer` raises RuntimeError(`message`) from call `after` on (by
    default after the warm-up's two chunks and one good one)."""

    def __init__(self, chunk_len: int, message: str, after: int = 3) -> None:
        super().__init__(chunk_len)
        self.message, self.after = message, after

    def infer(self, obs, inpainting=None) -> np.ndarray:
        if self.calls >= self.after:
            raise RuntimeError(self.message)
        return super().infer(obs, inpainting)


class StallingBackend(StepBackend):
    """A StepBackend whose `infer` sleeps `stall_s` before answering from call `after` on (by
    default after the warm-up's two chunks and one good one): a slow or hung engine."""

    def __init__(self, chunk_len: int, stall_s: float, after: int = 3) -> None:
        super().__init__(chunk_len)
        self.stall_s, self.after = stall_s, after

    def infer(self, obs, inpainting=None) -> np.ndarray:
        if self.calls >= self.after:
            time.sleep(self.stall_s)
        return super().infer(obs, inpainting)


def run(strategy="async", latencies=(0.0,), ticks=60, chunk_len=8, realtime=False, robot=None, warm=True,
        replan_every=None, rtc_mask="soft"):
    """An executor on `robot` (default a CountingRobot) and a StepBackend, warmed up unless
    `warm` is False, after one episode of `ticks`: (executor, report, robot, backend)."""
    robot = robot or CountingRobot()
    backend = StepBackend(chunk_len, latencies)
    executor = Executor(robot, backend, ExecutorConfig(strategy=strategy, realtime=realtime, seam_ticks=2.0,
                                                       warmup_runs=2, rtc_mask=rtc_mask,
                                                       selection=ActionSelectionConfig(replan_every=replan_every)))
    if warm:
        executor.warm_up("count")
    return executor, executor.run_episode("count", ticks), robot, backend
