"""One simulated machine: its own state (domains, LVs, image files, KSM), a shell that answers the
commands kerub-tui's builders write, and libvirt operations, each taking a realistic time.

Nothing runs anywhere. The machine keeps what a host would keep and answers in the formats the real
tools print (``lvs --reportformat json``, ``qemu-img info --output=json``, the KSM sysfs lines,
``vmstat``), so everything above it, the monitor's parsers, the executor's read-backs, the planner,
works as it does with real hosts. It refuses what a host refuses (no space, no such volume, not
enough memory to start a guest) with the tools' own words, and when ``failure_rate`` is set a
changing command now and then fails as real ones occasionally do.

A command or operation that meets a machine going down fails like a dropped SSH channel (exit 255).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from kerub_tui.core.models import (
    FileAllocation,
    HostCapabilities,
    KsmState,
    LvmAllocation,
    StorageTechnology,
    ThinPool,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.hosts import ksm
from kerub_tui.hosts.facts import IMAGES_DIR
from kerub_tui.hosts.iscsi import SECRET_ARG, SECRET_STDIN
from kerub_tui.hosts.kvm import parse_domain_xml
from kerub_tui.hosts.libvirt_link import DomainEvent, DomainState
from kerub_tui.hosts.operations import EXIT_UNREACHABLE, OperationResult
from kerub_tui.hosts.results import ProgressReport

MIB = 1 << 20
GIB = 1 << 30
EXTENT = 4 * MIB  # LVM's default extent size
BASE_MEMORY = 2 * GIB  # what the host OS, libvirtd and the page cache floor take
PAGE = 4096
MIGRATE_BYTES_PER_SECOND = 1.1 * GIB  # a 10 GbE link, as live migration sees it
CHAP_SCRIPT = SECRET_STDIN + " && "  # a command reading a CHAP secret on its standard input (hosts/iscsi)



@dataclass
class Timing:
    """How long simulated work takes: ``scale`` multiplies every duration (0 = at once, for tests),
    ``failure_rate`` is the chance a changing command fails."""

    scale: float = 1.0
    failure_rate: float = 0.0
    connect: float = 0.5  # ssh handshake and discovery
    boot: float = 45.0  # a recovered host: firmware, kernel, sshd

    def seconds(self, base: float) -> float:
        return max(0.0, base * self.scale)


class MachineDown(Exception):
    """The machine went down (or off the network) under a command."""


@dataclass
class Domain:
    vm_id: str
    name: str
    memory: int
    cpus: int
    status: str = "shut off"  # running, paused, shut off (libvirt's words)
    cpu_percent: float = 0.0
    rss_share: float = 0.7  # of memory the guest has touched
    xml: str | None = None  # the domain XML it started from (its network disks); None for a restored guest

    @property
    def vm_status(self) -> VmStatus:
        return {"running": VmStatus.up, "paused": VmStatus.paused}.get(self.status, VmStatus.down)

    def state(self, event: DomainEvent, *, migrating: bool = False) -> DomainState:
        status = None if event is DomainEvent.undefined else self.vm_status
        return DomainState(self.vm_id, self.name, event, status, migrating=migrating, memory_max=self.memory)


@dataclass
class Volume:
    size: int
    kind: str = "linear"  # linear, thin-pool, thin, raid1
    pool: str | None = None
    mirrors: int = 0  # raid1: extra copies (each takes ``size`` of the VG)
    uuid: str = field(default_factory=lambda: _lvm_uuid())
    written: int | None = None  # a thin LV's data in its pool: none when just created, else 30 % of its size
    on: dict[str, int] = field(default_factory=dict)  # bytes on each PV (every copy; none for a thin LV)

    def data(self) -> int:
        return int(self.size * 0.3) if self.written is None else self.written


@dataclass
class Image:
    format: str
    size: int


_LAYOUT = {"thin-pool": "thin,pool", "thin": "thin,sparse", "raid1": "raid,raid1"}  # lvs' lv_layout


def _lvm_uuid() -> str:
    text = uuid.uuid4().hex
    return "-".join((text[:6], text[6:10], text[10:14], text[14:18], text[18:22], text[22:26], text[26:32]))


def _extents(size: int) -> int:
    return -(-size // EXTENT) * EXTENT


def _size(text: str) -> int:
    """LVM size arguments as kerub-tui writes them: whole bytes with a ``b`` suffix."""
    match = re.fullmatch(r"(\d+)b", text)
    if match is None:
        raise ValueError(f"Invalid argument for --size: {text}")
    return int(match.group(1))


class Machine:
    """A simulated host's state. ``on_domain`` hears every lifecycle change, as libvirt events go."""

    def __init__(self, name: str, capabilities: HostCapabilities, *, timing: Timing | None = None,
                 rng: random.Random | None = None) -> None:
        self.name = name
        self.capabilities = capabilities
        self.timing = timing or Timing()
        self.rng = rng or random.Random(name)
        self.up = True
        self.reachable = True
        self.domains: dict[str, Domain] = {}
        self.volume_groups: dict[str, int] = {
            s.name: s.size_bytes for s in capabilities.storage if s.technology is StorageTechnology.lvm}
        self.volumes: dict[str, dict[str, Volume]] = {vg: {} for vg in self.volume_groups}
        # each VG's PVs (as discovery listed them; else the one partition _pv names) and their sizes, and
        # what discovery saw in use on each: restored volumes are put where that use was
        self.pvs: dict[str, dict[str, int]] = {}
        self._claimed: dict[tuple[str, str], int] = {}
        self._pooled: set[str] = set()  # VGs whose PVs discovery did not list: one pool, raid1 copies anywhere
        for cap in capabilities.storage:
            if cap.technology is StorageTechnology.lvm:
                self.pvs[cap.name] = {p.name: p.size_bytes for p in cap.pvs} or {self._pv(): cap.size_bytes}
                self._claimed.update({(cap.name, p.name): p.used_bytes for p in cap.pvs})
                if not cap.pvs:
                    self._pooled.add(cap.name)
        self.vg_uuids: dict[str, str] = {}
        images = next((s for s in capabilities.storage if s.technology is StorageTechnology.file), None)
        self.images_size = images.size_bytes if images is not None else 0
        self.images_dir = images.name if images is not None else IMAGES_DIR  # its file storage's directory
        self.images: dict[str, Image] = {}
        self.ksm = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "pages_shared": 0, "pages_sharing": 0,
                    "pages_unshared": 0, "full_scans": 0}
        self.write_mbps = max((s.write_mbps or 0 for s in capabilities.storage), default=0) or 500
        self.on_domain: Callable[[DomainState], None] = lambda state: None
        self.on_storage: Callable[[], None] = lambda: None
        self.generation = 0  # bumped on every crash: work begun before it does not finish after
        self.peer_key: str | None = None  # the public half of /root/.ssh/kerub-peer, once made
        # shares (issue 16): tgtd's targets (tid -> IQN, backing store), nfs-ganesha's exports (id -> path),
        # the kernel server's exports (paths)
        self.iscsi_targets: dict[int, tuple[str, str]] = {}
        self.iscsi_acl: dict[int, list[str]] = {}  # the initiator addresses each target lets in (ALL: any)
        self.iscsi_accounts: dict[str, str] = {}  # tgtd's CHAP accounts: user -> password
        self.iscsi_bound: dict[int, list[str]] = {}  # the incoming accounts bound to each target
        self.libvirt_secrets: dict[str, str] = {}  # libvirt's secrets of usage type iscsi: usage -> value
        # where the machine is on the simulated network: its address (what a target's ACL names) and the
        # machine at another address (a portal qemu's initiator logs in to); None: network disks unchecked
        self.address = ""
        self.peer: Callable[[str], Machine | None] | None = None
        self.ganesha_exports: dict[int, str] = {}
        self.kernel_exports: set[str] = set()
        self._guest_tasks: set[asyncio.Task[None]] = set()  # guests powering off after a power button press

    # --- facts ----------------------------------------------------------------------------------

    @property
    def memory(self) -> int:
        return self.capabilities.memory_bytes

    @property
    def cpus(self) -> int:
        return max(1, self.capabilities.cpu.cpus)

    def closed(self) -> OperationResult:
        """What a command gets when the machine goes away under it: ssh's exit status and words."""
        return OperationResult(EXIT_UNREACHABLE, "", f"Connection to {self.name} closed by remote host.")

    def free_memory(self) -> int:
        """Memory a new guest may take: what the host keeps for itself is counted as the planner
        counts it (10 %, at most 1 GiB)."""
        return self.memory - min(GIB, self.memory // 10) - self.committed_memory()

    def committed_memory(self) -> int:
        return sum(d.memory for d in self.domains.values() if d.status != "shut off")

    def used_memory(self) -> int:
        guests = sum(int(d.memory * d.rss_share) for d in self.domains.values() if d.status != "shut off")
        shared = self.ksm["pages_sharing"] * PAGE
        return min(self.memory, BASE_MEMORY + max(0, guests - shared))

    def vg_free(self, vg: str) -> int:
        used = sum(v.size * (v.mirrors + 1) for v in self.volumes[vg].values() if v.kind != "thin")
        return max(0, self.volume_groups[vg] - used)

    def pv_free(self, vg: str, pv: str) -> int:
        return self.pvs[vg][pv] - sum(v.on.get(pv, 0) for v in self.volumes[vg].values())

    def _place(self, vg: str, size: int, copies: int = 1, *, avoid: tuple[str, ...] = (),
               prefer: bool = False) -> dict[str, int] | None:
        """Where LVM puts ``copies`` of ``size`` bytes: a linear volume fills the PVs in order (or, with
        ``prefer``, the PV where discovery saw that much in use), a raid1 puts each copy on a PV of its
        own, the roomiest first; None when it does not fit."""
        pvs = [pv for pv in sorted(self.pvs[vg]) if pv not in avoid]
        if vg in self._pooled and pvs:
            return {pvs[0]: size * copies} if self.pv_free(vg, pvs[0]) >= size * copies else None
        if copies > 1:
            roomy = sorted((pv for pv in pvs if self.pv_free(vg, pv) >= size), key=lambda pv: -self.pv_free(vg, pv))
            return {pv: size for pv in roomy[:copies]} if len(roomy) >= copies else None
        if prefer:
            claimed = [pv for pv in pvs if self._claimed.get((vg, pv), 0) >= size and self.pv_free(vg, pv) >= size]
            if claimed:
                pv = max(claimed, key=lambda p: (self._claimed[(vg, p)], p))
                self._claimed[(vg, pv)] -= size
                return {pv: size}
        on: dict[str, int] = {}
        left = size
        for pv in pvs:
            take = min(left, max(self.pv_free(vg, pv), 0))
            if take:
                on[pv] = take
                left -= take
        return on if left <= 0 else None

    def pvs_json(self) -> str:
        """``pvs --reportformat json --units b --nosuffix -o PVS_FIELDS`` as lvm prints it."""
        rows = [{"pv_name": pv, "vg_name": vg, "pv_uuid": _lvm_uuid(), "pv_attr": "a--", "pv_size": str(size),
                 "pv_free": str(max(self.pv_free(vg, pv), 0)), "dev_size": str(size + EXTENT),
                 "pe_start": "1048576"}
                for vg in sorted(self.pvs) for pv, size in sorted(self.pvs[vg].items())]
        return json.dumps({"report": [{"pv": rows}]}, indent=2) + "\n"

    def images_free(self) -> int:
        return max(0, self.images_size - sum(i.size for i in self.images.values()))

    def running(self) -> list[Domain]:
        return [d for d in self.domains.values() if d.status != "shut off"]

    # --- time and failure -------------------------------------------------------------------------

    async def spend(self, seconds: float, *, parts: int = 1, after: Callable[[int], None] | None = None) -> None:
        """Spend ``seconds`` (scaled); MachineDown when the machine went away meanwhile. In ``parts``
        equal parts, ``after(n)`` called after the n-th (1..parts) while the machine is still there
        (a migration's progress)."""
        if not (self.up and self.reachable):
            raise MachineDown()
        generation = self.generation
        delay = self.timing.seconds(seconds * self.rng.uniform(0.8, 1.25))
        for part in range(1, parts + 1):
            if delay:
                await asyncio.sleep(delay / parts)
            if not (self.up and self.reachable) or self.generation != generation:
                raise MachineDown()
            if after is not None:
                after(part)

    def _unlucky(self) -> bool:
        return self.timing.failure_rate > 0 and self.rng.random() < self.timing.failure_rate

    # --- the shell ------------------------------------------------------------------------------

    async def shell(self, command: str, on_stderr: Callable[[bytes], None] | None = None,
                    input: bytes | None = None) -> OperationResult:
        """Run ``command`` as the host's shell would, for the commands kerub-tui writes; ``on_stderr``
        sees its standard error as it is written (a copy's progress); ``input`` is its standard input."""
        try:
            if command.startswith(CHAP_SCRIPT):
                return await self._chap_script(command, input)
            if input is not None:  # the machine keeps no files (a cloud-init seed): only a CHAP secret is read
                return OperationResult(127, "", "a command with input is not simulated by the kerub-tui simulator")
            if command.startswith("if [ -r /sys/kernel/mm/ksm/run ]"):
                await self.spend(0.03)
                return self._ksm_read()
            if command.startswith("echo ") and "/sys/kernel/mm/ksm/" in command:
                await self.spend(0.03)
                return self._ksm_write(command)
            if command.startswith(("umask 077 && ", "if [ -f ")) and "/.ssh/" in command:
                return await self._ssh_files(command)
            if command.startswith("s=$(mktemp) && d=$(mktemp) && "):
                return await self._copy(command, on_stderr)
            if command.startswith(("if tgtadm ", "mkdir -p /etc/ganesha/", "{ grep -vxF -- '%include ")):
                return await self._share_script(command)
            try:
                words = shlex.split(command)
            except ValueError as error:
                return OperationResult(2, "", f"sh: 1: Syntax error: {error}")
            if not words:
                return OperationResult(0)
            handler = self._COMMANDS.get(words[0])
            if handler is None:
                return OperationResult(127, "", f"sh: 1: {words[0]}: not found (the kerub-tui simulator does not "
                                        f"simulate {words[0]})")
            return await handler(self, words)
        except MachineDown:
            return self.closed()
        except ValueError as error:  # an argument the tool would refuse
            return OperationResult(3, "", f"  {error}")

    # LVM

    async def _lvs(self, words: list[str]) -> OperationResult:
        await self.spend(0.08)
        vg = words[-1] if not words[-1].startswith("-") and "," not in words[-1] else None
        if vg is not None and vg not in self.volumes:
            return OperationResult(5, "", f'  Volume group "{vg}" not found\n  Cannot process volume group {vg}')
        return OperationResult(0, self.lvs_json(vg))

    async def _vgs(self, words: list[str]) -> OperationResult:
        await self.spend(0.08)
        return OperationResult(0, self.vgs_json())

    def lvs_json(self, vg_filter: str | None = None) -> str:
        """``lvs --reportformat json --units b --nosuffix -o LVS_FIELDS [VG]`` as lvm prints it."""
        rows = []
        for vg in sorted(self.volumes):
            if vg_filter is not None and vg != vg_filter:
                continue
            for name, volume in sorted(self.volumes[vg].items()):
                attr = {"thin-pool": "twi-a-tz--", "thin": "Vwi-a-tz--", "raid1": "rwi-a-r---"}.get(volume.kind,
                                                                                                    "-wi-a-----")
                used = ""
                if volume.kind == "thin-pool":
                    thin = sum(v.data() for v in self.volumes[vg].values() if v.pool == name)
                    used = f"{min(100.0, 100.0 * thin / volume.size):.2f}"
                rows.append({"lv_name": name, "vg_name": vg, "lv_uuid": volume.uuid, "lv_size": str(volume.size),
                             "lv_attr": attr, "lv_layout": _LAYOUT.get(volume.kind, volume.kind),
                             "segtype": volume.kind, "pool_lv": volume.pool or "", "origin": "",
                             "data_percent": used, "metadata_percent": "1.20" if used else "",
                             "devices": self._devices(name, volume)})
        return json.dumps({"report": [{"lv": rows}]}, indent=2) + "\n"

    def _devices(self, name: str, volume: Volume) -> str:
        if volume.kind == "thin":
            return ""
        if volume.kind == "raid1":
            return ",".join(f"{name}_rimage_{i}(0)" for i in range(volume.mirrors + 1))
        return ",".join(f"{pv}(0)" for pv in sorted(volume.on)) or f"{self._pv()}(0)"

    def vgs_json(self) -> str:
        rows = [{"vg_name": vg, "vg_uuid": self.vg_uuids.setdefault(vg, _lvm_uuid()), "vg_attr": "wz--n-",
                 "vg_size": str(size), "vg_free": str(self.vg_free(vg)), "vg_extent_size": str(EXTENT),
                 "pv_count": str(len(self.pvs[vg])), "lv_count": str(len(self.volumes[vg]))}
                for vg, size in sorted(self.volume_groups.items())]
        return json.dumps({"report": [{"vg": rows}]}, indent=2) + "\n"

    def findmnt_json(self) -> str:
        """``findmnt -J -b -o TARGET,SOURCE,FSTYPE,SIZE,AVAIL -T IMAGES_DIR``."""
        source = next((f for f in self.capabilities.filesystems if IMAGES_DIR.startswith(f.mountpoint)
                       and f.mountpoint != "/"), None)
        return json.dumps({"filesystems": [{
            "target": source.mountpoint if source else "/", "source": source.source if source else "/dev/root",
            "fstype": source.fstype if source else "ext4", "size": self.images_size, "avail": self.images_free(),
        }]}, indent=3) + "\n"

    def ksm_text(self) -> str:
        return self._ksm_read().stdout

    def restore_volume(self, vg: str, lv: str, size: int, pool: str | None, *, kind: str | None = None,
                       mirrors: int = 0) -> None:
        kind = kind or ("thin" if pool else "raid1" if mirrors else "linear")
        size = _extents(size) if size else EXTENT
        on = {} if kind == "thin" else (self._place(vg, size, mirrors + 1, prefer=True)
                                        or {next(iter(sorted(self.pvs[vg]))): size * (mirrors + 1)})
        self.volumes[vg][lv] = Volume(size, kind, pool, mirrors, on=on)

    def restore_image(self, path: str, fmt: str, size: int) -> None:
        self.images[path] = Image(fmt, size)

    def _pv(self) -> str:
        device = next((s.device for s in self.capabilities.storage if s.device), "/dev/sda")
        return f"{device}p3" if "nvme" in device else f"{device}3"

    async def _lvcreate(self, words: list[str]) -> OperationResult:
        options, vg = _options(words[1:])
        name, kind = options.get("--name"), options.get("--type", "linear")
        size_text = options.get("--size") or options.get("--virtualsize")
        if vg not in self.volumes:
            return OperationResult(5, "", f'  Volume group "{vg}" not found\n  Cannot process volume group {vg}')
        if not name or not size_text:
            return OperationResult(3, "", "  Please specify either size or extents (not both).")
        size = _extents(_size(size_text))
        if name in self.volumes[vg]:
            return OperationResult(5, "", f'  Logical Volume "{name}" already exists in volume group "{vg}"')
        pool = options.get("--thinpool")
        if kind == "thin":
            if pool not in self.volumes[vg] or self.volumes[vg][pool].kind != "thin-pool":
                return OperationResult(5, "", f"  Thin pool {vg}/{pool} not found.")
        else:
            mirrors = int(options.get("--mirrors", "1")) if kind == "raid1" else 0
            needed = size * (mirrors + 1)
            if needed > self.vg_free(vg):
                free = self.vg_free(vg) // EXTENT
                return OperationResult(5, "", f'  Volume group "{vg}" has insufficient free space ({free} extents): '
                                     f'{needed // EXTENT} required.')
        await self.spend(0.5 + (1.0 if kind == "raid1" else 0.0))
        if self._unlucky():
            return OperationResult(5, "", f"  device-mapper: reload ioctl on  ({self.rng.randint(250, 253)}:"
                                 f"{self.rng.randint(1, 60)}) failed: Device or resource busy\n"
                                 f"  Failed to activate new LV {vg}/{name}.")
        mirrors = int(options.get("--mirrors", "1")) if kind == "raid1" else 0
        on = {} if kind == "thin" else self._place(vg, size, mirrors + 1)
        if on is None:  # raid1: a PV of its own for each copy
            return OperationResult(5, "", f"  Insufficient suitable allocatable extents for logical volume {name}: "
                                   f"{size // EXTENT} more required")
        self.volumes[vg][name] = Volume(size, kind, pool, mirrors, on=on,
                                        written=0 if kind == "thin" else None)  # a new thin LV holds nothing yet
        self.on_storage()
        return OperationResult(0, f'  Logical volume "{name}" created.\n')

    async def _lvextend(self, words: list[str]) -> OperationResult:
        options, path = _options(words[1:])
        vg, _, name = path.partition("/")
        volume = self.volumes.get(vg, {}).get(name)
        if volume is None:
            return OperationResult(5, "", f'  Failed to find logical volume "{path}"')
        size = _extents(_size(options.get("--size", "0b")))
        if size < volume.size:
            return OperationResult(3, "", f"  New size given ({size // EXTENT} extents) not larger than existing size "
                                 f"({volume.size // EXTENT} extents)")
        growth = (size - volume.size) * (volume.mirrors + 1)  # every copy grows
        if volume.kind != "thin" and growth > self.vg_free(vg):
            return OperationResult(5, "", f'  Insufficient free space: {growth // EXTENT} extents needed, '
                                 f'but only {self.vg_free(vg) // EXTENT} available')
        await self.spend(0.4)
        if self._unlucky():
            return OperationResult(5, "", f"  Failed to suspend logical volume {path}.")
        if volume.kind != "thin":
            for _ in range(volume.mirrors + 1):
                for pv, amount in (self._place(vg, size - volume.size) or {}).items():
                    volume.on[pv] = volume.on.get(pv, 0) + amount
        old, volume.size = volume.size, size
        self.on_storage()
        return OperationResult(0, f"  Size of logical volume {path} changed from {old} B to {size} B.\n"
                         f"  Logical volume {path} successfully resized.\n")

    async def _lvremove(self, words: list[str]) -> OperationResult:
        _, path = _options(words[1:])
        vg, _, name = path.partition("/")
        if name not in self.volumes.get(vg, {}):
            return OperationResult(5, "", f'  Failed to find logical volume "{path}"')
        await self.spend(0.4)
        if self._unlucky():
            return OperationResult(5, "", f"  Logical volume {path} contains a filesystem in use.")
        # as lvremove --yes does: a pool goes with the thin volumes in it
        removed = [lv for lv, v in self.volumes[vg].items() if v.pool == name] + [name]
        for lv in removed:
            del self.volumes[vg][lv]
        self.on_storage()
        return OperationResult(0, "".join(f'  Logical volume "{lv}" successfully removed.\n' for lv in removed))

    # images

    async def _qemu_img(self, words: list[str]) -> OperationResult:
        sub = words[1] if len(words) > 1 else ""
        if sub == "info":
            await self.spend(0.05)
            path = words[-1]
            image = self.images.get(path)
            if image is None:
                return OperationResult(1, "", f"qemu-img: Could not open '{path}': Could not open '{path}': "
                                     "No such file or directory")
            info = {"virtual-size": image.size, "filename": path, "format": image.format,
                    "actual-size": min(image.size, 196608 if image.format == "qcow2" else 0), "dirty-flag": False}
            if image.format == "qcow2":
                info["cluster-size"] = 65536
            return OperationResult(0, json.dumps(info, indent=4) + "\n")
        if sub == "create":
            options, rest = _flags(words[2:])
            if len(rest) != 2 or not rest[1].isdigit():
                return OperationResult(1, "", "qemu-img: Invalid image size specified.")
            path, size = rest[0], int(rest[1])
            if not path.startswith(self.images_dir.rstrip("/") + "/"):
                return OperationResult(1, "", f"qemu-img: {path}: Could not create '{path}': No such file or directory")
            backing = options.get("-b")
            if backing is not None and backing not in self.images:
                return OperationResult(1, "", f"qemu-img: {path}: Could not open '{backing}': "
                                       "No such file or directory")
            await self.spend(0.2)
            if self._unlucky():
                return OperationResult(1, "", f"qemu-img: {path}: Could not create '{path}': Input/output error")
            self.images[path] = Image(options.get("-f", "raw"), size)
            self.on_storage()
            return OperationResult(0)
        if sub == "resize":
            _, rest = _flags(words[2:])
            if len(rest) != 2 or not rest[1].isdigit():
                return OperationResult(1, "", "qemu-img: Invalid image size specified.")
            path, size = rest[0], int(rest[1])
            image = self.images.get(path)
            if image is None:
                return OperationResult(1, "", f"qemu-img: Could not open '{path}': No such file or directory")
            if size < image.size:
                return OperationResult(1, "", "qemu-img: Use the --shrink option to perform a shrink operation.")
            await self.spend(0.2)
            if self._unlucky():
                return OperationResult(1, "", f"qemu-img: Could not open '{path}': Failed to get \"write\" lock")
            image.size = size
            self.on_storage()
            return OperationResult(0)
        if sub == "convert":
            options, rest = _flags(words[2:])
            if len(rest) != 2:
                return OperationResult(1, "", "qemu-img: Expecting one image file name")
            source, target = rest
            image = self.images.get(source)
            if image is None:
                return OperationResult(1, "", f"qemu-img: Could not open '{source}': No such file or directory")
            await self.spend(1.0 + image.size * 0.05 / (self.write_mbps * 1e6))  # sparse: a few % is data
            if self._unlucky():
                return OperationResult(1, "", "qemu-img: error while writing at byte 0: Input/output error")
            self.images[target] = Image(options.get("-O", image.format), image.size)
            self.on_storage()
            return OperationResult(0)
        return OperationResult(127, "", f"qemu-img {sub}: not simulated by the kerub-tui simulator")

    async def _rm(self, words: list[str]) -> OperationResult:
        await self.spend(0.05)
        if self._unlucky():
            return OperationResult(1, "", f"rm: cannot remove '{words[-1]}': Device or resource busy")
        for path in [w for w in words[1:] if not w.startswith("-")]:
            self.images.pop(path, None)
        self.on_storage()
        return OperationResult(0)

    async def _test(self, words: list[str]) -> OperationResult:
        await self.spend(0.02)
        if words[1:3] == ["!", "-e"] and len(words) == 4:
            return OperationResult(1 if words[3] in self.images else 0)
        if words[1:2] == ["-e"] and len(words) == 3:
            return OperationResult(0 if words[2] in self.images else 1)
        return OperationResult(2, "", "sh: 1: test: unexpected operator")

    # KSM

    def _ksm_read(self) -> OperationResult:
        lines = [f"{ksm.KSM_DIR}/{key}:{value}" for key, value in self.ksm.items()]
        return OperationResult(0, "\n".join(lines) + "\n")

    def _ksm_write(self, command: str) -> OperationResult:
        if self._unlucky():
            return OperationResult(1, "", "sh: 1: echo: echo: I/O error")
        for part in command.split("&&"):
            match = re.fullmatch(r"\s*echo (\d+) > /sys/kernel/mm/ksm/(run|pages_to_scan|sleep_millisecs)\s*", part)
            if match is None:
                return OperationResult(2, "", f"sh: 1: cannot create {part.strip()!r}: Permission denied")
            self.ksm[match.group(2)] = int(match.group(1))
        if not self.ksm["run"]:
            self.ksm.update(pages_shared=0, pages_sharing=0)
        return OperationResult(0)

    def ksm_tick(self) -> bool:
        """One KSM scan's progress while it runs (similar guests share pages); True when it changed."""
        if not self.ksm["run"]:
            return False
        running = self.running()
        guest_pages = sum(int(d.memory * d.rss_share) for d in running) // PAGE
        target = int(guest_pages * min(0.35, 0.05 * max(0, len(running) - 1)))
        sharing = self.ksm["pages_sharing"]
        step = max(1, self.ksm["pages_to_scan"] * 50)
        self.ksm["pages_sharing"] = min(target, sharing + step) if sharing < target else target
        self.ksm["pages_shared"] = self.ksm["pages_sharing"] // 4
        self.ksm["full_scans"] += 1
        return True

    # host-to-host trust and copies (planner steps ssh-trust and copy-allocation)

    async def _ssh_files(self, command: str) -> OperationResult:
        """The peer key, known_hosts and authorized_keys edits: kept as files would keep them."""
        await self.spend(0.05)
        if "ssh-keygen" in command:  # make the peer key once, print its public half
            if self.peer_key is None:
                import asyncssh

                key = asyncssh.generate_private_key("ssh-ed25519", comment="kerub-peer")
                self.peer_key = key.export_public_key().decode().strip()
            return OperationResult(0, self.peer_key + "\n")
        return OperationResult(0)

    async def _copy(self, command: str, on_stderr: Callable[[bytes], None] | None = None) -> OperationResult:
        """copy.copy_allocation_pipeline on the source: stream the allocation to the destination.

        Only this half is simulated: the destination allocation was made by the step's first
        operation on the other machine, and guest data has no content here to checksum. Progress is
        reported as the destination's GNU dd would (status=progress), a quarter at a time."""
        size_match = re.search(r"head -c (\d+) -- ", command)
        _, marker, rest = command.partition("if [ ! -r ")
        if size_match is None or not marker:
            return OperationResult(2, "", "sh: 1: Syntax error: the copy pipeline is not one kerub-tui writes")
        words = shlex.shlex(rest, posix=True)
        words.whitespace_split = True
        source, size = words.get_token() or "", int(size_match.group(1))
        if not self._readable(source):
            return OperationResult(1, "", f"kerub-copy-failed: cannot read {source}")
        seconds = 1.0 + size / (min(self.write_mbps, 1100) * 1e6)  # disk or 10 GbE, the slower
        report = b""
        for quarter in range(1, 5):
            await self.spend(seconds / 4)
            done = size * quarter // 4
            line = (f"{done} bytes ({done / 1e6:.0f} MB, {done / MIB:.0f} MiB) copied, {seconds * quarter / 4:.0f} s, "
                    f"{done / 1e6 / (seconds * quarter / 4):.0f} MB/s")
            chunk = (line + ("\n" if quarter == 4 else "\r")).encode()
            report += chunk
            if on_stderr is not None:
                on_stderr(chunk)
        if self._unlucky():
            return OperationResult(1, "", "kerub-copy-failed: checksum mismatch (source "
                                 f"{self.rng.getrandbits(256):064x}, destination none)")
        import hashlib

        digest = hashlib.sha256(f"{self.name}:{source}:{size}".encode()).hexdigest()
        return OperationResult(0, f"kerub-copy-sha256 {digest}\n", report.decode())

    def _readable(self, path: str) -> bool:
        if path in self.images:
            return True
        parts = path.split("/")  # /dev/VG/LV
        return len(parts) == 4 and parts[1] == "dev" and parts[3] in self.volumes.get(parts[2], {})

    # shares (planner steps iscsi-share, iscsi-unshare, iscsi-rekey, nfs-export, nfs-unexport)

    async def _chap_script(self, command: str, input: bytes | None) -> OperationResult:
        """A tgtadm chain reading a CHAP secret on its standard input (hosts/iscsi._secret_on_stdin): the secret
        goes where the chain names the file's contents, an account of that name is deleted first (the chain's
        ``if ... then delete; fi``), then the chain runs as tgtadm would."""
        secret = (input or b"").decode(errors="replace").strip("\n")
        rest = command[len(CHAP_SCRIPT):]
        if not secret:
            return OperationResult(22, "", "tgtadm: invalid request: the CHAP password is empty")
        for user in re.findall(r"\{ if tgtadm --lld iscsi --mode account --op show \| grep -qxF -- '    (\S+)'; "
                               r"then tgtadm --lld iscsi --mode account --op delete --user \S+; fi; \} && ", rest):
            self.iscsi_accounts.pop(user, None)
            for bound in self.iscsi_bound.values():
                if user in bound:
                    bound.remove(user)
        rest = re.sub(r"\{ if tgtadm [^}]*; fi; \} && ", "", rest).replace(SECRET_ARG, shlex.quote(secret))
        try:
            words = shlex.split(rest)
        except ValueError as error:
            return OperationResult(2, "", f"sh: 1: Syntax error: {error}")
        return await self._tgtadm(words)

    def iscsi_refusal(self, xml: str) -> str | None:
        """Why qemu's own initiator on this machine would not open a network disk of the domain XML (the target
        missing, its ACL, its CHAP: the account's user and password from the disk's <auth> and the libvirt
        secret it names here), as qemu says it; None where each opens (or nothing tells: no network)."""
        import xml.etree.ElementTree as ET

        if self.peer is None:
            return None
        for disk in ET.fromstring(xml).iterfind("devices/disk[@type='network']"):
            source = disk.find("source")
            if source is None or source.get("protocol") != "iscsi":
                continue
            host = source.find("host")
            server = self.peer(host.get("name", "") if host is not None else "")
            iqn = source.get("name", "").rpartition("/")[0]
            tid = next((t for t, (i, path) in (server.iscsi_targets.items() if server else []) if i == iqn and path),
                       None)
            if server is None or tid is None:
                return f"iSCSI: Failed to connect to LUN : Failed to log in to target {iqn}: no such target"
            acl = server.iscsi_acl.get(tid, [])
            if self.address not in acl and "ALL" not in acl:
                return f"iSCSI: Failed to connect to LUN : Failed to log in to target {iqn}: {self.address} refused"
            bound = server.iscsi_bound.get(tid, [])
            if not bound:
                continue
            auth = source.find("auth")
            secret = auth.find("secret") if auth is not None else None
            usage = secret.get("usage") if secret is not None else None
            user = auth.get("username") if auth is not None else None
            value = self.libvirt_secrets.get(usage or "")
            if auth is not None and usage is not None and value is None:
                return f"Secret not found: no secret with matching usage '{usage}'"
            if user not in bound or value is None or server.iscsi_accounts.get(user) != value:
                return (f"iSCSI: Failed to connect to LUN : Failed to log in to target {iqn}. Status: "
                        "Authorization failure(514)")
        return None

    async def _tgtadm(self, words: list[str]) -> OperationResult:
        """tgtadm's target new, logicalunit new, bind and show, as kerub-tui chains them with &&."""
        segments: list[list[str]] = [[]]
        for word in words:
            if word == "&&":
                segments.append([])
            else:
                segments[-1].append(word)
        await self.spend(0.1)
        out = ""
        for segment in segments:
            options, _ = _options(segment[1:])
            mode, op = options.get("--mode"), options.get("--op")
            tid = int(options.get("--tid", "0") or 0)
            if (mode, op) == ("target", "new"):
                if tid in self.iscsi_targets:
                    return OperationResult(22, "", "tgtadm: this target already exists")
                self.iscsi_targets[tid] = (options["--targetname"], "")
            elif (mode, op) == ("logicalunit", "new"):
                if tid not in self.iscsi_targets:
                    return OperationResult(22, "", "tgtadm: can't find the target")
                backing = options.get("--backing-store", "")
                if not self._readable(backing):
                    return OperationResult(22, "", "tgtadm: invalid request")
                self.iscsi_targets[tid] = (self.iscsi_targets[tid][0], backing)
            elif (mode, op) == ("target", "bind"):
                if tid not in self.iscsi_targets:
                    return OperationResult(22, "", "tgtadm: can't find the target")
                acl = self.iscsi_acl.setdefault(tid, [])
                if options.get("--initiator-address", "") not in acl:
                    acl.append(options.get("--initiator-address", ""))
            elif (mode, op) == ("account", "new"):
                user, password = options.get("--user", ""), options.get("--password", "")
                if not user or not password:
                    return OperationResult(22, "", "tgtadm: invalid request")
                if user in self.iscsi_accounts:
                    return OperationResult(22, "", "tgtadm: this account already exists")
                self.iscsi_accounts[user] = password
            elif (mode, op) == ("account", "bind"):
                user = options.get("--user", "")
                if tid not in self.iscsi_targets:
                    return OperationResult(22, "", "tgtadm: can't find the target")
                if user not in self.iscsi_accounts:
                    return OperationResult(22, "", "tgtadm: can't find the account")
                if user not in self.iscsi_bound.setdefault(tid, []):
                    self.iscsi_bound[tid].append(user)
            elif (mode, op) == ("account", "show"):
                out += "Account list:\n" + "".join(f"    {user}\n" for user in sorted(self.iscsi_accounts))
            elif (mode, op) == ("target", "unbind"):
                address = options.get("--initiator-address", "")
                if address not in self.iscsi_acl.get(tid, []):
                    return OperationResult(22, "", "tgtadm: can't find the target")
                self.iscsi_acl[tid].remove(address)
            elif (mode, op) == ("target", "show"):
                out += "".join(self._target_text(t, iqn, path) for t, (iqn, path) in sorted(self.iscsi_targets.items()))
            else:
                return OperationResult(22, "", f"tgtadm: mode {mode} op {op}: not simulated by the kerub-tui simulator")
        return OperationResult(0, out)

    def _target_text(self, tid: int, iqn: str, path: str) -> str:
        """One target as ``tgtadm --mode target --op show`` prints it: its controller LUN, the disk's LUN 1."""
        lines = [f"Target {tid}: {iqn}", "    System information:", "        Driver: iscsi", "        State: ready",
                 "    I_T nexus information:", "    LUN information:", "        LUN: 0",
                 "            Type: controller", "            Online: Yes", "            Backing store type: null",
                 "            Backing store path: None"]
        if path:
            parts = path.split("/")
            volume = self.volumes.get(parts[2], {}).get(parts[3]) if len(parts) == 4 else None
            size = volume.size if volume is not None else self.images[path].size if path in self.images else 0
            lines += ["        LUN: 1", "            Type: disk",
                      f"            Size: {size // 1000000} MB, Block size: 512", "            Online: Yes",
                      "            Readonly: No", "            Backing store type: rdwr",
                      f"            Backing store path: {path}"]
        lines += ["    Account information:", *(f"        {user}" for user in self.iscsi_bound.get(tid, [])),
                  "    ACL information:", *(f"        {address}" for address in self.iscsi_acl.get(tid, []))]
        return "\n".join(lines) + "\n"

    async def _share_script(self, command: str) -> OperationResult:
        """The shell around a share's tool: a target deleted if shown, a ganesha EXPORT block written and
        included, or its include dropped (each followed by ganesha's reload)."""
        await self.spend(0.1)
        if command.startswith("if tgtadm "):
            match = re.search(r"--op delete --force --tid (\d+); fi(?: && if tgtadm --lld iscsi --mode account --op "
                              r"show \| grep -qxF -- '    \S+'; then tgtadm --lld iscsi --mode account --op delete "
                              r"--user (\S+); fi)?\Z", command)
            if match is None:
                return OperationResult(2, "", "sh: 1: Syntax error: not a command kerub-tui writes")
            self.iscsi_targets.pop(int(match.group(1)), None)
            self.iscsi_acl.pop(int(match.group(1)), None)
            self.iscsi_bound.pop(int(match.group(1)), None)
            if match.group(2) is not None:
                self.iscsi_accounts.pop(match.group(2), None)
                for bound in self.iscsi_bound.values():
                    if match.group(2) in bound:
                        bound.remove(match.group(2))
            return OperationResult(0)
        if command.startswith("mkdir -p /etc/ganesha/"):
            export = re.search(r"Export_Id = (\d+);", command)
            path = re.search(r'Path = "([^"]*)";', command)
            if export is None or path is None:
                return OperationResult(2, "", "sh: 1: Syntax error: not a command kerub-tui writes")
            directory = path.group(1).rstrip("/") + "/"
            if not any(p.startswith(directory) for p in self.images) and directory != self.images_dir.rstrip("/") + "/":
                return OperationResult(1, "", f"ganesha: export path {path.group(1)} does not exist")
            self.ganesha_exports[int(export.group(1))] = path.group(1)
            return OperationResult(0)
        match = re.search(r"export-(\d+)\.conf", command)
        if match is None:
            return OperationResult(2, "", "sh: 1: Syntax error: not a command kerub-tui writes")
        self.ganesha_exports.pop(int(match.group(1)), None)
        return OperationResult(0)

    async def _exportfs(self, words: list[str]) -> OperationResult:
        await self.spend(0.1)
        _, _, path = words[-1].partition(":")
        if "-u" in words:
            self.kernel_exports.discard(path)
        else:
            self.kernel_exports.add(path)
        return OperationResult(0)

    def restore_shares(self, targets: dict[int, tuple[str, str]], ganesha: dict[int, str],
                       kernel: Iterable[str] = (), acl: dict[int, list[str]] | None = None,
                       chap: dict[int, tuple[str, str]] | None = None) -> None:
        """Take up the shares a host's configuration document says it has: targets (tid -> IQN, backing
        store), their ACLs (tid -> addresses) and CHAP accounts (tid -> user, password), ganesha's exports
        (id -> path), the kernel server's (paths)."""
        self.iscsi_targets.update(targets)
        self.iscsi_acl.update({tid: ["ALL"] for tid in targets} | (acl or {}))
        for tid, (user, password) in (chap or {}).items():
            self.iscsi_accounts[user] = password
            self.iscsi_bound[tid] = [user]
        self.ganesha_exports.update(ganesha)
        self.kernel_exports.update(kernel)

    async def _pvs(self, words: list[str]) -> OperationResult:
        await self.spend(0.08)
        return OperationResult(0, self.pvs_json())

    async def _lvconvert(self, words: list[str]) -> OperationResult:
        options, path = _options(words[1:])
        vg, _, name = path.partition("/")
        volume = self.volumes.get(vg, {}).get(name)
        if volume is None:
            return OperationResult(5, "", f'  Failed to find logical volume "{path}"')
        mirrors = int(options.get("--mirrors", "0"))
        if options.get("--type") != "raid1" or volume.kind not in ("linear", "raid1") or mirrors <= volume.mirrors:
            return OperationResult(5, "", f"  Logical volume {path} is already of the requested type or more.")
        pooled = vg in self._pooled
        added = self._place(vg, volume.size, mirrors - volume.mirrors, avoid=() if pooled else tuple(volume.on))
        if added is None or (not pooled and len(added) < mirrors - volume.mirrors):
            return OperationResult(5, "", f"  Insufficient suitable allocatable extents for logical volume {name}")
        await self.spend(1.0 + volume.size * (mirrors - volume.mirrors) / (self.write_mbps * 1e6))
        for pv, amount in added.items():
            volume.on[pv] = volume.on.get(pv, 0) + amount
        volume.kind, volume.mirrors = "raid1", mirrors
        self.on_storage()
        return OperationResult(0, f"  Logical volume {path} successfully converted.\n")

    async def _pvmove(self, words: list[str]) -> OperationResult:
        rest = [w for i, w in enumerate(words[1:]) if not w.startswith("-") and not (i and words[i] == "--interval")]
        if not rest:
            return OperationResult(3, "", "  Please specify a physical volume path.")
        source, targets = rest[0], rest[1:]
        vg = next((g for g, pvs in self.pvs.items() if source in pvs), None)
        if vg is None:
            return OperationResult(5, "", f'  Failed to find physical volume "{source}".')
        held = [v for v in self.volumes[vg].values() if v.on.get(source)]
        if not held:
            return OperationResult(5, "", f"  No data to move for {vg}.")
        avoid = tuple(pv for pv in self.pvs[vg] if pv == source or (targets and pv not in targets))
        moved = sum(v.on[source] for v in held)
        if sum(max(self.pv_free(vg, pv), 0) for pv in self.pvs[vg] if pv not in avoid) < moved:
            return OperationResult(5, "", f"  Insufficient free space: {moved // EXTENT} extents needed.")
        await self.spend(2.0 + 2 * moved / (self.write_mbps * 1e6))
        for volume in held:
            amount = volume.on.pop(source)
            for pv, part in (self._place(vg, amount, avoid=avoid) or {}).items():
                volume.on[pv] = volume.on.get(pv, 0) + part
        self.on_storage()
        return OperationResult(0, f"  {source}: Moved: 100.00%\n")

    async def _vgreduce(self, words: list[str]) -> OperationResult:
        vg, pv = [w for w in words[1:] if not w.startswith("-")][:2]
        if pv not in self.pvs.get(vg, {}):
            return OperationResult(5, "", f'  Physical Volume "{pv}" not found in Volume Group "{vg}".')
        if any(v.on.get(pv) for v in self.volumes[vg].values()):
            return OperationResult(5, "", f'  Physical volume "{pv}" still in use')
        await self.spend(0.3)
        self.volume_groups[vg] -= self.pvs[vg].pop(pv)
        self.on_storage()
        return OperationResult(0, f'  Removed "{pv}" from volume group "{vg}"\n')

    async def _poweroff(self, words: list[str]) -> OperationResult:
        await self.spend(0.1)
        return self.closed()

    _COMMANDS: ClassVar[dict[str, Callable[..., Awaitable[OperationResult]]]] = {
        "lvs": _lvs, "vgs": _vgs, "lvcreate": _lvcreate, "lvextend": _lvextend, "lvremove": _lvremove,
        "pvs": _pvs, "lvconvert": _lvconvert, "pvmove": _pvmove, "vgreduce": _vgreduce,
        "qemu-img": _qemu_img, "rm": _rm, "test": _test, "poweroff": _poweroff, "tgtadm": _tgtadm,
        "exportfs": _exportfs,
    }

    # --- libvirt --------------------------------------------------------------------------------

    def domain_state(self, vm_id: str) -> str:
        domain = self.domains.get(vm_id)
        return domain.status if domain is not None else ""

    async def start(self, vm_id: str, vm_name: str, xml: str) -> OperationResult:
        facts = parse_domain_xml(xml)
        refused = self.iscsi_refusal(xml)
        if refused is not None:  # qemu's own initiator could not open a disk: the domain does not start
            return OperationResult(1, "", f"internal error: qemu unexpectedly closed the monitor: {refused}")
        # a guest holds its current memory: the balloon keeps a ballooned start there
        memory, cpus = facts.memory_current or facts.memory_max or GIB, facts.vcpus or 1
        domain = self.domains.get(vm_id)
        if domain is not None and domain.status != "shut off":
            return OperationResult(1, "", "Requested operation is not valid: domain is already running")
        if memory > self.free_memory():
            return OperationResult(1, "", "internal error: qemu unexpectedly closed the monitor: "
                                 "cannot set up guest memory 'pc.ram': Cannot allocate memory")
        try:
            await self.spend(1.5)
        except MachineDown:
            return self.closed()
        if self._unlucky():
            return OperationResult(1, "", "internal error: process exited while connecting to monitor: "
                                 "qemu-system-x86_64: failed to initialize kvm: Device or resource busy")
        domain = Domain(vm_id, vm_name, memory, cpus, "running", cpu_percent=self.rng.uniform(1, 40),
                        rss_share=self.rng.uniform(0.55, 0.95), xml=xml)
        self.domains[vm_id] = domain
        self.on_domain(domain.state(DomainEvent.started))
        return OperationResult(0)

    async def shutdown(self, vm_id: str, timeout: float) -> OperationResult:
        domain = self.domains.get(vm_id)
        if domain is None or domain.status == "shut off":
            return OperationResult(0)
        guest = self.rng.uniform(3.0, 8.0)  # the guest's own shutdown after the ACPI press
        try:
            await self.spend(min(timeout, guest))
        except MachineDown:
            return self.closed()
        if timeout < guest:
            return OperationResult(0)  # still running when the wait ended: the step destroys it next, as on a host
        self.stopped(domain, DomainEvent.shutdown)
        return OperationResult(0)

    async def destroy(self, vm_id: str) -> OperationResult:
        domain = self.domains.get(vm_id)
        if domain is None or domain.status == "shut off":
            return OperationResult(0)
        try:
            await self.spend(0.3)
        except MachineDown:
            return self.closed()
        self.stopped(domain, DomainEvent.stopped)
        return OperationResult(0)

    def stopped(self, domain: Domain, event: DomainEvent, *, migrating: bool = False) -> None:
        domain.status = "shut off"
        domain.cpu_percent = 0.0
        self.on_domain(domain.state(event, migrating=migrating))

    async def undefine(self, vm_id: str) -> OperationResult:
        domain = self.domains.pop(vm_id, None)
        if domain is not None and domain.status != "shut off":
            self.domains[vm_id] = domain
            return OperationResult(1, "", "Requested operation is not valid: cannot undefine a running domain "
                                 "without destroying it first")
        if domain is not None:
            self.on_domain(domain.state(DomainEvent.undefined))
        return OperationResult(0)

    async def set_paused(self, vm_id: str, paused: bool) -> OperationResult:
        domain = self.domains.get(vm_id)
        if domain is None or domain.status == "shut off":
            return OperationResult(1, "", "Requested operation is not valid: domain is not running")
        wanted = "paused" if paused else "running"
        if domain.status == wanted:
            return OperationResult(0)
        try:
            await self.spend(0.2)
        except MachineDown:
            return self.closed()
        domain.status = wanted
        self.on_domain(domain.state(DomainEvent.suspended if paused else DomainEvent.resumed))
        return OperationResult(0)

    async def guest_action(self, vm_id: str, op: str, keys: Any = None) -> OperationResult:
        """reboot, reset, send-keys (the guest carries on: no lifecycle event, as libvirt sends none
        for them) and request-shutdown (the guest powers off a few seconds later)."""
        domain = self.domains.get(vm_id)
        if domain is None or domain.status == "shut off":
            return OperationResult(1, "", "Requested operation is not valid: domain is not running")
        if domain.status == "paused":
            return OperationResult(1, "", "Requested operation is not valid: domain is paused")
        if op == "send-keys" and not (isinstance(keys, list) and keys):
            return OperationResult(1, "", "invalid argument: no keycodes")
        if op == "request-shutdown":
            guest = self.rng.uniform(3.0, 8.0)

            async def later() -> None:
                with contextlib.suppress(MachineDown):
                    await self.spend(guest)
                    if domain.status == "running" and self.domains.get(vm_id) is domain:
                        self.stopped(domain, DomainEvent.shutdown)

            task = asyncio.get_running_loop().create_task(later())
            self._guest_tasks.add(task)
            task.add_done_callback(self._guest_tasks.discard)
            return OperationResult(0)
        try:
            await self.spend(0.1)
        except MachineDown:
            return self.closed()
        return OperationResult(0)

    # --- the machine itself ---------------------------------------------------------------------

    async def libvirt(self, op: str, **kwargs: Any) -> OperationResult:
        """One of the executor's libvirt operations (planner.executor.HostOperations) on this machine
        alone; a migration takes two machines (:func:`migrate`)."""
        vm_id = kwargs.get("vm_id", "")
        if op == "start":
            return await self.start(vm_id, kwargs["vm_name"], kwargs["xml"])
        if op == "shutdown":
            return await self.shutdown(vm_id, float(kwargs.get("timeout") or 0))
        if op == "destroy-if-running":
            return await self.destroy(vm_id)
        if op == "undefine":
            return await self.undefine(vm_id)
        if op in ("pause", "resume"):
            return await self.set_paused(vm_id, op == "pause")
        if op in ("reboot", "reset", "request-shutdown", "send-keys"):
            return await self.guest_action(vm_id, op, kwargs.get("keys"))
        if op == "domain-state":
            return OperationResult(0, self.domain_state(vm_id))
        if op == "define-iscsi-secret":
            try:
                await self.spend(0.05)
            except MachineDown:
                return self.closed()
            self.libvirt_secrets[kwargs["usage"]] = kwargs["value"]
            return OperationResult(0, f"iscsi secret {kwargs['usage']} defined")
        if op == "iscsi-secrets":
            return OperationResult(0, "".join(f"{usage}\n" for usage in sorted(self.libvirt_secrets)
                                              if usage.startswith("kerub-iscsi-")))
        if op == "undefine-iscsi-secret":
            self.libvirt_secrets.pop(kwargs["usage"], None)
            return OperationResult(0, f"iscsi secret {kwargs['usage']} undefined")
        return OperationResult(1, "", f"unknown libvirt operation {op!r}")

    def restore(self, host_id: str, *, guests: Iterable[tuple[VirtualMachine, VirtualMachineDynamic]],
                disks: Iterable[VirtualStorageDeviceDynamic], thin_pools: Iterable[ThinPool],
                ksm: KsmState | None) -> None:
        """Take up what the documents say host ``host_id`` has: its running and paused guests, the
        allocations of disks on it, its thin pools, whether KSM runs."""
        for vm, dyn in guests:
            if dyn.host_id != host_id or dyn.status not in (VmStatus.up, VmStatus.paused):
                continue
            held = dyn.memory_given or vm.memory_max  # what a ballooned start was given
            self.domains[vm.id] = Domain(vm.id, vm.name, held, vm.cpus,
                                         "paused" if dyn.status is VmStatus.paused else "running",
                                         cpu_percent=dyn.cpu_percent or self.rng.uniform(1, 30),
                                         rss_share=min(0.98, (dyn.memory_used or held * 7 // 10) / held))
        for disk_dyn in disks:
            for alloc in disk_dyn.allocations:
                if alloc.host_id != host_id:
                    continue
                if isinstance(alloc, LvmAllocation) and alloc.vg in self.volumes:
                    self.restore_volume(alloc.vg, alloc.lv, alloc.actual_size or 0, alloc.thin_pool,
                                        mirrors=alloc.mirrors)
                elif isinstance(alloc, FileAllocation):
                    self.restore_image(alloc.path, alloc.format, alloc.actual_size or 0)
        for pool in thin_pools:
            if pool.vg in self.volumes:
                self.restore_volume(pool.vg, pool.name, pool.size_bytes, None, kind="thin-pool")
        if ksm is not None and ksm.run:
            self.ksm.update(run=1, pages_to_scan=ksm.pages_to_scan or 100)

    def crash(self) -> None:
        """Power loss: every guest is gone with it (their definitions stay, as on a real host)."""
        self.up = False
        self.generation += 1
        for domain in self.domains.values():
            domain.status = "shut off"
            domain.cpu_percent = 0.0
        self.ksm.update(run=0, pages_shared=0, pages_sharing=0, full_scans=0)

    def boot(self) -> None:
        self.up = True

    def load(self) -> tuple[float, float, float]:
        """CPU split (user, system, idle) in percent, from the guests' load and a little of the host's."""
        busy = sum(d.cpu_percent for d in self.domains.values() if d.status == "running") / self.cpus
        user = min(97.0, busy * 0.85 + self.rng.uniform(0.2, 1.5))
        system = min(100.0 - user, busy * 0.12 + self.rng.uniform(0.3, 1.2))
        return user, system, max(0.0, 100.0 - user - system)

    def wander(self) -> list[Domain]:
        """Guests' load drifts; returns those whose figures changed enough to be reported."""
        changed = []
        for domain in self.domains.values():
            if domain.status != "running" or self.rng.random() > 0.15:
                continue
            domain.cpu_percent = min(100.0 * domain.cpus, max(0.5, domain.cpu_percent * self.rng.uniform(0.7, 1.4)
                                                             + self.rng.uniform(-2, 2)))
            domain.rss_share = min(0.98, max(0.3, domain.rss_share + self.rng.uniform(-0.02, 0.02)))
            changed.append(domain)
        return changed


async def migrate(source: Machine, target: Machine, vm_id: str, copy_storage: bool,
                  on_progress: ProgressReport | None = None) -> OperationResult:
    """A live migration of ``vm_id`` from ``source`` to ``target`` (both reachable), as libvirt does it:
    the guest runs on the target once its memory (and with ``copy_storage`` its disks) came over.
    ``on_progress`` hears how far it got as libvirt's job statistics would tell it (bytes of the guest's
    memory, and of its disks when they are copied), a quarter at a time."""
    domain = source.domains.get(vm_id)
    if domain is None or domain.status == "shut off":
        return OperationResult(1, "", "Requested operation is not valid: domain is not running")
    if domain.memory > target.free_memory():
        return OperationResult(1, "", "operation failed: migration job: unexpectedly failed: "
                               "cannot set up guest memory 'pc.ram': Cannot allocate memory")
    refused = target.iscsi_refusal(domain.xml) if domain.xml is not None else None
    if refused is not None:  # the arriving qemu could not open a disk: the guest stays on the source
        return OperationResult(1, "", f"operation failed: migration job: unexpectedly failed: {refused}")
    seconds = 0.5 + domain.memory * domain.rss_share / MIGRATE_BYTES_PER_SECOND
    total = domain.memory
    if copy_storage:
        disks = sum(v.size for vg in source.volumes.values() for v in vg.values()) * 0.01
        seconds += disks / (source.write_mbps * 1e6)
        total += int(disks)
    arrived = Domain(domain.vm_id, domain.name, domain.memory, domain.cpus, "running",
                     cpu_percent=domain.cpu_percent, rss_share=domain.rss_share, xml=domain.xml)
    target.domains[vm_id] = arrived
    target.on_domain(arrived.state(DomainEvent.started, migrating=True))
    try:
        if on_progress is None:
            await source.spend(seconds)
        else:
            await source.spend(seconds, parts=4, after=lambda part: on_progress(total * part // 4, total))
        await target.spend(0)
    except Exception:
        target.domains.pop(vm_id, None)
        target.on_domain(arrived.state(DomainEvent.undefined, migrating=True))
        return OperationResult(1, "", "operation failed: migration out job: unexpectedly failed "
                               "(the connection to a host was lost)")
    source.domains.pop(vm_id, None)
    source.stopped(domain, DomainEvent.stopped, migrating=True)
    target.on_domain(arrived.state(DomainEvent.resumed, migrating=True))
    return OperationResult(0)


def _options(words: list[str]) -> tuple[dict[str, str], str]:
    """``--name value`` pairs (and lone flags such as ``--yes``) and the last positional word."""
    options: dict[str, str] = {}
    positional = ""
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("--yes", "-y"):
            index += 1
            continue
        if word.startswith("--") and index + 1 < len(words):
            options[word] = words[index + 1]
            index += 2
            continue
        positional = word
        index += 1
    return options, positional


def _flags(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """qemu-img's short options (``-f raw``, ``-b BACKING -F FORMAT``, ``-q``) and the positional arguments."""
    options: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("-f", "-O", "-o", "-b", "-F") and index + 1 < len(words):
            options[word] = words[index + 1]
            index += 2
            continue
        if word.startswith("-") and word != "-":
            index += 1
            continue
        rest.append(word)
        index += 1
    return options, rest


__all__ = ["Domain", "EXIT_UNREACHABLE", "Machine", "MachineDown", "Timing"]
