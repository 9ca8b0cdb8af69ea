"""Latency of one action chunk: ours vs lerobot's PI0 on the same weights, and vs depth.

(a) One observation -> one chunk (10 Euler steps, 50 actions), from images/text/state to
    actions, at the `small` preset and at π0 width (Gemma 2B + 300M expert, So400m vision;
    full depth on a GPU, reduced depth on a CPU). Both models hold the same weights (copied
    through policy/weights.py's key mapping) and get the same noise. Two of our paths:
    `reference` (Pi0Model.sample_actions, the readable one) and `sampler` (ChunkSampler:
    fused weights, and on CUDA the whole chunk as one CUDA graph: what the executor runs);
    the speed-up is lerobot / sampler. max |Δa| compares sampler and lerobot actions.
(b) The sampler at `small` (CPU) or π0 size (GPU) with k of 18 layers kept in both towers,
    beside the ideal ratio from FLOP counts (the vision encoder does not shrink). In bfloat16
    every tower, vision too, is bf16 here: what a student is deployed at (the all-bf16
    column of (a) is the same for the teacher).

    python tools/bench/policy_latency.py --threads 1             # CPU, JSON in .bench/
    python tools/bench/policy_latency.py --device cuda --dtype bfloat16
    python tools/bench/policy_latency.py --skip-lerobot           # our side only
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from shallowpi.policy import Pi0Model, PolicyConfig, load_preset  # noqa: E402
from shallowpi.policy.sampler import ChunkSampler  # noqa: E402
from shallowpi.policy.weights import convert_state_dict, load_into  # noqa: E402


def chunk_flops(cfg: PolicyConfig, cameras: int, text: int, steps: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one chunk: vision, VLM prefix, `steps` expert passes."""
    v = cfg.vision
    n, m = v.num_patches, v.num_tokens  # patches (the patchify stem's); tokens into the ViT
    vision = 2 * n * 3 * v.patch_size**2 * v.width + 2 * m * v.width * cfg.vlm.width
    vision += v.depth * (2 * m * 4 * v.width**2 + 4 * m * m * v.width + 4 * m * v.width * v.mlp_dim)

    def layer(t, keys, tower):
        he, ke = tower.num_heads * tower.head_dim, tower.num_kv_heads * tower.head_dim
        proj = 2 * t * tower.width * (2 * he + 2 * ke) + 2 * t * 3 * tower.width * tower.mlp_dim
        return proj + 4 * t * keys * he

    P, S = cameras * m + text, 1 + cfg.chunk_len
    prefix = cfg.depth * layer(P, P, cfg.vlm)
    expert = cfg.depth * layer(S, P + S, cfg.expert) + 2 * S * cfg.expert.width * (3 * cfg.expert.width)
    return cameras * vision + prefix + steps * expert


def inputs(cfg: PolicyConfig, cameras: int, device: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = [(torch.rand(1, 3, s, s, generator=g) * 2 - 1).to(device) for _ in range(cameras)]
    masks = [torch.ones(1, dtype=torch.bool, device=device) for _ in range(cameras)]
    tokens = torch.randint(0, cfg.vocab_size, (1, cfg.max_text_tokens), generator=g).to(device)
    tok_mask = torch.ones(1, cfg.max_text_tokens, dtype=torch.bool, device=device)
    state = torch.randn(1, cfg.state_dim, generator=g).to(device)
    noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=g).to(device)
    return images, masks, tokens, tok_mask, state, noise


def ours_fn(model: Pi0Model, sampler: ChunkSampler | None, images, masks, tokens, tok_mask, state, noise):
    raw = (torch.stack(images, 1), torch.stack(masks, 1), tokens, tok_mask)

    def run():
        if sampler is None:
            return model.sample_actions(model.embed_prefix(*raw), state, noise=noise)
        return sampler(*raw, state, noise)

    return run


