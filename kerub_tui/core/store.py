"""The document store: one UnQLite file in the data dir, one writer, every change in a transaction.

Everything is also held in memory (dicts by kind and id, plus the indexes), read on open: reads
never touch the file, and the API never exposes UnQLite, so another engine could sit behind it. An
open checks every record but parses none: a document is validated when first read, and one that does
not validate is damage then, said as at open (``_parse``). The indexes are built when first asked.
Writes made off the event loop (the monitoring writer) go through ``stage`` and ``commit_staged``.
Autocommit on close is disabled, so a process killed mid-transaction leaves the last committed state.
Every record carries a checksum and a manifest counts them (``integrity``): a damaged file is
refused for writing with what to do (``StoreDamaged``), never read as a smaller fleet; backups
are made in the data dir (``backup``).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import tempfile
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import unqlite
from pydantic import ValidationError

from . import integrity
from .bus import Change, ChangeFeed
from .expectations import DISK_EXPECTATION_TYPES, VM_EXPECTATION_TYPES
from .history import HISTORY_KINDS, History, HistoryError
from .integrity import DIGEST_MOD, MANIFEST_KEY, encode_manifest, encode_record, encode_record_crc, store_existed
from .models import (
    DOCUMENT_TYPES,
    IMPORT_CONTEXT,
    SCHEMA_VERSION,
    STORE_CONTEXT,
    Document,
    Settings,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    parse_document,
)
from .paths import LOCK_FILE, STORE_FILE, UnsafeDataDir, check_private_dir, ensure_private_dir, open_private
from .unqlite_file import UnqliteFile
from .validation import describe

if TYPE_CHECKING:
    from .backup import Backups

log = logging.getLogger(__name__)

D = TypeVar("D", bound=Document)

# unqlite_open() modes (unqlite.h); the Python binding does not export them.
_OPEN_READONLY = integrity._OPEN_READONLY
_OPEN_CREATE = integrity._OPEN_CREATE

_DOC_PREFIX = integrity.DOC_PREFIX
_META_SCHEMA = integrity.META_SCHEMA
EXPORT_FORMAT = "kerub-tui-export"
_HISTORY_PREFIXES = tuple(f"{_DOC_PREFIX}{kind}/" for kind in sorted(HISTORY_KINDS))
PRUNE_EVERY = 3600.0  # seconds between prunings of the history, checked as transactions commit

# Upgrades of stored documents: MIGRATIONS[n] turns a schema-n document dict into schema n+1.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}


class StoreError(Exception):
    """A store problem the admin can act on; the message says what to do."""


class StoreLocked(StoreError):
    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.pid = pid
        holder = f"pid {pid}" if pid else "another process"
        super().__init__(
            f"the data dir {data_dir} is in use by another kerub-tui ({holder}); "
            "use its control socket, open read-only with --readonly, or stop it first"
        )


class ReadOnlyStore(StoreError):
    def __init__(self) -> None:
        super().__init__("the store is open read-only: nothing can be changed")


class NotFound(StoreError):
    pass


class StoreDamaged(StoreError):
    """The store file is damaged: nothing is written to it; ``kerub-tui check --repair`` mends it."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        data_dir = path.parent
        super().__init__(
            f"the store {path} is damaged ({'; '.join(problems)}): nothing was written to it; run "
            f"`kerub-tui --data-dir {data_dir} check --repair` (it keeps the damaged file and restores "
            f"what it cannot read from the backups in {data_dir / integrity.BACKUP_DIR})"
        )


class StoreWriteError(StoreError):
    """The disk refused a write (full, read-only, failing): nothing of the transaction was kept."""


def _disk_trouble(path: Path) -> str | None:
    """Why writes under ``path`` fail, in words, when the file system says so."""
    try:
        fs = os.statvfs(path)
    except OSError:
        return None
    if fs.f_flag & os.ST_RDONLY:
        return "the file system is read-only"
    if fs.f_bavail * fs.f_frsize < (1 << 20) or (fs.f_files and fs.f_favail == 0):
        return "the disk is full"
    return None


def _key(kind: str, doc_id: str) -> str:
    return f"{_DOC_PREFIX}{kind}/{doc_id}"


def _kind_of(kind_or_cls: str | type[Document]) -> str:
    if isinstance(kind_or_cls, str):
        if kind_or_cls not in DOCUMENT_TYPES:
            raise KeyError(f"unknown document kind {kind_or_cls!r}")
        return kind_or_cls
    kind: str = kind_or_cls.model_fields["kind"].default
    return kind


def _to_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


_DOCUMENT_CLASSES = frozenset(DOCUMENT_TYPES.values())
STAGED_WAIT = 120.0  # seconds a writer waits for a staged write's commit before writing past it


@dataclasses.dataclass
class Staged:
    """Documents ``Store.stage`` put into memory, on their way to the file (``commit_staged``)."""

    items: builtins.list[tuple[str, str, Document | None, Document | None]] = dataclasses.field(
        default_factory=builtins.list)  # (kind, id, old, new)
    changes: builtins.list[Change] = dataclasses.field(default_factory=builtins.list)  # told to the feed
    failed: bool = False
    done: threading.Event = dataclasses.field(default_factory=threading.Event)


