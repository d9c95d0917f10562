"""KVM through libvirt: the domain XML made from the documents, its parsers, the libvirt state
mapping, and the display text of the libvirt calls (define, start, shutdown, migrate...).

The XML is built with xml.etree.ElementTree, so every value is escaped by construction; names are
validated again anyway (a document built without validation must not reach libvirt), and the result
is parsed back before it is returned. The SPICE server listens only on the host's loopback, behind a
password made fresh for each start; consoles reach it through an SSH forward.

Operations over libvirt RPC are not shell commands: :func:`describe_define` and friends give the
``virsh`` equivalent for the plan's "exact commands" display (the planner marks it ``libvirt:``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import libvirt

from kerub_tui.core.models import (
    Accelerator,
    FileAllocation,
    GvinumAllocation,
    Host,
    LvmAllocation,
    Nic,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
    ZfsAllocation,
    utcnow,
)
from kerub_tui.core.names import check_name, check_user

from .fileimage import check_path
from .iscsi import IscsiDiskSource
from .nfs import NfsDiskSource, url_host
from .spice import check_spice_password

KERUB_XMLNS = "https://github.com/kocka/kerub-tui/xmlns/domain/1"
DOMAIN_TYPES = ("kvm", "qemu")
ACCELERATORS = ("kvm", "tcg")
BOOT_DEVICES = ("hd", "cdrom", "network")
_KERUB_UUID_NAMESPACE = uuid.UUID("6f1c2b9e-4a57-4d2e-9a0c-5b8e0d3f7a11")
ET.register_namespace("kerub", KERUB_XMLNS)

DiskBacking = LvmAllocation | FileAllocation | ZfsAllocation | GvinumAllocation | IscsiDiskSource | NfsDiskSource

_BUS_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def _text(value: object, what: str) -> str:
    """Any text that goes into the XML: no character XML 1.0 cannot carry (ElementTree would write it)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be text")
    if _XML_ILLEGAL.search(value):
        raise ValueError(f"{what} {value!r} contains a control character")
    return value


def domain_uuid(vm_id: str) -> str:
    """The VM id when it is a UUID (the default), else a stable UUID derived from it."""
    try:
        return str(uuid.UUID(vm_id))
    except (ValueError, AttributeError, TypeError):
        return str(uuid.uuid5(_KERUB_UUID_NAMESPACE, str(vm_id)))


