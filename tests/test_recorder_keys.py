"""The recorder's key/state table (telemetry/keys.py) acted out by a real RecordingSession:
every command in every state either does what the table says, checked in the store, or
answers "ignored while <state>" and changes nothing. Episodes are numbered by store index."""

from __future__ import annotations

import contextlib
import logging

import pytest

from recorder_fixtures import TickScript, make_session, open_store
from shallowpi.record.writer import WriterError
from shallowpi.telemetry import keys
from shallowpi.telemetry.status import Command, RecorderState, Request

pytestmark = pytest.mark.timeout(120)
FPS = 30
EPISODE_TICKS = 30  # 1 s episodes
# Ticks at which the session is in each state (reset 10 s: it lasts 300 ticks; done: the
# only episode was saved at tick 30, `in_state`).
AT = {RecorderState.IDLE: 2, RecorderState.RECORDING: 10, RecorderState.RESETTING: 40,
      RecorderState.PAUSED: 50, RecorderState.DONE: 40}


def run_script(tmp_path, script: dict[int, list[Command]], *, autostart: bool = True, episodes: int = 3,
               reset_time_s: float = 10.0, store_name: str = "keys.zarr", hold_at_end: bool = False):
    """Run a session to its end; returns (session, arm, store, [(tick, state, message, episode)])."""
    store = open_store(tmp_path / store_name)
    seen: list[tuple[int, RecorderState, str, int]] = []
    commands = TickScript(script)
    session, arm, writer = make_session(store, episodes=episodes, reset_time_s=reset_time_s, autostart=autostart,
                                        commands=commands, hold_at_end=hold_at_end,
                                        publish=lambda s: seen.append((commands.tick - 1, s.state, s.message,
                                                                       s.episode)))
    session.run()
    writer.close()
    return session, arm, store, seen


def at(seen, tick):
    return next(entry for entry in seen if entry[0] == tick)


def reach(state: RecorderState) -> dict[int, list[Command]]:
    """Commands that bring a session (run as `in_state` says) into `state` by AT[state]."""
    return {AT[RecorderState.PAUSED] - 5: [Command.PAUSE]} if state is RecorderState.PAUSED else {}


def in_state(state: RecorderState) -> dict:
    """run_script's settings for reaching `state`: autostart unless IDLE; DONE after the
    only episode of a session that holds at its end."""
    done = state is RecorderState.DONE
    return {"autostart": state is not RecorderState.IDLE, "hold_at_end": done, **({"episodes": 1} if done else {})}


@pytest.mark.parametrize("state", keys.STATES, ids=lambda s: s.value)
def test_a_key_with_no_meaning_says_so_and_changes_nothing(tmp_path, state):
    ignored = [c for c in Command if keys.effect(c, state) is None]
    assert ignored, state
    for command in ignored:
        tick = AT[state]
        script = {**reach(state), tick: [command], tick + 3: [Command.QUIT]}
        _, _, _store, seen = run_script(tmp_path / command.value, script, **in_state(state))
        before, after = at(seen, tick - 1), at(seen, tick)
        assert before[1] is state, (command, before)
        assert after[1] is state and after[3] == before[3], (command, after)
        assert after[2] == keys.ignored(command, state)
        assert f"ignored while {state.value}" in after[2]


def test_space_p_space_and_numbering_by_store_index_after_resume(tmp_path):
    # A store already holding two episodes: this run's are 2, 3 on every line.
    run_script(tmp_path, {}, episodes=2, reset_time_s=0.0)[2].close()
    session, _, store, seen = run_script(tmp_path, {5: [Command.STOP], 8: [Command.START]}, episodes=2,
                                         reset_time_s=10.0)
    assert len(store) == 4 and session.first_episode == 2
    messages = [m for _, _, m, _ in seen]
    assert "recording episode 2 (1/2 of this run)" in messages
    assert any(m.startswith("episode 2 recorded (5 frames)") for m in messages)
    assert "recording episode 3 (2/2 of this run)" in messages
    assert {e.index for e in session.status.episodes} == {2, 3}
    assert [e.length for e in store.episodes[2:]] == [5, EPISODE_TICKS]


