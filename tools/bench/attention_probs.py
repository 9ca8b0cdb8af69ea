"""Cost of returning attention probabilities (attention distillation) in the joint forward.

Times `Pi0Model.velocity` forward + backward (the model's part of a training step) on one
batch, then `velocity_with_attention` with the probabilities asked for at one middle joint
layer (what Shallow-π distils) and at every layer, a KL term on them added to the loss;
and one chunk through `sample_actions` (the reference sampling path).

`--baseline DIR` also loads DIR/platform/shallowpi/policy/model.py (another checkout, e.g.
`git worktree add --detach /tmp/base main`), gives it the same weights and times its
`velocity` and `sample_actions` in the same process: before/after on the same inputs. The cases run
round-robin, one repetition each in turn, and each keeps its best: on a shared machine
the load then falls on every case alike.

    python tools/bench/attention_probs.py --threads 1                 # CPU, small, batch 4
    python tools/bench/attention_probs.py --threads 1 --baseline /tmp/base
    python tools/bench/attention_probs.py --device cuda --batch 32
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.policy import Pi0Model, load_preset  # noqa: E402


def baseline_class(checkout: Path) -> type:
    """Pi0Model from another checkout's model.py, loaded under its own module name."""
    path = checkout / "platform" / "shallowpi" / "policy" / "model.py"
    spec = importlib.util.spec_from_file_location("baseline_model", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_model"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module.Pi0Model


def batch(cfg, B: int, device: str):
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


def train_fn(model, inputs, layers: list[int] | None):
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


def sample_fn(model, inputs):
    raw, state, x_t, _ = inputs

    def run() -> None:
        with torch.no_grad():
            model.sample_actions(model.embed_prefix(*(r[:1] for r in raw)), state[:1], noise=x_t[:1])

    return run


def race(cases: dict, reps: int, device: str) -> dict[str, float]:
    """Best wall-clock seconds of each case, the cases taking turns."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for fn in cases.values():
        fn()
        fn()
    best = {name: float("inf") for name in cases}
    for _ in range(reps):
        for name, fn in cases.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="small")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--baseline", type=Path, help="another checkout whose model to time beside this one")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "attention_probs.json")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = dataclasses.replace(load_preset(args.policy), num_cameras=args.cameras)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = Pi0Model(cfg).train()
    inputs = batch(cfg, args.batch, args.device)
    mid = cfg.depth // 2
    train_cases = {"velocity": train_fn(model, inputs, None)}
    sample_cases = {"sample_actions": sample_fn(model, inputs)}
    if args.baseline:
        with torch.device(args.device):
            base = baseline_class(args.baseline)(cfg).train()
        base.load_state_dict(model.state_dict())
        raw, state, x_t, t = inputs
        with torch.no_grad():
            same = torch.equal(base.velocity(base.embed_prefix(*raw), state, x_t, t),
                               model.velocity(model.embed_prefix(*raw), state, x_t, t))
        print(f"velocity equal to the baseline's, bit for bit: {same}")
        train_cases = {"velocity, baseline": train_fn(base, inputs, None), **train_cases}
        sample_cases = {"sample_actions, baseline": sample_fn(base, inputs), **sample_cases}
    train_cases[f"velocity + attention at layer {mid}"] = train_fn(model, inputs, [mid])
    train_cases[f"velocity + attention at all {cfg.depth}"] = train_fn(model, inputs, list(range(cfg.depth)))
    timed = {**race(train_cases, args.reps, args.device), **race(sample_cases, args.reps, args.device)}
    reference = {"train": timed["velocity"], "sample": timed["sample_actions"]}
    rows = [{"case": name, "kind": "sample" if name.startswith("sample") else "train", "seconds": s}
            for name, s in timed.items()]
    for r in rows:
        r["ratio"] = r["seconds"] / reference[r["kind"]]
    result = {"policy": args.policy, "device": args.device, "batch": args.batch, "cameras": args.cameras,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "baseline": str(args.baseline) if args.baseline else None,
              "equal_to_baseline": same if args.baseline else None, "rows": rows}
    print(f"{args.policy}, {args.cameras} cameras, {args.device}, {torch.get_num_threads()} thread(s), "
          f"best of {args.reps}; train: forward + backward at batch {args.batch}; sample: one chunk at batch 1")
    print(f"{'case':40} {'ms':>9} {'vs this checkout':>17}")
    for r in rows:
        print(f"{r['case']:40} {1e3 * r['seconds']:>9.1f} {r['ratio']:>17.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
