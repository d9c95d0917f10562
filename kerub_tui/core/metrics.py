"""Metrics history: each host's and VM's CPU and memory over time, RRD-style (like rrdtool and Proxmox).

Kept at two resolutions, each a round robin of fixed size per series (a host or a VM), so the file is
bounded by construction (ARCHITECTURE.md §4, "Metrics"):

- **minutes**: a point per minute for the last day (rows of an hour's 60 points, 26 rows kept);
- **hours**: a point per hour for the last year (rows of a day's 24 points, 368 rows kept).

A point holds, per metric (CPU percent, memory bytes used), the average and the maximum over its
interval. Consolidation: a value monitoring reported holds until the next one (a gauge) while the host
is up or the VM running, and not at all otherwise; a minute's average is the time-weighted mean of what
held during the part of the minute something held, its maximum the largest value that held; an hour's
average is the mean of its known minutes' averages, its maximum the largest of their maxima. A minute
nothing held in is a gap (NaN in the file, None when read), never a zero.

Written by the monitoring writer's worker thread (``Recorder.observe``, from ``DocumentWriter``), never
on the event loop: a minute is written when a sample from a later minute arrives (the writer's flushes
are driven by monitoring's own changes), the minute in progress at close. The file is
``metrics.sqlite`` in the data dir, sqlite in WAL mode: readers (the console, ``kerub-tui metrics``,
another process) read while the writer writes; each write is a transaction, so a process killed at
any point leaves every committed minute. Only this module knows the layout.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import math
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from .models import Document, HostDynamic, HostStatus, VirtualMachineDynamic, VmStatus
from .paths import UnsafeDataDir, open_private

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.sqlite"
METRICS = ("cpu", "memory")  # CPU busy percent, memory used in bytes
# a point: cpu average, cpu maximum, memory average, memory maximum (float32; NaN = unknown)
POINT = struct.Struct("<4f")
NAN = float("nan")
MAX_HOLD = 86_400.0  # a value never holds longer than a day (a clock jump, a writer asleep): a gap instead
_FORMAT = "1"


@dataclass(frozen=True)
class Ring:
    """One resolution: a point every ``step`` seconds, ``points`` of them a row, ``keep`` rows per series
    (row ``block`` is stored in slot ``block % keep``: a new block overwrites the one ``keep`` before)."""

    table: str
    step: int
    points: int
    keep: int

    @property
    def span(self) -> int:
        return self.step * self.points

    @property
    def holds(self) -> int:
        """Seconds of the past a ring always holds whole (its rows but the one being filled)."""
        return self.span * (self.keep - 1)


MINUTES = Ring("minute", 60, 60, 26)  # ≥ 25 hours
HOURS = Ring("hour", 3600, 24, 368)  # ≥ 367 days
RINGS = (MINUTES, HOURS)

# the time ranges the console and the command line offer: name -> (seconds, ring read)
RANGES: dict[str, tuple[int, Ring]] = {
    "1h": (3600, MINUTES),
    "1d": (86_400, MINUTES),
    "7d": (7 * 86_400, HOURS),
    "30d": (30 * 86_400, HOURS),
    "1y": (365 * 86_400, HOURS),
}
SERIES_KINDS = ("host", "vm")

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS series (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, "
    "UNIQUE (kind, key))",
    *(f"CREATE TABLE IF NOT EXISTS {ring.table} (series INTEGER NOT NULL, slot INTEGER NOT NULL, "
      f"block INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (series, slot)) WITHOUT ROWID" for ring in RINGS),
]


class MetricsError(Exception):
    """The metrics file cannot be read or written; the message says which and why."""


def _empty(ring: Ring) -> bytearray:
    return bytearray(POINT.pack(NAN, NAN, NAN, NAN) * ring.points)


def _finite(value: float | int | None) -> float:
    """A reported value, or NaN for none or one no graph can draw (hostile data is a gap)."""
    if value is None or isinstance(value, bool):
        return NAN
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return NAN
    return number if math.isfinite(number) and number >= 0 else NAN


def consolidate(points: Iterable[tuple[float, ...]]) -> tuple[float, float, float, float]:
    """A coarser point from finer ones: per metric the mean of the known averages, the largest maximum."""
    out: list[float] = []
    pts = list(points)
    for index in range(len(METRICS)):
        avgs = [p[2 * index] for p in pts if not math.isnan(p[2 * index])]
        maxes = [p[2 * index + 1] for p in pts if not math.isnan(p[2 * index + 1])]
        out.append(math.fsum(avgs) / len(avgs) if avgs else NAN)
        out.append(max(maxes) if maxes else NAN)
    return out[0], out[1], out[2], out[3]


# --- the writer's side ----------------------------------------------------------------------------


@dataclass
class _Series:
    """What the recorder knows of one series: the value holding now and the minute being filled."""

    id: int
    minute: int = -1  # the minute (seconds // 60) being accumulated; -1: none yet
    since: float = 0.0  # when ``values`` started holding
    values: tuple[float, ...] | None = None  # None: nothing holds (down, stopped, never seen)
    weighted: list[float] = field(default_factory=lambda: [0.0] * len(METRICS))
    covered: list[float] = field(default_factory=lambda: [0.0] * len(METRICS))
    peak: list[float] = field(default_factory=lambda: [NAN] * len(METRICS))

    def point(self) -> tuple[float, float, float, float]:
        out: list[float] = []
        for index in range(len(METRICS)):
            covered = self.covered[index]
            out.append(self.weighted[index] / covered if covered > 0 else NAN)
            out.append(self.peak[index] if covered > 0 else NAN)
        return out[0], out[1], out[2], out[3]

    def hold(self, until: float, closed: list[tuple[int, int, tuple[float, float, float, float]]]) -> None:
        """Integrate what holds from ``since`` to ``until``, closing each minute passed (into ``closed``)."""
        if until < self.since:
            until = self.since  # time went back: nothing to integrate, nothing lost
        if self.values is not None and until - self.since > MAX_HOLD:
            self.values = None  # held too long to believe: a gap from here
        while True:
            if self.minute < 0:
                self.minute = int(self.since // 60)
            end = (self.minute + 1) * 60.0
            stop = min(until, end)
            if self.values is not None and stop > self.since:
                for index, value in enumerate(self.values):
                    if not math.isnan(value):
                        self.weighted[index] += value * (stop - self.since)
                        self.covered[index] += stop - self.since
                        self.peak[index] = value if math.isnan(self.peak[index]) else max(self.peak[index], value)
            self.since = max(self.since, stop)
            if until < end:
                return
            if any(c > 0 for c in self.covered):
                closed.append((self.id, self.minute, self.point()))
            self.minute += 1
            self.weighted = [0.0] * len(METRICS)
            self.covered = [0.0] * len(METRICS)
            self.peak = [NAN] * len(METRICS)
            if self.values is None:  # nothing holds: jump to the minute of ``until``
                self.minute = int(until // 60)
                self.since = max(self.since, until)
                return

    def set(self, when: float, values: tuple[float, ...] | None) -> None:
        """From ``when`` on, ``values`` hold (None: nothing). A value counts in its minute's maximum at once."""
        self.values = values
        if values is None:
            return
        for index, value in enumerate(values):
            if not math.isnan(value):
                self.peak[index] = value if math.isnan(self.peak[index]) else max(self.peak[index], value)


