"""`platform distill` end to end on a real episode store (tiny preset, a few steps): the
teacher trained through `platform train`'s path then reused, the student an ordinary
checkpoint with the distillation recorded in it, the report, resume, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from shallowpi.cli import main
from shallowpi.data.store import EpisodeStore
from shallowpi.policy import Features, Policy, load_preset
from shallowpi.train.finetune import Split
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
QUICK = ["--policy", "tiny", "--no-progress", "--layers", "1", "policy.train.steps=4", "policy.train.save_every=2",
         "distill.sim_episodes=0", "distill.latency_repeats=2", "distill.probe_windows=4"]


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distill")
    store = root / "arm.zarr"
    make_store(store, episodes=4, length=12).close()
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["distill", "--dataset", str(store), "--runs-dir", str(root / "runs"), *QUICK]) == 0
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "store": store, "runs": root / "runs", "student": root / "runs" / "arm-tiny-student1",
            "teacher": root / "runs" / "arm-tiny" / "checkpoints" / "step_000004"}


def _distill(d, *extra: str) -> int:
    return main(["distill", "--dataset", str(d["store"]), "--runs-dir", str(d["runs"]), *QUICK, *extra])


def test_the_student_is_an_ordinary_checkpoint_that_records_its_teacher(distilled, capsys):
    from shallowpi.distill.distiller import checkpoint_sha256

    ckpt = distilled["student"] / "checkpoints" / "step_000004"
    student = Policy.load(ckpt)  # no teacher needed
    assert student.cfg.depth == 1 and student.cfg.vlm.depth == student.cfg.expert.depth == 1
    meta = Policy.read_metadata(ckpt)
    assert meta["teacher_sha256"] == checkpoint_sha256(distilled["teacher"])
    assert json.loads(meta["kept_layers"]) == [0]
    assert json.loads(meta["loss_weights"]) == {"task": 1.0, "output": 1.0, "attention": 1.0}
    assert json.loads(meta["attention_pairs"]) == [[0, 0]]
    # The action's joints in order, in the teacher's checkpoint and the student's (deploy checks them).
    with EpisodeStore.open(distilled["store"]) as store:
        names = list(store.features["action"].names)
    assert names and json.loads(meta["joint_names"]) == names
    assert json.loads(Policy.read_metadata(distilled["teacher"])["joint_names"]) == names
    # The scenes each learned (a student distilled from either holds none of them out):
    # the teacher's training episodes', and the student's, which trained on the same ones.
    taught = json.loads(Policy.read_metadata(distilled["teacher"])["scenes"])
    teacher_train = json.loads(Policy.read_metadata(distilled["teacher"])["train"])
    assert taught == sorted(Split(teacher_train, []).scenes(distilled["store"]).values()) and len(taught) == 3
    assert json.loads(meta["scenes"]) == taught
    # ... and the shape of each camera's frames (deploy refuses a camera of another aspect ratio).
    with EpisodeStore.open(distilled["store"]) as store:
        shapes = {key.removeprefix("observation.images."): list(feature.shape[:2])
                  for key, feature in store.features.items() if key.startswith("observation.images.")}
    assert len(shapes) == 2
    for checkpoint in (ckpt, distilled["teacher"]):
        assert json.loads(Policy.read_metadata(checkpoint)["camera_shapes"]) == shapes
    # ... and the rate its chunks are paced at (eval --sim and deploy check it without the store).
    assert json.loads(meta["fps"]) == json.loads(Policy.read_metadata(distilled["teacher"])["fps"]) == 30.0
    # ... and the calibration its joint positions were recorded under (deploy checks the robot's).
    with EpisodeStore.open(distilled["store"]) as store:
        calibrations = sorted({e.calibration_id for e in store.episodes})
    assert calibrations and json.loads(meta["calibrations"]) == calibrations
    assert json.loads(Policy.read_metadata(distilled["teacher"])["calibrations"]) == calibrations
    rows = [json.loads(x) for x in (distilled["student"] / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert all({"task", "output", "attention"} <= set(r) for r in rows)
    # `platform eval` loads it and scores the teacher's held-out episode.
    assert main(["eval", "--policy", str(ckpt), "--dataset", str(distilled["store"])]) == 0
    assert "held-out episodes [3]" in capsys.readouterr().out


def test_the_report_has_every_section_and_its_plots(distilled):
    run = distilled["student"]
    report = (run / "report.md").read_text()
    for heading in ("## The cut", "## Loss per term", "## Offline action error (held-out episodes [3])",
                    "## Closed loop in the twin", "## Cost of one chunk", "## Resolved config"):
        assert heading in report
    assert "attention pairing [student layer, teacher layer]: [[0, 0]]" in report
    for png in ("loss_terms.png", "action_error.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "report.json").read_text())
    assert len(summary["action_error"]["student_vs_truth"]) == 6  # per joint
    cost = summary["cost"]
    assert cost["student"]["params"] < cost["teacher"]["params"]
    assert 0 < cost["student"]["gflops"] < cost["teacher"]["gflops"]
    facts = json.loads((run / "distill.json").read_text())
    assert set(facts["selections"]) == {"uniform", "first", "greedy"}


def test_the_teacher_run_is_reused_not_retrained(distilled, capsys):
    before = (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns
    assert _distill(distilled, "--run", "again", "distill.report=false", "distill.compare_selections=false",
                    "distill.weights.attention=0", "distill.weights.output=0") == 0
    assert (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns == before
    assert not (distilled["runs"] / "arm-tiny" / "checkpoints" / "step_000006").exists()
    rows = [json.loads(x) for x in (distilled["runs"] / "again" / "metrics.jsonl").read_text().splitlines()]
    assert all("output" not in r and "attention" not in r for r in rows)  # the task-only ablation
    assert set(json.loads((distilled["runs"] / "again" / "distill.json").read_text())["selections"]) == {"uniform"}
    assert f"teacher: {distilled['teacher']}" in capsys.readouterr().out


def test_an_init_the_reused_teacher_would_drop_is_refused(distilled, capsys):
    """--init starts the teacher's training: with a finished teacher in runs/NAME-P, reused,
    it was dropped without a word ("teacher: reusing ..."), the student cut from a teacher
    the π0 base never touched."""
    before = (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns
    assert _distill(distilled, "--run", "from-init", "--init", str(distilled["teacher"]), "distill.report=false") != 0
    said = capsys.readouterr().err
    assert f"--init {distilled['teacher']} starts the teacher's training, and this distill would use the teacher " \
           in said and ", trained already from no --init: drop --init to distil from it" in said, said
    assert not (distilled["runs"] / "from-init").exists()
    assert (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns == before


def test_a_teacher_this_init_began_is_reused_when_the_same_command_runs_again(distilled, tmp_path, capsys):
    """The refusal above must not stop `platform distill ... --init X` run again (its student
    interrupted, say): the teacher it trained records where it began, and is reused."""
    runs = tmp_path / "runs"
    again = ["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), *QUICK,
             "--init", str(distilled["teacher"]), "distill.report=false", "distill.compare_selections=false"]
    assert main(again) == 0
    teacher = runs / "arm-tiny" / "checkpoints" / "step_000004"
    assert Policy.read_metadata(teacher)["init"] == str(distilled["teacher"].resolve())
    capsys.readouterr()
    assert main([*again, "--run", "second"]) == 0
    assert f"teacher: {teacher}" in capsys.readouterr().out
    # Its model is the --init's, not the preset's; a model override it does not match is still
    # refused (it was recorded in config.yaml and not applied).
    assert main([*again, "--run", "third", "policy.num_steps=7"]) != 0
    said = capsys.readouterr().err
    assert "policy.num_steps=7, the teacher's " in said and "(the teacher is trained from --init, " in said, said
    assert not (runs / "third").exists()
    # Refused before a teacher trains, not only when one is reused.
    fresh = tmp_path / "fresh"
    assert main([*again[:again.index("--runs-dir") + 1], str(fresh), *again[again.index("--runs-dir") + 2:],
                 "policy.num_steps=7"]) != 0
    assert "policy.num_steps=7, the teacher's " in capsys.readouterr().err and not (fresh / "arm-tiny").exists()


def test_resume_replays_the_same_loss_curve(distilled):
    straight = distilled["student"]
    killed = distilled["runs"] / "killed"
    shutil.copytree(straight, killed)
    # As if killed after the step-2 checkpoint: the newer one never completed.
    shutil.rmtree(killed / "checkpoints" / "step_000004")
    (killed / "checkpoints" / "last").write_text("step_000002")
    assert _distill(distilled, "--run", "killed", "distill.report=false") != 0  # no silent overwrite
    assert _distill(distilled, "--run", "killed", "--resume", "distill.report=false") == 0
    a, b = ([json.loads(x) for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (straight, killed))
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        for key in ("loss", "task", "output", "attention"):
            assert x[key] == pytest.approx(y[key], rel=1e-5, abs=1e-7), (x["step"], key)


def test_greedy_searches_on_training_windows_and_the_strategies_are_compared_on_held_out_ones(distilled):
    import torch

    from shallowpi.commands.train_cmd import chunk_dataset
    from shallowpi.distill.distiller import probe_windows
    from shallowpi.distill.student import greedy_layers, layer_view

    assert _distill(distilled, "--run", "greedy", "--select", "greedy", "distill.steps=1", "distill.report=false") == 0
    facts = json.loads((distilled["runs"] / "greedy" / "distill.json").read_text())
    assert {k: facts["split"][k] for k in ("train", "held_out", "teacher_only")} == {
        "train": [0, 1, 2], "held_out": [3], "teacher_only": []}
    assert set(facts["split"]["episodes"]) == {"0", "1", "2", "3"}  # what each index was
    teacher = Policy.load(Path(facts["teacher"]))
    train, held_out = (probe_windows(chunk_dataset(distilled["store"], teacher.cfg.chunk_len, facts["split"][part]),
                                     teacher, 4) for part in ("train", "held_out"))
    kept, trace = greedy_layers(teacher.model, 1, train)
    assert facts["kept_layers"] == kept and facts["greedy"]["velocity_mse"] == pytest.approx(trace.mse, rel=1e-5)
    # The two probes tell apart: searched on the held-out windows the trace would differ.
    assert greedy_layers(teacher.model, 1, held_out)[1].mse != pytest.approx(trace.mse, rel=1e-3)
    with torch.no_grad():
        reference = teacher.model.velocity(held_out.prefix, held_out.state, held_out.x_t, held_out.t)
        for name, row in facts["selections"].items():
            v = layer_view(teacher.model, row["layers"]).velocity(held_out.prefix, held_out.state, held_out.x_t,
                                                                  held_out.t)
            mse = float(((v - reference).square() * held_out.weights).sum() / held_out.weights.sum())
            assert row["velocity_mse"] == pytest.approx(mse, rel=1e-5), name


def test_a_teacher_trained_on_another_store_of_the_same_name_is_not_reused(distilled, tmp_path, capsys):
    """The teacher's run folder is named by the store's file name: another arm.zarr found
    the first one's teacher and reused it, trained on other data."""
    other = tmp_path / "elsewhere" / "arm.zarr"
    other.parent.mkdir()
    make_store(other, episodes=4, length=12, seed=3).close()
    assert main(["distill", "--dataset", str(other), "--runs-dir", str(distilled["runs"]), "--run", "elsewhere",
                 *QUICK]) != 0
    err = capsys.readouterr().err
    assert f"the teacher at {distilled['teacher']} (from {distilled['store']}) was trained on other episodes" in err
    assert not (distilled["runs"] / "elsewhere").exists()


