"""How much the store's JPEG changes what the policy sees, by render size.

Training reads camera frames back from the store (JPEG, quality 90 by default); a live
frame reaches the policy raw unless it is passed through the same codec first. This renders
the arm twin's front camera at each size (seed 1000), resizes the raw frame and its JPEG
round trip to the policy's input sizes as the deploy preprocessing does (letterbox,
antialiased, [-1, 1]), and prints the mean and largest absolute difference. The twin's
renders are the store's size (64x64 for the shipped teachers), where the codec shows;
a robot's 640x480 frames are resized by 7.5-10x to a 64-pixel input (2-3x to 224), which
averages the codec's artefacts away.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/codec_gap.py
    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/codec_gap.py --quality 75 --out gap.json

Why `deploy --sim` passes frames through the store's codec and `deploy` on a robot does not
(deploy/executor.py, `Executor`'s `image_codec`). Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi import config  # noqa: E402
from shallowpi.data.codecs import as_stored, image_codec, register_image_codecs  # noqa: E402
from shallowpi.deploy.preprocess import resize_with_pad  # noqa: E402
from shallowpi.robots.sim.twin import SimTwin, TwinSpec  # noqa: E402

RENDERS = ((64, 64), (224, 224), (640, 480))
POLICY_SIZES = (64, 224)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quality", type=int, default=90, help="JPEG quality (the store's default: 90)")
    ap.add_argument("--seed", type=int, default=1000, help="the twin's scene")
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "codec_gap.json")
    args = ap.parse_args()
    register_image_codecs()
    codec = image_codec("jpeg", args.quality)
    rows = []
    for width, height in RENDERS:
        spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, render_width=width, render_height=height)
        twin = SimTwin(spec)
        twin.reset(args.seed)
        raw = twin.render("front")
        stored = as_stored(codec, raw)
        for size in POLICY_SIZES:
            gap = np.abs(resize_with_pad(raw, size) - resize_with_pad(stored, size))
            rows.append({"render": f"{width}x{height}", "policy_input": size,
                         "mean_abs": float(gap.mean()), "max_abs": float(gap.max())})
    print(f"JPEG quality {args.quality}: |raw - stored| in the policy's [-1, 1] input, arm front camera, seed {args.seed}")
    print(f"{'render':>10} {'policy input':>13} {'mean':>8} {'max':>7}")
    for row in rows:
        print(f"{row['render']:>10} {row['policy_input']:>13} {row['mean_abs']:8.4f} {row['max_abs']:7.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"quality": args.quality, "seed": args.seed, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
