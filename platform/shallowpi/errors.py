"""Errors meant for the operator: one line that names the thing and the fix.

The CLI prints a `PlatformError` as `error: <message>` and exits non-zero without a
traceback; anything else is a bug and keeps its traceback.
"""


class PlatformError(Exception):
    """A problem the user can fix: bad input, missing device, corrupt file."""

    exit_code = 2


class ConfigError(PlatformError):
    """An unknown config option, group choice or key."""


class StoreError(PlatformError):
    """A dataset store that is missing, corrupt, foreign or used wrongly."""

    exit_code = 3
