"""`run_recorder_dashboard`: a session runs to its end beside its dashboard, in a child
process on a (pseudo-)terminal or in this process, and terminal logging is held."""

from __future__ import annotations

import contextlib
import fcntl
import io
import logging
import os
import pty
import select
import signal
import struct
import termios
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import Command, RecorderState
from shallowpi.tui.launch import hold_terminal_logs, log_to_file
from shallowpi.tui.recorder_app import run_recorder_dashboard
from telemetry_fixtures import commands_of
from test_dashboard import make_status

pytestmark = pytest.mark.timeout(90)
log = logging.getLogger("test.session")


class FakeSession:
    """Stands in for RecordingSession: a 50 Hz loop that publishes and obeys commands."""

    def __init__(self, publisher: TelemetryPublisher, max_ticks: int = 10_000) -> None:
        self.publisher = publisher
        self.max_ticks = max_ticks
        self.stop = threading.Event()
        self.seen: list[Command] = []
        self.thread_name = ""
        self.status = make_status()

    def request_stop(self) -> None:
        self.stop.set()

    def watch_after_end(self) -> None:
        pass  # a stand-in holds no robot after its fault

    def run(self) -> str:
        self.thread_name = threading.current_thread().name
        status = self.status
        for tick in range(self.max_ticks):
            commands = commands_of(self.publisher)
            self.seen += commands
            if Command.QUIT in commands or self.stop.is_set():
                break
            status.episode_time_s = tick / 50
            self.publisher.publish(status)  # one status updated in place, as the recorder does
            if tick == 5:
                log.warning("a warning logged while the dashboard owns the terminal")
            time.sleep(0.02)
        status.state = RecorderState.STOPPED
        self.publisher.publish(status)
        return f"ran {tick} ticks"


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def terminal_log_handler():
    stream = FakeTerminal()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def test_in_process_dashboard_ends_with_the_session(tmp_path):
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    session = FakeSession(publisher, max_ticks=40)
    with terminal_log_handler() as terminal, log_to_file(tmp_path / "record.log"):
        result = run_recorder_dashboard(session, publisher, in_process=True, headless=True)
        assert result == "ran 39 ticks"
        assert session.thread_name == "control-loop"
    assert not (tmp_path / "telemetry.sock").exists(), "the publisher was closed"
    # The warning was held while the dashboard ran, then printed; and written to the log file.
    assert "a warning logged while the dashboard owns the terminal" in terminal.getvalue()
    assert "a warning logged" in (tmp_path / "record.log").read_text()


def test_the_last_status_a_monitor_sees_is_the_one_after_the_robot_was_put_away(tmp_path):
    """With a dashboard the publisher closed as the session ended, before `platform record`
    drained the writer and published the final status: every monitor kept the last takes
    "saving". `put_away` now runs before the feed closes."""
    from shallowpi.telemetry.subscriber import TelemetrySubscriber

    address = str(tmp_path / "telemetry.sock")
    publisher = TelemetryPublisher(address)
    session = FakeSession(publisher, max_ticks=60)
    received: list[str] = []
    order: list[str] = []

    def put_away() -> None:
        order.append("put away")
        publisher.publish(make_status(RecorderState.STOPPED, message="all takes saved"))

    def watch() -> None:
        with TelemetrySubscriber(address) as monitor:
            received.extend(status.message for status in monitor)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run_recorder_dashboard(session, publisher, in_process=True, headless=True, put_away=put_away)
    watcher.join(timeout=30)
    assert order == ["put away"] and received and received[-1] == "all takes saved"


def test_held_logs_do_not_reach_the_terminal_while_held():
    with terminal_log_handler() as terminal:
        with hold_terminal_logs():
            log.warning("held back")
            assert terminal.getvalue() == ""
        assert "held back" in terminal.getvalue()


