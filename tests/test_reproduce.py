"""tools/bench/reproduce.py: the Shallow-π reproduction's stages are cached and resume (issue 16).
With --teacher-rollouts: test_reproduce_rollouts.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from bench_scripts import load_bench

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench" / "reproduce.py"


@pytest.fixture(scope="module")
def reproduce():
    return load_bench("reproduce")


@pytest.fixture(scope="module")
def stage_cache(reproduce):
    import stage_cache  # on sys.path once reproduce is loaded

    return stage_cache


@pytest.fixture(scope="module")
def reproduce_report(reproduce):
    import reproduce_report

    return reproduce_report


def test_a_stage_runs_once_and_an_interrupted_one_runs_again(stage_cache, tmp_path):
    stages = stage_cache.Stages(tmp_path / "stages", tmp_path / "locks", "arm")
    calls = []

    def work():
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as Ctrl-C in the middle of a stage
        return {"value": 7}

    with pytest.raises(KeyboardInterrupt):
        stages.run("train_teacher", work)
    assert not (tmp_path / "stages" / "train_teacher.json").exists()  # not done: no result
    first = stages.run("train_teacher", work)
    again = stages.run("train_teacher", work)
    assert len(calls) == 2 and first["value"] == again["value"] == 7
    # The minutes of both attempts count: the interrupted one's work was not free.
    ledger = (tmp_path / "stages" / "train_teacher.seconds").read_text().split()
    assert len(ledger) == 2 and again["seconds"] == pytest.approx(sum(map(float, ledger)))

    # What a stage reads is made ready first and not counted as its cost (a store recorded
    # again on a new machine is not the student's training time), and only when it runs.
    readied = []

    def ready():
        readied.append(1)
        time.sleep(0.5)

    first = stages.run("train_kd6", lambda: {"value": 1}, before=ready)
    # Stopped by SIGTERM (how a long run is stopped) instead of Ctrl-C: the attempt still
    # counts. (In a child process: without the handler SIGTERM ends the process outright.)
    stopped = subprocess.run([sys.executable, "-c", (
        "import os, signal, sys, time; from pathlib import Path; sys.path.insert(0, sys.argv[1]); "
        "import reproduce, stage_cache; reproduce.exit_on_sigterm(); "
        "stages = stage_cache.Stages(Path(sys.argv[2]), Path(sys.argv[3]), 'arm'); "
        "stages.run('eval_kd6', lambda: os.kill(os.getpid(), signal.SIGTERM) or time.sleep(30) or {})"),
        str(SCRIPT.parent), str(tmp_path / "stages"), str(tmp_path / "locks")], capture_output=True, text=True,
        timeout=120)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-2000:]
    assert len((tmp_path / "stages" / "eval_kd6.seconds").read_text().split()) == 1
    assert not (tmp_path / "stages" / "eval_kd6.json").exists()
    stages.run("train_kd6", lambda: {"value": 2}, before=ready)
    assert first["value"] == 1 and len(readied) == 1 and first["seconds"] < 0.5


# A training child as `platform train` behaves (train/interrupt.py): the first SIGTERM ends
# its step and saves, a second stops it at once without saving.
TRAINING_CHILD = """
import signal, sys, time
from pathlib import Path
out, signals = Path(sys.argv[1]), []
def on_term(signum, frame):
    if signals:
        sys.exit(99)
    signals.append(signum)
signal.signal(signal.SIGTERM, on_term)
(out / "started").write_text("")
while not signals:
    time.sleep(0.05)
