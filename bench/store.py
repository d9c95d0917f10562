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


def bench_kerub(root: Path, docs) -> dict[str, float]:
    out = {}
    store = Store.open(root / "one-tx")

    def one_tx():
        with store.transaction():
            for d in docs:
                store.put(d)

    out["write 10k, one transaction"] = timed(one_tx)
    store.close()
    store = Store.open(root / "each-tx")
    out["write 10k, a transaction each"] = timed(lambda: [store.put(d) for d in docs])
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


def bench_sqlite(root: Path, docs) -> dict[str, float]:
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

    out["write 10k, a transaction each"] = timed(each_tx)
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


def main() -> None:
    docs = make_docs(N)
    root = Path(tempfile.mkdtemp(prefix="kerub-bench-store-"))
    try:
        (root / "k").mkdir()
        (root / "s").mkdir()
        kerub = bench_kerub(root / "k", docs)
        peer = bench_sqlite(root / "s", docs)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for name, seconds in kerub.items():
        print(f"store {name}: {seconds * 1000:.1f} ms")
        print(f"sqlite {name}: {peer[name] * 1000:.1f} ms")
        print(f"store {name} ratio vs sqlite: {seconds / peer[name]:.2f}x")


if __name__ == "__main__":
    main()
