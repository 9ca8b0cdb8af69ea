"""Control tables and Protocol 2.0 framing, checked against dynamixel-sdk's own code."""

from __future__ import annotations

import random

import pytest
from dynamixel_sdk import PacketHandler

from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel import protocol as p
from shallowpi.hardware.dynamixel.calibration import (
    JointConverter,
    MotorCalibration,
    default_calibration,
)
from shallowpi.hardware.dynamixel.control_table import (
    MODELS,
    OperatingMode,
    model_by_name,
    span,
)


def test_x_and_y_series_keep_fields_at_different_addresses():
    x, y = model_by_name("XM430-W350"), model_by_name("ym080-230-r099-rh")
    assert x.field("goal_position").address == 116
    assert y.field("goal_position").address == 532
    assert (x.ticks_per_turn, y.ticks_per_turn) == (4096, 524_288)
    # current, velocity and position lie in one block on both: one transaction reads all
    assert span(x, ["present_current", "present_velocity", "present_position"]) == (126, 10)
    assert span(y, ["present_current", "present_velocity", "present_position"]) == (546, 10)
    assert {m.name for m in MODELS.values()} >= {
        "XL330-M077", "XL330-M288", "XL430-W250", "XM430-W350", "XM540-W270", "YM080-230-R099-RH"}


def test_hardware_errors_decode_to_words():
    x, y = model_by_name("XL430-W250"), model_by_name("YM080-230-R099-RH")
    assert x.decode_errors(0x24) == ["overheating", "overload"]
    assert x.decode_errors(0x19) == ["input voltage error", "motor encoder error", "electrical shock"]
    assert y.decode_errors(5) == ["overload"]
    assert y.decode_errors(0) == []


def test_unknown_model_and_mode_name_the_choices():
    with pytest.raises(PlatformError, match=r"known: .*XM430-W350"):
        model_by_name("XM999")
    with pytest.raises(PlatformError, match=r"current_based_position"):
        OperatingMode.parse("torque")
    assert OperatingMode.parse("current-based-position") is OperatingMode.CURRENT_BASED_POSITION
    assert OperatingMode.CURRENT_BASED_POSITION not in model_by_name("XL430-W250").operating_modes


def test_signed_fields_round_trip():
    fld = model_by_name("YM080-230-R099-RH").field("present_position")
    for value in (-262_144, -1, 0, 1, 262_144):
        assert fld.from_unsigned(fld.to_unsigned(value)) == value


def test_crc_matches_the_sdk():
    sdk = PacketHandler(2.0)
    rng = random.Random(0)
    for n in (1, 7, 64, 300):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert p.crc16(data) == sdk.updateCRC(0, list(data), n)


def test_stuffing_matches_the_sdk_and_round_trips():
    sdk = PacketHandler(2.0)
    params = bytes([0x74, 0x00, 0xFF, 0xFF, 0xFD, 0x00, 0xFF, 0xFF, 0xFD])
    ours = p.encode(1, p.WRITE, params)
    # The SDK stuffs a packet in place: header, id, length, body, CRC slots.
    length = len(params) + 3
    packet = [0xFF, 0xFF, 0xFD, 0x00, 1, length & 0xFF, length >> 8, p.WRITE, *params, 0, 0]
    stuffed = sdk.addStuffing(packet)
    crc = sdk.updateCRC(0, stuffed, len(stuffed) - 2)
    assert ours == bytes(stuffed[:-2]) + bytes([crc & 0xFF, crc >> 8])
    (decoded,) = p.Deframer().feed(b"\x00\x17junk" + ours)
    assert (decoded.servo_id, decoded.instruction, decoded.params, decoded.crc_ok) == (1, p.WRITE, params, True)


def test_deframer_flags_a_bad_crc_and_waits_for_partial_packets():
    frame = p.encode(3, p.PING, corrupt_crc=True)
    framer = p.Deframer()
    assert framer.feed(frame[:5]) == []
    (packet,) = framer.feed(frame[5:])
    assert not packet.crc_ok


def test_joint_conversion_round_trips_for_every_kind():
    x = model_by_name("XM430-W350")
    revolute = JointConverter(x, MotorCalibration(2000, -1, 0, 4095))
    assert revolute.to_joint(2000) == 0.0
    assert revolute.to_joint(2000 - 1024) == pytest.approx(3.14159 / 2, abs=1e-3)
    assert revolute.to_joint(revolute.to_ticks(0.7)) == pytest.approx(0.7, abs=x.radians_per_tick)
    gripper = JointConverter(x, MotorCalibration(1500, 1, 1500, 2500, span_ticks=1000), "gripper")
    assert gripper.to_ticks(0.0) == 1500 and gripper.to_ticks(1.0) == 2500
    y = model_by_name("YM080-230-R099-RH")
    lift = JointConverter(y, default_calibration(y, 1, "linear"), "linear", metres_per_rad=0.15)
    assert lift.to_joint(lift.to_ticks(0.3)) == pytest.approx(0.3, abs=1e-5)
