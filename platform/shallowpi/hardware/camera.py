"""The `Camera` seam: a device read on its own thread, of which callers see the latest frame.

A camera's reader thread keeps exactly one frame, the newest; the control loop asks for it
with `latest()`, which never blocks longer than the camera's timeout and raises a one-line
error naming the camera when the frame is late or stale. Drivers (RealSense, OpenCV)
subclass `ThreadedCamera` and only say how to open, read one frame and close.

Frames are published in the order of the device's frame counter: one that comes after a
newer one (out of order) is never published over it (the loop would see the picture go
back in time), and drops are counted from forward gaps only.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from shallowpi.errors import PlatformError

log = logging.getLogger(__name__)

# A frame numbered at most this far behind the newest one published came out of order (it
# is not published); one further behind is a device whose frame counter restarted without
# a re-open (a firmware reset): its frames are published again from there. No queue on the
# way (librealsense's keeps two frames) holds a frame back by more.
MAX_REORDER_FRAMES = 8
# This many frames in a row behind the newest one published are a counter that restarted,
# however close to it they are (a device reset two frames after the last re-open).
RESTART_AFTER_BEHIND = 3


class CameraError(PlatformError):
    """A camera that cannot be found, opened or read."""


class CameraTimeout(CameraError):
    """No frame (or no fresh frame) arrived in time."""


@dataclass(frozen=True)
class Frame:
    """One capture. Times are seconds; `capture_time_s` is the device's clock when it has one.

    image: uint8 HxWx3 RGB. depth: uint16 HxW in units of `depth_scale_m` (aligned to the
    image), or None. sequence: the device's frame counter (gaps are dropped frames).
    host_time_s: `time.monotonic()` of the capture where the camera says when it exposed
    the frame on the host's clock (a RealSense in global time), else when the frame
    reached the host; frame ages and staleness count from it. arrived_s: `time.monotonic()`
    when it reached the host (None: `host_time_s` is that); whether a camera still sends
    counts from it, so that a host clock step, which ages a global-time frame by the step
    for a few frames, is not taken for a camera gone silent.
    """

    image: np.ndarray
    capture_time_s: float
    sequence: int
    host_time_s: float
    depth: np.ndarray | None = None
    depth_scale_m: float = 0.001
    arrived_s: float | None = None

    def depth_m(self) -> np.ndarray | None:
        """Depth in metres (float32), or None for a color-only camera."""
        if self.depth is None:
            return None
        return self.depth.astype(np.float32) * np.float32(self.depth_scale_m)


@runtime_checkable
class Camera(Protocol):
    """What the control loop needs of a camera; `ThreadedCamera` is the implementation."""

    name: str

    def start(self) -> None:
        """Open the device and start reading; CameraError if it cannot be opened."""
        ...

    def stop(self) -> None:
        """Stop reading and release the device; the latest frame is forgotten."""
        ...

    @property
    def is_running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        ...

    def latest(self, max_age_s: float | None = None, newer_than: int | None = None) -> Frame:
        """The newest frame, at most `max_age_s` old and with `sequence > newer_than`.

        Raises CameraError when not started, CameraTimeout when no such frame arrives
        within the camera's timeout.
        """
        ...


@dataclass
class CameraStats:
    """Counters kept by the reader thread since construction (not reset by stop/start)."""

    frames: int = 0  # frames published
    dropped: int = 0  # frame numbers skipped by the published ones (forward gaps in the device's counter)
    late: int = 0  # frames that came after a newer one: not published (their number counted in `dropped`)
    reopens: int = 0
    read_errors: int = 0


@dataclass
class ThreadedCamera:
    """A reader thread that keeps the newest frame; subclasses implement `_open/_read/_close`.

    `_read(timeout_s)` returns a Frame or None (nothing yet). After `max_failures`
    consecutive failed reads the device is closed and opened again (an unplugged USB
    camera comes back this way); `latest()` keeps raising a timeout meanwhile.

    Threads: `latest()` may be called from any thread (a lock and a condition guard the
    frame); `start()`/`stop()` belong to one owner. The reader thread is a daemon. Any
    exception a driver's `_read` raises is counted in `stats.read_errors`, kept for the
    next timeout's message, and treated as a failed read.
    """

    name: str
    timeout_s: float = 2.0
    warmup_frames: int = 0
    max_failures: int = 10
    stats: CameraStats = field(default_factory=CameraStats, init=False)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._new_frame = threading.Condition(self._lock)
        self._frame: Frame | None = None
        self._frame_predates_reopen = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_sequence: int | None = None
        self._behind = 0  # frames in a row numbered at or behind `_last_sequence`
        self._error: str | None = None

    # -- to implement ------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self, timeout_s: float) -> Frame | None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def last_error(self) -> str | None:
        """The driver's last read or re-open error, until a frame arrives again; None if none."""
        return self._error

    @property
    def is_running(self) -> bool:
        """True from `start()` until `stop()`, while the reader thread is alive."""
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def start(self) -> None:
        """Open the device, read and drop `warmup_frames`, then start the reader thread.

        A no-op when running. Raises the driver's CameraError when the device cannot be
        opened, or a reader from the last `stop()` still holds it; CameraTimeout when a
        warm-up frame does not come within `timeout_s` (the device is closed again).
        """
        if self.is_running:
            return
        if self._thread is not None:  # stopped, but its reader was still re-opening the device
            self._thread.join(timeout=self.timeout_s + 1.0)
            if self._thread.is_alive():
                raise CameraError(f"camera '{self.name}' is still closing from its last stop; start it again later")
            self._thread = None
        self._open()
        try:
            self._warm_up()
        except BaseException:
            self._close()  # a failed start leaves no sensor streaming
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the reader (waits up to `timeout_s + 1` s), which closes the device as it
        ends, and drop the frame. A reader still inside a slow re-open after that wait closes
        the device when the open returns; `start()` waits for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=self.timeout_s + 1.0)
            if thread.is_alive():
                log.warning("camera '%s': its reader is still re-opening the device; it closes it when done",
                            self.name)
            else:
                self._thread = None
        else:
            self._close()
        with self._lock:
            self._frame = None
            self._last_sequence, self._behind = None, 0

    def __enter__(self) -> ThreadedCamera:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading -----------------------------------------------------------------------
    def latest(self, max_age_s: float | None = None, newer_than: int | None = None) -> Frame:
        """The newest frame; waits up to `timeout_s` for one younger than `max_age_s` and
        with a sequence number above `newer_than` (pass the last one used to never see a
        frame twice). Without either, returns at once once any frame has arrived, even one
        from before a re-open: a control loop (DynamixelRobot.observe) judges its age itself.

        Raises CameraError when not started; CameraTimeout, naming the camera and the
        frame's age, when no frame fits by the deadline. Thread-safe.
        """
        if not self.is_running:
            raise CameraError(f"camera '{self.name}' is not started; call start() first")
        deadline = time.monotonic() + self.timeout_s
        with self._lock:
            while True:
                frame = self._frame
                now = time.monotonic()
                if frame is not None and self._fresh(frame, now, max_age_s, newer_than):
                    return frame
                if now >= deadline:
                    raise self._late_error(frame, now, max_age_s)
                self._new_frame.wait(timeout=deadline - now)

    def _fresh(self, frame: Frame, now: float, max_age_s: float | None, newer_than: int | None) -> bool:
        if self._frame_predates_reopen and (max_age_s is not None or newer_than is not None):
            return False
        if max_age_s is not None and now - frame.host_time_s > max_age_s:
            return False
        return newer_than is None or frame.sequence > newer_than

    def _late_error(self, frame: Frame | None, now: float, max_age_s: float | None) -> CameraError:
        why = f" (last error: {self._error})" if self._error else ""
        if frame is None:
            return CameraTimeout(
                f"camera '{self.name}' gave no frame in {self.timeout_s:.1f} s{why}; "
                "check its cable and that no other process holds it"
            )
        age = now - frame.host_time_s
        limit = f"max age {max_age_s * 1000:.0f} ms" if max_age_s is not None else "a new frame"
        return CameraTimeout(
            f"camera '{self.name}' frame {frame.sequence} is stale ({age * 1000:.0f} ms old, "
            f"wanted {limit}){why}; check its cable, USB bandwidth and frame rate"
        )

    def _warm_up(self) -> None:
        # Auto-exposure settles over the first frames; they are read and dropped here. A read
        # that gives nothing is not yet a failure (a color frame whose depth frame has not come:
        # the depth stream starts later); only `timeout_s` with no frame at all is.
        kept, deadline = 0, time.monotonic() + self.timeout_s
        while kept < self.warmup_frames:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CameraTimeout(
                    f"camera '{self.name}' gave no frame during warm-up in {self.timeout_s:.1f} s "
                    f"({kept} of {self.warmup_frames} came); check its cable and stream settings"
                )
            if self._read(left) is not None:
                kept, deadline = kept + 1, time.monotonic() + self.timeout_s

    def _loop(self) -> None:
        # The reader owns the open device from here: only it reads and closes it, so a
        # stop() that could not wait out a slow re-open never closes it under the reader.
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    frame = self._read(min(self.timeout_s, 0.1))
                except Exception as exc:  # a driver error must not kill the reader thread
                    error = f"{type(exc).__name__}: {exc}"
                    if error != self._error:  # said once, not at every read of a failing device
                        log.warning("camera '%s': read failed: %s", self.name, error)
                    self._error = error
                    self.stats.read_errors += 1
                    frame = None
                if frame is None:
                    failures += 1
                    if failures >= self.max_failures:
                        failures = 0
                        self._reopen()
                    continue
                failures = 0
                self._publish(frame)
        finally:
            self._close()

    def _publish(self, frame: Frame) -> None:
        """Make `frame` the newest one, unless it is numbered at or behind the newest
        published (it came out of order): then it is counted in `stats.late` and dropped,
        so an older picture never replaces a newer one. Its number was counted in
        `stats.dropped` when the newer frame skipped it, and stays so: the loop never had
        that picture in its time. A frame far behind (MAX_REORDER_FRAMES), or the
        RESTART_AFTER_BEHIND-th in a row behind, is a frame counter that restarted: published,
        no drop counted. Going back and forth had counted each swapped pair twice as drops."""
        with self._lock:
            last = self._last_sequence
            if last is not None and frame.sequence <= last:
                self._behind += 1
                if last - frame.sequence <= MAX_REORDER_FRAMES and self._behind < RESTART_AFTER_BEHIND:
                    if self.stats.late == 0:  # said once; `stats.late` counts them
                        log.warning("camera '%s': frame %d came after frame %d (out of order): not published, "
                                    "counted dropped", self.name, frame.sequence, last)
                    self.stats.late += 1
                    return
                log.warning("camera '%s': its frame counter went back from %d to %d (the device restarted?); "
                            "counting from there", self.name, last, frame.sequence)
                last = None
            self._behind = 0
            if last is not None and frame.sequence > last + 1:
                self.stats.dropped += frame.sequence - last - 1
            self._last_sequence = frame.sequence
            self._frame, self._frame_predates_reopen = frame, False
            self.stats.frames += 1
            self._error = None
            self._new_frame.notify_all()

    def _reopen(self) -> None:
        log.warning("camera '%s': %s, re-opening", self.name,
                    f"reads failing ({self._error})" if self._error else "no frames")
        try:
            self._close()
            if self._stop.is_set():
                return
            self._open()
        except Exception as exc:
            self._error = f"re-open failed: {exc}"
            log.warning("camera '%s': re-open failed: %s", self.name, exc)
            self._stop.wait(0.5)
            return
        if self._stop.is_set():  # stopped while it opened: the loop's end closes it
            return
        self.stats.reopens += 1
        with self._lock:
            # A re-opened device restarts its frame counter: not a drop. Its last frame
            # predates the silence: a caller asking for a fresh or a new frame waits for
            # the next one; a plain `latest()` still gets it at once, with its age.
            self._last_sequence, self._behind = None, 0
            self._frame_predates_reopen = True
