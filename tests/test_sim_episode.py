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


class _Holding:
    """Holds the home pose; at tick `nan_at` returns NaN, at tick `blow_up_at` makes the
    cube's velocity NaN (a diverging simulation)."""

    finished = False

    def __init__(self, nan_at: int | None = None, blow_up_at: int | None = None) -> None:
        self.nan_at, self.blow_up_at, self.tick = nan_at, blow_up_at, 0

    def begin(self, robot, task, seed) -> None:
        self.robot, self.tick = robot, 0

    def next_goal(self, observe):
        self.tick += 1
        twin = self.robot.twin
        if self.tick == self.blow_up_at:
            joint = twin.model.body("red_cube").jntadr[0]
            twin.data.qvel[twin.model.jnt_dofadr[joint]] = float("nan")
        goal = twin.joint_positions()
        return goal * float("nan") if self.tick == self.nan_at else goal


@pytest.mark.parametrize("fault, ended", [({"nan_at": 5}, "policy output non-finite"),
                                          ({"blow_up_at": 5}, "physics unstable")])
def test_a_policy_nan_or_a_diverging_simulation_is_a_failed_episode_not_an_aborted_run(robot, fault, ended,
                                                                                      tmp_path, monkeypatch):
    # A NaN action raised through the evaluation (no report, the remaining seeds and tasks
    # never run); a diverging simulation was reset by MuJoCo to the model's load poses and
    # judged on that unseeded scene.
    monkeypatch.chdir(tmp_path)  # MuJoCo logs the divergence to MUJOCO_LOG.TXT in the working folder
    task = get_task("arm", "cube_in_bowl")
    judged = {"success": True}
    task.success = lambda twin: judged["success"]  # a scene the detector would pass: the fault still fails it
    episode = Episode.start(robot, task, _Holding(**fault), SEED, EpisodeRules(seconds=2.0))
    result = episode.run()
    assert (episode.ended, result.success, result.steps) == (ended, False, 5)
    again = run_episode(robot, get_task("arm", "cube_in_bowl"), _Holding(), SEED + 1, EpisodeRules(seconds=0.2))
    assert again.steps == 6  # the next episode runs from a clean reset


def test_a_time_limit_holds_every_tick_that_fits_in_it(robot):
    task = get_task("arm", "cube_in_bowl")
    episode = Episode.start(robot, task, _Holding(), SEED, EpisodeRules(seconds=4.1))  # 4.1 * 30 = 122.99999...
    assert episode.limit == 123
