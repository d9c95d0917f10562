"""The lab itself: each lab host is what it claims to be, and down leaves nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.lab import (
    AUTO_SLOTS,
    Lab,
    LabError,
    bridge_name,
    down,
    fingerprint,
    lab_links,
    loop_devices,
    missing_prerequisites,
    process_start,
)

pytestmark = pytest.mark.lab

DOMAIN_TYPE = "kvm" if Path("/dev/kvm").exists() else "qemu"


def domain_xml(name: str, disk: str | None = None) -> str:
    disk_xml = (
        f"<disk type='block' device='disk'><driver name='qemu' type='raw' cache='none'/>"
        f"<source dev='{disk}'/><target dev='vda' bus='virtio'/></disk>"
        if disk else ""
    )
    return (
        f"<domain type='{DOMAIN_TYPE}'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
        f"<devices>{disk_xml}</devices></domain>"
    )


def start_domain(host, name: str, disk: str | None = None) -> None:
    path = f"/tmp/{name}.xml"
    host.run(f"cat > {path}", input=domain_xml(name, disk), check=True)
    host.virsh(["create", path], check=True)


def qemu_processes(host, domain: str) -> list[int]:
    return [p for p in host.pids() if f"guest={domain},".encode() in _read(Path(f"/proc/{p}/cmdline"))]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def lvs(host) -> list[dict]:
    out = host.run("lvs --reportformat json --units b --nosuffix -o vg_name,lv_name,lv_size",
                   check=True).stdout
    return json.loads(out)["report"][0]["lv"]


def test_ssh_with_the_client_key_lands_in_the_hosts_namespaces(lab):
    own_uts = os.readlink("/proc/self/ns/uts")
    for h in lab.hosts:
        out = h.ssh("hostname; readlink /proc/self/ns/uts /proc/self/ns/mnt").stdout.split()
        assert out[0] == h.name
        uts, mnt = out[1], out[2]
        assert uts != own_uts
        assert h.run("readlink /proc/self/ns/uts /proc/self/ns/mnt").stdout.split() == [uts, mnt]


def test_ssh_refuses_a_key_the_host_does_not_authorize(lab, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    h = lab.hosts[0]
    argv = h.ssh_argv()
    argv[argv.index(str(h.client_key))] = str(stranger)
    denied = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert denied.returncode == 255
    assert "Permission denied" in denied.stderr


def test_host_key_fingerprint_is_what_ssh_keygen_and_the_server_say(lab):
    for h in lab.hosts:
        listed = subprocess.run(["ssh-keygen", "-lf", "-"], input=h.host_public_key,
                                capture_output=True, text=True, check=True).stdout.split()
        assert listed[1] == h.host_key_fingerprint == fingerprint(h.host_public_key)
        served = subprocess.run(["ssh-keyscan", "-t", "ed25519", h.address],
                                capture_output=True, text=True, timeout=30).stdout.split()
        assert served[1:3] == h.host_public_key.split()[:2]
    assert len({h.host_key_fingerprint for h in lab.hosts}) == len(lab.hosts)


def test_each_full_host_has_its_own_network_on_the_lab_bridge(lab):
    """Its own network namespace: a loopback and eth0 with its address, on the slot's bridge; no route
    beyond the bridge; the other hosts' sshd, rpcbind and ganesha reached at their addresses."""
    own_net = os.readlink("/proc/self/ns/net")
    nets = set()
    for h in lab.hosts:
        nets.add(h.ssh("readlink /proc/self/ns/net").stdout.strip())
        addresses = sorted((a.split()[1], a.split()[3]) for a in h.run("ip -o -4 addr show", check=True).stdout.splitlines())
        assert addresses == [("eth0", f"{h.address}/24"), ("lo", "127.0.0.1/8")]
        routes = h.run("ip -4 route show", check=True).stdout
        assert "default" not in routes and routes.split()[0] == h.address.rsplit(".", 1)[0] + ".0/24", routes
    assert own_net not in nets and len(nets) == len(lab.hosts)
    bridge = bridge_name(lab.slot)
    ports = subprocess.run(["ip", "-o", "link", "show", "master", bridge], capture_output=True, text=True,
                           check=True).stdout
    assert len(ports.strip().splitlines()) == len(lab.hosts)
    one, other = lab.hosts[0], lab.hosts[1]
    scan = one.run(["ssh-keyscan", "-T", "10", "-t", "ed25519", other.address], check=True).stdout.split()
    assert scan[1:3] == other.host_public_key.split()[:2]
    assert " mountd" in one.run(["rpcinfo", "-p", other.address], check=True).stdout  # other's ganesha