def nic_mac(vm_id: str, index: int) -> str:
    """A stable MAC for a NIC without one: the same on every host and every redefinition (DHCP leases
    survive migration), in the 52:54:00 range libvirt and qemu use for guests."""
    digest = hashlib.sha256(f"{vm_id}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def target_dev(bus: str, index: int) -> str:
    """vda, vdb, ... vdz, vdaa, ... for the index-th disk on buses sharing the prefix."""
    prefix = _BUS_PREFIX[bus]
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


def host_accelerator(host: Host) -> Accelerator:
    """The host's accelerator: the admin's ``accel`` when set, else kvm when discovery found /dev/kvm
    usable and libvirt offering kvm domains, else tcg. A host not discovered yet is taken to have kvm
    (what libvirt would pick), as before this setting existed."""
    hyper = host.capabilities.hypervisor if host.capabilities is not None else None
    available = hyper.kvm if hyper is not None else None
    if host.accel == "tcg":
        return Accelerator("tcg", "set by the admin" + ("; kvm is available" if available else ""), available)
    if host.accel == "kvm":
        return Accelerator("kvm", "set by the admin", available)
    if available is False:
        return Accelerator("tcg", "discovered: " + (hyper.reason if hyper and hyper.reason else "no usable kvm"),
                           available)
    return Accelerator("kvm", "discovered" if available else "assumed (not discovered yet)", available)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _kib(size: int) -> str:
    return str(-(-size // 1024))


def _disk_element(devices: ET.Element, backing: DiskBacking, fmt_default: str) -> ET.Element:
    """The <disk> with its type and <source> for where the data is."""
    if isinstance(backing, (LvmAllocation, ZfsAllocation, GvinumAllocation)):
        if isinstance(backing, LvmAllocation):
            check_name(backing.vg, "volume group")
            check_name(backing.lv, "logical volume")
        elif isinstance(backing, ZfsAllocation):
            check_name(backing.pool, "ZFS pool")
            check_name(backing.volume, "ZFS volume")
        else:
            check_name(backing.volume, "gvinum volume")
        disk = _sub(devices, "disk", type="block")
        _sub(disk, "driver", name="qemu", type=backing.format, cache="none", io="native", discard="unmap")
        _sub(disk, "source", dev=check_path(backing.path, "block device"))
        return disk
    if isinstance(backing, FileAllocation):
        disk = _sub(devices, "disk", type="file")
        _sub(disk, "driver", name="qemu", type=backing.format, cache="none", discard="unmap")
        _sub(disk, "source", file=_text(check_path(backing.path, "image path"), "image path"))
        return disk
    if isinstance(backing, NfsDiskSource):
        backing.__post_init__()  # validate again: a frozen dataclass can still be built with object.__new__
        if backing.local_path is not None:
            disk = _sub(devices, "disk", type="file")
            _sub(disk, "driver", name="qemu", type=backing.format, cache="none")
            _sub(disk, "source", file=backing.local_path)
            return disk
        disk = _sub(devices, "disk", type="network")
        _sub(disk, "driver", name="qemu", type=backing.format, cache="none")
        source = _sub(disk, "source", protocol="nfs", name=backing.remote_path)
        _sub(source, "host", name=backing.server)
        # the uid/gid qemu's client presents: root, as the exports kerub-tui makes do not squash root
        _sub(source, "identity", user="root", group="root")
        return disk
    if isinstance(backing, IscsiDiskSource):
        backing.__post_init__()
        disk = _sub(devices, "disk", type="network")
        _sub(disk, "driver", name="qemu", type=fmt_default, cache="none")
        source = _sub(disk, "source", protocol="iscsi", name=backing.libvirt_name)
        _sub(source, "host", name=backing.portal, port=str(backing.port))
        if backing.chap_user is not None and backing.secret_usage is not None:
            auth = _sub(source, "auth", username=backing.chap_user)
            _sub(auth, "secret", type="iscsi", usage=backing.secret_usage)
        return disk
    raise ValueError(f"a disk backed by {type(backing).__name__} cannot be attached")


VNC_PASSWORD_LENGTH = 8  # what VNC authentication uses of a password


def domain_xml(
    vm: VirtualMachine,
    disks: Mapping[str, tuple[VirtualStorageDevice, DiskBacking]],
    spice_password: str,
    *,
    domain_type: str = "kvm",
    emulator: str | None = None,
    nics_default: Sequence[Nic] | None = None,
    current_memory: int | None = None,
    cpu_mode: str | None = None,
    seed: str | None = None,
) -> str:
    """The libvirt domain XML of ``vm`` on one host.

    ``disks`` maps each disk id the VM links to (vm.disks, in that order) to the disk and how this
    host reaches it: a local allocation, an iSCSI share or an NFS file. ``current_memory`` is what the
    VM gets at start (default: its maximum); the balloon may take it down to the minimum.
    ``cpu_mode`` None gives libvirt's default CPU model: it runs and migrates everywhere, while
    host-model can fail to start on nested hosts (seen: qemu "failed to set MSR 0x10a") and does not
    exist under TCG; host-model or host-passthrough may be asked for on kvm.
    ``seed`` is the path of the VM's cloud-init seed on this host (a cidata ISO): attached read-only
    as one more CD-ROM on virtio-scsi, after the VM's own disks."""
    name = check_name(vm.name, "VM name")
    if domain_type not in DOMAIN_TYPES:
        raise ValueError(f"domain type {domain_type!r} must be one of {DOMAIN_TYPES}")
    check_spice_password(spice_password)
    arch = check_name(vm.architecture, "architecture")
    if vm.memory_min > vm.memory_max:
        raise ValueError("minimum memory is more than maximum memory")
    current = vm.memory_max if current_memory is None else current_memory
    if not vm.memory_min <= current <= vm.memory_max:
        raise ValueError("current memory must be between the VM's minimum and maximum")
    if cpu_mode not in (None, "host-model", "host-passthrough"):
        raise ValueError(f"CPU mode {cpu_mode!r} is not supported")
    if cpu_mode is not None and domain_type != "kvm":
        raise ValueError(f"CPU mode {cpu_mode} needs domain type kvm")
    linked = [link.disk_id for link in vm.disks]
    missing = [d for d in linked if d not in disks]
    if missing:
        raise ValueError(f"no storage given for disk(s) {', '.join(missing)} of VM {name}")
    unused = sorted(set(disks) - set(linked))
    if unused:
        raise ValueError(f"storage given for disk(s) {', '.join(unused)} that VM {name} does not use")

    domain = ET.Element("domain", type=domain_type)
    _sub(domain, "name", name)
    _sub(domain, "uuid", domain_uuid(vm.id))
    metadata = _sub(domain, "metadata")
    _sub(metadata, f"{{{KERUB_XMLNS}}}vm", id=_text(vm.id, "VM id"))
    _sub(domain, "memory", _kib(vm.memory_max), unit="KiB")
    _sub(domain, "currentMemory", _kib(current), unit="KiB")
    _sub(domain, "vcpu", str(int(vm.cpus)), placement="static")
    os_element = _sub(domain, "os")
    _sub(os_element, "type", "hvm", arch=arch)
    boot = list(getattr(vm, "boot", None) or ["hd"])
    if len(set(boot)) != len(boot) or any(dev not in BOOT_DEVICES for dev in boot):
        raise ValueError(f"boot order {boot!r} must name each of {', '.join(BOOT_DEVICES)} at most once")
    for dev in boot:  # libvirt tries them in this order: the first disk of that kind, or the first NIC
        _sub(os_element, "boot", dev=dev)
    features = _sub(domain, "features")
    _sub(features, "acpi")  # the guest needs ACPI to hear a graceful shutdown request
    _sub(features, "apic")
    if cpu_mode:
        _sub(domain, "cpu", mode=cpu_mode)
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    if emulator is not None:
        _sub(devices, "emulator", check_path(emulator, "emulator"))
    counters: dict[str, int] = {}
    for link in vm.disks:
        disk_doc, backing = disks[link.disk_id]
        check_name(disk_doc.name, "disk name")
        if link.bus not in _BUS_PREFIX:
            raise ValueError(f"disk bus {link.bus!r} is not supported")
        if link.device == "cdrom" and link.bus == "virtio":
            raise ValueError(f"disk {disk_doc.name}: a CD-ROM cannot be on the virtio bus (use sata or scsi)")
        fmt = getattr(backing, "format", "raw")
        disk = _disk_element(devices, backing, fmt)
        disk.set("device", link.device)
        prefix = _BUS_PREFIX[link.bus]
        index = counters.get(prefix, 0)
        counters[prefix] = index + 1
        _sub(disk, "target", dev=target_dev(link.bus, index), bus=link.bus)
        if link.read_only or disk_doc.read_only or link.device == "cdrom":
            _sub(disk, "readonly")
        # the guest sees which disk is which (libvirt allows letters, digits, '_', '.', '+', '-' and space)
        _sub(disk, "serial", re.sub(r"[^A-Za-z0-9_.+-]", "-", _text(disk_doc.id, "disk id"))[:20])
        _sub(disk, "alias", name="ua-" + re.sub(r"[^A-Za-z0-9_-]", "-", disk_doc.id))
    if seed is not None:
        disk = _sub(devices, "disk", type="file", device="cdrom")
        _sub(disk, "driver", name="qemu", type="raw")
        _sub(disk, "source", file=_text(check_path(seed, "seed path"), "seed path"))
        index = counters.get("sd", 0)
        counters["sd"] = index + 1
        # on virtio-scsi, not SATA: Debian's cloud kernel (linux-image-cloud-amd64) has no AHCI driver,
        # so a SATA CD-ROM is invisible to it and cloud-init falls back to no datasource (seen on the
        # lab); virtio-scsi is in every cloud kernel and on every machine type (q35 has no IDE)
        _sub(disk, "target", dev=target_dev("scsi", index), bus="scsi")
        _sub(disk, "readonly")
        _sub(disk, "serial", "cidata")
        _sub(disk, "alias", name="ua-cloud-init-seed")
    if seed is not None or any(link.bus == "scsi" for link in vm.disks):
        _sub(devices, "controller", type="scsi", model="virtio-scsi")

    nics = list(vm.nics) if vm.nics else list(nics_default or [])
    for index, nic in enumerate(nics):
        if (nic.network is None) == (nic.bridge is None):
            raise ValueError("a NIC needs exactly one of network or bridge")
        if nic.network is not None:
            interface = _sub(devices, "interface", type="network")
            _sub(interface, "source", network=check_name(nic.network, "network name"))
        else:
            interface = _sub(devices, "interface", type="bridge")
            _sub(interface, "source", bridge=check_name(nic.bridge, "bridge name"))
        mac = (nic.mac or nic_mac(vm.id, index)).lower()
        if not re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac) or int(mac[:2], 16) & 1:
            raise ValueError(f"{mac!r} is not a unicast MAC address")
        _sub(interface, "mac", address=mac)
        if nic.model not in ("virtio", "e1000", "rtl8139"):
            raise ValueError(f"NIC model {nic.model!r} is not supported")
        _sub(interface, "model", type=nic.model)

    protocol = getattr(vm, "graphics", "spice")
    if protocol == "vnc":
        # VNC authentication (DES) uses 8 characters of a password; libvirt refuses a longer one. It
        # listens on the host's loopback only, behind SSH, and changes at each start, as SPICE's.
        graphics = _sub(devices, "graphics", type="vnc", autoport="yes", listen="127.0.0.1",
                        passwd=spice_password[:VNC_PASSWORD_LENGTH])
        _sub(graphics, "listen", type="address", address="127.0.0.1")
    elif protocol == "spice":
        graphics = _sub(devices, "graphics", type="spice", autoport="yes", listen="127.0.0.1",
                        passwd=spice_password)
        _sub(graphics, "listen", type="address", address="127.0.0.1")
        _sub(graphics, "image", compression="off")  # the console is reached over SSH, usually on a LAN
    else:
        raise ValueError(f"graphics {protocol!r} must be spice or vnc")
    video = _sub(devices, "video")
    _sub(video, "model", type="qxl", heads="1", primary="yes")
    if protocol == "spice":
        channel = _sub(devices, "channel", type="spicevmc")
        _sub(channel, "target", type="virtio", name="com.redhat.spice.0")
    _sub(devices, "input", type="tablet", bus="usb")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="10")  # the guest's memory figures, for VirtualMachineDynamic

    ET.indent(domain)
    text = ET.tostring(domain, encoding="unicode")
    ET.fromstring(text)  # well-formed by construction; this guards that claim
    return text


def iscsi_secret_xml(usage: str, secret_uuid: str | None = None) -> str:
    """A libvirt secret holding an iSCSI CHAP password (its value is set by secretSetValue, not here): private
    (libvirt never tells its value to a client) and kept across a restart of libvirtd."""
    check_name(usage, "secret usage name")
    secret = ET.Element("secret", ephemeral="no", private="yes")
    if secret_uuid is not None:
        _sub(secret, "uuid", str(uuid.UUID(secret_uuid)))
    _sub(secret, "description", f"kerub-tui iSCSI CHAP secret {usage}")
    usage_element = _sub(secret, "usage", type="iscsi")
    _sub(usage_element, "target", usage)
    return ET.tostring(secret, encoding="unicode")


# --- reading libvirt's XML ------------------------------------------------------------------------


def _parse(xml: str) -> ET.Element:
    if not isinstance(xml, str):
        raise ValueError("domain XML must be text")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ValueError("domain XML with a DOCTYPE or entities is refused (libvirt never writes one)")
    try:
        return ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"domain XML is not well-formed: {exc}") from None