def test_p_while_recording_saves_the_take_and_holds_until_space(tmp_path):
    script = {10: [Command.PAUSE], 400: [Command.START]}
    _, _, store, seen = run_script(tmp_path, script, episodes=2)
    assert store.episode(0).length == 10  # nothing lost: the take up to p is saved
    # Held far past the 10 s reset: no countdown runs while paused.
    assert all(state is RecorderState.PAUSED for tick, state, _, _ in seen if 11 <= tick < 400)
    assert at(seen, 400)[1] is RecorderState.RECORDING and at(seen, 400)[3] == 1
    assert len(store) == 2


def test_between_takes_every_view_shows_the_reset_not_the_last_takes_time(tmp_path):
    """The header, `monitor --lines` and `record --no-tui` showed the take just saved's time
    under the next episode's number while paused, and the --no-tui lines during the reset."""
    from shallowpi.tui.recorder_render import clock_text

    store = open_store(tmp_path / "clock.zarr")
    commands, clocks = TickScript({10: [Command.PAUSE], 20: [Command.PAUSE], 30: [Command.PAUSE],
                                   40: [Command.START]}), {}
    session, _, writer = make_session(store, episodes=2, reset_time_s=10.0, commands=commands,
                                      publish=lambda s: clocks.setdefault(commands.tick - 1, clock_text(s)))
    session.run()
    writer.close()
    assert clocks[5] == "t=0.2/1s"  # recording episode 0
    assert clocks[15] == "reset held, 10.0s left"  # p while recording: the take saved, the reset held
    assert clocks[25].startswith("reset ") and clocks[25].endswith("s left")  # p again: counting down
    assert clocks[35] == f"reset held, {clocks[29][6:-6]}s left"  # held where it was


def test_p_during_the_reset_holds_the_countdown_and_p_resumes_it(tmp_path):
    # Episode 0 ends at tick 30; the 10 s reset would end at tick 330. Held from 40 to 500.
    script = {40: [Command.PAUSE], 500: [Command.PAUSE]}
    _, _, store, seen = run_script(tmp_path, script, episodes=2)
    assert all(state is RecorderState.PAUSED for tick, state, _, _ in seen if 40 <= tick < 500)
    assert "held with 9.6 s left" in at(seen, 40)[2]
    started = next(tick for tick, state, _, _ in seen if tick > 500 and state is RecorderState.RECORDING)
    assert started - 500 == pytest.approx(9.6 * FPS, abs=2)  # the countdown went on where it stopped
    assert len(store) == 2


def test_d_during_the_reset_deletes_the_episode_just_saved_and_records_it_again(tmp_path):
    script = {40: [Command.DISCARD], 45: [Command.DISCARD]}
    session, _, store, seen = run_script(tmp_path, script, episodes=2, reset_time_s=1.0)
    assert "episode 0 deleted from the store" in at(seen, 40)[2]
    assert at(seen, 45)[2].startswith("nothing to delete")  # a second d deletes nothing more
    assert len(store) == 2 and session.result.deleted == 1  # two episodes kept, as asked
    assert store.check() == []
    assert at(seen, 40)[3] == 0  # the next take is episode 0 again


def test_r_during_the_reset_deletes_and_records_the_same_index_now(tmp_path):
    session, _, store, seen = run_script(tmp_path, {40: [Command.RERECORD]}, episodes=2)
    assert at(seen, 40)[1] is RecorderState.RECORDING and at(seen, 40)[3] == 0
    assert len(store) == 2 and session.result.deleted == 1 and store.check() == []


def test_r_and_d_while_recording_discard_the_take(tmp_path):
    script = {10: [Command.RERECORD], 20: [Command.DISCARD]}
    session, _, store, seen = run_script(tmp_path, script, episodes=1, reset_time_s=1.0)
    assert at(seen, 10)[1] is RecorderState.RECORDING  # again at once
    assert at(seen, 10)[2] == "episode 0: take discarded; recording it again"  # not only "recording episode 0"
    assert at(seen, 20)[1] is RecorderState.RESETTING  # after the reset
    assert session.result.discarded == 2 and len(store) == 1
    assert store.episode(0).length == session.status.episodes[-1].frames >= EPISODE_TICKS - 1


