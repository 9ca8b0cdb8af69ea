"""Files of a lab's shared disk: locks a group member can take, exports the umask shares,
and a colleague's store or checkpoint read as theirs, not as damage nor as "cannot write".

As root, a command runs as someone who is not the files' owner by losing the capabilities
that let root past file modes (`setpriv --bounding-set`), against files chowned to
FOREIGN_UID; as another user, against files whose owner's bits are what others would get (the real
user's own limits).
"""

from __future__ import annotations

import argparse
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
