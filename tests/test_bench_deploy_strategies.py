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


def test_each_strategy_is_compared_with_sync_at_its_delay_seed_by_seed(strategies):
    def row(strategy, delay, cube, push):
        return {"strategy": strategy, "delay_ms": delay,
                "tasks": {"cube": {"seeds": dict(enumerate(cube))}, "push": {"seeds": dict(enumerate(push))}}}

    rows = [row("sync", 0, [1, 1, 0], [1, 0, 0]), row("rtc", 0, [1, 0, 1], [1, 1, 1]),
            row("sync", 300, [0, 0, 0], [0, 0, 0]), row("rtc", 300, [1, 1, 1], [1, 1, 1]),
            row("async", 100, [1, 1, 1], [1, 1, 1])]  # no sync at 100 ms: not compared
    lines = strategies.against_sync(rows, ["cube", "push"])
    assert lines[1] == "Against sync on the same seeds (exact McNemar, two-sided):"
    assert lines[2].startswith("- rtc against sync at 0 ms, seeds solved by one of the two only: "
                               "cube 1 against 1 (p = 1.000); push 2 against 0 (p = 0.500); all tasks 3 against 1")
    assert lines[3].startswith("- rtc against sync at 300 ms") and "all tasks 6 against 0 (p = 0.031)" in lines[3]
    assert len(lines) == 4
    assert strategies.against_sync([row("rtc", 0, [1], [1])], ["cube", "push"]) == []
