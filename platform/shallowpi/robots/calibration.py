"""Calibration: where each joint's zero is, which way it turns, how far it goes.

Recorded per arm (one arm = one bus: a follower or a leader) by `calibrate()`, stored
in robots/<name>/calibration.json with an id that every recorded episode carries
(`calibration_id(robot)`), so data taken under different calibrations never mix
unnoticed.

The procedure is two prompts per arm, torque off:
  1. zero pose: every joint at its zero, grippers closed -> homing offsets;
  2. sweep: move every joint through its range and open the grippers fully while the
     bus is sampled -> ranges, and each gripper's opening direction and travel.
Prompts go through a callback, so the CLI asks a person (`input`) and tests script the
motion (move the emulated shafts, then return).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from shallowpi.durable_files import LOCK_MODE, replace_bytes, replace_text
from shallowpi.errors import PlatformError
from shallowpi.hardware.dynamixel.calibration import (
    JointConverter,
    MotorCalibration,
    default_calibration,
    nearest_turn,
    unwrap_reading,
)
from shallowpi.hardware.dynamixel.control_table import REVERSE_BIT, ModelSpec, OperatingMode
from shallowpi.hardware.dynamixel.motor_bus import MotorBus
from shallowpi.robots.spec import JointSpec, MotorSpec, RobotSpec

log = logging.getLogger(__name__)

UNCALIBRATED = "uncalibrated"
# The calibration file's format. A reader refuses a later one, and any field it does not
# know, as a newer shallowpi's: read as malformed, the advice would be to calibrate again,
# and a new calibration id keeps new takes out of every store recorded in this one.
CALIBRATION_FORMAT = 1
_FILE_FIELDS = frozenset({"format", "id", "robot", "created", "arms", "adapters"})
_MOTOR_FIELDS = frozenset(f.name for f in fields(MotorCalibration))
SWEEP_MARGIN = 0.02  # of a follower joint's swept range, kept clear of each end (its hard stops)
Prompt = Callable[[str], object]


class CalibrationError(PlatformError):
    """A calibration file that is missing, malformed or for another robot."""


@dataclass(frozen=True)
class RobotCalibration:
    """Calibration of every arm of one robot: arm (bus) -> joint -> MotorCalibration."""

    id: str
    robot: str
    arms: Mapping[str, Mapping[str, MotorCalibration]] = field(default_factory=dict)
    created: str = ""
    # arm (bus) -> the USB adapter it was calibrated through (`adapter_id`), where udev names
    # one: `check_adapters` refuses a bus that is on another arm's adapter now.
    adapters: Mapping[str, str] = field(default_factory=dict)

    def for_motor(self, motor: MotorSpec, kind: str) -> MotorCalibration:
        """`motor`'s calibration on its arm; the default for a `kind` joint (zero at the centre
        tick) only when the robot was never calibrated.

        Raises CalibrationError when a calibrated robot's file lacks this motor (an arm never
        calibrated, or a joint added or renamed since): the default zero could sit anywhere
        in a real joint's travel, and the first goal would drive it there; holds another
        direction for a revolute or linear joint than its config now gives; was measured as
        another kind (a gripper's opening span on a joint now revolute or linear, or none on
        one now a gripper); or was read from another servo ID or model than the config names
        now."""
        found = self.arms.get(motor.bus, {}).get(motor.joint)
        if found is not None and ((found.servo_id and found.servo_id != motor.id)
                                  or (found.model_number and found.model_number != motor.model.number)):
            # IDs swapped in the config, a servo re-ID'd or replaced by another model: its
            # zero and sweep are another servo's, and a few hundred ticks off pass every check.
            raise CalibrationError(
                f"joint '{motor.joint}' on arm '{motor.bus}' of robot '{self.robot}' was calibrated on servo "
                f"{found.servo_id} (model {found.model_number}); the config now says servo {motor.id} "
                f"(model {motor.model.number}); calibrate it again: "
                f"`platform calibrate --robot {self.robot} --arm {motor.bus}`")
        if found is not None:
            if (kind == "gripper") != (found.span_ticks > 0):
                # Only a gripper's sweep records an opening span (`_motor_calibration`). Without
                # one a gripper reads raw ticks as its 0..1 and every goal maps to the closed
                # tick; with one, a revolute joint's direction is the gripper's measured opening.
                was = f"a gripper (span {found.span_ticks} ticks)" if found.span_ticks > 0 else "a revolute or linear joint"
                raise CalibrationError(
                    f"joint '{motor.joint}' on arm '{motor.bus}' of robot '{self.robot}' is a {kind} joint in its "
                    f"config but was calibrated as {was} (calibration {self.id}); recalibrate it: "
                    f"`platform calibrate --robot {self.robot} --arm {motor.bus}`")
            if kind != "gripper" and found.direction != motor.direction:
                # The file's direction converts; the config's, changed since, would be ignored
                # (a mirrored joint "fixed" in the config would move the same wrong way).
                raise CalibrationError(
                    f"joint '{motor.joint}' on arm '{motor.bus}' of robot '{self.robot}' has direction "
                    f"{motor.direction} in its config but was calibrated with {found.direction} (calibration "
                    f"{self.id}); calibrate it again: `platform calibrate --robot {self.robot} --arm {motor.bus}`")
            return found
        if self.id != UNCALIBRATED:
            raise CalibrationError(
                f"calibration {self.id} of robot '{self.robot}' has no entry for joint '{motor.joint}' on arm "
                f"'{motor.bus}'; calibrate it: `platform calibrate --robot {self.robot} --arm {motor.bus}`")
        return default_calibration(motor.model, motor.direction, kind)

    def check_adapters(self, spec: RobotSpec, buses: Iterable[str], by_id: Path | None = None,
                       warn: bool = True) -> None:
        """Raise CalibrationError (one line, before any port opens) when one of `buses` is
        now on another USB adapter than it was calibrated through: two identical arms whose
        adapters swapped /dev/ttyUSB numbers at a reboot pass every other check (same IDs,
        same models), and one arm's leader would drive the other with the first one's zeros.
        Buses whose adapter udev does not name (ptys, emulators) are not checked, nor those
        `unrecorded_adapters` lists, of which a warning says (unless `warn` is False)."""
        from shallowpi.hardware.dynamixel.port import adapter_id

        buses = list(buses)
        for bus in buses:
            then = self.adapters.get(bus)
            now = adapter_id(spec.buses[bus].port, by_id) if then else None
            if then and now and now != then:
                owner = next((b for b, name in self.adapters.items() if name == now), None)
                pin = f"name the port by its adapter (robot.buses.{bus}.port=/dev/serial/by-id/{then})"
                fix = (f"it is the adapter arm '{owner}' was calibrated through: the two are swapped: {pin}"
                       if owner else f"another adapter (replaced?): {pin} or, for a replacement on this arm, "
                       f"record it (`platform calibrate --robot {self.robot} --arm {bus} --adapter-only`)")
                raise CalibrationError(
                    f"robot '{self.robot}': bus '{bus}' ({spec.buses[bus].port}) is on USB adapter {now}, but was "
                    f"calibrated through {then}; {fix}")
        if warn and (unrecorded := self.unrecorded_adapters(spec, buses, by_id)):
            log.warning("%s", self.unrecorded_adapters_line(unrecorded))

    def unrecorded_adapters(self, spec: RobotSpec, buses: Iterable[str], by_id: Path | None = None) -> list[str]:
        """The calibrated arms among `buses` whose USB adapter udev names now but this
        calibration does not record (made before adapters were kept, or through a pty), on
        a robot of more than one bus (one bus cannot swap ports with another): a swap of
        their ports would pass `check_adapters` unnoticed."""
        from shallowpi.hardware.dynamixel.port import adapter_id

        if len(spec.buses) < 2:
            return []
        return [bus for bus in buses
                if bus in self.arms and not self.adapters.get(bus) and adapter_id(spec.buses[bus].port, by_id)]

    def unrecorded_adapters_line(self, buses: Sequence[str]) -> str:
        """What to do about `unrecorded_adapters`: one line, the command that records them."""
        arms = " ".join(f"--arm {bus}" for bus in buses)
        return (f"robot '{self.robot}': the calibration records no USB adapter for {', '.join(buses)}, so a swap "
                "of /dev/ttyUSB numbers with another arm at a reboot would go unnoticed; once each arm is checked "
                f"to be on its own port, record them without a sweep: platform calibrate --robot {self.robot} "
                f"{arms} --adapter-only")

    def converter(self, motor: MotorSpec, kind: str) -> JointConverter:
        """Ticks <-> joint units for `motor`, a `kind` (revolute, linear, gripper) joint."""
        return JointConverter(motor.model, self.for_motor(motor, kind), kind, motor.metres_per_rad)

    def to_json(self) -> str:
        """The calibration file's text: indented JSON."""
        arms = {a: {j: c.to_dict() for j, c in joints.items()} for a, joints in self.arms.items()}
        adapters = {"adapters": dict(self.adapters)} if self.adapters else {}
        return json.dumps({"format": CALIBRATION_FORMAT, "id": self.id, "robot": self.robot, "created": self.created,
                           "arms": arms, **adapters}, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "calibration") -> RobotCalibration:
        """From a calibration file's text (`where` names it in errors). A file without a
        format is format 1 (written before the field was).

        Raises CalibrationError when it is malformed, or has what only a newer shallowpi
        writes (a later format, a field this one does not know: upgrade, do not calibrate
        again)."""
        try:
            data = json.loads(text)
            if not (newer := _newer_fields(data)):
                arms = {a: {j: MotorCalibration.from_dict(c) for j, c in joints.items()}
                        for a, joints in data["arms"].items()}
                adapters = {str(a): str(name) for a, name in (data.get("adapters") or {}).items()}
                return cls(str(data["id"]), str(data["robot"]), arms, str(data.get("created", "")), adapters)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CalibrationError(f"{where} is malformed ({exc}); move it aside (it is read before any arm is "
                                   "calibrated again) and run `platform calibrate` for every arm") from None
        raise CalibrationError(f"{where} has {newer}, which this shallowpi does not read (a newer shallowpi's file, "
                               "or an edit by hand): upgrade shallowpi or mend the file; do not calibrate again, "
                               "which gives a new id that the datasets recorded with this one refuse")


