"""Compression for the store's arrays, by name (the `store.image_codec` config value).

Camera frames are one chunk a frame, so an image codec (JPEG, JPEG-XL) can compress each
frame as a picture; numbers use lossless Blosc. The codecs are numcodecs codecs recorded
in each array's `.zarray`, so any zarr reader that has imagecodecs registered can decode
them (Diffusion Policy and UMI register imagecodecs the same way).
"""

from __future__ import annotations

import numcodecs
import numpy as np
from numcodecs.abc import Codec

from shallowpi.errors import StoreError

IMAGE_CODECS = ("jpeg", "jpegxl", "blosc-zstd", "blosc-lz4", "none")
LOSSLESS_IMAGE_CODECS = ("blosc-zstd", "blosc-lz4", "none")  # the rest lose detail at each encode


def register_image_codecs() -> None:
    """Make imagecodecs' numcodecs codecs (imagecodecs_jpeg, ...) known to zarr readers."""
    from imagecodecs.numcodecs import Jpeg, Jpegxl, register_codecs

    register_codecs(verbose=False)
    for codec_class in (Jpeg, Jpegxl):
        numcodecs.register_codec(_portable(codec_class))


_PORTABLE: dict[type[Codec], type[Codec]] = {}


def _portable(codec_class: type[Codec]) -> type[Codec]:
    """The codec, naming only the settings it was given when zarr writes `.zarray`.

    imagecodecs writes every constructor argument into a codec's config, and new releases
    add arguments (Jpeg's `fancyupsampling`) that older releases reject when they read the
    config back. The robot's Python 3.10 has an older imagecodecs than the workstation, so
    a store names only what it set: {"id": "imagecodecs_jpeg", "level": 90}. Registered
    under the same codec id, so arrays opened from disk use it too.
    """
    if codec_class not in _PORTABLE:

        class Portable(codec_class):
            def get_config(self) -> dict:
                return {k: v for k, v in super().get_config().items() if v is not None}

        Portable.__name__ = Portable.__qualname__ = codec_class.__name__
        _PORTABLE[codec_class] = Portable
    return _PORTABLE[codec_class]


def image_codec(name: str, quality: int = 90) -> Codec | None:
    """The codec for camera frames: jpeg/jpegxl take `quality` (0-100), blosc is lossless."""
    register_image_codecs()
    if name == "jpeg":
        from imagecodecs.numcodecs import Jpeg

        return _portable(Jpeg)(level=quality)
    if name == "jpegxl":
        from imagecodecs.numcodecs import Jpegxl

        # imagecodecs' Jpegxl is lossless unless told otherwise, whatever the level.
        return _portable(Jpegxl)(level=quality, effort=1, lossless=False)
    if name == "blosc-zstd":
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "blosc-lz4":
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "none":
        return None
    raise StoreError(f"unknown image codec '{name}'; choose one of: {', '.join(IMAGE_CODECS)}")


def numeric_codec() -> Codec:
    """Lossless Blosc zstd level 3 with byte shuffle, for every non-image array."""
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)


def as_stored(codec: Codec | None, frame: np.ndarray) -> np.ndarray:
    """`frame` as a training loader reads it back from a store written with `codec`
    (uint8 [H, W, C] -> the same shape): a live frame passed through this is what the
    policy saw in training, JPEG artefacts included."""
    if codec is None:
        return frame
    chunk = np.ascontiguousarray(frame)[np.newaxis]  # the stored chunk's shape, [1, H, W, C]
    return np.asarray(codec.decode(codec.encode(chunk))).reshape(frame.shape).astype(frame.dtype, copy=False)
