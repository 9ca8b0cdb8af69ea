"""Where `platform deploy` runs its episodes: the robot's MuJoCo twin, or the robot itself.

Both hand the executor a `Robot` (robots/base.py) and say how an episode starts and whether
it succeeded:

- `TwinTarget` (`--sim direct|stack`): robot, task and render size from the checkpoint's
  training store, as `platform eval --sim`; each episode resets the scene from its seed and
  the task's detector judges success.
- `RobotTarget` (no `--sim`): `DynamixelRobot` on the config's follower buses with the
  RealSense cameras the policy reads, the robot's calibration, wall-clock ticks. Between
  episodes the robot holds its pose for `--reset-time-s` while the operator sets the
  scene; success is the operator's to judge (None: review the episodes `--record` keeps).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shallowpi.cli import overrides_from
from shallowpi.errors import ConfigError

Say = Callable[[str], None]
Waiting = Callable[[], bool]  # called while the robot waits; True: stop waiting (a stop or e-stop came)


@dataclass
class TwinTarget:
    """The twin: `robot` is a DirectSimRobot or StackSimRobot (not connected yet); `task`
    a robots/sim task; `spec` the TwinSpec (render size = the policy's training size)."""

    robot: Any
    cfg: Any
    spec: Any
    task: Any
    tasks_recorded: int
    episode_s: float
    on_hardware = False

    @property
    def fps(self) -> float:
        """Control rate, Hz (the twin's, checked against the training store's)."""
        return float(self.spec.fps)

    @property
    def instruction(self) -> str:
        """The text the policy is told."""
        return str(self.task.instruction)

    @property
    def description(self) -> str:
        """'arm / cube_in_bowl' for the banner line."""
        return f"{self.spec.robot} / {self.task.name}"

    @property
    def calibration_id(self) -> str:
        """What recorded episodes carry: the twin has no calibration file."""
        return f"sim-{self.spec.robot}"

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int]]:
        """{role: (height, width)} of the frames the robot returns, pixels."""
        return {role: (self.spec.render_height, self.spec.render_width) for role in self.spec.cameras}

    @property
    def joint_names(self) -> list[str]:
        """Joint names in state/action order."""
        return list(self.spec.joint_names)

    def connect(self) -> None:
        """Start the twin (and, for `stack`, its emulated servos and cameras)."""
        self.robot.connect()

    def disconnect(self) -> None:
        """Stop what `connect` started."""
        self.robot.disconnect()

    def start_episode(self, seed: int, episode: int, say: Say, waiting: Waiting) -> None:
        """Reset the scene from `seed` (the same seed, the same scene as `eval --sim`)."""
        self.robot.reset(seed, self.task)

    def success_check(self) -> Callable[[], bool]:
        """The task's success detector on the twin's state."""
        return lambda: bool(self.task.success(self.robot.twin))


