"""Training throughput of a policy preset on this machine: samples per second.

Times the trainer's own optimisation step (forward, backward, clipping, AdamW, schedule)
on synthetic batches already in memory, so the number is the model's, not the loader's.
Images are 96x128 (resized to the preset's resolution inside the policy, as in training).

    python tools/bench/policy_train.py                       # small, batch 16, 2 cameras
    python tools/bench/policy_train.py --policy tiny --batch 8
    torchrun --nproc_per_node 1 tools/bench/policy_train.py --policy pi0 --device cuda \
        --fsdp --cameras 3 --batch 8                         # full-size π0, FSDP, bf16 autocast

`--compile` runs the step with the towers through torch.compile (tried: not in the trainer);
every CPU run also times one AdamW step fused (the trainer's) and torch's default (a loop
over the tensors on a CPU; foreach kernels exist on CUDA only).

Under torchrun every process runs its share of the global batch (FSDP or DDP, as
`platform train` does); rank 0 prints. The pi0 preset's PaliGemma tokenizer file is swapped
for the byte-level one here (its ids fit in the 257,152-token vocabulary): the text path
costs the same.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.policy import Features, Policy, load_preset  # noqa: E402
from shallowpi.train.objective import FlowMatchingObjective  # noqa: E402
from shallowpi.train.trainer import TrainConfig, Trainer  # noqa: E402

TASK = "put the red cube in the bowl"


def preset(name: str, settings: list[str]):
    """The preset with `key=value` settings (`vision.patch_size=8`, `crop_scale=1.0`)."""
    from omegaconf import OmegaConf

    from shallowpi.policy.config import PolicyConfig
    from shallowpi.policy.tokenizer import build_vocabulary

    data = load_preset(name).to_dict()
    merged = OmegaConf.merge(OmegaConf.create(data), OmegaConf.from_dotlist(settings))
    cfg = PolicyConfig.from_dict(OmegaConf.to_container(merged))
    if cfg.tokenizer == "words":  # built from the store's task texts in `platform train`
        return dataclasses.replace(cfg, vocabulary=build_vocabulary([TASK]))
    return dataclasses.replace(cfg, tokenizer="bytes")


@contextlib.contextmanager
def compiled_towers(model: torch.nn.Module, enabled: bool):
    """`--compile`: the model's embedding and its two towers (`embed_prefix`,
    `_joint_forward`: nearly all of a step) through torch.compile while inside. Tried and not
    in the trainer: 1.15x on one thread, nothing on two (BENCHMARKS.md "Training throughput")."""
    names = ("embed_prefix", "_joint_forward") if enabled else ()
    for name in names:
        setattr(model, name, torch.compile(getattr(model, name)))
    try:
        yield
    finally:
        for name in names:
            delattr(model, name)


def optimizer_step_ms(params: list[torch.nn.Parameter], fused: bool, steps: int = 50) -> float:
    """One AdamW step over `params` (gradients set), fused or torch's default, ms: the best of 3."""
    for p in params:
        p.grad = torch.randn_like(p)
    best = math.inf
    for _ in range(3):
        opt = torch.optim.AdamW(params, lr=1e-6, fused=fused)
        opt.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.step()
        best = min(best, (time.perf_counter() - t0) / steps * 1e3)
    return best


class Synthetic(Dataset):
    def __init__(self, n: int, chunk: int, dims: int, cameras: list[str]) -> None:
        self.n, self.chunk, self.dims, self.cameras = n, chunk, dims, cameras

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        item = {
            "observation.state": torch.randn(self.dims, generator=g),
            "action": torch.randn(self.chunk, self.dims, generator=g),
            "action_is_pad": torch.zeros(self.chunk, dtype=torch.bool),
            "task": TASK,
        }
        for cam in self.cameras:
            item[f"observation.images.{cam}"] = torch.randint(0, 255, (96, 128, 3), dtype=torch.uint8, generator=g)
        return item


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", default="small")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "policy_train.json")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--fsdp", action="store_true", help="shard with FSDP (under torchrun)")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast on CUDA")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the towers (tried, not in the trainer); the warm-up step compiles")
    ap.add_argument("--ema", type=float, default=None, help="EMA rate (the teacher's is 0.999; default off)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="preset settings to change, e.g. vision.patch_size=8 chunk_len=50")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = preset(args.policy, args.set)
    cams = ["front", "wrist", "left", "right"][: args.cameras]
    data = Synthetic(args.batch, cfg.chunk_len, 6, cams)
    torch.manual_seed(0)
    with torch.device("cuda" if args.device == "cuda" else "cpu"):  # a 3B model inits faster there
        policy = Policy(cfg, Features(6, 6, cams))
    train_cfg = TrainConfig(steps=1000, batch_size=args.batch, workers=0, progress=False,
                            tensorboard=False, device=args.device, fsdp=args.fsdp, bf16=not args.fp32,
                            ema=args.ema)
    params = sum(p.numel() for p in policy.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(FlowMatchingObjective(policy), data, train_cfg, Path(tmp))
        world, rank = trainer.dist.world, trainer.dist.rank
        share = args.batch // world
        batch = torch.utils.data.default_collate([data[i] for i in range(rank * share, (rank + 1) * share)])
        with compiled_towers(policy.model, args.compile):
            t0 = time.perf_counter()
            losses = [trainer._step(0, batch, share)["loss"]]  # warm-up (and compile)
            warmup_s = time.perf_counter() - t0
            times = []
            for step in range(1, args.steps + 1):
                t0 = time.perf_counter()
                losses.append(trainer._step(step, batch, share)["loss"])  # .item() inside: synchronised
                times.append(time.perf_counter() - t0)
    step_s = min(times)  # least disturbed by other processes on a shared machine
    gpu = trainer.device.type == "cuda"
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if gpu else None  # before the timing below
    # The trainer's AdamW is the fused one; what torch's default would cost instead. On the CPU
    # only: at π0 size a second optimizer's state would not fit beside the first on a GPU.
    trained = [p for p in policy.parameters() if p.requires_grad]
    adamw_ms = None if gpu else {"fused": optimizer_step_ms(trained, True), "default": optimizer_step_ms(trained, False)}
    result = {"policy": args.policy, "settings": args.set, "batch": args.batch, "cameras": args.cameras,
              "device": torch.cuda.get_device_name() if gpu else "cpu", "processes": world,
              "fsdp": args.fsdp, "bf16": not args.fp32, "compile": args.compile, "ema": args.ema,
              "warmup_s": warmup_s, "adamw_ms": adamw_ms, "threads": torch.get_num_threads(), "params": params,
              "step_s": step_s, "samples_per_s": args.batch / step_s, "losses": losses,
              "peak_gib": peak_gib}
    if rank != 0:
        return
    print(f"{'policy':8} {'params':>14} {'batch':>6} {'device':>12} {'procs':>6} {'fsdp':>5} "
          f"{'step s':>8} {'samples/s':>10} {'peak GiB':>9}")
    peak = f"{result['peak_gib']:9.1f}" if gpu else f"{'-':>9}"
    print(f"{args.policy:8} {params:14,d} {args.batch:6d} {result['device'][:12]:>12} {world:6d} "
          f"{args.fsdp!s:>5} {step_s:8.3f} {result['samples_per_s']:10.1f} {peak}")
    print("losses", " ".join(f"{x:.4f}" for x in losses), f"(warm-up step {warmup_s:.1f} s)")
    if adamw_ms:
        print(f"AdamW step over {len(trained)} tensors: fused {adamw_ms['fused']:.2f} ms (the trainer's), "
              f"torch's default {adamw_ms['default']:.2f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