def test_each_full_host_has_a_kerub_tui_directory_of_its_own_that_no_other_host_removes(lab):
    """/var/lib/kerub-tui (the product's images and seeds): what one host makes there the others do not
    see (it would be their file storage too), and a test mounting its own storage there keeps it while
    another host's test removes the directory in its cleanup (an rmdir of a mount point elsewhere detaches
    the mounts on it in every namespace)."""
    one, other = lab.hosts[0], lab.hosts[1]
    one.run("mount -t tmpfs -o size=1m kerub-lab-test /var/lib/kerub-tui && mkdir /var/lib/kerub-tui/images",
            check=True)
    try:
        assert other.run("test -e /var/lib/kerub-tui/images").returncode != 0
        other.run("mkdir -p /var/lib/kerub-tui/seeds", check=True)
        other.run("rmdir /var/lib/kerub-tui/seeds /var/lib/kerub-tui 2>/dev/null; true")  # a test's cleanup
        assert one.run("test -d /var/lib/kerub-tui/images").returncode == 0
    finally:
        one.run("umount /var/lib/kerub-tui")
    assert one.run("ls -A /var/lib/kerub-tui", check=True).stdout == ""


def test_each_libvirtd_has_its_own_host_uuid(lab):
    uuids = []
    for h in lab.hosts:
        caps = ET.fromstring(h.ssh("virsh -c qemu:///system capabilities").stdout)
        uuids.append(caps.findtext("host/uuid"))
        assert uuids[-1] == h.host_uuid
    assert len(set(uuids)) == len(lab.hosts)


def test_each_host_sees_only_its_own_volume_group(lab):
    for h in lab.hosts:
        out = h.ssh("vgs --reportformat json -o vg_name 2>/dev/null").stdout
        assert [vg["vg_name"] for vg in json.loads(out)["report"][0]["vg"]] == [h.vg]


def test_plain_lvcreate_gives_a_block_device_at_the_lvs_place_in_the_pv(clean_lab):
    h = clean_lab.hosts[0]
    created = h.ssh(f"lvcreate -n data -L 8M {h.vg}")
    assert created.returncode == 0, created.stderr
    dev = f"/dev/{h.vg}/data"
    assert h.run(f"test -b {dev} && blockdev --getsize64 {dev}", check=True).stdout.strip() == str(8 << 20)
    h.run(f"printf kerub-lab-mark | dd of={dev} conv=notrunc status=none && sync", check=True)
    seg = json.loads(h.run(
        f"lvs --reportformat json --units b --nosuffix -o seg_pe_ranges,vg_extent_size {h.vg}/data",
        check=True).stdout)["report"][0]["lv"][0]
    pe_start = json.loads(h.run("pvs --reportformat json --units b --nosuffix -o pe_start",
                                check=True).stdout)["report"][0]["pv"][0]["pe_start"]
    first_pe = int(seg["seg_pe_ranges"].rpartition(":")[2].split("-")[0])
    with open(h.pv_file, "rb") as pv:
        pv.seek(int(pe_start) + first_pe * int(seg["vg_extent_size"]))
        assert pv.read(14) == b"kerub-lab-mark"
    assert h.ssh(f"lvremove -y {h.vg}/data").returncode == 0
    assert h.run(f"test -e {dev}").returncode != 0
    assert not [d for d in loop_devices() if d["back-file"] == str(h.pv_file) and d["offset"]]


def test_a_domain_runs_on_one_host_and_is_invisible_on_another(clean_lab):
    one, other = clean_lab.hosts[0], clean_lab.hosts[1]
    start_domain(one, "lonely")
    assert one.virsh("domstate lonely", check=True).stdout.strip() == "running"
    assert "lonely" not in other.virsh("list --all --name", check=True).stdout.split()
    assert len(qemu_processes(one, "lonely")) == 1
    assert qemu_processes(other, "lonely") == []


def test_a_domain_boots_with_a_logical_volume_as_its_virtio_disk(clean_lab):
    h = clean_lab.hosts[2]
    assert h.ssh(f"lvcreate -n root -L 16M {h.vg}").returncode == 0
    start_domain(h, "withdisk", disk=f"/dev/{h.vg}/root")
    assert h.virsh("domstate withdisk", check=True).stdout.strip() == "running"
    assert f"/dev/{h.vg}/root" in h.virsh("domblklist withdisk", check=True).stdout


def test_reset_removes_domains_and_volumes(lab):
    h = lab.hosts[1]
    start_domain(h, "leftover")
    assert h.run(f"lvcreate -qq -n leftover -L 4M {h.vg} 2>/dev/null").returncode == 0
    h.stop_sshd()
    lab.reset()
    assert h.virsh("list --all --name", check=True).stdout.split() == []
    assert lvs(h) == []
    assert h.ssh("hostname").stdout.strip() == h.name


