"""Assemble what a recording needs from the config: robot, teleoperator, scene and clock.

Three rigs, one loop:
- hardware: Dynamixel followers + leader arms + RealSense cameras, wall-clock ticks;
- `--sim direct`: the MuJoCo twin in-process, a scripted expert as the teleoperator,
  simulated time (a slow render slows the episode, it never drops a frame);
- `--sim stack`: the same twin behind emulated servo chains and software RealSense
  devices, driven by `DynamixelRobot`, so the recording exercises the real drivers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig

from shallowpi.data.features import Feature, robot_features
from shallowpi.errors import PlatformError
from shallowpi.record.clock import SimulatedClock, TickClock

log = logging.getLogger(__name__)


@dataclass
class Rig:
    """What a recording runs: robot, teleoperator (leader arms or an `ExpertScene`), dataset
    features, clock, task text and calibration id; the twin's scene, the cameras, the joint
    limits for the dashboard. `close()` stops what was started."""

    robot: Any
    teleop: Any
    features: dict[str, Feature]
    joint_names: list[str]
    clock: TickClock
    task_text: str
    calibration_id: str = ""
    scene: Any = None
    cameras: dict[str, Any] = field(default_factory=dict)
    joint_limits: tuple[list[float], list[float]] | None = None  # (lower, upper), for the dashboard
    _closers: list[Callable[[], None]] = field(default_factory=list)

    @property
    def camera_serials(self) -> dict[str, str]:
        """Serial number of the camera recording each role ({} for cameras without one):
        episodes carry it, so a camera swapped between roles or replaced shows (`camera_changes`)."""
        from shallowpi.robots.cameras import camera_serials

        return camera_serials(self.cameras)

    def close(self, as_found: bool = False) -> None:
        """Stop what was started, in reverse order; each is tried, failures logged.
        `as_found`: a start refused after the robot connected (no episode ran): a robot with
        `put_back` (DynamixelRobot) closes its buses as it found them, so an arm a killed run
        left holding is not dropped by a refusal."""
        if as_found and hasattr(self.robot, "put_back"):
            try:
                self.robot.put_back()
            except Exception as exc:  # the closers below still turn the rest off
                log.warning("closing the rig: %s", exc)
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # closing must reach every device
                log.warning("closing the rig: %s", exc)
        self._closers.clear()


def build_rig(cfg: DictConfig, sim: str | None, task: str, seed: int = 0,
              size: tuple[int, int] | None = None, realtime: bool = False) -> Rig:
    """The connected rig for `sim` ("direct", "stack", or None: the hardware). `seed`, `size`
    ((width, height) of the renders) and `realtime` are for the twin only; there `task` is a
    task name or instruction, on the hardware the text recorded."""
    if sim == "direct":
        return _direct_sim_rig(cfg, task, seed, size, realtime)
    if sim == "stack":
        return _stack_sim_rig(cfg, task, seed, size, realtime)
    return _hardware_rig(cfg, task)


class ExpertScene:
    """The twin's task around a scripted expert, one `Episode` (robots/sim/episode.py) per
    recorded episode: reset from `seed + episode` (a re-recorded episode gets its scene
    again), done when the expert's plan ends (plus a short settle), success judged by the
    task. The recorder's loop owns the ticks and the episode length. The seed goes into
    the episode's metadata."""

    def __init__(self, robot: Any, task: Any, seed: int, settle_s: float = 0.5, noise: Any = None) -> None:
        from shallowpi.robots.sim.episode import EpisodeRules

        self.robot, self.task, self.seed = robot, task, seed
        self.noise = noise  # a NoisyExecution (record/dart.py) around the robot, or None
        self.rules = EpisodeRules(seconds=math.inf, settle_s=settle_s)  # the recorder ends episodes
        self.episode: Any = None

    def reset(self, episode: int) -> None:
        """Begin recorded episode `episode`: the scene of seed `seed + episode`, a fresh scripted
        expert, and the noise (if any) reseeded with that seed."""
        from shallowpi.robots.sim.episode import Episode, ScriptedAgent

        self.episode = Episode.start(self.robot, self.task, ScriptedAgent(), self.seed + episode, self.rules)
        if self.noise is not None:
            self.noise.reset_noise(self.episode.seed)

    def read(self) -> np.ndarray:
        """The teleoperator's side: the expert's next goal (holds still before a reset)."""
        if self.episode is None:
            return self.robot.twin.joint_goals()
        return self.episode.next_goal(self.robot.observe)

    def done(self) -> bool:
        """Whether the episode is over: the expert's plan ended and the scene settled."""
        return self.episode is not None and self.episode.over()

    def success(self) -> bool:
        """The task's detector on the twin now."""
        return bool(self.task.success(self.robot.twin))

    def metadata(self) -> dict[str, Any]:
        """The episode's extra metadata: its scene `seed` (None before the first reset) and the
        DART noise it was recorded under (`sim_noise`, 0 for clean demonstrations): one store
        may hold each task at its own noise."""
        return {"seed": None if self.episode is None else self.episode.seed,
                "sim_noise": 0.0 if self.noise is None else self.noise.scale}


