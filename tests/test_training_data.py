"""Windows over episode boundaries and the torch dataset, with DataLoader workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shallowpi.data.training import ChunkDataset
from shallowpi.data.windows import ChunkWindows
from shallowpi.errors import StoreError
from store_fixtures import make_store


def test_windows_pad_at_the_episode_end_and_never_cross_it():
    windows = ChunkWindows(np.array([3, 7]), chunk_len=4)
    assert len(windows) == 7
    last_of_first = windows[2]
    assert (last_of_first.episode, last_of_first.row, last_of_first.frame) == (0, 2, 2)
    assert last_of_first.action_rows.tolist() == [2, 2, 2, 2]
    assert last_of_first.is_pad.tolist() == [False, True, True, True]
    first_of_second = windows[3]
    assert (first_of_second.episode, first_of_second.row, first_of_second.frame) == (1, 3, 0)
    assert first_of_second.action_rows.tolist() == [3, 4, 5, 6]
    assert not first_of_second.is_pad.any()


def test_windows_over_chosen_episodes():
    windows = ChunkWindows(np.array([3, 7, 9]), chunk_len=2, episodes=[2, 0])
    assert len(windows) == 5
    assert [windows[i].row for i in range(5)] == [7, 8, 0, 1, 2]
    with pytest.raises(StoreError, match="out of range"):
        ChunkWindows(np.array([3]), 2, episodes=[1])


def test_dataset_items_match_the_store(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    dataset = ChunkDataset(tmp_path / "s.zarr", chunk_len=5)
    assert len(dataset) == store.num_frames == 21
    item = dataset[12]  # episode 1, frame 2
    episode = store.read_episode(1)
    assert (item["episode_index"], item["frame_index"], item["task"]) == (1, 2, "put the red cube in the bowl")
    np.testing.assert_array_equal(item["observation.state"].numpy(), episode["observation.state"][2])
    np.testing.assert_array_equal(item["action"].numpy(), episode["action"][2:7])
    np.testing.assert_array_equal(item["observation.images.wrist"].numpy(), episode["observation.images.wrist"][2])
    end = dataset[20]
    assert end["action_is_pad"].tolist() == [False, True, True, True, True]
    np.testing.assert_array_equal(end["action"].numpy(), np.repeat(episode["action"][-1:], 5, axis=0))
    stats = dataset.stats()
    all_actions = store.read("action", 0, 21)
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(0), rtol=1e-5)


def test_dataloader_workers_decode_images(tmp_path):
    make_store(tmp_path / "s.zarr", episodes=2, length=8)
    dataset = ChunkDataset(tmp_path / "s.zarr", chunk_len=3, image_keys=["observation.images.front"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    images = torch.cat([b["observation.images.front"] for b in batches])
    assert images.shape == (17, 24, 32, 3) and images.dtype == torch.uint8
    np.testing.assert_array_equal(images[9].numpy(), dataset[9]["observation.images.front"].numpy())
    assert "observation.images.wrist" not in batches[0]


def test_workers_started_by_forkserver_decode_images_after_the_main_process_read_a_sample(tmp_path):
    """Training reads one sample before its loader starts (the features): the dataset then
    held an open store whose codec objects do not pickle, and a worker started by spawn or
    forkserver (macOS; Linux from Python 3.14) failed at the first batch."""
    make_store(tmp_path / "s.zarr", episodes=2, length=8)
    dataset = ChunkDataset(tmp_path / "s.zarr", chunk_len=3, image_keys=["observation.images.front"])
    first = dataset[0]["observation.images.front"]
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, num_workers=1, shuffle=False,
                                         multiprocessing_context="forkserver")
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["observation.images.front"][0].numpy(), first.numpy())


def test_dataset_errors_are_one_line(tmp_path):
    make_store(tmp_path / "s.zarr", episodes=1, length=3)
    with pytest.raises(StoreError, match=r"no camera observation\.images\.side"):
        ChunkDataset(tmp_path / "s.zarr", chunk_len=2, image_keys=["observation.images.side"])


def test_windows_can_start_one_row_after_the_observation():
    windows = ChunkWindows(np.array([3, 7]), chunk_len=3, action_offset=1)
    assert windows[0].action_rows.tolist() == [1, 2, 2]
    assert windows[0].is_pad.tolist() == [False, False, True]
    assert windows[2].is_pad.all()  # the last observation of an episode has no action after it
    assert windows[3].action_rows.tolist() == [4, 5, 6]


def _naive_windows(ends: list[int], chunk_len: int, episodes: list[int], offset: int) -> list[tuple]:
    """Every window spelled out one row at a time: (episode, row, frame, action rows, is_pad)."""
    out = []
    for e in episodes:
        start, stop = (ends[e - 1] if e else 0), ends[e]
        for frame in range(stop - start):
            wanted = [start + frame + offset + j for j in range(chunk_len)]
            out.append((e, start + frame, frame, [min(w, stop - 1) for w in wanted], [w > stop - 1 for w in wanted]))
    return out


@pytest.mark.parametrize("ends, chunk_len, episodes, offset", [
    ([3, 7], 4, None, 0),                   # chunks longer than an episode pad at its end
    ([1, 2, 9, 10], 3, None, 1),            # one-row episodes: their window is all padding
    ([3, 7, 9, 20], 1, [3, 0, 2], 0),       # chosen out of order, a one-action chunk
    ([5, 5, 12], 8, [2, 1, 0], 1),          # an empty episode (a 0-frame import) holds no window
    ([4, 8], 2, [], 0),                     # no episode chosen: no window
])
def test_one_window_is_the_batch_rows_for_every_index(ends, chunk_len, episodes, offset):
    """`windows[i]` (one index, a loader's every item) takes its own path in plain ints:
    the same episode, rows and padding as `chunk_rows` (batches) and as the rows spelled
    out, for every window: each episode's first and last, and the padded ends."""
    windows = ChunkWindows(np.array(ends), chunk_len, episodes, action_offset=offset)
    expected = _naive_windows(ends, chunk_len, list(range(len(ends))) if episodes is None else episodes, offset)
    assert len(windows) == len(expected)
    rows, action_rows, is_pad = windows.chunk_rows()
    for i, (episode, row, frame, actions, pad) in enumerate(expected):
        window = windows[i]
        assert (window.episode, window.row, window.frame) == (episode, row, frame), i
        assert all(type(v) is int for v in (window.episode, window.row, window.frame))
        assert window.action_rows.tolist() == actions == action_rows[i].tolist(), i
        assert window.is_pad.tolist() == pad == is_pad[i].tolist(), i
        assert window.action_rows.dtype == action_rows.dtype and window.is_pad.dtype == np.bool_
        assert rows[i] == row
        assert windows[np.int64(i)].row == row  # a numpy index (a sampler's) reads the same
    for outside in (-1, len(windows)):
        with pytest.raises(IndexError):
            windows[outside]


def test_each_window_owns_its_arrays():
    """A sample's tensors share its window's arrays (torch.from_numpy): no two windows may."""
    windows = ChunkWindows(np.array([6]), chunk_len=3)
    first, again = windows[0], windows[0]
    first.action_rows[:] = -1
    first.is_pad[:] = True
    assert again.action_rows.tolist() == [0, 1, 2] and not again.is_pad.any()
    assert windows[0].action_rows.tolist() == [0, 1, 2]


def _as_format_1(path) -> None:
    """Rewrite a store's header as one recorded before 2026-11-29 (action before observation)."""
    from shallowpi.data import zarr_compat

    group = zarr_compat.open_group(path, mode="r+")
    header = group.attrs.asdict()["shallowpi"]
    group.attrs.put({"shallowpi": {**header, "version": 1}})


def test_format_1_stores_train_on_the_actions_that_followed_each_observation(tmp_path):
    from shallowpi.data import EpisodeStore
    from store_fixtures import arm_features

    make_store(tmp_path / "old.zarr", episodes=2, length=10).close()
    make_store(tmp_path / "new.zarr", episodes=1, length=10).close()
    _as_format_1(tmp_path / "old.zarr")
    with EpisodeStore.open(tmp_path / "old.zarr") as old:
        assert (old.version, old.action_offset) == (1, 1)
        episode = old.read_episode(1)
    dataset = ChunkDataset(tmp_path / "old.zarr", chunk_len=5)
    item = dataset[12]  # episode 1, frame 2
    np.testing.assert_array_equal(item["observation.state"].numpy(), episode["observation.state"][2])
    np.testing.assert_array_equal(item["action"].numpy(), episode["action"][3:8])
    # The action's statistics are over the actions some chunk trains on: not an episode's
    # first row's, which no observation is paired with in this format.
    with EpisodeStore.open(tmp_path / "old.zarr") as old:
        targets = np.concatenate([old.read_episode(e)["action"][1:] for e in (0, 1)])
    np.testing.assert_allclose(dataset.stats()["action"]["mean"], targets.mean(0), rtol=1e-6)
    # Appending today's recordings, or merging with a format-2 store, would mix the pairings.
    with pytest.raises(StoreError, match=r"format 1 .* record into another --dataset"):
        EpisodeStore.open_or_create(tmp_path / "old.zarr", arm_features())
    with (
        EpisodeStore.open(tmp_path / "old.zarr") as old,
        EpisodeStore.open(tmp_path / "new.zarr") as new,
        pytest.raises(StoreError, match="pair actions with observations differently"),
    ):
        EpisodeStore.merge([old, new], tmp_path / "mixed.zarr")
    assert not (tmp_path / "mixed.zarr").exists()
    # Compaction keeps the store's format (and so its pairing).
    with EpisodeStore.open(tmp_path / "old.zarr", mode="a") as old:
        old.delete_episodes([0])
    with EpisodeStore.open(tmp_path / "old.zarr") as old:
        assert old.version == 1 and len(old) == 1


def test_format_1_exports_pair_each_observation_with_the_next_action(tmp_path):
    from shallowpi.data import EpisodeStore
    from shallowpi.data.lerobot_export import _following_actions

    make_store(tmp_path / "old.zarr", episodes=1, length=10).close()
    _as_format_1(tmp_path / "old.zarr")
    with EpisodeStore.open(tmp_path / "old.zarr") as old:
        actions = old.read("action", 0, 10)
        # Read in blocks as the export does, the last block a single row.
        got = np.concatenate([_following_actions(old, a, b, 10) for a, b in ((0, 4), (4, 9), (9, 10))])
    np.testing.assert_array_equal(got, np.concatenate([actions[1:], actions[-1:]]))



def test_the_rate_is_the_stores(tmp_path):
    from shallowpi.data.store import EpisodeStore
    from store_fixtures import arm_features, synthetic_frame

    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features())
    rng = np.random.default_rng(0)
    for _ in range(2):
        writer = store.begin_episode("wave", robot="arm", calibration_id="cal-test", fps=15)
        for t in range(4):
            writer.add_frame(synthetic_frame(rng, t), t / 15.0)
        writer.commit()
    store.close()
    assert ChunkDataset(tmp_path / "s.zarr", 2, episodes=[1]).fps() == 15.0


