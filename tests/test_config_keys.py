"""The record:, store: and telemetry: sections refuse a key nothing reads, as the sections
read through a settings dataclass do: from a `+key=` override or a lab's config.yaml."""

from __future__ import annotations

import shutil

import pytest
import yaml

from shallowpi import config
from shallowpi.errors import ConfigError


@pytest.mark.parametrize(("override", "says"), [
    # recorded clean demonstrations without a word; the provenance listed sim_nosie
    ("+record.sim_nosie=0.05", "unknown config key 'record.sim_nosie'; did you mean record.sim_noise?"),
    ("++store.image_codek=blosc-lz4", "unknown config key 'store.image_codek'; did you mean store.image_codec?"),
    ("+telemetry.allow_remote_contol=false",
     "unknown config key 'telemetry.allow_remote_contol'; did you mean telemetry.allow_remote_control?"),
    ("+store.durable=false", "unknown config key 'store.durable' (`platform config show` lists them)"),
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
