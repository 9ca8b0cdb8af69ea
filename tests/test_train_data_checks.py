"""What `train` checks of its data before step 0: one frame rate, one calibration (warned),
finite numbers (named, or their windows skipped), and a split with two sides (warned)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import platform_cmd, subprocess_env
from policy_fakes import FakeChunks
from shallowpi.commands.eval_cmd import describe_episodes
from shallowpi.commands.train_cmd import chunk_dataset
from shallowpi.data import EpisodeStore
from shallowpi.data.nonfinite import bad_rows, find_nonfinite, windows_touching
from shallowpi.data.store import StoreSettings
from shallowpi.data.windows import ChunkWindows
from shallowpi.policy import load_preset
from shallowpi.train.finetune import Split, finetune
from shallowpi.train.store_checks import FiniteWindows, checked_factory, screen_store
from shallowpi.train.trainer import TrainConfig, TrainingError
from store_fixtures import arm_features, stamp_episode, synthetic_frame

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _store(path: Path, episodes: list[dict], length: int = 12) -> Path:
    """Episodes of the test arm; each dict may set fps, calibration_id and `nan`: a list of
    (feature, frame) whose row gets a NaN (or `inf`: infinities). A store refuses to mix
    fps or calibration ids, so mixed ones are stamped afterwards, as in a store written
    before it refused."""
    rng = np.random.default_rng(0)
    with EpisodeStore.create(path, arm_features(), StoreSettings(durable=False)) as store:
        for spec in episodes:
            writer = store.begin_episode("reach", robot="arm", calibration_id="cal-a", fps=30)
            for t in range(length):
                frame = synthetic_frame(rng, t)
                for feature, row in spec.get("nan", []):
                    if row == t:
                        frame[feature] = frame[feature].copy()
                        frame[feature][1] = np.nan
                for feature, row in spec.get("inf", []):
                    if row == t:
                        frame[feature] = frame[feature].copy()
                        frame[feature][0] = np.inf
                writer.add_frame(frame, t / 30.0)
            writer.commit(success=True)
    for index, spec in enumerate(episodes):
        stamp_episode(path, index, fps=float(spec.get("fps", 30)), calibration_id=spec.get("calibration_id", "cal-a"))
    return path


def _cfg(**kw) -> TrainConfig:
    base = dict(steps=3, batch_size=4, lr=1e-3, min_lr=1e-4, warmup_steps=1, save_every=3,
                log_every=1, workers=0, progress=False, tensorboard=False)
    return TrainConfig(**{**base, **kw})


# ----------------------------------------------------------------------------- frame rate, calibration


@pytest.mark.bad_store
def test_a_store_mixing_frame_rates_is_refused_in_one_line(tmp_path):
    store = _store(tmp_path / "mixed.zarr", [{"fps": 30}, {"fps": 30}, {"fps": 15}, {"fps": 30}])
    with pytest.raises(TrainingError) as err:
        screen_store(store, [0, 1, 2, 3])
    message = str(err.value)
    assert "\n" not in message
    assert "mixed.zarr mixes frame rates (15 fps in episodes 2; 30 fps in episodes 0, 1, 3)" in message
    assert "train on one rate: a copy without the others (platform dataset delete COPY --episode 2)" in message


def test_mixed_calibration_ids_are_a_warning(tmp_path, caplog):
    store = _store(tmp_path / "cal.zarr", [{"calibration_id": "cal-a"}, {"calibration_id": "cal-b"}])
    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        screen = screen_store(store, [0, 1])
    assert not screen.nonfinite
    assert "cal.zarr mixes calibration ids (cal-a in episodes 0; cal-b in episodes 1)" in caplog.text


def test_training_on_eval_sims_held_out_scenes_is_a_warning(tmp_path, caplog):
    """A `deploy --sim --record` store holds rollouts of seeds 1000.. (eval --sim's held-out
    scenes): trained on, evaluation would score scenes the policy learned."""
    from store_fixtures import make_store

    make_store(tmp_path / "demos.zarr", episodes=2, length=4, scene_seeds=[0, 1]).close()
    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        screen_store(tmp_path / "demos.zarr", [0, 1])
    assert "held-out" not in caplog.text
    make_store(tmp_path / "rollouts.zarr", episodes=3, length=4, scene_seeds=[5, 1000, 1001]).close()
    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        screen_store(tmp_path / "rollouts.zarr", [0, 1, 2])
    assert "rollouts.zarr: episodes 1, 2 are twin scenes of eval --sim's held-out seeds (1000..)" in caplog.text


# ----------------------------------------------------------------------------- non-finite values


@pytest.mark.bad_store
def test_non_finite_values_are_named_by_feature_episode_and_row(tmp_path):
    store = _store(tmp_path / "nan.zarr", [
        {}, {"nan": [("observation.state", 5)]}, {"inf": [("action", 3), ("action", 4)]},
    ])
    screen = screen_store(store, [0, 1, 2])
    assert [(f.feature, f.episode, f.rows) for f in screen.nonfinite] == [
        ("observation.state", 1, (5,)), ("action", 2, (3, 4)),
    ]
    with pytest.raises(TrainingError) as err:
        checked_factory(store, [0, 1, 2], chunk_dataset, skip_nonfinite=False)
    message = str(err.value)
    assert "\n" not in message
    assert "observation.state episode 1 row 5; action episode 2 rows 3, 4" in message
    assert "policy.train.skip_nonfinite=true" in message


@pytest.mark.bad_store
def test_skip_nonfinite_drops_exactly_the_windows_that_touch_them_and_trains(tmp_path, caplog):
    store = _store(tmp_path / "nan.zarr", [
        {}, {"nan": [("observation.state", 5)]}, {"inf": [("action", 3)]}, {},
    ])
    make = checked_factory(store, [0, 1, 2, 3], chunk_dataset, skip_nonfinite=True)
    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        data = make(store, 4, [0, 1, 2])
    assert isinstance(data, FiniteWindows)
    # Episode 1 loses the one window observing row 5; episode 2 the four whose chunk of
    # 4 actions reads row 3 (frames 0-3). 36 windows, 5 skipped.
    assert len(data) == 31
    assert "skipping 5 of 36 windows that touch non-finite values (episodes 1, 2" in caplog.text
    kept = {(int(item["episode_index"]), int(item["frame_index"])) for item in (data[i] for i in range(len(data)))}
    assert (1, 5) not in kept and {(2, f) for f in range(4)}.isdisjoint(kept) and (2, 4) in kept
    for i in range(len(data)):
        assert torch.isfinite(data[i]["observation.state"]).all() and torch.isfinite(data[i]["action"]).all()
    stats = data.stats()
    assert all(np.isfinite(v).all() for s in stats.values() for v in s.values())
    # policy.actions=delta: the offsets' statistics over the kept windows only, finite too
    offsets = np.concatenate([(item["action"] - item["observation.state"][None, :6]).numpy()[~item["action_is_pad"].numpy()]
                              for item in (data[i] for i in range(len(data)))])
    delta = data.stats(delta_dims=range(6))["action"]
    assert np.allclose(delta["mean"], offsets.mean(0), atol=1e-5) and np.allclose(delta["max"], offsets.max(0))

    run = finetune(store, load_preset("tiny"), _cfg(), tmp_path / "run", episodes=[0, 1, 2, 3], make_dataset=make)
    assert np.isfinite(run["train"]["loss"]) and np.isfinite(run["eval"]["policy_mse"])
    # The pose deploy starts each episode from is recorded (it was left out with the skip)
    from shallowpi.policy.policy import Policy

    start = json.loads(Policy.read_metadata(Path(run["checkpoint"]))["start_state"])
    assert np.allclose(start, data.dataset.start_state(), atol=1e-6) and np.isfinite(start).all()


@pytest.mark.bad_store
def test_the_start_pose_is_the_median_of_the_finite_first_states(tmp_path):
    """An episode whose first state is NaN says nothing of where the episodes began: the
    pose deploy starts from is the median of the others' (NaN before, or none recorded)."""
    store = _store(tmp_path / "nan.zarr", [{}, {"nan": [("observation.state", 0)]}, {}, {}])
    data = checked_factory(store, [0, 1, 2, 3], chunk_dataset, skip_nonfinite=True)(store, 4, [0, 1, 2, 3])
    with EpisodeStore.open(store) as opened:
        firsts = [opened.read("observation.state", *opened.episode_range(e))[0] for e in (0, 2, 3)]
    np.testing.assert_allclose(data.start_state(), np.median(firsts, axis=0), atol=1e-6)


