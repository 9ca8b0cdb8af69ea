"""A recorder's d / r beside readers: the drop of a take a reader never saw leaves it reading.

Every drop of the last episode counted one more in-place edit, and every reader open
meanwhile (a training run, its loader workers) failed at its next read, though only rows
past its own were cut: a run killed by `record --resume` dropping a fresh take. The commit
record now lists what each drop kept, and a reader refuses only an edit that took one of
its episodes (or swapped in another store: a delete).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import subprocess_env
from shallowpi.data import EpisodeStore
from shallowpi.data.training import ChunkDataset
from shallowpi.errors import StoreEditedError, StoreError
from store_fixtures import make_store, synthetic_frame

FRONT = "observation.images.front"


def _take(store: EpisodeStore, length: int = 7, seed: int = 9) -> None:
    """Record one take into the writable `store`, as the recorder does."""
    writer = store.begin_episode("the next take", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(seed)
    for t in range(length):
        writer.add_frame(synthetic_frame(rng, t), t / 30.0)
    writer.commit(success=True)


def _take_and_drop(path: Path, takes: int = 1) -> None:
    """Another handle's recording session: `takes` times a take recorded and dropped (d)."""
    with EpisodeStore.open(path, mode="a") as store:
        for k in range(takes):
            _take(store, seed=k)
            store.drop_last_episode()


def test_a_reader_reads_on_past_the_drop_of_a_take_another_process_recorded_after_it_opened(tmp_path):
    """The reproduced failure: a training run's reader, and `record --resume` in another
    process adding a take and dropping it."""
    path = tmp_path / "t1.zarr"
    make_store(path, episodes=3, length=10).close()
    reader = EpisodeStore.open(path)
    before = reader.read(FRONT, 0, reader.num_frames)
    script = ("import sys; sys.path.insert(0, sys.argv[2]); from test_store_drop_readers import _take_and_drop; "
              "from pathlib import Path; _take_and_drop(Path(sys.argv[1]), takes=2)")
    subprocess.run([sys.executable, "-c", script, str(path), str(Path(__file__).parent)], check=True,
                   env=subprocess_env(), timeout=120)
    np.testing.assert_array_equal(reader.read(FRONT, 0, reader.num_frames), before)
    assert reader.episode(2).length == 12 and len(reader) == 3
    reader.require_unchanged()  # what `dataset check` asks after reading frames from their files


def test_a_reader_reads_on_past_a_drop_after_which_the_next_take_fills_the_rows_again(tmp_path):
    """d, then the take recorded again, and r: the rows past the reader's are filled and cut
    again; its own are as they were."""
    path = tmp_path / "k.zarr"
    make_store(path, episodes=2, length=10).close()
    reader = EpisodeStore.open(path)
    state = reader.read("observation.state", 0, reader.num_frames)
    with EpisodeStore.open(path, mode="a") as store:
        _take(store)
        store.drop_last_episode()
        _take(store, length=13)  # kept: a reader opened now sees it
        _take(store)
        store.drop_last_episode()
    np.testing.assert_array_equal(reader.read("observation.state", 0, reader.num_frames), state)
    assert reader.read(FRONT, reader.num_frames - 1, reader.num_frames).shape == (1, 24, 32, 3)


@pytest.mark.parametrize("edit", ["drop its last episode", "drop a later take, then its last episode",
                                  "delete an episode it never saw"])
def test_an_edit_that_takes_a_readers_episodes_is_still_refused(tmp_path, edit):
    """A drop of an episode the reader read (after one of a take it never saw too), and any
    delete (which swaps a new store in, renumbered): the reader would pair its numbers with
    the next take's frames, or another store's."""
    path = tmp_path / "k.zarr"
    make_store(path, episodes=3, length=10).close()
    reader = EpisodeStore.open(path)
    with EpisodeStore.open(path, mode="a") as store:
        if edit == "delete an episode it never saw":
            _take(store)
            store.delete_episodes([3])
        else:
            if edit == "drop a later take, then its last episode":
                _take(store)
                store.drop_last_episode()
            store.drop_last_episode()
            _take(store, length=12)
    with pytest.raises(StoreEditedError, match=r"k\.zarr was edited while this reader had it open"):
        reader.read(FRONT, 0, 2)


def test_a_store_whose_record_does_not_list_its_drops_is_refused_as_before(tmp_path):
    """A drop by a version that keeps no list writes the commit record without one (so does
    any of its commits): a reader opened before cannot tell what it cut, and is refused. A
    reader opened after it reads on past the drops that follow."""
    path = tmp_path / "old.zarr"
    make_store(path, episodes=3, length=10).close()
    reader = EpisodeStore.open(path)
    _take_and_drop(path)
    meta = path / "meta" / ".zattrs"
    record = json.loads(meta.read_text())
    assert record["commit"]["cuts"] == {"since": 0, "kept": [[1, 3]]}
    del record["commit"]["cuts"]
    meta.write_text(json.dumps(record))  # as an older shallowpi writes it
    with pytest.raises(StoreEditedError, match="was edited while this reader had it open"):
        reader.read(FRONT, 0, 2)
    later = EpisodeStore.open(path)
    _take_and_drop(path)
    assert later.read(FRONT, 0, 2).shape[0] == 2
    assert json.loads(meta.read_text())["commit"]["cuts"] == {"since": 1, "kept": [[2, 3]]}


