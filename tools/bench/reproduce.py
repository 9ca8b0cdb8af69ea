"""The Shallow-π experiment at the twins' scale, resumable (issue 16; BENCHMARKS.md "Reproduction").

For each robot: record scripted demonstrations of all its tasks into one store, train one
language-conditioned teacher on them, cut and train the students of the paper's ablation
(arXiv 2601.20262: all three losses, task loss only, task + output distillation, the cut
without training, and other depths), evaluate every model in closed loop on the same unseen
seeds, time one chunk of every model in one process, and write the table and two plots
(reproduce_report.py, which makes them again from the kept results alone).

    python tools/bench/reproduce.py                                  # arm and humanoid, every row
    python tools/bench/reproduce.py --robots arm --rows teacher shallow6 task6
    python tools/bench/reproduce.py --set policy.train.batch_size=16 --teacher-steps 18000
    python tools/bench/reproduce.py --robots arm --teacher arm=robots/arm/teacher   # the shipped teacher

BENCHMARKS.md's run, with the shipped teachers and the recipes they were trained with, is
made by the two commands in docs/reproduce/README.md.

Rows (`--rows`, default every row of the robot: arm all, humanoid teacher/shallow6/task6/
shallow6f, bimanual teacher/shallow6/task6; shallow6f only with --set
policy.train.successful_only=true, the recipe that has failed demonstrations to give it):

    teacher    the 18-layer teacher            shallow9/6/4/3  k layers, all three losses
    task6/4    k layers, task loss only        kd6             task + output distillation
    cut6       the 6-layer cut, no training (saved through the same path with lr 0)
    shallow6f  shallow6, and the demonstrations successful_only leaves out train it through
               the teacher's terms (distill.failed_episodes=teacher)

With `--teacher-rollouts N` the students train on the demonstrations followed by the
teacher's successful episodes of N in the twin a task (teacher_rollouts.py: sequence-level
distillation, a stage of its own; every row of the folder, the task-only ones too).

Resumable: every stage writes its result as JSON under --results (default: --out) when it
finishes, and a rerun of the same command skips it; an interrupted training continues from
its last checkpoint (`--resume`), an interrupted evaluation from its last finished block of
`--block` seeds. An evaluation asked for more seeds than it holds evaluates only the new
blocks. The minutes a stage took add up over interrupted attempts. Stages are named by row,
not by recipe: a rerun may add rows, robots or seeds, but one that changes the recipe
(steps, episodes, noise, size, --set, the given teacher) is refused; give it other folders.
To make finished rows again, rerun once with `--redo ROW ...` (a trained teacher takes every
row with it); deleting their JSON is not enough, their runs would be resumed. Rerun once
with `--retime` to time the chunks again and remake the table after a change to the
inference path (latency depends on the code, not on what the rows learned): with every
row finished, nothing else runs; rows still missing are made as without it. Every result
names the weights it was made from or judged (sha256): a student of another teacher, or an
evaluation of other weights, is refused or redone, never mixed into the table. What else
decides a result is named too: a block, the judge code (JUDGE_CODE) and its support files
(JUDGE_SUPPORT: the robot configs, the robot contract, the codec, the evaluation tool); the
store, its arrays and its episodes' labels (stage_cache.store_fingerprint); a folder, the
presets by content. The support files, the labels and the presets were added after results
were kept without them, and are compared only where a result names them. Two runs
with different --rows may share both folders: each stage runs under a lock.

Across machines: --out holds what is big and local (the recorded store, the runs, the log),
--results only the small JSON of finished stages, the evaluation blocks (per seed) and the
table. Kept in git (BENCHMARKS.md's run is in docs/reproduce/), the results let a
run that takes more hours than one machine session be made across several: a new machine
re-records the store (a check compares its fingerprint with the one recorded: the twin and
the experts are deterministic), trains and evaluates only the rows still missing, and times
every depth in one process from the teacher's cuts (a trained student computes what its
untrained cut does: latency depends on the architecture, not on the weights). The table
holds every row and robot the results folder has, whichever run made it. A teacher trained
by this tool stays in --out like the students, and no student can be made on a machine
without it: for a run spread over machines, ship the teacher first (tools/ship_teacher.py)
and pass it with --teacher, as robots/arm/teacher is.

Cost on the 2-core machine, one thread a job, two jobs at a time (BENCHMARKS.md
"Reproduction" has the measured table): recording 7-9 minutes a robot in one process, about
half that on two (`--record-workers`, the default: the same store); a 9,000-step teacher
~1.2 hours (arm, one quiet core) to ~2 (humanoid, beside another job); a 6,000-step student
15-31 minutes with the task loss only, 26-46 with all three; an evaluation of 200 seeds a
task 3-8 minutes (the seeds are spread over `--eval-workers` processes, one a core). With
the shipped teachers given, every row of both robots takes ~5.7 core-hours.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
# closed_loop puts this checkout's platform/ on sys.path for the shallowpi import after it.
from closed_loop import ROOT, evaluate, noise_of, parse_task_noise, platform, record
from reproduce_report import report
from reproduce_rows import ROBOT_ROWS, ROWS, Row, leaves_out_failed, robot_rows
from stage_cache import (
    Stages,
    check_recipe,
    fingerprint_differs,
    portable,
    store_fingerprint,
    weights_of,
    weights_sha256,
)
from teacher_rollouts import SEEDS_PER_TASK, record_rollouts, rollout_summary, with_rollouts

from shallowpi.config import parse_size
from shallowpi.data.durable_io import write_json
from shallowpi.durable_files import replace_text
from shallowpi.evaluate.interval import wilson_interval
from shallowpi.robots.sim.tasks import make_tasks
from shallowpi.train.checkpoint import checkpoint_weights, latest_checkpoint


class RecordedStore:
    """The robot's store of scripted demonstrations in this machine's work folder: recorded
    by the `record` stage, or, where that stage finished on another machine (or this one
    lost the store), recorded again on first use and checked against its fingerprint."""

    def __init__(self, robot: str, path: Path, args: argparse.Namespace, log: Path, stages: Stages) -> None:
        self.robot, self.path, self.args, self.log, self.stages = robot, path, args, log, stages
        self.checked = False
        self.fingerprint = stages.run("record", self._record)["fingerprint"]

    def _record_missing(self) -> dict[str, str]:
        # Only the episodes a task lacks are recorded: none when this work folder holds the store.
        args = self.args
        record(self.robot, self.path, args.episodes, args.size, args.sim_noise, self.log,
               noise_of(self.robot, args.task_noise), workers=args.record_workers)
        return store_fingerprint(self.path)

    def _record(self) -> dict[str, Any]:
        self.checked = True
        return {"fingerprint": self._record_missing()}

    def ready(self) -> Path:
        """The store, recorded and checked. SystemExit in one line when it differs from the
        one the kept stages were made from."""
        if not self.checked:
            with self.stages.lock("record"):
                found = self._record_missing()
            differ = fingerprint_differs(found, self.fingerprint)
            if differ:
                raise SystemExit(
                    f"{self.path} differs from the store the kept stages were made from in its "
                    f"{' and '.join(differ)} ({self.stages.folder / 'record.json'}): a store left in --out by "
                    "another recipe (delete it), or this machine's twin records otherwise (use another --results)")
            self.checked = True
        return self.path


class StudentStore:
    """The store the trained students learn from: the demonstrations, and with
    --teacher-rollouts N the teacher's N rollouts a task after them, its failed ones left
    out (teacher_rollouts.py), made by the `teacher_rollouts` stage, which names the
    teacher that drove them. On a machine that lacks the store (the stage finished
    elsewhere) it is made again and checked against the stage's fingerprint, as the recorded
    store is; the teacher runs on the CPU there too, but a CPU of another kind may round
    otherwise, and the closed loop then makes other episodes: the check says so."""

    def __init__(self, robot: str, demos: RecordedStore, work: Path, args: argparse.Namespace, log: Path,
                 stages: Stages) -> None:
        self.robot, self.demos, self.work, self.args, self.log, self.stages = robot, demos, work, args, log, stages
        self.path = work / f"{robot}_rollouts.zarr"

    def _make(self, teacher: Path, sha: str, kept: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the teacher's rollouts (parts kept in the work folder) and merge them with
        the demonstrations into the students' store. It is made beside its place and
        fingerprinted there, then renamed in: a run cut short while it was fingerprinted (it
        decodes every frame) had left it in place, and the next run trained on it unchecked.
        `kept`: the stage's kept fingerprint, which a store made again must match (SystemExit
        in one line otherwise, the store deleted)."""
        parts = self.work / "rollouts" / sha[:16]  # another teacher's parts are never reused
        demos = self.demos.ready()
        record_rollouts(self.robot, teacher, demos, parts, self.args.teacher_rollouts, self.log)
        making = self.path.with_name(self.path.name + ".making")
        shutil.rmtree(making, ignore_errors=True)
        counts = with_rollouts(self.robot, demos, parts, making, self.log)
        found = store_fingerprint(making)
        if kept is not None and (differ := fingerprint_differs(found, kept)):
            shutil.rmtree(making)
            raise SystemExit(f"{self.path} was made again and differs from the store the kept stages were trained "
                             f"on in its {' and '.join(differ)} (the teacher's episodes came out otherwise on this "
                             "machine): use another --results")
        shutil.rmtree(self.path, ignore_errors=True)  # one a run before this code left unchecked
        making.rename(self.path)
        print(f"{self.robot}: the teacher's rollouts kept, a task: {rollout_summary(counts)}", flush=True)
        return {"rollouts": counts, "teacher_sha256": sha, "fingerprint": found}

    def ready(self, teacher: Path) -> Path:
        """The students' store for those cut from the checkpoint `teacher`, made first when
        missing. SystemExit in one line when the kept stage's rollouts were driven by another
        teacher, or a store made again differs from the one the kept stages trained on (that
        store is deleted, so every run refuses it)."""
        if not self.args.teacher_rollouts:
            return self.demos.ready()
        sha = weights_sha256(teacher)
        made = self.stages.run("teacher_rollouts", lambda: self._make(teacher, sha))
        if made["teacher_sha256"] != sha:
            raise SystemExit(f"the kept teacher_rollouts stage was driven by another teacher than {teacher}: "
                             "rerun with --redo teacher, or use another --results")
        with self.stages.lock("teacher_rollouts"):
            if not self.path.exists():
                self._make(teacher, sha, kept=made["fingerprint"])
            shutil.rmtree(self.work / "rollouts", ignore_errors=True)  # merged and kept: the parts are spent
        return self.path


