"""Images on a host: receiving a file into kerub-tui's image directory, checking what it is, removing it.

An import is one remote shell script per image (:func:`receive_command`), run on the host that keeps
the image, with the channel's stdin as its only input:

1. it makes a kerub-named temp file in the image directory (``.kerub-import.`` and 8 random characters
   from mktemp) and arms ``trap 'rm -f "$t"' EXIT`` (HUP, INT, TERM and PIPE exit through it), so
   whatever ends the script before step 4 removes the file;
2. it refuses at once when the directory's filesystem has not got room for SIZE bytes;
3. it reads exactly SIZE bytes (``head -c``) — from stdin for a file streamed from the jump box, or
   from a file already on the host for ``--from`` — and reports the sha256 of what is on disk now,
   ``qemu-img info --output=json`` of it (the format is probed, never taken from a name) and the bytes
   that tell an ISO (``CD001`` at 32769), an MBR (``55 aa`` at 510) and a GPT (``EFI PART`` at 512);
4. it then waits for one line on stdin: ``commit iso``, ``commit raw`` or ``commit qcow2`` hard-links
   the temp file under its final name (chosen before the script started: the line only picks the
   extension); anything else, or end-of-file — the jump box's process killed, the controller killed,
   the connection dropped — removes it.

The controller compares the sums, classifies the report (:func:`classify`), and only then commits.
Every report line starts with ``kerub-image-``; a failure is one ``kerub-image-failed: WHY`` line.
Only POSIX sh, coreutils (head -c, wc, od, df, mktemp, ln) and qemu-img are used.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import asyncssh

from kerub_tui.core.names import check_name
from kerub_tui.core.sizes import format_size
from kerub_tui.ssh.keys import describe_error

from .facts import IMAGES_DIR
from .fileimage import QemuImgInfo, check_path, check_size, file_remove, parse_qemu_img_info

TAG = "kerub-image"
FAILED = f"{TAG}-failed:"
TEMP_PREFIX = ".kerub-import."
MKTEMP_RANDOM = "X" * 8  # the template characters mktemp replaces with random ones
EXTENSIONS = ("iso", "raw", "qcow2")  # what the commit line may choose
ISO_MAGIC = "4344303031"  # "CD001" at offset 32769: the ISO 9660 primary volume descriptor
MBR_MAGIC = "55aa"  # at offset 510: an MBR (or a GPT's protective MBR) boot signature
GPT_MAGIC = "4546492050415254"  # "EFI PART" at offset 512
# Leave this much free besides the image: a filesystem filled to the last block helps nobody.
SPACE_MARGIN = 16 << 20
STALE_TEMP_MINUTES = 1440  # temp files of a receiver killed outright (kill -9 on the host) go after a day

_LINE_RE = re.compile(rf"^{TAG}-([a-z0-9-]+)(?::)? ?(.*)$")
_HEX64 = re.compile(r"[0-9a-f]{64}\Z")


class ImageRefused(ValueError):
    """The file is not something kerub-tui keeps as an image; the message is the admin's one line."""


def image_file_name(name: str, image_id: str, extension: str) -> str:
    """The final file name of an image on a host: its name, a short id (unique), its kind."""
    check_name(name, "image name")
    if extension not in EXTENSIONS:
        raise ValueError(f"image extension {extension!r} is not one of {', '.join(EXTENSIONS)}")
    short = re.sub(r"[^A-Za-z0-9]", "", image_id)[:8]
    if not short:
        raise ValueError(f"image id {image_id!r} has no letters or digits")
    return f"kerub-image-{name}-{short}.{extension}"


def image_extension(fmt: str) -> str:
    if fmt not in EXTENSIONS:
        raise ValueError(f"image format {fmt!r} is not one of {', '.join(EXTENSIONS)}")
    return fmt


def _fail(why: str) -> str:
    """Shell text: print the failure line (``why`` may hold "$var" expansions) and exit 1."""
    return f'{{ echo "{FAILED} {why}"; exit 1; }}'


def _od(offset: int, count: int) -> str:
    return f"$(od -An -tx1 -v -j {offset} -N {count} \"$t\" 2>/dev/null | tr -d ' \\n')"


