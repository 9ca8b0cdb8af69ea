"""The dashboard and the real terminal it runs on: what it leaves behind when killed, a
stderr in a file, a run in the background of its terminal, a SIGTERM to `platform
monitor`, and a source gone quiet while it shows a fault."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.telemetry.executor_status import ExecutorState
from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import RecorderState
from shallowpi.tui.executor_dashboard import ExecutorDashboard
from shallowpi.tui.launch import TerminalState, spawn_dashboard, wait_dashboard
from shallowpi.tui.recorder_dashboard import RecorderDashboard
from shallowpi.tui.stale import STALE_AFTER_S
from test_dashboard import make_status, text_of
from test_executor_dashboard import make_status as make_executor_status

pytestmark = pytest.mark.timeout(120)


class Pty:
    """A pseudo-terminal of 24 x 80; `screen` holds what was written to it."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.screen = bytearray()

    def read_until(self, done: Callable[[bytes], bool], timeout_s: float) -> bool:
        """Read what comes until `done(screen)` or `timeout_s`; whether it was done."""
        deadline = time.monotonic() + timeout_s
        while not done(bytes(self.screen)) and time.monotonic() < deadline:
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    self.screen.extend(os.read(self.master, 65536))
                except OSError:  # every writer gone
                    break
        return done(bytes(self.screen))

    def text(self, start: int = 0) -> str:
        """The screen from byte `start` on, without its escape sequences."""
        return re.sub(rb"\x1b\[[0-9;?<>=$]*[a-zA-Z~]", b"", bytes(self.screen[start:])).decode(errors="replace")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


def _controlling_terminal() -> None:  # in the child after setsid: the pty becomes its terminal
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


@pytest.fixture
def publishing(short_dir: Path) -> Iterator[TelemetryPublisher]:
    """A recorder's publisher with a RECORDING status going out at 10 Hz."""
    publisher = TelemetryPublisher(str(short_dir / "t.sock"), allow_control=True)
    stop = threading.Event()

    def serve() -> None:
        while not stop.wait(0.1):
            publisher.publish(make_status())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield publisher
    finally:
        stop.set()
        thread.join(timeout=5)
        publisher.close()


def test_restore_turns_line_wrap_back_on_and_in_band_resize_off():
    """Textual turns line wrap off (and may turn in-band resize reports on); a dashboard
    killed by SIGKILL left the shell cutting every long line at the right edge."""
    terminal = Pty()
    try:
        TerminalState(None, terminal.slave, None).restore()
        assert terminal.read_until(lambda screen: screen.endswith(b"\r\n"), 5)
        assert b"\x1b[?7h" in terminal.screen and b"\x1b[?2048l" in terminal.screen, bytes(terminal.screen)
    finally:
        terminal.close()


def test_the_recorders_dashboard_draws_on_the_terminal_when_stderr_is_a_file(publishing, tmp_path):
    """`platform record ... 2>err.log`: Textual draws on stderr, so the dashboard went into
    the file and the terminal stayed blank. The child's stderr is the terminal."""
    terminal = Pty()
    err_log = tmp_path / "err.log"
    saved = os.dup(2)
    try:
        with open(err_log, "wb") as err:  # this process's stderr a file while the child starts
            os.dup2(err.fileno(), 2)
            try:
                child = spawn_dashboard(str(publishing.address), token=publishing.local_token,
                                        stdin=terminal.slave, stdout=terminal.slave, start_new_session=True)
            finally:
                os.dup2(saved, 2)
        try:
            drawn = terminal.read_until(lambda screen: b"RECORDING" in screen, 30)
        finally:
            publishing.close()
            wait_dashboard(child)
        assert drawn, f"nothing on the terminal; {err_log.stat().st_size} bytes in the stderr file"
        assert b"RECORDING" not in err_log.read_bytes()
    finally:
        os.close(saved)
        terminal.close()


def _monitor_lines(address: str, command: list[str], terminal: Pty, stderr: object) -> subprocess.Popen:
    return subprocess.Popen(command, env=subprocess_env(TERM="xterm-256color"), stdin=terminal.slave,
                            stdout=terminal.slave, stderr=stderr, start_new_session=True,
                            preexec_fn=_controlling_terminal)


def test_monitor_with_stderr_in_a_file_prints_lines_on_the_terminal_and_says_why(publishing, tmp_path):
    """`platform monitor 2>err.log` ran Textual in-process, drawing into the file: the
    operator's terminal stayed blank. Now plain lines there, after one line saying why."""
    terminal = Pty()
    with open(tmp_path / "err.log", "wb") as err:
        monitor = _monitor_lines(str(publishing.address), platform_cmd("monitor", "--address", str(publishing.address)),
                                 terminal, err)
    try:
        said = terminal.read_until(lambda screen: re.search(rb"\+\d{4} recording", screen) is not None, 30)
        assert said, f"no status line on the terminal: {terminal.text()[-500:]!r}"
        assert "plain status lines, no dashboard: stderr is not a terminal" in terminal.text()
    finally:
        monitor.kill()
        monitor.wait()
        terminal.close()


