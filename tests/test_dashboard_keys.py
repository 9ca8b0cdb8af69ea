"""Every dashboard key in every recorder state, through Textual's Pilot: what is sent, what
the operator reads; then the same keys against a real RecordingSession, checked in the
store; and the dashboard at 100x30 and 80x24."""

from __future__ import annotations

import asyncio
import html
import re
import threading

import pytest
from textual.pilot import Pilot

from dxl_fixtures import robot_spec
from recorder_fixtures import make_session, open_store
from shallowpi.telemetry import keys
from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus
from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import Command, LoopStatus, RecorderState
from shallowpi.tui.executor_dashboard import ExecutorDashboard
from shallowpi.tui.recorder_dashboard import AcknowledgeScreen, QuitScreen, RecorderDashboard
from telemetry_fixtures import never_stale, sent_commands  # noqa: F401 (autouse)
from test_dashboard import ROBOTS, assert_told_apart, make_status, text_of, wait_for

pytestmark = pytest.mark.timeout(120)
KEY_COMMANDS = {"n": Command.NEXT, "r": Command.RERECORD, "d": Command.DISCARD, "s": Command.SUCCESS,
                "f": Command.FAILURE, "p": Command.PAUSE, "right_square_bracket": Command.JOG_NEXT,
                "plus": Command.JOG_UP, "equals_sign": Command.JOG_UP, "minus": Command.JOG_DOWN}


def run_app(app: RecorderDashboard, scenario, size=(140, 45)) -> None:
    async def main() -> None:
        async with app.run_test(size=size) as pilot:
            await scenario(pilot)

    asyncio.run(main())


@pytest.mark.parametrize("state", list(RecorderState), ids=lambda s: s.value)
def test_every_key_in_every_state_acts_or_says_why_not(state):
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(state))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause()
        if state is RecorderState.FAULT:  # the fault is acknowledged first (its own test below)
            await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
            await pilot.press("enter")
        space = Command.STOP if state is RecorderState.RECORDING else Command.START
        for key, command in [*KEY_COMMANDS.items(), ("space", space)]:
            before = len(sent)
            await pilot.press(key)
            effect = keys.effect(command, state) if state in keys.STATES else None
            message = text_of(app, "message")
            if effect is None:
                assert len(sent) == before, (key, state)
                assert message == keys.ignored(command, state), (key, state, message)
            else:
                assert sent[before:] == [command], (key, state)
                assert message == f"{keys.KEY[command]}: {effect}"
        # q asks first in every state; e is always sent.
        await pilot.press("q")
        await wait_for(pilot, lambda: isinstance(app.screen, QuitScreen))
        await pilot.press("escape")
        await pilot.press("e")
        assert sent[-1] is Command.ESTOP
        feed.close()

    run_app(app, scenario)


def test_a_fault_stays_on_screen_until_acknowledged_even_after_the_recorder_ended():
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda command: None, exit_when_source_ends=True)
    message = "E-STOP: torque off, robot is safe; episodes already saved are kept"

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.FAULT, message=message))
        await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
        feed.close()  # the recorder ends: the dashboard stays until the operator answers
        await wait_for(pilot, lambda: not app.connected)
        await pilot.pause(0.3)
        assert app.is_running and isinstance(app.screen, AcknowledgeScreen)
        shown = " ".join(str(label.render()) for label in app.screen.query("Label"))
        assert "E-STOP" in shown and "torque off" in shown
        assert "Acknowledging ends the recorder: torque goes off" in shown  # what the key does, said first
        for reflex in ("space", "escape"):  # space starts takes: pressed by reflex, it must not end the recorder
            await pilot.press(reflex)
            await pilot.pause(0.1)
            assert app.is_running and isinstance(app.screen, AcknowledgeScreen), reflex
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.is_running)

    run_app(app, scenario)


