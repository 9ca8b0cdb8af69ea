"""Frames written straight to chunk files are the chunks zarr itself would write, and
frames read straight from them are the arrays zarr itself would read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shallowpi.data import zarr_compat
from shallowpi.data.chunk_files import (
    FrameLayout,
    chunk_name,
    read_frames,
    undecodable_frames,
    write_frames,
)
from shallowpi.data.codecs import IMAGE_CODECS, image_codec
from shallowpi.errors import StoreError
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


def _zarr_camera(tmp_path, rng, codec_name):
    frames = np.stack([synthetic_frame(rng, t, 48, 64)["observation.images.front"] for t in range(6)])
    group = zarr_compat.open_group(tmp_path / "g.zarr", mode="w")
    array = zarr_compat.create_array(group, "cam", (6, 48, 64, 3), (1, 48, 64, 3), "uint8",
                                     image_codec(codec_name, 90))
    array[:] = frames
    folder = tmp_path / "g.zarr" / "cam"
    return array, folder, FrameLayout.of(folder, json.loads((folder / ".zarray").read_text()))


@pytest.mark.parametrize("codec_name", IMAGE_CODECS)
def test_direct_reads_match_zarr_reads(tmp_path, rng, codec_name):
    array, folder, layout = _zarr_camera(tmp_path, rng, codec_name)
    (folder / chunk_name(4, 3)).unlink()  # zarr reads a missing chunk as the fill value
    for start, stop in ((0, 1), (3, 4), (4, 5), (0, 6), (2, 5), (3, 3)):
        frames = read_frames(layout, start, stop)
        np.testing.assert_array_equal(frames, array[start:stop])
        assert frames.dtype == np.uint8 and frames.flags.writeable  # torch.from_numpy takes it as is


def test_a_frame_that_does_not_decode_names_its_file(tmp_path, rng):
    _, folder, layout = _zarr_camera(tmp_path, rng, "jpeg")
    (folder / chunk_name(2, 3)).write_bytes(b"not a jpeg")
    with pytest.raises(StoreError, match=r"cam/2\.0\.0\.0 does not decode to a 48x64x3 frame"):
        read_frames(layout, 0, 3)
    (folder / chunk_name(2, 3)).write_bytes(image_codec("jpeg", 90).encode(np.zeros((1, 24, 64, 3), np.uint8)))
    with pytest.raises(StoreError, match="does not decode"):
        read_frames(layout, 2, 3)  # a picture of the wrong size is as lost


def _cuts(data: bytes, codec_name: str) -> dict[str, bytes]:
    """A frame's chunk file cut short where its codec still decodes it: libjpeg, anywhere
    in the scan data after the header (the rest grey), and Blosc-LZ4 by its last 1-5 bytes."""
    header = data.index(b"\xff\xda") + 2 if codec_name == "jpeg" else len(data) // 2  # after JPEG's SOS
    return {"by 1 byte": data[:-1], "by 2 bytes (a JPEG's end marker)": data[:-2], "by 5 bytes": data[:-5],
            "midway through its data": data[: (header + len(data)) // 2]}


@pytest.mark.parametrize("codec_name", IMAGE_CODECS)
def test_a_frame_cut_short_is_refused_though_its_codec_decodes_it(tmp_path, rng, codec_name):
    """A JPEG frame cut anywhere after its header decoded without an error, at full size,
    the missing rest grey (128): `dataset check` passed it, and training read it. A cut
    Blosc-LZ4 frame decoded too (Blosc read past the end of the buffer). Both are named
    now; JPEG-XL's decoder and the size check caught the others already."""
    _, folder, layout = _zarr_camera(tmp_path, rng, codec_name)
    info = json.loads((folder / ".zarray").read_text())
    path = folder / chunk_name(2, 3)
    whole = path.read_bytes()
    for where, cut in _cuts(whole, codec_name).items():
        path.write_bytes(cut)
        bad = undecodable_frames(str(folder), range(6), 3, 48 * 64 * 3, info["compressor"])
        assert [row for row, _ in bad] == [2], (where, bad)
        with pytest.raises(StoreError, match=r"cam/2\.0\.0\.0 (is cut short|is shorter|does not decode)"):
            read_frames(layout, 2, 3)  # what training reads
    path.write_bytes(whole)
    assert undecodable_frames(str(folder), range(6), 3, 48 * 64 * 3, info["compressor"]) == []
    read_frames(layout, 0, 6)


def test_other_layouts_are_left_to_zarr():
    info = {"shape": [6, 48, 64, 3], "chunks": [1, 48, 64, 3], "dtype": "|u1", "order": "C",
            "filters": None, "dimension_separator": ".", "compressor": None, "fill_value": 0}
    assert FrameLayout.of("cam", info) is not None
    assert FrameLayout.of("cam", {**info, "chunks": [2, 48, 64, 3]}) is None
    assert FrameLayout.of("cam", {**info, "chunks": [1, 24, 64, 3]}) is None
    assert FrameLayout.of("cam", {**info, "dimension_separator": "/"}) is None
    assert FrameLayout.of("cam", {**info, "order": "F"}) is None
    assert FrameLayout.of("cam", {**info, "filters": [{"id": "delta", "dtype": "u1"}]}) is None


def test_a_forked_child_reads_many_frames(tmp_path, rng):
    import multiprocessing

    array, _, layout = _zarr_camera(tmp_path, rng, "jpeg")
    read_frames(layout, 0, 6)  # the parent's pool has threads now; a fork copies it without them
    context = multiprocessing.get_context("fork")
    with context.Pool(1) as pool:
        frames = pool.apply_async(read_frames, (layout, 0, 6)).get(timeout=60)
    np.testing.assert_array_equal(frames, array[:])
