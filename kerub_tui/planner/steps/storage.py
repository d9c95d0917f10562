"""The allocation step of a storage technology (create_step, remove_step), and copying an allocation between hosts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ...core.models import (
    Cost,
    FileAllocation,
    LvmAllocation,
    StorageCapability,
    StorageTechnology,
    VirtualStorageDevice,
    ZfsAllocation,
)
from ..cost import IO_BYTES_PER_SECOND, NETWORK_BYTES_PER_SECOND
from ..state import OperationalState, Reservation
from .allocations import _add_allocation, _CreateAllocation, _drop_allocation, _find_allocation, allocation_name
from .base import (
    PEER_KEY,
    PEER_KNOWN_HOSTS,
    Operation,
    ShellOp,
    Step,
    Touched,
    _host_down,
    _taken,
    step_type,
    storage_refused,
)
from .files import CreateFileImage, RemoveFileImage
from .lvm import CreateLv, CreateMirrorLv, CreateThinLv, RemoveLv
from .zfs import CreateGvinumVolume, CreateZfsVolume, RemoveGvinumVolume, RemoveZfsVolume


def new_allocation_name(disk: VirtualStorageDevice, cap: StorageCapability) -> str:
    """What ``disk``'s new storage on a capability is called: an LV, ZFS or gvinum volume name, or a file's path."""
    name = allocation_name(disk)
    if cap.technology is not StorageTechnology.file:
        return name
    if disk.image is not None:  # a copy of an image keeps its kind: the copy step writes it byte for byte
        from ...hosts.images import image_extension, image_file_name

        return f"{cap.name.rstrip('/')}/{image_file_name(disk.name, disk.id, image_extension(disk.image.format))}"
    return f"{cap.name.rstrip('/')}/{name}.qcow2"


def create_step(state: OperationalState, disk: VirtualStorageDevice, host_id: str, cap: StorageCapability, *,
                thin_pool: str | None = None, mirrors: int = 0, size: int | None = None) -> _CreateAllocation:
    """The step creating ``disk``'s storage on a capability, named after the disk."""
    name = new_allocation_name(disk, cap)
    size = disk.size if size is None else size
    if cap.technology is StorageTechnology.lvm:
        if thin_pool:
            return CreateThinLv(disk.id, host_id, cap.id, cap.name, thin_pool, name, size)
        if mirrors:
            return CreateMirrorLv(disk.id, host_id, cap.id, cap.name, name, size, mirrors)
        return CreateLv(disk.id, host_id, cap.id, cap.name, name, size)
    if cap.technology is StorageTechnology.file:
        raw = disk.image is not None and disk.image.format != "qcow2"  # an image's copy keeps its kind
        return CreateFileImage(disk.id, host_id, cap.id, name, size, "raw" if raw else "qcow2")
    if cap.technology is StorageTechnology.zfs:
        return CreateZfsVolume(disk.id, host_id, cap.id, cap.name, name, size)
    return CreateGvinumVolume(disk.id, host_id, cap.id, cap.name, name, size)


def remove_step(disk_id: str, alloc: Any) -> Step:
    if isinstance(alloc, LvmAllocation):
        return RemoveLv(disk_id, alloc.host_id, alloc.capability_id, alloc.vg, alloc.lv)
    if isinstance(alloc, FileAllocation):
        return RemoveFileImage(disk_id, alloc.host_id, alloc.capability_id, alloc.path)
    if isinstance(alloc, ZfsAllocation):
        return RemoveZfsVolume(disk_id, alloc.host_id, alloc.capability_id, alloc.pool, alloc.volume)
    return RemoveGvinumVolume(disk_id, alloc.host_id, alloc.capability_id, alloc.volume)


