"""How a store writes (`StoreSettings`), fixed at its creation and kept in its header, and
the check that a codec setting can encode frames here before any take is recorded."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shallowpi.data import chunk_files
from shallowpi.data.codecs import IMAGE_CODECS, image_codec
from shallowpi.data.features import Feature, FeatureKind
from shallowpi.errors import StoreError


@dataclass(frozen=True)
class StoreSettings:
    """How a store writes, fixed at creation and kept in its header.

    `image_codec` is one of codecs.IMAGE_CODECS and `image_quality` its quality, a whole
    number 0-100 (jpeg/jpegxl only); `numeric_chunk_rows` (>= 1) is the chunk length along
    time (rows) of every numeric array. Made with a value outside these: StoreError naming
    the setting (`store.image_quality`, the config key). Whether the codec can encode
    frames here is checked by encoding one: `EpisodeStore.create`, `check_recordable`.
    """

    image_codec: str = "jpeg"
    image_quality: int = 90
    numeric_chunk_rows: int = 1024
    image_batch: int = 8  # frames buffered per camera before a write (encoded in parallel)
    durable: bool = True  # fsync before each commit (power-cut safety); off for benchmarks

    def __post_init__(self) -> None:
        # Unchecked, numeric_chunk_rows=0 was a zarr traceback and -1 one file per row; jpeg
        # clamped image_quality=150 while the header said 150; jpegxl at -5 failed in the
        # writer's thread at the first take, the store made.
        if self.image_codec not in IMAGE_CODECS:
            raise StoreError(f"store.image_codec '{self.image_codec}' is unknown; choose one of: "
                             f"{', '.join(IMAGE_CODECS)}")
        for name, lowest, highest in (("image_quality", 0, 100), ("numeric_chunk_rows", 1, None),
                                      ("image_batch", 1, None)):
            value = getattr(self, name)
            whole = isinstance(value, int) and not isinstance(value, bool)
            if not whole or value < lowest or (highest is not None and value > highest):
                bound = f"from {lowest} to {highest}" if highest is not None else f">= {lowest}"
                raise StoreError(f"store.{name} must be a whole number {bound}, got {value!r}")


def settings_from_header(path: Path, recorded: Mapping[str, Any]) -> StoreSettings:
    """The header's settings, as they are; StoreError (one line) naming a key this version
    does not know (a store written by a newer shallowpi), which read as "damaged" (a
    TypeError). Not checked as new settings are: a store made before they were (jpeg at
    image_quality 150, which jpeg clamps) still opens, and its edits keep its settings."""
    known = {f.name for f in dataclasses.fields(StoreSettings)}
    if unknown := sorted(set(recorded) - known):
        raise StoreError(f"{path} was written with store settings this shallowpi does not know ({', '.join(unknown)}): "
                         "a newer version wrote it; upgrade shallowpi to read it")
    settings = object.__new__(StoreSettings)
    for f in dataclasses.fields(StoreSettings):
        object.__setattr__(settings, f.name, recorded.get(f.name, f.default))
    return settings


def check_encodes(features: Mapping[str, Feature], settings: StoreSettings, fix: str) -> None:
    """StoreError (one line, ending in `fix`) when `settings`' image codec cannot encode the
    frames of `features`' cameras here, tried on one small black frame of each channel
    count: a setting that fails to encode (jpegxl at a quality it refuses, an imagecodecs
    built without the codec) failed in the writer's thread at the first take, the store made."""
    codec = image_codec(settings.image_codec, settings.image_quality)
    for channels in sorted({f.shape[-1] for f in features.values() if f.kind is FeatureKind.IMAGE}):
        try:
            chunk_files.encode_frame(codec, np.zeros((16, 16, channels), np.uint8))
        except Exception as exc:  # imagecodecs' own errors (JpegxlError, ...), each its own class
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise StoreError(f"store.image_codec={settings.image_codec} at store.image_quality="
                             f"{settings.image_quality} cannot encode camera frames here "
                             f"({type(exc).__name__}: {first}); {fix}") from exc
