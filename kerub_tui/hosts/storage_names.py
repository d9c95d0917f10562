"""Whether kerub-tui puts a storage name in a command: a volume group, ZFS pool, gvinum drive or file
storage directory a host printed, and the names of what kerub-tui makes or finds there.

Discovery keeps what a host says (``vgs`` prints any printable word: ``vg0;x``), and every command
builder refuses a name it would not quote into meaning (hosts/lvm.py, fileimage.py, zfs.py, gvinum.py).
The planner asks here first, so such storage takes no new data and a step that would need the name is
refused saying why, instead of a builder raising while a plan is rendered (ARCHITECTURE.md §5). The
answers are the builders' own checks, cached (the planner asks for every candidate it weighs).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..core.models import FileAllocation, GvinumAllocation, LvmAllocation, StorageTechnology, ZfsAllocation
from ..core.names import check_name
from . import fileimage, gvinum, lvm, zfs

SUFFIX = " (kerub-tui puts no such name in a command)"


def _storage_dir(path: str) -> str:
    """A file storage directory as the builders join it with a file name."""
    return path.rstrip("/") or "/"


_CHECKS: dict[str, Any] = {
    "vg": lvm.check_vg,
    "lv": lvm.check_lv,
    "thin-pool": lambda name: lvm.check_lv(name, "thin pool name"),
    "dir": lambda path: fileimage.check_path(_storage_dir(path), "file storage path"),
    "path": lambda path: fileimage.check_path(path, "image path"),
    "zfs-pool": zfs.check_pool,
    "zfs-volume": lambda name: check_name(name, "ZFS volume name"),
    "gvinum-drive": lambda name: gvinum._name(name, "gvinum drive name"),
    "gvinum-volume": lambda name: gvinum._name(name, "gvinum volume name"),
}


@lru_cache(maxsize=8192)
def refusal(kind: str, name: str) -> str | None:
    """Why a command builder refuses ``name`` as a ``kind`` ("vg", "lv", "path", ...), or None."""
    try:
        _CHECKS[kind](name)
    except (ValueError, TypeError) as error:
        return f"{error}{SUFFIX}"
    return None


_CAPABILITY_KIND = {
    StorageTechnology.lvm: "vg",
    StorageTechnology.file: "dir",
    StorageTechnology.zfs: "zfs-pool",
    StorageTechnology.gvinum: "gvinum-drive",
}


def capability_refusal(technology: StorageTechnology, name: str) -> str | None:
    """Why a storage capability (a VG, a directory, a pool, a drive) takes no new data, or None."""
    return refusal(_CAPABILITY_KIND[technology], name)


def new_allocation_refusal(technology: StorageTechnology, capability_name: str, name: str) -> str | None:
    """Why kerub-tui makes no allocation called ``name`` (``kerub-DISK``, or an image's file path) on that
    capability: its own name, or the allocation's (a disk name LVM reserves), or None."""
    found = capability_refusal(technology, capability_name)
    if found is not None:
        return found
    if technology is StorageTechnology.lvm:
        return refusal("lv", name)
    if technology is StorageTechnology.file:
        return refusal("path", name)
    if technology is StorageTechnology.zfs:
        return refusal("zfs-volume", name)
    return refusal("gvinum-volume", name)


def allocation_refusal(alloc: Any) -> str | None:
    """Why a command naming an existing allocation (to grow, copy, share, mirror or remove it, or a VM's
    disk in its domain) cannot be made, or None."""
    if isinstance(alloc, LvmAllocation):
        return (refusal("vg", alloc.vg) or refusal("lv", alloc.lv)
                or (refusal("thin-pool", alloc.thin_pool) if alloc.thin_pool else None))
    if isinstance(alloc, FileAllocation):
        return refusal("path", alloc.path)
    if isinstance(alloc, ZfsAllocation):
        return refusal("zfs-pool", alloc.pool) or refusal("zfs-volume", alloc.volume)
    if isinstance(alloc, GvinumAllocation):
        return refusal("gvinum-volume", alloc.volume)
    return None
