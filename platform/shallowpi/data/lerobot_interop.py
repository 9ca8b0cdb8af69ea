"""Move episodes between an `EpisodeStore` and a local LeRobotDataset (lerobot 0.6).

Both sides name features alike (`observation.state`, `action`,
`observation.images.<role>`), so a feature keeps its name, dtype, shape and per-dimension
names across the move. What does not cross:

- export: lerobot derives each frame's timestamp from its index and one integer fps, so
  the store's measured tick and capture times stay behind, as do the per-episode
  success flag, calibration id and dropped-frame count (lerobot has no column for them).
  Cameras become AV1 mp4 (lossy on top of the store's own codec).
- import: per-frame task text is kept per episode (the first frame's; the distinct tasks
  go to `extra["tasks"]` when an episode has several). Non-numeric columns (language
  annotations) are skipped.

lerobot is the optional `lerobot` extra (Python >= 3.12), imported only inside the two
functions. Everything here is local: `HF_HUB_OFFLINE` is forced on before lerobot is
imported, and a directory that is not a LeRobotDataset is refused before lerobot could
think of fetching it from a hub.

Both functions write beside their destination and rename it into place at the end, so an
interrupted run leaves no half-written dataset under the requested name.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.features import Feature, FeatureKind
from shallowpi.data.store import EpisodeStore, StoreSettings
from shallowpi.data.store_files import require_intact
from shallowpi.errors import PlatformError, StoreError

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (frames done, frames in total)

# Columns every LeRobotDataset has, filled in by lerobot itself.
LEROBOT_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# Rows read from the store at once per camera: bounds memory on long episodes.
READ_BLOCK = 64
STAGING_SUFFIX = ".partial"


class LerobotMissingError(PlatformError):
    """The lerobot extra is not installed."""


def _import_lerobot() -> Any:
    """The LeRobotDataset class, offline, or a one-line error saying how to get it."""
    # huggingface_hub reads HF_HUB_OFFLINE once, when it is first imported.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # SVT-AV1 prints its whole configuration to stderr for every video unless told not to.
    os.environ.setdefault("SVT_LOG", "1")
    try:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset
    except ImportError as exc:
        raise LerobotMissingError(
            f"lerobot interop needs the lerobot extra ({exc.name or 'lerobot'} is missing): "
            "pip install -e '.[lerobot]' on Python >= 3.12"
        ) from None
    return LeRobotDataset


def _video_backend() -> str:
    """torchcodec when it loads (it needs a matching FFmpeg), else PyAV, without the
    multi-page warning lerobot logs when it finds torchcodec installed but unloadable."""
    try:
        import torchcodec  # noqa: F401
    except Exception:
        return "pyav"
    return "torchcodec"


@contextlib.contextmanager
def _quiet_datasets() -> Any:
    """Hide the progress bar Hugging Face datasets draws for each parquet pass while we
    work (the caller draws its own through `progress`), then put things back."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


# --- export ------------------------------------------------------------------------------


def lerobot_features(features: Mapping[str, Feature]) -> dict[str, dict[str, Any]]:
    """The store's features in lerobot's spelling: cameras become videos."""
    out: dict[str, dict[str, Any]] = {}
    for key, feature in features.items():
        if feature.kind is FeatureKind.IMAGE:
            out[key] = {"dtype": "video", "shape": feature.shape, "names": ["height", "width", "channels"]}
        else:
            names = list(feature.names) if feature.names else None
            out[key] = {"dtype": feature.dtype, "shape": feature.shape, "names": names}
    return out


def _dataset_fps(store: EpisodeStore) -> int:
    """lerobot keeps one integer fps per dataset; every episode must agree with it."""
    rates = sorted({float(e.fps) for e in store.episodes})
    if len(rates) > 1:
        raise StoreError(
            f"{store.path.name} mixes episodes recorded at {', '.join(f'{r:g}' for r in rates)} fps; "
            "a LeRobotDataset has one fps, export the episodes of each rate separately"
        )
    fps = rates[0]
    if not math.isclose(fps, round(fps), abs_tol=1e-6) or round(fps) < 1:
        raise StoreError(f"{store.path.name} was recorded at {fps:g} fps; a LeRobotDataset needs a whole number")
    return round(fps)


