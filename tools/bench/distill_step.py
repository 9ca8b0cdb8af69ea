"""Cost of one distillation step against a plain training step of the same student.

Both go through the trainer's own step (forward, backward, clipping, AdamW) on one
synthetic batch already in memory: the plain step trains the k-layer student on flow
matching alone (FlowMatchingObjective), the distillation step adds the frozen teacher's
forward and the output and attention terms (DistillationObjective). Where the time goes is
measured part by part: input preparation (image resize, tokenising, normalising), the
teacher's no-grad forward with its attention maps, and the student's forward + backward.

    python tools/bench/distill_step.py                          # small 18 -> 6, batch 8, CPU
    python tools/bench/distill_step.py --policy small --layers 6 --batch 16 --threads 2
    python tools/bench/distill_step.py --policy pi0 --device cuda --batch 8 --cameras 3
    python tools/bench/distill_step.py --policy pi0 --cameras 3 --flops-only   # meta device, any size

Target (issue 14): distillation step <= 1.8x the plain step. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "tools" / "bench"))

from policy_train import Synthetic, preset  # noqa: E402

from shallowpi.distill.objective import AttentionPairs, DistillationObjective, LossWeights  # noqa: E402
from shallowpi.distill.student import build_student, uniform_layers  # noqa: E402
from shallowpi.policy import Features, Policy, load_preset  # noqa: E402
from shallowpi.policy.flops import flop_counter  # noqa: E402
from shallowpi.train.objective import FlowMatchingObjective, step_noise  # noqa: E402
from shallowpi.train.trainer import TrainConfig, Trainer  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(fn, repeats: int, device: torch.device) -> float:
    """Fastest of `repeats` calls of fn(), after one warm-up, in seconds."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)  # least disturbed by other processes on a shared machine


def meta_flops(policy: str, layers: int, cameras: int) -> dict[str, float]:
    """FLOPs of the teacher's forward and the student's forward + backward for one sample,
    counted on the meta device (no memory, no time: any size, pi0 included)."""
    from shallowpi.policy import Pi0Model

    cfg = dataclasses.replace(load_preset(policy), tokenizer="bytes", num_cameras=cameras)
    kept = uniform_layers(cfg.depth, layers)
    mid = len(kept) // 2
    with torch.device("meta"):
        teacher, student = Pi0Model(cfg), Pi0Model(cfg.with_depth(layers))
        s = cfg.vision.image_size
        images, image_masks = torch.zeros(1, cameras, 3, s, s), torch.ones(1, cameras, dtype=torch.bool)
        tokens = torch.zeros(1, cfg.max_text_tokens, dtype=torch.long)
        token_masks = torch.ones(1, cfg.max_text_tokens, dtype=torch.bool)
        state, x_t, t = torch.zeros(1, cfg.state_dim), torch.zeros(1, cfg.chunk_len, cfg.action_dim), torch.zeros(1)
        with flop_counter() as teacher_count, torch.no_grad():
            prefix = teacher.embed_prefix(images, image_masks, tokens, token_masks)
            teacher.velocity_with_attention(prefix, state, x_t, t, [kept[mid]])
        with flop_counter() as student_count:
            prefix = student.embed_prefix(images, image_masks, tokens, token_masks)
            v, maps = student.velocity_with_attention(prefix, state, x_t, t, [mid])
            (v.sum() + maps[mid].sum()).backward()
        with flop_counter() as vision_count, torch.no_grad():
            teacher.vision(images.flatten(0, 1))
    t_f, s_f = teacher_count.get_total_flops(), student_count.get_total_flops()
    return {"teacher_forward_gflop": t_f / 1e9, "student_forward_backward_gflop": s_f / 1e9,
            "vision_forward_gflop": vision_count.get_total_flops() / 1e9, "flop_ideal_ratio": 1 + t_f / s_f}


