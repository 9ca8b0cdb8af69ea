"""The recorder dashboard's own panels: RecorderStatus -> rich Text, one function a panel.

Pure, so tests read them directly; the panels every dashboard shares (loop period,
cameras, thumbnails) and the joint names' cutting (short_names) are in panels.py. Colours
say what needs the operator: red is a problem now (fault, a nearly full write queue),
yellow is a warning, dim is idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.style import Style
from rich.text import Text

from shallowpi.telemetry.status import EpisodeSummary, RecorderState, RecorderStatus
from shallowpi.tui import panels

# Style objects, not style strings: Textual's own style parser does not know every rich
# colour name, and a background it cannot parse is silently dropped.
STATE_STYLES: dict[RecorderState, Style] = {
    RecorderState.IDLE: Style(bold=True, color="#ffffff", bgcolor="#5f5f5f"),
    RecorderState.RECORDING: Style(bold=True, color="#ffffff", bgcolor="#d70000"),
    RecorderState.RESETTING: Style(bold=True, color="#000000", bgcolor="#d7af00"),
    RecorderState.PAUSED: Style(bold=True, color="#ffffff", bgcolor="#005fd7"),
    RecorderState.SAVING: Style(bold=True, color="#000000", bgcolor="#00afaf"),
    RecorderState.FAULT: Style(bold=True, color="#ffffff", bgcolor="#af00af"),
    RecorderState.DONE: Style(bold=True, color="#000000", bgcolor="#5fd75f"),
    RecorderState.STOPPED: Style(bold=True, color="#ffffff", bgcolor="#3a3a3a"),
}
DISCONNECTED_STYLE = Style(bold=True, color="#ffffff", bgcolor="#262626")
BAR_WIDTH = 16
DONE_WORDS = "all recorded: rest the arm, then q or Ctrl-C"  # the clock's place once every episode is saved
NUMBERS_WIDTH = 25  # "  leader follower  error" after the name: 2 + 7 + 1 + 8 + 1 + 6 cells
KEYS: list[tuple[str, str]] = [("space", "start/stop"), ("n", "next"), ("r", "re-record"), ("d", "discard"),
                               ("s", "success"), ("f", "failure"), ("p", "pause"), ("e", "E-STOP"),
                               ("c", "camera"), ("q", "quit")]
# Shown before "q" only where the robot has joints to jog (RecorderStatus.jog_joints); no-break
# spaces, so that a narrow terminal wraps the line before the three keys, not between them.
JOG_KEYS = "]\u00a0+\u00a0-"
JOG_NAMES_SHOWN = 3  # more joints than this are counted, not named, to keep the line short


def state_badge(status: RecorderStatus | None, connected: bool = True) -> Text:
    """The state as a coloured badge, e.g. ` RECORDING `. Not connected: ` RECORDER STOPPED `
    when the last status said stopped, else ` RECORDER DISCONNECTED `; no status yet:
    ` WAITING FOR THE RECORDER `."""
    # Appended as a span, not the Text's base style, so text added after it stays plain.
    if not connected:
        stopped = status is not None and status.state is RecorderState.STOPPED
        return Text().append(" RECORDER STOPPED " if stopped else " RECORDER DISCONNECTED ", style=DISCONNECTED_STYLE)
    if status is None:
        return Text().append(" WAITING FOR THE RECORDER ", style=DISCONNECTED_STYLE)
    return Text().append(f" {status.state.value.upper()} ", style=STATE_STYLES[status.state])


def _clock(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    return f"{int(seconds // 60):02d}:{seconds % 60:04.1f}"


def run_position(status: RecorderStatus) -> str:
    """'3/5 of this run': which take of this run the status's episode is."""
    total = str(status.episodes_total) if status.episodes_total else "∞"
    return f"{status.episode - status.first_episode + 1}/{total} of this run"


def summary(status: RecorderStatus | None, connected: bool, control: bool) -> Text:
    """The top line: state, episode n/N, timer against the limit, task, robot, dataset."""
    text = state_badge(status, connected)
    if status is None:
        return text
    text.append(f"  episode {status.episode}", style="bold")
    text.append(f" ({run_position(status)})")
    if (reset := _reset_words(status)) is not None:  # between takes: the last one's time is not this episode's
        text.append(f"  {reset} {_clock(status.reset_time_left_s)} left", style="yellow")
    elif status.state is RecorderState.DONE:
        text.append(f"  {DONE_WORDS}", style="bold green")
    else:
        text.append(f"  {_clock(status.episode_time_s)}", style="bold")
        if status.episode_time_limit_s:
            text.append(f" / {_clock(status.episode_time_limit_s)}")
    text.append_text(safety(status))
    text.append("\n")
    text.append("task: ", style="dim")
    text.append(status.task or "-", style="italic")
    text.append("   robot: ", style="dim")
    text.append(status.robot or "-")
    text.append("   dataset: ", style="dim")
    text.append(status.dataset or "-")
    text.append("   ")
    text.append("CONTROL" if control else "READ-ONLY", style="bold green" if control else "bold yellow")
    return text


