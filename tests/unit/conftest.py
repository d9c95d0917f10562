"""Fixtures of the command-line unit tests."""

from __future__ import annotations

import os

import pytest

from tests import cliproc


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A data dir of the test's own, named by the environment as an admin would."""
    path = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(path))
    return path


@pytest.fixture
def cli_ok(tmp_path):
    """``cli_ok(*argv)``: kerub-tui run as a real process on a data dir of the test's own; its output,
    once it has exited 0."""
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))

    def run(*argv: str) -> str:
        result = cliproc.kerub(argv, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stdout

    return run
