"""One episode runner (robots/sim/episode.py) for the recorder's expert scene, `platform
sim` and `eval --sim`: the same seed gives the same episode whoever runs it, and the
rules (time limit, settling after the expert, success held) end it as documented."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from shallowpi import config
from shallowpi.errors import PlatformError
from shallowpi.record.rig import ExpertScene
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.episode import Episode, EpisodeRules, ScriptedAgent, run_episode
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import TwinSpec

SEED = 1000  # one the expert solves (tests/test_sim_experts.py)


@pytest.fixture(scope="module")
def robot():
    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    with DirectSimRobot(spec, cameras=()) as sim:  # physics only
        yield sim


def test_the_recorders_scene_and_the_runner_run_the_same_episode(robot):
    task = get_task("arm", "cube_in_bowl")
    result = run_episode(robot, task, ScriptedAgent(), SEED)
    final = robot.twin.joint_positions()
    assert result.success and 0 < result.steps < int(task.seconds * robot.spec.fps)

    # The recorder's loop owns the ticks: read (the teleoperator), act, then ask if done.
    scene = ExpertScene(robot, task, seed=SEED - 3)
    scene.reset(3)
    ticks = 0
    while True:
        robot.act(scene.read())
        ticks += 1
        if scene.done():
            break
    assert ticks == result.steps and scene.success() and scene.metadata() == {"seed": SEED, "sim_noise": 0.0}
    np.testing.assert_array_equal(robot.twin.joint_positions(), final)


def test_rules_end_an_episode_at_its_limit_after_settling_or_once_success_holds(robot):
    task = get_task("arm", "cube_in_bowl")
    fps = robot.spec.fps
    short = Episode.start(robot, task, ScriptedAgent(), SEED, EpisodeRules(seconds=0.5))
    result = short.run()
    assert (result.steps, short.ended, result.success) == (int(0.5 * fps), "time limit", False)

    settled = Episode.start(robot, task, ScriptedAgent(), SEED, EpisodeRules(settle_s=0.0))
    unsettled = settled.run().steps
    longer = Episode.start(robot, task, ScriptedAgent(), SEED, EpisodeRules(settle_s=1.0))
    assert longer.run().steps == unsettled + fps - 1 and longer.ended == "agent finished"

    held = Episode.start(robot, task, ScriptedAgent(), SEED, EpisodeRules(settle_s=5.0, stop_after_success_s=0.2))
    assert held.run().success and held.ended == "success held"


def test_a_scripted_agent_outside_an_episode_says_so(robot):
    with pytest.raises(PlatformError, match=r"Episode\.start\(\)"):
        ScriptedAgent().next_goal(robot.observe)
