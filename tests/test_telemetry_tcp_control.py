"""Control over a loopback TCP port: every user of the computer can connect there (a Unix
socket is 0600), so commands need the key the publisher writes to its user's private
folder. Another user (here: a process whose private folder is elsewhere) watches, never
steers; a peer granted control proves it again with each command."""

from __future__ import annotations

import json
import os
import stat
import time

import pytest
import zmq

from shallowpi.telemetry import address as address_module
from shallowpi.telemetry.address import control_key_path
from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import Command, RecorderState, RecorderStatus
from shallowpi.telemetry.subscriber import TelemetrySubscriber
from telemetry_fixtures import commands_of


def _status(episode: int) -> RecorderStatus:
    return RecorderStatus(state=RecorderState.RECORDING, episode=episode, joint_names=["a"], follower=[0.0])


def _commands_within(publisher: TelemetryPublisher, seconds: float = 1.0) -> list[Command]:
    deadline, got = time.monotonic() + seconds, []
    while time.monotonic() < deadline and not got:
        got += commands_of(publisher)
        time.sleep(0.01)
    return got


@pytest.fixture
def private_dir(tmp_path, monkeypatch):
    """This test's user's private runtime folder (XDG_RUNTIME_DIR), not the real one."""
    folder = tmp_path / "run-me"
    folder.mkdir(mode=0o700)
    monkeypatch.delenv(address_module.TELEMETRY_DIR_ENV, raising=False)  # the tests' own (conftest)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(folder))
    return folder


def test_over_tcp_only_a_process_that_reads_the_control_key_steers(private_dir, tmp_path, monkeypatch):
    with TelemetryPublisher("tcp://127.0.0.1:0") as publisher:
        publisher.publish(_status(1))
        key = control_key_path(publisher.address)
        assert key.parent == private_dir / "shallowpi"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        with TelemetrySubscriber(str(publisher.address), control=True) as mine:
            assert mine.control and next(iter(mine)).control_allowed is True
            mine.send(Command.PAUSE)
            assert _commands_within(publisher) == [Command.PAUSE]
        # Another user: their private folder is another one, without this key.
        other = tmp_path / "run-other"
        other.mkdir(mode=0o700)
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(other))
        with TelemetrySubscriber(str(publisher.address), control=True) as theirs:
            assert not theirs.control
            assert f"only the user running the recorder may send commands, with the key it wrote to that user's {key}" \
                in theirs.refusal
            assert next(iter(theirs)).episode == 1  # they may watch
            theirs._send({"type": "command", "command": "quit"})  # a command sent anyway
            assert _commands_within(publisher, 0.3) == []
    assert not key.exists(), "close() removes the key"


def test_a_peer_granted_control_over_tcp_proves_it_with_each_command(private_dir):
    """A ROUTER numbers its peers in sequence, so a peer may claim the number of one that
    was granted control and has left: a command without the key is ignored whoever sends it."""
    with TelemetryPublisher("tcp://127.0.0.1:0") as publisher:
        secret = control_key_path(publisher.address).read_text()
        context = zmq.Context()
        try:
            dealer = context.socket(zmq.DEALER)
            dealer.linger = 0
            dealer.connect(publisher.address.endpoint)
            dealer.send(json.dumps({"type": "hello", "protocol": 2, "control": True, "key": secret}).encode())
            assert dealer.poll(3000) and json.loads(dealer.recv())["control"] is True
            dealer.send(json.dumps({"type": "command", "command": "quit"}).encode())
            assert _commands_within(publisher, 0.3) == []
            dealer.send(json.dumps({"type": "command", "command": "stop", "key": "0" * 32}).encode())
            assert _commands_within(publisher, 0.3) == []
            dealer.send(json.dumps({"type": "command", "command": "stop", "key": secret}).encode())
            assert _commands_within(publisher) == [Command.STOP]
        finally:
            context.destroy(linger=0)


def test_a_unix_socket_needs_no_key_and_a_killed_publishers_key_is_replaced(private_dir, tmp_path):
    address = str(tmp_path / "t.sock")
    with TelemetryPublisher(address) as publisher, TelemetrySubscriber(address, control=True) as sub:
        assert sub.control
        sub.send(Command.STOP)
        assert _commands_within(publisher) == [Command.STOP]
    assert not list(private_dir.rglob("*.key"))  # the socket file's mode guards it
    with TelemetryPublisher("tcp://127.0.0.1:0") as first:
        port = first.address.port
    stale = control_key_path(first.address)
    stale.parent.mkdir(mode=0o700, exist_ok=True)
    stale.write_text("left by a publisher that was killed")
    os.chmod(stale, 0o644)
    with TelemetryPublisher(f"tcp://127.0.0.1:{port}") as second:
        assert control_key_path(second.address).read_text() != "left by a publisher that was killed"
        assert stat.S_IMODE(control_key_path(second.address).stat().st_mode) == 0o600
        with TelemetrySubscriber(str(second.address), control=True) as sub:
            assert sub.control


def test_a_monitor_finds_the_key_of_a_recorder_started_without_xdg_runtime_dir(private_dir, tmp_path, monkeypatch):
    """A recorder started by systemd or cron has no $XDG_RUNTIME_DIR and keeps its key in
    the /tmp fallback folder; the operator's SSH login has it set, and looked only there."""
    fallback = tmp_path / "tmp"
    fallback.mkdir()
    monkeypatch.setattr(address_module, "SHARED_TMP", fallback)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with TelemetryPublisher("tcp://127.0.0.1:0") as publisher:
        assert control_key_path(publisher.address).parent == fallback / f"shallowpi-{os.getuid()}"
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_dir))  # the SSH login's
        with TelemetrySubscriber(str(publisher.address), control=True) as sub:
            assert sub.control
            sub.send(Command.STOP)
            assert _commands_within(publisher) == [Command.STOP]


def test_a_key_left_by_a_killed_recorder_does_not_hide_the_live_one(private_dir, tmp_path, monkeypatch):
    """A recorder killed on a fixed port left its key in the SSH login's folder; the one now
    publishing there runs under systemd (no XDG_RUNTIME_DIR) and wrote its key to the /tmp
    fallback. The monitor tries each key it can read and is granted control."""
    fallback = tmp_path / "tmp"
    fallback.mkdir()
    monkeypatch.setattr(address_module, "SHARED_TMP", fallback)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    with TelemetryPublisher("tcp://127.0.0.1:0") as publisher:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(private_dir))  # the SSH login's
        stale = control_key_path(publisher.address)  # where the killed recorder wrote its own
        stale.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        stale.write_text("0" * 32)
        os.utime(stale, (time.time() + 60, time.time() + 60))  # and the newer of the two
        with TelemetrySubscriber(str(publisher.address), control=True) as sub:
            assert sub.control, sub.refusal
            sub.send(Command.STOP)
            assert _commands_within(publisher) == [Command.STOP]