def receive_command(images_dir: str, size: int | None, final_names: dict[str, str], *,
                    source: str | None = None) -> str:
    """The receiving script (see the module doc): ``size`` bytes from stdin. ``final_names`` maps each
    extension the commit line may choose to the file name (in ``images_dir``) the image then gets.
    With ``source`` (a file on this host) the bytes come from that file instead (``size`` None: the
    host measures it), and the source's own sum is reported too."""
    check_path(images_dir, "image directory")
    if source is None:
        check_size(size, "image size")
    if set(final_names) - set(EXTENSIONS) or not final_names:
        raise ValueError(f"final names must be given for some of {', '.join(EXTENSIONS)}")
    for name in final_names.values():
        stem, dot, extension = name.rpartition(".")
        if not dot or extension not in EXTENSIONS:
            raise ValueError(f"{name!r} is not an image file name")
        check_name(stem, "image file name")
    d = shlex.quote(images_dir)
    lines = [
        "set -u",
        "umask 077",
        f"d={d}",
        f'[ -d "$d" ] && [ -w "$d" ] || {_fail("there is no writable image directory $d on this host")}',
        # what a receiver killed outright (kill -9 on the host) left behind, a day ago or more
        f'find "$d" -maxdepth 1 -type f -name {shlex.quote(TEMP_PREFIX + "*")} -mmin +{STALE_TEMP_MINUTES} '
        "-exec rm -f {} + 2>/dev/null",
        f't=$(mktemp "$d/{TEMP_PREFIX}{MKTEMP_RANDOM}") || {_fail("cannot create a file in $d")}',
        "trap 'rm -f \"$t\"' EXIT",
        "trap 'exit 129' HUP; trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 141' PIPE",
        f"echo \"{TAG}-temp $t\"",
    ]
    if source is not None:
        lines += [
            f"s={shlex.quote(check_path(source, 'source file'))}",
            f'[ -f "$s" ] && [ -r "$s" ] || {_fail("$s is not a readable regular file on this host")}',
            "size=$(wc -c < \"$s\" | tr -d ' ')",
            f'echo "{TAG}-size $size"',
            f'[ "$size" -gt 0 ] || {_fail("the file is empty")}',
            f"need=$(( (size + {SPACE_MARGIN} + 1023) / 1024 ))",
        ]
    else:
        assert size is not None
        lines += [f"size={size}", f"need={(size + SPACE_MARGIN + 1023) // 1024}"]
    lines += [
        "avail=$(df -P -k \"$d\" | awk 'NR == 2 { print $4 }')",
        '[ "${avail:-0}" -ge "$need" ] || '
        + _fail("not enough space in $d on this host: $(( avail / 1024 )) MiB free, "
                "$(( need / 1024 )) MiB needed"),
    ]
    if source is not None:
        lines += [
            f"head -c \"$size\" -- \"$s\" | tee \"$t\" | sha256sum | sed 's/ .*//; s/^/{TAG}-source-sha256 /'",
        ]
    else:
        lines += [f'head -c "$size" > "$t" || {_fail("writing into $d failed")}']
    lines += [
        'got=$(wc -c < "$t" | tr -d \' \')',
        f'[ "$got" -eq "$size" ] || {_fail("the transfer was cut short: $got of $size bytes arrived")}',
        f"sha256sum < \"$t\" | sed 's/ .*//; s/^/{TAG}-sha256 /'",
        'if i=$(qemu-img info --output=json -- "$t" 2>&1); '
        f'then printf \'{TAG}-info %s\\n\' "$(printf %s "$i" | tr -d \'\\n\')"; '
        f'else printf \'{TAG}-info-failed %s\\n\' "$(printf %s "$i" | tr \'\\n\' \' \')"; fi',
        f'echo "{TAG}-magic iso={_od(32769, 5)} mbr={_od(510, 2)} gpt={_od(512, 8)}"',
        f'echo "{TAG}-ready"',
        "IFS= read -r line || exit 1",
        "chmod 0644 \"$t\"",
    ]
    choices = " ".join(f"'commit {extension}') f={shlex.quote(images_dir.rstrip('/') + '/' + name)} ;;"
                       for extension, name in sorted(final_names.items()))
    lines += [
        f'case "$line" in {choices} *) {_fail("no commit: the image was not kept")} ;; esac',
        f'ln -- "$t" "$f" || {_fail("cannot create $f")}',
        f'echo "{TAG}-committed $f"',
    ]
    # One line, run by sh whatever the login shell is (a csh-family shell takes no newline in quotes).
    return shlex.join(["sh", "-c", "; ".join(lines)])


def remove_command(path: str) -> str:
    """Remove one copy of an image (idempotent)."""
    return file_remove(path)