@step_type
@dataclass(frozen=True)
class CopyAllocation(Step):
    """Copy a disk's storage to another host over SSH (checksummed); ``move`` removes the source after.

    With ``source_disk`` set to another disk, this creates ``disk`` as a clone of that disk."""

    type: ClassVar[str] = "copy-allocation"
    disk: str
    host: str  # the source host
    capability: str  # the source capability
    target: str
    target_capability: str
    move: bool = False
    source_disk: str | None = None
    # why a copy rather than reading the disk over a share, where one was possible (said to the admin)
    reason: str = field(default="", compare=False)

    def _source_disk(self) -> str:
        return self.source_disk or self.disk

    def deletes_data(self) -> bool:
        return self.move  # the source copy is removed once the copy is checked

    def _creator(self, state: OperationalState) -> _CreateAllocation | None:
        disk = state.disks.get(self.disk)
        cap = state.capability(self.target, self.target_capability)
        if disk is None or cap is None:
            return None
        return create_step(state, disk, self.target, cap)

    def blocked(self, state: OperationalState) -> str | None:
        source = _find_allocation(state, self._source_disk(), self.host, self.capability)
        if source is None:
            disk = state.disk_name(self._source_disk())
            return f"disk {disk} has no storage on {state.host_name(self.host)} {self.capability}"
        if refused := storage_refused(state, self._source_disk(), self.host, self.capability):
            return refused
        if down := _host_down(state, self.host):
            return down
        creator = self._creator(state)
        if creator is None:
            return f"{state.host_name(self.target)} has no storage {self.target_capability}"
        reason = creator.blocked(state)
        if reason:
            return reason
        src = state.disks.get(self._source_disk())
        running = [state.vm_name(v) for v in state.disk_users(self._source_disk()) if state.vm_running(v)]
        if running and src is not None and not src.read_only:
            return (f"disk {src.name} is in use by {', '.join(sorted(running))}: a copy taken now would not be "
                    "consistent")
        config = state.host_config.get(self.target)
        if self.host != self.target and (config is None or self.host not in config.ssh_trust):
            return f"{state.host_name(self.target)} does not trust {state.host_name(self.host)} yet"
        if self.move:
            remover = remove_step(self.disk, source)
            return remover.blocked(state)
        return None

    def take(self, state: OperationalState) -> OperationalState:
        creator = _taken(self._creator(state), "the target storage")
        changes = {"cloned_from": self.source_disk} if self.source_disk else {}
        alloc = creator.allocation()
        if self._point_in_time(state):
            alloc = alloc.evolve(copied_at=state.now)
        state = _add_allocation(state, self.disk, alloc, **changes)
        if self.move:
            state = _drop_allocation(state, self.disk, self.host, self.capability)
        return state

    def _point_in_time(self, state: OperationalState) -> bool:
        """A second copy of a writable disk: it ages from the moment it is taken (nothing syncs it)."""
        disk = state.disks.get(self.disk)
        return not self.move and not self.source_disk and disk is not None and not disk.read_only

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk, self._source_disk()}), hosts=frozenset({self.host, self.target}))

    def reservations(self) -> list[Reservation]:
        out = [Reservation("disk", self.disk), Reservation("storage", f"{self.target}/{self.target_capability}", 0)]
        if self.source_disk:
            out.append(Reservation("disk", self.source_disk))
        return out

    def cost(self, state: OperationalState) -> Cost:
        disk = state.disks.get(self._source_disk())
        size = disk.size if disk is not None else 0
        network = 0 if self.host == self.target else size
        seconds = size / NETWORK_BYTES_PER_SECOND if network else 2 * size / IO_BYTES_PER_SECOND
        return Cost(network_bytes=network, io_bytes=2 * size, cpu_seconds=size / 500e6,
                    time_seconds=5.0 + seconds, risk=0.05 if self.move else 0.0)

    def describe(self, state: OperationalState) -> str:
        verb = "move" if self.move else "copy"
        what = f"disk {state.disk_name(self.disk)}"
        if self.source_disk:
            verb, what = "clone", f"disk {state.disk_name(self.source_disk)} into {state.disk_name(self.disk)}"
        why = f": {self.reason}" if self.reason else ""
        return (f"{verb} {what} from {state.host_name(self.host)} {self.capability} to "
                f"{state.host_name(self.target)} {self.target_capability}{why}")

    def effect(self, state: OperationalState) -> str:
        said = f"disk {state.disk_name(self.disk)} has storage on {state.host_name(self.target)}"
        if self._point_in_time(state):
            said += " (a copy as of when this step runs: not kept in sync, its age is shown)"
        return said

    def operations(self, state: OperationalState) -> list[Operation]:
        from ...hosts import copy

        source = _find_allocation(state, self._source_disk(), self.host, self.capability)
        creator = _taken(self._creator(state), "the target storage")
        target = state.hosts[self.target]
        disk = state.disks[self._source_disk()]
        # an image's copy is made by the copy itself (nothing to create first), and checked against the
        # image's own sha256 once there
        ops: list[Operation] = [] if disk.image is not None else list(creator.operations(state))
        destination = creator.allocation()
        if self.host == self.target:
            from ...hosts import fileimage

            # on one host qemu-img copies directly (and converts between raw and qcow2)
            ops.append(ShellOp(self.host, fileimage.qemu_img_convert(
                source.path, destination.path, fmt=destination.format, src_fmt=source.format)))
        else:
            ops.append(ShellOp(self.host, copy.copy_allocation_pipeline(
                source.path, target.address, destination.path, disk.size, dst_port=target.port,
                dst_user=target.user, identity_file=PEER_KEY, known_hosts_file=PEER_KNOWN_HOSTS),
                progress_total=disk.size))
        if disk.image is not None:
            from ...hosts import images

            ops.append(ShellOp(self.target, images.verify_command(destination.path, disk.image.sha256)))
        if self.move:
            ops.extend(remove_step(self.disk, source).operations(state))
        return ops
