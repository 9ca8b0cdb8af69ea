"""The keys and values of a robot config (configs/robot/<name>.yaml) that `RobotSpec`
reads, checked before it reads them: a key it does not know is refused, naming the entry
and the key it was probably meant to be. A misspelt key was taken for its default without
a word: `dirction: -1` drove a mirrored joint the wrong way (calibrate takes direction
from the config), `meters_per_rad` made a linear stage a revolute joint.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any

from shallowpi.errors import ConfigError
from shallowpi.joints import JOINT_KINDS

_MOTOR = {"bus", "id", "model", "direction", "mode", "metres_per_rad", "max_current_a"}
KEYS: dict[str, frozenset[str]] = {
    "robot": frozenset({"name", "fps", "joints", "cameras", "buses", "motors", "leaders"}),
    "joint": frozenset({"name", "lower", "upper", "max_velocity", "kind"}),
    "camera": frozenset({"width", "height", "fps", "serial"}),
    "bus": frozenset({"port", "baud"}),
    "motor": frozenset(_MOTOR),
    "leader": frozenset({"bus", "motors"}),
    # A leader's motors are read from their arm's bus (teleop/leader.py): no `bus:` of their own.
    "leader motor": frozenset(_MOTOR - {"bus"}),
}


def check_robot_config(data: Mapping[str, Any], where: str) -> None:
    """ConfigError (one line: the file, the entry, the key) for a key the robot config
    does not know at any level, an entry that is not a mapping, a joint kind outside
    JOINT_KINDS, a non-finite limit or velocity bound, or a rate or camera size that is not
    a positive whole number. `data` is the robot node as plain containers."""
    _known(data, "robot", "", where)
    joints = data.get("joints")
    if not isinstance(joints, list) or not joints:
        raise ConfigError(f"{where}: joints: must list the robot's joints (name, lower, upper, max_velocity)")
    names = [joint.get("name") for joint in joints if isinstance(joint, Mapping)]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ConfigError(f"{where}: joint name(s) {', '.join(map(str, twice))} listed twice under joints:")
    for joint in joints:
        label = f"joint '{joint.get('name', '?')}'" if isinstance(joint, Mapping) else "a joints: entry"
        if isinstance(joint, Mapping) and "name" not in joint:
            raise ConfigError(f"{where}: a joints: entry lacks name: ({joint})")
        _known(joint, "joint", label, where)
        if "kind" in joint and joint["kind"] not in JOINT_KINDS:
            raise ConfigError(f"{where}: {label} has kind '{joint['kind']}'; kinds are {', '.join(JOINT_KINDS)}")
        for key in ("lower", "upper", "max_velocity"):
            if key not in joint:
                raise ConfigError(f"{where}: {label} lacks {key}:")
            if not _finite(joint[key]):
                raise ConfigError(f"{where}: {label} has {key} {joint[key]!r}; give a finite number "
                                  "(joint units: rad, m, or 0..1 for a gripper; per second for max_velocity)")
    _positive_int(data.get("fps", 30), "fps", where)
    for role, camera in _entries(data, "cameras", where):
        _known(camera, "camera", f"camera '{role}'", where)
        for key in ("width", "height"):
            _positive_int(camera.get(key), f"camera '{role}' {key}", where)
        if "fps" in camera:
            _positive_int(camera["fps"], f"camera '{role}' fps", where)
    # Two roles on one camera: the second's open fails as "another process is using it".
    pinned: dict[str, str] = {}
    for role, camera in _entries(data, "cameras", where):
        if serial := camera.get("serial"):
            if str(serial) in pinned:
                raise ConfigError(f"{where}: cameras '{pinned[str(serial)]}' and '{role}' both name serial "
                                  f"{serial}; give each role its own (`platform doctor` lists the serials)")
            pinned[str(serial)] = role
    for name, bus in _entries(data, "buses", where):
        _known(bus, "bus", f"bus '{name}'", where)
        if missing := [key for key in ("port", "baud") if key not in bus]:
            raise ConfigError(f"{where}: bus '{name}' lacks {' and '.join(missing)}:")
    for joint, motor in _entries(data, "motors", where):
        _known(motor, "motor", f"the motor of '{joint}'", where)
    for leader, arm in _entries(data, "leaders", where):
        _known(arm, "leader", f"leader '{leader}'", where)
        if "bus" not in arm or not isinstance(arm.get("motors"), Mapping):
            raise ConfigError(f"{where}: leader '{leader}' needs bus: (one of buses:) and motors: (joint -> servo)")
        for joint, motor in arm["motors"].items():
            _known(motor, "leader motor", f"leader '{leader}' motor of '{joint}'", where)


def _entries(data: Mapping[str, Any], key: str, where: str) -> Iterable[tuple[str, Any]]:
    section = data.get(key) or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: {key}: must map names to entries")
    return section.items()


def _known(entry: Any, level: str, label: str, where: str) -> None:
    what = f"{label} " if label else ""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: {what}must be a mapping of keys ({', '.join(sorted(KEYS[level]))})")
    for key in entry:
        if key not in KEYS[level]:
            close = difflib.get_close_matches(str(key), KEYS[level], n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{where}: {what}has unknown key '{key}' ({hint}{level} keys: "
                              f"{', '.join(sorted(KEYS[level]))})")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _positive_int(value: Any, what: str, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{where}: {what} is {value!r}; give a whole number > 0")
