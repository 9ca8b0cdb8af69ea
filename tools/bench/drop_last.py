"""What the recorder's d / r between takes cost: removing the episode just saved.

For stores of N episodes (each 30 frames of a 6-joint state and action and one 96x96
camera, JPEG-coded as recorded, durable off) it times removing the last episode two
ways, median of `--repeats` (the episode put back before each try):

  drop last   EpisodeStore.drop_last_episode(): one commit-record write, then the
              episode's own tail is cut (what the recorder does now)
  compact     EpisodeStore.delete_episodes([last]): a copy of every episode kept
              (what `platform dataset delete` does, and the recorder did first)

While the writer thread does this, the next take's frames wait in its queue, so the
time is how long the loop may be held up if the queue fills meanwhile.

    PYTHONPATH=platform python tools/bench/drop_last.py
    PYTHONPATH=platform python tools/bench/drop_last.py --sizes 10 100 --repeats 3 --out out.json

Target (issue 12 item 2): d / r during a reset cost the same at any store size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform"))

from shallowpi.data import EpisodeStore
from shallowpi.data.features import Feature
from shallowpi.data.store import StoreSettings

JOINTS = [f"j{i}" for i in range(6)]
FRAMES = 30


def add_episode(store: EpisodeStore, rng: np.random.Generator) -> None:
    writer = store.begin_episode("bench", robot="arm", fps=30)
    for t in range(FRAMES):
        state = rng.standard_normal(6).astype(np.float32)
        image = np.full((96, 96, 3), (t * 8) % 255, np.uint8)
        writer.add_frame({"observation.state": state, "action": state, "observation.images.front": image}, t / 30)
    writer.commit()


def build(path: Path, episodes: int) -> EpisodeStore:
    features = {"observation.state": Feature.vector(JOINTS), "action": Feature.vector(JOINTS),
                "observation.images.front": Feature.image(96, 96)}
    store = EpisodeStore.create(path, features, StoreSettings(durable=False))
    rng = np.random.default_rng(0)
    for _ in range(episodes):
        add_episode(store, rng)
    return store


def time_it(store: EpisodeStore, remove, repeats: int) -> float:
    rng = np.random.default_rng(1)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        remove(store)
        times.append(time.perf_counter() - started)
        add_episode(store, rng)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compact-up-to", type=int, default=1000,
                        help="time compaction only at sizes up to this (it copies every episode: minutes at 10,000)")
    parser.add_argument("--out", "--json", type=Path, default=Path(__file__).resolve().parents[2] / ".bench" / "drop_last.json",
                        help="JSON written here (default .bench/drop_last.json)")
    args = parser.parse_args()
    rows = []
    print(f"{'episodes':>9} {'drop last ms':>13} {'compact ms':>11}")
    with tempfile.TemporaryDirectory(prefix="drop-last-") as folder:
        for size in args.sizes:
            store = build(Path(folder) / f"s{size}.zarr", size)
            drop = time_it(store, lambda s: s.drop_last_episode(), args.repeats)
            compact = (time_it(store, lambda s: s.delete_episodes([len(s) - 1]), args.repeats)
                       if size <= args.compact_up_to else None)
            assert len(store) == size and store.check(decode_images=False) == []
            store.close()
            rows.append({"episodes": size, "drop_last_ms": drop * 1e3,
                         "compact_ms": None if compact is None else compact * 1e3})
            shown = "-" if compact is None else f"{compact * 1e3:.1f}"
            print(f"{size:>9d} {drop * 1e3:>13.1f} {shown:>11}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
