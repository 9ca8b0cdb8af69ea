"""The executor's live dashboard: shows an ExecutorStatus stream; `e` sends an e-stop.

Same contract as the recorder's (tui/recorder_dashboard.py): a status source that blocks
until the next status and ends when the executor goes away, read on a worker thread and
handed to the UI thread; a command sink or None (read-only). The loop panel is shared
(tui/panels.py); the executor's own panels are in executor_render.py. `platform monitor`
shows it for "executor" publishers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.css.query import NoMatches
from textual.events import Resize
from textual.reactive import reactive
from textual.widgets import Footer, Static

from shallowpi.telemetry.executor_status import ExecutorStatus
from shallowpi.telemetry.status import Command, Request
from shallowpi.tui import executor_render as render
from shallowpi.tui import panels
from shallowpi.tui.fitted import FittedPanel, ScrollBox
from shallowpi.tui.stale import StatusAge
from shallowpi.tui.status_feed import close_source, start_reading

log = logging.getLogger(__name__)

RIGHT_MIN_WIDTH = 34  # the right column's cells (its CSS min-width): the inference's p50/p99 line
# Side by side only from here (63 columns): a joint's row at its narrowest (an 8-cell name,
# narrower ones may read alike: panels.short_names; command and error) in its box (border,
# padding, scroll gutter: 5 cells) beside the right column.
NARROW_BELOW = render.NAME_MIN + render.NUMBERS_WIDTH_NARROW + 5 + RIGHT_MIN_WIDTH
SHORT_BELOW = 16  # rows: under this the summary keeps no blank row


class ExecutorDashboard(App[None]):
    """Live view of an executor; `e` sends E-STOP and `s` STOP (unless read-only). `q` in the
    dashboard `platform deploy` opened (monitor=False) stops the executor and leaves when it
    has stopped: the robot must not go on with no view and no keys; in `platform monitor`
    (monitor=True) it only detaches."""

    TITLE = "Shallow-π executor"
    CSS = """
    /* Docked, whatever the terminal's size: the summary (the state) at the top; the
       executor's message (faults, STALE), the answer to the last key and the keys (E-STOP,
       quit) at the bottom. The body has what they leave: it gives way, they are never
       scrolled off or covered. The summary: 3 rows, or more where a line wraps (a
       WATCH-ONLY badge at 80 columns), not cut; at most half the rows. */
    #summary { dock: top; width: 100%; height: auto; min-height: 3; max-height: 50%;
               padding: 0 1; background: $boost; }
    #foot { dock: bottom; width: 100%; height: auto; }
    #foot Footer { dock: none; }
    #body { height: 1fr; }
    #left { width: 3fr; }
    .panel { border: round $primary-darken-2; padding: 0 1; height: auto; }
    /* A joint a row, scrolling within the body where the robot has more joints than the
       terminal has rows (the humanoid's 19 at 80x24), so the message line and keys stay:
       the joints' box is a fitted.ScrollBox. The right column's gutter is kept whether or
       not a bar shows, so that its panels' width does not change with the bar. */
    #right { width: 2fr; min-width: 34; overflow-y: auto;  /* RIGHT_MIN_WIDTH */
             scrollbar-gutter: stable; scrollbar-size-vertical: 1; scrollbar-size-horizontal: 0; }
    /* A fault's or STALE's words on a second row where one does not hold them (40 columns). */
    #message { height: auto; min-height: 1; max-height: 2; padding: 0 1; background: $panel; }
    #feedback { height: 1; padding: 0 1; background: $panel; }
    /* Narrow terminals (a tmux side split; under NARROW_BELOW columns a joint's row and the
       right column's 34 cells do not both fit): the columns stack, the joints first, and
       the body scrolls (the wheel). Side by side the right column covered the joints. */
    .-narrow #body { layout: vertical; overflow-x: hidden; overflow-y: auto; }
    .-narrow #left, .-narrow #right { width: 100%; min-width: 0; height: auto; overflow-y: hidden; }
    .-narrow #right { scrollbar-gutter: auto; }
    .-narrow #joints-box { max-height: 50vh; }
    /* Short terminals (a top/bottom split; under SHORT_BELOW rows): the summary's blank third
       row goes to the body. The inference and the loop, the least vital, are at the foot of
       their column, which scrolls: they give way first, the safety counts stay. */
    .-short #summary { min-height: 0; }
    """
    # One `q`, two meanings: check_action shows the one that applies (the deploy's own
    # dashboard stops the robot it leaves; a monitor only detaches).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "estop", "E-STOP", priority=True),  # on every screen: a dialog must not swallow it
        Binding("s", "stop", "stop"),
        Binding("q", "stop_and_quit", "stop + quit"),
        Binding("q", "quit", "detach"),
        # Ctrl-C reaches a raw-mode app as a key: the same as q, as SIGINT would be without it
        Binding("ctrl+c", "stop_and_quit", "stop + quit", show=False, priority=True),
        Binding("ctrl+c", "quit", "detach", show=False, priority=True),
    ]
    # Its palette (ctrl+p) focuses a text box, which takes printable keys from every
    # binding, `e` (E-STOP) included: typed into the search, sent nowhere.
    ENABLE_COMMAND_PALETTE = False

    status: reactive[ExecutorStatus | None] = reactive(None, always_update=True, init=False)
    connected: reactive[bool] = reactive(True, init=False)

    def __init__(self, source: Iterable[ExecutorStatus], send: Callable[[Request], None] | None = None, *,
                 monitor: bool = False, exit_when_source_ends: bool = False, read_only_reason: str = "") -> None:
        super().__init__()
        self.source, self.send = source, send
        self.monitor, self.exit_when_source_ends = monitor, exit_when_source_ends
        self.read_only_reason = read_only_reason or "read-only: attach with `platform monitor --control`"
        self._disconnect_reason = ""  # why the status source ended, when it failed
        self._stopping = False  # `q` sent STOP; a second `q` leaves at once
        self._age = StatusAge()  # STALE after a while without a status
        self._shown_message: str | None = None  # the executor's message on screen now
        self._logged_errors: set[str] = set()

    def compose(self) -> ComposeResult:
        """The widgets: summary; joints (left, in a box that scrolls: arrow and page keys, the
        wheel); safety, inference and loop (right, safety first: on a small terminal the
        column scrolls and its foot goes off screen; under the joints where the columns
        stack); the executor's message line; the answer to the last key (kept until the
        next key: the executor's own messages, a countdown among them, would overwrite it);
        footer. The summary is docked above, the last three below: on screen at any size."""
        yield Static(render.summary(None, True), id="summary")
        with Horizontal(id="body"):
            with Vertical(id="left"), ScrollBox(id="joints-box", classes="panel"):
                yield FittedPanel("", id="joints")
            with Vertical(id="right"):
                yield Static("", id="safety", classes="panel")
                yield FittedPanel("", id="inference", classes="panel")
                yield FittedPanel("", id="loop", classes="panel")
        with Vertical(id="foot"):
            yield Static("waiting for the executor's first status…", id="message")
            yield Static("", id="feedback")
            yield Footer()

    def on_mount(self) -> None:
        """Title the panels and start reading the source on a worker thread."""
        for widget_id, title in (("joints-box", "commanded vs measured"), ("inference", "inference"),
                                 ("loop", "control loop"), ("safety", "safety")):
            self.query_one(f"#{widget_id}").border_title = title
        self._read_source()
        self.set_interval(0.5, self._check_stale)

    def _check_stale(self) -> None:
        """Say STALE once the executor has sent nothing for a while: not while it warms up
        (an engine build takes minutes, no status meanwhile) nor after its end. A fault
        too: its hold publishes on (commands/deploy_holds.py), so a quiet one is a hung
        executor, and its E-STOP key may reach nothing that acts on it."""
        status = self.status
        if status is None or not self.connected or status.state.value in ("warming", "stopped", "done"):
            return
        if (note := self._age.note("executor")) is not None:
            self._set("message", Text(note, style="bold red"))

    def _read_source(self) -> None:
        start_reading(self, self.source, self._receive, self._source_ended)

    def _receive(self, status: ExecutorStatus) -> None:
        if not self.is_running:
            return
        try:
            if self._age.seen(status.age_s):  # it had been said STALE: its own message goes back
                self._shown_message = None
            self.connected = True
            self.status = status
        except Exception as exc:
            # A bug showing this status: say so and keep the view (the executor is fine),
            # rather than let it reach the reader thread and pass for a lost executor.
            self._could_not_show(exc)

    def _could_not_show(self, exc: Exception) -> None:
        """Say on the message line that a status could not be shown (logged once an error)."""
        if str(exc) not in self._logged_errors:  # once per distinct error, not 10 Hz
            self._logged_errors.add(str(exc))
            log.error("dashboard: could not show a status", exc_info=exc)
        with contextlib.suppress(Exception):
            self._set("message", Text(f"dashboard error: {exc} (the executor is not affected)", style="bold red"))

    def _source_ended(self, error: str = "") -> None:
        self._disconnect_reason = error
        self.connected = False
        if self.exit_when_source_ends:
            self.exit()

    def on_unmount(self) -> None:
        """Close the source, if it has `close()`, so a worker blocked reading it wakes up."""
        close_source(self.source)

    @property
    def control(self) -> bool:
        """Whether keys reach the executor: a sink was given and the executor allows it."""
        return self.send is not None and (self.status is None or self.status.control_allowed)

    def watch_status(self, status: ExecutorStatus | None) -> None:
        """Show a new status in every panel, and its message when it changed (an empty one
        clears the line: an episode's start ends the reset's countdown line)."""
        if status is None:
            return
        with contextlib.suppress(NoMatches):
            self._set("summary", render.summary(status, self.connected, self.control))
            self._set("joints", render.joints(status, panel_width=self._width_of("joints")))
            self._set("inference", render.inference(status, panel_width=self._width_of("inference")))
            self._set("loop", panels.loop(status.loop, panel_width=self._width_of("loop")))
            self._set("safety", render.safety(status))
            if status.message != self._shown_message:
                self._shown_message = status.message
                self._set("message", Text(status.message, style="bold red" if status.state.value == "fault" else ""))

    def watch_connected(self, connected: bool) -> None:
        """When the source has ended, say how: the run finished or stopped, ended on a fault
        (its reason kept on the line), or the executor vanished."""
        if connected:
            return
        with contextlib.suppress(NoMatches):
            self._set("summary", render.summary(self.status, False))
            state = self.status.state.value if self.status is not None else ""
            last = self.status.message if self.status is not None else ""
            reason = f" ({self._disconnect_reason})" if self._disconnect_reason else ""
            if state == "fault" and not reason:
                self._set("message", Text(f"executor ended on a fault: {last}; press q to leave", style="bold red"))
            elif state in ("done", "stopped") and not reason:
                ended = f"executor {'finished' if state == 'done' else 'stopped'}" + (f": {last}" if last else "")
                self._set("message", Text(f"{ended}; press q to leave", style="bold"))
            else:
                self._set("message", Text(f"executor disconnected{reason}; press q to leave", style="bold yellow"))

    def on_resize(self, event: Resize) -> None:
        """The columns stacked under NARROW_BELOW columns; no blank summary row under
        SHORT_BELOW rows. The panels are cut to their new widths once the layout has given
        them (on_fitted_panel_resized)."""
        width, height = event.size
        self.set_class(width < NARROW_BELOW, "-narrow")
        self.set_class(height < SHORT_BELOW, "-short")

    def on_fitted_panel_resized(self, _message: FittedPanel.Resized) -> None:
        """Cut the panels' text again to the width a panel has now (a status that cannot be
        shown says so, as when it came, rather than end the app)."""
        try:
            self.watch_status(self.status)
        except Exception as exc:
            self._could_not_show(exc)

    def _width_of(self, widget_id: str) -> int | None:
        """The cells a panel has for its text; None before the first layout (no limit)."""
        return self.query_one(f"#{widget_id}", FittedPanel).text_width

    def _set(self, widget_id: str, content: Text) -> None:
        self.query_one(f"#{widget_id}", Static).update(content)

    def _send(self, command: Command) -> bool:
        """Send a command; False (and the feedback line says why) when read-only or it failed."""
        if not self.control:
            self._set("feedback", Text(f"{command.value} NOT SENT: {self.read_only_reason}", style="bold yellow"))
            return False
        try:
            self.send(Request(command, self.status.state.value if self.status else None))  # type: ignore[misc]
        except Exception as exc:
            self._set("feedback", Text(f"could not send '{command.value}': {exc}", style="bold red"))
            return False
        self._set("feedback", Text(f"sent: {command.value}", style="bold red" if command is Command.ESTOP else "green"))
        return True

    def action_estop(self) -> None:
        """`e`: send E-STOP (refused, with a message, when read-only)."""
        self._send(Command.ESTOP)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """`q` is stop_and_quit in the deploy's own dashboard, quit (detach) in a monitor."""
        if action == "stop_and_quit":
            return not self.monitor
        if action == "quit":
            return self.monitor
        return True

    def action_stop_and_quit(self) -> None:
        """`q` in the deploy's own dashboard: send STOP and leave when the executor has
        stopped (its stream ends); leave at once when read-only, disconnected, or on a
        second `q`. The deploy stops the executor whenever its dashboard exits early
        (commands/deploy_cmd.py), so no path leaves the robot running without a view."""
        can_stop = self.control and self.connected
        if not can_stop or self._stopping:
            self.exit()
            return
        self._stopping = True  # a second `q` leaves, whether or not this one got through
        if not self._send(Command.STOP):
            return  # the feedback line says why
        self.exit_when_source_ends = True
        self._set("feedback", Text("stopping: the executor holds the robot, then exits (q again: leave now)",
                                   style="bold yellow"))

    def action_stop(self) -> None:
        """`s`: send STOP (refused, with a message, when read-only)."""
        self._send(Command.STOP)