class Store:
    """Typed documents by kind and id. Use ``Store.open(data_dir)``; close it (or use ``with``)."""

    # Why writes fail right now (disk full, read-only), None while they work: said once in the log
    # when it starts and once when it ends, and each refused write is one StoreWriteError line.
    write_failure: str | None = None

    def __init__(self, data_dir: Path, *, readonly: bool = False) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STORE_FILE
        self.readonly = readonly
        self.feed = ChangeFeed()
        self._docs: dict[str, dict[str, Document]] = defaultdict(dict)
        # Records whose checksum holds but that are not parsed yet, by key: a document is parsed (and
        # validated in full) when it is first read, so an open costs no validation (ARCHITECTURE.md §4,
        # "Store"). A key is in ``_raw`` or in ``_docs``, never both.
        self._raw: dict[str, bytes] = {}
        self._raw_kinds: set[str] = set()  # kinds that may still have records in _raw
        self._invalid: builtins.list[str] = []  # keys of records found not to be valid documents
        self._invalid_line = ""  # what ``damage`` says of them
        self._db: Any = None
        self._lock_fd: int | None = None
        self._tx_depth = 0
        self._tx_undo: list[tuple[str, str, Document | None, int | None]] = []
        self._tx_changes: list[Change] = []
        self._tx_start: tuple[int, int] = (0, 0)
        self._tx_thread = 0  # the thread whose transaction is open
        # Raw records that would not parse or fail their checksum, by key: a writer refuses such a
        # file (StoreDamaged); a read-only reader shows the rest and lists them here and in ``damage``.
        self.unreadable: dict[str, str] = {}
        self.damage: list[str] = []
        # The manifest: each document record's CRC by key, their sum, the commit generation.
        self._crcs: dict[str, int] = {}
        self._digest = 0
        self.generation = 0
        self._backups: Backups | None = None
        self._commits_since_backup = 0
        self._last_backup_at = time.monotonic()  # of the last backup, or of the open
        self._backup_thread: threading.Thread | None = None
        self._stored_schema: int | None = None
        self._busy = False
        # One writer at a time: transactions, and commits made off the event loop (``commit_documents``),
        # whose documents wait in ``_committed`` until the store's own thread applies them.
        self._lock = threading.RLock()
        self._committed: deque[Staged] = deque()
        self._staged: Staged | None = None  # staged in memory, its commit not applied yet
        # indexes
        self._vm_host: dict[str, str] = {}
        self._host_vms: dict[str, set[str]] = defaultdict(set)
        self._disk_hosts: dict[str, set[str]] = {}
        self._host_disks: dict[str, set[str]] = defaultdict(set)
        self._indexed = False  # the indexes are built when first asked (they need the dynamic documents)
        # Audit entries and events live in the history (core/history.py), never in memory: a
        # transaction's entries wait here until it commits.
        self.history: History | None = None
        self._tx_history: builtins.list[Document] = []
        self._pruned_at: float | None = None

    # --- opening and closing ----------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path | str, *, readonly: bool = False) -> Store:
        store = cls(Path(data_dir), readonly=readonly)
        try:
            store._open()
        except UnsafeDataDir as error:  # a planted data dir or file: one line, nothing opened
            store.close()
            raise StoreError(str(error)) from None
        except BaseException:
            store.close()
            raise
        return store

    def _open(self) -> None:
        if self.readonly:
            check_private_dir(self.data_dir)
            if not self.path.exists():
                raise StoreError(f"no store at {self.path}: nothing to open read-only")
            self._load_readonly()
            return
        ensure_private_dir(self.data_dir)
        self._acquire_lock()
        existed = store_existed(self.data_dir)
        if existed and not self.path.exists():
            raise StoreDamaged(self.path, ["the file is missing, but a store was kept here (the marker and "
                                           "backups say so)"])
        fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        os.fchmod(fd, 0o600)
        os.close(fd)
        crashed = self._journal_path.exists()  # we hold the lock: a journal now is a crashed writer's
        reading = self._read(writable=True, existed=existed)  # rolls a hot journal back: the last commit
        self._apply(reading)
        if self.damage:
            raise StoreDamaged(self.path, self.damage)
        if crashed:
            self._rebuild()
        self._db = UnqliteFile(str(self.path), _OPEN_CREATE)
        self._db.disable_autocommit()
        self._check_schema(reading)
        self._open_history()
        integrity.write_marker(self.data_dir)
        self._backup_at_open()

    def _open_history(self) -> None:
        """Open the history; move a store's audit entries and events from before it into it."""
        try:
            self.history = History.open(self.data_dir)
        except HistoryError as error:
            raise StoreError(str(error)) from None
        legacy = self._take_legacy()
        if legacy:
            # The history first (a replay adds nothing twice), then the records go: killed in between,
            # the next open does it again.
            self.history.append(sorted(legacy, key=lambda d: d.time))  # type: ignore[attr-defined]
            self._db.begin()
            try:
                for doc in legacy:
                    key = _key(doc.kind, doc.id)
                    self._db.delete(key)
                    self._digest = (self._digest - self._crcs.pop(key, 0)) % DIGEST_MOD
                self.generation += 1
                self._db.store(MANIFEST_KEY, encode_manifest(self.generation, len(self._crcs), self._digest))
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
            log.info("%d audit entries and events moved from %s into the history %s", len(legacy), self.path,
                     self.history.path)
        self.prune_history()

    def _take_legacy(self) -> builtins.list[Document]:
        """The audit entries and events a store from before the history holds (out of the documents)."""
        legacy: builtins.list[Document] = []
        if self._raw and not any(map(str.startswith, self._raw, repeat(_HISTORY_PREFIXES))):
            self._raw_kinds -= HISTORY_KINDS.keys()  # none of them unparsed: no scan of the records per kind
        for kind in HISTORY_KINDS:
            legacy += self._kind_docs(kind).values()
            self._docs.pop(kind, None)
        return legacy

    def prune_history(self, now: dt.datetime | None = None) -> dict[str, int]:
        """Remove the history's entries past the retention the settings say (at open, then hourly as
        entries are added, and when the retention is changed)."""
        if self.history is None or self.readonly:
            return {}
        settings = self.get("settings", "settings")
        retention = settings.history if isinstance(settings, Settings) else Settings().history
        self._pruned_at = time.monotonic()
        try:
            return self.history.prune(now or dt.datetime.now(dt.UTC), audit_days=retention.audit_days,
                                      event_days=retention.event_days)
        except HistoryError as error:  # never stops a start or a write: said once in the log
            log.warning("%s", error)
            return {}

    @property
    def _journal_path(self) -> Path:
        return self.path.with_name(self.path.name + "_unqlite_journal")

    def _rebuild(self) -> None:
        """Copy every record into a fresh file and swap it in.

        UnQLite's rollback of a hot journal restores the committed records, but a file a writer was
        killed in can keep damage that makes later commits fail ("IO error while writing dirty
        pages"); tests/unit/test_store_crash.py found it. A rebuilt file has none of that. Every raw
        record is copied, unreadable ones included, so nothing is lost.
        """
        db = unqlite.UnQLite(str(self.path), flags=_OPEN_CREATE)
        records = [(_to_text(k), v) for k, v in db.items()]
        db.close()
        fresh_path = self.path.with_name(self.path.name + ".rebuild")
        for leftover in (fresh_path, fresh_path.with_name(fresh_path.name + "_unqlite_journal")):
            leftover.unlink(missing_ok=True)
        os.close(os.open(fresh_path, os.O_RDWR | os.O_CREAT, 0o600))
        fresh = unqlite.UnQLite(str(fresh_path), flags=_OPEN_CREATE)
        fresh.disable_autocommit()
        fresh.begin()
        for key, value in records:
            fresh.store(key, value)
        fresh.commit()
        fresh.close()
        with open(fresh_path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(fresh_path, self.path)
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self._journal_path.unlink(missing_ok=True)
        log.warning("%s was not closed cleanly: rolled back to the last commit and rebuilt (%d records)",
                    self.path, len(records))

    def _acquire_lock(self) -> None:
        lock_path = self.data_dir / LOCK_FILE
        fd = open_private(lock_path, os.O_RDWR | os.O_CREAT)  # never through a planted symlink
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(self.data_dir, self.holder_pid(self.data_dir)) from None
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._lock_fd = fd

    @staticmethod
    def holder_pid(data_dir: Path) -> int | None:
        """The pid written by the process holding the data dir's lock, if readable."""
        try:
            fd = os.open(Path(data_dir) / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                text = os.read(fd, 64).decode().strip()
            finally:
                os.close(fd)
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    def _writer_present(self) -> bool:
        try:
            fd = os.open(self.data_dir / LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except OSError:
            return True
        finally:
            os.close(fd)

    def _load_readonly(self) -> None:
        # A snapshot: read everything, close, so a read-only reader never blocks the writer.
        existed = store_existed(self.data_dir)
        if not self.path.exists():
            if not existed:
                raise StoreError(f"no store at {self.path}: nothing to open read-only")
            self.damage = ["the file is missing, but a store was kept here (the marker and backups say so)"]
            self._open_history_readonly([])
            return
        if self._journal_path.exists() and not self._writer_present():
            raise StoreError(
                f"{self.path} was not closed cleanly (its writer was killed): open it once without "
                "--readonly to roll back to the last commit"
            )
        for attempt in range(50):
            reading = self._read(writable=False, existed=existed)
            if reading.damaged and attempt < 49 and (self._busy or (attempt < 5 and self._writer_present())):
                time.sleep(0.05)  # locked, or a commit in flight: read again
                continue
            break
        if self._busy:
            raise StoreError(f"cannot read {self.path}: {reading.summary()}")
        self._apply(reading)
        version = self._stored_schema
        if version is not None and version > SCHEMA_VERSION:
            raise self._newer_schema_error(version)
        self._open_history_readonly(self._take_legacy())

    def _open_history_readonly(self, legacy: builtins.list[Document]) -> None:
        try:
            self.history = History.open(self.data_dir, readonly=True, legacy=legacy)
        except HistoryError as error:
            raise StoreError(str(error)) from None

    def _read(self, *, writable: bool, existed: bool) -> integrity.Reading:
        """Read and verify every record (in a child: see ``integrity``); nothing is parsed yet."""
        size = self.path.stat().st_size
        raw = integrity.read_records(self.path, writable=writable) if size else integrity.RawRead()
        self._busy = raw.busy
        return integrity.verify(raw, existed=existed, file_size=size, page_size=integrity.page_size_of(self.path))

    def _apply(self, reading: integrity.Reading, *, lazy: bool = True) -> None:
        """Take the verified records: kept as they are and parsed when first read (``_parsed``), or all
        parsed now (``lazy=False``, and always for an older schema, which is migrated and written back).
        A record that is no valid document is damage, found now or when it is first read."""
        self._docs.clear()
        self._raw = {}
        self._raw_kinds = set()
        self._invalid = []
        self._invalid_line = ""
        self._indexed = False
        self.unreadable.clear()
        self._crcs = {}
        self._stored_schema = reading.schema
        self.generation = reading.manifest.generation if reading.manifest else 0
        version = self._stored_schema or SCHEMA_VERSION
        if version > SCHEMA_VERSION:
            return  # refused by the caller, with the right message
        self.unreadable = dict(reading.damaged_keys)
        self.damage = list(reading.problems)
        self._crcs = dict(reading.crcs)
        self._digest = sum(self._crcs.values()) % DIGEST_MOD
        if lazy and version == SCHEMA_VERSION:
            self._raw = dict(reading.bodies)
            self._raw_kinds = set(DOCUMENT_TYPES) if self._raw else set()
            return
        for key, body in reading.bodies.items():
            doc = self._parse(key, body, version)
            if doc is not None:
                self._docs[doc.kind][doc.id] = doc

    def _parse(self, key: str, body: bytes, version: int = SCHEMA_VERSION) -> Document | None:
        """One record's document, validated in full; None (and the store damaged) if it is not valid."""
        try:
            doc: Document | None = None
            cls = DOCUMENT_TYPES.get(key[len(_DOC_PREFIX):].partition("/")[0])
            if version == SCHEMA_VERSION and cls is not None:
                # The document's JSON straight into its class; anything else (an older document, one that
                # does not validate) the way it always was, which also says why it is not valid.
                with contextlib.suppress(ValidationError):
                    doc = cls.model_validate_json(body)
                if doc is not None and doc.schema_version != SCHEMA_VERSION:
                    doc = None
            if doc is None:
                doc = parse_document(_migrate(json.loads(body), version))
            if _key(doc.kind, doc.id) != key:
                raise ValueError(f"the record holds {_key(doc.kind, doc.id)}")
        except ValidationError as error:
            self._found_invalid(key, f"invalid document: {' '.join(describe(error, _TAGS).split())}")
            return None
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError, MemoryError) as error:
            self._found_invalid(key, f"invalid document: {str(error).splitlines()[0]}")
            return None
        return doc

    def _found_invalid(self, key: str, why: str) -> None:
        """A record whose checksum holds but that is no valid document: damage, said like damage found at
        open (``damage``, ``unreadable``; a writer refuses every write from now on with StoreDamaged)."""
        self._invalid.append(key)
        self.unreadable[key] = why
        self._digest = (self._digest - self._crcs.pop(key, 0)) % DIGEST_MOD
        if self._invalid_line in self.damage:
            self.damage.remove(self._invalid_line)
        self._invalid_line = (f"{len(self._invalid)} records are not valid documents "
                              f"({integrity._names(sorted(self._invalid))})")
        self.damage.append(self._invalid_line)
        if self._db is not None and len(self._invalid) == 1:
            log.error("%s: %s is no valid document (%s): nothing more is written to it; run `kerub-tui "
                      "--data-dir %s check --repair`", self.path, key.removeprefix(_DOC_PREFIX), why, self.data_dir)

    def _parsed(self, kind: str, doc_id: str) -> Document | None:
        """The document ``kind``/``doc_id`` (parsed now if it was not yet), None if there is none."""
        docs = self._docs.get(kind)
        doc = docs.get(doc_id) if docs else None
        if doc is None and self._raw and kind in self._raw_kinds:
            key = _key(kind, doc_id)
            body = self._raw.pop(key, None)
            if body is not None:
                doc = self._parse(key, body)
                if doc is not None:
                    self._docs[kind][doc_id] = doc
        return doc

    def _kind_docs(self, kind: str) -> dict[str, Document]:
        """Every document of ``kind`` by id, each parsed."""
        if kind in self._raw_kinds:
            self._raw_kinds.discard(kind)
            prefix = _key(kind, "")
            keys = [key for key in self._raw if key.startswith(prefix)]
            for key in keys:
                doc = self._parse(key, self._raw.pop(key))
                if doc is not None:
                    self._docs[kind][doc.id] = doc
        return self._docs.get(kind, {})

    def _parse_all(self) -> None:
        for kind in builtins.list(self._raw_kinds):
            self._kind_docs(kind)
        for key in builtins.list(self._raw):  # a record of no known kind
            self._parse(key, self._raw.pop(key))
        self._raw_kinds = set()

    def _newer_schema_error(self, version: int) -> StoreError:
        return StoreError(
            f"{self.path} was written by a newer kerub-tui (schema {version}; this one understands "
            f"up to {SCHEMA_VERSION}): upgrade kerub-tui, or restore an export made by this version"
        )

    def _check_schema(self, reading: integrity.Reading) -> None:
        version = self._stored_schema
        if version is not None and version > SCHEMA_VERSION:
            raise self._newer_schema_error(version)
        if version == SCHEMA_VERSION and reading.manifest is not None:
            return
        # New store, an older schema whose documents _apply migrated in memory, or a store from
        # before checksums: write every document back, with its checksum, and the manifest.
        self._parse_all()
        self._db.begin()
        try:
            crcs: dict[str, int] = {}
            for kind_docs in self._docs.values():
                for doc in kind_docs.values():
                    key = _key(doc.kind, doc.id)
                    value = encode_record(key, doc.model_dump_json(context=STORE_CONTEXT))
                    crcs[key] = int(value[:8], 16)
                    self._db.store(key, value)
            self._db.store(_META_SCHEMA, str(SCHEMA_VERSION))
            digest = sum(crcs.values()) % DIGEST_MOD
            self._db.store(MANIFEST_KEY, encode_manifest(self.generation + 1, len(crcs), digest))
            self._db.commit()
        except BaseException:
            self._db.rollback()
            raise
        self._crcs, self._digest = crcs, digest
        self.generation += 1
        self._stored_schema = SCHEMA_VERSION

    @property
    def schema_version(self) -> int:
        return self._stored_schema or SCHEMA_VERSION

    def close(self) -> None:
        self._wait_staged()
        with self._lock:  # a commit running in another thread ends first; what it committed is applied
            self._close()

    def _close(self) -> None:
        self.wait_for_backup()
        if self._committed and self._db is not None:
            with contextlib.suppress(Exception):
                self._apply_committed()
        if self.history is not None:
            self.history.close()
        if self._db is not None:
            try:
                if self._tx_depth:
                    self._db.rollback()
                self._db.close()
            finally:
                self._db = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._lock_fd, 0)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.feed.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------

    # Inside this class ``list`` is the method below: annotations say ``builtins.list``.
    # Given a class the reads are typed by it; given a kind's name they return a plain Document.

    @overload
    def get(self, kind_or_cls: type[D], doc_id: str) -> D | None: ...
    @overload
    def get(self, kind_or_cls: str, doc_id: str) -> Document | None: ...
    def get(self, kind_or_cls: str | type[Document], doc_id: str) -> Document | None:
        kind = _kind_of(kind_or_cls)
        if kind in HISTORY_KINDS:
            return self.history.get(kind, doc_id) if self.history is not None else None
        return self._parsed(kind, doc_id)

    @overload
    def require(self, kind_or_cls: type[D], doc_id: str) -> D: ...
    @overload
    def require(self, kind_or_cls: str, doc_id: str) -> Document: ...
    def require(self, kind_or_cls: str | type[Document], doc_id: str) -> Document:
        doc = self.get(kind_or_cls, doc_id)
        if doc is None:
            raise NotFound(f"no {_kind_of(kind_or_cls)} with id {doc_id}")
        return doc

    @overload
    def list(self, kind_or_cls: type[D]) -> builtins.list[D]: ...
    @overload
    def list(self, kind_or_cls: str) -> builtins.list[Document]: ...
    def list(self, kind_or_cls: str | type[Document]) -> builtins.list[Any]:
        """Every document of a kind. For audit entries and events that is the whole history, oldest first:
        read it with ``history.query`` (by time, host, subject, limit) instead wherever it can be long."""
        kind = _kind_of(kind_or_cls)
        if kind in HISTORY_KINDS:
            return self.history.query(kind) if self.history is not None else []
        return builtins.list(self._kind_docs(kind).values())

    def count(self, kind_or_cls: str | type[Document]) -> int:
        kind = _kind_of(kind_or_cls)
        if kind in HISTORY_KINDS:
            return self.history.count(kind) if self.history is not None else 0
        if kind in self._raw_kinds:
            prefix = _key(kind, "")
            return len(self._docs.get(kind, {})) + sum(1 for key in self._raw if key.startswith(prefix))
        return len(self._docs.get(kind, {}))

    @overload
    def find_by_name(self, kind_or_cls: type[D], name: str) -> D | None: ...
    @overload
    def find_by_name(self, kind_or_cls: str, name: str) -> Document | None: ...
    def find_by_name(self, kind_or_cls: str | type[Document], name: str) -> Document | None:
        for doc in self._kind_docs(_kind_of(kind_or_cls)).values():
            if getattr(doc, "name", None) == name:
                return doc
        return None

    def all_documents(self) -> Iterator[Document]:
        """Every document (not the history: ``history_documents``)."""
        self._parse_all()
        for kind in sorted(self._docs):
            for doc_id in sorted(self._docs[kind]):
                yield self._docs[kind][doc_id]

    def history_documents(self) -> Iterator[Document]:
        """Every audit entry and event the history holds, oldest first per kind."""
        if self.history is not None:
            for kind in sorted(HISTORY_KINDS):
                yield from self.history.query(kind)

    def vms_on_host(self, host_id: str) -> set[str]:
        """Ids of the VMs whose dynamic document places them on ``host_id``."""
        self._build_indexes()
        return set(self._host_vms.get(host_id, ()))

    def host_of_vm(self, vm_id: str) -> str | None:
        self._build_indexes()
        return self._vm_host.get(vm_id)

    def disks_on_host(self, host_id: str) -> set[str]:
        """Ids of the disks with an allocation on ``host_id``."""
        self._build_indexes()
        return set(self._host_disks.get(host_id, ()))

    # --- indexes ----------------------------------------------------------------------------

    def _build_indexes(self) -> None:
        """The indexes, from the dynamic documents, the first time they are asked; kept by ``_index`` after."""
        if self._indexed:
            return
        self._indexed = True
        for kind in (_kind_of(VirtualMachineDynamic), _kind_of(VirtualStorageDeviceDynamic)):
            for doc in self._kind_docs(kind).values():
                self._index(None, doc)

    def _index(self, old: Document | None, new: Document | None) -> None:
        if not self._indexed:
            return
        doc = new or old
        if isinstance(doc, VirtualMachineDynamic):
            previous = self._vm_host.pop(doc.id, None)
            if previous is not None:
                self._host_vms[previous].discard(doc.id)
            if isinstance(new, VirtualMachineDynamic) and new.host_id:
                self._vm_host[doc.id] = new.host_id
                self._host_vms[new.host_id].add(doc.id)
        elif isinstance(doc, VirtualStorageDeviceDynamic):
            for host_id in self._disk_hosts.pop(doc.id, set()):
                self._host_disks[host_id].discard(doc.id)
            if isinstance(new, VirtualStorageDeviceDynamic):
                hosts = {a.host_id for a in new.allocations}
                self._disk_hosts[doc.id] = hosts
                for host_id in hosts:
                    self._host_disks[host_id].add(doc.id)

    # --- writing ----------------------------------------------------------------------------

    def _writable(self) -> None:
        if self.readonly:
            raise ReadOnlyStore()
        if self._db is None:
            raise StoreError("the store is closed")
        if self._invalid:  # found when first read: refused as a damaged file is at open
            raise StoreDamaged(self.path, self.damage)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Store]:
        """Group writes: all are committed together or none is. Nested blocks join the outer one.

        One writer at a time (``_lock``): a transaction waits for a commit running off the event loop
        (``commit_documents``) and applies it first, so it reads what the file holds."""
        self._writable()
        if self._tx_depth == 0:
            self._wait_staged()
        with self._lock:
            if self._tx_depth == 0:
                self._apply_committed()
                self._writable()
                with self._writing():
                    self._db.begin()
                self._tx_undo = []
                self._tx_changes = []
                self._tx_history = []
                self._tx_start = (self.generation, self._digest)
                self._tx_thread = threading.get_ident()
            self._tx_depth += 1
            try:
                yield self
            except BaseException:
                self._tx_depth -= 1
                if self._tx_depth == 0:
                    self._rollback()
                raise
            self._tx_depth -= 1
            if self._tx_depth == 0:
                self._commit()

    def _commit(self) -> None:
        try:
            if self._invalid:  # a record read in this transaction was no valid document: nothing is kept
                raise StoreDamaged(self.path, self.damage)
            # The history first: if it refuses, nothing of the transaction is kept; if the documents'
            # file refuses after it (or the process dies in between), the entries say what was
            # tried (ARCHITECTURE.md §4, "History").
            self._commit_history()
            with self._writing():
                if self._tx_undo:  # something changed: the manifest changes with it
                    self.generation += 1
                    self._db.store(MANIFEST_KEY, encode_manifest(self.generation, len(self._crcs), self._digest))
                self._db.commit()
        except BaseException:
            self._rollback()
            raise
        self._wrote()
        changes, self._tx_changes = self._tx_changes, []
        wrote, self._tx_undo = bool(self._tx_undo), []
        self.feed.publish(changes)
        if wrote:
            self._backup_after_commit()
        if self._pruned_at is not None and time.monotonic() - self._pruned_at >= PRUNE_EVERY:
            self.prune_history()

    def _wrote(self) -> None:
        # A write can fit in a disk that is still full (pages the file already has, a few KiB freed): it
        # is kept, but "works again" waits until the disk's trouble is gone, so that a nearly full disk
        # does not flap between "fails" and "works again" in the log.
        if self.write_failure is not None and _disk_trouble(self.data_dir) is None:
            log.warning("writing %s works again", self.path)
            self.write_failure = None

    # --- writing off the event loop ---------------------------------------------------------

    def stage(self, documents: Iterable[tuple[str, str, Document | None]]) -> Staged:
        """The first half of a write made off the event loop (the monitoring writer), on the store's own
        thread: ``(kind, id, document or None to delete)`` that differ from what is stored go into memory
        now, as one step (a reader sees them all, as it saw an on-loop flush at once), and ``commit_staged``
        writes them to the file in another thread. ``publish_staged`` tells the change feed (as an on-loop
        flush did at once: a listener that waits for a change and then reads sees it); if the file refuses
        the commit, memory is put back and the feed told so (``apply_committed``). Until then a transaction
        waits for the commit first, so the file is written in the order memory changed."""
        self._writable()
        self._wait_staged()
        with self._lock:
            if self._tx_depth:
                raise StoreError("stage() inside a transaction")
            self._apply_committed()
            self._writable()
            staged = Staged()
            append, docs_of, parsed, indexed = staged.items.append, self._docs, self._parsed, self._indexed
            for kind, doc_id, doc in documents:
                if doc is not None and (type(doc) not in _DOCUMENT_CLASSES or kind in HISTORY_KINDS):
                    raise TypeError(f"not a document stage() writes: {type(doc).__name__}")
                old = parsed(kind, doc_id)
                if old is doc or (old is None and doc is None):
                    continue
                # Equal fields, equal document (frozen models of one class, no extras): pydantic's own __eq__
                # says the same, slower.
                if old is not None and doc is not None and type(old) is type(doc) and old.__dict__ == doc.__dict__:
                    continue
                if doc is None:
                    docs_of[kind].pop(doc_id, None)
                else:
                    docs_of[kind][doc_id] = doc
                if indexed:
                    self._index(old, doc)
                append((kind, doc_id, old, doc))
            staged.changes = [Change(kind, doc_id, old, doc) for kind, doc_id, old, doc in staged.items]
            if staged.items:
                self._staged = staged
        return staged

    def publish_staged(self, staged: Staged) -> None:
        """Tell the change feed what ``stage`` put into memory (once its commit is on its way: a listener that
        writes waits for it)."""
        self.feed.publish(staged.changes)

    def commit_staged(self, staged: Staged) -> int:
        """The second half, from any thread (a worker): what ``stage`` changed that differs from what was
        stored is serialised, written and committed (one transaction; the library's calls release the GIL);
        the feed and the backups follow in ``apply_committed`` on the store's thread. If the file refuses it,
        memory is put back there and this raises (StoreWriteError: nothing was kept). Returns the count."""
        try:
            written = [(kind, doc_id, old, doc, _key(kind, doc_id)) for kind, doc_id, old, doc in staged.items]
            bodies = [None if doc is None else doc.model_dump_json(context=STORE_CONTEXT).encode()
                      for _k, _i, _o, doc, _key_ in written]
            with self._lock:
                self._writable()
                saved: dict[str, int | None] = {}
                start = (self.generation, self._digest)
                try:
                    with self._writing():
                        self._db.begin()
                        for (_kind, _id, _old, _doc, key), body in zip(written, bodies, strict=True):
                            old_crc = self._crcs.get(key)
                            saved.setdefault(key, old_crc)
                            if body is None:
                                self._db.delete(key)
                                self._crcs.pop(key, None)
                                crc = 0
                            else:
                                value = encode_record(key, body)
                                self._db.store(key, value)
                                crc = int(value[:8], 16)
                                self._crcs[key] = crc
                            self._digest = (self._digest - (old_crc or 0) + crc) % DIGEST_MOD
                        if written:
                            self.generation += 1
                            self._db.store(MANIFEST_KEY,
                                           encode_manifest(self.generation, len(self._crcs), self._digest))
                        self._db.commit()
                except BaseException:
                    with contextlib.suppress(unqlite.UnQLiteError):
                        self._db.rollback()
                    for key, crc_before in saved.items():
                        if crc_before is None:
                            self._crcs.pop(key, None)
                        else:
                            self._crcs[key] = crc_before
                    self.generation, self._digest = start
                    raise
                self._wrote()
        except BaseException:
            staged.failed = True
            raise
        finally:
            with self._lock:
                self._committed.append(staged)
            staged.done.set()
        return len(staged.items)

    def apply_committed(self) -> None:
        """On the store's thread: what ``commit_staged`` ended, in commit order: where the file refused it,
        memory put back and the feed told. Every transaction does it first; the monitoring writer at once."""
        self._wait_staged()
        with self._lock:
            self._apply_committed()

    def _wait_staged(self) -> None:
        """Staged and not yet committed: a writer waits for it (never holding the lock, which the commit
        takes), so the file takes it before what comes next."""
        staged = self._staged
        if staged is not None and not staged.done.wait(STAGED_WAIT):
            log.error("a monitoring write to %s has not ended in %.0f s: writing past it", self.path, STAGED_WAIT)

    def _apply_committed(self) -> None:
        while self._committed:
            staged = self._committed.popleft()
            if self._staged is staged:
                self._staged = None
            if staged.failed:
                for kind, doc_id, old, doc in reversed(staged.items):
                    if old is None:
                        self._docs[kind].pop(doc_id, None)
                    else:
                        self._docs[kind][doc_id] = old
                    self._index(doc, old)
                self.feed.publish([Change(kind, doc_id, doc, old) for kind, doc_id, old, doc in staged.items])
                continue
            if staged.items:
                self._backup_after_commit()

    def _commit_history(self) -> None:
        entries, self._tx_history = self._tx_history, []
        if not entries:
            return
        if self.history is None:
            raise StoreError("the store has no history open")
        try:
            self.history.append(entries)
        except HistoryError as error:
            reason = _disk_trouble(self.data_dir) or str(error)
            if self.write_failure is None:
                log.error("writing the history fails (%s): nothing new is recorded until that is fixed; kerub-tui "
                          "keeps running", reason)
            self.write_failure = reason
            raise StoreWriteError(f"cannot write to {self.history.path}: {reason}; nothing was changed") from None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write to the file: if the disk refuses it, one StoreWriteError line saying why."""
        try:
            yield
        except (unqlite.UnQLiteError, OSError) as error:
            raise self._write_error(error) from None

    def _write_error(self, error: Exception) -> StoreWriteError:
        reason = _disk_trouble(self.data_dir) or f"{type(error).__name__}: {error}"
        if self.write_failure is None:
            log.error("writing %s fails (%s): nothing new is recorded until that is fixed; kerub-tui keeps "
                      "running", self.path, reason)
        self.write_failure = reason
        return StoreWriteError(f"cannot write to {self.path}: {reason}; nothing was changed")

    def _rollback(self) -> None:
        with contextlib.suppress(unqlite.UnQLiteError):
            self._db.rollback()
        for kind, doc_id, old, old_crc in reversed(self._tx_undo):
            current = self._docs[kind].get(doc_id)  # written in this transaction: parsed
            if old is None:
                self._docs[kind].pop(doc_id, None)
            else:
                self._docs[kind][doc_id] = old
            self._index(current, old)
            if old_crc is None:
                self._crcs.pop(_key(kind, doc_id), None)
            else:
                self._crcs[_key(kind, doc_id)] = old_crc
        self.generation, self._digest = self._tx_start
        self._tx_undo = []
        self._tx_changes = []
        self._tx_history = []

    def put(self, doc: D) -> D:
        if type(doc) not in _DOCUMENT_CLASSES:
            raise TypeError(f"not a storable document: {type(doc).__name__}")
        if self._tx_depth and self._tx_thread == threading.get_ident():
            self._put(doc)  # inside this thread's transaction (the common case of many puts)
        else:
            with self.transaction():
                self._put(doc)
        return doc

    def _put(self, doc: Document) -> None:
        kind, doc_id = doc.kind, doc.id
        if kind in HISTORY_KINDS:  # appended to the history when the transaction commits
            self._tx_history.append(doc)
            self._tx_changes.append(Change(kind, doc_id, None, doc))
            return
        old = self._parsed(kind, doc_id)
        if old == doc:
            return  # nothing changed: no write, no change event
        key = _key(kind, doc_id)
        value, crc = encode_record_crc(key, doc.model_dump_json(context=STORE_CONTEXT).encode())
        try:
            self._db.store(key, value)
        except (unqlite.UnQLiteError, OSError) as error:
            raise self._write_error(error) from None
        old_crc = self._crcs.get(key)
        self._tx_undo.append((kind, doc_id, old, old_crc))
        self._crcs[key] = crc
        self._digest = (self._digest - (old_crc or 0) + crc) % DIGEST_MOD
        self._docs[kind][doc_id] = doc
        if self._indexed:
            self._index(old, doc)
        self._tx_changes.append(Change(kind, doc_id, old, doc))

    def put_many(self, docs: builtins.list[Document]) -> None:
        with self.transaction():
            for doc in docs:
                self.put(doc)

    def delete(self, kind_or_cls: str | type[Document], doc_id: str) -> bool:
        kind = _kind_of(kind_or_cls)
        if kind in HISTORY_KINDS:
            raise StoreError(f"the history is append-only: {kind} entries go when the retention says so")
        with self.transaction():
            old = self._parsed(kind, doc_id)
            if old is None:
                return False
            key = _key(kind, doc_id)
            with self._writing():
                self._db.delete(key)
            old_crc = self._crcs.pop(key, None)
            self._tx_undo.append((kind, doc_id, old, old_crc))
            self._digest = (self._digest - (old_crc or 0)) % DIGEST_MOD
            del self._docs[kind][doc_id]
            self._index(old, None)
            self._tx_changes.append(Change(kind, doc_id, old, None))
        return True

    # --- backups ----------------------------------------------------------------------------

    @property
    def backups(self) -> Backups:
        """The data dir's rotated backups (``kerub_tui.core.backup.Backups``)."""
        if self._backups is None:
            from .backup import Backups

            self._backups = Backups(self.data_dir)
        return self._backups

    def backup(self) -> Path:
        """Write a backup of every document now (``backups/`` in the data dir, rotated)."""
        self._writable()
        self.wait_for_backup()
        path = self.backups.write(self._documents_json(), self.generation)
        self._commits_since_backup = 0
        self._last_backup_at = time.monotonic()
        return path

    def _documents_json(self) -> builtins.list[bytes]:
        """Every document's JSON in ``all_documents``' order: a record not parsed yet as the file holds it (its
        checksum held; a backup is validated document by document when it is read back), the others serialised."""
        return _in_order(self._documents_pairs())

    def _documents_pairs(self) -> builtins.list[tuple[str, bytes]]:
        pairs = builtins.list(self._raw.items())
        pairs += [(_key(kind, doc_id), doc.model_dump_json(context=STORE_CONTEXT).encode())
                  for kind, docs in self._docs.items() for doc_id, doc in docs.items()]
        return pairs

    def _backup_in_background(self) -> None:
        """The backup an open makes, written by a thread of its own: the documents are taken now (the records
        as read), sorting and writing them is off the open's path. ``wait_for_backup`` waits for it."""
        pairs, generation = self._documents_pairs(), self.generation
        backups = self.backups

        def write() -> None:
            try:
                backups.write(_in_order(pairs), generation)
            except OSError as error:  # a backup that cannot be written never stops a start
                log.warning("no backup of %s could be written: %s", self.path, error)

        self._commits_since_backup = 0
        self._last_backup_at = time.monotonic()
        self._backup_thread = threading.Thread(target=write, name="kerub-store-backup", daemon=True)
        self._backup_thread.start()

    def wait_for_backup(self) -> None:
        """Until the backup the open started is written (the next backup, ``close``, tests)."""
        thread, self._backup_thread = self._backup_thread, None
        if thread is not None:
            thread.join()

    def _try_backup(self) -> Path | None:
        try:
            return self.backup()
        except OSError as error:  # a backup that cannot be written never stops a write or a start
            log.warning("no backup of %s could be written: %s", self.path, error)
            return None

    def backup_if_changed(self) -> Path | None:
        """A backup unless the newest one already holds this generation (a controller's start)."""
        self.wait_for_backup()
        newest = self.backups.newest()
        if newest is not None and newest.generation == self.generation:
            return None
        return self._try_backup()

    def _backup_at_open(self) -> None:
        from .backup import BACKUP_EVERY_COMMITS, BACKUP_MAX_AGE

        # What a writer or a repair killed mid-way left: temp files, never taken for the real ones.
        integrity.remove_temps(self.data_dir)
        integrity.remove_temps(self.data_dir / integrity.BACKUP_DIR)
        newest = self.backups.newest()
        if newest is None:
            if self.generation > 1 or self._raw or any(self._docs.values()):
                self._backup_in_background()
        elif newest.generation != self.generation and (
                self.generation - newest.generation >= BACKUP_EVERY_COMMITS or newest.age() >= BACKUP_MAX_AGE):
            self._backup_in_background()

    def _backup_after_commit(self) -> None:
        from .backup import BACKUP_EVERY_COMMITS, BACKUP_MIN_INTERVAL

        self._commits_since_backup += 1
        if (self._commits_since_backup >= BACKUP_EVERY_COMMITS
                and time.monotonic() - self._last_backup_at >= BACKUP_MIN_INTERVAL):
            self._try_backup()

    # --- mirrors ----------------------------------------------------------------------------

    @classmethod
    def mirror(cls, data_dir: Path | str, documents: builtins.list[Document]) -> Store:
        """A read-only, in-memory copy of another process's store, kept current with ``apply``.

        An attached console reads it exactly like a local store; all changes go to the owner.
        """
        store = cls(Path(data_dir), readonly=True)
        legacy = [doc for doc in documents if doc.kind in HISTORY_KINDS]
        for doc in documents:
            if doc.kind not in HISTORY_KINDS:
                store._docs[doc.kind][doc.id] = doc
                store._index(None, doc)
        store._open_history_readonly(legacy)  # the owner's history file, read as it grows
        return store

    def apply(self, kind: str, doc_id: str, new: Document | None) -> None:
        """Apply a change committed elsewhere (mirrors only) and publish it on this feed."""
        if self._db is not None:
            raise StoreError("apply() is for mirrors: a store with a file is changed with put/delete")
        if kind in HISTORY_KINDS:  # already in the owner's history file (a copy's: added to it)
            if new is not None and self.history is not None:
                self.history.seen(new)
            self.feed.publish([Change(kind, doc_id, None, new)])
            return
        old = self._parsed(kind, doc_id)
        if new is None:
            self._docs[kind].pop(doc_id, None)
        else:
            self._docs[kind][doc_id] = new
        self._index(old, new)
        self.feed.publish([Change(kind, doc_id, old, new)])

    # --- export and import ------------------------------------------------------------------

    def export_data(self) -> dict[str, Any]:
        return {
            "format": EXPORT_FORMAT,
            "schema_version": SCHEMA_VERSION,
            "exported_at": dt.datetime.now(dt.UTC).isoformat(),
            "documents": [doc.model_dump(mode="json") for doc in self.all_documents()]
            + [doc.model_dump(mode="json") for doc in self.history_documents()],
        }

    def export_file(self, path: Path | str) -> int:
        """Write every document as JSON to ``path`` (atomically, 0600). Returns the count.

        A failure (no such directory, a directory given, a full disk) is one StoreError line and
        leaves nothing behind: no temporary copy of the store, an existing ``path`` untouched."""
        path = Path(path)
        if path.is_dir():
            raise StoreError(f"cannot export to {path}: it is a directory; name a file in it")
        if not path.parent.is_dir():
            raise StoreError(f"cannot export to {path}: there is no directory {path.parent}")
        data = self.export_data()
        tmp: str | None = None
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # 0600
            with os.fdopen(fd, "w") as out:
                json.dump(data, out, indent=1, sort_keys=True)
                out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            tmp = None
        except OSError as error:
            raise StoreError(f"cannot export to {path}: {error.strerror or error}") from None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
        return len(data["documents"])

    def import_file(self, path: Path | str, *, replace: bool = False) -> int:
        """Load an export. Every document is validated before anything is written.

        Into an empty store, or with ``replace`` (every current document is removed first, in the
        same transaction). Returns the number of documents imported.
        """
        try:
            data = json.loads(Path(path).read_text())
        except OSError as error:
            raise StoreError(f"cannot read {path}: {error.strerror}") from None
        except ValueError as error:
            raise StoreError(f"{path} is not JSON: {error}") from None
        except RecursionError:  # no export nests that deep: refused, not a crash
            raise StoreError(f"{path} is not a kerub-tui export: its JSON is nested too deep") from None
        docs = parse_export(data, str(path))
        existing = len(self._raw) + sum(len(v) for v in self._docs.values())
        if existing and not replace:
            raise StoreError(
                f"the store already holds {existing} documents: import into an empty data dir, "
                "or pass --replace to replace them all"
            )
        with self.transaction():
            for doc in list(self.all_documents()):
                self.delete(doc.kind, doc.id)
            for doc in docs:
                self.put(doc)
        return len(docs)


