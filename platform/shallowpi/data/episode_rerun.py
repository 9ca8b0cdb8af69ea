"""One episode into Rerun, the way lerobot users look at theirs (`platform dataset view`).

Entity layout, on the timelines `time` (seconds from the episode's first row) and
`frame` (row index within the episode):

    cameras/<role>            one JPEG image a row (the store's frames, re-encoded)
    joints/<name>/state       observation.state of that joint, a scalar a row
    joints/<name>/action      the action sent for it, a scalar a row
    task, outcome             static text: the task, and success / failure / unmarked
                              with the episode's robot, length and dropped frames

Needs the `viz` extra (rerun-sdk); everything else here is the store's own reading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.features import FeatureKind
from shallowpi.data.store import TICK_KEY, EpisodeStore
from shallowpi.errors import PlatformError

JPEG_QUALITY = 90  # the viewer's images: ~10x smaller than raw RGB, indistinguishable by eye


def _rerun() -> Any:
    try:
        import rerun
    except ImportError:
        raise PlatformError("viewing needs Rerun: pip install 'shallowpi[viz]' (or pip install rerun-sdk)") from None
    return rerun


def log_episode(store: EpisodeStore, index: int, recording: Any, units: dict[str, str] | None = None) -> dict[str, int]:
    """Log episode `index` of `store` into `recording` (a `rerun.RecordingStream`).

    Returns rows logged per entity path (cameras and joints), for the caller to report.
    `units` (joint name -> unit) names each joint's plot, e.g. `joints/elbow/state`
    gets the series name "elbow state (rad)"."""
    rr = _rerun()
    units = units or {}
    info = store.episode(index)
    start, stop = store.episode_range(index)
    times = np.asarray(store.read(TICK_KEY, start, stop), dtype=np.float64)  # (T,) seconds
    frames = np.arange(stop - start)
    logged: dict[str, int] = {}

    outcome = {True: "success", False: "failure", None: "unmarked"}[info.success]
    recording.log("task", rr.TextDocument(info.task), static=True)
    recording.log("outcome", rr.TextDocument(
        f"{outcome}; episode {index} of {store.path.name}, robot {info.robot or '-'}, {info.length} frames, "
        f"{info.duration_s:.2f} s, {info.dropped_summary}"), static=True)

    joint_features = {key: f for key, f in store.features.items()
                      if key in ("observation.state", "action") and f.kind is FeatureKind.NUMERIC}
    for key, feature in joint_features.items():
        values = np.asarray(store.read(key, start, stop), dtype=np.float64)  # (T, J)
        names = list(feature.names) or [f"{key}[{j}]" for j in range(values.shape[1])]
        leaf = "state" if key == "observation.state" else "action"
        for j, name in enumerate(names):
            path = f"joints/{name}/{leaf}"
            unit = f" ({units[name]})" if name in units else ""
            recording.log(path, rr.SeriesLines(names=f"{name} {leaf}{unit}"), static=True)
            recording.send_columns(path, indexes=[rr.TimeColumn("time", duration=times),
                                                  rr.TimeColumn("frame", sequence=frames)],
                                   columns=rr.Scalars.columns(scalars=values[:, j]))
            logged[path] = len(times)

    cameras = {key: "cameras/" + key.removeprefix("observation.images.")
               for key, feature in store.features.items() if feature.kind is FeatureKind.IMAGE}
    for row in range(start, stop):
        recording.set_time("time", duration=float(times[row - start]))
        recording.set_time("frame", sequence=row - start)
        # Every camera's frame in one read: the store looked at once a frame, not once a camera.
        for key, image in store.read_many(cameras, row, row + 1).items():
            recording.log(cameras[key], rr.Image(image[0]).compress(jpeg_quality=JPEG_QUALITY))  # (H, W, C) uint8
    for path in cameras.values():
        logged[path] = stop - start
    return logged


def view_episode(store: EpisodeStore, index: int, save: Path | None = None,
                 units: dict[str, str] | None = None) -> dict[str, int]:
    """Log episode `index` to the Rerun viewer (spawned) or, with `save`, to an .rrd file.

    Raises PlatformError when there is no display to show a viewer on and no `save`, and
    when `save` is a folder (Rerun's own error for it was a RuntimeError traceback)."""
    import os

    rr = _rerun()
    info = store.episode(index)
    if save is not None and save.is_dir():
        raise PlatformError(f"{save} is a folder; name the .rrd file to write, e.g. {save / 'episode.rrd'}")
    if save is None and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise PlatformError("no display to open the Rerun viewer on: pass --save FILE.rrd, then open it with "
                            "`rerun FILE.rrd` where there is one")
    recording = rr.RecordingStream("shallowpi", recording_id=f"{store.path.stem}-episode-{info.index}")
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        recording.save(str(save))
    else:
        recording.spawn()
    try:
        return log_episode(store, info.index, recording, units)
    finally:
        recording.flush()
        recording.disconnect()
