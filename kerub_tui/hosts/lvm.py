"""LVM: command builders for logical volumes and the parsers of pvs/vgs/lvs JSON reports.

Builders return the exact shell text the executor runs (notes/builders.md): sizes are bytes written
with LVM's ``b`` unit, names are checked against both kerub-tui's rules (core.names) and LVM's own
(reserved words and suffixes LVM uses for its hidden sub-volumes), and every word is quoted.
``--yes`` answers LVM's interactive questions (wipe a found signature, remove an active LV): the
planner already asked the admin.

Reports use ``--reportformat json --units b --nosuffix``. LVM prints numbers as strings and unknown
values as "" (``json_std``, LVM 2.03.17+, prints numbers and null): both are read.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kerub_tui.core.names import LVM_RESERVED_PARTS, check_name

from . import fileimage
from .parse.errors import ParseError, guarded, load_json, missing_tool, optional_str, to_float, to_int

PVS_FIELDS = "pv_name,vg_name,pv_uuid,pv_attr,pv_size,pv_free,dev_size,pe_start"
VGS_FIELDS = "vg_name,vg_uuid,vg_attr,vg_size,vg_free,vg_extent_size,pv_count,lv_count"
# segtype and devices are per segment: an LV in several segments is several rows, merged by parse_lvs
LVS_FIELDS = (
    "lv_name,vg_name,lv_uuid,lv_size,lv_attr,lv_layout,segtype,pool_lv,origin,"
    "data_percent,metadata_percent,devices"
)
_REPORT = ["--reportformat", "json", "--units", "b", "--nosuffix"]

# lvm(8) VALID NAMES: LVM names its hidden sub-volumes with these suffixes and refuses them in LV names
_RESERVED_LV_PARTS = LVM_RESERVED_PARTS
_RESERVED_LV_PREFIXES = ("snapshot", "pvmove")
_RESERVED_VG_NAMES = ("mapper", "disk", "block", "char", "shm", "pts", "mqueue", "hugepages", "net", "snd")
MAX_MIRRORS = 63  # raid1 takes at most 64 images
_MAX_BYTES = 1 << 70


def check_vg(vg: object) -> str:
    """A VG name kerub-tui will put in a command; raise ValueError saying why not."""
    name = check_name(vg, "volume group name")
    if name in _RESERVED_VG_NAMES:
        raise ValueError(f"volume group name {name!r} is a /dev directory name, which LVM refuses")
    return name


def check_lv(lv: object, what: str = "logical volume name") -> str:
    name = check_name(lv, what)
    for prefix in _RESERVED_LV_PREFIXES:
        if name.startswith(prefix):
            raise ValueError(f"{what} {name!r} starts with {prefix!r}, which LVM reserves")
    for part in _RESERVED_LV_PARTS:
        if part in name:
            raise ValueError(f"{what} {name!r} contains {part!r}, which LVM reserves for hidden volumes")
    return name


SECTOR = 512


def check_size(size: object, what: str = "size") -> int:
    size = fileimage.check_size(size, what)
    if size > _MAX_BYTES:
        raise ValueError(f"{what} {size} is implausibly large")
    return size


def _bytes(size: int) -> str:
    """LVM refuses byte sizes that are not whole sectors and rounds up to whole extents anyway:
    round up to the sector, so a volume is never smaller than asked."""
    return f"{-(-size // SECTOR) * SECTOR}b"


def lvcreate(vg: str, lv: str, size: int) -> str:
    """A linear LV of ``size`` bytes (LVM rounds up to whole extents)."""
    return shlex.join(["lvcreate", "--yes", "--name", check_lv(lv), "--size", _bytes(check_size(size)), check_vg(vg)])


def thin_pool_create(vg: str, pool: str, size: int) -> str:
    """A thin pool with ``size`` bytes of data space (LVM adds its metadata LV next to it)."""
    return shlex.join(
        [
            "lvcreate", "--yes", "--type", "thin-pool", "--name", check_lv(pool, "thin pool name"),
            "--size", _bytes(check_size(size)), check_vg(vg),
        ]
    )  # fmt: skip


def lvcreate_thin(vg: str, pool: str, lv: str, size: int) -> str:
    """A thin LV of virtual ``size`` bytes in an existing thin pool."""
    return shlex.join(
        [
            "lvcreate", "--yes", "--type", "thin", "--name", check_lv(lv), "--virtualsize", _bytes(check_size(size)),
            "--thinpool", check_lv(pool, "thin pool name"), check_vg(vg),
        ]
    )  # fmt: skip


def lvextend(vg: str, lv: str, size: int) -> str:
    """Grow an LV to ``size`` bytes in total (LVM refuses to shrink with lvextend)."""
    return shlex.join(["lvextend", "--size", _bytes(check_size(size)), f"{check_vg(vg)}/{check_lv(lv)}"])


def lvremove(vg: str, lv: str) -> str:
    return shlex.join(["lvremove", "--yes", f"{check_vg(vg)}/{check_lv(lv)}"])


def lvcreate_mirror(vg: str, lv: str, size: int, mirrors: int) -> str:
    """A raid1 LV with ``mirrors`` extra copies (mirrors=1: two copies), each on its own PV."""
    return shlex.join(
        [
            "lvcreate", "--yes", "--type", "raid1", "--mirrors", str(_mirror_count(mirrors)), "--name", check_lv(lv),
            "--size", _bytes(check_size(size)), check_vg(vg),
        ]
    )  # fmt: skip


_PV_RE = re.compile(r"/dev/[A-Za-z0-9][A-Za-z0-9/_.:+-]{0,200}\Z")


def check_pv(pv: object) -> str:
    """A physical volume's device path kerub-tui will put in a command (as pvs printed it)."""
    if not isinstance(pv, str) or not _PV_RE.match(pv) or "/../" in pv or pv.endswith("/..") or "//" in pv:
        raise ValueError(f"{pv!r:.80} is not a device path under /dev")
    return pv


