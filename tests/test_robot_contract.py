"""The `Robot` contract (robots/base.py): hold() and torque_off() on the Dynamixel robot
against emulated servos (registers read back through dynamixel-sdk), on both twins, and
the recorder's fault and e-stop messages that depend on them."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from dxl_fixtures import emulated
from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.bus import wait_until
from shallowpi.record.clock import TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.base import Robot, RobotError, SafeStateError
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.telemetry.status import Command, RecorderState
from shallowpi.teleop.leader import LeaderFollower

UNCALIBRATED = RobotCalibration("uncalibrated", "any")


def registers(robot: DynamixelRobot, field: str) -> dict[str, dict[int, int]]:
    """`field` of every follower servo, read through the robot's own dynamixel-sdk buses."""
    return {name: bus.read([field])[field] for name, bus in robot.buses.items()}


def test_every_robot_implements_the_one_contract():
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.stack import StackSimRobot

    for cls in (DynamixelRobot, DirectSimRobot, StackSimRobot):
        assert issubclass(cls, Robot)
        assert not cls.__abstractmethods__, f"{cls.__name__} leaves {cls.__abstractmethods__} unimplemented"


def test_hold_sets_every_goal_to_the_present_position_mid_motion():
    with emulated("bimanual") as (spec, _), DynamixelRobot(spec, UNCALIBRATED) as robot:
        # Send every servo far away behind the robot's back (its velocity bound would make
        # act() too slow to see motion); they are moving when hold() comes.
        for bus in robot.buses.values():
            present = bus.read(["present_position"])["present_position"]
            bus.write("goal_position", {i: p + 600 for i, p in present.items()})
        time.sleep(0.05)
        before = registers(robot, "present_position")
        held = robot.hold()
        goals = registers(robot, "goal_position")
        for name in robot.buses:
            for servo_id, goal in goals[name].items():
                # the goal is where the servo was while hold() ran, not where it was going
                assert before[name][servo_id] <= goal < before[name][servo_id] + 600
        time.sleep(0.1)
        after = registers(robot, "present_position")
        assert all(abs(after[n][i] - goals[n][i]) <= 1 for n in goals for i in goals[n]), "servos kept moving"
        np.testing.assert_allclose(robot.observe().state, held, atol=0.01)
        # the next act() is velocity-bounded from the held pose
        sent = robot.act(held + 10.0)
        assert np.all(np.abs(sent - held) <= robot.max_step + 1e-6)


def test_hold_of_the_last_command_keeps_it_and_moves_no_further_than_act_would(twin_env):
    """hold(goal) keeps the last command as the servos' goal, where hold() re-aims at the
    measured pose (a gripper on an object would let go): goals stay as sent, the twin is
    not stepped, and a goal beyond one velocity step of the current one is bounded."""
    from shallowpi import config
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.twin import TwinSpec

    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED, clock=None) as robot:
        sent = robot.act(robot.observe().state + 0.05)
        goals = registers(robot, "goal_position")
        np.testing.assert_allclose(robot.hold(sent), sent, atol=1e-6)
        assert registers(robot, "goal_position") == goals
        held = robot.hold(sent + 10.0)
        np.testing.assert_allclose(held - sent, np.minimum(10.0, robot.max_step), atol=1e-4)
        robot.observe()
        assert np.all(np.abs(robot.act(held + 10.0) - held) <= robot.max_step + 1e-6)
        robot.torque_off()
        with pytest.raises(RobotError, match="torque is off"):
            robot.hold(held)  # a stale command never re-arms a stopped robot
        robot.hold()

    twin_spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, 32, 32)
    with DirectSimRobot(twin_spec, cameras=()) as robot:
        start = robot.observe().state
        for _ in range(5):
            sent = robot.act(start + 1.0)  # moving: the goals run ahead of the joints
        twin, now = robot.twin, robot.twin.time
        np.testing.assert_allclose(robot.hold(sent), sent, atol=1e-6)
        np.testing.assert_allclose(twin.joint_goals(), sent, atol=1e-6)
        assert not np.allclose(twin.joint_positions(), sent, atol=1e-3) and twin.time == now
        held = robot.hold(sent + 10.0)
        assert np.all(held - sent <= twin_spec.max_velocity * robot.dt + 1e-6)
        robot.torque_off()
        with pytest.raises(RobotError, match="torque is off"):
            robot.hold(held)