def parse_spice_port(xml: str) -> tuple[str, int] | None:
    """(address, port) of a running domain's SPICE server, from its live XML; None if it has none."""
    return parse_graphics_port(xml, "spice")


def parse_vnc_port(xml: str) -> tuple[str, int] | None:
    """(address, port) of a running domain's VNC server, from its live XML; None if it has none."""
    return parse_graphics_port(xml, "vnc")


def parse_graphics_port(xml: str, protocol: str) -> tuple[str, int] | None:
    """(address, port) of a running domain's ``protocol`` ("spice" or "vnc") server, from its live XML;
    None if it has none."""
    if protocol not in ("spice", "vnc"):
        raise ValueError(f"no graphics protocol {protocol!r}: spice or vnc")
    root = _parse(xml)
    graphics = root.find(f"./devices/graphics[@type='{protocol}']")
    if graphics is None:
        return None
    try:
        port = int(graphics.get("port", "-1"))
    except ValueError:
        return None
    if not 1 <= port <= 65535:
        return None  # -1: not running, or not allocated yet
    listen = graphics.find("./listen[@type='address']")
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen") or "127.0.0.1"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return None
    return address, port


@dataclass(frozen=True)
class DomainDisk:
    target: str
    bus: str | None
    device: str
    source: str | None  # a path, or PROTOCOL://HOST/NAME for a network disk
    read_only: bool


