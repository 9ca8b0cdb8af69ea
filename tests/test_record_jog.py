"""Jogging the joints no leader arm drives (a humanoid's head and lift) between takes: the
real `platform record` on the emulated humanoid's five servo chains, the keys sent as a
dashboard sends them (telemetry), the servos and the store checked."""

from __future__ import annotations

import subprocess
import time

import numpy as np
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
    deadline, seen = time.monotonic() + timeout, []
    for status in subscriber:
        if done(status):
            return status
        if not seen or seen[-1] != status.message:
            seen.append(status.message)
        assert time.monotonic() < deadline, f"not seen in time; messages: {seen}"
    raise AssertionError(f"the recorder ended first; messages: {seen}")


@pytest.mark.slow
def test_the_humanoids_head_is_jogged_between_takes_and_the_next_take_records_it_there(tmp_path):
    """Before, the head and the lift held their pose from connect all session: nothing could
    aim the head camera without stopping the recorder. Between takes ] picks the first
    joint no leader drives and + steps its goal by a fiftieth of its range; the follower's
    servo goes there and the next take records it there. While recording the keys are
    refused: the take's labels would move for a reason its observations do not show."""
    address = f"{tmp_path}/t.sock"
    with emulated("humanoid") as (spec, chains):
        ports = [f"robot.buses.{name}.port={bus.port}" for name, bus in spec.buses.items()]
        proc = subprocess.Popen(
            platform_cmd("record", "--robot", "humanoid", *ports, "--dataset", "jog", "--data-root", str(tmp_path),
                         "--task", "look", "--episodes", "2", "--episode-time-s", "3", "--reset-time-s", "6",
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
                subscriber.send(Command.JOG_UP)
                refused = _statuses_until(subscriber, lambda s: "jog_up" in s.message)
                # between the takes, once the last one is saved (its line would replace the jog's)
                _statuses_until(subscriber, lambda s: s.message.startswith("episode 0 saved"))
                before = head.get("goal_position")
                subscriber.send(Command.JOG_NEXT)
                picked = _statuses_until(subscriber, lambda s: s.message.startswith("jog "))
                last = picked
                for _ in range(3):
                    subscriber.send(Command.JOG_UP)
                    last = _statuses_until(subscriber, lambda s, m=last.message: s.message.startswith("jog ")
                                           and s.message != m)
                    time.sleep(0.4)  # a step from the goal held: let the head get there first
                moved = (head.get("goal_position") - before) * head.model.radians_per_tick
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "no leader drives head_pan, head_tilt, lift" in out and "], + and - keys" in out, out[-3000:]
    assert first.jog_joints == ["head_pan", "head_tilt", "lift"]  # the dashboard's keys line names them
    assert refused.message.startswith("+ (jog_up) ignored while recording"), refused.message
    step = 6.2 / STEPS_PER_RANGE  # head_pan's range, -3.1..3.1 rad
    assert picked.message == f"jog head_pan (+ / - step it by {step:.3f} rad)", picked.message
    assert last.message.startswith("jog head_pan: goal "), last.message
    assert moved == pytest.approx(3 * step, abs=0.01), (moved, last.message)
    store = EpisodeStore.open(tmp_path / "jog.zarr")
    pan = first.joint_names.index("head_pan")
    takes = [store.read_episode(i, ["action"])["action"][:, pan] for i in range(2)]
    assert np.ptp(takes[0]) < 1e-6 and np.ptp(takes[1]) < 1e-6, "the head moved during a take"
    assert takes[1][0] - takes[0][0] == pytest.approx(3 * step, abs=0.01)


def test_jog_steps_from_the_held_goal_within_the_robots_limits_and_picks_in_turn():
    """A held key's auto-repeat outpaces the joint: each step is taken from the goal the robot
    holds, so the target stays a step ahead of it and the joint stops within a step of where
    the key was released; the target never passes the limits act() clips to (the swept
    ones, narrower than the config's), so the line says where the joint goes."""
    from shallowpi.robots.spec import JointSpec
    from shallowpi.teleop.jog import JoggedTeleop

    class Leaders:  # drives the arms only
        def read(self):
            return {"elbow": 0.5}

    joints = [JointSpec("head_pan", -3.1, 3.1, 2.5), JointSpec("lift", 0.0, 0.4, 0.2, kind="linear")]
    jog = JoggedTeleop(Leaders(), joints, {"head_pan": (-0.3, 0.3), "lift": (0.0, 0.4)})
    assert jog.read() == {"elbow": 0.5}  # nothing jogged: the robot holds head and lift
    holding = {"head_pan": 0.1, "lift": 0.2}
    for _ in range(10):  # ten presses within one tick: the robot still holds 0.1
        line = jog.step(+1, holding)
    assert jog.targets["head_pan"] == pytest.approx(0.1 + 0.124) and line == "jog head_pan: goal +0.224 rad"
    line = jog.step(+1, {"head_pan": 0.25, "lift": 0.2})
    assert jog.targets["head_pan"] == 0.3 and line == "jog head_pan: goal +0.300 rad (at its limit, +0.300 rad)"
    assert jog.pick_next() == "jog lift (+ / - step it by 0.008 m)"
    jog.step(-1, {"head_pan": 0.3, "lift": 0.004})
    assert jog.read() == {"elbow": 0.5, "head_pan": 0.3, "lift": 0.0}
    assert jog.pick_next().startswith("jog head_pan")  # round again


def test_a_jog_key_on_a_robot_whose_teleoperator_drives_every_joint_says_so(tmp_path):
    """A teleoperator that drives every joint (a leader for each) has nothing to jog: ], +
    and - move nothing and say why."""
    messages: list[str] = []
    session, _, writer = make_session(open_store(tmp_path / "all_led.zarr"), episodes=1, autostart=False,
                                      commands=TickScript({2: [Command.JOG_NEXT], 4: [Command.JOG_UP], 6: [Command.QUIT]}),
                                      publish=lambda status: messages.append(status.message))
    session.run()
    writer.close()
    assert session.status.jog_joints == []  # the dashboard leaves the jog keys out
    for command in (Command.JOG_NEXT, Command.JOG_UP):
        assert f"{keys.KEY[command]} ignored: the teleoperator drives every joint" in messages, messages


def test_a_keys_answer_in_the_tick_an_episode_is_saved_is_shown_beside_the_saved_line(tmp_path):
    """The writer commits on its own thread; the tick that sees the commit said "episode N
    saved" over whatever a key had answered in that tick, so that answer was never
    published. With a key every tick, the tick of the commit publishes both."""
    messages: list[str] = []
    session, _, writer = make_session(open_store(tmp_path / "both.zarr"), episodes=2, episode_time_s=0.5,
                                      reset_time_s=0.5, realtime=True, commands=lambda: [Command.JOG_NEXT],
                                      publish=lambda status: messages.append(status.message))
    session.run()
    writer.close()
    saved = [m for m in messages if "episode 0 saved" in m]
    # between takes "] ignored: the teleoperator drives every joint"; while the next take
    # records (a commit that slow), "] (jog_next) ignored while recording (...)"
    assert saved and all(m.startswith("] ") and " ignored" in m and m.endswith("; episode 0 saved (15 frames)")
                         for m in saved), saved
