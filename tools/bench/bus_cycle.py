"""Bus cycle benchmark: 20 servos through the emulated chain, as a control loop sees it.

One cycle = SYNC_READ of present current + velocity + position (one 10-byte block from
every servo) + SYNC_WRITE of 20 goal positions, through the real dynamixel-sdk. The
emulator runs in its own process (as `platform emulate` would) and paces its replies at
the wire rate; servos are configured as the robot configures them (Return Delay 0).

Each row runs once with the SDK's stock PortHandler, which spins on a non-blocking read
while it waits, and once with `QuietPortHandler`, which sleeps in select() instead.
"CPU %" is the bus thread's CPU time over wall time (time.thread_time). A failed cycle
(every retry timed out) counts in every column, with its time, and is paced like the others;
"failed" says how many of the cycles failed.

    python tools/bench/bus_cycle.py                 # 1 and 4 Mbps, ~3 s a row
    python tools/bench/bus_cycle.py --seconds 5 --out .bench/bus_cycle.json
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import statistics
import time
from pathlib import Path

SERVOS = 20
MODEL = "XM430-W350"


def _serve(baud: int, conn, measure, stop) -> None:
    from shallowpi.hardware.dynamixel.emulator import build_chains

    chains = build_chains({"bench": (baud, dict.fromkeys(range(1, SERVOS + 1), MODEL))}, return_delay_time=0)
    conn.send(chains["bench"].path)
    measure.wait()
    cpu0 = time.process_time()  # the emulator's CPU over the measured cycles (all threads)
    stop.wait()
    conn.send(time.process_time() - cpu0)
    chains["bench"].stop()


def _stock_port(path: str, _latency_ms: float):
    from dynamixel_sdk import PortHandler

    return PortHandler(path)


def run_row(baud: int, handler: str, seconds: float, rate_hz: float | None) -> dict:
    from shallowpi.hardware.dynamixel.bus import DynamixelBus
    from shallowpi.hardware.dynamixel.motor_bus import BusError
    from shallowpi.hardware.dynamixel.port import QuietPortHandler

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    stop, measure = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(baud, child, measure, stop), daemon=True)
    proc.start()
    try:
        path = parent.recv()
        factory = QuietPortHandler if handler == "quiet" else _stock_port
        motors = dict.fromkeys(range(1, SERVOS + 1), MODEL)
        with DynamixelBus("bench", path, baud, motors, port_factory=factory) as bus:
            bus.set_torque(True)
            fields = ["present_current", "present_velocity", "present_position"]
            for _ in range(20):  # warm up: groups built, caches hot
                bus.read(fields)
            times, failed = [], 0
            measure.set()
            cpu0, wall0 = time.thread_time(), time.perf_counter()
            next_tick = wall0
            while time.perf_counter() - wall0 < seconds:
                start = time.perf_counter()
                try:
                    state = bus.read(fields)["present_position"]
                    bus.write("goal_position", {i: 2048 + (tick + 1) % 200 for i, tick in state.items()})
                except BusError:
                    failed += 1  # every retry timed out: the emulator was starved of CPU
                # A failed cycle is one too, and the slowest (its retries all waited out their
                # timeouts): left out, the percentiles, cycles/s and CPU a cycle showed a bus
                # better than the loop had.
                times.append(time.perf_counter() - start)
                if rate_hz:  # and the loop waits for its next tick after a failure as after a success
                    next_tick += 1.0 / rate_hz
                    time.sleep(max(0.0, next_tick - time.perf_counter()))
            cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
        stop.set()
        emulator_cpu = parent.recv() if parent.poll(5) else float("nan")
    finally:
        stop.set()
        proc.join(timeout=5)
    ms = sorted(t * 1000 for t in times)
    return {
        # cycles: every cycle measured, the failed ones (failed_cycles) among them
        "baud": baud, "handler": handler, "rate_hz": rate_hz, "cycles": len(ms), "failed_cycles": failed,
        "cycles_per_s": len(ms) / wall, "p50_ms": statistics.median(ms),
        "p99_ms": ms[min(len(ms) - 1, int(0.99 * len(ms)))],
        "cpu_percent": 100 * cpu / wall, "cpu_ms_per_cycle": 1000 * cpu / len(ms),
        "emulator_cpu_ms_per_cycle": 1000 * emulator_cpu / len(ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--bauds", type=int, nargs="+", default=[1_000_000, 4_000_000])
    parser.add_argument("--paced-hz", type=float, default=100.0, help="also run paced at this control rate")
    parser.add_argument("--out", type=Path, default=Path(".bench/bus_cycle.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # per-try retry warnings would flood the table
    load_before = os.getloadavg()[0]
    rows = []
    for baud in args.bauds:
        for rate in (None, args.paced_hz):
            for handler in ("stock", "quiet"):
                rows.append(run_row(baud, handler, args.seconds, rate))
    print(f"{SERVOS} x {MODEL}; machine load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after "
          f"on {os.cpu_count()} CPUs")
    print(f"{'baud':>9} {'pace':>7} {'handler':>7} {'cycles/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU %':>6} "
          f"{'CPU ms/cycle':>12} {'emulator ms':>11} {'failed':>6}")
    for r in rows:
        pace = f"{r['rate_hz']:.0f} Hz" if r["rate_hz"] else "max"
        print(f"{r['baud']:>9} {pace:>7} {r['handler']:>7} {r['cycles_per_s']:>9.0f} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['cpu_percent']:>6.0f} {r['cpu_ms_per_cycle']:>12.2f} "
              f"{r['emulator_cpu_ms_per_cycle']:>11.2f} {r['failed_cycles']:>6}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    summary = {"servos": SERVOS, "model": MODEL, "cpus": os.cpu_count(), "load_average_before": load_before, "rows": rows}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
