"""Training under a process group: one stop signal delivered twice (directly and by
torchrun), the group's collective timeout, an FSDP resume read by rank 0 alone, a run begun
from --init whose weights rank 0 alone reads, and the group left without torch's
deprecation warning."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from conftest import subprocess_env
from dist_checks import crash_traces, join_within, leave_group
from policy_fakes import FakeChunks, logged_losses, tiny_policy
from shallowpi.errors import PlatformError
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.train import interrupt
from shallowpi.train.checkpoint import latest_checkpoint
from shallowpi.train.finetune import finetune
from shallowpi.train.interrupt import StopRequest, TrainingInterrupted
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.trainer import TrainConfig, Trainer, TrainingError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, save_every=2,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, world: int, port: int, **env: str) -> None:
    """In a spawned worker: the variables torchrun would set."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), **env)
    torch.set_num_threads(1)


# -- one stop request, delivered twice


class _StopSentTwice(FakeChunks):
    """A stop sent to a process group under torchrun (systemd's KillMode=control-group,
    SLURM's scancel, `kill 0`): the trainer gets `signum` directly and, milliseconds later,
    again as torchrun forwards it. Both are sent here while item `at_item` is read (workers=0:
    in the trainer itself)."""

    def __init__(self, at_item: int, signum: int) -> None:
        super().__init__()
        self.at_item, self.signum, self.calls = at_item, signum, 0

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at_item:
            os.kill(os.getpid(), self.signum)
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(i)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_one_stop_delivered_twice_still_saves_the_step(tmp_path, signum):
    """Counted as "asked twice", the forwarded copy stopped the run at once, without the
    stop's checkpoint: a full-size π0 run (torchrun --nproc_per_node 1) lost every step
    since its last `save_every` checkpoint."""
    data = FakeChunks()
    raised: BaseException | None = None
    try:  # not pytest.raises: a KeyboardInterrupt getting through would end the whole session
        Trainer(FlowMatchingObjective(tiny_policy(data)), _StopSentTwice(4 * 3 + 1, signum),
                _cfg(steps=100, save_every=100), tmp_path).fit()
    except BaseException as exc:
        raised = exc
    assert isinstance(raised, TrainingInterrupted), f"stopped by {raised!r}, not after saving its step"
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step 4; checkpoint step_000004 saved" in str(raised)
    assert latest_checkpoint(tmp_path).name == "step_000004"


class _CopyDuringTheFinalSave(Trainer):
    """The stop's other copy arriving only as the stop's checkpoint is written (torchrun
    forwarding it late: a loaded machine, a big rank's save)."""

    signum = signal.SIGTERM

    def save(self, step: int):
        os.kill(os.getpid(), self.signum)
        return super().save(step)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_the_stops_other_copy_during_its_save_does_not_stop_the_save(tmp_path, signum, own_signals):
    """The final save ran after the stop handler was given back: the copy met the command's
    handler (`platform`'s own: SIGTERM and SIGHUP as Ctrl-C) and raised KeyboardInterrupt
    inside the save (without it, SIGTERM's default killed the process): no checkpoint."""
    from shallowpi.commands.console import interrupt_on_signals

    interrupt_on_signals()  # what `platform train` runs under (cli.main); own_signals puts them back
    trainer = _CopyDuringTheFinalSave(FlowMatchingObjective(tiny_policy(FakeChunks())),
                                      _StopSentTwice(4 * 3 + 1, signum), _cfg(steps=100, save_every=100), tmp_path)
    trainer.signum = signum
    raised: BaseException | None = None
    try:  # not pytest.raises: a KeyboardInterrupt getting through would end the whole session
        trainer.fit()
    except BaseException as exc:
        raised = exc
    assert isinstance(raised, TrainingInterrupted), f"stopped by {raised!r}, not after saving its step"
    assert f"stopped by {signal.Signals(signum).name} after step 4; checkpoint step_000004 saved" in str(raised)
    assert latest_checkpoint(tmp_path).name == "step_000004"


