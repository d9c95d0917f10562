"""Every step: when it can be taken, what its pure ``take`` predicts, its inverse, cost and reservations,
the round trip through a stored PlannedStep, and the exact commands (from the hosts builders)."""

from __future__ import annotations

import dataclasses
import shlex

import pytest

from kerub_tui.core.models import (
    FileAllocation,
    HostConfiguration,
    HostStatus,
    IscsiTarget,
    KsmState,
    LvmAllocation,
    Mount,
    NfsExport,
    PlannedStep,
    StorageCapability,
    StorageTechnology,
    ThinPool,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.reconcile import (
    RemoveOrphanExport,
    RemoveOrphanFile,
    RemoveOrphanIscsiAcl,
    RemoveOrphanIscsiSecret,
    RemoveOrphanIscsiTarget,
    RemoveOrphanLv,
)
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps import (
    STEP_TYPES,
    AllowIscsiInitiator,
    ConvertLvToMirror,
    CopyAllocation,
    CreateFileImage,
    CreateGvinumVolume,
    CreateLv,
    CreateMirrorLv,
    CreateThinLv,
    CreateThinPool,
    CreateZfsVolume,
    DisallowIscsiInitiator,
    ExportNfs,
    ExtendFileImage,
    ExtendLv,
    ExtendThinPool,
    FenceHost,
    LibvirtOp,
    MigrateVm,
    MountNfs,
    MovePvExtents,
    PauseVm,
    PowerDownHost,
    RekeyIscsi,
    RemoveFileImage,
    RemoveGvinumVolume,
    RemoveIscsiSecret,
    RemoveLv,
    RemovePvFromVg,
    RemoveZfsVolume,
    ResumeVm,
    SetKsm,
    ShareIscsi,
    ShellOp,
    StartVm,
    Step,
    StopVm,
    TrustHost,
    UnexportNfs,
    UnknownStep,
    UnmountNfs,
    UnshareIscsi,
    WakeHost,
    create_step,
    step_from_planned,
)

from .fleet import GIB, Fleet

STORAGE = [
    StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0", size_bytes=100 * GIB,
                      free_bytes=100 * GIB, device="/dev/sda"),
    StorageCapability(id="file:/var/lib/kerub", technology=StorageTechnology.file, name="/var/lib/kerub",
                      size_bytes=50 * GIB, free_bytes=50 * GIB, device="/dev/sdb"),
    StorageCapability(id="zfs:tank", technology=StorageTechnology.zfs, name="tank", size_bytes=50 * GIB,
                      free_bytes=50 * GIB),
    StorageCapability(id="gvinum:gv0", technology=StorageTechnology.gvinum, name="gv0", size_bytes=50 * GIB,
                      free_bytes=50 * GIB),
]


ALL_TOOLS = {"lvm": True, "qemu-img": True, "zfs": True, "gvinum": True}


def fleet() -> Fleet:
    f = Fleet()
    f.host("h1", storage=STORAGE, tools=ALL_TOOLS, config=HostConfiguration(thin_pools=[ThinPool(vg="vg0", name="pool", size_bytes=20 * GIB)]))
    f.host("h2", storage=STORAGE, tools=ALL_TOOLS, config=HostConfiguration(ssh_trust=["host-h1"]), dedicated=True,
           wol_mac="52:54:00:12:34:56", ksm=KsmState(available=True, run=False), ipmi="10.0.0.7")
    f.vm("web", on="h1", cpus=2, memory=2 * GIB)
    f.vm("idle", memory=1 * GIB)
    f.disk("d", size=4 * GIB, on=["h1"])
    f.disk("new", size=2 * GIB)
    return f


def taken(state: OperationalState, step: Step) -> OperationalState:
    reason = step.blocked(state)
    assert reason is None, reason
    after = step.take(state)
    assert after is not state
    return after


def test_registry_covers_the_issue_list() -> None:
    assert sorted(STEP_TYPES) == sorted([
        "start-vm", "stop-vm", "pause-vm", "resume-vm", "migrate-vm",
        "create-lv", "remove-lv", "extend-lv", "create-thin-pool", "extend-thin-pool", "create-thin-lv",
        "create-mirror-lv", "create-file-image", "remove-file-image", "extend-file-image",
        "create-zfs-volume", "remove-zfs-volume", "create-gvinum-volume", "remove-gvinum-volume",
        "copy-allocation", "nfs-export", "nfs-unexport", "nfs-mount", "nfs-unmount", "iscsi-share",
        "iscsi-unshare", "ksm", "power-down", "wake-host", "ssh-trust",
        "remove-orphan-lv", "remove-orphan-file",  # reconcile's cleanup after a crash
        "remove-orphan-iscsi", "remove-orphan-export", "remove-orphan-iscsi-acl",  # issue 16: shares left by a crash
        "clone-image-overlay", "clone-image-lv", "write-seed", "remove-seed",  # planner/image_steps.py
        "convert-lv-to-mirror", "move-pv-extents", "remove-pv-from-vg",  # issue 18 items 6 and 7
        "iscsi-allow", "iscsi-disallow",  # issue 16: a target's ACL
        "fence-host",  # issue 16 item 2: high availability
        "iscsi-rekey", "iscsi-secret-remove",  # issue 16: CHAP (a target's new secret, a reader's libvirt secret)
        "remove-orphan-iscsi-secret",  # issue 16: a reader's libvirt secret left by a crash
    ])


