"""A one-slot, latest-wins status handoff between two threads of one process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Generic, TypeVar

DEFAULT_MAX_HZ = 20.0
StatusT = TypeVar("StatusT")


class StatusMailbox(Generic[StatusT]):
    """A one-slot, latest-wins status handoff to a reader in the same process.

    `publish()` never blocks on the reader; iterating blocks until a status newer than the
    last one read arrives (at most `max_hz` a second) and ends after `close()`, once the
    last status published before it was read (a final fault must reach the screen).
    """

    def __init__(self, max_hz: float = DEFAULT_MAX_HZ) -> None:
        self.min_interval_s = 1.0 / max_hz if max_hz > 0 else 0.0
        self._cond = threading.Condition()
        self._status: StatusT | None = None
        self._fresh = False
        self._closed = False
        self._last_read = 0.0

    def publish(self, status: StatusT) -> None:
        """Replace the slot's status (an unread one is dropped) and wake the reader.

        Stores the object itself, not a copy: pass a snapshot the publisher will not mutate.
        """
        # The lock is only ever held for a few assignments, never across I/O.
        with self._cond:
            if self._closed:
                return  # the reader is gone or going: nothing after close is delivered
            self._status, self._fresh = status, True
            self._cond.notify_all()

    def close(self) -> None:
        """End iteration: a reader waiting in `__next__` gets StopIteration; idempotent."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True once `close()` has been called."""
        return self._closed

    def __iter__(self) -> Iterator[StatusT]:
        return self

    def __next__(self) -> StatusT:
        wait = self._last_read + self.min_interval_s - time.monotonic()
        if wait > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=wait)
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._closed)
            if not self._fresh:  # closed; the status published last before close still goes out
                raise StopIteration
            self._fresh = False
            self._last_read = time.monotonic()
            assert self._status is not None  # _fresh is only set together with a status
            return self._status
