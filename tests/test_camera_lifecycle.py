"""ThreadedCamera's lifecycle under the driver's slow or failing moments: a stop during a
slow re-open, a warm-up that fails, reads that raise. The driver here is a scripted double
of the three hooks a real driver implements (`_open`, `_read`, `_close`): the RealSense
and OpenCV drivers cannot be made to re-open slowly on demand."""

from __future__ import annotations

import logging
import threading
import time

import numpy as np
import pytest

from shallowpi.hardware.camera import CameraTimeout, Frame, ThreadedCamera


class ScriptedCamera(ThreadedCamera):
    """Opens (the `slow_open`-th open takes `slow_s`), then reads `good_reads` frames and
    after them either nothing (silence) or `fail_with` raised at every read."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.opens = 0
        self.is_open = False
        self.slow_open, self.slow_s = 0, 0.0
        self.good_reads = 0
        self.fail_with: Exception | None = None
        self.reading = 0  # _read calls in flight
        self.most_reading = 0
        self._sequence = 0

    def _open(self) -> None:
        self.opens += 1
        if self.opens == self.slow_open:
            time.sleep(self.slow_s)  # a USB re-enumeration
        self.is_open = True

    def _close(self) -> None:
        self.is_open = False

    def _read(self, timeout_s: float) -> Frame | None:
        self.reading += 1
        self.most_reading = max(self.most_reading, self.reading)
        try:
            if self._sequence < self.good_reads:
                self._sequence += 1
                time.sleep(0.01)
                now = time.monotonic()
                return Frame(np.zeros((4, 4, 3), np.uint8), now, self._sequence, now)
            if self.fail_with is not None:
                time.sleep(0.01)
                raise self.fail_with
            time.sleep(timeout_s)
            return None
        finally:
            self.reading -= 1


def _readers(name: str) -> int:
    return sum(1 for thread in threading.enumerate() if thread.name == f"camera-{name}" and thread.is_alive())


def test_a_stop_during_a_slow_reopen_leaves_the_device_closed_and_one_reader_after_a_restart():
    # stop() waited timeout_s + 1, forgot the reader and closed the device under it: the
    # reader's open then left it open, and a start() revived that reader beside a new one.
    camera = ScriptedCamera("slow", timeout_s=0.5, max_failures=3)
    camera.slow_open, camera.slow_s = 2, 2.5
    camera.start()
    time.sleep(0.4)  # silent: the reader is inside the slow re-open
    camera.stop()
    time.sleep(1.5)  # the open returns
    assert not camera.is_open and _readers("slow") == 0
    camera.start()
    time.sleep(0.5)
    assert _readers("slow") == 1 and camera.most_reading == 1
    camera.stop()
    assert not camera.is_open and _readers("slow") == 0


def test_a_start_right_after_such_a_stop_waits_for_the_old_reader():
    camera = ScriptedCamera("slower", timeout_s=0.3, max_failures=2)
    camera.slow_open, camera.slow_s = 2, 1.8
    camera.start()
    time.sleep(0.3)
    camera.stop()  # gives up waiting after 1.3 s; the open takes 1.8
    camera.start()  # waits the old reader out, then opens afresh
    assert _readers("slower") == 1 and camera.is_open
    camera.stop()
    assert not camera.is_open


def test_a_failed_warm_up_closes_the_device():
    camera = ScriptedCamera("cold", timeout_s=0.2, warmup_frames=2)
    with pytest.raises(CameraTimeout, match="gave no frame during warm-up"):
        camera.start()
    assert camera.opens == 1 and not camera.is_open and _readers("cold") == 0


def test_a_read_that_raises_is_logged_once_and_named_when_the_frames_go_stale(caplog):
    # The driver's exception was kept silently and the log blamed "no frames".
    camera = ScriptedCamera("faulty", timeout_s=0.5, max_failures=20)
    camera.good_reads, camera.fail_with = 1, ValueError("depth frame has stride 0")
    with caplog.at_level(logging.WARNING, logger="shallowpi.hardware.camera"), camera:
        first = camera.latest()
        time.sleep(0.6)
        with pytest.raises(CameraTimeout, match=r"last error: ValueError: depth frame has stride 0"):
            camera.latest(newer_than=first.sequence)
    said = [r.getMessage() for r in caplog.records if "stride 0" in r.getMessage()]
    assert said and said[0] == "camera 'faulty': read failed: ValueError: depth frame has stride 0"
    assert sum("read failed" in m for m in said) == 1  # once, however many reads failed
    assert camera.stats.read_errors > 1