def test_a_training_set_whose_store_a_delete_replaced_stops_with_one_line(tmp_path):
    """The set holds the store's numbers from its opening; frames are read as it samples,
    a loader worker opening the store anew: after a `dataset delete` they would belong to
    other rows (or be zeros), so the set refuses, in the process that opened it and in a
    worker alike."""
    from shallowpi.data import EpisodeStore

    make_store(tmp_path / "k.zarr", episodes=3, length=20).close()
    dataset = ChunkDataset(tmp_path / "k.zarr", chunk_len=4)
    worker = ChunkDataset(tmp_path / "k.zarr", chunk_len=4)
    assert dataset[0]["observation.state"].shape == (6,)  # its store is open in this process now
    with EpisodeStore.open(tmp_path / "k.zarr", mode="a") as store:
        store.delete_episodes([0])
    with pytest.raises(StoreError, match="was edited while this reader had it open"):
        dataset[len(dataset) - 1]
    with pytest.raises(StoreError, match=r"edited since training opened it .* start the run again"):
        worker[0]  # its first frame read opens the store: the new folder
    assert ChunkDataset(tmp_path / "k.zarr", chunk_len=4)[0]["observation.state"].shape == (6,)


def test_a_sample_whose_second_camera_a_delete_damaged_is_refused_as_an_edit(tmp_path):
    """A sample reads its cameras, then looks at the store once (not after each camera):
    when a later camera's read fails in a store edited meanwhile, the refusal is still the
    edit's, as the look after the first camera's read gave it, not the damage it left."""
    from shallowpi.data import EpisodeStore
    from shallowpi.errors import StoreEditedError

    path = tmp_path / "k.zarr"
    make_store(path, episodes=3, length=10).close()
    dataset = ChunkDataset(path, chunk_len=4)
    assert len(dataset.image_keys) == 2
    last = len(dataset) - 1
    assert dataset[last]["episode_index"] == 2  # its store is open in this process now
    with EpisodeStore.open(path, mode="a") as store:
        store.delete_episodes([0])
    row = dataset.windows[last].row  # in the new store, past the end of its rows
    chunk = path / "data" / dataset.image_keys[-1] / f"{row}.0.0.0"
    chunk.write_bytes(b"\xff\xd8" + b"\0" * 100)  # a JPEG cut short: its read fails
    with pytest.raises(StoreEditedError, match="was edited while this reader had it open"):
        dataset[last]


