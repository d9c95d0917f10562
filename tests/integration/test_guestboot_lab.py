"""Guests that boot for real on the lab (issue 11 items 2-5), through the real Controller and planner:
a VM installing from an ISO (CD-ROM first in the boot order) under TCG, ejected while it runs; clones
of an image (a qcow2 overlay on file storage, a full copy into an LV); `vm clone`; the cloud-init
seed written on the host the VM runs on.

Images are documents and files made here (qemu-img, pycdlib), not through `image import`. Every check
reads the truth on the lab host (virsh dumpxml, qemu-img info, the LV's bytes) as well as the documents.
"""

from __future__ import annotations

import contextlib
import json
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
from .test_host_ops import commands as commands_of
from .test_host_ops import lvs as lvs_of

pytestmark = pytest.mark.lab

LIBVIRT_IMAGES = "/var/lib/libvirt/images"  # private to each lab host (a bind mount in its namespace)


def host_id(c, labhost) -> str:
    return c.db.find_by_name(Host, labhost.name).id


def put_image(c, labhost, tmp_path, name: str, data: bytes, fmt: str, directory: str = LIBVIRT_IMAGES,
              capability: str | None = None, write: bool = True) -> VirtualStorageDevice:
    """An image as `image import` leaves it: the file on the host, its document and its allocation."""
    import hashlib

    path = f"{directory}/{name}.{fmt}"
    if write:
        assert directory == LIBVIRT_IMAGES
        (labhost.dir / "var-lib-libvirt" / "images" / f"{name}.{fmt}").write_bytes(data)  # its inside, seen from here
    virtual = len(data)
    if fmt == "qcow2":
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


# --- clones of an image, the cloud-init seed, vm clone --------------------------------------------

from kerub_tui.controller import Controller  # noqa: E402
from kerub_tui.core.models import (  # noqa: E402
    AuditEntry,
    CloudInit,
    Event,
    HostConfiguration,
    Plan,
    VirtualMachineDynamic,
    VmStatus,
)
from kerub_tui.hosts.cloudinit import read_seed  # noqa: E402
from kerub_tui.planner.commitments import build_state  # noqa: E402
from kerub_tui.planner.steps import RemoveFileImage  # noqa: E402

from .test_host_ops import POWER_BUTTON_GUEST, until  # noqa: E402

KERUB_IMAGES = "/var/lib/kerub-tui/images"
PATTERN = bytes(range(256)) * 16  # 4 KiB after the boot sector: the clone's content is checked by it
SECRET = "hunter2-Sup3r-s3cret"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr7Qq0n0eQm2E4Oq2m3ZbW8u2Kq0x8mRk8o1m8p2hXw admin@jump"


def qcow2_image(tmp_path, size: int = 32 * MIB) -> bytes:
    """A qcow2 image whose first sector boots the power-button guest, followed by the pattern."""
    import subprocess

    raw = tmp_path / "image.raw"
    with open(raw, "wb") as f:
        f.write(POWER_BUTTON_GUEST + PATTERN)
        f.truncate(size)
    out = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out.read_bytes()


@contextlib.asynccontextmanager
async def controller_with(labhosts, tmp_path):
    c = Controller(tmp_path / "data")
    await c.start()
    try:
        for h in labhosts:
            await c.add_host(name=h.name, address=h.address, port=h.port, user="root",
                             identity=str(h.client_key), fingerprint=h.host_key_fingerprint)
            await c.set_host_accel(h.name, "tcg")
        yield c
    finally:
        await c.stop()


@contextlib.contextmanager
def private_images_dir(labhost):
    """A file storage capability of the host's own: a directory of its own bind-mounted on the image
    directory kerub-tui discovers, inside its mount namespace only."""
    private = labhost.dir / "kerub-images"
    private.mkdir(exist_ok=True)
    labhost.run(f"mkdir -p {KERUB_IMAGES} && mount --bind {private} {KERUB_IMAGES}", check=True)
    try:
        yield private
    finally:
        labhost.run(f"umount {KERUB_IMAGES}")
        for f in private.iterdir():
            f.unlink()
        # the directories were made on the root all lab hosts share: left there, every host would
        # discover a file storage capability on it
        labhost.run(f"rmdir {KERUB_IMAGES} /var/lib/kerub-tui/seeds /var/lib/kerub-tui 2>/dev/null; true")


def lv_bytes(labhost, vg: str, lv: str, count: int) -> bytes:
    import base64

    out = labhost.run(f"head -c {count} /dev/{vg}/{lv} | base64 -w0", check=True).stdout
    return base64.b64decode(out)


async def started(c, vm_name: str):
    from kerub_tui.core.models import VirtualMachine

    vm = c.resolve(VirtualMachine, vm_name)
    plan = await proposal(c, lambda p: "start-vm" in step_types(p) and any(
        s.params.get("vm") == vm.id for s in p.steps), f"the start of {vm_name}")
    done = await carry_out(c, plan)
    assert done.status is PlanStatus.done, done.status_reason
    return done