def _claim_destination(out_dir: Path, what: str) -> Path:
    """The staging path beside `out_dir`, after checking `out_dir` is free."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PlatformError(f"{out_dir} already exists; remove it or choose another {what}")
    staging = out_dir.with_name(out_dir.name + STAGING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    return staging


def _move_into_place(staging: Path, out_dir: Path) -> None:
    if out_dir.exists():
        out_dir.rmdir()  # checked empty by _claim_destination
    os.replace(staging, out_dir)


def export_lerobot(
    store_path: Path,
    out_dir: Path,
    repo_id: str | None = None,
    progress: Progress | None = None,
) -> Path:
    """Write every committed episode of the store at `store_path` as a LeRobotDataset in
    `out_dir` (which must not exist, or be empty); returns `out_dir`.

    `repo_id` is only a label inside the dataset (`local/<store name>` by default);
    nothing is uploaded. Load the result with
    `LeRobotDataset(repo_id, root=out_dir)`.
    """
    LeRobotDataset = _import_lerobot()
    store_path, out_dir = Path(store_path), Path(out_dir)
    with EpisodeStore.open(store_path) as store, _quiet_datasets():
        require_intact(store)  # zarr would read a missing chunk as zeros
        if len(store) == 0:
            raise StoreError(f"{store_path.name} has no episodes to export")
        repo_id = repo_id or f"local/{store_path.stem}"
        fps = _dataset_fps(store)
        staging = _claim_destination(out_dir, "export directory")
        robot = next((e.robot for e in store.episodes if e.robot), None)
        keys = list(store.features)
        total, done = store.num_frames, 0
        _report(progress, 0, total)
        try:
            dataset = LeRobotDataset.create(
                repo_id, fps=fps, features=lerobot_features(store.features), root=staging,
                robot_type=robot, use_videos=True, video_backend=_video_backend(),
                # Frames go straight into the encoder instead of through PNG files.
                streaming_encoding=True,
            )
            try:
                for info in store.episodes:
                    start, stop = store.episode_range(info.index)
                    for block in range(start, stop, READ_BLOCK):
                        end = min(block + READ_BLOCK, stop)
                        rows = {k: store.read(k, block, end) for k in keys}
                        if store.action_offset and "action" in rows:
                            rows["action"] = _following_actions(store, block, end, stop)
                        for i in range(len(rows[keys[0]])):
                            dataset.add_frame({**{k: rows[k][i] for k in keys}, "task": info.task})
                            done += 1
                            _report(progress, done, total)
                    dataset.save_episode()
            finally:
                dataset.finalize()
            _move_into_place(staging, out_dir)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return out_dir


def _following_actions(store: EpisodeStore, start: int, end: int, stop: int) -> np.ndarray:
    """Rows start..end of a format-1 store's actions as lerobot pairs them: the action sent
    after each observation, i.e. one row later (the episode's last action repeated)."""
    offset = store.action_offset
    actions = store.read("action", min(start + offset, stop - 1), min(end + offset, stop))
    missing = (end - start) - len(actions)
    return np.concatenate([actions, np.repeat(actions[-1:], missing, axis=0)]) if missing else actions


# --- import ------------------------------------------------------------------------------


def _check_lerobot_dir(src_dir: Path) -> None:
    if not src_dir.is_dir():
        raise PlatformError(f"no LeRobot dataset at {src_dir}; give the directory that holds meta/info.json")
    if not (src_dir / "meta" / "info.json").is_file():
        raise PlatformError(f"{src_dir} is not a LeRobotDataset (no meta/info.json); give a lerobot v3 dataset directory")


def _names(raw: Any, length: int) -> tuple[str, ...]:
    """lerobot writes names as a list, a one-entry dict of lists, or null."""
    if isinstance(raw, dict) and len(raw) == 1:
        raw = next(iter(raw.values()))
    if isinstance(raw, (list, tuple)) and len(raw) == length and all(isinstance(n, str) for n in raw):
        return tuple(raw)
    return ()


def _image_shape(spec: Mapping[str, Any]) -> tuple[int, int, int]:
    """(height, width, channels), whichever order lerobot's names say the shape is in."""
    shape = tuple(int(s) for s in spec["shape"])
    names = list(spec.get("names") or [])
    if len(shape) == 3 and names[:1] == ["channels"]:
        return shape[1], shape[2], shape[0]
    if len(shape) != 3:
        raise StoreError(f"a camera of shape {shape} is not an image this store can hold")
    return shape[0], shape[1], shape[2]


def store_features(lerobot_spec: Mapping[str, Mapping[str, Any]]) -> dict[str, Feature]:
    """lerobot features as store features; bookkeeping and text columns are left out."""
    features: dict[str, Feature] = {}
    for key, spec in lerobot_spec.items():
        dtype = spec.get("dtype")
        if key in LEROBOT_BOOKKEEPING:
            continue
        if dtype in ("video", "image"):
            features[key] = Feature.image(*_image_shape(spec))
            continue
        try:
            np.dtype(dtype)
        except TypeError:
            log.info("skipping lerobot column %s of dtype %s: not numeric", key, dtype)
            continue
        shape = tuple(int(s) for s in spec["shape"])
        names = _names(spec.get("names"), shape[0]) if len(shape) == 1 else ()
        features[key] = Feature(str(np.dtype(dtype)), shape, FeatureKind.NUMERIC, names)
    return features


def _to_store_value(feature: Feature, value: Any) -> np.ndarray:
    array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
    if feature.kind is FeatureKind.IMAGE:
        height, width, channels = feature.shape
        if array.shape == (channels, height, width):  # lerobot hands out CHW tensors
            array = array.transpose(1, 2, 0)
        if array.dtype != np.uint8:  # float frames in [0, 1]
            array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(array)
    return array.reshape(feature.shape).astype(feature.dtype, copy=False)


def import_lerobot(
    src_dir: Path,
    store_path: Path,
    repo_id: str | None = None,
    progress: Progress | None = None,
    settings: StoreSettings | None = None,
) -> Path:
    """Read the local LeRobotDataset in `src_dir` into a new store at `store_path`
    (which must not exist); returns `store_path`.

    Camera frames are decoded by lerobot and re-encoded with the store's image codec
    (`settings`, the store's defaults if None).
    """
    src_dir, store_path = Path(src_dir), Path(store_path)
    _check_lerobot_dir(src_dir)
    LeRobotDataset = _import_lerobot()
    if store_path.exists():
        raise StoreError(f"{store_path} already exists; choose another dataset name")
    with _quiet_datasets():
        return _import(LeRobotDataset, src_dir, store_path, repo_id, progress, settings)


def _import(LeRobotDataset: Any, src_dir: Path, store_path: Path, repo_id: str | None,
            progress: Progress | None, settings: StoreSettings | None) -> Path:
    try:
        dataset = LeRobotDataset(
            repo_id or f"local/{src_dir.name}", root=src_dir,
            video_backend=_video_backend(), return_uint8=True,
        )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PlatformError(f"{src_dir} could not be read as a LeRobotDataset: {type(exc).__name__}: {first}") from exc
    features = store_features(dataset.meta.features)
    if not features:
        raise StoreError(f"{src_dir} has no numeric or camera features to import")
    episode_of_row = np.asarray(dataset.hf_dataset["episode_index"])
    robot = dataset.meta.robot_type or ""

    staging = store_path.with_name(store_path.name + STAGING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    total = len(dataset)
    _report(progress, 0, total)
    try:
        with EpisodeStore.create(staging, features, settings) as store:
            row = 0
            while row < total:
                episode = int(episode_of_row[row])
                stop = row
                while stop < total and int(episode_of_row[stop]) == episode:
                    stop += 1
                _import_episode(dataset, store, features, row, stop, robot)
                row = stop
                _report(progress, row, total)
        os.replace(staging, store_path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return store_path


def _import_episode(dataset: Any, store: EpisodeStore, features: Mapping[str, Feature],
                    start: int, stop: int, robot: str) -> None:
    first = dataset[start]
    tasks = [str(first.get("task", ""))]
    writer = store.begin_episode(tasks[0], robot=robot, fps=float(dataset.fps))
    with writer:  # discards the episode if anything below raises
        for index in range(start, stop):
            item = first if index == start else dataset[index]
            task = str(item.get("task", ""))
            if task not in tasks:
                tasks.append(task)
            values = {key: _to_store_value(feature, item[key]) for key, feature in features.items()}
            writer.add_frame(values, float(item["timestamp"]))
        writer.commit(extra={"tasks": tasks} if len(tasks) > 1 else None)
