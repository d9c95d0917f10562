"""Every factory: for an open violation or problem, the candidate step sequences, best first."""

from __future__ import annotations

from kerub_tui.core.models import (
    HostConfiguration,
    IscsiTarget,
    LvmAllocation,
    Mount,
    NfsExport,
    StorageCapability,
    StorageTechnology,
    ThinPool,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.planner.factories import PROBLEM_FACTORIES, VIOLATION_FACTORIES, candidates
from kerub_tui.planner.search import Evaluation
from kerub_tui.planner.state import OperationalState

from .fleet import GIB, Fleet, from_tables


def options(state: OperationalState, item_type: str, subject: str = "") -> list[list[str]]:
    """The candidates for the one open item of this type (and subject), as step descriptions."""
    items = [i for i in Evaluation.full(state).items()
             if i.type == item_type and (not subject or i.subject_id == subject)]
    assert len(items) == 1, items
    out = []
    for c in candidates(state, items[0]):
        lines, st = [], state
        for step in c.steps:
            lines.append(step.describe(st))
            st = step.take(st)
        out.append(lines)
    return out


def test_registries_cover_every_type() -> None:
    from kerub_tui.core.expectations import DISK_EXPECTATION_TYPES, VM_EXPECTATION_TYPES

    assert set(VIOLATION_FACTORIES) == set(VM_EXPECTATION_TYPES) | set(DISK_EXPECTATION_TYPES)
    assert len(PROBLEM_FACTORIES) == 16  # issue 16: unused-iscsi-initiator, unused-export-client, unused-iscsi-secret


def test_availability_up_places_best_first_and_respects_the_policy() -> None:
    f = from_tables(hosts="""
        name memory
        small 8G
        big   64G
        down  64G
    """, vms="""
        name memory on    expect
        web  2G     -     availability:up@dealbreaker
        x    2G     small -
    """)
    f.host("down", memory=64 * GIB, status=__import__("kerub_tui.core.models", fromlist=["HostStatus"]).HostStatus.down)
    spread = options(f.state(), "availability")
    assert spread == [["start web on big"], ["start web on small"]]  # most room first
    packed = options(f.state(power_saving=True), "availability")
    assert packed == [["start web on small"], ["start web on big"]]  # fullest first


def test_availability_paused_resumes_and_down_stops() -> None:
    f = from_tables(hosts="name memory\n h1 8G", vms="""
        name memory on status expect
        a    1G     h1 paused availability:up@want
        b    1G     h1 up     availability:down@want
    """)
    s = f.state()
    assert options(s, "availability", "vm-a") == [["resume a on h1"]]
    assert options(s, "availability", "vm-b") == [["stop b on h1 (forced after 120 s)"]]


def test_placement_wakes_a_host_only_when_no_running_host_fits() -> None:
    from kerub_tui.core.models import HostStatus

    f = from_tables(hosts="""
        name memory options
        h1   4G     -
    """, vms="""
        name memory expect
        web  6G     availability:up@dealbreaker
    """)
    f.host("h2", memory=16 * GIB, status=HostStatus.down, wol_mac="52:54:00:00:00:09", dedicated=True)
    assert options(f.state(), "availability") == [["wake h2 (from h1: wake-on-LAN)", "start web on h2"]]


def test_relocation_for_a_placement_expectation_and_for_not_same_host() -> None:
    f = from_tables(hosts="""
        name memory flags
        h1   16G    sse4_2
        h2   16G    vmx
        h3   16G    vmx
    """, vms="""
        name memory on expect
        web  2G     h1 cpu-flags:vmx@dealbreaker
    """)
    assert options(f.state(), "cpu-flags") == [["live-migrate web from h1 to h2"], ["live-migrate web from h1 to h3"]]
    g = from_tables(hosts="""
        name memory
        h1   16G
        h2   16G
    """, vms="""
        name memory on expect
        db   4G     h1 -
        web  2G     h1 not-same-host:db@dealbreaker
    """)
    assert options(g.state(), "not-same-host") == [["live-migrate web from h1 to h2"], ["live-migrate db from h1 to h2"]]


def test_relocation_respects_a_dealbreaker_no_migration() -> None:
    f = from_tables(hosts="""
        name memory flags
        h1   16G    sse4_2
        h2   16G    vmx
    """, vms="""
        name memory on expect
        web  2G     h1 cpu-flags:vmx@want no-migration@dealbreaker
    """)
    assert options(f.state(), "cpu-flags") == []


def test_core_dedication_moves_the_vm_or_its_neighbours() -> None:
    f = from_tables(hosts="""
        name memory cpus
        h1   16G    4
        h2   16G    8
    """, vms="""
        name memory cpus on expect
        db   2G     3    h1 core-dedication@dealbreaker
        web  2G     2    h1 -
    """)
    found = options(f.state(), "core-dedication")
    assert ["live-migrate db from h1 to h2"] in found and ["live-migrate web from h1 to h2"] in found


def test_dependency_starts_the_dependency_or_stops_the_dependant() -> None:
    f = from_tables(hosts="name memory\n h1 16G", vms="""
        name memory on expect
        db   2G     -  -
        app  2G     h1 vm-dependency:db@dealbreaker
    """)
    assert options(f.state(), "vm-dependency") == [["start db on h1"], ["stop app on h1 (forced after 120 s)"]]


def test_no_migration_and_clone_of_have_no_fix() -> None:
    f = from_tables(hosts="name memory\n h1 16G", disks="""
        name size on expect
        base 1G   h1 -
        copy 1G   h1 clone-of:base@dealbreaker
    """)
    assert options(f.state(), "clone-of") == []


def test_storage_availability_up_and_down() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   16G    vg=50G
        h2   16G    vg=20G
    """, disks="""
        name size on expect
        new  10G  -  storage-availability:up@dealbreaker
        old  10G  h1 storage-availability:down@dealbreaker
    """)
    s = f.state()
    assert options(s, "storage-availability", "disk-new") == [
        ["create LV vg0/kerub-new (10.0G) on h1 for disk new"], ["create LV vg0/kerub-new (10.0G) on h2 for disk new"]]
    assert options(s, "storage-availability", "disk-old") == [["remove LV vg0/kerub-old of disk old on h1"]]


def test_storage_availability_creates_a_clone_when_asked() -> None:
    f = from_tables(hosts="name memory\n h1 16G", disks="""
        name size on expect
        base 1G   h1 -
        copy 1G   -  storage-availability:up@dealbreaker clone-of:base@dealbreaker
    """)
    assert options(f.state(), "storage-availability") == [
        ["clone disk base into copy from h1 lvm:vg0 to h1 lvm:vg0"]]


def test_storage_redundancy_copies_or_mirrors() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   16G    pvs=50G,50G
        h2   16G    pvs=50G,50G
    """, disks="""
        name size on expect
        data 1G   h1 storage-redundancy:2,out-of-box@dealbreaker
        fresh 1G  -  storage-redundancy:2,in-box@dealbreaker
    """)
    s = f.state()
    assert options(s, "storage-redundancy", "disk-data") == [
        ["let h1 reach h2 over SSH", "copy disk data from h1 lvm:vg0 to h2 lvm:vg0"]]
    assert options(s, "storage-redundancy", "disk-fresh")[0] == [
        "create LV vg0/kerub-fresh (1.0G, 2 copies) on h1 for disk fresh"]


