"""For tests that spawn gloo processes: leave the group as `platform train` does under
torchrun, and check that it really let go of the group's threads."""

from __future__ import annotations

from pathlib import Path


def gloo_threads() -> list[str]:
    """Names of this process's gloo threads (torch names them pt_gloo_*; Linux /proc)."""
    tasks = Path("/proc/self/task")
    names = [(task / "comm").read_text().strip() for task in tasks.iterdir()] if tasks.is_dir() else []
    return [n for n in names if n.startswith("pt_gloo")]


def crash_traces() -> None:
    """In a spawned worker: a crash below Python (SIGSEGV, SIGABRT) prints every thread's
    Python stack to stderr, which pytest shows. pytest's own faulthandler covers only its
    process; without this a worker's crash says nothing but its signal (seen once in CI:
    the FSDP distillation worker, SIGSEGV, not reproduced in 5 runs)."""
    import faulthandler

    faulthandler.enable()


def leave_group() -> None:
    """close_distributed, then no gloo thread is left. One left running into interpreter
    exit can abort the process after its work is done ("terminate called without an active
    exception"): seen once in a full run of the two-process tests."""
    from shallowpi.train.distributed import close_distributed

    # Without this the check below could pass because torch renamed its threads.
    assert gloo_threads(), "no pt_gloo_* thread in a gloo process group"
    close_distributed()
    left = gloo_threads()
    assert not left, f"gloo threads still running after close_distributed: {left}"


def join_within(context, seconds: float, what: str) -> None:
    """Wait for the processes of `torch.multiprocessing.spawn(..., join=False)` up to
    `seconds`; past that, kill them and fail the test with `what` (why they may hang)."""
    import time

    import pytest

    deadline = time.monotonic() + seconds
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the processes did not finish in {seconds:g} s ({what})")
