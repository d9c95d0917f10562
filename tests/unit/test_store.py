import asyncio
import json
import os
import stat
import subprocess
import sys

import pytest

from kerub_tui.core import models as m
from kerub_tui.core.store import ReadOnlyStore, Store, StoreError, StoreLocked


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "data")
    yield s
    s.close()


def test_crud_by_kind(store):
    host = store.put(m.Host(name="h1", address="127.0.0.2"))
    vm = store.put(m.VirtualMachine(name="web1"))
    assert store.get(m.Host, host.id) == host
    assert store.get("vm", vm.id) == vm
    assert store.list(m.Host) == [host]
    assert store.find_by_name(m.VirtualMachine, "web1") == vm
    assert store.delete(m.Host, host.id) is True
    assert store.delete(m.Host, host.id) is False
    assert store.get(m.Host, host.id) is None
    with pytest.raises(KeyError):
        store.list("nonsense")


def test_documents_survive_reopen(tmp_path):
    s = Store.open(tmp_path)
    docs = [m.VirtualMachine(name=f"vm{i}") for i in range(50)]
    s.put_many(docs)
    s.close()
    s = Store.open(tmp_path)
    assert sorted(d.id for d in s.list(m.VirtualMachine)) == sorted(d.id for d in docs)
    s.close()


def test_indexes_follow_dynamic_documents_and_rebuild_on_open(tmp_path):
    s = Store.open(tmp_path)
    s.put(m.VirtualMachineDynamic(id="vm1", host_id="h1", status="up"))
    s.put(m.VirtualMachineDynamic(id="vm2", host_id="h1", status="up"))
    s.put(m.VirtualStorageDeviceDynamic(id="d1", allocations=[
        {"type": "lvm", "host_id": "h1", "capability_id": "lvm:vg", "vg": "vg", "lv": "d1"},
        {"type": "lvm", "host_id": "h2", "capability_id": "lvm:vg", "vg": "vg", "lv": "d1"}]))
    assert s.vms_on_host("h1") == {"vm1", "vm2"}
    s.put(m.VirtualMachineDynamic(id="vm2", host_id="h2", status="migrating"))
    assert s.vms_on_host("h1") == {"vm1"} and s.vms_on_host("h2") == {"vm2"}
    assert s.host_of_vm("vm2") == "h2"
    assert s.disks_on_host("h2") == {"d1"}
    s.close()
    s = Store.open(tmp_path)
    assert s.vms_on_host("h2") == {"vm2"} and s.disks_on_host("h1") == {"d1"}
    s.delete(m.VirtualMachineDynamic, "vm2")
    s.put(m.VirtualStorageDeviceDynamic(id="d1", allocations=[]))
    assert s.vms_on_host("h2") == set() and s.disks_on_host("h1") == set()
    s.close()


def test_failed_transaction_changes_nothing(store):
    kept = store.put(m.VirtualMachine(name="kept"))
    with pytest.raises(RuntimeError), store.transaction():
        store.put(m.VirtualMachine(name="lost"))
        store.put(kept.evolve(cpus=8))
        store.put(m.VirtualMachineDynamic(id=kept.id, host_id="h1"))
        raise RuntimeError("boom")
    assert [v.name for v in store.list(m.VirtualMachine)] == ["kept"]
    assert store.get(m.VirtualMachine, kept.id).cpus == 1
    assert store.vms_on_host("h1") == set()
    store.close()
    reopened = Store.open(store.data_dir)
    assert [v.name for v in reopened.list(m.VirtualMachine)] == ["kept"]
    reopened.close()


async def test_change_feed_delivers_committed_changes_only(store):
    sub = store.feed.subscribe()
    vm = store.put(m.VirtualMachine(name="a"))
    with pytest.raises(ValueError), store.transaction():
        store.put(m.VirtualMachine(name="never"))
        raise ValueError
    store.put(vm)  # unchanged: no event
    store.put(vm.evolve(cpus=2))
    store.delete(m.VirtualMachine, vm.id)
    changes = [await asyncio.wait_for(sub.get(), 5) for _ in range(3)]
    assert sub.pending() == 0
    assert [(c.old is None, c.new is None) for c in changes] == [(True, False), (False, False), (False, True)]
    assert changes[1].old.cpus == 1 and changes[1].new.cpus == 2
    sub.close()


async def test_feed_filters_kinds_and_delivers_from_threads(store):
    sub = store.feed.subscribe(kinds=["vm"])
    await asyncio.to_thread(store.put, m.VirtualMachine(name="from-thread"))
    store.put(m.Event(type="x", message="ignored"))
    change = await asyncio.wait_for(sub.get(), 5)
    assert change.new.name == "from-thread"
    await asyncio.sleep(0)
    assert sub.pending() == 0
    sub.close()


