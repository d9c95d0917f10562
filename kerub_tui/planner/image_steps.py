"""Steps that give a VM its operating system: clones of an image, and the cloud-init seed.

- :class:`CloneImageOverlay`: on file storage, the VM's system disk is a qcow2 overlay whose backing
  file is the image's copy on the same host: instant, and only what the guest changes takes room. The
  overlay's allocation names the image in ``backing``; that copy of the image cannot be removed while
  an overlay uses it (see :func:`overlay_users`, checked by every removal step).
- :class:`CloneImageToLv`: on LVM, a full copy of the image's content into a new LV (qemu-img convert
  to raw, into the existing LV).
- :class:`WriteSeed`: the VM's NoCloud seed (a ``cidata`` ISO built from the VM document by
  hosts/cloudinit.py) written on the host that will run it, before the VM starts or migrates there.
  The ISO travels on the command's standard input, never in a command line: the user data it carries
  may hold secrets, and command lines go to the plan and the audit log.

Both clones grow the disk to the VM's size when it is larger than the image's virtual size; a smaller
size is refused before anything is planned (controller) and blocked here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..core.models import (
    Cost,
    FileAllocation,
    LvmAllocation,
    SeedFile,
    StorageTechnology,
    VirtualStorageDevice,
)
from ..core.sizes import format_size
from ..hosts import cloudinit
from .cost import IO_BYTES_PER_SECOND
from .state import OperationalState, Reservation
from .steps import (
    Operation,
    ShellOp,
    Step,
    Touched,
    _add_allocation,
    _config_list,
    _CreateAllocation,
    _host_config,
    _host_down,
    allocation_name,
    step_type,
)

# --- what other steps and the factories ask -----------------------------------------------------------


def overlay_users(state: OperationalState, image_id: str, host_id: str) -> list[str]:
    """The disks whose overlay on ``host_id`` has the image's copy there as its backing file."""
    out = []
    for disk_id, dyn in state.disk_dyn.items():
        for alloc in dyn.allocations:
            if isinstance(alloc, FileAllocation) and alloc.backing == image_id and alloc.host_id == host_id:
                out.append(disk_id)
    return sorted(set(out))


def backing_blocks_removal(state: OperationalState, disk_id: str, host_id: str) -> str | None:
    """Why the copy of ``disk_id`` on ``host_id`` cannot go: overlays there are built on it."""
    users = overlay_users(state, disk_id, host_id)
    if not users:
        return None
    return (f"image {state.disk_name(disk_id)} on {state.host_name(host_id)} is the backing file of "
            f"{', '.join(state.disk_name(d) for d in users)}: remove those first")


def _image_copy(state: OperationalState, image_id: str, host_id: str) -> Any:
    """The image's copy on a host, as a path a backing file or qemu-img can name."""
    return next((a for a in sorted(state.allocations(image_id), key=lambda a: a.capability_id)
                 if a.host_id == host_id), None)


def image_format(image: VirtualStorageDevice, alloc: Any) -> str:
    """The format of a copy as qemu-img must be told it (an ISO is raw; never probed)."""
    if alloc.format == "qcow2":
        return "qcow2"
    return "raw"


def seed_on(state: OperationalState, vm_id: str, host_id: str) -> SeedFile | None:
    return next((s for s in _config_list(state, host_id, "seeds") if s.vm_id == vm_id), None)


def seed_missing(state: OperationalState, vm_id: str, host_id: str) -> str | None:
    """Why the VM cannot start (or land) on the host for want of its current cloud-init seed."""
    vm = state.vms.get(vm_id)
    if vm is None or vm.cloud_init is None:
        return None
    seed = seed_on(state, vm_id, host_id)
    if seed is None or seed.digest != cloudinit.seed_digest(vm):
        return f"{state.host_name(host_id)} has no current cloud-init seed of {vm.name}"
    return None


def seed_steps(state: OperationalState, vm_id: str, host_id: str) -> list[Step]:
    """The seed writing a VM with cloud-init needs before it starts on (or moves to) a host."""
    if seed_missing(state, vm_id, host_id) is None:
        return []
    vm = state.vms[vm_id]
    digest = cloudinit.seed_digest(vm)
    return [WriteSeed(vm_id, host_id, digest, cloudinit.seed_path(vm_id, digest))]


