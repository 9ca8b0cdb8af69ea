"""Shared helpers for the Dynamixel tests: robot specs and emulated chains on ptys."""

from __future__ import annotations

from contextlib import contextmanager

from shallowpi import config
from shallowpi.hardware.dynamixel.emulator import build_chains
from shallowpi.robots.spec import RobotSpec


def robot_spec(name: str) -> RobotSpec:
    return RobotSpec.from_config(config.compose([f"robot={name}"]).robot)


def centred(spec: RobotSpec, motors) -> dict:
    """One arm's calibration entries, as calibrated about each servo's centre tick (the
    uncalibrated default): {joint: MotorCalibration} for `motors`."""
    from shallowpi.robots.calibration import UNCALIBRATED, RobotCalibration

    never, kinds = RobotCalibration(UNCALIBRATED, spec.name), dict(zip(spec.joint_names, spec.joint_kinds))
    return {m.joint: never.for_motor(m, kinds[m.joint]) for m in motors}


@contextmanager
def emulated(name: str, plant_factory=None):
    """(spec pointed at the emulator's ptys, {bus: chain}); chains stop on exit."""
    spec = robot_spec(name)
    chains = build_chains(spec.bus_motors(), plant_factory)
    try:
        yield spec.with_ports({bus: chain.path for bus, chain in chains.items()}), chains
    finally:
        for chain in chains.values():
            chain.stop()
