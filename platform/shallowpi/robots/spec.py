"""A robot's description, read and checked from its config (configs/robot/<name>.yaml).

    joints    name, limits, velocity bound (the contract shared with the twin and the data)
    cameras   role -> width, height, fps
    buses     name -> serial port and baud rate
    motors    joint -> bus, servo ID, model, drive direction, operating mode
    leaders   leader arm name -> bus and joint -> leader motor

Everything is validated here, once, with one-line errors that name the key to fix (the
keys themselves, kinds, finite limits and positive rates first: spec_check.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shallowpi.errors import ConfigError, PlatformError
from shallowpi.hardware.dynamixel.control_table import ModelSpec, OperatingMode, model_by_name
from shallowpi.joints import METRIC_UNITS, named_gripper
from shallowpi.robots.spec_check import HOMED_KEY, check_baud, check_robot_config, check_turn_span


@dataclass(frozen=True)
class JointSpec:
    """One joint: limits in joint units (rad; m for a linear joint; 0 closed .. 1 open for a
    gripper) and its velocity bound."""

    name: str
    lower: float
    upper: float
    max_velocity: float  # joint units per second
    kind: str = "revolute"  # revolute | linear | gripper


@dataclass(frozen=True)
class MotorSpec:
    """The servo of one joint: bus, ID, model, `direction` (+1 or -1), operating mode,
    metres per shaft radian (linear joints only; 1.0 unused on the others), in current-based
    position mode the most current [A] it may use (`max_current_a`: what a gripper squeezes
    with; None leaves the servo's Goal Current, by default its full Current Limit), and the
    shaft speed its joint's max_velocity asks of it (`max_speed_rad_s`, rad/s of the output:
    max_velocity, over metres_per_rad on a linear joint; the config's, before any speed
    scale; None for a gripper, whose opening's speed depends on its calibration, and for a
    leader's motor, which only reads)."""

    joint: str
    bus: str
    id: int
    model: ModelSpec
    direction: int = 1
    mode: OperatingMode = OperatingMode.POSITION
    metres_per_rad: float = 1.0
    max_current_a: float | None = None
    max_speed_rad_s: float | None = None
    # The config's `turns_homed_externally: true`: the lab brings this multi-turn servo up
    # counting as at calibration, so its travel may cross the end of the turn its count
    # restarts in (`calibration.check_turn_travel` then lets it).
    turns_homed_externally: bool = False

    @property
    def counts_turns(self) -> bool:
        """Whether its position reading counts whole turns: every position mode but an X
        series' plain position mode, which reads one turn (extended or current-based
        position mode on an X; a Y in any mode)."""
        return not (self.mode == OperatingMode.POSITION and self.model.series == "X")

    @property
    def restarts_turn_count(self) -> bool:
        """Whether it counts whole turns and loses that count at power-off, coming up inside
        one turn (`calibration.one_turn`): an X series in extended or current-based position
        mode. A Y series keeps its multi-turn count through power-off on its Multi-turn
        Backup Battery (ROBOTIS e-Manual, YM070/YM080 pages), and reports a battery fault
        when it could not."""
        return self.counts_turns and self.model.series != "Y"


@dataclass(frozen=True)
class BusSpec:
    """A servo bus: its serial port and baud rate."""

    name: str
    port: str
    baud: int


@dataclass(frozen=True)
class LeaderSpec:
    """A leader arm: its bus and its motors, one per joint it leads."""

    name: str
    bus: str
    motors: tuple[MotorSpec, ...]


@dataclass(frozen=True)
class CameraSpec:
    """A camera role: width and height (pixels), fps, RealSense serial."""

    role: str
    width: int
    height: int
    fps: int
    serial: str | None = None  # RealSense serial number; None: the one connected, if unambiguous


@dataclass(frozen=True)
class RobotSpec:
    """A robot, checked (`from_config`): fps, joints in order, cameras, buses, follower motors
    and leader arms."""

    name: str
    fps: int
    joints: tuple[JointSpec, ...]
    cameras: tuple[CameraSpec, ...]
    buses: Mapping[str, BusSpec]
    motors: tuple[MotorSpec, ...]  # follower, in joint order
    leaders: tuple[LeaderSpec, ...] = field(default=())
    # The factor `with_speed_scale` applied to every joint's max_velocity (1: the config's).
    speed_scale: float = 1.0

    @property
    def joint_names(self) -> list[str]:
        """Joint names, in config order."""
        return [j.name for j in self.joints]

    @property
    def joint_kinds(self) -> list[str]:
        """Each joint's kind (revolute, linear, gripper), in `joint_names`' order."""
        return [j.kind for j in self.joints]

    def camera_shapes(self) -> dict[str, tuple[int, int]]:
        """{role: (height, width)} of every camera, in config order (data/features.py's
        `robot_features` takes it)."""
        return {c.role: (c.height, c.width) for c in self.cameras}

    def follower_buses(self) -> list[str]:
        """The buses of the follower motors, each once, in joint order."""
        return list(dict.fromkeys(m.bus for m in self.motors))

    def all_motors(self) -> list[MotorSpec]:
        """Every motor of the robot: the followers' in joint order, then each leader's."""
        return [*self.motors, *(m for leader in self.leaders for m in leader.motors)]

    def bus_motors(self) -> dict[str, tuple[int, dict[int, str]]]:
        """Every bus, followers and leaders: {bus: (baud, {id: model name})} (the emulator's input)."""
        out: dict[str, tuple[int, dict[int, str]]] = {
            name: (bus.baud, {}) for name, bus in self.buses.items()
        }
        for motor in self.all_motors():
            out[motor.bus][1][motor.id] = motor.model.name
        return out

    def with_ports(self, ports: Mapping[str, str]) -> RobotSpec:
        """The same robot with some buses on other ports (e.g. an emulator's ptys)."""
        unknown = set(ports) - set(self.buses)
        if unknown:
            raise ConfigError(
                f"unknown bus(es) {', '.join(sorted(unknown))} for robot '{self.name}'; "
                f"its buses are: {', '.join(self.buses)}"
            )
        buses = {n: BusSpec(n, ports.get(n, b.port), b.baud) for n, b in self.buses.items()}
        _check_ports(buses, f"robot '{self.name}'")
        return dataclasses.replace(self, buses=buses)

    def with_speed_scale(self, scale: float) -> RobotSpec:
        """The same robot with every joint's `max_velocity` times `scale` (0 < scale <= 1): the
        per-command bound every goal goes through (Robot.act), for a slow first run of a new
        policy. ConfigError outside (0, 1]."""
        if not 0 < scale <= 1:
            raise ConfigError(f"a speed scale must be in (0, 1], got {scale:g}")
        joints = tuple(dataclasses.replace(j, max_velocity=j.max_velocity * scale) for j in self.joints)
        return dataclasses.replace(self, joints=joints, speed_scale=self.speed_scale * scale)

    @classmethod
    def from_config(cls, cfg: Any) -> RobotSpec:
        """From the composed config's `robot` node (an OmegaConf node or a plain dict)."""
        data = _plain(cfg)
        name = data.get("name", "?")
        where = f"configs/robot/{name}.yaml"
        check_robot_config(data, where)
        try:
            joints = tuple(
                JointSpec(
                    name=j["name"], lower=float(j["lower"]), upper=float(j["upper"]),
                    max_velocity=float(j["max_velocity"]), kind=_kind(j["name"], data, j),
                )
                for j in data["joints"]
            )
            cameras = tuple(
                CameraSpec(role, int(c["width"]), int(c["height"]), int(c.get("fps", data["fps"])),
                           str(c["serial"]) if c.get("serial") else None)
                for role, c in (data.get("cameras") or {}).items()
            )
            buses = {n: BusSpec(n, str(b["port"]), int(b["baud"])) for n, b in (data.get("buses") or {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: malformed joints/cameras/buses entry ({exc})") from None
        for bus_spec in buses.values():
            check_baud(bus_spec.name, bus_spec.baud, where)
        names = [j.name for j in joints]
        for j in joints:
            if not j.lower < j.upper or j.max_velocity <= 0:
                raise ConfigError(f"{where}: joint '{j.name}' needs lower < upper and max_velocity > 0")
            if j.kind == "gripper":
                _check_gripper(j, where)
        raw_motors = data.get("motors") or {}
        missing = [n for n in names if n not in raw_motors]
        if raw_motors and missing:
            raise ConfigError(f"{where}: joints without a motor: {', '.join(missing)}; add them under motors:")
        extra = [n for n in raw_motors if n not in names]
        if extra:
            raise ConfigError(f"{where}: motors for unknown joints: {', '.join(extra)}; joints are: {', '.join(names)}")
        by_name = {j.name: j for j in joints}
        motors = tuple(_motor(by_name[n], raw_motors[n], None, buses, where) for n in names if n in raw_motors)
        _check_top_speeds(joints, motors, where)
        leaders = []
        led_by: dict[str, str] = {}
        for leader_name, raw in (data.get("leaders") or {}).items():
            bus = raw.get("bus")
            unknown = [n for n in raw.get("motors", {}) if n not in names]
            if unknown:
                raise ConfigError(f"{where}: leader '{leader_name}' names unknown joints: {', '.join(unknown)}")
            for joint in raw["motors"]:
                # The last leader read would win: one arm's leader would drive the other's
                # joint, and the joint it was meant to lead would hold still, unsaid.
                if joint in led_by:
                    raise ConfigError(f"{where}: joint '{joint}' is led by both leader '{led_by[joint]}' and "
                                      f"'{leader_name}'; each joint has one leader motor")
                led_by[joint] = leader_name
            leaders.append(LeaderSpec(leader_name, bus, tuple(
                _motor(by_name[n], m, bus, buses, where) for n, m in raw["motors"].items()
            )))
        _check_ports(buses, where)
        if shared := sorted({leader.bus for leader in leaders} & {m.bus for m in motors}):
            # A follower bus is the robot's: teleop would open its port a second time.
            raise ConfigError(f"{where}: bus {', '.join(map(repr, shared))} carries follower motors and a leader "
                              "arm; give the leader arm its own bus (its own adapter)")
        seen: dict[tuple[str, int], str] = {}
        for m in [*motors, *(m for leader in leaders for m in leader.motors)]:
            key = (m.bus, m.id)
            if key in seen:
                raise ConfigError(f"{where}: ID {m.id} on bus '{m.bus}' is used by both {seen[key]} and {m.joint}")
            seen[key] = m.joint
        return cls(name, int(data.get("fps", 30)), joints, cameras, buses, motors, tuple(leaders))


def _check_ports(buses: Mapping[str, BusSpec], where: str) -> None:
    """ConfigError when two buses name one serial port: each bus would write the other's
    servos (IDs repeat across arms), and the port lock, taken by the first, would report
    the second as another process's."""
    owner: dict[str, str] = {}
    for bus in buses.values():
        port = os.path.realpath(bus.port)  # a udev link and the device it names are one port
        if port in owner:
            raise ConfigError(f"{where}: buses '{owner[port]}' and '{bus.name}' both name port {bus.port}"
                              f"{'' if port == bus.port else f' ({port})'}; give each bus its own")
        owner[port] = bus.name


def _plain(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a core dependency
        pass
    return dict(cfg)


# Words that name a joint turning a gripper, not its opening (a gripper_roll is a wrist joint).
_ROTATION_WORDS = ("roll", "pitch", "yaw", "rotat", "wrist", "flex", "lift", "pan", "tilt")


def _kind(name: str, data: dict, joint: dict) -> str:
    motor = (data.get("motors") or {}).get(name) or {}
    if joint.get("kind"):
        return joint["kind"]
    if named_gripper(name):
        if any(word in name.lower() for word in _ROTATION_WORDS):
            # gripper_roll is a wrist joint: read as a 0..1 opening, its direction was ignored,
            # it moved to one side of zero only, unchecked for speed, recorded in the wrong unit.
            raise ConfigError(f"configs/robot/{data.get('name', '?')}.yaml: joint '{name}' names a gripper and a "
                              "rotation; say which in its joints: entry (kind: revolute for a wrist joint, kind: "
                              "gripper for the opening)")
        return "gripper"
    if "metres_per_rad" in motor:
        return "linear"
    return "revolute"


def _check_gripper(joint: JointSpec, where: str) -> None:
    """ConfigError for a gripper whose limits leave 0 (closed) .. 1 (open), its calibrated
    travel: `upper: 10` sent it turns past its open stop, in a mode that counts turns, and
    stalled it there at max_current_a. (Its max_velocity, in openings a second, depends on
    the calibrated span, which a config does not know: not bounded here.)"""
    if not 0.0 <= joint.lower < joint.upper <= 1.0:
        raise ConfigError(f"{where}: gripper '{joint.name}' has limits {joint.lower:g}..{joint.upper:g}; a gripper "
                          "moves within 0 (closed) .. 1 (open), its calibrated travel")


SUPPLY_MARGIN = 1.25  # over the no-load speed at the recommended voltage: a servo on the top of its input range is up to 1.23x faster


def _check_top_speeds(joints: Sequence[JointSpec], motors: Sequence[MotorSpec], where: str) -> None:
    """ConfigError for a joint whose `max_velocity` is above what its servo can turn:
    `SUPPLY_MARGIN` x its no-load speed (`ModelSpec.no_load_rad_s`, x `metres_per_rad` for a
    linear joint). Every speed bound downstream (act()'s step a tick, the executor's jump
    check, the catch-up, DART's noise) takes `max_velocity` for what the joint can do; a
    value this far past the servo is a unit slip (deg/s for rad/s: 57x) or a wrong model.
    Not a proof the joint reaches it under load, nor that the servo's registers let it:
    connect sets those (`servo_setup.clear_profiles`, `velocity_limit_fix`). A gripper's
    speed, in open fraction per second, depends on its calibrated span and is not checked
    here."""
    by_joint = {j.name: j for j in joints}
    for motor in motors:
        joint = by_joint[motor.joint]
        if joint.kind not in METRIC_UNITS:  # a gripper: its opening's speed depends on its calibration
            continue
        top = motor.model.no_load_rad_s * (motor.metres_per_rad if joint.kind == "linear" else 1.0)
        if joint.max_velocity > SUPPLY_MARGIN * top:
            unit = f"{METRIC_UNITS[joint.kind]}/s"
            raise ConfigError(
                f"{where}: joint '{joint.name}' max_velocity {joint.max_velocity:g} {unit} is above what its "
                f"{motor.model.name} turns ({motor.model.no_load_rpm:g} rev/min = {top:.3g} {unit} at no load and "
                f"the recommended voltage, {SUPPLY_MARGIN:g}x that at most); max_velocity is in {unit}")


FOLLOWER_MODES = (OperatingMode.POSITION, OperatingMode.EXTENDED_POSITION, OperatingMode.CURRENT_BASED_POSITION)


def _motor(spec: JointSpec, raw: Mapping[str, Any], bus: str | None, buses: Mapping[str, BusSpec],
           where: str) -> MotorSpec:
    """The motor of joint `spec`: a follower's (`bus` None: its own `bus:` key) or a leader
    arm's (on that arm's `bus`). ConfigError (one line, naming the joint and the key) for
    anything the servo or the joint could not do as written."""
    joint = spec.name
    follower = bus is None  # a leader's motors come with their arm's bus
    bus = raw.get("bus", bus)
    if bus not in buses:
        raise ConfigError(f"{where}: motor for '{joint}' is on bus '{bus}', which is not under buses: ({', '.join(buses)})")
    try:
        model = model_by_name(str(raw["model"]))
        mode = OperatingMode.parse(raw.get("mode", "position"))
        servo_id = int(raw["id"])
        direction = int(raw.get("direction", 1))
        metres_per_rad = float(raw.get("metres_per_rad", 1.0))
    except KeyError as exc:
        raise ConfigError(f"{where}: motor for '{joint}' lacks {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: motor for '{joint}': {exc} (id and direction are whole numbers)") from None
    except PlatformError as exc:
        raise ConfigError(f"{where}: motor for '{joint}': {exc}") from None
    if not 0 <= servo_id <= 252:
        raise ConfigError(f"{where}: motor for '{joint}' has ID {servo_id}; IDs are 0..252")
    if mode not in model.operating_modes:
        raise ConfigError(f"{where}: {model.name} (joint '{joint}') has no {mode.name.lower()} mode")
    if follower and mode not in FOLLOWER_MODES:
        # act() writes Goal Position only, which the servo ignores in these modes: in current
        # or pwm it pushes with its power-up goal (the full limit) into the hard stop once
        # torque is on; in velocity it follows nothing.
        raise ConfigError(f"{where}: follower motor for '{joint}' is in {mode.name.lower()} mode, in which the "
                          "servo ignores the position goals the robot sends; use position, extended_position or "
                          "current_based_position (a leader, torque off, may read in any mode)")
    if direction not in (1, -1):
        raise ConfigError(f"{where}: motor for '{joint}' has direction {direction}; use 1 or -1")
    current = raw.get("max_current_a")
    if follower and current is None and mode == OperatingMode.CURRENT_BASED_POSITION:
        # Goal Current would stay at its power-up value, the Current Limit (1.75 A on an
        # XL330): a gripper closing on an object squeezes with all of it.
        raise ConfigError(f"{where}: follower motor for '{joint}' is in current_based_position mode without "
                          "max_current_a; give the most current it may use (amperes, e.g. max_current_a: 0.3 "
                          "for an XL330 gripper)")
    if current is not None:
        if mode != OperatingMode.CURRENT_BASED_POSITION or "goal_current" not in model.table:
            raise ConfigError(f"{where}: motor for '{joint}' has max_current_a, which needs "
                              f"mode: current_based_position on a model with Goal Current ({model.name}, {mode.name.lower()})")
        if not float(current) > 0:
            raise ConfigError(f"{where}: motor for '{joint}' has max_current_a {current}; give amperes > 0")
    # Only a linear joint converts with metres_per_rad, and nothing else says what its shaft's
    # turn is in metres: left out, 1.0 was taken, and a leader's 0.3 rad went to the follower
    # as 0.3 m (0.045 m on a 0.15 m/rad stage). On another joint it is ignored: a slip.
    who = "motor" if follower else "leader motor"
    if spec.kind == "linear" and "metres_per_rad" not in raw:
        raise ConfigError(f"{where}: {who} for linear joint '{joint}' lacks metres_per_rad; give the metres its "
                          "stage travels per radian of the servo's turn (e.g. metres_per_rad: 0.15)")
    if spec.kind != "linear" and "metres_per_rad" in raw:
        raise ConfigError(f"{where}: {who} for {spec.kind} joint '{joint}' has metres_per_rad, which only a linear "
                          "joint uses; remove it (or give the joint kind: linear)")
    if not metres_per_rad > 0:  # 0 divides ticks by zero; a negative one is a direction: 1 or -1 says that
        raise ConfigError(f"{where}: {who} for '{joint}' has metres_per_rad {metres_per_rad:g}; give metres per "
                          "radian > 0 (a reversed stage is direction: -1)")
    speed = None
    if follower and spec.kind in METRIC_UNITS:
        speed = spec.max_velocity / metres_per_rad if spec.kind == "linear" else spec.max_velocity
    homed = raw.get(HOMED_KEY, False)
    motor = MotorSpec(joint, bus, servo_id, model, direction, mode, metres_per_rad,
                      None if current is None else float(current), speed, turns_homed_externally=homed is True)
    check_turn_span(who, joint, spec.kind, spec.lower, spec.upper, metres_per_rad, motor.counts_turns, homed, where,
                    keeps_count=not motor.restarts_turn_count)
    return motor


def parse_ports(text: str) -> dict[str, str]:
    """--ports value: the emulator's JSON line, a file holding it, or bus=path[,bus=path]."""
    import json
    from pathlib import Path

    text = text.strip()
    if text and not text.startswith("{") and "=" not in text and Path(text).is_file():
        lines = Path(text).read_text().strip().splitlines()
        if not lines:
            raise ConfigError(f"--ports file {text} is empty (has `platform emulate` printed its first line yet?)")
        text = lines[0]
    if text.startswith("{"):
        try:
            ports = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--ports is not valid JSON ({exc}); paste the first line `platform emulate` prints") from None
        if not isinstance(ports, dict):
            raise ConfigError("--ports JSON must be an object: {\"bus\": \"/dev/pts/N\"}")
        return {str(k): str(v) for k, v in ports.items()}
    pairs = [item.partition("=") for item in text.split(",") if item]
    if not pairs or any(not sep for _, sep, _ in pairs):
        raise ConfigError(f"--ports '{text}': use bus=PATH[,bus=PATH] or the JSON line `platform emulate` prints")
    return {k: v for k, _, v in pairs}
