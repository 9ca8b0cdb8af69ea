"""Ctrl-C, SIGTERM or SIGHUP during training: finish the step, save a checkpoint, stop.

A run stopped between checkpoints used to lose every step since the last one (up to
`save_every`). `StopRequest` turns the first of these signals into a flag the loop reads
between steps, so the optimizer, EMA and data order stay consistent and `--resume`
continues exactly; a second signal restores the default handlers and stops at once.
The same signal again within `REPEAT_S` of the first is not a second request but the same
one delivered twice: a stop sent to a whole process group (systemd's KillMode=control-group,
SLURM's scancel or preemption, `kill 0`, a terminal's Ctrl-C) reaches the trainer directly
and again through torchrun, which forwards what it gets to its worker; taken as "asked
twice", it stopped the run without the save it asked for. A real second Ctrl-C, pressed
later, still stops at once.
Only a single process installs it: under torchrun every rank would have to agree on the
step at which to save, which the launcher's own signal handling does not give.
"""

from __future__ import annotations

import signal
import threading
import time
from types import FrameType
from typing import Any

from shallowpi.train.errors import TrainingError

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: its terminal or SSH session closed
# Seconds after a stop signal in which the same signal again is that request's other copy
# (torchrun forwards at once: the two arrive milliseconds apart); a person pressing Ctrl-C
# again because the step is slow does so later.
REPEAT_S = 2.0


class TrainingInterrupted(TrainingError):
    """The run stopped on a signal after saving its last completed step."""

    exit_code = 130


class StopRequest:
    """A context manager: `requested` turns true on the first SIGINT/SIGTERM/SIGHUP (`signal_name`
    says which). Another of them stops at once (KeyboardInterrupt, the handlers given back),
    except the same signal within `REPEAT_S` seconds of the first: the same request, twice
    delivered (module docstring). Installs nothing when `enabled` is false or off the main
    thread (Python only delivers signals there)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self.signal_name = ""
        self._previous: dict[int, Any] = {}
        self._first: tuple[int, float] | None = None  # the request's signal, time.monotonic() s

    def __enter__(self) -> StopRequest:
        if self.enabled:
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self._first is not None:
            first_signum, first_at = self._first
            if signum == first_signum and now - first_at < REPEAT_S:
                return  # the request's other copy (the launcher's forward), not a second one
            # asked twice: no more waiting for the step
            self._restore()
            raise KeyboardInterrupt
        self._first = (signum, now)
        self.requested, self.signal_name = True, signal.Signals(signum).name

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
