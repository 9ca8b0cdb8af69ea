"""Whether a standard stream is a terminal, and whether rich can draw live on it.

A command started with a closed stream (`<&-`, `>&-`, as some supervisors and daemon
wrappers start them) finds `sys.stdin`/`sys.stdout`/`sys.stderr` None; a stream closed
later raises ValueError from `isatty()`. Either way it is no terminal: the command runs
as it would piped, instead of dying on an AttributeError after it made its store or
connected its robot.
"""

from __future__ import annotations

from typing import Any


def is_terminal(stream: Any) -> bool:
    """True when `stream` (a file object, or None) is open on a terminal; False for None,
    a closed stream, or an object without `isatty` (a test harness's replacement)."""
    if stream is None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or closed
        return False


def is_interactive(stream: Any) -> bool:
    """True when rich draws a live display (a progress bar that redraws) on `stream`.

    A terminal is not enough: under TERM=dumb or unknown (Emacs' shell, some IDE consoles)
    rich draws nothing until the display stops, so a long job would look hung; callers
    print plain lines there instead. rich's own rule, so FORCE_COLOR, TTY_COMPATIBLE and
    TTY_INTERACTIVE are honoured as rich honours them. False for None or a closed stream."""
    if stream is None:
        return False
    try:
        if getattr(stream, "closed", False):
            return False
    except ValueError:
        return False
    from rich.console import Console  # here: `is_terminal` callers need not import rich

    return bool(Console(file=stream).is_interactive)
