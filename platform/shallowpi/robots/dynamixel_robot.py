"""`DynamixelRobot`: the one robot class; arm, bimanual and humanoid are its configs.

    robot = DynamixelRobot(RobotSpec.from_config(cfg.robot), load_calibration("arm"))
    with robot:                              # connect; torque off on the way out
        obs = robot.observe()                # Observation: obs.state float32[J], obs.frames
        sent = robot.act({"gripper": 0.5})   # clamped; returns the goal actually sent
        robot.hold()                         # goals := present position, read back
        robot.hold(sent)                     # goals := the last command, kept, read back
        robot.torque_off()                   # every bus tried; act() refuses until connect()

Safety lives in `act`: every goal is clipped to the joint limits (the config's, narrowed
to the range each follower joint was swept through at calibration), moved at most
`max_velocity` x the time since the previous command (up to `CREDIT_TICKS` of the
caller's loop periods: a command a late tick sends right after the one before moves almost nothing,
where a bound per call let two full steps out within a millisecond; `clock=None`, for the
simulated stack whose calls are its ticks, bounds each call at one period) and kept within
`LEAD_TICKS` steps of the config's top speed of the position `observe` measured (that
bound stops a goal advancing, never pulls one back: a loaded joint keeps the goal it lags),
BEFORE any byte reaches a bus. A joint found outside its
limits at `connect` or `hold` is held where it is, never snapped back: a goal for it is
clipped to between where its goal is and the limit (never further out), so it comes back
at that bound or slower (a catch-up's ramp, robots/catch_up.py); joints not named in a
partial action hold their last goal. The servos are
checked for hardware errors, and for torque off without one (a servo that restarted after
a power dip), once a second of ticks; a fault raises
`ServoFaultError` naming the bus, the servo and what to check. `hold()` and
`torque_off()` (the `Robot` contract, robots/base.py) confirm what they did: goals are
read back after a hold, and each torque-off write is acknowledged by its servo.

The servos' Bus Watchdog stays off (disarmed at connect if another program armed it): the
driver talks to the bus only while it controls, so a reset wait or a warm-up would trip
it, after which the servo refuses goals until the watchdog is cleared. A host that dies
leaves each servo holding its last goal, sent no more than `LEAD_TICKS` steps of top speed
ahead of where the joint was, which the watchdog's stop would barely change.

Cameras are a hook: `cameras` maps a role (configs/robot/*.yaml `cameras:`) to any
object with `latest()` returning a frame (hardware/camera.py's `Frame`, or a bare image).
`observe()` never waits for a fresh frame: it returns each camera's newest one with the
time it reached the host, and what a late frame means is its caller's call (the executor
holds the robot while any frame is older than `deploy.max_frame_age_s`; the recorder
counts each take's rows that hold a stale picture). Only a camera silent for
`camera_timeout_s` is a fault.
"""

from __future__ import annotations

import collections
import logging
import statistics
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Protocol

import numpy as np

from shallowpi.errors import PlatformError
from shallowpi.hardware.camera import CameraTimeout
from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.calibration import JointConverter
from shallowpi.hardware.dynamixel.control_table import OperatingMode, span
from shallowpi.hardware.dynamixel.motor_bus import BusError, MotorBus, ServoFaultError
from shallowpi.robots.base import LinkCounts, Robot, RobotError, SafeState, SafeStateError
from shallowpi.robots.calibration import (
    RobotCalibration,
    check_turn_count,
    check_turn_travel,
    swept_limits,
)
from shallowpi.robots.observation import Frame, Observation
from shallowpi.robots.servo_setup import configure_servos, settle_torque
from shallowpi.robots.spec import MotorSpec, RobotSpec

log = logging.getLogger(__name__)


class CameraSource(Protocol):
    """A camera as the robot reads it: hardware/camera.py's drivers, the stack twin's cameras."""

    def latest(self, max_age_s: float | None = None) -> Any:
        """The newest frame: a hardware/camera.py `Frame`, or a bare image. A source that
        checks staleness raises when its newest frame is older than `max_age_s` (s); the
        robot passes none and judges the frame's age itself."""


BusFactory = Callable[[str, str, int, Mapping[int, Any]], MotorBus]


def _default_bus_factory(name: str, port: str, baud: int, motors: Mapping[int, Any]) -> MotorBus:
    return DynamixelBus(name, port, baud, motors)


