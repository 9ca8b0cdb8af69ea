"""Language-described tabletop tasks for the twins: object placement from a seed, and a
success detector. How to solve each is the scripted expert's business (robots/sim/experts.py).

`make_tasks(robot)` is the one table of tasks: task name -> task, fresh objects each call.
A task's `instruction` is the text recorded with each episode (the policy's language
input). Besides a robot's benchmark tasks there are check tasks (`checks=True`: the arm's
easy `reach_cube`, for the CI's closed-loop learning test), evaluated only when named, and
shared scenes (`shared=True`: one scene per seed in which every task is doable, for
checking that a policy does what it is told).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from shallowpi.robots.sim.twin import SimError, SimTwin

Range = tuple[float, float]
OBJECTS = ("red_cube", "blue_block", "bowl")
# Footprint radii (m) used to keep sampled objects apart.
RADIUS = {"red_cube": 0.03, "blue_block": 0.04, "bowl": 0.085}
REST_Z = {"red_cube": 0.02, "blue_block": 0.02, "bowl": 0.0}


@dataclass(frozen=True)
class Region:
    """Where an object's centre may be placed: world `x` and `y` ranges (m)."""

    x: Range
    y: Range


@dataclass
class Task:
    """Base: places every scene object in its region (rejection-sampled so they do not
    overlap, random yaw) and remembers the start poses."""

    name: str
    instruction: str
    regions: Mapping[str, Region]
    seconds: float = 10.0  # episode time limit
    # A further condition on a draw (object name -> xy), besides the task's own `_clear`:
    # shared scenes (`make_tasks(..., shared=True)`) require every task's to hold.
    scene_rule: Callable[[dict[str, np.ndarray]], bool] | None = field(default=None, kw_only=True)
    start: dict[str, np.ndarray] = field(default_factory=dict, init=False)

    def place(self, twin: SimTwin, rng: np.random.Generator) -> None:
        """Place every object in its region, apart, at a random yaw, and keep the start positions
        in `start`. Raises SimError when 100 draws could not place them apart."""
        for _ in range(100):
            placed = self._sample(rng)
            if placed is not None:
                break
        else:
            raise SimError(
                f"task '{self.name}': object regions too small to place the objects apart"
            )
        for obj, xy in placed.items():
            twin.set_free_body(obj, [xy[0], xy[1], REST_Z[obj]], yaw=rng.uniform(-np.pi, np.pi))
        self.start = {obj: np.array([*xy, REST_Z[obj]]) for obj, xy in placed.items()}

    def _sample(self, rng: np.random.Generator) -> dict[str, np.ndarray] | None:
        # Largest first; a draw that boxes an object in is thrown away whole.
        placed: dict[str, np.ndarray] = {}
        for obj in sorted(OBJECTS, key=lambda o: -RADIUS[o]):
            region = self.regions[obj]
            for _ in range(50):
                xy = np.array([rng.uniform(*region.x), rng.uniform(*region.y)])
                if all(
                    np.linalg.norm(xy - p) > RADIUS[obj] + RADIUS[o] + 0.01
                    for o, p in placed.items()
                ):
                    placed[obj] = xy
                    break
            else:
                return None
        ok = self._clear(placed) and (self.scene_rule is None or self.scene_rule(placed))
        return placed if ok else None

    def _clear(self, placed: dict[str, np.ndarray]) -> bool:
        """Whether a draw leaves the task doable (e.g. nothing in a push's path)."""
        return True

    def success(self, twin: SimTwin) -> bool:
        """The task's success detector on the twin now (each task defines it)."""
        raise NotImplementedError


@dataclass
class PickPlace(Task):
    """Put `obj` in the bowl with the effector `effector`: the object rests inside the
    bowl's rim and no finger touches it."""

    obj: str = "red_cube"
    effector: str = "main"

    def success(self, twin: SimTwin) -> bool:
        """The bowl stands upright, the object's centre is within 6 cm (xy) of the bowl's and
        between 8 mm and 6 cm above its base (resting on its floor: 28 mm), and no finger
        touches it. The lower bound and the upright bowl keep a cube under a bowl that was
        knocked or set over it from counting."""
        pos, _ = twin.body_pose(self.obj)
        bowl, turn = twin.body_pose("bowl")
        upright = turn[2, 2] > 0.9
        inside = np.linalg.norm(pos[:2] - bowl[:2]) < 0.06 and bowl[2] + 0.008 < pos[2] < bowl[2] + 0.06
        return bool(upright and inside and not _held(twin, self.obj))


