"""The trainer on an in-memory dataset: checkpoints, resume, errors, learning, DDP and FSDP on gloo."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch

from dist_checks import crash_traces, join_within, leave_group
from policy_fakes import FakeChunks, logged_losses, tiny_policy
from shallowpi.durable_files import PARTIAL_SUFFIX
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.train.checkpoint import Checkpointer, latest_checkpoint
from shallowpi.train.distributed import close_distributed
from shallowpi.train.finetune import finetune
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.offline_eval import evaluate
from shallowpi.train.trainer import TrainConfig, Trainer, TrainingError, lr_at

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=8, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=2, save_every=4,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def test_schedule_warms_up_then_decays_to_min_lr():
    cfg = _cfg(steps=100, warmup_steps=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, cfg) < lr_at(9, cfg) < 1.0
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_checkpoints_are_complete_and_never_overwritten(tmp_path):
    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(), tmp_path).fit()
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir())
    assert ckpts == ["step_000004", "step_000008"]
    assert latest_checkpoint(tmp_path).name == "step_000008"
    assert Policy.load(latest_checkpoint(tmp_path)).features == Features.from_sample(data[0])
    with pytest.raises(TrainingError, match="--resume"):
        Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(), tmp_path)
    with pytest.raises(TrainingError, match=r"nothing to resume in .*; run without --resume to start it"):
        Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(), tmp_path / "empty", resume=True)


def test_a_checkpoint_reaches_the_disk_before_last_names_it(tmp_path, synced):
    """A power cut after the rename must not leave `last` naming a folder of empty files:
    every file of the checkpoint and its folders are synced before `last` is replaced."""
    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4, ema=0.9), tmp_path).fit()
    root = tmp_path / "checkpoints"
    files = [p for p in (root / "step_000004").rglob("*")]
    assert len([p for p in files if p.is_file()]) >= 3  # weights, train state, EMA weights
    marker = next(i for i, p in enumerate(synced)  # `last`'s own partial file: last.<pid>.<random>.partial
                  if p.startswith(str(root / "last") + ".") and p.endswith(PARTIAL_SUFFIX))
    before = {p.replace(".tmp_step_", "step_") for p in synced[:marker]}
    assert {str(p) for p in files} <= before
    assert str(root) in synced[:marker] and str(root) in synced[marker:]  # the rename, then `last`


def _stepped_checkpointer(run_dir: Path, data: FakeChunks) -> Checkpointer:
    """A Checkpointer of the tiny policy after one AdamW step (so the optimiser has state)."""
    policy = tiny_policy(data)
    optimizer = torch.optim.AdamW(policy.parameters())
    sum(p.sum() for p in policy.parameters()).backward()
    optimizer.step()
    return Checkpointer(run_dir, policy, optimizer, sharded=False, main=True, metadata={})


@pytest.mark.parametrize("size", ["64k", "256k"])  # full in the weights / in the training state
def test_a_checkpoint_the_disk_cannot_hold_is_one_line_and_leaves_no_partial_folder(tmp_path, size):
    """A full disk while saving raised safetensors' SafetensorError, not an OSError: the CLI's
    one line for a full disk missed it (a traceback, exit 1), and the half-written
    .tmp_step_N/ (tens of GB at π0 size) stayed until a later trainer started."""
    import argparse
    import errno

    from disk_fixtures import small_disk
    from shallowpi.cli import file_system_error

    with small_disk(tmp_path / "disk", size) as disk:
        checkpointer = _stepped_checkpointer(disk / "run", FakeChunks())
        with pytest.raises(OSError) as info:
            checkpointer.save(1)
        left = sorted(p.name for p in (disk / "run" / "checkpoints").iterdir())
    partial = disk / "run" / "checkpoints" / ".tmp_step_000001"
    assert (info.value.errno, info.value.filename) == (errno.ENOSPC, str(partial))
    assert left == [], left  # the space is given back at once
    said = file_system_error(info.value, argparse.Namespace(runs_dir=str(disk)))
    assert said == f"cannot write {partial}: no space left on the device; free space there or give --runs-dir on " \
                   "another disk"


def test_a_save_that_fails_for_any_reason_removes_its_partial_folder(tmp_path):
    """Not only the disk: whatever stops a save after its first file leaves no .tmp_step_N/
    behind, and the error itself passes unchanged (here: EMA weights of another model)."""
    checkpointer = _stepped_checkpointer(tmp_path, FakeChunks())
    with pytest.raises(RuntimeError, match="Missing key"):
        checkpointer.save(1, ema={"not.a.parameter": torch.zeros(2)}, ema_rate=0.9)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == []
    assert checkpointer.save(1).name == "step_000001"  # and the step saves once it can


class _Interrupt(Exception):
    pass


class _DiesAt(FakeChunks):
    """Raises while loading the batch of step `die_step` (batch 4, so item index >= 4*step)."""

    def __init__(self, calls_before_death: int) -> None:
        super().__init__()
        self.calls = calls_before_death

    def __getitem__(self, i):
        self.calls -= 1
        if self.calls < 0:
            raise _Interrupt
        return super().__getitem__(i)


def test_interrupted_run_resumes_to_the_same_loss_curve(tmp_path, monkeypatch):
    from disk_fixtures import SyncWatch

    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(ema=0.9), tmp_path / "straight").fit()
    dying = _DiesAt(calls_before_death=4 * 6 + 2)  # dies inside step 6, after the step-4 save
    with pytest.raises(_Interrupt):
        Trainer(FlowMatchingObjective(tiny_policy(data)), dying, _cfg(ema=0.9), tmp_path / "resumed").fit()
    assert latest_checkpoint(tmp_path / "resumed").name == "step_000004"
    assert [s for s, _ in logged_losses(tmp_path / "resumed")] == [0, 1, 2, 3, 4, 5]
    # A fresh process would rebuild the policy from scratch: the checkpoint must carry all state.
    watch = SyncWatch(monkeypatch)
    Trainer(FlowMatchingObjective(tiny_policy(FakeChunks())), data, _cfg(ema=0.9), tmp_path / "resumed", resume=True).fit()
    # The log's lines past the checkpoint were cut by replacing it whole (a kill mid-write kept the rest).
    assert watch.rename_to(tmp_path / "resumed" / "metrics.jsonl").unsynced == []
    straight, resumed = logged_losses(tmp_path / "straight"), logged_losses(tmp_path / "resumed")
    assert [s for s, _ in resumed] == list(range(8))
    for (_, a), (_, b) in zip(straight, resumed):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    a = Policy.load(tmp_path / "straight" / "checkpoints" / "step_000008" / "ema")
    b = Policy.load(tmp_path / "resumed" / "checkpoints" / "step_000008" / "ema")
    for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5, msg=k)


class _SignalToTheGroup(FakeChunks):
    """A signal to the whole process group (Ctrl-C in a terminal, SLURM's scancel): this
    dataset, read by a data-loading worker, sends `signum` to the trainer and to the worker
    itself at item `at_item`, after `wait_s` (a wait lets the trainer drain the prefetched
    batches and wait on this one; none finds it computing a step)."""

    def __init__(self, at_item: int, signum: int, wait_s: float = 0.0) -> None:
        super().__init__()
        self.trainer_pid, self.at_item, self.signum, self.wait_s, self.calls = os.getpid(), at_item, signum, wait_s, 0

    def __getitem__(self, i):
        self.calls += 1
        if self.calls == self.at_item and os.getpid() != self.trainer_pid:
            time.sleep(self.wait_s)
            os.kill(self.trainer_pid, self.signum)
            os.kill(os.getpid(), self.signum)
        return super().__getitem__(i)


def test_sigterm_to_the_process_group_during_a_step_still_saves_it(tmp_path, monkeypatch):
    """torch's own SIGTERM handler in each loader worker killed it, and the trainer, busy in
    a step, died of "DataLoader worker killed by signal: Terminated" with no checkpoint:
    hours lost to a scancel. The workers leave SIGTERM to the trainer, which saves."""
    real_step = Trainer._step

    def slow_step(self, *args, **kwargs):  # the trainer computing, as a GPU run mostly is
        time.sleep(0.3)
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "_step", slow_step)
    data = FakeChunks()
    with pytest.raises(TrainingError, match=r"stopped by SIGTERM after step \d+; checkpoint step_\d+ saved"):
        Trainer(FlowMatchingObjective(tiny_policy(data)), _SignalToTheGroup(4 * 3 + 1, signal.SIGTERM),
                _cfg(steps=100, save_every=100, workers=1), tmp_path).fit()
    assert latest_checkpoint(tmp_path) is not None


@pytest.mark.parametrize("start", ["fork", "forkserver"])
def test_ctrl_c_reaching_the_loading_workers_still_saves_the_step(tmp_path, start):
    """A worker killed by the terminal's SIGINT would crash the run ("DataLoader worker
    exited unexpectedly") or end it a step early. Each worker ignores the stop signals
    itself; the trainer finishes the step it was waiting on, saves it and stops. With
    forkserver (Python 3.14's default on Linux) workers inherit no handler: relying on the
    trainer's, forked, stopped after step 5."""
    import multiprocessing

    data = FakeChunks()
    dying = _SignalToTheGroup(4 * 5 + 1, signal.SIGINT, wait_s=1.0)  # inside the batch of step 5
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method(start, force=True)
    try:
        with pytest.raises(TrainingError, match=r"stopped by SIGINT after step 6; checkpoint step_000006 saved"):
            Trainer(FlowMatchingObjective(tiny_policy(data)), dying, _cfg(steps=100, save_every=100, workers=1),
                    tmp_path).fit()
    finally:
        multiprocessing.set_start_method(before, force=True)
    assert latest_checkpoint(tmp_path).name == "step_000006"


def test_nan_loss_stops_with_one_line(tmp_path):
    data = FakeChunks(nan=True)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    with pytest.raises(TrainingError, match="loss became nan at step 0"):
        Trainer(FlowMatchingObjective(policy), data, _cfg(), tmp_path).fit()
    assert latest_checkpoint(tmp_path) is None


def test_a_batch_of_windows_wholly_padded_trains_on_without_a_nan(tmp_path):
    """A format-1 store pairs each observation with the next row's action: the window at an
    episode's last frame asks only for actions past the episode, all padding. A batch of
    nothing else divided 0 by 0 and stopped the run as a NaN loss."""
    from torch.utils.data import Subset

    from shallowpi.data.training import ChunkDataset
    from store_fixtures import as_layout_1, make_store

    path = tmp_path / "old.zarr"
    make_store(path, episodes=2, length=6).close()
    as_layout_1(path, version=1)
    data = ChunkDataset(path, 4, episodes=[0, 1])
    padded = [i for i, row in enumerate(data.windows.chunk_rows()[2]) if row.all()]
    assert padded and data.windows.action_offset == 1

    class Windows(Subset):
        def task_texts(self):
            return data.task_texts()

    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    cfg = TrainConfig(steps=2, batch_size=1, workers=0, progress=False, tensorboard=False, save_every=10)
    Trainer(FlowMatchingObjective(policy), Windows(data, padded[:1]), cfg, tmp_path / "run").fit()
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged] == [0.0, 0.0]


def test_an_infinite_gradient_under_a_finite_loss_stops_before_the_weights_change(tmp_path):
    data = FakeChunks()
    policy = tiny_policy(data)
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    # an overflow in the backward of one weight (bf16 on a GPU can do this)
    next(p for p in policy.parameters() if p.requires_grad).register_hook(lambda g: torch.full_like(g, float("inf")))
    with pytest.raises(TrainingError, match=r"gradient norm became (inf|nan) at step 0 with a finite loss"):
        Trainer(FlowMatchingObjective(policy), data, _cfg(), tmp_path).fit()
    for k, v in policy.state_dict().items():
        assert torch.equal(v, before[k]), k  # clipping by a NaN factor used to reach the optimizer
    assert latest_checkpoint(tmp_path) is None


def test_a_resumed_run_replays_its_random_crops(tmp_path):
    """With random crops on (the teacher preset crops 90 % of each side), a run stopped at
    step 4 and resumed gives the same losses as one run straight through: the crop offsets
    come from a generator seeded by (seed, step, rank), not from wherever the process's
    global generator happened to be."""
    import dataclasses

    data = FakeChunks()

    def cropping() -> Policy:
        torch.manual_seed(0)
        policy = Policy(dataclasses.replace(load_preset("tiny"), crop_scale=0.75), Features.from_sample(data[0]))
        policy.set_stats(data.stats())
        return policy

    Trainer(FlowMatchingObjective(cropping()), data, _cfg(), tmp_path / "straight").fit()
    with pytest.raises(_Interrupt):  # dies inside step 6, after the step-4 save
        Trainer(FlowMatchingObjective(cropping()), _DiesAt(4 * 6 + 2), _cfg(), tmp_path / "resumed").fit()
    torch.manual_seed(1234)  # another process's generator state
    Trainer(FlowMatchingObjective(cropping()), data, _cfg(), tmp_path / "resumed", resume=True).fit()
    straight, resumed = logged_losses(tmp_path / "straight"), logged_losses(tmp_path / "resumed")
    assert [s for s, _ in resumed] == list(range(8))
    for (_, a), (_, b) in zip(straight, resumed):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_a_resume_with_other_settings_is_refused_in_one_line_and_more_steps_are_not(tmp_path):
    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4), tmp_path).fit()
    for changed, shown in (({"lr": 1e-3}, "policy.train.lr=0.001 differs from the run being resumed (0.003"),
                           ({"seed": 1}, "policy.train.seed=1 differs"), ({"batch_size": 2}, "batch_size=2 differs")):
        with pytest.raises(TrainingError, match=re.escape(shown)) as err:
            Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=6, **changed), tmp_path, resume=True)
        assert len(str(err.value).splitlines()) == 1
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=6), tmp_path, resume=True).fit()
    assert latest_checkpoint(tmp_path).name == "step_000006"


