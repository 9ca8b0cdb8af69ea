"""`dataset check` and the store's validity (issue 10: items 2, 3, 8, 10, 11).

A damaged store is named by array and rows and never read as data; NaN/inf are reported
by episode, array and row; a live recording's episode in flight and a killed writer's
tail are what they are, not damage; mixed frame rates are refused.
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.data import EpisodeStore, chunk_files, store_check, zarr_compat
from shallowpi.data.store import StoreSettings
from shallowpi.data.store_check import (
    check_store,
    repair_store,
)
from shallowpi.data.store_files import file_problems, require_intact
from shallowpi.errors import StoreError
from store_fixtures import make_store, stamp_episode, synthetic_frame

TESTS = Path(__file__).parent


def _check_cli(path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(platform_cmd("dataset", "check", str(path), *flags), env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)


def _chunk(path: Path, key: str, name: str) -> Path:
    return path / "data" / key / name


# --- item 10: a damaged store is never read as data --------------------------------------


@pytest.mark.bad_store
@pytest.mark.parametrize("damage", ["numbers gone", "frame gone", "numbers changed"])
def test_merge_and_delete_refuse_a_damaged_store_and_leave_it_as_it_was(tmp_path, damage):
    """Both copy episodes through zarr, which reads a missing chunk as zeros; the copy then
    recorded fresh checksums over them, and `dataset check` called the result healthy (a
    delete did that in place, for good). A frame gone was a FileNotFoundError traceback that
    left a half-made merge behind. Now each refuses before writing, or stops at the first
    copied episode that fails its checksums, and removes what it made."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=20, settings=StoreSettings(durable=False, numeric_chunk_rows=16)).close()
    other = make_store(tmp_path / "o.zarr", episodes=1)
    if damage == "numbers gone":
        _chunk(path, "action", "2.0").unlink()  # rows 32-47: episodes 1 and 2
    elif damage == "frame gone":
        _chunk(path, "observation.images.front", "25.0.0.0").unlink()  # episode 1
    else:
        with EpisodeStore.open(path, mode="a") as store:
            store._group["data/action"][25] = np.full(6, 9.0, np.float32)  # bit rot in episode 1
    expected = "does not match its checksum" if damage == "numbers changed" else "s.zarr is damaged: data/"
    with EpisodeStore.open(path) as store:
        before = check_store(store).problems
        assert before
        with pytest.raises(StoreError, match=expected):
            EpisodeStore.merge([other, store], tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()  # a rerun is not refused as "already exists"
    with EpisodeStore.open(path, mode="a") as store, pytest.raises(StoreError, match=expected):
        store.delete_episodes([2] if damage == "numbers changed" else [0])  # keeps the damaged episode 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.zarr", "s.zarr"]  # no .compacting left
    with EpisodeStore.open(path) as store:
        assert len(store) == 3 and check_store(store).problems == before  # as it was: still named


@pytest.mark.bad_store
def test_deleting_the_damaged_episodes_saves_the_rest_of_the_store(tmp_path):
    """One frame file gone locked the whole store: train, merge and export refuse it (right),
    and so did the delete that would remove the episode that owns the frame, and an episode
    whose metadata file is unreadable could not be deleted either. A delete reads only the
    rows it keeps, and the refusal names the delete that saves the rest."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=4, length=20, settings=StoreSettings(durable=False)).close()
    _chunk(path, "observation.images.front", "25.0.0.0").unlink()  # a frame of episode 1
    (path / "episodes" / "2.json").write_text("")  # episode 2's metadata lost
    with EpisodeStore.open(path) as store, pytest.raises(StoreError) as refused:
        require_intact(store)
    assert str(refused.value).endswith(f"`platform dataset delete {path} --episode 1` keeps the rest")
    # `dataset check` names both and exits 1 (it stopped at the metadata, exit 3, naming nothing else)
    checked = _check_cli(path)
    assert checked.returncode == 1, checked.stderr
    said = checked.stdout + checked.stderr
    assert "episode 2: its metadata file (episodes/2.json) does not read, so its rows are not judged" in said
    assert "rows 25 (episode 1) would read as zeros" in said
    # `dataset list` and `info` show the store, the unreadable episode in its own row (a
    # StoreError killed list's table for every store, and info)
    for action in ("list", "info"):
        shown = subprocess.run(platform_cmd("dataset", action, *(["s"] if action == "info" else []),
                                            "--data-root", str(tmp_path)),
                               env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert shown.returncode == 0, shown.stderr
    assert "metadata file does not read" in shown.stdout and "put the red cube" in shown.stdout
    # the flag repeated deletes both (it deleted only the last, silently)
    deleted = subprocess.run(platform_cmd("dataset", "delete", str(path), "--episode", "1", "--episode", "2",
                                          "--yes"), env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    assert "s.zarr: deleted 2 episode(s), 2 left" in deleted.stdout
    with EpisodeStore.open(path) as store:
        assert len(store) == 2 and not check_store(store).problems
        require_intact(store)
    # A delete that keeps a damaged episode is still refused, the store as it was.
    make_store(tmp_path / "t.zarr", episodes=3, length=20, settings=StoreSettings(durable=False)).close()
    _chunk(tmp_path / "t.zarr", "observation.images.front", "25.0.0.0").unlink()
    with EpisodeStore.open(tmp_path / "t.zarr", mode="a") as store, pytest.raises(StoreError, match="is damaged"):
        store.delete_episodes([2])


@pytest.mark.bad_store
def test_the_delete_named_for_an_array_cut_short_runs_and_nothing_records_into_it_meanwhile(tmp_path):
    """An array cut short of the committed rows (a copy that stopped early): the refusal
    named the delete that keeps the rest, and that delete was refused by the writable open
    it needs ("the store is damaged"), so the store could not be saved that way. It opens to
    salvage now; a recording is still refused (it would append after a gap read as zeros)."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=20, settings=StoreSettings(durable=False, numeric_chunk_rows=16)).close()
    group = zarr_compat.open_group(path, mode="r+")
    group["data/action"].resize((50, 6))  # episode 2 holds rows 41-62
    with EpisodeStore.open(path) as store, pytest.raises(StoreError) as refused:
        require_intact(store)
    assert str(refused.value).endswith(f"`platform dataset delete {path} --episode 2` keeps the rest")
    with pytest.raises(StoreError, match=r"committed episodes need 63; the store is damaged \(`platform dataset check"):
        EpisodeStore.open(path, mode="a")
    with EpisodeStore.open(path, mode="a", salvage=True) as store, pytest.raises(StoreError, match="nothing is recorded"):
        store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    deleted = subprocess.run(platform_cmd("dataset", "delete", str(path), "--episode", "2", "--yes"),
                             env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    with EpisodeStore.open(path, mode="a") as store:
        assert len(store) == 2 and not check_store(store).problems
        require_intact(store)


def test_a_check_during_which_the_store_is_edited_reports_no_damage_and_says_to_run_it_again(tmp_path):
    """A recorder's d (the last episode dropped) landing while `dataset check` decoded the
    frames: the frames are read from their files, so the dropped episode's frames showed as
    "missing", and the check said the healthy store was damaged (exit 1)."""
    from shallowpi.errors import StoreEditedError

    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=20).close()
    dropped = []

    def drop_the_last_once(done: int, total: int) -> None:
        if not dropped:
            with EpisodeStore.open(path, mode="a") as writer:
                dropped.append(writer.drop_last_episode())

    with EpisodeStore.open(path) as store, pytest.raises(StoreEditedError, match=r"s\.zarr was edited while it "
                                                                              r"was checked .* run the check again"):
        check_store(store, workers=1, progress=drop_the_last_once)
    assert dropped
    with EpisodeStore.open(path) as store:  # checked again: sound, one episode shorter
        assert len(store) == 2 and check_store(store).ok


def test_merge_refuses_to_encode_frames_again_lossily(tmp_path):
    """Frames copy as their bytes only between stores that encode them alike; otherwise a
    merge re-encodes them with the first store's codec. Into a lossless store nothing is
    lost; into a JPEG one every frame of a lossless source lost detail, silently."""
    jpeg = make_store(tmp_path / "jpeg.zarr", episodes=1, length=5)
    raw = make_store(tmp_path / "raw.zarr", episodes=1, length=5,
                     settings=StoreSettings(image_codec="blosc-zstd", durable=False))
    with pytest.raises(StoreError, match=r"raw.zarr's frames are blosc-zstd and jpeg.zarr's jpeg q90: merged into "
                                         r"jpeg.zarr's, they would be encoded again with jpeg, losing detail; put "
                                         r"raw.zarr first"):
        EpisodeStore.merge([jpeg, raw], tmp_path / "m.zarr")
    assert not (tmp_path / "m.zarr").exists()
    merged = EpisodeStore.merge([raw, jpeg], tmp_path / "m.zarr")  # into the lossless one: exact
    np.testing.assert_array_equal(merged.read_episode(0)["observation.images.front"],
                                  raw.read_episode(0)["observation.images.front"])


@pytest.mark.bad_store
def test_missing_chunk_files_are_named_by_array_and_rows(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=20, settings=StoreSettings(durable=False, numeric_chunk_rows=16)).close()
    _chunk(path, "action", "2.0").unlink()  # rows 32-47: episodes 1 and 2
    _chunk(path, "observation.images.front", "5.0.0.0").unlink()  # frame 5 of episode 0
    with EpisodeStore.open(path) as store:
        assert store.read("action", 32, 48).sum() == 0  # what zarr would hand to training
        problems = check_store(store).problems
        assert file_problems(store) == problems  # the cheap scan already names both
    assert problems == [
        "data/action: 1 chunk file missing, rows 32-47 (episodes 1-2) would read as zeros",
        "data/observation.images.front: 1 chunk file missing, rows 5 (episode 0) would read as zeros",
    ]


@pytest.mark.bad_store
def test_an_array_shorter_than_its_episodes_is_named(tmp_path):
    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=20).close()  # 63 rows
    zarray = _chunk(path, "observation.state", ".zarray")
    meta = json.loads(zarray.read_text())
    meta["shape"][0] = 60
    zarray.write_text(json.dumps(meta))
    with EpisodeStore.open(path) as store:
        problems = check_store(store).problems
        with pytest.raises(StoreError, match=r"data/observation.state has 60 rows but meta/episode_ends commits 63: "
                                             r"rows 60-62 \(episode 2\) are missing") as err:
            require_intact(store)
    assert "\n" not in str(err.value) and f"`platform dataset check {path}` lists it all" in str(err.value)
    assert problems == [
        "data/observation.state has 60 rows but meta/episode_ends commits 63: rows 60-62 (episode 2) are missing"]


