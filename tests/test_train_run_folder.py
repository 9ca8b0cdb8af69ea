"""A run folder shared by two trainers, a save killed mid-write, a resume past its steps, a
run folder refused before the long preparatory work (found by a review of the trainer)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import subprocess_env
from policy_fakes import tiny_trainer
from shallowpi.cli import main
from shallowpi.train.checkpoint import latest_checkpoint
from shallowpi.train.run_lock import RunLock
from shallowpi.train.trainer import TrainingError
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_trainer = tiny_trainer


def test_a_second_trainer_in_a_run_folder_is_refused_naming_the_first(tmp_path):
    """`--resume` launched twice, or a requeued job while the first still runs: both trained,
    each cutting the other's metrics.jsonl and deleting its checkpoint in the making."""
    first = _trainer(tmp_path)
    with pytest.raises(TrainingError, match=rf"run folder {tmp_path} is in use by another training process "
                                            rf"\(pid {os.getpid()} on "):
        _trainer(tmp_path)
    first.fit()  # untouched by the refused one; its end lets the next in
    assert (tmp_path / ".lock").read_text() == ""
    _trainer(tmp_path, resume=True, steps=6).fit()
    assert latest_checkpoint(tmp_path).name == "step_000006"


def test_a_held_run_folder_is_refused_with_advice_every_command_can_follow(tmp_path):
    """`distill` trains its teacher into runs/<teacher>, a folder its --run does not name (that
    is the student's): "or pass another --run" sent a second distill on the same dataset
    nowhere."""
    held = RunLock(tmp_path)
    try:
        with pytest.raises(TrainingError) as refused:
            RunLock(tmp_path)
    finally:
        held.release()
    assert "--run" not in str(refused.value)
    assert str(refused.value).endswith("run this again when it ends (or stop it), or train into another folder")


def test_the_lock_of_a_killed_trainer_does_not_outlive_it(tmp_path):
    """A trainer killed outright (SIGKILL, the OOM killer) leaves its pid in the lock file;
    the kernel dropped its lock, so the next trainer goes ahead."""
    code = ("import sys, time; from pathlib import Path; from shallowpi.train.run_lock import RunLock; "
            "lock = RunLock(Path(sys.argv[1])); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=subprocess_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(TrainingError, match=rf"in use by another training process \(pid {holder.pid} on "):
            _trainer(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".lock").read_text().startswith(f"pid {holder.pid} ")
    _trainer(tmp_path).fit()
    assert latest_checkpoint(tmp_path).name == "step_000004"


def test_a_checkpoint_left_half_written_is_removed_when_the_run_resumes(tmp_path, monkeypatch, caplog):
    """A save killed mid-write (a second Ctrl-C, SIGKILL after the grace period) left
    checkpoints/.tmp_step_N for good when the run never saved step N again: tens of GB at π0 size."""
    _trainer(tmp_path, steps=2).fit()
    # As SIGKILL leaves a save of step 3 (an exception in the save removes its folder itself).
    partial = tmp_path / "checkpoints" / ".tmp_step_000003"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 1024)
    with caplog.at_level("WARNING", logger="shallowpi.train.trainer"):
        _trainer(tmp_path, resume=True, steps=6).fit()  # saves steps 4 and 6, never 3
    assert not partial.exists()
    assert f"removed {partial}, a checkpoint whose save was cut short" in caplog.text
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "last", "step_000002", "step_000004", "step_000006"]


def test_a_resume_with_fewer_steps_than_the_run_has_is_refused(tmp_path):
    """It trained nothing and said nothing. At the run's own step it still goes through
    (the evaluation after it is what a finished run resumed is for), though the refused
    trainer is still referenced (by its traceback): a refusal lets go of the run folder."""
    _trainer(tmp_path, steps=8).fit()
    with pytest.raises(TrainingError, match=r"^the run is already at step 8 \(.*step_000008\), past --steps 4 "
                                            r"\(policy.train.steps\); give --steps above 8 to train it further$"
                       ) as refused:
        _trainer(tmp_path, resume=True, steps=4)
    assert _trainer(tmp_path, resume=True, steps=8).fit() == {}
    assert refused.traceback  # alive until here


