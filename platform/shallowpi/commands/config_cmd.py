"""Show the configuration a command would run with.

  platform config show --robot humanoid        resolved YAML of the whole config
  platform config show robot.fps=50            any key=value override applies
  platform config groups                       the config groups and their choices
"""

from __future__ import annotations

import argparse

from shallowpi import config
from shallowpi.cli import add_config_flags, overrides_from

HELP = "show the resolved configuration or the config groups"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `show` and `groups` actions; `show` takes the config flags."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    show = sub.add_parser(
        "show", help="print the resolved config as YAML", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print the whole configuration a command would run with, after every flag and\n"
                    "key=value override, as YAML.",
        epilog="example:\n  platform config show --robot humanoid record.episodes=10   the humanoid's config, "
               "10 episodes a run")
    add_config_flags(show, robot=True, dataset=True, policy=True, jetson=True)
    sub.add_parser(
        "groups", help="list config groups and their choices", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="List the config groups (folders of configs/) and the choices in each: the names\n"
                    "--robot, --policy and --jetson take.",
        epilog="example:\n  platform config groups        e.g. robot: arm, bimanual, humanoid")


def run(args: argparse.Namespace) -> int:
    """Print the config groups and their choices, or the resolved config as YAML. Returns 0.
    Raises ConfigError (one line) for a robot config its commands would refuse: a lab
    editing its own robot file sees the mistake here, not at the first connect."""
    if args.action == "groups":
        for group in config.groups():
            print(f"{group}: {', '.join(config.group_choices(group))}")
        return 0
    cfg = config.compose(overrides_from(args))
    from shallowpi.robots.spec import RobotSpec

    RobotSpec.from_config(cfg.robot)
    _fill_optional_settings(cfg)
    print(config.to_yaml(cfg), end="")
    return 0


def _fill_optional_settings(cfg) -> None:
    """Put in the settings a section takes with their defaults where its preset leaves them
    out (policy.train.seed, ...): the run uses them, so the resolved config shows them.
    distill.train and demo.train are left as written: what they omit is their policy preset's
    train value, not a default (config.LAYERED_OVER_POLICY_TRAIN)."""
    from omegaconf import OmegaConf, open_dict

    from shallowpi.commands.train_cmd import FLAG_SET_KEYS

    for section, settings in config.OPTIONAL_SETTINGS.items():
        if section in config.LAYERED_OVER_POLICY_TRAIN or OmegaConf.select(cfg, section) is None:
            continue
        node = OmegaConf.select(cfg, section)
        with open_dict(node):
            for name, default in settings().items():
                if name not in node and name not in FLAG_SET_KEYS:  # train's flags set those; the config refuses them
                    node[name] = list(default) if isinstance(default, tuple) else default
