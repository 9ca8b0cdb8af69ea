"""Where dataset commands read and write: what a store's folder holds beside the store
survives a delete, no new dataset is made inside a store's folder, and a file named for
`dataset show` / `dataset view --save` is the file written."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.cli import main
from shallowpi.data import EpisodeStore
from shallowpi.data.store_swap import SWAPPED_OUT
from shallowpi.errors import StoreError
from store_fixtures import make_store


def _beside_the_store(folder) -> dict[str, str]:
    """A README, a videos folder, a link and a store of its own put into the store folder
    `folder` by a user; returns what each file holds, by path under `folder`."""
    (folder / "README.md").write_text("what these takes are\n")
    (folder / "videos").mkdir()
    (folder / "videos" / "take1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")
    (folder / "notes").symlink_to("README.md")
    # Made beside it and moved in by hand (no command makes a store inside another any more).
    make_store(folder.parent / "inner.zarr", episodes=1, length=4, seed=7).close()
    os.rename(folder.parent / "inner.zarr", folder / "inner.zarr")
    return {"README.md": "what these takes are\n", "videos/take1.mp4": "\x00\x00\x00\x18ftypmp42",
            "notes": "what these takes are\n"}


def test_a_delete_keeps_whatever_else_the_store_folder_holds(tmp_path):
    """The compacted copy took only the store's own files: a README, a videos folder or a
    store kept in the folder was gone after `dataset delete`, without a word."""
    make_store(tmp_path / "r.zarr", episodes=3, length=5).close()
    kept = _beside_the_store(tmp_path / "r.zarr")
    with EpisodeStore.open(tmp_path / "r.zarr", mode="a") as store:
        store.delete_episodes([0])
        assert len(store) == 2 and store.check() == []
    for name, text in kept.items():
        assert (tmp_path / "r.zarr" / name).read_bytes().decode("latin-1") == text, name
    assert (tmp_path / "r.zarr" / "notes").is_symlink()  # the link itself, not a copy of its target
    with EpisodeStore.open(tmp_path / "r.zarr" / "inner.zarr") as inner:
        assert len(inner) == 1 and inner.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]  # no .old, no .compacting
    assert not (tmp_path / "r.zarr" / ".complete").exists() and not (tmp_path / "r.zarr" / SWAPPED_OUT).exists()


def test_a_delete_that_cannot_move_an_entry_leaves_everything_as_it_was(tmp_path, monkeypatch):
    """An entry that will not rename into the compacted copy (a mount point: EXDEV) stops
    the delete in one line before its second rename; the entries moved so far go back and
    the store keeps every episode."""
    import errno

    from shallowpi.data import store_edit

    make_store(tmp_path / "r.zarr", episodes=3, length=5).close()
    kept = _beside_the_store(tmp_path / "r.zarr")
    before = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "r.zarr").rglob("*"))
    real_rename = os.rename

    def rename(src, dst):
        if os.path.basename(src) == "videos":  # README.md and inner.zarr go first
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src))
        real_rename(src, dst)

    with EpisodeStore.open(tmp_path / "r.zarr", mode="a") as store:
        monkeypatch.setattr(store_edit.os, "rename", rename)
        with pytest.raises(StoreError) as refused:
            store.delete_episodes([0])
        monkeypatch.undo()
        message = str(refused.value)
        assert "\n" not in message and "videos" in message and "nothing was deleted" in message, message
        assert len(store) == 3
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "r.zarr").rglob("*")) == before
    for name, text in kept.items():
        assert (tmp_path / "r.zarr" / name).read_bytes().decode("latin-1") == text, name
    with EpisodeStore.open(tmp_path / "r.zarr", mode="a") as store:  # the next writer sweeps the dead copy
        assert len(store) == 3 and store.check() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.zarr"]


KILL_AT_FIRST_CARRY = """
import os, signal, sys
from pathlib import Path
from shallowpi.data import EpisodeStore
real_rename = os.rename
def rename(src, dst):
    real_rename(src, dst)
    if str(src).startswith(sys.argv[1] + ".old"):  # an entry carried out of the moved-out folder
        os.kill(os.getpid(), signal.SIGKILL)
os.rename = rename
with EpisodeStore.open(sys.argv[1], mode="a") as store:
    store.delete_episodes([0])
