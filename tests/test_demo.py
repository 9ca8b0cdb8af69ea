"""`platform demo` end to end at a tiny size: every stage's output, the teacher-vs-student
table, picture and JSON; a second run reuses every stage; an interrupted distillation
continues; a given teacher is not trained; changed settings stop in one line.

The size: the `tiny` preset at 18 layers (so the cut is 18 -> 6), 2 demonstrations of 2 s a
task at 32x32, 4 training steps each, one closed-loop episode of 1 s a task and model, one
deployed episode on the torch backend (no ONNX export). ~1 CPU-minute on one thread."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import shutil
from pathlib import Path

import pytest

from shallowpi.cli import main

TINY = ["--no-tui", "demo.teacher=train", "demo.policy=tiny", "policy.vlm.depth=18", "policy.expert.depth=18", "demo.episodes=2",
        "demo.record_time_s=2", "demo.teacher_steps=4", "demo.student_steps=4", "demo.eval_episodes=1",
        "demo.eval_time_s=1", "demo.deploy_episodes=1", "demo.deploy_backend=torch", "demo.latency_repeats=3",
        "demo.sim_size=32x32"]
TASKS = {"cube_in_bowl", "push_block_left"}


def demo(out: Path, *extra: str) -> tuple[int, str]:
    """`platform demo` into `out` on one torch thread; (exit code, stdout)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            code = main(["demo", "--out", str(out), *TINY, f"telemetry.address={out.parent}/demo-{out.name}.sock",
                         *extra])
    finally:
        torch.set_num_threads(threads)
    return code, printed.getvalue()


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("demo") / "arm"
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    return {"out": out, "printed": printed}


def test_every_stage_leaves_its_output_and_says_how_long_it_took(first):
    out, printed = first["out"], first["printed"]
    for stage in ("record", "teacher", "student", "evaluate", "deploy", "summary"):
        assert f"/6 {stage}: done in " in printed, stage
    assert (out / "arm.zarr" / "meta").is_dir()
    assert (out / "teacher" / "checkpoints" / "step_000004" / "ema" / "model.safetensors").is_file()
    assert (out / "student6" / "checkpoints" / "step_000004" / "model.safetensors").is_file()
    assert (out / "student6" / "report.md").is_file()
    for name in ("eval_teacher.json", "eval_student.json", "deploy_student.json", "latency.json", "stages.json",
                 "demo.md"):
        assert (out / name).is_file(), name
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![teacher vs student](demo.png)" in (out / "demo.md").read_text()
    assert "\nstudent through the executor (torch, " in (out / "demo.md").read_text()
    stages = json.loads((out / "stages.json").read_text())
    assert all(stages[s]["seconds"] > 0 for s in ("record", "teacher", "student", "eval_teacher", "deploy"))


def test_the_table_compares_teacher_and_student(first):
    summary = json.loads((first["out"] / "demo.json").read_text())
    teacher, student = summary["models"]
    assert (teacher["model"], teacher["layers"], student["model"], student["layers"]) == ("teacher", 18, "student", 6)
    assert 0 < student["parameters"] < teacher["parameters"]
    for row in (teacher, student):
        assert {t["task"] for t in row["tasks"]} == TASKS
        for t in row["tasks"]:
            low, high = t["interval95"]
            assert t["episodes"] == 1 and 0 <= t["successes"] <= 1 and 0.0 <= low <= t["success_rate"] <= high <= 1.0
        assert 0 < row["chunk_ms_p50"] <= row["chunk_ms_p99"]
    assert teacher["speedup"] == pytest.approx(1.0)
    assert student["speedup"] == pytest.approx(teacher["chunk_ms_p50"] / student["chunk_ms_p50"])
    deployed = summary["deployed_student"]
    assert (deployed["episodes"], deployed["backend"], deployed["task"]) == (1, "torch", "cube_in_bowl")
    assert deployed["inference_p99_ms"] >= deployed["inference_p50_ms"] > 0
    assert summary["settings"]["teacher_steps"] == 4 and summary["stages"]["teacher"]["settings"]["steps"] == 4
    table = first["printed"].split("[demo] 6/6 summary: done")[1]
    assert "chunk p50 / p99 ms" in table and "\nteacher " in table and "\nstudent " in table
    assert "student through the executor (torch" in table


def test_a_second_run_reuses_every_stage(first):
    out = first["out"]
    made = [out / "teacher" / "checkpoints" / "step_000004" / "model.safetensors",
            out / "student6" / "checkpoints" / "step_000004" / "model.safetensors",
            out / "eval_teacher.json", out / "eval_student.json", out / "deploy_student.json", out / "latency.json",
            out / "arm.zarr" / "meta" / ".zattrs"]
    before = {p: p.stat().st_mtime_ns for p in made}
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    assert {p: p.stat().st_mtime_ns for p in made} == before
    for stage in ("1/6 record", "2/6 teacher", "3/6 student", "4/6 evaluate", "5/6 deploy"):
        assert f"[demo] {stage}: reused " in printed, stage
    assert printed.count("4/6 evaluate: reused") == 2
    assert "done in" not in printed.split("6/6 summary")[0]  # nothing before the summary ran
    assert not (out / "teacher" / "checkpoints" / "step_000005").exists()


