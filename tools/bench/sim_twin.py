"""Simulation twin and camera read-path cost per control tick.

  python tools/bench/sim_twin.py                    # all twins, 224x224 and 640x480
  python tools/bench/sim_twin.py --ticks 60 --robots arm

For each twin and render size: physics time per tick (one control period of simulated
time under the expert's goals), render time per camera, and render time per tick (every
camera). Then the camera read path: a frame injected into a software RealSense and read
back through RealSenseCamera.latest() (color, and color + aligned depth), per frame.
Prints a table; writes .bench/sim_twin.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("MUJOCO_GL", "egl")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi import config  # noqa: E402
from shallowpi.robots.sim.direct import DirectSimRobot  # noqa: E402
from shallowpi.robots.sim.experts import make_expert  # noqa: E402
from shallowpi.robots.sim.tasks import make_tasks  # noqa: E402
from shallowpi.robots.sim.twin import TwinSpec  # noqa: E402

SIZES = [(224, 224), (640, 480)]


def bench_twin(robot: str, width: int, height: int, ticks: int) -> dict:
    spec = TwinSpec.from_config(config.compose([f"robot={robot}"]).robot, width, height)
    task = next(iter(make_tasks(robot).values()))
    physics, renders = [], {role: [] for role in spec.cameras}
    with DirectSimRobot(spec, cameras=()) as sim:
        sim.reset(0, task)
        expert = make_expert(sim.twin, task)
        for role in spec.cameras:
            sim.twin.render(role)  # the first render creates the GL context
        for _ in range(ticks):
            action = expert.read()
            t0 = time.perf_counter()
            sim.act(action)
            physics.append(time.perf_counter() - t0)
            for role in spec.cameras:
                t0 = time.perf_counter()
                sim.twin.render(role)
                renders[role].append(time.perf_counter() - t0)
    per_camera = {role: 1000 * float(np.median(v)) for role, v in renders.items()}
    return {
        "robot": robot,
        "size": f"{width}x{height}",
        "cameras": len(spec.cameras),
        "physics_ms_per_tick": 1000 * float(np.median(physics)),
        "substeps_per_tick": round(1 / spec.fps / sim_timestep(spec)),
        "render_ms_per_camera": per_camera,
        "render_ms_per_tick": float(sum(per_camera.values())),
        "fps": spec.fps,
    }


def sim_timestep(spec: TwinSpec) -> float:
    import mujoco

    return mujoco.MjModel.from_xml_path(str(spec.model_path)).opt.timestep


def bench_camera(width: int, height: int, depth: bool, frames: int) -> dict:
    from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
    from shallowpi.hardware.realsense_software import SoftwareRealSense

    device = SoftwareRealSense("BENCH", width, height, depth=depth)
    camera = RealSenseCamera(
        RealSenseConfig("bench", "BENCH", width, height, depth=depth, warmup_frames=0),
        device.open_device,
    )
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    depth_mm = rng.integers(300, 2000, (height, width), dtype=np.uint16) if depth else None
    times = []
    with camera:
        last = None
        for _ in range(frames):
            t0 = time.perf_counter()
            device.inject(image, depth_mm)
            last = camera.latest(newer_than=last).sequence
            times.append(time.perf_counter() - t0)
    return {
        "size": f"{width}x{height}",
        "depth": depth,
        "ms_per_frame": 1000 * float(np.median(times)),
        "p95_ms": 1000 * float(np.percentile(times, 95)),
        "dropped": camera.stats.dropped,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--robots", nargs="+", default=["arm", "bimanual", "humanoid"])
    parser.add_argument("--ticks", type=int, default=90)
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--out", default=str(ROOT / ".bench" / "sim_twin.json"))
    args = parser.parse_args()

    twins = [bench_twin(r, w, h, args.ticks) for r in args.robots for w, h in SIZES]
    print(
        f"{'twin':10s} {'size':>8s} {'cams':>4s} {'physics ms/tick':>16s} {'render ms/cam':>14s} {'render ms/tick':>15s}"
    )
    for t in twins:
        cams = np.mean(list(t["render_ms_per_camera"].values()))
        print(
            f"{t['robot']:10s} {t['size']:>8s} {t['cameras']:>4d} {t['physics_ms_per_tick']:>16.2f} "
            f"{cams:>14.1f} {t['render_ms_per_tick']:>15.1f}"
        )
    cameras = [bench_camera(w, h, d, args.frames) for w, h in SIZES for d in (False, True)]
    print(
        f"\n{'software RealSense -> RealSenseCamera':38s} {'ms/frame':>9s} {'p95 ms':>7s} {'dropped':>8s}"
    )
    for c in cameras:
        label = f"{c['size']} {'color+aligned depth' if c['depth'] else 'color'}"
        print(f"{label:38s} {c['ms_per_frame']:>9.2f} {c['p95_ms']:>7.2f} {c['dropped']:>8d}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"twins": twins, "camera_read_path": cameras}, indent=2))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
