"""The robot a training run's config.yaml (and a distillation report's resolved config)
names: the one its store was recorded on. `train` and `distill` have no --robot (the
robot is the store's), and composed the root config's default, so a run trained on the
humanoid's episodes said `robot: arm` with the arm's joints and cameras."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yaml

from shallowpi.cli import main
from store_fixtures import make_store, stamp_episode

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = ["--policy", "tiny", "--no-progress", "policy.train.steps=2", "policy.train.save_every=2"]
DISTILL = ["--layers", "1", "distill.sim_episodes=0", "distill.latency_repeats=1", "distill.probe_windows=2",
           "distill.compare_selections=false"]


def _store(path: Path, robots: tuple[str, ...]) -> Path:
    """A synthetic store whose episode e says it was recorded on robots[e]."""
    make_store(path, episodes=len(robots), length=10).close()
    for e, robot in enumerate(robots):
        stamp_episode(path, e, robot=robot)
    return path


def _robot(run: Path) -> dict:
    return yaml.safe_load((run / "config.yaml").read_text())["robot"]


@pytest.fixture(scope="module")
def humanoid(tmp_path_factory) -> Path:
    return _store(tmp_path_factory.mktemp("humanoid") / "humanoid.zarr", ("humanoid",) * 3)


def test_train_records_the_robot_its_store_was_recorded_on(humanoid, tmp_path):
    assert main(["train", "--dataset", str(humanoid), "--runs-dir", str(tmp_path), "--run", "t", *QUICK]) == 0
    robot = _robot(tmp_path / "t")
    assert robot["name"] == "humanoid" and set(robot["cameras"]) == {"head", "left_wrist", "right_wrist"}


def test_distill_records_it_for_the_teacher_it_trains_the_student_and_the_report(humanoid, tmp_path):
    assert main(["distill", "--dataset", str(humanoid), "--runs-dir", str(tmp_path), "--run", "s", *QUICK,
                 *DISTILL]) == 0
    assert _robot(tmp_path / "humanoid-tiny")["name"] == "humanoid"  # the teacher, trained here
    assert _robot(tmp_path / "s")["name"] == "humanoid"
    resolved = (tmp_path / "s" / "report.md").read_text().split("## Resolved config")[1]
    assert yaml.safe_load(resolved.split("```yaml")[1].split("```")[0])["robot"]["name"] == "humanoid"


def test_a_robot_setting_applies_to_the_store_s_robot(humanoid, tmp_path):
    # The humanoid's head camera: refused as unknown to the arm the run used to compose.
    assert main(["train", "--dataset", str(humanoid), "--runs-dir", str(tmp_path), "--run", "t", *QUICK,
                 "robot.cameras.head.serial=SW-1"]) == 0
    assert _robot(tmp_path / "t")["cameras"]["head"]["serial"] == "SW-1"


def test_a_robot_the_store_contradicts_is_refused(humanoid, tmp_path, capsys):
    assert main(["train", "--dataset", str(humanoid), "--runs-dir", str(tmp_path), "--run", "t", *QUICK,
                 "robot=arm"]) != 0
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: robot=arm: {humanoid} was recorded on humanoid; a run records the robot of its data and trains "
        "the same without robot=: drop it")
    assert not (tmp_path / "t").exists()


def test_a_store_of_several_robots_names_them_all_and_no_robot_s_settings(tmp_path, caplog):
    store = _store(tmp_path / "mixed.zarr", ("arm", "humanoid", "humanoid"))
    with caplog.at_level(logging.WARNING):
        assert main(["distill", "--dataset", str(store), "--runs-dir", str(tmp_path), "--run", "s", *QUICK,
                     *DISTILL]) == 0
    for run in ("mixed-tiny", "s"):
        assert _robot(tmp_path / run) == {"recorded": ["arm", "humanoid"]}, run
    assert "records robots arm, humanoid: the run's config.yaml gives robot.recorded" in caplog.text


@pytest.mark.parametrize(("robot", "given", "saved"), [
    ("koch", [], {"recorded": ["koch"]}),  # imported: a robot without configs/robot/koch.yaml
    ("", [], {"recorded": []}),  # no robot recorded
    ("", ["robot=bimanual"], "bimanual"),  # ... so the user's word is taken
])
def test_a_store_that_names_no_robot_s_config(tmp_path, robot, given, saved):
    store = _store(tmp_path / "other.zarr", (robot,) * 2)
    assert main(["train", "--dataset", str(store), "--runs-dir", str(tmp_path), "--run", "t", *QUICK, *given]) == 0
    recorded = _robot(tmp_path / "t")
    assert (recorded["name"] if isinstance(saved, str) else recorded) == saved
