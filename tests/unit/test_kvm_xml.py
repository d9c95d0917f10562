"""The libvirt domain XML: built from documents, safe against hostile text, valid by libvirt's own schema
(virt-xml-validate), and really defined and STARTED on a throwaway libvirtd in a private namespace with
every kind of disk at once: a raw file, a qcow2 file, an iSCSI LUN with CHAP from a real tgtd (through
qemu's initiator and a libvirt secret) and a file on a real nfs-ganesha export (through qemu's NFS
client), two NICs (a bridge and a libvirt network), SPICE answered on the namespace's loopback."""

from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.core.models import (
    DiskLink,
    FileAllocation,
    GvinumAllocation,
    LvmAllocation,
    Nic,
    VirtualMachine,
    VirtualStorageDevice,
    VmStatus,
    ZfsAllocation,
)
from kerub_tui.hosts.iscsi import IscsiDiskSource, iscsi_share_chap
from kerub_tui.hosts.kvm import (
    KERUB_XMLNS,
    describe_define,
    describe_destroy,
    describe_migrate,
    describe_pause,
    describe_resume,
    describe_shutdown,
    describe_start,
    describe_undefine,
    domain_dynamic,
    domain_uuid,
    domain_xml,
    iscsi_secret_xml,
    lifecycle_status,
    migrate_uri,
    nic_mac,
    parse_domain_xml,
    parse_graphics_port,
    parse_spice_port,
    parse_vnc_port,
    peer_uri,
    target_dev,
    vm_status,
)
from kerub_tui.hosts.nfs import NfsDiskSource, ganesha_add_export
from kerub_tui.hosts.operations import _define_iscsi_secret, _undefine_iscsi_secret, list_iscsi_secrets
from kerub_tui.hosts.spice import new_spice_password
from tests.unit.test_ops_netns import (  # noqa: F401 (private_ns is a fixture)
    GANESHA_CORE,
    PrivateNamespace,
    private_ns,
    start_ganesha,
    start_libvirtd,
    start_tgtd,
    stop_tgtd,
    wait_until,
)

MIB = 1 << 20
CAPTURES = Path(__file__).parent.parent / "captures" / "ops"
PASSWORD = "Spice-pass_0123456789"


def disk(disk_id: str, name: str, **kw) -> VirtualStorageDevice:
    return VirtualStorageDevice(id=disk_id, name=name, size=64 * MIB, **kw)


def lvm(vg: str = "vg0", lv: str = "disk-1") -> LvmAllocation:
    return LvmAllocation(host_id="h1", capability_id=f"lvm:{vg}", vg=vg, lv=lv)


def file_alloc(path: str, fmt: str = "raw") -> FileAllocation:
    return FileAllocation(host_id="h1", capability_id="file:/var/lib/kerub", path=path, format=fmt)


