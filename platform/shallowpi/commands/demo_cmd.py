"""The whole loop on the simulated robot, no hardware: record, teacher, student, evaluate, deploy.

  platform demo                      the default sizes (<= 20 minutes on a 2-core machine),
                                     distilling the teacher the project ships
  platform demo --quick              a first look at every stage (<= 5 minutes; trains its own
                                     teacher and student far too briefly to succeed)
  platform demo --teacher CKPT --out demo/arm-mine
                                     distil a given teacher (its own folder: the default
                                     one's stages were made from another teacher)
  platform demo demo.teacher=train demo.teacher_steps=9000 demo.episodes=120 demo.train.ema=0.999 \\
      demo.eval_episodes=100 --out demo/arm-recipe
                                     train the teacher here, the shipped one's recipe (~75 min)

Six stages, each one of the platform's own commands, all under one folder (--out, default
demo/<robot>-<profile>/ in the checkout):

  1 record    `platform record --sim direct`: the robot's scripted experts demonstrate
              every task in the MuJoCo twin (DART noise, demo.sim_noise) -> <robot>.zarr
  2 teacher   the one the project ships (demo.teacher=shipped, the default profile's:
              robots/<robot>/teacher/, its README.md says how it was made); or
              `platform train` (demo.teacher=train, preset demo.policy) -> teacher/ ; or
              --teacher CKPT / demo.teacher=CKPT, used as given
  3 student   `platform distill --teacher`: 6 of its layers in both towers, trained with
              task + output + attention distillation -> student6/ (report.md inside)
  4 evaluate  `platform eval --sim` of teacher and student on every task, unseen seeds,
              95 % Wilson intervals -> eval_teacher.json, eval_student.json
  5 deploy    `platform deploy --sim`: the student through the on-device executor in the
              twin, with its dashboard on a terminal (--no-tui: plain lines) -> deploy_student.json
  6 summary   teacher vs student: success per task with its interval, chunk latency
              p50/p99, speed-up, parameters -> demo.md, demo.png, demo.json

A second run starts where the first ended: the store only gets the episodes it is short of,
a finished training or distillation is reused (an interrupted one continues from its last
checkpoint), an evaluation is reused while its checkpoint and settings are the same.
Every size is in configs/demo/ (default.yaml, quick.yaml); any `demo.KEY=VALUE` changes
one, any other `key=value` passes to every command (e.g. telemetry.address=/tmp/d.sock),
except robot= and policy=: the demo sets those itself (--robot, demo.policy).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from typing import TYPE_CHECKING, Any

from shallowpi.cli import ready_output, user_path
from shallowpi.durable_files import replace_text
from shallowpi.terminal import why_no_dashboard

if TYPE_CHECKING:
    from pathlib import Path

    from shallowpi.commands.demo_stages import DemoConfig

HELP = "the whole loop on the simulated robot: record, teacher, distil, evaluate, deploy, compare"

# Config groups the demo sets for every stage itself: {group: how to pick it instead}.
OWN_GROUPS = {"robot": "robot with --robot NAME (demo.robot=NAME)",
              "policy": "policy preset with demo.policy=NAME"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --quick, --robot, --teacher, --out and --no-tui."""
    parser.add_argument("--quick", action="store_true",
                        help="a first look in <= 5 minutes (== demo=quick; the student may not succeed)")
    parser.add_argument("--robot", help="the simulated robot (== demo.robot=...; default arm)")
    parser.add_argument("--teacher", type=user_path, metavar="CKPT",
                        help="distil this teacher checkpoint instead of the one shipped in robots/<robot>/teacher "
                             "(demo.teacher=train trains one here)")
    parser.add_argument("--out", type=user_path, metavar="DIR",
                        help="the folder holding every stage's output (default: demo/<robot>-<profile>/)")
    parser.add_argument("--no-tui", action="store_true", help="plain progress lines instead of the dashboards")


