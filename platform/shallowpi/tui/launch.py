"""Run the dashboard in its own process on this terminal, beside a recorder that publishes.

Why a process and not a thread: Textual repaints are tens of milliseconds of Python, and
a thread in the recorder's process would take the GIL from the control loop (see
BENCHMARKS.md, "Telemetry and dashboard": loop p99 ~100 ms at 50 Hz with the dashboard
in-process, ~period with it in a child process). A child also cannot crash the recorder.

    publisher = TelemetryPublisher(address, allow_control=True)
    dashboard = spawn_dashboard(str(publisher.address))
    ...control loop: publisher.publish(status); publisher.commands()...
    publisher.close()                    # the dashboard sees the end and exits by itself
    wait_dashboard(dashboard)

While the dashboard owns the terminal, the recorder must not print to it (log to a file).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import sys
import termios
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import shallowpi
from shallowpi.telemetry.transport import LOCAL_CONTROL_ENV
from shallowpi.terminal import in_background


def spawn_dashboard(address: str, control: bool = True, wait_s: float = 10.0, token: str | None = None,
                    **popen: object) -> subprocess.Popen:
    """Start `platform monitor --attached` on this terminal, attached to `address`.

    It exits when the publisher closes. In the recorder's, `q` (or Ctrl-C, which reaches
    the dashboard as a key in raw mode) asks, then sends QUIT; in the executor's, `q` sends
    STOP. A caller watches the child: one that dies early must not leave the loop running
    unseen (the recorder goes on with plain lines, the executor stops).
    `token`: the publisher's `local_token`, so that this dashboard keeps its keys (E-STOP)
    where telemetry.allow_remote_control=false refuses other monitors.
    `popen` goes to subprocess.Popen (tests give it a pseudo-terminal as stdin/stdout); the
    child's stderr is its stdout unless `popen` names one.
    """
    command = [sys.executable, "-m", "shallowpi", "monitor", "--address", address, "--attached",
               "--wait-s", str(wait_s)]
    if control:
        command.append("--control")
    env = dict(os.environ)
    source_root = str(Path(shallowpi.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    env.pop(LOCAL_CONTROL_ENV, None)
    if token:
        env[LOCAL_CONTROL_ENV] = token
    # Textual draws on stderr (its Linux driver writes to sys.__stderr__): with the caller's
    # stderr in a file (`platform record ... 2>err.log`) the dashboard went into the file and
    # the terminal stayed blank. Its stderr is its stdout, the terminal, unless a test says.
    popen.setdefault("stderr", subprocess.STDOUT)
    # Same process group as the recorder, which must stay the terminal's foreground group:
    # a background group that reads the terminal is stopped (SIGTTIN). Textual turns off
    # the terminal's signal keys, so Ctrl-C reaches the dashboard as a key, not a signal.
    return subprocess.Popen(command, env=env, **popen)  # type: ignore[call-overload]


def describe_exit(code: int) -> str:
    """A dashboard child's exit status in words: 'exited (code N)' or 'was killed (signal N)'."""
    return f"the dashboard exited (code {code})" if code >= 0 else f"the dashboard was killed (signal {-code})"


def dashboard_lost(process: subprocess.Popen) -> str | None:
    """Why the dashboard `process` shows nothing any more, or None while it runs: it exited
    (`describe_exit`), or it is stopped (SIGTTOU or SIGTTIN: its process group went to the
    background of the terminal; SIGSTOP), which `poll()` does not see: the run then went
    on blind, its log lines held. A stopped one is killed (and reaped), its terminal given
    back by the caller; the run goes on with plain lines. One system call while it runs
    (deploy asks every tick)."""
    if process.returncode is not None:
        return describe_exit(process.returncode)
    try:  # WNOWAIT: nothing is reaped here; Popen reaps an exited one below, as poll() would
        seen = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped meanwhile, by Popen on another thread
        return None if process.poll() is None else describe_exit(process.returncode)
    if seen is None:
        return None
    if seen.si_code not in (os.CLD_STOPPED, os.CLD_TRAPPED):
        return describe_exit(process.wait())
    with contextlib.suppress(OSError):
        process.kill()
    process.wait()
    return (f"the dashboard was stopped (signal {seen.si_status}: is this run in the background of "
            f"its terminal?) and was ended")


