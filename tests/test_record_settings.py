"""`platform record`'s settings and its clean-up, in-process in the twin: store.* on --resume
and in the provenance, record.* numbers refused before anything connects, and the robot put
away before the writer drains when the session ends on an unexpected error."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from omegaconf import OmegaConf

from shallowpi.cli import main
from shallowpi.data import EpisodeStore, chunk_files
from shallowpi.data.store import PROVENANCE_DIR
from shallowpi.errors import ConfigError
from shallowpi.record.dart import NoisyExecution, OUNoise


def _record_words(tmp_path, *args: str) -> list[str]:
    return ["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root", str(tmp_path),
            "--dataset", "d", "--no-tui", "record.sim_size=32x32", f"telemetry.address={tmp_path}/t.sock", *args]


SHORT = ("--episodes", "1", "--episode-time-s", "0.2", "--reset-time-s", "0")


def _latest_provenance(store):
    """The store's newest .shallowpi/record-*.yaml, as OmegaConf reads it."""
    return OmegaConf.load(max((store / PROVENANCE_DIR).glob("record-*.yaml"), key=lambda p: p.stat().st_mtime_ns))


def test_resume_refuses_a_store_override_its_store_was_not_made_with(tmp_path, capsys, own_signals):
    """A store writes with the settings it was created with: `--resume store.image_codec=jpeg`
    was silently ignored while the run's provenance said jpeg."""
    assert main(_record_words(tmp_path, *SHORT, "store.image_codec=blosc-lz4")) == 0
    capsys.readouterr()

    assert main(_record_words(tmp_path, *SHORT, "--resume", "store.image_codec=jpeg")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "store.image_codec=jpeg cannot apply to d.zarr: it was created with store.image_codec=blosc-lz4" in err, err
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 1  # refused before anything was written

    # The value it has, given again, is no change.
    assert main(_record_words(tmp_path, *SHORT, "--resume", "store.image_codec=blosc-lz4")) == 0
    with EpisodeStore.open(tmp_path / "d.zarr") as store:
        assert len(store) == 2 and store.settings.image_codec == "blosc-lz4"


def test_a_resumed_runs_provenance_names_the_store_settings_it_wrote_with(tmp_path, own_signals):
    """Resumed without store.* overrides, the run's .shallowpi/record-*.yaml said the config's
    jpeg and 1024-row chunks while the episodes went in as the store's blosc-lz4, 64 rows."""
    assert main(_record_words(tmp_path, *SHORT, "store.image_codec=blosc-lz4", "store.numeric_chunk_rows=64")) == 0
    assert main(_record_words(tmp_path, *SHORT, "--resume")) == 0
    written = _latest_provenance(tmp_path / "d.zarr").store
    assert (written.image_codec, written.image_quality, written.numeric_chunk_rows) == ("blosc-lz4", 90, 64)


@pytest.mark.parametrize(("setting", "says"), [
    ("record.sim_noise=nan", "record.sim_noise must be a finite number >= 0 or null, got nan"),
    ("record.sim_noise=inf", "record.sim_noise must be a finite number >= 0 or null, got inf"),
    ("record.sim_noise=-0.1", "record.sim_noise must be a finite number >= 0 or null, got -0.1"),
    ("record.sim_noise_tau_s=nan", "record.sim_noise_tau_s must be a finite number > 0, got nan"),
    ("record.fps=nan", "record.fps must be a finite number > 0 or null, got nan"),
    ("record.fps=-30", "record.fps must be a finite number > 0 or null, got -30"),
])
def test_record_numbers_that_are_not_finite_or_out_of_range_are_one_line_before_anything_connects(
        tmp_path, capsys, own_signals, setting, says):
    """record.sim_noise=nan recorded until the arm refused "action contains NaN or inf"."""
    assert main(_record_words(tmp_path, "--episodes", "1", "--episode-time-s", "0.2", setting)) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {says}", err
    assert not (tmp_path / "d.zarr").exists()


@pytest.mark.parametrize("scale", [math.nan, math.inf])
def test_dart_noise_refuses_a_scale_that_is_not_finite(scale):
    """nan passed `scale < 0` and every joint's goal became NaN."""
    with pytest.raises(ConfigError, match=r"record\.sim_noise must be >= 0 and finite"):
        NoisyExecution(None, [0.0], [1.0], ["j"], scale, 0.5, 30.0, [1.0])


@pytest.mark.parametrize("tau_s", [math.nan, math.inf])
def test_dart_noise_refuses_a_correlation_time_that_is_not_finite(tau_s):
    """nan passed `tau_s <= 0` (NaN noise); an infinite tau made no noise at all."""
    with pytest.raises(ConfigError, match="positive, finite correlation time"):
        OUNoise(np.ones(1), tau_s, 1 / 30)


def test_an_unexpected_error_out_of_the_session_puts_the_robot_away_before_the_writer_drains(tmp_path, monkeypatch,
                                                                                            own_signals):
    """A bug (no PlatformError) out of the recording loop, the disk behind: the telemetry
    closed first (dashboards lost their E-STOP), the writer drained its queue for seconds
    with the follower holding, and only then was torque off. put_away() on the normal path
    puts the robot away first; so must the clean-up."""
    from shallowpi.record.rig import ExpertScene
    from shallowpi.record.writer import BackgroundWriter
    from shallowpi.robots.sim.direct import DirectSimRobot
    from shallowpi.telemetry.publisher import TelemetryPublisher

    events: list[tuple[str, float]] = []
    written, read = chunk_files.write_frames, ExpertScene.read
    disconnect, drain, close = DirectSimRobot.disconnect, BackgroundWriter.close, TelemetryPublisher.close
    ticks = itertools.count()

    def slow_disk(*args, **kwargs):  # a disk far behind the renders
        time.sleep(0.15)
        return written(*args, **kwargs)

    def failing_read(self):
        if next(ticks) == 40:
            events.append(("error", time.monotonic()))
            raise RuntimeError("a bug in the loop")
        return read(self)

    def spy(name, real):
        def wrapper(self, *args, **kwargs):
            result = real(self, *args, **kwargs)
            events.append((name, time.monotonic()))
            return result
        return wrapper

    monkeypatch.setattr(chunk_files, "write_frames", slow_disk)
    monkeypatch.setattr(ExpertScene, "read", failing_read)
    monkeypatch.setattr(DirectSimRobot, "disconnect", spy("robot off", disconnect))
    monkeypatch.setattr(BackgroundWriter, "close", spy("writer drained", drain))
    monkeypatch.setattr(TelemetryPublisher, "close", spy("telemetry closed", close))
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        main(_record_words(tmp_path, "--episodes", "1", "--episode-time-s", "20"))
    names = [name for name, _ in events]
    assert names[:2] == ["error", "robot off"], names
    assert names.index("writer drained") > names.index("robot off"), names
    assert names.index("telemetry closed") > names.index("robot off"), names
    at = dict(events)
    assert at["robot off"] - at["error"] < 0.5 < at["writer drained"] - at["error"], events  # the queue was behind


def test_the_writer_queue_of_a_recording_without_cameras_holds_what_record_queue_mb_says(tmp_path):
    """queue_frames counted a frame's data alone: ~80 bytes of joints, while each queued frame
    held ~10x that in objects (the frame, its dicts, each array's header), so
    record.queue_mb=512 let ~5 GB into memory before back-pressure. Measured here on the
    real writer: its queue filled to queue_frames(1 MB) frames, as the loop hands them over
    (fresh arrays a tick), the writer thread held at the episode's begin."""
    import threading
    import tracemalloc

    from shallowpi.data.features import robot_features
    from shallowpi.record.settings import queue_frames
    from shallowpi.record.writer import BackgroundWriter

    joints = [f"joint_{i}" for i in range(6)]
    features = robot_features(joints, {})
    capacity = queue_frames(1.0, features)
    store = EpisodeStore.create(tmp_path / "q.zarr", features)
    held = threading.Event()
    begin_episode = store.begin_episode

    def begin_held(*args, **kwargs):  # the writer thread waits here; frames pile up behind it
        held.wait(30)
        return begin_episode(*args, **kwargs)

    store.begin_episode = begin_held
    writer = BackgroundWriter(store, capacity_frames=capacity)
    rng = np.random.default_rng(0)
    try:
        writer.begin(0, "held", fps=30)
        while writer.stats().queue_depth:  # the begin taken off the queue: `capacity` frames fit
            time.sleep(0.01)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for t in range(capacity):
                writer.add_frame({"observation.state": rng.random(6, dtype=np.float32),
                                  "action": rng.random(6, dtype=np.float32)}, t / 30, max_wait_s=1.0)
            queued = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert writer.stats().queue_depth == capacity
        assert 0.6e6 < queued <= 1e6, f"{capacity} frames queued take {queued / 1e6:.2f} MB for record.queue_mb=1"
    finally:
        held.set()
        writer.discard()
        writer.close()
        store.close()


def test_a_session_in_the_same_second_as_the_last_keeps_that_ones_provenance(tmp_path, monkeypatch):
    """Provenance files are named by the session's second: a recorder restarted within it
    (systemd's restart loop; the hour a DST change repeats) wrote record-<stamp>.yaml over
    the last session's config. The next free name is numbered instead."""
    from shallowpi.commands import record_cmd

    monkeypatch.setattr(record_cmd.time, "strftime", lambda fmt, *when: "20261207-120000")
    names = []
    for _ in range(3):
        names.append(record_cmd.session_stamp(tmp_path))
        (tmp_path / f"record-{names[-1]}.yaml").write_text("settings\n")
    assert names == ["20261207-120000", "20261207-120000-2", "20261207-120000-3"]
