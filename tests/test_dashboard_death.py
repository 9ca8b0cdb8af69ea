"""A dashboard process that dies never locks the operator out: `platform record` on a real
(pseudo-)terminal, its dashboard child killed with SIGKILL mid-episode; the recorder gives
the terminal back (line mode, echo, Ctrl-C as a signal), goes on with plain lines, and a
Ctrl-C typed on the terminal stops it cleanly."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.data import EpisodeStore

pytestmark = pytest.mark.timeout(300)


def _dashboard_child(parent: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == parent and b"monitor" in cmdline and b"--attached" in cmdline:
            return int(entry.name)
    return None


def _controlling_terminal() -> None:  # runs in the child after setsid: the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyRecorder:
    """`platform record` of two long arm episodes in the twin on a pseudo-terminal of
    `rows` x `cols`, the way an operator starts it; `screen` collects what it printed."""

    def __init__(self, tmp_path: Path, dataset: str, rows: int, cols: int) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.modes_before = termios.tcgetattr(self.slave)
        self.process = subprocess.Popen(
            platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--realtime",
                         "--data-root", str(tmp_path), "--dataset", dataset, "--episodes", "2",
                         "--episode-time-s", "120", "record.sim_size=64x64", f"telemetry.address={tmp_path}/t.sock"),
            env=subprocess_env(TERM="xterm-256color"), stdin=self.slave, stdout=self.slave, stderr=self.slave,
            start_new_session=True, preexec_fn=_controlling_terminal)
        self.screen = bytearray()

    def read_until(self, needle: bytes, timeout_s: float) -> None:
        """Read the terminal until `needle` shows; fails if the recorder exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        while needle not in self.screen:
            assert time.monotonic() < deadline and self.process.poll() is None, (
                needle, self.process.poll(), self.screen[-3000:].decode(errors="replace"))
            if select.select([self.master], [], [], 0.1)[0]:
                self.screen.extend(os.read(self.master, 65536))

    def read_until_exit(self, timeout_s: float) -> None:
        """Read the terminal while the recorder runs (at most `timeout_s`), then what is left."""
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.1)[0]:
                self.screen.extend(os.read(self.master, 65536))
        while select.select([self.master], [], [], 0.2)[0]:
            try:
                self.screen.extend(os.read(self.master, 65536))
            except OSError:
                break

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.slave)
        os.close(self.master)


@pytest.mark.slow
def test_killing_the_dashboard_gives_the_terminal_back_and_ctrl_c_stops_the_recorder(tmp_path):
    rec = PtyRecorder(tmp_path, "death", rows=40, cols=140)
    try:
        rec.read_until(b"RECORDING", 180)
        child = _dashboard_child(rec.process.pid)
        assert child is not None
        raw = termios.tcgetattr(rec.slave)
        assert not raw[3] & termios.ISIG, "the dashboard owns the terminal in raw mode"
        os.kill(child, signal.SIGKILL)
        rec.read_until(b"the dashboard was killed (signal 9)", 30)
        rec.read_until(b"[record] episode 0 (1/2 of this run) recording", 30)  # plain lines go on
        modes = termios.tcgetattr(rec.slave)
        for flag in (termios.ISIG, termios.ICANON, termios.ECHO):
            assert modes[3] & flag == rec.modes_before[3] & flag, flag
        assert b"\x1b[?1049l" in rec.screen  # the alternate screen left
        os.write(rec.master, b"\x03")  # Ctrl-C, typed: a signal again
        rec.read_until_exit(120)
        assert rec.process.returncode == 0, rec.screen[-3000:].decode(errors="replace")
        assert b"recorded 1 episode(s)" in rec.screen
    finally:
        rec.close()
    store = EpisodeStore.open(tmp_path / "death.zarr")
    assert len(store) == 1 and store.check() == []


@pytest.mark.slow
def test_e_stop_stays_on_screen_until_acknowledged_then_one_line_and_a_failing_exit(tmp_path):
    rec = PtyRecorder(tmp_path, "estop", rows=30, cols=100)
    try:
        rec.read_until(b"RECORDING", 180)
        os.write(rec.master, b"e")
        rec.read_until(b"Acknowledge", 30)
        time.sleep(3.0)  # the recorder's loop is over; the process waits for the operator
        assert rec.process.poll() is None
        mark = len(rec.screen)
        os.write(rec.master, b"\r")
        rec.read_until_exit(60)
    finally:
        rec.close()
    tail = rec.screen[mark:].decode(errors="replace")
    assert rec.process.returncode == 1, tail
    assert "error: recording stopped: e-stop pressed; torque off" in tail
    assert "recorded no episode" in tail and "--episode" not in tail  # no command that cannot work
