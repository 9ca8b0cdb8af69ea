"""Commit and open time of the episode store against its episode count.

For each size (1k, 10k, 100k episodes of 2 frames, 6-joint state and action, no
cameras: camera frames cost the same per frame at any store size) it builds a store,
then times, as the median of `--repeats` tries:

  commit    one more 2-frame episode: begin_episode, 2 add_frame, commit, durable
            (fsync, as recorded) and not (the store's own work alone: no fsync, neither
            the store's nor zarr's synced rewrites)
  open r    EpisodeStore.open(path) for reading; then also one episode's metadata and
            range (which reads meta/episode_ends: 8 bytes an episode, once)
  open a    EpisodeStore.open(path, mode="a") + close (the writer's open: tail check)
  all meta  `store.episodes`, every episode's metadata (what `dataset list` reads; linear
            by nature, shown for scale)
  layout 1  the same store in layout 1 (one JSON list of every episode, the layout
            before): its read-only open, the rewrite of that list (synced) that each of
            its commits added to the work layout 2 does, and the one-time move to
            layout 2 on the first writable open

How the stores are built: at 1k through `EpisodeWriter` commits (durable off), and at
every size by a direct path that writes what those commits write in bulk (the data
arrays, meta/episode_ends, one episodes/<i>.json per episode with the same fields and
checksums, the commit record). The 1k store is built both ways and timed both ways,
so the table shows the direct path gives the same numbers; each direct-built store also
passes `check(decode_images=False)` up to 10k episodes.

    PYTHONPATH=platform python tools/bench/store_scale.py
    PYTHONPATH=platform python tools/bench/store_scale.py --sizes 1000 10000 --repeats 5

Target (issue 10 item 16): commit and open independent of the episode count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shallowpi.data import EpisodeStore, Feature, zarr_compat
from shallowpi.data import store as store_module
from shallowpi.data.durable_io import checksum, write_json
from shallowpi.data.store import (
    TICK_KEY,
    TIMESTAMP_SUFFIX,
    EpisodeInfo,
    StoreSettings,
    StoreSummary,
)

JOINTS = [f"joint_{i}" for i in range(6)]
FEATURES = {"observation.state": Feature.vector(JOINTS), "action": Feature.vector(JOINTS)}
FPS = 30.0
LENGTH = 2


def frame(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {key: rng.standard_normal(6).astype(np.float32) for key in FEATURES}


def build_by_commits(path: Path, episodes: int) -> None:
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, FEATURES, StoreSettings(durable=False)) as store:
        for _ in range(episodes):
            writer = store.begin_episode("bench", robot="arm", calibration_id="cal", fps=FPS)
            for t in range(LENGTH):
                writer.add_frame(frame(rng), t / FPS)
            writer.commit(success=True, extra={"loop_p50_ms": 33.3, "loop_p99_ms": 35.0, "loop_overruns": 0})
    _make_durable(path)


def build_direct(path: Path, episodes: int) -> None:
    """Write, in bulk, the files `episodes` commits of 2-frame episodes would leave."""
    rng = np.random.default_rng(0)
    EpisodeStore.create(path, FEATURES, StoreSettings(durable=False)).close()
    rows = episodes * LENGTH
    ticks = np.tile(np.arange(LENGTH) / FPS, episodes)
    values = {key: rng.standard_normal((rows, 6)).astype(np.float32) for key in FEATURES}
    columns = {TICK_KEY: ticks, **values, **{key + TIMESTAMP_SUFFIX: ticks for key in FEATURES}}
    store = EpisodeStore.open(path, mode="a")
    for key, column in columns.items():
        array = store._group["data"][key]
        array.resize(column.shape)
        array[:] = column
    ends = np.arange(1, episodes + 1, dtype=np.int64) * LENGTH
    store._group["meta/episode_ends"].resize((episodes,))
    store._group["meta/episode_ends"][:] = ends
    summary = StoreSummary()
    folder = path / store_module.EPISODES_DIR
    start_time = time.time()
    for i in range(episodes):
        span = slice(i * LENGTH, (i + 1) * LENGTH)
        info = EpisodeInfo(
            index=i, length=LENGTH, task="bench", robot="arm", calibration_id="cal", fps=FPS,
            start_time=start_time + i, duration_s=LENGTH / FPS, success=True,
            extra={"loop_p50_ms": 33.3, "loop_p99_ms": 35.0, "loop_overruns": 0},
            checksums={key: checksum(column[span]) for key, column in columns.items()},
        )
        (folder / f"{i}.json").write_text(json.dumps(info.to_json()))
        if i == 0:
            summary = summary.with_episode(info)
    store._write_commit_record(episodes, rows, summary)
    store.close()
    _make_durable(path)


def _make_durable(path: Path) -> None:
    """Built fast without fsync; timed as recorded, with it."""
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["shallowpi"]["settings"]["durable"] = True
    (path / ".zattrs").write_text(json.dumps(attrs))
    os.sync()


def median_ms(action: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def commit_once(path: Path, durable: bool, rng: np.random.Generator) -> Callable[[], None]:
    store = EpisodeStore.open(path, mode="a")
    store.settings = dataclasses.replace(store.settings, durable=durable)
    # The open already set zarr's rewrites (each resized array's .zarray, a shared chunk)
    # to be synced from the header's durable: true; without this, "not durable" still
    # made ~18 fsyncs a commit.
    zarr_compat.sync_rewrites(store._group, durable)

    def commit() -> None:
        writer = store.begin_episode("bench", robot="arm", calibration_id="cal", fps=FPS)
        for t in range(LENGTH):
            writer.add_frame(frame(rng), t / FPS)
        writer.commit(success=True)

    commit.store = store  # type: ignore[attr-defined]
    return commit


def measure(path: Path, repeats: int, layout_1: bool) -> dict[str, float]:
    rng = np.random.default_rng(1)
    out: dict[str, float] = {}
    out["open_r_ms"] = median_ms(lambda: EpisodeStore.open(path), repeats)
    out["open_r_episode_ms"] = median_ms(lambda: EpisodeStore.open(path).episode(-1), repeats)
    out["open_a_ms"] = median_ms(lambda: EpisodeStore.open(path, mode="a").close(), repeats)
    for durable in (True, False):
        commit = commit_once(path, durable, rng)
        out[f"commit{'_durable' if durable else ''}_ms"] = median_ms(commit, repeats)
        commit.store.close()  # type: ignore[attr-defined]
    start = time.perf_counter()
    _ = EpisodeStore.open(path).episodes
    out["all_meta_ms"] = (time.perf_counter() - start) * 1e3
    if layout_1:
        copy = path.with_name(path.stem + "-layout1.zarr")
        shutil.copytree(path, copy)
        _as_layout_1(copy)
        out["layout1_open_r_ms"] = median_ms(lambda: EpisodeStore.open(copy), max(1, repeats // 2))
        # What each layout-1 commit added to the work above: rewriting the whole list.
        listing = json.loads((copy / "meta" / ".zattrs").read_text())
        out["layout1_list_write_ms"] = median_ms(
            lambda: write_json(copy / "meta" / ".zattrs", listing, durable=True), max(1, repeats // 2))
        start = time.perf_counter()
        EpisodeStore.open(copy, mode="a").close()
        out["layout1_move_ms"] = (time.perf_counter() - start) * 1e3
        shutil.rmtree(copy)
    return out


def _as_layout_1(path: Path) -> None:
    count = json.loads((path / "meta" / ".zattrs").read_text())["commit"]["episodes"]
    episodes = [json.loads((path / "episodes" / f"{i}.json").read_text()) for i in range(count)]
    (path / "meta" / ".zattrs").write_text(json.dumps({"episodes": episodes}))
    shutil.rmtree(path / "episodes")
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["shallowpi"] = {**{k: v for k, v in attrs["shallowpi"].items() if k != "layout"}, "version": 2}
    (path / ".zattrs").write_text(json.dumps(attrs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--layout1-up-to", type=int, default=10000,
                        help="time the layout-1 open and move up to this size (the move writes every file)")
    parser.add_argument("--direct-only", action="store_true", help="skip the store built by commits")
    parser.add_argument("--root", type=Path, help="where to build the stores (default: a temp dir, removed)")
    parser.add_argument("--out", type=Path, default=Path(".bench/store_scale.json"))
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="store_scale-", dir=args.root))
    results = []
    try:
        plans = [] if args.direct_only else [("commits", n) for n in args.sizes if n <= 1000]
        plans += [("direct", n) for n in args.sizes]
        for how, n in plans:
            path = root / f"{how}-{n}.zarr"
            start = time.perf_counter()
            (build_by_commits if how == "commits" else build_direct)(path, n)
            built_s = time.perf_counter() - start
            checked = None
            if n <= 10000:
                with EpisodeStore.open(path) as store:
                    checked = store.check(decode_images=False) == []
            row = {"episodes": n, "built_by": how, "build_s": round(built_s, 1), "check_ok": checked,
                   **measure(path, args.repeats, layout_1=n <= args.layout1_up_to)}
            results.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
            shutil.rmtree(path)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    columns = ["episodes", "built_by", "commit_durable_ms", "commit_ms", "open_r_ms", "open_r_episode_ms", "open_a_ms",
               "all_meta_ms", "layout1_open_r_ms", "layout1_list_write_ms", "layout1_move_ms"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in results:
        cells = [row.get(c) for c in columns]
        print("| " + " | ".join("-" if v is None else f"{v:.1f}" if isinstance(v, float) else str(v) for v in cells) + " |")
    load = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"results": results, "loadavg": load, "repeats": args.repeats}, indent=1))
    print(f"load average {load[0]:.1f}; wrote {args.out}")


if __name__ == "__main__":
    main()
