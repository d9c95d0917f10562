"""The planner gives a VM that links an image a checked copy of it on the host it starts on: the
existing copy step (source kept, byte for byte into the target's image directory, the image's own
sha256 checked there), never a new empty file, never a move."""

from __future__ import annotations

from kerub_tui.core.models import (
    DiskLink,
    FileAllocation,
    HostConfiguration,
    ImageInfo,
    StorageCapability,
    StorageTechnology,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.planner.factories import bring_disk, placement_candidates, relocation_candidates
from kerub_tui.planner.steps import CopyAllocation, ShellOp

from .planner.fleet import GIB, MIB, Fleet, disk_id, host_id, vm_id

IMAGES = "/var/lib/kerub-tui/images"
FILE_CAP = f"file:{IMAGES}"
SHA = "5" * 64


def storage() -> list[StorageCapability]:
    return [StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0", size_bytes=100 * GIB,
                              free_bytes=100 * GIB),
            StorageCapability(id=FILE_CAP, technology=StorageTechnology.file, name=IMAGES, size_bytes=50 * GIB,
                              free_bytes=50 * GIB)]


def fleet(fmt: str = "iso", *, copies: tuple[str, ...] = ("h1",), trusted: bool = True) -> Fleet:
    f = Fleet()
    trust = HostConfiguration(ssh_trust=[host_id("h1"), host_id("h2")]) if trusted else None
    for name in ("h1", "h2"):
        f.host(name, storage=storage(), memory=16 * GIB, config=trust)
    image = VirtualStorageDevice(id=disk_id("debian"), name="debian", size=300 * MIB, read_only=True,
                                 image=ImageInfo(format=fmt, virtual_size=2 * GIB if fmt == "qcow2" else 300 * MIB,
                                                 file_size=300 * MIB, sha256=SHA))
    f.put(image)
    f.put(VirtualStorageDeviceDynamic(id=image.id, allocations=[
        FileAllocation(host_id=host_id(h), capability_id=FILE_CAP, format="qcow2" if fmt == "qcow2" else "raw",
                       path=f"{IMAGES}/kerub-image-debian-diskdebi.{fmt}") for h in copies]))
    return f


def installer(f: Fleet, on: str | None = None) -> None:
    f.vm("installer", memory=1 * GIB, on=on, expect=["availability:up@dealbreaker"])
    vm = f.docs[("vm", vm_id("installer"))]
    f.put(vm.evolve(disks=[DiskLink(disk_id=disk_id("debian"), device="cdrom", read_only=True).model_dump()]))


def test_a_host_without_a_copy_gets_a_checked_one_and_the_source_stays():
    f = fleet()
    state = f.state()
    steps, _ = bring_disk(state, disk_id("debian"), host_id("h2"))
    (copy,) = steps
    assert isinstance(copy, CopyAllocation) and not copy.move
    assert (copy.host, copy.target, copy.target_capability) == (host_id("h1"), host_id("h2"), FILE_CAP)
    after = copy.take(state)
    allocs = {a.host_id: a for a in after.allocations(disk_id("debian"))}
    assert set(allocs) == {host_id("h1"), host_id("h2")}
    target = allocs[host_id("h2")]
    assert target.type == "file" and target.format == "raw"
    assert target.path == f"{IMAGES}/kerub-image-debian-diskdebi.iso"
    ops = copy.operations(state)
    assert not any("qemu-img create" in getattr(op, "command", "") for op in ops)  # the copy makes the file
    check = ops[-1]
    assert isinstance(check, ShellOp) and check.host_id == host_id("h2")
    assert SHA in check.command and "sha256sum -c" in check.command


def test_a_qcow2_image_copy_stays_qcow2():
    f = fleet("qcow2")
    steps, _ = bring_disk(f.state(), disk_id("debian"), host_id("h2"))
    after = steps[-1].take(f.state())
    target = next(a for a in after.allocations(disk_id("debian")) if a.host_id == host_id("h2"))
    assert target.format == "qcow2" and target.path.endswith(".qcow2")


def test_a_vm_placed_on_a_host_without_the_image_brings_a_copy_first():
    f = fleet()
    f.host("h1", storage=storage(), memory=2 * GIB, config=HostConfiguration(ssh_trust=[host_id("h2")]))
    installer(f)
    candidates = placement_candidates(f.state(), vm_id("installer"))
    on_h2 = next(c for c in candidates if c.steps[-1].host == host_id("h2"))
    assert [type(s).__name__ for s in on_h2.steps] == ["CopyAllocation", "StartVm"]
    on_h1 = next(c for c in candidates if c.steps[-1].host == host_id("h1"))
    assert [type(s).__name__ for s in on_h1.steps] == ["StartVm"]  # the copy is there: nothing to bring


def test_an_image_without_any_copy_is_never_made_up_empty():
    f = fleet(copies=())
    assert bring_disk(f.state(), disk_id("debian"), host_id("h2")) is None


def test_a_migrating_vm_gets_a_copy_of_its_image_on_the_target_not_a_storage_migration():
    f = fleet()
    installer(f, on="h1")
    candidates = relocation_candidates(f.state(), vm_id("installer"))
    (to_h2,) = [c for c in candidates]
    names = [type(s).__name__ for s in to_h2.steps]
    assert names == ["CopyAllocation", "MigrateVm"]
    assert to_h2.steps[-1].copy_storage is False


def test_an_image_is_kept_only_in_file_storage():
    f = fleet()
    for name in ("h1", "h2"):
        f.host(name, storage=[storage()[0]])  # LVM only
    f.put(VirtualStorageDeviceDynamic(id=disk_id("debian"), allocations=[FileAllocation(
        host_id=host_id("h1"), capability_id=FILE_CAP, format="raw", path=f"{IMAGES}/kerub-image-debian-1.iso")]))
    assert bring_disk(f.state(), disk_id("debian"), host_id("h2")) is None