def sample_vms() -> list[tuple[VirtualMachine, dict]]:
    """Several VMs covering every disk source, bus, NIC kind and memory shape."""
    d1, d2, d3, d4, d5, d6 = (disk(f"d{i}", f"disk-{i}") for i in range(1, 7))
    return [
        (VirtualMachine(name="bare", cpus=1), {}),
        (
            VirtualMachine(
                name="web-1", cpus=4, memory_min=512 * MIB, memory_max=2048 * MIB,
                disks=[DiskLink(disk_id="d1"), DiskLink(disk_id="d2", read_only=True)],
                nics=[Nic(network="default"), Nic(bridge="br0", model="e1000", mac="52:54:00:00:00:01")],
            ),
            {"d1": (d1, lvm()), "d2": (d2, file_alloc("/var/lib/kerub/d2.qcow2", "qcow2"))},
        ),
        (
            VirtualMachine(
                name="storage-mix",
                disks=[DiskLink(disk_id=d, bus=b) for d, b in
                       (("d3", "virtio"), ("d4", "scsi"), ("d5", "sata"), ("d6", "virtio"))],
            ),
            {
                "d3": (d3, ZfsAllocation(host_id="h", capability_id="zfs:tank", pool="tank", volume="d3")),
                "d4": (d4, IscsiDiskSource("10.0.0.7", "iqn.2024-01.org.kerub:d4", chap_user="kerub-d4",
                                           secret_usage="kerub-d4")),
                "d5": (d5, NfsDiskSource("10.0.0.8", "/srv/kerub", "d5.img")),
                "d6": (d6, NfsDiskSource("10.0.0.8", "/srv/kerub", "d6.img", format="qcow2", mount_point="/mnt/nfs")),
            },
        ),
        (VirtualMachine(name="vnc-desk", graphics="vnc"), {}),
        (
            VirtualMachine(name="cdrom", disks=[DiskLink(disk_id="d1", bus="sata", device="cdrom")]),
            {"d1": (d1, GvinumAllocation(host_id="h", capability_id="gvinum:x", volume="iso"))},
        ),
        (
            VirtualMachine(name="installer", boot=["cdrom", "hd", "network"], nics=[Nic(network="default")],
                           disks=[DiskLink(disk_id="d2"),
                                  DiskLink(disk_id="d3", bus="sata", device="cdrom", read_only=True)]),
            {"d2": (d2, lvm(lv="installer-disk0")),
             "d3": (disk("d3", "debian-iso", read_only=True), file_alloc("/var/lib/kerub-tui/images/debian.iso"))},
        ),
    ]


# --- structure -----------------------------------------------------------------------------------


