"""The checks behind `platform doctor`: each returns lines of text, never raises."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def serial_ports() -> list[str]:
    found = set(glob.glob("/dev/ttyUSB*")) | set(glob.glob("/dev/ttyACM*"))
    try:
        from serial.tools import list_ports

        found |= {p.device for p in list_ports.comports() if "USB" in p.device or "ACM" in p.device}
    except Exception:
        pass
    return sorted(found)


def servo_report(ports: Sequence[str] | None, bauds: Sequence[int]) -> list[str]:
    from shallowpi.errors import PlatformError
    from shallowpi.hardware.dynamixel.bus import DynamixelBus

    ports = list(ports or serial_ports())
    if not ports:
        return ["missing: no serial ports (/dev/ttyUSB*, /dev/ttyACM*): no U2D2 plugged in? "
                "(`platform emulate` gives ptys to try with --port)"]
    lines = []
    for port in ports:
        if not os.path.exists(port):
            lines.append(f"missing: {port} does not exist")
            continue
        for baud in bauds:
            bus = DynamixelBus("doctor", port, baud, {}, retries=1)
            try:
                bus.connect()
                found = bus.scan()
                if not found:
                    continue
                bus.motors = {i: s.model for i, s in found.items() if s.model is not None}
                errors = bus.hardware_errors() if bus.motors else {}
                lines.append(f"ok: {port} at {baud} baud: {len(found)} servo(s)")
                for servo_id, info in found.items():
                    state = ", ".join(errors.get(servo_id, [])) or "no errors"
                    lines.append(f"    ID {servo_id:3d}  {info.model_name:<18} firmware {info.firmware}  {state}")
                break
            except PlatformError as err:
                lines.append(f"error: {port} at {baud} baud: {err}")
                break
            finally:
                bus.disconnect()
        else:
            lines.append(f"missing: {port}: no servo answered at {', '.join(map(str, bauds))} baud "
                         "(check servo power and the baud rate)")
    return lines


def camera_report() -> list[str]:
    try:
        import pyrealsense2 as rs
    except ImportError:
        return ["missing: pyrealsense2 is not installed (pip install 'shallowpi[realsense]')"]
    try:
        devices = list(rs.context().query_devices())
    except Exception as exc:
        return [f"error: RealSense query failed: {exc}"]
    if not devices:
        return ["missing: no RealSense camera connected"]
    lines = []
    for dev in devices:
        info = {k: dev.get_info(getattr(rs.camera_info, k)) for k in ("name", "serial_number", "firmware_version")
                if dev.supports(getattr(rs.camera_info, k))}
        lines.append(f"ok: {info.get('name', '?')} serial {info.get('serial_number', '?')} "
                     f"firmware {info.get('firmware_version', '?')}")
    return lines


def torch_report() -> list[str]:
    try:
        import torch
    except ImportError:
        return ["missing: torch is not installed (only needed to train or run policies)"]
    if torch.cuda.is_available():
        return [f"ok: torch {torch.__version__}, CUDA device {torch.cuda.get_device_name(0)}"]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return [f"ok: torch {torch.__version__}, Apple MPS"]
    return [f"ok: torch {torch.__version__} on CPU only (no CUDA device)"]


def jetson_report() -> list[str]:
    release = Path("/etc/nv_tegra_release")
    if not release.is_file():
        return ["not a Jetson (no /etc/nv_tegra_release)"]
    lines = [f"ok: L4T {release.read_text().splitlines()[0].strip()}"]
    model = Path("/proc/device-tree/model")
    if model.is_file():
        lines.append(f"model: {model.read_bytes().rstrip(bytes(1)).decode(errors='replace')}")
    if shutil.which("nvpmodel"):
        try:
            out = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5).stdout
            lines.append(f"power mode: {' '.join(out.split())}")
        except (OSError, subprocess.SubprocessError) as exc:
            lines.append(f"power mode: nvpmodel failed ({exc})")
    else:
        lines.append("missing: nvpmodel not found; power mode unknown")
    return lines