def verify_command(path: str, sha256: str) -> str:
    """Fails unless the file's sha256 is ``sha256`` (a copy on another host, checked after the copy)."""
    check_path(path, "image path")
    if not _HEX64.match(sha256 or ""):
        raise ValueError(f"{sha256!r} is not a sha256 digest")
    return (f"printf '%s  %s\\n' {sha256} {shlex.quote(path)} | sha256sum -c --status - || "
            f"{{ echo \"{FAILED} the copy's sha256 is not the image's\" >&2; exit 1; }}")


# --- what the receiver said ------------------------------------------------------------------


@dataclass
class ReceiverReport:
    """The lines a receiver printed, read so far."""

    temp: str | None = None
    size: int | None = None  # a --from source's size, as the host measured it
    source_sha256: str | None = None
    sha256: str | None = None
    info: QemuImgInfo | None = None
    info_raw: dict | None = None  # the JSON as qemu-img printed it (backing and data-file details)
    info_error: str | None = None
    magic: dict[str, str] = field(default_factory=dict)
    ready: bool = False
    committed: str | None = None
    failure: str | None = None

    def feed(self, line: str) -> None:
        """One line of the receiver's stdout; lines that are not the receiver's are ignored."""
        match = _LINE_RE.match(line.rstrip("\r\n"))
        if match is None:
            return
        key, value = match[1], match[2].strip()
        if key == "failed":
            self.failure = self.failure or (value or "the receiver failed")
        elif key == "temp":
            self.temp = value
        elif key == "size":
            self.size = _count(value, "size")
        elif key == "source-sha256":
            self.source_sha256 = _digest(value)
        elif key == "sha256":
            self.sha256 = _digest(value)
        elif key == "info":
            self.info, self.info_raw = _info(value)
        elif key == "info-failed":
            self.info_error = value[:300] or "qemu-img info failed"
        elif key == "magic":
            self.magic = parse_magic(value)
        elif key == "ready":
            self.ready = True
        elif key == "committed":
            self.committed = check_path(value, "committed image path")


def parse_report(text: str) -> ReceiverReport:
    report = ReceiverReport()
    for line in text.splitlines():
        report.feed(line)
    return report


def _count(value: str, what: str) -> int:
    if not value.isdigit():
        raise ValueError(f"the receiver's {what} {value!r} is not a byte count")
    return int(value)


def _digest(value: str) -> str:
    if not _HEX64.match(value):
        raise ValueError(f"the receiver's sha256 {value!r} is not 64 hex digits")
    return value


def _info(value: str) -> tuple[QemuImgInfo, dict]:
    info = parse_qemu_img_info(value)
    return info, json.loads(value)


def parse_magic(text: str) -> dict[str, str]:
    """``iso=HEX mbr=HEX gpt=HEX`` (a value is empty when the file is too short to have it)."""
    out: dict[str, str] = {}
    for word in text.split():
        key, sep, value = word.partition("=")
        if sep and key in ("iso", "mbr", "gpt") and re.fullmatch(r"[0-9a-f]{0,32}", value):
            out[key] = value
    return out


# --- what it is --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Classified:
    format: str  # raw, qcow2 or iso (ImageInfo.format)
    virtual_size: int

    @property
    def allocation_format(self) -> str:
        """How qemu reads a copy: an ISO is raw content."""
        return "qcow2" if self.format == "qcow2" else "raw"


def external_references(raw: dict | None) -> list[str]:
    """Files outside the image that qemu would open for it: a backing file, a qcow2 external data
    file, a vmdk's extents other than itself. Any of them lets a guest read a file of the host."""
    if not isinstance(raw, dict):
        return []
    out = []
    for key in ("backing-filename", "full-backing-filename"):
        value = raw.get(key)
        if isinstance(value, str) and value:
            out.append(f"a backing file ({value})")
            break
    specific = raw.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict):
        data_file = data.get("data-file")
        if isinstance(data_file, str) and data_file:
            out.append(f"an external data file ({data_file})")
        extents = data.get("extents")
        own = raw.get("filename")
        if isinstance(extents, list):
            for extent in extents:
                name = extent.get("filename") if isinstance(extent, dict) else None
                if isinstance(name, str) and name and name != own:
                    out.append(f"an extent in another file ({name})")
                    break
    return out


