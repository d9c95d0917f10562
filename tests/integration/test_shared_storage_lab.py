"""Shared storage on the lab (issue 16 items 3 and 4): VMs on one lab host booting the real Debian image
(tests/lab/media.py) from a disk on another, over iSCSI (an LV shared by that host's tgtd with CHAP, read by
qemu's own initiator with the secret in a libvirt secret of the reading host) and over NFS (a qcow2 file whose directory that host's nfs-ganesha exports, read by qemu's
own NFS client); a live migration that moves no disk data; hostile names on the share path; the host of
the iSCSI guest (with `ha`) powered off, fenced, and the guest restarted on another host with its shared
disk (high availability, issue 16 item 2's done-when); the storage host powered off under it.

The lab of this module is its own (tests power its hosts off): three full hosts, each in its own network
namespace on the lab's bridge with its own tgtd, rpcbind and ganesha. B (lab2) holds the disks: its VG
takes the 2 GiB LV, its file storage (an ext4 of its own) the 2 GiB qcow2. A and C (lab1, lab3) have a
1 GiB VG and no file storage, so no copy of a disk fits there: the planner shares. B runs no guest: a
small VM (`anchor`, made while B was the controller's only host, never migrated) is there, and both
guests expect not to share its host. The disks are made by the planner (create LV, create qcow2), then
the Debian image is written into them on B, as an admin restores a disk, before the VMs exist.

Guests boot under TCG (ARCHITECTURE.md §9) and a boot costs minutes of a busy 2-core machine: three boots in all.
Both guests boot side by side in the module's fixture (`shared`), then the NFS guest is powered off and the
tests work on the iSCSI one, in the module's order; it boots a second time once restarted on another host.
A boot is proven early, as soon as the guest's root file system is writable (a unit put into the image on
B, `install_boot_script`): the guest writes a file at its first boot, counts its boots, syncs, and prints
both on its serial console; the guests get a cloud-init seed all the same (the plans write it).
"""

from __future__ import annotations

import asyncio
import functools
import json
import shlex
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio

from kerub_tui.controller import ActionError, Controller
from kerub_tui.core.models import (
    CloudInit,
    DiskLink,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    secret_value,
)
from kerub_tui.hosts import iscsi
from tests.lab import Lab, media, missing_prerequisites

from .test_guest_os import debian_image  # noqa: F401 (a fixture)
from .test_host_ops import until as host_ops_until

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(2400),
              pytest.mark.asyncio(loop_scope="module")]

G = 1 << 30
M = 1 << 20
BOOT_TIMEOUT = 900.0  # a hang guard (not a timing): two TCG boots side by side on a busy 2-core machine
DEADLINE = 180.0  # the same for the planner and the executor's waits
MARK = "KERUB-SHARED"
# Names the input rules allow, chosen odd in every place they reach: the LV (kerub-NAME), its device path
# and tgtd's backing store, the file on the export and its nfs:// URL, the domain: a leading digit, dots,
# a double hyphen (device-mapper escapes '-' as '--') and a trailing underscore.
ISCSI_DISK, NFS_DISK = "0disk.i--x_", "0disk.n--x_"
ISCSI_VM, NFS_VM = "0vm.i--x_", "0vm.n--x_"
# What the input rules refuse, each with one line and nothing stored.
HOSTILE = ["it's", "a b", "$(reboot)", "`id`", "x;reboot", "x\nreboot", "x|y", "x>y", "-rf", "../x", 'x"y']


# The guest's own words on its serial console at every boot, as soon as its root file system is writable
# (a unit early in systemd's boot; cloud-init's bootcmd would come a minute later under TCG): at its first
# boot it writes a file; each boot counts itself, syncs, and tells the count and the file's words.
BOOT_SCRIPT = """#!/bin/sh
f=/var/lib/kerub-written
[ -s "$f" ] || echo "VM wrote this at its first boot" > "$f"
n=$(( $(cat /var/lib/kerub-boots 2>/dev/null || echo 0) + 1 ))
echo $n > /var/lib/kerub-boots
sync
echo "MARK vm=VM boot=$n file=$(cat "$f")" > /dev/ttyS0
"""
BOOT_UNIT = """[Unit]
Description=kerub lab: tell this boot and the file written at the first
DefaultDependencies=no
After=systemd-remount-fs.service local-fs.target
Before=sysinit.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kerub-boot
"""


