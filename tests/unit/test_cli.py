"""The command line: in-process where possible, as real processes for serve, the socket and the lock."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kerub_tui import __version__
from kerub_tui.cli import main
from kerub_tui.control import controller_running, socket_path
from tests import cliproc

from ._cli import run


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        sys.exit(main(["--version"]))
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"kerub-tui {__version__}"


def test_disk_and_vm_commands_round_trip(data_dir, capsys):
    code, out, err = run("disk", "create", "data1", "--size", "64M", capsys=capsys)
    assert code == 0, err
    code, out, err = run("disk", "list", "--json", capsys=capsys)
    disks = json.loads(out)
    assert [(d["name"], d["size"]) for d in disks] == [("data1", 64 << 20)]
    code, out, err = run("disk", "show", "data1", capsys=capsys)
    assert "size 64.0M" in out


@pytest.mark.parametrize("argv,message", [
    (["vm", "create", "bad;name", "--memory", "256M"], "VM name 'bad;name' contains ';'"),
    (["vm", "create", "ok", "--memory", "lots"], "size 'lots' is not understood"),
    (["disk", "create", "d", "--size", "0"], "must be more than zero"),
    (["disk", "create", "$(reboot)", "--size", "1G"], "contains '$'"),
    (["disk", "show", "nope"], "no disk named 'nope'"),
    (["plan", "show", "zzz"], "no plan 'zzz'"),
    (["vm"], "required"),
])
def test_errors_are_one_clear_line(data_dir, capsys, argv, message):
    code, _out, err = run(*argv, capsys=capsys)
    assert code != 0
    assert message in err
    assert len(err.strip().splitlines()) == 1, err


def test_readonly_refuses_changes(data_dir, capsys):
    assert run("disk", "create", "d1", "--size", "1G", capsys=capsys)[0] == 0
    code, out, err = run("--readonly", "disk", "create", "d2", "--size", "1G", capsys=capsys)
    assert code == 1 and "read-only" in err
    code, out, err = run("--readonly", "disk", "list", "--json", capsys=capsys)
    assert code == 0 and [d["name"] for d in json.loads(out)] == ["d1"]


def test_export_import_round_trip(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert run("--data-dir", str(a), "disk", "create", "d1", "--size", "1G", "--expect",
               "storage-redundancy:2,out-of-box@want", capsys=capsys)[0] == 0
    assert run("--data-dir", str(a), "export", str(tmp_path / "x.json"), capsys=capsys)[0] == 0
    exported = json.loads((tmp_path / "x.json").read_text())["documents"]
    assert {"disk", "audit"} <= {d["kind"] for d in exported}
    code, out, err = run("--data-dir", str(b), "import", str(tmp_path / "x.json"), capsys=capsys)
    assert code == 0, err
    assert f"imported {len(exported)} documents" in out
    assert run("--data-dir", str(b), "export", str(tmp_path / "y.json"), capsys=capsys)[0] == 0
    x = json.loads((tmp_path / "x.json").read_text())["documents"]
    y = json.loads((tmp_path / "y.json").read_text())["documents"]
    # Exactly the same documents, plus the audit entry that records the import itself.
    assert [d for d in y if d.get("action") != "import"] == x


def _kerub(*argv, env, **kwargs):
    return cliproc.kerub(argv, env=env, timeout=60, **kwargs)


@pytest.fixture
def served(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve", "--json-events"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "serving" in line, line + proc.stderr.read()
    yield env, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_commands_go_through_the_socket_while_serve_runs(served):
    env, proc = served
    data = Path(env["KERUB_TUI_DATA"])
    assert controller_running(data)
    assert oct(os.stat(socket_path(data)).st_mode & 0o777) == "0o600"
    created = _kerub("disk", "create", "viasocket", "--size", "32M", env=env)
    assert created.returncode == 0, created.stderr
    listed = _kerub("disk", "list", "--json", env=env)
    assert [d["name"] for d in json.loads(listed.stdout)] == ["viasocket"]
    # The change reached serve's --json-events output as one JSON line.
    event = json.loads(proc.stdout.readline())
    assert event["kind"] == "disk" and event["op"] == "create" and event["new"]["name"] == "viasocket"
    bad = _kerub("disk", "create", "x;y", "--size", "1M", env=env)
    assert bad.returncode == 1 and "contains ';'" in bad.stderr
    ro = _kerub("--readonly", "disk", "delete", "viasocket", env=env)
    assert ro.returncode == 1 and "read-only" in ro.stderr
    imp = _kerub("import", "/nonexistent.json", env=env)
    assert imp.returncode == 1 and "import needs the controller stopped" in imp.stderr and str(proc.pid) in imp.stderr
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not socket_path(data).exists()


def test_second_writer_is_told_the_holders_pid(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from kerub_tui.core.store import Store; "
         "s=Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(tmp_path / "data")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = _kerub("disk", "list", env=env)
        assert result.returncode == 1
        assert f"in use by another kerub-tui (pid {holder.pid})" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
