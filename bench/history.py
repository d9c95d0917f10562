"""History benchmark (issue 15 items 4 and 5): a simulated year at 1,000 hosts — a million audit entries
and a million events — in kerub-tui's history, against the same entries in sqlite3 in the same run.

kerub-tui: a data dir whose store holds the fleet's settings and whose history (core/history.py) holds
the year, opened as the controller opens it (``Store.open``: the lock, the documents, the history, its
pruning). The peer: the obvious sqlite3 table of the same documents (kind, id, ISO time, JSON), indexed
by (kind, time), with the same synchronous setting. Both answer `audit --since 1h` with parsed documents.

Prints `name: value unit` lines and `ratio vs sqlite: x` (kerub-tui / sqlite: below 1 means kerub-tui is
faster or smaller). RSS is measured in a fresh process per side, after the open and the query.
HISTORY_BENCH_SCALE=0.01 runs a hundredth of the year (a quick look).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kerub_tui.core.history import HISTORY_FILE, History, micros
from kerub_tui.core.metrics import HOURS, METRICS_FILE, MINUTES, POINT, Metrics, Recorder, Ring
from kerub_tui.core.models import AuditEntry, Event, Settings, parse_document
from kerub_tui.core.store import Store

SCALE = float(os.environ.get("HISTORY_BENCH_SCALE", "1"))
HOSTS = 1000
VMS_PER_HOST = 10
PER_KIND = int(1_000_000 * SCALE)
BATCH = 50_000
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
YEAR = dt.timedelta(days=365)
ACTIONS = ("step run", "vm start", "vm stop", "vm update", "plan approve", "host rediscover")
EVENT_TYPES = ("host-up", "host-down", "host-unreachable", "parse-error", "facts-current", "discovery-problem")


def host_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def vm_id(i: int) -> str:
    return f"00000000-0000-4000-9000-{i:012d}"


def iso(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def rows(kind: str, start: int, count: int) -> list[tuple[str, int, str, str, str, str]]:
    """Entries start..start+count of a kind, spread evenly over the year up to now, as stored rows: (id, µs,
    host, subject, JSON, ISO time). The JSON is what ``model_dump_json`` writes (``check_rows`` proves it)
    but made from a template: a million pydantic objects would only time pydantic."""
    step_us = YEAR // dt.timedelta(microseconds=1) // PER_KIND
    first_us = micros(NOW - YEAR)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    out = []
    for n in range(start, start + count):
        at = first_us + step_us * n + step_us // 2
        when = iso(epoch + dt.timedelta(microseconds=at))
        host = n % HOSTS
        vm = host * VMS_PER_HOST + n % VMS_PER_HOST
        if kind == "audit":
            doc_id = f"a{n:09d}"
            body = (f'{{"kind":"audit","id":"{doc_id}","schema_version":1,"time":"{when}","os_user":"kerub",'
                    f'"action":"{ACTIONS[n % 6]}","target":"vm{vm}","outcome":"ok","host_id":"{host_id(host)}",'
                    f'"command":"virsh start vm{vm}","exit_code":0,"duration_seconds":0.4,"output_tail":"",'
                    f'"plan_id":null,"vm_id":"{vm_id(vm)}"}}')
        else:
            doc_id = f"e{n:09d}"
            body = (f'{{"kind":"event","id":"{doc_id}","schema_version":1,"time":"{when}",'
                    f'"type":"{EVENT_TYPES[n % 6]}","severity":"info","host_id":"{host_id(host)}",'
                    f'"target":"{vm_id(vm)}","message":"host{host}: news {n}"}}')
        out.append((doc_id, at, host_id(host), vm_id(vm), body, when))
    return out


def check_rows() -> None:
    """The template's JSON is a valid document, the same as pydantic's own."""
    for kind, cls in (("audit", AuditEntry), ("event", Event)):
        body = rows(kind, 7, 1)[0][4]
        doc = cls.model_validate_json(body)
        assert cls.model_validate_json(doc.model_dump_json()) == doc


def documents(kind: str, start: int, count: int) -> list:
    """The same entries as documents (what the controller appends)."""
    cls = AuditEntry if kind == "audit" else Event
    return [cls.model_validate_json(row[4]) for row in rows(kind, start, count)]


class SqlitePeer:
    """The peer: one table of history documents, indexed by (kind, time); WAL and synchronous as kerub-tui's."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS docs (kind TEXT, id TEXT PRIMARY KEY, time TEXT, body TEXT)")
        self.db.execute("CREATE INDEX IF NOT EXISTS docs_time ON docs (kind, time)")

    def load(self, kind: str, batch: list) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", [(kind, r[0], r[5], r[4]) for r in batch])
        self.db.execute("COMMIT")

    def append(self, docs) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)",
                            [(d.kind, d.id, iso(d.time), d.model_dump_json()) for d in docs])
        self.db.execute("COMMIT")

    def since(self, kind: str, when: dt.datetime) -> list:
        rows = self.db.execute("SELECT body FROM docs WHERE kind = ? AND time >= ? ORDER BY time",
                               (kind, iso(when)))
        return [parse_document(body) for (body,) in rows]

    def close(self) -> None:
        self.db.close()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_of(fn, runs: int = 15) -> float:
    return statistics.median(timed(fn) for _ in range(runs))


