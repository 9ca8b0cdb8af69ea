"""Stores and datasets received from elsewhere (shared between labs): what their files say
is never taken as leave to run code, write outside the store, or copy what a link names."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import subprocess
from pathlib import Path

import numcodecs.pickles
import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.data import EpisodeStore, Feature
from shallowpi.data.store import PROVENANCE_DIR, StoreSettings
from shallowpi.data.store_swap import COMPACTING_SUFFIX, OLD_SUFFIX, SWAPPED_OUT
from shallowpi.errors import StoreError
from store_fixtures import make_store


class _MakesFolder:
    """A pickle payload: unpickled, it makes the folder `marker` (the proof that a read ran it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _compress_with_pickle(store: Path, array: str, chunk: str, marker: Path) -> None:
    """Make `array` ("data/<key>") of the closed store at `store` name numcodecs' pickle codec
    in its `.zarray`, and its chunk file `chunk` a payload that makes `marker` when unpickled."""
    zarray = store / array / ".zarray"
    info = json.loads(zarray.read_text())
    zarray.write_text(json.dumps({**info, "compressor": {"id": "pickle", "protocol": 5}}))
    (store / array / chunk).write_bytes(pickle.dumps(_MakesFolder(marker), protocol=5))


@pytest.fixture
def pickles_decode(monkeypatch):
    """numcodecs as on the robot's Python 3.10 (0.13: it unpickles whatever a chunk holds);
    0.15.2, 0.16.6 and 0.17.1 refuse unless told, as here."""
    monkeypatch.setattr(numcodecs.pickles, "ALLOW_UNSAFE_PICKLE_DECODE", True, raising=False)


# --- codecs: a store names only what shallowpi writes --------------------------------------

@pytest.mark.bad_store
@pytest.mark.parametrize("array, chunk", [("data/observation.images.front", "0.0.0.0"),  # read by chunk_files
                                          ("data/observation.state", "0.0"),  # read by zarr
                                          ("meta/episode_ends", "0")])  # read at the first look at an episode
def test_a_store_naming_the_pickle_codec_is_refused_before_a_chunk_is_read(tmp_path, pickles_decode, array, chunk):
    make_store(tmp_path / "shared.zarr", episodes=2, length=5).close()
    marker = tmp_path / "ran"
    _compress_with_pickle(tmp_path / "shared.zarr", array, chunk, marker)
    with pytest.raises(StoreError) as refused, EpisodeStore.open(tmp_path / "shared.zarr") as store:
        store.read_episode(0)
    assert str(refused.value) == (f"{tmp_path / 'shared.zarr'}: {array} is compressed with 'pickle', which shallowpi "
                                  "never writes and which would run code from the file; refusing this store")
    assert not marker.exists()  # the payload never ran


@pytest.mark.bad_store
def test_dataset_check_of_a_pickle_store_is_one_line_and_runs_nothing(tmp_path):
    make_store(tmp_path / "shared.zarr", episodes=2, length=5).close()
    marker = tmp_path / "ran"
    _compress_with_pickle(tmp_path / "shared.zarr", "data/observation.images.wrist", "1.0.0.0", marker)
    result = subprocess.run(platform_cmd("dataset", "check", str(tmp_path / "shared.zarr")), capture_output=True,
                            text=True, timeout=120, env=subprocess_env(NUMCODECS_ALLOW_UNSAFE_PICKLE_DECODE="1"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'shared.zarr'}: data/observation.images.wrist is compressed with 'pickle', which "
        "shallowpi never writes and which would run code from the file; refusing this store"]
    assert not marker.exists()


def _set_zarray(store: Path, array: str, **fields) -> None:
    zarray = store / array / ".zarray"
    zarray.write_text(json.dumps({**json.loads(zarray.read_text()), **fields}))


def _consolidated(store: Path, array: str, **fields) -> None:
    """A `.zmetadata` (zarr's consolidated metadata: every group's and array's description
    in one file) as zarr.consolidate_metadata writes it, but describing `array` with `fields`."""
    described = {str(f.relative_to(store)): json.loads(f.read_text())
                 for name in (".zgroup", ".zattrs", ".zarray") for f in store.rglob(name)}
    described[f"{array}/.zarray"].update(fields)
    (store / ".zmetadata").write_text(json.dumps({"zarr_consolidated_format": 1, "metadata": described}))


@pytest.mark.bad_store
@pytest.mark.parametrize("edit, said", [
    (lambda s: _set_zarray(s, "data/action", compressor={"id": "zlib", "level": 1}),
     "data/action is compressed with 'zlib', which shallowpi never writes and which zarr would decode its files "
     "with (another program's store?)"),
    (lambda s: _set_zarray(s, "data/action", filters=[{"id": "pickle", "protocol": 5}]),
     "data/action is filtered with 'pickle', which shallowpi never writes and which would run code from the file"),
    (lambda s: _set_zarray(s, "data/timestamp", filters=[{"id": "delta", "dtype": "<f8"}]),
     "data/timestamp is filtered with 'delta', which shallowpi never writes"),
    (lambda s: _set_zarray(s, "meta/episode_ends", compressor={"id": ["pickle"]}),
     "meta/episode_ends is compressed with '[\"pickle\"]', which shallowpi never writes"),
    # zarr-python 3 reads an array's description from there (it refuses a "pickle" itself)
    (lambda s: _consolidated(s, "data/observation.state", compressor={"id": "zlib", "level": 1}),
     "data/observation.state (as .zmetadata describes it) is compressed with 'zlib', which shallowpi never writes"),
])
def test_any_codec_or_filter_shallowpi_never_writes_is_refused_at_open(tmp_path, edit, said):
    make_store(tmp_path / "shared.zarr", episodes=1, length=5).close()
    edit(tmp_path / "shared.zarr")
    with pytest.raises(StoreError) as refused:
        EpisodeStore.open(tmp_path / "shared.zarr")
    message = str(refused.value)
    assert message.startswith(f"{tmp_path / 'shared.zarr'}: {said}") and message.endswith("; refusing this store")
    assert "\n" not in message


@pytest.mark.parametrize("codec", ["jpeg", "jpegxl", "blosc-zstd", "blosc-lz4", "none"])
def test_stores_of_every_codec_shallowpi_writes_open_and_read(tmp_path, codec):
    make_store(tmp_path / f"{codec}.zarr", episodes=1, length=3,
               settings=StoreSettings(image_codec=codec, durable=False)).close()
    with EpisodeStore.open(tmp_path / f"{codec}.zarr") as store:
        frames = store.read_episode(0)
    assert frames["observation.images.front"].shape == (3, 24, 32, 3)


# --- feature names: each is a folder of the store's own -------------------------------------

def _not_plain(tmp_path: Path) -> list[str]:
    return [str(tmp_path / "elsewhere"), "cam/../../x", "..", ".", ".zarray", "a\\b", "-cam", "", "a\0b"]


@pytest.mark.parametrize("position", range(9))
def test_a_new_store_refuses_a_feature_name_that_is_not_plain(tmp_path, position):
    """A name is its arrays' folder, data/<name>: "/tmp/x" put a camera's frames at that
    absolute path, ".." gave zarr's traceback."""
    name = _not_plain(tmp_path)[position]
    features = {"observation.state": Feature.vector(["a", "b"]), name: Feature.image(24, 32)}
    with pytest.raises(StoreError, match=r"^feature .* is not a plain name \(.*; no '/' or '\.\.'\); a feature is "
                                         r"stored as the folder data/<name>; rename it$"):
        EpisodeStore.create(tmp_path / "new.zarr", features, StoreSettings(durable=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, nothing beside it


def test_lerobots_dotted_names_stay_plain(tmp_path):
    from shallowpi.data.features import name_problem

    names = ["observation.state", "action", "observation.images.front", "next.reward", "observation.images.cam_0"]
    assert [name_problem(n) for n in names] == [None] * len(names)
    make_store(tmp_path / "dots.zarr", episodes=1, length=3).close()  # the recorder's own names


@pytest.mark.bad_store
@pytest.mark.parametrize("name", ["elsewhere", "../../elsewhere"])
def test_a_header_naming_a_feature_outside_the_store_is_refused_at_open(tmp_path, name):
    make_store(tmp_path / "shared.zarr", episodes=1, length=3).close()
    name = str(tmp_path / name) if name == "elsewhere" else name
    header = json.loads((tmp_path / "shared.zarr" / ".zattrs").read_text())
    features = header["shallowpi"]["features"]
    features[name] = features.pop("observation.images.front")
    (tmp_path / "shared.zarr" / ".zattrs").write_text(json.dumps(header))
    with pytest.raises(StoreError) as refused:
        EpisodeStore.open(tmp_path / "shared.zarr")
    assert str(refused.value) == (f"{tmp_path / 'shared.zarr'}: its header's feature {name!r} is not a plain name "
                                  "(it holds '/'; no '/' or '..'); shallowpi never writes one; refusing this store")


@pytest.mark.parametrize("name", ["/tmp/x", "cam/../../../../tmp/x", "..", "-i"])
def test_a_lerobot_feature_name_that_is_not_plain_is_refused_before_a_store_is_made(name):
    from shallowpi.data.lerobot_import import store_features

    spec = {"observation.state": {"dtype": "float32", "shape": [2], "names": ["a", "b"]},
            name: {"dtype": "image", "shape": [24, 32, 3], "names": ["height", "width", "channels"]}}
    with pytest.raises(StoreError, match=rf"^lerobot feature '{name}' is not a plain name .*; this info.json was "
                                         "not written by lerobot; nothing was imported$"):
        store_features(spec)


# --- a store kept behind a symbolic link --------------------------------------------------

def _linked_store(tmp_path: Path) -> tuple[Path, Path]:
    """(link, real): datasets/kitchen.zarr -> ssd/kitchen.zarr, a store of 3 episodes."""
    (tmp_path / "ssd").mkdir()
    (tmp_path / "datasets").mkdir()
    real = tmp_path / "ssd" / "kitchen.zarr"
    make_store(real, episodes=3, length=5).close()
    link = tmp_path / "datasets" / "kitchen.zarr"
    link.symlink_to(real, target_is_directory=True)
    return link, real


def test_a_delete_through_a_link_to_the_store_is_refused_and_changes_nothing(tmp_path):
    """It renamed the link to .old, put the compacted copy where the link was (the link's disk),
    marked the real store swapped out and left it with every episode."""
    link, real = _linked_store(tmp_path)
    with EpisodeStore.open(link, mode="a") as store, pytest.raises(StoreError) as refused:
        store.delete_episodes([0])
    assert str(refused.value) == (f"kitchen.zarr is a link to {real}: delete there (a delete swaps the store's folder "
                                  "for a compacted copy, and would replace the link); nothing was deleted")
    assert link.is_symlink() and link.resolve() == real
    assert sorted(p.name for p in link.parent.iterdir()) == ["kitchen.zarr"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["kitchen.zarr"]  # no .old, no .compacting
    assert not (real / SWAPPED_OUT).exists()
    with EpisodeStore.open(link) as store:
        assert len(store) == 3
    # Where the message points, the delete works, and the link shows it.
    with EpisodeStore.open(real, mode="a") as store:
        store.delete_episodes([0])
    with EpisodeStore.open(link) as store:
        assert [info.length for info in store.episodes] == [6, 7]
    assert sorted(p.name for p in real.parent.iterdir()) == ["kitchen.zarr"]
    assert not (real.parent / ("kitchen.zarr" + OLD_SUFFIX)).exists()
    assert not (real.parent / ("kitchen.zarr" + COMPACTING_SUFFIX)).exists()


def test_dataset_delete_through_a_link_is_one_line(tmp_path):
    link, real = _linked_store(tmp_path)
    result = subprocess.run(platform_cmd("dataset", "delete", str(link), "--episode", "0", "--yes"),
                            capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"error: kitchen.zarr is a link to {real}: delete there (a delete swaps the store's folder for a compacted "
        "copy, and would replace the link); nothing was deleted"]
    with EpisodeStore.open(real) as store:
        assert len(store) == 3


# --- provenance: only the files the recorder wrote travel ------------------------------------

def test_merge_and_delete_copy_no_link_out_of_a_stores_provenance(tmp_path, caplog):
    """A received store's `.shallowpi/x.yaml -> ~/secret` had the secret copied, as a file of
    its own, into the merged store (and into a delete's copy)."""
    secret = tmp_path / "home" / "secret"
    secret.parent.mkdir()
    secret.write_text("the lab's private key")
    a = make_store(tmp_path / "a.zarr", episodes=2, length=5, task="task a")
    b = make_store(tmp_path / "b.zarr", episodes=1, length=5, task="task b")
    (a.path / PROVENANCE_DIR).mkdir()
    (a.path / PROVENANCE_DIR / "record-20261204-131500.yaml").write_text("record: {}\n")
    (a.path / PROVENANCE_DIR / "x.yaml").symlink_to(secret)
    os.mkfifo(a.path / PROVENANCE_DIR / "pipe.log")  # a read of it would wait forever
    (b.path / PROVENANCE_DIR).symlink_to(secret.parent, target_is_directory=True)  # the whole folder
    with caplog.at_level(logging.WARNING, logger="shallowpi.data.store_edit"):
        merged = EpisodeStore.merge([a, b], tmp_path / "ab.zarr")
    assert sorted(p.name for p in (merged.path / PROVENANCE_DIR).iterdir()) == ["record-20261204-131500.yaml"]
    warned = caplog.text
    assert f"{a.path / PROVENANCE_DIR / 'x.yaml'}: not copied into the new store: a symbolic link to {secret}" in warned
    assert f"{a.path / PROVENANCE_DIR / 'pipe.log'}: not copied into the new store: a special file" in warned
    assert f"{b.path / PROVENANCE_DIR}: not copied into the new store: not a folder of the store's own" in warned
    a.delete_episodes([0])
    assert sorted(p.name for p in (a.path / PROVENANCE_DIR).iterdir()) == ["record-20261204-131500.yaml"]
    assert secret.read_text() == "the lab's private key"  # the target itself untouched
    for store in (merged, a, b):
        store.close()



def test_provenance_files_of_one_name_from_stores_of_one_name_are_all_kept(tmp_path):
    """Two labs' `kitchen` stores beside a third, each with a session log of the same
    second: the second copy was renamed after its store's stem, and the third overwrote it
    under that same name (one session's record lost from the merge)."""
    stores = []
    for lab in ("a", "b", "c"):
        (tmp_path / lab).mkdir()
        store = make_store(tmp_path / lab / "kitchen.zarr", episodes=1, length=5, task=f"task {lab}")
        (store.path / PROVENANCE_DIR).mkdir()
        (store.path / PROVENANCE_DIR / "record-20261204-131500.log").write_text(f"lab {lab}\n")
        stores.append(store)
    merged = EpisodeStore.merge(stores, tmp_path / "all.zarr")
    kept = {p.name: p.read_text() for p in (merged.path / PROVENANCE_DIR).iterdir()}
    assert kept == {"record-20261204-131500.log": "lab a\n", "record-20261204-131500.kitchen.log": "lab b\n",
                    "record-20261204-131500.kitchen.2.log": "lab c\n"}
    again = EpisodeStore.merge(stores, tmp_path / "again.zarr")  # an identical file is not copied twice
    assert len(list((again.path / PROVENANCE_DIR).iterdir())) == 3
    for store in (merged, again, *stores):
        store.close()


def _swapped_after_its_look(monkeypatch, swap) -> None:
    """The race, made deterministic: `swap(path)` runs right after carry_provenance's look
    at each entry (`_entry_kind`, the lstat), before the entry is opened or copied, as a
    store's sender (or another process on the same disk) could change it then."""
    from shallowpi.data import store_edit

    look = store_edit._entry_kind

    def look_then_swap(path: Path) -> str:
        kind = look(path)
        swap(path)
        return kind

    monkeypatch.setattr(store_edit, "_entry_kind", look_then_swap)


def _carry_in_time(sources: list[Path], into: Path, fifos: tuple[Path, ...] = ()) -> None:
    """carry_provenance, durable, failing the test if it has not returned in 5 s; a read
    left waiting on one of `fifos` is then released (a writer opens and closes it)."""
    import threading

    from shallowpi.data.store_edit import carry_provenance

    errors: list[BaseException] = []

    def carry() -> None:
        try:
            carry_provenance(sources, into, durable=True)
        except BaseException as error:  # reported by the test's thread
            errors.append(error)

    worker = threading.Thread(target=carry, daemon=True)
    worker.start()
    worker.join(5)
    if worker.is_alive() and fifos:
        for fifo in fifos:
            with contextlib.suppress(OSError):  # ENXIO: no one waits on this one
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        worker.join(10)
        raise AssertionError(f"carry_provenance waited on a FIFO: {', '.join(map(str, fifos))}")
    assert not worker.is_alive()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("swapped_in, held", [("link to a file", False), ("FIFO", False), ("link to a FIFO", False),
                                               ("FIFO", True), ("link to a FIFO", True)])
def test_a_provenance_file_swapped_for_a_link_or_fifo_after_its_look_is_not_carried(tmp_path, monkeypatch,
                                                                                     caplog, swapped_in, held):
    """A file that became a symbolic link between carry_provenance's lstat and its copy
    went into the new store as that link (`copyfile(follow_symlinks=False)`); a FIFO (or a
    link to one) failed the merge or delete (shutil's SpecialFileError), and where the new
    store already `held` the name, the comparison's read of it waited forever."""
    secret = tmp_path / "home" / "secret"
    secret.parent.mkdir()
    secret.write_text("the lab's private key")
    fifo = tmp_path / "home" / "pipe"
    os.mkfifo(fifo)
    source = tmp_path / "a.zarr"
    (source / PROVENANCE_DIR).mkdir(parents=True)
    (source / PROVENANCE_DIR / "record-20261204-131500.yaml").write_text("record: {}\n")
    (source / PROVENANCE_DIR / "x.yaml").write_text("record: {}\n")
    into = tmp_path / "ab.zarr"
    (into / PROVENANCE_DIR).mkdir(parents=True)
    if held:  # carried already, from another store of the merge
        (into / PROVENANCE_DIR / "x.yaml").write_text("record: {}\n")

    def swap(path: Path) -> None:
        if path.name != "x.yaml":
            return
        path.unlink()
        if swapped_in == "FIFO":
            os.mkfifo(path)
        else:
            path.symlink_to(secret if swapped_in == "link to a file" else fifo)

    _swapped_after_its_look(monkeypatch, swap)
    with caplog.at_level(logging.WARNING, logger="shallowpi.data.store_edit"):
        _carry_in_time([source], into, (fifo, source / PROVENANCE_DIR / "x.yaml"))
    carried = into / PROVENANCE_DIR
    assert sorted(p.name for p in carried.iterdir()) == ["record-20261204-131500.yaml"] + ["x.yaml"] * held
    assert not any(p.is_symlink() for p in carried.iterdir())
    assert (carried / "record-20261204-131500.yaml").read_text() == "record: {}\n"
    assert f"{source / PROVENANCE_DIR / 'x.yaml'}: not copied into the new store: not a regular file when opened" \
        in caplog.text


def test_a_provenance_folder_swapped_for_a_link_after_its_look_carries_none_of_the_links_files(tmp_path,
                                                                                                  monkeypatch):
    """The folder checked (not a link), then swapped for a link to another folder holding the
    same names: the files named were read through the link, the other folder's copied."""
    secrets = tmp_path / "home"
    secrets.mkdir()
    (secrets / "record-20261204-131500.yaml").write_text("the lab's private key")
    source = tmp_path / "a.zarr"
    folder = source / PROVENANCE_DIR
    folder.mkdir(parents=True)
    (folder / "record-20261204-131500.yaml").write_text("record: {}\n")
    into = tmp_path / "ab.zarr"
    into.mkdir()

    def swap(path: Path) -> None:
        if not folder.is_symlink():
            folder.rename(source / "moved")
            folder.symlink_to(secrets, target_is_directory=True)

    _swapped_after_its_look(monkeypatch, swap)
    _carry_in_time([source], into)
    assert [p.read_text() for p in (into / PROVENANCE_DIR).iterdir()] == ["record: {}\n"]


# --- chunk files: a frame moves as its own file, never as what a link names -----------------

def _chunk_linked_to_secret(tmp_path: Path) -> tuple[EpisodeStore, Path, Path]:
    """A received store (open for writing) whose first front frame's chunk file is a symbolic
    link to a secret; returns the store, the link and the secret."""
    secret = tmp_path / "home" / "secret"
    secret.parent.mkdir()
    secret.write_bytes(b"the lab's private key")
    make_store(tmp_path / "shared.zarr", episodes=2, length=5).close()
    chunk = tmp_path / "shared.zarr" / "data" / "observation.images.front" / "0.0.0.0"
    chunk.unlink()
    chunk.symlink_to(secret)
    return EpisodeStore.open(tmp_path / "shared.zarr", mode="a"), chunk, secret


def _no_link_to(folder: Path, secret: Path) -> bool:
    """Whether nothing under `folder` is a link, or holds `secret`'s bytes."""
    return not any(p.is_symlink() or (p.is_file() and p.read_bytes() == secret.read_bytes())
                   for p in folder.rglob("*"))


@pytest.mark.bad_store
def test_a_delete_refuses_a_chunk_file_that_is_a_link(tmp_path):
    """A kept frame's chunk that was a symbolic link went into the compacted copy as that link
    (os.link links a link itself): the store then named whatever file the link did."""
    store, chunk, secret = _chunk_linked_to_secret(tmp_path)
    with store, pytest.raises(StoreError) as refused:
        store.delete_episodes([1])
    assert str(refused.value) == f"shared.zarr episode 0: {chunk} is a link, not a chunk this store wrote; refusing"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "shared.zarr"]  # no .compacting left
    assert chunk.is_symlink() and secret.read_bytes() == b"the lab's private key"
    with EpisodeStore.open(tmp_path / "shared.zarr") as store:
        assert len(store) == 2  # nothing deleted


@pytest.mark.bad_store
def test_a_merge_onto_another_file_system_refuses_a_chunk_file_that_is_a_link(tmp_path):
    """Where a link cannot be made (the new store on another file system), the chunk was
    copied, the link followed: the secret's bytes went into the merged store as a frame."""
    import tempfile

    with tempfile.TemporaryDirectory(dir="/dev/shm") as elsewhere:
        if os.stat(elsewhere).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the test's own file system here")
        store, chunk, secret = _chunk_linked_to_secret(tmp_path)
        other = make_store(tmp_path / "other.zarr", episodes=1, length=5)
        with store, other, pytest.raises(StoreError) as refused:
            EpisodeStore.merge([store, other], Path(elsewhere) / "merged.zarr")
        assert str(refused.value) == f"shared.zarr episode 0: {chunk} is a link, not a chunk this store wrote; refusing"
        assert _no_link_to(Path(elsewhere), secret)
