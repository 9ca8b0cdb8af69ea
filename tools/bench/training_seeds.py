"""Distillation against the task loss alone over several training seeds of the same students.

One pair of students (all three losses, task loss alone) judged on 200 seeds a task says
whether distillation beat the task loss in that training run; a second run of the same
recipe with another training seed (`reproduce.py --set +distill.train.seed=S`: the batch
order and the flow-matching noise and times) shows how much of that is the run's own luck.
Reads the kept results of `reproduce.py` runs that differ only in that seed (their
recipe.json otherwise equal, every row judged on the same seeds) and prints, for each depth
every run has both rows of:

- each run's successes a task and its seed-by-seed count (exact McNemar);
- the runs pooled: successes a task over every run, and the seeds-only-one-solved counts
  summed over runs (McNemar stratified by run) with their exact p. Like each run's, this
  tests these particular students on these seeds; two or three training runs cannot test
  the training recipe itself, and the pooled rates carry no interval for that reason;
- each row against itself across runs, seed by seed: the training seed's own spread, to
  set beside the distilled-against-task-only counts.

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

from shallowpi.evaluate.interval import paired_p_value  # noqa: E402

SEED_KEYS = ("+distill.train.seed=", "distill.train.seed=")


class Mismatch(ValueError):
    """Folders that are not runs of one recipe differing in the training seed only."""


def training_seed(recipe: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """(the students' training seed, the recipe without it) of a robot's recipe.json; 0
    when its `--set` names none."""
    seed, rest = 0, []
    for item in recipe.get("set") or []:
        key = next((k for k in SEED_KEYS if item.startswith(k)), None)
        if key is None:
            rest.append(item)
        else:
            seed = int(item.removeprefix(key))
    return seed, {**recipe, "set": rest}


def load(folder: Path, robot: str) -> tuple[int, dict[str, Any], dict[str, dict]]:
    """(training seed, recipe without it, {row: row result}) of one results folder's `robot`."""
    seed, recipe = training_seed(json.loads((folder / robot / "recipe.json").read_text()))
    data = json.loads((folder / "reproduce.json").read_text())
    result = next((r for r in data["results"] if r["robot"] == robot), None)
    if result is None:
        raise Mismatch(f"{folder} has no {robot} results")
    return seed, recipe, {r["row"]: r for r in result["rows"]}


def outcomes(rows: dict[str, dict], row: str, task: str, folder: Path) -> dict[str, bool]:
    """{seed: succeeded} of one row's task; Mismatch when it was kept without them."""
    seeds = rows[row]["tasks"][task].get("seeds")
    if not seeds:
        raise Mismatch(f"{folder}: {row} has no per-seed outcomes for {task} (kept before they were recorded)")
    return seeds


def discordant(a: dict[str, bool], b: dict[str, bool]) -> tuple[int, int]:
    """(seeds only a solved, seeds only b solved); a and b ran the same seeds."""
    return sum(a[s] and not b[s] for s in a), sum(b[s] and not a[s] for s in a)


def compare(runs: list[tuple[Path, int, dict[str, dict]]], tasks: list[str]) -> dict[str, Any]:
    """(folder, training seed, rows) of every run -> for every depth each run has both rows
    of: per run, pooled, and each row run against run. Mismatch when two rows to compare were
    judged on different seeds."""
    out: dict[str, Any] = {}
    for depth, pair in PAIRS.items():
        if not all(row in rows for _, _, rows in runs for row in pair):
            continue
        seen = {t: {tuple(sorted(outcomes(rows, row, t, f))) for f, _, rows in runs for row in pair} for t in tasks}
        if any(len(sets) > 1 for sets in seen.values()):
            raise Mismatch(f"the {depth}-layer rows were not all judged on the same seeds; evaluate them alike")
        per_run = []
        for folder, seed, rows in runs:
            by_task = {t: discordant(*(outcomes(rows, row, t, folder) for row in pair)) for t in tasks}
            per_run.append({"training_seed": seed,
                            "successes": {row: {t: rows[row]["tasks"][t]["successes"] for t in tasks} for row in pair},
                            "only_distilled": sum(c[0] for c in by_task.values()),
                            "only_task": sum(c[1] for c in by_task.values()),
                            "by_task": {t: list(c) for t, c in by_task.items()}})
        only = {key: sum(run[key] for run in per_run) for key in ("only_distilled", "only_task")}
        pooled = {row: {t: {"successes": sum(rows[row]["tasks"][t]["successes"] for _, _, rows in runs),
                            "n": sum(rows[row]["tasks"][t]["episodes"] for _, _, rows in runs)} for t in tasks}
                  for row in pair}
        spread = []
        for row in pair:
            for (fa, sa, ra), (fb, sb, rb) in itertools.combinations(runs, 2):
                a, b = (sum(x) for x in zip(*(discordant(outcomes(ra, row, t, fa), outcomes(rb, row, t, fb))
                                               for t in tasks)))
                spread.append({"row": row, "training_seeds": [sa, sb], "only_first": a, "only_second": b,
                               "p": paired_p_value(a, b)})
        out[str(depth)] = {"runs": per_run, "pooled": pooled, "pooled_only": only,
                           "pooled_p": paired_p_value(only["only_distilled"], only["only_task"]), "spread": spread}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path, help="reproduce.py --results folders, one per training seed")
    ap.add_argument("--robot", default="arm")
    ap.add_argument("--out", type=Path, help="write the comparison as JSON here too")
    args = ap.parse_args()

    try:
        loaded = [load(folder, args.robot) for folder in args.results]
        if len({json.dumps(recipe, sort_keys=True) for _, recipe, _ in loaded}) != 1:
            raise Mismatch("the folders' recipes differ in more than the training seed: "
                           + "; ".join(f"{f}: {r}" for f, (_, r, _) in zip(args.results, loaded)))
        if len({seed for seed, _, _ in loaded}) != len(loaded):
            raise Mismatch("two folders have the same training seed: "
                           + ", ".join(f"{f} (seed {s})" for f, (s, _, _) in zip(args.results, loaded)))
        runs = sorted(((folder, seed, rows) for folder, (seed, _, rows) in zip(args.results, loaded)),
                      key=lambda run: run[1])
        tasks = list(next(iter(runs[0][2].values()))["tasks"])
        result = compare(runs, tasks)
        if not result:
            raise Mismatch("no depth has both its distilled and its task-only row in every folder")
    except (Mismatch, OSError) as exc:
        sys.exit(f"training_seeds: {exc}")
    print(f"{args.robot}, {loaded[0][1]['episodes']} demonstrations a task, training seeds {[s for _, s, _ in runs]}")
    for depth, r in result.items():
        distilled, task_only = PAIRS[int(depth)]
        print(f"\n{depth} layers: {ROWS[distilled]} against {ROWS[task_only]}")
        print("| training seed | " + " | ".join(f"{t}, distilled / task only" for t in tasks)
              + " | seeds only distillation / only the task loss solved |")
        print("|---:|" + "---|" * len(tasks) + "---|")
        for run in r["runs"]:
            won = run["successes"]
            cells = [f"{won[distilled][t]} / {won[task_only][t]}" for t in tasks]
            p = paired_p_value(run["only_distilled"], run["only_task"])
            print(f"| {run['training_seed']} | " + " | ".join(cells)
                  + f" | {run['only_distilled']} / {run['only_task']} (p = {p:.3f}) |")
        cells = [" / ".join(f"{x['successes']}/{x['n']} ({100 * x['successes'] / x['n']:.1f} %)"
                            for x in (r["pooled"][distilled][t], r["pooled"][task_only][t])) for t in tasks]
        o = r["pooled_only"]
        print("| pooled | " + " | ".join(cells)
              + f" | {o['only_distilled']} / {o['only_task']} (p = {r['pooled_p']:.3f}) |")
        for pair in r["spread"]:
            first, second = pair["training_seeds"]
            print(f"- the training seed alone: {ROWS[pair['row']]}, seed {first} against seed {second}: seeds only "
                  f"one solved {pair['only_first']} / {pair['only_second']} (p = {pair['p']:.3f})")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
