"""The recorder dashboard's own panels: RecorderStatus -> rich Text, one function a panel.

Pure, so tests read them directly; the panels every dashboard shares (loop period,
cameras, thumbnails) and the joint names' cutting (short_names) are in panels.py. Colours
say what needs the operator: red is a problem now (fault, a nearly full write queue),
yellow is a warning, dim is idle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.cells import cell_len, set_cell_size
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
DATASET_SHOWN_MIN = 16  # cells of the dataset's path the top line keeps, its end, however narrow
QUEUE_BAR_MIN = 4  # the write queue's bar, narrowed to fit a panel: under this many cells, none
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


def summary(status: RecorderStatus | None, connected: bool, control: bool, panel_width: int | None = None) -> Text:
    """The top lines: state, episode n/N, timer against the limit, what needs the operator
    (safety); then task, robot, dataset and whether keys act. Each line within
    `panel_width` cells (None: no limit; 78 at 80 columns) breaks between its facts, not
    inside one ("disk" at the end of a row and "behind: waited 120 ms" on the next)."""
    head = state_badge(status, connected)
    if status is None:
        return head
    head.append(f"  episode {status.episode}", style="bold")
    head.append(f" ({run_position(status)})")
    if (reset := _reset_words(status)) is not None:  # between takes: the last one's time is not this episode's
        clock = Text(f"{reset} {_clock(status.reset_time_left_s)} left", style="yellow")
    elif status.state is RecorderState.DONE:
        clock = Text(DONE_WORDS, style="bold green")
    else:
        clock = Text(_clock(status.episode_time_s), style="bold")
        if status.episode_time_limit_s:
            clock.append(f" / {_clock(status.episode_time_limit_s)}")
    text = Text()
    panels.fitted_line(text, [("", head), ("  ", clock), *_safety_parts(status)], panel_width)
    text.append("\n")
    task, robot, dataset = status.task or "-", status.robot or "-", status.dataset or "-"
    keys = Text("CONTROL" if control else "READ-ONLY", style="bold green" if control else "bold yellow")
    line = f"task: {task}   robot: {robot}   dataset: {dataset}   {keys.plain}"
    if panel_width is not None and cell_len(line) > panel_width:
        # Two rows at most: the task on its own, cut at its end; the dataset's path loses its
        # start, not the store's name, to share the second row with the robot and the keys.
        task = _cut_end(task, panel_width - len("task: "))
        rest = cell_len(f"robot: {robot}   dataset: ") + 3 + keys.cell_len
        dataset = _cut_start(dataset, max(panel_width - rest, DATASET_SHOWN_MIN))
    about: list[panels.Part] = [
        ("", Text("task: ", style="dim") + Text(task, style="italic")),
        ("   ", Text("robot: ", style="dim") + Text(robot)),
        ("   ", Text("dataset: ", style="dim") + Text(dataset)),
        ("   ", keys)]
    panels.fitted_line(text, about, panel_width, indent=0)
    return text


def _cut_end(words: str, width: int) -> str:
    """`words` in `width` cells (at least 1; a wide character, CJK, takes two): whole if
    they fit, else their start and "…"."""
    if cell_len(words) <= width:
        return words
    return set_cell_size(words, max(width - 1, 0)).rstrip(" ") + "…"  # padded where a wide one did not fit


def _cut_start(path: str, width: int) -> str:
    """`path` in `width` cells (at least 1; a wide character takes two): whole if it fits,
    else "…" and its end."""
    if cell_len(path) <= width:
        return path
    kept, cells = len(path), 0
    while kept > 0 and cells + cell_len(path[kept - 1]) <= width - 1:
        kept, cells = kept - 1, cells + cell_len(path[kept - 1])
    return "…" + path[kept:]


def _bar(value: float, lower: float, upper: float, width: int = BAR_WIDTH) -> int:
    """Cell index (0..width-1) of `value` on a bar spanning lower..upper."""
    if not math.isfinite(value) or upper <= lower:
        return 0
    fraction = (min(max(value, lower), upper) - lower) / (upper - lower)
    return min(int(fraction * width), width - 1)


def keys_line(jog_joints: Sequence[str] = (), panel_width: int | None = None) -> Text:
    """Every key and what it does, on a second line where they do not fit `panel_width`
    cells (None: no limit), broken between two keys, never between a key and what it does
    (what each does in each state: telemetry/keys.py, `platform record --help`). The jog
    keys appear only with `jog_joints`, the joints they move, e.g. "jog head_pan/lift"."""
    entries = list(KEYS)
    if jog_joints:
        names = "/".join(jog_joints) if len(jog_joints) <= JOG_NAMES_SHOWN else f"{len(jog_joints)} joints"
        entries.insert(len(entries) - 1, (JOG_KEYS, f"jog {names}"))
    parts: list[panels.Part] = []
    for key, label in entries:
        part = Text(f" {key} ", style="bold reverse" if key != "e" else "bold #ffffff on #d70000")
        parts.append(("  " if parts else "", part.append(f" {label}")))
    text = Text()
    panels.fitted_line(text, parts, panel_width, indent=0)
    return text


def safety(status: RecorderStatus) -> Text:
    """What needs the operator now, for the top line: fault, back-pressure, camera drops
    (the take's: while it records, "this take"; between takes the last one's, as stored
    with it; the drops of the reset belong to no take)."""
    text = Text()
    for separator, part in _safety_parts(status):
        text.append(separator)
        text.append_text(part)
    return text


def _safety_parts(status: RecorderStatus) -> list[panels.Part]:
    """`safety`'s facts, each with the two spaces before it (the top line breaks between them)."""
    parts: list[panels.Part] = []
    if status.state is RecorderState.FAULT:
        parts.append(("  ", Text("FAULT: see below", style="bold #ffffff on #af00af")))
    if status.writer.backpressure_ms:
        parts.append(("  ", Text(f"disk behind: waited {status.writer.backpressure_ms:.0f} ms", style="bold red")))
    dropped = sum(cam.dropped for cam in status.cameras.values())
    if dropped:
        take = "this take" if status.state is RecorderState.RECORDING else "in the last take"
        parts.append(("  ", Text(f"{dropped} camera frames dropped {take}", style="bold yellow")))
    return parts


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


