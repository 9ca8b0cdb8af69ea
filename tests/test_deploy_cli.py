"""`platform deploy` end to end: a checkpoint trained in the twin, run by the executor there; its `--record` recorder."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi import config
from shallowpi.data.store import EpisodeStore
from shallowpi.deploy.executor_control import EpisodeReport
from shallowpi.errors import ConfigError

SIZE = (40, 32)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two 1-second expert episodes recorded in the twin, and `tiny` trained on them."""
    root = tmp_path_factory.mktemp("deploy")
    recorded = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(root), "--dataset", "demo", "--episodes", "2",
                     "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui",
                     f"record.sim_size={SIZE[0]}x{SIZE[1]}", f"telemetry.address={root}/r.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    trainer = subprocess.run(
        platform_cmd("train", "--dataset", str(root / "demo.zarr"), "--policy", "tiny", "--runs-dir",
                     str(root / "runs"), "--run", "tiny", "--steps", "4", "--no-progress"),
        env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert trainer.returncode == 0, trainer.stderr[-2000:]
    return {"root": root, "ckpt": root / "runs" / "tiny" / "checkpoints" / "step_000004"}


def deploy(trained, *args: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        platform_cmd("deploy", "--policy", str(trained["ckpt"]), "--episodes", "1", "--episode-time-s", "1",
                     "--no-tui", f"telemetry.address={trained['root']}/d.sock", *args),
        env=subprocess_env(OMP_NUM_THREADS="1", **(env or {})), capture_output=True, text=True, timeout=timeout)