@dataclass
class Push(Task):
    """Push `obj` at least `distance` metres along `direction` (world xy) without lifting it."""

    obj: str = "blue_block"
    effector: str = "main"
    direction: tuple[float, float] = (0.0, 1.0)
    distance: float = 0.08

    def __post_init__(self) -> None:
        # success() and the clear-path check measure metres along it: a unit vector, or
        # (0, 2) would count every centimetre twice. SimError for a zero direction.
        norm = float(np.hypot(*self.direction))
        if not norm > 0:
            raise SimError(f"push direction must be a nonzero xy vector, got {self.direction}")
        self.direction = (self.direction[0] / norm, self.direction[1] / norm)

    def _clear(self, placed: dict[str, np.ndarray]) -> bool:
        # No other object near the pushed one's swept path, nor behind it where the
        # closed fingers come down (7.5 cm back).
        direction = np.asarray(self.direction, dtype=float)
        start = placed[self.obj]
        for obj, xy in placed.items():
            if obj == self.obj:
                continue
            along = float(np.dot(xy - start, direction))
            offset = xy - start
            across = abs(float(direction[0] * offset[1] - direction[1] * offset[0]))
            if (
                -0.1 - RADIUS[obj] < along < self.distance + 0.1 + RADIUS[obj]
                and across < RADIUS[obj] + 0.06
            ):
                return False
        return True

    def success(self, twin: SimTwin) -> bool:
        """The object's displacement from its start, dotted with `direction`, is at least
        `distance`, and it lies on the table: its centre 1.5-2.5 cm up (the 6 x 4 x 4 cm block lying
        down: 2 cm). A block knocked off the table (on the floor, 0.75 m down), carried,
        or stood on its end does not count."""
        pos, _ = twin.body_pose(self.obj)
        moved = float(np.dot(pos[:2] - self.start[self.obj][:2], self.direction))
        return bool(moved >= self.distance and 0.015 < pos[2] < 0.025)


@dataclass
class Reach(Task):
    """Bring effector `effector`'s open gripper to hover over `obj` and stay there."""

    obj: str = "red_cube"
    effector: str = "main"
    height: float = 0.07  # the grasp site's target height above the table (m)

    def success(self, twin: SimTwin) -> bool:
        """The grasp site is within 3 cm (xy) of the object's centre and within 3 cm of
        `height`, and the object was not knocked more than 2 cm from its start."""
        site, _ = twin.site_pose(twin.spec.effectors[self.effector].site)
        pos, _ = twin.body_pose(self.obj)
        over = np.linalg.norm(site[:2] - pos[:2]) < 0.03 and abs(site[2] - self.height) < 0.03
        return bool(over and np.linalg.norm(pos[:2] - self.start[self.obj][:2]) < 0.02)


@dataclass
class Handover(Task):
    """Pass `obj` from effector `giver` to `taker`: the taker holds it in the air, alone."""

    obj: str = "red_cube"
    giver: str = "left"
    taker: str = "right"

    def success(self, twin: SimTwin) -> bool:
        """The taker's first two fingers both touch the object, no part of the giver's arm
        does (palm and wrist included: fingers alone passed a cube still resting on the
        giver's palm), and its centre is more than 5 cm up."""
        pos, _ = twin.body_pose(self.obj)
        giver = twin.arm_touching(self.giver, self.obj)
        return bool(pinched(twin, self.taker, self.obj) and not giver and pos[2] > 0.05)


def pinched(twin: SimTwin, effector: str, obj: str) -> bool:
    """Whether `effector`'s first two fingers both touch `obj` (one touching finger only
    pushes it)."""
    fingers = twin.spec.effectors[effector].fingers
    return twin.touching([fingers[0]], obj) and twin.touching([fingers[1]], obj)


def _held(twin: SimTwin, obj: str) -> bool:
    fingers = [f for e in twin.spec.effectors.values() for f in e.fingers]
    return twin.touching(fingers, obj)


def _arm_regions(push: bool = False) -> dict[str, Region]:
    # The arm reaches 0.23-0.48 m from its pan axis (x = -0.36) with the gripper down.
    # For the push, the bowl stands out of the way, beyond the block's path.
    return {
        "red_cube": Region((-0.1, 0.05), (-0.15, 0.15)),
        "blue_block": Region((-0.1, 0.05), (-0.16, 0.04) if push else (-0.15, 0.15)),
        "bowl": Region((0.12, 0.2), (-0.15, 0.15))
        if push
        else Region((-0.08, 0.04), (-0.14, 0.14)),
    }


def _arm_shared_regions() -> dict[str, Region]:
    # The push (+y, 8 cm, fingers down 7.5 cm behind) needs ~0.19 m clear behind the block
    # for the bowl's 8.5 cm radius, and the bowl cannot stand far enough across the path
    # within reach: so the block starts near y = 0 and the bowl stands behind it (-y).
    return {
        "red_cube": Region((-0.1, 0.05), (-0.15, 0.15)),
        "blue_block": Region((-0.1, 0.05), (-0.02, 0.04)),
        "bowl": Region((-0.06, 0.02), (-0.24, -0.21)),
    }


def _bimanual_regions(cube: Region) -> dict[str, Region]:
    return {
        "red_cube": cube,
        "blue_block": Region((-0.05, 0.15), (0.12, 0.22)),
        "bowl": Region((0.02, 0.14), (-0.16, 0.0)),
    }


