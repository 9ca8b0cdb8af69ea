"""Check what this machine can reach: servo buses, cameras, torch, onnxruntime, Jetson.

Scans every serial port it finds (or the ones given; without --port also the robot
config's bus ports, naming any that does not exist) at the usual baud rates, a configured
bus's own rate first, for Dynamixel servos and lists IDs, models,
firmware and hardware-error bits, then compares them with the robot's config (--robot,
default: configs/config.yaml's): which bus they are, the configured IDs that did not
answer, wrong models, unexpected IDs, another baud rate. Says whether the robot's
calibration file covers every motor it drives (leaders too). Lists RealSense cameras with
their serial numbers (robot.cameras.ROLE.serial) and says whether each camera role's mode
(width x height at fps) is one its camera streams, the camera `record` would give it (or
why record would refuse the roles without a serial); names the torch device and
onnxruntime's execution providers; on a Jetson, its model and power mode. Missing things
are reported, not errors: doctor always answers.

examples:
  platform doctor
  platform doctor --robot humanoid
  platform doctor --port /dev/ttyUSB0 --baud 1000000
  platform doctor --port /dev/pts/4 --robot arm      a `platform emulate` pty
"""

from __future__ import annotations

import argparse

HELP = "list servos, cameras, torch device, onnxruntime providers and Jetson power mode found on this machine"

SCAN_BAUDS = (1_000_000, 4_000_000, 57_600, 2_000_000, 3_000_000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --port, --baud (both repeatable) and --robot."""
    parser.add_argument("--port", action="append", metavar="PATH", help="serial port to scan (repeatable)")
    parser.add_argument("--baud", type=int, action="append", help=f"baud rate(s) to try (default: {', '.join(map(str, SCAN_BAUDS))})")
    parser.add_argument("--robot", help="robot config to compare the servos with (configs/robot/), e.g. arm")


def run(args: argparse.Namespace) -> int:
    """Print the servo, calibration, camera, torch, onnxruntime and Jetson reports. Always returns 0.

    A robot config that fails to load is reported; the servos are then listed without the
    comparison.
    """
    from shallowpi import config
    from shallowpi.cli import overrides_from
    from shallowpi.commands import doctor_checks as checks
    from shallowpi.errors import PlatformError
    from shallowpi.robots.spec import RobotSpec

    try:
        spec, problem = RobotSpec.from_config(config.compose(overrides_from(args)).robot), []
    except PlatformError as err:  # doctor always answers: scan without the comparison
        spec, problem = None, [f"error: robot config: {err} (servos not compared with a config)"]
    sections = [
        ("servo buses", problem + checks.servo_report(args.port, tuple(args.baud or SCAN_BAUDS), spec)),
        *([("calibration", checks.calibration_report(spec))] if spec is not None else []),
        ("cameras", checks.camera_report(spec)),
        ("torch", checks.torch_report()),
        ("onnxruntime", checks.onnxruntime_report()),
        ("jetson", checks.jetson_report()),
    ]
    for title, lines in sections:
        print(f"{title}:")
        for line in lines:
            print(f"  {line}")
    return 0
