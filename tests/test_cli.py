"""The `platform` command: help, Hydra overrides, one-line errors, dataset subcommands."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT, platform_cmd, subprocess_env
from shallowpi.cli import main
from shallowpi.errors import PlatformError
from store_fixtures import make_store, stamp_episode, synthetic_frame


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(platform_cmd(*args), env=subprocess_env(), capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_help_lists_working_subcommands_with_examples():
    result = run("--help")
    assert result.returncode == 0
    assert "dataset" in result.stdout and "config" in result.stdout
    assert "examples:" in result.stdout
    assert "dataset show" in run("dataset", "--help").stdout


def test_config_show_composes_robot_and_overrides(capsys):
    assert main(["config", "show", "--robot", "humanoid", "store.image_quality=75"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["robot"]["name"] == "humanoid"
    assert "left_shoulder_pitch" in [j["name"] for j in cfg["robot"]["joints"]]
    assert cfg["store"]["image_quality"] == 75
    assert main(["config", "show", "record.sim_noise=1", "policy.train.successful_only=true"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)  # a whole number where the default is 0.0 is a number
    assert (cfg["record"]["sim_noise"], cfg["policy"]["train"]["successful_only"]) == (1, True)
    assert main(["config", "show", "robot=bimanual"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["robot"]["name"] == "bimanual"


def test_config_show_lists_the_training_settings_a_preset_leaves_to_their_defaults(capsys):
    """The run takes TrainConfig's default where a preset omits a setting (no preset names
    seed or skip_nonfinite): the resolved config shows it. distill.train stays as written: what it
    omits is policy.train's value."""
    from shallowpi.train.trainer import TrainConfig

    assert main(["config", "show", "--policy", "teacher", "policy.train.lr=0.002"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    train = cfg["policy"]["train"]
    assert (train["seed"], train["skip_nonfinite"], train["lr"]) == (TrainConfig.seed, TrainConfig.skip_nonfinite, 0.002)
    assert train["steps"] == 9000  # the preset's own value is kept
    assert "device" not in train and "progress" not in train  # train's flags set them; the config refuses them
    assert cfg["distill"]["train"] == {}


def test_output_piped_into_a_reader_that_stops_early_ends_quietly():
    """`platform doctor | head -1`: the write after head had gone raised BrokenPipeError,
    a traceback."""
    import subprocess

    from conftest import platform_cmd, subprocess_env

    # The reader is gone before the first line is written (head, after its lines).
    proc = subprocess.Popen(platform_cmd("config", "show"), env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    stderr = proc.communicate(timeout=120)[1]
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr
    assert proc.returncode == 141


def test_a_leading_double_dash_is_dropped(capsys):
    # What `torchrun ... -m shallowpi -- train --run NAME` may hand on (README, several GPUs).
    assert main(["--", "config", "show", "--robot", "humanoid"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["robot"]["name"] == "humanoid"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["config", "show", "--robot", "octopus"], "unknown robot 'octopus'; choose one of: arm, bimanual, humanoid"),
        (["config", "show", "--jetson", "nano"], "unknown jetson 'nano'; choose one of: cpu, cuda, orin, thor"),
        (["config", "show", "wheels.count=4"], "unknown config key 'wheels.count'"),
        # Hydra's override grammar: its parser's own words, LexerNoViableAltException, were the line.
        (["config", "show", "dataset=it's"], "cannot read the override \"dataset=it's\" (LexerNoViableAlt"),
        (["config", "show", "data_root=/tmp/a,b"], "cannot read the override 'data_root=/tmp/a,b' (Ambiguous value"),
        (["config", "show", "policy.trian.steps=5"], "unknown config key 'policy.trian.steps'; did you mean "
                                                     "policy.train.steps?"),
        # The configs are plain YAML: without the check, text reached a comparison in training.
        (["config", "show", "policy.train.steps=abc"], "policy.train.steps must be a number (its default is "),
        (["config", "show", "--robot", "humanoid", "robot.fps=abc"], "robot.fps must be a number (its default is 30)"),
        (["config", "show", "record.fps=abc"], "record.fps must be a number or null (its default is null), not 'abc'"),
        # a count given a fraction: record.episodes=2.5 recorded 3 without a word
        (["config", "show", "record.episodes=2.5"], "record.episodes must be a whole number (its default is 5), not 2.5"),
        (["config", "show", "policy.train=abc"], "policy.train is a section of settings"),
        # a list given one number, a choice given another word: tracebacks in the optimiser, the recorder
        (["config", "show", "policy.train.betas=0.9"], "policy.train.betas is a list (its default is"),
        (["record", "--sim", "direct", "--dataset", "/nonexistent-dir/choice.zarr", "--task", "cube_in_bowl",
          "record.on_interrupt=maybe"],
         "record.on_interrupt must be save or discard, got 'maybe'"),
        (["config", "show", "policy.train.steps=${nowhere.key}"], "cannot set 'policy.train.steps': Interpolation key"),
        (["config", "show", "policy.train.successful_only=maybe"],
         "policy.train.successful_only must be true or false (its default is false), not 'maybe'"),
        (["config", "show", "--robto", "arm"], "unrecognized arguments: --robto arm; valid options:"),
        # a lab editing its robot file sees the mistake here, not at the first connect
        (["config", "show", "--robot", "arm", "robot.fps=0"], "configs/robot/arm.yaml: fps is 0; give a whole number"),
        (["dataset", "info", "no_such_dataset"], "no dataset at"),
        # merge made a JPEG store and exited 0: it copies the frames and settings as they are
        (["dataset", "merge", "a", "b", "--out", "c", "store.image_codec=blosc-zstd"],
         "dataset merge does not read store.image_codec (it copies the frames, and the first store's"),
        (["dataset", "info", "a", "robot.fps=15"], "dataset info does not read robot.fps; drop robot.fps=15"),
        # it looked for /etc/passwd.zarr, and said none was there
        (["dataset", "info", "/etc/passwd"], "/etc/passwd is a file, not a dataset: a store is a folder (NAME.zarr)"),
        # the π0 loader's answer: "no *.safetensors in /nonexistent-init"
        (["distill", "--dataset", "x", "--init", "/nonexistent-init"], "--init /nonexistent-init: no such checkpoint"),
        # torch's answer was a traceback, after the run's folder was made
        (["train", "--dataset", "x", "--device", "tpu"], "argument --device: unknown device 'tpu'; use auto, cpu"),
        # eval's --device was a CUDA traceback after the policy loaded; cuda:99 is on no machine
        (["eval", "--policy", "p", "--device", "cuda:99"], "argument --device: device 'cuda:99': "),
        # an output under a file failed after the run: the episodes done, the report lost
        (["deploy", "--policy", "p", "--sim", "--json", "/dev/null/run.json"],
         "--json /dev/null/run.json: a file stands where a folder must be"),
        (["sim", "--robot", "arm", "--task", "cube_in_bowl", "--png", "/dev/null/x.png"],
         "--png /dev/null/x.png: a file stands where a folder must be"),
        (["demo", "--robot", "arms"], "unknown robot 'arms'; choose one of: arm, bimanual, humanoid"),
        (["deploy", "--policy", "p", "--bundle-only", "--sim"], "--bundle-only builds the bundle and runs nothing"),
        # --init starts the teacher's training: with a trained --teacher it was ignored, unread
        (["distill", "--dataset", "x", "--teacher", "t", "--init", "nowhere"],
         "--init nowhere starts the teacher's training, and --teacher t is already trained: give one of the two"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_bad_input_answers_in_one_line(args, expected):
    result = run(*args)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


# Null defaults that are text or a section when set: paths, names, serial numbers, lists.
NULL_NOT_A_NUMBER = {
    "data_root", "dataset", "telemetry.address", "demo.deploy_backend", "distill.attention_pairs",
    "distill.teacher_sha256", "jetson.compatible", "jetson.full_speed_mode", "jetson.gpu_arch", "jetson.jetpack",
}


def test_every_null_default_is_known_to_be_a_number_or_not():
    """A null default tells the override check nothing: `config.NUMBER_OR_NULL` names the
    keys whose value is otherwise a number. Every null of every config choice is classed,
    so a key added with a null default cannot skip the check without a word."""
    from omegaconf import DictConfig

    from shallowpi import config

    def nulls(cfg: DictConfig, prefix: str = "") -> set[str]:
        found = set()
        for key, value in cfg.items():
            if isinstance(value, DictConfig):
                found |= nulls(value, f"{prefix}{key}.")
            elif value is None:
                found.add(f"{prefix}{key}")
        return found

    seen: set[str] = set()
    for group in config.groups():  # each choice beside the others' defaults: a group's keys are its own
        for choice in config.group_choices(group):
            seen |= nulls(config.compose([f"{group}={choice}"]))
    serials = {key for key in seen if key.startswith("robot.cameras.") and key.endswith(".serial")}
    assert serials and seen - serials == set(config.NUMBER_OR_NULL) | NULL_NOT_A_NUMBER


# Every count, seed and duration flag parses with cli.at_least: a value of the wrong sign is
# one line before anything runs. `platform sim --seed -5` and `record --sim --seed -1` were a
# numpy traceback (the latter after creating the store); `record --episodes 0` recorded 5.
@pytest.mark.parametrize(("words", "expected"), [
    (["record", "--sim", "--episodes", "0"], "argument --episodes: 0 is not >= 1"),
    (["record", "--sim", "--seed", "-1"], "argument --seed: -1 is not >= 0"),
    (["record", "--sim", "--episode-time-s", "0"], "argument --episode-time-s: 0 is not > 0"),
    (["record", "--reset-time-s", "-2"], "argument --reset-time-s: -2 is not >= 0"),
    # nan passes every comparison, inf every lower bound: an inf countdown froze the dashboard
    (["deploy", "--reset-time-s", "inf"], "argument --reset-time-s: inf is not a finite number"),
    (["record", "--sim", "--episode-time-s", "nan"], "argument --episode-time-s: nan is not a finite number"),
    (["sim", "--seed", "-5"], "argument --seed: -5 is not >= 0"),
    (["sim", "--episodes", "0"], "argument --episodes: 0 is not >= 1"),
    (["eval", "--sim-episodes", "0"], "argument --sim-episodes: 0 is not >= 1"),
    (["eval", "--seed", "-3"], "argument --seed: -3 is not >= 0"),
    (["deploy", "--replan-every", "0"], "argument --replan-every: 0 is not >= 1"),
    (["deploy", "--delay-ms", "-10"], "argument --delay-ms: -10 is not >= 0"),
    (["train", "--steps", "0"], "argument --steps: 0 is not >= 1"),
    (["distill", "--steps", "-1"], "argument --steps: -1 is not >= 1"),
    (["monitor", "--wait-s", "-1"], "argument --wait-s: -1 is not >= 0"),
    (["record", "--episodes", "two"], "argument --episodes: invalid int value: 'two'"),
    (["sim", "--robot", "arm", "--task", "cube_in_bowl", "--png", "x.jpg"], "--png x.jpg: it writes a .png file"),
])
def test_counts_seeds_durations_and_file_kinds_of_the_wrong_sort_are_one_line(words, expected, capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:  # argparse's own exit, or main's for a PlatformError
        raise SystemExit(main([*words, "--data-root", str(tmp_path)] if words[0] == "record" else words))
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and err.count("\n") == 0, err
    assert not list(tmp_path.iterdir())  # nothing was created


@pytest.mark.bad_store  # it ends by damaging a store, to see check name it
def test_dataset_commands_end_to_end(tmp_path):
    store = make_store(tmp_path / "kitchen.zarr", episodes=2, length=12)
    # a take whose camera hiccupped: the recorder counted 7 rows holding a stale picture
    writer = store.begin_episode("put the red cube in the bowl", robot="arm", calibration_id="cal-test", fps=30)
    rng = np.random.default_rng(1)
    for t in range(12):
        writer.add_frame(synthetic_frame(rng, t), t / 30)
    writer.commit(extra={"stale_frames": 7})
    store.close()
    root = ["--data-root", str(tmp_path)]
    listing = run("dataset", "list", *root)
    assert listing.returncode == 0 and "kitchen" in listing.stdout and "3" in listing.stdout
    info = run("dataset", "info", "kitchen", *root).stdout
    assert "put the red cube in the bowl" in info
    rows = [line.split("│") for line in info.splitlines() if line.startswith("│ ") and "arm" in line]
    header = next(line for line in info.splitlines() if "stale" in line).split("┃")
    stale = [r[[h.strip() for h in header].index("stale")].strip() for r in rows]
    assert stale == ["-", "-", "7"], stale  # older takes did not count; this one did
    check = run("dataset", "check", "kitchen", *root)
    assert check.returncode == 0 and "ok, 3 episodes" in check.stdout

    png = tmp_path / "ep.png"
    shown = run("dataset", "show", "kitchen", "--episode", "-1", "--out", str(png), *root)
    assert shown.returncode == 0, shown.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000

    twice = run("dataset", "merge", "kitchen", str(tmp_path / "kitchen.zarr"), "--out", "both", *root)
    assert twice.returncode != 0 and twice.stderr.strip().endswith("kitchen.zarr is given twice: merged, every "
                                                                   "episode of it would be there twice")
    make_store(tmp_path / "pantry.zarr", episodes=3, length=12, seed=2).close()
    merged = run("dataset", "merge", "kitchen", str(tmp_path / "pantry.zarr"), "--out", "both", *root)
    assert merged.returncode == 0, merged.stderr
    assert "6 episodes" in merged.stdout

    deleted = run("dataset", "delete", "both", "--episode", "0", "4", "--yes", *root)
    assert deleted.returncode == 0 and "4 left" in deleted.stdout

    (tmp_path / "both.zarr" / "data" / "action" / "0.0").write_bytes(b"garbage")
    damaged = run("dataset", "check", "both", *root)
    assert damaged.returncode == 1
    assert "action" in damaged.stderr and "Traceback" not in damaged.stderr


def test_dataset_delete_asks_on_a_terminal_naming_each_episode_and_a_no_changes_nothing(tmp_path):
    """The question showed indices only; Ctrl-D at it was an EOFError traceback; the store
    was opened for writing before it was asked (a writer's open cuts a killed recording's
    tail), so a no could still change the store; and a "y" typed before the question was
    its answer. On a terminal (a pty here)."""
    import pty

    from shallowpi.data import EpisodeStore

    make_store(tmp_path / "kitchen.zarr", episodes=3, length=12).close()
    before = sorted(p.name for p in (tmp_path / "kitchen.zarr").rglob("*"))

    def delete_answering(answer: bytes) -> subprocess.CompletedProcess:
        """Run the delete on a terminal: "y" typed ahead (no answer: it is dropped), then
        `answer` once the question shows."""
        import select
        import time

        main_fd, side_fd = pty.openpty()
        words = platform_cmd("dataset", "delete", "kitchen", "--episode", "1", "-1", "--data-root", str(tmp_path))
        proc = subprocess.Popen(words, stdin=side_fd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=subprocess_env())
        try:
            os.write(main_fd, b"y\n")
            shown, deadline = b"", time.monotonic() + 120
            while b"[y/N]" not in shown and time.monotonic() < deadline and proc.poll() is None:
                if select.select([proc.stdout], [], [], 1.0)[0]:
                    shown += os.read(proc.stdout.fileno(), 4096)
            assert b"[y/N]" in shown, shown
            os.write(main_fd, answer)
            out, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
            os.close(main_fd)
            os.close(side_fd)
        return subprocess.CompletedProcess(words, proc.returncode, (shown + out).decode(), err.decode())

    for answer in (b"\x04", b"n\n"):  # Ctrl-D, then a plain no
        declined = delete_answering(answer)
        assert declined.returncode == 1 and "Traceback" not in declined.stderr, declined.stderr
        assert "kitchen.zarr: delete 2 of its 3 episodes, the others numbered anew:" in declined.stdout
        assert 'episode 1: "put the red cube in the bowl", 13 frames, recorded ' in declined.stdout
        assert ", failed" in declined.stdout.split("episode 1:")[1].splitlines()[0]  # make_store fails every second
        assert "nothing deleted" in declined.stdout
        assert sorted(p.name for p in (tmp_path / "kitchen.zarr").rglob("*")) == before
    deleted = delete_answering(b"y\n")
    assert deleted.returncode == 0 and "kitchen.zarr: deleted 2 episode(s), 1 left" in deleted.stdout, deleted.stderr
    with EpisodeStore.open(tmp_path / "kitchen.zarr") as store:
        assert len(store) == 1


def test_dataset_names_resolve_under_the_data_root(tmp_path, monkeypatch):
    from shallowpi import config

    monkeypatch.delenv("SHALLOWPI_DATA_ROOT", raising=False)
    assert config.resolve_dataset("kitchen") == config.REPO_ROOT / "datasets" / "kitchen.zarr"
    assert config.resolve_dataset("kitchen", tmp_path) == tmp_path / "kitchen.zarr"
    assert config.resolve_dataset("runs/kitchen.zarr") == config.Path("runs/kitchen.zarr")
    assert config.resolve_dataset(f"{tmp_path}/new") == tmp_path / "new.zarr"
    assert config.resolve_dataset(str(tmp_path)) == tmp_path  # an existing folder stays
    monkeypatch.setenv("SHALLOWPI_DATA_ROOT", str(tmp_path))
    assert config.resolve_dataset("kitchen") == tmp_path / "kitchen.zarr"
    cfg = config.compose([f"data_root={tmp_path / 'ssd'}"])
    assert config.data_root(cfg) == tmp_path / "ssd"


# Names a user may give: non-ASCII, spaces, quotes, a comma, and what looks like Hydra syntax.
ODD_NAMES = ("dä 台 'x\"y", "küche, 台所 ${oc.env:HOME}")


def _commands_with(flag: str) -> list[list[str]]:
    """Every subcommand (and dataset action) whose parser takes `flag`."""
    import argparse

    from shallowpi.cli import build_parser

    found = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not nested and any(flag in a.option_strings for a in parser._actions):
            found.append(words)
        for action in nested:
            for name, child in action.choices.items():
                walk(child, [*words, name])

    walk(build_parser(), [])
    return found


def _required_positionals(words: list[str]) -> list[str]:
    extra = {"dataset merge": ["a", "b", "--out", "c"], "dataset import": ["src", "--out", "c"],
             "dataset export": ["a", "--to", "lerobot", "dest"], "dataset delete": ["a", "--episode", "0"]}
    if " ".join(words) in extra:
        return extra[" ".join(words)]
    return ["a"] if words[:1] == ["dataset"] and words[1:] != ["list"] else []


@pytest.mark.parametrize("name", ODD_NAMES)
def test_every_command_takes_any_path_in_dataset_and_data_root(name, tmp_path):
    from shallowpi import config
    from shallowpi.cli import build_parser, overrides_from

    root = str(tmp_path / name)
    with_root, with_dataset = _commands_with("--data-root"), _commands_with("--dataset")
    assert ["record"] in with_root and ["train"] in with_dataset and ["dataset", "export"] in with_root
    for words in with_root:
        if words in (["eval"], ["deploy"]):  # --policy there is a checkpoint folder: end to end elsewhere
            continue
        argv = [*words, *_required_positionals(words), "--data-root", root]
        if words in with_dataset:
            argv += ["--dataset", name]
        args, _ = build_parser().parse_known_args(argv)
        args.overrides = []
        cfg = config.compose(overrides_from(args))
        assert config.data_root(cfg) == tmp_path / name, words
        if words in with_dataset:
            assert cfg.dataset == name, words
            assert config.resolve_dataset(cfg.dataset, config.data_root(cfg)) == tmp_path / name / f"{name}.zarr"


def test_odd_paths_end_to_end(tmp_path):
    root = tmp_path / ODD_NAMES[0]
    make_store(root / f"{ODD_NAMES[1]}.zarr", episodes=2, length=4).close()
    flags = ["--data-root", str(root)]
    listing = run("dataset", "list", *flags)
    assert listing.returncode == 0 and "台所" in listing.stdout, listing.stderr
    check = run("dataset", "check", ODD_NAMES[1], *flags)
    assert check.returncode == 0 and "ok, 2 episodes" in check.stdout, check.stderr
    shown = yaml.safe_load(run("config", "show", "--dataset", ODD_NAMES[1], *flags).stdout)
    assert (shown["dataset"], shown["data_root"]) == (ODD_NAMES[1], str(root))
    # train and eval reach the store by that name (and say it is not a training store, or
    # missing), instead of failing in Hydra's lexer.
    for command in (["train", "--dataset", "nowhere ü"], ["eval", "--dataset", "nowhere ü", "--policy", str(tmp_path / "no ckpt ü")]):
        result = run(*command, *flags)
        assert "LexerNoViableAlt" not in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_record_into_an_odd_dataset_name_and_root(tmp_path):
    root = tmp_path / ODD_NAMES[0]
    result = run("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui",
                 "--dataset", ODD_NAMES[1], "--data-root", str(root), "--episodes", "1",
                 "--episode-time-s", "0.2", "--reset-time-s", "0", "record.sim_size=32x32",
                 f"telemetry.address={tmp_path}/t.sock")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (root / f"{ODD_NAMES[1]}.zarr").is_dir()
    # The closing hint pastes back into a shell: each path one argument, however odd.
    hint = result.stdout.strip().splitlines()[-1].removeprefix("look at them: ")
    listed, shown = (shlex.split(part) for part in hint.split("   "))
    assert listed == ["platform", "dataset", "list", "--data-root", str(root)]
    assert shown == ["platform", "dataset", "show", str(root / f"{ODD_NAMES[1]}.zarr"), "--episode", "0"]


def _run_read_only(folder, *args: str) -> subprocess.CompletedProcess:
    from read_only import read_only_command

    command = read_only_command(folder, platform_cmd(*args))
    if command is None:
        pytest.skip("cannot make a folder read-only here (root without mount rights)")
    return subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl", "--no-tui", "--dataset", "new",
          "--episodes", "1", "--episode-time-s", "0.2", "--reset-time-s", "0", "record.sim_size=32x32",
          "telemetry.address={tmp}/t.sock", "--data-root", "{ro}"], "new.zarr.create.lock: .*--data-root"),
        (["dataset", "merge", "kitchen", "pantry", "--out", "both", "--data-root", "{ro}"],
         "both.zarr.create.lock: .*--data-root"),  # claimed, built beside its name, moved in whole
        (["dataset", "delete", "kitchen", "--episode", "0", "--yes", "--data-root", "{ro}"],
         "kitchen.zarr/.shallowpi.lock: .*--data-root"),
        (["dataset", "show", "kitchen", "--out", "{ro}/ep.png", "--data-root", "{ro}"], "ep.png: .*--out"),
        (["dataset", "export", "kitchen", "--to", "lerobot", "{ro}/lr", "--data-root", "{ro}"], "lr.create.lock: .*DEST"),
        (["sim", "--robot", "arm", "--task", "cube_in_bowl", "--size", "32x32", "--png", "{ro}/s.png"],
         "s.png: .*--png"),  # refused before the episode runs (ready_output), not at its .tmp after
        (["train", "--dataset", "kitchen", "--data-root", "{ro}", "--runs-dir", "{ro}/runs", "--policy", "tiny",
          "--steps", "1", "--device", "cpu", "--no-progress"], "runs: .*--runs-dir"),
    ],
    ids=["record", "merge", "delete", "show", "export", "sim-png", "train"],
)
def test_a_read_only_data_root_gives_one_line(args, names, tmp_path):
    import re

    ro = tmp_path / "ro"
    make_store(ro / "kitchen.zarr", episodes=2, length=4).close()
    make_store(ro / "pantry.zarr", episodes=1, length=4).close()
    before = sorted(p.relative_to(ro) for p in ro.rglob("*"))
    result = _run_read_only(ro, *(a.format(ro=ro, tmp=tmp_path) for a in args))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and lines, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    path, argument = names.split(": .*")
    pattern = rf"^error: cannot write {re.escape(str(ro))}/{re.escape(path)}: (the file system is read-only|permission denied); "
    assert re.search(pattern + rf"make it writable or give {argument} on another disk$", lines[-1]), lines[-1]
    assert sorted(p.relative_to(ro) for p in ro.rglob("*")) == before


@pytest.mark.parametrize(
    ("args", "written", "argument"),
    [
        (["dataset", "merge", "{tmp}/kitchen.zarr", "{tmp}/pantry.zarr", "--out", "{tmp}/afile/m.zarr"],
         "afile", "--out"),
        (["train", "--dataset", "{tmp}/kitchen.zarr", "--runs-dir", "{tmp}/afile", "--policy", "tiny", "--steps", "1",
          "--device", "cpu", "--no-progress"], "afile", "--runs-dir"),
        (["dataset", "import", "{tmp}/nothing", "--out", "{tmp}/afile/imp.zarr"], None, None),
    ],
    ids=["merge", "train", "import-of-nothing"],
)
def test_a_file_where_an_output_folder_must_be_is_one_line(args, written, argument, tmp_path):
    """`--runs-dir afile`, `--out afile/m.zarr`: the mkdir's FileExistsError (or a write's
    NotADirectoryError) was a traceback in eleven commands."""
    make_store(tmp_path / "kitchen.zarr", episodes=2, length=4).close()
    make_store(tmp_path / "pantry.zarr", episodes=1, length=4).close()
    (tmp_path / "afile").write_text("notes")
    result = run(*(a.format(tmp=tmp_path) for a in args))
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode != 0
    if written is not None:
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith(f"error: cannot write {tmp_path}/{written}") and line.endswith(
            f": a file stands where a folder must be; move that file or give another {argument}"), line
    assert (tmp_path / "afile").read_text() == "notes"


@pytest.mark.slow
@pytest.mark.parametrize("size", ["48k", "160k"])  # full while the store is made / while frames are linked
def test_a_merge_onto_a_full_disk_is_one_line_and_leaves_no_folder_taking_space(tmp_path, size):
    """On a full disk a merge (and a delete's compaction, through the same store creation)
    left `both.zarr.merging.creating` taking space under a name nothing opens or removes,
    and said to "choose a writable location"; a frame link that failed named the source
    store's file, as if the input's disk were full."""
    from disk_fixtures import small_disk

    make_store(tmp_path / "a.zarr", episodes=3, length=30).close()
    make_store(tmp_path / "b.zarr", episodes=3, length=30, seed=1).close()
    with small_disk(tmp_path / "full", size) as full:
        merged = run("dataset", "merge", str(tmp_path / "a.zarr"), str(tmp_path / "b.zarr"),
                     "--out", str(full / "both.zarr"))
        left = sorted(p.name for p in full.iterdir())
    last = merged.stderr.strip().splitlines()[-1]
    assert merged.returncode == 2 and "Traceback" not in merged.stderr, merged.stderr
    assert last.startswith("error: ") and "no space left on the device" in last, last
    assert "writable location" not in last and str(tmp_path / "a.zarr") not in last, last
    assert left == [], left


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("EROFS", "the file system is read-only; make it writable or give --out on another disk"),
        ("EACCES", "permission denied; make it writable or give --out on another disk"),
        ("ENOSPC", "no space left on the device; free space there or give --out on another disk"),
        ("EDQUOT", "the disk quota is exceeded; free space there or give --out on another disk"),
        # a file past FAT32's 4 GiB (a USB stick) or `ulimit -f` had ended in a traceback
        ("EFBIG", "the file is larger than the file system (or ulimit -f) allows; give --out on another disk"),
    ],
)
def test_file_system_refusals_name_the_path_and_the_flag(code, expected, tmp_path):
    import argparse
    import errno

    from shallowpi.cli import file_system_error

    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    args = parser.parse_args(["--out", str(tmp_path / "x.png")])
    error = OSError(getattr(errno, code), "whatever", str(tmp_path / "x.png.tmp"))
    assert file_system_error(error, args, parser) == f"cannot write {tmp_path}/x.png.tmp: {expected}"
    assert file_system_error(OSError(errno.EBADF, "Bad file descriptor", "/x"), args, parser) is None  # a bug: traceback
    # A failing SD card (a Jetson's): EIO names the file, a read's as often as a write's, so
    # neither "cannot write" nor the output flag; naming no file it is a closed terminal's
    # print (SIGHUP), not a disk: its traceback stays.
    assert file_system_error(OSError(errno.EIO, "Input/output error", "/media/sd/d.zarr/zarr.json"), args,
                             parser) == ("I/O error on /media/sd/d.zarr/zarr.json (see dmesg): the device or its "
                                         "cable is failing; check it, or use another disk")
    assert file_system_error(OSError(errno.EIO, "Input/output error"), args, parser) is None


