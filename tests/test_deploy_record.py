"""`platform deploy --record` writes as `platform record` does: the config's store settings,
record.queue_mb of frames queued, and record.disk_reserve_mb kept free on the disk (before
the store is made, and before each episode)."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

import numpy as np
import pytest
from omegaconf import OmegaConf

from disk_fixtures import small_disk
from shallowpi import config
from shallowpi.commands.deploy_recording import DeploymentRecorder
from shallowpi.data.store import EpisodeStore
from shallowpi.deploy.executor_control import EpisodeReport
from shallowpi.errors import ConfigError
from shallowpi.record.disk import DiskSpaceError
from shallowpi.record.settings import queue_frames
from shallowpi.robots.observation import Frame, Observation
from store_fixtures import as_layout_1


def _target(episode_s: float = 20.0) -> SimpleNamespace:
    """What DeploymentRecorder reads of a deploy target: two joints, a 16x16 front camera, 30 Hz."""
    return SimpleNamespace(joint_names=["j0", "j1"], joint_kinds=["revolute", "gripper"],
                           camera_shapes={"front": (16, 16)}, calibration_id="cal-x", fps=30.0, episode_s=episode_s)


def _record_episode(recorder: DeploymentRecorder, ticks: int = 3) -> None:
    on_tick = recorder.begin("count", "counting", 30.0)
    for tick in range(ticks):
        frame = Frame(np.full((16, 16, 3), tick, np.uint8), tick / 30, tick)
        on_tick(Observation(tick / 30, np.zeros(2, np.float32), {"front": frame}), np.zeros(2, np.float32))
    recorder.end(EpisodeReport(0, None))


def test_a_deployment_recording_queues_record_queue_mb_of_frames(tmp_path):
    """It queued a fixed 256 frames, whatever record.queue_mb said."""
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose(["record.queue_mb=1"]), _target(),
                                  ["front"])
    recorder.close()
    # 1 MB of uncompressed 16x16 frames (with the joints, the times and what holds them): some 600, not 256
    capacity = recorder.writer.stats().queue_capacity
    assert capacity == queue_frames(1.0, recorder.store.features) and capacity > 500, capacity


def test_a_deployment_recording_writes_with_the_configs_store_settings(tmp_path, caplog):
    """It created every store as JPEG q90 in 1024-row chunks, whatever store.* said."""
    cfg = config.compose(["store.image_codec=blosc-lz4", "store.numeric_chunk_rows=64"])
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), cfg, _target(), ["front"])
    try:
        settings = recorder.store.settings
        assert (settings.image_codec, settings.image_quality, settings.numeric_chunk_rows) == ("blosc-lz4", 90, 64)
        _record_episode(recorder)
    finally:
        recorder.close()
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert store.settings.image_codec == "blosc-lz4" and len(store) == 1
        assert store.read_episode(0, ["observation.images.front"])["observation.images.front"][:, 0, 0, 0].tolist() \
            == [0, 1, 2]
    # An existing store keeps its own settings: the config's differing ones are named, not taken.
    with caplog.at_level("WARNING", logger="shallowpi"):
        again = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), _target(), ["front"])
        again.close()
    assert again.store.settings.image_codec == "blosc-lz4"
    assert "store.image_codec blosc-lz4 (the config's: jpeg)" in caplog.text
    assert "store.numeric_chunk_rows 64 (the config's: 1024)" in caplog.text


def test_a_deployment_recording_refuses_a_disk_below_the_reserve_before_making_a_store(tmp_path):
    """1 MB free against the default 32 MB record.disk_reserve_mb: rollouts filled a Jetson's disk."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        with pytest.raises(DiskSpaceError, match=r"below the 32\.0 MB that stay free \(record\.disk_reserve_mb\)"):
            DeploymentRecorder(str(disk / "deployed.zarr"), config.compose([]), _target(), ["front"])
        assert list(disk.iterdir()) == []


def test_a_deployment_episode_the_disk_has_no_room_for_does_not_begin(tmp_path):
    """Measured from the store's last episode (a 4 KB chunk file a frame here), a 1000 s
    episode does not fit in what is left of 512 KB: `begin` refuses it, nothing queued
    (deploy ends the run as a fault, torque on), and the episode before it is kept."""
    with small_disk(tmp_path / "disk", "512k") as disk:
        cfg = config.compose(["record.disk_reserve_mb=0"])
        first = DeploymentRecorder(str(disk / "deployed.zarr"), cfg, _target(episode_s=1000.0), ["front"])
        try:  # unmeasured, the raw size is an upper bound: it warns and lets the episode start
            _record_episode(first)
        finally:
            first.close()
        recorder = DeploymentRecorder(str(disk / "deployed.zarr"), cfg, _target(episode_s=1000.0), ["front"])
        try:
            with pytest.raises(DiskSpaceError, match="no room for episode 1: "):
                recorder.begin("count", "counting", 30.0)
        finally:
            recorder.close()
        assert first.writer.failure is None and recorder.writer.failure is None
        with EpisodeStore.open(disk / "deployed.zarr") as store:
            assert len(store) == 1 and store.check() == []


