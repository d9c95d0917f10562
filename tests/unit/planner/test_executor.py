"""The execution engine, against the fleet simulator: steps in order, commands audited, documents
updated from the steps' predictions, stop at the first failure, reservations released, interruption."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kerub_tui.core.models import (
    AuditEntry,
    Plan,
    PlanStatus,
    StepOutcome,
    VirtualMachineDynamic,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.planner.commitments import build_state, lock_holders
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve, recover_interrupted

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator

pytest.importorskip("kerub_tui.hosts.kvm")


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def vm_with_new_disk() -> Fleet:
    return from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory disks expect
        db   2G     data  availability:up@dealbreaker
    """, disks="""
        name size
        data 10G
    """)


def proposed(store: Store, fleet: Fleet) -> Plan:
    store.put_many(fleet.documents())
    draft = repair_draft(build_state(store, now=NOW))
    plan = draft.to_plan()
    store.put(plan)
    return plan


async def test_an_approved_plan_creates_the_lv_and_starts_the_vm(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["create-lv", "start-vm"]
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert [r.outcome for r in done.records] == [StepOutcome.done, StepOutcome.done]
    assert done.records[0].commands[0].command.startswith("lvcreate")
    assert done.records[1].commands[0].command.startswith("libvirt: virsh start db")
    # the documents say what was done, before monitoring reports it
    assert store.get(VirtualMachineDynamic, "vm-db").host_id == "host-h1"
    assert store.get(VirtualMachineDynamic, "vm-db").status is VmStatus.up
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert (alloc.vg, alloc.lv) == ("vg0", "kerub-data")
    # perform and verify (read back): every command in the step records and in the audit log
    ran = [c for r in done.records for c in r.commands]
    assert [" ".join(c.command.split()[:2]) for c in ran] == [
        "lvcreate --yes", "lvs --reportformat", "libvirt: virsh", "libvirt: domain-state"]
    audit = [a for a in store.list(AuditEntry) if a.plan_id == plan.id]
    assert sorted(a.action for a in audit) == ["plan approve", "plan done", "plan start"] + ["step command"] * 4
    commands = [a for a in audit if a.action == "step command"]
    assert sorted(a.command for a in commands) == sorted(c.command for c in ran)
    assert all(a.host_id == "host-h1" and a.exit_code == 0 for a in commands)
    assert [h for h, _ in sim.log][:1] == ["host-h1"]
    # nothing is left to do
    assert repair_draft(build_state(store, now=NOW)) is None


async def test_stop_at_the_first_failure_and_release_the_reservations(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    assert lock_holders(store)  # approved: it holds the VM and the disk
    sim = FleetSimulator(fleet.state(), fail=lambda host, command:
                         "Volume group \"vg0\" has insufficient free space" if command.startswith("lvcreate") else None)
    failed = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert failed.status_reason.startswith("step 1 (create LV vg0/kerub-data (10.0G) on h1 for disk data): lvcreate")
    assert "insufficient free space" in failed.status_reason
    assert [r.outcome for r in failed.records] == [StepOutcome.failed]
    assert not any("libvirt" in c for _, c in sim.log)  # the VM was not started
    assert lock_holders(store) == {}
    assert store.get(VirtualMachineDynamic, "vm-db") is None
    # the next plan starts again from what is true
    assert [s.type for s in repair_draft(build_state(store, now=NOW)).steps] == ["create-lv", "start-vm"]


async def test_a_step_that_no_longer_applies_fails_in_prepare(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    # meanwhile the VM was started by someone else on the host (monitoring reports it)
    store.put(VirtualMachineDynamic(id="vm-db", host_id="host-h1", status=VmStatus.up))
    sim = FleetSimulator(fleet.state())
    failed = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert "step 2 (start db on h1): prepare: db is already up on h1" in failed.status_reason


async def test_verification_catches_a_step_that_did_not_happen(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")

    class Forgetful(FleetSimulator):
        """Says yes to lvcreate but does not create anything."""

        def _apply(self) -> None:
            if self._step is not None and self._step.type == "create-lv":
                return
            super()._apply()

    sim = Forgetful(fleet.state())
    failed = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert failed.status_reason.endswith("verify: LV vg0/kerub-data is not there")


async def test_migration_and_ksm_read_back(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G    used=15G ksm=off,0,0
    """, vms="""
        name memory on
        a    2G     h1
        b    2G     h2
    """)
    plan = proposed(store, fleet)
    assert plan.plan_kind == "evacuate"
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert store.get(VirtualMachineDynamic, "vm-a").host_id == "host-h2"


async def test_ssh_trust_builds_the_target_command_from_the_key_read_on_the_source(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   16G
        h2   16G
    """, disks="""
        name size on expect
        data 1G   h1 storage-redundancy:2,out-of-box@dealbreaker
    """)
    plan = proposed(store, fleet)
    assert [s.type for s in plan.steps] == ["ssh-trust", "copy-allocation"]
    assert "(printed above)" in plan.steps[0].commands[-1].command
    approve(store, plan.id, "admin")
    sim = FleetSimulator(fleet.state())
    done = await Executor(store, sim, on_step=sim.on_step).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    ran = done.records[0].commands[-1].command
    assert "authorized_keys" in ran and "AAAAC3NzaC1lZDI1NTE5" in ran
    assert store.get("host-config", "host-h2").ssh_trust == ["host-h1"]
    assert len(store.get(VirtualStorageDeviceDynamic, "disk-data").allocations) == 2


async def test_cancellation_marks_the_plan_interrupted_and_restart_recovers(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    gate = asyncio.Event()

    class Slow(FleetSimulator):
        async def run(self, host_id, command, *, privileged=True):
            await gate.wait()
            return await super().run(host_id, command, privileged=privileged)

    sim = Slow(fleet.state())
    task = asyncio.create_task(Executor(store, sim, on_step=sim.on_step).execute(plan.id))
    while store.get(Plan, plan.id).status is not PlanStatus.running:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    interrupted = store.get(Plan, plan.id)
    assert interrupted.status is PlanStatus.interrupted
    assert interrupted.records[0].outcome is StepOutcome.interrupted


def test_recover_interrupted_on_start(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    from kerub_tui.core.models import StepRecord

    store.put(plan.evolve(status=PlanStatus.running, records=[StepRecord(step_index=0).model_dump()]))
    [recovered] = recover_interrupted(store)
    assert recovered.status is PlanStatus.interrupted
    assert recovered.records[0].outcome is StepOutcome.interrupted
    assert lock_holders(store) == {}
