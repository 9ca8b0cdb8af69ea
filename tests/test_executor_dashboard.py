"""The executor's dashboard: shows what an ExecutorStatus says; `e` sends an e-stop."""

from __future__ import annotations

import asyncio
import time

import pytest
from textual.widgets import Static

from dxl_fixtures import robot_spec
from shallowpi.commands.monitor_cmd import _dashboard_for
from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus, SafetyCounts
from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.status import Command, LoopStatus
from shallowpi.tui.executor_dashboard import ExecutorDashboard
from telemetry_fixtures import never_stale, sent_commands  # noqa: F401 (autouse)
from test_dashboard import ROBOTS, assert_told_apart
from test_dashboard_keys import _screen_text


def make_status(**changes) -> ExecutorStatus:
    status = ExecutorStatus(
        state=ExecutorState.RUNNING, robot="arm", task="put the cube in the bowl", strategy="rtc",
        backend="onnxruntime", profile="cpu", episode=1, episodes_total=3, successes=1,
        inference_ms=[30.0, 32.0, 50.0, 31.0], inference_p50_ms=31.5, inference_p99_ms=49.4, delay_ticks=2,
        chunk_age_ms=120.0, queue_depth=17, loop=LoopStatus(target_hz=30.0, period_p50_ms=33.3, period_p99_ms=36.0),
        joint_names=["waist", "shoulder"], commanded=[0.5, -0.25], measured=[0.45, 0.1],
        safety=SafetyCounts(clamps=4, seam_trips=0, holds=1, stale_frames=0, faults=0))
    for key, value in changes.items():
        setattr(status, key, value)
    return status


def text_of(app: ExecutorDashboard, widget_id: str) -> str:
    content = app.query_one(f"#{widget_id}", Static).content
    return content.plain if hasattr(content, "plain") else str(content)


