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
    Fence,
    FileAllocation,
    Host,
    HostCapabilities,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    HypervisorInfo,
    IscsiTarget,
    KsmState,
    LvmAllocation,
    MemoryDevice,
    OsInfo,
    PhysicalVolumeInfo,
    PowerManagement,
    Settings,
    StorageCapability,
    StorageTechnology,
    ThinPool,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.planner.state import OperationalState

GIB = 1 << 30
MIB = 1 << 20
NOW = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)


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
             memory_used: int | None = None, tools: dict[str, bool] | None = None, threads_per_core: int = 1,
             ipmi: str | None = None, noecc: bool = False, pvs: list[tuple[int, int]] | None = None,
             fenced: str | None = None) -> str:
        hid = host_id(name)
        if storage is None and pvs:
            # vg0 on several PVs (/dev/sda, /dev/sdb, ...), each (size, bytes in use)
            volumes = [PhysicalVolumeInfo(name=f"/dev/sd{chr(ord('a') + i)}", size_bytes=size, free_bytes=size - used,
                                          disk=f"/dev/sd{chr(ord('a') + i)}") for i, (size, used) in enumerate(pvs)]
            storage = [StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0",
                                         size_bytes=sum(p.size_bytes for p in volumes),
                                         free_bytes=sum(p.free_bytes for p in volumes),
                                         device=volumes[0].name if len(volumes) == 1 else None, pvs=volumes,
                                         read_mbps=500, write_mbps=400)]
        if storage is None:
            storage = [StorageCapability(id="lvm:vg0", technology=StorageTechnology.lvm, name="vg0",
                                         size_bytes=vg_free, free_bytes=vg_free, device="/dev/sda",
                                         read_mbps=500, write_mbps=400)]
        caps = HostCapabilities(
            os=OsInfo(id=os[0], version_id=os[1], pretty_name=f"{os[0]} {os[1]}", hostname=name),
            cpu=CpuInfo(architecture=arch, cpus=cpus, sockets=1, cores_per_socket=max(cpus // threads_per_core, 1),
                        threads_per_core=threads_per_core,
                        max_mhz=max_mhz, flags=list(flags), caches=[CpuCache(name="L2", size_kib=l2_kib), CpuCache(name="L3", size_kib=l3_kib)]
                        + ([CpuCache(name="L1i", size_kib=l1i_kib)] if l1i_kib else [])),
            memory_bytes=memory,
            dmi=dmi if dmi is not None else DmiInfo(
                system_manufacturer="Dell Inc.", chassis_manufacturer="Dell Inc.", power_supplies=2, ecc=not noecc,
                memory_devices=[MemoryDevice(locator="DIMM0", size_bytes=memory, speed_mts=3200, ecc=not noecc)]),
            storage=storage,
            hypervisor=HypervisorInfo(libvirt_version="9.0.0", kvm=True, domain_types=["kvm", "qemu"],
                                      guest_arches=[arch]),
            ksm=True,
            tools=tools if tools is not None else {"lvm": True, "qemu-img": True, "zfs": False, "gvinum": False},
        )
        index = len([k for k in self.docs if k[0] == "host"]) + 2
        self._put(Host(id=hid, name=name, address=address or f"127.0.0.{index}", dedicated=dedicated,
                       recycling=recycling, end_of_life=end_of_life, capabilities=caps,
                       power=PowerManagement(wol_mac=wol_mac, ipmi_address=ipmi)))
        fence = Fence(method=fenced, by="admin", at=NOW) if fenced else None  # type: ignore[arg-type]
        self._put(HostDynamic(id=hid, status=status, fence=fence, ksm=ksm or KsmState(available=True),
                              cpu_temperature=temperature,
                              failing_devices=failing or [], storage_free=storage_free or {},
                              memory_used=memory_used, memory_free=None if memory_used is None else memory - memory_used))
        self._put(config.model_copy(update={"id": hid}) if config is not None else HostConfiguration(id=hid))
        return hid

    def vm(self, name: str, *, cpus: int = 1, memory: int = 1 * GIB, on: str | None = None,
           status: VmStatus = VmStatus.up, expect: list[str] = (), disks: list[str] = (),  # type: ignore[assignment]
           arch: str = "x86_64", cpu_percent: float | None = None, memory_min: int | None = None,
           memory_given: int | None = None) -> str:
        vid = vm_id(name)
        from kerub_tui.core.models import DiskLink

        self._put(VirtualMachine(
            id=vid, name=name, cpus=cpus, memory_min=memory if memory_min is None else memory_min, memory_max=memory,
            architecture=arch,
            disks=[DiskLink(disk_id=disk_id(d)) for d in disks],
            expectations=[parse_spec(s, "vm", resolve=vm_id) for s in expect],
        ))
        if on is not None:
            self._put(VirtualMachineDynamic(id=vid, host_id=host_id(on), status=status, cpu_percent=cpu_percent,
                                            memory_given=memory_given))
        else:
            self.docs.pop(("vm-dynamic", vid), None)
        return vid

    def disk(self, name: str, *, size: int = 10 * GIB, on: list[str] = (), expect: list[str] = (),  # type: ignore[assignment]
             read_only: bool = False, file: bool = False, cloned_from: str | None = None,
             thin: dict[str, str] | None = None) -> str:
        did = disk_id(name)
        self._put(VirtualStorageDevice(id=did, name=name, size=size, read_only=read_only,
                                       expectations=[parse_spec(s, "disk", resolve=disk_id) for s in expect]))
        allocations: list[Any] = []
        for host in on:
            # "h2*": a point-in-time copy taken for redundancy a day before NOW (not kept in sync)
            copied_at = NOW - dt.timedelta(days=1) if host.endswith("*") else None
            host = host.rstrip("*")
            if file:
                allocations.append(FileAllocation(host_id=host_id(host), capability_id="file:/var/lib/kerub",
                                                  path=f"/var/lib/kerub/kerub-{name}.qcow2", format="qcow2"))
            else:
                allocations.append(LvmAllocation(host_id=host_id(host), capability_id="lvm:vg0", vg="vg0",
                                                 lv=f"kerub-{name}", thin_pool=(thin or {}).get(host),
                                                 copied_at=copied_at))
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


# --- readable tables --------------------------------------------------------------------------------


def _rows(table: str) -> list[dict[str, str]]:
    """Whitespace-separated columns under a header line; the last column takes the rest of the line;
    '-' is an empty cell."""
    lines = [line.strip() for line in table.strip().splitlines() if line.strip() and not line.strip().startswith("#")]
    if not lines:
        return []
    header = lines[0].split()
    rows = []
    for line in lines[1:]:
        cells = line.split(None, len(header) - 1)
        cells += [""] * (len(header) - len(cells))
        rows.append({k: ("" if v == "-" else v) for k, v in zip(header, cells)})
    return rows


def _size(text: str) -> int:
    from kerub_tui.core.sizes import parse_size

    return parse_size(text)


def from_tables(hosts: str = "", vms: str = "", disks: str = "") -> Fleet:
    """A fleet from three readable tables (see tests/unit/planner/test_scenarios.py)."""
    f = Fleet()
    exports: list[tuple[str, str, str]] = []  # (host, disk, reader): nfs= options, once every host has its address
    for row in _rows(hosts):
        kw: dict[str, Any] = {}
        if row.get("memory"):
            kw["memory"] = _size(row["memory"])
        if row.get("cpus"):
            kw["cpus"] = int(row["cpus"])
        if row.get("arch"):
            kw["arch"] = row["arch"]
        if "flags" in row:
            kw["flags"] = tuple(x for x in row["flags"].split(",") if x)
        if row.get("status"):
            kw["status"] = HostStatus(row["status"])
        for option in (row.get("options") or "").split():
            key, _, value = option.partition("=")
            if key in ("recycling", "dedicated"):
                kw[key] = True
            elif key == "wol":
                kw["wol_mac"] = value or "52:54:00:00:00:01"
            elif key == "ipmi":
                kw["ipmi"] = value or "10.0.0.1"
            elif key == "fenced":  # fenced=admin|ipmi|no-guest: a host that is not up, known to run no guest
                kw["fenced"] = value or "admin"
            elif key == "noecc":  # memory without ECC
                kw["noecc"] = True
            elif key == "smt":  # smt=2: two hardware threads per core (cpus counts the threads)
                kw["threads_per_core"] = int(value or 2)
            elif key == "eol":
                kw["end_of_life"] = dt.date.fromisoformat(value)
            elif key == "temp":
                kw["temperature"] = float(value)
            elif key == "failing":
                kw["failing"] = value.split(",")
            elif key == "vg":
                kw["vg_free"] = _size(value)
            elif key == "pvs":  # pvs=SIZE[/USED],...: vg0 on these PVs (/dev/sda, /dev/sdb, ...)
                kw["pvs"] = [(_size(size), _size(used) if used else 0)
                             for size, _, used in (pv.partition("/") for pv in value.split(","))]
            elif key == "os":
                kw["os"] = tuple(value.split(",", 1))
            elif key == "ksm":
                # ksm=on,full_scans,pages_sharing or ksm=off,full_scans,pages_sharing
                run, scans, sharing = value.split(",")
                kw["ksm"] = KsmState(available=True, run=run == "on", full_scans=int(scans),
                                     pages_sharing=int(sharing), pages_shared=max(1, int(sharing) // 10))
            elif key == "used":
                kw["memory_used"] = _size(value)
            elif key == "iscsi":  # iscsi=DISK[:TID]: the host shares DISK's LV vg0/kerub-DISK as an iSCSI target
                from kerub_tui.hosts.iscsi import disk_iqn

                disk, _, tid = value.partition(":")
                kw.setdefault("iscsi_targets", []).append(IscsiTarget(
                    iqn=disk_iqn(disk_id(disk)), tid=int(tid or 1), lun_path=f"/dev/vg0/kerub-{disk}",
                    disk_id=disk_id(disk)))
            elif key == "nfs":  # nfs=DISK@READER: ganesha exports DISK's directory (/var/lib/kerub) to READER alone
                disk, _, reader = value.partition("@")
                exports.append((row["name"], disk, reader))
            elif key == "pool":  # pool=NAME:SIZE[:USED]: a thin pool kerub-tui made on vg0 (USED: as monitored)
                name, size, *used = value.split(":")
                pools = kw.setdefault("thin_pools", [])
                pools.append(ThinPool(vg="vg0", name=name, size_bytes=_size(size)))
                if used:
                    kw.setdefault("storage_free", {})[f"thin:vg0/{name}"] = _size(size) - _size(used[0])
            else:
                raise ValueError(f"unknown host option {option!r}")
        pools = kw.pop("thin_pools", None)
        targets = kw.pop("iscsi_targets", None)
        if pools or targets:
            kw["config"] = HostConfiguration(thin_pools=pools or [], iscsi_targets=targets or [])
        f.host(row["name"], **kw)
    for name, disk, reader in exports:
        from kerub_tui.core.models import NfsExport

        config = f.docs[("host-config", host_id(name))]
        address = f.docs[("host", host_id(reader))].address
        f.put(config.evolve(exports=[*config.exports, NfsExport(path="/var/lib/kerub", clients=address,
                                                                 server="ganesha", disk_id=disk_id(disk))]))
    for row in _rows(vms):
        # memory: SIZE, or MIN:MAX (a range: the balloon), or MIN:MAX=GIVEN (placed with GIVEN)
        memory, _, given = (row.get("memory") or "1G").partition("=")
        low, _, high = memory.partition(":")
        f.vm(row["name"], memory=_size(high or low), memory_min=_size(low) if high else None,
             memory_given=_size(given) if given else None, cpus=int(row.get("cpus") or 1),
             on=row.get("on") or None, status=VmStatus(row.get("status") or "up"),
             disks=[d for d in (row.get("disks") or "").split(",") if d], expect=(row.get("expect") or "").split())
    for row in _rows(disks):
        # on: HOST[,HOST...], HOST:POOL for a thin LV in that pool
        on = [h for h in (row.get("on") or "").split(",") if h]
        f.disk(row["name"], size=_size(row.get("size") or "10G"), on=[h.split(":")[0] for h in on],
               file=row.get("file") == "yes",
               thin={h.split(":")[0]: h.split(":")[1] for h in on if ":" in h},
               expect=(row.get("expect") or "").split())
    return f


def full_until_b_moves() -> Fleet:
    """Two 32G hosts where pending d (16G) fits only once b (8G) moves from h1 to h2: the room-making case."""
    return from_tables(hosts="""
        name memory
        h1   32G
        h2   32G
    """, vms="""
        name memory on expect
        a    12G    h1 availability:up@dealbreaker
        b    8G     h1 availability:up@dealbreaker
        c    20G    h2 availability:up@dealbreaker
        d    16G    -  availability:up@dealbreaker
    """)
