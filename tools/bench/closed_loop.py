"""Closed-loop success of a training recipe against time: record, train, evaluate.

One command per robot regenerates BENCHMARKS.md "Closed loop": record `--episodes` expert
demonstrations of each of the robot's tasks into one store (optionally DART-noised), train
one language-conditioned policy on them for at most `--minutes` (checkpoints every
`--save-every` steps), then evaluate checkpoints in closed loop on every task
(`platform eval --sim`, `--eval-episodes` unseen seeds each, EMA weights when the preset
keeps them). Prints the success-vs-training-time table (95 % Wilson intervals) and writes
JSON; every step is the platform's own CLI, so the numbers are what a user gets.

    OMP_NUM_THREADS=1 python tools/bench/closed_loop.py --robot arm --minutes 60
    python tools/bench/closed_loop.py --robot bimanual --episodes 80 --sim-noise 0.005 \\
        --policy teacher --set policy.train.batch_size=64 --eval-episodes 100
    python tools/bench/closed_loop.py --robot arm --store /tmp/arm.zarr --minutes 10   # reuse a store
    python tools/bench/closed_loop.py --robot humanoid --episodes 120 --sim-noise 0.0075 \
        --task-noise cube_in_bowl=0.01 --procs 2 --set policy.train.successful_only=true \
        policy.train.steps=10000 policy.crop_scale=1.0 --minutes 70    # two training processes
    python tools/bench/closed_loop.py --robot arm --run RUN --weights raw --checkpoints 3000 6000 --eval-episodes 50

Cost on a 2-core machine: recording ~2.5 s of CPU a demonstration at 64x64 (two
cameras), ~4.5 s for the bimanual's three, on both cores at once (`--record-workers`,
default 2: 200 bimanual demonstrations in 7.9 minutes); the training is the `--minutes`
asked for; an evaluation episode 5-20 s.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.commands.demo_stages import episodes_per_task  # noqa: E402
from shallowpi.evaluate.interval import rate_with_interval, wilson_interval  # noqa: E402
from shallowpi.robots.sim.tasks import make_tasks  # noqa: E402
from shallowpi.train.checkpoint import checkpoint_weights  # noqa: E402


def platform_env(**extra: str) -> dict[str, str]:
    """The environment the platform's commands run in: this checkout's package, headless MuJoCo."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "platform"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"),
            **extra}


# Long enough for a training step and a checkpoint save on a loaded machine.
STOP_GRACE_S = 300.0


