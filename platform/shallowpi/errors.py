"""Errors meant for the operator: one line that names the thing and the fix.

The CLI prints a `PlatformError` as `error: <message>` and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Iterable

# Errors of the disk a command writes to, not of the command: what went wrong, in words (the
# CLI's one line, cli.file_system_error; an export's refusal, deploy/export_onnx.py).
FILE_SYSTEM_ERRORS = {
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    # FAT32's 4 GiB a file (a lab's USB stick), or the shell's `ulimit -f`
    errno.EFBIG: "the file is larger than the file system (or ulimit -f) allows",
    # a failing SD card, USB stick or cable (a Jetson's storage): the device's, not the code's
    errno.EIO: "an I/O error on the device (see dmesg): the device or its cable is failing",
}


class PlatformError(Exception):
    """A problem the user can fix: bad input, missing device, corrupt file."""

    exit_code = 2


class ConfigError(PlatformError):
    """An unknown config option, group choice or key."""


# Keys whose meaning changed under a new name: an old override must not pass (or fail
# with a generic "unknown key"), it is refused saying what to write instead.
RENAMED_KEYS = {
    "deploy.seam_bound": "deploy.seam_bound (joint units) is now deploy.seam_ticks, in ticks of each joint's top "
                         "speed: 2.5 is 0.25 rad at 3 rad/s and 30 fps",
}


def refuse_renamed_key(key: str) -> None:
    """ConfigError saying what `key` (dotted, e.g. "deploy.seam_bound") became, if it was renamed."""
    if key in RENAMED_KEYS:
        raise ConfigError(RENAMED_KEYS[key])


def refuse_unknown_keys(section: str, keys: Iterable[str], settings: type, exclude: Iterable[str] = ()) -> None:
    """ConfigError naming the keys of a config section (`section`, e.g. "distill") that the
    dataclass `settings` has no field for, with the valid ones (a renamed key: what it
    became). Fields in `exclude` are not the section's to set (they come from another section)."""
    for key in keys:
        refuse_renamed_key(f"{section}.{key}")
    valid = {f.name for f in dataclasses.fields(settings)} - set(exclude)
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise ConfigError(f"unknown {section} keys {unknown}; valid keys: {', '.join(sorted(valid))}")


def refuse_fractional(section: str, settings: object, names: Iterable[str], error: type[Exception] = ConfigError,
                      ) -> None:
    """`error` (one line) naming the first of `settings`' attributes `names` that holds a
    number with a fraction, or a boolean, where a count is meant (steps=2.5 would pass
    every range check and fail deep in a loop); whole floats (2.0) are made ints. None passes."""
    for name in names:
        value = getattr(settings, name)
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            continue
        if isinstance(value, float) and value.is_integer():
            setattr(settings, name, int(value))
            continue
        raise error(f"{section}.{name} must be a whole number, got {value!r}")


class StoreError(PlatformError):
    """A dataset store that is missing, corrupt, foreign or used wrongly."""

    exit_code = 3


class StoreEditedError(StoreError):
    """A store edited (renumbered by a delete, its last episode dropped) while a reader had
    it open: what the reader read since is of no one store. Opening it again is the fix;
    the store itself is sound."""


def written_path(exc: OSError) -> str | bytes | None:
    """The file an OSError's failed write was for: of a call on two paths (os.link,
    os.replace: a chunk file's rename into place) the destination, which the error names
    second; None when it names none (zarr's writes, among others)."""
    return exc.filename2 if exc.filename2 is not None else exc.filename
