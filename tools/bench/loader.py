"""Training samples/s: the zarr store vs the same episodes as a LeRobotDataset (mp4).

Builds one store (1 camera 480x640, 14-dim state and action, rendered frames, the
store's default codec), exports it with `platform dataset export --to lerobot`'s
function, then times a torch DataLoader (2 workers, batch 8, shuffled) over each in
the same run:

- zarr: `shallowpi.data.training.ChunkDataset` (observation at t + 50-action chunk);
- lerobot: lerobot's own `LeRobotDataset` with `delta_timestamps` for the same
  50-action chunk, frames decoded from AV1 mp4 by its video backend.

Worker start-up (the first batch) is not timed. Each loader runs `--repeats` times,
alternating, and the best run counts (the machine is shared).

Then "where the time goes": one process, no workers, ms per sample (the median over
`--stage-samples` random samples, the best of 5 rounds) for each stage of a zarr sample
(window lookup and the state/action rows, the chunk file read, the JPEG decode, a frame
read through the store, the same frame through zarr-python, the whole `__getitem__`, the
collate of a batch) and a whole lerobot `__getitem__`.

    MUJOCO_GL=egl PYTHONPATH=platform python tools/bench/loader.py

Target: zarr >= 3x lerobot. Needs the lerobot extra.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from camera_frames import render_pool

from shallowpi.data import EpisodeStore
from shallowpi.data.features import IMAGE_PREFIX, robot_features
from shallowpi.data.store import StoreSettings

CAMERA = "observation.images.front"
DOF = 14
REPO_ID = "local/loader-bench"
TARGET_RATIO = 3.0


def build_store(path: Path, episodes: int, episode_len: int, height: int, width: int, pool: int) -> None:
    joints = [f"joint_{i}" for i in range(DOF)]
    features = robot_features(joints, {CAMERA.removeprefix(IMAGE_PREFIX): (height, width)})
    frames = render_pool(1, pool, height, width)[0]
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, features, StoreSettings(durable=False)) as store:
        for e in range(episodes):
            writer = store.begin_episode("put the red cube in the bowl", robot="arm", fps=30)
            walk = np.cumsum(rng.normal(0, 0.01, (episode_len, DOF)), axis=0).astype(np.float32)
            for t in range(episode_len):
                writer.add_frame({"observation.state": walk[t], "action": walk[t],
                                  CAMERA: frames[(t + 7 * e) % pool]}, t / 30)
            writer.commit()


def time_loader(dataset, batches: int, batch_size: int, workers: int, seed: int) -> dict:
    import torch

    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    iterator = iter(loader)
    next(iterator)  # worker start-up and first decode: not timed
    start = time.perf_counter()
    for _ in range(batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    actions = batch["action"]
    del iterator
    return {"samples_per_s": batches * batch_size / seconds, "seconds": seconds,
            "action_shape": list(actions.shape), "image_shape": list(batch[CAMERA].shape)}


def _median_ms(fn, items: list, rounds: int = 5) -> float:
    """The best of `rounds` medians of fn(item) over `items`, in ms (a shared machine's
    other jobs only ever add time)."""
    medians = []
    for _ in range(rounds):
        times = []
        for item in items:
            start = time.perf_counter()
            fn(item)
            times.append(time.perf_counter() - start)
        medians.append(float(np.median(times)))
    return 1e3 * min(medians)


def time_stages(zarr_set, lerobot_set, samples: int, batch_size: int, seed: int) -> dict[str, float]:
    """ms per sample of each stage of a zarr sample, in this process (see the docstring)."""
    import imagecodecs
    import torch
    from torch.utils.data import default_collate

    from shallowpi.data.chunk_files import chunk_name

    rng = np.random.default_rng(seed)
    rows = [int(i) for i in rng.integers(0, len(zarr_set), samples)]
    store = zarr_set._images()
    folder = os.path.join(store.path, "data", CAMERA)
    zarr_array = store._array(f"data/{CAMERA}")  # zarr-python's own read, for comparison

    def read_file(row: int) -> bytes:
        with open(os.path.join(folder, chunk_name(row, 3)), "rb") as file:
            return file.read()

    def numbers(row: int) -> None:
        window = zarr_set.windows[row]
        torch.from_numpy(zarr_set._state[window.row]), torch.from_numpy(zarr_set._action[window.action_rows])

    encoded = {row: read_file(row) for row in rows}
    # One torch thread, as in a DataLoader worker: on a busy machine torch's intra-op threads
    # wait on each other and would time the scheduler, not the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batch = [zarr_set[row] for row in rows[:batch_size]]
    zarr_set[rows[0]], lerobot_set[rows[0]]  # first-call costs out of the way
    stages = {
        "window + state/action rows": _median_ms(numbers, rows),
        "chunk file read": _median_ms(read_file, rows),
        "JPEG decode (imagecodecs)": _median_ms(lambda row: imagecodecs.jpeg8_decode(encoded[row]), rows),
        "frame via EpisodeStore.read": _median_ms(lambda row: store.read(CAMERA, row, row + 1), rows),
        "frame via zarr-python": _median_ms(lambda row: zarr_array[row:row + 1], rows),
        "zarr __getitem__ (whole sample)": _median_ms(zarr_set.__getitem__, rows),
        "collate, per sample": _median_ms(default_collate, [batch] * 8) / batch_size,
        "lerobot __getitem__ (whole sample)": _median_ms(lerobot_set.__getitem__, rows),
    }
    torch.set_num_threads(threads)
    return stages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--episode-len", type=int, default=150)
    parser.add_argument("--chunk-len", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batches", type=int, default=30, help="timed batches per run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--stage-samples", type=int, default=60, help="samples per stage round (0: skip)")
    parser.add_argument("--pool", type=int, default=60, help="rendered frames to cycle through")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--dir", type=Path, default=None, help="where the datasets go (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=Path(".bench/loader.json"))
    args = parser.parse_args(argv)

    # A benchmark is its own process: offline for all of it, LeRobotDataset's reads below
    # included (shallowpi's lerobot calls are offline only while they run).
    os.environ["HF_HUB_OFFLINE"] = "1"
    from shallowpi.data.lerobot_export import export_lerobot
    from shallowpi.data.lerobot_interop import _video_backend
    from shallowpi.data.training import ChunkDataset

    root = Path(tempfile.mkdtemp(prefix="loader-bench-", dir=args.dir))
    try:
        store_path, lerobot_dir = root / "bench.zarr", root / "lerobot"
        print(f"building {args.episodes} x {args.episode_len} frames ...", flush=True)
        build_store(store_path, args.episodes, args.episode_len, args.height, args.width, args.pool)
        start = time.perf_counter()
        export_lerobot(store_path, lerobot_dir, repo_id=REPO_ID)
        export_s = time.perf_counter() - start
        print(f"exported to LeRobotDataset in {export_s:.1f} s", flush=True)

        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        zarr_set = ChunkDataset(store_path, chunk_len=args.chunk_len, image_keys=[CAMERA])
        lerobot_set = LeRobotDataset(
            REPO_ID, root=lerobot_dir, video_backend=_video_backend(),
            delta_timestamps={"action": [i / 30 for i in range(args.chunk_len)]},
        )
        assert len(zarr_set) == len(lerobot_set)
        runs: dict[str, list[dict]] = {"zarr": [], "lerobot": []}
        for repeat in range(args.repeats):
            for name, dataset in (("zarr", zarr_set), ("lerobot", lerobot_set)):
                run = time_loader(dataset, args.batches, args.batch_size, args.workers, seed=repeat)
                runs[name].append(run)
                print(f"  {name:8s} run {repeat + 1}: {run['samples_per_s']:7.1f} samples/s "
                      f"(action {run['action_shape']}, image {run['image_shape']})", flush=True)
        stages = time_stages(zarr_set, lerobot_set, args.stage_samples, args.batch_size, seed=1) if args.stage_samples else {}
        store_bytes = EpisodeStore.open(store_path).nbytes_on_disk()
        lerobot_bytes = sum(f.stat().st_size for f in lerobot_dir.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(root, ignore_errors=True)

    best = {name: max(r, key=lambda x: x["samples_per_s"]) for name, r in runs.items()}
    ratio = best["zarr"]["samples_per_s"] / best["lerobot"]["samples_per_s"]
    print()
    print(f"{'loader':8s} {'samples/s':>10s} {'MB on disk':>11s}")
    print(f"{'zarr':8s} {best['zarr']['samples_per_s']:10.1f} {store_bytes / 2**20:11.1f}")
    print(f"{'lerobot':8s} {best['lerobot']['samples_per_s']:10.1f} {lerobot_bytes / 2**20:11.1f}")
    if stages:
        print("\nwhere the time goes (one process, ms per sample, best of 5 medians)")
        for name, ms in stages.items():
            print(f"  {name:36s} {ms:7.3f}")
    print(f"zarr / lerobot = {ratio:.2f}x  (target >= {TARGET_RATIO:.0f}x: {'ok' if ratio >= TARGET_RATIO else 'MISSED'})")
    result = {
        "config": {**{k: v for k, v in vars(args).items() if k not in ("dir", "out")},
                   "camera": CAMERA, "dof": DOF, "cpus": os.cpu_count(), "video_backend": _video_backend(),
                   "export_seconds": export_s},
        "zarr": {**best["zarr"], "all": [r["samples_per_s"] for r in runs["zarr"]], "bytes": store_bytes},
        "lerobot": {**best["lerobot"], "all": [r["samples_per_s"] for r in runs["lerobot"]], "bytes": lerobot_bytes},
        "ratio": ratio,
        "stages_ms": stages,
        "load_average": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
