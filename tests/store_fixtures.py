"""Small synthetic stores for tests: a 6-joint arm with two cameras."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings

JOINTS = [f"joint_{i}" for i in range(6)]


def arm_features(height: int = 24, width: int = 32, kinds: tuple[str, ...] = ()) -> dict[str, Feature]:
    return robot_features(JOINTS, {"front": (height, width), "wrist": (height, width)}, kinds)


def synthetic_frame(rng: np.random.Generator, t: int, height: int = 24, width: int = 32) -> dict[str, np.ndarray]:
    """A frame whose state follows a smooth curve, so plots and windows mean something."""
    phase = t / 10.0
    state = np.sin(phase + np.arange(6)).astype(np.float32)
    # Smooth images compress like camera frames; a moving bar makes frames differ.
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[:, (t * 2) % width, :] = 255
    return {
        "observation.state": state,
        "action": (state + 0.01 * rng.standard_normal(6)).astype(np.float32),
        "observation.images.front": image,
        "observation.images.wrist": image[::-1].copy(),
    }


def make_store(path: Path, episodes: int = 3, length: int = 20, seed: int = 0,
               settings: StoreSettings | None = None, task: str = "put the red cube in the bowl",
               kinds: tuple[str, ...] = (), tasks: Sequence[str] = (), scene_seeds: Sequence[int] = ()) -> EpisodeStore:
    """`episodes` synthetic arm episodes, episode e `length + e` frames long, every second one
    marked failed; each with `task`, or episode e with `tasks[e]` when `tasks` is given, and
    with `extra.seed` = `scene_seeds[e]` (a twin's scene) when those are given."""
    rng = np.random.default_rng(seed)
    store = EpisodeStore.create(path, arm_features(kinds=kinds), settings or StoreSettings(durable=False))
    for e in range(episodes):
        writer = store.begin_episode(tasks[e] if tasks else task, robot="arm", calibration_id="cal-test", fps=30)
        for t in range(length + e):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        writer.commit(success=e % 2 == 0, extra={"seed": scene_seeds[e]} if scene_seeds else None)
    return store


def as_layout_1(path: Path, version: int = 2) -> None:
    """Rewrite a closed store's metadata as a store written before layout 2 was: every
    episode's metadata in one list in meta/.zattrs, no episodes/ folder, no commit record."""
    import json
    import shutil

    episodes = [json.loads((path / "episodes" / f"{i}.json").read_text())
                for i in range(json.loads((path / "meta" / ".zattrs").read_text())["commit"]["episodes"])]
    (path / "meta" / ".zattrs").write_text(json.dumps({"episodes": episodes}))
    shutil.rmtree(path / "episodes")
    attrs = json.loads((path / ".zattrs").read_text())
    header = {k: v for k, v in attrs["shallowpi"].items() if k != "layout"}
    (path / ".zattrs").write_text(json.dumps({**attrs, "shallowpi": {**header, "version": version}}))


def stamp_episode(path: Path, index: int, **fields) -> None:
    """Make episode `index` of the closed store at `path` look recorded with other metadata
    (fps, calibration_id, ...), as in a store written elsewhere or before the store refused
    to mix them: rewrites its episodes/<i>.json and the commit record's summary."""
    import json

    from shallowpi.data.store import EpisodeInfo, StoreSummary

    info = path / "episodes" / f"{index}.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), **fields}))
    meta = path / "meta" / ".zattrs"
    record = json.loads(meta.read_text())["commit"]
    episodes = [EpisodeInfo.from_json(json.loads((path / "episodes" / f"{i}.json").read_text()))
                for i in range(record["episodes"])]
    summary = StoreSummary.of_episodes(episodes, record.get("allow_mixed_calibration", False))
    meta.write_text(json.dumps({"commit": {**record, **summary.to_json()}}))


def die_holding_lock(store: EpisodeStore) -> None:
    """`store`'s writer dies: the kernel drops its lock and closes its fd, its pid stays in
    the lock file, and the store object lets go of it without a release. The number leaves
    durable_files' list of held locks too: left there, it was closed again by the next
    fork's hook in the child (a subprocess's pipe by then, which failed with EBADF) and by
    the store's collection."""
    import os

    from shallowpi.durable_files import _HELD_LOCKS

    fd = store._lock_fd
    store._lock_fd = None
    _HELD_LOCKS.pop(fd, None)
    os.close(fd)