def test_domain_xml_structure() -> None:
    vm, disks = sample_vms()[1]
    root = ET.fromstring(domain_xml(vm, disks, PASSWORD))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "web-1" and root.findtext("uuid") == vm.id
    assert root.find(f"./metadata/{{{KERUB_XMLNS}}}vm").get("id") == vm.id  # type: ignore[union-attr]
    assert (root.findtext("memory"), root.findtext("currentMemory"), root.findtext("vcpu")) == ("2097152", "2097152", "4")
    assert root.findtext("on_crash") == "destroy" and root.find("./cpu") is None  # libvirt's default model
    with_model = ET.fromstring(domain_xml(vm, disks, PASSWORD, cpu_mode="host-model"))
    assert with_model.find("./cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="needs domain type kvm"):
        domain_xml(vm, disks, PASSWORD, domain_type="qemu", cpu_mode="host-model")
    disks_xml = root.findall("./devices/disk")
    assert [d.get("type") for d in disks_xml] == ["block", "file"]
    assert disks_xml[0].find("source").get("dev") == "/dev/vg0/disk-1"  # type: ignore[union-attr]
    assert disks_xml[1].find("driver").get("type") == "qcow2" and disks_xml[1].find("readonly") is not None  # type: ignore[union-attr]
    assert [d.find("target").get("dev") for d in disks_xml] == ["vda", "vdb"]  # type: ignore[union-attr]
    interfaces = root.findall("./devices/interface")
    assert [(i.get("type"), i.find("mac").get("address")) for i in interfaces] == [  # type: ignore[union-attr]
        ("network", nic_mac(vm.id, 0)),
        ("bridge", "52:54:00:00:00:01"),
    ]
    graphics = root.find("./devices/graphics")
    assert graphics is not None and graphics.get("listen") == "127.0.0.1" and graphics.get("passwd") == PASSWORD
    assert root.find("./devices/video/model").get("type") == "qxl"  # type: ignore[union-attr]
    assert root.find("./devices/memballoon").get("model") == "virtio"  # type: ignore[union-attr]
    assert root.find("./devices/serial").get("type") == "pty" and root.find("./devices/console") is not None  # type: ignore[union-attr]


def test_a_vnc_vm_gets_a_vnc_server_on_loopback_with_the_first_8_characters_of_its_password() -> None:
    vm = VirtualMachine(name="vnc-desk", graphics="vnc")
    root = ET.fromstring(domain_xml(vm, {}, PASSWORD))
    graphics = root.findall("./devices/graphics")
    assert [g.get("type") for g in graphics] == ["vnc"]
    assert graphics[0].get("listen") == "127.0.0.1" and graphics[0].get("passwd") == PASSWORD[:8]
    assert graphics[0].find("listen").get("address") == "127.0.0.1"  # type: ignore[union-attr]
    assert root.find("./devices/channel[@type='spicevmc']") is None
    spice = ET.fromstring(domain_xml(VirtualMachine(name="spice-desk"), {}, PASSWORD))
    assert [g.get("type") for g in spice.findall("./devices/graphics")] == ["spice"]
    assert spice.find("./devices/graphics").get("passwd") == PASSWORD  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        VirtualMachine(name="x", graphics="rdp")


def test_network_disks_and_buses() -> None:
    vm, disks = sample_vms()[2]
    root = ET.fromstring(domain_xml(vm, disks, PASSWORD, domain_type="qemu"))
    assert root.get("type") == "qemu"
    d3, d4, d5, d6 = root.findall("./devices/disk")
    assert [d.find("target").get("dev") for d in (d3, d4, d5, d6)] == ["vda", "sda", "sdb", "vdb"]  # type: ignore[union-attr]
    assert d3.find("source").get("dev") == "/dev/zvol/tank/d3"  # type: ignore[union-attr]
    source = d4.find("source")
    assert source is not None and (source.get("protocol"), source.get("name")) == ("iscsi", "iqn.2024-01.org.kerub:d4/1")
    assert source.find("host").attrib == {"name": "10.0.0.7", "port": "3260"}  # type: ignore[union-attr]
    assert source.find("auth").get("username") == "kerub-d4"  # type: ignore[union-attr]
    assert source.find("auth/secret").attrib == {"type": "iscsi", "usage": "kerub-d4"}  # type: ignore[union-attr]
    nfs = d5.find("source")
    assert nfs is not None and (d5.get("type"), nfs.get("protocol"), nfs.get("name")) == ("network", "nfs", "/srv/kerub/d5.img")
    assert d6.get("type") == "file" and d6.find("source").get("file") == "/mnt/nfs/d6.img"  # type: ignore[union-attr]
    assert root.find("./devices/controller[@type='scsi']").get("model") == "virtio-scsi"  # type: ignore[union-attr]
    assert PASSWORD not in iscsi_secret_xml("kerub-d4")


def test_memory_current_and_limits() -> None:
    vm = VirtualMachine(name="m", memory_min=256 * MIB, memory_max=1024 * MIB)
    root = ET.fromstring(domain_xml(vm, {}, PASSWORD, current_memory=512 * MIB))
    assert (root.findtext("memory"), root.findtext("currentMemory")) == ("1048576", "524288")
    with pytest.raises(ValueError, match="between"):
        domain_xml(vm, {}, PASSWORD, current_memory=128 * MIB)


def test_disks_must_match_the_vm_links() -> None:
    vm, disks = sample_vms()[1]
    with pytest.raises(ValueError, match="no storage given for disk"):
        domain_xml(vm, {"d1": disks["d1"]}, PASSWORD)
    with pytest.raises(ValueError, match="does not use"):
        domain_xml(vm, {**disks, "zz": disks["d1"]}, PASSWORD)
    cd = VirtualMachine(name="cd", disks=[DiskLink(disk_id="d1", device="cdrom")])
    with pytest.raises(ValueError, match="CD-ROM"):
        domain_xml(cd, {"d1": disks["d1"]}, PASSWORD)


def test_default_nics_stable_macs_and_names() -> None:
    vm = VirtualMachine(name="n")
    root = ET.fromstring(domain_xml(vm, {}, PASSWORD, nics_default=[Nic(network="lan")]))
    assert root.find("./devices/interface/source").get("network") == "lan"  # type: ignore[union-attr]
    assert nic_mac(vm.id, 0) == nic_mac(vm.id, 0) != nic_mac(vm.id, 1)
    assert [target_dev("virtio", i) for i in (0, 1, 25, 26, 27, 701, 702)] == [
        "vda", "vdb", "vdz", "vdaa", "vdab", "vdzz", "vdaaa"]
    assert target_dev("ide", 2) == "hdc"
    assert domain_uuid("not-a-uuid") == domain_uuid("not-a-uuid") != domain_uuid("not-a-uuid2")


# --- hostile text ----------------------------------------------------------------------------------

HOSTILE = ["a'b", 'a"b', "a<b>", "a&b", "x]]>y", "<!--", "a b", "a\nb", "a/../b", "$(reboot)", "é"]


@pytest.mark.parametrize("bad", HOSTILE)
def test_hostile_names_are_refused_even_without_model_validation(bad: str) -> None:
    """Documents built with model_construct skip pydantic validation: domain_xml checks again."""
    vm = VirtualMachine.model_construct(**{**VirtualMachine(name="ok").model_dump(), "name": bad})
    with pytest.raises(ValueError):
        domain_xml(vm, {}, PASSWORD)
    nic = Nic.model_construct(network=bad, bridge=None, mac=None, model="virtio")
    with pytest.raises(ValueError):
        domain_xml(VirtualMachine(name="ok"), {}, PASSWORD, nics_default=[nic])
    lv = LvmAllocation.model_construct(host_id="h", capability_id="c", vg="vg0", lv=bad, format="raw",
                                       type="lvm", thin_pool=None, mirrors=0, actual_size=None)
    vm2 = VirtualMachine(name="ok", disks=[DiskLink(disk_id="d1")])
    with pytest.raises(ValueError):
        domain_xml(vm2, {"d1": (disk("d1", "x"), lv)}, PASSWORD)
    with pytest.raises(ValueError):
        domain_xml(VirtualMachine(name="ok"), {}, bad + "-long-enough")


@pytest.mark.parametrize("path", ["/srv/it's \"quoted\" <&> ]]> here.img", "/srv/a&amp;b.img", "/srv/<!-- x -->.img"])
def test_hostile_paths_are_escaped_and_round_trip(path: str) -> None:
    vm = VirtualMachine(name="ok", disks=[DiskLink(disk_id="d1")])
    text = domain_xml(vm, {"d1": (disk("d1", "x"), file_alloc(path))}, PASSWORD)
    root = ET.fromstring(text)  # parses: nothing broke out
    assert root.find("./devices/disk/source").get("file") == path  # type: ignore[union-attr]
    assert len(root.findall("./devices/disk")) == 1 and len(root) == len(ET.fromstring(domain_xml(
        vm, {"d1": (disk("d1", "x"), file_alloc("/srv/plain.img"))}, PASSWORD)))


def test_control_characters_in_a_path_are_refused() -> None:
    vm = VirtualMachine(name="ok", disks=[DiskLink(disk_id="d1")])
    alloc = FileAllocation.model_construct(host_id="h", capability_id="c", path="/srv/a\x01b", format="raw",
                                           type="file", actual_size=None)
    with pytest.raises(ValueError):
        domain_xml(vm, {"d1": (disk("d1", "x"), alloc)}, PASSWORD)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_accepted_image_path_round_trips(tail: str) -> None:
    vm = VirtualMachine(name="ok", disks=[DiskLink(disk_id="d1")])
    path = "/srv/" + tail
    try:
        alloc = file_alloc(path)
        text = domain_xml(vm, {"d1": (disk("d1", "x"), alloc)}, PASSWORD)
    except ValueError:
        return
    assert ET.fromstring(text).find("./devices/disk/source").get("file") == path  # type: ignore[union-attr]


# --- boot order, CD-ROMs, the cloud-init seed, the accelerator -------------------------------------

SEED = "/var/lib/kerub-tui/seeds/kerub-seed-vm-0123456789abcdef.iso"


def test_boot_order_is_rendered_in_the_vm_order() -> None:
    vm, disks = sample_vms()[-1]
    root = ET.fromstring(domain_xml(vm, disks, PASSWORD))
    assert [b.get("dev") for b in root.findall("./os/boot")] == ["cdrom", "hd", "network"]
    plain = ET.fromstring(domain_xml(*sample_vms()[0], PASSWORD))
    assert [b.get("dev") for b in plain.findall("./os/boot")] == ["hd"]  # the default: the first hard disk
    cdrom = root.findall("./devices/disk")[1]
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None
    assert cdrom.find("target").attrib == {"dev": "sda", "bus": "sata"}  # type: ignore[union-attr]
    assert cdrom.find("source").get("file") == "/var/lib/kerub-tui/images/debian.iso"  # type: ignore[union-attr]
    # a document built without validation cannot smuggle a device or a duplicate in
    for bad in (["hd", "hd"], ["floppy"], ["hd; reboot"]):
        forged = vm.model_copy(update={"boot": bad})
        with pytest.raises(ValueError, match="boot order"):
            domain_xml(forged, disks, PASSWORD)
    with pytest.raises(ValueError, match="names a device twice"):
        VirtualMachine(name="x", boot=["cdrom", "cdrom"])
    with pytest.raises(ValueError):
        VirtualMachine(name="x", boot=[])


def test_the_seed_is_one_more_read_only_cdrom_on_virtio_scsi() -> None:
    vm, disks = sample_vms()[-1]
    root = ET.fromstring(domain_xml(vm, disks, PASSWORD, seed=SEED))
    seed = root.findall("./devices/disk")[-1]
    assert seed.get("device") == "cdrom" and seed.find("readonly") is not None
    assert seed.find("source").get("file") == SEED  # type: ignore[union-attr]
    # after the ISO; not SATA: Debian's cloud kernel has no AHCI driver (virtio-scsi is in every cloud kernel)
    assert seed.find("target").attrib == {"dev": "sdb", "bus": "scsi"}  # type: ignore[union-attr]
    assert root.find("./devices/controller[@type='scsi']").get("model") == "virtio-scsi"  # type: ignore[union-attr]
    assert seed.find("driver").get("type") == "raw"  # type: ignore[union-attr]
    for bad in ("relative/seed.iso", "/var/lib/../seed.iso", "/seed\n.iso"):
        with pytest.raises(ValueError):
            domain_xml(vm, disks, PASSWORD, seed=bad)


def test_accelerator_is_discovered_and_the_admin_may_override_it() -> None:
    from kerub_tui.core.models import Host, HostCapabilities, HypervisorInfo
    from kerub_tui.hosts.kvm import host_accelerator

    def host(accel: str, kvm: bool | None) -> Host:
        caps = None if kvm is None else HostCapabilities(hypervisor=HypervisorInfo(
            kvm=kvm, reason=None if kvm else "libvirt offers no kvm domain for x86_64"))
        return Host(name="h", address="10.0.0.1", accel=accel, capabilities=caps)

    assert (host_accelerator(host("auto", True)).name, host_accelerator(host("auto", True)).domain_type) == ("kvm", "kvm")
    no_kvm = host_accelerator(host("auto", False))
    assert (no_kvm.name, no_kvm.domain_type) == ("tcg", "qemu") and "no kvm domain" in no_kvm.why
    forced = host_accelerator(host("tcg", True))
    assert (forced.domain_type, forced.forced_tcg) == ("qemu", True) and "kvm is available" in forced.why
    assert not host_accelerator(host("tcg", False)).forced_tcg
    assert host_accelerator(host("auto", None)).name == "kvm"  # not discovered yet: what libvirt would pick
    assert host_accelerator(host("kvm", False)).domain_type == "kvm"
    with pytest.raises(ValueError):
        Host(name="h", address="10.0.0.1", accel="hvf")
    vm, disks = sample_vms()[0]
    assert ET.fromstring(domain_xml(vm, disks, PASSWORD, domain_type=forced.domain_type)).get("type") == "qemu"


# --- libvirt's own schema ------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None,
                    reason="virt-xml-validate needs libvirt-clients and xmllint (libxml2-utils)")
