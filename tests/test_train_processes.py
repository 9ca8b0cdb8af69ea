"""`platform train` and `platform distill` under torchrun (two gloo processes, or rank 0 of
two alone; tiny preset, a few steps): settings those processes cannot train with are
refused before any work, in one line naming the section to fix; a rank whose peer stopped
says so in one line, not a traceback; the results and log lines are said once, by rank 0."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from read_only import read_only_command
from store_fixtures import make_store

# tiny models are all overhead: one thread avoids OpenMP spin-waits on a shared 2-core box.
ENV = subprocess_env(OMP_NUM_THREADS="1")
QUICK = ["--policy", "tiny", "--no-progress", "policy.train.workers=0"]
DISTILL = ["--layers", "1", "distill.sim_episodes=0", "distill.probe_windows=4", "distill.report=false"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "arm.zarr"
    make_store(path, episodes=4, length=12).close()
    return path


def _torchrun(*args: str, monitor_s: float = 0.1, wrap=None) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node 2 -m shallowpi -- ARGS` (the README's command); torchrun
    looks at its workers every `monitor_s` seconds and stops the others once one failed.
    `wrap` turns the command into another (`read_only_command`)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "--monitor-interval", str(monitor_s), "-m", "shallowpi", "--", *args]
    return subprocess.run(wrap(launch) if wrap else launch, env=ENV, capture_output=True, text=True, timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ours(stderr: str) -> list[str]:
    """The lines of stderr the platform printed: its errors, log lines and any traceback
    of a rank (torch prefixes those with [rankN]:), not torchrun's own report."""
    return [line for line in stderr.splitlines()
            if line.startswith(("error:", "[rank")) or re.match(r"\S+ [A-Z]+ shallowpi\.", line)]


def test_distill_refuses_an_ema_with_fsdp_before_training_the_teacher(store, tmp_path):
    """Found by the trainer, the student's EMA with FSDP was refused after the teacher had
    trained (an hour at π0 size) and the layers were chosen."""
    runs = tmp_path / "runs"
    done = _torchrun("distill", "--dataset", str(store), "--runs-dir", str(runs), *QUICK, "policy.train.steps=2",
                     *DISTILL, "policy.train.fsdp=true", "distill.train.ema=0.9")
    assert done.returncode != 0
    errors = _ours(done.stderr)
    # One line from each rank that got there first (each checks its own), nothing else of ours.
    assert errors and set(errors) == {
        "error: distill.train.ema is not supported with fsdp yet: turn one of them off (distill.train.ema=null, or "
        "distill.train.fsdp=false for plain DDP)"}, done.stderr[-3000:]
    assert not runs.exists(), sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))


@pytest.mark.parametrize(("command", "settings", "refusal"), [
    ("train", ["policy.train.batch_size=3"],
     "policy.train.batch_size 3 is not divisible by the 2 processes (each takes an equal share of every batch): "
     "give a multiple of 2"),
    ("train", ["policy.train.fsdp=true", "policy.train.ema=0.9"],
     "policy.train.ema is not supported with fsdp yet: turn one of them off (policy.train.ema=null, or "
     "policy.train.fsdp=false for plain DDP)"),
    # The teacher's settings when distill trains it; the student's before its teacher trains.
    ("distill", ["policy.train.batch_size=3"],
     "policy.train.batch_size 3 is not divisible by the 2 processes (each takes an equal share of every batch): "
     "give a multiple of 2"),
    ("distill", ["distill.train.batch_size=3"],
     "distill.train.batch_size 3 is not divisible by the 2 processes (each takes an equal share of every batch): "
     "give a multiple of 2"),
])
def test_settings_the_processes_cannot_train_with_are_refused_before_the_group_forms(store, tmp_path, command,
                                                                                    settings, refusal):
    """Rank 0 of the two processes torchrun's variables name, alone: it refuses before it
    joins the group (which would wait for rank 1 to the end of the timeout). The batch was
    refused by the trainer's data order: in train after the run folder's first files, in
    distill after the teacher's training and the student's config.yaml, split.json and
    distill.json, in a line that named no section."""
    runs = tmp_path / "runs"
    extra = DISTILL if command == "distill" else []
    rank0 = subprocess_env(OMP_NUM_THREADS="1", RANK="0", LOCAL_RANK="0", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(_free_port()))
    # Refused late, it would wait in the group for a rank 1 that never comes: to the timeout here.
    done = subprocess.run(platform_cmd(command, "--dataset", str(store), "--runs-dir", str(runs), *QUICK,
                                       "policy.train.steps=2", *extra, *settings),
                          env=rank0, capture_output=True, text=True, timeout=60)
    assert done.returncode == 4
    assert done.stderr.strip().splitlines() == [f"error: {refusal}"]
    assert not runs.exists(), sorted(str(p.relative_to(runs)) for p in runs.rglob("*"))


