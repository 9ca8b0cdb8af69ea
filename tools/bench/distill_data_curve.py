"""Distillation against the task loss alone, by how many demonstrations the students see.

Reads the kept results of `reproduce.py` runs that cut the same given teacher's students and
differ only in `--episodes` (the students' store; the teacher was trained on its own), and
plots each task's closed-loop success with its 95 % Wilson interval against demonstrations a
task: the 6- and 4-layer students with all three losses, the same students on the task loss
alone (each depth where the runs have it), and the teacher's interval as a band. Prints the
table and each depth's seed-by-seed count (exact McNemar), writes the PNG and a JSON.

    python tools/bench/distill_data_curve.py docs/reproduce_few20 docs/reproduce_few40 docs/reproduce_few60 \
        docs/reproduce --to docs/distill_data_curve.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.evaluate.interval import seed_by_seed, wilson_interval  # noqa: E402

# (distilled row, task-only row) by depth, and each row's label
PAIRS = {6: ("shallow6", "task6"), 4: ("shallow4", "task4")}
ROWS = {"shallow6": "6 layers, task + output + attention", "task6": "6 layers, task loss only",
        "shallow4": "4 layers, task + output + attention", "task4": "4 layers, task loss only"}


def load(folder: Path, robot: str) -> tuple[int, dict[str, dict]]:
    """(demonstrations a task, {row: row result}) of one results folder's `robot`."""
    data = json.loads((folder / "reproduce.json").read_text())
    result = next(r for r in data["results"] if r["robot"] == robot)
    return int(data["last_run"]["episodes"]), {r["row"]: r for r in result["rows"]}


def seeds_text(counts: set[int]) -> str:
    """'200' for one episode count, '100-200' for several: the unseen seeds each point scored."""
    low, high = min(counts), max(counts)
    return f"{low}" if low == high else f"{low}-{high}"


def figure(table: list[dict], teacher: dict, teacher_episodes: int, robot: str) -> Any:
    """The curve: per depth of PAIRS the runs have (rows) and per task of the `teacher` row
    (columns), the distilled and the task-only students' success (%, Wilson 95 % whiskers)
    against the demonstrations a task of `table` (main's points), over the teacher's interval
    as a band labelled with its layers and `teacher_episodes` (demonstrations a task of the
    run it comes from); the y label says how many seeds the points scored, the title names
    `robot`. Switches matplotlib to its Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(teacher["tasks"])
    depths = [d for d, pair in PAIRS.items() if any(p["row"] in pair for p in table)]
    fig, grid = plt.subplots(len(depths), len(tasks), figsize=(5 * len(tasks), 4 * len(depths)), sharey=True,
                             squeeze=False)
    band = f"teacher ({teacher['layers']} layers, {teacher_episodes} a task), 95 % interval"
    for axes, depth in zip(grid, depths):
        for ax, task in zip(axes, tasks):
            t = teacher["tasks"][task]
            low, high = wilson_interval(t["successes"], t["episodes"])
            ax.axhspan(100 * low, 100 * high, color="0.85", label=band)
            for row, colour in zip(PAIRS[depth], ("C0", "C1")):
                points = [p for p in table if p["row"] == row and p["task"] == task]
                xs = [p["episodes"] for p in points]
                ys = [100 * p["successes"] / p["n"] for p in points]
                errs = [[y - 100 * p["interval95"][0] for y, p in zip(ys, points)],
                        [100 * p["interval95"][1] - y for y, p in zip(ys, points)]]
                ax.errorbar(xs, ys, yerr=errs, marker="o", capsize=3, color=colour, label=ROWS[row])
            ax.set_title(f"{task}, {depth}-layer students")
            ax.set_xlabel("demonstrations a task the students train on")
            ax.set_xticks(sorted({p["episodes"] for p in table}))
            ax.grid(alpha=0.3)
        seeds = {p["n"] for p in table if p["row"] in PAIRS[depth]}
        axes[0].set_ylabel(f"closed-loop success, % of {seeds_text(seeds)} unseen seeds")
        axes[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{robot}: students of one teacher, distillation vs the task loss alone, by the students' data")
    fig.tight_layout()
    return fig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="reproduce.py --results folders, one per --episodes")
    ap.add_argument("--robot", default="arm")
    ap.add_argument("--teacher-from", type=Path, default=ROOT / "docs" / "reproduce",
                    help="results folder whose teacher row gives the band (default the Reproduction's)")
    ap.add_argument("--to", type=Path, default=ROOT / ".bench" / "distill_data_curve.png")
    args = ap.parse_args()

    runs = sorted((load(folder, args.robot) for folder in args.results), key=lambda run: run[0])
    teacher_episodes, teacher_rows = load(args.teacher_from, args.robot)
    teacher = teacher_rows["teacher"]
    tasks = list(teacher["tasks"])
    table: list[dict] = []
    print("| demonstrations a task | model | " + " | ".join(tasks) + " |")
    print("|---:|---|" + "---|" * len(tasks))
    for episodes, rows in runs:
        for row, label in ROWS.items():
            if row not in rows:
                continue
            cells = []
            for task in tasks:
                t = rows[row]["tasks"][task]
                low, high = wilson_interval(t["successes"], t["episodes"])
                cells.append(f"{t['successes']}/{t['episodes']} ({100 * low:.1f}-{100 * high:.1f} %)")
                table.append({"episodes": episodes, "row": row, "task": task, "successes": t["successes"],
                              "n": t["episodes"], "interval95": [low, high]})
            print(f"| {episodes} | {label} | " + " | ".join(cells) + " |")
        for depth, pair in PAIRS.items():
            if all(row in rows for row in pair):
                compared = seed_by_seed(*({t: rows[row]["tasks"][t].get("seeds") for t in tasks} for row in pair),
                                        tasks)
                print(f"|   | {depth} layers, seeds only distillation against only the task loss solved: {compared} |"
                      + " |" * (len(tasks) - 1))

    fig = figure(table, teacher, teacher_episodes, args.robot)
    import matplotlib.pyplot as plt

    args.to.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.to, dpi=110)
    plt.close(fig)
    args.to.with_suffix(".json").write_text(json.dumps(table, indent=1))
    print(f"wrote {args.to} and {args.to.with_suffix('.json')}")


if __name__ == "__main__":
    main()