def test_hold_that_a_servo_refuses_is_not_reported_as_confirmed():
    with emulated("arm") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED) as robot:
        servo = chains["follower"].servos[3]
        # Its position limits now exclude where it stands: it refuses (silently, a sync
        # write has no reply) the goal hold() sends, and keeps its old one.
        servo.set("goal_position", 1000)
        servo.set("min_position_limit", 3000)
        with pytest.raises(SafeStateError, match=r"hold not confirmed.*bus 'follower' servo 3 reads 1000, sent 20\d\d"):
            robot.hold()
        chains["follower"].mute(5)
        with pytest.raises(SafeStateError, match=r"could not hold position: .*servo 5 .*did not answer"):
            robot.hold()


def test_torque_off_tries_every_bus_and_names_the_one_that_failed():
    with emulated("bimanual") as (spec, chains), DynamixelRobot(spec, UNCALIBRATED) as robot:
        assert all(v == 1 for regs in registers(robot, "torque_enable").values() for v in regs.values())
        chains["follower_left"].remove(2)  # the FIRST bus fails, on its second servo
        with pytest.raises(SafeStateError) as err:
            robot.torque_off()
        message = str(err.value)
        assert "\n" not in message
        assert "1 of 2 bus(es)" in message and "'follower_left'" in message and "servo 2" in message
        assert "cut the servo power" in message
        chains["follower_left"].servos[2].present = True  # plugged back in, still powered
        torque = registers(robot, "torque_enable")
        assert set(torque["follower_right"].values()) == {0}, "a failing bus stopped the others"
        assert torque["follower_left"] == {1: 0, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0}
        with pytest.raises(RobotError, match="torque is off"):
            robot.act(robot.observe().state)
        robot.torque_off()  # every servo answers now: confirmed
        assert all(v == 0 for regs in registers(robot, "torque_enable").values() for v in regs.values())
        robot.connect()  # re-arms
        assert all(v == 1 for regs in registers(robot, "torque_enable").values() for v in regs.values())
        robot.act(robot.observe().state)


@pytest.fixture(scope="module")
def twin_env():
    os.environ.setdefault("MUJOCO_GL", "egl")
    pytest.importorskip("mujoco")


def test_direct_twin_holds_and_refuses_to_act_after_torque_off(twin_env):
    from shallowpi import config
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.twin import TwinSpec

    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, 32, 32)
    with DirectSimRobot(spec, cameras=()) as robot:
        start = robot.observe().state
        for _ in range(5):
            robot.act(start + 1.0)  # moving: goals run ahead of the joints
        twin = robot.twin
        assert not np.allclose(twin.joint_goals(), twin.joint_positions(), atol=1e-3)
        held = robot.hold()
        np.testing.assert_allclose(twin.joint_goals(), np.clip(twin.joint_positions(), spec.lower, spec.upper))
        np.testing.assert_allclose(held, twin.joint_goals(), atol=1e-6)
        robot.torque_off()
        with pytest.raises(RobotError, match="torque is off"):
            robot.act(held)
        robot.connect()
        robot.act(held)


def test_a_non_finite_goal_is_refused_as_a_vector_or_a_mapping_and_nothing_moves(twin_env):
    """The direct twin and the Dynamixel robot (the stack twin drives the latter) refuse a
    NaN or inf goal in either form `act()` takes, before any actuator sees it."""
    from shallowpi import config
    from shallowpi.errors import PlatformError
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.robots.sim.twin import TwinSpec

    def refused(robot: Robot, goals_now) -> None:
        before = goals_now()
        joint = robot.spec.joint_names[1]
        for bad in (float("nan"), float("inf")):
            vector = robot.observe().state.astype(np.float64)
            vector[1] = bad
            for action in (vector, {joint: bad}):
                with pytest.raises(PlatformError, match=r"NaN or inf|not finite"):
                    robot.act(action)
                assert goals_now() == before, f"{type(robot).__name__} moved on {action!r}"

    spec = TwinSpec.from_config(config.compose(["robot=arm"]).robot, 32, 32)
    with DirectSimRobot(spec, cameras=()) as robot:
        robot.hold()
        refused(robot, lambda: robot.twin.joint_goals().tolist())
    with emulated("arm") as (spec, _), DynamixelRobot(spec, UNCALIBRATED) as robot:
        robot.hold()
        refused(robot, lambda: registers(robot, "goal_position"))


