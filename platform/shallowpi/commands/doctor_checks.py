"""The checks behind `platform doctor`: each returns lines of text, never raises."""

from __future__ import annotations

import glob
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shallowpi.hardware.dynamixel.bus import DynamixelBus
    from shallowpi.hardware.dynamixel.motor_bus import ServoInfo
    from shallowpi.robots.spec import RobotSpec


def serial_ports() -> list[str]:
    """USB serial devices, sorted: /dev/ttyUSB*, /dev/ttyACM*, and pyserial's USB/ACM ports
    if pyserial is installed."""
    found = set(glob.glob("/dev/ttyUSB*")) | set(glob.glob("/dev/ttyACM*"))
    try:
        from serial.tools import list_ports

        found |= {p.device for p in list_ports.comports() if "USB" in p.device or "ACM" in p.device}
    except Exception:
        pass
    return sorted(found)


def servo_report(ports: Sequence[str] | None, bauds: Sequence[int], spec: RobotSpec | None = None) -> list[str]:
    """Servos on each port (ID, model, firmware, errors), compared with `spec`'s buses.

    Without `ports`: the USB serial ports found and the config's bus ports; a configured port
    that does not exist is named with its bus. A port a bus of `spec` names is tried at that
    bus's baud rate first, then at `bauds`."""
    from shallowpi.errors import PlatformError
    from shallowpi.hardware.dynamixel.bus import DynamixelBus
    from shallowpi.hardware.dynamixel.control_table import ERROR_ADVICE, WARNING_ONLY
    from shallowpi.hardware.dynamixel.motor_bus import BaudRateError
    from shallowpi.hardware.dynamixel.port import adapter_id

    lines = []
    if not ports:
        buses = spec.buses.items() if spec else []
        lines = [f"missing: bus '{name}' port {b.port} (robot '{spec.name}') does not exist: plug its adapter in, "
                 f"or point the bus at its port: robot.buses.{name}.port=PATH" for name, b in buses
                 if not os.path.exists(b.port)]
        # By device: a udev link (/dev/ttyDXL_left) and /dev/ttyUSB0 are one adapter, scanned once
        # under the config's name.
        named = {os.path.realpath(b.port): b.port for _, b in buses if os.path.exists(b.port)}
        ports = sorted({named.get(os.path.realpath(p), p) for p in serial_ports()} | set(named.values()))
    ports = list(ports)
    if not ports:
        return [*lines, "missing: no serial ports (/dev/ttyUSB*, /dev/ttyACM*): no U2D2 plugged in? "
                        "(`platform emulate` gives ptys to try with --port)"]
    for port in ports:
        if not os.path.exists(port):
            lines.append(f"missing: {port} does not exist")
            continue
        if (note := latency_timer_note(port)) is not None:
            lines.append(note)
        configured = [b.baud for b in spec.buses.values() if b.port == port] if spec else []
        port_bauds = list(dict.fromkeys([*configured, *bauds]))
        for baud in port_bauds:
            bus = DynamixelBus("doctor", port, baud, {}, retries=1)
            try:
                bus.connect()
                found = bus.scan()
                if not found and baud not in configured:
                    continue
                # The scan tries each baud once to stay quick where nothing answers; servos did
                # answer at this one, or the config says they are at it: a reply missed now (a
                # busy machine, a flaky servo; the one servo of a bus that lost the scan's
                # reply) is retried like any bus read.
                bus.retries = 3
                answered = _ping_missed(bus, found, spec, port)
                found = dict(sorted({**found, **answered}.items()))
                if not found:
                    continue
                bus.motors = {i: s.model for i, s in found.items() if s.model is not None}
                errors, unread = _error_bits(bus)
                # The adapter's own name: a port pinned by it survives USB renumbering.
                adapter = f" (adapter /dev/serial/by-id/{name})" if (name := adapter_id(port)) else ""
                lines.append(f"ok: {port} at {baud} baud: {len(found)} servo(s){adapter}")
                for servo_id, info in found.items():
                    state = ", ".join(errors.get(servo_id, [])) or ("errors unread" if unread else "no errors")
                    firmware = "?" if info.firmware is None else info.firmware  # a ping of its own does not say
                    lines.append(f"    ID {servo_id:3d}  {info.model_name:<18} firmware {firmware}  {state}")
                lines += [f"    warning: ID {i} missed the scan's broadcast ping, then answered a ping of its own: "
                          "it loses replies" for i in answered]
                for servo_id, words in errors.items():
                    for word in words:  # a fault latches: the servo refuses torque until power-cycled
                        kind = "warning" if word in WARNING_ONLY else "error"
                        lines.append(f"    {kind}: servo {servo_id} reports {word}: "
                                     f"{ERROR_ADVICE.get(word, 'check the servo, then power-cycle the servos')}"
                                     + ("" if kind == "warning" else " (a servo that shut down on it refuses "
                                        "torque until the servos are power-cycled)"))
                if unread:
                    lines.append(f"    warning: hardware error bits unread: {unread}")
                else:
                    lines += _reply_check(bus)
                lines += _frame_notes(bus, spec, port)
                if spec is not None:
                    lines += compare_with_config(port, baud, found, spec)
                break
            except BaudRateError as err:  # this rate only: the next may open
                lines.append(f"error: {port} at {baud} baud: {err}")
            except PlatformError as err:  # the port itself (busy, gone, permissions): every rate alike
                lines.append(f"error: {port} at {baud} baud: {err}")
                break
            finally:
                bus.disconnect()
        else:
            lines.append(f"missing: {port}: no servo answered at {', '.join(map(str, port_bauds))} baud "
                         "(check servo power and the baud rate)")
            if spec is not None and (bus := _bus_at(port, spec)) is not None:
                lines += compare_with_config(port, None, {}, spec, bus)
    return lines


