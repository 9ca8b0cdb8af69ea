"""The layout rules of DESIGN.md: no shadowed stdlib/HF modules, a lean robot-side install."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT, subprocess_env

ROBOT_SIDE = ("hardware", "robots", "teleop", "record", "data", "deploy", "telemetry", "tui")


def test_platform_and_datasets_folders_do_not_shadow_real_modules():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()
    assert not (REPO_ROOT / "datasets" / "__init__.py").exists()
    code = (
        "import platform, datasets, sys;"
        "assert hasattr(platform, 'python_version'), platform;"
        "assert hasattr(datasets, 'load_dataset'), datasets;"
        "print(platform.__file__, datasets.__file__)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    stdlib_platform, hf_datasets = result.stdout.split()
    assert "site-packages" not in stdlib_platform and str(REPO_ROOT) not in stdlib_platform
    assert "site-packages" in hf_datasets


BLOCKER = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('lerobot', 'transformers', 'tensorboard'):
            raise ImportError(f'{name} is a training dependency; the robot side must not need it')
sys.meta_path.insert(0, Block())
import pkgutil, importlib, shallowpi
imported = []
for stage in STAGES:
    try:
        package = importlib.import_module('shallowpi.' + stage)
    except ModuleNotFoundError as exc:
        if exc.name == 'shallowpi.' + stage:
            continue  # stage not built yet
        raise
    imported.append(package.__name__)
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + '.'):
        importlib.import_module(module.name)
        imported.append(module.name)
print(len(imported))
"""


def test_robot_side_imports_without_training_dependencies():
    code = BLOCKER.replace("STAGES", repr(ROBOT_SIDE))
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=subprocess_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(result.stdout.strip()) >= 6  # data alone has more; the count proves the walk ran
