"""LVM steps: linear, thin and mirrored LVs, thin pools, extending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.models import (
    Cost,
    LvmAllocation,
    ThinPool,
)
from ...core.sizes import format_size
from ..checkers import host_usable
from ..cost import IO_BYTES_PER_SECOND
from ..state import OperationalState, Reservation
from .allocations import _add_allocation, _CreateAllocation, _find_allocation, _RemoveAllocation
from .base import Operation, ShellOp, Step, Touched, _host_config, _locked_disk, _taken, step_type


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
        if state.thin_pool(self.host, self.vg, self.pool) is None:
            return f"{state.host_name(self.host)} has no thin pool {self.vg}/{self.pool}"
        return super().blocked(state)

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             thin_pool=self.pool, actual_size=self.size)

    def describe(self, state: OperationalState) -> str:
        return (f"create thin LV {self.vg}/{self.lv} ({format_size(self.size)}) in pool {self.pool} on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

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

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             mirrors=self.mirrors, actual_size=self.size)

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
        grow = self.size - (alloc.actual_size or 0)
        if grow <= 0:
            return f"LV {self.vg}/{self.lv} is already {format_size(alloc.actual_size)}"
        if not alloc.thin_pool and state.free_storage(self.host, self.capability) < grow:
            return (
                f"{state.host_name(self.host)} {self.capability}: not enough free space to grow by {format_size(grow)}"
            )
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

    def blocked(self, state: OperationalState) -> str | None:
        if state.thin_pool(self.host, self.vg, self.pool) is not None:
            return f"{state.host_name(self.host)} already has thin pool {self.vg}/{self.pool}"
        if state.free_storage(self.host, self.capability) < self.size:
            where = f"{state.host_name(self.host)} {self.capability}"
            return f"{where}: not enough free space for a {format_size(self.size)} pool"
        return host_usable(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        pools = [*list(state.thin_pools(self.host)), ThinPool(vg=self.vg, name=self.pool, size_bytes=self.size)]
        state = state.apply([_host_config(state, self.host, thin_pools=pools)])
        return state.consume_storage(self.host, self.capability, self.size)

    def reservations(self) -> list[Reservation]:
        return [Reservation("pool", f"{self.host}/{self.vg}/{self.pool}"),
                Reservation("storage", f"{self.host}/{self.capability}", self.size)]

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
        state = state.apply([_host_config(state, self.host, thin_pools=pools)])
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
