"""Records episodes into a store forever; the crash test SIGKILLs it at random moments.

After each commit returns it appends the episode's checksums, read back from the store,
to a log file (fsynced), so the test knows what every committed episode must look like.

Usage: python crash_writer.py STORE LOG SEED
   or: python crash_writer.py --fork STORE LOG
The second form pays the imports (numpy, zarr, shallowpi.data: about half of a trial's
time when every trial started an interpreter) once: it prints "ready", then for each SEED
line on stdin forks a writer that prints "writer PID" and then records as the first form
does, waits for that writer to die (the test SIGKILLs it) and prints "ended STATUS"
(negative: the signal, as subprocess's returncode). It ends at EOF on stdin.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import traceback
from pathlib import Path

import numpy as np

from shallowpi.data import EpisodeStore
from shallowpi.data.codecs import register_image_codecs
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


def _threads() -> int:
    """This process's threads as the kernel counts them (native pools such as OpenBLAS's
    too, which `threading` does not see); `threading`'s count where there is no /proc."""
    tasks = Path("/proc/self/task")
    return len(list(tasks.iterdir())) if tasks.is_dir() else threading.active_count()


def serve(store_path: str, log_path: str) -> None:
    """Fork one writer per SEED line on stdin, each after the last has died.

    Raises RuntimeError, before forking, if this process has a second thread: a fork copies
    only the calling thread, so a lock another thread held (zarr's event loop, a thread pool)
    would stay locked in the child forever. The imports start none (zarr starts its loop and
    pool when a store is first opened, which only the children do) once OPENBLAS_NUM_THREADS=1
    keeps numpy's BLAS pool from starting.
    """
    register_image_codecs()  # imagecodecs' 60 modules, which each writer's first open imported again
    print("ready", flush=True)
    for line in iter(sys.stdin.readline, ""):
        if (threads := _threads()) != 1:
            raise RuntimeError(f"the fork server runs {threads} threads; forking would copy their locks "
                               "held (set OPENBLAS_NUM_THREADS=1, and open no store before forking)")
        pid = os.fork()
        if pid == 0:
            try:
                print(f"writer {os.getpid()}", flush=True)
                main(store_path, log_path, int(line))
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(1)  # never back into the server's loop, nor its exit handlers
        _, status = os.waitpid(pid, 0)
        print(f"ended {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "--fork":
        serve(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
