"""Commands as the tests compare them: without the state each was sent for (the tests of
that state read `publisher.commands()` and the sink's `Request`s themselves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shallowpi.telemetry.status import Command, Request


def commands_of(publisher: Any) -> list[Command]:
    """The commands `publisher` received since the last call, oldest first."""
    return [request.command for request in publisher.commands()]


def sent_commands(sent: list[Command]) -> Callable[[Request], None]:
    """A dashboard's command sink that appends each request's command to `sent`."""
    return lambda request: sent.append(request.command)