def _term_with_parent() -> None:
    """In the child between fork and exec: SIGTERM it when this process dies (Linux's
    PR_SET_PDEATHSIG), so a tool killed outright still lets its training save and stop."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def run_child(command: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.CompletedProcess:
    """Run `command` to its end, its output appended to `log` (else captured).

    Stopping this process stops the child the one way that keeps its work: when this process
    is interrupted (KeyboardInterrupt, or SystemExit from reproduce.py's SIGTERM handler) the
    child gets one SIGTERM and up to STOP_GRACE_S to finish; `platform train` and `distill`
    then end their step and save a checkpoint (train/interrupt.py). A second signal would
    make them stop without saving, so the child runs in its own session, out of reach of the
    Ctrl-C or `kill -- -PGID` that stopped this one, and gets exactly one; an interruption
    during the grace period kills it at once. If this process dies outright the kernel sends
    the SIGTERM. Raises what interrupted it, after the child has ended.
    """
    out = open(log, "a") if log else subprocess.PIPE  # noqa: SIM115 (closed below)
    try:
        with subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True, preexec_fn=_term_with_parent) as child:
            try:
                stdout, _ = child.communicate()
            except BaseException:
                child.send_signal(signal.SIGTERM)
                try:
                    child.wait(timeout=STOP_GRACE_S)
                finally:
                    if child.poll() is None:  # past the grace period, or interrupted again
                        child.kill()
                raise
        return subprocess.CompletedProcess(command, child.returncode, stdout)
    finally:
        if log:
            out.close()


def platform(*args: str, log: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m shallowpi ARGS` of this checkout, through `run_child` (a stop lets it save)."""
    return run_child([sys.executable, "-m", "shallowpi", *args], platform_env(), log)


def parse_task_noise(items: list[str] | None, robots: list[str]) -> dict[str, float]:
    """`--task-noise TASK=NOISE ...` -> {task: DART noise}, a task's noise applying to every
    robot of the run that has the task. SystemExit in one line on a malformed item, a noise
    that is not a finite number >= 0, a task named twice, or a task none of `robots` has (a
    typo would otherwise record that task at `--sim-noise` without a word). A task's own noise
    lets one store hold each task at what its expert survives (the humanoid's cube_in_bowl
    recovers from 0.01, its handover fails at it: BENCHMARKS.md "Closed loop")."""
    tasks = {task for robot in robots for task in make_tasks(robot)}
    noise: dict[str, float] = {}
    for item in items or []:
        task, _, value = item.partition("=")
        try:
            level = float(value)
        except ValueError:
            level = math.nan
        if not (task and math.isfinite(level) and level >= 0):
            raise SystemExit(f"--task-noise {item}: expected TASK=NOISE with NOISE >= 0, e.g. cube_in_bowl=0.01")
        if task in noise:
            raise SystemExit(f"--task-noise names {task} twice")
        if task not in tasks:
            raise SystemExit(f"--task-noise {task}: not a task of {' or '.join(robots)} "
                             f"(tasks: {', '.join(sorted(tasks))})")
        noise[task] = level
    return noise


def noise_of(robot: str, per_task: dict[str, float]) -> dict[str, float]:
    """The entries of `per_task` that are `robot`'s tasks."""
    return {task: level for task, level in per_task.items() if task in make_tasks(robot)}


def record(robot: str, store: Path, episodes: int, size: str, noise: float, log: Path,
           per_task: dict[str, float] | None = None, workers: int = 1) -> float:
    """`episodes` of every task of the robot into one store, at DART noise `noise` or the
    task's own in `per_task`; only the episodes a task still lacks are recorded, so a run
    stopped mid-recording continues where its last committed episode ended. With `workers`
    > 1 a store not yet begun is recorded on that many processes at once (`record_parallel`:
    the same episodes, in the same order). Returns the wall seconds it took. SystemExit when
    a recording failed."""
    per_task = per_task or {}
    start = time.perf_counter()
    if store.exists():  # its rename was the merge's commit point: parts left beside it are spent
        shutil.rmtree(parts_of(store), ignore_errors=True)
    if workers > 1 and not store.exists():
        record_parallel(robot, store, episodes, size, noise, log, per_task, workers)
        return time.perf_counter() - start
    for name, task in make_tasks(robot).items():
        missing = episodes - episodes_per_task(store).get(task.instruction, 0)
        if missing <= 0:
            continue
        # Added episodes continue the store's seeds (record never takes eval --sim's held-out seeds).
        more = ["--resume"] if store.exists() else []
        done = platform(*_record_args(robot, name, store, missing, size, per_task.get(name, noise)), *more, log=log)
        if done.returncode:
            raise SystemExit(f"recording {name} failed; see {log}")
    return time.perf_counter() - start


def at_once(jobs: list[Callable[[], None]]) -> None:
    """Run every job on a thread of its own and wait for them all: each starts a platform
    process (a core each; the twin renders on the CPU). A job reports its own failure."""
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def parts_of(store: Path) -> Path:
    """The folder `record_parallel` records `store`'s parts into."""
    return store.with_name(store.name + ".parts")


def _record_args(robot: str, task: str, store: Path, episodes: int, size: str, noise: float) -> list[str]:
    """`platform record` of `episodes` scripted demonstrations of `task` into `store`. A take
    cut by a stop (run_child's SIGTERM) is discarded, not kept: the rerun's --resume records
    its seed again in full, as one uninterrupted run would have (`platform demo` does the same)."""
    return ["record", "--robot", robot, "--sim", "direct", "--task", task, "--data-root", str(store.parent),
            "--dataset", store.stem, "--episodes", str(episodes), "--reset-time-s", "0", "--no-tui",
            f"record.sim_size={size}", f"record.sim_noise={noise}", "record.on_interrupt=discard",
            f"telemetry.address=/tmp/closed-loop-{os.getpid()}-{threading.get_ident()}.sock"]


def record_parallel(robot: str, store: Path, episodes: int, size: str, noise: float, log: Path,
                    per_task: dict[str, float], workers: int) -> None:
    """Record a fresh store on `workers` processes at once (one a core: the twin renders on
    the CPU) and merge their parts into `store`.

    Each task's episodes are split into `workers` runs of consecutive seeds, and worker w
    records its run of every task, each into its own part store under STORE.parts/. The
    seeds are those one process gives (task k of the robot's tasks takes k * episodes
    onward) and the parts are merged in task and seed order, so `store` holds the same
    episodes in the same order as `record` with one worker (the twin and the experts are
    deterministic); the merge links the frames' files instead of copying them. Stopped
    part-way, a rerun continues each part where its last committed episode ended. SystemExit
    when a recording or the merge failed, or the seeds would reach eval --sim's held-out ones.
    """
    from shallowpi.robots.sim.episode import EVAL_SEEDS

    tasks = list(make_tasks(robot))
    if len(tasks) * episodes > EVAL_SEEDS.start:
        raise SystemExit(f"{len(tasks)} tasks x {episodes} episodes reach seed {EVAL_SEEDS.start}, "
                         "eval --sim's held-out scenes: record with one worker, which skips them")
    shares = [episodes // workers + (w < episodes % workers) for w in range(workers)]
    parts = parts_of(store)

    def part(k: int, w: int) -> Path:
        return parts / f"{k}-{tasks[k]}-{w}.zarr"

    failed: list[str] = []

    def worker(w: int) -> None:
        for k, name in enumerate(tasks):
            path = part(k, w)
            have = sum(episodes_per_task(path).values())
            missing = shares[w] - have
            if missing <= 0 or failed:
                continue
            # Always the worker's own next seed: a part stopped in its first take exists and is
            # empty, and --resume alone would continue it from seed 0, another worker's scenes.
            where = ["--seed", str(k * episodes + sum(shares[:w]) + have), *(["--resume"] if path.exists() else [])]
            done = platform(*_record_args(robot, name, path, missing, size, per_task.get(name, noise)), *where,
                            log=log)
            if done.returncode:
                failed.append(f"{name} (part {w})")
                return

    at_once([functools.partial(worker, w) for w in range(workers) if shares[w]])
    if failed:
        raise SystemExit(f"recording {', '.join(failed)} failed; see {log}")
    recorded = [str(part(k, w)) for k in range(len(tasks)) for w in range(workers) if shares[w]]
    merging = store.with_name(store.stem + ".merging.zarr")
    shutil.rmtree(merging, ignore_errors=True)
    if len(recorded) == 1:  # nothing to merge
        os.rename(recorded[0], merging)
    elif platform("dataset", "merge", *recorded, "--out", str(merging), log=log).returncode:
        raise SystemExit(f"merging the recorded parts failed; see {log}")
    merging.rename(store)
    shutil.rmtree(parts)


def train(store: Path, policy: str, run: Path, minutes: float, save_every: int, settings: list[str],
          log: Path, procs: int = 1) -> float:
    """Train until `minutes` have passed (the run keeps its checkpoints); wall seconds.

    procs > 1: that many data-parallel processes of one thread each under torchrun (DDP over
    gloo, each its share of the batch: the same global batch and gradient), no loader worker
    processes beside them. Stopped at the budget, such a run keeps its last checkpoint only
    (the save on a signal is a single process's)."""
    start = time.perf_counter()
    env = platform_env()
    launch = [sys.executable, "-m", "shallowpi"]
    if procs > 1:
        env["OMP_NUM_THREADS"] = "1"
        launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs),
                  "-m", "shallowpi", "--"]
        settings = ["policy.train.workers=0", *settings]
    with open(log, "a") as sink:
        proc = subprocess.Popen([*launch, "train", "--dataset", str(store), "--policy",
                                 policy, "--runs-dir", str(run.parent), "--run", run.name, "--no-progress",
                                 f"policy.train.save_every={save_every}", *settings],
                                env=env, stdout=sink, stderr=subprocess.STDOUT)
        # Past the budget the run is stopped with SIGINT: it saves the step it reached (the
        # time is the point; its checkpoints are evaluated).
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait()
    return time.perf_counter() - start


