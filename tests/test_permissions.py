"""Files of a lab's shared disk: locks a group member can take, exports the umask shares,
and a colleague's store or checkpoint read as theirs, not as damage nor as "cannot write".

As root, a command runs as someone who is not the files' owner by losing the capabilities
that let root past file modes (`setpriv --bounding-set`), against files chowned to
FOREIGN_UID; as another user, against files whose owner's bits are what others would get (the real
user's own limits).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from store_fixtures import make_store

FOREIGN_UID = 1234  # a colleague: owns no file here
GROUP = 1234  # the lab's group
DROP_OVERRIDES = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner,-chown", "--inh-caps", "-all"]


def _can_drop_overrides() -> bool:
    if shutil.which("setpriv") is None:
        return False
    probe = subprocess.run([*DROP_OVERRIDES, "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


def as_other_user(command: list[str]) -> list[str]:
    """`command`, run where the modes of FOREIGN_UID's files hold (see the module's
    docstring); skips the test where root cannot drop its overrides."""
    if os.geteuid() != 0:
        return command
    if not _can_drop_overrides():
        pytest.skip("needs setpriv able to drop root's file-mode overrides (CAP_DAC_OVERRIDE and others)")
    return [*DROP_OVERRIDES, *command]


def colleagues(path: Path, mode: int) -> None:
    """Make `path` a colleague's of `mode`; as another user, give its owner (this user) what
    `mode` gives others (0o700 becomes 0, 0o755 0o555): the same refusals."""
    if os.geteuid() == 0:
        os.chown(path, FOREIGN_UID, FOREIGN_UID)
        path.chmod(mode)
    else:
        path.chmod((mode & 0o7) * 0o111)


def _run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env())


@pytest.fixture
def umask_002() -> Iterator[None]:
    previous = os.umask(0o002)
    yield
    os.umask(previous)


@pytest.fixture
def shared_folder(umask_002) -> Iterator[Path]:
    """A group-shared folder as a lab sets one up: setgid, 2775, the lab's group; under /tmp
    itself, so another user can reach it (pytest's tmp_path is in a 0700 folder)."""
    folder = Path(tempfile.mkdtemp(prefix="sp-shared-", dir="/tmp"))
    if os.geteuid() == 0:
        os.chown(folder, 0, GROUP)
    folder.chmod(0o2775)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _another_member_opens(path: Path) -> subprocess.CompletedProcess[str]:
    """Open `path` read-write as another member of the lab's group (a uid of its own)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or sys.executable
    return subprocess.run(["setpriv", f"--reuid={FOREIGN_UID + 1}", f"--regid={GROUP}", "--clear-groups",
                           python, "-c", f"import os; os.close(os.open({str(path)!r}, os.O_RDWR))"],
                          capture_output=True, text=True, timeout=60)


def _lock_of_store(folder: Path) -> Path:
    make_store(folder / "kitchen.zarr", episodes=1, length=2).close()
    return folder / "kitchen.zarr" / ".shallowpi.lock"


def _lock_of_run(folder: Path) -> Path:
    from shallowpi.train.run_lock import LOCK_NAME, RunLock

    RunLock(folder).release()
    return folder / LOCK_NAME


def _lock_of_calibration(folder: Path) -> Path:
    from dxl_fixtures import centred, robot_spec
    from shallowpi.robots.calibration import update_calibration

    spec = robot_spec("arm")
    _, _, path = update_calibration(spec, {"follower": centred(spec, spec.motors)}, folder)
    return path.parent / ".calibration.lock"


@pytest.mark.parametrize("make", [_lock_of_store, _lock_of_run, _lock_of_calibration])
def test_a_lock_in_a_group_shared_folder_is_one_another_member_can_take(shared_folder, make):
    """Locks were made 0o644 whatever the umask: in a setgid 2775 folder under umask 002,
    where every other file is 664, the lock was the one another member could not open
    read-write, and their `record --resume` (or calibrate, or train --resume) was refused."""
    lock = make(shared_folder)
    assert stat.S_IMODE(lock.stat().st_mode) == 0o664
    if os.geteuid() == 0 and shutil.which("setpriv"):
        opened = _another_member_opens(lock)
        assert opened.returncode == 0, opened.stderr


def test_the_deploy_bundle_lock_is_removed_once_the_bundle_is_built(tmp_path):
    """`.CKPT.bundle.lock` stayed beside every checkpoint deployed (one sat in robots/arm/)."""
    from deploy_fixtures import tiny_checkpoint
    from shallowpi.commands.deploy_policy import policy_bundle

    ckpt = tiny_checkpoint(tmp_path / "ckpt")
    built = policy_bundle(argparse.Namespace(policy=ckpt, bundle=None), "torch")
    assert built.path == tmp_path / "ckpt.bundle"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "ckpt.bundle"]


def test_dataset_list_shows_a_colleague_s_private_store_as_theirs_and_lists_the_rest(tmp_path):
    """One 0700 store of another user in the data root made `dataset list` print no table,
    only "error: cannot write .../b.zarr/.zgroup: permission denied"."""
    make_store(tmp_path / "a.zarr", episodes=2, length=3).close()
    make_store(tmp_path / "b.zarr", episodes=1, length=3).close()
    colleagues(tmp_path / "b.zarr", 0o700)
    done = _run(as_other_user(platform_cmd("dataset", "list", f"data_root={tmp_path}")))
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): line for line in done.stdout.splitlines() if line.count("│") > 2}
    assert rows["a"].split("│")[2].strip() == "2"
    said = " ".join(done.stdout.replace("│", " ").split())  # the row's wrapped cell read as one line
    owner = "owner uid 1234, mode 0o700" if os.geteuid() == 0 else "owner uid"
    assert f"b - - - - {tmp_path / 'b.zarr'} is not readable by this user ({owner}" in said, done.stdout
    assert "); ask its owner" in said, done.stdout


def test_opening_a_colleague_s_store_says_whose_it_is(tmp_path):
    """EpisodeStore.open's first look inside raised PermissionError, not StoreError."""
    make_store(tmp_path / "b.zarr", episodes=1, length=3).close()
    colleagues(tmp_path / "b.zarr", 0o700)
    code = ("from shallowpi.data.store import EpisodeStore\nfrom shallowpi.errors import StoreError\n"
            f"try:\n    EpisodeStore.open({str(tmp_path / 'b.zarr')!r})\nexcept StoreError as e:\n    print(e)\n")
    done = _run(as_other_user([sys.executable, "-c", code]))
    assert done.returncode == 0, done.stderr
    owner = "owner uid 1234, mode 0o700" if os.geteuid() == 0 else "owner uid"
    assert done.stdout.startswith(f"{tmp_path / 'b.zarr'} is not readable by this user ({owner}"), done.stdout
    assert done.stdout.rstrip().endswith("; ask its owner")


def test_dataset_check_says_an_unreadable_episode_is_not_readable_never_to_delete_it(tmp_path):
    """An episodes/1.json of mode 0600 (another user's) was "does not read ...; `platform
    dataset delete` it to keep the rest", and its chunk rows "do not decode (PermissionError)":
    advice to delete a sound episode this user merely cannot read."""
    make_store(tmp_path / "s.zarr", episodes=2, length=3).close()
    colleagues(tmp_path / "s.zarr" / "episodes" / "1.json", 0o600)
    chunk = next(p for p in (tmp_path / "s.zarr" / "data" / "observation.state").iterdir() if p.name[0].isdigit())
    colleagues(chunk, 0o600)
    done = _run(as_other_user(platform_cmd("dataset", "check", str(tmp_path / "s.zarr"))))
    said = done.stdout + done.stderr
    assert "episode 1: its metadata file (episodes/1.json) is not readable by this user: ask its owner (or check " \
           "as them)" in said, said
    assert "data/observation.state: rows 0-" in said and "are not readable by this user" in said, said
    assert "delete" not in said and "do not decode" not in said and "damaged" not in said, said


def test_deploying_a_colleague_s_checkpoint_to_rebuild_says_why_then_names_bundle(tmp_path):
    """A colleague's checkpoint whose bundle was built by other code failed with "cannot write
    .../.ckpt.bundle.lock: permission denied", before saying why it had to be rebuilt."""
    from deploy_fixtures import tiny_checkpoint
    from shallowpi.commands.deploy_policy import policy_bundle
    from shallowpi.deploy.bundle import MANIFEST

    theirs = tmp_path / "theirs"
    ckpt = tiny_checkpoint(theirs / "ckpt")
    built = policy_bundle(argparse.Namespace(policy=ckpt, bundle=None), "torch")
    manifest = json.loads((built.path / MANIFEST).read_text())
    (built.path / MANIFEST).write_text(json.dumps({**manifest, "code_sha256": "0" * 64}))  # built by other code
    for path in theirs.rglob("*"):  # all of it theirs, readable by the lab (Policy.save makes 0600 weights)
        colleagues(path, 0o755 if path.is_dir() else 0o644)
    colleagues(theirs, 0o755)
    code = ("import argparse, pathlib\nfrom shallowpi.commands.deploy_policy import policy_bundle\n"
            "from shallowpi.errors import ConfigError\ntry:\n"
            f"    policy_bundle(argparse.Namespace(policy=pathlib.Path({str(ckpt)!r}), bundle=None), 'torch')\n"
            "except ConfigError as e:\n    print('error:', e)\n")
    try:
        done = _run(as_other_user([sys.executable, "-c", code]))
    finally:
        theirs.chmod(0o755)  # as another user: pytest's cleanup must get in again
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stderr
    assert lines[0] == f"rebuilding {built.path}: it was built by other policy, export or robot-side code than this"
    assert lines[1] == (f"error: cannot build the bundle at {built.path}: {theirs} is not writable by this user; "
                        "pass --bundle DIR, a folder of yours, to build it there"), lines


def _theirs(folder: Path) -> None:
    """Everything in `folder` and the folder itself a colleague's, readable by the lab (0755,
    0644): this user may read it and write none of it."""
    for path in folder.rglob("*"):
        colleagues(path, 0o755 if path.is_dir() else 0o644)
    colleagues(folder, 0o755)


def _owner(mode: int) -> str:
    """How a refusal names a colleague's file of `mode`: as another user only its owner's
    uid is known to be in it (their own, with the modes `colleagues` gave)."""
    return f"owner uid {FOREIGN_UID}, mode {oct(mode)}" if os.geteuid() == 0 else "owner uid"


def test_an_output_in_a_colleague_s_folder_is_refused_before_the_work(tmp_path):
    """`ready_output` made the folder with mkdir(exist_ok=True), which passes a colleague's
    (or a read-only) folder: `sim --png` ran its episode ("episode 0 seed 0: success ..."),
    then said "cannot write .../s.png.tmp", the result lost (a deploy's --json, an hour of
    episodes)."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    _theirs(theirs)
    done = _run(as_other_user(platform_cmd("sim", "--robot", "arm", "--task", "cube_in_bowl", "--size", "32x32",
                                           "--png", str(theirs / "s.png"))))
    assert done.returncode == 2 and done.stdout == "", done.stdout  # no episode ran
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: cannot write {theirs / 's.png'}: permission denied (its folder: {_owner(0o755)}")
    assert line.endswith("); make it writable or give --png on another disk"), line
    assert list(theirs.iterdir()) == []


def test_an_output_folder_that_takes_files_is_left_as_it_was(tmp_path):
    """The writability probe's file goes again: nothing but what the command writes is left."""
    from shallowpi.cli import ready_output

    assert ready_output(tmp_path / "a" / "r.json", "--json") == tmp_path / "a" / "r.json"
    assert ready_output(tmp_path / "videos", "--out", folder=True) == tmp_path / "videos"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "videos"]


