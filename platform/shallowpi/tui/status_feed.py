"""A dashboard's status source, read on a worker thread and handed to the UI thread.

Both dashboards (recorder, executor) read an iterable of statuses (a telemetry
subscription or an in-process mailbox) that blocks between statuses, so they read it on a
thread of its own (`start_reading`) and pass each status to the app's own thread. A source that raises
ends the feed like one that runs out, with the error's one-line text, so the dashboard can
say why it lost its feed instead of going down with it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual import events
from textual.app import App

log = logging.getLogger(__name__)


def start_reading(app: App, source: Iterable[Any], receive: Callable[[Any], None],
                  ended: Callable[[str], None], min_interval_s: float = 0.0) -> threading.Thread:
    """`pump_statuses` on a daemon thread, "telemetry reader", started now; returns it.

    Not a Textual thread worker: those run in asyncio's default executor, whose threads the
    interpreter joins at exit. A SIGTERM (KeyboardInterrupt, raised wherever the loop was)
    can end the app's loop with the reader waiting on it: `platform monitor` gave the
    terminal back, then never exited (2 runs in 13). A daemon thread is not joined."""
    reader = threading.Thread(target=pump_statuses, args=(app, source, receive, ended, min_interval_s),
                              name="telemetry reader", daemon=True)
    reader.start()
    return reader


def pump_statuses(app: App, source: Iterable[Any], receive: Callable[[Any], None],
                  ended: Callable[[str], None], min_interval_s: float = 0.0) -> None:
    """On a reader thread: `receive(status)` on the app's thread for each status of `source`,
    at most one every `min_interval_s` (latest-wins sources skip the stale ones meanwhile),
    then `ended(error)`: "" when the source ran out, "Type: message" when it raised. Returns
    early, calling neither, once the app has stopped."""
    error = ""
    shown_at = 0.0
    try:
        for status in source:
            wait = shown_at + min_interval_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            shown_at = time.monotonic()
            if not _deliver(app, receive, status):
                return  # the app is shutting down
    except Exception as exc:  # a broken source must not take the dashboard down
        log.warning("dashboard: status source failed", exc_info=True)
        error = f"{type(exc).__name__}: {exc}"
    try:
        _deliver(app, ended, error)
    except Exception:  # a thread's traceback on the terminal would tear the screen
        log.warning("dashboard: could not show the end of the source", exc_info=True)


def close_source(source: Any) -> None:
    """Call `source.close()` if it has one, so a worker blocked reading it wakes up; a
    failure is logged, not raised."""
    close = getattr(source, "close", None)
    if callable(close):
        try:
            close()
        except Exception:
            log.debug("dashboard: closing the source failed", exc_info=True)


def _deliver(app: App, callback: Callable[..., Any], *args: Any) -> bool:
    """Run `callback(*args)` on the app's thread and wait until it ran; False, not run, once
    the app has stopped; `callback`'s exception is raised here.

    Not `call_from_thread`: it waits without a limit for a coroutine on the app's loop, and
    a loop that a SIGTERM ended (KeyboardInterrupt, at any point) never runs it; a loop
    closed meanwhile left that coroutine "never awaited", a warning on the terminal. A
    posted Callback event is only a queued message (post_message is thread-safe)."""
    ran = threading.Event()
    failure: list[Exception] = []

    def run() -> None:
        try:
            callback(*args)
        except Exception as exc:  # handed back to the reader, as call_from_thread did
            failure.append(exc)
        finally:
            ran.set()

    try:
        if not app.post_message(events.Callback(callback=run)):
            return False  # the app is closing
    except RuntimeError:  # its loop is closed
        return False
    while not ran.wait(0.1):
        if not app.is_running:
            return False
    if failure:
        raise failure[0]
    return True