def _last_weights(run: Path) -> Path:
    """The run's newest checkpoint's weights: its EMA average when the run kept one (the
    `teacher` preset does, and is judged by it), else the raw weights."""
    newest = latest_checkpoint(run)
    if newest is None:
        raise SystemExit(f"{run} has no checkpoint; see its log")
    return checkpoint_weights(newest)


def train_teacher(store: Path, run: Path, args: argparse.Namespace, log: Path) -> dict[str, Any]:
    resume = ["--resume"] if latest_checkpoint(run) else []
    steps = ["--steps", str(args.teacher_steps)] if args.teacher_steps else []  # default: the preset's
    done = platform("train", "--dataset", str(store), "--policy", args.policy, "--runs-dir", str(run.parent),
                    "--run", run.name, *steps, "--no-progress", *resume, *args.set, log=log)
    if done.returncode:
        raise SystemExit(f"training the teacher failed; see {log}")
    checkpoint = _last_weights(run)
    return {"checkpoint": portable(checkpoint), "weights_sha256": weights_sha256(checkpoint)}


def train_student(row: Row, store: Path, teacher: Path, run: Path, args: argparse.Namespace,
                  log: Path) -> dict[str, Any]:
    steps = args.student_steps if row.trained else 1
    untrained = [] if row.trained else ["+distill.train.lr=0", "+distill.train.min_lr=0", "+distill.train.warmup_steps=0"]
    resume = ["--resume"] if latest_checkpoint(run) else []
    done = platform("distill", "--dataset", str(store), "--policy", args.policy, "--teacher", str(teacher),
                    "--layers", str(row.layers), "--runs-dir", str(run.parent), "--run", run.name,
                    "--steps", str(steps), "--no-progress", *resume, *args.set, *row.distill_settings(),
                    "distill.sim_episodes=0",
                    "distill.compare_selections=false", "distill.latency_repeats=3", *untrained, log=log)
    if done.returncode:
        raise SystemExit(f"distilling {row.name} failed; see {log}")
    facts = json.loads((run / "distill.json").read_text())
    checkpoint = _last_weights(run)
    return {"checkpoint": portable(checkpoint), "weights_sha256": weights_sha256(checkpoint),
            "teacher_sha256": facts["teacher_sha256"], "kept_layers": facts["kept_layers"],
            "loss_weights": facts["loss_weights"]}


