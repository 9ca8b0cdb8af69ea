"""Training settings refused before any setup, or said (found by a review of the trainer):
a learning-rate schedule that climbs or never decays, a seed no generator takes, an
eval_fraction out of range or 0, and TrainConfig fields a preset does not list, set on the
command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from policy_fakes import FakeChunks
from shallowpi import config
from shallowpi.cli import main
from shallowpi.commands.train_cmd import chunk_dataset
from shallowpi.errors import ConfigError
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.train.finetune import finetune
from shallowpi.train.objective import FlowMatchingObjective
from shallowpi.train.trainer import MAX_SEED, TrainConfig, Trainer, TrainingError, lr_at
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=2, batch_size=4, lr=3e-3, min_lr=3e-4, warmup_steps=1, save_every=2,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


def _fit(run: Path, **kw) -> dict[str, float]:
    data = FakeChunks()
    torch.manual_seed(0)
    policy = Policy(load_preset("tiny"), Features.from_sample(data[0]))
    policy.set_stats(data.stats())
    return Trainer(FlowMatchingObjective(policy), data, _cfg(**kw), run).fit()


def test_a_min_lr_above_lr_is_refused(tmp_path):
    """The cosine went from lr up to min_lr: a schedule that climbs to its end."""
    with pytest.raises(TrainingError, match=r"^min_lr \(0.01\) must not exceed lr \(0.001\)"):
        _cfg(lr=1e-3, min_lr=1e-2)
    assert lr_at(1, _cfg(lr=1e-3, min_lr=1e-3, steps=4)) == pytest.approx(1e-3)  # a constant rate
    _cfg(lr=0, min_lr=0)  # a cut left untrained (tools/bench/reproduce.py)


def test_a_warmup_as_long_as_the_run_is_said_once(tmp_path, caplog):
    """warmup_steps >= steps: the rate only climbs; allowed (a short debug run), said."""
    with caplog.at_level("WARNING", logger="shallowpi.train.trainer"):
        last = _fit(tmp_path, steps=2, warmup_steps=2)
    said = [r.getMessage() for r in caplog.records if "warmup_steps" in r.getMessage()]
    assert said == [f"policy.train.warmup_steps 2 >= steps 2: the learning rate only warms up (to {last['lr']:.3g} "
                    "at the last step) and never decays to min_lr"]


def test_a_seed_no_generator_takes_is_refused_before_any_setup(tmp_path):
    """-1 went through the whole setup, then numpy raised with a traceback."""
    for seed in (-1, MAX_SEED):
        with pytest.raises(TrainingError, match=rf"^seed must be in \[0, {MAX_SEED}\), got {seed}$"):
            _cfg(seed=seed)
    assert _fit(tmp_path, seed=MAX_SEED - 1)["loss"] > 0  # the largest trains: every generator takes it


def test_eval_fraction_out_of_range_is_refused_and_0_holds_out_none(tmp_path, caplog):
    """0 still held out one episode (at least one, for any fraction), and -0.1 was taken as 0."""
    for fraction in (-0.1, 1.0):
        with pytest.raises(TrainingError, match=rf"^eval_fraction must be in \[0, 1\) .*got {fraction}$"):
            _cfg(eval_fraction=fraction)
    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=8).close()
    with pytest.raises(TrainingError, match=r"eval_fraction=0 holds out no episode, which .*require_held_out=true"):
        finetune(store, load_preset("tiny"), _cfg(eval_fraction=0, require_held_out=True), tmp_path / "refused",
                 episodes=[0, 1, 2, 3], make_dataset=chunk_dataset)
    with caplog.at_level("INFO", logger="shallowpi.train.finetune"):
        result = finetune(store, load_preset("tiny"), _cfg(eval_fraction=0), tmp_path / "run",
                          episodes=[0, 1, 2, 3], make_dataset=chunk_dataset)
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert (split["train"], split["held_out"]) == ([0, 1, 2, 3], [])
    assert "eval_fraction=0: no episode held out; the final evaluation scores training episodes" in caplog.text
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report == result["eval"] and report["data"] == "training episodes [0, 1, 2, 3] (no held-out episodes)"
    assert report["samples"] > 0


def test_any_train_setting_is_an_override_though_the_preset_omits_it(tmp_path, capsys):
    """`policy.train.seed=1` (tools/bench/train_sweep.py's example) was an unknown config key:
    no preset lists seed or tensorboard. A misspelt one still is; the value's type is checked
    against TrainConfig's default."""
    cfg = config.compose(["policy=tiny", "policy.train.seed=1", "policy.train.tensorboard=false",
                          "distill.train.seed=2"])
    assert (cfg.policy.train.seed, cfg.policy.train.tensorboard, cfg.distill.train.seed) == (1, False, 2)
    assert config.compose(["+distill.train.seed=3"]).distill.train.seed == 3  # the docs' spelling still works
    with pytest.raises(ConfigError, match=r"unknown config key 'policy.train.sed'"):
        config.compose(["policy.train.sed=1"])
    with pytest.raises(ConfigError, match=r"policy.train.tensorboard must be true or false \(its default is true\)"):
        config.compose(["policy.train.tensorboard=3"])
    store = tmp_path / "arm.zarr"
    make_store(store, episodes=2, length=8).close()
    assert main(["train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path), "--run", "r",
                 "--no-progress", "policy.train.steps=2", "policy.train.seed=1",
                 "policy.train.tensorboard=false"]) == 0, capsys.readouterr().err
    recorded = config.OmegaConf.load(tmp_path / "r" / "config.yaml").policy.train
    assert (recorded.seed, recorded.tensorboard) == (1, False)
    assert not (tmp_path / "r" / "tb").exists()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "r" / "checkpoints" / "step_000002" / "train_state.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["recipe"])["seed"] == 1  # trained with it, not only recorded


@pytest.mark.parametrize(("setting", "expected"), [
    ({"betas": [1.0, 0.95]}, r"^betas must be two numbers in \[0, 1\) .*got \[1.0, 0.95\]$"),
    ({"betas": [0.9]}, r"^betas must be two numbers in \[0, 1\) .*got \[0.9\]$"),
    ({"betas": [0.9, -0.1]}, r"^betas must be two numbers in \[0, 1\)"),
    ({"betas": 0.9}, r"^betas must be two numbers in \[0, 1\)"),
    ({"workers": -1}, r"^workers must be >= 0 .*got -1$"),
])
def test_betas_and_workers_no_optimizer_or_loader_takes_are_refused_before_any_setup(setting, expected):
    """They gave a traceback from the optimizer (betas) or the loader (workers=-1) after the
    store's screening and the model's build, workers=-1 after config.yaml and split.json."""
    with pytest.raises(TrainingError, match=expected):
        _cfg(**setting)
    _cfg(betas=[0.0, 0.999], workers=2)  # the ends AdamW takes


def test_a_train_extra_section_nothing_reads_is_an_unknown_key():
    """policy.train.extra was accepted, saved to config.yaml, and never read."""
    with pytest.raises(ConfigError, match=r"unknown config key 'policy.train.extra'"):
        config.compose(["policy=tiny", "policy.train.extra={lr_scale: 2}"])
    with pytest.raises(ConfigError, match=r"policy.train.*extra"):
        from shallowpi.commands.train_cmd import check_train_keys

        check_train_keys("policy.train", {"extra": {"lr_scale": 2}})
