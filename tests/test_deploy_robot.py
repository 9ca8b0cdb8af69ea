"""`platform deploy` without --sim: the executor drives the robot through its real drivers,
dynamixel-sdk on emulated servo chains (ptys) and pyrealsense2's software device as the
RealSense camera the policy reads."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from deploy_fixtures import tiny_checkpoint
from dxl_fixtures import emulated, robot_spec
from shallowpi.cli import parse_command
from shallowpi.data.features import robot_features
from shallowpi.data.store import EpisodeStore
from shallowpi.errors import PlatformError
from shallowpi.hardware.realsense_software import SoftwareRealSense

SIZE = {f"robot.cameras.{role}.{k}": v for role in ("front", "wrist") for k, v in (("width", 64), ("height", 48))}


class _FrontCamera:
    """A software RealSense streaming a moving gradient at 30 Hz until closed; while
    `paused` is set it sends nothing (a USB hiccup)."""

    def __init__(self) -> None:
        self.device = SoftwareRealSense("SW-front", 64, 48, fps=30)
        self._on = threading.Event()
        self.paused = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def _feed(self) -> None:
        i = 0
        while self._on.is_set():
            if not self.paused.is_set():
                frame = np.add.outer(np.arange(48), np.arange(64) + i).astype(np.uint8)
                self.device.inject(np.repeat(frame[..., None], 3, -1))
                i += 1
            time.sleep(1 / 30)

    def __enter__(self) -> _FrontCamera:
        self._on.set()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._on.clear()
        self._thread.join(5)


def _watch_executor(address, until, timeout_s: float = 120) -> None:
    """Read the executor's telemetry at `address` (once it exists) until `until(status)` is
    true for an ExecutorStatus, or `timeout_s` has passed."""
    from shallowpi.telemetry.executor_status import ExecutorStatus
    from shallowpi.telemetry.subscriber import TelemetrySubscriber

    deadline = time.monotonic() + timeout_s
    while not address.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    with TelemetrySubscriber(str(address), connect_timeout_s=60) as sub:
        for status in sub:
            if (isinstance(status, ExecutorStatus) and until(status)) or time.monotonic() > deadline:
                return


def _deploy_words(ckpt, spec, tmp_path, *extra: str) -> list[str]:
    return ["deploy", "--policy", str(ckpt), "--robot", "arm", "--backend", "torch", "--no-tui", "--yes",
            *extra, f"robot.buses.follower.port={spec.buses['follower'].port}",
            *(f"{k}={v}" for k, v in SIZE.items()), f"telemetry.address={tmp_path}/deploy.sock"]


@pytest.mark.slow
def test_without_sim_the_executor_drives_the_servos_and_records_what_it_sent(tmp_path, capsys):
    """Two 1-second episodes on the wall clock, each after a 0.3 s hold to set the scene:
    the servos follow the commands (their measured positions track the actions sent a
    tick earlier), torque is off at the end, and the recorded store holds both episodes
    with the camera's frames, how each ended, the robot's calibration id and no success
    flag (nothing judges it on the robot)."""
    arm = robot_spec("arm")
    # trained on episodes of this (un)calibrated arm: the calibration check passes
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"])})
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave hello", "--episodes", "2",
                                           "--episode-time-s", "1", "--reset-time-s", "0.3",
                                           "--allow-uncalibrated", "--record", str(tmp_path / "deployed")))
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        torque_after = [s.torque for s in chains["follower"].servos.values()]
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the arm (follower on /dev/pts/" in out and "cameras front" in out
    assert "is not calibrated (--allow-uncalibrated)" in out
    assert "training store is not on this machine" in out  # the tiny checkpoint names none
    for episode in (1, 2):  # the robot holds before the first episode too
        assert f"set the scene: episode {episode} starts in 0.3 s" in out
    assert out.count(": not judged (") == 2 and "2 episodes, success not judged" in out
    # No seed on the robot: it picks the twin's scenes, and means nothing for the one in front of it.
    assert "episode 1/2: not judged (" in out and "episode 2/2: not judged (" in out, out
    assert not any(torque_after), "torque stayed on after the deploy ended"
    assert "torque is off: the arms no longer hold their pose" in out  # and the operator is told
    store = EpisodeStore.open(tmp_path / "deployed.zarr")
    assert len(store) == 2
    for index in range(2):
        info, rows = store.episode(index), store.read_episode(index)
        assert info.length == 30, info.length  # 1 s at 30 Hz
        assert info.calibration_id == "uncalibrated" and info.success is None and info.task == "wave hello"
        assert info.extra["ended"] == "time limit"
        assert info.extra["camera_serials"] == {"front": "SW-front"}  # as `platform record` names them
        assert rows["observation.images.front"].shape == (30, 48, 64, 3)
        assert rows["observation.images.front"].std() > 0  # the camera's frames, not a blank
        sent, measured = rows["action"], rows["observation.state"]
        assert np.ptp(sent, axis=0).max() > 0.05  # the policy's commands moved something
        # The emulated servos reach each goal within a tick: what the bus reports back is a
        # goal written one tick before, so the commands did reach the servos. On a loaded
        # machine the servo thread can run a tick or two late (seen once in CI beside a
        # training run: 0.078 at a lag of one tick), so a row may match an older command.
        lagged = np.stack([np.abs(measured[3:] - sent[3 - k:-k]) for k in (1, 2, 3)])  # [lag, T-3, J]
        assert lagged.min(axis=0).max() < 0.02, lagged.min(axis=0).max()


@pytest.mark.slow
def test_a_flaky_servo_is_counted_in_the_deploy_summary_and_its_json(tmp_path, capsys):
    """A follower servo losing one reply in four: the episode runs (each read is retried),
    and the summary and --json count the exchanges retried, as the dashboard's loop line does."""
    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"])})
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        chains["follower"].flaky(2, every=4)
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "1",
                                           "--episode-time-s", "1", "--reset-time-s", "0", "--allow-uncalibrated",
                                           "--json", str(tmp_path / "summary.json")))
        code = args.run(args, camera_devices=lambda: [camera.device.device])
    out = capsys.readouterr().out
    assert code == 0, out
    retried = re.search(r"servo link: (\d+) of (\d+) exchanges retried", out)
    assert retried and 3 <= int(retried[1]) < int(retried[2]), out
    episode = json.loads((tmp_path / "summary.json").read_text())["per_episode"][0]
    assert 0 < episode["link_failed_tries"] <= int(retried[1]) and episode["link_exchanges"] > 30