def test_an_average_switched_on_at_resume_starts_from_the_trained_weights(tmp_path):
    """Four steps without EMA, then resumed with it for one more: the average after step 4
    is decay x (the step-4 weights) + (1 - decay) x (the step-5 weights). It used to start
    from the freshly built (initial) weights when the checkpoint held no average."""
    from shallowpi.train.trainer import ema_decay

    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4), tmp_path).fit()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=5, save_every=5, ema=0.9), tmp_path,
            resume=True).fit()
    root = tmp_path / "checkpoints"
    w4, w5 = (Policy.load(root / s).state_dict() for s in ("step_000004", "step_000005"))
    average = Policy.load(root / "step_000005" / "ema").state_dict()
    decay = ema_decay(4, 0.9)
    for k, v in average.items():
        if v.dtype.is_floating_point:
            torch.testing.assert_close(v, decay * w4[k] + (1 - decay) * w5[k], atol=1e-6, rtol=1e-5, msg=k)


def test_ema_with_fsdp_is_refused_in_one_line(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ema_fsdp_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    for rank in (0, 1):
        assert (tmp_path / f"refused{rank}").read_text().startswith("policy.train.ema is not supported with fsdp")


def _ema_fsdp_worker(rank: int, world: int, folder: str, port: int) -> None:
    crash_traces()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    data = FakeChunks()
    try:
        Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(ema=0.9, fsdp=True), Path(folder) / "run")
    except TrainingError as exc:
        (Path(folder) / f"refused{rank}").write_text(str(exc))
    # Refused before any collective ran (the settings are checked as the group forms): no
    # gloo thread to see leave, only the group to close.
    close_distributed()