def build(data_dir: Path, peer_path: Path) -> dict[str, float]:
    """The year, loaded into the history's own tables (the rows ``History.append`` writes) and the peer's."""
    with Store.open(data_dir) as store:  # a year of both kinds kept (the defaults would prune events to 90 days)
        store.put(Settings(history={"audit_days": 366, "event_days": 366}))
    history = History.open(data_dir)
    peer = SqlitePeer(peer_path)
    kerub_s = peer_s = 0.0
    for kind in ("audit", "event"):
        for start in range(0, PER_KIND, BATCH):
            batch = rows(kind, start, min(BATCH, PER_KIND - start))

            def load(kind: str = kind, batch: list = batch) -> None:
                with history._tx() as db:
                    db.executemany(f"INSERT INTO {kind} (id, time, host_id, subject, body) VALUES (?, ?, ?, ?, ?)",
                                   [r[:5] for r in batch])

            kerub_s += timed(load)
            peer_s += timed(lambda kind=kind, batch=batch: peer.load(kind, batch))
    history.close()
    peer.close()
    return {"kerub": kerub_s, "peer": peer_s}


RSS_SCRIPT = r"""
import datetime as dt, sys, time
sys.path.insert(0, sys.argv[3])
from kerub_tui.core.models import parse_document
from kerub_tui.core.store import Store
import bench.history as bh

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
before = rss()
since = dt.datetime.fromisoformat(sys.argv[4])
if sys.argv[1] == "kerub":
    store = Store.open(sys.argv[2])
    got = store.history.query("audit", since=since)
else:
    peer = bh.SqlitePeer(sys.argv[2])
    got = peer.since("audit", since)
assert got, "nothing in the last hour"
print(rss(), rss() - before, len(got))
"""


def rss_of(side: str, path: Path, since: dt.datetime) -> tuple[int, int, int]:
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, side, str(path), root, since.isoformat()],
                         capture_output=True, text=True, check=True, timeout=600).stdout.split()
    return int(out[0]), int(out[1]), int(out[2])


METRIC_HOSTS = max(10, int(HOSTS * SCALE))


def metric_values(host: int, at: int, step: int) -> tuple[float, float, float, float]:
    """The point of a host at ``at`` (the same in both files): CPU %, its max, memory, its max."""
    i = at // step
    cpu = float((host + i) % 100)
    memory = float(2**30 + ((host * 31 + i) % 1000) * 2**20)
    return cpu, cpu + 1.0, memory, memory + 2**20


