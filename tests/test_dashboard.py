"""The recorder dashboard through Textual's run_test() and Pilot: what the widgets show,
which Commands keys send, read-only monitors, a disconnecting recorder, and
`platform monitor` against a real publisher."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from rich.color import Color
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Button, Static

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import robot_spec
from shallowpi import config
from shallowpi.commands import monitor_cmd
from shallowpi.telemetry.address import TelemetryError
from shallowpi.telemetry.mailbox import StatusMailbox
from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import (
    CameraStatus,
    Command,
    EpisodeSummary,
    LoopStatus,
    RecorderState,
    RecorderStatus,
    Thumbnail,
    WriterStatus,
)
from shallowpi.telemetry.subscriber import TelemetrySubscriber
from shallowpi.telemetry.thumbnail import thumbnail_from_image
from shallowpi.tui import panels
from shallowpi.tui import recorder_render as render
from shallowpi.tui.launch import spawn_dashboard
from shallowpi.tui.recorder_dashboard import QuitScreen, RecorderDashboard
from telemetry_fixtures import commands_of, never_stale, sent_commands  # noqa: F401 (autouse)

pytestmark = pytest.mark.timeout(60)
SIZE = (140, 45)


def camera_image() -> np.ndarray:
    """48x64: left half red, right half black; bottom half adds blue."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[:, :32, 0] = 255
    image[24:, :, 2] = 200
    return image


def make_status(state: RecorderState = RecorderState.RECORDING, **changes) -> RecorderStatus:
    status = RecorderStatus(
        state=state, robot="humanoid", dataset="kitchen", task="put the cup on the plate",
        episode=2, episodes_total=10, episode_time_s=12.3, episode_time_limit_s=30.0,
        joint_names=["left_shoulder_pitch", "left_elbow", "left_gripper"],
        leader=[0.1, 0.5, 0.9], follower=[0.1, 0.3, 0.2],
        joint_lower=[-3.0, -3.0, 0.0], joint_upper=[3.0, 3.0, 1.0],
        cameras={"head": CameraStatus(fps=29.8, dropped=0, age_ms=12.0),
                 "wrist_left": CameraStatus(fps=25.1, dropped=3, age_ms=40.0)},
        loop=LoopStatus(target_hz=30.0, period_p50_ms=33.3, period_p99_ms=35.1, overruns=2),
        writer=WriterStatus(queue_depth=40, queue_capacity=64, high_water=50, mb_per_s=35.2,
                            backpressure_ms=0.0, pending_episodes=1),
        episodes=[EpisodeSummary(index=0, frames=900, duration_s=30.0, success=True),
                  EpisodeSummary(index=1, frames=450, duration_s=15.0, success=False, state="saving")],
        episodes_saved=1,  # the session counts commits as the writer reports them
        thumbnails={"head": thumbnail_from_image(camera_image(), width=32)},
        message="episode 1 handed to the writer",
    )
    for key, value in changes.items():
        setattr(status, key, value)
    return status


def text_of(app: RecorderDashboard, widget_id: str) -> str:
    content = app.query_one(f"#{widget_id}", Static).content
    return content.plain if hasattr(content, "plain") else str(content)


