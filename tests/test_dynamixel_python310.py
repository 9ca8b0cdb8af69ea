"""The Dynamixel stack on the robot's Python (3.10, core install): bus tests and doctor."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import REPO_ROOT, subprocess_env

PY310 = os.environ.get("SHALLOWPI_PY310")
needs_py310 = pytest.mark.skipif(not PY310, reason="SHALLOWPI_PY310 unset: run through tools/setup.sh test")


@needs_py310
def test_bus_tests_pass_on_python310():
    probe = subprocess.run([PY310, "-c", "import dynamixel_sdk"], capture_output=True, text=True, env=subprocess_env())
    assert probe.returncode == 0, (
        "dynamixel-sdk (a core dependency) is missing from the Python 3.10 venv: "
        f"rebuild it (rm its .complete file, rerun tools/setup.sh test): {probe.stderr[-300:]}")
    result = subprocess.run(
        [PY310, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_dynamixel_bus.py"],
        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
