"""TelemetryPublisher: the recorder's or executor's side of the telemetry protocol (transport.py).

The control loop calls `TelemetryPublisher.publish(status)` every tick. That call only
stores a snapshot: no byte is serialised and no socket is touched on the loop's thread.
One sender thread owns the ZeroMQ sockets; at most `max_hz` times a second it encodes the
newest status and hands it to a PUB socket, which never blocks (see transport.py for what
a subscriber that does not keep up gets).

In-process, the recorder's own dashboard reads through `StatusMailbox` (the same
latest-wins handoff without a socket) and sends commands with `TelemetryPublisher.submit`,
so the control loop drains one command queue, `commands()`, whoever sent them.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import json
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import zmq

from shallowpi.durable_files import FileLockHeld, release_file_lock, take_named_lock
from shallowpi.errors import ConfigError
from shallowpi.telemetry import envelope
from shallowpi.telemetry.address import (
    STATUS_SUFFIX,
    Address,
    TelemetryError,
    control_key_path,
    ensure_private_dir,
    listening,
    loopback_ipv6,
    require_socket_path_fits,
    resolve_address,
)
from shallowpi.telemetry.envelope import Status
from shallowpi.telemetry.mailbox import DEFAULT_MAX_HZ, StatusMailbox
from shallowpi.telemetry.status import Command, Request
from shallowpi.telemetry.transport import (
    _CLOSE_LINGER_MS,
    _MAX_CONTROL_MESSAGE,
    PROTOCOL,
    SEND_HWM,
)

__all__ = ["TelemetryPublisher"]

log = logging.getLogger(__name__)

_MAX_PENDING_COMMANDS = 256  # commands nobody drains are dropped oldest-first, with a warning
# Peers granted control held at once. A dashboard that reconnects is a new peer each time
# (its DEALER's routing id): at this many the ones gone are forgotten (_prune_granted).
_MAX_GRANTED = 256
_WARN_EVERY_S = 10.0  # one warning line per kind this often; the ones between are counted


class _WarningLimiter:
    """Warnings of one kind at most once per `every_s` seconds, each line saying how many
    like it were not logged since the last: a peer flooding junk or refused commands (one
    warning per message) filled a disk with the log. Thread-safe: the sender thread and
    in-process dashboards (submit) both warn. `clock`: seconds, monotonic."""

    def __init__(self, every_s: float = _WARN_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}  # kind -> when its last line was logged
        self._held: dict[str, int] = {}  # kind -> warnings not logged since

    def warn(self, kind: str, message: str, *args: Any) -> None:
        """Log `message % args` as a warning unless one of `kind` was logged in the last
        `every_s` seconds (then count it)."""
        with self._lock:
            now = self.clock()
            last = self._last.get(kind)
            if last is not None and now - last < self.every_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return
            held, self._last[kind] = self._held.pop(kind, 0), now
        if held and last is not None:
            message += f"; {held} more like it in the last {now - last:.0f} s not logged"
        log.warning(message, *args)

    def flush(self) -> None:
        """One line per kind for the warnings counted and not yet logged (at close)."""
        with self._lock:
            held, self._held = self._held, {}
        for kind, count in held.items():
            log.warning("telemetry: %d more warnings like '%s' not logged", count, kind)


def _in_use(path: str) -> TelemetryError:
    """The one-line error for a socket path another publisher serves (or is binding)."""
    return TelemetryError(f"a recorder is already publishing at {path}; stop it, or pass "
                          "telemetry.address=PATH (another socket path) to publish beside it")


def _checked_rate(value: Any) -> float:
    """telemetry.max_hz as a float (statuses a second). ConfigError, one line, unless it is a
    number above 0: 0 or below read as "no cap" without a word, null was float()'s traceback."""
    try:
        rate = float(value)  # a number, or the text of one
    except (TypeError, ValueError):
        rate = float("nan")
    if isinstance(value, bool) or not rate > 0:
        raise ConfigError("telemetry.max_hz must be a number above 0 (the most statuses a second a dashboard or "
                          f"monitor is sent), got {'null' if value is None else value}")
    return rate


