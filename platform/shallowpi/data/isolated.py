"""Run a function in a child process, so that a crash in native code ends the child, not
the command.

Video encoders are C libraries: SVT-AV1 dies of SIGFPE on frames narrower than it can
take, and a signal like that kills the whole Python process with no message and no
`finally`. Run in a child, the same crash becomes a one-line `ChildCrashed` in the parent,
whose `finally` blocks then remove what the child left half-written.

The child is spawned (a fresh interpreter, no forked threads or locks) and talks back
through a pipe: progress calls, then its result or its error.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import traceback
from collections.abc import Callable
from typing import Any

from shallowpi.errors import PlatformError

Progress = Callable[[int, int], None]


class ChildCrashed(PlatformError):
    """The child process died of a signal or exited without an answer; `how` says which
    ("crashed (SIGFPE)", "exited with status 1 without an answer")."""

    def __init__(self, what: str, how: str) -> None:
        super().__init__(f"{what} {how}")
        self.how = how


def run_isolated(target: Callable[..., Any], *args: Any, what: str,
                 progress: Progress | None = None) -> Any:
    """`target(*args, progress=...)` in a spawned child process; returns its result.

    `target` must be importable by name (a module-level function) and its arguments and
    result picklable. A `PlatformError` or `OSError` raised in the child is raised here as
    it was; any other exception is a bug and comes back as a RuntimeError carrying the child's
    traceback. `what` names the work for `ChildCrashed` ("the video encoder ..."). Ctrl-C
    reaches the child too (same process group); here it stops the child and re-raises.
    """
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    # Not a daemon: the work may start processes of its own (lerobot's encoders can).
    child = context.Process(target=_child_main, args=(sender, target, args))
    child.start()
    sender.close()  # the child holds the only writing end: EOF here when it exits
    answer: tuple[str, Any] | None = None
    try:
        while answer is None:
            try:
                kind, payload = receiver.recv()
            except EOFError:
                break
            if kind == "progress":
                if progress is not None:
                    progress(*payload)
            else:
                answer = (kind, payload)
        child.join()
    finally:
        if child.is_alive():
            child.terminate()
            child.join()
        receiver.close()
    if answer is None:
        raise ChildCrashed(what, _death(child.exitcode))
    kind, payload = answer
    if kind == "error":
        raise payload
    if kind == "bug":
        raise RuntimeError(f"{what} failed in its child process:\n{payload}")
    return payload


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed ({name})"
    return f"exited with status {exitcode} without an answer"


def _child_main(sender: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    parent = os.getppid()

    def progress(done: int, total: int) -> None:
        if os.getppid() != parent:  # the parent was killed (-9): nobody will use the work
            raise SystemExit(1)
        sender.send(("progress", (done, total)))

    try:
        sender.send(("result", target(*args, progress=progress)))
    except PlatformError as exc:
        try:
            pickle.loads(pickle.dumps(exc))
        except Exception:  # a subclass with its own __init__: keep the message
            exc = PlatformError(str(exc))
        sender.send(("error", exc))
    except OSError as exc:
        # The disk said no (read-only, full, permission): the parent's caller words that
        # for the user; the child's traceback rides along as a note for any other errno.
        if hasattr(exc, "add_note"):  # Python >= 3.11
            exc.add_note(f"in the child process:\n{traceback.format_exc()}")
        sender.send(("error", exc))
    except (KeyboardInterrupt, SystemExit):
        pass  # the parent saw Ctrl-C too and says so, or is gone
    except BaseException:
        sender.send(("bug", traceback.format_exc()))
    finally:
        sender.close()
