"""Emulated Dynamixel chains that answer Protocol 2.0 on a pseudo-terminal.

The real driver (dynamixel-sdk through `DynamixelBus`) opens the pty's slave path as it
would a U2D2; a thread on the master side parses instruction packets, runs them against
per-servo control tables (control_table.MODELS) and writes status packets back.

Timing follows the wire: a request "arrives" n bytes x 10 bits / baud after the host
wrote it, each servo answers after its Return Delay Time (2 us a unit) and its reply
takes its own wire time. Sync and bulk reads are answered in order, each servo after
the previous one, as on a real bus. A host at another baud rate than the chain's gets
no answer (the emulator compares the pty's termios speed), like a real servo.

Faults, for tests and demos (`ServoChain` methods):
    remove(id)                the servo is not on the bus: no answer to anything
    mute(id)                  present but silent: the host times out
    corrupt(id)               its replies carry a wrong CRC
    malform(id, kind)         its replies have a valid CRC but the wrong shape (MALFORMED):
                              "short" one byte missing, "empty" the error byte alone,
                              "long" one byte extra, "wrong-id" the next ID's,
                              "wrong-instruction" not a status packet
    hardware_error(id, word)  "overload", "overheating", ...: alert bit, torque off where
                              the error shuts the servo down (X: Shutdown(63); Y: its code)
    vanish()                  the port disappears mid-run (USB unplugged)

Motion comes from a `JointPlant` per servo (plant.py): a bounded-speed tracker by
default, at the speed the servo's registers allow (`top_speed_rad_s`: Profile Velocity,
and Velocity Limit on the Y series, from the e-manual's factory values), or whatever
`plant_factory(bus, id, model_name)` returns, e.g. a MuJoCo twin's joint. The servo
converts between ticks and shaft radians; the plant never sees a control table.
"""

from __future__ import annotations

import contextlib
import logging
import os
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterable, Mapping

from shallowpi.hardware.dynamixel import protocol as p
from shallowpi.hardware.dynamixel.control_table import (
    ALERT_BIT,
    PROFILE_TIME_BASED,
    ModelSpec,
    OperatingMode,
    baud_code,
    model_by_name,
)
from shallowpi.hardware.dynamixel.plant import JointPlant, PlantFactory, TrackingPlant

log = logging.getLogger(__name__)

_MAX_EARLY_S = 0.0005
MALFORMED = ("short", "empty", "long", "wrong-id", "wrong-instruction")
_PRESENT_FIELDS = ("present_position", "present_velocity", "present_current", "realtime_tick")
GOALS = frozenset({"goal_pwm", "goal_current", "goal_velocity", "goal_position"})
_BOTHER = 0o10000  # Linux's c_cflag speed for a custom rate (asm-generic/termbits.h); Python lacks it
# A Y servo refuses a profile setting above its limit register with a Data Limit Error (Y
# e-manual: Profile Velocity(244) 0 ~ Velocity Limit(72), Profile Acceleration(240) 0 ~
# Acceleration Limit(68)). The X series' take 0 ~ 32,767 whatever its limits.
_Y_PROFILE_LIMITS = {"profile_velocity": "velocity_limit", "profile_acceleration": "acceleration_limit"}
# The Y series' Error Codes that leave torque on ("Torque ON: Y" in the e-manual's Error
# Code(153) table): the battery warning (9), and following error, bus watchdog error, over
# speed and position limit reached (17-20), which hold the shaft. Every other code cuts it.
_Y_TORQUE_KEPT = frozenset({9, 17, 18, 19, 20})
# Startup Configuration(34) bit 0 of the Y series, "Startup Torque On": the servo powers up
# (and restarts) with torque on, holding where it is.
_STARTUP_TORQUE_ON = 0x01


