"""Booting real guests from the command line, in process (issue 11 items 2-5): CD-ROMs and the boot
order, eject, the accelerator of a host. The images are documents written straight into the store
(image import is another command's business)."""

from __future__ import annotations

import json

import pytest

from kerub_tui.cli import main
from kerub_tui.core.models import (
    AuditEntry,
    Event,
    Host,
    HostCapabilities,
    HypervisorInfo,
    ImageInfo,
    VirtualMachine,
    VirtualStorageDevice,
)
from kerub_tui.core.store import Store

MIB = 1 << 20
SHA = "0" * 64


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("KERUB_TUI_DATA", str(path))
    return path


def run(*argv, capsys):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def put(data_dir, *docs):
    store = Store.open(data_dir)
    try:
        for doc in docs:
            store.put(doc)
    finally:
        store.close()


def read(data_dir, kind, name):
    store = Store.open(data_dir, readonly=True)
    try:
        return store.find_by_name(kind, name)
    finally:
        store.close()


def image(name: str, fmt: str = "iso", size: int = 5 * MIB) -> VirtualStorageDevice:
    return VirtualStorageDevice(name=name, size=size, read_only=True,
                                image=ImageInfo(format=fmt, virtual_size=size, file_size=size, sha256=SHA))


def test_cdrom_install_boots_from_the_cdrom_then_the_disk(data_dir, capsys):
    run("disk", "list", capsys=capsys)  # makes the data dir
    iso = image("debian-12")
    put(data_dir, iso)
    code, out, err = run("vm", "create", "inst", "--memory", "512M", "--cdrom", "debian-12", "--disk", "20G",
                         capsys=capsys)
    assert code == 0, err
    vm = read(data_dir, VirtualMachine, "inst")
    assert vm.boot == ["cdrom", "hd"]
    system, cdrom = vm.disks
    assert (system.device, system.bus) == ("disk", "virtio")
    assert (cdrom.disk_id, cdrom.device, cdrom.bus, cdrom.read_only) == (iso.id, "cdrom", "sata", True)
    assert read(data_dir, VirtualStorageDevice, "inst-disk0").size == 20 << 30
    code, out, err = run("vm", "show", "inst", capsys=capsys)
    assert "boot cdrom,hd" in out and "cdrom debian-12 (sata, read-only)" in out and "disk inst-disk0 (virtio)" in out
    shown = json.loads(run("vm", "show", "inst", "--json", capsys=capsys)[1])
    assert shown["vm"]["boot"] == ["cdrom", "hd"]

    code, out, err = run("vm", "create", "pxe", "--memory", "256M", "--boot", "network,hd", "--disk", "1G",
                         capsys=capsys)
    assert code == 0, err
    assert read(data_dir, VirtualMachine, "pxe").boot == ["network", "hd"]
    code, out, err = run("vm", "create", "later", "--memory", "256M", "--cdrom", "debian-12", "--boot", "hd,cdrom",
                         capsys=capsys)
    assert code == 0 and read(data_dir, VirtualMachine, "later").boot == ["hd", "cdrom"]

    # eject: the ISO link goes (the VM is not running: nothing to do on a host)
    code, out, err = run("vm", "eject", "inst", capsys=capsys)
    assert code == 0 and "CD-ROM ejected" in out, err
    vm = read(data_dir, VirtualMachine, "inst")
    assert [link.device for link in vm.disks] == ["disk"] and vm.boot == ["cdrom", "hd"]
    code, out, err = run("vm", "eject", "inst", capsys=capsys)
    assert code == 1 and err.strip() == "kerub-tui: VM inst has no CD-ROM to eject"
    store = Store.open(data_dir, readonly=True)
    assert any(a.action == "vm eject" and a.target == "inst" and a.outcome == "debian-12"
               for a in store.list(AuditEntry))
    store.close()


@pytest.mark.parametrize("argv,message", [
    (["vm", "create", "a", "--memory", "256M", "--boot", "floppy"], "boot order 'floppy'"),
    (["vm", "create", "a", "--memory", "256M", "--boot", "hd,hd"], "names a device twice"),
    (["vm", "create", "a", "--memory", "256M", "--boot", "hd;reboot"], "boot order 'hd;reboot'"),
    (["vm", "create", "a", "--memory", "256M", "--cdrom", "nope"], "no disk named 'nope'"),
    (["vm", "create", "a", "--memory", "256M", "--cdrom", "plain"], "disk plain is not an image"),
    (["vm", "create", "a", "--memory", "256M", "--cdrom", "cloud"], "image cloud is qcow2: a CD-ROM needs iso"),
    (["vm", "create", "a", "--memory", "256M", "--cdrom", "$(reboot)"], "no disk named '$(reboot)'"),
    (["vm", "eject", "ghost"], "no vm named 'ghost'"),
    (["host", "set", "ghost", "--accel", "tcg"], "no host named 'ghost'"),
    (["host", "set", "h1", "--accel", "hvf"], "invalid choice: 'hvf'"),
    (["host", "set", "h1", "--accel", "kvm"], "host h1 cannot run kvm guests"),
])
def test_refusals_are_one_line_and_leave_nothing(data_dir, capsys, argv, message):
    run("disk", "list", capsys=capsys)
    put(data_dir, image("cloud", "qcow2"), VirtualStorageDevice(name="plain", size=MIB),
        Host(name="h1", address="10.0.0.1", capabilities=HostCapabilities(
            hypervisor=HypervisorInfo(kvm=False, reason="libvirt offers no kvm domain for x86_64"))))
    code, out, err = run(*argv, capsys=capsys)
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert read(data_dir, VirtualMachine, "a") is None and read(data_dir, VirtualStorageDevice, "a-disk0") is None


def test_a_refused_vm_leaves_no_disk_behind(data_dir, capsys):
    code, out, err = run("vm", "create", "a", "--memory", "256M", "--disk", "1G", "--cdrom", "missing",
                         capsys=capsys)
    assert code == 1 and read(data_dir, VirtualStorageDevice, "a-disk0") is None


def test_host_accelerator_override_is_shown_and_recorded(data_dir, capsys):
    run("disk", "list", capsys=capsys)
    put(data_dir, Host(name="h1", address="10.0.0.1", capabilities=HostCapabilities(
        hypervisor=HypervisorInfo(kvm=True))))
    assert "accelerator kvm (discovered)" in run("host", "show", "h1", capsys=capsys)[1]
    code, out, err = run("host", "set", "h1", "--accel", "tcg", capsys=capsys)
    assert code == 0, err
    assert out.strip() == "host h1: accelerator tcg (set by the admin; kvm is available)"
    assert "accelerator tcg (set by the admin; kvm is available)" in run("host", "show", "h1", capsys=capsys)[1]
    assert json.loads(run("host", "show", "h1", "--json", capsys=capsys)[1])["host"]["accel"] == "tcg"
    store = Store.open(data_dir, readonly=True)
    assert [e.type for e in store.list(Event) if e.type == "accel-forced"] == ["accel-forced"]
    assert any(a.action == "host set" and a.outcome == "accel tcg" for a in store.list(AuditEntry))
    store.close()
    assert run("host", "set", "h1", "--accel", "auto", capsys=capsys)[0] == 0
    assert read(data_dir, Host, "h1").accel == "auto"
