"""Whether a standard stream is a terminal, and whether rich can draw live on it.

A command started with a closed stream (`<&-`, `>&-`, as some supervisors and daemon
wrappers start them) finds `sys.stdin`/`sys.stdout`/`sys.stderr` None; a stream closed
later raises ValueError from `isatty()`. Either way it is no terminal: the command runs
as it would piped, instead of dying on an AttributeError after it made its store or
connected its robot.

A full-screen dashboard needs more than a terminal on stdout (`why_no_dashboard`): its keys
come from stdin, Textual draws on stderr, and a process in the background of its terminal
(`platform record ... &`) is stopped by the kernel the moment it reads the terminal or
changes its modes.
"""

from __future__ import annotations

import os
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


def in_background(stream: Any) -> bool:
    """True when `stream` is this process's controlling terminal and another process group
    is its foreground (`cmd &`, or Ctrl-Z then `bg`): reading it stops this process
    (SIGTTIN), and so does changing its modes (SIGTTOU), as raw mode and a screen reset do.
    False for no terminal, and for a terminal that is not this process's controlling one
    (no job control applies there). `stream`: a file object, an fd, or None."""
    if stream is None:
        return False
    try:
        fd = stream if isinstance(stream, int) else stream.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) != os.getpgrp()
    except (AttributeError, ValueError, OSError):  # no fd, closed, or ENOTTY: not our controlling terminal
        return False


def why_no_dashboard(stdin: Any, stdout: Any, stderr: Any = None, *, draws_on_stderr: bool = False) -> str | None:
    """None when a full-screen dashboard can take the terminal: `stdin` (its keys) and
    `stdout` are terminals this process has in the foreground, and so is `stderr` when the
    dashboard `draws_on_stderr` (Textual does: one run in this process needs it; a child can
    be given the terminal as its stderr instead). Otherwise why not, in words, for the caller
    to say once before its plain lines; '' when nothing needs saying (stdout is no terminal:
    a pipe or a file wants the lines)."""
    if not is_terminal(stdout):
        return ""
    if not is_terminal(stdin):
        return "stdin is not a terminal (the dashboard reads its keys there)"
    if in_background(stdin) or in_background(stdout):
        # Drawn from there, the dashboard would be stopped by the kernel at once (SIGTTOU)
        # and the run would go on with nothing on the screen and its log lines held.
        return "this process is in the background of its terminal (started with &?)"
    if draws_on_stderr and not is_terminal(stderr):
        return "stderr is not a terminal (2> a file?), and the dashboard draws there"
    return None