def test_a_resumed_distillation_keeps_the_split_it_started_with(distilled, tmp_path):
    # The same episodes in another folder: the teacher's split holds (the episodes are the
    # same under the same numbers), and episodes added to the store since must not change
    # it on resume.
    store = tmp_path / "copy.zarr"
    shutil.copytree(distilled["store"], store)
    common = ["distill", "--dataset", str(store), "--runs-dir", str(tmp_path), "--run", "r", *QUICK,
              "--teacher", str(distilled["teacher"]), "distill.report=false"]
    assert main(common) == 0
    first = json.loads((tmp_path / "r" / "distill.json").read_text())["split"]
    assert first["held_out"] == [3]
    shutil.rmtree(tmp_path / "r" / "checkpoints" / "step_000004")  # as if killed after step 2's checkpoint
    (tmp_path / "r" / "checkpoints" / "last").write_text("step_000002")
    with EpisodeStore.open(store, "a") as writable, EpisodeStore.open(distilled["store"]) as source:
        writable.append_episode_from(source, 0)
    assert main([*common, "--resume"]) == 0
    assert json.loads((tmp_path / "r" / "distill.json").read_text())["split"] == first
    assert json.loads(Policy.read_metadata(tmp_path / "r" / "checkpoints" / "step_000004")["train"]) == first["train"]


