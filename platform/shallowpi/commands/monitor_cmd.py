"""Attach the live dashboard to a running recorder or deploy executor, from another terminal.

The recorder (`platform record`), and the executor of `platform deploy`, publish their
status on a local socket, by default one per user and robot
($XDG_RUNTIME_DIR/shallowpi/<robot>.sock; `telemetry.address` overrides it); this command
subscribes and shows the dashboard for the kind of status it receives. On the robot's
computer over SSH:

  platform monitor                                 watch the default robot's recorder (read-only)
  platform monitor --robot humanoid                watch the humanoid's recorder
  platform monitor --control                       also send start/stop, marks, jogs, e-stop, quit
  platform monitor --address tcp://127.0.0.1:7421  a recorder publishing on a loopback port
  platform monitor --lines                         plain status lines, one a second (scripts,
                                                   logs; the default when stdout is no terminal)

--lines says "STALE" with the age when statuses stop coming, and ends with how the
recorder ended: exit 0 "recorder stopped" (a clean stop), 1 "recorder ended on a fault"
(fault or E-STOP; an executor's e-stop too), 3 "recorder vanished" (its stream ended
without a final status).

Quitting the monitor never stops the recording or the executor; with --control, `q` on a
recorder asks whether to stop it or only detach. The recorder grants control only when
telemetry.allow_remote_control is true. (The dashboard `platform deploy` opens itself is
different: `q` there stops the executor, which holds the robot, then leaves.)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from shallowpi.cli import at_least, overrides_from
from shallowpi.errors import PlatformError
from shallowpi.terminal import why_no_dashboard

if TYPE_CHECKING:  # imported inside the functions: `platform --help` stays light
    from textual.app import App

    from shallowpi.telemetry.subscriber import TelemetrySubscriber

HELP = "attach the live dashboard to a running recorder or deploy executor (read-only unless --control)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --robot, --address, --control, --wait-s and --lines (and the hidden --attached)."""
    parser.add_argument(
        "--robot",
        help="the robot whose recorder or executor to watch: finds its default socket (configs/robot/ name)",
    )
    parser.add_argument(
        "--address",
        help="the recorder's telemetry socket path or tcp://127.0.0.1:PORT "
        "(default: telemetry.address in the config, else the --robot's default socket)",
    )
    parser.add_argument(
        "--control", action="store_true",
        help="ask for control: keys send commands to the recorder (if it allows remote control)",
    )
    parser.add_argument(
        "--wait-s", type=at_least(0, float), default=0.0, metavar="S",
        help="wait up to S seconds for the recorder to start publishing (default: fail at once)",
    )
    parser.add_argument(
        "--lines", action="store_true",
        help="print one plain status line a second instead of the dashboard",
    )
    # Set by `platform record` when it runs its own dashboard in a child process
    # (shallowpi.tui.launch): q stops the recording, and the dashboard exits with it.
    parser.add_argument("--attached", action="store_true", help=argparse.SUPPRESS)


def telemetry_address(args: argparse.Namespace) -> str:
    """--address, else `telemetry.address`, else the default socket of the robot where a
    recorder listens now (`live_default_address`: also the /tmp folder of a recorder that
    systemd or cron started without this login's $XDG_RUNTIME_DIR, or whose runtime folder
    was too deep for a socket path)."""
    if getattr(args, "address", None):
        return args.address
    from shallowpi import config
    from shallowpi.telemetry.address import live_default_address, resolve_address

    cfg = config.compose(overrides_from(args))
    configured = cfg.telemetry.address
    if configured and str(configured).strip():
        return resolve_address(configured, cfg.robot.name)
    return live_default_address(cfg.robot.name)


def connect(args: argparse.Namespace, control: bool) -> TelemetrySubscriber:
    """Subscribe to the recorder, waiting up to --wait-s for it to start publishing."""
    from shallowpi.telemetry.address import TelemetryError
    from shallowpi.telemetry.subscriber import TelemetrySubscriber
    from shallowpi.telemetry.transport import LOCAL_CONTROL_ENV

    address = telemetry_address(args)
    deadline = time.monotonic() + max(getattr(args, "wait_s", 0.0), 0.0)
    while True:
        try:
            # Set only in the dashboard a recorder or executor starts for itself (tui/launch.py).
            return TelemetrySubscriber(address, control=control, token=os.environ.get(LOCAL_CONTROL_ENV))
        except TelemetryError as exc:
            if time.monotonic() >= deadline:
                if getattr(args, "address", None) or "no recorder is publishing" not in str(exc):
                    raise
                raise TelemetryError(f"{exc}{_other_recorders()}") from None
            time.sleep(0.1)


