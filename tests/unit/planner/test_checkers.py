"""Every expectation checker, both verdicts, with the reason an admin reads; and the registry guard."""

from __future__ import annotations

import datetime as dt

import pytest
from pydantic import BaseModel

from kerub_tui.core.expectations import DISK_EXPECTATION_TYPES, VM_EXPECTATION_TYPES, Level, parse_spec
from kerub_tui.core.models import (
    DmiInfo,
    HostStatus,
    LvmAllocation,
    MemoryDevice,
    StorageCapability,
    StorageTechnology,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.checkers import (
    DISK_CHECKERS,
    SATISFIED,
    VM_CHECKERS,
    UncheckableExpectation,
    Violated,
    all_violations,
    allocation_rejections,
    check_disk_expectation,
    check_vm_expectation,
    ensure_checkable,
    placement_rejections,
)

from .fleet import GIB, Fleet


def test_every_core_expectation_type_has_a_checker() -> None:
    assert set(VM_CHECKERS) == set(VM_EXPECTATION_TYPES)
    assert set(DISK_CHECKERS) == set(DISK_EXPECTATION_TYPES)
    for kind, cls in VM_EXPECTATION_TYPES.items():
        assert VM_CHECKERS[kind].type == kind, cls
    for kind in DISK_EXPECTATION_TYPES:
        assert DISK_CHECKERS[kind].type == kind


def test_ensure_checkable_accepts_every_type_and_refuses_others() -> None:
    for spec in ("availability:up", "not-same-host:a", "cpu-flags:vmx", "no-migration", "host-os:debian,12"):
        ensure_checkable(parse_spec(spec, "vm"))
    for spec in ("storage-redundancy:2,out-of-box", "clone-of:base", "read-performance:100"):
        ensure_checkable(parse_spec(spec, "disk"))

    class Teleport(BaseModel):
        type: str = "teleport"
        level: Level = Level.want

    with pytest.raises(UncheckableExpectation, match="'teleport': the planner cannot check"):
        ensure_checkable(Teleport())  # type: ignore[arg-type]
    assert issubclass(UncheckableExpectation, ValueError)  # the controller turns it into an ActionError


def vm_verdict(fleet: Fleet, vm: str, spec: str):
    state = fleet.state()
    return check_vm_expectation(state, state.vms[f"vm-{vm}"], parse_spec(spec, "vm", resolve=lambda n: f"vm-{n}"))


def two_hosts(**h2: object) -> Fleet:
    """h1 is a generous host that meets every case below; h3 is shaped by the test."""
    f = Fleet()
    f.host("h1", flags=("vmx", "avx2", "sse4_2"), max_mhz=4000.0, l3_kib=32768, l1i_kib=64,
           dmi=DmiInfo(system_manufacturer="Lenovo", chassis_manufacturer="HP", power_supplies=4, ecc=True,
                       memory_devices=[MemoryDevice(size_bytes=16 * GIB, speed_mts=3200, ecc=True)]))
    f.host("h3", **h2)  # type: ignore[arg-type]
    return f


@pytest.mark.parametrize(
    ("spec", "h3", "reason"),
    [
        ("cpu-architecture:x86_64", {"arch": "aarch64"}, "h3: architecture aarch64, not x86_64"),
        ("cpu-flags:vmx", {"flags": ("svm",)}, "h3: no vmx flag"),
        ("cpu-flags:vmx,avx2", {"flags": ("sse",)}, "h3: no vmx, avx2 flags"),
        ("cpu-clock-frequency:3500", {"max_mhz": 2400.0}, "h3: CPU max 2400 MHz, below 3500"),
        ("cpu-clock-frequency:3500", {"max_mhz": None}, "h3: CPU clock unknown"),
        ("memory-clock-frequency:3000", {"dmi": DmiInfo(memory_devices=[
            MemoryDevice(size_bytes=GIB, speed_mts=2133), MemoryDevice(size_bytes=GIB, speed_mts=3200),
            MemoryDevice(size_bytes=0, speed_mts=None)])}, "h3: memory at 2133 MT/s, below 3000"),
        ("memory-clock-frequency:3000", {"dmi": DmiInfo()}, "h3: memory speed unknown"),
        ("cache-size:L3,16384", {"l3_kib": 8192}, "h3: L3 cache 8192 KiB, below 16384"),
        ("cache-size:L1i,32", {}, "h3: no L1i cache reported"),
        ("chassis-manufacturer:HP", {}, "h3: chassis by Dell Inc., not HP"),
        ("system-manufacturer:Lenovo", {}, "h3: system by Dell Inc., not Lenovo"),
        ("system-manufacturer:Lenovo", {"dmi": DmiInfo()}, "h3: system manufacturer unknown"),
        ("ecc-memory", {"dmi": DmiInfo(ecc=False)}, "h3: no ECC memory"),
        ("ecc-memory", {"dmi": DmiInfo()}, "h3: memory type unknown"),
        ("host-os:debian,12", {"os": ("ubuntu", "22.04")}, "h3: runs ubuntu 22.04, not debian 12"),
        ("host-os:debian,12", {"os": ("debian", "11")}, "h3: runs debian 11, not debian 12"),
        ("power-redundancy:2", {"dmi": DmiInfo(power_supplies=1)}, "h3: 1 power supply, needs 2"),
        ("power-redundancy:3", {}, "h3: 2 power supplies, needs 3"),
        ("power-redundancy", {"dmi": DmiInfo()}, "h3: power supplies unknown"),
        ("core-dedication", {"cpus": 1}, "h3: 2 vCPUs would share 1 core"),
        # an SMT host: two hardware threads are one core (issue 18 item 2)
        ("core-dedication", {"cpus": 2, "threads_per_core": 2}, "h3: 2 vCPUs would share 1 core (2 threads)"),
    ],
)
def test_placement_checkers(spec: str, h3: dict, reason: str) -> None:
    f = two_hosts(**h3)
    f.vm("web", on="h1", cpus=1, expect=[spec])
    f.vm("other", on="h3", cpus=1)
    assert vm_verdict(f, "web", spec) is SATISFIED  # h1 has the defaults, which fit every case
    f.vm("web", on="h3", cpus=1, expect=[spec])
    assert vm_verdict(f, "web", spec) == Violated(reason)
    f.vm("web", cpus=1, expect=[spec])  # not running: a placement expectation has nothing to judge
    assert vm_verdict(f, "web", spec) is SATISFIED


def test_manufacturer_matching_is_a_case_insensitive_word_prefix() -> None:
    f = two_hosts()
    f.vm("web", on="h3", expect=["system-manufacturer:dell"])
    assert vm_verdict(f, "web", "system-manufacturer:dell") is SATISFIED
    assert vm_verdict(f, "web", "system-manufacturer:Del") == Violated("h3: system by Dell Inc., not Del")


def test_ecc_from_memory_modules_when_dmi_has_no_summary() -> None:
    f = two_hosts(dmi=DmiInfo(memory_devices=[MemoryDevice(size_bytes=GIB, ecc=True)]))
    f.vm("web", on="h3", expect=["ecc-memory"])
    assert vm_verdict(f, "web", "ecc-memory") is SATISFIED


def test_availability() -> None:
    f = two_hosts()
    f.vm("web", expect=["availability:up"])
    assert vm_verdict(f, "web", "availability:up") == Violated("not running")
    assert vm_verdict(f, "web", "availability:down") is SATISFIED
    f.vm("web", on="h1", status=VmStatus.paused)
    assert vm_verdict(f, "web", "availability:up") == Violated("paused on h1")
    assert vm_verdict(f, "web", "availability:down") == Violated("paused on h1")
    f.vm("web", on="h1")
    assert vm_verdict(f, "web", "availability:up") is SATISFIED
    f.host("h1", status=HostStatus.unreachable)
    assert vm_verdict(f, "web", "availability:up") == Violated("its host h1 is unreachable")
    # just started, not heard from the host yet: the last report stands (no violation, no restart)
    f.host("h1", status=HostStatus.connecting)
    assert vm_verdict(f, "web", "availability:up") is SATISFIED
    from kerub_tui.planner.planning import plan_all

    assert plan_all(f.state()) == []


def test_not_same_host() -> None:
    f = two_hosts()
    f.vm("db", on="h1")
    f.vm("web", on="h1", expect=["not-same-host:db"])
    assert vm_verdict(f, "web", "not-same-host:db") == Violated("h1: also runs db")
    f.vm("db", on="h3")
    assert vm_verdict(f, "web", "not-same-host:db") is SATISFIED


def test_no_migration() -> None:
    f = two_hosts()
    f.vm("web", on="h1", expect=["no-migration"])
    state = f.state()
    vm = state.vms["vm-web"]
    exp = vm.expectations[0]
    assert check_vm_expectation(state, vm, exp) is SATISFIED
    moved = state.apply([VirtualMachineDynamic(id="vm-web", host_id="host-h3", status=VmStatus.up)])
    assert check_vm_expectation(moved, vm, exp) == Violated("moved from h1 to h3")
    assert VM_CHECKERS["no-migration"].host_fit(state, vm, exp, "host-h3") == "h3: would move it off h1"


def test_vm_dependency() -> None:
    f = two_hosts()
    f.vm("db")
    f.vm("web", on="h1", expect=["vm-dependency:db"])
    assert vm_verdict(f, "web", "vm-dependency:db") == Violated("depends on db, not running")
    f.vm("db", on="h3")
    assert vm_verdict(f, "web", "vm-dependency:db") is SATISFIED
    f.vm("web", expect=["vm-dependency:ghost"])
    assert vm_verdict(f, "web", "vm-dependency:ghost") is SATISFIED  # not running: nothing depends
    f.vm("web", on="h1", expect=["vm-dependency:ghost"])
    assert vm_verdict(f, "web", "vm-dependency:ghost") == Violated("depends on vm-ghost (no such VM), not running")


def disk_verdict(fleet: Fleet, disk: str, spec: str):
    state = fleet.state()
    return check_disk_expectation(state, state.disks[f"disk-{disk}"],
                                  parse_spec(spec, "disk", resolve=lambda n: f"disk-{n}"))


def test_storage_availability() -> None:
    f = two_hosts()
    f.disk("d", on=[])
    assert disk_verdict(f, "d", "storage-availability:up") == Violated("not allocated on any host")
    assert disk_verdict(f, "d", "storage-availability:down") is SATISFIED
    f.disk("d", on=["h1"])
    assert disk_verdict(f, "d", "storage-availability:up") is SATISFIED
    assert disk_verdict(f, "d", "storage-availability:down") == Violated("still allocated on h1 lvm:vg0")
    f.host("h1", status=HostStatus.down)
    assert disk_verdict(f, "d", "storage-availability:up") == Violated("every host holding it is down: h1 lvm:vg0")


def test_storage_redundancy_out_of_box_and_in_box() -> None:
    f = two_hosts()
    f.disk("d", on=["h1"])
    assert disk_verdict(f, "d", "storage-redundancy:2,out-of-box") == Violated("1 copy (h1), needs 2 on different hosts")
    assert disk_verdict(f, "d", "storage-redundancy:1,out-of-box") is SATISFIED
    f.disk("d", on=["h1", "h3"])
    assert disk_verdict(f, "d", "storage-redundancy:2,out-of-box") is SATISFIED
    # in-box: a mirrored LV counts its mirrors
    f.disk("d", on=[])
    f.put(VirtualStorageDeviceDynamic(id="disk-d", allocations=[
        LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv="kerub-d", mirrors=1)]))
    assert disk_verdict(f, "d", "storage-redundancy:2,in-box") is SATISFIED
    assert disk_verdict(f, "d", "storage-redundancy:3,in-box") == Violated("2 copies (h1), needs 3 on different devices")


