"""The recorder's live dashboard: shows a RecorderStatus stream, sends Commands.

Its recorder-only panels are in recorder_render.py; the loop, camera and thumbnail panels
come from panels.py, which the executor's dashboard shares.

The dashboard only reads telemetry. It is given

- a status source: anything iterable whose iteration blocks until the next status and
  ends when the recorder goes away (`TelemetrySubscriber`, `StatusMailbox`); if it has a
  `close()`, the dashboard calls it on exit so a blocked read wakes up;
- a command sink: a callable taking a `Request` (a `Command` with the state shown when its
  key was pressed; `TelemetrySubscriber.send`, `TelemetryPublisher.submit`), or None for a
  read-only monitor.

Three ways to run it, all supported and tested:

- its own process beside the recorder (recommended for `platform record`):
  `shallowpi.tui.launch.spawn_dashboard(address)` runs `platform monitor --attached` on the
  same terminal. The control loop keeps its process (and the GIL) to itself, and a crash
  of the dashboard cannot touch it. `q` asks, then sends QUIT; the dashboard exits when
  the publisher closes.
- in the recorder's process: the control loop runs in a background thread and publishes
  into `publisher.local_feed()`; this App runs in the main thread with
  `send=publisher.submit` and `exit_when_source_ends=True`; `publisher.close()` at the end
  of the loop ends the feed and the App. A crash of the App ends `run()` in the main
  thread; the loop thread carries on headless. Costly: repaints hold the GIL, and the
  loop's p99 period suffers (BENCHMARKS.md, "Telemetry and dashboard").
- `platform monitor` from another terminal, over a `TelemetrySubscriber`: when the
  recorder stops, the dashboard says "recorder disconnected" and stays until `q`.

Threads: the source is read on a daemon thread (status_feed.start_reading: not a Textual
worker, which exit would wait for), which hands each status to the UI thread as a posted
callback; widgets are touched only on the UI thread, through
the `status` reactive and its watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.events import Resize
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from shallowpi.telemetry import keys
from shallowpi.telemetry.status import Command, RecorderState, RecorderStatus, Request, Thumbnail
from shallowpi.tui import panels
from shallowpi.tui import recorder_render as render
from shallowpi.tui.fitted import FittedPanel, ScrollBox
from shallowpi.tui.stale import StatusAge
from shallowpi.tui.status_feed import close_source, start_reading

log = logging.getLogger(__name__)

CommandSink = Callable[[Request], None]

RIGHT_MIN_WIDTH = 38  # the right column's cells (its CSS min-width): a camera's row, 34, in its panel
# Side by side only from here (76 columns): a joint's row with its name in 8 cells (narrower,
# names may read alike: panels.short_names) in its box (border, padding, scroll gutter:
# 5 cells) beside the right column.
NARROW_BELOW = panels.NAME_MIN + render.NUMBERS_WIDTH + 5 + RIGHT_MIN_WIDTH
SHORT_BELOW = 16  # rows: under this the episodes' list gives way to the joints


class QuitScreen(ModalScreen[str]):
    """Ask before quitting: the answer is the id of the button pressed (or "cancel")."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,n", "answer('cancel')", "cancel"),
        Binding("y", "answer('quit')", "yes, quit"),
    ]

    def __init__(self, question: str, choices: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.question = question
        self.choices = choices  # (id, label, button variant)

    def compose(self) -> ComposeResult:
        """The dialog: the question, one button per choice, then Cancel."""
        with Grid(id="quit-dialog"):
            yield Label(self.question, id="quit-question")
            with Horizontal(id="quit-buttons"):
                for choice_id, label, variant in self.choices:
                    yield Button(label, id=choice_id, variant=variant)  # type: ignore[arg-type]
                yield Button("Cancel (n)", id="cancel", variant="primary")

    def on_mount(self) -> None:
        """Focus Cancel, so a stray Enter does not quit."""
        self.query_one("#cancel", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Dismiss with the pressed button's id as the answer."""
        self.dismiss(event.button.id or "cancel")

    def action_answer(self, answer: str) -> None:
        """Dismiss with `answer`: the `y` (quit) and `n`/escape (cancel) keys."""
        self.dismiss(answer)


class AcknowledgeScreen(ModalScreen[None]):
    """A fault or E-STOP: stays on screen until the operator acknowledges it, with enter (or
    ctrl+c), not with space or escape: space starts and stops takes, and either is pressed
    by reflex, while acknowledging may end the recorder and with it the torque (`consequence`
    says what it does here)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter,ctrl+c", "acknowledge", "acknowledge", priority=True),
    ]

    def __init__(self, title: str, message: str, consequence: str = "") -> None:
        super().__init__()
        self.title_text = title
        self.message = message
        self.consequence = consequence

    def compose(self) -> ComposeResult:
        """The dialog: title, message, what acknowledging does, Acknowledge button."""
        with Vertical(id="ack-dialog"):
            yield Label(self.title_text, id="ack-title")
            yield Label(self.message, id="ack-message")
            if self.consequence:
                yield Label(self.consequence, id="ack-consequence")
            yield Button("Acknowledge (enter)", id="ack", variant="error")

    def on_mount(self) -> None:
        """Focus the Acknowledge button."""
        self.query_one("#ack", Button).focus()

    def on_button_pressed(self, _event: Button.Pressed) -> None:
        """Acknowledged: close the dialog."""
        self.dismiss(None)

    def action_acknowledge(self) -> None:
        """Acknowledged by key (enter, ctrl+c): close the dialog."""
        self.dismiss(None)


class RecorderDashboard(App[None]):
    """Live view of a recorder; keys send Commands to it (unless read-only)."""

    TITLE = "Shallow-π recorder"
    CSS = """
    Screen { layout: vertical; }
    /* Docked, whatever the terminal's size: the summary (the state on its first row, and
       what needs the operator) at the top; the message line (faults, STALE) and the keys
       (E-STOP, quit) at the bottom. The body has what they leave: it gives way, they are
       never scrolled off or covered. The summary takes at most half the rows (8 lines at
       40 columns), so that the two never meet down to 40x12. */
    #summary { dock: top; width: 100%; height: auto; max-height: 50%; padding: 0 1; background: $boost; }
    #foot { dock: bottom; width: 100%; height: auto; }
    #body { height: 1fr; }
    #left { width: 3fr; }
    #right { width: 2fr; min-width: 38; overflow-y: auto; }  /* RIGHT_MIN_WIDTH */
    .panel { border: round $primary-darken-2; padding: 0 1; height: auto; }
    /* A joint a row; the rows scroll in their box (a fitted.ScrollBox: a Static does not
       scroll its own text) where the robot has more joints than there is room for. */
    #joints-box { max-height: 70%; }
    #episodes { height: 1fr; min-height: 4; }
    #thumbnail { height: auto; min-height: 3; }
    #message { height: auto; min-height: 1; max-height: 2; padding: 0 1; background: $panel; }
    #keys { height: auto; padding: 0 1; background: $boost; }
    /* Small terminals (under 110x36): no thumbnail, joints scroll in what is left, so
       the keys, the state and the writer's back-pressure stay on screen. */
    .-compact #thumbnail { display: none; }
    .-compact #joints-box { height: 1fr; max-height: 100%; }
    .-compact #episodes { height: auto; max-height: 6; min-height: 3; }
    /* Narrow terminals (a tmux side split; under NARROW_BELOW columns a joint's row and the
       right column's 38 cells do not both fit): the columns stack, the joints first, then
       the episodes, cameras, loop and writer, and the body scrolls (the wheel). Side by side
       the right column covered the left, or a joint's row wrapped over two lines. */
    .-narrow #body { layout: vertical; overflow-x: hidden; overflow-y: auto; }
    .-narrow #left, .-narrow #right { width: 100%; min-width: 0; height: auto; overflow-y: hidden; }
    .-narrow #joints-box { height: auto; max-height: 50vh; }
    /* Short terminals (a top/bottom split; under SHORT_BELOW rows): the episodes' list gives
       way to the joints. It is history (the summary keeps the episode's number and the
       run's count); the joints are the take going on now. */
    .-short #episodes { display: none; }
    QuitScreen { align: center middle; }
    #quit-dialog {
        grid-size: 1 2; grid-rows: auto 3; padding: 1 2; width: 72; height: auto;
        border: thick $error; background: $surface;
    }
    #quit-buttons { height: 3; align: center middle; }
    #quit-buttons Button { margin: 0 1; }
    AcknowledgeScreen { align: center middle; }
    #ack-dialog {
        padding: 1 2; width: 90%; max-width: 100; height: auto;
        border: thick $error; background: $surface;
    }
    /* Within the screen, scrolling in itself where it is taller (40x12): centred in a
       smaller screen it ran off both edges, its title (E-STOP or FAULT) off the top. */
    #quit-dialog, #ack-dialog { max-height: 100%; overflow-y: auto; }
    #quit-dialog { max-width: 100%; }
    .-short #quit-dialog, .-short #ack-dialog { padding: 0 1; }
    .-short #ack-title { dock: top; }  /* kept in view when the dialog scrolls to its button */
    #ack-title { text-style: bold; color: $text; background: $error; width: 100%; padding: 0 1; }
    #ack-message { margin: 1 0; width: 100%; }
    #ack-consequence { margin: 0 0 1 0; width: 100%; text-style: bold; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_recording", "start/stop"),
        Binding("n", "command('next')", "next"),
        Binding("r", "command('rerecord')", "re-record"),
        Binding("d", "command('discard')", "discard"),
        Binding("s", "command('success')", "success"),
        Binding("f", "command('failure')", "failure"),
        Binding("p", "command('pause')", "pause"),
        Binding("e", "command('estop')", "E-STOP", priority=True),  # on every screen: a dialog must not swallow it
        Binding("c", "next_camera", "camera"),
        Binding("right_square_bracket", "command('jog_next')", "jog: next joint"),
        Binding("plus,equals_sign", "command('jog_up')", "jog +"),
        Binding("minus", "command('jog_down')", "jog -"),
        Binding("q", "request_quit", "quit"),
        Binding("ctrl+c", "request_quit", "quit", show=False, priority=True),
        # Textual's own ctrl+q left at once, asking nothing: the recording went on without a view.
        Binding("ctrl+q", "request_quit", "quit", show=False, priority=True),
    ]
    # Its palette (ctrl+p) focuses a text box, which takes printable keys from every
    # binding, `e` (E-STOP) included: typed into the search, sent nowhere.
    ENABLE_COMMAND_PALETTE = False

    status: reactive[RecorderStatus | None] = reactive(None, always_update=True, init=False)
    connected: reactive[bool] = reactive(True, init=False)
    camera_index: reactive[int] = reactive(0, init=False)

    def __init__(
        self,
        source: Iterable[RecorderStatus],
        send: CommandSink | None = None,
        *,
        monitor: bool = False,
        exit_when_source_ends: bool = False,
        read_only_reason: str = "",
        refresh_hz: float = 10.0,
    ) -> None:
        """`send=None` makes the dashboard read-only; `monitor=True` means quitting may
        detach the dashboard without stopping the recorder (a separate process)."""
        super().__init__()
        self.source = source
        self.send = send
        self.monitor = monitor
        self.exit_when_source_ends = exit_when_source_ends
        self.refresh_hz = max(refresh_hz, 0.1)
        self.read_only_reason = read_only_reason or (
            "read-only monitor: attach with `platform monitor --control` to send commands")
        self._quitting = False
        self._disconnect_reason = ""  # why the source ended, if it broke
        self._last_status_message = ""
        self._logged_errors: set[str] = set()
        self._thumbnail_key: tuple[str, int, Thumbnail | None] | None = None
        self._shown: dict[str, Text] = {}  # what each panel shows now, to skip repaints
        self._acknowledging = False  # a fault is on screen, waiting for the operator
        self._source_over = False
        self._age = StatusAge()  # STALE after a while without a status

    # -- layout ------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        """The widgets: summary; joints (in a box that scrolls: arrow, page, Home and End keys,
        the wheel; it has the focus) and episodes (left); thumbnail, cameras, loop and writer
        (right; the column scrolls); message line and keys line (docked below, with the
        summary docked above: on screen at any size). The panels whose text is cut to their
        width are FittedPanels: drawn again when their width changes; the episodes' list is
        also cut to its rows, the newest kept."""
        yield FittedPanel(render.summary(None, True, self.control), id="summary")
        with Horizontal(id="body"):
            with Vertical(id="left"):
                with ScrollBox(id="joints-box", classes="panel"):
                    yield FittedPanel("", id="joints")
                yield FittedPanel("", id="episodes", classes="panel")
            with Vertical(id="right"):
                yield FittedPanel("", id="thumbnail", classes="panel")
                yield FittedPanel("", id="cameras", classes="panel")
                yield FittedPanel("", id="loop", classes="panel")
                yield FittedPanel("", id="writer", classes="panel")
        with Vertical(id="foot"):
            yield Static("waiting for the recorder's first status…", id="message")
            yield FittedPanel(render.keys_line(), id="keys")

    def on_mount(self) -> None:
        """Title the panels and start reading the source on a worker thread."""
        titles = {"joints-box": "leader vs follower", "episodes": "episodes", "thumbnail": "camera",
                  "cameras": "cameras", "loop": "control loop", "writer": "writer"}
        for widget_id, title in titles.items():
            self.query_one(f"#{widget_id}").border_title = title
        self._read_source()
        self.set_interval(0.5, self._check_stale)

    def _check_stale(self) -> None:
        """Say STALE once the recorder has sent nothing for a while (not after its end).
        A fault too: while it waits for its acknowledgement the recorder republishes it
        (record/fault_hold.py), so a quiet one is a recorder hung there, and its E-STOP key
        may reach nothing that acts on it."""
        status = self.status
        if status is None or self._source_over or status.state is RecorderState.STOPPED:
            return
        if (note := self._age.note("recorder")) is not None:
            self._show_message(note, "bold red")

    # -- the source, on a worker thread ------------------------------------------------

    def _read_source(self) -> None:
        # At most refresh_hz repaints: a repaint is ~10-30 ms of Python on the UI thread,
        # and in `platform record` that thread shares the GIL with the loop.
        start_reading(self, self.source, self._receive, self._source_ended, 1.0 / self.refresh_hz)

    def _receive(self, status: RecorderStatus) -> None:
        if not self.is_running:
            return  # shutting down: the widgets may already be gone
        try:
            fresh_again = self._age.seen(status.age_s)
            self.connected = True
            self.status = status
            if fresh_again:  # its own message back
                self._show_message(status.message)
        except Exception as exc:
            # A bug showing this status: say so and keep the view (the recorder is fine),
            # rather than let it reach the reader thread and pass for a lost recorder.
            self._could_not_show(exc)

    def _could_not_show(self, exc: Exception) -> None:
        """Say on the message line that a status could not be shown (logged once an error)."""
        if str(exc) not in self._logged_errors:  # once per distinct error, not 10 Hz
            self._logged_errors.add(str(exc))
            log.error("dashboard: could not show a status", exc_info=exc)
        with contextlib.suppress(Exception):
            self._show_message(f"dashboard error: {exc} (the recording is not affected)", "bold red")

    def _source_ended(self, error: str) -> None:
        self._disconnect_reason = error
        self._source_over = True
        self.connected = False
        if self.exit_when_source_ends and not self._acknowledging:
            self.exit()  # after a fault, only once the operator acknowledged it

    def on_unmount(self) -> None:
        """Close the source, if it has `close()`, so a worker blocked reading it wakes up;
        a failure is logged, not raised."""
        close_source(self.source)

    # -- live values -------------------------------------------------------------------

    @property
    def control(self) -> bool:
        """Whether keys send commands: a sink was given and the recorder allows it."""
        status = self.status
        return self.send is not None and (status is None or status.control_allowed)

    def watch_status(self, status: RecorderStatus | None) -> None:
        """Show a new status in every panel (a FAULT also opens `AcknowledgeScreen`); one
        that arrives while the screen closes is dropped."""
        if status is None:
            return
        with contextlib.suppress(NoMatches):  # a status that arrived while the screen closed
            self._show_status(status)

    def _show_status(self, status: RecorderStatus) -> None:
        self._show_summary()
        self._update("joints", render.joints(status, panel_width=self._width_of("joints")))
        episodes = self.query_one("#episodes", FittedPanel)  # the newest that fit its rows
        self._update("episodes", render.episodes(status, panel_width=episodes.text_width, rows=episodes.text_rows))
        self._update("cameras", panels.cameras(status.cameras, status.loop.target_hz,
                                               paused=status.state is RecorderState.PAUSED,
                                               panel_width=self._width_of("cameras")))
        self._update("loop", panels.loop(status.loop, panel_width=self._width_of("loop")))
        self._update("writer", render.writer(status, panel_width=self._width_of("writer")))
        self._update("keys", render.keys_line(status.jog_joints, panel_width=self._width_of("keys")))
        self._show_thumbnail()
        if status.message and status.message != self._last_status_message:
            # Shown when it changes, so a key's feedback is not overwritten at 20 Hz.
            self._show_message(status.message, "bold red" if status.state is RecorderState.FAULT else "")
        self._last_status_message = status.message
        if status.state is RecorderState.FAULT and not self._acknowledging:
            self._acknowledging = True
            title = "E-STOP" if status.message.startswith("E-STOP") else "FAULT: the recording stopped"
            # The recorder's own dashboard: acknowledging ends the recorder, which puts the
            # robot away (torque off); a monitor's only closes its dialog.
            consequence = ("Acknowledging ends the recorder: torque goes off. Support the arms first."
                           if self.exit_when_source_ends else "Acknowledging closes this dialog only.")
            self.push_screen(AcknowledgeScreen(title, status.message, consequence), self._acknowledged)

    def _acknowledged(self, _answer: None) -> None:
        self._show_message(f"acknowledged: {self.status.message if self.status else ''}", "bold red")
        # The recorder's own dashboard: a fault ended the session, whose feed stays open
        # until this acknowledgement (its E-STOP still acts meanwhile).
        ended = self._source_over or (self.status is not None and self.status.state is RecorderState.FAULT)
        if ended and self.exit_when_source_ends:
            self.exit()

    def watch_connected(self, connected: bool) -> None:
        """Refresh the summary; when the source has ended, say how: the recorder stopped,
        ended on a fault, or disconnected (with the error, if the source broke). Nothing
        when the screen is closing (the source ended as the app left)."""
        with contextlib.suppress(NoMatches):
            self._show_summary()
            if not connected:
                reason = f" ({self._disconnect_reason})" if self._disconnect_reason else ""
                tail = "" if self.exit_when_source_ends else "; press q to leave"
                if self.status is not None and self.status.state is RecorderState.STOPPED and not reason:
                    self._show_message(f"recorder stopped{tail}", "bold")
                elif self.status is not None and self.status.state is RecorderState.FAULT:
                    self._show_message(f"recorder ended on a fault: {self.status.message}{tail}", "bold red")
                else:
                    self._show_message(f"recorder disconnected{reason}{tail}", "bold yellow")

    def on_resize(self, event: Resize) -> None:
        """Compact layout under 110x36 (no thumbnail, joints scroll); the columns stacked
        under NARROW_BELOW columns; no episodes' list under SHORT_BELOW rows. The panels are
        drawn again at their new widths when the layout has given them
        (on_fitted_panel_resized): here, before it, they still have their old ones."""
        width, height = event.size
        self.set_class(width < 110 or height < 36, "-compact")
        self.set_class(width < NARROW_BELOW, "-narrow")
        self.set_class(height < SHORT_BELOW, "-short")

    def on_fitted_panel_resized(self, _message: FittedPanel.Resized) -> None:
        """Cut the panels' text again to the width a panel has now (the joints' bars come and
        go with it); a status that cannot be shown says so, as when it came, rather than
        end the app."""
        if self.status is None:
            return
        try:
            with contextlib.suppress(NoMatches):  # the screen is closing
                self._show_status(self.status)
        except Exception as exc:
            self._could_not_show(exc)

    def _width_of(self, widget_id: str) -> int | None:
        """The cells a fitted panel has for its text; None before the first layout (no limit)."""
        return self.query_one(f"#{widget_id}", FittedPanel).text_width

    def watch_camera_index(self, _index: int) -> None:
        """Show the thumbnail of the newly chosen camera."""
        self._show_thumbnail()

    def _update(self, widget_id: str, content: Text) -> None:
        """Repaint a panel only if its text changed; re-layout only if its height may have:
        another line count, or another length (a line that wraps, as the keys line does
        when the jog keys join it, grows by rows without a newline).

        Textual's layout pass is most of the cost of an update (~tens of ms): skipping it
        keeps the dashboard cheap on the robot's computer, beside the control loop.
        """
        previous = self._shown.get(widget_id)
        if previous is not None and previous == content:
            return
        self._shown[widget_id] = content
        same_height = (previous is not None and previous.plain.count("\n") == content.plain.count("\n")
                       and previous.cell_len == content.cell_len)
        self.query_one(f"#{widget_id}", Static).update(content, layout=not same_height)

    def _show_summary(self) -> None:
        self._update("summary", render.summary(self.status, self.connected, self.control,
                                               panel_width=self._width_of("summary")))

    def _show_thumbnail(self) -> None:
        widget = self.query_one("#thumbnail", FittedPanel)
        thumbnails = self.status.thumbnails if self.status else {}
        width = max(8, widget.text_width or 48)
        roles = sorted(thumbnails)
        role = roles[self.camera_index % len(roles)] if roles else ""
        key = (role, width, thumbnails.get(role))
        if key == self._thumbnail_key:
            return  # same pixels: skip building ~400 styled cells
        self._thumbnail_key = key
        title, picture = panels.thumbnail(thumbnails, self.camera_index, max_width=width)
        widget.border_title = title
        self._update("thumbnail", picture)

    def _show_message(self, message: str, style: str = "") -> None:
        self._update("message", Text(message, style=style))

    # -- keys --------------------------------------------------------------------------

    def _send(self, command: Command) -> bool:
        if not self.control:
            self._show_message(self.read_only_reason, "bold yellow")
            self.notify(self.read_only_reason, severity="warning", timeout=3)
            return False
        if not self.connected:
            self._show_message(f"recorder disconnected: '{command.value}' not sent", "bold yellow")
            return False
        try:
            # With the state on screen: the recorder refuses the key if it has moved on to a
            # state where the key means something else (keys.overtaken).
            shown = self.status
            self.send(Request(command, shown.state.value if shown else None,  # type: ignore[misc]
                              shown.episode if shown else None))
        except Exception as exc:  # a dead recorder or socket: say so, keep the dashboard
            self._show_message(f"could not send '{command.value}': {exc}", "bold red")
            return False
        state = self.status.state if self.status else None
        effect = keys.effect(command, state) if state in keys.STATES else None
        answer = f"{keys.KEY[command]}: {effect}" if effect else f"sent: {command.value}"
        self._show_message(answer, "green" if command is not Command.ESTOP else "bold red")
        return True

    def _ignored(self, command: Command) -> bool:
        """Says so, and sends nothing, if `command` has no meaning in the shown state (the
        recorder checks again: the state may have moved on since)."""
        if self.status is None or command is Command.ESTOP:
            return False  # before the first status, or an e-stop: always send
        state = self.status.state
        if state in keys.STATES and keys.effect(command, state) is not None:
            return False
        self._show_message(keys.ignored(command, state), "bold yellow")
        return True

    def action_command(self, name: str) -> None:
        """Send the `Command` whose value is `name`, unless it means nothing in the shown state."""
        command = Command(name)
        if not self._ignored(command):
            self._send(command)

    def action_toggle_recording(self) -> None:
        """Space: STOP while recording, START otherwise (unless it means nothing in the shown
        state)."""
        recording = self.status is not None and self.status.state is RecorderState.RECORDING
        command = Command.STOP if recording else Command.START
        if not self._ignored(command):
            self._send(command)

    def action_next_camera(self) -> None:
        """Show the next camera role's thumbnail (wraps around)."""
        self.camera_index += 1

    def action_request_quit(self) -> None:
        """q / ctrl+c / ctrl+q: leave at once when read-only or disconnected; otherwise ask
        (`QuitScreen`) whether to stop the recorder or, for a monitor, only detach. On a
        fault's dialog ctrl+c acknowledges it, as the dialog says."""
        if self._quitting:
            return
        if isinstance(self.screen, AcknowledgeScreen):  # ctrl+c is the dialog's acknowledge
            self.screen.action_acknowledge()  # (the App's priority binding reached it first)
            return
        if not self.control or not self.connected:
            self.exit()  # a read-only or orphaned view stops nothing by leaving
            return
        choices = [("quit", "Stop the recorder (y)", "error")]
        question = "Stop recording and quit? The recorder saves what it has and closes the store."
        status = self.status
        on_robot = status is not None and not status.loop.simulated  # its arms go limp when it stops
        if status is not None and status.state is RecorderState.DONE:
            choices = [("quit", "End the session (y)", "error")]
            question = ("Every episode is recorded. End the session? Torque goes off: "
                        "the follower must be at rest or held.")
        elif on_robot:
            question += " Torque goes off: support the follower first."
        if self.monitor:
            choices.append(("detach", "Detach this monitor", "default"))
            question = "Stop the recorder, or only detach this monitor (the recording goes on)?" + (
                " Stopping it turns torque off: support the follower first." if on_robot else "")
        self._quitting = True
        self.push_screen(QuitScreen(question, choices), self._quit_answered)

    def _quit_answered(self, answer: str | None) -> None:
        self._quitting = False
        if answer == "quit" and self._send(Command.QUIT):
            self._show_message("stopping: the recorder saves what it has, then "
                               + ("disconnects" if self.monitor else "exits"), "bold yellow")
        elif answer == "detach":
            self.exit()

    def request_exit(self) -> None:
        """Thread-safe: end the App from another thread (e.g. the control loop's)."""
        if self._thread_id == threading.get_ident():
            self.exit()
            return
        with contextlib.suppress(RuntimeError, asyncio.CancelledError):
            self.call_from_thread(self.exit)  # RuntimeError: not running, nothing to stop
