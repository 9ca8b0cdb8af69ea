"""What a resumed run trains, and what a run's config.yaml says it trained (found by a
review of training numerics): a run begun with --init from one of our checkpoints keeps
that checkpoint's policy config, so its resume must rebuild that config, not the preset's,
whether or not the command repeats --init."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from policy_fakes import logged_losses
from shallowpi import config
from shallowpi.commands.train_cmd import chunk_dataset
from shallowpi.policy import Policy, load_preset
from shallowpi.train.finetune import finetune
from shallowpi.train.trainer import TrainConfig, TrainingError
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = load_preset("tiny")
EPISODES = [0, 1, 2, 3]


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=4, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=2, log_every=1,
                workers=0, progress=False, tensorboard=False, eval_fraction=0.25)
    return TrainConfig(**{**base, **kw})


def _kill_after_step_2(run: Path) -> None:
    """The run folder as a kill after step 2's checkpoint leaves it."""
    shutil.rmtree(run / "checkpoints" / "step_000004")
    (run / "checkpoints" / "last").write_text("step_000002")


@pytest.mark.parametrize("init_again", [False, True], ids=["without-init", "with-init"])
def test_a_run_begun_from_our_checkpoint_resumes_with_the_same_command(tmp_path, init_again):
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    base = finetune(store, dataclasses.replace(TINY, num_steps=5), _cfg(steps=2), tmp_path / "base",
                    episodes=EPISODES, make_dataset=chunk_dataset)
    init = Path(base["checkpoint"])
    composed = config.compose(["policy=tiny"])  # the preset's num_steps: 3
    assert composed.policy.num_steps == TINY.num_steps == 3

    def tune(**kw):
        return finetune(store, TINY, _cfg(), tmp_path / "f1", episodes=EPISODES, make_dataset=chunk_dataset,
                        resolved_config=composed, **kw)

    tune(init_from=init)
    straight = logged_losses(tmp_path / "f1")
    _kill_after_step_2(tmp_path / "f1")
    tune(init_from=init if init_again else None, resume=True)
    assert Policy.load(tmp_path / "f1" / "checkpoints" / "step_000004").cfg.num_steps == 5
    resumed = logged_losses(tmp_path / "f1")
    assert [s for s, _ in resumed] == [s for s, _ in straight] == [0, 1, 2, 3]
    assert [x for _, x in resumed] == pytest.approx([x for _, x in straight], rel=1e-5)
    # config.yaml says the model trained (the --init's num_steps), not the preset's.
    assert yaml.safe_load((tmp_path / "f1" / "config.yaml").read_text())["policy"]["num_steps"] == 5


def test_a_run_begun_from_the_preset_still_refuses_another_model_at_resume(tmp_path):
    """Without an --init of ours the run trained the preset's model: a key asked otherwise at
    resume is a mistake, refused in one line naming it (the checkpoint's config is not taken
    silently over it)."""
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    finetune(store, TINY, _cfg(), tmp_path / "run", episodes=EPISODES, make_dataset=chunk_dataset)
    _kill_after_step_2(tmp_path / "run")
    with pytest.raises(TrainingError, match=r"was trained with another policy config: policy.num_steps=3 "
                                            r"\(asked 5\); resume with the same preset and overrides"):
        finetune(store, dataclasses.replace(TINY, num_steps=5), _cfg(), tmp_path / "run", episodes=EPISODES,
                 make_dataset=chunk_dataset, resume=True)
