"""NFS, end to end where this machine allows it: nfs-ganesha (userspace, VFS FSAL) + rpcbind run in a
private namespace; exports are added and removed by the builders' dropped file + SIGHUP; qemu's own
NFS client (libnfs, qemu-block-extra) reads and writes an image through the export.

What cannot run here: this kernel has neither the NFS server (nfsd) nor the NFS client, so
``exportfs`` and ``mount -t nfs`` are tested for real only where the kernel has them (see the skip
reasons) and otherwise as command text. ganesha's D-Bus control is not used: there is no D-Bus here
(ganesha logs "DBUS not initialized"), and SIGHUP reloads exports without it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kerub_tui.hosts.nfs import (
    GANESHA_PID_FILE,
    NfsDiskSource,
    ganesha_add_export,
    ganesha_export_block,
    ganesha_remove_export,
    nfs_export,
    nfs_exports_command,
    nfs_mount,
    nfs_qemu_url,
    nfs_unexport,
    nfs_unmount,
    parse_showmount_exports,
)
from tests.unit.test_ops_netns import (  # noqa: F401 (private_ns is a fixture)
    GANESHA_CORE,
    PrivateNamespace,
    private_ns,
    start_ganesha,
    wait_until,
)

MIB = 1 << 20


def kernel_has(filesystem: str) -> bool:
    try:
        return any(line.split()[-1] == filesystem for line in Path("/proc/filesystems").read_text().splitlines())
    except OSError:
        return False


@pytest.fixture
def ganesha(private_ns: PrivateNamespace, tmp_path: Path) -> tuple[PrivateNamespace, Path]:
    if shutil.which("qemu-img") is None or shutil.which("showmount") is None:
        pytest.skip("qemu-img and showmount (nfs-common) are needed")
    config = tmp_path / "ganesha.conf"
    # no Bind_addr: ganesha 4.3 resolves it with AI_ADDRCONFIG, which fails in a namespace that has
    # only a loopback; the namespace's loopback is private anyway
    config.write_text(GANESHA_CORE)
    start_ganesha(private_ns, config)
    return private_ns, config


def test_ganesha_export_read_and_written_by_qemus_nfs_client(ganesha: tuple[PrivateNamespace, Path], tmp_path: Path) -> None:
    ns, config = ganesha
    export = tmp_path / "export"
    export.mkdir()
    image = export / "disk-1.img"
    pattern = os.urandom(MIB)
    with image.open("wb") as f:
        f.truncate(8 * MIB)
        f.seek(2 * MIB)
        f.write(pattern)
    export_dir = str(tmp_path / "kerub-exports")

    add = ganesha_add_export(41, str(export), config=str(config), export_dir=export_dir, pid_file=GANESHA_PID_FILE)
    ns.run(add)
    ns.run(add)  # idempotent: the %include line is written once
    assert config.read_text().count("%include") == 1

    def exports() -> dict[str, list[str]]:
        return parse_showmount_exports(ns.run(nfs_exports_command("127.0.0.1")).stdout)

    wait_until(lambda: str(export) in exports(), "the export after SIGHUP")  # the reload is asynchronous
    assert exports()[str(export)] == ["(everyone)"]

    source = NfsDiskSource("127.0.0.1", str(export), "disk-1.img")
    info = ns.run(f"qemu-img info --output=json {source.url}")
    assert '"virtual-size": 8388608' in info.stdout
    copy = tmp_path / "copy.raw"
    ns.run(f"qemu-img convert -f raw -O raw {source.url} {copy}")
    assert copy.read_bytes()[2 * MIB : 3 * MIB] == pattern
    # and written through qemu's client: a new qcow2 image made on the export
    ns.run(f"qemu-img create -q -f qcow2 {nfs_qemu_url('127.0.0.1', str(export), 'new.qcow2')} 16M")
    assert (export / "new.qcow2").read_bytes()[:4] == b"QFI\xfb"

    remove = ganesha_remove_export(41, config=str(config), export_dir=export_dir, pid_file=GANESHA_PID_FILE)
    ns.run(remove)
    wait_until(lambda: str(export) not in exports(), "the export to go after SIGHUP")
    assert "%include" not in config.read_text() and not any(Path(export_dir).iterdir())
    ns.run(remove)  # idempotent
    assert ns.run(f"qemu-img info {source.url}", check=False).returncode != 0


def test_ganesha_export_restricted_to_a_client(ganesha: tuple[PrivateNamespace, Path], tmp_path: Path) -> None:
    """Allowed for 127.0.0.1, then re-added for 127.0.0.2 only (same id: the export is updated)."""
    ns, config = ganesha
    export = tmp_path / "restricted"
    export.mkdir()
    (export / "a.img").write_bytes(b"\0" * MIB)
    url = nfs_qemu_url("127.0.0.1", str(export), "a.img")

    def add(client: str) -> None:
        ns.run(ganesha_add_export(42, str(export), clients=client, config=str(config),
                                  export_dir=str(tmp_path / "d"), pid_file=GANESHA_PID_FILE))

    def listed() -> dict[str, list[str]]:
        return parse_showmount_exports(ns.run(nfs_exports_command()).stdout)

    add("127.0.0.1")
    wait_until(lambda: listed().get(str(export)) == ["127.0.0.1/32"], "the export for 127.0.0.1")
    assert ns.run(f"qemu-img info {url}", check=False).returncode == 0
    add("127.0.0.2")
    # ganesha shows the client as a /32 network, and may hide an export from a client it refuses
    wait_until(lambda: listed().get(str(export)) in (None, ["127.0.0.2/32"]), "the export to move to 127.0.0.2")
    refused = ns.run(f"qemu-img info {url}", check=False)
    assert refused.returncode != 0 and "nfs" in refused.stderr.lower()


@pytest.mark.skipif(shutil.which("exportfs") is None or not os.path.isdir("/proc/fs/nfsd"),
                    reason="no kernel NFS server here (no nfsd, no exportfs): exportfs builders are tested as text")
def test_kernel_export_for_real(tmp_path: Path) -> None:
    subprocess.run(["sh", "-c", nfs_export(str(tmp_path), "127.0.0.1", "rw,no_root_squash,sync")], check=True)
    try:
        listed = subprocess.run(["exportfs", "-v"], capture_output=True, text=True, check=True).stdout
        assert str(tmp_path) in listed
    finally:
        subprocess.run(["sh", "-c", nfs_unexport(str(tmp_path), "127.0.0.1")], check=True)


@pytest.mark.skipif(not kernel_has("nfs") and not kernel_has("nfs4"),
                    reason="no kernel NFS client here (nfs is not in /proc/filesystems): mount builders are tested as text")
def test_kernel_mount_for_real(ganesha: tuple[PrivateNamespace, Path], tmp_path: Path) -> None:
    ns, config = ganesha
    export = tmp_path / "export"
    export.mkdir()
    (export / "hello").write_text("kerub")
    ns.run(ganesha_add_export(43, str(export), config=str(config), export_dir=str(tmp_path / "d"), pid_file=GANESHA_PID_FILE))
    target = tmp_path / "mnt"
    ns.run(nfs_mount("127.0.0.1", str(export), str(target)))
    try:
        assert ns.run(f"cat {target}/hello").stdout == "kerub"
    finally:
        ns.run(nfs_unmount(str(target)))


def test_builder_text() -> None:
    assert nfs_export("/srv/kerub/disk 1", "10.0.0.0/24", "rw,no_root_squash") == (
        "exportfs -o rw,no_root_squash '10.0.0.0/24:/srv/kerub/disk 1'"
    )
    assert nfs_unexport("/srv/x", "*") == "exportfs -u '*:/srv/x'"
    assert nfs_mount("fd00::2", "/srv/x", "/mnt/x") == (
        "mkdir -p /mnt/x && { mountpoint -q /mnt/x || mount -t nfs -o hard,vers=4.2 '[fd00::2]:/srv/x' /mnt/x; }"
    )
    assert nfs_unmount("/mnt/a b") == "if mountpoint -q '/mnt/a b'; then umount '/mnt/a b'; fi"
    assert nfs_qemu_url("10.0.0.2", "/srv/kerub", "d.img") == "nfs://10.0.0.2/srv/kerub/d.img"
    assert nfs_qemu_url("fd00::2", "/srv", "d.img") == "nfs://[fd00::2]/srv/d.img"
    block = ganesha_export_block(7, "/srv/a b", clients="10.0.0.0/24", access="RO")
    assert 'Path = "/srv/a b";' in block and "Access_Type = None;" in block
    assert "CLIENT { Clients = 10.0.0.0/24; Access_Type = RO; }" in block
    assert block.count("{") == block.count("}") == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda: nfs_export("/srv/x", "10.0.0.1 -o rw", "rw"),
        lambda: nfs_export("/srv/x", "*", "rw;reboot"),
        lambda: nfs_export("/srv/x", "*", "rw,,sync"),
        lambda: nfs_export("srv/x", "*", "rw"),
        lambda: nfs_export("/srv/x", "10.0.0.0/99", "rw"),
        lambda: nfs_mount("server;reboot", "/x", "/mnt"),
        lambda: nfs_mount("10.0.0.2", "/x", "/mnt", options="rw,exec=$(id)"),
        lambda: ganesha_export_block(1, '/srv/x"; } EXPORT { Path = "/'),
        lambda: ganesha_export_block(1, "/srv/x#comment"),
        lambda: ganesha_export_block(1, "/srv/x}"),
        lambda: ganesha_export_block(0, "/srv/x"),
        lambda: ganesha_export_block(1, "/srv/x", access="ALL"),
        lambda: ganesha_export_block(1, "/srv/x", clients="a; b"),
        lambda: ganesha_add_export(1, "/srv/x", export_dir="relative"),
        lambda: ganesha_add_export(1, "/srv/x", export_dir="/etc/ganesha/kerub exports"),  # %include refuses it
        lambda: nfs_qemu_url("10.0.0.2", "/srv/a b", "d.img"),
        lambda: nfs_qemu_url("10.0.0.2", "/srv", "../etc/passwd"),
        lambda: nfs_qemu_url("10.0.0.2", "/srv", "a?b"),
        lambda: NfsDiskSource("10.0.0.2", "/srv", "d.img", format="vmdk"),
    ],
)
def test_hostile_or_invalid_values_are_refused(call) -> None:
    with pytest.raises(ValueError):
        call()


def test_parse_showmount() -> None:
    # the ganesha form (captured in the test above) and the kernel form (exports(5) client lists)
    text = "Export list for 127.0.0.1:\n/tmp/gan2/exp1 (everyone)\n/srv/k 10.0.0.0/24,host1\n"
    assert parse_showmount_exports(text) == {"/tmp/gan2/exp1": ["(everyone)"], "/srv/k": ["10.0.0.0/24", "host1"]}
    assert parse_showmount_exports("Export list for x:\n") == {}
    with pytest.raises(ValueError):
        parse_showmount_exports("clnt_create: RPC: Program not registered\n")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_showmount_parser_never_crashes(text: str) -> None:
    try:
        exports = parse_showmount_exports(text)
    except ValueError:
        return
    assert all(path.startswith("/") for path in exports)