def _newer_fields(data: Mapping) -> str:
    """What in a calibration file's JSON only a newer shallowpi writes, in words ('' when
    nothing): a later format, unknown top-level fields, unknown fields of a motor."""
    said = []
    form = data.get("format", 1)
    if not (isinstance(form, int) and 1 <= form <= CALIBRATION_FORMAT):
        said.append(f"format {form!r}; this shallowpi reads format {CALIBRATION_FORMAT}")
    if unknown := sorted(set(data) - _FILE_FIELDS):
        said.append(f"fields {', '.join(unknown)}")
    motors = {key for joints in data["arms"].values() for entry in joints.values() for key in entry}
    if unknown := sorted(motors - _MOTOR_FIELDS):
        said.append(f"motor fields {', '.join(unknown)}")
    return "; ".join(said)


def robots_dir() -> Path:
    """The robots folder: $SHALLOWPI_ROBOTS_DIR, else robots/ in the repository."""
    from shallowpi.config import REPO_ROOT

    return Path(os.environ.get("SHALLOWPI_ROBOTS_DIR", REPO_ROOT / "robots"))


def calibration_path(robot: str, root: Path | None = None) -> Path:
    """<root>/<robot>/calibration.json; `root` defaults to `robots_dir()`."""
    return (root or robots_dir()) / robot / "calibration.json"


