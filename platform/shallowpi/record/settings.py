"""The `record:` and `store:` config sections as a recording writes with them.

One reading for `platform record` and `platform deploy --record`, so the two cannot drift:
deploy --record wrote every store as JPEG q90 in 1024-row chunks, behind a fixed 256-frame
queue, with no disk reserve, whatever store.* and record.* said. A store keeps the
settings it was created with (its header): adding to it, those are the ones that apply.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from shallowpi.config import SECTION_KEYS
from shallowpi.data.features import Feature
from shallowpi.data.store import EpisodeStore, StoreSettings
from shallowpi.errors import ConfigError
from shallowpi.record.disk import raw_frame_bytes

log = logging.getLogger(__name__)

# The store.* keys a config sets (config.SECTION_KEYS, which refuses any other); StoreSettings'
# other fields (image_batch, durable) are the code's own (benchmarks, tests), not a lab's.
STORE_KEYS = tuple(sorted(SECTION_KEYS["store"]))
MIN_QUEUE_FRAMES = 8  # whatever record.queue_mb says: a camera's batch (StoreSettings.image_batch) fits
# What a queued frame holds in memory besides its arrays' data, bytes (CPython 3.12, numpy 2,
# 64-bit; sys.getsizeof of the writer's queued `_Frame` and of what it holds): the object
# 48 and its __dict__ 104, the values dict 184, the capture-times dict 64, the timestamp
# float 24, the byte-count int 28, the queue's slot 8; and each array's header 112 (getsizeof
# of an array less its nbytes). A recording without cameras queues ~80 bytes of joints a
# frame: counted alone, record.queue_mb=512 let ~5 GB of frames in before back-pressure.
FRAME_OVERHEAD_BYTES = 460
ARRAY_OVERHEAD_BYTES = 112

# record.* numbers: {name: (lowest, whether `lowest` itself is allowed, whether null is)}.
# Null: record.fps is the robot's, record.sim_noise is off.
_NUMBERS: dict[str, tuple[float, bool, bool]] = {
    "fps": (0.0, False, True),
    "queue_mb": (0.0, False, False),
    "disk_reserve_mb": (0.0, True, False),
    "sim_noise": (0.0, True, True),
    "sim_noise_tau_s": (0.0, False, False),
}


def check_record_numbers(record: Mapping[str, Any], names: Iterable[str] = tuple(_NUMBERS)) -> None:
    """ConfigError (one line, naming the setting) for a `record.*` number among `names` (of
    fps, queue_mb, disk_reserve_mb, sim_noise, sim_noise_tau_s) that is not a number, not
    finite, or out of its range; a key `record` lacks keeps its reader's default. Called
    before anything connects. NaN passes every comparison (nan < 0 is False): a NaN
    record.sim_noise reached the arm as "action contains NaN or inf", a NaN queue_mb or
    disk_reserve_mb was a ValueError traceback, an infinite sim_noise_tau_s turned the noise
    off without a word. (record.catch_up_speed has its own rule: robots/catch_up.speed_problem.)"""
    for name in names:
        if name not in record:
            continue
        value = record[name]
        lowest, inclusive, nullable = _NUMBERS[name]
        if value is None and nullable:
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < lowest or (value == lowest and not inclusive):
            bound = f"{'>=' if inclusive else '>'} {lowest:g}"
            raise ConfigError(f"record.{name} must be a finite number {bound}{' or null' if nullable else ''}, "
                              f"got {value!r}")


def store_settings(section: Mapping[str, Any]) -> StoreSettings:
    """The config's `store:` section as the settings a new store is created with (a key it
    lacks keeps StoreSettings' default)."""
    return StoreSettings(**{key: section[key] for key in STORE_KEYS if key in section})


def refuse_other_settings(store: EpisodeStore, section: Mapping[str, Any], given: Collection[str]) -> None:
    """ConfigError (one line, naming both values) when a `store.*` override the user gave
    (`given`: the dotted keys of the overrides, e.g. "store.image_codec") asks for another
    setting than `store` was created with. A store writes with its header's settings for
    good: the override was silently ignored while the run's provenance said it applied."""
    for key in STORE_KEYS:
        if f"store.{key}" not in given or key not in section:
            continue
        have, asked = getattr(store.settings, key), section[key]
        if asked != have:
            raise ConfigError(f"store.{key}={asked} cannot apply to {store.path.name}: it was created with "
                              f"store.{key}={have}, which it keeps; drop the override to add episodes to it, or "
                              "record into another --dataset")


def warn_other_settings(store: EpisodeStore, section: Mapping[str, Any], what: str) -> None:
    """Log (one warning) the `store.*` settings of `section` that `store`, created with
    others, does not write with; `what` names the caller (e.g. "--record deployed.zarr")."""
    differ = [f"store.{key} {getattr(store.settings, key)} (the config's: {section[key]})" for key in STORE_KEYS
              if key in section and section[key] != getattr(store.settings, key)]
    if differ:
        log.warning("%s: the store writes with the settings it was created with: %s; the config's apply to new "
                    "stores only", what, ", ".join(differ))


def queue_frames(queue_mb: float, features: Mapping[str, Feature]) -> int:
    """Frames of `features` that `queue_mb` (record.queue_mb, MB of 1e6 bytes) of memory
    holds: the writer's queue, at least MIN_QUEUE_FRAMES. A frame counts its data
    uncompressed and the objects around it (FRAME_OVERHEAD_BYTES, ARRAY_OVERHEAD_BYTES a
    feature): ten times its data for joints alone, nothing much beside a camera's picture."""
    frame = raw_frame_bytes(features) + FRAME_OVERHEAD_BYTES + ARRAY_OVERHEAD_BYTES * len(features)
    return max(MIN_QUEUE_FRAMES, int(queue_mb * 1e6 // frame))


def reserve_bytes(record: Mapping[str, Any]) -> int:
    """record.disk_reserve_mb in bytes: what stays free on the dataset's disk (DiskBudget)."""
    return int(record["disk_reserve_mb"] * 1e6)
