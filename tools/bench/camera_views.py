"""What the policy's scene cameras see at its 64x64 input: the humanoid's head camera and the
bimanual's top camera as shipped, against the placement and lighting tried in the ninth
session (BENCHMARKS.md "Closed loop": the humanoid trained with it did worse, so the twins
keep the shipped cameras).

For each view, the first frame of cube_in_bowl on seeds 1000-1007: how many pixels show the
red cube (red > 120, green and blue < 80), how many the yellow bowl, and the share of
saturated pixels (every channel > 235: light washing the table out). Prints the table,
writes JSON, and saves a picture of seeds 1000-1002 (docs/cameras_64px.png).

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/camera_views.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from shallowpi import config
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import ROBOTS_DIR, TwinSpec

ROOT = Path(__file__).resolve().parents[2]
SEEDS = range(1000, 1008)
# The placements tried: (robot, camera) -> (XML text shipped -> tried, twin.yaml home changes).
TRIED = {
    ("humanoid", "head"): ([('<camera name="head" pos="0.055 0 0" xyaxes="0 -1 0 0.5 0 0.866" fovy="75"/>',
                             '<camera name="head" pos="0.055 0 0" xyaxes="0 -1 0 0.5 0 0.866" fovy="60"/>')],
                           {"head_tilt": 0.3}),
    ("bimanual", "top"): ([('pos="0 0 1.05" xyaxes="1 0 0 0 1 0" fovy="58"', 'pos="0 0 0.75" xyaxes="1 0 0 0 1 0" fovy="58"'),
                           ('<headlight ambient="0.35 0.35 0.35" diffuse="0.4 0.4 0.4"/>',
                            '<headlight ambient="0.4 0.4 0.4" diffuse="0.1 0.1 0.1" specular="0 0 0"/>')], {}),
}


def robots_dir_with(robot: str, subs: list[tuple[str, str]], home: dict[str, float]) -> Path:
    """A copy of robots/ with `robot`'s twin edited to the tried placement."""
    root = Path(tempfile.mkdtemp()) / "robots"
    shutil.copytree(ROBOTS_DIR, root)
    xml_path, meta_path = root / robot / "twin.xml", root / robot / "twin.yaml"
    xml = xml_path.read_text()
    for shipped, tried in subs:
        if shipped not in xml:
            raise SystemExit(f"{robot}/twin.xml no longer holds {shipped!r}: update TRIED in this script")
        xml = xml.replace(shipped, tried)
    xml_path.write_text(xml)
    meta = yaml.safe_load(meta_path.read_text())
    meta["home"].update(home)
    meta_path.write_text(yaml.safe_dump(meta))
    return root


def first_frames(robot: str, camera: str, robots_dir: Path) -> list[np.ndarray]:
    """uint8 [64, 64, 3] of `camera` at the start of cube_in_bowl, one per seed."""
    spec = TwinSpec.from_config(config.compose([f"robot={robot}"]).robot, render_width=64, render_height=64,
                                robots_dir=robots_dir)
    frames = []
    with DirectSimRobot(spec, cameras=[camera]) as twin:
        for seed in SEEDS:
            twin.reset(seed, get_task(robot, "cube_in_bowl"))
            frames.append(twin.observe().frames[camera].image)
    return frames


def measure(frames: list[np.ndarray]) -> dict[str, float]:
    """Mean cube and bowl pixels a frame, and the saturated share (%)."""
    im = np.stack(frames).astype(int)
    red = (im[..., 0] > 120) & (im[..., 1] < 80) & (im[..., 2] < 80)
    yellow = (im[..., 0] > 180) & (im[..., 1] > 150) & (im[..., 2] < 120)
    return {"cube_px": float(red.sum((1, 2)).mean()), "cube_px_min": float(red.sum((1, 2)).min()),
            "bowl_px": float(yellow.sum((1, 2)).mean()), "saturated_pct": float(100 * (im.min(-1) > 235).mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".bench" / "camera_views.json")
    ap.add_argument("--picture", type=Path, default=ROOT / "docs" / "cameras_64px.png")
    args = ap.parse_args()
    rows, strips = [], []
    for (robot, camera), (subs, home) in TRIED.items():
        for when, robots_dir in (("shipped", ROBOTS_DIR), ("tried", robots_dir_with(robot, subs, home))):
            frames = first_frames(robot, camera, robots_dir)
            rows.append({"robot": robot, "camera": camera, "placement": when, **measure(frames)})
            strips.append((f"{robot} {camera}, {when}", np.concatenate(frames[:3], 1)))
    print("| robot | camera | placement | cube px (min) | bowl px | saturated |\n|---|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['robot']} | {r['camera']} | {r['placement']} | {r['cube_px']:.1f} ({r['cube_px_min']:.0f}) | "
              f"{r['bowl_px']:.0f} | {r['saturated_pct']:.1f} % |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"seeds": list(SEEDS), "rows": rows}, indent=2))
    scale, label_w = 3, 170
    picture = Image.new("RGB", (label_w + 64 * 3 * scale, 64 * scale * len(strips)), "white")
    draw = ImageDraw.Draw(picture)
    for i, (label, strip) in enumerate(strips):
        picture.paste(Image.fromarray(strip).resize((64 * 3 * scale, 64 * scale), Image.NEAREST), (label_w, i * 64 * scale))
        draw.text((8, i * 64 * scale + 90), label, fill="black")
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.picture)
    print(f"wrote {args.out} and {args.picture}")


if __name__ == "__main__":
    main()
