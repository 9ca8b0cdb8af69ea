"""Stores written before layout 2: read them as they are, move them on the first write.

Layout 1 (format versions 1 and 2) kept every episode's metadata as one list in
meta/.zattrs, rewritten whole at each commit, so a commit and an open cost time in
proportion to the episodes. Readers take such a store as it is; the first writable open
moves it to layout 2 (data/store.py) with one pass over its episodes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from shallowpi.data import store as layout_2
from shallowpi.data.durable_io import read_json, write_json
from shallowpi.data.store import (
    EPISODES_DIR,
    FORMAT_1_ON_LAYOUT_2,
    FORMAT_VERSION,
    LAYOUT,
    EpisodeInfo,
    EpisodeStore,
)
from shallowpi.data.store_cuts import commit_record
from shallowpi.data.store_rules import StoreSummary
from shallowpi.durable_files import fsync_path
from shallowpi.errors import StoreError


def read_layout_1(store: EpisodeStore) -> None:
    """Fill `store`'s counts, metadata and summary from a layout-1 meta/.zattrs (all of it:
    that layout has no other way). Raises StoreError when it disagrees with episode_ends."""
    raw = read_json(store.path / "meta" / ".zattrs").get("episodes")
    if not isinstance(raw, list):
        raise StoreError(f"{store.path}: meta/.zattrs has no episode list; the store is damaged")
    episodes = [EpisodeInfo.from_json(e) for e in raw]
    ends = store._array("meta/episode_ends")
    if ends.shape[0] < len(episodes):
        raise StoreError(f"{store.path}: {len(episodes)} episodes committed but meta/episode_ends has {ends.shape[0]}; the store is damaged")
    store._ends_loaded = np.asarray(ends[: len(episodes)], dtype=np.int64)
    lengths = np.diff(store._ends_loaded, prepend=0)
    for info, length in zip(episodes, lengths):
        if info.length != length:
            raise StoreError(f"{store.path}: episode {info.index} has {info.length} frames in its metadata but {length} in meta/episode_ends")
    store._infos = dict(enumerate(episodes))
    store._count = len(episodes)
    store._frames = int(store._ends_loaded[-1]) if len(episodes) else 0
    store.summary = StoreSummary.of_episodes(episodes)


def move_to_layout_2(store: EpisodeStore) -> None:
    """Rewrite a layout-1 store's metadata (open for writing) as layout 2, in place.

    The per-episode files and the commit record go in first, while the header still
    says layout 1 and readers use the list; the header's replace switches layouts. A
    kill before it leaves layout 1 intact, and the next writable open starts over.
    Format 2 becomes 3; format 1 becomes FORMAT_1_ON_LAYOUT_2 (its rows, which a shallowpi
    from before layout 2 refuses with "upgrade" instead of finding no episode list).
    """
    layout_2.log.warning("%s: moving the metadata of %d episodes to one file each (store layout 2), once",
                         store.path.name, len(store))
    durable = store.settings.durable
    folder = store.path / EPISODES_DIR
    folder.mkdir(exist_ok=True)
    episodes = store.episodes
    for info in episodes:
        write_json(folder / f"{info.index}.json", info.to_json(), durable=False)
    if durable:
        # Synced from many threads at once: the file system commits concurrent syncs together.
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(fsync_path, (folder / f"{info.index}.json" for info in episodes)))
        fsync_path(folder)
    record = commit_record(len(store), store.num_frames, store.summary)
    write_json(store.path / "meta" / ".zattrs",
                         {"episodes": [e.to_json() for e in episodes], "commit": record}, durable)
    header = read_json(store.path / ".zattrs")
    version = FORMAT_1_ON_LAYOUT_2 if store.version < 2 else FORMAT_VERSION
    header["shallowpi"] = {**header["shallowpi"], "version": version, "layout": LAYOUT}
    write_json(store.path / ".zattrs", header, durable)  # <- the switch
    store._header_version, store.layout = version, LAYOUT
    store.version = 1 if version == FORMAT_1_ON_LAYOUT_2 else version
    store._write_commit_record(len(store), store.num_frames, store.summary)  # drops the old list


def relabel_format_1(store: EpisodeStore) -> None:
    """Give a format-1 store on layout 2 whose header still says version 1 (moved, copied
    or merged before FORMAT_1_ON_LAYOUT_2 existed) that version, in one atomic write of its
    header (open for writing): a shallowpi from before layout 2 read version 1 as layout 1,
    found no episode list and called the store damaged; it now says "upgrade"."""
    header = read_json(store.path / ".zattrs")
    header["shallowpi"] = {**header["shallowpi"], "version": FORMAT_1_ON_LAYOUT_2}
    write_json(store.path / ".zattrs", header, store.settings.durable)
    store._header_version = FORMAT_1_ON_LAYOUT_2
