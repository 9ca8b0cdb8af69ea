"""`platform record` with its live dashboard: run a recording session beside the dashboard.

The session's status goes out through a TelemetryPublisher (which is also what
`platform monitor` attaches to), and its commands come back from it:

    publisher = TelemetryPublisher.from_config(cfg.telemetry, robot=cfg.robot.name)
    session = RecordingSession(..., publish=publisher.publish, commands=publisher.commands)
    result = run_recorder_dashboard(session, publisher)      # closes the publisher

By default the dashboard runs in a child process on this terminal and the session runs on
the calling (main) thread, so the control loop keeps the GIL to itself and signal
handlers work as without a dashboard; `in_process=True` runs the Textual App in this
process instead (measured cost in BENCHMARKS.md, "Telemetry and dashboard").
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, TypeVar

from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.tui.launch import (
    TerminalState,
    dashboard_lost,
    hold_terminal_logs,
    spawn_dashboard,
    wait_dashboard,
)

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", covariant=True)


class Session(Protocol[ResultT]):
    """What the dashboard runs beside: a `RecordingSession`, or a stand-in in tests."""

    def run(self) -> ResultT:
        """Run the session to its end and return its result (blocks)."""
        ...

    def request_stop(self) -> None:
        """Ask `run` to end soon; safe from another thread."""
        ...

    def estop_after_end(self) -> None:
        """Torque off now, after `run` ended on a fault with the robot held (an E-STOP while
        the fault waits for its acknowledgement)."""
        ...

    def watch_after_end(self) -> None:
        """While the fault waits for its acknowledgement, the robot holding (called often):
        read its alarms and publish the status, each when due."""
        ...


def run_recorder_dashboard(
    session: Session[ResultT],
    publisher: TelemetryPublisher,
    *,
    in_process: bool = False,
    popen: Mapping[str, Any] | None = None,
    headless: bool = False,
    on_dashboard_lost: Callable[[str], None] | None = None,
    put_away: Callable[[], None] | None = None,
) -> ResultT:
    """Run `session` to its end with the dashboard on this terminal; return its result.

    The session must publish to and take commands from `publisher`. When the session
    ends, the publisher is closed, which ends the dashboard. A dashboard that crashes or
    is closed early leaves the session running headless. While the dashboard owns the
    terminal, log records meant for it are held and printed afterwards (a log file that
    `tui.launch.log_to_file` attached gets them as they happen). A dashboard that dies before the session ends
    (killed, crashed) gives the terminal back as it was, and `on_dashboard_lost(why)` is
    called so the caller can go on with plain lines. A session that ends in a fault waits
    for the operator to acknowledge it on the dashboard, the robot holding, its servos'
    alarms read and the status published meanwhile (`Session.watch_after_end`). `put_away` (the robot off, the
    writer drained, the final status published) runs once the session has ended, before
    the publisher closes, so the dashboard and monitors see the last takes saved; after a
    fault, once it was acknowledged. `popen` and `headless` are for tests.
    """
    with hold_terminal_logs():
        if in_process:
            return _run_in_process(session, publisher, headless=headless, put_away=put_away)
        return _run_with_child(session, publisher, popen or {}, on_dashboard_lost, put_away)


ACKNOWLEDGE_WAIT_S = 3600.0  # a fault stays on the dashboard this long, waiting for a key


def _run_with_child(session: Session[ResultT], publisher: TelemetryPublisher, popen: Mapping[str, Any],
                    on_dashboard_lost: Callable[[str], None] | None,
                    put_away: Callable[[], None] | None = None) -> ResultT:
    terminal = TerminalState.save(popen.get("stdin"), popen.get("stdout"))
    child = spawn_dashboard(str(publisher.address), control=True, token=publisher.local_token, **popen)
    session_over = threading.Event()

    def watch() -> None:
        """The dashboard gone while the session runs (exited, or stopped by the kernel: a
        stopped one shows nothing either, and poll() says it runs): restore the terminal,
        say so."""
        while not session_over.wait(0.1):
            why = dashboard_lost(child)
            if why is None:
                continue
            if not session_over.is_set():
                terminal.restore()
                log.warning("%s; the recording goes on", why)
                if on_dashboard_lost is not None:
                    on_dashboard_lost(why)
            return

    watcher = threading.Thread(target=watch, name="dashboard-watch", daemon=True)
    watcher.start()
    result: Any = None
    ran = False  # the session returned (not raised): put it away before the feed closes
    try:
        result = session.run()
        ran = True
        return result
    finally:
        session_over.set()
        watcher.join()
        time.sleep(0.15)  # let the final status (stopped / fault) reach the dashboard
        # A fault is on the dashboard until acknowledged, the robot held meanwhile: the
        # process ends after that, or at a scheduler's SIGTERM or a closed terminal's SIGHUP
        # (the session's handlers only ask a session that has ended to stop: the wait would
        # outlast them). The feed stays open for that wait, so the dashboard's E-STOP (or a
        # monitor's) still turns torque off; closing it ends a dashboard with nothing to ask.
        faulted = bool(getattr(result, "fault", ""))
        failure: list[BaseException] = []  # put_away's, raised once the dashboard is dealt with

        def put_away_once() -> None:
            if ran and put_away is not None and not failure:
                try:
                    put_away()
                except BaseException as exc:
                    failure.append(exc)

        if not faulted:
            put_away_once()
            publisher.close()
        replaced = _end_wait_on_signals(child) if faulted else {}
        try:
            code = (_wait_for_acknowledgement(child, session, publisher) if faulted
                    else wait_dashboard(child, timeout_s=5.0))
        except KeyboardInterrupt:
            code = wait_dashboard(child, timeout_s=1.0)
        finally:
            if faulted:
                put_away_once()  # acknowledged (or given up on): now the robot may go off
            publisher.close()
            for sig, handler in replaced.items():
                signal.signal(sig, handler)
        if code != 0:
            terminal.restore()  # it died or was stopped: whatever it left on the terminal goes
        if failure:
            raise failure[0]


def _wait_for_acknowledgement(child: Any, session: Session[Any], publisher: TelemetryPublisher) -> int | None:
    """Wait up to ACKNOWLEDGE_WAIT_S for the dashboard `child` to exit (the fault
    acknowledged), the robot holding as the fault left it and watched by the session as
    deploy's holds watch theirs (`Session.watch_after_end`: alarms read, status published);
    an E-STOP sent meanwhile turns torque off at once. Returns the dashboard's exit code
    (None: still running, then terminated)."""
    from shallowpi.telemetry.status import Command

    deadline = time.monotonic() + ACKNOWLEDGE_WAIT_S
    # A dashboard stopped by the kernel (a run put in the background) acknowledges nothing:
    # counted as gone, as an exited one, not waited on for the hour.
    while dashboard_lost(child) is None and time.monotonic() < deadline:
        if any(request.command is Command.ESTOP for request in publisher.commands()):
            session.estop_after_end()
        session.watch_after_end()
        time.sleep(0.05)
    return wait_dashboard(child, timeout_s=1.0)


def _end_wait_on_signals(child: Any) -> dict[int, Any]:
    """SIGTERM and SIGHUP close the dashboard `child` (ending the wait for a key); returns
    the handlers replaced ({} off the main thread, where Python delivers no signals)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def close_dashboard(signum: int, frame: Any) -> None:
        log.warning("signal %d: closing the dashboard without the fault's acknowledgement", signum)
        with contextlib.suppress(OSError):
            child.terminate()

    return {sig: signal.signal(sig, close_dashboard) for sig in (signal.SIGTERM, signal.SIGHUP)}


