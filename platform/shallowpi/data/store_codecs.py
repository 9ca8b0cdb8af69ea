"""The codecs a store's arrays may name, checked when it opens: only those shallowpi writes.

zarr decodes a chunk with whatever its array's `.zarray` names, so a store from elsewhere
(shared between labs, or crafted) chooses the code that reads it, numcodecs' "pickle" the
code that runs. Opening a store (`EpisodeStore.__init__`) therefore trusts none of its
arrays' descriptions: `require_written_codecs` refuses any compressor but the ones
codecs.py writes, and any filter, before a chunk is read. The other checks an open makes
on what a file says live with what they check (plain feature names: features.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from shallowpi.errors import StoreError

# The compressors shallowpi writes its arrays with (codecs.py), by numcodecs id: Blosc for
# numbers and lossless frames, imagecodecs' JPEG and JPEG-XL for lossy frames; or none (raw
# bytes); never a filter. zarr and `chunk_files` decode a chunk with whatever its array's
# `.zarray` names, and numcodecs' "pickle" runs code from the file (numcodecs unpickles it
# before 0.15.2, 0.16.6 and 0.17.1; the robot's Python 3.10 has 0.13): a store naming
# another is refused at open (`require_written_codecs`), before any chunk is read.
WRITTEN_COMPRESSORS = frozenset({"blosc", "imagecodecs_jpeg", "imagecodecs_jpegxl"})


def require_written_codecs(path: Path) -> None:
    """StoreError (one line) when an array under the store's data/ or meta/ names, in its
    `.zarray`, a compressor shallowpi never writes (`WRITTEN_COMPRESSORS`) or any filter:
    a store from elsewhere (shared between labs) whose chunks would be decoded by it, a
    "pickle" one running code from the file. Also the arrays a `.zmetadata` beside the
    header describes (shallowpi writes none; zarr-python 3 takes an array's description
    from it over the array's own). One small JSON read an array (a dozen, at 10 or 100,000
    episodes alike), no chunk. An array without a readable `.zarray` is left to the reads
    that need it (`dataset check` names it lost)."""
    for group in ("data", "meta"):
        try:
            entries = sorted(os.scandir(path / group), key=lambda entry: entry.name)
        except (FileNotFoundError, NotADirectoryError):
            continue  # no such group: the open's own reads say the store is damaged
        for entry in entries:
            _require_written_codec(path, f"{group}/{entry.name}", _json_or_none(os.path.join(entry.path, ".zarray")))
    consolidated = _json_or_none(os.path.join(path, ".zmetadata"))
    described = consolidated.get("metadata") if isinstance(consolidated, dict) else None
    for key, info in sorted(described.items()) if isinstance(described, dict) else ():
        if key.endswith("/.zarray"):
            _require_written_codec(path, f"{key.removesuffix('/.zarray')} (as .zmetadata describes it)", info)


def _json_or_none(path: str) -> Any:
    """The JSON in the file at `path`; None when it is missing or does not parse."""
    try:
        with open(path, "rb") as file:
            return json.loads(file.read())
    except (OSError, ValueError):
        return None


def _require_written_codec(path: Path, where: str, info: Any) -> None:
    """`require_written_codecs` for the array `where` ("data/<key>") described by `info`,
    its `.zarray` (None, or not an object: no array, or a lost one; nothing of it is decoded)."""
    if not isinstance(info, dict):
        return
    compressor = info.get("compressor")
    if compressor is not None:
        codec_id = compressor.get("id") if isinstance(compressor, dict) else compressor
        if not isinstance(codec_id, str) or codec_id not in WRITTEN_COMPRESSORS:
            raise _foreign_codec(path, f"{where} is compressed with", codec_id)
    filters = info.get("filters")
    if filters:
        first = filters[0] if isinstance(filters, list) else filters
        raise _foreign_codec(path, f"{where} is filtered with", first.get("id") if isinstance(first, dict) else first)


def _foreign_codec(path: Path, what: str, codec_id: object) -> StoreError:
    """The one-line refusal of `require_written_codecs`: `what` ("data/x is compressed
    with") the codec `codec_id` (its .zarray's id, whatever its type)."""
    name = codec_id if isinstance(codec_id, str) else json.dumps(codec_id)
    danger = ("which would run code from the file" if name == "pickle"
              else "which zarr would decode its files with (another program's store?)")
    return StoreError(f"{path}: {what} '{name}', which shallowpi never writes and {danger}; refusing this store")
