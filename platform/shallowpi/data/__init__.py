"""Recorded demonstrations: the zarr episode store, its windowed training dataset, interop.

Three layers, each small (after Diffusion Policy's replay buffer / sampler / dataset):
`store` keeps episodes crash-safely on disk, `windows` maps a sample index to an
(observation, action chunk) window, `training` turns windows into torch samples.
Beside the store: `episode_writer` (one episode's frames), `durable_io` (atomic JSON, the
writer lock; shallowpi/durable_files.py makes the durable writes), `store_rules` (what may
join a store), `store_edit` (delete, copy, merge),
`store_layout1` (stores written before layout 2).
"""

from shallowpi.data.episode_writer import EpisodeWriter
from shallowpi.data.features import Feature, FeatureKind
from shallowpi.data.store import EpisodeInfo, EpisodeStore

__all__ = ["EpisodeInfo", "EpisodeStore", "EpisodeWriter", "Feature", "FeatureKind"]