def _humanoid_regions(cube: Region) -> dict[str, Region]:
    return {
        "red_cube": cube,
        "blue_block": Region((-0.3, -0.18), (0.12, 0.22)),
        "bowl": Region((-0.36, -0.24), (-0.24, -0.12)),
    }


def make_tasks(robot: str, *, checks: bool = False, shared: bool = False) -> dict[str, Task]:
    """Fresh task objects for a robot (tasks keep per-episode start poses): its benchmark
    tasks, and with `checks` also the easy ones kept for testing the pipeline (the arm's
    `reach_cube`), which no default (eval's every task, a demo, a benchmark) includes.

    `shared`: every benchmark task draws the same scene for a seed, one in which each of them
    is doable, so a policy told one instruction could have done another (the language
    check: `platform eval --sim --scenes shared`). On the bimanual and humanoid twins the
    tasks differ only in the cube's region, which overlap: their shared scenes draw the cube
    from the union of the two (with each task's own region, the cube's place told the task
    apart without the instruction: most humanoid cube-in-bowl scenes had their cube where no
    handover scene puts one). The arm's own scenes do not allow both: a push scene puts the
    bowl out of reach, a cube-in-bowl scene may block the block's path. Its shared scenes
    (`_arm_shared_regions`) keep the bowl within reach but behind the block's push, and only
    draws that leave the push path clear.
    """
    tasks = _benchmark_tasks(robot)
    if shared and robot == "arm":
        regions = _arm_shared_regions()
        push = tasks["push_block_left"]
        tasks = {name: replace(task, regions=regions, scene_rule=push._clear) for name, task in tasks.items()}
    elif shared:
        cubes = [task.regions["red_cube"] for task in tasks.values()]
        union = Region((min(r.x[0] for r in cubes), max(r.x[1] for r in cubes)),
                       (min(r.y[0] for r in cubes), max(r.y[1] for r in cubes)))
        tasks = {name: replace(task, regions={**task.regions, "red_cube": union}) for name, task in tasks.items()}
    return {**tasks, **_check_tasks(robot)} if checks else tasks


def _check_tasks(robot: str) -> dict[str, Task]:
    # The arm's easy task for the CI's closed-loop test (tests/test_closed_loop_learning.py):
    # every object within 1 cm of its own spot (the yaws still random), so a few
    # demonstrations of one short reach teach it in a minute of CPU, and a policy that
    # learned nothing fails it. With the bowl and block anywhere, a tiny policy fitted the
    # demonstrations' scenes offline and turned back home in unseen ones.
    if robot != "arm":
        return {}
    regions = {
        "red_cube": Region((-0.03, -0.01), (-0.05, -0.03)),
        "blue_block": Region((0.12, 0.14), (0.08, 0.1)),
        "bowl": Region((0.13, 0.15), (-0.14, -0.12)),
    }
    return {"reach_cube": Reach("reach_cube", "reach over the red cube", regions, 4.0)}


def _benchmark_tasks(robot: str) -> dict[str, Task]:
    if robot == "arm":
        return {
            "cube_in_bowl": PickPlace(
                "cube_in_bowl", "put the red cube in the bowl", _arm_regions(), 15.0
            ),
            "push_block_left": Push(
                "push_block_left", "push the blue block to the left", _arm_regions(push=True), 15.0
            ),
        }
    if robot == "bimanual":
        return {
            "handover": Handover(
                "handover",
                "hand the red cube from the left arm to the right",
                _bimanual_regions(Region((-0.2, -0.1), (-0.12, 0.12))),
                20.0,
            ),
            "cube_in_bowl": PickPlace(
                "cube_in_bowl",
                "put the red cube in the bowl",
                _bimanual_regions(Region((-0.18, -0.08), (-0.12, 0.1))),
                15.0,
                effector="left",
            ),
        }
    if robot == "humanoid":
        return {
            "cube_in_bowl": PickPlace(
                "cube_in_bowl",
                "put the red cube in the bowl",
                _humanoid_regions(Region((-0.38, -0.24), (-0.06, 0.1))),
                15.0,
                effector="right",
            ),
            "handover": Handover(
                "handover",
                "hand the red cube from the left hand to the right",
                _humanoid_regions(Region((-0.38, -0.24), (0.06, 0.2))),
                20.0,
            ),
        }
    raise SimError(f"no tasks for robot '{robot}'; robots with a twin: arm, bimanual, humanoid")


TASK_ROBOTS = ("arm", "bimanual", "humanoid")


def get_task(robot: str, name: str) -> Task:
    """A fresh task `name` of `robot` (`make_tasks`, check tasks included); SimError for an
    unknown task or robot."""
    tasks = make_tasks(robot, checks=True)
    if name not in tasks:
        raise SimError(f"unknown task '{name}' for {robot}; tasks: {', '.join(tasks)}")
    return tasks[name]