def test_an_interrupted_distillation_continues_from_its_last_checkpoint(first, tmp_path):
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    checkpoints = out / "student6" / "checkpoints"
    shutil.rmtree(checkpoints / "step_000004")
    (checkpoints / "last").write_text("step_000003")  # as a kill after step 3's checkpoint leaves it
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    assert "[demo] 2/6 teacher: reused " in printed
    assert f"steps, continuing {out / 'student6'} from step 3" in printed
    assert (checkpoints / "step_000004" / "model.safetensors").is_file()
    assert json.loads((out / "demo.json").read_text())["models"][1]["checkpoint"].startswith(str(checkpoints))


def test_a_demo_stopped_in_training_says_to_run_it_again(first, tmp_path):
    """Ctrl-C while the demo distils: the trainer's own advice (--resume) is no flag of
    `platform demo`, which continues each stage by itself when run again."""
    from conftest import platform_cmd, stop_while_training, subprocess_env

    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    shutil.rmtree(out / "student6")
    words = ["demo", "--out", str(out), *TINY, "demo.student_steps=100000", "policy.train.log_every=1",
             f"telemetry.address={tmp_path}/demo-stop.sock"]
    code, err = stop_while_training(platform_cmd(*words), out / "student6" / "metrics.jsonl",
                                    subprocess_env(OMP_NUM_THREADS="1"))
    assert code == 130, err
    assert err.strip().splitlines()[-1] == ("error: `platform distill` stopped with its last step saved: run the "
                                            "same `platform demo` command again to continue"), err[-2000:]
    assert (out / "student6" / "checkpoints" / "last").is_file()


def test_a_given_teacher_is_distilled_not_trained(first, tmp_path, capsys):
    out = tmp_path / "given"
    out.mkdir()
    shutil.copytree(first["out"] / "arm.zarr", out / "arm.zarr")  # the demonstrations, not re-recorded
    teacher = first["out"] / "teacher" / "checkpoints" / "step_000004" / "ema"
    code, printed = demo(out, "--teacher", str(teacher))
    assert code == 0, printed[-3000:]
    assert f"[demo] 2/6 teacher: using the given checkpoint {teacher}" in printed
    assert "[demo] 1/6 record: reused" in printed
    assert not (out / "teacher").exists()
    summary = json.loads((out / "demo.json").read_text())
    assert summary["models"][0]["checkpoint"] == str(teacher)
    assert json.loads((out / "student6" / "distill.json").read_text())["teacher"] == str(teacher)
    # More demonstrations do not change a given teacher's hash: the student, trained on
    # fewer, would be stale. Refused before recording: the store never shrinks, so recording
    # first locked the folder (going back to 2 a task could not undo it).
    from shallowpi.commands.demo_stages import episodes_per_task

    capsys.readouterr()
    code, _ = demo(out, "--teacher", str(teacher), "demo.episodes=3")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {out / 'student6'}, {out / 'eval_student.json'}"), err
    assert "were made from the 4 episodes in" in err and "recording 2 more (demo.episodes=3)" in err
    assert sum(episodes_per_task(out / "arm.zarr").values()) == 4  # nothing was recorded


def test_a_made_stage_with_changed_settings_stops_in_one_line(first, capsys):
    out = first["out"]
    for extra, folder, change, then in ((["demo.teacher_steps=5"], out / "teacher", "steps 4 -> 5", "student6"),
                                        (["demo.sim_size=40x32"], out / "arm.zarr", "sim_size '32x32' -> '40x32'",
                                         "teacher")):
        code, _ = demo(out, *extra)
        err = capsys.readouterr().err.strip()
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {folder} was made with other settings ({change})"), err
        # It names what was made from it, which would be stale too.
        assert f"remove it and what was made from it ({out / then}, " in err and "to redo the" in err
    assert json.loads((out / "stages.json").read_text())["teacher"]["settings"]["steps"] == 4


def test_a_store_recorded_again_is_not_taken_for_the_one_the_teacher_learned(first, tmp_path, capsys):
    """The stages after the recording know the store by its creation stamp, not only its
    episode count: a store removed and recorded again with the same count (other noise,
    other renders) had every later stage reused."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    header = json.loads((out / "arm.zarr" / ".zattrs").read_text())
    header["shallowpi"]["created"] += 1.0  # what a new recording of the same size differs by
    (out / "arm.zarr" / ".zattrs").write_text(json.dumps(header))
    capsys.readouterr()
    code, _ = demo(out)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {out / 'teacher'} was made with other settings (store "), err


def test_an_evaluation_stopped_part_way_is_made_again_not_taken_from_the_run_before(first, tmp_path):
    """stages.json records an evaluation's settings at its start and its time at its end; a
    run stopped in between (Ctrl-C, a failure) left the settings of the new checkpoint beside
    the JSON of the one before, which the next run reused as the new one's."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    stages = json.loads((out / "stages.json").read_text())
    stages["eval_student"]["seconds"] = None  # as a stopped evaluation of these settings leaves it
    (out / "stages.json").write_text(json.dumps(stages))
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    assert printed.count("4/6 evaluate: reused") == 1  # the teacher's
    assert "4/6 evaluate: the student in closed loop" in printed
    assert json.loads((out / "stages.json").read_text())["eval_student"]["seconds"] > 0


