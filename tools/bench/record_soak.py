"""Memory of a long recording: the recorder's RSS per episode and its slope after warm-up.

Runs `platform record --sim MODE --no-tui --realtime` (the real command: session, writer,
store, telemetry publisher, progress lines) for many short episodes and reads the
process's resident set size (VmRSS) each time an episode is reported saved. Each episode
is followed by a reset period paced on the wall clock, so the writer has drained its
queue when an episode is reported saved: frames waiting for the disk would otherwise
count as growth (the queue is bounded by `record.queue_mb`, 512 MB, and a writer that
falls behind the loop fills it). The slope is a least-squares fit of RSS against the
episode number over the episodes after warm-up; the target is no growth.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_soak.py --robot humanoid --episodes 200
    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_soak.py --robot arm --sim stack --episodes 100
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SAVED = re.compile(r"episode (\d+) saved")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_kb(episodes: list[int], rss: list[float]) -> float:
    """KB per episode: least squares of RSS (MB) against the episode number."""
    if len(episodes) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(episodes, float), np.asarray(rss), 1)[0] * 1024)


def soak(robot: str, sim: str, episodes: int, episode_time_s: float, reset_time_s: float, size: str,
         workdir: Path) -> dict:
    command = [sys.executable, "-m", "shallowpi", "record", "--robot", robot, "--sim", sim, "--task", "cube_in_bowl",
               "--episodes", str(episodes), "--episode-time-s", str(episode_time_s),
               "--reset-time-s", str(reset_time_s), "--realtime", "--no-tui", "--data-root", str(workdir), "--dataset", f"soak-{robot}-{sim}",
               f"record.sim_size={size}", f"telemetry.address={workdir}/soak.sock"]
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[int, float]] = []
    assert process.stdout is not None
    for line in process.stdout:
        match = SAVED.search(line)
        if match:
            try:
                samples.append((int(match.group(1)), rss_mb(process.pid)))
            except FileNotFoundError:
                break
    process.wait()
    wall = time.monotonic() - start
    if process.returncode != 0:
        raise SystemExit(f"the recorder failed ({process.returncode}): {process.stderr.read()[-2000:]}")
    warm = max(10, len(samples) // 5)  # the first episodes fill caches, pools and arenas
    after = samples[warm:]
    xs, ys = [e for e, _ in after], [r for _, r in after]
    return {"robot": robot, "sim": sim, "episodes": episodes, "episode_time_s": episode_time_s,
            "reset_time_s": reset_time_s, "size": size,
            "samples": len(samples), "warmup_episodes": warm,
            "rss_first_mb": samples[0][1] if samples else float("nan"),
            "rss_after_warmup_mb": ys[0] if ys else float("nan"), "rss_last_mb": ys[-1] if ys else float("nan"),
            "slope_kb_per_episode": slope_kb(xs, ys), "wall_seconds": wall,
            "rss_by_episode": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="humanoid")
    parser.add_argument("--sim", choices=["direct", "stack"], default="direct")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--episode-time-s", type=float, default=0.3)
    parser.add_argument("--reset-time-s", type=float, default=0.7, help="wall-clock seconds for the writer to drain")
    parser.add_argument("--size", default="64x64", help="camera size WIDTHxHEIGHT (small: the loop, not the render)")
    parser.add_argument("--out", type=Path, default=Path(".bench/record_soak.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="record-soak-") as tmp:
        row = soak(args.robot, args.sim, args.episodes, args.episode_time_s, args.reset_time_s, args.size, Path(tmp))
    print(f"\n{'robot':<9} {'sim':<6} {'episodes':>8} {'warm-up':>7} {'RSS first':>9} {'after warm-up':>13} "
          f"{'last':>7} {'slope KB/ep':>11} {'wall s':>7}")
    print(f"{row['robot']:<9} {row['sim']:<6} {row['samples']:>8} {row['warmup_episodes']:>7} "
          f"{row['rss_first_mb']:>8.1f}M {row['rss_after_warmup_mb']:>12.1f}M {row['rss_last_mb']:>6.1f}M "
          f"{row['slope_kb_per_episode']:>11.1f} {row['wall_seconds']:>7.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": [row], "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
