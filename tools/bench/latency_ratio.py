"""Chunk latency of the Shallow-π students against their teacher, beside the FLOP-ideal ratio
(the target, BENCHMARKS.md "Distillation" (c): the 6-layer student's measured ratio within
5 % of the ideal).

The students are the teacher's uniform cuts, timed with it as chunk_timing.py says (one
recorded observation, the robot's path, one thread, the models interleaved chunk by
chunk), in `--blocks` blocks of `--repeats` rounds: each block gives one estimate, and
their spread is the machine's noise. FLOPs are counted once per model on the same path
(`distill.report.chunk_cost`: matmuls and attention); the reference path runs ~1 % more,
all in the part no layer count removes, which the sampler folds away.

`--backend onnxruntime` times instead what the `cpu` deployment profile runs: each model's
unrolled chunk graph (deploy/export_onnx.py), exported here (~80 s for an 18-layer
`teacher`-preset policy, ~30 s for its 6-layer cut) and run by ONNX Runtime on one thread
from fixed inputs already preprocessed; its FLOPs are those of the graph's torch module.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/latency_ratio.py \\
        --teacher robots/arm/teacher --store STORE.zarr --layers 6 4 --repeats 20 --blocks 6
    PYTHONPATH=platform python tools/bench/latency_ratio.py --teacher robots/arm/teacher \\
        --backend onnxruntime --layers 6 4 --repeats 20 --blocks 8

Prints a table (per block, then the mean and median) and writes JSON (.bench/latency_ratio.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from chunk_timing import (
    OnnxChunk,
    interleaved_chunk_times,
    interleaved_onnx_times,
    one_observation,
    teacher_and_cuts,
)

from shallowpi.distill.report import chunk_cost

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="teacher checkpoint folder")
    ap.add_argument("--store", type=Path,
                    help="a store of the teacher's robot, e.g. .bench/reproduce/arm/arm.zarr (one observation is used)")
    ap.add_argument("--layers", type=int, nargs="+", default=[6, 4], help="student depths (default 6 4)")
    ap.add_argument("--repeats", type=int, default=20, help="rounds a block (default 20)")
    ap.add_argument("--blocks", type=int, default=6, help="estimates (default 6)")
    ap.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                    help="torch: Policy.sample_actions with its preprocessing and fast sampler (default); "
                         "onnxruntime: the exported unrolled chunk graph the cpu profile deploys")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "latency_ratio.json", help="JSON written here")
    args = ap.parse_args()
    if args.backend == "torch" and args.store is None:
        ap.error("--store is needed with the torch backend (one recorded observation is timed)")
    if args.store is not None and not args.store.is_dir():
        ap.error(f"--store {args.store}: no store there (record one: `platform record --robot arm --sim "
                 "--task cube_in_bowl --episodes 1 record.sim_size=64x64 --dataset PATH`)")

    models = teacher_and_cuts(args.teacher, args.layers, name=lambda k: f"{k} layers")
    if args.backend == "torch":
        obs = one_observation(args.store, models["teacher"])
        # chunk_cost prepares the fast sampler, counts its FLOPs (attention included) and warms it up.
        flops = {name: chunk_cost(policy, obs, 1).gflops * 1e9 for name, policy in models.items()}
    else:
        with tempfile.TemporaryDirectory() as folder:
            graphs = {name: OnnxChunk(policy, Path(folder) / name.replace(" ", "_")) for name, policy in models.items()}
        flops = {name: graph.flops for name, graph in graphs.items()}
        for name, graph in graphs.items():
            print(f"{name}: chunk graph exported in {graph.export_s:.0f} s, max |onnx - torch| {graph.max_abs_diff:.1e}")
    ideal = {name: flops[name] / flops["teacher"] for name in models}

    blocks = []
    print(f"{'block':>5}  " + "  ".join(f"{name:>22}" for name in models))
    for b in range(args.blocks):
        times = (interleaved_chunk_times(models, obs, args.repeats) if args.backend == "torch"
                 else interleaved_onnx_times(graphs, args.repeats))
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
    args.out.write_text(json.dumps({"teacher": str(args.teacher), "backend": args.backend, "threads": 1,
                                    "repeats": args.repeats,
                                    "blocks": blocks, "summary": summary}, indent=1))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