@pytest.mark.slow
def test_a_camera_hiccup_holds_the_robot_and_the_episode_goes_on(tmp_path, capsys):
    """The camera sends nothing for 0.6 s a second into the episode: the executor's
    watchdog holds the servos (frames older than deploy.max_frame_age_s, 0.25 s), resumes
    on frames that come back, and the episode runs to its time limit. The robot used to
    wait inside observe() for a frame under five periods old (raising after the camera's
    2 s timeout): the control loop stalled, the watchdog never held and counted nothing."""
    from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus

    arm = robot_spec("arm")
    # trained under another calibration, run on the word of --allow-calibration-change
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["arm-earlier"])})
    report = tmp_path / "run.json"
    states: list[ExecutorState] = []
    with emulated("arm") as (spec, _), _FrontCamera() as camera:
        def pause_the_camera_mid_episode() -> None:
            def running(status: ExecutorStatus) -> bool:
                states.append(status.state)
                return status.state is ExecutorState.RUNNING

            _watch_executor(tmp_path / "deploy.sock", running)
            time.sleep(1.0)
            camera.paused.set()
            time.sleep(0.6)
            camera.paused.clear()

        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "1",
                                           "--episode-time-s", "4", "--reset-time-s", "0.3",
                                           "--allow-uncalibrated", "--allow-calibration-change",
                                           "--json", str(report)))
        pauser = threading.Thread(target=pause_the_camera_mid_episode, daemon=True)
        pauser.start()
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        pauser.join(5)
    out = capsys.readouterr().out
    assert code == 0, out
    assert ("warning: the policy learned from episodes recorded under calibration arm-earlier but robot 'arm' is "
            "calibrated as uncalibrated (--allow-calibration-change)") in out
    assert ExecutorState.RUNNING in states, states
    data = json.loads(report.read_text())
    episode = data["per_episode"][0]
    assert episode["ended"] == "time limit", episode
    assert data["safety"]["faults"] == 0
    # 0.6 s without frames at 30 Hz: held from 0.25 s on, ~10 ticks (fewer if ticks overran)
    assert data["safety"]["stale_frames"] >= 3 and data["safety"]["holds"] >= 1, data["safety"]


