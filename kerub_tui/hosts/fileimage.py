"""Disk images in files: qemu-img command builders and the parser of ``qemu-img info --output=json``.

Builders return the exact shell text run on the host (see notes/builders.md); every value is quoted.
Sizes are bytes and are written to qemu-img as plain byte counts.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

FORMATS = ("raw", "qcow2")


def check_path(path: object, what: str = "path") -> str:
    """An absolute, normalised path without control characters; raise ValueError saying why not.

    Paths are quoted wherever they are used; this check keeps them meaningful (no relative paths that
    depend on the remote working directory, no '..' escaping a storage directory, no option-like
    words, nothing that would break a line-oriented config or log).
    """
    if not isinstance(path, str) or path == "":
        raise ValueError(f"{what} must be a non-empty absolute path")
    if not path.startswith("/"):
        raise ValueError(f"{what} {path!r} must be absolute (start with '/')")
    if any(not c.isprintable() for c in path):
        raise ValueError(f"{what} {path!r} contains a control character")
    if len(path) > 4095:
        raise ValueError(f"{what} is too long ({len(path)} characters, at most 4095)")
    parts = path.split("/")
    if any(p in (".", "..") for p in parts) or "//" in path:
        raise ValueError(f"{what} {path!r} must be normalised (no '.', '..' or '//')")
    return path


def check_size(size: object, what: str = "size") -> int:
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"{what} must be a positive number of bytes, not {size!r}")
    return size


def check_format(fmt: object) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"image format {fmt!r} is not supported (use one of: {', '.join(FORMATS)})")
    return fmt


def qemu_img_create(path: str, size: int, fmt: str = "qcow2") -> str:
    """Create a sparse image: a raw file is a hole of ``size`` bytes, a qcow2 only its metadata."""
    check_path(path, "image path")
    check_size(size)
    check_format(fmt)
    return shlex.join(["qemu-img", "create", "-q", "-f", fmt, path, str(size)])


def qemu_img_create_overlay(path: str, backing: str, backing_fmt: str, size: int) -> str:
    """A qcow2 overlay of ``size`` bytes whose backing file is ``backing`` (an image's copy on the same
    host): instant, copy-on-write. The backing format is stated, never probed (a probed raw image could
    claim to be a qcow2 with a backing file of its own)."""
    check_path(path, "overlay path")
    check_path(backing, "backing image path")
    check_size(size)
    check_format(backing_fmt)
    if path == backing:
        raise ValueError("an overlay cannot be its own backing file")
    return shlex.join(["qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", backing_fmt, path, str(size)])


def qemu_img_convert_into(src: str, dst: str, src_fmt: str) -> str:
    """Copy an image's content into an existing raw target (an LV at least as large): -n, no creation."""
    check_path(src, "source image path")
    check_path(dst, "target path")
    check_format(src_fmt)
    if src == dst:
        raise ValueError("source and target are the same")
    return shlex.join(["qemu-img", "convert", "-q", "-n", "-f", src_fmt, "-O", "raw", src, dst])


def qemu_img_info(path: str) -> str:
    """Read an image's facts as JSON. --force-share: also works on an image a running VM holds open."""
    check_path(path, "image path")
    return shlex.join(["qemu-img", "info", "--output=json", "--force-share", path])


def qemu_img_resize(path: str, size: int, fmt: str | None = None) -> str:
    """Grow an image to ``size`` bytes (the new total). Never shrinks: qemu-img refuses without --shrink."""
    check_path(path, "image path")
    check_size(size)
    args = ["qemu-img", "resize", "-q"]
    if fmt is not None:
        # stating the format avoids probing, which qemu-img warns is unsafe for raw images
        args += ["-f", check_format(fmt)]
    return shlex.join([*args, path, str(size)])


def qemu_img_convert(src: str, dst: str, fmt: str, src_fmt: str | None = None) -> str:
    """Copy ``src`` into a new image ``dst`` of format ``fmt``; zero runs stay holes (sparse)."""
    check_path(src, "source image path")
    check_path(dst, "target image path")
    check_format(fmt)
    if src == dst:
        raise ValueError("source and target image are the same file")
    args = ["qemu-img", "convert", "-q"]
    if src_fmt is not None:
        args += ["-f", check_format(src_fmt)]
    return shlex.join([*args, "-O", fmt, src, dst])


def file_remove(path: str) -> str:
    """Remove an image file; succeeds when it is already gone (idempotent)."""
    check_path(path, "image path")
    return shlex.join(["rm", "-f", "--", path])


@dataclass(frozen=True)
class QemuImgInfo:
    filename: str
    format: str
    virtual_size: int
    actual_size: int | None  # bytes really allocated on the host: less than virtual_size when sparse
    cluster_size: int | None = None
    backing_filename: str | None = None
    dirty: bool = False
    corrupt: bool | None = None  # qcow2 only


def _int(data: dict[str, Any], key: str, required: bool = False) -> int | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"qemu-img info: {key!r} is {value!r}, not a byte count")
    return value


def parse_qemu_img_info(text: str) -> QemuImgInfo:
    """Parse ``qemu-img info --output=json``; raise ValueError on anything else."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError) as exc:
        raise ValueError(f"qemu-img info output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("qemu-img info output is not a JSON object")
    fmt = data.get("format")
    filename = data.get("filename")
    if not isinstance(fmt, str) or not isinstance(filename, str):
        raise ValueError("qemu-img info output lacks 'format' or 'filename'")
    virtual_size = _int(data, "virtual-size", required=True)
    assert virtual_size is not None
    backing = data.get("backing-filename")
    specific = data.get("format-specific")
    corrupt = None
    if isinstance(specific, dict) and isinstance(specific.get("data"), dict):
        value = specific["data"].get("corrupt")
        corrupt = value if isinstance(value, bool) else None
    return QemuImgInfo(
        filename=filename,
        format=fmt,
        virtual_size=virtual_size,
        actual_size=_int(data, "actual-size"),
        cluster_size=_int(data, "cluster-size"),
        backing_filename=backing if isinstance(backing, str) else None,
        dirty=data.get("dirty-flag") is True,
        corrupt=corrupt,
    )