def latency_timer_note(port: str, sysfs: Path | None = None) -> str | None:
    """A warning when `port` is a USB serial adapter (an FTDI U2D2) whose latency timer holds
    each short reply back more than 1 ms (the driver default is 16): every bus read then
    waits that long, ~16 ms a bus a tick, and a robot of several buses misses its control
    period. None for other ports, or a timer already at 1."""
    from shallowpi.hardware.dynamixel.port import latency_timer_path, usb_latency_timer_ms

    ms = usb_latency_timer_ms(port, sysfs)
    if ms is None or ms <= 1:
        return None
    return (f"warning: {port}'s USB latency timer is {ms} ms: each bus read waits that long; set it to 1 "
            f"(echo 1 | sudo tee {latency_timer_path(port, sysfs)}, or a udev rule)")


def _error_bits(bus: DynamixelBus) -> tuple[dict[int, list[str]], str]:
    """The hardware error bits of the servos found (`bus.motors`), or ({}, why) when they
    could not be read: the servos answered, so what they are is still reported."""
    from shallowpi.errors import PlatformError

    if not bus.motors:
        return {}, ""
    try:
        return bus.hardware_errors(), ""
    except PlatformError as err:
        return {}, str(err)


def _ping_missed(bus: DynamixelBus, found: dict[int, ServoInfo], spec: RobotSpec | None,
                 port: str) -> dict[int, ServoInfo]:
    """The configured servos of this port's bus (the one `compare_with_config` compares
    with) that the scan missed but that answer a ping of their own, retried: the scan's one
    broadcast ping is never retried, so a servo losing one reply in three read as missing
    there and was left out of the reply check, which then said none were lost."""
    if spec is None:
        return {}
    name = _bus_at(port, spec) or next(iter(_best_buses(found, spec)), None)
    missed = [i for i in _expected(spec, name) if i not in found] if name is not None else []
    # A servo that is not there fails every try: doctor's missing line says so once, not
    # the bus's warning three times a servo.
    quiet = logging.getLogger("shallowpi.hardware.dynamixel.bus")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return {i: info for i in missed if (info := bus.ping(i)) is not None}
    finally:
        quiet.setLevel(level)