def test_overrides_with_a_plus_count_as_settings():
    from shallowpi.commands.demo_stages import Demo

    assert Demo._relevant(["++policy.train.lr=1e-3", "+distill.weights.output=0", "~record.sim_noise",
                           "+policy.train.save_every=9"], ("policy", "distill")) == [
        "++policy.train.lr=1e-3", "+distill.weights.output=0"]


def test_unknown_demo_keys_and_bad_sizes_are_one_line(tmp_path, capsys):
    for extra, expected in ((["demo.episodes=0"], "demo.episodes must be at least 1, got 0"),
                            (["+demo.epochs=3"], "unknown demo keys ['epochs']"),
                            ([f"demo.teacher={tmp_path}"], f"demo.teacher={tmp_path}: no model.safetensors there"),
                            # checked before the recording, as demo.teacher= is (it was found stages later)
                            (["--teacher", str(tmp_path)], f"demo.teacher={tmp_path}: no model.safetensors there"),
                            # a value of the wrong kind was a traceback, some only after the recording
                            (["demo.sim_noise=abc"], "demo.sim_noise must be a number (its default is 0.005), not 'abc'"),
                            (["demo.episodes=2.5"], "demo.episodes must be a whole number (its default is 40), not 2.5"),
                            (["demo.train=5"], "demo.train is a section of settings (`platform config show` lists "
                                               "its keys), not 5"),
                            # the demo names the robot to every stage: robot= recorded one into another's store
                            (["robot=humanoid"], "robot=humanoid: the demo picks its robot with --robot NAME"),
                            # and the preset to train and distil: policy= won over each stage's --policy, so
                            # stages.json and demo.json named demo.policy's preset while another trained
                            (["policy=tiny"], "policy=tiny: the demo picks its policy preset with demo.policy=NAME"),
                            (["+policy=tiny"], "+policy=tiny: the demo picks its policy preset with demo.policy=NAME"),
                            # the recorder's own DART noise wins over the demo's: checked as the recorder would
                            (["record.sim_noise=-0.1"], "record.sim_noise must be >= 0 (a fraction of each "
                                                        "joint's range), got -0.1")):
        assert main(["demo", "--out", str(tmp_path / "x"), *extra]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("extra", [
    ["policy.crop_scale=1.0"],  # the teacher preset's (demo.policy, the default recipe's), which `small` lacks
    ["--robot", "humanoid", "robot.cameras.head.width=320"],  # the humanoid's camera, which the arm lacks
])
def test_overrides_are_checked_against_the_robot_and_preset_the_stages_run(tmp_path, capsys, extra):
    """The demo composed its overrides with the config's default robot and preset, so a key of
    the ones its stages run was refused as unknown; they pass now, on to the next check (a
    recorder setting refused before anything is made, so nothing runs here)."""
    assert main(["demo", "--out", str(tmp_path / "x"), *extra, "record.sim_noise=-0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: record.sim_noise must be >= 0 (a fraction of each joint's range), got -0.1", err
    assert not (tmp_path / "x").exists()


def test_every_twin_ships_a_teacher_and_a_missing_one_is_one_line(tmp_path, capsys, monkeypatch):
    from shallowpi.commands import demo_stages

    for robot in ("arm", "bimanual", "humanoid"):
        assert (demo_stages.REPO_ROOT / "robots" / robot / "teacher" / "model.safetensors").is_file(), robot
    # A checkout whose robots/ ship no teacher (a robot config of the user's own, say).
    monkeypatch.setattr(demo_stages, "REPO_ROOT", tmp_path / "checkout")
    assert main(["demo", "--out", str(tmp_path / "x"), "demo.teacher=shipped", "demo.robot=bimanual"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no teacher ships for the simulated bimanual") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_progress_prints_plain_lines_without_a_terminal():
    from shallowpi.train.progress import ProgressBar

    stream = io.StringIO()
    bar = ProgressBar("train", 10, enabled=True, every_s=0.0, stream=stream)
    bar.update(4, "loss 0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train 4/10 0:00:00 eta ") and lines[0].endswith(" loss 0.5")
    quiet = io.StringIO()
    bar = ProgressBar("train", 10, enabled=True, every_s=3600.0, stream=quiet)
    bar.update(7, "loss 0.4")
    bar.close()
    assert quiet.getvalue().splitlines() == [quiet.getvalue().strip()] and " 7/10 " in quiet.getvalue()


@pytest.mark.parametrize(("robot", "made_by", "recipe"), [
    ("arm", "closed_loop.py", {}),
    ("humanoid", "closed_loop.py", {"crop_scale": 1.0}),  # its README: trained with the crops off
])
def test_a_shipped_teacher_fits_its_twin_and_says_how_it_was_made(robot, made_by, recipe):
    from shallowpi import config
    from shallowpi.commands.demo_stages import DemoConfig
    from shallowpi.evaluate.sim_checkpoint import check_fits
    from shallowpi.policy import Policy, load_preset
    from shallowpi.policy.tokenizer import check_prompts
    from shallowpi.robots.sim.tasks import make_tasks
    from shallowpi.robots.sim.twin import TwinSpec

    folder = DemoConfig(teacher="shipped", robot=robot).given_teacher()
    assert folder == config.REPO_ROOT / "robots" / robot / "teacher"
    policy = Policy.load(folder)
    check_fits(policy.features, TwinSpec.from_config(config.compose([f"robot={robot}"]).robot))
    assert policy.cfg.depth == 18 and policy.cfg.name == "teacher"
    # shipped from the preset as it is, but for the overrides its README gives: a preset
    # change (chunks of 40) means a new teacher
    preset = load_preset("teacher")
    for key in ("chunk_len", "vision", "vlm", "expert", "crop_scale", "normalization", "task_conditioning"):
        expected = recipe.get(key, getattr(preset, key))
        assert getattr(policy.cfg, key) == expected, f"the shipped teacher's {key} is not the preset's or its recipe's"
    readme = (folder / "README.md").read_text()
    assert all(f"policy.{key}={value}" in readme for key, value in recipe.items())
    instructions = [task.instruction for task in make_tasks(robot).values()]
    # it reads every instruction whole, word by word, and tells them apart
    check_prompts(policy.tokenizer, instructions, policy.cfg.max_text_tokens)
    assert {word for text in instructions for word in text.split()} <= set(policy.cfg.vocabulary)
    meta = Policy.read_metadata(folder)
    assert f"tools/bench/{made_by}" in meta["made_by"] and not {"dataset", "train", "held_out"} & set(meta)
    assert config.compose(["demo=default"]).demo.teacher == "shipped"


def test_evaluations_deployment_and_timing_made_by_other_code_are_made_again(first, tmp_path):
    """A demo folder kept across an upgrade reused its evaluations, deployment and chunk
    timings on the weights and settings alone, so demo.md put the old code's success and
    latency in the new code's table. They name the code that made them now; the trainings
    (costly, and made by the weights they leave) are still reused."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    stages = json.loads((out / "stages.json").read_text())
    for stage in ("eval_teacher", "eval_student", "deploy"):
        assert stages[stage]["settings"]["code"]
        stages[stage]["settings"]["code"] = "0" * 64  # as an older checkout's sources hash
    del stages["eval_student"]["settings"]["code"]  # made before results named their code
    (out / "stages.json").write_text(json.dumps(stages))
    latency = json.loads((out / "latency.json").read_text())
    latency["key"]["code"] = "0" * 64
    (out / "latency.json").write_text(json.dumps(latency))
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    for stage in ("2/6 teacher", "3/6 student"):
        assert f"[demo] {stage}: reused " in printed, stage
    assert "4/6 evaluate: reused" not in printed and printed.count("4/6 evaluate: done in") == 2
    assert "[demo] 5/6 deploy: done in " in printed
    assert json.loads((out / "latency.json").read_text())["key"]["code"] != "0" * 64
    again = json.loads((out / "stages.json").read_text())
    assert all(again[s]["settings"].get("code") not in (None, "0" * 64) for s in ("eval_teacher", "eval_student", "deploy"))


def test_a_demo_folder_made_before_a_setting_was_checked_is_reused_and_then_checked(first, tmp_path):
    """stages.json of a run from before the store's stamp was part of the settings: the
    finished stages are reused (the missing key is not held against them) and the stamp is
    recorded, so the next change of the store is caught."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    stages = json.loads((out / "stages.json").read_text())
    for stage in ("teacher", "student", "eval_teacher", "eval_student", "deploy"):
        del stages[stage]["settings"]["store"]
    (out / "stages.json").write_text(json.dumps(stages))
    code, printed = demo(out)
    assert code == 0, printed[-3000:]
    for stage in ("2/6 teacher", "3/6 student", "5/6 deploy"):
        assert f"[demo] {stage}: reused " in printed, stage
    assert printed.count("4/6 evaluate: reused") == 2
    assert all(json.loads((out / "stages.json").read_text())[s]["settings"]["store"] for s in ("teacher", "student"))


def test_the_demos_training_overrides_compose_whatever_their_values():
    """demo.train.ema=null reached the teacher as policy.train.ema=None, which the config's
    type check refuses: the overrides spell None, booleans and lists as Hydra reads them."""
    from shallowpi import config
    from shallowpi.commands.demo_stages import DemoConfig

    demo = DemoConfig(train={"ema": None, "successful_only": True, "batch_size": 8, "lr": 3e-4})
    words = demo.train_overrides(steps=100)
    assert "policy.train.ema=null" in words and "policy.train.successful_only=true" in words
    train = config.compose(words).policy.train
    assert (train.ema, train.successful_only, train.batch_size, train.save_every) == (None, True, 8, 25)


@pytest.mark.parametrize(("extra", "expected"), [
    ("demo.deploy_backend=cuda", "demo.deploy_backend 'cuda' is not one of: torch, onnxruntime, tensorrt (or null "
                                 "for the Jetson profile's)"),
    ("demo.policy=huge", "unknown policy preset 'huge' (demo.policy); choose one of: pi0, small, teacher, tiny"),
])
def test_a_backend_or_preset_no_stage_takes_is_refused_before_anything_is_made(tmp_path, capsys, extra, expected):
    """The stage that takes it refused it: `platform deploy` some 13 minutes into the default
    run, `platform train` or `distill` after the recording."""
    code, _ = demo(tmp_path / "arm", extra)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {expected}", err
    assert not (tmp_path / "arm").exists()


def test_a_given_teacher_in_a_folder_that_trained_one_is_used_and_another_still_refused(first, tmp_path, capsys):
    """--teacher in a folder where demo.teacher=train left OUT/teacher: the given checkpoint
    was checked against that training's settings (policy, steps, ...: differences that mean
    nothing) and the advice was to remove the folder, which may hold the very checkpoint
    given. What was made from another teacher is still refused, by the teacher's hash in its
    own settings; and the trained teacher's record stays for demo.teacher=train."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    teacher = out / "teacher" / "checkpoints" / "step_000004" / "ema"  # the one the student learned from
    code, printed = demo(out, "--teacher", str(teacher))
    assert code == 0, printed[-3000:]
    assert f"[demo] 2/6 teacher: using the given checkpoint {teacher}" in printed
    for stage in ("1/6 record", "3/6 student", "5/6 deploy"):
        assert f"[demo] {stage}: reused " in printed, stage
    assert printed.count("4/6 evaluate: reused") == 2
    assert json.loads((out / "demo.json").read_text())["models"][0]["label"] == "teacher (given)"
    code, printed = demo(out)  # demo.teacher=train again: its teacher/ is reused, not refused
    assert code == 0 and "[demo] 2/6 teacher: reused " in printed, printed[-3000:]
    other = out / "teacher" / "checkpoints" / "step_000004"  # its raw weights, not the EMA average
    capsys.readouterr()
    code, _ = demo(out, "--teacher", str(other))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {out / 'student6'} was made with other settings "
                                        "(teacher_sha256 "), err
    assert "; remove it and what was made from it (" in err and f"{out / 'eval_student.json'}, " in err


def test_store_settings_count_for_the_recording_and_the_recorders_bookkeeping_does_not(first, tmp_path, capsys):
    """`store.image_codec` changes the recorded frames: it was accepted and not applied (every
    stage reused). The recorder's queue and disk reserve change no frame: they were held
    against the store."""
    out = tmp_path / "arm"
    shutil.copytree(first["out"], out)
    code, printed = demo(out, "record.queue_mb=64", "record.disk_reserve_mb=8", "store.numeric_chunk_rows=512")
    assert code == 0, printed[-3000:]
    for stage in ("1/6 record", "2/6 teacher", "3/6 student", "5/6 deploy"):
        assert f"[demo] {stage}: reused " in printed, stage
    capsys.readouterr()
    code, _ = demo(out, "store.image_codec=blosc-lz4")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: {out / 'arm.zarr'} was made with other settings (overrides "
                                        "+['store.image_codec=blosc-lz4'])"), err


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes").write_text("mine")
    for out in (tmp_path / "notes", tmp_path / "notes" / "demo"):
        assert main(["demo", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"error: --out {out}: a file stands where a folder must be; choose another path"
    assert (tmp_path / "notes").read_text() == "mine"


def test_the_example_in_the_default_profile_composes():
    """configs/demo/default.yaml's example: demo.train.batch_size=16 was refused as an
    unknown key (the profile's train: has no batch_size to set)."""
    from omegaconf import OmegaConf

    from shallowpi import config
    from shallowpi.commands.demo_stages import DemoConfig

    text = (config.REPO_ROOT / "configs" / "demo" / "default.yaml").read_text()
    words = next(line for line in text.splitlines() if "platform demo " in line).split("platform demo ", 1)[1].split()
    settings = DemoConfig.from_dict(OmegaConf.to_container(config.compose(words).demo, resolve=True))
    assert settings.train == {"ema": 0.995, "batch_size": 16}
    assert config.compose(settings.train_overrides(settings.teacher_steps)).policy.train.batch_size == 16


def test_the_recorders_own_noise_and_size_are_the_ones_reported(tmp_path):
    """record.sim_noise / record.sim_size given by the user reach the recorder after the
    demo's own and win; the stage's line and stages.json showed the demo's values."""
    from shallowpi import config
    from shallowpi.commands.demo_stages import Demo, DemoConfig
    from shallowpi.data.features import FeatureKind
    from shallowpi.data.store import EpisodeStore

    overrides = ["record.sim_noise=0.02", "record.sim_size=24x16", f"telemetry.address={tmp_path}/record.sock"]
    settings = DemoConfig(episodes=1, record_time_s=0.3, sim_size="32x32").as_recorded(
        config.compose(overrides).record, overrides)
    lines: list[str] = []
    made = Demo(settings, tmp_path / "arm", overrides, tui=False, say=lines.append)
    made.record()
    assert "on the simulated arm (24x16, DART noise 0.02), the scripted expert" in lines[0], lines
    recorded = json.loads((tmp_path / "arm" / "stages.json").read_text())["record"]["settings"]
    assert (recorded["sim_size"], recorded["sim_noise"]) == ("24x16", 0.02)
    with EpisodeStore.open(made.store) as store:  # the frames are the recorder's size, as reported
        assert {f.shape for f in store.features.values() if f.kind is FeatureKind.IMAGE} == {(16, 24, 3)}


def _evaluations_and_latency(successes: int) -> tuple[dict, dict]:
    """What the summary reads of the evaluate stage (each model `successes` of one episode a
    task) and of the latency stage (teacher 18 layers, student 6), as the demo writes them."""
    evals = {m: {"robot": "arm", "tasks": [{"task": task, "instruction": task.replace("_", " "),
                                           "successes": successes, "episodes": [{"seed": 1000}]} for task in TASKS]}
             for m in ("teacher", "student")}
    latency = {"teacher": {"layers": 18, "parameters": 1000, "gflops": 1.0, "chunk_ms_p50": 78.0, "chunk_ms_p99": 96.7},
               "student": {"layers": 6, "parameters": 400, "gflops": 0.3, "chunk_ms_p50": 22.7, "chunk_ms_p99": 24.4}}
    return evals, latency


def test_an_executor_run_that_computed_no_chunk_shows_no_inference_time(tmp_path):
    """An episode over before the executor's first chunk: its report says 0 ms, which the
    table printed as the student's inference time."""
    from shallowpi.commands.demo_summary import picture, summarize, table

    evals, latency = _evaluations_and_latency(successes=0)
    # `platform deploy --sim --json` of run of 30 ticks that ended before the first chunk came
    deploy = {"successes": 0, "episodes": 1, "inference_p50_ms": 0.0, "inference_p99_ms": 0.0, "loop_p99_ms": 1097.7,
              "safety": {}, "per_episode": [{"seed": 1000, "ended": "time limit", "ticks": 30, "latency_ms": []}],
              "backend": "torch", "strategy": "rtc", "task": "cube_in_bowl"}
    checkpoints = {"teacher": tmp_path / "t", "student": tmp_path / "s"}
    summary = summarize(checkpoints, evals, deploy, latency, {}, {"teacher": "train"})
    deployed = summary["deployed_student"]
    assert (deployed["chunks"], deployed["inference_p50_ms"], deployed["inference_p99_ms"]) == (0, None, None)
    line = table(summary).splitlines()[-1]
    assert line.endswith("inference p50 -, p99 -, sim-time loop, wall p99 1097.7 ms a tick"), line
    picture(summary, tmp_path / "demo.png")  # the executor's bar left out, not drawn at 0 ms
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    timed = {**deploy, "inference_p50_ms": 27.0, "inference_p99_ms": 28.2,
             "per_episode": [{**deploy["per_episode"][0], "latency_ms": [26.5, 28.2]}]}
    assert "inference p50 27.0 ms, p99 28.2 ms" in table(summarize(checkpoints, evals, timed, latency, {}, {}))
    # no speed-up from a time of 0
    zero = {**latency, "teacher": {**latency["teacher"], "chunk_ms_p50": 0.0}}
    assert [r["speedup"] for r in summarize(checkpoints, evals, deploy, zero, {}, {})["models"]] == [None, None]



def test_the_latency_panel_says_where_each_bar_ran_and_labels_a_short_bar_above_it(tmp_path, monkeypatch):
    """The panel said "on this CPU" over an executor bar that ran on demo.deploy_backend (a
    GPU's with tensorrt), and wrote a short bar's value in white, inside a bar lower than
    the text, on the white background."""
    import matplotlib
    import matplotlib.pyplot as plt

    from shallowpi.commands.demo_summary import picture, summarize

    evals, latency = _evaluations_and_latency(successes=1)
    deploy = {"successes": 1, "episodes": 1, "inference_p50_ms": 3.0, "inference_p99_ms": 3.4, "loop_p99_ms": 33.4,
              "safety": {}, "per_episode": [{"seed": 1000, "latency_ms": [3.0, 3.4]}], "backend": "tensorrt",
              "runs_on": "cuda (fp16)", "strategy": "rtc", "task": "cube_in_bowl"}
    summary = summarize({"teacher": tmp_path / "t", "student": tmp_path / "s"}, evals, deploy, latency, {}, {})
    figures = []
    # The figure as picture drew it: savefig (which writes the PNG all the same) keeps a reference.
    save = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda fig, *a, **k: (figures.append(fig), save(fig, *a, **k))[1])
    picture(summary, tmp_path / "demo.png")
    (right,) = [ax for ax in figures[0].axes if ax.get_ylabel().startswith("one action chunk")]
    assert "CPU" not in right.get_title() and right.get_title() == "chunk latency on this machine"
    labels = [t.get_text() for t in right.get_xticklabels()]
    assert labels == ["teacher\n(torch, CPU)", "student\n(torch, CPU)", "student, executor\n(tensorrt, cuda (fp16))"]
    values = {t.get_text().split("\n")[0]: t for t in right.texts}
    executor = values["3 ms"]
    assert executor.get_position()[1] >= 3.4 and matplotlib.colors.to_hex(executor.get_color()) == "#000000"
    teacher = values["78 ms"]  # a tall bar keeps its label inside, white on its colour
    assert teacher.get_position()[1] < 78.0 and matplotlib.colors.to_hex(teacher.get_color()) == "#ffffff"
    plt.close(figures[0])


@pytest.mark.parametrize(("extra", "expected"), [
    # a misspelt training key recorded 35 s, then `platform train` refused policy.train.bach_size
    (["+demo.train.bach_size=4"], "unknown demo.train keys ['bach_size']; valid keys: "),
    # a cut as deep as the teacher: refused by `platform distill`, after the recording (and a
    # teacher's training with demo.teacher=train), and with distill's --layers, no demo flag
    (["demo.layers=18"], "demo.layers=18: the teacher (the one trained here, demo.policy=tiny) has 18 layers; "
                         "a student keeps 1 to 17 of them"),
    (["--teacher", "{shipped}", "demo.layers=18"],
     "demo.layers=18: the teacher ({shipped}) has 18 layers; a student keeps 1 to 17 of them"),
    (["demo.train.ema=1.5"], "the stages' training settings (demo.train, then policy.train.* and "
                             "distill.train.*): ema must be in (0, 1) or null, got 1.5"),
    (["+demo.train.batch_size=abc"], "demo.train.batch_size must be a number, not 'abc'"),
    # train's --steps and distill's --steps win over it: it meant nothing
    (["+demo.train.steps=10"], "demo.train.steps: the demo's steps are demo.teacher_steps and demo.student_steps"),
    (["+demo.train.device=cuda"], "demo.train.device is set by `platform train`'s --device flag"),
    (["+distill.train.bach_size=4"], "unknown distill.train keys ['bach_size']"),
    # a student layer the 6-layer cut does not have
    (["distill.attention_pairs=[[7,10]]"], "attention layer 7 is outside the student's layers 0-5; fix "
                                           "distill.attention_pairs"),
])
def test_training_and_cut_settings_a_later_stage_refuses_are_refused_before_anything_is_made(
        tmp_path, capsys, extra, expected):
    from shallowpi.config import REPO_ROOT

    shipped = str(REPO_ROOT / "robots" / "arm" / "teacher")
    code, printed = demo(tmp_path / "arm", *(word.format(shipped=shipped) for word in extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert expected.format(shipped=shipped) in err, err
    assert not (tmp_path / "arm").exists() and "1/6 record" not in printed


def test_a_stage_stopped_by_a_setting_does_not_say_the_same_settings_continue(tmp_path):
    """A settings error fails the same way again: the advice to rerun with the same settings
    is for an interruption or a failure a rerun continues."""
    from shallowpi.commands.demo_stages import Demo, DemoConfig
    from shallowpi.errors import ConfigError

    lines: list[str] = []
    made = Demo(DemoConfig(), tmp_path / "arm", [], tui=False, say=lines.append)
    with pytest.raises(ConfigError), made.stage("student", "distilling"):
        raise ConfigError("unknown config key 'policy.train.bach_size'")
    assert lines[-1].startswith("[demo] 3/6 student: stopped after 0 s") and "same settings" not in lines[-1], lines
    with pytest.raises(KeyboardInterrupt), made.stage("student", "distilling"):
        raise KeyboardInterrupt
    assert lines[-1].endswith("`platform demo` with the same settings continues from here"), lines


def test_a_student_made_with_other_settings_names_only_what_was_made_from_it(first, capsys):
    """The teacher's evaluation does not depend on the student: removing it as advised
    redid the teacher's closed loop for nothing."""
    out = first["out"]
    code, _ = demo(out, "demo.student_steps=5")
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: {out / 'student6'} was made with other settings (steps 4 -> 5); remove it "
                                 f"and what was made from it ({out / 'eval_student.json'}, "
                                 f"{out / 'deploy_student.json'}) to redo the student stage, or give another --out"), err


def test_demo_md_has_the_deployed_students_line_the_table_prints(tmp_path):
    """The README says the summary shows the student as the executor ran it: the console
    table printed it, demo.md left it out."""
    from shallowpi.commands.demo_summary import markdown, summarize, table

    evals, latency = _evaluations_and_latency(successes=1)
    deploy = {"successes": 2, "episodes": 2, "inference_p50_ms": 14.5, "inference_p99_ms": 16.0, "loop_p99_ms": 33.4,
              "safety": {}, "per_episode": [{"seed": 1000, "latency_ms": [14.5, 16.0]}], "backend": "onnxruntime",
              "strategy": "rtc", "task": "cube_in_bowl"}
    summary = summarize({"teacher": tmp_path / "t", "student": tmp_path / "s"}, evals, deploy, latency, {}, {})
    line = table(summary).splitlines()[-1]
    assert line.startswith("student through the executor (onnxruntime, rtc): success 2/2 "), line
    assert line.endswith("inference p50 14.5 ms, p99 16.0 ms, sim-time loop, wall p99 33.4 ms a tick"), line
    assert line in markdown(summary, {}).splitlines()


@pytest.mark.parametrize(("clock", "expected"), [
    # `deploy --sim`'s JSON on the twin's simulated time: the wall time of a tick, the chunk
    # computed inside it included (shown as "loop p99 1285.0 ms" for a 30 Hz loop)
    ({"loop_p99_ms": None, "sim_tick_wall_p99_ms": 1285.0}, ", sim-time loop, wall p99 1285.0 ms a tick"),
    ({}, ", sim-time loop, wall p99 1285.0 ms a tick"),  # a JSON from before deploy said which clock
    ({"sim_tick_wall_p99_ms": None}, ", loop p99 1285.0 ms"),  # --realtime: the wall clock's period
    ({"loop_p99_ms": None, "sim_tick_wall_p99_ms": None}, ""),  # nothing measured: nothing shown
])
def test_the_deployed_students_loop_says_on_which_clock_it_was_timed(tmp_path, clock, expected):
    from shallowpi.commands.demo_summary import markdown, summarize, table

    evals, latency = _evaluations_and_latency(successes=1)
    deploy = {"successes": 1, "episodes": 1, "inference_p50_ms": 14.5, "inference_p99_ms": 16.0, "loop_p99_ms": 1285.0,
              "safety": {}, "per_episode": [{"seed": 1000, "latency_ms": [14.5, 16.0]}], "backend": "torch",
              "strategy": "rtc", "task": "cube_in_bowl", **clock}
    summary = summarize({"teacher": tmp_path / "t", "student": tmp_path / "s"}, evals, deploy, latency, {}, {})
    line = table(summary).splitlines()[-1]
    assert line.endswith(f"inference p50 14.5 ms, p99 16.0 ms{expected}"), line
    assert line in markdown(summary, {}).splitlines()


@pytest.mark.usefixtures("one_torch_thread")
def test_the_chunk_latency_times_teacher_and_student_in_turns(tmp_path, monkeypatch):
    """Each model's chunks in one block let a shared CPU's busy stretch fall on one model: a
    student measured at 1.455x the teacher's time against a FLOP-ideal 0.52. One chunk each
    a round, no model twice in a row; and a latency.json measured the old way is not reused."""
    from deploy_fixtures import tiny_checkpoint
    from policy_fakes import chunk_depths
    from shallowpi.commands.demo_summary import chunk_latency
    from shallowpi.distill.distiller import checkpoint_sha256
    from store_fixtures import make_store

    make_store(tmp_path / "arm.zarr", episodes=1, length=4).close()
    checkpoints = {"teacher": tiny_checkpoint(tmp_path / "teacher", state=6, cameras=("front", "wrist"), depth=2),
                   "student": tiny_checkpoint(tmp_path / "student", state=6, cameras=("front", "wrist"), depth=1)}
    chunks = chunk_depths(monkeypatch)  # the depth of each model's chunk, in the order they ran
    cache = tmp_path / "latency.json"
    models, cached = chunk_latency(checkpoints, tmp_path / "arm.zarr", 4, cache)
    assert not cached and set(models) == {"teacher", "student"}
    assert chunks.count(2) == chunks.count(1) == 5  # a warm-up (the FLOP count) and 4 timed chunks each
    assert all(a != b for a, b in itertools.pairwise(chunks)), chunks
    assert models["teacher"]["layers"] == 2 and models["student"]["layers"] == 1
    assert all(m["chunk_ms_p50"] > 0 and m["chunk_ms_p99"] >= m["chunk_ms_p50"] for m in models.values())
    assert chunk_latency(checkpoints, tmp_path / "arm.zarr", 4, cache) == (models, True)
    # what the demo cached before: the same checkpoints and repeats, timed in blocks
    old_key = {name: checkpoint_sha256(path) for name, path in checkpoints.items()} | {"repeats": 4}
    cache.write_text(json.dumps({"key": old_key, "models": {}}))
    assert chunk_latency(checkpoints, tmp_path / "arm.zarr", 4, cache)[1] is False


def test_a_given_teacher_that_is_no_policy_checkpoint_is_refused_before_anything_is_made(tmp_path, capsys):
    """Its depth is read from its header to check demo.layers: a safetensors file of other
    weights has none (distill refused it after the recording)."""
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / "foreign").mkdir()
    save_file({"w": np.zeros(1, dtype=np.float32)}, str(tmp_path / "foreign" / "model.safetensors"))
    code, _ = demo(tmp_path / "arm", "--teacher", str(tmp_path / "foreign"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == (f"error: demo.teacher={tmp_path / 'foreign'}: not a shallowpi policy checkpoint "
                                 "(format None); give one `platform train` made, or shipped, or train"), err
    assert not (tmp_path / "arm").exists()


def test_a_given_teacher_of_another_robot_is_refused_before_anything_is_made(tmp_path, capsys):
    """The arm's shipped teacher given for the humanoid recorded the humanoid's store first,
    then stopped at the student on its state/action sizes."""
    from shallowpi import config

    teacher = config.REPO_ROOT / "robots" / "arm" / "teacher"
    code, _ = demo(tmp_path / "hum", "--robot", "humanoid", "--teacher", str(teacher))
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith(f"error: demo.teacher={teacher}: the policy has state/action sizes 7/7 but "
                                        "robot 'humanoid' has 19 joints; give a teacher trained on this robot's"), err
    assert not (tmp_path / "hum").exists()


def test_the_results_fingerprint_follows_the_config_folder_in_use(tmp_path, monkeypatch):
    """The demo reuses an evaluation or a deployment made by the same code and settings. It
    hashed the checkout's configs/robot only: a lab's copy (SHALLOWPI_CONFIG_DIR) edited to
    another fps, or config.yaml's deploy section, left the fingerprint and the old results."""
    import shutil

    from shallowpi import config
    from shallowpi.commands.demo_stages import results_code

    shutil.copytree(config.config_dir(), tmp_path / "configs")
    monkeypatch.setenv("SHALLOWPI_CONFIG_DIR", str(tmp_path / "configs"))
    seen = [results_code.__wrapped__()]
    for name, old, new in (("robot/arm.yaml", "fps: 30", "fps: 15"), ("config.yaml", "deploy:", "deploy:  ")):
        path = tmp_path / "configs" / name
        assert old in path.read_text()
        path.write_text(path.read_text().replace(old, new, 1))
        seen.append(results_code.__wrapped__())
    assert len(set(seen)) == 3
