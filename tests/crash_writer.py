"""Records episodes into a store forever; the crash test SIGKILLs it at random moments.

After each commit returns it appends the episode's checksums, read back from the store,
to a log file (fsynced), so the test knows what every committed episode must look like.
Usage: python crash_writer.py STORE LOG SEED
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np

from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from store_fixtures import arm_features, synthetic_frame


def digest(episode: dict[str, np.ndarray]) -> dict[str, str]:
    return {key: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for key, v in episode.items()}


def main(store_path: str, log_path: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    settings = StoreSettings(durable=True, image_batch=4, numeric_chunk_rows=64)
    store = EpisodeStore.open_or_create(store_path, arm_features(), settings)
    print("ready", flush=True)  # the test starts its kill timer here, not during imports
    with open(log_path, "a") as log:
        while True:
            writer = store.begin_episode(f"episode from writer {seed}", robot="arm", fps=30)
            for t in range(int(rng.integers(5, 40))):
                writer.add_frame(synthetic_frame(rng, t), t / 30)
            info = writer.commit(success=bool(rng.integers(2)))
            record = {"index": info.index, "length": info.length, "digest": digest(store.read_episode(info.index))}
            log.write(json.dumps(record) + "\n")
            log.flush()
            os.fsync(log.fileno())
            print(f"committed {info.index}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
