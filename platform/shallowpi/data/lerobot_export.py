"""Export an `EpisodeStore` as a local LeRobotDataset (`export_lerobot`).

The store's cameras become mp4 videos in the first codec of VIDEO_CODECS whose encoder
takes their size (`choose_video_codec`), rows are fed to lerobot in blocks, and the
result is checked against the store (`shallowpi.data.lerobot_verify`) before it is
moved into place. What export and import share lives in `shallowpi.data.lerobot_interop`.
"""

from __future__ import annotations

import logging
import math
import shlex
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from shallowpi.data.features import Feature, FeatureKind
from shallowpi.data.lerobot_interop import (
    SUCCESS_FEATURE,
    SUCCESS_KEY,
    Progress,
    _claim_destination,
    _import_lerobot,
    _move_into_place,
    _quiet_datasets,
    _report,
    _video_backend,
    lerobot_features,
)
from shallowpi.data.lerobot_verify import verify_lerobot_export
from shallowpi.data.row_ranges import describe_indices, describe_ranges
from shallowpi.data.store import EpisodeStore
from shallowpi.data.store_files import require_intact
from shallowpi.durable_files import give_umask_modes
from shallowpi.errors import StoreError

log = logging.getLogger(__name__)

# Rows read from the store at once per camera: bounds memory on long episodes.
READ_BLOCK = 64
# A joint vector's per-joint kinds (revolute, linear, gripper) in its info.json feature entry,
# read back by `lerobot_import`. lerobot has no field for them (it keeps an entry's other keys
# and reads none), and without them an import took a gripper for a revolute joint: trained
# as an offset under policy.actions=delta, plotted in rad.
KINDS_KEY = "shallowpi_joint_kinds"


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


# lerobot's default codec first; H.264 takes the small sizes SVT-AV1 crashes on.
VIDEO_CODECS = ("libsvtav1", "h264")
# Probed once a process: an encoder's answer for a size is the same at every try. A probe
# whose child ended for outside causes (`died_of_outside_causes`) gave no answer and is
# never kept: cached, it refused that size for the life of a notebook's kernel.
_refusals: dict[tuple[str, int, int], str | None] = {}


def _camera_sizes(features: Mapping[str, Feature]) -> dict[str, tuple[int, int]]:
    """(width, height) of each camera."""
    return {k: (f.shape[1], f.shape[0]) for k, f in features.items() if f.kind is FeatureKind.IMAGE}


def choose_video_codec(store: EpisodeStore) -> str:
    """The first of VIDEO_CODECS that encodes every camera size of `store`, asked of the
    encoder itself in a child process (see shallowpi.data.video_probe: SVT-AV1 dies of
    SIGFPE below 25 pixels of width, libx264 refuses odd sizes). Raises StoreError naming
    the cameras and sizes when none does, ChildCrashed when a probe's child ended with no
    answer for outside causes (killed, or it could not start): nothing is written then."""
    from lerobot.configs.video import RGBEncoderConfig

    from shallowpi.data.isolated import ChildCrashed, died_of_outside_causes
    from shallowpi.data.video_probe import encoder_refusal

    sizes = _camera_sizes(store.features)
    why: dict[str, list[str]] = {}
    for codec in VIDEO_CODECS:
        encoder = RGBEncoderConfig(vcodec=codec)
        options = encoder.get_codec_options(as_strings=True)
        for width, height in sorted(set(sizes.values())):
            if (codec, width, height) not in _refusals:
                refusal = encoder_refusal(codec, encoder.pix_fmt, options, width, height)
                if refusal is not None and died_of_outside_causes(refusal):
                    # Said as the crash it is: as a refusal it read "no video encoder takes
                    # 64x64 ... record at an even width and height of at least 32x32".
                    raise ChildCrashed(f"checking the {codec} video encoder at {width}x{height} for {store.path.name}",
                                       f"{refusal}; nothing was exported: run it again, and report it if it repeats")
                _refusals[codec, width, height] = refusal
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


