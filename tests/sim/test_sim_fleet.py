"""SimulatedFleet on a real Store: joining, connection states and their documents and events,
monitoring through the HostMonitor's parsers, faults on demand, and a restart on the same store.

Timing(scale=0): connecting, commands and fault detection take no time; monitoring still ticks once a
second, so the tests that read vmstat figures wait a couple of ticks (a hang guard bounds every wait,
nothing asserts on how long anything took).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from kerub_tui.core.models import (
    Event,
    FileAllocation,
    Host,
    HostConfiguration,
    HostDynamic,
    HostStatus,
    LvmAllocation,
    ThinPool,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts import fileimage, kvm, lvm, spice
from kerub_tui.hosts.facts import IMAGES_DIR
from kerub_tui.hosts.fleet import FleetError
from kerub_tui.sim import ADDRESS_DOMAIN, SimulatedFleet, Timing, profile
from kerub_tui.sim.machine import EXIT_UNREACHABLE
from kerub_tui.ssh import NotConnected
from tests.sim._support import until

GIB = 1 << 30
MIB = 1 << 20
VG = profile("mini").vg
HANG_GUARD = 15.0  # seconds; a wait that takes this long is a hang, not a slow machine


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def new_fleet(store: Store) -> SimulatedFleet:
    return SimulatedFleet(store, timing=Timing(scale=0), seed=3, write_interval=0)


@pytest.fixture
async def fleet(store: Store) -> AsyncIterator[SimulatedFleet]:
    sim = new_fleet(store)
    yield sim
    await sim.stop()



async def up_host(fleet: SimulatedFleet, name: str = "kvm01", profile_name: str = "mini") -> Host:
    host = await fleet.add_host(name, profile_name)
    await fleet.start()
    await fleet.wait_up(host.id, timeout=HANG_GUARD)
    return host


def dyn(store: Store, host: Host) -> HostDynamic:
    return store.get(HostDynamic, host.id)


def events(store: Store, type_: str, host: Host) -> list[Event]:
    return [e for e in store.list(Event) if e.type == type_ and e.host_id == host.id]


async def running_vm(fleet: SimulatedFleet, store: Store, host: Host, name: str = "web",
                     memory: int = 2 * GIB) -> VirtualMachine:
    """A kerub-tui VM started on ``host`` as the executor starts one (its document first)."""
    vm = store.put(VirtualMachine(name=name, cpus=2, memory_min=memory, memory_max=memory))
    xml = kvm.domain_xml(vm, {}, spice.new_spice_password())
    result = await fleet.libvirt(host.id, "start", vm_id=vm.id, vm_name=vm.name, xml=xml)
    assert result.exit_code == 0, result
    await until(lambda: (d := store.get(VirtualMachineDynamic, vm.id)) and d.status is VmStatus.up,
                f"{name} reported up")
    return vm


async def domain_state(fleet: SimulatedFleet, host: Host, vm: VirtualMachine) -> str:
    result = await fleet.libvirt(host.id, "domain-state", vm_id=vm.id)
    assert result.exit_code == 0, result
    return result.stdout


async def lvs(fleet: SimulatedFleet, host: Host) -> dict[str, lvm.LogicalVolume]:
    result = await fleet.run(host.id, lvm.lvs_json_command())
    assert result.exit_code == 0, result
    return {lv.name: lv for lv in lvm.parse_lvs(result.stdout)}


# --- joining -------------------------------------------------------------------------------------


async def test_an_added_host_is_a_simulated_host_document_with_its_profiles_facts(fleet, store):
    host = await fleet.add_host("kvm01", "r640")
    stored = store.get(Host, host.id)
    assert stored == host and stored.simulated
    assert stored.address == f"kvm01.{ADDRESS_DOMAIN}" and stored.address.endswith(".sim.invalid")
    assert stored.capabilities == profile("r640").capabilities("kvm01")
    assert not fleet.has(host.id)  # nothing is connected before start


@pytest.mark.parametrize("name", ["kvm_01", "rack1.kvm02", "kvm-", "K" * 63, "0"])
async def test_every_name_a_host_may_have_gets_an_address_that_never_resolves(fleet, store, name):
    host = await fleet.add_host(name, "mini")
    assert store.get(Host, host.id).name == name
    label, _, domain = host.address.partition(".")
    assert domain == ADDRESS_DOMAIN and label


@pytest.mark.parametrize("name", ["", "a;reboot", "$(id)", "kvm 01", "ünï", "-kvm", "a\nb", "x" * 64, "a..b"])
async def test_a_bad_host_name_is_refused_and_nothing_is_written(fleet, store, name):
    with pytest.raises(FleetError, match="host name"):
        await fleet.add_host(name, "mini")
    assert store.list(Host) == []


async def test_a_duplicate_name_or_an_unknown_profile_is_refused_and_nothing_is_written(fleet, store):
    first = await fleet.add_host("kvm01", "mini")
    with pytest.raises(FleetError, match="already exists"):
        await fleet.add_host("kvm01", "epyc")
    with pytest.raises(ValueError, match="mini"):  # the message lists the profiles there are
        await fleet.add_host("kvm02", "mainframe")
    assert store.list(Host) == [first]


# --- connecting and monitoring ---------------------------------------------------------------------


async def test_a_started_host_is_up_with_an_event_and_its_storage_reported(fleet, store):
    host = await up_host(fleet)
    assert fleet.status(host.id) is HostStatus.up and fleet.host_ids == [host.id]
    await until(lambda: dyn(store, host) and dyn(store, host).status is HostStatus.up, "HostDynamic up")
    assert dyn(store, host).last_seen is not None and dyn(store, host).drops == []
    [event] = events(store, "host-up", host)
    assert "kvm01" in event.message
    capabilities = host.capabilities
    await until(lambda: dyn(store, host).storage_free, "storage reported")
    assert dyn(store, host).storage_free == {s.id: s.size_bytes for s in capabilities.storage}

    # a change on the machine reaches the document through the state batch's parsers
    assert (await fleet.run(host.id, lvm.lvcreate(VG, "disk1", 10 * GIB))).exit_code == 0
    await until(lambda: dyn(store, host).storage_free[f"lvm:{VG}"] == capabilities.storage[0].size_bytes - 10 * GIB,
                "the LV's space gone from storage_free")


async def test_monitoring_writes_cpu_and_memory_from_vmstat_lines(fleet, store):
    host = await up_host(fleet)
    machine = fleet.machine(host.id)
    # vmstat's first sample is the average since boot and is skipped: the figures come a tick later
    await until(lambda: dyn(store, host).cpu_user is not None, "a vmstat sample written")
    first = dyn(store, host)
    assert abs(first.cpu_user + first.cpu_system + first.cpu_idle - 100) <= 1
    assert abs(first.memory_used - machine.used_memory()) <= MIB
    assert first.memory_used + first.memory_free <= machine.memory

    await running_vm(fleet, store, host, memory=16 * GIB)
    await until(lambda: dyn(store, host).memory_used > first.memory_used + 8 * GIB, "the guest's memory counted")
    assert abs(dyn(store, host).memory_used - machine.used_memory()) <= MIB


async def test_a_guest_started_on_a_host_is_reported_running_there(fleet, store):
    host = await up_host(fleet)
    vm = await running_vm(fleet, store, host)
    assert store.get(VirtualMachineDynamic, vm.id).host_id == host.id
    assert await domain_state(fleet, host, vm) == "running"
    assert (await fleet.libvirt(host.id, "pause", vm_id=vm.id)).exit_code == 0
    await until(lambda: store.get(VirtualMachineDynamic, vm.id).status is VmStatus.paused, "reported paused")
    assert (await fleet.libvirt(host.id, "resume", vm_id=vm.id)).exit_code == 0
    assert (await fleet.libvirt(host.id, "shutdown", vm_id=vm.id, timeout=600)).exit_code == 0
    await until(lambda: store.get(VirtualMachineDynamic, vm.id).status is VmStatus.down, "reported down")
    assert store.get(VirtualMachineDynamic, vm.id).host_id is None
    assert (await fleet.libvirt(host.id, "undefine", vm_id=vm.id)).exit_code == 0
    assert await domain_state(fleet, host, vm) == ""
    assert (await fleet.libvirt(host.id, "reboot", vm_id=vm.id)).exit_code != 0  # not an operation


# --- faults --------------------------------------------------------------------------------------


async def test_a_failed_host_loses_its_guests_and_a_recovered_one_reports_them_down(fleet, store):
    host = await up_host(fleet)
    vm = await running_vm(fleet, store, host)
    fleet.fail_host(host.id)
    assert fleet.machine(host.id).running() == []
    await until(lambda: dyn(store, host).status is HostStatus.down, "HostDynamic down")
    assert fleet.status(host.id) is HostStatus.down
    assert len(dyn(store, host).drops) == 1
    [down] = events(store, "host-down", host)
    assert "power loss" in down.message
    result = await fleet.run(host.id, lvm.lvs_json_command())
    assert result.exit_code == EXIT_UNREACHABLE and result.stderr
    assert (await fleet.libvirt(host.id, "domain-state", vm_id=vm.id)).exit_code == EXIT_UNREACHABLE
    with pytest.raises(NotConnected):
        await fleet.wait_up(host.id, timeout=0.05)

    fleet.recover_host(host.id, boot=0)
    await fleet.wait_up(host.id, timeout=HANG_GUARD)
    await until(lambda: store.get(VirtualMachineDynamic, vm.id).status is VmStatus.down, "the dead guest down")
    assert store.get(VirtualMachineDynamic, vm.id).host_id is None
    assert await domain_state(fleet, host, vm) == "shut off"  # defined, not running, as after a power loss
    assert len(events(store, "host-up", host)) == 2
    await until(lambda: dyn(store, host).status is HostStatus.up, "HostDynamic up again")
    assert len(dyn(store, host).drops) == 1


async def test_a_network_flap_leaves_the_guests_running(fleet, store):
    host = await up_host(fleet)
    vm = await running_vm(fleet, store, host)
    fleet.disconnect(host.id)
    await until(lambda: dyn(store, host).status is HostStatus.down, "HostDynamic down")
    assert len(dyn(store, host).drops) == 1 and events(store, "host-down", host)
    assert (await fleet.run(host.id, lvm.vgs_json_command())).exit_code == EXIT_UNREACHABLE
    assert fleet.machine(host.id).domain_state(vm.id) == "running"

    fleet.reconnect(host.id)
    await fleet.wait_up(host.id, timeout=HANG_GUARD)
    assert await domain_state(fleet, host, vm) == "running"
    await until(lambda: dyn(store, host).status is HostStatus.up, "HostDynamic up again")
    current = store.get(VirtualMachineDynamic, vm.id)
    assert current.status is VmStatus.up and current.host_id == host.id


async def test_reconnect_all_drops_and_restores_every_connection(fleet, store):
    first = await up_host(fleet, "kvm01")
    second = await up_host(fleet, "kvm02", "epyc")
    vm = await running_vm(fleet, store, first)
    fleet.reconnect_all()
    for host in (first, second):
        await fleet.wait_up(host.id, timeout=HANG_GUARD)
        await until(lambda h=host: len(dyn(store, h).drops) == 1 and dyn(store, h).status is HostStatus.up,
                    f"{host.name} dropped once and up again")
        assert events(store, "host-down", host)
    assert store.get(VirtualMachineDynamic, vm.id).status is VmStatus.up


async def test_a_migration_to_an_unreachable_host_is_refused_and_the_guest_stays(fleet, store):
    source = await up_host(fleet, "kvm01")
    target = await up_host(fleet, "kvm02")
    vm = await running_vm(fleet, store, source)
    fleet.disconnect(target.id)
    await until(lambda: fleet.status(target.id) is HostStatus.down, "target down")
    result = await fleet.libvirt(source.id, "migrate", vm_id=vm.id, target_host_id=target.id, copy_storage=False)
    assert result.exit_code not in (0, EXIT_UNREACHABLE) and result.stderr
    assert await domain_state(fleet, source, vm) == "running"
    assert fleet.machine(target.id).domain_state(vm.id) == ""
    assert store.get(VirtualMachineDynamic, vm.id).host_id == source.id


async def test_a_migration_moves_the_guest_and_its_document(fleet, store):
    source = await up_host(fleet, "kvm01")
    target = await up_host(fleet, "kvm02")
    vm = await running_vm(fleet, store, source)
    memory = fleet.machine(source.id).domains[vm.id].memory
    reports: list[tuple[int, int]] = []
    result = await fleet.libvirt(source.id, "migrate", vm_id=vm.id, target_host_id=target.id, copy_storage=False,
                                 on_progress=lambda done, total: reports.append((done, total)))
    assert result.exit_code == 0, result
    # how far it got, as libvirt's job statistics would say: the guest's memory, a quarter at a time
    assert reports == [(memory * q // 4, memory) for q in range(1, 5)]
    assert await domain_state(fleet, target, vm) == "running"
    assert await domain_state(fleet, source, vm) == ""
    await until(lambda: store.get(VirtualMachineDynamic, vm.id).host_id == target.id, "the VM document moved")
    assert store.get(VirtualMachineDynamic, vm.id).status is VmStatus.up


# --- the documents outlive the fleet ----------------------------------------------------------------


async def _storage_of(fleet: SimulatedFleet, store: Store, host: Host) -> None:
    """A linear LV, a thin pool with a thin LV and an image, with the documents the executor writes."""
    for command in (lvm.lvcreate(VG, "kerub-data", 10 * GIB), lvm.thin_pool_create(VG, "pool0", 20 * GIB),
                    lvm.lvcreate_thin(VG, "pool0", "kerub-thin", 40 * GIB),
                    fileimage.qemu_img_create(f"{IMAGES_DIR}/kerub-img.qcow2", 3 * GIB, "qcow2")):
        assert (await fleet.run(host.id, command)).exit_code == 0, command
    disks = [store.put(VirtualStorageDevice(name=name, size=size))
             for name, size in (("data", 10 * GIB), ("thin", 40 * GIB), ("img", 3 * GIB))]
    allocations = [
        LvmAllocation(host_id=host.id, capability_id=f"lvm:{VG}", actual_size=10 * GIB, vg=VG, lv="kerub-data"),
        LvmAllocation(host_id=host.id, capability_id=f"lvm:{VG}", actual_size=40 * GIB, vg=VG, lv="kerub-thin",
                      thin_pool="pool0"),
        FileAllocation(host_id=host.id, capability_id=f"file:{IMAGES_DIR}", actual_size=3 * GIB, format="qcow2",
                       path=f"{IMAGES_DIR}/kerub-img.qcow2"),
    ]
    store.put_many([VirtualStorageDeviceDynamic(id=disk.id, allocations=[alloc])
                    for disk, alloc in zip(disks, allocations)])
    store.put(HostConfiguration(id=host.id, thin_pools=[ThinPool(vg=VG, name="pool0", size_bytes=20 * GIB)]))


async def test_a_restarted_fleet_finds_the_running_guests_and_volumes_its_documents_name(store):
    before = new_fleet(store)
    host = await up_host(before)
    vm = await running_vm(before, store, host)
    await _storage_of(before, store, host)
    volumes = await lvs(before, host)
    image = fileimage.parse_qemu_img_info(
        (await before.run(host.id, fileimage.qemu_img_info(f"{IMAGES_DIR}/kerub-img.qcow2"))).stdout)
    await before.stop()

    after = new_fleet(store)
    try:
        await after.start()
        await after.wait_up(host.id, timeout=HANG_GUARD)
        assert await domain_state(after, host, vm) == "running"
        restored = await lvs(after, host)
        assert {n: (lv.size_bytes, lv.segtypes, lv.pool) for n, lv in restored.items()} == {
            n: (lv.size_bytes, lv.segtypes, lv.pool) for n, lv in volumes.items()}
        info = fileimage.parse_qemu_img_info(
            (await after.run(host.id, fileimage.qemu_img_info(f"{IMAGES_DIR}/kerub-img.qcow2"))).stdout)
        assert (info.format, info.virtual_size) == (image.format, image.virtual_size)
        await until(lambda: dyn(store, host).status is HostStatus.up, "up after the restart")
        current = store.get(VirtualMachineDynamic, vm.id)
        assert current.status is VmStatus.up and current.host_id == host.id  # a restart is not a reboot
    finally:
        await after.stop()


async def test_a_restarted_fleet_restores_a_mirrored_lv_as_raid1(store):
    before = new_fleet(store)
    host = await up_host(before)
    assert (await before.run(host.id, lvm.lvcreate_mirror(VG, "kerub-safe", 4 * GIB, 1))).exit_code == 0
    volumes = await lvs(before, host)
    disk = store.put(VirtualStorageDevice(name="safe", size=4 * GIB))
    store.put(VirtualStorageDeviceDynamic(id=disk.id, allocations=[
        LvmAllocation(host_id=host.id, capability_id=f"lvm:{VG}", actual_size=4 * GIB, vg=VG, lv="kerub-safe",
                      mirrors=1)]))
    await before.stop()
    after = new_fleet(store)
    try:
        await after.start()
        await after.wait_up(host.id, timeout=HANG_GUARD)
        assert (await lvs(after, host))["kerub-safe"].segtypes == volumes["kerub-safe"].segtypes
    finally:
        await after.stop()


async def test_a_removed_host_is_forgotten(fleet, store):
    host = await up_host(fleet)
    other = await up_host(fleet, "kvm02")
    await until(lambda: dyn(store, host), "HostDynamic written")
    await fleet.remove_host(host.id)
    assert store.get(Host, host.id) is None
    await until(lambda: store.get(HostDynamic, host.id) is None, "HostDynamic deleted")
    assert not fleet.has(host.id) and fleet.host_ids == [other.id]
    with pytest.raises(FleetError):
        fleet.machine(host.id)
    assert (await fleet.run(host.id, lvm.vgs_json_command())).exit_code == EXIT_UNREACHABLE
    await asyncio.sleep(0.05)  # the writer's pending updates, if any, do not bring it back
    assert store.get(HostDynamic, host.id) is None and store.get(Host, host.id) is None
    assert fleet.status(other.id) is HostStatus.up


async def test_a_host_last_seen_down_comes_back_after_a_restart_without_its_guests(store):
    before = new_fleet(store)
    host = await up_host(before)
    vm = await running_vm(before, store, host)
    before.fail_host(host.id)
    await until(lambda: dyn(store, host).status is HostStatus.down, "the power loss noticed")
    await before.stop()
    assert store.get(VirtualMachineDynamic, vm.id).host_id == host.id, "nobody could tell the guest died"

    after = new_fleet(store)
    try:
        await after.start()
        await after.wait_up(host.id, timeout=HANG_GUARD)
        assert await domain_state(after, host, vm) in ("", "shut off")
        await until(lambda: store.get(VirtualMachineDynamic, vm.id).status is VmStatus.down, "the guest reported down")
    finally:
        await after.stop()


async def test_a_powered_off_host_is_woken_from_the_controller(fleet, store):
    """Issue 18 item 3: the controller's wake-up boots a simulated host that is off (no packet leaves
    for a simulated host); one that is on is left alone."""
    host = await up_host(fleet)
    assert (await fleet.wake(host.id)).stdout == "kvm01 is already on"
    fleet.fail_host(host.id)
    await until(lambda: dyn(store, host).status is HostStatus.down, "HostDynamic down")
    result = await fleet.wake(host.id)
    assert (result.exit_code, result.stdout) == (0, "kvm01 boots")
    await fleet.wait_up(host.id, timeout=HANG_GUARD)
    assert (await fleet.wake("no-such-host")).exit_code == EXIT_UNREACHABLE
