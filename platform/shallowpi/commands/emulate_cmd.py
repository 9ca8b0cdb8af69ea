"""Emulate a robot's Dynamixel servo chains on pseudo-terminals, to try the stack without servos.

The first line on stdout is one JSON object, bus name -> pty path, e.g.
  {"follower": "/dev/pts/4", "leader": "/dev/pts/5"}
`platform record` (and every command that reads the robot config) takes the ports as
config overrides robot.buses.NAME.port=PATH, one per bus; stderr prints the line, e.g.
  platform record --robot arm robot.buses.follower.port=/dev/pts/4 robot.buses.leader.port=/dev/pts/5 \\
      --no-cameras --allow-uncalibrated --dataset try --task wave
(--allow-uncalibrated: emulated shafts cannot be posed, so `platform calibrate`, which takes
the JSON line as --ports '{...}', refuses a sweep that did not move.) `platform doctor
--port /dev/pts/4 --robot arm` compares the servos that answer with the robot's config.
Serves until Ctrl-C or SIGTERM.

examples:
  platform emulate --robot humanoid
  platform emulate --robot arm --return-delay 0     servos pre-set as a configured robot
  platform emulate --robot arm --fault overload:follower:3
  platform emulate --robot arm --fault flaky:follower:2   record on it: the dashboard counts the retries
  platform emulate --robot arm > ports.json &       in a script: it serves until killed, so read
  sleep 3; PORTS=$(head -1 ports.json)               its first line from a file, not a pipe
"""

from __future__ import annotations

import argparse

from shallowpi.cli import add_config_flags, overrides_from

HELP = "emulate a robot's servo buses on ptys (prints {bus: pty} as JSON first)"
# missing: not on the bus; mute: never answers; flaky: loses one reply in three (the bus's
# retries recover each: the loop lines count them); corrupt: bad CRC; the malformed kinds
# (valid CRC, wrong shape: short, empty, long, wrong-id, wrong-instruction); a hardware error.
FAULTS = ("missing", "mute", "flaky", "corrupt", "short", "empty", "long", "wrong-id", "wrong-instruction",
          "overload", "overheating")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --robot, --return-delay and --fault (repeatable)."""
    add_config_flags(parser, robot=True, data_root=False)
    parser.add_argument(
        "--return-delay", type=int, default=None, metavar="UNITS",
        help="servos' Return Delay Time, 0..254 (2 us units); default: the factory 250",
    )
    parser.add_argument(
        "--fault", action="append", default=[], metavar="KIND:BUS:ID",
        help=f"inject a fault at start: {', '.join(FAULTS)} (repeatable), e.g. missing:leader:3",
    )


def run(args: argparse.Namespace) -> int:
    """Serve the robot's emulated servo chains on ptys until SIGINT or SIGTERM.

    Prints `{bus: pty}` as JSON on stdout first. Returns 0. Raises PlatformError for a robot
    without buses or a malformed --fault. The chains are stopped on exit.
    """
    import json
    import signal
    import sys
    import threading

    from shallowpi import config
    from shallowpi.errors import PlatformError
    from shallowpi.hardware.dynamixel.emulator import MALFORMED, build_chains
    from shallowpi.robots.spec import RobotSpec

    spec = RobotSpec.from_config(config.compose(overrides_from(args)).robot)
    if not spec.buses:
        raise PlatformError(f"robot '{spec.name}' has no buses: in configs/robot/{spec.name}.yaml")
    if args.return_delay is not None and not 0 <= args.return_delay <= 254:
        raise PlatformError(f"--return-delay {args.return_delay}: a servo's Return Delay Time is 0..254 "
                            "(2 us units, one byte)")
    faults = [_parse_fault(text, spec) for text in args.fault]
    chains = build_chains(spec.bus_motors(), return_delay_time=args.return_delay)
    stop = threading.Event()
    try:
        for kind, bus, servo_id in faults:
            chain = chains[bus]
            if kind in MALFORMED:
                chain.malform(servo_id, kind)
            elif kind == "flaky":
                chain.flaky(servo_id, every=3)
            else:
                {"missing": chain.remove, "mute": chain.mute, "corrupt": chain.corrupt}.get(
                    kind, lambda i, k=kind, c=chain: c.hardware_error(i, k)
                )(servo_id)
        print(json.dumps({name: chain.path for name, chain in chains.items()}), flush=True)
        overrides = " ".join(f"robot.buses.{name}.port={chain.path}" for name, chain in chains.items())
        # No RealSense is attached either: --no-cameras records the joints alone. Emulated
        # shafts cannot be posed for `platform calibrate`'s prompts: --allow-uncalibrated.
        print(f"record on them: platform record --robot {spec.name} {overrides} --no-cameras --allow-uncalibrated "
              "--dataset NAME --task TEXT",
              file=sys.stderr, flush=True)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        print(f"emulating robot '{spec.name}': {sum(len(c.servos) for c in chains.values())} servos "
              f"on {len(chains)} buses; Ctrl-C to stop", file=sys.stderr, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        for chain in chains.values():
            chain.stop()
    return 0


def _parse_fault(text: str, spec) -> tuple[str, str, int]:
    from shallowpi.errors import PlatformError

    kinds = FAULTS
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in kinds or parts[1] not in spec.buses or not parts[2].isdigit():
        raise PlatformError(
            f"bad --fault '{text}'; use KIND:BUS:ID with KIND in {', '.join(kinds)} and BUS in "
            f"{', '.join(spec.buses)}"
        )
    servo_id = int(parts[2])
    if servo_id not in spec.bus_motors()[parts[1]][1]:
        raise PlatformError(f"bad --fault '{text}': no servo {servo_id} on bus '{parts[1]}'")
    return parts[0], parts[1], servo_id
