"""ZFS and gvinum volume steps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...core.models import (
    GvinumAllocation,
    ZfsAllocation,
)
from ...core.sizes import format_size
from ..state import OperationalState
from .allocations import _CreateAllocation, _RemoveAllocation
from .base import Operation, ShellOp, step_type


@step_type
@dataclass(frozen=True)
class CreateZfsVolume(_CreateAllocation):
    type: ClassVar[str] = "create-zfs-volume"
    disk: str
    host: str
    capability: str
    pool: str
    volume: str
    size: int

    def allocation(self) -> Any:
        return ZfsAllocation(host_id=self.host, capability_id=self.capability, pool=self.pool, volume=self.volume,
                             actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("zfs-pool", self.pool), ("zfs-volume", self.volume))

    def describe(self, state: OperationalState) -> str:
        return (f"create ZFS volume {self.pool}/{self.volume} ({format_size(self.size)}) on "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import zfs

        return [ShellOp(self.host, zfs.zfs_create_volume(pool=self.pool, name=self.volume, size=self.size))]


@step_type
@dataclass(frozen=True)
class RemoveZfsVolume(_RemoveAllocation):
    type: ClassVar[str] = "remove-zfs-volume"
    disk: str
    host: str
    capability: str
    pool: str
    volume: str

    def describe(self, state: OperationalState) -> str:
        disk, host = state.disk_name(self.disk), state.host_name(self.host)
        return f"destroy ZFS volume {self.pool}/{self.volume} of disk {disk} on {host}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import zfs

        return [ShellOp(self.host, zfs.zfs_destroy_volume(pool=self.pool, name=self.volume))]


@step_type
@dataclass(frozen=True)
class CreateGvinumVolume(_CreateAllocation):
    type: ClassVar[str] = "create-gvinum-volume"
    disk: str
    host: str
    capability: str
    drive: str
    volume: str
    size: int

    def allocation(self) -> Any:
        return GvinumAllocation(host_id=self.host, capability_id=self.capability, volume=self.volume,
                                actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("gvinum-drive", self.drive), ("gvinum-volume", self.volume))

    def describe(self, state: OperationalState) -> str:
        return (f"create gvinum volume {self.volume} ({format_size(self.size)}) on drive {self.drive} of "
                f"{state.host_name(self.host)} for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import gvinum

        return [ShellOp(self.host, gvinum.gvinum_create_volume(name=self.volume, drive=self.drive, size=self.size))]


@step_type
@dataclass(frozen=True)
class RemoveGvinumVolume(_RemoveAllocation):
    type: ClassVar[str] = "remove-gvinum-volume"
    disk: str
    host: str
    capability: str
    volume: str

    def describe(self, state: OperationalState) -> str:
        return (
            f"remove gvinum volume {self.volume} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        )

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import gvinum

        return [ShellOp(self.host, gvinum.gvinum_remove_volume(name=self.volume))]