@pytest.mark.slow
def test_stack_twin_holds_and_switches_torque_off_through_the_emulated_buses(twin_env):
    pytest.importorskip("pyrealsense2", exc_type=ImportError)
    from shallowpi import config
    from shallowpi.robots.sim.stack import StackSimRobot
    from shallowpi.robots.sim.twin import TwinSpec
    from shallowpi.robots.spec import RobotSpec

    cfg = config.compose(["robot=arm"]).robot
    with StackSimRobot(RobotSpec.from_config(cfg), TwinSpec.from_config(cfg, 32, 32)) as robot:
        start = robot.observe().state
        for _ in range(3):
            robot.act(start + 1.0)
        held = robot.hold()
        driver = robot.driver
        present = registers(driver, "present_position")
        assert registers(driver, "goal_position") == present
        np.testing.assert_allclose(robot.observe().state, held, atol=0.01)
        robot.torque_off()
        assert set(registers(driver, "torque_enable")["follower"].values()) == {0}
        with pytest.raises(RobotError, match="torque is off"):
            robot.act(held)


# -- the recorder's messages ---------------------------------------------------------------


class _Recording:
    """The arm on emulated chains (no camera), connected; `start()` records in a thread.

    Each test sets its fault up before the loop starts, so the fault under test is the
    first thing the loop meets (on a loaded machine an emulated bus can also time out)."""

    def __init__(self, tmp_path, spec, commands=None):
        self.robot = DynamixelRobot(spec, UNCALIBRATED, fault_check_every=1)
        self.teleop = LeaderFollower(spec, UNCALIBRATED)
        self.store = EpisodeStore.create(tmp_path / "safety.zarr", robot_features(spec.joint_names, {}),
                                         StoreSettings(durable=False))
        self.writer = BackgroundWriter(self.store)
        config = SessionConfig(task="wave", episodes=3, episode_time_s=5.0, reset_time_s=0.0, fps=30,
                               robot=spec.name)
        self.robot.connect()
        self.teleop.connect()
        self.session = RecordingSession(config, self.robot, self.teleop, self.writer, TickClock(30),
                                        list(spec.joint_names), commands=commands)
        self.result = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        self.result = self.session.run()

    def wait(self):
        self._thread.join(60)
        assert not self._thread.is_alive(), "the loop did not stop"
        self.teleop.disconnect()
        self.robot.disconnect()
        self.writer.close()
        return self.result


@pytest.mark.slow
def test_a_fault_says_the_robot_is_safe_only_once_hold_is_confirmed(tmp_path):
    """An overloaded servo switches its own torque off and keeps the goal written to it: a
    hold confirmed by the goal alone said "robot is safe: holding position" with that joint
    limp. The hold reads torque back too, fails, and the robot goes to torque off, said so."""
    with emulated("arm") as (spec, chains):
        rec = _Recording(tmp_path, spec)
        chains["follower"].hardware_error(4, "overload")
        result = rec.start().wait()
        torque = {i: servo.get("torque_enable") for i, servo in chains["follower"].servos.items()}
    assert "servo 4" in result.fault and "holding position" not in result.fault
    assert "robot is safe: torque off on bus 'follower' (could not hold position" in result.fault
    assert "servo 4 has torque off" in result.fault
    assert rec.session.status.state is RecorderState.FAULT
    assert "robot is safe: torque off" in rec.session.status.message
    assert set(torque.values()) == {0}  # every servo, as said


@pytest.mark.slow
def test_a_fault_on_one_arm_leaves_the_other_holding_and_says_which(tmp_path):
    """The bimanual's left gripper overloads: its servo switched its own torque off, so the
    robot's hold cannot be confirmed, and torque went off on every bus, dropping the sound
    right arm (and what it held) while the message said "robot is safe". Bus by bus, the
    left arm goes limp and the right one holds until the run is put away."""
    with emulated("bimanual") as (spec, chains):
        rec = _Recording(tmp_path, spec)
        chains["follower_left"].hardware_error(7, "overload")
        rec.start()
        rec._thread.join(60)
        torque = {bus: {i: servo.get("torque_enable") for i, servo in chains[bus].servos.items()}
                  for bus in ("follower_left", "follower_right")}
        result = rec.wait()
    assert set(torque["follower_right"].values()) == {1}, "the sound arm dropped"
    assert set(torque["follower_left"].values()) == {0}
    assert "robot is safe: bus 'follower_right' holds position; torque off on bus 'follower_left'" in result.fault
    assert "servo 7" in result.fault and rec.session.status.state is RecorderState.FAULT


