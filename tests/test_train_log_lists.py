"""Episode lists in the training run's log lines are written as runs ("0-199, 205"): the
held-out and training episodes went in whole (1,268 characters for 250 episodes)."""

from __future__ import annotations

import json
import logging

import pytest

from shallowpi.commands.train_cmd import chunk_dataset
from shallowpi.policy import load_preset
from shallowpi.train.finetune import finetune
from shallowpi.train.trainer import TrainConfig
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=1, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=1,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def test_the_runs_log_names_its_episodes_as_runs_and_eval_json_keeps_them_whole(tmp_path, caplog):
    store = tmp_path / "s.zarr"
    make_store(store, episodes=12, length=6).close()
    with caplog.at_level(logging.INFO, logger="shallowpi.train.finetune"):
        result = finetune(store, load_preset("tiny"), _cfg(eval_fraction=0.25), tmp_path / "held",
                          episodes=list(range(12)), make_dataset=chunk_dataset)
        finetune(store, load_preset("tiny"), _cfg(eval_fraction=0), tmp_path / "none",
                 episodes=list(range(12)), make_dataset=chunk_dataset)
    said = caplog.text
    assert f"held-out episodes 9-11: {result['eval']['samples']} samples" in said
    assert "the final evaluation scores training episodes 0-11" in said
    assert "training episodes 0-11 (no held-out episodes): " in said
    assert "[9, 10, 11]" not in said and "[0, 1, 2" not in said, said
    # eval.json says them whole: split.json, `platform eval` and distill's reports do too
    assert json.loads((tmp_path / "held" / "eval.json").read_text())["data"] == "held-out episodes [9, 10, 11]"


def test_every_list_of_a_description_is_shortened_and_nothing_else():
    from shallowpi.train.finetune import _short_lists

    assert _short_lists("training episodes [0, 1, 2] (held-out episodes [3, 7] have no finite window to score)") \
        == "training episodes 0-2 (held-out episodes 3, 7 have no finite window to score)"
    assert _short_lists("held-out episodes [14]") == "held-out episodes 14"
    assert _short_lists("episodes of a [3 x 4] grid") == "episodes of a [3 x 4] grid"
