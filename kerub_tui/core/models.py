"""The documents kerub-tui stores. Every fact the controller knows is one of these.

A resource is up to three documents sharing one id (ARCHITECTURE.md §2): static (what the user or discovery
said), dynamic (what monitoring sees now) and config (what the controller set up on a host).
Documents are frozen: change one with ``doc.evolve(field=value)``, which validates the copy (never
``model_copy(update=...)``, which does not), and put it back.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import uuid
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, TypeAdapter, field_validator, model_validator

from .base import Frozen
from .expectations import DiskExpectation, VmExpectation
from .names import check_address, check_name, check_user
from .sizes import MAX_SIZE

SCHEMA_VERSION = 1


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")


def _check_id(value: str) -> str:
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise ValueError(f"id {value!r} is not valid (letters, digits, '.', '_', ':', '-')")
    return value


class Model(Frozen):
    """Base of every nested value: frozen, and unknown fields are an error, not silently dropped."""


class Document(Model):
    """Base of every stored document."""

    kind: str
    id: str = Field(default_factory=new_id)
    schema_version: int = SCHEMA_VERSION

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        return _check_id(v)



# --- hosts -----------------------------------------------------------------------------------


class HostStatus(str, enum.Enum):
    connecting = "connecting"
    up = "up"
    down = "down"
    unreachable = "unreachable"
    key_mismatch = "key-mismatch"


class CpuCache(Model):
    name: str
    size_kib: int


class CpuInfo(Model):
    architecture: str = ""
    model: str = ""
    vendor: str = ""
    cpus: int = 0
    sockets: int = 0
    cores_per_socket: int = 0
    threads_per_core: int = 0
    max_mhz: float | None = None
    flags: list[str] = []
    caches: list[CpuCache] = []


class MemoryDevice(Model):
    locator: str = ""
    size_bytes: int = 0
    speed_mts: int | None = None
    type: str = ""
    ecc: bool | None = None


class DmiInfo(Model):
    system_manufacturer: str | None = None
    system_product: str | None = None
    chassis_manufacturer: str | None = None
    chassis_type: str | None = None
    power_supplies: int | None = None
    memory_devices: list[MemoryDevice] = []
    ecc: bool | None = None


class OsInfo(Model):
    id: str = ""
    version_id: str = ""
    pretty_name: str = ""
    kernel: str = ""
    hostname: str = ""


class BlockDevice(Model):
    name: str
    path: str = ""
    type: str = ""
    size_bytes: int = 0
    rotational: bool | None = None
    model: str | None = None
    mountpoint: str | None = None
    fstype: str | None = None


class Filesystem(Model):
    mountpoint: str
    source: str = ""
    fstype: str = ""
    size_bytes: int = 0
    free_bytes: int = 0


class HypervisorInfo(Model):
    libvirt_version: str | None = None
    kvm: bool = False
    domain_types: list[str] = []
    guest_arches: list[str] = []
    emulator: str | None = None
    reason: str | None = None  # why the hypervisor is not usable, when it is not


class StorageTechnology(str, enum.Enum):
    lvm = "lvm"
    file = "file"
    zfs = "zfs"
    gvinum = "gvinum"


class StorageCapability(Model):
    """A place on a host where disks can be allocated: an LVM VG, a directory, a zpool, gvinum."""

    id: str  # stable per host: "lvm:VG", "file:/path", "zfs:POOL", "gvinum:NAME"
    technology: StorageTechnology
    name: str  # VG name, directory path, pool name
    size_bytes: int = 0
    free_bytes: int = 0
    read_mbps: int | None = None
    write_mbps: int | None = None
    device: str | None = None  # the backing block device, for SMART and in-box redundancy


class StaleFacts(Model):
    """A section of a host's facts that the latest discovery could not read: what is stored for it
    is the last good reading (from ``read_at``; None when it was never read)."""

    section: str  # one of HostCapabilities.SECTIONS
    since: dt.datetime  # the first discovery that failed to read it
    read_at: dt.datetime | None = None
    reason: str = ""  # what went wrong, one line


class HostCapabilities(Model):
    # The parts of the facts that discovery reads and keeps separately (see hosts/facts.py).
    SECTIONS: ClassVar[tuple[str, ...]] = (
        "cpu", "memory", "os", "dmi", "block_devices", "filesystems", "storage", "hypervisor", "ksm", "tools",
    )

    discovered_at: dt.datetime | None = None
    os: OsInfo = OsInfo()
    cpu: CpuInfo = CpuInfo()
    memory_bytes: int = 0
    dmi: DmiInfo | None = None
    block_devices: list[BlockDevice] = []
    filesystems: list[Filesystem] = []
    storage: list[StorageCapability] = []
    hypervisor: HypervisorInfo = HypervisorInfo()
    ksm: bool = False
    tools: dict[str, bool] = {}  # qemu-img, zfs, tgtd, targetcli, exportfs, ganesha, gvinum, ...
    stale: list[StaleFacts] = []  # sections the latest discovery could not read: their last good values are kept

    def storage_by_id(self, capability_id: str) -> StorageCapability | None:
        return next((s for s in self.storage if s.id == capability_id), None)

    def stale_section(self, section: str) -> StaleFacts | None:
        """Why (and since when) ``section`` holds an older reading, or None when it is current."""
        return next((s for s in self.stale if s.section == section), None)


class PowerManagement(Model):
    wol_mac: str | None = None
    ipmi_address: str | None = None
    ipmi_user: str | None = None

    @field_validator("wol_mac")
    @classmethod
    def _mac(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", v):
            raise ValueError(f"{v!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        return v.lower() if v else v

    @field_validator("ipmi_address")
    @classmethod
    def _ipmi(cls, v: str | None) -> str | None:
        return check_address(v) if v is not None else v

    @field_validator("ipmi_user")
    @classmethod
    def _ipmi_user(cls, v: str | None) -> str | None:
        return check_user(v) if v is not None else v


class Host(Document):
    kind: Literal["host"] = "host"
    name: str
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str = "root"
    identity: str | None = None  # private key file; None = the controller's own key + agent
    host_key: str | None = None  # accepted OpenSSH public key line ("ssh-ed25519 AAAA...")
    fingerprint: str | None = None  # its SHA256 fingerprint, as OpenSSH prints it
    dedicated: bool = False  # only runs our VMs: may be drained and powered down
    recycling: bool = False  # maintenance: evacuate, then it may be removed
    end_of_life: dt.date | None = None
    power: PowerManagement = PowerManagement()
    capabilities: HostCapabilities | None = None
    simulated: bool = False  # a kerub_tui.sim host (the demo, benchmarks): no SSH, nothing real runs
    # the admin's choice of accelerator for this host's guests; auto = kvm where discovery found it usable
    accel: Literal["auto", "kvm", "tcg"] = "auto"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "host name")

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        return check_address(v)

    @field_validator("user")
    @classmethod
    def _user(cls, v: str) -> str:
        return check_user(v)

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", v):
            raise ValueError(f"{v!r} is not a SHA256 fingerprint (SHA256: and 43 base64 characters)")
        return v


class KsmState(Model):
    available: bool = False
    run: bool = False
    pages_to_scan: int | None = None
    sleep_millisecs: int | None = None
    pages_shared: int = 0
    pages_sharing: int = 0
    pages_unshared: int = 0
    full_scans: int = 0


MAX_DROPS = 10  # connection losses remembered per host


class HostDynamic(Document):
    kind: Literal["host-dynamic"] = "host-dynamic"
    status: HostStatus = HostStatus.connecting
    status_reason: str | None = None
    cpu_user: float | None = None  # percent
    cpu_system: float | None = None
    cpu_idle: float | None = None
    memory_free: int | None = None  # bytes
    memory_used: int | None = None
    swap_used: int | None = None
    ksm: KsmState = KsmState()
    storage_free: dict[str, int] = {}  # capability id -> free bytes
    cpu_temperature: float | None = None  # degrees C, hottest sensor
    failing_devices: list[str] = []  # block devices whose SMART health failed
    last_seen: dt.datetime | None = None
    drops: list[dt.datetime] = []  # when the connection was lost after being up, the latest few

    def with_status(self, status: HostStatus, reason: str | None, now: dt.datetime) -> HostDynamic:
        """This document after the connection went ``status``: a loss after being up is kept in
        ``drops`` (the planner tells a flapping host by them), ``last_seen`` is refreshed when up."""
        changes: dict[str, Any] = {"status": status, "status_reason": reason}
        if status is HostStatus.up:
            changes["last_seen"] = now
        elif self.status is HostStatus.up and status in (HostStatus.down, HostStatus.unreachable):
            changes["drops"] = [*self.drops, now][-MAX_DROPS:]
        return self.evolve(**changes)


class NfsExport(Model):
    path: str
    clients: str = "*"
    options: str = "rw,no_root_squash"
    server: Literal["kernel", "ganesha"] = "kernel"
    disk_id: str | None = None


class IscsiTarget(Model):
    iqn: str
    tid: int
    lun_path: str
    chap_user: str | None = None
    disk_id: str | None = None


class Mount(Model):
    source: str
    target: str
    fstype: str = "nfs"
    disk_id: str | None = None


class ThinPool(Model):
    vg: str
    name: str
    size_bytes: int = 0


class SeedFile(Model):
    """A VM's cloud-init seed (cidata ISO) the controller wrote on a host."""

    vm_id: str
    path: str
    digest: str  # of what it says (hosts/cloudinit.seed_digest): another digest is a stale seed


