"""How many checkpoints a run keeps, and the disk they need (found by a review of the
trainer): every step_* folder was kept forever, so a default π0 run (30,000 steps, a ~50 GB
checkpoint every 1,000) would write ~1.5 TB and die of a full disk hours in, unwarned.
`policy.train.keep_last` keeps the newest N; a save onto a disk with less free space than
the previous checkpoint took is said in one line first."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from policy_fakes import tiny_train_config, tiny_trainer
from shallowpi import config
from shallowpi.cli import main
from shallowpi.policy import Policy
from shallowpi.train import checkpoint
from shallowpi.train.checkpoint import latest_checkpoint
from shallowpi.train.trainer import TrainingError
from store_fixtures import make_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**kw):
    return tiny_train_config(**{"save_every": 1, **kw})


def _trainer(run: Path, resume: bool = False, **kw):
    return tiny_trainer(run, resume, **{"save_every": 1, **kw})


def _kept(run: Path) -> list[str]:
    """What the run's checkpoints/ folder holds, hidden leftovers included."""
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_keep_last_leaves_the_newest_steps_and_last_and_a_resume_continues(tmp_path):
    run = tmp_path / "run"
    _trainer(run, steps=4, keep_last=2).fit()
    assert _kept(run) == ["last", "step_000003", "step_000004"]
    assert (run / "checkpoints" / "last").read_text().strip() == "step_000004"
    resumed = _trainer(run, resume=True, steps=6, keep_last=2)
    assert resumed.start_step == 4  # from the newest, which the prune never touches
    resumed.fit()
    assert _kept(run) == ["last", "step_000005", "step_000006"]
    assert Policy.load(latest_checkpoint(run)) is not None  # whole and loadable


def test_keep_last_null_keeps_every_checkpoint_and_a_run_from_before_resumes_into_a_smaller_one(tmp_path):
    """null is the behaviour of before (the small presets' default); a run saved without the
    setting resumes with one, the older checkpoints then removed at its first save."""
    run = tmp_path / "run"
    _trainer(run, steps=4).fit()
    assert _kept(run) == ["last", "step_000001", "step_000002", "step_000003", "step_000004"]
    _trainer(run, resume=True, steps=5, keep_last=1).fit()
    assert _kept(run) == ["last", "step_000005"]


def test_a_prune_spares_what_last_names_and_step_folders_no_save_made(tmp_path):
    run = tmp_path / "run"
    _trainer(run, steps=4).fit()
    root = run / "checkpoints"
    (root / "last").write_text("step_000001")  # a marker not yet mended: the step a resume would be told of
    (root / "step_000000").mkdir()  # a user's own folder, weights only: not one a save made
    (root / "step_000000" / "model.safetensors").write_bytes(b"")
    removed = checkpoint.prune_checkpoints(run, keep_last=1)
    assert sorted(p.name for p in removed) == ["step_000002", "step_000003"]
    assert _kept(run) == ["last", "step_000000", "step_000001", "step_000004"]


def test_a_prune_killed_mid_removal_leaves_loadable_checkpoints_and_the_next_start_finishes_it(
        tmp_path, monkeypatch, caplog):
    """A step folder is renamed aside before its files go: a kill in the removal leaves no
    step_N that a resume, `eval` or a learning curve would take for a whole checkpoint."""
    run = tmp_path / "run"
    _trainer(run, steps=3).fit()

    def killed(path, *args, **kwargs):  # the removal of the first folder dies half-way
        (Path(path) / "model.safetensors").unlink()
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.prune_checkpoints(run, keep_last=1)
    monkeypatch.undo()
    for step in (run / "checkpoints").glob("step_*"):  # every one left whole: the two aside are hidden
        Policy.load(step)
    aside = checkpoint.PRUNED_PREFIX
    assert _kept(run) == [f"{aside}step_000001", f"{aside}step_000002", "last", "step_000003"]
    with caplog.at_level(logging.WARNING, logger="shallowpi.train.trainer"):
        trainer = _trainer(run, resume=True, steps=4, keep_last=1)
    assert trainer.start_step == 3
    assert any("an old checkpoint whose removal (policy.train.keep_last) was cut short" in r.getMessage()
               for r in caplog.records)
    trainer.fit()
    assert _kept(run) == ["last", "step_000004"]


