"""How `platform record` ends on a robot: the real command on emulated servo chains (the
real dynamixel-sdk on ptys), its standard input a pseudo-terminal as an operator's is."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import threading
import time

import pytest

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from shallowpi.data import EpisodeStore

ELBOW = 3  # servo ID of elbow_flex, on the leader and the follower chain


class _Output:
    """The lines a process writes, read on a thread as they come."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(stream), daemon=True)
        self._reader.start()

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in list(self.lines)):
            assert time.monotonic() < deadline, f"no {text!r} in: {''.join(self.lines)[-3000:]}"
            time.sleep(0.05)

    def text(self) -> str:
        """Everything, once the stream has ended."""
        self._reader.join(30)
        return "".join(self.lines)


@pytest.mark.slow
def test_after_the_last_episode_the_follower_keeps_following_until_ctrl_c(tmp_path):
    """The run's end turned torque off at once, dropping the follower wherever the last take
    left it. With somebody at the terminal, teleoperation goes on after the last episode,
    torque on and nothing recorded, so the operator brings the arm to rest with the leader;
    Ctrl-C then ends a complete run (exit 0, not "interrupted") and turns torque off."""
    with emulated("arm") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        main, side = pty.openpty()
        proc = subprocess.Popen(
            platform_cmd("record", "--robot", "arm", *ports, "--dataset", "end", "--data-root", str(tmp_path),
                         "--task", "wave", "--episodes", "1", "--episode-time-s", "0.5", "--reset-time-s", "0",
                         "--no-tui", "--no-cameras", "--allow-uncalibrated", f"telemetry.address={tmp_path}/t.sock"),
            env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), stdin=side,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        os.close(side)
        output = _Output(proc.stdout)
        try:
            output.wait_for("all 1 episode(s) recorded; the follower still follows")
            follower, leader = chains["follower"].servos, chains["leader"].servos
            time.sleep(1.0)  # the last take's commit, and a second of the hold
            assert all(servo.torque for servo in follower.values()), "torque went off at the end of the run"
            before = follower[ELBOW].get("goal_position")
            leader[ELBOW].plant.move_to(leader[ELBOW].plant.read(time.monotonic()).position + 0.3)
            time.sleep(1.5)
            moved = (follower[ELBOW].get("goal_position") - before) * follower[ELBOW].model.radians_per_tick
            assert proc.poll() is None, output.text()
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=60)
            torque_after = [servo.torque for servo in follower.values()]
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(main)
    out = output.text()
    assert proc.returncode == 0, out[-3000:]
    assert moved == pytest.approx(0.3, abs=0.05), "the follower stopped following the leader after the last take"
    assert "recorded 1 episode(s)" in out and "interrupted" not in out
    assert "torque is off: the arms no longer hold their pose" in out and not any(torque_after)
    store = EpisodeStore.open(tmp_path / "end.zarr")
    assert len(store) == 1 and store.episode(0).length == 15  # the hold recorded nothing