def wait_dashboard(process: subprocess.Popen, timeout_s: float = 5.0) -> int | None:
    """Wait for the dashboard to exit after the publisher closed; terminate it if it hangs."""
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()


# What a full-screen app switches on and must switch off again: the alternate screen, a
# hidden cursor, mouse reporting (all modes), bracketed paste, focus events, the kitty
# keyboard protocol, in-band resize reports (mode 2048); and what it switches off: line
# wrap (Textual writes \x1b[?7l; left off, every long line of the shell is cut at the
# right edge). Written when the dashboard died without its own clean-up.
_RESET_SEQUENCES = ("\x1b[?1049l\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1015l"
                    "\x1b[?2004l\x1b[?1004l\x1b[?2048l\x1b[?7h\x1b[<u\x1b[0m\r\n")


@dataclass
class TerminalState:
    """The terminal's modes before the dashboard took it, to put back if it dies.

    A dashboard killed by SIGKILL leaves raw mode (no echo, no Ctrl-C signal) and its
    alternate screen behind; `restore()` gives the operator their terminal back."""

    in_fd: int | None
    out_fd: int | None
    attributes: list[Any] | None

    @classmethod
    def save(cls, stdin: Any = None, stdout: Any = None) -> TerminalState:
        """The modes of `stdin`/`stdout` (fds or files; default the process's own) now.
        Attributes stay None when stdin is no terminal."""
        in_fd, out_fd = _fd(stdin, sys.stdin), _fd(stdout, sys.stdout)
        attributes = None
        if in_fd is not None and os.isatty(in_fd):
            with contextlib.suppress(termios.error, OSError):
                attributes = termios.tcgetattr(in_fd)
        return cls(in_fd, out_fd, attributes)

    def restore(self) -> None:
        """Put the saved modes back and leave the dashboard's screen; never raises. Not on
        a terminal another process group has in the foreground now (this run was put in
        the background): its modes are that group's (a shell's), and changing them would
        stop this process (SIGTTOU)."""
        if in_background(self.in_fd) or in_background(self.out_fd):
            return
        if self.attributes is not None and self.in_fd is not None:
            with contextlib.suppress(termios.error, OSError):
                termios.tcsetattr(self.in_fd, termios.TCSAFLUSH, self.attributes)
        if self.out_fd is not None and os.isatty(self.out_fd):
            with contextlib.suppress(OSError):
                os.write(self.out_fd, _RESET_SEQUENCES.encode())


def _fd(given: Any, default: Any) -> int | None:
    """A file descriptor from an fd, a file, or the default stream; None if there is none."""
    target = default if given is None else given
    if isinstance(target, int):
        return target
    try:
        return target.fileno()
    except (AttributeError, ValueError, OSError):
        return None


# Where the lines a command prints are kept in its log file as well (deploy's episode lines,
# record's summary): a logger that does not propagate, so they are not said twice on a terminal
# that printed them already; `log_to_file` gives it the file while it runs.
RUN_LOG = "shallowpi.run"
logging.getLogger(RUN_LOG).propagate = False
logging.getLogger(RUN_LOG).setLevel(logging.INFO)  # each line, whatever level the rest logs at
logging.getLogger(RUN_LOG).addHandler(logging.NullHandler())  # no file: nowhere (not logging's stderr last resort)


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[Path | None]:
    """Every log record (and RUN_LOG's lines) also appended to `path` while in the block,
    dated (log_format.LogFormatter); yields `path`, or None when the file cannot be made (said once
    as a warning: a log file is no reason to refuse a run). On disk as they happen, so a run
    killed (SIGKILL, a native crash) or run headless (systemd, nohup) leaves its record; a
    dashboard's run held them only in memory, printed at its end. A file that cannot be written
    past its creation (a full disk) is said once and left (`_LogFile`): neither its failed
    writes nor its close reach the run or its exit status."""
    from shallowpi.log_format import LogFormatter

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = _LogFile(path)
    except OSError as exc:
        logging.getLogger(__name__).warning("no log file for this run: cannot write %s (%s)", path,
                                            exc.strerror or type(exc).__name__)
        yield None
        return
    handler.setFormatter(LogFormatter())
    root, lines = logging.getLogger(), logging.getLogger(RUN_LOG)
    root.addHandler(handler)
    lines.addHandler(handler)
    try:
        yield path
    finally:
        lines.removeHandler(handler)
        root.removeHandler(handler)
        handler.close()


