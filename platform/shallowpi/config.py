"""Compose the run configuration from `configs/` with Hydra's compose API.

No `@hydra.main`: the CLI owns argument parsing, Hydra only composes. Nothing changes the
working directory, and every run writes its resolved config next to its outputs
(`save_resolved`). Friendly CLI flags are sugar for overrides: `--robot humanoid` is
`robot=humanoid`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from shallowpi.errors import ConfigError, refuse_renamed_key

# platform/shallowpi/config.py -> the checkout's root holds configs/, robots/, datasets/.
REPO_ROOT = Path(__file__).resolve().parents[2]


def outside_a_checkout() -> str | None:
    """Why this `shallowpi` cannot run here, in one line, or None: installed as a package
    (`pip install .`, a wheel) it has no checkout beside it, so no robots/ (the twins, the
    shipped teachers) and no configs/, and its default datasets/, runs/ and calibrations
    would land inside the Python installation, lost with it."""
    if (REPO_ROOT / "robots").is_dir() and (REPO_ROOT / "pyproject.toml").is_file():
        return None
    return (f"shallowpi is installed at {Path(__file__).resolve().parent} without its checkout (configs/, robots/ "
            "with the twins and the shipped teachers, datasets/ and runs/ beside them); install it from the clone "
            "with `pip install -e .` (bash tools/setup.sh env)")


def config_dir() -> Path:
    """Where the Hydra configs live: $SHALLOWPI_CONFIG_DIR, else the checkout's configs/."""
    path = Path(os.environ.get("SHALLOWPI_CONFIG_DIR", REPO_ROOT / "configs")).resolve()
    if not (path / "config.yaml").is_file():
        raise ConfigError(
            f"no config.yaml in {path}; run from a checkout installed with `pip install -e .` "
            "or set SHALLOWPI_CONFIG_DIR"
        )
    return path


def groups() -> list[str]:
    """Config groups (folders of configs/), e.g. robot, policy, jetson."""
    return sorted(p.name for p in config_dir().iterdir() if p.is_dir() and not p.name.startswith("."))


def group_choices(group: str) -> list[str]:
    """The options of one group, e.g. group_choices("robot") -> ["arm", "bimanual", "humanoid"]."""
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml"))


def _check_override(override: str) -> None:
    key, sep, value = override.partition("=")
    if not sep:
        raise ConfigError(f"override '{override}' is not key=value (e.g. robot=humanoid fps=50)")
    key = key.lstrip("+~")
    refuse_renamed_key(key)
    if key in groups():
        choices = group_choices(key)
        if value not in choices:
            raise ConfigError(f"unknown {key} '{value}'; choose one of: {', '.join(choices)}")