def test_a_rank_whose_peer_stopped_says_so_in_one_line(store, tmp_path):
    """Rank 0 cannot save (its checkpoints/ read-only) and stops with its one-line error; rank
    1, waiting on it in a collective (DDP's next forward; with FSDP an all-gather or the last
    barrier), printed 45-65 "[rank1]:" lines of traceback ending in gloo's "Connection
    closed by peer" below it."""
    run = tmp_path / "runs" / "ro"
    (run / "checkpoints").mkdir(parents=True)
    if read_only_command(run / "checkpoints", ["true"]) is None:
        pytest.skip("no way to make a folder read-only on this machine")
    # torchrun stops the other rank only at its next look, 2 s on: time for rank 1 to meet the loss.
    done = _torchrun("train", "--dataset", str(store), "--runs-dir", str(tmp_path / "runs"), "--run", "ro", *QUICK,
                     "policy.train.steps=4", "policy.train.save_every=1", monitor_s=2,
                     wrap=lambda launch: read_only_command(run / "checkpoints", launch))
    assert done.returncode != 0
    errors = [line for line in _ours(done.stderr) if "shallowpi.train.trainer" not in line]  # the warm-up warning
    assert len(errors) == 2, done.stderr[-3000:]
    assert errors[0].startswith(f"error: cannot write {run / 'checkpoints'}/.tmp_step_")
    assert errors[0].endswith("the file system is read-only; make it writable or give --runs-dir on another disk")
    assert errors[1].startswith("error: rank 1: another training process stopped (its error is above): "
                                "Connection closed by peer"), errors[1]


@pytest.mark.usefixtures("one_torch_thread")
def test_distill_says_its_results_and_log_lines_once(store, tmp_path):
    """Every rank printed "teacher:" and "student:" (a script reading them got two of each)
    and logged "teacher: reusing", "choosing the student's layers"... (train's "checkpoint:"
    line: tests/test_train_cli.py). A reused teacher's own settings are not checked against
    these processes (its batch of 3, trained by one): distill does not train it."""
    from shallowpi.cli import main

    runs = tmp_path / "runs"
    assert main(["train", "--dataset", str(store), "--runs-dir", str(runs), *QUICK, "policy.train.steps=2",
                 "policy.train.batch_size=3"]) == 0
    checkpoint = runs / "arm-tiny" / "checkpoints" / "step_000002"

    done = _torchrun("distill", "--dataset", str(store), "--runs-dir", str(runs), *QUICK, *DISTILL,
                     "policy.train.steps=2", "policy.train.batch_size=3", "distill.train.batch_size=4")
    assert done.returncode == 0, done.stderr[-3000:]
    student = runs / "arm-tiny-student1" / "checkpoints" / "step_000002"
    assert done.stdout.splitlines() == [f"teacher: {checkpoint}", f"student: {student} (teacher layers [0])"]
    logged = _ours(done.stderr)
    for said in ("teacher: reusing", "choosing the student's 1 layers", "student keeps teacher layers"):
        assert sum(said in line for line in logged) == 1, (said, logged)
    assert not [line for line in logged if line.startswith(("error:", "[rank"))], logged