def test_with_yes_a_camera_fault_holds_for_the_fault_hold_then_torque_off_and_exit_1(tmp_path, capsys):
    """`--yes` is for a run nobody attends: after the last episode torque goes off at once,
    but after a camera fault the robot held with torque on until Ctrl-C, and an overnight
    script hung with the arm powered. It holds deploy.fault_hold_s, then the run ends:
    torque off, exit 1, said in a line. (A rescue sends SIGINT, the operator's stop, should
    the hold never end: the test fails instead of hanging.)"""
    from shallowpi.telemetry.executor_status import ExecutorState

    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"])})
    report = tmp_path / "run.json"
    finished, rescued = threading.Event(), threading.Event()
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        def camera_gone_mid_episode() -> None:
            _watch_executor(tmp_path / "deploy.sock", lambda status: status.state is ExecutorState.RUNNING)
            camera.paused.set()  # for good: a second of silence is a camera fault

        def rescue() -> None:
            if not finished.wait(45):
                rescued.set()
                os.kill(os.getpid(), signal.SIGINT)  # deploy's handler: the operator's stop ends the hold

        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "2",
                                           "--episode-time-s", "5", "--reset-time-s", "0", "--allow-uncalibrated",
                                           "--json", str(report), "deploy.fault_hold_s=0.5"))
        threading.Thread(target=camera_gone_mid_episode, daemon=True).start()
        threading.Thread(target=rescue, daemon=True).start()
        started = time.monotonic()
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        took = time.monotonic() - started
        finished.set()
        torque_after = [s.torque for s in chains["follower"].servos.values()]
    out = capsys.readouterr().out
    assert not rescued.is_set(), f"the hold after the fault never ended ({took:.0f} s): {out}"
    assert code == 1, out
    assert "then torque goes off" in out and "for 0.5 s (--yes: deploy.fault_hold_s)" in out
    assert "nobody ended the hold in 0.5 s (--yes: deploy.fault_hold_s): torque goes off, exit 1" in out
    assert not any(torque_after) and "torque is off" in out
    data = json.loads(report.read_text())
    assert data["safety"]["faults"] == 1 and data["episodes"] == 1 and data["complete"] is False
    assert data["per_episode"][0]["ended"] == "fault"


# Run in its own process: without a handler SIGTERM kills the process that gets it.
_SIGTERM_AFTER_CONNECT = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_deploy_robot import _FrontCamera, _deploy_words
from deploy_fixtures import tiny_checkpoint
from dxl_fixtures import emulated, robot_spec
from shallowpi.cli import parse_command
from shallowpi.deploy import executor

