"""Guests that boot for real on the lab (issue 11 items 2-5), through the real Controller and planner:
a VM installing from an ISO (CD-ROM first in the boot order) under TCG, ejected while it runs; clones
of an image (a qcow2 overlay on file storage, a full copy into an LV); `vm clone`; the cloud-init
seed written on the host the VM runs on.

Images are documents and files made here (qemu-img, pycdlib), not through `image import`. Every check
reads the truth on the lab host (virsh dumpxml, qemu-img info, the LV's bytes) as well as the documents.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from kerub_tui.core.models import (
    FileAllocation,
    Host,
    ImageInfo,
    PlanStatus,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.hosts.cloudinit import SeedContent, build_seed

from .test_host_ops import MIB, carry_out, controller_on, proposal, step_types

pytestmark = pytest.mark.lab

LIBVIRT_IMAGES = "/var/lib/libvirt/images"  # private to each lab host (a bind mount in its namespace)


def host_id(c, labhost) -> str:
    return c.db.find_by_name(Host, labhost.name).id


def put_image(c, labhost, tmp_path, name: str, data: bytes, fmt: str, directory: str = LIBVIRT_IMAGES,
              capability: str | None = None) -> VirtualStorageDevice:
    """An image as `image import` leaves it: the file on the host, its document and its allocation."""
    import hashlib

    path = f"{directory}/{name}.{fmt}"
    assert directory == LIBVIRT_IMAGES
    (labhost.dir / "var-lib-libvirt" / "images" / f"{name}.{fmt}").write_bytes(data)  # its inside, seen from here
    virtual = len(data)
    if fmt == "qcow2":
        import json

        virtual = json.loads(labhost.run(["qemu-img", "info", "--output=json", path], check=True).stdout)["virtual-size"]
    image = VirtualStorageDevice(name=name, size=virtual, read_only=True, image=ImageInfo(
        format=fmt, virtual_size=virtual, file_size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    c.db.put(image)
    c.db.put(VirtualStorageDeviceDynamic(id=image.id, allocations=[FileAllocation(
        host_id=host_id(c, labhost), capability_id=capability or f"file:{directory}", path=path,
        format="qcow2" if fmt == "qcow2" else "raw", actual_size=len(data))]))
    return image


def domain(labhost, name: str, inactive: bool = False) -> ET.Element:
    args = ["dumpxml", *(["--inactive"] if inactive else []), name]
    return ET.fromstring(labhost.virsh(args, check=True).stdout)


async def test_iso_install_boots_cdrom_first_under_tcg_and_ejects_live(clean_lab, tmp_path):
    lab1 = clean_lab.hosts[0]
    iso = build_seed(SeedContent(meta_data="{}\n", user_data="not a bootable disc\n", network_config=None))
    async with controller_on(clean_lab, tmp_path, hosts=1) as c:
        h = host_id(c, lab1)
        host = await c.set_host_accel(lab1.name, "tcg")  # Linux guests crawl under nested KVM here
        assert host.accel == "tcg"
        image = put_image(c, lab1, tmp_path, "installer", iso, "iso")
        vm = await c.create_vm("inst", memory_min=64 * MIB, disk_sizes=[64 * MIB], cdrom="installer",
                               expectations=["availability:up"])
        plan = await proposal(c, lambda p: "start-vm" in step_types(p), "the start of inst")
        assert (await carry_out(c, plan)).status is PlanStatus.done
        assert c.db.get(VirtualStorageDeviceDynamic, image.id).allocations[0].host_id == h

        live = domain(lab1, "inst")
        assert live.get("type") == "qemu"  # TCG, as the host says
        assert [b.get("dev") for b in live.findall("./os/boot")] == ["cdrom", "hd"]
        cdrom = next(d for d in live.findall("./devices/disk") if d.get("device") == "cdrom")
        assert cdrom.find("source").get("file") == f"{LIBVIRT_IMAGES}/installer.iso"
        assert cdrom.find("readonly") is not None and cdrom.find("target").get("bus") == "sata"

        ejected = await c.eject_vm("inst")
        assert [link.device for link in ejected.disks] == ["disk"]
        for inactive in (False, True):
            xml = domain(lab1, "inst", inactive=inactive)
            drive = next(d for d in xml.findall("./devices/disk") if d.get("device") == "cdrom")
            # the medium is out, live and in the definition
            source = drive.find("source")
            assert source is None or source.get("file") is None, (inactive, ET.tostring(drive, encoding="unicode"))
        assert lab1.virsh(["domstate", "inst"]).stdout.strip() == "running"
        assert vm.id == ejected.id
        assert "sda      -" in lab1.virsh(["domblklist", "inst"]).stdout
