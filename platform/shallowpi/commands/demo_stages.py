"""The stages of `platform demo`, each one of the platform's own commands run in this process.

    record    `platform record --sim direct`, every task of the robot, into OUT/<robot>.zarr
    teacher   `platform train` into OUT/teacher/ (or the checkpoint given with --teacher)
    student   `platform distill --teacher ...` into OUT/student<K>/
    evaluate  `platform eval --sim --json` of teacher and student: OUT/eval_<model>.json
    deploy    `platform deploy --sim --json` of the student: OUT/deploy_student.json

Every stage first looks at what an earlier run left in OUT and does only what is missing,
through the commands' own resume paths: the store gets the episodes it is short of
(`record --resume`, which continues past the stored seeds), an interrupted training or
distillation continues from its last checkpoint (`--resume`), a finished one is reused, and
an evaluation's JSON is reused when it finished with this checkpoint, store, settings and
code (`results_code`).
OUT/stages.json records what each stage was made with and how long it took; a trained
stage whose settings changed since (steps, preset, the store it learned from, the teacher)
is not silently replaced: the run stops with one line naming the folder to remove and
what was made from it. A store is known by its creation stamp, not only its episode count;
more episodes for a store that later stages were made from are refused before recording.
Ctrl-C in a recording drops the take in flight, in a deployment the cut episode's report:
the next run makes them again.

The commands run in-process (no new interpreter and torch import per stage) through
`cli.parse_command`, so their one-line errors reach `platform`'s own handler unchanged;
the signal handlers a command installs (record and deploy stop cleanly on Ctrl-C) are put
back when it returns.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from shallowpi.config import REPO_ROOT
from shallowpi.durable_files import replace_text
from shallowpi.errors import ConfigError, PlatformError, refuse_unknown_keys
from shallowpi.train.checkpoint import checkpoint_step, checkpoint_weights

log = logging.getLogger(__name__)

STAGES = ("record", "teacher", "student", "evaluate", "deploy", "summary")
# Settings that change neither the weights nor the measurements: a change of them is no
# reason to redo a stage (save_every also follows the steps). The record ones change how the
# recorder buffers and guards the disk, or what its flags from the demo (--episodes,
# --reset-time-s) set anyway, or only the robot (its leader arms, calibration, cameras,
# hold at the end), not a frame of the twin's episodes; nor does the store's chunking.
BOOKKEEPING = {"policy.train.save_every", "policy.train.keep_last", "policy.train.log_every", "policy.train.workers",
               "policy.train.tensorboard", "distill.latency_repeats", "distill.sim_episodes",
               "record.queue_mb", "record.disk_reserve_mb", "record.episodes", "record.reset_time_s",
               "record.hold_at_end", "record.catch_up_speed", "record.allow_uncalibrated",
               "record.allow_no_cameras", "store.numeric_chunk_rows"}


@dataclass
class DemoConfig:
    """The size of every stage: the `demo:` section (configs/demo/default.yaml, quick.yaml),
    where each key is described; the defaults here are default.yaml's."""

    name: str = "default"
    robot: str = "arm"
    policy: str = "teacher"
    teacher: str = "shipped"
    episodes: int = 40
    sim_size: str = "64x64"
    sim_noise: float = 0.005
    record_time_s: float | None = None
    teacher_steps: int = 1500
    student_steps: int = 2500
    layers: int = 6
    eval_episodes: int = 10
    eval_time_s: float | None = None
    deploy_episodes: int = 2
    deploy_backend: str | None = None
    latency_repeats: int = 20
    train: dict[str, Any] = field(default_factory=lambda: {"ema": 0.995})

    def __post_init__(self) -> None:
        self._coerce()
        for key in ("episodes", "teacher_steps", "student_steps", "layers", "eval_episodes", "deploy_episodes",
                    "latency_repeats"):
            if int(getattr(self, key)) < 1:
                raise ConfigError(f"demo.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("record_time_s", "eval_time_s"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"demo.{key} must be positive (or null for the task's limit), got {value}")
        if self.sim_noise < 0:
            raise ConfigError(f"demo.sim_noise must be >= 0, got {self.sim_noise}")

    def _coerce(self) -> None:
        """Each key to its field's type, or a one-line ConfigError naming it (a value of the
        wrong kind was a TypeError, or a crash stages later)."""
        kinds = {"int": int, "float": float, "str": str, "dict[str, Any]": dict}
        for f in fields(self):
            value, optional = getattr(self, f.name), "None" in f.type
            kind = kinds[f.type.split(" | ")[0]]
            if value is None and optional:
                continue
            try:
                if kind is dict:
                    if not isinstance(value, Mapping):
                        raise TypeError
                    value = dict(value)
                elif kind is int:
                    if isinstance(value, bool) or float(value) != int(float(value)):
                        raise ValueError
                    value = int(float(value))
                elif kind is float:
                    if isinstance(value, bool):
                        raise ValueError
                    value = float(value)
                else:
                    value = str(value)
            except (TypeError, ValueError):
                what = {int: "a whole number", float: "a number", dict: "a mapping, e.g. {ema: 0.999}",
                        str: "text"}[kind]
                raise ConfigError(f"demo.{f.name} must be {what}{' (or null)' if optional else ''}, "
                                  f"got {value!r}") from None
            setattr(self, f.name, value)

    def shipped_teacher(self) -> Path:
        """Where the project's own teacher for this robot lives: robots/<robot>/teacher/."""
        return REPO_ROOT / "robots" / self.robot / "teacher"

    def given_teacher(self) -> Path | None:
        """The teacher checkpoint `teacher` names: None for "train" (train one), the
        project's own for "shipped" (robots/<robot>/teacher/), else the folder given.
        Raises ConfigError when no teacher ships for the robot or the folder has none."""
        if self.teacher == "train":
            return None
        if self.teacher == "shipped":
            folder = self.shipped_teacher()
            if not (folder / "model.safetensors").is_file():
                raise ConfigError(f"no teacher ships for the simulated {self.robot} ({folder} has none); "
                                  "demo.teacher=train trains one")
            return folder
        folder = checkpoint_step(self.teacher, say=log.info)  # a run folder: its newest checkpoint
        if not (folder / "model.safetensors").is_file():
            raise ConfigError(f"demo.teacher={self.teacher}: no model.safetensors there; give a checkpoint "
                              "folder, or shipped, or train")
        return folder

    def as_recorded(self, record: Mapping[str, Any], overrides: list[str]) -> DemoConfig:
        """These settings with the user's `record.sim_size` and `record.sim_noise` where
        `overrides` set them (`record`: the composed `record:` section). They reach the
        recorder after the demo's own and win: the record stage's line, stages.json and
        demo.json show the values the episodes were made with, not the demo's."""
        given = {o.partition("=")[0].lstrip("+") for o in overrides}
        wins: dict[str, Any] = {}
        if "record.sim_size" in given:
            wins["sim_size"] = str(record["sim_size"])
        if "record.sim_noise" in given:
            wins["sim_noise"] = float(record["sim_noise"] or 0.0)  # null is off, as the recorder reads it
            if wins["sim_noise"] < 0:  # named here: the demo's own check would blame demo.sim_noise
                raise ConfigError(f"record.sim_noise must be >= 0 (a fraction of each joint's range), "
                                  f"got {wins['sim_noise']:g}")
        return replace(self, **wins) if wins else self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DemoConfig:
        """From the composed `demo:` section; ConfigError names an unknown key."""
        refuse_unknown_keys("demo", data, cls)
        return cls(**data)

    def train_overrides(self, steps: int) -> list[str]:
        """`policy.train.*` overrides for a run of `steps` steps: the demo's `train` keys, and
        a checkpoint every quarter of the run (an interrupted run loses at most that)."""
        keys = {"save_every": max(1, math.ceil(steps / 4)), **self.train}
        # JSON spells None, booleans and lists as Hydra reads them (null, true, [..]); str(None) is 'None'.
        return [f"policy.train.{k}={v if isinstance(v, (int, float, str)) and not isinstance(v, bool) else json.dumps(v)}"
                for k, v in keys.items()]


# ----------------------------------------------------------------------------- bookkeeping


class StageBook:
    """OUT/stages.json: per stage, the settings it was made with and its wall seconds.

    Written at a stage's start (settings) and end (seconds), atomically, so a run killed in
    the middle still knows what the half-made stage was made with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[str, dict[str, Any]] = json.loads(path.read_text()) if path.is_file() else {}

    def settings(self, stage: str) -> dict[str, Any] | None:
        """What `stage` was last made with (None: never recorded)."""
        return self.entries.get(stage, {}).get("settings")

    def seconds(self, stage: str) -> float | None:
        """Wall seconds `stage` took when it last finished (None: not finished with these settings)."""
        return self.entries.get(stage, {}).get("seconds")

    def require_same(self, stage: str, settings: dict[str, Any], folder: Path, later: list[Path] = ()) -> None:
        """Raise ConfigError when `folder` (the stage's output) was made with other settings
        than `settings`, naming it and the `later` stages' outputs made from it; remember
        `settings` otherwise."""
        before = self.settings(stage)
        if folder.exists() and before is not None and not same_settings(before, settings):
            changed = ", ".join(_change(k, before[k], settings.get(k)) for k in sorted(before)
                                if before[k] != settings.get(k))
            after = [str(p) for p in later if p.exists()]
            raise ConfigError(f"{folder} was made with other settings ({changed}); remove it"
                              + (f" and what was made from it ({', '.join(after)})" if after else "")
                              + f" to redo the {stage} stage, or give another --out")
        self.begin(stage, settings)

    def begin(self, stage: str, settings: dict[str, Any], again: bool = False) -> None:
        """Record `settings` for `stage`; its time is forgotten when they changed, or when
        it is made `again` (until it finishes, nothing of an earlier run counts as its result)."""
        entry = self.entries.setdefault(stage, {})
        if again or entry.get("settings") != settings:
            entry.update(settings=settings, seconds=None)
        self._save()

    def finish(self, stage: str, seconds: float) -> None:
        """Record that `stage` finished after `seconds` of wall time."""
        self.entries.setdefault(stage, {})["seconds"] = round(seconds, 1)
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_text(self.path, json.dumps(self.entries, indent=2))


# What decides an evaluation's, a deployment's or a timing's numbers besides the weights and
# the settings: the platform's sources (the twins and their success detectors, the
# evaluation, the policy's inference path, the executor), the robots' configs and the twins'
# models. A demo folder kept across an upgrade must not put numbers of the old code in the
# new code's table; those three stages are cheap to run again (about a minute together).
RESULTS_FILES = ("robots/*/twin.xml", "robots/*/twin.yaml", "robots/common/*.xml")
# Read from the config folder in use (SHALLOWPI_CONFIG_DIR, a lab's copy), not the checkout's:
# the robot's settings, and config.yaml's action_selection and deploy sections the evaluation
# and the deployment run with. The checkout's configs/robot alone missed a lab's edit of fps.
RESULTS_CONFIGS = ("config.yaml", "robot/*.yaml", "jetson/*.yaml")


@functools.cache  # the checkout does not change under a running demo
def results_code() -> str:
    """sha256 over the names and bytes of every source file of the installed `shallowpi`
    package, of `RESULTS_FILES` in the checkout and of `RESULTS_CONFIGS` in the config folder
    in use (`config.config_dir`): the code and settings an evaluation, a deployment or a
    chunk timing of the demo was made by."""
    import shallowpi
    from shallowpi.config import config_dir
    from shallowpi.deploy.bundle import files_sha256

    package = Path(shallowpi.__file__).resolve().parent
    every = (files_sha256(package, ("**/*.py",)) + files_sha256(REPO_ROOT, RESULTS_FILES)
             + files_sha256(config_dir(), RESULTS_CONFIGS))
    return hashlib.sha256(every.encode()).hexdigest()


def same_settings(before: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a stage made with `before` was made with `now`. A key `before` lacks was added
    to the check since that run (its value then unknown): it is not held against it, and the
    next run records it."""
    return all(before[key] == now.get(key) for key in before)


def _change(key: str, before: Any, now: Any) -> str:
    """'steps 4 -> 5'; for lists only what differs: 'overrides -[a] +[b]'."""
    if isinstance(before, list) and isinstance(now, list):
        gone, new = [x for x in before if x not in now], [x for x in now if x not in before]
        return f"{key} " + " ".join(f"{sign}{items}" for sign, items in (("-", gone), ("+", new)) if items)
    return f"{key} {before!r} -> {now!r}"


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s'."""
    seconds = round(seconds)
    return f"{seconds} s" if seconds < 60 else f"{seconds // 60} min {seconds % 60:02d} s"


def invoke(*words: str) -> None:
    """`platform WORDS...`, run in this process. The command's PlatformError passes through
    (one line at `platform`'s handler); a non-zero exit code becomes one. Signal handlers
    the command installed are restored afterwards. Record and deploy end cleanly on Ctrl-C
    and return; what they left is checked by the stage (an episode short, a report not
    complete), which then stops the demo."""
    from shallowpi.cli import parse_command
    from shallowpi.train.interrupt import TrainingInterrupted

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    log.debug("platform %s", " ".join(words))
    try:
        args = parse_command(words)
        code = int(args.run(args) or 0)
    except TrainingInterrupted:
        # Not the trainer's advice (--resume, a flag of the command run alone): the demo
        # continues each stage by itself.
        raise TrainingInterrupted(f"`platform {words[0]}` stopped with its last step saved: run the same "
                                  "`platform demo` command again to continue") from None
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    if code:
        raise PlatformError(f"`platform {words[0]}` ended with exit code {code} (its messages are above)")


def episodes_per_task(store: Path) -> dict[str, int]:
    """Episodes in the store by task text ({} when there is no store yet): what a resumed
    recording of scripted demonstrations still lacks is read from it."""
    from shallowpi.data.store import EpisodeStore

    if not store.exists():
        return {}
    counts: dict[str, int] = {}
    with EpisodeStore.open(store) as opened:
        for episode in opened.episodes:
            counts[episode.task] = counts.get(episode.task, 0) + 1
    return counts


def step_of(checkpoint: Path | None) -> int:
    """The step of a `checkpoints/step_N` folder; 0 for none."""
    return int(checkpoint.name.removeprefix("step_")) if checkpoint is not None else 0


# ----------------------------------------------------------------------------- the stages


@dataclass
class Demo:
    """One demo folder and the settings of this run. `overrides`: the user's `key=value`
    arguments, passed to every command after the demo's own (so they win)."""

    cfg: DemoConfig
    out: Path
    overrides: list[str]
    tui: bool
    given_teacher: Path | None = None
    say: Callable[[str], None] = field(default=lambda text: print(text, flush=True))

    def __post_init__(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.book = StageBook(self.out / "stages.json")
        self.store = self.out / f"{self.cfg.robot}.zarr"

    # -- printing

    def _line(self, stage: str, text: str) -> None:
        self.say(f"[demo] {STAGES.index(stage) + 1}/{len(STAGES)} {stage}: {text}")

    @contextmanager
    def stage(self, stage: str, what: str, key: str | None = None) -> Iterator[dict[str, str]]:
        """Prints the start line, then the end line with the time (and the block's `note`),
        or where it stopped; records the seconds in stages.json under `key` (default: the
        stage)."""
        self._line(stage, what)
        t0 = time.perf_counter()
        result = {"note": ""}
        try:
            yield result
        except ConfigError:
            # A setting the stage's command refused: the same settings fail the same way.
            self._line(stage, f"stopped after {duration(time.perf_counter() - t0)} by a setting it refuses "
                              "(the error below names it)")
            raise
        except BaseException:
            self._line(stage, f"stopped after {duration(time.perf_counter() - t0)}; `platform demo` "
                              "with the same settings continues from here")
            raise
        seconds = time.perf_counter() - t0
        self.book.finish(key or stage, seconds)
        self._line(stage, f"done in {duration(seconds)}" + (f": {result['note']}" if result["note"] else ""))

    def reused(self, stage: str, what: str, key: str | None = None) -> None:
        """One line: `stage` reuses `what`, and how long it took when it was made."""
        earlier = self.book.seconds(key or stage)
        self._line(stage, f"reused {what}" + (f" (made in {duration(earlier)} by an earlier run)" if earlier else ""))

    # -- 1. record

    def record(self) -> None:
        """Every task of the robot gets `cfg.episodes` scripted demonstrations in the store
        (only the missing ones are recorded). Raises PlatformError when a recording stopped
        short (Ctrl-C saves the episode in flight and ends it)."""
        from shallowpi.robots.sim.tasks import make_tasks

        cfg = self.cfg
        # What the episodes are: a store of other renders or noise is not extended or reused.
        # The store's codec and quality are the frames' too: `store.*` counts as `record.*`.
        self.book.require_same("record", {"robot": cfg.robot, "sim_size": cfg.sim_size, "sim_noise": cfg.sim_noise,
                                          "record_time_s": cfg.record_time_s,
                                          "overrides": self._relevant(self.overrides, ("record", "robot", "store"))},
                               self.store, self._made_from_store())
        tasks = make_tasks(cfg.robot)
        have = episodes_per_task(self.store)
        missing = {name: cfg.episodes - have.get(task.instruction, 0) for name, task in tasks.items()}
        missing = {name: n for name, n in missing.items() if n > 0}
        total = sum(have.values())
        if not missing:
            self.reused("record", f"{self.store} ({total} episodes, at least {cfg.episodes} of each task)")
            return
        # A given teacher's evaluation does not depend on the episodes: it stays.
        grown = [p for p in self._made_from_store() if not (self.given_teacher and p.name == "eval_teacher.json")]
        if made := [str(p) for p in grown if p.exists()]:
            # More episodes would leave them made from fewer, and the store never shrinks:
            # refused now, before recording, not stages later.
            raise ConfigError(f"{', '.join(made)} were made from the {total} episodes in {self.store}; recording "
                              f"{sum(missing.values())} more (demo.episodes={cfg.episodes}) needs them made again: "
                              "remove them, or give another --out")
        noise = f", DART noise {cfg.sim_noise:g}" if cfg.sim_noise else ""
        plan = ", ".join(f"{n} of {name}" for name, n in missing.items())
        with self.stage("record", f"{plan} on the simulated {cfg.robot} ({cfg.sim_size}{noise}), the scripted "
                                  f"expert driving, into {self.store}") as result:
            for name, count in missing.items():
                invoke("record", "--robot", cfg.robot, "--sim", "direct", "--task", name,
                       "--dataset", str(self.store), "--episodes", str(count), "--reset-time-s", "0",
                       *(["--resume"] if self.store.exists() else []), *([] if self.tui else ["--no-tui"]),
                       *(["--episode-time-s", str(cfg.record_time_s)] if cfg.record_time_s else []),
                       # Ctrl-C drops the take in flight: a cut demonstration would count as one.
                       *self._unless_given(f"record.sim_size={cfg.sim_size}", f"record.sim_noise={cfg.sim_noise}",
                                           "record.on_interrupt=discard"),
                       *self.overrides)
                now = episodes_per_task(self.store).get(tasks[name].instruction, 0)
                if now < cfg.episodes:
                    raise PlatformError(f"the recording of {name} stopped at {now} of {cfg.episodes} episodes; "
                                        "run `platform demo` again to record the rest")
            after = episodes_per_task(self.store)
            result["note"] = f"{self.store.name} holds {sum(after.values())} episodes"

    def _made_from_store(self) -> list[Path]:
        """What the later stages made from the store: the teacher (trained here), the
        student, the evaluations and the deployment."""
        return [self.out / "teacher", self.out / f"student{self.cfg.layers}", self.out / "eval_teacher.json",
                *self._made_from_student()]

    def _made_from_student(self) -> list[Path]:
        """What the later stages made from the student: its evaluation and its deployment
        (not the teacher's evaluation, which a new student leaves as it is)."""
        return [self.out / "eval_student.json", self.out / "deploy_student.json"]

    def store_identity(self) -> str | None:
        """The store's creation stamp (None: no store): a store removed and recorded again
        is another, whatever its episode count, and what was made from the old one is not
        reused."""
        from shallowpi.data.store import EpisodeStore

        if not self.store.exists():
            return None
        with EpisodeStore.open(self.store) as opened:
            return str(opened.identity)

    def _unless_given(self, *overrides: str) -> list[str]:
        """The demo's own overrides, except those the user set (theirs come later and win,
        but the record of settings should show one value)."""
        given = {o.partition("=")[0] for o in self.overrides}
        return [o for o in overrides if o.partition("=")[0] not in given]

    # -- 2. teacher

    def teacher(self) -> Path:
        """The teacher checkpoint: the one given, or `platform train`'s run in OUT/teacher
        (reused when finished, continued when interrupted). Returns the weights to use
        (the EMA average when kept)."""
        from shallowpi.distill.distiller import checkpoint_sha256
        from shallowpi.train.checkpoint import latest_checkpoint

        cfg = self.cfg
        run = self.out / "teacher"
        if self.given_teacher is not None:
            given = self.given_teacher.expanduser().resolve()
            # Recorded under its own key, not checked against OUT/teacher: a teacher an earlier
            # run trained there is no part of this one (nor replaced by it; its record stays
            # for a later demo.teacher=train), and a student or evaluation made from another
            # teacher is caught by the teacher's hash in their own settings.
            self.book.begin("given_teacher", {"given": str(given), "sha256": checkpoint_sha256(given)})
            shipped = given == cfg.shipped_teacher().resolve()
            self._line("teacher", f"using the teacher the project ships, {given} (no training; its README.md "
                                  "says how it was made)" if shipped else f"using the given checkpoint {given} (no training)")
            return given
        recorded = sum(episodes_per_task(self.store).values())
        settings = {"policy": cfg.policy, "steps": cfg.teacher_steps, "episodes": recorded,
                    "store": self.store_identity(), "overrides": self._relevant(self.teacher_overrides, ("policy",))}
        self.book.require_same("teacher", settings, run, self._made_from_store()[1:])
        last = latest_checkpoint(run)
        if step_of(last) >= cfg.teacher_steps:
            assert last is not None
            self.reused("teacher", f"{checkpoint_weights(last)}")
            return checkpoint_weights(last)
        what = f"continuing {run} from step {step_of(last)}" if last else f"into {run}"
        with self.stage("teacher", f"`platform train --policy {cfg.policy}`, {cfg.teacher_steps} steps, {what}") as result:
            invoke("train", "--dataset", str(self.store), "--policy", cfg.policy, "--runs-dir", str(self.out),
                   "--run", run.name, "--steps", str(cfg.teacher_steps), *(["--resume"] if last else []),
                   *self.teacher_overrides)
            done = latest_checkpoint(run)
            if step_of(done) < cfg.teacher_steps:
                raise PlatformError(f"the teacher's training in {run} ended before step {cfg.teacher_steps}")
            assert done is not None
            result["note"] = str(checkpoint_weights(done))
        return checkpoint_weights(done)

    @property
    def teacher_overrides(self) -> list[str]:
        """`platform train`'s overrides: the demo's training keys, then the user's."""
        return [*self.cfg.train_overrides(self.cfg.teacher_steps), *self.overrides]

    @staticmethod
    def _relevant(overrides: list[str], prefixes: tuple[str, ...]) -> list[str]:
        """The overrides that change what a stage makes: under `prefixes`, and not one that
        only changes how often it saves or logs, or what the report times."""
        return [o for o in overrides if o.partition("=")[0].lstrip("+~").split(".")[0] in prefixes
                and o.partition("=")[0].lstrip("+~") not in BOOKKEEPING]

    # -- 3. student

    def student(self, teacher: Path) -> Path:
        """`platform distill --teacher` into OUT/student<K> (reused when finished, continued
        when interrupted). Returns the student's weights (EMA when kept)."""
        from shallowpi.distill.distiller import checkpoint_sha256
        from shallowpi.train.checkpoint import latest_checkpoint

        cfg = self.cfg
        run = self.out / f"student{cfg.layers}"
        # The report's closed loop is stage 4's job and its latency a glance (the summary times
        # more); its comparison of the selection strategies probes 8 windows, not 32 (greedy
        # tries ~150 cuts of an 18-layer teacher: minutes on this CPU, for one table row).
        overrides = [*cfg.train_overrides(cfg.student_steps), "distill.sim_episodes=0", "distill.latency_repeats=5",
                     "distill.probe_windows=8", *self.overrides]
        # The demonstrations it learns from count as for the teacher: a given teacher's hash
        # does not change when the store grows.
        settings = {"teacher_sha256": checkpoint_sha256(teacher), "layers": cfg.layers, "steps": cfg.student_steps,
                    "episodes": sum(episodes_per_task(self.store).values()), "store": self.store_identity(),
                    "policy": cfg.policy, "overrides": self._relevant(overrides, ("policy", "distill"))}
        self.book.require_same("student", settings, run, self._made_from_student())
        last = latest_checkpoint(run)
        # Finished: its report written (or, with distill.report=false, the stage's end recorded).
        if step_of(last) >= cfg.student_steps and ((run / "report.md").is_file()
                                                           or self.book.seconds("student") is not None):
            assert last is not None
            self.reused("student", f"{checkpoint_weights(last)}")
            return checkpoint_weights(last)
        what = f"continuing {run} from step {step_of(last)}" if last else f"into {run}"
        with self.stage("student", f"`platform distill`: {cfg.layers} of the teacher's layers, {cfg.student_steps} "
                                   f"steps, {what}") as result:
            invoke("distill", "--dataset", str(self.store), "--teacher", str(teacher), "--policy", cfg.policy,
                   "--runs-dir", str(self.out), "--run", run.name, "--layers", str(cfg.layers),
                   "--steps", str(cfg.student_steps), *(["--resume"] if last else []), *overrides)
            done = latest_checkpoint(run)
            assert done is not None
            result["note"] = f"{checkpoint_weights(done)}; report {run / 'report.md'}"
        return checkpoint_weights(done)

    # -- 4. evaluate

    def evaluate(self, model: str, checkpoint: Path) -> dict[str, Any]:
        """`platform eval --sim` on every task of the robot: OUT/eval_<model>.json (reused
        while the checkpoint and the settings are the same). Returns its content."""
        from shallowpi.distill.distiller import checkpoint_sha256

        cfg = self.cfg
        path = self.out / f"eval_{model}.json"
        stage = f"eval_{model}"
        settings = {"sha256": checkpoint_sha256(checkpoint), "episodes": cfg.eval_episodes,
                    "time_s": cfg.eval_time_s, "store": self.store_identity(),  # its renders' size
                    "overrides": self._relevant(self.overrides, ("action_selection", "robot")), "code": results_code()}
        if self._finished(stage, settings, path):
            self.reused("evaluate", f"{path}", key=stage)
            return json.loads(path.read_text())
        self.book.begin(stage, settings, again=True)
        path.unlink(missing_ok=True)  # an evaluation stopped part-way must not leave an older one's
        cap = f", at most {cfg.eval_time_s:g} s each" if cfg.eval_time_s else ""
        seeds = f"{cfg.eval_episodes} unseen seed{'s' if cfg.eval_episodes != 1 else ''}"
        with self.stage("evaluate", f"the {model} in closed loop, {seeds} per task{cap}",
                        key=stage) as result:
            invoke("eval", "--policy", str(checkpoint), "--sim", "--dataset", str(self.store),
                   "--sim-episodes", str(cfg.eval_episodes), "--json", str(path),
                   *(["--episode-time-s", str(cfg.eval_time_s)] if cfg.eval_time_s else []), *self.overrides)
            tasks = json.loads(path.read_text())["tasks"]
            result["note"] = ", ".join(f"{t['task']} {t['successes']}/{len(t['episodes'])}" for t in tasks)
        return json.loads(path.read_text())

    # -- 5. deploy

    def deploy(self, student: Path) -> dict[str, Any]:
        """`platform deploy --sim`: the student through the executor (dashboard on a
        terminal): OUT/deploy_student.json (reused like an evaluation). Returns its content.
        Raises PlatformError when the executor stopped early or reported a fault."""
        from shallowpi.distill.distiller import checkpoint_sha256

        cfg = self.cfg
        path = self.out / "deploy_student.json"
        settings = {"sha256": checkpoint_sha256(student), "episodes": cfg.deploy_episodes, "time_s": cfg.eval_time_s,
                    "backend": cfg.deploy_backend, "store": self.store_identity(), "code": results_code(),
                    "overrides": self._relevant(self.overrides, ("deploy", "action_selection", "jetson", "robot"))}
        if self._finished("deploy", settings, path):
            self.reused("deploy", f"{path}")
            return json.loads(path.read_text())
        self.book.begin("deploy", settings, again=True)
        path.unlink(missing_ok=True)  # a run stopped or faulted part-way must not leave an older one's
        from shallowpi.robots.sim.tasks import make_tasks

        task = next(iter(make_tasks(cfg.robot)))
        backend = cfg.deploy_backend or "the Jetson profile's backend"
        with self.stage("deploy", f"the student on the twin through the executor ({backend}), "
                                  f"{cfg.deploy_episodes} episode{'s' if cfg.deploy_episodes != 1 else ''} of {task}") as result:
            invoke("deploy", "--policy", str(student), "--sim", "--task", task, "--episodes", str(cfg.deploy_episodes),
                   "--json", str(path), *(["--backend", cfg.deploy_backend] if cfg.deploy_backend else []),
                   *(["--episode-time-s", str(cfg.eval_time_s)] if cfg.eval_time_s else []),
                   *([] if self.tui else ["--no-tui"]), *self.overrides)
            report = json.loads(path.read_text())
            if report["episodes"] < cfg.deploy_episodes or not report.get("complete", True):
                path.unlink()  # an episode cut short (Ctrl-C) would count as a failure
                raise PlatformError(f"the executor stopped during episode {report['episodes']} of "
                                    f"{cfg.deploy_episodes}; run `platform demo` again to deploy")
            result["note"] = f"{report['successes']}/{report['episodes']} successful"
        return report

    def _finished(self, stage: str, settings: dict[str, Any], path: Path) -> bool:
        """Whether `path` is `stage`'s result for `settings`: the stage finished with them
        (a run stopped or failed part-way records them at its start, not its end)."""
        before = self.book.settings(stage)
        # A result that names no code was made before results named theirs: by other code,
        # as far as anyone can tell (same_settings lets a key added since pass, and a reused
        # stage is not recorded again, so it would pass at every upgrade after).
        return (path.is_file() and before is not None and same_settings(before, settings)
                and before.get("code") == settings.get("code") and self.book.seconds(stage) is not None)
