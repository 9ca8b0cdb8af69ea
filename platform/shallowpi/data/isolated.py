"""Run a function in a child process, so that a crash in native code ends the child, not
the command.

Video encoders are C libraries: SVT-AV1 dies of SIGFPE on frames narrower than it can
take, and a signal like that kills the whole Python process with no message and no
`finally`. Run in a child, the same crash becomes a one-line `ChildCrashed` in the parent,
whose `finally` blocks then remove what the child left half-written.

The child is a fresh interpreter (no forked threads or locks) started as
`python -c _CHILD_CODE`, never through multiprocessing's spawn, which imports the parent's
`__main__` again in the child: a researcher's script that calls `export_lerobot` at its top
level, with no `if __name__ == "__main__":`, ran itself again in every child, which exited
with status 1 before doing the work. The child gets the parent's `sys.path`, then the work,
through one pipe and talks back through another: progress calls, then its result or its error.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from shallowpi.errors import PlatformError

Progress = Callable[[int, int], None]

# What the child runs: the parent's sys.path first (a notebook's sys.path.insert included),
# so that this module and the work's own import as they do in the parent.
_CHILD_CODE = ("import sys; from multiprocessing.connection import Connection; "
               "work = Connection(int(sys.argv[1]), writable=False); sys.path[:] = work.recv(); "
               "from shallowpi.data.isolated import _child_start; "
               "_child_start(work, int(sys.argv[2]), int(sys.argv[3]))")


class ChildCrashed(PlatformError):
    """The child process died of a signal or exited without an answer; `how` says which
    ("crashed (SIGFPE)", "exited with status 1 without an answer")."""

    def __init__(self, what: str, how: str) -> None:
        super().__init__(f"{what} {how}")
        self.how = how


def run_isolated(target: Callable[..., Any], *args: Any, what: str,
                 progress: Progress | None = None) -> Any:
    """`target(*args, progress=...)` in a child process (a fresh interpreter that never
    imports the caller's `__main__`); returns its result.

    `target` must be importable by name (a module-level function) and its arguments and
    result picklable. A `PlatformError` or `OSError` raised in the child is raised here as
    it was; any other exception is a bug and comes back as a RuntimeError carrying the child's
    traceback. `what` names the work for `ChildCrashed` ("the video encoder ..."). Ctrl-C
    reaches the child too (same process group); here it stops the child and re-raises.
    """
    work = pickle.dumps((target, args))  # one that does not pickle raises here, before any child
    work_read, work_write = os.pipe()
    answer_read, answer_write = os.pipe()
    try:
        # The child's own stdin, stdout and stderr are ours (the encoder's messages show); it
        # may start processes of its own (lerobot's encoders can).
        child = subprocess.Popen([sys.executable, "-c", _CHILD_CODE, str(work_read), str(answer_write),
                                  str(os.getpid())], pass_fds=(work_read, answer_write))
    except BaseException:
        for fd in (work_read, work_write, answer_read, answer_write):
            os.close(fd)
        raise
    os.close(work_read)
    os.close(answer_write)  # the child holds the only writing end: EOF here when it exits
    receiver = Connection(answer_read, writable=False)
    answer: tuple[str, Any] | None = None
    try:
        with Connection(work_write, readable=False) as sender:  # a child dead at once: BrokenPipeError
            try:
                sender.send(list(sys.path))
                sender.send_bytes(work)
            except BrokenPipeError:
                pass  # said below, from its exit status
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
        child.wait()
    finally:
        if child.poll() is None:
            child.terminate()
            child.wait()
        receiver.close()
    if answer is None:
        raise ChildCrashed(what, _death(child.returncode))
    kind, payload = answer
    if kind == "error":
        raise payload
    if kind == "bug":
        raise RuntimeError(f"{what} failed in its child process:\n{payload}")
    return payload


# Signals sent to a process from outside it (the OOM killer's SIGKILL, a stop, Ctrl-C), not
# ones its own code dies of (SIGFPE, SIGSEGV, SIGBUS, SIGILL, SIGABRT: a native library's fault).
_SENT_SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def died_of_outside_causes(how: str) -> bool:
    """Whether `how` (a ChildCrashed's) says the child ended for a reason other than its
    work: it exited without an answer (it could not start the work: an environment that
    does not import, a parent's `__main__` that ran again) or a signal sent to it killed it.
    Such an end says nothing of the work, and another try may go through; a crash of the
    work's own code (SIGFPE in an encoder) is its answer, the same at every try."""
    return (how.startswith("exited with status ") and how.endswith(" without an answer")) or how in {
        _death(-int(sent)) for sent in _SENT_SIGNALS}


def _death(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"crashed ({name})"
    return f"exited with status {exitcode} without an answer"


def _child_start(work: Connection, answer_fd: int, parent: int) -> None:
    """The child's side, run by _CHILD_CODE: the work from `work`, its answer to `answer_fd`;
    ended with its `parent` (pid) where the system can say so (`_die_with_parent`)."""
    _die_with_parent(parent)
    sender = Connection(answer_fd, readable=False)
    try:
        target, args = pickle.loads(work.recv_bytes())
    except BaseException:  # the work does not import here: a bug, said with its traceback
        sender.send(("bug", traceback.format_exc()))
        sender.close()
        return
    finally:
        work.close()
    _child_main(sender, target, args, parent)


def _die_with_parent(parent: int) -> None:
    """On Linux, have the kernel SIGKILL this child when its parent dies (prctl's
    PR_SET_PDEATHSIG), and exit now if `parent` is gone already (it died before the call).
    A parent killed with -9 (an OOM kill) left its child encoding a camera's video for
    minutes, with nobody to use it, then printing a BrokenPipeError traceback on the
    terminal. Elsewhere the progress calls notice the parent gone (`_child_main`)."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _child_main(sender: Any, target: Callable[..., Any], args: tuple[Any, ...], parent: int) -> None:

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
