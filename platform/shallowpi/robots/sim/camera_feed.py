"""The twin's cameras as RealSense devices: each render goes into a software RealSense, and
the robot reads it back through `RealSenseCamera`, exactly as on hardware.

Used by `--sim` through the driver stack. Frames carry the twin's simulated time as their
hardware timestamp and the control tick as their frame number, so a reader that asks for
`latest(newer_than=last)` sees every tick once: a slow render delays a frame, it never
drops or repeats one.

    feed = SimCameraFeed(twin)                     # one software device per camera role
    cameras = feed.cameras()                       # RealSenseCamera per role, serial SIM-<role>
    for cam in cameras.values(): cam.start()
    feed.publish(tick)                             # after each twin.step(): render + inject
"""

from __future__ import annotations

import numpy as np

from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.hardware.realsense_software import DEPTH_SCALE_M, SoftwareRealSense
from shallowpi.robots.sim.twin import SimTwin


def sim_serial(role: str) -> str:
    """The serial number of a camera role's software RealSense: `SIM-<role>`."""
    return f"SIM-{role}"


class SimCameraFeed:
    """The twin's cameras as software RealSense devices, one per camera role of its spec.

    `depth` (default: the spec's) also injects depth frames, uint16 in DEPTH_SCALE_M metre
    units. Read them through `cameras()`; call `publish(tick)` after each twin step.
    """

    def __init__(self, twin: SimTwin, depth: bool | None = None):
        self.twin = twin
        spec = twin.spec
        self.depth = spec.depth if depth is None else depth
        fovy = {
            role: float(twin.model.cam_fovy[twin.model.camera(role).id]) for role in spec.cameras
        }
        self.devices = {
            role: SoftwareRealSense(
                sim_serial(role),
                spec.render_width,
                spec.render_height,
                spec.fps,
                self.depth,
                fovy[role],
            )
            for role in spec.cameras
        }

    def open_device(self, serial: str) -> object:
        """A `DeviceOpener`: the software device of that serial (`SIM-<role>`)."""
        for device in self.devices.values():
            if device.serial == serial:
                return device.device
        known = ", ".join(d.serial for d in self.devices.values())
        from shallowpi.hardware.camera import CameraError

        raise CameraError(f"RealSense {serial} not found (simulated cameras: {known})")

    def cameras(self, timeout_s: float = 5.0) -> dict[str, RealSenseCamera]:
        """One driver per camera role. No warm-up (renders need none) and no re-open on
        silence: in simulation, silence means the twin is busy, not unplugged."""
        spec = self.twin.spec
        return {
            role: RealSenseCamera(
                RealSenseConfig(
                    name=role,
                    serial=sim_serial(role),
                    width=spec.render_width,
                    height=spec.render_height,
                    fps=spec.fps,
                    depth=self.depth,
                    align_depth=False,  # rendered depth already shares the color camera's pose
                    warmup_frames=0,
                    timeout_s=timeout_s,
                    max_failures=1_000_000,
                ),
                open_device=self.open_device,
            )
            for role in spec.cameras
        }

    def publish(self, tick: int) -> None:
        """Render every role at the twin's current time and inject it as frame `tick`."""
        stamp_ms = self.twin.time * 1000.0
        for role, device in self.devices.items():
            image = self.twin.render(role)
            depth = None
            if self.depth:
                metres = self.twin.render_depth(role)
                depth = np.clip(np.round(metres / DEPTH_SCALE_M), 0, 65535).astype(np.uint16)
            device.inject(image, depth, timestamp_ms=stamp_ms, frame_number=tick)
