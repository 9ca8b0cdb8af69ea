"""Action selection under inference delay in the twin: the real-time-chunking experiment at our scale.

Runs `platform deploy --sim` (the on-device executor, simulated time) for every strategy
(synchronous, asynchronous replanning, temporal ensembling, real-time chunking) at every
injected delay, on every task of the robot, on the same seeds, and prints success with 95 %
Wilson intervals beside the safety counts (seam trips, watchdog holds), the largest jump
onto a new chunk ("max jump") and between any two consecutive actions the selection chose
(before the seam ramp and the robot's clamps: "max step"), both in ticks of the joint's
top speed (1: what the robot moves in a tick; the seam bound is `deploy.seam_ticks`), and
the delays the executor measured; under the table each strategy against `sync` at the same
delay, seed by seed (exact McNemar). After Black et al., "Real-Time Execution of Action Chunking Flow Policies"
(arXiv 2506.07339), whose simulated benchmark injects delay the same way.

    python tools/bench/deploy_strategies.py --policy RUN/checkpoints/step_002000/ema
    python tools/bench/deploy_strategies.py --policy CKPT --strategies sync rtc --delays-ms 0 300 --episodes 50
    python tools/bench/deploy_strategies.py --policy CKPT --strategies rtc --set deploy.rtc_mask=hard --out DIR

Every cell (strategy, delay, task, seed share) is one `platform deploy` whose JSON is kept
under --out: a rerun skips finished cells, and refuses them when they came from other
weights, other overrides or other platform code (a figure must come from the code it
describes). The cells run `--workers` at a time, one thread
each. The bundle is built once before them (ONNX export takes minutes on this CPU; the
torch backend needs none).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# closed_loop puts this checkout's platform/ on sys.path for the shallowpi import after it.
from closed_loop import ROOT, platform_env

from shallowpi.durable_files import replace_text
from shallowpi.evaluate.interval import rate_with_interval, seed_by_seed
from shallowpi.robots.sim.tasks import make_tasks


def deploy(policy: Path, out: Path, log: Path, *args: str, overrides: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """One `platform deploy --sim` on its own telemetry socket, one thread; `overrides`
    (KEY=VALUE) go last, with the socket's."""
    socket = f"telemetry.address=/tmp/deploy-strategies-{os.getpid()}-{out.stem}.sock"
    with open(log, "a") as sink:
        return subprocess.run([sys.executable, "-m", "shallowpi", "deploy", "--policy", str(policy), "--sim",
                               "--no-tui", "--json", str(out), *args, *overrides, socket],
                              env=platform_env(OMP_NUM_THREADS="1"), stdout=sink, stderr=subprocess.STDOUT,
                              check=False)


def provenance(policy: Path, overrides: list[str]) -> dict[str, object]:
    """What a cell's result depends on besides its arguments: sha256 of every file of the
    policy (a checkpoint, its ema/ folder or a bundle), the overrides, and the version of this
    checkout's platform/ (git's tree id, plus a digest of uncommitted changes to its tracked
    files; None outside git)."""
    digest = hashlib.sha256()
    files = sorted(f for f in policy.rglob("*") if f.is_file()) if policy.is_dir() else [policy]
    for f in files:
        digest.update(str(f.relative_to(policy) if policy.is_dir() else f.name).encode())
        digest.update(f.read_bytes())

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return done.stdout if done.returncode == 0 else None

    tree = git("rev-parse", "HEAD:platform")
    changes = git("diff", "HEAD", "--", "platform")
    code = None if tree is None else tree.strip() + (f"+{hashlib.sha256(changes.encode()).hexdigest()[:12]}"
                                                     if changes else "")
    return {"policy_sha256": digest.hexdigest(), "overrides": overrides, "platform": code}


def against_sync(rows: list[dict], tasks: list[str]) -> list[str]:
    """Each strategy against `sync` at the same delay, seed by seed (the seeds are shared):
    the lines printed under the table, empty without a sync row."""
    sync = {r["delay_ms"]: r for r in rows if r["strategy"] == "sync"}
    lines = []
    for r in rows:
        base = sync.get(r["delay_ms"])
        if r["strategy"] == "sync" or base is None:
            continue
        compared = seed_by_seed(*({t: row["tasks"][t]["seeds"] for t in tasks} for row in (r, base)), tasks)
        if compared is None:  # no seed of a task in common: nothing to compare
            continue
        lines.append(f"- {r['strategy']} against sync at {r['delay_ms']:g} ms, seeds solved by one of the two "
                     f"only: {compared}")
    return ["", "Against sync on the same seeds (exact McNemar, two-sided):", *lines] if lines else []


