"""The history (issue 15 item 4): audit entries and events appended to a file of their own, never held in
memory, read by time, host and VM; retention; a store from before it migrates; a killed writer loses
nothing committed; read-only readers and attached consoles read it."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core import store as store_module
from kerub_tui.core.history import HISTORY_FILE, History, HistoryError
from kerub_tui.core.models import AuditEntry, Event, Settings, utcnow
from kerub_tui.core.store import Store, StoreError

from ._cli import run

NOW = utcnow()


def _audit(hours_ago: float, **fields) -> AuditEntry:
    fields.setdefault("action", "vm start")
    fields.setdefault("target", "web1")
    return AuditEntry(time=NOW - dt.timedelta(hours=hours_ago), **fields)


def _event(hours_ago: float, **fields) -> Event:
    fields.setdefault("type", "host-up")
    fields.setdefault("message", "up")
    return Event(time=NOW - dt.timedelta(hours=hours_ago), **fields)


# --- appending and querying ---------------------------------------------------------------------


def test_entries_go_to_the_history_file_not_the_documents(tmp_path):
    with Store.open(tmp_path) as store:
        entry = store.put(_audit(1))
        event = store.put(_event(1))
        assert store.get(AuditEntry, entry.id) == entry and store.get(Event, event.id) == event
        assert "audit" not in store._docs and "event" not in store._docs  # nothing held in memory
        assert list(store.all_documents()) == []  # backups hold documents, not the history
    raw = sqlite3.connect(tmp_path / HISTORY_FILE)
    assert raw.execute("SELECT id FROM audit").fetchall() == [(entry.id,)]
    assert raw.execute("SELECT id FROM event").fetchall() == [(event.id,)]
    assert os.stat(tmp_path / HISTORY_FILE).st_mode & 0o777 == 0o600


def test_query_by_time_host_and_vm_oldest_first_and_the_newest_n(tmp_path):
    with Store.open(tmp_path) as store:
        entries = [store.put(_audit(h, host_id=f"h{h % 2}", vm_id=f"vm{h % 3}")) for h in range(10, 0, -1)]
        history = store.history
        assert history is not None
        assert history.query("audit") == entries  # oldest first
        since = history.query("audit", since=NOW - dt.timedelta(hours=3, minutes=1))
        assert [e.id for e in since] == [e.id for e in entries[-3:]]
        assert history.query("audit", host_id="h0") == [e for e in entries if e.host_id == "h0"]
        assert history.query("audit", subject="vm1") == [e for e in entries if e.vm_id == "vm1"]
        assert history.query("audit", host_id="h1", subject="vm1") == [
            e for e in entries if e.host_id == "h1" and e.vm_id == "vm1"]
        assert history.query("audit", limit=4) == entries[-4:]  # the newest 4, still oldest first
        assert history.query("audit", until=NOW - dt.timedelta(hours=8)) == entries[:2]
        assert history.count("audit") == 10 and history.count("audit", host_id="h0") == 5
        assert history.query("event") == []


def test_a_transaction_appends_its_entries_only_when_it_commits(tmp_path):
    with Store.open(tmp_path) as store:
        with pytest.raises(RuntimeError), store.transaction():
            store.put(Settings())
            store.put(_audit(0))
            raise RuntimeError("rolled back")
        assert store.count(AuditEntry) == 0 and store.get(Settings, "settings") is None
        seen = []
        store.feed.add_listener(seen.append)
        with store.transaction():
            store.put(Settings())
            entry = store.put(_audit(0))
        assert store.count(AuditEntry) == 1
        assert [c.kind for c in seen] == ["settings", "audit"]  # the change feed still says it
        with pytest.raises(StoreError, match="append-only"):
            store.delete(AuditEntry, entry.id)


def test_open_violations_are_kept_without_reading_events(tmp_path):
    with Store.open(tmp_path) as store:
        store.put(_event(5, type="violation", target="vm1", message="availability:up: not running"))
        store.put(_event(4, type="violation", target="vm1", message="ecc-memory: no ECC"))
        store.put(_event(3, type="violation", target="vm2", message="availability:up: not running"))
        store.put(_event(2, type="violation-cleared", target="vm1", message="availability:up: met again"))
        assert store.history.open_violations() == {"vm1": {"ecc-memory": "ecc-memory: no ECC"},
                                                   "vm2": {"availability:up": "availability:up: not running"}}
        # a clearing older than the violation (a replay out of order) does not clear it
        store.put(_event(6, type="violation-cleared", target="vm2", message="availability:up: met again"))
        assert "vm2" in store.history.open_violations()


# --- retention ----------------------------------------------------------------------------------


def test_retention_defaults_a_year_of_audit_and_90_days_of_events(tmp_path):
    with Store.open(tmp_path) as store:
        store.put_many([_audit(24 * 364), _audit(24 * 366), _event(24 * 89), _event(24 * 91),
                        _event(24 * 200, type="violation", target="vm1", message="ecc-memory: no ECC")])
        assert store.prune_history(NOW) == {"audit": 1, "event": 2}
        assert [round((NOW - e.time).days) for e in store.list(AuditEntry)] == [364]
        assert [round((NOW - e.time).days) for e in store.list(Event)] == [89]
        assert store.history.open_violations() == {"vm1": {"ecc-memory": "ecc-memory: no ECC"}}  # still open


def test_pruning_goes_in_chunks_to_the_end(tmp_path, monkeypatch):
    from kerub_tui.core import history as history_module

    monkeypatch.setattr(history_module, "PRUNE_CHUNK", 3)
    with Store.open(tmp_path) as store:
        store.put_many([_audit(24 * 400 + h) for h in range(10)] + [_audit(1)])
        assert store.prune_history(NOW) == {"audit": 10, "event": 0}
        assert store.count(AuditEntry) == 1


def test_retention_is_pruned_at_open_and_when_set(tmp_path):
    with Store.open(tmp_path) as store:
        store.put_many([_audit(24 * 400), _audit(24 * 20), _audit(1), _event(24 * 100), _event(24 * 5)])
    with Store.open(tmp_path) as store:  # pruned at open
        assert store.count(AuditEntry) == 2 and store.count(Event) == 1

    async def set_it() -> Settings:
        controller = Controller(tmp_path)
        await controller.start(connect_hosts=False)
        try:
            return await controller.set_retention(audit_days=10, event_days=2)
        finally:
            await controller.stop()

    settings = asyncio.run(set_it())
    assert settings.history.audit_days == 10 and settings.history.event_days == 2
    with Store.open(tmp_path, readonly=True) as store:
        assert [e.action for e in store.list(AuditEntry)] == ["vm start", "history retention"]
        assert store.count(Event) == 0


def test_history_set_and_show_on_the_command_line(data_dir, capsys):
    code, out, err = run("history", "set", "--audit-days", "30", "--event-days", "7", capsys=capsys)
    assert code == 0, err
    assert "audit 30 days, events 7 days" in out
    code, out, _ = run("history", "show", capsys=capsys)
    assert code == 0 and "kept 30 days, 1 entries" in out and "kept 7 days" in out
    code, _, err = run("history", "set", "--audit-days", "0", capsys=capsys)
    assert code != 0 and "at least 1" in err and err.count("\n") <= 2
    code, _, err = run("history", "set", capsys=capsys)
    assert code != 0 and "--audit-days" in err
    code, _, err = run("--readonly", "history", "set", "--event-days", "3", capsys=capsys)
    assert code != 0 and "read-only" in err
    with Store.open(data_dir, readonly=True) as store:
        assert store.get(Settings, "settings").history.event_days == 7


# --- the command line and the console read it ---------------------------------------------------


def test_audit_and_events_commands_read_the_history_by_time_host_and_vm(data_dir, capsys):
    with Store.open(data_dir) as store:
        store.put_many([_audit(3, target="old-one"), _audit(0.1, target="new-one", host_id="h1", vm_id="v1"),
                        _audit(0.2, target="other-vm", vm_id="v2"),
                        _event(5, message="long ago"), _event(0.1, message="just now", host_id="h1")])
        from kerub_tui.core.models import Host, VirtualMachine
        store.put(Host(id="h1", name="alpha", address="127.0.0.9"))
        store.put(VirtualMachine(id="v1", name="web1", memory_max=1 << 30))
    code, out, _ = run("audit", "--since", "1h", capsys=capsys)
    assert code == 0 and "new-one" in out and "other-vm" in out and "old-one" not in out
    code, out, _ = run("audit", "--vm", "web1", capsys=capsys)
    assert code == 0 and "new-one" in out and "other-vm" not in out
    code, out, _ = run("audit", "--last", "1", capsys=capsys)
    assert code == 0 and "new-one" in out and "other-vm" not in out and "old-one" not in out
    code, out, _ = run("events", "--host", "alpha", capsys=capsys)
    assert code == 0 and "just now" in out and "long ago" not in out
    code, out, _ = run("events", "--since", "1h", "--json", capsys=capsys)
    assert code == 0 and "just now" in out and "long ago" not in out
    code, _, err = run("audit", "--host", "nosuch", capsys=capsys)
    assert code != 0 and "nosuch" in err


def test_the_console_log_rows_read_the_newest_of_the_history(tmp_path, monkeypatch):
    from kerub_tui.screens import rows as rows_module
    from kerub_tui.screens.overview import Overview

    monkeypatch.setattr(rows_module, "LOG_ROWS", 5)

    async def check() -> None:
        controller = Controller(tmp_path)
        await controller.start(connect_hosts=False)
        try:
            store = controller.db
            store.put_many([_audit(h) for h in range(20, 0, -1)])
            entries = store.list(AuditEntry)
            store.put_many([_event(h, host_id="h1" if h % 2 else "h2") for h in range(10, 0, -1)])
            store.put(_event(1, type="violation", target="vm9", message="ecc-memory: no ECC"))
            overview = Overview(controller)
            audit = rows_module.AuditRows(overview)
            assert list(audit.ids()) == [e.id for e in entries[-5:]]
            assert all(audit.cells(i) is not None for i in [e.id for e in entries[-5:]])
            host_events = rows_module.EventRows(overview, "h1")
            ids = list(host_events.ids())
            assert len(ids) == 5 and all(store.get(Event, i).host_id == "h1" for i in ids)
            assert overview.open_violations("vm9") == {"ecc-memory": "ecc-memory: no ECC"}
        finally:
            await controller.stop()

    asyncio.run(check())


# --- migration from the store of before ---------------------------------------------------------


def _old_layout(data_dir: Path, monkeypatch, docs) -> None:
    """A store as kerub-tui wrote it before the history: audit entries and events as document records."""
    with monkeypatch.context() as patch:
        patch.setattr(store_module, "HISTORY_KINDS", {})
        with Store.open(data_dir) as store:
            store.put_many(docs)
    (data_dir / HISTORY_FILE).unlink()
    for suffix in ("-wal", "-shm"):
        (data_dir / (HISTORY_FILE + suffix)).unlink(missing_ok=True)


def test_a_store_from_before_the_history_opens_with_its_audit_and_events(data_dir, monkeypatch, capsys):
    old = [_audit(2, target="before"), _event(2, type="violation", target="vm1", message="ecc-memory: no ECC"),
           _event(1, message="host came back")]
    _old_layout(data_dir, monkeypatch, [*old, Settings()])
    # read-only first: nothing is moved, everything shows
    with Store.open(data_dir, readonly=True) as store:
        assert [e.target for e in store.list(AuditEntry)] == ["before"]
        assert store.count(Event) == 2 and store.history.open_violations() == {
            "vm1": {"ecc-memory": "ecc-memory: no ECC"}}
    assert not (data_dir / HISTORY_FILE).exists()
    with Store.open(data_dir) as store:  # the writer moves them
        assert sorted(e.id for e in store.history_documents()) == sorted(d.id for d in old)
        assert store.get(Settings, "settings") is not None
        assert store.history.open_violations() == {"vm1": {"ecc-memory": "ecc-memory: no ECC"}}
    with Store.open(data_dir, readonly=True) as store:
        assert store.unreadable == {} and store.damage == []
        assert not any(k.startswith("doc/audit") or k.startswith("doc/event") for k in store._crcs)
    code, out, _ = run("audit", capsys=capsys)
    assert code == 0 and "before" in out
    code, out, _ = run("events", capsys=capsys)
    assert code == 0 and "host came back" in out and "no ECC" in out


def test_a_migration_cut_short_is_finished_without_doubles(tmp_path, monkeypatch):
    old = [_audit(3), _event(2)]
    _old_layout(tmp_path, monkeypatch, old)
    # killed after the history took them and before the records went: both hold them
    with History.open(tmp_path) as history:
        history.append(old)
    with Store.open(tmp_path) as store:
        assert store.count(AuditEntry) == 1 and store.count(Event) == 1
    with Store.open(tmp_path) as store:
        assert store.count(AuditEntry) == 1 and store.count(Event) == 1


# --- readers ------------------------------------------------------------------------------------


def test_a_read_only_reader_sees_what_the_writer_appends_while_it_runs(tmp_path):
    with Store.open(tmp_path) as writer:
        writer.put(_audit(1))
        with Store.open(tmp_path, readonly=True) as reader:
            writer.put(_audit(0))
            assert reader.count(AuditEntry) == 2  # read from the file, not a snapshot
            with pytest.raises(StoreError):
                reader.put(_audit(0))
        with pytest.raises(HistoryError):
            History.open(tmp_path, readonly=True).append([_audit(0)])


def test_an_attached_mirror_reads_the_owners_history(tmp_path):
    with Store.open(tmp_path) as owner:
        entry = owner.put(_audit(1))
        mirror = Store.mirror(tmp_path, list(owner.all_documents()))
        try:
            later = owner.put(_event(0))
            mirror.apply("event", later.id, later)  # the socket's change: shown, not held
            assert mirror.get(AuditEntry, entry.id) == entry and mirror.list(Event) == [later]
            assert "event" not in mirror._docs
        finally:
            mirror.close()


# --- a killed writer ----------------------------------------------------------------------------

WRITER = r"""
import sys
from kerub_tui.core import models as m
from kerub_tui.core.store import Store

