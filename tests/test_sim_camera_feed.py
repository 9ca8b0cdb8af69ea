"""The twin's renders read back through RealSenseCamera over software devices: the same
pixels and depth as rendering directly, every tick once, stamped with simulated time."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")
pytest.importorskip("pyrealsense2", exc_type=ImportError)

from shallowpi import config
from shallowpi.robots.sim.camera_feed import SimCameraFeed
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.tasks import make_tasks
from shallowpi.robots.sim.twin import TwinSpec


def test_realsense_path_gives_the_direct_renders() -> None:
    spec = TwinSpec.from_config(config.compose(["robot=bimanual"]).robot, 64, 48, depth=True)
    task = make_tasks("bimanual")["handover"]
    with DirectSimRobot(spec) as robot:
        robot.reset(4, task)
        feed = SimCameraFeed(robot.twin)
        cameras = feed.cameras()
        for cam in cameras.values():
            cam.start()
        try:
            last = {role: None for role in cameras}
            goal = robot.twin.joint_goals()
            for tick in range(1, 6):
                robot.act(goal + 0.02 * tick)
                direct = robot.observe()
                feed.publish(tick)
                for role, cam in cameras.items():
                    frame = cam.latest(newer_than=last[role])
                    last[role] = frame.sequence
                    assert frame.sequence == tick
                    assert frame.capture_time_s == pytest.approx(direct.time_s, abs=1e-6)
                    np.testing.assert_array_equal(frame.image, direct.frames[role].image)
                    metres = robot.twin.render_depth(role)
                    np.testing.assert_allclose(frame.depth_m(), metres, atol=0.0006)
            assert all(cam.stats.dropped == 0 for cam in cameras.values())
        finally:
            for cam in cameras.values():
                cam.stop()