def load_calibration(robot: str, root: Path | None = None) -> RobotCalibration:
    """The robot's recorded calibration, or the uncalibrated default (id 'uncalibrated')."""
    path = calibration_path(robot, root)
    if not path.is_file():
        return RobotCalibration(UNCALIBRATED, robot)
    calibration = RobotCalibration.from_json(path.read_text(), str(path))
    if calibration.robot != robot:
        raise CalibrationError(f"{path} is for robot '{calibration.robot}', not '{robot}'; move it or recalibrate")
    return calibration


def calibration_id(robot: str, root: Path | None = None) -> str:
    """The id recorded episodes carry: the current calibration's, or 'uncalibrated'."""
    return load_calibration(robot, root).id


def require_calibration(calibration: RobotCalibration, *, allow_uncalibrated: bool) -> str | None:
    """Refuse to drive a robot that was never calibrated, unless the caller allows it.

    Without a calibration file a joint's zero is its servo's centre tick, so the robot
    config's joint limits (radians about the calibrated zero) bound nothing real: a leader
    or a policy could drive a follower into its hard stops. Every command that puts torque
    on a real robot (`record`, `deploy`) goes through here, so they refuse alike.

    Returns None for a calibrated robot, the warning to show when an uncalibrated one is
    allowed (emulated servos, a first look at a new arm). Raises CalibrationError (one line,
    naming `platform calibrate` and --allow-uncalibrated) otherwise."""
    if calibration.id != UNCALIBRATED:
        return None
    robot = calibration.robot
    if not allow_uncalibrated:
        raise CalibrationError(
            f"robot '{robot}' has no calibration file ({calibration_path(robot)}), so joint positions would be raw "
            f"servo angles and its joint limits would guard nothing; run `platform calibrate --robot {robot}` "
            "(or pass --allow-uncalibrated, e.g. on emulated servos)")
    return (f"robot '{robot}' is not calibrated (--allow-uncalibrated): joint positions are raw servo angles "
            f"about the centre tick and its joint limits guard nothing real")


def save_calibration(calibration: RobotCalibration, root: Path | None = None) -> Path:
    """Write the robot's calibration file whole and synced (`replace_text`: a .partial
    file, then a rename); returns its path."""
    path = calibration_path(calibration.robot, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_text(path, calibration.to_json() + "\n")  # never half-written, nor lost to a power cut
    return path


def archive_path(calibration: RobotCalibration, root: Path | None = None) -> Path:
    """Where a replaced calibration file is kept: <root>/<robot>/calibrations/<created>.json
    (the id inside; one id can be saved at several times when only a leader changed)."""
    stamp = calibration.created or calibration.id
    return calibration_path(calibration.robot, root).parent / "calibrations" / f"{stamp}.json"


def update_calibration(spec: RobotSpec, measured: Mapping[str, Mapping[str, MotorCalibration]],
                       root: Path | None = None, adopt: Iterable[str] = ()) -> tuple[RobotCalibration, RobotCalibration, Path]:
    """Merge the `measured` arms into the robot's calibration file as it is now and save it,
    holding an exclusive lock (`.calibration.lock` beside it) from reading to renaming: two
    `platform calibrate` runs on one robot (a terminal an arm) each keep their arm. Merged
    into the file as it was when each started, the last to save dropped the other's arm.
    Where the file system cannot lock (some NFS mounts), it saves unlocked and says so: the
    arms just measured are not thrown away.

    The file it replaces is kept first at `archive_path` (episodes carry only the id: the
    frame they were recorded in must stay recoverable after a recalibration, e.g. for
    `deploy` of a policy trained on them).

    `adopt`: arms whose USB adapter is recorded as the one their port is on now, without a
    measurement (a replaced adapter: the entries and the id stay).

    Returns (the file before, the calibration saved, its path). Raises CalibrationError for
    a file of another robot, or an arm to adopt whose port udev does not name; OSError when
    the folder cannot be written."""
    import fcntl  # POSIX; imported here so that a reader of calibrations needs none

    folder = calibration_path(spec.name, root).parent
    folder.mkdir(parents=True, exist_ok=True)
    # Read-write: NFS locks need it. LOCK_MODE before the umask, as the calibration files
    # get: made 0o644, a lab's shared calibrations folder (umask 002) refused the next member.
    lock = os.open(folder / ".calibration.lock", os.O_RDWR | os.O_CREAT, LOCK_MODE)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)  # waits for another run's save (milliseconds)
        except OSError as err:
            log.warning("could not lock %s (%s): saving without the lock; another calibrate run of this robot "
                        "saving at this moment could drop an arm", folder / ".calibration.lock", err)
        path = calibration_path(spec.name, root)
        original = path.read_bytes() if path.is_file() else b""  # archived as it was, byte for byte
        latest = load_calibration(spec.name, root)
        result = with_arms(spec, latest, measured)
        if adopt:
            from shallowpi.hardware.dynamixel.port import adapter_id

            found = {arm: adapter_id(spec.buses[arm].port) for arm in adopt}
            if unnamed := [arm for arm, name in found.items() if not name]:
                raise CalibrationError(f"arm {', '.join(map(repr, unnamed))}: its port is no USB adapter udev names "
                                       "(/dev/serial/by-id): nothing to record")
            # Adopting is for a replaced adapter: one another arm was calibrated through means
            # the ports are swapped, and adopting it would give this arm the other's zeros.
            for arm, name in found.items():
                if owner := next((a for a, n in result.adapters.items() if n == name and a != arm), None):
                    raise CalibrationError(
                        f"arm '{arm}' is on the USB adapter arm '{owner}' was calibrated through ({name}): the ports "
                        "are swapped, not an adapter replaced; name each bus's port by its adapter "
                        "(robot.buses.BUS.port=/dev/serial/by-id/..., `ls -l /dev/serial/by-id`)")
            result = replace(result, adapters={**result.adapters, **found})
        if latest.id != UNCALIBRATED and latest != result:
            kept = archive_path(latest, root)
            kept.parent.mkdir(exist_ok=True)
            replace_bytes(kept, original)
        return latest, result, save_calibration(result, root)
    finally:
        os.close(lock)  # releases the lock


