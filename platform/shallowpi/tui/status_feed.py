"""A dashboard's status source, read on a worker thread and handed to the UI thread.

Both dashboards (recorder, executor) read an iterable of statuses (a telemetry
subscription or an in-process mailbox) that blocks between statuses, so they read it on a
Textual worker thread and pass each status to the app's own thread. A source that raises
ends the feed like one that runs out, with the error's one-line text, so the dashboard can
say why it lost its feed instead of going down with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from textual.app import App

log = logging.getLogger(__name__)


def pump_statuses(app: App, source: Iterable[Any], receive: Callable[[Any], None],
                  ended: Callable[[str], None], min_interval_s: float = 0.0) -> None:
    """On a worker thread: `receive(status)` on the app's thread for each status of `source`,
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
    _deliver(app, ended, error)


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
    try:
        app.call_from_thread(callback, *args)
        return True
    except (RuntimeError, asyncio.CancelledError):
        return False  # the app stopped between two statuses
