"""Deployment latency: one action chunk per backend, teacher and student, in one run.

(a) Chunk latency (one observation -> 50 actions, 10 Euler steps) at the `small` preset:
    the 18-layer teacher and the 6-layer student cut from it (layers 0 3 7 10 14 17), each
    through `torch reference` (Pi0Model.sample_actions), `torch sampler` (ChunkSampler: the
    torch backend), `onnxruntime chunk` (the unrolled chunk graph: the onnxruntime backend)
    and `onnxruntime split` (prefix graph + one step graph per Euler step). The same
    preprocessed inputs and noise for all; max |Δ| is each path against the reference.
    Both models are built and exported first, then timed round-robin: `--repeats` rounds
    of one chunk per model and path, so load that comes and goes falls on both alike
    (before 2026-12-07 the student was timed right after its bundle build and the teacher
    only after its own export, one after the other).
    Ratios: student / teacher per backend, and onnxruntime / torch sampler per model.
    Exporting the teacher's unrolled chunk (18 layers x 10 steps) took over 9 CPU-minutes
    here without finishing, so by default the teacher runs the split graphs only
    (--teacher-chunk exports it too); each export's time is in the JSON.
(b) The control loop at 30 Hz while inference runs beside it: the executor (rtc, realtime)
    on the twin (`arm`, 64x64 renders) with the student's bundle on onnxruntime: period
    p50/p99, overruns, holds, seam trips.
(d) The robot side's preprocessing of one observation (numpy `Preprocessor`: each camera
    cropped and resized to the model's size, the state normalised, the task tokenised) at the
    twins' 64x64 renders and a RealSense's 640x480, beside the chunk it feeds.
(c) Expected chunk latency on a Jetson from FLOPs and bytes moved (a roofline bound, not a
    measurement): at π0 size (Gemma 2B + 300M expert, SigLIP So400m, 3 cameras), teacher
    and 6-layer student, fp16 weights; vision and VLM weights read once a chunk, the expert's
    once per Euler step.

    PYTHONPATH=platform python tools/bench/deploy_latency.py --threads 1   # JSON in .bench/
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from policy_latency import chunk_flops  # noqa: E402

from shallowpi.deploy.export_onnx import CHUNK_INPUTS, PREFIX_INPUTS, example_inputs, export_graphs  # noqa: E402
from shallowpi.policy import Features, Policy, PolicyConfig, load_preset  # noqa: E402
from shallowpi.policy.sampler import ChunkSampler  # noqa: E402

STUDENT_LAYERS = [0, 3, 7, 10, 14, 17]
# Published peak dense throughput and memory bandwidth (NVIDIA data sheets).
JETSONS = {
    "AGX Orin 64GB (fp16)": {"tflops": 42.5, "gb_s": 204.8},
    "AGX Thor (fp8)": {"tflops": 500.0, "gb_s": 273.0},
}


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm (allocation, kernel choice)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def latency_paths(policy: Policy, graphs: dict[str, Path], threads: int) -> tuple[dict, np.ndarray]:
    """{path name: one chunk} for `policy` on the same preprocessed inputs and noise, each
    warmed once (allocation, kernel choice), and the torch reference's chunk."""
    import onnxruntime as ort

    from shallowpi.deploy.backends.onnxrt import SplitGraphs

    model = policy.model.eval()
    x = example_inputs(policy, seed=1)
    x["weight"] = torch.zeros_like(x["weight"])
    args = tuple(x[k] for k in CHUNK_INPUTS[:6])
    sampler = ChunkSampler(model, cuda_graph=False)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads

    def session(graph: str):
        return ort.InferenceSession(str(graphs[graph]), so, providers=["CPUExecutionProvider"])

    feed = {k: v.numpy() for k, v in x.items()}

    def torch_reference():
        with torch.inference_mode():
            return model.sample_actions(model.embed_prefix(*args[:4]), x["state"], x["noise"]).numpy()

    paths = {"torch reference": torch_reference, "torch sampler": lambda: sampler(*args).numpy()}
    if "chunk" in graphs:
        chunk = session("chunk")
        paths["onnxruntime chunk"] = lambda: chunk.run(None, {k: feed[k] for k in CHUNK_INPUTS})[0]
    if "prefix" in graphs and "step" in graphs:
        split = SplitGraphs(session("prefix"), session("step"), policy.cfg.num_steps)
        paths["onnxruntime split"] = lambda: split({k: feed[k] for k in PREFIX_INPUTS}, feed["state"], feed["noise"])
    for fn in paths.values():
        fn()  # warm
    return paths, torch_reference()