def install_boot_script(labhost: Any, device: str, vm: str) -> None:
    """Put the script and its unit (enabled) into the Debian root file system of a raw disk image or device
    on a lab host, with debugfs at the partition's offset: as an admin customises an image before use.
    The guest itself writes the file, at its first boot."""
    work = labhost.dir / "tmp" / "kerub-boot"  # the host's /tmp/kerub-boot
    work.mkdir(exist_ok=True)
    (work / "script").write_text(BOOT_SCRIPT.replace("MARK", MARK).replace("VM", vm))
    (work / "unit").write_text(BOOT_UNIT)
    (work / "commands").write_text("\n".join([
        "rm /usr/local/sbin/kerub-boot", "write /tmp/kerub-boot/script /usr/local/sbin/kerub-boot",
        "sif /usr/local/sbin/kerub-boot mode 0100755",
        "rm /etc/systemd/system/kerub-boot.service", "write /tmp/kerub-boot/unit /etc/systemd/system/kerub-boot.service",
        "mkdir /etc/systemd/system/sysinit.target.wants",
        "rm /etc/systemd/system/sysinit.target.wants/kerub-boot.service",
        "symlink /etc/systemd/system/sysinit.target.wants/kerub-boot.service /etc/systemd/system/kerub-boot.service",
    ]) + "\n")
    labhost.run(["debugfs", "-w", "-f", "/tmp/kerub-boot/commands", f"{device}?offset={media.PARTITION_OFFSET}"],
                check=True)
    listed = labhost.run(["debugfs", "-R", "cat /usr/local/sbin/kerub-boot",
                          f"{device}?offset={media.PARTITION_OFFSET}"], check=True).stdout
    assert f"vm={vm} " in listed, listed


def booted(vm: str, n: int) -> str:
    return rf"{MARK} vm={vm.replace('.', '[.]')} boot={n} file={vm.replace('.', '[.]')} wrote this at its first boot"


until = functools.partial(host_ops_until, timeout=DEADLINE)  # the lab's waits, with this module's deadline


@dataclass
class Shared:
    lab: Lab
    c: Controller
    a: Any  # lab1: runs the guests at first
    b: Any  # lab2: the storage host
    cc: Any  # lab3
    start_plans: list[Plan]
    disk_plans: list[Plan] = field(default_factory=list)
    consoles: dict[str, media.SerialConsole] = field(default_factory=dict)

    def labhost(self, host_id: str | None) -> Any:
        name = self.c.db.require(Host, host_id).name if host_id else None
        return next(h for h in self.lab.hosts if h.name == name)

    def vm(self, name: str) -> VirtualMachine:
        vm = self.c.db.find_by_name(VirtualMachine, name)
        assert vm is not None
        return vm

    def placed(self, name: str) -> Any:
        dyn = self.c.db.get(VirtualMachineDynamic, self.vm(name).id)
        return self.labhost(dyn.host_id if dyn is not None else None)

    def host_id(self, labhost: Any) -> str:
        host = self.c.db.find_by_name(Host, labhost.name)
        assert host is not None
        return host.id

    def plans(self, status: PlanStatus = PlanStatus.proposed) -> list[Plan]:
        return [p for p in self.c.db.list(Plan) if p.status is status]

    async def carry_out(self, plan: Plan) -> Plan:
        await self.c.decide_plan(plan.id, approve=True)
        finished = (PlanStatus.done, PlanStatus.failed, PlanStatus.interrupted)
        done = await until(lambda: (p := self.c.db.get(Plan, plan.id)) is not None and p.status in finished and p,
                           f"plan {[s.type for s in plan.steps]} to finish")
        assert done.status is PlanStatus.done, (done.status_reason, [s.description for s in done.steps])
        return done

    async def proposal(self, wanted: Callable[[Plan], bool], what: str) -> Plan:
        return await until(lambda: next((p for p in self.plans() if wanted(p)), None), f"a proposal {what}",
                           detail=lambda: [(p.status.value, [s.description for s in p.steps])
                                           for p in self.c.db.list(Plan)])


def step_types(plan: Plan) -> list[str]:
    return [s.type for s in plan.steps]


def commands(plan: Plan) -> list[str]:
    return [cmd.command for s in plan.steps for cmd in s.commands]