def classify(report: ReceiverReport) -> Classified:
    """What the received file is, or ImageRefused saying why kerub-tui does not keep it.

    Kept: a qcow2 image with no file outside itself; an ISO (ISO 9660 signature, which qemu-img calls
    raw); a raw disk with a partition table (an MBR boot signature or a GPT header). Refused: any
    image referring to another file (backing file, external data file, extents), other formats
    (vmdk, vdi, ...: convert them to qcow2 first), a corrupt or encrypted qcow2, and raw data with
    neither an ISO signature nor a partition table (a file system without a partition table is
    refused too: kerub-tui cannot tell it from any other file)."""
    if report.info is None:
        why = report.info_error or "qemu-img said nothing"
        raise ImageRefused(f"qemu-img cannot read it: {why}")
    info = report.info
    refs = external_references(report.info_raw)
    if refs:
        raise ImageRefused(f"it is a {info.format} image with {refs[0]}: a guest could read that file of the host;"
                           " refused (flatten it first: qemu-img convert -O qcow2 IN OUT)")
    if info.format == "qcow2":
        specific = (report.info_raw or {}).get("format-specific")
        data = specific.get("data") if isinstance(specific, dict) else None
        if info.corrupt:
            raise ImageRefused("it is a qcow2 image marked corrupt: refused (qemu-img check -r all repairs it)")
        if isinstance(data, dict) and data.get("encrypt"):
            raise ImageRefused("it is an encrypted qcow2 image: refused (kerub-tui has no key for it)")
        return Classified("qcow2", info.virtual_size)
    if info.format != "raw":
        raise ImageRefused(f"it is a {info.format} image: only qcow2, raw disks and ISO images are kept;"
                           " convert it first (qemu-img convert -O qcow2 IN OUT)")
    magic = report.magic
    if magic.get("iso") == ISO_MAGIC:
        return Classified("iso", info.virtual_size)
    if magic.get("mbr") == MBR_MAGIC or magic.get("gpt") == GPT_MAGIC:
        return Classified("raw", info.virtual_size)
    raise ImageRefused("it is neither a disk image nor an ISO: qemu-img reads it as raw data with no ISO 9660"
                       " signature and no partition table (MBR or GPT)")


def check_report(report: ReceiverReport, size: int, sha256: str | None) -> Classified:
    """The whole verdict on a finished transfer: complete, same sum on both ends, a keepable image."""
    if report.failure:
        raise ImageRefused(report.failure)
    if not report.ready or report.sha256 is None:
        raise ImageRefused("the host did not finish receiving the file")
    expected = sha256 if sha256 is not None else report.source_sha256
    if expected is None:
        raise ImageRefused("no sha256 of the source to compare with")
    if report.sha256 != expected:
        raise ImageRefused(f"sha256 mismatch: sent {expected}, the host has {report.sha256}")
    if report.size is not None and report.size != size:
        raise ImageRefused(f"the file is {report.size} bytes on the host, not {size}")
    return classify(report)


# --- the transfer ----------------------------------------------------------------------------------

CHUNK = 256 * 1024


@dataclass(frozen=True)
class Progress:
    """How far an import is: ``phase`` is sending, checking (the host hashes and probes) or done."""

    done: int
    total: int
    elapsed: float  # seconds since the transfer started
    phase: str = "sending"

    @property
    def rate(self) -> float:
        """Bytes per second so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far; None before there is a rate."""
        rate = self.rate
        return (self.total - self.done) / rate if rate > 0 else None

    def describe(self) -> str:
        """One line: ``45.0 MiB of 100 MiB (45%), 40.1 MiB/s, ETA 2 s``."""
        if self.phase == "checking":
            if not self.total:
                return "the host copies the file and checks it (sha256, qemu-img info)"
            return f"{format_size(self.total)} sent; the host checks it (sha256, qemu-img info)"
        if self.phase == "done":
            return (f"{format_size(self.total)} " if self.total else "") + f"done in {self.elapsed:.1f} s"
        share = f" ({100 * self.done // self.total}%)" if self.total else ""
        eta = self.eta
        return (f"{format_size(self.done)} of {format_size(self.total)}{share}, {format_size(self.rate)}/s"
                + (f", ETA {eta:.0f} s" if eta is not None else ""))


ProgressCallback = Callable[[Progress], None]


async def file_chunks(stream: BinaryIO, size: int, digest: Any) -> AsyncIterator[bytes]:
    """Exactly ``size`` bytes of an open local file, read off the loop, hashed into ``digest`` as
    they go. ImageRefused when the file ends early (it shrank while being read)."""
    left = size

    def read(count: int) -> bytes:
        data = stream.read(count)
        digest.update(data)
        return data

    while left > 0:
        chunk = await asyncio.to_thread(read, min(CHUNK, left))
        if not chunk:
            raise ImageRefused(f"the file ended after {size - left} of its {size} bytes (it changed while being read)")
        left -= len(chunk)
        yield chunk