store = Store.open(sys.argv[1])
start = store.count(m.AuditEntry)
for n in range(start, start + 1000000):
    with store.transaction():
        store.put(m.AuditEntry(id=f"a{n:07d}", action="step", target="x" * 500, host_id=f"h{n % 7}"))
        store.put(m.Event(id=f"e{n:07d}", type="host-up", message="y" * 500, host_id=f"h{n % 7}"))
    print(n, flush=True)
"""


def test_a_writer_killed_mid_append_loses_nothing_committed(tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    data = tmp_path / "data"
    last = -1
    for round_ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(data)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        committed = []
        for line in proc.stdout:  # wait for some commits, then kill it mid-stream
            committed.append(int(line))
            if len(committed) >= 20 + 7 * round_:
                break
        proc.send_signal(signal.SIGKILL)
        rest, _ = proc.communicate()
        committed += [int(n) for n in rest.split()]
        last = committed[-1]
        with Store.open(data) as store:
            assert store.history.check() == []
            audit = store.list(AuditEntry)
            events = store.list(Event)
            # everything acknowledged is there, whole; at most the one in flight more, never half of one
            assert len(audit) == len(events) and last + 1 <= len(audit) <= last + 2
            assert [a.id for a in audit] == [f"a{n:07d}" for n in range(len(audit))]
            assert all(a.target == "x" * 500 for a in audit)
            assert store.history.query("event", host_id="h3") == [e for e in events if e.host_id == "h3"]


# --- kerub-tui check ----------------------------------------------------------------------------


def test_check_counts_the_history_and_finds_it_damaged(tmp_path):
    from kerub_tui.core.backup import check

    with Store.open(tmp_path) as store:
        store.put_many([_audit(1, target="t" * 300) for _ in range(300)] + [_event(1)])
    result = check(tmp_path)
    assert result.sound and "the history holds 300 audit entries and 1 events" in result.lines[0]
    path = tmp_path / HISTORY_FILE
    size = path.stat().st_size
    with open(path, "r+b") as raw:  # pages in the middle overwritten (a failing disk)
        raw.seek(size // 2 // 4096 * 4096)
        raw.write(b"\xff" * 8192)
    result = check(tmp_path)
    assert not result.sound
    assert f"{path} is damaged" in result.lines[0] and "move" in result.lines[1]
