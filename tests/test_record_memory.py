"""A recorder runs for hours: nothing it keeps may grow with the episodes it records
(issue 10, item 17; the measurement is tools/bench/record_soak.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import subprocess_env
from shallowpi import config
from shallowpi.data import EpisodeStore
from shallowpi.data.store import StoreSettings
from shallowpi.record import session as session_module
from shallowpi.record.rig import build_rig
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.tui.recorder_render import episodes as episodes_text
from shallowpi.tui.recorder_render import status_line

# Run in a fresh interpreter: nothing else has interned these names there. `sys.intern(s) is s`
# holds for a new string exactly when no equal string was interned before.
INTERNED_NAMES = textwrap.dedent("""
    import json, sys
    from shallowpi import cli
    from shallowpi.data import EpisodeStore
    root = sys.argv[1]
    common = ["--no-tui", "--data-root", root, "--reset-time-s", "0", "record.sim_size=32x32",
              f"telemetry.address={root}/t.sock"]
    assert cli.main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--dataset", "a",
                     "--episodes", "3", "--episode-time-s", "0.3", *common]) == 0
    assert cli.main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--dataset", "c",
                     "--episodes", "1", "--seed", "3", "--episode-time-s", "0.3", *common]) == 0
    assert cli.main(["dataset", "merge", "a", "c", "--out", "b", "--data-root", root]) == 0
    store = EpisodeStore.open(root + "/b.zarr")
    names = [str(n) + suffix for n in range(len(store)) for suffix in (".json", ".json.partial")]
    names += [str(row) + tail for row in range(store.num_frames) for tail in (".0.0.0", ".0.0.0.partial")]
    print(json.dumps({"names": len(names), "interned": [n for n in names if sys.intern(n) is not n]}))
""")


def test_a_recording_interns_no_name_it_makes_per_episode_or_frame(tmp_path):
    """pathlib interns every name it parses and Python 3.12 never frees interned strings:
    a Path per episode file or per camera frame (commit, disk budget, merge) leaked ~1 KB
    an episode for the life of the recorder."""
    run = subprocess.run([sys.executable, "-c", INTERNED_NAMES, str(tmp_path)], env=subprocess_env(),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    import json

    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["names"] > 40
    assert result["interned"] == []


def test_the_status_keeps_the_newest_episodes_and_counts_the_rest(tmp_path, monkeypatch):
    """The status is copied and published every tick: it carries the newest EPISODES_KEPT
    summaries, and the dashboard still counts every episode of the run."""
    monkeypatch.setattr(session_module, "EPISODES_KEPT", 2)
    rig = build_rig(config.compose(["robot=arm"]), "direct", "cube_in_bowl", size=(32, 32))
    store = EpisodeStore.create(tmp_path / "kept.zarr", rig.features, StoreSettings(durable=False))
    writer = BackgroundWriter(store)
    session = RecordingSession(
        SessionConfig(task=rig.task_text, episodes=5, episode_time_s=0.2, reset_time_s=0, fps=30),
        rig.robot, rig.teleop, writer, rig.clock, rig.joint_names, scene=rig.scene)
    try:
        session.run()
        writer.close()
        # The takes committed after the loop ended count too (on a loaded machine the writer
        # can be several takes behind when the last one is handed over).
        session.writer_closed()
    finally:
        rig.close()
    status = session.status
    assert len(store) == 5
    assert [e.index for e in status.episodes] == [3, 4]
    assert status.episodes_earlier == 3
    assert status.episodes_saved == 5 and {e.state for e in status.episodes} == {"saved"}
    assert "… 3 earlier" in episodes_text(status, last=2).plain
    assert "kept 5" in status_line(status)
