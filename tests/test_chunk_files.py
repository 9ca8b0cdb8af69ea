"""Frames written straight to chunk files are the chunks zarr itself would write."""

from __future__ import annotations

import numpy as np
import pytest

from shallowpi.data import zarr_compat
from shallowpi.data.chunk_files import chunk_name, write_frames
from shallowpi.data.codecs import IMAGE_CODECS, image_codec
from store_fixtures import synthetic_frame


@pytest.mark.parametrize("codec_name", IMAGE_CODECS)
def test_direct_chunks_match_zarr_chunks_byte_for_byte(tmp_path, rng, codec_name):
    frames = np.stack([synthetic_frame(rng, t, 48, 64)["observation.images.front"] for t in range(5)])
    frames[2] = 0  # a frame equal to the fill value is written too
    codec = image_codec(codec_name, 90)
    group = zarr_compat.open_group(tmp_path / "g.zarr", mode="w")
    array = zarr_compat.create_array(group, "cam", (0, 48, 64, 3), (1, 48, 64, 3), "uint8", codec)
    array.resize((10, 48, 64, 3))
    array[0:5] = frames  # zarr's own path
    write_frames(tmp_path / "g.zarr" / "cam", 5, list(frames), codec)  # ours

    folder = tmp_path / "g.zarr" / "cam"
    for row in range(5):
        assert (folder / chunk_name(row + 5, 3)).read_bytes() == (folder / chunk_name(row, 3)).read_bytes()
    assert not list(folder.glob("*.partial"))
    reread = zarr_compat.open_group(tmp_path / "g.zarr", mode="r")["cam"]
    np.testing.assert_array_equal(reread[5:10], reread[0:5])
    if codec_name not in ("jpeg", "jpegxl"):
        np.testing.assert_array_equal(reread[5:10], frames)


def test_a_failing_encode_raises_in_the_caller(tmp_path):
    class Broken:
        def encode(self, buf):
            raise RuntimeError("encoder out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        write_frames(tmp_path, 0, [np.zeros((4, 4, 3), np.uint8)], Broken())