time.sleep(1.0)
(out / "saved").write_text(str(len(signals)))
sys.exit(130)
"""


@pytest.mark.parametrize("stop", ["SIGTERM to the tool's process group", "the tool killed outright"])
def test_stopping_the_tool_lets_its_training_child_save(tmp_path, stop):
    tool = subprocess.Popen([sys.executable, "-c", (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import closed_loop, reproduce; "
        "reproduce.exit_on_sigterm(); "
        "closed_loop.run_child([sys.executable, '-c', sys.argv[2], sys.argv[3]], dict(os.environ))"),
        str(SCRIPT.parent), TRAINING_CHILD, str(tmp_path)], start_new_session=True, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "started").exists():
        assert tool.poll() is None and time.monotonic() < deadline, tool.stderr.read()[-2000:]
        time.sleep(0.05)
    # kill -- -PGID, as a long run is stopped: the child, in its own session, is not in the
    # group, and gets exactly one SIGTERM from the tool. SIGKILL: from the kernel, as the tool dies.
    os.killpg(tool.pid, signal.SIGTERM if stop.startswith("SIGTERM") else signal.SIGKILL)
    tool.wait(timeout=60)
    while not (tmp_path / "saved").exists():
        assert time.monotonic() < deadline, "the child did not save"
        time.sleep(0.05)
    assert (tmp_path / "saved").read_text() == "1"  # one signal: it saved instead of dying
    assert tool.returncode == (128 + signal.SIGTERM if stop.startswith("SIGTERM") else -signal.SIGKILL)


def test_distillation_and_task_only_are_compared_seed_by_seed(reproduce_report):
    """The table says, for students evaluated on the same seeds, how many seeds only one of
    them solved and the exact McNemar p; rows without per-seed outcomes are skipped."""
    def row(name, model, cube, push):
        return {"row": name, "model": model, "tasks": {
            "cube": {"seeds": {str(s): s in cube for s in range(10)}},
            "push": {"seeds": {str(s): s in push for s in range(10)}}}}

    rows = [row("shallow6", "all losses", cube={0, 1, 2, 3}, push={0, 1, 2, 3, 4, 5, 6, 7}),
            row("task6", "task only", cube={0, 1, 2, 9}, push={0})]
    (line,) = reproduce_report.paired_lines(rows, ["cube", "push"])[1:]
    assert "cube 1 against 1 (p = 1.000)" in line and "push 7 against 0 (p = 0.016)" in line
    assert "all tasks 8 against 1 (p = 0.039)" in line
    del rows[1]["tasks"]["push"]["seeds"]  # evaluated before outcomes were kept per seed
    assert reproduce_report.paired_lines(rows, ["cube", "push"]) == []


def test_the_kept_table_is_made_again_from_the_kept_results_alone(reproduce_report, tmp_path):
    """docs/reproduce/table.md is what its rows.json files give: a reader regenerates the
    table and the plots without training or evaluating anything."""
    kept = ROOT / "docs" / "reproduce"
    text, paths = reproduce_report.report(kept, to=tmp_path)
    assert sorted(p.name for p in paths) == ["reproduce.json", "reproduce.png", "table.md"]
    assert all(p.parent == tmp_path for p in paths)  # the kept folder itself is not written
    assert (tmp_path / "table.md").read_text() == text == (kept / "table.md").read_text()
    assert (tmp_path / "reproduce.png").read_bytes()[:4] == b"\x89PNG"
    made = json.loads((tmp_path / "reproduce.json").read_text())
    assert made == json.loads((kept / "reproduce.json").read_text())  # its last_run kept too
    run = subprocess.run([sys.executable, str(SCRIPT.parent / "reproduce_report.py"), str(tmp_path / "none")],
                         capture_output=True, text=True)
    assert run.returncode == 1 and run.stderr.strip().startswith("error:") and "rows.json" in run.stderr


def test_a_rerun_with_another_recipe_into_the_same_folder_is_refused(reproduce, tmp_path):
    import argparse

    def args(**changes):
        base = dict(policy="teacher", episodes=80, size="64x64", sim_noise=0.005, task_noise={}, teacher_steps=None,
                    student_steps=2000, set=[], teachers={}, teacher_rollouts=0)
        return argparse.Namespace(**(base | changes))

    def check(folder, **changes):
        reproduce.check_recipe(folder, reproduce.recipe_of("arm", args(**changes)))

    (tmp_path / "arm").mkdir()
    check(tmp_path / "arm")
    check(tmp_path / "arm")  # the same recipe: fine
    with pytest.raises(SystemExit, match="made with student_steps=2000, this run asks for 500; pass another --out and --results"):
        check(tmp_path / "arm", student_steps=500)
    with pytest.raises(SystemExit, match="made with task_noise=None"):
        check(tmp_path / "arm", task_noise={"cube_in_bowl": 0.01})
    # Another robot's task noise is not this robot's recipe: the arm's folder still matches.
    check(tmp_path / "arm", task_noise={"handover": 0.005})
    # Students of the teacher's rollouts are another recipe; a folder made before the flag
    # existed (its recipe.json without the key) is one of none.
    with pytest.raises(SystemExit, match="made with teacher_rollouts=None, this run asks for 80"):
        check(tmp_path / "arm", teacher_rollouts=80)
    recipe = json.loads((tmp_path / "arm" / "recipe.json").read_text())
    (tmp_path / "arm" / "recipe.json").write_text(json.dumps({k: v for k, v in recipe.items() if k != "teacher_rollouts"}))
    check(tmp_path / "arm")
    given = tmp_path / "t"
    given.mkdir()
    (given / "model.safetensors").write_bytes(b"weights")
    with pytest.raises(SystemExit, match="made with teacher=None"):
        check(tmp_path / "arm", teachers={"arm": given})
    # A given teacher is recorded by its content: the same weights checked out elsewhere match.
    (tmp_path / "arm2").mkdir()
    check(tmp_path / "arm2", teachers={"arm": given})
    moved = tmp_path / "elsewhere"
    given.rename(moved)
    check(tmp_path / "arm2", teachers={"arm": moved})
    (moved / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match="made with teacher="):
        check(tmp_path / "arm2", teachers={"arm": moved})


def test_the_presets_are_part_of_the_recipe_by_content_where_a_folder_records_them(reproduce, tmp_path,
                                                                                   monkeypatch):
    """recipe.json named the policy preset, not its content: a preset edited since trained
    new rows into the kept table. A folder kept before the key existed is not refused."""
    import argparse

    args = argparse.Namespace(policy="teacher", episodes=80, size="64x64", sim_noise=0.005, task_noise={},
                              teacher_steps=None, student_steps=2000, set=[], teachers={}, teacher_rollouts=0)
    folder = tmp_path / "arm"
    folder.mkdir()
    reproduce.check_recipe(folder, reproduce.recipe_of("arm", args), reproduce.ADDED_RECIPE_KEYS)
    kept = json.loads((folder / "recipe.json").read_text())
    assert kept["presets_sha256"] == reproduce.presets_fingerprint("teacher") != reproduce.presets_fingerprint("small")
    edited = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", edited / "configs")
    with (edited / "configs" / "policy" / "teacher.yaml").open("a") as preset:
        preset.write("# edited\n")
    monkeypatch.setattr(reproduce, "ROOT", edited)
    with pytest.raises(SystemExit, match="holds stages made with presets_sha256="):
        reproduce.check_recipe(folder, reproduce.recipe_of("arm", args), reproduce.ADDED_RECIPE_KEYS)
    (folder / "recipe.json").write_text(json.dumps({k: v for k, v in kept.items() if k != "presets_sha256"}))
    reproduce.check_recipe(folder, reproduce.recipe_of("arm", args), reproduce.ADDED_RECIPE_KEYS)


def test_a_store_fingerprint_covers_the_episodes_labels_where_a_kept_one_has_them(stage_cache, tmp_path):
    """A re-recording whose success detectors changed has the same arrays; successful_only
    then trains on another set. A fingerprint kept before the labels were covered is
    compared on its arrays alone."""
    from shallowpi.data.store import EpisodeStore
    from store_fixtures import make_store

    make_store(tmp_path / "a.zarr", episodes=2).close()
    before = stage_cache.store_fingerprint(tmp_path / "a.zarr")
    with EpisodeStore.open(tmp_path / "a.zarr", mode="a") as store:
        store.set_success(1, not store.episode(1).success)
    after = stage_cache.store_fingerprint(tmp_path / "a.zarr")
    assert (after["rows"], after["frames"]) == (before["rows"], before["frames"])
    assert stage_cache.fingerprint_differs(after, before) == ["episodes"]
    assert stage_cache.fingerprint_differs(after, {k: before[k] for k in ("rows", "frames")}) == []


def test_a_block_names_the_judges_support_files_and_is_compared_on_them_where_it_does(reproduce, tmp_path,
                                                                                      monkeypatch):
    """The robot configs (the twins' joint speeds), the robot contract, the codec and the
    evaluation tool also decide an episode; blocks judged since name them, and one judged
    with others is not this checkout's. Blocks kept before the key are not made stale."""
    judged = {"judge_sha256": reproduce.judge_fingerprint()}
    assert reproduce.judged_by_this_code(judged)
    judged_here = judged | {"judge_support_sha256": reproduce.judge_support_fingerprint()}
    assert reproduce.judged_by_this_code(judged_here)
    assert not reproduce.judged_by_this_code(judged | {"judge_support_sha256": "0" * 64})
    assert not reproduce.judged_by_this_code({"judge_sha256": "0" * 64})
    checkout = tmp_path / "checkout"
    for pattern in reproduce.JUDGE_SUPPORT:
        for path in ROOT.glob(pattern):
            (checkout / path.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, checkout / path.relative_to(ROOT))
    monkeypatch.setattr(reproduce, "ROOT", checkout)
    reproduce.judge_support_fingerprint.cache_clear()
    try:
        assert reproduce.judge_support_fingerprint() == judged_here["judge_support_sha256"]  # names and bytes
        with (checkout / "configs" / "robot" / "arm.yaml").open("a") as robot:
            robot.write("# edited\n")
        reproduce.judge_support_fingerprint.cache_clear()
        assert not reproduce.judged_by_this_code(judged_here)
    finally:
        reproduce.judge_support_fingerprint.cache_clear()


def test_each_robot_has_the_papers_rows(reproduce):
    arm = {name: reproduce.ROWS[name] for name in reproduce.ROBOT_ROWS["arm"]}
    assert {r.layers for r in arm.values() if r.name.startswith("shallow")} == {9, 6, 4, 3}
    assert (arm["task6"].output, arm["task6"].attention) == (0, 0)  # task loss only
    assert (arm["kd6"].output, arm["kd6"].attention) == (1, 0)  # task + output distillation
    assert not arm["cut6"].trained
    assert reproduce.ROBOT_ROWS["humanoid"] == ["teacher", "shallow6", "task6", "shallow6f"]
    # Failed demonstrations to give the student only where the recipe leaves them out of training,
    # as `platform distill` composes the recipe.
    leave_out = ["policy.train.batch_size=16", "policy.train.successful_only=true"]
    assert reproduce.leaves_out_failed("teacher", leave_out)
    assert not reproduce.leaves_out_failed("teacher", [])
    assert not reproduce.leaves_out_failed("teacher", ["policy.train.successful_only=false"])
    assert reproduce.robot_rows("humanoid", True) == ["teacher", "shallow6", "task6", "shallow6f"]
    assert reproduce.robot_rows("humanoid", False) == ["teacher", "shallow6", "task6"]
    assert "shallow6f" not in reproduce.robot_rows("arm", False)
    # Each row's student is made with its own weights and its own use of the failed demonstrations.
    assert reproduce.ROWS["task6"].distill_settings() == [
        "distill.weights.task=1.0", "distill.weights.output=0", "distill.weights.attention=0",
        "distill.failed_episodes=skip"]
    assert reproduce.ROWS["shallow6f"].distill_settings()[-1] == "distill.failed_episodes=teacher"
    assert reproduce.ROWS["shallow6"].distill_settings()[-1] == "distill.failed_episodes=skip"


@pytest.mark.slow
def test_the_whole_loop_on_a_tiny_budget_then_a_rerun_redoes_only_what_is_missing(reproduce, stage_cache, tmp_path):
    work, kept = tmp_path / "work", tmp_path / "kept"
    cmd = [sys.executable, str(SCRIPT), "--robots", "arm", "--rows", "teacher", "cut6", "--episodes", "1",
           "--teacher-steps", "2", "--student-steps", "2", "--eval-episodes", "2", "--block", "1",
           "--eval-time-s", "1", "--eval-workers", "1", "--latency-repeats", "1", "--out", str(work),
           "--results", str(kept), "--task-noise", "push_block_left=0.02",
           "--set", "policy.train.batch_size=2", "policy.train.warmup_steps=0", "policy.train.workers=0"]
    env = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}

    def run(*changes: str, rows: tuple[str, ...] = ("teacher", "cut6"), given: str | None = None,
            at: tuple[Path, Path] = (work, kept), redo: tuple[str, ...] = (), extra: tuple[str, ...] = ()):
        """The command with `changes` (flag, value pairs) replacing its own, on `rows`, and `extra` flags."""
        line = [*cmd]
        for flag, value in [*zip(changes[::2], changes[1::2]), ("--out", str(at[0])), ("--results", str(at[1]))]:
            line[line.index(flag) + 1] = value
        line[line.index("--rows") + 1: line.index("--episodes")] = rows
        return subprocess.run([*line, *(["--teacher", given] if given else []), *(["--redo", *redo] if redo else []),
                               *extra], env=env, capture_output=True, text=True, timeout=900)

    done = run()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # Row by row: each trained, then evaluated, before the next; the chunks timed last.
    assert stages_run(done) == ["record", "train_teacher", "eval_teacher", "train_cut6", "eval_cut6",
                                "latency_teacher_6"]
    # Each task recorded at its own DART noise: cube_in_bowl (first) at --sim-noise's default.
    recordings = sorted((work / "arm" / "arm.zarr" / ".shallowpi").glob("record-*.yaml"))
    assert [OmegaConf.load(r).record.sim_noise for r in recordings] == [0.005, 0.02]
    result = json.loads((kept / "reproduce.json").read_text())["results"][0]
    rows = {r["row"]: r for r in result["rows"]}
    assert rows["teacher"]["layers"] == 18 and rows["cut6"]["layers"] == 6
    for row in rows.values():
        assert set(row["tasks"]) == {"cube_in_bowl", "push_block_left"}
        assert all(t["episodes"] == 2 for t in row["tasks"].values())
    assert rows["cut6"]["params"] < rows["teacher"]["params"]
    # The teacher the students are cut from is the one judged: the EMA weights it kept.
    stages = kept / "arm" / "stages"
    teacher = json.loads((stages / "train_teacher.json").read_text())
    assert Path(teacher["checkpoint"]).name == "ema" and Path(teacher["checkpoint"]).parent.name == "step_000002"
    assert json.loads((stages / "train_cut6.json").read_text())["teacher_sha256"] == teacher["weights_sha256"]
    assert rows["cut6"]["flop_ideal_speedup"] > 1.5
    assert "| 6 layers, cut, not trained |" in (kept / "table.md").read_text()
    assert (kept / "reproduce.png").read_bytes()[:4] == b"\x89PNG"
    # What is big and this machine's stays in --out; --results holds only JSON, the table and
    # the plot, and names no path of this machine's work folder but the checkpoints'.
    assert {p.suffix for p in kept.rglob("*") if p.is_file()} <= {".json", ".seconds", ".md", ".png"}
    assert not list(kept.rglob("part*")) and not list(work.rglob("seeds_*.json"))
    assert str(work) not in (kept / "arm" / "eval" / "cut6" / "seeds_1000-1000.json").read_text()

    # cut6 made again with other weights, its second block of seeds left from the old ones:
    # the rerun evaluates that block again and keeps the first, which judged these weights.
    blocks = kept / "arm" / "eval" / "cut6"
    for stale in (stages / "eval_cut6.json", blocks / "seeds_1001-1001.json"):
        stale.write_text(json.dumps(json.loads(stale.read_text()) | {"weights_sha256": "0" * 64}))
    unchanged = {p: p.stat().st_mtime_ns for p in [*stages.glob("*.json"), blocks / "seeds_1000-1000.json"]
                 if p.name != "eval_cut6.json"}
    again = run()
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert stages_run(again) == ["eval_cut6"]
    assert all(p.stat().st_mtime_ns == t for p, t in unchanged.items())
    assert "seeds_1001-1001.json judged other weights, by other code, or other episodes or renders; evaluating it again" \
        in again.stdout
    assert json.loads((blocks / "seeds_1001-1001.json").read_text())["weights_sha256"] == \
        json.loads((stages / "train_cut6.json").read_text())["weights_sha256"]
    # More seeds: only the new block of each row is evaluated, nothing trains.
    more = run("--eval-episodes", "3")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert stages_run(more) == ["eval_teacher", "eval_cut6"]
    assert (blocks / "seeds_1002-1002.json").is_file()
    assert all(p.stat().st_mtime_ns == t for p, t in unchanged.items() if p.parent == blocks)
    rows = {r["row"]: r for r in json.loads((kept / "reproduce.json").read_text())["results"][0]["rows"]}
    assert all(t["episodes"] == 3 for r in rows.values() for t in r["tasks"].values())
    # --retime: every depth's chunk timed again (after a change to the inference code), nothing else.
    kept_now = {p: p.stat().st_mtime_ns for p in stages.glob("*.json") if not p.name.startswith("latency_")}
    retimed = run("--eval-episodes", "3", extra=("--retime",))
    assert retimed.returncode == 0, retimed.stdout[-3000:] + retimed.stderr[-3000:]
    assert stages_run(retimed) == ["latency_teacher_6"]
    assert all(p.stat().st_mtime_ns == t for p, t in kept_now.items())
    # A student of another teacher is never put beside this one.
    train_cut6 = (stages / "train_cut6.json").read_text()
    (stages / "train_cut6.json").write_text(json.dumps(json.loads(train_cut6) | {"teacher_sha256": "1" * 64}))
    other_teacher = run("--eval-episodes", "3")
    assert other_teacher.returncode == 1 and "train_cut6 was distilled from another teacher" in other_teacher.stderr
    unasked = run("--eval-episodes", "3", rows=("teacher",))  # nor taken into the table when not asked for
    assert unasked.returncode == 0, unasked.stdout[-3000:] + unasked.stderr[-3000:]
    assert [r["row"] for r in json.loads((kept / "reproduce.json").read_text())["results"][0]["rows"]] == ["teacher"]
    (stages / "train_cut6.json").write_text(train_cut6)
    # Another recipe into the same work folder (a store, runs) is refused, whatever --results says.
    mixed = run("--student-steps", "3", at=(work, tmp_path / "fresh"))
    assert mixed.returncode == 1 and f"{work / 'arm'} holds stages made with student_steps=2" in mixed.stderr

    # A teacher trained elsewhere (--teacher arm=CKPT): nothing trains it; students are cut from it.
    # Like robots/arm/teacher, it names no store: its evaluation must name the robot itself.
    from shallowpi.policy.policy import Policy

    trained_here = sorted((work / "arm" / "runs" / "teacher" / "checkpoints").glob("step_*"))[-1]
    given = tmp_path / "shipped"
    meta = Policy.read_metadata(trained_here)
    Policy.load(trained_here).save(given, {k: v for k, v in meta.items() if k in ("fps", "joint_names", "step")})
    assert "dataset" not in Policy.read_metadata(given)
    work2, kept2 = tmp_path / "work2", tmp_path / "kept2"

    def elsewhere(*changes: str, rows: tuple[str, ...] = ("teacher", "cut6"), redo: tuple[str, ...] = ()):
        """`run` with the given teacher into work2 and kept2, each row's seeds in one block: one
        evaluation process a row (splitting into blocks and redoing a stale one: the runs above)."""
        return run("--block", "2", *changes, rows=rows, given=f"arm={given}", at=(work2, kept2), redo=redo)

    # The demonstrations this machine recorded, in the new work folder: the record stage finds
    # every episode there and records none (recording again is the new machine's, below).
    shutil.copytree(work / "arm" / "arm.zarr", work2 / "arm" / "arm.zarr")
    done = elsewhere()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert stages_run(done)[:3] == ["record", "given_teacher", "eval_teacher"]
    # The fingerprint the new machine's store is checked against is the first store's.
    assert json.loads((kept2 / "arm" / "stages" / "record.json").read_text())["fingerprint"] == \
        json.loads((stages / "record.json").read_text())["fingerprint"]
    given_stage = json.loads((kept2 / "arm" / "stages" / "given_teacher.json").read_text())
    assert stage_cache.local(given_stage["checkpoint"]) == given.resolve()
    # Judged on the twin as its students are, through the store: its size and image codec
    # (with no store named, `eval --sim` rendered at record.sim_size, 224x224, uncoded).
    blocks2 = sorted((kept2 / "arm" / "eval" / "teacher").glob("seeds_*.json"))
    assert [b.name for b in blocks2] == ["seeds_1000-1001.json"]
    for block in blocks2:
        assert [r["render_size"] for r in json.loads(block.read_text())["tasks"]] == [[64, 64]] * 2

    # A new machine: the results came along (kept in git), the work folder did not. Nothing
    # is redone; a row added trains alone, on the store recorded again and found the same,
    # and the table holds every row kept, whichever run made it.
    shutil.rmtree(work2)
    same = elsewhere()
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert stages_run(same) == [] and not (work2 / "arm" / "arm.zarr").exists()  # nothing ran, nothing recorded
    added = elsewhere(rows=("kd6",))
    assert added.returncode == 0, added.stdout[-3000:] + added.stderr[-3000:]
    assert stages_run(added) == ["train_kd6", "eval_kd6"]  # the chunk timing of depth 6 was kept
    assert (work2 / "arm" / "arm.zarr").is_dir()
    table = json.loads((kept2 / "reproduce.json").read_text())["results"][0]["rows"]
    assert [r["row"] for r in table] == ["teacher", "kd6", "cut6"]
    # --redo makes a finished row again from nothing: its run moved aside (resuming it would
    # give back the old weights), its minutes the new attempt's alone, its seeds evaluated again.
    stages2 = kept2 / "arm" / "stages"
    (stages2 / "train_kd6.seconds").write_text("5000.0\n")  # as if the first attempt had taken long
    # Another robot's rows, made by another run into the same results: the table keeps them.
    other_robot = json.loads((kept2 / "arm" / "rows.json").read_text()) | {"robot": "humanoid"}
    (kept2 / "humanoid").mkdir()
    (kept2 / "humanoid" / "rows.json").write_text(json.dumps(other_robot))
    again = elsewhere(rows=("cut6",), redo=("kd6",))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert stages_run(again) == ["train_kd6", "eval_kd6"]
    assert len(list((work2 / "arm" / "runs").glob("kd6.replaced-*"))) == 1
    assert json.loads((stages2 / "train_kd6.json").read_text())["seconds"] < 5000
    assert len((stages2 / "train_kd6.seconds").read_text().split()) == 1
    assert [r["robot"] for r in json.loads((kept2 / "reproduce.json").read_text())["results"]] == ["arm", "humanoid"]
    assert "### humanoid" in (kept2 / "table.md").read_text()
    # Seeds added to a row whose weights stayed on the first machine: one line, nothing lost
    # (the row alone: the teacher's weights are here, its new seeds would be evaluated first).
    lost = elsewhere("--eval-episodes", "4", rows=("cut6",))
    assert lost.returncode == 1 and "eval_cut6 needs seeds, but train_cut6's checkpoint" in lost.stderr
    assert stages_run(lost) == [] and [b.name for b in (kept2 / "arm" / "eval" / "cut6").glob("seeds_*.json")] == [
        "seeds_1000-1001.json"]
    assert "rerun with --redo cut6 to make it again here" in lost.stderr
    # A machine whose twin records another store must not add rows trained on it.
    record_stage = kept2 / "arm" / "stages" / "record.json"
    fingerprint = json.loads(record_stage.read_text())["fingerprint"]
    record_stage.write_text(json.dumps({"fingerprint": fingerprint | {"frames": "f" * 64}, "seconds": 1.0}))
    other = elsewhere(rows=("teacher", "task6"))
    assert other.returncode == 1 and "differs from the store the kept stages were made from in its frames" in other.stderr
    assert not (kept2 / "arm" / "stages" / "train_task6.json").exists()