def _run_in_process(session: Session[ResultT], publisher: TelemetryPublisher, headless: bool,
                    put_away: Callable[[], None] | None = None) -> ResultT:
    from shallowpi.tui.recorder_dashboard import RecorderDashboard

    outcome: dict[str, Any] = {}

    def control_loop() -> None:
        try:
            outcome["result"] = session.run()
            # After a fault the robot holds until the dashboard's acknowledgement: put away
            # on the main thread then, by the caller (the App waits for it).
            if put_away is not None and not getattr(outcome["result"], "fault", ""):
                put_away()
                outcome["put_away"] = True
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc
        finally:
            publisher.close()  # ends the feed: the dashboard exits

    app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)
    loop = threading.Thread(target=control_loop, name="control-loop")
    loop.start()
    try:
        app.run(headless=headless)
    except Exception:
        log.exception("dashboard crashed; the recording goes on without it")
    # Closed early (or crashed): the session still runs; wait for it like a headless run.
    while loop.is_alive():
        try:
            loop.join(timeout=0.2)
        except KeyboardInterrupt:
            session.request_stop()
    if "error" in outcome:
        raise outcome["error"]
    if put_away is not None and not outcome.get("put_away"):
        put_away()  # a fault, acknowledged: the feed is closed, but its last status is not needed
    return outcome["result"]
