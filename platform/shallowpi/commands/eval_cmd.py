"""Offline evaluation of a policy checkpoint: action error vs a mean-action baseline.

  platform eval --policy runs/kitchen-small/checkpoints/step_001500 --dataset kitchen
  platform eval --policy CKPT --dataset kitchen --episodes 18 19    chosen episodes
  platform eval --policy CKPT --dataset other_store                 every episode of it

By default the held-out episodes recorded with the checkpoint (its training split) are
used when the dataset is the one it was trained on, else every episode. Errors are in the
robot's units (radians; grippers 0..1) over the predicted chunk's non-padded steps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shallowpi.cli import overrides_from

HELP = "offline action error of a policy checkpoint on held-out episodes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", type=Path, required=True, help="checkpoint folder (holds model.safetensors)")
    parser.add_argument("--dataset", required=True, help="dataset name (datasets/NAME.zarr) or a path")
    parser.add_argument("--data-root", help="folder holding the .zarr stores (default: datasets/)")
    parser.add_argument("--episodes", type=int, nargs="+", help="episode indices to evaluate")
    parser.add_argument("--samples", type=int, default=256, help="at most this many samples (default 256)")
    parser.add_argument("--steps", type=int, help="Euler steps (default: the checkpoint's, 10)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")


def run(args: argparse.Namespace) -> int:
    import json

    from shallowpi import config
    from shallowpi.commands.train_cmd import chunk_dataset, store_episodes
    from shallowpi.distill.evaluate import evaluate
    from shallowpi.policy.policy import Features, Policy

    cfg = config.compose(overrides_from(argparse.Namespace(data_root=args.data_root, overrides=[])))
    store = config.resolve_dataset(args.dataset, config.data_root(cfg))
    policy = Policy.load(args.policy)
    meta = Policy.read_metadata(args.policy)
    episodes = args.episodes
    if episodes is None:
        same_store = Path(meta.get("dataset", "")).resolve() == store.resolve()
        episodes = json.loads(meta["held_out"]) if same_store and meta.get("held_out") else None
        episodes = episodes or store_episodes(store)
    dataset = chunk_dataset(store, policy.cfg.chunk_len, episodes)
    policy.features.check_against(Features.from_sample(dataset[0]), f"dataset {store.name}")
    report = evaluate(policy, dataset, max_samples=args.samples, num_steps=args.steps)
    print(f"episodes {episodes}")
    print(report.table())
    if args.json:
        args.json.write_text(json.dumps(report.to_dict(), indent=2))
    return 0
