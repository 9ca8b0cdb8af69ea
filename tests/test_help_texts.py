"""`--help` teaches: record's keys, defaults and `platform monitor`; commands that read no
dataset do not offer --data-root; every dataset/config action describes itself with an
example."""

from __future__ import annotations

import pytest

from shallowpi.cli import build_parser
from shallowpi.telemetry import keys
from shallowpi.telemetry.status import Command, RecorderState


def help_of(*words: str) -> str:
    parser = build_parser()
    for word in words:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[word]
    return parser.format_help()


def test_record_help_lists_every_key_in_every_state_the_defaults_and_the_monitor():
    text = help_of("record")
    for command, by_state in keys.EFFECTS.items():
        assert f"{keys.KEY[command]} ({command.value})" in text
        if command in keys.JOG:  # alike in every state between takes: one line names them
            states = ", ".join(state.value for state in by_state)
            assert f"{states}: {by_state[RecorderState.IDLE]}" in text and "recording" not in states, command
        elif command not in (Command.QUIT, Command.ESTOP):
            for state, effect in by_state.items():
                assert f"{state.value:<10} {effect}" in text, (command, state)
    assert "ignored while <state>" in text
    flat = " ".join(text.split())  # argparse wraps the option help
    assert "(default 5: record.episodes)" in flat and "(default 20.0: record.episode_time_s)" in flat
    assert "(default 5.0: record.reset_time_s)" in flat
    assert "platform monitor --robot R" in text


@pytest.mark.parametrize("words", [("sim",), ("calibrate",), ("emulate",)])
def test_commands_without_a_dataset_do_not_offer_data_root(words):
    assert "--data-root" not in help_of(*words)


@pytest.mark.parametrize("words", [("dataset", "merge"), ("dataset", "import"), ("config", "show"),
                                   ("config", "groups")])
def test_actions_describe_themselves_with_an_example(words):
    text = help_of(*words)
    assert "example:\n  platform " + " ".join(words) in text
    description = text.split("\n\n")[1]
    assert len(description) > 40 and not description.startswith(("usage", "options")), description
