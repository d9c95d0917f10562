"""Store benchmark: the UnQLite document store against sqlite3 (stdlib, JSON documents in a table).

Both sides store the same pydantic documents serialised the same way, so the figures compare the
engines and the store's bookkeeping, not the serialiser. Prints `name: value unit` lines and
`ratio vs sqlite: x` (kerub-tui time / sqlite time: below 1 means kerub-tui is faster).
Note: the kerub-tui store serves reads from memory (documents are loaded on open); its reopen
figure is where that cost is paid.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core.models import VirtualMachine, parse_document  # noqa: E402
from kerub_tui.core.store import Store  # noqa: E402

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