def latency_rows(models: dict[str, tuple[Policy, dict[str, Path], dict[str, float]]],
                 repeats: int, threads: int) -> list[dict]:
    """Chunk latency of every model and path, timed round-robin once every graph is built:
    `repeats` rounds of one chunk per model per path (the models alternating within each
    path), so load that comes and goes on a shared machine falls on teacher and student
    alike (as chunk_timing.py does). `models`: {name: (policy, graphs, export seconds)}."""
    built = {name: latency_paths(policy, graphs, threads) for name, (policy, graphs, _) in models.items()}
    times: dict[tuple[str, str], list[float]] = {(m, p): [] for m, (paths, _) in built.items() for p in paths}
    order = list(dict.fromkeys(p for _, p in times))
    for _ in range(repeats):
        for path in order:
            for name, (paths, _) in built.items():
                if path in paths:
                    t0 = time.perf_counter()
                    paths[path]()
                    times[name, path].append(time.perf_counter() - t0)
    rows = []
    for name, (paths, reference) in built.items():
        export_s = models[name][2]
        for path, fn in paths.items():
            p50, best = 1e3 * float(np.median(times[name, path])), 1e3 * float(np.min(times[name, path]))
            graph = {"onnxruntime chunk": "chunk", "onnxruntime split": "prefix+step"}.get(path)
            rows.append({"model": name, "depth": models[name][0].cfg.depth, "path": path, "p50_ms": p50,
                         "min_ms": best, "max_abs_diff": float(np.abs(fn() - reference).max()),
                         "export_s": export_s.get(graph) if graph else None})
    for row in sorted(rows, key=lambda r: r["model"] != "student"):  # printed student first, as before
        print(f"{row['model']:8} {row['path']:18} p50 {row['p50_ms']:8.1f} ms  min {row['min_ms']:8.1f} ms  "
              f"max|Δ| {row['max_abs_diff']:.1e}", flush=True)
    return rows


def export_timed(policy: Policy, folder: Path, names: tuple[str, ...]) -> tuple[dict[str, Path], dict[str, float]]:
    graphs, seconds = {}, {}
    for name in names:
        t0 = time.perf_counter()
        graphs.update(export_graphs(policy, folder, (name,), check=False))
        seconds[name] = time.perf_counter() - t0
        print(f"exported {name} ({policy.cfg.depth} layers) in {seconds[name]:.0f} s", flush=True)
    if "prefix" in seconds and "step" in seconds:
        seconds["prefix+step"] = seconds["prefix"] + seconds["step"]
    return graphs, seconds


def loop_under_inference(bundle_path: Path, seconds: float) -> dict:
    """(b): the executor on the twin, realtime, the student's bundle on onnxruntime."""
    from shallowpi import config
    from shallowpi.deploy.backends import BackendOptions, make_backend
    from shallowpi.deploy.bundle import Bundle
    from shallowpi.deploy.executor import Executor
    from shallowpi.deploy.settings import ExecutorConfig
    from shallowpi.robots.base import ticks_in
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.tasks import get_task
    from shallowpi.robots.sim.twin import TwinSpec

    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, render_width=64, render_height=64)
    bundle = Bundle.load(bundle_path)
    backend = make_backend("onnxruntime", bundle, BackendOptions(threads=1))
    task = get_task("arm", "cube_in_bowl")
    with DirectSimRobot(spec, cameras=bundle.cameras) as robot:
        robot.reset(0, task)
        executor = Executor(robot, backend, ExecutorConfig(strategy="rtc", realtime=True))
        executor.warm_up(task.instruction)
        report = executor.run_episode(task.instruction, ticks_in(seconds, spec.fps))
    return {"fps": spec.fps, "period_ms": 1e3 / spec.fps, "period_p50_ms": report.period_p50_ms,
            "period_p99_ms": report.period_p99_ms, "overruns": report.overruns, "ticks": report.ticks,
            "holds": report.holds, "seam_trips": report.seam_trips, "chunks": report.chunks,
            "inference_p50_ms": float(np.median(report.latency_ms)), "delays": report.delays}


def preprocess_rows(bundle, repeats: int) -> list[dict]:
    """(d): ms for one observation through the bundle's Preprocessor, per camera size."""
    from shallowpi.deploy.preprocess import IMAGE_PREFIX, STATE, Preprocessor

    preprocess = Preprocessor(bundle)
    rng = np.random.default_rng(0)
    rows = []
    for h, w in ((64, 64), (480, 640)):
        obs = {IMAGE_PREFIX + cam: rng.integers(0, 256, (h, w, 3), np.uint8) for cam in bundle.cameras}
        obs |= {STATE: np.zeros(len(bundle.state_stats.mean), np.float32), "task": "put the red cube in the bowl"}
        p50, best = timed(lambda obs=obs: preprocess(obs), repeats)
        rows.append({"frame": f"{w}x{h}", "cameras": len(bundle.cameras), "p50_ms": p50, "min_ms": best})
        print(f"preprocess {w}x{h} x{len(bundle.cameras)} cameras: p50 {p50:.2f} ms", flush=True)
    return rows