async def wait_for(pilot: Pilot, predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the worker thread's statuses reach the UI (pause() alone does not wait on threads)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the dashboard did not get there in time")
        await pilot.pause(0.02)


def run_app(app: RecorderDashboard, scenario) -> None:
    async def main() -> None:
        async with app.run_test(size=SIZE) as pilot:
            await scenario(pilot)

    asyncio.run(main())


def test_widgets_show_the_telemetry():
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, [].append)

    async def scenario(pilot: Pilot) -> None:
        assert "WAITING" in text_of(app, "summary")
        feed.publish(make_status())
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause()
        summary = text_of(app, "summary")
        assert "RECORDING" in summary and "episode 2 (3/10 of this run)" in summary
        assert "00:12.3 / 00:30.0" in summary and "put the cup on the plate" in summary
        assert "CONTROL" in summary and "READ-ONLY" not in summary
        badge = app.query_one("#summary", Static).content
        assert badge.get_style_at_offset(pilot.app.console, 1).bgcolor == Color.parse("#d70000")  # REC

        joints = text_of(app, "joints").splitlines()
        elbow = next(line for line in joints if line.startswith("left_elbow"))
        assert "0.500" in elbow and "0.300" in elbow and "+0.200" in elbow
        assert "F" in elbow and "L" in elbow

        cameras = text_of(app, "cameras")
        head = next(line for line in cameras.splitlines() if line.startswith("head"))
        wrist = next(line for line in cameras.splitlines() if line.startswith("wrist_left"))
        assert head.split()[1:3] == ["29.8", "0"] and wrist.split()[1:3] == ["25.1", "3"]
        loop = text_of(app, "loop")
        assert "p50  33.30 ms" in loop and "p99  35.10 ms" in loop and "overruns 2" in loop
        writer = text_of(app, "writer")
        assert "40/64" in writer and "high water 50" in writer and "35.2 MB/s" in writer
        assert "backpressure 0 ms" in writer
        episodes = text_of(app, "episodes")
        assert "#0" in episodes and "✓ success" in episodes and "✗ failure" in episodes
        assert "saving" in episodes
        assert "episode 1 handed to the writer" in text_of(app, "message")
        assert "space" in text_of(app, "keys") and "jog" not in text_of(app, "keys")  # nothing to jog

        thumb = app.query_one("#thumbnail", Static).content
        rows = thumb.plain.splitlines()
        assert len(rows) == 12 and all(row == "▀" * 32 for row in rows)  # 32x24 px -> 32x12 cells
        top_left = thumb.get_style_at_offset(pilot.app.console, 0)
        bottom_right = thumb.get_style_at_offset(pilot.app.console, len(thumb.plain) - 1)
        assert top_left.color == Color.parse("#ff0000") and top_left.bgcolor == Color.parse("#ff0000")
        assert bottom_right.color == Color.parse("#0000c8") and bottom_right.bgcolor == Color.parse("#0000c8")

        # A new status replaces the old one: the worker keeps reading.
        feed.publish(make_status(RecorderState.RESETTING, reset_time_left_s=4.5, episode=3,
                                 jog_joints=["head_pan", "head_tilt", "lift"]))
        await wait_for(pilot, lambda: app.status.state is RecorderState.RESETTING)
        await pilot.pause()
        assert "]\u00a0+\u00a0-  jog head_pan/head_tilt/lift" in text_of(app, "keys")  # the joints these keys move
        assert "RESETTING" in text_of(app, "summary") and "reset 00:04.5 left" in text_of(app, "summary")
        assert "episode 3 (4/10 of this run)" in text_of(app, "summary")
        feed.close()

    run_app(app, scenario)


def test_disk_falling_behind_and_faults_are_called_out():
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, [].append)

    async def scenario(pilot: Pilot) -> None:
        status = make_status(writer=WriterStatus(queue_depth=60, queue_capacity=64, high_water=64,
                                                 mb_per_s=80.0, backpressure_ms=250.0))
        feed.publish(status)
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause()
        assert "disk falling behind" in text_of(app, "writer") and "250 ms" in text_of(app, "writer")
        feed.publish(make_status(RecorderState.FAULT, message="servo 7 (left_elbow): overload; torque off"))
        await wait_for(pilot, lambda: app.status.state is RecorderState.FAULT)
        await pilot.pause()
        assert "FAULT" in text_of(app, "summary")
        assert "servo 7 (left_elbow): overload" in text_of(app, "message")
        feed.close()

    run_app(app, scenario)


