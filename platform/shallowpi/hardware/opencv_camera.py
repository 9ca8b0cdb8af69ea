"""Plain USB (UVC) cameras through OpenCV, for wrist and scene cameras without depth.

    cam = OpenCVCamera(OpenCVConfig(name="wrist", source="/dev/video0", width=640, height=480))
    with cam:
        frame = cam.latest(max_age_s=0.1)

`source` is a device index ("0"), a device path or a video file (tests use a file written
with cv2.VideoWriter). OpenCV has no device frame counter, so `sequence` counts frames read
and dropped frames cannot be seen; the capture time is the host's clock when the frame
was grabbed, or the file position for a video file.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.hardware.camera import CameraError, Frame, ThreadedCamera

log = logging.getLogger(__name__)

# Hz: a camera (or file) reporting a rate this close to the asked one runs at it (29.97 for
# 30: NTSC-style rates, a float's rounding); further off, frames arrive at another rate
# than the recording's clock assumes.
FPS_TOLERANCE = 0.5


@dataclass
class OpenCVConfig:
    """One UVC camera or video file; sizes in pixels, `timeout_s` in seconds.

    Raises CameraError when width, height or fps is not positive.
    """

    name: str
    source: str  # index ("0"), /dev/videoN, or a video file
    width: int = 640
    height: int = 480
    fps: int = 30
    warmup_frames: int = 5
    timeout_s: float = 2.0
    max_failures: int = 10
    loop_file: bool = False  # restart a video file at its end (for soak tests)

    @property
    def is_file(self) -> bool:
        """Whether `source` is a video file, not a device (an index or /dev/videoN)."""
        return not self.source.isdigit() and not self.source.startswith("/dev/")

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise CameraError(f"camera '{self.name}': width, height and fps must be positive")


class OpenCVCamera(ThreadedCamera):
    """A `ThreadedCamera` over cv2.VideoCapture; frames are uint8 [H, W, 3] RGB, no depth.

    Opening raises CameraError when OpenCV is missing, the source cannot be opened, or a
    device does not deliver the configured width x height or reports another rate than the
    configured fps (a file's size and rate must match too); a rate reported as 0 (unknown
    to the driver) is taken as asked.
    """

    def __init__(self, config: OpenCVConfig):
        super().__init__(
            name=config.name,
            timeout_s=config.timeout_s,
            warmup_frames=config.warmup_frames,
            max_failures=config.max_failures,
        )
        self.config = config
        self._capture: Any = None
        self._count = 0
        self._is_file = config.is_file

    def _open(self) -> None:
        try:
            import cv2
        except ImportError:
            raise CameraError(
                f"camera '{self.name}': OpenCV is missing; pip install opencv-python-headless"
            ) from None
        cfg = self.config
        source: int | str = int(cfg.source) if cfg.source.isdigit() else cfg.source
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            raise CameraError(
                f"camera '{cfg.name}': cannot open {cfg.source}; check the device exists "
                "(ls /dev/video*) and that no other process holds it"
            )
        if not self._is_file:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, cfg.width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, cfg.height)
            capture.set(cv2.CAP_PROP_FPS, cfg.fps)
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if (width, height) != (cfg.width, cfg.height):
            capture.release()
            raise CameraError(
                f"camera '{cfg.name}': {cfg.source} gives {width}x{height}, "
                f"config asks {cfg.width}x{cfg.height}; set the camera's width/height to match"
            )
        # A UVC camera without the asked rate takes the nearest mode it has, silently: read
        # back what it took, as for the size.
        reported = float(capture.get(cv2.CAP_PROP_FPS))
        if (problem := fps_mismatch(cfg, reported)) is not None:
            capture.release()
            raise CameraError(problem)
        if reported <= 0:
            log.debug("camera '%s': %s reports no frame rate; taking the asked %d fps", cfg.name, cfg.source, cfg.fps)
        self._capture = capture

    def _read(self, timeout_s: float) -> Frame | None:
        import cv2

        capture = self._capture
        if capture is None:
            return None
        ok, bgr = capture.read()
        if not ok:
            if self._is_file and self.config.loop_file:
                capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            else:
                time.sleep(min(timeout_s, 0.01))
            return None
        host_time = time.monotonic()
        if self._is_file:
            capture_time = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            # A file reads as fast as it decodes; pace it like the camera it stands in for.
            time.sleep(1.0 / self.config.fps)
        else:
            capture_time = host_time
        self._count += 1
        image = np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return Frame(
            image=image, capture_time_s=capture_time, sequence=self._count, host_time_s=host_time
        )

    def _close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def fps_mismatch(cfg: OpenCVConfig, reported: float) -> str | None:
    """The one-line refusal when `reported` (Hz, what cv2.CAP_PROP_FPS reads back) is a
    rate more than FPS_TOLERANCE off the configured fps, else None; a report <= 0 means
    the driver does not know its rate and is taken as asked."""
    if reported <= 0 or abs(reported - cfg.fps) <= FPS_TOLERANCE:
        return None
    if cfg.is_file:
        return (f"camera '{cfg.name}': {cfg.source} was recorded at {reported:g} fps, config asks "
                f"{cfg.fps}; set the camera's fps to the file's")
    device = f"/dev/video{cfg.source}" if cfg.source.isdigit() else cfg.source
    return (f"camera '{cfg.name}': {cfg.source} runs at {reported:g} fps, config asks {cfg.fps}; set the "
            f"camera's fps to a rate it has at {cfg.width}x{cfg.height} (v4l2-ctl -d {device} "
            "--list-formats-ext lists its modes)")
