"""Booting real guests from the command line, in process (issue 11 items 2-5): CD-ROMs and the boot
order, eject, the accelerator of a host. The images are documents written straight into the store
(image import is another command's business)."""

from __future__ import annotations

import json

import pytest

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

from ._cli import run

MIB = 1 << 20
SHA = "0" * 64


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
    code, _out, err = run(*argv, capsys=capsys)
    assert code != 0 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert read(data_dir, VirtualMachine, "a") is None and read(data_dir, VirtualStorageDevice, "a-disk0") is None


def test_a_refused_vm_leaves_no_disk_behind(data_dir, capsys):
    code, _out, _err = run("vm", "create", "a", "--memory", "256M", "--disk", "1G", "--cdrom", "missing",
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


KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGr7Qq0n0eQm2E4Oq2m3ZbW8u2Kq0x8mRk8o1m8p2hXw admin@jump"
SECRET = "hunter2-Sup3r-s3cret"


def test_clone_of_an_image_with_cloud_init(data_dir, tmp_path, capsys):
    run("disk", "list", capsys=capsys)
    put(data_dir, image("deb12", "qcow2", size=2 << 30))
    (tmp_path / "a.pub").write_text(f"# mine\n{KEY}\n")
    (tmp_path / "user-data").write_text(f"#cloud-config\npassword: {SECRET}\n")
    (tmp_path / "net").write_text("version: 2\n")
    code, _out, err = run("vm", "create", "web1", "--memory", "512M", "--from", "deb12", "--disk", "20G",
                         "--disk", "1G", "--ssh-key", str(tmp_path / "a.pub"), "--user-data",
                         str(tmp_path / "user-data"), "--network-config", str(tmp_path / "net"), capsys=capsys)
    assert code == 0, err
    vm = read(data_dir, VirtualMachine, "web1")
    assert vm.cloud_init.ssh_keys == [KEY] and SECRET in vm.cloud_init.user_data
    assert vm.cloud_init.network_config == "version: 2\n"
    system = read(data_dir, VirtualStorageDevice, "web1-disk0")
    assert system.size == 20 << 30 and next(e.spec() for e in system.expectations).startswith("clone-of:")
    assert read(data_dir, VirtualStorageDevice, "web1-disk1").size == 1 << 30
    assert "cloud-init: 1 ssh key(s), user data (" in run("vm", "show", "web1", capsys=capsys)[1]
    # without --disk the clone is the image's size
    assert run("vm", "create", "web2", "--memory", "512M", "--from", "deb12", capsys=capsys)[0] == 0
    assert read(data_dir, VirtualStorageDevice, "web2-disk0").size == 2 << 30
    store = Store.open(data_dir, readonly=True)
    try:
        for doc in [*store.list(AuditEntry), *store.list(Event)]:
            assert SECRET not in doc.model_dump_json()
        assert any(a.action == "vm create" and a.target == "web1" and "1 ssh key(s)" in a.outcome
                   for a in store.list(AuditEntry))
    finally:
        store.close()


@pytest.mark.parametrize("extra,message", [
    (["--from", "deb12", "--disk", "1G"], "disk size 1.0G is smaller than image deb12 (2.0G)"),
    (["--from", "iso"], "image iso is iso: a clone needs raw or qcow2"),
    (["--from", "plain"], "disk plain is not an image"),
    (["--ssh-key", "/nonexistent/key.pub"], "ssh key file /nonexistent/key.pub: No such file or directory"),
    (["--ssh-key", "EMPTY"], "holds no key"),
    (["--ssh-key", "BADKEY"], "is not an OpenSSH public key line"),
    (["--user-data", "BIG"], "is larger than 64 KiB"),
    (["--user-data", "BINARY"], "is not UTF-8 text"),
])
def test_clone_and_cloud_init_refusals(data_dir, tmp_path, capsys, extra, message):
    run("disk", "list", capsys=capsys)
    put(data_dir, image("deb12", "qcow2", size=2 << 30), image("iso"), VirtualStorageDevice(name="plain", size=MIB))
    files = {"EMPTY": b"# nothing\n", "BADKEY": b"ssh-ed25519 $(reboot)\n", "BIG": b"x" * (65 * 1024),
             "BINARY": b"\xff\xfe\x00"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    extra = [str(tmp_path / e) if e in files else e for e in extra]
    code, _out, err = run("vm", "create", "a", "--memory", "256M", *extra, "--disk", "4G", capsys=capsys)
    assert code == 1 and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert read(data_dir, VirtualMachine, "a") is None and read(data_dir, VirtualStorageDevice, "a-disk0") is None


def test_vm_clone_copies_a_stopped_vm_with_new_disks(data_dir, capsys):
    run("disk", "list", capsys=capsys)
    iso = image("inst")
    put(data_dir, iso)
    assert run("vm", "create", "src", "--memory", "512M:1G", "--cpus", "2", "--disk", "2G", "--cdrom", "inst",
               "--expect", "availability:up", "--expect", "cpu-architecture:x86_64", capsys=capsys)[0] == 0
    code, _out, err = run("vm", "clone", "src", "copy", capsys=capsys)
    assert code == 0, err
    src, copy = read(data_dir, VirtualMachine, "src"), read(data_dir, VirtualMachine, "copy")
    assert (copy.cpus, copy.memory_min, copy.memory_max, copy.boot) == (2, 512 * MIB, 1 << 30, ["cdrom", "hd"])
    assert copy.disks[0].disk_id != src.disks[0].disk_id and copy.disks[1].disk_id == iso.id  # the ISO is shared
    new = read(data_dir, VirtualStorageDevice, "copy-disk0")
    assert new.size == 2 << 30 and [e.spec() for e in new.expectations] == [f"clone-of:{src.disks[0].disk_id}@want"]
    assert [e.type for e in copy.expectations] == ["cpu-architecture"]  # not started by the copy
    assert run("vm", "clone", "src", "copy", capsys=capsys)[2].strip() == "kerub-tui: a VM named 'copy' already exists"
    assert "no vm named 'ghost'" in run("vm", "clone", "ghost", "x", capsys=capsys)[2]
