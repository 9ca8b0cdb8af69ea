"""`platform record` and `platform monitor` on the default telemetry sockets: one per user
and robot, so recorders of two robots run side by side, and a second recorder of one
robot is refused before it connects to anything or creates a store."""

from __future__ import annotations

import re
import signal
import subprocess
import time

import pytest

from conftest import platform_cmd, subprocess_env

pytestmark = pytest.mark.timeout(300)
SMALL = "record.sim_size=64x64"


def record_cmd(tmp_path, robot: str, dataset: str, *args: str) -> list[str]:
    # No telemetry.address: the default socket is what is under test.
    return platform_cmd("record", "--robot", robot, "--sim", "direct", "--task", "cube_in_bowl",
                        "--data-root", str(tmp_path), "--dataset", dataset, "--no-tui", SMALL, *args)


@pytest.mark.slow
def test_recorders_of_two_robots_at_once_and_a_second_of_one_robot_refused_before_its_store(tmp_path, short_dir):
    # The user's telemetry folder: this test's own (a recorder of this user running beside
    # the tests must not be found); how it is chosen from $XDG_RUNTIME_DIR or /tmp: test_telemetry.
    folder = short_dir
    env = subprocess_env(SHALLOWPI_TELEMETRY_DIR=str(folder))
    socket_path = folder / "arm.sock"
    # A long reset keeps the first recorder running (in wall-clock time) through the test.
    first = subprocess.Popen(record_cmd(tmp_path, "arm", "first", "--realtime", "--episodes", "3",
                                        "--episode-time-s", "1", "--reset-time-s", "120"),
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while "recording episode 0" not in first.stdout.readline():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()[-2000:]
        assert socket_path.is_socket()

        # `platform monitor --robot arm` finds it without being told the path.
        monitor = subprocess.Popen(platform_cmd("monitor", "--robot", "arm", "--lines"), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = monitor.stdout.readline()
        monitor.terminate()
        monitor.communicate(timeout=30)
        assert re.search(r"(recording|resetting) +episode [01] \([12]/3 of this run\) ", line), line
        # Watching a robot nobody records: one line, naming the robot that is recording.
        nobody = subprocess.run(platform_cmd("monitor", "--robot", "humanoid", "--lines"), env=env,
                                capture_output=True, text=True, timeout=60)
        assert nobody.returncode == 2
        assert nobody.stderr.strip() == (
            f"error: no recorder is publishing at {folder / 'humanoid.sock'}; start "
            "`platform record` (or `platform deploy`) first (recording now: arm; attach with `platform monitor "
            "--robot arm`)")

        # A second recorder of the same robot: one line naming the override, and nothing
        # created, so retrying says the same (not "already exists").
        for _ in range(2):
            second = subprocess.run(record_cmd(tmp_path, "arm", "second"), env=env,
                                    capture_output=True, text=True, timeout=120)
            assert second.returncode == 2
            assert second.stderr.strip() == (
                f"error: a recorder is already publishing at {socket_path}; stop it, or pass "
                "telemetry.address=PATH (another socket path) to publish beside it")
            assert not (tmp_path / "second.zarr").exists()

        # Another robot from the same computer: its own socket, recorded while the first runs.
        other = subprocess.run(record_cmd(tmp_path, "humanoid", "other", "--episodes", "1",
                                          "--episode-time-s", "0.5", "--reset-time-s", "0"),
                               env=env, capture_output=True, text=True, timeout=240)
        assert other.returncode == 0, other.stderr[-2000:]
        assert "recorded 1 episode(s)" in other.stdout
        assert first.poll() is None and socket_path.is_socket()
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)
    assert first.returncode == 0
    assert list(folder.iterdir()) == []  # every recorder removed its sockets