def render_size(args: argparse.Namespace) -> list[int]:
    """--size as [width, height], the form an evaluation report keeps it in."""
    return list(parse_size(args.size, "--size"))


# What judges an episode: the twins and their success detectors, the closed-loop evaluation,
# and the policy's path from observation to action. A block judged by other code is judged again.
JUDGE_CODE = ("platform/shallowpi/robots/sim/*.py", "platform/shallowpi/evaluate/*.py",
              "platform/shallowpi/policy/*.py", "platform/shallowpi/commands/eval_cmd.py",
              "robots/*/twin.xml", "robots/*/twin.yaml", "robots/common/*.xml")


# What also decides an episode's outcome, found after blocks were kept without it: the robot
# configs (the twins' joint speeds), the robot contract and observation path the twin runs
# through, the store's image codec applied to renders, and the evaluation's tool. Recorded
# in every block judged since as judge_support_sha256, compared only where a block has it.
JUDGE_SUPPORT = ("configs/robot/*.yaml", "platform/shallowpi/robots/spec.py", "platform/shallowpi/robots/base.py",
                 "platform/shallowpi/robots/observation.py", "platform/shallowpi/data/codecs.py",
                 "tools/bench/closed_loop.py")
# Keys of a judged block compared only where the block has them.
ADDED_JUDGE_KEYS = ("judge_support_sha256",)