def top_speed_rad_s(model: ModelSpec, register: Callable[[str], int] | None = None) -> float:
    """How fast a position goal turns the model's shaft, rad/s of the output, with the
    registers `register(field)` reads (default: the factory values, `model.defaults`).

    Profile Velocity 0 is no profile: on the X series the shaft turns at the motor's no-load
    speed (its Velocity Limit bounds only Goal Velocity there); a non-zero one caps it. The
    Y series' e-manual has Velocity Limit cap the speed of generated trajectories as well,
    so a Y shaft stops at the lowest of its no-load speed, its Velocity Limit and its Profile
    Velocity (factory: both 20.2 of the YM080's 32.2 rev/min). Not modelled: the profile's
    acceleration (the shaft reaches its speed at once) and a time-based profile (Drive Mode
    bit 2), whose speed depends on each move's length; X's Profile Velocity is then a time
    and caps nothing here."""
    read = register or (lambda name: model.defaults.get(name, 0))
    top = model.no_load_rad_s
    if model.series == "Y":
        top = min(top, read("velocity_limit") * model.velocity_unit_rad_s)
    profile = read("profile_velocity")
    if profile and not (model.series == "X" and read("drive_mode") & PROFILE_TIME_BASED):
        top = min(top, profile * model.velocity_unit_rad_s)
    return top


