"""ZFS volumes (zvols) as VM disks: zfs/zpool command builders and parsers of their script output.

ZFS cannot run on the development machine (no zfs kernel module, no zfsutils-linux for this kernel):
the parsers are tested on hand-written samples of the documented ``-Hp`` formats (tab-separated,
exact numbers, '-' for none) in tests/captures/ops/*.SAMPLE.txt, not on captured output.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from kerub_tui.core.names import check_name

from .fileimage import check_size

# zvol sizes must be a multiple of the volume block size (up to 128 KiB): round up, as LVM rounds
# up to whole extents, so any requested size is accepted
ZVOL_SIZE_GRANULE = 128 * 1024
_RESERVED_POOL_NAMES = ("mirror", "raidz", "draid", "spare", "log")
ZFS_LIST_FIELDS = ("name", "used", "avail", "volsize", "type")
ZPOOL_LIST_FIELDS = ("name", "size", "alloc", "free", "health")


def check_pool(pool: object) -> str:
    check_name(pool, "ZFS pool name")
    assert isinstance(pool, str)
    if not pool[0].isalpha() or pool.startswith(_RESERVED_POOL_NAMES) or re.match(r"c\d", pool):
        raise ValueError(f"ZFS pool name {pool!r} must start with a letter and not be a reserved word")
    return pool


def _dataset(pool: str, name: str) -> str:
    check_pool(pool)
    check_name(name, "ZFS volume name")
    return f"{pool}/{name}"


def zvol_size(size: int) -> int:
    """The size the volume really gets: ``size`` rounded up to the zvol granule."""
    check_size(size)
    return -(-size // ZVOL_SIZE_GRANULE) * ZVOL_SIZE_GRANULE


def zfs_create_volume(pool: str, name: str, size: int, sparse: bool = True) -> str:
    """A zvol of ``size`` bytes (rounded up, see zvol_size); sparse = no reservation (thin)."""
    args = ["zfs", "create"]
    if sparse:
        args.append("-s")
    return shlex.join([*args, "-V", str(zvol_size(size)), _dataset(pool, name)])


def zfs_resize_volume(pool: str, name: str, size: int) -> str:
    """Grow the volume to the new total size. ZFS would shrink a volume (losing data): refused here."""
    dataset = shlex.quote(_dataset(pool, name))
    new = zvol_size(size)
    return (
        f"cur=$(zfs get -Hp -o value volsize {dataset}) && "
        f'{{ [ "$cur" -le {new} ] || '
        f'{{ echo "refusing to shrink "{dataset}" from $cur to {new} bytes" >&2; false; }}; }} && '
        f"zfs set volsize={new} {dataset}"
    )


def zfs_destroy_volume(pool: str, name: str) -> str:
    """Destroy the volume; succeeds when it is already gone (idempotent)."""
    dataset = shlex.quote(_dataset(pool, name))
    return f"if zfs list -H -o name {dataset} >/dev/null 2>&1; then zfs destroy {dataset}; fi"


def zfs_list_command(pool: str | None = None) -> str:
    args = ["zfs", "list", "-Hp", "-o", ",".join(ZFS_LIST_FIELDS), "-t", "filesystem,volume"]
    if pool is not None:
        args += ["-r", check_pool(pool)]
    return shlex.join(args)


def zpool_list_command() -> str:
    return shlex.join(["zpool", "list", "-Hp", "-o", ",".join(ZPOOL_LIST_FIELDS)])


@dataclass(frozen=True)
class ZfsDataset:
    name: str  # pool/path
    used: int
    avail: int
    volsize: int | None  # None for a filesystem
    type: str  # "filesystem" or "volume"

    @property
    def pool(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass(frozen=True)
class ZfsPool:
    name: str
    size: int
    alloc: int
    free: int
    health: str


def _number(value: str, what: str) -> int:
    if not value.isdigit():
        raise ValueError(f"zfs output: {what} is {value[:20]!r}, not a number of bytes (was -p given?)")
    return int(value)


def _rows(text: str, width: int, command: str) -> list[list[str]]:
    rows = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != width:
            raise ValueError(f"{command} output: expected {width} tab-separated fields, got {line[:80]!r}")
        rows.append(fields)
    return rows


def parse_zfs_list(text: str) -> list[ZfsDataset]:
    """Parse ``zfs list -Hp -o name,used,avail,volsize,type``."""
    datasets = []
    for name, used, avail, volsize, kind in _rows(text, len(ZFS_LIST_FIELDS), "zfs list"):
        if kind not in ("filesystem", "volume", "snapshot", "bookmark"):
            raise ValueError(f"zfs list output: unknown dataset type {kind[:20]!r}")
        datasets.append(
            ZfsDataset(
                name=name,
                used=_number(used, "used"),
                avail=_number(avail, "avail"),
                volsize=None if volsize == "-" else _number(volsize, "volsize"),
                type=kind,
            )
        )
    return datasets


def parse_zpool_list(text: str) -> list[ZfsPool]:
    """Parse ``zpool list -Hp -o name,size,alloc,free,health``."""
    return [
        ZfsPool(name, _number(size, "size"), _number(alloc, "alloc"), _number(free, "free"), health)
        for name, size, alloc, free, health in _rows(text, len(ZPOOL_LIST_FIELDS), "zpool list")
    ]