def test_deploy_thor_on_this_machine_runs_the_twin_with_the_best_local_backend(trained, tmp_path):
    pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) not installed: pip install 'shallowpi[export]'")
    report = tmp_path / "run.json"
    result = deploy(trained, "--jetson", "thor", "--sim", "--json", str(report),
                    env={"SHALLOWPI_SYSROOT": str(tmp_path)})  # an empty root: not a Jetson
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert out.splitlines()[0] == ("this machine is not a Jetson thor (no /etc/nv_tegra_release): running the "
                                   "best local backend, onnxruntime on cpu (profile cpu)")
    assert "building the deploy bundle" in out and "backend onnxruntime on CPU (fp32)" in out  # where it runs, not what thor asks
    # checked against the torch policy's chunk on the bundle's reference before anything connected
    assert re.search(r"^parity: \d\.\de[-+]\d\d action std from the torch policy's float32 chunks", out, re.M), out
    assert ("episode 1/1 seed 1000:" in out and "success 0/1 |" in out) or "success 1/1 |" in out
    data = json.loads(report.read_text())
    assert data["episodes"] == 1 and data["strategy"] == "rtc" and data["profile"] == "cpu"
    assert data["complete"] is True and data["episodes_asked"] == 1 and data["parity_std"] < 1e-3
    assert set(data["safety"]) == {"clamps", "seam_trips", "holds", "stale_frames", "faults"}
    assert data["safety"]["faults"] == 0 and data["per_episode"][0]["ticks"] > 0
    episode = data["per_episode"][0]
    assert sum(episode["clamped_joints"].values()) >= episode["clamps"] == data["safety"]["clamps"]
    bundle = trained["ckpt"].with_name(trained["ckpt"].name + ".bundle")
    assert (bundle / "manifest.json").is_file() and (bundle / "graphs" / "chunk.onnx").is_file()

    # the bundle is reused while it verifies; a tampered one given as --policy is refused
    again = deploy(trained, "--sim", "--backend", "onnxruntime", "--strategy", "sync")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"bundle {bundle} (verified)" in again.stdout and "building" not in again.stdout
    (bundle / "stats.json").write_text((bundle / "stats.json").read_text().replace("0", "1", 1))
    refused = subprocess.run(platform_cmd("deploy", "--policy", str(bundle), "--sim", "--no-tui"),
                             env=subprocess_env(), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0
    assert "stats.json was modified" in refused.stderr


def test_bundle_only_builds_the_bundle_and_runs_nothing(trained, tmp_path):
    """A lab builds the bundle on the workstation for a robot that is not attached to it:
    no twin, no port, no episode; the folder loads as the robot side would load it."""
    pytest.importorskip("onnxscript", reason="onnxscript (torch's ONNX exporter) not installed: pip install 'shallowpi[export]'")
    from shallowpi.deploy.bundle import Bundle

    out = tmp_path / "arm.bundle"
    result = deploy(trained, "--backend", "onnxruntime", "--bundle", str(out), "--bundle-only", "--robot", "arm")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "episode" not in result.stdout and "backend onnxruntime" not in result.stdout
    assert "nothing runs here" in result.stdout and "running the best local backend" not in result.stdout
    bundle = Bundle.load(out)
    assert f"bundle {out} (sha256 {bundle.digest[:12]}, graphs: chunk) built at commit {bundle.commit}: copy it to " \
        "the robot, run that commit's code there" in result.stdout
    assert len(bundle.commit.removesuffix("+changes")) == 40  # this clone's HEAD
    assert (out / "graphs" / "chunk.onnx").is_file()

    # Building replaces the --bundle folder: one that is not a bundle is refused, untouched.
    mine = tmp_path / "robot"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    refused = deploy(trained, "--backend", "onnxruntime", "--bundle", str(mine), "--bundle-only")
    assert refused.returncode == 2 and refused.stderr.strip().count("\n") == 0, refused.stderr[-2000:]
    assert f"{mine} exists and is not a deploy bundle (no manifest.json)" in refused.stderr
    assert (mine / "notes.txt").read_text() == "keep"
    missing = deploy(trained, "--policy", str(tmp_path / "step_009000"), "--bundle-only")
    assert missing.returncode == 2 and f"no policy at {tmp_path / 'step_009000'}" in missing.stderr


def test_deploy_stack_with_torch_records_the_executed_episode(trained, tmp_path):
    result = deploy(trained, "--sim", "stack", "--backend", "torch", "--strategy", "async",
                    "--data-root", str(tmp_path), "--record", "executed")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend torch on cpu (fp32)" in result.stdout and "episode 1/1" in result.stdout
    info = subprocess.run(platform_cmd("dataset", "info", str(tmp_path / "executed.zarr")),
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert info.returncode == 0 and "1 episode" in info.stdout, info.stdout + info.stderr
    executed = EpisodeStore.open(tmp_path / "executed.zarr")  # the same features a recording of the robot has
    assert executed.features["action"].kinds == ("revolute", "linear") + ("revolute",) * 4 + ("gripper",)
    # Which policy drove it, in which of the twin's scenes: seed 1000 is eval --sim's first
    # held-out scene, which a store trained on must be seen to hold.
    from shallowpi.deploy.bundle import sha256_of

    extra = executed.episode(0).extra
    assert extra["seed"] == 1000 and extra["policy_sha256"] == sha256_of(trained["ckpt"] / "model.safetensors")


def test_sigterm_stops_cleanly_and_the_status_reaches_a_subscriber(trained, tmp_path):
    from shallowpi.telemetry.executor_status import ExecutorStatus
    from shallowpi.telemetry.subscriber import TelemetrySubscriber

    address = str(tmp_path / "live.sock")
    proc = subprocess.Popen(
        platform_cmd("deploy", "--policy", str(trained["ckpt"]), "--sim", "--backend", "torch", "--realtime",
                     "--episodes", "5", "--no-tui", f"telemetry.address={address}", "--json", str(tmp_path / "cut.json")),
        env=subprocess_env(OMP_NUM_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not Path(address).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        seen = None
        with TelemetrySubscriber(address, connect_timeout_s=60) as sub:
            for status in sub:
                if isinstance(status, ExecutorStatus) and status.state.value == "running":
                    seen = status
                    break
        assert seen is not None and seen.strategy == "rtc" and len(seen.commanded) == len(seen.joint_names)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "(stopped," in out and "faults 0" in out
    # The run stopped early: its report says so, so a benchmark does not count it as asked
    # (its last episode, cut off, was judged a failure).
    cut = json.loads((tmp_path / "cut.json").read_text())
    assert cut["complete"] is False and cut["episodes_asked"] == 5 and cut["per_episode"][-1]["ended"] == "stopped"


def _deploy_on_a_terminal(trained, socket: str, *args: str, watch=None) -> tuple[int, str]:
    """`platform deploy --sim --realtime` on a pseudo-terminal 140x40 (so its dashboard runs);
    `watch(screen)` sees the output so far after each read. -> (exit code, the output)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    proc = subprocess.Popen(
        platform_cmd("deploy", "--policy", str(trained["ckpt"]), "--sim", "--backend", "torch", "--realtime", *args,
                     f"telemetry.address={socket}"),
        env=subprocess_env(OMP_NUM_THREADS="1", TERM="xterm-256color"), stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    screen = bytearray()
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:  # drain: a full pty blocks the writers
            if select.select([master], [], [], 0.1)[0]:
                try:
                    screen += os.read(master, 65536)
                except OSError:
                    break
            if watch is not None:
                watch(screen)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return proc.returncode, screen.decode(errors="replace")


def test_on_a_terminal_the_dashboard_runs_beside_the_executor_and_closes_with_it(trained):
    code, text = _deploy_on_a_terminal(trained, f"{trained['root']}/tui.sock", "--episodes", "1",
                                       "--episode-time-s", "6")
    assert code == 0, text[-3000:]
    assert "commanded vs measured" in text and "control loop" in text, text[-3000:]  # the dashboard drew
    assert "episode 1/1 seed 1000:" in text and "success " in text.split("episode 1/1 seed 1000:")[-1]


def test_a_dashboard_that_dies_stops_the_executor_and_gives_the_terminal_back(trained):
    """Killed (or left with `q` when read-only), the deploy's dashboard takes the operator's
    view and keys with it: the executor stops, holding the robot, and lines print again."""
    import os
    import signal
    from pathlib import Path

    socket = f"{trained['root']}/tui-dies.sock"
    killed = []

    def kill_the_dashboard_once_drawn(screen: bytearray) -> None:
        if killed or b"control loop" not in screen:
            return
        for entry in Path("/proc").iterdir():  # the child `platform monitor` on this socket
            if entry.name.isdigit():
                try:
                    cmdline = (entry / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if b"monitor" in cmdline and socket.encode() in cmdline:
                    os.kill(int(entry.name), signal.SIGKILL)
                    killed.append(int(entry.name))
                    return

    code, text = _deploy_on_a_terminal(trained, socket, "--episodes", "3", "--episode-time-s", "60",
                                       watch=kill_the_dashboard_once_drawn)
    assert killed and code == 0, text[-3000:]
    assert "the dashboard was killed (signal 9); stopping the executor (torque goes off as it ends: support the arm)" in text, text[-3000:]
    after = text.split("stopping the executor")[-1]
    assert "episode 1/3 seed 1000:" in after and "(stopped," in after  # one episode, cut short
    assert "episode 2/3" not in text


def test_experiment_flags_are_refused_on_the_robot_in_one_line(tmp_path):
    """--delay-ms (or the config key it sets) slows a real arm's policy on purpose, --realtime,
    --seed and --dataset (the twin's renders) mean nothing there: each is refused before
    anything connects (no robot is attached here)."""
    for flag in (["--delay-ms", "300"], ["deploy.injected_delay_s=0.3"], ["--realtime"], ["--seed", "5"],
                 ["--dataset", "demo"]):
        result = subprocess.run(platform_cmd("deploy", "--policy", str(tmp_path / "none"), *flag),
                                capture_output=True, text=True, env=subprocess_env(), timeout=120)
        assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
        assert "for --sim" in result.stderr


def test_recording_a_deployment_never_waits_on_the_disk(tmp_path, monkeypatch):
    """`platform deploy --record`: the control loop queues each tick; encoding and fsync run
    on the recorder's writer thread, so a slow disk never stalls a command."""
    from types import SimpleNamespace

    from shallowpi.commands.deploy_recording import DeploymentRecorder
    from shallowpi.data import chunk_files
    from shallowpi.data.store import EpisodeStore
    from shallowpi.robots.observation import Frame, Observation

    written = chunk_files.write_frames

    def slow_disk(*args, **kwargs):
        time.sleep(0.2)  # a JPEG batch and its fsync on a busy SD card
        return written(*args, **kwargs)

    monkeypatch.setattr(chunk_files, "write_frames", slow_disk)
    target = SimpleNamespace(joint_names=["j0", "j1"], joint_kinds=["revolute", "gripper"],
                             camera_shapes={"front": (16, 16)}, calibration_id="cal-x", fps=30.0, episode_s=20.0)
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), target, ["front"])
    on_tick = recorder.begin("count", "counting", 30.0)
    slowest = 0.0
    for tick in range(40):  # five batches of 8 frames, each 0.2 s to write
        image = np.full((16, 16, 3), tick, np.uint8)
        obs = Observation(tick / 30, np.array([tick, 0.5], np.float32), {"front": Frame(image, tick / 30, tick)})
        started = time.perf_counter()
        on_tick(obs, np.array([tick + 1, 0.0], np.float32))
        slowest = max(slowest, time.perf_counter() - started)
    recorder.end(EpisodeReport(0, True, ended="time up"))
    recorder.close()
    assert slowest < 0.05  # a tick's share, not a disk write's 0.2 s
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert len(store) == 1 and store.episodes[0].length == 40 and store.episodes[0].success
        episode = store.read_episode(0, ["action"])
        assert episode["action"][:, 0].tolist() == list(range(1, 41))


def test_recording_a_deployment_into_demonstrations_warns(tmp_path, caplog):
    from types import SimpleNamespace

    from shallowpi.commands.deploy_recording import DeploymentRecorder
    from shallowpi.robots.observation import Frame, Observation
    from store_fixtures import stamp_episode

    target = SimpleNamespace(joint_names=["j0", "j1"], joint_kinds=["revolute", "gripper"],
                             camera_shapes={"front": (16, 16)}, calibration_id="cal-x", fps=30.0, episode_s=20.0)
    cfg = config.compose([])

    def record_one(with_sha: str) -> None:
        recorder = DeploymentRecorder(str(tmp_path / "mixed.zarr"), cfg, target, ["front"], policy_sha256=with_sha)
        on_tick = recorder.begin("count", "counting", 30.0)
        for tick in range(3):
            image = np.zeros((16, 16, 3), np.uint8)
            on_tick(Observation(tick / 30, np.zeros(2, np.float32), {"front": Frame(image, tick / 30, tick)}),
                    np.zeros(2, np.float32))
        recorder.end(EpisodeReport(0, False))
        recorder.close()

    with caplog.at_level("WARNING", logger="shallowpi"):
        record_one("a" * 64)
        record_one("a" * 64)  # a store of the policy's own episodes: nothing to say
    assert "demonstration" not in caplog.text
    stamp_episode(tmp_path / "mixed.zarr", 0, extra={"loop_p50_ms": 33.0, "ended": "expert done"})
    with caplog.at_level("WARNING", logger="shallowpi"):
        record_one("b" * 64)
    assert "--record mixed.zarr: the store holds 1 recorded demonstration(s)" in caplog.text
    with EpisodeStore.open(tmp_path / "mixed.zarr") as store:
        assert [e.extra.get("policy_sha256", "")[:1] for e in store.episodes] == ["", "a", "b"]


def test_deploy_sim_renders_a_checkpoint_without_a_store_as_eval_sim_does(tmp_path, capsys):
    # A shipped teacher names no training store: eval --sim renders at the policy's input
    # size (64x64, what it trained on); deploy --sim rendered record.sim_size's 224x224.
    import argparse

    from conftest import REPO_ROOT
    from shallowpi.commands.deploy_targets import twin_target
    from shallowpi.deploy.bundle import Bundle, build_bundle

    teacher = REPO_ROOT / "robots" / "arm" / "teacher"
    bundle = build_bundle(teacher, tmp_path / "bundle", graphs=())
    assert isinstance(bundle, Bundle) and "dataset" not in bundle.checkpoint_metadata
    args = argparse.Namespace(robot="arm", task=None, jetson=None, data_root=None, overrides=[],
                              episode_time_s=None, sim="direct")
    target = twin_target(args, bundle)
    side = bundle.config["vision"]["image_size"]
    assert (target.spec.render_width, target.spec.render_height) == (side, side) == (64, 64)
    assert target.image_codec is None  # no store to say what its frames went through
    # and says so, in eval --sim's words
    assert (f"{bundle.path} names no training store: rendering at its input size 64x64 without the store's "
            "image codec") in capsys.readouterr().out


def test_deploy_sim_shows_the_policy_the_frames_its_store_gave_back(trained, tmp_path):
    # A checkpoint naming its store: the twin renders at the store's size and the executor
    # passes each frame through the store's codec, as eval --sim does.
    import argparse

    from shallowpi.commands.deploy_targets import twin_target
    from shallowpi.deploy.bundle import build_bundle

    bundle = build_bundle(trained["ckpt"], tmp_path / "bundle", graphs=())
    args = argparse.Namespace(robot=None, task=None, jetson=None, data_root=None, overrides=[],
                              episode_time_s=None, sim="direct")
    target = twin_target(args, bundle)
    assert (target.spec.render_width, target.spec.render_height) == SIZE
    with EpisodeStore.open(trained["root"] / "demo.zarr") as store:
        assert type(target.image_codec).__name__.lower().startswith(store.settings.image_codec)


def test_deploy_sim_dataset_renders_the_twin_as_that_store_was_recorded(trained, tmp_path, capsys):
    # --dataset: a checkpoint that names no store (the shipped teacher) is shown the twin at
    # the store's size, each frame through its codec, as eval --sim --dataset shows it (the
    # teacher's rollouts must see what its evaluation sees); a store that is not there is
    # refused in one line.
    import argparse

    from conftest import REPO_ROOT
    from shallowpi.commands.deploy_targets import twin_target
    from shallowpi.deploy.bundle import build_bundle

    bundle = build_bundle(REPO_ROOT / "robots" / "arm" / "teacher", tmp_path / "bundle", graphs=())
    store = trained["root"] / "demo.zarr"
    args = argparse.Namespace(robot="arm", task=None, jetson=None, data_root=None, overrides=[],
                              episode_time_s=None, sim="direct", twin_store=store)
    target = twin_target(args, bundle)
    assert (target.spec.render_width, target.spec.render_height) == SIZE
    with EpisodeStore.open(store) as opened:
        assert type(target.image_codec).__name__.lower().startswith(opened.settings.image_codec)
    assert "names no training store" not in capsys.readouterr().out
    missing = deploy(trained, "--sim", "--dataset", str(tmp_path / "nowhere.zarr"))
    assert missing.returncode == 2 and f"--dataset {tmp_path / 'nowhere.zarr'}: no dataset at" in missing.stderr


@pytest.mark.parametrize(("flag", "setting", "expected"), [
    (None, float("inf"), "record.reset_time_s must be a finite number of seconds >= 0, got inf"),
    (float("nan"), 5.0, "--reset-time-s must be a finite number of seconds >= 0, got nan"),
    (None, -1.0, "record.reset_time_s must be a finite number of seconds >= 0, got -1"),
])
def test_the_robots_reset_time_is_finite_whichever_way_it_is_given(flag, setting, expected):
    from shallowpi.commands.deploy_targets import _seconds

    with pytest.raises(ConfigError) as raised:
        _seconds(flag, setting, "reset_time_s", positive=False)
    assert str(raised.value) == expected
    assert _seconds(None, 0.0, "reset_time_s", positive=False) == 0.0


def _deploy_tiny(tmp_path: Path, *words: str) -> tuple[int, dict]:
    """`platform deploy --sim` in this process (so a test can patch the recorder's writer) of
    a tiny untrained checkpoint reading the arm's front camera only (the twin has front and
    wrist), with torch, for half-second episodes; its exit code and its --json."""
    from deploy_fixtures import tiny_checkpoint
    from shallowpi.cli import parse_command

    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",))
    report = tmp_path / "run.json"
    args = parse_command(["deploy", "--policy", str(ckpt), "--robot", "arm", "--backend", "torch",
                          "--episode-time-s", "0.5", "--no-tui", "--json", str(report), *words,
                          f"telemetry.address={tmp_path}/deploy.sock"])
    code = args.run(args)
    return code, json.loads(report.read_text())


def test_a_recording_disk_found_full_between_episodes_is_a_fault_and_the_run_reports(tmp_path, monkeypatch, capsys):
    """The writer runs seconds behind the loop, so a commit that fails (the disk full) is
    often found at the next episode's begin: that raised out of the run (exit 2, no summary,
    no --json, and on the robot torque off at once). It is a policy-side fault as in a tick:
    counted, the robot held with torque on (on the robot, until the operator ends it), the
    summary and --json written."""
    import errno

    from shallowpi.data import episode_writer
    from shallowpi.record.writer import BackgroundWriter

    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    begin = BackgroundWriter.begin

    def after_the_writer_caught_up(self, *args, **kwargs):
        deadline = time.monotonic() + 30  # the robot's reset countdown: the writer reaches the commit
        while self.stats().pending_episodes and self.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        return begin(self, *args, **kwargs)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", disk_full)
    monkeypatch.setattr(BackgroundWriter, "begin", after_the_writer_caught_up)
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "3", "--record", str(tmp_path / "deployed"))
    out = capsys.readouterr().out
    assert code == 1, out
    assert data["safety"]["faults"] == 1 and data["episodes"] == 1 and not data["complete"]
    assert data["per_episode"][0]["ended"] == "time limit"  # the episode ran; its recording failed after
    assert "success 0/1 | inference p50" in out and "faults 1" in out
    assert "[deploy] fault: writing " in out and "the disk is full (ENOSPC)" in out  # FAULT, on the status line


def test_the_json_says_the_delay_that_ran_and_that_a_run_a_fault_cut_short_is_incomplete(tmp_path, monkeypatch):
    """--json's delay_ms was --delay-ms alone (0 for deploy.injected_delay_s=0.05), and
    `complete` was true for a run whose last episode a fault ended (a recording that fell
    behind, here), cut short and judged a failure as a stopped one is."""
    from shallowpi.record.writer import BackgroundWriter, WriterError

    add_frame = BackgroundWriter.add_frame
    frames = []

    def behind_from_the_tenth(self, *args, **kwargs):
        frames.append(1)
        if len(frames) >= 10:
            raise WriterError("the disk is behind: the writer's queue of 256 frames stayed full for 0.25 s")
        return add_frame(self, *args, **kwargs)

    monkeypatch.setattr(BackgroundWriter, "add_frame", behind_from_the_tenth)
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "1", "--record", str(tmp_path / "deployed"),
                              "deploy.injected_delay_s=0.05")
    assert code == 1 and data["safety"]["faults"] == 1
    assert data["delay_ms"] == pytest.approx(50.0)
    assert data["episodes"] == data["episodes_asked"] == 1 and data["per_episode"][0]["ended"] == "fault"
    assert data["complete"] is False


def test_deploy_stack_records_a_policy_that_reads_fewer_cameras_than_the_robot(tmp_path):
    """--sim stack rendered every camera of the robot while --record's store holds the
    policy's: a policy trained on the front camera alone ended each episode as a fault at
    its first recorded tick ("frame has keys the store does not hold"). The stack twin
    renders the policy's cameras, as --sim direct does."""
    code, data = _deploy_tiny(tmp_path, "--sim", "stack", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    assert code == 0 and data["per_episode"][0]["ended"] == "time limit", data
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert len(store) == 1 and store.episodes[0].length == 15  # 0.5 s at 30 Hz
        assert [k for k in store.features if k.startswith("observation.images.")] == ["observation.images.front"]
    import argparse

    from shallowpi.commands.deploy_targets import twin_target
    from shallowpi.deploy.bundle import Bundle

    args = argparse.Namespace(robot="arm", task=None, jetson=None, data_root=None, overrides=[],
                              episode_time_s=None, sim="stack")
    target = twin_target(args, Bundle.load(tmp_path / "ckpt.bundle"))
    assert target.robot.twin_spec.cameras == ("front",) and target.spec.cameras == ("front", "wrist")


def test_a_deployment_recording_keeps_the_stores_cameras_of_what_the_robot_observes(tmp_path):
    """A target observing a camera the policy does not read (the store --record made holds
    the policy's): the row recorded is the store's, not a fault at the first tick."""
    from types import SimpleNamespace

    from shallowpi.commands.deploy_recording import DeploymentRecorder
    from shallowpi.robots.observation import Frame, Observation

    target = SimpleNamespace(joint_names=["j0", "j1"], joint_kinds=["revolute", "gripper"],
                             camera_shapes={"front": (16, 16), "wrist": (16, 16)}, calibration_id="cal-x", fps=30.0,
                             episode_s=20.0)
    recorder = DeploymentRecorder(str(tmp_path / "deployed.zarr"), config.compose([]), target, ["front"])
    on_tick = recorder.begin("count", "counting", 30.0)
    for tick in range(3):
        frames = {role: Frame(np.full((16, 16, 3), tick, np.uint8), tick / 30, tick) for role in ("front", "wrist")}
        on_tick(Observation(tick / 30, np.zeros(2, np.float32), frames), np.zeros(2, np.float32))
    recorder.end(EpisodeReport(0, None))
    recorder.close()
    assert recorder.writer.failure is None
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert len(store) == 1 and store.episodes[0].length == 3
        assert store.read_episode(0, ["observation.images.front"])["observation.images.front"][:, 0, 0, 0].tolist() == [0, 1, 2]


def test_a_terminal_closed_under_a_recorded_deployment_costs_no_episode_and_no_json(tmp_path, monkeypatch):
    """An SSH session dropped (SIGHUP): from then on every print fails with EIO. The held
    lines were printed before the recording closed, and the summary before the --json was
    written: the last episode's queued frames and commit, and the file, went with the
    process. Now the recording closes and the JSON is written first, and a print the
    terminal refuses is dropped. The terminal goes here as the robot is put away."""
    import errno
    import io
    import sys

    from shallowpi.commands.deploy_targets import TwinTarget

    class ClosedTerminal(io.TextIOBase):
        def write(self, text: str) -> int:
            raise OSError(errno.EIO, "Input/output error")

    disconnect = TwinTarget.disconnect

    def then_the_terminal_goes(self, *args, **kwargs):
        disconnect(self, *args, **kwargs)
        monkeypatch.setattr(sys, "stdout", ClosedTerminal())

    monkeypatch.setattr(TwinTarget, "disconnect", then_the_terminal_goes)
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    assert code == 0 and data["episodes"] == 1
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert len(store) == 1 and store.check() == []


def test_a_recorded_deployment_keeps_the_executors_counts_and_its_camera_drivers_drops(tmp_path):
    """`deploy --sim stack --record`: the episode was committed with dropped_frames 0 by
    default, never counted, no hold or stale-frame count, and (its cameras looked for
    before connect made them) no camera serials. Now the stack twin's RealSense drivers,
    found at the episode's begin, are counted (none dropped here, by their own frame
    numbers) and named, and the executor's report travels in extra."""
    code, data = _deploy_tiny(tmp_path, "--sim", "stack", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    assert code == 0, data
    (run,) = data["per_episode"]
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        (episode,) = store.episodes
    extra = episode.extra
    assert {key: extra.get(key) for key in ("holds", "watchdog_stale_frames", "stale_frames", "repeated_pictures")} \
        == {"holds": run["holds"], "watchdog_stale_frames": data["safety"]["stale_frames"], "stale_frames": 0,
            "repeated_pictures": 0}  # a render each tick, of that tick
    assert extra.get("hold_ticks", 0) >= 1  # the ticks before the first chunk came
    assert episode.dropped_frames == 0
    assert extra.get("camera_serials") == {"front": "SIM-front"}  # the drivers, as `record --sim stack` names them


def test_record_and_deploy_record_time_a_twin_episode_alike(tmp_path):
    """The same 0.5 s in the twin, recorded by `platform record` and by `deploy --record`:
    deploy stored the twin's physics time (0, 0.034, 0.066, ...: whole 2 ms steps) as
    each row's time, record the tick's (k/30), so the two stores meant different things by
    `timestamp` and their durations differed. Now both: row k at k/30, the state read and
    the picture rendered at it."""
    from shallowpi.data.store import StoreSettings
    from shallowpi.record.rig import build_rig
    from shallowpi.record.session import RecordingSession, SessionConfig
    from shallowpi.record.writer import BackgroundWriter

    code, _ = _deploy_tiny(tmp_path, "--sim", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    assert code == 0
    rig = build_rig(config.compose(["robot=arm"]), "direct", "cube_in_bowl", size=(32, 32))
    recorded = EpisodeStore.create(tmp_path / "recorded.zarr", rig.features, StoreSettings(durable=False))
    writer = BackgroundWriter(recorded)
    session = RecordingSession(SessionConfig(task=rig.task_text, episodes=1, episode_time_s=0.5, reset_time_s=0,
                                             fps=30), rig.robot, rig.teleop, writer, rig.clock, rig.joint_names,
                               scene=rig.scene)
    try:
        assert not session.run().fault
        writer.close()
    finally:
        rig.close()
    keys = ["timestamp", "observation.state.timestamp", "observation.images.front.timestamp"]
    with EpisodeStore.open(tmp_path / "deployed.zarr") as deployed:
        for store in (deployed, recorded):
            times = store.read_episode(0, keys)
            for key in keys:
                np.testing.assert_allclose(times[key], np.arange(15) / 30, rtol=0, atol=1e-9, err_msg=key)
            assert store.episode(0).duration_s == pytest.approx(0.5)


def test_deploy_sim_says_its_loop_timing_is_the_wall_time_of_a_simulated_tick(tmp_path, capsys):
    """`deploy --sim` closed with "loop p99 1285.0 ms, 0 overruns" for a 30 Hz loop, and its
    --json's loop_p99_ms said the same: on the twin's simulated time that is the wall time a
    tick took, the chunk computed inside it included, no period the loop kept or missed.
    The lines and the summary say so; the JSON names it sim_tick_wall_p99_ms, and its
    loop_p99_ms (the wall clock's loop period) is null."""
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "1")
    out = capsys.readouterr().out
    assert code == 0, out
    summary = next(line for line in out.splitlines() if line.startswith("success "))
    assert "| sim-time loop, wall p99 " in summary and " ms a tick |" in summary, summary
    assert "loop p99" not in out and "overruns" not in summary
    assert data["loop_p99_ms"] is None and data["sim_tick_wall_p99_ms"] > 0
    assert f"wall p99 {data['sim_tick_wall_p99_ms']:.1f} ms a tick" in summary


def test_a_recorded_deployment_waiting_for_a_stalled_disk_obeys_the_dashboards_e_stop(tmp_path, monkeypatch, capsys):
    """`deploy --record` between episodes waited for its writer with no give_up: on a disk
    that stalls (a hung USB SSD, an NFS mount) the episode's commit blocked the loop's
    thread with the robot holding, torque on, no status published (the dashboard STALE)
    and its e-stop unread; only a double Ctrl-C left. Here the disk stalls at the first
    frame: the queue fills, the episode ends as a fault (the per-tick bound) and its commit
    waits. The status goes on being published, the dashboard's e-stop turns torque off at
    once and ends the wait, and the episode is not kept: nothing of it is half-written."""
    import threading

    from shallowpi.data import episode_writer
    from shallowpi.record import settings
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.telemetry.status import Command
    from shallowpi.telemetry.subscriber import TelemetrySubscriber

    disk = threading.Event()  # set: the disk answers again
    add_frame, torque_off = episode_writer.EpisodeWriter.add_frame, DirectSimRobot.torque_off
    torque_off_at: list[float] = []

    def stalled(self, *args, **kwargs):
        disk.wait()
        return add_frame(self, *args, **kwargs)

    def timed_torque_off(self):
        torque_off_at.append(time.monotonic())
        torque_off(self)

    monkeypatch.setattr(episode_writer.EpisodeWriter, "add_frame", stalled)
    monkeypatch.setattr(DirectSimRobot, "torque_off", timed_torque_off)
    # The smallest queue (record.queue_mb holds whole MB: some 1000 of the twin's 16x16 frames)
    monkeypatch.setattr(settings, "queue_frames", lambda queue_mb, features: settings.MIN_QUEUE_FRAMES)
    seen: dict[str, float] = {}
    socket = tmp_path / "deploy.sock"

    def operator() -> None:  # the dashboard's: e-stop once the run has faulted on the disk
        try:
            deadline = time.monotonic() + 120
            while not socket.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            with TelemetrySubscriber(str(socket), control=True) as dashboard:
                if not any(status.state.value == "fault" for status in dashboard):
                    return  # the run ended without
                time.sleep(0.5)  # the commit's wait has begun (the loop's thread is in it)
                seen["estop"] = time.monotonic()
                dashboard.send(Command.ESTOP)
                later = threading.Timer(5.0, disk.set)  # the disk answers again, the wait or not
                later.daemon = True
                later.start()
                for status in dashboard:
                    if status.estopped:
                        seen["estopped"] = time.monotonic()
                        break
        finally:
            disk.set()  # once the e-stop is seen (or the run is over): never a test hung on its own stall

    watcher = threading.Thread(target=operator, daemon=True)
    watcher.start()
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "2", "--episode-time-s", "2",
                              "--record", str(tmp_path / "deployed"))
    watcher.join(10)
    out = capsys.readouterr().out
    assert code == 1 and data["per_episode"][0]["ended"] == "fault" and data["episodes"] == 1, out
    assert "estop" in seen, "the run never faulted on the disk"
    # At once (the wait asks every 0.1 s), while the disk still stalled: torque off, and the
    # dashboard shown the e-stop (it had no status for as long as the disk stalled).
    assert torque_off_at and torque_off_at[0] - seen["estop"] < 2.0, (torque_off_at, seen)
    assert seen.get("estopped", float("inf")) - seen["estop"] < 2.0, seen
    assert "not kept: episode 1 (store index 0) of this run, whose recording waited for the disk when the run was stopped" in out
    with EpisodeStore.open(tmp_path / "deployed.zarr") as store:
        assert len(store) == 0 and store.check() == []


@pytest.mark.usefixtures("one_torch_thread")
def test_where_torch_runs_otherwise_the_options_asked_are_left_as_they_were(tmp_path, monkeypatch):
    """`_torch_runs_otherwise` read as a query and set the caller's options.device to cpu:
    whoever read the options after it saw another device than the profile asked. Now it
    hands back the options to run with, and the torch backend built on them runs on the CPU."""
    from deploy_fixtures import tiny_checkpoint
    from shallowpi.commands import deploy_cmd
    from shallowpi.deploy.backends import BackendOptions, make_backend
    from shallowpi.deploy.bundle import build_bundle

    monkeypatch.setattr(deploy_cmd, "_has_cuda", lambda: False)  # a machine without a CUDA GPU, wherever this runs
    asked = BackendOptions(device="cuda", precision="bf16")
    decided = deploy_cmd._torch_runs_otherwise(asked)
    assert asked == BackendOptions(device="cuda", precision="bf16")  # what the profile asked, still
    runs, line = decided
    assert runs == BackendOptions(device="cpu", precision="bf16")
    assert line == "; torch sees no CUDA GPU here: it runs on cpu (fp32), not cuda (bf16)"
    bundle = build_bundle(tiny_checkpoint(tmp_path / "ckpt"), tmp_path / "bundle", graphs=())
    assert make_backend("torch", bundle, runs).runs_on() == "cpu (fp32)"
    # As asked: the very options back, and nothing to say.
    same = BackendOptions(device="cpu", precision="fp32")
    assert deploy_cmd._torch_runs_otherwise(same) == (same, "")
    # A numbered GPU (jetson.device=cuda:0) as well: it got through, the plan line said torch
    # ran on cuda:0 in bf16, and the run stopped on advice (--device cpu) deploy has no flag for.
    numbered, line = deploy_cmd._torch_runs_otherwise(BackendOptions(device="cuda:0", precision="bf16"))
    assert numbered.device == "cpu" and line.endswith("it runs on cpu (fp32), not cuda:0 (bf16)")