class HostConfiguration(Document):
    kind: Literal["host-config"] = "host-config"
    exports: list[NfsExport] = []
    iscsi_targets: list[IscsiTarget] = []
    mounts: list[Mount] = []
    thin_pools: list[ThinPool] = []
    ssh_trust: list[str] = []  # host ids whose controller-installed key this host accepts
    seeds: list[SeedFile] = []


# --- virtual machines ------------------------------------------------------------------------


class DiskLink(Model):
    disk_id: str
    bus: Literal["virtio", "scsi", "sata", "ide"] = "virtio"
    device: Literal["disk", "cdrom"] = "disk"
    read_only: bool = False


class Nic(Model):
    network: str | None = None  # a libvirt network name
    bridge: str | None = None  # or a host bridge
    mac: str | None = None
    model: Literal["virtio", "e1000", "rtl8139"] = "virtio"

    @model_validator(mode="after")
    def _one_source(self) -> Nic:
        if (self.network is None) == (self.bridge is None):
            raise ValueError("a NIC needs exactly one of network or bridge")
        for what, value in (("network", self.network), ("bridge", self.bridge)):
            if value is not None:
                check_name(value, f"{what} name")
        if self.mac is not None and not re.fullmatch(r"([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}", self.mac):
            raise ValueError(f"{self.mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
        return self


MIB = 1 << 20

BootDevice = Literal["hd", "cdrom", "network"]
_SSH_KEY_RE = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/]+={0,3}( [^\n\r\x00]*)?\Z"
)
CLOUD_INIT_MAX = 64 * 1024  # user data and network config, each: a seed is a small ISO


