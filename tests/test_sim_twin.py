"""The MuJoCo twins against the robot configs, and the direct sim robot (real MuJoCo)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported: headless, on the CPU
pytest.importorskip("mujoco")

from shallowpi import config
from shallowpi.robots.observation import Observation
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.tasks import make_tasks
from shallowpi.robots.sim.twin import SimError, SimTwin, TwinSpec

ROBOTS = ["arm", "bimanual", "humanoid"]


def spec_for(robot: str, size: int | None = 64) -> TwinSpec:
    return TwinSpec.from_config(config.compose([f"robot={robot}"]).robot, size, size)


@pytest.mark.parametrize("robot", ROBOTS)
def test_twin_has_the_configs_joints_limits_and_camera_roles(robot: str) -> None:
    cfg = config.compose([f"robot={robot}"]).robot
    twin = SimTwin(spec_for(robot))
    m = twin.model
    for joint in cfg.joints:
        assert m.joint(joint.name).range.tolist() == pytest.approx([joint.lower, joint.upper])
        assert m.actuator(joint.name).trntype == 0  # a joint transmission
        assert m.actuator_trnid[m.actuator(joint.name).id, 0] == m.joint(joint.name).id
        assert m.actuator(joint.name).ctrlrange.tolist() == pytest.approx(
            [joint.lower, joint.upper]
        )
    assert {m.camera(i).name for i in range(m.ncam)} == set(cfg.cameras)
    # CPU rendering settings are part of the twin.
    assert m.vis.quality.shadowsize == 0 and m.vis.quality.offsamples == 0


@pytest.mark.parametrize("robot", ROBOTS)
def test_every_camera_renders_the_scene(robot: str) -> None:
    twin = SimTwin(spec_for(robot, 96))
    twin.reset(0, next(iter(make_tasks(robot).values())).place)
    for role in twin.spec.cameras:
        image = twin.render(role)
        assert image.shape == (96, 96, 3) and image.dtype == np.uint8
        assert image.std() > 10  # not a blank frame
    depth = twin.render_depth(twin.spec.cameras[0])
    assert depth.shape == (96, 96) and 0.05 < float(np.median(depth)) < 3.0
    twin.close()


def test_reset_places_objects_from_the_seed() -> None:
    twin = SimTwin(spec_for("arm"))
    task = make_tasks("arm")["cube_in_bowl"]

    def poses(seed: int) -> np.ndarray:
        twin.reset(seed, task.place)
        return np.concatenate([twin.body_pose(b)[0] for b in ("red_cube", "blue_block", "bowl")])

    np.testing.assert_array_equal(poses(3), poses(3))
    assert not np.allclose(poses(3), poses(4))
    twin.reset(5, task.place)
    cube, bowl = twin.body_pose("red_cube")[0], twin.body_pose("bowl")[0]
    assert np.linalg.norm(cube[:2] - bowl[:2]) > 0.1  # sampled apart
    assert not task.success(twin)  # nothing is solved at the start


def test_act_clamps_to_limits_and_velocity_and_time_advances() -> None:
    spec = spec_for("arm")
    with DirectSimRobot(spec, cameras=()) as robot:
        start = robot.observe().state
        far = spec.upper + 5.0
        sent = robot.act(far)
        step = spec.max_velocity / spec.fps
        np.testing.assert_allclose(sent, np.minimum(start + step, spec.upper), atol=1e-5)
        for _ in range(200):
            sent = robot.act(far)
        np.testing.assert_allclose(sent, spec.upper, atol=1e-6)
        assert robot.twin.time == pytest.approx(
            201 / spec.fps, abs=0.001
        )  # within one physics step
        sent = robot.act({"gripper": -3.0})
        assert sent[spec.joint_names.index("gripper")] == pytest.approx(1.0 - 4.0 / spec.fps)
        with pytest.raises(SimError, match="unknown joints"):
            robot.act({"elbow": 0.0})
        with pytest.raises(SimError, match="action has 3 values, expected 7"):
            robot.act(np.zeros(3))


def test_same_seed_and_actions_give_identical_observations() -> None:
    spec = spec_for("bimanual", 48)
    rng = np.random.default_rng(0)
    actions = [
        spec.lower + (spec.upper - spec.lower) * rng.uniform(0.4, 0.6, len(spec.joints))
        for _ in range(10)
    ]
    task = make_tasks("bimanual")["handover"]

    def rollout() -> list[Observation]:
        with DirectSimRobot(spec) as robot:
            robot.reset(11, task)
            out = []
            for action in actions:
                robot.act(action)
                out.append(robot.observe())
            return out

    a, b = rollout(), rollout()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.state, y.state)
        for role in spec.cameras:
            np.testing.assert_array_equal(
                x.frames[role].image, y.frames[role].image
            )
        assert x.time_s == y.time_s
    assert a[-1].frames["top"].sequence == 10


def test_one_line_errors_for_unknown_role_task_and_missing_model(tmp_path: Path) -> None:
    spec = spec_for("arm")
    with pytest.raises(SimError, match="unknown camera role 'head' for arm; roles: front, wrist"):
        DirectSimRobot(spec, cameras=["head"])
    twin = SimTwin(spec)
    with pytest.raises(SimError, match="unknown camera role 'top'"):
        twin.render("top")
    from shallowpi.robots.sim.tasks import get_task

    with pytest.raises(SimError, match="unknown task 'stack' for arm; tasks: cube_in_bowl"):
        get_task("arm", "stack")
    (tmp_path / "arm").mkdir()
    (tmp_path / "arm" / "twin.yaml").write_text("model: twin.xml\n")
    cfg = config.compose(["robot=arm"]).robot
    with pytest.raises(SimError, match=r"twin model file .*twin.xml is missing"):
        TwinSpec.from_config(cfg, robots_dir=tmp_path)


def test_the_twin_takes_the_robots_own_checked_spec():
    from omegaconf import OmegaConf

    from shallowpi.errors import ConfigError
    from shallowpi.robots.spec import RobotSpec

    cfg = config.compose(["robot=arm"]).robot
    robot = RobotSpec.from_config(cfg)
    twin = TwinSpec.from_config(cfg)
    assert twin.joints == robot.joints and twin.fps == robot.fps  # the same JointSpecs, kinds included
    assert twin.cameras == tuple(c.role for c in robot.cameras)
    assert (twin.render_height, twin.render_width) == robot.camera_shapes()[twin.cameras[0]]
    bad = OmegaConf.to_container(cfg, resolve=True)
    bad["joints"][0]["upper"] = bad["joints"][0]["lower"] - 0.1
    # The robot config's checks run for the twin too (they were skipped before).
    with pytest.raises(ConfigError, match=f"joint '{bad['joints'][0]['name']}' needs lower < upper"):
        TwinSpec.from_config(bad)


RENDER_IN_FRESH_PROCESS = """
import hashlib, os, sys
from shallowpi import config
from shallowpi.robots.sim.twin import SimTwin, TwinSpec
width, height = int(sys.argv[1]), int(sys.argv[2])
twin = SimTwin(TwinSpec.from_config(config.compose(["robot=arm"]).robot, width, height))
digest = hashlib.sha256(b"".join(twin.render(role).tobytes() for role in twin.spec.cameras)).hexdigest()
print(os.environ.get("LP_NUM_THREADS", "unset"), digest)
"""


def _render_in_fresh_process(width: int, height: int, **env: str) -> tuple[str, str]:
    """(LP_NUM_THREADS as the process saw it after rendering, sha256 of every camera's frame)."""
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if k != "LP_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", RENDER_IN_FRESH_PROCESS, str(width), str(height)],
                          env={**base, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    threads, digest = done.stdout.split()
    return threads, digest


def test_small_renders_rasterize_on_one_thread_and_give_the_same_pixels() -> None:
    # The policies' 64x64: Mesa's rasterizer threads are turned off, unless the user set them.
    threads, single = _render_in_fresh_process(64, 64)
    assert threads == "0"
    assert _render_in_fresh_process(64, 64, LP_NUM_THREADS="2") == ("2", single)
    # A camera-sized render keeps Mesa's default (its threads pay off there).
    assert _render_in_fresh_process(640, 480)[0] == "unset"


def _place(twin: SimTwin, body: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
    joint = twin.model.body(body).jntadr[0]
    qpos, dof = twin.model.jnt_qposadr[joint], twin.model.jnt_dofadr[joint]
    twin.data.qpos[qpos:qpos + 3], twin.data.qpos[qpos + 3:qpos + 7] = pos, quat
    twin.data.qvel[dof:dof + 6] = 0.0


def _settle(twin: SimTwin, seconds: float = 1.5) -> None:
    for _ in range(int(seconds * 30)):
        twin.step(1 / 30)


def test_the_detectors_count_a_cube_resting_in_the_bowl_and_a_block_pushed_along_the_table_only() -> None:
    """A cube under a bowl set or knocked over it, and a block pushed off the table's edge
    or carried, passed: the detectors only bounded them from above."""
    twin = SimTwin(spec_for("arm"))
    place, push = make_tasks("arm")["cube_in_bowl"], make_tasks("arm")["push_block_left"]
    twin.reset(1000, place.place)
    bowl = twin.body_pose("bowl")[0]
    _place(twin, "red_cube", [bowl[0], bowl[1], 0.06])
    _settle(twin)
    assert place.success(twin)  # resting on the bowl's floor
    cube = twin.body_pose("red_cube")[0]
    _place(twin, "red_cube", [cube[0], cube[1], 0.02])
    _place(twin, "bowl", [cube[0], cube[1], 0.045])  # the bowl set down over the cube
    _settle(twin)
    assert not place.success(twin)
    _place(twin, "bowl", [cube[0], cube[1], 0.07], (0.0, 1.0, 0.0, 0.0))  # upside down over it
    _settle(twin)
    assert not place.success(twin)

    twin.reset(1000, push.place)
    start = push.start["blue_block"]
    _place(twin, "blue_block", [start[0], start[1] + 0.1, 0.02])
    _settle(twin)
    assert push.success(twin)  # pushed 10 cm left, lying on the table
    _place(twin, "blue_block", [start[0], 0.5, 0.02])  # past the table's edge (|y| <= 0.45)
    _settle(twin)
    assert twin.body_pose("blue_block")[0][2] < -0.5 and not push.success(twin)
    twin.close()


@pytest.mark.parametrize("robot", ["bimanual", "humanoid"])
def test_a_handover_giver_touching_the_cube_with_its_palm_has_not_let_go(robot) -> None:
    """The handover's let-go check asked the giver's finger pads only: a cube the taker
    pinched while it still rested on the giver's palm (or wrist, or forearm) counted as
    handed over. The whole arm is asked now."""
    import mujoco

    twin = SimTwin(spec_for(robot))
    task = make_tasks(robot)["handover"]
    twin.reset(1000, task.place)
    fingers = list(twin.spec.effectors[task.giver].fingers)
    assert not twin.arm_touching(task.giver, task.obj) and not twin.arm_touching(task.taker, task.obj)
    _place(twin, task.obj, twin.data.geom(f"{task.giver}_palm").xpos.copy())
    mujoco.mj_forward(twin.model, twin.data)
    assert twin.arm_touching(task.giver, task.obj)
    assert not twin.touching(fingers, task.obj)  # what the old check saw: let go
    assert not twin.arm_touching(task.taker, task.obj)
    twin.close()