def evaluate(checkpoint: Path, episodes: int, out: Path, log: Path, workers: int = 2, ema: bool = True,
             first_seed: int = 1000, extra: tuple[str, ...] = ()) -> list[dict]:
    """`eval --sim` on every task for seeds first_seed.. first_seed + episodes - 1, split over
    `workers` processes (one thread each, on the CPU: eval's default device is a GPU when
    there is one, and a kept block judged on the CPU must not be merged with others judged
    through CUDA graphs); `extra` goes to every `platform eval`. Returns one report per
    task, the workers' episodes merged and the interval recomputed."""
    weights = checkpoint_weights(checkpoint) if ema else checkpoint
    shares = [episodes // workers + (i < episodes % workers) for i in range(workers)]
    starts = [first_seed + sum(shares[:i]) for i in range(workers)]
    env = platform_env(OMP_NUM_THREADS="1")
    parts = [out.with_suffix(f".{i}.json") for i in range(workers)]
    for part in parts:  # a worker that dies must not leave an earlier attempt's episodes behind
        part.unlink(missing_ok=True)
    with open(log, "a") as sink:
        procs = [subprocess.Popen([sys.executable, "-m", "shallowpi", "eval", "--policy", str(weights), "--sim",
                                   "--sim-episodes", str(n), "--seed", str(start), "--no-progress", "--json", str(part),
                                   "--device", "cpu", *extra],
                                  env=env, stdout=sink, stderr=subprocess.STDOUT)
                 for n, start, part in zip(shares, starts, parts, strict=True) if n]
        for proc in procs:
            proc.wait()
    # A worker that died took its seeds with it: the rate over the others would be
    # published as if over all (and a policy's NaN is what kills one: selection bias).
    if failed := [p.args[p.args.index("--seed") + 1] for p in procs if p.returncode != 0]:
        raise SystemExit(f"evaluation workers from seed(s) {', '.join(failed)} failed; see {log}")
    merged: dict[str, dict] = {}
    for part in parts:
        if not part.is_file():
            continue
        for report in json.loads(part.read_text())["tasks"]:
            into = merged.setdefault(report["task"], {**report, "episodes": [], "successes": 0,
                                                      "other_task_instead": {}})
            into["episodes"] += report["episodes"]
            into["successes"] += report["successes"]
            for task, n in report["other_task_instead"].items():
                into["other_task_instead"][task] = into["other_task_instead"].get(task, 0) + n
    for report in merged.values():
        n = len(report["episodes"])
        if n != episodes:
            raise SystemExit(f"task {report['task']}: {n} of {episodes} episodes evaluated; see {log}")
        report["success_rate"] = report["successes"] / n if n else 0.0
        report["interval95"] = list(wilson_interval(report["successes"], n))
    out.write_text(json.dumps({"tasks": list(merged.values())}, indent=2))
    return list(merged.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robot", default="arm", choices=["arm", "bimanual", "humanoid"])
    ap.add_argument("--policy", default="teacher")
    ap.add_argument("--episodes", type=int, default=80, help="demonstrations per task (default 80)")
    ap.add_argument("--size", default="64x64", help="render size WxH (default 64x64)")
    ap.add_argument("--sim-noise", type=float, default=0.0, help="record.sim_noise (DART), default 0")
    ap.add_argument("--task-noise", nargs="*", metavar="TASK=NOISE",
                    help="a task's own DART noise, e.g. cube_in_bowl=0.01 (the others keep --sim-noise)")
    ap.add_argument("--store", type=Path, help="reuse this store instead of recording")
    ap.add_argument("--minutes", type=float, default=60.0, help="training budget (default 60)")
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--eval-episodes", type=int, default=100,
                    help="unseen seeds per task for the last checkpoint (default 100)")
    ap.add_argument("--curve-episodes", type=int, default=20,
                    help="unseen seeds per task for the earlier checkpoints, the curve (default 20)")
    ap.add_argument("--procs", type=int, default=1,
                    help="training processes (DDP under torchrun, one thread each; default 1, torch's threads)")
    ap.add_argument("--eval-workers", type=int, default=2, help="evaluation processes (default 2, one a core)")
    ap.add_argument("--record-workers", type=int, default=2,
                    help="recording processes for a new store (default 2, one a core; the same episodes as 1)")
    ap.add_argument("--weights", choices=["ema", "raw"], default="ema",
                    help="evaluate the EMA weights when a checkpoint has them (default) or the raw ones")
    ap.add_argument("--run", type=Path, help="only evaluate this finished run's checkpoints (RUN/checkpoints)")
    ap.add_argument("--checkpoints", nargs="*", type=int, metavar="STEP",
                    help="evaluate only these steps (default: every checkpoint)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="training overrides (policy.*)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "closed_loop")
    args = ap.parse_args()
    args.task_noise = parse_task_noise(args.task_noise, [args.robot])

    out = args.out / f"{args.robot}-{args.policy}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    store = args.store or out / f"{args.robot}.zarr"
    if args.run:  # evaluate a finished run's checkpoints: no recording, no training
        record_s = train_s = 0.0
        run = args.run
        started = (run / "config.yaml").stat().st_mtime
    else:
        record_s = 0.0 if args.store else record(args.robot, store, args.episodes, args.size, args.sim_noise, log,
                                                             args.task_noise, workers=args.record_workers)
        run = out / "run"
        started = time.time()
        train_s = train(store, args.policy, run, args.minutes, args.save_every, args.set, log, args.procs)
    rows = []
    checkpoints = sorted((run / "checkpoints").glob("step_*"))
    if args.checkpoints:
        checkpoints = [c for c in checkpoints if int(c.name.split("_")[1]) in args.checkpoints]
    last_step = int(checkpoints[-1].name.split("_")[1]) if checkpoints else 0
    # Training time to each checkpoint, start-up (dataset, model) included, from the files'
    # times: unknown (None) for a run resumed after its config was rewritten, whose earlier
    # checkpoints predate it and whose interruption the times cannot show.
    elapsed = [(c.stat().st_mtime - started) / 60 for c in checkpoints]
    if any(m < 0 for m in elapsed) or elapsed != sorted(elapsed):
        elapsed = [None] * len(checkpoints)
    per_step = 60 * elapsed[-1] / last_step if checkpoints and elapsed[-1] is not None else None
    for ckpt, minutes in zip(checkpoints, elapsed):
        step = int(ckpt.name.split("_")[1])
        episodes = args.eval_episodes if ckpt == checkpoints[-1] else args.curve_episodes
        for report in evaluate(ckpt, episodes, out / f"eval_{ckpt.name}.json", log, args.eval_workers,
                               ema=args.weights == "ema"):
            n = len(report["episodes"])
            rows.append({"step": step, "train_minutes": minutes, "task": report["task"],
                         "successes": report["successes"], "episodes": n, "interval95": report["interval95"],
                         "other_task_instead": report["other_task_instead"]})
    step_time = f"{per_step:.2f} s a step" if per_step is not None else "a resumed run: minutes unknown"
    print(f"{args.robot}, {args.policy}: recorded in {record_s / 60:.1f} min, trained {train_s / 60:.1f} min "
          f"({step_time})")
    print(f"{'step':>6} {'train min':>9} {'task':<18} {'success (95 % Wilson)':<32} other task instead")
    for r in rows:
        instead = ", ".join(f"{k} {v}/{r['episodes']}" for k, v in r["other_task_instead"].items()) or "-"
        minutes = "-" if r["train_minutes"] is None else f"{r['train_minutes']:.1f}"
        print(f"{r['step']:>6} {minutes:>9} {r['task']:<18} "
              f"{rate_with_interval(r['successes'], r['episodes']):<32} {instead}")
    result = {"robot": args.robot, "policy": args.policy, "episodes_per_task": args.episodes,
              "sim_noise": args.sim_noise, "task_noise": args.task_noise, "settings": args.set,
              "record_s": record_s, "train_s": train_s,
              "step_s": per_step, "rows": rows, "threads": os.environ.get("OMP_NUM_THREADS"), "procs": args.procs,
              "load_average": os.getloadavg()}
    (out / "closed_loop.json").write_text(json.dumps(result, indent=2))
    print(f"wrote {out / 'closed_loop.json'}")


if __name__ == "__main__":
    main()