def test_after_one_bus_is_released_the_others_hold_and_only_their_alarms_are_read():
    """What `platform deploy` waits on after a servo fault the sound arm survives: the
    released arm's latched overload is known and not read again (each read would end the
    wait with everything off), the holding arm's alarms still are, and no command re-arms
    the limp arm."""
    with emulated("bimanual") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            chains["follower_left"].hardware_error(7, "overload")
            state = robot.hold_or_release()
            assert state.holding and state.message.startswith("robot is safe: bus 'follower_right' holds position")
            robot.check_faults()  # the left arm's overload: known, not raised again
            assert {s.get("torque_enable") for s in chains["follower_right"].servos.values()} == {1}
            with pytest.raises(RobotError, match="torque is off"):
                robot.act(np.zeros(len(spec.joints)))
            chains["follower_right"].hardware_error(3, "overheating")
            with pytest.raises(PlatformError, match="overheating"):
                robot.check_faults()
        finally:
            robot.disconnect()


def test_the_bus_a_servo_fault_names_goes_limp_even_where_its_hold_would_be_confirmed():
    """An alarm that leaves the servo's torque on (a low input voltage) let the whole robot's
    hold be confirmed: the wait that followed read the alarm again within a second and
    switched every arm off. The bus the fault names goes limp at once, alone."""
    from shallowpi.hardware.dynamixel.motor_bus import ServoFaultError

    with emulated("bimanual") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            fault = ServoFaultError("bus 'follower_right': servo 3 reports input voltage", bus="follower_right")
            state = robot.hold_or_release(fault)
            torque = {bus: {s.get("torque_enable") for s in chains[bus].servos.values()}
                      for bus in ("follower_left", "follower_right")}
        finally:
            robot.disconnect()
    assert state.holding and torque == {"follower_left": {1}, "follower_right": {0}}
    assert state.message == ("robot is safe: bus 'follower_left' holds position; torque off on bus 'follower_right' "
                             "(a servo on it reports a fault)")


def test_a_connect_that_fails_on_one_bus_leaves_an_arm_found_holding_holding(caplog):
    """A killed run left the left arm holding; the right arm's adapter is unplugged. The
    connect failed and switched torque off on every bus it had opened: the left arm fell.
    Each bus is put back as found: the left one still holds, and the warning says so."""
    import logging

    with emulated("bimanual") as (spec, chains):
        killed = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        killed.connect()
        for bus in killed.buses.values():
            bus.disconnect()  # the process died: ports closed, torque left on
        unplugged = spec.with_ports({"follower_right": "/dev/no-such-adapter"})
        robot = DynamixelRobot(unplugged, RobotCalibration("uncalibrated", spec.name))
        with caplog.at_level(logging.WARNING), pytest.raises(PlatformError, match="no-such-adapter"):
            robot.connect()
        robot.disconnect()  # deploy's and record's clean-up disconnect again: the line below must not change
        left = {servo.get("torque_enable") for servo in chains["follower_left"].servos.values()}
    assert left == {1}, "the arm a killed run left holding was dropped"
    assert "the servos on bus 'follower_left' were holding when this run began and still hold" in caplog.text
    from shallowpi.commands.console import torque_off_line

    assert torque_off_line(robot).startswith("torque off NOT confirmed (bus 'follower_left': left holding")


def _target_found_holding(spec):
    """deploy's robot target, connected to servos a killed run left holding."""
    from shallowpi.commands.deploy_targets import RobotTarget

    killed = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
    killed.connect()
    killed.hold()
    for bus in killed.buses.values():
        bus.disconnect()  # the process died: ports closed, torque left on
    target = RobotTarget(DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name)), None, spec, {},
                         "wave", 1.0, 0.0)
    target.connect()
    return target