def test_libvirt_schema_accepts_every_sample(tmp_path: Path) -> None:
    documents = [domain_xml(vm, disks, PASSWORD) for vm, disks in sample_vms()]
    vm, disks = sample_vms()[-1]
    documents.append(domain_xml(vm, disks, PASSWORD, domain_type="qemu", seed=SEED))
    documents.append(iscsi_secret_xml("kerub-d4", "0b3a3f26-9a4f-4a8e-8a38-3f7a8e0c1d22"))
    for index, text in enumerate(documents):
        path = tmp_path / f"doc{index}.xml"
        path.write_text(text)
        schema = "secret" if text.startswith("<secret") else "domain"
        result = subprocess.run(["virt-xml-validate", str(path), schema], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, f"{text}\n{result.stderr}"


# --- parsing libvirt's XML, states, display text -----------------------------------------------------


def test_parse_captured_live_domain() -> None:
    """The live XML libvirt 9.0 returned for the domain started in test_defined_and_started_for_real."""
    live = (CAPTURES / "libvirt-live-domain.xml").read_text()
    facts = parse_domain_xml(live)
    assert facts.name == "kerub-live" and facts.running_id is not None and facts.kerub_vm_id == facts.uuid
    assert facts.spice is not None and facts.spice[0] == "127.0.0.1" and facts.spice == parse_spice_port(live)
    assert [d.target for d in facts.disks] == ["vda", "vdb", "vdc", "vdd"]
    assert facts.disks[2].source is not None and facts.disks[2].source.startswith("iscsi://127.0.0.1/")
    assert facts.disks[3].source is not None and facts.disks[3].source.startswith("nfs://127.0.0.1/")
    assert facts.memory_max == 64 * MIB and facts.vcpus == 1
    assert "passwd" not in live  # libvirt never returns the SPICE password without the secure flag


def test_parse_captured_live_vnc_domain() -> None:
    """The live XML (XMLDesc(0), as the monitor reads it) libvirt returned on the lab for a VM with
    graphics="vnc" (tests/integration/test_vnc_lab.py, KERUB_UPDATE_CAPTURES=1): where its VNC server
    listens, for the VM detail's console row, as SPICE's is."""
    live = (CAPTURES / "libvirt-live-domain-vnc.xml").read_text()
    facts = parse_domain_xml(live)
    assert facts.name == "vncdesk" and facts.running_id is not None and facts.kerub_vm_id == facts.uuid
    assert facts.spice is None and parse_spice_port(live) is None
    assert facts.vnc == ("127.0.0.1", 5900) == parse_vnc_port(live)
    assert facts.uuid is not None
    up = domain_dynamic(facts.uuid, "host-1", VmStatus.up, live)
    assert (up.vnc_address, up.vnc_port, up.spice_address, up.spice_port) == ("127.0.0.1", 5900, None, None)
    down = domain_dynamic(facts.uuid, "host-1", VmStatus.down, live)
    assert (down.vnc_address, down.vnc_port) == (None, None)
    assert "passwd" not in live  # without the secure flag libvirt never returns the password


def test_parse_vnc_port_edge_cases() -> None:
    spice = (CAPTURES / "libvirt-live-domain.xml").read_text()
    assert parse_vnc_port(spice) is None
    assert parse_vnc_port("<domain><devices><graphics type='vnc' port='-1' autoport='yes'/></devices></domain>") is None
    assert parse_vnc_port("<domain><devices><graphics type='vnc' port='5907' listen='::1'/></devices></domain>") == (
        "::1", 5907)
    with pytest.raises(ValueError, match="no graphics protocol"):
        parse_graphics_port(spice, "rdp']|//*[@type='spice")

def test_parse_spice_port_edge_cases() -> None:
    assert parse_spice_port("<domain><devices/></domain>") is None
    assert parse_spice_port("<domain><devices><graphics type='spice' port='-1' autoport='yes'/></devices></domain>") is None
    assert parse_spice_port("<domain><devices><graphics type='spice' port='5901' listen='::1'/></devices></domain>") == ("::1", 5901)
    assert parse_spice_port("<domain><devices><graphics type='vnc' port='5900'/></devices></domain>") is None
    for bad in ("", "not xml", "<domain>", '<!DOCTYPE d [<!ENTITY a "b">]><domain>&a;</domain>'):
        with pytest.raises(ValueError):
            parse_spice_port(bad)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_domain_parser_never_crashes(text: str) -> None:
    for candidate in (text, f"<domain><name>x</name>{text}</domain>"):
        try:
            parse_domain_xml(candidate)
        except ValueError:
            pass


def test_states_and_events() -> None:
    import libvirt

    assert vm_status(libvirt.VIR_DOMAIN_RUNNING) == VmStatus.up
    assert vm_status(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_USER) == VmStatus.paused
    assert vm_status(libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_MIGRATION) == VmStatus.migrating
    assert vm_status(libvirt.VIR_DOMAIN_SHUTOFF) == VmStatus.down == vm_status(libvirt.VIR_DOMAIN_CRASHED)
    assert vm_status(libvirt.VIR_DOMAIN_NOSTATE) is None
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_STARTED) == VmStatus.up
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED) == VmStatus.migrating
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED) == VmStatus.paused
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED) == VmStatus.down
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_DEFINED) is None
    assert lifecycle_status(libvirt.VIR_DOMAIN_EVENT_UNDEFINED) is None


