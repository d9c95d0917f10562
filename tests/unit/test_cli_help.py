"""Every option and argument of the command line says what it is for (issue 13 item 11): a walk over the
parser, every subcommand included, fails naming each one without help text."""

from __future__ import annotations

import argparse

from kerub_tui.cli_args import build_parser


def _walk(parser: argparse.ArgumentParser, path: str) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helped = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                if not helped.get(name):
                    missing.append(f"{path} {name} (the command)")
                missing += _walk(sub, f"{path} {name}")
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.help:  # argparse.SUPPRESS is help too: an option the command line sets itself
            missing.append(f"{path} {'/'.join(action.option_strings) or action.metavar or action.dest}")
    return missing


def test_every_option_and_argument_has_help_text() -> None:
    assert _walk(build_parser(), "kerub-tui") == []


def test_the_walk_finds_an_option_without_help() -> None:
    parser = build_parser()
    parser.add_argument("--undocumented")
    assert _walk(parser, "kerub-tui") == ["kerub-tui --undocumented"]
