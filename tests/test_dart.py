"""DART demonstrations (record/dart.py): the robot executes the expert's goals plus noise,
the recording holds the clean goals."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from conftest import platform_cmd, subprocess_env
from shallowpi import config
from shallowpi.data.store import EpisodeStore
from shallowpi.record.dart import NoisyExecution, OUNoise
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.experts import make_expert
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import TwinSpec


def test_ou_noise_has_the_stationary_std_and_repeats_per_seed():
    noise = OUNoise(np.array([0.1, 0.0, 0.02]), tau_s=0.5, dt=1 / 30, seed=3)
    draws = np.stack([noise() for _ in range(30000)])
    np.testing.assert_allclose(draws.std(0), [0.1, 0.0, 0.02], rtol=0.1, atol=1e-12)
    # Correlated: one tick apart the offsets are nearly the same (exp(-dt / tau) = 0.936).
    assert np.corrcoef(draws[:-1, 0], draws[1:, 0])[0, 1] == pytest.approx(np.exp(-1 / 15), abs=0.02)
    noise.reset(7)
    a = [noise() for _ in range(5)]
    noise.reset(7)
    np.testing.assert_array_equal(a, [noise() for _ in range(5)])


def test_the_robot_executes_noisy_goals_and_reports_the_clean_ones():
    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    task = get_task("arm", "cube_in_bowl")
    gripper = spec.joint_names.index("gripper")
    with DirectSimRobot(spec, cameras=()) as robot:
        noisy = NoisyExecution(robot, spec.lower, spec.upper, spec.joint_names, scale=0.02, tau_s=0.5,
                               fps=spec.fps, max_velocity=spec.max_velocity, quiet=["gripper"])
        robot.reset(1000, task)
        noisy.reset_noise(1000)
        expert = make_expert(robot.twin, task)
        offsets, last = [], robot.twin.joint_goals()
        for _ in range(60):
            goal = expert.read()
            recorded = noisy.act(goal)
            # The clean goal, bounded as the robot bounds a command (speed, then limits).
            bounded = np.clip(np.clip(goal, last - noisy.tick_step, last + noisy.tick_step), spec.lower, spec.upper)
            np.testing.assert_allclose(recorded, bounded, atol=1e-6)
            offsets.append(noisy.executed - recorded)
            last = recorded.astype(np.float64)
        held = noisy.hold()  # the session's safe state goes to the robot itself, noise-free
        np.testing.assert_allclose(held, robot.twin.joint_goals(), atol=1e-6)
    offsets = np.array(offsets)
    assert np.all(offsets[:, gripper] == 0)  # grippers are left alone
    moving = [i for i in range(len(spec.joint_names)) if i != gripper]
    assert np.abs(offsets[:, moving]).max() > 1e-3  # the robot ran off the expert's goals


def test_a_label_moves_at_most_one_tick_of_top_speed():
    """A goal past what a joint can reach in a tick is recorded as the robot would execute it
    (the arm expert asks its lift for 4 ticks' travel in one as it leaves home)."""
    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    with DirectSimRobot(spec, cameras=()) as robot:
        robot.reset(1000, get_task("arm", "cube_in_bowl"))
        noisy = NoisyExecution(robot, spec.lower, spec.upper, spec.joint_names, scale=0.0, tau_s=0.5,
                               fps=spec.fps, max_velocity=spec.max_velocity)
        noisy.reset_noise(1000)
        home = robot.twin.joint_goals()
        first = noisy.act(home)  # an episode's first goal: only the limits bound it
        np.testing.assert_allclose(first, home, atol=1e-6)
        far = home + 0.5 * (spec.upper - home)  # past one tick on every joint not at its upper limit
        assert np.sum(far - home > spec.max_velocity / spec.fps) >= 5
        second = noisy.act(far)
        np.testing.assert_allclose(second, np.minimum(far, home + spec.max_velocity / spec.fps), atol=1e-6)
        np.testing.assert_allclose(noisy.executed, second, atol=1e-6)  # no noise: the robot ran the label
        noisy.reset_noise(1001)  # a new episode starts unbounded again
        np.testing.assert_allclose(noisy.act(far), far, atol=1e-6)


def test_record_sim_noise_records_clean_goals_through_the_cli(tmp_path):
    def record(name: str, noise: float) -> dict[str, np.ndarray]:
        done = subprocess.run(
            platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                         "--data-root", str(tmp_path), "--dataset", name, "--episodes", "1",
                         "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui", "record.sim_size=32x32",
                         f"record.sim_noise={noise}", f"telemetry.address={tmp_path}/{name}.sock"),
            env=subprocess_env(), capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        with EpisodeStore.open(tmp_path / f"{name}.zarr") as store:
            assert store.episode(0).extra["sim_noise"] == noise  # each episode says its noise
            return store.read_episode(0, ["observation.state", "action"])

    clean, noisy = record("clean", 0.0), record("noisy", 0.03)
    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, render_width=32, render_height=32)
    for recorded in (clean, noisy):  # no label asks a joint for more than its top speed
        steps = np.abs(np.diff(recorded["action"], axis=0))
        assert np.all(steps <= spec.max_velocity / spec.fps + 1e-6), steps.max(0)
    # Same scene: the same first observation; then the noisy robot drifts off the clean path.
    np.testing.assert_array_equal(clean["observation.state"][0], noisy["observation.state"][0])
    assert np.abs(clean["observation.state"][-1] - noisy["observation.state"][-1]).max() > 1e-3
    # Each recorded action is a goal inside the limits, not the noisy one the robot ran:
    # replaying the recorded actions does not reproduce the recorded states.
    with DirectSimRobot(spec, cameras=()) as robot:
        robot.reset(0, get_task("arm", "cube_in_bowl"))
        for action in noisy["action"][:-1]:
            robot.act(action)
        replayed = robot.twin.joint_positions()
    assert np.abs(replayed - noisy["observation.state"][-1]).max() > 1e-3


