"""Any status type on the wire: one typed envelope, one table of the kinds there are.

A publisher sends one kind of status (the recorder's `RecorderStatus` today, the
executor's status later); each message is one JSON frame

    {"kind": "recorder", "seq": 17, "status": {...the status's to_json()...}}

`seq` counts the publisher's statuses, so a subscriber that gets one twice (the publisher
re-sends its newest status when a subscriber joins) or out of date keeps the newest. One
frame, not a topic frame + a body: ZeroMQ's CONFLATE (latest wins on the subscriber's
side) keeps single-part messages only.

A new status type is a dataclass with `kind`, `control_allowed`, `snapshot()`,
`to_json()` and `from_json()`, and one line in `STATUS_TYPES`.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Protocol, TypeVar

from shallowpi.errors import PlatformError
from shallowpi.telemetry.executor_status import ExecutorStatus
from shallowpi.telemetry.status import RecorderStatus

StatusT = TypeVar("StatusT", bound="Status")


class Status(Protocol):
    """What telemetry carries: a live status a process publishes, a dashboard shows."""

    kind: ClassVar[str]  # the name in STATUS_TYPES and in every envelope
    control_allowed: bool  # set by the subscriber: may this reader send commands?
    age_s: float  # set on receipt: seconds between its publishing and its sending

    def snapshot(self: StatusT) -> StatusT:
        """A copy another thread may read while its owner keeps updating this one."""
        ...

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types only (enums as their values); `from_json` reads it back."""
        ...

    @classmethod
    def from_json(cls: type[StatusT], data: dict[str, Any]) -> StatusT:
        """Tolerant of other versions: unknown keys ignored, missing ones defaulted."""
        ...


# The one table of status kinds: a publisher's kind must be here, and a subscriber decodes
# what it receives with the class named here.
STATUS_TYPES: dict[str, type[Status]] = {
    RecorderStatus.kind: RecorderStatus,
    ExecutorStatus.kind: ExecutorStatus,
}


class EnvelopeError(PlatformError):
    """A frame that is not a status envelope, or of a kind this version does not know."""


def status_type(kind: str) -> type[Status]:
    """The class for `kind`; EnvelopeError naming the known kinds otherwise."""
    try:
        return STATUS_TYPES[kind]
    except KeyError:
        known = ", ".join(sorted(STATUS_TYPES))
        raise EnvelopeError(f"unknown telemetry status kind '{kind}' (this version knows: {known}); "
                            "update shallowpi on this side") from None


def encode(status: Status, seq: int, age_s: float = 0.0) -> bytes:
    """One frame: the status in its envelope, as compact UTF-8 JSON, with `age_s`, the
    seconds since it was published (measured by the sender, on its own clock)."""
    message = {"kind": status.kind, "seq": seq, "age_s": round(max(0.0, age_s), 3), "status": status.to_json()}
    return json.dumps(message, separators=(",", ":")).encode()


def decode(frame: bytes, expected: type[StatusT]) -> tuple[int, StatusT]:
    """(seq, status) from one frame, the status's `age_s` set from the envelope;
    EnvelopeError if it is not an `expected.kind` status."""
    try:
        message = json.loads(frame)
        kind, seq, data = message["kind"], int(message["seq"]), message["status"]
        age_s = float(message.get("age_s", 0.0))
    except (ValueError, KeyError, TypeError):
        raise EnvelopeError("received a frame that is not a telemetry status envelope") from None
    if kind != expected.kind:
        raise EnvelopeError(f"expected '{expected.kind}' statuses, received '{kind}'")
    status = expected.from_json(data)
    status.age_s = age_s
    return seq, status
