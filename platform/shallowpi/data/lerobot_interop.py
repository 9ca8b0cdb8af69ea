"""What export to and import from a local LeRobotDataset (lerobot 0.6) share.

Both sides name features alike (`observation.state`, `action`,
`observation.images.<role>`), so a feature keeps its name, dtype, shape and per-dimension
names across the move (`lerobot_features` here, `store_features` for the way back). The
work itself lives beside this module:

- `shallowpi.data.lerobot_export`: `export_lerobot` and the choice of video codec
  (`choose_video_codec`). lerobot derives each frame's timestamp from its index and one
  integer fps, so the store's measured tick and capture times stay behind, as do the
  calibration id and dropped-frame count (lerobot has no column for them). An episode's
  success mark becomes lerobot's own per-frame `next.success` column (the one
  `lerobot-eval` records), true on the last frame of an episode marked successful, and
  false elsewhere: lerobot has no "unmarked", so a store with no mark exports no column and
  a store that mixes marked and unmarked episodes exports the unmarked ones as failed,
  with a warning. Cameras become AV1 mp4 (lossy on top of the store's own codec), or H.264
  where the AV1 encoder cannot take their size.
- `shallowpi.data.lerobot_verify`: `verify_lerobot_export`, which checks an export
  against the store before it is moved into place.
- `shallowpi.data.lerobot_import`: `import_lerobot` and `store_features`. Per-frame task
  text is kept per episode (the first frame's; the distinct tasks go to `extra["tasks"]`
  when an episode has several). Non-numeric columns (language annotations) are skipped.
  A `next.success` column becomes the episodes' marks, an episode successful when any of
  its frames is; without one every episode is imported unmarked.

lerobot is the optional `lerobot` extra (Python >= 3.12), imported only through
`_import_lerobot` when an export or import starts. Everything is local: huggingface_hub and
datasets are held offline while lerobot works (`_offline_hub`, inside `_quiet_datasets`),
whatever `HF_HUB_OFFLINE` says and whenever huggingface_hub was imported, and put back
after (a notebook's own hub use is its own); a directory that is not a LeRobotDataset is
refused before lerobot could think of fetching it from a hub.

Export and import write beside their destination and rename it into place at the end, so
an interrupted run leaves no half-written dataset under the requested name. Export encodes
in a child process (`shallowpi.data.isolated`), so that a crash of the native encoder
removes the staging folder and ends in one line instead of killing the command.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from shallowpi.data.features import Feature, FeatureKind
from shallowpi.data.store_claim import claim_new, require_outside_stores
from shallowpi.durable_files import fsync_path, fsync_tree
from shallowpi.errors import PlatformError

Progress = Callable[[int, int], None]  # (frames done, frames in total)

# Ends the folder beside the destination while an export or import runs
# (`NAME.<random>.shallowpi-partial`, one a run); removed when a run into that name finds one
# a killed run left. Named as no folder of a user's would be (`exports/run.partial` was).
STAGING_SUFFIX = ".shallowpi-partial"

# lerobot's per-frame success column (lerobot.utils.constants.SUCCESS): true once the
# task has succeeded. It carries the store's per-episode marks across.
SUCCESS_KEY = "next.success"
SUCCESS_FEATURE = {"dtype": "bool", "shape": (1,), "names": None}


class LerobotMissingError(PlatformError):
    """The lerobot extra is not installed."""


def _import_lerobot() -> Any:
    """The LeRobotDataset class, or a one-line error saying how to get it. Use it inside
    `_quiet_datasets`, which holds the hub offline (`_offline_hub`)."""
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
    work (the caller draws its own through `progress`), and hold the hub offline
    (`_offline_hub`), then put things back. Every use of lerobot's datasets is inside it."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        with _offline_hub():
            yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@contextlib.contextmanager
def _offline_hub() -> Iterator[None]:
    """huggingface_hub and datasets offline for the block, then as they were: nothing is
    fetched from a hub here. Forced, not a default: a user's HF_HUB_OFFLINE=0 let lerobot
    download a missing file into the source folder from the hub.

    Set where they are read when a request is made, not only in the environment, which
    each reads once, at its import (huggingface_hub's `constants.HF_HUB_OFFLINE`, behind the
    `is_offline_mode()` every request of its HTTP client checks; datasets' copy of it in
    `datasets.config`): setting `HF_HUB_OFFLINE` did nothing in a process that had imported
    huggingface_hub first, and left every other process offline for good. The variable is
    set too for the block, for any process lerobot starts."""
    import datasets.config
    from huggingface_hub import constants

    saved = (constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             os.environ.get("HF_HUB_OFFLINE"))
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, env = saved
        if env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = env


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


def episode_successes(dataset: Any) -> dict[int, bool] | None:
    """Each episode's outcome in the LeRobotDataset `dataset` (by episode_index): whether
    any of its frames has `next.success`; None for a dataset without the column."""
    if SUCCESS_KEY not in dataset.meta.features:
        return None
    import numpy as np

    columns = dataset.hf_dataset.with_format("numpy")
    episodes = np.asarray(columns["episode_index"]).reshape(-1)
    success = np.asarray(columns[SUCCESS_KEY], dtype=bool).reshape(len(episodes), -1).any(axis=1)
    return {int(e): bool(success[episodes == e].any()) for e in np.unique(episodes)}


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


def _require_free(out_dir: Path, what: str) -> None:
    """PlatformError (one line) unless `out_dir` is missing or an empty folder; StoreError
    when it lies inside a store's folder (`require_outside_stores`)."""
    require_outside_stores(out_dir, what)
    if out_dir.resolve() == Path.cwd().resolve():  # `.`: a folder the export would have to remove and replace
        raise PlatformError(f"choose a new {what} (a name or a path), not the working folder itself")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise PlatformError(f"{out_dir} already exists; remove it or choose another {what}")


@contextlib.contextmanager
def _claim_destination(out_dir: Path, what: str) -> Iterator[Path]:
    """Where to write what goes to `out_dir` (missing or an empty folder, else PlatformError):
    a path in a folder beside it of this run's own, under the name's claim (`claim_new`), so
    that two runs into one destination cannot write into each other's files; the folder goes
    when the block ends. `_move_into_place` moves the result in."""
    _require_free(out_dir, what)
    with claim_new(out_dir, suffix=STAGING_SUFFIX) as built:
        _require_free(out_dir, what)  # filled while this run waited for the claim
        yield built


def _move_into_place(built: Path, out_dir: Path, what: str) -> None:
    """Rename the finished `built` folder to `out_dir` (under `_claim_destination`), its
    files synced first: a power cut must not leave a complete-looking dataset of empty files.
    PlatformError, nothing replaced, when `out_dir` was filled meanwhile by hand."""
    fsync_tree(built)
    _require_free(out_dir, what)
    with contextlib.suppress(FileNotFoundError):
        out_dir.rmdir()  # an empty folder made for it: the rename cannot replace a folder
    os.rename(built, out_dir)
    fsync_path(out_dir.parent)