def test_d_pressed_twice_on_a_recording_screen_discards_the_take_and_deletes_nothing(tmp_path):
    """Both presses leave while the screen still shows RECORDING: the first discards the take,
    the second reaches a resetting recorder, where d would delete the episode saved before
    it. It is refused, saying so; a d pressed on a screen that shows the reset deletes."""
    # 1 s takes, 1 s resets: episode 0 saved at tick 30, episode 1 recording from tick 60
    recording = Request(Command.DISCARD, RecorderState.RECORDING.value)
    script = {70: [recording, recording], 80: [Request(Command.DISCARD, RecorderState.RESETTING.value)],
              85: [Command.QUIT]}
    session, _, store, seen = run_script(tmp_path, script, episodes=3, reset_time_s=1.0)
    assert at(seen, 69)[1] is RecorderState.RECORDING and at(seen, 70)[1] is RecorderState.RESETTING
    assert at(seen, 70)[2].startswith("d ignored: pressed while recording (discard the take")
    assert "where it would delete the episode this run saved last" in at(seen, 70)[2]
    assert session.result.discarded == 1 and len(store) == 0  # the take; episode 0 by the reset's d
    assert "episode 0 deleted from the store" in at(seen, 80)[2] and session.result.deleted == 1


def test_a_key_is_refused_only_where_it_would_now_do_something_else():
    """The key table's words decide: s meant "mark the take", and now would "mark the
    episode saved last" (the same one, unless a d came between): refused, the operator
    presses again. A key that does the same in both states acts, as does an E-STOP, and a
    command sent without the state it was meant for (a script)."""
    take = keys.overtaken(Request(Command.SUCCESS, RecorderState.RECORDING.value), RecorderState.RESETTING)
    assert take is not None and take.endswith("press it again to do that")
    assert keys.overtaken(Request(Command.PAUSE, "paused"), RecorderState.PAUSED) is None
    assert keys.overtaken(Request(Command.DISCARD), RecorderState.RESETTING) is None
    assert keys.overtaken(Request(Command.ESTOP, "recording"), RecorderState.RESETTING) is None
    assert keys.overtaken(Request(Command.START, "idle"), RecorderState.PAUSED) is None  # same act


def test_s_pressed_on_a_take_that_was_saved_meanwhile_marks_it_and_not_another(tmp_path):
    """s on the screen of take 0 reaching the recorder just after the take's time ran out:
    "mark the take" then, "mark the episode saved last" now, the same episode, so it acts.
    The same key for take 1, discarded by a d in between, would mark episode 0: refused."""
    script = {32: [Request(Command.SUCCESS, RecorderState.RECORDING.value, 0)],
              70: [Request(Command.DISCARD, RecorderState.RECORDING.value, 1)],
              72: [Request(Command.FAILURE, RecorderState.RECORDING.value, 1)], 75: [Command.QUIT]}
    _session, _, store, seen = run_script(tmp_path, script, episodes=3, reset_time_s=1.0)
    assert at(seen, 32)[1] is RecorderState.RESETTING
    assert "episode 0 marked successful in the store" in at(seen, 32)[2]
    assert at(seen, 72)[2].startswith("f ignored: pressed while recording (mark the take failed")
    assert [e.success for e in store.episodes] == [True]


@pytest.mark.parametrize("after", [Command.DISCARD, Command.RERECORD])
def test_a_key_after_space_in_the_same_tick_keeps_the_last_take(tmp_path, after):
    """space saves the last take and ends the run; a d or r read in the same tick must not
    be taken for a key on a take in flight (the saved one counted discarded, or a new
    take begun and thrown away)."""
    session, _, store, seen = run_script(tmp_path, {10: [Command.STOP, after]}, episodes=1)
    assert len(store) == 1 and session.result.discarded == 0 and session.result.deleted == 0
    assert session.status.episodes[-1].state in ("saving", "saved")
    assert f"{keys.KEY[after]} ({after.value}) ignored while stopped" in at(seen, 10)[2]


