"""How much a trained policy's chunk depends on its instruction, through an episode.

Open loop, on recorded samples of a multi-task store: for each sampled window the policy
predicts the chunk under its own instruction and under the other task's, with the same
noise, images and state. The table gives, per task and per quarter of the episode
(by frame index), the mean |own - expert| (the fit: how far the chunk is from the
expert's recorded actions) beside the mean |swapped - own| (how far the instruction moves
it). Units: the robot's action units (rad for joints), averaged over chunk steps and
action dimensions. A policy that ignores its instruction once the scene has moved on
shows |swapped - own| falling toward |own - expert| late in the episode; that is where
a two-task policy can drift between tasks in closed loop (BENCHMARKS.md "Closed loop").

    python tools/bench/instruction_swap.py --policy RUN/checkpoints/step_009000/ema --store STORE
    python tools/bench/instruction_swap.py --policy A --policy B --store STORE   # compare recipes

Cost: ~15 s of one core per policy for the default 384 samples at the `teacher` size.
Needs a store with exactly two task texts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.data.training import ChunkDataset  # noqa: E402
from shallowpi.policy.policy import Policy  # noqa: E402


def swap_table(policy_dir: Path, store: Path, samples: int, seed: int) -> dict[str, list[dict]]:
    """{task: [{frames, fit, swap} per episode quarter]} for one policy (docstring above)."""
    from torch.utils.data import DataLoader, Subset

    policy = Policy.load(policy_dir).prepare_inference()
    dataset = ChunkDataset(store, policy.cfg.chunk_len, image_keys=policy.features.image_keys)
    texts = dataset.task_texts()
    if len(texts) != 2:
        raise SystemExit(f"error: {store} has {len(texts)} task texts; the swap needs exactly two")
    other = {texts[0]: texts[1], texts[1]: texts[0]}
    rows = np.random.default_rng(seed).choice(len(dataset), min(samples, len(dataset)), replace=False)
    per_task: dict[str, list[tuple[int, float, float]]] = {t: [] for t in texts}
    gen = torch.Generator().manual_seed(seed)
    for batch in DataLoader(Subset(dataset, rows.tolist()), batch_size=32):
        B = batch["action"].shape[0]
        noise = torch.randn(B, policy.cfg.chunk_len, policy.cfg.action_dim, generator=gen)
        own = policy.sample_actions(batch, noise=noise)
        swapped = policy.sample_actions({**batch, "task": [other[t] for t in batch["task"]]}, noise=noise)
        valid = ~batch["action_is_pad"]  # [B, C]: the expert's chunk past the episode's end is padding
        for i in range(B):
            fit = (own[i] - batch["action"][i]).abs()[valid[i]].mean().item()
            swap = (swapped[i] - own[i]).abs().mean().item()
            per_task[batch["task"][i]].append((int(batch["frame_index"][i]), fit, swap))
    table: dict[str, list[dict]] = {}
    for task, values in per_task.items():
        arr = np.array(sorted(values))
        table[task] = [
            {"frames": [int(part[0, 0]), int(part[-1, 0])], "fit": float(part[:, 1].mean()),
             "swap": float(part[:, 2].mean()), "samples": len(part)}
            for part in np.array_split(arr, 4)
        ]
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--policy", type=Path, action="append", required=True,
                        help="a checkpoint folder (model.safetensors); repeat to compare")
    parser.add_argument("--store", type=Path, required=True, help="the two-task store the policies trained on")
    parser.add_argument("--samples", type=int, default=384, help="windows sampled from the store (default 384)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "instruction_swap.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    results = {}
    for policy_dir in args.policy:
        table = swap_table(policy_dir, args.store, args.samples, args.seed)
        results[str(policy_dir)] = table
        print(f"\n{policy_dir}\n")
        print("| task | frames | mean abs(own - expert) | mean abs(swapped - own) | swapped / fit |")
        print("|---|---|---:|---:|---:|")
        for task, quarters in table.items():
            for q in quarters:
                print(f"| {task} | {q['frames'][0]}-{q['frames'][1]} | {q['fit']:.3f} | "
                      f"{q['swap']:.3f} | {q['swap'] / max(q['fit'], 1e-9):.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"store": str(args.store), "samples": args.samples, "seed": args.seed,
                                    "policies": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
