"""The fork server that runs kerub-tui's command line for the tests (tests/cliproc.py) gives what
``subprocess.run([sys.executable, "-m", "kerub_tui", ...])`` gives: exit code, streams, environment,
working directory, standard input, a timeout that kills the command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests import cliproc


def both(argv, **kw):
    env = kw.pop("env")
    forked = cliproc.kerub(argv, env=env, **kw)
    real = subprocess.run([sys.executable, "-m", "kerub_tui", *argv], env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, **kw)
    return forked, real


@pytest.fixture
def env(tmp_path):
    return dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))


def test_exit_codes_and_streams_are_those_of_python_m_kerub_tui(env, tmp_path):
    for argv in (["--version"], ["vm", "list"], ["vm", "show", "nosuch"], ["vm", "list", "--no-such-option"]):
        forked, real = both(argv, env=env, cwd=tmp_path)
        assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr), argv


def test_the_environment_and_working_directory_are_the_commands(env, tmp_path):
    cliproc.kerub(["vm", "create", "web", "--memory", "256M"], env=env, cwd=tmp_path)
    assert (tmp_path / "data").is_dir()  # KERUB_TUI_DATA of this command, not of the server
    export = cliproc.kerub(["export", "out.json"], env=env, cwd=tmp_path)
    assert export.returncode == 0, export.stderr
    assert (tmp_path / "out.json").is_file()  # relative to the command's working directory
    other = dict(env, KERUB_TUI_DATA=str(tmp_path / "other"))
    imported = cliproc.kerub(["import", "out.json"], env=other, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert "web" in cliproc.kerub(["vm", "list"], env=other, cwd=tmp_path).stdout
    assert "web" not in cliproc.kerub(["vm", "list"], env=dict(env, KERUB_TUI_DATA=str(tmp_path / "third")),
                                      cwd=tmp_path).stdout


def test_a_command_that_outlives_its_timeout_is_killed(env, tmp_path):
    with pytest.raises(subprocess.TimeoutExpired):
        cliproc.kerub(["serve"], env=env, cwd=tmp_path, timeout=5)
    # killed, so its data dir is free again for the next controller
    again = cliproc.kerub(["vm", "list"], env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