@dataclass
class RobotTarget:
    """The robot itself: `robot` a DynamixelRobot (not connected), `cameras` the RealSense
    cameras it reads (started by `connect`), `spec` its RobotSpec."""

    robot: Any
    cfg: Any
    spec: Any
    cameras: dict[str, Any]
    instruction: str
    episode_s: float
    reset_s: float
    tasks_recorded: int = 1
    on_hardware = True
    _started: list[Any] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Control rate, Hz (the robot config's)."""
        return float(self.spec.fps)

    @property
    def description(self) -> str:
        """'the arm (follower on /dev/ttyACM0; cameras front, wrist)' for the banner line."""
        ports = ", ".join(f"{b} on {self.spec.buses[b].port}" for b in self.spec.follower_buses())
        return f"the {self.spec.name} ({ports}; cameras {', '.join(self.cameras) or 'none'})"

    @property
    def calibration_id(self) -> str:
        """The robot calibration's id, which recorded episodes carry."""
        return str(self.robot.calibration.id)

    @property
    def camera_shapes(self) -> dict[str, tuple[int, int]]:
        """{role: (height, width)} the cameras deliver, pixels (the policy resizes them)."""
        return {role: hw for role, hw in self.spec.camera_shapes().items() if role in self.cameras}

    @property
    def joint_names(self) -> list[str]:
        """Joint names in state/action order."""
        return list(self.spec.joint_names)

    def connect(self) -> None:
        """Start the cameras, then the servos (torque on, holding the present pose). A
        failure stops what started; the error is the line the operator sees."""
        try:
            for camera in self.cameras.values():
                camera.start()
                self._started.append(camera)
            self.robot.connect()
        except BaseException:
            self.disconnect()
            raise

    def disconnect(self) -> None:
        """Torque off and close the buses, then stop the cameras."""
        try:
            self.robot.disconnect()
        finally:
            for camera in reversed(self._started):
                camera.stop()
            self._started.clear()

    def start_episode(self, seed: int, episode: int, say: Say, waiting: Waiting) -> None:
        """Hold the pose for the reset time while the operator sets the scene (not before the
        first episode: the warm-up gave that time), asking `waiting()` every 0.1 s whether
        to stop early."""
        if episode == 0 or self.reset_s <= 0:
            return
        self.robot.hold()
        end = time.monotonic() + self.reset_s
        say(f"reset the scene: episode {episode + 1} starts in {self.reset_s:g} s (the robot holds)")
        while (left := end - time.monotonic()) > 0 and not waiting():
            time.sleep(min(0.1, left))

    def success_check(self) -> None:
        """No detector on the robot: success is the operator's to judge."""
        return None


def twin_target(args: argparse.Namespace, bundle: Any, base: Any) -> TwinTarget:
    """Robot, task and render size from the checkpoint's training store (flags override),
    checked against the policy's features. Raises CheckpointError / SimError in one line."""
    from pathlib import Path

    from shallowpi import config
    from shallowpi.evaluate.sim_checkpoint import check_fits, sim_target
    from shallowpi.policy.policy import Features
    from shallowpi.robots.sim.twin import TwinSpec

    store = bundle.checkpoint_metadata.get("dataset")
    target = sim_target(Path(store) if store else None, args.robot, args.task, None)
    cfg = config.compose([f"robot={target.robot}", *_flag_overrides(args, robot=False)])
    width, height = target.size or config.parse_size(cfg.record.sim_size, "record.sim_size")
    spec = TwinSpec.from_config(cfg.robot, render_width=width, render_height=height)
    check_fits(Features(**bundle.features), spec, target.fps)
    task = target.tasks[0]
    seconds = task.seconds if args.episode_time_s is None else min(task.seconds, args.episode_time_s)
    if args.sim == "stack":
        from shallowpi.robots.sim.stack import StackSimRobot
        from shallowpi.robots.spec import RobotSpec

        robot = StackSimRobot(RobotSpec.from_config(cfg.robot), spec)
    else:
        from shallowpi.robots.sim.direct import DirectSimRobot

        robot = DirectSimRobot(spec, cameras=bundle.cameras)
    return TwinTarget(robot, cfg, spec, task, len(target.tasks), seconds)


def robot_target(args: argparse.Namespace, bundle: Any, camera_devices: Callable[[], list[Any]] | None = None
                 ) -> RobotTarget:
    """The robot of `--robot` (or the config's default) on its configured ports, with the
    cameras the policy reads. `camera_devices` lists RealSense devices (default: USB; tests
    pass pyrealsense2 software devices). Raises ConfigError (no --task, a policy that does
    not fit the robot) or the drivers' errors (a camera not found), each one line. Imports
    neither torch nor MuJoCo: this runs on the robot's computer."""
    from shallowpi import config
    from shallowpi.hardware.realsense import connected_devices
    from shallowpi.robots.calibration import UNCALIBRATED, load_calibration
    from shallowpi.robots.cameras import realsense_cameras
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.robots.spec import RobotSpec

    if not args.task:
        raise ConfigError("on the robot, pass the instruction to give the policy: --task \"put the cube in the bowl\"")
    cfg = config.compose(_flag_overrides(args, robot=True))
    spec = RobotSpec.from_config(cfg.robot)
    _check_fits_robot(bundle.features, spec)
    calibration = load_calibration(spec.name)
    if calibration.id == UNCALIBRATED:
        print(f"warning: robot '{spec.name}' is not calibrated: joint positions are raw servo angles "
              f"about the centre tick; run `platform calibrate --robot {spec.name}` first", flush=True)
    # Only the cameras the policy reads: serials are then assigned among fewer roles.
    reads = dataclasses.replace(spec, cameras=tuple(c for c in spec.cameras if c.role in bundle.cameras))
    cameras = realsense_cameras(reads, devices=camera_devices or connected_devices)
    robot = DynamixelRobot(spec, calibration, cameras=cameras)
    episode_s = float(args.episode_time_s if args.episode_time_s is not None else cfg.record.episode_time_s)
    reset_s = float(args.reset_time_s if args.reset_time_s is not None else cfg.record.reset_time_s)
    return RobotTarget(robot, cfg, spec, cameras, args.task, episode_s, reset_s)


def _check_fits_robot(features: dict[str, Any], spec: Any) -> None:
    """One line if the policy cannot drive this robot: its state/action sizes against the
    robot's joints, its cameras against the robot's camera roles."""
    joints = len(spec.joints)
    if (features["state_dim"], features["action_dim"]) != (joints, joints):
        raise ConfigError(
            f"the policy has state/action sizes {features['state_dim']}/{features['action_dim']} but robot "
            f"'{spec.name}' has {joints} joints; deploy it on the robot it was trained on (--robot NAME)"
        )
    roles = [c.role for c in spec.cameras]
    missing = [c for c in features["cameras"] if c not in roles]
    if missing:
        raise ConfigError(
            f"the policy reads camera(s) {missing} that robot '{spec.name}' lacks (it has {roles}); "
            f"add them under cameras: in configs/robot/{spec.name}.yaml"
        )


def _flag_overrides(args: argparse.Namespace, robot: bool) -> list[str]:
    """Hydra overrides from --jetson, --data-root, key=value arguments and (`robot`) --robot."""
    return overrides_from(argparse.Namespace(robot=args.robot if robot else None, jetson=args.jetson,
                                             data_root=args.data_root, overrides=args.overrides))