def test_a_second_stop_later_or_another_signal_still_stops_at_once(monkeypatch):
    """A person's second Ctrl-C (pressed because the step is slow) does not wait for it; nor
    does another stop signal right after the first. Both give the default handlers back."""
    monkeypatch.setattr(interrupt, "REPEAT_S", 0.2)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # the same request, twice delivered
        assert stop.requested and stop.signal_name == "SIGINT"
        time.sleep(0.3)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs between bytecodes: here at the latest
        assert signal.getsignal(signal.SIGTERM) is not stop._handle
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGHUP)
            time.sleep(1)
        assert stop.signal_name == "SIGTERM"


@pytest.mark.slow
def test_a_stop_to_the_trainer_and_to_torchrun_saves_the_step(tmp_path):
    """The reproduction: `kill -TERM <rank> <torchrun>` (what a group-wide stop amounts to)
    under the README's `torchrun --nproc_per_node 1` printed "interrupted" and left the
    checkpoints behind the metrics."""
    import psutil

    from store_fixtures import make_store

    make_store(tmp_path / "arm.zarr", episodes=3, length=16).close()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "shallowpi", "--", "train", "--dataset", str(tmp_path / "arm.zarr"), "--policy", "tiny",
           "--runs-dir", str(tmp_path), "--run", "r", "--no-progress", "policy.train.steps=5000",
           "policy.train.save_every=5000", "policy.train.log_every=1", "policy.train.workers=0",
           # A step longer than torchrun takes to forward the signal (a real model's are): a
           # tiny one at its preset's batch could finish and save before the copy arrived.
           "policy.train.batch_size=32"]
    launcher = subprocess.Popen(cmd, env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
    try:
        metrics = tmp_path / "r" / "metrics.jsonl"
        deadline = time.monotonic() + 180
        while (not metrics.is_file() or metrics.read_text().count("\n") < 3) and time.monotonic() < deadline:
            assert launcher.poll() is None, launcher.stderr.read()[-3000:]
            time.sleep(0.05)
        ranks = [p for p in psutil.Process(launcher.pid).children() if "shallowpi" in " ".join(p.cmdline())]
        assert len(ranks) == 1, ranks
        os.kill(ranks[0].pid, signal.SIGTERM)
        os.kill(launcher.pid, signal.SIGTERM)
        _, err = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    logged = logged_losses(tmp_path / "r")[-1][0] + 1
    assert "stopped by SIGTERM after step" in err, err[-3000:]
    assert latest_checkpoint(tmp_path / "r").name == f"step_{logged:06d}", err[-3000:]


# -- the group's timeout


def _timeout_worker(rank: int, world: int, folder: str, port: int, timeout_s: str) -> None:
    """Joins with SHALLOWPI_DIST_TIMEOUT_S=`timeout_s` (unset when empty) and writes the
    group's timeout; of two, rank 1 then waits in a barrier that rank 0 never enters."""
    crash_traces()
    from shallowpi.train.distributed import init_distributed

    _join_group(rank, world, port)
    os.environ.pop("SHALLOWPI_DIST_TIMEOUT_S", None)
    if timeout_s:
        os.environ["SHALLOWPI_DIST_TIMEOUT_S"] = timeout_s
    import torch.distributed as dist

    init_distributed(torch.device("cpu"))
    # No reference to the group kept: leave_group checks that leaving frees it.
    backend = dist.distributed_c10d._get_default_group()._get_backend(torch.device("cpu"))
    seen: dict[str, object] = {"timeout_s": backend.options._timeout.total_seconds()}
    del backend
    out = Path(folder) / f"rank{rank}.json"
    if world == 1:
        out.write_text(json.dumps(seen))
        dist.barrier()  # a collective, as a run has done before it leaves
        leave_group()
        return
    if rank == 1:
        start = time.monotonic()
        try:
            dist.barrier()
            seen["barrier"] = "passed"
        except Exception as exc:  # gloo's error for a peer that did not come
            seen["barrier"] = str(exc)
        seen["waited_s"] = time.monotonic() - start
        out.write_text(json.dumps(seen))
    else:
        deadline = time.monotonic() + 15  # long past the 2 s asked for
        while not (Path(folder) / "rank1.json").is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
        out.write_text(json.dumps(seen))
    os._exit(0)  # the group is broken: no orderly leave


@pytest.mark.slow
def test_a_collective_waits_for_a_peer_as_long_as_shallowpi_dist_timeout_s_says(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_timeout_worker, args=(2, str(tmp_path), _free_port(), "2"), nprocs=2, join=True)
    seen = json.loads((tmp_path / "rank1.json").read_text())
    assert seen["timeout_s"] == 2
    assert seen["barrier"] != "passed" and "timed out" in seen["barrier"].lower(), seen
    assert seen["waited_s"] < 10, seen


def test_the_group_waits_an_hour_by_default_not_torchs_minutes(tmp_path):
    """A π0 checkpoint (~50 GB, synced) written by rank 0 while the others wait in the next
    collective outlasted NCCL's 10-minute default on slow storage: its watchdog killed the
    job mid-save."""
    import torch.multiprocessing as mp

    mp.spawn(_timeout_worker, args=(1, str(tmp_path), _free_port(), ""), nprocs=1, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text())["timeout_s"] == 3600


@pytest.mark.parametrize("given", ["ten", "0", "-5", "inf", "nan"])
def test_a_timeout_that_is_not_a_positive_number_of_seconds_is_one_line(monkeypatch, given):
    from shallowpi.train.distributed import group_timeout

    monkeypatch.setenv("SHALLOWPI_DIST_TIMEOUT_S", given)
    with pytest.raises(PlatformError, match=rf"^SHALLOWPI_DIST_TIMEOUT_S='{given}': give the seconds .* a positive "
                                            r"number$"):
        group_timeout()
    monkeypatch.setenv("SHALLOWPI_DIST_TIMEOUT_S", " 90.5 ")
    assert group_timeout().total_seconds() == 90.5


# -- leaving the group


def _leave_worker(rank: int, world: int, folder: str, port: int) -> None:
    crash_traces()
    from shallowpi.train.distributed import init_distributed

    _join_group(rank, world, port)
    init_distributed(torch.device("cpu"))
    torch.distributed.barrier()  # a collective, as a run has done before it leaves
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        leave_group()
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps([f"{w.category.__name__}: {w.message}" for w in caught]))


