"""A policy trained here succeeds in closed loop, and one that learned nothing does not.

The whole loop through the real commands, at the smallest scale that still learns: record
10 scripted demonstrations of the arm's easy check task (`reach_cube`: the open gripper
over a cube that stays within a centimetre of one spot; robots/sim/tasks.py), train
`tiny` on them for 800 steps (~40 s of one core), and drive the twin with it on 10 unseen
seeds through `platform eval --sim`, as the robot's executor would. The same architecture
with the same dataset statistics but untrained weights (trained at learning rate 0) is
the bar: it fails, so a success here says the recording, the training, the normalisation
and the action selection line up well enough to drive the arm where the demonstrations went.

Measured when written (2-core CPU, 10 unseen seeds each): three recordings trained 600
steps succeeded 10, 10 and 7 times in 10; two training seeds at step 800 (of 1,000) 10 and
9; untrained 0/10 (BENCHMARKS.md, "CI test"). Hence the bar of 6. With two joints of the
policy's chunk swapped on the way to the robot the trained policy scored 0/10. The reach
is forgiving of timing: a chunk played back to front (its later actions first) still
passed, which tests/test_action_selection.py pins instead.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("torch")

from conftest import platform_cmd, subprocess_env

EPISODES = 10
STEPS = 800
EVAL_EPISODES = 10
BAR = 6  # successes of EVAL_EPISODES the trained policy must reach (untrained: 0)
# tiny with chunks of 8 (replanned every 4): its default chunk of 4 is 0.13 s of motion.
# Min-max scaling as the teacher preset has it (grippers keep their 0..1).
RECIPE = ("policy.chunk_len=8", "policy.train.batch_size=16", "+policy.normalization=minmax")


def _run(*args: str, timeout: float) -> str:
    done = subprocess.run(platform_cmd(*args), env=subprocess_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"platform {args[0]} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _train(store: Path, runs: Path, name: str, steps: int, *extra: str) -> Path:
    _run("train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(runs), "--run", name,
         "--steps", str(steps), "--no-progress", *RECIPE, f"policy.train.save_every={steps}", *extra,
         timeout=600)
    return runs / name / "checkpoints" / f"step_{steps:06d}"


def _successes(checkpoint: Path, out: Path) -> int:
    report = out / f"{checkpoint.parent.parent.name}.json"
    _run("eval", "--policy", str(checkpoint), "--sim", "--task", "reach_cube",
         "--sim-episodes", str(EVAL_EPISODES), "--seed", "2000", "--no-progress", "--json", str(report),
         timeout=300)
    (task,) = json.loads(report.read_text())["tasks"]
    assert task["task"] == "reach_cube" and len(task["episodes"]) == EVAL_EPISODES
    return sum(e["success"] for e in task["episodes"])


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reach")
    out = _run("record", "--robot", "arm", "--sim", "direct", "--task", "reach_cube",
               "--data-root", str(root), "--dataset", "reach", "--episodes", str(EPISODES),
               "--reset-time-s", "0", "--no-tui", "--seed", "0",
               # DART: the executed goals perturbed, the expert's clean goals stored as labels
               "record.sim_size=32x32", "record.sim_noise=0.005", f"telemetry.address={root}/t.sock",
               timeout=300)
    assert f"{EPISODES}/{EPISODES} successful" in out
    return root / "reach.zarr"


@pytest.mark.slow
def test_a_policy_trained_on_ten_demonstrations_succeeds_where_an_untrained_one_fails(store, tmp_path):
    untrained = _train(store, tmp_path / "runs", "untrained", 1, "policy.train.lr=0", "policy.train.min_lr=0")
    trained = _train(store, tmp_path / "runs", "reach", STEPS)

    assert _successes(untrained, tmp_path) < BAR // 2
    assert _successes(trained, tmp_path) >= BAR
