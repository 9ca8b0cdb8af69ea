"""Attach the live dashboard to a running recorder, from another terminal.

The recorder (`platform record`) publishes its status on a local socket
(`telemetry.address` in configs/config.yaml); this command subscribes and shows the same
dashboard the recorder shows. On the robot's computer over SSH:

  platform monitor                                 watch (read-only: keys send nothing)
  platform monitor --control                       also send start/stop, marks, e-stop, quit
  platform monitor --address tcp://127.0.0.1:7421  a recorder publishing on a loopback port
  platform monitor --lines                         plain status lines, one a second (scripts,
                                                   logs; the default when stdout is no terminal)

Quitting the monitor never stops the recording; with --control, `q` asks whether to stop
the recorder or only detach. The recorder grants control only when
telemetry.allow_remote_control is true.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from shallowpi.cli import overrides_from

if TYPE_CHECKING:  # imported inside the functions: `platform --help` stays light
    from shallowpi.telemetry.transport import TelemetrySubscriber
    from shallowpi.tui.dashboard import RecorderDashboard

HELP = "attach the live dashboard to a running recorder (read-only unless --control)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        help="the recorder's telemetry socket path or tcp://127.0.0.1:PORT "
        "(default: telemetry.address in the config)",
    )
    parser.add_argument(
        "--control", action="store_true",
        help="ask for control: keys send commands to the recorder (if it allows remote control)",
    )
    parser.add_argument(
        "--wait-s", type=float, default=0.0, metavar="S",
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
    if getattr(args, "address", None):
        return args.address
    from shallowpi import config

    cfg = config.compose(overrides_from(args))
    return str(cfg.telemetry.address)


def connect(args: argparse.Namespace, control: bool) -> TelemetrySubscriber:
    """Subscribe to the recorder, waiting up to --wait-s for it to start publishing."""
    from shallowpi.telemetry.transport import TelemetryError, TelemetrySubscriber

    address = telemetry_address(args)
    deadline = time.monotonic() + max(getattr(args, "wait_s", 0.0), 0.0)
    while True:
        try:
            return TelemetrySubscriber(address, control=control)
        except TelemetryError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def build_app(args: argparse.Namespace) -> RecorderDashboard:
    """Connect to the recorder and build the dashboard App (the caller runs it)."""
    from shallowpi.tui.dashboard import RecorderDashboard

    subscriber = connect(args, control=args.control)
    attached = getattr(args, "attached", False)
    reason = ""
    if args.control and not subscriber.control:
        reason = f"read-only: {subscriber.refusal}"
    return RecorderDashboard(
        subscriber,
        subscriber.send if subscriber.control else None,
        monitor=not attached,
        exit_when_source_ends=attached,
        read_only_reason=reason,
    )


def print_lines(args: argparse.Namespace, interval_s: float = 1.0) -> int:
    from shallowpi.tui.render import status_line

    with connect(args, control=False) as subscriber:
        printed_at = 0.0
        for status in subscriber:
            if time.monotonic() - printed_at >= interval_s:
                print(f"{time.strftime('%H:%M:%S')} {status_line(status)}", flush=True)
                printed_at = time.monotonic()
    print(f"{time.strftime('%H:%M:%S')} recorder disconnected", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.lines or not sys.stdout.isatty():
        return print_lines(args)
    from shallowpi.tui.launch import hold_terminal_logs

    app = build_app(args)
    with hold_terminal_logs():  # a log line written over the dashboard would tear it
        app.run()
    return 0