def test_start_stop_pause_resume() -> None:
    s = fleet().state()
    start = StartVm("vm-idle", "host-h2")
    s1 = taken(s, start)
    assert s1.vm_running("vm-idle") and s1.vms_on("host-h2") == ["vm-idle"]
    assert start.blocked(s1) == "idle is already up on h2"
    pause = PauseVm("vm-idle", "host-h2")
    s2 = taken(s1, pause)
    assert s2.vm_placement("vm-idle")[1] is VmStatus.paused and not s2.vm_running("vm-idle")
    s3 = taken(s2, ResumeVm("vm-idle", "host-h2"))
    assert s3.vm_running("vm-idle")
    stop = StopVm("vm-idle", "host-h2")
    s4 = taken(s3, stop)
    assert s4.vm_host("vm-idle") is None and s4.mem_used["host-h2"] == 0
    assert stop.blocked(s4) == "idle is not on h2"
    assert start.inverse() == stop and stop.inverse() == start and pause.inverse() == ResumeVm("vm-idle", "host-h2")
    assert [r.kind for r in start.reservations()] == ["vm"]
    assert stop.cost(s3).risk > 0 and start.cost(s).time_seconds > 0


def test_start_is_blocked_by_capacity_disks_dependencies_and_locks() -> None:
    f = fleet()
    f.vm("big", memory=64 * GIB)
    f.vm("needs", disks=["d"])
    f.vm("child", expect=["vm-dependency:idle@dealbreaker"])
    s = f.state()
    assert StartVm("vm-big", "host-h1").blocked(s) == "h1: 13.0G free memory, needs 64.0G"
    assert StartVm("vm-needs", "host-h2").blocked(s) == "h2 has no copy of disk d"
    assert StartVm("vm-needs", "host-h1").blocked(s) is None
    assert StartVm("vm-child", "host-h1").blocked(s) == "child depends on idle, not running yet"
    locked = s.with_context(locks=frozenset({"vm:vm-idle"}))
    assert StartVm("vm-idle", "host-h1").blocked(locked) == "idle is held by another plan"
    f.host("h2", status=HostStatus.down)
    assert StartVm("vm-idle", "host-h2").blocked(f.state()) == "h2: is down"


def test_stop_waits_for_dependants() -> None:
    f = fleet()
    f.vm("db", on="h2")
    f.vm("app", on="h1", expect=["vm-dependency:db@dealbreaker"])
    s = f.state()
    assert StopVm("vm-db", "host-h2").blocked(s) == "app depend on db: stop them first"
    s2 = taken(s, StopVm("vm-app", "host-h1"))
    assert StopVm("vm-db", "host-h2").blocked(s2) is None


def test_migrate() -> None:
    s = fleet().state()
    assert MigrateVm("vm-web", "host-h1", "host-h2").blocked(s) is None  # web has no disk
    s1 = taken(s, MigrateVm("vm-web", "host-h1", "host-h2"))
    assert s1.vm_host("vm-web") == "host-h2" and s1.vcpus_used["host-h1"] == 0
    assert MigrateVm("vm-web", "host-h1", "host-h2").inverse() == MigrateVm("vm-web", "host-h2", "host-h1")
    cost = MigrateVm("vm-web", "host-h1", "host-h2").cost(s)
    assert cost.network_bytes == 2 * GIB