@dataclass(frozen=True)
class DomainFacts:
    name: str
    uuid: str | None
    kerub_vm_id: str | None  # from our metadata: the domain is one kerub-tui defined
    running_id: int | None  # libvirt's id of a running domain
    memory_max: int | None  # bytes
    memory_current: int | None
    vcpus: int | None
    disks: tuple[DomainDisk, ...]
    spice: tuple[str, int] | None
    vnc: tuple[str, int] | None = None


def _memory(root: ET.Element, tag: str) -> int | None:
    element = root.find(tag)
    if element is None or element.text is None or not element.text.strip().isdigit():
        return None
    units = {"b": 1, "bytes": 1, "kib": 1024, "k": 1024, "mib": 1 << 20, "m": 1 << 20, "gib": 1 << 30, "g": 1 << 30}
    unit = units.get(element.get("unit", "KiB").lower())
    return int(element.text.strip()) * unit if unit else None


def parse_domain_xml(xml: str) -> DomainFacts:
    """What VirtualMachineDynamic and discovery need from a domain's XML (live or inactive)."""
    root = _parse(xml)
    if root.tag != "domain":
        raise ValueError(f"not a domain XML (root element {root.tag!r})")
    name = root.findtext("name")
    if not name:
        raise ValueError("domain XML without a name")
    meta = root.find(f"./metadata/{{{KERUB_XMLNS}}}vm")
    running = root.get("id")
    vcpu = root.findtext("vcpu")
    disks = []
    for disk in root.findall("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        location = None
        if source is not None:
            location = source.get("dev") or source.get("file")
            if location is None and source.get("protocol"):
                host = source.find("host")
                server = host.get("name") if host is not None else ""
                location = f"{source.get('protocol')}://{server}/{source.get('name', '')}"
        disks.append(
            DomainDisk(
                target=target.get("dev", "") if target is not None else "",
                bus=target.get("bus") if target is not None else None,
                device=disk.get("device", "disk"),
                source=location,
                read_only=disk.find("readonly") is not None,
            )
        )
    return DomainFacts(
        name=name,
        uuid=root.findtext("uuid"),
        kerub_vm_id=meta.get("id") if meta is not None else None,
        running_id=int(running) if running is not None and running.lstrip("-").isdigit() and int(running) > 0 else None,
        memory_max=_memory(root, "memory"),
        memory_current=_memory(root, "currentMemory"),
        vcpus=int(vcpu) if vcpu is not None and vcpu.strip().isdigit() else None,
        disks=tuple(disks),
        spice=parse_spice_port(xml),
        vnc=parse_vnc_port(xml),
    )


# --- libvirt states and events -> VmStatus -------------------------------------------------------


def vm_status(state: int, reason: int = 0) -> VmStatus | None:
    """A libvirt domain state (virDomainGetState) as the VM's status; None for 'no state'."""
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_SHUTDOWN):
        return VmStatus.up  # SHUTDOWN = shutting down: still running until it is off
    if state == libvirt.VIR_DOMAIN_PAUSED:
        if reason in (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_POSTCOPY):
            return VmStatus.migrating
        return VmStatus.paused
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return VmStatus.paused
    if state in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED):
        return VmStatus.down
    return None