@pytest.mark.bad_store
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_every_frame_is_decoded_on_a_pool(tmp_path, pool):
    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    _chunk(path, "observation.images.front", "3.0.0.0").write_bytes(b"not a jpeg")
    whole = _chunk(path, "observation.images.wrist", "14.0.0.0")
    whole.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])  # cut off mid-file
    seen = []
    with EpisodeStore.open(path) as store:
        report = check_store(store, workers=2, pool=pool, progress=lambda done, total: seen.append((done, total)))
        quick = check_store(store, decode_images=False)
    assert [p.split(" does not")[0].split(" decodes")[0].split(" is cut short")[0] for p in report.problems] == [
        "episode 0: frame 3 of observation.images.front",
        "episode 1: frame 4 of observation.images.wrist",
    ]
    assert seen[0] == (0, 2 * 21) and seen[-1] == (2 * 21, 2 * 21)  # every frame of both cameras
    assert quick.problems == []  # --quick reads each episode's first and last frame only


@pytest.mark.bad_store
def test_a_frame_cut_short_is_named(tmp_path):
    """A JPEG frame cut anywhere after its header decodes without an error, at full size,
    the rest grey: `dataset check` (and --quick) said "ok" over a frame cut to a third."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    front, wrist = _chunk(path, "observation.images.front", "0.0.0.0"), _chunk(path, "observation.images.wrist",
                                                                           "14.0.0.0")
    whole = {front: front.read_bytes(), wrist: wrist.read_bytes()}
    scan = whole[front].index(b"\xff\xda") + 2  # past the header: the entropy-coded data
    front.write_bytes(whole[front][: (scan + len(whole[front])) // 2])  # episode 0's first: --quick reads it
    wrist.write_bytes(whole[wrist][:-2])  # just its end marker gone; episode 1's frame 4
    with EpisodeStore.open(path) as store:
        full, quick = check_store(store, workers=1), check_store(store, decode_images=False)
        with pytest.raises(StoreError, match=r"front/0\.0\.0\.0 is cut short"):
            store.read("observation.images.front", 0, 1)  # a training sample: it read the grey frame
    assert [p.split(" is cut short")[0] for p in full.problems] == [
        "episode 0: frame 0 of observation.images.front", "episode 1: frame 4 of observation.images.wrist"]
    assert full.problems[1].endswith(f"is cut short: its {len(whole[wrist]) - 2} bytes end without JPEG's "
                                     "end-of-image marker (FF D9)")
    assert quick.problems == full.problems[:1]
    checked = _check_cli(path, "--quick")
    assert checked.returncode == 1 and "frame 0 of observation.images.front is cut short" in checked.stderr


def test_ctrl_c_during_the_frame_check_leaves_the_queued_batches_undecoded(tmp_path, monkeypatch):
    """Every decode batch was queued at once and, on Ctrl-C, leaving the pool waited for all
    of them: a lab store's check said "interrupted" 30 s after Ctrl-C, every batch decoded.
    Now only the batches already decoding finish. (A slow disk: each batch after the first
    takes 0.1 s; Ctrl-C as the first one is counted.)"""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    monkeypatch.setattr(store_check, "DECODE_BATCH", 1)  # 42 batches: each frame of both cameras
    started: list[list[int]] = []
    decode = chunk_files.undecodable_frames

    def slow_decode(*args):
        started.append(args[1])
        if len(started) > 1:
            time.sleep(0.1)
        return decode(*args)

    def ctrl_c(done: int, total: int) -> None:
        if done:
            raise KeyboardInterrupt

    monkeypatch.setattr(chunk_files, "undecodable_frames", slow_decode)
    raised: BaseException | None = None
    t0 = time.monotonic()
    with EpisodeStore.open(path) as store:
        try:  # not pytest.raises: a KeyboardInterrupt getting through would end the whole session
            check_store(store, workers=2, pool="thread", progress=ctrl_c)
        except BaseException as exc:
            raised = exc
    assert isinstance(raised, KeyboardInterrupt), raised
    assert len(started) <= 3, f"{len(started)} of 42 batches decoded after Ctrl-C"  # the first, and 2 decoding
    assert time.monotonic() - t0 < 2.0


def test_quick_says_which_camera_frames_it_decoded(tmp_path):
    """--quick decodes each episode's first and last camera frame, and said "21 frames
    verified" of them all."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    checked = _check_cli(path, "--quick")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() == ("s.zarr: ok, 2 episodes, 21 frames: numbers verified in all, camera frames "
                                      "decoded in 4 (each episode's first and last: --quick)")
    with EpisodeStore.open(path) as store:
        assert check_store(store).decoded_rows == 21  # without --quick: "21 frames verified"


