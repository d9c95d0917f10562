"""The history: audit entries and events, append-only, on disk, indexed by time, host and subject.

A year at 1,000 hosts is millions of entries: they are never held in memory nor parsed at a start.
They live in ``history.sqlite`` in the data dir (ARCHITECTURE.md §4, "History"), beside the
documents' UnQLite file:

- one table per kind (``audit``, ``event``): the entry's id, its time (µs since the epoch, UTC), its
  host, its subject (the VM or disk it is about: an event's ``target``, an audit entry's ``vm_id``) and
  the document's JSON; indexes on time, (host, time) and (subject, time), so "the last hour", "this
  host's events" and "this VM's audit" read only what they return;
- ``violations``: the open expectation violations (the last ``violation``/``violation-cleared`` event per
  subject and expectation), kept in the same transaction as the events that change them, so the
  re-planner and the console know what is violated now without reading the events;
- retention: entries older than the admin's setting (``Settings.history``; a year of audit, 90 days of
  events unless set) are deleted by ``prune``.

sqlite3 (the standard library's) in WAL mode with ``synchronous=FULL``: each append is one transaction,
durable when it returns; a process killed at any point leaves every committed entry and a readable
file (the WAL is rolled forward or ignored at the next open); readers (``--readonly``, an attached
console) read while the controller writes, without blocking it. Only this module knows it is sqlite.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .models import AuditEntry, Document, Event
from .paths import open_private

log = logging.getLogger(__name__)

HISTORY_FILE = "history.sqlite"
HISTORY_KINDS: dict[str, type[Document]] = {"audit": AuditEntry, "event": Event}
VIOLATION = "violation"
VIOLATION_CLEARED = "violation-cleared"
DEFAULT_AUDIT_DAYS = 365
DEFAULT_EVENT_DAYS = 90
_FORMAT = "1"
PRUNE_CHUNK = 5000  # entries deleted per transaction by prune

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    *(stmt.format(t=table) for table in HISTORY_KINDS for stmt in (
        "CREATE TABLE IF NOT EXISTS {t} (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
        "time INTEGER NOT NULL, host_id TEXT, subject TEXT, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS {t}_time ON {t} (time)",
        "CREATE INDEX IF NOT EXISTS {t}_host ON {t} (host_id, time) WHERE host_id IS NOT NULL",
        "CREATE INDEX IF NOT EXISTS {t}_subject ON {t} (subject, time) WHERE subject IS NOT NULL",
    )),
    "CREATE TABLE IF NOT EXISTS violations (target TEXT NOT NULL, spec TEXT NOT NULL, message TEXT NOT NULL, "
    "time INTEGER NOT NULL, PRIMARY KEY (target, spec)) WITHOUT ROWID",
]


class HistoryError(Exception):
    """The history file cannot be read or written; the message says which and why."""


def micros(when: dt.datetime) -> int:
    """A time as µs since the epoch (a naive time is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    delta = when - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def violation_spec(message: str) -> str:
    """The expectation a violation message is about: the text before the first ': '."""
    return message.split(": ", 1)[0].strip()


def subject_of(doc: Document) -> str | None:
    if isinstance(doc, Event):
        return doc.target
    if isinstance(doc, AuditEntry):
        return doc.vm_id
    return None


class History:
    """The history file of a data dir. ``History.open(data_dir)`` for the controller (the data dir's lock
    holder), ``readonly=True`` for every other reader. Safe to call from several threads."""

    def __init__(self, path: Path, *, readonly: bool) -> None:
        self.path = path
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self.in_memory = False  # a reader's copy (no file yet, or a store's entries from before the history)

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, *, readonly: bool = False, legacy: Sequence[Document] = ()) -> History:
        """The data dir's history. A reader of a data dir with no history file yet reads an empty one.

        ``legacy``: entries still in a store from before the history (a read-only reader of a store no
        writer has opened since): a reader shows them with the file's (an in-memory copy of both)."""
        history = cls(Path(data_dir) / HISTORY_FILE, readonly=readonly)
        try:
            history._connect(list(legacy))
        except sqlite3.Error as error:
            history.close()
            raise HistoryError(f"cannot open {history.path}: {error}") from None
        return history

    def _connect(self, legacy: list[Document]) -> None:
        if not self.readonly:
            os.close(open_private(self.path, os.O_RDWR | os.O_CREAT))  # 0600, never through a symlink
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db = db
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            with self._tx():
                for stmt in _SCHEMA:
                    db.execute(stmt)
                db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (_FORMAT,))
            return
        if legacy or not self.path.exists():
            db = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            self._db = db
            self.in_memory = True
            for stmt in _SCHEMA:
                db.execute(stmt)
            if self.path.exists():
                db.execute("ATTACH DATABASE ? AS disk", (f"{self.path.as_uri()}?mode=ro",))
                for table in (*HISTORY_KINDS, "violations"):
                    db.execute(f"INSERT INTO main.{table} SELECT * FROM disk.{table}")
                db.execute("DETACH DATABASE disk")
            self._insert(sorted(legacy, key=lambda d: micros(getattr(d, "time", dt.datetime.min))))
            return
        db = sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, check_same_thread=False,
                             isolation_level=None)
        self._db = db
        db.execute("PRAGMA busy_timeout=5000")

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise HistoryError(f"the history {self.path} is closed")
        return self._db

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            db = self._conn
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- writing ------------------------------------------------------------------------------

    def append(self, docs: Iterable[Document]) -> int:
        """Add entries (audit entries and events, in the order given) in one transaction, durable when
        this returns. An entry whose id is already there is skipped (a replay adds nothing twice).
        Returns how many were added."""
        if self.readonly:
            raise HistoryError(f"the history {self.path} is open read-only")
        docs = list(docs)
        if not docs:
            return 0
        try:
            with self._tx():
                return self._insert(docs)
        except sqlite3.Error as error:
            raise HistoryError(f"cannot write to {self.path}: {error}") from None

    def _insert(self, docs: list[Document]) -> int:
        db = self._conn
        added = 0
        plain: dict[str, list[tuple[Any, ...]]] = {kind: [] for kind in HISTORY_KINDS}

        def flush() -> int:
            count = 0
            for kind, rows in plain.items():
                if rows:
                    count += db.executemany(
                        f"INSERT OR IGNORE INTO {kind} (id, time, host_id, subject, body) VALUES (?, ?, ?, ?, ?)",
                        rows).rowcount
                    rows.clear()
            return count

        for doc in docs:
            if doc.kind not in HISTORY_KINDS:
                raise TypeError(f"not a history entry: {doc.kind}")
            when = micros(doc.time)  # type: ignore[attr-defined]
            row = (doc.id, when, doc.host_id, subject_of(doc), doc.model_dump_json())  # type: ignore[attr-defined]
            if not (isinstance(doc, Event) and doc.target and doc.type in (VIOLATION, VIOLATION_CLEARED)):
                plain[doc.kind].append(row)  # most entries: inserted together
                continue
            added += flush()  # a violation's order among the others matters: the ones before it first
            if not db.execute("INSERT OR IGNORE INTO event (id, time, host_id, subject, body) VALUES (?, ?, ?, ?, ?)",
                              row).rowcount:
                continue
            added += 1
            spec = violation_spec(doc.message)
            if doc.type == VIOLATION:
                db.execute("INSERT INTO violations VALUES (?, ?, ?, ?) ON CONFLICT (target, spec) DO UPDATE "
                           "SET message = excluded.message, time = excluded.time WHERE excluded.time >= time",
                           (doc.target, spec, doc.message, when))
            else:
                db.execute("DELETE FROM violations WHERE target = ? AND spec = ? AND time <= ?",
                           (doc.target, spec, when))
        return added + flush()

    def seen(self, doc: Document) -> None:
        """A reader is told of an entry the writer appended: the file has it already; a copy adds it."""
        if self.in_memory:
            with self._lock:
                self._insert([doc])

    def prune(self, now: dt.datetime, *, audit_days: int = DEFAULT_AUDIT_DAYS,
              event_days: int = DEFAULT_EVENT_DAYS) -> dict[str, int]:
        """Delete the entries older than their kind's retention; returns how many of each went. Open
        violations stay whatever their age (they are the present, not the history). In transactions of
        PRUNE_CHUNK entries: appends from another thread wait for one chunk at most, never for the whole."""
        if self.readonly:
            return {}
        removed: dict[str, int] = {}
        try:
            for kind, days in (("audit", audit_days), ("event", event_days)):
                cutoff = micros(now - dt.timedelta(days=days))
                removed[kind] = 0
                while True:
                    with self._tx() as db:
                        gone = db.execute(f"DELETE FROM {kind} WHERE seq IN (SELECT seq FROM {kind} WHERE time < ? "
                                          "ORDER BY time LIMIT ?)", (cutoff, PRUNE_CHUNK)).rowcount
                    removed[kind] += gone
                    if gone < PRUNE_CHUNK:
                        break
        except sqlite3.Error as error:
            raise HistoryError(f"cannot prune {self.path}: {error}") from None
        if any(removed.values()):
            log.info("history: %d audit entries and %d events past their retention removed",
                     removed["audit"], removed["event"])
        return removed

    # --- reading ------------------------------------------------------------------------------

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as error:
                raise HistoryError(f"cannot read {self.path}: {error}") from None

    def query(self, kind: str, *, since: dt.datetime | None = None, until: dt.datetime | None = None,
              host_id: str | None = None, subject: str | None = None, limit: int | None = None) -> list[Any]:
        """Entries of ``kind`` ("audit" or "event"), oldest first: from ``since`` on, before ``until``,
        of one host, about one subject (a VM's or disk's id). With ``limit``, the newest ``limit`` of them."""
        cls = HISTORY_KINDS[kind]
        where, params = self._where(since, until, host_id, subject)
        sql = f"SELECT body FROM {kind}{where} ORDER BY time DESC, seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        rows = self._rows(sql, params)
        return [cls.model_validate_json(body) for (body,) in reversed(rows)]

    def count(self, kind: str, *, since: dt.datetime | None = None, host_id: str | None = None,
              subject: str | None = None) -> int:
        if kind not in HISTORY_KINDS:
            raise KeyError(kind)
        where, params = self._where(since, None, host_id, subject)
        return int(self._rows(f"SELECT count(*) FROM {kind}{where}", params)[0][0])

    @staticmethod
    def _where(since: dt.datetime | None, until: dt.datetime | None, host_id: str | None,
               subject: str | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if since is not None:
            clauses.append("time >= ?")
            params.append(micros(since))
        if until is not None:
            clauses.append("time < ?")
            params.append(micros(until))
        if host_id is not None:
            clauses.append("host_id = ?")
            params.append(host_id)
        if subject is not None:
            clauses.append("subject = ?")
            params.append(subject)
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def get(self, kind: str, doc_id: str) -> Any:
        """One entry by id, or None."""
        cls = HISTORY_KINDS[kind]
        rows = self._rows(f"SELECT body FROM {kind} WHERE id = ?", (doc_id,))
        return cls.model_validate_json(rows[0][0]) if rows else None

    def open_violations(self) -> dict[str, dict[str, str]]:
        """The expectations violated now: subject id -> {expectation spec: the violation's message}."""
        out: dict[str, dict[str, str]] = {}
        for target, spec, message in self._rows("SELECT target, spec, message FROM violations ORDER BY time", ()):
            out.setdefault(target, {})[spec] = message
        return out

    def check(self) -> list[str]:
        """What sqlite's own integrity check finds wrong in the file (nothing: [])."""
        rows = self._rows("PRAGMA quick_check", ())
        return [] if rows == [("ok",)] else [str(r[0]) for r in rows]
