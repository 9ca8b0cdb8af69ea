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

from shallowpi.errors import ConfigError, PlatformError
from shallowpi.hardware.dynamixel.control_table import BAUD_CODES, baud_code
from shallowpi.joints import JOINT_KINDS, METRIC_UNITS

HOMED_KEY = "turns_homed_externally"
_MOTOR = {"bus", "id", "model", "direction", "mode", "metres_per_rad", "max_current_a", HOMED_KEY}
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
    JOINT_KINDS, a non-finite limit or velocity bound, a rate or camera size that is not
    a positive whole number, or a camera serial that is not text (`_check_serial`). `data`
    is the robot node as plain containers. (`RobotSpec.from_config` calls `check_baud` and
    `check_turn_span` on what it reads.)"""
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
    for role, camera in _entries(data, "cameras", where):
        _check_serial(camera.get("serial"), role, where)
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


def _check_serial(serial: Any, role: str, where: str) -> None:
    """ConfigError (one line) for a camera serial that is not text: YAML reads unquoted
    digits as a number, and digits after a leading 0 as octal (`serial: 036522070660` is
    4115165616), so the camera looked for was another one ("RealSense 4115165616 not
    found"). Which way a number was written cannot be told once read: every number is
    refused, with the quoted forms (a Hydra override keeps a leading 0 as text, but reads
    other digits as a number too)."""
    if serial is None or isinstance(serial, str):
        return
    if isinstance(serial, int) and not isinstance(serial, bool) and serial > 0:
        # The octal reading is the one a RealSense serial (12 digits, often from 0) meets in
        # a YAML file; on the command line Hydra keeps a leading 0 as text.
        quoted = f'serial: "0{serial:o}" if it was written 0{serial:o} there, else serial: "{serial}"'
    else:
        quoted = f'serial: "{serial}"'
    raise ConfigError(f"camera '{role}' serial was read as {serial!r}, not text, from {where} or a "
                      f"robot.cameras.{role}.serial override (unquoted digits are a number, and in YAML digits "
                      "after a leading 0 are octal); quote it as `platform doctor` lists it: on the command line "
                      f"'robot.cameras.{role}.serial=\"SERIAL\"', in the file {quoted}")


def check_baud(bus: str, baud: int, where: str) -> None:
    """ConfigError (one line) naming `bus` and the rates a Dynamixel takes when `baud` (bits
    per second) is not one of them (`baud_code`): the ports would be opened, and torque
    switched on elsewhere, before the first exchange failed on it."""
    try:
        baud_code(baud)
    except PlatformError:
        raise ConfigError(f"{where}: bus '{bus}' has baud {baud}, which no Dynamixel takes; give one of "
                          f"{', '.join(map(str, BAUD_CODES.values()))} (new servos answer at 57600)") from None


def check_turn_span(who: str, joint: str, kind: str, lower: float, upper: float, metres_per_rad: float,
                    multi_turn: bool, homed_externally: Any, where: str, keeps_count: bool = False) -> None:
    """ConfigError (one line) for a multi-turn motor (`multi_turn`: it counts whole turns,
    as an X series in extended or current-based position mode does, a Y series in position
    mode) whose joint's limits `lower`..`upper` (rad; m on a linear joint, over
    `metres_per_rad` to the shaft's radians; the direction only mirrors them) span more than
    one turn of its shaft, unless its motor entry says `turns_homed_externally: true`.

    Such a servo's turn count restarts at power-up (but a Y series', `keeps_count`, below),
    so after a power cycle it reads whole
    turns off, inside the joint's limits, and connect cannot tell which turn it is on: a lift
    on a lead screw read 0.024 m at 0.15 m, and the next goal drove it into its top stop.
    `turns_homed_externally: true` is a lab's word that it brings the servo up counting as at
    calibration (e.g. powered up at the same end stop each time). Also refused: that key
    with another value than true or false, or on a single-turn motor (an X series in
    position mode reads one turn, and has no count to lose). A gripper's travel in turns is
    its calibrated span, which a config does not hold: not checked here. Nor a motor that
    `keeps_count` through power-off: a Y series, on its Multi-turn Backup Battery (ROBOTIS
    e-Manual), where the key is the lab's to give or not."""
    who = f"{who} for '{joint}'"
    if not isinstance(homed_externally, bool):
        raise ConfigError(f"{where}: {who} has {HOMED_KEY} {homed_externally!r}; give true or false")
    if not multi_turn:
        if homed_externally:
            raise ConfigError(f"{where}: {who} has {HOMED_KEY}, but its servo reads within one turn in position "
                              "mode and keeps no turn count to home; remove it")
        return
    if kind not in METRIC_UNITS or homed_externally or keeps_count:
        return
    turn = 2 * math.pi * (metres_per_rad if kind == "linear" else 1.0)  # one shaft turn, in joint units
    turns = (upper - lower) / turn
    if turns <= 1:
        return
    unit = METRIC_UNITS[kind]
    raise ConfigError(
        f"{where}: {who} turns {turns:.2f} times across the joint's limits {lower:g}..{upper:g} {unit} (one turn "
        f"is {turn:.4g} {unit}), and its turn count restarts at power-up, so connect cannot tell which turn it is "
        f"on (a whole turn off reads inside the limits, and the first goal drives the joint into a stop): narrow "
        f"the limits to one turn, or, if your lab brings the servo up on the turn it was calibrated on, say so "
        f"with {HOMED_KEY}: true in its motor entry")


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