def test_migrate_with_storage_needs_the_target_copy_first() -> None:
    f = fleet()
    f.vm("db", on="h1", disks=["d"])
    s = f.state()
    move = MigrateVm("vm-db", "host-h1", "host-h2", copy_storage=True)
    assert move.blocked(s) == "h2 has no copy of disk d"
    s1 = taken(s, CreateLv("disk-d", "host-h2", "lvm:vg0", "vg0", "kerub-d", 4 * GIB))
    s2 = taken(s1, move)
    s3 = taken(s2, RemoveLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d"))
    assert [a.host_id for a in s3.allocations("disk-d")] == ["host-h2"]
    assert move.cost(s).network_bytes == 1 * GIB + 4 * GIB


@pytest.mark.parametrize("cap_id", ["lvm:vg0", "file:/var/lib/kerub", "zfs:tank", "gvinum:gv0"])
def test_create_and_remove_every_technology(cap_id: str) -> None:
    s = fleet().state()
    disk = s.disks["disk-new"]
    cap = s.capability("host-h2", cap_id)
    create = create_step(s, disk, "host-h2", cap)
    s1 = taken(s, create)
    [alloc] = s1.allocations("disk-new")
    assert (alloc.host_id, alloc.capability_id, alloc.actual_size) == ("host-h2", cap_id, 2 * GIB)
    assert s1.free_storage("host-h2", cap_id) == s.free_storage("host-h2", cap_id) - 2 * GIB
    assert create.blocked(s1) == f"h2 {cap_id}: already holds this disk"
    remove = create.inverse()
    s2 = taken(s1, remove)
    assert s2.allocations("disk-new") == [] and s2.free_storage("host-h2", cap_id) == s.free_storage("host-h2", cap_id)
    assert [r.kind for r in create.reservations()] == ["disk", "storage"]


def test_create_names_and_types() -> None:
    s = fleet().state()
    disk = s.disks["disk-new"]
    assert create_step(s, disk, "host-h1", s.capability("host-h1", "file:/var/lib/kerub")) == CreateFileImage(
        "disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.qcow2", 2 * GIB, "qcow2")
    assert isinstance(create_step(s, disk, "host-h1", s.capability("host-h1", "zfs:tank")), CreateZfsVolume)
    assert isinstance(create_step(s, disk, "host-h1", s.capability("host-h1", "gvinum:gv0")), CreateGvinumVolume)
    assert isinstance(create_step(s, disk, "host-h1", s.capability("host-h1", "lvm:vg0"), thin_pool="pool"), CreateThinLv)
    mirror = create_step(s, disk, "host-h1", s.capability("host-h1", "lvm:vg0"), mirrors=1)
    assert isinstance(mirror, CreateMirrorLv) and mirror.reservations()[1].amount == 4 * GIB


def test_thin_lv_comes_out_of_its_pool() -> None:
    s = fleet().state()
    thin = CreateThinLv("disk-new", "host-h1", "lvm:vg0", "vg0", "pool", "kerub-new", 2 * GIB)
    s1 = taken(s, thin)
    assert s1.thin_allotted("host-h1", "vg0", "pool") == 2 * GIB
    assert s1.thin_pool_used("host-h1", "vg0", "pool") == 0  # empty until its VM writes
    assert s1.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0")
    assert CreateThinLv("disk-new", "host-h2", "lvm:vg0", "vg0", "pool", "kerub-new", GIB).blocked(s) == \
        "h2 has no thin pool vg0/pool"


def test_mirror_counts_copies() -> None:
    mirror = CreateMirrorLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", 2 * GIB, 1)
    # raid1 puts each copy on a PV of its own: a VG on one disk holds no mirror (issue 18 item 6)
    assert mirror.blocked(fleet().state()) == "h1 lvm:vg0: 1 PV; 2 copies need 2 PVs"
    f = fleet()
    f.host("h1", pvs=[(60 * GIB, 0), (40 * GIB, 0)], tools=ALL_TOOLS)
    s = f.state()
    s1 = taken(s, mirror)
    assert s1.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0") - 4 * GIB
    assert s1.allocations("disk-new")[0].mirrors == 1
    three = CreateMirrorLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", 2 * GIB, 2)
    assert three.blocked(s) == "h1 lvm:vg0: 2 PVs; 3 copies need 3 PVs"
    f.host("h1", pvs=[(60 * GIB, 0), (40 * GIB, 39 * GIB), (40 * GIB, 0)], tools=ALL_TOOLS)
    assert three.blocked(f.state()) == "h1 lvm:vg0: fewer than 3 PVs with 2.0G free"
    f.host("h1", pvs=[(60 * GIB, 0), (40 * GIB, 0), (40 * GIB, 0)], tools=ALL_TOOLS, failing=["/dev/sdc"])
    assert three.blocked(f.state()) == "h1 lvm:vg0: PV /dev/sdc of lvm:vg0 is failing"


def test_an_lv_becomes_a_mirror_in_its_vg() -> None:
    f = fleet()
    f.host("h1", pvs=[(60 * GIB, 4 * GIB), (40 * GIB, 0), (40 * GIB, 0)], tools=ALL_TOOLS)
    s = f.state()
    convert = ConvertLvToMirror("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 1)
    s1 = taken(s, convert)
    assert s1.allocations("disk-d")[0].mirrors == 1
    assert s1.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0") - 4 * GIB  # one more copy
    assert convert.cost(s).io_bytes == 4 * GIB  # the sync of the new copy
    assert convert.blocked(s1) == "LV vg0/kerub-d already has 2 copies"
    assert convert.describe(s) == "mirror LV vg0/kerub-d of disk d to 2 copies on h1"
    assert [c.command for c in convert.commands(s)] == ["lvconvert --yes --type raid1 --mirrors 1 vg0/kerub-d"]
    assert ConvertLvToMirror("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 3).blocked(s) == \
        "h1 lvm:vg0: 3 PVs; 4 copies need 4 PVs"
    assert ConvertLvToMirror("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", 1).blocked(s) == \
        "no LV vg0/kerub-new of disk new on h1"


def test_a_failing_pv_is_emptied_then_taken_out_of_its_vg() -> None:
    f = fleet()
    f.host("h1", pvs=[(60 * GIB, 10 * GIB), (40 * GIB, 30 * GIB), (40 * GIB, 0)], tools=ALL_TOOLS,
           failing=["/dev/sdb"])
    s = f.state()
    free = s.free_storage("host-h1", "lvm:vg0")
    reduce = RemovePvFromVg("host-h1", "lvm:vg0", "vg0", "/dev/sdb")
    assert reduce.blocked(s) == "h1 lvm:vg0: PV /dev/sdb still holds 30.0G"
    move = MovePvExtents("host-h1", "lvm:vg0", "vg0", "/dev/sdb")
    assert move.describe(s) == "move every extent (30.0G) off PV /dev/sdb of vg0 on h1"
    assert [c.command for c in move.commands(s)] == ["pvmove --interval 30 /dev/sdb /dev/sda /dev/sdc"]
    assert move.cost(s).io_bytes == 60 * GIB
    s1 = taken(s, move)
    assert {p.name: p.used_bytes for p in s1.pvs("host-h1", "lvm:vg0")} == {
        "/dev/sda": 40 * GIB, "/dev/sdb": 0, "/dev/sdc": 0}  # the roomiest PV first
    assert s1.free_storage("host-h1", "lvm:vg0") == free
    s2 = taken(s1, reduce)
    assert [p.name for p in s2.pvs("host-h1", "lvm:vg0")] == ["/dev/sda", "/dev/sdc"]
    assert s2.free_storage("host-h1", "lvm:vg0") == free - 40 * GIB
    assert s2.failing_device("host-h1", "lvm:vg0") is None
    assert [c.command for c in reduce.commands(s1)] == ["vgreduce vg0 /dev/sdb"]
    assert move.blocked(s1) == "h1 lvm:vg0: PV /dev/sdb holds nothing to move"
    # no room on the healthy PVs: no pvmove
    f.host("h1", pvs=[(60 * GIB, 50 * GIB), (40 * GIB, 30 * GIB)], tools=ALL_TOOLS, failing=["/dev/sdb"])
    assert move.blocked(f.state()) == "h1 lvm:vg0: the other healthy PVs have 10.0G free, PV /dev/sdb holds 30.0G"


def test_remove_is_blocked_while_in_use_or_shared() -> None:
    f = fleet()
    f.vm("db", on="h1", disks=["d"])
    s = f.state()
    remove = RemoveLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d")
    assert remove.blocked(s) == "disk d is in use by db on h1"
    f.vm("db", disks=["d"])
    f.host("h1", storage=STORAGE, config=HostConfiguration(
        iscsi_targets=[IscsiTarget(iqn="iqn.2025-01.kerub:d", tid=1, lun_path="/dev/vg0/kerub-d", disk_id="disk-d")]))
    assert remove.blocked(f.state()) == "disk d is shared from h1: unshare it first"


def test_extend_lv_and_thin_pool_and_file() -> None:
    f = fleet()
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d", actual_size=2 * GIB)]))
    s = f.state()
    s1 = taken(s, ExtendLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 4 * GIB))
    assert s1.allocations("disk-d")[0].actual_size == 4 * GIB
    assert ExtendLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 4 * GIB).blocked(s1) == \
        "LV vg0/kerub-d is already 4.0G"
    pool = ExtendThinPool("host-h1", "lvm:vg0", "vg0", "pool", 30 * GIB)
    s2 = taken(s, pool)
    assert s2.thin_pools("host-h1")[0].size_bytes == 30 * GIB
    assert s2.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0") - 10 * GIB
    new_pool = CreateThinPool("host-h2", "lvm:vg0", "vg0", "pool2", 10 * GIB)
    s3 = taken(s, new_pool)
    assert [p.name for p in s3.thin_pools("host-h2")] == ["pool2"]
    assert new_pool.blocked(s3) == "h2 already has thin pool vg0/pool2"
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        FileAllocation(host_id="host-h1", capability_id="file:/var/lib/kerub", path="/var/lib/kerub/kerub-d.qcow2",
                       format="qcow2", actual_size=GIB)]))
    s4 = taken(f.state(), ExtendFileImage("disk-d", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-d.qcow2", 4 * GIB))
    assert s4.allocations("disk-d")[0].actual_size == 4 * GIB


def test_copy_and_move_allocation() -> None:
    s = fleet().state()
    copy = CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0")
    s1 = taken(s, copy)
    assert sorted(a.host_id for a in s1.allocations("disk-d")) == ["host-h1", "host-h2"]
    move = CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0", move=True)
    s2 = taken(s, move)
    assert [a.host_id for a in s2.allocations("disk-d")] == ["host-h2"]
    assert copy.cost(s).network_bytes == 4 * GIB
    back = CopyAllocation("disk-d", "host-h2", "lvm:vg0", "host-h1", "file:/var/lib/kerub")
    assert back.blocked(s2) == "h1 does not trust h2 yet"


def test_copy_refuses_a_disk_in_use_and_clone_records_its_source() -> None:
    f = fleet()
    f.vm("db", on="h1", disks=["d"])
    s = f.state()
    assert CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0").blocked(s) == \
        "disk d is in use by db: a copy taken now would not be consistent"
    f.vm("db", disks=["d"])
    s = f.state()
    clone = CopyAllocation("disk-new", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0", source_disk="disk-d")
    s1 = taken(s, clone)
    assert s1.disk_dyn["disk-new"].cloned_from == "disk-d"
    assert [a.host_id for a in s1.allocations("disk-new")] == ["host-h2"]
    assert clone.describe(s) == "clone disk d into new from h1 lvm:vg0 to h2 lvm:vg0"


def test_nfs_and_iscsi_sharing() -> None:
    s = fleet().state()
    export = ExportNfs("host-h1", "/var/lib/kerub", "127.0.0.0/8", disk="disk-d")
    s1 = taken(s, export)
    assert s1.host_config["host-h1"].exports[0].path == "/var/lib/kerub"
    mount = MountNfs("host-h2", "host-h1", "/var/lib/kerub", "/var/lib/kerub/nfs/h1", disk="disk-d")
    assert mount.blocked(s) == "h1 does not export /var/lib/kerub"
    s2 = taken(s1, mount)
    assert s2.host_config["host-h2"].mounts == [Mount(source="127.0.0.2:/var/lib/kerub",
                                                      target="/var/lib/kerub/nfs/h1", disk_id="disk-d")]
    unexport = UnexportNfs("host-h1", "/var/lib/kerub", "127.0.0.0/8")
    assert unexport.blocked(s2) == "h2 still mounts 127.0.0.2:/var/lib/kerub: unmount it first"
    s3 = taken(s2, UnmountNfs("host-h2", "/var/lib/kerub/nfs/h1"))
    s4 = taken(s3, unexport)
    assert s4.host_config["host-h1"].exports == []
    assert export.inverse() == unexport
    share = ShareIscsi("host-h1", 7, "iqn.2025-01.kerub:d", "/dev/vg0/kerub-d", disk="disk-d")
    s5 = taken(s, share)
    assert s5.host_config["host-h1"].iscsi_targets[0].tid == 7
    assert share.blocked(s5) == "h1 already has iSCSI target 7"
    s6 = taken(s5, UnshareIscsi("host-h1", 7))
    assert s6.host_config["host-h1"].iscsi_targets == []


def test_ksm_power_and_trust() -> None:
    s = fleet().state()
    on = SetKsm("host-h2", run=True)
    s1 = taken(s, on)
    assert s1.host_dyn["host-h2"].ksm.run is True and on.inverse() == SetKsm("host-h2", run=False)
    tune = SetKsm("host-h2", pages_to_scan=500, sleep_millisecs=50)
    assert taken(s1, tune).host_dyn["host-h2"].ksm.pages_to_scan == 500 and tune.inverse() is None
    assert PowerDownHost("host-h1").blocked(s) == "h1 is not dedicated to kerub: it may run other workloads"
    down = PowerDownHost("host-h2")
    s2 = taken(s, down)
    assert not s2.host_up("host-h2")
    wake = WakeHost("host-h2", "host-h1")
    s3 = taken(s2, wake)
    assert s3.host_up("host-h2")
    assert wake.blocked(s3) == "h2 is already up"
    assert WakeHost("host-h1", "host-h2").blocked(s.apply([s.host_dyn["host-h1"].model_copy(
        update={"status": HostStatus.down})])) == "h1 has no wake-on-LAN address and no IPMI"
    # a dedicated host that nothing could wake again is never powered down (issue 18 item 4)
    f = fleet()
    f.host("h3", dedicated=True)
    assert PowerDownHost("host-h3").blocked(f.state()) == (
        "h3 has no wake-on-LAN address and no IPMI: once off, it could not be woken again")
    trust = TrustHost("host-h2", "host-h1")
    s4 = taken(s, trust)
    assert s4.host_config["host-h1"].ssh_trust == ["host-h2"]
    assert trust.blocked(s4) == "h1 already trusts h2"


from kerub_tui.planner.image_steps import CloneImageOverlay, CloneImageToLv, RemoveSeed, WriteSeed  # noqa: E402

ALL_STEPS: list[Step] = [
    StartVm("vm-idle", "host-h2"), StopVm("vm-web", "host-h1"), PauseVm("vm-web", "host-h1"),
    ResumeVm("vm-web", "host-h1"), MigrateVm("vm-web", "host-h1", "host-h2", True),
    CreateLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB),
    CreateThinLv("disk-new", "host-h1", "lvm:vg0", "vg0", "pool", "kerub-new", GIB),
    CreateMirrorLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB, 1),
    ConvertLvToMirror("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 1),
    MovePvExtents("host-h1", "lvm:vg0", "vg0", "/dev/sda"), RemovePvFromVg("host-h1", "lvm:vg0", "vg0", "/dev/sda"),
    RemoveLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d"),
    ExtendLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d", 8 * GIB),
    CreateThinPool("host-h1", "lvm:vg0", "vg0", "pool2", 8 * GIB),
    ExtendThinPool("host-h1", "lvm:vg0", "vg0", "pool", 30 * GIB),
    CreateFileImage("disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.raw", GIB, "raw"),
    RemoveFileImage("disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.raw"),
    ExtendFileImage("disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.raw", 2 * GIB),
    CreateZfsVolume("disk-new", "host-h1", "zfs:tank", "tank", "kerub-new", GIB),
    RemoveZfsVolume("disk-new", "host-h1", "zfs:tank", "tank", "kerub-new"),
    CreateGvinumVolume("disk-new", "host-h1", "gvinum:gv0", "gv0", "kerub-new", GIB),
    RemoveGvinumVolume("disk-new", "host-h1", "gvinum:gv0", "kerub-new"),
    CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0", move=True),
    ExportNfs("host-h1", "/var/lib/kerub", "127.0.0.0/8", "disk-d", server="ganesha"),
    UnexportNfs("host-h1", "/var/lib/kerub", "127.0.0.0/8"),
    MountNfs("host-h2", "host-h1", "/var/lib/kerub", "/var/lib/kerub/nfs/h1"),
    UnmountNfs("host-h2", "/var/lib/kerub/nfs/h1"),
    ShareIscsi("host-h1", 3, "iqn.2025-01.kerub:d", "/dev/vg0/kerub-d", "disk-d"),
    AllowIscsiInitiator("host-h1", 3, "127.0.0.4"),
    DisallowIscsiInitiator("host-h1", 3, "127.0.0.4"),
    UnshareIscsi("host-h1", 3), RekeyIscsi("host-h1", 3), RemoveIscsiSecret("host-h2", "kerub-iscsi-0123456789ab"),
    SetKsm("host-h2", True, 100, 20), PowerDownHost("host-h2"),
    WakeHost("host-h2", "host-h1"), TrustHost("host-h1", "host-h2"), FenceHost("host-h2"),
    RemoveOrphanLv("host-h1", "vg0", "kerub-lost", GIB), RemoveOrphanFile("host-h1", "/var/lib/kerub/kerub-lost.qcow2"),
    RemoveOrphanIscsiTarget("host-h1", 9, "iqn.2024-01.org.kerub:lost"), RemoveOrphanExport("host-h1", 140, "/srv/lost"),
    RemoveOrphanIscsiAcl("host-h1", 3, "127.0.0.9"), RemoveOrphanIscsiSecret("host-h2", "kerub-iscsi-0123456789ab"),
    # planner/image_steps.py
    CloneImageOverlay("disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.qcow2", GIB, "disk-d",
                      "/var/lib/kerub/d.qcow2", "qcow2"),
    CloneImageToLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB, "disk-d", "/dev/vg0/kerub-d", "raw"),
    WriteSeed("vm-idle", "host-h1", "a" * 64, "/var/lib/kerub-tui/seeds/kerub-seed-vm-idle-aaaaaaaaaaaaaaaa.iso"),
    RemoveSeed("vm-gone", "host-h1", "/var/lib/kerub-tui/seeds/kerub-seed-vm-gone-aaaaaaaaaaaaaaaa.iso"),
]


def test_a_move_that_makes_room_says_so_and_stays_the_same_step() -> None:
    s = fleet().state()
    move = MigrateVm("vm-web", "host-h1", "host-h2", room_for="vm-idle")
    assert move.describe(s) == "live-migrate web from h1 to h2 to make room for idle"
    assert move.effect(s) == "web runs on h2; h1 has room for idle"
    assert move == MigrateVm("vm-web", "host-h1", "host-h2")  # the reason is not the step's identity
    planned = PlannedStep(type=move.type, params=move.params(), description=move.describe(s))
    assert step_from_planned(planned).room_for == "vm-idle"
    # a plan stored before the parameter existed still loads
    old = PlannedStep(type="migrate-vm", params={"vm": "vm-web", "host": "host-h1", "target": "host-h2",
                                                 "copy_storage": False}, description="")
    assert step_from_planned(old) == move and step_from_planned(old).room_for == ""
    with pytest.raises(UnknownStep):
        step_from_planned(PlannedStep(type="migrate-vm", params={"vm": "vm-web"}, description=""))


def test_all_steps_listed() -> None:
    assert sorted({s.type for s in ALL_STEPS}) == sorted(STEP_TYPES)


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: s.type)
def test_planned_round_trip(step: Step) -> None:
    s = fleet().state()
    planned = PlannedStep(type=step.type, params=step.params(), description=step.describe(s))
    back = step_from_planned(PlannedStep.model_validate_json(planned.model_dump_json()))
    assert back == step and hash(back) == hash(step)
    assert step.cost(s).time_seconds > 0
    assert step.reservations() and all(r.target for r in step.reservations())
    assert step.describe(s) and "host-" not in step.describe(s)  # names, not ids


