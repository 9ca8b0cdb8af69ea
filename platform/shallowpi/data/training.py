"""The torch view of a store: (observation at t, action chunk t..t+H-1, padding, task).

Numbers (state, action) are read into memory once; camera frames are read and decoded
per sample, inside DataLoader workers. Each worker opens the store itself: zarr's
event-loop thread does not survive a fork.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from shallowpi.data.features import FeatureKind
from shallowpi.data.store import EpisodeStore
from shallowpi.data.store_files import require_intact
from shallowpi.data.windows import ChunkWindows
from shallowpi.errors import StoreEditedError, StoreError
from shallowpi.policy.action_space import mask_of, offset_stats

STATE_KEY = "observation.state"
ACTION_KEY = "action"


class _Numbers:
    """A store's state and action rows, float32 [N, S] and [N, A], as read once."""

    __slots__ = ("__weakref__", "action", "state")

    def __init__(self, state: np.ndarray, action: np.ndarray) -> None:
        self.state, self.action = state, action


# The numbers of each store a dataset of this process holds, by (folder, identity, committed
# rows): a run's training, held-out and final evaluation datasets are one store's, and each
# had read it whole again (6.8 GB a copy at 45 M rows of 19 joints). Kept while a dataset
# holds them; the same identity and rows are the same numbers (an edit or a take changes one).
_NUMBERS: weakref.WeakValueDictionary[tuple[Any, ...], _Numbers] = weakref.WeakValueDictionary()