def swept_limits(robot: RobotCalibration, joint: JointSpec, motor: MotorSpec,
                 convert: JointConverter) -> tuple[float, float]:
    """A follower joint's limits (joint units): the config's, a revolute or linear joint's
    narrowed to the range the calibration's sweep moved it through, less SWEEP_MARGIN of
    that range at each end. The sweep is where the joint was seen to go, by hand, torque
    off, often to its hard stops: a goal exactly there would stall the servo against the
    stop at full current. The config's limits are one number for every arm built to it, and
    can reach past this one's hard stops. A gripper's sweep defines its 0..1 scale: in
    current-based position mode (its push capped by max_current_a) it keeps its config
    limits; in plain position mode, whose push is not capped, it is kept SWEEP_MARGIN of the
    scale clear of fully closed and fully open. A joint never calibrated (no entry: the
    centre-tick default) keeps its config limits.

    Raises PlatformError when the swept range and the config's limits do not overlap."""
    entry = robot.arms.get(motor.bus, {}).get(joint.name)
    if entry is None or (joint.kind == "gripper" and motor.mode != OperatingMode.POSITION):
        return float(joint.lower), float(joint.upper)
    if joint.kind == "gripper":
        return max(SWEEP_MARGIN, float(joint.lower)), min(1.0 - SWEEP_MARGIN, float(joint.upper))
    low, high = sorted((convert.to_joint(entry.range_min), convert.to_joint(entry.range_max)))
    margin = SWEEP_MARGIN * (high - low)
    lower, upper = max(low + margin, float(joint.lower)), min(high - margin, float(joint.upper))
    if lower >= upper:  # judged with the margin: a sliver of overlap would give inverted limits
        raise PlatformError(
            f"robot '{robot.robot}': joint '{joint.name}' was swept through {low:.3g}..{high:.3g} at calibration "
            f"{robot.id}, outside its config limits {joint.lower:g}..{joint.upper:g}: recalibrate "
            f"(`platform calibrate --robot {robot.robot} --arm {motor.bus}`) or fix the limits")
    return lower, upper


def one_turn(model: ModelSpec) -> tuple[int, int]:
    """The ticks of one turn about `model`'s centre tick, lowest and highest: what a
    single-turn servo reads (X series in position mode: 0..4095), and the turn a multi-turn
    one's count is calibrated in (YM080: -262144..262143, signed about 0)."""
    half = model.ticks_per_turn // 2
    return model.center_tick - half, model.center_tick + half - 1


def factory_position_limits(model: ModelSpec) -> tuple[int, int]:
    """`model`'s Min/Max Position Limit registers as they leave the factory (the model
    table's defaults: X 0..4095, YM080 -262144..262144), else `one_turn`."""
    lowest, highest = one_turn(model)
    return (model.defaults.get("min_position_limit", lowest), model.defaults.get("max_position_limit", highest))