def test_unknown_step_types_and_params_are_refused() -> None:
    with pytest.raises(UnknownStep, match="unknown step type 'teleport'"):
        step_from_planned(PlannedStep(type="teleport", description="x"))
    with pytest.raises(UnknownStep, match="parameters"):
        step_from_planned(PlannedStep(type="start-vm", params={"vm": "a"}, description="x"))


def _shell_steps() -> list[Step]:
    return [s for s in ALL_STEPS if s.type not in ("start-vm", "stop-vm", "pause-vm", "resume-vm", "migrate-vm",
                                                   "iscsi-secret-remove", "remove-orphan-iscsi-secret")]


@pytest.mark.parametrize("step", _shell_steps(), ids=lambda s: s.type)
def test_shell_commands_come_from_the_builders(step: Step) -> None:
    f = fleet()
    f.put(VirtualStorageDeviceDynamic(id="disk-new", allocations=[
        FileAllocation(host_id="host-h1", capability_id="file:/var/lib/kerub", path="/var/lib/kerub/kerub-new.raw",
                       actual_size=GIB)]))
    f.host("h1", storage=STORAGE, config=HostConfiguration(
        exports=[NfsExport(path="/var/lib/kerub", clients="127.0.0.0/8")],
        iscsi_targets=[IscsiTarget(iqn="iqn.2025-01.kerub:d", tid=3, lun_path="/dev/vg0/kerub-d", disk_id="disk-d",
                                   chap_user="kerub-d")]))
    s = f.state()
    ops = step.operations(s)
    assert ops
    for op in ops:
        assert not isinstance(op, LibvirtOp)
        if isinstance(op, ShellOp):
            shlex.split(op.command)  # well-formed shell text
    commands = step.commands(s)
    assert [c.host_id for c in commands] == [op.host_id for op in ops]