def test_a_given_teacher_s_preset_sets_the_student_s_training_unless_one_is_named(distilled, tmp_path,
                                                                                  monkeypatch):
    import yaml

    from shallowpi.commands import distill_cmd

    # Without --policy the root config's `small` (batch 32, 1,500 steps, its own LR warm-up)
    # would train a student cut from a `tiny` teacher: its own preset's settings are meant.
    no_preset = [a for a in QUICK if a not in ("--policy", "tiny")]
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(tmp_path), "--run", "own",
                 *no_preset, "--teacher", str(distilled["teacher"]), "distill.steps=1", "distill.report=false",
                 "distill.compare_selections=false"]) == 0
    resolved = yaml.safe_load((tmp_path / "own" / "config.yaml").read_text())
    assert resolved["policy"]["name"] == "tiny" and resolved["policy"]["train"]["batch_size"] == 4
    # A preset named on the command line wins: the teacher's is not even looked up.
    def looked_up(*args, **kwargs):
        raise AssertionError("the teacher's preset was looked up though --policy names one")

    monkeypatch.setattr(distill_cmd, "_preset_of", looked_up)
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(tmp_path), "--run", "named",
                 *no_preset, "--teacher", str(distilled["teacher"]), "--policy", "small",
                 "policy.train.batch_size=2", "distill.steps=1", "distill.report=false",
                 "distill.compare_selections=false"]) == 0
    resolved = yaml.safe_load((tmp_path / "named" / "config.yaml").read_text())
    assert resolved["policy"]["name"] == "small" and resolved["policy"]["train"]["warmup_steps"] == 100


