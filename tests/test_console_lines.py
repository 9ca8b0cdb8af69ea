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


def wait_for_lines(stream: io.StringIO, n: int) -> None:
    deadline = time.monotonic() + 5.0
    while stream.getvalue().count("\n") < n and time.monotonic() < deadline:
        time.sleep(0.01)


def test_say_never_waits_on_a_stalled_stdout_and_counts_what_it_dropped():
    stream = StalledStream()
    printer = LinePrinter(capacity=4, stream=stream)
    printer.say("tick 0")
    assert stream.writing.wait(5.0)  # the printer's thread now waits on the stream
    # A control loop's lines while nobody reads: a blocking print would never get through them.
    loop = threading.Thread(target=lambda: [printer.say(f"tick {i}") for i in range(1, 50)], daemon=True)
    loop.start()
    loop.join(5.0)
    assert not loop.is_alive()
    stream.flowing.set()  # read again: the held and queued lines come out
    wait_for_lines(stream, 5)
    printer.say("after")
    printer.close()
    lines = stream.getvalue().splitlines()
    # The line the thread held when the stream stalled, the queue's 4, then the next one says how many were lost.
    assert lines[:5] == [f"tick {i}" for i in range(5)]
    assert lines[5].startswith("after") and "45 line(s) before this dropped" in lines[5]


def test_flush_waits_for_the_lines_so_far_and_gives_up_on_a_stalled_stream():
    stream = StalledStream()
    printer = LinePrinter(capacity=2, stream=stream)
    printer.say("first")
    assert stream.writing.wait(5.0)
    assert not printer.flush(timeout_s=0.2)  # nothing can be written: flush gives up (its marker takes a slot)
    for i in range(5):  # one more fits, four are dropped
        printer.say(f"line {i}")
    stream.flowing.set()
    assert printer.flush()  # everything queued so far is out
    assert stream.getvalue().splitlines() == ["first", "line 0"]
    printer.say("line 5")
    printer.close()
    printer.say("late")  # closed: ignored, no error
    assert stream.getvalue().splitlines() == [
        "first", "line 0", "line 5  (4 line(s) before this dropped: stdout was not read fast enough)"]


def test_close_says_how_many_of_the_last_lines_were_dropped():
    stream = StalledStream()
    printer = LinePrinter(capacity=1, stream=stream)
    printer.say("first")
    assert stream.writing.wait(5.0)
    for line in ("a", "b", "c"):  # a is queued, b and c dropped, and no later line will say so
        printer.say(line)
    threading.Timer(0.1, stream.flowing.set).start()
    printer.close()
    assert stream.getvalue().splitlines() == [
        "first", "a", "(2 line(s) dropped at the end: stdout was not read fast enough)"]


def test_close_prints_every_queued_line_in_order():
    stream = io.StringIO()
    printer = LinePrinter(stream=stream)
    for i in range(100):
        printer.say(f"line {i}")
    printer.close()
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(100)]