def test_a_deploy_that_fails_before_the_first_motion_leaves_an_arm_found_holding_holding():
    """deploy's clean-up when the run failed before the robot first moved (a backend that
    would not warm up): the robot target closes each bus as connect found it."""
    from shallowpi.commands.console import torque_off_line

    with emulated("arm") as (spec, chains):
        target = _target_found_holding(spec)
        target.disconnect(as_found=True)
        follower = {servo.get("torque_enable") for servo in chains["follower"].servos.values()}
    assert follower == {1}
    assert torque_off_line(target.robot).startswith("torque off NOT confirmed (bus 'follower': left holding")


def test_a_servo_fault_before_the_first_motion_releases_its_bus_though_found_holding():
    """A killed run left both arms holding; while the backend warmed up, a servo on the
    right arm raised an alarm that leaves torque on (input voltage). The clean-up closed
    every bus as found: the faulted arm stayed powered with nothing left to watch it. Its
    bus goes limp now, as in a run (hold_or_release); the sound arm still holds, and a bus
    error naming no bus switches off every bus."""
    from shallowpi.hardware.dynamixel.motor_bus import BusError, ServoFaultError

    def torque_after(fault) -> dict[str, set[int]]:
        with emulated("bimanual") as (spec, chains):
            _target_found_holding(spec).disconnect(as_found=True, fault=fault)
            return {bus: {s.get("torque_enable") for s in chains[bus].servos.values()}
                    for bus in ("follower_left", "follower_right")}

    voltage = ServoFaultError("bus 'follower_right': servo 3 reports input voltage", bus="follower_right")
    assert torque_after(voltage) == {"follower_left": {1}, "follower_right": {0}}
    assert torque_after(BusError("a bus failed")) == {"follower_left": {0}, "follower_right": {0}}
    assert torque_after(RuntimeError("the backend would not warm up")) == {"follower_left": {1},
                                                                            "follower_right": {1}}


def test_the_last_line_names_the_buses_a_run_never_reached():
    """An unplugged first adapter stopped the connect before the second bus opened: the
    second arm, left holding by a killed run, was never touched, yet the run ended with
    "torque is off"."""
    from shallowpi.commands.console import torque_off_line

    with emulated("bimanual") as (spec, _):
        robot = DynamixelRobot(spec.with_ports({"follower_left": "/dev/no-such-adapter"}),
                               RobotCalibration("uncalibrated", spec.name))
        assert torque_off_line(robot).startswith("torque off NOT confirmed (not connected: ")  # nothing reached yet
        with pytest.raises(PlatformError, match="no-such-adapter"):
            robot.connect()
        robot.put_back()  # a start's clean-up puts back what the failed connect put back
        robot.disconnect()
    line = torque_off_line(robot)
    assert "bus 'follower_right': not reached, its servos as found" in line and "support the arm" in line
    assert line.count("bus 'follower_right'") == 1, line  # it had been named once for each put-back


def test_a_bus_that_will_not_go_limp_is_named_beside_those_released_and_those_holding():
    """The humanoid: the left arm's adapter gone (no hold, no torque off), the right arm
    overloaded (released), the head holding: the line named the first and the last, not the
    arm that went limp."""
    with emulated("humanoid") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            chains["right_arm"].hardware_error(3, "overload")
            chains["left_arm"].vanish()
            with pytest.raises(SafeStateError) as err:
                robot.hold_or_release()
        finally:
            robot.disconnect()
    message = str(err.value)
    assert err.value.holding and message.startswith("bus 'left_arm' (could not hold position: ")
    assert "torque off on bus 'right_arm' (could not hold position: " in message
    assert message.endswith("bus 'head_lift' holds position")


