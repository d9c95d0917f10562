"""The documents kerub-tui stores. Every fact the controller knows is one of these.

A resource is up to three documents sharing one id (ARCHITECTURE.md §2): static (what the user or discovery
said), dynamic (what monitoring sees now) and config (what the controller set up on a host).
Documents are frozen: change one with ``doc.evolve(field=value)``, which validates the copy (never
``model_copy(update=...)``, which does not), and put it back.
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
    TypeAdapter,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .base import Frozen
from .expectations import DiskExpectation, VmExpectation
from .names import check_address, check_chap_user, check_name, check_user
from .sizes import MAX_SIZE

SCHEMA_VERSION = 1


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}\Z")

# --- secrets -----------------------------------------------------------------------------------------
#
# A secret kerub-tui made (an iSCSI target's CHAP password) is kept in the store's own file and nowhere else:
# every other JSON of a document (--json outputs, the control socket, exports, the planner's fingerprints)
# says REDACTED in its place, and repr() says '**********' (pydantic's SecretStr). A document read back from
# such JSON holds the marker: "there is a secret, its value is not here" (an attached console's mirror; the
# planner's prediction of a step that makes one when it runs). An import (a restore from an export, which has
# no secrets) reads the marker as no secret at all: the planner re-keys what needs one.

REDACTED = "(redacted)"
STORE_CONTEXT = {"secrets": True}  # the context of the store's own serialisation: the only one with secrets
IMPORT_CONTEXT = {"import": True}  # the context of an import: REDACTED is a secret lost with the export


def _dump_secret(value: SecretStr, info: SerializationInfo) -> str:
    context = info.context if isinstance(info.context, dict) else {}
    return value.get_secret_value() if context.get("secrets") is True else REDACTED


Secret = Annotated[SecretStr, PlainSerializer(_dump_secret, when_used="json")]


def _secret_in(value: Any, info: ValidationInfo) -> Any:
    """A secret field's input: REDACTED read by an import is no secret (the export did not hold it)."""
    context = info.context if isinstance(info.context, dict) else {}
    return None if value == REDACTED and context.get("import") is True else value


def secret_value(secret: SecretStr | None) -> str | None:
    """The secret itself, or None where it is not known here (none, or the REDACTED marker)."""
    if secret is None:
        return None
    value = secret.get_secret_value()
    return None if value in (REDACTED, "") else value


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
    parent: str | None = None  # the device this one is part of (a partition's disk), by name


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