@pytest.mark.parametrize(("setting", "value", "says"), [
    ("queue_mb", float("nan"), "record.queue_mb must be a finite number > 0, got nan"),
    ("disk_reserve_mb", float("inf"), "record.disk_reserve_mb must be a finite number >= 0, got inf"),
    ("disk_reserve_mb", -1, "record.disk_reserve_mb must be a finite number >= 0, got -1"),
])
def test_a_deployment_recording_refuses_a_queue_or_reserve_out_of_range(tmp_path, setting, value, says):
    """As a lab's config.yaml may say them (an override of these counts takes whole numbers
    only): a NaN was a ValueError traceback."""
    cfg = config.compose([])
    OmegaConf.update(cfg, f"record.{setting}", value)
    with pytest.raises(ConfigError, match=re.escape(says)):
        DeploymentRecorder(str(tmp_path / "deployed.zarr"), cfg, _target(), ["front"])
    assert not (tmp_path / "deployed.zarr").exists()


def test_a_deployment_episode_keeps_its_cameras_drops_and_the_executors_holds(tmp_path):
    """A real RealSense driver (pyrealsense2's software device) whose frame numbers skip
    two frames before the episode and two during it. The episode was committed with
    dropped_frames 0 (the store's default, read as "none dropped" by whoever filters
    rollouts for retraining) and without the executor's holds or any stale-frame count.
    Now: the drops during the episode, counted as `platform record` counts a take's; its
    rows holding a picture over three periods old (extra.stale_frames, record's meaning);
    the executor's holds, hold ticks and watchdog stale ticks."""
    pytest.importorskip("pyrealsense2", exc_type=ImportError)
    from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
    from shallowpi.hardware.realsense_software import SoftwareRealSense

    device = SoftwareRealSense("SW-front", 16, 16, fps=30)
    camera = RealSenseCamera(RealSenseConfig("front", "SW-front", 16, 16, 30, warmup_frames=0),
                             open_device=device.open_device)
    target = _target()
    target.cameras = {"front": camera}
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), target, ["front"])
    try:
        with camera:
            last = None
            for number in (0, 1, 4):  # two lost before the episode: not its drops
                device.inject(np.full((16, 16, 3), number, np.uint8), frame_number=number)
                last = camera.latest(newer_than=last).sequence
            on_tick = recorder.begin("count", "counting", 30.0)
            for tick, number in enumerate((5, 6, 9, 10)):  # 7 and 8 lost during it
                device.inject(np.full((16, 16, 3), number, np.uint8), frame_number=number)
                got = camera.latest(newer_than=last)
                last = got.sequence
                # The last row's picture is 0.2 s old at its tick: six periods, stale.
                seen = got.host_time_s + (0.2 if tick == 3 else 0.0)
                on_tick(Observation(seen, np.zeros(2, np.float32), {"front": Frame(got.image, got.host_time_s, got.sequence)}),
                        np.zeros(2, np.float32))
            report = EpisodeReport(0, None, ticks=4, holds=2, hold_ticks=7, stale_frames=1, ended="time limit")
            recorder.end(report)
    finally:
        recorder.close()
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        episode = store.episode(0)
        assert episode.length == 4
        assert episode.dropped_frames == 2
        assert {key: episode.extra[key] for key in ("holds", "hold_ticks", "watchdog_stale_frames", "stale_frames",
                                                    "repeated_pictures")} == \
            {"holds": 2, "hold_ticks": 7, "watchdog_stale_frames": 1, "stale_frames": 1, "repeated_pictures": 0}
        assert episode.extra["camera_serials"] == {"front": "SW-front"}


class _Dashboard:
    """The executor's `publish` as deploy's dashboard sees it, from `waiting` on (the wait for
    the disk): counts the statuses, keeps the last, and on the `after`-th calls `then`
    (the executor's estop or stop, as its keys do; the disk answering again)."""

    def __init__(self, after: int = 3, then=None) -> None:
        self.waiting, self.after, self.then = False, after, then
        self.statuses: list = []

    def __call__(self, status) -> None:
        if self.waiting:
            self.statuses.append(status.snapshot())
            if len(self.statuses) == self.after and self.then is not None:
                self.then()


