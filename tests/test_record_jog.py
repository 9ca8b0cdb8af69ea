"""Jogging the joints no leader arm drives (a humanoid's head and lift) while recording: the
real `platform record` on the emulated humanoid's five servo chains, the keys sent as a
dashboard sends them (telemetry), the servos and the store checked."""

from __future__ import annotations

import subprocess
import time

import pytest

from conftest import platform_cmd, subprocess_env
from dxl_fixtures import emulated
from recorder_fixtures import TickScript, make_session, open_store
from shallowpi.data import EpisodeStore
from shallowpi.telemetry import keys
from shallowpi.telemetry.status import Command
from shallowpi.telemetry.subscriber import TelemetrySubscriber
from shallowpi.teleop.jog import STEPS_PER_RANGE

HEAD_PAN = 1  # servo ID on the head_lift chain


def _statuses_until(subscriber: TelemetrySubscriber, done, timeout: float = 60.0):
    """Read statuses until `done(status)`; the last one read."""
    deadline = time.monotonic() + timeout
    for status in subscriber:
        if done(status):
            return status
        assert time.monotonic() < deadline, f"not seen in time; last message: {status.message!r}"
    raise AssertionError("the recorder ended first")


@pytest.mark.slow
def test_the_humanoids_head_is_jogged_while_recording_and_the_take_records_its_goal(tmp_path):
    """Before, the head and the lift held their pose from connect all session: nothing could
    aim the head camera while recording. ] picks the first joint no leader drives, + steps
    its goal by a fiftieth of its range; the follower's servo goes there and the take's
    action column records the new goal."""
    address = f"{tmp_path}/t.sock"
    with emulated("humanoid") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        proc = subprocess.Popen(
            platform_cmd("record", "--robot", "humanoid", *ports, "--dataset", "jog", "--data-root", str(tmp_path),
                         "--task", "look", "--episodes", "1", "--episode-time-s", "6", "--reset-time-s", "0",
                         "--no-tui", "--no-cameras", "--allow-uncalibrated", f"telemetry.address={address}"),
            env=subprocess_env(SHALLOWPI_ROBOTS_DIR=str(tmp_path / "robots")), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while True:  # the recorder's socket appears once it is up
                try:
                    subscriber = TelemetrySubscriber(address, control=True)
                    break
                except Exception:
                    assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0][-3000:]
                    time.sleep(0.2)
            head = chains["head_lift"].servos[HEAD_PAN]
            with subscriber:
                first = _statuses_until(subscriber, lambda s: s.state.value == "recording")
                before = head.get("goal_position")
                subscriber.send(Command.JOG_NEXT)
                picked = _statuses_until(subscriber, lambda s: s.message.startswith("jog "))
                for _ in range(3):
                    subscriber.send(Command.JOG_UP)
                    stepped = _statuses_until(subscriber, lambda s, m=picked.message: s.message.startswith("jog ")
                                              and s.message != m)
                    picked = stepped
                time.sleep(1.0)  # 0.37 rad at the head's 2.5 rad/s
                moved = (head.get("goal_position") - before) * head.model.radians_per_tick
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "no leader drives head_pan, head_tilt, lift" in out and "], + and - keys" in out, out[-3000:]
    step = 6.2 / STEPS_PER_RANGE  # head_pan's range, -3.1..3.1 rad
    assert stepped.message.startswith("jog head_pan: goal "), stepped.message
    assert moved == pytest.approx(3 * step, abs=0.01), (moved, stepped.message)
    store = EpisodeStore.open(tmp_path / "jog.zarr")
    pan = store.read_episode(0, ["action"])["action"][:, first.joint_names.index("head_pan")]
    assert pan[-1] - pan[0] == pytest.approx(3 * step, abs=0.01), pan[[0, -1]]


def test_a_jog_key_on_a_robot_whose_teleoperator_drives_every_joint_says_so(tmp_path):
    """A teleoperator that drives every joint (a leader for each) has nothing to jog: ], +
    and - move nothing and say why."""
    messages: list[str] = []
    session, _, writer = make_session(open_store(tmp_path / "all_led.zarr"), episodes=1, episode_time_s=0.5,
                                      commands=TickScript({2: [Command.JOG_NEXT], 4: [Command.JOG_UP]}),
                                      publish=lambda status: messages.append(status.message))
    session.run()
    writer.close()
    for command in (Command.JOG_NEXT, Command.JOG_UP):
        assert f"{keys.KEY[command]} ignored: the teleoperator drives every joint" in messages, messages
