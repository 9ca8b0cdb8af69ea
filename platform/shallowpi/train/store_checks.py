"""What `platform train` checks of a store before step 0, and the skipping of bad windows.

- Frame rates: a store whose episodes mix fps is refused (a chunk of 50 rows would span
  1.7 s in one episode and 3.3 s in another; one policy cannot learn both).
- Calibration ids: mixed ids are a warning (the same joint value may mean another pose
  on another calibration, but re-calibrating one arm is common and often harmless).
- Twin scenes of `eval --sim`'s held-out seeds (a `deploy --sim --record` store's): a
  warning, as evaluation would then score scenes the policy learned.
- Non-finite numbers in `observation.state` or `action`: named (feature, episode, row)
  and refused, or with policy.train.skip_nonfinite=true the windows that touch them are
  skipped (their count logged) and normalisation statistics use the finite rows only.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from shallowpi.data.nonfinite import NonFinite, bad_rows, find_nonfinite, windows_touching
from shallowpi.errors import StoreError
from shallowpi.policy.action_space import mask_of, offset_stats
from shallowpi.train.errors import TrainingError
from shallowpi.train.finetune import DatasetFactory

log = logging.getLogger(__name__)

STATE_KEY = "observation.state"
ACTION_KEY = "action"

@dataclass
class StoreScreen:
    """The numbers of a store that training reads, and where they are not finite."""

    store: Path
    episode_ends: np.ndarray  # [E] cumulative row counts
    arrays: dict[str, np.ndarray]  # state, action: [N, D] float32
    nonfinite: list[NonFinite]
    identity: Any = None  # EpisodeStore.identity when read: the dataset must read the same store

    def bad(self, key: str) -> np.ndarray:
        """[N] bool: rows where `key` holds a non-finite number."""
        return bad_rows(self.arrays[key])


def screen_store(store: Path, episodes: list[int]) -> StoreScreen:
    """Refuse mixed frame rates, warn on mixed calibration ids, find non-finite values in
    the chosen episodes. Raises TrainingError (mixed fps), StoreError (unreadable store)."""
    from shallowpi.data.store import EpisodeStore

    with EpisodeStore.open(store) as s:
        infos = [s.episodes[e] for e in episodes]
        _check_one_rate(store, [(e, i.fps) for e, i in zip(episodes, infos)])
        _warn_mixed_calibration(store, [(e, i.calibration_id) for e, i in zip(episodes, infos)])
        _warn_held_out_scenes(store, [(e, i.extra.get("seed")) for e, i in zip(episodes, infos)])
        arrays = {key: s.read(key, 0, s.num_frames) for key in (STATE_KEY, ACTION_KEY) if key in s.features}
        ends = np.asarray(s.episode_ends, dtype=np.int64)
        identity = s.identity
    found = [f for key, values in arrays.items() for f in find_nonfinite(key, values, ends, episodes)]
    return StoreScreen(store, ends, arrays, sorted(found, key=lambda f: (f.episode, f.feature)), identity)


def _episode_list(episodes: list[int]) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    runs: list[list[int]] = []
    for e in sorted(episodes):
        if runs and e == runs[-1][-1] + 1:
            runs[-1].append(e)
        else:
            runs.append([e])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 2 else ", ".join(map(str, r)) for r in runs)


def _grouped(values: list[tuple[int, Any]]) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for episode, value in values:
        groups.setdefault(value, []).append(episode)
    return groups


def _check_one_rate(store: Path, fps: list[tuple[int, float]]) -> None:
    groups = _grouped([(e, float(f)) for e, f in fps])
    if len(groups) > 1:
        parts = "; ".join(f"{f:g} fps in episodes {_episode_list(eps)}" for f, eps in sorted(groups.items()))
        keep = max(groups, key=lambda f: len(groups[f]))
        others = sorted(e for f, eps in groups.items() if f != keep for e in eps)
        raise TrainingError(
            f"{store.name} mixes frame rates ({parts}): an action chunk would span different times; "
            f"train on one rate: a copy without the others (platform dataset delete COPY --episode "
            f"{' '.join(map(str, others))}) or a new dataset"
        )


def _warn_mixed_calibration(store: Path, ids: list[tuple[int, str]]) -> None:
    groups = _grouped(ids)
    if len(groups) > 1:
        parts = "; ".join(f"{cid or '(none)'!s} in episodes {_episode_list(eps)}" for cid, eps in sorted(groups.items()))
        log.warning("%s mixes calibration ids (%s): the same joint value may be another pose "
                    "across them; check the calibrations match before trusting this policy", store.name, parts)


def _warn_held_out_scenes(store: Path, seeds: list[tuple[int, Any]]) -> None:
    """Warn when training takes twin episodes of `eval --sim`'s held-out scenes: `platform
    record` never records them, but `deploy --sim --record` keeps its rollouts' (from seed
    1000), and `eval --sim` would then score scenes the policy learned."""
    if all(seed is None for _, seed in seeds):
        return
    from shallowpi.robots.sim.episode import EVAL_SEEDS

    held_out = [e for e, seed in seeds if seed is not None and int(seed) in EVAL_SEEDS]
    if held_out:
        log.warning("%s: episodes %s are twin scenes of eval --sim's held-out seeds (%d..): `eval --sim` would "
                    "score scenes this policy trained on; leave them out (a copy without them: `platform dataset "
                    "delete COPY --episode ...`)", store.name, _episode_list(held_out), EVAL_SEEDS.start)


