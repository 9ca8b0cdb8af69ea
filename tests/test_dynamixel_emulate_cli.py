"""`platform emulate` in its own process; the driver (this test process) scans and moves
every joint of the humanoid through it; `platform doctor --port` reads it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dxl_fixtures import robot_spec
from shallowpi.hardware.dynamixel.bus import DynamixelBus, wait_until
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot

PLATFORM = Path(__file__).resolve().parents[1] / "platform"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PLATFORM)}


@pytest.fixture
def humanoid_emulator():
    proc = subprocess.Popen(
        [sys.executable, "-m", "shallowpi", "emulate", "--robot", "humanoid", "--fault", "overload:head_lift:2",
         "--fault", "flaky:right_arm:2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )
    try:
        first = proc.stdout.readline()
        yield proc, first
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_emulate_prints_ports_first_then_a_driver_moves_every_joint(humanoid_emulator):
    proc, first = humanoid_emulator
    ports = json.loads(first)  # the FIRST stdout line is the JSON map
    spec = robot_spec("humanoid")
    assert set(ports) == set(spec.buses) and all(p.startswith("/dev/pts/") for p in ports.values())
    # The record line to paste: these ports, and no RealSense (none is emulated).
    advice = proc.stderr.readline().strip()
    assert advice.startswith("record on them: platform record --robot humanoid robot.buses.")
    assert all(f"robot.buses.{bus}.port={path}" in advice for bus, path in ports.items())
    assert advice.endswith("--no-cameras --allow-uncalibrated --dataset NAME --task TEXT"), advice
    spec = spec.with_ports(ports)
    # scan one bus the way an operator would find out what is on it
    baud, motors = spec.bus_motors()["left_arm"]
    with DynamixelBus("left_arm", ports["left_arm"], baud, motors) as bus:
        found = bus.scan()
    assert {i: s.model_name for i, s in found.items()} == {i: m for i, m in motors.items()}

    # head_tilt was started with an overload: clear it the way an operator would
    with DynamixelBus("head_lift", ports["head_lift"], baud, spec.bus_motors()["head_lift"][1]) as bus:
        assert bus.hardware_errors() == {2: ["overload"]}
        bus.reboot(2)

    robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", "humanoid"), clock=None)
    with robot:
        start = robot.observe().state
        target = np.clip(start + 0.2, robot.lower, robot.upper)
        for _ in range(40):  # > 0.2 / max_step ticks, so every joint gets there
            sent = robot.act(target)
        assert np.allclose(sent, target, atol=1e-6)
        reached = wait_until(lambda: np.allclose(robot.observe().state, target, atol=0.01), 5.0)
        state = robot.observe().state
        assert reached, dict(zip(spec.joint_names, state - target))
        # right_arm's servo 2 loses one reply in three: every read got through on a retry,
        # each counted against its joint.
        link = robot.link_counts()
        assert link.failed_tries >= 5 and dict(link.failed_by_joint) == {"right_shoulder_roll": link.failed_tries}
    assert proc.poll() is None  # still serving


def test_doctor_finds_the_emulated_servos(humanoid_emulator):
    _, first = humanoid_emulator
    port = json.loads(first)["head_lift"]
    out = subprocess.run(
        [sys.executable, "-m", "shallowpi", "doctor", "--port", port, "--baud", "4000000"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"ok: {port} at 4000000 baud: 3 servo(s)" in out.stdout
    assert "XM430-W350" in out.stdout and "YM080-230-R099-RH" in out.stdout
    assert "overload" in out.stdout  # the injected fault's error bits
    assert "cameras:" in out.stdout and "torch:" in out.stdout


def test_emulate_rejects_a_bad_fault_in_one_line():
    out = subprocess.run(
        [sys.executable, "-m", "shallowpi", "emulate", "--robot", "arm", "--fault", "melt:follower:1"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )
    assert out.returncode != 0 and out.stdout == ""
    assert out.stderr.startswith("error: bad --fault 'melt:follower:1'") and out.stderr.count("\n") == 1


def _calibrate_without_a_terminal(emulator, arm: str) -> subprocess.CompletedProcess:
    _, first = emulator
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", "calibrate", "--robot", "humanoid", "--ports", first.strip(), "--arm", arm],
        capture_output=True, text=True, env=_env(), timeout=60, stdin=subprocess.DEVNULL,
    )


def test_calibrate_names_an_unknown_arm_in_one_line(humanoid_emulator):
    out = _calibrate_without_a_terminal(humanoid_emulator, "tail")
    assert out.returncode != 0
    assert out.stderr.strip().splitlines()[-1] == (
        "error: robot 'humanoid' has no arm 'tail'; arms: left_arm, right_arm, head_lift, leader_left, leader_right")


def test_calibrate_without_a_terminal_ends_its_prompt_before_the_error(humanoid_emulator):
    out = _calibrate_without_a_terminal(humanoid_emulator, "left_arm")
    assert out.returncode != 0
    assert out.stdout.endswith("\n")  # the prompt waiting for Enter, then its own line's end
    assert out.stderr.strip().splitlines()[-1] == "error: calibration asks questions: run it in a terminal (stdin closed)"