def _mirror_count(mirrors: object) -> int:
    if isinstance(mirrors, bool) or not isinstance(mirrors, int) or not 1 <= mirrors <= MAX_MIRRORS:
        raise ValueError(f"mirrors must be a whole number from 1 to {MAX_MIRRORS}, not {mirrors!r}")
    return mirrors


def lvconvert_mirror(vg: str, lv: str, mirrors: int) -> str:
    """Turn an existing LV into a raid1 with ``mirrors`` extra copies (or add copies to one), each on a
    PV of its own; LVM syncs the new copies in the background while the LV stays in use."""
    count = str(_mirror_count(mirrors))
    return shlex.join(["lvconvert", "--yes", "--type", "raid1", "--mirrors", count, f"{check_vg(vg)}/{check_lv(lv)}"])


def pvmove(pv: str, to: Sequence[str] = ()) -> str:
    """Move every extent off a PV, onto the PVs ``to`` (all others of its VG when empty): online, the
    LVs stay in use. ``--interval`` prints progress now and then, so a long move is seen alive."""
    targets = [check_pv(t) for t in to]
    if check_pv(pv) in targets:
        raise ValueError(f"pvmove of {pv} cannot move onto itself")
    return shlex.join(["pvmove", "--interval", "30", pv, *targets])


def vgreduce(vg: str, pv: str) -> str:
    """Take an empty PV out of its VG (LVM refuses one that still holds extents)."""
    return shlex.join(["vgreduce", check_vg(vg), check_pv(pv)])


def lvs_json_command(vg: str | None = None) -> str:
    words = ["lvs", *_REPORT, "-o", LVS_FIELDS]
    if vg is not None:
        words.append(check_vg(vg))
    return shlex.join(words)


def vgs_json_command() -> str:
    return shlex.join(["vgs", *_REPORT, "-o", VGS_FIELDS])


def pvs_json_command() -> str:
    return shlex.join(["pvs", *_REPORT, "-o", PVS_FIELDS])


# --- reports -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhysicalVolume:
    name: str  # the device path
    vg: str | None  # None: a PV in no VG yet
    uuid: str
    attr: str
    size_bytes: int
    free_bytes: int
    dev_size_bytes: int
    pe_start: int  # byte offset of the first extent


@dataclass(frozen=True)
class VolumeGroup:
    name: str
    uuid: str
    attr: str
    size_bytes: int
    free_bytes: int
    extent_size: int
    pv_count: int
    lv_count: int


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    name: str
    uuid: str
    attr: str
    size_bytes: int  # for a thin LV: its virtual size
    layout: str  # "linear", "thin,pool", "thin,sparse", "raid,raid1", ...
    segtypes: tuple[str, ...]  # one per segment: "linear", "striped", "thin-pool", "thin", "raid1"
    pool: str | None  # the thin pool a thin LV lives in
    origin: str | None
    data_percent: float | None  # thin pools and thin LVs, snapshots; None when LVM does not know
    metadata_percent: float | None
    devices: tuple[str, ...]  # "/dev/sda(0)": PV and first extent, one per segment/stripe

    @property
    def is_thin_pool(self) -> bool:
        return self.attr.startswith("t") or "thin-pool" in self.segtypes

    @property
    def is_thin(self) -> bool:
        return self.attr.startswith("V") or self.segtypes == ("thin",)

    @property
    def path(self) -> str:
        return f"/dev/{self.vg}/{self.name}"


def _rows(text: str, key: str, command: str) -> list[dict[str, Any]] | None:
    """The report rows for ``key`` ("pv", "vg", "lv"); None when LVM is not installed."""
    if isinstance(text, str) and missing_tool(text):
        return None
    data = load_json(text, command)
    reports = data.get("report")
    if not isinstance(reports, list):
        raise ParseError(command, "no 'report' list")
    rows: list[dict[str, Any]] = []
    found = False
    for report in reports:
        if not isinstance(report, dict):
            raise ParseError(command, f"report {report!r:.80} is not an object")
        if key in report:
            found = True
            if not isinstance(report[key], list):
                raise ParseError(command, f"'{key}' is not a list")
            for row in report[key]:
                if not isinstance(row, dict):
                    raise ParseError(command, f"row {row!r:.80} is not an object")
                rows.append(row)
    if not found:
        raise ParseError(command, f"no '{key}' section in the report")
    return rows


