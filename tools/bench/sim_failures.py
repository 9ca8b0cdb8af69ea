"""Where a policy fails in the twin: success by scene, and how each failure ended.

Reads the JSON of `platform eval --sim ... --json F` (one or more files; each episode keeps
every object's start and end position) and, for each pick-and-place task, prints:

- success by the distance between the task's object and the bowl when the scene was
  placed (`--bins-cm`), with 95 % Wilson intervals: a cube beside the bowl is the arm
  teacher's weak spot (BENCHMARKS.md "Closed loop");
- each failure's end: the object at the bowl but not in it (held over it, or on its rim),
  never moved (within 2 cm of its start: a missed grasp), still in the air elsewhere, or
  moved on the table (dropped or pushed); and in how many failures the bowl was moved 2 cm
  or more;
- success by where the bowl was placed, along x and along y (`--bowl-bins` equal slices of
  the range the episodes span), with the failures' mean offset of the object's end from the
  bowl's centre along that axis: a policy that places at the average bowl position fails at
  both ends of the range, with offsets of opposite sign (the humanoid teacher's cube_in_bowl,
  BENCHMARKS.md "Closed loop").

    platform eval --policy CKPT --sim --task cube_in_bowl --sim-episodes 100 --json a.json
    python tools/bench/sim_failures.py a.json
    python tools/bench/sim_failures.py a.json b.json --bins-cm 12.5 14 17 100

Episodes recorded before the positions were kept (no `objects`) are counted and skipped.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.evaluate.interval import rate_with_interval  # noqa: E402
from shallowpi.robots.sim.tasks import PickPlace, make_tasks  # noqa: E402

MOVED_M = 0.02  # an object this far from where it started has been moved
AIRBORNE_M = 0.03  # an object's centre this far above its start is off the table
AT_BOWL_M = 0.09  # an object's centre this close (xy) to the bowl's is at it (its rim: 8.5 cm)


def _xy_distance(a: list[float], b: list[float]) -> float:
    """Distance (m) between two world positions [x, y, z] (m), over the table's plane."""
    return float(np.linalg.norm(np.subtract(a, b)[:2]))


def failure_kind(obj: dict[str, list[float]], bowl_end: list[float]) -> str:
    """How a failed episode left the task's object, from its start and end positions and the
    bowl's end position (m): "at the bowl" (within AT_BOWL_M of the bowl's centre, xy: held
    over it or resting on its rim), "in the air" (its centre over AIRBORNE_M above its start:
    held, or resting on something), "never moved" (within MOVED_M of its start), or "moved
    on the table"."""
    if _xy_distance(obj["end"], bowl_end) < AT_BOWL_M:
        return "at the bowl"
    if obj["end"][2] - obj["start"][2] > AIRBORNE_M:
        return "in the air"
    if _xy_distance(obj["end"], obj["start"]) < MOVED_M:
        return "never moved"
    return "moved on the table"


def summarize(episodes: list[dict], obj: str, bins_cm: list[float]) -> dict:
    """Success per start-distance bin between `obj` and the bowl, and the failures' ends.

    episodes: `eval --sim` JSON episodes holding `objects`. bins_cm: increasing edges in cm;
    a distance outside them falls in no bin. Returns {"bins": [(low, high, successes, n)],
    "failures": Counter of failure_kind, "bowl_moved": failures with the bowl moved}.
    """
    distance = [100 * _xy_distance(e["objects"][obj]["start"], e["objects"]["bowl"]["start"]) for e in episodes]
    bins = []
    for low, high in itertools.pairwise(bins_cm):
        inside = [e for e, d in zip(episodes, distance) if low <= d < high]
        bins.append((low, high, sum(e["success"] for e in inside), len(inside)))
    failed = [e for e in episodes if not e["success"]]
    kinds = Counter(failure_kind(e["objects"][obj], e["objects"]["bowl"]["end"]) for e in failed)
    bowl_moved = sum(_xy_distance(e["objects"]["bowl"]["end"], e["objects"]["bowl"]["start"]) >= MOVED_M
                     for e in failed)
    return {"bins": bins, "failures": kinds, "bowl_moved": bowl_moved}