def test_failed_episodes_teach_the_student_through_the_teacher_alone(distilled, capsys):
    # The fixture's episodes 1 and 3 failed; successful_only keeps 0 and 2 and the teacher
    # held out 3, so with failed_episodes=teacher episode 1 joins the student's windows for
    # the output and attention terms (the objective leaves it out of the task term).
    common = ["--teacher", str(distilled["teacher"]), "policy.train.successful_only=true", "distill.report=false",
              "distill.compare_selections=false"]
    assert _distill(distilled, "--run", "taught", *common, "distill.failed_episodes=teacher") == 0
    assert _distill(distilled, "--run", "skipped", *common) == 0
    taught, skipped = (distilled["runs"] / name for name in ("taught", "skipped"))
    split = json.loads((taught / "distill.json").read_text())["split"]
    assert {k: split[k] for k in ("train", "held_out", "teacher_only")} == {"train": [0, 2], "held_out": [3],
                                                                           "teacher_only": [1]}
    assert set(split["episodes"]) == {"0", "1", "2", "3"}  # the teacher-only one named too
    assert json.loads((skipped / "distill.json").read_text())["split"]["teacher_only"] == []
    meta = Policy.read_metadata(taught / "checkpoints" / "step_000004")
    assert json.loads(meta["train"]) == [0, 2] and json.loads(meta["teacher_only"]) == [1]
    # One more episode's windows: another data order from the first step on.
    first = [json.loads((run / "metrics.jsonl").read_text().splitlines()[0]) for run in (taught, skipped)]
    assert first[0]["output"] != pytest.approx(first[1]["output"], rel=1e-6)
    # `platform eval` counts the failed episode as one the student has seen.
    capsys.readouterr()
    assert main(["eval", "--policy", str(taught / "checkpoints" / "step_000004"), "--dataset",
                 str(distilled["store"]), "--episodes", "1"]) == 0
    assert "training episodes [1]" in capsys.readouterr().out
    # Stopped after step 2's checkpoint and resumed, it learns the same episodes the same way.
    resumed = distilled["runs"] / "taught-resumed"
    shutil.copytree(taught, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000004")
    (resumed / "checkpoints" / "last").write_text("step_000002")
    assert _distill(distilled, "--run", "taught-resumed", "--resume", *common, "distill.failed_episodes=teacher") == 0
    a, b = ([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (taught, resumed))
    assert [r["step"] for r in b] == [0, 1, 2, 3]
    for x, y in zip(a, b):
        assert x["task"] == pytest.approx(y["task"], rel=1e-5) and x["output"] == pytest.approx(y["output"], rel=1e-5)
    capsys.readouterr()

    def error(*extra: str) -> str:
        assert _distill(distilled, *extra) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        return err

    assert "distill.failed_episodes=skip differs from the run being resumed (teacher" in error(
        "--run", "taught", "--resume", *common)
    assert "distill.failed_episodes=teacher needs policy.train.successful_only=true" in error(
        "--run", "bad", "--teacher", str(distilled["teacher"]), "distill.failed_episodes=teacher")
    assert "through the output or attention term, and both are off" in error(
        "--run", "bad", *common, "distill.failed_episodes=teacher", "distill.weights.output=0",
        "distill.weights.attention=0")
    assert "distill.failed_episodes=teacher needs distill.teacher_fraction=1" in error(
        "--run", "bad", *common, "distill.failed_episodes=teacher", "distill.teacher_fraction=0.5")
    assert "unknown distill.failed_episodes 'all'; choose one of: skip, teacher" in error(
        "--run", "bad", *common, "distill.failed_episodes=all")


def test_one_line_errors(distilled, tmp_path, capsys):
    def error(*extra: str) -> str:
        assert _distill(distilled, "--run", "bad", *extra) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "Traceback" not in err, err
        return err

    assert "keeps 1 to 1 of the teacher's 2 layers, got distill.layers=2" in error("--layers", "2")
    assert "keeps 1 to 1 of the teacher's 2 layers, got distill.layers=0" in error("--layers", "0")
    assert "attention layer 1 is outside the student's layers 0-0" in error("distill.attention_pairs=[[1,1]]")
    assert "sha256" in error("--teacher", str(distilled["teacher"]), "--teacher-sha256", "0" * 64)
    other = tmp_path / "other"
    cfg = load_preset("tiny")
    Policy(cfg, Features(3, 3, ["front", "wrist"])).save(other)
    err = error("--teacher", str(other))
    assert "has state/action sizes 6/6 but the checkpoint expects 3/3" in err
    # A teacher trained at another rate: its chunks pace actions for that rate.
    Policy(cfg, Features(6, 6, ["front", "wrist"])).save(other, extra_metadata={"fps": "15.0"})
    assert f"teacher {other} was trained on episodes recorded at 15 Hz, dataset arm.zarr at 30 Hz" in error(
        "--teacher", str(other))
    # A teacher whose word vocabulary lacks the store's instruction: the student would read
    # every unknown word as one token (two tasks could become one).
    words = dataclasses.replace(cfg, tokenizer="words", vocabulary=["cube", "put", "the"])
    Policy(words, Features(6, 6, ["front", "wrist"])).save(other)
    assert "task words ['bowl', 'in', 'red'] are not in the policy's word vocabulary" in error("--teacher", str(other))
    # A resumed run refuses a teacher other than the one it was distilled from, also when
    # --teacher-sha256 vouches for that other one (the run's own hash went unchecked then).
    Policy(cfg, Features(6, 6, ["front", "wrist"])).save(other)
    assert "expects" in error("--run", "arm-tiny-student1", "--resume", "--teacher", str(other))
    from shallowpi.distill.distiller import checkpoint_sha256

    assert "is not the teacher the run being resumed was distilled from" in error(
        "--run", "arm-tiny-student1", "--resume", "--teacher", str(other), "--teacher-sha256", checkpoint_sha256(other))
    # ... and a student or an objective other than the one its checkpoints were trained on.
    assert "distill.weights={'task': 1.0, 'output': 1.0, 'attention': 0.0} differs from the run being resumed" in error(
        "--run", "arm-tiny-student1", "--resume", "distill.weights.attention=0")
    assert "distill.select=first differs from the run being resumed (uniform" in error(
        "--run", "arm-tiny-student1", "--resume", "--select", "first")
    # The objective's other settings too: resumed with another teacher share or attention pair
    # (these went unchecked: the pairs whenever the resume did not name them, the share always).
    assert "distill.teacher_fraction=0.5 differs from the run being resumed (1.0" in error(
        "--run", "arm-tiny-student1", "--resume", "distill.teacher_fraction=0.5")
    assert "distill.attention_pairs=[[0, 1]] differs from the run being resumed" in error(
        "--run", "arm-tiny-student1", "--resume", "distill.attention_pairs=[[0,1]]")
    assert not (distilled["runs"] / "bad" / "checkpoints").exists()
    # Settings that choose the episodes are the teacher's: under distill.train they were
    # accepted, recorded in the checkpoint, and not applied.
    assert ("distill.train.successful_only: the student trains on its teacher's episodes, which "
            "policy.train.successful_only chooses; set that instead") in error("+distill.train.successful_only=true")
    assert "distill.train.skip_nonfinite: " in error("+distill.train.skip_nonfinite=true")
    # A count given a fraction, or 0 steps (read as unset: the preset's count trained).
    assert "distill.steps must be >= 1 (or null: the preset's policy.train.steps), got 0" in error("distill.steps=0")
    assert "distill.probe_windows must be a whole number (its default is 32), not 1.5" in error(
        "distill.probe_windows=1.5")
    assert "policy.train.steps must be a whole number (its default is 20), not 2.5" in error("policy.train.steps=2.5")
    # ... and where a config comes from elsewhere than the command line (a script, a test)
    from shallowpi.distill.settings import DistillConfig
    from shallowpi.errors import ConfigError
    from shallowpi.train.trainer import TrainConfig, TrainingError

    with pytest.raises(ConfigError, match=r"distill\.probe_windows must be a whole number, got 1\.5"):
        DistillConfig.from_dict({"probe_windows": 1.5})
    with pytest.raises(TrainingError, match=r"train\.steps must be a whole number, got 2\.5"):
        TrainConfig(steps=2.5)
    # Keys the flags set (--device, --no-progress) are not a train: section's.
    assert "policy.train.device is set by the --device flag, not in the config" in error("+policy.train.device=cpu")
    assert "distill.train.progress is set by the --no-progress flag" in error("+distill.train.progress=false")


def test_a_student_that_cannot_be_cut_is_refused_before_its_teacher_is_trained(distilled, tmp_path, capsys):
    fresh = tmp_path / "runs"  # no teacher run here: one would be trained first
    for extra, expected in (
        (["--layers", "2"], "keeps 1 to 1 of the teacher's 2 layers, got distill.layers=2"),
        (["distill.attention_pairs=[[1,1]]"], "attention layer 1 is outside the student's layers 0-0"),
        (["distill.attention_pairs=[[0,2]]"], "attention layer 2 is outside the teacher's layers 0-1"),
        # refused by the report's closed loop, after the training it was asked with
        (["distill.sim_episode_time_s=0"], "distill.sim_episode_time_s must be > 0 (or null"),
    ):
        assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(fresh), *QUICK, *extra]) != 0
        err = capsys.readouterr().err.strip()
        assert expected in err and err.count("\n") == 0, err
    assert not (fresh / "arm-tiny").exists()


def test_a_student_run_that_cannot_start_or_resume_is_refused_before_any_teacher_work(distilled, tmp_path,
                                                                                      monkeypatch, capsys):
    """The student's run folder was checked by the trainer, after the teacher's training and
    the layer choice (greedy: hours on a CPU at π0 size): a folder holding a finished
    student, or nothing to resume, is refused first now."""
    from shallowpi.distill import distiller

    fresh = tmp_path / "runs"  # no teacher run here: one would be trained first
    shutil.copytree(distilled["student"], fresh / "arm-tiny-student1")

    def error(*extra: str) -> str:
        assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(fresh), *QUICK, *extra]) != 0
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        return err

    assert "arm-tiny-student1 already holds checkpoints; pass --resume" in error()
    assert "nothing to resume in" in error("--run", "new", "--resume")
    assert not (fresh / "arm-tiny").exists()

    def chose(*args, **kwargs):
        raise AssertionError("the layers were chosen before the run folder was checked")

    monkeypatch.setattr(distiller, "select_layers", chose)
    assert "already holds checkpoints" in error("--run", "arm-tiny-student1", "--teacher", str(distilled["teacher"]),
                                                "--select", "greedy")


