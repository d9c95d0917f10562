"""FreeBSD GVinum volumes as VM disks (for FreeBSD storage hosts sharing them over iSCSI/NFS).

GVinum exists only on FreeBSD: the parsers are tested on hand-written samples of the formats shown in
gvinum(8) and the FreeBSD Handbook (``gvinum list``, ``gvinum printconfig``) in
tests/captures/ops/gvinum-*.SAMPLE.txt, not on captured output.

``gvinum list`` rounds sizes for people; ``gvinum printconfig`` gives exact lengths in 512-byte
sectors, so sizes the planner relies on come from printconfig.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kerub_tui.core.names import check_name

from .fileimage import check_size

SECTOR = 512
_UNITS = {"B": 1, "kB": 1 << 10, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def _name(value: str, what: str) -> str:
    check_name(value, what)
    if "." in value:
        # gvinum names its plexes VOLUME.pN and subdisks VOLUME.pN.sN: a dot would be ambiguous
        raise ValueError(f"{what} {value!r} must not contain '.' (gvinum uses it for plexes and subdisks)")
    return value


def gvinum_size(size: int) -> int:
    """The size the volume really gets: whole kilobytes (gvinum's 'k' unit), rounded up."""
    check_size(size)
    return -(-size // 1024) * 1024


def gvinum_config(name: str, drive: str, size: int) -> str:
    """The gvinum configuration of a one-plex concatenated volume on one drive."""
    _name(name, "volume name")
    _name(drive, "drive name")
    return f"volume {name}\n  plex org concat\n    sd length {gvinum_size(size) // 1024}k drive {drive}\n"


def gvinum_create_volume(name: str, drive: str, size: int) -> str:
    """gvinum create reads a file: write the config to a temporary one, create, remove it."""
    config = gvinum_config(name, drive, size)
    return (
        f"f=$(mktemp) && printf '%s' {shlex.quote(config)} > \"$f\" && "
        '{ gvinum create "$f"; r=$?; rm -f "$f"; [ $r -eq 0 ]; }'
    )


def gvinum_remove_volume(name: str) -> str:
    """Remove the volume with its plexes and subdisks; succeeds when it is already gone."""
    _name(name, "volume name")
    q = shlex.quote(name)
    return (
        f"if gvinum lv | awk -v n={q} '$1 == \"V\" && $2 == n {{ found = 1 }} END {{ exit !found }}'; "
        f"then gvinum rm -r {q}; fi"
    )


def gvinum_list_command() -> str:
    return "gvinum list"


def gvinum_printconfig_command() -> str:
    return "gvinum printconfig"


@dataclass(frozen=True)
class GvinumObject:
    kind: str  # "drive", "volume", "plex", "subdisk"
    name: str
    state: str
    size_bytes: int | None = None  # as listed (rounded by gvinum)
    device: str | None = None  # drives: the device; subdisks: the drive name
    available_bytes: int | None = None  # drives only


def _bytes(number: str, unit: str) -> int:
    if unit not in _UNITS:
        raise ValueError(f"gvinum list: unknown size unit {unit[:10]!r}")
    return int(float(number) * _UNITS[unit])


_LINE_RE = re.compile(r"^([DVPS]) (\S+)\s+(?:(\S)\s+)?State: (\S+)\s*(.*)$")
_SIZE_RE = re.compile(r"Size:\s+(\d+(?:\.\d+)?) (\S+)")
_DRIVE_RE = re.compile(r"^(\S+)\s+A: (\d+(?:\.\d+)?)/(\d+(?:\.\d+)?) (\S+)")


def parse_gvinum_list(text: str) -> list[GvinumObject]:
    """Parse ``gvinum list``: D (drive), V (volume), P (plex) and S (subdisk) lines; headers skipped."""
    kinds = {"D": "drive", "V": "volume", "P": "plex", "S": "subdisk"}
    objects = []
    for line in (text or "").splitlines():
        if not line.strip() or re.match(r"^\d+ (drives?|volumes?|plexes|plex|subdisks?):", line):
            continue
        match = _LINE_RE.match(line)
        if not match:
            raise ValueError(f"gvinum list: line not understood: {line[:80]!r}")
        letter, name, _org, state, rest = match.groups()
        size = device = available = None
        if letter == "D":
            drive = _DRIVE_RE.match(rest)
            if drive:
                device = drive.group(1)
                available = _bytes(drive.group(2), drive.group(4))
                size = _bytes(drive.group(3), drive.group(4))
        else:
            found = _SIZE_RE.search(rest)
            if found:
                size = _bytes(found.group(1), found.group(2))
            if letter == "S":
                on_drive = re.search(r"D: (\S+)", rest)
                device = on_drive.group(1) if on_drive else None
        objects.append(GvinumObject(kinds[letter], name, state, size, device, available))
    return objects


@dataclass(frozen=True)
class GvinumSubdisk:
    name: str
    drive: str
    plex: str
    length_bytes: int


def parse_gvinum_printconfig(text: str) -> dict[str, list[GvinumSubdisk]]:
    """Parse ``gvinum printconfig`` into {volume: [its subdisks with exact lengths]}."""
    volumes: dict[str, list[GvinumSubdisk]] = {}
    plex_volume: dict[str, str] = {}
    subdisks: list[GvinumSubdisk] = []
    for line in (text or "").splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        keyword, pairs = words[0], words[1:]
        if keyword == "volume" and pairs:
            volumes.setdefault(pairs[0], [])
            continue
        if keyword == "drive":  # "drive NAME device DEV": drives are read from gvinum list
            continue
        if keyword not in ("plex", "sd"):
            raise ValueError(f"gvinum printconfig: line not understood: {line[:80]!r}")
        if len(pairs) % 2:
            raise ValueError(f"gvinum printconfig: odd key/value list: {line[:80]!r}")
        fields = dict(zip(pairs[::2], pairs[1::2]))
        if keyword == "plex" and "name" in fields and "vol" in fields:
            plex_volume[fields["name"]] = fields["vol"]
        elif keyword == "sd":
            length = fields.get("len", "")
            found = re.fullmatch(r"(\d+)s", length)
            if not found or not {"name", "drive", "plex"} <= fields.keys():
                raise ValueError(f"gvinum printconfig: subdisk line not understood: {line[:80]!r}")
            subdisks.append(
                GvinumSubdisk(fields["name"], fields["drive"], fields["plex"], int(found.group(1)) * SECTOR)
            )
    for sd in subdisks:
        volume = plex_volume.get(sd.plex)
        if volume is not None:
            volumes.setdefault(volume, []).append(sd)
    return volumes


def volume_size(subdisks: list[GvinumSubdisk]) -> int:
    """A concatenated one-plex volume's size: the sum of its first plex's subdisks."""
    if not subdisks:
        return 0
    first = subdisks[0].plex
    return sum(sd.length_bytes for sd in subdisks if sd.plex == first)