def by_bowl_position(episodes: list[dict], obj: str, axis: int, slices: int) -> list[tuple]:
    """Success by the bowl's start coordinate `axis` (0: x, 1: y; m), in `slices` equal
    slices of the range the episodes span, and the failures' mean signed offset of `obj`'s
    end from the bowl's end along that axis (cm; None without failures).

    Returns [(low_m, high_m, successes, n, mean_offset_cm)], the last slice closed.
    """
    where = np.array([e["objects"]["bowl"]["start"][axis] for e in episodes])
    edges = np.linspace(where.min(), where.max(), slices + 1)
    index = np.clip(np.searchsorted(edges, where, side="right") - 1, 0, slices - 1)
    rows = []
    for k in range(slices):
        inside = [e for e, i in zip(episodes, index) if i == k]
        offsets = [100 * (e["objects"][obj]["end"][axis] - e["objects"]["bowl"]["end"][axis])
                   for e in inside if not e["success"]]
        rows.append((float(edges[k]), float(edges[k + 1]), sum(e["success"] for e in inside), len(inside),
                     float(np.mean(offsets)) if offsets else None))
    return rows


def print_by_bowl_position(episodes: list[dict], obj: str, slices: int) -> None:
    """`by_bowl_position` along x, then y, one line a slice."""
    for axis, name in enumerate("xy"):
        print(f"  bowl {name} at the start (m)   succeeded                        failures' {obj} - bowl "
              f"{name} at the end")
        for low, high, successes, n, offset in by_bowl_position(episodes, obj, axis, slices):
            rate = rate_with_interval(successes, n) if n else "-"
            shown = "-" if offset is None else f"{offset:+.1f} cm"
            print(f"  {low:+.3f} to {high:+.3f}       {rate:<32} {shown}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+", type=Path, help="`platform eval --sim --json` files")
    ap.add_argument("--bins-cm", nargs="+", type=float, default=[12.5, 14.0, 100.0],
                    help="edges of the object-to-bowl distance bins, cm (default 12.5 14 100)")
    ap.add_argument("--bowl-bins", type=int, default=3,
                    help="slices of the bowl's start x and y for success by its position (default 3; 0: none)")
    args = ap.parse_args()
    if len(args.bins_cm) < 2 or any(low >= high for low, high in itertools.pairwise(args.bins_cm)):
        ap.error("--bins-cm needs two or more strictly increasing edges")
    by_task: dict[tuple[str, str], list[dict]] = {}
    skipped = 0
    for path in args.json:
        if not path.is_file():
            ap.error(f"{path}: no such file")
        for report in json.loads(path.read_text())["tasks"]:
            kept = [e for e in report["episodes"] if e.get("objects")]
            skipped += len(report["episodes"]) - len(kept)
            by_task.setdefault((report["robot"], report["task"]), []).extend(kept)
    if skipped:
        print(f"skipped {skipped} episode(s) without object positions (evaluated before they were kept)")
    for (robot, name), episodes in by_task.items():
        task = make_tasks(robot, checks=True).get(name)
        if not isinstance(task, PickPlace) or not episodes:
            print(f"{robot} {name}: not a pick-and-place task with positions kept; skipped")
            continue
        summary = summarize(episodes, task.obj, args.bins_cm)
        print(f"{robot} {name}: {rate_with_interval(sum(e['success'] for e in episodes), len(episodes))}")
        print(f"  {task.obj} to bowl at the start   succeeded")
        for low, high, successes, n in summary["bins"]:
            rate = rate_with_interval(successes, n) if n else "-"
            print(f"  {low:5.1f}-{high:5.1f} cm              {rate}")
        kinds = ", ".join(f"{kind} {count}" for kind, count in summary["failures"].most_common()) or "none"
        print(f"  failures: {kinds}; the bowl moved >= {100 * MOVED_M:.0f} cm in {summary['bowl_moved']} of them")
        if args.bowl_bins > 0:
            print_by_bowl_position(episodes, task.obj, args.bowl_bins)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