def writer(status: RecorderStatus, panel_width: int | None = None) -> Text:
    """Write queue depth against capacity, high-water mark, throughput and back-pressure,
    each line within `panel_width` cells (None: no limit; the right column has 32 at 80
    columns): where a line would not fit, the queue's bar narrows (down to QUEUE_BAR_MIN
    cells, then goes), the rate loses its explanation and a line breaks between its facts,
    never inside one ("episodes pending" and its count stay together)."""
    w = status.writer
    fill = w.queue_depth / w.queue_capacity if w.queue_capacity else 0.0
    style = "red" if fill > 0.8 else ("yellow" if fill > 0.5 else "green")
    head = "write queue "
    bar = BAR_WIDTH
    if panel_width is not None:
        bar = min(bar, panel_width - len(head) - 1 - len(w.queue_text))
        bar = bar if bar >= QUEUE_BAR_MIN else 0
    filled = min(round(fill * bar), bar)
    text = Text()
    text.append(head, style="bold")
    if bar:
        text.append("█" * filled, style=style)
        text.append("░" * (bar - filled), style="dim")
        text.append(" ")
    text.append(f"{w.queue_text}\n")
    rate = f"{w.mb_per_s:.1f} MB/s"
    facts: list[panels.Part] = [("", Text(f"high water {w.high_water}")),
                                ("   ", Text(f"{rate} of frames (uncompressed, last 5 s)")),
                                ("   ", Text(f"episodes pending {w.pending_episodes}"))]
    if panel_width is not None and sum(len(sep) + part.cell_len for sep, part in facts) > panel_width:
        facts[1] = ("   ", Text(rate))  # the words are for a wide panel; the number is what counts
    panels.fitted_line(text, facts, panel_width, indent=0)
    text.append("\n")
    pressure: list[panels.Part] = [("", Text("backpressure ") + Text(
        f"{w.backpressure_ms:.0f} ms", style="bold red" if w.backpressure_ms else "green"))]
    if w.backpressure_ms or fill > 0.8:
        pressure += [("  ", Text("disk falling behind:", style="bold red")),
                     (" ", Text("the loop waits on the writer", style="bold red"))]
    panels.fitted_line(text, pressure, panel_width)
    return text


