"""Several training recipes at once under one wall-clock budget: a lent GPU's sweep.

A small policy (the twins' `teacher` preset: 1.4 M parameters) leaves a big GPU idle, its
step bound by the host issuing ~10,000 small ops (on an H200: 155-166 ms a step alone,
176-191 ms with six runs sharing it), so one GPU trains several recipes in parallel about
as fast as one. Each `--variant NAME:KEY=VALUE,...` is one `platform train`
run on the same store; all start together. After `--check-after` seconds each run's step
rate is read from its metrics.jsonl; a run whose asked steps would not end before the
budget is restarted with as many steps as fit (so its cosine schedule still ends at
min_lr: a run cut short by the clock is a different recipe). At the deadline a run still
going is stopped with SIGINT and keeps the step it reached.

The runs stay in `--runs-dir`; with `--pack DIR` each run's last checkpoint (its EMA
weights, else its raw ones; config, metrics, log; no optimizer state) goes to
DIR/NAME.tar.gz, one file a run, for a device machine that returns only a few files.
Evaluate them afterwards in closed loop:

    python tools/bench/train_sweep.py --dataset arm.zarr --minutes 7 --pack $OUT \\
        --variant seed1:policy.train.seed=1 --variant b128:policy.train.batch_size=128
    python tools/bench/closed_loop.py --robot arm --run RUNS/seed1 --eval-episodes 100

Prints a table (steps asked and done, ms/step, final loss, held-out MSE over
the predict-the-mean baseline's) and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Variant:
    """One recipe: a name (the run's folder) and its `policy.*` overrides."""

    name: str
    overrides: list[str]

    @classmethod
    def parse(cls, text: str) -> Variant:
        """'NAME:key=value,key=value' (or just 'NAME' for the preset as it is)."""
        name, _, rest = text.partition(":")
        if not name or "/" in name:
            raise argparse.ArgumentTypeError(f"variant needs a plain NAME before ':', got {text!r}")
        overrides = [kv for kv in rest.split(",") if kv]
        for kv in overrides:
            if "=" not in kv:
                raise argparse.ArgumentTypeError(f"variant {name}: {kv!r} is not KEY=VALUE")
        return cls(name, overrides)

    def asked_steps(self, default: int) -> int:
        for kv in self.overrides:
            key, _, value = kv.partition("=")
            if key == "policy.train.steps":
                return int(value)
        return default


@dataclass
class Run:
    """A launched `platform train` process and what has been seen of it."""

    variant: Variant
    folder: Path
    steps: int
    proc: subprocess.Popen | None = None
    launched: float = 0.0
    restarted: bool = False
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, step) as each step is first seen

    @property
    def log(self) -> Path:
        return self.folder.parent / f"{self.variant.name}.log"

    def last_step(self) -> int | None:
        metrics = self.folder / "metrics.jsonl"
        if not metrics.is_file():
            return None
        lines = metrics.read_text().splitlines()
        for line in reversed(lines):
            try:
                return int(json.loads(line)["step"])
            except (ValueError, KeyError):  # a line being written
                continue
        return None

    def seconds_per_step(self) -> float | None:
        """From the first logged step to the newest, so start-up is not counted."""
        if not self.samples:
            return None
        (t0, s0), (t1, s1) = self.samples[0], self.samples[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 else None


def launch(run: Run, dataset: Path, policy: str, device: str) -> None:
    """Start `platform train` for the run (its folder emptied first), output to run.log."""
    if run.folder.exists():
        shutil.rmtree(run.folder)
    # Not closed_loop.platform_env: it replaces PYTHONPATH, and on a device machine the
    # carried wheels are on it.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "platform"),
                                                                     os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "shallowpi", "train", "--dataset", str(dataset), "--policy", policy,
           "--runs-dir", str(run.folder.parent), "--run", run.folder.name, "--no-progress", "--device", device,
           *[kv for kv in run.variant.overrides if not kv.startswith("policy.train.steps=")],
           f"policy.train.steps={run.steps}"]
    sink = open(run.log, "a")  # noqa: SIM115 (the child holds it; closed with the process)
    sink.write(f"$ {' '.join(cmd)}\n")
    sink.flush()
    run.proc = subprocess.Popen(cmd, env=env, stdout=sink, stderr=subprocess.STDOUT)
    sink.close()
    run.launched, run.samples = time.monotonic(), []


def poll(run: Run) -> None:
    step = run.last_step()
    if step is None:
        return
    if not run.samples or step != run.samples[-1][1]:  # when a step is first seen, for the rate
        run.samples.append((time.monotonic(), step))


def pack(run: Run, into: Path) -> Path | None:
    """The run's last checkpoint as one tar.gz (no optimizer state, no TensorBoard)."""
    marker = run.folder / "checkpoints" / "last"
    if not marker.is_file():
        return None
    ckpt = run.folder / "checkpoints" / marker.read_text().strip()
    out = into / f"{run.variant.name}.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name in ("config.yaml", "split.json", "metrics.jsonl", "eval.json"):
            if (run.folder / name).is_file():
                tar.add(run.folder / name, arcname=f"{run.variant.name}/{name}")
        if run.log.is_file():
            tar.add(run.log, arcname=f"{run.variant.name}/train.log")
        # The EMA weights are what gets evaluated; the raw ones only where there is no EMA.
        weights = ckpt / "ema" / "model.safetensors"
        if not weights.is_file():
            weights = ckpt / "model.safetensors"
        tar.add(marker, arcname=f"{run.variant.name}/checkpoints/last")
        tar.add(weights, arcname=f"{run.variant.name}/{weights.relative_to(run.folder)}")
    return out