REPLY_CHECK_READS = 60  # 2 s of a 30 Hz loop's position reads; ~0.1 s on a sound bus


def _reply_check(bus: DynamixelBus, reads: int = REPLY_CHECK_READS) -> list[str]:
    """Read every servo's position `reads` times, as a control loop does, and count the
    tries that got no valid reply (`DynamixelBus.tally`): a servo that loses one reply in
    three answers every ping on a retry (the scan's broadcast it may miss: `_ping_missed`
    asks it again), and its losses show only here. Every servo of `bus.motors`, those the
    scan found and those a ping of their own did. One line: the count, or a warning naming
    the servos that lost replies."""
    from shallowpi.errors import PlatformError

    if not bus.motors:  # only models this driver lacks answered: nothing it can read
        return []
    before, by_id = bus.tally.failed_tries, dict(bus.tally.failed_by_id)
    try:
        for _ in range(reads):
            bus.read(["present_position"])
    except PlatformError as err:
        return [f"    error: reading positions failed: {err}"]
    failed = bus.tally.failed_tries - before
    if not failed:
        return [f"    replies: {reads} position reads of every servo, none lost"]
    lost = {i: n - by_id.get(i, 0) for i, n in bus.tally.failed_by_id.items() if n > by_id.get(i, 0)}
    named = ", ".join(f"ID {i}: {n}" for i, n in sorted(lost.items())) or "no servo named"
    return [f"    warning: {failed} tries failed over {reads} position reads of every servo ({named}): a loose "
            "cable or connector, or a failing servo; each retry costs the control loop a reply timeout"]


def _frame_notes(bus: DynamixelBus, spec: RobotSpec | None, port: str) -> list[str]:
    """A warning for each servo whose Homing Offset or Drive Mode reverse bit another tool
    set: connect refuses it (robots/calibration.check_servo_frame) until calibrate clears it."""
    from shallowpi.errors import PlatformError
    from shallowpi.robots.calibration import servo_frame_shift

    arm = _bus_at(port, spec) if spec is not None else None
    fix = f"platform calibrate --robot {spec.name} --arm {arm}" if spec is not None and arm else "platform calibrate"
    lines = []
    for servo_id in bus.motors:
        try:
            what = servo_frame_shift(bus, servo_id)
        except PlatformError:
            continue  # said by the error bits' line
        if what is not None:
            lines.append(f"    warning: ID {servo_id} has {what} (another tool's calibration): connect refuses it "
                         f"until `{fix}` clears it")
    return lines


def compare_with_config(port: str, baud: int | None, found: dict[int, ServoInfo], spec: RobotSpec,
                        bus: str | None = None) -> list[str]:
    """What answers on `port` against the robot's config: the bus it is (the one configured
    at this port, else the one whose IDs and models match best), then its configured IDs
    that did not answer, wrong models, unexpected IDs and a baud rate other than configured."""
    lines = []
    if bus is None and (bus := _bus_at(port, spec)) is None:
        alike = _best_buses(found, spec)
        if not alike:
            return [f"    not a bus of robot '{spec.name}' ({', '.join(spec.buses)}): no configured ID and "
                    "model answers here; pass --robot NAME to compare with another robot"]
        bus = alike[0]
        if len(alike) > 1:
            lines.append(f"    buses {', '.join(alike)} of robot '{spec.name}' are configured alike; "
                         f"compared with '{bus}'")
    where = f"configs/robot/{spec.name}.yaml"
    expected = _expected(spec, bus)
    missing = [i for i in expected if i not in found]
    wrong = [i for i in expected if i in found and found[i].model_name != expected[i][0]]
    extra = [i for i in found if i not in expected]
    configured_baud = spec.buses[bus].baud
    if missing:
        ids = ", ".join(f"ID {i} ({expected[i][0]}, {expected[i][1]})" for i in missing)
        lines.append(f"    missing: bus '{bus}' of robot '{spec.name}' expects {ids}: no answer; check "
                     f"power and cable, and the servo's ID and baud rate ({baud or configured_baud})")
    for i in wrong:
        lines.append(f"    wrong model: ID {i} is a {found[i].model_name}, {where} says {expected[i][0]} "
                     f"({expected[i][1]}); fix the config or the servo's ID")
    if extra:
        lines.append(f"    unexpected: ID {', '.join(map(str, extra))} answer(s) but {where} has no such "
                     f"servo on bus '{bus}'")
    if baud is not None and baud != configured_baud:
        lines.append(f"    baud: the servos answer at {baud}, {where} says {configured_baud} for bus '{bus}'; "
                     "fix one of them")
    if not (missing or wrong or extra) and baud in (None, configured_baud):
        lines.append(f"    ok: bus '{bus}' of robot '{spec.name}': all {len(expected)} configured servos answer")
    return lines


