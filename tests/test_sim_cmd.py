"""`platform sim` end to end, in a subprocess as an operator runs it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
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


@pytest.mark.parametrize(("name", "delay_s"), [("SIGINT", 0.0), ("SIGTERM", 0.3)])
def test_a_signal_mid_run_keeps_the_finished_episodes_video_strip_and_summary(
        tmp_path: Path, name: str, delay_s: float) -> None:
    """Ctrl-C or SIGTERM after an episode finished used to lose the video, the strip and the
    summary (SIGTERM killed the process outright), leaving VIDEO.tmp.mp4. Now the finished
    episodes keep all three and an episode cut short is said; `platform` exits 130."""
    cv2 = pytest.importorskip("cv2")
    from PIL import Image

    video, strip = tmp_path / "run.mp4", tmp_path / "run.png"
    env = {**os.environ, "PYTHONPATH": str(PLATFORM), "MUJOCO_GL": "egl"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "shallowpi", "sim", "--robot", "arm", "--task", "push_block_left",
         "--episodes", "12", "--size", "32x24", "--video", str(video), "--png", str(strip)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # A pytest-xdist worker ignores SIGINT, and a child inherits that: Python then
        # installs no Ctrl-C handler. The child starts as from a shell.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = proc.stdout.readline()  # the first episode's line: it finished
        assert first.startswith("episode 0 seed 0: "), first + proc.stderr.read()
        time.sleep(delay_s)  # SIGTERM mid-episode: its frames are in the video already
        proc.send_signal(getattr(signal, name))
        rest, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    out = first + rest
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, out + err
    ended = re.findall(r"^episode \d+ seed \d+: (success|FAILED) in (\d+) steps", out, re.M)
    steps = [int(n) for _, n in ended]
    assert 1 <= len(steps) < 12, out  # twelve: a loaded host reads the first line late
    wins = sum(outcome == "success" for outcome, _ in ended)
    assert (f"success {wins}/{len(steps)} (" in out and f"stopped after {len(steps)} of 12 episodes" in out), out
    assert f"video: {video}" in out and f"frames: {strip}" in out, out
    assert not list(tmp_path.glob("*.tmp*")), list(tmp_path.iterdir())
    cut = re.search(r"cut short after (\d+) ticks", out)
    ticks = int(cut.group(1)) if cut else 0
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == sum(steps) + ticks
    capture.release()
    # One block an episode (eight rows), and one for the episode cut short (up to eight).
    top = StripWriter.TITLE_H + StripWriter.ROLES_H
    blocks = len(steps) * (top + 8 * 24) + (top + min(8, ticks) * 24 if ticks else 0)
    assert Image.open(strip).size == (StripWriter.MARGIN_W + 2 * 32, blocks)


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
