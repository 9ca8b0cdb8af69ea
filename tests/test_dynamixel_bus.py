"""DynamixelBus on the real dynamixel-sdk against the emulated chain on a pty: reads,
writes, scan, torque, modes, and every injected fault."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from dynamixel_sdk import COMM_SUCCESS, PacketHandler, PortHandler

from dxl_fixtures import assert_losses_on
from shallowpi.hardware.dynamixel.bus import DynamixelBus, wait_until
from shallowpi.hardware.dynamixel.control_table import ERROR_ADVICE, OperatingMode
from shallowpi.hardware.dynamixel.emulator import EmulatedServo, ServoChain
from shallowpi.hardware.dynamixel.motor_bus import BusError, ServoFaultError

MIXED = {1: "XL430-W250", 2: "XM430-W350", 3: "YM080-230-R099-RH"}
FIELDS = ["present_current", "present_velocity", "present_position"]


@pytest.fixture
def chain():
    servos = [EmulatedServo(i, m) for i, m in MIXED.items()]
    for s in servos:
        s.set("return_delay_time", 0)
    with ServoChain("test", servos, baud=1_000_000) as c:
        yield c


def make_bus(chain, motors=None, **kw) -> DynamixelBus:
    # The stock 16 ms USB-latency allowance: a loaded 2-core CI machine can hold the
    # emulator thread off the CPU for several milliseconds.
    return DynamixelBus("test", chain.path, 1_000_000, motors or MIXED, **kw)


def test_scan_lists_ids_models_and_firmware(chain):
    with make_bus(chain) as bus:
        found = bus.scan()
    assert {i: (s.model_name, s.firmware) for i, s in found.items()} == {
        1: ("XL430-W250", 52), 2: ("XM430-W350", 52), 3: ("YM080-230-R099-RH", 40)}


def test_sync_read_and_write_move_same_series_servos(chain):
    with make_bus(chain) as bus:
        bus.set_torque(True, [1, 2])
        bus.write("goal_position", {1: 2548, 2: 1548})  # one SYNC_WRITE: both at 116
        assert wait_until(lambda: bus.read(["present_position"], [1, 2])["present_position"] == {1: 2548, 2: 1548}, 2.0)
        state = bus.read(FIELDS, [1, 2])  # one SYNC_READ
        assert set(state) == set(FIELDS) and set(state["present_position"]) == {1, 2}


def test_bulk_read_and_write_span_x_and_y_series(chain):
    with make_bus(chain) as bus:
        bus.set_torque(True)
        # Y keeps Goal Position at 532, X at 116: the write must be a BULK_WRITE
        bus.write("goal_position", {1: 2148, 3: -5000})
        assert wait_until(lambda: bus.read(["present_position"])["present_position"] == {1: 2148, 2: 2048, 3: -5000}, 2.0)
        assert chain.servos[3].get("goal_position") == -5000  # signed on the Y-series
        state = bus.read(FIELDS)
        assert state["present_position"][3] == -5000


def test_byte_stuffing_survives_the_round_trip(chain):
    value = 0x00FDFFFF  # little-endian FF FF FD 00: a header inside the parameters
    with make_bus(chain) as bus:
        bus.write_one(2, "profile_velocity", value)
        assert bus.read_one(2, "profile_velocity") == value


def test_context_manager_turns_torque_off_even_on_error(chain):
    with pytest.raises(RuntimeError), make_bus(chain) as bus:
        bus.set_torque(True)
        assert all(s.torque for s in chain.servos.values())
        raise RuntimeError("operator code failed")
    assert not any(s.torque for s in chain.servos.values())
    assert not bus.is_connected


def test_operating_mode_is_set_and_unsupported_modes_refused(chain):
    with make_bus(chain) as bus:
        bus.set_operating_mode(OperatingMode.CURRENT_BASED_POSITION, [2])
        assert chain.servos[2].get("operating_mode") == 5
        with pytest.raises(BusError, match=r"servo 1 \(XL430-W250\) has no current_based_position mode"):
            bus.set_operating_mode(OperatingMode.CURRENT_BASED_POSITION, [1])


def test_status_error_byte_is_reported(chain):
    with make_bus(chain) as bus:
        with pytest.raises(BusError, match=r"servo 1 refused the write of model_number"):
            bus.write_one(1, "model_number", 7)
        bus.set_torque(True, [1])
        with pytest.raises(BusError, match=r"servo 1 refused the write of operating_mode"):
            bus.write_one(1, "operating_mode", 1)  # EEPROM with torque on


def test_verify_names_a_missing_servo(chain):
    chain.remove(2)
    with make_bus(chain, retries=2) as bus, pytest.raises(BusError) as err:
        bus.verify()
    message = str(err.value)
    assert "\n" not in message
    assert "bus 'test'" in message and "servo 2 (XM430-W350) did not answer" in message


def test_model_mismatch_against_config_is_one_line(chain):
    with make_bus(chain, {1: "XL430-W250", 2: "XM540-W270", 3: "YM080-230-R099-RH"}) as bus, pytest.raises(BusError) as err:
        bus.verify()
    assert str(err.value) == (
        f"bus 'test' ({chain.path}): servo 2 is a XM430-W350 (model 1020) but the config says "
        "XM540-W270 (1120); fix the robot config or the servo's ID")


def test_servo_vanishing_mid_run_is_named_after_logged_retries(chain, caplog):
    with make_bus(chain, retries=3) as bus:
        bus.read(FIELDS)
        chain.mute(2)
        caplog.set_level(logging.WARNING)
        with pytest.raises(BusError, match=r"servo 2 \(XM430-W350\) did not answer the bulk read of present_current.* after 3 tries"):
            bus.read(FIELDS)
    retries = [r for r in caplog.records if "bulk read" in r.getMessage() and "failed (try" in r.getMessage()]
    assert [r.getMessage().split("(try ")[1][:3] for r in retries] == ["1/3", "2/3", "3/3"]


def test_a_flaky_servo_is_counted_though_every_read_succeeds(chain):
    """One reply in three of servo 2 lost: each read still succeeds on a retry, and the bus's
    tally counts every exchange and names servo 2 for each failed try (the robot's status
    shows it; before, only the log did)."""
    with make_bus(chain, retries=3) as bus:
        bus.read(FIELDS)
        assert bus.tally.failed_tries == 0 and bus.tally.failed_by_id == {}
        exchanges = bus.tally.exchanges
        chain.flaky(2, every=3)
        for _ in range(15):
            assert set(bus.read(FIELDS)["present_position"]) == set(MIXED)
        assert bus.tally.exchanges == exchanges + 15
        assert bus.tally.failed_tries >= 4  # servo 2 answers each try: 15 + retries replies, a third lost
        assert_losses_on(bus.tally.failed_by_id, 2)
        # A sync write asks for no reply: not an exchange (it would dilute the lost replies).
        bus.write("goal_position", {1: 2048})
        assert bus.tally.exchanges == exchanges + 15
        with pytest.raises(ValueError, match="every must be >= 2"):
            chain.flaky(2, every=1)


def test_corrupted_replies_are_named(chain):
    chain.corrupt(1)
    bus = make_bus(chain, {1: "XL430-W250", 2: "XM430-W350"}, retries=2)
    with bus, pytest.raises(BusError, match=r"corrupted replies to the sync read"):
        bus.read(FIELDS)


@pytest.mark.parametrize(("servo_id", "word", "words"), [
    (2, "overload", "overload"), (1, "overheating", "overheating"), (3, "overheating", "motor overheating")])
def test_hardware_error_bits_raise_with_advice(chain, servo_id, word, words):
    with make_bus(chain) as bus:
        bus.set_torque(True)
        chain.hardware_error(servo_id, word)
        assert bus.hardware_errors() == {servo_id: [words]}
        with pytest.raises(ServoFaultError, match=f"servo {servo_id} .* reports {words}; .*then power-cycle the servos$"):
            bus.raise_on_hardware_errors()
        # the status packet's alert bit also surfaces on an acknowledged write
        with pytest.raises(ServoFaultError):
            bus.write_one(servo_id, "led", 1)
        assert not chain.servos[servo_id].torque  # the servo dropped torque itself
        bus.reboot(servo_id)
        assert bus.hardware_errors() == {}


def test_a_y_servos_battery_warning_is_said_once_not_a_fault(chain, caplog):
    """Error code 9 (Y-series e-manual, Error Code(153)): the multi-turn backup battery is
    low; the servo keeps torque and works, and only a new battery clears it. Raised as a
    fault it stopped the humanoid at every connect and every fault check."""
    with make_bus(chain) as bus:
        bus.set_torque(True)
        chain.hardware_error(3, "battery warning")
        assert chain.servos[3].torque  # the servo keeps working
        assert bus.hardware_errors() == {3: ["battery warning"]}  # doctor still lists it
        caplog.set_level("WARNING")
        bus.raise_on_hardware_errors()  # no fault
        bus.write_one(3, "led", 1)  # the alert bit on the reply is no fault either
        bus.raise_on_hardware_errors()
        said = [r.getMessage() for r in caplog.records if "battery" in r.getMessage()]
        assert len(said) == 1 and "servo 3" in said[0] and "replace the servo's multi-turn backup battery" in said[0]
        chain.hardware_error(3, "overload")  # a fault still is one
        with pytest.raises(ServoFaultError, match=r"servo 3 .* reports overload"):
            bus.raise_on_hardware_errors()


def test_a_warned_servos_later_fault_is_seen_in_the_read_it_happens(chain, caplog):
    """A Y servo's battery warning raises the alert bit on every reply, as a fault does. The
    servos that had warned were left out of the alert check for good: an overload after the
    warning waited for the once-a-second poll of the registers (20 ticks at 30 Hz). Its
    register is read at each alert; only the warning words are let pass (logged once)."""
    with make_bus(chain) as bus:
        bus.set_torque(True)
        chain.hardware_error(3, "battery warning")
        caplog.set_level("WARNING")
        for _ in range(3):
            bus.read(["present_position"], check_alert=True)  # a warning: no fault
        assert len([r for r in caplog.records if "battery" in r.getMessage()]) == 1
        chain.hardware_error(3, "overload")
        with pytest.raises(ServoFaultError, match=r"servo 3 \(YM080-230-R099-RH\) reports overload"):
            bus.read(["present_position"], check_alert=True)


def test_a_servo_only_warning_takes_torque_and_one_with_a_fault_does_not(chain):
    """The emulator refused torque-on to a Y servo whose only error was its battery warning,
    which leaves a real one working (it kept a robot from connecting); a latched fault still
    keeps torque off until the servos restart."""
    with make_bus(chain) as bus:
        chain.hardware_error(3, "battery warning")
        bus.set_torque(True, [3])
        assert chain.servos[3].torque
        bus.set_torque(False, [3])
        chain.hardware_error(3, "overload")
        with pytest.raises(ServoFaultError, match=r"servo 3 .* reports overload"):
            bus.set_torque(True, [3])
        assert not chain.servos[3].torque


def test_fault_advice_says_what_the_operator_can_do_never_a_reboot(chain):
    """No command of the platform sends a servo REBOOT: advice to "reboot the servo" named
    nothing a user could do (doctor said "power-cycle it"). A word without advice of its own
    (a Y servo's encoder error) gets the same."""
    assert not [word for word, advice in ERROR_ADVICE.items() if "reboot" in advice]
    chain.hardware_error(3, "encoder error")
    with make_bus(chain) as bus, pytest.raises(
            ServoFaultError, match=r"servo 3 \(YM080-230-R099-RH\) reports encoder error; check the servo, then "
                                   r"power-cycle the servos$"):
        bus.raise_on_hardware_errors()


def test_a_reboot_is_sent_once_and_the_servo_pinged_until_it_answers(chain):
    """REBOOT was retried like a write: a lost reply (the servo already restarting) sent a
    second one into its restart, or ended in a false 'did not answer'. It is sent once; a
    servo that executes it without answering (muted: its reply lost) is then waited for by
    ping, and one that never comes back is named."""
    with make_bus(chain) as bus:
        bus.set_torque(True)
        chain.hardware_error(2, "overload")
        servo = chain.servos[2]
        servo.muted = True  # executes the REBOOT, answers nothing
        restored = threading.Timer(0.3, lambda: setattr(servo, "muted", False))
        restored.start()
        bus.reboot(2)  # waits through the silence for the servo's answer to a ping
        assert bus.hardware_errors() == {}
        chain.mute(2)
        with pytest.raises(BusError, match=r"servo 2 did not answer within 0.5 s of its reboot; check its power"):
            bus.reboot(2, wait_s=0.5)


def test_port_vanishing_mid_run(chain):
    bus = make_bus(chain)
    bus.connect()
    bus.read(["present_position"])
    chain.vanish()
    with pytest.raises(BusError, match=r"the port went away .* check the USB cable"):
        bus.read(["present_position"])
    assert not bus.is_connected
    bus.safe_shutdown()  # nothing left to switch off: must not raise


def test_a_silent_servos_pings_are_retried_logged_and_counted(chain, caplog):
    bus = make_bus(chain)
    with bus, caplog.at_level("WARNING", logger="shallowpi"):
        before = bus.tally.exchanges
        assert bus.ping(9) is None  # no servo 9 on the chain: every try times out
        assert bus.tally.exchanges - before == 1  # one exchange, however many tries
        assert (bus.tally.failed_tries, bus.tally.failed_by_id) == (bus.retries, {9: bus.retries})
    tries = [r.getMessage() for r in caplog.records if "ping of servo 9 failed (try" in r.getMessage()]
    assert len(tries) == bus.retries and tries[0].startswith(f"bus 'test' ({chain.path}): ping of servo 9")


def test_missing_port_busy_port_and_wrong_baud(chain):
    with pytest.raises(BusError, match=r"cannot open the port \(.*No such file or directory.*\); no such device: "
                                       r"check the USB cable and the device path"):
        DynamixelBus("test", "/dev/does-not-exist", 1_000_000, MIXED).connect()
    # Permission denied names the fix (root, as tests run, opens any port: pyserial's error
    # as it raises it for a user outside the dialout group).
    from serial import SerialException

    from shallowpi.hardware.dynamixel.bus import _open_advice

    denied = SerialException(13, "could not open port /dev/ttyUSB0: [Errno 13] Permission denied: '/dev/ttyUSB0'")
    assert _open_advice(denied).startswith("this user may not open it: `sudo usermod -aG dialout $USER`")
    with make_bus(chain), pytest.raises(BusError, match=r"port is busy"):
        make_bus(chain).connect()
    slow = DynamixelBus("test", chain.path, 57_600, {1: "XL430-W250"}, retries=1)
    with slow, pytest.raises(BusError, match=r"did not answer a ping.* at 57600 baud"):
        slow.verify()


def test_a_chain_at_4_5_mbps_is_reached_at_that_rate_only():
    """Dynamixel's fastest rate (Baud Rate code 7) is missing from dynamixel-sdk's list of
    rates: a bus configured for it failed to open, "not supported by the port"."""
    servo = EmulatedServo(1, "XL430-W250", baud=4_500_000)
    with ServoChain("fast", [servo], baud=4_500_000) as fast:
        with DynamixelBus("fast", fast.path, 4_500_000, {1: "XL430-W250"}) as bus:
            assert bus.ping(1) is not None
        with DynamixelBus("fast", fast.path, 1_000_000, {1: "XL430-W250"}, retries=1) as bus:
            assert bus.ping(1) is None


def test_reboot_and_factory_reset_refusal_through_the_raw_sdk(chain):
    port, packets = PortHandler(chain.path), PacketHandler(2.0)
    assert port.openPort() and port.setBaudRate(1_000_000)
    try:
        result, error = packets.factoryReset(port, 1, 0xFF)
        assert result == COMM_SUCCESS and error == 0x01  # refused: result fail
        assert chain.servos[1].get("id") == 1
        model, result, _ = packets.ping(port, 3)
        assert (model, result) == (4150, COMM_SUCCESS)
        result, error = packets.reboot(port, 2)
        assert (result, error) == (COMM_SUCCESS, 0)
    finally:
        port.closePort()


def test_wire_time_follows_the_baud_rate():
    servo = EmulatedServo(1, "XL430-W250", baud=57_600)
    servo.set("return_delay_time", 0)
    with ServoChain("slow", [servo], baud=57_600) as slow:
        bus = DynamixelBus("slow", slow.path, 57_600, {1: "XL430-W250"})
        with bus:
            start = time.perf_counter()
            for _ in range(5):
                bus.read(FIELDS)
            per_read = (time.perf_counter() - start) / 5
    # 14-byte request + 21-byte reply at 10 bits a byte: at least 6 ms on the wire
    assert per_read >= 35 * 10 / 57_600


def test_factory_reply_delays_fit_the_timeout_of_an_adapter_tuned_to_1_ms():
    """Each servo pauses its Return Delay Time (factory: 0.5 ms) before replying. The
    timeout counted only the replies' bytes and the USB latency: with the 1 ms latency timer
    `platform doctor` advises, every sync read of eight factory-set servos (a bimanual or
    humanoid leader before connect sets the delay to 0) timed out and was retried into
    "a reply from ID 8 where ID 1 was asked"."""
    from shallowpi.hardware.dynamixel.port import RETURN_DELAY_MAX_MS

    ids = range(1, 9)
    servos = [EmulatedServo(i, "XL330-M077") for i in ids]  # return_delay_time 250, as shipped
    with ServoChain("leader", servos, baud=1_000_000) as leader:
        bus = DynamixelBus("leader", leader.path, 1_000_000, {i: "XL330-M077" for i in ids}, latency_timer_ms=1.0)
        with bus:
            before = bus.tally.failed_tries
            for _ in range(20):
                bus.read(["present_position"])
            failed = bus.tally.failed_tries - before
            # The deadline the SDK's sync read set: the request's and the replies' wire time,
            # each reply's largest delay, 2 x 1 ms latency and 2 ms.
            wire = bus._port.tx_time_per_byte * (14 + 8 + 15 * 8)
            assert bus._port.packet_timeout == pytest.approx(wire + 8 * RETURN_DELAY_MAX_MS + 4.0) or \
                bus._port.packet_timeout == 0  # the SDK zeroes it once a wait ran out
        # Before, every try of every read timed out (the first read raised). A loaded host may
        # still hold the emulator thread off the CPU past a deadline now and then.
        assert failed <= 10


def test_ctrl_c_during_an_exchange_leaves_the_port_free_for_torque_off(chain):
    """The SDK marks the port in use when a packet goes out and frees it only when the
    exchange ends: a KeyboardInterrupt (Ctrl-C, or SIGTERM as the recorder raises it) while
    waiting for a reply left it marked, every later exchange failed with "Port is in use!",
    and the clean-up's torque-off with it: the arm stayed powered."""
    import os
    import signal

    # Tries enough to outlast a late timer on a loaded host (a read ended by BusError would
    # leave the signal to pytest), with a long wait for each reply and a short drain after
    # it, so the signal lands in a wait. A pytest-xdist worker ignores SIGINT: Ctrl-C's
    # handler is put back for the test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with make_bus(chain, retries=100, latency_timer_ms=100.0) as bus:
            bus.set_torque(True)
            # The first reply never comes: the signal lands in its wait (the end of any one
            # reply's wait frees the port, so a later servo's would not show it).
            chain.mute(1)
            timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            with pytest.raises(KeyboardInterrupt):
                bus.read(FIELDS)
            timer.join()
            chain.mute(1, False)
            bus.set_torque(False)
            assert not any(s.torque for s in chain.servos.values())
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_wall_clock_stepped_back_does_not_stretch_a_reply_wait(monkeypatch):
    """The SDK timed replies on the wall clock: NTP stepping it back (a board without a
    clock battery) made one wait for a silent servo last the whole step."""
    import os
    import tty

    from shallowpi.hardware.dynamixel.port import QuietPortHandler

    main, other = os.openpty()
    tty.setraw(other)
    port = QuietPortHandler(os.ttyname(other), latency_timer_ms=1.0)
    try:
        port.openPort()
        port.setBaudRate(1_000_000)
        port.setPacketTimeout(15)
        wall = time.time
        monkeypatch.setattr(time, "time", lambda: wall() - 3.0)  # the step, just after the request
        started = time.monotonic()
        while not port.readPort(15) and not port.isPacketTimeout():
            pass
        assert time.monotonic() - started < 0.5
    finally:
        port.closePort()
        os.close(main)
        os.close(other)


class Physics:
    """A stand-in for the MuJoCo twin's joint: its position comes from outside."""

    def __init__(self):
        self.goals, self.torque, self.q = [], False, 0.25

    def set_torque(self, enabled):
        self.torque = enabled

    def set_goal(self, position):
        self.goals.append(position)

    def read(self, now):
        from shallowpi.hardware.dynamixel.plant import JointState

        return JointState(self.q, 0.0, 0.0)

    def move_to(self, position):
        self.q = position


def test_plants_are_pluggable_for_the_simulation_twin():
    from shallowpi.hardware.dynamixel.emulator import build_chains
    from shallowpi.hardware.dynamixel.plant import JointPlant

    plants = {}

    def factory(bus, servo_id, model):
        plants[(bus, servo_id, model)] = Physics()
        return plants[(bus, servo_id, model)]

    chains = build_chains({"twin": (1_000_000, {1: "XM430-W350", 2: "YM080-230-R099-RH"})}, factory)
    try:
        assert all(isinstance(p, JointPlant) for p in plants.values())
        x, y = plants[("twin", 1, "XM430-W350")], plants[("twin", 2, "YM080-230-R099-RH")]
        with DynamixelBus("twin", chains["twin"].path, 1_000_000, {1: "XM430-W350", 2: "YM080-230-R099-RH"}) as bus:
            position = bus.read(["present_position"])["present_position"]
            assert position == {1: 2048 + round(0.25 / (2 * 3.141592653589793 / 4096)),
                                2: round(0.25 / (2 * 3.141592653589793 / 524_288))}
            bus.set_torque(True)
            assert x.torque and y.torque
            # Torque on drives to the Goal Position register: at power-on, the present position.
            assert x.goals == [pytest.approx(0.25, abs=1e-3)] and y.goals == [pytest.approx(0.25, abs=1e-4)]
            bus.write("goal_position", {1: 3072, 2: -131_072})  # a quarter turn each way
            assert wait_until(lambda: len(x.goals) > 1 and len(y.goals) > 1, 2.0)  # writes are not acknowledged
            assert x.goals[-1] == pytest.approx(3.141592653589793 / 2)
            assert y.goals[-1] == pytest.approx(-3.141592653589793 / 2)
            # A goal written with torque off is driven to when torque comes on, however far
            # the shaft is (a real servo does: the driver writes the present position first).
            bus.set_torque(False)
            bus.write("goal_position", {1: 1024})
            bus.set_torque(True, [1])
            assert wait_until(lambda: x.goals[-1] == pytest.approx(-3.141592653589793 / 2), 2.0)
    finally:
        chains["twin"].stop()


def test_a_far_position_goal_turns_each_shaft_at_its_models_top_speed(chain):
    """With the factory registers: an X servo's Profile Velocity 0 (no profile) turns it at
    its no-load speed (XL430-W250 57 rev/min = 249 ticks of 0.229, XM430-W350 46 = 201; not
    their Velocity Limit defaults, 265 and 200), a Y servo no faster than its Velocity Limit
    and Profile Velocity (2,020 ticks of 0.01 rev/min each, the rated speed, under its 32.2
    rev/min no-load; test_servo_profile: what connect makes of them). Read over the bus
    mid-move."""
    with make_bus(chain) as bus:
        bus.set_torque(True)
        bus.write("goal_position", {1: 4095, 2: 4095, 3: 250_000})  # >= 0.5 s away at full speed
        time.sleep(0.1)
        speed = bus.read(["present_velocity"])["present_velocity"]
    assert speed == {1: round(57 / 0.229), 2: round(46 / 0.229), 3: 2020}
