"""A dynamixel-sdk PortHandler that waits for replies in the kernel instead of spinning.

The SDK opens the port non-blocking (pyserial `timeout=0`) and polls `readPort` in a tight
loop until the status packet is complete or the packet timeout passes: one core at 100 %
for as long as the bus thread waits (measured in tools/bench/bus_cycle.py). Here an empty
read blocks in `select()` until a byte arrives or the SDK's own deadline comes, so the
wait costs nothing and the reply is seen within microseconds of its arrival.

More things the stock handler does not do:
- the packet timeout's USB latency allowance is a parameter (the SDK hard-codes 16 ms,
  the FTDI default; a U2D2 set to 1 ms, or a pty, needs far less), and the timeout counts
  what that slack hid: the request's own time on the wire and each reply's Return Delay
  Time (factory 0.5 ms a servo: eight servos' sync read overran a 1 ms adapter's timeout);
- replies are timed on the monotonic clock (the SDK's wall clock, stepped back by NTP on
  a board without a clock battery, stretched one wait by the whole step);
- the port is locked with `flock`, so a second process gets "port busy" instead of two
  programs interleaving packets on one bus;
- the bytes of the exchange in flight are kept (`received`, cleared when the next
  instruction goes out), so a rejected reply can be described in the error message;
- `drain()` lets the rest of a failed exchange arrive and drops it, so stale replies
  (the servos after the one that failed still answer) do not answer the retry.
"""

from __future__ import annotations

import fcntl
import os
import select
import time
from pathlib import Path

from dynamixel_sdk import PortHandler

USB_SERIAL_SYSFS = Path("/sys/bus/usb-serial/devices")
SERIAL_BY_ID = Path("/dev/serial/by-id")  # udev's links, one per USB serial adapter, named by its serial number
DEFAULT_LATENCY_TIMER_MS = 16.0  # an FTDI adapter's (the U2D2's) driver default, and the SDK's
# Return Delay Time's largest value, 254 x 2 us (ROBOTIS e-manual, X and Y series): the pause
# a servo may take before its reply; 250 (0.5 ms) from the factory, 0 once connect sets it.
RETURN_DELAY_MAX_MS = 0.508
# Protocol 2.0 instructions whose one packet asks several servos to reply in turn.
_SYNC_READS = (0x82, 0x8A)  # SYNC_READ, FAST_SYNC_READ: one parameter byte a servo ID
_BULK_READS = (0x92, 0x9A)  # BULK_READ, FAST_BULK_READ: five parameter bytes a servo


def latency_timer_path(port: str, sysfs: Path | None = None) -> Path:
    """Where the kernel shows the latency timer of the USB serial adapter behind `port`."""
    return (sysfs or USB_SERIAL_SYSFS) / Path(os.path.realpath(port)).name / "latency_timer"


def adapter_id(port: str, by_id: Path | None = None) -> str | None:
    """The USB serial adapter behind `port` as udev names it in /dev/serial/by-id (its
    vendor, product and serial number, e.g. usb-FTDI_USB__-__Serial_Converter_FT6Z5XDE-if00-port0),
    whatever name the port is given (/dev/ttyUSB0, a udev link); None for a port that is
    no such adapter (a pseudo-terminal, an emulator) or a machine without udev's links.
    /dev/ttyUSBn numbers adapters in the order USB found them: two arms' adapters can swap
    numbers at a reboot, and this is what tells them apart."""
    folder = by_id or SERIAL_BY_ID
    device = os.path.realpath(port)
    try:
        links = sorted(folder.iterdir())
    except OSError:
        return None
    return next((link.name for link in links if os.path.realpath(link) == device), None)


def usb_latency_timer_ms(port: str, sysfs: Path | None = None) -> int | None:
    """The latency timer [ms] of the USB serial adapter behind `port` (an FTDI U2D2: it holds
    each short reply back that long), as the kernel shows it; None for a port that is no
    such adapter (a pseudo-terminal, an emulator) or whose timer cannot be read."""
    try:
        return int(latency_timer_path(port, sysfs).read_text().strip())
    except (OSError, ValueError):
        return None


class PortBusyError(OSError):
    """Another process holds the port's lock."""