Sample = tuple[str, str, float, tuple[float, float] | None]  # (kind, key, unix time, (cpu, memory) or None)


def sample_of(kind: str, doc_id: str, doc: Document | None, when: float) -> Sample | None:
    """The sample a monitored document written at ``when`` gives, or None for a document of another kind.
    A host not up, a VM not running (or a document deleted) is a sample of nothing holding."""
    if kind == HostDynamic.model_fields["kind"].default:
        if not isinstance(doc, HostDynamic) or doc.status is not HostStatus.up:
            return ("host", doc_id, when, None)
        cpu = 100.0 - doc.cpu_idle if doc.cpu_idle is not None else (
            None if doc.cpu_user is None else doc.cpu_user + (doc.cpu_system or 0.0))
        return ("host", doc_id, when, (_finite(cpu), _finite(doc.memory_used)))
    if kind == VirtualMachineDynamic.model_fields["kind"].default:
        if not isinstance(doc, VirtualMachineDynamic) or doc.status is VmStatus.down:
            return ("vm", doc_id, when, None)
        return ("vm", doc_id, when, (_finite(doc.cpu_percent), _finite(doc.memory_used)))
    return None


class Recorder:
    """The writer of the metrics file (one per data dir: the controller's monitoring writer). Call
    ``observe`` from one thread (the writer's worker); ``close`` when that thread is done."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / METRICS_FILE
        self._db: sqlite3.Connection | None = None
        self._series: dict[tuple[str, str], _Series] = {}
        self._blocks: dict[tuple[str, int], tuple[int, bytearray]] = {}
        self._swept = -1  # the minute every series was last brought up to
        self._pruned_day = -1
        self.written = 0  # minutes written (tests, bench)
        try:
            os.close(open_private(self.path, os.O_RDWR | os.O_CREAT))  # 0600, never through a symlink
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # WAL: a killed process loses no commit
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("BEGIN IMMEDIATE")
            for stmt in _SCHEMA:
                db.execute(stmt)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (_FORMAT,))
            db.execute("COMMIT")
        except (sqlite3.Error, OSError, UnsafeDataDir) as error:  # a planted file: refused, never followed
            self.close()
            raise MetricsError(f"cannot open {self.path}: {error}") from None

    def close(self, when: float | None = None) -> None:
        """Write the minute in progress of every series (as far as it went: up to ``when``), then close."""
        if self._db is None:
            return
        if when is not None:
            with contextlib.suppress(MetricsError):
                closed: list[tuple[int, int, tuple[float, float, float, float]]] = []
                for series in self._series.values():
                    series.hold(when, closed)
                    if any(c > 0 for c in series.covered):
                        closed.append((series.id, series.minute, series.point()))
                self._write(closed)
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db = None

    def _series_of(self, kind: str, key: str) -> _Series:
        series = self._series.get((kind, key))
        if series is None:
            db = self._conn
            db.execute("INSERT OR IGNORE INTO series (kind, key) VALUES (?, ?)", (kind, key))
            (series_id,) = db.execute("SELECT id FROM series WHERE kind = ? AND key = ?", (kind, key)).fetchone()
            series = self._series[(kind, key)] = _Series(int(series_id))
        return series

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise MetricsError(f"the metrics file {self.path} is closed")
        return self._db

    def observe(self, samples: Iterable[Sample], now: float) -> int:
        """Take samples (each at its own time, in order), then close every series' minutes before ``now``'s
        (once a minute, each series' held value carried on). Writes what closed in one transaction;
        returns how many minutes that was."""
        closed: list[tuple[int, int, tuple[float, float, float, float]]] = []
        try:
            for kind, key, when, values in samples:
                series = self._series_of(kind, key)
                if series.minute < 0:
                    series.since = when
                series.hold(when, closed)
                held = None if values is None else tuple(_finite(v) for v in values)
                series.set(when, held)
            minute = int(now // 60)
            if minute > self._swept:
                self._swept = minute
                for series in self._series.values():
                    series.hold(now, closed)
            return self._write(closed)
        except sqlite3.Error as error:
            raise MetricsError(f"cannot write to {self.path}: {error}") from None

    def _block(self, ring: Ring, series_id: int, block: int) -> bytearray:
        cached = self._blocks.get((ring.table, series_id))
        if cached is not None and cached[0] == block:
            return cached[1]
        row = self._conn.execute(f"SELECT block, data FROM {ring.table} WHERE series = ? AND slot = ?",
                                 (series_id, block % ring.keep)).fetchone()
        data = bytearray(row[1]) if row is not None and row[0] == block and len(row[1]) == len(_empty(ring)) \
            else _empty(ring)
        self._blocks[(ring.table, series_id)] = (block, data)
        return data

    def _write(self, closed: list[tuple[int, int, tuple[float, float, float, float]]]) -> int:
        if not closed:
            return 0
        db = self._conn
        dirty: dict[tuple[Ring, int, int], bytearray] = {}
        hours: set[tuple[int, int]] = set()
        for series_id, minute, point in closed:
            at = minute * MINUTES.step
            block = at // MINUTES.span
            data = dirty.get((MINUTES, series_id, block)) or self._block(MINUTES, series_id, block)
            POINT.pack_into(data, (at % MINUTES.span) // MINUTES.step * POINT.size, *point)
            dirty[(MINUTES, series_id, block)] = data
            hours.add((series_id, at - at % HOURS.step))
        for series_id, hour_start in sorted(hours):
            # the hour again from all its minutes (a partial hour shows as far as it went)
            data = dirty[(MINUTES, series_id, hour_start // MINUTES.span)]
            first = (hour_start % MINUTES.span) // MINUTES.step
            minutes = [POINT.unpack_from(data, (first + i) * POINT.size) for i in range(HOURS.step // MINUTES.step)]
            hblock = hour_start // HOURS.span
            hdata = dirty.get((HOURS, series_id, hblock)) or self._block(HOURS, series_id, hblock)
            POINT.pack_into(hdata, (hour_start % HOURS.span) // HOURS.step * POINT.size, *consolidate(minutes))
            dirty[(HOURS, series_id, hblock)] = hdata
        db.execute("BEGIN IMMEDIATE")
        try:
            for ring in RINGS:
                rows = [(series_id, block % ring.keep, block, bytes(data))
                        for (r, series_id, block), data in dirty.items() if r is ring]
                db.executemany(f"INSERT OR REPLACE INTO {ring.table} (series, slot, block, data) VALUES (?, ?, ?, ?)",
                               rows)
            day = int(closed[-1][1] * 60 // 86_400)
            if day != self._pruned_day:
                self._prune(db, closed[-1][1] * 60)
                self._pruned_day = day
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            self._blocks.clear()  # memory may be ahead of the file: read back from it next time
            raise
        db.execute("COMMIT")
        self.written += len(closed)
        return len(closed)

    def _prune(self, db: sqlite3.Connection, now: int) -> None:
        """Rows past their ring (a VM deleted long ago) and series with no row left go: bounded even as
        hosts and VMs come and go."""
        for ring in RINGS:
            db.execute(f"DELETE FROM {ring.table} WHERE block < ?", ((now - ring.holds) // ring.span - 1,))
        empty = {row[0] for row in db.execute("SELECT id FROM series WHERE id NOT IN (SELECT series FROM hour) "
                                              "AND id NOT IN (SELECT series FROM minute)")}
        empty -= {series.id for series in self._series.values()}  # one known here writes its first minute soon
        db.executemany("DELETE FROM series WHERE id = ?", [(series_id,) for series_id in empty])


# --- the readers' side ----------------------------------------------------------------------------


class MetricPoint(NamedTuple):
    """One point of a graph: its interval's start (seconds since the epoch), and per metric the average and
    maximum (None: a gap)."""

    at: int
    cpu: float | None
    cpu_max: float | None
    memory: float | None
    memory_max: float | None

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.at, dt.UTC)


@dataclass(frozen=True)
class MetricSeries:
    """A host's or a VM's metrics over a range: one point per step, oldest first, gaps as None."""

    kind: str
    id: str
    range: str
    step: int  # seconds per point
    points: tuple[MetricPoint, ...]

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "id": self.id, "range": self.range, "step_seconds": self.step,
                "points": [{"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(p.at)), "cpu": p.cpu,
                            "cpu_max": p.cpu_max, "memory": p.memory, "memory_max": p.memory_max} for p in self.points]}


class Metrics:
    """A reader of the metrics file (any process, any thread; it never writes)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / METRICS_FILE
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def __enter__(self) -> Metrics:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connect(self) -> sqlite3.Connection | None:
        if self._db is None:
            if not self.path.exists():
                return None  # nothing recorded yet: every point a gap
            self._db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                       isolation_level=None)
            self._db.execute("PRAGMA busy_timeout=5000")
        return self._db

    def read(self, kind: str, key: str, range_name: str, now: dt.datetime | None = None) -> MetricSeries:
        """``key``'s points over the range ``range_name`` (one of RANGES) up to ``now``."""
        if range_name not in RANGES:
            raise ValueError(f"unknown range {range_name!r}: one of {', '.join(RANGES)}")
        if kind not in SERIES_KINDS:
            raise ValueError(f"unknown series kind {kind!r}")
        seconds, ring = RANGES[range_name]
        now = now or dt.datetime.now(dt.UTC)
        end = int(now.timestamp()) // ring.step * ring.step + ring.step  # the point in progress included
        start = end - seconds
        values = self._values(kind, key, ring, start, end)
        gap = MetricPoint(0, None, None, None, None)
        points = tuple(values.get(at) or gap._replace(at=at) for at in range(start, end, ring.step))
        return MetricSeries(kind, key, range_name, ring.step, points)

    def check(self) -> list[str]:
        """What sqlite's quick check finds wrong in the file ([] when sound, or when there is none yet)."""
        with self._lock:
            try:
                db = self._connect()
                rows = db.execute("PRAGMA quick_check").fetchall() if db is not None else [("ok",)]
            except sqlite3.Error as error:
                return [str(error)]
        return [] if rows == [("ok",)] else [str(r[0]) for r in rows]

    def _values(self, kind: str, key: str, ring: Ring, start: int, end: int) -> dict[int, MetricPoint]:
        with self._lock:
            try:
                db = self._connect()
                if db is None:
                    return {}
                row = db.execute("SELECT id FROM series WHERE kind = ? AND key = ?", (kind, key)).fetchone()
                if row is None:
                    return {}
                rows = db.execute(f"SELECT block, data FROM {ring.table} WHERE series = ? AND block >= ? AND block < ?",
                                  (row[0], start // ring.span, (end - 1) // ring.span + 1)).fetchall()
            except sqlite3.Error as error:
                raise MetricsError(f"cannot read {self.path}: {error}") from None
        out: dict[int, MetricPoint] = {}
        for block, data in rows:
            if len(data) != POINT.size * ring.points:
                continue  # not a row this version wrote: a gap, never a crash
            base = block * ring.span
            for index, (cpu, cpu_max, memory, memory_max) in enumerate(POINT.iter_unpack(data)):
                at = base + index * ring.step
                if start <= at < end and not (cpu != cpu and memory != memory):  # NaN != NaN: a gap
                    out[at] = MetricPoint(at, None if cpu != cpu else cpu, None if cpu_max != cpu_max else cpu_max,
                                          None if memory != memory else memory,
                                          None if memory_max != memory_max else memory_max)
        return out
