"""`platform record`: end to end in the twin, signals, and faults through the real drivers.

The fault tests run the recording session on the real driver stack: DynamixelRobot and
LeaderFollower over emulated servo chains (the real dynamixel-sdk on ptys) and a
RealSenseCamera reading pyrealsense2's software device.
"""

from __future__ import annotations

import hashlib
import itertools
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import platform_cmd, subprocess_env
from disk_fixtures import small_disk
from dxl_fixtures import SOUND_SERVO_MISSES, emulated
from shallowpi import config
from shallowpi.data import EpisodeStore
from shallowpi.data.features import robot_features
from shallowpi.data.store import StoreSettings
from shallowpi.errors import PlatformError
from shallowpi.hardware.realsense import RealSenseCamera, RealSenseConfig
from shallowpi.hardware.realsense_software import SoftwareRealSense
from shallowpi.record.clock import LOOP_SWITCH_INTERVAL_S, TickClock
from shallowpi.record.rig import build_rig, first_seed
from shallowpi.record.session import RecordingSession, SessionConfig
from shallowpi.record.writer import BackgroundWriter
from shallowpi.robots.calibration import RobotCalibration
from shallowpi.robots.dynamixel_robot import DynamixelRobot
from shallowpi.telemetry.status import Command, RecorderState
from shallowpi.teleop.leader import LeaderFollower
from shallowpi.tui.recorder_render import status_line
from store_fixtures import make_store, stamp_episode, synthetic_frame

SMALL = "record.sim_size=96x96"