@pytest.mark.bad_store
def test_a_store_edited_between_its_screening_and_its_loading_is_refused(tmp_path):
    """The non-finite mask and the statistics come from the screening's read of the store,
    the samples from the dataset's: a recorder's d and a new take in between gave the mask
    of one take to the rows of another (its NaN then trained, and the run stopped on it)."""
    from shallowpi.errors import StoreError
    from store_fixtures import synthetic_frame

    store = _store(tmp_path / "nan.zarr", [{}, {"nan": [("observation.state", 5)]}, {}])
    make = checked_factory(store, [0, 1, 2], chunk_dataset, skip_nonfinite=True)
    with EpisodeStore.open(store, mode="a") as writable:  # the last take dropped and recorded again
        writable.drop_last_episode()
        last = writable.episodes[-1]
        writer = writable.begin_episode(last.task, robot=last.robot, calibration_id=last.calibration_id, fps=last.fps)
        rng = np.random.default_rng(0)
        for t in range(12):
            writer.add_frame(synthetic_frame(rng, t), t / 30.0)
        writer.commit(success=True)
    with pytest.raises(StoreError, match=r"nan\.zarr was edited between its screening and its loading"):
        make(store, 4, [0, 1, 2])


def test_windows_touching_matches_a_window_by_window_check():
    rng = np.random.default_rng(3)
    ends = np.cumsum(rng.integers(1, 9, size=7))
    n = int(ends[-1])
    for offset in (0, 1):  # format 2 and format 1 (actions shifted one row)
        for chunk in (1, 3, 6):
            state_bad, action_bad = rng.random(n) < 0.08, rng.random(n) < 0.08
            windows = ChunkWindows(ends, chunk, episodes=[0, 2, 3, 6], action_offset=offset)
            expected = [state_bad[w.row] or action_bad[w.action_rows].any() for w in map(windows.__getitem__, range(len(windows)))]
            assert windows_touching(windows, ends, state_bad, action_bad).tolist() == expected