def test_misplaced_allocations_move() -> None:
    slow_fast = [
        StorageCapability(id="lvm:slow", technology=StorageTechnology.lvm, name="slow", size_bytes=100 * GIB,
                          free_bytes=100 * GIB, read_mbps=100, device="/dev/sda"),
        StorageCapability(id="lvm:fast", technology=StorageTechnology.lvm, name="fast", size_bytes=100 * GIB,
                          free_bytes=100 * GIB, read_mbps=2000, device="/dev/nvme0n1"),
    ]
    f = Fleet()
    f.host("h1", storage=slow_fast, config=HostConfiguration(ssh_trust=["host-h1"]))
    f.disk("d", size=GIB, expect=["read-performance:1000@dealbreaker"])
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:slow", vg="slow", lv="kerub-d")]))
    assert options(f.state(), "read-performance") == [["move disk d from h1 lvm:slow to h1 lvm:fast"]]
    f.disk("other", size=GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-other", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:fast", vg="fast", lv="kerub-other")]))
    f.disk("d", size=GIB, expect=["not-same-storage:other@dealbreaker"])
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:fast", vg="fast", lv="kerub-d")]))
    assert options(f.state(), "not-same-storage") == [["move disk d from h1 lvm:fast to h1 lvm:slow"]]


def test_problem_factories() -> None:
    f = from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G    -
    """, vms="""
        name memory on
        web  2G     h1
    """, disks="""
        name size on
        cold 1G   h1
        twin 1G   h1,h2
    """)
    s = f.state()
    assert options(s, "vm-on-recycling-host") == [["live-migrate web from h1 to h2"]]
    assert options(s, "allocation-on-recycling-host", "disk-cold") == [
        ["let h1 reach h2 over SSH", "move disk cold from h1 lvm:vg0 to h2 lvm:vg0"]]
    # another copy exists: dropping this one is an option too
    assert ["remove LV vg0/kerub-twin of disk twin on h1"] in options(s, "allocation-on-recycling-host", "disk-twin")


def test_thin_pool_unused_shares_undersized_and_lost_vm_factories() -> None:
    from kerub_tui.core.models import HostStatus

    f = Fleet()
    f.host("h1", config=HostConfiguration(
        thin_pools=[ThinPool(vg="vg0", name="pool", size_bytes=10 * GIB)],
        exports=[NfsExport(path="/srv/x")],
        iscsi_targets=[IscsiTarget(iqn="iqn.2025-01.kerub:x", tid=4, lun_path="/dev/vg0/x")],
        mounts=[Mount(source="127.0.0.9:/srv/y", target="/mnt/y")]))
    f.host("h0", status=HostStatus.down, fenced="admin")  # known to run no guest: its VM may start elsewhere
    f.vm("lost", on="h0", expect=["availability:up@want"])
    f.disk("thin", size=9 * GIB)
    f.disk("grown", size=4 * GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-thin", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-thin", thin_pool="pool")]))
    f.put(VirtualStorageDeviceDynamic(id="disk-grown", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-grown", actual_size=GIB)]))
    s = f.state()
    assert options(s, "thin-pool-almost-full") == [["extend thin pool vg0/pool to 12.5G on h1"]]
    assert options(s, "unused-export") == [["stop exporting /srv/x from h1 to *"]]
    assert options(s, "unused-iscsi-target") == [["remove iSCSI target 4 on h1"]]
    assert options(s, "unused-mount") == [["unmount /mnt/y on h1"]]
    assert options(s, "undersized-allocation") == [["extend LV vg0/kerub-grown to 4.0G on h1"]]
    assert options(s, "vm-lost-with-host") == [["start lost on h1"]]


def test_overheat_moves_the_biggest_vms_first() -> None:
    f = from_tables(hosts="""
        name memory cpus options
        h1   32G    8    temp=90
        h2   32G    8    -
    """, vms="""
        name memory cpus on
        small 1G    1    h1
        big   1G    4    h1
    """)
    assert options(f.state(), "cpu-overheat")[0] == ["live-migrate big from h1 to h2"]
