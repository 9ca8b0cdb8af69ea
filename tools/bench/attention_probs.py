"""Cost of returning attention probabilities (attention distillation) in the joint forward.

Times `Pi0Model.velocity` forward + backward (the model's part of a training step) on one
batch, then `velocity_with_attention` with the probabilities asked for at one middle joint
layer (what Shallow-π distils) and at every layer, a KL term on them added to the loss.
The first row is the path every training step takes: run this script from a checkout
before and after a change to compare it (a checkout without `velocity_with_attention`
prints that row only).

    python tools/bench/attention_probs.py --threads 1                 # CPU, small, batch 8
    python tools/bench/attention_probs.py --device cuda --batch 32
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

from shallowpi.policy import Pi0Model, load_preset  # noqa: E402


def batch(model: Pi0Model, B: int, device: str):
    cfg = model.cfg
    g = torch.Generator().manual_seed(0)
    s = cfg.vision.image_size
    images = (torch.rand(B, cfg.num_cameras, 3, s, s, generator=g) * 2 - 1).to(device)
    tokens = torch.randint(0, cfg.vocab_size, (B, cfg.max_text_tokens), generator=g).to(device)
    masks = torch.ones(B, cfg.num_cameras, dtype=torch.bool, device=device)
    tok_masks = torch.ones(B, cfg.max_text_tokens, dtype=torch.bool, device=device)
    state = torch.randn(B, cfg.state_dim, generator=g).to(device)
    x_t = torch.randn(B, cfg.chunk_len, cfg.action_dim, generator=g).to(device)
    t = torch.rand(B, generator=g).to(device)
    return (images, masks, tokens, tok_masks), state, x_t, t


def step_fn(model: Pi0Model, inputs, layers: list[int] | None):
    raw, state, x_t, t = inputs

    def run() -> None:
        model.zero_grad(set_to_none=True)
        prefix = model.embed_prefix(*raw)
        if layers is None:
            loss = model.velocity(prefix, state, x_t, t).square().mean()
        else:
            v, maps = model.velocity_with_attention(prefix, state, x_t, t, layers)
            # KL(uniform || p) per row: a stand-in for the teacher's map, same arithmetic.
            kl = sum(-(p.clamp_min(1e-12).log().mean(-1)).mean() for p in maps.values())
            loss = v.square().mean() + kl
        loss.backward()

    return run


def timeit(fn, reps: int, device: str) -> float:
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        fn()
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)  # the least disturbed run on a shared machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="small")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "attention_probs.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(load_preset(args.policy), num_cameras=args.cameras)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Pi0Model(cfg).train()
    inputs = batch(model, args.batch, args.device)
    cases = [("velocity (no request)", None)]
    if hasattr(model, "velocity_with_attention"):
        cases += [(f"+ layer {cfg.depth // 2}", [cfg.depth // 2]), (f"+ all {cfg.depth} layers", list(range(cfg.depth)))]
    rows = []
    for name, layers in cases:
        seconds = timeit(step_fn(model, inputs, layers), args.reps, args.device)
        rows.append({"case": name, "layers": layers, "seconds": seconds})
    for r in rows:
        r["ratio"] = r["seconds"] / rows[0]["seconds"]
    result = {"policy": args.policy, "device": args.device, "batch": args.batch, "cameras": args.cameras,
              "threads": torch.get_num_threads(), "torch": torch.__version__, "checkout": str(ROOT), "rows": rows}
    print(f"{args.policy}, batch {args.batch}, {args.cameras} cameras, {args.device}, "
          f"{torch.get_num_threads()} thread(s): forward + backward, best of {args.reps}")
    print(f"{'case':24} {'ms':>9} {'ratio':>7}")
    for r in rows:
        print(f"{r['case']:24} {1e3 * r['seconds']:>9.1f} {r['ratio']:>7.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
