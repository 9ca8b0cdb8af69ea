"""OpenCVCamera reading a real video file written with cv2.VideoWriter (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from shallowpi.hardware.camera import CameraError  # noqa: E402
from shallowpi.hardware.opencv_camera import OpenCVCamera, OpenCVConfig  # noqa: E402

W, H, FPS = 96, 64, 30


def write_video(path: Path, n: int, fps: float = FPS) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for i in range(n):
        bgr = np.zeros((H, W, 3), np.uint8)
        bgr[:, :, 2] = 200  # red in BGR
        bgr[:, : 4 * (i + 1), 1] = 255  # a green bar that grows with the frame index
        writer.write(bgr)
    writer.release()


def test_reads_frames_in_order_as_rgb(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    write_video(video, 12)
    cam = OpenCVCamera(OpenCVConfig("wrist", str(video), W, H, FPS, warmup_frames=2))
    with cam:
        seen = []
        last = None
        while len(seen) < 5:
            frame = cam.latest(newer_than=last)
            last = frame.sequence
            seen.append(frame)
    sequences = [f.sequence for f in seen]
    assert sequences == sorted(sequences) and len(set(sequences)) == 5
    first = seen[0].image
    assert first.shape == (H, W, 3)
    assert first[H // 2, W - 1, 0] > 150 and first[H // 2, W - 1, 2] < 60  # RGB order
    bars = [int((f.image[H // 2, :, 1] > 128).sum()) for f in seen]
    assert bars == sorted(bars) and bars[-1] > bars[0]  # later frames come later
    captured = [f.capture_time_s for f in seen]
    assert captured == sorted(captured)


def test_wrong_resolution_and_missing_source_are_one_line_errors(tmp_path: Path) -> None:
    video = tmp_path / "cam.avi"
    write_video(video, 3)
    with pytest.raises(CameraError, match=r"gives 96x64, config asks 640x480"):
        OpenCVCamera(OpenCVConfig("wrist", str(video), warmup_frames=0)).start()
    with pytest.raises(CameraError, match=r"camera 'wrist': cannot open"):
        OpenCVCamera(OpenCVConfig("wrist", str(tmp_path / "none.avi"), W, H)).start()


def test_a_source_at_another_rate_than_the_configured_fps_is_refused_in_one_line(tmp_path: Path) -> None:
    """The fps was set and never read back: a source at 15 fps under a config of 30 ran, its
    frames arriving at half the rate the recording's clock assumes."""
    video = tmp_path / "cam.avi"
    write_video(video, 3, fps=15)
    with pytest.raises(CameraError, match=r"^camera 'wrist': .*cam.avi was recorded at 15 fps, config asks 30; "
                                          r"set the camera's fps to the file's$"):
        OpenCVCamera(OpenCVConfig("wrist", str(video), W, H, 30, warmup_frames=0)).start()
    with OpenCVCamera(OpenCVConfig("wrist", str(video), W, H, 15, warmup_frames=0)) as cam:
        assert cam.latest().image.shape == (H, W, 3)  # at its own rate it runs


def test_a_device_reporting_another_rate_is_refused_and_an_unknown_rate_taken_as_asked() -> None:
    # What cv2.CAP_PROP_FPS reads back from a UVC device (none here): the decision alone.
    from shallowpi.hardware.opencv_camera import fps_mismatch

    cfg = OpenCVConfig("wrist", "2", W, H, 30)
    assert fps_mismatch(cfg, 15.0) == (
        "camera 'wrist': 2 runs at 15 fps, config asks 30; set the camera's fps to a rate it has at "
        "96x64 (v4l2-ctl -d /dev/video2 --list-formats-ext lists its modes)")
    assert "v4l2-ctl -d /dev/video0 " in fps_mismatch(OpenCVConfig("wrist", "/dev/video0", W, H, 60), 30.0)
    assert fps_mismatch(cfg, 29.97) is None  # an NTSC-style rate is the asked one
    assert fps_mismatch(cfg, 30.0) is None
    assert fps_mismatch(cfg, 0.0) is None  # the driver does not know its rate: taken as asked
