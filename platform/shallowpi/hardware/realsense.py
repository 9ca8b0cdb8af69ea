"""Intel RealSense cameras through pyrealsense2's sensor API.

Why not `rs.pipeline`: it cannot open a `software_device`, and the software device is how
tests, benchmarks and the simulation twin feed frames through this very class. The sensor
API (open a profile on each sensor, start it into a frame queue) works for USB cameras and
software devices alike. (`rs.syncer` fed by a software device emits most color and depth
frames unpaired, so pairing is done here.) Each color frame is paired with the depth frame
nearest in device time (the sensors' frame counters are independent), composed into a
frameset and aligned to color with `rs.align`. Dropped frames are counted from gaps in
the color sensor's frame counter (a color frame whose depth frame never came is one).

    cam = RealSenseCamera(RealSenseConfig(name="head", serial="123456789012", depth=True))
    with cam:
        frame = cam.latest(max_age_s=0.1)      # Frame(image, depth, capture_time_s, ...)
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.hardware.camera import CameraError, Frame, ThreadedCamera

log = logging.getLogger(__name__)

# Frames whose global timestamps put them over this long before their arrival, or 5 ms
# after it, one after the other (the median of the last STAMP_WINDOW frames), are stamped
# on a clock that is not the host's: it stepped, or librealsense's device-to-host fit is
# still settling (`StampAges`). A single frame that far behind is late: it is that old.
MAX_BELIEVED_AGE_S = 1.0
STAMP_WINDOW = 15  # frames: half a second at 30 fps; a step is told once 8 of them are past it


def import_rs() -> Any:
    """The pyrealsense2 module, or CameraError saying what to install (libusb or the extra)."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        if "libusb" in str(exc):
            raise CameraError(
                "pyrealsense2 needs libusb: install the Debian package libusb-1.0-0 "
                "(apt-get install libusb-1.0-0)"
            ) from None
        raise CameraError(
            f"pyrealsense2 is not importable ({exc}); install the realsense extra: "
            "pip install -e '.[realsense]'"
        ) from None
    return rs


@dataclass
class RealSenseConfig:
    """One RealSense by serial number; color (and depth) at width x height px and fps Hz.

    Raises CameraError for an empty serial or a non-positive width, height or fps.
    """

    name: str  # camera role, e.g. "head"
    serial: str
    width: int = 640
    height: int = 480
    fps: int = 30
    depth: bool = False
    align_depth: bool = True  # reproject depth into the color camera
    warmup_frames: int = 15
    timeout_s: float = 2.0
    max_failures: int = 10  # consecutive empty reads before the device is re-opened

    def __post_init__(self) -> None:
        if not self.serial:
            raise CameraError(
                f"camera '{self.name}': no serial number; list them with rs-enumerate-devices"
            )
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise CameraError(f"camera '{self.name}': width, height and fps must be positive")


DeviceOpener = Callable[[str], Any]  # serial -> rs.device
DeviceLister = Callable[[], Sequence[Any]]  # -> the rs.devices connected now


def connected_devices() -> list[Any]:
    """The RealSense devices on USB now (`platform doctor` lists their serials)."""
    return list(import_rs().context().query_devices())


def device_serial(device: Any) -> str:
    """The serial number of an rs.device. CameraError if pyrealsense2 is missing."""
    return str(device.get_info(import_rs().camera_info.serial_number))


def color_modes(device: Any) -> set[tuple[int, int, int]]:
    """Every (width px, height px, fps) at which `device` streams RGB8 colour, the format
    `RealSenseCamera` opens. CameraError if pyrealsense2 is missing."""
    rs = import_rs()
    modes = set()
    for sensor in device.query_sensors():
        for profile in sensor.get_stream_profiles():
            if profile.stream_type() == rs.stream.color and profile.format() == rs.format.rgb8:
                video = profile.as_video_stream_profile()
                modes.add((video.width(), video.height(), profile.fps()))
    return modes