def test_files_are_private(tmp_path):
    s = Store.open(tmp_path / "d")
    s.put(m.VirtualMachine(name="x"))
    s.close()
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700
    for name in os.listdir(tmp_path / "d"):
        assert stat.S_IMODE(os.stat(tmp_path / "d" / name).st_mode) & 0o077 == 0, name


def test_second_writer_gets_an_error_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from kerub_tui.core.store import Store; "
         "s=Store.open(sys.argv[1]); print('ready', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLocked) as error:
            Store.open(tmp_path)
        assert f"pid {holder.pid}" in str(error.value)
        readonly = Store.open(tmp_path, readonly=True)
        with pytest.raises(ReadOnlyStore):
            readonly.put(m.VirtualMachine(name="x"))
        readonly.close()
    finally:
        holder.kill()
        holder.wait()
    Store.open(tmp_path).close()  # the lock died with its holder


def test_export_import_is_an_exact_round_trip(tmp_path):
    src = Store.open(tmp_path / "a")
    src.put(m.Host(name="h1", address="127.0.0.2"))
    src.put(m.VirtualMachine(name="v", expectations=[{"type": "not-same-host", "vms": ["x"], "level": "wish"}]))
    src.put(m.Settings(auto_approve=[{"plan_kind": "ksm"}]))
    src.export_file(tmp_path / "export.json")
    assert stat.S_IMODE(os.stat(tmp_path / "export.json").st_mode) == 0o600
    dst = Store.open(tmp_path / "b")
    assert dst.import_file(tmp_path / "export.json") == 3
    assert list(dst.all_documents()) == list(src.all_documents())
    with pytest.raises(StoreError, match="already holds 3 documents"):
        dst.import_file(tmp_path / "export.json")
    assert dst.import_file(tmp_path / "export.json", replace=True) == 3
    dst.export_file(tmp_path / "again.json")
    first = json.loads((tmp_path / "export.json").read_text())
    second = json.loads((tmp_path / "again.json").read_text())
    assert first["documents"] == second["documents"]
    src.close()
    dst.close()


@pytest.mark.parametrize("content,message", [
    ("not json", "is not JSON"),
    ('{"format": "other"}', "not a kerub-tui export"),
    ('{"format": "kerub-tui-export", "schema_version": 99, "documents": []}', "newer kerub-tui"),
    ('{"format": "kerub-tui-export", "schema_version": 1, "documents": [{"kind": "vm", "name": "a b"}]}',
     "document 1 \\(vm 'a b'\\): VM name 'a b' contains a space"),
])
def test_bad_imports_are_refused_and_change_nothing(tmp_path, content, message):
    s = Store.open(tmp_path / "d")
    s.put(m.VirtualMachine(name="kept"))
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(StoreError, match=message):
        s.import_file(tmp_path / "bad.json", replace=True)
    assert [v.name for v in s.list(m.VirtualMachine)] == ["kept"]
    s.close()


