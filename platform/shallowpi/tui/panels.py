"""Panels every dashboard with a control loop and cameras shows (recorder, executor).

Pure functions from the shared status parts (`LoopStatus`, `CameraStatus`, `Thumbnail`)
to `rich.text.Text`, so tests read them directly and each dashboard puts them in a
Static; and the joint names both joints panels show (`short_names`). Colours say what
needs the operator: red is a problem now (dropped frames, a loop over its period), yellow
a warning, dim idle.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from rich.style import Style
from rich.text import Text

from shallowpi.telemetry.status import CameraStatus, LoopStatus, Thumbnail

HALF_BLOCK = "▀"  # upper half block: foreground = upper pixel, background = lower pixel


# The narrowest a joint's name is shown in where every shipped robot's names still read
# apart (`short_names`): the joints panels give up other columns before going under it.
NAME_MIN = 8


def short_names(names: Sequence[str], width: int) -> list[str]:
    """`names` fitted to `width` cells each, and told apart: a long name loses its middle,
    not its end, e.g. "left_shoulder_pitch" at 13 cells reads "left_s…_pitch" (cutting the
    end left the humanoid's three shoulder joints all "left_shoulde…"). Where two names
    would still read alike, those two are cut elsewhere until they differ: every shipped
    robot's names stay apart from 8 cells up (an 80-column terminal gives 13-17); below
    that some may not. Names that fit stay whole; the recorder's and the executor's joints
    panels both use this."""
    shown = [_cut_middle(name, width) for name in names]
    alike: dict[str, set[str]] = {}  # shown text -> the names it stands for
    for name, text in zip(names, shown):
        alike.setdefault(text, set()).add(name)
    for text, group in alike.items():
        if len(group) < 2:
            continue
        taken = set(shown) - {text}
        for head in _heads(width):  # the same cut for the whole group: their rows line up
            tried = {name: _cut_middle(name, width, head) for name in group}
            if len(set(tried.values())) == len(group) and not taken & set(tried.values()):
                shown = [tried.get(name, old) for name, old in zip(names, shown)]
                break
    return shown


def _cut_middle(name: str, width: int, head: int | None = None) -> str:
    """`name` in `width` cells: whole if it fits, else its first `head` characters, "…" and
    its end. By default the end is its last "_" part (as "_pitch"), up to half the cells."""
    if len(name) <= width:
        return name
    if width < 3:
        return name[:width]
    if head is None:
        last = name[name.rfind("_"):] if "_" in name else ""
        head = width - 1 - min(len(last), (width - 1) // 2)
    tail = width - 1 - head
    return name[:head] + "…" + (name[-tail:] if tail else "")


def _heads(width: int) -> list[int]:
    """The lengths of head `_cut_middle` may keep in `width` cells, the most even cuts first."""
    middle = (width - 1) // 2
    return sorted(range(1, width), key=lambda head: (abs(head - middle), -head))


# A line of a fitted panel: its parts, each with the separator that goes before it on
# the same line. Where a part would not fit, the line breaks before it: the separator,
# less its trailing spaces, ends the line (", " leaves ","), and the part starts the next
# one after `indent` spaces.
Part = tuple[str, Text]


def fitted_line(text: Text, parts: list[Part], panel_width: int | None, indent: int = 2) -> None:
    """Append one line made of `parts` to `text`, broken between parts where it would be
    wider than `panel_width` cells (None: never); Rich would break it between any two
    words instead ("p99  35.10" at the end of one row, "ms" alone on the next). The
    panels of both dashboards (loop, writer) break their lines with it."""
    column = 0
    for i, (separator, part) in enumerate(parts):
        if i and panel_width is not None and column + len(separator) + part.cell_len > panel_width:
            text.append(separator.rstrip() + "\n" + " " * indent)
            column = indent
        elif i:
            text.append(separator)
            column += len(separator)
        text.append_text(part)
        column += part.cell_len


def loop(lp: LoopStatus, panel_width: int | None = None) -> Text:
    """Target rate and period, measured period p50/p99 (red past 1.1 periods), overruns,
    each line within `panel_width` cells (None: no limit; the dashboards' right column has
    29-36 at 80-100 columns): a line that would not fit breaks between its numbers, not
    inside one.

    On simulated time the measured period is how fast the twin renders, not a deadline
    the loop keeps or misses: the panel says so instead of colouring it as late. With a
    servo bus, a last line counts the exchanges whose tries failed and were retried."""
    period_ms = 1000.0 / lp.target_hz if lp.target_hz else 0.0
    text = Text()
    head = Text("loop ", style="bold")
    if lp.simulated:
        fitted_line(text, [("", head + Text(f"{lp.target_hz:.0f} Hz of simulated time")),
                            (" ", Text(f"({period_ms:.1f} ms a tick)"))], panel_width, indent=5)
        text.append("\n")
        fitted_line(text, [("", Text("wall time a tick")), (" ", Text(f"p50 {lp.period_p50_ms:6.2f} ms")),
                            ("  ", Text(f"p99 {lp.period_p99_ms:6.2f} ms"))], panel_width)
        text.append("\n")
        fitted_line(text, [("", Text("the twin's speed;", style="dim")),
                            (" ", Text("no deadline to overrun", style="dim"))], panel_width, indent=0)
    else:
        late = bool(period_ms) and lp.period_p99_ms > 1.1 * period_ms
        fitted_line(text, [("", head + Text(f"{lp.target_hz:.0f} Hz")), (" ", Text(f"({period_ms:.1f} ms)"))],
                     panel_width, indent=5)
        text.append("\n")
        fitted_line(text, [("", Text(f"period p50 {lp.period_p50_ms:6.2f} ms")),
                            ("  ", Text(f"p99 {lp.period_p99_ms:6.2f} ms", style="bold red" if late else ""))],
                     panel_width, indent=len("period "))  # p99 under p50
        text.append("\noverruns ")
        text.append(f"{lp.overruns}", style="bold red" if lp.overruns else "green")
    if lp.link_exchanges:
        text.append("\n")
        style = "bold yellow" if lp.link_failed_tries else "green"
        parts: list[Part] = [("", Text("servo retries ") + Text(f"{lp.link_failed_tries}/{lp.link_exchanges}", style=style))]
        if lp.link_worst:
            count = f" ({lp.link_worst_failed})"
            worst = lp.link_worst  # cut (in its middle) only where it would not fit a line of its own
            if panel_width is not None:
                worst = _cut_middle(worst, max(panel_width - 2 - len("most ") - len(count), 3))
            parts.append((", ", Text(f"most {worst}{count}", style=style)))
        fitted_line(text, parts, panel_width)
    return text


def loop_timing_text(simulated: bool, p99_ms: float, *, p50_ms: float | None = None,
                     overruns: int | None = None) -> str:
    """The control loop's timing in words, for one-line summaries (ms). On the twin's
    simulated time a tick is one period whatever it takes on the wall clock, so the period
    is not the wall clock's and nothing overruns: what is given is the wall time a tick took,
    chunks computed in it included ("sim-time loop, wall p99 33.4 ms a tick"). On the wall
    clock: the loop's period percentiles and, when given, its overruns."""
    p50 = f"p50 {p50_ms:.1f} " if p50_ms is not None else ""
    if simulated:
        return f"sim-time loop, wall {p50}p99 {p99_ms:.1f} ms a tick"
    return f"loop {p50}p99 {p99_ms:.1f} ms" + (f", {overruns} overruns" if overruns is not None else "")


def link_text(lp: LoopStatus) -> str:
    """'0/1200' or '14/1200, most elbow_flex (12)': failed tries of the episode's exchanges
    with the servos, and the joint whose servo was silent most often."""
    worst = f", most {lp.link_worst} ({lp.link_worst_failed})" if lp.link_worst else ""
    return f"{lp.link_failed_tries}/{lp.link_exchanges}{worst}"


CAMERA_NUMBERS_WIDTH = 22  # " fps drops age ms" after the role: 1 + 6 + 1 + 6 + 1 + 7 cells
CAMERA_ROLE_WIDTH = 12  # the role's column where the panel has room


def cameras(cams: Mapping[str, CameraStatus], target_hz: float, paused: bool = False,
            panel_width: int | None = None) -> Text:
    """Per camera: measured fps (yellow under 90 % of the loop's rate), dropped frames,
    and the age of the frame the loop used (yellow past two loop periods). `paused`:
    nothing is recorded, so no rate is shown (a '-' instead of a stale or idle rate).
    A row a camera within `panel_width` cells (None: no limit; the recorder's right column
    has 32 at 80 columns, 2 short of the 34 a row takes): the role's column narrows, its
    names cut in the middle (short_names), not the numbers."""
    if not cams:
        return Text("no cameras", style="dim")
    width = CAMERA_ROLE_WIDTH
    if panel_width is not None:
        width = max(4, min(width, panel_width - CAMERA_NUMBERS_WIDTH))
    roles = short_names([role[:CAMERA_ROLE_WIDTH] for role in cams], width)
    text = Text()
    text.append(f"{'camera'[:width]:<{width}} {'fps':>6} {'drops':>6} {'age ms':>7}\n", style="bold")
    for shown, cam in zip(roles, cams.values()):
        text.append(f"{shown:<{width}} ")
        if paused:
            text.append(f"{'paused':>6}", style="dim")
        else:
            text.append(f"{cam.fps:>6.1f}", style="yellow" if target_hz and cam.fps < 0.9 * target_hz else "")
        text.append(f" {cam.dropped:>6d}", style="bold red" if cam.dropped else "green")
        text.append(f" {cam.age_ms:>7.1f}\n", style="yellow" if target_hz and cam.age_ms > 2000 / target_hz else "")
    text.rstrip()
    return text


def thumbnail(thumbnails: Mapping[str, Thumbnail], index: int, max_width: int) -> tuple[str, Text]:
    """(panel title, picture) for camera number `index` (cycling, roles in name order)."""
    if not thumbnails:
        return "camera", Text("no thumbnail", style="dim")
    roles = sorted(thumbnails)
    role = roles[index % len(roles)]
    title = f"camera: {role}" + (" (c: next)" if len(roles) > 1 else "")
    return title, halfblock(thumbnails[role], max_width=max_width)


def halfblock(thumbnail: Thumbnail, max_width: int = 48) -> Text:
    """An RGB thumbnail as rows of `▀`: each character cell shows two pixels stacked.

    The upper pixel is the foreground colour and the lower one the background, so a
    W x H image takes W x ceil(H/2) cells. Wider images are subsampled to `max_width`.
    """
    try:
        pixels = bytes.fromhex(thumbnail.rgb)
    except ValueError:
        return Text("bad thumbnail", style="red")
    width, height = thumbnail.width, thumbnail.height
    if width <= 0 or height <= 0 or len(pixels) < width * height * 3:
        return Text("bad thumbnail", style="red")
    step = max(1, math.ceil(width / max_width))
    columns = range(0, width, step)
    rows = list(range(0, height, step))

    def rgb(y: int, x: int) -> str:
        i = (y * width + x) * 3
        return f"#{pixels[i]:02x}{pixels[i + 1]:02x}{pixels[i + 2]:02x}"

    text = Text(no_wrap=True, overflow="crop")
    for k in range(0, len(rows), 2):
        upper, lower = rows[k], rows[k + 1] if k + 1 < len(rows) else None
        for x in columns:
            style = Style(color=rgb(upper, x), bgcolor=rgb(lower, x) if lower is not None else None)
            text.append(HALF_BLOCK, style=style)
        if k + 2 < len(rows):
            text.append("\n")
    return text
