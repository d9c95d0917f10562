"""The HostPool in front of the executor: plans the planner made for simulated hosts run to done through
HostPool -> SimulatedFleet, verifiers included (they read lvs JSON and domain states back from the
machines), a migration moves the VM's documents, and a migration between a simulated and a real host
is refused by the pool before anything reaches SSH.

Timing(scale=0): work happens at once; waits are for a state, with a ceiling only a hang reaches.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import (
    AuditEntry,
    DiskLink,
    Host,
    HostStatus,
    LvmAllocation,
    Plan,
    PlanStatus,
    StepOutcome,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts import kvm, lvm, spice
from kerub_tui.hosts.fleet import Fleet, FleetError
from kerub_tui.hosts.operations import EXIT_UNREACHABLE, FleetOperations, OperationResult
from kerub_tui.planner.steps import CreateLv, MigrateVm, RemoveLv, StartVm, step_from_planned
from kerub_tui.sim import HostPool, SimulatedFleet, Timing, profile
from tests.sim._support import CEILING, until

GIB = 1 << 30
VG = profile("mini").vg



@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    controller = Controller(tmp_path, sim_timing=Timing(scale=0))
    await controller.start()
    yield controller
    await controller.stop()


async def add_hosts(controller: Controller, *names: str) -> list[Host]:
    hosts = [await controller.add_simulated_host(name, "mini") for name in names]
    for host in hosts:
        await controller.hosts.wait_up(host.id, timeout=CEILING)
    return hosts


def proposed(controller: Controller) -> Plan | None:
    plans = [p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed]
    assert len(plans) <= 1, [p.steps for p in plans]
    return plans[0] if plans else None


async def carry_out(controller: Controller, plan: Plan) -> Plan:
    await controller.decide_plan(plan.id, True)
    return await until(lambda: (p := controller.db.get(Plan, plan.id)).status in (PlanStatus.done, PlanStatus.failed)
                       and p, f"plan {plan.id[:8]} finished")


def commands_of(plan: Plan, index: int) -> list[str]:
    record = next(r for r in plan.records if r.step_index == index)
    assert record.outcome is StepOutcome.done, record
    assert all(c.exit_code == 0 for c in record.commands), record.commands
    return [c.command for c in record.commands]


async def lvs(controller: Controller, host: Host) -> dict[str, lvm.LogicalVolume]:
    result = await controller.hosts.run(host.id, lvm.lvs_json_command(VG))
    assert result.exit_code == 0, result
    return {lv.name: lv for lv in lvm.parse_lvs(result.stdout)}


async def running_web(controller: Controller, *host_names: str) -> tuple[list[Host], VirtualMachine, Plan]:
    """Hosts, and a VM with a disk that the planner placed and the executor started."""
    hosts = await add_hosts(controller, *host_names)
    disk = await controller.create_disk("data", size=10 * GIB)
    vm = await controller.create_vm("web", cpus=2, memory_min=2 * GIB, disks=[DiskLink(disk_id=disk.id)],
                                    expectations=["availability:up@dealbreaker"])
    plan = await carry_out(controller, await until(lambda: proposed(controller), "a plan to start web"))
    assert plan.status is PlanStatus.done, plan.status_reason
    return hosts, vm, plan


# --- plans through the pool ---------------------------------------------------------------------------


async def test_a_planned_lv_and_start_run_to_done_on_a_simulated_host_verified_by_reading_back(controller):
    [host], vm, plan = await running_web(controller, "kvm01")
    steps = [step_from_planned(s) for s in plan.steps]
    assert [type(s) for s in steps] == [CreateLv, StartVm]
    create, start = steps
    assert create.host == start.host == host.id and create.vg == VG

    # each step ran its builder's command, then its verifier read the result back from the machine
    assert commands_of(plan, 0) == [lvm.lvcreate(VG, create.lv, create.size), lvm.lvs_json_command(VG)]
    assert commands_of(plan, 1) == [f"libvirt: {kvm.describe_start('web')} (after {kvm.describe_define('web')})",
                                    "libvirt: domain-state web"]
    assert any(a.action == "plan done" and a.plan_id == plan.id for a in controller.db.list(AuditEntry))

    # and the machine and the documents say the same
    lv = (await lvs(controller, host))[create.lv]
    assert lv.size_bytes >= create.size and lv.segtypes == ("linear",)
    assert controller.simulator.machine(host.id).domain_state(vm.id) == "running"
    await until(lambda: (d := controller.db.get(VirtualMachineDynamic, vm.id)) and d.status is VmStatus.up,
                "web up in its document")
    assert controller.db.get(VirtualMachineDynamic, vm.id).host_id == host.id
    [allocation] = controller.db.get(VirtualStorageDeviceDynamic, vm.disks[0].disk_id).allocations
    assert isinstance(allocation, LvmAllocation)
    assert (allocation.host_id, allocation.vg, allocation.lv) == (host.id, VG, create.lv)


async def test_a_planned_migration_between_simulated_hosts_moves_the_vm_and_its_disk(controller):
    hosts, vm, _ = await running_web(controller, "kvm01", "kvm02")
    source = next(h for h in hosts if h.id == controller.db.get(VirtualMachineDynamic, vm.id).host_id)
    target = next(h for h in hosts if h is not source)
    await controller.evacuate_host(source.name)
    plan = await until(lambda: proposed(controller), "a plan to drain the source")
    steps = [step_from_planned(s) for s in plan.steps]
    [migrate] = [s for s in steps if isinstance(s, MigrateVm)]
    assert (migrate.host, migrate.target, migrate.vm) == (source.id, target.id, vm.id)
    assert any(isinstance(s, RemoveLv) and s.host == source.id for s in steps)

    plan = await carry_out(controller, plan)
    assert plan.status is PlanStatus.done, plan.status_reason
    index = steps.index(migrate)
    assert commands_of(plan, index)[-1] == "libvirt: domain-state web"  # read back on the target
    await until(lambda: controller.db.get(VirtualMachineDynamic, vm.id).host_id == target.id,
                "the VM document on the target")
    assert controller.db.get(VirtualMachineDynamic, vm.id).status is VmStatus.up
    simulator = controller.simulator
    assert simulator.machine(target.id).domain_state(vm.id) == "running"
    assert simulator.machine(source.id).domain_state(vm.id) == ""
    assert await lvs(controller, source) == {}
    [allocation] = controller.db.get(VirtualStorageDeviceDynamic, vm.disks[0].disk_id).allocations
    assert allocation.host_id == target.id and allocation.lv in await lvs(controller, target)


# --- the pool's routing ------------------------------------------------------------------------


class RecordingOperations(FleetOperations):
    """The real SSH-side operations, noting every call that reaches them."""

    def __init__(self, fleet: Fleet) -> None:
        super().__init__(fleet)
        self.calls: list[tuple[str, str]] = []

    async def run(self, host_id: str, command: str, *, privileged: bool = True) -> OperationResult:
        self.calls.append(("run", host_id))
        return await super().run(host_id, command, privileged=privileged)

    async def libvirt(self, host_id: str, op: str, **kwargs: Any) -> OperationResult:
        self.calls.append((op, host_id))
        return await super().libvirt(host_id, op, **kwargs)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path / "data") as s:
        yield s


@pytest.fixture
async def pool(store: Store, tmp_path: Path) -> AsyncIterator[HostPool]:
    # The SSH fleet is never started: a real host in it has no connection to use, and none is made.
    fleet = Fleet(store, tmp_path / "data")
    simulated = SimulatedFleet(store, timing=Timing(scale=0))
    pool = HostPool(store, fleet, simulated, RecordingOperations(fleet))
    await simulated.start()
    yield pool
    await simulated.stop()


def real_host(store: Store) -> Host:
    """A real host's document (loopback, no accepted key): nothing may connect to it here."""
    return store.put(Host(name="metal01", address="127.0.0.1", port=1))


