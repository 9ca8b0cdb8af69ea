"""The distillation report on a store of the arm twin's own joints: its action error named
per joint in each joint's unit (the arm's shoulder_lift is a linear stage, in metres), and
`platform distill`'s long CPU work (the layer search, the closed loop in the twin) shown
with progress unless --no-progress."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from shallowpi import config
from shallowpi.cli import main
from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.robots.spec import RobotSpec
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
# Greedy, so the layer search runs; one twin episode of 0.1 s per task and model.
QUICK = ["--policy", "tiny", "--layers", "1", "--select", "greedy", "policy.train.steps=2",
         "policy.train.save_every=2", "distill.sim_episodes=1", "distill.sim_episode_time_s=0.1",
         "distill.latency_repeats=1", "distill.probe_windows=2"]


def _arm() -> RobotSpec:
    return RobotSpec.from_config(config.compose(["robot=arm"]).robot)


def _arm_store(path: Path, episodes: int = 3, length: int = 12) -> Path:
    """Synthetic episodes of the arm twin's joints (names and kinds from configs/robot/arm.yaml)
    and cameras at 40x32: a store the twin can run a policy trained on."""
    spec = _arm()
    rng = np.random.default_rng(0)
    joints = len(spec.joint_names)
    store = EpisodeStore.create(path, robot_features(spec.joint_names, {"front": (32, 40), "wrist": (32, 40)},
                                                     spec.joint_kinds), StoreSettings(durable=False))
    with store:
        for _ in range(episodes):
            writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test",
                                         fps=30)
            for t in range(length):
                state = (0.1 * np.sin(t / 10.0 + np.arange(joints))).astype(np.float32)
                image = np.full((32, 40, 3), 16 * t % 256, np.uint8)
                writer.add_frame({"observation.state": state,
                                  "action": (state + 0.01 * rng.standard_normal(joints)).astype(np.float32),
                                  "observation.images.front": image, "observation.images.wrist": image}, t / 30.0)
            writer.commit(success=True)
    return path


@pytest.fixture(scope="module")
def arm_store(tmp_path_factory) -> Path:
    return _arm_store(tmp_path_factory.mktemp("distill-report") / "arm.zarr")


def _distill(store: Path, run: str, *extra: str) -> int:
    return main(["distill", "--dataset", str(store), "--runs-dir", str(store.parent / "runs"), "--run", run,
                 *QUICK, *extra])


@pytest.fixture(scope="module")
def shown(arm_store) -> tuple[Path, str]:
    """One distillation with progress on (the default): its run folder and what it wrote to
    stderr, which is no terminal here, so the bars are plain lines."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert _distill(arm_store, "shown") == 0
    return arm_store.parent / "runs" / "shown", err.getvalue()


def test_the_action_error_names_each_joint_in_its_unit(shown):
    run, _ = shown
    spec = _arm()
    units = {"revolute": "rad", "linear": "m", "gripper": "opening, 0-1"}
    # The report's table: one row per joint, by name, in its own unit (not "radians" for all).
    report = (run / "report.md").read_text()
    for name, kind in zip(spec.joint_names, spec.joint_kinds):
        assert f"| {name} | {units[kind]} | " in report, name
    assert "| shoulder_lift | m | " in report and "| gripper | opening, 0-1 | " in report
    assert "robot's units (radians" not in report
    assert "rad for a revolute joint, m for a linear one" in report
    summary = json.loads((run / "report.json").read_text())["action_error"]
    assert summary["joints"] == spec.joint_names
    assert summary["units"] == [units[k] for k in spec.joint_kinds]
    assert len(summary["student_vs_truth"]) == len(spec.joint_names)


def test_the_layer_search_shows_progress(shown):
    # Greedy, then the three strategies compared: a bar of teacher passes, here plain lines;
    # depth 2 -> 1 is 1 + 2 passes, and the comparison 1 + 3.
    _, err = shown
    assert "choosing layers 7/7 " in err, err


def test_the_closed_loop_shows_progress(shown):
    # eval --sim's bar for each task and model: 3 ticks at 30 Hz in 0.1 s.
    run, err = shown
    tasks = {r["task"] for r in json.loads((run / "report.json").read_text())["closed_loop"]}
    assert tasks and err.count("sim eval 3/3 ") == 2 * len(tasks), err


def test_no_progress_draws_no_bar(arm_store, capsys):
    assert _distill(arm_store, "quiet", "--no-progress") == 0
    err = capsys.readouterr().err
    assert (arm_store.parent / "runs" / "quiet" / "success.png").is_file()  # the closed loop ran
    assert "choosing layers" not in err and "sim eval" not in err, err


def test_the_cost_of_a_chunk_times_teacher_and_student_in_turns(arm_store, monkeypatch):
    """All the teacher's chunks, then all the student's: a busy stretch of a shared CPU fell
    on one of them, and a report measured its student at 1.455x the teacher's time against a
    FLOP-ideal 0.52. The cost section (the report's last measurement) runs one chunk each a
    round, no model twice in a row."""
    from policy_fakes import chunk_depths

    chunks = chunk_depths(monkeypatch)  # the depth of each model's chunk, in the order they ran
    assert _distill(arm_store, "in-turns", "--no-progress", "distill.sim_episodes=0", "distill.latency_repeats=3") == 0
    cost = chunks[-8:]  # per model a warm-up (the FLOP count) and 3 timed chunks
    assert sorted(cost) == [1] * 4 + [2] * 4, chunks
    assert all(a != b for a, b in itertools.pairwise(cost)), cost
    measured = json.loads((arm_store.parent / "runs" / "in-turns" / "report.json").read_text())["cost"]
    assert all(measured[m]["chunk_ms"] > 0 for m in ("teacher", "student"))
    assert "timed in turns" in (arm_store.parent / "runs" / "in-turns" / "report.md").read_text()


