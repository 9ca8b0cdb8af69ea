"""The executor's status as text: one line for logs and `platform monitor --lines`."""

from __future__ import annotations

from shallowpi.telemetry.executor_status import ExecutorStatus


def status_line(s: ExecutorStatus) -> str:
    """State, episode, inference p50/p99, delay, queue, chunk age, loop p99, safety counts."""
    safety, loop = s.safety, s.loop
    return (f"{s.state.value.upper():8} episode {s.episode + 1}/{s.episodes_total} ({s.successes} ok) "
            f"{s.strategy} on {s.backend} | inference p50 {s.inference_p50_ms:.0f} p99 {s.inference_p99_ms:.0f} ms, "
            f"delay {s.delay_ticks} ticks, queue {s.queue_depth}, chunk age {s.chunk_age_ms:.0f} ms | loop p99 "
            f"{loop.period_p99_ms:.1f} ms, {loop.overruns} overruns | clamps {safety.clamps}, seam trips "
            f"{safety.seam_trips}, holds {safety.holds}, stale {safety.stale_frames}, faults {safety.faults}")
