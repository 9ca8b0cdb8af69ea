"""data/isolated.py: a child process for native work, and what becomes of it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import subprocess_env

TESTS_DIR = Path(__file__).resolve().parent


def _gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie waiting for a reaper counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the kernel's parent-death signal is Linux's")
def test_the_child_ends_with_its_parent_killed_mid_work(tmp_path):
    """A parent killed with -9 (the OOM killer on a Jetson) left its export child encoding a
    camera's video for minutes, with nobody to use the result, then printing a
    BrokenPipeError traceback on the terminal: it noticed the parent gone only at its next
    progress call."""
    pid_file, done_file, err = tmp_path / "child.pid", tmp_path / "done", tmp_path / "stderr"
    # Not a pipe: the child writes to the same stderr, and a pipe would stay open with it.
    with err.open("w") as sink:
        parent = subprocess.Popen(
            [sys.executable, "-c",
             f"import sys; sys.path.insert(0, {str(TESTS_DIR)!r}); "
             "from native_crash import work_silently; from shallowpi.data.isolated import run_isolated; "
             f"run_isolated(work_silently, {str(pid_file)!r}, {str(done_file)!r}, 8.0, what='the work')"],
            env=subprocess_env(), stderr=sink)
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.05)
    assert pid_file.exists(), err.read_text()
    time.sleep(0.1)  # the pid is written: the child is in its work
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=30)
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert _gone(child), "the child works on for nobody"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
    assert not done_file.exists()


def test_a_process_pool_check_from_a_script_without_a_main_guard_is_one_store_error(tmp_path):
    """check_store(pool="process") starts forkserver workers, which run the caller's
    `__main__` again: a script without its main guard had 84 lines of two tracebacks
    (RuntimeError, then BrokenProcessPool) for one cause."""
    from store_fixtures import make_store

    make_store(tmp_path / "s.zarr", episodes=2, length=8).close()
    script = tmp_path / "check_it.py"
    script.write_text(
        "from shallowpi.data import EpisodeStore\n"
        "from shallowpi.data.store_check import check_store\n"
        "from shallowpi.errors import StoreError\n"
        f"store = EpisodeStore.open({str(tmp_path / 's.zarr')!r})\n"
        "try:\n"
        "    check_store(store, decode_images=True, workers=2, pool='process')\n"
        "except StoreError as exc:\n"
        "    print('StoreError:', exc)\n")
    done = subprocess.run([sys.executable, str(script)], env=subprocess_env(), capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    said = [line for line in done.stdout.splitlines() if line.startswith("StoreError:")]
    assert said and "a decoding process of the check of s.zarr died" in said[-1], (done.stdout, done.stderr[-2000:])
