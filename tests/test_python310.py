"""The robot side on the robot's Python: 3.10 (JetPack 6), core install, zarr-python 2.

tools/setup.sh builds that environment and names its interpreter in SHALLOWPI_PY310.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import REPO_ROOT, subprocess_env

PY310 = os.environ.get("SHALLOWPI_PY310")
needs_py310 = pytest.mark.skipif(not PY310, reason="SHALLOWPI_PY310 unset: run through tools/setup.sh test")


@needs_py310
def test_store_tests_pass_on_python310_with_zarr2():
    probe = subprocess.run([PY310, "-c", "import sys, zarr; print(sys.version_info[:2], zarr.__version__)"],
                           capture_output=True, text=True, env=subprocess_env())
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.startswith("(3, 10)") and " 2." in probe.stdout
    result = subprocess.run(
        [PY310, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_store.py"],
        cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


@needs_py310
def test_robot_side_cli_runs_on_python310(tmp_path):
    from store_fixtures import make_store

    make_store(tmp_path / "k.zarr", episodes=2, length=5).close()
    result = subprocess.run([PY310, "-m", "shallowpi", "dataset", "check", str(tmp_path / "k.zarr")],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ok, 2 episodes" in result.stdout


@needs_py310
def test_deploy_robot_side_imports_on_python310():
    # `platform deploy` on the robot (no --sim) goes through commands/deploy_targets.py too.
    code = ("import shallowpi.deploy.bundle, shallowpi.deploy.jetson, shallowpi.deploy.executor, "
            "shallowpi.deploy.preprocess, shallowpi.deploy.backends.base, shallowpi.commands.deploy_cmd, "
            "shallowpi.commands.deploy_targets, shallowpi.robots.dynamixel_robot, shallowpi.robots.cameras; "
            "print('ok')")
    result = subprocess.run([PY310, "-c", code], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "ok"


@needs_py310
def test_deploy_of_a_checkpoint_without_torch_says_to_make_the_bundle_on_the_workstation():
    # A step folder given where its .bundle was meant: one line, not "No module named 'torch'".
    result = subprocess.run([PY310, "-m", "shallowpi", "deploy", "--policy", str(REPO_ROOT / "robots/arm/teacher"),
                             "--robot", "arm"], env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr[-2000:]
    assert "is not a deploy bundle (no manifest.json), and making one from a checkpoint needs the training " \
           "install (torch is missing here)" in result.stderr
