"""What discovery and monitoring run on a host, and how their outputs become documents.

Discovery is a set of short, independent shell lines (the ssh runner may run them concurrently on
one connection). Each is robust on a host that lacks the tool: it prints the missing-tool marker and
exits 0, so "no LVM here" is a fact, not an error. ``assemble_capabilities`` turns their outputs into
HostCapabilities and lists what it could not read as problems (they become host Events) instead of
raising, so one odd tool never hides every other fact.

Privileged commands are plain; the ssh runner adds sudo for a non-root login. They are compound
shell lines (``;``, ``||``, ``if``): the runner must wrap the whole line (``sudo -n sh -c '...'``).
Monitor streams (vmstat) are wrapped by ``stream_wrapper`` so they die with their channel.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from kerub_tui.core.models import (
    BlockDevice,
    CpuInfo,
    Filesystem,
    HostCapabilities,
    HypervisorInfo,
    Model,
    OsInfo,
    PhysicalVolumeInfo,
    StaleFacts,
    StorageCapability,
    StorageTechnology,
)
from kerub_tui.core.text import clip, printable

from . import ksm, lvm
from .parse import (
    MISSING_MARKER,
    ParseError,
    missing_tool,
    parse_dmidecode,
    parse_findmnt,
    parse_hypervisor,
    parse_libvirt_version,
    parse_lsblk,
    parse_lscpu,
    parse_meminfo,
    parse_os_info,
    parse_thermal,
    parse_tools,
)
from .parse.cpu import CACHES_COMMAND

IMAGES_DIR = "/var/lib/kerub-tui/images"
ABSENT_MARKER = "kerub-tui: absent:"  # printed instead of findmnt output when IMAGES_DIR does not exist
# the tools whose presence the planner and executors care about
TOOLS = (
    "lvm", "qemu-img", "zfs", "zpool", "tgtd", "tgtadm", "targetcli", "exportfs", "ganesha.nfsd", "gvinum",
    "ipmitool", "dmidecode", "smartctl", "ethtool", "virsh",
)  # fmt: skip
# a non-root login's PATH often lacks the sbin directories where lvm, dmidecode and tgtd live
_SBIN_PATH = 'PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"'
_FINDMNT = "findmnt -J -b -o TARGET,SOURCE,FSTYPE,SIZE,AVAIL"
_THERMAL_FILES = (
    "/sys/class/thermal/thermal_zone*/type /sys/class/thermal/thermal_zone*/temp /sys/class/hwmon/hwmon*/temp*_input"
)
T = TypeVar("T")
M = TypeVar("M", bound=Model)
# What one discovery output may be: the largest real one (lsblk or findmnt of a big host) is a few
# hundred KiB. A larger one is not read (nor stored): the section keeps its last good facts.
MAX_OUTPUT = 4 * 1024 * 1024
PROBLEM_LIMIT = 500  # characters of one discovery problem (it becomes an Event)
TEXT_LIMIT = 1024  # characters of any one text a host reports (a model, a path, a name) that is stored
LIST_LIMIT = 4096  # entries of any one list a host reports (CPU flags, block devices, filesystems, ...)
# Which discovery commands each section of the facts comes from: a section whose command failed
# or printed garbage was not read, and keeps its last good values (see merge_facts).
SECTION_COMMANDS: dict[str, tuple[str, ...]] = {
    "cpu": ("lscpu",),
    "memory": ("meminfo",),
    "os": ("os_release", "kernel", "hostname"),
    "dmi": ("dmidecode",),
    "block_devices": ("lsblk",),
    "filesystems": ("findmnt",),
    "storage": ("vgs", "pvs", "images_fs"),
    "hypervisor": ("virsh_capabilities",),
    "ksm": ("ksm",),
    "tools": ("tools",),
}
# section -> the HostCapabilities fields it holds
SECTION_FIELDS: dict[str, tuple[str, ...]] = {
    "cpu": ("cpu",),
    "memory": ("memory_bytes",),
    "os": ("os",),
    "dmi": ("dmi",),
    "block_devices": ("block_devices",),
    "filesystems": ("filesystems",),
    "storage": ("storage",),
    "hypervisor": ("hypervisor",),
    "ksm": ("ksm",),
    "tools": ("tools",),
}
_DEVICE_RE = re.compile(r"/dev/[A-Za-z0-9][A-Za-z0-9/_.:-]{0,200}\Z")


class CommandOutput(Protocol):
    """What the ssh runner returns for one command (its own result type fits this)."""

    @property
    def exit_code(self) -> int | None: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...


@dataclass(frozen=True)
class Output:
    """A plain CommandOutput, for captures and tests."""

    exit_code: int | None
    stdout: str
    stderr: str = ""


@dataclass(frozen=True)
class DiscoveryCommand:
    name: str
    command: str  # one shell line
    privileged: bool = False


def _needs(tool: str, body: str) -> str:
    """Run ``body`` if ``tool`` is installed, else print the missing-tool marker; exit 0 either way."""
    return (
        f"{_SBIN_PATH}; if command -v {shlex.quote(tool)} >/dev/null 2>&1; then {body}; "
        f"else echo {shlex.quote(f'{MISSING_MARKER} {tool}')}; fi"
    )


def tools_command() -> str:
    names = " ".join(shlex.quote(t) for t in TOOLS)
    return (
        f'{_SBIN_PATH}; for t in {names}; do if command -v "$t" >/dev/null 2>&1; '
        'then echo "$t yes"; else echo "$t no"; fi; done'
    )


def thermal_command() -> str:
    """Every temperature file as PATH:VALUE; nothing at all on a host without sensors (a VM)."""
    return f"grep -H . {_THERMAL_FILES} 2>/dev/null; true"


def images_fs_command(images_dir: str = IMAGES_DIR) -> str:
    """The filesystem holding the image directory, or the absent marker when there is no such directory."""
    quoted = shlex.quote(images_dir)
    return (
        f"if [ -d {quoted} ]; then {_FINDMNT} -T {quoted}; else echo {shlex.quote(f'{ABSENT_MARKER} {images_dir}')}; fi"
    )


def virsh_command(args: str) -> str:
    return _needs("virsh", f"LC_ALL=C virsh -c qemu:///system {args}")


DISCOVERY_COMMANDS: tuple[DiscoveryCommand, ...] = (
    DiscoveryCommand("lscpu", "LC_ALL=C lscpu -J 2>/dev/null || LC_ALL=C lscpu"),
    DiscoveryCommand("lscpu_caches", f"LC_ALL=C lscpu -J -C -B 2>/dev/null || echo '{MISSING_MARKER} lscpu -C'"),
    DiscoveryCommand("meminfo", "cat /proc/meminfo"),
    DiscoveryCommand("os_release", "cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release"),
    DiscoveryCommand("kernel", "uname -r"),
    DiscoveryCommand("hostname", "uname -n"),
    DiscoveryCommand("dmidecode", _needs("dmidecode", "dmidecode -t 1,3,16,17,39 2>&1; true"), privileged=True),
    DiscoveryCommand(
        "lsblk",
        "LC_ALL=C lsblk -J -b -o NAME,PATH,TYPE,SIZE,ROTA,MODEL,MOUNTPOINT,FSTYPE 2>/dev/null"
        " || LC_ALL=C lsblk -J -b -o NAME,TYPE,SIZE,ROTA,MODEL,MOUNTPOINT,FSTYPE",
    ),
    DiscoveryCommand("findmnt", _FINDMNT),
    DiscoveryCommand("images_fs", images_fs_command()),
    DiscoveryCommand("pvs", _needs("lvm", lvm.pvs_json_command()), privileged=True),
    DiscoveryCommand("vgs", _needs("lvm", lvm.vgs_json_command()), privileged=True),
    DiscoveryCommand("lvs", _needs("lvm", lvm.lvs_json_command()), privileged=True),
    DiscoveryCommand("virsh_version", virsh_command("version --daemon"), privileged=True),
    DiscoveryCommand("virsh_capabilities", virsh_command("capabilities"), privileged=True),
    DiscoveryCommand("virsh_domcapabilities", virsh_command("domcapabilities"), privileged=True),
    DiscoveryCommand("ksm", ksm.ksm_read_command()),
    DiscoveryCommand("tools", tools_command()),
    DiscoveryCommand("thermal", thermal_command()),
)


def discovery_commands() -> dict[str, DiscoveryCommand]:
    return {c.name: c for c in DISCOVERY_COMMANDS}


# --- monitoring --------------------------------------------------------------------------------

VMSTAT_UNIT = 1024  # vmstat's default unit, KiB: give it to VmstatParser(unit=...)


def stream_wrapper(cmd: str) -> str:
    """Shell text running ``cmd`` so that it dies with its channel.

    A watcher reads the wrapper's stdin and, at EOF (what a closed SSH channel looks like), sends
    SIGTERM to the wrapper; the wrapper's trap (also for SIGHUP, a PTY hangup, and SIGINT) kills
    ``cmd``. When ``cmd`` ends by itself the wrapper kills the watcher and exits with ``cmd``'s status.
    ``cmd`` runs in the background with /dev/null as stdin; it must be one simple command (its pid is
    the one killed): use ``exec`` inside ``sh -c`` for anything else.
    """
    if not isinstance(cmd, str) or not cmd.strip() or "\n" in cmd:
        raise ValueError("stream command must be one non-empty line")
    # The watcher starts before any trap exists: a child forked while a trap is set can lose a
    # signal sent in the instant before it resets its handlers, so the wrapper re-sends its kill
    # until the command is reaped.
    script = (
        "exec 3<&0 </dev/null; "
        "{ while read -r _ <&3; do :; done; kill -TERM $$ 2>/dev/null; } & watcher=$!; "
        "exec 3<&-; "
        "pid=; stop=; "
        """trap 'stop=1; [ -n "$pid" ] && kill $pid 2>/dev/null' HUP INT TERM; """
        f"{cmd} & pid=$!; "
        '[ -n "$stop" ] && kill $pid 2>/dev/null; '
        "wait $pid 2>/dev/null; status=$?; "
        'while [ -n "$stop" ] && kill $pid 2>/dev/null; do wait $pid 2>/dev/null; status=$?; done; '
        "kill $watcher 2>/dev/null; "
        "exit $status"
    )
    # exec: the remote login shell running this text becomes the wrapper, so a signal to it reaches the trap
    return "exec " + shlex.join(["sh", "-c", script])


def vmstat_stream_command(interval: int = 1) -> str:
    if isinstance(interval, bool) or not isinstance(interval, int) or not 1 <= interval <= 3600:
        raise ValueError(f"vmstat interval must be 1..3600 seconds, not {interval!r}")
    return stream_wrapper(f"LC_ALL=C vmstat -n -w {interval}")


def smart_health_command(device: str) -> str:
    """``smartctl -H -j`` for one block device path (from lsblk); privileged."""
    if not isinstance(device, str) or not _DEVICE_RE.match(device) or "/../" in device or device.endswith("/.."):
        raise ValueError(f"{device!r} is not a device path under /dev")
    return _needs("smartctl", shlex.join(["smartctl", "-H", "-j", device]))


def smart_devices(capabilities: HostCapabilities) -> list[str]:
    """The whole disks worth asking about SMART: not partitions, loop, zram, LVM or RAID children."""
    return [
        d.path
        for d in capabilities.block_devices
        if d.type == "disk" and d.size_bytes > 0 and not d.name.startswith(("zram", "loop", "ram"))
    ]


def storage_monitor_commands(images_dir: str = IMAGES_DIR) -> dict[str, str]:
    """Commands whose outputs ``read_storage`` turns into free space per storage capability."""
    return {
        "vgs": _needs("lvm", lvm.vgs_json_command()),
        "lvs": _needs("lvm", lvm.lvs_json_command()),
        "pvs": _needs("lvm", lvm.pvs_json_command()),
        "images_fs": images_fs_command(images_dir),
    }


# --- assembling --------------------------------------------------------------------------------


@dataclass
class _Reader:
    outputs: Mapping[str, CommandOutput]
    problems: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # command name -> its (first) problem

    def fail(self, name: str, problem: str) -> None:
        problem = printable(problem, limit=PROBLEM_LIMIT)
        self.problems.append(problem)
        self.failed.setdefault(name, problem)

    def text(self, name: str, *, required: bool = True) -> str | None:
        """stdout of a command that succeeded; None (and a problem if required) otherwise."""
        output = self.outputs.get(name)
        if output is None:
            if required:
                self.fail(name, f"{name}: not run")
            return None
        if output.exit_code != 0:
            if required:
                detail = (output.stderr or output.stdout or "").strip().splitlines()
                self.fail(name, f"{name}: exit status {output.exit_code}" + (f": {detail[-1][:200]}" if detail else ""))
            return None
        if getattr(output, "stdout_truncated", False) or len(output.stdout) > MAX_OUTPUT:
            # a cut output may still parse into something plausible and wrong: not read at all
            self.fail(name, f"{name}: printed more than {MAX_OUTPUT // 1024} KiB; not read")
            return None
        return output.stdout if isinstance(output.stdout, str) else None

    def parse(self, name: str, parser: Callable[[str], T], *, required: bool = True) -> T | None:
        """The parsed output of a command; None (and a problem) when it failed or is garbage."""
        text = self.text(name, required=required)
        if text is None:
            return None
        try:
            return parser(text)
        except ParseError as exc:
            self.fail(name, str(exc))
            return None


def _fs_holding(outputs: _Reader) -> Filesystem | None:
    text = outputs.text("images_fs", required=False)
    if text is None or text.strip().startswith(ABSENT_MARKER):
        return None
    try:
        found = parse_findmnt(text)
    except ParseError as exc:
        outputs.fail("images_fs", f"images_fs: {exc}")
        return None
    return found[0] if found else None


def whole_disk(path: str, block_devices: Sequence[BlockDevice]) -> str | None:
    """The whole disk a device path sits on (a partition's disk, by lsblk's tree), or None when lsblk
    does not know the path: what SMART watches for a PV."""
    by_name = {d.name: d for d in block_devices}
    device = next((d for d in block_devices if d.path == path), None)
    for _ in range(16):  # lsblk's nesting is bounded; so is this walk
        if device is None or device.parent is None or device.parent not in by_name:
            break
        device = by_name[device.parent]
    return device.path if device is not None else None


def physical_volumes(groups: Sequence[lvm.VolumeGroup], volumes: Sequence[lvm.PhysicalVolume],
                     block_devices: Sequence[BlockDevice] = ()) -> dict[str, list[PhysicalVolumeInfo]]:
    """LVM capability id -> its PVs (by device path), from pvs and vgs."""
    out: dict[str, list[PhysicalVolumeInfo]] = {}
    for group in groups:
        out[f"lvm:{group.name}"] = [
            PhysicalVolumeInfo(name=pv.name, size_bytes=pv.size_bytes, free_bytes=min(pv.free_bytes, pv.size_bytes),
                               disk=whole_disk(pv.name, block_devices))
            for pv in sorted(volumes, key=lambda p: p.name) if pv.vg == group.name
        ]
    return out


def _storage(reader: _Reader, images_dir: str, block_devices: Sequence[BlockDevice] = ()) -> list[StorageCapability]:
    storage: list[StorageCapability] = []
    groups = reader.parse("vgs", lvm.parse_vgs) or []
    volumes = reader.parse("pvs", lvm.parse_pvs) or []
    pvs = physical_volumes(groups, volumes, block_devices)
    for group in groups:
        mine = pvs[f"lvm:{group.name}"]
        storage.append(
            StorageCapability(
                id=f"lvm:{group.name}",
                technology=StorageTechnology.lvm,
                name=group.name,
                size_bytes=group.size_bytes,
                free_bytes=group.free_bytes,
                # a single backing device is what the device-level checks name; every PV is in pvs
                device=mine[0].name if len(mine) == 1 else None,
                pvs=mine,
            )
        )
    holding = _fs_holding(reader)
    if holding is not None:
        storage.append(
            StorageCapability(
                id=f"file:{images_dir}",
                technology=StorageTechnology.file,
                name=images_dir,
                size_bytes=holding.size_bytes,
                free_bytes=holding.free_bytes,
                device=holding.source if holding.source.startswith("/dev/") else None,
            )
        )
    return storage


@dataclass(frozen=True)
class Assembled:
    """What one discovery read: the facts, the problems (for Events), and the sections it could not
    read (section -> why), whose values in ``capabilities`` are empty placeholders, not facts."""

    capabilities: HostCapabilities
    problems: list[str]
    failed: dict[str, str]


def assemble_capabilities(
    outputs: Mapping[str, CommandOutput],
    *,
    images_dir: str = IMAGES_DIR,
    now: dt.datetime | None = None,
) -> tuple[HostCapabilities, list[str]]:
    """Discovery outputs (by DISCOVERY_COMMANDS name) -> HostCapabilities and problems, never raising."""
    assembled = assemble_discovery(outputs, images_dir=images_dir, now=now)
    return assembled.capabilities, assembled.problems


def assemble_discovery(
    outputs: Mapping[str, CommandOutput],
    *,
    images_dir: str = IMAGES_DIR,
    now: dt.datetime | None = None,
) -> Assembled:
    """Discovery outputs -> facts (bounded, see ``bounded_capabilities``), problems and failed sections."""
    reader = _Reader(outputs)
    caches_text = reader.text("lscpu_caches", required=False)
    if caches_text is not None and missing_tool(caches_text):
        caches_text = None
    cpu_text = reader.text("lscpu")
    cpu = None
    if cpu_text is not None:
        try:
            cpu = parse_lscpu(cpu_text, caches_text)
        except ParseError as exc:
            if caches_text is not None and exc.command == CACHES_COMMAND:
                reader.problems.append(printable(str(exc), limit=PROBLEM_LIMIT))
                # the cache detail is optional: fall back to the summary's sizes
                cpu = reader.parse("lscpu", parse_lscpu)
            else:
                reader.fail("lscpu", str(exc))
    meminfo = reader.parse("meminfo", parse_meminfo)

    os_info = None
    os_texts = [reader.text(n) for n in ("os_release", "kernel", "hostname")]
    if all(t is not None for t in os_texts):
        try:
            os_info = parse_os_info(*os_texts)  # type: ignore[arg-type]
        except ParseError as exc:
            reader.fail("os_release", str(exc))

    dmi = reader.parse("dmidecode", parse_dmidecode)
    block_devices = reader.parse("lsblk", parse_lsblk) or []
    filesystems = [f for f in reader.parse("findmnt", parse_findmnt) or [] if f.size_bytes > 0]
    storage = _storage(reader, images_dir, block_devices)

    hypervisor = HypervisorInfo(reason="virsh capabilities was not read")
    capabilities_text = reader.text("virsh_capabilities")
    if capabilities_text is not None and missing_tool(capabilities_text):
        hypervisor = HypervisorInfo(reason="virsh is not installed")
    elif capabilities_text is not None:
        domcaps = reader.text("virsh_domcapabilities", required=False)
        version = reader.parse("virsh_version", parse_libvirt_version, required=False)
        try:
            hypervisor = parse_hypervisor(capabilities_text, domcaps).evolve(libvirt_version=version)
        except ParseError as exc:
            reader.fail("virsh_capabilities", str(exc))
            hypervisor = HypervisorInfo(reason=str(exc)[:200])
    else:
        refused = outputs.get("virsh_capabilities")
        if refused is not None and refused.stderr.strip():
            hypervisor = HypervisorInfo(reason=refused.stderr.strip().splitlines()[-1][:200])

    ksm_state = reader.parse("ksm", ksm.parse_ksm)
    tools = reader.parse("tools", parse_tools) or {}

    capabilities = HostCapabilities(
        discovered_at=now or dt.datetime.now(dt.UTC),
        os=os_info or OsInfo(),
        cpu=cpu or CpuInfo(),
        memory_bytes=meminfo.total if meminfo else 0,
        dmi=dmi,
        block_devices=block_devices,
        filesystems=filesystems,
        storage=storage,
        hypervisor=hypervisor,
        ksm=bool(ksm_state and ksm_state.available),
        tools=tools,
    )
    failed: dict[str, str] = {}
    for section, commands in SECTION_COMMANDS.items():
        why = [reader.failed[c] for c in commands if c in reader.failed]
        if why:
            failed[section] = "; ".join(why)[:PROBLEM_LIMIT]
    return Assembled(bounded_capabilities(capabilities), reader.problems, failed)


def thin_pool_free_key(vg: str, pool: str) -> str:
    """The HostDynamic.storage_free key of a thin pool's free data space (the planner reads it)."""
    return f"thin:{vg}/{pool}"