def lv_uuid(labhost: Any, vg: str, lv: str) -> str:
    out = labhost.run(["lvs", "--reportformat", "json", "-o", "lv_name,lv_uuid", vg], check=True).stdout
    return next(x["lv_uuid"] for x in json.loads(out)["report"][0]["lv"] if x["lv_name"] == lv)


def _missing_tools() -> str | None:
    for tool in ("tgtd", "ganesha.nfsd", "rpcbind", "qemu-img", "mke2fs"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tools/packages-test.txt)"
    return None


def _storage(lab: Lab) -> None:
    """B's file storage: an ext4 of its own on a loop device (a fixed size, so its VG is the roomier place
    for the first disk); A and C: a small tmpfs for their cloud-init seeds and no image directory."""
    a, b, c = lab.hosts
    for h in (a, c):
        h.run("mkdir -p /var/lib/kerub-tui && mount -t tmpfs -o size=32m,mode=0755 kerub-lab-seeds /var/lib/kerub-tui",
              check=True)
    image = b.dir / "files.ext4"
    with open(image, "wb") as f:
        f.truncate(G * 5 // 2)
    subprocess.run(["mke2fs", "-q", "-t", "ext4", "-F", str(image)], check=True, capture_output=True)
    b.run(f"mkdir -p /var/lib/kerub-tui && mount -o loop {shlex.quote(str(image))} /var/lib/kerub-tui && "
          "mkdir -p -m 0755 /var/lib/kerub-tui/images", check=True)


async def _disk_on_b(s: Shared, name: str, kind: str) -> Any:
    """A disk the planner makes on B (its own proposal, approved), once monitoring saw B's room for it."""
    c = s.c
    disk = await c.create_disk(name, size=2 * G, expectations=["storage-availability:up@dealbreaker"])
    plan = await s.proposal(lambda p: any(st.params.get("disk") == disk.id for st in p.steps), f"making {name}")
    s.disk_plans.append(await s.carry_out(plan))
    [alloc] = c.db.require(VirtualStorageDeviceDynamic, disk.id).allocations
    assert (alloc.host_id, alloc.type) == (s.host_id(s.b), kind), alloc
    return alloc


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared(debian_image, tmp_path_factory):
    """The module's lab and controller, the two disks on B with the Debian image in them, and the two VMs
    started by the planner on A/C reading them over iSCSI and NFS; their serial consoles are read from the
    moment they run (their boots go on: the first test waits for them)."""
    reason = missing_prerequisites() or _missing_tools()
    if reason:
        pytest.skip(f"lab: {reason}")
    work = tmp_path_factory.mktemp("shared")
    lab = Lab.up(3, pv_size=[G, 3 * G, G])
    try:
        _storage(lab)
        a, b, cc = lab.hosts
        c = Controller(work / "data")
        await c.start()
        s = Shared(lab, c, a, b, cc, [])
        try:
            async def add(h: Any) -> Host:
                return await c.add_host(name=h.name, address=h.address, port=h.port, user="root",
                                        identity=str(h.client_key), fingerprint=h.host_key_fingerprint)

            await add(b)
            # B's guest, placed while B is the only host, never moved: the guests are kept off B by it
            await c.create_vm("anchor", memory_min=32 * M,
                              expectations=["availability:up", "no-migration@dealbreaker"])
            await s.carry_out(await s.proposal(lambda p: "start-vm" in step_types(p), "starting anchor"))
            assert s.placed("anchor") is b
            await c.pause_vm("anchor")  # it holds its place on B; running, SeaBIOS costs CPU for nothing
            for h in (a, cc):
                await add(h)
                await c.set_host_accel(h.name, "tcg")
            # the LV while B's VG is its roomiest storage, then (once monitoring saw it less) the file
            lv = await _disk_on_b(s, ISCSI_DISK, "lvm")
            await until(lambda: (d := c.db.get(HostDynamic, s.host_id(b))) is not None
                        and d.storage_free.get(lv.capability_id, 3 * G) < 2 * G, "B's VG seen with less room")
            qcow2 = await _disk_on_b(s, NFS_DISK, "file")
            # the Debian image into both, on B, as an admin restores a disk: made raw once with the boot
            # script in it, then written into the LV and into the qcow2 side by side
            raw = "/tmp/kerub-debian.raw"
            b.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(debian_image), raw], check=True, timeout=600)
            install_boot_script(b, raw, NFS_VM)
            writes = [
                ["qemu-img", "convert", "-n", "--target-is-zero", "-f", "raw", "-O", "raw", raw,
                 f"/dev/{lv.vg}/{lv.lv}"],
                ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow2.path],
            ]
            for result in await asyncio.gather(*(asyncio.to_thread(b.run, w, timeout=600) for w in writes)):
                assert result.returncode == 0, result.stderr
            b.run(["rm", "-f", raw], check=True)
            install_boot_script(b, f"/dev/{lv.vg}/{lv.lv}", ISCSI_VM)
            for vm, disk in ((ISCSI_VM, ISCSI_DISK), (NFS_VM, NFS_DISK)):
                await c.create_vm(vm, memory_min=512 * M,
                                  disks=[DiskLink(disk_id=c.db.find_by_name(VirtualStorageDevice, disk).id)],
                                  expectations=["availability:up", "not-same-host:anchor@dealbreaker"],
                                  cloud_init=CloudInit(user_data="#cloud-config\n"))
            ids = {s.vm(ISCSI_VM).id, s.vm(NFS_VM).id}
            while ids - {st.params.get("vm") for p in s.start_plans for st in p.steps if st.type == "start-vm"}:
                plan = await s.proposal(lambda p: any(st.type == "start-vm" and st.params.get("vm") in ids
                                                      for st in p.steps), "starting the guests")
                s.start_plans.append(await s.carry_out(plan))
                for vm in (ISCSI_VM, NFS_VM):
                    dyn = c.db.get(VirtualMachineDynamic, s.vm(vm).id)
                    if vm not in s.consoles and dyn is not None and dyn.status is VmStatus.up:
                        s.consoles[vm] = media.SerialConsole(s.placed(vm), vm)
            yield s
        finally:
            for console in s.consoles.values():
                console.close()
            await c.stop()
    finally:
        lab.down()


