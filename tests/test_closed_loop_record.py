"""tools/bench/closed_loop.py: its recording on two processes makes the store one makes (issue
13); its evaluation counts every seed asked or stops."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from bench_scripts import load_bench
from shallowpi.data.store import PROVENANCE_DIR, EpisodeStore
from store_fixtures import make_store


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


def test_a_recording_stopped_mid_take_keeps_nothing_of_that_take(tmp_path):
    """A stop (Ctrl-C: run_child's SIGTERM) mid-take: record.on_interrupt's default, save,
    kept the take cut short, and the rerun's --resume went on from the next seed, so that
    seed was never recorded whole and the store was not the one an unstopped run makes."""
    closed_loop = load_bench("closed_loop")
    store = tmp_path / "part.zarr"
    args = [f"telemetry.address={tmp_path}/t.sock" if a.startswith("telemetry.address=") else a
            for a in closed_loop._record_args("arm", "cube_in_bowl", store, 1, "32x32", 0.0)]
    with subprocess.Popen([sys.executable, "-m", "shallowpi", *args, "--seed", "3"], text=True,
                          env=closed_loop.platform_env(PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT) as proc:
        said = []
        for line in proc.stdout:  # ends at the recorder's exit, should the take never start
            said.append(line)
            if "recording episode 0" in line:
                proc.send_signal(signal.SIGTERM)
                break
        said.append(proc.communicate(timeout=120)[0])
    assert any("recording episode 0" in line for line in said), "".join(said)[-3000:]
    with EpisodeStore.open(store) as kept:
        assert len(kept) == 0, [(e.length, e.extra) for e in kept.episodes]


def test_a_part_stopped_in_its_first_take_records_its_own_seeds(tmp_path, monkeypatch):
    """A part store that exists with no episode (its recorder stopped in its first take) was
    continued with --resume alone, which records from seed 0: worker 1 recorded worker 0's
    scenes (the merge refused the repeats on every rerun). Each part is now given its next
    seed, --resume with it when the part exists; `record` keeps the seed asked."""
    from shallowpi.record.rig import first_seed
    from shallowpi.robots.sim.tasks import make_tasks

    closed_loop = load_bench("closed_loop")
    store = tmp_path / "arm.zarr"
    parts = closed_loop.parts_of(store)
    first = next(iter(make_tasks("arm")))
    make_store(parts / f"0-{first}-0.zarr", episodes=1, scene_seeds=[0]).close()  # worker 0: seed 0 of its 0, 1
    make_store(parts / f"0-{first}-1.zarr", episodes=0).close()  # worker 1: stopped in its first take (seed 2)
    asked: list[list[str]] = []

    def launched(*args: str, log=None) -> subprocess.CompletedProcess:
        """The commands, not run (a recording takes seconds); the merge fails, ending it there."""
        asked.append(list(args))
        return subprocess.CompletedProcess(list(args), int(args[0] == "dataset"))

    monkeypatch.setattr(closed_loop, "platform", launched)
    with pytest.raises(SystemExit, match="merging the recorded parts failed"):
        closed_loop.record_parallel("arm", store, 4, "32x32", 0.0, tmp_path / "log.txt", {}, workers=2)
    # What follows _record_args's own words (the telemetry address is its last), by part.
    where = {a[a.index("--dataset") + 1]: a[[x.startswith("telemetry.address=") for x in a].index(True) + 1:]
             for a in asked if a[0] == "record"}
    second = list(make_tasks("arm"))[1]
    assert where == {f"0-{first}-0": ["--seed", "1", "--resume"], f"0-{first}-1": ["--seed", "2", "--resume"],
                     f"1-{second}-0": ["--seed", "4"], f"1-{second}-1": ["--seed", "6"]}
    with EpisodeStore.open(parts / f"0-{first}-1.zarr") as empty:
        assert first_seed(empty, 2, 2) == 2  # what record records from with both flags
        assert first_seed(empty, None, 2) == 0  # with --resume alone: worker 0's seeds


def test_an_evaluation_worker_that_dies_stops_the_benchmark_rather_than_dropping_its_seeds(tmp_path):
    # Its part file missing, the rate was recomputed over the other workers' seeds and
    # published as if over all of them.
    closed_loop = load_bench("closed_loop")
    with pytest.raises(SystemExit, match=r"evaluation workers from seed\(s\) 1000, 1002 failed"):
        closed_loop.evaluate(tmp_path / "no_such_checkpoint", 4, tmp_path / "eval.json", tmp_path / "log.txt",
                             workers=2, ema=False)
