"""durable_files: whole-file replaces when writers race on one name, the lock files beside
them, and the TensorRT engine cache built under one (without TensorRT: its locking)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from shallowpi.durable_files import PARTIAL_SUFFIX, replace_bytes


def _race(*jobs) -> list[BaseException]:
    """Run each job in its own thread, started together; the exceptions they raised."""
    start = threading.Barrier(len(jobs))
    errors: list[BaseException] = []

    def run(job) -> None:
        start.wait()
        try:
            job()
        except BaseException as exc:  # collected for the test to show
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


def test_writers_racing_on_one_file_each_publish_whole_bytes(tmp_path):
    """Two deploys caching one engine wrote into one shared `name.partial`: one rename then
    failed (FileNotFoundError, a traceback) and a torn file could be published. Each write
    has a partial file of its own now, and the name only ever holds one writer's bytes."""
    path = tmp_path / "model.engine"
    payloads = {b"a" * (1 << 20), b"b" * (1 << 20)}
    done = threading.Event()
    torn: list[int] = []

    def writer(data: bytes) -> None:
        for _ in range(40):
            replace_bytes(path, data, durable=False)

    def reader() -> None:
        while not done.is_set():
            if path.exists() and (data := path.read_bytes()) not in payloads:
                torn.append(len(data))

    watching = threading.Thread(target=reader)
    watching.start()
    try:
        errors = _race(*(lambda data=data: writer(data) for data in payloads))
    finally:
        done.set()
        watching.join(60)
    assert errors == [], errors
    assert torn == []
    assert path.read_bytes() in payloads
    assert not list(tmp_path.glob("*" + PARTIAL_SUFFIX))


def test_a_failed_write_removes_its_own_partial_file_only(tmp_path):
    """A write that fails (here: data that is not bytes-like) leaves nothing of its own and
    touches no other writer's partial file (a live one, mid-write, in another process)."""
    path = tmp_path / "calibration.json"
    other = tmp_path / f"calibration.json.99999.0123abcd{PARTIAL_SUFFIX}"
    other.write_bytes(b"another writer's")
    with pytest.raises(TypeError):
        replace_bytes(path, object())
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name]
    assert other.read_bytes() == b"another writer's"


def test_a_held_lock_file_makes_the_next_taker_wait_and_is_removed_after(tmp_path):
    from shallowpi.durable_files import hold_file_lock

    lock = tmp_path / "x.lock"
    order: list[str] = []
    waited_for: list[str] = []

    def first() -> None:
        with hold_file_lock(lock, "pid 1 (first)"):
            order.append("first in")
            time.sleep(0.3)
            order.append("first out")

    def second() -> None:
        time.sleep(0.1)  # after the first has it
        with hold_file_lock(lock, "pid 2 (second)", on_wait=waited_for.append):
            order.append("second in")

    assert _race(first, second) == []
    assert order == ["first in", "first out", "second in"]
    assert waited_for == ["pid 1 (first)"]
    assert not lock.exists()


def test_a_lock_file_held_past_the_wait_names_its_holder(tmp_path):
    from shallowpi.durable_files import FileLockHeld, hold_file_lock

    lock = tmp_path / "x.lock"
    with hold_file_lock(lock, "pid 7 (deploy)"):
        started = time.monotonic()
        with pytest.raises(FileLockHeld) as held, hold_file_lock(lock, "pid 8", wait_s=0.2):
            pass
        assert held.value.holder == "pid 7 (deploy)" and time.monotonic() - started >= 0.2
    assert not lock.exists()
    with hold_file_lock(lock, "pid 8", wait_s=0):  # free again, at once
        assert lock.read_text() == "pid 8"


def test_a_lock_file_left_by_a_killed_holder_is_taken(tmp_path):
    """A holder killed keeps no lock (the kernel drops it) but leaves its file."""
    from shallowpi.durable_files import hold_file_lock

    lock = tmp_path / "x.lock"
    lock.write_text("pid 12345")
    with hold_file_lock(lock, "pid 1", wait_s=0):
        assert lock.read_text() == "pid 1"
    assert not lock.exists()


def test_two_deploys_of_one_engine_build_it_once(tmp_path):
    """Two deploys starting at once each built the same TensorRT engine (minutes on a Jetson)
    into one shared partial file; now the second waits for the first's build and loads the
    engine it cached. TensorRT is not installed here: `build` stands in for its builder."""
    from shallowpi.deploy.backends.tensorrt_backend import cached_engine

    path = tmp_path / "engines" / "0123abcd.engine"
    path.parent.mkdir()
    builds: list[int] = []
    loaded: list[bytes] = []

    def build() -> bytes:
        builds.append(threading.get_ident())
        time.sleep(0.3)
        return b"engine built by %d" % threading.get_ident()

    errors = _race(*(lambda: loaded.append(cached_engine(path, build)) for _ in range(2)))
    assert errors == [], errors
    assert len(builds) == 1
    assert loaded == [path.read_bytes()] * 2
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no lock, no partial file
    assert cached_engine(path, build) == loaded[0] and len(builds) == 1  # cached: not built again