def test_keys_send_commands():
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.IDLE))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("space")
        assert sent == [Command.START]
        feed.publish(make_status(RecorderState.RECORDING))
        await wait_for(pilot, lambda: app.status.state is RecorderState.RECORDING)
        await pilot.press("space", "r", "d", "s", "f", "p", "e")
        assert sent[1:] == [Command.STOP, Command.RERECORD, Command.DISCARD,
                            Command.SUCCESS, Command.FAILURE, Command.PAUSE, Command.ESTOP]
        assert "e: torque off now" in text_of(app, "message")
        await pilot.press("n")  # no meaning while recording: said, not sent
        assert len(sent) == 8 and "n (next) ignored while recording" in text_of(app, "message")
        feed.close()

    run_app(app, scenario)


def test_quit_asks_for_confirmation_first():
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status())
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen) and sent == []
        assert app.screen.question.endswith("Torque goes off: support the follower first.")  # a robot's status
        await pilot.press("n")  # cancel
        assert not isinstance(app.screen, QuitScreen) and sent == []
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("escape")
        assert sent == []
        await pilot.press("ctrl+c")  # Ctrl-C is a key in the dashboard: same question
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("y")
        assert sent == [Command.QUIT]
        assert "stopping" in text_of(app, "message")
        assert app.is_running  # the recorder ends the feed when it has saved
        feed.close()

    run_app(app, scenario)


def test_no_key_leaves_or_swallows_the_estop_without_a_question():
    """Textual's own keys: ctrl+p opened a command palette whose text box took `e` (typed
    into the search, no E-STOP sent), and ctrl+q left the recorder's dashboard at once,
    asking nothing (the recording went on without a view). On a fault's dialog, ctrl+c,
    which the dialog names to acknowledge, opened the quit question instead."""
    from shallowpi.tui.recorder_dashboard import AcknowledgeScreen

    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.RECORDING))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("ctrl+p", "e")
        assert sent == [Command.ESTOP]
        await pilot.press("ctrl+q")
        assert isinstance(app.screen, QuitScreen) and app.is_running and sent == [Command.ESTOP]
        await pilot.press("n")
        feed.publish(make_status(RecorderState.FAULT, message="servo 7 (left_elbow): overload; torque off"))
        await wait_for(pilot, lambda: isinstance(app.screen, AcknowledgeScreen))
        await pilot.press("ctrl+c")
        assert not isinstance(app.screen, (AcknowledgeScreen, QuitScreen)) and sent == [Command.ESTOP]
        feed.close()

    run_app(app, scenario)


def test_once_every_episode_is_saved_the_header_and_the_quit_question_say_torque_goes_off_next():
    """On a robot the run goes on teleoperating after its last episode (state done): the
    header says what is left to do instead of the last take's time, and q asks before
    ending a session whose end turns torque off."""
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(RecorderState.DONE))
        await wait_for(pilot, lambda: app.status is not None)
        header = text_of(app, "summary")
        assert " DONE " in header and "all recorded: rest the arm, then q" in header and "00:12.3" not in header
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen) and "Torque goes off" in app.screen.question
        await pilot.press("y")
        assert sent == [Command.QUIT]
        feed.close()

    run_app(app, scenario)


def test_read_only_dashboard_sends_nothing_and_says_so():
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    # A sink exists, but the recorder marks this dashboard read-only.
    app = RecorderDashboard(feed, sent_commands(sent))

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(control_allowed=False))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause()
        assert "READ-ONLY" in text_of(app, "summary")
        await pilot.press("space", "s", "e", "d")
        assert sent == []
        assert "read-only" in text_of(app, "message") and "--control" in text_of(app, "message")
        await pilot.press("q")  # leaving a read-only view stops nothing: no question
        await pilot.pause()
        assert not app.is_running
        assert sent == []

    run_app(app, scenario)


def test_source_ending_shows_disconnected_and_keeps_the_app():
    feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(feed, sent_commands(sent), monitor=True)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status())
        await wait_for(pilot, lambda: app.status is not None)
        feed.close()
        await wait_for(pilot, lambda: not app.connected)
        await pilot.pause()
        assert "recorder disconnected" in text_of(app, "message")
        # The badge says so; the last known episode stays on screen for the operator.
        assert text_of(app, "summary").startswith(" RECORDER DISCONNECTED   episode 2 (3/10 of this run)")
        await pilot.press("s")
        assert sent == [] and app.is_running
        await pilot.press("q")  # nothing left to stop: q just leaves
        await pilot.pause()
        assert not app.is_running

    run_app(app, scenario)


