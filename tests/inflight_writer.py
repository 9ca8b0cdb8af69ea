"""Commits some episodes, then records part of one more and stops there, holding the lock.

A recording caught mid-episode, for as long as the test needs: it prints "in flight"
once the frames of the open episode are on disk, then sleeps until killed.
Usage: python inflight_writer.py STORE COMMITTED FRAMES_IN_FLIGHT
"""

from __future__ import annotations

import sys
import time

import numpy as np

from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from store_fixtures import arm_features, synthetic_frame


def main(store_path: str, committed: int, in_flight: int) -> None:
    rng = np.random.default_rng(0)
    settings = StoreSettings(durable=True, image_batch=4)
    store = EpisodeStore.open_or_create(store_path, arm_features(), settings)
    for e in range(committed):
        writer = store.begin_episode(f"episode {e}", robot="arm", calibration_id="cal-test", fps=30)
        for t in range(10):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        writer.commit(success=True)
    writer = store.begin_episode("the one in flight", robot="arm", calibration_id="cal-test", fps=30)
    for t in range(in_flight):  # a multiple of image_batch: every frame is on disk
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    print("in flight", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
