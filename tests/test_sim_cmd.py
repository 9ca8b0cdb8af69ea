"""`platform sim` end to end, in a subprocess as an operator runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shallowpi.robots.sim.views import StripWriter

pytest.importorskip("mujoco")

PLATFORM = Path(__file__).resolve().parents[1] / "platform"


def platform(*args: str, gl: str = "egl") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(PLATFORM), "MUJOCO_GL": gl}
    return subprocess.run(
        [sys.executable, "-m", "shallowpi", "sim", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_lists_tasks() -> None:
    out = platform("--robot", "humanoid", "--list")
    assert out.returncode == 0, out.stderr
    assert (
        "cube_in_bowl" in out.stdout
        and "hand the red cube from the left hand to the right" in out.stdout
    )


def test_runs_an_episode_and_writes_a_strip(tmp_path: Path) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    out = platform(
        "--robot",
        "arm",
        "--task",
        "push_block_left",
        "--seed",
        "2",
        "--size",
        "64x48",
        "--png",
        str(strip),
    )
    assert out.returncode == 0, out.stderr
    assert "success 1/1 (100%)" in out.stdout and "steps/s" in out.stdout
    image = Image.open(strip)
    # Two cameras side by side, eight ticks down, beside a time column, under a title line
    # and the cameras' names.
    margin, top = StripWriter.MARGIN_W, StripWriter.TITLE_H + StripWriter.ROLES_H
    assert image.size == (margin + 2 * 64, top + 8 * 48)
    labels = np.asarray(image)
    assert labels[:top, :].max() > 150 and labels[top:, :margin].max() > 150  # text in the bands


def test_strip_covers_every_episode_asked_for(tmp_path: Path) -> None:
    from PIL import Image

    strip = tmp_path / "strip.png"
    out = platform("--robot", "arm", "--task", "push_block_left", "--seed", "2", "--episodes", "2",
                   "--size", "64x48", "--png", str(strip))
    assert out.returncode == 0, out.stderr
    margin, top = StripWriter.MARGIN_W, StripWriter.TITLE_H + StripWriter.ROLES_H
    assert Image.open(strip).size == (margin + 2 * 64, 2 * (top + 8 * 48))  # one block an episode


@pytest.mark.parametrize(
    ("args", "gl", "message"),
    [
        (
            ("--robot", "arm", "--task", "stack"),
            "egl",
            "error: unknown task 'stack' for arm; tasks: cube_in_bowl, push_block_left",
        ),
        (
            ("--robot", "arm", "--task", "cube_in_bowl", "--size", "big"),
            "egl",
            "error: --size 'big' is not WIDTHxHEIGHT",
        ),
        (
            ("--robot", "arm", "--task", "cube_in_bowl"),
            "bogus",
            "error: MuJoCo cannot start: invalid value for environment variable MUJOCO_GL: bogus; use MUJOCO_GL=egl",
        ),
    ],
)
def test_bad_input_is_one_line(args: tuple[str, ...], gl: str, message: str) -> None:
    out = platform(*args, gl=gl)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0].startswith(message), out.stderr
    assert "Traceback" not in out.stderr


def test_video_writer_refuses_a_frame_of_another_size_and_closes_once(tmp_path: Path) -> None:
    """OpenCV drops a frame of another size without a word, so the writer refuses it; a
    second close() (an error path closing again) leaves the finished video as it is."""
    cv2 = pytest.importorskip("cv2")
    from shallowpi.errors import PlatformError
    from shallowpi.robots.sim.views import VideoWriter

    path = tmp_path / "episode.mp4"
    video = VideoWriter(path, fps=10)
    frame = np.zeros((48, 64, 3), np.uint8)
    for _ in range(3):
        video.add([frame, frame])  # two cameras side by side: 48 x 128
    with pytest.raises(PlatformError, match=r"frame of \(48, 64\) after frames of \(48, 128\)"):
        video.add([frame])
    video.close()
    video.close()
    capture = cv2.VideoCapture(str(path))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 3
    assert (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))) == (128, 48)
    capture.release()
    assert not list(tmp_path.glob("*.tmp.mp4"))
