"""Latency of one action chunk: ours vs lerobot's PI0 on the same weights, and vs depth.

(a) `sample_actions` for one observation -> one chunk (10 Euler steps, 50 actions), from
    images/text/state to actions, at the `small` preset and at π0 width (Gemma 2B + 300M
    expert, So400m vision) with reduced depth. Both models hold the same weights (copied
    through policy/weights.py's key mapping) and get the same noise; the table shows the
    max difference of their actions too.
(b) Ours at `small` with k of 18 layers kept in both towers, with the ideal speed-up
    from FLOP counts (vision encoder included: it does not shrink).

    python tools/bench/policy_latency.py                 # both parts, JSON in .bench/
    python tools/bench/policy_latency.py --skip-lerobot  # (b) and our side of (a) only
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
from shallowpi.policy.weights import convert_state_dict, load_into  # noqa: E402


def chunk_flops(cfg: PolicyConfig, cameras: int, text: int, steps: int) -> float:
    """Matmul FLOPs (2 per multiply-add) of one chunk: vision, VLM prefix, `steps` expert passes."""
    v = cfg.vision
    n = v.num_patches
    vision = 2 * n * 3 * v.patch_size**2 * v.width + 2 * n * v.width * cfg.vlm.width
    vision += v.depth * (2 * n * 4 * v.width**2 + 4 * n * n * v.width + 4 * n * v.width * v.mlp_dim)

    def layer(t, keys, tower):
        he, ke = tower.num_heads * tower.head_dim, tower.num_kv_heads * tower.head_dim
        proj = 2 * t * tower.width * (2 * he + 2 * ke) + 2 * t * 3 * tower.width * tower.mlp_dim
        return proj + 4 * t * keys * he

    P, S = cameras * n + text, 1 + cfg.chunk_len
    prefix = cfg.depth * layer(P, P, cfg.vlm)
    expert = cfg.depth * layer(S, P + S, cfg.expert) + 2 * S * cfg.expert.width * (3 * cfg.expert.width)
    return cameras * vision + prefix + steps * expert


def inputs(cfg: PolicyConfig, cameras: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s = cfg.vision.image_size
    images = [torch.rand(1, 3, s, s, generator=g) * 2 - 1 for _ in range(cameras)]
    masks = [torch.ones(1, dtype=torch.bool) for _ in range(cameras)]
    tokens = torch.randint(0, cfg.vocab_size, (1, cfg.max_text_tokens), generator=g)
    tok_mask = torch.ones(1, cfg.max_text_tokens, dtype=torch.bool)
    state = torch.randn(1, cfg.state_dim, generator=g)
    noise = torch.randn(1, cfg.chunk_len, cfg.action_dim, generator=g)
    return images, masks, tokens, tok_mask, state, noise


def ours_fn(model: Pi0Model, images, masks, tokens, tok_mask, state, noise):
    def run():
        prefix = model.embed_prefix(torch.stack(images, 1), torch.stack(masks, 1), tokens, tok_mask)
        return model.sample_actions(prefix, state, noise=noise)

    return run


def timeit(fn, reps: int, warmup: int = 1) -> tuple[float, torch.Tensor]:
    """Best of `reps` wall-clock runs: on a shared machine the minimum is the least disturbed."""
    with torch.inference_mode():
        for _ in range(warmup):
            out = fn()
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    return min(times), out


def compare(name: str, cfg: PolicyConfig, cameras: int, reps: int, with_lerobot: bool) -> dict:
    cfg = dataclasses.replace(cfg, num_cameras=cameras)
    torch.manual_seed(0)
    ours = Pi0Model(cfg).eval()
    row = {"config": name, "cameras": cameras, "depth": cfg.depth,
           "gflops": chunk_flops(cfg, cameras, cfg.max_text_tokens, cfg.num_steps) / 1e9}
    x = inputs(cfg, cameras)
    if with_lerobot:
        from lerobot_pi0 import small_lerobot_pi0

        theirs = small_lerobot_pi0(cfg)
        load_into(ours, convert_state_dict(theirs.state_dict(), cfg))
        images, masks, tokens, tok_mask, state, noise = x

        def theirs_fn():
            return theirs.sample_actions(images, masks, tokens, tok_mask, state, noise=noise.clone())

        row["lerobot_s"], a_theirs = timeit(theirs_fn, reps)
        del theirs
    row["ours_s"], a_ours = timeit(ours_fn(ours, *x), reps)
    if with_lerobot:
        row["max_abs_diff"] = float((a_ours - a_theirs).abs().max())
        row["speedup"] = row["lerobot_s"] / row["ours_s"]
    return row


def depth_sweep(cfg: PolicyConfig, cameras: int, layers: list[int], reps: int) -> list[dict]:
    cfg = dataclasses.replace(cfg, num_cameras=cameras)
    base_flops = chunk_flops(cfg, cameras, cfg.max_text_tokens, cfg.num_steps)
    rows = []
    for k in layers:
        c = cfg.with_depth(k)
        torch.manual_seed(0)
        model = Pi0Model(c).eval()
        seconds, _ = timeit(ours_fn(model, *inputs(c, cameras)), reps)
        rows.append({"layers": k, "ours_s": seconds,
                     "ideal_ratio": chunk_flops(c, cameras, c.max_text_tokens, c.num_steps) / base_flops})
    for r in rows:
        r["measured_ratio"] = r["ours_s"] / rows[0]["ours_s"]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--pi0-depth", type=int, default=2, help="layers per tower at π0 width")
    ap.add_argument("--pi0-vision-depth", type=int, default=2)
    ap.add_argument("--skip-lerobot", action="store_true")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "policy_latency.json")
    args = ap.parse_args()
    torch.set_grad_enabled(False)
    if args.threads:
        torch.set_num_threads(args.threads)
    small = load_preset("small")
    pi0 = load_preset("pi0").with_depth(args.pi0_depth)
    pi0 = dataclasses.replace(
        pi0, vocab_size=1024, vision=dataclasses.replace(pi0.vision, depth=args.pi0_vision_depth)
    )
    with_lr = not args.skip_lerobot
    result = {
        "device": "cpu", "threads": torch.get_num_threads(), "torch": torch.__version__,
        "chunk": [
            compare("small (18 layers)", small, 2, args.reps, with_lr),
            compare(f"pi0 width, {args.pi0_depth} layers, vision {args.pi0_vision_depth}", pi0, 1,
                    max(2, args.reps // 2), with_lr),
        ],
        "depth": depth_sweep(small, 2, [18, 9, 6, 4, 3], args.reps),
    }
    print(f"(a) one chunk: {small.num_steps} Euler steps x {small.chunk_len} actions, batch 1, "
          f"{torch.get_num_threads()} threads")
    print(f"{'config':44} {'GFLOP':>7} {'ours ms':>9} {'lerobot ms':>11} {'speed-up':>9} {'max |Δa|':>9}")
    for r in result["chunk"]:
        lr = f"{r['lerobot_s'] * 1e3:11.1f}" if "lerobot_s" in r else f"{'-':>11}"
        sp = f"{r['speedup']:8.2f}x" if "speedup" in r else f"{'-':>9}"
        diff = f"{r['max_abs_diff']:9.1e}" if "max_abs_diff" in r else f"{'-':>9}"
        print(f"{r['config']:44} {r['gflops']:7.2f} {r['ours_s'] * 1e3:9.1f} {lr} {sp} {diff}")
    print("\n(b) small, layers kept in both towers (vision encoder unchanged)")
    print(f"{'layers':>6} {'ours ms':>9} {'measured':>9} {'ideal (FLOPs)':>14}")
    for r in result["depth"]:
        print(f"{r['layers']:6d} {r['ours_s'] * 1e3:9.1f} {r['measured_ratio']:9.3f} {r['ideal_ratio']:14.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
