"""Making a new store: processes racing to create (or merge into) one name, what a killed
maker leaves, and the settings a store may be created with."""

from __future__ import annotations

import contextlib
import json
import traceback
from pathlib import Path

import numpy as np
import pytest

from race_fixtures import pause_first, run_both
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.errors import StoreError
from store_fixtures import arm_features, make_store, synthetic_frame

QUICK = StoreSettings(durable=False)


def test_two_creators_of_one_new_store_make_it_once(tmp_path, monkeypatch):
    """Two recorders creating one new dataset built in one fixed `dup.zarr.creating`, each
    removing the other's files: both failed with tracebacks (here: the first's rename found
    its folder gone, FileNotFoundError), or an empty or half-built store took the name. One
    makes it now, whole; the other is told it exists."""
    path = tmp_path / "dup.zarr"
    ran, go_on = pause_first(monkeypatch, EpisodeStore, "_build")
    results = run_both(lambda: EpisodeStore.create(path, arm_features(), QUICK),
                    lambda: EpisodeStore.create(path, arm_features(), QUICK), ran, go_on)
    monkeypatch.undo()
    made = [r for r in results if isinstance(r, EpisodeStore)]
    refused = [r for r in results if not isinstance(r, EpisodeStore)]
    assert len(made) == 1 and len(refused) == 1, results
    assert isinstance(refused[0], StoreError) and "already exists" in str(refused[0]), refused[0]
    made[0].close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.zarr"]  # no folder, no lock file left
    with EpisodeStore.open(path, mode="a") as store:
        assert store.features == arm_features() and store.check() == []


def _open_or_create_then_record(path: str, start: object, out: object) -> None:
    """In a forked process: `open_or_create` at `start`, record one short episode, and put
    what happened on `out`: "recorded", a StoreError's message, or another error's traceback."""
    from shallowpi.errors import StoreError

    try:
        start.wait(120)  # all four at once; generous, as a loaded CI host forks slowly
        with EpisodeStore.open_or_create(path, arm_features(), QUICK) as store:
            writer = store.begin_episode("stack the blocks", robot="arm", calibration_id="c1", fps=30)
            rng = np.random.default_rng(0)
            for t in range(3):
                writer.add_frame(synthetic_frame(rng, t), t / 30)
            writer.commit()
        out.put("recorded")
    except StoreError as exc:
        out.put(f"StoreError: {exc}")
    except BaseException:  # the fault: a traceback
        out.put(traceback.format_exc())


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")  # idle encoder threads
def test_recorders_racing_into_one_new_dataset_get_a_store_or_one_line(tmp_path):
    """`deploy --record` into one new dataset from several processes at once (open_or_create):
    each records into the store one of them made, or is told in one line who writes it."""
    import multiprocessing

    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        path = tmp_path / f"rollouts{round_}.zarr"
        start, out = context.Barrier(4), context.Queue()
        workers = [context.Process(target=_open_or_create_then_record, args=(str(path), start, out))
                   for _ in range(4)]
        for worker in workers:
            worker.start()
        outcomes = [out.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(60)
        # "by pid N", or "by another process" when it is read in the instant between the
        # lock's taking and its holder's name being written.
        assert all(o == "recorded" or (o.startswith("StoreError: ") and "is being written by " in o and "\n" not in o)
                   for o in outcomes), outcomes
        recorded = outcomes.count("recorded")
        assert recorded >= 1
        with EpisodeStore.open(path) as store:
            assert len(store) == recorded and store.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"rollouts{r}.zarr" for r in range(3)]


