"""A tiny checkpoint with non-trivial statistics, and its deploy bundle (exported once)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_checkpoint(folder: Path, state: int = 7, cameras: tuple[str, ...] = ("front",),
                    meta: dict[str, str] | None = None, depth: int | None = None,
                    task_conditioning: str = "tokens", vision: dict | None = None,
                    tokenizer: str | None = None) -> Path:
    """The tiny preset saved with stats and scaled norms; `vision` overrides VisionConfig
    fields, `tokenizer` the preset's (a tokenizer.json path, say)."""
    import dataclasses

    import torch

    from shallowpi.policy import Features, Policy, load_preset

    torch.manual_seed(0)
    cfg = dataclasses.replace(load_preset("tiny"), task_conditioning=task_conditioning)
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, **(vision or {})))
    cfg = dataclasses.replace(cfg, tokenizer=tokenizer) if tokenizer else cfg
    policy = Policy(cfg.with_depth(depth) if depth else cfg, Features(state, state, list(cameras)))
    with torch.no_grad():  # Gemma norms and the conditioning start at zero: give them a
        for name, p in policy.model.named_parameters():  # scale so every path matters
            if name.endswith("norm.weight") or "_norm." in name:
                p.normal_(0.0, 0.2)
            elif name.startswith(("instruction_proj.", "vision.film.")):
                p.normal_(0.0, 0.1)
    rng = np.random.default_rng(0)
    policy.set_stats({key: {"mean": rng.normal(0, 0.5, state), "std": rng.uniform(0.2, 1.0, state)}
                      for key in ("observation.state", "action")})
    policy.save(folder, extra_metadata=meta)
    return folder


def observation(rng: np.random.Generator, state: int = 7, size: tuple[int, int] = (24, 32)) -> dict:
    return {
        "observation.state": rng.normal(0, 0.3, state).astype(np.float32),
        "observation.images.front": rng.integers(0, 256, (*size, 3), dtype=np.uint8),
        "task": "pick up the cube",
        "timestamp": 0.0,
    }
