"""The record:, store: and telemetry: sections refuse a key nothing reads, as the sections
read through a settings dataclass do: from a `+key=` override or a lab's config.yaml."""

from __future__ import annotations

import shutil

import pytest
import yaml
from omegaconf import OmegaConf

import shallowpi.cli  # noqa: F401  registers policy.train, distill.train and demo.train (OPTIONAL_SETTINGS)
from shallowpi import config
from shallowpi.errors import ConfigError


@pytest.mark.parametrize(("override", "says"), [
    # recorded clean demonstrations without a word; the provenance listed sim_nosie
    ("+record.sim_nosie=0.05", "unknown config key 'record.sim_nosie'; did you mean record.sim_noise?"),
    ("++store.image_codek=blosc-lz4", "unknown config key 'store.image_codek'; did you mean store.image_codec?"),
    ("+telemetry.allow_remote_contol=false",
     "unknown config key 'telemetry.allow_remote_contol'; did you mean telemetry.allow_remote_control?"),
    ("+store.durable=false", "unknown config key 'store.durable' (`platform config show` lists them)"),
    # a section of settings no preset lists: its own keys are the ones near (it had said
    # policy.train.batch_size, another setting)
    ("demo.train.batchsize=16", "unknown config key 'demo.train.batchsize'; did you mean demo.train.batch_size?"),
])
def test_an_added_key_nothing_reads_is_refused_in_one_line(override, says):
    with pytest.raises(ConfigError) as refused:
        config.compose([override])
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value), refused.value


def _lab_config(tmp_path, monkeypatch, edit) -> None:
    """A lab's copy of configs/ whose config.yaml `edit(root)` changed, used from here on."""
    shutil.copytree(config.config_dir(), tmp_path / "configs")
    path = tmp_path / "configs" / "config.yaml"
    root = yaml.safe_load(path.read_text())
    edit(root)
    path.write_text(yaml.safe_dump(root))
    monkeypatch.setenv("SHALLOWPI_CONFIG_DIR", str(tmp_path / "configs"))


def test_a_lab_config_with_a_misspelt_safety_key_is_refused(tmp_path, monkeypatch):
    """`allow_remote_contol: false` in a lab's config.yaml left remote control on:
    `platform monitor --control` could start, stop and e-stop the recorder."""
    _lab_config(tmp_path, monkeypatch, lambda root: root["telemetry"].update(allow_remote_contol=False))
    with pytest.raises(ConfigError, match=r"^unknown config key 'telemetry\.allow_remote_contol'; "
                                          r"did you mean telemetry\.allow_remote_control\?"):
        config.compose([])


def test_a_key_read_with_a_default_may_be_added_to_a_config_that_lacks_it(tmp_path, monkeypatch):
    """An older lab config without record.sim_noise or telemetry.max_hz (their readers take a
    default): adding them is no unknown key."""
    def older(root):
        del root["record"]["sim_noise"], root["record"]["sim_noise_tau_s"], root["telemetry"]["max_hz"]

    _lab_config(tmp_path, monkeypatch, older)
    cfg = config.compose(["+record.sim_noise=0.01", "+telemetry.max_hz=5"])
    assert (cfg.record.sim_noise, cfg.telemetry.max_hz, "sim_noise_tau_s" in cfg.record) == (0.01, 5, False)


