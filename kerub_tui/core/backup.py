"""Automatic backups of the store, and ``kerub-tui check [--repair]``.

A backup is an export (the format ``kerub-tui import`` reads) with the store's generation, written
0600 into ``backups/`` in the data dir through a temp file (fsync, rename): a writer killed while
writing one leaves only a ``.tmp-*`` file, never half a backup, and the next backup removes it.
The newest ``BACKUP_KEEP`` are kept. The store makes one when it opens and none exists (or the
newest is old), after every ``BACKUP_EVERY_COMMITS`` commits (at most every ``BACKUP_MIN_INTERVAL``
seconds), and the controller makes one at its start when anything changed since the newest.

``repair`` never changes or deletes the damaged file: it reads a copy, salvages every record whose
checksum holds and that is a valid document, takes what is missing or damaged from the newest
backup that reads, writes a new store and keeps the damaged file aside under a new name.
"""

from __future__ import annotations

import builtins
import datetime as dt
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import unqlite

from . import integrity
from .history import HistoryError
from .metrics import Metrics
from .models import SCHEMA_VERSION, STORE_CONTEXT, Document
from .paths import STORE_FILE
from .store import EXPORT_FORMAT, Store, StoreError, StoreLocked, _key, parse_export

BACKUP_KEEP = 7
BACKUP_EVERY_COMMITS = 500
BACKUP_MIN_INTERVAL = 600.0  # seconds between backups made after commits
BACKUP_MAX_AGE = 3600.0  # a store opened with a newer generation than a backup this old gets a new one

_NAME = re.compile(r"^kerub-(\d{8}T\d{6})\.(\d{6})Z-g(\d+)\.json$")


@dataclass(frozen=True)
class BackupInfo:
    path: Path
    taken: dt.datetime
    generation: int

    def age(self) -> float:
        return (dt.datetime.now(dt.UTC) - self.taken).total_seconds()

    def describe(self) -> str:
        return f"{self.path.name} ({self.taken:%Y-%m-%d %H:%M:%S} UTC, generation {self.generation})"


class Backups:
    """The rotated backups in ``<data dir>/backups``, newest first."""

    def __init__(self, data_dir: Path) -> None:
        self.dir = Path(data_dir) / integrity.BACKUP_DIR

    def list(self) -> list[BackupInfo]:
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        found = []
        for name in names:
            match = _NAME.match(name)
            if match:
                taken = dt.datetime.strptime(match[1], "%Y%m%dT%H%M%S").replace(
                    microsecond=int(match[2]), tzinfo=dt.UTC)
                found.append(BackupInfo(self.dir / name, taken, int(match[3])))
        return sorted(found, key=lambda b: (b.taken, b.generation), reverse=True)

    def newest(self) -> BackupInfo | None:
        backups = self.list()
        return backups[0] if backups else None

    def write(self, documents_json: builtins.list[str] | builtins.list[bytes], generation: int) -> Path:
        """Write a backup from documents already serialised as JSON; rotate; return its path."""
        if not self.dir.exists():
            self.dir.mkdir(mode=0o700)
        integrity.remove_temps(self.dir)
        now = dt.datetime.now(dt.UTC)
        newest = self.newest()
        if newest is not None and now <= newest.taken:  # the clock went back, or two in one microsecond
            now = newest.taken + dt.timedelta(microseconds=1)
        path = self.dir / f"kerub-{now:%Y%m%dT%H%M%S}.{now.microsecond:06d}Z-g{generation}.json"
        head = json.dumps({"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "generation": generation,
                           "exported_at": now.isoformat()})
        bodies = [body if isinstance(body, bytes) else body.encode() for body in documents_json]
        data = (head[:-1] + ', "documents": [\n').encode() + b",\n".join(bodies) + b"\n]}\n"
        integrity.write_atomically(path, data)
        for old in self.list()[BACKUP_KEEP:]:
            old.path.unlink(missing_ok=True)
        return path

    def load(self, info: BackupInfo) -> builtins.list[Document]:
        """Every document of one backup, validated (StoreError if it does not read)."""
        try:
            data = json.loads(info.path.read_bytes())
        except OSError as error:
            raise StoreError(f"cannot read {info.path}: {error.strerror}") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise StoreError(f"{info.path} is not JSON: {error}") from None
        return parse_export(data, str(info.path))

    def newest_good(self, notes: builtins.list[str]) -> tuple[BackupInfo, builtins.list[Document]] | None:
        """The newest backup that reads; every one that does not is noted."""
        for info in self.list():
            try:
                return info, self.load(info)
            except StoreError as error:
                notes.append(f"backup {info.path.name} does not read: {error}")
        return None


# --- check and repair -----------------------------------------------------------------------------


@dataclass
class CheckResult:
    sound: bool
    lines: list[str] = field(default_factory=list)


