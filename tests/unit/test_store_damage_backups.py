"""Automatic backups (rotated, 0600, atomic, never half a file) and the command line on a damaged store."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kerub_tui.core import backup, integrity
from kerub_tui.core import models as m
from kerub_tui.core.store import Store, parse_export
from tests import cliproc

STORE = "kerub.unqlite"


def backups_of(data_dir: Path) -> list[backup.BackupInfo]:
    return backup.Backups(data_dir).list()


def test_backups_rotate_and_are_private_exports(tmp_path):
    store = Store.open(tmp_path)
    made = []
    for i in range(backup.BACKUP_KEEP + 3):
        store.put(m.VirtualMachine(name=f"vm{i}"))
        made.append(store.backup())
    kept = backups_of(tmp_path)
    assert [b.path for b in kept] == list(reversed(made))[:backup.BACKUP_KEEP]
    assert kept[0].generation == store.generation
    assert stat.S_IMODE(os.stat(tmp_path / integrity.BACKUP_DIR).st_mode) == 0o700
    for info in kept:
        assert stat.S_IMODE(info.path.stat().st_mode) == 0o600
    # A backup is an export: `kerub-tui import` reads it, and it holds every document.
    docs = parse_export(json.loads(kept[0].path.read_text()))
    assert docs == list(store.all_documents())
    store.close()


def test_backups_are_made_at_open_and_after_many_commits(tmp_path, monkeypatch):
    store = Store.open(tmp_path)
    store.put(m.VirtualMachine(name="first"))
    assert backups_of(tmp_path) == []  # a new store: nothing worth a backup at its open
    store.close()
    store = Store.open(tmp_path)  # a store with documents and no backup: one at its open (written by a thread)
    store.wait_for_backup()
    assert [b.generation for b in backups_of(tmp_path)] == [store.generation]
    monkeypatch.setattr(backup, "BACKUP_EVERY_COMMITS", 5)
    monkeypatch.setattr(backup, "BACKUP_MIN_INTERVAL", 0.0)
    for i in range(4):
        store.put(m.VirtualMachine(name=f"vm{i}"))
    assert len(backups_of(tmp_path)) == 1
    store.put(m.VirtualMachine(name="fifth"))
    newest = backups_of(tmp_path)[0]
    assert len(backups_of(tmp_path)) == 2 and newest.generation == store.generation
    # The controller's start: a backup only when something changed since the newest.
    assert store.backup_if_changed() is None
    store.put(m.VirtualMachine(name="changed"))
    assert store.backup_if_changed() is not None
    store.close()


def test_a_failing_backup_never_fails_a_write(tmp_path, monkeypatch, caplog):
    store = Store.open(tmp_path)
    monkeypatch.setattr(backup, "BACKUP_EVERY_COMMITS", 1)
    monkeypatch.setattr(backup, "BACKUP_MIN_INTERVAL", 0.0)
    (tmp_path / integrity.BACKUP_DIR).write_text("a file where the backups dir should be")
    store.put(m.VirtualMachine(name="kept"))
    assert [v.name for v in store.list(m.VirtualMachine)] == ["kept"]
    assert "no backup of" in caplog.text
    store.close()
    readonly = Store.open(tmp_path, readonly=True)
    assert [v.name for v in readonly.list(m.VirtualMachine)] == ["kept"]
    readonly.close()


BACKUP_WRITER = r"""
import sys
from kerub_tui.core import models as m
from kerub_tui.core.store import Store

store = Store.open(sys.argv[1])
if not store.list(m.VirtualMachine):
    with store.transaction():
        for i in range(3000):
            store.put(m.VirtualMachine(name=f"vm{i}", expectations=[{"type": "not-same-host", "vms": [f"x{j}" for j in range(20)]}]))
print("ready", flush=True)
while True:
    store.backups.write([doc.model_dump_json() for doc in store.all_documents()], store.generation)
