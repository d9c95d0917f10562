"""The fleet against the lab (issue 3's "done when"): add + accept + discover, continuous
HostDynamic, libvirt lifecycle into VirtualMachineDynamic, a host whose sshd dies and comes back,
a replaced host key, and 20 light hosts at once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import uuid
from pathlib import Path

import pytest

from kerub_tui.core.models import (
    Event,
    Host,
    HostDynamic,
    HostStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.fleet import FingerprintMismatch, FingerprintRequired, Fleet, FleetError
from kerub_tui.hosts.monitor import MonitorSettings
from kerub_tui.ssh import SshSettings

from ._support import DEADLINE, SETTINGS, started_by_us, until

pytestmark = pytest.mark.lab

MONITOR = MonitorSettings(state_interval=1, domain_stats_interval=1, restart_initial=0.5)
DOMAIN_TYPE = "kvm" if Path("/dev/kvm").exists() else "qemu"


def ours(host) -> list[str]:
    """Processes on the host that the controller started (streams, watch loops, commands)."""
    return started_by_us(host, "/proc/uptime")


@contextlib.asynccontextmanager
async def fleet_on(tmp_path: Path, **kwargs):
    data = tmp_path / "data"
    store = Store.open(data)
    fleet = Fleet(store, data, ssh_settings=kwargs.pop("ssh_settings", SETTINGS),
                  monitor_settings=kwargs.pop("monitor_settings", MONITOR), **kwargs)
    await fleet.start()
    try:
        yield fleet, store
    finally:
        await fleet.stop()
        store.close()
    # the local ends of the libvirt tunnels went with the fleet
    assert list((data / "run").glob("*.sock")) == []


async def add(fleet: Fleet, host, **kwargs) -> Host:
    _, fp = await fleet.fetch_host_key(host.address, host.port)
    kwargs.setdefault("identity", str(host.client_key))
    return await fleet.add_host(host.name, host.address, host.port, accepted_fingerprint=fp, **kwargs)


def domain_xml(name: str, domain_uuid: str) -> str:
    return (f"<domain type='{DOMAIN_TYPE}'><name>{name}</name><uuid>{domain_uuid}</uuid>"
            "<memory unit='MiB'>64</memory><vcpu>1</vcpu><os><type arch='x86_64'>hvm</type></os>"
            "<devices><graphics type='spice' autoport='yes'/></devices></domain>")


def start_domain(host, name: str, domain_uuid: str) -> None:
    path = f"/tmp/{name}.xml"
    host.run(f"cat > {path}", input=domain_xml(name, domain_uuid), check=True)
    host.virsh(["create", path], check=True)


# --- joining ------------------------------------------------------------------------------------


async def test_add_accept_and_discover_a_host(clean_lab, tmp_path):
    host = clean_lab.hosts[0]
    async with fleet_on(tmp_path) as (fleet, store):
        # The controller's own key, installed by the admin: no identity file needed.
        host.run("cat >> /root/.ssh/authorized_keys", input=fleet.client_public_key + "\n", check=True)
        line, fp = await fleet.fetch_host_key(host.address, host.port)
        assert fp == host.host_key_fingerprint
        with pytest.raises(FingerprintRequired) as asked:
            await fleet.add_host(host.name, host.address, host.port)
        assert asked.value.fingerprint == fp
        with pytest.raises(FingerprintMismatch) as refused:
            await fleet.add_host(host.name, host.address, host.port, accepted_fingerprint="SHA256:" + "x" * 43)
        assert refused.value.offered == fp  # the key it offers is named
        assert store.list(Host) == []  # nothing stored, nothing connected
        added = await fleet.add_host(host.name, host.address, host.port, accepted_fingerprint=fp)
        with pytest.raises(FleetError, match="already exists"):
            await fleet.add_host(host.name, host.address, host.port, accepted_fingerprint=fp)

        assert (added.host_key.split()[:2], added.fingerprint, added.user) == (line.split()[:2], fp, "root")
        caps = added.capabilities
        truth = host.run("nproc --all; grep MemTotal /proc/meminfo; "
                         f"vgs --noheadings --units b --nosuffix -o vg_size {host.vg}", check=True).stdout.split()
        assert caps.cpu.cpus == int(truth[0])
        assert caps.memory_bytes == int(truth[2]) * 1024
        assert caps.storage_by_id(f"lvm:{host.vg}").size_bytes == int(truth[4])
        assert caps.os.hostname == host.name
        assert caps.hypervisor.kvm == (DOMAIN_TYPE == "kvm")
        assert "x86_64" in caps.hypervisor.guest_arches
        assert caps.tools["lvm"] is True
        dynamic = await until(lambda: (d := store.get(HostDynamic, added.id)) and d.cpu_idle is not None and d,
                              "the first vmstat sample")
        assert dynamic.status is HostStatus.up
        assert dynamic.storage_free.get(f"lvm:{host.vg}") == caps.storage_by_id(f"lvm:{host.vg}").free_bytes
        # every PV of the VG, by discovery and by the state watch (issue 18 item 7): the lab's one loop device
        (pv,) = caps.storage_by_id(f"lvm:{host.vg}").pvs
        assert (pv.name, pv.disk) == (host.pv_loop, host.pv_loop) and 0 < pv.free_bytes <= pv.size_bytes
        watched = await until(lambda: (d := store.get(HostDynamic, added.id)) and d.storage_pvs.get(f"lvm:{host.vg}"),
                              "the state watch's PVs")
        assert [(p.name, p.size_bytes) for p in watched] == [(pv.name, pv.size_bytes)]

        await fleet.remove_host(added.id)
        assert store.get(Host, added.id) is None and store.get(HostDynamic, added.id) is None
        await until(lambda: not ours(host), "the removed host's streams to be gone")


async def test_host_dynamic_changes_arrive_continuously(lab, tmp_path):
    host = lab.hosts[1]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        subscription = store.feed.subscribe(["host-dynamic"])
        seen = []
        async with asyncio.timeout(DEADLINE):
            async for change in subscription:
                if change.id == added.id and change.new is not None and change.new.last_seen is not None:
                    seen.append(change.new)
                if len(seen) >= 4:
                    break
        subscription.close()
        times = [d.last_seen for d in seen]
        assert times == sorted(times)
        # a change always carries a change: the coalescer writes nothing that is equal
        assert all(a != b for a, b in itertools.pairwise(seen))
        # KSM and storage come from the on-change watch
        assert seen[-1].ksm.available is True


async def test_domains_started_with_virsh_show_in_vm_dynamic(clean_lab, tmp_path):
    host = clean_lab.hosts[0]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        await fleet.libvirt(added.id, lambda conn: conn.getVersion(), wait=DEADLINE)
        managed = VirtualMachine(id=str(uuid.uuid4()), name="web1")
        store.put(managed)
        unmanaged_id = str(uuid.uuid4())
        subscription = store.feed.subscribe(["vm-dynamic"])

        start_domain(host, "web1", managed.id)
        up = await until(lambda: (d := store.get(VirtualMachineDynamic, managed.id)) and d.status is VmStatus.up and d,
                         "web1 to be up")
        assert up.host_id == added.id
        # The link reports a started domain at once (no RPC in libvirt's callback), then again with
        # what it read off the loop: the SPICE fields come in that second write, maybe a later one.
        spice = await until(lambda: (d := store.get(VirtualMachineDynamic, managed.id)) and d.spice_port and d,
                            "web1's SPICE port and address")
        assert spice.status is VmStatus.up and spice.host_id == added.id and spice.spice_address == host.address
        stats = await until(lambda: (d := store.get(VirtualMachineDynamic, managed.id)) and d.memory_used and d,
                            "web1's memory from the domain stats stream")
        assert stats.memory_used > 0 and stats.host_id == added.id
        assert await fleet.libvirt(added.id, lambda conn, u: conn.lookupByUUIDString(u).name(), managed.id) == "web1"

        start_domain(host, "stray", unmanaged_id)
        await until(lambda: store.get(VirtualMachineDynamic, unmanaged_id), "the unmanaged domain to show")
        assert any(e.type == "unmanaged-domain" and e.target == unmanaged_id for e in store.list(Event))

        host.virsh(["destroy", "web1"], check=True)
        host.virsh(["destroy", "stray"], check=True)
        down = await until(lambda: (d := store.get(VirtualMachineDynamic, managed.id)) and d.status is VmStatus.down and d,
                           "web1 to be down")
        assert down.host_id is None
        await until(lambda: store.get(VirtualMachineDynamic, unmanaged_id) is None, "the stray domain's document to go")

        changes = subscription.drain_nowait()
        subscription.close()
        web1 = [c.new.status for c in changes if c.id == managed.id and c.new is not None]
        assert web1[0] is VmStatus.up and web1[-1] is VmStatus.down
        assert VmStatus.down not in web1[:web1.index(VmStatus.up) + 1]


async def test_vms_running_when_the_controller_starts_are_found(clean_lab, tmp_path):
    host = clean_lab.hosts[1]
    vm_id = str(uuid.uuid4())
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        store.put(VirtualMachine(id=vm_id, name="early"))
    start_domain(host, "early", vm_id)  # while no controller watches
    async with fleet_on(tmp_path) as (fleet, store):
        found = await until(lambda: (d := store.get(VirtualMachineDynamic, vm_id)) and d.status is VmStatus.up and d,
                            "the running domain to be found on start")
        assert found.host_id == added.id


# --- failures -----------------------------------------------------------------------------------


async def test_a_host_whose_sshd_dies_goes_down_and_comes_back_by_itself(clean_lab, tmp_path):
    host = clean_lab.hosts[2]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        monitor = fleet.member(added.id).monitor
        await until(lambda: monitor.samples > 0, "vmstat samples")
        await until(lambda: len(ours(host)) >= 3, "the streams to run on the host")
        statuses = []
        fleet.add_listener(lambda host_id, status, reason: statuses.append(status))

        host.stop_sshd(sessions=True)
        await until(lambda: store.get(HostDynamic, added.id).status is HostStatus.down, "the host to be down",
                    timeout=SETTINGS.keepalive_window * 3)
        await until(lambda: not ours(host), "every process the controller started to be gone")
        assert any(e.type == "host-down" and e.host_id == added.id for e in store.list(Event))

        before = monitor.samples
        host.start_sshd()
        await until(lambda: store.get(HostDynamic, added.id).status is HostStatus.up, "the host to be up again")
        await until(lambda: monitor.samples > before + 1, "vmstat samples after the reconnection")
        await until(lambda: len(ours(host)) >= 3, "the streams to run again")
        assert statuses[0] is HostStatus.down and statuses[-1] is HostStatus.up
        assert (await fleet.run(added.id, "uname -n")).stdout.strip() == host.name


async def test_a_replaced_host_key_is_refused_and_raises_an_event(clean_lab, tmp_path):
    host = clean_lab.hosts[1]
    async with fleet_on(tmp_path) as (fleet, store):
        added = await add(fleet, host)
        new_fingerprint = host.replace_host_key()
        log = host.dir / "sshd.log"
        logins = log.read_text(errors="replace").count("Accepted ")
        # sshd keeps open sessions on SIGHUP: drop them so the controller must connect again
        host.stop_sshd(sessions=True)
        host.start_sshd()
        await until(lambda: store.get(HostDynamic, added.id).status is HostStatus.key_mismatch,
                    "the host to be marked key-mismatch")
        event = await until(lambda: next((e for e in store.list(Event) if e.type == "key-mismatch"), None),
                            "the key-mismatch event")
        assert event.host_id == added.id and event.target == new_fingerprint
        assert new_fingerprint in event.message
        await asyncio.sleep(SETTINGS.backoff_max * 2)  # it keeps trying, and keeps refusing
        assert log.read_text(errors="replace").count("Accepted ") == logins
        assert store.get(HostDynamic, added.id).status is HostStatus.key_mismatch
        with pytest.raises(Exception):  # noqa: B017 - whatever the refusal is called, the command must not run
            await fleet.run(added.id, "true")

        await fleet.accept_host_key(added.id, new_fingerprint)  # the admin checked it out of band
        await until(lambda: store.get(HostDynamic, added.id).status is HostStatus.up, "the host to be up again")
        assert store.get(Host, added.id).fingerprint == new_fingerprint


# --- scale -------------------------------------------------------------------------------------


async def test_twenty_light_hosts_connect_and_discover_concurrently(light_lab, tmp_path):
    settings = SshSettings(**{**SETTINGS.__dict__, "max_handshakes": 4})
    async with fleet_on(tmp_path, ssh_settings=settings) as (fleet, store):
        keys = await asyncio.gather(*(fleet.fetch_host_key(h.address, h.port) for h in light_lab.hosts))
        hosts = await asyncio.gather(*(
            fleet.add_host(h.name, h.address, h.port, identity=str(h.client_key), accepted_fingerprint=fp)
            for h, (_, fp) in zip(light_lab.hosts, keys)
        ))
        assert sorted(h.capabilities.os.hostname for h in hosts) == sorted(h.name for h in light_lab.hosts)
        assert all(h.capabilities.cpu.cpus > 0 and h.capabilities.memory_bytes > 0 for h in hosts)
        assert all(store.get(HostDynamic, h.id).status is HostStatus.up for h in hosts)
        assert 1 <= fleet.gate.peak <= 4
        assert not [e for e in store.list(Event) if e.type in ("host-unreachable", "host-down")]
        for h in light_lab.hosts:
            log = (h.dir / "sshd.log").read_text(errors="replace")
            assert "MaxStartups" not in log and "drop connection" not in log
        # light hosts have no libvirtd: a fact in the capabilities, not a failure
        assert all(h.capabilities.hypervisor.kvm is False and h.capabilities.hypervisor.reason for h in hosts)
    assert json.dumps([h.name for h in hosts])  # the hosts were returned whole