def image_clone_steps(state: OperationalState, disk: VirtualStorageDevice, image_id: str, host_id: str,
                      capability: Any) -> Step | None:
    """The step that creates ``disk`` on a host's capability as a clone of the image, or None when the
    host has no copy of the image or the storage cannot hold a clone (ZFS and gvinum: not yet)."""
    image = state.disks.get(image_id)
    copy = _image_copy(state, image_id, host_id)
    if image is None or copy is None:
        return None
    fmt = image_format(image, copy)
    name = allocation_name(disk)
    if capability.technology is StorageTechnology.file:
        path = f"{capability.name.rstrip('/')}/{name}.qcow2"
        return CloneImageOverlay(disk.id, host_id, capability.id, path, disk.size, image_id, copy.path, fmt)
    if capability.technology is StorageTechnology.lvm:
        return CloneImageToLv(disk.id, host_id, capability.id, capability.name, name, disk.size, image_id,
                              copy.path, fmt)
    return None


# --- clones -------------------------------------------------------------------------------------------


class _CloneImage(_CreateAllocation):
    image: str
    image_path: str
    image_format: str

    def blocked(self, state: OperationalState) -> str | None:
        image = state.disks.get(self.image)
        if image is None or image.image is None:
            return f"no image {self.image}"
        copy = _image_copy(state, self.image, self.host)
        if copy is None or copy.path != self.image_path:
            return f"{state.host_name(self.host)} has no copy of image {image.name} at {self.image_path}"
        if self.size < image.image.virtual_size:
            return (f"disk {state.disk_name(self.disk)} ({format_size(self.size)}) is smaller than image "
                    f"{image.name} ({format_size(image.image.virtual_size)})")
        return super().blocked(state)

    def take(self, state: OperationalState) -> OperationalState:
        return _add_allocation(state, self.disk, self.allocation(), cloned_from=self.image)

    def touched(self) -> Touched:
        return Touched(disks=frozenset({self.disk, self.image}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        # the image's copy is read, not held: many clones of one image may be made at once
        return super().reservations()

    def effect(self, state: OperationalState) -> str:
        return f"disk {state.disk_name(self.disk)} starts as image {state.disk_name(self.image)}"


@step_type
@dataclass(frozen=True)
class CloneImageOverlay(_CloneImage):
    """qemu-img create -f qcow2 -b IMAGE: a copy-on-write overlay of the image's copy on this host."""

    type: ClassVar[str] = "clone-image-overlay"
    disk: str
    host: str
    capability: str
    path: str
    size: int
    image: str
    image_path: str
    image_format: str

    def allocation(self) -> Any:
        return FileAllocation(host_id=self.host, capability_id=self.capability, path=self.path, format="qcow2",
                              actual_size=self.size, backing=self.image)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("path", self.path), ("path", self.image_path))

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0)  # metadata only

    def describe(self, state: OperationalState) -> str:
        return (f"create {self.path} ({format_size(self.size)}) on {state.host_name(self.host)} for disk "
                f"{state.disk_name(self.disk)}: an overlay of image {state.disk_name(self.image)}")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage

        return [ShellOp(self.host, fileimage.qemu_img_create_overlay(
            self.path, self.image_path, self.image_format, self.size))]


@step_type
@dataclass(frozen=True)
class CloneImageToLv(_CloneImage):
    """lvcreate, then qemu-img convert the image's content into the LV (raw)."""

    type: ClassVar[str] = "clone-image-lv"
    adoptable: ClassVar[bool] = False  # an LV left by a cut-off copy may be half full: never taken as done
    disk: str
    host: str
    capability: str
    vg: str
    lv: str
    size: int
    image: str
    image_path: str
    image_format: str

    def allocation(self) -> Any:
        return LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv,
                             actual_size=self.size)

    def names(self) -> tuple[tuple[str, str], ...]:
        return (("vg", self.vg), ("lv", self.lv), ("path", self.image_path))

    def cost(self, state: OperationalState) -> Cost:
        image = state.disks.get(self.image)
        size = image.image.virtual_size if image is not None and image.image is not None else self.size
        return Cost(io_bytes=2 * size, cpu_seconds=size / 500e6, time_seconds=2.0 + 2 * size / IO_BYTES_PER_SECOND)

    def describe(self, state: OperationalState) -> str:
        return (f"create LV {self.vg}/{self.lv} ({format_size(self.size)}) on {state.host_name(self.host)} for "
                f"disk {state.disk_name(self.disk)} and copy image {state.disk_name(self.image)} into it")

    def operations(self, state: OperationalState) -> list[Operation]:
        from ..hosts import fileimage, lvm

        target = LvmAllocation(host_id=self.host, capability_id=self.capability, vg=self.vg, lv=self.lv).path
        return [ShellOp(self.host, lvm.lvcreate(vg=self.vg, lv=self.lv, size=self.size)),
                ShellOp(self.host, fileimage.qemu_img_convert_into(self.image_path, target, self.image_format))]


# --- the cloud-init seed ------------------------------------------------------------------------------


