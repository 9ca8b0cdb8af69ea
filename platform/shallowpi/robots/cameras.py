"""A robot's cameras from its config: every role gets a camera, or start-up says why not.

    cameras = realsense_cameras(spec)                    # {role: RealSenseCamera}, not started
    cameras = realsense_cameras(spec, allow_none=True)   # {}: recording joint states only

A role with `serial` (robot.cameras.ROLE.serial) uses that camera; a single role without
one uses the single connected RealSense no other role names, and says so; anything else is
a one-line CameraError naming the role and how to set it (`platform doctor` lists the
serials). Only an explicit `allow_none` (record --no-cameras) records without cameras.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from shallowpi.hardware.realsense import (
    DeviceLister,
    RealSenseCamera,
    RealSenseConfig,
    assign_serials,
    connected_devices,
    device_serial,
    find_usb_device,
)
from shallowpi.robots.spec import RobotSpec

log = logging.getLogger(__name__)


def realsense_cameras(spec: RobotSpec, *, allow_none: bool = False,
                      devices: DeviceLister = connected_devices,
                      roles: Collection[str] | None = None) -> dict[str, RealSenseCamera]:
    """{role: RealSenseCamera} for every camera role of `spec`, or only `roles` (a policy
    that reads fewer cameras than the robot has); cameras not started. A serial another
    role pins stays that role's even when that role is not opened, so a free camera is
    never one meant elsewhere.

    `devices` lists the RealSense devices present (USB by default; tests pass software
    devices). Raises CameraError when a role cannot be given a camera."""
    opened = [c for c in spec.cameras if roles is None or c.role in roles]
    if not opened:
        return {}
    if allow_none:
        log.warning("recording without cameras (--no-cameras): roles %s are not recorded",
                    ", ".join(c.role for c in spec.cameras))
        return {}
    wanted = {c.role: c.serial for c in opened}
    pinned_elsewhere = {c.serial for c in spec.cameras if c not in opened and c.serial}
    # Only roles without a serial need the list (and pyrealsense2) before the cameras start.
    connected = [device_serial(d) for d in devices()] if None in wanted.values() else []
    free = [s for s in connected if s not in pinned_elsewhere]
    # Recording may go without cameras (--no-cameras); a policy cannot run without those it reads.
    serials, notes = assign_serials(wanted, free, otherwise="" if roles is not None else
                                    "or record without cameras: --no-cameras")
    for note in notes:
        log.info("%s", note)
    return {
        c.role: RealSenseCamera(
            RealSenseConfig(name=c.role, serial=serials[c.role], width=c.width, height=c.height, fps=c.fps),
            open_device=lambda serial: find_usb_device(serial, devices),
        )
        for c in opened
    }


def camera_serials(cameras: Mapping[str, Any]) -> dict[str, str]:
    """{role: serial number} of the cameras that have one (RealSense drivers, real or
    software; the twin's renderers have none), for each recorded episode's metadata: a
    camera swapped between roles or replaced then shows (record/rig.py `camera_changes`)."""
    serials = {role: getattr(getattr(camera, "config", None), "serial", None) for role, camera in cameras.items()}
    return {role: str(serial) for role, serial in serials.items() if serial}
