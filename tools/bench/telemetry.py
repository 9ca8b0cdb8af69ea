"""Telemetry and dashboard cost, seen from the control loop.

    python tools/bench/telemetry.py [--seconds 10] [--hz 50] [--out .bench/telemetry.json]

Scenarios, each a loop thread ticking at --hz and publishing a humanoid-sized status
(11 joints, 3 cameras, a 48x36 thumbnail refreshed twice a second):

  no subscribers            the publisher alone
  3 readers + 1 stuck       3 subscriber processes reading, 1 subscriber process frozen
                            (SIGSTOP) after its first status: it never reads again
  dashboard in a child      the Textual dashboard (headless) in its own process, over a
    process                 TelemetrySubscriber, as `platform monitor` runs it
  embedded dashboard        the dashboard in this process (main thread, headless), reading
                            publisher.local_feed() as an in-process `platform record` would
  ..., switchinterval 1 ms  the same with sys.setswitchinterval(0.001) (default 5 ms)

The CPU column is this process only (the recorder's share; a child dashboard not included).

Columns: publish() cost (p50/p99/max, µs), loop period p50/p99/max (ms) and overruns
(ticks later than 1.5 periods), the rate and age of statuses the readers received, and
the process's CPU share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "platform"))

from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import (
    CameraStatus,
    LoopStatus,
    RecorderState,
    RecorderStatus,
    WriterStatus,
)
from shallowpi.telemetry.thumbnail import thumbnail_from_image

ROOT = Path(__file__).resolve().parents[2]
JOINTS = [f"joint_{i}" for i in range(11)]

READER = """
import json, sys, time
from shallowpi.telemetry.subscriber import TelemetrySubscriber
sub = TelemetrySubscriber(sys.argv[1])
count, ages, start = 0, [], time.time()
for status in sub:
    count += 1
    ages.append(time.time() - float(status.message))
print(json.dumps({"count": count, "seconds": time.time() - start, "ages": ages}), flush=True)
"""

STUCK = """
import sys, zmq
sub = zmq.Context().socket(zmq.SUB)
sub.setsockopt(zmq.SUBSCRIBE, b"")
sub.connect("ipc://" + sys.argv[1])
sub.recv()
print("got one", flush=True)
sub.recv()  # frozen before it gets here
"""

MONITOR = """
import asyncio, sys
from shallowpi.telemetry.subscriber import TelemetrySubscriber
from shallowpi.tui.recorder_dashboard import RecorderDashboard
sub = TelemetrySubscriber(sys.argv[1], control=True)
app = RecorderDashboard(sub, sub.send, monitor=True, exit_when_source_ends=True)
async def show():
    async with app.run_test(size=(150, 44)):
        while app.is_running:
            await asyncio.sleep(0.05)