class BrokenSource:
    def __init__(self) -> None:
        self.closed = False

    def __iter__(self):
        yield make_status()
        raise ConnectionResetError("peer went away")

    def close(self) -> None:
        self.closed = True


def test_a_broken_source_does_not_crash_the_dashboard():
    source = BrokenSource()
    app = RecorderDashboard(source, [].append)

    async def scenario(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: not app.connected)
        await pilot.pause()
        assert app.is_running and "recorder disconnected" in text_of(app, "message")
        assert "ConnectionResetError: peer went away" in text_of(app, "message")
        assert "RECORDING" not in text_of(app, "summary")

    run_app(app, scenario)
    assert source.closed  # the dashboard closes its source on exit


def test_embedded_dashboard_exits_when_the_recorder_closes_the_feed():
    """`platform record`: the loop thread publishes, the App runs in the main thread."""
    publisher_feed = StatusMailbox(max_hz=0)
    sent: list[Command] = []
    app = RecorderDashboard(publisher_feed, sent_commands(sent), exit_when_source_ends=True)
    stop = threading.Event()

    def control_loop() -> None:  # stands in for the recorder's loop thread
        episode = 0
        while not stop.is_set():
            episode += 1
            publisher_feed.publish(make_status(episode_time_s=episode / 10))
            if Command.QUIT in sent:
                break
            time.sleep(0.1)
        publisher_feed.close()

    loop = threading.Thread(target=control_loop)
    loop.start()

    async def scenario(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("q", "y")
        await wait_for(pilot, lambda: not app.is_running)

    try:
        run_app(app, scenario)
    finally:
        stop.set()
        loop.join(timeout=5)
    assert sent == [Command.QUIT] and not loop.is_alive()


def test_halfblock_pixels_and_subsampling():
    # 2 wide x 4 high: rows red, green, blue, white -> 2 cells wide, 2 cells high.
    rows = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)]
    rgb = bytes(c for row in rows for _ in range(2) for c in row).hex()
    text = panels.halfblock(Thumbnail(height=4, width=2, rgb=rgb))
    assert text.plain == "▀▀\n▀▀"
    styles = [text.get_style_at_offset(Console(), i) for i in (0, 3)]
    assert (styles[0].color, styles[0].bgcolor) == (Color.parse("#ff0000"), Color.parse("#00ff00"))
    assert (styles[1].color, styles[1].bgcolor) == (Color.parse("#0000ff"), Color.parse("#ffffff"))
    wide = thumbnail_from_image(np.zeros((60, 160, 3), np.uint8), width=120)
    assert wide.width == 120 and wide.height % 2 == 0 and abs(wide.height - 45) <= 1  # aspect kept
    assert max(len(line) for line in panels.halfblock(wide, max_width=40).plain.splitlines()) == 40
    assert panels.halfblock(Thumbnail(2, 2, "zz")).plain == "bad thumbnail"


ROBOTS = sorted(path.stem for path in (config.config_dir() / "robot").glob("*.yaml"))


def assert_told_apart(shown: list[str], names: list[str], width: int) -> None:
    """Each of `shown` is its joint's name, or that name with its middle cut ("…"), within
    `width` cells, and no two read alike."""
    assert len(shown) == len(names) and len(set(shown)) == len(names), shown
    for text, name in zip(shown, names):
        head, _, tail = text.partition("…")
        assert len(text) <= width and name.startswith(head) and name.endswith(tail), (text, name, width)


