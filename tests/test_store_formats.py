"""Store formats across versions: what an older shallowpi reads of what this one writes, and
what this one keeps of what a newer one wrote.

A format-1 store (each action stored with the observation after it) is never appended to,
and a refusal to append leaves it as it was; once on layout 2 its header says a version
that a shallowpi from before layout 2 refuses ("upgrade") instead of calling it damaged.
Keys a newer version wrote (an episode's file, the header) survive every
rewrite. An episode recorded before episodes noted their NaN/inf rows is not shown clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shallowpi.cli import main
from shallowpi.data import EpisodeStore
from shallowpi.data.store import FORMAT_1_ON_LAYOUT_2, EpisodeInfo, StoreSettings
from shallowpi.errors import StoreError
from store_fixtures import arm_features, as_layout_1, make_store, synthetic_frame

# The newest format version a shallowpi from before layout 2 reads (ed028d6: format 2; the
# one before it read 1 only); it reads every store as layout 1, whatever its header says.
BEFORE_LAYOUT_2_READS_UP_TO = 2


def _files(store: Path) -> dict[str, bytes]:
    """Every file under `store` with its bytes: what a command that must change nothing keeps."""
    return {str(f.relative_to(store)): f.read_bytes() for f in sorted(store.rglob("*")) if f.is_file()}


def _header(store: Path) -> dict:
    return json.loads((store / ".zattrs").read_text())["shallowpi"]


def _format_1_on_layout_1(path: Path, episodes: int = 2) -> Path:
    make_store(path, episodes=episodes, length=4).close()
    as_layout_1(path, version=1)
    return path


def test_a_refused_append_leaves_a_format_1_store_as_it_was(tmp_path):
    """`deploy --record` into a format-1 store (open_or_create) moved it to layout 2 and only
    then refused: the refusal had changed the store for good."""
    path = _format_1_on_layout_1(tmp_path / "old.zarr")
    before = _files(path)
    with pytest.raises(StoreError, match=r"format 1 .* record into another --dataset") as err:
        EpisodeStore.open_or_create(path, arm_features())
    assert "\n" not in str(err.value)
    assert _files(path) == before
    assert "layout" not in _header(path) and _header(path)["version"] == 1


def test_record_resume_refuses_a_format_1_store_before_the_robot_connects_or_the_store_changes(
        tmp_path, monkeypatch, capsys, own_signals):
    """`record --resume` opened the store for writing (moving it to layout 2) after building
    the rig (connecting the robot), and only then refused the format."""
    from shallowpi.record import rig

    path = _format_1_on_layout_1(tmp_path / "old.zarr")
    before = _files(path)

    def connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("the rig was built (the robot connected) before the refusal")

    monkeypatch.setattr(rig, "build_rig", connect)
    code = main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                 str(tmp_path), "--dataset", "old", "--resume", "--no-tui", "record.sim_size=32x32",
                 f"telemetry.address={tmp_path}/t.sock"])
    err = capsys.readouterr().err
    assert code != 0 and "format 1" in err and "record into another --dataset" in err, err
    assert _files(path) == before


def test_record_resume_refuses_other_features_before_the_writable_open(tmp_path, capsys, own_signals):
    """What needs the rig (the features it records, its calibration) was refused only after
    the writable open, which had moved a layout-1 store to layout 2 for good: the refusal
    changed the store it refused (review). A reader refuses it now, the store untouched."""
    path = tmp_path / "old.zarr"
    make_store(path, episodes=1, length=4).close()  # the arm's joints, 24x32 cameras
    as_layout_1(path)
    before = _files(path)
    code = main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                 str(tmp_path), "--dataset", "old", "--resume", "--no-tui", "record.sim_size=32x32",
                 f"telemetry.address={tmp_path}/t.sock"])
    err = capsys.readouterr().err
    assert code != 0 and "features" in err, err
    assert _files(path) == before


def test_a_written_format_1_store_is_refused_by_a_shallowpi_from_before_layout_2(tmp_path):
    """A format-1 store on layout 2 kept version 1, which a shallowpi from before layout 2
    read as its own layout and called damaged ("meta/.zattrs has no episode list"). Every
    way this version writes one (the move at a writable open, a delete's copy, a merge, a
    store moved before) gives it a version above what that shallowpi reads: it says "upgrade"."""
    moved = _format_1_on_layout_1(tmp_path / "moved.zarr")
    with EpisodeStore.open(moved, mode="a") as store:
        assert (store.version, store.layout, store.action_offset) == (1, 2, 1)
    deleted = _format_1_on_layout_1(tmp_path / "deleted.zarr", episodes=3)
    with EpisodeStore.open(deleted, mode="a") as store:
        store.delete_episodes([0])
    other = _format_1_on_layout_1(tmp_path / "other.zarr")
    with EpisodeStore.open(moved) as a, EpisodeStore.open(other) as b:
        EpisodeStore.merge([a, b], tmp_path / "merged.zarr").close()
    # Moved to layout 2 by an earlier version: version 1 kept; its next writable open relabels it.
    earlier = tmp_path / "earlier.zarr"
    make_store(earlier, episodes=2, length=4).close()
    attrs = json.loads((earlier / ".zattrs").read_text())
    (earlier / ".zattrs").write_text(json.dumps({**attrs, "shallowpi": {**attrs["shallowpi"], "version": 1}}))
    EpisodeStore.open(earlier).close()
    assert _header(earlier)["version"] == 1  # a reader changes nothing
    EpisodeStore.open(earlier, mode="a").close()
    for path, episodes in ((moved, 2), (deleted, 2), (tmp_path / "merged.zarr", 4), (earlier, 2)):
        header = _header(path)
        assert (header["version"], header["layout"]) == (FORMAT_1_ON_LAYOUT_2, 2), path.name
        assert header["version"] > BEFORE_LAYOUT_2_READS_UP_TO, path.name
        with EpisodeStore.open(path) as store:  # this version reads it as format 1, its rows paired so
            assert (store.version, store.action_offset, len(store)) == (1, 1, episodes), path.name
            assert store.check() == []
        with pytest.raises(StoreError, match=r"format 1 .* record into another --dataset"):
            EpisodeStore.open_or_create(path, arm_features())


def test_keys_a_newer_version_wrote_survive_every_rewrite(tmp_path, rng):
    """An episode's file and the header lost the keys this version does not know at every
    rewrite: a mark (set_success), a commit, a drop, a delete's copy, a merge. The commit
    record's are dropped at a commit, as before: it summarises the contents the commit
    changes, and a newer version's summary kept past it would describe a store gone."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=3, length=4).close()
    for i in range(3):
        info = path / "episodes" / f"{i}.json"
        info.write_text(json.dumps({**json.loads(info.read_text()), "future_episode_key": {"i": i}}))
    meta = path / "meta" / ".zattrs"
    meta.write_text(json.dumps({"commit": {**json.loads(meta.read_text())["commit"], "future_record_key": [1]}}))
    attrs = json.loads((path / ".zattrs").read_text())
    (path / ".zattrs").write_text(json.dumps({**attrs, "shallowpi": {**attrs["shallowpi"], "future_header_key": 7}}))

    def episode_keys(store: Path, count: int) -> list[object]:
        return [json.loads((store / "episodes" / f"{i}.json").read_text()).get("future_episode_key")
                for i in range(count)]

    def record_key(store: Path) -> object:
        return json.loads((store / "meta" / ".zattrs").read_text())["commit"].get("future_record_key")

    with EpisodeStore.open(path, mode="a") as store:
        store.set_success(0, False)
        assert episode_keys(path, 3) == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert store.episode(0).unknown == {"future_episode_key": {"i": 0}}
        writer = store.begin_episode("t", robot="arm", calibration_id="cal-test", fps=30)
        for t in range(3):
            writer.add_frame(synthetic_frame(rng, t), t / 30)
        assert record_key(path) == [1]  # a mark commits nothing
        writer.commit()
        assert record_key(path) is None
        store.drop_last_episode()
        store.delete_episodes([1])  # a compacted copy: a new header, record and episode files
    assert json.loads((path / "episodes" / "0.json").read_text())["success"] is False
    assert episode_keys(path, 2) == [{"i": 0}, {"i": 2}]
    assert _header(path)["future_header_key"] == 7
    make_store(tmp_path / "b.zarr", episodes=1, length=4, seed=1).close()
    with EpisodeStore.open(path) as a, EpisodeStore.open(tmp_path / "b.zarr") as b:
        EpisodeStore.merge([a, b], tmp_path / "merged.zarr").close()
    assert episode_keys(tmp_path / "merged.zarr", 3) == [{"i": 0}, {"i": 2}, None]
    with EpisodeStore.open(tmp_path / "merged.zarr") as merged:
        assert merged.check() == []