def test_commands_exact_text_for_a_few() -> None:
    s = fleet().state()
    assert CreateLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB).commands(s)[0].command == \
        "lvm lvcreate --yes --name kerub-new --size 1073741824b vg0" or \
        "lvcreate" in CreateLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB).commands(s)[0].command
    from kerub_tui.hosts import ksm, lvm

    assert SetKsm("host-h2", run=False).commands(s)[0].command == ksm.ksm_set(run=False)
    assert RemoveLv("disk-d", "host-h1", "lvm:vg0", "vg0", "kerub-d").commands(s)[0].command == \
        lvm.lvremove(vg="vg0", lv="kerub-d")


def test_hostile_capability_path_stays_one_word() -> None:
    hostile = "/srv/a b;rm -rf /"
    f = Fleet()
    f.host("h1", storage=[StorageCapability(id="file:x", technology=StorageTechnology.file, name=hostile,
                                            size_bytes=10 * GIB, free_bytes=10 * GIB)])
    f.disk("d", size=GIB)
    s = f.state()
    step = create_step(s, s.disks["disk-d"], "host-h1", s.capability("host-h1", "file:x"))
    try:
        command = step.commands(s)[0].command
    except ValueError:
        return  # the builder refused the path: also safe
    assert "/srv/a b;rm -rf /kerub-d.qcow2" in shlex.split(command)


