"""The teacher's own episodes in the twin as more training data for its students
(`reproduce.py --teacher-rollouts N`; BENCHMARKS.md "Distillation" (b18)).

The paper's students learn from the fine-tuning demonstrations and from the teacher's
velocities on them. Here the teacher also drives the twin: N episodes of every task
(`platform deploy --sim --record`, the torch backend, sync selection: each chunk computed
before the loop goes on, a new one every half chunk, as `eval --sim` runs it), on scenes
neither the demonstrations nor `eval --sim` use; the successful ones join the
demonstrations in one store, the failed ones are left out. A student trained on that store learns the teacher's behaviour on states the
scripted expert never showed, labelled with the commands the teacher sent: sequence-level
knowledge distillation (Kim and Rush, "Sequence-Level Knowledge Distillation", EMNLP 2016),
the teacher's outputs on its own inputs as the student's training targets. The paper's loss
terms then act on these episodes too.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path
from typing import Any

from closed_loop import at_once, platform

from shallowpi.commands.deploy_recording import executed
from shallowpi.data.store import EpisodeStore
from shallowpi.data.store_edit import delete_episodes
from shallowpi.robots.sim.episode import EVAL_SEEDS
from shallowpi.robots.sim.tasks import make_tasks

# Task k's rollouts start at seed ROLLOUT_SEEDS + k * 100,000: past eval --sim's held-out
# scenes, and past what any recording of fewer than a million demonstrations reaches (record
# uses the seeds below 1000, then EVAL_SEEDS.stop onward).
ROLLOUT_SEEDS = 2 * EVAL_SEEDS.stop
SEEDS_PER_TASK = 100_000


def first_seed(task_index: int) -> int:
    """The scene seed of task `task_index`'s first rollout (its order in make_tasks)."""
    return ROLLOUT_SEEDS + task_index * SEEDS_PER_TASK


def record_rollouts(robot: str, teacher: Path, demos: Path, parts: Path, episodes: int, log: Path) -> None:
    """`episodes` of every task of `robot` driven by the checkpoint `teacher` in the twin,
    each task into its own store parts/<task>.zarr, the tasks on one process each at once
    (the twin renders on the CPU: one a core). The twin renders as `demos` was recorded
    (its size and image codec, `deploy --dataset`), and the teacher runs on the CPU
    (`--jetson cpu`) whatever this machine has: a GPU's other rounding would, in closed
    loop, make other episodes. A part already holding its episodes is kept; one left short
    or unreadable by an interrupted run is recorded again whole (a deployment has no
    --resume; a task takes minutes). The processes share one deploy bundle,
    parts/teacher.bundle (built once), and each publishes its telemetry on its own socket.
    SystemExit when a task's part is not complete afterwards (a deployment's exit status
    alone is not the test: a safety fault in one episode fails it, the others are kept)."""
    parts.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []

    def deploy(k: int, task: str) -> None:
        path = parts / f"{task}.zarr"
        try:
            if episodes_in(path) == episodes:
                return
            shutil.rmtree(path, ignore_errors=True)
            platform("deploy", "--policy", str(teacher), "--sim", "--robot", robot, "--task", task,
                     "--dataset", str(demos), "--jetson", "cpu", "--episodes", str(episodes),
                     "--seed", str(first_seed(k)), "--record", str(path), "--bundle", str(parts / "teacher.bundle"),
                     "--backend", "torch", "--strategy", "sync", "--no-tui",
                     f"telemetry.address=/tmp/shallowpi-rollouts-{os.getpid()}-{k}.sock", log=log)
            if (recorded := episodes_in(path)) != episodes:
                failed.append(f"{task} ({recorded} of {episodes} episodes)")
        except BaseException as exc:  # reported for the whole stage, not lost with the thread
            failed.append(f"{task} ({exc})")

    at_once([functools.partial(deploy, k, task) for k, task in enumerate(make_tasks(robot))])
    if failed:
        raise SystemExit(f"the teacher's rollouts of {', '.join(failed)} failed; see {log}")


def episodes_in(path: Path) -> int:
    """Episodes the store at `path` holds; 0 when there is none or it cannot be read."""
    try:
        with EpisodeStore.open(path) as store:
            return len(store)
    except Exception:  # an interrupted part, however broken, is recorded again
        return 0


def with_rollouts(robot: str, demos: Path, parts: Path, out: Path, log: Path) -> dict[str, dict[str, int]]:
    """Write `out`: the store `demos`, then every task's part store in `parts` (recorded by
    record_rollouts), less the episodes the teacher failed (deleted from the merged copy:
    the parts stay whole, so a rerun after an interruption records none again). Returns
    {task name: {"kept": n, "failed": m}}. SystemExit when a task's part is missing or the
    merge failed (the rollouts' features, rate or calibration differ from the
    demonstrations')."""
    counts: dict[str, dict[str, int]] = {}
    recorded = [parts / f"{task}.zarr" for task in make_tasks(robot)]
    if missing := [path.name for path in recorded if not path.is_dir()]:
        raise SystemExit(f"no rollouts in {parts} for {', '.join(missing)}: record them first")
    for path in recorded:
        with EpisodeStore.open(path) as store:
            failed = sum(not e.success for e in store.episodes)
            counts[path.stem] = {"kept": len(store) - failed, "failed": failed}
    merging = out.with_name(out.stem + ".merging.zarr")
    shutil.rmtree(merging, ignore_errors=True)
    if platform("dataset", "merge", str(demos), *map(str, recorded), "--out", str(merging), log=log).returncode:
        raise SystemExit(f"merging the teacher's rollouts into the demonstrations failed; see {log}")
    with EpisodeStore.open(merging, "a") as store:
        failed_rollouts = [e.index for e in store.episodes if executed(e.extra) and not e.success]
        if failed_rollouts:
            delete_episodes(store, failed_rollouts)
    shutil.rmtree(out, ignore_errors=True)
    merging.rename(out)
    return counts


def rollout_summary(counts: dict[str, dict[str, Any]]) -> str:
    """One line: how many rollouts each task kept, of how many."""
    return ", ".join(f"{task} {c['kept']}/{c['kept'] + c['failed']}" for task, c in counts.items())
