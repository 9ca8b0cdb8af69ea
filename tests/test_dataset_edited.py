"""Dataset commands reading a store that a recorder edits meanwhile (its d or r drops the
last take) say so, or read it again: a sound store is never listed as damaged.

`dataset info` took the reader's "was edited" error for an unreadable metadata file, and
every later episode raised it too: all their rows read "metadata file does not read", in
red (3 of 60 listings beside a recorder). The edit is made here at one moment, right after
the command's reader opened the store, by the store's own `drop_last_episode`.
"""

from __future__ import annotations

import pytest

from shallowpi.cli import main
from shallowpi.data import EpisodeStore
from shallowpi.errors import StoreEditedError
from store_fixtures import make_store


@pytest.fixture
def dropped_after_open(monkeypatch):
    """After the first reader opens a store (mode "r"), a writer drops its last episode,
    as a recorder's d or r between takes does."""
    opened = EpisodeStore.open.__func__
    done: list[bool] = []

    def open_then_drop(cls, path, mode="r", **kwargs):
        store = opened(cls, path, mode, **kwargs)
        if mode == "r" and not done:
            done.append(True)
            with opened(cls, path, "a") as writer:
                writer.drop_last_episode()
        return store

    monkeypatch.setattr(EpisodeStore, "open", classmethod(open_then_drop))
    return done


def test_info_says_the_store_was_edited_instead_of_calling_its_episodes_damaged(tmp_path, capsys,
                                                                                 dropped_after_open):
    make_store(tmp_path / "k.zarr", episodes=4, length=5).close()
    code = main(["dataset", "info", str(tmp_path / "k.zarr")])
    out, err = capsys.readouterr()
    assert dropped_after_open
    assert "does not read" not in out
    assert code == 3 and err.strip().splitlines()[-1].startswith("error: k.zarr was edited while this reader had it "
                                                                  "open"), err
    assert main(["dataset", "info", str(tmp_path / "k.zarr")]) == 0  # opened again: 3 sound episodes
    assert "does not read" not in capsys.readouterr().out


def test_list_reads_a_store_edited_meanwhile_again(tmp_path, capsys, dropped_after_open):
    make_store(tmp_path / "k.zarr", episodes=4, length=5).close()
    assert main(["dataset", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert dropped_after_open
    assert "was edited" not in out and "does not read" not in out
    row = next(line for line in out.splitlines() if "│ k " in line)
    assert row.split("│")[2].strip() == "3", out  # the store as it is now


def test_the_delete_prompt_does_not_list_episodes_of_an_edited_store_as_unreadable(tmp_path, dropped_after_open):
    from shallowpi.commands.dataset_cmd import _episode_line

    make_store(tmp_path / "k.zarr", episodes=4, length=5).close()
    reader = EpisodeStore.open(tmp_path / "k.zarr")
    with pytest.raises(StoreEditedError, match="was edited"):
        _episode_line(reader, 0)