def roofline() -> list[dict]:
    """(c): FLOPs and bytes of one chunk at π0 size -> lower bounds on a Jetson."""
    rows = []
    pi0 = load_preset("pi0")
    with torch.device("meta"):
        from shallowpi.policy import Pi0Model

        for name, cfg in (("teacher", pi0), ("student", pi0.with_depth(6))):
            model = Pi0Model(cfg)
            count = {t: sum(p.numel() for p in getattr(model, t).parameters()) for t in ("vision", "vlm", "expert")}
            count["vlm"] -= model.vlm.embed_tokens.weight.numel()  # a lookup, not read whole
            flops = chunk_flops(cfg, cfg.num_cameras, cfg.max_text_tokens, cfg.num_steps)
            weight_bytes = 2 * (count["vision"] + count["vlm"] + cfg.num_steps * count["expert"])
            for jetson, peak in JETSONS.items():
                compute_ms = 1e3 * flops / (peak["tflops"] * 1e12)
                memory_ms = 1e3 * weight_bytes / (peak["gb_s"] * 1e9)
                rows.append({"model": name, "jetson": jetson, "gflops": flops / 1e9, "gbytes": weight_bytes / 1e9,
                             "compute_ms": compute_ms, "memory_ms": memory_ms, "bound_ms": max(compute_ms, memory_ms)})
                print(f"{name:8} {jetson:22} {flops / 1e9:8.0f} GFLOP {weight_bytes / 1e9:6.2f} GB  "
                      f"compute {compute_ms:6.1f} ms  memory {memory_ms:6.1f} ms", flush=True)
    return rows


def main() -> None:
    from shallowpi.deploy.bundle import build_bundle

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-seconds", type=float, default=10.0)
    parser.add_argument("--teacher-chunk", action="store_true", help="also export the teacher's unrolled chunk")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "deploy_latency.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg: PolicyConfig = load_preset("small")
    # The arm twin's 7 joints and first two cameras, so the student's bundle drives it in (b).
    from shallowpi import config
    from shallowpi.robots.sim.twin import TwinSpec

    arm = TwinSpec.from_config(config.compose(["robot=arm"]).robot)
    features = Features(len(arm.joints), len(arm.joints), sorted(arm.cameras)[: cfg.num_cameras])
    teacher = Policy(cfg, features).eval()
    with torch.no_grad():
        for name, p in teacher.model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2)
    student = Policy(cfg.with_depth(6), features).eval()
    student.model = teacher.model.keep_layers(STUDENT_LAYERS).eval()
    result: dict = {"threads": args.threads, "preset": "small", "student_layers": STUDENT_LAYERS}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        student.save(root / "student")
        t0 = time.perf_counter()
        bundle = build_bundle(root / "student", root / "student.bundle")  # chunk, prefix, step; parity-checked
        result["student_bundle_s"] = time.perf_counter() - t0
        print(f"student bundle (3 graphs, parity checked) in {result['student_bundle_s']:.0f} s", flush=True)
        (root / "teacher").mkdir()
        names = ("prefix", "step", "chunk") if args.teacher_chunk else ("prefix", "step")
        graphs, export_s = export_timed(teacher, root / "teacher", names)
        result["teacher_export_s"] = export_s
        # Both built before either is timed, then timed round-robin (latency_rows).
        rows = latency_rows({"teacher": (teacher, graphs, export_s), "student": (student, bundle.graphs, {})},
                            args.repeats, args.threads)
        result["latency"] = rows
        by = {(r["model"], r["path"]): r["p50_ms"] for r in rows}
        shared = sorted({p for m, p in by if m == "teacher"} & {p for m, p in by if m == "student"})
        result["student_over_teacher"] = {p: by["student", p] / by["teacher", p] for p in shared}
        result["onnxruntime_over_sampler"] = {
            f"{m} {p}": by[m, p] / by[m, "torch sampler"]
            for m, p in by if p.startswith("onnxruntime")}
        print("student / teacher:", {p: round(v, 2) for p, v in result["student_over_teacher"].items()})
        print("onnxruntime / torch sampler:", {k: round(v, 2) for k, v in result["onnxruntime_over_sampler"].items()})
        result["preprocess"] = preprocess_rows(bundle, args.repeats)
        result["loop"] = loop_under_inference(bundle.path, args.loop_seconds)
        print("loop:", result["loop"])
    result["roofline"] = roofline()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
