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

import logging
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, TypeVar

from shallowpi.telemetry.transport import TelemetryPublisher
from shallowpi.tui.launch import hold_terminal_logs, spawn_dashboard, wait_dashboard

log = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", covariant=True)


class Session(Protocol[ResultT]):
    def run(self) -> ResultT: ...
    def request_stop(self) -> None: ...


def run_recorder_dashboard(
    session: Session[ResultT],
    publisher: TelemetryPublisher,
    *,
    in_process: bool = False,
    log_path: Path | None = None,
    popen: Mapping[str, Any] | None = None,
    headless: bool = False,
) -> ResultT:
    """Run `session` to its end with the dashboard on this terminal; return its result.

    The session must publish to and take commands from `publisher`. When the session
    ends, the publisher is closed, which ends the dashboard. A dashboard that crashes or
    is closed early leaves the session running headless. While the dashboard owns the
    terminal, log records meant for it are held and printed afterwards (and written to
    `log_path` as they happen, if given). `popen` and `headless` are for tests.
    """
    with hold_terminal_logs(log_path):
        if in_process:
            return _run_in_process(session, publisher, headless=headless)
        return _run_with_child(session, publisher, popen or {})


def _run_with_child(session: Session[ResultT], publisher: TelemetryPublisher,
                    popen: Mapping[str, Any]) -> ResultT:
    child = spawn_dashboard(str(publisher.address), control=True, **popen)
    try:
        return session.run()
    finally:
        time.sleep(0.15)  # let the final status (stopped / fault) reach the dashboard
        publisher.close()
        wait_dashboard(child)


def _run_in_process(session: Session[ResultT], publisher: TelemetryPublisher, headless: bool) -> ResultT:
    from shallowpi.tui.recorder_dashboard import RecorderDashboard

    outcome: dict[str, Any] = {}

    def control_loop() -> None:
        try:
            outcome["result"] = session.run()
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
    return outcome["result"]