def camera_changes(store: Any, serials: dict[str, str]) -> str | None:
    """What changed in which camera records each role since `store`'s last episode that says
    (record --resume), as one warning, or None: a role now recorded by another serial (two
    roles' serials swapped in the config: the wrist view under "front" trains a policy on
    the wrong picture), or a camera replaced. Not an error: a replaced camera is a lab's
    everyday fix."""
    if not serials:  # no camera to compare (--no-cameras, the twin's): nothing can have changed
        return None
    # From the newest back, each episode's metadata read only once reached (a file each):
    # the last one usually says, and an old one unreadable is not read at all.
    said = (store.episode(i).extra.get("camera_serials") for i in reversed(range(len(store))))
    last = next((serials_then for serials_then in said if isinstance(serials_then, dict)), None)
    if last is None:
        return None
    changed = [f"'{role}' is {serials[role]}, was {last[role]}" for role in sorted(serials)
               if role in last and last[role] != serials[role]]
    if not changed:
        return None
    swapped = any(serials[role] in last.values() for role in serials if role in last and last[role] != serials[role])
    why = "cameras swapped between roles" if swapped else "a camera replaced"
    return (f"camera {'; '.join(changed)} in {store.path.name}'s last episode ({why}?): check each role's "
            "picture on the dashboard against robot.cameras.ROLE.serial before recording on")


def first_seed(store: Any | None, requested: int | None, episodes: int) -> int:
    """Seed of a simulated session's first episode, so that no two episodes of `store`
    (None: a store not made yet) share a scene and none is one of `eval --sim`'s held-out
    scenes (`EVAL_SEEDS`, robots/sim/episode.py): `requested` if given, else one past the
    largest seed in the store (episodes stored without a seed count as seeds 0..n-1, the
    default of the recorder that wrote them), moved past the held-out range when the session
    would reach into it. Raises `PlatformError` when a requested range repeats a stored seed
    or reaches into the held-out range."""
    from shallowpi.robots.sim.episode import EVAL_SEEDS

    stored = store.episodes if store is not None else []
    used = {int(e.extra["seed"]) for e in stored if e.extra.get("seed") is not None}
    unseeded = sum(1 for e in stored if e.extra.get("seed") is None)
    following = max([s + 1 for s in used] + [unseeded])
    if _reaches(following, episodes, EVAL_SEEDS):
        log.info("seeds %d..%d are eval --sim's held-out scenes: this session records from seed %d",
                 EVAL_SEEDS.start, EVAL_SEEDS.stop - 1, EVAL_SEEDS.stop)
        following = max(following, EVAL_SEEDS.stop)
    if requested is None:
        return following
    if _reaches(requested, episodes, EVAL_SEEDS):
        raise PlatformError(f"--seed {requested} with {episodes} episode(s) reaches seeds {EVAL_SEEDS.start}.."
                            f"{EVAL_SEEDS.stop - 1}, eval --sim's held-out scenes; drop --seed to continue "
                            f"from seed {following}")
    repeated = sorted(used & set(range(requested, requested + episodes)))
    if repeated:
        shown = ", ".join(map(str, repeated[:5])) + (", ..." if len(repeated) > 5 else "")
        raise PlatformError(f"--seed {requested}: {store.path.name} already holds the scenes of seed(s) {shown}; "
                            f"drop --seed to continue from seed {following}")
    return requested


def _reaches(first: int, episodes: int, seeds: range) -> bool:
    """Whether seeds first .. first + episodes - 1 include any of `seeds`."""
    return first < seeds.stop and first + episodes > seeds.start


def _sim_task_and_spec(cfg: DictConfig, task_name: str, size: tuple[int, int] | None) -> tuple[Any, Any]:
    """The task and the twin's spec, built from the robot's own (checked) `RobotSpec`."""
    from shallowpi.robots.sim.tasks import get_task, make_tasks
    from shallowpi.robots.sim.twin import TwinSpec
    from shallowpi.robots.spec import RobotSpec

    robot_name = cfg.robot.name
    tasks = make_tasks(robot_name)
    by_text = {t.instruction: name for name, t in tasks.items()}
    task = get_task(robot_name, by_text.get(task_name, task_name))
    width, height = size or (None, None)
    return task, TwinSpec.from_robot(RobotSpec.from_config(cfg.robot), render_width=width, render_height=height)


def _sim_rig(cfg: DictConfig, robot: Any, task: Any, spec: Any, seed: int, realtime: bool,
             cameras: dict[str, Any] | None = None) -> Rig:
    """The rig around a connected twin; the twin is disconnected if the rig fails to build
    (a bad record.sim_noise, say), as the hardware rig stops what it started."""
    try:
        noise = _dart_noise(cfg, robot, spec)
        scene = ExpertScene(robot, task, seed, noise=noise)
        shapes = {role: (spec.render_height, spec.render_width) for role in spec.cameras}
        features = robot_features(spec.joint_names, shapes, spec.joint_kinds)
        rig = Rig(robot=noise or robot, teleop=scene, features=features,
                  joint_names=list(spec.joint_names), clock=SimulatedClock(spec.fps, realtime=realtime),
                  task_text=task.instruction, calibration_id=f"sim-{cfg.robot.name}", scene=scene,
                  cameras=cameras or {},
                  joint_limits=(list(map(float, spec.lower)), list(map(float, spec.upper))))
    except BaseException:
        robot.disconnect()
        raise
    rig._closers.append(robot.disconnect)
    return rig