async def test_debian_boots_on_one_host_from_its_disk_on_another_over_iscsi_and_over_nfs(shared, tmp_path):
    """Each guest runs on A or C, reads its disk from B (qemu's own iSCSI and NFS clients, B's address in
    the domain), and boots Debian from it far enough to write, sync and print (`install_boot_script`). The
    plan shared the disks and copied nothing."""
    s = shared
    b = s.b
    steps = [st for p in s.start_plans for st in p.steps]
    assert {st.type for st in steps} >= {"iscsi-share", "nfs-export", "start-vm"}, [st.description for st in steps]
    assert not [st for st in steps if "copy" in st.type or "clone" in st.type], [st.description for st in steps]
    for vm in (ISCSI_VM, NFS_VM):
        assert s.placed(vm) in (s.a, s.cc)
    iscsi_host, nfs_host = s.placed(ISCSI_VM), s.placed(NFS_VM)
    # the domains read B's storage over the lab's network, from B's address
    xml = iscsi_host.virsh(["dumpxml", ISCSI_VM], check=True).stdout
    assert "protocol='iscsi'" in xml and f"name='{b.address}'" in xml, xml
    xml = nfs_host.virsh(["dumpxml", NFS_VM], check=True).stdout
    assert "protocol='nfs'" in xml and f"name='{b.address}'" in xml, xml
    # B lets in only the host that reads each: tgtd's ACL, ganesha's export
    [target] = iscsi.parse_tgtadm_show(b.run(iscsi.iscsi_show_command(), check=True).stdout)
    assert target.acl == (iscsi_host.address,)
    config = s.c.db.require(HostConfiguration, s.host_id(b))
    # with CHAP: B's real tgtd asks for the target's own account; the reader's domain names that user and the
    # libvirt secret holding its password there (defined before the start), never the password itself
    [recorded] = config.iscsi_targets
    secret = secret_value(recorded.chap_secret)
    assert secret is not None and recorded.chap_user is not None
    assert target.incoming_users == (recorded.chap_user,)
    usage = iscsi.secret_usage(s.host_id(b), recorded.iqn)
    xml = iscsi_host.virsh(["dumpxml", ISCSI_VM], check=True).stdout
    assert f"username='{recorded.chap_user}'" in xml and f"usage='{usage}'" in xml and secret not in xml, xml
    assert usage in iscsi_host.virsh(["secret-list"], check=True).stdout
    # a reader without the secret is refused, from the very host B's ACL lets in (only CHAP stands in the way);
    # with it (in the URL: a test's shortcut, the product gives it to libvirt) the same reader is let in
    lun = f"{b.address}/{recorded.iqn}/1"
    refused = iscsi_host.run(["qemu-img", "info", f"iscsi://{lun}"], timeout=120)
    assert refused.returncode != 0, refused.stdout
    let_in = iscsi_host.run(["qemu-img", "info", f"iscsi://{recorded.chap_user}%{secret}@{lun}"], timeout=120)
    assert let_in.returncode == 0, let_in.stderr
    # the secret is in nothing an admin or a script sees: the plans (their commands), the audit log
    assert not [p.id for p in s.c.db.list(Plan) if secret in p.model_dump_json()]
    assert not [a.id for a in s.c.audit_log() if secret in a.model_dump_json()]
    [export] = config.exports
    assert (export.path, export.clients) == ("/var/lib/kerub-tui/images", nfs_host.address)
    # both boots, side by side: GRUB loaded Debian's kernel from the share, and the booted guest wrote its
    # file on the disk over the share, synced and read it back. Then the NFS guest is powered off (down:
    # nothing restarts it; a TCG guest going on costs CPU, and the tests after it need the iSCSI one alone)
    errors: list[BaseException] = []

    def watch(vm: str) -> None:
        try:
            s.consoles[vm].wait_for(booted(vm, 1), BOOT_TIMEOUT)
        except BaseException as error:
            errors.append(error)

    async def proven(vm: str) -> None:
        await asyncio.to_thread(watch, vm)
        if vm == NFS_VM and not errors:
            await s.c.poweroff_vm(NFS_VM, force=True)

    await asyncio.gather(*(proven(vm) for vm in (ISCSI_VM, NFS_VM)))
    for vm in (ISCSI_VM, NFS_VM):
        (tmp_path / f"{vm}.console.txt").write_text(s.consoles[vm].text)
    if errors:
        raise errors[0]
    await until(lambda: s.c.vm_state(s.vm(NFS_VM).id).status == "down", "the NFS guest down")


