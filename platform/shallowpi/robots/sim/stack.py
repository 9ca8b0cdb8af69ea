"""`--sim stack`: the twin behind the real drivers, in lock-step with simulated time.

    robot = StackSimRobot(RobotSpec.from_config(cfg.robot), TwinSpec.from_config(cfg.robot))
    with robot:                     # twin, emulated chains on ptys, software RealSenses, driver
        robot.reset(seed, task)
        sent = robot.act(goal)      # bus -> servo goals -> twin steps 1/fps -> renders published
        obs = robot.observe()       # Present Position over the bus + that tick's frames

What runs is what runs on the robot: `DynamixelRobot` talks Protocol 2.0 through
dynamixel-sdk to emulated servo chains (hardware/dynamixel/emulator.py) whose shafts are
the twin's joints (plants.py), and reads the cameras through `RealSenseCamera` from
software RealSense devices fed with the twin's renders (camera_feed.py). Only the tick
order is the simulation's:

    act():     the driver's goals go out over the bus; a round trip on each bus makes sure
               the chain has applied them (a sync write has no reply); the twin steps 1/fps;
               every camera role is rendered and injected as frame number `tick`.
    observe(): positions come back over the bus; each camera yields exactly frame `tick`
               (`newer_than` the previous one), so no frame is duplicated or skipped
               however long a render takes.

Goals and states cross the bus as whole servo ticks, as on the robot. So for the same seed
and actions, `--sim direct` and `--sim stack` agree up to that quantisation: with goals on
the servo grid both twins run the same physics and render the same pixels, and the states
differ by at most half a tick (tests/test_sim_stack.py); goals off the grid are rounded to
the nearest tick, which can move the physics by as much. One bound is the driver's alone:
`DynamixelRobot.act` keeps a goal within `LEAD_TICKS` steps of the measured position, so
a joint lagging further (held back in contact) is driven more gently here than direct.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from shallowpi.hardware.camera import Frame
from shallowpi.robots.base import LinkCounts, Robot
from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration
from shallowpi.robots.observation import Observation
from shallowpi.robots.sim.tasks import Task
from shallowpi.robots.sim.twin import SimError, SimTwin, TwinSpec
from shallowpi.robots.spec import RobotSpec


class _TickCamera:
    """A camera as the driver sees it, pinned to the simulation's tick: `latest()` waits
    for the frame of the current tick and nothing else."""

    def __init__(self, camera: Any, robot: StackSimRobot) -> None:
        self.camera = camera
        self.robot = robot

    def latest(self, max_age_s: float | None = None) -> Frame:
        """This tick's frame from the software RealSense; SimError if it is another tick's."""
        # `max_age_s` is wall-clock staleness, a hardware concern: here the frame of this tick
        # is by definition current, however long the host took to get to it.
        tick = self.robot.tick
        frame = self.camera.latest(newer_than=tick - 1)
        if frame.sequence != tick:
            raise SimError(
                f"camera '{self.camera.name}' delivered frame {frame.sequence} at tick {tick}; "
                "the software RealSense fell out of lock-step"
            )
        return frame


# The emulated servos share the host's CPUs with the renderer and the dataset writer: a
# reply can be late by a scheduler slice, which on a real bus would mean a fault. Simulated
# time does not advance while the driver waits, so give the packet timeout room (it costs
# nothing when replies are prompt: the port waits in select(), not in a loop).
SIM_BUS_LATENCY_MS = 250.0


def _sim_bus(name: str, port: str, baud: int, motors: Mapping[int, Any]) -> Any:
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    return DynamixelBus(name, port, baud, motors, latency_timer_ms=SIM_BUS_LATENCY_MS)


class StackSimRobot(Robot):
    """The twin behind the real drivers (see the module docstring). Raises SimError when the
    twin's joints differ from the config's or a joint has no motor."""

    def __init__(self, spec: RobotSpec, twin_spec: TwinSpec, calibration: RobotCalibration | None = None,
                 camera_timeout_s: float = 10.0) -> None:
        if list(spec.joint_names) != list(twin_spec.joint_names):
            raise SimError(f"twin of '{spec.name}' has joints {twin_spec.joint_names}, config {spec.joint_names}")
        unbound = set(spec.joint_names) - {m.joint for m in spec.motors}
        if unbound:
            raise SimError(f"robot '{spec.name}': joints {sorted(unbound)} have no motor; add them under motors:")
        self.spec = spec
        self.twin_spec = twin_spec
        # The emulated servos start at the factory centre tick, i.e. the uncalibrated zero:
        # a real calibration file describes real servos, not these.
        self.calibration = calibration or RobotCalibration(UNCALIBRATED, spec.name)
        self.dt = 1.0 / twin_spec.fps
        self.camera_timeout_s = camera_timeout_s
        self.twin: SimTwin | None = None
        self.driver: Any = None
        self.cameras: dict[str, Any] = {}
        self.tick = 0
        self._joints: Any = None
        self._chains: dict[str, Any] = {}
        self._feed: Any = None

    # -- lifecycle -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The robot's config name."""
        return self.spec.name

    @property
    def is_connected(self) -> bool:
        """Whether the driver is up (between `connect()` and `disconnect()`)."""
        return self.driver is not None

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """The driver's (DynamixelRobot: narrowed to a calibration's sweep), once connected."""
        return self.driver.joint_limits() if self.driver is not None else super().joint_limits()

    def link_counts(self) -> LinkCounts:
        """The driver's exchanges with the emulated servos and failed tries (LinkCounts), as
        on the robot; zero before `connect()`. A chain's fault (`ServoChain.flaky`) shows here."""
        return self.driver.link_counts() if self.driver is not None else LinkCounts()

    def connect(self) -> None:
        """Start the twin, the emulated follower chains, the cameras and the driver, then
        `reset()`; a failure stops what started. Connected already: re-arm the driver."""
        if self.driver is not None:
            self.driver.connect()  # re-arms after torque_off(); verifies the buses again
            return
        from shallowpi.hardware.dynamixel.emulator import build_chains
        from shallowpi.robots.dynamixel_robot import DynamixelRobot
        from shallowpi.robots.sim.camera_feed import SimCameraFeed
        from shallowpi.robots.sim.plants import TwinJoints, twin_plant_factory

        try:
            self.twin = SimTwin(self.twin_spec)
            self.twin.reset()
            self._joints = TwinJoints(self.twin)
            followers = set(self.spec.follower_buses())
            buses = {b: m for b, m in self.spec.bus_motors().items() if b in followers}
            self._chains = build_chains(buses, twin_plant_factory(self.spec, self.calibration, self._joints))
            self._feed = SimCameraFeed(self.twin)
            self.cameras = self._feed.cameras(timeout_s=self.camera_timeout_s)
            for camera in self.cameras.values():
                camera.start()
            ported = self.spec.with_ports({bus: chain.path for bus, chain in self._chains.items()})
            # Frames are this tick's by construction (`_TickCamera`); wall-clock silence
            # between ticks (a slow writer, a loaded host) is not a camera fault here.
            driver = DynamixelRobot(ported, self.calibration, bus_factory=_sim_bus,
                                    cameras={role: _TickCamera(c, self) for role, c in self.cameras.items()},
                                    camera_timeout_s=math.inf, clock=None)  # each act() one simulated tick
            driver.connect()
            self.driver = driver
            self.reset()
        except BaseException:
            self.disconnect()
            raise

    def disconnect(self) -> None:
        """Disconnect the driver (torque off), stop the cameras and the chains, free the twin."""
        if self.driver is not None:
            self.driver.disconnect()
            self.driver = None
        for camera in self.cameras.values():
            camera.stop()
        self.cameras = {}
        for chain in self._chains.values():
            chain.stop()
        self._chains = {}
        if self.twin is not None:
            self.twin.close()
            self.twin = None

    def _need(self) -> Any:
        if self.driver is None or self.twin is None:
            raise SimError(f"sim robot '{self.spec.name}' is not connected; call connect() first")
        return self.driver

    def reset(self, seed: int | None = None, task: Task | None = None) -> None:
        """Reset the twin (home pose, objects placed from `seed`), let the driver hold the
        new pose, and publish its frames (observe() right after a reset sees the scene)."""
        driver = self._need()
        with self._joints.lock:
            self.twin.reset(seed, task.place if task is not None else None)
        driver.adopt_present_pose()
        self._settle_buses()
        # Holding sends the read-back (tick-quantised) pose; the scene starts from the exact
        # home goals, as in `--sim direct`. No physics ran in between.
        with self._joints.lock:
            self.twin.set_joint_goals(self.twin.home_vector())
        self._publish()

    # -- control -------------------------------------------------------------------------
    def act(self, action: np.ndarray | Mapping[str, float]) -> np.ndarray:
        """The driver clamps and sends the goals; then one control period of physics, then
        this tick's renders go to the cameras. Returns the goals sent (joint units)."""
        driver = self._need()
        sent = driver.act(action)
        self._settle_buses()
        self._joints.step(self.dt)
        self._publish()
        return sent

    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """The driver's hold over the emulated buses: goals := present positions (or the
        last command, `goal`), read back (the read-back is a round trip, so the chain has
        applied them). No physics runs."""
        return self._need().hold(goal)

    def torque_off(self) -> None:
        """The driver's torque off on every emulated bus (servos acknowledge each write);
        the twin's joints keep their last goal (no limp mode), act() refuses until connect()."""
        self._need().torque_off()

    def observe(self) -> Observation:
        """The driver's observation on simulated time, like `--sim direct`: the frames are
        this tick's renders (`_TickCamera` checks their number), so each is of this instant."""
        obs = self._need().observe()
        now = self.twin.time
        return Observation(now, obs.state, {role: replace(f, time_s=now) for role, f in obs.frames.items()})

    def check_faults(self) -> None:
        """The emulated servos' alarms, read through the driver as on a robot."""
        self._need().check_faults()

    def _publish(self) -> None:
        self.tick += 1  # frame numbers never repeat, across episodes too
        self._feed.publish(self.tick)

    def _settle_buses(self) -> None:
        # Sync writes are unanswered: a ping behind them returns only once the chain has
        # processed them (one thread per chain, packets in order).
        for bus_name, bus in self.driver.buses.items():
            first = next(m.id for m in self.spec.motors if m.bus == bus_name)
            if bus.ping(first) is None:
                raise SimError(f"emulated servo {first} on bus '{bus_name}' did not answer a ping")
