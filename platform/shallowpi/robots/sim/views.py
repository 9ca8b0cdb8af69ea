"""Looking at simulated episodes: an .mp4 of every tick, or a PNG strip of a few frames.

Each tick's camera images are tiled left to right in camera-role order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shallowpi.errors import PlatformError


def tile(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images [H, W, 3] side by side, left to right; shorter ones padded black at the bottom."""
    height = max(im.shape[0] for im in images)
    padded = [np.pad(im, ((0, height - im.shape[0]), (0, 0), (0, 0))) for im in images]
    return np.concatenate(padded, axis=1)


class VideoWriter:
    """An .mp4 of tiled camera images at `fps`, written under a temporary name and moved onto
    `path` by `close()`. Raises PlatformError when `path` is not an .mp4."""

    def __init__(self, path: str | Path, fps: int):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise PlatformError(f"--video {self.path}: write an .mp4 file")
        self.fps = fps
        self._writer = None
        self._size: tuple[int, int] | None = None
        self._tmp = self.path.with_name(self.path.name + ".tmp.mp4")

    def add(self, images: Sequence[np.ndarray]) -> None:
        """Append one frame: RGB uint8 `images` [H, W, 3], tiled. The first frame sets the video's
        size. Raises PlatformError without OpenCV or when the file cannot be opened."""
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
            writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
            if not writer.isOpened():
                raise PlatformError(f"cannot write video {self.path}; check the folder is writable")
            self._writer, self._size = writer, (h, w)
        if frame.shape[:2] != self._size:  # OpenCV drops such a frame without a word
            raise PlatformError(f"video {self.path}: frame of {frame.shape[:2]} after frames of {self._size}")
        self._writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))

    def end_episode(self, title: str = "") -> None:
        """Nothing: a video has no title (`sim_eval.View`)."""

    def close(self) -> None:
        """Finish the video and move it onto `path` (nothing if no frame was added); a second
        call does nothing."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            # Written under a temporary name: never a half-written video under the name asked for.
            self._tmp.replace(self.path)


class StripWriter:
    """Keeps every tick of an episode, writes `count` evenly spaced ones, one row a tick
    (that tick's cameras side by side), one block an episode, blocks stacked down.

    With `roles` (the camera order of the images) and `fps`, each block is labelled: a
    title line (`end_episode(title)`: e.g. episode, seed and result), the camera above
    each column, and each row's time in seconds in a left margin."""

    TITLE_H, ROLES_H, MARGIN_W = 14, 12, 54  # pixels: title line, camera names, time column

    def __init__(self, path: str | Path, count: int = 8, roles: Sequence[str] = (), fps: float = 0.0):
        self.path = Path(path)
        self.count = count
        self.roles = tuple(roles)
        self.fps = fps
        self._frames: list[np.ndarray] = []
        self._blocks: list[np.ndarray] = []

    def add(self, images: Sequence[np.ndarray]) -> None:
        """Keep one tick: RGB uint8 `images` [H, W, 3] in camera-role order, tiled."""
        self._frames.append(tile(images))

    def end_episode(self, title: str = "") -> None:
        """Close the current episode's block (nothing if it has no frames)."""
        if not self._frames:
            return
        picks = (
            np.linspace(0, len(self._frames) - 1, min(self.count, len(self._frames)))
            .round()
            .astype(int)
        )
        rows = [self._frames[i] for i in picks]
        self._frames = []
        block = np.concatenate(rows, axis=0)
        self._blocks.append(self._labelled(block, picks, title) if self.roles else block)

    def _labelled(self, block: np.ndarray, picks: np.ndarray, title: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        rows = len(picks)
        row_h, width = block.shape[0] // rows, block.shape[1]
        top = self.TITLE_H + self.ROLES_H
        canvas = Image.new("RGB", (self.MARGIN_W + width, top + block.shape[0]), (24, 24, 24))
        canvas.paste(Image.fromarray(block), (self.MARGIN_W, top))
        draw = ImageDraw.Draw(canvas)
        draw.text((3, 1), title, fill=(255, 255, 255))
        column = width // len(self.roles)
        for k, role in enumerate(self.roles):
            draw.text((self.MARGIN_W + k * column + 3, self.TITLE_H), role, fill=(200, 200, 120))
        for r, tick in enumerate(picks):
            seconds = f"t={tick / self.fps:.1f}s" if self.fps else f"tick {tick}"
            draw.text((3, top + r * row_h + row_h // 2 - 5), seconds, fill=(180, 220, 255))
        return np.asarray(canvas)

    def close(self) -> None:
        """End the current episode and write the PNG onto `path` (via a temporary file);
        nothing without frames."""
        from PIL import Image

        self.end_episode()
        if not self._blocks:
            return
        width = max(b.shape[1] for b in self._blocks)
        strip = np.concatenate([np.pad(b, ((0, 0), (0, width - b.shape[1]), (0, 0))) for b in self._blocks], axis=0)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        Image.fromarray(strip).save(tmp, format="PNG")
        tmp.replace(self.path)
