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
from collections.abc import Iterator
from pathlib import Path

import shallowpi


def spawn_dashboard(address: str, control: bool = True, wait_s: float = 10.0,
                    **popen: object) -> subprocess.Popen:
    """Start `platform monitor --attached` on this terminal, attached to `address`.

    `q` in it asks, then sends QUIT; it exits when the publisher closes. Ctrl-C typed in
    the terminal reaches the dashboard as a key (raw mode), which asks the same question.
    `popen` goes to subprocess.Popen (tests give it a pseudo-terminal as stdin/stdout).
    """
    command = [sys.executable, "-m", "shallowpi", "monitor", "--address", address, "--attached",
               "--wait-s", str(wait_s)]
    if control:
        command.append("--control")
    env = dict(os.environ)
    source_root = str(Path(shallowpi.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source_root, env.get("PYTHONPATH", "")) if p)
    # Same process group as the recorder, which must stay the terminal's foreground group:
    # a background group that reads the terminal is stopped (SIGTTIN). Textual turns off
    # the terminal's signal keys, so Ctrl-C reaches the dashboard as a key, not a signal.
    return subprocess.Popen(command, env=env, **popen)  # type: ignore[call-overload]


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


class _HeldRecords(logging.Handler):
    """Keeps the last records while the dashboard owns the terminal."""

    def __init__(self, capacity: int = 2000) -> None:
        super().__init__()
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _writes_to_terminal(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    if isinstance(handler, logging.FileHandler) or stream is None:
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def hold_terminal_logs(log_path: Path | None = None) -> Iterator[None]:
    """Log records bound for the terminal are held (and go to `log_path`), then printed.

    A log line written while a full-screen dashboard draws would tear its screen.
    """
    root = logging.getLogger()
    terminal = [h for h in root.handlers if _writes_to_terminal(h)]
    held = _HeldRecords()
    file_handler = None
    for handler in terminal:
        root.removeHandler(handler)
    root.addHandler(held)
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(log_path)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
    try:
        yield
    finally:
        root.removeHandler(held)
        if file_handler is not None:
            root.removeHandler(file_handler)
            file_handler.close()
        for handler in terminal:
            root.addHandler(handler)
            for record in held.records:
                if record.levelno >= handler.level:
                    handler.handle(record)
