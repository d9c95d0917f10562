"""What lets a reader of the store tell damage from an empty or smaller fleet.

Every document record carries a CRC-32 of its key and its JSON (``"%08x " + json``); a manifest
record, written in the same transaction as every change, holds the document count, the sum of
those CRCs and a generation number that every commit raises. A marker file next to the store says
a store lives there, so a store file that is missing, empty or has lost its first pages is damage,
not a new data dir.

The records are read by a forked child that streams them through a pipe: a damaged page can crash
the UnQLite library (a bit flip in a cell's length segfaults it) or make it loop; the child takes
the crash, and the parent keeps every record received before it, reports the damage and never
touches those pages itself.
"""

from __future__ import annotations

import json
import marshal
import os
import select
import signal
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

DOC_PREFIX = "doc/"
META_SCHEMA = "meta/schema_version"
MANIFEST_KEY = "meta/manifest"
MARKER_FILE = "kerub.unqlite.mark"
BACKUP_DIR = "backups"

_OPEN_READONLY = 0x00000001
_OPEN_CREATE = 0x00000004
_OPEN_MMAP = 0x00000100

# Frames from the reading child: kind byte, payload length, payload. A batch's payload is a marshalled
# pair of lists (C speed on both sides): the records read, (key, value), and those that could not be,
# (key or "", why); a failure's payload is its message.
_FRAME = struct.Struct("!cI")
_BATCH, _FAILED, _DONE = b"R", b"F", b"D"
# A child that sends nothing for this long is stuck in a damaged page chain.
STALL_SECONDS = 30.0


def record_crc(key: str, body: bytes) -> int:
    return zlib.crc32(body, zlib.crc32(key.encode() + b"\n"))


def encode_record(key: str, body: str | bytes) -> bytes:
    """A record value: its CRC as 8 hex digits, a space, the JSON body."""
    return encode_record_crc(key, body.encode() if isinstance(body, str) else body)[0]


def encode_record_crc(key: str, body: bytes) -> tuple[bytes, int]:
    """A record value and its CRC."""
    crc = zlib.crc32(body, zlib.crc32(key.encode() + b"\n"))
    return b"%08x " % crc + body, crc


def decode_record(key: str, value: bytes) -> tuple[bytes, int | None]:
    """The JSON body and its CRC; the CRC is None for a record written before checksums (plain JSON).

    Raises ValueError when the checksum does not match.
    """
    if value[:1] == b"{":
        return value, None
    if len(value) < 10 or value[8:9] != b" ":
        raise ValueError("no checksum header")
    try:
        stored = int(value[:8], 16)
    except ValueError:
        raise ValueError("no checksum header") from None
    body = value[9:]
    crc = record_crc(key, body)
    if crc != stored:
        raise ValueError(f"checksum mismatch (stored {stored:08x}, computed {crc:08x})")
    return body, crc


def encode_manifest(generation: int, count: int, digest: int) -> bytes:
    body = json.dumps({"generation": generation, "count": count, "digest": digest}, sort_keys=True)
    return encode_record(MANIFEST_KEY, body)


@dataclass
class Manifest:
    generation: int
    count: int
    digest: int


def decode_manifest(value: bytes) -> Manifest:
    body, crc = decode_record(MANIFEST_KEY, value)
    if crc is None:
        raise ValueError("no checksum")
    data = json.loads(body)
    return Manifest(int(data["generation"]), int(data["count"]), int(data["digest"]))


DIGEST_MOD = 1 << 64


# --- reading the file in a child ------------------------------------------------------------------