def test_vm_steps_use_libvirt_display_text() -> None:
    kvm = pytest.importorskip("kerub_tui.hosts.kvm")
    s = fleet().state()
    [op] = StartVm("vm-idle", "host-h2").operations(s)
    assert isinstance(op, LibvirtOp) and op.op == "start" and op.kwargs() == {"vm_id": "vm-idle"}
    assert StartVm("vm-idle", "host-h2").commands(s)[0].command == (
        f"libvirt: {kvm.describe_start('idle')} (after {kvm.describe_define('idle')})")
    migrate = MigrateVm("vm-web", "host-h1", "host-h2")
    assert migrate.commands(s)[0].command == f"libvirt: {kvm.describe_migrate('web', '127.0.0.3')}"
    stop = [c.command for c in StopVm("vm-web", "host-h1").commands(s)]
    assert stop[0] == f"libvirt: {kvm.describe_shutdown('web', 120)}"


def test_params_are_plain_json_values() -> None:
    for step in ALL_STEPS:
        for value in dataclasses.asdict(step).values():
            assert value is None or isinstance(value, (str, int, bool))


def test_copy_on_one_host_uses_qemu_img_and_needs_no_trust() -> None:
    s = fleet().state()
    copy = CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h1", "file:/var/lib/kerub", move=True)
    s1 = taken(s, copy)
    [alloc] = s1.allocations("disk-d")
    assert alloc.path == "/var/lib/kerub/kerub-d.qcow2"
    commands = [c.command for c in copy.commands(s)]
    assert commands[0].startswith("qemu-img create")
    assert shlex.split(commands[1])[:2] == ["qemu-img", "convert"]
    assert "/dev/vg0/kerub-d" in shlex.split(commands[1]) and "/var/lib/kerub/kerub-d.qcow2" in shlex.split(commands[1])
    assert commands[2].startswith("lvm") or "lvremove" in commands[2]
    assert copy.cost(s).network_bytes == 0


