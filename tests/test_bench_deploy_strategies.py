"""tools/bench/deploy_strategies.py: kept cells are reused only for the weights, overrides
and platform code they were made from (a figure must come from the code it describes)."""

from __future__ import annotations

import json
import sys

import pytest

from bench_scripts import load_bench


@pytest.fixture(scope="module")
def strategies():
    return load_bench("deploy_strategies")


def test_the_provenance_follows_the_weights_and_the_overrides(strategies, tmp_path):
    policy = tmp_path / "ckpt"
    (policy / "ema").mkdir(parents=True)
    (policy / "ema" / "model.safetensors").write_bytes(b"weights")
    made = strategies.provenance(policy, [])
    assert made == strategies.provenance(policy, [])  # the same make, the same marker
    assert made["platform"]  # this checkout is a git one: its code is named
    assert strategies.provenance(policy, ["deploy.rtc_mask=hard"])["policy_sha256"] == made["policy_sha256"]
    assert strategies.provenance(policy, ["deploy.rtc_mask=hard"]) != made
    (policy / "ema" / "model.safetensors").write_bytes(b"trained on")
    assert strategies.provenance(policy, [])["policy_sha256"] != made["policy_sha256"]


def test_cells_kept_from_other_weights_are_refused_before_any_deploy(strategies, tmp_path, monkeypatch):
    policy, out = tmp_path / "ckpt", tmp_path / "out"
    policy.mkdir()
    out.mkdir()
    (policy / "model.safetensors").write_bytes(b"old weights")
    (out / "provenance.json").write_text(json.dumps(strategies.provenance(policy, [])))
    (out / "rtc-300ms-cube_in_bowl-1000.json").write_text("{}")  # a finished cell
    (policy / "model.safetensors").write_bytes(b"new weights")
    monkeypatch.setattr(strategies, "deploy", lambda *a, **k: pytest.fail("a cell ran"))
    monkeypatch.setattr(sys, "argv", ["deploy_strategies.py", "--policy", str(policy), "--out", str(out)])
    with pytest.raises(SystemExit, match="holds 1 cells made with other policy_sha256; delete them"):
        strategies.main()
    # Cells with no marker at all (made before markers existed) are refused alike.
    (out / "provenance.json").unlink()
    with pytest.raises(SystemExit, match="made with other policy_sha256, overrides, platform"):
        strategies.main()