def test_the_newest_complete_step_folder_is_the_checkpoint_even_if_last_was_not_updated(tmp_path):
    """A kill between renaming step_M into place and updating `last` (still naming step_N):
    resume must start from step_M, which it would otherwise later refuse to overwrite."""
    root = tmp_path / "checkpoints"
    for name, complete in (("step_000004", True), ("step_000008", True), ("step_000012", False),
                           (".tmp_step_000016", True)):
        (root / name).mkdir(parents=True)
        if complete:
            (root / name / "train_state.safetensors").write_bytes(b"")
    (root / "last").write_text("step_000004")
    assert latest_checkpoint(tmp_path) == root / "step_000008"
    assert latest_checkpoint(tmp_path / "none") is None


def test_a_run_folder_or_its_last_marker_means_its_newest_checkpoint(tmp_path):
    """`eval --policy runs/x/checkpoints/last` read the marker as a safetensors file
    ("header too large"), and `--policy runs/x` found no model.safetensors: eval, deploy,
    distill and train --init now take either for the run's newest checkpoint."""
    from shallowpi.train.checkpoint import checkpoint_step, weights_to_use

    root = tmp_path / "checkpoints"
    for name in ("step_000004", "step_000008"):
        (root / name / "ema").mkdir(parents=True)
        (root / name / "train_state.safetensors").write_bytes(b"")
        (root / name / "model.safetensors").write_bytes(b"")
    (root / "step_000008" / "ema" / "model.safetensors").write_bytes(b"")
    (root / "last").write_text("step_000008\n")
    said: list[str] = []
    for given in (tmp_path, root, root / "last"):
        assert checkpoint_step(given, said.append) == root / "step_000008"
    assert len(said) == 3 and said[0] == f"{tmp_path}: its newest checkpoint, {root / 'step_000008'}"
    for itself in (root / "step_000004", root / "step_000008" / "ema", tmp_path / "nowhere"):
        assert checkpoint_step(itself, said.append) == itself  # nothing to follow: the caller names what is missing
    assert len(said) == 3
    assert weights_to_use(tmp_path, said.append) == root / "step_000008" / "ema"  # the run's EMA, as for a step