def _episode_mark(episode: EpisodeSummary, short: bool = False) -> tuple[str, str]:
    """(mark, style) of an episode's row; `short`: "✗ LOST" for a lost one, whose row then
    leaves out its state ("lost": the mark says it)."""
    if episode.state == "discarded":
        return "✗ discarded", "dim strike"
    if episode.state == "lost":
        return "✗ LOST" if short else "✗ LOST: not written", "bold red"
    if episode.success is True:
        return "✓ success", "bold green"
    if episode.success is False:
        return "✗ failure", "bold red"
    return "· unmarked", "dim"


# The episodes' rows, from the widest to the narrowest: (frames shown, short marks). A
# narrow panel loses the frame count first (the length says the same at the loop's rate),
# then the words its mark repeats; the index, the mark and the length stay.
EPISODE_ROW_LAYOUTS: list[tuple[bool, bool]] = [(True, False), (False, False), (False, True)]
EPISODES_SHOWN = 12  # the newest, where the panel has the rows


def episodes(status: RecorderStatus, last: int = EPISODES_SHOWN, panel_width: int | None = None,
             rows: int | None = None) -> Text:
    """The session's episodes, newest last: index, success mark, frames, length, state.

    At most `last` episodes, and at most `rows` lines with the count of earlier ones (None:
    no limit): the newest are shown, the take in flight among them, where a short panel
    showed the oldest and hid the rest. Each row within `panel_width` cells (None: no
    limit; the left column has 38 at 80 columns): the least useful columns go first
    (EPISODE_ROW_LAYOUTS), and a row still too wide is cut at its end ("…").
    """
    if not status.episodes:
        return Text("no episodes yet", style="dim")
    limit = last if rows is None else max(1, min(last, rows))
    shown = status.episodes[-limit:]
    earlier = status.episodes_earlier + len(status.episodes) - len(shown)
    if earlier and rows is not None and len(shown) >= rows and len(shown) > 1:
        shown, earlier = shown[1:], earlier + 1  # a row for the count of the earlier ones
    index_width = max(4, max(len(str(episode.index)) for episode in shown))  # a run past #9999 lines up
    for frames, short in EPISODE_ROW_LAYOUTS:
        lines = [_episode_row(episode, index_width, frames, short) for episode in shown]
        if panel_width is None or max(line.cell_len for line in lines) <= panel_width:
            break
    text = Text()
    if earlier:
        text.append(f"… {earlier} earlier\n", style="dim")
    for line in lines:
        if panel_width is not None and line.cell_len > panel_width:
            line.truncate(panel_width, overflow="ellipsis")
        text.append_text(line)
        text.append("\n")
    text.rstrip()
    return text


def _episode_row(episode: EpisodeSummary, index_width: int, frames: bool, short: bool) -> Text:
    """One episode's row: `frames` with its frame count; `short` with its short mark and,
    where the mark already says it (discarded, lost), without its state."""
    mark, style = _episode_mark(episode, short)
    row = Text(f"#{episode.index:<{index_width}d} ")
    row.append(f"{mark:<11}", style=style)
    if frames:
        row.append(f" {episode.frames:>5d} fr")
    row.append(f" {episode.duration_s:>5.1f} s")
    if not (short and episode.state in ("discarded", "lost")):
        row.append(" ")
        row.append(episode.state, style="cyan" if episode.state == "saving" else "dim")
    return row


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
