"""One episode as a picture: a strip of camera frames and each joint's state and action.

People would rather look than read: `platform dataset show` writes this PNG.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shallowpi.data.features import FeatureKind
from shallowpi.data.store import TICK_KEY, EpisodeStore


def plot_episode(store: EpisodeStore, index: int, out: Path, frames_per_strip: int = 8) -> Path:
    """Write episode `index` as a PNG at `out` (parents created); returns `out`.

    One row of `frames_per_strip` evenly spaced frames per camera, titled with the tick time
    (s); then one small plot per joint of `observation.state` (or the first vector
    feature) against time, with `action` dashed when it has as many columns. Uses
    matplotlib's Agg backend (switches the process to it). Raises StoreError for an episode
    the store does not have (negative indices count from the end).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = store.episode(index)
    start, stop = store.episode_range(index)
    cameras = [k for k, f in store.features.items() if f.kind is FeatureKind.IMAGE]
    vectors = [k for k, f in store.features.items() if f.kind is FeatureKind.NUMERIC and len(f.shape) == 1]
    state_key = "observation.state" if "observation.state" in vectors else (vectors[0] if vectors else None)
    joint_names = list(store.features[state_key].names) if state_key else []
    n_joints = store.features[state_key].shape[0] if state_key else 0
    if not joint_names:
        joint_names = [f"{state_key}[{i}]" for i in range(n_joints)]

    plot_cols = 4
    plot_rows = -(-n_joints // plot_cols) if n_joints else 0
    fig = plt.figure(figsize=(2.2 * max(frames_per_strip, plot_cols * 2) / 1.1, 1.6 * len(cameras) + 2.0 * plot_rows + 0.8))
    grid = fig.add_gridspec(len(cameras) + plot_rows, max(frames_per_strip, plot_cols),
                            height_ratios=[1.2] * len(cameras) + [1.4] * plot_rows)
    ticks = store.read(TICK_KEY, start, stop)
    picks = np.unique(np.linspace(start, stop - 1, frames_per_strip).round().astype(int))
    for row, key in enumerate(cameras):
        for col, frame_row in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(store.read(key, int(frame_row), int(frame_row) + 1)[0])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(key.removeprefix("observation.images."), fontsize=8)
            if row == 0:
                ax.set_title(f"t={ticks[frame_row - start]:.1f}s", fontsize=8)
    if state_key:
        state = store.read(state_key, start, stop)
        action = store.read("action", start, stop) if "action" in vectors else None
        span = max(frames_per_strip, plot_cols) // plot_cols
        for j in range(n_joints):
            r, c = divmod(j, plot_cols)
            ax = fig.add_subplot(grid[len(cameras) + r, c * span : (c + 1) * span])
            ax.plot(ticks, state[:, j], lw=1.2, label="state")
            if action is not None and action.shape[1] == n_joints:
                ax.plot(ticks, action[:, j], lw=1.0, ls="--", label="action")
            ax.set_title(joint_names[j], fontsize=8)
            ax.tick_params(labelsize=7)
            # A joint that barely moved shows as a flat line, not as magnified noise.
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
            values = state[:, j] if action is None else np.concatenate([state[:, j], action[:, j]])
            low, high = float(values.min()), float(values.max())
            if high - low < 0.02:
                middle = (low + high) / 2
                ax.set_ylim(middle - 0.05, middle + 0.05)
            if j == 0:
                ax.legend(fontsize=7, loc="best")
    success = {True: "success", False: "failure", None: "unmarked"}[info.success]
    fig.suptitle(f"{store.path.name} episode {index}: \"{info.task}\" - {info.length} frames, "
                 f"{info.duration_s:.1f} s, {success}, {info.dropped_frames} dropped", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))  # room for the title
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
