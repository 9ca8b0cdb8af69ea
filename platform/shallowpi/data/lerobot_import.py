"""Import a local LeRobotDataset into a new `EpisodeStore` (`import_lerobot`).

lerobot's features become store features (`store_features`), its frames are decoded by
lerobot and re-encoded with the store's image codec, one episode at a time. What export
and import share lives in `shallowpi.data.lerobot_interop`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.features import Feature, FeatureKind, require_plain_names
from shallowpi.data.lerobot_export import KINDS_KEY
from shallowpi.data.lerobot_interop import (
    STAGING_SUFFIX,
    SUCCESS_KEY,
    Progress,
    _import_lerobot,
    _quiet_datasets,
    _report,
    _video_backend,
    episode_successes,
)
from shallowpi.data.store import EpisodeStore, StoreSettings
from shallowpi.data.store_claim import claim_new, require_outside_stores
from shallowpi.data.store_swap import name_taken
from shallowpi.errors import PlatformError, StoreError
from shallowpi.joints import JOINT_KINDS

log = logging.getLogger(__name__)

# Columns every LeRobotDataset has, filled in by lerobot itself.
LEROBOT_BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
# lerobot v3's layout under a dataset's root (lerobot.datasets.utils): the tasks table and
# the episodes index, whose rows name each episode's data and video files by chunk and file.
TASKS_FILE = "meta/tasks.parquet"
EPISODES_INDEX_DIR = "meta/episodes"
# An imported episode's start_time: not known (`store_edit.start_known`). A merge tells two
# imports of one dataset, and an import beside the store it was exported from, by their
# numbers instead (`store_edit.refuse_repeats`); training names them so too (not those
# imported before, which held the import's clock: `finetune._recording`).
UNKNOWN_START_TIME = 0.0


def _check_lerobot_dir(src_dir: Path) -> None:
    if not src_dir.is_dir():
        raise PlatformError(f"no LeRobot dataset at {src_dir}; give the directory that holds meta/info.json")
    if not (src_dir / "meta" / "info.json").is_file():
        raise PlatformError(f"{src_dir} is not a LeRobotDataset (no meta/info.json); give a lerobot v3 dataset directory")


def _require_complete(src_dir: Path) -> None:
    """PlatformError (one line) naming the first file missing from the LeRobotDataset in
    `src_dir` (an incomplete copy: an interrupted rsync, a partial download): the tasks
    table, the episodes index, and every file its rows name through info.json's
    `data_path` and `video_path` templates. lerobot, finding a file missing, asks the hub
    for it, and offline (as it always is here) says only to unset HF_HUB_OFFLINE.

    Checks only what info.json describes: a dataset it does not describe fully is left to
    lerobot's own error."""
    try:
        info = json.loads((src_dir / "meta" / "info.json").read_text())
    except (OSError, ValueError) as exc:
        raise PlatformError(f"{src_dir}/meta/info.json does not read ({exc}); copy it again") from None
    if not isinstance(info, dict) or not str(info.get("codebase_version", "")).startswith("v3"):
        return  # another layout: lerobot says which versions it reads
    total = info.get("total_episodes")
    if not isinstance(total, int) or total <= 0:
        return
    if info.get("total_tasks") and not (src_dir / TASKS_FILE).is_file():
        raise _missing(src_dir, TASKS_FILE)
    index_files = sorted((src_dir / EPISODES_INDEX_DIR).glob("*/*.parquet"))
    if not index_files:
        raise _missing(src_dir, f"{EPISODES_INDEX_DIR}/ (the episodes index)")
    import pyarrow.parquet as pq  # lerobot's own dependency, as datasets'

    videos = [key for key, spec in (info.get("features") or {}).items()
              if isinstance(spec, dict) and spec.get("dtype") == "video"]
    templates = {"data": info.get("data_path")} | {f"videos/{key}": info.get("video_path") for key in videos}
    needed: dict[str, None] = {}  # each file once, in the order episodes name them
    episodes = 0
    for index_file in index_files:
        try:
            # The columns that name files, not the per-episode statistics beside them.
            names = [n for n in pq.read_schema(index_file).names if not n.startswith("stats/")]
            table = pq.read_table(index_file, columns=names).to_pydict()
        except Exception as exc:  # pyarrow's own types: a file cut short by the copy
            raise PlatformError(f"{index_file} does not read ({type(exc).__name__}): an incomplete copy of "
                                f"{src_dir}? copy the dataset again") from None
        episodes += len(table.get("episode_index", []))
        for prefix, template in templates.items():
            chunks, files = table.get(f"{prefix}/chunk_index"), table.get(f"{prefix}/file_index")
            if not template or chunks is None or files is None:
                continue  # not described: lerobot's to judge
            key = prefix.removeprefix("videos/")
            for chunk, file in zip(chunks, files):
                try:
                    needed[template.format(video_key=key, chunk_index=chunk, file_index=file)] = None
                except (KeyError, IndexError, ValueError):  # a template of other fields: lerobot's to judge
                    break
    for relative in needed:
        if not (src_dir / relative).is_file():
            raise _missing(src_dir, relative)
    if episodes < total:  # a whole file of the index missing
        raise _missing(src_dir, f"{EPISODES_INDEX_DIR}/ lists {episodes} of the {total} episodes info.json counts")