def test_a_failed_read_says_cannot_read_and_whose_a_failed_write_cannot_write(tmp_path):
    """Every EACCES was "cannot write X ... make it writable": `dataset info` of a store whose
    meta/episode_ends chunk is a colleague's 0600 file said so, having written nothing."""
    make_store(tmp_path / "b.zarr", episodes=2, length=3).close()
    chunk = tmp_path / "b.zarr" / "meta" / "episode_ends" / "0"
    colleagues(chunk, 0o600)
    done = _run(as_other_user(platform_cmd("dataset", "info", str(tmp_path / "b.zarr"))))
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: cannot read {chunk}: permission denied ({_owner(0o600)}"), line
    assert line.endswith("); ask its owner"), line
    # A write into a colleague's folder is still a write's refusal.
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    colleagues(theirs, 0o755)
    code = ("import argparse\nfrom shallowpi.cli import file_system_error\n"
            f"try:\n    open({str(theirs / 'new.json')!r}, 'w')\n"
            "except OSError as e:\n    print(file_system_error(e, argparse.Namespace()))\n")
    wrote = _run(as_other_user([sys.executable, "-c", code]))
    assert wrote.stdout.strip() == (f"cannot write {theirs / 'new.json'}: permission denied; make it writable or "
                                    "choose another location"), wrote.stdout + wrote.stderr


def _cut_swap(store: Path) -> Path:
    """A delete's swap cut between its renames: the complete copy at NAME.zarr.compacting,
    the store moved out to NAME.zarr.old (marked), nothing at NAME.zarr; the copy's path."""
    from shallowpi.data.store_swap import COMPACTING_SUFFIX, OLD_SUFFIX, SWAPPED_OUT

    staging = store.with_name(store.name + COMPACTING_SUFFIX)
    shutil.copytree(store, staging)
    (staging / ".complete").touch()
    old = store.with_name(store.name + OLD_SUFFIX)
    os.rename(store, old)
    (old / SWAPPED_OUT).touch()
    return staging


def test_a_reader_who_may_not_write_waits_for_a_colleague_s_running_swap(tmp_path):
    """While a colleague's `dataset delete` ran its swap, a reader who may not write their
    store erred at once ("cannot write .../s.zarr.compacting/.shallowpi.lock: permission
    denied") where one who may write it waits for the swap to end."""
    from shallowpi.data.durable_io import release_writer_lock, take_writer_lock

    store = tmp_path / "data" / "s.zarr"
    make_store(store, episodes=2, length=3).close()
    staging = _cut_swap(store)
    lock, _ = take_writer_lock(staging)  # the colleague's delete, between its renames
    _theirs(tmp_path / "data")
    code = (f"from shallowpi.data.store import EpisodeStore\nprint(len(EpisodeStore.open({str(store)!r})))\n")
    reader = subprocess.Popen(as_other_user([sys.executable, "-c", code]), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env())
    try:
        with contextlib.suppress(subprocess.TimeoutExpired):
            reader.wait(timeout=1.5)
        assert reader.returncode is None, reader.communicate()  # still waiting, not refused
        os.replace(staging, store)  # the delete's second rename
        (store / ".complete").unlink()
    finally:
        release_writer_lock(lock)
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.strip() == "2", err


def test_a_cut_swap_this_user_may_not_finish_names_its_owner(tmp_path):
    """No delete runs and the swap was cut: the reader may not finish it, and says whose it is."""
    store = tmp_path / "data" / "s.zarr"
    make_store(store, episodes=2, length=3).close()
    staging = _cut_swap(store)
    _theirs(tmp_path / "data")
    done = _run(as_other_user(platform_cmd("dataset", "info", str(store))))
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"error: s.zarr: a `dataset delete` was cut short between its two renames and this user "
                           f"may not finish it ({staging / '.shallowpi.lock'}: Permission denied; {_owner(0o755)}"), line
    assert line.endswith("); the store's owner must open it (e.g. `platform dataset info`) to finish the cut delete")


