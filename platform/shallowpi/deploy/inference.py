"""Where chunks are computed: beside the control loop on a thread, or in lockstep with it.

    runner.submit(request, observation, inpainting)   # start a chunk for `request`
    for done in runner.poll(tick): ...                 # chunks that have arrived by `tick`

`ThreadedInference` (a robot, or the twin at wall-clock pace) runs the backend on its own
thread; a chunk arrives when it is done. `LockstepInference` (the twin on simulated time)
computes the chunk at once, measures how long it took, and hands it over at the tick a
real-time loop would have had it: request tick + ceil(measured seconds x fps). Both add
`injected_delay_s` (the delay experiment), and both report measured latencies only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from shallowpi.deploy.backends.base import Backend, Inpainting
from shallowpi.policy.action_selection import ChunkRequest

log = logging.getLogger(__name__)


@dataclass
class Done:
    """A finished chunk: for `request`, [H, A] robot units, `latency_s` from submit to done
    (measured, injected delay included), or the `error` that stopped it."""

    request: ChunkRequest
    chunk: np.ndarray | None
    latency_s: float
    error: BaseException | None = None


class ThreadedInference:
    """One worker thread, one chunk at a time: a new submit replaces a job not yet started;
    one the watchdog dropped may still be running, and its result is ignored on arrival."""

    def __init__(self, backend: Backend, injected_delay_s: float = 0.0) -> None:
        self.backend, self.injected_delay_s = backend, injected_delay_s
        self._job: tuple[ChunkRequest, Mapping[str, Any], Inpainting | None, float] | None = None
        self._done: list[Done] = []
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="inference", daemon=True)
        self._thread.start()

    def submit(self, request: ChunkRequest, obs: Mapping[str, Any], inpainting: Inpainting | None) -> None:
        """Start a chunk for `request` from `obs` (lerobot keys + task)."""
        with self._wake:
            self._job = (request, obs, inpainting, time.perf_counter())
            self._wake.notify_all()

    def poll(self, tick: int) -> list[Done]:
        """Chunks that have arrived by `tick` (each once)."""
        with self._wake:
            done, self._done = self._done, []
        return done

    def wait(self, timeout_s: float | None = None) -> list[Done]:
        """Block until the submitted chunk is done (the synchronous strategy)."""
        with self._wake:
            self._wake.wait_for(lambda: self._done or self._closed, timeout_s)
            done, self._done = self._done, []
        return done

    def _serve(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._job is not None or self._closed)
                if self._closed:
                    return
                (request, obs, inpainting, started), self._job = self._job, None
            try:
                chunk, error = self.backend.infer(obs, inpainting), None
            except Exception as exc:  # handed to the control loop, which holds and reports it
                chunk, error = None, exc
            if self.injected_delay_s:
                time.sleep(self.injected_delay_s)
            with self._wake:
                self._done.append(Done(request, chunk, time.perf_counter() - started, error))
                self._wake.notify_all()

    def close(self, join_s: float = 30.0, on_wait: Callable[[], bool] | None = None) -> bool:
        """Stop: nothing more arrives. Waits up to `join_s` for a chunk in progress, in
        50 ms slices with `on_wait()` between them (the caller's status and commands stay
        live; it returns False to wait no longer). Returns whether the thread ended: one
        stuck in the backend is a daemon, left behind, and the backend must not be used
        again (its next call would run beside it)."""
        with self._wake:
            self._closed = True
            self._wake.notify_all()
        deadline = time.perf_counter() + join_s
        while self._thread.is_alive() and time.perf_counter() < deadline:
            self._thread.join(timeout=min(0.05, max(0.0, deadline - time.perf_counter())))
            if on_wait is not None and self._thread.is_alive() and not on_wait():
                break
        return not self._thread.is_alive()


class LockstepInference:
    """Chunks computed at submit, handed over `ceil(latency x fps)` ticks later (>= 1)."""

    def __init__(self, backend: Backend, fps: float, injected_delay_s: float = 0.0) -> None:
        self.backend, self.fps, self.injected_delay_s = backend, fps, injected_delay_s
        self._arriving: list[tuple[int, Done]] = []

    def submit(self, request: ChunkRequest, obs: Mapping[str, Any], inpainting: Inpainting | None) -> None:
        """Start a chunk for `request` from `obs` (lerobot keys + task)."""
        t0 = time.perf_counter()
        try:
            chunk, error = self.backend.infer(obs, inpainting), None
        except Exception as exc:
            chunk, error = None, exc
        latency = time.perf_counter() - t0 + self.injected_delay_s
        ticks = max(1, math.ceil(latency * self.fps - 1e-9))
        self._arriving.append((request.tick + ticks, Done(request, chunk, latency, error)))

    def poll(self, tick: int) -> list[Done]:
        """Chunks that have arrived by `tick` (each once)."""
        due = [d for t, d in self._arriving if t <= tick]
        self._arriving = [(t, d) for t, d in self._arriving if t > tick]
        return due

    def wait(self, timeout_s: float | None = None) -> list[Done]:
        """The submitted chunk now (the synchronous strategy)."""
        done = [d for _, d in self._arriving]
        self._arriving = []
        return done

    def close(self, join_s: float = 0.0, on_wait: Callable[[], bool] | None = None) -> bool:
        """Stop: nothing more arrives. Nothing runs on another thread (`join_s` and `on_wait`
        are unused): always True."""
        self._arriving = []
        return True
