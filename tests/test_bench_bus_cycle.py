"""tools/bench/bus_cycle.py: a cycle whose retries all timed out is measured with the rest.

A failed cycle is the slowest a control loop has (every retry waits out its timeout); the
benchmark left it out of p50/p99, cycles/s and CPU a cycle, and went on without waiting for
the next tick. Its failures come from an emulator starved of CPU, which no test can make on
purpose: here the bus's SYNC_WRITE fails on purpose (the real bus, SDK and emulator behind
every other call), as the starved one did, after its retries' time.
"""

from __future__ import annotations

import time

import pytest

from bench_scripts import BENCH, load_bench
from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.motor_bus import BusError


def _failing_writes(monkeypatch: pytest.MonkeyPatch, every: int, takes_s: float) -> list[float]:
    """Make every `every`-th goal write fail after `takes_s` s, as one whose retries all timed
    out; returns the list of the writes' start times (one a cycle), filled as they run."""
    writes: list[float] = []
    write = DynamixelBus.write

    def failing(self: DynamixelBus, field: str, values: dict[int, int]) -> None:
        writes.append(time.perf_counter())
        if len(writes) % every == 0:
            time.sleep(takes_s)
            raise BusError(f"bus '{self.name}': no reply after every retry (made to fail by the test)")
        write(self, field, values)

    monkeypatch.setattr(DynamixelBus, "write", failing)
    monkeypatch.syspath_prepend(str(BENCH))  # the emulator's spawned process imports bus_cycle
    return writes


def test_a_failed_cycle_counts_in_the_percentiles_and_the_rate(monkeypatch):
    writes = _failing_writes(monkeypatch, every=3, takes_s=0.05)
    row = load_bench("bus_cycle").run_row(4_000_000, "quiet", 0.6, None)
    assert row["failed_cycles"] == len(writes) // 3 > 0
    assert row["cycles"] == len(writes), row  # the failed cycles among them
    assert row["p99_ms"] >= 50.0, row  # the slowest cycles are the failed ones
    assert row["cycles_per_s"] == pytest.approx(len(writes) / 0.6, rel=0.2), row


def test_a_paced_loop_waits_for_its_next_tick_after_a_failed_cycle(monkeypatch):
    writes = _failing_writes(monkeypatch, every=2, takes_s=0.0)
    row = load_bench("bus_cycle").run_row(4_000_000, "quiet", 0.6, 20.0)
    # 20 Hz for 0.6 s: 12 cycles, the last one starting before 0.6 s; a failed cycle went
    # straight on to the next, twice as many.
    assert len(writes) <= 13 and row["cycles"] == len(writes), (len(writes), row)
    assert row["cycles_per_s"] == pytest.approx(20.0, rel=0.15), row
