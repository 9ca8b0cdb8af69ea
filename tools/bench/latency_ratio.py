"""Chunk latency of the Shallow-π students against their teacher, beside the FLOP-ideal ratio
(the target, BENCHMARKS.md "Distillation" (c): the 6-layer student's measured ratio within
5 % of the ideal).

The students are the teacher's uniform cuts (distill/student.py: the same layers a
distillation keeps; latency does not depend on what they learned). One chunk of every model
on one recorded observation, through the path the robot runs (`Policy.sample_actions`
after `prepare_inference`: preprocessing, the fast sampler, denormalising), on one thread,
the models interleaved chunk by chunk, in `--blocks` blocks of `--repeats` rounds: each
block gives one estimate, and their spread is the machine's noise. FLOPs are counted once
per model on the same path (`distill.report.chunk_cost`: matmuls and attention); the reference path
runs ~1 % more, all in the part no layer count removes, which the sampler folds away.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/latency_ratio.py \\
        --teacher robots/arm/teacher --store STORE.zarr --layers 6 4 --repeats 20 --blocks 6

Prints a table (per block, then the mean and median) and writes JSON (.bench/latency_ratio.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from shallowpi.data.training import ChunkDataset
from shallowpi.distill.report import chunk_cost
from shallowpi.distill.student import build_student, uniform_layers
from shallowpi.policy.policy import Policy

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint folder")
    ap.add_argument("--store", type=Path, required=True,
                    help="a store of the teacher's robot, e.g. .bench/reproduce/arm/arm.zarr (one observation is used)")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 4], help="student depths (default 6 4)")
    ap.add_argument("--repeats", type=int, default=20, help="rounds a block (default 20)")
    ap.add_argument("--blocks", type=int, default=6, help="estimates (default 6)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "latency_ratio.json", help="JSON written here")
    args = ap.parse_args()

    torch.set_num_threads(1)
    teacher = Policy.load(args.teacher).eval()
    depth = teacher.cfg.depth
    models = {"teacher": teacher} | {f"{k} layers": build_student(teacher, uniform_layers(depth, k))[0].eval()
                                     for k in args.layers}
    item = ChunkDataset(args.store, teacher.cfg.chunk_len, episodes=[0])[0]
    obs = {k: v for k, v in item.items() if k not in ("action", "action_is_pad")}
    noise = torch.zeros(1, teacher.cfg.chunk_len, teacher.cfg.action_dim)
    # chunk_cost prepares the fast sampler, counts its FLOPs (attention included) and warms it up.
    flops = {name: chunk_cost(policy, obs, 1).gflops * 1e9 for name, policy in models.items()}
    ideal = {name: flops[name] / flops["teacher"] for name in models}

    blocks = []
    print(f"{'block':>5}  " + "  ".join(f"{name:>22}" for name in models))
    with torch.no_grad():
        for b in range(args.blocks):
            times: dict[str, list[float]] = {name: [] for name in models}
            for _ in range(args.repeats):
                for name, policy in models.items():
                    start = time.perf_counter()
                    policy.sample_actions(obs, noise=noise)
                    times[name].append(time.perf_counter() - start)
            p50 = {name: 1e3 * statistics.median(t) for name, t in times.items()}
            above = {name: 100 * (p50[name] / p50["teacher"] / ideal[name] - 1) for name in models}
            blocks.append({"p50_ms": p50, "above_ideal_pct": above})
            print(f"{b:>5}  " + "  ".join(f"{p50[n]:7.1f} ms ({above[n]:+5.1f} %)" for n in models), flush=True)
    print()
    print("| model | MFLOP a chunk | FLOP-ideal ratio | measured ratio, mean of blocks | above ideal: mean, median, range |")
    print("|---|---:|---:|---:|---|")
    summary = {}
    for name in models:
        ratios = [blk["p50_ms"][name] / blk["p50_ms"]["teacher"] for blk in blocks]
        above = [blk["above_ideal_pct"][name] for blk in blocks]
        summary[name] = {"mflops": flops[name] / 1e6, "ideal": ideal[name], "measured_mean": statistics.mean(ratios),
                         "above_mean_pct": statistics.mean(above), "above_median_pct": statistics.median(above),
                         "above_range_pct": [min(above), max(above)]}
        s = summary[name]
        print(f"| {name} | {s['mflops']:.1f} | {s['ideal']:.4f} | {s['measured_mean']:.4f} | {s['above_mean_pct']:+.1f} %, "
              f"{s['above_median_pct']:+.1f} %, {min(above):+.1f} to {max(above):+.1f} % |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"teacher": str(args.teacher), "threads": 1, "repeats": args.repeats,
                                    "blocks": blocks, "summary": summary}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
