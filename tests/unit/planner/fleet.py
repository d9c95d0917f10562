"""A small builder of fleets for planner tests and benchmarks: hosts, VMs and disks as documents.

Ids are readable and stable ("host-h1", "vm-web1", "disk-d1") so plans can be compared across runs.
Expectations are written as the command line writes them (SPEC strings), names resolved to ids.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kerub_tui.core.expectations import parse_spec
from kerub_tui.core.models import (
    CpuCache,
    CpuInfo,
    DmiInfo,
    Document,
    FileAllocation,
    Host,
    HostCapabilities,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    HypervisorInfo,
    KsmState,
    LvmAllocation,
    MemoryDevice,
    OsInfo,
    PowerManagement,
    Settings,
    StorageCapability,
    StorageTechnology,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.state import OperationalState

GIB = 1 << 30
MIB = 1 << 20
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.timezone.utc)


def host_id(name: str) -> str:
    return f"host-{name}"


def vm_id(name: str) -> str:
    return f"vm-{name}"


def disk_id(name: str) -> str:
    return f"disk-{name}"


class Fleet:
    def __init__(self) -> None:
        self.docs: dict[tuple[str, str], Document] = {}
        self.settings = Settings()

    def _put(self, doc: Document) -> None:
        self.docs[(doc.kind, doc.id)] = doc

    def host(self, name: str, *, memory: int = 16 * GIB, cpus: int = 8, arch: str = "x86_64",
             flags: tuple[str, ...] = ("vmx", "sse4_2"), max_mhz: float | None = 3000.0,
             status: HostStatus = HostStatus.up, storage: list[StorageCapability] | None = None,
             vg_free: int = 100 * GIB, dmi: DmiInfo | None = None, os: tuple[str, str] = ("debian", "12"),
             recycling: bool = False, dedicated: bool = False, end_of_life: dt.date | None = None,
             wol_mac: str | None = None, ksm: KsmState | None = None, temperature: float | None = None,
             failing: list[str] | None = None, config: HostConfiguration | None = None,
             storage_free: dict[str, int] | None = None, l3_kib: int = 8192, l2_kib: int = 1024, l1i_kib: int | None = None, address: str | None = None,
             memory_used: int | None = None, tools: dict[str, bool] | None = None) -> str:
        hid = host_id(name)
        if storage is None:
            storage = [StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0",
                                         size_bytes=vg_free, free_bytes=vg_free, device="/dev/sda",
                                         read_mbps=500, write_mbps=400)]
        caps = HostCapabilities(
            os=OsInfo(id=os[0], version_id=os[1], pretty_name=f"{os[0]} {os[1]}", hostname=name),
            cpu=CpuInfo(architecture=arch, cpus=cpus, sockets=1, cores_per_socket=cpus, threads_per_core=1,
                        max_mhz=max_mhz, flags=list(flags), caches=[CpuCache(name="L2", size_kib=l2_kib), CpuCache(name="L3", size_kib=l3_kib)]
                        + ([CpuCache(name="L1i", size_kib=l1i_kib)] if l1i_kib else [])),
            memory_bytes=memory,
            dmi=dmi if dmi is not None else DmiInfo(
                system_manufacturer="Dell Inc.", chassis_manufacturer="Dell Inc.", power_supplies=2, ecc=True,
                memory_devices=[MemoryDevice(locator="DIMM0", size_bytes=memory, speed_mts=3200, ecc=True)]),
            storage=storage,
            hypervisor=HypervisorInfo(libvirt_version="9.0.0", kvm=True, domain_types=["kvm", "qemu"],
                                      guest_arches=[arch]),
            ksm=True,
            tools=tools if tools is not None else {"lvm": True, "qemu-img": True, "zfs": False, "gvinum": False},
        )
        index = len([k for k in self.docs if k[0] == "host"]) + 2
        self._put(Host(id=hid, name=name, address=address or f"127.0.0.{index}", dedicated=dedicated,
                       recycling=recycling, end_of_life=end_of_life, capabilities=caps,
                       power=PowerManagement(wol_mac=wol_mac)))
        self._put(HostDynamic(id=hid, status=status, ksm=ksm or KsmState(available=True), cpu_temperature=temperature,
                              failing_devices=failing or [], storage_free=storage_free or {},
                              memory_used=memory_used, memory_free=None if memory_used is None else memory - memory_used))
        self._put(config.model_copy(update={"id": hid}) if config is not None else HostConfiguration(id=hid))
        return hid

    def vm(self, name: str, *, cpus: int = 1, memory: int = 1 * GIB, on: str | None = None,
           status: VmStatus = VmStatus.up, expect: list[str] = (), disks: list[str] = (),  # type: ignore[assignment]
           arch: str = "x86_64", cpu_percent: float | None = None) -> str:
        vid = vm_id(name)
        from kerub_tui.core.models import DiskLink

        self._put(VirtualMachine(
            id=vid, name=name, cpus=cpus, memory_min=memory, memory_max=memory, architecture=arch,
            disks=[DiskLink(disk_id=disk_id(d)) for d in disks],
            expectations=[parse_spec(s, "vm", resolve=vm_id) for s in expect],
        ))
        if on is not None:
            self._put(VirtualMachineDynamic(id=vid, host_id=host_id(on), status=status, cpu_percent=cpu_percent))
        else:
            self.docs.pop(("vm-dynamic", vid), None)
        return vid

    def disk(self, name: str, *, size: int = 10 * GIB, on: list[str] = (), expect: list[str] = (),  # type: ignore[assignment]
             read_only: bool = False, file: bool = False, cloned_from: str | None = None) -> str:
        did = disk_id(name)
        self._put(VirtualStorageDevice(id=did, name=name, size=size, read_only=read_only,
                                       expectations=[parse_spec(s, "disk", resolve=disk_id) for s in expect]))
        allocations: list[Any] = []
        for host in on:
            if file:
                allocations.append(FileAllocation(host_id=host_id(host), capability_id="file:/var/lib/kerub",
                                                  path=f"/var/lib/kerub/kerub-{name}.qcow2", format="qcow2"))
            else:
                allocations.append(LvmAllocation(host_id=host_id(host), capability_id="lvm:vg0", vg="vg0",
                                                 lv=f"kerub-{name}"))
        self.docs.pop(("disk-dynamic", did), None)
        if allocations or cloned_from:
            self._put(VirtualStorageDeviceDynamic(id=did, allocations=allocations,
                                                  cloned_from=disk_id(cloned_from) if cloned_from else None))
        return did

    def put(self, doc: Document) -> None:
        self._put(doc)

    def documents(self) -> list[Document]:
        return [self.docs[k] for k in sorted(self.docs)]

    def state(self, *, now: dt.datetime = NOW, **optimisation: Any) -> OperationalState:
        settings = self.settings
        if optimisation:
            settings = settings.evolve(optimisation={**settings.optimisation.model_dump(), **optimisation})
        return OperationalState.from_documents(self.documents(), now=now, settings=settings)
