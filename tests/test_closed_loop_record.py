"""tools/bench/closed_loop.py: its recording on two processes makes the store one makes (issue
13); its evaluation counts every seed asked or stops."""

from __future__ import annotations

import pytest

from bench_scripts import load_bench
from shallowpi.data.store import PROVENANCE_DIR, EpisodeStore


@pytest.mark.slow
def test_two_recording_processes_make_the_store_one_makes(tmp_path):
    closed_loop = load_bench("closed_loop")
    stage_cache = load_bench("stage_cache")

    stores = {}
    for workers in (1, 2):
        store = tmp_path / f"workers{workers}" / "arm.zarr"
        store.parent.mkdir()
        closed_loop.record("arm", store, 3, "32x32", 0.005, store.parent / "log.txt",
                           {"push_block_left": 0.01}, workers=workers)
        stores[workers] = store
    # Same scenes, noise and expert: the same arrays, episode by episode, in the same order.
    assert stage_cache.store_fingerprint(stores[2]) == stage_cache.store_fingerprint(stores[1])
    with EpisodeStore.open(stores[1]) as one, EpisodeStore.open(stores[2]) as two:
        described = [[(e.task, e.extra["seed"], e.extra["sim_noise"], e.success) for e in s.episodes]
                     for s in (one, two)]
        assert described[0] == described[1]
        assert [seed for _, seed, _, _ in described[1]] == list(range(6))
        assert two.check() == []
    # Every part's recording config came along; the parts are gone.
    assert len(list((stores[2] / PROVENANCE_DIR).glob("record-*.yaml"))) == 4
    assert not closed_loop.parts_of(stores[2]).exists()


def test_an_evaluation_worker_that_dies_stops_the_benchmark_rather_than_dropping_its_seeds(tmp_path):
    # Its part file missing, the rate was recomputed over the other workers' seeds and
    # published as if over all of them.
    closed_loop = load_bench("closed_loop")
    with pytest.raises(SystemExit, match=r"evaluation workers from seed\(s\) 1000, 1002 failed"):
        closed_loop.evaluate(tmp_path / "no_such_checkpoint", 4, tmp_path / "eval.json", tmp_path / "log.txt",
                             workers=2, ema=False)
