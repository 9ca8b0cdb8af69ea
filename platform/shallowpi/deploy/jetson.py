"""Jetson profiles (configs/jetson/) and what this machine is.

A profile says which backend, precision and execution providers a target runs; `detect`
reads what the machine is: the L4T release (/etc/nv_tegra_release), the module
(/proc/device-tree/model and .../compatible: tegra234 is Orin, tegra264 Thor), the power
mode (`nvpmodel -q`) and whether the GPU clock is at its maximum (devfreq). `plan` puts
the two together: the profile to run with and one line for the operator, which says what
to change for full speed on the named Jetson, or that this machine is not it (then the
best local profile runs: cuda with a GPU, else cpu).

Every path is read under `root` ("/" on a robot), so tests point it at fake system files.
No torch: this runs on the robot before anything else.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shallowpi.errors import ConfigError, refuse_unknown_keys

log = logging.getLogger(__name__)

# compatible string -> profile name of the module that carries it
MODULES = {"nvidia,tegra234": "orin", "nvidia,tegra264": "thor"}
PRECISIONS = ("fp32", "fp16", "bf16", "fp8")


@dataclass(frozen=True)
class JetsonProfile:
    """One configs/jetson/<name>.yaml. backend: torch | onnxruntime | tensorrt; precision:
    fp32 | fp16 | bf16 | fp8; providers: onnxruntime's, in order of preference."""

    name: str
    backend: str
    device: str
    precision: str
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    jetpack: int | None = None
    python: str | None = None
    gpu_arch: str | None = None
    memory_gb: int | None = None
    compatible: str | None = None
    full_speed_mode: str | None = None

    @property
    def is_jetson(self) -> bool:
        """Whether this describes a Jetson (a profile with an SoC, a machine with L4T)."""
        return self.compatible is not None

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> JetsonProfile:
        """From a jetson config group (a dict or DictConfig); ConfigError on an unknown key."""
        refuse_unknown_keys("jetson profile", section, cls)
        data = dict(section)
        data["providers"] = tuple(data.get("providers") or ("CPUExecutionProvider",))
        return cls(**data)

    def __post_init__(self) -> None:
        # Checked here, in one line: `jetson.precision=FP16` ran fp32 while the banner said
        # fp16, and a misspelt backend was refused only after the bundle's export.
        from shallowpi.deploy.backends.base import BACKENDS  # a table of names: imports no backend

        if self.precision not in PRECISIONS:
            raise ConfigError(f"jetson.precision '{self.precision}' is not one of: {', '.join(PRECISIONS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"jetson.backend '{self.backend}' is not one of: {', '.join(BACKENDS)}")

    @classmethod
    def load(cls, name: str) -> JetsonProfile:
        """configs/jetson/<name>.yaml. Raises ConfigError naming the profiles there are."""
        from omegaconf import OmegaConf

        from shallowpi.config import config_dir, group_choices

        path = config_dir() / "jetson" / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown jetson profile '{name}'; choose one of: {', '.join(group_choices('jetson'))}")
        return cls.from_config(OmegaConf.to_container(OmegaConf.load(path), resolve=True))


@dataclass
class Machine:
    """What `detect` found. Every field None when not a Jetson (or not readable)."""

    l4t: str | None = None  # e.g. "R36 (release), REVISION: 4.0"
    model: str | None = None  # e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    compatible: list[str] = field(default_factory=list)
    power_mode: str | None = None  # e.g. "MAXN", "30W"
    gpu_freq: tuple[int, int] | None = None  # current, maximum (Hz)

    @property
    def is_jetson(self) -> bool:
        """Whether this describes a Jetson (a profile with an SoC, a machine with L4T)."""
        return self.l4t is not None

    @property
    def module(self) -> str | None:
        """The profile name of this module (orin, thor), or None."""
        return next((MODULES[c] for c in self.compatible if c in MODULES), None)

    def describe(self) -> str:
        """The operator's name for it: <model> (L4T <release>)."""
        name = self.model or (f"a Jetson {self.module}" if self.module else "a Jetson")
        return f"{name} (L4T {self.l4t})" if self.l4t else name


def _read(path: Path) -> str | None:
    try:
        return path.read_bytes().rstrip(b"\0\n").decode(errors="replace")
    except OSError:
        return None


def detect(root: Path = Path("/")) -> Machine:
    """Read the system files under `root`; never raises (a missing file leaves None)."""
    release = _read(root / "etc/nv_tegra_release")
    if release is None:
        return Machine()
    l4t = release.splitlines()[0].lstrip("# ").split(", GCID")[0] if release else "unknown"
    compatible = (_read(root / "proc/device-tree/compatible") or "").split("\0")
    return Machine(l4t, _read(root / "proc/device-tree/model"), [c for c in compatible if c],
                   _power_mode(root), _gpu_freq(root))


def _power_mode(root: Path) -> str | None:
    """`nvpmodel -q` prints "NV Power Mode: MAXN" then the mode's number."""
    exe = next((p for p in (root / "usr/sbin/nvpmodel", root / "usr/bin/nvpmodel") if os.access(p, os.X_OK)), None)
    if exe is None:
        return None
    try:
        out = subprocess.run([str(exe), "-q"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvpmodel -q failed (%s); power mode unknown", exc)
        return None
    for line in out.splitlines():
        if "Power Mode" in line:
            return line.split(":", 1)[1].strip()
    return None


def _gpu_freq(root: Path) -> tuple[int, int] | None:
    """The integrated GPU's devfreq node (gv11b, ga10b, gb10b...): current and max clock."""
    for node in sorted((root / "sys/class/devfreq").glob("*")):
        if "gpu" in node.name or node.name.split(".")[-1].startswith("g"):
            cur, top = _read(node / "cur_freq"), _read(node / "max_freq")
            if cur and top and cur.isdigit() and top.isdigit():
                return int(cur), int(top)
    return None


def full_speed_advice(machine: Machine, profile: JetsonProfile) -> str:
    """One line: what to change for full speed, or that it already runs at it. The profile's
    full-speed mode and its number (0) are the AGX modules'; an Orin NX or Nano (same SoC)
    numbers its modes otherwise, so it is pointed at its own list, and a variant of the name
    (the Orin Nano Super's "MAXN_SUPER") counts as full speed."""
    changes = []
    mode, top = machine.power_mode, profile.full_speed_mode
    if top and not (mode or "").startswith(top):
        if "AGX" in (machine.model or "AGX"):
            changes.append(f"`sudo nvpmodel -m 0` (power mode {mode or 'unknown'} -> {top})")
        else:
            changes.append(f"the fastest mode `sudo nvpmodel -q --verbose` lists (power mode {mode or 'unknown'}; "
                           f"{top} on the AGX)")
    if machine.gpu_freq is None or machine.gpu_freq[0] < machine.gpu_freq[1]:
        clock = "unknown" if machine.gpu_freq is None else f"{machine.gpu_freq[0] / 1e6:.0f} of {machine.gpu_freq[1] / 1e6:.0f} MHz"
        changes.append(f"`sudo jetson_clocks` (GPU clock {clock})")
    if not changes:
        return f"{machine.describe()}: full speed ({machine.power_mode}, clocks at maximum)"
    return f"{machine.describe()}: for full speed run " + " and ".join(changes)


# JetPack release -> its L4T major release (NVIDIA's JetPack archive).
L4T_OF_JETPACK = {5: 35, 6: 36, 7: 38}


def software_advice(machine: Machine, profile: JetsonProfile, python: tuple[int, int]) -> str | None:
    """One line when this Jetson's software is not the profile's: an L4T release of another
    JetPack than `profile.jetpack`, or a `python` (major, minor) other than `profile.python`.
    NVIDIA's onnxruntime-gpu and TensorRT wheels are built for a JetPack's own Python, so a
    robot venv on another one finds no GPU provider. None when both match or are unknown."""
    problems = []
    release = re.match(r"R(\d+)", machine.l4t or "")
    expected = L4T_OF_JETPACK.get(profile.jetpack) if profile.jetpack else None
    if release and expected and int(release.group(1)) != expected:
        problems.append(f"L4T R{release.group(1)} is not JetPack {profile.jetpack}'s (R{expected}), which the "
                        f"{profile.name} profile's TensorRT and wheels are written for")
    running = f"{python[0]}.{python[1]}"
    if profile.python and running != profile.python:
        problems.append(f"Python {running} runs this, not JetPack {profile.jetpack}'s {profile.python}, the one "
                        f"NVIDIA's onnxruntime-gpu and TensorRT wheels are built for: make the robot's venv with "
                        f"the system python{profile.python}")
    return "; ".join(problems) or None


@dataclass(frozen=True)
class Plan:
    """The profile to run with, and the one line that says why."""

    profile: JetsonProfile
    message: str
    on_target: bool  # this machine is the Jetson the command named


def plan(asked: str | JetsonProfile, machine: Machine, cuda: bool | Callable[[], bool],
         backend: str | None = None) -> Plan:
    """`--jetson asked` on `machine`: a profile name, or the composed profile with the
    command line's `jetson.*` overrides. On the named Jetson: that profile and the
    full-speed line. Elsewhere: the best local profile as shipped (another Jetson's own;
    else cuda when `cuda`, else cpu) and a line saying so, and that the overrides, made for
    the profile asked, are not used. A workstation profile (cpu, cuda) is taken as asked.
    `cuda` may be a callable, asked only when the local profile is chosen (deploy's imports
    torch: seconds, and a second CUDA runtime, on a Jetson running ONNX Runtime); `backend`,
    the command line's --backend, is the one the line names where it overrides the
    profile's."""
    profile = asked if isinstance(asked, JetsonProfile) else JetsonProfile.load(asked)
    name = profile.name
    if not profile.is_jetson:
        return Plan(profile, f"profile {name}: {backend or profile.backend} on {profile.device} "
                             f"({profile.precision})", True)
    # By the SoC the profile names, not its name: a lab's own profile (orin_nx.yaml, copied
    # from orin.yaml with fp32) runs on its module, where the name matched only orin or thor.
    if machine.is_jetson and profile.compatible in machine.compatible:
        return Plan(profile, full_speed_advice(machine, profile), True)
    local = JetsonProfile.load(machine.module or ("cuda" if (cuda() if callable(cuda) else cuda) else "cpu"))
    what = f"{machine.describe()}, not a Jetson {name}" if machine.is_jetson else \
        f"this machine is not a Jetson {name} (no /etc/nv_tegra_release)"
    unused = f"; the jetson.* overrides are for the {name} profile, not used" if profile != JetsonProfile.load(name) else ""
    runs = f"{backend} (--backend) with the profile {local.name}" if backend and backend != local.backend else \
        f"{local.backend} on {local.device} (profile {local.name})"
    return Plan(local, f"{what}: running the best local backend, {runs}{unused}", False)
