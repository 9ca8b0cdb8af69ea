"""Rerun BENCHMARKS.md's component figures on this checkout, one after another (issue 16, item 4).

Every figure that measures the code (the bus, the store, the loader, telemetry, the policy's
latency and training step, distillation's step, the twin, recording, deployment) is one
entry of FIGURES: its BENCHMARKS.md section and the command that makes it, at the argument
set that keeps the section's headline comparable in minutes rather than an hour (each
entry says what it cuts). The experiment logs (closed-loop training runs, the
reproduction) are not here: reproduce.py and closed_loop.py remake those.

    python tools/bench/figures.py --list                   # the plan and its minutes
    python tools/bench/figures.py                          # every figure, into .bench/figures/
    python tools/bench/figures.py --only loader telemetry  # some
    python tools/bench/figures.py --max-minutes 3          # the cheap ones

Each figure's printed table goes to OUT/NAME.txt and its JSON to OUT/NAME.json (distill_flops
writes none; deploy_strategies a folder of them); OUT/figures.json
holds, per figure, the commit, the start time, the wall seconds, the exit status and the
1-minute load average before and after (the machine is shared: a figure is read beside the
load it was made under). A rerun skips the figures that finished (`--again` remakes them).
Run at normal priority: at `nice 19` beside training a benchmark gets ~1.5 % of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "platform"))  # this checkout's shallowpi, for its atomic writer

from shallowpi.durable_files import replace_text  # noqa: E402


@dataclass(frozen=True)
class Figure:
    """One benchmark run: `script` with `args` ({out} is the figure's JSON path, {dir} its own
    scratch folder); `section` is the BENCHMARKS.md heading it updates; `minutes` the
    estimated wall time on the quiet 2-core machine; `cut` what the arguments leave out of
    the section's full run, if anything."""

    name: str
    section: str
    script: str
    args: tuple[str, ...]
    minutes: float
    cut: str = ""


FIGURES = [
    Figure("distill_flops", "### (a) A distillation step against a plain training step of the same student",
           "distill_step.py", ("--policy", "pi0", "--cameras", "3", "--flops-only"), 0.4),
    Figure("camera_views", "### The humanoid's head camera aimed at the table: tried, worse (ninth session)",
           "camera_views.py", ("--out", "{out}", "--picture", "{dir}/cameras_64px.png"), 0.5),
    Figure("record_sim_humanoid", "### (b) Recording in the simulated twin (`--sim direct`)",
           "record_sim.py", ("--robots", "humanoid", "--size", "224x224", "--episodes", "1", "--out", "{out}"), 0.5,
           cut="1 episode, not the section's 3"),
    Figure("record_sim_stack", "### (d) `--sim stack` vs `--sim direct`: the twin through the real drivers",
           "record_sim.py", ("--robots", "arm", "--sims", "direct", "stack", "--episodes", "1", "--out", "{out}"), 0.7),
    Figure("sim_twin", "## Cameras and simulation", "sim_twin.py", ("--ticks", "60", "--frames", "150", "--out", "{out}"),
           0.8),
    Figure("bus_cycle", "## Dynamixel bus", "bus_cycle.py", ("--out", "{out}"), 1.0),
    Figure("policy_train_small", "### (c) Training throughput", "policy_train.py",
           ("--threads", "1", "--steps", "5", "--out", "{out}"), 0.6),
    Figure("policy_train_teacher", "### (c) Training throughput", "policy_train.py",
           ("--policy", "teacher", "--batch", "32", "--threads", "1", "--steps", "5", "--out", "{out}"), 0.8),
    Figure("distill_step_small", "### (a) A distillation step against a plain training step of the same student",
           "distill_step.py", ("--threads", "1", "--repeats", "10", "--out", "{out}"), 1.0),
    Figure("distill_step_teacher", "### (a) A distillation step against a plain training step of the same student",
           "distill_step.py", ("--policy", "teacher", "--batch", "32", "--threads", "1", "--repeats", "6",
                               "--out", "{out}"), 1.0),
    Figure("attention_probs", "### (d) Attention probabilities for distillation, and the paths without them",
           "attention_probs.py", ("--threads", "1", "--reps", "30", "--out", "{out}"), 1.0,
           cut="the before/after baseline checkout"),
    Figure("telemetry", "## Telemetry and dashboard", "telemetry.py", ("--seconds", "10", "--hz", "50", "--out", "{out}"),
           1.2, cut="10 s a run, not the first run's 15"),
    Figure("lerobot_streaming_drops", "## lerobot's streaming encoder drops frames under load",
           "lerobot_streaming_drops.py", ("--busy", "2", "--out", "{out}"), 2.0),
    Figure("store_check", "## Store check", "store_check.py", ("--frames", "300", "--repeats", "3", "--out", "{out}"),
           2.0),
    Figure("policy_latency", "### (a) One action chunk (10 Euler steps, 50 actions): ours vs lerobot 0.6.1 PI0",
           "policy_latency.py", ("--threads", "1", "--reps", "10", "--out", "{out}"), 2.5),
    Figure("store_write", "## Episode store", "store_write.py",
           ("--codecs", "jpeg:90", "--durable", "both", "--repeats", "2", "--out", "{out}"), 1.0,
           cut="the JPEG-XL and Blosc rows: JPEG q90 (the default codec) only"),
    Figure("sim_experts", "## Cameras and simulation", "sim_experts.py", ("--seeds", "20", "--out", "{out}"), 2.5,
           cut="20 seeds a task, not 100 (deterministic: the first 20 of the same seeds)"),
    Figure("record_pipeline", "### (a) The pipeline on the real drivers, 5 minutes a rate", "record_pipeline.py",
           ("--seconds", "60", "--out", "{out}"), 2.5, cut="60 s a rate, not 300: compare the rates, not frame counts"),
    Figure("drop_last", "### (f) d / r between takes: removing the episode just saved", "drop_last.py",
           ("--sizes", "10", "100", "1000", "--repeats", "1", "--out", "{out}"), 3.0, cut="one repeat; no 500 row"),
    Figure("record_soak", "### (e) Memory over a long recording (`record_soak.py`)", "record_soak.py",
           ("--robot", "humanoid", "--episodes", "600", "--out", "{out}"), 3.5,
           cut="600 episodes, not 900 (the warm-up still passes the 256-episode caches)"),
    Figure("store_scale", "### Store size: commit and open against the episode count", "store_scale.py",
           ("--out", "{out}"), 4.0),
    Figure("loader", "## Loader", "loader.py", ("--repeats", "3", "--out", "{out}"), 4.0),
    Figure("deploy_strategies", "### Action selection under inference delay in the twin (third session)",
           "deploy_strategies.py", ("--policy", "robots/arm/teacher", "--strategies", "sync", "rtc",
                                    "--delays-ms", "0", "300", "--episodes", "20", "--workers", "1",
                                    "--out", "{dir}"), 5.0),
    Figure("deploy_latency", "## Deployment", "deploy_latency.py", ("--threads", "1", "--out", "{out}"), 7.0),
    Figure("deploy_parity", "### The reference chunk: how far each backend lands (forty-fifth session)",
           "deploy_parity.py", ("--out", "{out}"), 4.0),
]


