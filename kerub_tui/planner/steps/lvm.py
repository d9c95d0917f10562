"""LVM steps: linear, thin and mirrored LVs, thin pools, extending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.models import (
    Cost,
    LvmAllocation,
    PhysicalVolumeInfo,
    ThinPool,
)
from ...core.sizes import format_size
from ..checkers import host_usable
from ..cost import IO_BYTES_PER_SECOND
from ..state import OperationalState, Reservation, thin_pool_key
from .allocations import _add_allocation, _CreateAllocation, _find_allocation, _RemoveAllocation
from .base import (
    Operation,
    ShellOp,
    Step,
    Touched,
    _host_config,
    _host_dyn,
    _locked_disk,
    _taken,
    names_refused,
    step_type,
    storage_refused,
)

MIB = 1 << 20
EXTENT = 4 * MIB  # LVM's default extent: sizes the planner picks are whole extents
THIN_METADATA_MIN = 2 * MIB  # lvm.conf thin_pool_metadata_require / DEFAULT_THIN_POOL_MIN_METADATA_SIZE
THIN_METADATA_OPTIMAL = 128 * MIB  # LVM picks the chunk size that keeps the metadata LV at most this big


def whole_extents(size: int) -> int:
    return -(-size // EXTENT) * EXTENT


def thin_pool_overhead(size: int) -> int:
    """What a new thin pool of ``size`` data bytes takes from its VG besides them: LVM's metadata LV
    (64 bytes per 64 KiB chunk, from 2 MiB up to 128 MiB, the chunk growing past that) and the spare
    metadata LV of the same size LVM keeps for repairs (lvmthin(7))."""
    return 2 * whole_extents(min(max(size // 1024, THIN_METADATA_MIN), THIN_METADATA_OPTIMAL))


def _with_pool_free(state: OperationalState, host: str, vg: str, pool: str, free: int) -> Any:
    """The host's dynamic document with a thin pool's free data bytes as monitoring would report them."""
    dyn = state.host_dyn.get(host)
    seen = dict(dyn.storage_free) if dyn is not None else {}
    return _host_dyn(state, host, storage_free={**seen, thin_pool_key(vg, pool): free})


def thin_overcommit(allotted: int, pool_size: int) -> float:
    """The virtual sizes of a pool's thin LVs over its data size (1.0: exactly as much as it holds)."""
    return allotted / pool_size if pool_size > 0 else float("inf")


def thin_room_reason(state: OperationalState, host: str, vg: str, pool: str, adding: int) -> str | None:
    """Why the thin pool cannot take ``adding`` more bytes of thin LVs: it would be over-committed past
    the admin's ratio (ARCHITECTURE.md, thin over-commit), or its data space is nearly full already."""
    from ..problems import THIN_POOL_FULL

    found = state.thin_pool(host, vg, pool)
    if found is None:
        return f"{state.host_name(host)} has no thin pool {vg}/{pool}"
    limit = state.thin_overcommit_limit()
    allotted = state.thin_allotted(host, vg, pool) + adding
    if allotted > found.size_bytes * limit:
        policy = (f"thin over-commit allows at most {limit:g}x" if state.settings.optimisation.thin_overcommit
                  else "thin over-commit is off")
        return (f"thin pool {vg}/{pool} on {state.host_name(host)} ({format_size(found.size_bytes)}) would hold "
                f"{format_size(allotted)} of thin LVs, {thin_overcommit(allotted, found.size_bytes):.1f}x its size: "
                f"{policy}")
    used = state.thin_pool_used(host, vg, pool)
    if used >= found.size_bytes * THIN_POOL_FULL:
        return (f"thin pool {vg}/{pool} on {state.host_name(host)} is {100 * used / found.size_bytes:.0f}% full: "
                "extend it first")
    return None