def test_the_free_space_warning_decision():
    """The decision alone, with explicit numbers: a file system small enough to fill cannot
    be had here without mounting one."""
    run = Path("/runs/kitchen-pi0")
    gb = 10**9
    said = checkpoint.space_warning(run, previous=50 * gb, free=40 * gb)
    assert said == ("/runs/kitchen-pi0: 40.0 GB free on its disk, less than a checkpoint takes (50.0 GB the last "
                    "one, 10% margin): the next save may fail for lack of space; free some, or keep fewer "
                    "checkpoints (policy.train.keep_last=N; keep_last=N needs room for N + 1, the old removed only "
                    "after the new one is saved)")
    assert checkpoint.space_warning(run, previous=50 * gb, free=54 * gb) is not None  # inside the margin
    assert checkpoint.space_warning(run, previous=50 * gb, free=56 * gb) is None
    assert checkpoint.space_warning(run, previous=None, free=1) is None  # no checkpoint yet to judge by
    assert checkpoint.space_warning(run, previous=50 * gb, free=None) is None  # a file system that does not count
    assert "distill.train.keep_last=N" in checkpoint.space_warning(run, 28 * 10**6, 10**6, "distill.train")


def test_the_free_space_warning_is_said_once_per_shortage_before_the_save(tmp_path, monkeypatch, caplog):
    """Wired into the saves: the disk's count stands in for a full one (see the test above)."""
    free = iter([1, 1, 10**12, 1])  # asked from save 2 on: 2 and 3 short, 4 with room, 5 short again
    monkeypatch.setattr(checkpoint, "free_bytes", lambda path: next(free))
    run = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="shallowpi.train.checkpoint"):
        _trainer(run, steps=5).fit()
    said = [r.getMessage() for r in caplog.records if "free on its disk" in r.getMessage()]
    assert len(said) == 2 and said[0].startswith(f"{run}: 1 B free on its disk, less than a checkpoint takes (")


@pytest.mark.parametrize(("value", "expected"), [
    (0, r"^keep_last must be >= 1 \(the newest checkpoints kept\) or null \(keep every one\), got 0$"),
    (1.5, r"^train.keep_last must be a whole number, got 1.5$"),
])
def test_a_keep_last_that_keeps_nothing_is_refused(value, expected):
    with pytest.raises(TrainingError, match=expected):
        _cfg(keep_last=value)


def test_keep_last_is_a_preset_setting_recorded_in_the_run_config(tmp_path, capsys):
    """pi0 keeps 3 (~50 GB each); the others every one. The resolved config.yaml records it."""
    assert config.compose(["policy=pi0"]).policy.train.keep_last == 3
    assert [config.compose([f"policy={p}"]).policy.train.keep_last for p in ("tiny", "small", "teacher")] == [None] * 3
    store = tmp_path / "arm.zarr"
    make_store(store, episodes=2, length=8).close()
    assert main(["train", "--dataset", str(store), "--policy", "tiny", "--runs-dir", str(tmp_path), "--run", "r",
                 "--no-progress", "policy.train.steps=3", "policy.train.save_every=1", "policy.train.keep_last=1",
                 "policy.train.tensorboard=false"]) == 0, capsys.readouterr().err
    assert config.OmegaConf.load(tmp_path / "r" / "config.yaml").policy.train.keep_last == 1
    assert _kept(tmp_path / "r") == ["last", "step_000003"]
    assert json.loads((tmp_path / "r" / "eval.json").read_text())  # the evaluation after the last step read it


def test_a_checkpoints_files_take_the_umasks_mode_so_colleagues_can_read_them(tmp_path):
    """safetensors writes through a temporary file of mode 0600: model.safetensors and the
    training state were the trainer's alone, whatever the umask gave the run's other files,
    and a colleague's eval, distill or deploy of the run was refused."""
    import os
    import stat

    previous = os.umask(0o022)
    try:
        run = tmp_path / "run"
        _trainer(run, steps=1, ema=0.9).fit()
    finally:
        os.umask(previous)
    modes = {str(p.relative_to(run)): oct(stat.S_IMODE(p.stat().st_mode))
             for p in (run / "checkpoints" / "step_000001").rglob("*") if p.is_file()}
    assert {name: mode for name, mode in modes.items() if mode != "0o644"} == {}
    assert {"checkpoints/step_000001/model.safetensors", "checkpoints/step_000001/train_state.safetensors",
            "checkpoints/step_000001/ema/model.safetensors"} <= set(modes)
