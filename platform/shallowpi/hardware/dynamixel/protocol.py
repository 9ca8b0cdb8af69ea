"""Protocol 2.0 framing, written from the spec for the emulator (the driver uses the SDK's,
and this deframer only to describe a rejected reply).

    FF FF FD 00 | ID | LEN_L LEN_H | INSTR | PARAMS... | CRC_L CRC_H

LEN counts INSTR + PARAMS + CRC after byte stuffing; CRC-16 (polynomial 0x8005, no
reflection, init 0) covers everything from the header to the last parameter. Stuffing:
inside INSTR..PARAMS, every FF FF FD gets an extra FD so the header cannot appear.
Status packets use INSTR = 0x55 followed by an error byte.
https://emanual.robotis.com/docs/en/dxl/protocol2/
"""

from __future__ import annotations

from dataclasses import dataclass

HEADER = b"\xff\xff\xfd\x00"
BROADCAST_ID = 0xFE

PING = 0x01
READ = 0x02
WRITE = 0x03
REG_WRITE = 0x04
ACTION = 0x05
FACTORY_RESET = 0x06
REBOOT = 0x08
CLEAR = 0x10
STATUS = 0x55
SYNC_READ = 0x82
SYNC_WRITE = 0x83
FAST_SYNC_READ = 0x8A
BULK_READ = 0x92
BULK_WRITE = 0x93
FAST_BULK_READ = 0x9A

# Status packet error byte (low 7 bits; bit 7 is the hardware alert).
ERR_RESULT_FAIL = 0x01
ERR_INSTRUCTION = 0x02
ERR_CRC = 0x03
ERR_DATA_RANGE = 0x04
ERR_DATA_LENGTH = 0x05
ERR_DATA_LIMIT = 0x06
ERR_ACCESS = 0x07


def _crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray) -> int:
    """Protocol 2.0's CRC-16 of `data` (header through the last parameter), as an int 0..0xFFFF.

    Polynomial 0x8005, init 0, not reflected, no final XOR (the catalogue's CRC-16/UMTS, also
    called BUYPASS: crc16(b"123456789") == 0xFEE8). Table-driven, as the e-manual's
    https://emanual.robotis.com/docs/en/dxl/crc/ computes it. On the wire little-endian.
    """
    crc = 0
    for b in data:
        crc = ((crc << 8) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]) & 0xFFFF
    return crc


def stuff(body: bytes) -> bytes:
    """Insert FD after every FF FF FD in INSTR..PARAMS (the 4 header bytes precede it)."""
    if b"\xff\xff\xfd" not in body:
        return bytes(body)  # the common case, without a Python loop over every byte
    out = bytearray()
    for b in body:
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            out.append(0xFD)
    return bytes(out)


def unstuff(body: bytes) -> bytes:
    """Undo `stuff`: drop the FD that follows each FF FF FD in a received INSTR..PARAMS."""
    if b"\xff\xff\xfd\xfd" not in body:
        return bytes(body)
    out = bytearray()
    i = 0
    while i < len(body):
        b = body[i]
        out.append(b)
        if b == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF and i + 1 < len(body) and body[i + 1] == 0xFD:
            i += 1  # drop the stuffed FD
        i += 1
    return bytes(out)


def encode(servo_id: int, instruction: int, params: bytes = b"", *, corrupt_crc: bool = False) -> bytes:
    """One whole packet: header, ID, LEN, stuffed INSTR + params, CRC.

    `params` are raw bytes (multi-byte values little-endian, as the spec has them);
    `corrupt_crc` flips every CRC bit, for the emulator's fault injection. Example, the
    e-manual's PING of ID 1: encode(1, PING) == FF FF FD 00 01 03 00 01 19 4E.
    """
    body = stuff(bytes([instruction]) + params)
    length = len(body) + 2
    frame = HEADER + bytes([servo_id, length & 0xFF, length >> 8]) + body
    crc = crc16(frame) ^ (0xFFFF if corrupt_crc else 0)
    return frame + bytes([crc & 0xFF, crc >> 8])


def status(servo_id: int, error: int, params: bytes = b"", *, corrupt_crc: bool = False) -> bytes:
    """A status packet (INSTR 0x55): `error` is the error byte (ERR_* | 0x80 for an alert)."""
    return encode(servo_id, STATUS, bytes([error]) + params, corrupt_crc=corrupt_crc)


@dataclass(frozen=True)
class Packet:
    """One deframed packet; `params` are unstuffed and exclude INSTR (for a status packet
    they start with the error byte). A bad CRC is reported in `crc_ok`, not raised."""

    servo_id: int
    instruction: int
    params: bytes
    crc_ok: bool
    wire_bytes: int  # length on the wire, for timing


class Deframer:
    """Feed bytes, get whole packets; junk before a header is skipped as a servo would."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Packet]:
        """Append `data`; return the packets it completed (possibly none), oldest first.

        A partial packet stays buffered for the next call. Never raises on malformed input.
        """
        self._buf += data
        packets = []
        while True:
            start = self._buf.find(HEADER)
            if start < 0:
                del self._buf[: max(0, len(self._buf) - 3)]
                return packets
            del self._buf[:start]
            if len(self._buf) < 7:
                return packets
            length = self._buf[5] | (self._buf[6] << 8)
            total = 7 + length
            if len(self._buf) < total:
                return packets
            frame = bytes(self._buf[:total])
            del self._buf[:total]
            crc_ok = crc16(frame[:-2]) == (frame[-2] | (frame[-1] << 8))
            body = unstuff(frame[7:-2])
            packets.append(Packet(frame[4], body[0] if body else 0, body[1:], crc_ok, total))