def _in_order(pairs: list[tuple[str, bytes]]) -> list[bytes]:
    """Documents' JSON by key, in ``Store.all_documents``' order (by kind, then id)."""
    pairs.sort(key=lambda pair: pair[0].replace("/", "\0"))
    return [body for _, body in pairs]


def _migrate(data: dict[str, Any], from_version: int) -> dict[str, Any]:
    version = int(data.get("schema_version", from_version))
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](data)
        version += 1
        data["schema_version"] = version
    return data


def parse_export(data: Any, source: str = "export") -> list[Document]:
    """Validate an export's structure and every document in it; raise StoreError naming the first bad one."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
        raise StoreError(f"{source} is not a kerub-tui export (no format {EXPORT_FORMAT!r})")
    version = data.get("schema_version")
    if not isinstance(version, int):
        raise StoreError(f"{source} has no schema version")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{source} was exported by a newer kerub-tui (schema {version}, this one understands "
            f"up to {SCHEMA_VERSION})"
        )
    raw_docs = data.get("documents")
    if not isinstance(raw_docs, list):
        raise StoreError(f"{source} has no document list")
    docs: list[Document] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_docs):
        if not isinstance(raw, dict):
            raise StoreError(f"{source}: document {index + 1} is not a mapping of fields")
        try:
            doc = parse_document(_migrate(dict(raw), version), context=IMPORT_CONTEXT)  # no secret comes in
        except ValidationError as error:
            raise StoreError(f"{source}: {_label(index, raw)}: {describe(error, _TAGS)}") from None
        except (KeyError, TypeError, ValueError) as error:
            raise StoreError(f"{source}: {_label(index, raw)}: {' '.join(str(error).split())}") from None
        if (doc.kind, doc.id) in seen:
            raise StoreError(f"{source}: document {doc.kind}/{doc.id} appears twice")
        seen.add((doc.kind, doc.id))
        docs.append(doc)
    _check_references(docs, source)
    return docs


# Tag values of the tagged unions in documents: in validation error locations, but not fields.
_TAGS = frozenset(DOCUMENT_TYPES) | frozenset(VM_EXPECTATION_TYPES) | frozenset(DISK_EXPECTATION_TYPES) | {
    "lvm", "file", "zfs", "gvinum"}
_NAMED_KINDS = {"host": "host", "vm": "VM", "disk": "disk"}  # names an admin uses: unique per kind


def _label(index: int, raw: dict[str, Any]) -> str:
    kind, name, doc_id = raw.get("kind"), raw.get("name"), raw.get("id")
    what = f"{kind}" if isinstance(kind, str) and kind else "document"
    if isinstance(name, str) and name:
        what += f" {name[:40]!r}"
    elif isinstance(doc_id, str) and doc_id:
        what += f" {doc_id[:40]}"
    return f"document {index + 1} ({what})"


def _check_references(docs: list[Document], source: str) -> None:
    """What each document is valid alone but not together: two VMs (hosts, disks) with one name,
    a VM attached to a disk the export does not hold."""
    named: dict[tuple[str, str], Document] = {}
    for doc in docs:
        name = getattr(doc, "name", None)
        if doc.kind in _NAMED_KINDS and isinstance(name, str):
            first = named.setdefault((doc.kind, name), doc)
            if first is not doc:
                raise StoreError(f"{source}: two {_NAMED_KINDS[doc.kind]}s are named {name!r} "
                                 f"({first.id} and {doc.id}): names must be unique")
    disks = {doc.id for doc in docs if isinstance(doc, VirtualStorageDevice)}
    for doc in docs:
        if isinstance(doc, VirtualMachine):
            for link in doc.disks:
                if link.disk_id not in disks:
                    raise StoreError(f"{source}: VM {doc.name!r} uses disk {link.disk_id}, which the export "
                                     "does not hold")