class SigtermAtItsStart(executor.Executor):  # just after the connect: torque is on
    def __init__(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        super().__init__(*args, **kwargs)

executor.Executor = SigtermAtItsStart
tmp = Path({tmp!r})
ckpt = tiny_checkpoint(tmp / "ckpt", state=len(robot_spec("arm").joints), cameras=("front",))
with emulated("arm") as (spec, chains), _FrontCamera() as camera:
    servos = list(chains["follower"].servos.values())
    args = parse_command(_deploy_words(ckpt, spec, tmp, "--task", "wave", "--allow-uncalibrated"))
    try:
        args.run(args, camera_devices=lambda: [camera.device.device])
    except BaseException as exc:
        print("raised", type(exc).__name__)
    print("torque on after the run:", any(s.torque for s in servos))
    print("SIGTERM handler given back:", signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
"""


def test_sigterm_between_the_connect_and_the_runs_own_handlers_turns_torque_off(tmp_path):
    """deploy took the signals over only once its executor was made, after the robot's
    connect: a SIGTERM (or SIGHUP) in between killed it with every servo holding."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import subprocess_env

    script = _SIGTERM_AFTER_CONNECT.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], env=subprocess_env(OMP_NUM_THREADS="1"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert done.stdout.splitlines()[-3:] == ["raised KeyboardInterrupt", "torque on after the run: False",
                                             "SIGTERM handler given back: True"], done.stdout + done.stderr[-2000:]


@pytest.mark.slow
def test_while_the_robot_holds_for_the_scene_the_dashboard_counts_down_and_a_stop_ends_it(tmp_path, capsys):
    """During the 30 s hold before the first episode the executor publishes state "reset"
    with the seconds left, falling as the hold goes on (the dashboard shows the countdown);
    SIGINT inside the hold stops the run within a couple of seconds, not at the hold's end:
    no episode, torque off, exit 0, and the signal handlers are the caller's again."""
    from shallowpi.telemetry.executor_status import ExecutorState, ExecutorStatus

    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",))
    handler_before = signal.getsignal(signal.SIGINT)
    sent_at: list[float] = []
    countdown: list[float] = []
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        servos = list(chains["follower"].servos.values())

        def watch_the_countdown_then_interrupt() -> None:
            def two_seconds_counted(status: ExecutorStatus) -> bool:
                if status.state is ExecutorState.RESET:
                    countdown.append(status.reset_left_s)
                return len(countdown) > 0 and countdown[0] - countdown[-1] >= 2.0

            _watch_executor(tmp_path / "deploy.sock", two_seconds_counted)
            sent_at.append(time.monotonic())
            os.kill(os.getpid(), signal.SIGINT)

        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "2",
                                           "--reset-time-s", "30", "--allow-uncalibrated"))
        watcher = threading.Thread(target=watch_the_countdown_then_interrupt, daemon=True)
        watcher.start()
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        ended_at = time.monotonic()
        watcher.join(5)
        torque_after = [s.torque for s in servos]
    out = capsys.readouterr().out
    assert code == 0, out
    assert "set the scene: episode 1 starts in 30 s" in out
    assert countdown and 25 < countdown[0] <= 30, countdown[:3]
    assert countdown[0] - countdown[-1] >= 2.0 and countdown == sorted(countdown, reverse=True)
    assert sent_at and ended_at - sent_at[0] < 2.0, "the stop waited for the hold to end"
    assert not any(torque_after)
    assert signal.getsignal(signal.SIGINT) is handler_before
    assert "0 episodes, success not judged" in out