class DynamixelRobot(Robot):
    """The `Robot` of any config: Dynamixel followers on the config's buses, cameras as hooks
    (see the module docstring). Raises PlatformError when the config has no motors."""

    LEAD_TICKS = 5  # a goal leads the measured position by at most this many ticks of max_velocity
    # The most control periods of motion one command may make up for: a loop's jitter
    # (a tick a little late, the next on time) keeps its top speed, a stall gains nothing.
    CREDIT_TICKS = 1.25
    # The widest block `check_faults` reads to take a servo's Torque Enable with its error
    # register (bytes a servo): the X series' 7 fit, the Y series' 360 do not.
    NEAR_BYTES = 16

    def __init__(
        self,
        spec: RobotSpec,
        calibration: RobotCalibration,
        *,
        cameras: Mapping[str, CameraSource] | None = None,
        bus_factory: BusFactory = _default_bus_factory,
        fault_check_every: int | None = None,
        camera_timeout_s: float = 1.0,
        clock: Callable[[], float] | None = time.monotonic,
    ) -> None:
        if not spec.motors:
            raise PlatformError(f"robot '{spec.name}' has no motors: add motors: to configs/robot/{spec.name}.yaml")
        if not camera_timeout_s > 0:
            raise PlatformError(f"camera_timeout_s must be positive, got {camera_timeout_s}")
        calibration.check_adapters(spec, spec.follower_buses())  # before any port opens
        self.spec = spec
        self.calibration = calibration
        self.cameras: dict[str, CameraSource] = dict(cameras or {})
        kinds = {j.name: j.kind for j in spec.joints}
        self._motors: dict[str, MotorSpec] = {m.joint: m for m in spec.motors}
        self._convert: dict[str, JointConverter] = {
            m.joint: calibration.converter(m, kinds[m.joint]) for m in spec.motors
        }
        # Each follower bus's motors, in joint order: every per-bus loop (each tick's read
        # and write among them) walks these.
        self._bus_motors: dict[str, list[MotorSpec]] = {
            name: [m for m in spec.motors if m.bus == name] for name in spec.follower_buses()}
        self.buses: dict[str, MotorBus] = {}
        for bus_name, motors in self._bus_motors.items():
            bus = spec.buses[bus_name]
            self.buses[bus_name] = bus_factory(bus_name, bus.port, bus.baud, {m.id: m.model for m in motors})
        self.lower, self.upper = self._swept_limits()
        for joint in spec.joints:
            if joint.kind == "gripper" and (motor := self._motors[joint.name]).mode == OperatingMode.POSITION:
                capped = OperatingMode.CURRENT_BASED_POSITION in motor.model.operating_modes
                log.warning("robot %s: gripper '%s' runs in plain position mode: closed on an object the servo "
                            "pushes at full current until it overloads (or crushes it); %s", self.name, joint.name,
                            "mode: current_based_position with max_current_a caps the push (configs/robot/arm.yaml)"
                            if capped else f"its {motor.model.name} has no current-based mode, one that has would "
                            "cap the push")
        self.max_step = np.array([j.max_velocity for j in spec.joints], dtype=np.float64) / spec.fps
        self._clock = clock  # None: each act() is one control period (the simulated stack)
        self._commanded_at: float | None = None  # clock time of the last goal sent
        # The last intervals between commands: their median is the caller's loop period.
        self._intervals: collections.deque[float] = collections.deque(maxlen=9)
        # How far a goal may lead the joint's measured position: a joint held back (by the
        # table, by a hand) must not see its goal run on, the servo pushing ever harder and
        # jumping there at full servo speed when freed (lerobot's `max_relative_target`).
        # Of the config's own speeds: a slowed run (--speed-scale) moves slower, but a loaded
        # joint lags its goal as far, and a lead scaled down below that lag held it back.
        self.max_lead = self.LEAD_TICKS * self.max_step / spec.speed_scale
        self._present: np.ndarray | None = None  # the positions observe() read since the last act()
        self._index = {name: i for i, name in enumerate(spec.joint_names)}
        self._goal: np.ndarray | None = None
        # Set by torque_off() and by hold_or_release once any bus went limp: act() refuses
        # until connect(). Not whether servos should hold: a partial release sets it while
        # the buses it did not release hold on.
        self._torque_off = False
        # torque_off() asked every servo off: none is expected to hold until connect(). What
        # a hold keeps (the last goal, or the pose as found) and whether it checks each
        # servo's torque go by this, never by `_torque_off`: read so, a second fault re-aimed
        # the sound arm at where it sagged (a gripper let go) and called a limp arm holding.
        self._switched_off = False
        self._released: set[str] = set()  # buses hold_or_release switched off after a fault
        self._release_failed: set[str] = set()  # of those, the buses whose torque off was not confirmed
        self._opened: set[str] = set()  # buses connect() opened (a port that closes under one is news)
        self._found_holding: set[str] = set()  # buses the last connect() found holding (a killed run's)
        # What the put-away since the last connect() could not confirm off: until a connect
        # reached a bus, its servos are as this run found them (a killed run's may hold).
        self.torque_off_failures: list[str] = ["not connected: its servos are as this run found them"]
        self._ticks = 0
        self._fault_check_every = fault_check_every or spec.fps
        # Longer than any hold a caller rides out (the executor's default 0.25 s): a camera
        # this quiet has stopped, and the episode must end rather than repeat its picture.
        self.camera_timeout_s = camera_timeout_s

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The robot's config name."""
        return self.spec.name

    @property
    def is_connected(self) -> bool:
        """Whether every follower bus is open."""
        return bool(self.buses) and all(b.is_connected for b in self.buses.values())

    def connect(self) -> None:
        """Open every bus, check IDs and models and that each servo reads in the frame the
        calibration was taken in (`check_servo_frame`), that each multi-turn joint's limits
        lie in the turn its servo counts in after power-up (`check_turn_travel`) and it reads
        near them (`check_turn_count`), set modes, torque on holding the
        present pose. Raises BusError / PlatformError (one line) with each bus as it was
        found: torque off, except on a bus whose servos were found holding (a killed run left
        them so) and were not touched, which goes on holding, said in a warning. One bus
        failing (an unplugged adapter) dropped another arm a killed run had left holding.
        A bus whose servo alarm (ServoFaultError) failed the connect goes limp though found
        holding, as `put_back(fault)` does with an alarm; one failing otherwise (a reply
        lost) goes on holding as it was found (`put_back`, after a connect, switches every
        bus off for a bus error that names none: the run it ends had taken them over)."""
        found_holding = self._found_holding = set()
        self.torque_off_failures = []
        setting_up: str | None = None  # the bus being set up: an alarm out of it is that bus's
        try:
            for bus_name, bus in self.buses.items():
                setting_up = bus_name
                bus.connect()
                self._opened.add(bus_name)
                motors = self._bus_motors[bus_name]
                if settle_torque(self.name, bus, bus_name, motors):
                    found_holding.add(bus_name)  # kept holding: on a failure below it goes on holding
                configure_servos(self.name, bus, bus_name, motors, self._convert,
                                 {m.joint: (self.lower[self._index[m.joint]], self.upper[self._index[m.joint]])
                                  for m in motors})
            setting_up = None
            # Hold the present pose first, so torque-on never jumps: unclipped, as a joint found
            # outside its limits clipped here would be driven back at the servo's full speed;
            # a goal inside the limits brings it back at the velocity bound.
            self._goal = self._read_positions()
            self._present = self._goal.copy()
            self._commanded_at = None
            self._intervals.clear()
            for motor in self.spec.motors:
                i = self._index[motor.joint]
                # A travel across the end of the turn a multi-turn servo counts in after power-up
                # can read a turn off inside the margin check_turn_count allows: refused whatever
                # the pose, before the reading is judged.
                check_turn_travel(self.name, motor, self._convert[motor.joint], self.lower[i], self.upper[i])
                check_turn_count(self.name, motor, self._convert[motor.joint], self.lower[i], self.upper[i],
                                 self._goal[i])
            # A goal the servo refused (a joint moved by hand past its servo's position
            # limits) leaves the old one in place, and torque-on would drive there at full
            # servo speed: confirmed before any torque goes on.
            if wrong := self._unconfirmed(self._send(self._goal), torque_on=False):
                raise PlatformError(
                    f"robot '{self.name}': torque stays off: goal position {', '.join(wrong)}; a joint is "
                    "probably outside its servo's position limits: move it back by hand and connect again")
            for bus in self.buses.values():
                bus.set_torque(True)
            self._torque_off = self._switched_off = False
            self._released.clear()
            self._release_failed.clear()
        except BaseException as err:
            # Kept holding, a bus with a servo alarm latched would hold on with nothing to
            # watch it once this process ends: a Y servo keeps torque on a following error, an
            # X servo on an error its Shutdown(63) leaves out (the factory's: input voltage).
            if isinstance(err, ServoFaultError) and (named := getattr(err, "bus", "") or setting_up):
                found_holding.discard(named)  # self._found_holding: a later put_back() knows it too
            self._put_back(found_holding)
            raise
        log.info("robot %s connected (%d joints, calibration %s)", self.name, len(self._motors), self.calibration.id)

    def put_back(self, fault: PlatformError | None = None) -> None:
        """A start that failed after connect (a refused store, a full disk): close every bus
        as connect() found it, the buses a killed run had left holding still holding (said),
        the others torque off. `disconnect()` instead ends a run: every bus torque off.
        `fault`: why the start failed; a servo's (an alarm read while a backend warmed up)
        switches off the bus it names even where found holding, as `hold_or_release` does
        in a run (nothing would watch its alarm once this process ends), and a bus error
        that names no bus switches off every bus."""
        keep = set(self._found_holding)
        if isinstance(fault, BusError):
            bus = getattr(fault, "bus", "")
            keep = keep - {bus} if bus in self.buses else set()
        self._put_back(keep)

    def _put_back(self, found_holding: set[str]) -> None:
        """A connect that failed: torque off and close every bus, except those found holding,
        closed as they were (still holding: a warning says so, for the operator to support
        the arm before cutting power or connecting again)."""
        said = [f"bus '{name}': left holding, as a killed run left it" for name in found_holding]
        for name in found_holding:
            self.buses[name].disconnect()  # leaves torque as it is
            self._opened.discard(name)
            log.warning("robot %s: the servos on bus '%s' were holding when this run began and still hold: "
                        "support the arm before cutting the servo power", self.name, name)
        said += [f"bus '{name}': not reached, its servos as found" for name in self.buses
                 if name not in self._opened and name not in found_holding]
        # A start's cleanup puts back a robot its failed connect already put back: said once.
        self.torque_off_failures += [line for line in said if line not in self.torque_off_failures]
        self.disconnect()  # the rest: torque off, then close

    def disconnect(self) -> None:
        """Torque off on every open bus (each tried even if one fails), then close. A bus
        whose torque-off failed, or whose port closed under it since connect (an adapter
        unplugged: nothing could reach its servos), is logged as an error that tells the
        operator to cut the servo power, and listed in `torque_off_failures` (a run's summary
        would otherwise end as if the arm were limp)."""
        connected = [b for b in self.buses.values() if b.is_connected]
        if not connected and not self._opened:
            return  # nothing open: what the last disconnect found stands (a cleanup calls it again)
        gone = [f"bus '{name}': its port closed under it (unplugged?), torque not switched off"
                for name in self._opened if not self.buses[name].is_connected]
        try:
            failures = gone + self._switch_torque_off(connected)
        finally:
            for bus in self.buses.values():
                bus.disconnect()
            self._goal = None
            self._opened.clear()
        self.torque_off_failures += failures
        for failure in failures:
            log.error("robot %s: torque off failed: %s; the servos may still hold: cut the servo power before "
                      "going near the robot", self.name, failure)

    def torque_off(self) -> None:
        """Torque off on every bus, each tried even if one fails; each servo acknowledges.

        Raises SafeStateError naming every bus that failed (and its first failing servo).
        The buses stay open; act() refuses until connect()."""
        self._torque_off = self._switched_off = True  # first: even a partial failure must stop act()
        failures = self._switch_torque_off(list(self.buses.values()))
        if failures:
            raise SafeStateError(
                f"robot '{self.name}': torque off failed on {len(failures)} of {len(self.buses)} "
                f"bus(es): {' | '.join(failures)}; cut the servo power before going near the robot"
            )
        log.info("robot %s: torque off on every bus", self.name)

    def hold(self, goal: np.ndarray | None = None) -> np.ndarray:
        """Every goal := the present position (`goal` None; a joint outside its limits is
        held there: a goal inside the limits brings it back at the velocity bound), or := `goal` [J], the last
        command kept, clamped as act() clamps: the limits, one velocity step from the current
        goal, and the lead over the position read now (a joint held back by the table or a
        hand is pushed no harder than act() pushed it; a squeezing gripper or a loaded joint
        keeps the goal it lags). Then read back, with each servo's torque unless torque_off()
        switched it off. The buses `hold_or_release` released after a fault are neither
        written nor read (their joints keep their last goal in what is returned): limp, they
        were "confirmed" holding as the torque went unchecked on every bus.

        Returns float32[J], the pose held. Raises RobotError for a goal after torque_off()
        (a stale command must not re-arm a robot the operator stopped); SafeStateError if a
        bus fails or a servo's Goal Position does not read back as sent (e.g. it refused the
        write) or, torque expected on, a servo has its torque off."""
        previous = self._need_connection()
        if goal is not None and self._switched_off:
            raise RobotError(f"robot '{self.name}': torque is off; hold() its present pose or connect() again")
        limp = self._released
        try:
            present = self._read_positions(skip=limp)
            for name in limp:  # not read: their last goal stands in
                for m in self._bus_motors[name]:
                    present[self._index[m.joint]] = previous[self._index[m.joint]]
            hold_present = goal is None
            if goal is None:
                goal = present  # where it is, limits or not: a hold never moves a joint
            else:
                goal = self._led(self._bounded(self._as_vector(goal), previous, self._step_allowed()), present,
                                 previous)
            wrong = self._unconfirmed(self._send(goal, skip=limp), torque_on=not self._switched_off)  # off: asked for
        except PlatformError as err:
            raise SafeStateError(f"robot '{self.name}': could not hold position: {err}") from None
        if wrong:
            raise SafeStateError(
                f"robot '{self.name}': hold not confirmed, goal position {', '.join(wrong)}; "
                "check those servos (`platform doctor`)"
            )
        self._goal, self._present = goal, present
        if hold_present:
            self._commanded_at = None  # nothing moved: the next act() is a first command
            self._intervals.clear()
        return goal.astype(np.float32)

    def hold_or_release(self, fault: PlatformError | None = None) -> SafeState:
        """After a fault, bus by bus (an arm, a head): each bus whose servos confirm holding
        the last goal sent (the present position after torque_off(); a gripper keeps its
        squeeze, a loaded joint its lift) goes on holding; each that cannot (a servo its own
        protection switched off, a bus that does not answer), and the bus a servo `fault`
        names (an alarm that leaves torque on, a low input voltage, is read again within a
        second and would end any wait with everything off), has its torque switched off,
        alone. One overloaded gripper dropped every arm: a humanoid's or a bimanual's sound
        arm now keeps its pose, and what it carries, for the operator (who ends the run with
        everything off). Returns what was done, naming the buses; act() refuses once any bus
        went limp, and `check_faults` no longer reads the buses released (their alarm is
        known). A later fault (one while the robot holds for the operator) leaves the buses
        released before limp, named as such, and the others keep their last goal; a bus whose
        torque off was not confirmed then is tried again. Raises SafeStateError (`holding`
        set when some bus holds) when a bus that had to go limp did not confirm its torque
        off (the line says which buses hold)."""
        faulted = fault.bus if isinstance(fault, ServoFaultError) and fault.bus in self.buses else None
        # What holds keeps its last goal, not the measured pose: a gripper's squeeze is the gap
        # between the two (re-aimed at where it is, it let go of what it carried), as is the
        # lift a loaded joint needs. A robot whose torque the operator stopped holds as found;
        # a bus released after an earlier fault is no such stop: the buses that hold keep theirs.
        last = None if self._switched_off else self._goal
        # Released before, their torque off confirmed: limp, not held again, named as released.
        earlier = [f"bus '{name}' (released after an earlier fault)" for name in self.buses
                   if name in self._released and name not in self._release_failed]
        if faulted is None and not self._released:
            try:
                self.hold(last)
                return SafeState("robot is safe: holding position", holding=True)
            except PlatformError as whole:
                log.error("robot %s: %s; holding bus by bus", self.name, whole)
        held, released, failed = [], [], []
        for name, bus in self.buses.items():
            if name in self._release_failed:
                why = "its torque off after an earlier fault was not confirmed"
            elif name in self._released:
                continue  # in `earlier`
            else:
                try:
                    self._hold_bus(name, last if name != faulted else None)
                    if name != faulted:
                        held.append(f"'{name}'")
                        continue
                    why = "a servo on it reports a fault"
                except PlatformError as hold_error:
                    why = f"could not hold position: {hold_error}"
            self._released.add(name)
            if off_failures := self._switch_torque_off([bus]):
                self._release_failed.add(name)
                failed.append(f"bus '{name}' ({why}) did not switch torque off ({'; '.join(off_failures)})")
            else:
                self._release_failed.discard(name)
                released.append(f"bus '{name}' ({why})")
        released += earlier
        if released or failed:
            self._torque_off = True  # a stale command must not re-arm what went limp
        holding = f"bus {', '.join(held)} hold{'s' if len(held) == 1 else ''} position" if held else ""
        if failed:
            limp = [f"torque off on {'; '.join(released)}"] if released else []
            raise SafeStateError("; ".join(failed + limp + ([holding] if holding else [])), holding=bool(held))
        if not released:  # the whole hold failed once, each bus then confirmed its own
            return SafeState("robot is safe: holding position", holding=True)
        if not held:
            return SafeState(f"robot is safe: torque off on {'; '.join(released)}", holding=False)
        return SafeState(f"robot is safe: {holding}; torque off on {'; '.join(released)}", holding=True)

    def _hold_bus(self, name: str, goal: np.ndarray | None = None) -> None:
        """One bus's servos: goal := `goal`'s joints (float[J], the last goal sent, kept), or
        := the present position (None); read back with their torque. Raises PlatformError
        (or SafeStateError, naming the servos) when it is not confirmed."""
        motors = self._bus_motors[name]
        if goal is None:
            ticks = self.buses[name].read(["present_position"], [m.id for m in motors])["present_position"]
            values = {m.id: int(ticks[m.id]) for m in motors}
        else:
            values = {m.id: self._convert[m.joint].to_ticks(float(goal[self._index[m.joint]])) for m in motors}
        self.buses[name].write("goal_position", values)
        if wrong := self._unconfirmed({name: values}, torque_on=not self._switched_off):
            raise SafeStateError(", ".join(wrong))
        if self._goal is not None:
            for m in motors:
                self._goal[self._index[m.joint]] = self._convert[m.joint].to_joint(values[m.id])

    # -- the control loop --------------------------------------------------------------

    def observe(self) -> Observation:
        """Joint state float32[J] and each camera's newest frame, on `time.monotonic()` (s):
        a frame's time is its capture on the host's clock (`Frame.host_time_s`: the middle of
        the exposure where the camera says it, else the frame's arrival), so its age is what
        the loop really sees. A bare image from a plain source counts as captured now.

        Never waits for a fresh frame (a stalled control loop is not a hold: the executor
        holds on stale frames itself). Raises CameraTimeout, naming the camera, when its
        newest frame reached the host more than `camera_timeout_s` ago (a camera that stopped
        must end the episode, not repeat its last picture); ServoFaultError on a servo fault."""
        self._need_connection()
        self._ticks += 1
        if self._ticks % self._fault_check_every == 0:
            self.check_faults()
        now = time.monotonic()
        self._present = self._read_positions(check_alert=True)
        state = self._present.astype(np.float32)
        frames: dict[str, Frame] = {}
        for role, camera in self.cameras.items():
            got = camera.latest()
            captured = float(getattr(got, "host_time_s", now))
            # Silence counts from the newest frame's arrival, not its capture: after a host
            # clock step a global-time camera's frames look as old as the step (stale, and
            # held so), yet it is sending.
            arrived = getattr(got, "arrived_s", None)
            silent = time.monotonic() - (captured if arrived is None else float(arrived))
            if silent > self.camera_timeout_s:
                # The driver's own error, when reads fail: not the cable's fault then.
                why = f" (its driver: {error})" if (error := getattr(camera, "last_error", None)) else ""
                raise CameraTimeout(
                    f"camera '{role}' has sent no frame for {silent:.2f} s (limit {self.camera_timeout_s:.2f} s){why}; "
                    "check its cable, USB bandwidth and frame rate")
            depth = got.depth_m() if getattr(got, "depth", None) is not None else None
            frames[role] = Frame(image=getattr(got, "image", got), time_s=captured,
                                 sequence=int(getattr(got, "sequence", self._ticks)), depth=depth)
        return Observation(now, state, frames)

    def joint_positions(self) -> dict[str, float]:
        """Present joint positions by name, in joint units; RobotError when not connected."""
        self._need_connection()
        return dict(zip(self.spec.joint_names, self._read_positions().tolist()))

    def act(self, action: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """Clamp to the joint limits (a joint whose last goal is outside them: to between
        that goal and the limit, so it comes back in as slowly as it is sent), the per-tick
        velocity bound and the lead over the positions `observe()` measured since the last
        act() (`LEAD_TICKS` ticks of max velocity; a control loop observes every tick); send;
        return what was sent, float32[J]. Raises RobotError when not connected or after
        torque_off(); PlatformError for an unknown joint, a wrong size or a non-finite value."""
        previous = self._need_connection()
        if self._torque_off:
            raise RobotError(f"robot '{self.name}': torque is off (e-stop or fault); connect() again to drive it")
        goal = self._bounded(self._as_vector(action), previous, self._step_allowed())
        if self._present is not None:  # a measurement bounds one act(): without a new observe() none to go by
            goal = self._led(goal, self._present, previous)
            self._present = None
        self._send(goal)
        self._goal = goal
        return goal.astype(np.float32)

    def adopt_present_pose(self) -> np.ndarray:
        """Take the present pose as the goal, for joints moved by
        something other than act(): a scene reset in simulation, a hand with torque off.
        The next act() is velocity-bounded from here, not from the stale goal."""
        return self.hold()

    def check_faults(self) -> None:
        """Raise ServoFaultError for the first servo that reports a hardware error, bus by bus
        (not the buses `hold_or_release` released after a fault: limp, their alarm known),
        then for a servo whose torque is off without an alarm on a bus that holds (every bus
        but those released, until `torque_off()`). A servo that restarted (a power dip, a
        loose power lead) answers again at once, torque off, its alarm cleared and its goal
        at its present position; each tick reads positions alone, and a run went on
        recording goals that joint never followed. `observe` calls this once a second of
        ticks: a bus's error registers and Torque Enables in one read where the control
        table keeps them close (the X series), else in two (`_torque_and_alarms`)."""
        holding = not self._switched_off
        for name, bus in self.buses.items():
            if name in self._released:
                continue
            motors = self._bus_motors[name]
            torque, alarmed = self._torque_and_alarms(bus, motors, holding)
            if alarmed:  # the bus names it, with its advice; a warning alone is logged once
                bus.raise_on_hardware_errors(alarmed)
            if restarted := [m for m in motors if torque.get(m.id) == 0]:
                first, more = restarted[0], len(restarted) - 1
                raise ServoFaultError(
                    f"robot '{self.name}': bus '{name}' servo {first.id} ('{first.joint}') has torque off without "
                    "an alarm: it restarted (a power dip or a loose power lead?); check the servo power and its "
                    f"cable, then connect again{f' ({more} more servo(s) too)' if more else ''}", bus=name)

    def link_counts(self) -> LinkCounts:
        """Every bus's exchanges and failed tries, the servos' by joint name (LinkCounts)."""
        return LinkCounts.of_buses(self.buses, {(m.bus, m.id): m.joint for m in self.spec.motors})

    # -- description -------------------------------------------------------------------

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """float64[J] lower and upper limits `act()` clips to: the config's, narrowed to each
        follower joint's calibrated sweep."""
        return self.lower.copy(), self.upper.copy()

    def limits(self) -> dict[str, tuple[float, float, float]]:
        """joint -> (lower, upper, max velocity per second): the limits `act` clips to."""
        return {j.name: (float(self.lower[i]), float(self.upper[i]), j.max_velocity)
                for i, j in enumerate(self.spec.joints)}

    def _swept_limits(self) -> tuple[np.ndarray, np.ndarray]:
        """float64[J] lower and upper joint limits: the config's, narrowed to each follower
        joint's calibrated sweep (`swept_limits`); PlatformError when they do not overlap."""
        lower = np.array([j.lower for j in self.spec.joints], dtype=np.float64)
        upper = np.array([j.upper for j in self.spec.joints], dtype=np.float64)
        for i, joint in enumerate(self.spec.joints):
            lower[i], upper[i] = swept_limits(self.calibration, joint, self._motors[joint.name],
                                              self._convert[joint.name])
            if (lower[i], upper[i]) != (joint.lower, joint.upper):
                log.info("robot %s: joint '%s' limited to %.3g..%.3g, its calibrated sweep (config %g..%g)",
                         self.name, joint.name, lower[i], upper[i], joint.lower, joint.upper)
        return lower, upper

    # -- internals ---------------------------------------------------------------------

    def _as_vector(self, action: Mapping[str, float] | np.ndarray) -> np.ndarray:
        """float64[J] from a full vector or a mapping of some joints (the others keep their
        goal); PlatformError for an unknown joint, a wrong size or a non-finite value."""
        target = self._need_connection().copy()
        if isinstance(action, Mapping):
            for name, value in action.items():
                if name not in self._index:
                    raise PlatformError(f"robot '{self.name}' has no joint '{name}'; joints: {', '.join(self.spec.joint_names)}")
                target[self._index[name]] = float(value)
        else:
            values = np.asarray(action, dtype=np.float64).reshape(-1)
            if values.shape != target.shape:
                raise PlatformError(f"action has {values.size} values; robot '{self.name}' has {target.size} joints")
            target = values.copy()
        if not np.all(np.isfinite(target)):
            bad = [n for n, v in zip(self.spec.joint_names, target) if not np.isfinite(v)]
            raise PlatformError(f"action for robot '{self.name}' is not finite at {', '.join(bad)}; nothing sent")
        return target

    def _step_allowed(self) -> np.ndarray:
        """float64[J]: how far each joint's goal may move in this command: `max_velocity` x
        the clock time since the last command, at most `CREDIT_TICKS` of the caller's loop
        periods (the robot's, or longer for a slower loop, once three intervals tell it);
        one robot period (`max_step`) with no clock, or for the first command after
        connect() or hold()."""
        if self._clock is None:
            return self.max_step
        now = self._clock()
        since, self._commanded_at = self._commanded_at, now
        if since is None:
            return self.max_step
        elapsed = max(now - since, 0.0)
        self._intervals.append(elapsed)
        if len(self._intervals) < 3:  # a median of one or two intervals is the stall itself
            return self.max_step * min(elapsed * self.spec.fps, self.CREDIT_TICKS)
        # The credit counts the caller's loop periods, not the robot's: a loop slower than
        # robot.fps (a 30 Hz recording or policy on a 50 Hz humanoid) capped at 1.25 robot
        # periods ran every joint at 75 % of its top speed. The median of the last intervals
        # is that period; a single stall does not move it, and gains nothing.
        loop_period = max(statistics.median(self._intervals), 1.0 / self.spec.fps)
        return self.max_step * min(elapsed, self.CREDIT_TICKS * loop_period) * self.spec.fps

    def _bounded(self, target: np.ndarray, previous: np.ndarray, step: np.ndarray) -> np.ndarray:
        """`target` clipped to the limits, or for a joint whose `previous` goal is outside them
        to between that goal and the limit, then moved at most `step` [J] from it: never
        further out than the joint already is. Clipped to the limit, a catch-up's slow ramp
        back in from outside became a step at top speed each tick, the ramp's goals all
        outside the limits."""
        return previous + np.clip(self._in_limits(target, previous) - previous, -step, step)

    def _in_limits(self, goal: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """`goal` clipped to the limits, widened per joint to take in the `previous` goal: no
        joint's goal goes further outside its limits than it already was."""
        return np.clip(goal, np.minimum(self.lower, previous), np.maximum(self.upper, previous))

    def _led(self, goal: np.ndarray, present: np.ndarray, previous: np.ndarray) -> np.ndarray:
        """`goal` advanced no further than `max_lead` beyond the measured `present`, and
        never pulled back past the `previous` goal: a joint that lags its goal under load (a
        gripper squeezing, an arm holding a weight) keeps the goal it lags. Pulling it to
        present + lead each tick, as the bound did, lowered the goal under a loaded joint
        tick after tick (it settled lower, the next goal lower still: the arm sank to its
        limit whatever was commanded) and eased a squeezing gripper's grip. Never out past a
        limit to follow a joint forced there."""
        goal = np.clip(goal, np.minimum(present - self.max_lead, previous),
                       np.maximum(present + self.max_lead, previous))
        return self._in_limits(goal, previous)

    def _need_connection(self) -> np.ndarray:
        """The last goal sent; raises if the robot is not connected."""
        if self._goal is None:
            raise RobotError(f"robot '{self.name}' is not connected; call connect() first")
        return self._goal

    def _read_positions(self, check_alert: bool = False, skip: Collection[str] = ()) -> np.ndarray:
        """Joint positions float64[J]; `check_alert`: ServoFaultError when a servo's reply says
        it is faulted (observe: every tick, not only at the once-a-second look at the error
        registers; a hold reads without it, and finds a limp servo by its torque). The buses
        in `skip` are not read: their joints are left 0 for the caller to fill."""
        out = np.zeros(len(self._index))
        for bus_name, bus in self.buses.items():
            if bus_name in skip:
                continue
            motors = self._bus_motors[bus_name]
            ticks = bus.read(["present_position"], [m.id for m in motors], check_alert=check_alert)["present_position"]
            for m in motors:
                out[self._index[m.joint]] = self._convert[m.joint].to_joint(ticks[m.id])
        return out

    def _torque_and_alarms(self, bus: MotorBus, motors: list[MotorSpec],
                           holding: bool) -> tuple[dict[int, int], list[int]]:
        """({servo id: Torque Enable} of `motors`, only when `holding`; the IDs whose
        hardware-error register is not zero), in as few reads as the control table allows:
        an X servo's Torque Enable (64) and Hardware Error Status (70) in one 7-byte block,
        a Y servo's (512 and its Error Code, 153) in two reads of a byte each, as one block
        would carry 360 bytes a servo (3.6 ms of a 1 Mbps bus for each)."""
        reads: dict[tuple[str, ...], list[int]] = {}
        for m in motors:
            error = m.model.error_field
            if holding and span(m.model, ["torque_enable", error])[1] <= self.NEAR_BYTES:
                reads.setdefault(("torque_enable", error), []).append(m.id)
            else:
                reads.setdefault((error,), []).append(m.id)
                if holding:
                    reads.setdefault(("torque_enable",), []).append(m.id)
        torque: dict[int, int] = {}
        alarmed: set[int] = set()
        for fields, ids in reads.items():
            values = bus.read(list(fields), ids)
            torque.update(values.get("torque_enable", {}))
            alarmed.update(i for f in fields if f != "torque_enable" for i, v in values[f].items() if v)
        return torque, sorted(alarmed)

    def _send(self, goal: np.ndarray, skip: Collection[str] = ()) -> dict[str, dict[int, int]]:
        """Write goals [J] (joint units) to every bus but those in `skip`; returns what went
        out, {bus: {servo id: ticks}}."""
        sent = {}
        for bus_name, bus in self.buses.items():
            if bus_name in skip:
                continue
            values = {
                m.id: self._convert[m.joint].to_ticks(float(goal[self._index[m.joint]]))
                for m in self._bus_motors[bus_name]
            }
            bus.write("goal_position", values)
            sent[bus_name] = values
        return sent

    def _unconfirmed(self, sent: dict[str, dict[int, int]], torque_on: bool = True) -> list[str]:
        """Goal Position read back after `_send`, and with `torque_on` Torque Enable: one line
        per servo that does not read the goal sent (a sync write has no reply, so a refused
        goal shows only here) or has torque off. A servo's own protection (overload,
        overheating) switches its torque off and leaves its goal as written: a hold confirmed
        by the goal alone was reported "holding position" with that joint limp."""
        wrong = []
        fields = ["goal_position", "torque_enable"] if torque_on else ["goal_position"]
        for bus_name, values in sent.items():
            back = self.buses[bus_name].read(fields, list(values))
            wrong += [f"bus '{bus_name}' servo {i} reads {back['goal_position'][i]}, sent {v}"
                      for i, v in values.items() if back["goal_position"][i] != v]
            if torque_on:
                wrong += [f"bus '{bus_name}' servo {i} has torque off (its own protection, see its hardware "
                          "error, or a restart: a power dip?)" for i in values if not back["torque_enable"][i]]
        return wrong

    def _switch_torque_off(self, buses: list[MotorBus]) -> list[str]:
        """Torque off on each bus, every one tried; returns one line per bus that failed.

        A KeyboardInterrupt or SystemExit (a second Ctrl-C while the robot is being put away)
        does not cut it short: the interrupted bus is tried once more, the rest as usual, and
        the interrupt is raised after. Cut short, the buses after it kept torque on while the
        ports closed, the robot holding its last goal with no software attached."""
        failures: list[str] = []
        interrupted: BaseException | None = None
        for bus in buses:
            if not bus.is_connected:
                failures.append(f"bus '{bus.name}': not connected")
                continue
            for attempt in range(2):
                try:
                    bus.set_torque(False)
                    break
                except PlatformError as err:
                    failures.append(str(err))
                    break
                except (KeyboardInterrupt, SystemExit) as exc:
                    interrupted = interrupted or exc
                    if attempt:
                        failures.append(f"bus '{bus.name}': torque off interrupted twice")
        if interrupted is not None:
            for failure in failures:
                log.error("robot %s: torque off failed: %s", self.name, failure)
            raise interrupted
        return failures
