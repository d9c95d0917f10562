"""Machines a simulated host can be: the facts discovery would find on real hardware of that kind.

Each profile is a whole host as ``discover`` reports one: CPU model, topology, flags and caches as
``lscpu`` prints them, memory and DIMMs as ``dmidecode`` does, block devices, an LVM volume group and
the image directory's filesystem, libvirt's capabilities, the tools installed. The numbers are those
of machines people run KVM on, from a homelab mini PC to a storage server and an Arm server, so the
planner meets the variety it meets in a real fleet: architectures, CPU flags, memory from 64 GiB to
1 TiB, fast and slow storage.
"""

from __future__ import annotations

from dataclasses import dataclass

from kerub_tui.core.models import (
    BlockDevice,
    CpuCache,
    CpuInfo,
    DmiInfo,
    Filesystem,
    HostCapabilities,
    HypervisorInfo,
    MemoryDevice,
    OsInfo,
    StorageCapability,
    StorageTechnology,
)
from kerub_tui.hosts.facts import IMAGES_DIR

GIB = 1 << 30
TIB = 1 << 40

# lscpu's flag lists, cut to what guests and the planner's expectations look at
_INTEL_SERVER = ["fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca",
                 "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "ss", "ht", "syscall", "nx",
                 "pdpe1gb", "rdtscp", "lm", "constant_tsc", "pni", "pclmulqdq", "vmx", "ssse3", "fma", "cx16",
                 "pcid", "sse4_1", "sse4_2", "x2apic", "movbe", "popcnt", "aes", "xsave", "avx", "f16c", "rdrand",
                 "lahf_lm", "abm", "3dnowprefetch", "ept", "vpid", "fsgsbase", "bmi1", "hle", "avx2", "smep",
                 "bmi2", "erms", "invpcid", "rtm", "avx512f", "avx512dq", "rdseed", "adx", "smap", "clflushopt",
                 "clwb", "avx512cd", "avx512bw", "avx512vl", "xsaveopt", "xsavec", "pku", "ospke", "avx512_vnni",
                 "md_clear", "flush_l1d", "arch_capabilities"]  # fmt: skip
_INTEL_CLIENT = [f for f in _INTEL_SERVER if not f.startswith("avx512") and f not in ("hle", "rtm")] + [
    "avx512f", "avx512vl", "avx512_vbmi2", "gfni", "vaes", "vpclmulqdq", "sha_ni"]  # fmt: skip
_INTEL_OLD = [f for f in _INTEL_SERVER if not f.startswith("avx512") and f not in (
    "avx2", "bmi1", "bmi2", "fma", "movbe", "hle", "rtm", "invpcid", "rdseed", "adx", "smap", "clflushopt", "clwb",
    "pku", "ospke", "xsavec", "abm", "3dnowprefetch")]  # fmt: skip
_AMD = ["fpu", "vme", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge", "mca", "cmov",
        "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2", "ht", "syscall", "nx", "mmxext", "fxsr_opt",
        "pdpe1gb", "rdtscp", "lm", "constant_tsc", "pni", "pclmulqdq", "monitor", "ssse3", "fma", "cx16", "sse4_1",
        "sse4_2", "x2apic", "movbe", "popcnt", "aes", "xsave", "avx", "f16c", "rdrand", "lahf_lm", "svm",
        "cr8_legacy", "abm", "sse4a", "misalignsse", "3dnowprefetch", "fsgsbase", "bmi1", "avx2", "smep", "bmi2",
        "erms", "invpcid", "rdseed", "adx", "smap", "clflushopt", "clwb", "sha_ni", "xsaveopt", "xsavec", "npt",
        "nrip_save", "vaes", "vpclmulqdq", "rdpid"]  # fmt: skip
_ARM = ["fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp", "cpuid",
        "asimdrdm", "lrcpc", "dcpop", "asimddp", "ssbs"]  # fmt: skip


