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


@pytest.mark.slow
def test_killing_the_dashboard_gives_the_terminal_back_and_ctrl_c_stops_the_recorder(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    before = termios.tcgetattr(slave)
    recorder = subprocess.Popen(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--realtime",
                     "--data-root", str(tmp_path), "--dataset", "death", "--episodes", "2",
                     "--episode-time-s", "120", "record.sim_size=64x64", f"telemetry.address={tmp_path}/t.sock"),
        env=subprocess_env(TERM="xterm-256color"), stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=_controlling_terminal)
    screen = bytearray()

    def read_until(needle: bytes, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in screen:
            assert time.monotonic() < deadline and recorder.poll() is None, (
                needle, recorder.poll(), screen[-3000:].decode(errors="replace"))
            if select.select([master], [], [], 0.1)[0]:
                screen.extend(os.read(master, 65536))

    try:
        read_until(b"RECORDING", 180)
        child = _dashboard_child(recorder.pid)
        assert child is not None
        raw = termios.tcgetattr(slave)
        assert not raw[3] & termios.ISIG, "the dashboard owns the terminal in raw mode"
        os.kill(child, signal.SIGKILL)
        read_until(b"the dashboard was killed (signal 9)", 30)
        read_until(b"[record] episode 0 (1/2 of this run) recording", 30)  # plain lines go on
        modes = termios.tcgetattr(slave)
        for flag in (termios.ISIG, termios.ICANON, termios.ECHO):
            assert modes[3] & flag == before[3] & flag, flag
        assert b"\x1b[?1049l" in screen  # the alternate screen left
        os.write(master, b"\x03")  # Ctrl-C, typed: a signal again
        deadline = time.monotonic() + 120
        while recorder.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                screen.extend(os.read(master, 65536))
        assert recorder.returncode == 0, screen[-3000:].decode(errors="replace")
        while select.select([master], [], [], 0.2)[0]:
            try:
                screen.extend(os.read(master, 65536))
            except OSError:
                break
        assert b"recorded 1 episode(s)" in screen
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        os.close(slave)
        os.close(master)
    store = EpisodeStore.open(tmp_path / "death.zarr")
    assert len(store) == 1 and store.check() == []


@pytest.mark.slow
def test_e_stop_stays_on_screen_until_acknowledged_then_one_line_and_a_failing_exit(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    recorder = subprocess.Popen(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--realtime",
                     "--data-root", str(tmp_path), "--dataset", "estop", "--episodes", "2",
                     "--episode-time-s", "120", "record.sim_size=64x64", f"telemetry.address={tmp_path}/t.sock"),
        env=subprocess_env(TERM="xterm-256color"), stdin=slave, stdout=slave, stderr=slave,
        start_new_session=True, preexec_fn=_controlling_terminal)
    screen = bytearray()

    def read_until(needle: bytes, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while needle not in screen:
            assert time.monotonic() < deadline and recorder.poll() is None, (
                needle, recorder.poll(), screen[-3000:].decode(errors="replace"))
            if select.select([master], [], [], 0.1)[0]:
                screen.extend(os.read(master, 65536))

    try:
        read_until(b"RECORDING", 180)
        os.write(master, b"e")
        read_until(b"Acknowledge", 30)
        time.sleep(3.0)  # the recorder's loop is over; the process waits for the operator
        assert recorder.poll() is None
        mark = len(screen)
        os.write(master, b"\r")
        deadline = time.monotonic() + 60
        while recorder.poll() is None and time.monotonic() < deadline:
            if select.select([master], [], [], 0.1)[0]:
                screen.extend(os.read(master, 65536))
        while select.select([master], [], [], 0.2)[0]:
            try:
                screen.extend(os.read(master, 65536))
            except OSError:
                break
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
        os.close(slave)
        os.close(master)
    tail = screen[mark:].decode(errors="replace")
    assert recorder.returncode == 1, tail
    assert "error: recording stopped: e-stop pressed; torque off" in tail
    assert "recorded no episode" in tail and "--episode" not in tail  # no command that cannot work
