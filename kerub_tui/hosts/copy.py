"""Copy an allocation (an LV, a zvol, an image file) from one host to another, checksum verified.

Two forms share the same halves:

* the executor runs :func:`copy_source_command` on the source host and
  :func:`copy_destination_command` on the destination, streams the source's stdout into the
  destination's stdin over its two SSH channels (counting bytes relayed: that is the progress), and
  compares the two sums with :func:`verify_copy`;
* :func:`copy_allocation_pipeline` is one command run on the source host that reaches the destination
  by ``ssh`` itself (it needs host-to-host trust, see trust.py) and fails unless the sums agree.

The source hashes exactly what it sends; the destination hashes what it reads back from its disk after
an fsync, so a short read, a broken stream or a bad write all end in a mismatch. Only POSIX sh and
coreutils are used (head -c, tee, mkfifo, dd, sha256sum, truncate); no pv, no bash.
Sums are reported as a line ``kerub-copy-sha256 HEX`` (stderr on the source, whose stdout is the
data; stdout on the destination).
"""

from __future__ import annotations

import re
import shlex

from kerub_tui.core.names import check_address, check_user

from .fileimage import check_path, check_size

SUM_TAG = "kerub-copy-sha256"
_SUM_RE = re.compile(rf"^{SUM_TAG} ([0-9a-f]{{64}})\s*$", re.MULTILINE)
FAILED_TAG = "kerub-copy-failed"


def _source(src_path: str, size: int, sum_to: str) -> str:
    """Stream exactly ``size`` bytes: the source's first ``size`` bytes, zero-padded when a file is
    shorter (a raw image's missing tail reads as zeros; a qcow2 image is valid with zeros appended).
    A regular file longer than ``size`` is refused rather than cut. The sum goes to ``sum_to`` (a
    redirection) only when the source was read completely; otherwise a failure line goes to stderr."""
    q = shlex.quote(src_path)
    return (
        't=$(mktemp -d) && mkfifo "$t/f" && { sha256sum < "$t/f" > "$t/sum" & } && '
        # {q} is never inside double quotes, where a quoted $(...) would run
        f"{{ if [ ! -r {q} ]; then printf 'cannot read %s\\n' {q} > \"$t/failed\"; "
        f"elif [ -f {q} ] && [ \"$(wc -c < {q})\" -gt {size} ]; then "
        f"printf '%s is a file longer than the {size} bytes to copy\\n' {q} > \"$t/failed\"; "
        f"else {{ head -c {size} -- {q} || printf 'cannot read %s\\n' {q} > \"$t/failed\"; "
        f"head -c {size} /dev/zero; }} "
        f"| head -c {size}; fi; }} | tee \"$t/f\"; wait; "
        f'if [ -e "$t/failed" ]; then echo "{FAILED_TAG}: $(cat "$t/failed")" >&2; rm -rf "$t"; exit 1; fi; '
        f"sed 's/ .*//; s/^/{SUM_TAG} /' \"$t/sum\" {sum_to}; rm -rf \"$t\""
    )


def copy_source_command(src_path: str, size: int) -> str:
    """Run on the source host: the data on stdout, then ``kerub-copy-sha256 HEX`` on stderr."""
    check_path(src_path, "source path")
    check_size(size)
    return _source(src_path, size, ">&2")


def copy_destination_command(dst_path: str, size: int, progress: bool = False) -> str:
    """Run on the destination host with the data on stdin; prints ``kerub-copy-sha256 HEX`` of what it
    reads back from disk. A block device is overwritten in place (zeros written too, since stale data
    must not show through); a file is written sparse (all-zero 64 KiB blocks become holes) and extended to
    ``size``. With ``progress``, GNU dd reports the bytes written so far on stderr about once a
    second (see :func:`parse_dd_progress`)."""
    check_path(dst_path, "destination path")
    check_size(size)
    q = shlex.quote(dst_path)
    status = "progress" if progress else "none"
    return (
        f"if [ -b {q} ]; then dd of={q} bs=4M iflag=fullblock conv=notrunc,fsync status={status}; "
        f"else dd of={q} bs=64K iflag=fullblock conv=sparse,fsync status={status} && truncate -s {size} -- {q}; fi && "
        f"head -c {size} -- {q} | sha256sum | sed 's/ .*//; s/^/{SUM_TAG} /'"
    )


def copy_allocation_pipeline(
    src_path: str,
    dst_host_address: str,
    dst_path: str,
    size: int,
    *,
    dst_port: int = 22,
    dst_user: str = "root",
    identity_file: str | None = None,
    known_hosts_file: str | None = None,
) -> str:
    """One command for the source host: stream to the destination over ssh, fail unless the sums agree."""
    check_path(src_path, "source path")
    check_path(dst_path, "destination path")
    check_size(size)
    check_address(dst_host_address)
    check_user(dst_user)
    if isinstance(dst_port, bool) or not isinstance(dst_port, int) or not 1 <= dst_port <= 65535:
        raise ValueError(f"port {dst_port!r} is not a TCP port")
    ssh = ["ssh", "-o", "BatchMode=yes", "-p", str(dst_port), "-l", dst_user]
    if identity_file is not None:
        ssh += ["-i", check_path(identity_file, "identity file")]
    if known_hosts_file is not None:
        ssh += ["-o", "UserKnownHostsFile=" + check_path(known_hosts_file, "known hosts file")]
    ssh += ["--", dst_host_address, copy_destination_command(dst_path, size, progress=True)]
    # the source half writes its sum into $s, the destination's arrives on ssh's stdout into $d
    source = _source(src_path, size, '> "$s"')
    return (
        's=$(mktemp) && d=$(mktemp) && '
        f"{{ {source}; }} | {shlex.join(ssh)} > \"$d\"; "
        f'S=$(sed -n "s/^{SUM_TAG} //p" "$s"); D=$(sed -n "s/^{SUM_TAG} //p" "$d"); rm -f "$s" "$d"; '
        f'if [ -n "$S" ] && [ "$S" = "$D" ]; then echo "{SUM_TAG} $S"; '
        f'else echo "{FAILED_TAG}: checksum mismatch (source ${{S:-none}}, destination ${{D:-none}})" >&2; exit 1; fi'
    )


_DD_PROGRESS_RE = re.compile(r"(\d+) bytes (?:\(|copied)")


def parse_dd_progress(text: str) -> int | None:
    """The last byte count in GNU dd's status=progress output (lines separated by '\\r'), or None."""
    matches = _DD_PROGRESS_RE.findall(text or "")
    return int(matches[-1]) if matches else None


def parse_copy_sum(text: str) -> str:
    """The hex sum in a copy half's report; ValueError when the report has none (the copy failed)."""
    matches = _SUM_RE.findall(text or "")
    if len(matches) != 1:
        failure = next((line for line in (text or "").splitlines() if FAILED_TAG in line), None)
        raise ValueError(failure or f"no single {SUM_TAG} line in the copy report")
    return matches[0]


def verify_copy(source_report: str, destination_report: str) -> str:
    """Compare the two halves' sums; return the sum, or raise ValueError saying what went wrong."""
    source = parse_copy_sum(source_report)
    destination = parse_copy_sum(destination_report)
    if source != destination:
        raise ValueError(f"checksum mismatch: source {source}, destination {destination}")
    return source
