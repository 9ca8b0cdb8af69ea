"""Calibrate a robot's arms: zero pose, joint ranges, gripper travel and opening direction.

For each arm (a follower or leader bus), with torque off, you are asked to
  1. put every joint at its zero pose (where the robot config's joint angles are 0) and
     close the gripper, then press Enter;
  2. move every joint through its whole range and open the gripper fully, then press Enter.
A joint that barely moved in step 2 is refused, named, as is one whose servo restarts its
turn count at power-up (an X series in extended or current-based position mode) with its
travel across the end of the turn that count restarts in (ticks 0..4095): after a power
cycle part of it would read a turn off; re-seat the horn and calibrate again (not checked
where the motor says turns_homed_externally: true; a Y series keeps its count). The range each follower joint was
swept through, less 2 % at each end (clear of the hard stops), bounds its goals from then
on (within the config's limits), so sweep as far as the joint may safely go. Which way a
joint turns is the config's `direction:` (each motor's); only a gripper's opening
direction is measured.
The result goes to robots/<robot>/calibration.json; its id is stamped on every episode
recorded afterwards. The id is new when a follower's entries change and kept when only a
leader is recalibrated (episodes and policies stay valid). Arms you do not calibrate keep
their previous entries; the file replaced is kept under robots/<robot>/calibrations/.
Servos still holding torque (a killed recording) are named first: support the arm before
pressing Enter (Ctrl-C there releases it too). Nothing but torque off is written to the
servos before the first zero-pose Enter; then Homing Offset and Drive Mode's reverse bit,
if another tool set them, are cleared (the old values are printed), and each servo's
Operating Mode is set to the config's (torque off, each write acknowledged).

examples:
  platform calibrate --robot arm                    all arms (follower and leader)
  platform calibrate --robot bimanual --arm leader_left
  platform calibrate --robot arm --ports '{"follower": "/dev/ttyUSB0", "leader": "/dev/ttyUSB1"}'   other ports than the config's
"""

from __future__ import annotations

import argparse
import logging

from shallowpi.cli import add_config_flags, overrides_from, ready_output

log = logging.getLogger(__name__)