def test_with_hold_at_end_the_follower_is_teleoperated_after_the_last_take_until_q(tmp_path):
    """On a robot the run's end turned torque off at once, dropping the follower wherever
    the last take left it. Holding at the end, teleoperation goes on, nothing recorded,
    until q (or Ctrl-C), and the run is complete, not interrupted; s still marks the last
    episode."""
    script = {60: [Command.SUCCESS], 200: [Command.QUIT]}
    session, arm, store, seen = run_script(tmp_path, script, episodes=1, hold_at_end=True)
    assert all(state is RecorderState.DONE for tick, state, _, _ in seen if EPISODE_TICKS < tick < 200)
    assert at(seen, EPISODE_TICKS + 1)[2].startswith("all 1 episode(s) recorded; the follower still follows")
    assert "episode 0 marked successful in the store" in at(seen, 60)[2]
    assert session.teleop.t >= 200 and arm.torque_offs == 0  # followed to the end; torque is the rig's to end
    assert not session.result.interrupted and session.status.state is RecorderState.STOPPED
    assert len(store) == 1 and store.episode(0).length == EPISODE_TICKS and store.episode(0).success is True


@pytest.mark.parametrize(("key", "then"), [(Command.DISCARD, RecorderState.RESETTING),
                                           (Command.RERECORD, RecorderState.RECORDING)])
def test_d_or_r_once_every_episode_is_saved_records_the_last_one_again(tmp_path, key, then):
    script = {40: [key], 250: [Command.QUIT]}
    session, _, store, seen = run_script(tmp_path, script, episodes=1, reset_time_s=1.0, hold_at_end=True)
    assert at(seen, 39)[1] is RecorderState.DONE and at(seen, 40)[1] is then and at(seen, 40)[3] == 0
    assert at(seen, 249)[1] is RecorderState.DONE  # the episode recorded again: done again
    assert len(store) == 1 and session.result.deleted == 1 and store.episode(0).length == EPISODE_TICKS


def test_marks_after_saving_are_what_the_store_holds(tmp_path):
    script = {5: [Command.FAILURE], 40: [Command.SUCCESS], 80: [Command.FAILURE]}
    _session, _, store, seen = run_script(tmp_path, script, episodes=2, reset_time_s=1.0)
    assert "episode 0 marked successful in the store" in at(seen, 40)[2]
    assert "episode 1 marked failed (stored with it)" in at(seen, 80)[2]
    assert [e.success for e in store.episodes] == [True, False]  # f on the take, then s after saving


def test_n_and_space_end_the_reset_and_idle(tmp_path):
    _, _, store, seen = run_script(tmp_path, {2: [Command.NEXT], 40: [Command.NEXT]}, autostart=False, episodes=2)
    assert at(seen, 1)[1] is RecorderState.IDLE and at(seen, 2)[1] is RecorderState.RECORDING
    assert at(seen, 40)[1] is RecorderState.RECORDING and at(seen, 40)[3] == 1
    assert len(store) == 2


@pytest.mark.parametrize("state", keys.STATES, ids=lambda s: s.value)
def test_e_stop_in_every_state_switches_torque_off_and_ends_with_a_fault(tmp_path, state):
    script = {**reach(state), AT[state]: [Command.ESTOP]}
    session, arm, store, _seen = run_script(tmp_path, script, **in_state(state))
    assert arm.torque_offs == 1
    assert session.status.state is RecorderState.FAULT and session.result.fault.startswith("e-stop pressed")
    assert session.status.message.startswith("E-STOP: torque off")
    assert len(store) == (0 if state in (RecorderState.IDLE, RecorderState.RECORDING) else 1)


def test_e_stop_switches_torque_off_before_the_take_goes_to_the_writer_which_may_fail(tmp_path):
    """The writer can block (a commit's fsyncs fill its queue) or have died: the robot is
    made safe first, and a writer that fails to discard the take does not escape run()."""
    store = open_store(tmp_path / "estop.zarr")
    session, arm, writer = make_session(store, episodes=3, commands=TickScript({10: [Command.ESTOP]}))
    torque_at_discard = []

    def failing_discard(give_up=None):
        torque_at_discard.append(arm.torque_offs)
        raise WriterError("disk full")

    writer.discard = failing_discard
    session.run()  # does not raise
    writer.close()
    assert torque_at_discard == [1] and arm.torque_offs == 1
    assert session.status.state is RecorderState.FAULT and session.status.message.startswith("E-STOP: torque off")