def test_newer_schema_is_refused_clearly(tmp_path):
    import unqlite

    s = Store.open(tmp_path)
    s.close()
    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    db["meta/schema_version"] = "99"
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer kerub-tui \\(schema 99"):
        Store.open(tmp_path)
    with pytest.raises(StoreError, match="newer kerub-tui"):
        Store.open(tmp_path, readonly=True)


def test_older_schema_is_migrated(tmp_path, monkeypatch):
    import unqlite

    from kerub_tui.core import store as store_module

    # A store written by a kerub-tui from before checksums and manifests (plain JSON records).
    old = {"kind": "vm", "id": "v1", "schema_version": 0, "name": "old", "vcpus": 3}
    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    db["meta/schema_version"] = "0"
    db["doc/vm/v1"] = json.dumps(old)
    db.commit()
    db.close()

    def rename_vcpus(doc):
        doc = dict(doc)
        doc["cpus"] = doc.pop("vcpus")
        return doc

    monkeypatch.setitem(store_module.MIGRATIONS, 0, rename_vcpus)
    s = Store.open(tmp_path)
    assert s.get(m.VirtualMachine, "v1").cpus == 3
    assert s.schema_version == m.SCHEMA_VERSION
    s.close()
    monkeypatch.delitem(store_module.MIGRATIONS, 0)
    s = Store.open(tmp_path)  # written back: no migration needed any more
    assert s.get(m.VirtualMachine, "v1").cpus == 3
    s.close()


def test_a_record_written_behind_the_stores_back_is_damage_and_kept(tmp_path):
    import unqlite

    from kerub_tui.core.store import StoreDamaged

    s = Store.open(tmp_path)
    s.put(m.VirtualMachine(name="good"))
    s.close()
    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    db["doc/vm/broken"] = b"\xff{not json"
    db.commit()
    db.close()
    with pytest.raises(StoreDamaged, match=r"damaged records \(vm/broken\).*check --repair"):
        Store.open(tmp_path)
    readonly = Store.open(tmp_path, readonly=True)  # shows what reads, and says what does not
    assert [v.name for v in readonly.list(m.VirtualMachine)] == ["good"]
    assert "doc/vm/broken" in readonly.unreadable and readonly.damage
    readonly.close()
    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    assert db["doc/vm/broken"] == b"\xff{not json"  # nothing was written over it
    db.close()


def test_a_store_from_before_checksums_is_upgraded(tmp_path):
    import unqlite

    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    vm = m.VirtualMachine(name="old")
    db["meta/schema_version"] = str(m.SCHEMA_VERSION)
    db[f"doc/vm/{vm.id}"] = vm.model_dump_json()
    db.commit()
    db.close()
    s = Store.open(tmp_path)
    assert s.list(m.VirtualMachine) == [vm] and s.damage == []
    s.close()
    db = unqlite.UnQLite(str(tmp_path / "kerub.unqlite"))
    assert not db[f"doc/vm/{vm.id}"].startswith(b"{")  # written back with its checksum
    assert b"count" in db["meta/manifest"]
    db.close()
    assert (tmp_path / "kerub.unqlite.mark").exists()


def _rewrite_behind_the_stores_back(data_dir, key, body):
    """Put ``body`` in record ``key`` with a checksum that holds and the manifest kept true: only validating the
    document can tell it is wrong."""
    import unqlite

    from kerub_tui.core import integrity

    db = unqlite.UnQLite(str(data_dir / "kerub.unqlite"))
    old_crc = int(db[key][:8], 16)
    value = integrity.encode_record(key, body)
    manifest = integrity.decode_manifest(db[integrity.MANIFEST_KEY])
    db[key] = value
    db[integrity.MANIFEST_KEY] = integrity.encode_manifest(
        manifest.generation, manifest.count, (manifest.digest - old_crc + int(value[:8], 16)) % integrity.DIGEST_MOD)
    db.commit()
    db.close()


def test_a_document_that_does_not_validate_is_damage_when_first_read(tmp_path, caplog):
    """Documents are parsed when first read (an open validates nothing): one that does not validate is never
    handed over, the store says it is damaged as an open would, refuses every write, and repair restores it."""
    from kerub_tui.core import backup
    from kerub_tui.core.store import StoreDamaged

    good, bad = m.VirtualMachine(name="good", cpus=2), m.VirtualMachine(name="bad", cpus=2)
    s = Store.open(tmp_path)
    s.put_many([good, bad])
    s.backup()
    s.close()
    key = f"doc/vm/{bad.id}"
    _rewrite_behind_the_stores_back(tmp_path, key, bad.model_dump_json().replace('"cpus":2', '"cpus":-3'))

    s = Store.open(tmp_path)  # nothing is parsed yet: the open cannot tell
    try:
        assert s.damage == []
        assert s.get(m.VirtualMachine, good.id) == good
        assert s.get(m.VirtualMachine, bad.id) is None  # never handed over, to any reader
        assert s.list(m.VirtualMachine) == [good]
        assert s.damage == [f"1 records are not valid documents (vm/{bad.id})"]
        assert "cpus" in s.unreadable[key] and s.unreadable[key].startswith("invalid document: "), s.unreadable
        assert "check --repair" in caplog.text
        with pytest.raises(StoreDamaged, match=r"not valid documents \(vm/.*check --repair"):
            s.put(m.VirtualMachine(name="new"))
        with pytest.raises(StoreDamaged):
            s.delete(m.VirtualMachine, good.id)
        assert s.list(m.VirtualMachine) == [good]
    finally:
        s.close()

    # Read while a transaction runs: the transaction is refused whole.
    s = Store.open(tmp_path)
    try:
        with pytest.raises(StoreDamaged), s.transaction():
            s.put(m.VirtualMachine(name="other"))
            s.get(m.VirtualMachine, bad.id)
        assert s.find_by_name(m.VirtualMachine, "other") is None
    finally:
        s.close()

    readonly = Store.open(tmp_path, readonly=True)
    assert [doc.id for doc in readonly.all_documents()] == [good.id] and key in readonly.unreadable
    readonly.close()
    assert not backup.check(tmp_path).sound
    result = backup.repair(tmp_path)
    assert any("restored 1 documents" in line for line in result.lines), result.lines
    s = Store.open(tmp_path)
    try:
        assert sorted(s.list(m.VirtualMachine), key=lambda v: v.name) == [bad, good] and s.damage == []
    finally:
        s.close()


# --- commits off the event loop (the monitoring writer) ---------------------------------------------


class _HeldCommit:
    """The store's file handle with its commit held until the test lets it go (a commit in progress)."""

    def __init__(self, store):
        import threading

        self.db = store._db
        self.entered = threading.Event()
        self.release = threading.Event()
        store._db = self

    def commit(self):
        self.entered.set()
        assert self.release.wait(30), "the test never let the commit go"
        self.db.commit()

    def __getattr__(self, name):
        return getattr(self.db, name)


async def test_readers_on_the_loop_see_an_off_loop_flush_whole(tmp_path):
    """The flush is in memory and on the feed at once, as one step (as an on-loop flush was), committed after."""
    from kerub_tui.hosts.monitor import DocumentWriter

    store = Store.open(tmp_path)
    try:
        store.put_many([m.HostDynamic(id=f"h{i}", cpu_user=0.0) for i in range(500)])
        changes = []
        store.feed.add_listener(changes.append)
        held = _HeldCommit(store)
        writer = DocumentWriter(store, interval=0.0)
        for i in range(500):
            writer.put(m.HostDynamic(id=f"h{i}", cpu_user=1.0))
        assert {h.cpu_user for h in store.list(m.HostDynamic)} == {0.0}  # pending: not yet
        writer.flush()
        assert await asyncio.to_thread(held.entered.wait, 30)  # the worker thread is inside the commit
        # Meanwhile the loop runs and reads: the new state, all of it.
        for _ in range(20):
            assert {h.cpu_user for h in store.list(m.HostDynamic)} == {1.0}
            assert store.get(m.HostDynamic, "h499").cpu_user == 1.0
            await asyncio.sleep(0)
        # Told at once, as an on-loop flush did: a listener that reads on a change sees it.
        assert len(changes) == 500 and all(c.old.cpu_user == 0.0 and c.new.cpu_user == 1.0 for c in changes)
        held.release.set()
        await writer.drained()
        assert len(changes) == 500
        writer.close()
    finally:
        store.close()
    reopened = Store.open(tmp_path)
    assert {h.cpu_user for h in reopened.list(m.HostDynamic)} == {1.0}
    reopened.close()


async def test_a_flush_the_file_refuses_is_taken_back_whole_and_tried_again(tmp_path):
    from kerub_tui.core.store import StoreWriteError
    from kerub_tui.hosts.monitor import DocumentWriter

    store = Store.open(tmp_path)
    try:
        store.put_many([m.HostDynamic(id=f"h{i}", cpu_user=0.0) for i in range(50)])
        changes = []
        store.feed.add_listener(changes.append)
        db = store._db

        class Refusing:
            def commit(self):
                raise OSError(28, "No space left on device")

            def __getattr__(self, name):
                return getattr(db, name)

        store._db = Refusing()
        writer = DocumentWriter(store, interval=0.0)
        for i in range(50):
            writer.put(m.HostDynamic(id=f"h{i}", cpu_user=3.0))
        writer.flush()
        while writer._running is not None:
            await asyncio.sleep(0)
        # Taken back: memory as the file holds it, the feed told so, the documents pending again.
        assert {h.cpu_user for h in store.list(m.HostDynamic)} == {0.0}
        assert [(c.old.cpu_user, c.new.cpu_user) for c in changes] == [(0.0, 3.0)] * 50 + [(3.0, 0.0)] * 50
        assert writer.current(m.HostDynamic, "h3").cpu_user == 3.0
        with pytest.raises(StoreWriteError):
            store.put(m.VirtualMachine(name="x"))
        store._db = db
        await writer.drained()
        assert {h.cpu_user for h in store.list(m.HostDynamic)} == {3.0} and len(changes) == 150
        writer.close()
    finally:
        store.close()


def test_a_transaction_waits_for_a_staged_commit_and_comes_after_it(tmp_path):
    import threading

    store = Store.open(tmp_path)
    try:
        vm = m.VirtualMachine(name="vm")
        store.put(vm)
        held = _HeldCommit(store)
        staged = store.stage([("host-dynamic", f"h{i}", m.HostDynamic(id=f"h{i}", cpu_user=2.0)) for i in range(50)]
                             + [("vm", vm.id, vm.evolve(cpus=2))])
        worker = threading.Thread(target=store.commit_staged, args=(staged,))
        worker.start()
        assert held.entered.wait(30)
        changed = vm.evolve(cpus=3)  # made from what memory says (the staged version), as a step's update is
        writer = threading.Thread(target=store.put, args=(changed,))
        writer.start()
        writer.join(0.2)
        assert writer.is_alive()  # one writer at a time: it waits for the commit in progress
        held.release.set()
        worker.join(30)
        writer.join(30)
        assert store.get(m.HostDynamic, "h49").cpu_user == 2.0 and store.get(m.VirtualMachine, vm.id) == changed
    finally:
        store.close()
    reopened = Store.open(tmp_path)  # the file has them in that order: the transaction's version last
    assert reopened.count(m.HostDynamic) == 50 and reopened.get(m.VirtualMachine, vm.id) == changed
    assert reopened.damage == []
    reopened.close()