@functools.cache  # asked for each block and each kept row; the checkout does not change meanwhile
def judge_fingerprint() -> str:
    """sha256 over the names and bytes of the JUDGE_CODE files of this checkout."""
    from shallowpi.deploy.bundle import files_sha256

    return files_sha256(ROOT, JUDGE_CODE)


@functools.cache
def judge_support_fingerprint() -> str:
    """sha256 over the names and bytes of the JUDGE_SUPPORT files of this checkout."""
    from shallowpi.deploy.bundle import files_sha256

    return files_sha256(ROOT, JUDGE_SUPPORT)


def judged_by_this_code(result: dict[str, Any]) -> bool:
    """Whether a kept block or evaluation was judged by this checkout's judge code (and its
    support files, where it names them)."""
    return result.get("judge_sha256") == judge_fingerprint() and all(
        result[key] == judge_support_fingerprint() for key in ADDED_JUDGE_KEYS if key in result)


def judged_as_asked(result: dict[str, Any], sha: str, robot: str, args: argparse.Namespace) -> bool:
    """Whether a kept evaluation `result` counts for this run: of the weights `sha`, by this
    checkout's judge code (the same detectors), with the asked episode cap and render size,
    every task of `robot` (an evaluation of none was taken as complete) and at least
    `args.eval_episodes` seeds each."""
    return (result.get("weights_sha256") == sha and judged_by_this_code(result)
            and result.get("episode_time_s") == args.eval_time_s and result.get("render_size") == render_size(args)
            and len(result.get("tasks", {})) == len(make_tasks(robot))
            and all(task["episodes"] >= args.eval_episodes for task in result["tasks"].values()))