def _modes(folder: Path) -> dict[str, tuple[int, int]]:
    """{path inside `folder`: (mode bits, group)} of its folders and files."""
    return {str(p.relative_to(folder)): (stat.S_IMODE(p.lstat().st_mode), p.lstat().st_gid)
            for p in [folder, *folder.rglob("*")]}


def _lab_store(shared: Path) -> Path:
    """A colleague's store in the lab's shared folder, made under umask 002: 2775 and 664."""
    store = shared / "k.zarr"
    make_store(store, episodes=3, length=3).close()
    if os.geteuid() == 0:
        for path in [store, *store.rglob("*")]:
            os.chown(path, FOREIGN_UID, GROUP, follow_symlinks=False)
    assert stat.S_IMODE(store.stat().st_mode) == 0o2775 and stat.S_IMODE((store / ".zgroup").stat().st_mode) == 0o664
    return store


def test_a_delete_under_another_umask_keeps_the_store_s_modes(shared_folder):
    """A delete's compacted copy was made under the deleter's umask: a setgid 2775 store of
    664 files, deleted from under umask 022, came back 2755 and 644, its owner's no more."""
    from shallowpi.data.store import EpisodeStore
    from shallowpi.data.store_edit import delete_episodes

    store = _lab_store(shared_folder)
    before = _modes(store)
    owners = {p.stat().st_uid for p in [store, *store.rglob("*")]}
    os.umask(0o022)  # the fixture puts the umask back
    with EpisodeStore.open(store, mode="a") as opened:
        delete_episodes(opened, [1])
    after = _modes(store)
    assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k in after}
    assert {v for v in after.values()} <= {v for v in before.values()}, after
    if os.geteuid() == 0:  # root may give the copy its owner too, as `cp -p` does
        assert {p.stat().st_uid for p in [store, *store.rglob("*")]} == owners