def run(args: argparse.Namespace) -> int:
    """Run the six demo stages under one folder and print the teacher/student summary.

    Writes demo.json, demo.png and demo.md there; each stage reuses what an earlier run left.
    Returns 0; a stage's own error passes through.
    """
    from omegaconf import OmegaConf

    from shallowpi import config
    from shallowpi.commands.demo_stages import Demo, DemoConfig, duration
    from shallowpi.commands.demo_summary import chunk_latency, markdown, picture, summarize, table
    from shallowpi.errors import ConfigError

    started = time.perf_counter()
    # The demo's own settings: profile first, then every user override (demo.* included).
    demo_words = (["demo=quick"] if args.quick else []) + ([f"demo.robot={args.robot}"] if args.robot else [])
    for override in args.overrides:
        # The demo names the robot (its store, tasks, teacher) and the policy preset to every
        # stage itself, by flag; a group override passed beside the flag wins (the last one
        # does): robot= recorded one robot's episodes into another's store, policy= trained
        # another preset than the one stages.json and demo.json name.
        if (group := override.partition("=")[0].lstrip("+~")) in OWN_GROUPS:
            raise ConfigError(f"{override}: the demo picks its {OWN_GROUPS[group]}")
    # The demo's own settings first: they name the robot and the preset every stage runs,
    # and the other overrides are checked against those, not the config's defaults (the
    # teacher preset's `policy.crop_scale=1.0` was refused as unknown to `small`, a
    # humanoid's `robot.cameras.head.width=...` as unknown to the arm).
    own = [o for o in args.overrides if o.partition("=")[0].lstrip("+~").startswith("demo")]
    settings = DemoConfig.from_dict(OmegaConf.to_container(config.compose(demo_words + own).demo, resolve=True))
    if settings.robot not in (robots := config.group_choices("robot")):  # before a folder is made for it
        raise ConfigError(f"unknown robot '{settings.robot}'; choose one of: {', '.join(robots)}")
    _check_choices(settings, config.group_choices("policy"))
    cfg = config.compose([f"robot={settings.robot}", f"policy={settings.policy}", *demo_words, *args.overrides])
    if args.teacher is not None:  # checked now, as demo.teacher=PATH is, not after the recording
        settings = dataclasses.replace(settings, teacher=str(args.teacher))
    out = (args.out or config.REPO_ROOT / "demo" / f"{settings.robot}-{settings.name}").absolute()
    # The commands get the user's overrides except the demo's own keys (they compose the
    # same config, so demo.* would be harmless, but they are not theirs to read).
    passed = [o for o in args.overrides if not o.partition("=")[0].lstrip("+~").startswith("demo")]
    settings = settings.as_recorded(cfg.record, passed)
    # The deploy stage's dashboard, where the terminal can take one (not from the background).
    tui = not args.no_tui and why_no_dashboard(sys.stdin, sys.stdout) is None
    given_teacher = settings.given_teacher()
    _check_training(settings, passed, given_teacher)
    # Made once every setting is checked: a file in its place was mkdir's traceback.
    ready_output(out, "--out", folder=True)
    demo = Demo(settings, out, passed, tui, given_teacher=given_teacher)
    print(f"[demo] {settings.name} profile on the simulated {settings.robot}, everything under {out}", flush=True)
    quick = settings.name == "quick"
    if quick:
        print(f"[demo] --quick: {settings.teacher_steps} teacher and {settings.student_steps} student steps on "
              f"{settings.episodes} demonstrations a task, a first look at every stage: expect little or no "
              f"success from this teacher and student ({_default_run(settings, config)})", flush=True)

    demo.record()
    teacher = demo.teacher()
    student = demo.student(teacher)
    evals = {"teacher": demo.evaluate("teacher", teacher), "student": demo.evaluate("student", student)}
    deployed = demo.deploy(student)
    checkpoints = {"teacher": teacher, "student": student}
    with demo.stage("summary", f"chunk latency ({settings.latency_repeats} chunks a model), table and picture") as result:
        latency, cached = chunk_latency(checkpoints, demo.store, settings.latency_repeats, out / "latency.json")
        result["note"] = "latency reused from latency.json" if cached else ""
        # The settings this run used: --teacher replaces the profile's demo.teacher.
        # A teacher this folder trained before stays in its book, not in this run's stages.
        stages = {k: v for k, v in demo.book.entries.items() if not (given_teacher is not None and k == "teacher")}
        summary = summarize(checkpoints, evals, deployed, latency, stages, dataclasses.asdict(settings))
        replace_text(out / "demo.json", json.dumps(summary, indent=2))  # renamed over: never a half-written one
        picture(summary, out / "demo.png")
        links = {"recorded demonstrations": str(demo.store), "teacher": str(teacher), "student": str(student),
                 "distillation report": str(out / f"student{settings.layers}" / "report.md"),
                 "closed-loop reports": str(out / "eval_*.json"), "executor run": str(out / "deploy_student.json")}
        (out / "demo.md").write_text(markdown(summary, links))
    print()
    print(table(summary))
    print(f"\n[demo] finished in {duration(time.perf_counter() - started)}: {out / 'demo.md'}, "
          f"{out / 'demo.png'}, {out / 'demo.json'}")
    if quick:
        print("[demo] --quick trains far too briefly for these success rates to mean anything; "
              "`platform demo` without --quick runs the default sizes")
    return 0


def _check_choices(settings: DemoConfig, policies: list[str]) -> None:
    """ConfigError, before anything is made, for a policy preset or deploy backend the stage
    using it would refuse: `platform distill` (or train) after the recording, `platform
    deploy` some 13 minutes into the default run."""
    from shallowpi.deploy.backends.base import BACKENDS  # a table of names: imports no backend
    from shallowpi.errors import ConfigError

    if settings.policy not in policies:
        raise ConfigError(f"unknown policy preset '{settings.policy}' (demo.policy); choose one of: "
                          f"{', '.join(policies)}")
    if settings.deploy_backend is not None and settings.deploy_backend not in BACKENDS:
        raise ConfigError(f"demo.deploy_backend '{settings.deploy_backend}' is not one of: {', '.join(BACKENDS)} "
                          "(or null for the Jetson profile's)")