def test_train_refuses_its_run_folder_before_loading_init_or_screening_the_store(tmp_path, capsys):
    """The check ran only in the trainer: after the store's screening and the --init
    checkpoint's load (minutes at π0 size), or their own errors first."""
    store = tmp_path / "arm.zarr"
    make_store(store, episodes=2, length=8).close()
    args = ["train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path / "runs"),
            "--run", "r", "--no-progress", "policy.train.steps=2", "policy.train.save_every=2"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args, "--init", str(tmp_path / "no-such-checkpoint")]) == 4
    err = capsys.readouterr().err
    assert "already holds checkpoints; pass --resume" in err and "no-such-checkpoint" not in err
    # In a run folder that can start, a --init naming nothing is one line (the π0 loader's
    # answer had been "no *.safetensors in ...").
    assert main([*args, "--run", "r2", "--init", str(tmp_path / "no-such-checkpoint")]) == 2
    assert f"--init {tmp_path / 'no-such-checkpoint'}: no such checkpoint" in capsys.readouterr().err


def test_a_forked_child_neither_holds_the_run_lock_nor_can_release_it(tmp_path):
    """A DataLoader worker is a fork of the trainer. Its copy of the lock's fd kept the lock
    held after the trainer was killed (a requeue was refused until the workers noticed, ~5 s),
    and a release in the child would have let a second trainer in beside the first."""
    code = ("import os, sys, time; from pathlib import Path; from shallowpi.train.run_lock import RunLock; "
            "lock = RunLock(Path(sys.argv[1]))\n"
            "if os.fork() == 0:\n"
            "    lock.release(); print('child released', flush=True); time.sleep(60); os._exit(0)\n"
            "time.sleep(60)")
    trainer = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], env=subprocess_env(),
                               stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert trainer.stdout.readline() == "child released\n"
        with pytest.raises(TrainingError, match=rf"in use by another training process \(pid {trainer.pid} on "):
            _trainer(tmp_path)  # the child's release left the trainer's lock alone
        trainer.kill()  # the trainer alone dies; its forked child lives on
        trainer.wait()
        _trainer(tmp_path).fit()
    finally:
        os.killpg(trainer.pid, 9)
    assert latest_checkpoint(tmp_path).name == "step_000004"


def test_a_last_marker_left_behind_by_a_kill_is_mended(tmp_path, caplog):
    """A kill between a save's rename and the `last` marker's update left `last` naming the
    step before, for good: the resume trained nothing and never saved, and deploy --policy
    .../last or distill --teacher .../last took the older weights."""
    from shallowpi.train.checkpoint import checkpoint_step

    _trainer(tmp_path, steps=4).fit()
    marker = tmp_path / "checkpoints" / "last"
    assert marker.read_text() == "step_000004"
    marker.write_text("step_000002")  # as the kill leaves it
    assert checkpoint_step(marker, say=lambda _line: None).name == "step_000004"
    with caplog.at_level("WARNING", logger="shallowpi.train.trainer"):
        _trainer(tmp_path, resume=True, steps=4).fit()  # nothing left to train
    assert marker.read_text() == "step_000004"
    assert "checkpoints/last now names step_000004, the newest checkpoint" in caplog.text


def test_init_given_as_a_checkpoints_model_file_means_its_folder(tmp_path):
    """`--teacher` takes a checkpoint's model.safetensors; --init given the same file was read
    as a lerobot/openpi π0 directory (its loader refused it) and lost the checkpoint's scenes."""
    import argparse

    from shallowpi.commands.train_cmd import init_checkpoint

    step = tmp_path / "runs" / "r" / "checkpoints" / "step_000002"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"weights")
    assert init_checkpoint(argparse.Namespace(init=str(step / "model.safetensors"))) == step
    assert init_checkpoint(argparse.Namespace(init=str(step))) == step
    assert init_checkpoint(argparse.Namespace(init=None)) is None
