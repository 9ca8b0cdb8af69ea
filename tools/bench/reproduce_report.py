"""The reproduction's table and plots, made from its kept results alone (BENCHMARKS.md "Reproduction").

`reproduce.py` calls this after every run; a reader regenerates the table, the plots and
reproduce.json from a results folder without training or evaluating anything:

    python tools/bench/reproduce_report.py                    # docs/reproduce, in place
    python tools/bench/reproduce_report.py RESULTS --to DIR   # another folder's, written elsewhere

Every robot with a ROBOT/rows.json in the folder is in the table, whichever run wrote it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.durable_files import replace_text  # noqa: E402
from shallowpi.evaluate.interval import rate_with_interval, seed_by_seed  # noqa: E402

# The chunk timings are `--latency-repeats` interleaved rounds (30 by default): a p99 of so
# few is numpy's interpolated percentile between the two slowest, near the maximum.
P99_NOTE = ("p99: numpy's 99th percentile of the interleaved rounds timed (reproduce.py --latency-repeats, "
            "30 by default); with 100 rounds or fewer it lies between the two slowest chunks, so it is "
            "close to the slowest one, not an estimate of a tail.")


def write_table(results: list[dict[str, Any]], folder: Path) -> str:
    """One markdown table a robot (success per task with its Wilson 95 % interval, chunk
    latency p50 and p99 (P99_NOTE), speed-up beside the FLOP-ideal, parameters, training
    minutes) and its seed-by-seed comparisons, written to `folder`/table.md; returns the text."""
    lines = []
    for result in results:
        tasks = sorted({t for row in result["rows"] for t in row["tasks"]})
        steps = f"; students trained {result['student_steps']:,} steps" if result.get("student_steps") else ""
        lines += [f"### {result['robot']} (recorded in {result['record_minutes']:.1f} min{steps})", "",
                  "| model | " + " | ".join(tasks) + " | chunk p50 / p99 ms (p99: near the max, below) | "
                  "speed-up (FLOP-ideal) | parameters | "
                  "training min |", "|---|" + "---|" * len(tasks) + "---:|---:|---:|---:|"]
        for row in result["rows"]:
            cells = [rate_with_interval(row["tasks"][t]["successes"], row["tasks"][t]["episodes"], decimals=1)
                     if t in row["tasks"] else "-" for t in tasks]
            speed = f"{row['speedup']:.2f}x ({row['flop_ideal_speedup']:.2f}x)"
            minutes = "given" if row["train_minutes"] is None else f"{row['train_minutes']:.1f}"
            lines.append(f"| {row['model']} | " + " | ".join(cells) + f" | {row['p50_ms']:.1f} / {row['p99_ms']:.1f} | "
                         f"{speed} | {row['params']:,} | {minutes} |")
        lines += ["", P99_NOTE, "", *paired_lines(result["rows"], tasks), ""]
    text = "\n".join(lines)
    replace_text(folder / "table.md", text, durable=False)
    return text


# Rows compared seed by seed: distillation against the same student trained on the task
# loss alone (issue 14/16's "distillation above task-only at 6 and 4 layers"), and the
# failed demonstrations through the teacher against the paper's student.
PAIRS = (("shallow6", "task6"), ("shallow4", "task4"), ("kd6", "task6"), ("shallow6f", "task6"),
         ("shallow6f", "shallow6"))


def paired_lines(rows: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    """For each pair of PAIRS evaluated on the same seeds: per task and over all tasks, the
    seeds only the first row solved, those only the second solved, and the exact McNemar p
    (evaluate/interval.py `seed_by_seed`). Rows evaluated before per-seed outcomes were
    kept are skipped."""
    by_name = {row["row"]: row for row in rows}
    out = []
    for a, b in PAIRS:
        if a not in by_name or b not in by_name:
            continue
        compared = seed_by_seed(*({task: cell.get("seeds") for task, cell in by_name[name]["tasks"].items()}
                                  for name in (a, b)), tasks)
        if compared is not None:
            out.append(f"- {by_name[a]['model']} against {by_name[b]['model']}, seeds solved by one of the two "
                       f"only: {compared}")
    if out:
        out.insert(0, "Same seeds, compared seed by seed (exact McNemar, two-sided):")
    return out


def plot(results: list[dict[str, Any]], folder: Path) -> list[Path]:
    """Write `figure` to `folder`/reproduce.png; returns [its path]."""
    import matplotlib.pyplot as plt

    fig = figure(results)
    png = folder / "reproduce.png"
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return [png]


MARKERS = ("o", "s", "^", "D", "v")  # one a task of a robot, the robot's colour for all


def figure(results: list[dict[str, Any]]) -> Any:
    """Success vs layers (all-loss students and the teacher, task-only as open markers) beside
    latency vs layers (measured p50 solid, the FLOP-ideal line from the teacher dashed). One
    colour a robot in both panels (a marker a task); x ticks at the layer counts present; the
    latency axis from 0 ms. Switches matplotlib to its Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_s, ax_l) = plt.subplots(1, 2, figsize=(11, 4))
    layers: set[int] = set()
    for n, result in enumerate(results):
        colour = f"C{n}"
        rows = result["rows"]
        # The teacher and the all-loss students by depth (shallow6f, the humanoid's student of
        # successful episodes only, is another recipe at 6 layers: not on this line).
        full = sorted((r for r in rows if r["row"] == "teacher" or re.fullmatch(r"shallow\d+", r["row"])),
                      key=lambda r: r["layers"])
        for task, marker in zip(sorted({t for r in rows for t in r["tasks"]}), itertools.cycle(MARKERS)):
            pts = [(r["layers"], r["tasks"][task]) for r in full if task in r["tasks"]]
            rate = [t["successes"] / t["episodes"] for _, t in pts]
            lo = [rt - t["interval95"][0] for rt, (_, t) in zip(rate, pts)]
            hi = [t["interval95"][1] - rt for rt, (_, t) in zip(rate, pts)]
            ax_s.errorbar([k for k, _ in pts], rate, yerr=[lo, hi], marker=marker, capsize=3, color=colour,
                          label=f"{result['robot']} {task}")
            layers.update(k for k, _ in pts)
            task_only = [(r["layers"], r["tasks"][task]) for r in rows if r["row"].startswith("task") and task in r["tasks"]]
            if task_only:
                ax_s.scatter([k for k, _ in task_only], [t["successes"] / t["episodes"] for _, t in task_only],
                             marker=marker, facecolors="none", edgecolors=colour, s=60)
                layers.update(k for k, _ in task_only)
        teacher = next((r for r in rows if r["row"] == "teacher"), None)
        ax_l.plot([r["layers"] for r in full], [r["p50_ms"] for r in full], "o-", color=colour,
                  label=f"{result['robot']} measured p50")
        layers.update(r["layers"] for r in full)
        if teacher:
            ax_l.plot([r["layers"] for r in full], [teacher["p50_ms"] * r["gflops"] / teacher["gflops"] for r in full],
                      "--", color=colour, label=f"{result['robot']} FLOP-ideal")
    ax_s.set(xlabel="joint layers kept (of the teacher's)", ylabel="closed-loop success",
             title="success vs layers (open: task loss only)", ylim=(-0.02, 1.02))
    ax_l.set(xlabel="joint layers kept", ylabel="ms per chunk (this CPU, 1 thread)", title="latency vs layers")
    ax_l.set_ylim(bottom=0)  # a ratio read off the plot needs the zero
    for ax in (ax_s, ax_l):
        ax.set_xticks(sorted(layers))  # whole layers: a single depth's axis ticked 3.80, 3.85, ...
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def gather(folder: Path) -> list[dict[str, Any]]:
    """Every robot's rows.json under `folder`, in name order (arm before humanoid), with the
    students' step count from the recipe.json beside it (robots may differ)."""
    results = []
    for path in sorted(folder.glob("*/rows.json")):
        result = json.loads(path.read_text())
        recipe = path.with_name("recipe.json")
        if recipe.is_file():
            result["student_steps"] = json.loads(recipe.read_text()).get("student_steps")
        results.append(result)
    return results