def test_a_step_or_checker_missing_a_required_part_cannot_exist() -> None:
    """The base classes' hooks are abstract: an incomplete step fails when built, never when run."""
    import dataclasses as dc

    import pytest

    from kerub_tui.planner import checkers, steps

    @dc.dataclass(frozen=True)
    class Incomplete(steps.Step):
        host: str = "h1"

        def take(self, state):  # describe() and operations() are missing
            return state

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()

    class NoFit(checkers.VmChecker):
        type = "x"

    with pytest.raises(TypeError, match="abstract"):
        NoFit()
    for name, cls in steps.STEP_TYPES.items():
        assert not getattr(cls, "__abstractmethods__", None), f"{name} leaves {cls.__abstractmethods__} undefined"


def test_a_copy_for_redundancy_records_when_it_was_taken() -> None:
    """A second copy of a writable disk on another host is a point in time: nothing keeps it in sync,
    so its allocation says when it was taken (issue 18 item 6); a move or an image's copy does not age."""
    s = fleet().state()
    copy = CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0")
    s1 = taken(s, copy)
    there = next(a for a in s1.allocations("disk-d") if a.host_id == "host-h2")
    assert there.copied_at == s.now
    assert next(a for a in s1.allocations("disk-d") if a.host_id == "host-h1").copied_at is None
    assert copy.effect(s) == ("disk d has storage on h2 (a copy as of when this step runs: not kept in sync, "
                              "its age is shown)")
    moved = taken(s, CopyAllocation("disk-d", "host-h1", "lvm:vg0", "host-h2", "lvm:vg0", move=True))
    assert [a.copied_at for a in moved.allocations("disk-d")] == [None]


def test_a_start_on_an_older_copy_makes_it_the_live_one() -> None:
    """A VM started on a copy taken for redundancy (its host with the newer writes down) writes there from
    now on: that copy becomes the disk's live storage, the other one a point in time as of now."""
    from .fleet import NOW

    f = fleet()
    f.vm("db", disks=["data"])
    f.disk("data", size=GIB, on=["h1", "h2*"])
    s = f.state()
    start = StartVm("vm-db", "host-h2")
    assert start.describe(s) == ("start db on h2 (disk data from its copy of 2025-05-31 12:00 UTC: newer writes "
                                 "are on h1)")
    s1 = start.take(s)
    assert {a.host_id: a.copied_at for a in s1.allocations("disk-data")} == {"host-h1": s.now, "host-h2": None}
    assert s.now == NOW and start.describe(s1) == "start db on h2"


