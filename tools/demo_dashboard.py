"""Look at the recorder dashboard without a robot: a synthetic recorder publishes statuses.

    python tools/demo_dashboard.py                      the dashboard, in this process
    python tools/demo_dashboard.py --publish-only       publish only; in another terminal:
        platform monitor --address /tmp/shallowpi-demo.sock --control
    python tools/demo_dashboard.py --screenshot docs/dashboard.svg   headless SVG screenshot

The synthetic recorder is wired the way `platform record` wires the real one: its loop runs
in a background thread and publishes through a TelemetryPublisher; the dashboard reads
`publisher.local_feed()` and sends keys to `publisher.submit`; the loop drains
`publisher.commands()` every tick. Keys work: space starts/stops an episode, s/f mark it,
p pauses, e "e-stops", q quits after confirmation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from shallowpi.telemetry.status import (
    CameraStatus,
    Command,
    EpisodeSummary,
    LoopStatus,
    RecorderState,
    RecorderStatus,
    WriterStatus,
)
from shallowpi.telemetry.thumbnail import thumbnail_from_image
from shallowpi.telemetry.transport import TelemetryPublisher

JOINTS = ["waist_yaw", "left_shoulder_pitch", "left_shoulder_roll", "left_elbow", "left_wrist_pitch",
          "left_gripper", "right_shoulder_pitch", "right_shoulder_roll", "right_elbow",
          "right_wrist_pitch", "right_gripper"]


def scene(t: float, height: int = 96, width: int = 128) -> np.ndarray:
    """A table with a cup sliding across it, as a stand-in camera frame."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = 40 + (y * 60 // height)
    image[..., 1] = 50 + (y * 80 // height)
    image[..., 2] = 90 + (y * 100 // height)
    table = y > height * 0.55
    image[table] = (139, 94, 60)
    cx, cy = width * (0.5 + 0.3 * math.sin(t)), height * 0.5
    cup = (x - cx) ** 2 / 100 + (y - cy) ** 2 / 160 < 1
    image[cup] = (230, 60, 50)
    return image


class SyntheticRecorder:
    """A state machine with the recorder's commands and a plausible status, at `hz`."""

    def __init__(self, publisher: TelemetryPublisher, hz: float = 30.0, episodes: int = 10) -> None:
        self.publisher = publisher
        self.hz = hz
        self.status = RecorderStatus(
            state=RecorderState.IDLE, robot="humanoid (sim)", dataset="demo", task="put the cup on the plate",
            episodes_total=episodes, episode_time_limit_s=20.0, joint_names=JOINTS,
            joint_lower=[-2.5] * len(JOINTS), joint_upper=[2.5] * len(JOINTS),
            message="press space to start the first episode",
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="synthetic-recorder", daemon=True)

    def handle(self, command: Command, s: RecorderStatus) -> None:
        if command is Command.START and s.state in (RecorderState.IDLE, RecorderState.PAUSED,
                                                    RecorderState.RESETTING):
            s.state, s.episode_time_s, s.message = RecorderState.RECORDING, 0.0, f"episode {s.episode} started"
        elif command in (Command.STOP, Command.NEXT) and s.state is RecorderState.RECORDING:
            self.finish(s, "saving")
        elif command is Command.NEXT and s.state is RecorderState.RESETTING:
            s.reset_time_left_s = 0.0
        elif command in (Command.SUCCESS, Command.FAILURE) and s.episodes:
            s.episodes[-1].success = command is Command.SUCCESS
            s.message = f"episode {s.episodes[-1].index} marked {command.value}"
        elif command in (Command.DISCARD, Command.RERECORD) and s.state is RecorderState.RECORDING:
            s.state, s.message = RecorderState.RESETTING, f"episode {s.episode} discarded"
            s.reset_time_left_s = 3.0
        elif command is Command.PAUSE:
            s.state = RecorderState.PAUSED if s.state is not RecorderState.PAUSED else RecorderState.IDLE
        elif command is Command.ESTOP:
            s.state, s.message = RecorderState.FAULT, "E-STOP: torque off on all servos"
        elif command is Command.QUIT:
            s.state, s.message = RecorderState.STOPPED, "stopped: store closed"
            self.stop.set()

    def finish(self, s: RecorderStatus, state: str) -> None:
        s.episodes.append(EpisodeSummary(index=s.episode, frames=int(s.episode_time_s * self.hz),
                                         duration_s=round(s.episode_time_s, 1), state=state))
        s.episode += 1
        s.state, s.reset_time_left_s = RecorderState.RESETTING, 5.0
        s.message = f"episode {s.episode - 1} handed to the writer; reset the scene"

    def run(self) -> None:
        period = 1.0 / self.hz
        start = next_tick = time.monotonic()
        rng = np.random.default_rng(0)
        while not self.stop.is_set():
            t = time.monotonic() - start
            s = self.status
            for command in self.publisher.commands():
                self.handle(command, s)
            if s.state is RecorderState.RECORDING:
                s.episode_time_s += period
                if s.episode_time_s >= s.episode_time_limit_s:
                    self.finish(s, "saving")
            elif s.state is RecorderState.RESETTING:
                s.reset_time_left_s -= period
                if s.reset_time_left_s <= 0:
                    s.state, s.episode_time_s = RecorderState.RECORDING, 0.0
            for episode in s.episodes:
                if episode.state == "saving" and rng.random() < 0.02:
                    episode.state = "saved"
            s.leader = [1.5 * math.sin(0.7 * t + i) for i in range(len(JOINTS))]
            s.follower = [v - 0.08 * math.cos(0.7 * t + i) for i, v in enumerate(s.leader)]
            s.cameras = {"head": CameraStatus(fps=29.9 + rng.normal(0, 0.05), dropped=0, age_ms=11.0),
                         "wrist_left": CameraStatus(fps=29.7, dropped=int(t // 40), age_ms=14.0),
                         "wrist_right": CameraStatus(fps=29.8, dropped=0, age_ms=13.0)}
            s.loop = LoopStatus(target_hz=self.hz, period_p50_ms=1000 / self.hz, period_p99_ms=1000 / self.hz + 1.4,
                                overruns=0)
            depth = int(40 + 35 * math.sin(0.3 * t)) if s.state is RecorderState.RECORDING else 3
            s.writer = WriterStatus(queue_depth=max(depth, 0), queue_capacity=90, high_water=76,
                                    mb_per_s=38.5, pending_episodes=sum(e.state == "saving" for e in s.episodes))
            if int(t * self.hz) % 6 == 0:  # thumbnails a few times a second, not every tick
                s.thumbnails = {"head": thumbnail_from_image(scene(t), width=48),
                                "wrist_left": thumbnail_from_image(scene(t + 1.5)[::-1], width=48)}
            self.publisher.publish(s)  # a snapshot is taken: updating `s` in place is fine
            next_tick += period
            time.sleep(max(0.0, next_tick - time.monotonic()))
        self.publisher.publish(self.status)
        time.sleep(0.2)  # let subscribers see the final status
        self.publisher.close()  # ends every feed: an embedded dashboard exits, monitors say so


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--address", default="/tmp/shallowpi-demo.sock", help="telemetry address")
    parser.add_argument("--publish-only", action="store_true", help="no dashboard: attach with platform monitor")
    parser.add_argument("--screenshot", type=Path, help="save an SVG screenshot (headless) and exit")
    args = parser.parse_args()

    from shallowpi.tui.recorder_dashboard import RecorderDashboard

    with TelemetryPublisher(args.address) as publisher:
        recorder = SyntheticRecorder(publisher)
        recorder.thread.start()
        if args.publish_only:
            print(f"publishing at {publisher.address}; Ctrl-C to stop")
            with contextlib.suppress(KeyboardInterrupt):
                recorder.thread.join()
        elif args.screenshot:
            publisher.submit(Command.START)
            app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)

            async def shoot() -> None:
                async with app.run_test(size=(150, 44)) as pilot:
                    await asyncio.sleep(4.0)
                    publisher.submit(Command.STOP)
                    await asyncio.sleep(0.5)
                    publisher.submit(Command.SUCCESS)
                    publisher.submit(Command.START)
                    await asyncio.sleep(2.0)
                    await pilot.pause()
                    args.screenshot.parent.mkdir(parents=True, exist_ok=True)
                    app.save_screenshot(str(args.screenshot))

            asyncio.run(shoot())
            print(f"saved {args.screenshot}")
        else:
            app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)
            app.run()
        recorder.stop.set()
        recorder.thread.join(timeout=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