@dataclass(frozen=True)
class StorageReading:
    free: dict[str, int]  # capability id (and thin_pool_free_key for thin pools) -> free bytes
    thin_pools: list[lvm.LogicalVolume]  # with data_percent / metadata_percent, for "thin pool almost full"
    problems: list[str]
    # LVM capability id -> its PVs (no whole disks: monitoring runs no lsblk); None when pvs was not read
    pvs: dict[str, list[PhysicalVolumeInfo]] | None = None


def read_storage(outputs: Mapping[str, CommandOutput], *, images_dir: str = IMAGES_DIR) -> StorageReading:
    """Outputs of storage_monitor_commands() -> free bytes per capability id, thin pools, problems.

    The discovery outputs carry the same names (vgs, lvs, images_fs): right after discovery the
    first reading can be taken from them without running anything again.
    """
    reader = _Reader(outputs)
    free: dict[str, int] = {}
    groups = reader.parse("vgs", lvm.parse_vgs) or []
    for group in groups:
        free[f"lvm:{group.name}"] = group.free_bytes
    volumes = reader.parse("pvs", lvm.parse_pvs) if "pvs" in outputs else None
    pvs = physical_volumes(groups, volumes) if volumes is not None and "vgs" not in reader.failed else None
    pools = [lv for lv in reader.parse("lvs", lvm.parse_lvs) or [] if lv.is_thin_pool]
    for pool in pools:
        if pool.data_percent is not None:
            free[thin_pool_free_key(pool.vg, pool.name)] = int(pool.size_bytes * (100 - pool.data_percent) / 100)
    holding = _fs_holding(reader)
    if holding is not None:
        free[f"file:{images_dir}"] = holding.free_bytes
    return StorageReading(free=free, thin_pools=pools, problems=reader.problems, pvs=pvs)


