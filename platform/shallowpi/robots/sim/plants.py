"""Emulated servos whose shafts are the MuJoCo twin's joints (the `JointPlant` seam).

`platform record --sim stack` runs the real driver (`DynamixelRobot` over `DynamixelBus`)
against emulated servo chains; each follower servo's plant is a `TwinJointPlant` bound to
one joint of the twin:

    joints = TwinJoints(twin)
    chains = build_chains(buses, plant_factory=twin_plant_factory(spec, calibration, joints))

A goal written over the bus becomes that joint's actuator goal; a Present Position read
returns the joint's simulated position. The plant converts between the servo's shaft
radians (0 = centre tick) and the joint's units exactly as the driver's calibration does
(`JointConverter`), so the driver reads back what it would on the robot.

The chain threads never step physics: only the simulation loop calls `TwinJoints.step`,
between a tick's goals and its observation, so the twin runs on simulated time whatever
the bus or the renderer cost. One lock serialises the chain threads' goal writes and
state reads with that step.
"""

from __future__ import annotations

import threading

import numpy as np

from shallowpi.hardware.dynamixel.calibration import MotorCalibration
from shallowpi.hardware.dynamixel.plant import JointPlant, JointState, PlantFactory
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.sim.twin import SimTwin
from shallowpi.robots.spec import MotorSpec, RobotSpec


class TwinJoints:
    """The twin as the servos see it: per-joint goals and state, under one lock."""

    def __init__(self, twin: SimTwin) -> None:
        self.twin = twin
        self.lock = threading.Lock()
        self._index = {name: i for i, name in enumerate(twin.spec.joint_names)}

    def index(self, joint: str) -> int:
        """Index of joint `joint` in the twin's joint vectors; KeyError for an unknown name."""
        return self._index[joint]

    def set_goal(self, joint: int, value: float) -> None:
        """Set joint number `joint`'s goal to `value` (joint units), clipped to its range;
        the other goals stay."""
        with self.lock:
            goals = self.twin.joint_goals()
            goals[joint] = value
            self.twin.set_joint_goals(goals)  # clipped to the joint's range, as the actuator is

    def state(self, joint: int) -> tuple[float, float]:
        """Joint number `joint`'s (position, velocity), in joint units."""
        with self.lock:
            return float(self.twin.joint_positions()[joint]), float(self.twin.joint_velocities()[joint])

    def step(self, dt: float) -> None:
        """Advance the twin `dt` s of simulated time; only the simulation loop calls it."""
        with self.lock:
            self.twin.step(dt)


class ShaftScale:
    """Shaft radians <-> joint units for one motor: the continuous form of `JointConverter`
    (no tick rounding: the servo's own tick conversion does that, once, on each side).

        joint = direction * (shaft - zero) * scale
    with `zero` the homing offset in shaft radians and `scale` 1 (revolute), metres_per_rad
    (linear) or 1 / span in radians (gripper, 0 closed .. 1 open).
    """

    def __init__(self, motor: MotorSpec, calibration: MotorCalibration, kind: str) -> None:
        rad_per_tick = motor.model.radians_per_tick
        self.direction = calibration.direction
        self.zero = (calibration.homing_offset - motor.model.center_tick) * rad_per_tick
        if kind == "gripper":
            self.scale = 1.0 / (max(calibration.span_ticks, 1) * rad_per_tick)
        elif kind == "linear":
            self.scale = motor.metres_per_rad
        else:
            self.scale = 1.0

    def to_joint(self, shaft: float) -> float:
        """Shaft rad -> joint units."""
        return self.direction * (shaft - self.zero) * self.scale

    def to_shaft(self, joint: float) -> float:
        """Joint units -> shaft rad (the inverse of `to_joint`)."""
        return self.zero + self.direction * joint / self.scale


class TwinJointPlant:
    """One servo's shaft = one twin joint. Torque off holds the last goal (the twin's
    actuators have no limp mode; a simulated arm does not fall when the driver lets go)."""

    def __init__(self, joints: TwinJoints, joint: str, scale: ShaftScale) -> None:
        self.joints = joints
        self.joint = joint
        self._index = joints.index(joint)
        self.scale = scale

    def set_torque(self, enabled: bool) -> None:
        """Ignored: the twin's actuator always tracks its goal."""
        pass

    def set_goal(self, position: float) -> None:
        """The goal (shaft rad) becomes the joint's actuator goal, in joint units."""
        self.joints.set_goal(self._index, self.scale.to_joint(position))

    def read(self, now: float) -> JointState:
        """The joint's simulated position and velocity at the shaft (rad, rad/s), current 0;
        `now` is not used."""
        # `now` is the emulator's wall clock; the twin keeps its own (simulated) time.
        position, velocity = self.joints.state(self._index)
        shaft = self.scale.to_shaft(position)
        shaft_velocity = self.scale.direction * velocity / self.scale.scale
        return JointState(shaft, shaft_velocity, 0.0)

    def move_to(self, position: float) -> None:
        """Teleport the joint to shaft `position` (rad); its goal stays as it was."""
        # A hand on a simulated joint: teleport it (the next step's physics takes over).
        with self.joints.lock:
            twin = self.joints.twin
            twin.data.qpos[twin.model.joint(self.joint).qposadr[0]] = self.scale.to_joint(position)


def twin_plant_factory(spec: RobotSpec, calibration: RobotCalibration, joints: TwinJoints) -> PlantFactory:
    """Plants for `build_chains`: each follower servo bound to its joint; any other servo
    (a leader arm's) gets the emulator's default plant."""
    kinds = {j.name: j.kind for j in spec.joints}
    motors = {(m.bus, m.id): m for m in spec.motors}

    def factory(bus: str, servo_id: int, model_name: str) -> JointPlant:
        motor = motors.get((bus, servo_id))
        if motor is None:
            return None  # type: ignore[return-value]  # build_chains then uses TrackingPlant
        kind = kinds[motor.joint]
        return TwinJointPlant(joints, motor.joint, ShaftScale(motor, calibration.for_motor(motor, kind), kind))

    return factory


def quantum(spec: RobotSpec, calibration: RobotCalibration) -> np.ndarray:
    """One servo tick in each joint's units: the resolution of what the driver reads."""
    kinds = {j.name: j.kind for j in spec.joints}
    out = np.zeros(len(spec.joints))
    for motor in spec.motors:
        kind = kinds[motor.joint]
        scale = ShaftScale(motor, calibration.for_motor(motor, kind), kind).scale
        out[spec.joint_names.index(motor.joint)] = motor.model.radians_per_tick * scale
    return out