def test_calibrate_whose_second_arm_will_not_open_leaves_the_first_holding_and_a_typo_opens_nothing(tmp_path):
    """calibrate asks before it lets a holding arm go limp; an unplugged second adapter (or a
    misspelt --arm) ended it before that question, and its clean-up switched the first arm's
    torque off unasked."""
    import subprocess

    from conftest import platform_cmd, subprocess_env

    with emulated("bimanual") as (spec, chains):
        killed = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        killed.connect()
        for bus in killed.buses.values():
            bus.disconnect()  # the process died: ports closed, torque left on

        def calibrate(*arms: str) -> subprocess.CompletedProcess:
            ports = f"follower_left={spec.buses['follower_left'].port},follower_right=/dev/no-such-adapter"
            words = [w for arm in arms for w in ("--arm", arm)]
            return subprocess.run(platform_cmd("calibrate", "--robot", "bimanual", "--ports", ports, *words),
                                  env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path)), stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=120)

        typo = calibrate("follower_left", "follower_rigth")
        unplugged = calibrate("follower_left", "follower_right")
        unanswered = calibrate("follower_left")  # stdin closed: the holding question gets no answer
        left = {servo.get("torque_enable") for servo in chains["follower_left"].servos.values()}
    assert typo.stderr.strip().splitlines()[-1].startswith("error: robot 'bimanual' has no arm 'follower_rigth'")
    assert unplugged.returncode != 0 and "no-such-adapter" in unplugged.stderr
    assert unanswered.returncode != 0 and "holding torque:" in unanswered.stdout
    assert "run it in a terminal (stdin closed)" in unanswered.stderr and "left as found" in unanswered.stderr
    assert left == {1}, "calibrate dropped an arm before asking"


@pytest.mark.parametrize("noticed", [True, False], ids=["port-closed-at-a-read", "unnoticed"])
def test_after_an_adapter_is_unplugged_the_last_line_does_not_say_torque_is_off(noticed):
    """`record` and `deploy` ended with "torque is off" whatever disconnect met: a bus whose
    port had closed under it (a read that failed on the unplugged adapter) was skipped
    without a word, its arm on another power supply still holding."""
    from shallowpi.commands.console import TORQUE_OFF, torque_off_line

    with emulated("arm") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        robot.disconnect()
        assert robot.torque_off_failures == [] and torque_off_line(robot) == TORQUE_OFF
        robot.connect()
        chains["follower"].vanish()
        if noticed:
            with pytest.raises(PlatformError):
                robot.observe()
        robot.disconnect()
    line = torque_off_line(robot)
    assert line.startswith("torque off NOT confirmed (bus 'follower'") and "cut the servo power" in line, line


@pytest.mark.slow
def test_a_fault_that_defeats_hold_and_torque_off_says_so_and_what_to_do(tmp_path):
    with emulated("arm") as (spec, chains):
        rec = _Recording(tmp_path, spec)
        chains["follower"].vanish()  # the adapter is unplugged: nothing can reach the servos
        result = rec.start().wait()
    message = rec.session.status.message
    assert "robot is safe" not in message and "robot is safe" not in result.fault
    assert "NOT confirmed safe" in message and "could not hold position" in message
    assert "torque off" in message and "cut the servo power" in message
    assert "\n" not in result.fault


@pytest.mark.slow
def test_estop_switches_torque_off_on_every_servo_and_says_it_was_confirmed(tmp_path):
    pressed = threading.Event()

    def commands():
        return [Command.ESTOP] if pressed.is_set() else []

    with emulated("arm") as (spec, _):
        rec = _Recording(tmp_path, spec, commands=commands)
        pressed.set()
        rec.start()
        assert wait_until(lambda: rec.result is not None, 30)
        torque = registers(rec.robot, "torque_enable")  # still connected after the e-stop
        result = rec.wait()
    assert set(torque["follower"].values()) == {0}
    assert result.fault == "e-stop pressed; torque off, robot is safe"
    assert rec.session.status.message.startswith("E-STOP: torque off, robot is safe")


class _Jammed:
    """A gripper's jaws closed on an object: the shaft stays where it is, whatever the goal
    (the servo's squeeze is the gap between its goal and that position)."""

    def __init__(self) -> None:
        from shallowpi.hardware.dynamixel.plant import TrackingPlant

        self.plant = TrackingPlant(max_speed=1e-9)  # never gets anywhere

    def set_torque(self, enabled: bool) -> None:
        self.plant.set_torque(enabled)

    def set_goal(self, position: float) -> None:
        self.plant.set_goal(position)

    def read(self, now: float):
        return self.plant.read(now)

    def move_to(self, position: float) -> None:
        self.plant.move_to(position)