async def test_lv_clone_of_an_image_and_vm_clone_of_a_stopped_vm(clean_lab, tmp_path):
    lab1 = clean_lab.hosts[0]
    data = qcow2_image(tmp_path)
    async with controller_with([lab1], tmp_path) as c:
        image = put_image(c, lab1, tmp_path, "base", data, "qcow2")
        try:
            vm = await c.create_vm("lvweb", memory_min=64 * MIB, from_image="base", disk_sizes=[48 * MIB],
                                   expectations=["availability:up"])
            plan = await started(c, "lvweb")
            assert step_types(plan) == ["clone-image-lv", "start-vm"]
            assert any(cmd.startswith("qemu-img convert -q -n -f qcow2 -O raw") for cmd in commands_of(plan))
            lv = "kerub-lvweb-disk0"
            assert lvs_of(lab1)[lv] >= 48 * MIB  # grown to the VM's size
            assert lv_bytes(lab1, lab1.vg, lv, 512 + len(PATTERN)) == POWER_BUTTON_GUEST + PATTERN
            disk = c.db.find_by_name(VirtualStorageDevice, "lvweb-disk0")
            assert c.db.get(VirtualStorageDeviceDynamic, disk.id).cloned_from == image.id
            # the guest booted the image's boot sector: it answers the power button, so it stops gracefully
            await c.set_vm_availability("lvweb", up=False)
            stop = await proposal(c, lambda p: "stop-vm" in step_types(p), "the stop of lvweb")
            assert (await carry_out(c, stop)).status is PlanStatus.done
            await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) is None or d.status is VmStatus.down,
                        "lvweb down")

            copy = await c.clone_vm("lvweb", "lvcopy")
            await c.set_vm_availability("lvcopy", up=True)
            plan = await started(c, "lvcopy")
            assert "copy-allocation" in step_types(plan)
            assert lv_bytes(lab1, lab1.vg, "kerub-lvcopy-disk0", 512 + len(PATTERN)) == POWER_BUTTON_GUEST + PATTERN
            assert copy.disks[0].disk_id != vm.disks[0].disk_id
            assert lab1.virsh(["domstate", "lvcopy"]).stdout.strip() == "running"
        finally:
            (lab1.dir / "var-lib-libvirt" / "images" / "base.qcow2").unlink(missing_ok=True)


async def test_overlay_clone_with_a_cloud_init_seed(clean_lab, tmp_path):
    lab2 = clean_lab.hosts[1]
    data = qcow2_image(tmp_path)
    with private_images_dir(lab2) as private:
        async with controller_with([lab2], tmp_path) as c:
            host = c.db.find_by_name(Host, lab2.name)
            assert host.capabilities.storage_by_id(f"file:{KERUB_IMAGES}") is not None
            (private / "deb.qcow2").write_bytes(data)
            image = put_image(c, lab2, tmp_path, "deb", data, "qcow2", directory=KERUB_IMAGES, write=False)
            vm = await c.create_vm("ovl", memory_min=64 * MIB, from_image="deb", disk_sizes=[64 * MIB],
                                   expectations=["availability:up"], cloud_init=CloudInit(
                                       ssh_keys=[KEY], user_data=f"#cloud-config\npassword: {SECRET}\n"))
            plan = await started(c, "ovl")
            assert step_types(plan) == ["clone-image-overlay", "write-seed", "start-vm"]
            overlay = f"{KERUB_IMAGES}/kerub-ovl-disk0.qcow2"
            info = json.loads(lab2.run(["qemu-img", "info", "--output=json", "--force-share", overlay],
                                       check=True).stdout)
            assert info["backing-filename"] == f"{KERUB_IMAGES}/deb.qcow2" and info["virtual-size"] == 64 * MIB
            assert info["backing-filename-format"] == "qcow2"

            live = domain(lab2, "ovl")
            seed = next(d for d in live.findall("./devices/disk") if d.get("device") == "cdrom")
            path = seed.find("source").get("file")
            assert path.startswith("/var/lib/kerub-tui/seeds/kerub-seed-") and seed.find("readonly") is not None
            import base64

            volume, files = read_seed(base64.b64decode(lab2.run(f"base64 -w0 {path}", check=True).stdout))
            assert volume == "cidata" and SECRET in files["user-data"]
            assert json.loads(files["meta-data"]) == {"instance-id": vm.id, "local-hostname": "ovl",
                                                     "public-keys": [KEY]}
            assert lab2.run(f"stat -c %a {path}").stdout.strip() == "600"
            # the image's copy cannot be removed while the overlay uses it
            state = build_state(c.db)
            remove = RemoveFileImage(image.id, host.id, f"file:{KERUB_IMAGES}", f"{KERUB_IMAGES}/deb.qcow2")
            assert "is the backing file of ovl-disk0" in remove.blocked(state)
            # no secret in plans, the audit log or events
            for doc in [*c.db.list(Plan), *c.db.list(AuditEntry), *c.db.list(Event)]:
                assert SECRET not in doc.model_dump_json()

            # stopped and deleted: its seed (the user data, a secret) goes from the host through a plan
            await c.set_vm_availability("ovl", up=False)
            stop = await proposal(c, lambda p: "stop-vm" in step_types(p), "the stop of ovl")
            assert (await carry_out(c, stop)).status is PlanStatus.done
            await until(lambda: (d := c.db.get(VirtualMachineDynamic, vm.id)) is None or d.status is VmStatus.down,
                        "ovl down")
            await c.delete_vm("ovl", disks="keep")
            cleanup = await proposal(c, lambda p: "remove-seed" in step_types(p), "the removal of ovl's seed")
            assert (await carry_out(c, cleanup)).status is PlanStatus.done
            assert lab2.run(f"test -e {path}").returncode == 1
            assert c.db.get(HostConfiguration, host.id).seeds == []
