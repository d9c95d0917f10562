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
from kerub_tui.planner.reconcile import RemoveOrphanFile, RemoveOrphanLv
from kerub_tui.planner.state import OperationalState
from kerub_tui.planner.steps import (
    STEP_TYPES,
    CopyAllocation,
    CreateFileImage,
    CreateGvinumVolume,
    CreateLv,
    CreateMirrorLv,
    CreateThinLv,
    CreateThinPool,
    CreateZfsVolume,
    ExportNfs,
    ExtendFileImage,
    ExtendLv,
    ExtendThinPool,
    LibvirtOp,
    MigrateVm,
    MountNfs,
    PauseVm,
    PowerDownHost,
    RemoveFileImage,
    RemoveGvinumVolume,
    RemoveLv,
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
           wol_mac="52:54:00:12:34:56", ksm=KsmState(available=True, run=False))
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
        "clone-image-overlay", "clone-image-lv", "write-seed", "remove-seed",  # planner/image_steps.py
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
    assert s1.thin_pool_used("host-h1", "vg0", "pool") == 2 * GIB
    assert s1.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0")
    assert CreateThinLv("disk-new", "host-h2", "lvm:vg0", "vg0", "pool", "kerub-new", GIB).blocked(s) == \
        "h2 has no thin pool vg0/pool"


def test_mirror_counts_copies() -> None:
    s = fleet().state()
    s1 = taken(s, CreateMirrorLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", 2 * GIB, 1))
    assert s1.free_storage("host-h1", "lvm:vg0") == s.free_storage("host-h1", "lvm:vg0") - 4 * GIB
    assert s1.allocations("disk-new")[0].mirrors == 1


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
    UnshareIscsi("host-h1", 3), SetKsm("host-h2", True, 100, 20), PowerDownHost("host-h2"),
    WakeHost("host-h2", "host-h1"), TrustHost("host-h1", "host-h2"),
    RemoveOrphanLv("host-h1", "vg0", "kerub-lost", GIB), RemoveOrphanFile("host-h1", "/var/lib/kerub/kerub-lost.qcow2"),
    # planner/image_steps.py
    CloneImageOverlay("disk-new", "host-h1", "file:/var/lib/kerub", "/var/lib/kerub/kerub-new.qcow2", GIB, "disk-d",
                      "/var/lib/kerub/d.qcow2", "qcow2"),
    CloneImageToLv("disk-new", "host-h1", "lvm:vg0", "vg0", "kerub-new", GIB, "disk-d", "/dev/vg0/kerub-d", "raw"),
    WriteSeed("vm-idle", "host-h1", "a" * 64, "/var/lib/kerub-tui/seeds/kerub-seed-vm-idle-aaaaaaaaaaaaaaaa.iso"),
    RemoveSeed("vm-gone", "host-h1", "/var/lib/kerub-tui/seeds/kerub-seed-vm-gone-aaaaaaaaaaaaaaaa.iso"),
]


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
    return [s for s in ALL_STEPS if s.type not in ("start-vm", "stop-vm", "pause-vm", "resume-vm", "migrate-vm")]


@pytest.mark.parametrize("step", _shell_steps(), ids=lambda s: s.type)
def test_shell_commands_come_from_the_builders(step: Step) -> None:
    f = fleet()
    f.put(VirtualStorageDeviceDynamic(id="disk-new", allocations=[
        FileAllocation(host_id="host-h1", capability_id="file:/var/lib/kerub", path="/var/lib/kerub/kerub-new.raw",
                       actual_size=GIB)]))
    f.host("h1", storage=STORAGE, config=HostConfiguration(exports=[NfsExport(path="/var/lib/kerub", clients="127.0.0.0/8")]))
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