@pytest.mark.bad_store
def test_train_export_and_eval_refuse_a_bad_store(tmp_path):
    from shallowpi.commands.train_cmd import store_episodes
    from shallowpi.data.training import ChunkDataset

    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    _chunk(path, "action", "0.0").unlink()
    message = r"s.zarr is damaged: data/action: 1 chunk file missing, rows 0-20 \(episodes 0-1\)"
    with pytest.raises(StoreError, match=message):
        store_episodes(path)  # train, before its run folder exists
    with pytest.raises(StoreError, match=message):
        ChunkDataset(path, chunk_len=4)  # train's and eval's dataset
    run = subprocess.run(platform_cmd("train", "--dataset", str(path), "--policy", "tiny", "--runs-dir",
                                      str(tmp_path / "runs"), "--steps", "1", "--no-progress"),
                         env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 3, run.stderr[-2000:]
    assert "data/action: 1 chunk file missing" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "runs").exists()
    # The command the line points at finds the store wherever it lies (no --data-root needed).
    hint = shlex.split(run.stderr.strip().splitlines()[-1].split("`")[1])
    assert hint == ["platform", "dataset", "check", str(path)]
    listed = subprocess.run(platform_cmd(*hint[1:]), env=subprocess_env(), capture_output=True, text=True,
                            timeout=300, cwd=tmp_path.parent)
    assert listed.returncode == 1 and "data/action: 1 chunk file missing" in listed.stdout + listed.stderr


