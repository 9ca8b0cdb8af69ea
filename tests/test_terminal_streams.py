"""Commands started with a standard stream closed, and progress on a terminal rich cannot redraw.

Supervisors and daemon wrappers start commands with stdin (`<&-`) or stdout (`>&-`)
closed: Python then has `sys.stdin`/`sys.stdout` None, and a command must run as it would
piped. The streams are closed for real (fd 0 or 1 closed in the child before exec:
`stdin=subprocess.DEVNULL` would be an open, non-terminal stdin, a different case). On a
terminal with TERM=dumb (Emacs' shell, some IDE consoles) rich draws nothing until its
display stops, so progress must come as plain lines while the work runs; the terminals
here are real ptys.
"""

from __future__ import annotations

import io
import os
import pty
import select
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

import pytest

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from shallowpi.data import EpisodeStore
from store_fixtures import make_store

# rich reads these before TERM; a developer's shell or CI may set them.
RICH_OVERRIDES = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")


def _closing(fd: int) -> Callable[[], None]:
    """A preexec_fn closing `fd` in the child: `command <&-` (0) or `command >&-` (1)."""
    return lambda: os.close(fd)


@contextmanager
def _terminal(term: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[int, TextIO]]:
    """A pty under TERM=`term`: (its master fd, a text stream on its slave)."""
    for name in RICH_OVERRIDES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TERM", term)
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    try:
        yield master, stream
    finally:
        stream.close()
        os.close(master)


def _shown(master: int, wait_s: float = 2.0) -> str:
    """What the terminal shows so far: read until it has been quiet for 0.2 s, or for at
    most `wait_s` (a live bar redraws without end)."""
    out = b""
    deadline = time.monotonic() + wait_s
    while (left := deadline - time.monotonic()) > 0 and select.select([master], [], [], min(0.2, left) if out else left)[0]:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # every slave closed
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_is_terminal_is_false_for_none_a_closed_stream_and_a_pipe_true_for_a_pty():
    from shallowpi.terminal import is_interactive, is_terminal

    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w") as tty:
            assert is_terminal(tty)
        assert not is_terminal(tty)  # closed: isatty() raises ValueError
        assert not is_interactive(tty)
    finally:
        os.close(master)
    assert not is_terminal(None) and not is_interactive(None)
    assert not is_terminal(io.StringIO()) and not is_terminal(object())


def test_record_with_stdin_closed_records_and_exits_0(tmp_path, short_dir):
    """stdout a terminal, stdin closed: lines instead of the dashboard, the take recorded
    (it was an AttributeError after the store was made, the rerun then refused)."""
    master, slave = pty.openpty()
    shown: list[bytes] = []

    def drain() -> None:  # a full pty would stall the recorder's printer
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the slave: EIO
                return
            if not chunk:
                return
            shown.append(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        proc = subprocess.Popen(
            platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                         "--data-root", str(tmp_path), "--dataset", "d", "--episodes", "1",
                         "--episode-time-s", "0.5", "--reset-time-s", "0", "record.sim_size=32x32",
                         f"telemetry.address={short_dir}/t.sock"),
            stdout=slave, stderr=subprocess.PIPE, text=True, env=subprocess_env(TERM="xterm"),
            preexec_fn=_closing(0))
        os.close(slave)
        _, err = proc.communicate(timeout=300)
        reader.join(10)
    finally:
        os.close(master)
    assert "Traceback" not in err, err
    assert proc.returncode == 0, err
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 1
    assert "recorded 1 episode(s)" in b"".join(shown).decode(errors="replace")


def test_record_on_the_robot_with_stdin_closed_records_ends_and_turns_torque_off(tmp_path, short_dir):
    """Nobody at a terminal to end the hold after the last take: the run ends there (exit 0,
    torque off), as piped. It was an AttributeError right after the robot connected."""
    with emulated("arm") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        done = subprocess.run(
            platform_cmd("record", "--robot", "arm", *ports, "--dataset", "d", "--data-root", str(tmp_path),
                         "--task", "wave", "--episodes", "1", "--episode-time-s", "0.5", "--reset-time-s", "0",
                         "--no-tui", "--no-cameras", "--allow-uncalibrated", f"telemetry.address={short_dir}/t.sock"),
            env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), capture_output=True, text=True,
            timeout=120, preexec_fn=_closing(0))
        torque = {servo.torque for servo in chains["follower"].servos.values()}
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 0, done.stderr[-3000:]
    assert "recorded 1 episode(s)" in done.stdout and torque == {False}, done.stdout[-3000:]
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 1


