"""Real-time factor of recording in the simulated twin (`--sim direct` and `--sim stack`).

Runs `platform record --sim MODE` on each robot's first task with the scripted expert
and reports simulated seconds recorded per wall-clock second (>= 1: faster than real time),
at the given camera size, rendering every camera each tick. `--sims direct stack` compares
the in-process twin with the twin behind the real drivers (emulated servo chains, software
RealSenses).

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_sim.py --robots humanoid --size 224x224
    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_sim.py --robots arm --sims direct stack --episodes 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

from shallowpi import config
from shallowpi.data.store import EpisodeStore, StoreSettings
from shallowpi.record.rig import build_rig
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter


def run(robot: str, task: str, size: tuple[int, int], episodes: int, workdir: Path, sim: str = "direct") -> dict:
    cfg = config.compose([f"robot={robot}"])
    rig = build_rig(cfg, sim, task, seed=0, size=size)
    store = EpisodeStore.create(workdir / f"{robot}-{sim}.zarr", rig.features, StoreSettings())
    writer = BackgroundWriter(store)
    session = RecordingSession(
        SessionConfig(task=rig.task_text, episodes=episodes, episode_time_s=60.0, reset_time_s=0.0,
                      fps=rig.clock.hz, robot=robot),
        rig.robot, rig.teleop, writer, rig.clock, rig.joint_names, scene=rig.scene, cameras=rig.cameras)
    start = time.monotonic()
    session.run()
    writer.close()
    wall = time.monotonic() - start
    rig.close()
    frames = store.num_frames
    sim_seconds = frames / rig.clock.hz
    return {"robot": robot, "sim": sim, "task": task, "cameras": len(rig.features) - 2, "size": f"{size[0]}x{size[1]}",
            "episodes": len(store), "successes": sum(bool(e.success) for e in store.episodes),
            "frames": frames, "sim_seconds": sim_seconds, "wall_seconds": wall,
            "real_time_factor": sim_seconds / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", nargs="+", default=["arm", "bimanual", "humanoid"])
    parser.add_argument("--size", default="224x224")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--sims", nargs="+", choices=["direct", "stack"], default=["direct"])
    parser.add_argument("--out", type=Path, default=Path(".bench/record_sim.json"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    tasks = {"arm": "cube_in_bowl", "bimanual": "cube_in_bowl", "humanoid": "cube_in_bowl"}
    with tempfile.TemporaryDirectory(prefix="record-sim-") as tmp:
        rows = [run(r, tasks[r], (width, height), args.episodes, Path(tmp), sim)
                for r in args.robots for sim in args.sims]
    print(f"\n{'robot':<9} {'sim':<6} {'cams':>4} {'size':>8} {'episodes':>8} {'success':>7} {'frames':>6} {'sim s':>6} "
          f"{'wall s':>6} {'real-time factor':>16}")
    for r in rows:
        print(f"{r['robot']:<9} {r['sim']:<6} {r['cameras']:>4} {r['size']:>8} {r['episodes']:>8} {r['successes']:>7} {r['frames']:>6} "
              f"{r['sim_seconds']:>6.1f} {r['wall_seconds']:>6.1f} {r['real_time_factor']:>15.2f}x")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg(),
                                    "config": OmegaConf.to_container(config.compose([]).store)}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