def test_resume_without_teacher_continues_with_the_teacher_the_run_recorded(distilled, tmp_path, caplog):
    """`distill --resume` without --teacher looked for the teacher as a new run does: in
    other runs folder it trained a new one (or extended one), then refused its sha256."""
    fresh = tmp_path / "runs"
    resumed = fresh / "moved"
    shutil.copytree(distilled["student"], resumed)
    shutil.rmtree(resumed / "checkpoints" / "step_000004")  # as if killed after step 2's checkpoint
    (resumed / "checkpoints" / "last").write_text("step_000002")
    with caplog.at_level("INFO", logger="shallowpi.commands.distill_cmd"):
        assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(fresh), "--run", "moved",
                     "--resume", *QUICK, "distill.report=false"]) == 0
    assert (resumed / "checkpoints" / "step_000004").is_dir() and not (fresh / "arm-tiny").exists()
    assert f"teacher: {distilled['teacher']}, as the run being resumed" in caplog.text
    # Its teacher gone: said in one line, with what to pass.
    shutil.rmtree(resumed / "checkpoints" / "step_000004")
    facts = json.loads((resumed / "distill.json").read_text())
    (resumed / "distill.json").write_text(json.dumps(facts | {"teacher": str(tmp_path / "gone")}))
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(fresh), "--run", "moved",
                 "--resume", *QUICK, "distill.report=false"]) != 0
    assert not (fresh / "arm-tiny").exists()


def test_a_teacher_trained_for_fewer_steps_than_the_preset_is_reused_as_it_is(distilled, tmp_path):
    """`platform train --steps 2`, then `platform distill`: the teacher was extended to the
    preset's policy.train.steps, adding checkpoints to the user's run; it is complete."""
    runs = tmp_path / "runs"
    quick = [a for a in QUICK if a not in ("--layers", "1") and not a.startswith("distill.")]
    assert main(["train", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), *quick, "--steps", "2"]) == 0
    teacher = runs / "arm-tiny" / "checkpoints"
    assert [p.name for p in teacher.glob("step_*")] == ["step_000002"]
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), *QUICK,
                 "distill.report=false", "distill.compare_selections=false"]) == 0
    assert [p.name for p in teacher.glob("step_*")] == ["step_000002"]
    facts = json.loads((runs / "arm-tiny-student1" / "distill.json").read_text())
    assert Path(facts["teacher"]) == teacher / "step_000002"


def test_a_student_that_learned_failed_episodes_from_its_teacher_can_teach_in_turn(distilled, tmp_path):
    """Its header names those episodes among the ones it saw: checked against the split
    without them, a distillation from it on the same store was refused as trained on other
    episodes (the tiny preset's students are too shallow to cut again, so the split the
    distiller takes from such a teacher is asked for directly)."""
    from shallowpi.commands.distill_cmd import _check_teacher_data
    from shallowpi.distill.distiller import _split_of

    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(tmp_path), *QUICK,
                 "--run", "taught", "--teacher", str(distilled["teacher"]), "policy.train.successful_only=true",
                 "distill.failed_episodes=teacher", "distill.report=false", "distill.compare_selections=false"]) == 0
    taught = tmp_path / "taught" / "checkpoints" / "step_000004"
    assert json.loads(Policy.read_metadata(taught)["teacher_only"]) == [1]
    split, note = _split_of(taught, distilled["store"], [0, 2], 0.1, None)
    assert (split.train, split.held_out, note) == ([0, 2], [3], "")  # its own split, the failed episode left out
    _check_teacher_data(taught, distilled["store"])  # as a teacher found in a runs folder: passes too


def test_with_a_teacher_given_the_attention_pairs_are_checked_before_its_layers_are_chosen(
    distilled, monkeypatch, capsys
):
    """The layer choice runs the teacher (greedy: ~depth^2 passes, hours on a CPU at π0
    size): a pair outside the student was refused only when the objective was built."""
    from shallowpi.distill import distiller

    def chose(*args, **kwargs):
        raise AssertionError("the layers were chosen before the attention pairs were checked")

    monkeypatch.setattr(distiller, "select_layers", chose)
    assert _distill(distilled, "--run", "bad", "--teacher", str(distilled["teacher"]),
                    "distill.attention_pairs=[[1,1]]") != 0
    err = capsys.readouterr().err.strip()
    assert "attention layer 1 is outside the student's layers 0-0" in err and err.count("\n") == 0, err


def test_a_teacher_interrupted_inside_distill_says_to_run_the_command_again(distilled, tmp_path):
    """Ctrl-C while `platform distill` trains its teacher. The trainer's own advice, --resume,
    is the student's flag here: `distill --resume` would finish the teacher, then find no
    student to resume."""
    from conftest import platform_cmd, stop_while_training, subprocess_env

    runs = tmp_path / "runs"
    quick = [a for a in QUICK if not a.startswith("policy.train.steps=")]
    cmd = platform_cmd("distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), *quick,
                       "policy.train.steps=100000", "policy.train.log_every=1")
    code, err = stop_while_training(cmd, runs / "arm-tiny" / "metrics.jsonl", subprocess_env(OMP_NUM_THREADS="1"))
    assert code == 130, err
    last = err.strip().splitlines()[-1]
    kept = (runs / "arm-tiny" / "checkpoints" / (runs / "arm-tiny" / "checkpoints" / "last").read_text())
    assert last == (f"error: the teacher's training stopped at {kept}: run the same `platform distill` command "
                    "again (without --resume) to continue it"), last


@pytest.mark.slow
def test_the_report_runs_teacher_and_student_on_every_task_of_the_twin(tmp_path):
    import subprocess

    from conftest import platform_cmd, subprocess_env

    recorded = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(tmp_path), "--dataset", "demo", "--episodes", "2",
                     "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui",
                     "record.sim_size=40x32", f"telemetry.address={tmp_path}/distill-t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    args = ["distill", "--dataset", str(tmp_path / "demo.zarr"), "--runs-dir", str(tmp_path / "runs"),
            *QUICK, "distill.sim_episodes=1", "distill.sim_episode_time_s=0.3"]
    assert main(args) == 0
    run = tmp_path / "runs" / "demo-tiny-student1"
    summary = json.loads((run / "report.json").read_text())
    rows = {(r["task"], r["model"]): r for r in summary["closed_loop"]}
    assert set(rows) == {(t, m) for t in ("cube_in_bowl", "push_block_left") for m in ("teacher", "student")}
    for r in rows.values():
        lo, hi = r["interval"]
        assert r["episodes"] == 1 and 0.0 <= lo < hi <= 1.0
    report = (run / "report.md").read_text()
    assert "| push_block_left | student |" in report and "95 % Wilson interval" in report
    assert (run / "success.png").read_bytes()[:4] == b"\x89PNG"


