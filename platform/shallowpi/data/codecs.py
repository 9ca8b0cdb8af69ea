"""Compression for the store's arrays, by name (the `store.image_codec` config value).

Camera frames are one chunk a frame, so an image codec (JPEG, JPEG-XL) can compress each
frame as a picture; numbers use lossless Blosc. The codecs are numcodecs codecs recorded
in each array's `.zarray`, so any zarr reader that has imagecodecs registered can decode
them (Diffusion Policy and UMI register imagecodecs the same way).
"""

from __future__ import annotations

import numcodecs
from numcodecs.abc import Codec

from shallowpi.errors import StoreError

IMAGE_CODECS = ("jpeg", "jpegxl", "blosc-zstd", "blosc-lz4", "none")


def register_image_codecs() -> None:
    """Make imagecodecs' numcodecs codecs (imagecodecs_jpeg, ...) known to zarr readers."""
    from imagecodecs.numcodecs import register_codecs

    register_codecs(verbose=False)


def image_codec(name: str, quality: int = 90) -> Codec | None:
    """The codec for camera frames: jpeg/jpegxl take `quality` (0-100), blosc is lossless."""
    register_image_codecs()
    if name == "jpeg":
        from imagecodecs.numcodecs import Jpeg

        return Jpeg(level=quality)
    if name == "jpegxl":
        from imagecodecs.numcodecs import Jpegxl

        return Jpegxl(level=quality, effort=1)
    if name == "blosc-zstd":
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "blosc-lz4":
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    if name == "none":
        return None
    raise StoreError(f"unknown image codec '{name}'; choose one of: {', '.join(IMAGE_CODECS)}")


def numeric_codec() -> Codec:
    return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=numcodecs.Blosc.SHUFFLE)
