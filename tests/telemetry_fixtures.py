"""Commands as the tests compare them: without the state each was sent for (the tests of
that state read `publisher.commands()` and the sink's `Request`s themselves); and the
dashboards' stale threshold out of the way of tests that drive a view with one status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shallowpi.telemetry.status import Command, Request
from shallowpi.tui import stale


def commands_of(publisher: Any) -> list[Command]:
    """The commands `publisher` received since the last call, oldest first."""
    return [request.command for request in publisher.commands()]


def sent_commands(sent: list[Command]) -> Callable[[Request], None]:
    """A dashboard's command sink that appends each request's command to `sent`."""
    return lambda request: sent.append(request.command)


@pytest.fixture(autouse=True)
def never_stale(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse where imported: a dashboard test drives its view with one status, and its
    keys and looks can outlast STALE_AFTER_S on a loaded machine, when the STALE line
    replaces the message being checked (CI failures of test_dashboard and
    test_dashboard_keys). Tests of staleness itself (named so) keep the real threshold."""
    if "stale" not in request.node.name:
        monkeypatch.setattr(stale, "STALE_AFTER_S", 3600.0)
