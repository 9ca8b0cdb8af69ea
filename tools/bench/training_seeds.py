"""Distillation against the task loss alone over several training seeds of the same students.

One pair of students (all three losses, task loss alone) judged on 200 seeds a task says
whether distillation beat the task loss for that training run; a second run of the same
recipe with another training seed (`reproduce.py --set +distill.train.seed=S`: the batch
order and the flow-matching noise and times) says how much of the difference is the run's
own luck. Reads the kept results of `reproduce.py` runs that differ only in that seed and
prints, for each depth both runs have:

- each run's successes a task, and its seed-by-seed count (exact McNemar);
- the runs pooled: successes a task over every run with its 95 % Wilson interval, and the
  seeds-only-one-solved counts summed over runs (the matched-pairs test stratified by run,
  which reduces to McNemar on the summed counts) with its exact p;
- the same row of two runs against each other, seed by seed: the training seed's own spread.

    python tools/bench/training_seeds.py docs/reproduce docs/reproduce_seed1 --out .bench/training_seeds_120.json
    python tools/bench/training_seeds.py docs/reproduce_few40 docs/reproduce_few40_seed1
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from distill_data_curve import PAIRS, ROWS  # noqa: E402

from shallowpi.evaluate.interval import paired_p_value, wilson_interval  # noqa: E402

SEED_KEY = "+distill.train.seed="


def training_seed(last_run: dict[str, Any]) -> int:
    """The students' training seed a run was made with (its `--set`; 0 when not set)."""
    for item in last_run.get("set") or []:
        if item.startswith(SEED_KEY):
            return int(item.removeprefix(SEED_KEY))
    return 0


def load(folder: Path, robot: str) -> tuple[int, int, dict[str, dict]]:
    """(training seed, demonstrations a task, {row: row result}) of one results folder's `robot`."""
    data = json.loads((folder / "reproduce.json").read_text())
    result = next(r for r in data["results"] if r["robot"] == robot)
    return training_seed(data["last_run"]), int(data["last_run"]["episodes"]), {r["row"]: r for r in result["rows"]}


def discordant(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int]:
    """(seeds only a solved, seeds only b solved) over the seeds both ran."""
    common = a.keys() & b.keys()
    return sum(a[s] and not b[s] for s in common), sum(b[s] and not a[s] for s in common)


def compare(runs: list[tuple[int, dict[str, dict]]], tasks: list[str]) -> dict[str, Any]:
    """Every depth both rows of which every run has: per run, pooled, and run against run."""
    out: dict[str, Any] = {}
    for depth, (distilled, task_only) in PAIRS.items():
        if not all(distilled in rows and task_only in rows for _, rows in runs):
            continue
        per_run, only = [], {"distilled": 0, "task_only": 0}
        for seed, rows in runs:
            counts = {t: discordant(rows[distilled]["tasks"][t]["seeds"], rows[task_only]["tasks"][t]["seeds"])
                      for t in tasks}
            per_run.append({"training_seed": seed,
                            "successes": {row: {t: rows[row]["tasks"][t]["successes"] for t in tasks}
                                          for row in (distilled, task_only)},
                            "only_distilled": sum(c[0] for c in counts.values()),
                            "only_task": sum(c[1] for c in counts.values()),
                            "by_task": {t: list(c) for t, c in counts.items()}})
            only["distilled"] += per_run[-1]["only_distilled"]
            only["task_only"] += per_run[-1]["only_task"]
        pooled = {}
        for row in (distilled, task_only):
            pooled[row] = {}
            for t in tasks:
                k = sum(rows[row]["tasks"][t]["successes"] for _, rows in runs)
                n = sum(rows[row]["tasks"][t]["episodes"] for _, rows in runs)
                pooled[row][t] = {"successes": k, "n": n, "interval95": list(wilson_interval(k, n))}
        spread = {}
        for row in (distilled, task_only):
            for (sa, ra), (sb, rb) in itertools.combinations(runs, 2):
                a, b = (sum(x) for x in zip(*(discordant(ra[row]["tasks"][t]["seeds"], rb[row]["tasks"][t]["seeds"])
                                               for t in tasks)))
                spread[f"{row}: seed {sa} against seed {sb}"] = [a, b, paired_p_value(a, b)]
        out[str(depth)] = {"runs": per_run, "pooled": pooled, "pooled_only": only,
                           "pooled_p": paired_p_value(only["distilled"], only["task_only"]), "spread": spread}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="reproduce.py --results folders, one per training seed")
    ap.add_argument("--robot", default="arm")
    ap.add_argument("--out", type=Path, help="write the comparison as JSON here too")
    args = ap.parse_args()

    loaded = [load(folder, args.robot) for folder in args.results]
    if len({episodes for _, episodes, _ in loaded}) != 1 or len({seed for seed, _, _ in loaded}) != len(loaded):
        sys.exit("training_seeds: give folders of the same --episodes and different training seeds, got "
                 + ", ".join(f"{f} (seed {s}, {e} a task)" for f, (s, e, _) in zip(args.results, loaded)))
    runs = sorted(((seed, rows) for seed, _, rows in loaded), key=lambda run: run[0])
    first = runs[0][1]
    tasks = list(next(iter(first.values()))["tasks"])
    result = compare(runs, tasks)
    if not result:
        sys.exit("training_seeds: no depth has both its distilled and its task-only row in every folder")
    print(f"{args.robot}, {loaded[0][1]} demonstrations a task, training seeds {[s for s, _ in runs]}")
    for depth, r in result.items():
        distilled, task_only = PAIRS[int(depth)]
        print(f"\n{depth} layers: {ROWS[distilled]} against {ROWS[task_only]}")
        print("| training seed | " + " | ".join(f"{t}, distilled / task only" for t in tasks)
              + " | seeds only distillation / only the task loss solved |")
        print("|---:|" + "---|" * len(tasks) + "---|")
        for run in r["runs"]:
            s = run["successes"]
            cells = [f"{s[distilled][t]} / {s[task_only][t]}" for t in tasks]
            p = paired_p_value(run["only_distilled"], run["only_task"])
            print(f"| {run['training_seed']} | " + " | ".join(cells)
                  + f" | {run['only_distilled']} / {run['only_task']} (p = {p:.3f}) |")
        cells = []
        for t in tasks:
            a, b = r["pooled"][distilled][t], r["pooled"][task_only][t]
            cells.append(" / ".join(f"{x['successes']}/{x['n']} ({100 * x['successes'] / x['n']:.1f} %, "
                                    f"{100 * x['interval95'][0]:.1f}-{100 * x['interval95'][1]:.1f} %)" for x in (a, b)))
        o = r["pooled_only"]
        print("| pooled | " + " | ".join(cells) + f" | {o['distilled']} / {o['task_only']} (p = {r['pooled_p']:.3f}) |")
        for name, (a, b, p) in r["spread"].items():
            print(f"- the training seed alone, {name}: seeds only one solved {a} / {b} (p = {p:.3f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