def test_predicted_lvs_take_room_on_the_pvs_lvm_would_put_them_on() -> None:
    """Mirrors planned one after another use each PV once per copy (not the whole VG's use against every
    PV); a PV taken out of its VG takes its own size away, not the others' room."""
    f = fleet()
    f.host("h1", pvs=[(10 * GIB, 0), (10 * GIB, 0), (4 * GIB, 0)], tools=ALL_TOOLS)
    f.disk("n0", size=2 * GIB)
    f.disk("n1", size=2 * GIB)
    f.disk("n2", size=2 * GIB)
    s = f.state()
    for name in ("n0", "n1", "n2"):
        s = taken(s, CreateMirrorLv(f"disk-{name}", "host-h1", "lvm:vg0", "vg0", f"kerub-{name}", 2 * GIB, 1))
    assert {pv: s.pv_taken.get(("host-h1", "lvm:vg0", pv), 0) for pv in ("/dev/sda", "/dev/sdb", "/dev/sdc")} == {
        "/dev/sda": 6 * GIB, "/dev/sdb": 6 * GIB, "/dev/sdc": 0}  # the roomiest two, each time
    assert s.mirror_room("host-h1", "lvm:vg0", 4 * GIB, 2) is None  # 4G left on sda and sdb, 12G on the VG
    assert s.mirror_room("host-h1", "lvm:vg0", 2 * GIB, 3) is None
    assert s.mirror_room("host-h1", "lvm:vg0", 5 * GIB, 2) == "h1 lvm:vg0: fewer than 2 PVs with 5.0G free"
    removed = RemoveLv("disk-n0", "host-h1", "lvm:vg0", "vg0", "kerub-n0").take(s)
    assert sum(removed.pv_taken.get(("host-h1", "lvm:vg0", pv), 0) for pv in ("/dev/sda", "/dev/sdb", "/dev/sdc")) \
        == 8 * GIB  # its copies given back where they were
    empty = RemovePvFromVg("host-h1", "lvm:vg0", "vg0", "/dev/sdc")
    f.host("h1", pvs=[(10 * GIB, 0), (10 * GIB, 0), (4 * GIB, 0)], tools=ALL_TOOLS)
    s2 = taken(f.state(), empty)
    assert s2.mirror_room("host-h1", "lvm:vg0", 10 * GIB, 2) is None  # sda and sdb keep all their room


@pytest.mark.parametrize("hostile", ["/dev/sdb;reboot", "/dev/$(reboot)", "/dev/sdb`id`", "/dev/sdb --force", "/dev/../sdb"])
def test_a_pv_named_by_a_hostile_host_never_reaches_a_command(hostile: str) -> None:
    """pvs prints whatever the host says: a PV name kerub-tui would not put in a command is never moved
    off or taken out (the disk on it moves to another host instead), nor a pvmove target."""
    from kerub_tui.core.models import PhysicalVolumeInfo
    from kerub_tui.planner.planning import plan_all

    f = fleet()
    f.host("h1", pvs=[(100 * GIB, 10 * GIB), (100 * GIB, 4 * GIB)], tools=ALL_TOOLS, failing=["/dev/sdb"])
    host = f.docs[("host", "host-h1")]
    caps = host.capabilities
    storage = [s.evolve(pvs=[p.evolve(name=hostile if p.name == "/dev/sdb" else p.name, disk="/dev/sdb")
                             for p in s.pvs]) if s.id == "lvm:vg0" else s for s in caps.storage]
    f.put(host.evolve(capabilities=caps.evolve(storage=storage)))
    s = f.state()
    assert MovePvExtents("host-h1", "lvm:vg0", "vg0", hostile).blocked(s).endswith(
        "is not a device path kerub-tui puts in a command")
    assert RemovePvFromVg("host-h1", "lvm:vg0", "vg0", hostile).blocked(s).endswith(
        "is not a device path kerub-tui puts in a command")
    commands = [c.command for d in plan_all(s) for step, st in zip(d.steps, d.states) for c in step.commands(st)]
    assert commands and not any(hostile in c for c in commands), commands
    # and as a target of another PV's move
    f.host("h1", pvs=[(100 * GIB, 10 * GIB), (100 * GIB, 4 * GIB), (100 * GIB, 0)], tools=ALL_TOOLS,
           failing=["/dev/sda"])
    host = f.docs[("host", "host-h1")]
    storage = [c.evolve(pvs=[p.evolve(name=hostile) if p.name == "/dev/sdb" else p for p in c.pvs])
               if c.id == "lvm:vg0" else c for c in host.capabilities.storage]
    f.put(host.evolve(capabilities=host.capabilities.evolve(storage=storage)))
    move = MovePvExtents("host-h1", "lvm:vg0", "vg0", "/dev/sda")
    assert [c.command for c in move.commands(f.state())] == ["pvmove --interval 30 /dev/sda /dev/sdc"]
    assert PhysicalVolumeInfo(name=hostile).name == hostile  # the document keeps what the host said