class PhysicalVolumeInfo(Model):
    """One LVM physical volume of a volume group: where the VG's extents live, and the disk SMART watches."""

    name: str  # the PV's device path, as LVM prints it (/dev/sdb2)
    size_bytes: int = 0
    free_bytes: int = 0
    disk: str | None = None  # the whole disk holding it (/dev/sdb), when discovery knows it

    @property
    def used_bytes(self) -> int:
        return max(self.size_bytes - self.free_bytes, 0)


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
    # an LVM VG's physical volumes (any number): a mirror needs one per copy, a failing one is moved off
    pvs: list[PhysicalVolumeInfo] = []


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
    """How a powered-down host is woken: wake-on-LAN (its NIC's MAC; the packet goes to
    ``wol_broadcast``, 255.255.255.255 when unset, on UDP ``wol_port``) or IPMI (its BMC's address)."""

    wol_mac: str | None = None
    wol_broadcast: str | None = None
    wol_port: int = Field(default=9, ge=1, le=65535)
    ipmi_address: str | None = None
    ipmi_user: str | None = None

    @field_validator("wol_broadcast")
    @classmethod
    def _broadcast(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            return str(ipaddress.IPv4Address(v))
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 broadcast address") from None

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


@dataclass(frozen=True)
class Accelerator:
    """How a host runs its guests: ``name`` kvm or tcg, and why (discovered, or the admin's override).
    Derived from a Host (hosts/kvm.py ``host_accelerator``), never stored; the console asks for it
    through the API's ``accelerator`` query."""

    name: str
    why: str
    kvm_available: bool | None  # what discovery found; None before the first discovery

    @property
    def domain_type(self) -> str:
        """The libvirt domain type: kvm, or qemu for TCG (qemu's own instruction translator)."""
        return "kvm" if self.name == "kvm" else "qemu"

    @property
    def forced_tcg(self) -> bool:
        """KVM is there but the admin chose TCG (Linux guests crawl under nested KVM on some hosts)."""
        return self.name == "tcg" and bool(self.kvm_available)


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

FENCE_METHODS = ("ipmi", "no-guest", "admin")


class Fence(Model):
    """Why a host that is not up is known to run no guest any more (high availability, issue 16): powered
    off through its BMC (``ipmi``), seen to run none of its guests (``no-guest``: it answered again, libvirt
    lists none of them running), or confirmed off by the admin (``admin``). Until a host that went away is
    fenced, no VM it ran is started elsewhere: it may still run there, writing its disks."""

    method: Literal["ipmi", "no-guest", "admin"]
    by: str = ""  # who: the admin's name, the plan that powered it off
    at: dt.datetime
    note: str = ""  # one line: what was done or seen

    def describe(self) -> str:
        how = {"ipmi": "powered off through IPMI", "no-guest": "seen to run no guest",
               "admin": "confirmed off"}[self.method]
        return f"{how}{' by ' + self.by if self.by else ''} at {self.at:%Y-%m-%d %H:%M:%S} UTC" + (
            f" ({self.note})" if self.note else "")


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
    # LVM capability id -> its PVs as monitoring last saw them (over the discovered StorageCapability.pvs)
    storage_pvs: dict[str, list[PhysicalVolumeInfo]] = {}
    last_seen: dt.datetime | None = None
    drops: list[dt.datetime] = []  # when the connection was lost after being up, the latest few
    # set while the host is not up and known to run no guest (high availability): cleared when it is up again
    fence: Fence | None = None

    def with_status(self, status: HostStatus, reason: str | None, now: dt.datetime) -> HostDynamic:
        """This document after the connection went ``status``: a loss after being up is kept in
        ``drops`` (the planner tells a flapping host by them), ``last_seen`` is refreshed when up. A host
        up again is fenced no more: what it runs, monitoring says from now on."""
        changes: dict[str, Any] = {"status": status, "status_reason": reason}
        if status is HostStatus.up:
            changes["last_seen"] = now
            changes["fence"] = None
        elif self.status is HostStatus.up and status in (HostStatus.down, HostStatus.unreachable):
            changes["drops"] = [*self.drops, now][-MAX_DROPS:]
        return self.evolve(**changes)

    def monitored_over(self, stored: HostDynamic | None) -> HostDynamic:
        """This version from monitoring, written over ``stored`` (what the store holds at the flush). The
        fence is not monitoring's: a plan's FenceHost or the admin set it on the stored document while this
        version waited to be written, and it stays (or the next plan powers the host off again). Monitoring
        only ends a fence, by seeing the host up (``with_status``)."""
        if stored is None or stored.fence is None or self.status is HostStatus.up or self.fence == stored.fence:
            return self
        return self.evolve(fence=stored.fence)


class NfsExport(Model):
    path: str
    clients: str = "*"
    options: str = "rw,no_root_squash"
    server: Literal["kernel", "ganesha"] = "kernel"
    disk_id: str | None = None


class IscsiTarget(Model):
    """A target kerub-tui shares (tgtd). ``chap_user`` is the incoming CHAP account bound to it (None: a target
    shared without CHAP, before kerub-tui made them with one) and ``chap_secret`` its password, made when the
    share step ran (see REDACTED above: only the store's file holds it). A target with a user and no secret is
    one whose secret kerub-tui does not know (restored from an export, or found changed on the host): it
    serves the hosts that read it now, and is re-keyed before a new reader logs in."""

    iqn: str
    tid: int
    lun_path: str
    chap_user: str | None = None
    chap_secret: Secret | None = None
    disk_id: str | None = None
    initiators: list[str] = []  # the addresses its ACL lets log in; empty: any (tgtd's ALL)

    _secret = field_validator("chap_secret", mode="before")(_secret_in)

    @field_validator("chap_user")
    @classmethod
    def _chap_user(cls, v: str | None) -> str | None:
        return None if v is None else check_chap_user(v)  # it reaches tgtadm and the domain XML

    @property
    def keyed(self) -> bool:
        """Whether a new reader can log in: no CHAP, or a secret kerub-tui holds (or will make)."""
        return self.chap_user is None or self.chap_secret is not None


class IscsiSecret(Model):
    """A libvirt secret (usage type iscsi) kerub-tui defined on a host reading a target over iSCSI: its usage
    name, and the target it holds the CHAP password of (the sharing host's id, the target's tid)."""

    usage: str
    server: str
    tid: int

    @field_validator("usage")
    @classmethod
    def _usage(cls, v: str) -> str:
        return check_name(v, "secret usage name")


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
    iscsi_secrets: list[IscsiSecret] = []  # libvirt secrets of the targets this host reads over iSCSI


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
    graphics: Literal["spice", "vnc"] = "spice"  # the protocol its screen speaks to a viewer (from its next start)

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
    # what it was started with (its currentMemory; the balloon holds it there) when that is less than its
    # maximum: where no host had room for the maximum (ARCHITECTURE.md, memory ranges); None = its maximum
    memory_given: int | None = Field(default=None, gt=0)
    cpu_percent: float | None = None
    spice_address: str | None = None  # on the host; the password is never stored
    spice_port: int | None = Field(default=None, ge=1, le=65535)
    vnc_address: str | None = None  # a VNC VM's (graphics="vnc") server instead, the same way
    vnc_port: int | None = Field(default=None, ge=1, le=65535)
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
    # a point-in-time copy of a writable disk made on another host (for redundancy): when it was taken.
    # Nothing keeps it in sync, so its age is said wherever it is shown. None: the disk's own storage.
    copied_at: dt.datetime | None = None


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
    # While a step that knows its progress runs (a copy): bytes done of the total, as the host reports them.
    progress_done: int | None = Field(default=None, ge=0)
    progress_total: int | None = Field(default=None, ge=0)
    # The secret a step makes when it runs (an iSCSI share's CHAP password), committed before its commands
    # run, so a reconcile adopting what a cut-off step made knows it; dropped once the step is done (its
    # document holds it then). Only the store's file holds it (REDACTED).
    secret: Secret | None = None

    _secret = field_validator("secret", mode="before")(_secret_in)


class PlanStatus(str, enum.Enum):
    proposed = "proposed"
    approved = "approved"
    rejected = "rejected"
    running = "running"
    done = "done"
    failed = "failed"
    interrupted = "interrupted"
    withdrawn = "withdrawn"


# What each kind of plan is for, in the order a plan of several kinds names them ("start+evacuate").
# Auto-approve policies are per kind, so a kind says what the plan is for, never just "repair".
PLAN_KINDS: dict[str, str] = {
    "restart": "restart VMs whose host failed",
    "evacuate": "move VMs and storage off a host in maintenance, past its end of life or with a failing disk",
    "start": "start a VM the admin wants up",
    "stop": "stop a VM the admin wants down",
    "placement": "move a VM to meet where it should run (not-same-host, CPU, host OS, ...)",
    "storage": "give a disk the storage it needs (available, grown, thin pool extended, ...)",
    "redundancy": "give a disk the copies it should keep",
    "overheat": "move load off a host running too hot",
    "tidy": "remove shares, mounts and cloud-init seeds nothing uses",
    "power-saving": "optimisation: drain lightly loaded hosts and power them down",
    "load-balancing": "optimisation: move load off an overloaded host",
    "ksm": "optimisation: turn KSM on or off where it pays",
    "cleanup": "remove storage on hosts that no document knows",
}
# Before kinds said what a plan is for, every plan that was not an evacuation or an optimisation
# was a "repair": a stored policy for it stands for these kinds (and, as every policy, no deletion).
LEGACY_REPAIR_KINDS = ("restart", "start", "stop", "placement", "storage", "redundancy", "overheat", "tidy")


def kind_parts(plan_kind: str) -> list[str]:
    """The kinds a plan is made of ("start+evacuate": both; its parts could not be proposed apart)."""
    return [part for part in plan_kind.split("+") if part]


def kind_text(plan_kind: str) -> str:
    """What a plan of this kind is for, in words."""
    return "; ".join(PLAN_KINDS.get(part, part) for part in kind_parts(plan_kind))


class Plan(Document):
    kind: Literal["plan"] = "plan"
    plan_kind: str = "repair"  # what the plan is for (PLAN_KINDS, "+" between several), for auto-approve policies
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
    # a rejected plan the admin asked for again (vm start): no longer held against the planner's proposals
    asked_again_by: str | None = None
    asked_again_at: dt.datetime | None = None
    # why the admin must say yes to it themselves (a restart from a copy older than the HA policy allows):
    # no auto-approve policy covers a plan with a line here
    consent: list[str] = []


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
    vm_id: str | None = None  # the VM acted on, when there is one (the history indexes it)


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
    deletes: bool = False  # also approve plans with a step that deletes data (never unless said so)


class OptimisationPolicies(Model):
    power_saving: bool = False
    power_saving_threshold: float = Field(default=0.2, ge=0, le=1)  # drain hosts loaded below this
    load_balancing: bool = False
    load_balancing_threshold: float = Field(default=0.8, ge=0, le=1)
    load_balancing_hold_seconds: int = Field(default=300, ge=0)
    load_balancing_min_gain: float = Field(default=0.1, ge=0, le=1)
    ksm: bool = False
    # Thin provisioning (ARCHITECTURE.md, thin over-commit): off, a disk gets a plain LV where one fits and
    # no plan where none does. On, a disk that fits no plain LV gets a thin LV in a thin pool on its
    # volume group, the thin LVs of a pool together at most ``thin_overcommit_ratio`` times its size.
    thin_overcommit: bool = False
    thin_overcommit_ratio: float = Field(default=10.0, ge=1, le=100)


class HaPolicy(Model):
    """High availability (issue 16): how a VM with ``ha`` comes back after its host fails. A restart from
    a copy taken for redundancy (a point in time, never kept in sync) asks the admin first unless the copy
    is younger than ``copy_max_age_minutes`` (0: every copy asks) or ``restart_from_stale_copies`` says
    any copy will do."""

    copy_max_age_minutes: int = Field(default=0, ge=0, le=525_600)
    restart_from_stale_copies: bool = False


class HistoryRetention(Model):
    """How long the history keeps its entries (core/history.py prunes what is older)."""

    audit_days: int = Field(default=365, ge=1, le=36_500)
    event_days: int = Field(default=90, ge=1, le=36_500)


class Settings(Document):
    kind: Literal["settings"] = "settings"
    id: str = "settings"
    auto_approve: list[AutoApprovePolicy] = []
    optimisation: OptimisationPolicies = OptimisationPolicies()
    history: HistoryRetention = HistoryRetention()
    ha: HaPolicy = HaPolicy()
    # When the demo's seed finished (sim/demo.py); its audit entry may age out of the history.
    demo_seeded_at: dt.datetime | None = None

    @field_validator("auto_approve", mode="before")
    @classmethod
    def _legacy_kinds(cls, value: Any) -> Any:
        """A stored policy for the old kind "repair" becomes policies for the kinds it covered."""
        if not isinstance(value, list):
            return value
        out: list[Any] = []
        for policy in value:
            kind = policy.get("plan_kind") if isinstance(policy, dict) else getattr(policy, "plan_kind", None)
            if kind != "repair":
                out.append(policy)
                continue
            fields = policy if isinstance(policy, dict) else policy.model_dump()
            out.extend({**fields, "plan_kind": new, "deletes": False} for new in LEGACY_REPAIR_KINDS
                       if not any((p.get("plan_kind") if isinstance(p, dict) else getattr(p, "plan_kind", None)) == new
                                  for p in value))
        return out


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


def parse_document(data: dict[str, Any] | bytes | str, *, context: dict[str, Any] | None = None) -> Document:
    """Validate raw JSON (bytes/str) or a dict into the right document class by its ``kind``
    (``context``: IMPORT_CONTEXT for an export's documents)."""
    doc: Document
    if isinstance(data, (bytes, str)):
        doc = document_adapter.validate_json(data, context=context)
    else:
        doc = document_adapter.validate_python(data, context=context)
    return doc
