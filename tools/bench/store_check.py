"""Full `dataset check` throughput: camera frames verified per second, by workers and pool.

Builds one store (3 cameras 480x640x3 JPEG q90 + 30-dim state and action, episodes of
`--episode-len` frames) from a rendered frame pool, then times on it:

- layout: the cheap scan `train`, `export` and `eval` run on every open (`require_intact`),
  also on a second store of `--scan-frames` small frames, since its cost is per file
- one frame at a time through `EpisodeStore.read`, 1 thread: the old check's loop, but
  since the store reads camera frames from their chunk files (chunk_files.read_frames) it
  no longer goes through zarr, so it is not the old check's cost (BENCHMARKS.md "Store
  check" keeps that from when it did)
- check_store with 1 worker, then every core, on a thread pool and on a process pool

and extrapolates each to the lab store of issue 10 (112k frames, 3 cameras: 21 minutes
on one core with the old check). Each timing runs `--repeats` times; the best counts
(the machine is shared). The JSON's `cpu_s` is this process's CPU (all threads) and null
for the process pool, whose forkserver workers are not this process's children.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/store_check.py
    python tools/bench/store_check.py --frames 600 --repeats 3 --workers 1 2 4 16
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_frames import render_pool
from store_write import CAMERAS, features

from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.data.store_check import check_store
from shallowpi.data.store_files import require_intact

LAB_FRAMES = 112_000  # issue 10's 3.2 GB store: 571 episodes, 3 cameras


def build(path: Path, frames: int, episode_len: int, pools: list[np.ndarray]) -> None:
    store = EpisodeStore.create(path, features(*pools[0].shape[1:3]), StoreSettings(durable=False))
    state = np.random.default_rng(0).standard_normal((len(pools[0]), 30)).astype(np.float32)
    written = 0
    while written < frames:
        writer = store.begin_episode("benchmark", robot="humanoid", fps=30)
        for t in range(min(episode_len, frames - written)):
            k = (written + t) % len(pools[0])
            writer.add_frame({**{key: pools[c][k] for c, key in enumerate(CAMERAS)},
                              "observation.state": state[k], "action": state[k]}, t / 30)
        written += len(writer)
        writer.commit()
    store.close()


def best_of(repeats: int, run) -> tuple[float, float]:
    """(wall s, CPU s) of the fastest of `repeats` runs; CPU counts every thread of this
    process (and children it waited for)."""
    best = (float("inf"), 0.0)
    for _ in range(repeats):
        cpu = time.process_time() + _children_cpu()
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
        best = min(best, (wall, time.process_time() + _children_cpu() - cpu))
    return best


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def scan_at_scale(root: Path, frames: int, episode_len: int, repeats: int) -> dict:
    """The layout scan on a store of `frames` rows (16x16 frames: it reads no pixels,
    so only the number of chunk files matters)."""
    path = root / "scan.zarr"
    print(f"\nbuilding {frames} frames x {len(CAMERAS)} cameras at 16x16 for the layout scan ...", flush=True)
    build(path, frames, episode_len, render_pool(len(CAMERAS), 60, 16, 16))
    with EpisodeStore.open(path) as store:
        seconds, _ = best_of(repeats, partial(require_intact, store))
    print(f"layout scan of {frames} frames ({frames * len(CAMERAS)} camera chunk files): {seconds * 1000:.0f} ms")
    return {"what": "layout scan at scale", "frames": frames, "seconds": seconds}


def zarr_one_by_one(store: EpisodeStore) -> None:
    """The old check's loop, every frame read one at a time, through `EpisodeStore.read`:
    once through zarr, now the store's own chunk-file reader for camera frames."""
    for key in CAMERAS:
        for row in range(store.num_frames):
            store.read(key, row, row + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=450, help="frames in the store (x3 cameras)")
    parser.add_argument("--episode-len", type=int, default=150)
    parser.add_argument("--pool", type=int, default=60, help="rendered frames per camera")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to time (default: 1 and every core)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scan-frames", type=int, default=20_000,
                        help="frames of a second store (16x16) to time the layout scan on; 0: skip")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(".bench/store_check.json"))
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    counts = sorted(set(args.workers or [1, cores]))

    print(f"rendering {args.pool} frames x {len(CAMERAS)} cameras at {args.height}x{args.width} ...", flush=True)
    pools = render_pool(len(CAMERAS), args.pool, args.height, args.width)
    root = Path(tempfile.mkdtemp(prefix="store_check-", dir=args.dir))
    path = root / "bench.zarr"
    results = []
    try:
        build(path, args.frames, args.episode_len, pools)
        with EpisodeStore.open(path) as store:
            decoded = store.num_frames * len(CAMERAS)
            rows = [("layout scan (train/export/eval on open)", 1, "-", best_of(args.repeats, partial(require_intact, store)))]
            rows.append(("one frame at a time through EpisodeStore.read (chunk files, not zarr)", 1, "-",
                         best_of(args.repeats, partial(zarr_one_by_one, store))))
            for pool in ("thread", "process"):
                for workers in counts:
                    seconds = best_of(args.repeats, partial(check_store, store, workers=workers, pool=pool))
                    rows.append(("check_store", workers, pool, seconds))
        print(f"\n{store.num_frames} frames x {len(CAMERAS)} cameras = {decoded} camera frames, "
              f"{sum(f.stat().st_size for f in path.rglob('*') if f.is_file()) / 2**20:.0f} MB, "
              f"{cores} cores, load average {os.getloadavg()[0]:.1f}\n")
        print(f"| what | workers | pool | s | camera frames/s | CPU ms/camera frame | {LAB_FRAMES // 1000}k-frame store |")
        print("|---|---|---|---|---|---|---|")
        for what, workers, pool, (seconds, cpu) in rows:
            per_s, cpu_ms = decoded / seconds, cpu / decoded * 1000
            lab = seconds * LAB_FRAMES / store.num_frames
            rate = "-" if what.startswith("layout") else f"{per_s:.0f}"  # it decodes nothing
            # forkserver's workers are its children, not ours: their CPU time is not seen here
            cpu_text = "n/a" if pool == "process" else f"{cpu_ms:.2f}"
            print(f"| {what} | {workers} | {pool} | {seconds:.3f} | {rate} | {cpu_text} | {lab / 60:.2f} min |")
            results.append({"what": what, "workers": workers, "pool": pool, "seconds": seconds,
                            "cpu_s": None if pool == "process" else cpu,
                            "camera_frames_per_s": per_s, "lab_store_minutes": lab / 60})
        if args.scan_frames:
            results.append(scan_at_scale(root, args.scan_frames, args.episode_len, args.repeats))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"frames": args.frames, "cameras": len(CAMERAS), "cores": cores,
                                    "load_average": os.getloadavg()[0], "results": results}, indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
