"""The background writer: order, commit/discard, measured back-pressure, failure surfacing."""

from __future__ import annotations

import numpy as np
import pytest

from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.store import StoreSettings
from shallowpi.record.writer import BackgroundWriter
from store_fixtures import arm_features, synthetic_frame


def test_episodes_arrive_in_order_and_discards_leave_nothing(tmp_path, rng):
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    committed = []
    writer = BackgroundWriter(store, capacity_frames=64, on_commit=committed.append)
    for episode, (length, keep) in enumerate([(12, True), (7, False), (9, True)]):
        writer.begin(episode, f"task {episode}", robot="arm", fps=30)
        for t in range(length):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit(success=True) if keep else writer.discard()
    writer.close()
    assert [info.task for info in committed] == ["task 0", "task 2"]
    assert [info.length for info in committed] == [12, 9]
    assert store.check() == []
    assert writer.stats().pending_episodes == 0


def test_a_full_queue_blocks_and_is_measured_never_dropped(tmp_path, rng):
    big = {"observation.images.cam": Feature.image(480, 640), "observation.state": Feature.vector(["a"]),
           "action": Feature.vector(["a"])}
    store = EpisodeStore.create(tmp_path / "s.zarr", big, StoreSettings(durable=False, image_batch=1))
    writer = BackgroundWriter(store, capacity_frames=2)
    writer.begin(0, "flood")
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # slow to encode on purpose
    waited = sum(writer.add_frame({"observation.images.cam": noise, "observation.state": np.zeros(1),
                                   "action": np.zeros(1)}, t / 30) for t in range(20))
    writer.commit()
    writer.close()
    stats = writer.stats()
    assert waited > 0 and stats.backpressure_s >= waited  # the commit may wait too
    assert stats.high_water == 2
    assert store.episode(0).length == 20  # every frame arrived


def test_writer_failure_reaches_the_loop(tmp_path, rng):
    store = EpisodeStore.create(tmp_path / "s.zarr", arm_features(), StoreSettings(durable=False))
    writer = BackgroundWriter(store, capacity_frames=4)
    writer.begin(0, "bad frames")
    writer.add_frame({"action": np.zeros(6)}, 0.0)  # lacks features: the writer thread fails
    writer._thread.join(10)
    assert not writer.alive and "lacks" in writer.stats().error
    with pytest.raises(RuntimeError, match="writer stopped"):
        writer.add_frame(synthetic_frame(rng, 0), 0.0)
