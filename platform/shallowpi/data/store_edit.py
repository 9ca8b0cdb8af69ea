"""Editing whole stores: delete episodes (by compaction), drop the last one (in place),
copy episodes between stores, merge.

Each edit goes through the same crash-safe commit as a recording (data/store.py). A
delete writes the kept episodes into `<name>.zarr.compacting` beside the store and swaps
it in with two renames; `EpisodeStore.open` finishes a swap cut between them. What else
the store's folder holds (a README, videos, another store) is moved into the compacted
copy on the way, so a delete removes only episodes; a new store, merge or export is
refused inside a store's folder (`require_outside_stores`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import shutil
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from shallowpi.data.codecs import LOSSLESS_IMAGE_CODECS
from shallowpi.data.durable_io import (
    LOCK_NAME,
    NotRegularFile,
    open_regular,
    release_writer_lock,
    take_writer_lock,
)
from shallowpi.data.features import Feature, FeatureKind, check_joint_kinds
from shallowpi.data.store import (
    EPISODES_DIR,
    PROVENANCE_DIR,
    TICK_KEY,
    TIMESTAMP_SUFFIX,
    EpisodeInfo,
    EpisodeStore,
    StoreSettings,
    check_mixing,
)
from shallowpi.data.store_claim import claim_new, require_outside_stores
from shallowpi.data.store_cuts import with_cut
from shallowpi.data.store_files import require_intact
from shallowpi.data.store_rules import StoreSummary
from shallowpi.data.store_swap import (
    COMPACTING_SUFFIX,
    OLD_SUFFIX,
    SWAPPED_OUT,
    name_taken,
    remove_swapped_out,
)
from shallowpi.deferred_signals import deferred_signals
from shallowpi.durable_files import PARTIAL_SUFFIX, fsync_path
from shallowpi.errors import StoreError

log = logging.getLogger(__name__)

COMPLETE = ".complete"  # marks the compacted copy whole: a swap cut short puts it in (store_swap.py)
# What a store writes at the top of its folder: zarr's group files, its arrays, the episodes'
# metadata, the sessions' provenance (copied by `carry_provenance`), its writer lock and the
# swap's marks. Anything else there is the user's, and a delete carries it over.
STORE_ENTRIES = frozenset({".zattrs", ".zgroup", "data", "meta", EPISODES_DIR, PROVENANCE_DIR, LOCK_NAME,
                           SWAPPED_OUT, COMPLETE})


def delete_episodes(store: EpisodeStore, indices: Sequence[int], swapped: Callable[[], None] | None = None) -> None:
    """Remove episodes from `store` (open for writing) and compact its arrays. `swapped` is
    called once the compacted copy has taken the store's name, the moment the delete is
    done, with Ctrl-C, SIGTERM and SIGHUP held from the first rename until it returns: a
    command says "deleted" there, so no interruption after the renames leaves a user who
    runs the delete again (and removes the episode that took the deleted one's index).

    Costs a copy of the kept episodes' rows; camera frames are linked (or copied) as their
    encoded bytes. The copy keeps the store's format (and so its row pairing) and what it
    allowed to mix. What else the store's folder holds (a README, videos, a store nested
    in it: `foreign_entries`) is renamed into the copy by the swap, not copied.
    Raises StoreError on an index the store does not have, or on damage in a kept episode
    (a chunk file gone, rows that fail their checksums): the rewrite would record what zarr
    reads there (zeros) as data, with fresh checksums. Damage inside the deleted episodes
    is no obstacle: their rows are not read. The store is left as it was.
    """
    _require_no_take(store)
    require_not_a_link(store.path)
    drop = {store.resolve_index(i) for i in indices}
    keep = [i for i in range(len(store)) if i not in drop]
    require_intact(store, dropping=drop)
    _require_old_free(store.path)  # before the copy, not after it
    staging = store.path.with_name(store.path.name + COMPACTING_SUFFIX)
    shutil.rmtree(staging, ignore_errors=True)
    settings = store.settings  # as its header has them: a store made before settings were checked keeps its own
    try:
        # Beside a store kept in another's folder; with the header keys a newer version wrote,
        # which this one does not know (its commit record summarises what the copy changes).
        with EpisodeStore.create(staging, store.features, settings, version=store.version,
                                 inside_a_store=True, copy_of=store) as compacted:
            if store.summary.allow_mixed_calibration:
                compacted.allow_mixed_calibration()
            for i in keep:
                _copy_episode(compacted, store, i, checked=False)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    carry_provenance([store.path], staging, settings.durable)
    (staging / COMPLETE).touch()
    take_modes_of(store.path, staging)
    fsync_path(staging)
    _swap_in(store, staging, swapped)


def take_modes_of(original: Path, copy: Path) -> None:
    """Give every folder and file of `copy` (a delete's compacted copy of the store at
    `original`) the mode bits (setgid included) and group of its namesake in `original`,
    as `cp -p` would; one without a namesake (an episode's new number) those of the
    store's folder, or of its `.zgroup` for a file. Owner and group follow too where this
    user may set them (root; a group this user is in), else stay this user's.

    The copy is made under the deleting user's umask: a group member's delete under umask
    022 of a colleague's setgid 2775 store, files 664, left it 2755 and 644, theirs, and its
    owner could no longer record into it. A camera frame linked from the store (one file
    with its namesake) is left as it is: its modes are the store's already."""
    top = original.lstat()
    probe = original / ".zgroup"
    file_like = probe.lstat() if probe.is_file() else None
    _same_modes(copy, copy.lstat(), top, top)
    for folder, folders, files in os.walk(copy):
        for name in (*folders, *files):
            path = Path(folder, name)
            made = path.lstat()
            try:
                namesake = (original / path.relative_to(copy)).lstat()
            except OSError:  # not in the store (a new number, or a file of the copy's own)
                namesake = None
            if namesake is None or stat.S_IFMT(namesake.st_mode) != stat.S_IFMT(made.st_mode):
                namesake = top if stat.S_ISDIR(made.st_mode) else file_like
            if namesake is not None and not stat.S_ISLNK(made.st_mode):
                _same_modes(path, made, namesake, top)


def _same_modes(path: Path, made: os.stat_result, like: os.stat_result, top: os.stat_result) -> None:
    """`path` (as `made` says it is) given `like`'s owner, group and mode bits, each where
    this user may set it: a group this user is not in is left as made (the store's
    folder's then, when this user is in that group), an owner only root may give."""
    if made.st_ino == like.st_ino and made.st_dev == like.st_dev:
        return  # the store's own file, linked: nothing of it is the copy's
    chowned = False
    if (made.st_uid, made.st_gid) != (like.st_uid, like.st_gid):
        for uid, gid in ((like.st_uid, like.st_gid), (-1, like.st_gid), (-1, top.st_gid)):
            try:
                os.chown(path, uid, gid, follow_symlinks=False)
            except PermissionError:  # not root, or not a member of that group: try less
                continue
            chowned = True
            break
    # After a chown, which clears a file's setuid and setgid bits, always.
    if chowned or stat.S_IMODE(like.st_mode) != stat.S_IMODE(made.st_mode):
        with contextlib.suppress(PermissionError):  # not this user's (cannot be: it made the copy)
            os.chmod(path, stat.S_IMODE(like.st_mode))


def drop_last_episode(store: EpisodeStore) -> EpisodeInfo:
    """Remove the store's last episode in place: its rows are cut, no other episode's are
    copied (the kept episodes' metadata is read once, to rebuild the commit record).

    What the recorder's d / r between takes do: no compaction (which copies every episode
    kept). One atomic write of the commit record makes the store one episode shorter;
    what is left past it (its frames, its episode_ends row, its metadata file) is then cut
    exactly as after a killed writer, and a crash in between leaves what the next open
    cuts the same way. A reader open meanwhile that read this episode is refused at its
    next read; one opened before it was committed (a training run, beside a recorder's d
    or r of a take it never saw) reads on: the commit record lists what each drop kept.
    Returns the removed episode's metadata; StoreError on an empty store.
    """
    _require_no_take(store)
    count = len(store)
    if count == 0:
        raise StoreError(f"{store.path.name} holds no episode to drop")
    if store.layout < 2:  # no commit record to shorten: compact instead
        info = store.episode(count - 1)
        delete_episodes(store, [count - 1])
        return info
    info = store.episode(count - 1)
    end = int(store._ends[count - 2]) if count > 1 else 0
    kept = _summary_without_last(store, count)
    # One more edit: a reader open meanwhile must not read the next take's frames for this one's.
    # What it kept goes with it: a reader that never saw this episode reads on (`kept_since`).
    edit = store._edits + 1
    store._write_commit_record(count - 1, end, kept, edits=edit, cuts=with_cut(store._cuts, edit, count - 1))
    store._infos.pop(count - 1, None)
    store._ends_loaded = None
    # The same cuts as the recovery after a killed writer (`EpisodeStore._recover`), without
    # its warning: this tail was committed, and is removed on purpose.
    store._truncate(end)
    store._array("meta/episode_ends").resize((count - 1,))
    (store.path / EPISODES_DIR / f"{count - 1}.json").unlink(missing_ok=True)
    return info


def _summary_without_last(store: EpisodeStore, count: int) -> StoreSummary:
    """The summary of the store's first `count - 1` episodes (`count` = its length).

    The kept episodes' values are a subset of the store's, and include the next-to-last
    episode's: when that episode alone shows every value the summary holds (a store of one
    rate, calibration and robot, the usual case), the summary stays as it is, from one
    metadata file. Otherwise every kept episode's file is read (a writable store caches
    only the latest 256: ~0.5 s at 10,000 episodes)."""
    empty = StoreSummary(allow_mixed_calibration=store.summary.allow_mixed_calibration)
    if count > 1 and empty.with_episode(store.episode(count - 2)) == store.summary:
        return store.summary
    return StoreSummary.of_episodes((store.episode(i) for i in range(count - 1)),
                                    allow_mixed_calibration=store.summary.allow_mixed_calibration)


def require_not_a_link(path: Path) -> None:
    """StoreError (one line) when the store's folder `path` is a symbolic link (datasets/
    kitchen.zarr -> /mnt/ssd/kitchen.zarr): an edit that swaps a compacted copy in for the
    folder (a delete) is refused there, and run on the folder the link names.

    Refused, not followed: the swap's crash safety rests on its names beside the store's
    (`NAME.zarr.compacting`, `NAME.zarr.old`: store_swap.py), which whoever opens `NAME.zarr`
    next looks for beside the name it was given. Done at the link, the swap renamed the link
    away and put the copy on the link's disk, leaving every episode in the real folder (the
    case this refuses). Done at the real folder, a crash between its renames would leave the
    link dangling and its copies beside the real folder, where an open through the link
    never looks (nor a reader waits for the running swap): the store would read as gone."""
    if path.is_symlink():
        raise StoreError(f"{path.name} is a link to {path.resolve()}: delete there (a delete swaps the store's "
                         "folder for a compacted copy, and would replace the link); nothing was deleted")


def _require_no_take(store: EpisodeStore) -> None:
    """StoreError unless `store` is writable with no episode being recorded: the take's
    writer fixed its first row when it began, so an edit under it would give it another
    episode's rows, or write its frames into the folder a delete removes."""
    store._require_writable()
    if store._writer is not None and store._writer.is_open:
        raise StoreError(f"{store.path.name}: an episode is being recorded; commit or discard it before "
                         "removing episodes")


def _swap_in(store: EpisodeStore, staging: Path, swapped: Callable[[], None] | None = None) -> None:
    """Replace the store's folder with `staging` and reopen `store` on it, in place; call
    `swapped` after the renames, signals held from the first rename until it returns.

    A writer lock is held throughout: the old folder's until the new one's is taken (in
    `staging`, before it moves), so no recorder can take either in between (it took the
    new store's during the old copy's removal, or wrote beside the delete, its lock on a
    file about to be removed). A crash anywhere leaves what `finish_interrupted_swap` (store_swap.py)
    completes.

    The folder's other entries (`foreign_entries`: a README, videos, a store kept in it)
    are renamed from the moved-out folder into `staging` between the two renames, and only
    then is the moved-out folder marked the swap's (`SWAPPED_OUT`: a marked copy is
    removed), so nothing but the store's own files goes with it. `staging` keeps its
    `.complete` until it has the store's name: a crash between the renames then always
    finishes the swap (going back would leave the moved entries in the compacted copy,
    which the next writer removes), and one before the mark leaves an unmarked
    `NAME.zarr.old` holding what had not moved yet, which nothing removes (the next delete
    asks for it to be renamed). A failure before the second rename puts everything back;
    StoreError (one line, the store as it was) for an entry that cannot be renamed (a
    mount point: copied instead, its files would go with the old folder).
    """
    old = store.path.with_name(store.path.name + OLD_SUFFIX)
    durable = store.settings.durable
    require_not_a_link(store.path)
    _require_old_free(store.path)
    carry = bool(foreign_entries(store.path))
    if not carry:  # nothing to take along: marked before, as the moved-out folder must be for recovery
        _mark_swapped_out(store.path, durable)
    new_lock = take_writer_lock(staging)
    moved: list[str] = []
    with deferred_signals():
        try:
            os.replace(store.path, old)
            # Listed again from the moved-out folder: an entry made after the first listing goes too.
            for name in foreign_entries(old):
                _carry_entry(old, staging, name, store.path.name)
                moved.append(name)
            if moved or carry:
                if durable:  # the entries' renames on the disk before the mark lets the old folder go
                    fsync_path(staging)
                    fsync_path(old)
                _mark_swapped_out(old, durable)
            os.replace(staging, store.path)
            (store.path / COMPLETE).unlink(missing_ok=True)
            if durable:  # the renames themselves, before the old copy can go
                fsync_path(store.path.parent)
        except BaseException:
            _undo_swap(store.path, old, staging, moved)
            release_writer_lock(new_lock[0])
            raise
        if swapped is not None:
            swapped()
    release_writer_lock(store._lock_fd, clean=True)  # the old folder's, now beside it
    store._lock_fd = None  # released: a close() after a failure below must not release its number again
    # The new lock goes to the reopened store (released by open() if it fails); the old copy
    # goes last, so an interrupt there leaves only a folder the next swap removes.
    reopened = EpisodeStore.open(store.path, mode="a", _locked=(new_lock[0], False))
    store.__dict__.update(reopened.__dict__)
    shutil.rmtree(old, ignore_errors=True)


def foreign_entries(folder: Path) -> list[str]:
    """Names at the top of the store folder `folder` that the store did not write (not in
    `STORE_ENTRIES`, nor a killed write's `<its name>.<...>.partial`): a README, videos, a
    store kept inside it. A delete carries them into its compacted copy."""
    def own(name: str) -> bool:
        return name in STORE_ENTRIES or (name.endswith(PARTIAL_SUFFIX)
                                         and any(name.startswith(e + ".") for e in STORE_ENTRIES))

    return sorted(entry.name for entry in os.scandir(folder) if not own(entry.name))


def _carry_entry(old: Path, staging: Path, name: str, store_name: str) -> None:
    """Rename `old/name` to `staging/name`; StoreError (one line) when it cannot be: a
    mount point, or anything not on the store's file system (it would have to be copied,
    and the old folder's removal would then delete what the mount holds)."""
    try:
        os.rename(old / name, staging / name)
    except OSError as exc:
        raise StoreError(f"{store_name}: a delete must move {name} (not the store's own) from the store's folder "
                         f"into its compacted copy and cannot ({exc.strerror}: a mount point?); move it out of "
                         f"{store_name}, then delete again; nothing was deleted") from None


def _mark_swapped_out(folder: Path, durable: bool) -> None:
    """Mark `folder` as the copy a swap moved out (`SWAPPED_OUT`), which the store's next
    writer removes; synced when `durable`: recovery restores only a marked copy."""
    (folder / SWAPPED_OUT).touch()
    if durable:
        fsync_path(folder)


def _undo_swap(path: Path, old: Path, staging: Path, moved: Sequence[str]) -> None:
    """Put the store back after a swap that failed before its second rename: the carried
    entries (`moved`) go back into the moved-out folder, which takes the store's name
    again, unmarked, and the compacted copy loses its `.complete` (renamed or removed by
    hand later, the store must not be replaced by it). Nothing is undone after the second
    rename: the delete is done. Best effort: a failure here leaves what the next open
    completes (`finish_interrupted_swap`: the copy goes in, the entries with it)."""
    try:
        if not path.exists() and old.is_dir():
            for name in reversed(moved):
                os.rename(staging / name, old / name)
            os.replace(old, path)
        if not old.exists():  # the store is the one it was
            (path / SWAPPED_OUT).unlink(missing_ok=True)
            (staging / COMPLETE).unlink(missing_ok=True)
    except OSError:
        pass  # the error being raised says what went wrong first


def _require_old_free(path: Path) -> None:
    """StoreError when `NAME.zarr.old`, where a delete's swap moves the store for a moment,
    holds something that is no swap's leftover (a copy made by hand under that name)."""
    remove_swapped_out(path)
    old = path.with_name(path.name + OLD_SUFFIX)
    if old.exists():
        raise StoreError(f"{old} exists and is no delete's leftover (a copy made by hand?); a delete moves the "
                         "store there for a moment: rename that folder, then delete again")


def append_episode_from(store: EpisodeStore, source: EpisodeStore, index: int) -> EpisodeInfo:
    """Copy one committed episode of `source` into `store`, crash-safely.

    Frames whose encoding matches this store's are linked, or copied where links cannot be
    made, as their encoded bytes (no re-encode).
    Raises StoreError if the stores differ in features (joint kinds included, where both
    give them) or row pairing, or the episode's fps or calibration may not join `store`
    (`check_mixing`).
    """
    return _copy_episode(store, source, index, checked=True)


def _copy_episode(store: EpisodeStore, source: EpisodeStore, index: int, checked: bool) -> EpisodeInfo:
    store._require_writable()
    _check_joint_kinds(store, source)
    if source.features != store.features:
        raise StoreError(f"{source.path.name} and {store.path.name} hold different features; they cannot be merged")
    check_same_pairing(store, source)
    info = source.episode(index)
    start, stop = source.episode_range(index)
    begin = store.begin_episode if checked else store._begin_unchecked
    writer = begin(info.task, robot=info.robot, calibration_id=info.calibration_id,
                   fps=info.fps, start_time=info.start_time)
    try:
        writer.add_frames_from(source, start, stop)
        copied = writer.commit(success=info.success, dropped_frames=info.dropped_frames,
                               extra=info.extra, duration_s=info.duration_s, expect_checksums=info.checksums)
    except StoreError as err:
        if writer.is_open:
            writer.discard()
        raise StoreError(f"{source.path.name} episode {index}: {err}") from None
    except BaseException:
        if writer.is_open:
            writer.discard()
        raise
    if info.unknown:
        # The keys a newer version wrote, which the commit (of this version's fields) leaves
        # out. A second write: a delete's and a merge's copy are published whole, after it.
        copied = dataclasses.replace(copied, unknown=dict(info.unknown))
        store._rewrite_episode(copied)
    return copied


def refuse_repeats(sources: Sequence[EpisodeStore], allow_repeated_scenes: bool = False) -> None:
    """StoreError when `sources` hold one episode twice: a store given twice (by path), or
    one recorded episode in two of them: the same start time, length and checksums (a copy
    of a store, or a merged store beside one of its parts) or, where either start time is
    not known (`start_known`: an import), the same length and numbers (`_numbers`: two
    imports of one LeRobot dataset, or an import of a store's export beside the store).
    Unless `allow_repeated_scenes`, also two twin episodes of one scene (the same task and
    scene seed, `extra.seed`), as two stores recorded from the same first seed hold:
    merged, such a scene would be trained on twice and could land on both sides of a
    held-out split, which would then score what training saw (rollouts of two policies on
    the same seeds are such scenes on purpose). An episode a single store already holds
    twice is left as it is: the merge adds no copy."""
    paths: dict[Path, str] = {}
    # (start time, length, checksums) of the episodes whose start time is known, and
    # (length, numbers) of every episode: -> (source position, store name, episode index)
    recorded: dict[tuple, tuple[int, str, int]] = {}
    numbers_seen: dict[tuple, list[tuple[bool, int, str, int]]] = {}
    scenes: dict[tuple[str, int], tuple[str, int]] = {}
    for position, source in enumerate(sources):
        name = source.path.name
        if (where := Path(source.path).resolve()) in paths:
            raise StoreError(f"{name} is given twice: merged, every episode of it would be there twice")
        paths[where] = name
        for info in source.episodes:
            known = start_known(info)
            same: tuple[int, str, int] | None = None
            if known and info.checksums:
                recording = (info.start_time, info.length, tuple(sorted(info.checksums.items())))
                same = recorded.setdefault(recording, (position, name, info.index))
                if same[0] == position:
                    same = None
            if same is not None:
                raise StoreError(f"{same[1]} episode {same[2]} and {name} episode {info.index} are one recording "
                                 f"(a copy of a store, or a merged store beside one of its parts): merged, it "
                                 "would be there twice")
            if numbers := _numbers(info):
                entries = numbers_seen.setdefault((info.length, numbers), [])
                for other_known, other_position, other, index in entries:
                    if other_position != position and not (known and other_known):
                        raise StoreError(
                            f"{other} episode {index} and {name} episode {info.index} hold the same numbers, and "
                            "one of them has no recording time (two imports of one LeRobot dataset, or an import "
                            "beside the store it was exported from): merged, it would be there twice")
                entries.append((known, position, name, info.index))
            scene = info.scene
            if scene is None or allow_repeated_scenes:
                continue
            if scene in scenes:
                other, index = scenes[scene]
                raise StoreError(
                    f"{other} episode {index} and {name} episode {info.index} are the same scene (seed {scene[1]}, "
                    f"{scene[0]!r}): merged, it would be trained on twice and could sit on both sides of a held-out "
                    "split; record one store again from other seeds (`platform record --seed N`), or pass "
                    "--allow-repeated-scenes (rollouts of two policies on the same seeds)")
            scenes[scene] = (name, info.index)


def start_known(info: EpisodeInfo) -> bool:
    """Whether `info.start_time` says when the episode was recorded: not for an import
    (`EpisodeInfo.imported`), whose start_time is 0.0 or the import's own clock."""
    return bool(info.start_time) and not info.imported


def _numbers(info: EpisodeInfo) -> tuple[tuple[str, str], ...]:
    """The checksums of the episode's numeric features (state, action, ...), sorted: what
    an export to LeRobot and back keeps bit for bit, unlike the tick and capture times
    (lerobot derives them from the frame index). Empty for a store of cameras alone,
    whose times are all its checksums say."""
    return tuple(sorted((key, value) for key, value in info.checksums.items()
                        if key != TICK_KEY and not key.endswith(TIMESTAMP_SUFFIX)))


def merge(sources: Sequence[EpisodeStore], out: str | os.PathLike[str],
          allow_mixed_calibration: bool = False, allow_repeated_scenes: bool = False) -> EpisodeStore:
    """A new store at `out` holding every episode of `sources`, in order.

    Refused before anything is written when a source is damaged (`require_intact`), when
    the sources differ in features (joint kinds included, where two give them: the new
    store keeps one list, which training and plots read), row pairing or fps, in
    calibration id unless `allow_mixed_calibration` (then recorded in the new store, as it is when a source
    already allowed it), or when a source's frames would be re-encoded by a lossy codec (the
    new store takes the first source's). A copied episode whose numbers fail their source's
    checksums stops the merge; a merge that fails removes what it made. Refused too when
    an episode would be there twice, or (unless `allow_repeated_scenes`) a twin scene
    (`refuse_repeats`). Raises StoreError.
    """
    if not sources:
        raise StoreError("nothing to merge")
    require_outside_stores(Path(out), "merged dataset")
    first = sources[0]
    held = first.summary
    for source in sources:
        require_intact(source)
    refuse_repeats(sources, allow_repeated_scenes)
    for k, other in enumerate(sources[1:], start=1):
        check_no_lossy_reencode(first, other)
        for earlier in sources[:k]:  # a store without kinds between two that differ must not hide them
            _check_joint_kinds(earlier, other)
        if other.features != first.features:
            keys = sorted({k for k, _ in set(other.features.items()) ^ set(first.features.items())})
            raise StoreError(f"{first.path.name} and {other.path.name} differ in features {', '.join(keys)}; they cannot be merged")
        check_same_pairing(first, other)
        allowed = allow_mixed_calibration or other.summary.allow_mixed_calibration
        check_mixing(held, " + ".join(s.path.name for s in sources[:k]), other.summary.fps,
                     other.summary.calibration_ids, other.path.name, allowed)
        held = dataclasses.replace(held, fps=tuple(sorted({*held.fps, *other.summary.fps})),
                                   calibration_ids=tuple(sorted({*held.calibration_ids, *other.summary.calibration_ids})),
                                   allow_mixed_calibration=held.allow_mixed_calibration or allowed)
    out = Path(out)
    if name_taken(out):
        raise _out_exists(out)
    # Made beside `out` and renamed into place whole, under the name's claim (`claim_new`): a
    # merge killed part-way (kill -9, a power cut) left a store under the requested name that
    # checked clean and lacked episodes, and two merges into one name built in one fixed
    # folder. What a killed merge left (`NAME.zarr.<random>.creating`) is no dataset (`*.zarr`
    # only), removed by the next command that makes that name; a failed merge removes its own.
    with claim_new(out) as built:
        if name_taken(out):  # made while this merge waited for the claim
            raise _out_exists(out)
        with EpisodeStore.create_unpublished(built, _with_joint_kinds(first.features, sources), first.settings,
                                             version=first.version) as merged:
            if len(held.calibration_ids) > 1 or held.allow_mixed_calibration:
                merged.allow_mixed_calibration()
            for source in sources:
                for i in range(len(source)):
                    append_episode_from(merged, source, i)
            carry_provenance([s.path for s in sources], merged.path, first.settings.durable)
        return EpisodeStore.publish(built, out, first.settings.durable)


def _out_exists(out: Path) -> StoreError:
    return StoreError(f"{out} already exists; pick another name for the merged dataset")


def _with_joint_kinds(features: Mapping[str, Feature], sources: Sequence[EpisodeStore]) -> dict[str, Feature]:
    """`features`, each without joint kinds taking them from the first source that has
    them: unknown kinds match any (a lerobot import has none), so a merge whose first
    store lacked them dropped every other store's. Sources that give other kinds were
    refused before (`_check_joint_kinds`)."""
    out = dict(features)
    for key, feature in features.items():
        if not feature.kinds:
            found = next((s.features[key].kinds for s in sources if s.features[key].kinds), ())
            out[key] = dataclasses.replace(feature, kinds=found)
    return out


def _check_joint_kinds(into: EpisodeStore, source: EpisodeStore) -> None:
    """StoreError naming each joint whose kind `into` and `source` both give, differently:
    merged, every episode would be labelled with one store's kinds."""
    check_joint_kinds(into.features, into.path.name, source.features, source.path.name,
                      "they cannot be merged (a joint's values are in its kind's unit); keep them apart")


def check_no_lossy_reencode(into: EpisodeStore, source: EpisodeStore) -> None:
    """Raise StoreError when copying `source`'s frames into `into` would decode and encode
    them again with a lossy codec: frames copy as their bytes only when both stores encode
    them alike, and a lossy codec loses detail at every encode."""
    a, b = into.settings, source.settings
    if not any(f.kind is FeatureKind.IMAGE for f in into.features.values()):
        return
    if (a.image_codec, a.image_quality) == (b.image_codec, b.image_quality) or a.image_codec in LOSSLESS_IMAGE_CODECS:
        return
    raise StoreError(f"{source.path.name}'s frames are {_encoding(b)} and {into.path.name}'s {_encoding(a)}: merged "
                     f"into {into.path.name}'s, they would be encoded again with {a.image_codec}, losing detail; "
                     f"put {source.path.name} first if its codec is lossless, or keep the stores apart")


def _encoding(settings: StoreSettings) -> str:
    """'jpeg q90', 'blosc-zstd': a store's image encoding, for messages."""
    lossy = settings.image_codec not in LOSSLESS_IMAGE_CODECS
    return f"{settings.image_codec} q{settings.image_quality}" if lossy else settings.image_codec


def carry_provenance(sources: Sequence[Path], into: Path, durable: bool = True) -> None:
    """Copy the recording sessions' configs and logs (`PROVENANCE_DIR`) of the stores at
    `sources` into the store at `into`, so that a store rewritten by a delete or made by a
    merge still says how each of its episodes was recorded. A file whose name `into`
    already holds with other contents (two sessions started in the same second, in two
    stores) gets its source store's name added: nothing is overwritten. `durable`: each
    copy and the folder are synced, before the rename that publishes `into` (after a
    power cut they could otherwise come back empty).

    Only regular files are copied, a warning naming each other entry: a store received
    from elsewhere may hold a symbolic link there (`.shallowpi/x.yaml -> ~/.ssh/id_rsa`,
    or the folder itself), whose target a copy would put into the new store as a file of
    its own, to be shared on with it. The recorder writes only files there. What is read
    is what was checked: the folder and each file are opened without following a link
    and looked at through what was opened (`_open_folder`, `_open_regular`), so an entry
    swapped for a link or a FIFO after the listing is not carried, and nothing waits on
    a FIFO."""
    target = into / PROVENANCE_DIR
    copied = False
    for source in sources:
        folder = source / PROVENANCE_DIR
        folder_fd = _open_folder(folder)
        if folder_fd is None:
            continue
        try:
            for name in sorted(os.listdir(folder_fd)):
                item = folder / name
                kind = _entry_kind(item)
                if kind == "missing":  # removed since the listing
                    continue
                if kind != "file":
                    _not_carried(item, f"a {kind}, not a regular file")
                    continue
                copied = _carry_file(item, folder_fd, target, f"{item.stem}.{Path(source).stem}{item.suffix}",
                                     durable) or copied
        finally:
            os.close(folder_fd)
    if copied and durable:
        fsync_path(target)


def _open_folder(folder: Path) -> int | None:
    """A file descriptor of the folder `folder`, opened without following a link; None
    (warned) when it is a link or not a folder, or (silently) when there is none. Its
    entries are then opened through it: a folder swapped for a link after this open
    leaves what is read where it was."""
    try:
        return os.open(folder, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno not in (errno.ELOOP, errno.ENOTDIR):  # a link; a file
            raise
        _not_carried(folder, "not a folder of the store's own: a link, or a file")
        return None


def _open_regular(item: Path, folder_fd: int) -> BinaryIO | None:
    """`item` (named in the folder open as `folder_fd`) open for reading, if it is a regular
    file (`open_regular`); else None, warned (a symbolic link or a FIFO swapped in since it
    was looked at), or None and silent when it is gone."""
    try:
        return open_regular(item.name, dir_fd=folder_fd)
    except FileNotFoundError:  # removed since it was looked at
        return None
    except NotRegularFile:
        _not_carried(item, _SWAPPED)
        return None


_SWAPPED = "not a regular file when opened (a link or a special file put there since it was listed)"


def _carry_file(item: Path, folder_fd: int, target: Path, renamed: str, durable: bool) -> bool:
    """Copy the regular file `item` into the folder `target`, by its name, else as `renamed`,
    else as `renamed` numbered (NAME.2.yaml, ...): the first name `target` does not hold
    with other contents. Nothing there is overwritten: two sources of one stem (two labs'
    `kitchen`) with a session of the same second each keep theirs. `durable`: the copy is
    synced. Returns whether a file was written (False: `item` is no longer a regular file,
    or `target` already holds it)."""
    source = _open_regular(item, folder_fd)
    if source is None:
        return False
    with source:
        target.mkdir(exist_ok=True)
        stem, suffix = os.path.splitext(renamed)
        names = itertools.chain((item.name, renamed), (f"{stem}.{n}{suffix}" for n in itertools.count(2)))
        for name in names:
            dest = target / name
            if dest.exists():
                same = _same_contents(source, dest)
                source.seek(0)
                if same:
                    return False
                continue
            try:
                out = open(dest, "xb")  # noqa: SIM115  ("x": a name taken since the look is not overwritten)
            except FileExistsError:
                continue
            with out:
                shutil.copyfileobj(source, out)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            return True
    raise AssertionError("unreachable: the numbered names are endless")


def _same_contents(source: BinaryIO, other: Path) -> bool:
    """Whether the open file `source` (read from where it stands) holds the bytes of the
    file `other`; read in blocks, as a session's log may be long."""
    with open(other, "rb") as theirs:
        while True:
            block = source.read(1 << 20)
            if block != theirs.read(1 << 20):
                return False
            if not block:
                return True


def _entry_kind(path: Path) -> str:
    """What `path` is, the link itself not followed: "file" (regular), "symbolic link",
    "folder", or "special file" (a FIFO, a socket, a device), or "missing"."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISLNK(mode):
        return f"symbolic link to {os.readlink(path)}"
    return "folder" if stat.S_ISDIR(mode) else "special file"


def _not_carried(path: Path, why: str) -> None:
    log.warning("%s: not copied into the new store: %s (only files the recorder wrote are carried)", path, why)


def check_same_pairing(a: EpisodeStore, b: EpisodeStore) -> None:
    """Raise StoreError if `a` and `b` pair actions with observations differently."""
    if a.action_offset != b.action_offset:
        raise StoreError(f"{a.path.name} is format {a.version} and {b.path.name} format {b.version}: "
                         "they pair actions with observations differently; keep them apart")