def test_a_teacher_given_for_its_own_store_edited_since_is_refused(tmp_path, capsys):
    """A teacher's split names episodes by number; after `dataset delete` its store holds
    others under them, and the student's held-out episodes would include ones the teacher
    trained on. It was re-split silently; now it is one line."""
    store = tmp_path / "arm.zarr"
    make_store(store, episodes=5, length=12).close()
    assert main(["train", "--dataset", str(store), "--runs-dir", str(tmp_path / "runs"), "--policy", "tiny",
                 "--no-progress", "policy.train.steps=1", "policy.train.save_every=1"]) == 0
    teacher = tmp_path / "runs" / "arm-tiny" / "checkpoints" / "step_000001"
    with EpisodeStore.open(store, "a") as writable:
        writable.delete_episodes([0])
    capsys.readouterr()
    assert main(["distill", "--dataset", str(store), "--runs-dir", str(tmp_path / "runs"), "--run", "s", *QUICK,
                 "--teacher", str(teacher)]) != 0
    err = capsys.readouterr().err.strip()
    # every number from the deleted one on (the last, 4, is gone altogether)
    assert f"the teacher {teacher} was trained on other episodes than {store} holds under the numbers " \
           "[0, 1, 2, 3, 4]" in err and "distill without --teacher" in err and "\n" not in err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err, err
    return err


def test_a_reused_teacher_of_another_model_than_asked_is_refused(distilled, capsys):
    """runs/NAME-P was reused once complete, its episodes and steps checked, never its model:
    `policy.num_steps=7 policy.vlm.width=64` distilled the teacher's 3 and 32 while
    config.yaml and the report's resolved config said 7 and 64."""
    before = (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns
    assert _distill(distilled, "--run", "wider", "policy.num_steps=7", "policy.vlm.width=64") != 0
    err = _one_line_error(capsys)
    assert (f"the teacher at {distilled['teacher']} was trained with another model than this command asks "
            "(policy.vlm.width=64, the teacher's 32; policy.num_steps=7, the teacher's 3): to distil from it, drop "
            f"those settings (or pass --teacher {distilled['teacher']}); to train a teacher with them, pass "
            "--runs-dir OTHER") in err, err
    assert not (distilled["runs"] / "wider").exists()
    assert (distilled["teacher"] / "model.safetensors").stat().st_mtime_ns == before


def test_a_reused_teacher_of_another_training_recipe_than_asked_is_refused(distilled, capsys):
    """runs/NAME-P was reused once its episodes, model and steps matched, never its training:
    a seed sweep's `distill policy.train.seed=7 policy.train.lr=0.01` cut the student from
    the seed-0 teacher (lr 0.001) while config.yaml said seed 7, lr 0.01. The EMA rate too:
    the student is cut from a teacher's EMA weights when it kept some, its raw ones when not.
    The student's own training (distill.train) is no teacher's setting."""
    teacher = distilled["teacher"]
    before = (teacher / "model.safetensors").stat().st_mtime_ns
    assert _distill(distilled, "--run", "seed7", "policy.train.seed=7", "policy.train.lr=0.01") != 0
    assert _one_line_error(capsys) == (
        f"error: the teacher at {teacher} was trained with other training settings than this command asks "
        "(policy.train.lr=0.01, the teacher's 0.001; policy.train.seed=7, the teacher's 0): to distil from it, drop "
        f"those settings (distill.train.* sets the student's own, or pass --teacher {teacher}); to train a teacher "
        "with them, pass --runs-dir OTHER")
    assert _distill(distilled, "--run", "seed7", "policy.train.ema=0.9") != 0
    assert "asks (policy.train.ema=0.9, the teacher's None): " in _one_line_error(capsys)
    assert not (distilled["runs"] / "seed7").exists()
    assert _distill(distilled, "--run", "own-seed", "distill.train.seed=7", "distill.train.lr=0.01", "distill.steps=1",
                    "distill.report=false", "distill.compare_selections=false") == 0
    assert json.loads((distilled["runs"] / "own-seed" / "distill.json").read_text())["teacher"] == str(teacher)
    assert (teacher / "model.safetensors").stat().st_mtime_ns == before
    assert not (teacher.parent / "step_000006").exists()


def test_a_teacher_to_continue_with_another_recipe_is_refused_with_distill_s_advice(distilled, tmp_path, capsys):
    """Interrupted, runs/NAME-P is continued by the trainer, which refused another seed with
    its own advice, "start a new run (--run NAME)": in distill --run names the student."""
    runs = tmp_path / "runs"
    shutil.copytree(distilled["runs"] / "arm-tiny", runs / "arm-tiny")
    checkpoints = runs / "arm-tiny" / "checkpoints"
    shutil.rmtree(checkpoints / "step_000004")  # as if stopped after step 2's checkpoint
    (checkpoints / "last").write_text("step_000002")
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), *QUICK,
                 "policy.train.seed=8"]) != 0
    assert _one_line_error(capsys) == (
        f"error: the teacher at {checkpoints / 'step_000002'} was trained with other training settings than this "
        "command asks (policy.train.seed=8, the teacher's 0): to continue it, drop those settings; to train a "
        "teacher with them, pass --runs-dir OTHER (or distil from a teacher you give: --teacher CKPT)")
    assert [p.name for p in checkpoints.glob("step_*")] == ["step_000002"]
    assert not (runs / "arm-tiny-student1").exists()


def test_what_training_fills_in_is_no_other_model(tmp_path):
    """The cameras a teacher was trained with, and the vocabulary and offset dimensions
    training built where the preset leaves them empty, are not asked for by the preset:
    they do not make the teacher another model (every `tokenizer: words` teacher would)."""
    from shallowpi.commands.distill_cmd import _model_differences

    asked = dataclasses.replace(load_preset("tiny"), tokenizer="words", actions="delta")
    built = dataclasses.replace(asked, vocabulary=["cube", "put", "the"], delta_dims=[0, 1, 2, 3, 4])
    Policy(built, Features(6, 6, ["front", "wrist"])).save(tmp_path / "teacher")
    assert _model_differences(tmp_path / "teacher", asked) == []
    # ... unless asked for otherwise, by name
    named = dataclasses.replace(asked, delta_dims=[0, 1], num_steps=5)
    assert _model_differences(tmp_path / "teacher", named) == [
        "policy.num_steps=5, the teacher's 3", "policy.delta_dims=[0, 1], the teacher's [0, 1, 2, 3, 4]"]
    assert _model_differences(tmp_path / "teacher", named, ["delta_dims"]) == [
        "policy.delta_dims=[0, 1], the teacher's [0, 1, 2, 3, 4]"]