def _other_recorders() -> str:
    """A hint naming the robots whose recorders publish on their default sockets now."""
    from shallowpi.telemetry.address import live_robots

    robots = live_robots()
    if not robots:
        return ""
    return f" (recording now: {', '.join(robots)}; attach with `platform monitor --robot {robots[0]}`)"


def _dashboard_for(kind: str) -> type[App]:
    """The dashboard App for a status kind (one line a kind, beside envelope.STATUS_TYPES)."""
    if kind == "recorder":
        from shallowpi.tui.recorder_dashboard import RecorderDashboard

        return RecorderDashboard
    if kind == "executor":
        from shallowpi.tui.executor_dashboard import ExecutorDashboard

        return ExecutorDashboard
    raise PlatformError(f"no dashboard for '{kind}' statuses yet; use `platform monitor --lines`")


def _status_line_for(kind: str) -> Callable[[Any], str]:
    if kind == "recorder":
        from shallowpi.tui.recorder_render import status_line

        return status_line
    if kind == "executor":
        from shallowpi.tui.executor_render import status_line as executor_line

        return executor_line
    return lambda status: str(status.to_json())


def build_app(args: argparse.Namespace) -> App:
    """Connect to the publisher and build the dashboard App for its kind (the caller runs it)."""
    subscriber = connect(args, control=args.control)
    try:
        dashboard = _dashboard_for(subscriber.kind)
    except PlatformError:
        subscriber.close()
        raise
    attached = getattr(args, "attached", False)
    reason = ""
    if args.control and not subscriber.control:
        reason = f"read-only: {subscriber.refusal}"
    return dashboard(
        subscriber,
        subscriber.send if subscriber.control else None,
        monitor=not attached,
        exit_when_source_ends=attached,
        read_only_reason=reason,
    )


EXIT_STOPPED, EXIT_FAULT, EXIT_VANISHED = 0, 1, 3


def print_lines(args: argparse.Namespace, interval_s: float = 1.0) -> int:
    """One line a second: the newest status, or that it is stale and how old; at the end,
    how the recorder ended. Exit 0: it stopped cleanly; 1: it ended on a fault or E-STOP;
    3: it vanished (its stream ended without a final status: killed, crashed)."""
    from shallowpi.tui.stale import STALE_AFTER_S  # the dashboards' threshold too

    with connect(args, control=False) as subscriber:
        status_line = _status_line_for(subscriber.kind)
        latest: dict[str, Any] = {}
        ended = threading.Event()

        def read() -> None:
            try:
                for status in subscriber:  # `at`: when it was published (a newcomer's may be old)
                    latest["status"], latest["at"] = status, time.monotonic() - status.age_s
            except Exception as exc:  # a status it cannot read (EnvelopeError, ...): one line, not a traceback
                print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} error: {exc}", flush=True)
            finally:
                ended.set()

        threading.Thread(target=read, name="telemetry reader", daemon=True).start()
        printed: Any = None
        while not ended.wait(interval_s if printed is not None else 0.05):
            status = latest.get("status")
            if status is None:
                continue
            age = time.monotonic() - latest["at"]
            stale = f"STALE: no status for {age:.0f} s; last: " if age > STALE_AFTER_S else ""
            print(f"{time.strftime('%Y-%m-%dT%H:%M:%S%z')} {stale}{status_line(status)}", flush=True)
            printed = status
        last = latest.get("status")
    return _say_how_it_ended(last, latest.get("at"))


def _say_how_it_ended(last: Any, at: float | None) -> int:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    state = getattr(getattr(last, "state", None), "value", None)
    from shallowpi.telemetry.executor_status import ExecutorStatus

    what = "executor" if isinstance(last, ExecutorStatus) else "recorder"
    if state == "stopped" and getattr(last, "estopped", False):  # an executor's e-stop: torque went off
        print(f"{stamp} {what} e-stopped{_after('e-stopped', last.message)}", flush=True)
        return EXIT_FAULT
    # done: an executor that ran every episode; a recorder's done still teleoperates, its
    # last word is stopped (a feed that ends on done vanished)
    if state == "stopped" or (state == "done" and what == "executor"):
        said = _after(state, last.message) if what == "executor" else ""  # by whom, or how many ran
        print(f"{stamp} {what} {state}{said}", flush=True)
        return EXIT_STOPPED
    if state == "fault":
        print(f"{stamp} {what} ended on a fault{_after('fault', last.message)}", flush=True)
        return EXIT_FAULT
    seen = (f"its last status ({state}) {time.monotonic() - at:.0f} s ago" if at is not None
            else "no status received")
    print(f"{stamp} {what} vanished without a final status (killed or crashed?); {seen}", flush=True)
    return EXIT_VANISHED


