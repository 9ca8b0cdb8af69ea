"""How an operator looks at a recorded episode: `dataset show` (PNG: axes in seconds and
the joint's unit, joints that never moved as one line of text) and `dataset view` (Rerun:
every camera and every joint's state and action on the episode's time line)."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.data import EpisodeStore
from shallowpi.data.episode_plot import episode_figure, flat_joints
from shallowpi.data.store import StoreSettings
from store_fixtures import JOINTS, arm_features, synthetic_frame

STILL = {4, 5}  # joints that never move in `still_store`


def still_store(path):
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, arm_features(), StoreSettings(durable=False))
    writer = store.begin_episode("wave", robot="arm", fps=30)
    for t in range(25):
        frame = synthetic_frame(rng, t)
        for key in ("observation.state", "action"):
            frame[key] = frame[key].copy()
            frame[key][sorted(STILL)] = 0.25
        writer.add_frame(frame, t / 30)
    writer.commit(success=True)
    return store


def test_show_labels_its_axes_and_lists_joints_that_never_moved(tmp_path):
    import matplotlib.pyplot as plt

    store = still_store(tmp_path / "s.zarr")
    state = store.read("observation.state", 0, 25)
    assert set(flat_joints(state, store.read("action", 0, 25))) == STILL
    fig = episode_figure(store, 0, units={"joint_0": "rad", "joint_1": "m"})
    plots = [ax for ax in fig.axes if ax.get_lines()]
    assert sorted(ax.get_title() for ax in plots) == [JOINTS[j] for j in range(6) if j not in STILL]
    assert all(ax.get_xlabel() == "time (s)" for ax in plots)
    units = {ax.get_title(): ax.get_ylabel() for ax in plots}
    assert units["joint_0"] == "rad" and units["joint_1"] == "m" and units["joint_2"] == "joint units"
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts == ["never moved (2 joint(s)): joint_4 0.25, joint_5 0.25"]
    strip_titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert strip_titles[0] == "t = 0.0 s" and all(re.fullmatch(r"t = \d+\.\d s|", t) for t in strip_titles)
    plt.close(fig)


def test_units_come_from_the_recorded_joint_kinds_then_from_the_robot_config(tmp_path):
    from shallowpi.commands.dataset_cmd import joint_units

    kinds = ("revolute", "revolute", "linear", "revolute", "revolute", "gripper")
    recorded = EpisodeStore.create(tmp_path / "k.zarr", arm_features(kinds=kinds), StoreSettings(durable=False))
    units = joint_units(recorded, robot="no-such-robot")
    assert [units[j] for j in JOINTS] == ["rad", "rad", "m", "rad", "rad", "opening, 0-1"]
    older = EpisodeStore.create(tmp_path / "o.zarr", arm_features(), StoreSettings(durable=False))
    assert joint_units(older, robot="no-such-robot") == {}  # neither says: the plot writes "joint units"
    assert joint_units(older, robot="arm")["gripper"] == "opening, 0-1"  # the arm's config says


def test_view_saves_a_rerun_recording_holding_every_camera_and_joint(tmp_path):
    pytest.importorskip("rerun")
    from rerun.chunk import RrdReader

    still_store(tmp_path / "s.zarr").close()
    rrd = tmp_path / "ep0.rrd"
    run = subprocess.run(platform_cmd("dataset", "view", str(tmp_path / "s.zarr"), "--episode", "0", "--save", str(rrd)),
                         env=subprocess_env(DISPLAY="", WAYLAND_DISPLAY=""), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "25 frames, 2 camera(s), 6 joint(s); wrote" in run.stdout

    recording = RrdReader(rrd).stream().collect()
    paths = set(recording.schema().entity_paths())
    expected = {"/cameras/front", "/cameras/wrist", "/task", "/outcome"}
    expected |= {f"/joints/{name}/{leaf}" for name in JOINTS for leaf in ("state", "action")}
    assert expected <= paths, expected - paths
    rows = dict(re.findall(r"^(\S+) rows=(\d+)", recording.summary(), flags=re.M))
    assert all(int(rows[p]) == 25 for p in expected if p.startswith(("/cameras", "/joints"))), rows

    # No display and no --save: one line saying what to do.
    bare = subprocess.run(platform_cmd("dataset", "view", str(tmp_path / "s.zarr")),
                          env=subprocess_env(DISPLAY="", WAYLAND_DISPLAY=""), capture_output=True, text=True,
                          timeout=300)
    assert bare.returncode != 0 and len(bare.stderr.strip().splitlines()) == 1
    assert "no display" in bare.stderr and "--save FILE.rrd" in bare.stderr


def episode_store(path, length: int, edit=None):
    """One episode of `length` frames; `edit(frame, t)` changes a frame before it is written."""
    rng = np.random.default_rng(0)
    store = EpisodeStore.create(path, arm_features(), StoreSettings(durable=False))
    writer = store.begin_episode("wave", robot="arm", fps=30)
    for t in range(length):
        frame = synthetic_frame(rng, t)
        frame = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in frame.items()}
        if edit:
            edit(frame, t)
        writer.add_frame(frame, t / 30)
    writer.commit(success=True)
    return store


@pytest.mark.bad_store  # NaN and inf on purpose
def test_show_says_which_joints_hold_nan_or_inf_rather_than_leaving_the_line_out(tmp_path):
    """A joint whose state is NaN was drawn as its action alone, as if the state had never
    been recorded: the title names the rows (`dataset info`'s words) and the axis says so."""
    import matplotlib.pyplot as plt

    def spoil(frame, t):
        frame["observation.state"][0] = np.nan  # joint_0's state, every row
        if t == 3:
            frame["action"][2] = np.inf  # joint_2's action, one row

    store = episode_store(tmp_path / "nan.zarr", 25, spoil)
    fig = episode_figure(store, 0)
    assert fig._suptitle.get_text().endswith("\nNaN/inf: observation.state rows 0-24; action rows 3")
    corners = {ax.get_title(): [t.get_text() for t in ax.texts] for ax in fig.axes if ax.get_lines()}
    assert corners["joint_0"] == ["state NaN/inf"] and corners["joint_2"] == ["action NaN/inf"]
    assert all(corners[j] == [] for j in ("joint_1", "joint_3", "joint_4", "joint_5"))
    plt.close(fig)
    # An episode recorded before episodes noted their NaN rows: the plotted arrays say.
    meta = next((tmp_path / "nan.zarr").rglob("episodes/0.json"))
    meta.write_text(json.dumps({k: v for k, v in json.loads(meta.read_text()).items() if k != "nonfinite"}))
    with EpisodeStore.open(tmp_path / "nan.zarr") as older:
        assert older.episode(0).nonfinite is None
        fig = episode_figure(older, 0)
    assert fig._suptitle.get_text().endswith("\nNaN/inf: observation.state rows 0-24; action rows 3")
    plt.close(fig)
    clean = episode_figure(episode_store(tmp_path / "clean.zarr", 25), 0)
    assert "NaN" not in clean._suptitle.get_text()
    plt.close(clean)


@pytest.mark.parametrize("length", [1, 2, 3])
def test_show_marks_each_sample_of_a_short_episode(tmp_path, length):
    """A one-frame episode drew lines of one point: empty axes. Each sample is marked."""
    import matplotlib.pyplot as plt

    fig = episode_figure(episode_store(tmp_path / "short.zarr", length), 0)
    lines = [line for ax in fig.axes for line in ax.get_lines()]
    assert len(lines) == 12  # state and action of 6 joints
    for line in lines:
        assert line.get_marker() not in ("None", "", None, " ")
        assert list(line.get_markevery()) == [True] * length
    # Its frames' times told apart (two frames 33 ms apart were both "t = 0.0 s"), its length
    # in words ("1 frames").
    titles = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("t = ")]
    assert titles == [f"t = {t / 30:.2f} s" for t in range(length)] if length > 1 else ["t = 0.0 s"], titles
    assert f"- {length} frame{'' if length == 1 else 's'}, " in fig._suptitle.get_text()
    plt.close(fig)
