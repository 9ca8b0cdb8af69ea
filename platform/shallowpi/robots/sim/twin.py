"""`SimTwin`: one robot's MuJoCo model, stepped on simulated time and rendered per camera role.

This is the seam everything simulated stands on. The direct robot (`--sim direct`) calls it
in-process; the emulated servo chain binds servos to its joints (`joint_positions()`,
`set_joint_goals()`), and software RealSense devices carry its `render()` output. Time only
advances in `step(dt)`, so a slow render slows an episode down but never changes it.

Joints and camera roles are those of the robot config (configs/robot/<name>.yaml), in its
order; the MJCF uses the same names, so the mapping is by name and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.errors import PlatformError
from shallowpi.robots.spec import JointSpec, RobotSpec

REPO_ROOT = Path(__file__).resolve().parents[4]
ROBOTS_DIR = REPO_ROOT / "robots"
# Renders up to this many pixels rasterize on one thread (see open_renderer).
SINGLE_THREAD_RASTER_PIXELS = 128 * 128


class SimError(PlatformError):
    """A twin that cannot be loaded or rendered, or a task or camera role it lacks."""


class PhysicsUnstable(SimError):
    """The simulation diverged (NaN or huge accelerations): MuJoCo reset the state to the
    model's load poses, so the scene is no longer the seed's."""


@dataclass(frozen=True)
class EffectorSpec:
    """An arm as scripted experts see it: the joints that move its grasp site, its gripper."""

    name: str
    site: str
    joints: tuple[str, ...]
    gripper: str
    fingers: tuple[str, ...]
    # Narrower ranges for the experts' IK than the joints allow, to keep one elbow branch.
    ik_ranges: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class TwinSpec:
    """A robot's twin: its joints, fps and camera roles are the robot's own (`RobotSpec`,
    robots/spec.py, read and checked once); the model, home pose, effectors and render
    size are the twin's (robots/<name>/twin.yaml)."""

    robot: str
    model_path: Path
    joints: tuple[JointSpec, ...]
    cameras: tuple[str, ...]
    fps: int
    home: Mapping[str, float]
    effectors: Mapping[str, EffectorSpec]
    render_width: int = 224
    render_height: int = 224
    depth: bool = False

    @property
    def joint_names(self) -> list[str]:
        """Joint names, in the robot config's order."""
        return [j.name for j in self.joints]

    @property
    def joint_kinds(self) -> list[str]:
        """Each joint's kind (revolute, linear, gripper), in `joint_names`' order."""
        return [j.kind for j in self.joints]

    @property
    def lower(self) -> np.ndarray:
        """Lower joint limits [J] float64, in joint units (rad, m, or gripper opening 0..1)."""
        return np.array([j.lower for j in self.joints])

    @property
    def upper(self) -> np.ndarray:
        """Upper joint limits [J] float64, in joint units (rad, m, or gripper opening 0..1)."""
        return np.array([j.upper for j in self.joints])

    @property
    def max_velocity(self) -> np.ndarray:
        """Joint velocity bounds [J] float64, joint units per second."""
        return np.array([j.max_velocity for j in self.joints])

    @classmethod
    def from_config(
        cls,
        robot_cfg: Mapping[str, Any],
        render_width: int | None = None,
        render_height: int | None = None,
        depth: bool = False,
        robots_dir: Path = ROBOTS_DIR,
    ) -> TwinSpec:
        """The twin of a robot config (`cfg.robot`), checked as the robot's own
        (`RobotSpec.from_config`; raises ConfigError); see `from_robot`."""
        return cls.from_robot(RobotSpec.from_config(robot_cfg), render_width, render_height, depth, robots_dir)

    @classmethod
    def from_robot(
        cls,
        spec: RobotSpec,
        render_width: int | None = None,
        render_height: int | None = None,
        depth: bool = False,
        robots_dir: Path = ROBOTS_DIR,
    ) -> TwinSpec:
        """The twin of `spec`; renders at the first camera's configured size unless
        `render_width/height` say otherwise (224x224 for fast policy evaluation).
        Raises SimError when the twin's files are missing."""
        import yaml

        folder = robots_dir / spec.name
        meta_path = folder / "twin.yaml"
        if not meta_path.is_file():
            raise SimError(f"robot '{spec.name}' has no twin: {meta_path} is missing")
        meta = yaml.safe_load(meta_path.read_text())
        model_path = folder / meta.get("model", "twin.xml")
        if not model_path.is_file():
            raise SimError(f"twin model file {model_path} is missing; restore it from git")
        first = spec.cameras[0] if spec.cameras else None
        effectors = {
            key: EffectorSpec(
                key,
                e["site"],
                tuple(e["joints"]),
                e["gripper"],
                tuple(e.get("fingers", ())),
                {j: (float(r[0]), float(r[1])) for j, r in (e.get("ik_ranges") or {}).items()},
            )
            for key, e in (meta.get("effectors") or {}).items()
        }
        return cls(
            robot=spec.name,
            model_path=model_path,
            joints=spec.joints,
            cameras=tuple(c.role for c in spec.cameras),
            fps=spec.fps,
            home={str(k): float(v) for k, v in (meta.get("home") or {}).items()},
            effectors=effectors,
            render_width=int(render_width or (first.width if first else 640)),
            render_height=int(render_height or (first.height if first else 480)),
            depth=depth,
        )


