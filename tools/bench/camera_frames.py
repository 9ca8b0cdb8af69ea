"""Frames that compress like camera images, for the storage and loader benchmarks.

Codec speed and size depend on what is in the picture: noise is incompressible and a
flat colour compresses to nothing. So the pool is rendered once from a small MuJoCo scene
(boxes on a checkered table, each camera orbiting on its own path) with a little sensor
noise added, before any timing starts. Without MuJoCo it falls back to smooth synthetic
scenes with the same noise.
"""

from __future__ import annotations

import os

import numpy as np

SCENE = """
<mujoco>
  <visual>
    <quality shadowsize="0" offsamples="0"/>
    <global offwidth="{width}" offheight="{height}"/>
  </visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".55 .45 .35" rgb2=".35 .28 .2"
             width="256" height="256" mark="random" random="0.02" markrgb=".6 .6 .6"/>
    <material name="table" texture="grid" texrepeat="6 6" reflectance="0.05"/>
    <texture name="sky" type="skybox" builtin="gradient" rgb1=".75 .8 .85" rgb2=".3 .32 .35"
             width="64" height="64"/>
  </asset>
  <worldbody>
    <light pos="0.4 -0.3 2" dir="-0.2 0.1 -1" diffuse=".8 .8 .8"/>
    <light pos="-0.6 0.5 1.5" dir="0.3 -0.2 -1" diffuse=".35 .35 .35"/>
    <geom type="plane" size="1.5 1.5 0.1" material="table"/>
    <geom type="box" pos="0.10 0.05 0.04" size="0.04 0.04 0.04" rgba=".85 .15 .1 1"/>
    <geom type="box" pos="-0.12 0.10 0.03" size="0.06 0.03 0.03" rgba=".1 .45 .85 1"/>
    <geom type="box" pos="0.02 -0.15 0.05" size="0.03 0.05 0.05" rgba=".15 .7 .25 1"/>
    <geom type="cylinder" pos="-0.05 -0.02 0.03" size="0.05 0.03" rgba=".9 .85 .8 1"/>
    <geom type="sphere" pos="0.2 -0.1 0.03" size="0.03" rgba=".95 .75 .1 1"/>
    <camera name="cam" mode="fixed" pos="0 -0.6 0.5" xyaxes="1 0 0 0 0.6 0.8"/>
  </worldbody>
</mujoco>
"""


def _look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera orientation as MuJoCo's xmat: x right, y up, camera looks down -z."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    up = np.cross(back, right)
    return np.stack([right, up, back], axis=1)


def render_pool(cameras: int, frames: int, height: int, width: int, noise: float = 2.0,
                seed: int = 0) -> list[np.ndarray]:
    """One uint8 [frames, H, W, 3] array per camera, each camera on its own orbit."""
    rng = np.random.default_rng(seed)
    try:
        clean = _render_mujoco(cameras, frames, height, width)
    except Exception as exc:  # no MuJoCo or no GL: synthetic scenes instead
        print(f"MuJoCo rendering unavailable ({type(exc).__name__}: {exc}); using synthetic frames")
        clean = _synthetic(cameras, frames, height, width)
    pools = []
    for video in clean:
        noisy = video.astype(np.float32) + rng.normal(0.0, noise, video.shape).astype(np.float32)
        pools.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return pools


def _render_mujoco(cameras: int, frames: int, height: int, width: int) -> list[np.ndarray]:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    model = mujoco.MjModel.from_xml_string(SCENE.format(width=width, height=height))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    renderer = mujoco.Renderer(model, height=height, width=width)
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    out = []
    for c in range(cameras):
        video = np.empty((frames, height, width, 3), np.uint8)
        for t in range(frames):
            phase = 2 * np.pi * (t / frames) + c * 2.1
            camera.lookat[:] = [0.03 * np.sin(phase), 0.02 * np.cos(phase), 0.03]
            camera.distance = 0.55 + 0.1 * c + 0.05 * np.sin(2 * phase)
            camera.azimuth = 60 + 120 * c + 25 * np.sin(phase)
            camera.elevation = -35 - 10 * np.cos(phase)
            renderer.update_scene(data, camera)
            video[t] = renderer.render()
        out.append(video)
    renderer.close()
    return out


def _synthetic(cameras: int, frames: int, height: int, width: int) -> list[np.ndarray]:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for c in range(cameras):
        video = np.empty((frames, height, width, 3), np.uint8)
        for t in range(frames):
            shift = 4 * t + 40 * c
            base = 90 + 60 * np.sin((x + shift) / 80) * np.cos(y / 60)
            blob = 120 * np.exp(-(((x - width / 2 - shift % width / 4) ** 2 + (y - height / 2) ** 2) / 4000))
            for ch, gain in enumerate((1.0, 0.8, 0.6)):
                video[t, :, :, ch] = np.clip(gain * base + blob * (ch == c % 3), 0, 255)
        out.append(video)
    return out
