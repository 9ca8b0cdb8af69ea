"""docs/dashboard.png from the real recorder: `platform record` in the twin, its dashboard
attached over telemetry, a screenshot once an episode is saved and the next is recording.

    python tools/dashboard_screenshot.py                          docs/dashboard.png
    python tools/dashboard_screenshot.py --robot arm --size 100x30 --out /tmp/small.png

Nothing here is synthetic: the recorder is `python -m shallowpi record --sim direct
--realtime` (the real session, state machine and writer, the task's scripted expert as
the operator), and the picture is the real `RecorderDashboard` reading its telemetry, as
`platform monitor --control` would. Textual writes an SVG; `rsvg-convert` (Debian:
librsvg2-bin) turns it into the PNG. To look at the dashboard live without a robot, run
the same recorder on a terminal: `platform record --robot humanoid --sim direct --realtime
--task cube_in_bowl --dataset demo`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.telemetry.address import TelemetryError  # noqa: E402
from shallowpi.telemetry.status import RecorderState  # noqa: E402
from shallowpi.telemetry.subscriber import TelemetrySubscriber  # noqa: E402
from shallowpi.tui.recorder_dashboard import RecorderDashboard  # noqa: E402


def start_recorder(folder: Path, robot: str, address: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform"), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    command = [sys.executable, "-m", "shallowpi", "record", "--robot", robot, "--sim", "direct", "--realtime",
               "--task", "cube_in_bowl", "--data-root", str(folder), "--dataset", "demo", "--episodes", "5",
               "--episode-time-s", "8", "--reset-time-s", "2", "--no-tui", "record.sim_size=128x96",
               f"telemetry.address={address}", "telemetry.allow_remote_control=true"]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def subscribe(address: str, recorder: subprocess.Popen, timeout_s: float = 300.0) -> TelemetrySubscriber:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return TelemetrySubscriber(address, control=True)
        except TelemetryError:
            if recorder.poll() is not None or time.monotonic() > deadline:
                why = recorder.stderr.read()[-2000:] if recorder.stderr and recorder.poll() is not None else ""
                raise SystemExit(f"the recorder did not start publishing: {why}") from None
            time.sleep(0.2)


def shoot(subscriber: TelemetrySubscriber, size: tuple[int, int], svg: Path, timeout_s: float) -> None:
    app = RecorderDashboard(subscriber, subscriber.send, monitor=True)

    def ready() -> bool:
        status = app.status
        return (status is not None and status.state is RecorderState.RECORDING
                and any(e.state == "saved" for e in status.episodes) and status.episode_time_s > 3.0)

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            deadline = time.monotonic() + timeout_s
            while not ready():
                if time.monotonic() > deadline:
                    raise SystemExit("no saved episode and a recording one in time")
                await pilot.pause(0.1)
            await pilot.pause(0.5)
            app.save_screenshot(filename=svg.name, path=str(svg.parent))

    asyncio.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--robot", default="humanoid")
    parser.add_argument("--size", default="160x45", help="terminal COLUMNSxROWS")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    columns, rows = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="dashboard-shot-") as folder:
        svg = Path(folder) / "dashboard.svg"
        address = f"{folder}/t.sock"
        recorder = start_recorder(Path(folder), args.robot, address)
        try:
            with subscribe(address, recorder) as subscriber:
                shoot(subscriber, (columns, rows), svg, args.timeout_s)
        finally:
            recorder.send_signal(signal.SIGTERM)
            recorder.wait(60)
        converter = shutil.which("rsvg-convert")
        if converter is None:
            kept = shutil.copy(svg, args.out.with_suffix(".svg"))
            print(f"wrote {kept}; install rsvg-convert (Debian: librsvg2-bin) to make {args.out}")
            return 0
        subprocess.run([converter, "--zoom", "1.5", "-o", str(args.out), str(svg)], check=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