def test_after_a_fault_the_arms_that_hold_keep_their_grip():
    """Hold re-aimed every servo at its measured position: a gripper squeezing an object
    (its goal past where the jaws stopped) stopped squeezing and let go of it, on the sound
    arm after the other's overload, and on the whole robot after a fault not its own (a
    camera, the disk). The last goal sent is kept; the faulted arm still goes limp."""
    from dxl_fixtures import robot_spec
    from shallowpi.hardware.dynamixel.control_table import model_by_name
    from shallowpi.hardware.dynamixel.emulator import top_speed_rad_s
    from shallowpi.hardware.dynamixel.motor_bus import ServoFaultError
    from shallowpi.hardware.dynamixel.plant import TrackingPlant

    gripper = next(m for m in robot_spec("bimanual").motors if m.joint.startswith("right") and "gripper" in m.joint)

    def plant(bus, servo_id, model):
        return _Jammed() if (bus, servo_id) == (gripper.bus, gripper.id) else \
            TrackingPlant(max_speed=top_speed_rad_s(model_by_name(model)))

    for fault in ("camera", "overload"):
        with emulated("bimanual", plant) as (spec, chains):
            robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
            robot.connect()
            try:
                g = spec.joint_names.index(gripper.joint)
                start = float(robot.observe().state[g])
                for _ in range(3):  # the goal runs ahead of the jammed jaws (its push: the gap)
                    robot.observe()
                    squeeze = float(robot.act({gripper.joint: start + 0.5})[g])
                assert squeeze > start + 0.05
                if fault == "camera":
                    state = robot.hold_or_release(PlatformError("camera 'wrist' gave no frame"))
                else:
                    chains["follower_left"].hardware_error(7, "overload")
                    with pytest.raises(ServoFaultError) as raised:
                        robot.check_faults()
                    state = robot.hold_or_release(raised.value)
                assert state.holding
                servo = chains[gripper.bus].servos[gripper.id]
                held = robot._convert[gripper.joint].to_joint(servo.get("goal_position"))
                assert held == pytest.approx(squeeze, abs=0.01), f"{fault}: the gripper let go"
            finally:
                robot.disconnect()


def _squeezing(name: str, gripper_joint: str):
    """(plant factory, gripper MotorSpec) for robot `name` whose `gripper_joint` is closed on
    an object (_Jammed), every other servo tracking its goal at its top speed."""
    from dxl_fixtures import robot_spec
    from shallowpi.hardware.dynamixel.control_table import model_by_name
    from shallowpi.hardware.dynamixel.emulator import top_speed_rad_s
    from shallowpi.hardware.dynamixel.plant import TrackingPlant

    gripper = next(m for m in robot_spec(name).motors if m.joint == gripper_joint)

    def plant(bus, servo_id, model):
        return _Jammed() if (bus, servo_id) == (gripper.bus, gripper.id) else \
            TrackingPlant(max_speed=top_speed_rad_s(model_by_name(model)))

    return plant, gripper


def _squeeze(robot: DynamixelRobot, joint: str) -> float:
    """Close `joint` (a jammed gripper) past where its jaws stopped; the goal sent (joint units)."""
    g = robot.spec.joint_names.index(joint)
    start = float(robot.observe().state[g])
    for _ in range(3):  # the goal runs ahead of the jammed jaws (its push: the gap)
        robot.observe()
        squeeze = float(robot.act({joint: start + 0.5})[g])
    assert squeeze > start + 0.05
    return squeeze


def _release_after_overload(robot: DynamixelRobot, chains, bus: str, servo_id: int) -> None:
    """`servo_id` on `bus` overloads; the fault is found and handled (Robot.hold_or_release)."""
    from shallowpi.hardware.dynamixel.motor_bus import ServoFaultError

    chains[bus].hardware_error(servo_id, "overload")
    with pytest.raises(ServoFaultError) as fault:
        robot.check_faults()
    assert robot.hold_or_release(fault.value).holding