def quote_override_value(value: str | os.PathLike[str]) -> str:
    """`value` as one literal Hydra override value, whatever it holds.

    Hydra's unquoted values take ASCII letters, digits and a few signs only, so a path with
    `ü`, `台`, a space, a comma or a quote fails in its lexer; inside quotes anything goes
    once quotes (and backslashes before them) are escaped, which Hydra's own QuotedString
    does. `${` would still start an interpolation in a quoted value, so it is escaped too.
    """
    from hydra.core.override_parser.types import Quote, QuotedString

    text = os.fspath(value).replace("${", "\\${")
    return QuotedString(text=text, quote=Quote.single).with_quotes()


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose configs/config.yaml with `overrides` (Hydra syntax) into one config."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    for override in overrides:
        _check_override(override)
    assumed = _optional_defaults(overrides)
    # `++` sets a key the preset lacks and overrides one it has.
    overrides = [f"++{o}" if _key_of(o) in assumed and not o.startswith(("+", "~")) else o for o in overrides]

    def composed(chosen: Sequence[str]) -> DictConfig:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(chosen))

    groups_only = [o for o in overrides if _key_of(o) in groups()]
    try:
        cfg = composed(overrides)
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(_one_line_hydra_error(exc, overrides, lambda: composed(groups_only))) from None
    except yaml.YAMLError as exc:  # a config file a lab edited: where, and what
        mark = getattr(exc, "problem_mark", None)
        place = f"{mark.name}:{mark.line + 1}:{mark.column + 1}" if mark is not None else "a config file"
        raise ConfigError(f"{place}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if len(groups_only) < len(overrides):
        defaults = composed(groups_only)
        for key, value in assumed.items():  # what the value is checked against where the preset is silent
            if OmegaConf.select(defaults, key, default=None) is None:
                OmegaConf.update(defaults, key, value, force_add=True)
        _check_value_types(cfg, defaults, overrides)
        if any(_key_of(o) == "robot.name" for o in overrides) and cfg.robot.get("name") != defaults.robot.get("name"):
            # The name keys the robot's calibration file, its telemetry socket and its episodes.
            raise ConfigError(f"robot.name={cfg.robot.get('name')} renames the robot '{defaults.robot.get('name')}'; "
                              "its name keys its calibration, telemetry and episodes: copy configs/robot/"
                              f"{defaults.robot.get('name')}.yaml under the new name instead")
    # The last `robot=` is the one Hydra applies (the first was compared: `--robot arm
    # robot=humanoid` blamed arm.yaml, which is fine).
    chosen = next((o.partition("=")[2] for o in reversed(overrides) if _key_of(o) == "robot"), None)
    if chosen is not None and cfg.robot.get("name") != chosen:
        # The name keys the robot's calibration file, its telemetry socket and its episodes: a
        # copy of arm.yaml still named arm would share the arm's calibration.
        raise ConfigError(f"configs/robot/{chosen}.yaml names its robot {cfg.robot.get('name')!r}; "
                          f"set name: {chosen} (the file's name)")
    _refuse_unknown_section_keys(cfg)
    return cfg


def _key_of(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


# Settings a section takes though its preset may not name them: {section: () -> {setting:
# default}}. Filled by the layer that owns them (cli.py: TrainConfig's fields, for
# policy.train and distill.train; this base module imports no stage), asked only when an
# override names such a section: `policy.train.seed=1` was refused as an unknown key
# (tools/bench/train_sweep.py's own example), as no preset lists seed.
OPTIONAL_SETTINGS: dict[str, Callable[[], Mapping[str, object]]] = {}


def _optional_defaults(overrides: Sequence[str]) -> dict[str, object]:
    """{key: its default} for each override of an OPTIONAL_SETTINGS setting, whether or not
    the preset sets it."""
    keys = [_key_of(o) for o in overrides if not o.startswith("~")]
    defaults: dict[str, object] = {}
    for key in keys:
        section, _, name = key.rpartition(".")
        if section in OPTIONAL_SETTINGS and name in (settings := OPTIONAL_SETTINGS[section]()):
            value = settings[name]
            defaults[key] = list(value) if isinstance(value, tuple) else value
    return defaults


# The keys of the sections read key by key, not through a settings dataclass that refuses
# what it does not know (deploy, action_selection, distill, demo, jetson, policy.train do):
# record (commands/record_cmd.py, record/rig.py, record/settings.py, deploy_targets.py),
# store (record/settings.py: what a new store is created with) and telemetry
# (telemetry/publisher.py, monitor_cmd.py). A key outside them, from a `+key=` override or a
# lab's config.yaml, was taken without a word and meant nothing: `+record.sim_nosie=0.05`
# recorded clean demonstrations, `allow_remote_contol: false` left remote control on.
SECTION_KEYS: dict[str, frozenset[str]] = {
    "record": frozenset({"episodes", "episode_time_s", "reset_time_s", "fps", "on_interrupt", "queue_mb",
                         "sim_size", "disk_reserve_mb", "allow_no_cameras", "allow_uncalibrated", "catch_up_speed",
                         "hold_at_end", "sim_noise", "sim_noise_tau_s"}),
    "store": frozenset({"image_codec", "image_quality", "numeric_chunk_rows"}),
    "telemetry": frozenset({"address", "allow_remote_control", "max_hz"}),
}


def _refuse_unknown_section_keys(cfg: DictConfig) -> None:
    """ConfigError (one line, with the nearest known key) for a key of a SECTION_KEYS section
    that nothing reads, or one renamed (what it became)."""
    for section, known in SECTION_KEYS.items():
        given = cfg.get(section)
        if not isinstance(given, DictConfig):
            continue
        for key in given:
            dotted = f"{section}.{key}"
            refuse_renamed_key(dotted)
            if key not in known:
                near = difflib.get_close_matches(dotted, [f"{section}.{k}" for k in sorted(known)], n=1, cutoff=0.75)
                hint = f"; did you mean {near[0]}?" if near else ""
                raise ConfigError(f"unknown config key '{dotted}'{hint} (`platform config show` lists them)")


# Keys whose default is null ("the robot's", "half the chunk", ...) and whose value is
# otherwise a number: `_check_value_types` cannot learn that from the default.
NUMBER_OR_NULL = ("record.fps", "action_selection.replan_every", "action_selection.rtc_fade", "policy.train.ema",
                  "policy.train.keep_last",
                  "distill.steps", "distill.sim_episode_time_s", "demo.eval_time_s", "demo.record_time_s",
                  "jetson.memory_gb")
# Keys whose default is a number (in a config choice, or a lab's) and whose reader takes
# null too, meaning something: no catch-up, no DART noise, no move to the start pose, no EMA
# kept, no JetPack checked. Null is refused where the default is a number, a boolean, a section or a
# list, but for these and NUMBER_OR_NULL.
NULL_TAKEN = ("record.catch_up_speed", "record.sim_noise", "deploy.start_speed", "distill.train.ema", "demo.train.ema",
              "jetson.jetpack")


def _check_value_types(cfg: DictConfig, defaults: DictConfig, overrides: Sequence[str]) -> None:
    """ConfigError for an override that puts text where the default is a number (or, for
    NUMBER_OR_NULL, null), or anything but true/false where it is a boolean, or anything but
    a section or a list where it is one; null too, where the default is a number, a boolean,
    a section or a list, but for NUMBER_OR_NULL and NULL_TAKEN: the configs are plain YAML, so
    nothing else would stop `policy.train.steps=abc` until a comparison deep in training
    fails, and `distill.weights=null` was a traceback after the teacher had loaded
    (`distill.report=null` read as false without a word)."""
    for override in overrides:
        key = _key_of(override)
        if override.startswith("~") or key in groups():
            continue
        try:
            default = OmegaConf.select(defaults, key, default=None)
            value = OmegaConf.select(cfg, key, default=None)
        except OmegaConfBaseException as exc:  # an interpolation in the value that does not resolve
            raise ConfigError(f"cannot set '{key}': {str(exc).strip().splitlines()[0]}") from None
        if default is None and key not in NUMBER_OR_NULL:
            continue
        if value is None:
            # Text keys (a port, a backend, a serial) keep null: several read it as "pick one".
            if (refused := _null_refused(key, default)) is not None:
                raise ConfigError(refused)
            continue
        if isinstance(default, DictConfig):
            if not isinstance(value, DictConfig):
                raise ConfigError(f"{key} is a section of settings (`platform config show` lists its keys), "
                                  f"not {_yaml_scalar(value)}")
            continue
        if isinstance(default, ListConfig):  # `policy.train.betas=0.9` failed in the optimiser, a traceback
            if not isinstance(value, ListConfig):
                shown = "" if _layered(key) else f"its default is {OmegaConf.to_yaml(default).strip()!r} as YAML: "
                raise ConfigError(f"{key} is a list ({shown}give it as {key}=[...]), not {_yaml_scalar(value)}")
            continue
        if isinstance(default, bool):
            wanted, fits = "true or false", isinstance(value, bool)
        elif isinstance(default, int) and isinstance(value, float):
            # A count: `record.episodes=2.5` recorded 3 without a word, `store.numeric_chunk_rows=2e3`
            # failed in zarr with a traceback. A whole float (2e3) is the count it names.
            if not value.is_integer():
                raise ConfigError(f"{key} must be a whole number{_its_default(key, str(default))}, not {value:g}")
            OmegaConf.update(cfg, key, int(value), merge=False)
            continue
        elif default is None or isinstance(default, (int, float)):
            wanted = "a number or null" if default is None else "a number"
            fits = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            continue
        if not fits:
            raise ConfigError(f"{key} must be {wanted}{_its_default(key, _yaml_scalar(default))}, "
                              f"not {_yaml_scalar(value)}")


# Sections layered over the policy preset's train section: what they leave out is the
# preset's value, not TrainConfig's default, so no default of theirs is worth stating.
LAYERED_OVER_POLICY_TRAIN = ("distill.train", "demo.train")


def _its_default(key: str, shown: str) -> str:
    """" (its default is SHOWN)", as the messages of `_check_value_types` word it; "" for a
    key of a section layered over policy.train (`demo.train.warmup_steps=abc` said "its
    default is 100": TrainConfig's, where the demo trains with its preset's 200)."""
    return "" if _layered(key) else f" (its default is {shown})"


def _layered(key: str) -> bool:
    """Whether `key` is a setting of a section layered over policy.train (no default of its own)."""
    return key.rpartition(".")[0] in LAYERED_OVER_POLICY_TRAIN


def _null_refused(key: str, default: object) -> str | None:
    """Why `key` cannot be null, its default being `default` (a section, a list, a boolean, a
    number: none of their readers takes null), or None when it can (text, or a key of
    NUMBER_OR_NULL or NULL_TAKEN)."""
    if key in NUMBER_OR_NULL or key in NULL_TAKEN:
        return None
    if isinstance(default, DictConfig):
        return f"{key} cannot be null: it is a section of settings (`platform config show` lists its keys)"
    if isinstance(default, ListConfig):
        return f"{key} cannot be null: it is a list{_its_default(key, str(OmegaConf.to_container(default)))}"
    if isinstance(default, (bool, int, float)):
        kind = "true or false" if isinstance(default, bool) else "a number"
        return f"{key} cannot be null: it is {kind}{_its_default(key, _yaml_scalar(default))}"
    return None


def _yaml_scalar(value: object) -> str:
    """`value` as YAML spells it in a message: null, true, 'text', 3."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)


def _one_line_hydra_error(exc: Exception, overrides: Sequence[str], defaults: Callable[[], DictConfig]) -> str:
    """Hydra's error as one line naming the override at fault; for a key that does not
    exist, the nearest keys that do (`defaults()`: the config as the groups chosen make it)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    from hydra.errors import OverrideParseException

    if isinstance(exc, OverrideParseException) or text.startswith("Ambiguous value for argument"):
        # Hydra's override grammar: a comma asks for a sweep, and quotes, brackets, braces
        # and a few more characters are syntax; its own message names the parser's state.
        bad = next((o for o in overrides if o in str(exc)), None) or getattr(exc, "override", None) or text
        return (f"cannot read the override {bad!r} ({text}): in key=value a comma, quote, bracket or brace is "
                "Hydra syntax; quote the value, e.g. 'key=\"it,s\"', or give a path with its flag "
                "(--data-root, --dataset)")
    for override in overrides:
        key = _key_of(override)
        if f"'{key}'" in str(exc) or f"Could not override '{key}'" in str(exc):
            top = key.split(".")[0]
            known = sorted({k for k in _base_keys() if k != "defaults"} | set(groups()))
            if top not in known:
                return f"unknown config key '{key}'; top-level keys are: {', '.join(known)}"
            with contextlib.suppress(Exception):  # the hint is a courtesy: Hydra's text stands without it
                if OmegaConf.select(base := defaults(), key, default=_MISSING) is _MISSING:
                    section = key.rpartition(".")[0]
                    # A section of settings no preset lists (demo.train): its own settings, not
                    # the nearest key elsewhere ("did you mean policy.train.batch_size?").
                    candidates = ([f"{section}.{name}" for name in OPTIONAL_SETTINGS[section]()]
                                  if section in OPTIONAL_SETTINGS else _dotted_keys(base))
                    near = difflib.get_close_matches(key, candidates, n=1, cutoff=0.75)
                    hint = f"; did you mean {near[0]}?" if near else ""
                    return f"unknown config key '{key}'{hint} (`platform config show` lists them)"
            return f"cannot set '{key}': {text} (see `platform config show`)"
    return text


_MISSING = object()


def _dotted_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    """Every key of `cfg` as a dotted path, sections and leaves."""
    keys = []
    for key, value in cfg.items_ex(resolve=False):
        path = f"{prefix}{key}"
        keys.append(path)
        if isinstance(value, DictConfig):
            keys += _dotted_keys(value, path + ".")
    return keys


def _base_keys() -> DictConfig:
    return OmegaConf.load(config_dir() / "config.yaml")


def to_yaml(cfg: DictConfig) -> str:
    """`cfg` as YAML text, interpolations resolved."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def save_resolved(cfg: DictConfig, out_dir: Path, name: str = "config.yaml") -> Path:
    """Write the resolved config beside a run's outputs, so a run can be reproduced: whole
    and synced (`replace_text`). Returns its path."""
    from shallowpi.durable_files import replace_text

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    replace_text(path, to_yaml(cfg))
    return path


def data_root(cfg: DictConfig | None = None) -> Path:
    """The folder that holds `<name>.zarr` stores (config `data_root`, default datasets/)."""
    root = cfg.data_root if cfg is not None and cfg.get("data_root") else None
    root = root or os.environ.get("SHALLOWPI_DATA_ROOT") or REPO_ROOT / "datasets"
    return Path(str(root)).expanduser()  # str: `data_root=2024` composes to a number


def resolve_dataset(name_or_path: str | os.PathLike[str], root: Path | None = None) -> Path:
    """`kitchen` -> <data_root>/kitchen.zarr; a path (one with a slash, or a name ending in
    .zarr: `kitchen.zarr` is in the working folder) is used as given, with `.zarr` added
    unless it names an existing folder or already ends in it."""
    text = os.fspath(name_or_path) if isinstance(name_or_path, (str, os.PathLike)) else str(name_or_path)
    if not text:
        raise ConfigError("empty dataset name; pass --dataset NAME or a path to a .zarr store")
    if "/" in text or text.endswith(".zarr"):
        path = Path(text).expanduser()
        if path.suffix != ".zarr" and not path.is_dir():
            path = path.with_name(path.name + ".zarr")
        return path
    return (root or data_root()) / f"{text}.zarr"


def parse_size(text: str, name: str) -> tuple[int, int]:
    """"224x224" -> (width, height); `name` is the flag or key, for the one-line error."""
    try:
        width, height = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"{name} '{text}' is not WIDTHxHEIGHT, e.g. 224x224") from None
    if width <= 0 or height <= 0:
        raise ConfigError(f"{name} '{text}' must be positive, e.g. 224x224")
    return width, height