# A shell's job control on the pty: this leader makes `sleep` the terminal's foreground
# group and runs the command (argv[1:]) in a background group of its own, as `cmd &` does.
_BACKGROUND = """
import os, subprocess, sys
foreground = subprocess.Popen(["sleep", "60"], process_group=0)
os.tcsetpgrp(0, foreground.pid)
try:
    subprocess.run(sys.argv[1:], process_group=0, timeout=60)
finally:
    foreground.kill()
"""


def test_monitor_in_the_background_of_its_terminal_prints_lines_and_says_why(publishing):
    """`platform monitor &`: the terminal check passed, and Textual, changing the terminal's
    modes from a background group, was stopped by the kernel (SIGTTOU) with nothing drawn.
    A terminal counts only when this process group is its foreground."""
    terminal = Pty()
    leader = _monitor_lines(str(publishing.address),
                            [sys.executable, "-c", _BACKGROUND, *platform_cmd("monitor", "--address",
                                                                              str(publishing.address))],
                            terminal, terminal.slave)
    try:
        said = terminal.read_until(lambda screen: re.search(rb"\+\d{4} recording", screen) is not None, 30)
        assert said, f"no status line on the terminal: {terminal.text()[-500:]!r}"
        assert "plain status lines, no dashboard: this process is in the background of its terminal" in terminal.text()
    finally:
        os.killpg(leader.pid, signal.SIGKILL)  # the leader's group; the monitor's goes with the pty's hangup
        leader.wait()
        terminal.close()


def test_monitor_ends_interrupted_soon_after_each_sigterm(publishing):
    """2 runs of 13 restored the terminal at a SIGTERM and never exited: the interrupt,
    raised wherever Textual's loop was, left the reader thread waiting on the stopped loop,
    and the interpreter joined it at exit (other runs printed tracebacks after
    "interrupted"). Each run ends with "interrupted", exit 130, within a few seconds."""
    for run in range(3):
        terminal = Pty()
        monitor = _monitor_lines(str(publishing.address),
                                 platform_cmd("monitor", "--address", str(publishing.address)),
                                 terminal, terminal.slave)
        try:
            assert terminal.read_until(lambda screen: b"RECORDING" in screen, 30), terminal.text()[-500:]
            time.sleep(0.3 * run)  # the signal lands at different points of the loop
            mark = len(terminal.screen)
            monitor.send_signal(signal.SIGTERM)
            sent = time.monotonic()
            terminal.read_until(lambda screen, process=monitor: process.poll() is not None, 10)
            took = time.monotonic() - sent
            terminal.read_until(lambda screen: False, 0.2)  # its last words
            after = terminal.text(mark)
            assert monitor.returncode == 130 and took < 5, (run, monitor.returncode, took, after[-800:])
            assert after.rstrip().endswith("interrupted") and "Traceback" not in after, (run, after[-1500:])
        finally:
            if monitor.poll() is None:
                monitor.kill()
                monitor.wait()
            terminal.close()


def test_a_second_sigterm_during_the_monitors_shutdown_still_gives_the_terminal_back(publishing):
    """`kill` twice (or `pkill` run twice): the second signal cut Textual's shutdown short,
    and the terminal was left raw, without echo, on the dashboard's screen."""
    terminal = Pty()
    before = termios.tcgetattr(terminal.slave)
    monitor = _monitor_lines(str(publishing.address), platform_cmd("monitor", "--address", str(publishing.address)),
                             terminal, terminal.slave)
    try:
        assert terminal.read_until(lambda screen: b"RECORDING" in screen, 30), terminal.text()[-500:]
        mark = len(terminal.screen)
        monitor.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        monitor.send_signal(signal.SIGTERM)
        terminal.read_until(lambda screen, process=monitor: process.poll() is not None, 10)
        terminal.read_until(lambda screen: False, 0.2)
        assert monitor.returncode == 130, (monitor.returncode, terminal.text(mark)[-800:])
        modes = termios.tcgetattr(terminal.slave)
        assert modes[3] & termios.ECHO and modes[3] & termios.ICANON and modes[3] == before[3], modes
        assert b"\x1b[?1049l" in terminal.screen[mark:]  # off the dashboard's screen
    finally:
        if monitor.poll() is None:
            monitor.kill()
            monitor.wait()
        terminal.close()


@pytest.mark.parametrize("source", ["recorder", "executor"])
def test_a_source_gone_quiet_in_a_fault_is_called_stale(source):
    """While a fault waits for its acknowledgement the recorder republishes it every 0.5 s
    (record/fault_hold.py), and the executor's fault hold publishes on
    (commands/deploy_holds.py): a quiet one is hung there, and the E-STOP key may reach
    nothing. The dashboards said nothing of it in FAULT."""
    import asyncio

    feed = StatusMailbox(max_hz=0)
    if source == "recorder":
        app = RecorderDashboard(feed, [].append)
        fault = make_status(RecorderState.FAULT, message="FAULT: servo 3 overload")
    else:
        app = ExecutorDashboard(feed, [].append)
        fault = make_executor_status(state=ExecutorState.FAULT, message="fault: servo 7 overload")

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            feed.publish(fault)
            deadline = time.monotonic() + 10
            while app.status is None and time.monotonic() < deadline:
                await pilot.pause(0.05)
            await pilot.pause(STALE_AFTER_S + 1.0)
            assert text_of(app, "message").startswith(f"STALE: no status from the {source} for ")
            feed.close()

    asyncio.run(main())