def find_usb_device(serial: str, devices: DeviceLister = connected_devices) -> Any:
    """The connected RealSense with this serial number, or a one-line error listing those found."""
    found = []
    for device in devices():
        number = device_serial(device)
        if number == serial:
            return device
        found.append(number)
    listing = ", ".join(found) if found else "none connected"
    raise CameraError(
        f"RealSense {serial} not found (found: {listing}); check the cable and serial"
    )


def assign_serials(wanted: Mapping[str, str | None], connected: Sequence[str],
                   otherwise: str = "or record without cameras: --no-cameras") -> tuple[dict[str, str], list[str]]:
    """Camera role -> serial number: configured serials as they are; a single role without
    one gets the single connected camera no other role names. Returns (serials, notes to
    show the operator). Anything else is a CameraError naming the roles and the fix (and
    `otherwise`, the caller's way around, if any): a camera is never dropped without a word."""
    serials = {role: str(s) for role, s in wanted.items() if s}
    unset = [role for role, s in wanted.items() if not s]
    if not unset:
        return serials, []
    free = [s for s in connected if s not in serials.values()]
    if len(unset) == 1 and len(free) == 1:
        role, serial = unset[0], free[0]
        serials[role] = serial
        return serials, [f"camera '{role}': no serial in the robot config; using the one RealSense connected "
                         f"that no other role names ({serial}); 'robot.cameras.{role}.serial=\"{serial}\"' pins it"]
    roles = ", ".join(f"'{r}'" for r in unset)
    if free:
        found = f"{len(free)} unassigned RealSense(s) are connected ({', '.join(free)})"
    else:
        found = "no unassigned RealSense is connected"
    raise CameraError(
        f"camera {roles} of the robot config {'has' if len(unset) == 1 else 'have'} no serial and {found}; "
        f"set 'robot.cameras.{unset[0]}.serial=\"SERIAL\"'{' (one per role)' if len(unset) > 1 else ''} "
        "(`platform doctor` lists the serials)" + (f", {otherwise}" if otherwise else "")
    )


def stamp_age(rs: Any, color: Any, arrived_wall_s: float) -> float | None:
    """Seconds from the middle of `color`'s exposure to `arrived_wall_s` (`time.time()` when
    the frame reached the host) by its global timestamp, or None when the frame is not
    stamped on the host's clock. Not judged here: the host's clock may have stepped since
    librealsense fitted the camera's clock to it (`StampAges` tells).

    In the global time domain (on by default for D400 cameras since librealsense 2.23,
    its PR 3909) librealsense maps the device's clock onto the host's system clock by a
    fit it keeps updating, so `get_timestamp()` (ms) is host time. That stamp is the
    frame's hardware timestamp, the start of its readout; the metadata's `sensor_timestamp`
    (the middle of the exposure) and `frame_timestamp` (us, device clock; librealsense's
    doc/frame_metadata.md) give how much earlier the light was caught, where the kernel
    passes metadata through. `rs`: the pyrealsense2 module (`import_rs`, looked up once by
    the camera, not at every frame).
    """
    if color.get_frame_timestamp_domain() != rs.timestamp_domain.global_time:
        return None
    stamp_s = color.get_timestamp() / 1000.0
    meta = rs.frame_metadata_value
    if color.supports_frame_metadata(meta.sensor_timestamp) and color.supports_frame_metadata(meta.frame_timestamp):
        readout_us = color.get_frame_metadata(meta.frame_timestamp) - color.get_frame_metadata(meta.sensor_timestamp)
        if 0 <= readout_us < MAX_BELIEVED_AGE_S * 1e6:  # the device counter wraps: ignore a nonsense one
            stamp_s -= readout_us / 1e6
    return arrived_wall_s - stamp_s