def check(data_dir: Path) -> CheckResult:
    """Verify the store of ``data_dir`` (a read-only snapshot: a running controller is no obstacle)."""
    data_dir = Path(data_dir)
    path = data_dir / STORE_FILE
    backups = Backups(data_dir)
    if not path.exists() and not integrity.store_existed(data_dir):
        return CheckResult(True, [f"no store in {data_dir} yet: nothing to check"])
    store = Store.open(data_dir, readonly=True)
    try:
        count = sum(1 for _ in store.all_documents())
        newest = backups.newest()
        backup_line = (f"{len(backups.list())} backups, the newest {newest.describe()}" if newest
                       else "no backup yet")
        history_problems = _history_problems(store)
        if history_problems and not store.damage:
            return CheckResult(False, history_problems)
        counts = {kind: store.count(kind) for kind in ("audit", "event")} if not history_problems else {}
        if not store.damage:
            return CheckResult(True, [f"{path} is sound: {count} documents, generation {store.generation}; "
                                      f"{backup_line}; the history holds {counts['audit']} audit entries and "
                                      f"{counts['event']} events"])
        lines = [f"{path} is damaged:"]
        lines += [f"  {problem}" for problem in store.damage]
        lines += [f"  damaged record {key.removeprefix(integrity.DOC_PREFIX)}: {why}"
                  for key, why in sorted(store.unreadable.items())]
        lines.append(f"  {count} documents read; {backup_line}")
        lines.append(f"run `kerub-tui --data-dir {data_dir} check --repair` to salvage what reads, restore the "
                     "rest from the newest backup and keep the damaged file aside")
        return CheckResult(False, lines + history_problems)
    finally:
        store.close()


def _history_problems(store: Store) -> list[str]:
    """What sqlite finds wrong in the history file and the metrics file, with what to do; [] when sound."""
    history = store.history
    try:
        problems = history.check() if history is not None else []
    except HistoryError as error:
        problems = [str(error)]
    lines = [] if not problems or history is None else [
        f"{history.path} is damaged: {'; '.join(problems[:5])}",
        f"stop kerub-tui and move {history.path} aside: the next start begins a new history (the documents "
        "are not affected)"]
    with Metrics(store.data_dir) as metrics:
        problems = metrics.check()
    if problems:
        lines += [f"{metrics.path} is damaged: {'; '.join(problems[:5])}",
                  f"stop kerub-tui and move {metrics.path} aside: the next start begins new graphs (the documents "
                  "and the history are not affected)"]
    return lines


def repair(data_dir: Path) -> CheckResult:
    """Mend a damaged store: salvage, restore from the newest good backup, rebuild; keep the damaged file."""
    data_dir = Path(data_dir)
    path = data_dir / STORE_FILE
    journal = path.with_name(path.name + "_unqlite_journal")
    locker = Store(data_dir)
    try:
        locker._acquire_lock()
    except StoreLocked:
        pid = Store.holder_pid(data_dir)
        raise StoreError(f"refusing to repair {path} while a kerub-tui ({f'pid {pid}' if pid else 'another process'}) "
                         "runs on the data dir: stop it first") from None
    try:
        existed = integrity.store_existed(data_dir)
        if not path.exists() and not existed:
            return CheckResult(True, [f"no store in {data_dir}: nothing to repair"])
        reading, probe = _salvage(data_dir, path, journal, existed)
        if not probe.damage:
            count = sum(1 for _ in probe.all_documents())
            return CheckResult(True, [f"{path} is sound: {count} documents, generation {probe.generation}; "
                                      "nothing to repair"])
        lines = [f"{path} is damaged: {'; '.join(probe.damage)}"]
        salvaged = {_key(doc.kind, doc.id): doc for doc in probe.all_documents()}
        lines.append(f"salvaged {len(salvaged)} documents whose checksums hold")
        notes: list[str] = []
        good = Backups(data_dir).newest_good(notes)
        lines += notes
        known_bad = set(probe.unreadable)
        manifest = reading.manifest
        missing = reading.missing
        restored: dict[str, Document] = {}
        generation = manifest.generation if manifest is not None else 0
        if good is not None:
            info, docs = good
            generation = max(generation, info.generation)
            backup_keys = {_key(doc.kind, doc.id) for doc in docs}
            # A damaged record whose key the backup does not know may have a damaged key: its
            # document is then one of those the backup has and the file does not.
            unknown_identity = bool(known_bad - backup_keys)
            for doc in docs:
                key = _key(doc.kind, doc.id)
                if key in salvaged:
                    continue
                # Only what is damaged or missing: with a manifest that counts nothing missing, a
                # document absent from the file was deleted after the backup and stays deleted.
                if key in known_bad or missing is None or missing > 0 or unknown_identity:
                    restored[key] = doc
            stale = (f"; the store was at generation {manifest.generation}: changes made to them since are lost"
                     if manifest is not None and manifest.generation != info.generation and restored else "")
            lines.append(f"restored {len(restored)} documents from the backup {info.describe()}{stale}")
        else:
            lines.append("no backup to restore from")
        total = len(salvaged) + len(restored)
        unrestored = sorted(k.removeprefix(integrity.DOC_PREFIX) for k in known_bad - restored.keys())
        if manifest is not None:
            lost_count = manifest.count - total
            if total > manifest.count:
                lines.append(f"  {total - manifest.count} documents more than the manifest counted: documents "
                             "deleted after that backup may be back")
            if lost_count <= 0:
                lines.append("lost: nothing")
            else:
                named = unrestored[:lost_count]
                rest = lost_count - len(named)
                lines.append("lost: " + ", ".join(named + ([f"{rest} documents missing from the file and from the "
                                                            "backup"] if rest else [])))
        elif unrestored:
            lines.append(f"lost: {', '.join(unrestored)}, and whatever else the file held that could not be read "
                         "(its manifest is gone: nothing says how much)")
        elif good is None:
            lines.append("lost: whatever the file held that could not be read (no backup, and its manifest is "
                         "gone: nothing says how much)")
        else:
            lines.append("lost: nothing the backup did not hold (its manifest is gone: a document written after "
                         "the backup, in a damaged page, cannot be counted)")
        documents = {**restored, **salvaged}
        aside = _rebuild(data_dir, path, journal, documents, generation + 1)
        lines.append(f"the damaged file is kept as {aside}")
    finally:
        locker.close()
    store = Store.open(data_dir)
    try:
        backup = store.backup()
        lines.append(f"{path} is repaired: {sum(1 for _ in store.all_documents())} documents, generation "
                     f"{store.generation}; backed up as {backup.name}")
    finally:
        store.close()
    return CheckResult(True, lines)