async def sim_vm(pool: HostPool, store: Store, host: Host) -> VirtualMachine:
    vm = store.put(VirtualMachine(name="web", cpus=1, memory_min=GIB, memory_max=GIB))
    result = await pool.libvirt(host.id, "start", vm_id=vm.id, vm_name=vm.name,
                                xml=kvm.domain_xml(vm, {}, spice.new_spice_password()))
    assert result.exit_code == 0, result
    return vm


async def test_the_pool_sends_a_simulated_hosts_work_to_the_simulator(pool, store):
    host = await pool.simulated.add_host("kvm01", "mini")
    await pool.wait_up(host.id, timeout=CEILING)
    assert pool.is_simulated(host.id) and pool.status(host.id) is HostStatus.up
    [group] = lvm.parse_vgs((await pool.run(host.id, lvm.vgs_json_command())).stdout)
    assert group.name == VG
    vm = await sim_vm(pool, store, host)
    assert (await pool.libvirt(host.id, "domain-state", vm_id=vm.id)).stdout == "running"
    assert pool.operations.calls == []

    await pool.libvirt(host.id, "destroy-if-running", vm_id=vm.id)
    await pool.remove_host(host.id)
    assert store.get(Host, host.id) is None and not pool.simulated.has(host.id)


async def test_the_pool_sends_a_real_hosts_work_to_the_ssh_side(pool, store):
    metal = real_host(store)
    assert not pool.is_simulated(metal.id)
    result = await pool.run(metal.id, lvm.vgs_json_command())
    assert result.exit_code == EXIT_UNREACHABLE and "metal01" in result.stderr
    assert pool.operations.calls == [("run", metal.id)]
    with pytest.raises(FleetError):
        pool.fleet.member(metal.id)  # no connection was made for it


@pytest.mark.parametrize("direction", ["simulated to real", "real to simulated"])
async def test_the_pool_refuses_a_migration_between_a_simulated_and_a_real_host(pool, store, direction):
    host = await pool.simulated.add_host("kvm01", "mini")
    await pool.wait_up(host.id, timeout=CEILING)
    metal = real_host(store)
    vm = await sim_vm(pool, store, host)
    source, target = (host, metal) if direction == "simulated to real" else (metal, host)
    result = await pool.libvirt(source.id, "migrate", vm_id=vm.id, target_host_id=target.id,
                                target_address=target.address, copy_storage=False)
    assert result.exit_code != 0 and result.stdout == ""
    assert "simulated" in result.stderr and "real" in result.stderr and "\n" not in result.stderr.strip()
    assert pool.operations.calls == []  # nothing went to the SSH side
    with pytest.raises(FleetError):
        pool.fleet.member(metal.id)
    assert pool.simulated.machine(host.id).domain_state(vm.id) == "running"