def report(folder: Path, to: Path | None = None, last_run: dict[str, Any] | None = None) -> tuple[str, list[Path]]:
    """Write table.md, reproduce.png and reproduce.json under `to` (default `folder`) from the
    rows.json of every robot in `folder`. `last_run` (the settings of the run that called) goes
    into reproduce.json; without it, the one already there is kept. Returns the table's text
    and the written paths. Raises FileNotFoundError when `folder` holds no robot's rows."""
    to = to or folder
    results = gather(folder)
    if not results:
        raise FileNotFoundError(f"{folder}: no ROBOT/rows.json (is it a reproduce.py --results folder?)")
    to.mkdir(parents=True, exist_ok=True)
    if last_run is None and (old := folder / "reproduce.json").is_file():
        last_run = json.loads(old.read_text()).get("last_run")
    text = write_table(results, to)
    pngs = plot(results, to)
    replace_text(to / "reproduce.json", json.dumps({"last_run": last_run, "results": results}, indent=2, default=str),
                 durable=False)
    return text, [to / "table.md", to / "reproduce.json", *pngs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", type=Path, default=ROOT / "docs" / "reproduce",
                    help="a reproduce.py --results folder (default docs/reproduce)")
    ap.add_argument("--to", type=Path, help="write the table and plots here instead (default: in RESULTS)")
    args = ap.parse_args()
    try:
        text, paths = report(args.results, args.to)
    except FileNotFoundError as err:
        sys.exit(f"error: {err}")
    print(text)
    print("wrote " + ", ".join(str(p) for p in paths))


if __name__ == "__main__":
    main()
