"""Where telemetry lives: addresses (a Unix socket path or a loopback TCP port), the default
socket per user and robot, and a plain-socket probe for a live publisher.

    /run/user/1000/shallowpi/arm.sock     a Unix socket path (unix:// prefix optional); the
                                          default, per user and per robot: default_address()
    tcp://127.0.0.1:7421                  a loopback TCP port (0: any free port)

Loopback only: the robot's computer is reached over SSH, not the network. A Unix socket is
this user's alone (mode 0600); a loopback port is open to every user of the computer, so
over TCP the publisher writes a control key to this user's private folder
(`control_key_path`), and only a process that reads it may send commands.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from shallowpi.errors import PlatformError


class TelemetryError(PlatformError):
    """No publisher at the address, a bad address, or a command from a read-only monitor."""


STATUS_SUFFIX = ".status"
"""A publisher at a socket PATH serves its statuses at PATH + STATUS_SUFFIX."""

# sockaddr_un.sun_path: 108 bytes on Linux, 104 on macOS and the BSDs, its closing NUL
# included. A longer path cannot be bound at all (libzmq says so only at bind).
_SUN_PATH_BYTES = 108 if sys.platform.startswith("linux") else 104
MAX_SOCKET_PATH_BYTES = _SUN_PATH_BYTES - 1 - len(STATUS_SUFFIX)
"""The longest socket path a publisher can serve: its status twin must fit sun_path too."""


TELEMETRY_DIR_ENV = "SHALLOWPI_TELEMETRY_DIR"
"""An environment variable naming the one folder for this user's default sockets and
control keys, in place of $XDG_RUNTIME_DIR/shallowpi and the /tmp fallback: for a lab that
runs its recorders as a service and its monitors from logins, and for tests, which must
not meet the user's own recorders."""


def runtime_dir() -> Path:
    """This user's folder for telemetry sockets: $SHALLOWPI_TELEMETRY_DIR if set, else
    $XDG_RUNTIME_DIR/shallowpi (per user, tmpfs, mode 0700), else `fallback_dir`."""
    chosen = os.environ.get(TELEMETRY_DIR_ENV)
    if chosen:
        return Path(chosen).expanduser()
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "shallowpi"
    return fallback_dir()


SHARED_TMP = Path("/tmp")
"""The fallback's parent: /tmp itself, not $TMPDIR (`tempfile.gettempdir`), which a login's
PAM (libpam-tmpdir) sets per user while a recorder systemd started has none: the two must
agree on the folder, or the monitor finds no recorder."""


def fallback_dir() -> Path:
    """This user's telemetry folder in the shared /tmp, /tmp/shallowpi-<uid>: where
    $XDG_RUNTIME_DIR is unset or too deep for a socket path."""
    return SHARED_TMP / f"shallowpi-{os.getuid()}"


def socket_path_fits(path: str | Path) -> bool:
    """Whether a publisher can serve `path` and its status twin (MAX_SOCKET_PATH_BYTES)."""
    return len(os.fsencode(str(path))) <= MAX_SOCKET_PATH_BYTES


def require_socket_path_fits(path: str | Path) -> None:
    """TelemetryError, one line, for a socket path too long to bind (`socket_path_fits`):
    ZeroMQ said so only at bind, worded as if another recorder held it."""
    size = len(os.fsencode(str(path)))
    if size > MAX_SOCKET_PATH_BYTES:
        raise TelemetryError(
            f"telemetry socket path {path} is {size} bytes; a Unix socket path can be at most "
            f"{MAX_SOCKET_PATH_BYTES} here (the kernel's limit, less '{STATUS_SUFFIX}' for its twin): pass a "
            "shorter telemetry.address=PATH, or tcp://127.0.0.1:PORT"
        )