def test_sshd_stops_starts_and_takes_a_new_host_key(clean_lab):
    h = clean_lab.hosts[0]
    h.stop_sshd()
    assert h.ssh("true").returncode == 255
    h.start_sshd()
    assert h.ssh("hostname").stdout.strip() == h.name
    old_key = h.host_public_key
    new_fp = h.replace_host_key()
    assert new_fp == h.host_key_fingerprint != fingerprint(old_key)
    served = subprocess.run(["ssh-keyscan", "-t", "ed25519", h.address],
                            capture_output=True, text=True, timeout=30).stdout.split()
    assert served[2] == h.host_public_key.split()[1]
    assert h.ssh("hostname").stdout.strip() == h.name  # known_hosts follows the new key


def test_light_hosts_answer_thirty_concurrent_logins(light_lab):
    assert len(light_lab.hosts) == 20
    target = light_lab.hosts[0]
    with ThreadPoolExecutor(max_workers=30) as pool:
        names = list(pool.map(lambda h: h.ssh("hostname").stdout.strip(),
                              light_lab.hosts + [target] * 10))
    assert names == [h.name for h in light_lab.hosts] + [target.name] * 10
    assert target.run("command -v libvirtd >/dev/null && test -S /run/libvirt/libvirt-sock").returncode != 0


def _traces(slot_dir: Path, vgs: list[str], processes: set[tuple[int, int]]) -> dict:
    """What of a lab is still there; processes are (pid, start time): pid namespace inodes and
    pids are both reused once freed."""
    mounts = Path("/proc/self/mounts").read_text()
    return {
        "processes": [p for p, start in processes if alive(p, start)]
        + [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _mentions(p, slot_dir)],
        "loops": [d["name"] for d in loop_devices() if d["back-file"].startswith(f"{slot_dir}/")],
        "mounts": [line for line in mounts.splitlines()
                   if str(slot_dir) in line or any(f"/dev/{vg}" in line for vg in vgs)],
        "files": [str(p) for p in [slot_dir, *(Path("/dev") / vg for vg in vgs)] if p.exists()],
        "links": lab_links(int(slot_dir.name.removeprefix("slot"))),
    }


def alive(pid: int, start: int) -> bool:
    """The process that had this pid and start time runs (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return process_start(pid) == start and stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes(lab: Lab) -> set[tuple[int, int]]:
    found = {(p, process_start(p)) for h in lab.hosts for p in h.pids()}
    return {(p, start) for p, start in found if start is not None}


def _mentions(proc: Path, slot_dir: Path) -> bool:
    return str(slot_dir).encode() in _read(proc / "cmdline")


def test_down_leaves_no_process_loop_device_mount_or_file():
    reason = missing_prerequisites()
    if reason:
        pytest.skip(f"lab: {reason}")
    lab = Lab.up(2)
    vgs, processes = [x.vg for x in lab.hosts], set()
    session = None
    try:
        h = lab.hosts[0]
        assert h.run(f"lvcreate -qq -n disk -L 8M {h.vg} 2>/dev/null").returncode == 0
        start_domain(h, "doomed", disk=f"/dev/{h.vg}/disk")
        session = subprocess.Popen([*h.ssh_argv(), "sleep 600"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes = _processes(lab)
        assert any(qemu_processes(h, "doomed"))
        before = _traces(lab.dir, vgs, processes)
        assert len(before["processes"]) > 10 and len(before["loops"]) == 3 and before["files"]
        assert len(before["links"]) == 3  # the bridge and a veth per host
    finally:
        lab.down()
        if session is not None:
            session.wait(timeout=30)
    assert _traces(lab.dir, vgs, processes) == {"processes": [], "loops": [], "mounts": [], "files": [], "links": []}
    lab.down()  # idempotent


CRASH_SLOT = 250
assert CRASH_SLOT not in AUTO_SLOTS


@pytest.mark.parametrize("light", [True, False], ids=["light", "full"])
def test_up_cleans_what_a_crashed_run_left_in_its_slot(light):
    reason = missing_prerequisites(light=light)
    if reason:
        pytest.skip(f"lab: {reason}")
    # An explicit slot outside AUTO_SLOTS: a test session's slot whose lock is gone looks stale to
    # every other xdist worker, which would clean it (and take it) while this test brings it up again.
    slot = CRASH_SLOT
    crashed = Lab.up(1, light=light, slot=slot)  # explicit slots hold no lock once up: a crash leaves all
    processes = _processes(crashed)
    assert len(processes) >= 2
    # a full host's network: the bridge and the veth stay in the machine's namespace after a crash
    assert len(lab_links(slot)) == (0 if light else 2)
    again = Lab.up(1, light=light, slot=slot)
    try:
        assert [p for p, start in processes if alive(p, start)] == []
        assert again.hosts[0].ssh("hostname").stdout.strip() == again.hosts[0].name
    finally:
        down(slot)
        crashed.hosts[0]._holder.wait(timeout=30)
    assert lab_links(slot) == []
    with pytest.raises(LabError):
        Lab.attach(slot)
