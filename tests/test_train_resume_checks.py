"""What a `--resume` may not change silently (found by a review of crash safety): the
episodes the run trained on (another store of the same name; `dataset delete` renumbering
them, a held-out one then trained on), what it filters (successful_only), its EMA; what it
may change and must say (the step count: the learning rate jumps); and what a damaged file
does (a metrics line cut short by a full disk, a train state cut short by a copy)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from shallowpi.commands.train_cmd import chunk_dataset
from shallowpi.data.store import EpisodeStore
from shallowpi.policy import load_preset
from shallowpi.train.finetune import finetune
from shallowpi.train.trainer import TrainConfig, TrainingError
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = load_preset("tiny")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=2, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=2, log_every=1,
                workers=0, progress=False, tensorboard=False, eval_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def _train(store: Path, run: Path, episodes=(0, 1, 2, 3), resume=False, **kw):
    return finetune(store, TINY, _cfg(**kw), run, episodes=list(episodes), make_dataset=chunk_dataset,
                    resume=resume)


def test_a_resume_on_other_episodes_under_the_same_numbers_is_refused(tmp_path):
    store = tmp_path / "a" / "arm.zarr"
    store.parent.mkdir()
    make_store(store, episodes=4, length=12).close()
    run = tmp_path / "run"
    _train(store, run)
    split = json.loads((run / "split.json").read_text())
    assert split["held_out"] == [3] and set(split["episodes"]) == {"0", "1", "2", "3"}
    # Another store of the same name (the run folder is named by it): 4 other episodes.
    other = tmp_path / "b" / "arm.zarr"
    other.parent.mkdir()
    make_store(other, episodes=4, length=12, seed=1).close()
    with pytest.raises(TrainingError, match=r"was trained on other episodes than .*arm.zarr holds under the "
                                            r"numbers \[0, 1, 2, 3\]"):
        _train(other, run, resume=True, steps=4)
    # The same store, episode 1 deleted since: 2 and 3 (the held-out one) moved down.
    with EpisodeStore.open(store, mode="a") as opened:
        opened.delete_episodes([1])
    make_store(tmp_path / "more.zarr", episodes=1, length=30).close()
    with EpisodeStore.open(store, mode="a") as opened, EpisodeStore.open(tmp_path / "more.zarr") as more:
        opened.append_episode_from(more, 0)  # four episodes again, the last a new one
    with pytest.raises(TrainingError, match=r"under the numbers \[1, 2, 3\] .*deleted or re-recorded"):
        _train(store, run, resume=True, steps=4)


def test_a_resume_that_filters_other_episodes_or_drops_its_ema_is_refused(tmp_path):
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()  # episodes 1 and 3 marked failed
    run = tmp_path / "run"
    _train(store, run, ema=0.9)
    # What `platform train` passes with successful_only: the kept episodes; the run trained on 1.
    with pytest.raises(TrainingError, match=r"trains on episodes \[1\], which this run's settings leave out"):
        _train(store, run, episodes=(0, 2), resume=True, steps=4, ema=0.9, successful_only=True)
    with pytest.raises(TrainingError, match=r"policy.train.successful_only=True differs from the run being resumed"):
        _train(store, run, resume=True, steps=4, ema=0.9, successful_only=True)
    with pytest.raises(TrainingError, match=r"policy.train.ema=None differs from the run being resumed \(0.9"):
        _train(store, run, resume=True, steps=4)
    _train(store, run, resume=True, steps=4, ema=0.9)  # the same settings resume


def test_a_longer_schedule_at_resume_says_how_the_learning_rate_jumps(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    run = tmp_path / "run"
    _train(store, run, steps=2)
    with caplog.at_level("WARNING", logger="shallowpi.train.trainer"):
        _train(store, run, resume=True, steps=40)
    assert "policy.train.steps 40 differs from the run being resumed (2): the schedule now ends at step 40, so " \
           "the learning rate at step 2 goes from 0.0003 to 0.003" in caplog.text


def test_damaged_files_of_a_run_are_one_line_or_survived(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    run = tmp_path / "run"
    _train(store, run, steps=4)
    # A metrics line cut short (a full disk) and NULs (XFS after a power cut): dropped, said.
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 4, "loss": 1.9' + "\n" + "\x00" * 16 + "\n")
    shutil.rmtree(run / "checkpoints" / "step_000004")
    with caplog.at_level("WARNING", logger="shallowpi.train.trainer"):
        _train(store, run, resume=True, steps=4)
    assert "dropped 2 damaged line(s)" in caplog.text
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [0, 1, 2, 3]
    # A train state cut short (an interrupted copy of the run folder).
    state = run / "checkpoints" / "step_000004" / "train_state.safetensors"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    with pytest.raises(TrainingError, match=r"train_state.safetensors cannot be read .*the checkpoint is damaged"):
        _train(store, run, resume=True, steps=6)


def test_a_run_begun_from_our_checkpoint_keeps_its_scenes_when_resumed_without_init(tmp_path):
    """The checkpoints of a run begun with --init A record A's scenes too (a student
    distilled from it holds none out); resumed without --init, they named this store's only."""
    from shallowpi.policy import Policy

    make_store(tmp_path / "a.zarr", episodes=4, length=8, scene_seeds=range(4)).close()
    make_store(tmp_path / "b.zarr", episodes=4, length=8, scene_seeds=range(100, 104)).close()
    first = _train(tmp_path / "a.zarr", tmp_path / "first")
    init = Path(first["checkpoint"])

    def scenes(step: str) -> set[str]:
        return set(json.loads(Policy.read_metadata(tmp_path / "tuned" / "checkpoints" / step)["scenes"]))

    finetune(tmp_path / "b.zarr", TINY, _cfg(steps=4), tmp_path / "tuned", episodes=[0, 1, 2, 3],
             make_dataset=chunk_dataset, init_from=init)
    learned = scenes("step_000004")
    assert set(json.loads(Policy.read_metadata(init)["scenes"])) < learned
    shutil.rmtree(tmp_path / "tuned" / "checkpoints" / "step_000004")
    _train(tmp_path / "b.zarr", tmp_path / "tuned", resume=True, steps=4)
    assert scenes("step_000004") == learned