def record(tmp_path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--no-tui", SMALL, f"telemetry.address={tmp_path}/t.sock", *args),
        env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.slow
def test_sim_recording_end_to_end_and_resume(tmp_path, capsys):
    from shallowpi.cli import main

    first = record(tmp_path, "--dataset", "demo", "--episodes", "2", "--reset-time-s", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "recorded 2 episode(s)" in first.stdout and "platform dataset show" in first.stdout
    # What only prints and exits runs in this process (an interpreter's imports each, else).
    capsys.readouterr()
    assert main(["dataset", "check", "demo", "--data-root", str(tmp_path)]) == 0
    assert "ok, 2 episodes" in capsys.readouterr().out

    store = EpisodeStore.open(tmp_path / "demo.zarr")
    assert [e.task for e in store.episodes] == ["put the red cube in the bowl"] * 2
    assert all(e.robot == "arm" and e.success is True and e.length > 60 for e in store.episodes)
    assert {"loop_p50_ms", "loop_p99_ms", "loop_overruns", "backpressure_s"} <= store.episode(0).extra.keys()
    assert [e.extra["ended"] for e in store.episodes] == ["expert done"] * 2
    # the robot spec's joint kinds travel with the names (the arm's shoulder rides a linear
    # stage): training tells the gripper by them, plots the units
    assert store.features["action"].kinds == ("revolute", "linear") + ("revolute",) * 4 + ("gripper",)
    episode = store.read_episode(1)
    assert episode["observation.images.front"].shape[1:] == (96, 96, 3)
    ticks = episode["timestamp"]
    np.testing.assert_allclose(np.diff(ticks), 1 / 30, rtol=1e-6)  # simulated time: no gaps
    # The twin's expert moved the arm: actions change, and the state follows them.
    assert np.ptp(episode["action"], axis=0).max() > 0.2
    assert np.abs(episode["observation.state"][-1] - episode["action"][-1]).max() < 0.1
    assert list((tmp_path / "demo.zarr" / ".shallowpi").glob("record-*.yaml"))

    assert main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root", str(tmp_path),
                 "--no-tui", SMALL, f"telemetry.address={tmp_path}/t.sock", "--dataset", "demo", "--episodes", "1",
                 "--reset-time-s", "0"]) != 0
    assert "already exists; pass --resume" in capsys.readouterr().err
    # Its assertions are on the numbering and the seeds: a 1-s take shows them (the first
    # run's expert-length takes are checked above).
    resumed = record(tmp_path, "--dataset", "demo", "--episodes", "1", "--reset-time-s", "0", "--resume",
                     "--episode-time-s", "1")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # One number everywhere, the store's: after --resume this run's episode is 2.
    assert "[record] recording episode 2 (1/1 of this run)" in resumed.stdout
    assert "[record] episode 2 recorded (" in resumed.stdout
    # The run's last take is committed after the loop ends: said too (it stayed "saving"
    # for the lines and for every `platform monitor` watching).
    assert "[record] episode 2 saved (" in resumed.stdout and "[record] episode 1 saved (" in first.stdout
    assert "(episode 2; it holds 3)" in resumed.stdout and "--episode 2" in resumed.stdout
    resumed_store = EpisodeStore.open(tmp_path / "demo.zarr")
    assert len(resumed_store) == 3
    assert [e.extra["seed"] for e in resumed_store.episodes] == [0, 1, 2]  # the resumed run's scene is new
    other = subprocess.run(
        platform_cmd("record", "--robot", "humanoid", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "demo", "--resume", "--no-tui", SMALL,
                     f"telemetry.address={tmp_path}/t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert other.returncode != 0
    assert "recorded with other features" in other.stderr and len(other.stderr.strip().splitlines()) == 1


def _episode_digest(store: EpisodeStore, index: int) -> str:
    episode = store.read_episode(index)
    return hashlib.sha256(b"".join(np.ascontiguousarray(episode[k]).tobytes() for k in sorted(episode))).hexdigest()


@pytest.mark.slow
def test_sim_episodes_start_at_zero_hold_their_rows_and_never_repeat_a_scene(tmp_path):
    """Every episode, the first of a run, those after a reset period, after none, and those
    of a resumed run, starts with its own t = 0 row, the observation right after its scene
    was reset, and holds round(1 s x 30 Hz) = 30 rows; each has its own seed."""
    first = record(tmp_path, "--dataset", "exact", "--episodes", "3", "--episode-time-s", "1", "--reset-time-s", "0.2")
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = record(tmp_path, "--dataset", "exact", "--episodes", "2", "--episode-time-s", "1", "--reset-time-s", "0",
                     "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    store = EpisodeStore.open(tmp_path / "exact.zarr")
    assert len(store) == 5 and store.check() == []
    first_rows = []
    for index in range(5):
        episode = store.read_episode(index)
        assert store.episode(index).length == 30
        np.testing.assert_allclose(episode["timestamp"], np.arange(30) / 30, rtol=0, atol=1e-9)
        first_rows.append(episode["observation.state"][0])
    # Row 0 is the arm at home, as reset left it, before the expert moved it (exact in the twin).
    for row in first_rows[1:]:
        np.testing.assert_array_equal(row, first_rows[0])
    assert [e.extra["seed"] for e in store.episodes] == [0, 1, 2, 3, 4]
    assert len({_episode_digest(store, i) for i in range(5)}) == 5
    starts = [store.episode_range(i)[0] for i in range(5)]
    scenes = {store.read("observation.images.front", row, row + 1).tobytes() for row in starts}
    assert len(scenes) == 5  # five different scenes, from the first frame on

    repeated = record(tmp_path, "--dataset", "exact", "--episodes", "1", "--resume", "--seed", "3")
    assert repeated.returncode != 0 and len(repeated.stderr.strip().splitlines()) == 1
    assert "already holds the scenes of seed(s) 3" in repeated.stderr and "continue from seed 5" in repeated.stderr
    assert len(EpisodeStore.open(tmp_path / "exact.zarr")) == 5


@pytest.mark.parametrize("size, args, kept, why", [
    # No room for the first episode: the writer meets ENOSPC mid-episode.
    ("256k", [], "no episode of this run was saved (those already in full.zarr are intact)",
     r"failed: the disk is full \(ENOSPC at \S+/full\.zarr/\S+\); free space or record into another --data-root"),
    # Room for one: measured after it, the second is refused before it starts.
    ("512k", ["--realtime", "--reset-time-s", "1"], "kept 1 episode(s) of this run: episode 0 of full.zarr",
     "no room for episode 1: "),  # (why: a regular expression)
])
@pytest.mark.slow
def test_a_full_disk_ends_the_recording_with_one_line_saying_what_was_kept(tmp_path, size, args, kept, why):
    with small_disk(tmp_path / "disk", size) as disk:
        run = subprocess.run(
            platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui", SMALL,
                         "--data-root", str(disk), "--dataset", "full", "--episodes", "3", "--episode-time-s", "1",
                         "--reset-time-s", "0", "record.disk_reserve_mb=0", f"telemetry.address={tmp_path}/t.sock",
                         *args),
            env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode == 1, run.stderr[-3000:]
        assert "Traceback" not in run.stderr
        assert "disk: " in run.stderr and " fit" in run.stderr  # the start-up estimate
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("error: recording stopped: ") and re.search(why, last) and last.endswith(kept), last
        store = EpisodeStore.open(disk / "full.zarr")
        assert len(store) == (0 if size == "256k" else 1) and store.check() == []


def test_a_disk_below_the_reserve_is_refused_before_a_store_is_made(tmp_path):
    """1 MB free against the default 32 MB reserve: no estimate is needed to know no episode
    may start. It used to warn ("at least 0 fit"), make the store, record one episode and
    then stop on the same reserve; the retry then met "already exists"."""
    with small_disk(tmp_path / "disk", "1m") as disk:
        run = subprocess.run(
            platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui", SMALL,
                         "--data-root", str(disk), "--dataset", "full", "--episodes", "2", "--episode-time-s", "1",
                         "--reset-time-s", "0", f"telemetry.address={tmp_path}/t.sock"),
            env=subprocess_env(), capture_output=True, text=True, timeout=300)
        assert run.returncode != 0 and "Traceback" not in run.stderr, run.stderr[-3000:]
        last = run.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "MB free at " in last and "below the 32.0 MB that stay free" in last
        assert last.endswith("free space or record into another --data-root"), last
        assert list(disk.iterdir()) == []


def test_a_take_cut_by_ctrl_c_is_saved_and_says_so(tmp_path):
    """Ctrl-C saves the take in flight (record.on_interrupt=save): its metadata must tell
    it from a whole demonstration, which a 1.4 s take among 20 s ones did only by length."""
    rig = build_rig(config.compose(["robot=arm"]), "direct", "cube_in_bowl", size=(32, 32))
    store = EpisodeStore.create(tmp_path / "cut.zarr", rig.features, StoreSettings(durable=False))
    writer = BackgroundWriter(store)
    ticks = itertools.count()

    def commands() -> list[Command]:
        tick = next(ticks)
        if tick == 12:
            session.request_stop()  # what the SIGINT handler does
        return [Command.START] if tick == 0 else []

    session = RecordingSession(
        SessionConfig(task=rig.task_text, episodes=2, episode_time_s=10, reset_time_s=0, fps=30, autostart=False),
        rig.robot, rig.teleop, writer, rig.clock, rig.joint_names, scene=rig.scene, commands=commands)
    try:
        result = session.run()
        writer.close()
    finally:
        rig.close()
    assert result.interrupted and len(store) == 1
    assert store.episode(0).extra["ended"] == "interrupted" and store.episode(0).length < 300


def test_dashboard_commands_begin_episodes_at_zero_and_marks_reach_the_store(tmp_path):
    """The operator's flow in the twin: start, stop, mark, start, re-record, stop, mark,
    quit. Each started episode begins at t = 0 in the tick of the key; marks land on the
    right stored episode; a re-recorded attempt is replaced, not listed."""
    rig = build_rig(config.compose(["robot=arm"]), "direct", "cube_in_bowl", size=(32, 32))
    store = EpisodeStore.create(tmp_path / "keys.zarr", rig.features, StoreSettings(durable=False))
    writer = BackgroundWriter(store)
    script = {0: [Command.START], 10: [Command.STOP], 11: [Command.SUCCESS], 15: [Command.START],
              20: [Command.RERECORD], 30: [Command.STOP], 31: [Command.FAILURE], 32: [Command.QUIT]}
    ticks = itertools.count()
    session = RecordingSession(
        SessionConfig(task=rig.task_text, episodes=5, episode_time_s=10, reset_time_s=100, fps=30, autostart=False),
        rig.robot, rig.teleop, writer, rig.clock, rig.joint_names, scene=rig.scene,
        commands=lambda: script.get(next(ticks), []))
    try:
        result = session.run()
        writer.close()
    finally:
        rig.close()
    assert result.interrupted and result.discarded == 1 and not result.fault
    assert len(store) == 2 and store.check() == []
    for index in range(2):
        np.testing.assert_allclose(store.read_episode(index)["timestamp"], np.arange(10) / 30, atol=1e-9)
    assert [e.success for e in store.episodes] == [True, False]
    assert [e.extra["ended"] for e in store.episodes] == ["stopped", "stopped"]
    assert [e.extra["seed"] for e in store.episodes] == [0, 1]
    assert [(e.index, e.frames) for e in session.status.episodes] == [(0, 10), (1, 10)]


@pytest.mark.parametrize(("flag", "says"), [(["--seed", "3"], "--seed picks the twin's scenes, for --sim"),
                                            (["--realtime"], "--realtime is for --sim")])
def test_twin_only_flags_are_refused_on_a_robot_before_anything_connects(tmp_path, capsys, flag, says):
    from shallowpi.cli import main

    # No servo chain is attached here: the refusal must come first, and nothing is created.
    assert main(["record", "--robot", "arm", "--task", "wipe", "--data-root", str(tmp_path), "--dataset", "d",
                 "--no-tui", f"telemetry.address={tmp_path}/t.sock", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and err.count("\n") == 0, err
    assert not (tmp_path / "d.zarr").exists()


def test_a_refused_seed_leaves_no_new_store_behind(tmp_path, capsys):
    """The refusal advises dropping --seed; a store made before the check, left empty, then
    refused that very rerun ("already exists")."""
    from shallowpi.cli import main

    words = ["record", "--robot", "arm", "--sim", "--task", "cube_in_bowl", "--data-root", str(tmp_path),
             "--dataset", "d", "--episodes", "1", "--no-tui", f"telemetry.address={tmp_path}/t.sock",
             "record.sim_size=32x32"]
    assert main([*words, "--seed", "1000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "reaches seeds 1000..999999, eval --sim's held-out scenes; drop --seed" in err and err.count("\n") == 0, err
    assert not (tmp_path / "d.zarr").exists()


def test_first_seed_continues_past_every_stored_scene(tmp_path):
    store = make_store(tmp_path / "old.zarr", episodes=3)  # recorded before seeds were stored: 0, 1, 2
    assert first_seed(store, None, 5) == 3
    assert first_seed(store, 40, 5) == 40  # an explicit seed clear of the stored ones
    writer = store.begin_episode("t", fps=30)
    writer.add_frame(synthetic_frame(np.random.default_rng(0), 0), 0.0)
    writer.commit(extra={"seed": 17})
    assert first_seed(store, None, 5) == 18
    with pytest.raises(PlatformError, match="already holds the scenes of seed"):
        first_seed(store, 15, 5)  # 15..19 holds 17


def test_recordings_never_take_the_scenes_eval_sim_holds_out(tmp_path):
    from shallowpi.evaluate.sim_eval import SimEvalConfig
    from shallowpi.robots.sim.episode import EVAL_SEEDS

    assert SimEvalConfig().seeds[0] == EVAL_SEEDS.start == 1000  # eval --sim's default scenes
    store = make_store(tmp_path / "near.zarr", episodes=0)
    assert first_seed(store, None, 1000) == 0  # seeds 0..999: clear of the held-out ones
    writer = store.begin_episode("t", fps=30)
    writer.add_frame(synthetic_frame(np.random.default_rng(0), 0), 0.0)
    writer.commit(extra={"seed": 990})
    # A resumed session of 20 episodes would reach 1000..1010: it records past the range.
    assert first_seed(store, None, 20) == EVAL_SEEDS.stop
    assert first_seed(store, None, 9) == 991  # 991..999 still fits below
    with pytest.raises(PlatformError, match=r"--seed 995 .* eval --sim's held-out scenes") as err:
        first_seed(store, 995, 10)
    assert "\n" not in str(err.value)
    with pytest.raises(PlatformError, match="held-out"):
        first_seed(store, 1000, 1)


@pytest.mark.slow
def test_resume_refuses_another_fps_or_calibration_unless_allowed(tmp_path):
    short = ("--dataset", "demo", "--episodes", "1", "--reset-time-s", "0", "--episode-time-s", "0.5")
    first = record(tmp_path, *short)
    assert first.returncode == 0, first.stderr[-3000:]
    slower = record(tmp_path, *short, "--resume", "robot.fps=15")
    assert slower.returncode != 0 and len(slower.stderr.strip().splitlines()) == 1, slower.stderr[-2000:]
    assert "holds episodes at 30 fps, this recording at 15 fps" in slower.stderr and "new dataset" in slower.stderr

    # The store's episode as if recorded under an earlier calibration of the robot.
    store = tmp_path / "demo.zarr"
    stamp_episode(store, 0, calibration_id="cal-before")
    recalibrated = record(tmp_path, *short, "--resume")
    assert recalibrated.returncode != 0 and len(recalibrated.stderr.strip().splitlines()) == 1
    assert "calibration cal-before, this recording of calibration sim-arm" in recalibrated.stderr
    assert "--allow-mixed-calibration" in recalibrated.stderr
    assert len(EpisodeStore.open(store)) == 1  # refused before anything was written

    allowed = record(tmp_path, *short, "--resume", "--allow-mixed-calibration")
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    resumed = EpisodeStore.open(store)
    assert [e.calibration_id for e in resumed.episodes] == ["cal-before", "sim-arm"]
    assert resumed.summary.allow_mixed_calibration  # the permission is part of the store


def _start_recording(tmp_path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "sig", "--no-tui", SMALL,
                     f"telemetry.address={tmp_path}/t.sock", *args),
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(process: subprocess.Popen, text: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if text in line:
            return
        if not line and process.poll() is not None:
            raise AssertionError(f"recorder exited: {process.stderr.read()[-2000:]}")
    raise AssertionError(f"'{text}' not printed in {timeout} s")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])  # SIGHUP: the SSH session closed
def test_sigterm_stops_cleanly_and_keeps_the_episode_in_flight(tmp_path, sig):
    recorder = _start_recording(tmp_path, "--episodes", "3", "--episode-time-s", "60", "--realtime")
    _wait_for(recorder, "recording episode 0 (1/3 of this run)")
    time.sleep(1.5)
    recorder.send_signal(sig)
    out, err = recorder.communicate(timeout=60)
    assert recorder.returncode == 0, err[-2000:]
    assert "recorded 1 episode(s)" in out
    store = EpisodeStore.open(tmp_path / "sig.zarr", mode="a")
    assert len(store) == 1 and 20 <= store.episode(0).length < 60 * 30
    assert store.check() == []


@pytest.mark.slow
def test_sigkill_loses_at_most_the_episode_in_flight(tmp_path):
    recorder = _start_recording(tmp_path, "--episodes", "20", "--episode-time-s", "1", "--reset-time-s", "0")
    _wait_for(recorder, "episode 1 saved")
    recorder.send_signal(signal.SIGKILL)
    recorder.communicate(timeout=60)
    store = EpisodeStore.open(tmp_path / "sig.zarr", mode="a")  # cuts the killed episode's tail
    assert len(store) >= 2  # "saved" is printed once the writer committed it
    assert store.check() == []


class _Rig:
    """The arm on emulated servo chains with a software RealSense feeding its front camera."""

    def __init__(self, tmp_path, spec, chains):
        self.chains = chains
        self.device = SoftwareRealSense("SW-front", 64, 48, fps=30)
        self.camera = RealSenseCamera(RealSenseConfig("front", "SW-front", 64, 48, 30, warmup_frames=0,
                                                      timeout_s=0.5), open_device=self.device.open_device)
        calibration = RobotCalibration("uncalibrated", spec.name)
        self.robot = DynamixelRobot(spec, calibration, cameras={"front": self.camera})
        self.teleop = LeaderFollower(spec, calibration)
        features = robot_features(spec.joint_names, {"front": (48, 64)})
        self.store = EpisodeStore.create(tmp_path / "faults.zarr", features, StoreSettings(durable=False))
        self.writer = BackgroundWriter(self.store)
        self.feeding = threading.Event()
        self.feeding.set()
        self.paused = threading.Event()  # set: the camera sends nothing for a while (a USB hiccup)
        self._feeder = threading.Thread(target=self._feed, daemon=True)

    def _feed(self):
        i = 0
        while self.feeding.is_set():
            if not self.paused.is_set():
                self.device.inject(np.full((48, 64, 3), i % 255, np.uint8))
                i += 1
            time.sleep(1 / 30)

    def __enter__(self):
        self.camera.start()
        self._feeder.start()
        self.robot.connect()
        self.teleop.connect()
        return self

    def __exit__(self, *exc):
        self.feeding.clear()
        self.teleop.disconnect()
        self.robot.disconnect()
        self.camera.stop()
        self.writer.close()

    def session(self, spec, episodes=5):
        config = SessionConfig(task="wave", episodes=episodes, episode_time_s=0.6, reset_time_s=0.0, fps=30,
                               robot=spec.name)
        return RecordingSession(config, self.robot, self.teleop, self.writer, TickClock(30),
                                list(spec.joint_names), cameras={"front": self.camera})


def _wait_until_recording(session, index, loop, timeout=30.0):
    """Block until the loop records take `index` (or a later one, if this thread was starved
    through all of it). Timed from the loop itself, not from the writer's commit of the take
    before: under load a commit can land seconds late, and a fault injected then may fall
    after the last take (the run ends cleanly, no fault)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and loop.is_alive():
        takes = list(session.status.episodes)
        if takes and takes[-1].index >= index and takes[-1].state == "recording":
            return
        time.sleep(0.005)
    raise AssertionError(f"take {index} was not seen recording (loop {'running' if loop.is_alive() else 'ended'})")


# Fault tests run more takes than they need (the fault ends the run early), so a fault
# injected once take 1 records still lands inside a take on a loaded machine.
FAULT_EPISODES = 30


def _run_until_fault(session, inject):
    """Run the session on a thread, call `inject()` once take 1 records, and return the
    result once the loop stops (within 60 s of the injection)."""
    box = {}
    loop = threading.Thread(target=lambda: box.setdefault("result", session.run()))
    loop.start()
    try:
        _wait_until_recording(session, 1, loop)
        inject()
    except BaseException:
        session.request_stop()  # leave no loop recording behind a failed test
        loop.join(60)
        raise
    loop.join(60)
    assert not loop.is_alive(), "the loop did not stop on the fault"
    return box["result"]


def _assert_the_faulted_take_was_dropped(session, store):
    """The take in flight at the fault is discarded; every take before it is in the store."""
    last = session.status.episodes[-1]
    assert last.state == "discarded" and len(store) == last.index >= 1, (last, len(store))
    assert store.check() == []


@pytest.mark.parametrize("reset_s", [0.0, 0.2])
@pytest.mark.slow
def test_hardware_episodes_start_at_zero_and_hold_their_rows(tmp_path, reset_s):
    """On the wall clock too: each episode's first row is t = 0 and it holds round(0.5 s x
    30 Hz) = 15 rows (within one), whether a reset period separates episodes or not."""
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        config = SessionConfig(task="wave", episodes=3, episode_time_s=0.5, reset_time_s=reset_s, fps=30,
                               robot=spec.name)
        session = RecordingSession(config, rig.robot, rig.teleop, rig.writer, TickClock(30),
                                   list(spec.joint_names), cameras={"front": rig.camera})
        seen, observe, before = [], rig.robot.observe, sys.getswitchinterval()
        rig.robot.observe = lambda: (seen.append(sys.getswitchinterval()), observe())[1]
        result = session.run()
        rig.writer.close()
        assert not result.fault and len(rig.store) == 3 and rig.store.check() == []
        # The loop bounds the GIL hand-over beside the encoder threads, then restores it.
        assert set(seen) == {LOOP_SWITCH_INTERVAL_S} and sys.getswitchinterval() == before
        for index in range(3):
            ticks = rig.store.read_episode(index, ["timestamp"])["timestamp"]
            assert ticks[0] == 0.0 and abs(len(ticks) - 15) <= 1
            assert np.all(np.diff(ticks) > 0)  # a late tick (an overrun) delays the rows after it


def test_the_loop_percentiles_are_numpys_and_are_worked_out_once_a_tick(monkeypatch):
    clock = TickClock(30, window=50)
    periods = np.random.default_rng(0).uniform(0.02, 0.05, 80)
    for i, period in enumerate(periods, start=1):
        clock._periods.append(float(period))
        clock.ticks += 1
        window = periods[max(0, i - 50):i]
        assert clock.percentiles_ms() == pytest.approx(tuple(np.percentile(window, [50, 99]) * 1e3), rel=1e-12)
    # Asked again within the tick, the window is not sorted again.
    monkeypatch.setattr("shallowpi.record.clock.sorted", lambda _: pytest.fail("sorted twice"), raising=False)
    clock.percentiles_ms()
    monkeypatch.undo()
    clock.reset_stats()
    assert clock.percentiles_ms() == (0.0, 0.0)


@pytest.mark.parametrize("bus", ["follower", "leader"])
def test_a_flaky_servo_is_shown_warned_of_and_stored_with_the_take(tmp_path, bus):
    """A follower's or a leader arm's servo losing one reply in three: the take records
    whole (each read is retried), and the operator sees the retries on the loop's line,
    naming the joint, gets the warning once, and the take keeps its count (a flaky servo
    used to show nowhere but the log, until the chain failed outright)."""
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        joint = next(m.joint for m in spec.motors if m.bus == "follower" and m.id == 3)
        joint = joint if bus == "follower" else f"leader {spec.leaders[0].motors[2].joint}"
        chains[bus].flaky(3, every=3)
        published = []
        config = SessionConfig(task="wave", episodes=1, episode_time_s=1.0, reset_time_s=0.0, fps=30,
                               robot=spec.name)
        session = RecordingSession(config, rig.robot, rig.teleop, rig.writer, TickClock(30),
                                   list(spec.joint_names), cameras={"front": rig.camera},
                                   publish=lambda status: published.append((status.message, status.loop)))
        result = session.run()
        rig.writer.close()
        assert not result.fault and len(rig.store) == 1
        extra = rig.store.episode(0).extra
        assert extra["link_failed_tries"] >= 3 and extra["link_exchanges"] > 3 * extra["link_failed_tries"]
        loops = [lp for _, lp in published if lp.link_failed_tries]
        assert loops and loops[-1].link_worst == joint
        assert loops[-1].link_failed_tries - loops[-1].link_worst_failed <= SOUND_SERVO_MISSES
        warnings = {m for m, _ in published if m.startswith("servo link:")}
        assert len(warnings) == 1 and f"of them {joint}'s servo" in warnings.pop()
        assert f"servo retries {loops[-1].link_failed_tries}/" in status_line(session.status)


@pytest.mark.slow
def test_a_servo_fault_mid_episode_ends_it_and_keeps_committed_episodes(tmp_path):
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        session = rig.session(spec, episodes=FAULT_EPISODES)

        def overload():
            time.sleep(0.2)  # well inside the take
            chains["follower"].hardware_error(3, "overload")

        result = _run_until_fault(session, overload)
        rig.writer.close()
        assert "servo 3" in result.fault and "overload" in result.fault.lower()
        assert session.status.state is RecorderState.FAULT and session.status.message.startswith("FAULT")
        _assert_the_faulted_take_was_dropped(session, rig.store)


@pytest.mark.slow
def test_an_estop_while_the_loop_waits_for_a_slow_disk_turns_torque_off_at_once(tmp_path, monkeypatch):
    """Keys are read at the top of a tick; a full writer queue holds the loop inside the tick.
    The E-STOP must not wait for the disk: the wait asks for it every 0.1 s."""
    from shallowpi.data import chunk_files

    written = chunk_files.write_frames

    def slow_disk(*args, **kwargs):  # a disk far behind the camera: seconds a write
        time.sleep(3.0)
        return written(*args, **kwargs)

    monkeypatch.setattr(chunk_files, "write_frames", slow_disk)
    pending: list[Command] = []
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        rig.writer.close()
        rig.writer = BackgroundWriter(rig.store, capacity_frames=2)
        config = SessionConfig(task="wave", episodes=3, episode_time_s=30.0, reset_time_s=0.0, fps=30,
                               robot=spec.name)
        session = RecordingSession(config, rig.robot, rig.teleop, rig.writer, TickClock(30),
                                   list(spec.joint_names), cameras={"front": rig.camera},
                                   commands=lambda: [pending.pop() for _ in range(len(pending))])
        loop = threading.Thread(target=session.run)
        loop.start()
        try:
            _wait_until_recording(session, 0, loop)
            time.sleep(1.0)  # 2 frames fill the queue in a tick or two: the loop now waits on the disk
            assert all(servo.torque for servo in chains["follower"].servos.values())
            pending.append(Command.ESTOP)
            pressed = time.monotonic()
            while any(servo.torque for servo in chains["follower"].servos.values()):
                assert time.monotonic() - pressed < 1.5, "the e-stop waited for the disk"
                time.sleep(0.01)
        finally:
            session.request_stop()
            loop.join(60)
        assert not loop.is_alive()
        assert session.result.fault == "e-stop pressed; torque off, robot is safe"
        assert session.status.state is RecorderState.FAULT


@pytest.mark.slow
def test_a_camera_that_stops_mid_episode_ends_it_and_names_the_camera(tmp_path):
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        session = rig.session(spec, episodes=FAULT_EPISODES)

        def unplug():
            rig.feeding.clear()

        result = _run_until_fault(session, unplug)
        rig.writer.close()
        assert "front" in result.fault, result.fault
        _assert_the_faulted_take_was_dropped(session, rig.store)
        assert rig.store.episode(0).length == 18  # 0.6 s at 30 Hz


@pytest.mark.slow
def test_a_camera_hiccup_keeps_the_loop_running_and_the_take_says_how_many_rows_are_stale(tmp_path):
    """The camera sends nothing for 0.4 s inside the second episode: the loop keeps its
    rate (the robot no longer waits for a fresh frame), nothing faults, and that episode
    records how many rows hold a picture over three periods old; the others none."""
    with emulated("arm") as (spec, chains), _Rig(tmp_path, spec, chains) as rig:
        session = rig.session(spec)

        def hiccup():
            time.sleep(0.1)  # inside take 1 (0.6 s each, no reset between)
            rig.paused.set()
            time.sleep(0.4)
            rig.paused.clear()

        result = _run_until_fault(session, hiccup)
        rig.writer.close()
        assert not result.fault, result.fault
        assert len(rig.store) == 5 and rig.store.check() == []
        stale = [rig.store.episode(i).extra["stale_frames"] for i in range(5)]
        assert max(stale) >= 5 and stale.index(max(stale)) in (1, 2), stale  # ~9 rows of 0.4 s at 30 Hz
        assert sorted(stale)[:3] == [0, 0, 0], stale
        assert all(rig.store.episode(i).length == 18 for i in range(5))  # 0.6 s at 30 Hz: no row lost
        # The silent 0.4 s repeated its last picture on every row (a camera slower than the
        # loop does too): counted per take, none where the camera kept up.
        repeated = [rig.store.episode(i).extra["repeated_pictures"] for i in range(5)]
        assert repeated[stale.index(max(stale))] >= max(stale), (repeated, stale)


@pytest.mark.parametrize("setting", ["episode_time_s", "reset_time_s", "fps"])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_a_session_refuses_durations_and_rates_that_are_not_finite(setting, value):
    """nan passes every comparison and inf every lower bound: an infinite reset countdown
    reached the dashboards, which could not draw it."""
    with pytest.raises(PlatformError, match=r"\(finite\) are needed"):
        SessionConfig(task="wave", **{setting: value})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_between_the_robots_connect_and_its_session_runs_the_cleanup(sig):
    """By default SIGTERM and SIGHUP end the process at once: a recorder stopped while it
    created its store (torque already on) left the servos holding with nothing attached.
    From the connect on they raise KeyboardInterrupt, whose cleanup turns torque off."""
    from shallowpi.commands.console import interrupt_on_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        interrupt_on_signals()
        with pytest.raises(KeyboardInterrupt, match=f"signal {int(sig)}"):
            signal.raise_signal(sig)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_terminal_closed_under_a_recording_leaves_its_episodes_and_its_exit_code(tmp_path, monkeypatch):
    """SIGHUP (an SSH session dropped): every print fails with EIO. The closing lines of
    `platform record` (the summary) raised it out of a run whose takes were saved: a
    traceback and exit 1. The prints the terminal refuses are dropped; the exit code says
    how the run ended."""
    import errno
    import io
    import sys

    from shallowpi.cli import main
    from shallowpi.data.store import EpisodeStore
    from shallowpi.record import rig

    class ClosedTerminal(io.TextIOBase):
        def write(self, text: str) -> int:
            raise OSError(errno.EIO, "Input/output error")

    close = rig.Rig.close

    def then_the_terminal_goes(self, *args, **kwargs):
        close(self, *args, **kwargs)
        monkeypatch.setattr(sys, "stdout", ClosedTerminal())

    monkeypatch.setattr(rig.Rig, "close", then_the_terminal_goes)
    assert main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                 str(tmp_path), "--dataset", "d", "--episodes", "1", "--reset-time-s", "0", "--no-tui",
                 "record.sim_size=64x64", f"telemetry.address={tmp_path}/t.sock"]) == 0
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 1 and store.check() == []