def _bar(value: float, lower: float, upper: float, width: int = BAR_WIDTH) -> int:
    """Cell index (0..width-1) of `value` on a bar spanning lower..upper."""
    if not math.isfinite(value) or upper <= lower:
        return 0
    fraction = (min(max(value, lower), upper) - lower) / (upper - lower)
    return min(int(fraction * width), width - 1)


def keys_line(jog_joints: Sequence[str] = ()) -> Text:
    """Every key and what it does, wrapping onto a second line on a narrow terminal
    (what each does in each state: telemetry/keys.py, `platform record --help`). The jog
    keys appear only with `jog_joints`, the joints they move, e.g. "jog head_pan/lift"."""
    entries = list(KEYS)
    if jog_joints:
        names = "/".join(jog_joints) if len(jog_joints) <= JOG_NAMES_SHOWN else f"{len(jog_joints)} joints"
        entries.insert(len(entries) - 1, (JOG_KEYS, f"jog {names}"))
    text = Text()
    for i, (key, label) in enumerate(entries):
        if i:
            text.append("  ")
        text.append(f" {key} ", style="bold reverse" if key != "e" else "bold #ffffff on #d70000")
        text.append(f" {label}")
    return text


def safety(status: RecorderStatus) -> Text:
    """What needs the operator now, for the top line: fault, back-pressure, camera drops
    (the take's: while it records, "this take"; between takes the last one's, as stored
    with it; the drops of the reset belong to no take)."""
    text = Text()
    if status.state is RecorderState.FAULT:
        text.append("  FAULT: see below", style="bold #ffffff on #af00af")
    if status.writer.backpressure_ms:
        text.append(f"  disk behind: waited {status.writer.backpressure_ms:.0f} ms", style="bold red")
    dropped = sum(cam.dropped for cam in status.cameras.values())
    if dropped:
        take = "this take" if status.state is RecorderState.RECORDING else "in the last take"
        text.append(f"  {dropped} camera frames dropped {take}", style="bold yellow")
    return text


def joints(status: RecorderStatus, panel_width: int | None = None) -> Text:
    """Leader (command) vs follower (state) per joint: numbers, error, and a position bar.

    On the bar `L` marks the leader and `F` the follower (`#` where both share a cell), so
    a follower lagging or stuck behind its leader shows at a glance. Each joint is one row
    within `panel_width` cells (None: no limit): the bars go first, then the names are cut
    (a wrapped row would halve the joints a small terminal shows).
    """
    text = Text()
    names = status.joint_names or [f"j{i}" for i in range(max(len(status.leader), len(status.follower)))]
    if not names:
        return Text("no joint data yet", style="dim")
    width = min(max(len(n) for n in names), 22)
    bars = panel_width is None or width + NUMBERS_WIDTH + 2 + BAR_WIDTH <= panel_width
    if panel_width is not None and not bars:
        width = max(5, min(width, panel_width - NUMBERS_WIDTH))
    text.append(f"{'joint'[:width]:<{width}}  {'leader':>7} {'follower':>8} {'error':>6}"
                + ("  position" if bars else "") + "\n", style="bold")
    for i, shown in enumerate(panels.short_names(names, width)):
        lead = status.leader[i] if i < len(status.leader) else math.nan
        follow = status.follower[i] if i < len(status.follower) else math.nan
        lower = status.joint_lower[i] if i < len(status.joint_lower) else -math.pi
        upper = status.joint_upper[i] if i < len(status.joint_upper) else math.pi
        error = lead - follow
        span = (upper - lower) or 1.0
        error_style = "red" if abs(error) > 0.1 * span else ("yellow" if abs(error) > 0.03 * span else "")
        text.append(f"{shown:<{width}}  {lead:>7.3f} {follow:>8.3f} ")
        text.append(f"{error:>+6.3f}", style=error_style)
        if not bars:
            text.append("\n")
            continue
        cells = ["·"] * BAR_WIDTH
        lead_cell, follow_cell = _bar(lead, lower, upper), _bar(follow, lower, upper)
        cells[lead_cell] = "L"
        cells[follow_cell] = "#" if follow_cell == lead_cell else "F"
        text.append("  ")
        for cell in cells:
            style = {"L": "bold cyan", "F": "bold magenta", "#": "bold green"}.get(cell, "dim")
            text.append(cell, style=style)
        text.append("\n")
    text.rstrip()
    return text