def lifecycle_status(event: int, detail: int = 0) -> VmStatus | None:
    """A domain lifecycle event as the VM's new status on that host; None = no change of run state
    (defined, undefined, or a shutdown that the 'stopped' event will finish)."""
    if event in (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_RESUMED):
        return VmStatus.up
    if event == libvirt.VIR_DOMAIN_EVENT_SUSPENDED:
        migrating = (libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY)
        return VmStatus.migrating if detail in migrating else VmStatus.paused
    if event == libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED:
        return VmStatus.paused
    if event in (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_CRASHED):
        return VmStatus.down
    return None


def domain_dynamic(
    vm_id: str,
    host_id: str,
    status: VmStatus,
    live_xml: str | None = None,
    *,
    memory_used: int | None = None,
    cpu_percent: float | None = None,
) -> VirtualMachineDynamic:
    """The VM's dynamic document from what the host's libvirt says (the SPICE or VNC password is never in it)."""
    spice = parse_spice_port(live_xml) if live_xml is not None and status != VmStatus.down else None
    vnc = parse_vnc_port(live_xml) if live_xml is not None and status != VmStatus.down else None
    return VirtualMachineDynamic(
        id=vm_id,
        host_id=host_id if status != VmStatus.down else None,
        status=status,
        memory_used=memory_used,
        cpu_percent=cpu_percent,
        spice_address=spice[0] if spice else None,
        spice_port=spice[1] if spice else None,
        vnc_address=vnc[0] if vnc else None,
        vnc_port=vnc[1] if vnc else None,
        updated_at=utcnow(),
    )


