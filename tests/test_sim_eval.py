"""`platform eval --sim`: the closed loop is right (the scripted expert, fed through it a
chunk at a time, succeeds; a policy that holds still fails), and a checkpoint trained on
a recorded sim store is evaluated end to end through the CLI, with one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("MUJOCO_GL", "egl")
pytest.importorskip("mujoco")

from conftest import platform_cmd, subprocess_env
from shallowpi import config
from shallowpi.cli import main
from shallowpi.evaluate.sim_eval import SimEvalConfig, evaluate_in_sim, run_policy_episode
from shallowpi.policy.action_selection import ActionSelectionConfig
from shallowpi.robots.sim.direct import DirectSimRobot
from shallowpi.robots.sim.experts import make_expert
from shallowpi.robots.sim.tasks import get_task
from shallowpi.robots.sim.twin import SimError, TwinSpec

SEEDS_THE_EXPERT_SOLVES = 1000  # and 1001: tests/test_sim_experts.py
LIMIT = 450  # cube_in_bowl: 15 s at 30 Hz


class ExpertChunks:
    """A ChunkPolicy that is the scripted expert: each call reads its next `k` goals."""

    def __init__(self, robot: DirectSimRobot, task, k: int) -> None:
        self.robot, self.task, self.k = robot, task, k
        self.calls = 0

    def reset(self, seed: int) -> None:
        self.expert = make_expert(self.robot.twin, self.task)

    def __call__(self, obs) -> np.ndarray:
        self.calls += 1
        assert obs["task"] == self.task.instruction
        return np.stack([self.expert.read() for _ in range(self.k)])


def hold_start_pose(obs) -> np.ndarray:
    return np.repeat(np.asarray(obs["observation.state"])[None], 10, axis=0)


class HoldAndInpaint:
    """Holds the start pose; asked to inpaint, blends towards the target by the weights
    (the arithmetic's final step) and records what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[np.ndarray, np.ndarray]] = []

    def __call__(self, obs) -> np.ndarray:
        return hold_start_pose(obs)

    def inpainted(self, obs, target, weight) -> np.ndarray:
        self.asked.append((np.asarray(target), np.asarray(weight)))
        free = hold_start_pose(obs)
        return weight[:, None] * target + (1 - weight[:, None]) * free


@pytest.fixture(scope="module")
def arm() -> TwinSpec:
    return TwinSpec.from_config(config.compose(["robot=arm"]).robot)


def test_the_expert_through_the_chunked_loop_succeeds_and_holding_still_fails(arm):
    task = get_task("arm", "cube_in_bowl")
    with DirectSimRobot(arm, cameras=()) as robot:  # physics only: the expert needs no camera
        expert = ExpertChunks(robot, task, k=8)
        every_8 = ActionSelectionConfig(replan_every=8)
        report = evaluate_in_sim(robot, task, expert, SimEvalConfig(episodes=2, seed_start=1000, selection=every_8))
        still = evaluate_in_sim(robot, task, hold_start_pose, SimEvalConfig(episodes=1, seed_start=1000))
    assert [e.seed for e in report.episodes] == [1000, 1001]
    assert report.success_rate == 1.0 and report.successes == 2
    for e in report.episodes:
        # Ended once success had held a second, long before the time limit.
        assert e.ended == "success held" and 150 < e.steps < LIMIT
        assert e.replans == -(-e.steps // 8)  # one chunk per 8 ticks, the last one cut short
        assert e.sim_seconds == pytest.approx(e.steps / 30, abs=2e-3)  # whole 2 ms physics steps
    assert expert.calls == sum(e.replans for e in report.episodes)
    assert still.success_rate == 0.0
    assert still.episodes[0].steps == LIMIT and still.episodes[0].ended == "time limit"
    assert still.episodes[0].replans == LIMIT // 5  # default: half of the 10-action chunk


def test_episodes_respect_the_time_limit_and_success_is_judged_at_the_end(arm):
    task = get_task("arm", "cube_in_bowl")
    every_25 = ActionSelectionConfig(replan_every=25)
    with DirectSimRobot(arm, cameras=()) as robot:
        # No early stop: the expert runs to the task's time limit and is judged there.
        full = run_policy_episode(robot, task, ExpertChunks(robot, task, 25), 1000,
                                  SimEvalConfig(episodes=1, selection=every_25, stop_after_success_s=None))
        # A chunk longer than the time left is cut at the limit.
        short = run_policy_episode(robot, task, ExpertChunks(robot, task, 25), 1000,
                                   SimEvalConfig(episodes=1, selection=every_25, max_seconds=2.0))
        with pytest.raises(SimError, match="shape"):
            run_policy_episode(robot, task, lambda obs: np.zeros(7), 1000, SimEvalConfig(episodes=1))
    assert full.success and full.steps == LIMIT and full.ended == "time limit"
    # Where every object started and ended: the cube from its place on the table into the bowl.
    assert set(full.objects) == {"red_cube", "blue_block", "bowl"}
    cube, bowl = full.objects["red_cube"], full.objects["bowl"]
    assert np.linalg.norm(np.subtract(cube["start"], bowl["start"])[:2]) > 0.12  # the sampler keeps them apart
    assert np.linalg.norm(np.subtract(cube["end"], bowl["end"])[:2]) < 0.06
    assert not short.success and np.allclose(short.objects["red_cube"]["start"], short.objects["red_cube"]["end"],
                                             atol=0.005)  # 2 s in, the cube has not moved yet
    assert full.sim_seconds == pytest.approx(15.0, abs=2e-3)  # whole 2 ms physics steps
    assert short.steps == 60 and short.replans == 3 and not short.success


@pytest.mark.parametrize(("strategy", "every", "delay", "replans"), [
    ("replan", 5, 0, 12),  # 60 ticks, a chunk every 5
    ("rtc", 5, 3, 12),  # 3 ticks held for the first chunk, then 57 steps: chunks at 0, 5, .., 55
    ("ensemble", 1, 2, 30),  # each chunk asked for as the one before arrives: every 2 ticks
])
def test_each_strategy_runs_through_the_loop_with_an_inference_delay(arm, strategy, every, delay, replans):
    task = get_task("arm", "cube_in_bowl")
    cfg = SimEvalConfig(episodes=1, selection=ActionSelectionConfig(strategy, replan_every=every),
                        delay_ticks=delay, max_seconds=2.0)
    policy = HoldAndInpaint()
    with DirectSimRobot(arm, cameras=()) as robot:
        episode = run_policy_episode(robot, task, policy, 1000, cfg)
        if strategy == "rtc":  # a policy that cannot inpaint is refused, in one line
            with pytest.raises(SimError, match="strategy rtc needs a policy that inpaints"):
                run_policy_episode(robot, task, hold_start_pose, 1000, cfg)
    # The robot holds only while the first chunk is computed: with K + delay <= the chunk,
    # each later chunk arrives before the one running is used up.
    assert episode.steps == 60 and episode.holds == delay and episode.replans == replans
    # rtc: every chunk after the first is asked to agree with the running one: weights that
    # fall across the overlap, and once a delay has been measured (the first chunk's is
    # not counted) a frozen prefix of that many ticks at weight 1
    assert len(policy.asked) == (replans - 1 if strategy == "rtc" else 0)
    for _target, weight in policy.asked:
        assert (np.diff(weight) <= 0).all() and 0 < weight[0] <= 1 and weight[-1] == 0
    if strategy == "rtc":
        weight = policy.asked[-1][1]
        assert weight[:delay].tolist() == [1.0] * delay and weight[delay] < 1


# -- a real checkpoint, through the CLI -------------------------------------------------------

SIZE = (40, 32)  # width, height: small, and not the config's default, so its source shows


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """Two 1-second expert episodes recorded in the twin, and `tiny` trained on them."""
    import torch

    root = tmp_path_factory.mktemp("simeval")
    recorded = subprocess.run(
        platform_cmd("record", "--robot", "arm", "--sim", "direct", "--task", "cube_in_bowl",
                     "--data-root", str(root), "--dataset", "demo", "--episodes", "2",
                     "--episode-time-s", "1", "--reset-time-s", "0", "--no-tui",
                     f"record.sim_size={SIZE[0]}x{SIZE[1]}", f"telemetry.address={root}/t.sock"),
        env=subprocess_env(), capture_output=True, text=True, timeout=120,
    )
    assert recorded.returncode == 0, recorded.stderr[-2000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--dataset", str(root / "demo.zarr"), "--policy", "tiny", "--runs-dir",
                     str(root / "runs"), "--run", "tiny", "--steps", "4", "--no-progress",
                     "policy.train.ema=0.9"]) == 0  # eval picks the average: said in a line
    finally:
        torch.set_num_threads(threads)
    return {"root": root, "store": root / "demo.zarr",
            "ckpt": root / "runs" / "tiny" / "checkpoints" / "step_000004"}


def test_eval_sim_end_to_end_takes_robot_and_size_from_the_store_and_runs_every_task(
    trained, tmp_path, capsys, one_torch_thread
):
    report_path = tmp_path / "sim.json"
    code = main(["eval", "--policy", str(trained["ckpt"]), "--sim", "--sim-episodes", "1",
                 "--episode-time-s", "1", "--json", str(report_path), "--png", str(tmp_path / "looks"),
                 "--video", str(tmp_path / "videos"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    # the step folder's EMA average, as every closed-loop figure is judged (raw before)
    assert f"step_000004: using its EMA weights ({trained['ckpt'] / 'ema'})" in out
    whole = json.loads(report_path.read_text())
    assert whole["robot"] == "arm" and whole["sim"] == "direct"
    # Every task of the arm, one report (and one summary row) each, in the robot's order.
    assert [r["task"] for r in whole["tasks"]] == ["cube_in_bowl", "push_block_left"]
    report, push = whole["tasks"]
    assert "arm / cube_in_bowl" in out and "arm / push_block_left" in out
    assert f"success {report['successes']}/1" in out and "95 % CI" in out
    assert [line.split()[0] for line in out.splitlines() if line.startswith(("cube_in_bowl ", "push_block_left "))] \
        == ["cube_in_bowl", "push_block_left"]
    assert report["instruction"] == "put the red cube in the bowl"
    assert push["instruction"] == "push the blue block to the left"
    assert report["store"] == str(trained["store"])
    assert report["checkpoint"] == str(trained["ckpt"] / "ema")  # the weights judged, not the folder given
    assert set(report["sources"]) == {"robot", "task", "size"}
    assert report["sources"]["robot"].startswith("store ") and report["sources"]["size"].startswith("store ")
    assert report["sources"]["task"] == "every task of the arm twin"
    assert report["render_size"] == list(SIZE) and report["cameras"] == ["front", "wrist"]
    # The interval beside the rate, and the other task judged on the same scene.
    low, high = report["interval95"]
    assert 0.0 <= low <= report["success_rate"] <= high <= 1.0 and high - low > 0.5  # one episode
    assert report["other_task_instead"] == {"push_block_left": 0}
    assert set(report["episodes"][0]["other_tasks"]) == {"push_block_left"}
    # tiny's chunk is 4 actions, half of which run before the next prediction.
    assert report["chunk_actions"] == 4 and report["replan_every"] == 2
    (episode,) = report["episodes"]
    assert episode["seed"] == 1000 and episode["steps"] == 30 and episode["replans"] == 15
    assert episode["sim_seconds"] == pytest.approx(1.0, abs=2e-3)  # whole 2 ms physics steps
    assert episode["wall_seconds"] > 0 and episode["inference_ms_p50"] > 0
    assert report["success_rate"] == float(episode["success"])
    from PIL import Image

    from shallowpi.robots.sim.views import StripWriter

    for name in ("cube_in_bowl", "push_block_left"):
        # eight of the 30 ticks, labelled: a title, the cameras' names, each row's time
        strip = Image.open(tmp_path / "looks" / f"{name}_seed_1000.png")
        assert strip.size == (StripWriter.MARGIN_W + 2 * SIZE[0],
                              StripWriter.TITLE_H + StripWriter.ROLES_H + 8 * SIZE[1])
        video = tmp_path / "videos" / f"{name}_seed_1000.mp4"
        assert video.stat().st_size > 0
        _assert_video_frames(video, frames=30, size=SIZE)


def _assert_video_frames(path: Path, frames: int, size: tuple[int, int]) -> None:
    """The .mp4 decodes to one frame a tick, the cameras side by side."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    shapes = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        shapes.append(frame.shape)
    capture.release()
    assert shapes == [(size[1], 2 * size[0], 3)] * frames  # two cameras side by side


def test_offline_json_names_the_weights_judged_and_makes_its_folder(trained, tmp_path, one_torch_thread):
    """Given the run's folder, eval judges its newest step's average, and its JSON says so
    (it named the folder given); `--json` into a folder not made yet makes it (a traceback
    after the evaluation, the report lost), as `--sim --json` did."""
    report_path = tmp_path / "not" / "made" / "offline.json"
    assert main(["eval", "--policy", str(trained["ckpt"].parent.parent), "--dataset", str(trained["store"]),
                 "--json", str(report_path), "--samples", "4"]) == 0
    report = json.loads(report_path.read_text())
    assert report["checkpoint"] == str(trained["ckpt"] / "ema") and report["samples"] == 4


def test_eval_sim_runs_the_strategy_the_robot_would(trained, tmp_path, one_torch_thread):
    report_path = tmp_path / "rtc.json"
    assert main(["eval", "--policy", str(trained["ckpt"]), "--sim", "--sim-episodes", "1", "--episode-time-s", "1",
                 "--strategy", "rtc", "--replan-every", "2", "--delay-ticks", "2", "--json", str(report_path),
                 "--no-progress"]) == 0
    (report, _) = json.loads(report_path.read_text())["tasks"]
    assert (report["strategy"], report["replan_every"], report["delay_ticks"]) == ("rtc", 2, 2)
    (episode,) = report["episodes"]
    # tiny's 4-action chunks, one every 2 actions, each arriving 2 ticks late: the robot
    # holds for the first only; chunks asked for at ticks 0, 4, 6, .., 28.
    assert episode["steps"] == 30 and episode["holds"] == 2 and episode["replans"] == 14


def test_seeds_outside_the_held_out_scenes_are_said_to_be_maybe_seen(trained, capsys, one_torch_thread):
    """`platform record` draws its scenes below 1000 (and past the held-out range): an
    evaluation there may score training scenes, and says so; the default seeds do not."""
    common = ["eval", "--policy", str(trained["ckpt"]), "--sim", "--task", "cube_in_bowl", "--sim-episodes", "1",
              "--episode-time-s", "0.1", "--no-progress"]
    assert main([*common, "--seed", "3"]) == 0
    assert "warning: seeds 3..3 leave the held-out scenes 1000..999999" in capsys.readouterr().out
    assert main(common) == 0
    assert "leave the held-out scenes" not in capsys.readouterr().out


def test_eval_sim_scenes_shared_runs_every_task_and_judges_the_other_one(trained, tmp_path, one_torch_thread):
    report_path = tmp_path / "shared.json"
    assert main(["eval", "--policy", str(trained["ckpt"]), "--sim", "--sim-episodes", "1", "--episode-time-s", "0.2",
                 "--scenes", "shared", "--json", str(report_path), "--no-progress"]) == 0
    reports = json.loads(report_path.read_text())["tasks"]
    assert [r["task"] for r in reports] == ["cube_in_bowl", "push_block_left"]
    assert {r["scenes"] for r in reports} == {"shared"}
    assert {tuple(r["other_task_instead"]) for r in reports} == {("push_block_left",), ("cube_in_bowl",)}


def _tiny_checkpoint(folder: Path, state: int, cameras: list[str], dataset: Path | None,
                     fps: float | None = None) -> Path:
    from shallowpi.policy.config import load_preset
    from shallowpi.policy.policy import Features, Policy

    meta = ({"dataset": str(dataset)} if dataset else {}) | ({"fps": json.dumps(fps)} if fps else {})
    Policy(load_preset("tiny"), Features(state, state, cameras)).save(folder, extra_metadata=meta)
    return folder


def test_a_checkpoint_naming_no_store_is_judged_at_its_own_input_size_and_says_so(tmp_path, capsys,
                                                                                   one_torch_thread):
    """A shipped teacher names no store. It used to be rendered at record.sim_size (224x224,
    then resized) where it trained on its input size: other pictures, silently."""
    from shallowpi.policy.config import load_preset

    side = load_preset("tiny").vision.image_size
    ckpt = _tiny_checkpoint(tmp_path / "shipped", 7, ["front"], None)
    code = main(["eval", "--policy", str(ckpt), "--sim", "--robot", "arm", "--task", "cube_in_bowl",
                 "--sim-episodes", "1", "--episode-time-s", "0.2", "--json", str(tmp_path / "r.json"), "--no-progress"])
    assert code == 0
    assert f"names no training store: rendering at its input size {side}x{side}" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())["tasks"][0]
    assert report["render_size"] == [side, side] != [224, 224]
    assert report["sources"]["size"] == "the policy's input size (no store named)"
    # A store named but not on this machine is said as such (it read "names no training store").
    gone = _tiny_checkpoint(tmp_path / "moved", 7, ["front"], tmp_path / "gone.zarr")
    assert main(["eval", "--policy", str(gone), "--sim", "--robot", "arm", "--task", "cube_in_bowl",
                 "--sim-episodes", "1", "--episode-time-s", "0.1", "--no-progress"]) == 0
    assert (f"{gone}'s training store {tmp_path / 'gone.zarr'} is not here: rendering at its input size "
            f"{side}x{side} without the store's image codec") in capsys.readouterr().out


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown task", "unknown task 'fly' for the arm twin (from --task); pass --task NAME, one of: cube_in_bowl"),
        ("camera", "the policy reads camera(s) ['overhead'] that the arm twin lacks (it has ['front', 'wrist'])"),
        ("state size", "state/action sizes 6/6 but the arm twin has 7 joints"),
        ("no store", "cannot tell which robot to simulate (the checkpoint names no store); pass --robot"),
        ("no twin", "no tasks for robot 'octopus'; robots with a twin: arm, bimanual, humanoid"),
        ("fps", "the policy was trained on episodes recorded at 30 Hz but the arm twin runs at 15 Hz; pass robot.fps=30"),
        ("fps, no store", "the policy was trained on episodes recorded at 15 Hz but the arm twin runs at 30 Hz; "
                          "pass robot.fps=15"),
        ("fps, offline", "the policy was trained on episodes recorded at 15 Hz but dataset "),
        ("offline needs a dataset", "pass --dataset NAME for the offline action error, or --sim"),
        ("strategy without --sim", "--strategy belongs to --sim; add --sim"),
        ("episode count without --sim", "--sim-episodes belongs to --sim; add --sim"),
        ("seed without --sim", "--seed belongs to --sim; add --sim"),
        ("scenes without --sim", "--scenes belongs to --sim; add --sim"),
        ("episodes with --sim", "--episodes is for the offline error; with --sim the count is --sim-episodes N"),
        ("unknown strategy", "unknown action selection strategy 'blend'; choose one of: replan, ensemble, rtc"),
        # Each was taken, or failed, only after the evaluation had run:
        # a typo judged the policy on its input size without the store's codec, silently
        ("no such store", "--dataset nosuch: no dataset at "),
        # IsADirectoryError, NotADirectoryError: tracebacks, the report lost
        ("json is a folder", "--json {tmp} is a folder; name the file to write"),
        ("video under a file", "--video {tmp}/file/videos: a file stands where a folder must be"),
        ("png under a file", "--png {tmp}/file/looks: a file stands where a folder must be"),
        ("offline json under a file", "--json {tmp}/file/r.json: a file stands where a folder must be"),
    ],
)
def test_one_line_errors(case, expected, trained, tmp_path, capsys):
    store = trained["store"]
    ckpt = str(trained["ckpt"])
    args = {  # built lazily: each case writes its own checkpoint
        "unknown task": lambda: [ckpt, "--sim", "--task", "fly"],
        "camera": lambda: [str(_tiny_checkpoint(tmp_path, 7, ["overhead"], store)), "--sim"],
        "state size": lambda: [str(_tiny_checkpoint(tmp_path, 6, ["front"], store)), "--sim"],
        "no store": lambda: [str(_tiny_checkpoint(tmp_path, 7, ["front"], None)), "--sim"],
        "no twin": lambda: [ckpt, "--sim", "--robot", "octopus"],
        "fps": lambda: [ckpt, "--sim", "robot.fps=15"],
        # the checkpoint records its rate: checked with its store gone
        "fps, no store": lambda: [str(_tiny_checkpoint(tmp_path, 7, ["front"], None, fps=15)), "--sim", "--robot", "arm"],
        "fps, offline": lambda: [str(_tiny_checkpoint(tmp_path, 7, ["front"], store, fps=15)), "--dataset", str(store)],
        "offline needs a dataset": lambda: [ckpt],
        "strategy without --sim": lambda: [ckpt, "--strategy", "rtc"],
        # flags with a default of their own too: offline, `--sim-episodes 50` must not be ignored
        "episode count without --sim": lambda: [ckpt, "--dataset", str(store), "--sim-episodes", "50"],
        "seed without --sim": lambda: [ckpt, "--dataset", str(store), "--seed", "1000"],
        "scenes without --sim": lambda: [ckpt, "--dataset", str(store), "--scenes", "shared"],
        # an episode index, not a count: `--sim --episodes 50` must not quietly run 10
        "episodes with --sim": lambda: [ckpt, "--sim", "--episodes", "50"],
        "unknown strategy": lambda: [ckpt, "--sim", "action_selection.strategy=blend"],
        "no such store": lambda: [ckpt, "--sim", "--dataset", "nosuch"],
        "json is a folder": lambda: [ckpt, "--sim", "--json", str(tmp_path)],
        "video under a file": lambda: [ckpt, "--sim", "--video", str(tmp_path / "file" / "videos")],
        "png under a file": lambda: [ckpt, "--sim", "--png", str(tmp_path / "file" / "looks")],
        "offline json under a file": lambda: [ckpt, "--dataset", str(store), "--json", str(tmp_path / "file" / "r.json")],
    }[case]()
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["eval", "--policy", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    expected = expected.format(tmp=tmp_path)
    assert err.startswith("error: ") and expected in err and len(err.splitlines()) == 1, err


def test_eval_sim_stack_drives_the_emulated_servos_and_software_realsenses(trained, tmp_path, one_torch_thread):
    pytest.importorskip("pyrealsense2")
    paths = {mode: tmp_path / f"{mode}.json" for mode in ("direct", "stack")}
    for mode, path in paths.items():
        assert main(["eval", "--policy", str(trained["ckpt"]), "--sim", mode, "--task", "cube_in_bowl",
                     "--sim-episodes", "1", "--episode-time-s", "0.5", "--json", str(path), "--no-progress"]) == 0
    direct, stack = ((json.loads(p.read_text())["sim"], json.loads(p.read_text())["tasks"]) for p in paths.values())
    assert (direct[0], stack[0]) == ("direct", "stack")
    (d,), (s,) = direct[1], stack[1]
    assert d["sources"]["task"] == s["sources"]["task"] == "--task"
    # The same closed loop through the real drivers: same ticks, same number of chunks.
    assert (s["episodes"][0]["steps"], s["episodes"][0]["replans"]) == (15, 8)
    assert (d["episodes"][0]["steps"], d["episodes"][0]["replans"]) == (15, 8)


def test_unknown_sim_mode_is_one_line(trained, capsys):
    assert main(["eval", "--policy", str(trained["ckpt"]), "--sim", "hardware", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: unknown --sim mode 'hardware'; choose one of: direct, stack"


@pytest.mark.parametrize(("k", "n", "low", "high"), [
    (9, 10, 0.5958, 0.9821),  # the closed form (Wilson 1927), evaluated independently
    (0, 10, 0.0, 0.2775),
    (10, 10, 0.7225, 1.0),
    (90, 100, 0.8256, 0.9448),
])
def test_wilson_interval_matches_published_values(k, n, low, high):
    from shallowpi.evaluate.interval import rate_with_interval, wilson_interval

    assert wilson_interval(k, n) == pytest.approx((low, high), abs=1e-4)
    assert rate_with_interval(9, 10) == "9/10 (90 %, 95 % CI 60-98 %)"
    # one decimal keeps a rate just under an interval's low end from printing inside it
    assert rate_with_interval(174, 200, decimals=1) == "174/200 (87.0 %, 95 % CI 81.6-91.0 %)"
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_wilson_interval_always_holds_the_rate():
    """Every k/n sits inside its own interval, exactly: 10/10's high once came out as
    1 - 2**-53, and the demo's picture refused the negative error bar it made."""
    from shallowpi.evaluate.interval import wilson_interval

    for n in range(1, 301):
        for k in range(n + 1):
            low, high = wilson_interval(k, n)
            assert 0.0 <= low <= k / n <= high <= 1.0, (k, n, low, high)


def test_the_paired_p_value_is_the_exact_sign_test_on_the_seeds_that_differ():
    from math import comb

    from shallowpi.evaluate.interval import paired_p_value

    assert paired_p_value(0, 0) == 1.0 and paired_p_value(3, 3) == 1.0
    assert paired_p_value(7, 0) == pytest.approx(2 / 2**7)  # 7 of 7 one way
    assert paired_p_value(20, 7) == pytest.approx(2 * sum(comb(27, i) for i in range(8)) / 2**27)
    assert paired_p_value(20, 7) == paired_p_value(7, 20) and 0.01 < paired_p_value(20, 7) < 0.02
    with pytest.raises(ValueError):
        paired_p_value(-1, 2)


def test_seed_by_seed_counts_only_the_seeds_both_ran_and_one_solved():
    from shallowpi.evaluate.interval import paired_p_value, seed_by_seed

    a = {"cube": {1: True, 2: True, 3: False, 4: True}, "push": {1: True, 2: False}}
    b = {"cube": {1: True, 2: False, 3: True, 4: False, 5: False}, "push": {1: False, 2: False}}
    # cube: seeds 2 and 4 A alone, 3 B alone (5 ran under B only: not compared); push: seed 1 A alone.
    assert seed_by_seed(a, b, ["cube", "push"]) == (
        f"cube 2 against 1 (p = {paired_p_value(2, 1):.3f}); push 1 against 0 (p = {paired_p_value(1, 0):.3f}); "
        f"all tasks 3 against 1 (p = {paired_p_value(3, 1):.3f})")
    assert seed_by_seed(a, {"cube": b["cube"]}, ["cube", "push"]) is None  # no per-seed outcomes for push
    assert seed_by_seed(a, {"cube": b["cube"], "push": {7: True}}, ["cube", "push"]) is None  # no seed in common