def test_a_model_override_the_given_teacher_does_not_match_is_refused(distilled, capsys):
    """The student copies its teacher's model: `--teacher CKPT policy.num_steps=7` was
    accepted, recorded in config.yaml and the report, and the student sampled in 3 steps."""
    teacher = distilled["teacher"]
    assert _distill(distilled, "--run", "given-wider", "--teacher", str(teacher), "policy.num_steps=7") != 0
    assert _one_line_error(capsys) == (
        f"error: policy.num_steps=7, the teacher's 3: a student keeps its teacher's model (--teacher: {teacher}), so "
        "this would be recorded and not applied; drop it (policy.train.* keys set the student's training), or distil "
        "without --teacher to train a teacher with it")
    assert _distill(distilled, "--run", "given-wider", "--teacher", str(teacher), "policy.vlm.mlp_dim=128") != 0
    assert _one_line_error(capsys).startswith("error: policy.vlm.mlp_dim=128, the teacher's 64: ")
    assert not (distilled["runs"] / "given-wider" / "checkpoints").exists()
    # The run being resumed recorded its teacher: the same rule without --teacher.
    resumed = distilled["runs"] / "resumed-wider"
    shutil.copytree(distilled["student"], resumed)
    assert _distill(distilled, "--run", "resumed-wider", "--resume", "policy.num_steps=7") != 0
    assert "a student keeps its teacher's model (the run being resumed: " in _one_line_error(capsys)
    # What the teacher holds, and the student's training keys, pass.
    assert _distill(distilled, "--run", "same-model", "--teacher", str(teacher), "policy.num_steps=3",
                    "policy.train.batch_size=2", "distill.steps=1", "distill.report=false",
                    "distill.compare_selections=false") == 0


def test_episodes_recorded_after_the_teacher_trained_train_the_student(distilled, tmp_path, caplog):
    """With the teacher's split in force, the episodes it never saw were neither trained on
    nor held out: a store that grew since was distilled on its old episodes alone. Those
    of a held-out episode's scene stay out (the student would learn what it is scored on)."""
    store = tmp_path / "grown.zarr"
    shutil.copytree(distilled["store"], store)
    with EpisodeStore.open(store, "a") as writable, EpisodeStore.open(distilled["store"]) as source:
        writable.append_episode_from(source, 0)  # 4: a scene the teacher trained on
        writable.append_episode_from(source, 3)  # 5: the held-out episode's scene
    with caplog.at_level("INFO", logger="shallowpi.distill.distiller"):
        assert main(["distill", "--dataset", str(store), "--runs-dir", str(tmp_path), "--run", "grown", *QUICK,
                     "--teacher", str(distilled["teacher"]), "distill.steps=1", "distill.report=false",
                     "distill.compare_selections=false"]) == 0
    split = json.loads((tmp_path / "grown" / "distill.json").read_text())["split"]
    assert (split["train"], split["held_out"]) == ([0, 1, 2, 4], [3])
    assert json.loads(Policy.read_metadata(tmp_path / "grown" / "checkpoints" / "step_000001")["train"]) == [0, 1, 2, 4]
    assert ("1 episode(s) recorded after the teacher trained join the student's training; 1 left out: their scenes "
            "are the held-out episodes'") in caplog.text


def test_an_eval_fraction_of_the_student_s_own_is_refused_under_the_teacher_s_split(distilled, capsys):
    """distill.train.eval_fraction=0.5 was written to config.yaml and held out nothing: the
    student keeps its teacher's split."""
    assert _distill(distilled, "--run", "own-fraction", "--teacher", str(distilled["teacher"]),
                    "distill.train.eval_fraction=0.5") != 0
    assert _one_line_error(capsys) == (
        f"error: distill.train.eval_fraction=0.5: the student keeps the split of its teacher {distilled['teacher']} "
        "(held-out episodes [3]), which policy.train.eval_fraction chose when it trained; drop it")
    assert not (distilled["runs"] / "own-fraction" / "checkpoints").exists()


def test_with_no_episode_held_out_the_selections_are_said_to_be_judged_on_training_windows(distilled, tmp_path):
    """The comparison of the selection strategies was labelled "held-out" when it scored the
    training windows greedy had searched on (no episode held out)."""
    other = tmp_path / "other.zarr"
    make_store(other, episodes=4, length=12, seed=3).close()
    assert main(["distill", "--dataset", str(other), "--runs-dir", str(tmp_path), "--run", "all-train", *QUICK,
                 "--teacher", str(distilled["teacher"]), "distill.steps=1", "distill.train.eval_fraction=0"]) == 0
    report = (tmp_path / "all-train" / "report.md").read_text()
    assert ("teacher on probe windows of the training episodes [0, 1, 2, 3] (no held-out episodes), normalised "
            "units. No episode is held out: greedy is judged on the very windows it searched on.") in report, report
    assert "held-out probe windows" not in report


def test_with_the_attention_term_off_no_pairing_is_recorded(distilled, tmp_path):
    """distill.weights.attention=0 recorded the default pairing (or a given one, unchecked) in
    distill.json, the checkpoint's header and the report, as if a loss had used it."""
    assert _distill(distilled, "--run", "no-attention", "--teacher", str(distilled["teacher"]), "distill.steps=1",
                    "distill.weights.attention=0", "distill.attention_pairs=[[0,1]]",
                    "distill.compare_selections=false") == 0
    run = distilled["runs"] / "no-attention"
    assert json.loads((run / "distill.json").read_text())["attention_pairs"] == []
    assert json.loads(Policy.read_metadata(run / "checkpoints" / "step_000001")["attention_pairs"]) == []
    assert ("- attention pairing [student layer, teacher layer]: off (distill.weights.attention=0)"
            in (run / "report.md").read_text())


