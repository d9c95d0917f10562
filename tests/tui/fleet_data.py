"""A small deterministic fleet for the console's tests: fixed ids, names and timestamps."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from kerub_tui.controller import Controller
from kerub_tui.core.expectations import validate_expectation
from kerub_tui.core.models import (
    AuditEntry,
    CommandRecord,
    Cost,
    CpuInfo,
    DiskLink,
    Event,
    EventSeverity,
    FileAllocation,
    Host,
    HostCapabilities,
    HostCommand,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    HypervisorInfo,
    KsmState,
    LvmAllocation,
    NfsExport,
    Nic,
    OsInfo,
    Plan,
    PlannedStep,
    PlanStatus,
    Settings,
    StepOutcome,
    StepRecord,
    StorageCapability,
    StorageTechnology,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.reconcile import process_identity

T0 = dt.datetime(2024, 5, 1, 12, 0, 0, tzinfo=dt.UTC)
NOW = T0 + dt.timedelta(minutes=10)
GIB = 1 << 30
MIB = 1 << 20


def ident(prefix: str, n: int) -> str:
    return f"{prefix}-0000-0000-0000-{n:012d}"


H1, H2, H3 = ident("host0001", 1), ident("host0002", 2), ident("host0003", 3)
WEB1, WEB2, DB1 = ident("vm000001", 1), ident("vm000002", 2), ident("vm000003", 3)
D_WEB1, D_SHARED, D_DB1 = ident("disk0001", 1), ident("disk0002", 2), ident("disk0003", 3)
P_START, P_KSM, P_DONE = ident("plan0001", 1), ident("plan0002", 2), ident("plan0003", 3)


def capabilities(cpus: int, memory_gib: int, vg_free: int) -> HostCapabilities:
    return HostCapabilities(
        discovered_at=T0,
        os=OsInfo(id="debian", version_id="12", pretty_name="Debian GNU/Linux 12 (bookworm)",
                  kernel="6.1.0-18-amd64", hostname="lab"),
        cpu=CpuInfo(architecture="x86_64", model="Intel Xeon E5-2630 v4", vendor="GenuineIntel", cpus=cpus,
                    sockets=1, cores_per_socket=cpus, threads_per_core=1, max_mhz=3100.0,
                    flags=["vmx", "avx2", "aes"]),
        memory_bytes=memory_gib * GIB,
        storage=[StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0",
                                   size_bytes=100 * GIB, free_bytes=vg_free * GIB, device="/dev/sda2")],
        hypervisor=HypervisorInfo(libvirt_version="9.0.0", kvm=True, domain_types=["kvm", "qemu"],
                                  guest_arches=["x86_64"]),
        ksm=True,
    )


def host_dynamic(host_id: str, cpu_idle: float, mem_used_gib: float, total_gib: int, *,
                 when: dt.datetime = T0, status: HostStatus = HostStatus.up, ksm_run: bool = False,
                 vg_free: int = 50) -> HostDynamic:
    used = int(mem_used_gib * GIB)
    return HostDynamic(
        id=host_id, status=status, cpu_user=100 - cpu_idle - 2, cpu_system=2.0, cpu_idle=cpu_idle,
        memory_used=used, memory_free=total_gib * GIB - used, swap_used=0,
        ksm=KsmState(available=True, run=ksm_run, pages_sharing=250_000 if ksm_run else 0),
        storage_free={"lvm:vg0": vg_free * GIB}, cpu_temperature=48.0, last_seen=when,
    )


def fleet_documents() -> list:
    docs: list = [
        Host(id=H1, name="h1", address="10.0.0.11", capabilities=capabilities(16, 64, 50)),
        Host(id=H2, name="h2", address="10.0.0.12", port=2222, capabilities=capabilities(8, 32, 20)),
        Host(id=H3, name="h3", address="10.0.0.13", capabilities=capabilities(8, 32, 80)),
        host_dynamic(H1, 70.0, 20, 64),
        host_dynamic(H2, 40.0, 24, 32, ksm_run=True, vg_free=20),
        HostDynamic(id=H3, status=HostStatus.unreachable, status_reason="connection refused", last_seen=T0),
        HostConfiguration(id=H2, exports=[NfsExport(path="/srv/kerub/shared-data", server="ganesha",
                                                    disk_id=D_SHARED)]),
        VirtualStorageDevice(id=D_WEB1, name="web1-root", size=10 * GIB),
        VirtualStorageDevice(id=D_SHARED, name="shared-data", size=200 * GIB),
        VirtualStorageDevice(id=D_DB1, name="db1-data", size=50 * GIB, expectations=[
            validate_expectation({"type": "storage-redundancy", "copies": 2, "out_of_box": True,
                                  "level": "dealbreaker"}, "disk")]),
        VirtualStorageDeviceDynamic(id=D_WEB1, allocations=[LvmAllocation(host_id=H1, capability_id="lvm:vg0",
                                                                          vg="vg0", lv="web1-root")]),
        VirtualStorageDeviceDynamic(id=D_SHARED, allocations=[FileAllocation(
            host_id=H2, capability_id="file:/srv/kerub", path="/srv/kerub/shared-data.qcow2", format="qcow2")]),
        VirtualStorageDeviceDynamic(id=D_DB1, allocations=[LvmAllocation(host_id=H2, capability_id="lvm:vg0",
                                                                         vg="vg0", lv="db1-data")]),
        VirtualMachine(id=WEB1, name="web1", cpus=2, memory_min=1 * GIB, memory_max=2 * GIB,
                       disks=[DiskLink(disk_id=D_WEB1)], nics=[Nic(network="default")],
                       expectations=[validate_expectation({"type": "availability", "up": True,
                                                           "level": "dealbreaker"}, "vm"),
                                     validate_expectation({"type": "not-same-host", "vms": [WEB2]}, "vm")]),
        VirtualMachine(id=WEB2, name="web2", cpus=2, memory_min=1 * GIB, memory_max=2 * GIB,
                       nics=[Nic(bridge="br0")],
                       expectations=[validate_expectation({"type": "availability", "up": True}, "vm")]),
        VirtualMachine(id=DB1, name="db1", cpus=4, memory_min=4 * GIB, memory_max=8 * GIB,
                       disks=[DiskLink(disk_id=D_DB1), DiskLink(disk_id=D_SHARED, read_only=True)],
                       expectations=[validate_expectation({"type": "availability", "up": True,
                                                           "level": "dealbreaker"}, "vm"),
                                     validate_expectation({"type": "cpu-architecture",
                                                           "architecture": "aarch64"}, "vm")]),
        VirtualMachineDynamic(id=WEB1, host_id=H1, status=VmStatus.up, memory_used=1536 * MIB, cpu_percent=12.0,
                              spice_address="127.0.0.1", spice_port=5900, updated_at=T0),
        VirtualMachineDynamic(id=WEB2, host_id=H2, status=VmStatus.up, memory_used=900 * MIB, cpu_percent=3.0,
                              updated_at=T0),
        Plan(id=P_START, plan_kind="start", created_at=T0 + dt.timedelta(minutes=5),
             trigger=["db1: availability@dealbreaker violated: db1 is down"],
             steps=[
                 PlannedStep(type="lv-create", description="create LV vg0/db1-data on h1", host_id=H1,
                             effect="vg0 on h1: 50.0G less free",
                             cost=Cost(io_bytes=0, time_seconds=1.0),
                             commands=[HostCommand(host_id=H1, command="lvcreate --yes -n db1-data -L 53687091200b vg0")]),
                 PlannedStep(type="vm-start", description="start db1 on h1", host_id=H1,
                             effect="h1: 8.0G memory and 4 vCPUs reserved",
                             cost=Cost(cpu_seconds=2.0, time_seconds=5.0, risk=0.1),
                             commands=[HostCommand(host_id=H1, command="libvirt: defineXML(db1)"),
                                       HostCommand(host_id=H1, command="libvirt: create(db1)")]),
             ],
             effects=["db1 runs on h1"], cost=Cost(cpu_seconds=2.0, time_seconds=6.0, risk=0.1),
             unsatisfied=["db1: cpu-architecture:aarch64@want — no aarch64 host"]),
        Plan(id=P_KSM, plan_kind="ksm", created_at=T0 + dt.timedelta(minutes=3), status=PlanStatus.running,
             runner=process_identity(),  # this process runs it: opening the store leaves it running
             trigger=["h2: 4 similar VMs and 75% memory used: KSM saves about 1.0G"],
             steps=[
                 PlannedStep(type="ksm-enable", description="enable KSM on h2", host_id=H2,
                             commands=[HostCommand(host_id=H2, command="echo 1 > /sys/kernel/mm/ksm/run")]),
                 PlannedStep(type="ksm-tune", description="tune KSM on h2 (pages_to_scan 1000)", host_id=H2,
                             commands=[HostCommand(host_id=H2,
                                                   command="echo 1000 > /sys/kernel/mm/ksm/pages_to_scan")]),
             ],
             records=[StepRecord(step_index=0, host_id=H2, outcome=StepOutcome.done, started_at=T0,
                                 ended_at=T0 + dt.timedelta(seconds=1),
                                 commands=[CommandRecord(host_id=H2, command="echo 1 > /sys/kernel/mm/ksm/run",
                                                         exit_code=0)]),
                      StepRecord(step_index=1, host_id=H2, outcome=StepOutcome.running,
                                 started_at=T0 + dt.timedelta(seconds=1))]),
        Plan(id=P_DONE, plan_kind="start", created_at=T0, status=PlanStatus.done, decided_by="admin",
             trigger=["web2: availability@want violated: web2 is down"],
             steps=[PlannedStep(type="vm-start", description="start web2 on h2", host_id=H2)],
             records=[StepRecord(step_index=0, host_id=H2, outcome=StepOutcome.done)]),
        AuditEntry(id=ident("audit001", 1), time=T0, os_user="admin", action="vm create", target="web1"),
        AuditEntry(id=ident("audit001", 2), time=T0 + dt.timedelta(seconds=30), os_user="admin",
                   action="command", target="web2", host_id=H2, command="libvirt: create(web2)", exit_code=0,
                   duration_seconds=1.2, plan_id=P_DONE),
        AuditEntry(id=ident("audit001", 3), time=T0 + dt.timedelta(minutes=3), os_user="kerub",
                   action="command", target="ksm", host_id=H2, command="echo 1 > /sys/kernel/mm/ksm/run",
                   exit_code=0, duration_seconds=0.1, plan_id=P_KSM),
        AuditEntry(id=ident("audit001", 4), time=T0 + dt.timedelta(minutes=4), os_user="kerub",
                   action="command", target="discovery", host_id=H3, command="lscpu -J", exit_code=255,
                   duration_seconds=10.0, output_tail="ssh: connect to host 10.0.0.13 port 22: Connection refused",
                   outcome="failed"),
        Event(id=ident("event001", 1), time=T0, type="host-up", host_id=H1, message="h1 is up"),
        Event(id=ident("event001", 2), time=T0 + dt.timedelta(minutes=1), type="host-down",
              severity=EventSeverity.error, host_id=H3, message="h3: connection refused"),
        Event(id=ident("event001", 3), time=T0 + dt.timedelta(minutes=2), type="violation",
              severity=EventSeverity.warning, target=DB1,
              message="availability:up@dealbreaker: db1 is down"),
        Event(id=ident("event001", 4), time=T0 + dt.timedelta(minutes=2), type="violation",
              severity=EventSeverity.warning, target=D_DB1,
              message="storage-redundancy:2,out-of-box@dealbreaker: 1 copy on 1 host, 2 wanted"),
        # The fixture's audit and events date from T0 (2024): kept whatever today's date, or the history's
        # retention (a year, 90 days) would remove them at the controller's start.
        Settings(history={"audit_days": 36500, "event_days": 36500}),
    ]
    return docs


def build_fleet(data_dir: Path, *, readonly: bool = False, empty: bool = False) -> Controller:
    """A controller on ``data_dir`` holding the fleet (store open, not started: the app starts it)."""
    writer = Controller(data_dir)
    store = writer.open_store()
    if not empty:
        store.put_many(fleet_documents())
    store.close()
    writer.store = None
    controller = Controller(data_dir, readonly=readonly)
    controller.open_store()
    return controller


def sample_series(host_id: str, total_gib: int, count: int = 30, start: dt.datetime = T0) -> list[HostDynamic]:
    """HostDynamic documents every 10 s with a deterministic wave of CPU and memory use."""
    out = []
    for n in range(count):
        idle = 90 - (n * 7) % 80
        used = total_gib * (0.3 + ((n * 3) % 10) / 20)
        out.append(host_dynamic(host_id, float(idle), used, total_gib, when=start + dt.timedelta(seconds=10 * n),
                                ksm_run=host_id == H2))
    return out