asyncio.run(show())
"""


def make_status(tick: int, thumbnail) -> RecorderStatus:
    t = tick / 50
    return RecorderStatus(
        state=RecorderState.RECORDING, robot="humanoid", dataset="bench", task="bench",
        episode=1, episodes_total=10, episode_time_s=t, episode_time_limit_s=60.0,
        joint_names=JOINTS, leader=[math.sin(t + i) for i in range(11)],
        follower=[math.sin(t + i) - 0.01 for i in range(11)],
        cameras={r: CameraStatus(fps=30.0, dropped=0, age_ms=10.0) for r in ("head", "wrist_left", "wrist_right")},
        loop=LoopStatus(target_hz=50.0, period_p50_ms=20.0, period_p99_ms=21.0),
        writer=WriterStatus(queue_depth=tick % 90, queue_capacity=90, high_water=80, mb_per_s=40.0),
        thumbnails={"head": thumbnail},
        message=repr(time.time()),  # the readers measure a status's age from this
    )


def control_loop(publisher: TelemetryPublisher, hz: float, seconds: float, result: dict) -> None:
    period = 1.0 / hz
    frame = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    thumbnail = thumbnail_from_image(frame, width=48)
    publish_s, periods = [], []
    start = last = next_tick = time.perf_counter()
    tick = 0
    while time.perf_counter() - start < seconds:
        tick += 1
        if tick % max(1, round(hz / 2)) == 0:  # thumbnails at ~2 Hz, as the recorder should
            thumbnail = thumbnail_from_image(np.roll(frame, tick, axis=1), width=48)
        status = make_status(tick, thumbnail)
        t0 = time.perf_counter()
        publisher.publish(status)
        publish_s.append(time.perf_counter() - t0)
        publisher.commands()
        next_tick += period
        time.sleep(max(0.0, next_tick - time.perf_counter()))
        now = time.perf_counter()
        periods.append(now - last)
        last = now
    result.update(publish_s=publish_s, periods=periods)


def percentiles(values: list[float], scale: float) -> tuple[float, float, float]:
    if not values:
        return (math.nan,) * 3
    array = np.asarray(values) * scale
    return float(np.percentile(array, 50)), float(np.percentile(array, 99)), float(array.max())


def run_scenario(name: str, hz: float, seconds: float, readers: int = 0, stuck: bool = False,
                 dashboard: str = "", switch_interval_s: float | None = None) -> dict:
    """dashboard: "" none, "embedded" (this process, main thread), "process" (a monitor child)."""
    address = str(Path(tempfile.mkdtemp(prefix="shallowpi-bench-")) / "telemetry.sock")
    result: dict = {}
    env_path = str(ROOT / "platform")
    env = {"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}
    with TelemetryPublisher(address) as publisher:
        children = [subprocess.Popen([sys.executable, "-c", READER, address], stdout=subprocess.PIPE,
                                     text=True, env=env)
                    for _ in range(readers)]
        blocker = None
        if stuck:
            blocker = subprocess.Popen([sys.executable, "-c", STUCK, publisher.status_address],
                                       stdout=subprocess.PIPE, text=True, env=env)
        deadline = time.monotonic() + 10
        while publisher.subscriber_count < readers + int(stuck) and time.monotonic() < deadline:
            time.sleep(0.01)
        monitor = None
        if dashboard == "process":
            monitor = subprocess.Popen([sys.executable, "-c", MONITOR, address],
                                       env=env)
            while publisher.subscriber_count < readers + int(stuck) + 1 and time.monotonic() < deadline + 10:
                time.sleep(0.01)
        if blocker is not None:
            publisher.publish(make_status(0, thumbnail_from_image(np.zeros((48, 64, 3), np.uint8))))
            blocker.stdout.readline()
            os.kill(blocker.pid, signal.SIGSTOP)  # connected, subscribed, and now never reads
        default_interval = sys.getswitchinterval()
        if switch_interval_s:
            sys.setswitchinterval(switch_interval_s)
        cpu0, wall0 = time.process_time(), time.monotonic()
        loop = threading.Thread(target=control_loop, args=(publisher, hz, seconds, result))
        loop.start()
        if dashboard == "embedded":
            from shallowpi.tui.recorder_dashboard import RecorderDashboard

            app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)

            async def show() -> None:
                async with app.run_test(size=(150, 44)):
                    while loop.is_alive():
                        await asyncio.sleep(0.05)

            asyncio.run(show())
        loop.join()
        cpu_share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
        sys.setswitchinterval(default_interval)
        if blocker is not None:
            os.kill(blocker.pid, signal.SIGKILL)
            blocker.wait()
    if monitor is not None:
        monitor.wait(timeout=30)
    reports = [json.loads(child.communicate(timeout=30)[0]) for child in children]
    publish = percentiles(result["publish_s"], 1e6)
    period = percentiles(result["periods"], 1e3)
    ages = [a for r in reports for a in r["ages"]]
    row = {
        "scenario": name, "hz": hz, "seconds": seconds,
        "publish_us_p50": publish[0], "publish_us_p99": publish[1], "publish_us_max": publish[2],
        "period_ms_p50": period[0], "period_ms_p99": period[1], "period_ms_max": period[2],
        "overruns": int(sum(p > 1.5 / hz for p in result["periods"])),
        "reader_hz": float(np.mean([r["count"] / r["seconds"] for r in reports])) if reports else math.nan,
        "status_age_ms_p50": percentiles(ages, 1e3)[0], "status_age_ms_p99": percentiles(ages, 1e3)[1],
        "cpu_share": cpu_share,
    }
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hz", type=float, default=50.0)
    parser.add_argument("--out", type=Path, default=ROOT / ".bench" / "telemetry.json")
    args = parser.parse_args()
    rows = [
        run_scenario("no subscribers", args.hz, args.seconds),
        run_scenario("3 readers + 1 stuck", args.hz, args.seconds, readers=3, stuck=True),
        run_scenario("dashboard in a child process", args.hz, args.seconds, readers=1, dashboard="process"),
        run_scenario("embedded dashboard", args.hz, args.seconds, readers=1, dashboard="embedded"),
        run_scenario("embedded dashboard, switchinterval 1 ms", args.hz, args.seconds, readers=1,
                     dashboard="embedded", switch_interval_s=0.001),
    ]
    header = (f"{'scenario':<42} {'publish µs p50/p99/max':>24} {'period ms p50/p99/max':>24} "
              f"{'overruns':>8} {'reader Hz':>9} {'age ms p50/p99':>15} {'CPU':>5}")
    print(header)
    for r in rows:
        print(f"{r['scenario']:<42} "
              f"{r['publish_us_p50']:>7.1f}/{r['publish_us_p99']:>6.1f}/{r['publish_us_max']:>8.1f} "
              f"{r['period_ms_p50']:>8.2f}/{r['period_ms_p99']:>6.2f}/{r['period_ms_max']:>7.2f} "
              f"{r['overruns']:>8d} {r['reader_hz']:>9.1f} "
              f"{r['status_age_ms_p50']:>7.1f}/{r['status_age_ms_p99']:>6.1f} {r['cpu_share']:>5.0%}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