def _expected(spec: RobotSpec, bus: str) -> dict[int, tuple[str, str]]:
    """{servo id: (model name, joint)} configured on `bus`, followers and leaders."""
    motors = spec.all_motors()
    return {m.id: (m.model.name, m.joint) for m in sorted(motors, key=lambda m: m.id) if m.bus == bus}


def _bus_at(port: str, spec: RobotSpec) -> str | None:
    real = os.path.realpath(port)
    return next((name for name, b in spec.buses.items() if os.path.realpath(b.port) == real), None)


def _best_buses(found: dict[int, ServoInfo], spec: RobotSpec) -> list[str]:
    """The buses with the most configured (ID, model) pairs among those found; [] if none."""
    scores = {name: sum(1 for i, (model, _) in _expected(spec, name).items()
                        if i in found and found[i].model_name == model) for name in spec.buses}
    best = max(scores.values(), default=0)
    return [name for name, score in scores.items() if score == best] if best > 0 else []


def calibration_report(spec: RobotSpec, root: Path | None = None) -> list[str]:
    """Whether the robot's calibration file covers every motor it drives, followers and
    leaders, and whether connect would take each entry: `RobotCalibration.converter` refuses
    a calibrated robot's missing motor, a direction changed in the config since, an entry
    read from another servo ID or model; `swept_limits` a follower's sweep outside its
    config limits; `check_turn_travel` a multi-turn joint's travel across the end of the
    turn its servo counts in after power-up; `check_adapters` a bus on another USB adapter
    than it was calibrated through. `root` is the robots folder (default `robots_dir()`)."""
    from shallowpi.errors import PlatformError
    from shallowpi.robots.calibration import (
        UNCALIBRATED,
        CalibrationError,
        calibration_path,
        check_turn_travel,
        leader_limits,
        load_calibration,
        swept_limits,
    )

    try:
        calibration = load_calibration(spec.name, root)
    except CalibrationError as err:
        return [f"error: {err}"]
    if calibration.id == UNCALIBRATED:
        return [f"missing: robot '{spec.name}' has no calibration ({calibration_path(spec.name, root)}); "
                f"run `platform calibrate --robot {spec.name}` before recording or deploying on it"]
    motors = [*spec.motors, *(m for leader in spec.leaders for m in leader.motors)]
    lacking = [m for m in motors if m.joint not in calibration.arms.get(m.bus, {})]
    by_arm: dict[str, list[str]] = {}
    for m in lacking:
        by_arm.setdefault(m.bus, []).append(m.joint)
    lines = [f"missing: calibration {calibration.id} has no entry for {', '.join(joints)} on arm '{arm}'; run "
             f"`platform calibrate --robot {spec.name} --arm {arm}`" for arm, joints in by_arm.items()]
    joints, followers = {j.name: j for j in spec.joints}, spec.follower_buses()
    for m in motors:
        if m not in lacking:
            joint = joints[m.joint]
            try:
                convert = calibration.converter(m, joint.kind)
                limits = (swept_limits(calibration, joint, m, convert) if m.bus in followers
                          else leader_limits(joint, convert))
                check_turn_travel(spec.name, m, convert, *limits)
            except PlatformError as err:
                lines.append(f"error: {err}")
    for bus in spec.buses:  # two arms' adapters swapped since calibration (USB renumbered them)
        try:
            calibration.check_adapters(spec, [bus], warn=False)
        except PlatformError as err:
            lines.append(f"error: {err}")
    if unrecorded := calibration.unrecorded_adapters(spec, spec.buses):
        lines.append(f"warning: {calibration.unrecorded_adapters_line(unrecorded)}")
    return lines or [f"ok: calibration {calibration.id} covers all {len(motors)} motors of robot '{spec.name}'"]