@step_type
@dataclass(frozen=True)
class CreateLv(_CreateAllocation):
    type: ClassVar[str] = "create-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("vg", self.vg), ("lv", self.lv))

    def describe(self, state: OperationalState) -> str:
        return (f"create LV {self.vg}/{self.lv} ({format_size(self.size)}) on {state.host_name(self.host)} "
                f"for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate(vg=self.vg, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateThinLv(_CreateAllocation):
    type: ClassVar[str] = "create-thin-lv"
    disk: str
    host: str
    capability: str
    vg: str
    pool: str
    lv: str
    size: int

    def _space(self) -> int:
        return 0  # comes out of the pool, not the volume group

    def blocked(self, state: OperationalState) -> str | None:
        return thin_room_reason(state, self.host, self.vg, self.pool, self.size) or super().blocked(state)

    def _overcommit_after(self, state: OperationalState) -> float | None:
        """The pool's over-commit with this LV in it, None where it would hold no more than its size."""
        pool = state.thin_pool(self.host, self.vg, self.pool)
        if pool is None:
            return None
        ratio = thin_overcommit(state.thin_allotted(self.host, self.vg, self.pool) + self.size, pool.size_bytes)
        return ratio if ratio > 1.0 else None

    def cost(self, state: OperationalState) -> Cost:
        # Over-committed, the disk may one day find its pool full: a little risk, so that a plain LV
        # (or a pool not over-committed) wins where one fits.
        return Cost(time_seconds=2.0, risk=0.05 if self._overcommit_after(state) else 0.0)

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             thin_pool=self.pool, actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("vg", self.vg), ("thin-pool", self.pool), ("lv", self.lv))

    def describe(self, state: OperationalState) -> str:
        text = (f"create thin LV {self.vg}/{self.lv} ({format_size(self.size)}) in pool {self.pool} on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")
        ratio = self._overcommit_after(state)
        if ratio is not None:
            text += f", the pool over-committed {ratio:.1f}x (at most {state.thin_overcommit_limit():g}x)"
        return text

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate_thin(vg=self.vg, pool=self.pool, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateMirrorLv(_CreateAllocation):
    type: ClassVar[str] = "create-mirror-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int
    mirrors: int

    def _space(self) -> int:
        return self.size * (1 + self.mirrors)

    def blocked(self, state: OperationalState) -> str | None:
        return super().blocked(state) or state.mirror_room(self.host, self.capability, self.size, self.mirrors + 1)

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             mirrors=self.mirrors, actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("vg", self.vg), ("lv", self.lv))

    def cost(self, state: OperationalState) -> Cost:
        io = self.size * self.mirrors  # the initial sync
        return Cost(io_bytes=io, time_seconds=2.0 + io / IO_BYTES_PER_SECOND)

    def describe(self, state: OperationalState) -> str:
        return (f"create LV {self.vg}/{self.lv} ({format_size(self.size)}, {self.mirrors + 1} copies) on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvcreate_mirror(vg=self.vg, lv=self.lv, size=self.size, mirrors=self.mirrors))]


@step_type
@dataclass(frozen=True)
class RemoveLv(_RemoveAllocation):
    type: ClassVar[str] = "remove-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str

    def describe(self, state: OperationalState) -> str:
        return f"remove LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvremove(vg=self.vg, lv=self.lv))]


@step_type
@dataclass(frozen=True)
class ExtendLv(Step):
    type: ClassVar[str] = "extend-lv"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int  # the new total size

    def blocked(self, state: OperationalState) -> str | None:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        if not isinstance(alloc, LvmAllocation) or alloc.lv != self.lv:
            return f"no LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        if refused := storage_refused(state, self.disk, self.host, self.capability):
            return refused
        grow = self.size - (alloc.actual_size or 0)
        if grow <= 0:
            return f"LV {self.vg}/{self.lv} is already {format_size(alloc.actual_size)}"
        if not alloc.thin_pool and state.free_storage(self.host, self.capability) < grow:
            return (
                f"{state.host_name(self.host)} {self.capability}: not enough free space to grow by {format_size(grow)}"
            )
        if alloc.thin_pool:
            disk = state.disks.get(self.disk)
            counted = alloc.actual_size or (disk.size if disk is not None else 0)  # what the pool counts now
            if full := thin_room_reason(state, self.host, alloc.vg, alloc.thin_pool, self.size - counted):
                return full
        return host_usable(state, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        return _add_allocation(state, self.disk, alloc.evolve(actual_size=self.size))

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk), Reservation("storage", f"{self.host}/{self.capability}", self.size)]

    def describe(self, state: OperationalState) -> str:
        return f"extend LV {self.vg}/{self.lv} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} is {format_size(self.size)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvextend(vg=self.vg, lv=self.lv, size=self.size))]


