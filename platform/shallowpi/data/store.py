"""`EpisodeStore`: recorded episodes in one zarr store, crash-safe by construction.

Layout (format version 3, zarr format 2; the README's "Dataset format" is the spec):

    <name>.zarr/
      .zattrs                   {"shallowpi": {"format", "version", "layout": 2, "features", ...}}
      data/<key>                [N, *shape]  each feature, episodes concatenated on axis 0
      data/<key>.timestamp      [N] float64  when that value was captured (episode clock, s)
      data/timestamp            [N] float64  the control tick the frame belongs to
      meta/episode_ends         [E] int64    cumulative: episode i is rows ends[i-1]:ends[i]
      meta/.zattrs              {"commit": {"episodes": E, "frames": N, ...}}  the commit record
                                (with the in-place edits so far and what each kept: `commit_record`)
      episodes/<i>.json         episode i's metadata, written once (set_success rewrites it)

This is Diffusion Policy's replay-buffer layout, so their `ReplayBuffer` (zarr-python 2)
reads `data/<key>` and `meta/episode_ends` directly; `meta/` holds nothing but zarr
entries (their copy loads every array in it), so the per-episode files sit beside it.

Crash safety. zarr writes each file by a rename (atomic against a killed process) but
grows an array's shape before it writes the new chunks, and never fsyncs (the store opens
zarr on a local store that syncs a file before it replaces one: zarr_compat.py). So the
store orders its writes and makes one atomic write the commit point:

    1. frames -> data/* (images while recording, numbers at commit), then fsync them
    2. meta/episode_ends grows by the episode's end, fsync
    3. episodes/<E>.json holds the episode's metadata, fsync
    4. meta/.zattrs says E + 1 episodes                  <- commit point (one rename)

Every write is the same size whatever the store holds, so a commit costs the same at
10 or 100,000 episodes, and so does opening: the commit record gives the episode and
frame counts, `episode_ends` and the per-episode files are read when first asked for.
The commit record also keeps what every episode must agree on (fps, calibration ids,
robots), so the rule that a store never mixes them needs no pass over the episodes.

Anything in data/, episode_ends or episodes/ past the commit record's counts is a tail
from an episode in flight, ignored by readers and cut off by the next writer that opens
the store. A SIGKILL or power cut at any instant therefore loses at most the episode
being written (a recorder's takes still queued for its writer are lost with the process).

Layout 1 (format versions 1 and 2) kept every episode's metadata as one list in
meta/.zattrs, rewritten at each commit: such stores are read as they are and moved to
layout 2 the first time they are opened for writing (data/store_layout1.py). Beside
this module: writing one episode (episode_writer.py), atomic JSON and the writer lock
(durable_io.py; the durable writes are shallowpi/durable_files.py), what may join a
store (store_rules.py), delete, copy and merge (store_edit.py), the settings a store writes
with (store_settings.py), making a new one under its name (store_claim.py), the codecs an
open lets its arrays name (store_codecs.py), and the commit record with its log of in-place
cuts (store_cuts.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from shallowpi.data import chunk_files, zarr_compat
from shallowpi.data.codecs import image_codec, numeric_codec, register_image_codecs
from shallowpi.data.durable_io import (
    file_in,
    read_json,
    release_writer_lock,
    take_writer_lock,
    write_json,
)
from shallowpi.data.features import (
    Feature,
    FeatureKind,
    check_joint_kinds,
    features_from_json,
    features_to_json,
    require_plain_names,
)
from shallowpi.data.store_claim import claim_new, publish_folder, require_outside_stores
from shallowpi.data.store_codecs import require_written_codecs
from shallowpi.data.store_cuts import CutLog, commit_record, cuts_of, kept_since
from shallowpi.data.store_rules import StoreSummary, check_mixing, mixed_fps
from shallowpi.data.store_settings import StoreSettings, check_encodes, settings_from_header
from shallowpi.data.store_swap import (
    COMPACTING_SUFFIX,
    SWAPPED_OUT,
    finish_interrupted_swap,
    name_taken,
    remove_swapped_out,
)
from shallowpi.durable_files import PARTIAL_SUFFIX, fsync_path
from shallowpi.errors import StoreEditedError, StoreError

if TYPE_CHECKING:
    from shallowpi.data.episode_writer import EpisodeWriter

log = logging.getLogger(__name__)

__all__ = ["EpisodeInfo", "EpisodeStore", "StoreSettings", "StoreSummary", "check_mixing", "mixed_fps"]

FORMAT_NAME = "shallowpi.episodes"
# 3: as 2, with the metadata in layout 2 (one file an episode, a small commit record).
# 2: row t holds the observation at tick t and the action sent after it (lerobot's order).
# 1: row t held the action sent at tick t and the observation read after it; still read
#    (training windows and exports shift its actions by one row), never appended to.
FORMAT_VERSION = 3
LAYOUT = 2
# 4: format-1 rows in layout 2, as a format-1 store's header says once it is on layout 2 (its
#    first write, a delete's or a merge's copy). Above 2, so that a shallowpi from before
#    layout 2 (which reads up to 2, looks for the episode list and would call the store damaged)
#    refuses it with "upgrade". Read as version 1 (`EpisodeStore.version` names the rows); a
#    header of version 1 on layout 2 (written before 4 was) reads the same, and becomes 4 at
#    its next writable open.
FORMAT_1_ON_LAYOUT_2 = 4
READS_VERSIONS_UP_TO = FORMAT_1_ON_LAYOUT_2
# The header's keys this version writes; others (a newer version's: store-wide settings) are
# carried by every rewrite of the header, as are an episode file's. The commit record's are
# not: it summarises the store's contents, which this version's commit changes, and a newer
# version's summary kept past it would describe a store that is gone (`cuts_of` shows how a
# reader takes a record without its key: the safe way).
HEADER_KEYS = frozenset({"format", "version", "layout", "features", "settings", "created"})
TICK_KEY = "timestamp"
TIMESTAMP_SUFFIX = ".timestamp"
EPISODES_DIR = "episodes"
# How a store's episodes were made: each recording session's resolved config (and its
# dashboard log), kept beside the arrays and carried by every edit that rewrites the store.
PROVENANCE_DIR = ".shallowpi"
WRITER_CACHED_EPISODES = 256  # episode metadata a writable store keeps in memory
OPEN_TRIES = 3  # a reader opens again when the store changed while it opened (EpisodeStore.open)
# A reader reads the files that say whether its store was edited at least this often, seconds,
# whatever the stats say: an NFS client may answer a stat from its attribute cache for a
# minute, while opening a file revalidates it.
REREAD_S = 0.25


@dataclass
class EpisodeInfo:
    """Per-episode metadata, stored in episodes/<index>.json."""

    index: int
    length: int
    task: str
    robot: str = ""
    calibration_id: str = ""
    fps: float = 30.0
    start_time: float = 0.0  # unix time of the first frame
    duration_s: float = 0.0
    success: bool | None = None
    dropped_frames: int | None = 0  # camera frames the drivers lost; None: not counted (an import)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. loop overruns, frame ages
    checksums: dict[str, str] = field(default_factory=dict)  # sha256 of numeric rows
    # array -> [start, stop) row ranges (within the episode) holding NaN or inf; {}: none.
    # None: not looked for (an episode written before the field existed; `dataset check` looks).
    nonfinite: dict[str, list[list[int]]] | None = None
    # The file's keys this version does not know (a newer version wrote them), written back
    # as they were by every rewrite of the file (set_success, a delete's or a merge's copy).
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def scene(self) -> tuple[str, int] | None:
        """The twin scene the episode was recorded in, (task, scene seed `extra.seed`): the
        same scene whichever store or session holds it. None for an episode without a seed
        (a robot's, an import)."""
        seed = self.extra.get("seed")
        return None if seed is None else (self.task, int(seed))

    @property
    def imported(self) -> bool:
        """Whether the episode came from a LeRobot dataset (`dataset import`): only an import
        leaves its dropped frames uncounted (None). Its start_time is 0.0 (LeRobot keeps no
        recording time), or, imported before imports stored 0.0, the import's own clock."""
        return self.dropped_frames is None

    @property
    def dropped_summary(self) -> str:
        """The camera frames lost, as a user reads it: "3 dropped camera frames", or that
        they were not counted (an imported episode)."""
        if self.imported:
            return "dropped camera frames not counted"
        return f"{self.dropped_frames} dropped camera frames"

    def to_json(self) -> dict[str, Any]:
        """Every field as a JSON-ready dict, as episodes/<index>.json holds it: the unknown
        keys beside the known ones, and no `nonfinite` when it was never looked for (as the
        file was written)."""
        data = dataclasses.asdict(self)
        unknown = data.pop("unknown")
        if self.nonfinite is None:
            del data["nonfinite"]
        return {**unknown, **data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpisodeInfo:
        """From episodes/<i>.json; keys this version does not know are kept aside (`unknown`),
        so a store written by a newer version still reads, and its keys survive a rewrite
        (TypeError when a required key is missing)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"unknown"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   unknown={k: v for k, v in data.items() if k not in known})


class _WriterLock:
    """A writable store's writer lock (`take_writer_lock`'s fd, None for a reader or once
    released). Once `guard`ed, collected while still held (a script's or a notebook's store
    never closed: `del store`, its variable given another value) it is released as an unclean close
    releases it: the pid stays in the lock file, so the next writer looks for what was left
    half-written (`_recover`); a store never closed is never taken for a clean close. Apart
    from the store object because a delete's swap hands the lock from one store object to
    another (`store_edit._swap_in`): the guard goes with the lock, not with an object."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self._guard: weakref.finalize | None = None

    def guard(self) -> None:
        """Release the lock, unclean, when this object is collected still holding it."""
        if self.fd is not None and self._guard is None:
            self._guard = weakref.finalize(self, _release_unclosed, self.fd, os.getpid())

    def forget(self) -> int | None:
        """The fd, for the caller to release (None: nothing held); unguarded, so that a
        number the kernel gives out again is never released by a late guard."""
        if self._guard is not None:
            self._guard.detach()
            self._guard = None
        fd, self.fd = self.fd, None
        return fd


def _release_unclosed(fd: int, pid: int) -> None:
    # Only in the process that took it: a forked child's copy of the number is not the
    # lock (durable_files closes those at the fork) and may be a lock of the child's own.
    if os.getpid() == pid:
        release_writer_lock(fd, clean=False)


class EpisodeStore:
    """A dataset of episodes. Open with `EpisodeStore.open` or `EpisodeStore.create`.

    Rows are frames: `read(key, start, stop)` returns [stop - start, *feature.shape] (stop
    clipped to `num_frames`), and
    episode i is rows `episode_range(i)`. A store opened with mode "a" holds an exclusive
    `flock` on it until `close()` (one writer per store, any number of readers), or until
    the object is collected unclosed, which releases it as a writer that died would. Errors are
    StoreError with a one-line message naming the store and, for damage, what is wrong.
    """

    def __init__(self, path: Path, group: Any, writable: bool, lock_fd: int | None) -> None:
        self.path = path
        self._group = group
        self.writable = writable
        self._lock = _WriterLock(lock_fd)  # guarded by `open` once the store is open
        self._writer: EpisodeWriter | None = None
        self._stamped = (os.fspath(path), os.fspath(path / "meta" / ".zattrs"))  # what _stamp stats, as str
        self._seen = self._stamp()  # before anything is read: a change during the opening shows
        self._reread_at = time.monotonic()
        header = self._read_header(path)
        require_written_codecs(path)  # before anything reads a chunk, the commit record's ends included
        self._header_version = int(header.get("version", 1))  # as written (FORMAT_1_ON_LAYOUT_2)
        self.version = 1 if self._header_version == FORMAT_1_ON_LAYOUT_2 else self._header_version
        self.layout = int(header.get("layout", 1))
        self._header_unknown = {k: v for k, v in header.items() if k not in HEADER_KEYS}
        self.features: dict[str, Feature] = features_from_json(header["features"])
        # Each names its folders (data/<name>): a crafted header must not name others.
        require_plain_names(self.features, f"{path}: its header's feature",
                            "shallowpi never writes one; refusing this store")
        self.settings = settings_from_header(path, header.get("settings", {}))
        self._created = header.get("created")  # a compacted copy is a new store: a new stamp
        self._edits = 0  # in-place removals of committed rows (the commit record counts them)
        self._cuts: CutLog = (0, [])  # what those removals kept (the commit record lists them)
        zarr_compat.sync_rewrites(group, self.settings.durable)
        register_image_codecs()
        self._image_codec = image_codec(self.settings.image_codec, self.settings.image_quality)
        self._arrays: dict[str, Any] = {}
        self._frame_layouts: dict[str, chunk_files.FrameLayout | None] = {}
        self._infos: dict[int, EpisodeInfo] = {}
        self._ends_loaded: np.ndarray | None = None
        self._salvage = False  # opened to delete damaged episodes only (open(salvage=True))
        if self.layout >= 2:
            self._read_commit_record()
        else:
            from shallowpi.data.store_layout1 import read_layout_1

            read_layout_1(self)

    # --- opening -----------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        features: Mapping[str, Feature],
        settings: StoreSettings | None = None,
        version: int = FORMAT_VERSION,
        inside_a_store: bool = False,
        copy_of: EpisodeStore | None = None,
    ) -> EpisodeStore:
        """A new, empty store at `path` (which must not exist) for these features, open for
        writing. Refused inside another store's folder (`require_outside_stores`: a delete
        of that store rewrote its folder around it), unless `inside_a_store`: a delete's
        compacted copy of a store a user keeps in another's folder is made beside it there.

        Built beside its name and renamed into place whole, under the name's claim
        (`claim_new`): of processes creating one store at once, one makes it and the others
        get the one-line "already exists" (`open_or_create` then opens it). Refused before
        anything is made, StoreError: features it cannot hold, an image codec that cannot
        encode their frames. `version` 1 is for copies of a format-1 store (compaction),
        which keep its row convention; anything else writes today's format. `copy_of`: the
        store this one is a compacted copy of, whose header keys this version does not know
        (a newer one wrote them) the copy keeps."""
        path = Path(path)
        settings = settings or StoreSettings()
        if not inside_a_store:
            require_outside_stores(path, "new dataset")  # a recording's, deploy --record's
        if name_taken(path):
            raise _exists(path)
        cls._check_new(features, settings)
        with claim_new(path) as built:
            if name_taken(path):  # made by another process while this one waited for the claim
                raise _exists(path)
            cls._build(built, features, settings, version, copy_of)
            return cls.publish(built, path, settings.durable)

    @classmethod
    def create_unpublished(cls, built: str | os.PathLike[str], features: Mapping[str, Feature],
                           settings: StoreSettings | None = None, version: int = FORMAT_VERSION) -> EpisodeStore:
        """A new, empty store at `built` (a path `claim_new` gave), open for writing, for a
        command that fills a store before it takes its name (a merge, an import): once whole
        and closed, `publish` moves it there. Checked as `create` checks."""
        built, settings = Path(built), settings or StoreSettings()
        cls._check_new(features, settings)
        cls._build(built, features, settings, version)
        return cls.open(built, mode="a")

    @classmethod
    def publish(cls, built: str | os.PathLike[str], path: str | os.PathLike[str], durable: bool) -> EpisodeStore:
        """Move the closed store at `built` to `path` (`publish_folder`, under its claim) and
        open it there for writing. Its writer lock is taken before the rename and kept, so
        no other writer (a recorder that found the name taken) gets in between. StoreError
        when `path` is taken; nothing is replaced."""
        built, path = Path(built), Path(path)
        lock_fd, _ = take_writer_lock(built)
        try:
            publish_folder(built, path, durable)
        except BaseException:
            release_writer_lock(lock_fd, clean=True)
            raise
        return cls.open(path, mode="a", _locked=(lock_fd, False))

    @staticmethod
    def _check_new(features: Mapping[str, Feature], settings: StoreSettings) -> None:
        """StoreError (one line) for features a new store cannot hold (none, a reserved name,
        one that is not a plain name: `require_plain_names`), or for settings whose image
        codec cannot encode their frames here (`check_encodes`)."""
        if TICK_KEY in features or any(k.endswith(TIMESTAMP_SUFFIX) for k in features):
            raise StoreError(f"feature names '{TICK_KEY}' and '*{TIMESTAMP_SUFFIX}' are reserved")
        # A name is its arrays' folders, data/<name>: one with a '/' put them elsewhere.
        require_plain_names(features, "feature", "a feature is stored as the folder data/<name>; rename it")
        if not features:
            raise StoreError("a store needs at least one feature")
        check_encodes(features, settings, "choose another codec or quality")

    @classmethod
    def _build(cls, staging: Path, features: Mapping[str, Feature], settings: StoreSettings, version: int,
               copy_of: EpisodeStore | None = None) -> None:
        """The empty store's arrays, metadata and header, written (and synced) at `staging`.
        `version` 1 is for copies of a format-1 store (compaction, a merge), which keep its
        row convention (header version FORMAT_1_ON_LAYOUT_2); anything else writes today's
        format. `copy_of`: the store whose unknown header keys it keeps."""
        version = FORMAT_1_ON_LAYOUT_2 if version < 2 or version == FORMAT_1_ON_LAYOUT_2 else FORMAT_VERSION
        header_unknown = copy_of._header_unknown if copy_of is not None else {}
        group = zarr_compat.open_group(staging, mode="w")
        data = group.require_group("data")
        for key, feature in features.items():
            cls._create_feature_arrays(data, key, feature, settings)
        zarr_compat.create_array(data, TICK_KEY, (0,), (settings.numeric_chunk_rows,), "float64", numeric_codec())
        meta = group.require_group("meta")
        zarr_compat.create_array(meta, "episode_ends", (0,), (4096,), "int64", None)
        meta.attrs.put({"commit": commit_record(0, 0, StoreSummary())})
        (staging / EPISODES_DIR).mkdir()
        group.attrs.put(
            {
                "shallowpi": {
                    **header_unknown,
                    "format": FORMAT_NAME,
                    "version": version,
                    "layout": LAYOUT,
                    "features": features_to_json(features),
                    "settings": dataclasses.asdict(settings),
                    "created": time.time(),
                }
            }
        )
        if settings.durable:  # a power cut after the rename must not leave an empty header
            for folder, _, files in os.walk(staging):
                for name in files:
                    fsync_path(os.path.join(folder, name))
                fsync_path(folder)

    @staticmethod
    def _create_feature_arrays(data: Any, key: str, feature: Feature, settings: StoreSettings) -> None:
        if feature.kind is FeatureKind.IMAGE:
            chunks = (1, *feature.shape)
            compressor = image_codec(settings.image_codec, settings.image_quality)
        else:
            chunks = (settings.numeric_chunk_rows, *feature.shape)
            compressor = numeric_codec()
        zarr_compat.create_array(data, key, (0, *feature.shape), chunks, feature.dtype, compressor)
        zarr_compat.create_array(
            data, key + TIMESTAMP_SUFFIX, (0,), (settings.numeric_chunk_rows,), "float64", numeric_codec()
        )

    @classmethod
    def open(cls, path: str | os.PathLike[str], mode: str = "r",
             _locked: tuple[int, bool] | None = None, salvage: bool = False) -> EpisodeStore:
        """Open an existing store: mode "r" reads, "a" also writes (one writer at a time).

        Costs the same at any number of episodes, except the first writable open of a
        layout-1 store (which moves its metadata to layout 2, for good: a caller that may
        refuse the store checks it read-only first, as `open_or_create` does) and one after
        a writer was killed (which looks for its half-written files). `_locked`: the writer lock taken
        already (fd, died), for a delete's swap, which holds one from start to end.
        `salvage` (mode "a"): open a store whose arrays are cut short of its committed rows
        (refused otherwise), for the delete of the damaged episodes that `require_intact`
        names; no episode can be recorded into it."""
        path = Path(path)
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', not {mode!r}")
        try:
            if not path.exists():
                finish_interrupted_swap(path)
            if not path.exists():
                # `dataset info notes.txt` looks for notes.txt.zarr: name the file it was given.
                given = path.with_suffix("") if path.suffix == ".zarr" else None
                if given is not None and given.is_file():
                    raise StoreError(f"{given} is a file, not a dataset: a store is a folder (NAME.zarr)")
                raise StoreError(f"no dataset at {path}; record one with `platform record --dataset NAME`")
            if not (path / ".zgroup").is_file():
                raise StoreError(f"{path} is not a zarr store (no .zgroup); is it the right path?")
        except PermissionError as exc:  # a colleague's 0700 store: theirs, not damaged, not ours to write
            raise _unreadable(path, exc) from None
        lock_fd, died = (_locked or take_writer_lock(path)) if mode == "a" else (None, False)
        try:
            for _ in range(OPEN_TRIES):
                group = zarr_compat.open_group(path, mode="r+" if mode == "a" else "r")
                store = cls(path, group, writable=mode == "a", lock_fd=lock_fd)
                # A reader that read the header of one folder and the commit record of the
                # next (a delete swapped them meanwhile) or of a commit made meanwhile opens
                # again. A writer holds the lock: nothing changes under it.
                if mode == "a" or store._stamp() == store._seen:
                    break
            if mode == "a":
                # We hold the lock, so a compaction copy beside the store is a dead one, and
                # an old copy the swap of a finished delete left (it was cut before removing it).
                shutil.rmtree(path.with_name(path.name + COMPACTING_SUFFIX), ignore_errors=True)
                remove_swapped_out(path)
                # A mark left by a swap cut before its first rename: a copy of this store made
                # by hand later would carry it, and be taken for the swap's.
                (path / SWAPPED_OUT).unlink(missing_ok=True)
                store._salvage = salvage
                store._recover(sweep=died)
                if store.layout < LAYOUT:
                    from shallowpi.data.store_layout1 import move_to_layout_2

                    move_to_layout_2(store)
                elif store._header_version == 1:  # moved before FORMAT_1_ON_LAYOUT_2: older readers misread it
                    from shallowpi.data.store_layout1 import relabel_format_1

                    relabel_format_1(store)
            # Open: from here a store dropped unclosed lets go of its lock (a failure above
            # released it at once, below; a guard would release its number twice).
            store._lock.guard()
        except StoreError:
            release_writer_lock(lock_fd)
            raise
        except PermissionError as exc:  # a reader: a 0600 file inside it, another user's, is no damage
            release_writer_lock(lock_fd)
            if mode == "a":
                raise  # a writer's refusal names the file it could not write (cli.file_system_error)
            raise _unreadable(path, exc) from None
        except Exception as exc:  # zarr/json errors on a damaged store
            release_writer_lock(lock_fd)
            raise StoreError(f"{path} is damaged: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        except BaseException:  # interrupted: the lock goes, the pid stays (a writer died)
            release_writer_lock(lock_fd)
            raise
        return store

    @classmethod
    def open_or_create(
        cls, path: str | os.PathLike[str], features: Mapping[str, Feature], settings: StoreSettings | None = None,
        check: Callable[[EpisodeStore], None] | None = None,
    ) -> EpisodeStore:
        """Append to `path` if it exists (same features required, and the same joint kinds
        where both the store and `features` give them: StoreError naming each joint and both
        kinds otherwise), else create it; if another process created it meanwhile, append to
        that one (StoreError "being written by pid N" while that process writes it).
        `check`: the caller's own refusal of an existing store (raising StoreError: another
        fps, another calibration), made with the others from a reader before the writable
        open, and again after it."""
        path = Path(path)
        if not name_taken(path):
            try:
                return cls.create(path, features, settings)
            except StoreError:
                if not name_taken(path):  # refused for another reason than a store made meanwhile
                    raise
        # Refused from a reader first: the writable open moves a layout-1 store to layout 2
        # for good, and a refusal must leave the store as it was.
        with cls.open(path) as existing:
            _require_appendable(existing, features)
            if check is not None:
                check(existing)
        store = cls.open(path, mode="a")
        try:
            _require_appendable(store, features)  # the store at the name may have been replaced meanwhile
            if check is not None:
                check(store)
        except BaseException:  # the caller's check may raise anything: the writer's lock goes back
            store.close()
            raise
        return store

    @property
    def action_offset(self) -> int:
        """Rows from an observation to the first action that followed it: 0, or 1 in format 1."""
        return 1 if self.version < 2 else 0

    def check_recordable(self, fps: float | None = None, calibration_id: str | None = None,
                         allow_mixed_calibration: bool = False) -> None:
        """New episodes may go into this store only if it pairs rows the way they are
        recorded now and, when given, they share its fps and calibration id (see
        `check_mixing`; `allow_mixed_calibration` lifts the calibration rule, and
        `allow_mixed_calibration()` records that in the store), and its settings encode
        frames here (a store made before settings were checked may hold ones that do not:
        `check_encodes`). Raises StoreError."""
        if self.action_offset:
            raise StoreError(
                f"{self.path.name} is format {self.version} (each action stored with the observation "
                f"after it); recordings are format {FORMAT_VERSION} now; record into another --dataset"
            )
        check_mixing(self.summary, self.path.name, [] if fps is None else [fps],
                     [] if calibration_id is None else [calibration_id], "this recording",
                     allow_mixed_calibration)
        check_encodes(self.features, self.settings, f"{self.path.name} was created with them, before settings "
                                                     "were checked: record into another dataset")

    def allow_mixed_calibration(self) -> None:
        """Record in the store that its episodes may differ in calibration id (one atomic
        write of the commit record; `dataset info` shows it, nothing unsets it)."""
        self._require_writable()
        if not self.summary.allow_mixed_calibration:
            self._write_commit_record(len(self), self.num_frames,
                                      dataclasses.replace(self.summary, allow_mixed_calibration=True))

    def _read_header(self, path: Path) -> dict[str, Any]:
        header = read_json(path / ".zattrs").get("shallowpi") if (path / ".zattrs").is_file() else None
        if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
            raise StoreError(
                f"{path} is a zarr store but not a Shallow-π episode store; "
                "bring a LeRobot dataset in with `platform dataset import`"
            )
        version, layout = _header_number(path, header, "version"), _header_number(path, header, "layout")
        if version > READS_VERSIONS_UP_TO:
            raise StoreError(f"{path} has format version {version}; this shallowpi reads up to "
                             f"{READS_VERSIONS_UP_TO}, upgrade it")
        if layout > LAYOUT:
            raise StoreError(f"{path} has store layout {layout}; this shallowpi reads layouts up to {LAYOUT}, "
                             "upgrade it")
        return header

    def _read_commit_record(self) -> None:
        record = read_json(self.path / "meta" / ".zattrs").get("commit")
        if not isinstance(record, dict):
            raise StoreError(f"{self.path}: meta/.zattrs has no commit record; the store is damaged")
        self._count, self._frames = int(record["episodes"]), int(record["frames"])
        self._edits = int(record.get("edits", 0))
        self._cuts = cuts_of(record)
        self.summary = StoreSummary.from_json(record)
        ends = self._array("meta/episode_ends")
        if ends.shape[0] < self._count:
            raise StoreError(f"{self.path}: {self._count} episodes committed but meta/episode_ends has {ends.shape[0]}; the store is damaged")

    def _recover(self, sweep: bool = False) -> None:
        """Cut any tail a killed writer left past the last committed episode.

        `sweep`: the last writer died holding the lock, so look for its `.partial` files
        everywhere (a pass over every file of the store, only after a crash)."""
        if sweep:
            for leftover in self.path.rglob("*" + PARTIAL_SUFFIX):
                leftover.unlink(missing_ok=True)
        end = self.num_frames
        for name in self._array_names():
            array = self._array(f"data/{name}")
            if array.shape[0] < end and not self._salvage:  # a recording would append after a gap of zeros
                raise StoreError(f"{self.path}: data/{name} has {array.shape[0]} rows, committed episodes need {end}; "
                                 "the store is damaged (`platform dataset check` names the episodes to delete)")
            if array.shape[0] > end:
                log.warning("%s: removing %d frames of data/%s from an episode that was never committed",
                            self.path.name, array.shape[0] - end, name)
                array.resize((end, *array.shape[1:]))
        ends = self._array("meta/episode_ends")
        if ends.shape[0] > len(self):
            ends.resize((len(self),))
        # Commits are one at a time, so at most the next episode's file can be a leftover.
        with contextlib.suppress(FileNotFoundError):
            os.remove(file_in(self.path / EPISODES_DIR, f"{len(self)}.json"))

    def close(self) -> None:
        """Discard an episode still being written (never committed), release the write lock
        (always: a discard that fails, e.g. on a full disk, leaves its tail for the next
        writer to cut, and says so by releasing the lock as not clean)."""
        clean = True
        try:
            if self._writer is not None and self._writer.is_open:
                clean = False
                self._writer.discard()
                clean = True
        finally:
            release_writer_lock(self._lock.forget(), clean=clean)

    @property
    def _lock_fd(self) -> int | None:
        """The writer lock's fd; None for a reader, or once released."""
        return self._lock.fd

    @_lock_fd.setter
    def _lock_fd(self, fd: int | None) -> None:
        # A delete's swap releases the lock itself and sets None (store_edit._swap_in).
        self._lock.forget()
        self._lock = _WriterLock(fd)

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    @property
    def num_frames(self) -> int:
        """Committed frames (rows) over all episodes; a tail in flight is not counted."""
        return self._frames

    @property
    def episodes(self) -> list[EpisodeInfo]:
        """Every committed episode's metadata (reads each one's file on first use)."""
        return self._episodes

    @property
    def _episodes(self) -> list[EpisodeInfo]:
        return [self.episode(i) for i in range(len(self))]

    @property
    def episode_ends(self) -> np.ndarray:
        """[E] int64 cumulative row ends of the committed episodes (a copy: safe to modify).

        Raises StoreError when meta/episode_ends disagrees with the commit record.
        """
        return self._ends.copy()

    @property
    def _ends(self) -> np.ndarray:
        """meta/episode_ends of the committed episodes, read on first use (8 bytes an episode)."""
        if self._ends_loaded is None:
            ends = np.asarray(self._array("meta/episode_ends")[: self._count], dtype=np.int64)
            if len(ends) and (int(ends[-1]) != self._frames or np.any(np.diff(ends, prepend=0) < 0)):
                raise StoreError(f"{self.path}: meta/episode_ends does not end at the {self._frames} committed frames "
                                 "or is not increasing; the store is damaged")
            self._ends_loaded = ends
        return self._ends_loaded

    def episode(self, index: int) -> EpisodeInfo:
        """Episode `index`'s metadata (negative counts from the end), cached after first read.

        Raises StoreError for an index out of range, or when episodes/<i>.json is unreadable
        or disagrees with meta/episode_ends.
        """
        index = self.resolve_index(index)
        info = self._infos.get(index)
        if info is None:
            info = self._load_episode(index)
            self._require_unchanged()  # after reading, as `read`
            self._remember(index, info)
        return info

    def _remember(self, index: int, info: EpisodeInfo) -> None:
        self._infos[index] = info
        # A recorder keeps its store open for hours, one commit an episode: what it caches
        # must not grow with the store (BENCHMARKS.md, record_soak). Readers cache all.
        if self.writable and len(self._infos) > WRITER_CACHED_EPISODES:
            del self._infos[next(iter(self._infos))]

    def _load_episode(self, index: int) -> EpisodeInfo:
        path = file_in(self.path / EPISODES_DIR, f"{index}.json")
        try:
            info = EpisodeInfo.from_json(read_json(path))
        except PermissionError as exc:  # sound, only not this user's: no damage (`dataset check` says so too)
            raise _unreadable(self.path, exc) from exc
        except (OSError, ValueError, TypeError) as exc:
            raise StoreError(f"{self.path}: metadata of episode {index} ({EPISODES_DIR}/{index}.json) "
                             f"does not read ({type(exc).__name__}); the store is damaged") from exc
        if info.index != index:
            raise StoreError(f"{self.path}: {EPISODES_DIR}/{index}.json describes episode {info.index}; "
                             "the store is damaged")
        start, stop = self.episode_range(index)
        if info.length != stop - start:
            raise StoreError(f"{self.path}: episode {index} has {info.length} frames in its metadata but "
                             f"{stop - start} in meta/episode_ends")
        return info

    def episode_range(self, index: int) -> tuple[int, int]:
        """Episode `index`'s rows as [start, stop); StoreError for an index out of range."""
        index = self.resolve_index(index)
        start = int(self._ends[index - 1]) if index > 0 else 0
        return start, int(self._ends[index])

    def read(self, key: str, start: int, stop: int) -> np.ndarray:
        """Rows start:stop of `data/<key>` (a feature, `<feature>.timestamp` or `timestamp`).

        Raises StoreError for an unknown key, and in a reader when the store was edited
        since it opened, before or while these rows were read (`_require_unchanged`)."""
        rows = self._read_unchecked(key, start, stop)
        self._require_unchanged()  # after reading: an edit during the read shows too
        return rows

    def read_many(self, keys: Iterable[str], start: int, stop: int) -> dict[str, np.ndarray]:
        """{key: `read(key, start, stop)`} for each of `keys`, the store looked at once, after
        all are read, not after each (a training sample's cameras: the look is two stats).
        Raises as `read`; a read that fails in a store edited meanwhile raises the
        StoreEditedError that a look after the keys read before it would have."""
        try:
            out = {key: self._read_unchecked(key, start, stop) for key in keys}
        except Exception:
            self._require_unchanged()  # the edit, not what it did to a file, is the news
            raise
        self._require_unchanged()  # after reading: an edit during any of the reads shows too
        return out

    def _read_unchecked(self, key: str, start: int, stop: int) -> np.ndarray:
        """`read` without the look at whether the store was edited: its caller's to make, after."""
        if key not in self._array_name_set:
            raise StoreError(f"{self.path.name} has no array '{key}'; it has: {', '.join(self._array_names())}")
        stop = min(stop, self.num_frames)
        layout = self._frame_layout(key)
        if layout is not None and 0 <= start <= stop:
            return chunk_files.read_frames(layout, start, stop)
        return np.asarray(self._array(f"data/{key}")[start:stop])

    @property
    def identity(self) -> tuple[Any, int]:
        """Which rows this store's numbering names: its creation stamp (a compacting delete
        swaps in a new store) and its count of in-place edits (the recorder's d / r between
        takes cut the last episode, whose rows the next take fills again). Equal identities
        name the same rows; for whether a store still holds the episodes a reader read, past
        edits that cut only later ones, see `pin`."""
        return self._created, self._edits

    def pin(self, identity: tuple[Any, int], episodes: int) -> None:
        """Make this reader read what an earlier reader of the store read: the first
        `episodes` episodes of the store as it was at `identity` (that reader's `identity`
        and `len`), for a process that opens the store again (a training set's loader
        worker). Its length, frames and `identity` become that reader's, and it refuses
        (`read`) only edits that change those episodes, as that reader does.

        Raises StoreEditedError when the store no longer holds them as they were: another
        store took its name (a delete), or an in-place cut since took one of them (a d or r
        of a take that reader read; one of a take recorded after it is no obstacle)."""
        if self.writable:
            raise StoreError(f"{self.path.name} is open for writing; only a reader is pinned")
        if not self.still_holds(identity, episodes):
            raise _edited(self.path)
        edits = identity[1]
        frames = int(self._array("meta/episode_ends")[episodes - 1]) if episodes else 0
        self._count, self._frames, self._edits = episodes, frames, edits
        self._ends_loaded = None
        self._infos = {i: info for i, info in self._infos.items() if i < episodes}
        self.require_unchanged()  # the ends just read were of the episodes pinned

    def still_holds(self, identity: tuple[Any, int], episodes: int) -> bool:
        """Whether this store holds, as they were, the first `episodes` episodes of the store at
        `identity` (an earlier reader's `identity`): the same store (no delete swapped in
        another), and no in-place cut since took one of them (`kept_since`; a d or r of a
        take recorded after them is no obstacle)."""
        created, edits = identity
        return created == self._created and kept_since(self._edits, self._cuts, edits, episodes) \
            and episodes <= len(self)

    def require_unchanged(self, error: StoreEditedError | None = None) -> None:
        """Raise `error` (default: the reader's own StoreEditedError) if the store was edited
        since it was opened, looking now whatever was looked at last; for a reader that read
        files past `read` (a check decoding frames from their chunk files)."""
        self._reread_at = float("-inf")
        try:
            self._require_unchanged()
        except StoreEditedError as edited:
            raise (error or edited) from None

    def _require_unchanged(self) -> None:
        """A reader's files are read lazily (frames, episode metadata) beside numbers and
        episode boundaries read at open: a `dataset delete` that swapped a compacted copy in
        meanwhile renumbered the rows, and a recorder's d / r refilled the last episode's;
        the reader paired old numbers with new (or no: zero) frames. Looked at on every read:
        two stats (`_stamp`, µs) and, when they moved or REREAD_S passed, the two small files
        that say whether the rows were renumbered (a commit that only appended episodes leaves
        them as they were, and so does a d / r that cut only episodes past this reader's: the
        commit record lists what each cut kept); StoreEditedError then. A writer holds the
        lock: nothing else edits its store."""
        if self.writable:
            return
        stamp = self._stamp()
        if stamp is not None and stamp == self._seen and time.monotonic() - self._reread_at < REREAD_S:
            return
        self._reread_at = time.monotonic()
        try:
            created = self._read_header(self.path).get("created")
            # A layout-1 store has no commit record, and is never edited in place.
            record = read_json(self.path / "meta" / ".zattrs").get("commit", {})
            kept = created == self._created and kept_since(int(record.get("edits", 0)), cuts_of(record),
                                                           self._edits, len(self))
        except (OSError, ValueError, TypeError, AttributeError, StoreError):
            kept = False  # mid-swap: the folder is being replaced
        if not kept:
            raise _edited(self.path)
        self._seen = stamp

    def _stamp(self) -> tuple[int, ...] | None:
        """What moves whenever the rows may have been renumbered: the store's folder (a
        delete swaps another in) and its commit record (replaced by every commit and
        in-place edit), by inode and modification time, so that a new file reusing a freed
        inode still differs. None when either is missing (mid-swap)."""
        try:
            folder, record = os.stat(self._stamped[0]), os.stat(self._stamped[1])
        except OSError:
            return None
        return folder.st_ino, folder.st_mtime_ns, record.st_ino, record.st_mtime_ns

    def _frame_layout(self, key: str) -> chunk_files.FrameLayout | None:
        """A camera array's files, for reading its frames without zarr (chunk_files); None
        for numbers, and for a camera array laid out otherwise. Read once: a writer
        resizes an array but never changes its layout."""
        if key not in self._frame_layouts:
            feature = self.features.get(key)
            is_image = feature is not None and feature.kind is FeatureKind.IMAGE
            self._frame_layouts[key] = (chunk_files.FrameLayout.of(self.path / "data" / key, self.array_info(key))
                                        if is_image else None)
        return self._frame_layouts[key]

    def read_episode(self, index: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Episode `index`'s rows of `keys` (default: every array, timestamps included):
        {key: [T, *shape]} with T its length. Images are decoded, so this can be large."""
        start, stop = self.episode_range(index)
        return self.read_many(keys or self._array_names(), start, stop)

    def _array(self, name: str) -> Any:
        """The zarr array at `name` ("data/<key>", "meta/episode_ends"), looked up once:
        a lookup reads its .zarray (~3 ms in zarr 3), and only this store resizes it."""
        array = self._arrays.get(name)
        if array is None:
            array = self._arrays[name] = self._group[name]
        return array

    def _array_names(self) -> list[str]:
        """Every array under data/, in order: the tick, then each feature and its timestamps."""
        names = [TICK_KEY]
        for key in self.features:
            names += [key, key + TIMESTAMP_SUFFIX]
        return names

    @cached_property
    def _array_name_set(self) -> frozenset[str]:
        """`_array_names` for `read`'s look-up on every sample. Kept for the store object's
        life: the names follow `features`, read from the header at open, which no commit or
        edit rewrites (a delete's new store is another folder, which `read` refuses)."""
        return frozenset(self._array_names())

    def resolve_index(self, index: int) -> int:
        """`index` as a position 0..len-1 (a negative one counts from the end), read from
        no episode's metadata; StoreError for one the store does not have."""
        if not -len(self) <= index < len(self):
            raise StoreError(f"{self.path.name} has no episode {index}; it has {len(self)} (0..{len(self) - 1})")
        return index % len(self)

    def array_info(self, key: str) -> dict[str, Any]:
        """The array's `.zarray` as written on disk (shape, chunks, compressor)."""
        return json.loads((self.path / "data" / key / ".zarray").read_text())

    def nbytes_on_disk(self) -> int:
        """Bytes the store's folder holds on its disk, as `du` counts them: the blocks
        allocated to each file and folder under it (an uncommitted tail included), a file
        hard-linked twice within it (frames a merge linked) counted once. Files shared by
        hard links with another store count in both. Symbolic links are not followed."""
        # Allocated blocks, not st_size: a 9 KB JPEG frame takes a 12 KiB block run (the
        # apparent sizes said 93 MB of a 494 MB store). os.scandir, not rglob + stat: one
        # lstat a file and no Path objects (rglob took ~20 µs a file, minutes a large store).
        # (device, inode) of each file or folder with more than one link: few but linked frames.
        seen: set[tuple[int, int]] = set()

        def blocks(stat: os.stat_result) -> int:
            if stat.st_nlink > 1:
                if (stat.st_dev, stat.st_ino) in seen:
                    return 0
                seen.add((stat.st_dev, stat.st_ino))
            return stat.st_blocks * 512

        total = blocks(os.lstat(self.path))
        folders = [os.fspath(self.path)]
        while folders:
            try:
                entries = os.scandir(folders.pop())
            except FileNotFoundError:
                continue  # removed meanwhile (an edit's staging folder)
            with entries:
                for entry in entries:
                    try:
                        total += blocks(entry.stat(follow_symlinks=False))
                    except FileNotFoundError:
                        continue  # removed meanwhile (a .partial renamed away)
                    if entry.is_dir(follow_symlinks=False):
                        folders.append(entry.path)
        return total

    # --- writing -----------------------------------------------------------------------

    def begin_episode(
        self,
        task: str,
        *,
        robot: str = "",
        calibration_id: str = "",
        fps: float = 30.0,
        start_time: float | None = None,
    ) -> EpisodeWriter:
        """Start recording an episode; frames go in with `add_frame`, then `commit`.

        Raises StoreError if the store holds episodes at another fps, or of another
        calibration id without `allow_mixed_calibration()` (see `check_mixing`)."""
        self._require_writable()
        check_mixing(self.summary, self.path.name, [fps], [calibration_id], "this episode")
        return self._begin_unchecked(task, robot=robot, calibration_id=calibration_id, fps=fps, start_time=start_time)

    def _begin_unchecked(self, task: str, *, robot: str = "", calibration_id: str = "", fps: float = 30.0,
                         start_time: float | None = None) -> EpisodeWriter:
        """`begin_episode` without the mixing rule: for copies of a whole store (compaction)."""
        self._require_writable()
        if self._salvage:
            raise StoreError(f"{self.path.name} was opened to delete its damaged episodes; nothing is recorded into it")
        if self._writer is not None and self._writer.is_open:
            raise StoreError(f"{self.path.name}: an episode is already being recorded; commit or discard it first")
        from shallowpi.data.episode_writer import EpisodeWriter  # it imports this module

        self._writer = EpisodeWriter(self, task, robot, calibration_id, fps,
                                     time.time() if start_time is None else start_time)
        return self._writer

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError(f"{self.path.name} is open read-only; open it with mode='a' to write")

    def _commit(self, info: EpisodeInfo, end: int) -> None:
        """Steps 2 to 4 of the commit protocol (the frames are already durable)."""
        durable = self.settings.durable
        ends = self._array("meta/episode_ends")
        n = len(self)
        ends.resize((n + 1,))
        ends[n] = end
        if durable:
            self._fsync_array("meta/episode_ends", n, n + 1)
        write_json(file_in(self.path / EPISODES_DIR, f"{n}.json"), info.to_json(), durable)
        summary = self.summary.with_episode(info)

        def replaced() -> None:
            # Only once the commit record is in: a commit that fails before it (ENOSPC on the
            # record) and is tried again would otherwise read through an extra end.
            if self._ends_loaded is not None:
                self._ends_loaded = np.append(self._ends_loaded, np.int64(end))
            self._remember(n, info)

        self._write_commit_record(n + 1, end, summary, replaced=replaced)

    def _write_commit_record(self, episodes: int, frames: int, summary: StoreSummary,
                             replaced: Callable[[], None] | None = None, edits: int | None = None,
                             cuts: CutLog | None = None) -> None:
        """Replace meta/.zattrs: the one write that makes episodes visible. This process's
        counts follow the rename itself (then `replaced` runs), so a failure after it (the
        folder's sync) cannot leave a committed episode counted as in flight, and cut.
        `edits`: the in-place removals so far, `cuts` what they kept (default: unchanged; a
        drop counts one, `with_cut`)."""
        edits = self._edits if edits is None else edits
        cuts = self._cuts if cuts is None else cuts

        def committed() -> None:
            self._count, self._frames, self.summary, self._edits = episodes, frames, summary, edits
            self._cuts = cuts
            if replaced is not None:
                replaced()

        write_json(self.path / "meta" / ".zattrs",
                   {"commit": commit_record(episodes, frames, summary, edits, cuts)},
                   self.settings.durable, replaced=committed)

    def _fsync_array(self, name: str, start: int, stop: int, chunks: bool = True) -> None:
        """fsync the chunk files holding rows start:stop of an array, its .zarray and dir."""
        folder = self.path / name
        meta = json.loads((folder / ".zarray").read_text())
        rows = meta["chunks"][0]
        tail = ".0" * (len(meta["shape"]) - 1)
        for chunk in range(start // rows, (max(stop, start + 1) - 1) // rows + 1) if chunks else ():
            fsync_path(file_in(folder, f"{chunk}{tail}"))
        fsync_path(folder / ".zarray")
        fsync_path(folder)

    def _truncate(self, end: int) -> None:
        for name in self._array_names():
            array = self._array(f"data/{name}")
            if array.shape[0] > end:
                array.resize((end, *array.shape[1:]))

    def set_success(self, index: int, success: bool | None) -> None:
        """Mark an episode successful or failed after the fact (one atomic metadata write)."""
        self._require_writable()
        index = self.resolve_index(index)
        self._rewrite_episode(dataclasses.replace(self.episode(index), success=success))

    def _rewrite_episode(self, info: EpisodeInfo) -> None:
        """Replace committed episode `info.index`'s metadata file with `info` (one atomic write)."""
        write_json(file_in(self.path / EPISODES_DIR, f"{info.index}.json"), info.to_json(), self.settings.durable)
        self._remember(info.index, info)

    # --- editing: delete, merge (data/store_edit.py) -------------------------------------

    def delete_episodes(self, indices: Sequence[int], swapped: Callable[[], None] | None = None) -> None:
        """Remove episodes and compact the arrays; `swapped` is called the moment it is done:
        see `store_edit.delete_episodes`."""
        from shallowpi.data.store_edit import delete_episodes

        delete_episodes(self, indices, swapped)

    def drop_last_episode(self) -> EpisodeInfo:
        """Remove the last episode in place, cheaply: see `store_edit.drop_last_episode`."""
        from shallowpi.data.store_edit import drop_last_episode

        return drop_last_episode(self)

    def append_episode_from(self, source: EpisodeStore, index: int) -> EpisodeInfo:
        """Copy one committed episode of `source` in: see `store_edit.append_episode_from`."""
        from shallowpi.data.store_edit import append_episode_from

        return append_episode_from(self, source, index)

    @classmethod
    def merge(cls, sources: Sequence[EpisodeStore], out: str | os.PathLike[str],
              allow_mixed_calibration: bool = False, allow_repeated_scenes: bool = False) -> EpisodeStore:
        """A new store at `out` holding every episode of `sources`: see `store_edit.merge`."""
        from shallowpi.data.store_edit import merge

        return merge(sources, out, allow_mixed_calibration=allow_mixed_calibration,
                     allow_repeated_scenes=allow_repeated_scenes)

    # --- checking ----------------------------------------------------------------------

    def check(self, decode_images: bool = True) -> list[str]:
        """The damage `store_check.check_store` finds in the committed episodes (empty:
        healthy); a tail past them, in flight or left by a kill, is not damage."""
        from shallowpi.data.store_check import check_store  # it reads the store: no import cycle

        return check_store(self, decode_images=decode_images).problems


def _require_appendable(store: EpisodeStore, features: Mapping[str, Feature]) -> None:
    """StoreError (one line) when a recording of `features` may not go into `store`: other
    features (a joint of another kind named with both), or a store `check_recordable` refuses."""
    # Before the features' own comparison, which refuses other kinds without naming them.
    check_joint_kinds(store.features, store.path.name, features, "this robot's spec",
                      "record into another dataset, or give the joint its old kind again")
    if dict(features) != store.features:
        raise StoreError(f"{store.path} holds other features than this robot records (joints, cameras, frame "
                         "sizes); record into another dataset")
    store.check_recordable()


def _header_number(path: Path, header: Mapping[str, Any], key: str) -> int:
    """The header's `key` ("version", "layout"; 1 when missing) as an int; StoreError (one
    line) saying what it holds instead (a hand edit, another program's header)."""
    value = header.get(key, 1)
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        return int(value)
    except ValueError:
        raise StoreError(f"{path}: its header's {key} is {json.dumps(value)}, not a whole number; the store is "
                         "damaged (or another program wrote its .zattrs)") from None


def _unreadable(path: Path, exc: PermissionError) -> StoreError:
    """The one line for a store this user may not read (EACCES from a look inside it): whose
    it is and its mode, read from the store's folder, or from the file that refused when
    that is another one inside it (a 0600 file in a shared store). It was said as "cannot
    write" (`dataset list` then printed no table) or as damage: an intact store of someone
    else's, taken for one to repair."""
    refused = Path(os.fsdecode(exc.filename)) if exc.filename is not None else path
    if not refused.is_relative_to(path):
        refused = path
    # The file that refused, or the deepest folder on its way that this user may look at
    # (`.zgroup` in a 0700 store cannot be looked at: the store's folder is what refuses).
    for named in (refused, *[p for p in refused.parents if p.is_relative_to(path)]):
        with contextlib.suppress(OSError):
            st = named.stat()
            inside = f"{named.relative_to(path)}: " if named != path else ""
            return StoreError(f"{path} is not readable by this user ({inside}owner uid {st.st_uid}, mode "
                              f"{oct(st.st_mode & 0o7777)}); ask its owner")
    return StoreError(f"{path} is not readable by this user ({exc.strerror}); ask its owner")


def _exists(path: Path) -> StoreError:
    return StoreError(f"{path} already exists; open it, or pick another dataset name")


def _edited(path: Path) -> StoreEditedError:
    return StoreEditedError(f"{path.name} was edited while this reader had it open (a `platform dataset delete` "
                            "numbers its rows anew; a recorder's d or r records the last episode again): open it "
                            "again")