def test_a_store_is_never_published_over_a_folder_made_meanwhile(tmp_path, monkeypatch):
    """A rename onto an empty folder replaces it: the old create published its store over
    an empty `dup.zarr/` another command had made meanwhile. It is refused now, and the
    folder is left as it was."""
    path = tmp_path / "dup.zarr"
    ran, go_on = pause_first(monkeypatch, EpisodeStore, "_build", meanwhile_s=30)
    made, _ = run_both(lambda: EpisodeStore.create(path, arm_features(), QUICK), path.mkdir, ran, go_on)
    assert isinstance(made, StoreError) and "already exists" in str(made), made
    assert path.is_dir() and list(path.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dup.zarr"]


def test_what_a_killed_creator_left_goes_with_the_next_create_of_that_name(tmp_path):
    """A creator killed mid-build leaves its folder (`NAME.<random>.creating`) and maybe its
    lock file; the next maker of that name removes them, and nothing of another name's."""
    left = tmp_path / "a.zarr.k1ll3d00.creating"
    (left / "a.zarr" / "data").mkdir(parents=True)
    old_fixed = tmp_path / "a.zarr.creating"  # the fixed folder an older version built in
    old_fixed.mkdir()
    (tmp_path / "a.zarr.create.lock").write_text("pid 12345")
    others = tmp_path / "b.zarr.l1v3l1v3.creating"
    others.mkdir()
    EpisodeStore.create(tmp_path / "a.zarr", arm_features(), QUICK).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", others.name]


def test_a_merge_into_a_name_another_merge_is_making_is_refused_in_one_line(tmp_path, monkeypatch):
    """Two merges into one name built in one fixed `both.zarr.merging`: the second removed
    the first's store mid-merge. The second now waits for the first and is told the name
    exists; the first merge is whole."""
    from shallowpi.data import store_edit

    a, b = make_store(tmp_path / "a.zarr", episodes=2, length=5), make_store(tmp_path / "b.zarr", episodes=1,
                                                                            length=5, seed=1)
    out = tmp_path / "both.zarr"
    ran, go_on = pause_first(monkeypatch, store_edit, "carry_provenance")
    first, second = run_both(lambda: EpisodeStore.merge([a, b], out), lambda: EpisodeStore.merge([a, b], out),
                          ran, go_on)
    a.close()
    b.close()
    assert isinstance(first, EpisodeStore), first
    first.close()
    assert isinstance(second, StoreError) and "already exists" in str(second), second
    with EpisodeStore.open(out) as merged:
        assert len(merged) == 3 and merged.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr", "both.zarr"]


def test_a_maker_holding_a_name_for_long_is_named_in_one_line(tmp_path, monkeypatch):
    """A merge or import takes minutes under its claim: a recorder creating that name waits
    CLAIM_WAIT_S, then says who holds it, and leaves nothing."""
    import os

    from shallowpi.data import store_claim
    from shallowpi.data.store_claim import claim_new

    monkeypatch.setattr(store_claim, "CLAIM_WAIT_S", 0.2)
    path = tmp_path / "busy.zarr"
    with claim_new(path):
        with pytest.raises(StoreError) as caught:
            EpisodeStore.open_or_create(path, arm_features(), QUICK)
        message = str(caught.value)
        assert f"busy.zarr is being made by pid {os.getpid()}" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []


# --- the settings a store is created with ----------------------------------------------


@pytest.mark.parametrize(
    ("setting", "value"),
    [("numeric_chunk_rows", 0), ("numeric_chunk_rows", -1), ("numeric_chunk_rows", 2.5),
     ("image_quality", 150), ("image_quality", -5), ("image_quality", 90.5), ("image_quality", True),
     ("image_batch", 0)],
)
def test_settings_no_store_can_be_written_with_are_refused_naming_the_setting(setting, value):
    """Unchecked, numeric_chunk_rows=0 was a zarr traceback, -1 wrote one file a row,
    image_quality=150 was clamped by jpeg while the header said 150, and jpegxl at -5 failed
    in the writer's thread at the first take."""
    with pytest.raises(StoreError, match=rf"^store\.{setting} must be a whole number") as caught:
        StoreSettings(**{setting: value})
    assert repr(value) in str(caught.value) and "\n" not in str(caught.value)


def test_an_unknown_codec_is_refused_when_the_settings_are_made():
    with pytest.raises(StoreError, match=r"store\.image_codec 'webp' is unknown; choose one of: jpeg, jpegxl"):
        StoreSettings(image_codec="webp")


def test_the_edges_of_each_range_are_settings(tmp_path):
    for settings in (StoreSettings(image_quality=0, numeric_chunk_rows=1, durable=False),
                     StoreSettings(image_codec="jpegxl", image_quality=100, durable=False)):
        make_store(tmp_path / f"q{settings.image_quality}.zarr", episodes=1, length=3, settings=settings).close()


def _with_header_settings(path: Path, **settings) -> None:
    """Rewrite a closed store's header settings, as a version that did not check them wrote them."""
    attrs = json.loads((path / ".zattrs").read_text())
    attrs["shallowpi"]["settings"].update(settings)
    (path / ".zattrs").write_text(json.dumps(attrs))


def test_a_store_made_with_settings_now_refused_still_opens_and_edits(tmp_path):
    """The header is read as it is: a store made before the check (jpeg at quality 150,
    which jpeg clamped) opens, is read, and a delete's compacted copy keeps its settings."""
    path = tmp_path / "old.zarr"
    make_store(path, episodes=3, length=5).close()
    _with_header_settings(path, image_quality=150)
    with EpisodeStore.open(path, mode="a") as store:
        assert store.settings.image_quality == 150 and store.check() == []
        store.delete_episodes([0])
        assert len(store) == 2 and store.settings.image_quality == 150 and store.check() == []


def test_a_codec_that_cannot_encode_is_refused_before_any_take(tmp_path):
    """jpegxl at quality -5 passed create and failed in the writer's thread at the first
    take, an empty store left with the setting. Such settings (a store an earlier version
    made with them) are refused by create, which encodes a frame first, and by
    `check_recordable` before anything records into that store."""
    path = tmp_path / "bad.zarr"
    make_store(path, episodes=0).close()
    _with_header_settings(path, image_codec="jpegxl", image_quality=-5)
    with EpisodeStore.open(path) as bad:
        settings = bad.settings
    with pytest.raises(StoreError, match=r"store\.image_codec=jpegxl at store\.image_quality=-5 cannot encode") as made:
        EpisodeStore.create(tmp_path / "new.zarr", arm_features(), settings)
    assert "\n" not in str(made.value)
    assert not (tmp_path / "new.zarr").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad.zarr"]
    with pytest.raises(StoreError, match=r"cannot encode camera frames here .*bad\.zarr was created with them"):
        EpisodeStore.open_or_create(path, arm_features(), QUICK)
    # A store without cameras never encodes a frame: nothing to refuse.
    from shallowpi.data.features import robot_features

    EpisodeStore.create(tmp_path / "numbers.zarr", robot_features(["j0"], {}), settings).close()


def test_a_failed_build_leaves_no_folder_while_a_writer_thread_finishes(tmp_path):
    """A merge that failed on a full disk raised while zarr's writer thread finished the
    chunk writes it had begun: their files made the claim's removal fail (ENOTEMPTY,
    ignored), or a late one made the folders again after it, and `both.zarr.<random>.creating`
    stayed, taking space (seen under load). The removal goes on until the folder stays gone."""
    import threading
    import time

    from shallowpi.data.store_claim import claim_new

    started, stop = threading.Event(), threading.Event()

    def late_writes(folder):
        started.set()
        end = time.monotonic() + 0.3
        while time.monotonic() < end:  # files appearing as the folder is removed
            with contextlib.suppress(OSError):
                chunk = folder / "both.zarr" / "data" / f"chunk{time.monotonic_ns()}"
                chunk.parent.mkdir(parents=True, exist_ok=True)  # as zarr's local store writes a chunk
                chunk.write_bytes(b"x")
        stop.set()

    with pytest.raises(OSError, match="No space"), claim_new(tmp_path / "both.zarr") as built:
        built.mkdir()
        threading.Thread(target=late_writes, args=(built.parent,), daemon=True).start()
        started.wait()
        raise OSError(28, "No space left on device")
    stop.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
