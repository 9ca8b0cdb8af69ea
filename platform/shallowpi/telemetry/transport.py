"""Status out, commands in, over a local socket: the recorder publishes, dashboards subscribe.

The control loop calls `TelemetryPublisher.publish(status)` every tick. That call only
stores a reference to the newest status: no lock is taken, no byte is serialised and no
socket is touched on the loop's thread. One sender thread owns every socket; for each
subscriber it sends the newest status when the subscriber has taken the previous one and
at most `max_hz` times a second. A subscriber that reads slowly, or not at all, skips
statuses (latest wins); its unsent bytes are bounded by one status, and it never slows
`publish()`. A subscriber that crashes is a closed socket: the sender drops it.

Addresses (loopback only; the robot's computer is reached over SSH, not the network):

    /run/user/1000/shallowpi-telemetry.sock     a Unix socket path (unix:// prefix optional)
    tcp://127.0.0.1:7421                        a loopback TCP port

Wire format: newline-delimited JSON objects, one per line, each with a "type".

    subscriber -> publisher   {"type": "hello", "protocol": 1, "control": true}
    publisher -> subscriber   {"type": "hello", "protocol": 1, "control": false, "reason": "..."}
    publisher -> subscriber   {"type": "status", "status": {...RecorderStatus.to_json()...}}
    subscriber -> publisher   {"type": "command", "command": "start"}

In-process, the recorder's own dashboard reads through `StatusMailbox` (the same
latest-wins handoff without a socket) and sends commands with `TelemetryPublisher.submit`,
so the control loop drains one command queue, `commands()`, whoever sent them.

Standard library only: the robot runs this on Python 3.10.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shallowpi.errors import PlatformError
from shallowpi.telemetry.status import Command, RecorderStatus

log = logging.getLogger(__name__)

PROTOCOL = 1
DEFAULT_MAX_HZ = 20.0
SOCKET_NAME = "shallowpi-telemetry.sock"
_MAX_LINE = 1 << 20  # a subscriber line longer than this is garbage: drop the subscriber
_MAX_PENDING_COMMANDS = 256  # commands nobody drains are dropped oldest-first, with a warning


class TelemetryError(PlatformError):
    """No publisher at the address, a bad address, or a command from a read-only monitor."""


def default_address() -> str:
    """A Unix socket in $XDG_RUNTIME_DIR (per-user, tmpfs), else in /tmp."""
    folder = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return str(Path(folder) / SOCKET_NAME)


@dataclass(frozen=True)
class Address:
    """A parsed telemetry address: a Unix socket path or a loopback TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int = 0

    @classmethod
    def parse(cls, text: str | None) -> Address:
        text = (text or "").strip() or default_address()
        if text.startswith("tcp://"):
            host, sep, port = text[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            if not sep or not port.isdigit():
                raise TelemetryError(f"telemetry address '{text}' needs a port, e.g. tcp://127.0.0.1:7421")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise TelemetryError(
                    f"telemetry address '{text}' is not loopback; use tcp://127.0.0.1:PORT "
                    "(reach the robot over SSH) or a Unix socket path"
                )
            return cls(host="127.0.0.1" if host == "localhost" else host, port=int(port))
        if text.startswith("unix://"):
            text = text[len("unix://"):]
        if "://" in text:
            raise TelemetryError(f"telemetry address '{text}' is neither a socket path nor tcp://127.0.0.1:PORT")
        return cls(path=str(Path(text).expanduser()))

    @property
    def family(self) -> int:
        if self.path is not None:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in (self.host or "") else socket.AF_INET

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        return self.path if self.path is not None else (self.host or "127.0.0.1", self.port)

    def __str__(self) -> str:
        return self.path if self.path is not None else f"tcp://{self.host}:{self.port}"


def _line(message: dict) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


@dataclass(eq=False)
class _Subscriber:
    """The publisher's view of one connected subscriber (touched by the sender thread only)."""

    sock: socket.socket
    name: str
    greeted: bool = False  # its hello arrived and was answered
    control: bool = False  # granted: it asked and the publisher allows control
    inbox: bytearray = field(default_factory=bytearray)
    outbox: bytearray = field(default_factory=bytearray)  # at most one hello + one status
    sent_seq: int = -1  # sequence number of the last status queued for it
    sent_at: float = 0.0  # monotonic time the last status was queued
    statuses_sent: int = 0


class TelemetryPublisher:
    """Serve the newest RecorderStatus to every subscriber; collect their commands.

    The control loop calls `publish(status)` each tick and `commands()` to drain what
    dashboards asked for. `publish` keeps a snapshot; the sender thread serialises it later,
    on its own thread, so the loop never pays for JSON or sockets.
    """

    def __init__(self, address: str | None = None, allow_control: bool = True,
                 max_hz: float = DEFAULT_MAX_HZ) -> None:
        self.address = Address.parse(address)
        self.allow_control = allow_control
        self.min_interval_s = 1.0 / max_hz if max_hz > 0 else 0.0
        # Written by publish() on the loop's thread, read by the sender: a tuple swap is
        # atomic under the GIL, so neither side takes a lock.
        self._latest: tuple[int, RecorderStatus] | None = None
        self._seq = 0
        self._commands: collections.deque[Command] = collections.deque()
        self._mailboxes: list[StatusMailbox] = []
        self._subscribers: dict[socket.socket, _Subscriber] = {}
        self._stop = threading.Event()
        self._listener = self._listen()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._thread = threading.Thread(target=self._serve, name="telemetry-sender", daemon=True)
        self._thread.start()
        log.info("telemetry: publishing at %s (remote control %s)", self.address,
                 "allowed" if allow_control else "off")

    @classmethod
    def from_config(cls, telemetry: Mapping[str, Any]) -> TelemetryPublisher:
        """From the config's `telemetry:` block (address, allow_remote_control, max_hz)."""
        return cls(
            telemetry.get("address") or None,
            allow_control=bool(telemetry.get("allow_remote_control", True)),
            max_hz=float(telemetry.get("max_hz", DEFAULT_MAX_HZ)),
        )

    # -- the control loop's side -------------------------------------------------------

    def publish(self, status: RecorderStatus) -> None:
        """Make `status` the newest one. Never blocks, never raises.

        Takes a snapshot (~5 µs), so the loop may keep updating the same status in place.
        """
        try:
            status = status.snapshot()
        except Exception:  # not a RecorderStatus we know: publish it as it is
            log.debug("telemetry: could not snapshot a status", exc_info=True)
        self._seq += 1
        self._latest = (self._seq, status)
        for mailbox in self._mailboxes:
            mailbox.publish(status)

    def commands(self) -> list[Command]:
        """Commands received since the last call, oldest first (never blocks)."""
        drained = []
        while True:
            try:
                drained.append(self._commands.popleft())
            except IndexError:
                return drained

    # -- in-process dashboards ---------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Queue a command from an in-process dashboard (thread-safe): the sink for one."""
        self._queue_command(Command(command))

    def local_feed(self, max_hz: float = DEFAULT_MAX_HZ) -> StatusMailbox:
        """A latest-wins status feed for a dashboard in this process (see StatusMailbox)."""
        mailbox = StatusMailbox(max_hz=max_hz)
        self._mailboxes = [*self._mailboxes, mailbox]  # copy-on-write: publish() iterates it
        if self._latest is not None:
            mailbox.publish(self._latest[1])
        return mailbox

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def close(self) -> None:
        """Stop serving, disconnect subscribers, remove the socket file. Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout=2.0)
        for mailbox in self._mailboxes:
            mailbox.close()
        for sock in (self._wake_r, self._wake_w):
            sock.close()

    def __enter__(self) -> TelemetryPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the sender thread -------------------------------------------------------------

    def _listen(self) -> socket.socket:
        address = self.address
        if address.path is not None:
            _remove_stale_socket(address.path)
        sock = socket.socket(address.family, socket.SOCK_STREAM)
        try:
            if address.path is not None:
                Path(address.path).parent.mkdir(parents=True, exist_ok=True)
            else:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address.sockaddr)
            if address.path is not None:
                os.chmod(address.path, 0o600)  # only this user may watch or steer the robot
            sock.listen(8)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise TelemetryError(
                f"cannot publish telemetry at {address}: {exc.strerror or exc}; "
                "is another recorder running? set telemetry.address in configs/config.yaml"
            ) from None
        if address.port == 0 and address.path is None:
            # tcp://127.0.0.1:0 asks for any free port: report the one we got.
            self.address = Address(host=address.host, port=sock.getsockname()[1])
        return sock

    def _serve(self) -> None:
        selector = self._selector
        selector.register(self._listener, selectors.EVENT_READ, "listen")
        selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stop.is_set():
                for key, events in selector.select(timeout=self._next_timeout()):
                    if key.data == "listen":
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        sub = self._subscribers.get(key.fileobj)  # type: ignore[arg-type]
                        if sub is None:
                            continue
                        if events & selectors.EVENT_READ:
                            self._receive(sub)
                        if events & selectors.EVENT_WRITE and sub.sock in self._subscribers:
                            self._flush(sub)
                self._deliver()
        except Exception:  # the sender must never take the recorder down
            log.exception("telemetry: sender thread failed; subscribers disconnected")
        finally:
            for sub in list(self._subscribers.values()):
                self._drop(sub, reason=None)
            selector.close()
            self._listener.close()
            if self.address.path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(self.address.path)

    def _next_timeout(self) -> float:
        """Sleep until the earliest subscriber may take a newer status (bounded)."""
        latest = self._latest
        if latest is None or not self._subscribers:
            return 0.05
        now = time.monotonic()
        due = [s.sent_at + self.min_interval_s - now for s in self._subscribers.values()
               if s.greeted and s.sent_seq != latest[0] and not s.outbox]
        return min(max(min(due), 0.001), 0.05) if due else 0.05

    def _accept(self) -> None:
        try:
            sock, peer = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.warning("telemetry: accept failed: %s", exc)
            return
        sock.setblocking(False)
        sub = _Subscriber(sock=sock, name=str(peer or "unix-socket peer"))
        self._subscribers[sock] = sub
        self._selector.register(sock, selectors.EVENT_READ)
        log.info("telemetry: subscriber connected (%d now)", len(self._subscribers))

    def _receive(self, sub: _Subscriber) -> None:
        try:
            data = sub.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sub, reason="disconnected")
            return
        sub.inbox += data
        while b"\n" in sub.inbox:
            raw, _, rest = bytes(sub.inbox).partition(b"\n")
            sub.inbox = bytearray(rest)
            self._handle(sub, raw)
            if sub.sock not in self._subscribers:
                return
        if len(sub.inbox) > _MAX_LINE:
            self._drop(sub, reason="sent an over-long line")

    def _handle(self, sub: _Subscriber, raw: bytes) -> None:
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            self._drop(sub, reason="sent a line that is not a telemetry message")
            return
        if kind == "hello":
            wants = bool(message.get("control", False))
            sub.control = wants and self.allow_control
            reply = {"type": "hello", "protocol": PROTOCOL, "control": sub.control}
            if wants and not self.allow_control:
                reply["reason"] = ("this recorder does not accept remote commands "
                                   "(telemetry.allow_remote_control is false)")
            sub.greeted = True
            sub.outbox += _line(reply)
            self._flush(sub)
        elif kind == "command":
            if not sub.control:
                log.warning("telemetry: ignored a command from a read-only subscriber")
                return
            try:
                command = Command(message.get("command"))
            except ValueError:
                log.warning("telemetry: ignored unknown command %r", message.get("command"))
                return
            self._queue_command(command)

    def _queue_command(self, command: Command) -> None:
        if len(self._commands) >= _MAX_PENDING_COMMANDS:
            self._commands.popleft()
            log.warning("telemetry: command queue full (nobody drains commands()); dropped the oldest")
        self._commands.append(command)

    def _deliver(self) -> None:
        """Queue the newest status for every subscriber that is ready and due."""
        latest = self._latest
        if latest is None:
            return
        seq, status = latest
        now = time.monotonic()
        encoded: dict[bool, bytes] = {}
        for sub in list(self._subscribers.values()):
            if (not sub.greeted or sub.outbox or sub.sent_seq == seq
                    or now - sub.sent_at < self.min_interval_s):
                continue  # latest wins: a subscriber still holding bytes skips this one
            if sub.control not in encoded:
                encoded[sub.control] = self._encode(status, sub.control)
            if not encoded[sub.control]:
                return
            sub.outbox += encoded[sub.control]
            sub.sent_seq, sub.sent_at = seq, now
            sub.statuses_sent += 1
            self._flush(sub)

    def _encode(self, status: RecorderStatus, control: bool) -> bytes:
        try:
            data = status.to_json()
        except Exception:  # a status mutated while we read it: skip this one
            log.debug("telemetry: could not serialise a status", exc_info=True)
            return b""
        data["control_allowed"] = control
        return _line({"type": "status", "status": data})

    def _flush(self, sub: _Subscriber) -> None:
        try:
            sent = sub.sock.send(sub.outbox)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._drop(sub, reason="connection lost")
            return
        del sub.outbox[:sent]
        # Ask to be woken when the socket drains only while bytes are waiting.
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if sub.outbox else 0)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.modify(sub.sock, events)

    def _drop(self, sub: _Subscriber, reason: str | None) -> None:
        self._subscribers.pop(sub.sock, None)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(sub.sock)
        with contextlib.suppress(OSError):
            sub.sock.close()
        if reason:
            log.info("telemetry: subscriber %s (%d left)", reason, len(self._subscribers))


def _remove_stale_socket(path: str) -> None:
    """Remove a socket file left by a recorder that died; refuse if one is still alive."""
    if not os.path.exists(path):
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: a stale file from a crashed recorder
        return
    finally:
        probe.close()
    raise TelemetryError(
        f"a recorder is already publishing at {path}; stop it, or set telemetry.address "
        "in configs/config.yaml to another path"
    )


class StatusMailbox:
    """A one-slot, latest-wins status handoff to a reader in the same process.

    `publish()` never blocks on the reader; iterating blocks until a status newer than the
    last one read arrives (at most `max_hz` a second) and ends after `close()`.
    """

    def __init__(self, max_hz: float = DEFAULT_MAX_HZ) -> None:
        self.min_interval_s = 1.0 / max_hz if max_hz > 0 else 0.0
        self._cond = threading.Condition()
        self._status: RecorderStatus | None = None
        self._fresh = False
        self._closed = False
        self._last_read = 0.0

    def publish(self, status: RecorderStatus) -> None:
        # The lock is only ever held for a few assignments, never across I/O.
        with self._cond:
            self._status, self._fresh = status, True
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __iter__(self) -> Iterator[RecorderStatus]:
        return self

    def __next__(self) -> RecorderStatus:
        wait = self._last_read + self.min_interval_s - time.monotonic()
        if wait > 0:
            with self._cond:
                self._cond.wait_for(lambda: self._closed, timeout=wait)
        with self._cond:
            self._cond.wait_for(lambda: self._fresh or self._closed)
            if self._closed:
                raise StopIteration
            self._fresh = False
            self._last_read = time.monotonic()
            assert self._status is not None  # _fresh is only set together with a status
            return self._status


class TelemetrySubscriber:
    """Connect to a publisher; iterate its statuses; send commands if granted control.

        with TelemetrySubscriber("tcp://127.0.0.1:7421", control=True) as sub:
            for status in sub:          # blocks; ends when the recorder goes away
                print(status.state, status.episode)
            sub.send(Command.STOP)

    `control=True` asks for control; `self.control` says whether it was granted and
    `self.refusal` why not.
    """

    def __init__(self, address: str | None = None, control: bool = False,
                 connect_timeout_s: float = 3.0) -> None:
        self.address = Address.parse(address)
        self.requested_control = control
        self.control = False
        self.refusal = ""
        self._send_lock = threading.Lock()
        self._closed = False
        sock = socket.socket(self.address.family, socket.SOCK_STREAM)
        sock.settimeout(connect_timeout_s)
        try:
            sock.connect(self.address.sockaddr)
        except OSError:
            sock.close()
            raise TelemetryError(
                f"no recorder is publishing at {self.address}; start `platform record` first"
            ) from None
        self._sock = sock
        self._buffer = bytearray()  # bytes after the last whole line
        self._pending: collections.deque[bytes] = collections.deque()  # whole lines not yet read
        try:
            self._send({"type": "hello", "protocol": PROTOCOL, "control": control})
            hello = self._read_message()
        except (OSError, ValueError):
            hello = None
        if hello is None or hello.get("type") != "hello":
            self.close()
            raise TelemetryError(f"the process at {self.address} did not answer as a telemetry publisher")
        sock.settimeout(None)  # from here on, reading blocks until a status or close()
        self.control = bool(hello.get("control", False))
        if control and not self.control:
            self.refusal = str(hello.get("reason", "the recorder refused control"))

    def _send(self, message: dict) -> None:
        with self._send_lock:
            self._sock.sendall(_line(message))

    def _read_lines(self) -> list[bytes]:
        """Block until at least one whole line arrives; return every whole line buffered."""
        while b"\n" not in self._buffer:
            chunk = self._sock.recv(65536)
            if not chunk:
                return []
            self._buffer += chunk
            if len(self._buffer) > _MAX_LINE:
                raise ValueError("telemetry line too long")
        *lines, rest = bytes(self._buffer).split(b"\n")
        self._buffer = bytearray(rest)
        return [line for line in lines if line.strip()]

    def _read_message(self) -> dict | None:
        while not self._pending:
            lines = self._read_lines()
            if not lines:
                return None
            self._pending.extend(lines)
        return json.loads(self._pending.popleft())

    def __iter__(self) -> Iterator[RecorderStatus]:
        return self

    def __next__(self) -> RecorderStatus:
        """The newest status received; StopIteration when the publisher goes away or after
        close(). Statuses that queued up in the socket while the reader was busy are
        skipped (latest wins), so a slow reader sees the present, not a backlog."""
        while not self._closed:
            try:
                if not self._pending:
                    self._pending.extend(self._read_lines())
                    if not self._pending:
                        break
                newest = None
                while self._pending:
                    message = json.loads(self._pending.popleft())
                    if message.get("type") == "status":
                        newest = message
            except (OSError, ValueError):
                break
            if newest is not None:
                return RecorderStatus.from_json(newest["status"])
        self.close()
        raise StopIteration

    def send(self, command: Command) -> None:
        """Send a command to the recorder (only if control was requested and granted)."""
        if not self.control:
            reason = self.refusal or "this monitor is read-only; attach with `platform monitor --control`"
            raise TelemetryError(f"cannot send '{Command(command).value}': {reason}")
        try:
            self._send({"type": "command", "command": Command(command).value})
        except OSError:
            raise TelemetryError(f"the recorder at {self.address} is gone; the command was not sent") from None

    def close(self) -> None:
        """Disconnect; a reader blocked in iteration wakes and stops. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self._sock.close()

    def __enter__(self) -> TelemetrySubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