def test_dataset_merge_refuses_mixing_fps_or_calibration_in_one_line(tmp_path):
    from shallowpi.data import EpisodeStore

    root = ["--data-root", str(tmp_path)]
    make_store(tmp_path / "a.zarr", episodes=1, length=4).close()  # 30 fps, calibration cal-test
    make_store(tmp_path / "b.zarr", episodes=1, length=4).close()
    stamp_episode(tmp_path / "b.zarr", 0, calibration_id="cal-new")
    refused = run("dataset", "merge", "a", "b", "--out", "ab", *root)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert "calibration cal-test" in refused.stderr and "cal-new" in refused.stderr
    assert "--allow-mixed-calibration" in refused.stderr and not (tmp_path / "ab.zarr").exists()
    allowed = run("dataset", "merge", "a", "b", "--out", "ab", "--allow-mixed-calibration", *root)
    assert allowed.returncode == 0, allowed.stderr
    assert EpisodeStore.open(tmp_path / "ab.zarr").summary.allow_mixed_calibration
    info = run("dataset", "info", "ab", *root)
    assert "mixed calibration ids allowed (--allow-mixed-calibration): cal-new, cal-test" in info.stdout

    stamp_episode(tmp_path / "b.zarr", 0, calibration_id="cal-test", fps=15.0)
    slow = run("dataset", "merge", "a", "b", "--out", "slow", "--allow-mixed-calibration", *root)
    assert slow.returncode != 0 and len(slow.stderr.strip().splitlines()) == 1, slow.stderr
    assert "a.zarr holds episodes at 30 fps, b.zarr at 15 fps" in slow.stderr and "new dataset" in slow.stderr


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2,
                    reason="counts threads through Linux /proc on a machine with 2+ cores")
