"""What every disk allocation step shares: names, finding and recording allocations, the create and remove bases."""

from __future__ import annotations

import abc
from typing import Any

from ...core.models import (
    Cost,
    VirtualStorageDevice,
)
from ..checkers import allocation_rejections
from ..state import OperationalState, Reservation
from .base import Step, Touched, _disk_dyn, _host_down, _locked_disk, names_refused, storage_refused


def allocation_name(disk: VirtualStorageDevice) -> str:
    return f"kerub-{disk.name}"


def _find_allocation(state: OperationalState, disk_id: str, host_id: str, capability_id: str) -> Any:
    for alloc in state.allocations(disk_id):
        if alloc.host_id == host_id and alloc.capability_id == capability_id:
            return alloc
    return None


def _add_allocation(state: OperationalState, disk_id: str, alloc: Any, **changes: Any) -> OperationalState:
    allocs = [a for a in state.allocations(disk_id)
              if not (a.host_id == alloc.host_id and a.capability_id == alloc.capability_id)]
    return state.apply([_disk_dyn(state, disk_id, [*allocs, alloc], **changes)])


def _drop_allocation(state: OperationalState, disk_id: str, host_id: str, capability_id: str) -> OperationalState:
    allocs = [a for a in state.allocations(disk_id) if not (a.host_id == host_id and a.capability_id == capability_id)]
    return state.apply([_disk_dyn(state, disk_id, allocs)])


class _CreateAllocation(Step):
    """Shared behaviour of the steps that create a disk's storage on a host."""

    disk: str
    host: str
    capability: str
    size: int

    @abc.abstractmethod
    def allocation(self) -> Any:
        """The allocation this step creates."""

    def inverse(self) -> Step:
        from .storage import remove_step  # the remove of its technology

        return remove_step(self.disk, self.allocation())

    def blocked(self, state: OperationalState) -> str | None:
        disk = state.disks.get(self.disk)
        if disk is None:
            return f"no disk {self.disk}"
        if refused := names_refused(state, self.host, self.capability, self.names()):
            return refused
        hard = [r.reason for r in allocation_rejections(state, disk, self.host, self.capability, self._space())
                if r.level is None]
        return hard[0] if hard else _locked_disk(state, self.disk)

    def names(self) -> tuple[tuple[str, str], ...]:
        """The names its command carries, each with its kind (hosts/storage_names.py)."""
        return ()

    def _space(self) -> int:
        return self.size

    def take(self, state: OperationalState) -> OperationalState:
        return _add_allocation(state, self.disk, self.allocation())

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk), Reservation("storage", f"{self.host}/{self.capability}", self._space())]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=2.0)

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} has storage on {state.host_name(self.host)}"


class _RemoveAllocation(Step):
    disk: str
    host: str
    capability: str

    def deletes_data(self) -> bool:
        return True

    def blocked(self, state: OperationalState) -> str | None:
        if _find_allocation(state, self.disk, self.host, self.capability) is None:
            return f"disk {state.disk_name(self.disk)} has no storage on {state.host_name(self.host)} {self.capability}"
        if refused := storage_refused(state, self.disk, self.host, self.capability):
            return refused
        if down := _host_down(state, self.host):
            return down
        users = [state.vm_name(v) for v in state.disk_users(self.disk) if state.vm_host(v) == self.host]
        if users:
            used_by = ", ".join(sorted(users))
            return f"disk {state.disk_name(self.disk)} is in use by {used_by} on {state.host_name(self.host)}"
        config = state.host_config.get(self.host)
        if (config is not None and any(e.disk_id == self.disk for e in config.exports)) or \
                (config is not None and any(t.disk_id == self.disk for t in config.iscsi_targets)):
            return f"disk {state.disk_name(self.disk)} is shared from {state.host_name(self.host)}: unshare it first"
        from ..image_steps import backing_blocks_removal

        return backing_blocks_removal(state, self.disk, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        return _drop_allocation(state, self.disk, self.host, self.capability)

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk)]

    def cost(self, state: OperationalState) -> Cost:
        # Data goes away for good: a little risk, so that keeping a copy wins a tie.
        return Cost(time_seconds=2.0, risk=0.05)

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} has no storage on {state.host_name(self.host)} {self.capability}"