def _name(row: dict[str, Any], field: str, command: str, *, optional: bool = False) -> str | None:
    value = optional_str(row.get(field), field, command)
    if value is None:
        if optional:
            return None
        raise ParseError(command, f"row without {field}: {row!r:.80}")
    if len(value) > 255 or any(not (c.isascii() and c.isprintable()) or c.isspace() for c in value):
        raise ParseError(command, f"{field} {value[:80]!r} is not an LVM name")
    return value


def _size(row: dict[str, Any], field: str, command: str) -> int:
    value = row.get(field)
    if value is None or value == "":
        return 0
    return to_int(value, field, command, maximum=_MAX_BYTES)


def _percent(row: dict[str, Any], field: str, command: str) -> float | None:
    value = row.get(field)
    if value is None or value == "":
        return None
    return to_float(value, field, command, maximum=100.0)


def _text(row: dict[str, Any], field: str, command: str) -> str:
    value = optional_str(row.get(field), field, command) or ""
    if any(not c.isprintable() for c in value):
        raise ParseError(command, f"{field} {value[:80]!r} contains a control character")
    return value


@guarded("pvs")
def parse_pvs(text: str) -> list[PhysicalVolume]:
    """pvs JSON -> physical volumes; [] when LVM is not installed (the missing-tool marker)."""
    rows = _rows(text, "pv", "pvs")
    if rows is None:
        return []
    return [
        PhysicalVolume(
            name=_name(row, "pv_name", "pvs") or "",
            vg=_name(row, "vg_name", "pvs", optional=True),
            uuid=_text(row, "pv_uuid", "pvs"),
            attr=_text(row, "pv_attr", "pvs"),
            size_bytes=_size(row, "pv_size", "pvs"),
            free_bytes=_size(row, "pv_free", "pvs"),
            dev_size_bytes=_size(row, "dev_size", "pvs"),
            pe_start=_size(row, "pe_start", "pvs"),
        )
        for row in rows
    ]


@guarded("vgs")
def parse_vgs(text: str) -> list[VolumeGroup]:
    """vgs JSON -> volume groups; [] when LVM is not installed."""
    rows = _rows(text, "vg", "vgs")
    if rows is None:
        return []
    groups = []
    for row in rows:
        group = VolumeGroup(
            name=_name(row, "vg_name", "vgs") or "",
            uuid=_text(row, "vg_uuid", "vgs"),
            attr=_text(row, "vg_attr", "vgs"),
            size_bytes=_size(row, "vg_size", "vgs"),
            free_bytes=_size(row, "vg_free", "vgs"),
            extent_size=_size(row, "vg_extent_size", "vgs"),
            pv_count=to_int(row.get("pv_count", 0) or 0, "pv_count", "vgs", maximum=1 << 20),
            lv_count=to_int(row.get("lv_count", 0) or 0, "lv_count", "vgs", maximum=1 << 20),
        )
        if group.free_bytes > group.size_bytes:
            raise ParseError("vgs", f"VG {group.name} has more free space than size")
        groups.append(group)
    return groups


@guarded("lvs")
def parse_lvs(text: str) -> list[LogicalVolume]:
    """lvs JSON -> logical volumes, the rows of a multi-segment LV merged into one; [] without LVM."""
    rows = _rows(text, "lv", "lvs")
    if rows is None:
        return []
    merged: dict[tuple[str, str], LogicalVolume] = {}
    for row in rows:
        vg = _name(row, "vg_name", "lvs") or ""
        name = _name(row, "lv_name", "lvs") or ""
        segtype = _text(row, "segtype", "lvs")
        devices = tuple(d for d in _text(row, "devices", "lvs").split(",") if d)
        previous = merged.get((vg, name))
        if previous is not None:
            merged[(vg, name)] = LogicalVolume(
                **{
                    **previous.__dict__,
                    "segtypes": previous.segtypes + ((segtype,) if segtype else ()),
                    "devices": previous.devices + devices,
                }
            )
            continue
        merged[(vg, name)] = LogicalVolume(
            vg=vg,
            name=name,
            uuid=_text(row, "lv_uuid", "lvs"),
            attr=_text(row, "lv_attr", "lvs"),
            size_bytes=_size(row, "lv_size", "lvs"),
            layout=_text(row, "lv_layout", "lvs"),
            segtypes=(segtype,) if segtype else (),
            pool=_name(row, "pool_lv", "lvs", optional=True),
            origin=_name(row, "origin", "lvs", optional=True),
            data_percent=_percent(row, "data_percent", "lvs"),
            metadata_percent=_percent(row, "metadata_percent", "lvs"),
            devices=devices,
        )
    return list(merged.values())