def held_out_ratio(run: Run) -> float | None:
    path = run.folder / "eval.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("ratio")  # policy MSE / predict-the-mean MSE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="the store every variant trains on")
    ap.add_argument("--policy", default="teacher", help="policy preset (default teacher)")
    ap.add_argument("--variant", type=Variant.parse, action="append", required=True,
                    metavar="NAME:KEY=VALUE,...", help="one run; repeat for more")
    ap.add_argument("--minutes", type=float, required=True, help="wall budget for the whole sweep")
    ap.add_argument("--check-after", type=float, default=75.0,
                    help="seconds before the step rates are read and slow runs restarted (default 75)")
    ap.add_argument("--default-steps", type=int, default=9000, help="the preset's steps (default 9000)")
    ap.add_argument("--device", default="auto", help="cuda, cpu or auto (default)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / ".bench" / "sweep")
    ap.add_argument("--pack", type=Path, help="write NAME.tar.gz of each run's last checkpoint here")
    ap.add_argument("--out", type=Path, help="JSON report (default RUNS_DIR/sweep.json)")
    args = ap.parse_args()

    names = [v.name for v in args.variant]
    if len(set(names)) != len(names):
        ap.error(f"variant names must differ: {names}")
    args.runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    deadline = start + args.minutes * 60
    runs = [Run(v, args.runs_dir / v.name, v.asked_steps(args.default_steps)) for v in args.variant]
    for run in runs:
        launch(run, args.dataset, args.policy, args.device)
    checked = False
    while any(r.proc.poll() is None for r in runs) and time.monotonic() < deadline:
        time.sleep(2.0)
        for run in runs:
            poll(run)
        now = time.monotonic()
        if not checked and now - start >= args.check_after:
            checked = True
            for run in runs:
                rate = run.seconds_per_step()
                if run.proc.poll() is not None or rate is None:
                    continue
                startup = run.samples[0][0] - run.launched
                end = now + (run.steps - run.samples[-1][1]) * rate
                if end <= deadline - 20:  # 20 s for the last save and the held-out evaluation
                    continue
                fit = int((deadline - now - startup - 30) / rate * 0.92)
                print(f"{run.variant.name}: {rate * 1000:.0f} ms a step, {run.steps} steps would end "
                      f"{end - deadline:+.0f} s past the budget; restarting with {fit}", flush=True)
                run.proc.kill()
                run.proc.wait()
                run.steps, run.restarted = max(fit, 1), True
                launch(run, args.dataset, args.policy, args.device)
        elapsed = now - start
        if int(elapsed) % 30 < 2:
            print(f"[{elapsed:4.0f} s] " + "  ".join(f"{r.variant.name} {r.samples[-1][1] if r.samples else 0}"
                                                     f"/{r.steps}" for r in runs), flush=True)
    for run in runs:  # past the budget: stop, keep the step reached
        if run.proc.poll() is None:
            run.proc.send_signal(signal.SIGINT)
    for run in runs:
        try:
            run.proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            run.proc.kill()
        poll(run)

    report = []
    if args.pack:
        args.pack.mkdir(parents=True, exist_ok=True)
    for run in runs:
        rate = run.seconds_per_step()
        metrics = (run.folder / "metrics.jsonl").read_text().splitlines() if (run.folder / "metrics.jsonl").is_file() else []
        packed = pack(run, args.pack) if args.pack else None
        report.append({"name": run.variant.name, "overrides": run.variant.overrides, "steps": run.steps,
                       "steps_done": run.samples[-1][1] + 1 if run.samples else 0, "restarted": run.restarted,
                       "seconds_per_step": rate, "exit_code": run.proc.returncode,
                       "final_loss": json.loads(metrics[-1])["loss"] if metrics else None,
                       "held_out_mse_ratio": held_out_ratio(run), "packed": str(packed) if packed else None})
    out = args.out or args.runs_dir / "sweep.json"
    out.write_text(json.dumps({"dataset": str(args.dataset), "policy": args.policy, "minutes": args.minutes,
                               "wall_s": time.monotonic() - start, "runs": report}, indent=2))
    print(f"\n{'variant':<12} {'steps':>11} {'ms/step':>8} {'loss':>8} {'held-out MSE ratio':>18} exit  overrides")
    for r in report:
        ms = f"{r['seconds_per_step'] * 1000:.0f}" if r["seconds_per_step"] else "-"
        loss = f"{r['final_loss']:.4f}" if r["final_loss"] is not None else "-"
        mse = f"{r['held_out_mse_ratio']:.4f}" if r["held_out_mse_ratio"] is not None else "-"
        print(f"{r['name']:<12} {r['steps_done']:>5}/{r['steps']:<5} {ms:>8} {loss:>8} {mse:>18} {r['exit_code']!s:>4}  "
              f"{' '.join(r['overrides'])}{' (restarted)' if r['restarted'] else ''}")
    print(f"JSON: {out}")


if __name__ == "__main__":
    main()