def test_find_nonfinite_by_episode():
    values = np.zeros((10, 3), np.float32)
    values[2, 1], values[7, 0], values[8, 2] = np.nan, -np.inf, np.inf
    assert bad_rows(values).tolist() == [False, False, True] + [False] * 4 + [True, True, False]
    found = find_nonfinite("action", values, np.array([4, 7, 10]))
    assert [(f.episode, f.rows) for f in found] == [(0, (2,)), (2, (0, 1))]
    assert find_nonfinite("action", values, np.array([4, 7, 10]), episodes=[1]) == []
    assert not bad_rows(np.zeros((3, 2), np.int64)).any()


@pytest.mark.bad_store
@pytest.mark.slow
def test_train_names_non_finite_values_before_step_0(tmp_path):
    store = _store(tmp_path / "nan.zarr", [{}, {}, {"nan": [("action", 7)]}])
    run = subprocess.run(
        platform_cmd("train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path / "runs"),
                     "--no-progress"),
        env=subprocess_env(OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert run.stderr.strip().splitlines() == [run.stderr.strip()]
    assert "action episode 2 row 7" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "runs" / "nan-tiny" / "checkpoints").exists()  # refused before step 0


# ----------------------------------------------------------------------------- the split


def test_one_episode_warns_that_nothing_is_held_out_and_labels_the_evaluation(tmp_path, caplog):
    def make(store, chunk, episodes):
        return FakeChunks(episodes=1, chunk_len=chunk, select=episodes)

    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        result = finetune(tmp_path / "one.zarr", load_preset("tiny"), _cfg(), tmp_path / "run",
                          episodes=[0], make_dataset=make)
    assert "one.zarr: 1 episode(s), none held out" in caplog.text
    # (an in-memory dataset: no store on disk, so no episode identities)
    assert json.loads((tmp_path / "run" / "split.json").read_text()) == {"train": [0], "held_out": [],
                                                                        "episodes": {}}
    assert result["eval"]["data"] == "training episodes [0] (no held-out episodes)"
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["data"] == result["eval"]["data"]

    with pytest.raises(TrainingError, match=r"none held out.*\(policy.train.require_held_out=true\)"):
        finetune(tmp_path / "one.zarr", load_preset("tiny"), _cfg(require_held_out=True), tmp_path / "run2",
                 episodes=[0], make_dataset=make)
    assert not (tmp_path / "run2" / "checkpoints").exists()


def test_a_split_with_no_training_episode_is_refused():
    assert Split.of([0, 1, 2, 3], 0.25) == Split([0, 1, 2], [3])
    with pytest.raises(TrainingError, match=r"eval_fraction=0\.9 holds out all 2 episodes"):
        Split.of([0, 1], 0.9)


def test_a_store_recorded_task_by_task_holds_out_episodes_of_every_task():
    # 20 episodes of one task, then 20 of another: the last 10 % of all would be the second's.
    tasks = {e: "cube_in_bowl" if e < 20 else "push" for e in range(40)}
    split = Split.of(list(range(40)), 0.1, tasks)
    assert split.held_out == [18, 19, 38, 39]
    assert split.train == [e for e in range(40) if e not in (18, 19, 38, 39)]
    # Interleaved tasks: each task's last ones, wherever they are.
    assert Split.of(list(range(8)), 0.25, {e: "ab"[e % 2] for e in range(8)}).held_out == [6, 7]
    # Shared in proportion (largest remainder), the total as without tasks: 3 tasks of 15.
    assert Split.of(list(range(45)), 0.1, {e: str(e // 15) for e in range(45)}).held_out == [13, 14, 29, 44]


def test_the_held_out_count_follows_eval_fraction_whatever_the_tasks():
    # Ten tasks of two episodes: 2 held out (of two tasks), not one of every task (10 of 20).
    assert len(Split.of(list(range(20)), 0.1, {e: str(e // 2) for e in range(20)}).held_out) == 2
    # Every episode its own instruction (an imported LeRobot dataset): the last ones, as
    # without tasks, rather than none.
    assert Split.of(list(range(40)), 0.1, {e: f"text {e}" for e in range(40)}).held_out == [36, 37, 38, 39]
    # An episode the mapping lacks is a task of its own, not one with the empty text.
    assert Split.of([0, 1, 2, 3], 0.5, {0: "", 1: ""}).held_out == [1, 3]


def test_eval_says_what_the_evaluated_episodes_are(tmp_path):
    store = tmp_path / "s.zarr"
    other = tmp_path / "o.zarr"
    assert describe_episodes([3], store, True, [3], [0, 1, 2]) == "held-out episodes [3]"
    assert describe_episodes([0], store, True, [], [0]) == "training episodes [0] (no held-out episodes)"
    assert describe_episodes([1, 3], store, True, [3], [0, 1, 2]) == "episodes [1, 3] (the policy was trained on [1])"
    assert describe_episodes([4], store, True, [3], [0, 1, 2]) == "episodes [4] (not trained on)"
    assert describe_episodes([0, 1], other, False, None, None) == "episodes [0, 1] of o.zarr (not the training store)"


def test_successful_only_trains_on_the_episodes_not_marked_failed(tmp_path):
    from shallowpi import config
    from shallowpi.commands.train_cmd import resolve_training_store
    from shallowpi.errors import StoreError
    from store_fixtures import make_store

    make_store(tmp_path / "mixed.zarr", episodes=4).close()  # episodes 0 and 2 succeeded, 1 and 3 failed
    base = ["policy=tiny", f"dataset={tmp_path / 'mixed.zarr'}"]
    assert resolve_training_store(config.compose(base))[1] == [0, 1, 2, 3]
    assert resolve_training_store(config.compose([*base, "policy.train.successful_only=true"]))[1] == [0, 2]
    with EpisodeStore.create(tmp_path / "failed.zarr", arm_features(), StoreSettings(durable=False)) as store:
        writer = store.begin_episode("reach", robot="arm", calibration_id="cal-a", fps=30)
        for t in range(5):
            writer.add_frame(synthetic_frame(np.random.default_rng(0), t), t / 30.0)
        writer.commit(success=False)
    with pytest.raises(StoreError, match=r"every episode of .* is marked failed"):
        resolve_training_store(config.compose(["policy=tiny", f"dataset={tmp_path / 'failed.zarr'}",
                                               "policy.train.successful_only=true"]))


def test_the_checkpoint_records_the_pose_the_training_episodes_started_from(tmp_path):
    """deploy moves the robot there before each episode: the median of the training
    episodes' first states (the held-out one left out)."""
    from shallowpi.policy import Policy
    from store_fixtures import make_store

    store = tmp_path / "s.zarr"
    make_store(store, episodes=4, length=12).close()
    cfg = TrainConfig(steps=1, batch_size=2, save_every=1, log_every=1, workers=0, progress=False, tensorboard=False,
                      eval_fraction=0.25)
    result = finetune(store, load_preset("tiny"), cfg, tmp_path / "run", episodes=[0, 1, 2, 3],
                      make_dataset=chunk_dataset)
    with EpisodeStore.open(store) as opened:
        firsts = [opened.read("observation.state", *opened.episode_range(e))[0] for e in (0, 1, 2)]
    recorded = json.loads(Policy.read_metadata(Path(result["checkpoint"]))["start_state"])
    np.testing.assert_allclose(recorded, np.median(firsts, axis=0), atol=1e-5)


@pytest.mark.bad_store
@pytest.mark.parametrize(("count", "held_out", "scored"), [
    # refused the run before; then scored the training episodes as if none had been held out
    (4, [3], "training episodes [0, 1, 2] (held-out episodes [3] have no finite window to score)"),
    (8, [6, 7], "held-out episodes [6]"),
])
def test_a_wholly_non_finite_held_out_episode_is_left_out_of_the_evaluation_not_the_run(tmp_path, caplog, count,
                                                                                        held_out, scored):
    """skip_nonfinite with a held-out episode whose every state is NaN: the held-out
    dataset, built before step 0, refused the run ("nothing is left to train on") though
    the training episodes were fine. It is left unscored, named once; never trained on."""
    every_row = [("observation.state", t) for t in range(12)]
    store = _store(tmp_path / "nan.zarr", [{}] * (count - 1) + [{"nan": every_row}])
    make = checked_factory(store, list(range(count)), chunk_dataset, skip_nonfinite=True)
    with caplog.at_level(logging.WARNING, logger="shallowpi"):
        run = finetune(store, load_preset("tiny"), _cfg(eval_fraction=0.25), tmp_path / "run",
                       episodes=list(range(count)), make_dataset=make)
    assert json.loads((tmp_path / "run" / "split.json").read_text())["held_out"] == held_out
    assert f"held-out episodes {count - 1} left out of the evaluation: every window of theirs touches a " \
           "non-finite value" in caplog.text
    assert run["eval"]["data"] == scored and np.isfinite(run["eval"]["policy_mse"])


@pytest.mark.bad_store
def test_held_out_episodes_none_of_which_can_be_scored_are_refused_where_held_out_scores_are_required(tmp_path):
    every_row = [("observation.state", t) for t in range(12)]
    store = _store(tmp_path / "nan.zarr", [{}] * 3 + [{"nan": every_row}])
    make = checked_factory(store, list(range(4)), chunk_dataset, skip_nonfinite=True)
    with pytest.raises(TrainingError, match=r"held-out episodes \[3\] have no window free of non-finite values .*"
                                            "require_held_out asks for held-out scores"):
        finetune(store, load_preset("tiny"), _cfg(eval_fraction=0.25, require_held_out=True), tmp_path / "run",
                 episodes=list(range(4)), make_dataset=make)


@pytest.mark.bad_store
def test_a_wholly_non_finite_training_set_is_still_refused(tmp_path):
    every_row = [("observation.state", t) for t in range(12)]
    store = _store(tmp_path / "nan.zarr", [{"nan": every_row}, {}])
    make = checked_factory(store, [0, 1], chunk_dataset, skip_nonfinite=True)
    with pytest.raises(TrainingError, match="every window of episodes 0 touches a non-finite value; nothing is left "
                                            "to train on"):
        finetune(store, load_preset("tiny"), _cfg(eval_fraction=0.5), tmp_path / "run", episodes=[0, 1],
                 make_dataset=make)
