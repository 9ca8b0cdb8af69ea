"""Leader-follower teleoperation: the operator moves leader arms, the followers copy them.

Leader and follower are calibrated to the same joint zero and direction, so mapping is
in joint space: leader ticks -> (leader calibration) -> joint value -> follower joint.
Grippers map opening to opening (both 0 closed .. 1 open), optionally through a gain
and offset (a leader handle that never quite closes), then clipped to 0..1.
Leader torque stays off: they are moved by hand.

A leader servo's alarm is a fault as the follower's are: a "motor encoder error" makes its
position untrustworthy, and the follower would go on copying it. Each read checks the
alert bit every status packet carries (free on the sync read; the error register is read
only when a servo raised it), `connect` reads the registers; a warning the servo keeps
working through (a Y servo's low backup battery) is logged once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from shallowpi.hardware.dynamixel.bus import DynamixelBus
from shallowpi.hardware.dynamixel.calibration import nearest_turn, unwrap_reading
from shallowpi.hardware.dynamixel.motor_bus import MotorBus, ServoFaultError
from shallowpi.robots.base import LinkCounts
from shallowpi.robots.calibration import (
    RobotCalibration,
    check_leader_range,
    check_servo_frame,
    check_turn_count,
    check_turn_travel,
    leader_limits,
    reply_without_delay,
)
from shallowpi.robots.servo_setup import answer_every_instruction
from shallowpi.robots.spec import JointSpec, LeaderSpec, MotorSpec, RobotSpec


@contextmanager
def _as_leaders(leader: LeaderSpec) -> Iterator[None]:
    """A servo fault inside the block said as the leader arm's (the bus's line names a bus
    and a servo, not that the follower copies it). Its `bus` stays the leader's, which no
    follower bus is: the follower holds, as for a leader that stops answering."""
    try:
        yield
    except ServoFaultError as fault:
        raise ServoFaultError(f"leader arm '{leader.name}': {fault}", bus=fault.bus) from None


@dataclass(frozen=True)
class GripperMap:
    """follower opening = clip(gain * leader opening + offset, 0, 1)."""

    gain: float = 1.0
    offset: float = 0.0

    def __call__(self, leader_opening: float) -> float:
        return min(1.0, max(0.0, self.gain * leader_opening + self.offset))


class LeaderFollower:
    """A `Teleoperator` reading leader arms by hand: each leader motor's position,
    converted by the calibration, is the goal of the follower joint it names.

    `leaders` picks leader arms by name (default: all of the spec's). `buses` supplies
    buses (tests, emulators); the others are opened from the spec. Raises ConfigError when
    no leader matches.
    """

    # Seconds between two readings of a joint past which the hand may have turned it over
    # half a turn (`_unwrapped`): pi rad in 0.15 s is 21 rad/s, over three turns a second,
    # faster than a hand turns a leader joint; 0.15 s is 4.5 periods of a 30 Hz loop (7.5 of
    # a 50 Hz one), so a late tick is plainly continued and only a stall (the writer waiting
    # on the disk, a garbage collection) is looked at again.
    STALL_S = 0.15

    def __init__(
        self,
        spec: RobotSpec,
        calibration: RobotCalibration,
        leaders: Iterable[str] | None = None,
        *,
        gripper_map: GripperMap | None = None,
        buses: Mapping[str, MotorBus] | None = None,
    ) -> None:
        chosen = set(leaders) if leaders is not None else {leader.name for leader in spec.leaders}
        self.leaders: list[LeaderSpec] = [leader for leader in spec.leaders if leader.name in chosen]
        if not self.leaders:
            from shallowpi.errors import ConfigError

            raise ConfigError(f"robot '{spec.name}' has no leader arms named {sorted(chosen)}; add leaders: to its config")
        calibration.check_adapters(spec, {leader.bus for leader in self.leaders})  # before any port opens
        kinds = {j.name: j.kind for j in spec.joints}
        self.robot = spec.name
        self._joints = {j.name: j for j in spec.joints}
        self._limits = {j.name: (j.lower, j.upper) for j in spec.joints}
        self._last_ticks: dict[str, int] = {}  # the last reading of each joint, unwrapped
        self._guessed: set[str] = set()  # joints whose last reading continues a first one's guessed turn
        self._read_at: dict[str, float] = {}  # time.monotonic() s of each joint's last reading
        self.gripper_map = gripper_map or GripperMap()
        self._kinds = kinds
        self._convert = {m.joint: calibration.converter(m, kinds[m.joint]) for leader in self.leaders for m in leader.motors}
        led = {m.joint for leader in self.leaders for m in leader.motors}
        # act() keeps the goal of a joint an action leaves out: it holds its pose from connect
        # unless something else moves it (the recorder's jog keys, teleop/jog.py).
        self.unled: list[JointSpec] = [j for j in spec.joints if j.name not in led]
        self.buses: dict[str, MotorBus] = dict(buses or {})
        for name in dict.fromkeys(leader.bus for leader in self.leaders):
            if name not in self.buses:  # every leader on the bus: two arms' leaders may share one chain
                motors = {m.id: m.model for leader in self.leaders if leader.bus == name for m in leader.motors}
                self.buses[name] = DynamixelBus(name, spec.buses[name].port, spec.buses[name].baud, motors)

    def connect(self) -> None:
        """Open each leader's bus, check its servos (`verify`; each answering every instruction,
        `answer_every_instruction`), switch their torque off, set
        their Return Delay Time to 0 (`reply_without_delay`) and each its configured operating mode, the one `platform calibrate` reads it in
        (a servo left in another mode by another tool counts its position in another frame:
        extended position mode keeps whole turns that position mode drops).
        Raises BusError on a bus or servo fault (ServoFaultError for a servo reporting a
        hardware error, as a follower's at connect); PlatformError when a joint was swept at
        calibration through more than the one turn its servo reads (`check_leader_range`), a
        multi-turn servo's travel crosses the end of the turn it counts in after power-up or
        it counts from another turn (`_check_turn_counts`), or a servo reads in
        another frame than the calibration's (`check_servo_frame`)."""
        try:
            for leader in self.leaders:
                bus = self.buses[leader.bus]
                bus.connect()
                bus.verify()
                with _as_leaders(leader):
                    # Before any read or write it must answer: a Status Return Level another tool
                    # lowered failed them as an unplugged servo (robots/servo_setup.py).
                    answer_every_instruction(self.robot, bus, leader.bus, [m.id for m in leader.motors])
                    # Before anything is written to it: a leader whose encoder failed is refused.
                    bus.raise_on_hardware_errors([m.id for m in leader.motors])
                    check_servo_frame(self.robot, bus, leader.bus, [m.id for m in leader.motors])
                    bus.set_torque(False)
                    reply_without_delay(bus, [m.id for m in leader.motors])
                    for motor in leader.motors:
                        bus.set_operating_mode(motor.mode, [motor.id])
                        # Against its own sweep, not the follower's limits: a leader is never
                        # driven, and a range across the turn's end is read on (`_unwrapped`).
                        check_leader_range(self.robot, motor, self._convert[motor.joint].calibration)
                    self._check_turn_counts(leader, bus)
        except BaseException:
            self.disconnect()  # no port left open behind a refusal
            raise
        self._last_ticks, self._guessed, self._read_at = {}, set(), {}

    def link_counts(self) -> LinkCounts:
        """The leader buses' exchanges and failed tries (robots/base.LinkCounts), each servo's
        as "leader JOINT": a leader read retried costs the recording loop as a follower's does."""
        return LinkCounts.of_buses(self.buses, {(leader.bus, m.id): f"leader {m.joint}"
                                                for leader in self.leaders for m in leader.motors})

    def disconnect(self) -> None:
        """Close every leader bus, leaving torque as it is (off)."""
        for bus in self.buses.values():
            bus.disconnect()

    def __enter__(self) -> LeaderFollower:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.disconnect()

    def read(self) -> dict[str, float]:
        """Follower goals by joint name, in joint units (rad, m; grippers 0..1 through
        `gripper_map`), from one position read per leader arm. Raises BusError on a failed
        read; ServoFaultError when a leader servo's reply raised the alert bit for a
        hardware error (its error register then read: a motor encoder error leaves its
        position untrustworthy), which stops the follower as a leader that stops answering
        does; a warning alone is logged once."""
        action: dict[str, float] = {}
        for leader in self.leaders:
            with _as_leaders(leader):
                ticks = self.buses[leader.bus].read(["present_position"], [m.id for m in leader.motors],
                                                    check_alert=True)["present_position"]
            read_at = time.monotonic()
            for m in leader.motors:
                value = self._convert[m.joint].to_joint(self._unwrapped(m, ticks[m.id], read_at))
                action[m.joint] = self.gripper_map(value) if self._kinds[m.joint] == "gripper" else value
        return action

    def _check_turn_counts(self, leader: LeaderSpec, bus: MotorBus) -> None:
        """PlatformError (one line) for a multi-turn leader servo (`MotorSpec.counts_turns`:
        extended or current-based position mode, a Y series) whose travel crosses the end of
        the turn its count restarts in at power-up (an X series': `check_turn_travel`, on
        `leader_limits` and the sweep; part of that travel reads a turn off, which can land
        inside the margin below), or that reads over half a turn outside its joint's limits:
        it counts from another turn than at calibration. Either would send the
        follower a turn off, to a limit (`check_turn_count`, as the followers are checked).
        A single-turn one past its turn's end is read in the nearest turn instead
        (`_unwrapped`)."""
        multi = [m for m in leader.motors if m.counts_turns]
        if not multi:
            return
        for motor in multi:  # whatever the pose: before the reading is judged
            convert = self._convert[motor.joint]
            check_turn_travel(self.robot, motor, convert, *leader_limits(self._joints[motor.joint], convert))
        ticks = bus.read(["present_position"], [m.id for m in multi])["present_position"]
        for motor in multi:
            convert = self._convert[motor.joint]
            check_turn_count(self.robot, motor, convert, *self._limits[motor.joint], convert.to_joint(ticks[motor.id]))

    def _unwrapped(self, motor: MotorSpec, ticks: int, read_at: float) -> int:
        """In position mode a servo reads one turn (0..4095): a leader moved by hand past the
        turn's end reads from the other end, which converted is a joint on the far side of its
        range, and the follower would sweep there. Each reading (`ticks`, read at `read_at`,
        time.monotonic() seconds) continues the last one the shorter way round
        (`unwrap_reading`), in range or not: a wrist roll whose range spans nearly a turn,
        turned a few degrees past its limit, reads inside the range again, at its other end,
        and taken as read the follower swung across its whole range at top speed. The first
        reading has nothing to continue from: inside the range it is taken as read; outside
        it, in the turn nearest the range (`nearest_turn`: as read, a leader resting just past
        the turn's end sent the follower to its far limit), a guess that lasts until a reading
        falls inside the range, which is then taken as read. A reading over `STALL_S` after
        the last may be over half a turn on (continued the shorter way round after a stall in
        which the hand turned the joint further, it stayed a whole turn off for the rest of the
        run, the follower pinned at a limit): continued outside the range where a whole turn
        on or back puts it inside, it is taken there. Taken as a first reading instead, a
        joint held past its limit through a short stall read near the other end of its range,
        and the follower swung there."""
        if motor.counts_turns:
            return ticks  # the other modes, and the Y series in any, count whole turns themselves
        low, high = self._convert[motor.joint].tick_range(*self._limits[motor.joint])
        last, joint, turn = self._last_ticks.get(motor.joint), motor.joint, motor.model.ticks_per_turn
        stalled = last is not None and read_at - self._read_at[joint] > self.STALL_S
        self._read_at[joint] = read_at
        if last is not None and not (joint in self._guessed and low <= ticks <= high):
            ticks = unwrap_reading(last, ticks, turn)
            if stalled and not low <= ticks <= high:
                # The joint may have turned over half a turn meanwhile: a turn on or back that
                # lands inside the range is the likelier reading (the hand works in the range).
                ticks = next((t for t in (ticks - turn, ticks + turn) if low <= t <= high), ticks)
        elif low <= ticks <= high:  # the first reading, or the first in range after a guess: as read
            self._guessed.discard(joint)
        else:
            ticks = nearest_turn(ticks, low, high, motor.model.ticks_per_turn)
            self._guessed.add(joint)
        self._last_ticks[joint] = ticks
        return ticks