async def until(pilot, condition, timeout_s: float = 10.0) -> None:
    """Let the app run until `condition()` holds (or the timeout passes)."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        await pilot.pause(0.02)


def test_the_dashboard_shows_the_executor_and_sends_an_estop():
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = ExecutorDashboard(feed, sent_commands(sent))

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status())
            await until(pilot, lambda: app.status is not None)
            await pilot.pause()
            summary = text_of(app, "summary")
            assert "RUNNING" in summary and "episode 2/3, 1 succeeded" in summary and "rtc on onnxruntime" in summary
            shoulder = next(line for line in text_of(app, "joints").splitlines() if line.startswith("shoulder"))
            assert shoulder.split()[1:] == ["-0.250", "0.100", "-0.350"]
            inference = text_of(app, "inference")
            assert "p50   31.5 ms" in inference and "queue 17" in inference and "delay 2 ticks" in inference
            assert "p99  36.00 ms" in text_of(app, "loop")
            assert "clamps" in text_of(app, "safety") and "holds" in text_of(app, "safety")
            await pilot.press("ctrl+p", "e")  # no palette: its text box took `e`, typed into the search
            assert sent == [Command.ESTOP] and "sent: estop" in text_of(app, "feedback")
            feed.publish(make_status(state=ExecutorState.HOLD))
            await until(pilot, lambda: "HOLD" in text_of(app, "summary"))
            assert "HOLD" in text_of(app, "summary")

    asyncio.run(scenario())


def test_platform_monitor_picks_the_executor_dashboard():
    assert _dashboard_for("executor") is ExecutorDashboard


def test_a_broken_source_says_why_the_executor_disconnected():
    """A status source that raises ends the feed: the dashboard stays up, names the error."""

    def broken():
        yield make_status()
        raise ConnectionResetError("peer went away")

    app = ExecutorDashboard(broken())

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: not app.connected)
            await pilot.pause()
            message = text_of(app, "message")
            assert app.is_running and "executor disconnected" in message
            assert "ConnectionResetError: peer went away" in message

    asyncio.run(scenario())


@pytest.mark.parametrize("key", ["q", "ctrl+c"])
def test_q_in_the_deploys_own_dashboard_stops_the_executor_and_a_monitor_only_detaches(key):
    """Leaving the dashboard `platform deploy` opened must not leave the robot running with
    no view: `q` sends STOP and the app exits when the stream ends. A monitor detaches.
    Built as monitor_cmd.build_app builds each (attached: exit_when_source_ends)."""
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = ExecutorDashboard(feed, sent_commands(sent), monitor=False, exit_when_source_ends=True)

    async def deploys_own() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status())
            await until(pilot, lambda: app.status is not None)
            await pilot.press(key)
            await pilot.pause()
            assert sent == [Command.STOP] and app.is_running
            assert "stopping" in text_of(app, "feedback")
            feed.close()  # the executor stopped: its stream ends
            await until(pilot, lambda: not app.is_running)
            assert not app.is_running

    asyncio.run(deploys_own())

    for send, monitor in ((None, False), (sent.append, True)):  # read-only own dashboard; a monitor
        feed = StatusMailbox(max_hz=0)
        sent.clear()
        other = ExecutorDashboard(feed, send, monitor=monitor, exit_when_source_ends=not monitor)

        async def leaves_at_once(other=other, feed=feed) -> None:
            async with other.run_test(size=(140, 40)) as pilot:
                feed.publish(make_status())
                await pilot.pause(0.1)
                await pilot.press(key)
                await pilot.pause()
                assert sent == [] and not other.is_running

        asyncio.run(leaves_at_once())


def test_the_message_line_follows_the_executor_and_a_key_answer_stays_on_its_own_line():
    """An episode's start clears the reset's countdown message (it stayed on screen while
    RUNNING), and the answer to a key is not overwritten by the executor's own messages,
    which change every second while it homes or counts down."""
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = ExecutorDashboard(feed, sent_commands(sent))

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status(state=ExecutorState.RESET, message="set the scene: episode 2 starts in 5 s"))
            await until(pilot, lambda: "set the scene" in text_of(app, "message"))
            await pilot.press("s")
            await pilot.pause()
            for left in (4, 3):  # the countdown goes on: the key's answer stays
                feed.publish(make_status(state=ExecutorState.RESET, message=f"set the scene: starts in {left} s"))
                await until(pilot, lambda left=left: f"in {left} s" in text_of(app, "message"))
            assert text_of(app, "feedback") == "sent: stop" and sent == [Command.STOP]
            feed.publish(make_status(message=""))  # the episode runs: nothing to say
            await until(pilot, lambda: text_of(app, "message") == "")
            assert text_of(app, "message") == "" and "RUNNING" in text_of(app, "summary")

    asyncio.run(scenario())


def test_a_watch_only_view_says_so_and_keeps_the_refusal_of_its_estop_on_screen():
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, None, monitor=True)

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status(state=ExecutorState.HOMING, message="homing: shoulder 0.8 rad away, 3 s left"))
            await until(pilot, lambda: app.status is not None)
            await pilot.pause()
            assert "WATCH-ONLY" in text_of(app, "summary")
            await pilot.press("e")
            await pilot.pause()
            feed.publish(make_status(state=ExecutorState.HOMING, message="homing: shoulder 0.5 rad away, 2 s left"))
            await until(pilot, lambda: "2 s left" in text_of(app, "message"))
            assert text_of(app, "feedback").startswith("estop NOT SENT: read-only")

    asyncio.run(scenario())


@pytest.mark.parametrize("final, expected", [
    (dict(state=ExecutorState.FAULT, message="fault: servo 3 overload"), "ended on a fault: fault: servo 3 overload"),
    (dict(state=ExecutorState.DONE, message="3 episodes, 2 succeeded"), "executor finished: 3 episodes, 2 succeeded"),
])
def test_the_end_of_the_stream_keeps_how_the_run_ended(final, expected):
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, None, monitor=True)

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status(**final))
            await until(pilot, lambda: app.status is not None)
            feed.close()
            await until(pilot, lambda: not app.connected)
            await pilot.pause()
            assert expected in text_of(app, "message") and "disconnected" not in text_of(app, "message")

    asyncio.run(scenario())


def test_a_status_the_dashboard_cannot_show_is_said_and_the_view_goes_on():
    """A value the panels cannot draw (an infinite reset countdown once did, before the
    setting refused it) must not end the reader and freeze the view as if connected."""
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, None, monitor=True)

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(make_status(joint_names=["waist", "shoulder"], commanded=[0.5, "not a number"]))
            await until(pilot, lambda: "dashboard error" in text_of(app, "message"))
            assert "dashboard error" in text_of(app, "message") and app.is_running
            feed.publish(make_status(episode=2))
            await until(pilot, lambda: "episode 3/3" in text_of(app, "summary"))
            assert "episode 3/3" in text_of(app, "summary")

    asyncio.run(scenario())


def test_servo_retries_are_shown_where_there_is_a_bus_and_coloured_when_any_failed():
    """The loop panel both dashboards share, and the executor's status line: a servo bus
    adds its retried exchanges and the joint most often silent; the direct twin has none."""
    from rich.console import Console

    from shallowpi.tui import panels
    from shallowpi.tui.executor_render import status_line

    assert "servo" not in panels.loop(LoopStatus(simulated=True)).plain  # no bus, no line
    sound = panels.loop(LoopStatus(link_exchanges=900))
    assert "servo retries 0/900" in sound.plain and "most" not in sound.plain
    flaky_loop = LoopStatus(link_exchanges=900, link_failed_tries=14, link_worst="elbow_flex", link_worst_failed=12)
    flaky = panels.loop(flaky_loop)
    start = flaky.plain.index("14/900, most elbow_flex (12)")
    assert flaky.get_style_at_offset(Console(), start).color.name == "yellow"
    assert sound.get_style_at_offset(Console(), sound.plain.index("0/900")).color.name == "green"
    line = status_line(ExecutorStatus(loop=flaky_loop))
    assert "overruns, servo retries 14/900, most elbow_flex (12) | clamps" in line
    assert "servo" not in status_line(ExecutorStatus())


def _humanoid_fault(names: list[str]) -> ExecutorStatus:
    """A FAULT with the robot's joints, every safety count non-zero and a message."""
    return make_status(state=ExecutorState.FAULT, robot="humanoid", joint_names=names,
                       commanded=[0.1] * len(names), measured=[0.0] * len(names),
                       safety=SafetyCounts(clamps=4, seam_trips=1, holds=2, stale_frames=3, faults=1),
                       message="FAULT: bus 'right_arm' servo 8 overload")


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_small_terminals_show_every_joint_a_row_and_keep_the_safety_counts_and_keys(size):
    """At 80x24 the humanoid's joint rows (43 cells) wrapped in the 42 the panel had and the
    panel did not scroll: the first 8 of 19 joints showed, the right arm's, head's and
    lift's errors never. Each joint is one row now, the rows scroll (the joints box has the
    focus: arrow and page keys), and the safety counts, the fault and E-STOP stay on screen."""
    names = robot_spec("humanoid").joint_names
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, lambda request: None)

    async def scenario() -> None:
        async with app.run_test(size=size) as pilot:
            feed.publish(_humanoid_fault(names))
            await until(pilot, lambda: app.status is not None)
            await pilot.pause(0.2)
            panel = app.query_one("#joints", Static)
            rows = text_of(app, "joints").split("\n")
            assert len(rows) == 1 + len(names) and max(map(len, rows)) <= panel.content_region.width, (size, rows)
            assert panel.content_region.height == len(rows), (size, panel.content_region)  # none wraps
            screen = _screen_text(app)
            for shown in ("FAULT", "servo 8 overload", "E-STOP", "clamps 4", "seam trips 1", "holds 2",
                          "stale frames 3", "faults 1"):
                assert shown in screen, (size, shown, screen)
            right, safety = app.query_one("#right"), app.query_one("#safety")
            assert right.region.contains_region(safety.region) and safety.region.height == 7, (size, safety.region)
            for widget_id in ("summary", "message", "feedback"):
                widget = app.query_one(f"#{widget_id}")
                assert widget.region.height > 0 and widget.region.bottom <= size[1], (size, widget_id, widget.region)
            # Every joint's row, error included, on screen: at once, or at the end of the list.
            joint_rows = [" ".join(row.split()) for row in rows[1:]]
            seen = {row for row in joint_rows if row in screen}
            await pilot.press("end")
            await pilot.pause(0.2)
            seen |= {row for row in joint_rows if row in _screen_text(app)}
            assert seen == set(joint_rows), (size, sorted(set(joint_rows) - seen))
            feed.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_joint_names_an_80_column_dashboard_shows_tell_every_joint_apart(robot):
    """Both dashboards cut long names the same way (panels.short_names): in the
    middle, kept apart, not "left_shoulde…" three times."""
    names = robot_spec(robot).joint_names
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, None, monitor=True)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            feed.publish(_humanoid_fault(names))
            await until(pilot, lambda: app.status is not None)
            await pilot.pause(0.2)
            rows = text_of(app, "joints").split("\n")[1:]
            width = app.query_one("#joints", Static).content_region.width
            assert_told_apart([row.split()[0] for row in rows], names, width)
            feed.close()

    asyncio.run(scenario())


