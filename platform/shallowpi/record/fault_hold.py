"""The robot a recording session left holding after a fault, watched while the operator
has not yet acknowledged the fault: `FaultHold`.

    held = FaultHold(session.robot, session.status, publisher.publish, result)
    while waiting_for_the_key():
        held.watch()                    # alarms once a second, the status every half second
    held.torque_went_off()              # after an E-STOP: nothing holds, nothing to read
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from shallowpi.errors import PlatformError
from shallowpi.robots.base import Robot, SafeStateError
from shallowpi.telemetry.status import RecorderStatus

log = logging.getLogger(__name__)

# While a fault waits, the held robot's servo alarms are read this often (as deploy's holds
# read them: Executor.watch_faults), and the status is published again this often (a
# dashboard or monitor that had no status for 2 s says STALE: the recorder looked stuck).
ALARM_READ_PERIOD_S = 1.0
REPUBLISH_PERIOD_S = 0.5


def hold_or_release(robot: Robot, fault: PlatformError | None = None) -> tuple[str, bool]:
    """`robot.hold_or_release(fault)` as a recording says it: (what the operator is told,
    whether anything still holds). A failure is logged and said NOT confirmed safe, with
    what to do; something holds then only where the error says so (SafeStateError.holding)."""
    try:
        safe = robot.hold_or_release(fault)
        return safe.message, safe.holding
    except PlatformError as error:
        log.error("robot not confirmed safe: %s", error)
        return (f"robot NOT confirmed safe: {error}; cut the servo power before going near the robot",
                isinstance(error, SafeStateError) and error.holding)


class FaultHold:
    """A faulted session's robot while the fault waits for its acknowledgement on the
    dashboard (tui/recorder_app.py), up to an hour: the wait had only listened for the E-STOP, so a held servo that overloaded went
    limp unseen, the dashboard still saying "robot is safe: holding position", and no status
    went out (dashboards said STALE). Its alarms are now read every ALARM_READ_PERIOD_S
    (Robot.check_faults) while anything holds; a fault is handled as in a tick
    (Robot.hold_or_release: the bus at fault goes limp, the others hold on), logged, added
    to the result's fault line and shown (FAULT in the status's message). The status is
    published every REPUBLISH_PERIOD_S. Here, not in the tui package, which waits on the
    dashboard's process and only calls `watch` (DESIGN.md: the TUI reads telemetry).
    """

    def __init__(self, robot: Robot | None, status: RecorderStatus, publish: Callable[[RecorderStatus], None],
                 result: Any) -> None:
        self._robot, self._status, self._publish, self._result = robot, status, publish, result
        self._reading = robot is not None  # off once nothing holds (limp, or e-stopped)
        self._read_at = self._published_at = float("-inf")

    def torque_went_off(self) -> None:
        """An E-STOP turned torque off: nothing holds, no alarm is read from here."""
        self._reading = False

    def watch(self) -> None:
        """Read the alarms, publish the status, each when due (call it often)."""
        now = time.monotonic()
        if self._reading and now - self._read_at >= ALARM_READ_PERIOD_S:
            self._read_at = now
            self._read_alarms()
        if now - self._published_at >= REPUBLISH_PERIOD_S:
            self._published_at = now
            self._say()

    def _read_alarms(self) -> None:
        robot = self._robot
        if robot is None:
            return
        try:
            robot.check_faults()
            return
        except PlatformError as exc:
            fault = exc
        except Exception:  # a bug must not end the wait, whose E-STOP still has to work
            log.exception("reading the servos' alarms while the fault waits failed; they are no longer read")
            self._reading = False
            return
        log.error("fault while the robot held for the acknowledgement: %s", fault)
        # As the session's own fault: hold what can hold, the rest limp, said as it says it.
        safety, self._reading = hold_or_release(robot, fault)
        self._result.fault = f"{self._result.fault}; then, while it held for the acknowledgement: {fault}; {safety}"
        status = self._status
        status.message = f"FAULT while holding for the acknowledgement: {fault}; {safety}; episodes already saved are kept"
        self._published_at = time.monotonic()
        self._say()

    def _say(self) -> None:
        try:
            self._publish(self._status)
        except Exception:  # a dashboard problem must not end the wait, whose E-STOP still has to work
            log.exception("status publish failed")