def test_leaving_the_group_warns_of_nothing(tmp_path):
    """Every torchrun run ended with "FutureWarning: torch.distributed.reduce_op is
    deprecated" from each process: the scan for device meshes read that object's class."""
    import torch.multiprocessing as mp

    mp.spawn(_leave_worker, args=(1, str(tmp_path), _free_port()), nprocs=1, join=True)
    assert json.loads((tmp_path / "rank0.json").read_text()) == []


# -- an FSDP resume


def _resume_worker(rank: int, world: int, run: str, port: int) -> None:
    """Resumes `run` sharded (FSDP) and writes the checkpoint files each process opened."""
    crash_traces()
    import safetensors
    import safetensors.torch

    _join_group(rank, world, port)
    opened: list[str] = []
    real_open, real_load = safetensors.safe_open, safetensors.torch.load_file

    def recorded_open(filename, *args, **kwargs):
        opened.append(str(filename))
        return real_open(filename, *args, **kwargs)

    def recorded_load(filename, *args, **kwargs):
        opened.append(str(filename))
        return real_load(filename, *args, **kwargs)

    # The library's own readers, looked up at each call (checkpoint.py, Policy.load).
    safetensors.safe_open, safetensors.torch.load_file = recorded_open, recorded_load
    data = FakeChunks()
    trainer = Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(fsdp=True), Path(run), resume=True)
    (Path(run) / f"opened{rank}.json").write_text(json.dumps(opened))
    trainer.fit()
    del trainer  # its sharded policy holds the group
    leave_group()


def _same_run(one: Path, two: Path, step: str) -> None:
    """The runs in `one` and `two` logged the same losses and saved the same weights at `step`."""
    for (_, a), (_, b) in zip(logged_losses(one), logged_losses(two)):
        assert a == pytest.approx(b, rel=1e-4)
    w1 = Policy.load(one / "checkpoints" / step).state_dict()
    w2 = Policy.load(two / "checkpoints" / step).state_dict()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.slow
