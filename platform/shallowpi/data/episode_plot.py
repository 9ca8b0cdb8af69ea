"""One episode as a picture: a strip of camera frames and each joint's state and action.

People would rather look than read: `platform dataset show` writes this PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data.features import FeatureKind
from shallowpi.data.nonfinite import nonfinite_ranges
from shallowpi.data.row_ranges import describe_ranges
from shallowpi.data.store import TICK_KEY, EpisodeStore
from shallowpi.joints import METRIC_UNITS

UNIT_OF_KIND = {**METRIC_UNITS, "gripper": "opening, 0-1"}
FLAT = 1e-3  # a joint whose state and action span less than this never moved: one line of text
FEW = 10  # an episode of this many frames or fewer has each sample marked (a 1-frame line draws nothing)


def flat_joints(state: np.ndarray, action: np.ndarray | None) -> list[int]:
    """Indices of the joints (columns of `state`, T x J) that never moved, in state or action."""
    values = state if action is None or action.shape != state.shape else np.concatenate([state, action])
    if len(values) == 0:
        return []
    return [j for j in range(values.shape[1]) if float(np.ptp(values[:, j])) < FLAT]


def marked(values: np.ndarray) -> np.ndarray:
    """[T] bool: the samples of `values` [T] to mark: every one in an episode of FEW frames or
    fewer (lines of a point or two are invisible or look like a whole recording), else the
    finite samples with no finite neighbour (between NaNs a line has nothing to join)."""
    finite = np.isfinite(values)
    if len(values) <= FEW:
        return finite
    before = np.concatenate([[False], finite[:-1]])
    after = np.concatenate([finite[1:], [False]])
    return finite & ~before & ~after


def nonfinite_text(nonfinite: dict[str, list[list[int]]]) -> str:
    """'observation.state rows 0-24; action rows 3' (as `dataset info` lists them); '' for none."""
    return "; ".join(f"{key} rows {describe_ranges(rows)}" for key, rows in nonfinite.items())


def plot_episode(store: EpisodeStore, index: int, out: Path, frames_per_strip: int = 8,
                 units: dict[str, str] | None = None) -> Path:
    """Write `episode_figure` as a PNG at `out`, whatever its name ends in; returns `out`."""
    import matplotlib.pyplot as plt

    fig = episode_figure(store, index, frames_per_strip, units)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The format named: from a name alone matplotlib takes it from the suffix, and to a name
    # without one it adds ".png", writing a file other than the `out` returned.
    fig.savefig(out, dpi=90, format="png")
    plt.close(fig)
    return out


def episode_figure(store: EpisodeStore, index: int, frames_per_strip: int = 8,
                   units: dict[str, str] | None = None) -> Any:
    """A matplotlib Figure of episode `index`: one strip of frames per camera (each titled with its
    time in seconds), then state (solid) and action (dashed) per joint against time in
    seconds, each y axis in the joint's unit (`units`: joint name -> unit; "joint units"
    where unknown). Joints that never moved are listed in one line of text, with their
    value, instead of as flat plots. Each sample is marked in an episode of FEW frames or
    fewer. NaN/inf rows (the episode's `nonfinite`, as `dataset info` lists them; found in
    the plotted arrays for an episode recorded before that was noted) are named in the
    title, and each joint holding one says "state NaN/inf" (or action) in its corner: the
    line has a gap there, or is not drawn at all. Uses matplotlib's Agg backend (switches
    the process to it). Raises StoreError for an episode the store does not have (negative
    indices count from the end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = units or {}
    info = store.episode(index)
    start, stop = store.episode_range(index)
    cameras = [k for k, f in store.features.items() if f.kind is FeatureKind.IMAGE]
    vectors = [k for k, f in store.features.items() if f.kind is FeatureKind.NUMERIC and len(f.shape) == 1]
    state_key = "observation.state" if "observation.state" in vectors else (vectors[0] if vectors else None)
    joint_names = list(store.features[state_key].names) if state_key else []
    n_joints = store.features[state_key].shape[0] if state_key else 0
    if not joint_names:
        joint_names = [f"{state_key}[{i}]" for i in range(n_joints)]
    state = store.read(state_key, start, stop) if state_key else np.zeros((stop - start, 0))
    action = store.read("action", start, stop) if state_key and "action" in vectors else None
    if action is not None and action.shape[1] != n_joints:
        action = None
    still = flat_joints(state, action)
    moving = [j for j in range(n_joints) if j not in still]

    plot_cols = 4
    plot_rows = -(-len(moving) // plot_cols) if moving else 0
    text_rows = 1 if still else 0
    fig = plt.figure(figsize=(2.2 * max(frames_per_strip, plot_cols * 2) / 1.1,
                              1.6 * len(cameras) + 2.2 * plot_rows + 0.5 * text_rows + 0.8))
    grid = fig.add_gridspec(len(cameras) + plot_rows + text_rows, max(frames_per_strip, plot_cols),
                            height_ratios=[1.2] * len(cameras) + [1.5] * plot_rows + [0.3] * text_rows)
    ticks = store.read(TICK_KEY, start, stop)
    picks = np.unique(np.linspace(start, stop - 1, frames_per_strip).round().astype(int))
    # Tenths where the strip's frames are that far apart; a short episode's (two frames at
    # 30 Hz, 33 ms apart) were all titled "t = 0.0 s".
    gaps = np.diff(ticks[picks - start])
    digits = 1 if not gaps.size or gaps.min() >= 0.095 else 2 if gaps.min() >= 0.0095 else 3  # 3 frames at 30 Hz: 0.0999..
    for row, key in enumerate(cameras):
        for col, frame_row in enumerate(picks):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(store.read(key, int(frame_row), int(frame_row) + 1)[0])
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(key.removeprefix("observation.images."), fontsize=8)
            if row == 0:
                ax.set_title(f"t = {ticks[frame_row - start]:.{digits}f} s", fontsize=8)
    span = max(frames_per_strip, plot_cols) // plot_cols
    for n, j in enumerate(moving):
        r, c = divmod(n, plot_cols)
        ax = fig.add_subplot(grid[len(cameras) + r, c * span : (c + 1) * span])
        ax.plot(ticks, state[:, j], lw=1.2, label="state", marker="o", ms=3, markevery=list(marked(state[:, j])))
        if action is not None:
            ax.plot(ticks, action[:, j], lw=1.0, ls="--", label="action", marker="x", ms=4,
                    markevery=list(marked(action[:, j])))
        # A NaN or inf is a gap (or the whole line) matplotlib leaves out without a word.
        broken = [kind for kind, values in (("state", state), ("action", action))
                  if values is not None and not np.isfinite(values[:, j]).all()]
        if broken:
            ax.text(0.99, 0.97, "\n".join(f"{kind} NaN/inf" for kind in broken), transform=ax.transAxes,
                    ha="right", va="top", fontsize=7, color="red")
        ax.set_title(joint_names[j], fontsize=8)
        ax.set_xlabel("time (s)", fontsize=7)
        ax.set_ylabel(units.get(joint_names[j], "joint units"), fontsize=7)
        ax.tick_params(labelsize=7)
        ax.ticklabel_format(axis="y", useOffset=False, style="plain")
        if n == 0:
            ax.legend(fontsize=7, loc="best")
    if still:
        ax = fig.add_subplot(grid[len(cameras) + plot_rows, :])
        ax.axis("off")
        held = ", ".join(f"{joint_names[j]} {state[0, j]:.3g}" + (f" {units[joint_names[j]]}" if joint_names[j] in units else "")
                         for j in still)
        ax.text(0, 0.5, f"never moved ({len(still)} joint(s)): {held}", fontsize=8, va="center", wrap=True)
    success = {True: "success", False: "failure", None: "unmarked"}[info.success]
    nonfinite = info.nonfinite
    if nonfinite is None:  # recorded before episodes noted them: what the plotted arrays hold
        nonfinite = {key: ranges for key, values in ((state_key, state), ("action", action))
                     if key and values is not None and (ranges := nonfinite_ranges(values))}
    bad = f"\nNaN/inf: {nonfinite_text(nonfinite)}" if nonfinite else ""
    fig.suptitle(f"{store.path.name} episode {index}: \"{info.task}\" - {info.length} frame{'' if info.length == 1 else 's'}, "
                 f"{info.duration_s:.1f} s, {success}, {info.dropped_summary}{bad}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94 if bad else 0.97))  # room for the title (two lines with NaN/inf)
    return fig
