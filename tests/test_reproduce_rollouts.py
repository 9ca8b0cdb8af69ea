"""tools/bench/reproduce.py --teacher-rollouts: the students' store of the demonstrations and
the teacher's own episodes, made again on a new machine and checked (BENCHMARKS.md
"Distillation" (b18)). A file of its own so that its loop and test_reproduce.py's run on two
pytest workers at once (`--dist loadfile` keeps each file on one)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench_scripts import load_bench
from test_reproduce import ROOT, SCRIPT, stages_run


@pytest.mark.slow
def test_students_also_train_on_the_teachers_successful_rollouts(tmp_path):
    """--teacher-rollouts N: the shipped teacher drives the twin N episodes a task on scenes
    of its own, and the students train on the demonstrations followed by its successful
    episodes (that the failed ones are left out: test_reproduce.py's
    test_the_rollouts_join_the_demonstrations_less_the_teachers_failures, on stores of known
    outcomes); a new machine makes that store again and finds it the same (the twin, the
    teacher's sampling on the CPU and the recorder are deterministic). One that differs is
    refused: the next test."""
    from shallowpi.data.store import EpisodeStore

    sys.path.insert(0, str(SCRIPT.parent))
    from teacher_rollouts import first_seed

    work, kept = tmp_path / "work", tmp_path / "kept"
    cmd = [sys.executable, str(SCRIPT), "--robots", "arm", "--rows", "kd6", "--episodes", "1",
           "--teacher", f"arm={ROOT / 'robots' / 'arm' / 'teacher'}", "--teacher-rollouts", "2",
           "--student-steps", "2", "--eval-episodes", "1", "--eval-time-s", "1", "--eval-workers", "1",
           "--latency-repeats", "1", "--out", str(work), "--results", str(kept),
           "--set", "policy.train.batch_size=2", "policy.train.warmup_steps=0", "policy.train.workers=0"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert stages_run(done) == ["record", "given_teacher", "teacher_rollouts", "train_kd6", "eval_kd6",
                                "latency_teacher_6"]
    assert json.loads((kept / "arm" / "recipe.json").read_text())["teacher_rollouts"] == 2
    counts = json.loads((kept / "arm" / "stages" / "teacher_rollouts.json").read_text())["rollouts"]
    assert list(counts) == ["cube_in_bowl", "push_block_left"]
    assert all(c["kept"] + c["failed"] == 2 for c in counts.values()) and sum(c["kept"] for c in counts.values())
    mixed = work / "arm" / "arm_rollouts.zarr"
    with EpisodeStore.open(mixed) as store:
        episodes = store.episodes
    assert [e.extra["seed"] for e in episodes[:2]] == [0, 1]  # the demonstrations first, as recorded
    rollouts = episodes[2:]
    assert len(rollouts) == sum(c["kept"] for c in counts.values()) and all(e.success for e in rollouts)
    for k, task in enumerate(counts):
        seeds = [e.extra["seed"] for e in rollouts if e.task == episodes[k].task]
        assert set(seeds) <= {first_seed(k), first_seed(k) + 1} and len(seeds) == counts[task]["kept"]
    assert "policy_sha256" in rollouts[0].extra  # marked as a policy's episodes (deploy --record)
    trained_on = OmegaConf.load(work / "arm" / "runs" / "kd6" / "config.yaml").dataset
    assert Path(trained_on).resolve() == mixed.resolve()
    assert not (work / "arm" / "rollouts").exists()  # merged and kept: the parts are spent
    # A new machine: the results came along, the work folder did not, but for the
    # demonstrations' store (recording that again and finding it the same is test_reproduce.py's
    # whole loop); a row added remakes the students' store (its stage kept): the teacher drives
    # the twin again, and the store comes out the same.
    demos = work / "arm" / "arm.zarr"
    for path in [*(work / "arm").iterdir(), *work.iterdir()]:
        if path in (demos, demos.parent):
            continue
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    assert [*work.iterdir()] == [demos.parent] and [*demos.parent.iterdir()] == [demos]
    added = subprocess.run([*cmd[:cmd.index("kd6")], "task6", *cmd[cmd.index("kd6") + 1:]], env=env,
                           capture_output=True, text=True, timeout=900)
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    assert stages_run(added) == ["train_task6", "eval_task6"] and mixed.is_dir()
    assert "arm: the teacher's rollouts kept, a task: " in added.stdout  # made again, not found
    assert Path(OmegaConf.load(work / "arm" / "runs" / "task6" / "config.yaml").dataset).resolve() == mixed.resolve()


def test_a_students_store_made_again_otherwise_is_refused_and_not_left(tmp_path, monkeypatch):
    """A machine whose teacher drove other episodes (a CPU that rounds otherwise) makes a
    students' store that differs from the kept stage's: refused in one line, and deleted, so
    the next run makes and checks it again rather than training on it unchecked (it was left
    in place before). The same store made again is taken."""
    from store_fixtures import make_store

    reproduce = load_bench("reproduce")
    import stage_cache  # on sys.path once reproduce is loaded

    teacher = ROOT / "robots" / "arm" / "teacher"
    stages = stage_cache.Stages(tmp_path / "stages", tmp_path / "locks", "arm")
    make_store(tmp_path / "kept.zarr", episodes=2).close()
    kept = {"rollouts": {}, "teacher_sha256": stage_cache.weights_sha256(teacher),
            "fingerprint": stage_cache.store_fingerprint(tmp_path / "kept.zarr")}
    stages.run("teacher_rollouts", lambda: kept)

    class Demos:
        def ready(self) -> Path:
            return tmp_path / "demos.zarr"

    students = reproduce.StudentStore("arm", Demos(), tmp_path / "work", argparse.Namespace(teacher_rollouts=2),
                                      tmp_path / "log.txt", stages)
    made = []
    seed = [1]

    def merge(_robot, _demos, _parts, out, _log):  # stands in for the rollouts merged after the demonstrations
        make_store(out, episodes=2, seed=seed[0]).close()
        made.append(seed[0])
        return {}

    monkeypatch.setattr(reproduce, "record_rollouts", lambda *args: None)
    monkeypatch.setattr(reproduce, "with_rollouts", merge)
    for _ in range(2):
        with pytest.raises(SystemExit, match=r"arm_rollouts\.zarr was made again and differs from the store"):
            students.ready(teacher)
        assert not students.path.exists() and not list(tmp_path.glob("*.making"))
    seed[0] = 0
    assert students.ready(teacher) == students.path and students.path.is_dir()
    assert students.ready(teacher) == students.path and made == [1, 1, 0]  # kept: not made again