def _identity(info: os.stat_result) -> tuple[int, int]:
    """(device, inode): which file a path names, whatever was written in it since."""
    return info.st_dev, info.st_ino


class TelemetryPublisher:
    """Serve the newest status to every subscriber; collect their commands.

    The control loop calls `publish(status)` each tick and `commands()` to drain what
    dashboards asked for. `publish` keeps a snapshot; the sender thread serialises it
    later, on its own thread, so the loop never pays for JSON or sockets. `kind` names
    the status type published (a key of `envelope.STATUS_TYPES`).

    `max_hz` (telemetry.max_hz) caps the statuses a second each subscriber gets, the
    in-process dashboard's feed (`local_feed`) included.

    Raises TelemetryError if another publisher serves the address or it cannot be bound,
    ConfigError for a `max_hz` that is not above 0.
    """

    def __init__(self, address: str, allow_control: bool = True, max_hz: float = DEFAULT_MAX_HZ,
                 kind: str = "recorder") -> None:
        max_hz = _checked_rate(max_hz)
        self.address = Address.parse(address)
        self.kind = kind
        envelope.status_type(kind)  # an unknown kind fails here, not in a subscriber
        self.allow_control = allow_control
        # Control for the process's own dashboard whatever allow_control says: it is the
        # operator's E-STOP. Handed to it through its environment (LOCAL_CONTROL_ENV).
        self.local_token = secrets.token_hex(16)
        # Over TCP any user of the computer can connect: remote control there needs this
        # key, which only this user can read (control_key_path); a Unix socket is 0600.
        self._control_key = secrets.token_hex(16)
        self._control_key_file: Path | None = None  # where it is written (TCP only)
        self.max_hz = max_hz
        self.min_interval_s = 1.0 / max_hz
        # Written by publish() on the loop's thread, read by the sender: a tuple swap is
        # atomic under the GIL, so neither side takes a lock.
        self._latest: tuple[int, Status, float] | None = None  # (seq, status, time.monotonic() at publish)
        self._seq = 0
        self._commands: collections.deque[Request] = collections.deque()
        # Queued by the sender thread and in-process dashboards, drained by the control loop:
        # a full queue's eviction walks it, which a drain beside it broke (the command lost).
        self._commands_lock = threading.Lock()
        self._mailboxes: list[StatusMailbox] = []
        # The sender thread's state (read elsewhere only as plain ints).
        self._subscribers = 0
        # DEALER identities that asked for control and got it: at most _MAX_GRANTED, those
        # gone dropped (_prune_granted); a live one is never dropped, or its E-STOP would be
        # ignored without a word to it (a subscriber is not told of a refused command).
        self._granted: set[bytes] = set()
        self._warnings = _WarningLimiter()
        self._sent_seq = -1
        self._sent_at = 0.0
        self.statuses_sent = 0
        self._stop = threading.Event()
        # A socket path is this publisher's while it holds `<path>.lock` (taken before the
        # check and the bind, held until close): asking `listening()` and then binding let
        # two started together both bind the path.
        self._lock_fd: int | None = None
        self._files: dict[str, tuple[int, int]] = {}  # the files it made: {path: (st_dev, st_ino)}
        self._context = zmq.Context()
        try:
            self._bind()
        except BaseException:
            self._context.destroy(linger=0)
            self._remove_files()
            self._unlock()
            raise
        self._thread = threading.Thread(target=self._serve, name="telemetry-sender", daemon=True)
        self._thread.start()
        # Debug, not info: a command that fails after this must still print one line only.
        log.debug("telemetry: publishing %s statuses at %s (remote control %s)", kind, self.address,
                  "allowed" if allow_control else "off")

    @classmethod
    def from_config(cls, telemetry: Mapping[str, Any], robot: str, kind: str = "recorder") -> TelemetryPublisher:
        """From the config's `telemetry:` block (address, allow_remote_control, max_hz);
        a null address means the default for `robot` (see default_address)."""
        return cls(
            resolve_address(telemetry.get("address"), robot),
            allow_control=bool(telemetry.get("allow_remote_control", True)),
            max_hz=telemetry.get("max_hz", DEFAULT_MAX_HZ),
            kind=kind,
        )

    # -- the control loop's side -------------------------------------------------------

    def publish(self, status: Status) -> None:
        """Make `status` the newest one. Never blocks, never raises.

        Takes a snapshot (~5 µs), so the loop may keep updating the same status in place.
        """
        try:
            status = status.snapshot()
        except Exception:  # not a status we know: publish it as it is
            log.debug("telemetry: could not snapshot a status", exc_info=True)
        self._seq += 1
        self._latest = (self._seq, status, time.monotonic())
        for mailbox in self._mailboxes:
            mailbox.publish(status)

    def commands(self) -> list[Request]:
        """Commands received since the last call, oldest first, each with the state its
        sender's screen showed (never blocks)."""
        with self._commands_lock:
            drained = list(self._commands)
            self._commands.clear()
        return drained

    # -- in-process dashboards ---------------------------------------------------------

    def submit(self, request: Request | Command) -> None:
        """Queue a command from an in-process dashboard (thread-safe): the sink for one."""
        self._queue_command(Request.of(request))

    def local_feed(self, max_hz: float | None = None) -> StatusMailbox:
        """A latest-wins status feed for a dashboard in this process (see StatusMailbox), at
        most `max_hz` statuses a second: by default the publisher's own (telemetry.max_hz),
        as its subscribers get (it was always 20, whatever the config said)."""
        mailbox: StatusMailbox = StatusMailbox(max_hz=self.max_hz if max_hz is None else max_hz)
        self._mailboxes = [*self._mailboxes, mailbox]  # copy-on-write: publish() iterates it
        if self._latest is not None:
            mailbox.publish(self._latest[1])
        return mailbox

    @property
    def subscriber_count(self) -> int:
        """Status subscribers connected now (ZeroMQ tells the XPUB of each join and leave)."""
        return self._subscribers

    @property
    def status_address(self) -> str:
        """Where statuses are published (what a subscriber's hello is told)."""
        return self._status_address

    def close(self) -> None:
        """Send the newest status if not yet sent, stop serving, remove the socket files.
        Idempotent."""
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(zmq.ZMQError):
            self._wake_w.send(b"", zmq.NOBLOCK)
        self._thread.join(timeout=2.0)
        for mailbox in self._mailboxes:
            mailbox.close()
        with contextlib.suppress(zmq.ZMQError):
            self._wake_w.close(linger=0)
        if not self._thread.is_alive():
            self._context.term()
        self._remove_files()
        self._unlock()  # after the files: a successor binds only once they are gone
        self._warnings.flush()

    def __enter__(self) -> TelemetryPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sockets -----------------------------------------------------------------------

    def _bind(self) -> None:
        address = self.address
        if address.path is not None:
            require_socket_path_fits(address.path)
            status = Address(path=f"{address.path}{STATUS_SUFFIX}")
            ensure_private_dir(Path(address.path).parent)  # where the lock file goes
            self._lock(address.path)
            for taken in (address, status):
                # libzmq unlinks whatever file is at the path when it binds: never one that is
                # not a socket (`telemetry.address=~/notes.txt`)...
                if os.path.lexists(taken.path) and not stat.S_ISSOCK(os.lstat(taken.path).st_mode):
                    raise TelemetryError(f"{taken.path} exists and is not a socket, and publishing there would "
                                         "delete it; pass telemetry.address=PATH (a new socket path)")
                # ... nor a running recorder's: ask first, so a second one never steals it.
                if listening(taken):
                    raise _in_use(taken.path)  # type: ignore[arg-type]
        else:
            status = Address(host=address.host, port=0)
        self._router = self._context.socket(zmq.ROUTER)
        self._xpub = self._context.socket(zmq.XPUB)
        for sock in (self._router, self._xpub):
            sock.linger = _CLOSE_LINGER_MS
            if loopback_ipv6(address):
                sock.ipv6 = True
        self._router.maxmsgsize = _MAX_CONTROL_MESSAGE
        self._router.sndhwm = 16  # replies to a peer that does not read are dropped, never block
        self._xpub.sndhwm = SEND_HWM
        self._xpub.setsockopt(zmq.XPUB_VERBOSER, 1)  # every join and leave, to count subscribers
        try:
            self._router.bind(address.endpoint)
            if address.path is not None:
                self._made(address.path)
                self._xpub.bind(status.endpoint)
                self._made(status.path)  # type: ignore[arg-type]
                for path in (address.path, status.path):
                    os.chmod(path, 0o600)  # only this user may watch or steer the robot
            else:
                port = self._xpub.bind_to_random_port(status.endpoint.rsplit(":", 1)[0])
                status = Address(host=address.host, port=port)
        except (zmq.ZMQError, OSError) as exc:  # __init__ removes what was made
            raise TelemetryError(
                f"cannot publish telemetry at {address}: {exc}; is another recorder running? "
                "pass telemetry.address=PATH (another socket path or tcp://127.0.0.1:PORT)"
            ) from None
        if address.path is None and address.port == 0:
            # tcp://127.0.0.1:0 asks for any free port: report the one we got.
            endpoint = self._router.getsockopt_string(zmq.LAST_ENDPOINT)
            self.address = Address(host=address.host, port=int(endpoint.rsplit(":", 1)[1]))
        if address.path is None:
            self._write_control_key()
        self._status_address = str(status)
        # close() wakes the sender through an in-process pair.
        self._wake_r = self._context.socket(zmq.PAIR)
        self._wake_w = self._context.socket(zmq.PAIR)
        wake = f"inproc://telemetry-wake-{id(self)}"
        self._wake_r.bind(wake)
        self._wake_w.connect(wake)

    def _write_control_key(self) -> None:
        """The TCP control key, 0600 in this user's private folder, in place before any
        subscriber can read a half-written one (written aside, then renamed)."""
        path = control_key_path(self.address)
        ensure_private_dir(path.parent)
        aside = path.with_name(path.name + ".partial")
        with contextlib.suppress(FileNotFoundError):
            aside.unlink()
        descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(self._control_key)
        os.replace(aside, path)  # a key a killed publisher left at this port is replaced
        self._made(str(path))
        self._control_key_file = path

    def _lock(self, path: str) -> None:
        """Hold `<path>.lock` (durable_files' flock) until close, or raise the one-line "in
        use" TelemetryError if another publisher, in this process or another, holds it (or
        one came and went each of 8 tries: one is starting there). close() unlinks the file
        before it lets go, so the lock is taken on the file the name holds now."""
        lock = f"{path}.lock"
        try:
            self._lock_fd = take_named_lock(lock, f"pid {os.getpid()}", tries=8)
        except FileLockHeld:
            raise _in_use(path) from None
        self._made(lock)

    def _unlock(self) -> None:
        """Let go of the socket path's lock, if held (its file is removed before, with the others)."""
        if self._lock_fd is not None:
            release_file_lock(self._lock_fd, clean=True)
            self._lock_fd = None

    def _made(self, path: str) -> None:
        """Record a file this publisher made at `path` (its identity, for close to know it)."""
        self._files[path] = _identity(os.lstat(path))

    def _remove_files(self) -> None:
        """Remove the files this publisher made, each only while it is still the one it
        made: a path another publisher has bound since is that one's (a socket file gone,
        its recorder runs on unreachable: no monitor, no dashboard, no E-STOP)."""
        for path, made in self._files.items():
            with contextlib.suppress(OSError):
                if _identity(os.lstat(path)) == made:
                    os.unlink(path)
        self._files = {}

    def _proves(self, message: Mapping[str, Any], secret: str, field: str) -> bool:
        """Whether `message[field]` is `secret` (compared in constant time)."""
        offered = str(message.get(field) or "")
        # Bytes: compare_digest raises TypeError on a str with characters outside ASCII
        # (surrogatepass: a lone surrogate, which JSON allows, is no UnicodeEncodeError).
        return bool(offered) and hmac.compare_digest(offered.encode("utf-8", "surrogatepass"), secret.encode())

    def _may_steer(self, message: Mapping[str, Any]) -> bool:
        """A hello's or command's right to control: the process's own dashboard (its token)
        always; another subscriber where remote control is allowed, over TCP only with the
        control key (a Unix socket admits this user only)."""
        if self._proves(message, self.local_token, "token"):
            return True
        return self.allow_control and (self.address.path is not None or self._proves(message, self._control_key, "key"))

    # -- the sender thread -------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        for sock in (self._router, self._xpub, self._wake_r):
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(self._next_timeout_ms()))
                if self._router in ready:
                    self._receive()
                if self._xpub in ready:
                    self._track_subscriptions()
                self._deliver()
            self._deliver(final=True)
        except Exception:  # the sender must never take the recorder down
            log.exception("telemetry: sender thread failed; subscribers disconnected")
        finally:
            for sock in (self._router, self._xpub, self._wake_r):
                sock.close()

    def _next_timeout_ms(self) -> int:
        """Sleep until a newer status may go out (bounded), or 50 ms when nothing is due."""
        latest = self._latest
        if latest is None or not self._subscribers:
            return 50
        due_ms = round((self._sent_at + self.min_interval_s - time.monotonic()) * 1e3)
        if latest[0] == self._sent_seq:
            return max(5, min(50, due_ms))  # sent: a newer status is probably a tick away
        return max(1, min(50, due_ms))

    def _track_subscriptions(self) -> None:
        while True:
            try:
                event = self._xpub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if event[:1] == b"\x01":
                self._subscribers += 1
                self._sent_seq = -1  # a newcomer gets the newest status now, not at the next tick
                log.info("telemetry: subscriber connected (%d now)", self._subscribers)
            elif event[:1] == b"\x00":
                self._subscribers = max(0, self._subscribers - 1)
                log.info("telemetry: subscriber disconnected (%d left)", self._subscribers)

    def _receive(self) -> None:
        while True:
            try:
                frames = self._router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            if len(frames) != 2:
                continue  # not from a DEALER speaking this protocol
            try:
                self._handle(*frames)
            except Exception as exc:  # one odd message (nested 30,000 deep, a lone surrogate) must
                # not end the sender, and every dashboard and E-STOP key with it
                self._warnings.warn("unhandled", "telemetry: ignored a message that could not be handled (%s)",
                                    type(exc).__name__)

    def _handle(self, identity: bytes, raw: bytes) -> None:
        """One message from a subscriber: a hello (answered) or a command (queued when its
        sender may steer)."""
        try:
            message = json.loads(raw)
            kind = message["type"]
        except (ValueError, KeyError, TypeError):
            self._warnings.warn("junk", "telemetry: ignored a message that is not a telemetry message")
            return
        if kind == "hello":
            self._hello(identity, bool(message.get("control", False)), message)
        elif kind == "command":
            # Over TCP each command proves itself too: a ROUTER numbers its peers in
            # sequence, and a peer may claim a granted one's number once it has left.
            if identity not in self._granted or not self._may_steer(message):
                self._warnings.warn("read-only", "telemetry: ignored a command from a read-only subscriber")
                return
            seen, episode = message.get("seen"), message.get("episode")
            try:
                request = Request(Command(message.get("command")), seen if isinstance(seen, str) else None,
                                  episode if isinstance(episode, int) else None)
            except ValueError:
                self._warnings.warn("unknown command", "telemetry: ignored unknown command %r",
                                    message.get("command"))
                return
            self._queue_command(request)

    def _hello(self, identity: bytes, wants_control: bool, message: Mapping[str, Any]) -> None:
        granted = wants_control and self._may_steer(message)
        crowded = False
        if granted and identity not in self._granted and len(self._granted) >= _MAX_GRANTED:
            self._prune_granted()
            # Still full, every one of them connected: this peer is told no, rather than a
            # live one losing its grant unawares. The process's own dashboard (its token) is
            # let in whatever: its keys are the operator's E-STOP.
            crowded = len(self._granted) >= _MAX_GRANTED and not self._proves(message, self.local_token, "token")
            granted = not crowded
        if granted:
            self._granted.add(identity)
        reply: dict[str, Any] = {"type": "hello", "protocol": PROTOCOL, "kind": self.kind,
                                 "status": self._status_address, "control": granted}
        if crowded:
            reply["reason"] = (f"{len(self._granted)} subscribers connected now have control, the most this recorder "
                               "grants: close one of them (or attach read-only)")
            self._warnings.warn("crowded", "telemetry: refused control to a subscriber: %d connected have it",
                                len(self._granted))
        elif wants_control and not granted:
            reply["reason"] = ("this recorder does not accept remote commands (telemetry.allow_remote_control is false)"
                               if not self.allow_control else
                               f"over TCP only the user running the recorder may send commands, with the key it "
                               f"wrote to that user's {self._control_key_file}")
        with contextlib.suppress(zmq.Again):
            self._router.send_multipart([identity, json.dumps(reply).encode()], zmq.NOBLOCK)

    def _prune_granted(self) -> None:
        """Forget the peers granted control that have gone (a dashboard that reconnected is a
        new peer; ZeroMQ does not tell a ROUTER who left). Each is sent a ping with
        ROUTER_MANDATORY on: a peer gone is refused at once (EHOSTUNREACH), one connected
        takes it (or its queue is full: EAGAIN) and keeps its grant. A subscriber never
        reads its control socket after the hello, so a ping costs it a queued message, at
        most the ROUTER's sndhwm of them."""
        ping = json.dumps({"type": "ping"}).encode()
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            for identity in list(self._granted):
                try:
                    self._router.send_multipart([identity, ping], zmq.NOBLOCK)
                except zmq.Again:
                    pass  # connected, its queue full: still there
                except zmq.ZMQError as exc:
                    if exc.errno != zmq.EHOSTUNREACH:
                        raise
                    self._granted.discard(identity)
        finally:
            self._router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # replies to a peer gone are dropped, as before
        log.debug("telemetry: %d subscribers with control still connected", len(self._granted))

    def _queue_command(self, command: Request) -> None:
        with self._commands_lock:
            full = len(self._commands) >= _MAX_PENDING_COMMANDS
            if full:
                # The oldest other than an E-STOP: a flood of commands must not push one out.
                oldest = next((r for r in self._commands if r.command is not Command.ESTOP), self._commands[0])
                self._commands.remove(oldest)
            self._commands.append(command)
        if full:
            self._warnings.warn("queue full", "telemetry: command queue full (nobody drains commands()); "
                                "dropped the oldest")

    def _send_final(self, frame: bytes) -> None:
        """The last status, which no newer one will follow: it waits, up to the close linger,
        for a subscriber whose one-status queue is still full (a monitor a busy machine has
        starved) instead of being dropped, which would have that monitor take the recorder
        for vanished rather than stopped."""
        self._xpub.setsockopt(zmq.XPUB_NODROP, 1)  # a full queue now refuses the send (Again)
        deadline = time.monotonic() + _CLOSE_LINGER_MS / 1e3
        while True:
            try:
                self._xpub.send(frame, zmq.NOBLOCK)
                return
            except zmq.Again:
                if time.monotonic() >= deadline:
                    log.debug("telemetry: the last status found a subscriber's queue full; dropped")
                    return
                time.sleep(0.005)

    def _deliver(self, final: bool = False) -> None:
        """Send the newest status if there is a subscriber, it is new, and it is due."""
        latest = self._latest
        if latest is None or not self._subscribers or latest[0] == self._sent_seq:
            return
        now = time.monotonic()
        if not final and now - self._sent_at < self.min_interval_s:
            return
        seq, status, published = latest
        try:
            # Its age goes with it: a newcomer is sent the newest status at once, which is
            # old if the loop has stopped publishing (stuck), and must not pass for live.
            frame = envelope.encode(status, seq, age_s=now - published)
        except Exception:  # a status mutated while we read it: skip this one
            log.debug("telemetry: could not serialise a status", exc_info=True)
            return
        if final:
            self._send_final(frame)
        else:  # XPUB never blocks: a subscriber whose queue is full (SEND_HWM) misses this one
            with contextlib.suppress(zmq.Again):
                self._xpub.send(frame, zmq.NOBLOCK, copy=False)
        self._sent_seq, self._sent_at = seq, now
        self.statuses_sent += 1
