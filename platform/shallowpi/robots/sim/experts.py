"""Scripted experts for the simulation twin's tasks: twin knowledge that solves a task.

They live beside the twin because they are made of it: an expert reads the twin's true
object poses (it is privileged; a policy never is) and uses its IK. It plans a few
Cartesian waypoints for each gripper (hover, descend, close, lift, ...) and, every tick,
follows the straight line between them through damped-least-squares IK
(`robots/sim/ik.py`). `read()` returns goals for every joint in the robot config's order,
so the expert drives the follower exactly as a leader arm would (it is a `Teleoperator`,
teleop/base.py, by shape). A waypoint's target may
be a function of the twin, evaluated when the waypoint begins, so later moves aim at
where an object really is, not where it was at the start.

    expert = make_expert(twin, task)      # after twin.reset(seed, task.place)
    while not expert.done:
        robot.act(expert.read())

(`run_episode(robot, task, ScriptedAgent(), seed)` in robots/sim/episode.py does this with
the reset, the settling and the judging.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from shallowpi.robots.sim.ik import IKSolver, rotation_error, yaw_down
from shallowpi.robots.sim.tasks import Handover, PickPlace, Push, Reach, Task, pinched
from shallowpi.robots.sim.twin import SimError, SimTwin

Pose = tuple[np.ndarray, np.ndarray]  # world position, 3x3 rotation of the grasp site
Target = Pose | Callable[[SimTwin], Pose]

OPEN, CLOSED = 1.0, 0.0
HOVER_Z = 0.12  # grasp-site heights above the table (m)
GRASP_Z = 0.022
CARRY_Z = 0.16
RELEASE_Z = 0.045  # the held object's bottom ~1.5 cm above the bowl floor
# After the lift, an object whose centre is still below this is on the table: the grasp
# missed (the DART noise pushed the fingers off it, or it moved), and the expert tries again
# from where it lies, up to RETRIES times. The demonstrations then hold recoveries.
HELD_Z = 0.06
RETRIES = 2
# A taker's grasp the giver may let go of: both fingers on the object and its centre within
# these distances (m) of the grasp site along the site's x (across the fingers' closing
# direction) and z (the approach) axes; along y, the closing direction, both fingers
# touching centres it. Under DART noise, grasps that touched with both fingers but held the
# cube 2.5-8 cm off-centre lost it when the giver let go or backed off.
TAKE_TOLERANCE = (0.025, 0.03)


@dataclass
class Waypoint:
    """One leg of a plan: over `seconds` (s, stretched when a joint would move too fast),
    each named effector goes in a straight line to its target pose and each named gripper to
    its opening (0 closed .. 1 open). `then`, when set, is asked as the leg begins and may
    return legs to run before the rest of the plan (a grasp that missed is tried again)."""

    seconds: float
    poses: dict[str, Target] = field(default_factory=dict)
    grips: dict[str, float] = field(default_factory=dict)
    then: Callable[[SimTwin], list[Waypoint]] | None = None


def _rotate(rot: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return (np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k) @ rot


def interpolate(a: Pose, b: Pose, s: float) -> Pose:
    """Straight line in position, shortest arc in rotation; s in [0, 1]."""
    delta = rotation_error(b[1], a[1])
    angle = float(np.linalg.norm(delta))
    rot = a[1] if angle < 1e-9 else _rotate(a[1], delta, angle * s)
    return a[0] + (b[0] - a[0]) * s, rot


def nearest_angle(candidates: np.ndarray, reference: float) -> float:
    """The candidate angle (rad) nearest `reference` modulo 2 pi, unwrapped to within pi of
    `reference`."""
    wrapped = np.angle(np.exp(1j * (candidates - reference)))
    return float(reference + wrapped[np.argmin(np.abs(wrapped))])


class ScriptedExpert:
    """Follows a list of waypoints; `read()` gives the joint goals of the next tick."""

    def __init__(self, twin: SimTwin, plan: list[Waypoint], dt: float | None = None):
        self.twin = twin
        self.dt = dt if dt is not None else 1.0 / twin.spec.fps
        self.plan = list(plan)  # a retry inserts legs: never the caller's list
        names = twin.spec.joint_names
        self._solvers = {
            key: IKSolver(twin._mj, twin.model, e.site, e.joints, e.ik_ranges)
            for key, e in twin.spec.effectors.items()
        }
        self._index = {
            key: [names.index(j) for j in e.joints] for key, e in twin.spec.effectors.items()
        }
        self._grip = {key: names.index(e.gripper) for key, e in twin.spec.effectors.items()}
        self._rest = {key: twin.home_vector()[idx] for key, idx in self._index.items()}
        self._vmax = twin.spec.max_velocity
        self._seconds = 0.0
        self.goals = twin.joint_goals()
        self._from: dict[str, Pose] = {
            key: twin.site_pose(e.site) for key, e in twin.spec.effectors.items()
        }
        self._to: dict[str, Pose] = dict(self._from)
        self._grip_from = {key: self.goals[i] for key, i in self._grip.items()}
        self._grip_to = dict(self._grip_from)
        self._solved: dict[str, Pose] = {}
        self._step = -1
        self._t_in_step = 0.0
        self.t = 0.0

    @property
    def done(self) -> bool:
        """Whether every waypoint has been followed."""
        return self._step >= len(self.plan)

    @property
    def leg(self) -> int:
        """The index in `plan` of the leg under way (-1 before the first `read`)."""
        return self._step

    def _begin(self, index: int) -> None:
        self._step = index
        self._t_in_step = 0.0
        self._from, self._grip_from = dict(self._to), dict(self._grip_to)
        self._seconds = 0.0
        if index < len(self.plan):
            waypoint = self.plan[index]
            if waypoint.then is not None:
                self.plan[index + 1:index + 1] = waypoint.then(self.twin)
            for key, target in waypoint.poses.items():
                self._to[key] = target(self.twin) if callable(target) else target
            self._grip_to.update(waypoint.grips)
            self._seconds = max(waypoint.seconds, self._feasible_seconds(waypoint))

    def _feasible_seconds(self, waypoint: Waypoint) -> float:
        # Stretch a move that would ask a joint for more than 60% of its velocity bound at
        # the eased profile's peak (pi/2 times the mean): a joint clamped by the robot
        # lags the others and bends the straight line (a slow lift makes the gripper dip).
        needed = 0.0
        q_all = self.twin.data.qpos.copy()
        for key in waypoint.poses:
            idx = self._index[key]
            pos, rot = self._to[key]
            q, _ = self._solvers[key].solve(
                q_all, pos, rot, self.goals[idx], rest=self._rest[key], iterations=60
            )
            ratio = np.abs(q - self.goals[idx]) / (0.6 * self._vmax[idx])
            needed = max(needed, float(np.max(ratio)) * np.pi / 2)
        return needed

    def read(self) -> np.ndarray:
        """Joint goals float64 [J] for the next tick, advancing the plan by `dt`: IK along the
        eased straight line between waypoints, grippers interpolated; the final goals once done."""
        if self._step < 0:
            self._begin(0)
        self.t += self.dt
        self._t_in_step += self.dt
        while not self.done and self._t_in_step >= self._seconds:
            self._t_in_step -= self._seconds
            self._begin(self._step + 1)
        if self.done:
            s = 1.0
        else:
            s = self._t_in_step / self._seconds
            s = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in and out
        q_all = self.twin.data.qpos.copy()
        for key, solver in self._solvers.items():
            pos, rot = interpolate(self._from[key], self._to[key], s)
            idx = self._index[key]
            last = self._solved.get(key)
            if last is None or not (np.allclose(last[0], pos) and np.allclose(last[1], rot)):
                # A gripper holding still keeps its solution: no IK while it waits.
                self.goals[idx], _ = solver.solve(
                    q_all, pos, rot, self.goals[idx], rest=self._rest[key]
                )
                self._solved[key] = (pos, rot)
            g0, g1 = self._grip_from[key], self._grip_to[key]
            self.goals[self._grip[key]] = g0 + (g1 - g0) * s
        return self.goals.copy()


# -- plans ----------------------------------------------------------------------------------
def _base_xy(twin: SimTwin, effector: str) -> np.ndarray:
    first_joint = twin.spec.effectors[effector].joints[0]
    body = twin.model.jnt_bodyid[twin.model.joint(first_joint).id]
    return twin.data.xpos[body][:2].copy()


def _object_yaw(twin: SimTwin, obj: str) -> float:
    _, rot = twin.body_pose(obj)
    return float(np.arctan2(rot[1, 0], rot[0, 0]))


def _radial_yaw(twin: SimTwin, effector: str, xy: np.ndarray) -> float:
    d = xy - _base_xy(twin, effector)
    return float(np.arctan2(d[1], d[0]))


def _grasp_yaw(twin: SimTwin, effector: str, obj: str) -> float:
    # Fingers close along the site's y axis, so y must be a face normal: the object's
    # yaw plus a multiple of 90 degrees (cube) or of 180 degrees (block: across its width).
    # Nearest the arm's radial direction, whatever lies beside the object: a rule that
    # turned the grasp clear of other objects (the bowl's rim) made the expert succeed more
    # and the policy trained on it less (BENCHMARKS.md "Where the arm teacher fails: a
    # cube beside the bowl").
    pos, _ = twin.body_pose(obj)
    step = np.pi / 2 if obj == "red_cube" else np.pi
    candidates = _object_yaw(twin, obj) + step * np.arange(4)
    return nearest_angle(candidates, _radial_yaw(twin, effector, pos[:2]))


def _at(xy: np.ndarray, z: float, yaw: float) -> Pose:
    return np.array([xy[0], xy[1], z]), yaw_down(yaw)


def _holds(twin: SimTwin, effector: str, obj: str) -> bool:
    """Whether `effector`'s two fingers both touch `obj` with its centre within
    TAKE_TOLERANCE of the grasp site (a grip that will carry it, not one at its edge)."""
    if not pinched(twin, effector, obj):
        return False
    site, rot = twin.site_pose(twin.spec.effectors[effector].site)
    offset = rot.T @ (twin.body_pose(obj)[0] - site)  # in the site's frame
    return bool(abs(offset[0]) <= TAKE_TOLERANCE[0] and abs(offset[2]) <= TAKE_TOLERANCE[1])


def _pick(twin: SimTwin, effector: str, obj: str, retries: int | None = None) -> tuple[list[Waypoint], float]:
    """Hover over `obj`, descend, close, lift; then, while `retries` (default RETRIES) last,
    check that the object came up and if not open and grasp it again where it now lies."""
    retries = RETRIES if retries is None else retries
    pos, _ = twin.body_pose(obj)
    yaw = _grasp_yaw(twin, effector, obj)
    e = effector

    def again(twin: SimTwin) -> list[Waypoint]:
        if retries <= 0 or twin.body_pose(obj)[0][2] > HELD_Z:
            return []
        legs, _ = _pick(twin, e, obj, retries - 1)  # planned from where the object lies now
        return [Waypoint(0.3, grips={e: OPEN}), *legs]

    return [
        Waypoint(1.0, {e: _at(pos, HOVER_Z, yaw)}, {e: OPEN}),
        Waypoint(0.7, {e: _at(pos, GRASP_Z, yaw)}),
        Waypoint(0.1),
        Waypoint(0.5, grips={e: CLOSED}),
        Waypoint(0.6, {e: _at(pos, CARRY_Z, yaw)}),
        Waypoint(0.0, then=again),
    ], yaw


def plan_pick_place(twin: SimTwin, task: PickPlace) -> list[Waypoint]:
    """Pick `task.obj`, carry it over the bowl, lower it almost to the bowl's floor, open
    part way and lift clear."""
    e = task.effector
    plan, yaw = _pick(twin, e, task.obj)
    site = twin.spec.effectors[e].site

    def over_bowl(z: float) -> Callable[[SimTwin], Pose]:
        # Aimed where the bowl is when the leg begins: a grasp beside it may have moved it.
        return lambda twin: _at(twin.body_pose("bowl")[0], z, yaw)

    def straight_up(twin: SimTwin) -> Pose:
        return _at(twin.site_pose(site)[0], CARRY_Z, yaw)

    return [
        *plan,
        Waypoint(1.2, {e: over_bowl(CARRY_Z)}),
        # Down until the object nearly touches the bowl's floor; open only part way, so the
        # fingers stay clear of the walls, and leave straight up.
        Waypoint(0.6, {e: over_bowl(RELEASE_Z)}),
        Waypoint(0.1),
        Waypoint(0.4, grips={e: 0.6}),
        Waypoint(0.7, {e: straight_up}),
    ]


def plan_push(twin: SimTwin, task: Push) -> list[Waypoint]:
    """Closed fingers down 7.5 cm behind `task.obj`, then along `task.direction` to
    `task.distance` + 4.5 cm past its start, then up."""
    e = task.effector
    pos, _ = twin.body_pose(task.obj)
    direction = np.array(task.direction, dtype=float)
    direction /= np.linalg.norm(direction)
    # Push with the closed fingers' broad side: the site's x axis across the motion.
    heading = float(np.arctan2(direction[1], direction[0]))
    yaw = nearest_angle(heading + np.pi / 2 + np.pi * np.arange(2), _radial_yaw(twin, e, pos[:2]))
    start = pos[:2] - direction * 0.075
    end = pos[:2] + direction * (task.distance + 0.045)
    return [
        Waypoint(0.8, {e: _at(start, HOVER_Z, yaw)}, {e: CLOSED}),
        Waypoint(0.7, {e: _at(start, 0.026, yaw)}),
        Waypoint(2.0, {e: _at(end, 0.026, yaw)}),
        Waypoint(0.6, {e: _at(end - direction * 0.03, HOVER_Z, yaw)}),
    ]


def plan_reach(twin: SimTwin, task: Reach) -> list[Waypoint]:
    """The open gripper to `task.height` over `task.obj`, pointing away from the arm's base
    (not turned to the object's yaw, which a policy would have to read from the images),
    then hold."""
    e = task.effector
    pos, _ = twin.body_pose(task.obj)
    return [
        Waypoint(1.5, {e: _at(pos, task.height, _radial_yaw(twin, e, pos[:2]))}, {e: OPEN}),
        Waypoint(0.5),
    ]


def plan_handover(twin: SimTwin, task: Handover) -> list[Waypoint]:
    """The giver picks `task.obj` and presents it, tilted toward the taker, between the two
    grippers; the taker grasps it (again, up to RETRIES times, while it does not hold it:
    `_holds`), the giver lets go and backs off, the taker lifts it."""
    g, k = task.giver, task.taker
    plan, grasp_yaw = _pick(twin, g, task.obj)
    giver_base, taker_base = _base_xy(twin, g), _base_xy(twin, k)
    direction = taker_base - giver_base
    direction /= np.linalg.norm(direction)
    heading = float(np.arctan2(direction[1], direction[0]))
    # Turn the object so the fingers close across the handover direction, then tilt the
    # tool to point at the taker: the taker's fingers then close on the two free faces.
    sign = 1.0 if abs(np.angle(np.exp(1j * (heading - grasp_yaw)))) <= np.pi / 2 else -1.0
    carry_yaw = heading if sign > 0 else heading + np.pi
    carry_yaw = nearest_angle(np.array([carry_yaw]), grasp_yaw)
    # Meet between the two grippers' start positions (in front of a humanoid's chest,
    # over the table's middle for facing arms).
    meet = (
        twin.site_pose(twin.spec.effectors[g].site)[0][:2]
        + twin.site_pose(twin.spec.effectors[k].site)[0][:2]
    ) / 2.0
    meet_z = 0.18
    carry = _at(meet - direction * 0.02, meet_z, carry_yaw)
    angle = -sign * np.pi / 2
    c, s = np.cos(angle), np.sin(angle)
    tilt = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    present = (np.array([meet[0], meet[1], meet_z]), yaw_down(carry_yaw) @ tilt)
    taker_yaw = nearest_angle(
        heading + np.pi / 2 + np.pi * np.arange(2), _radial_yaw(twin, k, meet)
    )

    def above_object(twin: SimTwin) -> Pose:
        pos, _ = twin.body_pose(task.obj)
        return _at(pos, pos[2] + 0.1, taker_yaw)

    def at_object(twin: SimTwin) -> Pose:
        pos, _ = twin.body_pose(task.obj)
        return _at(pos, pos[2] + 0.002, taker_yaw)

    def away(twin: SimTwin) -> Pose:
        pos, rot = twin.site_pose(twin.spec.effectors[g].site)
        return pos - np.array([*direction, 0.0]) * 0.1, rot

    def lift(twin: SimTwin) -> Pose:
        pos, _ = twin.site_pose(twin.spec.effectors[k].site)
        return _at(pos + np.array([*direction, 0.0]) * 0.08, pos[2] + 0.06, taker_yaw)

    def take(retries: int) -> list[Waypoint]:
        # Before the giver lets go, the taker must hold the object (`_holds`); if not (the
        # noise put its fingers off it), open, back off and close on it again.
        def again(twin: SimTwin) -> list[Waypoint]:
            if retries <= 0 or _holds(twin, k, task.obj):
                return []
            return [Waypoint(0.3, grips={k: OPEN}), Waypoint(0.5, {k: above_object}), *take(retries - 1)]

        return [
            Waypoint(0.7, {k: at_object}),
            Waypoint(0.5, grips={k: CLOSED}),
            Waypoint(0.0, then=again),
        ]

    return [
        *plan,
        Waypoint(1.2, {g: carry}),
        Waypoint(0.8, {g: present}),
        Waypoint(1.0, {k: above_object}, {k: OPEN}),
        *take(RETRIES),
        Waypoint(0.4, grips={g: OPEN}),
        Waypoint(0.6, {g: away}),
        Waypoint(0.8, {k: lift}),
    ]


PLANNERS: dict[type, Callable[..., list[Waypoint]]] = {
    PickPlace: plan_pick_place,
    Push: plan_push,
    Handover: plan_handover,
    Reach: plan_reach,
}


def make_expert(twin: SimTwin, task: Task) -> ScriptedExpert:
    """The scripted expert for `task`, planned from the twin's current (reset) state."""
    planner = PLANNERS.get(type(task))
    if planner is None:
        raise SimError(f"no scripted expert for task '{task.name}'")
    return ScriptedExpert(twin, planner(twin, task))
