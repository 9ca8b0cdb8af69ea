"""Two makers of one thing at once, in a set order: the first stops half done while the
second runs (threads of one process: `flock`s on separately opened files exclude each
other as two processes' do)."""

from __future__ import annotations

import threading

import pytest


def pause_first(monkeypatch: pytest.MonkeyPatch, owner: object, name: str, meanwhile_s: float = 1.0,
                before: bool = False) -> tuple[threading.Event, threading.Event]:
    """Make the first call of `owner.name` (a step of ours that every version of the code
    takes, run for real) stop after it ran (`before`: before it runs), for up to
    `meanwhile_s` seconds or until the second event is set: a second maker then runs while
    the first is half done. Bounded, since a maker that waits for the first one's claim
    cannot set it. Returns (the first call got there, let it go on)."""
    real = getattr(owner, name)
    ran, go_on = threading.Event(), threading.Event()
    calls: list[int] = []

    def paused(*args, **kwargs):
        result = None if before else real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 1:
            ran.set()
            go_on.wait(meanwhile_s)
        return real(*args, **kwargs) if before else result

    monkeypatch.setattr(owner, name, paused)
    return ran, go_on


def run_both(first, second, ran: threading.Event, go_on: threading.Event) -> tuple[object, object]:
    """Run `first` in a thread until it paused (`pause_first`), then `second` here; what
    each returned or raised."""
    results: dict[str, object] = {}

    def run_first() -> None:
        try:
            results["first"] = first()
        except BaseException as exc:  # shown by the test
            results["first"] = exc

    thread = threading.Thread(target=run_first)
    thread.start()
    assert ran.wait(60)
    try:
        results["second"] = second()
    except BaseException as exc:  # shown by the test
        results["second"] = exc
    go_on.set()
    thread.join(60)
    return results["first"], results["second"]