def test_offline_evaluation_spreads_its_samples_over_every_window():
    """48 of 80 windows: the old stride (80 // 48 = 1) cut to 48 scored windows 0-47 only,
    three of the four episodes."""

    class Seen(FakeChunks):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.read: list[int] = []

        def __getitem__(self, i):
            self.read.append(int(i))
            return super().__getitem__(i)

    data = Seen(episodes=4, length=20)
    report = evaluate(tiny_policy(data), data, max_samples=48)
    assert report.samples == 48 and len(set(data.read)) == 48
    assert min(data.read) == 0 and max(data.read) == 79


def test_the_baseline_is_the_training_mean_action_whatever_the_normalisation():
    """The offline baseline predicts the training set's mean action (kept by set_stats and
    in the checkpoint), not the normaliser's centre, which under min-max is the middle of
    the range; a policy without it falls back to the evaluated samples' own mean."""
    import dataclasses

    import numpy as np

    data = FakeChunks(episodes=4, chunk_len=4)
    actions = np.stack([data[i]["action"].numpy() for i in range(len(data))])  # [N, C, A]
    valid = ~np.stack([data[i]["action_is_pad"].numpy() for i in range(len(data))])
    real = actions[valid]  # [M, A]
    train_mean = real.mean(0) + np.array([0.1, -0.2], np.float32)  # as if from other episodes
    stats = {key: {"mean": train_mean, "std": real.std(0), "min": real.min(0) - 0.5, "max": real.max(0) + 2.0}
             for key in ("observation.state", "action")}
    policies = {}
    for normalization in ("minmax", "meanstd"):
        cfg = dataclasses.replace(load_preset("tiny"), normalization=normalization)
        policies[normalization] = Policy(cfg, Features.from_sample(data[0]))
        policies[normalization].set_stats(stats)
    reports = [evaluate(policy, data, max_samples=len(data)) for policy in policies.values()]
    expected = float(((real - train_mean) ** 2).mean())
    assert [r.baseline_mse for r in reports] == pytest.approx([expected, expected], rel=1e-5)
    assert reports[0].baseline == "training mean action"
    # Checkpoints from before the mean was kept: under mean/std the normaliser's centre is
    # that mean; under min-max the evaluated samples' own mean stands in, and says so.
    for policy in policies.values():
        policy.action_mean = None
    assert evaluate(policies["meanstd"], data, max_samples=len(data)).baseline_mse == pytest.approx(expected, rel=1e-5)
    old = evaluate(policies["minmax"], data, max_samples=len(data))
    assert old.baseline_mse == pytest.approx(float(((real - real.mean(0)) ** 2).mean()), rel=1e-5)
    assert "evaluated samples" in old.baseline and "evaluated samples" in old.table()