def check_position_limits(robot: str, bus: MotorBus, motor: MotorSpec, convert: JointConverter,
                          lower: float, upper: float) -> None:
    """Raise PlatformError (one line) when a position-mode follower motor's joint limits
    `lower`..`upper` (joint units), through its calibration, map past its Min/Max Position
    Limit registers: a goal past them is refused without a word (a sync write has no
    reply). Motors in other modes count whole turns. Leaders, never driven, are checked by
    `check_leader_range`."""
    if motor.mode != OperatingMode.POSITION:
        return
    low, high = convert.tick_range(lower, upper)
    allowed = bus.read_one(motor.id, "min_position_limit"), bus.read_one(motor.id, "max_position_limit")
    if allowed[0] <= low and high <= allowed[1]:
        return
    # Each model's own: an X turn is 0..4095, a Y servo's signed about 0 (factory +-262144).
    full = factory_position_limits(motor.model)
    if allowed[0] > full[0] or allowed[1] < full[1]:
        # The registers, not the horn: another tool (Dynamixel Wizard, lerobot's setup)
        # narrowed them, and re-seating or recalibrating would meet the same refusal.
        raise PlatformError(
            f"robot '{robot}': joint '{motor.joint}' limits {lower:g}..{upper:g} map to ticks {low}..{high}, past "
            f"servo {motor.id}'s Min/Max Position Limit registers {allowed[0]}..{allowed[1]} on bus '{motor.bus}', "
            f"narrowed from the full turn {full[0]}..{full[1]} (another tool set them): write them back to "
            f"{full[0]} and {full[1]} (EEPROM, torque off; Dynamixel Wizard), or narrow the joint's limits in the "
            "robot config")
    # Where the joint's travel falls in the servo's turn is set by how its horn is seated,
    # not by the calibration: a new calibration alone meets the same end.
    raise PlatformError(
        f"robot '{robot}': joint '{motor.joint}' limits {lower:g}..{upper:g} map to ticks {low}..{high}, past "
        f"servo {motor.id}'s position limits {allowed[0]}..{allowed[1]} on bus '{motor.bus}': its travel crosses "
        f"the end of the servo's turn; re-seat the horn so the joint's mid-travel sits near tick "
        f"{motor.model.center_tick}, narrow its limits, or sweep less far, then "
        f"`platform calibrate --robot {robot} --arm {motor.bus}`")


def check_leader_range(robot: str, motor: MotorSpec, entry: MotorCalibration) -> None:
    """Raise PlatformError (one line) when a leader joint's swept range (`entry`'s
    range_min..range_max: where the operator moved it at calibration, in ticks unwrapped
    across the turn's end) spans a whole turn or more of a single-turn servo (an X series in
    position mode, which reads only `one_turn`): its readings repeat inside that range, so
    a reading cannot say where in it the joint is.

    A leader is moved by hand, never driven: the follower's joint limits and the servo's
    position limits bound nothing on it. Nor does a range that only crosses the turn's end
    (tick 4095 -> 0) need refusing: each reading is continued from the last across it
    (`LeaderFollower._unwrapped`). Multi-turn servos count whole turns: their travel must
    lie in the turn their count restarts in (`check_turn_travel`), their reading near it
    (`check_turn_count`)."""
    if motor.counts_turns:
        return
    lowest, highest = one_turn(motor.model)
    if entry.range_max - entry.range_min > highest - lowest:
        raise PlatformError(
            f"robot '{robot}': leader joint '{motor.joint}' was swept through ticks {entry.range_min}.."
            f"{entry.range_max} at calibration, more than servo {motor.id}'s one turn of readings ({lowest}.."
            f"{highest}) on bus '{motor.bus}': its readings repeat inside that range, so none says where the "
            f"joint is; calibrate it again, moving it through less than a turn "
            f"(`platform calibrate --robot {robot} --arm {motor.bus}`)")


def reply_without_delay(bus: MotorBus, ids: Iterable[int]) -> None:
    """Return Delay Time 0 on each servo that has another (EEPROM: torque must be off). From
    the factory each reply waits 0.5 ms first: 4 ms of an eight-servo sync read, every read
    of a leader arm or a calibration sweep."""
    for servo_id in ids:
        if bus.read_one(servo_id, "return_delay_time") != 0:
            bus.write_one(servo_id, "return_delay_time", 0)


def clear_servo_frame(bus: MotorBus, ids: Iterable[int]) -> None:
    """Homing Offset 0 and Drive Mode's reverse bit clear on each servo (EEPROM: torque must
    be off): the raw frame the calibration file is taken in. Another tool's calibration
    (lerobot's writes Homing Offset, Dynamixel Wizard either) may have set them; each value
    replaced is logged as a warning, to be written back by hand if that tool is used again."""
    for servo_id in ids:
        if (offset := bus.read_one(servo_id, "homing_offset")) != 0:
            # Logged so that the other tool's setting can be written back by hand.
            log.warning("servo %d on bus '%s': Homing Offset %d (another tool's calibration) set to 0",
                        servo_id, bus.name, offset)
            bus.write_one(servo_id, "homing_offset", 0)
        if (mode := bus.read_one(servo_id, "drive_mode")) & REVERSE_BIT:
            log.warning("servo %d on bus '%s': Drive Mode %d (reversed) set to %d", servo_id, bus.name, mode,
                        mode & ~REVERSE_BIT)
            bus.write_one(servo_id, "drive_mode", mode & ~REVERSE_BIT)