def test_onnxruntimes_tensorrt_sessions_are_made_under_the_engine_caches_lock(tmp_path):
    """onnxruntime's TensorRT provider writes its engines into the cache folder itself: the
    sessions are made under `<cache>.lock`, so a second deploy waits for the first's build
    (then loads the cached engines) instead of building beside it. Without the provider
    nothing is locked. (The provider is not in this onnxruntime: the lock is what is tested.)"""
    from shallowpi.deploy.backends.onnxrt import engine_cache_lock
    from shallowpi.durable_files import FileLockHeld, hold_file_lock

    cache = tmp_path / "engines" / "0123abcd-trt10 fp16"
    cache.mkdir(parents=True)
    lock = cache.with_name(cache.name + ".lock")
    with engine_cache_lock(["CUDAExecutionProvider", "CPUExecutionProvider"]):
        assert list(cache.parent.iterdir()) == [cache]
    trt = [("TensorrtExecutionProvider", {"trt_engine_cache_path": str(cache)}), "CPUExecutionProvider"]
    with engine_cache_lock(trt):
        assert lock.read_text() == f"pid {os.getpid()} (deploy)"
        with pytest.raises(FileLockHeld), hold_file_lock(lock, "pid 2 (deploy)", wait_s=0.1):
            pass
    assert not lock.exists()


def test_an_engine_build_that_fails_caches_nothing(tmp_path):
    from shallowpi.deploy.backends.base import BackendError
    from shallowpi.deploy.backends.tensorrt_backend import cached_engine

    path = tmp_path / "0123abcd.engine"

    def build() -> bytes:
        raise BackendError("TensorRT failed to build an engine")

    with pytest.raises(BackendError):
        cached_engine(path, build)
    assert list(tmp_path.iterdir()) == []
    assert cached_engine(path, lambda: b"rebuilt") == b"rebuilt"


def test_partial_files_of_a_killed_writer_are_still_swept(tmp_path):
    """The store's sweep after a writer died matches `*.partial`: the per-write names keep
    that ending (store._recover, store_files' count)."""
    from shallowpi.durable_files import partial_name

    name = partial_name(tmp_path / "0.0.0.0")
    assert name.endswith(PARTIAL_SUFFIX) and Path(name).parent == tmp_path
    assert Path(name).name.startswith("0.0.0.0.") and partial_name(tmp_path / "0.0.0.0") != name


def test_a_lock_whose_holder_cannot_be_written_is_not_kept(tmp_path):
    """A full disk refused the holder's name after the flock was taken: the lock stayed held
    by this process, and every later claim of that name in it failed ("being made by
    another process") after the space was freed."""
    from disk_fixtures import small_disk
    from shallowpi.durable_files import _HELD_LOCKS, take_file_lock

    with small_disk(tmp_path / "full", "64k") as full:
        lock = full / "a.zarr.create.lock"
        lock.touch()  # the inode exists; the name's bytes are what the full disk refuses
        filler = full / "filler"
        with open(filler, "wb", buffering=0) as out:  # unbuffered: the close has nothing left to write
            try:
                while True:
                    out.write(b"\0" * 4096)
            except OSError:
                pass
        held_before = set(_HELD_LOCKS)
        with pytest.raises(OSError):
            take_file_lock(lock, "pid 1 " + "x" * 8192)
        assert set(_HELD_LOCKS) == held_before
        filler.unlink()
        fd, _ = take_file_lock(lock, "pid 2")  # the space is back: taken again in this process
        from shallowpi.durable_files import release_file_lock

        release_file_lock(fd, clean=True)


def test_a_lock_number_closed_elsewhere_and_given_out_again_is_never_closed_as_the_lock(tmp_path):
    """A lock fd closed behind its holder's back (a double close anywhere in the process)
    stayed listed as held: its number, given out again to a pipe, was closed in the child of
    every Popen with preexec_fn (the fork hook), which failed with EBADF, and a release
    closed the pipe in the process itself."""
    import subprocess
    import sys

    from shallowpi.durable_files import release_file_lock, take_file_lock

    fd, _ = take_file_lock(tmp_path / "x.lock", "pid 1")
    os.close(fd)  # closed elsewhere: the Popen's own pipes take the number
    done = subprocess.run([sys.executable, "-c", "print('ran')"], capture_output=True, text=True,
                          preexec_fn=lambda: None, timeout=60)
    assert done.stdout == "ran\n"
    read, write = os.pipe()  # the lowest free numbers: the lock's among them
    assert fd in (read, write)
    release_file_lock(fd, clean=False)
    os.write(write, b"still open")
    assert os.read(read, 64) == b"still open"
    os.close(read)
    os.close(write)