def build_metrics(data_dir: Path, peer_path: Path, now: int) -> dict[str, float]:
    """A year of consolidated metrics at METRIC_HOSTS hosts: every hour of the last 365 days and every minute
    of the last day, in the metrics file's rows (what ``Recorder`` writes) and in the peer's obvious table:
    a row per host and point, indexed by (host, step, time)."""
    Recorder(data_dir).close()  # the schema
    db = sqlite3.connect(data_dir / METRICS_FILE, isolation_level=None)
    peer = sqlite3.connect(peer_path, isolation_level=None)
    peer.execute("PRAGMA journal_mode=WAL")
    peer.execute("PRAGMA synchronous=NORMAL")
    peer.execute("CREATE TABLE m (host TEXT, step INTEGER, time INTEGER, cpu REAL, cpu_max REAL, memory REAL, "
                 "memory_max REAL)")
    peer.execute("CREATE INDEX m_host ON m (host, step, time)")
    kerub_s = peer_s = 0.0
    for ring, seconds in ((HOURS, 365 * 86_400), (MINUTES, 86_400)):
        first, end = (now - seconds) // ring.step * ring.step, now // ring.step * ring.step
        for host in range(METRIC_HOSTS):
            blocks: dict[int, bytearray] = {}
            points = []
            for at in range(first, end, ring.step):
                values = metric_values(host, at, ring.step)
                block = blocks.setdefault(at // ring.span, bytearray(POINT.pack(*(float("nan"),) * 4) * ring.points))
                POINT.pack_into(block, (at % ring.span) // ring.step * POINT.size, *values)
                points.append((host_id(host), ring.step, at, *values))
            rows = [(host + 1, b % ring.keep, b, bytes(data)) for b, data in blocks.items()]

            def load(rows: list = rows, host: int = host, ring: Ring = ring) -> None:
                db.execute("BEGIN")
                db.execute("INSERT OR IGNORE INTO series (id, kind, key) VALUES (?, 'host', ?)",
                           (host + 1, host_id(host)))
                db.executemany(f"INSERT OR REPLACE INTO {ring.table} VALUES (?, ?, ?, ?)", rows)
                db.execute("COMMIT")

            def peer_load(points: list = points) -> None:
                peer.execute("BEGIN")
                peer.executemany("INSERT INTO m VALUES (?, ?, ?, ?, ?, ?, ?)", points)
                peer.execute("COMMIT")

            kerub_s += timed(load)
            peer_s += timed(peer_load)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    peer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    peer.close()
    return {"kerub": kerub_s, "peer": peer_s}


def metrics_figures(root: Path) -> dict[str, tuple[float, float, str]]:
    data_dir, peer_path = root / "metrics-data", root / "metrics-peer.sqlite"
    data_dir.mkdir(mode=0o700)
    now = int(time.time())
    built = build_metrics(data_dir, peer_path, now)
    print(f"metrics: a year at {METRIC_HOSTS} hosts (8,760 hourly and 1,440 minute points each, average and "
          f"maximum of CPU and memory)")
    print(f"metrics load of the year: {built['kerub']:.1f} s")
    print(f"sqlite load of the year (a row per point): {built['peer']:.1f} s")
    figures: dict[str, tuple[float, float, str]] = {}
    figures["metrics file size"] = (sum(p.stat().st_size for p in data_dir.glob(METRICS_FILE + "*")) / 2**20,
                                    sum(p.stat().st_size for p in root.glob("metrics-peer.sqlite*")) / 2**20, "MiB")
    host = host_id(METRIC_HOSTS // 2)
    when = dt.datetime.fromtimestamp(now, dt.UTC)
    peer = sqlite3.connect(f"{peer_path.as_uri()}?mode=ro", uri=True)
    for name, seconds, ring in (("a host's 30-day graph query", 30 * 86_400, HOURS),
                                ("a host's 1-day graph query", 86_400, MINUTES)):
        range_name = "30d" if ring is HOURS else "1d"
        with Metrics(data_dir) as metrics:
            series = metrics.read("host", host, range_name, when)

            def peer_read(seconds: int = seconds, ring: Ring = ring) -> list:
                end = now // ring.step * ring.step + ring.step
                return peer.execute("SELECT time, cpu, cpu_max, memory, memory_max FROM m WHERE host = ? AND step = ? "
                                    "AND time >= ? AND time < ? ORDER BY time",
                                    (host, ring.step, end - seconds, end)).fetchall()

            known = [p.cpu for p in series.points if p.cpu is not None]
            assert known == [row[1] for row in peer_read()], (len(known), len(peer_read()))
            figures[name] = (median_of(lambda metrics=metrics, rn=range_name: metrics.read("host", host, rn, when))
                             * 1000, median_of(peer_read) * 1000, "ms")
    peer.close()
    return figures


def record_figures(root: Path) -> None:
    """What the monitoring writer's thread spends on metrics at METRIC_HOSTS hosts: a flush's samples (one
    per host) and the flush that closes a minute (a minute row and an hour row per host, one transaction)."""
    data_dir = root / "metrics-record"
    data_dir.mkdir(mode=0o700)
    recorder = Recorder(data_dir)
    start = (int(time.time()) // 60 - 2) * 60
    flushes = []
    for second in range(60):
        samples = [("host", host_id(h), start + second, (float((h + second) % 100), 2.0**30))
                   for h in range(METRIC_HOSTS)]
        flushes.append(timed(lambda samples=samples, second=second: recorder.observe(samples, start + second)))
    samples = [("host", host_id(h), start + 60, (1.0, 2.0**30)) for h in range(METRIC_HOSTS)]
    closing = timed(lambda: recorder.observe(samples, start + 60))
    assert recorder.written == METRIC_HOSTS, recorder.written
    recorder.close()
    print(f"metrics record, a flush of {METRIC_HOSTS} host samples (writer thread, median): "
          f"{statistics.median(flushes[1:]) * 1000:.2f} ms")
    print(f"metrics record, the flush closing a minute ({METRIC_HOSTS} minute and hour rows): {closing * 1000:.2f} ms")


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="kerub-bench-history-"))
    data_dir, peer_path = root / "data", root / "peer.sqlite"
    try:
        check_rows()
        built = build(data_dir, peer_path)
        print(f"history entries: {PER_KIND} audit + {PER_KIND} events over 365 days at {HOSTS} hosts")
        print(f"history load of the year (batches of {BATCH}): {built['kerub']:.1f} s")
        print(f"sqlite load of the year (batches of {BATCH}): {built['peer']:.1f} s")
        size = sum(p.stat().st_size for p in data_dir.glob(HISTORY_FILE + "*"))
        peer_size = sum(p.stat().st_size for p in root.glob("peer.sqlite*"))
        figures: dict[str, tuple[float, float, str]] = {
            "file size": (size / 2**20, peer_size / 2**20, "MiB")}

        reopen = median_of(lambda: Store.open(data_dir).close(), runs=5)
        peer_reopen = median_of(lambda: SqlitePeer(peer_path).close(), runs=5)
        figures["reopen with a year of history"] = (reopen * 1000, peer_reopen * 1000, "ms")
        # The history's own part of it (the rest is the documents' store, bench/store.py's figure).
        figures["history file open alone"] = (median_of(lambda: History.open(data_dir).close(), runs=5) * 1000,
                                              peer_reopen * 1000, "ms")

        since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
        rss, grown, hour = rss_of("kerub", data_dir, since)
        peer_rss, peer_grown, peer_hour = rss_of("sqlite", peer_path, since)
        assert hour == peer_hour, (hour, peer_hour)
        figures["RSS after open and audit --since 1h"] = (rss / 2**20, peer_rss / 2**20, "MiB")
        figures["RSS grown by open and audit --since 1h"] = (grown / 2**20, peer_grown / 2**20, "MiB")

        store = Store.open(data_dir, readonly=True)
        peer = SqlitePeer(peer_path)
        assert len(store.history.query("audit", since=since)) == len(peer.since("audit", since)) == hour
        figures["audit --since 1h query"] = (median_of(lambda: store.history.query("audit", since=since)) * 1000,
                                             median_of(lambda: peer.since("audit", since)) * 1000, "ms")
        month = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        host = host_id(HOSTS // 2)

        def peer_host_month() -> list:  # the peer has no host index: its time index, then the host in JSON
            rows = peer.db.execute("SELECT body FROM docs WHERE kind = 'event' AND time >= ? "
                                   "AND json_extract(body, '$.host_id') = ? ORDER BY time", (month.isoformat(), host))
            return [parse_document(b) for (b,) in rows]

        assert len(store.history.query("event", since=month, host_id=host)) == len(peer_host_month())
        figures["a host's events of 30 days query"] = (
            median_of(lambda: store.history.query("event", since=month, host_id=host)) * 1000,
            median_of(peer_host_month, runs=3) * 1000, "ms")

        def peer_newest() -> list:
            rows = peer.db.execute("SELECT body FROM docs WHERE kind = 'audit' ORDER BY time DESC LIMIT 2000")
            return [parse_document(b) for (b,) in rows][::-1]

        figures["console audit view load (newest 2,000)"] = (
            median_of(lambda: store.history.query("audit", limit=2000), runs=5) * 1000,
            median_of(peer_newest, runs=5) * 1000, "ms")
        store.close()
        peer.close()

        # One admin action at a time, as the controller writes them (a transaction each, durable).
        with Store.open(data_dir) as store:
            one = documents("audit", PER_KIND, 200)
            append = timed(lambda: [store.put(e) for e in one]) / len(one)
            many = documents("event", PER_KIND, 10_000)
            append_many = timed(lambda: store.put_many(many))
        peer = SqlitePeer(peer_path)
        more = documents("audit", PER_KIND + 200, 200)
        peer_append = timed(lambda: [peer.append([e]) for e in more]) / len(more)
        peer_many = documents("event", PER_KIND + 10_000, 10_000)
        peer_append_many = timed(lambda: peer.append(peer_many))
        peer.close()
        figures["append one audit entry (durable)"] = (append * 1000, peer_append * 1000, "ms")
        figures["append 10,000 events in one transaction"] = (append_many * 1000, peer_append_many * 1000, "ms")

        with Store.open(data_dir) as store:
            store.put(Settings(history={"audit_days": 365, "event_days": 90}))
            pruned = timed(lambda: store.prune_history())
        print(f"history prune of events to the default 90 days (once): {pruned:.2f} s")

        record_figures(root)
        figures.update(metrics_figures(root))
        for name, (mine, theirs, unit) in figures.items():
            print(f"history {name}: {mine:.2f} {unit}")
            print(f"sqlite {name}: {theirs:.2f} {unit}")
            print(f"history {name} ratio vs sqlite: {mine / theirs:.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
