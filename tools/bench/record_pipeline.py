"""The recording pipeline under load: the real drivers, three 480x640 cameras, 20 servos.

`platform emulate --robot humanoid` serves the humanoid's servo buses (19 follower servos
on three buses + the leader arms) from its own process, as hardware would; three
pyrealsense2 software devices are fed 480x640 frames from memory at the camera rate by
feeder threads; the recording session runs the humanoid's DynamixelRobot and
LeaderFollower over them and writes through the background writer into a real store
(JPEG 90, fsync on). Reports, per rate: loop period p50/p99 and overruns, dropped camera
frames, the writer queue's high-water mark and back-pressure, the recorder process's CPU
share, and (c) the time from "episode done" to "next episode may start". The loop's
percentiles are each episode's own (its `loop_p50_ms`, `loop_p99_ms`): the JSON's
`loop_p50_ms` is their median over the episodes, its `loop_p99_ms` their maximum, the
worst episode's p99 (not a p99 over every tick of the rate), printed as such.

    PYTHONPATH=platform python tools/bench/record_pipeline.py                  # 5 min at 30 and 50 Hz
    PYTHONPATH=platform python tools/bench/record_pipeline.py --seconds 60 --rates 30

Targets: 0 dropped frames; next episode may start < 1 s after one ends (lerobot: 30-60 s).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from shallowpi import config
from shallowpi.data.features import robot_features
from shallowpi.data.store import EpisodeStore, StoreSettings
from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.hardware.realsense_software import SoftwareRealSense
from shallowpi.record.clock import TickClock
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.robots.spec import RobotSpec
from shallowpi.teleop.leader import LeaderFollower

ROLES = ("head", "left_wrist", "right_wrist")
HEIGHT, WIDTH = 480, 640


def camera_frames(count: int = 30) -> list[np.ndarray]:
    """Smooth gradients with sensor noise and a moving bar: compress like camera frames."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    frames = []
    for i in range(count):
        image = np.stack([(x * 255 // WIDTH), (y * 255 // HEIGHT), np.full_like(x, 96)], -1).astype(np.int16)
        image[:, (i * 20) % WIDTH : (i * 20) % WIDTH + 30] = 230
        image += rng.integers(-6, 7, image.shape, dtype=np.int16)
        frames.append(np.clip(image, 0, 255).astype(np.uint8))
    return frames


class Feeder(threading.Thread):
    def __init__(self, device: SoftwareRealSense, frames: list[np.ndarray], fps: float) -> None:
        super().__init__(daemon=True)
        self.device, self.frames, self.period = device, frames, 1.0 / fps
        self.running = True

    def run(self) -> None:
        next_time, i = time.monotonic(), 0
        while self.running:
            self.device.inject(self.frames[i % len(self.frames)])
            i += 1
            next_time += self.period
            time.sleep(max(0.0, next_time - time.monotonic()))


def run_rate(fps: int, seconds: float, episode_s: float, workdir: Path) -> dict:
    emulator = subprocess.Popen([sys.executable, "-m", "shallowpi", "emulate", "--robot", "humanoid",
                                 "--return-delay", "0"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(Path(config.REPO_ROOT) / "platform")})
    try:
        ports = json.loads(emulator.stdout.readline())
        spec = RobotSpec.from_config(config.compose(["robot=humanoid"]).robot).with_ports(ports)
        calibration = RobotCalibration("uncalibrated", spec.name)
        frames = camera_frames()
        devices = {role: SoftwareRealSense(f"SW-{role}", WIDTH, HEIGHT, fps=fps) for role in ROLES}
        cameras = {role: RealSenseCamera(RealSenseConfig(role, f"SW-{role}", WIDTH, HEIGHT, fps, warmup_frames=0),
                                         open_device=devices[role].open_device) for role in ROLES}
        feeders = [Feeder(devices[role], frames, fps) for role in ROLES]
        robot = DynamixelRobot(spec, calibration, cameras=cameras)
        teleop = LeaderFollower(spec, calibration)
        store = EpisodeStore.create(workdir / f"bench{fps}.zarr",
                                    robot_features(spec.joint_names, {r: (HEIGHT, WIDTH) for r in ROLES}),
                                    StoreSettings(durable=True))
        writer = BackgroundWriter(store, capacity_frames=int(512e6 // (3 * HEIGHT * WIDTH * 3)))
        episodes = max(1, round(seconds / episode_s))
        session = RecordingSession(
            SessionConfig(task="benchmark", episodes=episodes, episode_time_s=episode_s, reset_time_s=0.0, fps=fps),
            robot, teleop, writer, TickClock(fps), list(spec.joint_names), cameras=cameras)
        for camera in cameras.values():
            camera.start()
        for feeder in feeders:
            feeder.start()
        robot.connect()
        teleop.connect()
        ends: list[tuple[float, float]] = []  # (end of one episode, start of the next), wall clock
        original_end, original_begin = session._end_episode, session._begin

        def end_episode(*args, **kwargs):
            ends.append((time.monotonic(), float("nan")))
            return original_end(*args, **kwargs)

        def begin(*args, **kwargs):
            result = original_begin(*args, **kwargs)
            if ends and np.isnan(ends[-1][1]):
                ends[-1] = (ends[-1][0], time.monotonic())
            return result

        session._end_episode, session._begin = end_episode, begin
        cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
        result = session.run()
        wall = time.monotonic() - wall0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        for feeder in feeders:
            feeder.running = False
        teleop.disconnect()
        robot.disconnect()
        for camera in cameras.values():
            camera.stop()
        writer.close()
        stats = writer.stats()
        infos = store.episodes
        periods = [(e.extra["loop_p50_ms"], e.extra["loop_p99_ms"], e.extra["loop_overruns"]) for e in infos]
        handoffs = [b - a for a, b in ends if not np.isnan(b)]
        return {
            "fps": fps, "seconds": wall, "episodes": len(infos), "frames": store.num_frames,
            "loop_p50_ms": float(np.median([p[0] for p in periods])),
            "loop_p99_ms": float(np.max([p[1] for p in periods])),
            "overruns": int(sum(p[2] for p in periods)),
            "dropped_frames": int(sum(e.dropped_frames for e in infos)),
            "expected_frames": round(wall * fps),
            "queue_high_water": stats.high_water, "queue_capacity": stats.queue_capacity,
            "backpressure_s": float(sum(e.extra["backpressure_s"] for e in infos)),
            "cpu_share": (cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime) / wall,
            "next_episode_after_s_max": float(max(handoffs)) if handoffs else None,
            "next_episode_after_s_median": float(np.median(handoffs)) if handoffs else None,
            "fault": result.fault,
        }
    finally:
        emulator.terminate()
        emulator.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="recording time per rate")
    parser.add_argument("--episode-s", type=float, default=20.0, help="episode length")
    parser.add_argument("--rates", type=int, nargs="+", default=[30, 50])
    parser.add_argument("--out", type=Path, default=Path(".bench/record_pipeline.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="record-bench-") as tmp:
        for fps in args.rates:
            print(f"recording {args.seconds:.0f} s at {fps} Hz ...", flush=True)
            rows.append(run_rate(fps, args.seconds, args.episode_s, Path(tmp)))
    print(f"\n{'rate':>5} {'frames':>7} {'p50 ms':>7} {'worst episode p99 ms':>20} {'overruns':>8} {'dropped':>7} "
          f"{'queue max':>9} {'waited s':>8} {'CPU':>5} {'next ep after':>13}")
    for r in rows:
        print(f"{r['fps']:>4}Hz {r['frames']:>7} {r['loop_p50_ms']:>7.1f} {r['loop_p99_ms']:>20.1f} {r['overruns']:>8} "
              f"{r['dropped_frames']:>7} {r['queue_high_water']:>4}/{r['queue_capacity']:<4} {r['backpressure_s']:>8.2f} "
              f"{r['cpu_share']:>5.0%} {r['next_episode_after_s_max'] or 0:>11.3f} s" + (f"  FAULT {r['fault']}" if r["fault"] else ""))
    print("(p50: the median of the episodes' loop p50s; worst episode p99: the largest of their loop p99s. "
          "CPU: the recorder process, all threads, share of one core; the emulator runs in its own process)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "load_average": os.getloadavg()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