@pytest.mark.slow
def test_finetune_learns_beyond_the_mean_action_baseline(tmp_path):
    def make(store, chunk, episodes):
        return FakeChunks(episodes=16, chunk_len=chunk, select=episodes)

    result = finetune(
        tmp_path / "store.zarr", load_preset("tiny"),
        _cfg(steps=200, batch_size=16, lr=3e-3, warmup_steps=10, save_every=200, log_every=50),
        tmp_path / "run", episodes=list(range(16)), make_dataset=make,
    )
    assert json.loads((tmp_path / "run" / "split.json").read_text())["held_out"] == [14, 15]
    report = result["eval"]
    assert report["ratio"] < 0.6, report
    # Evaluating the saved checkpoint gives the same numbers (fixed noise seed).
    again = evaluate(Policy.load(result["checkpoint"]), make(None, 4, [14, 15]), max_samples=128)
    assert again.policy_mse == pytest.approx(report["policy_mse"], rel=1e-4)


def _ddp_worker(rank: int, world: int, run: str, port: int, fsdp: bool, resume: bool) -> None:
    crash_traces()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4, save_every=2, fsdp=fsdp), Path(run), resume=resume).fit()
    leave_group()


@pytest.mark.slow
@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process_on_the_same_global_batch(tmp_path, fsdp):
    data = FakeChunks()
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4, save_every=2), tmp_path / "one").fit()
    _spawn_two(tmp_path / "two", fsdp)
    one = logged_losses(tmp_path / "one")
    assert [s for s, _ in logged_losses(tmp_path / "two")] == [0, 1, 2, 3]
    for (_, a), (_, b) in zip(one, logged_losses(tmp_path / "two")):
        assert a == pytest.approx(b, rel=1e-4)
    _assert_same_weights(tmp_path / "one", tmp_path / "two", "step_000004")
    if not fsdp:
        return
    # Sharded resume: as if killed after step 2's checkpoint, the two processes load the
    # full state from it, shard it, and replay steps 2-3 to the same weights.
    # The checkpoint is one gathered file: a single plain process resumes it just as well.
    checkpoints = tmp_path / "two" / "checkpoints"
    (checkpoints / "step_000004").rename(tmp_path / "step_000004.first")
    (checkpoints / "last").write_text("step_000002")
    shutil.copytree(tmp_path / "two", tmp_path / "single")
    _spawn_two(tmp_path / "two", fsdp, resume=True)
    Trainer(FlowMatchingObjective(tiny_policy(data)), data, _cfg(steps=4, save_every=2, fsdp=True), tmp_path / "single", resume=True).fit()
    for run in ("two", "single"):
        assert [s for s, _ in logged_losses(tmp_path / run)] == [0, 1, 2, 3]
        for (_, a), (_, b) in zip(one, logged_losses(tmp_path / run)):
            assert a == pytest.approx(b, rel=1e-4)
        _assert_same_weights(tmp_path / "one", tmp_path / run, "step_000004")