class StampAges:
    """Frame ages (s, at arrival) from their global stamps' ages (`stamp_age`), telling a
    host clock that stepped from a frame that is late.

    A step moves every frame's stamp age and it stays moved; a late frame (the host or the
    USB stalled, and the frames queued meanwhile arrive at once) has its own grow. So the
    stamp ages of the last `window` frames are kept: while their median is believable
    (within 5 ms in the future .. MAX_BELIEVED_AGE_S), a frame's stamp age is its age,
    however large (one exposed 3 s before it arrived is 3 s old: stale); once the median is
    not, the clock stepped (`stepped`) and ages count from it: the typical frame's from its
    arrival, one further behind by that much more. Until the window holds more frames of
    the step than from before it, those frames count as old as they look (stale for a
    moment, rather than a late frame taken as fresh), and no step is seen before the window
    is more than half full (after a (re)open, the first frames' stamp ages are their ages).
    An age under 0 counts as 0 (arrival). The lower median: half the window late is not a
    step. Not thread-safe (one reader).
    """

    def __init__(self, window: int = STAMP_WINDOW) -> None:
        self._ages: deque[float] = deque(maxlen=window)
        self.stepped = False  # ages count from the median: the host's clock stepped

    def reset(self) -> None:
        """Forget the frames so far (a re-opened device: librealsense fits its clock anew)."""
        self._ages.clear()
        self.stepped = False

    def age(self, stamp_age_s: float) -> float:
        """The age at arrival (s, >= 0) of the frame whose stamp is `stamp_age_s` old."""
        self._ages.append(stamp_age_s)
        base = statistics.median_low(self._ages)
        # Not before the window is more than half full (a (re)open empties it): a late
        # first frame alone would be its median, taken for a step, and read as fresh.
        settled = len(self._ages) > (self._ages.maxlen or 0) // 2
        self.stepped = settled and not -0.005 <= base <= MAX_BELIEVED_AGE_S
        return max(stamp_age_s - base if self.stepped else stamp_age_s, 0.0)


def _by_sensor(streams: Sequence[tuple[Any, Any, Any]], rs: Any) -> list[tuple[Any, list[tuple[Any, Any]]]]:
    """(sensor, profile, queue) triples grouped per sensor: [(sensor, [(profile, queue)])].
    A sensor opens once with all its profiles: a D405 streams color and depth from its
    one stereo module, which a second `open` refuses ("already opened"). Sensors are told
    apart by name (pyrealsense2 wraps one sensor in a new object at each query)."""
    groups: dict[str, tuple[Any, list[tuple[Any, Any]]]] = {}
    for sensor, profile, queue in streams:
        groups.setdefault(sensor.get_info(rs.camera_info.name), (sensor, []))[1].append((profile, queue))
    return list(groups.values())


def _router(queues: Mapping[Any, Any]) -> Callable[[Any], None]:
    """A sensor callback putting each frame in the queue of its stream type (runs on
    librealsense's thread; the queues keep the frames)."""
    def route(frame: Any) -> None:
        queues[frame.get_profile().stream_type()].enqueue(frame)

    return route


