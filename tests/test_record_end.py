"""How a `platform record` run ends, in-process: the status goes on while the writer saves
the takes it still holds, and the run's summary reads this run's episodes only."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from dxl_fixtures import emulated
from recorder_fixtures import TickScript, make_session, open_store
from shallowpi.cli import main
from shallowpi.data import EpisodeStore, episode_writer
from shallowpi.record.rig import camera_changes
from shallowpi.telemetry.publisher import TelemetryPublisher
from shallowpi.telemetry.status import Command, RecorderState
from shallowpi.tui.stale import STALE_AFTER_S

pytestmark = pytest.mark.timeout(240)


def test_statuses_go_on_while_the_writer_saves_the_takes_it_still_holds(tmp_path, monkeypatch, own_signals):
    """A disk far behind: each commit 0.6 s, five takes recorded in about a second. After the
    loop ended nothing was published until the writer had saved them all: a dashboard or
    `platform monitor` froze on its "saving" count and after 2 s said STALE ("its loop may
    be stuck"), and an operator who killed the recorder then lost exactly the takes still
    queued. The status now goes out every half second, each take said saved as it lands."""
    commit = episode_writer.EpisodeWriter.commit

    def slow_commit(self, *args, **kwargs):
        time.sleep(0.6)  # the fsyncs of a busy SD card
        return commit(self, *args, **kwargs)

    published: list[tuple[float, object]] = []
    publish = TelemetryPublisher.publish

    def watched(self, status):  # what a monitor is sent, and when
        published.append((time.monotonic(), status.snapshot()))
        publish(self, status)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", slow_commit)
    monkeypatch.setattr(TelemetryPublisher, "publish", watched)
    assert main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                 str(tmp_path), "--dataset", "d", "--no-tui", "record.sim_size=32x32",
                 f"telemetry.address={tmp_path}/t.sock", "--episodes", "5", "--episode-time-s", "0.2",
                 "--reset-time-s", "0"]) == 0
    ended = next(i for i, (_, status) in enumerate(published) if status.state is RecorderState.STOPPED)
    after = published[ended:]
    assert after[0][1].episodes_saved < 4, "the takes were saved before the loop ended: no wait to watch"
    gaps = [later - at for (at, _), (later, _) in itertools.pairwise(after)]
    said = [status.message for _, status in after]
    assert max(gaps) < STALE_AFTER_S / 2, (gaps, said)
    assert any(message.startswith(("robot off; saving", "episode")) and "queued take(s)" in message
               for message in said), said
    counts = [status.episodes_saved for _, status in after]
    assert counts == sorted(counts) and len(set(counts)) >= 3 and counts[-1] == 5, counts
    assert after[-1][1].writer.pending_episodes == 0 and "saving" not in said[-1], said


@pytest.mark.bad_store
def test_a_resumed_runs_summary_reads_its_own_episodes_not_an_old_damaged_one(tmp_path, capsys, monkeypatch,
                                                                              own_signals):
    """The end of every run read the metadata of every episode in the store (a file each:
    seconds at 100k episodes), and an old episode's unreadable file turned a good run's
    summary into a StoreError; so did the resume's camera check. On emulated servos."""
    monkeypatch.setenv("SHALLOWPI_ROBOTS_DIR", str(tmp_path / "robots"))
    with emulated("arm") as (spec, _):
        words = ["record", "--robot", "arm", *(f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()),
                 "--dataset", "d", "--data-root", str(tmp_path), "--task", "wave", "--episode-time-s", "0.2",
                 "--reset-time-s", "0", "--no-tui", "--no-cameras", "--allow-uncalibrated",
                 f"telemetry.address={tmp_path}/t.sock"]
        assert main([*words, "--episodes", "2"]) == 0
        (tmp_path / "d.zarr" / "episodes" / "0.json").write_text("{")  # an old episode's metadata, damaged
        capsys.readouterr()
        read: list[int] = []
        load = EpisodeStore._load_episode

        def counted(self, index):
            read.append(index)
            return load(self, index)

        monkeypatch.setattr(EpisodeStore, "_load_episode", counted)
        code = main([*words, "--resume", "--episodes", "1"])
    out, err = capsys.readouterr()
    assert code == 0, err[-2000:]
    assert f"recorded 1 episode(s) into {tmp_path / 'd.zarr'} (episode 2; it holds 3)" in out, out
    assert 0 not in read, read


@pytest.mark.bad_store
def test_the_camera_check_of_a_resume_reads_back_from_the_last_episode_only_as_far_as_it_must(tmp_path):
    """`camera_changes` read every episode's metadata to find the last one naming its
    cameras: one file each, and an old one damaged refused the resume."""
    serials = {"front": "849312070001", "wrist": "849312070002"}
    store = open_store(tmp_path / "cams.zarr")
    session, _, writer = make_session(store, episodes=3, episode_time_s=0.1, reset_time_s=0.0,
                                      camera_serials=serials)
    session.run()
    writer.close()
    store.close()
    (tmp_path / "cams.zarr" / "episodes" / "0.json").write_text(json.dumps({"damaged": True}))
    with EpisodeStore.open(tmp_path / "cams.zarr") as reopened:
        assert camera_changes(reopened, serials) is None
        swapped = camera_changes(reopened, {"front": "849312070002", "wrist": "849312070001"})
        assert swapped is not None and "(cameras swapped between roles?)" in swapped
        assert camera_changes(reopened, {}) is None


def test_after_a_fault_the_takes_still_saving_are_said_after_the_faults_own_line(tmp_path, monkeypatch):
    """An E-STOP with three takes still queued on a slow disk: while they are saved, and in
    the last status, the E-STOP's line stays first (a monitor ends with "recorder ended on a
    fault: <the last message>"), each take said saved after it."""
    from shallowpi.commands.record_cmd import _SavingStatus

    commit = episode_writer.EpisodeWriter.commit

    def slow_commit(self, *args, **kwargs):
        time.sleep(0.4)
        return commit(self, *args, **kwargs)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", slow_commit)
    store = open_store(tmp_path / "f.zarr")
    session, arm, writer = make_session(store, episodes=5, episode_time_s=0.1, reset_time_s=0.0,
                                        commands=TickScript({11: [Command.ESTOP]}))
    result = session.run()
    assert result.fault.startswith("e-stop pressed") and session.status.state is RecorderState.FAULT
    said: list[str] = []
    saving = _SavingStatus(session, writer, arm, lambda status: said.append(status.message))
    writer.close(on_wait=saving)
    saving.done()
    assert len(said) >= 3 and all(m.startswith("E-STOP: torque off, robot is safe; ") for m in said), said
    assert any("saving 2 queued take(s)" in m or "saving 1 queued take(s)" in m for m in said), said
    assert session.status.episodes_saved == len(store) == 3 and "saving" not in said[-1], said


def test_a_resume_into_a_store_of_other_joint_kinds_names_the_joint_and_both_kinds(tmp_path):
    """`record --resume` after a joint's `kind:` changed in the robot file: refused naming the
    joint (it said only "other features (action, observation.state)"); a store that keeps no
    kinds still takes the robot's episodes."""
    from shallowpi.commands.record_cmd import _check_resume
    from shallowpi.errors import StoreError
    from store_fixtures import arm_features, make_store

    kinds = ("revolute",) * 5 + ("gripper",)
    store = make_store(tmp_path / "kinded.zarr", episodes=1, kinds=kinds)
    try:
        with pytest.raises(StoreError, match=r"^other joint kinds: \S+ is gripper in kinded.zarr and revolute in "
                                             r"this robot's spec"):
            _check_resume(store, arm_features(kinds=("revolute",) * 6), "arm")
        _check_resume(store, arm_features(kinds=kinds), "arm")
    finally:
        store.close()
    unkinded = make_store(tmp_path / "unkinded.zarr", episodes=1)
    try:
        _check_resume(unkinded, arm_features(kinds=kinds), "arm")
    finally:
        unkinded.close()