def _finetune_worker(rank: int, world: int, run: str, port: int) -> None:
    crash_traces()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)

    def make(store, chunk, episodes):
        return FakeChunks(episodes=8, chunk_len=chunk, select=episodes)

    result = finetune(Path(run) / "store.zarr", load_preset("tiny"), _cfg(steps=2, save_every=2, fsdp=True),
                      Path(run) / "run", episodes=list(range(8)), make_dataset=make)
    if rank == 0:
        (Path(run) / "eval.json").write_text(json.dumps(result["eval"]))
    leave_group()


@pytest.mark.slow
def test_a_sharded_finetune_ends_with_rank_0_scoring_the_saved_checkpoint(tmp_path):
    # Rank 0 used to evaluate its FSDP-sharded policy after rank 1 had left the group: the
    # forward's all-gather failed (or, on other backends, could wait forever).
    import torch.multiprocessing as mp

    context = mp.spawn(_finetune_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=False)
    join_within(context, 240, "rank 0 waiting on a collective?")
    report = json.loads((tmp_path / "eval.json").read_text())
    held_out = json.loads((tmp_path / "run" / "split.json").read_text())["held_out"]
    single = evaluate(Policy.load(latest_checkpoint(tmp_path / "run")),
                      FakeChunks(episodes=8, chunk_len=4, select=held_out), max_samples=128)
    assert report["policy_mse"] == pytest.approx(single.policy_mse, rel=1e-4)