@step_type
@dataclass(frozen=True)
class CreateThinPool(Step):
    type: ClassVar[str] = "create-thin-pool"
    host: str
    capability: str
    vg: str
    pool: str
    size: int

    def _space(self) -> int:
        return self.size + thin_pool_overhead(self.size)  # its data, and LVM's metadata LVs beside it

    def blocked(self, state: OperationalState) -> str | None:
        if refused := names_refused(state, self.host, self.capability, (("vg", self.vg), ("thin-pool", self.pool))):
            return refused
        if state.thin_pool(self.host, self.vg, self.pool) is not None:
            return f"{state.host_name(self.host)} already has thin pool {self.vg}/{self.pool}"
        if state.free_storage(self.host, self.capability) < self._space():
            where = f"{state.host_name(self.host)} {self.capability}"
            return f"{where}: not enough free space for a {format_size(self.size)} pool and its metadata"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        pools = [*list(state.thin_pools(self.host)), ThinPool(vg=self.vg, name=self.pool, size_bytes=self.size)]
        # a new pool is empty: recorded as monitoring reports it, until monitoring does
        state = state.apply([_host_config(state, self.host, thin_pools=pools),
                             _with_pool_free(state, self.host, self.vg, self.pool, self.size)])
        return state.consume_storage(self.host, self.capability, self._space())

    def reservations(self) -> list[Reservation]:
        return [Reservation("pool", f"{self.host}/{self.vg}/{self.pool}"),
                Reservation("storage", f"{self.host}/{self.capability}", self._space())]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=5.0)  # a new LV pair, its metadata written: more than growing a pool there is

    def describe(self, state: OperationalState) -> str:
        return f"create thin pool {self.vg}/{self.pool} ({format_size(self.size)}) on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has thin pool {self.vg}/{self.pool}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.thin_pool_create(vg=self.vg, pool=self.pool, size=self.size))]


@step_type
@dataclass(frozen=True)
class ExtendThinPool(Step):
    type: ClassVar[str] = "extend-thin-pool"
    host: str
    capability: str
    vg: str
    pool: str
    size: int  # the new total size

    def _current(self, state: OperationalState) -> ThinPool | None:
        return state.thin_pool(self.host, self.vg, self.pool)

    def blocked(self, state: OperationalState) -> str | None:
        pool = self._current(state)
        if pool is None:
            return f"{state.host_name(self.host)} has no thin pool {self.vg}/{self.pool}"
        if refused := names_refused(state, self.host, self.capability, (("vg", self.vg), ("thin-pool", self.pool))):
            return refused
        grow = self.size - pool.size_bytes
        if grow <= 0:
            return f"thin pool {self.vg}/{self.pool} is already {format_size(pool.size_bytes)}"
        if state.free_storage(self.host, self.capability) < grow:
            where = f"{state.host_name(self.host)} {self.capability}"
            return f"{where}: not enough free space to grow the pool by {format_size(grow)}"
        return host_usable(state, self.host) or (
            "the thin pool is held by another plan"
            if state.locked("pool", f"{self.host}/{self.vg}/{self.pool}")
            else None
        )

    def take(self, state: OperationalState) -> OperationalState:
        pool = _taken(self._current(state), "the thin pool")
        grow = self.size - pool.size_bytes
        pools = [
            p.evolve(size_bytes=self.size) if p == pool else p for p in state.thin_pools(self.host)
        ]
        changes: list[Any] = [_host_config(state, self.host, thin_pools=pools)]
        dyn = state.host_dyn.get(self.host)
        free = dyn.storage_free.get(thin_pool_key(self.vg, self.pool)) if dyn is not None else None
        if free is not None:  # as monitoring saw it: the data stays, the new space is free
            changes.append(_with_pool_free(state, self.host, self.vg, self.pool, free + grow))
        state = state.apply(changes)
        return state.consume_storage(self.host, self.capability, grow)

    def reservations(self) -> list[Reservation]:
        return [Reservation("pool", f"{self.host}/{self.vg}/{self.pool}"),
                Reservation("storage", f"{self.host}/{self.capability}", self.size)]

    def describe(self, state: OperationalState) -> str:
        return f"extend thin pool {self.vg}/{self.pool} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"thin pool {self.vg}/{self.pool} is {format_size(self.size)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvextend(vg=self.vg, lv=self.pool, size=self.size))]