def checked_factory(store: Path, episodes: list[int], make_dataset: DatasetFactory,
                    skip_nonfinite: bool) -> DatasetFactory:
    """`screen_store`, then `screened`: the factory `finetune` should build datasets with."""
    return screened(make_dataset, screen_store(store, episodes), skip_nonfinite)


def screened(make_dataset: DatasetFactory, screen: StoreScreen, skip_nonfinite: bool) -> DatasetFactory:
    """`make_dataset` when the store's numbers are finite; else a TrainingError naming where
    they are not, or (skip_nonfinite) a factory whose datasets skip the windows touching them."""
    if not screen.nonfinite:
        return make_dataset
    if not skip_nonfinite:
        shown = "; ".join(f.describe() for f in screen.nonfinite[:3])
        more = f" and {len(screen.nonfinite) - 3} more episode/feature(s)" if len(screen.nonfinite) > 3 else ""
        raise TrainingError(
            f"{screen.store.name} holds non-finite values: {shown}{more}; delete those episodes "
            "(platform dataset delete) or pass policy.train.skip_nonfinite=true to skip the windows that touch them"
        )

    return FiniteFactory(make_dataset, screen)


class FiniteFactory:
    """A DatasetFactory whose datasets skip the windows touching a non-finite value
    (`FiniteWindows`), and which says which episodes keep a window to evaluate on."""

    def __init__(self, make_dataset: DatasetFactory, screen: StoreScreen) -> None:
        self.make_dataset, self.screen = make_dataset, screen

    def __call__(self, store: Path, chunk_len: int, episodes: list[int] | None) -> Dataset:
        return FiniteWindows(self.make_dataset(store, chunk_len, episodes), self.screen)

    def evaluable(self, store: Path, chunk_len: int, episodes: list[int]) -> list[int]:
        """The episodes of `episodes` left with a window to score, said in one log line when
        some are not (every window touches a non-finite value). For the held-out episodes:
        one wholly NaN refused the whole run before step 0 ("nothing is left to train on")
        though it was never to be trained on; the split keeps it held out, unscored."""
        windows = self.make_dataset(store, chunk_len, episodes).windows
        touching = windows_touching(windows, self.screen.episode_ends, self.screen.bad(STATE_KEY),
                                    self.screen.bad(ACTION_KEY))
        # Each window's episode: the one whose rows hold its observation row.
        kept = set(np.searchsorted(self.screen.episode_ends, windows.rows()[~touching], side="right").tolist())
        if left := [e for e in episodes if e not in kept]:
            log.warning("held-out episodes %s left out of the evaluation: every window of theirs touches a "
                        "non-finite value (policy.train.skip_nonfinite); they are not trained on either",
                        _episode_list(left))
        return [e for e in episodes if e in kept]