def _check_training(settings: DemoConfig, passed: list[str], given_teacher: Path | None) -> None:
    """ConfigError, before anything is made, for what `platform train` and `platform distill`
    would refuse only after the recording (or, with demo.teacher=train, after the teacher's
    training): a demo.train key TrainConfig lacks, one the stages' own flags set, a value it
    refuses; demo.layers outside 1 .. depth - 1 of the teacher it cuts (the preset's depth,
    or the given checkpoint's), or distill.* settings that do not fit that cut. `passed`: the
    overrides every stage gets."""
    from shallowpi import config
    from shallowpi.commands.distill_cmd import distill_settings
    from shallowpi.commands.train_cmd import FLAG_SET_KEYS
    from shallowpi.distill.objective import AttentionPairs
    from shallowpi.errors import ConfigError, refuse_unknown_keys
    from shallowpi.policy.config import PolicyConfig, model_section
    from shallowpi.train.errors import TrainingError
    from shallowpi.train.trainer import TrainConfig

    for key in settings.train:
        # The stages pass these flags themselves, after demo.train's overrides: the key would
        # be refused by train (device, progress) or silently lose to the flag (steps).
        if key == "steps":
            raise ConfigError("demo.train.steps: the demo's steps are demo.teacher_steps and demo.student_steps")
        if key in FLAG_SET_KEYS:
            raise ConfigError(f"demo.train.{key} is set by `platform train`'s {FLAG_SET_KEYS[key]} flag, "
                              "which the demo leaves at its default")
    refuse_unknown_keys("demo.train", settings.train, TrainConfig, exclude={*FLAG_SET_KEYS, "steps"})
    # The words the teacher and student stages compose (the user's, already composed alone
    # in `run`, come after the demo's training keys, and --layers after both).
    try:
        cfg = config.compose([f"robot={settings.robot}", f"policy={settings.policy}",
                              *settings.train_overrides(settings.teacher_steps), *passed,
                              f"distill.layers={settings.layers}"])
    except ConfigError as exc:  # a demo.train value the config's types refuse
        raise ConfigError(f"demo.train: {exc}") from None
    try:  # as distill builds them: the teacher's settings, and the student's on top of them
        policy, distill, _, _ = distill_settings(cfg, {})
    except TrainingError as exc:
        raise ConfigError(f"the stages' training settings (demo.train, then policy.train.* and "
                          f"distill.train.*): {exc}") from None
    if given_teacher is None:
        depth = PolicyConfig.from_dict(model_section(policy)).depth
        teacher = f"the one trained here, demo.policy={settings.policy}"
    else:
        depth, teacher = _checkpoint_depth(given_teacher), str(given_teacher)
        _check_fits_robot(given_teacher, cfg.robot)
    if not 1 <= settings.layers < depth:
        raise ConfigError(f"demo.layers={settings.layers}: the teacher ({teacher}) has {depth} layers; a student "
                          f"keeps 1 to {depth - 1} of them")
    AttentionPairs.check_config(distill.attention_pairs, distill.weights.attention, settings.layers, depth)


def _checkpoint_depth(checkpoint: Path) -> int:
    """The joint layers of a policy checkpoint, from its header (no weights are read).
    ConfigError for a checkpoint that is no shallowpi policy (the student is cut from one)."""
    from shallowpi.errors import ConfigError
    from shallowpi.policy.config import PolicyConfig
    from shallowpi.policy.policy import FORMAT, Policy

    meta = Policy.read_metadata(checkpoint)
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ConfigError(f"demo.teacher={checkpoint}: not a shallowpi policy checkpoint (format "
                          f"{meta.get('format')!r}); give one `platform train` made, or shipped, or train")
    return PolicyConfig.from_dict(json.loads(meta["config"])).depth


def _check_fits_robot(checkpoint: Path, robot: Any) -> None:
    """ConfigError (one line) when a given teacher cannot drive the demo's robot: its
    state/action sizes against the robot's joints, its cameras against the robot's roles
    (policy/fit.py, as eval and deploy ask). Read from the header: an arm's teacher given
    for the humanoid was found only after the whole recording."""
    from shallowpi.errors import ConfigError
    from shallowpi.policy.fit import missing_cameras, size_mismatch
    from shallowpi.policy.policy import Policy

    features = json.loads(Policy.read_metadata(checkpoint).get("features") or "{}")
    name = f"robot '{robot.name}'"
    why = size_mismatch(features.get("state_dim", -1), features.get("action_dim", -1), len(robot.joints), name) \
        or missing_cameras(features.get("cameras", []), list(robot.get("cameras") or {}), name)
    if why is not None:
        raise ConfigError(f"demo.teacher={checkpoint}: {why}; give a teacher trained on this robot's episodes")


def _default_run(quick: Any, config: Any) -> str:
    """What the default profile does instead of `quick`'s brief training, in a few words."""
    default = config.compose(["demo=default"]).demo
    student = f"{default.student_steps / quick.student_steps:.0f}x the student steps"
    if default.teacher == "shipped":
        return f"the default run distils the teacher the project ships, with {student}"
    return f"the default run trains the teacher {default.teacher_steps / quick.teacher_steps:.0f}x longer, {student}"