def test_the_rollouts_join_the_demonstrations_less_the_teachers_failures(tmp_path):
    """teacher_rollouts.with_rollouts on stores of known outcomes: every demonstration is
    kept, a failed one too (the recipe decides what trains); of the teacher's episodes only
    the successful; every task's part must be there."""
    from shallowpi.data.store import EpisodeStore
    from store_fixtures import make_store, stamp_episode

    sys.path.insert(0, str(SCRIPT.parent))
    from teacher_rollouts import first_seed, with_rollouts

    make_store(tmp_path / "demos.zarr", episodes=3, scene_seeds=[0, 1, 2]).close()  # the second one failed
    parts = tmp_path / "parts"
    for k, task in enumerate(["cube_in_bowl", "push_block_left"]):
        part = parts / f"{task}.zarr"
        make_store(part, episodes=2, scene_seeds=[first_seed(k), first_seed(k) + 1]).close()  # the second failed
        for index in range(2):
            info = json.loads((part / "episodes" / f"{index}.json").read_text())
            stamp_episode(part, index, extra=info["extra"] | {"policy_sha256": "a" * 64})
    log = tmp_path / "log.txt"
    counts = with_rollouts("arm", tmp_path / "demos.zarr", parts, tmp_path / "out.zarr", log)
    assert counts == {"cube_in_bowl": {"kept": 1, "failed": 1}, "push_block_left": {"kept": 1, "failed": 1}}
    with EpisodeStore.open(tmp_path / "out.zarr") as out:
        assert [(e.extra["seed"], e.success) for e in out.episodes] == [
            (0, True), (1, False), (2, True), (first_seed(0), True), (first_seed(1), True)]
    assert not (tmp_path / "out.merging.zarr").exists()
    for part in parts.glob("*.zarr"):  # the parts stay whole: a rerun records none of them again
        with EpisodeStore.open(part) as store:
            assert len(store) == 2
    shutil.rmtree(parts / "push_block_left.zarr")
    with pytest.raises(SystemExit, match=r"no rollouts in .* for push_block_left\.zarr: record them first"):
        with_rollouts("arm", tmp_path / "demos.zarr", parts, tmp_path / "again.zarr", log)