def test_record_refuses_an_unknown_record_key_before_anything_is_made(tmp_path, capsys):
    from shallowpi.cli import main

    assert main(["record", "--robot", "arm", "--sim", "--task", "cube_in_bowl", "--data-root", str(tmp_path),
                 "--dataset", "d", "--no-tui", f"telemetry.address={tmp_path}/t.sock", "+record.sim_nosie=0.05"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown config key 'record.sim_nosie'; did you mean record.sim_noise?"), err
    assert err.count("\n") == 0 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("override", "says"), [
    # a traceback deep in the command, or a setting read as false without a word
    ("policy.train.steps=null", "policy.train.steps cannot be null: it is a number (its default is 1500)"),
    ("policy.train.bf16=null", "policy.train.bf16 cannot be null: it is true or false (its default is true)"),
    ("policy.train.betas=null", "policy.train.betas cannot be null: it is a list (its default is [0.9, 0.95])"),
    ("+policy.train.seed=null", "policy.train.seed cannot be null: it is a number (its default is 0)"),
    ("record.episodes=null", "record.episodes cannot be null: it is a number (its default is 5)"),
    ("record.allow_no_cameras=null", "record.allow_no_cameras cannot be null: it is true or false"),
    ("deploy.max_frame_age_s=null", "deploy.max_frame_age_s cannot be null: it is a number (its default is 0.25)"),
    ("deploy.realtime=null", "deploy.realtime cannot be null: it is true or false (its default is true)"),
    ("telemetry.max_hz=null", "telemetry.max_hz cannot be null: it is a number (its default is 20.0)"),
    ("store.image_quality=null", "store.image_quality cannot be null: it is a number (its default is 90)"),
    ("action_selection.delay_window=null", "action_selection.delay_window cannot be null: it is a number"),
    ("distill.weights=null", "distill.weights cannot be null: it is a section of settings"),
    ("record=null", "record cannot be null: it is a section of settings"),
])
def test_null_where_no_reader_takes_it_is_refused_in_one_line(override, says):
    with pytest.raises(ConfigError) as refused:
        config.compose([override])
    assert str(refused.value).startswith(says) and "\n" not in str(refused.value), refused.value


@pytest.mark.parametrize("override", [
    # null means something to each reader: the robot's rate, no catch-up, the demonstrations'
    # start pose skipped, no EMA, half the chunk, the steps of the preset, no JetPack check
    "record.fps=null", "record.catch_up_speed=null", "record.sim_noise=null", "deploy.start_speed=null", "policy.train.ema=null",
    "+distill.train.ema=null", "demo.train.ema=null", "action_selection.replan_every=null", "distill.steps=null",
    "distill.attention_pairs=null", "jetson.jetpack=null", "telemetry.address=null",
    "robot.cameras.front.serial=null",
])
def test_null_where_it_means_something_is_taken(override):
    key = override.partition("=")[0].lstrip("+")
    assert OmegaConf.select(config.compose([override]), key, default="absent") is None


def test_demo_train_takes_a_training_key_without_a_plus():
    """configs/demo/default.yaml's profile sets no batch_size under demo.train: the key was
    refused unless written +demo.train.batch_size, and the hint pointed at policy.train."""
    assert config.compose(["demo.train.batch_size=16"]).demo.train.batch_size == 16


def test_a_section_layered_over_policy_train_states_no_default_of_its_own(capsys):
    """demo.train and distill.train take any policy.train key; what they leave out is their
    preset's value. `config show` had filled demo.train with TrainConfig's defaults (steps
    1500, warmup_steps 100: not what the demo trains with, and steps a key it refuses), and
    `demo.train.warmup_steps=abc` said "its default is 100" where the demo's preset has 200."""
    from shallowpi.commands import config_cmd

    for key in ("demo.train.warmup_steps", "distill.train.warmup_steps"):
        with pytest.raises(ConfigError) as refused:
            config.compose([f"{key}=abc"])
        assert str(refused.value) == f"{key} must be a number, not 'abc'"
    with pytest.raises(ConfigError, match=r"^policy\.train\.warmup_steps must be a number \(its default is \d+\)"):
        config.compose(["policy.train.warmup_steps=abc"])
    cfg = config.compose([])
    config_cmd._fill_optional_settings(cfg)
    assert OmegaConf.to_container(cfg.demo.train) == OmegaConf.to_container(config.compose([]).demo.train)
    assert "seed" in cfg.policy.train  # the section of its own, filled