HELP = "record zero poses, joint ranges and gripper travel of a robot's arms"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --robot, --arm (repeatable) and --ports."""
    add_config_flags(parser, robot=True, data_root=False)
    parser.add_argument("--arm", action="append", metavar="BUS", help="calibrate only this arm (repeatable)")
    parser.add_argument("--ports", help="bus -> port, other than the config's: JSON ({\"follower\": PATH, ...}) or "
                                        "bus=PATH,...")
    parser.add_argument("--adapter-only", action="store_true",
                        help="measure nothing: record the USB adapter each chosen arm is on now (after replacing "
                             "one; the calibration and its id stay)")


def run(args: argparse.Namespace) -> int:
    """Calibrate the chosen arms (default: every arm with motors) and save the result.

    Returns 0. Raises ConfigError for an --arm the robot lacks, PlatformError when stdin is
    closed (the steps wait for Enter) or, before any bus opens, when the calibration's folder
    cannot be written (read-only, full: `ready_output`); the buses' own errors pass through,
    and a save's OSError after the measured calibration is printed (JSON, to recover it).
    Torque is off and every bus closed however it ends.
    """
    from contextlib import ExitStack

    from shallowpi import config
    from shallowpi.hardware.dynamixel.bus import DynamixelBus
    from shallowpi.robots.calibration import (
        UNCALIBRATED,
        archive_path,
        arm_motors,
        calibration_path,
        load_calibration,
        measure_arms,
        update_calibration,
        with_arms,
    )
    from shallowpi.robots.spec import RobotSpec, parse_ports

    spec = RobotSpec.from_config(config.compose(overrides_from(args)).robot)
    if args.ports:
        spec = spec.with_ports(parse_ports(args.ports))
    with_motors = [b for b in spec.buses if arm_motors(spec, b)]  # the arms there are to calibrate
    arms = list(dict.fromkeys(args.arm)) if args.arm else with_motors
    if unknown := [arm for arm in arms if arm not in with_motors]:  # before any bus opens
        from shallowpi.errors import ConfigError

        raise ConfigError(f"robot '{spec.name}' has no arm {', '.join(map(repr, unknown))}; arms: "
                          f"{', '.join(with_motors)}")
    previous = load_calibration(spec.name)  # a file of another robot is refused before any sweep
    # A read-only or full folder was first met at the save, after the operator's sweep of
    # every arm: the work was thrown away. Its probe writes a byte, before any bus opens.
    ready_output(calibration_path(spec.name).parent, "SHALLOWPI_ROBOTS_DIR", folder=True)
    if args.adapter_only:
        if previous.id == UNCALIBRATED:
            from shallowpi.errors import ConfigError

            raise ConfigError(f"robot '{spec.name}' is not calibrated: there is no calibration to record an "
                              f"adapter in; run `platform calibrate --robot {spec.name}`")
        _, result, path = update_calibration(spec, {}, adopt=arms)
        print(f"calibration {result.id}: adapters {', '.join(f'{a} -> {result.adapters[a]}' for a in arms)} "
              f"recorded in {path}")
        return 0
    with ExitStack() as stack:
        buses = {}
        for arm in arms:
            bus_spec = spec.buses[arm]
            bus = DynamixelBus(arm, bus_spec.port, bus_spec.baud, {m.id: m.model for m in arm_motors(spec, arm)})
            bus.connect()
            # Until the questions begin, a failure (the next arm's adapter unplugged) closes
            # the buses as they were: an arm a killed run left holding goes on holding.
            stack.callback(bus.disconnect)
            bus.verify()
            buses[arm] = bus
        shutdown_armed = False

        def arm_shutdown() -> None:
            nonlocal shutdown_armed
            if not shutdown_armed:  # from here on: torque off and close however it ends
                for bus in buses.values():
                    stack.callback(bus.safe_shutdown)
                shutdown_armed = True

        def ask(message: str) -> None:
            try:
                _ask(message)
            except KeyboardInterrupt:  # Ctrl-C at a question releases the arms, as it says
                arm_shutdown()
                raise
            arm_shutdown()  # answered: the operator supports the arms

        try:
            measured = measure_arms(spec, buses, ask, arms)
        except BaseException:
            if not shutdown_armed:  # nobody answered: nothing was written, the arms are as found
                log.warning("calibrate stopped before its first answer: the arms' torque is left as found (an arm "
                            "a killed run left holding still holds: support it before cutting the servo power)")
            raise
    try:
        latest, result, path = update_calibration(spec, measured)
    except OSError:
        # The disk filled (or went read-only) during the sweep: the measurement is not lost
        # with it. The file as it would have been saved, to put at its path by hand.
        print(f"the calibration was measured but could not be saved; to keep it, write this to "
              f"{calibration_path(spec.name)} (or try again once the disk takes it):", flush=True)
        print(with_arms(spec, previous, measured).to_json(), flush=True)
        raise
    if latest != previous:  # another run saved meanwhile: its arms are kept, not overwritten
        kept = sorted(a for a in latest.arms if a not in measured and latest.arms[a] != previous.arms.get(a))
        print(f"the calibration file changed during this run ({previous.id} -> {latest.id}); kept its "
              f"entries for {', '.join(kept) or 'the arms not calibrated here'}")
    print(f"calibration {result.id} saved to {path}")
    if latest.id != UNCALIBRATED and latest != result:
        print(f"the one it replaces ({latest.id}) is kept as {archive_path(latest)}: episodes recorded under it "
              "carry its id; copy it back to use them")
    return 0


def _ask(message: str) -> None:
    from shallowpi.commands.console import discard_typed_ahead
    from shallowpi.errors import PlatformError

    discard_typed_ahead()  # an Enter typed ahead would skip a step (the arm's support among them)
    try:
        input(message + " ")
    except (EOFError, RuntimeError):  # RuntimeError: "lost sys.stdin", started with it closed (<&-)
        print()  # end the prompt's line: the error is a line of its own
        raise PlatformError("calibration asks questions: run it in a terminal (stdin closed)") from None
