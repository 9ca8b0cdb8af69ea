"""The training stage's error: one line naming what stops a run and how to go on."""

from shallowpi.errors import PlatformError


class TrainingError(PlatformError):
    """A run that cannot start or continue: bad data, existing run folder, NaN loss,
    a checkpoint that exists or belongs to another config."""

    exit_code = 4