def check_turn_count(robot: str, motor: MotorSpec, convert: JointConverter, lower: float, upper: float,
                     present: float) -> None:
    """PlatformError (one line) when a motor's `present` position (joint units, as read)
    cannot be the joint's within `lower`..`upper`:
    - a single-turn motor (an X series in position mode) that reads outside its limits,
      nearer them across the turn's end than directly: the joint rests just past a limit
      the other way round (a zero calibrated near the turn's end), and the servo, which
      cannot cross its turn's end, would drive it back the long way, nearly a whole turn
      (`nearest_turn`);
    - a multi-turn motor (`MotorSpec.counts_turns`: extended or current-based position mode; a Y
      series in any position mode) that reads more than half a turn outside its limits: it
      counts from another turn than at calibration, and act() would drive the joint a turn,
      a gripper into its end stop.
    A multi-turn servo restarts its count at power-up inside `one_turn` (X: 0..4095). Its
    joint reads exactly after a power cycle only where its limits lie inside that turn,
    which `check_turn_travel` requires (called beside this one, before any torque): limits
    across the turn's end can read a turn off less than half a turn outside them (limits
    spanning half a turn to one), which this margin lets through. The margin still catches
    a motor whose lab homes its turns (`turns_homed_externally: true`, which
    `check_turn_travel` takes at its word; its limits may span more than a turn, which
    `spec_check.check_turn_span` otherwise refuses with the config) brought up on another
    turn, and a joint moved far outside its limits."""
    low, high = convert.tick_range(lower, upper)
    ticks, turn = convert.to_ticks(present), motor.model.ticks_per_turn
    if not motor.counts_turns:
        if nearest_turn(ticks, low, high, turn) != ticks:
            raise PlatformError(
                f"robot '{robot}': joint '{motor.joint}' reads tick {ticks}, outside its limits "
                f"{lower:g}..{upper:g} (ticks {low}..{high}) and nearer them across servo "
                f"{motor.id}'s turn end (tick {turn - 1} -> 0) on bus '{motor.bus}': "
                "it rests past a limit the other way round, and in position mode the servo would turn "
                "back the long way, nearly a whole turn; torque stays off: move the joint inside its "
                "range by hand and connect again")
        return
    if not low - turn // 2 <= ticks <= high + turn // 2:
        first, last = one_turn(motor.model)  # the model's own: a Y servo's is signed about 0
        raise PlatformError(
            f"robot '{robot}': joint '{motor.joint}' reads {present:.3g} (tick {ticks}), over half a "
            f"turn outside its limits {lower:g}..{upper:g} (ticks {low}..{high}): servo "
            f"{motor.id} on bus '{motor.bus}' counts from another turn than at calibration (its count "
            "restarts at power-up): re-seat its horn so the travel lies within one turn (ticks "
            f"{first}..{last}) and calibrate it again "
            f"(`platform calibrate --robot {robot} --arm {motor.bus}`)")


def check_turn_travel(robot: str, motor: MotorSpec, convert: JointConverter, lower: float, upper: float) -> None:
    """PlatformError (one line) when the travel of a motor whose count restarts at power-up
    (`MotorSpec.restarts_turn_count`) does not lie in `one_turn(model)` (X: 0..4095), the turn it
    counts in after a power cycle. The travel is the joint limits `lower`..`upper` (joint
    units; a follower's narrowed to its sweep, `swept_limits`, a leader's `leader_limits`)
    through its calibration `convert`, with the whole sweep the calibration recorded
    (`range_min`..`range_max`): a limp arm rests at its hard stop, past the narrowed limits,
    and that is where it is powered up. Part of a travel across the turn's end reads a whole
    turn off after a power cycle, and where the travel spans half a turn to one that reading
    can land less than half a turn outside the limits, which `check_turn_count` lets
    through: the first goal clipped into the limits drives the joint the long way, about a
    turn, into a stop (a leader sends its follower there). Inside that turn, a joint inside
    its travel reads exactly after any power cycle.

    Not checked: a single-turn motor (an X series in position mode: `check_position_limits`
    bounds a follower's travel in its one turn, a leader's is read on across the turn's end),
    a Y series (its count survives power-off), nor a motor whose entry says
    `turns_homed_externally: true`, the lab's word that it comes up counting as at
    calibration. `connect` (follower and leader), `calibrate` (before saving) and `doctor`
    call it."""
    if not motor.restarts_turn_count or motor.turns_homed_externally:
        return
    low, high = convert.tick_range(lower, upper)
    entry = convert.calibration
    low, high = min(low, entry.range_min), max(high, entry.range_max)
    first, last = one_turn(motor.model)
    if first <= low and high <= last:
        return
    # Where the travel falls in the servo's turn is set by how its horn is seated: a new
    # calibration alone would measure the same ticks.
    raise PlatformError(
        f"robot '{robot}': joint '{motor.joint}' travels through ticks {low}..{high} of servo {motor.id} on bus "
        f"'{motor.bus}' (its limits {lower:g}..{upper:g} and its calibration's sweep), across the end of the turn "
        f"its count restarts in at power-up ({first}..{last}): after a power cycle part of that travel reads a "
        f"whole turn off, and a goal from there drives the joint about a turn, into a stop; re-seat its horn so "
        f"the travel lies within ticks {first}..{last}, then `platform calibrate --robot {robot} --arm "
        f"{motor.bus}` (or, if your lab brings it up on the turn it was calibrated on, say so with "
        f"turns_homed_externally: true in its motor entry)")


def leader_limits(joint: JointSpec, convert: JointConverter) -> tuple[float, float]:
    """A leader joint's limits (joint units) for `check_turn_travel`: `joint`'s config
    limits narrowed to the range its calibration's sweep moved it through (`convert`'s
    range_min..range_max), where the hand takes it; the config's where the two do not
    overlap. Without the follower's margin (`swept_limits`): a leader is never driven. Its
    config limits are the follower's, one number for every arm built to it: checked whole,
    a leader zeroed a horn spline off its servo's centre was refused for a travel it never
    makes."""
    entry = convert.calibration
    low, high = sorted((convert.to_joint(entry.range_min), convert.to_joint(entry.range_max)))
    lower, upper = max(low, float(joint.lower)), min(high, float(joint.upper))
    return (lower, upper) if lower < upper else (float(joint.lower), float(joint.upper))


