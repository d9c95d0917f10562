"""Defects a first hour with the command line finds (issue 13), run as real processes: each test
failed before its fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import cliproc


@pytest.fixture
def kerub(tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"))

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return cliproc.kerub(argv, env=env, timeout=120)

    return run


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def test_vm_delete_says_what_happens_to_its_disks(kerub):
    ok(kerub("disk", "create", "shared", "--size", "16M"))
    ok(kerub("vm", "create", "app", "--memory", "256M", "--disk", "64M", "--disk", "32M"))
    ok(kerub("vm", "create", "other", "--memory", "256M"))
    # app's own disks: refused without a word on them, and nothing is deleted.
    refused = one_line_error(kerub("vm", "delete", "app"))
    assert "--with-disks" in refused and "--keep-disks" in refused and "2 disk(s)" in refused
    assert "app" in [v["name"] for v in json.loads(ok(kerub("vm", "list", "--json")))]
    assert one_line_error(kerub("vm", "delete", "app", "--with-disks", "--keep-disks"))
    disks_before = {d["name"] for d in json.loads(ok(kerub("disk", "list", "--json")))}
    own = disks_before - {"shared"}
    assert len(own) == 2
    deleted = ok(kerub("vm", "delete", "app", "--with-disks"))
    assert "deleted VM app" in deleted
    assert all(f"disk {name} deleted" in deleted for name in own)
    assert {d["name"] for d in json.loads(ok(kerub("disk", "list", "--json")))} == {"shared"}
    # A VM without disks of its own needs neither option.
    assert "deleted VM other" in ok(kerub("vm", "delete", "other"))


def test_vm_delete_keep_disks_keeps_them_and_names_them(kerub):
    ok(kerub("vm", "create", "app", "--memory", "256M", "--disk", "64M"))
    (disk,) = [d["name"] for d in json.loads(ok(kerub("disk", "list", "--json")))]
    kept = ok(kerub("vm", "delete", "app", "--keep-disks"))
    assert f"disk {disk} kept" in kept
    assert [d["name"] for d in json.loads(ok(kerub("disk", "list", "--json")))] == [disk]


def test_vm_delete_with_disks_through_a_running_controller(kerub, tmp_path):
    env = dict(os.environ, KERUB_TUI_DATA=str(tmp_path / "data"), KERUB_TUI_CONFIG=str(tmp_path / "config"),
               PYTHONUNBUFFERED="1")
    serve = subprocess.Popen([sys.executable, "-m", "kerub_tui", "serve"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        line = serve.stderr.readline()
        assert "serving" in line, line
        ok(kerub("vm", "create", "app", "--memory", "256M", "--disk", "64M"))
        assert "--with-disks" in one_line_error(kerub("vm", "delete", "app"))
        deleted = ok(kerub("vm", "delete", "app", "--with-disks"))
        assert "deleted VM app" in deleted and " deleted" in deleted.splitlines()[1]
        assert json.loads(ok(kerub("disk", "list", "--json"))) == []
    finally:
        serve.terminate()
        serve.wait(timeout=60)


def test_vm_list_json_has_status_and_host_and_vms_are_named(kerub, tmp_path):
    from kerub_tui.controller import Controller

    from ..tui.fleet_data import fleet_documents

    writer = Controller(tmp_path / "data")
    store = writer.open_store()
    store.put_many(fleet_documents())  # web1 up on h1, web2 up on h2, db1 down; web1 not on web2's host
    store.close()
    listed = {v["name"]: v for v in json.loads(ok(kerub("vm", "list", "--json")))}
    assert {name: (v["status"], v["host"]) for name, v in listed.items()} == {
        "db1": ("down", None), "web1": ("up", "h1"), "web2": ("up", "h2")}
    # Expectations name the VMs they are about, as the console does, never by their ids.
    table = ok(kerub("vm", "list"))
    assert "not-same-host:web2@want" in table
    assert listed["web2"]["id"] not in table
    shown = ok(kerub("vm", "show", "web1"))
    assert "expects not-same-host:web2@want" in shown and listed["web2"]["id"] not in shown
