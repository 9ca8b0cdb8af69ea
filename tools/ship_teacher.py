"""Copy a trained teacher checkpoint into robots/<robot>/teacher/, the one `platform demo` uses.

The demo's default profile distils this teacher instead of training one (a teacher that
succeeds in the twin takes ~55 minutes of this 2-core machine, past the demo's
budget). The copy keeps the weights, normalization statistics, vocabulary and config,
checks that the checkpoint can drive the robot's twin, and replaces the training run's
local paths (the store, its episode split) with `--made-by`: the command that made it.
robots/<robot>/teacher/README.md, written by hand, gives that command and the teacher's
closed-loop success.

    python tools/ship_teacher.py --robot arm --checkpoint RUN/checkpoints/step_009000/ema \
        --made-by "python tools/bench/closed_loop.py --robot arm ..."
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi import config  # noqa: E402
from shallowpi.evaluate.sim_checkpoint import check_fits  # noqa: E402
from shallowpi.policy.policy import Policy  # noqa: E402
from shallowpi.robots.sim.twin import TwinSpec  # noqa: E402

# What a training run writes that only means something on the machine that ran it.
LOCAL_KEYS = ("dataset", "train", "held_out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", required=True, help="the twin the teacher drives (robots/<robot>/)")
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint folder (model.safetensors)")
    parser.add_argument("--made-by", required=True, help="the command(s) that recorded and trained it")
    args = parser.parse_args()

    policy = Policy.load(args.checkpoint)
    check_fits(policy.features, TwinSpec.from_config(config.compose([f"robot={args.robot}"]).robot))
    meta = {k: v for k, v in Policy.read_metadata(args.checkpoint).items()
            if k not in LOCAL_KEYS and k not in ("format", "version", "config", "features")}
    out = ROOT / "robots" / args.robot / "teacher"
    path = policy.save(out, extra_metadata={**meta, "made_by": args.made_by})
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {policy.cfg.name}, "
          f"{sum(p.numel() for p in policy.model.parameters()):,} parameters, step {meta.get('step', '?')}")


if __name__ == "__main__":
    main()
