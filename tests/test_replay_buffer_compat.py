"""A store reads the way Diffusion Policy's and UMI's ReplayBuffer read theirs.

Their reader (diffusion_policy/common/replay_buffer.py) opens the zarr group, takes
`root["meta"]["episode_ends"]`, requires every `root["data"][key]` to have at least
`episode_ends[-1]` rows, and slices episodes out of the concatenated arrays with the
cumulative ends. Camera arrays decode through imagecodecs' numcodecs codecs, which UMI
registers with `register_codecs()` before opening a store. The reader here runs in a
separate interpreter that never imports shallowpi, so nothing of ours helps it decode.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from shallowpi.data import EpisodeStore
from shallowpi.data.codecs import IMAGE_CODECS
from shallowpi.data.store import StoreSettings
from store_fixtures import make_store, synthetic_frame

CODECS = [c for c in IMAGE_CODECS if c != "none"]

# What a ReplayBuffer-style reader does, standalone: zarr format 2, imagecodecs'
# codecs registered the way UMI does, episodes cut with episode_ends.
READER = r"""
import sys
import warnings
import numpy as np
import zarr
from imagecodecs.numcodecs import register_codecs

assert "shallowpi" not in sys.modules
register_codecs(verbose=False)
for path, out in zip(sys.argv[1::2], sys.argv[2::2]):
    root = zarr.open(path, mode="r", zarr_format=2)
    # ReplayBuffer.copy_from_store loads every member of meta/ as an array; zarr warns
    # about (and DP would trip on) anything there that is not one.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        members = list(root["meta"].keys())
        arrays = [key for key, _ in root["meta"].arrays()]
    if members != arrays or "episode_ends" not in arrays:
        raise SystemExit(f"{path}: meta/ holds {members}, arrays {arrays}")
    ends = root["meta"]["episode_ends"][:]
    episodes = {}
    for key, array in root["data"].arrays():
        if array.shape[0] < ends[-1]:
            raise SystemExit(f"{path}: data/{key} has {array.shape[0]} rows < episode_ends[-1] {ends[-1]}")
        start = 0
        for i, end in enumerate(ends):
            episodes[f"{i}/{key}"] = array[start:end]
            start = end
    episodes["episode_ends"] = ends
    np.savez(out, **episodes)
"""


def read_like_replay_buffer(paths):
    """Run the standalone reader on each store; returns {store: {"i/key": rows}}."""
    args = []
    for path in paths:
        args += [str(path), str(path.with_suffix(".npz"))]
    result = subprocess.run([sys.executable, "-c", READER, *args], capture_output=True, text=True,
                            timeout=120, cwd=paths[0].parent)
    assert result.returncode == 0, result.stderr[-2000:]
    return {path: dict(np.load(path.with_suffix(".npz"))) for path in paths}


def test_every_episode_and_key_reads_the_same_through_a_replay_buffer(tmp_path):
    paths = []
    for codec in CODECS:
        path = tmp_path / f"{codec}.zarr"
        make_store(path, episodes=3, length=6,
                   settings=StoreSettings(image_codec=codec, durable=False, image_batch=4)).close()
        paths.append(path)
    read = read_like_replay_buffer(paths)
    for path in paths:
        store = EpisodeStore.open(path)
        rows = read[path]
        np.testing.assert_array_equal(rows["episode_ends"], store.episode_ends)
        keys = {name.split("/", 1)[1] for name in rows if "/" in name}
        assert keys == set(store.read_episode(0))  # every array, timestamps included
        for index in range(len(store)):
            ours = store.read_episode(index)
            for key, values in ours.items():
                theirs = rows[f"{index}/{key}"]
                assert theirs.dtype == values.dtype, (path.name, key)
                np.testing.assert_array_equal(theirs, values, err_msg=f"{path.name} episode {index} {key}")


def test_a_live_recording_is_invisible_to_a_replay_buffer(tmp_path, rng):
    """While an episode is being recorded its frames are already in data/ (the image
    batches), but episode_ends does not cover them, so a reader slicing by episode_ends
    sees exactly the committed episodes."""
    path = tmp_path / "live.zarr"
    store = make_store(path, episodes=2, length=5, settings=StoreSettings(durable=False, image_batch=2))
    writer = store.begin_episode("in flight")
    for t in range(7):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    assert store._group["data/observation.images.front"].shape[0] > store.num_frames  # tail on disk
    rows = read_like_replay_buffer([path])[path]
    np.testing.assert_array_equal(rows["episode_ends"], [5, 11])
    assert rows["1/observation.images.front"].shape[0] == 6
    writer.discard()
    store.close()


# The keyword arguments of the JPEG and JPEG-XL codecs in imagecodecs' numcodecs module
# as of release 2022.9.26, the copy UMI vendors (diffusion_policy/codecs/
# imagecodecs_numcodecs.py) and registers under the same codec ids. numcodecs builds a
# codec as cls(**config), so any other key in a store's .zarray breaks their reader.
OLD_IMAGECODECS_ARGS = {
    "imagecodecs_jpeg": {"bitspersample", "tables", "header", "colorspace_data", "colorspace_jpeg",
                         "level", "subsampling", "optimize", "smoothing"},
    "imagecodecs_jpegxl": {"level", "effort", "distance", "lossless", "decodingspeed", "photometric",
                           "bitspersample", "planar", "primaries", "transfer", "usecontainer",
                           "squeeze", "index", "keeporientation", "numthreads"},
}


@pytest.mark.parametrize("codec", ["jpeg", "jpegxl"])
def test_image_codec_config_is_readable_by_older_imagecodecs(tmp_path, codec):
    store = make_store(tmp_path / "s.zarr", episodes=1, length=2,
                       settings=StoreSettings(image_codec=codec, durable=False))
    config = json.loads((tmp_path / "s.zarr/data/observation.images.front/.zarray").read_text())["compressor"]
    codec_id = config.pop("id")
    unknown = set(config) - OLD_IMAGECODECS_ARGS[codec_id]
    assert not unknown, f"{codec_id} config keys an older imagecodecs rejects: {sorted(unknown)}"
    store.close()