def test_a_sharded_resume_reads_the_checkpoint_on_rank_0_only_and_continues_the_run(tmp_path):
    """Read by every process, the whole model and optimizer state were in host memory once
    per process at an FSDP resume (~310 GB for 8 processes of π0), where the save gathers them
    on rank 0 only: a run that saved could not resume on its node. Rank 0 reads and
    broadcasts; the run resumed on 2 processes (from a single process's checkpoint) still
    replays the single run's loss curve to the same weights."""
    import shutil

    import torch.multiprocessing as mp

    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(), tmp_path / "one").fit()
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    shutil.rmtree(tmp_path / "two" / "checkpoints" / "step_000004")
    (tmp_path / "two" / "checkpoints" / "last").write_text("step_000002")
    mp.spawn(_resume_worker, args=(2, str(tmp_path / "two"), _free_port()), nprocs=2, join=True)

    read = [[p for p in json.loads((tmp_path / "two" / f"opened{r}.json").read_text()) if "checkpoints" in p]
            for r in (0, 1)]
    assert read[0], "rank 0 read no checkpoint file"
    assert read[1] == [], f"rank 1 read the checkpoint itself: {read[1]}"
    assert [s for s, _ in logged_losses(tmp_path / "two")] == [0, 1, 2, 3]
    _same_run(tmp_path / "one", tmp_path / "two", "step_000004")


def _failing_resume_worker(rank: int, world: int, run: str, port: int) -> None:
    crash_traces()
    from shallowpi.train.trainer import TrainingError

    _join_group(rank, world, port)
    data = FakeChunks()
    try:
        Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(fsdp=True), Path(run), resume=True)
    except TrainingError as exc:
        (Path(run) / f"error{rank}.txt").write_text(str(exc))
    leave_group()


@pytest.mark.slow
def test_a_damaged_checkpoint_stops_every_process_of_a_sharded_resume_in_one_line(tmp_path):
    """Only rank 0 reads the files: its refusal must reach the others, which would otherwise
    wait for its tensors until the group's timeout."""
    import torch.multiprocessing as mp

    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=2), tmp_path).fit()
    state = tmp_path / "checkpoints" / "step_000002" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    context = mp.spawn(_failing_resume_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=False)
    join_within(context, 120, "rank 1 waiting for rank 0's tensors?")
    errors = [(tmp_path / f"error{r}.txt").read_text() for r in (0, 1)]
    assert errors[0] == errors[1]
    assert "train_state.safetensors cannot be read" in errors[0] and "the checkpoint is damaged" in errors[0]


# -- a run begun from --init


def _init_weights(folder: Path, kind: str) -> Path:
    """The tiny preset's policy for FakeChunks, seeded otherwise than any run here (seed 7):
    as one of our checkpoints ("ours"), or its model's weights under lerobot's names in a
    lerobot/openpi π0 directory ("pi0")."""
    from safetensors.torch import save_file

    from shallowpi.policy.weights import key_mapping

    data = FakeChunks(episodes=8)
    torch.manual_seed(7)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    if kind == "ours":
        policy.save(folder)
    else:
        folder.mkdir(parents=True)
        own = policy.model.state_dict()
        save_file({theirs: own[ours].contiguous() for ours, theirs in key_mapping(policy.cfg).items()},
                  str(folder / "model.safetensors"))
    return folder


def _tune_from(init: Path, run: Path, fsdp: bool) -> None:
    """`platform train --init INIT` in short: 2 steps on FakeChunks, checkpointed at step 2."""

    def make(store, chunk, episodes):
        return FakeChunks(episodes=8, chunk_len=chunk, select=episodes)

    finetune(run / "store.zarr", load_preset("tiny"), _cfg(steps=2, fsdp=fsdp), run, episodes=list(range(8)),
             make_dataset=make, init_from=init)


def _init_worker(rank: int, world: int, init: str, run: str, port: int, fsdp: bool) -> None:
    """Trains `run` from `init` and writes the weight files this process read whole."""
    crash_traces()
    import safetensors.torch

    _join_group(rank, world, port)
    read: list[str] = []
    real_load = safetensors.torch.load_file

    def recorded_load(filename, *args, **kwargs):
        read.append(str(filename))
        return real_load(filename, *args, **kwargs)

    # The library's own reader, looked up at each call (Policy.load, load_pi0_directory);
    # a header (safe_open) is not the weights and is not counted.
    safetensors.torch.load_file = recorded_load
    _tune_from(Path(init), Path(run), fsdp)
    (Path(run) / f"read{rank}.json").write_text(json.dumps(read))
    leave_group()


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "fsdp"), [("ours", False), ("ours", True), ("pi0", True)],
                         ids=["ours-ddp", "ours-fsdp", "pi0-fsdp"])
