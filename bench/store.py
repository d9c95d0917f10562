"""Store benchmark: the UnQLite document store against sqlite3 (stdlib, JSON documents in a table).

Both sides store the same pydantic documents serialised the same way, so the figures compare the
engines and the store's bookkeeping, not the serialiser. Prints `name: value unit` lines and
`ratio vs sqlite: x` (kerub-tui time / sqlite time: below 1 means kerub-tui is faster).
Note: the kerub-tui store serves reads from memory (documents are loaded on open); its reopen
figure is where that cost is paid. The verify figures are the damage detection at open (a forked
child reads every record, each checksum and the manifest are checked) against sqlite's
`PRAGMA integrity_check`; "before"/"after" is a full open and read without and with it.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core import integrity
from kerub_tui.core.models import VirtualMachine, parse_document
from kerub_tui.core.store import Store

N = 10_000


def make_docs(n: int) -> list[VirtualMachine]:
    return [
        VirtualMachine(id=f"vm-{i:05d}", name=f"vm{i}", cpus=1 + i % 8, memory_min=512 << 20, memory_max=1 << 30,
                       expectations=[{"type": "availability", "up": True, "level": "dealbreaker"},
                                     {"type": "cpu-architecture", "architecture": "x86_64"}])
        for i in range(n)
    ]


class SqliteStore:
    """The peer: the obvious sqlite3 document table, WAL off (defaults), one row per document."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (kind TEXT, id TEXT, body TEXT, PRIMARY KEY (kind, id))")

    def put(self, doc) -> None:
        self.db.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)", (doc.kind, doc.id, doc.model_dump_json()))

    def get(self, kind: str, doc_id: str):
        row = self.db.execute("SELECT body FROM docs WHERE kind = ? AND id = ?", (kind, doc_id)).fetchone()
        return parse_document(row[0]) if row else None

    def list(self, kind: str):
        return [parse_document(r[0]) for r in self.db.execute("SELECT body FROM docs WHERE kind = ?", (kind,))]

    def close(self) -> None:
        self.db.close()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_kerub(root: Path, docs, *, each: bool) -> dict[str, float]:
    out = {}
    store = Store.open(root / "one-tx")

    def one_tx():
        with store.transaction():
            for d in docs:
                store.put(d)

    out["write 10k, one transaction"] = timed(one_tx)
    store.close()
    store = Store.open(root / "each-tx")
    if each:
        out["write 10k, a transaction each"] = timed(lambda: [store.put(d) for d in docs])
    else:  # the same documents, as in the file the reopen reads, without 10k commits
        store.put_many(docs)
    ids = [d.id for d in docs]
    out["10k point reads"] = timed(lambda: [store.get("vm", i) for i in ids])
    out["list-by-kind of 10k"] = timed(lambda: store.list("vm"))
    store.close()
    holder = []
    out["reopen with 10k documents"] = timed(lambda: holder.append(Store.open(root / "each-tx")))
    assert holder[0].count("vm") == N
    holder[0].close()
    path = root / "each-tx" / "kerub.unqlite"

    def verify_only():
        raw = integrity.read_records(path, writable=False)
        reading = integrity.verify(raw, existed=True, file_size=path.stat().st_size,
                                   page_size=integrity.page_size_of(path))
        assert not reading.damaged and len(reading.bodies) == N

    out["verify 10k documents"] = timed(verify_only)

    def unverified_load():
        # What opening cost before checksums: the records read in-process, parsed, nothing verified.
        import unqlite

        db = unqlite.UnQLite(str(path), flags=0x00000001)
        docs = [parse_document(json.loads(value[9:])) for key, value in db.items()
                if (key if isinstance(key, str) else key.decode()).startswith("doc/")]
        db.close()
        assert len(docs) == N

    out["open and read 10k documents, unverified (before)"] = timed(unverified_load)
    out["open and read 10k documents, verified (after)"] = timed(
        lambda: Store.open(root / "each-tx", readonly=True).close())
    return out


