"""Looking at simulated episodes: an .mp4 of every tick, or a PNG strip of a few frames.

Each tick's camera images are tiled left to right in camera-role order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shallowpi.errors import PlatformError


def tile(images: Sequence[np.ndarray]) -> np.ndarray:
    height = max(im.shape[0] for im in images)
    padded = [np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0))) for im in images]
    return np.concatenate(padded, axis=1)


class VideoWriter:
    def __init__(self, path: str | Path, fps: int):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise PlatformError(f"--video {self.path}: write an .mp4 file")
        self.fps = fps
        self._writer = None
        self._tmp = self.path.with_name(self.path.name + ".tmp.mp4")

    def add(self, images: Sequence[np.ndarray]) -> None:
        try:
            import cv2
        except ImportError:
            raise PlatformError(
                "--video needs OpenCV: pip install opencv-python-headless"
            ) from None
        frame = tile(images)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = frame.shape[:2]
            self._writer = cv2.VideoWriter(
                str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h)
            )
            if not self._writer.isOpened():
                raise PlatformError(f"cannot write video {self.path}; check the folder is writable")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._tmp.replace(
                self.path
            )  # never leave a half-written video under the name asked for


class StripWriter:
    """Keeps every tick of one episode, writes `count` evenly spaced ones side by side."""

    def __init__(self, path: str | Path, count: int = 8):
        self.path = Path(path)
        self.count = count
        self._frames: list[np.ndarray] = []

    def add(self, images: Sequence[np.ndarray]) -> None:
        self._frames.append(tile(images))

    def close(self) -> None:
        from PIL import Image

        if not self._frames:
            return
        picks = (
            np.linspace(0, len(self._frames) - 1, min(self.count, len(self._frames)))
            .round()
            .astype(int)
        )
        # One row per picked tick: each row is that tick's cameras side by side.
        strip = np.concatenate([self._frames[i] for i in picks], axis=0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        Image.fromarray(strip).save(tmp, format="PNG")
        tmp.replace(self.path)