def test_long_joint_names_lose_their_middle_and_stay_apart():
    """Cut at the end, the humanoid's three left shoulder joints all read "left_shoulde…" at
    80 columns; cut in the middle their ends tell them apart (panels.short_names, which
    both dashboards' joints panels use)."""
    names = ["left_shoulder_pitch", "left_shoulder_roll", "left_shoulder_yaw", "lift"]
    assert panels.short_names(names, 13) == ["left_s…_pitch", "left_sh…_roll", "left_sho…_yaw", "lift"]
    # Alike with their ends kept too (the same head and end): cut elsewhere, both the same way.
    alike = ["right_shoulder_pitch", "right_wrist_pitch", "right_elbow"]
    assert panels.short_names(alike, 13) == ["right_s…pitch", "right_w…pitch", "right_elbow"]
    for robot in ROBOTS:
        names = robot_spec(robot).joint_names
        for width in range(9, 23):
            assert_told_apart(panels.short_names(names, width), names, width)


@pytest.mark.parametrize("panel_width", [29, 34, 35, 36])  # the loop panels at 80 and 100 columns
def test_the_loop_panel_breaks_its_lines_between_numbers_to_fit_its_width(panel_width):
    """"period p50  33.30 ms  p99  36.00 ms" is 35 cells and the sim-time lines 44 and 45:
    Rich wrapped them between any two words in the 29-36 cells the dashboards give the
    panel. Each line is broken between its numbers, and each number keeps its unit."""
    servo = LoopStatus(target_hz=30.0, period_p50_ms=33.3, period_p99_ms=36.0, overruns=2, link_exchanges=1200,
                       link_failed_tries=14, link_worst="right_shoulder_pitch", link_worst_failed=12)
    sim = LoopStatus(target_hz=30.0, period_p50_ms=70.0, period_p99_ms=71.5, simulated=True)
    for lp, whole in ((servo, ["loop 30 Hz", "period p50  33.30 ms", "p99  36.00 ms", "overruns 2",
                               "servo retries 14/1200,", "(12)"]),
                      (sim, ["loop 30 Hz of simulated time", "(33.3 ms a tick)", "p50  70.00 ms", "p99  71.50 ms",
                             "no deadline to overrun"])):
        lines = panels.loop(lp, panel_width=panel_width).plain.split("\n")
        assert max(map(len, lines)) <= panel_width, (panel_width, lines)
        for part in whole:  # on one line, not split across two
            assert any(part in line for line in lines), (panel_width, part, lines)
    assert panels.loop(servo, panel_width=34).plain.split("\n")[1:3] == ["period p50  33.30 ms", "       p99  36.00 ms"]
    # Unlimited (and wide enough): a line each, as before.
    assert panels.loop(servo).plain == panels.loop(servo, panel_width=80).plain == (
        "loop 30 Hz (33.3 ms)\nperiod p50  33.30 ms  p99  36.00 ms\noverruns 2\n"
        "servo retries 14/1200, most right_shoulder_pitch (12)")
    late = panels.loop(LoopStatus(target_hz=30.0, period_p50_ms=33.3, period_p99_ms=40.0), panel_width=29)
    assert late.get_style_at_offset(Console(), late.plain.index("p99")).color.name == "red"  # still red on its own row


