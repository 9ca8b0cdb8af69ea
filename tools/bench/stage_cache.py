"""Stage results of a long benchmark, kept on disk and carried across machines (reproduce.py).

A run of more hours than one machine session is cut into stages (record, train a row,
evaluate it, time the chunks). Each finished stage leaves one small JSON file, which a rerun
reads back instead of doing the stage again; kept in git, those files carry the run to the
next machine. What must hold for a result made on one machine to be trusted on another is
checked here: the weights a result was made from or judged (sha256), the recorded store
(a fingerprint of its arrays) and the recipe every stage of a folder was made with.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "platform"))

from shallowpi.distill.distiller import checkpoint_sha256  # noqa: E402
from shallowpi.durable_files import replace_text  # noqa: E402
from shallowpi.train.checkpoint import checkpoint_weights  # noqa: E402


class Stages:
    """Results on disk, one JSON per finished stage: run a stage only when its file is
    missing. Each stage runs under a lock file in `locks` (this machine's work folder), so
    two runs into the same folders wait for each other's stage instead of doing it twice."""

    def __init__(self, folder: Path, locks: Path, label: str) -> None:
        self.folder, self.locks, self.label = folder, locks, label
        folder.mkdir(parents=True, exist_ok=True)
        locks.mkdir(parents=True, exist_ok=True)

    def kept(self, name: str) -> dict[str, Any] | None:
        """The stage's stored result, None when it has not finished."""
        done = self.folder / f"{name}.json"
        return json.loads(done.read_text()) if done.is_file() else None

    def forget(self, name: str) -> None:
        """Drop the stage's result and the seconds of its attempts, so that it runs again and
        its minutes are the new attempt's only."""
        with self.lock(name):
            for suffix in (".json", ".seconds"):
                (self.folder / f"{name}{suffix}").unlink(missing_ok=True)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold stage `name`'s lock (blocking) for the duration."""
        with open(self.locks / f"{name}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def run(self, name: str, work: Callable[[], dict[str, Any]],
            enough: Callable[[dict[str, Any]], bool] | None = None,
            before: Callable[[], None] | None = None) -> dict[str, Any]:
        """The stage's stored result, or `work()`'s when there is none or `enough` says the
        stored one falls short (an evaluation asked for more seeds: its blocks are kept).
        `before` runs first, untimed, only when the stage must run: it makes ready what the
        stage reads (the store recorded again, a checkpoint found), which is not its cost."""
        with self.lock(name):
            result = self.kept(name)
            if result is not None and (enough is None or enough(result)):
                return result
            if before is not None:
                before()
            ledger = self.folder / f"{name}.seconds"  # wall time of every attempt, kept across interruptions
            print(f"[{time.strftime('%H:%M:%S')}] {self.label}: {name} ...", flush=True)
            start = time.perf_counter()
            try:
                result = work()
            finally:
                with open(ledger, "a") as f:
                    f.write(f"{time.perf_counter() - start:.1f}\n")
            result["seconds"] = sum(float(x) for x in ledger.read_text().split())
            replace_text(self.folder / f"{name}.json", json.dumps(result, indent=2), durable=False)
            return result


def portable(path: Path) -> str:
    """`path` relative to this checkout when inside it (robots/arm/teacher), else absolute:
    a results folder kept in git then names the shipped teacher on every machine."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def local(text: str) -> Path:
    """The path a stage result names, on this machine (`portable`'s inverse)."""
    return Path(text) if Path(text).is_absolute() else ROOT / text


def weights_sha256(checkpoint: Path) -> str:
    """sha256 of the weights a checkpoint is judged and cut by (its EMA average when it kept one)."""
    return checkpoint_sha256(checkpoint_weights(checkpoint))


def weights_of(stage: str, result: dict[str, Any], why: str, redo: str) -> Path:
    """The checkpoint a finished training stage names, when later work needs it, checked to
    hold the weights the stage made. SystemExit in one line when it is not on this machine
    (the stage finished on another: its results came with the results folder, its weights
    did not) or holds other weights; `redo` says how to make it again (e.g. "--redo kd6")."""
    checkpoint = local(result["checkpoint"])
    if not (checkpoint_weights(checkpoint) / "model.safetensors").is_file():
        raise SystemExit(f"{why}, but {stage}'s checkpoint {checkpoint} is not on this machine (it was made "
                         f"elsewhere): rerun with {redo} to make it again here")
    if weights_sha256(checkpoint) != result["weights_sha256"]:
        raise SystemExit(f"{why}, but {checkpoint} no longer holds the weights {stage} made: rerun with "
                         f"{redo} to make it again")
    return checkpoint


def store_fingerprint(store: Path) -> dict[str, str]:
    """sha256 of every episode's arrays as read back, in episode and key order: "frames"
    over the camera images (decoded), "rows" over everything else, and "episodes" over what
    training reads of each episode's metadata (its task, success flag and scene seed: a
    re-recording whose detectors changed has the same arrays, and successful_only then
    trains on another set). Two recordings of one recipe give the same ones when the twin,
    its renderer and the scripted experts are deterministic, as they are here (two recordings
    compared equal, array by array, 2026-12-02); the split says whether the motion, the
    pictures or only the labels differ. A fingerprint kept from before "episodes" existed
    is compared on the parts it has (`fingerprint_differs`)."""
    import hashlib

    import numpy as np

    from shallowpi.data.store import EpisodeStore

    digests = {"rows": hashlib.sha256(), "frames": hashlib.sha256(), "episodes": hashlib.sha256()}
    with EpisodeStore.open(store) as opened:
        for index in range(len(opened)):
            arrays = opened.read_episode(index)
            for key in sorted(arrays):
                digest = digests["frames" if key.startswith("observation.images.") else "rows"]
                digest.update(key.encode())
                digest.update(np.ascontiguousarray(arrays[key]).tobytes())
            info = opened.episode(index)
            digests["episodes"].update(json.dumps([info.task, info.success, info.extra.get("seed")]).encode())
    return {name: digest.hexdigest() for name, digest in digests.items()}


def fingerprint_differs(found: dict[str, str], kept: dict[str, str]) -> list[str]:
    """The parts of a kept store fingerprint that `found` does not match; a part the kept one
    lacks (made before that part existed) is not compared."""
    return [part for part in found if part in kept and found[part] != kept[part]]


def check_recipe(folder: Path, recipe: dict[str, Any], added: Collection[str] = ()) -> None:
    """Write folder/recipe.json (the folder exists) on the first run; on a rerun, SystemExit
    in one line when `recipe` differs from the one the folder's stages were made with (a
    500-step student must not be read back as the 2,000-step one). The `added` keys (made
    part of the recipe after folders were kept without them) are compared only where the kept
    recipe has them. Two runs started at once agree on one file: the first puts it in place
    whole, the other compares."""
    path = folder / "recipe.json"
    whole = folder / f"recipe.json.{os.getpid()}"
    whole.write_text(json.dumps(recipe, indent=1))
    try:
        os.link(whole, path)
        return
    except FileExistsError:
        before = json.loads(path.read_text())
    finally:
        whole.unlink()
    changed = [key for key in recipe if (key in before or key not in added) and before.get(key) != recipe[key]]
    if changed:
        key = changed[0]
        raise SystemExit(f"{folder} holds stages made with {key}={before.get(key)!r}, this run asks for "
                         f"{recipe[key]!r}; pass another --out and --results (or delete the folder)")