def test_without_sim_what_does_not_fit_the_robot_is_one_line_before_any_port_opens(tmp_path):
    """The instruction is required; the policy's state size, joint order and cameras must be the robot's;
    its training store's rate and its frames' aspect ratio must be the robot's; the robot must be calibrated unless
    --allow-uncalibrated. (The ports are the config's /dev/ttyACM*: nothing opens them.)"""
    arm = robot_spec("arm")
    store = EpisodeStore.create(tmp_path / "at15.zarr", robot_features(arm.joint_names, {"front": (48, 64)}))
    episode = store.begin_episode("wave", robot="arm", calibration_id="c", fps=15)
    episode.add_frame({"observation.state": np.zeros(7, np.float32), "action": np.zeros(7, np.float32),
                       "observation.images.front": np.zeros((48, 64, 3), np.uint8)}, 0.0)
    episode.commit()
    store.close()
    seven = tiny_checkpoint(tmp_path / "seven", state=7, cameras=("front",))
    at15 = tiny_checkpoint(tmp_path / "at15", state=7, cameras=("front",), meta={"dataset": str(tmp_path / "at15.zarr")})
    # the rate the checkpoint records is checked with its store gone
    said15 = tiny_checkpoint(tmp_path / "said15", state=7, cameras=("front",), meta={"fps": "15.0"})
    five = tiny_checkpoint(tmp_path / "five", state=5, cameras=("front",))
    side = tiny_checkpoint(tmp_path / "side", state=7, cameras=("side",))
    swapped = [arm.joint_names[1], arm.joint_names[0], *arm.joint_names[2:]]  # same sizes, two servos swapped
    permuted = tiny_checkpoint(tmp_path / "permuted", state=7, cameras=("front",), meta={"joint_names": json.dumps(swapped)})
    # trained on episodes recorded under another calibration than the robot's (none here)
    recalibrated = tiny_checkpoint(tmp_path / "recalibrated", state=7, cameras=("front",),
                                   meta={"calibrations": json.dumps(["arm-20261201T090000Z-a1b2c3"])})
    # trained on 4:3 frames (recorded in the checkpoint: no store needed) against 64x48 cameras
    # set to 16:9 ones; a frame of the same aspect at another size only resizes
    widescreen = tiny_checkpoint(tmp_path / "wide", state=7, cameras=("front",),
                                 meta={"camera_shapes": json.dumps({"front": [360, 640]})})
    same_aspect = tiny_checkpoint(tmp_path / "same", state=7, cameras=("front",),
                                  meta={"camera_shapes": json.dumps({"front": [480, 640]}), "fps": "15.0"})
    cases = [(seven, ["--allow-uncalibrated"], "pass the instruction to give the policy: --task"),
             (widescreen, ["--task", "wave", "--allow-uncalibrated"],
              "camera 'front' of robot 'arm' gives 64x48 frames but the policy was trained on 640x360: another "
              "aspect ratio, so other black bars and scale in its 16x16 input (16x12 of picture instead of 16x9)"),
             (same_aspect, ["--task", "wave", "--allow-uncalibrated"], "recorded at 15 Hz"),
             (seven, ["--task", "wave " * 40, "--allow-uncalibrated"], "over the policy's text budget"),
             (five, ["--task", "wave"], "state/action sizes 5/5 but robot 'arm' has 7 joints"),
             (side, ["--task", "wave"], "reads camera(s) ['side'] that robot 'arm' lacks"),
             (permuted, ["--task", "wave"], f"the policy was trained on joints {swapped}, robot 'arm' has"),
             (seven, ["--task", "wave"], "robot 'arm' has no calibration file"),
             (at15, ["--task", "wave", "--allow-uncalibrated"], "recorded at 15 Hz but robot 'arm' runs at 30 Hz"),
             (said15, ["--task", "wave", "--allow-uncalibrated"],
              "recorded at 15 Hz but robot 'arm' runs at 30 Hz; pass robot.fps=15 to match"),
             (recalibrated, ["--task", "wave", "--allow-uncalibrated"],
              "the policy learned from episodes recorded under calibration arm-20261201T090000Z-a1b2c3 but robot "
              "'arm' is calibrated as uncalibrated: joint positions would be off by however far the zeros moved; "
              "record under this calibration and retrain, or pass --allow-calibration-change if the zeros did not "
              "move")]
    for ckpt, extra, message in cases:
        args = parse_command(_deploy_words(ckpt, arm, tmp_path, *extra))
        with pytest.raises(PlatformError, match=re.escape(message)):  # ConfigError, CalibrationError: one line each
            args.run(args)
    # The backend is checked against the policy's reference chunks before anything connects:
    # a bundle without them (built before they were kept) is refused on the robot, and one
    # whose backend computes other chunks (here its reference moved instead) too.
    import shutil

    from shallowpi.deploy.bundle import MANIFEST, build_bundle, write_manifest
    from shallowpi.deploy.reference import REFERENCE

    def rewritten(folder):
        manifest = json.loads((folder / MANIFEST).read_text())
        write_manifest(folder, {k: v for k, v in manifest.items() if k not in ("format", "version", "files")},
                       manifest["version"])
        return folder

    built = build_bundle(seven, tmp_path / "new.bundle", graphs=()).path
    old = shutil.copytree(built, tmp_path / "old.bundle")
    (old / REFERENCE).unlink()
    moved = shutil.copytree(built, tmp_path / "moved.bundle")
    with np.load(moved / REFERENCE) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["actions"] = arrays["actions"] + 1.0  # a whole std or more of every tiny-policy joint
    np.savez_compressed(moved / REFERENCE, **arrays)
    camera = SoftwareRealSense("SW-front", 64, 48, fps=30)  # found, never started
    for bundle, message in ((rewritten(old), "has no reference chunks (built before they were kept), so nothing would "
                                             "check the torch backend against the policy before the robot moves"),
                            (rewritten(moved), "differs from the torch policy's float32 chunk by")):
        args = parse_command(_deploy_words(bundle, arm, tmp_path, "--task", "wave", "--allow-uncalibrated"))
        with pytest.raises(PlatformError, match=re.escape(message)):
            args.run(args, camera_devices=lambda: [camera.device])
    # --speed-scale only slows the robot, and only the robot
    for extra, message in ((["--speed-scale", "2"], "--speed-scale must be in (0, 1]: it can only slow the robot"),
                           (["--sim", "--speed-scale", "0.5"], "--speed-scale, --allow-uncalibrated")):
        args = parse_command(_deploy_words(seven, arm, tmp_path, "--task", "wave", *extra))
        with pytest.raises(PlatformError, match=re.escape(message)):
            args.run(args)
    # Without --yes it waits for Enter before the robot first moves: with no terminal to
    # press it on (pytest's stdin is none), refused before any port opens.
    words = [w for w in _deploy_words(seven, arm, tmp_path, "--task", "wave", "--allow-uncalibrated") if w != "--yes"]
    args = parse_command(words)
    with pytest.raises(PlatformError, match=r"on the robot deploy waits for Enter before the robot first moves, and "
                                            r"stdin is not a terminal: run it in one, or pass --yes"):
        args.run(args)


