"""An error inside a data-loading worker ends `platform train`: its own one line, its exit
code, and the process gone (a real store, a real worker, in a subprocess)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import time

import pytest

from conftest import platform_cmd, subprocess_env
from policy_fakes import FakeChunks, tiny_policy
from shallowpi.data import EpisodeStore
from shallowpi.errors import StoreError
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.trainer import TrainConfig, Trainer
from store_fixtures import make_store

# tiny models are all overhead: one thread avoids OpenMP spin-waits on a shared 2-core box.
ENV = subprocess_env(OMP_NUM_THREADS="1")


def test_a_store_edited_under_a_run_with_a_worker_ends_it_in_one_line(tmp_path):
    """The recorder's d / r (or a `dataset delete`) while a run read frames through a loader
    worker: torch re-raised the worker's StoreEditedError as ~15 lines ("Caught
    StoreEditedError in DataLoader worker process 0. Original Traceback ..."), and the
    process then never exited: at exit Python SIGTERMs its daemon children and waits, and
    the workers ignore SIGTERM (the trainer's to handle) while torch's re-raise kept their
    iterator alive in a reference cycle."""
    store_path = tmp_path / "arm.zarr"
    make_store(store_path, episodes=4, length=16).close()
    run = tmp_path / "runs" / "edited"
    cmd = platform_cmd("train", "--dataset", str(store_path), "--policy", "tiny", "--runs-dir", str(run.parent),
                       "--run", run.name, "--no-progress", "policy.train.log_every=1", "policy.train.workers=1",
                       "policy.train.steps=100000", "policy.train.save_every=100000")
    # Its own session: on a hang the worker is killed with the trainer (SIGKILL: it ignores SIGTERM).
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while (not metrics.is_file() or metrics.read_text().count("\n") < 3) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        with EpisodeStore.open(store_path, "a") as store:
            store.drop_last_episode()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError("train did not exit after its loader worker's error") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = err.strip().splitlines()
    assert proc.returncode == StoreError.exit_code, err
    assert lines[-1].startswith("error: arm.zarr was edited while this reader had it open"), err
    assert "Caught" not in err and "Traceback" not in err, err
    assert [line for line in lines if line.startswith("error:")] == [lines[-1]], err


class _FailsInTheWorker(FakeChunks):
    """Raises `error` for item `at_item` onwards, in a loader worker only."""

    def __init__(self, at_item: int, error: Exception) -> None:
        super().__init__()
        self.trainer_pid, self.at_item, self.error = os.getpid(), at_item, error

    def __getitem__(self, i):
        if os.getpid() != self.trainer_pid:
            self.at_item -= 1
            if self.at_item < 0:
                raise self.error
        return super().__getitem__(i)


def _fit(data: FakeChunks, run) -> None:
    cfg = TrainConfig(steps=100, batch_size=4, save_every=100, log_every=1, workers=1, progress=False,
                      tensorboard=False)
    Trainer(FlowMatchingObjective(tiny_policy(FakeChunks())), data, cfg, run).fit()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_platform_error_in_a_worker_is_its_own_message_and_the_workers_end(tmp_path):
    """The error, not torch's "Caught StoreError in DataLoader worker process 0. Original
    Traceback ...", and no worker left for the exit to wait on."""
    message = "arm.zarr: chunk file data/action/c/3 is damaged; run `platform dataset check`"
    with pytest.raises(StoreError) as caught:
        _fit(_FailsInTheWorker(4 * 3, StoreError(message)), tmp_path)
    assert str(caught.value) == message
    assert multiprocessing.active_children() == []


@pytest.mark.usefixtures("one_torch_thread")
def test_any_error_in_a_worker_ends_the_workers_with_the_run(tmp_path):
    """A bug (not a PlatformError) keeps torch's traceback, and the run still ends."""
    with pytest.raises(ValueError, match="Caught ValueError in DataLoader worker process 0"):
        _fit(_FailsInTheWorker(4 * 3, ValueError("a bug")), tmp_path)
    assert multiprocessing.active_children() == []
