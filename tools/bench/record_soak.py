"""Memory of a long recording: the recorder's RSS per episode and its slope after warm-up.

Runs `platform record --sim MODE --no-tui` in this process (the real command: rig, store,
session, background writer, telemetry publisher, disk budget, progress lines) for many
short episodes, and reads the process's resident set size (VmRSS) as each episode
begins. Before it reads, it waits until the writer has committed every episode before:
frames still queued for the disk are not a leak (the queue is bounded by
`record.queue_mb`), and a writer that falls behind the loop on a busy machine would
otherwise show up as growth. The slope is a least-squares fit of RSS against the episode
number over the episodes after warm-up; beside it, the growth between the medians of the
first and last 20 samples, which single-sample spikes do not move. Target: no growth.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_soak.py --robot humanoid --episodes 900
    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/record_soak.py --robot arm --sim stack --episodes 100
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from shallowpi import cli
from shallowpi.data.store import WRITER_CACHED_EPISODES
from shallowpi.record.session import RecordingSession
from shallowpi.record.writer import COMMITTED_KEPT

CACHED = max(WRITER_CACHED_EPISODES, COMMITTED_KEPT)


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_kb(episodes: list[int], rss: list[float]) -> float:
    """KB per episode: least squares of RSS (MB) against the episode number."""
    if len(episodes) < 3:
        return float("nan")
    return float(np.polyfit(np.asarray(episodes, float), np.asarray(rss), 1)[0] * 1024)


def median_growth_kb(episodes: list[int], rss: list[float], window: int = 20) -> float:
    """KB per episode between the medians of the first and last `window` samples: the
    trend without the single-sample spikes of a busy allocator."""
    if len(episodes) < 2 * window:
        return float("nan")
    first, last = float(np.median(rss[:window])), float(np.median(rss[-window:]))
    span = float(np.median(episodes[-window:]) - np.median(episodes[:window]))
    return (last - first) * 1024 / span


def soak(robot: str, sim: str, episodes: int, episode_time_s: float, size: str, workdir: Path) -> dict:
    samples: list[tuple[int, float]] = []
    waited = [0.0]
    begin = RecordingSession._begin

    def measured_begin(session: RecordingSession) -> None:
        start = time.monotonic()
        while session.writer.stats().pending_episodes and session.writer.alive:
            time.sleep(0.002)
        waited[0] += time.monotonic() - start
        samples.append((len(samples), rss_mb()))  # episodes of this run, in order
        begin(session)

    argv = ["record", "--robot", robot, "--sim", sim, "--task", "cube_in_bowl", "--episodes", str(episodes),
            "--episode-time-s", str(episode_time_s), "--reset-time-s", "0", "--no-tui",
            "--data-root", str(workdir), "--dataset", f"soak-{robot}-{sim}", f"record.sim_size={size}",
            f"telemetry.address={workdir}/soak.sock"]
    RecordingSession._begin = measured_begin  # type: ignore[method-assign]
    start = time.monotonic()
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):  # progress lines: run, not kept
            code = cli.main(argv)
    finally:
        RecordingSession._begin = begin  # type: ignore[method-assign]
    wall = time.monotonic() - start
    if code != 0:
        raise SystemExit(f"the recorder failed with exit code {code}")
    # The first episodes fill pools and arenas, and the store's and writer's bounded caches
    # (the newest 256 episodes): growth before they are full is not a leak.
    warm = max(10, len(samples) // 5) if len(samples) < 2 * CACHED else max(CACHED + 20, len(samples) // 5)
    after = samples[warm:]
    xs, ys = [e for e, _ in after], [r for _, r in after]
    return {"robot": robot, "sim": sim, "episodes": episodes, "episode_time_s": episode_time_s, "size": size,
            "warmup_episodes": warm, "rss_first_mb": samples[0][1],
            "rss_after_warmup_mb": ys[0], "rss_last_mb": ys[-1],
            "slope_kb_per_episode": slope_kb(xs, ys), "median_growth_kb_per_episode": median_growth_kb(xs, ys),
            "wall_seconds": wall, "waited_for_writer_s": waited[0],
            "rss_by_episode": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="humanoid")
    parser.add_argument("--sim", choices=["direct", "stack"], default="direct")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--episode-time-s", type=float, default=0.3)
    parser.add_argument("--size", default="64x64", help="camera size WIDTHxHEIGHT (small: the loop, not the render)")
    parser.add_argument("--out", type=Path, default=Path(".bench/record_soak.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="record-soak-") as tmp:
        row = soak(args.robot, args.sim, args.episodes, args.episode_time_s, args.size, Path(tmp))
    print(f"\n{'robot':<9} {'sim':<6} {'episodes':>8} {'warm-up':>7} {'RSS first':>9} {'after warm-up':>13} "
          f"{'last':>7} {'slope KB/ep':>11} {'median growth KB/ep':>19} {'wall s':>7}")
    print(f"{row['robot']:<9} {row['sim']:<6} {row['episodes']:>8} {row['warmup_episodes']:>7} "
          f"{row['rss_first_mb']:>8.1f}M {row['rss_after_warmup_mb']:>12.1f}M {row['rss_last_mb']:>6.1f}M "
          f"{row['slope_kb_per_episode']:>11.1f} {row['median_growth_kb_per_episode']:>19.1f} "
          f"{row['wall_seconds']:>7.0f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": [row], "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