def test_keys_against_a_real_session_do_what_the_store_shows(tmp_path):
    """p saves and holds, d deletes the episode just saved, space/r record again, s marks
    the saved episode in the store, e ends it all with torque off and an acknowledgement."""
    store = open_store(tmp_path / "keys.zarr")
    publisher = TelemetryPublisher(str(tmp_path / "t.sock"))
    session, arm, writer = make_session(store, episodes=3, episode_time_s=60, reset_time_s=60, realtime=True,
                                        publish=publisher.publish, commands=publisher.commands)
    box: dict[str, object] = {}

    def loop() -> None:
        try:
            box["result"] = session.run()
        finally:
            publisher.close()

    app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)

    def state_is(state: RecorderState, episode: int | None = None):
        return lambda: (app.status is not None and app.status.state is state
                        and (episode is None or app.status.episode == episode))

    async def scenario(pilot: Pilot) -> None:
        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        await wait_for(pilot, state_is(RecorderState.RECORDING, 0))
        await pilot.pause(0.3)
        await pilot.press("p")  # save the take, hold
        await wait_for(pilot, state_is(RecorderState.PAUSED, 1))
        await wait_for(pilot, lambda: len(writer.committed()) == 1)
        await pilot.press("d")  # delete it from the store; still paused, episode 0 next
        await wait_for(pilot, state_is(RecorderState.PAUSED, 0))
        await wait_for(pilot, lambda: "episode 0 deleted from the store" in text_of(app, "message"))
        await pilot.press("s")  # nothing saved now: says so
        await wait_for(pilot, lambda: "nothing to mark" in text_of(app, "message"))
        await pilot.press("space")
        await wait_for(pilot, state_is(RecorderState.RECORDING, 0))
        await pilot.pause(0.3)
        await pilot.press("space")  # save, reset
        await wait_for(pilot, state_is(RecorderState.RESETTING, 1))
        await pilot.press("s")
        await wait_for(pilot, lambda: "episode 0 marked successful in the store" in text_of(app, "message"))
        await pilot.press("n")  # end the reset
        await wait_for(pilot, state_is(RecorderState.RECORDING, 1))
        await pilot.pause(0.3)
        await pilot.press("space")
        await wait_for(pilot, state_is(RecorderState.RESETTING, 2))
        await pilot.press("r")  # delete episode 1, record it again now
        await wait_for(pilot, state_is(RecorderState.RECORDING, 1))
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
        thread.join(10)
        await pilot.pause(0.3)
        assert app.is_running  # until acknowledged
        await pilot.press("enter")
        await wait_for(pilot, lambda: not app.is_running)

    run_app(app, scenario)
    writer.close()
    assert arm.torque_offs == 1 and box["result"].fault.startswith("e-stop pressed")
    assert len(store) == 1 and store.episode(0).success is True and store.check() == []
    rows = {e.index: e.state for e in session.status.episodes}
    assert rows == {0: "saved", 1: "discarded"}


@pytest.mark.parametrize("size", [(200, 50), (100, 30), (80, 24)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_small_terminals_keep_every_key_and_the_safety_state_visible(size):
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda command: None)
    from shallowpi.tui import recorder_render as render

    many_joints = robot_spec("humanoid").joint_names  # 19, up to 22 characters a name
    many_joints += [f"extra_joint_{i}" for i in range(28 - len(many_joints))]

    async def scenario(pilot: Pilot) -> None:
        status = make_status(RecorderState.RECORDING, joint_names=many_joints, leader=[0.1] * 28,
                             follower=[0.0] * 28, joint_lower=[-1.0] * 28, joint_upper=[1.0] * 28,
                             jog_joints=["head_pan", "head_tilt", "lift"], message="FAULT: servo 3 overload")
        status.writer.backpressure_ms = 120.0
        feed.publish(status)
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(0.2)
        screen = _screen_text(app)
        for shown in ("RECORDING", "episode 2", "space", "E-STOP", "jog head_pan", "quit", "disk behind: waited 120 ms",
                      "camera frames dropped", "FAULT: servo 3"):
            assert shown in screen, (size, shown, screen)
        for name in ("summary", "joints-box", "episodes", "message", "keys"):  # on screen, whole
            widget = app.query_one(f"#{name}")
            assert widget.region.height > 0 and widget.region.bottom <= size[1], (size, name, widget.region)
        # One row a joint: a row wider than the panel wraps, and a small terminal showed half
        # the humanoid's joints (the bars were drawn at 100x30 whatever the names' length).
        panel = app.query_one("#joints").content_region.width
        rows = render.joints(status, panel_width=panel).plain.split("\n")
        assert len(rows) == 29 and max(map(len, rows)) <= panel, (size, panel, rows)
        # The right column scrolls to what does not fit (its warnings are in the top line).
        right = app.query_one("#right")
        assert right.region.bottom <= size[1] and right.virtual_size.height >= right.region.height
        feed.close()

    run_app(app, scenario, size=size)


@pytest.mark.parametrize("robot", ROBOTS)
def test_the_joint_names_an_80_column_dashboard_shows_tell_every_joint_apart(robot):
    """Cut at the end to 12 characters and "…", 9 of the humanoid's 19 names read alike at
    80x24 ("left_shoulde…" for its shoulder's pitch, roll and yaw): cut in the middle now
    (panels.short_names), and apart."""
    names = robot_spec(robot).joint_names
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, None, monitor=True)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.RECORDING, joint_names=names, leader=[0.1] * len(names),
                                 follower=[0.0] * len(names)))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(0.2)
        rows = text_of(app, "joints").split("\n")[1:]
        width = app.query_one("#joints").content_region.width
        assert_told_apart([row.split()[0] for row in rows], names, width)
        feed.close()

    run_app(app, scenario, size=(80, 24))