def servo_frame_shift(bus: MotorBus, servo_id: int) -> str | None:
    """What moves the servo's readings off the raw frame the calibration is taken in
    ("Homing Offset 512", "Drive Mode reversed", or both joined by "and"), or None."""
    offset, mode = bus.read_one(servo_id, "homing_offset"), bus.read_one(servo_id, "drive_mode")
    shifts = []
    if offset != 0:
        shifts.append(f"Homing Offset {offset}")
    if mode & REVERSE_BIT:
        shifts.append("Drive Mode reversed")
    return " and ".join(shifts) or None


def check_servo_frame(robot: str, bus: MotorBus, arm: str, ids: Iterable[int]) -> None:
    """PlatformError (one line) when a servo's Homing Offset is not 0 or its Drive Mode
    mirrors it: its readings are shifted (or mirrored) from the raw frame the calibration
    was taken in, so every joint's zero and limits would sit elsewhere on the arm (up to
    half a turn; mirrored on one arm only, the follower moves against its leader)."""
    for servo_id in ids:
        if (what := servo_frame_shift(bus, servo_id)) is not None:
            raise PlatformError(
                f"robot '{robot}': servo {servo_id} on bus '{arm}' has {what} (another tool's calibration): its "
                "positions are not in the frame this robot was calibrated in; calibrate again (`platform "
                f"calibrate --robot {robot} --arm {arm}` clears them), torque stays off")


def arm_motors(spec: RobotSpec, arm: str) -> list[MotorSpec]:
    """The motors on bus `arm`, follower or leader."""
    return [m for m in spec.all_motors() if m.bus == arm]


def calibrate(
    spec: RobotSpec,
    buses: Mapping[str, MotorBus],
    prompt: Prompt,
    arms: Iterable[str] | None = None,
    previous: RobotCalibration | None = None,
) -> RobotCalibration:
    """Run the two-step procedure on each arm; returns the new calibration: `previous`
    with the arms measured (`measure_arms`, then `with_arms`)."""
    return with_arms(spec, previous, measure_arms(spec, buses, prompt, arms))


def measure_arms(spec: RobotSpec, buses: Mapping[str, MotorBus], prompt: Prompt,
                 arms: Iterable[str] | None = None) -> dict[str, dict[str, MotorCalibration]]:
    """The two-step procedure on each of `arms` (default: every bus given), torque off:
    `prompt` asks for the zero pose, then for a sweep through every joint's range while a
    thread samples the positions. Returns {arm: {joint: MotorCalibration}}.

    Raises CalibrationError for an arm the robot lacks, a sweep the bus failed during, a
    joint that did not move, or an arm `connect` would refuse to drive; nothing is saved."""
    kinds = {j.name: j.kind for j in spec.joints}
    chosen = list(arms) if arms is not None else list(buses)
    for arm in chosen:
        if not arm_motors(spec, arm):
            raise CalibrationError(f"robot '{spec.name}' has no arm (bus) named '{arm}'; arms: {', '.join(buses)}")
    # Every arm at once, before any goes limp: a killed record or a faulted deploy leaves
    # followers holding, and each would drop (a sweep that fails releases them all).
    holding = {arm: ids for arm in chosen
               if (ids := sorted(m.id for m in arm_motors(spec, arm) if buses[arm].read_one(m.id, "torque_enable")))}
    if holding:
        which = "; ".join(f"{arm} servo(s) {', '.join(map(str, ids))}" for arm, ids in holding.items())
        prompt(f"holding torque: {which}; they go limp next (Ctrl-C too releases them): support the arm(s), then "
               "press Enter")
    for arm in chosen:
        buses[arm].set_torque(False, [m.id for m in arm_motors(spec, arm)])
    result: dict[str, dict[str, MotorCalibration]] = {}
    for arm in chosen:
        motors = arm_motors(spec, arm)
        bus = buses[arm]
        ids = [m.id for m in motors]
        prompt(f"[{arm}] Put every joint at its zero pose and close the gripper, then press Enter")
        # Written only now, after the first Enter: Ctrl-C at a prompt leaves the servos as found
        # (torque off aside).
        clear_servo_frame(bus, ids)  # the raw frame connect checks for (`check_servo_frame`)
        reply_without_delay(bus, ids)
        # Read in the mode the robot and the leaders will run in (they set it at connect):
        # the present position of a servo in another mode is counted in another frame.
        for m in motors:
            bus.set_operating_mode(m.mode, [m.id])
        sweep = _Sweep(motors, bus.read(["present_position"], ids)["present_position"])
        stop = threading.Event()
        failed: list[BaseException] = []

        def sample(bus=bus, ids=ids, sweep=sweep, stop=stop, failed=failed) -> None:
            try:
                while not stop.is_set():
                    sweep.add(bus.read(["present_position"], ids)["present_position"])
                    stop.wait(0.02)
            except BaseException as exc:  # raised by the caller: a sweep cut short must not be saved
                failed.append(exc)

        sampler = threading.Thread(target=sample, name=f"calibrate-{arm}", daemon=True)
        sampler.start()
        try:
            prompt(f"[{arm}] Move every joint through its whole range and open the gripper fully, then press Enter")
        finally:
            stop.set()
            sampler.join()
        if failed:  # the ranges read so far would pass for the whole sweep: half a range saved
            raise CalibrationError(f"[{arm}] the bus failed during the sweep ({failed[0]}); nothing was saved: "
                                   "check the cabling (`platform doctor`) and calibrate again") from failed[0]
        # One last reading so the final pose counts even if the sampler slept through it.
        sweep.add(bus.read(["present_position"], ids)["present_position"])
        sweep.check_moved(arm)
        result[arm] = {m.joint: _motor_calibration(m, kinds.get(m.joint, "revolute"), sweep.zero[m.id],
                                                   sweep.low[m.id], sweep.high[m.id]) for m in motors}
        _check_drivable(spec, bus, arm, result[arm])
    return result


