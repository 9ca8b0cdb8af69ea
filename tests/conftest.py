"""Shared fixtures. Tests run against the checkout's platform/ (pytest `pythonpath`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

# Headless rendering on the CPU, set before anything imports MuJoCo or PyOpenGL (lerobot
# does, through gym): PyOpenGL picks its platform once, at import.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE_ROOT = REPO_ROOT / "platform"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for `python -m shallowpi` subprocesses that use this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("MUJOCO_GL", "egl")
    env["HF_HUB_OFFLINE"] = "1"
    env.update(extra)
    return env


def platform_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "shallowpi", *args]


def stop_while_training(cmd: list[str], metrics: Path, env: dict[str, str], sig: int = signal.SIGINT,
                        logged: int = 3) -> tuple[int, str]:
    """Run `cmd`, send it `sig` once the run's `metrics` (metrics.jsonl) holds `logged` lines
    (a Ctrl-C or a scheduler's SIGTERM mid-training); its (exit code, stderr)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while (not metrics.is_file() or metrics.read_text().count("\n") < logged) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.fixture(scope="session", autouse=True)
def own_telemetry_folder():
    """Every default telemetry socket and control key of this worker's tests in a private
    folder of its own (SHALLOWPI_TELEMETRY_DIR, inherited by subprocesses): never beside
    a recorder this user runs while CI does (in /tmp/shallowpi-UID, which a monitor also
    searches), nor another worker's. Tests of those folders take it away."""
    folder = tempfile.mkdtemp(prefix="sp-tel-", dir="/tmp")
    os.environ["SHALLOWPI_TELEMETRY_DIR"] = folder
    yield Path(folder)
    os.environ.pop("SHALLOWPI_TELEMETRY_DIR", None)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def short_dir():
    """A private folder with a short path under /tmp, for socket paths: pytest's tmp_path
    grows with its run counter (/tmp/pytest-of-root/pytest-1000/popen-gw0/<test name>/)
    until a socket path in it no longer fits sun_path's 108 bytes."""
    folder = tempfile.mkdtemp(prefix="sp-", dir="/tmp")  # mode 0700
    yield Path(folder)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def own_signals():
    """`platform record` in-process takes SIGINT, SIGTERM and SIGHUP over: given back after."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """The paths os.fsync is called on during the test, in order (each still synced)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


@pytest.fixture
def one_torch_thread():
    """Small models on a shared 2-core machine: a second OpenMP thread mostly waits at
    barriers (5-10x slower under load), so policy tests run on one."""
    import torch  # not at the top: the Python 3.10 robot-side run has no torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "bad_store: writes stores that `dataset check` rejects, on purpose; they are not checked after it")


def _stores_under(root: Path) -> list[Path]:
    """The episode stores under `root` (zarr groups with the shallowpi header; plain zarr
    groups that tests write to compare chunks are not stores)."""
    stores = []
    for folder, subfolders, _ in os.walk(root):
        stores += [Path(folder, name) for name in subfolders
                   if name.endswith(".zarr") and '"shallowpi"' in _text(Path(folder, name, ".zattrs"))]
        subfolders[:] = [name for name in subfolders if not name.endswith(".zarr")]  # not into chunks
    return sorted(stores)


def _text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


@pytest.fixture(autouse=True)
def stores_written_check_clean(request: pytest.FixtureRequest):
    """`dataset check` finds nothing wrong in any store a test leaves in its tmp_path
    (tests that damage stores on purpose carry the `bad_store` mark)."""
    yield
    tmp_path = getattr(request.node, "funcargs", {}).get("tmp_path")
    if tmp_path is None or request.node.get_closest_marker("bad_store"):
        return
    stores = _stores_under(tmp_path)
    if not stores:
        return
    from shallowpi.data.store import EpisodeStore
    from shallowpi.data.store_check import check_store

    for path in stores:
        with EpisodeStore.open(path) as store:
            problems = check_store(store, workers=2).problems
        assert problems == [], f"dataset check of {path.name}, written by this test: {problems}"