def test_each_rule_names_the_section_and_holds_for_the_processes_it_is_given(monkeypatch):
    """The one check the Trainer and the commands share: a batch every process takes an
    equal share of; no EMA with FSDP in a process group, even of one process (FSDP shards
    there too); outside one, FSDP is off and the EMA whole. `launched` reads what torchrun set."""
    from shallowpi.train.distributed import Dist
    from shallowpi.train.trainer import TrainConfig, TrainingError, check_processes, launched

    with pytest.raises(TrainingError, match=r"^distill\.train\.batch_size 6 is not divisible by the 4 processes"):
        check_processes(TrainConfig(batch_size=6), "distill.train", Dist(1, 4, grouped=True))
    check_processes(TrainConfig(batch_size=8), "distill.train", Dist(1, 4, grouped=True))
    for grouped in (Dist(0, 1, grouped=True), Dist(0, 2, grouped=True)):
        with pytest.raises(TrainingError, match=r"^policy\.train\.ema is not supported with fsdp yet"):
            check_processes(TrainConfig(ema=0.9, fsdp=True), "policy.train", grouped)
    check_processes(TrainConfig(ema=0.9, fsdp=True, batch_size=3), "policy.train", Dist())

    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    assert launched() == Dist()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launched() == Dist()  # without MASTER_ADDR no group forms: one process of its own
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    assert launched() == Dist(1, 2, grouped=True)


@pytest.mark.parametrize("command", ["train", "distill"])
def test_one_gpu_named_for_every_process_is_refused_before_any_work(store, tmp_path, monkeypatch, capsys, command):
    """--device cuda:0 under torchrun (every rank on GPU 0) was refused by the trainer only:
    after the store's screening and the run folder's making, and in distill after that too."""
    from shallowpi.cli import main
    from shallowpi.train import distributed

    monkeypatch.setattr(distributed, "check_device", lambda name: name)  # no GPU here: only the rule is tested
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    runs = tmp_path / "runs"
    extra = DISTILL if command == "distill" else []
    code = main([command, "--dataset", str(store), "--runs-dir", str(runs), "--device", "cuda:0", *QUICK,
                 "policy.train.steps=2", *extra])
    assert code != 0
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        "error: --device cuda:0 names one GPU for every process under torchrun")
    assert not runs.exists()


def test_only_a_collective_s_loss_of_a_peer_becomes_one_line(monkeypatch):
    """gloo's "Connection closed by peer" (a plain RuntimeError) and NCCL's aborted
    communicator say another process of the run has gone; any other error (a bug, a timed-out
    rendezvous, a hung peer, an NCCL error on every rank) keeps its traceback (None), as does
    every one outside a run of several processes."""
    import torch.distributed as dist

    from shallowpi.cli import peer_stopped

    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:547] Connection closed by peer "
                        "[127.0.0.1]:60312")
    for name, value in (("RANK", "1"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "127.0.0.1")):
        monkeypatch.setenv(name, value)
    assert peer_stopped(gloo) == ("rank 1: another training process stopped (its error is above): Connection closed "
                                  "by peer [127.0.0.1]:60312")
    assert peer_stopped(dist.DistBackendError("NCCL communicator was aborted on rank 0.\nmore")) == (
        "rank 1: another training process stopped (its error is above): NCCL communicator was aborted on rank 0.")
    assert peer_stopped(RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")) is None
    # Failures of their own, which no other process printed: their traceback stays.
    for own in (dist.DistStoreError("Timed out after 901 seconds waiting for clients. 1/2 clients joined."),
                dist.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error"),
                RuntimeError("Gloo connectFullMesh failed with [../gloo/transport/tcp/pair.cc:144] no error"),
                RuntimeError("[../gloo/transport/tcp/unbound_buffer.cc:81] Timed out waiting 1800000ms for recv")):
        assert peer_stopped(own) is None, own
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert peer_stopped(gloo) is None
    monkeypatch.delenv("MASTER_ADDR")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert peer_stopped(gloo) is None
