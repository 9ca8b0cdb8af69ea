"""The recorder dashboard at 80x24 and 120x40 with a long run (episodes past #99, hundreds
earlier), a writer falling behind with a deep queue, a long task and a dataset's path: no
panel's line wraps (a wrapped line pushed the newest episodes out of their panel and split
numbers from their labels), and what the operator needs is still on screen."""

from __future__ import annotations

import asyncio

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.status import EpisodeSummary, RecorderState, RecorderStatus, WriterStatus
from shallowpi.tui import recorder_render as render
from shallowpi.tui.recorder_dashboard import RecorderDashboard
from telemetry_fixtures import never_stale  # noqa: F401 (autouse)
from test_dashboard import make_status, text_of, wait_for

pytestmark = pytest.mark.timeout(60)
STATES = ["saved", "discarded", "lost", "saving", "deleted"]


def long_run_status() -> RecorderStatus:
    """13 episodes #95-#107 (a lost one among them), 1200 earlier, the newest recording."""
    episodes = [EpisodeSummary(index=i, frames=900 + i, duration_s=30.0, success=[True, False, None][i % 3],
                               state=STATES[i % len(STATES)]) for i in range(95, 107)]
    episodes.append(EpisodeSummary(index=107, frames=412, duration_s=13.7, state="recording"))
    return make_status(
        RecorderState.RECORDING, episode=107,
        task="pick up the red mug by its handle and place it upside down on the drying rack",
        dataset="/mnt/ssd/datasets/kitchen/pick_place_red_mug_2026-11-30.zarr",
        writer=WriterStatus(queue_depth=5400, queue_capacity=9_100_000, high_water=123456, mb_per_s=123.4,
                            backpressure_ms=1234.0, pending_episodes=12),
        episodes=episodes, episodes_earlier=1200)


# The panels whose text the dashboard fits to them, and for each what must still be read
# in it, whole on one row.
FACTS = {
    "episodes": ["earlier", "#107", "recording"],
    "writer": ["write queue", "5400/9.1M", "high water 123456", "123.4 MB/s", "episodes pending 12",
               "backpressure 1234 ms", "disk falling behind:"],
    "cameras": ["head", "29.8", "wrist_left", "25.1"],
    "summary": ["episode 107", "disk behind: waited 1234 ms", "3 camera frames dropped this take", "robot: humanoid",
                "pick_place_red_mug_2026-11-30.zarr", "READ-ONLY"],
    "keys": [" space  start/stop", " e  E-STOP", " q  quit"],
}


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_no_panel_line_wraps_and_the_key_facts_stay(size):
    """At 80x24 the episodes' rows (43-51 cells in 38) and the writer's lines (85 and 71 in
    32) wrapped: "saved" alone on a row, "episodes pending" on one and "12" on the next,
    and the 4 rows of the episodes panel showed the 3 oldest of the 12, never the take in
    flight. Each line of each panel is within its width now, as many lines as it has rows
    (none wraps), the newest episode shown."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, None, monitor=True)
    status = long_run_status()

    async def scenario(pilot: Pilot) -> None:
        feed.publish(status)
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(0.3)
        for widget_id, facts in FACTS.items():
            widget = app.query_one(f"#{widget_id}", Static)
            lines = text_of(app, widget_id).split("\n")
            width = widget.content_region.width
            assert max(map(len, lines)) <= width, (size, widget_id, width, lines)
            if widget.styles.height.is_auto:  # as tall as its text: a row a line, none wraps
                assert widget.content_region.height == len(lines), (size, widget_id, lines)
            else:  # the episodes' 1fr at 120x40: each line on a row of its own, all on screen
                assert widget.content_region.height >= len(lines), (size, widget_id, lines)
            for fact in facts:
                assert any(fact in line for line in lines), (size, widget_id, fact, lines)
        # The episodes: the newest in the rows the panel has, its count of the rest first.
        episodes = app.query_one("#episodes", Static)
        lines = text_of(app, "episodes").split("\n")
        assert len(lines) <= episodes.content_region.height, (size, lines)
        assert lines[-1].startswith("#107") and "recording" in lines[-1], lines
        earlier = 1200 + 13 - (len(lines) - 1)
        assert lines[0] == f"… {earlier} earlier", lines
        feed.close()

    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def test_the_panels_are_as_before_where_they_have_the_room():
    """Without a width (or a wide one) every column and word is kept: a row an episode
    with its frames and state, the writer's rate with what it counts."""
    status = long_run_status()
    rows = render.episodes(status).plain.split("\n")
    assert rows[0] == "… 1201 earlier" and len(rows) == 13
    assert rows[2] == "#97   ✗ LOST: not written   997 fr  30.0 s lost"
    assert rows[-1] == "#107  · unmarked    412 fr  13.7 s recording"
    assert render.episodes(status, panel_width=120, rows=30).plain == render.episodes(status).plain
    writer = render.writer(status).plain
    assert writer == render.writer(status, panel_width=120).plain == (
        "write queue ░░░░░░░░░░░░░░░░ 5400/9.1M\n"
        "high water 123456   123.4 MB/s of frames (uncompressed, last 5 s)   episodes pending 12\n"
        "backpressure 1234 ms  disk falling behind: the loop waits on the writer")
    assert render.summary(status, True, True).plain == render.summary(status, True, True, panel_width=200).plain