async def test_the_names_reach_every_share_command_as_one_word_and_hostile_ones_are_refused(shared):
    """The odd names the rules allow went through lvcreate, qemu-img, tgtadm, ganesha and libvirt (the
    guests boot from them): each command names the disk's path as one shell word. Names the rules refuse
    never get that far: one line each, nothing stored."""
    s = shared
    lv, qcow2 = (s.c.db.require(VirtualStorageDeviceDynamic,
                                s.c.db.find_by_name(VirtualStorageDevice, name).id).allocations[0]
                 for name in (ISCSI_DISK, NFS_DISK))
    lv_path = f"/dev/{lv.vg}/kerub-{ISCSI_DISK}"
    assert (lv.lv, qcow2.path) == (f"kerub-{ISCSI_DISK}", f"/var/lib/kerub-tui/images/kerub-{NFS_DISK}.qcow2")

    def words(step_type: str, plans: list[Plan]) -> list[str]:
        found = [cmd.command for p in plans for st in p.steps if st.type == step_type for cmd in st.commands]
        assert found, (step_type, [step_types(p) for p in plans])
        return [w for command in found for w in shlex.split(command)]

    assert f"kerub-{ISCSI_DISK}" in words("create-lv", s.disk_plans)
    assert qcow2.path in words("create-file-image", s.disk_plans)
    assert lv_path in words("iscsi-share", s.start_plans)
    [share] = [st for p in s.start_plans for st in p.steps if st.type == "iscsi-share"]
    assert share.params["lun_path"] == lv_path
    assert "/var/lib/kerub-tui/images" in " ".join(words("nfs-export", s.start_plans))
    disks_before, vms_before = len(s.c.db.list(VirtualStorageDevice)), len(s.c.db.list(VirtualMachine))
    for name in HOSTILE:
        with pytest.raises(ActionError) as refused:
            await s.c.create_disk(name, size=M)
        assert "\n" not in str(refused.value) and "disk name" in str(refused.value), refused.value
        with pytest.raises(ActionError) as refused:
            await s.c.create_vm(name, memory_min=32 * M, disk_sizes=[M])
        assert "\n" not in str(refused.value), refused.value
    assert (len(s.c.db.list(VirtualStorageDevice)), len(s.c.db.list(VirtualMachine))) == (disks_before, vms_before)


