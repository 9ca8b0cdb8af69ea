"""What `platform deploy` does while the robot waits for its operator, holding its pose
with torque on: before it first moves (Enter), after a fault the servos survive (stop or
e-stop; with --yes, deploy.fault_hold_s at most), after the last episode (released by Enter
or the dashboard's s). Each wait goes
on publishing the executor's status, obeying the dashboard and reading the servos' alarms;
a wait for Enter first drops what was typed ahead.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from shallowpi.commands.console import discard_typed_ahead

WAITING_FOR_GO = "the robot holds: waiting for Enter on deploy's terminal before it first moves"


def wait_for_go(executor: Any, publish: Callable[[Any], None], episodes: int,
                period_s: float = 0.2) -> None:
    """Before the robot first moves (to the demonstrations' start pose, then the policy):
    wait for Enter on the terminal, the robot holding where it is (torque on since connect).
    Ctrl-C, a signal, a dashboard's stop or the end of input ends the wait, and the run,
    without a move; meanwhile the status is published (`platform monitor` shows the robot
    holding) and the servos' alarms read (a fault ends the wait and the run, handled as in a
    tick). The robot's first motion came a few seconds after launch, unannounced."""
    print(f"the robot holds; on Enter it moves to its start pose, then runs the policy for {episodes} "
          "episode(s). Clear the workspace, keep the e-stop within reach, then press Enter (Ctrl-C: stop, "
          "torque off)", flush=True)
    executor.status.message = WAITING_FOR_GO
    hold_with_torque(executor, publish, lambda: executor.stopped, period_s, enter=True)


def hold_until_the_operator_ends(executor: Any, publish: Callable[[Any], None], say: Callable[[str], None],
                                 keys: bool = True, period_s: float = 0.1, limit_s: float | None = None) -> None:
    """After a policy-side or camera fault the robot is sound and holds its pose with torque
    on; after a servo or bus fault, the buses that confirmed holding do (the one at fault
    went limp: Robot.hold_or_release). Keep them so (the servos hold their goals) until the
    operator stops or e-stops, from the dashboard or with Ctrl-C, rather than turn torque
    off unasked and drop the arms. The status goes on being published, the dashboard's
    commands obeyed and the holding servos' alarms read meanwhile (an overload is a fault
    as in a tick: its bus goes limp, the others hold on; the wait ends once none holds).
    `keys`: the dashboard reads s and e (else only Ctrl-C and `platform monitor --control`
    reach the executor). `limit_s` (--yes, deploy.fault_hold_s): nobody attends, so after
    that many seconds the hold ends as a stop would (said in a line; torque goes off as
    deploy disconnects), instead of keeping an unattended arm powered until someone comes."""
    fault = executor.status.message.removeprefix("fault: ")
    ways = "stop (s or Ctrl-C: torque off) or e-stop (e)" if keys else \
        "stop with Ctrl-C (torque off), or from `platform monitor --control`"
    held = ("the buses that hold keep their pose with torque on, the others are limp" if "torque off on bus" in fault
            else "the robot holds its pose with torque on")
    if limit_s is not None:
        held += f" for {limit_s:g} s (--yes: deploy.fault_hold_s), then torque goes off"
    say(f"stopped on a fault ({fault}); {held}: support it, then {ways}")
    deadline = None if limit_s is None else time.monotonic() + limit_s
    hold_with_torque(executor, publish, lambda: not executor.held_after_fault
                     or (deadline is not None and time.monotonic() >= deadline), period_s)
    if executor.held_after_fault:  # only the limit ends a hold that still holds
        say(f"nobody ended the hold in {limit_s:g} s (--yes: deploy.fault_hold_s): torque goes off, exit 1")
        executor.stop()  # the hold's end, as the operator's stop would: deploy disconnects, torque off


def hold_until_released(executor: Any, publish: Callable[[Any], None], keys: bool,
                        period_s: float = 0.1) -> None:
    """Every episode ran, and torque going off now would drop the arms wherever the last
    one left them: the robot holds its pose until the operator, supporting it, releases it
    with Enter (without the dashboard) or the dashboard's s, or Ctrl-C; then `platform
    deploy` turns torque off. Not with --yes (nobody attends: torque off at once). A servo
    fault meanwhile ends it as in a tick (what still holds waits for the operator's stop:
    `hold_until_the_operator_ends`)."""
    how = "press s (torque off) or e" if keys else "press Enter (torque off)"
    executor.status.message = f"{executor.status.message}; holding with torque on: support the arm, then {how}"
    if not keys:
        print(f"the episodes are done; the robot holds its pose with torque on: support it, then {how}", flush=True)
    hold_with_torque(executor, publish, lambda: executor.stopped, period_s, enter=not keys)


def hold_with_torque(executor: Any, publish: Callable[[Any], None], until: Callable[[], bool], period_s: float,
                     enter: bool = False) -> None:
    """The robot holds its last command, torque on, until `until()` (or Enter on the
    terminal, with `enter`): the status goes on being published, the dashboard's commands
    obeyed and the servos' alarms read once a second (Executor.watch_faults). A servo that
    overloads holding is a fault as in a tick: counted, FAULT shown, the bus at fault limp
    and the others holding for the operator (`held_after_fault`), the run stopped; the wait
    for Enter and the one after the last episode end there (`until` says when the wait
    after a fault does)."""
    import select

    if enter:
        discard_typed_ahead()
        fd = sys.stdin.fileno()
    while not until():
        publish(executor.status)
        # As the reset's wait does: estop() here dropped every bus, showed the run e-stopped
        # (the operator's doing) and left the fault uncounted (exit 0, --json faults 0).
        executor.watch_faults()
        if until():
            return
        if not enter:
            time.sleep(period_s)
        elif select.select([fd], [], [], period_s)[0]:
            # From the descriptor, not sys.stdin: a line in Python's buffer would be no answer
            # to this question. A terminal hands over a line at a time; b"": the end of input.
            if not os.read(fd, 4096):  # nobody is there to press Enter
                executor.stop()
            return