def _missing(src_dir: Path, what: str) -> PlatformError:
    return PlatformError(f"files missing under {src_dir} (an incomplete copy?): {what}; copy the dataset again")


def _names(raw: Any, length: int) -> tuple[str, ...]:
    """lerobot writes names as a list, a one-entry dict of lists, or null."""
    if isinstance(raw, dict) and len(raw) == 1:
        raw = next(iter(raw.values()))
    if isinstance(raw, (list, tuple)) and len(raw) == length and all(isinstance(n, str) for n in raw):
        return tuple(raw)
    return ()


def _kinds(key: str, spec: Mapping[str, Any], shape: tuple[int, ...]) -> tuple[str, ...]:
    """The joint kinds an export wrote into the feature's entry (`KINDS_KEY`); () where it
    wrote none (lerobot's own datasets), as before kinds were exported. StoreError (one
    line) for kinds that do not fit the feature: a list per dimension of revolute, linear
    or gripper."""
    kinds = spec.get(KINDS_KEY)
    if kinds is None:
        return ()
    if (not isinstance(kinds, list) or len(shape) != 1 or len(kinds) != shape[0]
            or not all(kind in JOINT_KINDS for kind in kinds)):
        raise StoreError(f"info.json's {key} has {KINDS_KEY} {kinds!r}; give one of {', '.join(JOINT_KINDS)} per "
                         f"entry of its shape {list(shape)}, or remove it (nothing was imported)")
    return tuple(kinds)


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
    """lerobot features as store features, with the joint kinds an export wrote (`_kinds`);
    bookkeeping and text columns are left out, and so is `next.success`, which becomes the
    episodes' success marks. StoreError (one line) for a feature kept whose name is not a
    plain one (`require_plain_names`): the name becomes the store's folder data/<name>, and
    one with a '/' (an absolute path, '..') put the frames outside the store; lerobot
    writes none."""
    features: dict[str, Feature] = {}
    for key, spec in lerobot_spec.items():
        dtype = spec.get("dtype")
        if key in LEROBOT_BOOKKEEPING or key == SUCCESS_KEY:
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
        features[key] = Feature(str(np.dtype(dtype)), shape, FeatureKind.NUMERIC, names, _kinds(key, spec, shape))
    require_plain_names(features, "lerobot feature", "this info.json was not written by lerobot; nothing was imported")
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
    (`settings`, the store's defaults if None). Episodes get no start time (0.0: lerobot
    keeps none), so every import of one dataset holds the same episodes. Raises
    StoreError, before a store is made, for an episode whose video holds fewer or more
    frames than rows (lerobot would pair its rows with other rows' frames), for depth
    cameras (not colour pictures) and for a `store_path` inside a store's folder;
    PlatformError for a folder lerobot cannot read, naming the first missing file of an
    incomplete copy, or the first video that does not read (cut short, empty).
    """
    src_dir, store_path = Path(src_dir), Path(store_path)
    _check_lerobot_dir(src_dir)
    require_outside_stores(store_path, "imported dataset")
    LeRobotDataset = _import_lerobot()
    _require_complete(src_dir)
    if name_taken(store_path):
        raise _exists(store_path)
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
        if type(exc).__name__ == "OfflineModeIsEnabled":  # lerobot asked the hub for a file it lacks
            raise _missing(src_dir, "lerobot found some of its files missing and went to the hub for them "
                                    "(offline here)") from None
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise PlatformError(f"{src_dir} could not be read as a LeRobotDataset: {type(exc).__name__}: {first}") from exc
    if depth := list(getattr(dataset.meta, "depth_keys", []) or []):
        # Decoded as millimetres, then scaled as if in [0, 1]: every pixel 255.
        raise StoreError(f"{src_dir}: depth camera(s) {', '.join(depth)} cannot be imported (this store keeps "
                         "colour frames); drop them from the dataset first")
    features = store_features(dataset.meta.features)
    if not features:
        raise StoreError(f"{src_dir} has no numeric or camera features to import")
    from shallowpi.data.lerobot_verify import UnreadableVideo, video_frame_counts

    try:
        for position, key, frames, rows, _ in video_frame_counts(dataset, src_dir):
            if frames != rows:
                raise StoreError(f"{src_dir}: episode {position} has {rows} rows but its {key} video holds {frames} "
                                 "frames: lerobot would pair its rows with the wrong frames (a frame the encoder "
                                 "dropped); nothing was imported")
    except UnreadableVideo as exc:  # cut short or empty: what an interrupted copy leaves
        raise _missing(src_dir, f"{exc.path.relative_to(src_dir)} does not read as a video ({exc.why})") from None
    successes = episode_successes(dataset)
    if successes is None:
        log.warning("%s has no %s column: every imported episode is unmarked, so "
                    "policy.train.successful_only keeps them all", src_dir.name, SUCCESS_KEY)
    episode_of_row = np.asarray(dataset.hf_dataset["episode_index"])
    robot = dataset.meta.robot_type or ""
    # Numbers straight from the parquet columns (Arrow), in their own dtype: lerobot's item
    # transform makes every value a float32 tensor, and so does the dataset's "numpy" format
    # under it; either cut a float64 feature's precision.
    columns = dataset.hf_dataset.with_format("arrow")

    total = len(dataset)
    _report(progress, 0, total)
    # Built beside its name and renamed into place whole, under the name's claim: two imports
    # (or an import and a recording) into one name built in one fixed folder.
    with claim_new(store_path, suffix=STAGING_SUFFIX) as built:
        if name_taken(store_path):  # made while this import waited for the claim
            raise _exists(store_path)
        with EpisodeStore.create_unpublished(built, features, settings) as store:
            row = 0
            while row < total:
                episode = int(episode_of_row[row])
                stop = row
                while stop < total and int(episode_of_row[stop]) == episode:
                    stop += 1
                _import_episode(dataset, columns, store, features, row, stop, robot,
                                None if successes is None else successes[episode])
                row = stop
                _report(progress, row, total)
            durable = store.settings.durable
        # Its episodes were synced as they were committed.
        EpisodeStore.publish(built, store_path, durable).close()
    return store_path


def _exists(store_path: Path) -> StoreError:
    return StoreError(f"{store_path} already exists; choose another dataset name")


def _item(dataset: Any, index: int) -> Any:
    """lerobot's row `index`; StoreError (one line) when it cannot give it: a frame off its
    timestamp beyond lerobot's tolerance (FrameTimestampError, many lines), an unreadable
    video, a decoder without the video's codec."""
    try:
        return dataset[index]
    except Exception as exc:  # lerobot's and torchcodec's own types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StoreError(f"lerobot cannot read row {index} of the dataset: {type(exc).__name__}: {first_line}") \
            from exc


def _import_episode(dataset: Any, columns: Any, store: EpisodeStore, features: Mapping[str, Feature],
                    start: int, stop: int, robot: str, success: bool | None) -> None:
    """Rows start:stop of `dataset` as one episode, marked `success`: numbers from
    `columns` (its parquet columns as Arrow), camera frames and tasks from lerobot's items."""
    table = columns[start:stop]
    rows = {key: np.asarray(table.column(key).to_pylist())
            for key, feature in [*features.items(), ("timestamp", None)]
            if feature is None or feature.kind is not FeatureKind.IMAGE}
    first = _item(dataset, start)
    tasks = [str(first.get("task", ""))]
    # lerobot keeps no time of recording: 0.0 says so (the import's own clock made every
    # import of one dataset look like other recordings, which a merge then took twice).
    writer = store.begin_episode(tasks[0], robot=robot, fps=float(dataset.fps), start_time=UNKNOWN_START_TIME)
    with writer:  # discards the episode if anything below raises
        for offset, index in enumerate(range(start, stop)):
            item = first if index == start else _item(dataset, index)
            task = str(item.get("task", ""))
            if task not in tasks:
                tasks.append(task)
            values = {key: _to_store_value(feature, item[key] if feature.kind is FeatureKind.IMAGE else rows[key][offset])
                      for key, feature in features.items()}
            writer.add_frame(values, float(rows["timestamp"][offset]))
        if len(tasks) > 1:  # training reads one task an episode
            log.warning("episode %d changes task mid-episode (%s): it is kept as %r, which training reads for "
                        "every row; the others are in its extra", len(store), " -> ".join(repr(t) for t in tasks), tasks[0])
        # A LeRobot dataset does not count the frames its cameras lost: None, not 0.
        writer.commit(success=success, dropped_frames=None, extra={"tasks": tasks} if len(tasks) > 1 else None)