def test_a_group_member_s_delete_keeps_a_colleague_s_store_the_lab_s(shared_folder):
    """The same delete run by another member of the lab's group (uid not the owner's, umask
    022): the copy's folders and files take the store's modes and group."""
    if os.geteuid() != 0 or not _can_drop_overrides():
        pytest.skip("needs root, and setpriv able to drop its overrides, to run as another member of the group")
    store = _lab_store(shared_folder)
    before = _modes(store)
    # Root without its overrides, in the lab's group: a member who is not the store's owner.
    command = ["setpriv", "--groups", str(GROUP), *DROP_OVERRIDES[1:],
               *platform_cmd("dataset", "delete", str(store), "--episode", "1", "--yes")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=subprocess_env(), umask=0o022)
    assert done.returncode == 0, done.stderr
    after = _modes(store)
    assert {k: v for k, v in after.items() if k in before} == {k: v for k, v in before.items() if k in after}
    assert {v for v in after.values()} <= {v for v in before.values()}, after


def test_an_unreadable_episode_is_said_so_in_a_listing_not_damage(tmp_path):
    """A colleague's 0600 episodes/1.json made the `dataset list` row say "does not read
    (PermissionError); the store is damaged"."""
    make_store(tmp_path / "s.zarr", episodes=2, length=3).close()
    colleagues(tmp_path / "s.zarr" / "episodes" / "1.json", 0o600)
    listed = _run(as_other_user(platform_cmd("dataset", "list", f"data_root={tmp_path}")))
    said = " ".join(listed.stdout.replace("│", " ").split())
    assert (f"s - - - - {tmp_path / 's.zarr'} is not readable by this user (episodes/1.json: {_owner(0o600)}"
            in said), listed.stdout + listed.stderr
    assert "damaged" not in said, said


def test_an_unreadable_camera_frame_is_said_so_in_a_check_not_damage(tmp_path):
    """An unreadable camera chunk was a frame that "does not decode (PermissionError)" in
    `dataset check`: damage, where the frame is sound and only not this user's."""
    make_store(tmp_path / "s.zarr", episodes=2, length=3).close()
    colleagues(tmp_path / "s.zarr" / "data" / "observation.images.front" / "0.0.0.0", 0o600)
    checked = _run(as_other_user(platform_cmd("dataset", "check", str(tmp_path / "s.zarr"))))
    said = checked.stdout + checked.stderr
    assert ("episode 0: frame 0 of observation.images.front is not readable by this user: ask its owner (or check "
            "as them)") in said, said
    assert "decode" not in said and "damaged" not in said, said