def test_a_twin_whose_rig_fails_to_build_is_disconnected(monkeypatch):
    """A bad record.sim_noise is refused after the twin connected: the rig builder must
    disconnect it before the error goes on (as the hardware rig stops what it started)."""
    from shallowpi.errors import ConfigError
    from shallowpi.record.rig import build_rig

    disconnected = []
    real = DirectSimRobot.disconnect

    def spy(self):
        disconnected.append(self)
        real(self)

    monkeypatch.setattr(DirectSimRobot, "disconnect", spy)
    cfg = config.compose(["robot=arm", "record.sim_noise=-1", "record.sim_size=32x32"])
    with pytest.raises(ConfigError, match="sim_noise must be >= 0"):
        build_rig(cfg, "direct", "cube_in_bowl", size=(32, 32))
    assert len(disconnected) == 1 and not disconnected[0].is_connected


def test_a_fault_waiting_for_its_acknowledgement_reads_the_alarms_through_the_noise(caplog):
    """record/fault_hold.py reads the held robot's alarms once a second; a noisy recording's
    robot is this wrapper, which had no check_faults: the read failed with a logged
    AttributeError on every fault of a `record.sim_noise` run."""
    from types import SimpleNamespace

    from shallowpi.record.fault_hold import FaultHold
    from shallowpi.telemetry.status import RecorderStatus

    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    with DirectSimRobot(spec, cameras=()) as robot:
        robot.reset(1000, get_task("arm", "cube_in_bowl"))
        noisy = NoisyExecution(robot, spec.lower, spec.upper, spec.joint_names, scale=0.02, tau_s=0.5,
                               fps=spec.fps, max_velocity=spec.max_velocity)
        published: list[RecorderStatus] = []
        with caplog.at_level("ERROR"):
            FaultHold(noisy, RecorderStatus(), published.append, SimpleNamespace(fault="camera front stopped")).watch()
    assert not caplog.records, caplog.text
    assert len(published) == 1
