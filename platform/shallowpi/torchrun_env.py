"""Where this process stands among those torchrun launched, read from the variables torchrun
sets, without importing torch (the CLI reads it before any command, the robot's install has
no torch) and without joining the process group.

    torchrun_rank()   # (rank, world size), or None outside torchrun
"""

from __future__ import annotations

import os

# Set by torchrun (and any launcher that forms a torch process group from the environment):
# all three, or the process is not one of a group (a plain `platform train`).
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR")


def torchrun_rank() -> tuple[int, int] | None:
    """(rank, number of processes) of a process torchrun launched, a single one included;
    None outside torchrun, or where RANK or WORLD_SIZE is not a whole number (no group would
    form from them either)."""
    if not set(TORCHRUN_VARIABLES) <= os.environ.keys():
        return None
    try:
        return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    except ValueError:
        return None