def _on_a_stalled_disk(tmp_path, monkeypatch, dashboard: _Dashboard, fault: bool = True, ticks: int = 9):
    """`deploy --record` of an executor on a CountingRobot (8x8 front camera) onto a disk that
    stalls at the episode's first frame, the writer's queue 8 frames: with `fault`, the
    episode runs until a tick's wait for room (0.25 s) ends it as a fault, torque on;
    without, it ends by its time after `ticks` ticks (9: the frame the writer holds and 8
    queued, the queue full). Returns (executor, robot, recorder, report, disk): set `disk`
    when it answers again."""
    import threading

    from executor_fakes import CountingRobot, StepBackend
    from shallowpi.data import episode_writer
    from shallowpi.deploy.executor import Executor
    from shallowpi.deploy.settings import ExecutorConfig
    from shallowpi.record import settings

    disk = threading.Event()
    add_frame = episode_writer.EpisodeWriter.add_frame

    def stalled(self, *args, **kwargs):
        disk.wait()
        return add_frame(self, *args, **kwargs)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "add_frame", stalled)
    monkeypatch.setattr(settings, "queue_frames", lambda queue_mb, features: settings.MIN_QUEUE_FRAMES)
    target = _target()
    target.camera_shapes = {"front": (8, 8)}
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), target, ["front"])
    robot = CountingRobot()
    executor = Executor(robot, StepBackend(8), ExecutorConfig(strategy="async", realtime=False, warmup_runs=2),
                        publish=dashboard)
    executor.warm_up("count")
    on_tick = recorder.begin("count", "counting", 30.0)
    report = executor.run_episode("count", 60 if fault else ticks, on_tick=on_tick)
    assert report.ended == ("fault" if fault else "time limit"), report.ended
    assert executor.held_after_fault is fault and robot.torque
    return executor, robot, recorder, report, disk


def _stored(tmp_path) -> list:
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert store.check() == []  # nothing half-written
        return list(store.episodes)


def test_the_e_stop_ends_a_recorded_episodes_wait_for_a_stalled_disk(tmp_path, monkeypatch, capsys):
    """The episode's commit (DeploymentRecorder.end) waited for room with no give_up: on a disk
    that stalls (a hung USB SSD, NFS) the main thread blocked with the robot holding, torque
    on, nothing published (the dashboard STALE), its e-stop and the servos' alarms unread.
    Now the wait publishes the status (the fault's, here) and obeys the e-stop: torque off
    at once, the wait given up, the episode not kept."""
    from shallowpi.record.writer import WaitAbandoned

    dashboard = _Dashboard()
    executor, robot, recorder, report, disk = _on_a_stalled_disk(tmp_path, monkeypatch, dashboard)
    dashboard.then = executor.estop
    dashboard.waiting = True
    try:
        with pytest.raises(WaitAbandoned):
            recorder.end(report, give_up=executor.watched_wait("room to keep episode 1's recording"))
        assert robot.calls[-1] == "torque_off" and not robot.torque
        assert len(dashboard.statuses) >= 3 and all(s.state.value == "fault" for s in dashboard.statuses)
        assert dashboard.statuses[-1].estopped and executor.safety.faults == 1
    finally:
        disk.set()
        recorder.close()
    assert recorder.given_up == [(1, 0)] and _stored(tmp_path) == []
    assert "not kept: episode 1 (store index 0) of this run, whose recording waited for the disk when the run was stopped" in capsys.readouterr().out


def test_a_stopped_or_faulted_episode_waits_on_for_the_disk_and_is_kept(tmp_path, monkeypatch):
    """An episode a fault (or a stop) ended is to be kept, the frames before it: the wait
    does not give up on the run's stop that came before it, publishing meanwhile; once the
    disk answers the commit goes in, and the robot held with torque on throughout."""
    dashboard = _Dashboard(after=5)
    executor, robot, recorder, report, disk = _on_a_stalled_disk(tmp_path, monkeypatch, dashboard)
    dashboard.then = disk.set
    dashboard.waiting = True
    try:
        recorder.end(report, give_up=executor.watched_wait("room to keep episode 1's recording"))
        assert len(dashboard.statuses) == 5 and robot.torque and executor.held_after_fault
    finally:
        disk.set()
        recorder.close()
    (episode,) = _stored(tmp_path)
    assert episode.extra["ended"] == "fault" and 0 < episode.length < report.ticks and recorder.given_up == []


