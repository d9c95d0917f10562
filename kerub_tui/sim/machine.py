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
import json
import random
import re
import shlex
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar

from kerub_tui.core.models import HostCapabilities, StorageTechnology, VmStatus
from kerub_tui.hosts import ksm
from kerub_tui.hosts.facts import IMAGES_DIR
from kerub_tui.hosts.kvm import parse_domain_xml
from kerub_tui.hosts.libvirt_link import DomainEvent, DomainState
from kerub_tui.hosts.operations import EXIT_UNREACHABLE, OperationResult

MIB = 1 << 20
GIB = 1 << 30
EXTENT = 4 * MIB  # LVM's default extent size
BASE_MEMORY = 2 * GIB  # what the host OS, libvirtd and the page cache floor take
PAGE = 4096



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
        self.vg_uuids: dict[str, str] = {}
        images = next((s for s in capabilities.storage if s.technology is StorageTechnology.file), None)
        self.images_size = images.size_bytes if images is not None else 0
        self.images: dict[str, Image] = {}
        self.ksm = {"run": 0, "pages_to_scan": 100, "sleep_millisecs": 20, "pages_shared": 0, "pages_sharing": 0,
                    "pages_unshared": 0, "full_scans": 0}
        self.write_mbps = max((s.write_mbps or 0 for s in capabilities.storage), default=0) or 500
        self.on_domain: Callable[[DomainState], None] = lambda state: None
        self.on_storage: Callable[[], None] = lambda: None
        self.generation = 0  # bumped on every crash: work begun before it does not finish after
        self.peer_key: str | None = None  # the public half of /root/.ssh/kerub-peer, once made

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

    def images_free(self) -> int:
        return max(0, self.images_size - sum(i.size for i in self.images.values()))

    def running(self) -> list[Domain]:
        return [d for d in self.domains.values() if d.status != "shut off"]

    # --- time and failure -------------------------------------------------------------------------

    async def spend(self, seconds: float) -> None:
        """Spend ``seconds`` (scaled); MachineDown when the machine went away meanwhile."""
        if not (self.up and self.reachable):
            raise MachineDown()
        generation = self.generation
        delay = self.timing.seconds(seconds * self.rng.uniform(0.8, 1.25))
        if delay:
            await asyncio.sleep(delay)
        if not (self.up and self.reachable) or self.generation != generation:
            raise MachineDown()

    def _unlucky(self) -> bool:
        return self.timing.failure_rate > 0 and self.rng.random() < self.timing.failure_rate

    # --- the shell ------------------------------------------------------------------------------

    async def shell(self, command: str) -> OperationResult:
        """Run ``command`` as the host's shell would, for the commands kerub-tui writes."""
        try:
            if command.startswith("if [ -r /sys/kernel/mm/ksm/run ]"):
                await self.spend(0.03)
                return self._ksm_read()
            if command.startswith("echo ") and "/sys/kernel/mm/ksm/" in command:
                await self.spend(0.03)
                return self._ksm_write(command)
            if command.startswith(("umask 077 && ", "if [ -f ")) and "/.ssh/" in command:
                return await self._ssh_files(command)
            if command.startswith("s=$(mktemp) && d=$(mktemp) && "):
                return await self._copy(command)
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
                    thin = sum(v.size for v in self.volumes[vg].values() if v.pool == name) * 0.3
                    used = f"{min(100.0, 100.0 * thin / volume.size):.2f}"
                rows.append({"lv_name": name, "vg_name": vg, "lv_uuid": volume.uuid, "lv_size": str(volume.size),
                             "lv_attr": attr, "lv_layout": _LAYOUT.get(volume.kind, volume.kind),
                             "segtype": volume.kind, "pool_lv": volume.pool or "", "origin": "",
                             "data_percent": used, "metadata_percent": "1.20" if used else "",
                             "devices": "" if volume.kind == "thin" else f"{self._pv()}(0)"})
        return json.dumps({"report": [{"lv": rows}]}, indent=2) + "\n"

    def vgs_json(self) -> str:
        rows = [{"vg_name": vg, "vg_uuid": self.vg_uuids.setdefault(vg, _lvm_uuid()), "vg_attr": "wz--n-",
                 "vg_size": str(size), "vg_free": str(self.vg_free(vg)), "vg_extent_size": str(EXTENT),
                 "pv_count": "1", "lv_count": str(len(self.volumes[vg]))}
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
        self.volumes[vg][lv] = Volume(_extents(size) if size else EXTENT, kind, pool, mirrors)

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
        self.volumes[vg][name] = Volume(size, kind, pool, int(options.get("--mirrors", "1")) if kind == "raid1" else 0)
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
            if not path.startswith(IMAGES_DIR + "/"):
                return OperationResult(1, "", f"qemu-img: {path}: Could not create '{path}': No such file or directory")
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

    async def _copy(self, command: str) -> OperationResult:
        """copy.copy_allocation_pipeline on the source: stream the allocation to the destination.

        Only this half is simulated: the destination allocation was made by the step's first
        operation on the other machine, and guest data has no content here to checksum."""
        size_match = re.search(r"head -c (\d+) -- ", command)
        _, marker, rest = command.partition("if [ ! -r ")
        if size_match is None or not marker:
            return OperationResult(2, "", "sh: 1: Syntax error: the copy pipeline is not one kerub-tui writes")
        words = shlex.shlex(rest, posix=True)
        words.whitespace_split = True
        source, size = words.get_token() or "", int(size_match.group(1))
        if not self._readable(source):
            return OperationResult(1, "", f"kerub-copy-failed: cannot read {source}")
        await self.spend(1.0 + size / (min(self.write_mbps, 1100) * 1e6))  # disk or 10 GbE, the slower
        if self._unlucky():
            return OperationResult(1, "", "kerub-copy-failed: checksum mismatch (source "
                                 f"{self.rng.getrandbits(256):064x}, destination none)")
        import hashlib

        digest = hashlib.sha256(f"{self.name}:{source}:{size}".encode()).hexdigest()
        return OperationResult(0, f"kerub-copy-sha256 {digest}\n")

    def _readable(self, path: str) -> bool:
        if path in self.images:
            return True
        parts = path.split("/")  # /dev/VG/LV
        return len(parts) == 4 and parts[1] == "dev" and parts[3] in self.volumes.get(parts[2], {})

    async def _poweroff(self, words: list[str]) -> OperationResult:
        await self.spend(0.1)
        return self.closed()

    _COMMANDS: ClassVar[dict[str, Callable[..., Awaitable[OperationResult]]]] = {
        "lvs": _lvs, "vgs": _vgs, "lvcreate": _lvcreate, "lvextend": _lvextend, "lvremove": _lvremove,
        "qemu-img": _qemu_img, "rm": _rm, "test": _test, "poweroff": _poweroff,
    }

    # --- libvirt --------------------------------------------------------------------------------

    def domain_state(self, vm_id: str) -> str:
        domain = self.domains.get(vm_id)
        return domain.status if domain is not None else ""

    async def start(self, vm_id: str, vm_name: str, xml: str) -> OperationResult:
        facts = parse_domain_xml(xml)
        memory, cpus = facts.memory_max or GIB, facts.vcpus or 1
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
                        rss_share=self.rng.uniform(0.55, 0.95))
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

    # --- the machine itself ---------------------------------------------------------------------

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
    """qemu-img's short options (``-f raw``, ``-q``) and the positional arguments."""
    options: dict[str, str] = {}
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("-f", "-O", "-o") and index + 1 < len(words):
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
