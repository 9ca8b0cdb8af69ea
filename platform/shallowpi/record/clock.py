"""Tick clocks for the control loop: wall-clock for a real robot, simulated for the twin.

Both measure the loop's real period (p50/p99) and count overruns, so the dashboard shows
how well the loop keeps its rate whichever clock drives it: live over a window of the
last periods (`percentiles_ms`), and over every period of a take for what is stored or
reported with it (`take_percentiles_ms`).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterator

LOOP_SWITCH_INTERVAL_S = 0.001  # the GIL hand-over bound while a wall-clock loop runs
COMMAND_OFFSETS = 15  # the last commands' offsets into their ticks that TickClock.command_sent keeps


@contextlib.contextmanager
def prompt_gil_handover(active: bool = True) -> Iterator[None]:
    """While a wall-clock loop shares its process with worker threads (inference, frame
    encoding), a thread running Python keeps the GIL for up to the switch interval (5 ms by
    default) each time the loop asks for it: bound it at 1 ms while the loop runs, then put
    the old value back. (The executor's loop p99 under load: 39 ms against 41-44 ms at 30
    Hz, BENCHMARKS.md "Deployment".) `active=False` (simulated time) changes nothing."""
    before = sys.getswitchinterval()
    if active:
        sys.setswitchinterval(min(before, LOOP_SWITCH_INTERVAL_S))
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def _quantile(ordered: list[float], q: float) -> float:
    """The `q` quantile of ascending `ordered`, linearly interpolated between the two
    nearest ranks (np.percentile's default method); 0.0 when empty."""
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


class TickClock:
    """Fixed-rate ticks on the monotonic clock. A late tick counts as an overrun and the
    schedule restarts from now (no burst of catch-up ticks); a loop that commands a robot
    says when its command went out (`command_sent`), so that a late one is not followed at
    once by the next.

    Each period is kept twice: in a window of the last `window` (the live display), and
    in the take's whole record, from `reset_stats` (or the clock's start) to `end_take`,
    which the numbers stored with a take or reported for an episode come from: a window's
    p99 forgets a take's slow start once `window` periods have followed it, while its
    overruns count the whole take. 8 bytes a period (a 10-minute take at 30 Hz: 144 kB),
    none between takes."""

    simulated = False

    def __init__(self, hz: float, window: int = 600) -> None:
        self.period = 1.0 / hz
        self.hz = hz
        self._periods: deque[float] = deque(maxlen=window)  # the live window [s]
        self._take = array("d")  # every period of the take [s]
        self._taking = True  # periods go into `_take` (False between takes: `end_take`)
        self.overruns = 0
        self.ticks = 0
        self._last = time.monotonic()  # when the current tick began
        self._deadline = self._last + self.period
        self._percentiles: tuple[int, float, float] | None = None  # (at tick, p50 ms, p99 ms)
        self._offsets: deque[float] = deque(maxlen=COMMAND_OFFSETS)  # when into their ticks commands went [s]
        self._counted = False  # the current tick's overrun is counted (by command_sent)

    def restart(self) -> None:
        """The loop starts now: the current tick begins now and the next is due one period
        later (the time spent connecting before the loop is no overrun)."""
        self._last = time.monotonic()
        self._deadline = self._last + self.period
        self._counted = False

    def wait(self) -> None:
        """Sleep until the next tick is due; measures the period that just ended."""
        now = time.monotonic()
        if now > self._deadline + 0.1 * self.period:
            if not self._counted:  # counted once a tick, here or by command_sent
                self.overruns += 1
            self._deadline = now
        else:
            # Sleep most of the way, then spin the last half millisecond: sleep() wakes late.
            remaining = self._deadline - now
            if remaining > 0.0015:
                time.sleep(remaining - 0.001)
            while time.monotonic() < self._deadline:
                pass
        now = time.monotonic()
        self._measured(now - self._last)
        self._last = now
        self._deadline += self.period
        self._counted = False
        self.ticks += 1

    def command_sent(self) -> None:
        """The tick's command has just gone out. A tick whose command went out late (a sync
        chunk computed in it, a slow camera read before it) would otherwise have the next
        tick start at once, or within a few ms, and its command follow this one by as
        little: a robot that bounds each step by the time since the last command (Robot.act)
        would take almost none of it. So when the next command, sent as far into its tick as
        commands usually are (the median of the last COMMAND_OFFSETS), would come less than
        half a period after this one, the next tick is due a period after this command, less
        that usual offset; the tick, longer than the period by over half of it, counts as an
        overrun (once: `wait` does not count it again)."""
        now = time.monotonic()
        usual = statistics.median(self._offsets) if self._offsets else 0.0
        self._offsets.append(now - self._last)
        if self._deadline + usual - now >= 0.5 * self.period:
            return
        self._deadline = now + self.period - usual
        if not self._counted:
            self.overruns += 1
            self._counted = True

    def _measured(self, period_s: float) -> None:
        """Keep a tick's measured period: in the live window and, during a take, its record."""
        self._periods.append(period_s)
        if self._taking:
            self._take.append(period_s)

    def tick_start_s(self) -> float:
        """When the current tick began, on this clock: an episode that begins in this tick
        has this as its t = 0."""
        return self._last

    def tick_time(self, episode_start_tick: int, episode_start_s: float) -> float:
        """Seconds from the episode's first tick to the start of the current one: the row's
        time, 0 for the episode's first row."""
        return self._last - episode_start_s

    def now(self) -> float:
        """Seconds on the monotonic clock."""
        return time.monotonic()

    def percentiles_ms(self) -> tuple[float, float]:
        """p50 and p99 (ms) of the periods in the window, interpolated as np.percentile's
        default; (0, 0) before the first. Computed once a tick, however often asked: the
        loop's status asks every tick, and np.percentile of the 600-period window cost
        ~0.2 ms a call, ~5 % of a simulated recording's tick."""
        if self._percentiles is None or self._percentiles[0] != self.ticks:
            ordered = sorted(self._periods)
            self._percentiles = (self.ticks, _quantile(ordered, 0.5) * 1e3, _quantile(ordered, 0.99) * 1e3)
        return self._percentiles[1], self._percentiles[2]

    def take_percentiles_ms(self) -> tuple[float, float]:
        """p50 and p99 (ms) of every period of the take (since `reset_stats`, or the clock's
        start, until `end_take`), interpolated as np.percentile's default; (0, 0) before
        the first. What is stored or reported with a take, beside `overruns`, which count
        the same periods. Sorts the whole take each call: ask once, at its end."""
        ordered = sorted(self._take)
        return _quantile(ordered, 0.5) * 1e3, _quantile(ordered, 0.99) * 1e3

    def reset_stats(self) -> None:
        """A take begins: forget the measured periods and the overruns, and keep every
        period from now on for `take_percentiles_ms` (the tick count and schedule stay)."""
        self._periods.clear()
        self._take = array("d")
        self._taking = True
        self._percentiles = None
        self.overruns = 0

    def end_take(self) -> None:
        """The take has ended: its record keeps what it holds, for `take_percentiles_ms`,
        and grows no more until the next `reset_stats` (a recorder may wait between takes
        for hours). The live window goes on."""
        self._taking = False


class SimulatedClock(TickClock):
    """The twin's clock: each tick is exactly one period of simulated time. A slow render
    slows the episode down instead of dropping or duplicating frames; `realtime` caps the
    pace at wall-clock speed so an operator can watch."""

    simulated = True

    def __init__(self, hz: float, realtime: bool = False, window: int = 600) -> None:
        super().__init__(hz, window)
        self.realtime = realtime

    def wait(self) -> None:
        """End the tick without sleeping (`realtime`: paced as `TickClock.wait`); measures the
        wall time the tick took."""
        if self.realtime:
            super().wait()
            return
        now = time.monotonic()
        self._measured(now - self._last)
        self._last = now
        self.ticks += 1

    def command_sent(self) -> None:
        """Paced (`realtime`) as `TickClock.command_sent`; otherwise nothing: simulated time
        has no late tick."""
        if self.realtime:
            super().command_sent()

    def tick_start_s(self) -> float:
        """Simulated time at the current tick's start: ticks * period (s)."""
        return self.ticks * self.period

    def tick_time(self, episode_start_tick: int, episode_start_s: float) -> float:
        """Simulated seconds from the episode's first tick to the current one: whole periods."""
        return (self.ticks - episode_start_tick) * self.period

    def now(self) -> float:
        """Simulated seconds: ticks * period."""
        return self.ticks * self.period
