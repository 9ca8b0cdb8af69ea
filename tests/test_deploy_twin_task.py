"""`platform deploy --sim` without --task runs a task its policy was trained on, and says
what runs: the task from the checkpoint's training store (the twin's first task only where
the store cannot say), the device and precision torch really runs on in the plan line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest

from deploy_fixtures import tiny_checkpoint
from shallowpi.cli import parse_command
from shallowpi.data.features import robot_features
from shallowpi.data.store import EpisodeStore

PUSH = "push the blue block to the left"
SIZE = (32, 24)  # render width, height: small, the store's frames


def _store(path: Path, tasks: list[str]) -> Path:
    """An arm store of one-frame episodes at the twin's 30 Hz, one per text in `tasks`."""
    from shallowpi import config
    from shallowpi.robots.spec import RobotSpec

    arm = RobotSpec.from_config(config.compose(["robot=arm"]).robot)
    store = EpisodeStore.create(path, robot_features(arm.joint_names, {"front": SIZE[::-1]}, arm.joint_kinds))
    for task in tasks:
        episode = store.begin_episode(task, robot="arm", calibration_id="sim-arm", fps=30)
        episode.add_frame({"observation.state": np.zeros(len(arm.joints), np.float32),
                           "action": np.zeros(len(arm.joints), np.float32),
                           "observation.images.front": np.zeros((*SIZE[::-1], 3), np.uint8)}, 0.0)
        episode.commit()
    store.close()
    return path


def _twin(tmp_path: Path, store: Path | None, task: str | None = None):
    from shallowpi.commands.deploy_targets import twin_target
    from shallowpi.deploy.bundle import build_bundle

    meta = {"dataset": str(store)} if store is not None else None
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",), meta=meta)
    bundle = build_bundle(ckpt, tmp_path / "bundle", graphs=())
    args = argparse.Namespace(robot=None if store is not None and store.exists() else "arm", task=task, jetson=None, data_root=None,
                              overrides=[], episode_time_s=None, sim="direct")
    return twin_target(args, bundle)


def test_without_task_the_twin_runs_the_task_the_training_store_recorded(tmp_path, capsys):
    """A policy trained on push_block_left alone ran cube_in_bowl (the twin's first task),
    saying "the store records 2 tasks" of a store that records one."""
    store = _store(tmp_path / "push.zarr", [PUSH, PUSH])
    target = _twin(tmp_path, store)
    assert target.task.name == "push_block_left" and target.instruction == PUSH
    out = capsys.readouterr().out
    assert (f"store {store} records 1 task; running push_block_left ('{PUSH}'), the task it records "
            "(choose with --task)") in out
    assert "2 tasks" not in out


def test_without_task_a_store_of_several_tasks_runs_its_first_the_twin_has(tmp_path, capsys):
    # Recorded on the real robot too ("wave"): counted, not run; of the twin's, its order.
    store = _store(tmp_path / "mixed.zarr", ["wave", PUSH, "put the red cube in the bowl"])
    assert _twin(tmp_path, store).task.name == "cube_in_bowl"
    assert (f"store {store} records 3 tasks; running cube_in_bowl ('put the red cube in the bowl'), the first of "
            "them the arm twin has (choose with --task)") in capsys.readouterr().out


def test_without_task_a_store_that_is_gone_or_unnamed_runs_the_twins_first_task_and_says_why(tmp_path, capsys):
    gone = tmp_path / "gone.zarr"  # named by the checkpoint, never here (copied from another machine)
    target = _twin(tmp_path / "gone", gone, task=None)
    assert target.task.name == "cube_in_bowl"
    out = capsys.readouterr().out
    assert (f"running cube_in_bowl ('put the red cube in the bowl'), the arm twin's first task: the training store "
            f"{gone} is not here to say which it learned (choose with --task)") in out
    assert "records" not in out
    unnamed = _twin(tmp_path / "unnamed", None)
    assert unnamed.task.name == "cube_in_bowl"
    assert "names no training store to say which it learned (choose with --task)" in capsys.readouterr().out
    # --task still chooses, whatever the store recorded
    assert _twin(tmp_path / "chosen", _store(tmp_path / "p.zarr", [PUSH]), task="cube_in_bowl").task.name == "cube_in_bowl"


def _deploy(tmp_path: Path, ckpt: Path, *words: str) -> tuple[int, dict]:
    """`platform deploy --sim` in this process, one half-second episode; its exit code and --json."""
    report = tmp_path / "run.json"
    args = parse_command(["deploy", "--policy", str(ckpt), "--sim", "--episodes", "1", "--episode-time-s", "0.5",
                          "--no-tui", "--json", str(report), *words, f"telemetry.address={tmp_path}/deploy.sock"])
    code = args.run(args)
    return code, json.loads(report.read_text())


@pytest.mark.usefixtures("one_torch_thread")
def test_the_json_names_the_task_and_instruction_run(tmp_path):
    # The demo added "task" to deploy's JSON itself; a script reading any other run's had no way to tell.
    store = _store(tmp_path / "push.zarr", [PUSH])
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",), meta={"dataset": str(store)})
    code, data = _deploy(tmp_path, ckpt, "--backend", "torch")
    assert code == 0
    assert data["task"] == "push_block_left" and data["instruction"] == PUSH


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine without CUDA")
def test_the_plan_line_says_torch_runs_on_the_cpu_where_the_profile_asks_cuda(tmp_path, capsys):
    """`--jetson cuda` without a CUDA GPU printed "profile cuda: torch on cuda (bf16)", and kept
    it as --json's "plan", while the chunks ran on the CPU in float32."""
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",))
    code, data = _deploy(tmp_path, ckpt, "--robot", "arm", "--task", "cube_in_bowl", "--jetson", "cuda")
    line = ("profile cuda: torch on cuda (bf16); torch sees no CUDA GPU here: it runs on cpu (fp32), "
            "not cuda (bf16)")
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0] == line, out
    assert "backend torch on cpu (fp32)" in out
    assert data["plan"] == line and data["runs_on"] == "cpu (fp32)" and data["profile"] == "cuda"


@pytest.mark.usefixtures("one_torch_thread")
def test_the_plan_line_says_torch_computes_in_float32_on_the_cpu(tmp_path, capsys):
    # The same on any machine: torch casts its towers to the profile's precision on a GPU only.
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",))
    code, data = _deploy(tmp_path, ckpt, "--robot", "arm", "--task", "cube_in_bowl", "--jetson", "cpu",
                         "--backend", "torch", "jetson.precision=bf16")
    line = "profile cpu: torch on cpu (bf16); torch computes in fp32 on cpu: it runs on cpu (fp32), not cpu (bf16)"
    out = capsys.readouterr().out
    assert code == 0 and out.splitlines()[0] == line, out
    assert data["plan"] == line and data["runs_on"] == "cpu (fp32)"
