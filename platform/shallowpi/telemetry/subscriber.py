"""TelemetrySubscriber: a dashboard's side of the telemetry protocol (transport.py).

It says hello on the publisher's control socket, then reads statuses from its status
socket, keeping only the newest (CONFLATE): a reader that is busy skips statuses, it never
falls behind. Iteration ends when the publisher closes or dies (ZeroMQ's disconnect event;
no goodbye is needed) or on close() from any thread. Commands go back over the control
socket, if control was asked for and granted.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from shallowpi.telemetry import envelope
from shallowpi.telemetry.address import (
    Address,
    TelemetryError,
    control_key_paths,
    listening,
    loopback_ipv6,
)
from shallowpi.telemetry.envelope import EnvelopeError
from shallowpi.telemetry.status import Command, Request
from shallowpi.telemetry.transport import (
    _CLOSE_LINGER_MS,
    _MAX_CONTROL_MESSAGE,
    _MAX_STATUS_MESSAGE,
    PROTOCOL,
)

__all__ = ["TelemetrySubscriber"]


class TelemetrySubscriber:
    """Connect to a publisher; iterate its statuses; send commands if granted control.

        with TelemetrySubscriber("tcp://127.0.0.1:7421", control=True) as sub:
            for status in sub:          # blocks; ends when the publisher goes away
                print(status.state, status.episode)
            sub.send(Command.STOP)

    `self.kind` is the publisher's status kind (the statuses are of
    `envelope.STATUS_TYPES[kind]`). `control=True` asks for control; `self.control` says
    whether it was granted and `self.refusal` why not. Each status's `control_allowed`
    is this subscriber's grant. `token`: the publisher's `local_token`, which a recorder
    hands its own dashboard, granting control even where remote control is off.

    Raises TelemetryError when nothing publishes at the address, or it does not answer as
    a telemetry publisher of a kind this version knows.
    """

    def __init__(self, address: str, control: bool = False, connect_timeout_s: float = 3.0,
                 token: str | None = None) -> None:
        self.address = Address.parse(address)
        self.requested_control = control
        self._token = token
        self.control = False
        self.refusal = ""
        self.kind = ""
        self._closed = False
        self._gone = False  # the publisher went away: nothing more to read or send
        self._last_seq = -1
        self._state_lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._read_lock = threading.RLock()
        if not listening(self.address):
            raise TelemetryError(f"no recorder is publishing at {self.address}; start `platform record` (or `platform "
                                 "deploy`) first")
        self._context = zmq.Context()
        try:
            self._connect(connect_timeout_s)
        except BaseException:
            self._context.destroy(linger=0)
            raise

    def _connect(self, timeout_s: float) -> None:
        ipv6 = loopback_ipv6(self.address)
        dealer = self._dealer = self._context.socket(zmq.DEALER)
        dealer.linger = _CLOSE_LINGER_MS * 5  # a command sent just before close() still leaves
        dealer.maxmsgsize = _MAX_CONTROL_MESSAGE
        dealer.ipv6 = ipv6
        dealer.connect(self.address.endpoint)
        # Each key this user holds for the address, newest first, until one is granted: a
        # key file left by a recorder killed on the same port must not hide the live one.
        proofs = self._read_proofs()
        for attempt, proof in enumerate(proofs, start=1):
            hello_msg = {"type": "hello", "protocol": PROTOCOL, "control": self.requested_control, **proof}
            dealer.send(json.dumps(hello_msg).encode())
            hello = None
            if dealer.poll(int(timeout_s * 1e3)):
                with contextlib.suppress(ValueError, zmq.ZMQError):
                    hello = json.loads(dealer.recv(zmq.NOBLOCK))
            if not isinstance(hello, dict) or hello.get("type") != "hello" or "status" not in hello:
                raise TelemetryError(f"the process at {self.address} did not answer as a telemetry publisher")
            self._proof = proof
            if not self.requested_control or hello.get("control") or attempt == len(proofs):
                break
        try:
            self._type = envelope.status_type(str(hello.get("kind", "")))
        except EnvelopeError as exc:
            raise TelemetryError(f"{self.address}: {exc}") from None
        self.kind = self._type.kind
        status_address = Address.parse(str(hello["status"]))  # loopback only, whatever it says
        self.control = bool(hello.get("control", False))
        if self.requested_control and not self.control:
            self.refusal = str(hello.get("reason", "the recorder refused control"))

        sub = self._sub = self._context.socket(zmq.SUB)
        sub.linger = 0
        sub.ipv6 = ipv6
        sub.maxmsgsize = _MAX_STATUS_MESSAGE
        sub.setsockopt(zmq.CONFLATE, 1)  # keep only the newest status: latest wins
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        # Disconnected: the publisher closed or died. Connect retried: it went away between
        # its hello and this connect.
        self._monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED)
        sub.connect(status_address.endpoint)
        self._wake_r = self._context.socket(zmq.PAIR)
        self._wake_w = self._context.socket(zmq.PAIR)
        wake = f"inproc://subscriber-wake-{id(self)}"
        self._wake_r.bind(wake)
        self._wake_w.connect(wake)
        self._poller = zmq.Poller()
        for sock in (self._sub, self._monitor, self._wake_r):
            self._poller.register(sock, zmq.POLLIN)

    def _read_proofs(self) -> list[dict[str, str]]:
        """What a hello or command may carry to be allowed control, to try in turn: the token
        a recorder hands its own dashboard, and over TCP each control key found in this
        user's private folders for the address (unreadable to another user, who then
        watches only), the newest file first. At least one (perhaps empty) proof."""
        base = {"token": self._token} if self._token else {}
        if not self.requested_control or self.address.path is not None:
            return [base]
        keys: list[tuple[float, str]] = []
        for path in control_key_paths(self.address):
            with contextlib.suppress(OSError):
                keys.append((path.stat().st_mtime, path.read_text().strip()))
        keys.sort(reverse=True)
        return [{**base, "key": key} for _, key in keys] or [base]

    def _send(self, message: dict) -> None:
        with self._send_lock:
            if self._closed or self._gone:
                raise OSError("the publisher is gone")
            self._dealer.send(json.dumps(message).encode(), zmq.NOBLOCK)

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        """The newest status received; StopIteration when the publisher goes away or after
        close(). Statuses that arrived while the reader was busy are skipped (latest wins),
        so a slow reader sees the present, not a backlog."""
        with self._read_lock:
            while not self._closed and not self._gone:
                ready = dict(self._poller.poll())
                if self._wake_r in ready:
                    break
                if self._sub in ready:
                    status = self._take()
                    if status is not None:
                        return status
                if self._monitor in ready:
                    event = recv_monitor_message(self._monitor)
                    if event["event"] in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
                        self._gone = True
                        # The last status may still be on its way through the SUB's queue.
                        if self._sub.poll(50):
                            status = self._take()
                            if status is not None:
                                return status
            self.close()
            raise StopIteration

    def _take(self) -> Any:
        """Decode the status waiting on the SUB socket; None if it is not newer."""
        try:
            frame = self._sub.recv(zmq.NOBLOCK)
        except zmq.Again:
            return None
        try:
            seq, status = envelope.decode(frame, self._type)
        except EnvelopeError as exc:
            self.close()
            raise TelemetryError(f"{self.address}: {exc}") from None
        if seq <= self._last_seq:
            return None  # re-sent for a newcomer: already seen
        self._last_seq = seq
        status.control_allowed = self.control
        return status

    def send(self, request: Request | Command) -> None:
        """Send a command (with the state its screen showed, for a Request) to the recorder,
        only if control was requested and granted. Raises TelemetryError otherwise, or when
        the recorder is gone."""
        request = Request.of(request)
        if not self.control:
            reason = self.refusal or "this monitor is read-only; attach with `platform monitor --control`"
            raise TelemetryError(f"cannot send '{request.command.value}': {reason}")
        seen = {key: value for key, value in (("seen", request.seen), ("episode", request.episode)) if value is not None}
        try:
            self._send({"type": "command", "command": request.command.value, **seen, **self._proof})
        except (OSError, zmq.ZMQError):
            raise TelemetryError(f"the recorder at {self.address} is gone; the command was not sent") from None

    def close(self) -> None:
        """Disconnect; a reader blocked in iteration wakes and stops. Idempotent, any thread."""
        with self._state_lock:
            if self._closed:
                return
            self._closed = True
            with contextlib.suppress(zmq.ZMQError):
                self._wake_w.send(b"", zmq.NOBLOCK)
        # The reader leaves its poll at the wake-up; then its sockets are free to close.
        with self._read_lock, self._send_lock:
            for sock in (self._sub, self._monitor, self._wake_r, self._wake_w):
                sock.close(linger=0)
            self._dealer.close()  # lingers: a command sent just before still leaves
            self._context.term()

    def __enter__(self) -> TelemetrySubscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