def stages_run(done: subprocess.CompletedProcess) -> list[str]:
    """The stages a run of reproduce.py ran, in order, from its "[time] robot: stage ..." lines."""
    return [line.split(": ", 1)[1].removesuffix(" ...") for line in done.stdout.splitlines()
            if line.startswith("[") and line.endswith(" ...")]


def test_a_kept_result_names_its_checkpoint_portably_and_checks_it(stage_cache, tmp_path):
    """A result kept in git names the shipped teacher relative to the checkout (found on any
    machine) and anything else absolutely; a checkpoint that is gone, or holds other
    weights than the stage made, stops the run in one line saying how to make it again."""
    shipped = ROOT / "robots" / "arm" / "teacher"
    assert stage_cache.portable(shipped) == "robots/arm/teacher" and stage_cache.local("robots/arm/teacher") == shipped
    assert stage_cache.local(stage_cache.portable(tmp_path)) == tmp_path.resolve()
    ckpt = tmp_path / "student"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"weights")
    made = {"checkpoint": stage_cache.portable(ckpt), "weights_sha256": stage_cache.weights_sha256(ckpt)}
    assert stage_cache.weights_of("train_kd6", made, "eval_kd6 needs seeds", "R") == ckpt.resolve()
    (ckpt / "model.safetensors").write_bytes(b"other weights")
    with pytest.raises(SystemExit, match=f"eval_kd6 needs seeds, but {ckpt.resolve()} no longer holds the weights "
                                         "train_kd6 made: rerun with R to make it again"):
        stage_cache.weights_of("train_kd6", made, "eval_kd6 needs seeds", "R")
    shutil.rmtree(ckpt)
    with pytest.raises(SystemExit, match=r"checkpoint .* is not on this machine"):
        stage_cache.weights_of("train_kd6", made, "eval_kd6 needs seeds", "R")