class EmulatedServo:
    """One servo: a control table in a bytearray, a plant for its shaft, fault flags."""

    def __init__(self, servo_id: int, model: ModelSpec | str, plant: JointPlant | None = None, *,
                 baud: int = 1_000_000) -> None:
        self.model = model if isinstance(model, ModelSpec) else model_by_name(model)
        self.id = servo_id
        # The emulator's own plant turns at the speed the live registers allow (set by the
        # host or a test's hand, `_refresh`); a plant given (a twin's joint) has its own physics.
        self._tracker: TrackingPlant | None = None
        if plant is None:
            plant = self._tracker = TrackingPlant(max_speed=top_speed_rad_s(self.model))
        self.plant: JointPlant = plant
        self._table = self.model.table
        size = max(f.address + f.size for f in self.model.table.values())
        present = [self.model.field(f) for f in _PRESENT_FIELDS]
        self._present_span = (min(f.address for f in present), max(f.address + f.size for f in present))
        self.memory = bytearray(size)
        self._fields_at: dict[int, tuple[str, object]] = {}
        for name, fld in self.model.table.items():
            for a in range(fld.address, fld.address + fld.size):
                self._fields_at[a] = (name, fld)
        self.factory_defaults(baud)
        self._goal_at_present()
        self.present = True  # False: not on the bus at all
        self.muted = False  # True: executes, never answers
        self.lose_every = 0  # > 0: one reply in this many is lost (ServoChain.flaky)
        self._replies = 0
        self.corrupt_crc = False
        self.malformed: str | None = None  # one of MALFORMED

    def loses_reply(self) -> bool:
        """Whether the reply about to be sent is lost (every `lose_every`-th; counts it)."""
        self._replies += 1
        return bool(self.lose_every) and self._replies % self.lose_every == 0

    def _goal_at_present(self) -> None:
        # At power-on a servo's Goal Position reads its Present Position: torque on holds.
        self._refresh(time.monotonic())
        self.set("goal_position", self.get("present_position"))

    def factory_defaults(self, baud: int) -> None:
        """Zero the table, then load the model's defaults, this servo's ID and `baud`'s code."""
        self.memory[:] = bytes(len(self.memory))
        for name, value in self.model.defaults.items():
            self.set(name, value)
        self.set("id", self.id)
        self.set("baud_rate", baud_code(baud))

    # -- raw table access --------------------------------------------------------------

    def get(self, name: str) -> int:
        """A field's stored value (signed where the field is), without refreshing Present *."""
        fld = self._table.get(name) or self.model.field(name)
        raw = int.from_bytes(self.memory[fld.address: fld.address + fld.size], "little")
        return fld.from_unsigned(raw)

    def set(self, name: str, value: int) -> None:
        """Store a value, bypassing access rules and the plant (a test's or the emulator's hand)."""
        fld = self._table.get(name) or self.model.field(name)
        self.memory[fld.address: fld.address + fld.size] = fld.to_unsigned(int(value)).to_bytes(fld.size, "little")

    @property
    def torque(self) -> bool:
        """True when Torque Enable is set."""
        return bool(self.get("torque_enable"))

    @property
    def alert(self) -> bool:
        """True when the hardware-error register is non-zero (replies then carry the alert bit)."""
        return self.get(self.model.error_field) != 0

    @property
    def faulted(self) -> bool:
        """True when the hardware-error register holds an error that shut the servo down
        (torque off, refused until reboot). An X servo shuts down only on the errors its
        Shutdown(63) selects (factory 52: overheating, electrical shock, overload; an input
        voltage or encoder error is reported and the servo works on); a Y servo on every
        Error Code but those that keep torque on (`_Y_TORQUE_KEPT`: the battery warning, a
        following error, over speed...). The alert bit is raised either way."""
        error = self.get(self.model.error_field)
        if self.model.series == "X":
            return bool(error & self.get("shutdown"))
        return error != 0 and error not in _Y_TORQUE_KEPT

    # -- units -------------------------------------------------------------------------

    def ticks_to_rad(self, ticks: int) -> float:
        """Position ticks -> shaft rad, 0 at the model's centre tick (no calibration)."""
        return (ticks - self.model.center_tick) * self.model.radians_per_tick

    def rad_to_ticks(self, rad: float) -> int:
        """Shaft rad -> position ticks, rounded; 0 rad is the model's centre tick (no
        calibration)."""
        return self.model.center_tick + round(rad / self.model.radians_per_tick)

    # -- instructions ------------------------------------------------------------------

    def read(self, address: int, length: int, now: float) -> tuple[int, bytes]:
        """A READ instruction: (status error code, bytes). Refreshes the Present * fields from
        the plant at `now` (monotonic s) when the block overlaps them."""
        if address + length > len(self.memory):
            return p.ERR_DATA_LENGTH, b""
        first, end = self._present_span
        if address < end and first < address + length:
            self._refresh(now)
        return 0, bytes(self.memory[address: address + length])

    def write(self, address: int, data: bytes) -> int:
        """Apply a write; returns the status error code (0 = done)."""
        if address + len(data) > len(self.memory):
            return p.ERR_DATA_LENGTH
        touched = {self._fields_at[a][0]: self._fields_at[a][1]
                   for a in range(address, address + len(data)) if a in self._fields_at}
        for fld in touched.values():
            if not fld.writable or (fld.eeprom and self.torque):
                return p.ERR_ACCESS
        if self._watchdog_tripped() and touched.keys() & GOALS:
            return p.ERR_ACCESS  # a tripped bus watchdog leaves the goals read-only until it is cleared
        if self.model.series == "Y":
            for name in touched.keys() & _Y_PROFILE_LIMITS.keys():
                if self._peek(name, address, data) > self.get(_Y_PROFILE_LIMITS[name]):
                    return p.ERR_DATA_LIMIT
        if "goal_position" in touched and self.get("operating_mode") == OperatingMode.POSITION:
            goal = self._peek("goal_position", address, data)
            if not self.get("min_position_limit") <= goal <= self.get("max_position_limit"):
                return p.ERR_DATA_LIMIT
        if "torque_enable" in touched and self._peek("torque_enable", address, data) and self.faulted:
            return p.ERR_RESULT_FAIL  # a latched hardware error (not a warning) keeps torque off until reboot
        was_on = self.torque
        self.memory[address: address + len(data)] = data
        if "torque_enable" in touched and self.torque != was_on:
            self.plant.set_torque(self.torque)
            if self.torque:
                # A real servo drives to the Goal Position left in its RAM, however stale
                # (reachy_mini #1136): the driver must write the present position there first.
                self.plant.set_goal(self.ticks_to_rad(self.get("goal_position")))
        if "goal_position" in touched and self.torque:
            self.plant.set_goal(self.ticks_to_rad(self.get("goal_position")))
        return 0

    def _watchdog_tripped(self) -> bool:
        """The X-series' Bus Watchdog(98) reads -1 once it stopped the servo."""
        return self.model.series == "X" and self.get("bus_watchdog") == -1

    def reboot(self) -> None:
        """The REBOOT instruction's effect (a power-on's too): latched error cleared, RAM (the
        Goal Position among it) as at power-on, torque off, or on holding the present
        position where a Y servo's Startup Configuration(34) has Startup Torque On (bit 0)."""
        self.set("torque_enable", 0)
        self.set(self.model.error_field, 0)
        self.plant.set_torque(False)
        self._goal_at_present()
        if self.model.series == "Y" and self.get("startup_configuration") & _STARTUP_TORQUE_ON:
            self.set("torque_enable", 1)
            self.plant.set_torque(True)
            self.plant.set_goal(self.ticks_to_rad(self.get("goal_position")))

    def inject_error(self, word: str) -> None:
        """Latch a hardware error: the servo drops torque where the error shuts it down
        (`faulted`: an X servo's Shutdown(63) selects it, a Y servo's Error Code does not
        keep torque); one that does not (an X input voltage error at the factory Shutdown, a
        Y following error or low backup battery) leaves torque as it is, the alert bit on."""
        self.set(self.model.error_field, self.model.error_value(word))
        if self.faulted:
            self.set("torque_enable", 0)
            self.plant.set_torque(False)

    def _peek(self, name: str, address: int, data: bytes) -> int:
        fld = self.model.field(name)
        merged = bytearray(self.memory)
        merged[address: address + len(data)] = data
        return fld.from_unsigned(int.from_bytes(merged[fld.address: fld.address + fld.size], "little"))

    def _refresh(self, now: float) -> None:
        if self._tracker is not None:
            # Read as they are now: a register changed since the last read (by the host or a
            # test's `set`) bounds the whole interval, as a goal written since does.
            self._tracker.max_speed = top_speed_rad_s(self.model, self.get)
        state = self.plant.read(now)
        rad_s_per_unit = self.model.velocity_unit_rad_s
        ticks = self.rad_to_ticks(state.position)
        if self.model.series == "X" and self.get("operating_mode") == OperatingMode.POSITION:
            # The conservative reading of the X-series' single-turn mode: one turn (0..4095),
            # so a shaft moved past its end (by hand, torque off) reads from the other end.
            ticks %= self.model.ticks_per_turn
        self.set("present_position", ticks)
        self.set("present_velocity", round(state.velocity / rad_s_per_unit))
        self.set("present_current", round(state.current / self.model.current_unit_a))
        self.set("realtime_tick", int(now * 1000) % 32768)