def test_platform_processes_run_numpy_products_on_one_thread():
    # numpy's OpenBLAS pool (a spinning thread per core) made the robot side's image resize
    # 100x slower beside other work; the CLI entry pins it before numpy loads.
    probe = ("import os, shallowpi.cli, numpy as np\n"
             "np.ones((256, 256), np.float32) @ np.ones((256, 256), np.float32)\n"
             "print(len(os.listdir('/proc/self/task')))")
    env = {k: v for k, v in subprocess_env().items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    threads = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert int(threads.stdout) == 1


def test_every_path_flag_expands_a_tilde(monkeypatch, tmp_path):
    """`--policy=~/ckpt` reaches argparse with its tilde (the shell expands ~ only at a
    word's start): every flag that takes a path expands it, so none names a folder `~`."""
    import argparse
    from pathlib import Path

    from shallowpi.cli import build_parser, user_path

    monkeypatch.setenv("HOME", str(tmp_path))
    path_flags = []

    def walk(parser: argparse.ArgumentParser, words: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, [*words, name])
            elif action.type is Path:
                raise AssertionError(f"{' '.join(words)} {action.option_strings}: type=Path keeps '~'")
            elif action.type is user_path:
                path_flags.append((words, action))

    walk(build_parser(), [])
    flags = {f"{' '.join(w)} {a.option_strings[0] if a.option_strings else a.dest}" for w, a in path_flags}
    assert {"eval --policy", "deploy --policy", "distill --teacher", "train --init", "train --runs-dir"} <= flags
    args, _ = build_parser().parse_known_args(["eval", "--policy=~/ckpt"])
    assert args.policy == tmp_path / "ckpt"


def test_platform_says_when_it_runs_another_checkouts_code(tmp_path):
    """The shared venv's `platform` runs the clone that last ran tools/setup.sh: run from
    inside another clone it says so in one line (and still runs), not silently."""
    clone = tmp_path / "other clone"
    (clone / "platform" / "shallowpi").mkdir(parents=True)
    (clone / "platform" / "shallowpi" / "__init__.py").write_text("")
    (clone / "pyproject.toml").write_text("[project]\nname = 'shallowpi'\n")
    (clone / "datasets").mkdir()

    elsewhere = run("config", "groups", cwd=clone / "datasets")
    assert elsewhere.returncode == 0
    assert elsewhere.stderr.count("warning:") == 1
    assert f"not this checkout's ({clone})" in elsewhere.stderr
    here = run("config", "groups", cwd=REPO_ROOT)
    assert here.returncode == 0 and "warning:" not in here.stderr
    outside = run("config", "groups", cwd=tmp_path)
    assert outside.returncode == 0 and "warning:" not in outside.stderr


def test_a_runs_resolved_config_is_synced_before_it_is_renamed_into_place(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from disk_fixtures import SyncWatch
    from shallowpi.config import save_resolved

    watch = SyncWatch(monkeypatch)
    path = save_resolved(OmegaConf.create({"policy": {"preset": "small"}}), tmp_path / "run")
    assert watch.rename_to(path).unsynced == [] and str((tmp_path / "run").resolve()) in watch.synced
    assert yaml.safe_load(path.read_text()) == {"policy": {"preset": "small"}}


def test_a_gpu_this_machine_lacks_is_refused_before_anything_runs():
    import torch

    from shallowpi.train.distributed import check_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(PlatformError, match=f"device 'cuda:{count}': "):
        check_device(f"cuda:{count}")
    assert check_device("cpu") == "cpu" and check_device("auto") == "auto"


def test_a_whole_float_given_for_a_count_is_that_count():
    """`store.numeric_chunk_rows=2e3` reached zarr as 2000.0, which refused it with a
    traceback; a rate stays a number with a fraction (telemetry.max_hz=7.5)."""
    from shallowpi import config

    composed = config.compose(["store.numeric_chunk_rows=2e3", "telemetry.max_hz=7.5"])
    assert type(composed.store.numeric_chunk_rows) is int and composed.store.numeric_chunk_rows == 2000
    assert composed.telemetry.max_hz == 7.5


@pytest.mark.parametrize("attached", [True, False], ids=["attached", "by-hand"])
def test_a_recorders_attached_monitor_ended_by_sigterm_says_nothing(tmp_path, attached):
    """Every command takes SIGTERM as Ctrl-C ("interrupted", exit 130; a full-screen monitor
    run by hand then leaves its screen), but not a recorder's attached dashboard: the
    recorder ends it so, on the terminal they share, where the line was noise after the
    recorder's own summary."""
    import signal
    import time

    proc = subprocess.Popen(platform_cmd("monitor", "--lines", "--wait-s", "60", "--address",
                                         f"ipc://{tmp_path}/none.sock", *(["--attached"] if attached else [])),
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)  # past the imports: waiting for a recorder
    assert proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    if attached:
        assert proc.returncode == -signal.SIGTERM and "interrupted" not in out + err, (out, err)
    else:
        assert proc.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", (out, err)


def test_python_m_shallowpi_exits_with_mains_code_after_an_interrupt_main_handled(tmp_path):
    """A KeyboardInterrupt that left code exec'd from a string (a signal landing in a
    dataclass's generated __init__ during an import) and that main then handled still made
    `python -m shallowpi` die of SIGINT at exit (-2), whatever main returned: CI's `train`
    stopped by SIGTERM printed "interrupted" and ended -2, not 130."""
    # `platform --help`, whose last act is to handle a KeyboardInterrupt raised in exec'd text.
    (tmp_path / "interrupted_import.py").write_text(
        "import runpy\n"
        "import shallowpi.cli\n"
        "real_main = shallowpi.cli.main\n"
        "def main(argv=None):\n"
        "    try:\n"
        "        return real_main(argv)\n"
        "    finally:\n"
        "        try:\n"
        "            exec('raise KeyboardInterrupt')\n"
        "        except KeyboardInterrupt:\n"
        "            pass\n"
        "shallowpi.cli.main = main\n"
        "runpy.run_module('shallowpi', run_name='__main__', alter_sys=True)\n")
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "interrupted_import", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "examples:" in done.stdout


def test_a_missing_optional_dependency_is_one_line_naming_the_extra(tmp_path):
    """A core install (no torch) ended `platform train` in a ModuleNotFoundError traceback,
    where a missing MuJoCo or lerobot was one line."""
    code = ("import sys; sys.modules['torch'] = None\n"  # `import torch` raises ModuleNotFoundError
            "from shallowpi.cli import main\n"
            f"sys.exit(main(['train', '--dataset', {str(tmp_path / 'none.zarr')!r}, '--runs-dir', {str(tmp_path)!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
                          timeout=120, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == ("error: platform train needs the train extra (torch is not installed): "
                                   "pip install -e '.[train]'")


def test_a_package_installed_without_its_checkout_refuses_in_one_line(tmp_path, monkeypatch, capsys):
    """`pip install .` (or a wheel) carries no configs/ or robots/: a record with
    SHALLOWPI_CONFIG_DIR set failed on the twin, and its datasets/ went into the Python
    installation's lib folder. Every command but doctor now says so first."""
    from shallowpi import cli, config

    monkeypatch.setattr(config, "REPO_ROOT", tmp_path / "lib" / "python3.12")
    assert cli.main(["dataset", "list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: shallowpi is installed at ") and err.endswith(
        "install it from the clone with `pip install -e .` (bash tools/setup.sh env)"), err
    monkeypatch.undo()
    assert config.outside_a_checkout() is None  # this checkout