def refused(reproduce, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            *argv: str) -> tuple[int, str]:
    """reproduce.py's main() on the command line `argv`, in this process (a subprocess paid a
    torch import for each): (exit status, stderr) as the script's own process gives them, a
    SystemExit message printed and exit status 1. The refusal must come before main() sets
    anything up for the whole process: its SIGTERM handler is checked not to have been
    installed (and put back if it was)."""
    monkeypatch.setattr(sys, "argv", ["reproduce.py", *argv])
    handler = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as stopped:
            reproduce.main()
        assert signal.getsignal(signal.SIGTERM) is handler, "refused after exit_on_sigterm(): keep it a subprocess"
    finally:
        signal.signal(signal.SIGTERM, handler)
    code, err = stopped.value.code, capsys.readouterr().err
    return (1, err + f"{code}\n") if isinstance(code, str) else (code, err)


def test_a_given_teacher_must_name_a_robot_and_a_checkpoint(reproduce, monkeypatch, capsys, tmp_path):
    code, err = refused(reproduce, monkeypatch, capsys, "--teacher", f"arm={tmp_path}", "--out", str(tmp_path))
    assert code == 2 and "--teacher arm=" in err and "holds model.safetensors" in err


@pytest.mark.parametrize("flag", ["--block", "--eval-episodes", "--episodes", "--latency-repeats"])
def test_counts_below_one_are_refused_before_anything_runs(reproduce, monkeypatch, capsys, tmp_path, flag):
    """--block -50 or --eval-episodes 0 wrote an evaluation of no task, which every later
    run took as complete; --block 0 failed in range() after the row had trained."""
    code, err = refused(reproduce, monkeypatch, capsys, flag, "0", "--out", str(tmp_path / "out"))
    assert code == 2 and f"argument {flag}: must be at least 1, got 0" in err, err
    assert not (tmp_path / "out").exists()