def serve(publisher: TelemetryPublisher, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        tick = 0
        while not stop.is_set():
            tick += 1
            publisher.publish(make_status(episode_time_s=tick / 10))
            # 10 Hz, not the loop's 50: Pilot's key presses wait for the process to go idle.
            time.sleep(0.1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


def test_platform_monitor_with_control_against_a_real_publisher(tmp_path):
    address = str(tmp_path / "telemetry.sock")
    stop = threading.Event()
    with TelemetryPublisher(address, allow_control=True) as publisher:
        thread = serve(publisher, stop)
        app = monitor_cmd.build_app(argparse.Namespace(address=address, control=True, overrides=[]))

        async def scenario(pilot: Pilot) -> None:
            await wait_for(pilot, lambda: app.status is not None)
            await pilot.pause()
            assert "episode 2 (3/10 of this run)" in text_of(app, "summary") and "CONTROL" in text_of(app, "summary")
            await pilot.press("s")
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            assert app.screen.query_one("#detach", Button)  # a monitor may leave the recorder running
            await pilot.click("#detach")
            await wait_for(pilot, lambda: not app.is_running)

        run_app(app, scenario)
        deadline = time.monotonic() + 5
        commands: list[Command] = []
        while Command.SUCCESS not in commands and time.monotonic() < deadline:
            commands += commands_of(publisher)
            time.sleep(0.01)
        assert commands == [Command.SUCCESS]  # detaching sent no QUIT
        stop.set()
        thread.join(timeout=5)


def test_platform_monitor_is_read_only_when_the_recorder_refuses_control(tmp_path):
    address = str(tmp_path / "telemetry.sock")
    stop = threading.Event()
    with TelemetryPublisher(address, allow_control=False) as publisher:
        thread = serve(publisher, stop)
        app = monitor_cmd.build_app(argparse.Namespace(address=address, control=True, overrides=[]))

        async def scenario(pilot: Pilot) -> None:
            await wait_for(pilot, lambda: app.status is not None)
            await pilot.pause()
            assert "READ-ONLY" in text_of(app, "summary")
            await pilot.press("e")
            assert "allow_remote_control" in text_of(app, "message")
            publisher.close()  # the recorder stops
            await wait_for(pilot, lambda: not app.connected)
            assert "recorder disconnected" in text_of(app, "message")

        run_app(app, scenario)
        stop.set()
        thread.join(timeout=5)
        assert commands_of(publisher) == []


def test_platform_monitor_without_a_recorder_is_a_one_line_error(tmp_path):
    address = str(tmp_path / "nobody.sock")
    with pytest.raises(TelemetryError, match="no recorder is publishing"):
        monitor_cmd.build_app(argparse.Namespace(address=address, control=False, overrides=[]))
    result = subprocess.run(platform_cmd("monitor", "--address", address), env=subprocess_env(),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: no recorder is publishing at {address}; "
                                      "start `platform record` (or `platform deploy`) first")
    help_text = subprocess.run(platform_cmd("monitor", "--help"), env=subprocess_env(),
                               capture_output=True, text=True, timeout=60).stdout
    assert "--control" in help_text and "platform monitor --address tcp://127.0.0.1:7421" in help_text


def test_attached_monitor_waits_for_the_recorder_quits_it_and_exits_with_it(tmp_path):
    """What `platform record` runs in a child process (shallowpi.tui.launch)."""
    address = str(tmp_path / "telemetry.sock")
    stop = threading.Event()
    holder: dict[str, TelemetryPublisher] = {}
    started = threading.Event()

    def start_late() -> None:  # the recorder comes up after its dashboard
        time.sleep(0.5)
        holder["publisher"] = TelemetryPublisher(address)
        serve(holder["publisher"], stop)
        started.set()

    threading.Thread(target=start_late).start()
    app = monitor_cmd.build_app(argparse.Namespace(address=address, control=True, overrides=[],
                                                   wait_s=10.0, attached=True))
    assert started.wait(timeout=10)
    publisher = holder["publisher"]

    async def scenario(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.press("q")
        assert isinstance(app.screen, QuitScreen)
        assert not app.screen.query("#detach")  # q here means stop the recording
        await pilot.press("y")
        deadline = time.monotonic() + 5
        while Command.QUIT not in commands_of(publisher):
            assert time.monotonic() < deadline, "QUIT did not reach the recorder"
            await pilot.pause(0.02)
        stop.set()
        publisher.close()  # the recorder saved and stopped
        await wait_for(pilot, lambda: not app.is_running)

    try:
        run_app(app, scenario)
    finally:
        stop.set()
        publisher.close()


def test_spawned_dashboard_runs_on_a_real_terminal_and_exits_with_the_recorder(tmp_path, monkeypatch):
    """spawn_dashboard on a pseudo-terminal: Textual's real driver, keys typed as bytes. The
    recorder refuses remote control here (telemetry.allow_remote_control=false), and its own
    dashboard keeps its keys all the same: they are the operator's E-STOP and stop."""
    address = str(tmp_path / "telemetry.sock")
    monkeypatch.setenv("TERM", "xterm-256color")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    screen = bytearray()

    def pump(publisher: TelemetryPublisher | None, seconds: float, until: Callable[[], bool]) -> None:
        # Keep reading: a dashboard whose terminal output is not drained blocks on write.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not until():
            if publisher is not None:
                publisher.publish(make_status())
            if select.select([master], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    screen.extend(os.read(master, 65536))

    with TelemetryPublisher(address, allow_control=False) as publisher:
        child = spawn_dashboard(address, token=publisher.local_token, stdin=slave, stdout=slave, stderr=slave,
                                start_new_session=True)
        os.close(slave)
        try:
            pump(publisher, 20, lambda: b"RECORDING" in screen and b"put the cup" in screen)
            assert b"RECORDING" in screen, screen[-2000:].decode(errors="replace")
            os.write(master, b"q")
            pump(publisher, 2, lambda: b"Stop recording and quit?" in screen)
            os.write(master, b"y")
            commands: list[Command] = []
            pump(publisher, 5, lambda: bool(commands.extend(commands_of(publisher)) or commands))
            assert commands == [Command.QUIT]
            publisher.close()
            pump(None, 10, lambda: child.poll() is not None)
            assert child.wait(timeout=1) == 0
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            os.close(master)


def test_platform_monitor_lines_prints_status_lines_until_the_recorder_stops(tmp_path):
    address = str(tmp_path / "telemetry.sock")
    stop = threading.Event()
    with TelemetryPublisher(address) as publisher:
        thread = serve(publisher, stop)
        child = subprocess.Popen(platform_cmd("monitor", "--address", address, "--lines"),
                                 env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = child.stdout.readline()
        second = child.stdout.readline()
        stop.set()
        thread.join(timeout=5)
        publisher.publish(make_status(RecorderState.STOPPED))  # a clean stop's last status
        time.sleep(0.3)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    for line in (first, second):
        assert "recording episode 2 (3/10 of this run)" in line and "queue 40/64" in line and "wrist_left=25.1fps/3drop" in line
        assert "kept 1 |" in line  # the saved episode only, not the one still saving
    assert out.strip().endswith("recorder stopped")


def test_platform_monitor_lines_says_stale_and_tells_a_vanished_recorder_from_a_fault(tmp_path):
    address = str(tmp_path / "telemetry.sock")
    with TelemetryPublisher(address) as publisher:
        publisher.publish(make_status())
        child = subprocess.Popen(platform_cmd("monitor", "--address", address, "--lines"),
                                 env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Fresh once the monitor has joined: its start-up (over 2 s on a loaded machine) must
        # not age the first status it is sent past STALE_AFTER_S.
        deadline = time.monotonic() + 60
        while publisher.subscriber_count == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        publisher.publish(make_status())
        lines = [child.stdout.readline() for _ in range(5)]  # one a second, nothing new after the first
    out, err = child.communicate(timeout=30)
    assert not lines[0].split(" ", 1)[1].startswith("STALE") and re.search(r"STALE: no status for \d+ s; last: recording", lines[4]), lines
    assert child.returncode == 3, err
    assert "recorder vanished without a final status" in out.strip().splitlines()[-1]

    with TelemetryPublisher(address) as publisher:
        publisher.publish(make_status(RecorderState.FAULT, message="E-STOP: torque off, robot is safe"))
        child = subprocess.Popen(platform_cmd("monitor", "--address", address, "--lines"),
                                 env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        child.stdout.readline()
    out, err = child.communicate(timeout=30)
    assert child.returncode == 1 and out.strip().endswith("recorder ended on a fault: E-STOP: torque off, robot is safe")


def test_a_recorder_feed_that_ends_on_done_vanished_an_executors_finished(capsys):
    """A recorder's done still teleoperates (its last word is stopped); an executor's done
    ran every episode."""
    from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus

    assert monitor_cmd._say_how_it_ended(make_status(RecorderState.DONE), time.monotonic()) == monitor_cmd.EXIT_VANISHED
    assert "recorder vanished without a final status" in capsys.readouterr().out
    finished = ExecutorStatus(state=ExecutorState.DONE, message="3 episodes")
    assert monitor_cmd._say_how_it_ended(finished, time.monotonic()) == monitor_cmd.EXIT_STOPPED


def test_camera_key_cycles_thumbnails():
    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, [].append)
    image = camera_image()
    thumbnails = {"head": thumbnail_from_image(image, 32), "wrist_left": thumbnail_from_image(image[::-1], 32)}

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(thumbnails=thumbnails))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause()
        panel = app.query_one("#thumbnail", Static)
        assert panel.border_title.startswith("camera: head")
        await pilot.press("c")
        assert panel.border_title.startswith("camera: wrist_left")
        first = panel.content.get_style_at_offset(pilot.app.console, 0)
        assert first.color == Color.parse("#ff00c8")  # the flipped image: red + blue on top
        feed.close()

    run_app(app, scenario)


def test_a_crashing_dashboard_leaves_the_recorder_running(tmp_path, monkeypatch):
    """In-process mode: a rendering bug is reported on screen; an App that dies outright
    ends only itself, while the loop thread and remote monitors carry on."""
    address = str(tmp_path / "telemetry.sock")
    stop = threading.Event()
    ticks = [0]

    def broken_joints(status: RecorderStatus, **_):
        raise RuntimeError("a bug in the joints panel")

    def broken_key(self) -> None:
        raise RuntimeError("a bug in a key handler")

    monkeypatch.setattr(render, "joints", broken_joints)
    monkeypatch.setattr(RecorderDashboard, "action_next_camera", broken_key)
    with TelemetryPublisher(address) as publisher:
        def control_loop() -> None:
            while not stop.is_set():
                ticks[0] += 1
                publisher.publish(make_status(episode_time_s=ticks[0] / 50))
                time.sleep(0.02)

        loop = threading.Thread(target=control_loop)
        loop.start()
        try:
            app = RecorderDashboard(publisher.local_feed(), publisher.submit, exit_when_source_ends=True)

            async def scenario(pilot: Pilot) -> None:
                await wait_for(pilot, lambda: "dashboard error" in text_of(app, "message"))
                assert "a bug in the joints panel" in text_of(app, "message") and app.connected
                await pilot.press("c")  # the handler raises: Textual ends the App
                await wait_for(pilot, lambda: not app.is_running)

            with pytest.raises(RuntimeError, match="a bug in a key handler"):
                run_app(app, scenario)
            before = ticks[0]
            with TelemetrySubscriber(address) as monitor:
                assert next(iter(monitor)).episode == 2
            time.sleep(0.2)
            assert loop.is_alive() and ticks[0] > before
        finally:
            stop.set()
            loop.join(timeout=5)


def test_a_recorder_gone_quiet_is_called_stale_and_fresh_again_when_it_speaks():
    """A hung loop (a blocked servo read, Ctrl-Z) keeps its socket open: the view stayed
    'connected' on a frozen RECORDING. After STALE_AFTER_S without a status it says so."""
    from shallowpi.tui.stale import STALE_AFTER_S

    feed = StatusMailbox(max_hz=0)
    app = RecorderDashboard(feed, [].append)

    async def scenario(pilot: Pilot) -> None:
        feed.publish(make_status(message="recording episode 2"))
        await wait_for(pilot, lambda: app.status is not None)
        await pilot.pause(STALE_AFTER_S + 1.0)
        assert text_of(app, "message").startswith("STALE: no status from the recorder for ")
        feed.publish(make_status(message="recording episode 2"))
        await pilot.pause(0.5)
        assert text_of(app, "message") == "recording episode 2"

    run_app(app, scenario)