def _complete(path: Path) -> bool:
    """Whether a cell's deploy JSON is there and ran every episode asked (a deploy stopped
    early writes one whose last episode was cut off and judged a failure)."""
    if not path.is_file():
        return False
    result = json.loads(path.read_text())
    return bool(result.get("complete", True)) and len(result.get("per_episode", [])) == result.get(
        "episodes_asked", len(result.get("per_episode", [])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", type=Path, required=True, help="checkpoint (or its ema/ folder) or deploy bundle")
    ap.add_argument("--robot", default="arm", help="the robot whose tasks to run (default arm)")
    ap.add_argument("--strategies", nargs="+", default=["sync", "async", "ensemble", "rtc"])
    ap.add_argument("--delays-ms", nargs="+", type=float, default=[0, 100, 300])
    ap.add_argument("--episodes", type=int, default=20, help="seeds per task and cell (default 20)")
    ap.add_argument("--workers", type=int, default=2, help="cells at a time (default 2, one a core)")
    ap.add_argument("--backend", default="torch", help="deploy backend (default torch: no export)")
    ap.add_argument("--episode-time-s", type=float, help="cap each episode (quick looks only)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="overrides for every cell, e.g. deploy.rtc_mask=hard (give each variant its own --out)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "deploy_strategies")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "log.txt"
    # A rerun skips finished cells: they must come from the same weights, overrides and code
    # (outside git the code cannot be told apart, so nothing is reused).
    marker, made = args.out / "provenance.json", provenance(args.policy, args.set)
    kept = json.loads(marker.read_text()) if marker.is_file() else {}
    cells_kept = list(args.out.glob("*-*ms-*.json"))
    if cells_kept and (kept != made or made["platform"] is None):
        differ = [k for k in made if kept.get(k) != made[k]] or ["platform (not a git checkout)"]
        raise SystemExit(f"{args.out} holds {len(cells_kept)} cells made with other {', '.join(differ)}; "
                         "delete them or give this run its own --out")
    # Replaced whole, never truncated in place: a full disk left half a marker, and the next
    # run died on its JSON with a traceback.
    replace_text(marker, json.dumps(made, indent=2), durable=False)
    tasks = list(make_tasks(args.robot))
    common = ["--backend", args.backend, "--robot", args.robot]
    overrides = tuple(args.set)
    if args.episode_time_s:
        common += ["--episode-time-s", f"{args.episode_time_s:g}"]

    # The bundle first, alone: parallel cells would each try to export it.
    if deploy(args.policy, args.out / "warm.json", log, *common, "--episodes", "1", overrides=overrides).returncode:
        raise SystemExit(f"deploy failed; see {log}")

    shares = [args.episodes // args.workers + (i < args.episodes % args.workers) for i in range(args.workers)]
    cells = []
    for strategy in args.strategies:
        for delay in args.delays_ms:
            for task in tasks:
                for i, n in enumerate(shares):
                    if n:
                        seed = 1000 + sum(shares[:i])
                        path = args.out / f"{strategy}-{delay:g}ms-{task}-{seed}.json"
                        cells.append(((strategy, delay, task), path, ["--strategy", strategy, "--delay-ms", f"{delay:g}", "--task", task,
                                             "--episodes", str(n), "--seed", str(seed)]))
    todo = [(p, a) for _, p, a in cells if not _complete(p)]  # one cut short (Ctrl-C) is run again
    print(f"{len(cells)} cells, {len(todo)} to run ({args.episodes} seeds a task, {args.workers} at a time)", flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.workers) as pool:
        done = pool.map(lambda cell: (cell[0], deploy(args.policy, cell[0], log, *common, *cell[1], overrides=overrides)), todo)
        for path, result in done:
            if result.returncode or not _complete(path):
                raise SystemExit(f"{path.name} failed or stopped early; see {log}")
    minutes = (time.perf_counter() - start) / 60

    rows = []
    for strategy in args.strategies:
        for delay in args.delays_ms:
            row = {"strategy": strategy, "delay_ms": delay, "tasks": {}, "seam_trips": 0, "holds": 0,
                   "max_seam_jump": 0.0, "max_step": 0.0, "delays": []}
            for task in tasks:
                parts = [json.loads(p.read_text()) for key, p, _ in cells if key == (strategy, delay, task)]
                episodes = [e for part in parts for e in part["per_episode"]]
                row["tasks"][task] = {"successes": sum(bool(e["success"]) for e in episodes), "episodes": len(episodes),
                                      "seeds": {e["seed"]: bool(e["success"]) for e in episodes}}
                row["seam_trips"] += sum(e["seam_trips"] for e in episodes)
                row["holds"] += sum(e["holds"] for e in episodes)
                row["max_seam_jump"] = max([row["max_seam_jump"], *(e["max_seam_jump"] for e in episodes)])
                # any tick's jump, not only a seam's first action (cells from before lack it)
                row["max_step"] = max([row["max_step"], *(e.get("max_step", float("nan")) for e in episodes)])
                row["delays"] += [d for e in episodes for d in e["delays"]]
            rows.append(row)
    print(f"\n{args.policy} on {args.robot}, backend {args.backend} {' '.join(args.set)}; {minutes:.1f} min")
    print(f"{'strategy':<9} {'delay':>6}  " + "  ".join(f"{t:<34}" for t in tasks)
          + f"{'seam trips':>11} {'holds':>6} {'max jump':>9} {'max step':>9} {'delay ticks':>12}")
    print(f"{'':<17}" + " " * (36 * len(tasks)) + f"{'':>18} {'(ticks of top speed)':>19}")
    for r in rows:
        cells_txt = "  ".join(f"{rate_with_interval(r['tasks'][t]['successes'], r['tasks'][t]['episodes']):<34}"
                              for t in tasks)
        ticks = f"{min(r['delays'], default=0)}-{max(r['delays'], default=0)}"
        print(f"{r['strategy']:<9} {r['delay_ms']:>4.0f}ms  {cells_txt}{r['seam_trips']:>11} {r['holds']:>6} "
              f"{r['max_seam_jump']:>9.2f} {r['max_step']:>9.2f} {ticks:>12}")
    for line in against_sync(rows, tasks):
        print(line)
    for r in rows:
        r["delays"] = sorted(set(r["delays"]))
    result = {"policy": str(args.policy), "robot": args.robot, "backend": args.backend, "overrides": args.set,
              "provenance": made,
              "episodes": args.episodes,
              "minutes": minutes, "load_average": os.getloadavg(), "rows": rows}
    replace_text(args.out / "deploy_strategies.json", json.dumps(result, indent=2), durable=False)
    print(f"wrote {args.out / 'deploy_strategies.json'}")


if __name__ == "__main__":
    main()