def test_a_task_noise_must_name_one_of_the_robots_tasks(reproduce, monkeypatch, capsys, tmp_path):
    code, err = refused(reproduce, monkeypatch, capsys, "--robots", "arm", "--task-noise", "handover=0.01",
                        "--out", str(tmp_path))
    assert code == 1 and "--task-noise handover: not a task of arm (tasks: cube_in_bowl" in err
    for item in ("cube_in_bowl", "cube_in_bowl=nan", "cube_in_bowl=-0.01"):
        code, err = refused(reproduce, monkeypatch, capsys, "--task-noise", item, "--out", str(tmp_path))
        assert code == 1 and f"--task-noise {item}: expected TASK=NOISE" in err


def test_the_distillation_by_data_curve_is_made_from_the_kept_results_alone(tmp_path):
    """tools/bench/distill_data_curve.py reads the kept results of the runs that differ only in
    the students' demonstrations (docs/reproduce_few20, docs/reproduce) and writes BENCHMARKS.md
    "Distillation" (b16)'s table and plot, at 6 and 4 layers: the counts it prints are the kept ones."""
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "distill_data_curve.py"),
                          str(ROOT / "docs" / "reproduce_few20"), str(ROOT / "docs" / "reproduce"),
                          "--to", str(tmp_path / "curve.png")],
                         capture_output=True, text=True, timeout=300, env={**os.environ, "MPLBACKEND": "Agg"})
    assert run.returncode == 0, run.stderr[-2000:]
    kept = json.loads((ROOT / "docs" / "reproduce_few20" / "reproduce.json").read_text())
    row = next(r for r in kept["results"][0]["rows"] if r["row"] == "shallow6")
    cube = row["tasks"]["cube_in_bowl"]
    assert f"| 20 | 6 layers, task + output + attention | {cube['successes']}/{cube['episodes']} (" in run.stdout
    deep4 = next(r for r in kept["results"][0]["rows"] if r["row"] == "shallow4")["tasks"]["cube_in_bowl"]
    assert f"| 20 | 4 layers, task + output + attention | {deep4['successes']}/{deep4['episodes']} (" in run.stdout
    assert "4 layers, seeds only distillation against only the task loss solved: " in run.stdout
    assert (tmp_path / "curve.png").stat().st_size > 10_000
    points = json.loads((tmp_path / "curve.json").read_text())
    assert {p["episodes"] for p in points} == {20, 120}


