"""A command line that fails to parse, --help and --version end before the controller's modules are
imported (they are most of a command's start: pydantic models, asyncssh, libvirt, the planner), and
say exactly what the full command line says."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kerub_tui import cli

# Run as `python -m kerub_tui ARGV...` does, then list what was imported.
PROBE = """
import json, os, sys
sys.argv[0] = "kerub-tui"
try:
    import runpy
    runpy.run_module("kerub_tui", run_name="__main__")
except SystemExit as done:
    code = done.code
with open(os.environ["PROBE_OUT"], "w") as out:
    json.dump({"code": code, "modules": sorted(sys.modules)}, out)
"""
HEAVY = ("kerub_tui.cli", "kerub_tui.controller", "kerub_tui.control", "kerub_tui.core.models",
         "kerub_tui.core.store", "kerub_tui.planner", "kerub_tui.ssh", "kerub_tui.hosts", "textual", "pydantic",
         "asyncssh", "libvirt")


@pytest.mark.parametrize("argv", [
    ["--help"],
    ["--version"],
    ["vm", "create", "--help"],
    ["--no-such-option"],
    ["vm", "create", "web1"],  # --memory missing
    ["host", "add", "127.0.0.1:99999"],
    ["disk", "create", "d1", "--size", "1" + "0" * 400],
])
def test_what_does_not_parse_ends_before_the_controller_is_imported(tmp_path, capsys, argv):
    env = dict(os.environ, PROBE_OUT=str(tmp_path / "probe.json"), KERUB_TUI_DATA=str(tmp_path / "data"))
    result = subprocess.run([sys.executable, "-c", PROBE, *argv], env=env, capture_output=True, text=True,
                            timeout=120, stdin=subprocess.DEVNULL)
    probe = json.loads((tmp_path / "probe.json").read_text())
    heavy = [m for m in probe["modules"] if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"{argv}: imported {heavy[:10]}"
    # the same words and status as the full command line
    assert cli.main(argv) == probe["code"]
    full = capsys.readouterr()
    assert (result.stdout, result.stderr) == (full.out, full.err)
    assert not (tmp_path / "data").exists()


def test_a_command_that_parses_runs_in_the_full_command_line(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))
    result = subprocess.run([sys.executable, "-m", "kerub_tui", "disk", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert (result.returncode, json.loads(result.stdout), result.stderr) == (0, [], "")
