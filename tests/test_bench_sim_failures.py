"""tools/bench/sim_failures.py: success by scene and how failures ended, from `eval --sim` JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from bench_scripts import load_bench
from conftest import subprocess_env
from shallowpi import config
from shallowpi.evaluate.sim_eval import SimEvalConfig, evaluate_in_sim
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import TwinSpec
from test_sim_eval import ExpertChunks, hold_start_pose

ROOT = Path(__file__).resolve().parents[1]


def test_failure_kinds_follow_the_objects_end_position():
    tool = load_bench("sim_failures")
    start = [0.0, 0.0, 0.02]
    assert tool.failure_kind({"start": start, "end": [0.01, 0.0, 0.02]}) == "never moved"
    assert tool.failure_kind({"start": start, "end": [0.05, 0.0, 0.02]}) == "moved on the table"
    assert tool.failure_kind({"start": start, "end": [0.01, 0.0, 0.12]}) == "in the air"


def test_the_tool_reads_eval_json_the_expert_succeeds_and_holding_still_leaves_the_cube_in_place(tmp_path):
    """Real episodes through the closed loop: the scripted expert (chunk by chunk) on seeds
    1000-1001 and a policy that holds still on the same seeds, one JSON each, as `platform
    eval --sim --json` writes them."""
    arm = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    task = get_task("arm", "cube_in_bowl")
    with DirectSimRobot(arm, cameras=()) as robot:
        expert = evaluate_in_sim(robot, task, ExpertChunks(robot, task, k=8), SimEvalConfig(episodes=2, seed_start=1000))
        still = evaluate_in_sim(robot, task, hold_start_pose, SimEvalConfig(episodes=2, seed_start=1000,
                                                                             max_seconds=2.0))
    for name, report in (("expert", expert), ("still", still)):
        (tmp_path / f"{name}.json").write_text(json.dumps({"robot": "arm", "tasks": [report.to_dict()]}))

    tool = load_bench("sim_failures")
    episodes = [e for name in ("expert", "still")
                for e in json.loads((tmp_path / f"{name}.json").read_text())["tasks"][0]["episodes"]]
    summary = tool.summarize(episodes, "red_cube", [0.0, 100.0])
    assert summary["bins"] == [(0.0, 100.0, 2, 4)]
    assert summary["failures"] == {"never moved": 2} and summary["bowl_moved"] == 0

    run = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "sim_failures.py"),
                          str(tmp_path / "expert.json"), str(tmp_path / "still.json")],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "arm cube_in_bowl: 2/4 (50 %" in run.stdout
    assert "failures: never moved 2; bowl moved >= 2 cm in 0" in run.stdout