def command(figure: Figure, out: Path) -> list[str]:
    """The figure's argv, its {out} and {dir} placeholders filled in under `out`."""
    scratch = out / figure.name
    return [sys.executable, str(HERE / figure.script),
            *(a.format(out=out / f"{figure.name}.json", dir=scratch) for a in figure.args)]


def commit() -> str:
    """This checkout's short commit, with "+dirty" when it has changes git tracks."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                           text=True).stdout
    return head.strip() + ("+dirty" if dirty.strip() else "")


def run(figure: Figure, out: Path) -> dict:
    """Run one figure (its printed table to OUT/NAME.txt); returns its record for figures.json."""
    shutil.rmtree(out / figure.name, ignore_errors=True)  # a bench that resumes must not read old results
    (out / figure.name).mkdir(parents=True)
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "platform"), os.environ.get("PYTHONPATH")])))
    argv = command(figure, out)
    started, load_before, t0 = time.strftime("%Y-%m-%d %H:%M:%S %Z"), os.getloadavg()[0], time.monotonic()
    with open(out / f"{figure.name}.txt", "w") as log:
        rc = subprocess.run(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    return {"section": figure.section, "command": " ".join(["python", *argv[1:]]).replace(str(ROOT) + "/", ""),
            "cut": figure.cut, "commit": commit(), "started": started, "seconds": round(time.monotonic() - t0, 1),
            "returncode": rc, "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = [f.name for f in FIGURES]
    ap.add_argument("--only", nargs="+", choices=names, metavar="NAME", help="these figures (default: every one)")
    ap.add_argument("--skip", nargs="+", choices=names, default=[], metavar="NAME")
    ap.add_argument("--max-minutes", type=float, help="only the figures estimated to take at most this long")
    ap.add_argument("--again", action="store_true", help="remake figures that finished in an earlier run")
    ap.add_argument("--list", action="store_true", help="print the plan and its estimated minutes, run nothing")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "figures")
    args = ap.parse_args()
    plan = [f for f in FIGURES if (not args.only or f.name in args.only) and f.name not in args.skip
            and (args.max_minutes is None or f.minutes <= args.max_minutes)]
    plan.sort(key=lambda f: f.minutes)  # the cheap ones first: a short session still gets most figures
    ledger_path = args.out / "figures.json"
    ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
    if not args.again:
        plan = [f for f in plan if ledger.get(f.name, {}).get("returncode") != 0]
    if args.list:
        for f in plan:
            print(f"{f.minutes:5.1f} min  {f.name:24s} " + " ".join(command(f, args.out)[1:]).replace(f"{ROOT}/", ""))
        print(f"{sum(f.minutes for f in plan):5.1f} min  in all ({len(plan)} figures; finished ones left out)")
        return
    args.out.mkdir(parents=True, exist_ok=True)
    for i, figure in enumerate(plan, 1):
        print(f"[{time.strftime('%H:%M:%S')}] {i}/{len(plan)} {figure.name} (~{figure.minutes:g} min) ...", flush=True)
        # Its old record goes first: run() removes the old results, and an attempt cut short
        # (Ctrl-C) kept the earlier "exit 0", so the next run skipped it as finished.
        # Replaced whole, never truncated in place: a full disk left half a ledger, and the
        # next run died on its JSON with a traceback.
        ledger.pop(figure.name, None)
        replace_text(ledger_path, json.dumps(ledger, indent=2), durable=False)
        ledger[figure.name] = record = run(figure, args.out)
        replace_text(ledger_path, json.dumps(ledger, indent=2), durable=False)
        if record["returncode"]:
            print(f"  failed (exit {record['returncode']}): see {args.out / figure.name}.txt", flush=True)
    print("\n| figure | section | wall s | exit | load before / after |\n|---|---|---:|---:|---|")
    for name, r in ledger.items():
        print(f"| {name} | {r['section'].lstrip('# ')} | {r['seconds']:.0f} | {r['returncode']} | "
              f"{r['load_before']:.1f} / {r['load_after']:.1f} |")
    print(f"wrote {ledger_path}")
    sys.exit(1 if any(r["returncode"] for r in ledger.values()) else 0)


if __name__ == "__main__":
    main()