class _LogFile(logging.FileHandler):
    """A run's log file that, once a write to it fails (ENOSPC, EDQUOT, EIO), says so once in
    one line, "log file X: <reason>; no longer written", and takes no more records. Python's
    own handler printed "--- Logging error ---" and a traceback for every record (over the
    dashboard), and its close raised the full buffer's OSError out of `log_to_file`, a
    deploy that failed with exit 1 then ending in a traceback with exit 2."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, encoding="utf-8")
        self.failed = False  # a write failed: records go nowhere from then on

    def emit(self, record: logging.LogRecord) -> None:
        """Write `record`, unless a write failed before."""
        if not self.failed:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """A failed write (an OSError) ends the file, said once; anything else (a log call's
        bad arguments, a bug) is logging's usual report."""
        exc = sys.exc_info()[1]
        if not isinstance(exc, OSError):
            super().handleError(record)
            return
        self._give_up(exc)

    def close(self) -> None:
        """Close the file; never raises: the unwritten rest of a full disk's buffer is said
        (once) and dropped, so the run's own error and exit status stand."""
        try:
            super().close()  # its descriptor is closed even when the last flush fails
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: OSError) -> None:
        if self.failed:
            return
        self.failed = True  # first: the line below reaches this handler too (on the root logger)
        logging.getLogger(__name__).warning("log file %s: %s; no longer written", self.baseFilename,
                                            exc.strerror or type(exc).__name__)


class _HeldRecords(logging.Handler):
    """Keeps the last records while the dashboard owns the terminal, counting those dropped."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)
        self.dropped = 0  # the oldest records that made room for newer ones

    def emit(self, record: logging.LogRecord) -> None:
        """Keep `record`; the oldest is dropped (and counted) beyond `capacity`."""
        if len(self.records) == self.records.maxlen:
            self.dropped += 1
        self.records.append(record)

    def dropped_record(self) -> logging.LogRecord | None:
        """A record saying how many were dropped, and which log file has them all (a
        FileHandler on the root logger), to print before the kept ones; None if none was."""
        if not self.dropped:
            return None
        files = [h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
        where = f"; {files[0]} has them all" if files else ""
        first = self.records[0] if self.records else None
        record = logging.LogRecord(__name__, logging.WARNING, __file__, 0,
                                   "%d earlier log record(s) were dropped while the dashboard ran (it keeps the last "
                                   "%d)%s", (self.dropped, self.records.maxlen, where), None)
        if first is not None:  # placed where the gap is
            record.created, record.msecs = first.created, first.msecs
        return record


def _writes_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    if isinstance(handler, logging.FileHandler) or stream is None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def hold_terminal_logs() -> Iterator[None]:
    """Log records bound for the terminal are held, then printed.

    A log line written while a full-screen dashboard draws would tear its screen. Only the
    last 2000 are held: when older ones were dropped, a first line says how many, and which
    log file (one `log_to_file` attached) has them all.
    """
    root = logging.getLogger()
    terminal = [h for h in root.handlers if _writes_to_terminal(h)]
    held = _HeldRecords()
    for handler in terminal:
        root.removeHandler(handler)
    root.addHandler(held)
    try:
        yield
    finally:
        root.removeHandler(held)
        dropped = held.dropped_record()
        for handler in terminal:
            root.addHandler(handler)
            for record in ([dropped] if dropped else []) + list(held.records):
                if record.levelno >= handler.level:
                    handler.handle(record)
