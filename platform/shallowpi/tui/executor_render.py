"""The executor's status as text: one line for logs and `platform monitor --lines`, and
the panels of its dashboard (tui/executor_dashboard.py)."""

from __future__ import annotations

import math

from rich.text import Text

from shallowpi.telemetry.executor_status import ExecutorStatus
from shallowpi.tui import panels


def status_line(s: ExecutorStatus) -> str:
    """State, episode, inference p50/p99, delay, queue, chunk age, loop p99 (on the twin's
    simulated time, the wall time a tick took, as the recorder's line says it), safety counts."""
    safety, loop = s.safety, s.loop
    timing = panels.loop_timing_text(loop.simulated, loop.period_p99_ms, overruns=loop.overruns)
    return (f"{s.state.value.upper():8} episode {s.episode + 1}/{s.episodes_total} ({_successes(s, 'ok')}) "
            f"{s.strategy} on {s.backend} | inference p50 {s.inference_p50_ms:.0f} p99 {s.inference_p99_ms:.0f} ms, "
            f"delay {s.delay_ticks} ticks, queue {s.queue_depth}, chunk age {s.chunk_age_ms:.0f} ms | {timing}"
            + (f", servo retries {panels.link_text(loop)}" if loop.link_exchanges else "")
            + f" | clamps {safety.clamps}, seam trips {safety.seam_trips}, holds {safety.holds}, "
            f"stale {safety.stale_frames}, faults {safety.faults}")


def _successes(s: ExecutorStatus, word: str) -> str:
    """'3 ok', or 'success not judged' on the robot, where nothing detects it."""
    return f"{s.successes} {word}" if s.success_judged else "success not judged"


# -- panels of the executor's dashboard (pure: status -> Text, so tests read them) ----------

SPARK = "▁▂▃▄▅▆▇█"
NUMBERS_WIDTH = 25  # " command measured   error" after the name: 1 + 7 + 1 + 8 + 1 + 7 cells
NUMBERS_WIDTH_NARROW = 16  # " command   error": the measured column left out (command - error)
NAME_MIN = panels.NAME_MIN  # narrower names than this cost the measured column first
STATE_STYLE = {"running": "bold white on green", "hold": "bold black on yellow", "fault": "bold white on red",
               "warming": "bold black on cyan", "reset": "bold black on cyan", "homing": "bold black on cyan", "stopped": "bold white on blue",
               "done": "bold white on blue"}


def summary(s: ExecutorStatus | None, connected: bool, control: bool = True) -> Text:
    """State badge (and WATCH-ONLY where this view's keys cannot reach the executor),
    robot and task, episode and successes, strategy on backend (profile)."""
    text = Text()
    if s is None:
        return text.append(" WAITING ", style="bold black on white").append(" for the executor's first status")
    if not connected:
        text.append(" DISCONNECTED ", style="bold white on red")
    elif not control:
        text.append(" WATCH-ONLY: e and s are not sent ", style="bold black on yellow")
    text.append(f" {s.state.value.upper()} ", style=STATE_STYLE.get(s.state.value, "bold"))
    text.append(f"  {s.robot} / {s.task}\n", style="bold")
    text.append(f"episode {s.episode + 1}/{s.episodes_total}, {_successes(s, 'succeeded')}  |  {s.strategy} on "
                f"{s.backend} (profile {s.profile})")
    if s.state.value == "reset" and math.isfinite(s.reset_left_s):
        text.append(f"\nset the scene: the episode starts in {math.ceil(s.reset_left_s)} s", style="bold")
    return text


def sparkline(values: list[float], width: int = 40) -> str:
    """Recent values as block characters scaled to their own min..max."""
    values = values[-width:]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    return "".join(SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))] for v in values)


def inference(s: ExecutorStatus, panel_width: int | None = None) -> Text:
    """Latency sparkline with p50/p99, the delay estimate, queue depth and chunk age, each
    line within `panel_width` cells (None: no limit): the sparkline is cut to it and the
    chunk age takes a line of its own where it would not fit beside the queue."""
    text = Text()
    text.append(sparkline(s.inference_ms, width=min(panel_width or 40, 40)) + "\n", style="cyan")
    text.append(f"p50 {s.inference_p50_ms:6.1f} ms  p99 {s.inference_p99_ms:6.1f} ms\n")
    queue = f"delay {s.delay_ticks} ticks  queue "
    text.append(queue)
    text.append(f"{s.queue_depth}", style="bold red" if s.queue_depth == 0 and s.state.value == "running" else "")
    age = f"chunk age {s.chunk_age_ms:.0f} ms"
    fits = panel_width is None or len(queue) + len(str(s.queue_depth)) + 2 + len(age) <= panel_width
    text.append(("  " if fits else "\n") + age)
    return text


def joints(s: ExecutorStatus, panel_width: int | None = None) -> Text:
    """Commanded vs measured per joint, and their difference. While the robot holds for the
    reset (nothing is read then) the values are those it holds at, read before it.

    Each joint is one row within `panel_width` cells (None: no limit): the names are cut
    first (in the middle, kept distinct: panels.short_names), then the measured
    column goes (a wrapped row halved the joints an 80-column terminal showed)."""
    text = Text()
    if s.state.value == "reset":
        text.append("holding: the values read before the reset\n", style="italic")
    names = list(s.joint_names)
    width = min(max((len(name) for name in names), default=5), 22)
    measured = panel_width is None or panel_width - NUMBERS_WIDTH >= min(width, NAME_MIN)
    if panel_width is not None:
        width = max(5, min(width, panel_width - (NUMBERS_WIDTH if measured else NUMBERS_WIDTH_NARROW)))
    text.append(f"{'joint'[:width]:<{width}} {'command':>7}" + (f" {'measured':>8}" if measured else "")
                + f" {'error':>7}\n", style="bold")
    for shown, cmd, meas in zip(panels.short_names(names, width), s.commanded, s.measured):
        err = cmd - meas
        text.append(f"{shown:<{width}} {cmd:>7.3f}" + (f" {meas:>8.3f}" if measured else "") + " ")
        text.append(f"{err:>+7.3f}\n", style="yellow" if abs(err) > 0.2 else "")
    text.rstrip()
    return text


def safety(s: ExecutorStatus) -> Text:
    """Clamps, seam trips, watchdog holds, stale frames, faults (red when non-zero)."""
    text = Text()
    for label, value in (("clamps", s.safety.clamps), ("seam trips", s.safety.seam_trips),
                         ("holds", s.safety.holds), ("stale frames", s.safety.stale_frames),
                         ("faults", s.safety.faults)):
        bad = value and label in ("seam trips", "faults", "stale frames")
        text.append(f"{label:<13}")
        text.append(f"{value:>6}\n", style="bold red" if bad else ("yellow" if value else "green"))
    text.rstrip()
    return text