def test_the_plot_labels_each_joint_by_name_and_unit(arm_store):
    from shallowpi.distill.report import ActionJoints, error_figure

    errors = {key: [0.1] * 7 for key in ("teacher_vs_truth", "student_vs_truth", "student_vs_teacher")}
    fig = error_figure(errors, ActionJoints.of_store(arm_store, 7))
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels[:3] == ["shoulder_pan\n(rad)", "shoulder_lift\n(m)", "elbow_flex\n(rad)"]
    assert labels[-1] == "gripper\n(opening, 0-1)"
    assert "each joint's unit" in fig.axes[0].get_ylabel()


def test_a_store_that_does_not_say_its_joints_kinds_claims_no_unit(tmp_path):
    """Recorded before kinds were stored (or imported): a name saying gripper is one
    (shallowpi.joints' rule); rad or m, nobody knows, and the report does not guess."""
    from shallowpi.distill.report import UNKNOWN_UNIT, ActionJoints

    store = make_store(tmp_path / "old.zarr", episodes=1, length=4)
    names = list(store.features["action"].names)
    store.close()
    store_joints = ActionJoints.of_store(tmp_path / "old.zarr", 6)
    assert store_joints.names == names and store_joints.units == [UNKNOWN_UNIT] * 6
    assert ActionJoints.of_store(tmp_path / "old.zarr", 7).names == [f"j{j}" for j in range(7)]


def test_a_task_the_policies_cannot_be_told_is_named_and_the_others_kept(arm_store, tmp_path):
    """A `words` vocabulary holds the store's task texts only: trained on this one-task store,
    teacher and student refuse the arm's other instruction ("push the blue block to the
    left"). That refusal ended the whole section, "Not run: ...", the cube_in_bowl results
    already measured lost; now that task is named with why, and the one that ran is kept."""
    assert main(["distill", "--dataset", str(arm_store), "--runs-dir", str(tmp_path), "--run", "words", *QUICK,
                 "--no-progress", "policy.tokenizer=words"]) == 0
    run = tmp_path / "words"
    summary = json.loads((run / "report.json").read_text())
    assert {(r["task"], r["model"]) for r in summary["closed_loop"]} == {("cube_in_bowl", "teacher"),
                                                                          ("cube_in_bowl", "student")}
    assert list(summary["closed_loop_not_run"]) == ["push_block_left"]
    assert "the policy's word vocabulary lacks" in summary["closed_loop_not_run"]["push_block_left"]
    report = (run / "report.md").read_text()
    assert "| cube_in_bowl | teacher | " in report and "| cube_in_bowl | student | " in report
    line = next(x for x in report.splitlines() if x.startswith("- push_block_left: "))
    assert line.startswith("- push_block_left: the instruction 'push the blue block to the left' has words "), line
    assert (run / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_a_task_whose_episodes_fail_keeps_the_results_measured(arm_store, tmp_path, monkeypatch):
    """A one-line error in one model's episodes on one task (the twin's, say) discarded every
    result of the section; now that model's line names the task, and the rest stands: the
    other task of both models, and the teacher on the failed task (its bar alone in the plot)."""
    from shallowpi.evaluate import sim_eval
    from shallowpi.robots.sim.twin import SimError

    real = sim_eval.evaluate_in_sim
    calls = []

    def failing_on_the_second_task(robot, task, policy, *args, **kwargs):
        calls.append(task.name)
        if task.name == "push_block_left" and calls.count(task.name) == 2:  # the student's turn
            raise SimError("the twin went unstable")
        return real(robot, task, policy, *args, **kwargs)

    monkeypatch.setattr(sim_eval, "evaluate_in_sim", failing_on_the_second_task)
    assert main(["distill", "--dataset", str(arm_store), "--runs-dir", str(tmp_path), "--run", "failed", *QUICK,
                 "--no-progress"]) == 0
    run = tmp_path / "failed"
    summary = json.loads((run / "report.json").read_text())
    assert {(r["task"], r["model"]) for r in summary["closed_loop"]} == {
        ("cube_in_bowl", "teacher"), ("cube_in_bowl", "student"), ("push_block_left", "teacher")}
    assert summary["closed_loop_not_run"] == {"push_block_left": "student: the twin went unstable"}
    assert "- push_block_left: student: the twin went unstable" in (run / "report.md").read_text()
    assert (run / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_a_closed_loop_that_ran_no_task_says_why_for_each():
    from shallowpi.distill.report import ClosedLoop, _closed_loop_section
    from shallowpi.distill.settings import DistillConfig

    why = {"cube_in_bowl": "the instruction 'put the red cube in the bowl' is 30 tokens with BOS, over ...",
           "push_block_left": "the instruction 'push the blue block to the left' is 33 tokens with BOS, over ..."}
    lines = _closed_loop_section(ClosedLoop([], why), DistillConfig(), Path("/nonexistent/success.png"))
    assert lines == ["Not run on any task of the robot:", "", *(f"- {t}: {w}" for t, w in why.items())]