def _where_the_time_goes(distiller, on_device: dict, args, device: torch.device) -> tuple[dict, dict]:
    """The all-three-terms distillation step part by part (seconds, fastest of
    args.repeats), and the FLOPs (matmuls and attention, policy/flops.py) of the teacher's
    forward and of the student's forward + backward, whose ratio is the step's ideal one.
    Under bf16 autocast on CUDA, as the trainer's step runs."""
    assert isinstance(distiller, DistillationObjective)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    noise, t = step_noise(0, 0, args.batch, distiller.noise_spec())
    noise, t = noise.to(device), t.to(device)
    inputs = distiller.policy.model_inputs(on_device)
    student_layers = list(distiller.pairs.pairs)
    assert student_layers

    def student_fwd_bwd() -> None:
        with autocast:
            out = distiller.policy.flow_outputs(inputs, noise, t, student_layers)
        (out.velocity.float().square().sum() + sum(m.float().sum() for m in out.attention.values())).backward()

    def teacher_forward() -> None:
        with autocast:
            distiller._teacher(inputs, noise, t)

    def teacher_without_maps() -> None:
        with autocast, torch.no_grad():
            distiller.teacher.flow_outputs(inputs, noise, t)

    parts = {
        "inputs (resize, tokens, normalise)": _time(lambda: distiller.policy.model_inputs(on_device),
                                                    args.repeats, device),
        "teacher forward (no grad, attention maps)": _time(teacher_forward, args.repeats, device),
        "student forward + backward": _time(student_fwd_bwd, args.repeats, device),
        "teacher forward without maps": _time(teacher_without_maps, args.repeats, device),
    }
    if device.type == "cuda":
        # torch's FLOP counter rejects the CUDA attention kernels' grouped-query shapes (one
        # key/value head at π0 size); on the meta device attention decomposes into matmuls.
        per_sample = meta_flops(args.policy, args.layers, args.cameras)
        return parts, {"teacher_forward": per_sample["teacher_forward_gflop"] * 1e9 * args.batch,
                       "student_forward_backward": per_sample["student_forward_backward_gflop"] * 1e9 * args.batch}
    with flop_counter() as teacher_count, torch.no_grad():
        distiller._teacher(inputs, noise, t)
    with flop_counter() as student_count:
        student_fwd_bwd()
    distiller.policy.zero_grad(set_to_none=True)
    return parts, {"teacher_forward": teacher_count.get_total_flops(),
                   "student_forward_backward": student_count.get_total_flops()}