def _rank0_worker(rank: int, world: int, folder: str, port: int) -> None:
    crash_traces()
    from shallowpi.train.distributed import init_distributed, rank0_value

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    own = {"layers": [0, 3 + rank], "by": rank}  # what each rank chose on its own
    got = rank0_value(init_distributed(torch.device("cpu")), torch.device("cpu"), own)
    (Path(folder) / f"rank{rank}.json").write_text(json.dumps(got))
    leave_group()


@pytest.mark.slow
def test_rank_0s_choice_reaches_every_process(tmp_path):
    """The distiller's layer selection goes through `rank0_value`: every process must cut
    the same student, whatever its own search found."""
    import torch.multiprocessing as mp

    mp.spawn(_rank0_worker, args=(2, str(tmp_path), _free_port()), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert got == [{"layers": [0, 3], "by": 0}] * 2


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn_two(run: Path, fsdp: bool, resume: bool = False) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(run), _free_port(), fsdp, resume), nprocs=2, join=True)


def _assert_same_weights(a: Path, b: Path, step: str) -> None:
    w1 = Policy.load(a / "checkpoints" / step).state_dict()
    w2 = Policy.load(b / "checkpoints" / step).state_dict()
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=1e-4, rtol=1e-3, msg=k)


def test_a_run_started_from_our_checkpoint_resumes_and_says_which_settings_it_kept(tmp_path, caplog):
    import dataclasses

    from shallowpi.commands.train_cmd import chunk_dataset
    from store_fixtures import make_store

    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    tiny = load_preset("tiny")
    first = finetune(store, tiny, _cfg(steps=2, save_every=2), tmp_path / "first", episodes=[0, 1, 2, 3],
                     make_dataset=chunk_dataset)
    asked = dataclasses.replace(tiny, crop_scale=0.8)  # the checkpoint was trained with 1.0
    with caplog.at_level("WARNING", logger="shallowpi.train.finetune"):
        finetune(store, asked, _cfg(steps=4, save_every=2), tmp_path / "tuned", episodes=[0, 1, 2, 3],
                 make_dataset=chunk_dataset, init_from=Path(first["checkpoint"]))
    assert f"keeps its own policy config: policy.crop_scale={tiny.crop_scale!r} (asked 0.8)\n" in caplog.text + "\n"
    straight = logged_losses(tmp_path / "tuned")
    # Killed after step 2's checkpoint: the resumed run rebuilds the checkpoint's config, not the preset's.
    shutil.rmtree(tmp_path / "tuned" / "checkpoints" / "step_000004")
    (tmp_path / "tuned" / "checkpoints" / "last").write_text("step_000002")
    finetune(store, asked, _cfg(steps=4, save_every=2), tmp_path / "tuned", episodes=[0, 1, 2, 3],
             make_dataset=chunk_dataset, init_from=Path(first["checkpoint"]), resume=True)
    assert Policy.load(tmp_path / "tuned" / "checkpoints" / "step_000004").cfg.crop_scale == tiny.crop_scale
    resumed = logged_losses(tmp_path / "tuned")
    assert [s for s, _ in resumed] == [s for s, _ in straight] == [0, 1, 2, 3]
    assert [x for _, x in resumed] == pytest.approx([x for _, x in straight], rel=1e-5)
    # Another chunk length cannot be kept like the rest: the windows are cut at the run's
    # (a broadcast error at step 0 before)
    with pytest.raises(TrainingError, match=f"predicts chunks of {tiny.chunk_len} actions but this run asks for 3; "
                                            f"pass policy.chunk_len={tiny.chunk_len}"):
        finetune(store, dataclasses.replace(tiny, chunk_len=3), _cfg(steps=2), tmp_path / "other", episodes=[0, 1, 2, 3],
                 make_dataset=chunk_dataset, init_from=Path(first["checkpoint"]))