def test_training_seeds_pools_the_pairs_of_runs_that_differ_only_in_the_students_seed(tmp_path):
    """tools/bench/training_seeds.py: each run's seed-by-seed count, the counts summed over runs
    (with their exact p), successes pooled over runs, and a row against itself across seeds. The
    second run here is the kept 40-a-task run with ten of its distilled student's cube seeds
    turned to failures and recorded as training seed 1; folders that differ in more than the
    seed, or rows kept without per-seed outcomes, are refused in one line."""
    from shallowpi.evaluate.interval import paired_p_value

    kept_folder = ROOT / "docs" / "reproduce_few40"
    kept = json.loads((kept_folder / "reproduce.json").read_text())
    recipe = json.loads((kept_folder / "arm" / "recipe.json").read_text())

    def variant(name: str, recipe_change: dict, edit) -> Path:
        data = json.loads(json.dumps(kept))
        edit({r["row"]: r for r in data["results"][0]["rows"]})
        (tmp_path / name / "arm").mkdir(parents=True)
        (tmp_path / name / "reproduce.json").write_text(json.dumps(data))
        (tmp_path / name / "arm" / "recipe.json").write_text(json.dumps({**recipe, **recipe_change}))
        return tmp_path / name

    flipped: list[str] = []

    def fail_ten(rows):
        cube = rows["shallow6"]["tasks"]["cube_in_bowl"]
        flipped.extend([s for s, ok in cube["seeds"].items() if ok][:10])
        for s in flipped:
            cube["seeds"][s] = False
        cube["successes"] -= 10

    seed1 = variant("seed1", {"set": ["+distill.train.seed=1"]}, fail_ten)
    script = str(ROOT / "tools" / "bench" / "training_seeds.py")
    run = subprocess.run([sys.executable, script, str(kept_folder), str(seed1), "--out", str(tmp_path / "seeds.json")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads((tmp_path / "seeds.json").read_text())
    rows = {r["row"]: r for r in kept["results"][0]["rows"]}
    six, task = result["6"], rows["task6"]["tasks"]["cube_in_bowl"]
    first, second = six["runs"]
    assert first["training_seed"] == 0 and second["training_seed"] == 1
    only_task_lost = sum(not task["seeds"][s] for s in flipped)  # those were seeds only distillation solved
    assert second["only_distilled"] == first["only_distilled"] - only_task_lost
    assert second["only_task"] == first["only_task"] + (10 - only_task_lost)
    total = {key: first[key] + second[key] for key in ("only_distilled", "only_task")}
    assert six["pooled_only"] == total
    assert six["pooled_p"] == paired_p_value(total["only_distilled"], total["only_task"])
    cube = rows["shallow6"]["tasks"]["cube_in_bowl"]["successes"]
    assert six["pooled"]["shallow6"]["cube_in_bowl"] == {"successes": 2 * cube - 10, "n": 400}
    spread = {entry["row"]: (entry["only_first"], entry["only_second"]) for entry in six["spread"]}
    assert spread == {"shallow6": (10, 0), "task6": (0, 0)}
    assert "| pooled | " in run.stdout and "4 layers" in run.stdout

    def refused(*folders: Path) -> str:
        out = subprocess.run([sys.executable, script, *map(str, folders)], capture_output=True, text=True, timeout=120)
        assert out.returncode != 0 and out.stderr.startswith("training_seeds: ") and out.stderr.count("\n") == 1
        return out.stderr

    assert "the same training seed" in refused(kept_folder, kept_folder)
    kept_pair = subprocess.run([sys.executable, script, str(ROOT / "docs" / "reproduce"),
                                str(ROOT / "docs" / "reproduce_seed1")], capture_output=True, text=True, timeout=120)
    assert kept_pair.returncode == 0 and kept_pair.stdout.count("| pooled | ") == 2  # BENCHMARKS.md (b17), 6 and 4 layers
    longer = variant("longer", {"set": ["+distill.train.seed=2"], "student_steps": 9000}, lambda rows: None)
    assert "differ in more than the training seed" in refused(kept_folder, longer)
    bare = variant("bare", {"set": ["distill.train.seed=3"]},
                   lambda rows: rows["task6"]["tasks"]["push_block_left"].pop("seeds"))
    assert "task6 has no per-seed outcomes for push_block_left" in refused(kept_folder, bare)


def test_paired_rows_compares_kept_rows_of_different_runs_seed_by_seed(tmp_path):
    """tools/bench/paired_rows.py on the kept 40-a-task pairs gives training_seeds.py's
    counts (BENCHMARKS.md (b17): 26/18 and 27/24, 53/42 summed) and refuses rows judged by
    other detectors or on other seeds, and an odd number of rows."""
    script = ROOT / "tools" / "bench" / "paired_rows.py"
    pairs = ["docs/reproduce_few40:shallow6", "docs/reproduce_few40:task6",
             "docs/reproduce_few40_seed1:shallow6", "docs/reproduce_few40_seed1:task6"]

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(script), *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)

    done = run(*pairs, "--teacher", "docs/reproduce:teacher")
    assert done.returncode == 0, done.stderr
    assert "**26 / 18 (p = 0.291)**" in done.stdout and "**27 / 24 (p = 0.780)**" in done.stdout
    assert "summed over the 2 pairs: 53 / 42 (p = 0.305)" in done.stdout
    assert "- docs/reproduce_few40:shallow6: under its interval on cube_in_bowl; seeds only it / only the " \
        "teacher solved" in done.stdout
    assert "- docs/reproduce:teacher" not in done.stdout
    assert run(*pairs[:3]).returncode == 2
    shared = run(pairs[0], pairs[1], pairs[0], pairs[3])  # one row in two pairs: their counts are dependent
    assert shared.returncode == 0 and "not summed over the 2 pairs" in shared.stdout and "summed over" not in \
        shared.stdout.replace("not summed over", "")
    # The same row kept by a run whose detectors changed since, then on fewer seeds.
    other = tmp_path / "other"
    shutil.copytree(ROOT / "docs" / "reproduce_few40", other)
    stage = other / "arm" / "stages" / "eval_task6.json"
    kept = json.loads(stage.read_text())
    stage.write_text(json.dumps(kept | {"judge_sha256": "0" * 64}))
    judged = run(pairs[0], f"{other}:task6")
    assert judged.returncode == 1 and "were judged by different code" in judged.stderr
    later = run(*pairs[:2], pairs[0], f"{other}:task6")  # a later pair is checked against the first too
    assert later.returncode == 1 and "were judged by different code" in later.stderr
    fewer = {t: r | {"seeds": dict(list(r["seeds"].items())[:100])} for t, r in kept["tasks"].items()}
    stage.write_text(json.dumps(kept | {"tasks": fewer}))
    seeds = run(pairs[0], f"{other}:task6")
    assert seeds.returncode == 1 and "were not judged on the same tasks and seeds" in seeds.stderr