def test_the_final_summary_reads_marks_and_deletes_back_from_the_store(tmp_path):
    from shallowpi.commands.record_cmd import final_summary

    # Episode 0 marked failed while recording, successful after saving, then deleted with
    # d and recorded again (unmarked); episode 1 marked successful while recording.
    script = {5: [Command.FAILURE], 35: [Command.SUCCESS], 40: [Command.DISCARD], 125: [Command.SUCCESS]}
    session, _, store, _ = run_script(tmp_path, script, episodes=2, reset_time_s=1.0)
    text = final_summary(store.episodes[session.first_episode:], session.result, store.path, len(store))
    assert text.splitlines()[0] == (f"recorded 2 episode(s) into {store.path} (episodes 0-1; it holds 2), "
                                    "1/1 successful, 1 deleted after saving")
    assert text.splitlines()[1].endswith(f"platform dataset show {store.path} --episode 1")


def _fail_second_commit(monkeypatch, *, after_third: str) -> None:
    """The writer thread's second commit raises ENOSPC, but only once the session has handed
    the writer the third take's `after_third` ("begin": the take has started; "commit": it
    is queued whole). Without the wait the outcome hangs on which thread is faster."""
    import errno
    import threading

    from shallowpi.data.episode_writer import EpisodeWriter
    from shallowpi.record.writer import BackgroundWriter

    real_commit, real_handover = EpisodeWriter.commit, getattr(BackgroundWriter, after_third)
    calls, handed, released = [], [], threading.Event()

    def handover(self, *args, **kwargs):
        result = real_handover(self, *args, **kwargs)  # queued first, then the failure may come
        handed.append(1)
        if len(handed) == 3:
            released.set()
        return result

    def commit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            if not released.wait(60):  # raised here it would only read as another writer failure
                raise RuntimeError(f"the session never handed the writer the third take's {after_third}")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(BackgroundWriter, after_third, handover)
    monkeypatch.setattr(EpisodeWriter, "commit", commit)


def test_takes_a_failing_writer_never_saved_are_shown_lost_and_counted(tmp_path, monkeypatch):
    """The disk fills while the second take is written and the third is queued behind it:
    neither is in the store, so neither may stay "saving" on the dashboard nor go uncounted."""
    from shallowpi.commands.record_cmd import final_summary

    _fail_second_commit(monkeypatch, after_third="commit")
    session, _, store, _ = run_script(tmp_path, {}, episodes=3, reset_time_s=0.5)
    session.writer_closed()  # as `platform record` does once the writer is closed
    assert session.writer.failure is not None and "ENOSPC" in str(session.writer.failure)
    assert len(store) == 1 and session.result.lost == 2  # the second take, and the third queued behind it
    states = [e.state for e in session.status.episodes]
    assert states == ["saved", "lost", "lost"]
    assert "take(s) LOST: the writer failed before saving them" in final_summary(
        store.episodes, session.result, store.path, len(store))


def test_a_writer_failure_seen_while_recording_stops_the_run_and_discards_the_take(tmp_path, monkeypatch):
    """The other order: the second take's commit fails after the third has begun and before
    it ends (a tick in its middle waits for the failure). The session faults at its next
    tick and holds the robot; the take in flight never reaches a dead writer (discarded),
    the second is lost, the first stays saved."""
    import time

    _fail_second_commit(monkeypatch, after_third="begin")
    store = open_store(tmp_path / "keys.zarr")
    writer_of: list = []
    third_take_tick = 2 * (EPISODE_TICKS + int(0.5 * FPS)) + 10  # two takes, two 0.5 s resets, 10 ticks in

    def commands() -> list[Command]:
        commands.tick += 1
        if commands.tick == third_take_tick:  # the failure lands before the take can end
            deadline = time.monotonic() + 60
            while writer_of[0].failure is None and time.monotonic() < deadline:
                time.sleep(0.01)
        return []

    commands.tick = 0
    session, _, writer = make_session(store, episodes=3, reset_time_s=0.5, commands=commands)
    writer_of.append(writer)
    session.run()
    writer.close()
    session.writer_closed()
    assert "ENOSPC" in session.result.fault and "holding position" in session.result.fault
    assert len(store) == 1 and session.result.lost == 1 and session.result.discarded == 1
    assert [e.state for e in session.status.episodes] == ["saved", "lost", "discarded"]


