"""A RealSense that exists only in software: frames are injected, the driver reads them.

pyrealsense2's `software_device` is a device like a USB camera to the sensor API, so
`RealSenseCamera` reads it unchanged. Tests inject synthetic frames through it; the
simulation twin injects its renders through it, so recording in simulation exercises the
real camera driver.

    sim = SoftwareRealSense("SIM-head", width=224, height=224, depth=True)
    cam = RealSenseCamera(RealSenseConfig("head", "SIM-head", 224, 224, depth=True,
                                          warmup_frames=0), open_device=sim.open_device)
    cam.start(); sim.inject(rgb, depth_mm, timestamp_ms=33.3); cam.latest()
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from shallowpi.hardware.camera import CameraError
from shallowpi.hardware.realsense import import_rs

DEPTH_SCALE_M = 0.001  # one depth unit is a millimetre, as on a D4xx


class SoftwareRealSense:
    """A software device with a color sensor (RGB8) and, optionally, a depth sensor (Z16)
    registered at the same pose and intrinsics, so depth is already aligned to color;
    `one_sensor`: both streams on one sensor, as a D405's stereo module gives them."""

    def __init__(
        self,
        serial: str,
        width: int,
        height: int,
        fps: int = 30,
        depth: bool = False,
        fovy_deg: float = 58.0,
        one_sensor: bool = False,
    ):
        rs = self._rs = import_rs()
        self.serial, self.width, self.height, self.fps = serial, width, height, fps
        self.device = rs.software_device()
        self.device.register_info(rs.camera_info.serial_number, serial)
        self.device.register_info(rs.camera_info.name, "Software RealSense")
        intrinsics = rs.intrinsics()
        intrinsics.width, intrinsics.height = width, height
        intrinsics.ppx, intrinsics.ppy = (width - 1) / 2.0, (height - 1) / 2.0
        focal = (height / 2.0) / np.tan(np.deg2rad(fovy_deg) / 2.0)
        intrinsics.fx = intrinsics.fy = float(focal)
        intrinsics.model = rs.distortion.none
        intrinsics.coeffs = [0.0] * 5
        self.color_sensor = self.device.add_sensor("RGB Camera")
        # A D4xx colour sensor ships with this on: it may lower the frame rate in dim light.
        self.color_sensor.add_option(rs.option.auto_exposure_priority, rs.option_range(0, 1, 1, 1), True)
        self.color_profile = self.color_sensor.add_video_stream(
            self._stream(rs.stream.color, 1, 3, rs.format.rgb8, intrinsics), True
        )
        self.depth_sensor = None
        self.depth_profile = None
        if depth:
            # one_sensor: color and depth from one stereo module, as on a D405.
            self.depth_sensor = self.color_sensor if one_sensor else self.device.add_sensor("Stereo Module")
            self.depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_SCALE_M)
            self.depth_profile = self.depth_sensor.add_video_stream(
                self._stream(rs.stream.depth, 0, 2, rs.format.z16, intrinsics), True
            )
            same_pose = rs.extrinsics()
            same_pose.rotation = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
            same_pose.translation = [0.0, 0.0, 0.0]
            self.depth_profile.register_extrinsics_to(self.color_profile, same_pose)
        self._lock = threading.Lock()
        self.frame_number = 0

    def _stream(self, kind: Any, uid: int, bpp: int, fmt: Any, intrinsics: Any) -> Any:
        stream = self._rs.video_stream()
        stream.type, stream.index, stream.uid = kind, 0, uid
        stream.width, stream.height, stream.fps = self.width, self.height, self.fps
        stream.bpp, stream.fmt, stream.intrinsics = bpp, fmt, intrinsics
        return stream

    def open_device(self, serial: str) -> Any:
        """A `DeviceOpener` for `RealSenseCamera`: this device, if the serial matches."""
        if serial != self.serial:
            raise CameraError(f"RealSense {serial} not found (found: {self.serial})")
        return self.device

    def inject(
        self,
        image: np.ndarray,
        depth: np.ndarray | None = None,
        timestamp_ms: float | None = None,
        frame_number: int | None = None,
        lose_depth: bool = False,
        global_time: bool = False,
    ) -> int:
        """Deliver one capture (uint8 HxWx3 RGB, uint16 HxW depth in mm) to the started
        sensors; returns its frame number. Numbers count up unless given (skip some to
        emulate drops); the timestamp defaults to frame_number / fps. `lose_depth`: the color
        frame alone, as when the device loses a depth frame (or its depth starts late).
        `global_time`: `timestamp_ms` is on the host's clock (`time.time()` in ms), as a
        D400 camera stamps frames in librealsense's global time domain; else the device's."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise CameraError(
                f"software RealSense {self.serial}: image must be uint8 {self.height}x{self.width}x3, "
                f"got {image.dtype} {image.shape}"
            )
        with self._lock:
            number = self.frame_number if frame_number is None else frame_number
            self.frame_number = number + 1
            stamp = number * 1000.0 / self.fps if timestamp_ms is None else timestamp_ms
            if self.depth_sensor is not None and not lose_depth:
                if depth is None or depth.shape != (self.height, self.width):
                    raise CameraError(
                        f"software RealSense {self.serial}: needs a {self.height}x{self.width} depth image"
                    )
                # Depth first: the reader waits on color, then looks for its depth.
                self.depth_sensor.on_video_frame(
                    self._frame(
                        np.ascontiguousarray(depth, np.uint16), 2, self.depth_profile, stamp, number, global_time
                    )
                )
            self.color_sensor.on_video_frame(
                self._frame(np.ascontiguousarray(image), 3, self.color_profile, stamp, number, global_time)
            )
        return number

    def _frame(self, pixels: np.ndarray, bpp: int, profile: Any, stamp: float, number: int,
               global_time: bool = False) -> Any:
        rs = self._rs
        frame = rs.software_video_frame()
        frame.pixels = pixels
        frame.bpp = bpp
        frame.stride = self.width * bpp
        frame.timestamp = stamp
        frame.domain = rs.timestamp_domain.global_time if global_time else rs.timestamp_domain.hardware_clock
        frame.frame_number = number
        frame.profile = profile.as_video_stream_profile()
        if bpp == 2:
            frame.depth_units = DEPTH_SCALE_M
        return frame