@step_type
@dataclass(frozen=True)
class ConvertLvToMirror(Step):
    """Give an existing LV more copies in its VG (``lvconvert --type raid1 -m N``): online, the new
    copies sync in the background; the in-box redundancy of a disk that already has its data."""

    type: ClassVar[str] = "convert-lv-to-mirror"
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    mirrors: int  # extra copies wanted in all (1: two copies)

    def _alloc(self, state: OperationalState) -> LvmAllocation | None:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        return alloc if isinstance(alloc, LvmAllocation) and alloc.lv == self.lv else None

    def _size(self, state: OperationalState, alloc: LvmAllocation | None) -> int:
        disk = state.disks.get(self.disk)
        return (alloc.actual_size if alloc is not None and alloc.actual_size else None) or (disk.size if disk else 0)

    def blocked(self, state: OperationalState) -> str | None:
        alloc = self._alloc(state)
        if alloc is None:
            return f"no LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        if refused := storage_refused(state, self.disk, self.host, self.capability):
            return refused
        if alloc.thin_pool:
            return f"LV {self.vg}/{self.lv} is a thin LV: raid1 takes whole copies"
        if alloc.mirrors >= self.mirrors:
            return f"LV {self.vg}/{self.lv} already has {alloc.mirrors + 1} copies"
        failing = state.failing_device(self.host, self.capability)
        if failing is not None:
            return f"{state.host_name(self.host)} {self.capability}: {failing} is failing"
        size = self._size(state, alloc)
        return (host_usable(state, self.host)
                or state.mirror_room(self.host, self.capability, size, self.mirrors + 1, existing=alloc.mirrors + 1)
                or _locked_disk(state, self.disk))

    def take(self, state: OperationalState) -> OperationalState:
        alloc = _taken(self._alloc(state), "the LV")
        return _add_allocation(state, self.disk, alloc.evolve(mirrors=self.mirrors))

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk), Reservation("storage", f"{self.host}/{self.capability}", 0)]

    def cost(self, state: OperationalState) -> Cost:
        alloc = self._alloc(state)
        io = self._size(state, alloc) * (self.mirrors - (alloc.mirrors if alloc is not None else 0))  # the sync
        return Cost(io_bytes=io, time_seconds=2.0 + io / IO_BYTES_PER_SECOND)

    def describe(self, state: OperationalState) -> str:
        return (f"mirror LV {self.vg}/{self.lv} of disk {state.disk_name(self.disk)} to {self.mirrors + 1} copies on "
                f"{state.host_name(self.host)}")

    def effect(self, state: OperationalState) -> str:
        return (f"disk {state.disk_name(self.disk)} keeps {self.mirrors + 1} copies on PVs of their own in "
                f"{self.vg} on {state.host_name(self.host)}, kept in sync by LVM")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.lvconvert_mirror(vg=self.vg, lv=self.lv, mirrors=self.mirrors))]


def _pv(state: OperationalState, host: str, capability: str, pv: str) -> PhysicalVolumeInfo | None:
    return next((p for p in state.pvs(host, capability) if p.name == pv), None)


def _commandable(name: str) -> bool:
    """A PV name (as a host's pvs printed it) that kerub-tui will put in a command."""
    from ...hosts import lvm

    try:
        lvm.check_pv(name)
    except ValueError:
        return False
    return True


def _refused(state: OperationalState, host: str, capability: str, vg: str, pv: str) -> str | None:
    from ...hosts import lvm

    where = f"{state.host_name(host)} {capability}"
    if not _commandable(pv):
        return f"{where}: PV {pv!r:.80} is not a device path kerub-tui puts in a command"
    try:
        lvm.check_vg(vg)
    except ValueError as error:
        return f"{where}: {error}"
    return None


def _pv_or_why(state: OperationalState, host: str, capability: str, vg: str,
               pv: str) -> PhysicalVolumeInfo | str:
    """The PV a pvmove or vgreduce names, or why no command may name it (missing, or a name refused)."""
    found = _pv(state, host, capability, pv)
    if found is None:
        return f"{state.host_name(host)} {capability}: no PV {pv}"
    return _refused(state, host, capability, vg, pv) or found


def _with_pvs(state: OperationalState, host: str, capability: str, pvs: list[PhysicalVolumeInfo]) -> OperationalState:
    dyn = state.host_dyn.get(host)
    seen = dict(dyn.storage_pvs) if dyn is not None else {}
    seen[capability] = pvs
    return state.apply([_host_dyn(state, host, storage_pvs=seen)])


