"""What a run leaves to diagnose it by: the exit code and --json of a deployment whose
recording failed, the log files of a recording and a deployment (the session's end, an
E-STOP, dated lines), the traceback -v shows, and the lines held while a dashboard ran."""

from __future__ import annotations

import errno
import io
import json
import logging
import re
import subprocess
from pathlib import Path

import pytest

from conftest import platform_cmd, subprocess_env
from shallowpi.cli import main, parse_command

pytestmark = pytest.mark.timeout(240)

# 2026-12-07T18:22:01.123+01:00: the date, the local time and its UTC offset (ISO 8601).
DATED = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d"


def _disk_full(self, *args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _deploy_tiny(tmp_path: Path, *words: str) -> tuple[int, dict]:
    """`platform deploy --sim` in this process (so a test can make the recorder's commit
    fail) of a tiny untrained checkpoint reading the arm's front camera, with torch, for
    half-second episodes; its exit code and its --json (tmp_path/run.json)."""
    from deploy_fixtures import tiny_checkpoint

    ckpt = tiny_checkpoint(tmp_path / "ckpt", state=7, cameras=("front",))
    args = parse_command(["deploy", "--policy", str(ckpt), "--robot", "arm", "--backend", "torch",
                          "--episode-time-s", "0.5", "--no-tui", "--json", str(tmp_path / "run.json"), *words,
                          f"telemetry.address={tmp_path}/deploy.sock"])
    code = args.run(args)
    return code, json.loads((tmp_path / "run.json").read_text())


def test_a_deploy_whose_last_recording_is_lost_fails_and_its_json_and_log_say_so(tmp_path, monkeypatch, capsys):
    """The last episode's commit fails after the loop (the disk full; `end` only queues it):
    the run exited 0 with "complete": true and a line on stdout while the store held nothing.
    Now exit 1, the error on stderr, --json's "recording" counts the episode lost and the run
    incomplete, and the run's log beside --json (run.log) keeps the lines and the error.
    The commit is made to fail by patching EpisodeWriter.commit to raise ENOSPC: no small
    full file system can be mounted here."""
    from shallowpi.data import episode_writer

    monkeypatch.setattr(episode_writer.EpisodeWriter, "commit", _disk_full)
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    captured = capsys.readouterr()
    assert code == 1, captured.out + captured.err
    assert data["complete"] is False and data["safety"]["faults"] == 0  # the loop itself ran as asked
    recording = data["recording"]
    assert recording["path"] == str(tmp_path / "deployed.zarr")
    assert (recording["kept"], recording["lost"]) == (0, 1) and "ENOSPC" in recording["failure"], recording
    assert re.search(r"^error: recording into \S+deployed\.zarr stopped early: .*ENOSPC.*; 1 episode\(s\) of this "
                     r"run LOST, 0 kept$", captured.err, re.M), captured.err
    log_text = (tmp_path / "run.log").read_text()
    assert re.search(rf"^{DATED} INFO shallowpi\.run: episode 1/1 seed 1000: ", log_text, re.M), log_text
    assert "ERROR shallowpi.commands.deploy_recording: recording into" in log_text, log_text
    assert "1 episode(s) of this run lost" in log_text and re.search(r"INFO shallowpi\.run: success [01]/1 \| ",
                                                                     log_text), log_text


def test_a_deploy_keeps_its_log_on_disk_and_its_json_says_what_was_recorded(tmp_path):
    """The same run, the disk sound. A deploy's log was held in memory only (with the dashboard:
    printed at exit, which a SIGKILL or a native crash never reaches): it is written as the run
    goes, beside --json (else in a deploy-logs/ folder beside the bundle); "recording" says where
    the episodes went and how many, the run complete."""
    code, data = _deploy_tiny(tmp_path, "--sim", "--episodes", "1", "--record", str(tmp_path / "deployed"))
    assert (tmp_path / "run.log").is_file(), sorted(p.name for p in tmp_path.iterdir())
    log_text = (tmp_path / "run.log").read_text()
    assert re.search(rf"^{DATED} INFO shallowpi\.run: warmed up: ", log_text, re.M), log_text
    assert code == 0
    assert data["recording"] == {"path": str(tmp_path / "deployed.zarr"), "kept": 1, "lost": 0, "failure": None}
    assert data["complete"] is True
    from shallowpi.commands.deploy_cmd import _log_path

    unnamed = _log_path(parse_command(["deploy", "--policy", "ckpt"]), tmp_path / "ckpt.bundle")
    assert unnamed.parent == tmp_path / "deploy-logs" and re.fullmatch(r"deploy-\d{8}-\d{6}\.log", unnamed.name)


def test_log_lines_on_stderr_carry_the_date_and_the_utc_offset(tmp_path):
    """stderr's log lines said `18:22:01 DEBUG ...`: no date, no zone, nothing to place them by
    in a log read days later or beside one kept in UTC."""
    done = subprocess.run(platform_cmd("-v", "dataset", "list", "--data-root", str(tmp_path)),
                          env=subprocess_env(), capture_output=True, text=True, timeout=120)
    logged = [line for line in done.stderr.splitlines() if " DEBUG " in line]
    assert logged, done.stderr[-3000:]
    assert all(re.match(rf"{DATED} DEBUG \S+: ", line) for line in logged), logged[:3]


def test_a_no_tui_recording_keeps_a_dated_log_with_its_end_in_the_store(tmp_path):
    """`record --no-tui` (under systemd or nohup) wrote no log file at all, and with the
    dashboard the summary was printed after the file was closed. The log is in the store's
    .shallowpi/ with the session's last line; stderr's log lines and the file's carry the date
    and the UTC offset (a time of day alone, `18:22:01`, could not be placed)."""
    done = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                     str(tmp_path), "--dataset", "d", "--no-tui", "record.sim_size=32x32", "--episodes", "1",
                     "--episode-time-s", "0.2", "--reset-time-s", "0", f"telemetry.address={tmp_path}/t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    logs = list((tmp_path / "d.zarr" / ".shallowpi").glob("record-*.log"))
    assert len(logs) == 1, sorted(p.name for p in (tmp_path / "d.zarr" / ".shallowpi").iterdir())
    text = logs[0].read_text()
    assert re.search(rf"^{DATED} INFO shallowpi\.run: recorded 1 episode\(s\) into ", text, re.M), text
    assert re.search(rf"^{DATED} INFO shallowpi\.", done.stderr, re.M), done.stderr[-3000:]
    assert "shallowpi.run" not in done.stderr  # the printed lines are not said twice on the terminal


def test_an_e_stop_and_how_the_recording_stopped_are_in_its_log(tmp_path, monkeypatch, own_signals, capsys):
    """An E-STOP was never logged (the status and the result's line only), and `error:
    recording stopped: ...` was printed after the log's handler was gone: the recorder's log
    did not say what ended the session. The dashboard's E-STOP comes in as a telemetry command."""
    from shallowpi.telemetry.publisher import TelemetryPublisher
    from shallowpi.telemetry.status import Command

    calls = []

    def estop_at_the_tenth_look(self):
        calls.append(1)
        return [Command.ESTOP] if len(calls) == 10 else []

    monkeypatch.setattr(TelemetryPublisher, "commands", estop_at_the_tenth_look)
    assert main(["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--data-root",
                 str(tmp_path), "--dataset", "d", "--no-tui", "record.sim_size=32x32", "--episodes", "3",
                 "--episode-time-s", "5", "--reset-time-s", "0", f"telemetry.address={tmp_path}/t.sock"]) == 1
    assert "error: recording stopped: e-stop pressed" in capsys.readouterr().err
    (log_file,) = (tmp_path / "d.zarr" / ".shallowpi").glob("record-*.log")
    text = log_file.read_text()
    assert "ERROR shallowpi.record.session: E-STOP pressed: torque off, robot is safe" in text, text
    assert "ERROR shallowpi.run: recording stopped: e-stop pressed" in text, text
    assert "INFO shallowpi.run: recorded no episode into " in text, text


def test_an_e_stop_is_logged_as_an_error(tmp_path, caplog):
    """The session said an E-STOP in its status and its result only: a log (the recorder's
    file) read afterwards did not say what ended the session."""
    from recorder_fixtures import TickScript, make_session, open_store
    from shallowpi.telemetry.status import Command

    store = open_store(tmp_path / "e.zarr")
    session, _, writer = make_session(store, episodes=2, episode_time_s=1.0, reset_time_s=0.0,
                                      commands=TickScript({5: [Command.ESTOP]}))
    with caplog.at_level(logging.INFO, logger="shallowpi"):
        result = session.run()
    writer.close()
    store.close()
    assert result.fault.startswith("e-stop pressed")
    said = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "shallowpi.record.session"]
    assert ("ERROR", "E-STOP pressed: torque off, robot is safe; the take in flight is discarded") in said, said