def _after(word: str, message: str | None) -> str:
    """The final status's message to follow `word` on the last line, without the word the
    message starts with itself: the executor's 'done: 2 episode(s)' after "done" is
    ': 2 episode(s)', its 'stopped by the operator; ...' after "stopped" ' by the operator;
    ...', a recorder's 'FAULT: ...' after "fault" ': ...'. '' for no message."""
    if not message:
        return ""
    rest = message[len(word):]
    if message[:len(word)].lower() == word.lower() and rest[:1] in ("", ":", " "):
        return rest
    return f": {message}"


def run(args: argparse.Namespace) -> int:
    """Show the dashboard, or print status lines with --lines, when stdout is no terminal,
    or when the terminal cannot take the dashboard (`why_no_dashboard`, said in one line).

    Returns 0 after the dashboard; with lines, the code of how the recorder ended
    (EXIT_STOPPED, EXIT_FAULT or EXIT_VANISHED).
    """
    if args.lines:
        return print_lines(args)
    # Textual draws on stderr: with it in a file (`2>err.log`) the dashboard went there and
    # the terminal stayed blank; from the background of the terminal it was stopped at once.
    why = why_no_dashboard(sys.stdin, sys.stdout, sys.stderr, draws_on_stderr=True)
    if why is not None:
        if why:  # a terminal is watching: say once why it gets lines
            print(f"plain status lines, no dashboard: {why}", flush=True)
        return print_lines(args)
    from shallowpi.tui.launch import hold_terminal_logs

    app = build_app(args)
    with hold_terminal_logs():  # a log line written over the dashboard would tear it
        _run_app(app, signals=not getattr(args, "attached", False))
    return 0


def _run_app(app: App, signals: bool) -> None:
    """Run the dashboard `app` to its end on an event loop of its own. With `signals` (on the
    main thread), SIGTERM, SIGHUP and SIGINT end it as its quit key does, then raise
    KeyboardInterrupt (the command's "interrupted", exit 130); a second one raises at once.

    Raised by the handler wherever the loop was, the interrupt could skip Textual's
    shutdown: tasks destroyed pending, tracebacks after "interrupted", and 2 runs in 13 that
    never exited (a reader thread waiting on the stopped loop). A second signal cuts that
    shutdown short, so the terminal's modes are put back here (it was left raw, on the
    dashboard's screen). A shutdown still running `SHUTDOWN_S` after the first signal ends
    the process (`_end_now`): a terminal that closed (SIGHUP) can block Textual's writer
    thread for ever. The recorder's own dashboard (`--attached`) keeps the default: its
    recorder ends it, and restores the terminal itself."""
    from shallowpi.tui.launch import TerminalState
    from shallowpi.tui.status_feed import close_source

    loop = asyncio.new_event_loop()
    received: list[int] = []
    watchdogs: list[threading.Timer] = []
    terminal = TerminalState.save(sys.stdin, sys.__stderr__)  # Textual draws on stderr

    def end(signum: int, frame: Any) -> None:
        if received:  # the app did not end after the first: stop it where it is
            raise KeyboardInterrupt(f"signal {signum}")
        received.append(signum)
        watchdog = threading.Timer(SHUTDOWN_S, _end_now, args=(terminal, signum))
        watchdog.daemon = True
        watchdog.start()
        watchdogs.append(watchdog)
        loop.call_soon_threadsafe(app.exit)  # wakes the loop: the app leaves on its own thread

    main = threading.current_thread() is threading.main_thread()
    replaced = ({sig: signal.signal(sig, end) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
                if signals and main else {})
    try:
        app.run(loop=loop)
    except KeyboardInterrupt:
        terminal.restore()  # the second signal cut Textual's own restore short
        raise
    finally:
        for watchdog in watchdogs:
            watchdog.cancel()
        for sig, handler in replaced.items():
            signal.signal(sig, handler)
        close_source(getattr(app, "source", None))  # the App does as it unmounts, unless cut short
        _close_loop(loop)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


# Seconds the dashboard has to end after a signal before the process ends itself.
SHUTDOWN_S = 5.0


def _end_now(terminal: Any, signum: int) -> None:
    """The dashboard did not end `SHUTDOWN_S` after signal `signum` (its terminal closed
    under it, its writer blocked): put the terminal's modes back where it still exists and
    end the process, as the signal's default would (exit 128 + signum)."""
    terminal.restore()
    os._exit(128 + signum)


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel what is left on `loop` and close it, as asyncio.run does; never raises."""
    try:
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # the app's own error is the one to see
        pass
    finally:
        loop.close()