def camera_report(spec: RobotSpec | None = None, devices: Callable[[], Sequence[Any]] | None = None) -> list[str]:
    """One line per connected RealSense (name, serial, firmware), or why none is listed;
    with a robot `spec`, whether each camera role's mode (width x height at fps, RGB8) is
    one offered by the camera `platform record` gives that role, and a note for a role
    slower than the control loop. `devices` lists the rs.devices (USB by default; tests
    pass software devices)."""
    from shallowpi.hardware.camera import CameraError
    from shallowpi.hardware.realsense import connected_devices, import_rs

    notes = _camera_rate_notes(spec) if spec is not None else []
    try:
        rs = import_rs()
        found = list((devices or connected_devices)())
    except CameraError as err:
        return [f"missing: {err}", *notes]
    except Exception as exc:  # the USB query itself (permissions, a wedged device)
        return [f"error: RealSense query failed: {exc}", *notes]
    if not found:
        return ["missing: no RealSense camera connected", *notes]
    lines = []
    for dev in found:
        info = {k: dev.get_info(getattr(rs.camera_info, k)) for k in ("name", "serial_number", "firmware_version")
                if dev.supports(getattr(rs.camera_info, k))}
        lines.append(f"ok: {info.get('name', '?')} serial {info.get('serial_number', '?')} "
                     f"firmware {info.get('firmware_version', '?')}")
    lines.append("a camera role records this camera with 'robot.cameras.ROLE.serial=\"SERIAL\"'")
    return lines + (_camera_mode_checks(spec, found) if spec is not None else []) + notes


def _camera_rate_notes(spec: RobotSpec) -> list[str]:
    """A note for each camera role slower than the robot's control loop: its rows repeat pictures."""
    return [f"note: camera '{c.role}' streams {c.fps} fps, slower than robot '{spec.name}''s {spec.fps} Hz loop: "
            f"about {1 - c.fps / spec.fps:.0%} of the recorded rows repeat the picture before them"
            for c in spec.cameras if c.fps < spec.fps]