def test_a_run_begun_from_init_reads_its_weights_on_rank_0_only_and_trains_as_one_process(tmp_path, kind, fsdp):
    """Every process read --init's weights before the wrap, which replaces them with rank
    0's anyway: at π0 size under 8 GPUs, 8 reads of ~13 GB and a state dict of it per
    process (~100 GB more host memory on the node). Rank 0 alone reads them; the others
    take its weights at the wrap (DDP's construction broadcasts them; FSDP's fully_shard
    broadcasts nothing, so `wrap_policy` does), and the two processes train to the weights
    one process does."""
    import torch.multiprocessing as mp

    init = _init_weights(tmp_path / "init", kind)
    _tune_from(init, tmp_path / "one", fsdp=False)
    context = mp.spawn(_init_worker, args=(2, str(init), str(tmp_path / "two"), _free_port(), fsdp), nprocs=2,
                       join=False)
    join_within(context, 240, "a rank waiting on a collective?")

    weights = str(init / "model.safetensors")
    read = [json.loads((tmp_path / "two" / f"read{r}.json").read_text()) for r in (0, 1)]
    assert weights in read[0], f"rank 0 did not read the --init weights: {read[0]}"
    assert weights not in read[1], f"rank 1 read the --init weights itself: {read[1]}"
    assert [s for s, _ in logged_losses(tmp_path / "two")] == [0, 1]
    _same_run(tmp_path / "one", tmp_path / "two", "step_000002")


@pytest.mark.parametrize("reads", [True, False], ids=["rank0", "other-ranks"])
def test_a_rank_that_does_not_read_init_builds_its_model_and_refuses_alike(tmp_path, monkeypatch, reads):
    """A rank that leaves --init's weights to rank 0 still builds the checkpoint's own model
    (its config and features, from the header) and refuses another chunk length in the same
    line, without reading the weights."""
    import dataclasses

    import safetensors.torch

    from shallowpi.train.finetune import _initial_policy

    init = _init_weights(tmp_path / "init", "ours")
    saved = Policy.load(init)
    asked = dataclasses.replace(load_preset("tiny"), crop_scale=0.5)  # kept as the checkpoint's
    real_load, read = safetensors.torch.load_file, []
    monkeypatch.setattr(safetensors.torch, "load_file", lambda f, *a, **kw: read.append(str(f)) or real_load(f, *a, **kw))
    built = _initial_policy(asked, saved.features, init, None, reads=reads)
    assert (built.cfg, built.features) == (saved.cfg, saved.features)
    with pytest.raises(TrainingError, match=f"--init {init} predicts chunks of {saved.cfg.chunk_len} actions but "
                                            f"this run asks for 3; pass policy.chunk_len={saved.cfg.chunk_len}"):
        _initial_policy(dataclasses.replace(asked, chunk_len=3), saved.features, init, None, reads=reads)
    assert read == ([str(init / "model.safetensors")] if reads else [])


def test_a_rank_that_does_not_read_init_refuses_weights_of_another_model_or_none(tmp_path):
    """Rank 0 alone read --init's weights: a file of another model, or a π0 folder with no
    weights, was refused there while the other ranks went on to wait for it in the group.
    Each rank checks the weights file's header (names and shapes) and the folder's files."""
    import dataclasses

    from safetensors.torch import save_file

    from shallowpi.train.finetune import _initial_policy

    init = _init_weights(tmp_path / "init", "ours")
    saved = Policy.load(init)
    _initial_policy(saved.cfg, saved.features, init, None, reads=False)  # the header fits
    weights = {k: v.contiguous() for k, v in saved.state_dict().items()}
    first = next(iter(weights))
    save_file({**weights, first: torch.zeros(3)}, str(init / "model.safetensors"), metadata=Policy.read_metadata(init))
    with pytest.raises(TrainingError, match=rf"--init {init}: its weights are not its config's model \(1 tensors "
                                            rf"differ, e\.g\. {first}\)"):
        _initial_policy(saved.cfg, saved.features, init, None, reads=False)
    (tmp_path / "pi0").mkdir()
    with pytest.raises(TrainingError, match=r"no \*\.safetensors in .*pi0; pass a π0 checkpoint directory"):
        _initial_policy(dataclasses.replace(saved.cfg), saved.features, tmp_path / "pi0", None, reads=False)
