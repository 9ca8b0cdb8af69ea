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


def _episode(success, cube_start, cube_end, bowl_start=(0.0, 0.0, 0.0), bowl_end=(0.0, 0.0, 0.0)):
    return {"success": success, "objects": {"red_cube": {"start": list(cube_start), "end": list(cube_end)},
                                            "bowl": {"start": list(bowl_start), "end": list(bowl_end)}}}


def test_failure_kinds_follow_the_objects_end_position():
    tool = load_bench("sim_failures")
    start, bowl = [0.2, 0.0, 0.02], [0.0, 0.0, 0.0]
    assert tool.failure_kind({"start": start, "end": [0.21, 0.0, 0.02]}, bowl) == "never moved"
    assert tool.failure_kind({"start": start, "end": [0.25, 0.0, 0.02]}, bowl) == "moved on the table"
    assert tool.failure_kind({"start": start, "end": [0.21, 0.0, 0.12]}, bowl) == "in the air"
    assert tool.failure_kind({"start": start, "end": [0.05, 0.0, 0.12]}, bowl) == "at the bowl"  # held over it
    assert tool.failure_kind({"start": start, "end": [0.08, 0.0, 0.045]}, bowl) == "at the bowl"  # on its rim


def test_successes_are_binned_by_the_start_distance_in_cm_and_failures_counted_by_kind():
    tool = load_bench("sim_failures")
    episodes = [
        _episode(True, (0.13, 0.0, 0.02), (0.0, 0.0, 0.03)),  # 13 cm from the bowl
        _episode(False, (0.0, 0.135, 0.02), (0.0, 0.135, 0.02)),  # 13.5 cm, never moved
        _episode(False, (0.2, 0.0, 0.02), (0.3, 0.0, 0.02), bowl_end=(0.05, 0.0, 0.0)),  # 20 cm; bowl pushed 5 cm
        _episode(True, (0.3, 0.0, 0.02), (0.0, 0.0, 0.03)),  # 30 cm
    ]
    summary = tool.summarize(episodes, "red_cube", [12.5, 14.0, 25.0, 100.0])
    assert summary["bins"] == [(12.5, 14.0, 1, 2), (14.0, 25.0, 0, 1), (25.0, 100.0, 1, 1)]
    assert summary["failures"] == {"never moved": 1, "moved on the table": 1} and summary["bowl_moved"] == 1


def test_success_by_the_bowl_s_position_shows_placements_pulled_to_the_middle():
    tool = load_bench("sim_failures")
    cube = (0.0, 0.3, 0.02)
    episodes = [  # bowls at x = 0, 0.05, 0.1, 0.15, 0.2, 0.3: three slices of 0.1 m
        _episode(False, cube, (0.08, 0.0, 0.02), bowl_start=(0.0, 0.0, 0.0)),  # placed 8 cm past the near bowl
        _episode(True, cube, (0.05, 0.0, 0.03), bowl_start=(0.05, 0.0, 0.0), bowl_end=(0.05, 0.0, 0.0)),
        _episode(True, cube, (0.1, 0.0, 0.03), bowl_start=(0.1, 0.0, 0.0), bowl_end=(0.1, 0.0, 0.0)),
        _episode(True, cube, (0.15, 0.0, 0.03), bowl_start=(0.15, 0.0, 0.0), bowl_end=(0.15, 0.0, 0.0)),
        _episode(False, cube, (0.16, 0.0, 0.02), bowl_start=(0.2, 0.0, 0.0), bowl_end=(0.2, 0.0, 0.0)),  # -4 cm
        _episode(False, cube, (0.2, 0.0, 0.02), bowl_start=(0.3, 0.0, 0.0), bowl_end=(0.3, 0.0, 0.0)),  # -10 cm
    ]
    rows = tool.by_bowl_position(episodes, "red_cube", axis=0, slices=3)
    assert [(round(lo, 3), round(hi, 3), s, n) for lo, hi, s, n, _ in rows] == [
        (0.0, 0.1, 1, 2), (0.1, 0.2, 2, 2), (0.2, 0.3, 0, 2)]  # the last slice holds its upper edge
    assert rows[0][4] == pytest.approx(8.0) and rows[1][4] is None and rows[2][4] == pytest.approx(-7.0)
    # every bowl at y = 0: a range of zero width, one slice holds them all
    assert sorted(n for *_, n, _ in tool.by_bowl_position(episodes, "red_cube", axis=1, slices=2)) == [0, 6]


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

    older = json.loads((tmp_path / "still.json").read_text())  # as eval wrote it before positions were kept
    for episode in older["tasks"][0]["episodes"]:
        del episode["objects"]
    (tmp_path / "older.json").write_text(json.dumps(older))
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "sim_failures.py"),
                          *(str(tmp_path / f"{name}.json") for name in ("expert", "still", "older"))],
                         env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "skipped 2 episode(s) without object positions" in run.stdout
    assert "arm cube_in_bowl: 2/4 (50 %" in run.stdout
    assert "failures: never moved 2; the bowl moved >= 2 cm in 0 of them" in run.stdout