def _profile(trainer: Trainer, batch: dict, size: int, device: torch.device, steps: int = 3) -> str:
    """torch.profiler over `steps` training steps: the ops that took the most self time on
    the device (CUDA) or the host (CPU), as a table."""
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        for step in range(steps):
            trainer._step(100 + step, batch, size)
        _sync(device)
    averages = prof.key_averages()
    tables = [averages.table(sort_by="self_cpu_time_total", row_limit=10)]
    if cuda:
        tables.append(averages.table(sort_by="self_cuda_time_total", row_limit=10))
    return "\n".join(tables)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="small")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "distill_step.json")
    ap.add_argument("--flops-only", action="store_true", help="count FLOPs on the meta device, time nothing")
    ap.add_argument("--profile", action="store_true", help="print each row's top ops (torch.profiler, 3 steps)")
    ap.add_argument("--one-at-a-time", action="store_true",
                    help="build, time and free one row before the next (always on a GPU: memory at π0 size)")
    args = ap.parse_args()
    if args.flops_only:
        flops = meta_flops(args.policy, args.layers, args.cameras)
        print(f"{args.policy} {load_preset(args.policy).depth} -> {args.layers}, {args.cameras} cameras, per sample: " + ", ".join(
            f"{k} {v:.3f}" if "ratio" in k else f"{k} {v:,.4g}" for k, v in flops.items()))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.policy, [])  # the preset's own tokenizer (a word vocabulary from the task text)
    cams = ["front", "wrist", "left", "right"][: args.cameras]
    data = Synthetic(args.batch, cfg.chunk_len, 6, cams)
    torch.manual_seed(0)
    with torch.device(args.device):  # a 3 B teacher initialises in seconds on a GPU, minutes on its host
        teacher = Policy(cfg, Features(6, 6, cams))
    kept = uniform_layers(cfg.depth, args.layers)
    surgery = build_student(teacher, kept)[1]  # parameter counts; the rows build their own
    pairs = AttentionPairs.default(kept)
    device = torch.device(args.device)
    batch = torch.utils.data.default_collate([data[i] for i in range(args.batch)])
    base = dict(steps=1000, batch_size=args.batch, workers=0, progress=False, tensorboard=False, device=args.device)
    # Built when its turn comes: at π0 size each student holds ~1.6 B float32 weights with
    # their gradients and AdamW moments (~25 GB), so on a GPU the rows run one at a time.
    rows = {
        "plain student step": lambda: FlowMatchingObjective(build_student(teacher, kept)[0]),
        "distill, task + output": lambda: DistillationObjective(
            build_student(teacher, kept)[0], teacher, LossWeights(1, 1, 0), pairs),
        "distill, all three terms": lambda: DistillationObjective(
            build_student(teacher, kept)[0], teacher, LossWeights(), pairs),
        "distill, all three, teacher on half the batch": lambda: DistillationObjective(
            build_student(teacher, kept)[0], teacher, LossWeights(), pairs, teacher_fraction=0.5),
    }
    on_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
    one_at_a_time = device.type == "cuda" or args.one_at_a_time
    times: dict[str, list[float]] = {name: [] for name in rows}
    with tempfile.TemporaryDirectory() as tmp:
        def trainer_for(name: str) -> Trainer:
            return Trainer(rows[name](), data, TrainConfig(**base), Path(tmp) / name.replace(" ", "_"))

        def timed_step(trainer: Trainer, step: int, name: str) -> None:
            _sync(device)
            t0 = time.perf_counter()
            trainer._step(step, on_device, args.batch)
            _sync(device)
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - t0)

        if one_at_a_time:  # a GPU of its own: no drifting load to share out between the rows
            parts = flops = None
            for name in rows:
                trainer = trainer_for(name)
                for step in range(args.repeats + 1):
                    timed_step(trainer, step, name)
                if name == "distill, all three terms":
                    parts, flops = _where_the_time_goes(trainer.objective, on_device, args, device)
                if args.profile:
                    print(f"== profile: {name}\n{_profile(trainer, on_device, args.batch, device)}")
                del trainer
                gc.collect()  # the trainer's cycles (hooks, the optimizer) hold the student's memory
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        else:
            # Round robin, one step of each per round: a shared machine's load drifts over
            # minutes, and it should weigh on every row alike.
            trainers = {name: trainer_for(name) for name in rows}
            for step in range(args.repeats + 1):
                for name, trainer in trainers.items():
                    timed_step(trainer, step, name)
            parts, flops = _where_the_time_goes(trainers["distill, all three terms"].objective, on_device, args,
                                                device)
        assert parts is not None and flops is not None
        steps = {name: min(ts) for name, ts in times.items()}
    plain = steps["plain student step"]
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"policy": args.policy, "kept": kept, "batch": args.batch, "cameras": args.cameras, "device": dev,
              "threads": torch.get_num_threads(), "teacher_params": surgery.teacher_params,
              "student_params": surgery.student_params,
              "steps_s": steps, "ratios": {k: v / plain for k, v in steps.items()}, "parts_s": parts,
              "flops": flops, "flop_ideal_ratio": 1 + flops["teacher_forward"] / flops["student_forward_backward"]}
    print(f"{args.policy} {cfg.depth} -> {args.layers} layers {kept}, batch {args.batch}, {args.cameras} cameras, "
          f"{dev}, {torch.get_num_threads()} threads")
    print(f"{'step':46} {'ms':>9} {'x plain':>8}")
    for name, sec in steps.items():
        print(f"{name:46} {1e3 * sec:9.1f} {sec / plain:8.2f}")
    print(f"{'part of the distillation step':44} {'ms':>9}")
    for name, sec in parts.items():
        print(f"{name:44} {1e3 * sec:9.1f}")
    print(f"FLOP-ideal ratio (1 + teacher forward / student forward+backward): {result['flop_ideal_ratio']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
