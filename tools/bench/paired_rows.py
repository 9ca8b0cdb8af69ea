"""Kept rows of different Reproduction runs against each other, seed by seed.

reproduce_report.py compares the distilled and the task-only student of one results folder;
training_seeds.py pools runs that differ in the training seed alone. This compares any rows
of any `reproduce.py --results` folders judged on the same seeds by the same detectors, as
FOLDER:ROW pairs (A B, then optionally more pairs, pooled): a student trained on other data
(b18: the teacher's rollouts added) against the one it is to beat. For each pair it prints
both rows' successes a task with 95 % intervals, the seeds only one solved with the exact
McNemar p, and, over every pair, the summed counts (McNemar stratified by pair; like each
pair's, a test of these students on these seeds, not of a training recipe; not made when a
row is in two pairs, whose counts would then be dependent). With `--teacher FOLDER:ROW` it
says which rows' rates are within that row's 95 % interval on every task (the issues'
criterion: the row's own uncertainty is not in it) and counts each row against it seed by
seed.

    python tools/bench/paired_rows.py docs/reproduce_roll40:shallow6 docs/reproduce_few40:task6 \\
        --teacher docs/reproduce:teacher
    python tools/bench/paired_rows.py docs/reproduce_few40:shallow6 docs/reproduce_few40:task6 \\
        docs/reproduce_few40_seed1:shallow6 docs/reproduce_few40_seed1:task6
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from training_seeds import discordant  # noqa: E402

from shallowpi.evaluate.interval import paired_p_value, rate_with_interval, wilson_interval  # noqa: E402


class Mismatch(ValueError):
    """Rows that cannot be compared seed by seed."""


def kept_row(spec: str, robot: str) -> dict[str, Any]:
    """FOLDER:ROW -> {"name", "tasks": {task: {seed: succeeded}}, "judge_sha256"} from the
    folder's kept evaluation stage. Mismatch when the folder has no such finished row or it
    was kept without per-seed outcomes."""
    folder, sep, row = spec.rpartition(":")
    if not sep or not folder:
        raise Mismatch(f"{spec}: expected FOLDER:ROW, e.g. docs/reproduce:shallow6")
    stage = Path(folder) / robot / "stages" / f"eval_{row}.json"
    if not stage.is_file():
        raise Mismatch(f"{spec}: no finished evaluation of {row} for {robot} ({stage})")
    kept = json.loads(stage.read_text())
    tasks = {task: r.get("seeds") for task, r in kept["tasks"].items()}
    if not all(tasks.values()):
        raise Mismatch(f"{spec}: kept without per-seed outcomes (before they were recorded)")
    if not kept.get("judge_sha256"):
        raise Mismatch(f"{spec}: kept without the sha256 of the code that judged it")
    return {"name": spec, "tasks": tasks, "judge_sha256": kept["judge_sha256"]}


def rate(seeds: dict[str, bool]) -> str:
    """'179/200 (89.5 %, 95 % CI 84.5-93.0 %)'."""
    return rate_with_interval(sum(seeds.values()), len(seeds), decimals=1)


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """{task: (seeds only a solved, seeds only b solved)}. Mismatch when the two were judged
    on other seeds or by other detectors (the judge code's sha256 differs)."""
    if a["judge_sha256"] != b["judge_sha256"]:
        raise Mismatch(f"{a['name']} and {b['name']} were judged by different code (a detector changed "
                       "between them): evaluate them again alike")
    if {t: sorted(s) for t, s in a["tasks"].items()} != {t: sorted(s) for t, s in b["tasks"].items()}:
        raise Mismatch(f"{a['name']} and {b['name']} were not judged on the same tasks and seeds")
    return {t: discordant(s, b["tasks"][t]) for t, s in a["tasks"].items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rows", nargs="+", help="FOLDER:ROW pairs: A B [A2 B2 ...]")
    ap.add_argument("--teacher", help="FOLDER:ROW whose 95 %% interval the rows are set against")
    ap.add_argument("--robot", default="arm")
    args = ap.parse_args()
    if len(args.rows) % 2:
        ap.error("give the rows in pairs, A B [A2 B2 ...]")
    try:
        rows = [kept_row(spec, args.robot) for spec in args.rows]
        teacher = kept_row(args.teacher, args.robot) if args.teacher else None
        for row in [*rows[1:], *([teacher] if teacher else [])]:
            compare(rows[0], row)  # every row on the same seeds, by the same detectors
        pairs = [(rows[i], rows[i + 1], compare(rows[i], rows[i + 1])) for i in range(0, len(rows), 2)]
    except (Mismatch, OSError) as exc:
        sys.exit(f"paired_rows: {exc}")
    tasks = list(rows[0]["tasks"])
    print("| row | " + " | ".join(tasks) + " | seeds only the first / only the second solved |")
    print("|---|" + "---|" * len(tasks) + "---|")
    total = [0, 0]
    for a, b, counts in pairs:
        only = [sum(c[0] for c in counts.values()), sum(c[1] for c in counts.values())]
        total = [total[0] + only[0], total[1] + only[1]]
        print(f"| {a['name']} | " + " | ".join(rate(a["tasks"][t]) for t in tasks) + " | |")
        print(f"| {b['name']} | " + " | ".join(rate(b["tasks"][t]) for t in tasks) + " | |")
        cells = [f"{c[0]} / {c[1]} (p = {paired_p_value(*c):.3f})" for c in counts.values()]
        print("| | " + " | ".join(cells) + f" | **{only[0]} / {only[1]} (p = {paired_p_value(*only):.3f})** |")
    if len(pairs) > 1 and len(set(args.rows)) < len(args.rows):
        print(f"\nnot summed over the {len(pairs)} pairs: a row in more than one of them makes their counts "
              "dependent")
    elif len(pairs) > 1:
        print(f"\nsummed over the {len(pairs)} pairs: {total[0]} / {total[1]} (p = {paired_p_value(*total):.3f})")
    if teacher:
        print(f"\n{teacher['name']}: " + ", ".join(f"{t} {rate(teacher['tasks'][t])}" for t in tasks))
        bounds = {t: wilson_interval(sum(s.values()), len(s)) for t, s in teacher["tasks"].items()}
        for row in dict.fromkeys(r["name"] for r in rows):
            seeds = next(r for r in rows if r["name"] == row)["tasks"]
            rates = {t: sum(seeds[t].values()) / len(seeds[t]) for t in tasks}
            under = [t for t in tasks if rates[t] < bounds[t][0]]
            above = [t for t in tasks if rates[t] > bounds[t][1]]
            against = compare(next(r for r in rows if r["name"] == row), teacher)
            only = [sum(c[0] for c in against.values()), sum(c[1] for c in against.values())]
            print(f"- {row}: " + ("under its interval on " + ", ".join(under) if under
                                  else "within its interval on every task" if not above
                                  else "not under its interval on any task (above on " + ", ".join(above) + ")")
                  + f"; seeds only it / only the teacher solved {only[0]} / {only[1]} "
                    f"(p = {paired_p_value(*only):.3f})")


if __name__ == "__main__":
    main()
