"""The `platform` command: help, Hydra overrides, one-line errors, dataset subcommands."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from conftest import platform_cmd, subprocess_env
from shallowpi.cli import main
from store_fixtures import make_store


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(platform_cmd(*args), env=subprocess_env(), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_help_lists_working_subcommands_with_examples():
    result = run("--help")
    assert result.returncode == 0
    assert "dataset" in result.stdout and "config" in result.stdout
    assert "examples:" in result.stdout
    assert "dataset show" in run("dataset", "--help").stdout


def test_config_show_composes_robot_and_overrides(capsys):
    assert main(["config", "show", "--robot", "humanoid", "store.image_quality=75"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["robot"]["name"] == "humanoid"
    assert "left_shoulder_pitch" in [j["name"] for j in cfg["robot"]["joints"]]
    assert cfg["store"]["image_quality"] == 75
    assert main(["config", "show", "robot=bimanual"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["robot"]["name"] == "bimanual"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "show", "--robot", "octopus"], "unknown robot 'octopus'; choose one of: arm, bimanual, humanoid"),
        (["config", "show", "--jetson", "nano"], "unknown jetson 'nano'; choose one of: cpu, cuda, orin, thor"),
        (["config", "show", "wheels.count=4"], "unknown config key 'wheels.count'"),
        (["config", "show", "--robto", "arm"], "unrecognized arguments: --robto arm; valid options:"),
        (["dataset", "info", "no_such_dataset"], "no dataset at"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_bad_input_answers_in_one_line(args, expected):
    result = run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_dataset_commands_end_to_end(tmp_path):
    make_store(tmp_path / "kitchen.zarr", episodes=3, length=12).close()
    root = ["--data-root", str(tmp_path)]
    listing = run("dataset", "list", *root)
    assert listing.returncode == 0 and "kitchen" in listing.stdout and "3" in listing.stdout
    assert "put the red cube in the bowl" in run("dataset", "info", "kitchen", *root).stdout
    check = run("dataset", "check", "kitchen", *root)
    assert check.returncode == 0 and "ok, 3 episodes" in check.stdout

    png = tmp_path / "ep.png"
    shown = run("dataset", "show", "kitchen", "--episode", "-1", "--out", str(png), *root)
    assert shown.returncode == 0, shown.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    merged = run("dataset", "merge", "kitchen", str(tmp_path / "kitchen.zarr"), "--out", "both", *root)
    assert merged.returncode == 0, merged.stderr
    assert "6 episodes" in merged.stdout

    deleted = run("dataset", "delete", "both", "--episode", "0", "4", "--yes", *root)
    assert deleted.returncode == 0 and "4 left" in deleted.stdout

    (tmp_path / "both.zarr" / "data" / "action" / "0.0").write_bytes(b"garbage")
    damaged = run("dataset", "check", "both", *root)
    assert damaged.returncode == 1
    assert "action" in damaged.stderr and "Traceback" not in damaged.stderr


def test_dataset_names_resolve_under_the_data_root(tmp_path, monkeypatch):
    from shallowpi import config

    monkeypatch.delenv("SHALLOWPI_DATA_ROOT", raising=False)
    assert config.resolve_dataset("kitchen") == config.REPO_ROOT / "datasets" / "kitchen.zarr"
    assert config.resolve_dataset("kitchen", tmp_path) == tmp_path / "kitchen.zarr"
    assert config.resolve_dataset("runs/kitchen.zarr") == config.Path("runs/kitchen.zarr")
    assert config.resolve_dataset(f"{tmp_path}/new") == tmp_path / "new.zarr"
    assert config.resolve_dataset(str(tmp_path)) == tmp_path  # an existing folder stays
    monkeypatch.setenv("SHALLOWPI_DATA_ROOT", str(tmp_path))
    assert config.resolve_dataset("kitchen") == tmp_path / "kitchen.zarr"
    cfg = config.compose([f"data_root={tmp_path / 'ssd'}"])
    assert config.data_root(cfg) == tmp_path / "ssd"