"""


def test_a_delete_killed_while_carrying_the_folders_entries_loses_none(tmp_path):
    """SIGKILL after the first of the folder's entries moved into the compacted copy: the
    next open finishes the delete (the copy was whole), and every entry is in the store or
    in the moved-out folder, which nothing removes (it is not marked the swap's)."""
    make_store(tmp_path / "r.zarr", episodes=3, length=5).close()
    kept = _beside_the_store(tmp_path / "r.zarr")
    killed = subprocess.run([sys.executable, "-c", KILL_AT_FIRST_CARRY, str(tmp_path / "r.zarr")],
                            env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr[-2000:]
    with EpisodeStore.open(tmp_path / "r.zarr", mode="a") as store:
        assert len(store) == 2 and store.check() == []  # the delete, finished
    for name, text in kept.items():
        where = [f for f in (tmp_path / "r.zarr" / name, tmp_path / "r.zarr.old" / name) if os.path.lexists(f)]
        assert len(where) == 1, name
        assert os.readlink(where[0]) == "README.md" if where[0].is_symlink() else where[0].read_text() == text, name
    assert (tmp_path / "r.zarr" / "inner.zarr").is_dir() or (tmp_path / "r.zarr.old" / "inner.zarr").is_dir()
    with pytest.raises(StoreError, match=r"r\.zarr\.old exists and is no delete's leftover"):
        EpisodeStore.open(tmp_path / "r.zarr", mode="a").delete_episodes([0])  # says so before a delete


def test_no_merge_import_or_export_is_made_inside_a_store_folder(tmp_path):
    """`dataset merge a b --out a.zarr/sub.zarr` made a store inside another; a delete of
    the outer one then removed it. Refused in one line, nothing made there."""
    from shallowpi.data.lerobot_import import import_lerobot
    from shallowpi.data.lerobot_interop import _require_free

    make_store(tmp_path / "a.zarr", episodes=2, length=4).close()
    make_store(tmp_path / "b.zarr", episodes=1, length=4, seed=3).close()
    before = sorted(p.name for p in (tmp_path / "a.zarr").iterdir())
    sources = [EpisodeStore.open(tmp_path / name) for name in ("a.zarr", "b.zarr")]
    for out in (tmp_path / "a.zarr" / "sub.zarr", tmp_path / "a.zarr" / "meta" / "deeper" / "x.zarr"):
        with pytest.raises(StoreError) as refused:
            EpisodeStore.merge(sources, out)
        assert str(refused.value) == (f"{out} is inside the dataset {tmp_path / 'a.zarr'}; put the merged dataset "
                                      f"beside it, not in its folder (e.g. {tmp_path / out.name})")
    lerobot = tmp_path / "lerobot"  # a LeRobotDataset to import: refused before it is read
    (lerobot / "meta").mkdir(parents=True)
    (lerobot / "meta" / "info.json").write_text(json.dumps({"codebase_version": "v3.0"}))
    with pytest.raises(StoreError, match=r"a\.zarr/imp\.zarr is inside the dataset .*put the imported dataset"):
        import_lerobot(lerobot, tmp_path / "a.zarr" / "imp.zarr")
    (tmp_path / "link").symlink_to(tmp_path / "a.zarr")  # through a link, the same folder
    with pytest.raises(StoreError, match=r"link/out is inside the dataset .*a\.zarr; put the export directory"):
        _require_free(tmp_path / "link" / "out", "export directory")
    # A recording's new store (record --dataset a.zarr/sub, deploy --record): every maker claims its name.
    from store_fixtures import arm_features

    with pytest.raises(StoreError, match=r"a\.zarr/rec\.zarr is inside the dataset .*put the new dataset beside"):
        EpisodeStore.open_or_create(tmp_path / "a.zarr" / "rec.zarr", arm_features())
    assert sorted(p.name for p in (tmp_path / "a.zarr").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr", "b.zarr", "lerobot", "link"]


def test_dataset_delete_keeps_a_readme_and_merge_refuses_an_out_inside_a_store(tmp_path):
    """The reviewer's reproduction, through the command."""
    make_store(tmp_path / "r.zarr", episodes=2, length=4).close()
    make_store(tmp_path / "b.zarr", episodes=1, length=4, seed=3).close()
    (tmp_path / "r.zarr" / "README.md").write_text("notes\n")
    (tmp_path / "r.zarr" / "videos").mkdir()

    def run(*words: str) -> subprocess.CompletedProcess:
        return subprocess.run(platform_cmd("dataset", *words), env=subprocess_env(), capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)

    deleted = run("delete", "r.zarr", "--episode", "0", "--yes")
    assert deleted.returncode == 0 and "1 left" in deleted.stdout, deleted.stderr
    assert (tmp_path / "r.zarr" / "README.md").read_text() == "notes\n" and (tmp_path / "r.zarr" / "videos").is_dir()
    merged = run("merge", "r.zarr", "b.zarr", "--out", "r.zarr/sub.zarr")
    assert merged.returncode == 3 and "Traceback" not in merged.stderr, merged.stderr
    assert merged.stderr.strip().splitlines()[-1].startswith("error: r.zarr/sub.zarr is inside the dataset ")
    assert not (tmp_path / "r.zarr" / "sub.zarr").exists()


@pytest.mark.parametrize(("words", "expected", "unwritten"), [
    (["show", "--out", "{tmp}/emptydir"], "--out {tmp}/emptydir is a folder; name the .png file to write, "
                                          "e.g. {tmp}/emptydir/k_episode0.png", "{tmp}/emptydir.png"),
    (["show", "--out", "{tmp}/xnoext"], "--out {tmp}/xnoext: it writes a .png file; name it so (e.g. xnoext.png)",
     "{tmp}/xnoext.png"),
    (["show", "--out", "{tmp}/strip.jpg"], "--out {tmp}/strip.jpg: it writes a .png file; name it so "
                                           "(e.g. strip.png)", "{tmp}/strip.jpg"),
    (["view", "--save", "{tmp}/emptydir"], "--save {tmp}/emptydir is a folder; name the .rrd file to write, "
                                           "e.g. {tmp}/emptydir/k_episode0.rrd", "{tmp}/emptydir.rrd"),
    (["view", "--save", "{tmp}/ep3"], "--save {tmp}/ep3: it writes a .rrd file; name it so (e.g. ep3.rrd)",
     "{tmp}/ep3"),
], ids=["show-folder", "show-no-suffix", "show-other-suffix", "view-folder", "view-no-suffix"])
def test_show_and_view_write_the_file_they_name_or_refuse_in_one_line(words, expected, unwritten, tmp_path, capsys):
    """`show --out emptydir` printed `emptydir` and wrote `emptydir.png` (matplotlib adds the
    suffix); `view --save <folder>` ended in Rerun's RuntimeError traceback."""
    make_store(tmp_path / "k.zarr", episodes=1, length=4).close()
    (tmp_path / "emptydir").mkdir()
    code = main(["dataset", words[0], str(tmp_path / "k.zarr"), *(w.format(tmp=tmp_path) for w in words[1:])])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == "error: " + expected.format(tmp=tmp_path), err
    assert not os.path.exists(unwritten.format(tmp=tmp_path))
    assert list((tmp_path / "emptydir").iterdir()) == []


def test_show_writes_a_png_at_exactly_the_path_it_prints(tmp_path, capsys):
    make_store(tmp_path / "k.zarr", episodes=1, length=4).close()
    out = tmp_path / "plots" / "Episode.PNG"  # any case of the suffix; its folder made
    assert main(["dataset", "show", str(tmp_path / "k.zarr"), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["Episode.PNG"]


def test_a_store_a_user_keeps_inside_another_still_has_episodes_deleted(tmp_path):
    """No command makes a store inside another now, but one moved there by hand is the
    user's: its delete makes its compacted copy beside it, inside the outer store's folder
    (refused as "inside the dataset" while every maker was checked)."""
    make_store(tmp_path / "outer.zarr", episodes=1, length=4).close()
    make_store(tmp_path / "inner.zarr", episodes=3, length=4, seed=7).close()
    os.rename(tmp_path / "inner.zarr", tmp_path / "outer.zarr" / "inner.zarr")
    with EpisodeStore.open(tmp_path / "outer.zarr" / "inner.zarr", mode="a") as inner:
        inner.delete_episodes([0])
        assert len(inner) == 2

