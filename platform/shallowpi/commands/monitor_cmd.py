"""Attach the live dashboard to a running recorder, from another terminal.

The recorder (`platform record`) publishes its status on a local socket
(`telemetry.address` in configs/config.yaml); this command subscribes and shows the same
dashboard the recorder shows. On the robot's computer over SSH:

  platform monitor                                 watch (read-only: keys send nothing)
  platform monitor --control                       also send start/stop, marks, e-stop, quit
  platform monitor --address tcp://127.0.0.1:7421  a recorder publishing on a loopback port

Quitting the monitor never stops the recording; with --control, `q` asks whether to stop
the recorder or only detach. The recorder grants control only when
telemetry.allow_remote_control is true.
"""

from __future__ import annotations

import argparse

from shallowpi.cli import overrides_from

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


def telemetry_address(args: argparse.Namespace) -> str:
    if getattr(args, "address", None):
        return args.address
    from shallowpi import config

    cfg = config.compose(overrides_from(args))
    return str(cfg.telemetry.address)


def build_app(args: argparse.Namespace):  # -> RecorderDashboard (imports kept inside)
    """Connect to the recorder and build the dashboard App (the caller runs it)."""
    from shallowpi.telemetry.transport import TelemetrySubscriber
    from shallowpi.tui.dashboard import RecorderDashboard

    subscriber = TelemetrySubscriber(telemetry_address(args), control=args.control)
    reason = ""
    if args.control and not subscriber.control:
        reason = f"read-only: {subscriber.refusal}"
    return RecorderDashboard(
        subscriber,
        subscriber.send if subscriber.control else None,
        monitor=True,
        read_only_reason=reason,
    )


def run(args: argparse.Namespace) -> int:
    app = build_app(args)
    app.run()
    return 0