def _salvage(data_dir: Path, path: Path, journal: Path, existed: bool) -> tuple[integrity.Reading, Store]:
    """Read a copy of the store (so the damaged file is never changed) into a read-only Store."""
    copy = data_dir / f".tmp-salvage-{os.getpid()}.unqlite"
    copy_journal = copy.with_name(copy.name + "_unqlite_journal")
    try:
        size = path.stat().st_size if path.exists() else 0
        if size:
            shutil.copyfile(path, copy)
            if journal.exists():
                shutil.copyfile(journal, copy_journal)
            raw = integrity.read_records(copy, writable=True, salvage=True)
        else:
            raw = integrity.RawRead()
        reading = integrity.verify(raw, existed=existed, file_size=size, page_size=integrity.page_size_of(path))
        if not path.exists():
            reading.problems.insert(0, "the file is missing")
    finally:
        copy.unlink(missing_ok=True)
        copy_journal.unlink(missing_ok=True)
    probe = Store(data_dir, readonly=True)
    probe._apply(reading, lazy=False)
    return reading, probe


def _rebuild(data_dir: Path, path: Path, journal: Path, documents: dict[str, Document], generation: int) -> Path:
    """Write ``documents`` into a new store file, move the damaged one (and its journal) aside, swap."""
    fresh = data_dir / f".tmp-rebuild-{os.getpid()}.unqlite"
    fresh_journal = fresh.with_name(fresh.name + "_unqlite_journal")
    try:
        os.close(os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        db = unqlite.UnQLite(str(fresh), flags=integrity._OPEN_CREATE)
        db.disable_autocommit()
        db.begin()
        digest = 0
        for key, doc in sorted(documents.items()):
            value = integrity.encode_record(key, doc.model_dump_json(context=STORE_CONTEXT))
            digest += int(value[:8], 16)
            db.store(key, value)
        db.store(integrity.META_SCHEMA, str(SCHEMA_VERSION))
        db.store(integrity.MANIFEST_KEY,
                 integrity.encode_manifest(generation, len(documents), digest % integrity.DIGEST_MOD))
        db.commit()
        db.close()
        with open(fresh, "rb+") as handle:
            os.fsync(handle.fileno())
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = path.with_name(f"{path.name}.damaged-{stamp}")
        counter = 1
        while aside.exists() or aside.with_name(aside.name + "_unqlite_journal").exists():
            counter += 1
            aside = path.with_name(f"{path.name}.damaged-{stamp}-{counter}")
        if path.exists():
            os.rename(path, aside)
        else:  # nothing to keep: say so with an empty marker of what was missing
            aside = path.with_name(f"{path.name}.damaged-{stamp}-missing")
            os.close(os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
        if journal.exists():
            os.rename(journal, aside.with_name(aside.name + "_unqlite_journal"))
        os.rename(fresh, path)
        integrity.fsync_dir(data_dir)
    finally:
        fresh.unlink(missing_ok=True)
        fresh_journal.unlink(missing_ok=True)
    integrity.write_marker(data_dir)
    return aside