def test_evenly_spaced_windows_reach_the_last_one():
    """The offline evaluation, the distiller's probe and its report's action error sample
    windows through one helper; a stride of n // count cut to `count` took only the first
    windows whenever n < 2 x count (10 of 19: windows 0-9)."""
    from shallowpi.train.offline_eval import evenly_spaced

    assert evenly_spaced(19, 10) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
    assert evenly_spaced(3, 8) == [0, 1, 2] and evenly_spaced(0, 4) == [] and evenly_spaced(5, 1) == [0]


def test_a_run_begun_from_our_checkpoint_holds_out_none_of_the_scenes_it_learned(tmp_path):
    """`--init` with one of our checkpoints: the fresh split could hold out an episode the
    starting weights trained on (another selection of the same store renumbers the last
    ones), and the held-out error flattered the run, as the distiller's check already
    prevents for its teacher."""
    from shallowpi.commands.train_cmd import chunk_dataset
    from store_fixtures import make_store

    store = tmp_path / "s.zarr"
    make_store(store, episodes=10, length=8, scene_seeds=range(10)).close()
    first = finetune(store, load_preset("tiny"), _cfg(steps=1), tmp_path / "first", episodes=list(range(10)),
                     make_dataset=chunk_dataset)
    assert json.loads((tmp_path / "first" / "split.json").read_text())["held_out"] == [9]
    chosen = [0, 2, 4, 6, 8, 9]  # as successful_only might keep: the fresh split holds out 8 and 9
    finetune(store, load_preset("tiny"), _cfg(steps=1, eval_fraction=0.34), tmp_path / "tuned", episodes=chosen,
             make_dataset=chunk_dataset, init_from=Path(first["checkpoint"]))
    split = json.loads((tmp_path / "tuned" / "split.json").read_text())
    assert split["held_out"] == [9] and split["train"] == [0, 2, 4, 6, 8]


@pytest.mark.parametrize(("setting", "expected"), [
    ({"grad_clip": 0.0}, "grad_clip must be > 0 (the largest gradient norm a step keeps), got 0.0"),
    ({"grad_clip": None}, "grad_clip must be > 0"),
    ({"save_every": 0}, "log_every and save_every must be >= 1"),
    ({"log_every": 0}, "log_every and save_every must be >= 1"),
    ({"warmup_steps": -5}, "warmup_steps >= 0"),
    ({"lr": -1.0}, "lr, min_lr and weight_decay must be >= 0"),
])
def test_settings_that_would_train_nothing_or_fail_after_step_0_are_refused(setting, expected):
    """grad_clip 0, a natural "no clipping", scaled every gradient to 0 for the whole run;
    save_every or log_every 0 divided by zero after step 0."""
    with pytest.raises(TrainingError, match=re.escape(expected)):
        _cfg(**setting)


def test_an_explicit_gpu_index_under_torchrun_is_refused(monkeypatch):
    """--device cuda:0 under torchrun put every rank on GPU 0 (NCCL fails, or they fight)."""
    from shallowpi.errors import PlatformError
    from shallowpi.train import distributed

    monkeypatch.setattr(distributed, "check_device", lambda name: name)  # no GPU here: only the rule is tested
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(PlatformError, match=r"--device cuda:0 names one GPU for every process under torchrun"):
        distributed.pick_device("cuda:0")
