"""Errors meant for the operator: one line that names the thing and the fix.

The CLI prints a `PlatformError` as `error: <message>` and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable


class PlatformError(Exception):
    """A problem the user can fix: bad input, missing device, corrupt file."""

    exit_code = 2


class ConfigError(PlatformError):
    """An unknown config option, group choice or key."""


def refuse_unknown_keys(section: str, keys: Iterable[str], settings: type, exclude: Iterable[str] = ()) -> None:
    """ConfigError naming the keys of a config section (`section`, e.g. "distill") that the
    dataclass `settings` has no field for, with the valid ones. Fields in `exclude` are
    not the section's to set (they come from another section)."""
    valid = {f.name for f in dataclasses.fields(settings)} - set(exclude)
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise ConfigError(f"unknown {section} keys {unknown}; valid keys: {', '.join(sorted(valid))}")


class StoreError(PlatformError):
    """A dataset store that is missing, corrupt, foreign or used wrongly."""

    exit_code = 3