def test_not_same_storage() -> None:
    f = two_hosts()
    f.disk("a", on=["h1"])
    f.disk("b", on=["h1"], expect=["not-same-storage:a"])
    assert disk_verdict(f, "b", "not-same-storage:a") == Violated("shares h1 lvm:vg0 with a")
    f.disk("b", on=["h3"], expect=["not-same-storage:a"])
    assert disk_verdict(f, "b", "not-same-storage:a") is SATISFIED


def test_performance() -> None:
    slow = [StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0", size_bytes=100 * GIB,
                              free_bytes=100 * GIB, read_mbps=150, write_mbps=None)]
    f = Fleet()
    f.host("h1", storage=slow)
    f.disk("d", on=["h1"])
    assert disk_verdict(f, "d", "read-performance:500") == Violated("h1 lvm:vg0: reads 150 MB/s, below 500")
    assert disk_verdict(f, "d", "read-performance:100") is SATISFIED
    assert disk_verdict(f, "d", "write-performance:100") == Violated("h1 lvm:vg0: write speed unknown")


def test_clone_of() -> None:
    f = two_hosts()
    f.disk("base", on=["h1"])
    f.disk("copy")
    assert disk_verdict(f, "copy", "clone-of:base") is SATISFIED  # not created yet
    f.disk("copy", on=["h1"])
    assert disk_verdict(f, "copy", "clone-of:base") == Violated("was not created as a copy of base")
    f.disk("copy", on=["h1"], cloned_from="base")
    assert disk_verdict(f, "copy", "clone-of:base") is SATISFIED