def test_demo_with_stdin_closed_refuses_a_setting_in_one_line(tmp_path):
    """The demo's dashboard choice no longer stops it before its checks: a setting it
    refuses is the one-line error, as with stdin open."""
    out = tmp_path / "demo"
    done = subprocess.run(platform_cmd("demo", "--out", str(out), "+demo.train.steps=5"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=120,
                          preexec_fn=_closing(0))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and done.stderr.startswith("error: demo.train.steps: "), done.stderr
    assert not out.exists()


def test_dataset_delete_with_stdin_closed_asks_for_yes_and_keeps_the_episodes(tmp_path):
    make_store(tmp_path / "d.zarr", episodes=3).close()
    done = subprocess.run(platform_cmd("dataset", "delete", str(tmp_path / "d.zarr"), "--episode", "1"),
                          capture_output=True, text=True, env=subprocess_env(), timeout=120,
                          preexec_fn=_closing(0))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and "deleting episodes needs confirmation; pass --yes" in done.stderr, done.stderr
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 3


def test_dataset_list_with_stdout_closed_exits_0(tmp_path):
    make_store(tmp_path / "d.zarr", episodes=2).close()
    done = subprocess.run(platform_cmd("dataset", "list", "--data-root", str(tmp_path)),
                          stderr=subprocess.PIPE, text=True, env=subprocess_env(), timeout=120,
                          preexec_fn=_closing(1))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


def test_monitor_with_stdout_closed_prints_lines_and_says_nothing_publishes(short_dir):
    """No terminal on stdout: the status lines, not the dashboard; here the one-line
    'nothing publishes' error, not an AttributeError."""
    done = subprocess.run(platform_cmd("monitor", f"telemetry.address={short_dir}/none.sock"),
                          stderr=subprocess.PIPE, text=True, env=subprocess_env(), timeout=120,
                          preexec_fn=_closing(1))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 2 and done.stderr.startswith("error: no recorder is publishing at "), done.stderr


def test_train_progress_on_a_dumb_terminal_prints_plain_lines_while_it_runs(monkeypatch):
    from shallowpi.train.progress import ProgressBar

    with _terminal("dumb", monkeypatch) as (master, stream):
        bar = ProgressBar("train", 10, enabled=True, every_s=0.0, stream=stream)
        try:
            bar.update(3, "loss 0.5")
            shown = _shown(master)  # before close(): a hung-looking run showed nothing here
        finally:
            bar.close()
    assert "train 3/10 0:00:00 eta " in shown and "loss 0.5" in shown, repr(shown)


def test_train_progress_on_a_terminal_rich_can_redraw_draws_the_bar(monkeypatch):
    from shallowpi.train.progress import ProgressBar

    with _terminal("xterm-256color", monkeypatch) as (master, stream):
        bar = ProgressBar("train", 10, enabled=True, every_s=0.0, stream=stream)
        try:
            bar.update(3, "loss 0.5")
            shown = _shown(master)
        finally:
            bar.close()
    # rich's live bar (a line redrawn in place), not a plain line
    assert "\x1b[2K" in shown and " 3/10 " in shown and "train 3/10 " not in shown, repr(shown[-300:])


def test_progress_without_a_stderr_is_silent(monkeypatch):
    """`2>&-`: sys.stderr None; the lines must not go to stdout (results only) instead."""
    from shallowpi.train.progress import ProgressBar

    monkeypatch.setattr("sys.stderr", None)
    bar = ProgressBar("train", 10, enabled=True, every_s=0.0)
    bar.update(3)
    bar.close()
    assert bar.completed == 3


def test_dataset_progress_on_a_dumb_terminal_prints_plain_lines_while_it_runs(monkeypatch):
    from shallowpi.commands import dataset_cmd

    monkeypatch.setattr(dataset_cmd, "PLAIN_EVERY_S", 0.0, raising=False)
    with _terminal("dumb", monkeypatch) as (master, stream):
        monkeypatch.setattr("sys.stderr", stream)
        with dataset_cmd._progress("check demo") as progress:
            progress(2, 5)
            shown = _shown(master)  # before the end
    assert "check demo 2/5 0:00:00 eta " in shown, repr(shown)


def test_record_with_stdout_closed_records_without_a_traceback(tmp_path, short_dir):
    """`record >&-`: the line printer's thread died on sys.stdout None with a traceback on
    stderr (the take itself was saved)."""
    done = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui",
                     "--data-root", str(tmp_path), "--dataset", "d", "--episodes", "1", "--episode-time-s", "0.5",
                     "--reset-time-s", "0", "record.sim_size=32x32", f"telemetry.address={short_dir}/t.sock"),
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=subprocess_env(), timeout=300,
        preexec_fn=_closing(1))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 1


def test_calibrate_with_stdin_closed_says_so_in_one_line(tmp_path):
    """input() with fd 0 closed raises RuntimeError ("lost sys.stdin"), not EOFError: a
    traceback where a closed stdin had its own line."""
    with emulated("arm") as (spec, _chains):
        ports = ",".join(f"{name}={bus.port}" for name, bus in spec.buses.items())
        done = subprocess.run(platform_cmd("calibrate", "--robot", "arm", "--ports", ports),
                              env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path)), capture_output=True, text=True,
                              timeout=120, preexec_fn=_closing(0))
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("error: calibration asks questions: run it in a terminal "
                                                           "(stdin closed)"), done.stderr