@dataclass(frozen=True)
class Profile:
    """One kind of machine. ``speed`` scales how long its storage takes (1.0 = an SSD)."""

    name: str
    description: str
    vendor: str
    product: str
    cpu_model: str
    cpu_vendor: str
    architecture: str
    sockets: int
    cores_per_socket: int
    threads_per_core: int
    max_mhz: float
    flags: tuple[str, ...]
    l2_kib: int
    l3_kib: int
    memory: int
    dimms: int
    dimm_speed: int
    ecc: bool
    power_supplies: int
    disk_model: str
    disk_size: int
    rotational: bool
    vg: str
    read_mbps: int
    write_mbps: int
    os_pretty: str = "Debian GNU/Linux 12 (bookworm)"
    os_version: str = "12"
    kernel: str = "6.1.0-26-amd64"
    libvirt: str = "9.0.0"
    # serves its disks to other hosts (issue 16): tgtd for iSCSI, nfs-ganesha for NFS (the storage server)
    shares: bool = False

    @property
    def cpus(self) -> int:
        return self.sockets * self.cores_per_socket * self.threads_per_core

    @property
    def storage_speed(self) -> float:
        return self.write_mbps / 1000.0

    def capabilities(self, hostname: str) -> HostCapabilities:
        """What discovery reports for a machine of this profile named ``hostname``."""
        disk = "/dev/sda" if self.rotational else "/dev/nvme0n1"
        root = f"{disk}1" if self.rotational else f"{disk}p1"
        lvm_pv = f"{disk}3" if self.rotational else f"{disk}p3"
        root_size = 200 * GIB
        images_size = min(2 * TIB, self.disk_size // 4)
        vg_size = self.disk_size - root_size - images_size
        emulator = "/usr/bin/qemu-system-aarch64" if self.architecture == "aarch64" else "/usr/bin/qemu-system-x86_64"
        dimm = self.memory // self.dimms
        return HostCapabilities(
            os=OsInfo(id="debian", version_id=self.os_version, pretty_name=self.os_pretty,
                      kernel=self.kernel if self.architecture == "x86_64" else self.kernel.replace("amd64", "arm64"),
                      hostname=hostname),
            cpu=CpuInfo(architecture=self.architecture, model=self.cpu_model, vendor=self.cpu_vendor, cpus=self.cpus,
                        sockets=self.sockets, cores_per_socket=self.cores_per_socket,
                        threads_per_core=self.threads_per_core, max_mhz=self.max_mhz, flags=list(self.flags),
                        caches=[CpuCache(name="L2", size_kib=self.l2_kib), CpuCache(name="L3", size_kib=self.l3_kib)]),
            memory_bytes=self.memory,
            dmi=DmiInfo(system_manufacturer=self.vendor, system_product=self.product, chassis_manufacturer=self.vendor,
                        chassis_type="Rack Mount Chassis" if self.power_supplies > 1 else "Mini PC",
                        power_supplies=self.power_supplies, ecc=self.ecc,
                        memory_devices=[MemoryDevice(locator=f"DIMM {chr(65 + n // 8)}{n % 8 + 1}", size_bytes=dimm,
                                                     speed_mts=self.dimm_speed, type="DDR4", ecc=self.ecc)
                                        for n in range(self.dimms)]),
            block_devices=[
                BlockDevice(name=disk.removeprefix("/dev/"), path=disk, type="disk", size_bytes=self.disk_size,
                            rotational=self.rotational, model=self.disk_model),
                BlockDevice(name=root.removeprefix("/dev/"), path=root, type="part", size_bytes=root_size,
                            rotational=self.rotational, mountpoint="/", fstype="ext4"),
                BlockDevice(name=lvm_pv.removeprefix("/dev/"), path=lvm_pv, type="part", size_bytes=vg_size,
                            rotational=self.rotational, fstype="LVM2_member"),
            ],
            filesystems=[
                Filesystem(mountpoint="/", source=root, fstype="ext4", size_bytes=root_size, free_bytes=root_size // 2),
                Filesystem(mountpoint="/var/lib/kerub-tui", source=f"/dev/mapper/{self.vg}-images", fstype="xfs",
                           size_bytes=images_size, free_bytes=images_size),
            ],
            storage=[
                StorageCapability(id=f"lvm:{self.vg}", technology=StorageTechnology.lvm, name=self.vg,
                                  size_bytes=vg_size, free_bytes=vg_size, read_mbps=self.read_mbps,
                                  write_mbps=self.write_mbps, device=disk),
                StorageCapability(id=f"file:{IMAGES_DIR}", technology=StorageTechnology.file, name=IMAGES_DIR,
                                  size_bytes=images_size, free_bytes=images_size, read_mbps=self.read_mbps,
                                  write_mbps=self.write_mbps, device=disk),
            ],
            hypervisor=HypervisorInfo(libvirt_version=self.libvirt, kvm=True, domain_types=["kvm", "qemu"],
                                      guest_arches=[self.architecture], emulator=emulator),
            ksm=True,
            tools={"lvm": True, "qemu-img": True, "virsh": True, "dmidecode": True, "smartctl": True,
                   "ethtool": True, "zfs": False, "zpool": False, "tgtd": self.shares, "tgtadm": self.shares,
                   "targetcli": False, "exportfs": False, "ganesha.nfsd": self.shares, "gvinum": False, "ipmitool": self.power_supplies > 1},
        )


PROFILES: dict[str, Profile] = {p.name: p for p in (
    Profile("mini", "homelab mini PC", "Intel Corporation", "NUC11TNHi7", "11th Gen Intel(R) Core(TM) i7-1165G7 @ 2.80GHz",
            "GenuineIntel", "x86_64", 1, 4, 2, 4700.0, tuple(_INTEL_CLIENT), 5120, 12288, 64 * GIB, 2, 3200, False, 1,
            "Samsung SSD 980 PRO 1TB", 1 * TIB, False, "nvme", 3000, 2500),
    Profile("r640", "1U dual-socket server", "Dell Inc.", "PowerEdge R640", "Intel(R) Xeon(R) Gold 6230R CPU @ 2.10GHz",
            "GenuineIntel", "x86_64", 2, 26, 2, 4000.0, tuple(_INTEL_SERVER), 53248, 73216, 384 * GIB, 12, 2933, True, 2,
            "Dell Ent NVMe P5600 MU U.2 3.2TB", 3 * TIB + 200 * GIB, False, "ssd", 3500, 2000),
    Profile("epyc", "1U single-socket AMD server", "Supermicro", "AS -1114S-WN10RT", "AMD EPYC 7543P 32-Core Processor",
            "AuthenticAMD", "x86_64", 1, 32, 2, 3700.0, tuple(_AMD), 16384, 262144, 512 * GIB, 8, 3200, True, 2,
            "Micron_7450_MTFDKCB7T6TFR", 7 * TIB, False, "nvme", 6800, 5300),
    Profile("storage", "2U storage server", "HPE", "ProLiant DL380 Gen10", "Intel(R) Xeon(R) Silver 4214 CPU @ 2.20GHz",
            "GenuineIntel", "x86_64", 2, 12, 2, 3200.0, tuple(_INTEL_SERVER), 24576, 33792, 192 * GIB, 6, 2400, True, 2,
            "HPE MB016000JWZHE (RAID 6, 4x16TB)", 32 * TIB, True, "hdd", 450, 300, shares=True),
    Profile("legacy", "older dual-socket server", "Dell Inc.", "PowerEdge R620", "Intel(R) Xeon(R) CPU E5-2650 v2 @ 2.60GHz",
            "GenuineIntel", "x86_64", 2, 8, 2, 3400.0, tuple(_INTEL_OLD), 4096, 40960, 128 * GIB, 8, 1600, True, 2,
            "INTEL SSDSC2BB800G4", 800 << 30, False, "ssd", 500, 460),
    Profile("arm", "Arm server", "GIGABYTE", "R272-P30", "Neoverse-N1", "ARM", "aarch64", 1, 80, 1, 3000.0,
            tuple(_ARM), 81920, 32768, 256 * GIB, 8, 3200, True, 2,
            "SAMSUNG MZQL23T8HCLS-00A07", 3 * TIB + 800 * GIB, False, "nvme", 6900, 4100),
)}  # fmt: skip


def profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"no host profile {name!r}; there are {', '.join(sorted(PROFILES))}") from None


__all__ = ["PROFILES", "Profile", "profile"]