def _camera_mode_checks(spec: RobotSpec, found: Sequence[Any]) -> list[str]:
    """Whether each role's camera offers the role's mode; an offered rate to set when it
    does not. Each role is given its camera as `platform record` gives it (`assign_serials`:
    its pinned serial, else the one connected camera no other role names), and a setup
    record refuses is its error line: `platform record` would otherwise find out at start."""
    from shallowpi.hardware.camera import CameraError
    from shallowpi.hardware.realsense import assign_serials, color_modes, device_serial

    by_serial = {device_serial(d): d for d in found}
    lines = []
    try:
        serials, notes = assign_serials({c.role: c.serial for c in spec.cameras}, list(by_serial))
        lines += [f"note: {note}" for note in notes]
    except CameraError as err:  # the roles it names get no camera; the pinned ones are still checked
        serials = {c.role: str(c.serial) for c in spec.cameras if c.serial}
        lines.append(f"error: {err}")
    for cam in spec.cameras:
        if cam.role not in serials:
            continue
        serial, mode = serials[cam.role], f"{cam.width}x{cam.height} at {cam.fps} fps"
        if serial not in by_serial:
            lines.append(f"missing: camera '{cam.role}' names RealSense {serial}, which is not connected")
            continue
        modes = color_modes(by_serial[serial])
        if (cam.width, cam.height, cam.fps) in modes:
            lines.append(f"ok: camera '{cam.role}' {mode} is offered by RealSense {serial}")
            continue
        rates = sorted(f for w, h, f in modes if (w, h) == (cam.width, cam.height))
        if not rates:
            sizes = sorted({f"{w}x{h}" for w, h, _ in modes}, key=lambda t: [int(v) for v in t.split("x")])
            lines.append(f"error: camera '{cam.role}' asks {cam.width}x{cam.height}, which RealSense {serial} "
                         f"does not stream in RGB8 (it offers {', '.join(sizes) or 'no RGB8 colour'}); set "
                         f"robot.cameras.{cam.role}.width= and .height=")
            continue
        # The slowest rate that keeps up with the loop, else the fastest there is.
        suggest = next((f for f in rates if f >= spec.fps), rates[-1])
        lines.append(f"error: camera '{cam.role}' asks {mode}; RealSense {serial} streams {cam.width}x{cam.height} "
                     f"at {'/'.join(map(str, rates))} fps: set robot.cameras.{cam.role}.fps={suggest}")
    return lines


def torch_report() -> list[str]:
    """The torch version and its device (CUDA, Apple MPS or CPU), or that torch is missing."""
    try:
        import torch
    except ImportError:
        return ["missing: torch is not installed (needed to train, and by deploy's torch and tensorrt backends; "
                "the robot's onnxruntime backend runs without it)"]
    if torch.cuda.is_available():
        return [f"ok: torch {torch.__version__}, CUDA device {torch.cuda.get_device_name(0)}"]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return [f"ok: torch {torch.__version__}, Apple MPS"]
    return [f"ok: torch {torch.__version__} on CPU only (no CUDA device)"]


GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def onnxruntime_report() -> list[str]:
    """onnxruntime's version and execution providers, what deploy's onnxruntime backend (the
    Jetson profiles' own) can run a bundle on, or that it is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return ["missing: onnxruntime is not installed (deploy's onnxruntime backend, the Jetson profiles' own: "
                "`pip install onnxruntime`, on a Jetson NVIDIA's onnxruntime-gpu wheel)"]
    providers = ort.get_available_providers()
    names = ", ".join(p.removesuffix("ExecutionProvider") for p in providers)
    if any(p in providers for p in GPU_PROVIDERS):
        return [f"ok: onnxruntime {ort.__version__}, providers {names}"]
    return [f"ok: onnxruntime {ort.__version__}, providers {names}: no TensorRT or CUDA provider, so it runs on "
            "the CPU (on a Jetson, install NVIDIA's onnxruntime-gpu wheel instead)"]


def jetson_report(root: Path | None = None) -> list[str]:
    """What deploy/jetson.py reads (L4T, module, power mode, GPU clock), and what to change
    for full speed: one detection for `doctor` and `deploy`."""
    from shallowpi.deploy.jetson import JetsonProfile, detect, full_speed_advice, software_advice

    machine = detect(root or Path("/"))
    if not machine.is_jetson:
        return ["not a Jetson (no /etc/nv_tegra_release)"]
    lines = [f"ok: {machine.describe()}", f"power mode: {machine.power_mode or 'unknown (nvpmodel not found)'}"]
    if machine.module:
        profile = JetsonProfile.load(machine.module)
        lines.append(full_speed_advice(machine, profile))
        if advice := software_advice(machine, profile, sys.version_info[:2]):
            lines.append(f"warning: {advice}")
    return lines
