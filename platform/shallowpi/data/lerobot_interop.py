"""Move episodes between an `EpisodeStore` and a local LeRobotDataset (lerobot 0.6).

Both sides name features alike (`observation.state`, `action`,
`observation.images.<role>`), so a feature keeps its name, dtype, shape and per-dimension
names across the move. What does not cross:

- export: lerobot derives each frame's timestamp from its index and one integer fps, so
  the store's measured tick and capture times stay behind, as do the per-episode
  success flag, calibration id and dropped-frame count (lerobot has no column for them).
  Cameras become AV1 mp4 (lossy on top of the store's own codec), or H.264 where the
  AV1 encoder cannot take their size (`choose_video_codec`). The export is verified
  against the store before it is moved into place (`verify_lerobot_export`).
- import: per-frame task text is kept per episode (the first frame's; the distinct tasks
  go to `extra["tasks"]` when an episode has several). Non-numeric columns (language
  annotations) are skipped.

lerobot is the optional `lerobot` extra (Python >= 3.12), imported only inside the two
functions. Everything here is local: `HF_HUB_OFFLINE` is forced on before lerobot is
imported, and a directory that is not a LeRobotDataset is refused before lerobot could
think of fetching it from a hub.

Both functions write beside their destination and rename it into place at the end, so an
interrupted run leaves no half-written dataset under the requested name. Export encodes in
a child process (`shallowpi.data.isolated`), so that a crash of the native encoder removes
the staging folder and ends in one line instead of killing the command.
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


# lerobot's default codec first; H.264 takes the small sizes SVT-AV1 crashes on.
VIDEO_CODECS = ("libsvtav1", "h264")
_refusals: dict[tuple[str, int, int], str | None] = {}  # probed once a process


def _camera_sizes(features: Mapping[str, Feature]) -> dict[str, tuple[int, int]]:
    """(width, height) of each camera."""
    return {k: (f.shape[1], f.shape[0]) for k, f in features.items() if f.kind is FeatureKind.IMAGE}


def choose_video_codec(store: EpisodeStore) -> str:
    """The first of VIDEO_CODECS that encodes every camera size of `store`, asked of the
    encoder itself in a child process (see shallowpi.data.video_probe: SVT-AV1 dies of
    SIGFPE below 25 pixels of width, libx264 refuses odd sizes). Raises StoreError naming
    the cameras and sizes when none does."""
    from lerobot.configs.video import RGBEncoderConfig

    from shallowpi.data.video_probe import encoder_refusal

    sizes = _camera_sizes(store.features)
    why: dict[str, list[str]] = {}
    for codec in VIDEO_CODECS:
        encoder = RGBEncoderConfig(vcodec=codec)
        options = encoder.get_codec_options(as_strings=True)
        for width, height in sorted(set(sizes.values())):
            if (codec, width, height) not in _refusals:
                _refusals[codec, width, height] = encoder_refusal(codec, encoder.pix_fmt, options, width, height)
        refused = {k: _refusals[(codec, w, h)] for k, (w, h) in sizes.items() if _refusals[(codec, w, h)]}
        if not refused:
            if codec != VIDEO_CODECS[0]:
                log.warning("%s: %s cannot encode %s (%s); exporting the cameras as %s video instead",
                            store.path.name, VIDEO_CODECS[0], _sizes_text(sizes), why[VIDEO_CODECS[0]][0], codec)
            return codec
        why[codec] = [f"{k} {sizes[k][0]}x{sizes[k][1]}: {reason}" for k, reason in refused.items()]
    raise StoreError(
        f"cannot export {store.path.name}: no video encoder takes its camera sizes "
        f"({'; '.join(f'{codec}: {why[codec][0]}' for codec in VIDEO_CODECS)}); "
        "record at an even width and height of at least 32x32 (in simulation: record.sim_size=64x64)"
    )


def _sizes_text(sizes: Mapping[str, tuple[int, int]]) -> str:
    return ", ".join(sorted({f"{w}x{h}" for w, h in sizes.values()}))


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

    Cameras are AV1 video (lerobot's default), or H.264 where the AV1 encoder cannot take
    their size; StoreError if neither can. The export is written and then verified (frame
    counts of every episode's videos, and a few decoded frames, against the store) in a
    child process, so an encoder crash is a one-line `ChildCrashed`; on any failure
    nothing is left at `out_dir` or beside it.
    """
    _import_lerobot()  # the one-line "install the extra" before anything is made
    from shallowpi.data.isolated import ChildCrashed, run_isolated

    store_path, out_dir = Path(store_path), Path(out_dir)
    with EpisodeStore.open(store_path) as store:
        require_intact(store)  # zarr would read a missing chunk as zeros
        if len(store) == 0:
            raise StoreError(f"{store_path.name} has no episodes to export")
        repo_id = repo_id or f"local/{store_path.stem}"
        fps = _dataset_fps(store)
        codec = choose_video_codec(store) if _camera_sizes(store.features) else VIDEO_CODECS[0]
    staging = _claim_destination(out_dir, "export directory")
    what = f"exporting {store_path.name} ({codec} video encoder)"
    try:
        try:
            run_isolated(_export_into, store_path, staging, repo_id, fps, codec, what=what, progress=progress)
        except ChildCrashed as exc:
            raise ChildCrashed(what, f"{exc.how}; nothing was written to {out_dir} and the store is untouched: "
                                     "run it again, and report it if it repeats") from None
        _move_into_place(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _export_into(store_path: Path, staging: Path, repo_id: str, fps: int, codec: str,
                 progress: Progress | None = None) -> None:
    """The export itself, run in a child process by `export_lerobot`."""
    LeRobotDataset = _import_lerobot()
    import av
    from lerobot.configs.video import RGBEncoderConfig

    # lerobot hands FFmpeg's log back to FFmpeg's own printer after each video, which then
    # prints x264's statistics and the muxer's notes on stderr for every episode.
    av.logging.set_libav_level(av.logging.ERROR)
    with EpisodeStore.open(store_path) as store, _quiet_datasets():
        robot = next((e.robot for e in store.episodes if e.robot), None)
        keys = list(store.features)
        total, done = store.num_frames, 0
        _report(progress, 0, total)
        dataset = LeRobotDataset.create(
            repo_id, fps=fps, features=lerobot_features(store.features), root=staging,
            robot_type=robot, use_videos=True, video_backend=_video_backend(),
            rgb_encoder=RGBEncoderConfig(vcodec=codec),
            # Not lerobot's streaming encoder: its feed_frame (lerobot 0.6.1,
            # datasets/video_utils.py, StreamingVideoEncoder) puts each frame on a
            # 30-frame queue with a 0.1 s timeout and drops the frame when the queue is
            # full, logging a warning and carrying on; the episode is then saved with a
            # shorter video. An export feeds frames as fast as the store reads them.
            # Seen here (tools/bench/lerobot_streaming_drops.py, BENCHMARKS.md): 150 rows
            # of three 1280x720 cameras fed on one core shared with two busy loops came
            # out as videos of 139-140 frames, with only warnings, in 1 run of 5 (SVT-AV1
            # buffers frames of its own, so a drop needs a stall of the encoder); that is
            # how 1 export in 13 wrote 857 front frames for 858 rows. lerobot's
            # other path writes each frame as a PNG and encodes the episode's PNGs after
            # it: slower, but it never gives up on a frame for lack of time (a PNG that
            # fails to write is only logged by lerobot, so verify_lerobot_export counts
            # the frames either way).
            streaming_encoding=False,
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
                # One camera after another in this process: a crash in the encoder then
                # ends this process, which the parent reports, rather than a pool worker
                # whose death would surface as a BrokenProcessPool traceback.
                dataset.save_episode(parallel_encoding=False)
        finally:
            dataset.finalize()
        verify_lerobot_export(store, staging, repo_id)


# --- verification ------------------------------------------------------------------------

# Episodes whose first and last frames are decoded and compared with the store.
VERIFY_EPISODES = 8
# Mean absolute error (0-255) a decoded frame may have against its own row: far above
# what AV1 or H.264 at lerobot's quality leave on camera frames (< 6 on the test frames),
# far below a black, missing or foreign frame.
MAX_FRAME_ERROR = 32.0
# A decoded frame must be at least this close to its own row as to the rows beside it,
# so that a video shifted by one frame is caught wherever neighbouring frames differ.
NEIGHBOUR_MARGIN = 1.0


def verify_lerobot_export(store: EpisodeStore, root: Path, repo_id: str) -> None:
    """Check that the LeRobotDataset at `root` holds `store`'s episodes frame for frame:
    as many episodes and rows, every episode's video frames (counted in the mp4, at the
    timestamps lerobot will ask for) as many as its rows, and the first and last frame of
    a few episodes decoded by lerobot closest to their own rows of the store.

    Raises StoreError naming the episode, the camera and the counts or errors.
    """
    LeRobotDataset = _import_lerobot()
    dataset = LeRobotDataset(repo_id, root=root, video_backend="pyav", return_uint8=True)
    episodes = store.episodes
    name = store.path.name
    if dataset.num_episodes != len(episodes) or dataset.num_frames != store.num_frames:
        raise StoreError(f"export of {name} is incomplete: {dataset.num_episodes} episodes and "
                         f"{dataset.num_frames} rows for the store's {len(episodes)} and {store.num_frames}")
    fps = dataset.fps
    frame_times: dict[Path, np.ndarray] = {}
    first_rows = np.concatenate([[0], np.cumsum([e.length for e in episodes])])
    for position, info in enumerate(episodes):
        entry = dataset.meta.episodes[position]
        if int(entry["length"]) != info.length:
            raise StoreError(f"export of {name}: episode {info.index} has {entry['length']} rows "
                             f"for the store's {info.length}")
        for key in dataset.meta.video_keys:
            path = root / dataset.meta.get_video_file_path(position, key)
            if path not in frame_times:
                frame_times[path] = _frame_times(path)
            start = float(entry[f"videos/{key}/from_timestamp"])
            stop = float(entry[f"videos/{key}/to_timestamp"])
            times = frame_times[path]
            half = 0.5 / fps
            frames = int(np.count_nonzero((times >= start - half) & (times < stop - half)))
            if frames != info.length or round((stop - start) * fps) != info.length:
                raise StoreError(
                    f"export of {name}: episode {info.index} has {info.length} rows but its {key} video "
                    f"holds {frames} frames ({stop - start:.3f} s at {fps} fps); lerobot would pair rows "
                    "with the wrong frames, so nothing was exported: run the export again"
                )
    sample = np.unique(np.linspace(0, len(episodes) - 1, min(VERIFY_EPISODES, len(episodes))).round().astype(int))
    for position in sample:
        info = episodes[int(position)]
        start, stop = store.episode_range(info.index)
        for offset in (0, info.length - 1):
            _compare_frame(dataset, store, int(first_rows[position]) + offset, start + offset, info.index)


def _frame_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every frame in an mp4, read from its packets (no decoding)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
    return np.sort(np.asarray(times))


def _compare_frame(dataset: Any, store: EpisodeStore, row: int, store_row: int, episode: int) -> None:
    """The frame lerobot returns for `row` must match store row `store_row` and be no
    farther from it than from the store rows beside it."""
    try:
        item = dataset[row]
    except Exception as exc:  # lerobot's decoder refuses a timestamp it cannot find
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"export of {store.path.name}: lerobot cannot read row {row} "
                         f"(episode {episode}): {first}") from None
    for key in dataset.meta.video_keys:
        got = np.asarray(item[key]).transpose(1, 2, 0).astype(np.float32)  # CHW uint8 -> HWC
        lo, hi = max(store_row - 1, 0), min(store_row + 2, store.num_frames)
        rows = store.read(key, lo, hi).astype(np.float32)
        errors = np.abs(rows - got[None]).mean(axis=(1, 2, 3))
        own = errors[store_row - lo]
        if own > MAX_FRAME_ERROR or own > errors.min() + NEIGHBOUR_MARGIN:
            raise StoreError(
                f"export of {store.path.name}: {key} frame of row {row} (episode {episode}) differs from "
                f"its row by {own:.1f} levels (rows beside it: {', '.join(f'{e:.1f}' for e in errors)}); "
                "nothing was exported: run the export again"
            )


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
