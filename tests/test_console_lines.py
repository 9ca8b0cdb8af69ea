"""`--no-tui` progress lines (commands/console.py): the control loop never waits on stdout."""

from __future__ import annotations

import io
import threading
import time

from shallowpi.commands.console import LinePrinter


class StalledStream(io.StringIO):
    """A stdout nobody reads (a paused pipe): write() blocks until `flowing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.writing, self.flowing = threading.Event(), threading.Event()

    def write(self, text: str) -> int:
        self.writing.set()
        self.flowing.wait()
        return super().write(text)


def test_say_never_waits_on_a_stalled_stdout_and_counts_what_it_dropped():
    stream = StalledStream()
    printer = LinePrinter(capacity=4, stream=stream)
    printer.say("tick 0")
    assert stream.writing.wait(5.0)  # the printer's thread now waits on the stream
    started = time.perf_counter()
    for i in range(1, 50):  # a control loop's lines while nobody reads
        printer.say(f"tick {i}")
    assert time.perf_counter() - started < 0.05  # a blocking print would wait here forever
    stream.flowing.set()  # read again: the held and queued lines come out
    deadline = time.monotonic() + 5.0
    while stream.getvalue().count("\n") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    printer.say("after")
    printer.close()
    lines = stream.getvalue().splitlines()
    # The line the thread held when the stream stalled, the queue's 4, then the next one says how many were lost.
    assert lines[:5] == [f"tick {i}" for i in range(5)]
    assert lines[5].startswith("after") and "45 line(s) before this dropped" in lines[5]


def test_close_prints_every_queued_line_in_order_and_ignores_later_ones():
    stream = io.StringIO()
    printer = LinePrinter(stream=stream)
    for i in range(100):
        printer.say(f"line {i}")
    printer.close()
    printer.say("late")
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]