@step_type
@dataclass(frozen=True)
class MovePvExtents(Step):
    """``pvmove``: every extent of a PV onto the VG's healthy PVs, online (the LVs stay in use). The
    first half of taking a failing disk out of a VG (issue 18 item 7)."""

    type: ClassVar[str] = "move-pv-extents"
    host: str
    capability: str
    vg: str
    pv: str

    def _targets(self, state: OperationalState) -> list[PhysicalVolumeInfo]:
        failing = {p.name for p in state.failing_pvs(self.host, self.capability)}
        return [p for p in state.pvs(self.host, self.capability)
                if p.name != self.pv and p.name not in failing and _commandable(p.name)]

    def blocked(self, state: OperationalState) -> str | None:
        pv = _pv_or_why(state, self.host, self.capability, self.vg, self.pv)
        if isinstance(pv, str):
            return pv
        where = f"{state.host_name(self.host)} {self.capability}"
        if not pv.used_bytes:
            return f"{where}: PV {self.pv} holds nothing to move"
        room = sum(p.free_bytes for p in self._targets(state))
        if room < pv.used_bytes:
            return (f"{where}: the other healthy PVs have {format_size(room)} free, PV {self.pv} holds "
                    f"{format_size(pv.used_bytes)}")
        return host_usable(state, self.host) or (
            "the volume group is held by another plan" if state.locked("vg", f"{self.host}/{self.vg}") else None)

    def take(self, state: OperationalState) -> OperationalState:
        pv = _taken(_pv(state, self.host, self.capability, self.pv), "the PV")
        left = pv.used_bytes
        moved: dict[str, int] = {}
        for target in sorted(self._targets(state), key=lambda p: (-p.free_bytes, p.name)):  # the roomiest first
            take = min(left, target.free_bytes)
            moved[target.name] = take
            left -= take
        pvs = [p.evolve(free_bytes=p.size_bytes) if p.name == self.pv
               else p.evolve(free_bytes=p.free_bytes - moved.get(p.name, 0))
               for p in state.pvs(self.host, self.capability)]
        return _with_pvs(state, self.host, self.capability, pvs)

    def reservations(self) -> list[Reservation]:
        return [Reservation("vg", f"{self.host}/{self.vg}")]

    def cost(self, state: OperationalState) -> Cost:
        pv = _pv(state, self.host, self.capability, self.pv)
        io = 2 * (pv.used_bytes if pv is not None else 0)  # every extent read and written once
        return Cost(io_bytes=io, time_seconds=5.0 + io / IO_BYTES_PER_SECOND, risk=0.02)

    def describe(self, state: OperationalState) -> str:
        pv = _pv(state, self.host, self.capability, self.pv)
        held = f" ({format_size(pv.used_bytes)})" if pv is not None else ""
        return f"move every extent{held} off PV {self.pv} of {self.vg} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"PV {self.pv} of {self.vg} on {state.host_name(self.host)} holds nothing"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.pvmove(self.pv, [p.name for p in self._targets(state)]))]


@step_type
@dataclass(frozen=True)
class RemovePvFromVg(Step):
    """``vgreduce``: an empty PV leaves its VG, so nothing is ever placed on it again."""

    type: ClassVar[str] = "remove-pv-from-vg"
    host: str
    capability: str
    vg: str
    pv: str

    def blocked(self, state: OperationalState) -> str | None:
        pv = _pv_or_why(state, self.host, self.capability, self.vg, self.pv)
        if isinstance(pv, str):
            return pv
        where = f"{state.host_name(self.host)} {self.capability}"
        if pv.used_bytes:
            return f"{where}: PV {self.pv} still holds {format_size(pv.used_bytes)}"
        if len(state.pvs(self.host, self.capability)) < 2:
            return f"{where}: PV {self.pv} is its only PV"
        return host_usable(state, self.host) or (
            "the volume group is held by another plan" if state.locked("vg", f"{self.host}/{self.vg}") else None)

    def take(self, state: OperationalState) -> OperationalState:
        pv = _taken(_pv(state, self.host, self.capability, self.pv), "the PV")
        pvs = [p for p in state.pvs(self.host, self.capability) if p.name != self.pv]
        state = _with_pvs(state, self.host, self.capability, pvs)
        # the VG shrinks by its free PV: space gone from that PV alone, not from the others
        state = state.consume_storage(self.host, self.capability, pv.size_bytes)
        return state.take_pv(self.host, self.capability, self.pv, pv.size_bytes)

    def reservations(self) -> list[Reservation]:
        return [Reservation("vg", f"{self.host}/{self.vg}")]

    def describe(self, state: OperationalState) -> str:
        return f"take PV {self.pv} out of {self.vg} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{self.vg} on {state.host_name(self.host)} no longer uses {self.pv}: the disk can be replaced"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import lvm

        return [ShellOp(self.host, lvm.vgreduce(self.vg, self.pv))]