def _screened_rows(dataset: Any, screen: StoreScreen) -> bool:
    """Whether `dataset` reads the rows `screen` screened: opened at the screen's identity,
    or since then the store kept every episode the screen saw (a recorder's d or r of a take
    recorded after the screening cuts none of them: the evaluation set built after hours of
    training was refused for it)."""
    identity = getattr(dataset, "identity", None)
    if identity in (None, screen.identity):
        return True
    from shallowpi.data.store import EpisodeStore

    with EpisodeStore.open(screen.store) as store:  # the record now: a cut of the screened episodes stays in it
        return store.still_holds(screen.identity, len(screen.episode_ends)) and \
            store.still_holds(identity, len(screen.episode_ends))


class FiniteWindows(Dataset):
    """A ChunkDataset without the windows that touch a non-finite state or action row.

    Items are the dataset's; `stats()` is over the chosen episodes' finite rows only.
    Raises TrainingError when no window is left.
    """

    def __init__(self, dataset: Any, screen: StoreScreen) -> None:
        if not _screened_rows(dataset, screen):
            # The mask and the statistics would be the screened rows', the samples another
            # store's (a recorder's d or r and a new take in between): a NaN then trained.
            raise StoreError(f"{screen.store.name} was edited between its screening and its loading (a `dataset "
                             "delete`, or a recorder's d or r): start the run again")
        self.dataset, self.screen = dataset, screen
        touching = windows_touching(dataset.windows, screen.episode_ends, screen.bad(STATE_KEY), screen.bad(ACTION_KEY))
        self.index = np.flatnonzero(~touching)
        skipped = int(touching.sum())
        episodes = sorted({f.episode for f in screen.nonfinite} & {int(e) for e in dataset.windows.episodes})
        if skipped:
            log.warning("skipping %d of %d windows that touch non-finite values (episodes %s; "
                        "policy.train.skip_nonfinite)", skipped, len(touching), _episode_list(episodes))
        if len(self.index) == 0 and len(touching):
            raise TrainingError(f"every window of episodes {_episode_list(list(dataset.windows.episodes))} "
                                "touches a non-finite value; nothing is left to train on")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.dataset[int(self.index[i])]

    def task_texts(self) -> list[str]:
        """The wrapped dataset's: every chosen episode's text, even one left with no window."""
        return self.dataset.task_texts()

    def joint_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The wrapped dataset's state and action names."""
        return self.dataset.joint_names()

    def action_kinds(self) -> tuple[str, ...]:
        """The wrapped dataset's joint kinds of the action (empty when the store does not say)."""
        return self.dataset.action_kinds()

    def fps(self) -> float:
        """The wrapped dataset's frame rate [Hz]."""
        return self.dataset.fps()

    def calibration_ids(self) -> list[str]:
        """The wrapped dataset's calibration ids."""
        return self.dataset.calibration_ids()

    def start_state(self) -> np.ndarray:
        """float32[S]: `ChunkDataset.start_state` over the chosen episodes whose first state
        is finite (the pose deploy moves the robot to; without it a run that skipped one
        bad row saved no start pose). TrainingError when no episode's first state is."""
        first = self.dataset.windows.first_rows
        finite = first[~self.screen.bad(STATE_KEY)[first]]
        if len(finite) == 0:
            raise TrainingError("every chosen episode starts from a non-finite state; nothing says where they began")
        return np.median(self.screen.arrays[STATE_KEY][finite].astype(np.float32), axis=0).astype(np.float32)

    def stats(self, delta_dims: Sequence[int] = ()) -> dict[str, dict[str, np.ndarray]]:
        """Mean, std, min, max of state and action over the chosen episodes' finite rows;
        with `delta_dims`, the action's over the kept windows' chunks, offset from their
        state on those dimensions (`ChunkDataset.stats`)."""
        out = {}
        for key in (STATE_KEY, ACTION_KEY):
            rows = self.dataset.windows.rows() if key == STATE_KEY else self.dataset.windows.action_rows()
            finite = rows[~self.screen.bad(key)[rows]]
            values = self.screen.arrays[key][finite].astype(np.float32)
            out[key] = {"mean": values.mean(0), "std": values.std(0), "min": values.min(0), "max": values.max(0)}
        if delta_dims:  # over the kept windows: none touches a non-finite value
            state, action = (self.screen.arrays[k].astype(np.float32) for k in (STATE_KEY, ACTION_KEY))
            out[ACTION_KEY] = offset_stats(state, action, self.dataset.windows, mask_of(delta_dims, action.shape[1]),
                                           index=self.index)
        return out