class RealSenseCamera(ThreadedCamera):
    """A `ThreadedCamera` on a RealSense (USB or `rs.software_device`, via `open_device`).

    Frames: image uint8 [H, W, 3] RGB; with `depth`, uint16 [H, W] in units of the depth
    sensor's scale (m), aligned to color when `align_depth`; `capture_time_s` is the color
    frame's device timestamp (ms -> s), `sequence` its frame counter; `host_time_s` the
    middle of its exposure on `time.monotonic()` where the camera stamps frames in global
    time (`stamp_age`; a frame that reached the host late is that old, and after the host's
    clock stepped the ages count from the step: `StampAges`), else its arrival, which
    leaves out the exposure and the USB transfer (the log says so once). Opening raises
    CameraError when the serial is not found (via `find_usb_device`), the device lacks the
    configured stream, or a sensor cannot start (e.g. another process holds it).
    """

    def __init__(self, config: RealSenseConfig, open_device: DeviceOpener = find_usb_device):
        super().__init__(
            name=config.name,
            timeout_s=config.timeout_s,
            warmup_frames=config.warmup_frames,
            max_failures=config.max_failures,
        )
        self.config = config
        self._open_device = open_device
        self._rs = import_rs()
        self._sensors: list[Any] = []
        self._color_queue: Any = None
        self._depth_queue: Any = None
        self._align: Any = None
        self._depth_scale = 0.001
        self._pending: tuple[Any, Any] | None = None
        self._held_depth: Any = None  # a depth frame too new for the last color frame: the next one's
        self._composer: Any = None
        self._composed: Any = None
        self._arrival_warned = False  # frame ages count from arrival: said once
        self._stamp_ages = StampAges()
        self._late_said = False  # a late frame was logged; again after one on time

    # -- device ------------------------------------------------------------------------
    def _open(self) -> None:
        # Any librealsense call here can raise RuntimeError (a control another process holds,
        # a device resetting), not only the sensors' open and start: each is one line.
        try:
            self._open_streams()
        except RuntimeError as exc:
            self._close()
            raise CameraError(
                f"camera '{self.config.name}' (RealSense {self.config.serial}) could not start: {exc}; "
                "is another process using it?"
            ) from None

    def _open_streams(self) -> None:
        rs, cfg = self._rs, self.config
        self._stamp_ages.reset()
        device = self._open_device(cfg.serial)
        color_sensor, color_profile = self._find_stream(device, rs.stream.color, rs.format.rgb8)
        if color_sensor.supports(rs.option.auto_exposure_priority):
            # On (the factory setting), auto-exposure may lengthen the exposure past the frame
            # period in dim light and halve the frame rate: consecutive frame numbers, so no
            # drop is counted, and 15 Hz pictures under 30 Hz rows (librealsense #4963).
            color_sensor.set_option(rs.option.auto_exposure_priority, 0)
        self._color_queue = rs.frame_queue(2, keep_frames=True)
        opened = [(color_sensor, color_profile, self._color_queue)]
        if cfg.depth:
            depth_sensor, depth_profile = self._find_stream(device, rs.stream.depth, rs.format.z16)
            self._depth_queue = rs.frame_queue(2, keep_frames=True)
            self._held_depth = None
            opened.append((depth_sensor, depth_profile, self._depth_queue))
            self._depth_scale = float(depth_sensor.as_depth_sensor().get_depth_scale())
            self._align = rs.align(rs.stream.color) if cfg.align_depth else None
            self._composed = rs.frame_queue(1, keep_frames=True)
            self._composer = rs.processing_block(self._compose)
            self._composer.start(self._composed)
        self._sensors = []
        for sensor, streams in _by_sensor(opened, rs):
            if sensor.supports(rs.option.global_time_enabled):
                # Stamps on the host's clock, so a frame's age counts from its exposure:
                # librealsense's default, set on both sensors because depth is paired
                # with color by timestamp and both must be in one domain.
                sensor.set_option(rs.option.global_time_enabled, 1)
            sensor.open([profile for profile, _ in streams])
            self._sensors.append(sensor)
            if len(streams) == 1:
                sensor.start(streams[0][1])
            else:  # a D405: color and depth from one sensor, one callback for both
                sensor.start(_router({profile.stream_type(): queue for profile, queue in streams}))

    def _find_stream(self, device: Any, stream: Any, fmt: Any) -> tuple[Any, Any]:
        cfg = self.config
        offered = set()
        for sensor in device.query_sensors():
            for profile in sensor.get_stream_profiles():
                if profile.stream_type() != stream:
                    continue
                video = profile.as_video_stream_profile()
                offered.add(f"{video.width()}x{video.height()}@{profile.fps()}")
                if (
                    profile.format() == fmt
                    and video.width() == cfg.width
                    and video.height() == cfg.height
                    and profile.fps() == cfg.fps
                ):
                    return sensor, profile
        kind = str(stream).split(".")[-1]
        raise CameraError(
            f"camera '{cfg.name}' (RealSense {cfg.serial}) has no {kind} stream "
            f"{cfg.width}x{cfg.height}@{cfg.fps} {str(fmt).split('.')[-1]} "
            f"(offers: {', '.join(sorted(offered)) or 'none'})"
        )

    def _close(self) -> None:
        for sensor in self._sensors:
            for call in (sensor.stop, sensor.close):
                with contextlib.suppress(RuntimeError):  # already stopped, or unplugged
                    call()
        self._sensors = []
        if self._composer is not None:
            self._composer = None

    # -- frames ------------------------------------------------------------------------
    def _compose(self, frame: Any, source: Any) -> None:
        # Runs inside `processing_block.invoke`: turns the pending (color, depth) pair into
        # a frameset, the only input `rs.align` takes.
        color, depth = self._pending
        source.frame_ready(source.allocate_composite_frame([color, depth]))

    def _read(self, timeout_s: float) -> Frame | None:
        ok, color = self._color_queue.try_wait_for_frame(int(timeout_s * 1000))
        if not ok:
            return None
        arrived, arrived_wall = time.monotonic(), time.time()
        host_time = self._host_time(color, arrived, arrived_wall)
        depth_image = None
        if self.config.depth:
            depth = self._matching_depth(color, timeout_s)
            if depth is None:
                return None
            if self._align is not None:
                self._pending = (color, depth)
                self._composer.invoke(color)
                frameset = self._composed.wait_for_frame(int(timeout_s * 1000)).as_frameset()
                aligned = self._align.process(frameset)
                color, depth = aligned.get_color_frame(), aligned.get_depth_frame()
            depth_image = np.asanyarray(depth.get_data()).copy()
        image = np.asanyarray(color.get_data()).copy()
        return Frame(
            image=image,
            depth=depth_image,
            depth_scale_m=self._depth_scale,
            capture_time_s=color.get_timestamp() / 1000.0,
            sequence=int(color.get_frame_number()),
            host_time_s=host_time,
            arrived_s=arrived,
        )

    def _host_time(self, color: Any, arrived: float, arrived_wall: float) -> float:
        """The middle of the frame's exposure on the host's monotonic clock (`StampAges`:
        a late frame is as old as its stamp says, whatever the size; after a clock step the
        ages count from the step, logged as it is found), else its arrival (said once)."""
        stamp_age_s = stamp_age(self._rs, color, arrived_wall)
        if stamp_age_s is None:
            if not self._arrival_warned:  # the twin's software device, or a camera without global time
                self._arrival_warned = True
                log.info("camera '%s' stamps frames in %s: frame ages count from arrival", self.name,
                         color.get_frame_timestamp_domain().name)
            return arrived
        ages, was_stepped = self._stamp_ages, self._stamp_ages.stepped
        age = ages.age(stamp_age_s)
        if ages.stepped and not was_stepped:
            log.warning("camera '%s': its global timestamps are %.1f s from the host's clock, frame after frame (was "
                        "the clock stepped?); frame ages count from that offset, from arrival for a frame on time",
                        self.name, stamp_age_s)
        elif was_stepped and not ages.stepped:
            log.warning("camera '%s': its global timestamps agree with the host's clock again", self.name)
        if age > MAX_BELIEVED_AGE_S and not self._late_said:
            self._late_said = True  # once for a run of late frames (a stall queues a few)
            log.warning("camera '%s': frame %d reached the host %.2f s after its exposure (the host or its USB "
                        "stalled?): it counts as that old", self.name, color.get_frame_number(), age)
        elif age <= MAX_BELIEVED_AGE_S:
            self._late_said = False
        return arrived - age

    def _matching_depth(self, color: Any, timeout_s: float) -> Any:
        """The depth frame within half a period of `color` in device time, or None (this color
        frame goes unpublished: a gap the drop count sees). Older depth frames are discarded;
        a newer one is kept for the next color frame. Taking the first not-too-old frame
        instead paired every later color frame with the next period's depth after a single
        lost depth frame, or a depth stream started after the color one, for good."""
        half = 500.0 / self.config.fps
        stamp = color.get_timestamp()
        deadline = time.monotonic() + timeout_s
        while True:
            depth, self._held_depth = self._held_depth, None
            if depth is None:
                left = max(1, int((deadline - time.monotonic()) * 1000))
                ok, depth = self._depth_queue.try_wait_for_frame(left)
                if not ok:
                    return None
            offset = depth.get_timestamp() - stamp
            if offset > half:  # this color frame's depth never came
                self._held_depth = depth
                return None
            if offset >= -half:
                return depth
