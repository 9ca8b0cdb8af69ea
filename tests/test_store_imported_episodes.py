"""Episodes without a recording time (LeRobot imports) are still one recording each: a
merge refuses one twice, and training names each one apart and alike across imports.

A LeRobot dataset keeps no time of recording; an import stamped each episode with its own
clock, so two imports of one dataset looked like other recordings to a merge (6 episodes
from 3, rc 0) and to training (a student on the second import did not know its teacher's
episodes). Imports now store 0.0; an import made before that is told by its uncounted
dropped frames. The stores here are made as such imports are (`stamp_episode`); the
LeRobot round trip itself is in test_lerobot_interop.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from shallowpi.data import EpisodeStore
from shallowpi.data.store import EpisodeInfo, StoreSettings
from shallowpi.errors import StoreError
from store_fixtures import arm_features, make_store, stamp_episode, synthetic_frame

ONE_RECORDING = r"hold the same numbers, and one of them has no recording time"


def _as_imported(path: Path, start_time: float = 0.0) -> None:
    """Make every episode of the closed store at `path` look imported from LeRobot:
    dropped frames not counted, and `start_time` (0.0 now; the import's clock before)."""
    with EpisodeStore.open(path) as store:
        count = len(store)
    for index in range(count):
        stamp_episode(path, index, start_time=start_time + index if start_time else 0.0, dropped_frames=None)


def _open(tmp_path: Path, *names: str) -> list[EpisodeStore]:
    return [EpisodeStore.open(tmp_path / f"{name}.zarr") for name in names]


def test_an_imported_episode_is_one_recording_with_any_episode_of_its_numbers(tmp_path):
    make_store(tmp_path / "a.zarr", episodes=2, length=5).close()
    make_store(tmp_path / "b.zarr", episodes=2, length=5).close()  # the same numbers, recorded at other times
    for name in ("import1", "import2"):
        shutil.copytree(tmp_path / "a.zarr", tmp_path / f"{name}.zarr")
        _as_imported(tmp_path / f"{name}.zarr")
    shutil.copytree(tmp_path / "a.zarr", tmp_path / "older.zarr")
    _as_imported(tmp_path / "older.zarr", start_time=1.7e9)  # imported before: the import's own clock

    # Two recordings whose numbers agree (a deterministic twin, two policies' rollouts): both kept.
    assert len(EpisodeStore.merge(_open(tmp_path, "a", "b"), tmp_path / "ab.zarr")) == 4
    # An export to LeRobot imported back, beside the store it came from.
    with pytest.raises(StoreError, match=rf"^a.zarr episode 0 and import1.zarr episode 0 {ONE_RECORDING}"):
        EpisodeStore.merge(_open(tmp_path, "a", "import1"), tmp_path / "round.zarr")
    with pytest.raises(StoreError, match=rf"^b.zarr episode 0 and older.zarr episode 0 {ONE_RECORDING}"):
        EpisodeStore.merge(_open(tmp_path, "b", "older"), tmp_path / "old.zarr")
    with pytest.raises(StoreError, match=rf"^import1.zarr episode 0 and import2.zarr episode 0 {ONE_RECORDING}"):
        EpisodeStore.merge(_open(tmp_path, "import1", "import2"), tmp_path / "dup.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.zarr", "ab.zarr", "b.zarr", "import1.zarr", "import2.zarr", "older.zarr"]


def test_an_episode_one_import_holds_twice_is_no_reason_to_refuse_a_merge(tmp_path):
    """A LeRobot dataset may hold one episode twice: the merge adds no copy of it."""
    store = EpisodeStore.create(tmp_path / "twice.zarr", arm_features(), StoreSettings(durable=False))
    for _ in range(2):
        rng = np.random.default_rng(0)
        writer = store.begin_episode("task", robot="arm", fps=30)
        for t in range(5):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        writer.commit(dropped_frames=None)
    store.close()
    _as_imported(tmp_path / "twice.zarr")
    make_store(tmp_path / "other.zarr", episodes=1, length=5, seed=3).close()
    assert len(EpisodeStore.merge(_open(tmp_path, "twice", "other"), tmp_path / "m.zarr")) == 3


def test_training_names_imported_episodes_by_their_numbers_and_recorded_ones_as_before():
    """Named by start time, length and task, every episode of one length and task of an
    import would be one scene (a student would move them all out of its held-out set);
    named by the import's clock, no two imports of a dataset had an episode in common."""
    from shallowpi.train.finetune import _recording

    imported = dict(length=8, task="push the block", start_time=0.0, dropped_frames=None)
    first = EpisodeInfo(index=0, checksums={"action": "aa", "timestamp": "tt"}, **imported)
    second = EpisodeInfo(index=1, checksums={"action": "bb", "timestamp": "tt"}, **imported)
    again = EpisodeInfo(index=0, checksums={"action": "aa", "timestamp": "tt"}, **imported)
    assert _recording(first) != _recording(second)
    assert _recording(first) == _recording(again)
    # Recorded episodes keep the identity runs have recorded (a resume compares them).
    recorded = EpisodeInfo(index=0, length=8, task="push the block", start_time=1765000000.25,
                           checksums={"action": "aa"})
    assert _recording(recorded) == "1765000000.25 8 push the block"