@dataclass
class RawRead:
    """Every record the child could read, in file order, and why reading stopped early (if it did)."""

    records: list[tuple[str, bytes]] = field(default_factory=list)  # in file order, but for those in checked
    # Document records seen once whose checksum held when they arrived (their body, their CRC), by key.
    checked: dict[str, bytes] = field(default_factory=dict)
    checked_crcs: dict[str, int] = field(default_factory=dict)
    bad_keys: list[str] = field(default_factory=list)  # records whose key or value could not be read
    failure: str | None = None
    busy: bool = False  # the library said the file is locked (a writer mid-commit): try again


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _child(path: str, flags: int, fd: int, batch: int) -> None:
    """In the forked child: open, walk every record with a cursor, send them. Never returns.

    Records go out in batches of ``batch`` bytes (0: each at once, so a crash loses none read before it).
    """
    status = 0
    good: list[tuple[str, bytes]] = []
    bad: list[tuple[str, str]] = []
    size = 0

    def send() -> None:
        nonlocal size
        payload = marshal.dumps((good, bad))
        _write_all(fd, _FRAME.pack(_BATCH, len(payload)) + payload)
        good.clear()
        bad.clear()
        size = 0

    try:
        import faulthandler

        faulthandler.disable()  # a crash here is reported by the parent, not as a dump on the terminal
        import unqlite

        db = unqlite.UnQLite(path, flags=flags)
        cursor = db.cursor()
        try:
            cursor.first()
        except (StopIteration, unqlite.UnQLiteError):
            pass
        while cursor.is_valid():
            # Fast: the binding's own iteration (key, value, next in one call). It stops without a word
            # at a record it cannot read, leaving the cursor on it: that one is read below, with its error.
            for key, value in cursor:
                if isinstance(key, str):
                    good.append((key, value))
                    size += len(value) + 64
                else:  # not UTF-8: the binding gives the bytes
                    bad.append((repr(bytes(key))[2:-1], "unreadable record"))
                if size >= batch:
                    send()
            if not cursor.is_valid():
                break
            try:
                key = cursor.key()
            except Exception as error:  # a damaged key: say so, go on with the next record
                bad.append(("", f"(unreadable key: {type(error).__name__}: {error})"))
            else:
                if not isinstance(key, str):  # not UTF-8: the binding gives the bytes
                    bad.append((repr(bytes(key))[2:-1], "unreadable record"))
                else:
                    try:
                        value = cursor.value()
                        good.append((key, value if isinstance(value, bytes) else str(value).encode()))
                        size += len(value) + 64
                    except Exception as error:
                        bad.append((key, f"{type(error).__name__}: {error}"))
                if size >= batch:
                    send()
            try:
                cursor.next_entry()
            except StopIteration:
                break
        db.close()
        if good or bad:
            send()
        _write_all(fd, _FRAME.pack(_DONE, 0))
    except BaseException as error:
        status = 3
        try:
            if good or bad:
                send()
            message = f"{type(error).__name__}: {error}".encode(errors="replace")[:500]
            _write_all(fd, _FRAME.pack(_FAILED, len(message)) + message)
        except BaseException:
            pass
    finally:
        os._exit(status)


def read_records(path: Path, *, writable: bool, salvage: bool = False) -> RawRead:
    """Read every record of the UnQLite file at ``path`` through a forked child.

    ``writable`` opens it read-write in the child, so a hot journal left by a killed writer is
    rolled back (the caller holds the data dir's lock); otherwise read-only. ``salvage`` sends
    each record as soon as it is read (slower), so a crash loses none read before it.
    """
    from .unqlite_file import CALLS

    result = RawRead()
    read_fd, write_fd = os.pipe()
    with CALLS:  # no UnQLite call runs in another thread while the process forks (its mutexes)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child exits from _child
        os.close(read_fd)
        if writable and not path.with_name(path.name + "_unqlite_journal").exists():
            flags = _OPEN_READONLY | _OPEN_MMAP  # no journal to roll back: a read-only view of the file
        else:
            flags = _OPEN_CREATE if writable else _OPEN_READONLY
        _child(str(path), flags, write_fd, 0 if salvage else 1 << 18)
    os.close(write_fd)
    pending = bytearray()
    done, failure = False, None
    killed = False
    try:
        poller = select.poll()
        poller.register(read_fd, select.POLLIN | select.POLLHUP)
        last = time.monotonic()
        while True:
            if not poller.poll(1000):
                if time.monotonic() - last > STALL_SECONDS:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
                    break
                continue
            chunk = os.read(read_fd, 1 << 20)
            if not chunk:
                break
            last = time.monotonic()
            pending += chunk
            # Each whole batch is checked as it comes, while the child reads the next.
            used, batch_done, batch_failure = _parse_frames(pending, result)
            del pending[:used]
            done = done or batch_done
            failure = batch_failure or failure
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)
    if killed:
        result.failure = f"reading it stalled for {STALL_SECONDS:.0f} s (a damaged page chain)"
    elif failure is not None:
        result.failure = f"the database library failed reading it ({failure})"
        result.busy = "UnQLiteError" in failure and ("busy" in failure.lower() or "locked" in failure.lower())
    elif os.WIFSIGNALED(status):
        name = signal.Signals(os.WTERMSIG(status)).name
        result.failure = f"reading it crashes the database library ({name})"
    elif not done:
        result.failure = "reading it stopped before the end"
    return result