def test_all_violations_lists_subjects_in_a_stable_order() -> None:
    f = two_hosts()
    f.vm("b", expect=["availability:up@dealbreaker"])
    f.vm("a", expect=["availability:up@wish"])
    f.disk("d", expect=["storage-availability:up"])
    found = all_violations(f.state())
    assert [(v.subject_id, v.level.value) for v in found] == [
        ("vm-a", "wish"), ("vm-b", "dealbreaker"), ("disk-d", "want")]
    assert found[1].describe() == "VM b: availability@dealbreaker: not running"


def test_placement_rejections_capacity_and_others_expectations() -> None:
    f = Fleet()
    f.host("h1", memory=4 * GIB, cpus=2)
    f.host("h2", status=HostStatus.down)
    f.host("h3", recycling=True)
    f.host("h4", end_of_life=dt.date(2020, 1, 1))
    f.host("h5")
    f.vm("db", on="h5", cpus=6, expect=["not-same-host:web@want", "core-dedication@dealbreaker"])
    f.vm("web", cpus=4, memory=8 * GIB)
    s = f.state()
    web = s.vms["vm-web"]
    reasons = {h: [(r.checker, r.reason) for r in placement_rejections(s, web, f"host-{h}")] for h in
               ("h1", "h2", "h3", "h4", "h5")}
    assert reasons["h1"] == [("capacity", "h1: 2 CPUs, the VM has 4 vCPUs")]
    assert reasons["h2"] == [("capacity", "h2: is down")]
    assert reasons["h3"] == [("capacity", "h3: in maintenance (being recycled)")]
    assert reasons["h4"] == [("capacity", "h4: past its end of life (2020-01-01)")]
    assert reasons["h5"] == [
        ("not-same-host", "h5: runs db, which must not share a host with web"),
        ("core-dedication", "h5: db has dedicated cores (10 vCPUs on 8 cores)"),
    ]
    small = s.apply([])
    f.vm("web", cpus=1, memory=16 * GIB)
    s2 = f.state()
    assert next(r.reason for r in placement_rejections(s2, s2.vms["vm-web"], "host-h5")) == \
        "h5: 14.0G free memory, needs 16.0G"
    assert small is s


def test_allocation_rejections() -> None:
    f = Fleet()
    f.host("h1", vg_free=5 * GIB)
    f.host("h2", failing=["sda"])
    f.disk("a", on=["h2"])
    f.disk("d", size=10 * GIB, expect=["not-same-storage:a", "read-performance:600@wish"])
    s = f.state()
    d = s.disks["disk-d"]
    assert [r.reason for r in allocation_rejections(s, d, "host-h1", "lvm:vg0")] == [
        "h1 lvm:vg0: 5.0G free, needs 10.0G", "h1 lvm:vg0: reads 500 MB/s, below 600"]
    assert [r.reason for r in allocation_rejections(s, d, "host-h2", "lvm:vg0")] == [
        "h2 lvm:vg0: device /dev/sda is failing", "h2 lvm:vg0: holds a", "h2 lvm:vg0: reads 500 MB/s, below 600"]
    assert [r.reason for r in allocation_rejections(s, d, "host-h1", "zfs:tank")] == [
        "h1: no storage zfs:tank", "h1 lvm:vg0: reads 500 MB/s, below 600".replace("lvm:vg0", "zfs:tank")
        .replace("reads 500 MB/s, below 600", "read speed unknown")]
