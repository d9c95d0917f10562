"""No command prints a traceback (issue 13 item 2, issue 17 item 8).

Every subcommand of the parser (walked, so a command added later is covered too) is run as a real
process with bad arguments and paths: with no controller on the data dir, and through a running
`kerub-tui serve`. Each must exit non-zero with exactly one line on stderr and no traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kerub_tui import cli
from tests import cliproc

HOSTILE = "no-such\nthing"  # a newline must not make a second line on stderr
BAD_VALUES = {
    cli._size: ["1" + "0" * 400, "100000000000000000000000000000000000"],  # 400 digits; 1e35 bytes
    cli._memory: ["1" + "0" * 400],
    cli._port: ["0", "99999"],
    cli._address: ["127.0.0.1:99999", "127.0.0.1:0"],
    cli._path: ["/missing-dir/x.json", "{dir}"],
    int: ["abc", "1" * 400],
}
BAD_BY_DEST = {"expect": ["availability:up\n", "not-same-host:web01@"]}  # a newline; an empty level
FILLERS = {"name": "nosuch", "address": "127.0.0.1:1", "file": "/missing-dir/x.json", "memory": "1G", "size": "1G"}


def leaves(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from leaves(sub, (*prefix, name))


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(action, argparse._HelpAction)


def _filled(parser: argparse.ArgumentParser, replace: tuple[argparse.Action, str] | None = None) -> list[str]:
    """The leaf's required arguments with plausible values, one of them replaced."""
    argv: list[str] = []
    for action in parser._actions:
        if not _takes_value(action) or isinstance(action, argparse._HelpAction):
            continue
        required = not action.option_strings or action.required
        value = replace[1] if replace is not None and replace[0] is action else None
        if value is None and not required:
            continue
        if value is None:
            value = next(iter(action.choices)) if action.choices else FILLERS.get(action.dest, "nosuch")
        argv += [action.option_strings[0], value] if action.option_strings else [value]
    return argv


def cases(tmp_dir: Path) -> list[list[str]]:
    out: list[list[str]] = []
    for prefix, parser in leaves(cli.build_parser()):
        base = [*prefix, *_filled(parser)]
        out.append([*base, "--no-such-option"])
        for action in parser._actions:
            if not _takes_value(action) or isinstance(action, argparse._HelpAction):
                continue
            values = (BAD_VALUES.get(action.type) or BAD_BY_DEST.get(action.dest)
                      or (["no-such-choice"] if action.choices else [])
                      or ([HOSTILE] if not action.option_strings else []))
            for value in values:
                out.append([*prefix, *_filled(parser, (action, value.format(dir=tmp_dir)))])
    return [argv for argv in out if argv[:1] != ["serve"] or "--no-such-option" in argv]


def parses(argv: list[str]) -> bool:
    try:
        cli.build_parser().parse_args(argv)
        return True
    except (cli.CliError, cli._Exit):
        return False


def kerub(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A process forked from a warm interpreter (tests/cliproc.py); ``python_m`` below starts some
    of the same cases from nothing, as a user's shell does."""
    return cliproc.kerub(argv, env=env, cwd=cwd, timeout=300)


def python_m(argv: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kerub_tui", *argv], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)


def failures(argvs: list[list[str]], env: dict[str, str], cwd: Path, run=kerub) -> list[str]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda argv: run(argv, env, cwd), argvs))
    bad = []
    for argv, result in zip(argvs, results):
        lines = result.stderr.splitlines()
        if result.returncode == 0 or "Traceback" in result.stdout + result.stderr or len(lines) != 1 \
                or "internal error" in result.stderr:
            bad.append(f"{argv!r}: exit {result.returncode}, stderr {result.stderr!r}")
    return bad


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
                PYTHONUNBUFFERED="1")


def test_the_walk_covers_every_subcommand(tmp_path):
    walked = {" ".join(prefix) for prefix, _ in leaves(cli.build_parser())}
    assert {"export", "import", "host add", "host remove", "vm create", "disk create", "console",
            "plan approve"} <= walked
    argvs = cases(tmp_path)
    assert ["host", "add", "127.0.0.1:99999"] in argvs and ["host", "add", "127.0.0.1:0"] in argvs
    assert ["export", "/missing-dir/x.json", "--no-such-option"] in argvs
    assert ["export", str(tmp_path)] in argvs


def test_bad_arguments_of_every_command_give_one_line_without_a_controller(tmp_path, env):
    (tmp_path / "work").mkdir()
    argvs = cases(tmp_path / "work")
    assert len(argvs) > 40
    assert failures(argvs, env, tmp_path / "work") == []
    assert not [p.name for p in tmp_path.rglob("*.tmp")], "an export left its temporary file"


def test_bad_arguments_give_one_line_from_a_fresh_interpreter_too(tmp_path, env):
    """A few of the cases above, each in a `python -m kerub_tui` of its own: what only a cold start
    does (imports, the entry point) cannot print a traceback either."""
    (tmp_path / "work").mkdir()
    argvs = cases(tmp_path / "work")
    sample = [argv for argv in argvs if parses(argv)][:4] + [argv for argv in argvs if not parses(argv)][:2]
    assert failures(sample, env, tmp_path / "work", run=python_m) == []


def test_bad_arguments_of_every_command_give_one_line_through_a_running_controller(tmp_path, env):
    (tmp_path / "work").mkdir()
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving" in serve.stderr.readline()
        # What fails to parse fails the same way before the socket is used: the rest goes through it.
        argvs = [argv for argv in cases(tmp_path / "work") if parses(argv)]
        argvs.append(["serve"])  # a second controller on the same data dir
        assert len(argvs) > 15
        assert failures(argvs, env, tmp_path / "work") == []
        assert serve.poll() is None, "the controller died"
        assert not [p.name for p in tmp_path.rglob("*.tmp")], "an export left its temporary file"
    finally:
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
    assert "Traceback" not in err, err