class ChunkDataset(Dataset):
    """Items: `observation.state` [S], `observation.images.<role>` uint8 [H, W, 3],
    `action` [chunk_len, A], `action_is_pad` [chunk_len], `task`, `episode_index`,
    `frame_index`."""

    def __init__(
        self,
        store_path: str | os.PathLike[str],
        chunk_len: int,
        episodes: Sequence[int] | None = None,
        image_keys: Sequence[str] | None = None,
    ) -> None:
        self.store_path = Path(store_path)
        store = EpisodeStore.open(self.store_path)
        require_intact(store)  # zarr would read a missing chunk as zeros
        for key in (STATE_KEY, ACTION_KEY):
            if key not in store.features:
                raise StoreError(f"{self.store_path.name} has no '{key}' feature; it has {', '.join(store.features)}")
        if len(store) == 0:
            raise StoreError(f"{self.store_path.name} has no episodes; record some first")
        all_images = [k for k, f in store.features.items() if f.kind is FeatureKind.IMAGE]
        self.image_keys = list(all_images if image_keys is None else image_keys)
        unknown = set(self.image_keys) - set(all_images)
        if unknown:
            raise StoreError(f"{self.store_path.name} has no camera {', '.join(sorted(unknown))}; it has {', '.join(all_images)}")
        self.features = store.features
        self.windows = ChunkWindows(store.episode_ends, chunk_len, episodes, action_offset=store.action_offset)
        self.tasks = [e.task for e in store.episodes]
        self.calibrations = [e.calibration_id for e in store.episodes]
        self.rate_hz = float(store.episodes[int(self.windows.episodes[0])].fps) if len(self.windows.episodes) else 0.0
        key = (str(self.store_path.resolve()), store.identity, store.num_frames)
        if (numbers := _NUMBERS.get(key)) is None:
            numbers = _NUMBERS[key] = _Numbers(  # copy=False: the rows just read are this one's own
                store.read(STATE_KEY, 0, store.num_frames).astype(np.float32, copy=False),
                store.read(ACTION_KEY, 0, store.num_frames).astype(np.float32, copy=False))
        self._numbers = numbers  # held while this dataset is: `_NUMBERS` keeps them only as long
        self._state, self._action = numbers.state, numbers.action
        # Frames are read as samples are, each process through its own store (a loader
        # worker reopens it), which must be the store these numbers came from.
        self._store: EpisodeStore | None = None
        self._store_pid = -1
        self._identity = store.identity
        self._episodes_read = len(store)  # the episodes whose numbers and boundaries these are

    def __len__(self) -> int:
        return len(self.windows)

    @property
    def identity(self) -> Any:
        """The store's `EpisodeStore.identity` when this dataset read its numbers."""
        return self._identity

    def __getstate__(self) -> dict[str, Any]:
        # A loader worker started by spawn or forkserver (macOS, and Linux from Python 3.14)
        # gets a pickled copy: not this process's open store, whose codec objects do not
        # pickle; the worker opens its own (`_images`), as a forked one does.
        return {**self.__dict__, "_store": None, "_store_pid": -1}

    def _images(self) -> EpisodeStore:
        """The store to read frames from: this process's own (a loader worker reopens it),
        pinned to the episodes this dataset read (`EpisodeStore.pin`), so that a recorder's
        d or r of a take recorded since is no obstacle, here or at a later read.
        Raises StoreError when it no longer holds those episodes as they were (a `dataset
        delete` renumbered it since, a d or r cut one of them): the frames would belong to
        other rows."""
        if self._store is None or self._store_pid != os.getpid():
            store = EpisodeStore.open(self.store_path)
            try:
                store.pin(self._identity, self._episodes_read)
            except StoreEditedError:
                store.close()
                raise StoreError(f"{self.store_path.name} was edited since training opened it (a `platform dataset "
                                 "delete` numbers its rows anew; a recorder's d or r records the last episode "
                                 "again): start the run again") from None
            self._store, self._store_pid = store, os.getpid()
        return self._store

    def __getitem__(self, index: int) -> dict[str, Any]:
        window = self.windows[index]
        item: dict[str, Any] = {
            # A copy of the row: `_state` is the per-process cache every dataset of this store
            # shares (`_NUMBERS`), and an in-place transform of a sample (`x -= mean`) through a
            # view rewrote it for them all, their stats included. The actions are copies already
            # (gathered by an index array), as are the frames (read per sample).
            STATE_KEY: torch.from_numpy(self._state[window.row].copy()),
            ACTION_KEY: torch.from_numpy(self._action[window.action_rows]),
            "action_is_pad": torch.from_numpy(window.is_pad),
            "task": self.tasks[window.episode],
            "episode_index": window.episode,
            "frame_index": window.frame,
        }
        if self.image_keys:
            # Every camera read, then the store looked at once (`read_many`), not once a
            # camera: the look is two stats, a tenth of a small frame's read.
            frames = self._images().read_many(self.image_keys, window.row, window.row + 1)
            for key, frame in frames.items():
                item[key] = torch.from_numpy(frame[0])
        return item

    def task_texts(self) -> list[str]:
        """The distinct task texts of the chosen episodes, sorted."""
        return sorted({self.tasks[int(e)] for e in self.windows.episodes})

    def joint_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The store's per-dimension names of state and action (empty when it has none)."""
        return self.features[STATE_KEY].names, self.features[ACTION_KEY].names

    def action_kinds(self) -> tuple[str, ...]:
        """The robot spec's kind of each action joint (revolute, linear, gripper), as the
        recorder stored it; empty for a store that does not say (older, or imported)."""
        return self.features[ACTION_KEY].kinds

    def calibration_ids(self) -> list[str]:
        """The distinct calibration ids the chosen episodes were recorded under, sorted: the
        joint frame the policy learns, which `deploy` checks against the robot's. Episodes
        that do not say (imported, or from older stores: "") add none."""
        return sorted({self.calibrations[int(e)] for e in self.windows.episodes} - {""})

    def start_state(self) -> np.ndarray:
        """float32[S]: the median over the chosen episodes of their first state, the pose
        the demonstrations typically began from (deploy moves the robot there before each
        episode, as the twin's episodes begin at its home pose)."""
        return np.median(self._state[self.windows.first_rows], axis=0).astype(np.float32)

    def fps(self) -> float:
        """The frame rate [Hz] the episodes were recorded at (a store keeps one): a chunk's
        actions are one period of it apart, so checkpoints record it for `eval --sim` and
        `deploy` to check against the robot's."""
        return self.rate_hz

    def stats(self, delta_dims: Sequence[int] = ()) -> dict[str, dict[str, np.ndarray]]:
        """Mean, std, min, max of state and action over the chosen episodes (normalization).
        With `delta_dims` (policy.actions=delta) the action's are over what the model
        predicts: every chunk entry, offset from its window's state on those dimensions, and
        `row_mean` keeps the mean absolute action (policy/action_space.py `offset_stats`)."""
        rows = self.windows.rows()
        out = {}
        for key, values in ((STATE_KEY, self._state[rows]), (ACTION_KEY, self._action[self.windows.action_rows()])):
            out[key] = {
                "mean": values.mean(0), "std": values.std(0),
                "min": values.min(0), "max": values.max(0),
            }
        if delta_dims:
            out[ACTION_KEY] = offset_stats(self._state, self._action, self.windows,
                                           mask_of(delta_dims, self._action.shape[1]))
        return out
