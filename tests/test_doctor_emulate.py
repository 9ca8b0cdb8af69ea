"""`platform doctor --port` compares the servos that answer with the robot's config and
names what is missing; `platform emulate` names the override `record` takes for ports."""

from __future__ import annotations

import re
import subprocess

from omegaconf import OmegaConf

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import assert_losses_on, centred, emulated, robot_spec
from shallowpi import config
from shallowpi.commands.doctor_checks import servo_report
from shallowpi.robots.spec import RobotSpec

BAUD = (1_000_000,)


def test_doctor_names_the_configured_ids_that_do_not_answer():
    with emulated("arm") as (spec, chains):
        chains["follower"].remove(3)
        out = subprocess.run(
            platform_cmd("doctor", "--port", spec.buses["follower"].port, "--baud", "1000000", "--robot", "arm"),
            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert ("missing: bus 'follower' of robot 'arm' expects ID 3 (XL330-M288, elbow_flex): no answer; "
            "check power and cable, and the servo's ID and baud rate (1000000)") in out.stdout
    import onnxruntime  # what deploy's robot-side backend runs on, named with its providers

    providers = ", ".join(p.removesuffix("ExecutionProvider") for p in onnxruntime.get_available_providers())
    assert f"onnxruntime:\n  ok: onnxruntime {onnxruntime.__version__}, providers {providers}" in out.stdout


def test_doctor_reports_wrong_models_unexpected_ids_and_another_baud_rate():
    arm = robot_spec("arm")
    with emulated("arm") as (spec, chains):
        port = spec.buses["leader"].port
        assert servo_report([port], BAUD, arm)[-1] == "    ok: bus 'leader' of robot 'arm': all 7 configured servos answer"
        chains["leader"].remove(2)
        chains["leader"].remove(6)
        lines = servo_report([port], BAUD, arm)
        assert ("    missing: bus 'leader' of robot 'arm' expects ID 2 (XL330-M077, shoulder_lift), "
                "ID 6 (XL330-M077, wrist_roll): no answer") in "\n".join(lines)
        # the same servos against a config that calls servo 7 another model, has no servo 5
        # and another baud rate
        other = OmegaConf.to_container(config.compose(["robot=arm", "robot.motors.gripper.model=XM430-W350",
                                                      "robot.buses.follower.baud=57600"]).robot)
        other["joints"] = [j for j in other["joints"] if j["name"] != "wrist_yaw"]
        del other["motors"]["wrist_yaw"], other["leaders"]["leader"]["motors"]["wrist_yaw"]
        follower = servo_report([spec.buses["follower"].port], BAUD, RobotSpec.from_config(other))
    text = "\n".join(follower)
    assert "wrong model: ID 7 is a XL330-M288, configs/robot/arm.yaml says XM430-W350 (gripper)" in text
    assert "unexpected: ID 5 answer(s) but configs/robot/arm.yaml has no such servo on bus 'follower'" in text
    assert "baud: the servos answer at 1000000, configs/robot/arm.yaml says 57600 for bus 'follower'" in text


def test_doctor_reads_positions_as_a_loop_does_and_names_a_servo_that_loses_replies():
    """A servo losing one reply in three answers the scan and every ping on a retry: only
    reading as a control loop does shows it, with the servo's ID. A sound bus says none lost."""
    with emulated("arm") as (spec, chains):
        sound = servo_report([spec.buses["leader"].port], BAUD, robot_spec("arm"))
        chains["follower"].flaky(3, every=3)
        flaky = servo_report([spec.buses["follower"].port], BAUD, robot_spec("arm"))
    assert "    replies: 60 position reads of every servo, none lost" in sound
    warning = next(line for line in flaky if "tries failed over 60 position reads" in line)
    by_id = {int(i): int(n) for i, n in re.findall(r"ID (\d+): (\d+)", warning)}
    assert 15 <= by_id[3] <= 40, warning  # ~1 in 3 of servo 3's tries
    assert_losses_on(by_id, 3)
    assert "ok: bus 'follower' of robot 'arm': all 7 configured servos answer" in "\n".join(flaky)


def test_a_servo_that_misses_the_broadcast_ping_is_pinged_and_its_lost_replies_counted():
    """The scan's one broadcast ping is never retried: a servo losing one reply in three
    that loses that one was "missing" and left out of the reply check, which said none
    were lost. Doctor pings each configured ID the scan missed (retried), lists the servo
    and counts its losses. The emulator loses each third reply of servo 2 (its counter
    starts at the first): two pings first make the broadcast the third."""
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    with emulated("arm") as (spec, chains):
        port = spec.buses["follower"].port
        chains["follower"].flaky(2, every=3)
        with DynamixelBus("prime", port, BAUD[0], {}, retries=1) as bus:
            assert bus.ping(2) is not None and bus.ping(2) is not None  # replies 1 and 2
            assert 2 not in bus.scan()  # reply 3: lost, as doctor's own scan loses it next time round
            assert bus.ping(2) is not None and bus.ping(2) is not None  # replies 4 and 5
        lines = servo_report([port], BAUD, robot_spec("arm"))  # its scan is reply 6: lost
    text = "\n".join(lines)
    assert lines[0] == f"ok: {port} at 1000000 baud: 7 servo(s)", text
    assert any(line.startswith("    ID   2  XL430-W250         firmware ?  ") for line in lines), text
    assert ("    warning: ID 2 missed the scan's broadcast ping, then answered a ping of its own: it loses replies"
            in lines), text
    warning = next(line for line in lines if "tries failed over 60 position reads" in line)
    by_id = {int(i): int(n) for i, n in re.findall(r"ID (\d+): (\d+)", warning)}
    assert 15 <= by_id[2] <= 40, warning
    assert_losses_on(by_id, 2)
    assert lines[-1] == "    ok: bus 'follower' of robot 'arm': all 7 configured servos answer", text


def test_a_bus_whose_only_servo_misses_the_broadcast_ping_is_pinged_at_its_configured_baud():
    """A bus's only servo losing one reply in three, when it loses the scan's: the scan found
    no one, and doctor said no servo answered at any baud, without the pings of its own
    that find it on a bus with others. At the baud the config gives the port, it pings the
    configured IDs anyway (servo 2's replies 1-5 as in the test above, the scan's the 6th)."""
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    with emulated("arm") as (spec, chains):
        port = spec.buses["follower"].port
        for servo_id in list(chains["follower"].servos):
            if servo_id != 2:
                chains["follower"].remove(servo_id)
        chains["follower"].flaky(2, every=3)
        with DynamixelBus("prime", port, BAUD[0], {}, retries=1) as bus:
            assert bus.ping(2) is not None and bus.ping(2) is not None
            assert bus.scan() == {}
            assert bus.ping(2) is not None and bus.ping(2) is not None
        lines = servo_report([port], BAUD, spec)
    text = "\n".join(lines)
    assert spec.buses["follower"].baud == BAUD[0]
    assert lines[0] == f"ok: {port} at 1000000 baud: 1 servo(s)", text
    assert ("    warning: ID 2 missed the scan's broadcast ping, then answered a ping of its own: it loses replies"
            in lines), text
    assert "    missing: bus 'follower' of robot 'arm' expects ID 1 (" in text


def test_doctor_says_when_the_servos_are_not_this_robots():
    with emulated("arm") as (spec, _):
        lines = servo_report([spec.buses["leader"].port], BAUD, robot_spec("bimanual"))
    assert lines[-1].startswith("    not a bus of robot 'bimanual'") and "--robot NAME" in lines[-1]


def test_doctor_says_which_motors_the_calibration_lacks(tmp_path):
    """Connect refuses a calibrated robot whose file lacks a motor it drives; doctor says so
    before anyone tries, naming the arm to calibrate."""
    from shallowpi.commands.doctor_checks import calibration_report
    from shallowpi.robots.calibration import RobotCalibration, save_calibration

    arm = robot_spec("arm")
    assert calibration_report(arm, tmp_path) == [
        f"missing: robot 'arm' has no calibration ({tmp_path}/arm/calibration.json); run "
        "`platform calibrate --robot arm` before recording or deploying on it"]
    save_calibration(RobotCalibration("arm-c1", "arm", {"follower": centred(arm, arm.motors)}), tmp_path)
    assert calibration_report(arm, tmp_path) == [
        "missing: calibration arm-c1 has no entry for shoulder_pan, shoulder_lift, elbow_flex, wrist_flex, wrist_yaw, "
        "wrist_roll, gripper on arm 'leader'; run `platform calibrate --robot arm --arm leader`"]
    both = {"follower": centred(arm, arm.motors), "leader": centred(arm, arm.leaders[0].motors)}
    save_calibration(RobotCalibration("arm-c2", "arm", both), tmp_path)
    assert calibration_report(arm, tmp_path) == ["ok: calibration arm-c2 covers all 14 motors of robot 'arm'"]
    # Entries that exist but that connect refuses: a direction changed in the config since,
    # a joint calibrated on another servo, a follower swept outside its config limits.
    import dataclasses

    follower = dict(both["follower"])
    follower["elbow_flex"] = dataclasses.replace(follower["elbow_flex"], direction=-1)
    follower["wrist_yaw"] = dataclasses.replace(follower["wrist_yaw"], servo_id=9)
    follower["shoulder_lift"] = dataclasses.replace(follower["shoulder_lift"], range_min=4000, range_max=4090)
    save_calibration(RobotCalibration("arm-c3", "arm", {**both, "follower": follower}), tmp_path)
    lines = calibration_report(arm, tmp_path)
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines), lines
    assert "joint 'shoulder_lift' was swept through" in lines[0] and "outside its config limits" in lines[0]
    assert "joint 'elbow_flex' on arm 'follower' of robot 'arm' has direction 1 in its config" in lines[1]
    assert "joint 'wrist_yaw' on arm 'follower' of robot 'arm' was calibrated on servo 9" in lines[2]
    # The gripper (current-based position mode: its count restarts at power-up) closed at tick
    # 3600 and opened 1000 ticks on: its travel crosses the end of the servo's turn, which
    # connect refuses; doctor said "ok".
    follower = dict(both["follower"])
    follower["gripper"] = dataclasses.replace(follower["gripper"], homing_offset=3600, range_min=3600,
                                              range_max=4600, span_ticks=1000)
    save_calibration(RobotCalibration("arm-c4", "arm", {**both, "follower": follower}), tmp_path)
    (line,) = calibration_report(arm, tmp_path)
    assert line.startswith("error: robot 'arm': joint 'gripper' travels through ticks ") and "across the end of the turn" in line, line


