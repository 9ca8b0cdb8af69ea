"""Malformed servo replies (valid CRC, wrong shape) are corrupt packets with a name: the
emulator sends each kind to sync reads, bulk reads, single reads and pings; DynamixelBus
on the real dynamixel-sdk retries, then raises one line naming the bus, the servo, what
was wrong and what to check (never IndexError from the SDK), and recovers once the
servo answers properly again."""

from __future__ import annotations

import logging
import re

import pytest

from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.emulator import MALFORMED, EmulatedServo, ServoChain
from shallowpi.hardware.dynamixel.motor_bus import BusError

MIXED = {1: "XL430-W250", 2: "XM430-W350", 3: "YM080-230-R099-RH"}
X_ONLY = {1: "XL430-W250", 2: "XM430-W350"}
FIELDS = ["present_current", "present_velocity", "present_position"]
# A loaded 2-core CI machine can hold the emulator thread off the CPU for tens of ms: the
# good replies these tests also need must not time out (malformed ones fail at once anyway).
LOADED = 50.0

WHAT = {
    "short": r"a status packet with \d+ data byte\(s\) where \d+ were asked",
    "empty": r"a status packet with 0 data byte\(s\) where [1-9]\d* were asked",
    "long": r"a status packet with \d+ data byte\(s\) where \d+ were asked",
    "wrong-id": r"a reply from ID \d+ where ID 2 was asked",
    "wrong-instruction": r"a packet with instruction 0x02 from ID 2 where a status packet \(0x55\) was expected",
}
CHECK = {
    "short": "nothing else drives the bus", "empty": "nothing else drives the bus", "long": "nothing else drives the bus",
    "wrong-id": "no two servos share an ID", "wrong-instruction": "adapter echoing requests",
}


@pytest.fixture
def chain():
    servos = [EmulatedServo(i, m) for i, m in MIXED.items()]
    for s in servos:
        s.set("return_delay_time", 0)
    with ServoChain("test", servos, baud=1_000_000) as c:
        yield c


def reads(bus: DynamixelBus) -> dict:
    return {
        "sync read": lambda: bus.read(FIELDS, [1, 2]),  # X-series only: one SYNC_READ
        "bulk read": lambda: bus.read(FIELDS),  # X and Y: one BULK_READ
        "read": lambda: bus.read_one(2, "present_position"),  # one READ instruction
        "ping": lambda: bus.verify(),
    }


@pytest.mark.parametrize("kind", MALFORMED)
@pytest.mark.parametrize("transaction", ["sync read", "bulk read", "read", "ping"])
def test_each_malformed_reply_is_retried_then_named(chain, caplog, kind, transaction):
    with DynamixelBus("test", chain.path, 1_000_000, MIXED, retries=2, latency_timer_ms=LOADED) as bus:
        good = bus.read(FIELDS)
        chain.malform(2, kind)  # the middle servo: the one after it still answers
        caplog.set_level(logging.WARNING)
        with pytest.raises(BusError) as err:
            reads(bus)[transaction]()
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"bus 'test' ({chain.path}): servo 2 (XM430-W350) sent malformed replies to the ")
        assert transaction in message and "after 2 tries" in message
        assert re.search(WHAT[kind], message), message
        assert CHECK[kind] in message
        tries = [r for r in caplog.records if "failed (try" in r.getMessage()]
        assert len(tries) == 2
        chain.malform(2, None)
        again = bus.read(FIELDS)  # no stale reply answers the next exchange
        assert set(again["present_position"]) == {1, 2, 3}
        assert again["present_position"] == good["present_position"]
        assert bus.read_one(2, "present_position") == good["present_position"][2]


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_reply_from_the_last_or_only_servo_is_named_too(chain, kind):
    with DynamixelBus("test", chain.path, 1_000_000, X_ONLY, retries=1, latency_timer_ms=LOADED) as bus:
        chain.malform(2, kind)
        with pytest.raises(BusError, match=r"servo 2 \(XM430-W350\) sent (malformed|corrupted) replies to the sync read"):
            bus.read(["present_position"], [1, 2])
        with pytest.raises(BusError, match=r"servo 2 \(XM430-W350\) sent (malformed|corrupted) replies to the sync read"):
            bus.read(["present_position"], [2])
