"""Does lerobot's streaming video encoder drop frames under load? (It does; see below.)

Feeds `--rows` frames per camera into lerobot's `StreamingVideoEncoder` (what
`LeRobotDataset.create(streaming_encoding=True)` uses) as fast as a caller can, then counts
the frames in each mp4. `feed_frame` waits 0.1 s for a slot in a 30-frame queue and then
drops the frame with a warning, so whenever the encoder falls behind for longer than that
the episode's video comes out shorter than its rows, and lerobot later pairs rows with the
wrong frames. `--busy N` runs N busy loops pinned, with this process, to CPU 0: the load
of a shared machine, made repeatable.

This is why `platform dataset export` does not stream (shallowpi.data.lerobot_export).

    PYTHONPATH=platform python tools/bench/lerobot_streaming_drops.py --busy 2

Needs the lerobot extra; Linux (sched_setaffinity).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150, help="frames fed per camera")
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT")
    parser.add_argument("--busy", type=int, default=2, help="busy loops sharing CPU 0 (0: unloaded, all CPUs)")
    parser.add_argument("--out", type=Path, default=Path(".bench/lerobot_streaming_drops.json"))
    args = parser.parse_args()
    os.environ.setdefault("SVT_LOG", "1")
    logging.basicConfig(level=logging.ERROR)
    import av
    from lerobot.datasets.video_utils import StreamingVideoEncoder

    width, height = (int(v) for v in args.size.split("x"))
    frames = [np.random.default_rng(i).integers(0, 255, (height, width, 3), dtype=np.uint8) for i in range(8)]
    hogs = []
    if args.busy:
        os.sched_setaffinity(0, {0})
        hogs = [subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"]) for _ in range(args.busy)]
    try:
        cameras = [f"cam{i}" for i in range(args.cameras)]
        encoder = StreamingVideoEncoder(fps=30, queue_maxsize=30)
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            encoder.start_episode(cameras, Path(tmp))
            for row in range(args.rows):
                for camera in cameras:
                    encoder.feed_frame(camera, frames[row % len(frames)])
            videos = encoder.finish_episode()
            counts = {}
            for camera in cameras:
                with av.open(str(videos[camera][0])) as container:
                    stream = container.streams.video[0]
                    counts[camera] = sum(1 for p in container.demux(stream) if p.pts is not None)
        seconds = time.perf_counter() - start
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"{'camera':8} {'rows fed':>8} {'frames in mp4':>13} {'dropped':>7}")
    for camera, count in counts.items():
        print(f"{camera:8} {args.rows:8d} {count:13d} {args.rows - count:7d}")
    print(f"{args.cameras} x {args.size}, busy loops on CPU 0: {args.busy}, {seconds:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": args.rows, "size": args.size, "busy": args.busy,
                                    "frames": counts, "seconds": seconds}, indent=2))


if __name__ == "__main__":
    main()