def _humanoid_status(state: RecorderState = RecorderState.RECORDING, **changes):
    """A status of the humanoid's 19 joints, the leader 0.1 ahead of the follower."""
    names = robot_spec("humanoid").joint_names
    return make_status(state, joint_names=names, leader=[0.1] * len(names), follower=[0.0] * len(names),
                       joint_lower=[-1.0] * len(names), joint_upper=[1.0] * len(names), **changes)


def test_the_humanoid_at_80x24_shows_every_joint_row_at_once_or_after_end():
    """The joints panel was a Static 12 rows tall for 20 rows of text whose own
    `overflow-y: auto` scrolled 2 rows: right_elbow, right_gripper, head_pan, head_tilt and
    lift were never on screen. Each joint is one row in a box that scrolls (it has the
    focus: End shows the last rows), and E-STOP and the fault stay on screen."""
    fault = "FAULT: bus 'right_arm' servo 8 overload"
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda command: None)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(_humanoid_status(RecorderState.FAULT, message=fault))
        await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
        await pilot.press("enter")  # the fault's dialog, acknowledged: the dashboard under it
        await wait_for(pilot, lambda: not isinstance(app.screen, AcknowledgeScreen))
        await pilot.pause(0.2)
        panel = app.query_one("#joints")
        rows = text_of(app, "joints").split("\n")
        assert len(rows) == 20 and max(map(len, rows)) <= panel.content_region.width, rows
        assert panel.content_region.height == len(rows), panel.content_region  # none wraps
        joint_rows = [" ".join(row.split()) for row in rows[1:]]
        screen = _screen_text(app)
        seen = {row for row in joint_rows if row in screen}
        await pilot.press("end")
        await pilot.pause(0.2)
        screen = _screen_text(app)
        seen |= {row for row in joint_rows if row in screen}
        assert seen == set(joint_rows), sorted(set(joint_rows) - seen)
        for shown in ("FAULT: see below", fault, "e E-STOP", "q quit"):
            assert shown in screen, (shown, screen)
        for widget_id in ("summary", "joints-box", "message", "keys"):
            widget = app.query_one(f"#{widget_id}")
            assert widget.region.height > 0 and widget.region.bottom <= 24, (widget_id, widget.region)
        feed.close()

    run_app(app, scenario, size=(80, 24))


def test_a_resize_cuts_the_joint_rows_again_at_the_new_width():
    """The dashboard's own Resize comes before the layout: the rows were cut to the width
    the panel had before it (at 140x45 its bars and whole names, wrapping at 80x24)."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda command: None)

    def rows_fit() -> bool:
        width = app.query_one("#joints").content_region.width
        return max(map(len, text_of(app, "joints").split("\n"))) <= width

    async def scenario(pilot: Pilot) -> None:
        feed.publish(_humanoid_status())
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(0.2)
        assert "right_shoulder_pitch" in text_of(app, "joints") and "position" in text_of(app, "joints")
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, rows_fit, timeout_s=3.0)
        panel = app.query_one("#joints")
        assert panel.content_region.width < 40 and panel.content_region.height == 20, panel.content_region
        await pilot.resize_terminal(140, 45)  # and back: the bars and whole names again
        await wait_for(pilot, lambda: "position" in text_of(app, "joints"), timeout_s=3.0)
        assert "right_shoulder_pitch" in text_of(app, "joints") and rows_fit()
        feed.close()

    run_app(app, scenario, size=(140, 45))


SERVO_LOOP = LoopStatus(target_hz=30.0, period_p50_ms=33.3, period_p99_ms=36.0, overruns=2, link_exchanges=1200,
                        link_failed_tries=14, link_worst="right_shoulder_pitch", link_worst_failed=12)
SIM_LOOP = LoopStatus(target_hz=30.0, period_p50_ms=70.0, period_p99_ms=71.5, simulated=True)


@pytest.mark.parametrize("size", [(80, 24), (100, 30)], ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dashboard", ["recorder", "executor"])
@pytest.mark.parametrize("loop", [SERVO_LOOP, SIM_LOOP], ids=["servo-bus", "sim-time"])
def test_the_loop_panel_keeps_a_line_a_row_at_80_and_100_columns(size, dashboard, loop):
    """In the right column (29 to 36 cells at 80 to 100 columns) "period p50  33.30 ms  p99
    36.00 ms" (35 cells) and the sim-time lines (44, 45) wrapped between any two words, "ms"
    alone on a row. Each line is cut to the panel now, between its numbers."""
    feed = StatusMailbox(max_hz=0)
    if dashboard == "recorder":
        app = RecorderDashboard(feed, None, monitor=True)
        status = make_status(loop=loop)
    else:
        app = ExecutorDashboard(feed, None, monitor=True)
        status = ExecutorStatus(state=ExecutorState.RUNNING, loop=loop)

    async def scenario() -> None:
        async with app.run_test(size=size) as pilot:
            feed.publish(status)
            await wait_for(pilot, lambda: app.status is not None)
            await pilot.pause(0.2)
            panel = app.query_one("#loop")
            lines = text_of(app, "loop").split("\n")
            assert max(map(len, lines)) <= panel.content_region.width, (panel.content_region, lines)
            assert panel.content_region.height == len(lines), (panel.content_region, lines)  # none wraps
            shown = " ".join(text_of(app, "loop").split())
            for number in ("p50 33.30 ms", "p99 36.00 ms") if not loop.simulated else ("p50 70.00 ms", "p99 71.50 ms"):
                assert number in shown, shown
            feed.close()

    asyncio.run(scenario())


def _screen_text(app: RecorderDashboard) -> str:
    """What the terminal shows, as plain text: the text runs of Textual's SVG screenshot."""
    svg = app.export_screenshot()
    runs = re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape("".join(runs)).replace("\xa0", " "))  # wrapped lines join