def evaluate_row(checkpoint: Path, sha: str, robot: str, store: Path, folder: Path, work: Path,
                 args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """Closed-loop success per task on seeds 1000.. 1000 + eval_episodes - 1, in resumable
    blocks of `args.block` seeds kept in `folder` (the workers' partial files go to `work`).

    Every model sees the twin as training saw it: `--dataset store` sets the render size
    and the store's image codec, for a given teacher too (its checkpoint names no store;
    without it `eval --sim` rendered at record.sim_size, 224x224, with no codec).
    Each block names the sha256 of the weights it judged (`sha`), of the code that judged
    them (`judge_fingerprint`: a detector tightened since counts otherwise), the episode time
    cap and the render size; a block of other weights (the row was made again), other code,
    another cap or another size is evaluated again, never merged into this count. SystemExit
    when a block comes back short (a worker died).
    """
    folder.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    made_with = {"weights_sha256": sha, "judge_sha256": judge_fingerprint(),
                 "judge_support_sha256": judge_support_fingerprint(), "episode_time_s": args.eval_time_s}
    per_task: dict[str, dict[str, Any]] = {}
    size = render_size(args)
    extra = ("--robot", robot, "--dataset", str(store),
             *(("--episode-time-s", str(args.eval_time_s)) if args.eval_time_s else ()))
    for first in range(0, args.eval_episodes, args.block):
        n = min(args.block, args.eval_episodes - first)
        block = folder / f"seeds_{1000 + first}-{1000 + first + n - 1}.json"
        kept = json.loads(block.read_text()) if block.is_file() else None
        if kept is not None and (any(kept.get(key) != value for key, value in made_with.items()
                                     if key in kept or key not in ADDED_JUDGE_KEYS)
                                 or any(r.get("render_size") != size for r in kept["tasks"])):
            print(f"{block} judged other weights, by other code, or other episodes or renders; evaluating it "
                  "again", flush=True)
            kept = None
        if kept is not None:
            reports = kept["tasks"]
        else:
            reports = evaluate(checkpoint, n, work / f"part-{os.getpid()}.json", log, args.eval_workers,
                               first_seed=1000 + first, extra=extra)
            counts = [len(r["episodes"]) for r in reports]
            if len(reports) != len(make_tasks(robot)) or any(c != n for c in counts):
                raise SystemExit(f"evaluating {checkpoint} on seeds {1000 + first}-{1000 + first + n - 1} came "
                                 f"back short ({counts} episodes of {n} a task); see {log}")
            # The block is kept in git: this machine's paths stay out of it.
            reports = [{k: v for k, v in r.items() if k not in ("checkpoint", "store", "sources")} for r in reports]
            write_json(block, made_with | {"tasks": reports}, durable=False)
        for r in reports:
            into = per_task.setdefault(r["task"], {"successes": 0, "episodes": 0, "other_task_instead": 0,
                                                   "seeds": {}})
            into["successes"] += r["successes"]
            into["episodes"] += len(r["episodes"])
            into["other_task_instead"] += sum(r["other_task_instead"].values())
            into["seeds"].update({str(e["seed"]): bool(e["success"]) for e in r["episodes"]})  # for paired tests
    for r in per_task.values():
        r["interval95"] = list(wilson_interval(r["successes"], r["episodes"]))
    return made_with | {"render_size": size, "tasks": per_task}


def time_chunks(store: Path, teacher_checkpoint: Path, depths: list[int], repeats: int) -> dict[str, Any]:
    """One chunk of the teacher and of its uniform cut to each of `depths` joint layers, on
    one observation of `store`, interleaved in one process (chunk_timing.py), `repeats`
    rounds; FLOPs counted on the path timed (`chunk_cost`). Keyed "teacher" and str(depth):
    the rows of one depth share one timing."""
    import numpy as np
    from chunk_timing import interleaved_chunk_times, one_observation, teacher_and_cuts

    from shallowpi.distill.report import chunk_cost

    policies = teacher_and_cuts(teacher_checkpoint, depths)
    sample = one_observation(store, policies["teacher"])
    costs = {name: chunk_cost(policy, sample, 1) for name, policy in policies.items()}  # + warm-up
    times = interleaved_chunk_times(policies, sample, repeats)
    return {"threads": 1, "repeats": repeats, "load_average": os.getloadavg(), "models": {
        name: {"depth": policies[name].cfg.depth, "params": costs[name].params, "gflops": costs[name].gflops,
               "p50_ms": 1e3 * float(np.median(times[name])), "p99_ms": 1e3 * float(np.percentile(times[name], 99))}
        for name in policies}}


# What each cached stage was made with: a rerun into the same folder must not mix recipes.
# (Rows, robots, the seed count and the evaluation's workers may change between reruns.)
RECIPE = ("policy", "episodes", "size", "sim_noise", "teacher_steps", "student_steps", "set")


def recipe_of(robot: str, args: argparse.Namespace) -> dict[str, Any]:
    """What every stage of `robot`'s folders is made with (stage_cache.check_recipe keeps a
    rerun from mixing recipes). The task noises are this robot's own only (another robot's
    must not bar a rerun of this one), None without any, as folders made before the flag
    existed read; the given teacher by the weights it is judged and cut by, not by path: it
    may be checked out anywhere."""
    teacher = args.teachers.get(robot)
    return {key: getattr(args, key) for key in RECIPE} | {
        "task_noise": noise_of(robot, args.task_noise) or None,
        "teacher": weights_sha256(teacher) if teacher else None,
        "teacher_rollouts": args.teacher_rollouts or None,  # None: as folders made before the flag read
        # The presets by content, not name (an edited preset would train new rows into the
        # kept table); compared only where a folder's recipe has it (ADDED_RECIPE_KEYS).
        "presets_sha256": presets_fingerprint(args.policy)}


# Recipe keys compared only where a folder's kept recipe has them (made part of it later).
ADDED_RECIPE_KEYS = ("presets_sha256",)


def presets_fingerprint(policy: str) -> str:
    """sha256 over the teacher's policy preset and the distillation defaults, as files."""
    from shallowpi.deploy.bundle import files_sha256

    return files_sha256(ROOT, (f"configs/policy/{policy}.yaml", "configs/distill/default.yaml"))


def redo(robot: str, rows: list[str], stages: Stages, work: Path, kept: Path, given_teacher: bool) -> None:
    """Forget what `rows` made, so that this run makes them afresh: their training and
    evaluation results with the seconds of every attempt (a redo's minutes are its own), their
    evaluation blocks, and their run folders, moved aside to ROW.replaced-TIME (kept, not
    deleted) so that `--resume` cannot pick the old checkpoint up. A trained teacher takes
    every row and chunk timing with it: each was cut from it. Only a row whose training (a
    given teacher: its evaluation) finished is forgotten, so rerunning the same command
    after an interruption continues the redo instead of starting it again."""
    teacher_trained = "teacher" in rows and not given_teacher and stages.kept("train_teacher") is not None
    names = ROBOT_ROWS[robot] if teacher_trained else [name for name in rows if name in ROBOT_ROWS[robot]]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for name in names:
        given = name == "teacher" and given_teacher  # nothing trained: only its evaluation is made again
        finished = f"eval_{name}" if given else f"train_{name}"
        if stages.kept(finished) is None:
            continue
        stages.forget(f"eval_{name}")
        if not given:
            stages.forget(f"train_{name}")
        for folder in (kept / "eval" / name, work / "eval" / name):
            for block in folder.glob("*.json"):
                block.unlink()
        run = work / "runs" / name
        aside = run.with_name(f"{name}.replaced-{stamp}")
        if run.exists():
            run.rename(aside)
        print(f"{robot}: {name} will be made again" + (f"; its old run is {aside}" if aside.exists() else ""),
              flush=True)
    if teacher_trained:
        for timing in stages.folder.glob("latency_*.json"):
            stages.forget(timing.stem)
        stages.forget("teacher_rollouts")  # driven by the teacher made again


def reproduce_robot(robot: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every stage of one robot's rows (record, teacher, each row trained then evaluated,
    the chunk timings), each read back when its result is kept; the table's rows: those
    asked for and every other row the results folder holds."""
    work, kept = args.out / robot, args.results / robot
    for folder in (work, kept):
        folder.mkdir(parents=True, exist_ok=True)
        check_recipe(folder, recipe_of(robot, args), ADDED_RECIPE_KEYS)  # a store or run left in --out is a stage too
    log = work / "log.txt"
    stages = Stages(kept / "stages", work / "locks", robot)
    store = RecordedStore(robot, work / f"{robot}.zarr", args, log, stages)

    given = args.teachers.get(robot)
    if args.redo:
        redo(robot, args.redo, stages, work, kept, given_teacher=given is not None)
    if given is not None:  # trained elsewhere (e.g. robots/arm/teacher); check_recipe checked its sha
        teacher = stages.run("given_teacher", lambda: {"checkpoint": portable(given), "given": True,
                                                       "weights_sha256": weights_sha256(given)})
        teacher_stage, teacher_path = "given_teacher", given
    else:
        teacher = stages.run("train_teacher", lambda: train_teacher(store.ready(), work / "runs" / "teacher", args, log))
        teacher_stage, teacher_path = "train_teacher", None
    redo_teacher = "--redo teacher"  # every row goes with a trained teacher (redo())
    students_store = StudentStore(robot, store, work, args, log, stages)

    def teacher_weights(why: str) -> Path:
        return teacher_path or weights_of(teacher_stage, teacher, why, redo_teacher)

    def trained_row(row: Row) -> dict[str, Any]:
        """The row's training stage: the teacher's, or the student's, made from this teacher."""
        if row.layers is None:
            return teacher
        name = f"train_{row.name}"
        run = work / "runs" / row.name
        paths: dict[str, Path] = {}

        def ready() -> None:
            paths["teacher"] = teacher_weights(f"{name} is to be made")
            # The untrained cut learns nothing from its store: it needs no rollouts made.
            paths["store"] = students_store.ready(paths["teacher"]) if row.trained else store.ready()

        result = stages.run(name, lambda: train_student(row, paths["store"], paths["teacher"], run, args, log),
                            before=ready)
        if result["teacher_sha256"] != teacher["weights_sha256"]:
            raise SystemExit(f"{name} was distilled from another teacher than {teacher_stage}'s: rerun with "
                             f"--redo {row.name} to make it from this one")
        return result

    def evaluated_row(row: Row, trained: dict[str, Any]) -> dict[str, Any]:
        name, made = f"eval_{row.name}", "given_teacher" if trained.get("given") else f"train_{row.name}"
        redo = redo_teacher if row.layers is None and not trained.get("given") else f"--redo {row.name}"
        paths: dict[str, Path] = {}

        def ready() -> None:
            paths["weights"] = (teacher_weights(f"{name} needs seeds") if row.layers is None
                                else weights_of(made, trained, f"{name} needs seeds", redo))
            paths["store"] = store.ready()

        def enough(result: dict[str, Any]) -> bool:
            return judged_as_asked(result, trained["weights_sha256"], robot, args)

        return stages.run(name, lambda: evaluate_row(paths["weights"], trained["weights_sha256"], robot,
                                                     paths["store"], kept / "eval" / row.name,
                                                     work / "eval" / row.name, args, log),
                          enough, before=ready)

    # Row by row, each trained then evaluated, so every finished row's result is kept before
    # the next row's training starts (a session that ends mid-run loses one row, not all).
    names = robot_rows(robot, args.leaves_out_failed)
    asked = [n for n in names if not args.rows or n in args.rows]
    trained: dict[str, dict[str, Any]] = {}
    evals: dict[str, dict[str, Any]] = {}
    for name in asked:
        trained[name] = trained_row(ROWS[name])
        evals[name] = evaluated_row(ROWS[name], trained[name])
    # The rows made by other runs into the same results (another session, another --rows).
    for name in names:
        made = teacher if name == "teacher" else stages.kept(f"train_{name}")
        done = stages.kept(f"eval_{name}")
        # Judged as an asked row's evaluation is: a quick look with a shorter episode cap,
        # another render size or fewer seeds does not join the full table.
        if (name not in asked and made and done and judged_as_asked(done, made["weights_sha256"], robot, args)
                and made.get("teacher_sha256", teacher["weights_sha256"]) == teacher["weights_sha256"]):
            trained[name], evals[name] = made, done
    rows = [ROWS[n] for n in names if n in evals]

    # Every depth timed in one process against the teacher, from its cuts (time_chunks).
    depths = sorted({row.layers for row in rows if row.layers is not None}, reverse=True)
    paths: dict[str, Path] = {}

    def ready() -> None:
        paths["teacher"], paths["store"] = teacher_weights("the chunks are to be timed"), store.ready()

    timing = "latency_" + "_".join(["teacher", *map(str, depths)])
    if args.retime:
        stages.forget(timing)
    costs = stages.run(timing, lambda: time_chunks(
        paths["store"], paths["teacher"], depths, args.latency_repeats), before=ready)["models"]
    ref = costs["teacher"]
    table = []
    for row in rows:
        cost = ref if row.layers is None else costs[str(row.layers)]
        table.append({
            "row": row.name, "model": row.describe(), "layers": cost["depth"],
            "tasks": evals[row.name]["tasks"], "params": cost["params"], "p50_ms": cost["p50_ms"],
            "p99_ms": cost["p99_ms"], "gflops": cost["gflops"],
            "speedup": ref["p50_ms"] / cost["p50_ms"], "flop_ideal_speedup": ref["gflops"] / cost["gflops"],
            # None: a teacher given with --teacher, trained elsewhere
            "train_minutes": None if trained[row.name].get("given") else trained[row.name]["seconds"] / 60,
        })
    return {"robot": robot, "record_minutes": stages.kept("record")["seconds"] / 60, "teacher_depth": ref["depth"],
            "rows": table}


def exit_on_sigterm() -> None:
    """SIGTERM (`kill`, a session's end) raises SystemExit like Ctrl-C raises
    KeyboardInterrupt, so a stage stopped that way still writes its attempt's seconds to its
    ledger; Python's default would end the process without running any `finally`."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


@contextlib.contextmanager
def results_lock(out: Path) -> Iterator[None]:
    """Hold the lock on what the runs sharing a results folder all write (blocking). Kept
    in the work folder `out`, beside the stages' locks, as the docs have such runs share
    both folders (--results holds only what is committed: JSON, the table, the plot)."""
    (out / "locks").mkdir(parents=True, exist_ok=True)
    with open(out / "locks" / "results.lock", "w") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        yield


def positive(text: str) -> int:
    """argparse type: a whole number >= 1 (0 blocks or seeds made an empty evaluation that a
    later run took as complete; a negative block size, the same)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", nargs="+", default=["arm", "humanoid"], choices=sorted(ROBOT_ROWS))
    ap.add_argument("--rows", nargs="+", choices=list(ROWS), help="only these rows (default: the robot's)")
    ap.add_argument("--policy", default="teacher", help="the teacher's preset (configs/policy/)")
    ap.add_argument("--episodes", type=positive, default=80, help="demonstrations per task (default 80)")
    ap.add_argument("--size", default="64x64", help="camera renders WxH (default 64x64)")
    ap.add_argument("--sim-noise", type=float, default=0.005, help="DART noise while recording (default 0.005)")
    ap.add_argument("--task-noise", nargs="*", metavar="TASK=NOISE",
                    help="a task's own DART noise, e.g. cube_in_bowl=0.01, for every robot of the run "
                         "that has the task (the other tasks keep --sim-noise)")
    ap.add_argument("--teacher-rollouts", type=int, default=0, metavar="N",
                    help="the students also train on N of the teacher's own episodes a task in the twin, its "
                         "successful ones (teacher_rollouts.py; default 0: the demonstrations alone)")
    ap.add_argument("--teacher-steps", type=int, help="the teacher's training steps (default: the preset's)")
    ap.add_argument("--teacher", action="append", default=[], metavar="ROBOT=CKPT",
                    help="use this trained teacher for ROBOT instead of training one, e.g. "
                         "arm=robots/arm/teacher (its training minutes are then not in the table)")
    ap.add_argument("--student-steps", type=int, default=6000,
                    help="each trained student's steps (default 6000: at 2,000 the 6-layer student is "
                         "still 1-8 points under the teacher, BENCHMARKS.md Distillation (c))")
    ap.add_argument("--eval-episodes", type=positive, default=200, help="unseen seeds per task and model (default 200)")
    ap.add_argument("--eval-time-s", type=float, help="cap each evaluated episode (quick looks only)")
    ap.add_argument("--eval-workers", type=int, default=2, help="evaluation processes (default 2, one a core)")
    ap.add_argument("--record-workers", type=int, default=2,
                    help="recording processes for a store not yet begun (default 2, one a core; the same episodes)")
    ap.add_argument("--block", type=positive, default=50, help="seeds per resumable evaluation block (default 50)")
    ap.add_argument("--latency-repeats", type=positive, default=30,
                    help="interleaved rounds of chunk timing (default 30)")
    ap.add_argument("--retime", action="store_true",
                    help="time every depth's chunk again (after a change to the inference code) and remake the "
                         "table; finished rows are not trained or evaluated again; once: leave it out of later reruns")
    ap.add_argument("--redo", nargs="+", choices=list(ROWS), metavar="ROW",
                    help="make these finished rows again (their results, seconds and evaluation blocks are dropped, "
                         "their runs moved aside; a trained teacher takes every row with it); once: leave it out "
                         "of later reruns, or they make the rows again")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for the teacher's and the students' training (policy.*)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "reproduce",
                    help="work folder: the recorded stores, the runs, the logs (big, this machine's)")
    ap.add_argument("--results", type=Path,
                    help="where finished stages, evaluation blocks and the table are kept (small; default --out). "
                         "Kept in git, they carry a run across machines: docs/reproduce holds BENCHMARKS.md's")
    args = ap.parse_args()
    args.results = args.results or args.out
    if not 0 <= args.teacher_rollouts <= SEEDS_PER_TASK:
        ap.error(f"--teacher-rollouts must be 0 to {SEEDS_PER_TASK:,} (a task's rollout seeds)")
    if args.rows and args.redo:  # a row made again is a row of this run
        args.rows = list(dict.fromkeys([*args.rows, *args.redo]))
    args.task_noise = parse_task_noise(args.task_noise, args.robots)
    args.leaves_out_failed = leaves_out_failed(args.policy, args.set)
    failed_rows = [n for n in args.rows or [] if ROWS[n].failed_from_teacher]
    if failed_rows and not args.leaves_out_failed:
        ap.error(f"--rows {' '.join(failed_rows)}: the student learns the demonstrations the training leaves out; "
                 "pass --set policy.train.successful_only=true")
    args.teachers = {}
    for item in args.teacher:
        robot, sep, ckpt = item.partition("=")
        if not sep or robot not in ROBOT_ROWS or not (Path(ckpt) / "model.safetensors").is_file():
            ap.error(f"--teacher {item}: expected ROBOT=CKPT with ROBOT one of {', '.join(sorted(ROBOT_ROWS))} "
                     "and CKPT a checkpoint folder (holds model.safetensors)")
        args.teachers[robot] = Path(ckpt).expanduser().resolve()
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # training beside evaluation: 2 threads collapse
    exit_on_sigterm()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "results", "teacher")} | {
        "teachers": {robot: portable(path) for robot, path in args.teachers.items()}}
    for robot in args.robots:
        rows = json.dumps(reproduce_robot(robot, args), indent=2)
        with results_lock(args.out):
            replace_text(args.results / robot / "rows.json", rows, durable=False)
    # The table holds every robot the results folder has, whichever run made it (a run of
    # the humanoid alone must not drop the arm's rows from table.md); each robot's recipe is
    # its ROBOT/recipe.json. Runs sharing the folder (as the docs suggest) finish together
    # when one waited on the other's stage: one writes rows.json and the report at a time
    # (both wrote through one rows.json.partial: a rename failed after hours, or the report
    # read a torn file).
    with results_lock(args.out):
        text, paths = report(args.results, last_run=settings)
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