def timeit(fn, reps: int, warmup: int = 2) -> tuple[float, torch.Tensor]:
    """Best of `reps` wall-clock runs (the GPU synchronised): on a shared machine the
    minimum is the least disturbed."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn()
        sync()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            sync()
            times.append(time.perf_counter() - t0)
    return min(times), out


def build_ours(cfg: PolicyConfig, device: str) -> Pi0Model:
    torch.manual_seed(0)
    with torch.device(device):
        return Pi0Model(cfg).eval()


def cast(model: Pi0Model, dtype: str, vision: bool = False) -> Pi0Model:
    # lerobot's bfloat16 recipe keeps the vision encoder in float32; the comparison does the
    # same, so it is of the same arithmetic. `vision=True` is what we deploy: every tower bf16.
    return model.cast_towers(torch.bfloat16, vision=vision) if dtype == "bfloat16" else model


def compare(name: str, cfg: PolicyConfig, cameras: int, reps: int, args) -> dict:
    cfg = dataclasses.replace(cfg, num_cameras=cameras)
    ours = build_ours(cfg, args.device)
    row = {"config": name, "cameras": cameras, "depth": cfg.depth, "vision_depth": cfg.vision.depth,
           "gflops": chunk_flops(cfg, cameras, cfg.max_text_tokens, cfg.num_steps) / 1e9}
    x = inputs(cfg, cameras, args.device)
    if not args.skip_lerobot:
        from lerobot_pi0 import small_lerobot_pi0

        theirs = small_lerobot_pi0(cfg, args.device, args.dtype)
        load_into(ours, convert_state_dict(theirs.state_dict(), cfg))
        images, masks, tokens, tok_mask, state, noise = x

        def theirs_fn():
            return theirs.sample_actions(images, masks, tokens, tok_mask, state, noise=noise.clone())

        row["lerobot_s"], a_theirs = timeit(theirs_fn, reps)
        del theirs
        if args.device == "cuda":
            torch.cuda.empty_cache()
    cast(ours, args.dtype)
    row["reference_s"], _ = timeit(ours_fn(ours, None, *x), reps)
    row["sampler_s"], a_ours = timeit(ours_fn(ours, ChunkSampler(ours), *x), reps)
    if not args.skip_lerobot:
        row["max_abs_diff"] = float((a_ours - a_theirs).abs().max())
        row["speedup"] = row["lerobot_s"] / row["sampler_s"]
    if args.dtype == "bfloat16":
        cast(ours, args.dtype, vision=True)
        row["sampler_all_bf16_s"], _ = timeit(ours_fn(ours, ChunkSampler(ours), *x), reps)
    del ours
    return row


def depth_sweep(cfg: PolicyConfig, cameras: int, layers: list[int], reps: int, args) -> list[dict]:
    cfg = dataclasses.replace(cfg, num_cameras=cameras)
    base_flops = chunk_flops(cfg, cameras, cfg.max_text_tokens, cfg.num_steps)
    rows = []
    for k in layers:
        c = cfg.with_depth(k)
        model = cast(build_ours(c, args.device), args.dtype, vision=True)
        seconds, _ = timeit(ours_fn(model, ChunkSampler(model), *inputs(c, cameras, args.device)), reps)
        rows.append({"layers": k, "sampler_s": seconds,
                     "ideal_ratio": chunk_flops(c, cameras, c.max_text_tokens, c.num_steps) / base_flops})
        del model
    for r in rows:
        r["measured_ratio"] = r["sampler_s"] / rows[0]["sampler_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                    help="tower precision for both models (lerobot's recipe: vision stays float32)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pi0-depth", type=int, help="layers per tower at π0 width (default: 18 on cuda, 1 on cpu)")
    ap.add_argument("--pi0-vision-depth", type=int, help="vision layers (default: 27 on cuda, 1 on cpu)")
    ap.add_argument("--pi0-cameras", type=int, help="cameras at π0 width (default: 3 on cuda, 1 on cpu)")
    ap.add_argument("--pi0-vocab", type=int, help="vocabulary (default: 257152 on cuda, 1024 on cpu; "
                    "it only changes the embedding lookup)")
    ap.add_argument("--skip-lerobot", action="store_true")
    ap.add_argument("--sweep-preset", help="the depth sweep (b) at this preset (default: pi0 on cuda, small on cpu)")
    ap.add_argument("--sweep-only", action="store_true", help="only the depth sweep (b)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "policy_latency.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = args.device == "cuda"
    small = load_preset("small")
    base = load_preset("pi0")
    depth = args.pi0_depth or (18 if gpu else 1)
    vdepth = args.pi0_vision_depth or (27 if gpu else 1)
    cams = args.pi0_cameras or (3 if gpu else 1)
    pi0 = dataclasses.replace(
        base.with_depth(depth), vocab_size=args.pi0_vocab or (base.vocab_size if gpu else 1024),
        vision=dataclasses.replace(base.vision, depth=vdepth),
    )
    pi0_name = "pi0 (full size)" if (depth, vdepth) == (18, 27) else f"pi0 width, {depth} layers, vision {vdepth}"
    result = {
        "device": torch.cuda.get_device_name() if gpu else "cpu", "dtype": args.dtype,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "chunk": [] if args.sweep_only else [
            compare("small (18 layers)", small, 2, args.reps, args),
            compare(pi0_name, pi0, cams, max(2, args.reps // 2) if not gpu else args.reps, args),
        ],
    }
    sweep_cfg, sweep_cams = (pi0, cams) if gpu else (small, 2)
    result["depth_config"] = pi0_name if gpu else "small (18 layers)"
    if args.sweep_preset:  # a twin's preset: the cameras it is trained with
        sweep_cfg = load_preset(args.sweep_preset)
        sweep_cams = sweep_cfg.num_cameras
        result["depth_config"] = f"{args.sweep_preset} ({sweep_cfg.depth} layers, {sweep_cams} cameras)"
    result["depth"] = depth_sweep(sweep_cfg, sweep_cams, [sweep_cfg.depth, 9, 6, 4, 3], args.reps, args)

    print(f"(a) one chunk: {small.num_steps} Euler steps x {small.chunk_len} actions, batch 1, "
          f"{result['device']}, {args.dtype}" + ("" if gpu else f", {torch.get_num_threads()} threads"))
    print(f"{'config':40} {'GFLOP':>8} {'reference ms':>13} {'sampler ms':>11} {'lerobot ms':>11} "
          f"{'speed-up':>9} {'max |Δa|':>9} {'all-bf16 ms':>12}")
    for r in result["chunk"]:
        lr = f"{r['lerobot_s'] * 1e3:11.2f}" if "lerobot_s" in r else f"{'-':>11}"
        sp = f"{r['speedup']:8.2f}x" if "speedup" in r else f"{'-':>9}"
        diff = f"{r['max_abs_diff']:9.1e}" if "max_abs_diff" in r else f"{'-':>9}"
        bf = f"{r['sampler_all_bf16_s'] * 1e3:12.2f}" if "sampler_all_bf16_s" in r else f"{'-':>12}"
        print(f"{r['config']:40} {r['gflops']:8.1f} {r['reference_s'] * 1e3:13.2f} "
              f"{r['sampler_s'] * 1e3:11.2f} {lr} {sp} {diff} {bf}")
    precision = "every tower bf16" if args.dtype == "bfloat16" else args.dtype
    print(f"\n(b) {result['depth_config']}, sampler, {precision}, layers kept in both towers "
          "(vision encoder unchanged)")
    print(f"{'layers':>6} {'sampler ms':>11} {'measured':>9} {'ideal (FLOPs)':>14}")
    for r in result["depth"]:
        print(f"{r['layers']:6d} {r['sampler_s'] * 1e3:11.2f} {r['measured_ratio']:9.3f} {r['ideal_ratio']:14.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