def test_doctor_says_a_servo_with_a_latched_hardware_error_refuses_torque():
    """An overloaded servo answers the scan and pings as any other; it refuses torque until
    rebooted. Doctor listed it under "ok" with the word "overload" in its row only."""
    with emulated("arm") as (spec, chains):
        chains["follower"].servos[3].inject_error("overload")
        lines = servo_report([spec.buses["follower"].port], BAUD, robot_spec("arm"))
    assert ("    error: servo 3 reports overload: the joint is blocked or carries too much load; free it, then "
            "power-cycle the servos (a servo that shut down on it refuses torque until the servos are power-cycled)") \
        in lines, "\n".join(lines)
    assert sum(line.lstrip().startswith("error:") for line in lines) == 1


def test_emulate_help_names_the_port_override_that_record_takes():
    out = subprocess.run(platform_cmd("emulate", "--help"), env=subprocess_env(), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    assert "robot.buses.NAME.port=PATH" in out.stdout
    assert "platform record --robot arm robot.buses.follower.port=" in out.stdout
    # and record takes exactly that override
    cfg = config.compose(["robot=arm", "robot.buses.follower.port=/dev/pts/9"])
    assert RobotSpec.from_config(cfg.robot).buses["follower"].port == "/dev/pts/9"


def test_servos_that_answered_the_scan_are_listed_when_their_error_bits_cannot_be_read(monkeypatch):
    """A reply missed after the scan (servo 2 goes silent; on a loaded machine, one late
    reply did it) used to turn the whole port into one "error: servo 1 did not answer"
    line: no servo list, no comparison with the config."""
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    scan = DynamixelBus.scan
    with emulated("arm") as (spec, chains):
        def scan_then_mute(bus):
            found = scan(bus)
            chains["follower"].mute(2)
            return found

        monkeypatch.setattr(DynamixelBus, "scan", scan_then_mute)
        lines = servo_report([spec.buses["follower"].port], BAUD, robot_spec("arm"))
    text = "\n".join(lines)
    assert lines[0] == f"ok: {spec.buses['follower'].port} at 1000000 baud: 7 servo(s)", text
    assert "    ID   1  XL430-W250         firmware 52  errors unread" in lines
    assert any(line.startswith("    warning: hardware error bits unread: ") and "servo 2" in line for line in lines), text
    assert lines[-1] == "    ok: bus 'follower' of robot 'arm': all 7 configured servos answer", text


def test_doctor_names_a_configured_port_that_is_missing_and_tries_the_configured_baud_first():
    """Without --port, doctor scans the config's bus ports: one that does not exist is named
    with its bus and the override; a bus configured at a rate outside the usual scan list
    (115200 here) is found at it, not reported silent."""
    from shallowpi.hardware.dynamixel.emulator import build_chains

    spec = RobotSpec.from_config(config.compose(["robot=arm", "robot.buses.leader.baud=115200"]).robot)
    chains = build_chains({"leader": spec.bus_motors()["leader"]})
    try:
        spec = spec.with_ports({"leader": chains["leader"].path, "follower": "/dev/no-such-u2d2"})
        lines = servo_report(None, BAUD, spec)
    finally:
        for chain in chains.values():
            chain.stop()
    assert lines[0] == ("missing: bus 'follower' port /dev/no-such-u2d2 (robot 'arm') does not exist: plug its "
                        "adapter in, or point the bus at its port: robot.buses.follower.port=PATH")
    assert f"ok: {chains['leader'].path} at 115200 baud: 7 servo(s)" in lines
    assert lines[-1] == "    ok: bus 'leader' of robot 'arm': all 7 configured servos answer"


def test_doctor_scans_an_adapter_once_under_the_configs_link_to_it(tmp_path, monkeypatch):
    """A bus named by its udev link (/dev/ttyDXL_leader -> /dev/ttyUSB0): the adapter was
    scanned twice, once under each name."""
    from shallowpi.commands import doctor_checks
    from shallowpi.hardware.dynamixel.emulator import build_chains

    spec = robot_spec("arm")
    chains = build_chains({"leader": spec.bus_motors()["leader"]})
    try:
        link = tmp_path / "ttyDXL_leader"
        link.symlink_to(chains["leader"].path)
        monkeypatch.setattr(doctor_checks, "serial_ports", lambda: [chains["leader"].path])  # as /dev/ttyUSB0
        lines = servo_report(None, BAUD, spec.with_ports({"leader": str(link), "follower": "/dev/no-such-u2d2"}))
    finally:
        for chain in chains.values():
            chain.stop()
    scanned = [line for line in lines if line.startswith("ok: ") and "servo(s)" in line]
    assert len(scanned) == 1 and scanned[0].startswith(f"ok: {link} at "), lines


def test_doctor_names_each_ports_adapter_by_id_to_pin_it(tmp_path, monkeypatch):
    from shallowpi.hardware.dynamixel import port as port_module
    from shallowpi.hardware.dynamixel.emulator import build_chains

    spec = robot_spec("arm")
    chains = build_chains({"leader": spec.bus_motors()["leader"]})
    try:
        (tmp_path / "usb-FTDI_USB__-__Serial_Converter_FT1AAAA-if00-port0").symlink_to(chains["leader"].path)
        monkeypatch.setattr(port_module, "SERIAL_BY_ID", tmp_path)
        lines = servo_report([chains["leader"].path], BAUD, spec)
    finally:
        for chain in chains.values():
            chain.stop()
    assert any(line.startswith(f"ok: {chains['leader'].path} at ") and line.endswith(
        "(adapter /dev/serial/by-id/usb-FTDI_USB__-__Serial_Converter_FT1AAAA-if00-port0)") for line in lines), lines


def test_doctor_warns_of_a_usb_adapter_latency_timer_above_1_ms(tmp_path):
    """An FTDI adapter (the U2D2) holds each short reply back by its latency timer, 16 ms by
    default: every bus read waits that long, and a robot of three buses misses its 33 ms
    period. The pty has no such timer, so only doctor can say it."""
    from shallowpi.commands.doctor_checks import latency_timer_note

    port = tmp_path / "ttyUSB0"
    port.touch()
    sysfs = tmp_path / "sys"
    (sysfs / "ttyUSB0").mkdir(parents=True)
    (sysfs / "ttyUSB0" / "latency_timer").write_text("16\n")
    note = latency_timer_note(str(port), sysfs)
    assert note == (f"warning: {port}'s USB latency timer is 16 ms: each bus read waits that long; set it to 1 "
                    f"(echo 1 | sudo tee {sysfs}/ttyUSB0/latency_timer, or a udev rule)")
    (sysfs / "ttyUSB0" / "latency_timer").write_text("1\n")
    assert latency_timer_note(str(port), sysfs) is None
    assert latency_timer_note("/dev/pts/4", sysfs) is None  # not a USB adapter


def test_the_bus_times_replies_by_the_adapters_own_latency_timer(tmp_path, monkeypatch):
    """Each try waited the wire time plus two latency timers and 2 ms with the timer taken
    as 16 ms, whatever the adapter was set to: a servo that stopped answering blocked a
    50 Hz loop 106 ms (three tries) even on an adapter set to 1 ms, as doctor advises. The
    bus now reads the adapter's timer where the kernel shows it; 16 ms elsewhere (a pty)."""
    from shallowpi.hardware.dynamixel import port as port_module
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    sysfs = tmp_path / "sys"
    (sysfs / "ttyUSB0").mkdir(parents=True)
    (sysfs / "ttyUSB0" / "latency_timer").write_text("1\n")
    monkeypatch.setattr(port_module, "USB_SERIAL_SYSFS", sysfs)
    assert DynamixelBus("follower", str(tmp_path / "ttyUSB0"), 1_000_000, {1: "XL330-M288"}).latency_timer_ms == 1.0
    assert DynamixelBus("follower", "/dev/pts/4", 1_000_000, {1: "XL330-M288"}).latency_timer_ms == 16.0
    assert DynamixelBus("follower", str(tmp_path / "ttyUSB0"), 1_000_000, {1: "XL330-M288"},
                        latency_timer_ms=4.0).latency_timer_ms == 4.0  # a caller's own value wins


def test_doctor_warns_of_a_servo_another_tools_calibration_shifted():
    with emulated("arm") as (spec, chains):
        chains["leader"].servos[2].set("homing_offset", 512)
        chains["leader"].servos[5].set("drive_mode", 1)
        lines = servo_report([spec.buses["leader"].port], BAUD, robot_spec("arm"))
    text = "\n".join(lines)
    assert "    warning: ID 2 has Homing Offset 512 (another tool's calibration): connect refuses it until " in text
    assert "    warning: ID 5 has Drive Mode reversed" in text
    assert sum("another tool's calibration" in line for line in lines) == 2, text
