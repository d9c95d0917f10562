"""File image steps: create, remove and extend an image file in a host's file storage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ...core.models import FileAllocation
from ...core.sizes import format_size
from ..checkers import host_usable
from ..state import OperationalState, Reservation
from .allocations import _add_allocation, _CreateAllocation, _find_allocation, _RemoveAllocation
from .base import Operation, ShellOp, Step, Touched, _locked_disk, step_type, storage_refused


@step_type
@dataclass(frozen=True)
class CreateFileImage(_CreateAllocation):
    type: ClassVar[str] = "create-file-image"
    disk: str
    host: str
    capability: str
    path: str
    size: int
    format: Literal["raw", "qcow2"] = "qcow2"

    def allocation(self) -> Any:
        return FileAllocation(host_id=self.host, capability_id=self.capability, path=self.path,
                              format=self.format, actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("path", self.path),)

    def describe(self, state: OperationalState) -> str:
        return (f"create {self.format} image {self.path} ({format_size(self.size)}) on {state.host_name(self.host)} "
                f"for disk {state.disk_name(self.disk)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import fileimage

        return [ShellOp(self.host, fileimage.qemu_img_create(path=self.path, size=self.size, fmt=self.format))]


@step_type
@dataclass(frozen=True)
class RemoveFileImage(_RemoveAllocation):
    type: ClassVar[str] = "remove-file-image"
    disk: str
    host: str
    capability: str
    path: str

    def describe(self, state: OperationalState) -> str:
        return f"remove image {self.path} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import fileimage

        return [ShellOp(self.host, fileimage.file_remove(path=self.path))]


@step_type
@dataclass(frozen=True)
class ExtendFileImage(Step):
    type: ClassVar[str] = "extend-file-image"
    disk: str
    host: str
    capability: str
    path: str
    size: int

    def blocked(self, state: OperationalState) -> str | None:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        if not isinstance(alloc, FileAllocation) or alloc.path != self.path:
            return f"no image {self.path} of disk {state.disk_name(self.disk)} on {state.host_name(self.host)}"
        if refused := storage_refused(state, self.disk, self.host, self.capability):
            return refused
        if (alloc.actual_size or 0) >= self.size:
            return f"image {self.path} is already {format_size(alloc.actual_size)}"
        users = [state.vm_name(v) for v in state.disk_users(self.disk) if state.vm_host(v) is not None]
        if users:
            return (
                f"disk {state.disk_name(self.disk)} is in use by {', '.join(sorted(users))}: qemu-img cannot resize it"
            )
        return host_usable(state, self.host) or _locked_disk(state, self.disk)

    def take(self, state: OperationalState) -> OperationalState:
        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        return _add_allocation(state, self.disk, alloc.evolve(actual_size=self.size))

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("disk", self.disk)]

    def describe(self, state: OperationalState) -> str:
        return f"resize image {self.path} to {format_size(self.size)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} is {format_size(self.size)} on {state.host_name(self.host)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import fileimage

        alloc = _find_allocation(state, self.disk, self.host, self.capability)
        fmt = alloc.format if alloc is not None else None
        return [ShellOp(self.host, fileimage.qemu_img_resize(path=self.path, size=self.size, fmt=fmt))]