class ServoChain:
    """Servos on one emulated bus, served on a pty from a background thread.

        with ServoChain("follower", [EmulatedServo(1, "XL430-W250")]) as chain:
            bus = DynamixelBus("follower", chain.path, 1_000_000, {1: "XL430-W250"})
    """

    def __init__(self, name: str, servos: Iterable[EmulatedServo], baud: int = 1_000_000) -> None:
        self.name = name
        self.baud = baud
        self.servos: dict[int, EmulatedServo] = {s.id: s for s in servos}
        for servo in self.servos.values():
            servo.set("baud_rate", baud_code(baud))
        self._byte_time = 10.0 / baud  # 8N1: 10 bits a byte
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line editing until a host configures it
        self.path = os.ttyname(self._slave)
        # A rate termios has no constant for (4.5 Mbps) reads as Linux's BOTHER (0o10000):
        # the custom rate itself is not visible here, only that the host set one.
        self._expected_speed = getattr(termios, f"B{baud}", _BOTHER)
        self._deframer = p.Deframer()
        self._bus_free_at = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()  # faults are injected from other threads
        self.packets_served = 0

    def __enter__(self) -> ServoChain:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start answering on `path` from a daemon thread."""
        self._thread = threading.Thread(target=self._serve, name=f"dxl-emulator-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the serving thread (waits up to 2 s for it), then close both ends of the pty."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._close_fds()

    # -- faults ------------------------------------------------------------------------

    def remove(self, servo_id: int) -> None:
        """Take the servo off the bus: it neither executes nor answers. KeyError for an
        unknown id."""
        self.servos[servo_id].present = False

    def mute(self, servo_id: int, muted: bool = True) -> None:
        """The servo still executes instructions but never answers (the host times out)."""
        self.servos[servo_id].muted = muted

    def flaky(self, servo_id: int, every: int | None) -> None:
        """One reply in `every` of this servo is lost on the wire (a loose connector, a
        failing transceiver): it still executes every instruction, and the host's retry gets
        the next reply. None ends it. ValueError for `every` < 2."""
        if every is not None and every < 2:
            raise ValueError(f"flaky: every must be >= 2 (1 is mute()), got {every}")
        self.servos[servo_id].lose_every = every or 0

    def corrupt(self, servo_id: int, corrupted: bool = True) -> None:
        """The servo's replies carry a wrong CRC (every bit flipped) until called with False."""
        self.servos[servo_id].corrupt_crc = corrupted

    def malform(self, servo_id: int, kind: str | None) -> None:
        """Every reply of this servo has the shape `kind` (MALFORMED) from now; None ends it."""
        if kind is not None and kind not in MALFORMED:
            raise ValueError(f"unknown malformed reply kind '{kind}'; kinds: {', '.join(MALFORMED)}")
        self.servos[servo_id].malformed = kind

    def hardware_error(self, servo_id: int, word: str) -> None:
        """Latch a hardware error ("overload", ...): alert bit on, and torque off until reboot
        where the error shuts the servo down (`EmulatedServo.inject_error`).

        Raises PlatformError for a word the model cannot report. Safe from any thread.
        """
        with self._lock:
            self.servos[servo_id].inject_error(word)

    def vanish(self) -> None:
        """The adapter is unplugged: the pty goes away under the host's feet."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._close_fds()

    # -- serving -----------------------------------------------------------------------

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def _serve(self) -> None:
        import select

        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._master, 4096)
            except OSError:
                time.sleep(0.01)  # no host has the port open
                continue
            arrived = time.monotonic()
            if not self._host_speed_matches():
                continue  # garbage to a servo listening at another baud rate
            for packet in self._deframer.feed(data):
                with self._lock:
                    self._bus_free_at = max(self._bus_free_at, arrived) + packet.wire_bytes * self._byte_time
                    replies = self._handle(packet, arrived)
                self._send_burst(replies)
                self.packets_served += 1

    def _host_speed_matches(self) -> bool:
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except termios.error:
            return True
        return speed == self._expected_speed

    def _send_burst(self, replies: list[tuple[EmulatedServo, bytes]]) -> None:
        """Write replies at their wire times, several per write when they fall close together.

        A sleep costs ~0.1 ms of scheduler overshoot and every write wakes the host, so
        inside a burst (a sync read of 20 servos) replies go out in batches up to
        _MAX_EARLY_S ahead of their wire time; the last one always waits for its own,
        so a transaction is never shorter than the wire makes it.
        """
        pending = bytearray()
        for servo, frame in replies:
            start = self._bus_free_at + 2e-6 * servo.get("return_delay_time")
            self._bus_free_at = start + len(frame) * self._byte_time
            ahead = self._bus_free_at - time.monotonic()
            if ahead > _MAX_EARLY_S:
                self._write(pending)
                pending.clear()
                time.sleep(ahead - _MAX_EARLY_S)
            pending += frame
        ahead = self._bus_free_at - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        self._write(pending)

    def _write(self, data: bytes | bytearray) -> None:
        if data:
            with contextlib.suppress(OSError):
                os.write(self._master, bytes(data))

    def _answering(self, servo_id: int) -> EmulatedServo | None:
        servo = self.servos.get(servo_id)
        return servo if servo is not None and servo.present else None

    def _status(self, servo: EmulatedServo, error: int, params: bytes = b"") -> list[tuple[EmulatedServo, bytes]]:
        if servo.muted:
            return []
        if servo.loses_reply():
            return []
        if servo.alert:
            error |= ALERT_BIT
        if servo.malformed is None:
            return [(servo, p.status(servo.id, error, params, corrupt_crc=servo.corrupt_crc))]
        body, servo_id, instruction = bytes([error]) + params, servo.id, p.STATUS
        if servo.malformed == "short":
            body = body[:-1]
        elif servo.malformed == "empty":
            body = body[:1]
        elif servo.malformed == "long":
            body += b"\x00"
        elif servo.malformed == "wrong-id":
            servo_id = servo.id % 252 + 1
        else:  # wrong-instruction: what an adapter echoing the host's READ would send back
            instruction = p.READ
        return [(servo, p.encode(servo_id, instruction, body, corrupt_crc=servo.corrupt_crc))]

    def _handle(self, pkt: p.Packet, now: float) -> list[tuple[EmulatedServo, bytes]]:
        if pkt.servo_id == p.BROADCAST_ID:
            return self._handle_broadcast(pkt, now)
        servo = self._answering(pkt.servo_id)
        if servo is None:
            return []
        if not pkt.crc_ok:
            return self._status(servo, p.ERR_CRC)
        level = servo.get("status_return_level")
        ins, prm = pkt.instruction, pkt.params
        if ins == p.PING:
            model = servo.model.number
            return self._status(servo, 0, bytes([model & 0xFF, model >> 8, servo.get("firmware_version")]))
        if ins == p.READ:
            if len(prm) != 4:
                return self._status(servo, p.ERR_DATA_LENGTH)
            error, data = servo.read(_u16(prm, 0), _u16(prm, 2), now)
            return self._status(servo, error, data) if level >= 1 else []
        if ins == p.WRITE:
            if len(prm) < 3:
                return self._status(servo, p.ERR_DATA_LENGTH)
            error = servo.write(_u16(prm, 0), prm[2:])
            return self._status(servo, error) if level >= 2 else []
        if ins == p.REBOOT:
            replies = self._status(servo, 0)
            servo.reboot()
            return replies
        if ins == p.FACTORY_RESET:
            # Refused on purpose: an emulator that forgets its IDs mid-session breaks every
            # later step; the host sees what a servo that cannot comply answers.
            return self._status(servo, p.ERR_RESULT_FAIL)
        return self._status(servo, p.ERR_INSTRUCTION)

    def _handle_broadcast(self, pkt: p.Packet, now: float) -> list[tuple[EmulatedServo, bytes]]:
        if not pkt.crc_ok:
            return []
        ins, prm = pkt.instruction, pkt.params
        replies: list[tuple[EmulatedServo, bytes]] = []
        if ins == p.PING:
            for servo_id in sorted(self.servos):
                servo = self._answering(servo_id)
                if servo is not None:
                    model = servo.model.number
                    replies += self._status(servo, 0, bytes([model & 0xFF, model >> 8, servo.get("firmware_version")]))
        elif ins == p.SYNC_READ:
            address, length = _u16(prm, 0), _u16(prm, 2)
            for servo_id in prm[4:]:
                # Each servo answers after hearing the previous one: a silent servo
                # leaves the rest of the chain waiting, and the host times out there.
                servo = self._answering(servo_id)
                if servo is None or servo.muted:
                    break
                error, data = servo.read(address, length, now)
                replies += self._status(servo, error, data)
        elif ins == p.BULK_READ:
            for k in range(0, len(prm) - 4, 5):
                servo = self._answering(prm[k])
                if servo is None or servo.muted:
                    break
                error, data = servo.read(_u16(prm, k + 1), _u16(prm, k + 3), now)
                replies += self._status(servo, error, data)
        elif ins == p.SYNC_WRITE:
            address, length = _u16(prm, 0), _u16(prm, 2)
            for k in range(4, len(prm) - length, length + 1):
                servo = self._answering(prm[k])
                if servo is not None:
                    servo.write(address, prm[k + 1: k + 1 + length])
        elif ins == p.BULK_WRITE:
            k = 0
            while k + 5 <= len(prm):
                servo_id, address, length = prm[k], _u16(prm, k + 1), _u16(prm, k + 3)
                servo = self._answering(servo_id)
                if servo is not None:
                    servo.write(address, prm[k + 5: k + 5 + length])
                k += 5 + length
        return replies


def _u16(data: bytes, offset: int) -> int:
    return data[offset] | (data[offset + 1] << 8)


def build_chains(
    buses: Mapping[str, tuple[int, Mapping[int, str]]],
    plant_factory: PlantFactory | None = None,
    *,
    return_delay_time: int | None = None,
) -> dict[str, ServoChain]:
    """One chain per bus: {bus name: (baud, {id: model name})} -> started chains.

    `return_delay_time` overrides the factory default (250 units = 0.5 ms a reply),
    as a configured robot would have it.
    """
    chains = {}
    for bus_name, (baud, motors) in buses.items():
        servos = []
        for servo_id, model_name in motors.items():
            plant = plant_factory(bus_name, servo_id, model_name) if plant_factory else None
            servo = EmulatedServo(servo_id, model_name, plant, baud=baud)
            if return_delay_time is not None:
                servo.set("return_delay_time", return_delay_time)
            servos.append(servo)
        chains[bus_name] = ServoChain(bus_name, servos, baud)
        chains[bus_name].start()
    return chains