def _parse_frames(data: bytearray, result: RawRead) -> tuple[int, bool, str | None]:
    """Take the whole frames at the start of ``data`` into ``result``: (bytes used, done, failure).

    A record seen for the first time whose checksum holds goes to ``result.checked`` at once (the
    common case, checked while the child reads on); every other one to ``result.records``, for ``verify``.
    """
    done = False
    failure: str | None = None
    offset = 0
    header = _FRAME.size
    checked, crcs, records = result.checked, result.checked_crcs, result.records
    crc32 = zlib.crc32
    while len(data) - offset >= header:
        kind, length = _FRAME.unpack_from(data, offset)
        end = offset + header + length
        if end > len(data):
            break
        payload = bytes(data[offset + header:end])
        offset = end
        if kind == _BATCH:
            good, bad = marshal.loads(payload)
            for key, value in good:
                if value[8:9] == b" " and key.startswith(DOC_PREFIX) and key not in checked:
                    try:
                        stored = int(value[:8], 16)
                    except ValueError:
                        stored = -1
                    body = value[9:]
                    crc = crc32(body, crc32(key.encode() + b"\n"))
                    if crc == stored:
                        checked[key] = body
                        crcs[key] = crc
                        continue
                records.append((key, value))
            result.bad_keys += [key or why for key, why in bad]
        elif kind == _FAILED:
            failure = payload.decode(errors="replace")
        elif kind == _DONE:
            done = True
    return offset, done, failure


# --- what a reading says --------------------------------------------------------------------------


@dataclass
class Reading:
    """The verified content of a store file: bodies by key, and every problem found."""

    bodies: dict[str, bytes] = field(default_factory=dict)  # doc records whose checksum holds
    crcs: dict[str, int] = field(default_factory=dict)
    schema: int | None = None
    manifest: Manifest | None = None
    legacy: bool = False  # records without checksums and no manifest: a store from before them
    problems: list[str] = field(default_factory=list)
    damaged_keys: dict[str, str] = field(default_factory=dict)  # key -> why
    records: int = 0  # doc records found, readable or not
    missing: int | None = None  # how many the manifest counts that were not found (None: no manifest)

    @property
    def damaged(self) -> bool:
        return bool(self.problems)

    def summary(self) -> str:
        return "; ".join(self.problems)


