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
    sub = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    show = sub.add_parser("show", help="print the resolved config as YAML")
    add_config_flags(show, robot=True, dataset=True, policy=True, jetson=True)
    sub.add_parser("groups", help="list config groups and their choices")


def run(args: argparse.Namespace) -> int:
    if args.action == "groups":
        for group in config.groups():
            print(f"{group}: {', '.join(config.group_choices(group))}")
        return 0
    cfg = config.compose(overrides_from(args))
    print(config.to_yaml(cfg), end="")
    return 0