class CloudInit(Model):
    """What the VM's NoCloud seed carries (see hosts/cloudinit.py): ssh public keys, and the admin's
    user data and network config as given. The user data may hold secrets: it is never logged."""

    ssh_keys: list[str] = []
    user_data: str | None = None
    network_config: str | None = None

    @field_validator("ssh_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        out = []
        for key in v:
            key = key.strip()
            if not _SSH_KEY_RE.match(key):
                raise ValueError(f"{key[:40]!r} is not an OpenSSH public key line (ssh-ed25519 AAAA... comment)")
            out.append(key)
        return out

    @field_validator("user_data", "network_config")
    @classmethod
    def _text(cls, v: str | None) -> str | None:
        if v is not None and (len(v.encode()) > CLOUD_INIT_MAX or "\x00" in v):
            raise ValueError(f"cloud-init data must be text of at most {CLOUD_INIT_MAX // 1024} KiB")
        return v


class VirtualMachine(Document):
    kind: Literal["vm"] = "vm"
    name: str
    architecture: str = "x86_64"
    cpus: int = Field(default=1, ge=1, le=512)
    memory_min: int = Field(default=256 * MIB, ge=16 * MIB, le=MAX_SIZE)
    memory_max: int = Field(default=256 * MIB, ge=16 * MIB, le=MAX_SIZE)
    disks: list[DiskLink] = []
    nics: list[Nic] = []
    expectations: list[VmExpectation] = []
    boot: list[BootDevice] = ["hd"]  # the boot order: the first device that boots wins
    cloud_init: CloudInit | None = None  # set: the VM gets a NoCloud seed (a cidata CD-ROM)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "VM name")

    @field_validator("boot")
    @classmethod
    def _boot(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("the boot order needs at least one device (hd, cdrom, network)")
        if len(set(v)) != len(v):
            raise ValueError(f"the boot order {','.join(v)} names a device twice")
        return v

    @model_validator(mode="after")
    def _memory(self) -> VirtualMachine:
        if self.memory_min > self.memory_max:
            raise ValueError(
                f"minimum memory ({self.memory_min // MIB} MiB) is more than maximum ({self.memory_max // MIB} MiB)"
            )
        return self


class VmStatus(str, enum.Enum):
    up = "up"
    down = "down"
    paused = "paused"
    migrating = "migrating"


class VirtualMachineDynamic(Document):
    kind: Literal["vm-dynamic"] = "vm-dynamic"
    host_id: str | None = None
    status: VmStatus = VmStatus.down
    memory_used: int | None = None
    cpu_percent: float | None = None
    spice_address: str | None = None  # on the host; the password is never stored
    spice_port: int | None = Field(default=None, ge=1, le=65535)
    updated_at: dt.datetime | None = None


# --- virtual storage -------------------------------------------------------------------------


_SHA256_RE = re.compile(r"[0-9a-f]{64}\Z")


class ImageInfo(Model):
    """What makes a disk an image: read-only content an admin brought once (an ISO or a disk image)
    that many VMs use, as a CD-ROM or as the backing of their own system disk.

    ``format`` is what ``qemu-img info`` said on the host (an ISO is ``raw`` content with an ISO 9660
    signature, recorded as ``iso``), never what the file name suggested."""

    format: Literal["raw", "qcow2", "iso"]
    virtual_size: int = Field(gt=0)  # what a guest sees; a clone's disk is at least this big
    file_size: int = Field(gt=0)  # what one copy takes on a host
    sha256: str  # of the file as imported; every copy is checked against it
    source: str = ""  # where it was imported from (a file name on the jump box, or HOST:PATH), for people
    imported_at: dt.datetime = Field(default_factory=utcnow)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str) -> str:
        if not _SHA256_RE.match(v):
            raise ValueError(f"{v!r} is not a sha256 digest (64 lower-case hex digits)")
        return v


class VirtualStorageDevice(Document):
    kind: Literal["disk"] = "disk"
    name: str
    size: int = Field(gt=0, le=MAX_SIZE)
    read_only: bool = False
    expectations: list[DiskExpectation] = []
    image: ImageInfo | None = None  # set: this disk is an image (read-only, shared by many VMs)

    @model_validator(mode="after")
    def _image_read_only(self) -> VirtualStorageDevice:
        if self.image is not None and not self.read_only:
            raise ValueError(f"image {self.name} must be read-only")
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name(v, "disk name")


class _Allocation(Model):
    host_id: str
    capability_id: str
    actual_size: int | None = None
    format: Literal["raw", "qcow2"] = "raw"


class LvmAllocation(_Allocation):
    type: Literal["lvm"] = "lvm"
    vg: str
    lv: str
    thin_pool: str | None = None
    mirrors: int = 0

    @property
    def path(self) -> str:
        return f"/dev/{self.vg}/{self.lv}"


class FileAllocation(_Allocation):
    type: Literal["file"] = "file"
    path: str
    # an overlay: the image (disk id) whose copy on the same host is this file's backing file
    backing: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or "/../" in v or v.endswith("/..") or "\n" in v or "\0" in v:
            raise ValueError(f"{v!r} is not an absolute, normalised path")
        return v


class ZfsAllocation(_Allocation):
    type: Literal["zfs"] = "zfs"
    pool: str
    volume: str

    @property
    def path(self) -> str:
        return f"/dev/zvol/{self.pool}/{self.volume}"


class GvinumAllocation(_Allocation):
    type: Literal["gvinum"] = "gvinum"
    volume: str

    @property
    def path(self) -> str:
        return f"/dev/gvinum/{self.volume}"


Allocation = Annotated[
    LvmAllocation | FileAllocation | ZfsAllocation | GvinumAllocation, Field(discriminator="type")
]


class VirtualStorageDeviceDynamic(Document):
    kind: Literal["disk-dynamic"] = "disk-dynamic"
    allocations: list[Allocation] = []
    cloned_from: str | None = None
    updated_at: dt.datetime | None = None


# --- plans, audit, events --------------------------------------------------------------------


class Cost(Model):
    io_bytes: int = 0
    network_bytes: int = 0
    cpu_seconds: float = 0.0
    time_seconds: float = 0.0
    risk: float = 0.0  # 0 = none, 1 = may lose a running workload

    def __add__(self, other: Cost) -> Cost:
        return Cost(
            io_bytes=self.io_bytes + other.io_bytes,
            network_bytes=self.network_bytes + other.network_bytes,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            time_seconds=self.time_seconds + other.time_seconds,
            risk=max(self.risk, other.risk),
        )


class HostCommand(Model):
    """One command a step will run on one host, exactly as it will be run."""

    host_id: str
    command: str  # shell text, every value quoted; or "libvirt: <call>" for RPC through the tunnel
    privileged: bool = True


class PlannedStep(Model):
    """A step as stored in a plan: enough to show it and to rebuild the planner's step object."""

    type: str
    params: dict[str, Any] = {}
    description: str
    host_id: str | None = None
    effect: str = ""
    cost: Cost = Cost()
    commands: list[HostCommand] = []


class CommandRecord(Model):
    host_id: str
    command: str
    exit_code: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None


class StepOutcome(str, enum.Enum):
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"


class StepIntent(Model):
    """What a step is about to create (or remove, or resize), recorded (committed) before its commands
    run, so a controller killed in between can tell on restart what on the host is its own: the disk
    and the allocation it will have (had, for a removal). ``resolution`` is set once a restart settled
    it: ``adopted`` (the change is found made and recorded), ``absent`` (never made), ``mismatch``
    (something else is there)."""

    disk_id: str
    allocation: Allocation
    change: Literal["create", "remove", "resize"] = "create"
    adopt: bool = True  # False for a copy's target: half-copied data is never adopted
    resolution: Literal["adopted", "absent", "mismatch"] | None = None


class StepRecord(Model):
    step_index: int
    host_id: str | None = None
    outcome: StepOutcome = StepOutcome.running
    intent: StepIntent | None = None
    commands: list[CommandRecord] = []
    error: str | None = None
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None


class PlanStatus(str, enum.Enum):
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"
    withdrawn = "withdrawn"


class Plan(Document):
    kind: Literal["plan"] = "plan"
    plan_kind: str = "repair"  # what kind of plan, for auto-approve policies: repair, evacuate, ksm, ...
    created_at: dt.datetime = Field(default_factory=utcnow)
    trigger: list[str] = []  # the violations and problems it answers, in words
    steps: list[PlannedStep] = []
    effects: list[str] = []  # predicted effects, in words
    cost: Cost = Cost()
    unsatisfied: list[str] = []  # wants and wishes the plan could not meet, shown not hidden
    method: str = ""  # how the planner found it (exact or greedy search, nodes expanded), shown with it
    premises: str = ""  # fingerprint of the state it was planned on, to re-validate before approval
    status: PlanStatus = PlanStatus.proposed
    status_reason: str | None = None
    decided_by: str | None = None
    decided_at: dt.datetime | None = None
    records: list[StepRecord] = []
    runner: str | None = None  # the process carrying it out (pid, start time, boot): a dead one's plan is interrupted


class AuditEntry(Document):
    kind: Literal["audit"] = "audit"
    time: dt.datetime = Field(default_factory=utcnow)
    os_user: str = ""
    action: str
    target: str = ""
    outcome: str = ""
    host_id: str | None = None
    command: str | None = None
    exit_code: int | None = None
    duration_seconds: float | None = None
    output_tail: str = ""
    plan_id: str | None = None


class EventSeverity(str, enum.Enum):
    info = "info"
    warning = "warning"
    error = "error"


class Event(Document):
    kind: Literal["event"] = "event"
    time: dt.datetime = Field(default_factory=utcnow)
    type: str  # host-up, host-down, key-mismatch, parse-error, violation, violation-cleared, ...
    severity: EventSeverity = EventSeverity.info
    host_id: str | None = None
    target: str | None = None
    message: str


# --- settings --------------------------------------------------------------------------------


class AutoApprovePolicy(Model):
    plan_kind: str
    created_by: str = ""
    created_at: dt.datetime | None = None


class OptimisationPolicies(Model):
    power_saving: bool = False
    power_saving_threshold: float = Field(default=0.2, ge=0, le=1)  # drain hosts loaded below this
    load_balancing: bool = False
    load_balancing_threshold: float = Field(default=0.8, ge=0, le=1)
    load_balancing_hold_seconds: int = Field(default=300, ge=0)
    load_balancing_min_gain: float = Field(default=0.1, ge=0, le=1)
    ksm: bool = False


class Settings(Document):
    kind: Literal["settings"] = "settings"
    id: str = "settings"
    auto_approve: list[AutoApprovePolicy] = []
    optimisation: OptimisationPolicies = OptimisationPolicies()


AnyDocument = Annotated[
    Host
    | HostDynamic
    | HostConfiguration
    | VirtualMachine
    | VirtualMachineDynamic
    | VirtualStorageDevice
    | VirtualStorageDeviceDynamic
    | Plan
    | AuditEntry
    | Event
    | Settings,
    Field(discriminator="kind"),
]

DOCUMENT_TYPES: dict[str, type[Document]] = {
    cls.model_fields["kind"].default: cls
    for cls in AnyDocument.__origin__.__args__  # type: ignore[attr-defined]
}

document_adapter: TypeAdapter[Any] = TypeAdapter(AnyDocument)


def parse_document(data: dict[str, Any] | bytes | str) -> Document:
    """Validate raw JSON (bytes/str) or a dict into the right document class by its ``kind``."""
    doc: Document
    if isinstance(data, (bytes, str)):
        doc = document_adapter.validate_json(data)
    else:
        doc = document_adapter.validate_python(data)
    return doc
