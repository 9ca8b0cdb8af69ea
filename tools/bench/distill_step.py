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
    teacher = Policy(cfg, Features(6, 6, cams))
    kept = uniform_layers(cfg.depth, args.layers)
    student, surgery = build_student(teacher, kept)
    pairs = AttentionPairs.default(kept)
    device = torch.device(args.device)
    batch = torch.utils.data.default_collate([data[i] for i in range(args.batch)])
    base = dict(steps=1000, batch_size=args.batch, workers=0, progress=False, tensorboard=False, device=args.device)
    with tempfile.TemporaryDirectory() as tmp:
        objectives = {
            "plain student step": FlowMatchingObjective(build_student(teacher, kept)[0]),
            "distill, task + output": DistillationObjective(
                build_student(teacher, kept)[0], teacher, LossWeights(1, 1, 0), pairs),
            "distill, all three terms": DistillationObjective(student, teacher, LossWeights(), pairs),
            "distill, all three, teacher on half the batch": DistillationObjective(
                build_student(teacher, kept)[0], teacher, LossWeights(), pairs, teacher_fraction=0.5),
        }
        on_device = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        trainers = {name: Trainer(objective, data, TrainConfig(**base), Path(tmp) / str(i))
                    for i, (name, objective) in enumerate(objectives.items())}
        # Round robin, one step of each per round: a shared machine's load drifts over
        # minutes, and it should weigh on every row alike.
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for step in range(args.repeats + 1):
            for name, trainer in trainers.items():
                _sync(device)
                t0 = time.perf_counter()
                trainer._step(step, on_device, args.batch)
                _sync(device)
                if step:  # the first round warms up
                    times[name].append(time.perf_counter() - t0)
        steps = {name: min(ts) for name, ts in times.items()}
        # Where the distillation step's time goes.
        distiller = objectives["distill, all three terms"]
        assert isinstance(distiller, DistillationObjective)
        noise, t = step_noise(0, 0, args.batch, distiller.noise_spec())
        noise, t = noise.to(device), t.to(device)
        inputs = distiller.policy.model_inputs(on_device)
        teacher_layers = list(pairs.pairs.values())
        assert teacher_layers
        student_layers = list(pairs.pairs)
        parts = {
            "inputs (resize, tokens, normalise)": _time(lambda: distiller.policy.model_inputs(on_device),
                                                        args.repeats, device),
            "teacher forward (no grad, attention maps)": _time(
                lambda: distiller._teacher(inputs, noise, t), args.repeats, device),
        }

        def student_fwd_bwd() -> None:
            out = distiller.policy.flow_outputs(inputs, noise, t, student_layers)
            (out.velocity.square().sum() + sum(m.sum() for m in out.attention.values())).backward()

        parts["student forward + backward"] = _time(student_fwd_bwd, args.repeats, device)
        with torch.no_grad():
            parts["teacher forward without maps"] = _time(
                lambda: distiller.teacher.flow_outputs(inputs, noise, t), args.repeats, device)
        # FLOPs (matmuls and attention, policy/flops.py): the ideal ratio of the two steps.
        with flop_counter() as teacher_count, torch.no_grad():
            distiller._teacher(inputs, noise, t)
        with flop_counter() as student_count:
            student_fwd_bwd()
        flops = {"teacher_forward": teacher_count.get_total_flops(),
                 "student_forward_backward": student_count.get_total_flops()}
        del teacher_layers
    plain = steps["plain student step"]
    dev = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"policy": args.policy, "kept": kept, "batch": args.batch, "cameras": args.cameras, "device": dev,
              "threads": torch.get_num_threads(), "teacher_params": surgery.teacher_params,
              "student_params": surgery.student_params,
              "steps_s": steps, "ratios": {k: v / plain for k, v in steps.items()}, "parts_s": parts,
              "flops": flops, "flop_ideal_ratio": 1 + flops["teacher_forward"] / flops["student_forward_backward"]}
    print(f"{args.policy} {cfg.depth} -> {args.layers} layers {kept}, batch {args.batch}, {args.cameras} cameras, "
          f"{dev}, {torch.get_num_threads()} threads")
    print(f"{'step':34} {'ms':>9} {'x plain':>8}")
    for name, sec in steps.items():
        print(f"{name:34} {1e3 * sec:9.1f} {sec / plain:8.2f}")
    print(f"{'part of the distillation step':44} {'ms':>9}")
    for name, sec in parts.items():
        print(f"{name:44} {1e3 * sec:9.1f}")
    print(f"FLOP-ideal ratio (1 + teacher forward / student forward+backward): {result['flop_ideal_ratio']:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