@pytest.mark.slow
def test_without_yes_the_robot_holds_until_enter_is_pressed_on_its_terminal(tmp_path, capsys, monkeypatch):
    """The robot's first motion (to the start pose, then the policy) came a few seconds after
    launch, unannounced. Now, the backend warm and torque on, the robot holds and the
    command waits for Enter on its terminal (a pseudo-terminal here): the servos' goals do
    not change while it waits (an Enter typed during the warm-up is no answer), and the
    episode runs once Enter is pressed. After the last
    episode torque went off at once, dropping the arm wherever it ended: it holds, torque
    on, until Enter again."""
    import pty
    import sys

    from shallowpi.commands.deploy_holds import WAITING_FOR_GO
    from shallowpi.telemetry.executor_status import ExecutorState

    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",))
    main, side = pty.openpty()
    monkeypatch.setattr(sys, "stdin", os.fdopen(side, "r"))
    waited: list[dict] = []
    held: list[list[bool]] = []
    states: list = []  # the executor's, as published until it waited for Enter
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        servos = chains["follower"].servos

        def press_enter_later() -> None:
            def waiting_for_go(status) -> bool:
                states.append(status.state)
                return status.message == WAITING_FOR_GO

            _watch_executor(tmp_path / "deploy.sock", waiting_for_go)  # the Enter typed ahead did not answer
            waited.append({i: s.get("goal_position") for i, s in servos.items()})
            time.sleep(1.5)  # an episode of 1 s would be under way by now
            waited.append({i: s.get("goal_position") for i, s in servos.items()})
            os.write(main, b"\n")
            # published by the hold itself, after it dropped what was typed during the episode
            _watch_executor(tmp_path / "deploy.sock", lambda status: status.state is ExecutorState.DONE
                            and "holding with torque on" in status.message)
            time.sleep(0.5)
            held.append([s.torque for s in servos.values()])
            os.write(main, b"\n")

        words = [w for w in _deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "1",
                                          "--episode-time-s", "1", "--reset-time-s", "0", "--allow-uncalibrated")
                 if w != "--yes"]
        args = parse_command(words)
        os.write(main, b"\n")  # pressed during the warm-up ("is it alive?"): no answer to a question not yet asked
        presser = threading.Thread(target=press_enter_later, daemon=True)
        presser.start()
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        presser.join(5)
        after = {i: s.get("goal_position") for i, s in servos.items()}
        torque_after = [s.torque for s in servos.values()]
    os.close(main)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "the robot holds; on Enter it moves to its start pose, then runs the policy for 1 episode(s)" in out
    assert len(waited) == 2 and waited[0] == waited[1], "the robot moved before Enter"
    assert states and ExecutorState.RUNNING not in states and ExecutorState.HOMING not in states
    assert "is not calibrated" in out and out.count("the robot holds; on Enter it moves") == 1
    assert after != waited[1], "the policy never moved the robot after Enter"
    assert "1 episodes, success not judged" in out, out
    assert "the episodes are done; the robot holds its pose with torque on: support it, then press Enter" in out
    assert held and all(held[0]), "torque went off before the operator released the arm"
    assert not any(torque_after)