async def test_a_live_migration_of_a_vm_reading_its_disk_over_iscsi_moves_no_disk_data(shared):
    """The host running the iSCSI guest goes into maintenance: the planner lets the other host log in to
    B's target, live-migrates the guest there and lets the source out, copying nothing; the LV on B is the
    same LV, no LV or file is made on the target, and the guest goes on (no second boot)."""
    s = shared
    source = s.placed(ISCSI_VM)
    target = s.cc if source is s.a else s.a
    disk = s.c.db.find_by_name(VirtualStorageDevice, ISCSI_DISK)
    [lv] = s.c.db.require(VirtualStorageDeviceDynamic, disk.id).allocations
    before = lv_uuid(s.b, lv.vg, lv.lv)
    await s.c.evacuate_host(source.name)
    move = await s.proposal(lambda p: "migrate-vm" in step_types(p), "migrating the iSCSI guest")
    assert "iscsi-allow" in step_types(move), [st.description for st in move.steps]
    # B lets the target in first, the seed is written there, the guest moves, then the source is let out
    # (and the export the powered-off NFS guest read is tidied away with it): no step moves disk data
    assert set(step_types(move)) <= {"iscsi-allow", "write-seed", "migrate-vm", "iscsi-disallow",
                                     "nfs-unexport", "iscsi-secret-remove"}, [st.description for st in move.steps]
    # the target host gets the CHAP secret in libvirt first: the domain arrives naming it
    [recorded] = s.c.db.require(HostConfiguration, s.host_id(s.b)).iscsi_targets
    usage = iscsi.secret_usage(s.host_id(s.b), recorded.iqn)
    define, migrate = [cmd.command for st in move.steps if st.type == "migrate-vm" for cmd in st.commands]
    assert define == f"libvirt: virsh secret-define {usage}.xml && virsh secret-set-value (from stdin)", define
    assert migrate.startswith("libvirt: virsh migrate --live") and "copy-storage" not in migrate, migrate
    done = await s.carry_out(move)
    assert s.placed(ISCSI_VM) is target, done.steps
    assert target.virsh(["domstate", ISCSI_VM], check=True).stdout.strip() == "running"
    assert ISCSI_VM not in source.virsh(["list", "--name"], check=True).stdout.split()
    # no disk data moved: the same LV on B, still the disk's only allocation; nothing made on the target
    assert lv_uuid(s.b, lv.vg, lv.lv) == before
    assert s.c.db.require(VirtualStorageDeviceDynamic, disk.id).allocations == [lv]
    assert json.loads(target.run("lvs --reportformat json", check=True).stdout)["report"][0]["lv"] == []
    [shown] = iscsi.parse_tgtadm_show(s.b.run(iscsi.iscsi_show_command(), check=True).stdout)
    assert shown.acl == (target.address,) and shown.incoming_users == (recorded.chap_user,)
    xml = target.virsh(["dumpxml", ISCSI_VM], check=True).stdout
    assert "protocol='iscsi'" in xml and f"usage='{usage}'" in xml, xml
    assert usage in target.virsh(["secret-list"], check=True).stdout
    if "iscsi-secret-remove" in step_types(move):  # the source reads nothing now: its secret was tidied away
        assert usage not in source.virsh(["secret-list"], check=True).stdout
    # the guest was not booted again
    assert f"{MARK} vm={ISCSI_VM} boot=2" not in s.consoles[ISCSI_VM].text
    await s.c.update_host(source.name, recycling=False)  # maintenance over: the host takes guests again


def events_of(s: Shared, vm: str) -> list[Any]:
    return s.c.event_log(subject=s.vm(vm).id)


async def host_lost(s: Shared, labhost: Any) -> None:
    await until(lambda: (d := s.c.db.get(HostDynamic, s.host_id(labhost))) is not None
                and d.status in (HostStatus.down, HostStatus.unreachable), f"{labhost.name} seen down")