def test_the_joint_rows_fit_again_when_the_terminal_is_resized():
    """The rows are cut to the panel's width, so a resize cuts them again."""
    names = robot_spec("humanoid").joint_names
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, lambda request: None)

    async def scenario() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            feed.publish(_humanoid_fault(names))
            await until(pilot, lambda: app.status is not None)
            await pilot.pause(0.2)
            assert "right_shoulder_pitch" in text_of(app, "joints")  # room for the whole name
            await pilot.resize_terminal(80, 24)
            panel = app.query_one("#joints", Static)
            await until(pilot, lambda: max(map(len, text_of(app, "joints").split("\n"))) <= panel.content_region.width)
            rows = text_of(app, "joints").split("\n")
            assert panel.content_region.width < 56 and max(map(len, rows)) <= panel.content_region.width, rows
            assert panel.content_region.height == len(rows) == 1 + len(names)
            feed.close()

    asyncio.run(scenario())


def test_a_watch_only_view_at_80_columns_keeps_the_reset_countdown():
    """The WATCH-ONLY badge wraps the summary's first line at 80 columns; its box was 3 rows,
    and the fourth, the reset's countdown, was cut."""
    feed = StatusMailbox(max_hz=0)
    app = ExecutorDashboard(feed, None, monitor=True)

    async def scenario() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            feed.publish(make_status(state=ExecutorState.RESET, robot="humanoid", task="put the red cube in the bowl",
                                     reset_left_s=4.2, message=""))
            await until(pilot, lambda: app.status is not None)
            await pilot.pause(0.2)
            screen = _screen_text(app)
            assert "WATCH-ONLY" in screen and "the episode starts in 5 s" in screen, screen
            feed.close()

    asyncio.run(scenario())