def writer(status: RecorderStatus) -> Text:
    """Write queue depth against capacity, high-water mark, throughput and back-pressure."""
    w = status.writer
    fill = w.queue_depth / w.queue_capacity if w.queue_capacity else 0.0
    style = "red" if fill > 0.8 else ("yellow" if fill > 0.5 else "green")
    filled = min(round(fill * BAR_WIDTH), BAR_WIDTH)
    text = Text()
    text.append("write queue ", style="bold")
    text.append("█" * filled, style=style)
    text.append("░" * (BAR_WIDTH - filled), style="dim")
    text.append(f" {w.queue_text}\n")
    text.append(f"high water {w.high_water}   {w.mb_per_s:.1f} MB/s of frames (uncompressed, last 5 s)   episodes pending {w.pending_episodes}\n")
    text.append("backpressure ")
    text.append(f"{w.backpressure_ms:.0f} ms", style="bold red" if w.backpressure_ms else "green")
    if w.backpressure_ms or fill > 0.8:
        text.append("  disk falling behind: the loop waits on the writer", style="bold red")
    return text


def _episode_mark(episode: EpisodeSummary) -> tuple[str, str]:
    if episode.state == "discarded":
        return "✗ discarded", "dim strike"
    if episode.state == "lost":
        return "✗ LOST: not written", "bold red"
    if episode.success is True:
        return "✓ success", "bold green"
    if episode.success is False:
        return "✗ failure", "bold red"
    return "· unmarked", "dim"


def episodes(status: RecorderStatus, last: int = 12) -> Text:
    """The session's episodes, newest last: index, success mark, frames, length, state."""
    if not status.episodes:
        return Text("no episodes yet", style="dim")
    text = Text()
    shown = status.episodes[-last:]
    earlier = status.episodes_earlier + len(status.episodes) - len(shown)
    if earlier:
        text.append(f"… {earlier} earlier\n", style="dim")
    for episode in shown:
        mark, style = _episode_mark(episode)
        text.append(f"#{episode.index:<4d} ")
        text.append(f"{mark:<11}", style=style)
        text.append(f" {episode.frames:>5d} fr {episode.duration_s:>5.1f} s ")
        text.append(episode.state, style="cyan" if episode.state == "saving" else "dim")
        text.append("\n")
    text.rstrip()
    return text


def _reset_words(status: RecorderStatus) -> str | None:
    """'reset' (counting down) or 'reset held,' (paused) between takes; None while a take runs."""
    return {RecorderState.RESETTING: "reset", RecorderState.PAUSED: "reset held,"}.get(status.state)


def clock_text(status: RecorderStatus) -> str:
    """'t=9.4/20s' while a take runs (the limit as given: 't=2.4/2.5s' for 2.5 s); between
    takes the reset's countdown, 'reset 2.5s left' or 'reset held, 5.0s left' (paused): the
    last take's time is not the next episode's; once every episode is saved (done), what is
    left to do."""
    if (reset := _reset_words(status)) is not None:
        return f"{reset} {status.reset_time_left_s:.1f}s left"
    if status.state is RecorderState.DONE:
        return DONE_WORDS
    # :g, not :.0f, which showed a 2.5 s limit as 2 s and one of 0.5 s as 0 s
    return f"t={status.episode_time_s:.1f}/{status.episode_time_limit_s:g}s"


def status_line(status: RecorderStatus) -> str:
    """One plain line for logs and scripts (`platform monitor --lines`, `record --no-tui`)."""
    cams = " ".join(f"{role}={cam.fps:.1f}fps/{cam.dropped}drop" for role, cam in status.cameras.items())
    w, lp = status.writer, status.loop
    clock = clock_text(status)
    saved = status.episodes_saved
    loop = panels.loop_timing_text(lp.simulated, lp.period_p99_ms, p50_ms=lp.period_p50_ms, overruns=lp.overruns)
    if lp.link_exchanges:
        loop += f" servo retries {panels.link_text(lp)}"
    line = (f"{status.state.value:<9} episode {status.episode} ({run_position(status)}) {clock} | {loop} | "
            f"queue {w.queue_text} hw {w.high_water} {w.mb_per_s:.1f} MB/s "
            f"bp {w.backpressure_ms:.0f} ms | {cams or 'no cameras'} | kept {saved}")
    return f"{line} | {status.message}" if status.message else line