def test_simulated_time_loop_paused_cameras_and_growing_episode_rows(tmp_path):
    from shallowpi.tui import panels
    from shallowpi.tui import recorder_render as render

    loop = make_status().loop
    loop.simulated, loop.period_p50_ms = True, 70.0
    shown = panels.loop(loop).plain
    assert "simulated time" in shown and "overrun" not in shown.replace("no deadline to overrun", "")
    assert "sim-time loop" in render.status_line(make_status(loop=loop))
    paused = panels.cameras(make_status().cameras, 30.0, paused=True).plain
    assert "paused" in paused and "29.8" not in paused

    # A real session: the row of the take in flight counts frames and seconds as it grows.
    store = open_store(tmp_path / "grow.zarr")
    rows: list[tuple[int, float]] = []
    session, _, writer = make_session(store, episodes=1, episode_time_s=1.0,
                                      publish=lambda s: rows.append((s.episodes[-1].frames,
                                                                     s.episodes[-1].duration_s)))
    session.run()
    writer.close()
    assert rows[9] == (10, pytest.approx(10 / 30)) and rows[19][0] == 20
    assert session.status.loop.simulated


def test_the_keys_line_grows_a_row_when_the_jog_keys_join_it_and_quit_stays_on_screen():
    """On an 80-column terminal the jog keys take the keys line to a third row. Only that
    line changed between the two statuses, and without a newline in it: the panel kept its
    two rows and "q quit" fell off the screen."""
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, lambda command: None)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.IDLE))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(0.2)
        rows = app.query_one("#keys").region.height
        feed.publish(make_status(RecorderState.IDLE, jog_joints=["left_head_pan_joint", "right_head_tilt_joint",
                                                                 "torso_lift_joint"]))
        await wait_for(pilot, lambda: bool(app.status.jog_joints))
        await pilot.pause(0.2)
        assert app.query_one("#keys").region.height > rows
        screen = _screen_text(app)
        assert "jog left_head_pan_joint/right_head_tilt_joint/torso_lift_joint" in screen and screen.endswith("q quit"), screen
        feed.close()

    run_app(app, scenario, size=(80, 24))


def test_the_monitor_says_recorder_stopped_after_a_clean_stop():
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, None, monitor=True)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.STOPPED))
        await wait_for(pilot, lambda: app.status is not None)
        feed.close()
        await wait_for(pilot, lambda: not app.connected)
        await pilot.pause()
        assert text_of(app, "message") == "recorder stopped; press q to leave"
        assert text_of(app, "summary").startswith(" RECORDER STOPPED ")

    run_app(app, scenario)


def test_the_last_status_before_close_reaches_the_reader_and_nothing_after():
    feed = StatusMailbox(max_hz=0)
    feed.publish(make_status(RecorderState.FAULT, message="E-STOP: torque off"))
    feed.close()  # the recorder ends right after its final status
    feed.publish(make_status(RecorderState.RECORDING))  # too late: ignored
    received = list(feed)
    assert [s.state for s in received] == [RecorderState.FAULT]
