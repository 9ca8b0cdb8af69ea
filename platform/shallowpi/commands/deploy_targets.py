"""Where `platform deploy` runs its episodes: the robot's MuJoCo twin, or the robot itself.

Both hand the executor a `Robot` (robots/base.py) and say how an episode starts and whether
it succeeded:

- `TwinTarget` (`--sim direct|stack`): robot, task and render size from the checkpoint's
  training store, as `platform eval --sim`; each episode resets the scene from its seed and
  the task's detector judges success.
- `RobotTarget` (no `--sim`): `DynamixelRobot` on the config's follower buses with the
  RealSense cameras the policy reads, the robot's calibration, wall-clock ticks. Before
  every episode, the first included, the robot holds its pose for `--reset-time-s` while
  the operator sets the scene; success is the operator's to judge (None: review the
  episodes `--record` keeps). Refused before any port opens: a policy whose sizes or
  cameras are not the robot's, a training store recorded at another rate, and (unless
  `--allow-uncalibrated`) a robot without a calibration file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shallowpi.cli import overrides_from
from shallowpi.errors import ConfigError, PlatformError
from shallowpi.policy.fit import (
    aspect_mismatch,
    calibration_mismatch,
    missing_cameras,
    rate_mismatch,
    size_mismatch,
    trained_calibrations,
    trained_camera_shapes,
    trained_rate,
)

# Called every 0.1 s while the robot holds before an episode, with the hold's length and the
# seconds left; True: stop waiting (a stop or e-stop came).
Waiting = Callable[[float, float], bool]


class _SpecFacts:
    """What both targets read off their `spec` (a TwinSpec or a RobotSpec): the control
    rate and the joints."""

    spec: Any

    @property
    def fps(self) -> float:
        """Control rate, Hz (the robot config's; the twin's is checked against the training
        store's)."""
        return float(self.spec.fps)

    @property
    def joint_names(self) -> list[str]:
        """Joint names in state/action order."""
        return list(self.spec.joint_names)

    @property
    def joint_kinds(self) -> list[str]:
        """Each joint's kind (revolute, linear, gripper), in `joint_names`' order."""
        return list(self.spec.joint_kinds)


@dataclass
class TwinTarget(_SpecFacts):
    """The twin: `robot` is a DirectSimRobot or StackSimRobot (not connected yet); `task`
    a robots/sim task; `spec` the TwinSpec (render size = the policy's training size)."""

    robot: Any
    cfg: Any
    spec: Any
    task: Any
    episode_s: float
    image_codec: Any = None  # the training store's frame codec (numcodecs), None without the store
    on_hardware = False

    @property
    def instruction(self) -> str:
        """The text the policy is told."""
        return str(self.task.instruction)

    @property
    def task_name(self) -> str:
        """The twin task run, e.g. 'cube_in_bowl' (--json's "task")."""
        return str(self.task.name)

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

    def connect(self) -> None:
        """Start the twin (and, for `stack`, its emulated servos and cameras)."""
        self.robot.connect()

    def disconnect(self, as_found: bool = False, fault: BaseException | None = None) -> None:
        """Stop what `connect` started (`as_found`, `fault`: for the robot's; the twin has no
        servos to leave as found)."""
        self.robot.disconnect()

    def prepare(self, seed: int) -> None:
        """Before the warm-up: the first episode's scene, so the warm-up sees a real frame."""
        self.robot.reset(seed, self.task)

    def start_episode(self, seed: int, waiting: Waiting) -> None:
        """Reset the scene from `seed` (the same seed, the same scene as `eval --sim`)."""
        self.robot.reset(seed, self.task)

    def success_check(self) -> Callable[[], bool]:
        """The task's success detector on the twin's state."""
        return lambda: bool(self.task.success(self.robot.twin))


@dataclass
class RobotTarget(_SpecFacts):
    """The robot itself: `robot` a DynamixelRobot (not connected), `cameras` the RealSense
    cameras it reads (started by `connect`), `spec` its RobotSpec."""

    robot: Any
    cfg: Any
    spec: Any
    cameras: dict[str, Any]
    instruction: str
    episode_s: float
    reset_s: float
    on_hardware = True
    image_codec = None  # live frames go to the policy as they are (the Executor says why)
    _started: list[Any] = field(default_factory=list)

    @property
    def task_name(self) -> None:
        """No task name on the robot: --task is the instruction itself."""
        return None

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

    def connect(self) -> None:
        """Start the cameras, then the servos (torque on, holding the present pose). A
        failure stops what started; the error is the line the operator sees."""
        try:
            for camera in self.cameras.values():
                self._started.append(camera)  # before start(): one that fails half-open is stopped too
                camera.start()
            self.robot.connect()
        except BaseException:
            self.disconnect()
            raise

    def disconnect(self, as_found: bool = False, fault: BaseException | None = None) -> None:
        """Torque off and close the buses, then stop the cameras. `as_found`: the run failed
        before the robot first moved (a backend that would not warm up): each bus is closed
        as connect found it, an arm a killed run left holding still holding (said), unless
        `fault` is its bus's (DynamixelRobot.put_back)."""
        try:
            if as_found:
                self.robot.put_back(fault if isinstance(fault, PlatformError) else None)
            self.robot.disconnect()
        finally:
            for camera in reversed(self._started):
                camera.stop()
            self._started.clear()

    def prepare(self, seed: int) -> None:
        """Before the warm-up: nothing to set; the robot holds the pose it was found in."""

    def start_episode(self, seed: int, waiting: Waiting) -> None:
        """Wait the reset time while the operator sets the scene, the first episode too (the
        policy never starts straight out of the warm-up or the homing to the
        demonstrations' start pose, Executor.go_to_start), asking `waiting(reset_s,
        seconds_left)` every 0.1 s whether to stop instead. The robot holds meanwhile: the
        caller has it hold its measured pose first (Executor.hold_measured, which handles a
        failed hold as a fault), not the last command, so a gripper still closed on an
        object (no start pose recorded, or deploy.start_speed null) lets go of its squeeze
        for the hands taking it out."""
        end = time.monotonic() + self.reset_s
        while (left := end - time.monotonic()) > 0 and not waiting(self.reset_s, left):
            time.sleep(min(0.1, left))

    def success_check(self) -> None:
        """No detector on the robot: success is the operator's to judge."""
        return None


def twin_target(args: argparse.Namespace, bundle: Any) -> TwinTarget:
    """Robot, task, render size and image codec from the checkpoint's training store, or
    the store `args.twin_store` (--dataset) when given (flags override), checked against the
    policy's features. Raises CheckpointError / SimError in one line."""
    from shallowpi import config
    from shallowpi.evaluate.sim_checkpoint import check_fits, sim_target
    from shallowpi.policy.policy import Features
    from shallowpi.robots.sim.twin import TwinSpec

    store = getattr(args, "twin_store", None) or bundle.checkpoint_metadata.get("dataset")
    target = sim_target(Path(store) if store else None, args.robot, args.task, None,
                        input_size=bundle.config["vision"]["image_size"])
    cfg = config.compose([f"robot={target.robot}", *_flag_overrides(args, robot=False)])
    assert target.size is not None  # the flag's, the store's, else the policy's input size
    if note := target.not_as_trained_note(str(bundle.path), Path(store) if store else None):
        print(note, flush=True)
    width, height = target.size
    spec = TwinSpec.from_config(cfg.robot, render_width=width, render_height=height)
    check_fits(Features(**bundle.features), spec, trained_rate(bundle.checkpoint_metadata) or target.fps)
    check_joint_order(bundle.checkpoint_metadata, spec)
    task = target.tasks[0] if args.task else _trained_task(target, Path(store) if store else None, str(bundle.path))
    seconds = task.seconds if args.episode_time_s is None else min(task.seconds, args.episode_time_s)
    if args.sim == "stack":
        from shallowpi.robots.sim.stack import StackSimRobot
        from shallowpi.robots.spec import RobotSpec

        # The policy's cameras only, as direct renders them (and the robot's target opens
        # them): the store --record makes holds those.
        rendered = dataclasses.replace(spec, cameras=tuple(bundle.cameras))
        robot = StackSimRobot(RobotSpec.from_config(cfg.robot), rendered)
    else:
        from shallowpi.robots.sim.direct import DirectSimRobot

        robot = DirectSimRobot(spec, cameras=bundle.cameras)
    codec = None
    if target.image_codec is not None:
        from shallowpi.data.codecs import image_codec

        codec = image_codec(*target.image_codec)
    return TwinTarget(robot, cfg, spec, task, seconds, codec)


def _trained_task(target: Any, store: Path | None, policy: str) -> Any:
    """Without --task: the first of the twin's tasks (its benchmark tasks, then its check
    tasks) whose instruction `store`, the training store (or --dataset), recorded, which
    the policy learned; said in a line with the store's own count of tasks. A store that is
    gone, names none or recorded none of the twin's: its first task, saying why. The twin's
    first task whatever the store held ran a policy trained on push_block_left alone on
    cube_in_bowl, saying "the store records 2 tasks". Raises StoreError for a store that
    cannot be read (sim_target read it already)."""
    from shallowpi.evaluate.sim_checkpoint import StoreFacts
    from shallowpi.robots.sim.tasks import make_tasks

    first = target.tasks[0]
    choose = "choose with --task"
    if store is None or not store.exists():
        why = f"the training store {store} is not here" if store else f"{policy} names no training store"
        print(f"running {first.name} ({first.instruction!r}), the {target.robot} twin's first task: {why} to say "
              f"which it learned ({choose})", flush=True)
        return first
    recorded = StoreFacts.read(store).tasks
    known = [t for t in make_tasks(target.robot, checks=True).values() if t.instruction in recorded or t.name in recorded]
    count = f"{len(recorded)} task{'s' if len(recorded) != 1 else ''}"
    if not known:
        shown = "; ".join(repr(t) for t in sorted(recorded)[:5]) or "none"
        print(f"store {store} records {count}, none of them the {target.robot} twin's ({shown}); running "
              f"{first.name} ({first.instruction!r}), its first ({choose})", flush=True)
        return first
    task = known[0]
    which = "the task it records" if len(recorded) == 1 else f"the first of them the {target.robot} twin has"
    print(f"store {store} records {count}; running {task.name} ({task.instruction!r}), {which} ({choose})",
          flush=True)
    return task


def robot_target(args: argparse.Namespace, bundle: Any, camera_devices: Callable[[], list[Any]] | None = None
                 ) -> RobotTarget:
    """The robot of `--robot` (or the config's default) on its configured ports, with the
    cameras the policy reads. `camera_devices` lists RealSense devices (default: USB; tests
    pass pyrealsense2 software devices). Raises ConfigError (no --task, a policy that does
    not fit the robot or its rate, an uncalibrated robot without --allow-uncalibrated) or
    the drivers' errors (a camera not found), each one line, before any port opens.
    Imports neither torch nor MuJoCo: this runs on the robot's computer."""
    from shallowpi import config
    from shallowpi.hardware.realsense import connected_devices
    from shallowpi.robots.calibration import load_calibration, require_calibration
    from shallowpi.robots.cameras import realsense_cameras
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.robots.spec import RobotSpec

    if not args.task:
        raise ConfigError("on the robot, pass the instruction to give the policy: --task \"put the red cube in the bowl\"")
    cfg = config.compose(_flag_overrides(args, robot=True))
    spec = RobotSpec.from_config(cfg.robot)
    if (scale := getattr(args, "speed_scale", None)) is not None:
        spec = spec.with_speed_scale(scale)
        print(f"every joint's top speed x{scale:g} (--speed-scale): the policy's commands, the seams' ramps "
              "and the way to the start pose alike", flush=True)
    _check_fits_robot(bundle.features, spec)
    check_joint_order(bundle.checkpoint_metadata, spec)
    calibration = load_calibration(spec.name)
    if (warning := require_calibration(calibration, allow_uncalibrated=args.allow_uncalibrated)) is not None:
        print(f"warning: {warning}", flush=True)
    trained_under = trained_calibrations(bundle.checkpoint_metadata)
    if trained_under is not None and (problem := calibration_mismatch(trained_under, calibration.id, f"robot '{spec.name}'")):
        if not args.allow_calibration_change:
            raise ConfigError(f"{problem}: joint positions would be off by however far the zeros moved; record "
                              "under this calibration and retrain, or pass --allow-calibration-change if the zeros "
                              "did not move")
        print(f"warning: {problem} (--allow-calibration-change)", flush=True)
    _check_against_training(bundle, spec, args.task, allow_aspect_change=args.allow_aspect_change)
    cameras = realsense_cameras(spec, devices=camera_devices or connected_devices, roles=bundle.cameras)
    # A camera quiet for a few of the watchdog's hold limits has stopped: end the run then,
    # never before the watchdog has held the robot on the stale frame.
    robot = DynamixelRobot(spec, calibration, cameras=cameras,
                           camera_timeout_s=camera_timeout_for(float(cfg.deploy.max_frame_age_s)))
    episode_s = _seconds(args.episode_time_s, cfg.record.episode_time_s, "episode_time_s", positive=True)
    reset_s = _seconds(args.reset_time_s, cfg.record.reset_time_s, "reset_time_s", positive=False)
    return RobotTarget(robot, cfg, spec, cameras, args.task, episode_s, reset_s)


def _seconds(flag: Any, setting: Any, name: str, positive: bool) -> float:
    """The `--{name}` flag's value, else record.{name}'s, in seconds: finite and >= 0 (> 0
    with `positive`). ConfigError otherwise, naming the setting (a countdown of inf s froze
    the dashboard, and nan passes every comparison)."""
    value = float(flag if flag is not None else setting)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        where = f"--{name.replace('_', '-')}" if flag is not None else f"record.{name}"
        raise ConfigError(f"{where} must be a finite number of seconds {'> 0' if positive else '>= 0'}, got {value:g}")
    return value


def camera_timeout_for(max_frame_age_s: float) -> float:
    """The robot's camera timeout [s] under an executor that holds on frames older than
    `max_frame_age_s`: four times that, at least a second."""
    return max(1.0, 4.0 * max_frame_age_s)


def _check_against_training(bundle: Any, spec: Any, instruction: str, allow_aspect_change: bool = False) -> None:
    """The rate the policy's demonstrations were recorded at must be the robot's (a chunk
    recorded at 15 Hz played at 30 Hz runs twice as fast), and each camera's aspect ratio
    the training frames' (the policy letterboxes frames to a square: another aspect moves
    the black bars and rescales the scene; `allow_aspect_change`: said, and run), and the
    instruction one the policy reads whole (not cut, no word outside a word vocabulary): a
    ConfigError. The checkpoint records the rate and shapes; older ones are checked against
    their store when this machine has it, which also says in a line when it never recorded
    the instruction."""
    from shallowpi.data.store import EpisodeStore
    from shallowpi.deploy.preprocess import TextTokens

    robot = f"robot '{spec.name}'"
    metadata = bundle.checkpoint_metadata
    trained, shapes = trained_rate(metadata), trained_camera_shapes(metadata)
    if trained is not None and (problem := rate_mismatch([trained], spec.fps, robot)):
        raise ConfigError(f"{problem}; pass robot.fps={trained:g} to match")
    recorded = metadata.get("dataset")
    if recorded and Path(recorded).is_dir():
        with EpisodeStore.open(recorded) as store:
            episodes = store.episodes
            rates = sorted({float(e.fps) for e in episodes})
            tasks = sorted({e.task for e in episodes})
            shapes = shapes or {key.removeprefix("observation.images."): feature.shape[:2]
                                for key, feature in store.features.items() if key.startswith("observation.images.")}
        if trained is None and (problem := rate_mismatch(rates, spec.fps, robot)):
            raise ConfigError(f"{problem}; pass robot.fps=RATE to match")
        if tasks and instruction not in tasks:
            print(f"note: the training store never recorded the instruction {instruction!r}; it holds "
                  + "; ".join(repr(t) for t in tasks[:5]), flush=True)
    elif trained is None or shapes is None:
        unchecked = " and ".join(what for what, known in ((f"frame rate ({spec.fps} Hz)", trained), ("camera shapes", shapes))
                                 if known is None)
        print(f"the policy's training store is not on this machine and its checkpoint predates the record: its "
              f"{unchecked} are not checked against the robot's", flush=True)
    side = int(bundle.config["vision"]["image_size"])
    if shapes and (problem := aspect_mismatch(shapes, spec.camera_shapes(), robot, side)):
        if not allow_aspect_change:
            raise ConfigError(f"{problem}; set the camera's width and height (robot.cameras.ROLE.width=W "
                              "robot.cameras.ROLE.height=H) to a mode of the training frames' aspect, or pass "
                              "--allow-aspect-change to run it on these pictures")
        print(f"warning: {problem} (--allow-aspect-change)", flush=True)
    # The instruction as the policy will read it: cut or with unknown words, refused now
    # rather than at the first chunk, with the servos powered.
    TextTokens.of(bundle)(instruction)


def check_joint_order(metadata: dict[str, str], spec: Any) -> None:
    """ConfigError (one line) when the policy was trained on joints other than the robot's,
    or on the same joints in another order: sizes alone would pass a permutation, and each
    action would drive the wrong servo. Checkpoints from before the names were recorded
    (no "joint_names" in their metadata, or a store without names) are not checked."""
    trained = [name.removesuffix(".pos") for name in json.loads(metadata.get("joint_names") or "[]")]  # lerobot's
    robot = list(spec.joint_names)
    if trained and trained != robot:
        raise ConfigError(f"the policy was trained on joints {trained}, robot '{spec.name}' has {robot} in this "
                          "order; deploy it on the robot (and joint order) it was trained on")


def _check_fits_robot(features: dict[str, Any], spec: Any) -> None:
    """One line if the policy cannot drive this robot (`policy/fit.py`): its state/action
    sizes against the robot's joints, its cameras against the robot's camera roles."""
    robot = f"robot '{spec.name}'"
    if problem := size_mismatch(features["state_dim"], features["action_dim"], len(spec.joints), robot):
        raise ConfigError(f"{problem}; deploy it on the robot it was trained on (--robot NAME)")
    if problem := missing_cameras(features["cameras"], [c.role for c in spec.cameras], robot):
        raise ConfigError(f"{problem}; add them under cameras: in configs/robot/{spec.name}.yaml")


def _flag_overrides(args: argparse.Namespace, robot: bool) -> list[str]:
    """Hydra overrides from --jetson, --data-root, key=value arguments and (`robot`) --robot."""
    return overrides_from(argparse.Namespace(robot=args.robot if robot else None, jetson=args.jetson,
                                             data_root=args.data_root, overrides=args.overrides))