class _Lines:
    """Feeds the receiver's stdout to a report; ``changed`` is set on every line and at the end."""

    def __init__(self, report: ReceiverReport) -> None:
        self.report = report
        self.ended = False
        self.changed = asyncio.Event()

    async def read(self, stdout: Any) -> None:
        try:
            async for raw in stdout:
                self.report.feed(raw.decode("utf-8", errors="replace"))
                self.changed.set()
        except (asyncssh.Error, OSError):
            pass
        finally:
            self.ended = True
            self.changed.set()

    async def wait(self, done: Callable[[ReceiverReport], bool]) -> None:
        while not done(self.report) and not self.ended:
            self.changed.clear()
            await self.changed.wait()


async def run_receiver(connection: Any, command: str, *, total: int,
                       chunks: AsyncIterator[bytes] | None,
                       decide: Callable[[ReceiverReport], str],
                       progress: ProgressCallback | None = None) -> ReceiverReport:
    """Run :func:`receive_command` on a host (``connection`` is its HostConnection), send ``chunks``
    (None: the host reads a file of its own), then commit what ``decide(report)`` names (an
    extension; it raises ImageRefused to keep nothing). Returns the committed report.

    Any way out before the commit line — a refusal, an error, a lost connection, this task cancelled —
    closes the channel, and the receiver removes its temp file on the end-of-file that gives it."""
    started = time.monotonic()
    report = ReceiverReport()
    lines = _Lines(report)

    def tell(done: int, phase: str) -> None:
        if progress is not None:
            progress(Progress(done, total, time.monotonic() - started, phase))

    try:
        async with connection.process(command) as proc:
            reader = asyncio.create_task(lines.read(proc.stdout))
            stderr_tail: list[str] = []

            async def drain_stderr() -> None:
                with contextlib.suppress(asyncssh.Error, OSError):
                    async for raw in proc.stderr:
                        stderr_tail[:] = ([*stderr_tail, raw.decode("utf-8", errors="replace").strip()])[-5:]

            errors = asyncio.create_task(drain_stderr())
            try:
                sent = 0
                if chunks is not None:
                    tell(0, "sending")
                    async for chunk in chunks:
                        if report.failure or lines.ended:
                            break  # the receiver refused (no room, ...): stop sending
                        try:
                            proc.stdin.write(chunk)
                            await proc.stdin.drain()
                        except (asyncssh.Error, OSError):
                            # the receiver ended (it says why on stdout) or the connection went
                            await lines.wait(lambda r: r.failure is not None)
                            raise ImageRefused(report.failure or "the connection was lost during the import;"
                                               " nothing was kept") from None
                        sent += len(chunk)
                        tell(sent, "sending")
                tell(sent if chunks is not None else total, "checking")
                await lines.wait(lambda r: r.ready or r.failure is not None)
                if report.failure:
                    raise ImageRefused(report.failure)
                if not report.ready:
                    why = next((line for line in reversed(stderr_tail) if line), "")
                    raise ImageRefused("the host stopped receiving before the end" + (f": {why}" if why else ""))
                extension = decide(report)
                proc.stdin.write(f"commit {image_extension(extension)}\n".encode())
                proc.stdin.write_eof()
                await lines.wait(lambda r: r.committed is not None or r.failure is not None)
                if report.committed is None:
                    raise ImageRefused(report.failure or "the host did not keep the image")
                tell(total, "done")
                return report
            finally:
                reader.cancel()
                errors.cancel()
                for task in (reader, errors):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
    except (asyncssh.Error, OSError) as error:
        raise ImageRefused(report.failure or f"the connection was lost during the import ({describe_error(error)});"
                           " nothing was kept") from None


def sha256_hasher() -> Any:
    return hashlib.sha256()


__all__ = [
    "Classified",
    "EXTENSIONS",
    "IMAGES_DIR",
    "ImageRefused",
    "ReceiverReport",
    "TEMP_PREFIX",
    "check_report",
    "classify",
    "external_references",
    "file_chunks",
    "run_receiver",
    "sha256_hasher",
    "Progress",
    "image_extension",
    "image_file_name",
    "parse_magic",
    "parse_report",
    "receive_command",
    "remove_command",
    "verify_command",
]