@pytest.mark.parametrize("second", ["overheating", "silent"])
def test_a_second_fault_keeps_the_sound_arms_grip_and_never_calls_the_released_arm_holding(second):
    """The humanoid's left gripper overloads (left_arm limp, right_arm holding its squeeze);
    while the robot holds for the operator a head/lift servo overheats, or stops answering.
    That partial release was taken for the operator's torque off: the right gripper was
    re-aimed at where its jaws sat (it let go), the limp left arm was "held" with its
    torque unchecked, and the line said "bus 'left_arm', 'right_arm' hold position"."""
    plant, gripper = _squeezing("humanoid", "right_gripper")
    with emulated("humanoid", plant) as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            squeeze = _squeeze(robot, gripper.joint)
            _release_after_overload(robot, chains, "left_arm", 8)
            if second == "overheating":
                chains["head_lift"].hardware_error(3, "overheating")
            else:
                chains["head_lift"].mute(3)
            with pytest.raises(PlatformError) as then:
                robot.check_faults()
            try:
                state = robot.hold_or_release(then.value)
                message, holding = state.message, state.holding
            except SafeStateError as err:  # the silent servo cannot confirm its torque off
                message, holding = str(err), err.holding
            servo = chains[gripper.bus].servos[gripper.id]
            held = robot._convert[gripper.joint].to_joint(servo.get("goal_position"))
            torque = {bus: {s.get("torque_enable") for s in chains[bus].servos.values()}
                      for bus in ("left_arm", "right_arm")}
        finally:
            robot.disconnect()
    assert held == pytest.approx(squeeze, abs=0.01), "the sound arm's gripper let go"
    assert torque == {"left_arm": {0}, "right_arm": {1}}
    assert holding and "bus 'right_arm' holds position" in message, message
    assert message.count("'left_arm'") == 1 and "bus 'left_arm' (released after an earlier fault)" in message, message
    assert "bus 'head_lift' (" in message, message


def test_a_hold_after_a_release_keeps_the_sound_arms_grip():
    """After one arm's overload, a hold of the last command (deploy's, when the robot is
    sound but the recording fails: Robot.hold(last)) was refused as if the operator had
    switched torque off, and the run's answer to that switched every arm off. The arm that
    holds keeps its squeeze; the released one stays limp."""
    plant, gripper = _squeezing("bimanual", "right_gripper")
    with emulated("bimanual", plant) as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            squeeze = _squeeze(robot, gripper.joint)
            last = robot._goal.copy()
            _release_after_overload(robot, chains, "follower_left", 7)
            sent = robot.hold(last)
            servo = chains[gripper.bus].servos[gripper.id]
            held = robot._convert[gripper.joint].to_joint(servo.get("goal_position"))
            left = {s.get("torque_enable") for s in chains["follower_left"].servos.values()}
        finally:
            robot.disconnect()
    assert held == pytest.approx(squeeze, abs=0.01) and float(sent[spec.joint_names.index(gripper.joint)]) == \
        pytest.approx(squeeze, abs=0.01), "the sound arm's gripper let go"
    assert left == {0}


def test_a_hold_after_a_release_checks_the_torque_of_the_arm_that_holds():
    """After one arm's release, hold() wrote goals to every bus and read none's torque: a
    servo of the sound arm that its own protection switched off was confirmed "holding"."""
    with emulated("bimanual") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            _release_after_overload(robot, chains, "follower_left", 7)
            robot.hold()  # the right arm holds; the left, limp, is neither written nor "confirmed"
            chains["follower_right"].hardware_error(3, "overheating")
            with pytest.raises(SafeStateError, match=r"bus 'follower_right' servo 3 has torque off") as err:
                robot.hold()
        finally:
            robot.disconnect()
    assert "follower_left" not in str(err.value)


def test_a_bus_whose_release_was_not_confirmed_is_tried_again_at_the_next_fault():
    """The left arm's adapter is gone: its torque off was not confirmed at the first fault.
    At the next one (the lift overheats) it is not counted among the buses released before
    (the line would say the robot is safe): it is tried again and named as not switched off."""
    with emulated("humanoid") as (spec, chains):
        robot = DynamixelRobot(spec, RobotCalibration("uncalibrated", spec.name))
        robot.connect()
        try:
            chains["left_arm"].vanish()
            with pytest.raises(SafeStateError):
                robot.hold_or_release()
            chains["head_lift"].hardware_error(3, "overheating")
            with pytest.raises(PlatformError) as then:
                robot.check_faults()
            with pytest.raises(SafeStateError) as err:
                robot.hold_or_release(then.value)
            right = {s.get("torque_enable") for s in chains["right_arm"].servos.values()}
        finally:
            robot.disconnect()
    message = str(err.value)
    assert err.value.holding and right == {1}
    assert message.startswith("bus 'left_arm' (its torque off after an earlier fault was not confirmed) did not "
                              "switch torque off"), message
    assert "released after an earlier fault" not in message and message.endswith("bus 'right_arm' holds position")