def test_narrow_panels_drop_the_least_useful_parts_and_break_between_facts():
    """In the 38 cells and 4 rows of the episodes at 80x24: the newest three, without their
    frame counts; in the writer's 32 cells: a narrower bar, the rate without its words, a
    break between two facts; the summary's 78: the task cut at its end, the dataset's path
    at its start, the store's name kept; the keys broken between two keys."""
    status = long_run_status()
    assert render.episodes(status, panel_width=38, rows=4).plain.split("\n") == [
        "… 1210 earlier", "#105  ✓ success    30.0 s saved", "#106  ✗ discarded  30.0 s discarded",
        "#107  · unmarked   13.7 s recording"]
    narrow = render.episodes(status, panel_width=30).plain.split("\n")  # the marks' repeated words go next
    assert "#102  ✗ LOST       30.0 s" in narrow and max(map(len, narrow)) <= 30, narrow
    assert render.writer(status, panel_width=32).plain.split("\n") == [
        "write queue ░░░░░░░░░░ 5400/9.1M", "high water 123456   123.4 MB/s", "episodes pending 12",
        "backpressure 1234 ms", "  disk falling behind:", "  the loop waits on the writer"]
    summary = render.summary(status, True, False, panel_width=78).plain.split("\n")
    assert max(map(len, summary)) <= 78 and len(summary) == 4, summary
    assert summary[2].startswith("task: pick up the red mug") and summary[2].endswith("…")
    assert summary[3].startswith("robot: humanoid   dataset: …") and summary[3].endswith("2026-11-30.zarr   READ-ONLY")
    keys = render.keys_line(["head_pan"], panel_width=78).plain.split("\n")
    assert max(map(len, keys)) <= 78 and keys[1].startswith(" f  failure"), keys


def test_a_task_in_wide_characters_is_cut_to_the_cells_it_takes():
    """A task written in Chinese takes two cells a character: cut by its count of
    characters, the summary's line still ran past its 78 cells and wrapped."""
    import dataclasses

    from rich.cells import cell_len

    status = dataclasses.replace(long_run_status(), task="把红色的杯子拿起来放进左边的碗里" * 3,
                                 dataset="/data/ネットワーク/ロボット/台所の記録-2026-11-30.zarr")
    summary = render.summary(status, True, False, panel_width=78).plain.split("\n")
    assert max(map(cell_len, summary)) <= 78, [cell_len(line) for line in summary]
    assert summary[2].startswith("task: 把红色的杯子") and summary[2].endswith("…")
    assert summary[3].endswith("2026-11-30.zarr   READ-ONLY")
