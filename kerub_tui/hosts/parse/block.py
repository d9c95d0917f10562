"""lsblk and findmnt JSON: the block devices and mounted filesystems of a host.

util-linux before 2.33 printed every JSON value as a string ("size": "1024", "rota": "1") and had
no PATH column; 2.37+ may print MOUNTPOINTS as a list. All of these are accepted.
"""

from __future__ import annotations

from typing import Any

from kerub_tui.core.models import BlockDevice, Filesystem

from .errors import ParseError, guarded, load_json, optional_str, to_int

LSBLK = "lsblk"
FINDMNT = "findmnt"
_MAX_DEPTH = 16
_MAX_BYTES = 1 << 70


def _flag(value: object, what: str, command: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in ("1", 1, "true"):
        return True
    if value in ("0", 0, "false"):
        return False
    raise ParseError(command, f"{what} is {value!r}, not a flag")


def _text(value: object, what: str, command: str) -> str | None:
    text = optional_str(value, what, command)
    if text is not None and any(not c.isprintable() for c in text):
        raise ParseError(command, f"{what} {text[:80]!r} contains a control character")
    return text


def _mountpoint(entry: dict[str, Any]) -> str | None:
    if "mountpoints" in entry:
        points = entry["mountpoints"]
        if not isinstance(points, list):
            raise ParseError(LSBLK, f"mountpoints is {points!r:.80}, not a list")
        for point in points:
            text = _text(point, "mountpoint", LSBLK)
            if text:
                return text
        return None
    return _text(entry.get("mountpoint"), "mountpoint", LSBLK)


def _walk(entries: object, key: str, command: str, out: list[tuple[dict[str, Any], dict[str, Any] | None]],
          depth: int = 0, parent: dict[str, Any] | None = None) -> None:
    if not isinstance(entries, list):
        raise ParseError(command, f"'{key}' is not a list")
    if depth > _MAX_DEPTH:
        raise ParseError(command, "children nested implausibly deep")
    for entry in entries:
        if not isinstance(entry, dict):
            raise ParseError(command, f"entry {entry!r:.80} is not an object")
        out.append((entry, parent))
        if entry.get("children") is not None:
            _walk(entry["children"], "children", command, out, depth + 1, entry)


def _tree(text: str, key: str, command: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The JSON document's ``key`` list, its children flattened into it, each with its parent entry."""
    data = load_json(text, command)
    if key not in data:
        raise ParseError(command, f"no {key!r} list")
    entries: list[tuple[dict[str, Any], dict[str, Any] | None]] = []
    _walk(data[key], key, command, entries)
    return entries


def _entries(text: str, key: str, command: str) -> list[dict[str, Any]]:
    """The JSON document's ``key`` list, its children flattened into it."""
    return [entry for entry, _ in _tree(text, key, command)]


@guarded(LSBLK)
def parse_lsblk(text: str) -> list[BlockDevice]:
    """``lsblk -J -b -o NAME,PATH,TYPE,SIZE,ROTA,MODEL,MOUNTPOINT,FSTYPE`` -> devices, children flattened
    (each with its parent's name)."""
    entries = _tree(text, "blockdevices", LSBLK)
    devices: list[BlockDevice] = []
    for entry, parent in entries:
        name = _text(entry.get("name"), "name", LSBLK)
        if not name or "/" in name:
            raise ParseError(LSBLK, f"device name {entry.get('name')!r:.80} is not a device name")
        size = entry.get("size")
        devices.append(
            BlockDevice(
                name=name,
                path=_text(entry.get("path"), "path", LSBLK) or f"/dev/{name}",
                type=_text(entry.get("type"), "type", LSBLK) or "",
                size_bytes=0 if size is None else to_int(size, f"size of {name}", LSBLK, maximum=_MAX_BYTES),
                rotational=_flag(entry.get("rota"), f"rota of {name}", LSBLK),
                model=_text(entry.get("model"), "model", LSBLK),
                mountpoint=_mountpoint(entry),
                fstype=_text(entry.get("fstype"), "fstype", LSBLK),
                # a partition's disk (lsblk's tree): SMART watches the disk, LVM names the partition
                parent=None if parent is None else _text(parent.get("name"), "name", LSBLK),
            )
        )
    return devices


@guarded(FINDMNT)
def parse_findmnt(text: str) -> list[Filesystem]:
    """``findmnt -J -b -o TARGET,SOURCE,FSTYPE,SIZE,AVAIL`` -> filesystems, the mount tree flattened."""
    entries = _entries(text, "filesystems", FINDMNT)
    filesystems: list[Filesystem] = []
    for entry in entries:
        target = _text(entry.get("target"), "target", FINDMNT)
        if not target or not target.startswith("/"):
            raise ParseError(FINDMNT, f"mount target {entry.get('target')!r:.80} is not an absolute path")
        size, avail = entry.get("size"), entry.get("avail")
        size_bytes = 0 if size is None else to_int(size, f"size of {target}", FINDMNT, maximum=_MAX_BYTES)
        free_bytes = 0 if avail is None else to_int(avail, f"avail of {target}", FINDMNT, maximum=_MAX_BYTES)
        filesystems.append(
            Filesystem(
                mountpoint=target,
                source=_text(entry.get("source"), "source", FINDMNT) or "",
                fstype=_text(entry.get("fstype"), "fstype", FINDMNT) or "",
                size_bytes=size_bytes,
                free_bytes=free_bytes,
            )
        )
    return filesystems