@pytest.mark.bad_store
def test_export_refuses_a_bad_store_and_leaves_nothing(tmp_path):
    pytest.importorskip("lerobot", reason="needs the lerobot extra (Python >= 3.12)")
    from shallowpi.data.lerobot_export import export_lerobot

    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=10).close()
    _chunk(path, "observation.images.front", "12.0.0.0").unlink()
    with pytest.raises(StoreError, match=r"data/observation.images.front: 1 chunk file missing, rows 12 \(episode 1\)"):
        export_lerobot(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]


# --- item 3: non-finite numbers never enter unnoticed ------------------------------------


def _store_with_nan(path: Path) -> EpisodeStore:
    rng = np.random.default_rng(0)
    store = make_store(path, episodes=1, length=10)
    writer = store.begin_episode("t", robot="arm", calibration_id="cal-test", fps=30)
    for t in range(12):
        frame = synthetic_frame(rng, t)
        if t in (3, 7, 8):
            frame["observation.state"][2] = np.nan if t != 8 else np.inf
        writer.add_frame(frame, t / 30)
    writer.commit()
    return store


@pytest.mark.bad_store
def test_writer_records_nonfinite_rows_and_check_names_them(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        store = _store_with_nan(tmp_path / "s.zarr")
    assert store.episode(1).nonfinite == {"observation.state": [[3, 4], [7, 9]]}
    assert store.episode(0).nonfinite == {}
    assert "episode 1: observation.state holds NaN/inf at rows 3, 7-8" in caplog.text
    report = check_store(store)
    assert report.problems == ["episode 1: observation.state holds NaN/inf at rows 3, 7-8 (of 12)"]
    assert report.nonfinite == {1: {"observation.state": [[3, 4], [7, 9]]}}
    store.close()
    result = _check_cli(tmp_path / "s.zarr")
    assert result.returncode == 1
    assert "s.zarr: episode 1: observation.state holds NaN/inf at rows 3, 7-8 (of 12)" in result.stderr
    info = subprocess.run(platform_cmd("dataset", "info", str(tmp_path / "s.zarr")), env=subprocess_env(),
                          capture_output=True, text=True, timeout=120)
    assert "observation.state rows 3, 7-8" in info.stdout  # the episode table shows the writer's record


@pytest.mark.bad_store
def test_check_scans_the_data_of_stores_written_before_the_writer_flagged(tmp_path):
    store = make_store(tmp_path / "s.zarr", episodes=2, length=10)
    assert store.episode(1).nonfinite == {}  # as an older writer left it: nothing recorded
    store._group["data/action"][14] = np.full(6, np.nan, np.float32)  # row 4 of episode 1
    report = check_store(store)
    assert "episode 1: action holds NaN/inf at rows 4 (of 11)" in report.problems
    assert report.nonfinite == {1: {"action": [[4, 5]]}}


# --- item 2, check side: what cannot be mixed ---------------------------------------------


def _store_with_episodes(path: Path, *specs: tuple[float, str]) -> None:
    """A closed store whose episodes were recorded at these (fps, calibration id): as
    written elsewhere or before the store refused to mix them."""
    make_store(path, episodes=len(specs), length=4).close()
    for index, (fps, calibration) in enumerate(specs):
        stamp_episode(path, index, fps=fps, calibration_id=calibration)


@pytest.mark.bad_store
def test_check_refuses_mixed_frame_rates(tmp_path):
    _store_with_episodes(tmp_path / "s.zarr", (30, "c"), (30, "c"), (15, "c"))
    result = _check_cli(tmp_path / "s.zarr")
    assert result.returncode == 1
    assert "episodes mix frame rates: 30 Hz (episodes 0-1), 15 Hz (episode 2)" in result.stderr


def test_check_warns_on_mixed_calibrations_unless_the_store_allows_them(tmp_path):
    path = tmp_path / "s.zarr"
    _store_with_episodes(path, (30, "cal-a"), (30, "cal-b"), (30, "cal-a"), (30, ""))
    result = _check_cli(path)
    assert result.returncode == 0
    # An episode without a calibration id (a LeRobot import) is compared with none.
    assert "warning: episodes mix calibration ids: cal-a (episodes 0, 2), cal-b (episode 1);" in result.stderr
    with EpisodeStore.open(path, mode="a") as store:
        store.allow_mixed_calibration()  # what --allow-mixed-calibration records
        assert check_store(store).warnings == []


# --- items 8 and 11: a recording in flight, a killed recording ---------------------------


def _start_inflight_writer(path: Path, committed: int, frames: int) -> subprocess.Popen:
    env = subprocess_env(PYTHONPATH=subprocess_env()["PYTHONPATH"] + ":" + str(TESTS))
    writer = subprocess.Popen([sys.executable, str(TESTS / "inflight_writer.py"), str(path), str(committed), str(frames)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout.readline().strip() == b"in flight", writer.stderr.read().decode()[-2000:]
    return writer


def test_check_during_a_recording_judges_only_committed_episodes(tmp_path):
    path = tmp_path / "live.zarr"
    writer = _start_inflight_writer(path, committed=2, frames=12)
    try:
        result = _check_cli(path)
        assert result.returncode == 0, result.stderr
        assert f"live.zarr: being recorded by pid {writer.pid}: checked the 2 committed episodes, " \
               "12 frames of the next in flight" in result.stdout
        assert "ok, 2 episodes, 20 frames verified" in result.stdout
        with pytest.raises(StoreError, match=f"being recorded by pid {writer.pid}"):
            repair_store(path)  # a live episode is no leftover
    finally:
        writer.kill()
        writer.wait(timeout=30)


def test_check_beside_a_writer_committing_all_the_time(tmp_path):
    """The recorder's rhythm, checked at whatever moment: never a problem."""
    path, log = tmp_path / "busy.zarr", tmp_path / "commits.jsonl"
    env = subprocess_env(PYTHONPATH=subprocess_env()["PYTHONPATH"] + ":" + str(TESTS))
    writer = subprocess.Popen([sys.executable, str(TESTS / "crash_writer.py"), str(path), str(log), "7"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert writer.stdout.readline().strip() == b"ready", writer.stderr.read().decode()[-2000:]
        assert writer.stdout.readline().startswith(b"committed")
        for _ in range(8):
            with EpisodeStore.open(path) as store:
                report = check_store(store)
            assert report.problems == [] and report.tail is not None
            assert report.tail.writer == f"pid {writer.pid}"
    finally:
        writer.kill()
        writer.wait(timeout=30)


def test_after_a_kill_check_names_the_tail_and_repair_trims_it(tmp_path):
    path = tmp_path / "killed.zarr"
    writer = _start_inflight_writer(path, committed=2, frames=12)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)
    result = _check_cli(path)
    assert result.returncode == 0, result.stderr
    assert ("killed.zarr: 12 uncommitted frames past the last committed episode, left by a writer that stopped "
            "before committing (no committed episode is affected); the next recording removes them, or "
            f"`platform dataset repair {path}` now") in result.stdout  # the path: a name would resolve under the data root
    assert "ok, 2 episodes, 20 frames verified" in result.stdout
    with EpisodeStore.open(path) as store:
        before = [store.read_episode(i) for i in range(2)]
    repaired = subprocess.run(platform_cmd("dataset", "repair", str(path)), env=subprocess_env(),
                              capture_output=True, text=True, timeout=120)
    assert repaired.returncode == 0, repaired.stderr
    assert "removed 12 uncommitted frames" in repaired.stdout
    with EpisodeStore.open(path) as store:
        report = check_store(store)
        assert report.problems == [] and report.notes == [] and report.tail is None
        assert len(store) == 2 and store.array_info("observation.images.front")["shape"][0] == 20
        for i, episode in enumerate(before):
            for key, value in store.read_episode(i).items():
                np.testing.assert_array_equal(value, episode[key])
    assert repair_store(path).empty  # nothing left to do


@pytest.mark.slow
def test_check_beside_a_real_recording_then_after_killing_it(tmp_path):
    """`platform record` in the twin, checked while it records and after a kill -9."""
    recorder = subprocess.Popen(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "live", "--no-tui", "record.sim_size=96x96",
                     f"telemetry.address={tmp_path}/t.sock", "--episodes", "50", "--episode-time-s", "1",
                     "--reset-time-s", "0"),
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while "episode 1 saved" not in (line := recorder.stdout.readline()):
            assert line or recorder.poll() is None, recorder.stderr.read()[-2000:]
        for _ in range(3):  # whatever the recorder is doing at that moment
            result = _check_cli(tmp_path / "live.zarr")
            assert result.returncode == 0, result.stdout + result.stderr
            assert f"being recorded by pid {recorder.pid}: checked the" in result.stdout
            assert "problem" not in result.stderr
    finally:
        recorder.send_signal(signal.SIGKILL)
        recorder.communicate(timeout=60)
    killed = _check_cli(tmp_path / "live.zarr")
    assert killed.returncode == 0, killed.stdout + killed.stderr
    assert "being recorded" not in killed.stdout and " ok, " in killed.stdout
    repair_store(tmp_path / "live.zarr")
    with EpisodeStore.open(tmp_path / "live.zarr") as store:
        report = check_store(store)
    assert report.problems == [] and report.notes == [] and len(store) >= 2