class QuietPortHandler(PortHandler):
    """dynamixel-sdk's PortHandler with a blocking wait, a lock file and a reply log.

    A drop-in for the SDK's handler (see the module docstring); `latency_timer_ms` is the
    USB latency allowance in the packet timeout. Like the SDK's, it is not thread-safe.
    """

    def __init__(self, port_name: str, latency_timer_ms: float = 16.0) -> None:
        super().__init__(port_name)
        self.latency_timer_ms = latency_timer_ms
        self.received = bytearray()
        self._sent_bytes, self._replies = 0, 1  # of the last instruction packet written

    def setupPort(self, cflag_baud: int) -> bool:
        """The SDK's setup, then an exclusive non-blocking `flock` on the port.

        Raises PortBusyError (the port closed again) when another process holds the lock.
        """
        ok = super().setupPort(cflag_baud)
        try:
            fcntl.flock(self.ser.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.ser.close()
            self.is_open = False
            raise PortBusyError(f"{self.port_name} is locked by another process") from None
        return ok

    def getCFlagBaud(self, baudrate: int) -> int:
        """The SDK's list of rates, and Dynamixel's 4.5 Mbps (Baud Rate code 7), which it
        lacks: pyserial sets any rate the adapter takes (an FTDI U2D2 runs 4.5 Mbps)."""
        return baudrate if baudrate == 4_500_000 else super().getCFlagBaud(baudrate)

    def getCurrentTime(self) -> float:
        """Now, in ms, on the monotonic clock (the SDK's reads the wall clock)."""
        return time.monotonic() * 1000.0

    def writePort(self, packet: list[int] | bytes) -> int:
        """Write an instruction packet, noting its length and how many replies it asks for."""
        self._sent_bytes, self._replies = len(packet), _replies_asked(packet)
        return super().writePort(packet)

    def setPacketTimeout(self, packet_length: int) -> None:
        """Deadline (ms) for `packet_length` bytes of replies to the packet just written: the
        wire time of both, each reply's largest Return Delay Time, 2 x the USB latency and 2 ms.
        The SDK's formula counts only the replies' bytes, and its 16 ms latency hid the rest."""
        self.packet_start_time = self.getCurrentTime()
        self.packet_timeout = (
            self.tx_time_per_byte * (packet_length + self._sent_bytes)
            + RETURN_DELAY_MAX_MS * self._replies + self.latency_timer_ms * 2.0 + 2.0
        )

    def clearPort(self) -> None:
        """The SDK's flush, and `received` cleared: a new exchange starts."""
        super().clearPort()  # the SDK calls this before every instruction packet
        self.received.clear()

    def readPort(self, length: int) -> bytes:
        """Up to `length` bytes; when none are waiting, blocks in select() until one arrives
        or the packet deadline passes (then may return b"", as the SDK expects)."""
        data = self.ser.read(length)
        if not data:
            remaining_ms = self.packet_timeout - self.getTimeSinceStart()
            if remaining_ms > 0:
                select.select([self.ser.fileno()], [], [], remaining_ms / 1000.0)
                data = self.ser.read(length)
        self.received += data
        return data

    def drain(self, quiet_s: float, limit_s: float = 0.2) -> int:
        """Read and drop bytes until none came for `quiet_s` (at most `limit_s` in all);
        returns how many were dropped (they are kept in `received`)."""
        deadline = time.monotonic() + limit_s
        dropped = 0
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.ser.fileno()], [], [], quiet_s)
            if not ready:
                break
            data = self.ser.read(4096)
            if not data:
                break
            self.received += data
            dropped += len(data)
        return dropped


def _replies_asked(packet: list[int] | bytes) -> int:
    """How many status packets a protocol 2.0 instruction packet asks for: one for each
    servo a sync or bulk read names, one otherwise (a broadcast ping sets its own timeout).
    Byte stuffing can only lengthen a packet: the count never falls short."""
    if len(packet) < 8:
        return 1
    length = packet[5] | (packet[6] << 8)  # instruction, parameters and CRC
    if packet[7] in _SYNC_READS:
        return max(1, length - 7)  # 4 parameter bytes of address and size, then an ID each
    if packet[7] in _BULK_READS:
        return max(1, (length - 3) // 5)
    return 1