def test_an_episode_recorded_before_nan_rows_were_noted_is_not_shown_clean(tmp_path, capsys):
    """`dataset info` showed "-" (no NaN/inf) for an episode whose file has no `nonfinite`:
    recorded before the writer looked, so nobody knows."""
    path = tmp_path / "s.zarr"
    make_store(path, episodes=2, length=4).close()
    info = path / "episodes" / "0.json"
    older = {k: v for k, v in json.loads(info.read_text()).items() if k != "nonfinite"}
    info.write_text(json.dumps(older))
    capsys.readouterr()
    assert main(["dataset", "info", str(path)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 10}
    assert rows["0"].rstrip().rstrip("│").rstrip().endswith("?"), out
    assert rows["1"].rstrip().rstrip("│").rstrip().endswith("-"), out
    assert "1 episode(s) recorded before episodes noted their NaN/inf rows" in out
    assert "platform dataset check" in out
    with EpisodeStore.open(path, mode="a") as store:
        assert store.episode(0).nonfinite is None and store.episode(1).nonfinite == {}
        store.set_success(0, True)  # a rewrite says no more than the file did
    assert "nonfinite" not in json.loads(info.read_text())
    assert EpisodeInfo.from_json(older).to_json() == older


@pytest.mark.bad_store
@pytest.mark.parametrize(("header", "message"), [
    ({"layout": 3}, r"has store layout 3; this shallowpi reads layouts up to 2, upgrade it"),
    ({"version": 5}, r"has format version 5; this shallowpi reads up to 4, upgrade it"),
    ({"version": "3a"}, r"its header's version is \"3a\", not a whole number; the store is damaged"),
    ({"layout": None}, r"its header's layout is null, not a whole number; the store is damaged"),
])
def test_a_header_this_version_cannot_read_says_why(tmp_path, header, message):
    """A layout too new was refused as "format version 3; this shallowpi reads up to 3",
    and a version that is no number as "damaged: ValueError"."""
    path = tmp_path / "s.zarr"
    EpisodeStore.create(path, arm_features(), StoreSettings(durable=False)).close()
    attrs = json.loads((path / ".zattrs").read_text())
    (path / ".zattrs").write_text(json.dumps({**attrs, "shallowpi": {**attrs["shallowpi"], **header}}))
    with pytest.raises(StoreError, match=message) as err:
        EpisodeStore.open(path)
    assert "\n" not in str(err.value)
