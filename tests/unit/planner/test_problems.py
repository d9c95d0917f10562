"""Every problem detector: found when it should be, silent otherwise, with the reason an admin reads."""

from __future__ import annotations

import datetime as dt

from kerub_tui.core.models import (
    HostConfiguration,
    HostStatus,
    IscsiTarget,
    LvmAllocation,
    Mount,
    NfsExport,
    ThinPool,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.factories import PROBLEM_FACTORIES
from kerub_tui.planner.problems import DETECTORS, all_problems, host_problems

from .fleet import GIB, Fleet


def problems(f: Fleet) -> list[tuple[str, str, str]]:
    return [(p.type, p.subject_id, p.reason) for p in all_problems(f.state())]


def test_every_problem_type_has_a_factory() -> None:
    found_types = {
        "vm-on-recycling-host", "allocation-on-recycling-host", "vm-on-end-of-life-host",
        "allocation-on-end-of-life-host", "allocation-on-failing-device", "cpu-overheat", "thin-pool-almost-full",
        "unused-export", "unused-mount", "unused-iscsi-target", "unused-iscsi-initiator", "vm-lost-with-host", "undersized-allocation",
            "unused-export-client",
        "unused-seed", "unused-iscsi-secret",
    }
    assert set(PROBLEM_FACTORIES) == found_types
    assert sorted(DETECTORS) == ["end-of-life", "failing-device", "host-down", "overheat", "recycling", "thin-pool",
                                 "undersized-allocation", "unused-seed", "unused-share"]


def test_nothing_wrong_nothing_found() -> None:
    f = Fleet()
    f.host("h1")
    f.vm("web", on="h1", expect=["availability:up"])
    f.disk("d", on=["h1"])
    assert problems(f) == []


def test_recycling_host_with_a_vm_and_an_allocation() -> None:
    f = Fleet()
    f.host("h1", recycling=True)
    f.vm("web", on="h1")
    f.disk("d", on=["h1"])
    assert problems(f) == [
        ("allocation-on-recycling-host", "disk-d",
         "disk d has storage on h1 (lvm:vg0), which is being recycled (maintenance)"),
        ("vm-on-recycling-host", "vm-web", "web runs on h1, which is being recycled (maintenance)"),
    ]
    f.host("h1", recycling=True)  # emptied: nothing left to report
    f.vm("web")
    f.disk("d")
    assert problems(f) == []


def test_end_of_life() -> None:
    f = Fleet()
    f.host("h1", end_of_life=dt.date(2025, 1, 1))
    f.host("h2", end_of_life=dt.date(2030, 1, 1))
    f.vm("web", on="h1")
    f.vm("db", on="h2")
    assert problems(f) == [("vm-on-end-of-life-host", "vm-web", "web runs on h1, which is past its end of life (2025-01-01)")]


def test_failing_device_only_where_an_allocation_sits() -> None:
    f = Fleet()
    f.host("h1", failing=["/dev/sda"])
    assert problems(f) == []  # a hardware alert for the admin, nothing for a plan
    f.disk("d", on=["h1"])
    assert problems(f) == [("allocation-on-failing-device", "disk-d", "disk d on h1 sits on failing device /dev/sda")]


def test_overheat_until_a_quarter_of_the_load_moved() -> None:
    f = Fleet()
    f.host("h1", temperature=91.0)
    f.host("h2")
    for name in ("a", "b", "c", "d"):
        f.vm(name, on="h1", cpus=1)
    state = f.state()
    assert [p.reason for p in host_problems(state, "host-h1")] == ["h1 CPU at 91°C with 4 VMs: move some load away"]
    moved = state.apply([VirtualMachineDynamic(id="vm-a", host_id="host-h2", status=VmStatus.up)])
    assert host_problems(moved, "host-h1") == []
    f.host("h1", temperature=60.0)
    assert problems(f) == []


def test_thin_pool_almost_full() -> None:
    f = Fleet()
    f.host("h1", config=HostConfiguration(thin_pools=[ThinPool(vg="vg0", name="pool", size_bytes=10 * GIB)]))
    f.disk("d", size=9 * GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d", thin_pool="pool")]))
    assert problems(f) == [("thin-pool-almost-full", "", "thin pool vg0/pool on h1 is 90% full")]
    f.disk("d", size=5 * GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d", thin_pool="pool")]))
    assert problems(f) == []


def test_unused_shares_and_mounts() -> None:
    f = Fleet()
    f.host("h1", config=HostConfiguration(
        exports=[NfsExport(path="/srv/a", disk_id="disk-d"), NfsExport(path="/srv/orphan")],
        iscsi_targets=[IscsiTarget(iqn="iqn.2025-01.kerub:d", tid=3, lun_path="/dev/vg0/kerub-d", disk_id="disk-d")]))
    f.host("h2", config=HostConfiguration(mounts=[Mount(source="127.0.0.2:/srv/a", target="/mnt/a", disk_id="disk-d")]))
    f.disk("d", on=["h1"], file=True)
    f.vm("web", disks=["d"])
    found = problems(f)
    assert [t for t, _, _ in found] == ["unused-export", "unused-export", "unused-iscsi-target", "unused-mount"]
    assert found[0][2] == "h1 exports /srv/orphan, which no running VM uses"
    assert found[3][2] == "h2 mounts 127.0.0.2:/srv/a on /mnt/a, which no VM there uses"
    f.vm("web", on="h2", disks=["d"])  # the VM runs on h2 through the mount: only the orphan is unused
    assert [(t, r) for t, _, r in problems(f)] == [("unused-export", "h1 exports /srv/orphan, which no running VM uses")]


def test_host_down_with_vms_that_must_run() -> None:
    f = Fleet()
    f.host("h1", status=HostStatus.down)
    f.vm("web", on="h1", expect=["availability:up"])
    f.vm("batch", on="h1")
    assert problems(f) == [("vm-lost-with-host", "vm-web", "web must run, but its host h1 is down")]


def test_undersized_allocation() -> None:
    f = Fleet()
    f.host("h1")
    f.disk("d", size=20 * GIB)
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d", actual_size=10 * GIB)]))
    assert problems(f) == [("undersized-allocation", "disk-d",
                            f"disk d on h1 is {10 * GIB} bytes, the disk is {20 * GIB}")]
