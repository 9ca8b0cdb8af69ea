"""tools/bench/figures.py: BENCHMARKS.md's component figures rerun by one command (issue 16, item 4)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench" / "figures.py"


@pytest.fixture(scope="module")
def figures():
    return load_bench("figures")


def test_every_figure_names_a_section_of_benchmarks_md_and_options_its_script_has(figures):
    """A stale entry (a section renamed, an option a script no longer takes) fails here, not
    an hour into a rerun."""
    headings = {line.strip() for line in (ROOT / "BENCHMARKS.md").read_text().splitlines() if line.startswith("#")}
    names = [f.name for f in figures.FIGURES]
    assert len(names) == len(set(names))
    for figure in figures.FIGURES:
        assert figure.section in headings, figure.name
        source = (ROOT / "tools" / "bench" / figure.script).read_text()
        options = re.findall(r"add_argument\(\s*\"(--[\w-]+)\"", source)
        for arg in figure.args:
            if arg.startswith("--"):
                assert arg in options, f"{figure.name}: {figure.script} has no {arg}"


def test_a_figure_is_run_recorded_and_not_run_again(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--only", "distill_flops", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    record = json.loads((tmp_path / "figures.json").read_text())["distill_flops"]
    assert record["returncode"] == 0 and record["seconds"] > 0 and record["commit"]
    assert record["command"].startswith("python tools/bench/distill_step.py --policy pi0")
    assert "flop_ideal_ratio" in (tmp_path / "distill_flops.txt").read_text()  # the bench's own table, kept
    plan = subprocess.run([sys.executable, str(SCRIPT), "--only", "distill_flops", "--out", str(tmp_path), "--list"],
                          capture_output=True, text=True, check=True).stdout
    assert "(0 figures" in plan  # finished: a rerun skips it


def test_store_scale_runs_at_a_tiny_size(tmp_path):
    """store_scale.py times the store's own commit-record and JSON writers: when they move
    (they did, into durable_io), the bench must follow, not fail an hour into a rerun."""
    out = tmp_path / "store_scale.json"
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "store_scale.py"), "--sizes", "20",
                          "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "platform")})
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    assert {r["built_by"] for r in rows} == {"commits", "direct"} and all(r["check_ok"] for r in rows)