def test_the_robots_port_overrides_are_checked_against_the_robot_that_runs(tmp_path):
    """`--robot humanoid robot.buses.left_arm.port=PATH` (the README's way to name a port) was
    checked against the default robot's config first and refused ("did you mean
    robot.buses.leader.port?"): every humanoid or bimanual deploy on renamed ports. Now the
    humanoid, its ports renamed, reaches its own checks (here: an arm's policy does not fit
    it, before any port opens); in the twin without --robot the store names the robot, so its
    keys wait for it."""
    humanoid = robot_spec("humanoid")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("head",))  # the tiny preset holds 8 at most
    ports = [f"robot.buses.{bus}.port={tmp_path}/{bus}" for bus in humanoid.buses]
    args = parse_command(["deploy", "--policy", str(ckpt), "--robot", "humanoid", "--backend", "torch", "--no-tui",
                          "--yes", "--task", "wave", *ports, f"telemetry.address={tmp_path}/deploy.sock"])
    with pytest.raises(PlatformError, match=re.escape("state/action sizes 7/7 but robot 'humanoid' has 19 joints")):
        args.run(args)
    args = parse_command(["deploy", "--policy", str(tmp_path / "none"), "--sim", "direct", "--no-tui", *ports])
    with pytest.raises(PlatformError, match=re.escape(f"no policy at {tmp_path / 'none'}")):
        args.run(args)


def test_camera_aspects_that_letterbox_to_the_same_picture_pass_and_the_flag_runs_another():
    from shallowpi.policy.fit import aspect_mismatch

    # 848x480 is 0.6 % wider than 16:9: under a pixel of picture at 224 (it was refused).
    assert aspect_mismatch({"front": (360, 640)}, {"front": (480, 848)}, "robot 'arm'", 224) is None
    assert aspect_mismatch({"front": (480, 640)}, {"front": (960, 1280)}, "robot 'arm'", 224) is None  # a size only
    assert "224x168 of picture instead of 224x224" in aspect_mismatch({"front": (64, 64)}, {"front": (480, 640)},
                                                                          "robot 'arm'", 224)


def test_allow_aspect_change_runs_past_the_aspect_check_with_a_warning(tmp_path, capsys):
    arm = robot_spec("arm")
    wide = tiny_checkpoint(tmp_path / "wide", state=7, cameras=("front",),
                           meta={"camera_shapes": json.dumps({"front": [360, 640]})})
    args = parse_command(_deploy_words(wide, arm, tmp_path, "--task", "wave", "--allow-uncalibrated",
                                       "--allow-aspect-change"))
    with pytest.raises(PlatformError) as err:  # it goes on to look for the robot's cameras
        args.run(args, camera_devices=lambda: [])
    assert "aspect" not in str(err.value)
    out = capsys.readouterr().out
    assert "warning: camera 'front' of robot 'arm' gives 64x48 frames" in out and "(--allow-aspect-change)" in out


@pytest.mark.parametrize("clash", ["cameras", "fps"])
def test_a_record_store_that_does_not_fit_is_refused_before_any_port_opens(tmp_path, clash):
    """--record opened an existing store as it was: one holding another camera set failed
    at the first tick (the episode a fault, the arm powered), one of another rate or format
    took the episodes anyway. It is checked as `platform record --resume` checks, first."""
    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"])})
    cameras = {"front": (48, 64), "wrist": (48, 64)} if clash == "cameras" else {"front": (48, 64)}
    store = EpisodeStore.create(tmp_path / "deployed.zarr", robot_features(arm.joint_names, cameras, arm.joint_kinds))
    if clash == "fps":  # one episode at 15 Hz already in it
        episode = store.begin_episode("earlier", fps=15.0, calibration_id="uncalibrated")
        episode.add_frame({"observation.state": np.zeros(len(arm.joints), np.float32),
                           "action": np.zeros(len(arm.joints), np.float32),
                           "observation.images.front": np.zeros((48, 64, 3), np.uint8)}, 0.0)
        episode.commit()
    store.close()
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave hello", "--episodes", "1",
                                           "--allow-uncalibrated", "--record", str(tmp_path / "deployed")))
        with pytest.raises(PlatformError) as refused:
            args.run(args, camera_devices=lambda: [camera.device.device])
        assert not any(s.torque for s in chains["follower"].servos.values())
    expected = "holds other features than this robot records" if clash == "cameras" else "holds episodes at 15 fps"
    assert expected in str(refused.value)
    assert len(EpisodeStore.open(tmp_path / "deployed.zarr")) == (1 if clash == "fps" else 0)