@pytest.mark.parametrize("why", ["stop", "servo alarm", "fault_hold_s"])
def test_a_stop_a_fault_or_the_unattended_limit_ends_the_wait_for_a_stalled_disk(tmp_path, monkeypatch, why):
    """Stopped since the wait began (the dashboard's s, a servo's alarm read as the robot
    holds), the wait is given up, the robot holding (a stop; torque goes off as deploy
    disconnects) or as a servo fault leaves it; with --yes (nobody attends) a hold after a
    fault ends after deploy.fault_hold_s, as hold_until_the_operator_ends ends it."""
    from shallowpi.record.writer import WaitAbandoned

    dashboard = _Dashboard()
    executor, robot, recorder, report, disk = _on_a_stalled_disk(tmp_path, monkeypatch, dashboard,
                                                                   fault=why == "fault_hold_s")

    def alarm() -> None:  # read within a second (Executor.watch_faults)
        robot.alarm = "servo 3 on bus arm reports an overload"

    dashboard.then = {"stop": executor.stop, "servo alarm": alarm}.get(why)
    dashboard.waiting = True
    began = time.monotonic()
    try:
        with pytest.raises(WaitAbandoned):
            recorder.end(report, give_up=executor.watched_wait("room to keep episode 1's recording",
                                                               limit_s=0.5 if why == "fault_hold_s" else None))
        assert executor.stopped and not executor.estopped and robot.torque
        # A servo fault holds what can hold, for the operator to end (deploy's hold after a fault follows).
        assert executor.held_after_fault is (why == "servo alarm")
        assert executor.safety.faults == (0 if why == "stop" else 1)
        if why == "fault_hold_s":
            assert 0.5 <= time.monotonic() - began < 2.0
    finally:
        disk.set()
        recorder.close()
    assert recorder.given_up == [(1, 0)] and _stored(tmp_path) == []


def test_the_e_stop_ends_the_next_episodes_wait_to_begin_on_a_stalled_disk(tmp_path, monkeypatch):
    """The next episode's begin waited as the commit did: the queue full behind a stalled
    disk (an 8-tick episode and its commit fill it), the e-stop turns torque off and gives
    the wait up, nothing begun; the episode before is kept once the disk answers."""
    from shallowpi.record.writer import WaitAbandoned

    dashboard = _Dashboard()
    executor, robot, recorder, report, disk = _on_a_stalled_disk(tmp_path, monkeypatch, dashboard, fault=False,
                                                                   ticks=8)
    try:
        recorder.end(report)  # the queue's last place
        dashboard.then = executor.estop
        dashboard.waiting = True
        with pytest.raises(WaitAbandoned):
            recorder.begin("count", "counting", 30.0, give_up=executor.watched_wait("room to record episode 2"))
        assert not robot.torque and dashboard.statuses[-1].state.value == "stopped" and dashboard.statuses[-1].estopped
        assert "the disk is behind: waiting for room to record episode 2" in dashboard.statuses[0].message
    finally:
        disk.set()
        recorder.close()
    (episode,) = _stored(tmp_path)
    assert episode.length == 8 and episode.extra["ended"] == "time limit" and recorder.given_up == []


@pytest.mark.bad_store
def test_an_old_episodes_damaged_metadata_does_not_refuse_a_deployment_recording(tmp_path):
    """Opening the store read every episode's metadata (to count the demonstrations among
    them): one old file unreadable refused the whole deploy, as it cost `record` its summary."""
    path = tmp_path / "deployed.zarr"
    cfg = config.compose([])
    recorder = DeploymentRecorder(str(path), cfg, _target(), ["front"])
    try:
        _record_episode(recorder)
        _record_episode(recorder)
    finally:
        recorder.close()
    (path / "episodes" / "0.json").write_text("{")
    again = DeploymentRecorder(str(path), cfg, _target(), ["front"])
    try:
        _record_episode(again)
    finally:
        again.close()
    with EpisodeStore.open(path) as store:
        assert len(store) == 3 and store.episode(2).length == 3


def test_a_store_deploy_record_refuses_is_left_as_it_was(tmp_path):
    """A store recorded at another rate (or with another calibration) is refused, and was
    refused only after the writable open had moved a layout-1 store to layout 2 for good:
    the refusal changed the store it refused. It is refused from a reader now, untouched."""
    from shallowpi.errors import StoreError

    path = tmp_path / "deployed.zarr"
    cfg = config.compose([])
    recorder = DeploymentRecorder(str(path), cfg, _target(), ["front"])
    try:
        _record_episode(recorder)
    finally:
        recorder.close()
    as_layout_1(path)
    before = {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    faster = SimpleNamespace(**{**vars(_target()), "fps": 15.0})
    with pytest.raises(StoreError, match="fps"):
        DeploymentRecorder(str(path), cfg, faster, ["front"])
    after = {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
    assert after == before
