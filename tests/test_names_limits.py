"""What the file system and the terminal cannot hold: a dataset or run name longer than a
name may be, a working folder that was removed, an ASCII stdout. Each is one line (or the
output, escaped), never a traceback, and nothing is left half-made."""

from __future__ import annotations

import errno
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.data.store import EpisodeStore
from store_fixtures import make_store

# NAME.zarr.compacting.XXXXXXXX.creating: a delete's compacted copy, built beside the store.
STORE_WORKING_BYTES = len(".zarr.compacting.XXXXXXXX.creating")


def run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(platform_cmd(*args), env=subprocess_env(**env), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line(result: subprocess.CompletedProcess) -> str:
    """The error line of a command that must fail with nothing but it."""
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.stderr.count("\n") == 1, result.stderr[-3000:]
    return result.stderr.strip()


def name_max(folder: Path) -> int:
    return os.pathconf(folder, "PC_NAME_MAX")


def test_a_removed_working_folder_is_one_line(tmp_path):
    """A terminal left in a removed clone or worktree: every command, `dataset list` too,
    was a FileNotFoundError traceback (the checkout check's, then Hydra's getcwd)."""
    clone = tmp_path / "clone"
    clone.mkdir()
    command = shlex.join(platform_cmd("dataset", "list", "--data-root", str(tmp_path)))
    result = subprocess.run(["bash", "-c", f"cd {shlex.quote(str(clone))} && rmdir ../clone && exec {command}"],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert one_line(result) == ("error: the working folder no longer exists (it was deleted or replaced); cd to an "
                                "existing folder and run the command again")


@pytest.mark.parametrize("words", [["--help"], ["train", "--help"], ["distill", "--help"]],
                         ids=["platform", "train", "distill"])
def test_help_on_an_ascii_stdout_escapes_what_it_cannot_encode(words):
    """'π' in the help texts was a UnicodeEncodeError traceback on a stdout that takes ASCII
    only (LC_ALL=C without UTF-8 mode, PYTHONIOENCODING=ascii)."""
    result = subprocess.run(platform_cmd(*words), capture_output=True, timeout=120,
                            env=subprocess_env(PYTHONUTF8="0", LC_ALL="C", PYTHONIOENCODING="ascii"))
    assert result.returncode == 0 and b"Traceback" not in result.stderr, result.stderr[-3000:]
    text = result.stdout.decode("ascii")
    assert "usage: platform" in text and "\\u03c0" in text


@pytest.mark.parametrize(
    ("command", "name"),
    [
        ("record", "a" * 240),  # was ENAMETOOLONG in the swap check (NAME.zarr.compacting)
        ("record", "a" * 233),  # was ENAMETOOLONG in the build's folder (NAME.zarr.XXXXXXXX.creating)
        ("merge", "b" * 236),
        ("merge", "ü" * 111),  # 222 bytes in UTF-8, 111 characters
    ],
    ids=["record-240", "record-233", "merge-236", "merge-utf8"],
)
def test_a_dataset_name_too_long_for_the_file_system_is_refused_before_anything_is_made(command, name, tmp_path):
    root = tmp_path / "root"
    sources = tmp_path / "sources"
    make_store(sources / "kitchen.zarr", episodes=1, length=4).close()
    make_store(sources / "pantry.zarr", episodes=1, length=4, seed=1).close()
    if command == "record":
        result = run("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui", "--dataset",
                     name, "--episodes", "1", "--episode-time-s", "0.2", "--reset-time-s", "0",
                     "record.sim_size=32x32", f"telemetry.address={tmp_path}/t.sock", "--data-root", str(root))
    else:
        result = run("dataset", "merge", str(sources / "kitchen.zarr"), str(sources / "pantry.zarr"), "--out", name,
                     "--data-root", str(root))
    limit = name_max(tmp_path)
    assert result.returncode == 3
    assert one_line(result) == (
        f"error: {root}/{name}.zarr: the name is {len((name + '.zarr').encode())} bytes, too long here: a store is "
        f"made and edited beside its name as NAME.zarr.compacting.XXXXXXXX.creating, and this file system takes at "
        f"most {limit} bytes in a name; give a dataset name of at most {limit - STORE_WORKING_BYTES} bytes before "
        ".zarr (UTF-8 counts bytes)")
    assert not root.exists() or not any(root.iterdir())  # no lock, no build folder (a recording makes the root)


def test_a_dataset_name_at_the_limit_said_can_be_made_and_edited(tmp_path):
    """The limit the refusal gives is the real one: a store of that name is made, and a
    delete, whose compacted copy's folder is the longest name beside it, edits it."""
    name = "ü" * 10 + "a" * (name_max(tmp_path) - STORE_WORKING_BYTES - 20)  # at the limit, in bytes
    make_store(tmp_path / "kitchen.zarr", episodes=2, length=4).close()
    make_store(tmp_path / "pantry.zarr", episodes=1, length=4, seed=1).close()
    merged = run("dataset", "merge", "kitchen", "pantry", "--out", name, "--data-root", str(tmp_path))
    assert merged.returncode == 0, merged.stderr[-3000:]
    deleted = run("dataset", "delete", name, "--episode", "0", "--yes", "--data-root", str(tmp_path))
    assert deleted.returncode == 0 and "2 left" in deleted.stdout, deleted.stderr[-3000:]


def test_a_store_copied_to_a_name_too_long_to_edit_is_read_and_refused_a_delete_in_one_line(tmp_path):
    """Copied by hand to a name of 245 bytes, a store is read as any other; a delete, whose
    compacted copy's names would not fit, was ENAMETOOLONG's traceback (name_taken)."""
    store = tmp_path / ("c" * 240 + ".zarr")
    make_store(tmp_path / "kitchen.zarr", episodes=2, length=4).close()
    os.rename(tmp_path / "kitchen.zarr", store)
    listed = run("dataset", "info", str(store))
    assert listed.returncode == 0 and "put the red cube in the bowl" in listed.stdout, listed.stderr[-3000:]
    limit = name_max(tmp_path)
    deleted = run("dataset", "delete", str(store), "--episode", "0", "--yes")
    assert deleted.returncode == 3
    assert one_line(deleted) == (
        f"error: {store}: the name is 245 bytes, too long here: a delete builds its copy beside it as "
        f"NAME.zarr.compacting.XXXXXXXX.creating, and this file system takes at most {limit} bytes in a name; rename "
        f"the store to at most {limit - STORE_WORKING_BYTES} bytes before .zarr (no episode was deleted) (UTF-8 counts "
        "bytes)")
    with EpisodeStore.open(store) as kept:
        assert len(kept) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [store.name]


def test_a_dataset_name_no_file_system_holds_is_one_line_when_read(tmp_path):
    """`dataset info` of a name over the limit: the store's `exists()` raised ENAMETOOLONG."""
    name = "a" * 300
    result = run("dataset", "info", name, "--data-root", str(tmp_path))
    assert result.returncode == 2
    assert one_line(result) == (
        f"error: cannot use {tmp_path}/{name}.zarr: the name {'a' * 24}...{'a' * 19}.zarr is 305 bytes, and this file "
        f"system takes at most {name_max(tmp_path)} in a name (UTF-8 counts bytes); choose a shorter name")


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_run_name_too_long_for_the_file_system_is_refused_before_anything_is_made(command, tmp_path):
    """`train --run <256 letters>` was ENAMETOOLONG's traceback from the run folder's mkdir,
    after the store's screening. A run makes nothing beside its folder: its limit is a name's."""
    make_store(tmp_path / "kitchen.zarr", episodes=2, length=12).close()
    runs = tmp_path / "runs"
    run_name = "r" * (name_max(tmp_path) + 1)
    result = run(command, "--dataset", str(tmp_path / "kitchen.zarr"), "--runs-dir", str(runs), "--run", run_name,
                 "--policy", "tiny", "--steps", "1", "--device", "cpu", "--no-progress",
                 *(["--layers", "1"] if command == "distill" else []))
    assert result.returncode == 2
    assert one_line(result) == (
        f"error: the run's folder {runs}/{run_name}: the name {'r' * 24}...{'r' * 24} is {len(run_name)} bytes, and "
        f"this file system takes at most {name_max(tmp_path)} in a name (UTF-8 counts bytes); give a shorter --run")
    assert not runs.exists()


@pytest.mark.parametrize("command", ["train", "distill"])
def test_a_default_run_name_too_long_says_to_name_the_run(command, tmp_path):
    """A store named with all the bytes a name may hold: the run folder named after it and
    the preset is too long, for the run (train) or the teacher trained for a student."""
    limit = name_max(tmp_path)
    store = tmp_path / ("k" * (limit - len(".zarr")) + ".zarr")
    make_store(tmp_path / "kitchen.zarr", episodes=2, length=12).close()
    os.rename(tmp_path / "kitchen.zarr", store)
    runs = tmp_path / "runs"
    words = ["--run", "student"] if command == "distill" else []
    result = run(command, "--dataset", str(store), "--runs-dir", str(runs), "--policy", "small", "--steps", "1",
                 "--device", "cpu", "--no-progress", *words)
    whose, fix = (("the teacher", "pass --teacher CKPT, or give the dataset a shorter name") if command == "distill"
                  else ("the run", "pass --run NAME with a shorter name"))
    folder = f"{store.stem}-small"
    assert result.returncode == 2
    assert one_line(result) == (
        f"error: {whose}'s folder {runs}/{folder}: the name {folder[:24]}...{folder[-24:]} is {limit + 1} bytes, and "
        f"this file system takes at most {limit} in a name (UTF-8 counts bytes); {fix}")
    assert not runs.exists()


def test_an_output_file_name_too_long_is_refused_naming_its_flag(tmp_path):
    """`dataset show --out <254 letters>.png`: ENAMETOOLONG's traceback from its is_dir()."""
    make_store(tmp_path / "kitchen.zarr", episodes=1, length=4).close()
    out = tmp_path / ("p" * 254 + ".png")
    result = run("dataset", "show", "kitchen", "--out", str(out), "--data-root", str(tmp_path))
    assert result.returncode == 2
    assert one_line(result) == (
        f"error: --out {out}: the name {'p' * 24}...{'p' * 20}.png is 258 bytes, and this file system takes at most "
        f"{name_max(tmp_path)} in a name (UTF-8 counts bytes); give a shorter one")


def test_a_name_too_long_anywhere_is_one_line_naming_the_flag_and_the_limit(tmp_path):
    """ENAMETOOLONG from any write (a name made beside the one given: `x.png.PID.HEX.partial`)
    is the boundary's one line, not a traceback: which name, its bytes, the limit, the flag."""
    import argparse

    from shallowpi.cli import file_system_error

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args(["--out", str(tmp_path / ("x" * 240 + ".png"))])
    written = tmp_path / ("x" * 240 + ".png.1234.0a1b2c3d.partial")
    error = OSError(errno.ENAMETOOLONG, "File name too long", str(written))
    assert file_system_error(error, args, parser) == (
        f"cannot use {written}: the name {'x' * 24}...{written.name[-24:]} is {len(written.name)} bytes, and this "
        f"file system takes at most {name_max(tmp_path)} in a name (UTF-8 counts bytes); give a shorter --out")