# --- migration and the display text of libvirt calls -------------------------------------------------


def migrate_uri(target_address: str) -> str:
    """The direct migration stream URI (qemu to qemu), e.g. tcp://10.0.0.2 or tcp://[fd00::2]."""
    return f"tcp://{url_host(target_address)}"


def peer_uri(target_address: str, user: str = "root") -> str:
    """The libvirt URI the source libvirtd uses for peer-to-peer migration (over the hosts' SSH trust)."""
    host = url_host(target_address)
    check_user(user)
    return f"qemu+ssh://{user}@{host}/system"


def _virsh(*words: str) -> str:
    return "virsh " + " ".join(words)


def describe_define(vm_name: str) -> str:
    return _virsh("define", f"{check_name(vm_name, 'VM name')}.xml")


def describe_start(vm_name: str) -> str:
    return _virsh("start", check_name(vm_name, "VM name"))


def describe_shutdown(vm_name: str, timeout_s: int = 120) -> str:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or timeout_s <= 0:
        raise ValueError("the shutdown timeout must be a positive number of seconds")
    name = check_name(vm_name, "VM name")
    return _virsh("shutdown", name) + f" (then virsh destroy {name} if still running after {timeout_s} s)"


def describe_destroy(vm_name: str) -> str:
    return _virsh("destroy", check_name(vm_name, "VM name"))


def describe_pause(vm_name: str) -> str:
    return _virsh("suspend", check_name(vm_name, "VM name"))


def describe_resume(vm_name: str) -> str:
    return _virsh("resume", check_name(vm_name, "VM name"))


def describe_undefine(vm_name: str) -> str:
    return _virsh("undefine", check_name(vm_name, "VM name"))


def describe_migrate(vm_name: str, target_host_address: str, peer_to_peer: bool = False) -> str:
    name = check_name(vm_name, "VM name")
    if peer_to_peer:
        return _virsh(
            "migrate", "--live", "--p2p", "--persistent", "--undefinesource", name, peer_uri(target_host_address)
        )
    return _virsh(
        "migrate", "--live", "--persistent", "--undefinesource", name,
        f"qemu+ssh://{target_host_address}/system", "--migrateuri", migrate_uri(target_host_address),
    )


def describe_secret(usage: str) -> str:
    """The virsh equivalent of defining a libvirt secret and setting its value (which no display holds)."""
    return (
        _virsh("secret-define", f"{check_name(usage, 'secret usage name')}.xml")
        + " && virsh secret-set-value (from stdin)"
    )


def describe_undefine_secret(usage: str) -> str:
    return _virsh("secret-undefine", f"(the iscsi secret {check_name(usage, 'secret usage name')})")