def test_the_list_of_drops_stays_short_and_never_lets_a_cut_reader_read_on():
    """Drops between kept takes list rising counts; the list keeps the latest CUTS_LISTED.
    Against the whole history: a reader is let on only when no drop since its opening took
    one of its episodes, and is refused only when that happened or its opening is older
    than the list."""
    from shallowpi.data.store_cuts import CUTS_LISTED, kept_since, with_cut

    rng = np.random.default_rng(0)
    cuts: tuple[int, list[tuple[int, int]]] = (0, [])
    history: list[int] = []  # episodes kept by drop 1, 2, ...
    episodes = 5
    for edit in range(1, 150):
        episodes = max(1, episodes + int(rng.integers(-2, 4)))
        history.append(episodes)
        cuts = with_cut(cuts, edit, episodes)
        assert len(cuts[1]) <= CUTS_LISTED
        for after in range(edit + 1):
            for count in (1, 3, 8, 20):
                intact = all(kept >= count for kept in history[after:])
                allowed = kept_since(edit, cuts, after, count)
                assert not allowed or intact, (edit, after, count)
                assert allowed or not intact or after < cuts[0], (edit, after, count)
    assert cuts[0] > 0  # the list did forget: a reader from before it is refused


def test_a_training_set_and_its_workers_read_on_past_a_dropped_take_they_never_saw(tmp_path):
    """The run read the numbers of 3 episodes; the recorder added a 4th and dropped it in the
    middle of the run: the process that samples and a loader worker that opens the store
    after the drop each go on, on the 3 episodes it trains on."""
    path = tmp_path / "t1.zarr"
    make_store(path, episodes=3, length=10).close()
    dataset = ChunkDataset(path, chunk_len=4, image_keys=[FRONT])
    last = len(dataset) - 1
    expected = dataset[last][FRONT].numpy()  # its store is open in this process now
    worker = pickle.loads(pickle.dumps(dataset))  # a loader worker's copy: it opens the store itself
    _take_and_drop(path)
    np.testing.assert_array_equal(dataset[last][FRONT].numpy(), expected)
    np.testing.assert_array_equal(worker[last][FRONT].numpy(), expected)


def test_a_loader_worker_that_opened_the_store_with_a_take_in_it_reads_on_past_its_drop(tmp_path):
    """A worker (started each epoch) that opened the store while the recorder's take was in
    it: its store holds 4 episodes, the run trains on 3, and the drop of the 4th cut none of
    them (`EpisodeStore.pin`), nor the next take recorded into its rows."""
    path = tmp_path / "t1.zarr"
    make_store(path, episodes=3, length=10).close()
    dataset = ChunkDataset(path, chunk_len=4, image_keys=[FRONT])
    last = len(dataset) - 1
    expected = dataset[last][FRONT].numpy()
    with EpisodeStore.open(path, mode="a") as store:
        _take(store)
        late = pickle.loads(pickle.dumps(dataset))
        np.testing.assert_array_equal(late[last][FRONT].numpy(), expected)  # opened with the take in it
        store.drop_last_episode()
        np.testing.assert_array_equal(late[last][FRONT].numpy(), expected)
        _take(store, length=9)  # recorded again: the rows past the run's are filled anew
    np.testing.assert_array_equal(late[last][FRONT].numpy(), expected)


def test_a_training_set_whose_own_episode_was_dropped_stops_with_one_line(tmp_path):
    """A d or r of an episode the run trains on: its frames would be the next take's."""
    path = tmp_path / "t1.zarr"
    make_store(path, episodes=3, length=10).close()
    dataset = ChunkDataset(path, chunk_len=4, image_keys=[FRONT])
    assert dataset[0][FRONT].shape == (24, 32, 3)
    worker = pickle.loads(pickle.dumps(dataset))
    with EpisodeStore.open(path, mode="a") as store:
        store.drop_last_episode()
        _take(store, length=12)
    with pytest.raises(StoreError, match="was edited while this reader had it open"):
        dataset[len(dataset) - 1]
    with pytest.raises(StoreError, match=r"t1\.zarr was edited since training opened it .* start the run again"):
        worker[0]


@pytest.mark.bad_store
def test_a_skip_nonfinite_run_builds_its_evaluation_set_past_a_dropped_take_it_never_saw(tmp_path):
    """With skip_nonfinite each dataset is checked against the store's screening, which
    required the very same edit count: the evaluation set, built after the training, was
    refused for a recorder's d of a take recorded meanwhile. One that took a screened
    episode is still refused."""
    from shallowpi.train.store_checks import checked_factory
    from test_train_data_checks import _store

    path = _store(tmp_path / "nan.zarr", [{}] * 3 + [{"nan": [("observation.state", 2)]}])

    def chunks(store, chunk_len, episodes):
        return ChunkDataset(store, chunk_len=chunk_len, episodes=episodes)

    make = checked_factory(path, [0, 1, 2, 3], chunks, True)
    train = make(path, 4, [0, 1, 2])
    with EpisodeStore.open(path, mode="a") as store:  # a take recorded and dropped (d), as the recorder does
        writer = store.begin_episode("reach", robot="arm", calibration_id="cal-a", fps=30)
        rng = np.random.default_rng(1)
        for t in range(12):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        writer.commit(success=True)
        store.drop_last_episode()
    assert len(train) and train[0] is not None
    assert len(make(path, 4, [3]))  # the evaluation set: its windows clear of the NaN row
    with EpisodeStore.open(path, mode="a") as store:
        store.drop_last_episode()  # a screened episode gone
    with pytest.raises(StoreError, match="edited between its screening and its loading"):
        make(path, 4, [0])