def read_temperature(output: CommandOutput) -> tuple[float | None, list[str]]:
    """thermal_command() output -> hottest temperature in °C (None without sensors), problems."""
    reader = _Reader({"thermal": output})
    return reader.parse("thermal", parse_thermal), reader.problems


# --- bounds and the last good facts ---------------------------------------------------------------


def _bounded(value: object) -> object:
    if isinstance(value, str):
        return printable(clip(value, TEXT_LIMIT))
    if isinstance(value, Model):
        return bounded_model(value)
    if isinstance(value, list):
        return [_bounded(v) for v in value[:LIST_LIMIT]]
    if isinstance(value, dict):
        return {_bounded(k): _bounded(v) for k, v in list(value.items())[:LIST_LIMIT]}
    return value


def bounded_model(model: M) -> M:
    """``model`` with every text a host reported shown safely (control characters as visible escapes)
    and clipped to TEXT_LIMIT characters, and every list to LIST_LIMIT entries."""
    changes = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        bounded = _bounded(value)
        if bounded is not value and bounded != value:
            changes[name] = bounded
    return model.evolve(**changes) if changes else model


def bounded_capabilities(capabilities: HostCapabilities) -> HostCapabilities:
    return bounded_model(capabilities)


def merge_facts(
    previous: HostCapabilities | None,
    fresh: HostCapabilities,
    failed: Mapping[str, str],
    now: dt.datetime | None = None,
) -> HostCapabilities:
    """The facts to store after a discovery: ``fresh`` for every section it read, the last good
    values (from ``previous``) for each section in ``failed``, and those sections marked stale.

    A section stays stale (with the time of its first failure) until a discovery reads it again. A
    section that was never read is stale too, with its empty placeholder and no ``read_at``.
    """
    now = now or fresh.discovered_at or dt.datetime.now(dt.UTC)
    updates: dict[str, object] = {}
    stale: list[StaleFacts] = []
    for section in HostCapabilities.SECTIONS:
        reason = failed.get(section)
        if reason is None:
            continue
        before = previous.stale_section(section) if previous is not None else None
        if previous is not None:
            for name in SECTION_FIELDS[section]:
                updates[name] = getattr(previous, name)
        if before is not None:
            read_at = before.read_at
            since = before.since
        else:
            read_at = previous.discovered_at if previous is not None else None
            since = now
        stale.append(StaleFacts(section=section, since=since, read_at=read_at, reason=printable(reason)))
    updates["stale"] = stale
    return fresh.evolve(**updates)


def stale_summary(capabilities: HostCapabilities) -> str:
    """One line: which sections are stale and why, or '' when every section is current."""
    parts = []
    for entry in capabilities.stale:
        kept = f"kept from {entry.read_at:%Y-%m-%d %H:%M:%S}" if entry.read_at else "never read"
        parts.append(f"{entry.section} ({kept}; not read since {entry.since:%Y-%m-%d %H:%M:%S}: {entry.reason})")
    return "; ".join(parts)