def test_on_the_robot_each_episode_starts_from_the_demonstrations_start_pose(tmp_path, capsys):
    """The checkpoint records the pose its demonstrations started from; on the emulated arm
    (at rest at zero) each of two episodes begins there, the second after the first ended
    wherever the policy took the arm."""
    arm = robot_spec("arm")
    start = [0.3, 0.1, -0.4, 0.2, 0.0, 0.1, 0.8][: len(arm.joints)]
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",),
                           meta={"calibrations": json.dumps(["uncalibrated"]), "start_state": json.dumps(start)})
    with emulated("arm") as (spec, _), _FrontCamera() as camera:
        args = parse_command(_deploy_words(ckpt, spec, tmp_path, "--task", "wave hello", "--episodes", "2",
                                           "--episode-time-s", "0.5", "--reset-time-s", "0.1",
                                           "--allow-uncalibrated", "--record", str(tmp_path / "deployed")))
        code = args.run(args, camera_devices=lambda: [camera.device.device])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "goes to the demonstrations' start pose at 25% of its top speed" in out
    store = EpisodeStore.open(tmp_path / "deployed.zarr")
    step = np.array([j.max_velocity for j in arm.joints]) / arm.fps
    for index in range(2):
        first = store.read_episode(index)["observation.state"][0]
        assert np.all(np.abs(first - start) <= step + 0.02), (index, first)  # within a tick (and the servo's lag)


@pytest.mark.slow
def test_a_servo_fault_while_the_robot_holds_after_the_last_episode_is_counted_as_a_fault(tmp_path, capsys, monkeypatch):
    """After the last episode the robot holds until released; a servo overloading there was
    e-stopped: the run shown as stopped by the operator, exit 0 and --json faults 0. It is
    a fault as in a tick: counted (exit 1, faults 1), shown, its bus released (the arm's one
    bus: nothing left holding, so nothing to wait for), and torque is off at the end."""
    import pty
    import sys

    from shallowpi.commands.deploy_holds import WAITING_FOR_GO
    from shallowpi.telemetry.executor_status import ExecutorState

    arm = robot_spec("arm")
    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=len(arm.joints), cameras=("front",))
    main, side = pty.openpty()
    monkeypatch.setattr(sys, "stdin", os.fdopen(side, "r"))
    report = tmp_path / "run.json"
    with emulated("arm") as (spec, chains), _FrontCamera() as camera:
        def overload_in_the_last_hold() -> None:
            _watch_executor(tmp_path / "deploy.sock", lambda status: status.message == WAITING_FOR_GO)
            os.write(main, b"\n")
            _watch_executor(tmp_path / "deploy.sock", lambda status: status.state is ExecutorState.DONE
                            and "holding with torque on" in status.message)
            chains["follower"].hardware_error(3, "overload")

        words = [w for w in _deploy_words(ckpt, spec, tmp_path, "--task", "wave", "--episodes", "1",
                                          "--episode-time-s", "0.5", "--reset-time-s", "0", "--allow-uncalibrated",
                                          "--json", str(report))
                 if w != "--yes"]
        args = parse_command(words)
        faulter = threading.Thread(target=overload_in_the_last_hold, daemon=True)
        faulter.start()
        code = args.run(args, camera_devices=lambda: [camera.device.device])
        faulter.join(5)
        torque_after = [s.torque for s in chains["follower"].servos.values()]
    os.close(main)
    out = capsys.readouterr().out
    assert code == 1, out
    data = json.loads(report.read_text())
    assert data["safety"]["faults"] == 1 and data["per_episode"][0]["ended"] == "time limit"
    assert "[deploy] fault: " in out and "overload" in out and "e-stopped" not in out
    assert not any(torque_after)