def bench_sqlite(root: Path, docs, *, each: bool) -> dict[str, float]:
    out = {}
    db = SqliteStore(root / "one-tx.sqlite")

    def one_tx():
        db.db.execute("BEGIN")
        for d in docs:
            db.put(d)
        db.db.execute("COMMIT")

    out["write 10k, one transaction"] = timed(one_tx)
    db.close()
    db = SqliteStore(root / "each-tx.sqlite")

    def each_tx():
        for d in docs:
            db.db.execute("BEGIN")
            db.put(d)
            db.db.execute("COMMIT")

    if each:
        out["write 10k, a transaction each"] = timed(each_tx)
    else:
        one_tx()
    ids = [d.id for d in docs]
    out["10k point reads"] = timed(lambda: [db.get("vm", i) for i in ids])
    out["list-by-kind of 10k"] = timed(lambda: db.list("vm"))
    db.close()
    holder = []
    out["reopen with 10k documents"] = timed(lambda: holder.append(SqliteStore(root / "each-tx.sqlite")))
    holder[0].close()

    def integrity_check():
        db = sqlite3.connect(root / "each-tx.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        db.close()

    out["verify 10k documents"] = timed(integrity_check)

    def read_all():
        db = SqliteStore(root / "each-tx.sqlite")
        assert len(db.list("vm")) == N
        db.close()

    out["open and read 10k documents, unverified (before)"] = timed(read_all)

    def check_and_read_all():
        integrity_check()
        read_all()

    out["open and read 10k documents, verified (after)"] = timed(check_and_read_all)
    return out


def bench_engines(root: Path, docs) -> dict[str, float]:
    """The engines alone, no store around them: the same 10k bodies and keys into UnQLite (one transaction,
    as the store's file handle does it) and into the sqlite table. The floor under the store's write figure."""
    from kerub_tui.core.unqlite_file import UnqliteFile

    bodies = [(f"doc/vm/{d.id}", integrity.encode_record(f"doc/vm/{d.id}", d.model_dump_json())) for d in docs]
    path = root / "raw.unqlite"
    db = UnqliteFile(str(path), 0x00000004)
    db.disable_autocommit()

    def unqlite_write():
        db.begin()
        for key, value in bodies:
            db.store(key, value)
        db.commit()

    out = {"engine alone, write 10k in one transaction": timed(unqlite_write)}
    db.close()
    sqlite = sqlite3.connect(root / "raw.sqlite", isolation_level=None)
    sqlite.execute("CREATE TABLE docs (kind TEXT, id TEXT, body TEXT, PRIMARY KEY (kind, id))")

    def sqlite_write():
        sqlite.execute("BEGIN")
        for key, value in bodies:
            sqlite.execute("INSERT OR REPLACE INTO docs VALUES (?, ?, ?)", ("vm", key, value))
        sqlite.execute("COMMIT")

    peer = {"engine alone, write 10k in one transaction": timed(sqlite_write)}
    sqlite.close()
    return {name: out[name] for name in out} | {f"peer:{name}": peer[name] for name in peer}


# --- the monitoring flush at 1,000 hosts ---------------------------------------------------------------

HOSTS = 1000
VMS_PER_HOST = 10


async def monitoring(data_dir: Path, *, off_loop: bool, seconds: float) -> dict[str, float]:
    """A 1,000-host controller's monitoring writes for ``seconds``: every host's HostDynamic changes each second
    (vmstat) and half the 10k VMs' VirtualMachineDynamic (domain statistics every 2 s), put into one
    DocumentWriter as the monitors do, spread over the second. Measured: the time the writer's work holds the
    event loop per second (its flush callbacks: on the loop, the whole transaction; off it, staging in memory and
    publishing what was committed), how late a 50 ms sleeper wakes (loop lag), and the commit off the loop.
    The documents are made beforehand, so the loop's other work is only the puts."""
    import asyncio

    from kerub_tui.core.models import HostDynamic, HostStatus, VirtualMachineDynamic, VmStatus
    from kerub_tui.hosts.monitor import DocumentWriter

    store = Store.open(data_dir)
    versions = []
    for flip in range(2):
        hosts = [HostDynamic(id=f"host-{h:04d}", status=HostStatus.up, cpu_user=float(h % 50 + flip),
                             cpu_idle=float(50 - h % 50), memory_free=(h + flip) << 20, memory_used=h << 22,
                             storage_free={"vg0": (h * 7 + flip) << 30}) for h in range(HOSTS)]
        vms = [VirtualMachineDynamic(id=f"vm-{h:04d}-{v}", host_id=f"host-{h:04d}", status=VmStatus.up,
                                     memory_used=(v + 1 + flip) << 28, cpu_percent=float((h + v + flip) % 90))
               for h in range(HOSTS) for v in range(VMS_PER_HOST)]
        versions.append((hosts, vms))
    store.put_many(versions[1][0] + versions[1][1])
    writer = DocumentWriter(store, interval=1.0, off_loop=off_loop)
    on_loop: list[float] = []
    on_loop_cpu: list[float] = []  # the loop thread's own CPU time in them: what a busy machine does not inflate
    commits: list[float] = []

    def timed_on_loop(fn):
        def wrapper(*args):
            started, cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args)
            finally:
                on_loop.append(time.perf_counter() - started)
                on_loop_cpu.append(time.thread_time() - cpu)
        return wrapper

    writer.flush = timed_on_loop(writer.flush)
    writer._committed = timed_on_loop(writer._committed)
    commit_staged = store.commit_staged

    def timed_commit(staged):
        started = time.perf_counter()
        try:
            return commit_staged(staged)
        finally:
            commits.append(time.perf_counter() - started)

    store.commit_staged = timed_commit
    lags: list[float] = []

    async def sleeper():
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - started - 0.05)

    ticks = 20  # each second's updates in 20 slices, as lines arrive from 1,000 hosts
    started = time.perf_counter()
    lag_task = asyncio.get_running_loop().create_task(sleeper())
    for second in range(int(seconds)):
        hosts = versions[second % 2][0]
        # each VM every other second (statistics every 2 s): half of them, the other half next second
        half = [vm for n, vm in enumerate(versions[(second // 2) % 2][1]) if n % 2 == second % 2]
        for tick in range(ticks):
            for doc in hosts[tick::ticks]:
                writer.put(doc)
            for doc in half[tick::ticks]:
                writer.put(doc)
            await asyncio.sleep(1 / ticks)
    elapsed = time.perf_counter() - started
    lag_task.cancel()
    await writer.drained()
    writer.close()
    store.close()
    lags.sort()
    commits.sort()
    return {
        "held_ms_per_s": sum(on_loop) / elapsed * 1000,
        "held_max_ms": max(on_loop, default=0.0) * 1000,
        "held_cpu_ms_per_s": sum(on_loop_cpu) / elapsed * 1000,
        "lag_p50_ms": lags[len(lags) // 2] * 1000,
        "lag_p99_ms": lags[min(len(lags) - 1, int(len(lags) * 0.99))] * 1000,
        "commit_p50_ms": commits[len(commits) // 2] * 1000 if commits else 0.0,
        "commit_p99_ms": commits[min(len(commits) - 1, int(len(commits) * 0.99))] * 1000 if commits else 0.0,
        "writes_per_s": writer.writes / elapsed,
    }


def print_monitoring(seconds: float, root: Path) -> None:
    import asyncio

    runs = {}
    for label, off_loop in (("off the loop", True), ("on the loop (before)", False)):
        runs[label] = asyncio.run(monitoring(root / ("off" if off_loop else "on"), off_loop=off_loop,
                                             seconds=seconds))
    off, on = runs["off the loop"], runs["on the loop (before)"]
    for label, r in runs.items():
        print(f"monitoring flush at {HOSTS} hosts, {label}: event loop held {r['held_ms_per_s']:.1f} ms per second "
              f"(its CPU {r['held_cpu_ms_per_s']:.1f} ms; longest {r['held_max_ms']:.1f} ms), "
              f"loop lag p50 {r['lag_p50_ms']:.1f} ms p99 {r['lag_p99_ms']:.1f} "
              f"ms, commit p50 {r['commit_p50_ms']:.1f} ms p99 {r['commit_p99_ms']:.1f} ms "
              f"({r['writes_per_s']:.0f} documents written per s)")
    print(f"monitoring flush loop held ratio vs on the loop: {off['held_ms_per_s'] / on['held_ms_per_s']:.2f}x")
    print(f"monitoring flush loop lag p99 ratio vs on the loop: {off['lag_p99_ms'] / max(on['lag_p99_ms'], 0.1):.2f}x")


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("store", "monitoring"), help="one part only")
    parser.add_argument("--seconds", type=float, default=10.0, help="monitoring window per side (default 10)")
    parser.add_argument("--each", action="store_true",
                        help="also a transaction per document (10k fsyncs each side: minutes on a slow disk)")
    args = parser.parse_args()
    docs = make_docs(N)
    root = Path(tempfile.mkdtemp(prefix="kerub-bench-store-"))
    try:
        if args.only != "monitoring":
            (root / "k").mkdir()
            (root / "s").mkdir()
            (root / "e").mkdir()
            kerub = bench_kerub(root / "k", docs, each=args.each)
            peer = bench_sqlite(root / "s", docs, each=args.each)
            engines = bench_engines(root / "e", docs)
            for name, seconds in kerub.items():
                print(f"store {name}: {seconds * 1000:.1f} ms")
                print(f"sqlite {name}: {peer[name] * 1000:.1f} ms")
                print(f"store {name} ratio vs sqlite: {seconds / peer[name]:.2f}x")
            name = "engine alone, write 10k in one transaction"
            print(f"unqlite {name}: {engines[name] * 1000:.1f} ms")
            print(f"sqlite {name}: {engines['peer:' + name] * 1000:.1f} ms")
            print(f"unqlite {name} ratio vs sqlite: {engines[name] / engines['peer:' + name]:.2f}x "
                  "(the floor under the store's write ratio)")
        if args.only != "store":
            print_monitoring(args.seconds, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