@pytest.mark.parametrize(("override", "says"), [
    ("distill.weights=null", "distill.weights cannot be null: it is a section of settings"),
    ("distill.weights.task=null", "distill.weights.task cannot be null: it is a number (its default is 1.0)"),
    ("distill.train=null", "distill.train cannot be null: it is a section of settings"),
    ("distill.teacher_fraction=null", "distill.teacher_fraction cannot be null: it is a number (its default is 1.0)"),
    ("distill.probe_windows=null", "distill.probe_windows cannot be null: it is a number (its default is 32)"),
    ("distill.sim_episodes=null", "distill.sim_episodes cannot be null: it is a number (its default is 10)"),
    ("distill.report=null", "distill.report cannot be null: it is true or false (its default is true)"),
    ("distill.compare_selections=null", "distill.compare_selections cannot be null: it is true or false"),
])
def test_a_null_distill_setting_is_refused_before_any_teacher_work(distilled, tmp_path, capsys, override, says):
    """A traceback after the teacher had loaded (weights, the counts, train), or read as
    false without a word (report, compare_selections)."""
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(tmp_path), *QUICK, override]) == 2
    assert _one_line_error(capsys).startswith(f"error: {says}")
    assert list(tmp_path.iterdir()) == []


def test_a_null_in_a_distill_section_from_a_file_is_refused():
    """Where a config comes from elsewhere than an override (a lab's distill file, a script)."""
    from shallowpi.distill.settings import DistillConfig
    from shallowpi.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^distill\.weights cannot be null \(its default is \{'task': 1\.0"):
        DistillConfig.from_dict({"weights": None})
    with pytest.raises(ConfigError, match=r"^distill\.report cannot be null \(its default is true\)$"):
        DistillConfig.from_dict({"report": None})
    with pytest.raises(ConfigError, match=r"^distill\.weights\.output cannot be null"):
        DistillConfig.from_dict({"weights": {"output": None}})
    assert DistillConfig.from_dict({"steps": None, "attention_pairs": None, "sim_episode_time_s": None}).steps is None


def test_a_run_distilled_from_a_teacher_file_resumes_without_naming_it(distilled, tmp_path, caplog):
    """`--teacher step_N/model.safetensors` is accepted; resuming its run said the file "is
    gone" (a folder was looked for)."""
    teacher = distilled["teacher"] / "model.safetensors"
    common = ["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(tmp_path), "--run", "from-file",
              *QUICK, "distill.report=false", "distill.compare_selections=false"]
    assert main([*common, "--teacher", str(teacher)]) == 0
    run = tmp_path / "from-file"
    shutil.rmtree(run / "checkpoints" / "step_000004")  # as if killed after step 2's checkpoint
    (run / "checkpoints" / "last").write_text("step_000002")
    with caplog.at_level("INFO", logger="shallowpi.commands.distill_cmd"):
        assert main([*common, "--resume"]) == 0
    assert f"teacher: {teacher}, as the run being resumed" in caplog.text
    assert (run / "checkpoints" / "step_000004").is_dir() and not (tmp_path / "arm-tiny").exists()


def test_a_sha256_of_a_step_s_own_weights_is_said_to_be_not_its_ema_s(distilled, tmp_path, capsys):
    """`--teacher step_N` of a run that kept an EMA means its EMA weights (the ones the run is
    judged by), so a --teacher-sha256 of step_N/model.safetensors was refused as "another
    checkpoint"; the line now says which file was hashed and what to pass."""
    from shallowpi.distill.distiller import checkpoint_sha256

    runs = tmp_path / "runs"
    assert main(["train", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), "--policy", "tiny",
                 "--no-progress", "policy.train.steps=1", "policy.train.save_every=1", "policy.train.ema=0.9"]) == 0
    step = runs / "arm-tiny" / "checkpoints" / "step_000001"
    assert (step / "ema" / "model.safetensors").is_file()
    capsys.readouterr()
    own = checkpoint_sha256(step)
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), "--run", "s", *QUICK,
                 "--teacher", str(step), "--teacher-sha256", own]) != 0
    err = _one_line_error(capsys)
    assert (f"teacher checkpoint {step / 'ema'} (the EMA weights of step_000001, the ones its run is judged by, were "
            f"hashed) has sha256 {checkpoint_sha256(step / 'ema')[:16]}... but distill.teacher_sha256 "
            f"(--teacher-sha256) expects {own[:16]}..., that of the step's own weights "
            f"({step / 'model.safetensors'}): pass the EMA file's sha256, or --teacher {step / 'model.safetensors'} "
            "to distil from the step's own weights") in err, err
    # ... which distils from those weights
    assert main(["distill", "--dataset", str(distilled["store"]), "--runs-dir", str(runs), "--run", "s", *QUICK,
                 "--teacher", str(step / "model.safetensors"), "--teacher-sha256", own, "distill.steps=1",
                 "distill.report=false", "distill.compare_selections=false"]) == 0


def test_a_teacher_given_as_its_file_passes_its_scenes_on(distilled, tmp_path):
    """The student records the scenes its teacher learned (a student distilled from it holds
    none of them out); a teacher given as its model.safetensors file was looked up as a
    folder, and its scenes were lost."""
    other = tmp_path / "other.zarr"
    make_store(other, episodes=4, length=12, seed=3).close()
    assert main(["distill", "--dataset", str(other), "--runs-dir", str(tmp_path), "--run", "s", *QUICK,
                 "--teacher", str(distilled["teacher"] / "model.safetensors"), "distill.steps=1",
                 "distill.report=false", "distill.compare_selections=false"]) == 0
    taught = json.loads(Policy.read_metadata(distilled["teacher"])["scenes"])
    assert set(taught) <= set(json.loads(Policy.read_metadata(tmp_path / "s" / "checkpoints" / "step_000001")["scenes"]))


@pytest.mark.bad_store
def test_a_wholly_non_finite_held_out_episode_is_left_out_of_the_students_evaluation(tmp_path, capsys):
    """skip_nonfinite with a held-out episode whose every state is NaN: the teacher trains
    (train leaves it unscored) and then the distillation refused the run, building the
    held-out set before step 0 ("nothing is left to train on")."""
    from test_train_data_checks import _store

    every_row = [("observation.state", t) for t in range(12)]
    store = _store(tmp_path / "nan.zarr", [{}] * 3 + [{"nan": every_row}])  # held out alone
    assert main(["distill", "--dataset", str(store), "--runs-dir", str(tmp_path / "runs"), *QUICK,
                 "policy.train.skip_nonfinite=true", "policy.train.eval_fraction=0.25",
                 "distill.report=false", "distill.compare_selections=false"]) == 0, capsys.readouterr().err
    student = tmp_path / "runs" / "nan-tiny-student1"
    assert json.loads((student / "split.json").read_text())["held_out"] == [3]