def _require_finite(store: EpisodeStore) -> None:
    """StoreError naming the first episode whose numbers hold NaN/inf, and how many do. The
    numeric arrays are read and scanned (cheap beside the frames): the per-episode record
    of NaN/inf rows exists only for episodes committed since the writer kept it."""
    from shallowpi.data.nonfinite import nonfinite_ranges

    arrays = {key: store.read(key, 0, store.num_frames) for key, feature in store.features.items()
              if feature.kind is FeatureKind.NUMERIC}
    bad = [(e, key, ranges) for e in range(len(store)) for key, values in arrays.items()
           if (ranges := nonfinite_ranges(values[slice(*store.episode_range(e))]))]
    if bad:
        episode, key, ranges = bad[0]
        more = f" (and {len(bad) - 1} more episode arrays)" if len(bad) > 1 else ""
        raise StoreError(f"{store.path.name} episode {episode}: {key} holds NaN/inf at rows {describe_ranges(ranges)}"
                         f"{more}; lerobot's statistics would be NaN: delete it first (`platform dataset delete "
                         f"{shlex.quote(str(store.path))} --episode {episode}`)")


def _warn_unmarked(store: EpisodeStore) -> None:
    """Warn when some episodes carry a success mark and others none: `next.success` has no
    "unmarked", so the unmarked ones leave as failed."""
    unmarked = [e.index for e in store.episodes if e.success is None]
    if unmarked and len(unmarked) < len(store):
        log.warning("%s: %d of %d episodes have no success mark (%s); lerobot's %s cannot say "
                    "'unmarked', so they are exported as failed", store.path.name, len(unmarked), len(store),
                    describe_indices(unmarked), SUCCESS_KEY)


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

    Refused (StoreError, before anything is written) for a damaged store or one whose
    numbers hold NaN/inf (recorded per episode at commit): lerobot would average them into
    meta/stats.json, and its normalisation would make every sample NaN.

    Success marks become lerobot's `next.success` column (`shallowpi.data.lerobot_interop`);
    unmarked episodes beside marked ones are exported as failed, with a warning.

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
        _require_finite(store)
        _warn_unmarked(store)
        repo_id = repo_id or f"local/{store_path.stem}"
        fps = _dataset_fps(store)
        codec = choose_video_codec(store) if _camera_sizes(store.features) else VIDEO_CODECS[0]
    what = f"exporting {store_path.name} ({codec} video encoder)"
    with _claim_destination(out_dir, "export directory") as staging:  # removed with what is left in it
        try:
            run_isolated(_export_into, store_path, staging, repo_id, fps, codec, what=what, progress=progress)
        except ChildCrashed as exc:
            raise ChildCrashed(what, f"{exc.how}; nothing was written to {out_dir} and the store is untouched: "
                                     "run it again, and report it if it repeats") from None
        # lerobot encodes each video into a NamedTemporaryFile (0600) and moves it in: the
        # export's videos were the user's alone, whatever the umask gave its other files.
        give_umask_modes(staging)
        _move_into_place(staging, out_dir, "export directory")
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
        marked = any(e.success is not None for e in store.episodes)
        features = lerobot_features(store.features) | ({SUCCESS_KEY: SUCCESS_FEATURE} if marked else {})
        for key, feature in store.features.items():
            if feature.kinds:  # lerobot keeps the entry's other keys in info.json and reads none of them
                features[key] = {**features[key], KINDS_KEY: list(feature.kinds)}
        total, done = store.num_frames, 0
        _report(progress, 0, total)
        dataset = LeRobotDataset.create(
            repo_id, fps=fps, features=features, root=staging,
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
                    rows = store.read_many(keys, block, end)  # the store looked at once, not once a key
                    if store.action_offset and "action" in rows:
                        rows["action"] = _following_actions(store, block, end, stop)
                    if marked:
                        # The mark is the episode's outcome, known as of its last frame.
                        rows[SUCCESS_KEY] = (np.arange(block, end) == stop - 1)[:, None] & (info.success is True)
                    for i in range(end - block):
                        dataset.add_frame({**{k: v[i] for k, v in rows.items()}, "task": info.task})
                        done += 1
                        _report(progress, done, total)
                # One camera after another in this process: a crash in the encoder then
                # ends this process, which the parent reports, rather than a pool worker
                # whose death would surface as a BrokenProcessPool traceback.
                dataset.save_episode(parallel_encoding=False)
        finally:
            dataset.finalize()
        verify_lerobot_export(store, staging, repo_id)


def _following_actions(store: EpisodeStore, start: int, end: int, stop: int) -> np.ndarray:
    """Rows start..end of a format-1 store's actions as lerobot pairs them: the action sent
    after each observation, i.e. one row later (the episode's last action repeated)."""
    offset = store.action_offset
    actions = store.read("action", min(start + offset, stop - 1), min(end + offset, stop))
    missing = (end - start) - len(actions)
    return np.concatenate([actions, np.repeat(actions[-1:], missing, axis=0)]) if missing else actions