def _dart_noise(cfg: DictConfig, robot: Any, spec: Any) -> Any:
    """`record.sim_noise` > 0: the robot executes the expert's goals plus noise while the
    clean goals are recorded (record/dart.py); None when off."""
    scale = float(cfg.record.get("sim_noise", 0.0) or 0.0)
    if scale == 0.0:
        return None
    from shallowpi.record.dart import NoisyExecution

    grippers = [e.gripper for e in spec.effectors.values()]
    log.info("DART noise: %.3g of each joint's range, correlation time %.2g s", scale,
             cfg.record.get("sim_noise_tau_s", 0.5))
    return NoisyExecution(robot, spec.lower, spec.upper, spec.joint_names, scale,
                          float(cfg.record.get("sim_noise_tau_s", 0.5)), spec.fps, spec.max_velocity, quiet=grippers)


def _direct_sim_rig(cfg: DictConfig, task_name: str, seed: int, size: tuple[int, int] | None,
                    realtime: bool) -> Rig:
    from shallowpi.robots.sim.direct import DirectSimRobot

    task, spec = _sim_task_and_spec(cfg, task_name, size)
    robot = DirectSimRobot(spec)
    robot.connect()
    return _sim_rig(cfg, robot, task, spec, seed, realtime)


def _stack_sim_rig(cfg: DictConfig, task_name: str, seed: int, size: tuple[int, int] | None,
                   realtime: bool) -> Rig:
    """The twin behind emulated servo chains and software RealSenses, driven by
    `DynamixelRobot` (robots/sim/stack.py); the session also sees the RealSense drivers,
    so their dropped-frame counts land in each episode's record."""
    from shallowpi.robots.sim.stack import StackSimRobot
    from shallowpi.robots.spec import RobotSpec

    task, spec = _sim_task_and_spec(cfg, task_name, size)
    robot = StackSimRobot(RobotSpec.from_config(cfg.robot), spec)
    robot.connect()
    return _sim_rig(cfg, robot, task, spec, seed, realtime, cameras=dict(robot.cameras))


def _hardware_rig(cfg: DictConfig, task: str) -> Rig:
    from shallowpi.robots.calibration import UNCALIBRATED, load_calibration, require_calibration
    from shallowpi.robots.cameras import realsense_cameras
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.robots.spec import RobotSpec
    from shallowpi.teleop.jog import JoggedTeleop
    from shallowpi.teleop.leader import LeaderFollower

    spec = RobotSpec.from_config(cfg.robot)
    calibration = load_calibration(spec.name)
    # Before any port opens: the leader would drive the follower with no limit that means anything.
    if (warning := require_calibration(calibration, allow_uncalibrated=bool(cfg.record.allow_uncalibrated))):
        # Episodes carry this id for good: a later calibration cannot be resumed into the store.
        log.warning("%s; episodes are recorded as '%s'", warning, UNCALIBRATED)
    cameras = realsense_cameras(spec, allow_none=bool(cfg.record.get("allow_no_cameras", False)))
    robot = DynamixelRobot(spec, calibration, cameras=cameras)
    leaders = LeaderFollower(spec, calibration)
    teleop: Any = leaders
    if leaders.unled:
        limits = dict(zip(spec.joint_names, zip(robot.lower.tolist(), robot.upper.tolist())))  # act()'s, swept
        teleop = JoggedTeleop(leaders, leaders.unled, limits)
        log.info("robot %s: no leader drives %s: each holds its pose from connect, jogged between takes by the "
                 "dashboard's ], + and - keys", spec.name, ", ".join(j.name for j in leaders.unled))
    rig = Rig(robot=robot, teleop=teleop,
              features=robot_features(spec.joint_names,
                                      {role: hw for role, hw in spec.camera_shapes().items() if role in cameras},
                                      spec.joint_kinds),
              joint_names=list(spec.joint_names), clock=TickClock(spec.fps), task_text=task,
              calibration_id=calibration.id, cameras=cameras,
              joint_limits=(list(map(float, robot.lower)), list(map(float, robot.upper))))  # act()'s, swept
    try:
        for camera in cameras.values():
            camera.start()
            rig._closers.append(camera.stop)
        # The leaders first (torque off, nothing to drop): an unplugged leader adapter then
        # stops the start before the followers connect, and a follower a killed run left
        # holding is not switched off by the clean-up.
        teleop.connect()
        rig._closers.append(teleop.disconnect)
        robot.connect()
        rig._closers.append(robot.disconnect)
    except BaseException:
        rig.close()  # what started must stop: the error is the one line the operator sees
        raise
    return rig
