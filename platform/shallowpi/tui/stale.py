"""When a dashboard's source goes quiet: a loop that hangs (a blocked servo read, a process
suspended with Ctrl-Z) keeps its socket open, so the view stays "connected" on its last
status. Both dashboards say so once no status has come for STALE_AFTER_S."""

from __future__ import annotations

import time

STALE_AFTER_S = 2.0  # statuses come at the dashboard's refresh rate (10 Hz) while a loop runs


def stale_note(what: str, age_s: float) -> str | None:
    """The message line for a source `age_s` seconds quiet, or None while it is fresh.
    `what` names it ("recorder", "executor")."""
    if age_s <= STALE_AFTER_S:
        return None
    return (f"STALE: no status from the {what} for {age_s:.0f} s (its loop may be stuck); what is shown "
            f"is its last status; the keys, E-STOP first, still go out")


class StatusAge:
    """How long a dashboard's source has been quiet, and whether it was said to be stale."""

    def __init__(self) -> None:
        self._at = time.monotonic()
        self._said = False

    def seen(self, age_s: float = 0.0) -> bool:
        """A status came, published `age_s` seconds before it was sent (a newcomer is sent
        the newest status, however old). True when the view had been told it was stale and
        this one is fresh: its own message goes back on the message line."""
        self._at = time.monotonic() - max(0.0, age_s)
        if age_s > STALE_AFTER_S:
            return False  # still stale: the next check says so
        said, self._said = self._said, False
        return said

    def note(self, what: str) -> str | None:
        """`stale_note` for the time since the last status (None while fresh); once it is
        given, the next `seen()` says to put the source's own message back."""
        note = stale_note(what, time.monotonic() - self._at)
        self._said = self._said or note is not None
        return note
