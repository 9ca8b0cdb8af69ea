"""The recorder dashboard at 80x24 and 120x40 with a long run (episodes past #99, hundreds
earlier), a writer falling behind with a deep queue, a long task and a dataset's path: no
panel's line wraps (a wrapped line pushed the newest episodes out of their panel and split
numbers from their labels), and what the operator needs is still on screen. In the small
terminals of a tmux split (40x24, 80x12, 40x12) the state, the message line and the keys
stay on screen and the columns do not cover each other; at 80x24 the layout is as before."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from textual.app import App
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import Footer, Static

from shallowpi.telemetry.executor_status import ExecutorState
from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.status import EpisodeSummary, RecorderState, RecorderStatus, WriterStatus
from shallowpi.tui import recorder_render as render
from shallowpi.tui.executor_dashboard import ExecutorDashboard
from shallowpi.tui.recorder_dashboard import AcknowledgeScreen, QuitScreen, RecorderDashboard
from telemetry_fixtures import never_stale  # noqa: F401 (autouse)
from test_dashboard import make_status, text_of, wait_for
from test_dashboard_keys import _screen_text
from test_executor_dashboard import make_status as executor_status

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
        await show_status(pilot, app, feed, status)
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


# -- Small terminals: a tmux split side by side (40x24, 60x24), one above the other (80x12),
# or both (40x12). Docked: the state (the summary's first row), the message line and the
# keys (E-STOP, quit); the body has what they leave.

SMALL = [(40, 24), (80, 12), (40, 12)]


def _size_id(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def assert_uncovered(app: App, widget: Widget, size: tuple[int, int]) -> None:
    """Every cell of `widget` on the screen, and drawn by it (or by a widget inside it), not
    by another laid over it: at 40x24 the right column (min-width 38) covered the left."""
    region = widget.region
    assert region.area > 0 and app.screen.region.contains_region(region), (size, widget.id, region)
    for y in range(region.y, region.bottom):
        for x in range(region.x, region.right):
            shown, _ = app.screen.get_widget_at(x, y)
            assert shown is widget or widget in shown.ancestors, (size, widget.id, (x, y), shown)


async def show_status(pilot: Pilot, app: App, feed: StatusMailbox, status: object) -> None:
    """Publish `status` on `feed` and wait until `app` has it and has laid it out."""
    feed.publish(status)
    await wait_for(pilot, lambda: app.status is not None)
    await pilot.pause(0.3)


def run_dashboard(app: App, size: tuple[int, int], scenario: Callable[[Pilot], Awaitable[None]]) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


@pytest.mark.parametrize("size", SMALL, ids=_size_id)
def test_the_recorders_state_message_and_keys_stay_on_screen_in_a_small_terminal(size):
    """At 40x12 the summary (8 rows at 40 columns), the body and the keys (4 rows) did not
    fit: the screen scrolled and the keys line, E-STOP and quit with it, fell off its foot.
    The summary and the foot (message, keys) are docked now; the summary's first row, with
    the state, the message and every row of the keys are on screen, not covered."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda request: None)

    async def scenario(pilot: Pilot) -> None:
        await show_status(pilot, app, feed, make_status(RecorderState.RECORDING, message="FAULT: servo 3 overload"))
        for widget_id in ("summary", "message", "keys"):
            assert_uncovered(app, app.query_one(f"#{widget_id}"), size)
        keys = app.query_one("#keys", Static)
        assert keys.content_region.height == text_of(app, "keys").count("\n") + 1, size  # every row of keys
        assert app.query_one("#summary").region.y == 0 and keys.region.bottom == size[1], size
        screen = _screen_text(app)
        for shown in ("RECORDING", "FAULT: servo 3 overload", "E-STOP", "quit"):
            assert shown in screen, (size, shown, screen)
        feed.close()

    run_dashboard(app, size, scenario)


@pytest.mark.parametrize("size", SMALL, ids=_size_id)
def test_the_executors_state_message_and_keys_stay_on_screen_in_a_small_terminal(size):
    """The executor's too: its summary docked above; its message, the answer to the last
    key and the footer's keys (E-STOP, quit) docked below, the fault's words on a second
    row where one does not hold them (they were cut at 40 columns)."""
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, lambda request: None)
    message = "FAULT: bus 'right_arm' servo 8 overload"

    async def scenario(pilot: Pilot) -> None:
        await show_status(pilot, app, feed, executor_status(state=ExecutorState.FAULT, message=message))
        for widget in (app.query_one("#summary"), app.query_one("#message"), app.query_one("#feedback"),
                       app.query_one(Footer)):
            assert_uncovered(app, widget, size)
        assert app.query_one(Footer).region.bottom == size[1], size
        screen = _screen_text(app)
        for shown in ("FAULT", message, "E-STOP", "quit"):
            assert shown in screen, (size, shown, screen)
        feed.close()

    run_dashboard(app, size, scenario)