def test_verbose_after_the_subcommand_is_taken_at_every_level():
    """-v was taken before the subcommand only: `platform deploy ... --verbose`, the flag
    added at the end of a command line that failed, was refused as unrecognized."""
    assert parse_command(["config", "show", "--verbose"]).verbose is True
    assert parse_command(["dataset", "list", "-v"]).verbose is True  # a nested subcommand
    assert parse_command(["-v", "config", "show"]).verbose is True  # before it, as always
    assert parse_command(["config", "show"]).verbose is False


def test_verbose_prints_the_traceback_of_what_an_error_wraps(tmp_path, capsys):
    """A store damaged in a way nobody foresaw is one line, `is damaged: JSONDecodeError:
    ...`, its first line only; `report it with the log (--verbose)` led to the same line.
    Under -v the traceback with the exception it wraps comes first, then the one line."""
    store = tmp_path / "bad.zarr"
    store.mkdir()
    (store / ".zgroup").write_text("{not json")
    assert main(["dataset", "info", str(store)]) == 3
    plain = capsys.readouterr().err
    assert plain.startswith("error: ") and "Traceback" not in plain
    level = logging.getLogger("shallowpi").level  # -v sets it for the process: this test's only
    try:
        assert main(["-v", "dataset", "info", str(store)]) == 3
    finally:
        logging.getLogger("shallowpi").setLevel(level)
    err = capsys.readouterr().err
    assert "json.decoder.JSONDecodeError: Expecting property name" in err, err
    assert "The above exception was the direct cause of the following exception" in err
    assert err.rstrip().splitlines()[-1] == plain.rstrip()  # the one line, last


def test_held_log_records_dropped_while_a_dashboard_ran_are_counted():
    """Past its 2000 records the dashboard's ring dropped the oldest silently: a long run lost
    its first warnings unseen. The first line printed now says how many went, and where all are."""
    from shallowpi.tui.launch import hold_terminal_logs

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    handler, kept = logging.StreamHandler(terminal), logging.FileHandler("/dev/null")  # a run's log file
    root, log = logging.getLogger(), logging.getLogger("shallowpi.test_diagnosis")
    root.addHandler(handler)
    root.addHandler(kept)
    try:
        with hold_terminal_logs():
            for n in range(2005):
                log.warning("warning %d", n)
    finally:
        root.removeHandler(handler)
        root.removeHandler(kept)
        kept.close()
    printed = terminal.getvalue().splitlines()
    assert printed[0] == ("5 earlier log record(s) were dropped while the dashboard ran (it keeps the last 2000); "
                          "/dev/null has them all"), printed[:2]
    assert printed[1] == "warning 5" and printed[-1] == "warning 2004" and len(printed) == 2001
