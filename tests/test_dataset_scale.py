"""`dataset info` and `dataset list` on stores of many episodes and files: the episode table
shown in part, and sizes as the disk holds them (commands/dataset_cmd.py,
EpisodeStore.nbytes_on_disk)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from shallowpi.cli import main
from shallowpi.commands import dataset_cmd
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from store_fixtures import arm_features, make_store, synthetic_frame


def _short_episodes(path: Path, count: int) -> None:
    """A store of `count` one-frame episodes, task "take <index>"."""
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, arm_features(), StoreSettings(durable=False)) as store:
        for index in range(count):
            writer = store.begin_episode(f"take {index}", robot="arm", fps=30)
            writer.add_frame(synthetic_frame(rng, index), 0.0)
            writer.commit()


def _info(capsys, *args: str) -> tuple[int, list[int], str]:
    """Exit code, the episode indices of the table's rows, and all that was printed."""
    code = main(["dataset", "info", *args])
    out = capsys.readouterr().out
    rows = [int(line.split("│")[1]) for line in out.splitlines()
            if line.startswith("│ ") and line.split("│")[1].strip().isdigit()]
    return code, rows, out


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("many") / "many.zarr"
    _short_episodes(path, 12)
    return path


@pytest.fixture(autouse=True)
def small_limits(monkeypatch) -> tuple[int | None, int | None]:
    """All rows up to 10 episodes, else the last 4: the rule of 100 and 50 on stores that
    take a second to make. Returns the module's own (None where it has none)."""
    defaults = getattr(dataset_cmd, "INFO_ALL_UP_TO", None), getattr(dataset_cmd, "INFO_LAST", None)
    monkeypatch.setattr(dataset_cmd, "INFO_ALL_UP_TO", 10, raising=False)
    monkeypatch.setattr(dataset_cmd, "INFO_LAST", 4, raising=False)
    return defaults


def test_info_of_a_large_store_shows_the_last_ones_and_names_the_flag_for_the_rest(many, capsys):
    """3,000 episodes printed 3,000 rows (6 s, nothing shown until the table was built).
    The rule is all up to 100 episodes, else the last 50 (`small_limits`: 10 and 4)."""
    assert (dataset_cmd.INFO_ALL_UP_TO, dataset_cmd.INFO_LAST) == (10, 4)
    code, rows, out = _info(capsys, str(many))
    assert code == 0 and rows == [8, 9, 10, 11], rows
    assert "12 episodes" in out.splitlines()[0]  # the header still counts them all
    assert "episodes 8-11 shown, 8 of 12 not: --episodes A-B shows others, --episodes 0- every one" in out


@pytest.mark.parametrize(("flags", "expected"), [
    (["--episodes", "3-5"], [3, 4, 5]),
    (["--episodes", "7"], [7]),
    (["--episodes", "9-"], [9, 10, 11]),
    (["--episodes", "10-500"], [10, 11]),
    (["--episodes", "0-"], list(range(12))),
    (["--last", "2"], [10, 11]),
    (["--last", "1000"], list(range(12))),
])
def test_info_shows_the_episodes_asked_for(many, capsys, flags, expected):
    code, rows, out = _info(capsys, str(many), *flags)
    assert code == 0 and rows == expected, rows
    assert (" not: --episodes" in out) == (len(expected) < 12)


def test_the_rule_is_every_episode_up_to_100_else_the_last_50(small_limits):
    assert small_limits == (100, 50)


def test_info_of_a_small_store_shows_every_episode(tmp_path, capsys):
    _short_episodes(tmp_path / "s.zarr", 10)
    code, rows, out = _info(capsys, str(tmp_path / "s.zarr"))
    assert code == 0 and rows == list(range(10)) and " not: --episodes" not in out


@pytest.mark.parametrize(("flags", "said"), [
    (["--episodes", "5-3"], "argument --episodes: '5-3' is not an episode span: A-B with 0 <= A <= B"),
    (["--episodes", "a-b"], "argument --episodes: 'a-b' is not an episode span: A-B (e.g. 0-99), A- or A"),
    (["--last", "0"], "argument --last: 0 is not >= 1"),
    (["--last", "3", "--episodes", "1-2"], "argument --episodes: not allowed with argument --last"),
])
def test_info_refuses_a_span_it_cannot_read_in_one_line(many, capsys, flags, said):
    with pytest.raises(SystemExit) as exited:
        main(["dataset", "info", str(many), *flags])
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and said in err and err.count("\n") == 0, err


def test_info_refuses_a_span_past_the_last_episode(many, capsys):
    code = main(["dataset", "info", str(many), "--episodes", "12-13"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.splitlines()[-1] == ("error: --episodes starts at episode 12, and many.zarr holds "
                                                   "episodes 0-11"), err


def _du(path: Path) -> int:
    """What `du` says the folder holds on disk, in bytes (each inode once)."""
    return int(subprocess.run(["du", "-s", "-B1", str(path)], capture_output=True, text=True, check=True)
               .stdout.split()[0])


def test_the_size_on_disk_is_what_the_disk_holds_each_file_once(tmp_path):
    """Apparent sizes said 92.7 MB of a store du put at 494 MB (a 9 KB frame takes 12 KiB),
    and a frame hard-linked twice counted twice."""
    make_store(tmp_path / "a.zarr", episodes=2, length=6).close()
    make_store(tmp_path / "b.zarr", episodes=2, length=6, seed=1).close()
    with EpisodeStore.open(tmp_path / "a.zarr") as a, EpisodeStore.open(tmp_path / "b.zarr") as b:
        EpisodeStore.merge([a, b], tmp_path / "ab.zarr").close()
    merged = tmp_path / "ab.zarr"
    frame = merged / "data" / "observation.images.front" / "0.0.0.0"
    if os.stat(frame).st_nlink < 2:
        pytest.skip("this file system does not hard-link a merge's frames")
    # A second name of a frame inside the store: its blocks are on the disk once.
    os.link(frame, merged / "data" / "observation.images.front" / "linked-again")
    with EpisodeStore.open(merged) as store:
        assert store.nbytes_on_disk() == _du(merged)
    with EpisodeStore.open(tmp_path / "a.zarr") as store:
        assert store.nbytes_on_disk() == _du(tmp_path / "a.zarr")


def test_list_shows_sizes_on_disk_when_asked(tmp_path, capsys):
    make_store(tmp_path / "k.zarr", episodes=2, length=4).close()
    assert main(["dataset", "list", "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "name" in line and "episodes" in line)
    assert "on disk" not in header and "size" not in header  # it looked at every file of every store
    assert "each store's size on disk: --size (it looks at every file)" in out
    assert main(["dataset", "list", "--data-root", str(tmp_path), "--size"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "name" in line and "episodes" in line).split("┃")
    row = next(line for line in out.splitlines() if "│ k " in line).split("│")
    on_disk = row[[h.strip() for h in header].index("on disk")].strip()
    assert on_disk == f"{_du(tmp_path / 'k.zarr') / 1024:.1f} KB", out


def test_info_says_the_size_on_disk_when_asked(tmp_path, capsys):
    """`info` looked at every file of the store before its first line (seconds warm, far more
    cold, on the large stores its last-50 rule is for): the size is asked for, as `list`'s."""
    make_store(tmp_path / "k.zarr", episodes=2, length=4).close()
    assert main(["dataset", "info", str(tmp_path / "k.zarr")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "2 episodes" in first and "on disk" not in first
    assert main(["dataset", "info", str(tmp_path / "k.zarr"), "--size"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert f"{_du(tmp_path / 'k.zarr') / 1024:.1f} KB on disk" in first