@pytest.mark.parametrize("size", [(40, 24), (60, 24)], ids=_size_id)
def test_in_a_side_by_side_split_the_columns_stack_and_every_joint_row_shows_whole(size):
    """At 40x24 the right column, 38 cells at least, lay over the left one: the joints and
    the episodes could not be seen. At 60x24 the left had 20 cells, and each joint's row
    (30 at least) wrapped over two lines. Under 76 columns the columns stack, the joints
    first: each joint a row, whole, then the episodes, none covered."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda request: None)

    async def scenario(pilot: Pilot) -> None:
        status = make_status(RecorderState.RECORDING)
        await show_status(pilot, app, feed, status)
        joints = app.query_one("#joints", Static)
        rows = text_of(app, "joints").split("\n")
        assert len(rows) == 1 + len(status.joint_names), rows
        assert max(map(len, rows)) <= joints.content_region.width, (size, joints.content_region, rows)
        assert joints.content_region.height == len(rows), (size, joints.content_region)  # none wraps
        for widget_id in ("joints-box", "episodes"):
            assert_uncovered(app, app.query_one(f"#{widget_id}"), size)
        screen = _screen_text(app)
        for row in rows[1:] + text_of(app, "episodes").split("\n"):
            assert " ".join(row.split()) in screen, (size, row, screen)
        feed.close()

    run_dashboard(app, size, scenario)


def test_in_a_side_by_side_split_the_executors_columns_stack():
    """The executor's right column (34 cells at least) lay over its joints at 40x24."""
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, lambda request: None)

    async def scenario(pilot: Pilot) -> None:
        await show_status(pilot, app, feed, executor_status())
        assert_uncovered(app, app.query_one("#joints-box"), (40, 24))
        joints = app.query_one("#joints", Static)
        rows = text_of(app, "joints").split("\n")
        assert joints.content_region.height == len(rows) == 3, (joints.content_region, rows)
        screen = _screen_text(app)
        for row in rows:
            assert " ".join(row.split()) in screen, (row, screen)
        feed.close()

    run_dashboard(app, (40, 24), scenario)


def test_in_a_short_terminal_the_episodes_give_way_to_the_joints():
    """At 80x12 the episodes' list kept its 3 rows and its border, and the joints' box got
    none for its rows: a border, no joint. Under 16 rows the list goes (the summary keeps
    the episode's number and the run's count) and the joints have the rows."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda request: None)

    async def scenario(pilot: Pilot) -> None:
        status = make_status(RecorderState.RECORDING)
        await show_status(pilot, app, feed, status)
        box = app.query_one("#joints-box")
        rows = text_of(app, "joints").split("\n")
        assert len(rows) == 1 + len(status.joint_names), rows
        assert box.content_region.height >= len(rows), box.content_region  # the rows the box shows
        assert_uncovered(app, box, (80, 12))
        screen = _screen_text(app)
        for row in rows:
            assert " ".join(row.split()) in screen, (row, screen)
        assert not app.query_one("#episodes").display
        feed.close()

    run_dashboard(app, (80, 12), scenario)


@pytest.mark.parametrize("dashboard", ["recorder", "executor"])
def test_any_size_down_to_one_cell_and_back_leaves_the_80x24_layout_as_it_was(dashboard):
    """Resized through 1x1, 2x30, 5x2, 40x12 and 200x60 (a status shown at each), the dashboard
    runs on; back at 80x24 its columns are side by side again, the summary at the top and
    the keys on the last row, as before the small terminals."""
    feed = StatusMailbox(max_hz=0)
    recorder = dashboard == "recorder"
    app: App = RecorderDashboard(feed, lambda request: None) if recorder else ExecutorDashboard(feed, lambda r: None)

    def status(i: int) -> object:
        return make_status(RecorderState.RECORDING, episode_time_s=float(i)) if recorder else executor_status(episode=i)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(status(0))
        await wait_for(pilot, lambda: app.status is not None)
        for i, size in enumerate([(1, 1), (2, 30), (5, 2), (40, 12), (200, 60), (80, 24)], start=1):
            await pilot.resize_terminal(*size)
            feed.publish(status(i))
            await pilot.pause(0.2)
            assert app.is_running, size
        left, right = app.query_one("#left"), app.query_one("#right")
        assert left.region.right <= right.region.x and left.region.y == right.region.y, (left.region, right.region)
        assert app.query_one("#summary").region.y == 0
        keys = app.query_one("#keys") if recorder else app.query_one(Footer)
        assert keys.region.bottom == 24, keys.region
        for widget_id in ("left", "right"):
            assert_uncovered(app, app.query_one(f"#{widget_id}"), (80, 24))
        feed.close()

    run_dashboard(app, (80, 24), scenario)


def test_the_fault_and_quit_dialogs_fit_a_small_terminal():
    """At 40x12 the fault's dialog (14 rows) was centred past both edges, its title (E-STOP
    or FAULT) above the top and its button below the foot, and the quit dialog (72 cells)
    ran off the right edge with its question. Both keep within the screen now, scrolling
    in themselves, the fault's title kept in view."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda request: None, monitor=True)
    size = (40, 12)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.RECORDING))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.pause(0.2)
        assert app.screen.region.contains_region(app.screen.query_one("#quit-dialog").region)
        assert_uncovered(app, app.screen.query_one("#quit-question"), size)
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, QuitScreen))
        feed.publish(make_status(RecorderState.FAULT, message="FAULT: servo 3 (left_elbow) overload alarm; torque held"))
        await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
        await pilot.pause(0.3)
        assert app.screen.region.contains_region(app.screen.query_one("#ack-dialog").region)
        assert_uncovered(app, app.screen.query_one("#ack-title"), size)
        assert "FAULT: the recording stopped" in _screen_text(app)
        assert_uncovered(app, app.screen.query_one("#ack"), size)  # the button, focused, in view
        feed.close()

    run_dashboard(app, size, scenario)
