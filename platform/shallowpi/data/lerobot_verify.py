"""Check a LeRobotDataset export against the store it came from (`verify_lerobot_export`).

An encoder that drops a frame leaves a video shorter than its rows, and lerobot then pairs
rows with the wrong frames without a word; so an export counts every video's frames and
decodes a few against the store before `shallowpi.data.lerobot_export` moves it into place.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.lerobot_interop import _import_lerobot, episode_successes
from shallowpi.data.store import EpisodeStore
from shallowpi.errors import StoreError

# Episodes whose first and last frames are decoded and compared with the store.
VERIFY_EPISODES = 8
# Mean absolute error (0-255) a decoded frame may have against its own row: far above
# what AV1 or H.264 at lerobot's quality leave on camera frames (< 6 on the test frames),
# far below a black, missing or foreign frame.
MAX_FRAME_ERROR = 32.0
# A decoded frame must be at least this close to its own row as to the rows beside it,
# so that a video shifted by one frame is caught wherever neighbouring frames differ.
NEIGHBOUR_MARGIN = 1.0


class UnreadableVideo(StoreError):
    """A video file PyAV cannot open or read through (cut short, empty, no video stream):
    `path` is the file, `why` PyAV's error type. Its caller words the fix (copy the dataset
    again, run the export again)."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path} does not read as a video ({why})")
        self.path, self.why = path, why


def verify_lerobot_export(store: EpisodeStore, root: Path, repo_id: str) -> None:
    """Check that the LeRobotDataset at `root` holds `store`'s episodes frame for frame:
    as many episodes and rows, the success marks, every episode's video frames (counted in the mp4, at the
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
    first_rows = np.concatenate([[0], np.cumsum([e.length for e in episodes])])
    for position, info in enumerate(episodes):
        entry = dataset.meta.episodes[position]
        if int(entry["length"]) != info.length:
            raise StoreError(f"export of {name}: episode {info.index} has {entry['length']} rows "
                             f"for the store's {info.length}")
    marks = episode_successes(dataset)
    if marks is not None:
        for position, info in enumerate(episodes):
            if marks.get(position) != (info.success is True):
                raise StoreError(f"export of {name}: episode {info.index} is marked {info.success} but its "
                                 f"next.success says {marks.get(position)}")
    try:
        for position, key, frames, rows, seconds in video_frame_counts(dataset, root):
            if frames != rows or round(seconds * dataset.fps) != rows:
                raise StoreError(
                    f"export of {name}: episode {episodes[position].index} has {rows} rows but its {key} video "
                    f"holds {frames} frames ({seconds:.3f} s at {dataset.fps} fps); lerobot would pair rows "
                    "with the wrong frames, so nothing was exported: run the export again"
                )
    except UnreadableVideo as exc:
        raise StoreError(f"export of {name}: {exc.path.relative_to(root)} does not read as a video ({exc.why}); "
                         "nothing was exported: run the export again") from None
    sample = np.unique(np.linspace(0, len(episodes) - 1, min(VERIFY_EPISODES, len(episodes))).round().astype(int))
    for position in sample:
        info = episodes[int(position)]
        start = store.episode_range(info.index)[0]
        for offset in (0, info.length - 1):
            _compare_frame(dataset, store, int(first_rows[position]) + offset, start + offset, info.index)


def video_frame_counts(dataset: Any, root: Path) -> Iterator[tuple[int, str, int, int, float]]:
    """For each episode (by position) and video camera of the LeRobotDataset `dataset` at
    `root`: (position, camera, frames its mp4 holds in the episode's span, the episode's
    rows, the span's seconds). A span holding fewer frames than rows makes lerobot pair
    every later row with the next row's frame (its decoder takes the nearest one).
    Raises UnreadableVideo for a video file PyAV cannot read through (cut short, empty)."""
    fps = dataset.fps
    half = 0.5 / fps
    frame_times: dict[Path, np.ndarray] = {}
    for position in range(dataset.num_episodes):
        entry = dataset.meta.episodes[position]
        for key in dataset.meta.video_keys:
            path = root / dataset.meta.get_video_file_path(position, key)
            if path not in frame_times:
                frame_times[path] = _frame_times(path)
            start = float(entry[f"videos/{key}/from_timestamp"])
            stop = float(entry[f"videos/{key}/to_timestamp"])
            times = frame_times[path]
            frames = int(np.count_nonzero((times >= start - half) & (times < stop - half)))
            yield position, key, frames, int(entry["length"]), stop - start


def _frame_times(path: Path) -> np.ndarray:
    """Presentation times (s) of every frame in an mp4, read from its packets (no decoding).
    UnreadableVideo for a file PyAV cannot read through."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnreadableVideo(path, "no video stream")
            stream = container.streams.video[0]
            times = [float(p.pts * stream.time_base) for p in container.demux(stream) if p.pts is not None]
    # PyAV's errors are ValueErrors (InvalidDataError) or OSErrors by type: the CLI took
    # them for a bug and printed a traceback.
    except (av.error.FFmpegError, OSError) as exc:
        raise UnreadableVideo(path, type(exc).__name__) from None
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
        gaps = np.abs(rows - rows[store_row - lo][None]).mean(axis=(1, 2, 3))
        own = errors[store_row - lo]
        if frame_mismatch(errors, gaps, store_row - lo):
            raise StoreError(
                f"export of {store.path.name}: {key} frame of row {row} (episode {episode}) differs from "
                f"its row by {own:.1f} levels (rows beside it: {', '.join(f'{e:.1f}' for e in errors)}); "
                "nothing was exported: run the export again"
            )


def frame_mismatch(errors: np.ndarray, gaps: np.ndarray, own: int) -> bool:
    """Whether a decoded frame is not its row's: `errors[i]` is its mean absolute error
    (0-255) against store row i of a few consecutive rows, `gaps[i]` that row's against
    the frame's own row `own`.

    It is not when it is far from its row (MAX_FRAME_ERROR), or when a neighbouring row
    matches it better although that row is told apart from its own through the codec
    (gap above the codec's error on it): a video shifted by a frame. A neighbour closer to
    the own row than the codec's error is no evidence either way: on tiny or still frames
    (16x16 renders at H.264's quality: error ~12, consecutive rows ~4 apart) such a
    neighbour often matches a little better by chance, every export the same.
    """
    if errors[own] > MAX_FRAME_ERROR:
        return True
    return any(errors[i] + NEIGHBOUR_MARGIN < errors[own] and gaps[i] > errors[i]
               for i in range(len(errors)) if i != own)