def with_arms(spec: RobotSpec, previous: RobotCalibration | None,
              measured: Mapping[str, Mapping[str, MotorCalibration]]) -> RobotCalibration:
    """`previous` with the `measured` arms' entries replaced; the other arms keep theirs.

    The id is new when a follower arm's entries changed, else `previous`'s: the id names the
    followers' joint frame, the one recorded episodes and trained policies are in (`deploy`
    compares it); recalibrating only a leader leaves it, and them, valid."""
    from shallowpi.hardware.dynamixel.port import adapter_id

    result = {a: dict(j) for a, j in (previous.arms if previous else {}).items()}
    result.update({arm: dict(entries) for arm, entries in measured.items()})
    adapters = dict(previous.adapters if previous else {})
    for arm in measured:  # the adapter each arm was measured through, where udev names it
        if name := adapter_id(spec.buses[arm].port):
            adapters[arm] = name
        else:
            adapters.pop(arm, None)
    created = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    followers = spec.follower_buses()
    if previous is not None and previous.id != UNCALIBRATED and previous.robot == spec.name and \
            all(result.get(a) == previous.arms.get(a) for a in followers):
        return RobotCalibration(previous.id, spec.name, result, created, adapters)
    body = json.dumps({a: {j: c.to_dict() for j, c in js.items()} for a, js in result.items()}, sort_keys=True)
    new_id = f"{spec.name}-{created}-{hashlib.sha256(body.encode()).hexdigest()[:6]}"
    return RobotCalibration(new_id, spec.name, result, created, adapters)


def _check_drivable(spec: RobotSpec, bus: MotorBus, arm: str, entries: Mapping[str, MotorCalibration]) -> None:
    """Refuse (PlatformError, before anything is saved) an arm calibration that `connect`
    would refuse: a follower's position-mode joint whose limits, narrowed to its sweep, map
    past its servo's position limits (`check_position_limits`); a leader joint swept through
    more than the one turn its servo reads (`check_leader_range`); a multi-turn joint whose
    limits (a leader's `leader_limits`) cross the end of the turn its count restarts in at
    power-up (`check_turn_travel`): said at calibration, not at the next connect after a
    power cycle."""
    calibration = RobotCalibration("new", spec.name, {arm: dict(entries)})
    joints = {j.name: j for j in spec.joints}
    leader = arm not in spec.follower_buses()
    for motor in arm_motors(spec, arm):
        joint = joints[motor.joint]
        convert = calibration.converter(motor, joint.kind)
        if leader:  # checked against what it was moved through, not the follower's limits
            check_leader_range(spec.name, motor, entries[motor.joint])
            check_turn_travel(spec.name, motor, convert, *leader_limits(joint, convert))
            continue
        limits = swept_limits(calibration, joint, motor, convert)
        check_position_limits(spec.name, bus, motor, convert, *limits)
        check_turn_travel(spec.name, motor, convert, *limits)


class _Sweep:
    """One arm's readings through the sweep: each servo's zero-pose tick and the lowest and
    highest seen since, a single-turn servo's (an X series in position mode) unwrapped across
    the end of the turn (a joint zeroed near tick 4095 and moved past it reads on from 4096,
    not from 0)."""

    MIN_TRAVEL_TURNS = 1 / 64  # ~5.6 degrees: less is a joint the sweep left out

    def __init__(self, motors: list[MotorSpec], zero: Mapping[int, int]):
        self.motors = motors
        self.zero = dict(zero)
        self.low, self.high, self._last = dict(zero), dict(zero), dict(zero)

    def add(self, ticks: Mapping[int, int]) -> None:
        """Count one reading of every servo."""
        for m in self.motors:
            tick = ticks[m.id]
            if not m.counts_turns:
                # Only these read one turn: the other modes, and a Y in any, count whole turns.
                tick = unwrap_reading(self._last[m.id], tick, m.model.ticks_per_turn)
            self._last[m.id] = tick
            self.low[m.id], self.high[m.id] = min(self.low[m.id], tick), max(self.high[m.id], tick)

    def check_moved(self, arm: str) -> None:
        """CalibrationError naming every joint that moved less than MIN_TRAVEL_TURNS: its
        swept range bounds the follower's goals, and a joint left out would be held still."""
        still = [m.joint for m in self.motors
                 if self.high[m.id] - self.low[m.id] < self.MIN_TRAVEL_TURNS * m.model.ticks_per_turn]
        if still:
            raise CalibrationError(
                f"{', '.join(still)} on arm '{arm}' barely moved during the sweep; move every joint through its "
                "whole range and open the gripper fully while the second prompt waits")


def _motor_calibration(motor: MotorSpec, kind: str, zero: int, low: int, high: int) -> MotorCalibration:
    servo = {"servo_id": motor.id, "model_number": motor.model.number}
    if kind != "gripper":
        return MotorCalibration(zero, motor.direction, low, high, **servo)
    # The gripper opens toward whichever end of its sweep lies farther from closed.
    up, down = high - zero, zero - low
    direction, span = (1, up) if up >= down else (-1, down)
    return MotorCalibration(zero, direction, low, high, span, **servo)