def test_datasets_of_one_store_share_its_numbers_until_it_changes(tmp_path, rng):
    """A run's training, held-out and final evaluation datasets each read the whole store's
    state and action again (three copies, 6.8 GB each at 45 M rows): datasets of one store
    as it is share one copy; a take recorded since is other numbers, read anew."""
    from shallowpi.data.store import EpisodeStore
    from store_fixtures import synthetic_frame

    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=6).close()
    train, held_out = ChunkDataset(path, 4, [0, 1]), ChunkDataset(path, 4, [2])
    assert train._state is held_out._state and train._action is held_out._action
    with EpisodeStore.open(path, mode="a") as store:
        writer = store.begin_episode("t", robot="arm", calibration_id="cal-test", fps=30)
        for t in range(5):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit()
    later = ChunkDataset(path, 4, [3])
    assert later._state is not train._state and len(later._state) == len(train._state) + 5
    np.testing.assert_array_equal(later._state[: len(train._state)], train._state)


@pytest.mark.bad_store
def test_a_store_found_whole_is_not_listed_again_until_its_files_change(tmp_path, monkeypatch):
    """`require_intact` listed every camera's chunk files for each dataset and check of one
    run's setup (four or five listings: minutes each at tens of millions of frames). A store
    found whole is taken as whole while its identity, rows and folders are unchanged; a
    chunk file removed since is still found."""
    from shallowpi.data import store_files
    from shallowpi.data.store import EpisodeStore

    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=6).close()
    listed: list[str] = []
    real_scan = store_files.scan_files
    monkeypatch.setattr(store_files, "scan_files", lambda store: listed.append(store.path.name) or real_scan(store))
    ChunkDataset(path, 4, [0])
    ChunkDataset(path, 4, [1])
    with EpisodeStore.open(path) as store:
        store_files.require_intact(store)
    assert listed == ["s.zarr"]
    next((path / "data" / "observation.images.front").glob("0.*")).unlink()
    with pytest.raises(StoreError, match="chunk file missing"):
        ChunkDataset(path, 4, [0])
    assert listed == ["s.zarr", "s.zarr"]