"""


def test_sigkill_during_a_backup_leaves_no_half_backup(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    left_temp = False
    for _round in range(6):
        proc = subprocess.Popen([sys.executable, "-c", BACKUP_WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        # Kill it once its backups dir shows a temp file being written: inside a backup.
        backups_dir = tmp_path / integrity.BACKUP_DIR
        while not (backups_dir.exists() and any(n.startswith(".tmp-") for n in os.listdir(backups_dir))):
            time.sleep(0.0005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        left_temp |= any(n.startswith(".tmp-") for n in os.listdir(backups_dir))
        # Every backup there is whole: it parses and holds every document.
        for info in backups_of(tmp_path):
            assert len(parse_export(json.loads(info.path.read_text()))) == 3000, info.path
        assert all(n.startswith(".tmp-") or backup._NAME.match(n) for n in os.listdir(backups_dir))
    assert left_temp, "no kill landed inside a backup: this test no longer tests it"
    store = Store.open(tmp_path)  # the next writer clears what the killed one left
    assert not [n for n in os.listdir(tmp_path / integrity.BACKUP_DIR) if n.startswith(".tmp-")]
    store.close()


# --- the command line -------------------------------------------------------------------------------


def kerub(*argv: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KERUB_TUI_DATA=str(data_dir))
    return cliproc.kerub(argv, env=env, timeout=120)


@pytest.fixture
def damaged_dir(tmp_path):
    data_dir = tmp_path / "data"
    store = Store.open(data_dir)
    for i in range(200):
        store.put(m.VirtualMachine(name=f"vm{i}", cpus=1 + i % 4))
    store.backup()
    store.close()
    path = data_dir / STORE
    data = path.read_bytes()
    middle = (len(data) // 4096 // 2) * 4096
    path.write_bytes(data[:middle] + bytes(4096) + data[middle + 4096:])
    return data_dir


def test_commands_on_a_damaged_store_print_one_line_and_fail(damaged_dir):
    before = (damaged_dir / STORE).read_bytes()
    for argv in (["vm", "list"], ["vm", "create", "new", "--memory", "1G"], ["serve"]):
        result = kerub(*argv, data_dir=damaged_dir)
        assert result.returncode == 1, (argv, result)
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, (argv, result.stderr)
        assert "is damaged" in lines[0] and "check --repair" in lines[0] and "Traceback" not in lines[0]
    assert (damaged_dir / STORE).read_bytes() == before

    readonly = kerub("--readonly", "vm", "list", data_dir=damaged_dir)
    assert readonly.returncode == 0
    assert "damaged" in readonly.stderr and "showing what can be read" in readonly.stderr
    assert 0 < len(readonly.stdout.splitlines()) - 1 < 200

    check = kerub("check", data_dir=damaged_dir)
    assert check.returncode == 1 and "is damaged" in check.stderr and "Traceback" not in check.stderr

    repair = kerub("check", "--repair", data_dir=damaged_dir)
    assert repair.returncode == 0, repair.stderr
    assert "lost: nothing" in repair.stdout and "the damaged file is kept as" in repair.stdout

    listed = kerub("vm", "list", "--json", data_dir=damaged_dir)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 200
    check = kerub("check", data_dir=damaged_dir)
    assert check.returncode == 0 and "is sound: 200 documents" in check.stdout


def test_check_repair_refuses_while_a_controller_runs(tmp_path):
    data_dir = tmp_path / "data"
    Store.open(data_dir).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from kerub_tui.core.store import Store; "
         "s=Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(data_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        result = kerub("check", "--repair", data_dir=data_dir)
        assert result.returncode == 1
        assert result.stderr.splitlines() == [
            f"kerub-tui: refusing to repair {data_dir / STORE} while a kerub-tui (pid {holder.pid}) runs on the "
            "data dir: stop it first"]
        result = kerub("check", data_dir=data_dir)  # checking a running store reads a snapshot
        assert result.returncode == 0 and "is sound" in result.stdout
    finally:
        holder.kill()
        holder.wait()