def _run_with_a_dashboard_on_a_pty(session: FakeSession, publisher: TelemetryPublisher,
                                   react: Callable[[bytearray, int], None],
                                   **options: Any) -> tuple[Any, bytearray]:
    """`run_recorder_dashboard` with its child dashboard on a pseudo-terminal, while a thread
    drains the screen and calls `react(screen, master)` after each read (to type keys or send
    signals); returns the session's result and the screen."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    screen = bytearray()
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            if select.select([master], [], [], 0.05)[0]:
                try:
                    screen.extend(os.read(master, 65536))
                except OSError:  # the dashboard is gone
                    return
            react(screen, master)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        result = run_recorder_dashboard(session, publisher, popen={
            "stdin": slave, "stdout": slave, "stderr": slave, "start_new_session": True}, **options)
    finally:
        done.set()
        thread.join(timeout=5)
        os.close(slave)
        os.close(master)
    return result, screen


def test_child_dashboard_on_a_terminal_quits_the_session(tmp_path, monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    session = FakeSession(publisher)
    typed: list[bytes] = []

    def operator(screen: bytearray, master: int) -> None:  # types q, then y, once the dashboard shows
        if not typed and b"RECORDING" in screen:
            os.write(master, b"q")
            typed.append(b"q")
        elif typed == [b"q"] and b"Stop recording and quit?" in screen:
            os.write(master, b"y")
            typed.append(b"y")

    result, screen = _run_with_a_dashboard_on_a_pty(session, publisher, operator)
    assert session.seen == [Command.QUIT], screen[-3000:].decode(errors="replace")
    assert result.startswith("ran ") and session.thread_name == "MainThread"


def _dashboard_of(parent: int) -> int | None:
    """The pid of `parent`'s dashboard child (`monitor --attached`), or None."""
    for entry in Path("/proc").iterdir():
        try:
            stat, cmdline = (entry / "stat").read_text(), (entry / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent and b"--attached" in cmdline:
            return int(entry.name)
    return None


def test_a_dashboard_stopped_by_the_kernel_counts_as_lost_and_the_run_goes_on_with_lines(tmp_path, monkeypatch):
    """`platform record ... &` (or a group sent to the background): the dashboard child is
    stopped (SIGTTOU, state T) and poll() says it runs, so the recording went on blind, its
    logs held, with no "dashboard lost". A stopped dashboard is lost: killed, and said."""
    monkeypatch.setenv("TERM", "xterm-256color")
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    session = FakeSession(publisher, max_ticks=500)  # ~10 s, ended early once the loss is said
    lost: list[str] = []
    stopped: list[int] = []

    def job_control(screen: bytearray, master: int) -> None:  # stops the dashboard once it shows
        if not stopped and b"RECORDING" in screen and (pid := _dashboard_of(os.getpid())) is not None:
            os.kill(pid, signal.SIGSTOP)  # as the kernel's SIGTTOU does
            stopped.append(pid)

    def dashboard_lost(why: str) -> None:
        lost.append(why)
        session.request_stop()

    result, screen = _run_with_a_dashboard_on_a_pty(session, publisher, job_control, on_dashboard_lost=dashboard_lost)
    assert stopped, screen[-2000:].decode(errors="replace")
    assert lost and "the dashboard was stopped" in lost[0], lost
    assert not Path(f"/proc/{stopped[0]}").exists()  # killed and reaped, not left stopped
    assert result.startswith("ran ")


class FaultedSession(FakeSession):
    """Records until its dashboard shows (`shown`), then ends with a fault: the dashboard
    then waits for the operator's key."""

    class Result:
        fault = "servo 3: overload"

    def __init__(self, publisher: TelemetryPublisher, shown: threading.Event) -> None:
        super().__init__(publisher)
        self.shown = shown

    def run(self) -> Result:
        status = self.status
        while not self.shown.wait(0.02):
            self.publisher.publish(status)
        status.state, status.message = RecorderState.FAULT, "FAULT: servo 3: overload"
        for _ in range(25):  # half a second of the fault: the dashboard has it
            self.publisher.publish(status)
            time.sleep(0.02)
        return FaultedSession.Result()


def test_a_fault_waiting_for_its_key_ends_at_sigterm(tmp_path, monkeypatch):
    """A scheduler's SIGTERM (or a closed terminal's SIGHUP) while the fault waits on the
    dashboard for its acknowledgement ends the wait, not an hour later."""
    monkeypatch.setenv("TERM", "xterm-256color")
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    before = signal.getsignal(signal.SIGTERM)
    shown = threading.Event()
    sent: list[float] = []

    def scheduler(screen: bytearray, master: int) -> None:  # SIGTERM once the fault waits for its key
        if b"RECORDING" in screen:
            shown.set()
        if not sent and b"Acknowledge" in screen and signal.getsignal(signal.SIGTERM) is not before:
            time.sleep(1.0)  # still waiting: no key comes
            os.kill(os.getpid(), signal.SIGTERM)
            sent.append(time.monotonic())

    result, screen = _run_with_a_dashboard_on_a_pty(FaultedSession(publisher, shown), publisher, scheduler)
    assert result.fault == "servo 3: overload"
    assert sent and time.monotonic() - sent[0] < 10, screen[-2000:].decode(errors="replace")
    assert signal.getsignal(signal.SIGTERM) is before  # put back after the wait


def test_an_estop_while_a_fault_waits_for_its_key_turns_torque_off(tmp_path, monkeypatch):
    """After a fault the robot holds position until the operator acknowledges it. The feed
    was closed for that wait and the acknowledgement dialog swallowed `e`: for up to an hour
    nothing could turn torque off but Ctrl-C. The E-STOP key acts on every screen, and the
    recorder still hears it during the wait."""
    monkeypatch.setenv("TERM", "xterm-256color")
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    shown = threading.Event()
    estops: list[float] = []
    typed: list[bytes] = []

    class HeldAfterFault(FaultedSession):
        def estop_after_end(self) -> None:
            estops.append(time.monotonic())

    def operator(screen: bytearray, master: int) -> None:  # e in the dialog, then enter
        if b"RECORDING" in screen:
            shown.set()
        if not typed and b"Acknowledge" in screen:
            time.sleep(0.5)
            os.write(master, b"e")
            typed.append(b"e")
        elif typed == [b"e"] and estops:
            os.write(master, b"\r")
            typed.append(b"\r")

    result, screen = _run_with_a_dashboard_on_a_pty(HeldAfterFault(publisher, shown), publisher, operator)
    assert result.fault == "servo 3: overload"
    assert len(estops) == 1, screen[-2000:].decode(errors="replace")
    assert typed == [b"e", b"\r"]  # acknowledged after it: the dashboard then exits


def test_a_put_away_that_fails_still_closes_the_feed_and_waits_for_the_dashboard(tmp_path, monkeypatch):
    """put_away runs in the teardown: its error (a writer that cannot drain, say) is raised
    once the feed is closed and the dashboard child has exited, not in their place (the
    child stayed on the terminal, nobody waiting for it)."""
    from shallowpi.tui import recorder_app

    monkeypatch.setenv("TERM", "xterm-256color")
    publisher = TelemetryPublisher(str(tmp_path / "telemetry.sock"))
    session = FakeSession(publisher, max_ticks=40)
    children = []
    spawn = recorder_app.spawn_dashboard

    def spawn_and_keep(*args, **kwargs):
        children.append(spawn(*args, **kwargs))
        return children[-1]

    def put_away() -> None:
        raise OSError("the writer could not drain")

    monkeypatch.setattr(recorder_app, "spawn_dashboard", spawn_and_keep)
    with pytest.raises(OSError, match="could not drain"):
        _run_with_a_dashboard_on_a_pty(session, publisher, lambda screen, master: None, put_away=put_away)
    assert not (tmp_path / "telemetry.sock").exists(), "the publisher was closed"
    assert len(children) == 1 and children[0].returncode is not None  # waited for, not left on the terminal


def test_a_servo_that_faults_while_the_robot_holds_for_the_acknowledgement_is_read_handled_and_shown(
        tmp_path, monkeypatch):
    """While a fault waited on the dashboard for its acknowledgement (up to an hour, the robot
    holding), only the E-STOP was listened for: a held servo that overloaded went limp unseen,
    the dashboard still saying "robot is safe: holding position", nothing logged, and no
    status went out (dashboards said STALE). The servos' alarms are read once a second as
    deploy's holds read them: the fault is handled as in a tick (its bus limp), put in the
    result's fault line and published, and the status goes on being published."""
    from dxl_fixtures import emulated
    from shallowpi.record.fault_hold import FaultHold
    from shallowpi.robots.calibration import RobotCalibration
    from shallowpi.robots.dynamixel_robot import DynamixelRobot
    from shallowpi.telemetry.subscriber import TelemetrySubscriber

    monkeypatch.setenv("TERM", "xterm-256color")
    address = str(tmp_path / "telemetry.sock")
    publisher = TelemetryPublisher(address)
    shown = threading.Event()
    typed: list[bytes] = []
    overloaded: list[float] = []
    received: list[tuple[float, str]] = []

    def monitor() -> None:
        with TelemetrySubscriber(address) as subscriber:
            received.extend((time.monotonic(), status.message) for status in subscriber)

    with emulated("arm") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        follower = chains["follower"]

        class HoldingAfterFault(FaultedSession):
            """Ends on a fault with its robot holding (the leader stopped answering, say),
            watched as RecordingSession.watch_after_end watches its own."""

            def __init__(self) -> None:
                super().__init__(publisher, shown)
                robot.hold()
                self.held: FaultHold | None = None

            def run(self) -> FaultedSession.Result:
                self.result = super().run()
                return self.result

            def watch_after_end(self) -> None:
                if self.held is None:
                    self.held = FaultHold(robot, self.status, publisher.publish, self.result)
                self.held.watch()

        def operator(screen: bytearray, master: int) -> None:  # the lift overloads; enter once it is shown
            if b"RECORDING" in screen:
                shown.set()
            if not overloaded and b"Acknowledge" in screen:
                time.sleep(0.5)
                follower.hardware_error(2, "overload")
                overloaded.append(time.monotonic())
            elif overloaded and not typed and time.monotonic() - overloaded[0] > 10:
                os.write(master, b"\r")  # never handled: end the wait, the asserts say why
                typed.append(b"\r")
            elif overloaded and not typed and "while holding" in session.status.message:
                time.sleep(1.2)  # the status goes on going out meanwhile
                os.write(master, b"\r")
                typed.append(b"\r")

        session = HoldingAfterFault()
        watcher = threading.Thread(target=monitor, daemon=True)
        watcher.start()
        try:
            result, screen = _run_with_a_dashboard_on_a_pty(session, publisher, operator)
        finally:
            robot.disconnect()
        watcher.join(timeout=10)
        assert typed == [b"\r"], screen[-2000:].decode(errors="replace")
        assert result.fault.startswith("servo 3: overload; then, while it held for the acknowledgement: ")
        assert "servo 2" in result.fault and "torque off on bus 'follower'" in result.fault
        assert session.status.message.startswith("FAULT while holding for the acknowledgement: ")
        said = [t for t, message in received if "FAULT while holding" in message]
        assert said and said[0] - overloaded[0] < 2.0  # read within a second (ALARM_READ_PERIOD_S)
        # Published again while it waited (a dashboard with none for 2 s says STALE).
        assert len({t for t, _ in received if t > overloaded[0]}) >= 2