def test_a_take_whose_hand_over_meets_a_dead_writer_is_counted_lost(tmp_path, monkeypatch):
    """The writer dies while the loop hands it a finished take (the queue full, the disk
    behind): the take was counted nowhere, its row stayed "recording" and the closing
    "take(s) LOST" line left it out."""
    import time

    from shallowpi.record.writer import BackgroundWriter, WriterError

    real_commit, calls = BackgroundWriter.commit, []

    def commit(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the thread stopped while the second take was being handed over
            deadline = time.monotonic() + 60
            while self.stats().committed_count < 1 and time.monotonic() < deadline:  # the first is stored
                time.sleep(0.01)
            self._failure = WriterError("writing keys.zarr failed: No space left on device (ENOSPC)")
            raise self._failure
        return real_commit(self, *args, **kwargs)

    monkeypatch.setattr(BackgroundWriter, "commit", commit)
    session, _, store, _ = run_script(tmp_path, {}, episodes=3, reset_time_s=0.5)
    session.writer_closed()
    assert "ENOSPC" in session.result.fault
    assert len(store) == 1 and session.result.lost == 1 and session.result.discarded == 0
    assert [e.state for e in session.status.episodes] == ["saved", "lost"]


@contextlib.contextmanager
def _stalled(tmp_path, capacity: int, episode_time_s: float, commands):
    """A session whose writer stalls at its first episode's start (a USB drive's hiccup) with
    a queue of `capacity` frames, run on a thread while the block runs: yields (session,
    arm, writer, store); on leaving, the stall ends and the session and writer finish."""
    import threading

    from recorder_fixtures import JOINTS, FakeArm, SineTeleop
    from shallowpi.record.clock import SimulatedClock
    from shallowpi.record.session import RecordingSession, SessionConfig
    from shallowpi.record.writer import BackgroundWriter

    store = open_store(tmp_path / "stall.zarr")
    release, begin = threading.Event(), store.begin_episode

    def stalled_begin(*args, **kwargs):
        release.wait(10)
        return begin(*args, **kwargs)

    store.begin_episode = stalled_begin
    writer = BackgroundWriter(store, capacity_frames=capacity)
    arm = FakeArm()
    config = SessionConfig(task="wave", episodes=1, episode_time_s=episode_time_s, reset_time_s=0, fps=30)
    session = RecordingSession(config, arm, SineTeleop(), writer, SimulatedClock(30), JOINTS, commands=commands)
    loop = threading.Thread(target=session.run)
    loop.start()
    try:
        yield session, arm, writer, store
    finally:
        release.set()
        loop.join(30)
        writer.close()


def _torque_off_within(arm, seconds: float, pressed: float, why: str) -> None:
    import time

    while arm.torque_offs == 0:
        assert time.monotonic() - pressed < seconds, why
        time.sleep(0.01)


def test_an_estop_acts_while_the_take_waits_to_be_handed_to_a_stalled_writer(tmp_path):
    """A take's end hands its commit to the writer, which waits for room like a frame when
    the disk is behind; that wait read no keys, so the E-STOP waited for the disk (3 s
    here, as long as the stall). It acts at once; the take is discarded, as any take an
    E-STOP interrupts."""
    import time

    pending: list[Command] = []
    # The take's 8 frames fill the queue: the commit waits.
    with _stalled(tmp_path, 8, 8 / 30, lambda: [pending.pop() for _ in range(len(pending))]) as (
            session, arm, writer, store):
        time.sleep(0.5)
        assert writer.stats().queue_depth == 8 and arm.torque_offs == 0  # the loop waits on the commit
        pending.append(Command.ESTOP)
        _torque_off_within(arm, 1.0, time.monotonic(), "the e-stop waited for the disk")
    assert session.result.fault == "e-stop pressed; torque off, robot is safe"
    assert session.result.discarded == 1 and len(store) == 0


def test_a_take_whose_commit_fails_after_its_commit_point_is_saved_not_lost(tmp_path):
    """The commit record's rename is the commit point; a failure after it (the folder's
    sync: EIO on a failing disk) reached the writer before it counted the episode, so the
    run reported the take LOST though the store holds it, inviting a duplicate re-record."""
    import errno

    store = open_store(tmp_path / "late.zarr")
    write_record = store._write_commit_record

    def sync_fails_after_the_rename(*args, **kwargs):
        write_record(*args, **kwargs)
        raise OSError(errno.EIO, "fsync of meta/ failed", str(store.path / "meta"))

    store._write_commit_record = sync_fails_after_the_rename
    session, _, writer = make_session(store, episodes=1, episode_time_s=0.5)
    result = session.run()
    writer.close()
    session.writer_closed()
    assert writer.failure is not None and len(store) == 1  # the disk failed; the episode is in
    assert result.lost == 0 and [e.state for e in session.status.episodes] == ["saved"]


def test_estop_after_the_session_ended_turns_torque_off_and_says_so(tmp_path):
    """What the recorder's own dashboard's E-STOP does while a fault waits for its
    acknowledgement (the robot held, torque on): torque off, in the status and the result."""
    store = open_store(tmp_path / "after.zarr")
    published = []
    session, arm, writer = make_session(store, episodes=1, publish=lambda s: published.append(s.message))
    session.run()
    writer.close()
    session.result.fault = "servo 3: overload"
    session.estop_after_end()
    assert arm.torque_offs == 1
    assert session.result.fault == "servo 3: overload; then e-stop pressed: torque off, robot is safe"
    assert published[-1] == "E-STOP: torque off, robot is safe"


def test_an_estop_read_beside_a_stop_acts_first(tmp_path):
    """One tick read [STOP, ESTOP]: the STOP handed its take to a writer whose queue was
    full and waited there (asking only for commands not yet read), the E-STOP behind it in
    the same batch unheard until the disk came back."""
    import time

    # Full after 3 frames: the STOP's commit waits.
    with _stalled(tmp_path, 3, 30.0, TickScript({3: [Command.STOP, Command.ESTOP]})) as (session, arm, _, _):
        _torque_off_within(arm, 3.0, time.monotonic(), "the e-stop waited behind the stop")
    assert session.result.fault == "e-stop pressed; torque off, robot is safe"


def test_a_key_pressed_on_one_take_does_not_act_on_the_next_in_the_same_state(tmp_path):
    """Without a reset the recorder goes from take 0 to take 1 in one tick, both screens
    RECORDING: s and r pressed on take 0's screen landed on take 1 (marked it successful,
    then threw its first second away) while episode 0, the one meant, stayed unmarked.
    Now s marks episode 0, saved meanwhile, and r (re-record the take) is refused, saying
    which episode the recorder is at."""
    meant = [Request(Command.SUCCESS, RecorderState.RECORDING.value, 0),
             Request(Command.RERECORD, RecorderState.RECORDING.value, 0)]
    session, _, store, seen = run_script(tmp_path, {EPISODE_TICKS + 5: meant}, episodes=2, reset_time_s=0.0)
    state, message, episode = at(seen, EPISODE_TICKS + 5)[1:]
    assert state is RecorderState.RECORDING and episode == 1
    assert message.startswith("r ignored: pressed on the screen of episode 0, the recorder is at episode 1 now")
    assert session.result.discarded == 0 and len(store) == 2
    assert [e.success for e in store.episodes] == [True, None]
    # the same keys pressed on take 1's screen act on it
    session, _, store, seen = run_script(tmp_path, {EPISODE_TICKS + 5: [
        Request(Command.SUCCESS, RecorderState.RECORDING.value, 1)]}, episodes=2, reset_time_s=0.0,
        store_name="again.zarr")
    assert [e.success for e in store.episodes] == [None, True]


def test_space_or_p_pressed_on_a_take_that_hit_its_time_limit_does_not_cut_the_next_short(tmp_path):
    """Without a reset take 1 begins the tick after take 0 hits its time limit, both screens
    RECORDING: a space or p pressed on take 0's screen (a tenth of a second behind) ended
    take 1 after a few rows and saved those as an episode, counted among those asked for.
    Refused now, saying take 0 had ended; pressed on take 1's screen, space acts."""
    script = {EPISODE_TICKS + 2: [Request(Command.STOP, RecorderState.RECORDING.value, 0)],
              EPISODE_TICKS + 4: [Request(Command.PAUSE, RecorderState.RECORDING.value, 0)],
              EPISODE_TICKS + 10: [Request(Command.STOP, RecorderState.RECORDING.value, 1)]}
    _session, _, store, seen = run_script(tmp_path, script, episodes=2, reset_time_s=0.0)
    for tick, key in ((EPISODE_TICKS + 2, "space"), (EPISODE_TICKS + 4, "p")):
        state, message, episode = at(seen, tick)[1:]
        assert state is RecorderState.RECORDING and episode == 1, (key, state, episode)
        assert message.startswith(f"{key} ignored: take 0, on whose screen it was pressed, had already ended "
                                  "at its time limit; nothing changed"), message
    assert [e.length for e in store.episodes] == [EPISODE_TICKS, 10]  # take 1 ended by its own space
    assert [e.extra["ended"] for e in store.episodes] == ["time limit", "stopped"]
    # Between takes p holds or resumes the reset whichever episode the screen showed.
    assert keys.overtaken(Request(Command.PAUSE, "resetting", 2), RecorderState.RESETTING, 1) is None
    assert keys.overtaken(Request(Command.PAUSE, "paused", 2), RecorderState.PAUSED, 1) is None


def test_r_between_takes_says_the_saved_episode_was_deleted(tmp_path, caplog):
    """r during the reset deletes episode 0 from the store and records it again: the answer
    that said so was replaced in the same tick by "recording episode 0", so neither the
    screen, the --no-tui lines nor the run's log told that a saved episode was gone."""
    with caplog.at_level(logging.INFO, logger="shallowpi.record.session"):
        session, _, store, seen = run_script(tmp_path, {40: [Command.RERECORD]}, episodes=2)
    assert at(seen, 40)[1] is RecorderState.RECORDING and at(seen, 40)[3] == 0
    assert at(seen, 40)[2] == "episode 0 deleted from the store; recording it again"
    logged = [r.getMessage() for r in caplog.records if r.name == "shallowpi.record.session"]
    assert "episode 0 deleted from the store; recording it again" in logged
    assert len(store) == 2 and session.result.deleted == 1


@pytest.mark.parametrize("seen", [RecorderState.RESETTING, RecorderState.PAUSED], ids=lambda s: s.value)
def test_s_pressed_between_takes_arriving_once_the_next_take_began_marks_the_episode_saved_last(tmp_path, seen):
    """s on the screen of the reset (or a pause) after episode 0, which shows episode 1 as
    the next, means "mark episode 0". Arriving just after take 1 began it was refused with
    "press it again", which would mark take 1: episode 0's mark was lost. It marks episode 0."""
    # 1 s takes, 1 s resets: episode 0 saved at tick 30, episode 1 recording from tick 60
    script = {62: [Request(Command.SUCCESS, seen.value, 1)], 70: [Command.QUIT]}
    _session, _, store, seen_ = run_script(tmp_path, script, episodes=3, reset_time_s=1.0)
    assert at(seen_, 61)[1] is RecorderState.RECORDING and at(seen_, 62)[3] == 1
    assert "episode 0 marked successful in the store" in at(seen_, 62)[2]
    assert [e.success for e in store.episodes] == [True, None]  # take 1, saved on q, unmarked


def test_s_after_the_episode_saved_last_was_deleted_says_so(tmp_path):
    """After a d between takes, s said "no episode of this run is saved" though episode 0
    was: it names the deleted one, and so does a second d."""
    # episode 0 saved at tick 30, episode 1 recorded from tick 60 and saved at tick 90
    script = {95: [Command.DISCARD], 97: [Command.SUCCESS], 99: [Command.DISCARD], 101: [Command.QUIT]}
    session, _, store, seen = run_script(tmp_path, script, episodes=3, reset_time_s=1.0)
    assert "episode 1 deleted from the store" in at(seen, 95)[2]
    gone = "episode 1, the one this run saved last, was deleted from the store"
    assert at(seen, 97)[2].startswith(f"nothing to mark: {gone}"), at(seen, 97)[2]
    assert at(seen, 99)[2].startswith(f"nothing to delete: {gone}"), at(seen, 99)[2]
    assert len(store) == 1 and session.result.deleted == 1 and store.episode(0).success is None