def check_gl_backend() -> None:
    """Pick EGL (CPU-capable, headless) unless the user chose a backend; explain failures."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"] == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")


def import_mujoco() -> Any:
    """The `mujoco` module, after `check_gl_backend()`. Raises SimError when MuJoCo is not
    installed or cannot start (e.g. an unknown MUJOCO_GL)."""
    check_gl_backend()
    try:
        import mujoco
    except ImportError as exc:
        raise SimError(f"MuJoCo is not importable ({exc}); pip install -e '.[sim]'") from None
    except RuntimeError as exc:  # e.g. an unknown MUJOCO_GL value
        raise SimError(
            f"MuJoCo cannot start: {exc}; use MUJOCO_GL=egl (headless, Debian packages libegl1 "
            "and libgl1-mesa-dri), osmesa (libosmesa6) or glfw (with a display)"
        ) from None
    return mujoco


@dataclass
class SimTwin:
    """A robot's MuJoCo twin. Joint vectors are in the robot config's joint order."""

    spec: TwinSpec
    _renderer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        mujoco = self._mj = import_mujoco()
        try:
            self.model = mujoco.MjModel.from_xml_path(str(self.spec.model_path))
        except ValueError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "parse error"
            raise SimError(f"twin model {self.spec.model_path} does not load: {first}") from None
        self.data = mujoco.MjData(self.model)
        self._check_contract()
        names = self.spec.joint_names
        self._qpos = np.array([self.model.joint(n).qposadr[0] for n in names])
        self._dof = np.array([self.model.joint(n).dofadr[0] for n in names])
        self._actuator = np.array([self.model.actuator(n).id for n in names])
        self._cameras = {role: self.model.camera(role).id for role in self.spec.cameras}
        self.model.vis.global_.offwidth = max(
            self.model.vis.global_.offwidth, self.spec.render_width
        )
        self.model.vis.global_.offheight = max(
            self.model.vis.global_.offheight, self.spec.render_height
        )
        self._clock = 0.0  # the time the caller asked for; data.time follows it in whole steps

    def _check_contract(self) -> None:
        # The config's joint names, ranges and camera roles are the contract; say which
        # part of the model breaks it rather than fail later with a KeyError.
        m = self.model
        joints = {m.joint(i).name for i in range(m.njnt)}
        actuators = {m.actuator(i).name for i in range(m.nu)}
        cameras = {m.camera(i).name for i in range(m.ncam)}
        where = self.spec.model_path
        for j in self.spec.joints:
            if j.name not in joints or j.name not in actuators:
                raise SimError(
                    f"twin {where} lacks joint or actuator '{j.name}' of the robot config"
                )
            low, high = m.joint(j.name).range
            if not (np.isclose(low, j.lower) and np.isclose(high, j.upper)):
                raise SimError(
                    f"twin {where}: joint '{j.name}' range [{low}, {high}] differs from the robot "
                    f"config's [{j.lower}, {j.upper}]"
                )
        for role in self.spec.cameras:
            if role not in cameras:
                raise SimError(
                    f"twin {where} has no camera '{role}' (camera roles of the robot config)"
                )

    # -- state ---------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """Simulated time (s): `data.time`, a whole number of physics steps."""
        return float(self.data.time)

    def joint_positions(self) -> np.ndarray:
        """Joint positions [J] float64 (a copy), in joint units."""
        return self.data.qpos[self._qpos].copy()

    def joint_velocities(self) -> np.ndarray:
        """Joint velocities [J] float64 (a copy), joint units per second."""
        return self.data.qvel[self._dof].copy()

    def joint_goals(self) -> np.ndarray:
        """The actuators' position goals [J] float64 (a copy)."""
        return self.data.ctrl[self._actuator].copy()

    def set_joint_goals(self, goals: Sequence[float] | np.ndarray) -> None:
        """Position goals for every joint, clipped to the joint ranges (the actuators' ctrl)."""
        goals = np.asarray(goals, dtype=np.float64)
        if goals.shape != (len(self._actuator),):
            raise SimError(
                f"{self.spec.robot}: expected {len(self._actuator)} joint goals, got shape {goals.shape}"
            )
        self.data.ctrl[self._actuator] = np.clip(goals, self.spec.lower, self.spec.upper)

    def step(self, dt: float) -> None:
        """Advance simulated time by `dt`. Physics steps are whole, so each call takes as
        many as keep the twin's clock on the sum of the `dt`s (1/30 s is 16 or 17 steps
        of 2 ms), rather than drifting by a rounding error every tick. Raises PhysicsUnstable
        when the simulation diverged (until the next `reset`)."""
        self._clock += dt
        n = round((self._clock - self.data.time) / self.model.opt.timestep)
        if n > 0:
            self._mj.mj_step(self.model, self.data, nstep=n)
            # MuJoCo answers a diverging state by resetting it to the load poses and time 0
            # with a warning: the seed's scene is gone, and the next step would run every
            # step since. Raised instead (an episode counts it as a failure).
            warnings = self._mj.mjtWarning
            for kind in (warnings.mjWARN_BADQACC, warnings.mjWARN_BADQVEL, warnings.mjWARN_BADQPOS):
                if self.data.warning[kind].number:
                    raise PhysicsUnstable(f"{self.spec.robot}: the simulation diverged ({kind.name}) at "
                                          f"{self._clock:.2f} s and MuJoCo reset it")

    def reset(self, seed: int | None = None, place_objects: Any = None) -> None:
        """Home pose, goals at home, time zero; `place_objects(twin, rng)` sets the scene."""
        mujoco = self._mj
        mujoco.mj_resetData(self.model, self.data)
        home = self.home_vector()
        self.data.qpos[self._qpos] = home
        self.data.ctrl[self._actuator] = home
        for effector in self.spec.effectors.values():
            self._couple_fingers(effector, home[self.spec.joint_names.index(effector.gripper)])
        if place_objects is not None:
            place_objects(self, np.random.default_rng(seed))
        mujoco.mj_forward(self.model, self.data)
        self._clock = 0.0

    def home_vector(self) -> np.ndarray:
        """The home pose [J] from twin.yaml's `home`; a joint it does not name is at 0."""
        return np.array([self.spec.home.get(n, 0.0) for n in self.spec.joint_names])

    def _couple_fingers(self, effector: EffectorSpec, opening: float) -> None:
        # Fingers start where the equality constraint wants them (finger = 0.04 * opening).
        for finger in effector.fingers:
            self.data.qpos[self.model.joint(finger).qposadr[0]] = 0.04 * opening

    # -- objects -------------------------------------------------------------------------
    def body_pose(self, body: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and 3x3 rotation of a body."""
        b = self.data.body(body)
        return b.xpos.copy(), b.xmat.reshape(3, 3).copy()

    def set_free_body(self, body: str, pos: Sequence[float], yaw: float = 0.0) -> None:
        """Put a free body at `pos` (world x, y, z in m), turned `yaw` rad about z, at rest;
        its pose reads back after the next `mj_forward` or step."""
        joint = self.model.body(body).jntadr[0]
        adr = self.model.jnt_qposadr[joint]
        dof = self.model.jnt_dofadr[joint]
        self.data.qpos[adr : adr + 3] = pos
        self.data.qpos[adr + 3 : adr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[dof : dof + 6] = 0.0

    def site_pose(self, site: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and 3x3 rotation of a site."""
        s = self.data.site(site)
        return s.xpos.copy(), s.xmat.reshape(3, 3).copy()

    def touching(self, geoms_a: Sequence[str], body_b: str) -> bool:
        """Whether any of `geoms_a` is in contact with any geom of `body_b`."""
        ids = {self.model.geom(g).id for g in geoms_a}
        body = self.model.body(body_b).id
        for c in self.data.contact[: self.data.ncon]:
            g1, g2 = int(c.geom1), int(c.geom2)
            if (g1 in ids and self.model.geom_bodyid[g2] == body) or (
                g2 in ids and self.model.geom_bodyid[g1] == body
            ):
                return True
        return False

    def arm_touching(self, effector: str, body_b: str) -> bool:
        """Whether any geom of `effector`'s arm touches any geom of `body_b`: the bodies
        from its first joint's down (links, wrist, palm, fingers), not its fingers only."""
        model = self.model
        root = int(model.jnt_bodyid[model.joint(self.spec.effectors[effector].joints[0]).id])
        arm = set()
        for body in range(model.nbody):
            walk = body
            while walk not in (root, 0):
                walk = int(model.body_parentid[walk])
            if walk == root:
                arm.add(body)
        target = model.body(body_b).id
        for c in self.data.contact[: self.data.ncon]:
            b1, b2 = int(model.geom_bodyid[c.geom1]), int(model.geom_bodyid[c.geom2])
            if (b1 in arm and b2 == target) or (b2 in arm and b1 == target):
                return True
        return False

    # -- rendering -----------------------------------------------------------------------
    def render(self, role: str) -> np.ndarray:
        """RGB uint8 HxWx3 from the camera of this role, at the spec's render size."""
        camera = self._camera(role)
        renderer = self._get_renderer()
        renderer.update_scene(self.data, camera=camera)
        return renderer.render()

    def render_depth(self, role: str) -> np.ndarray:
        """Depth in metres (float32 HxW) from the camera of this role."""
        camera = self._camera(role)
        renderer = self._get_renderer()
        renderer.enable_depth_rendering()
        try:
            renderer.update_scene(self.data, camera=camera)
            return renderer.render().astype(np.float32)
        finally:
            renderer.disable_depth_rendering()

    def _camera(self, role: str) -> int:
        if role not in self._cameras:
            raise SimError(
                f"unknown camera role '{role}' for {self.spec.robot}; roles: {', '.join(self._cameras)}"
            )
        return self._cameras[role]

    def _get_renderer(self) -> Any:
        if self._renderer is None:
            self._renderer = open_renderer(
                self._mj, self.model, self.spec.render_height, self.spec.render_width
            )
        return self._renderer

    def close(self) -> None:
        """Free the renderer, if one was opened (a later render opens a new one)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


def open_renderer(mujoco: Any, model: Any, height: int, width: int) -> Any:
    """A `mujoco.Renderer` of `width` x `height` pixels. Raises SimError, naming the packages
    or MUJOCO_GL value to try, when the GL backend cannot start.

    Small renders rasterize on the calling thread (Mesa's LP_NUM_THREADS=0, unless set):
    at the policies' 64x64 the software rasterizer's worker threads cost more than they
    save (1.42 -> 1.19 ms a camera on the arm, 1.92 -> 1.62 on the bimanual, the same
    pixels) and take the core the recorder's writer or a second process needs; at 640x480
    they save a third. Mesa reads it once, when the first context opens.
    """
    if width * height <= SINGLE_THREAD_RASTER_PIXELS:
        os.environ.setdefault("LP_NUM_THREADS", "0")
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as exc:
        backend = os.environ.get("MUJOCO_GL", "")
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if backend == "egl":
            hint = (
                "install the Debian packages libegl1 and libgl1-mesa-dri (EGL on the CPU via Mesa), "
                "or set MUJOCO_GL=osmesa (libosmesa6) or MUJOCO_GL=glfw with a display"
            )
        else:
            hint = "set MUJOCO_GL=egl (Debian packages libegl1, libgl1-mesa-dri) for headless rendering"
        raise SimError(
            f"cannot render with MUJOCO_GL={backend or 'default'} ({text}); {hint}"
        ) from None