def default_address(robot: str) -> str:
    """The socket a recorder of `robot` publishes on by default: one per user and robot,
    so two robots recorded from one computer (or two users) never collide. In `runtime_dir`,
    or in `fallback_dir` where that path would be too long for a socket (a deep
    $XDG_RUNTIME_DIR); `socket_folders` lets a monitor find it in either. A folder named
    by $SHALLOWPI_TELEMETRY_DIR is used as it is (too deep: the publisher says so)."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", robot or "robot")
    path = runtime_dir() / f"{name}.sock"
    if socket_path_fits(path) or os.environ.get(TELEMETRY_DIR_ENV):  # a folder named outright is kept
        return str(path)
    return str(fallback_dir() / path.name)


def socket_folders() -> list[Path]:
    """Where a recorder's default socket may be, in order: `runtime_dir`, then this user's
    `fallback_dir` where that differs and is private (a recorder started without
    $XDG_RUNTIME_DIR, by systemd or cron, or whose runtime folder is too deep for a socket
    path, publishes there while an SSH login has it set). Only `runtime_dir` where
    $SHALLOWPI_TELEMETRY_DIR names it."""
    folders = [runtime_dir()]
    if os.environ.get(TELEMETRY_DIR_ENV):
        return folders
    fallback = fallback_dir()
    if fallback != folders[0] and fallback.is_dir() and _private(fallback):
        folders.append(fallback)
    return folders


def live_default_address(robot: str) -> str:
    """The default socket of `robot` where a recorder listens now, in `socket_folders`'
    order; else `default_address(robot)`. What a monitor attaches to."""
    name = Path(default_address(robot)).name
    for folder in socket_folders():
        if listening(Address(path=str(folder / name)), timeout_s=0.1):
            return str(folder / name)
    return default_address(robot)


def live_robots() -> list[str]:
    """Robots whose recorder publishes on its default socket now, in any of
    `socket_folders` (for error messages)."""
    return sorted({path.stem for folder in socket_folders() if folder.is_dir() for path in folder.glob("*.sock")
                   if listening(Address(path=str(path)), timeout_s=0.1)})


def resolve_address(configured: str | None, robot: str) -> str:
    """`telemetry.address` if set, else the default for `robot`."""
    return str(configured).strip() if configured and str(configured).strip() else default_address(robot)


@dataclass(frozen=True)
class Address:
    """A parsed telemetry address: a Unix socket path or a loopback TCP host and port."""

    path: str | None = None
    host: str | None = None
    port: int = 0

    @classmethod
    def parse(cls, text: str) -> Address:
        """A path (unix:// optional) or tcp://LOOPBACK:PORT; TelemetryError for anything else."""
        text = (text or "").strip()
        if not text:
            raise TelemetryError("empty telemetry address; pass telemetry.address=PATH or tcp://127.0.0.1:PORT")
        if text.startswith("tcp://"):
            host, sep, port = text[len("tcp://"):].rpartition(":")
            host = host.strip("[]")
            if not sep or not port.isdigit():
                raise TelemetryError(f"telemetry address '{text}' needs a port, e.g. tcp://127.0.0.1:7421")
            if int(port) > 65535:  # ZeroMQ wrapped 99999 to 34463: the dashboard found no one there
                raise TelemetryError(f"telemetry address '{text}': a TCP port is 1 to 65535 (0: any free one)")
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
        """The socket family: AF_UNIX for a path, AF_INET6 for an IPv6 host, else AF_INET."""
        if self.path is not None:
            return socket.AF_UNIX
        return socket.AF_INET6 if ":" in (self.host or "") else socket.AF_INET

    @property
    def sockaddr(self) -> str | tuple[str, int]:
        """What `socket.connect` takes for `family`: the path, or (host, port)."""
        return self.path if self.path is not None else (self.host or "127.0.0.1", self.port)

    @property
    def endpoint(self) -> str:
        """The ZeroMQ endpoint: ipc://PATH or tcp://HOST:PORT."""
        return f"ipc://{self.path}" if self.path is not None else str(self)

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        host = f"[{self.host}]" if ":" in (self.host or "") else self.host
        return f"tcp://{host}:{self.port}"


def listening(address: Address, timeout_s: float = 0.5) -> bool:
    """Whether a process accepts connections at `address` (a plain socket connect)."""
    if address.path is not None and not os.path.exists(address.path):
        return False
    probe = socket.socket(address.family, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(address.sockaddr)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def control_key_path(address: Address, folder: Path | None = None) -> Path:
    """Where a publisher at a TCP `address` keeps its control key: this user's private
    telemetry folder (`folder`, default runtime_dir, 0700), the file 0600, one per host and
    port."""
    host = re.sub(r"[^A-Za-z0-9.]", "_", address.host or "")
    return (folder or runtime_dir()) / f"tcp-{host}-{address.port}.key"


def control_key_paths(address: Address) -> list[Path]:
    """Where a subscriber looks for that key: runtime_dir, then the /tmp fallback of this
    user (a recorder started without $XDG_RUNTIME_DIR, by systemd or cron, keeps it there
    while an SSH login has it set). Only a folder this user owns, private, is read."""
    return [control_key_path(address, folder) for folder in socket_folders()]


def _private(folder: Path) -> bool:
    """Whether this user owns `folder` and no one else may enter or list it."""
    info = folder.stat()
    return info.st_uid == os.getuid() and not info.st_mode & 0o077


def ensure_private_dir(folder: Path) -> None:
    """Create the socket folder (0700); refuse this user's telemetry folder (`runtime_dir`
    or the shared /tmp's `fallback_dir`) if another user owns it or may enter it."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if folder in (runtime_dir(), fallback_dir()) and not _private(folder):
        info = folder.stat()
        raise TelemetryError(
            f"{folder} is not private to this user (owner uid {info.st_uid}, mode "
            f"{oct(info.st_mode & 0o777)}); remove it, or pass telemetry.address=PATH"
        )


def loopback_ipv6(address: Address) -> bool:
    """True for tcp://[::1]:PORT: ZeroMQ sockets need `ipv6 = True` to bind or connect there."""
    return address.path is None and ":" in (address.host or "")
