"""Accept only the status packet that was asked for; name what was wrong with any other.

dynamixel-sdk checks a reply's header and CRC and then trusts its shape:
- a status packet with fewer data bytes than requested reaches GroupSyncRead/BulkRead as
  a short list, and `getData` raises IndexError (a PING reply, the same in `ping`);
- one with more is cut to the requested length without a word (the bytes may answer
  another request);
- one from another ID is skipped, so the wait ends in a timeout that blames silence;
- a packet that is not a status packet (instruction 0x55) is dropped byte by byte.

`StrictPacketHandler` turns the first three into COMM_RX_CORRUPT and says why in
`last_malformed`; `describe_reply` finds the fourth in the bytes the port received
(QuietPortHandler keeps them for the exchange in flight). `DynamixelBus` retries a
corrupt exchange and then raises an error naming the bus, the servo and what to check.
"""

from __future__ import annotations

from typing import Any

from dynamixel_sdk import COMM_RX_CORRUPT, COMM_SUCCESS, Protocol2PacketHandler
from dynamixel_sdk.robotis_def import (
    BROADCAST_ID,
    INST_ACTION,
    INST_BULK_READ,
    INST_PING,
    INST_READ,
    INST_STATUS,
    INST_SYNC_READ,
)

from shallowpi.hardware.dynamixel import protocol
from shallowpi.hardware.dynamixel.control_table import ALERT_BIT

_ID, _LENGTH_L, _LENGTH_H, _INSTRUCTION, _ERROR = 4, 5, 6, 7, 8
_MIN_STATUS = 11  # header 4, ID, length 2, instruction, error, CRC 2
_PING_DATA = 3  # model number (2) and firmware version (1)


class StrictPacketHandler(Protocol2PacketHandler):
    """Protocol 2.0 as dynamixel-sdk speaks it, plus the shape checks the SDK leaves out."""

    def __init__(self) -> None:
        super().__init__()
        self.last_malformed = ""  # what was wrong with the last rejected reply; "" if none
        # Servos whose reply within a sync or bulk read raised the alert bit (a hardware
        # error): the SDK's group reads drop each reply's error byte, which says it every tick.
        self.alerts: set[int] = set()

    def readRx(self, port: Any, dxl_id: int, length: int) -> tuple[list[int], int, int]:
        """One servo's reply within a sync or bulk read: exactly `length` data bytes from `dxl_id`."""
        packet, result = self.rxPacket(port, False)
        if result != COMM_SUCCESS:
            return [], result, 0
        problem = self._check(packet, dxl_id, length)
        if problem:
            self.last_malformed = problem
            return [], COMM_RX_CORRUPT, 0
        if packet[_ERROR] & ALERT_BIT:
            self.alerts.add(dxl_id)
        return list(packet[_ERROR + 1: _ERROR + 1 + length]), COMM_SUCCESS, packet[_ERROR]

    def txRxPacket(self, port: Any, txpacket: list[int]) -> tuple[Any, int, int]:
        """One instruction to one servo and its status packet (READ, PING, WRITE, REBOOT, ...)."""
        target, instruction = txpacket[_ID], txpacket[_INSTRUCTION]
        if target == BROADCAST_ID or instruction in (INST_ACTION, INST_SYNC_READ, INST_BULK_READ):
            return super().txRxPacket(port, txpacket)  # no single status packet to check
        # Read before txPacket, which byte-stuffs txpacket in place.
        expected = 0  # WRITE, REBOOT, ...: the error byte alone
        if instruction == INST_READ:
            expected = txpacket[_ERROR + 2] | (txpacket[_ERROR + 3] << 8)
        elif instruction == INST_PING:
            expected = _PING_DATA
        result = self.txPacket(port, txpacket)
        if result != COMM_SUCCESS:
            return None, result, 0
        port.setPacketTimeout(expected + _MIN_STATUS)
        packet, result = self.rxPacket(port, False)
        if result != COMM_SUCCESS:
            return packet, result, 0
        problem = self._check(packet, target, expected)
        if problem:
            self.last_malformed = problem
            return packet, COMM_RX_CORRUPT, 0
        return packet, COMM_SUCCESS, packet[_ERROR]

    @staticmethod
    def _check(packet: list[int], dxl_id: int, length: int) -> str:
        if packet[_ID] != dxl_id:
            return f"a reply from ID {packet[_ID]} where ID {dxl_id} was asked"
        # LENGTH counts instruction, error, data and CRC (after unstuffing)
        data = (packet[_LENGTH_L] | (packet[_LENGTH_H] << 8)) - 4
        if data != length:
            return f"a status packet with {max(data, 0)} data byte(s) where {length} were asked"
        return ""


def describe_reply(received: bytes) -> str:
    """What in these bytes is not a status packet (for an error message); "" if nothing is.

    A CRC-valid packet whose instruction is not STATUS is a request echoed back (an
    adapter without echo suppression) or another controller talking on the bus."""
    for packet in protocol.Deframer().feed(received):
        if packet.crc_ok and packet.instruction != INST_STATUS:
            return (f"a packet with instruction 0x{packet.instruction:02X} from ID {packet.servo_id} "
                    f"where a status packet (0x{INST_STATUS:02X}) was expected")
    return ""
