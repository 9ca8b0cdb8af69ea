"""`DynamixelBus`: the `MotorBus` (motor_bus.py) of Protocol 2.0 servos, through dynamixel-sdk.

One bus is one serial port (a U2D2, or an emulator's pty) with a known set of servos:
ID -> model. Values cross this seam in raw control-table units (ticks); conversion to
radians is calibration's job (calibration.py), one layer up.

Many motors, one transaction: `read(fields, ids)` reads a block of adjacent fields
(e.g. present current, velocity and position) from every servo in one SYNC_READ, or one
BULK_READ when the servos on the bus are different series and keep the fields at
different addresses. `write(field, values)` is one SYNC_WRITE (or BULK_WRITE).

Every transaction is retried a bounded number of times; each failure is logged and counted
(`tally`: a flaky servo shows on the robot's status long before it fails), and the
last one raises `BusError` naming the bus, the servo and what to check, e.g.

    bus 'left_arm' (/dev/ttyUSB0): servo 5 (YM080-230-R099-RH) did not answer sync read
    of present_position after 3 tries; check its power and cable, and that it is set to
    ID 5 at 1000000 baud

A reply of the wrong shape (too short, too long, from another ID, not a status packet)
is a corrupt reply like a bad CRC (replies.py): retried, then named with what was wrong.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import termios
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from dynamixel_sdk import (
    COMM_RX_CORRUPT,
    COMM_RX_TIMEOUT,
    COMM_SUCCESS,
    GroupBulkRead,
    GroupBulkWrite,
    GroupSyncRead,
    GroupSyncWrite,
    PortHandler,
)
from serial import SerialException

from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.control_table import (
    ALERT_BIT,
    ERROR_ADVICE,
    WARNING_ONLY,
    ModelSpec,
    OperatingMode,
    model_by_name,
    model_label,
    span,
)
from shallowpi.hardware.dynamixel.motor_bus import (
    BaudRateError,
    BusError,
    LinkTally,
    ServoFaultError,
    ServoInfo,
)
from shallowpi.hardware.dynamixel.port import (
    DEFAULT_LATENCY_TIMER_MS,
    PortBusyError,
    QuietPortHandler,
    usb_latency_timer_ms,
)
from shallowpi.hardware.dynamixel.replies import StrictPacketHandler, describe_reply

log = logging.getLogger(__name__)


class DynamixelBus:
    """Protocol 2.0 servos on one serial port, through the real dynamixel-sdk.

    `motors` maps ID -> model (a ModelSpec or its name, e.g. "XM430-W350"). Use as a
    context manager to have torque switched off however the block ends:

        with DynamixelBus("follower", "/dev/ttyUSB0", 1_000_000, {1: "XL430-W250"}) as bus:
            bus.set_torque(True)
            bus.write("goal_position", {1: 2048})
            bus.read(["present_position"])  # {"present_position": {1: 2047}}

    Not thread-safe: it holds no lock, and two threads transacting at once would interleave
    packets on the wire; one thread at a time uses a bus (the robot's loop, or calibration's
    sampler while the main thread waits). Errors: `BusError` for
    an unknown servo ID, a port that cannot be opened or went away, or a transaction that
    fails `retries` times; `ServoFaultError` for a hardware alert; PlatformError for a
    field the model lacks or `retries < 1`.
    """

    def __init__(
        self,
        name: str,
        port: str,
        baud: int,
        motors: Mapping[int, ModelSpec | str],
        *,
        retries: int = 3,
        latency_timer_ms: float | None = None,
        port_factory: Callable[[str, float], PortHandler] = QuietPortHandler,
    ) -> None:
        if retries < 1:
            raise PlatformError(f"bus '{name}': retries must be >= 1, got {retries}")
        self.name = name
        self.port_path = port
        self.baud = baud
        self.motors: dict[int, ModelSpec] = {
            int(i): m if isinstance(m, ModelSpec) else model_by_name(m) for i, m in motors.items()
        }
        self.retries = retries
        # How long a reply may take is timed by the adapter's own latency timer where the
        # kernel shows it (set to 1 ms, as `platform doctor` advises, a servo that stopped
        # answering is found within a tick, not after three 34 ms waits), else the default.
        if latency_timer_ms is None:
            latency_timer_ms = float(usb_latency_timer_ms(port) or DEFAULT_LATENCY_TIMER_MS)
        self.latency_timer_ms = latency_timer_ms
        self._port_factory = port_factory  # the stock SDK handler, for comparisons
        self._port: PortHandler | None = None
        self._packets = StrictPacketHandler()
        self._readers: dict[tuple, GroupSyncRead | GroupBulkRead] = {}
        self._warned: set[int] = set()  # servos whose working-servo warning was logged
        self.tally = LinkTally()  # every exchange and failed try, for the robot's status

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True while the port is open; a port that vanished mid-transaction resets it."""
        return self._port is not None and self._port.is_open

    def connect(self) -> None:
        """Open and lock the port at `baud`; a no-op when already connected.

        Does not ping the servos (`verify()` does). Raises BusError when another process
        holds the port's lock, when the port cannot be opened (cable, path, permissions),
        or (BaudRateError) when the baud rate is not supported.
        """
        if self.is_connected:
            return
        port = self._port_factory(self.port_path, self.latency_timer_ms)
        try:
            opened = port.openPort() and port.setBaudRate(self.baud)
        except PortBusyError:
            raise BusError(
                f"{self._where}: port is busy: another process holds its lock (a second "
                "`platform` command, or a program opening it in exclusive mode); close that first"
            ) from None
        except (SerialException, OSError) as exc:
            raise BusError(f"{self._where}: cannot open the port ({_first_line(exc)}); {_open_advice(exc)}") from None
        if not opened:
            raise BaudRateError(f"{self._where}: baud rate {self.baud} is not supported by the port")
        self._port = port
        log.info("bus %s: opened %s at %d baud", self.name, self.port_path, self.baud)

    def disconnect(self) -> None:
        """Close the port, leaving torque as it is (`safe_shutdown` switches it off first)."""
        if self._port is not None:
            with contextlib.suppress(SerialException, OSError, termios.error):
                self._port.closePort()
            self._port = None
            self._readers.clear()

    def __enter__(self) -> DynamixelBus:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.safe_shutdown()

    def safe_shutdown(self) -> None:
        """Torque off (best effort: the port may be the thing that failed), then close."""
        try:
            if self.is_connected:
                self.set_torque(False)
        except BusError as err:
            log.warning("bus %s: could not switch torque off on exit: %s", self.name, err)
        finally:
            self.disconnect()

    @contextmanager
    def torque_enabled(self, ids: Iterable[int] | None = None) -> Iterator[None]:
        """Torque on inside the block, off in `finally`."""
        self.set_torque(True, ids)
        try:
            yield
        finally:
            self.set_torque(False, ids)

    # -- discovery ---------------------------------------------------------------------

    def scan(self) -> dict[int, ServoInfo]:
        """Every servo that answers a broadcast ping: ID -> model and firmware."""
        found, result = self._call(lambda: self._packets.broadcastPing(self._need_port()))
        if result not in (COMM_SUCCESS, COMM_RX_TIMEOUT):
            log.warning("bus %s: broadcast ping: %s", self.name, self._packets.getTxRxResult(result))
        return {i: ServoInfo(i, model, fw) for i, (model, fw) in sorted(found.items())}

    def ping(self, servo_id: int) -> ServoInfo | None:
        """One servo's model, or None if it does not answer (after the retries)."""
        return self._ping(servo_id)[0]

    def _ping(self, servo_id: int) -> tuple[ServoInfo | None, int, str]:
        """(model or None, last SDK result, what was wrong with the last bad reply)."""
        model = 0

        def transact() -> int:
            nonlocal model
            model, result, _error = self._packets.ping(self._need_port(), servo_id)
            return result

        result, detail = self._tries(transact, f"ping of servo {servo_id}", culprit=lambda: servo_id)
        return (ServoInfo(servo_id, model) if result == COMM_SUCCESS else None), result, detail

    def verify(self) -> dict[int, ServoInfo]:
        """Check every configured ID answers and is the configured model; else one-line error."""
        found = {}
        for servo_id, model in self.motors.items():
            info, result, detail = self._ping(servo_id)
            if info is None and result == COMM_RX_CORRUPT:
                raise BusError(self._failure_message("ping", [servo_id], servo_id, result, detail))
            if info is None:
                raise BusError(
                    f"{self._where}: servo {servo_id} ({model.name}) did not answer a ping; "
                    f"check its power and cable, and that it is set to ID {servo_id} at "
                    f"{self.baud} baud (`platform doctor --port {self.port_path}` scans the bus)"
                )
            if info.model_number != model.number:
                raise BusError(
                    f"{self._where}: servo {servo_id} is a {model_label(info.model_number)} but "
                    f"the config says {model.name} ({model.number}); fix the robot config or "
                    "the servo's ID"
                )
            found[servo_id] = info
        return found

    # -- reads and writes --------------------------------------------------------------

    def read(
        self, fields: Sequence[str], ids: Iterable[int] | None = None, *, check_alert: bool = False
    ) -> dict[str, dict[int, int]]:
        """Adjacent fields from many servos in one transaction: {field: {id: value}}.

        Values are signed where the field is. Fields must lie close together in the
        control table (one block is read), e.g. present current, velocity and position.
        `check_alert`: a reply that raised the alert bit (a hardware error: overload,
        overheating, voltage) has the servo's error register read and raises
        ServoFaultError, in the tick it happened. A servo only warning (`WARNING_ONLY`: a Y
        servo's low backup battery) raises the bit on every reply: it is logged once, and
        its register is still read at each alert, as only the register tells an overload
        that follows the warning from the warning (one small read a tick until the battery
        is replaced; left unread, its overload waited for the once-a-second poll).
        """
        id_list = self._ids(ids)
        layout = tuple((i, *span(self.motors[i], fields)) for i in id_list)
        key = (tuple(fields), layout)
        group = self._readers.get(key)
        if group is None:
            group = self._make_reader(layout)
            self._readers[key] = group
        what = f"{'bulk' if isinstance(group, GroupBulkRead) else 'sync'} read of {', '.join(fields)}"

        def transact() -> int:
            # The SDK keeps each servo's reply in data_dict and stops at the first servo
            # that fails: empty them first so a failure points at the servo that broke.
            for servo_id in group.data_dict:
                if isinstance(group, GroupBulkRead):
                    group.data_dict[servo_id][0] = []
                else:
                    group.data_dict[servo_id] = []
            return group.txRxPacket()

        self._packets.alerts.clear()
        self._retry(transact, what, id_list, culprit=lambda: self._first_silent(group, id_list))
        if check_alert and (alerted := sorted(self._packets.alerts & set(id_list))):
            self.raise_on_hardware_errors(alerted)
        out: dict[str, dict[int, int]] = {f: {} for f in fields}
        for servo_id in id_list:
            model = self.motors[servo_id]
            for name in fields:
                fld = model.field(name)
                raw = group.getData(servo_id, fld.address, fld.size)
                out[name][servo_id] = fld.from_unsigned(raw)
        return out

    def write(self, field: str, values: Mapping[int, int]) -> None:
        """One field on many servos in one SYNC_WRITE (BULK_WRITE across series)."""
        if not values:
            return
        fields = {i: self.motors[self._check_id(i)].field(field) for i in values}
        layouts = {(f.address, f.size) for f in fields.values()}
        port = self._need_port()
        if len(layouts) == 1:
            address, size = layouts.pop()
            group = GroupSyncWrite(port, self._packets, address, size)
            for servo_id, value in values.items():
                group.addParam(servo_id, _le_bytes(fields[servo_id].to_unsigned(int(value)), size))
            what = f"sync write of {field}"
        else:
            group = GroupBulkWrite(port, self._packets)
            for servo_id, value in values.items():
                f = fields[servo_id]
                group.addParam(servo_id, f.address, f.size, _le_bytes(f.to_unsigned(int(value)), f.size))
            what = f"bulk write of {field}"
        self._retry(group.txPacket, what, list(values), replied=False)

    def write_one(self, servo_id: int, field: str, value: int, *, check_alert: bool = True) -> None:
        """One field on one servo, acknowledged: the status packet's error byte is checked."""
        fld = self.motors[self._check_id(servo_id)].field(field)
        raw = fld.to_unsigned(int(value))
        writer = {1: self._packets.write1ByteTxRx, 2: self._packets.write2ByteTxRx,
                  4: self._packets.write4ByteTxRx}[fld.size]
        error_byte = 0

        def transact() -> int:
            nonlocal error_byte
            result, error_byte = self._call(lambda: writer(self._need_port(), servo_id, fld.address, raw))
            return result

        self._retry(transact, f"write of {field}={value}", [servo_id], culprit=lambda: servo_id)
        if not check_alert:
            error_byte &= ~ALERT_BIT
        self._check_status_error(servo_id, error_byte, f"write of {field}={value}")

    def read_one(self, servo_id: int, field: str) -> int:
        """One field of one servo in one READ instruction (signed where the field is)."""
        fld = self.motors[self._check_id(servo_id)].field(field)
        data: list[int] = []
        error_byte = 0

        def transact() -> int:
            nonlocal data, error_byte
            data, result, error_byte = self._call(
                lambda: self._packets.readTxRx(self._need_port(), servo_id, fld.address, fld.size))
            return result

        self._retry(transact, f"read of {field}", [servo_id], culprit=lambda: servo_id)
        # As in a sync read, the alert bit is not this read's business (hardware_errors() is).
        self._check_status_error(servo_id, error_byte & ~ALERT_BIT, f"read of {field}")
        return fld.from_unsigned(int.from_bytes(bytes(data), "little"))

    # -- servo state -------------------------------------------------------------------

    def set_torque(self, enabled: bool, ids: Iterable[int] | None = None) -> None:
        """Torque on or off, servo by servo (acknowledged).

        Switching off goes on through every servo even if one fails, and ignores the
        hardware-alert bit: a faulted servo must not keep its neighbours powered.
        """
        first_error: BusError | None = None
        for servo_id in self._ids(ids):
            try:
                self.write_one(servo_id, "torque_enable", int(enabled), check_alert=enabled)
            except BusError as err:
                if enabled or not self.is_connected:
                    raise
                first_error = first_error or err
        if first_error is not None:
            raise first_error

    def set_operating_mode(self, mode: OperatingMode, ids: Iterable[int]) -> None:
        """Operating Mode lives in EEPROM: torque goes off for the change."""
        for servo_id in self._ids(ids):
            model = self.motors[servo_id]
            if mode not in model.operating_modes:
                modes = ", ".join(m.name.lower() for m in sorted(model.operating_modes))
                raise BusError(
                    f"{self._where}: servo {servo_id} ({model.name}) has no {mode.name.lower()} "
                    f"mode; it supports: {modes}"
                )
            if self.read_one(servo_id, "operating_mode") != mode:
                self.write_one(servo_id, "torque_enable", 0)
                self.write_one(servo_id, "operating_mode", int(mode))

    def hardware_errors(self, ids: Iterable[int] | None = None) -> dict[int, list[str]]:
        """Servos reporting a hardware error, decoded: {id: ["overload", ...]}; {} if none."""
        errors: dict[int, list[str]] = {}
        by_field: dict[str, list[int]] = {}
        for servo_id in self._ids(ids):
            by_field.setdefault(self.motors[servo_id].error_field, []).append(servo_id)
        for field, field_ids in by_field.items():
            for servo_id, value in self.read([field], field_ids)[field].items():
                words = self.motors[servo_id].decode_errors(value)
                if words:
                    errors[servo_id] = words
        return errors

    def raise_on_hardware_errors(self, ids: Iterable[int] | None = None) -> None:
        """ServoFaultError naming the first faulted servo, its errors and advice, if any.
        A warning that leaves the servo working (`WARNING_ONLY`: a Y servo's low backup
        battery) is logged once per servo, not raised."""
        self._raise_faults(self.hardware_errors(ids))

    def _raise_faults(self, errors: Mapping[int, list[str]]) -> None:
        """ServoFaultError for the first servo of `errors` ({id: words}, as `hardware_errors`
        reads them) with a fault; its warnings (`WARNING_ONLY`) logged once per servo."""
        faulted = {}
        for servo_id, words in errors.items():
            warnings = [w for w in words if w in WARNING_ONLY]
            if warnings and servo_id not in self._warned:
                self._warned.add(servo_id)
                log.warning("%s", self._fault_message(servo_id, warnings, 1, verb="warns of"))
            if faults := [w for w in words if w not in WARNING_ONLY]:
                faulted[servo_id] = faults
        if faulted:
            servo_id, words = next(iter(faulted.items()))
            raise ServoFaultError(self._fault_message(servo_id, words, len(faulted)), bus=self.name)

    def reboot(self, servo_id: int, wait_s: float = 2.0) -> None:
        """Clears a latched hardware error (the servo restarts with torque off). Sent once,
        not retried like a write: a lost reply is the servo already rebooting, and a second
        REBOOT would reach it mid-restart. Then it is pinged until it answers (BusError if
        it has not within `wait_s`)."""
        self._call(lambda: self._packets.reboot(self._need_port(), servo_id))  # its reply, if any, says nothing more
        deadline = time.monotonic() + wait_s
        while self._ping(servo_id)[0] is None:
            if time.monotonic() > deadline:
                raise BusError(f"{self._where}: servo {servo_id} did not answer within {wait_s:g} s of its reboot; "
                               "check its power and cable")

    # -- internals ---------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return f"bus '{self.name}' ({self.port_path})"

    def _need_port(self) -> PortHandler:
        if self._port is None:
            raise BusError(f"{self._where}: not connected; call connect() first")
        return self._port

    def _ids(self, ids: Iterable[int] | None) -> list[int]:
        if ids is None:
            return sorted(self.motors)
        return [self._check_id(i) for i in ids]

    def _check_id(self, servo_id: int) -> int:
        if servo_id not in self.motors:
            raise BusError(
                f"{self._where}: servo {servo_id} is not in this bus's config "
                f"(IDs: {', '.join(map(str, sorted(self.motors)))})"
            )
        return servo_id

    def _make_reader(self, layout: tuple[tuple[int, int, int], ...]) -> GroupSyncRead | GroupBulkRead:
        port = self._need_port()
        blocks = {(start, length) for _, start, length in layout}
        if len(blocks) == 1:
            start, length = blocks.pop()
            group = GroupSyncRead(port, self._packets, start, length)
            for servo_id, _, _ in layout:
                group.addParam(servo_id)
            return group
        group = GroupBulkRead(port, self._packets)
        for servo_id, start, length in layout:
            group.addParam(servo_id, start, length)
        return group

    def _first_silent(self, group: GroupSyncRead | GroupBulkRead, ids: list[int]) -> int | None:
        for servo_id in ids:
            data = group.data_dict.get(servo_id)
            if isinstance(group, GroupBulkRead):
                data = data[0] if data else None
            if not data:
                return servo_id
        return None

    def _call(self, fn):
        """Run one SDK call, turning a vanished port into a BusError that says so.

        Any other exception out of the call (Ctrl-C, or SIGTERM raised as KeyboardInterrupt,
        while waiting for a reply) clears the SDK's port-in-use flag, which only a finished
        exchange clears: left set, every later exchange failed with "Port is in use!", the
        clean-up's torque-off among them, and the arm stayed powered after the process ended."""
        try:
            return fn()
        except (SerialException, OSError, termios.error) as exc:
            port, self._port = self._port, None
            self._readers.clear()  # they hold the dead port
            if port is not None:
                with contextlib.suppress(SerialException, OSError, termios.error):
                    port.closePort()
            raise BusError(
                f"{self._where}: the port went away ({_first_line(exc)}); check the USB "
                "cable and the adapter's power, then reconnect"
            ) from None
        except BaseException:
            if self._port is not None:
                self._port.is_using = False
            raise

    def _retry(self, transact, what: str, ids: list[int], culprit=None, replied: bool = True) -> None:
        """`transact` until it succeeds (`_tries`); BusError naming the servo `culprit()`
        finds after the last try."""
        result, detail = self._tries(transact, f"{what} from servos {_id_text(ids)}", culprit, replied)
        if result != COMM_SUCCESS:
            raise BusError(self._failure_message(what, ids, culprit() if culprit else None, result, detail))

    def _tries(self, transact, what: str, culprit=None, replied: bool = True) -> tuple[int, str]:
        """Run `transact` (one exchange, returning the SDK's result) until it succeeds, at
        most `retries` times, each failure logged with `what`; returns (the last result,
        what was wrong with the last bad reply), COMM_RX_CORRUPT for a malformed one.
        `replied`: the exchange asks for replies, and is counted in `tally` with its failed
        tries, by the servo `culprit()` names (a sync write asks for none: it fails only
        at the port, and counted it would dilute the replies lost among the exchanges)."""
        result, detail = COMM_SUCCESS, ""
        self.tally.exchanges += replied
        for attempt in range(1, self.retries + 1):
            self._packets.last_malformed = ""
            result = self._call(transact)
            if result == COMM_SUCCESS:
                return result, ""
            detail = self._after_failure(result)
            if replied:
                self._count_failed_try(culprit() if culprit else None)
            result = COMM_RX_CORRUPT if detail else result
            log.warning("%s: %s failed (try %d/%d): %s%s", self._where, what, attempt, self.retries,
                        self._packets.getTxRxResult(result), f" ({detail})" if detail else "")
        return result, detail

    def _count_failed_try(self, servo_id: int | None) -> None:
        self.tally.failed_tries += 1
        if servo_id is not None:
            self.tally.failed_by_id[servo_id] = self.tally.failed_by_id.get(servo_id, 0) + 1

    def _after_failure(self, result: int) -> str:
        """After a failed exchange: what was wrong with the reply (if it was malformed),
        and the rest of the exchange drained, so a late reply cannot answer the retry."""
        port = self._port
        drain = getattr(port, "drain", None)
        if drain is not None and result in (COMM_RX_CORRUPT, COMM_RX_TIMEOUT):
            # The servos after the one that sent a bad reply still answer, and after a
            # timeout the replies may only be late: wait until the line has been quiet for a
            # USB latency period (capped: a pty or a tuned U2D2 needs less), so none of them
            # can answer the retry (it read "a reply from ID 8 where ID 1 was asked" and
            # advised checking for duplicate IDs). A silent chain costs the quiet period.
            self._call(lambda: drain(min(self.latency_timer_ms, 20.0) / 1000.0 + 0.002))
        # A packet that is not a status packet is skipped by the SDK, which may then time
        # out: the servo did answer, wrongly, so it is named as malformed either way.
        received = bytes(getattr(port, "received", b""))
        return describe_reply(received) or (self._packets.last_malformed if result == COMM_RX_CORRUPT else "")

    def _failure_message(self, what: str, ids: list[int], servo_id: int | None, result: int,
                         detail: str = "") -> str:
        tries = f"after {self.retries} {'try' if self.retries == 1 else 'tries'}"
        if servo_id is None:
            who = f"servos {_id_text(ids)}"
        else:
            who = f"servo {servo_id} ({self.motors[servo_id].name})"
        if result == COMM_RX_CORRUPT and detail:
            if detail.startswith("a reply from ID"):
                check = ("check that no two servos share an ID (`platform doctor` scans the bus) and "
                         "that nothing else drives the bus")
            else:
                check = ("check that nothing else drives the bus (another program or controller, an "
                         "adapter echoing requests) and that the servo speaks Protocol 2.0")
            return f"{self._where}: {who} sent malformed replies to the {what} {tries} (last: {detail}); {check}"
        if result == COMM_RX_CORRUPT:
            return (
                f"{self._where}: {who} sent corrupted replies to the {what} {tries}; check the "
                "cable and connectors, and that nothing else drives the bus"
            )
        if result == COMM_RX_TIMEOUT:
            return (
                f"{self._where}: {who} did not answer the {what} {tries}; check its power and "
                f"cable, and that it is set to ID {servo_id if servo_id is not None else '?'} "
                f"at {self.baud} baud"
            )
        return f"{self._where}: {what} failed for {who} {tries}: {self._packets.getTxRxResult(result)}"

    def _check_status_error(self, servo_id: int, error_byte: int, what: str) -> None:
        if error_byte & ALERT_BIT:
            # A warning the servo keeps working through (WARNING_ONLY) raises the alert bit
            # on every reply too: said once by raise_on_hardware_errors, never a fault.
            errors = self.hardware_errors([servo_id])
            if not errors:
                raise ServoFaultError(self._fault_message(servo_id, ["hardware error"], 1), bus=self.name)
            self._raise_faults(errors)
            error_byte &= ~ALERT_BIT
        if error_byte:
            raise BusError(
                f"{self._where}: servo {servo_id} refused the {what}: "
                f"{self._packets.getRxPacketError(error_byte).removeprefix('[RxPacketError] ')}"
            )

    def _fault_message(self, servo_id: int, words: list[str], count: int, verb: str = "reports") -> str:
        advice = ERROR_ADVICE.get(words[0], "check the servo, then power-cycle the servos")
        more = f" ({count - 1} more servo(s) report errors)" if count > 1 else ""
        return (
            f"{self._where}: servo {servo_id} ({self.motors[servo_id].name}) {verb} "
            f"{', '.join(words)}; {advice}{more}"
        )


def _le_bytes(value: int, size: int) -> list[int]:
    return [(value >> (8 * k)) & 0xFF for k in range(size)]


def _id_text(ids: Sequence[int]) -> str:
    return ",".join(map(str, ids))


def _open_advice(exc: BaseException) -> str:
    """What to do about a port that would not open, by its errno (pyserial's
    SerialException carries the OSError's)."""
    code = getattr(exc, "errno", None)
    if code in (errno.EACCES, errno.EPERM):
        return ("this user may not open it: `sudo usermod -aG dialout $USER`, then log out and in again "
                "(or run `newgrp dialout`)")
    if code in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return "no such device: check the USB cable and the device path (`platform doctor` lists the ports)"
    return "check the USB cable, the device path (`platform doctor` lists ports) and your permissions (dialout group)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def wait_until(predicate, timeout_s: float, interval_s: float = 0.01) -> bool:
    """Poll `predicate` until it holds or `timeout_s` passes (for moves and tests)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return predicate()