def test_describe_and_migration_uris() -> None:
    assert describe_define("web-1") == "virsh define web-1.xml"
    assert describe_start("web-1") == "virsh start web-1"
    assert describe_shutdown("web-1", 60) == "virsh shutdown web-1 (then virsh destroy web-1 if still running after 60 s)"
    assert describe_destroy("w") == "virsh destroy w" and describe_undefine("w") == "virsh undefine w"
    assert describe_pause("w") == "virsh suspend w" and describe_resume("w") == "virsh resume w"
    assert describe_migrate("w", "10.0.0.2") == (
        "virsh migrate --live --persistent --undefinesource w qemu+ssh://10.0.0.2/system --migrateuri tcp://10.0.0.2"
    )
    assert describe_migrate("w", "fd00::2", peer_to_peer=True).endswith("qemu+ssh://root@[fd00::2]/system")
    assert migrate_uri("fd00::2") == "tcp://[fd00::2]" and peer_uri("h.example") == "qemu+ssh://root@h.example/system"
    for call in (lambda: describe_start("a;b"), lambda: migrate_uri("x y"), lambda: describe_shutdown("w", 0)):
        with pytest.raises(ValueError):
            call()


# --- for real: a throwaway libvirtd ----------------------------------------------------------------


def test_defined_and_started_for_real(private_ns: PrivateNamespace, tmp_path: Path) -> None:
    """Define and start a domain using every disk source at once, read its SPICE port from the live
    XML and probe it, pause/resume/destroy it, and check libvirt's states map to VmStatus."""
    libvirt = pytest.importorskip("libvirt")
    for tool in ("qemu-img", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    uri = start_libvirtd(private_ns)
    start_tgtd(private_ns)
    ganesha_config = tmp_path / "ganesha.conf"
    ganesha_config.write_text(GANESHA_CORE)
    start_ganesha(private_ns, ganesha_config)
    private_ns.run("ip link add br-kerub type bridge && ip link set br-kerub up")
    domain_type = "kvm" if Path("/dev/kvm").exists() else "qemu"

    images = tmp_path / "images"
    images.mkdir()
    private_ns.run(f"qemu-img create -q -f raw {images}/root.raw 32M && qemu-img create -q -f qcow2 {images}/data.qcow2 32M"
                   f" && qemu-img create -q -f raw {images}/lun.raw 16M")
    export = tmp_path / "export"
    export.mkdir()
    private_ns.run(f"qemu-img create -q -f raw {export}/nfs.raw 8M")
    # iSCSI share with CHAP as the planner's share step makes it (the secret on standard input), and the CHAP
    # secret in libvirt as its start step defines it
    chap = "Chap0123456789ab"
    iqn = "iqn.2024-01.org.kerub:live-lun"
    private_ns.run(iscsi_share_chap(1, iqn, str(images / "lun.raw"), "kerub-live", initiator_address="127.0.0.1"),
                   input=chap.encode())
    private_ns.run(ganesha_add_export(51, str(export), config=str(ganesha_config),
                                      export_dir=str(tmp_path / "exports"), pid_file="/run/ganesha/ganesha.pid"))
    wait_until(lambda: private_ns.run(f"qemu-img info nfs://127.0.0.1{export}/nfs.raw", check=False).returncode == 0,
               "the NFS export")

    conn = libvirt.open(uri)
    try:
        usage = "kerub-iscsi-live"
        assert _define_iscsi_secret(conn, usage, "a-wrong-one-0123") == f"iscsi secret {usage} defined"
        assert _define_iscsi_secret(conn, usage, chap) == f"iscsi secret {usage} set again"
        [secret] = conn.listAllSecrets()
        assert secret.usageID() == usage and chap not in secret.XMLDesc(0)
        assert list_iscsi_secrets(conn) == f"{usage}\n"
        conn.networkCreateXML("<network><name>kerub-lan</name><forward mode='bridge'/><bridge name='br-kerub'/></network>")

        disks = {
            f"d{i}": disk(f"d{i}", f"disk-{i}") for i in range(1, 5)
        }
        vm = VirtualMachine(
            name="kerub-live", cpus=1, memory_min=48 * MIB, memory_max=64 * MIB,
            disks=[DiskLink(disk_id=f"d{i}") for i in range(1, 5)],
            nics=[Nic(bridge="br-kerub"), Nic(network="kerub-lan")],
        )
        backing = {
            "d1": (disks["d1"], file_alloc(f"{images}/root.raw")),
            "d2": (disks["d2"], file_alloc(f"{images}/data.qcow2", "qcow2")),
            "d3": (disks["d3"], IscsiDiskSource("127.0.0.1", iqn, chap_user="kerub-live",
                                                secret_usage="kerub-iscsi-live")),
            "d4": (disks["d4"], NfsDiskSource("127.0.0.1", str(export), "nfs.raw")),
        }
        password = new_spice_password()
        dom = conn.defineXML(domain_xml(vm, backing, password, domain_type=domain_type))
        dom.create()
        try:
            assert vm_status(*dom.state()) == VmStatus.up
            live = dom.XMLDesc(0)
            facts = parse_domain_xml(live)
            assert facts.kerub_vm_id == vm.id and facts.uuid == vm.id and facts.running_id is not None
            assert [d.target for d in facts.disks] == ["vda", "vdb", "vdc", "vdd"]
            assert password not in live
            # qemu's initiator is logged in to tgtd with CHAP
            shown = private_ns.run("tgtadm --lld iscsi --mode target --op show").stdout
            assert "Initiator: " in shown and "IP Address: 127.0.0.1" in shown
            spice = parse_spice_port(live)
            assert spice is not None and spice[0] == "127.0.0.1"
            probe = private_ns.python(
                "import asyncio;from kerub_tui.hosts.spice import spice_link_probe;"
                f"r=asyncio.run(spice_link_probe('127.0.0.1',{spice[1]}));print(r.major,r.error)"
            )
            assert probe.returncode == 0, probe.stderr
            assert probe.stdout.split() == ["2", "0"]  # SPICE 2.x, link accepted
            dynamic = domain_dynamic(vm.id, "host-1", vm_status(*dom.state()) or VmStatus.down, live)
            assert (dynamic.spice_address, dynamic.spice_port, dynamic.host_id) == ("127.0.0.1", spice[1], "host-1")
            if os.environ.get("KERUB_UPDATE_CAPTURES") == "1":  # refresh the capture on demand only
                (CAPTURES / "libvirt-live-domain.xml").write_text(live)

            dom.suspend()
            assert vm_status(*dom.state()) == VmStatus.paused
            dom.resume()
            assert vm_status(*dom.state()) == VmStatus.up
        finally:
            if dom.isActive():
                dom.destroy()
        assert vm_status(*dom.state()) == VmStatus.down
        dom.undefine()
        assert conn.listAllDomains() == []
        assert _undefine_iscsi_secret(conn, usage) == f"iscsi secret {usage} undefined"
        assert _undefine_iscsi_secret(conn, usage) == f"no iscsi secret {usage} here"
        assert conn.listAllSecrets() == [] and list_iscsi_secrets(conn) == ""
    finally:
        conn.close()
        stop_tgtd(private_ns)

