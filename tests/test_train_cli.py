"""`platform train` / `platform eval` end to end on a real episode store, in subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import platform_cmd, stop_while_training, subprocess_env
from store_fixtures import make_store

# tiny models are all overhead: one thread avoids OpenMP spin-waits on a shared 2-core box.
ENV = subprocess_env(OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "arm.zarr"
    make_store(path, episodes=4, length=16).close()
    return path


def _train(store: Path, runs: Path, name: str, *extra: str, **kw) -> subprocess.CompletedProcess:
    args = ["train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(runs),
            "--run", name, "--no-progress", "policy.train.log_every=1", *extra]
    return subprocess.run(platform_cmd(*args), env=ENV, capture_output=True, text=True, **kw)


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], r["loss"]) for r in rows]


@pytest.mark.slow
def test_kill_and_resume_gives_the_same_loss_curve(store, tmp_path):
    steps = ["policy.train.steps=30", "policy.train.save_every=5"]
    done = _train(store, tmp_path, "straight", *steps, timeout=300)
    assert done.returncode == 0, done.stderr
    straight = tmp_path / "straight"
    assert (straight / "config.yaml").is_file() and (straight / "tb").is_dir()
    split = json.loads((straight / "split.json").read_text())
    assert (split["train"], split["held_out"], sorted(split["episodes"])) == ([0, 1, 2], [3], ["0", "1", "2", "3"])
    assert "policy_mse" in done.stdout

    cmd = platform_cmd("train", "--dataset", str(store), "--policy", "tiny", "--runs-dir",
                       str(tmp_path), "--run", "killed", "--no-progress", "policy.train.log_every=1",
                       *steps)
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = tmp_path / "killed" / "checkpoints" / "last"
    deadline = time.monotonic() + 120
    while not marker.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.is_file()
    killed_at = marker.read_text()
    assert killed_at != "step_000030", "the run finished before it could be killed"

    again = _train(store, tmp_path, "killed", *steps)
    assert again.returncode != 0 and "--resume" in again.stderr  # no silent overwrite
    resumed = _train(store, tmp_path, "killed", "--resume", *steps, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _losses(straight), _losses(tmp_path / "killed")
    assert [s for s, _ in b] == list(range(30))
    for (_, x), (_, y) in zip(a, b):
        assert x == pytest.approx(y, rel=1e-5, abs=1e-7)

    ckpt = straight / "checkpoints" / "step_000030"
    report = tmp_path / "eval.json"
    ev = subprocess.run(platform_cmd("eval", "--policy", str(ckpt), "--dataset", str(store), "--json", str(report)),
                        env=ENV, capture_output=True, text=True, timeout=120)
    assert ev.returncode == 0, ev.stderr
    assert "episodes [3]" in ev.stdout and json.loads(report.read_text())["samples"] > 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_saves_the_step_it_stopped_at_and_resume_continues_there(store, tmp_path, sig):
    """Ctrl-C (or a scheduler's SIGTERM) between checkpoints used to lose every step since the
    last one: the run now finishes its step, saves it and says how to continue."""
    steps = ["policy.train.steps=100000", "policy.train.save_every=100000"]
    cmd = platform_cmd("train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path),
                       "--run", "stopped", "--no-progress", "policy.train.log_every=1", *steps)
    code, err = stop_while_training(cmd, tmp_path / "stopped" / "metrics.jsonl", ENV, sig)
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    step = int(last.split("after step ")[1].split(";")[0])
    assert last == (f"error: training stopped by {sig.name} after step {step}; checkpoint step_{step:06d} "
                    "saved: continue with --resume"), last
    assert (tmp_path / "stopped" / "checkpoints" / "last").read_text() == f"step_{step:06d}"
    assert [s for s, _ in _losses(tmp_path / "stopped")] == list(range(step))
    resumed = _train(store, tmp_path, "stopped", "--resume", f"policy.train.steps={step + 2}", timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert [s for s, _ in _losses(tmp_path / "stopped")] == list(range(step + 2))


def test_sigterm_before_the_first_step_is_one_line(store, tmp_path):
    """Before the trainer takes the signals over (the store's screening, the policy's build),
    a scheduler's SIGTERM ended `platform train` at once, with no line at all (exit -15)."""
    proc = subprocess.Popen(platform_cmd("train", "--dataset", str(store), "--policy", "tiny", "--runs-dir",
                                         str(tmp_path), "--run", "early", "--no-progress"),
                            env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    # The run folder is made (its lock) ~1 s before the first step: the command is running.
    while not (tmp_path / "early").is_dir() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == ["interrupted"], err
    assert not (tmp_path / "early" / "metrics.jsonl").exists()  # it was before the first step


def test_train_holds_out_episodes_of_every_task_of_a_store_recorded_task_by_task(tmp_path):
    path = tmp_path / "two.zarr"
    make_store(path, episodes=6, length=12, tasks=["put the red cube in the bowl"] * 4 + ["push the block left"] * 2
               ).close()
    done = _train(path, tmp_path, "run", "policy.train.steps=2", "policy.train.eval_fraction=0.34", timeout=300)
    assert done.returncode == 0, done.stderr
    # Not the last two of all six (episodes 4 and 5, the second task's only): one of each task.
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert (split["train"], split["held_out"]) == ([0, 1, 2, 4], [3, 5])


def test_train_on_two_processes_under_torchrun_keeps_its_run_name(store, tmp_path):
    """The README's command for several processes, `--run` included: without the `--` before
    the command, torchrun's own parser takes `--run` for an abbreviation of its `--run-path`
    and refuses the whole command line. The results are printed once, by rank 0 (every rank
    printed "checkpoint: ...": a script reading it got two lines)."""
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
              "-m", "shallowpi", "--"]
    args = ["train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path), "--run", "two",
            "--no-progress", "policy.train.steps=2", "policy.train.log_every=1", "policy.train.workers=0"]
    done = subprocess.run([*launch, *args], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "two" / "checkpoints" / "step_000002").is_dir()
    assert [s for s, _ in _losses(tmp_path / "two")] == [0, 1]
    assert [line for line in done.stdout.splitlines() if line.startswith("checkpoint:")] == [
        f"checkpoint: {tmp_path / 'two' / 'checkpoints' / 'step_000002'}"]


def test_one_line_errors(store, tmp_path):
    missing = _train(tmp_path / "nope.zarr", tmp_path, "x", timeout=120)
    assert missing.returncode != 0
    assert missing.stderr.strip().splitlines() == [missing.stderr.strip()]
    assert "no dataset at" in missing.stderr

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    ev = subprocess.run(platform_cmd("eval", "--policy", str(foreign), "--dataset", str(store)),
                        env=ENV, capture_output=True, text=True, timeout=120)
    assert ev.returncode != 0 and ev.stderr.startswith("error: ") and "Traceback" not in ev.stderr


def test_offline_eval_refuses_a_split_whose_numbers_name_other_episodes_now(tmp_path):
    """The checkpoint names its held-out episodes by number; a `dataset delete` renumbers
    the store, and the offline eval scored a training episode as held out, saying so."""
    from shallowpi.data import EpisodeStore

    path = tmp_path / "arm.zarr"
    make_store(path, episodes=4, length=16).close()
    trained = _train(path, tmp_path, "run", "policy.train.steps=2", timeout=300)
    assert trained.returncode == 0, trained.stderr
    with EpisodeStore.open(path, mode="a") as store:
        store.delete_episodes([0])
    make_store(tmp_path / "more.zarr", episodes=1, length=20, seed=5).close()
    with EpisodeStore.open(path, mode="a") as store, EpisodeStore.open(tmp_path / "more.zarr") as more:
        store.append_episode_from(more, 0)  # four again: episode 3 is another now
    ckpt = tmp_path / "run" / "checkpoints" / "step_000002"
    ev = subprocess.run(platform_cmd("eval", "--policy", str(ckpt), "--dataset", str(path)),
                        env=ENV, capture_output=True, text=True, timeout=120)
    assert ev.returncode != 0 and "Traceback" not in ev.stderr
    assert "was trained on other episodes than" in ev.stderr and "held-out episodes cannot be told apart" in ev.stderr


def test_without_a_dataset_the_error_names_the_data_root_it_looks_in(tmp_path):
    """The line said "a store under datasets/" whatever --data-root or $SHALLOWPI_DATA_ROOT
    pointed at."""
    from shallowpi.commands.train_cmd import resolve_training_store
    from shallowpi.config import compose
    from shallowpi.errors import ConfigError

    with pytest.raises(ConfigError, match=f"a store under {tmp_path / 'labdata'}"):
        resolve_training_store(compose(overrides=[f"data_root={tmp_path / 'labdata'}"]))
