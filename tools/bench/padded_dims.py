"""Does the sampler's handling of the padded action dimensions cost closed-loop success?

The presets pad every robot's action to `max_action_dim` (32) and the task loss is taken
over the robot's real dimensions only (policy.py), so the velocity the model predicts for
the padding is never trained. Training still feeds those dimensions on the flow's straight
path, x_t = t * noise (the action there is 0), while the Euler loop at inference moves
them by that untrained velocity: from t = 1 to 0 they stay near the noise, where training
showed them shrinking to 0. openpi and lerobot take the loss over every dimension, padding
included (target noise - 0), so their sampler brings the padding to 0 as training did.

This runs `platform eval --sim` in-process twice on the same seeds, once as the platform
samples (`as-is`) and once with the padding held on its training path (`on-path`: the
padded velocity replaced by the noise, so after the k-th of n Euler steps the padding is
(1 - k/n) * noise exactly), and compares them seed by seed (exact McNemar). Only the
sampler's padded dimensions differ; the real dimensions' velocities are the model's own.

    python tools/bench/padded_dims.py --policy robots/arm/teacher --dataset STORE --episodes 200
    python tools/bench/padded_dims.py --policy P --dataset STORE --only on-path --compare KEPT_DIR

`--compare DIR` reads the as-is outcomes from kept evaluation blocks (reproduce.py's
ROBOT/eval/ROW/seeds_*.json) instead of running them. Cost: one closed-loop evaluation
per variant (~1.1 s an episode of one core for the arm's teacher, ~1.6 for the humanoid's).
Writes .bench/padded_dims.json (--out).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.cli import main as platform_main  # noqa: E402
from shallowpi.evaluate.interval import paired_p_value, rate_with_interval  # noqa: E402
from shallowpi.policy import sampler  # noqa: E402
from shallowpi.policy.policy import Policy  # noqa: E402
from shallowpi.train.checkpoint import weights_to_use  # noqa: E402

VARIANTS = ("as-is", "on-path")


@contextmanager
def padding_on_path(real_dims: int) -> Iterator[None]:
    """Within, the chunk sampler (what eval and the executor run) moves every padded action
    dimension at velocity `noise`, so that it stays at t * noise, as in training, and ends
    at 0; the real dimensions' velocities are the model's own. The sampler's own Euler loop
    runs: only its velocity is wrapped."""
    chunk, velocity = sampler.ChunkSampler._chunk, sampler.ChunkSampler._velocity

    def chunk_keeping_noise(self, images, image_masks, tokens, token_masks, state, noise, *, steps: int):
        self.padding_noise = noise[..., real_dims:]
        return chunk(self, images, image_masks, tokens, token_masks, state, noise, steps=steps)

    def velocity_on_path(self, cache, state_token, x_t, term):
        v = velocity(self, cache, state_token, x_t, term)
        return torch.cat([v[..., :real_dims], self.padding_noise.to(v.dtype)], dim=-1)

    sampler.ChunkSampler._chunk, sampler.ChunkSampler._velocity = chunk_keeping_noise, velocity_on_path
    try:
        yield
    finally:
        sampler.ChunkSampler._chunk, sampler.ChunkSampler._velocity = chunk, velocity


def run_variant(variant: str, args: argparse.Namespace, real_dims: int) -> dict[str, dict[int, bool]]:
    """{task: {seed: success}} of one `eval --sim` run in this process."""
    with padding_on_path(real_dims) if variant == "on-path" else nullcontext(), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        code = platform_main(["eval", "--policy", str(args.policy), "--sim", "--dataset", str(args.dataset),
                              "--sim-episodes", str(args.episodes), "--seed", str(args.seed), "--device", "cpu",
                              "--json", str(out), "--no-progress"])
        if code != 0:
            raise SystemExit(f"eval ({variant}) exited {code}")
        tasks = json.loads(out.read_text())["tasks"]
    return {t["task"]: {e["seed"]: bool(e["success"]) for e in t["episodes"]} for t in tasks}


def kept_outcomes(folder: Path, seeds: range, policy: Path) -> dict[str, dict[int, bool]]:
    """{task: {seed: success}} from reproduce.py's kept blocks, limited to `seeds`.
    SystemExit in one line when a block judged other weights or an episode time cap, or
    none holds these seeds; a block judged by other code than this checkout's is said (its
    outcomes are then as-is only if that code judged as this one does)."""
    sys.path.insert(0, str(ROOT / "tools" / "bench"))
    from reproduce import judged_by_this_code
    from stage_cache import weights_sha256

    sha = weights_sha256(policy)
    found: dict[str, dict[int, bool]] = {}
    for block in sorted(folder.glob("seeds_*.json")):
        kept = json.loads(block.read_text())
        if kept.get("weights_sha256") != sha or kept.get("episode_time_s"):
            raise SystemExit(f"{block} judged other weights or capped episodes; compare with {policy}'s own blocks")
        if not judged_by_this_code(kept):
            print(f"note: {block} was judged by other code than this checkout's", flush=True)
        for task in kept["tasks"]:
            for e in task["episodes"]:
                if e["seed"] in seeds:
                    found.setdefault(task["task"], {})[e["seed"]] = bool(e["success"])
    if not found:
        raise SystemExit(f"no kept block in {folder} holds seeds {seeds.start}-{seeds.stop - 1}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, required=True, help="the store the policy was trained on")
    parser.add_argument("--episodes", type=int, default=200, help="seeds a task, from --seed")
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--only", choices=VARIANTS, help="run one variant (the other from --compare)")
    parser.add_argument("--compare", type=Path, help="kept blocks holding the as-is outcomes")
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "padded_dims.json")
    args = parser.parse_args()
    real_dims = Policy.load(weights_to_use(args.policy)).features.action_dim
    seeds = range(args.seed, args.seed + args.episodes)
    results = {}
    if args.compare is not None:
        results["as-is"] = kept_outcomes(args.compare, seeds, args.policy)
    for variant in VARIANTS:  # as-is first: the patch stays for the rest of the process
        if variant not in results and args.only in (None, variant):
            results[variant] = run_variant(variant, args, real_dims)
    if set(results) != set(VARIANTS):
        raise SystemExit("need both variants: run both, or one with --compare KEPT_DIR")
    rows = []
    print(f"{args.policy}: {real_dims} real action dimensions, seeds {seeds.start}-{seeds.stop - 1}")
    print(f"{'task':<18} {'as-is':<34} {'on-path':<34} only as-is / only on-path (p)")
    for task, before in results["as-is"].items():
        after = results["on-path"][task]
        common = sorted(set(before) & set(after))
        a, b = sum(before[s] for s in common), sum(after[s] for s in common)
        only_before = sum(before[s] and not after[s] for s in common)
        only_after = sum(after[s] and not before[s] for s in common)
        p = paired_p_value(only_before, only_after)
        n = len(common)
        print(f"{task:<18} {rate_with_interval(a, n):<34} {rate_with_interval(b, n):<34} "
              f"{only_before} / {only_after} (p = {p:.2f})")
        rows.append({"task": task, "seeds": n, "as_is": a, "on_path": b, "only_as_is": only_before,
                     "only_on_path": only_after, "p": p})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"policy": str(args.policy), "real_dims": real_dims, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