@step_type
@dataclass(frozen=True)
class WriteSeed(Step):
    type: ClassVar[str] = "write-seed"
    vm: str
    host: str
    digest: str
    path: str

    def blocked(self, state: OperationalState) -> str | None:
        vm = state.vms.get(self.vm)
        if vm is None:
            return f"no VM {self.vm}"
        if vm.cloud_init is None:
            return f"{vm.name} has no cloud-init settings"
        if cloudinit.seed_digest(vm) != self.digest:
            return f"the cloud-init settings of {vm.name} changed since this step was planned"
        seed = seed_on(state, self.vm, self.host)
        if seed is not None and seed.digest == self.digest:
            return f"{state.host_name(self.host)} already has this seed of {vm.name}"
        if seed is not None and state.vm_host(self.vm) == self.host:
            return f"{vm.name} runs on {state.host_name(self.host)} with its old seed: restart it to apply the new one"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        seeds = [s for s in _config_list(state, self.host, "seeds") if s.vm_id != self.vm]
        seeds.append(SeedFile(vm_id=self.vm, path=self.path, digest=self.digest))
        return state.apply([_host_config(state, self.host, seeds=seeds)])

    def touched(self) -> Touched:
        return Touched(vms=frozenset({self.vm}), hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("seed", f"{self.host}/{self.vm}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=1.0, network_bytes=1 << 20)

    def describe(self, state: OperationalState) -> str:
        return f"write the cloud-init seed of {state.vm_name(self.vm)} on {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} has the cloud-init seed of {state.vm_name(self.vm)}"

    def operations(self, state: OperationalState) -> list[Operation]:
        vm = state.vms[self.vm]
        command = cloudinit.write_seed_command(self.path, cloudinit.seed_pattern(self.vm))
        return [ShellOp(self.host, command, input=lambda: cloudinit.vm_seed(vm))]


def unused_seeds(state: OperationalState, host_id: str) -> list[tuple[SeedFile, str]]:
    """The seeds a host keeps that no VM will boot with, and why: their VM was deleted, or no longer
    has cloud-init settings and does not run there."""
    out = []
    for seed in _config_list(state, host_id, "seeds"):
        vm = state.vms.get(seed.vm_id)
        if vm is None:
            out.append((seed, "of a VM that was deleted"))
        elif vm.cloud_init is None and state.vm_host(vm.id) != host_id:
            out.append((seed, f"of {vm.name}, which has no cloud-init settings any more"))
    return out


@step_type
@dataclass(frozen=True)
class RemoveSeed(Step):
    """A seed no VM will boot with removed from its host (and from the host's configuration)."""

    type: ClassVar[str] = "remove-seed"
    vm: str
    host: str
    path: str

    def deletes_data(self) -> bool:
        return True

    def _seed(self, state: OperationalState) -> SeedFile | None:
        return next((s for s in _config_list(state, self.host, "seeds") if s.vm_id == self.vm and s.path == self.path),
                    None)

    def blocked(self, state: OperationalState) -> str | None:
        if self._seed(state) is None:
            return f"{state.host_name(self.host)} keeps no seed {self.path}"
        if state.vm_host(self.vm) == self.host:
            return f"{state.vm_name(self.vm)} runs on {state.host_name(self.host)} with this seed"
        vm = state.vms.get(self.vm)
        if vm is not None and vm.cloud_init is not None:
            return f"{vm.name} has cloud-init settings: its seed stays"
        return _host_down(state, self.host)

    def take(self, state: OperationalState) -> OperationalState:
        seeds = [s for s in _config_list(state, self.host, "seeds") if not (s.vm_id == self.vm and s.path == self.path)]
        return state.apply([_host_config(state, self.host, seeds=seeds)])

    def touched(self) -> Touched:
        return Touched(hosts=frozenset({self.host}))

    def reservations(self) -> list[Reservation]:
        return [Reservation("seed", f"{self.host}/{self.vm}")]

    def cost(self, state: OperationalState) -> Cost:
        return Cost(time_seconds=0.5)

    def describe(self, state: OperationalState) -> str:
        return f"remove the unused cloud-init seed {self.path} from {state.host_name(self.host)}"

    def effect(self, state: OperationalState) -> str:
        return f"{state.host_name(self.host)} keeps no seed {self.path}"

    def operations(self, state: OperationalState) -> list[Operation]:
        return [ShellOp(self.host, cloudinit.remove_seed_command(self.path))]


__all__ = ["CloneImageOverlay", "CloneImageToLv", "RemoveSeed", "WriteSeed", "backing_blocks_removal",
           "image_clone_steps", "overlay_users", "seed_missing", "seed_on", "seed_steps", "unused_seeds"]