def _names(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(k.removeprefix(DOC_PREFIX) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def verify(raw: RawRead, *, existed: bool, file_size: int, page_size: int) -> Reading:
    """Check the records of one reading against their checksums and the manifest."""
    reading = Reading()
    plain: list[str] = []
    manifest_error: str | None = None
    read_twice: set[str] = set()
    reading.bodies.update(raw.checked)
    reading.crcs.update(raw.checked_crcs)
    reading.records = len(raw.checked)
    for key, value in raw.records:
        if key == META_SCHEMA:
            try:
                reading.schema = int(value.decode())
            except (UnicodeDecodeError, ValueError):
                reading.problems.append("the schema version record is damaged")
            continue
        if key == MANIFEST_KEY:
            try:
                reading.manifest = decode_manifest(value)
            except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
                manifest_error = str(error)
            continue
        if not key.startswith(DOC_PREFIX):
            continue
        reading.records += 1
        if key in reading.bodies or key in reading.damaged_keys:
            # A damaged page chain hands a record over again (and may skip another): the copy whose
            # checksum holds is kept, and the count is of documents, not of records.
            read_twice.add(key)
        try:
            body, crc = decode_record(key, value)
        except ValueError as error:
            if key not in reading.bodies:
                reading.damaged_keys[key] = str(error)
            continue
        reading.damaged_keys.pop(key, None)
        if crc is None:
            plain.append(key)
            crc = record_crc(key, body)
        reading.bodies[key] = body
        reading.crcs[key] = crc
    for key in raw.bad_keys:
        if key in reading.bodies:
            read_twice.add(key)
        else:
            reading.damaged_keys.setdefault(key, "unreadable record")
    if raw.failure:
        reading.problems.append(raw.failure)
    if file_size % page_size:
        reading.problems.append(f"its size ({file_size} bytes) is not a whole number of {page_size}-byte pages "
                                "(junk appended, or cut short)")
    manifest = reading.manifest
    if manifest is None:
        if manifest_error is not None:
            reading.problems.append(f"its manifest is damaged ({manifest_error})")
        elif existed and file_size == 0:
            reading.problems.append("the file is empty, but a store was kept here (the marker and backups say so)")
        elif existed:
            reading.problems.append("its manifest is missing, but a store with one was kept here")
        elif reading.crcs and len(plain) < len(reading.crcs):
            reading.problems.append("its manifest is missing")
        else:
            reading.legacy = bool(plain)
    if read_twice:
        keys = sorted(read_twice)
        reading.problems.append(f"{len(keys)} records read twice, a damaged page chain ({_names(keys)})")
    if reading.damaged_keys:
        keys = sorted(reading.damaged_keys)
        reading.problems.append(f"{len(keys)} damaged records ({_names(keys)})")
    if manifest is not None:
        found = len(reading.bodies.keys() | reading.damaged_keys.keys())
        reading.missing = manifest.count - found
        if found < manifest.count:
            reading.problems.append(f"{manifest.count - found} of {manifest.count} documents are missing")
        elif found > manifest.count:
            reading.problems.append(f"{found - manifest.count} records more than the {manifest.count} "
                                    "the manifest counts")
        elif not reading.damaged_keys and sum(reading.crcs.values()) % DIGEST_MOD != manifest.digest:
            reading.problems.append("its documents do not add up to the manifest's checksum")
    return reading


def page_size_of(path: Path) -> int:
    """The page size in an UnQLite file's header (4096 unless the header says otherwise)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(24)
    except OSError:
        return 4096
    if len(header) >= 24 and header.startswith(b"unqlite"):
        size = int.from_bytes(header[20:24], "big")
        if 512 <= size <= 65536 and size & (size - 1) == 0:
            return size
    return 4096


def store_existed(data_dir: Path) -> bool:
    """Whether the data dir says a store was kept in it: its marker, or a backup."""
    if (data_dir / MARKER_FILE).exists():
        return True
    backups = data_dir / BACKUP_DIR
    try:
        return any(name.endswith(".json") and not name.startswith(".") for name in os.listdir(backups))
    except OSError:
        return False


def write_marker(data_dir: Path) -> None:
    """Say, next to the store, that a store lives here (atomically, 0600)."""
    path = data_dir / MARKER_FILE
    if path.exists():
        return
    text = json.dumps({
        "what": "a kerub-tui store lives in kerub.unqlite next to this file; if that file is missing or empty, "
                "it is damaged: run kerub-tui check --repair",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }, indent=1) + "\n"
    write_atomically(path, text.encode())


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` 0600 through a temp file in the same dir: fsync, rename, fsync the dir.

    On any failure the temp file is removed; a SIGKILL can leave only a ``.tmp-*`` name that is
    never mistaken for the file and is cleaned by ``remove_temps``.
    """
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    dir_fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_temps(directory: Path) -> None:
    """Remove temp files a killed writer left (``.tmp-*``)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if name.startswith(".tmp-"):
            (directory / name).unlink(missing_ok=True)

