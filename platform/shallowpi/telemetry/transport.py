"""The telemetry protocol over ZeroMQ on this machine: a process publishes, dashboards subscribe.

publisher.py holds TelemetryPublisher (the recorder's or executor's side), subscriber.py
TelemetrySubscriber (a dashboard's side); this module holds what both must agree on.

Two sockets, both bound by the publisher:

    control   ROUTER at the address the user names. A subscriber's DEALER says hello
              (protocol, wants control?) and is told the status kind, whether control was
              granted and where statuses are published; commands come in here too.
    status    XPUB (a PUB that also sees who subscribes) at `<address>.status` for a Unix
              socket, or any free loopback port for TCP.

The status socket never blocks: a subscriber whose queue holds `SEND_HWM` statuses simply
misses the next ones (latest wins), and its memory in the publisher stays bounded by that.
Subscribers keep only the newest status they received (CONFLATE), so a slow reader sees
the present, not a backlog. A subscriber that crashes is a closed connection: ZeroMQ drops
it.

Addresses (address.py): a Unix socket path, by default one per user and robot, or a
loopback TCP port.

Messages are single JSON frames (CONFLATE keeps single-part messages only):

    subscriber -> publisher   {"type": "hello", "protocol": 2, "control": true, "key": "..."}
    publisher -> subscriber   {"type": "hello", "protocol": 2, "kind": "recorder",
                               "status": "<status address>", "control": false, "reason": "..."}
    subscriber -> publisher   {"type": "command", "command": "start", "key": "..."}
    publisher -> subscriber   {"type": "ping"}  (only to the peers granted control when their
                               number reaches its bound: one that has gone is dropped; a
                               reader of the control socket ignores it)

Control: a Unix socket admits this user only (0600); a loopback TCP port admits every
user of the computer, so there a hello and each command carry the control key the
publisher wrote to its user's private folder (address.control_key_path), which another
user cannot read: they may watch, never steer. A recorder's own dashboard carries its
one-time `token` instead, which keeps its keys (E-STOP first) even where
telemetry.allow_remote_control=false refuses every other subscriber.
    publisher => subscribers  a status envelope (envelope.py): {"kind", "seq", "status"}

pyzmq is the only dependency beyond the standard library (wheels for Python 3.10 on
aarch64: the robot runs this on JetPack 6).
"""

from __future__ import annotations

__all__ = ["LOCAL_CONTROL_ENV", "PROTOCOL", "SEND_HWM"]

PROTOCOL = 2
# The environment variable through which a recorder or executor hands its own dashboard the
# publisher's one-time control token: that dashboard keeps its keys (E-STOP first) when
# telemetry.allow_remote_control=false refuses every other subscriber.
LOCAL_CONTROL_ENV = "SHALLOWPI_TELEMETRY_TOKEN"
# Statuses the publisher may hold for one subscriber that does not keep up; then it skips.
SEND_HWM = 1

# Limits the sockets of publisher.py and subscriber.py are set with: they bound the
# protocol's messages, so they live beside it. Private to this package.
_MAX_CONTROL_MESSAGE = 64 << 10  # a bigger hello or command is garbage: ZeroMQ drops the peer
_MAX_STATUS_MESSAGE = 64 << 20  # a subscriber's guard against a runaway publisher
_CLOSE_LINGER_MS = 200  # on close, time for the last status / a last command to leave
