"""imagecodecs.numcodecs' Jpeg (decode) and Jpegxl (refused), registered under their ids."""

from __future__ import annotations

import io

import numcodecs
import numpy as np
from numcodecs.abc import Codec
from PIL import Image


class Jpeg(Codec):
    """Decodes one JPEG chunk to (H, W, 3) or (H, W) uint8 with Pillow; never encodes."""

    codec_id = "imagecodecs_jpeg"

    def __init__(self, level: int | None = None, **settings: object) -> None:
        self.level = level

    def encode(self, buf: object) -> bytes:
        raise NotImplementedError("the device shim only decodes; record with imagecodecs installed")

    def decode(self, buf: object, out: np.ndarray | None = None) -> np.ndarray:
        image = np.asarray(Image.open(io.BytesIO(bytes(memoryview(buf)))))
        if out is not None:
            out[...] = image.reshape(out.shape)
            return out
        return image


class Jpegxl(Jpeg):
    codec_id = "imagecodecs_jpegxl"

    def decode(self, buf: object, out: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError("the device shim has no JPEG-XL decoder")


def register_codecs(verbose: bool = False) -> None:
    for codec in (Jpeg, Jpegxl):
        numcodecs.register_codec(codec)