async def test_ha_the_host_of_an_ha_vm_powered_off_is_fenced_and_the_vm_restarts_elsewhere_with_its_file(shared):
    """The done-when of issue 16: the host running the iSCSI guest (with `ha`) loses its power. Nothing
    restarts the guest until the host is fenced (no IPMI on the lab: the admin confirms it is off); then the
    restart plan starts it on the other host, which B's target lets in, reading the same LV: the guest boots
    a second time and finds the file it wrote at its first boot. The events tell the story."""
    s = shared
    vm = s.vm(ISCSI_VM)
    await s.c.set_vm_ha(ISCSI_VM, True)
    dead = s.placed(ISCSI_VM)
    other = s.cc if dead is s.a else s.a
    dead.power_off()
    await host_lost(s, dead)
    waits = await until(lambda: [e for e in events_of(s, ISCSI_VM) if e.type == "restart-waits-fence"],
                        "the restart waiting for the fence")
    assert dead.name in waits[0].message
    # not before the fence: no plan starts it anywhere
    assert not [p for p in s.c.db.list(Plan) if p.status in (PlanStatus.proposed, PlanStatus.approved)
                and any(st.type == "start-vm" and st.params.get("vm") == vm.id for st in p.steps)]
    assert s.c.vm_state(vm.id).status == "lost"
    await s.c.fence_host(dead.name, confirm_off=True)
    restart = await s.proposal(lambda p: any(st.type == "start-vm" and st.params.get("vm") == vm.id
                                             for st in p.steps), "restarting the ha guest")
    assert "restart" in restart.plan_kind, restart.plan_kind
    assert not [st for st in restart.steps if "copy" in st.type or "clone" in st.type], [
        st.description for st in restart.steps]
    await s.carry_out(restart)
    assert s.placed(ISCSI_VM) is other
    console = s.consoles["restarted"] = media.SerialConsole(other, ISCSI_VM)
    [recorded] = s.c.db.require(HostConfiguration, s.host_id(s.b)).iscsi_targets
    usage = iscsi.secret_usage(s.host_id(s.b), recorded.iqn)
    xml = other.virsh(["dumpxml", ISCSI_VM], check=True).stdout
    assert "protocol='iscsi'" in xml and f"usage='{usage}'" in xml, xml  # the restart defined the secret there
    assert usage in other.virsh(["secret-list"], check=True).stdout
    [target] = iscsi.parse_tgtadm_show(s.b.run(iscsi.iscsi_show_command(), check=True).stdout)
    assert other.address in target.acl and target.incoming_users == (recorded.chap_user,)
    # the second boot, from the same LV on B: the file the guest wrote at its first boot is there
    await asyncio.to_thread(console.wait_for, booted(ISCSI_VM, 2), BOOT_TIMEOUT)
    story = [e.type for e in events_of(s, ISCSI_VM)]
    told = [t for t in story if t in ("restart-waits-fence", "restart-planned", "vm-restarted")]
    assert told == ["restart-waits-fence", "restart-planned", "vm-restarted"], story
    fenced = [e for e in s.c.event_log(host_id=s.host_id(dead)) if e.type == "host-fenced"]
    assert fenced and "confirmed off" in fenced[0].message and ISCSI_VM in fenced[0].message, fenced
    assert s.c.vm_state(s.vm(NFS_VM).id).status == "down"  # powered off by the admin: not restarted


async def test_the_storage_host_powered_off_leaves_its_vm_elsewhere_with_lost_storage_and_nothing_restarts(shared):
    """B, the host that serves the disks, loses its power under the iSCSI guest, which runs on a host that
    is up: the guest is reported with lost storage (its status and an event naming the disk and B), and no
    plan starts or moves it anywhere (it runs; its disk has no other live storage)."""
    s = shared
    vm = s.vm(ISCSI_VM)
    runs_on = s.placed(ISCSI_VM)
    assert s.c.vm_state(vm.id).status == "up"
    s.b.power_off()
    await host_lost(s, s.b)
    lost = await until(lambda: [e for e in events_of(s, ISCSI_VM) if e.type == "vm-storage-lost"],
                       "the guest reported with lost storage")
    assert s.b.name in lost[0].message and ISCSI_DISK in lost[0].message, lost[0].message
    state = s.c.vm_state(vm.id)
    assert (state.status, state.host_id) == ("storage-lost", s.host_id(runs_on)), state
    assert ISCSI_DISK in state.reason and s.b.name in state.reason
    await s.c.replanner.wait_idle()
    assert not [p for p in s.c.db.list(Plan) if p.status in (PlanStatus.proposed, PlanStatus.approved)
                and any(st.params.get("vm") == vm.id for st in p.steps)], [
        (p.status.value, [st.description for st in p.steps]) for p in s.c.db.list(Plan)]
