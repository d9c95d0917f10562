"""Re-planning: proposals kept, withdrawn, never duplicated; rejection remembered; auto-approve;
approval refused on conflicting reservations; the change filter; the service end to end."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from kerub_tui.core.bus import Change
from kerub_tui.core.models import (
    AuditEntry,
    AutoApprovePolicy,
    Event,
    HostDynamic,
    HostStatus,
    PhysicalVolumeInfo,
    Plan,
    PlanStatus,
    Settings,
    VirtualMachineDynamic,
    VmStatus,
)
from kerub_tui.core.store import Store
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import ApprovalRefused, Replanner, approve, reject, relevant

from .fleet import NOW, from_tables, host_id
from .simulator import FleetSimulator


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    with Store.open(tmp_path) as s:
        yield s


def two_pending(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   8G
        h2   8G
    """, vms="""
        name memory expect
        web  2G     availability:up@dealbreaker
    """)
    store.put_many(fleet.documents())


def proposals(store: Store) -> list[Plan]:
    return sorted((p for p in store.list(Plan) if p.status is PlanStatus.proposed), key=lambda p: p.id)


def test_a_proposal_is_stored_once_and_kept_while_nothing_changes(store: Store) -> None:
    two_pending(store)
    replanner = Replanner(store, clock=lambda: NOW)
    first = replanner.replan()
    [plan] = first.proposed
    assert plan.status is PlanStatus.proposed and plan.plan_kind == "start" and plan.premises
    assert plan.trigger == ["VM web: availability@dealbreaker: not running"]
    assert plan.steps[0].commands[0].command.startswith("libvirt: virsh start web")
    assert plan.method.startswith("best-first search")
    second = replanner.replan()
    assert second.proposed == [] and [p.id for p in second.kept] == [plan.id]
    assert [p.id for p in proposals(store)] == [plan.id]


def test_a_proposal_whose_premises_changed_is_withdrawn(store: Store) -> None:
    two_pending(store)
    replanner = Replanner(store, clock=lambda: NOW)
    [plan] = replanner.replan().proposed
    # the VM was started by hand meanwhile: nothing to do any more
    store.put(VirtualMachineDynamic(id="vm-web", host_id="host-h1", status=VmStatus.up))
    report = replanner.replan()
    assert [p.id for p in report.withdrawn] == [plan.id]
    assert store.get(Plan, plan.id).status is PlanStatus.withdrawn
    assert store.get(Plan, plan.id).status_reason == "its premises changed: re-planned"
    assert proposals(store) == []


def test_monitoring_noise_keeps_the_proposal(store: Store) -> None:
    two_pending(store)
    replanner = Replanner(store, clock=lambda: NOW)
    [plan] = replanner.replan().proposed
    dyn = store.get(HostDynamic, "host-h2")
    store.put(dyn.evolve(cpu_user=37.5, cpu_idle=60.0))
    report = replanner.replan()
    assert [p.id for p in report.kept] == [plan.id] and store.get(Plan, plan.id).premises == plan.premises


def test_a_rejected_plan_is_not_proposed_again_on_the_same_facts(store: Store) -> None:
    two_pending(store)
    replanner = Replanner(store, clock=lambda: NOW)
    [plan] = replanner.replan().proposed
    reject(store, plan.id, "admin")
    assert replanner.replan().proposed == []
    assert plan.steps[0].description == "start web on h1"
    # a fact the plan does not rely on changes: still the same rejected plan, still not proposed
    store.put(store.get(HostDynamic, "host-h2").evolve(memory_used=1 << 30))
    assert replanner.replan().proposed == []
    # a fact it relies on changes (its host goes down): the new plan is proposed
    store.put(store.get(HostDynamic, "host-h1").evolve(status=HostStatus.down))
    [again] = replanner.replan().proposed
    assert again.steps[0].description == "start web on h2"
    audit = [a.action for a in store.list(AuditEntry)]
    assert "plan reject" in audit


def test_auto_approve_policy(store: Store) -> None:
    two_pending(store)
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="start")]))
    report = Replanner(store, clock=lambda: NOW).replan()
    [plan] = report.approved
    assert plan.status is PlanStatus.approved and plan.decided_by == "kerub-tui (auto-approve): start"


def test_approval_refused_when_another_plan_holds_the_vm(store: Store) -> None:
    two_pending(store)
    replanner = Replanner(store, clock=lambda: NOW)
    [plan] = replanner.replan().proposed
    twin = plan.evolve(id="twin-plan", status=PlanStatus.approved)
    store.put(twin)
    with pytest.raises(ApprovalRefused, match="vm vm-web is held by plan twin-pla"):
        approve(store, plan.id, "admin")
    assert store.get(Plan, plan.id).status is PlanStatus.withdrawn


def test_approval_refused_when_capacity_is_gone(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   8G
    """, vms="""
        name memory expect
        a    5G     availability:up@dealbreaker
        b    5G     availability:up@want
    """)
    store.put_many(fleet.documents())
    first = repair_draft(build_state(store, now=NOW)).to_plan()
    store.put(first)
    assert [s.description for s in first.steps] == ["start a on h1"]
    # a second plan for b, made on the same facts (before a's plan was approved)
    from kerub_tui.planner.steps import StartVm

    second_step = StartVm("vm-b", "host-h1")
    state = build_state(store, now=NOW)
    second = Plan(steps=[second_step.to_planned(state)])
    store.put(second)
    approve(store, first.id, "admin")
    with pytest.raises(ApprovalRefused, match=r"h1: .* free memory, needs 5.0G"):
        approve(store, second.id, "admin")


def test_relevant_changes() -> None:
    dyn = HostDynamic(id="h", status=HostStatus.up, cpu_user=1.0)
    assert not relevant(Change("host-dynamic", "h", dyn, dyn.evolve(cpu_user=99.0)))
    assert relevant(Change("host-dynamic", "h", dyn, dyn.evolve(status=HostStatus.down)))
    # a VG's PVs: one emptied (pvmove) or taken out (vgreduce) re-plans; a few bytes more in use do not
    pvs = dyn.evolve(storage_pvs={"lvm:vg0": [PhysicalVolumeInfo(name="/dev/sda", size_bytes=100, free_bytes=50),
                                              PhysicalVolumeInfo(name="/dev/sdb", size_bytes=100, free_bytes=60)]})
    assert relevant(Change("host-dynamic", "h", dyn, pvs))
    fuller = pvs.evolve(storage_pvs={"lvm:vg0": [PhysicalVolumeInfo(name="/dev/sda", size_bytes=100, free_bytes=40),
                                                 PhysicalVolumeInfo(name="/dev/sdb", size_bytes=100, free_bytes=60)]})
    assert not relevant(Change("host-dynamic", "h", pvs, fuller))
    emptied = pvs.evolve(storage_pvs={"lvm:vg0": [PhysicalVolumeInfo(name="/dev/sda", size_bytes=100, free_bytes=0),
                                                  PhysicalVolumeInfo(name="/dev/sdb", size_bytes=100, free_bytes=100)]})
    assert relevant(Change("host-dynamic", "h", pvs, emptied))
    reduced = pvs.evolve(storage_pvs={"lvm:vg0": [PhysicalVolumeInfo(name="/dev/sda", size_bytes=100, free_bytes=50)]})
    assert relevant(Change("host-dynamic", "h", pvs, reduced))
    assert relevant(Change("host-dynamic", "h", dyn, dyn.evolve(cpu_user=2.0)), pending_hold={"h"})
    assert not relevant(Change("audit", "x", None, AuditEntry(action="a")))
    assert not relevant(Change("event", "x", None, Event(type="t", message="m")))
    vm = VirtualMachineDynamic(id="v", host_id="h", status=VmStatus.up)
    assert not relevant(Change("vm-dynamic", "v", vm, vm.evolve(cpu_percent=50.0)))
    assert relevant(Change("vm-dynamic", "v", vm, vm.evolve(status=VmStatus.down)))
    plan = Plan()
    assert not relevant(Change("plan", plan.id, None, plan))  # a new proposal: ours
    done = plan.evolve(status=PlanStatus.done)
    assert relevant(Change("plan", plan.id, plan, done))
    assert not relevant(Change("plan", plan.id, plan, done), own={(plan.id, "done")})
    assert relevant(Change("vm", "v", None, None))


def test_guest_memory_drift_is_not_a_reason_to_replan_but_crossing_the_ksm_line_is() -> None:
    total = 64 << 30
    dyn = HostDynamic(id="h", status=HostStatus.up, memory_used=40 << 30)
    drift = dyn.evolve(memory_used=(40 << 30) + (300 << 20))
    tight = dyn.evolve(memory_used=int(total * 0.9))
    assert not relevant(Change("host-dynamic", "h", dyn, drift), memory_total=lambda host_id: total)
    assert relevant(Change("host-dynamic", "h", dyn, tight), memory_total=lambda host_id: total)


def test_unfixable_dealbreakers_are_reported_once(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   4G
    """, vms="""
        name memory expect
        huge 64G    availability:up@dealbreaker
    """)
    store.put_many(fleet.documents())
    replanner = Replanner(store, clock=lambda: NOW)
    report = replanner.replan()
    assert report.proposed == [] and report.unfixable == ["VM huge: availability@dealbreaker: not running"]
    replanner.replan()
    events = [e for e in store.list(Event) if e.type == "unsatisfiable"]
    assert [e.message for e in events] == ["no plan can fix: VM huge: availability@dealbreaker: not running"]


async def _until(predicate, what: str) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout=30)  # a safety net against a hang, not a speed test
    except TimeoutError:
        raise AssertionError(f"never happened: {what}") from None


async def test_the_service_proposes_executes_on_approval_and_settles(store: Store) -> None:
    pytest.importorskip("kerub_tui.hosts.kvm")
    fleet = from_tables(hosts="""
        name memory
        h1   8G
    """)
    store.put_many(fleet.documents())
    sim = FleetSimulator(fleet.state())
    executor = Executor(store, sim)
    replanner = Replanner(store, debounce=0.01, max_delay=0.2, executor=executor)
    task = asyncio.create_task(replanner.run())
    try:
        await _until(lambda: replanner.passes >= 1, "the first pass")
        assert proposals(store) == []  # all satisfied: nothing proposed
        more = from_tables(hosts="""
            name memory
            h1   8G
        """, vms="""
            name memory expect
            web  1G     availability:up@dealbreaker
        """)
        sim.add(more.state())
        store.put(more.docs[("vm", "vm-web")])
        await _until(lambda: proposals(store), "a proposal after the VM was added")
        [plan] = proposals(store)
        approve(store, plan.id, "admin")
        await _until(lambda: store.get(Plan, plan.id).status is PlanStatus.done, "the plan carried out")
        passes = replanner.passes
        await _until(lambda: replanner.passes > passes, "the re-plan after the plan finished")
        await replanner.wait_idle()
        assert proposals(store) == []
        assert store.get(VirtualMachineDynamic, "vm-web").status is VmStatus.up
        assert sim.divergence(store) == []  # the host runs it too
    finally:
        store.feed.close()
        await task
        await replanner.stop()


async def test_the_service_marks_plans_cut_off_by_the_last_stop_interrupted(store: Store) -> None:
    two_pending(store)
    plan = Replanner(store, clock=lambda: NOW).replan().proposed[0]
    store.put(plan.evolve(status=PlanStatus.running))
    replanner = Replanner(store, debounce=0.01)
    task = asyncio.create_task(replanner.run())
    try:
        await _until(lambda: replanner.passes >= 1, "the first pass")
        assert store.get(Plan, plan.id).status is PlanStatus.interrupted
        # and the re-plan that follows proposes the start again, from what the hosts report
        assert [p.steps[0].description for p in proposals(store)] == ["start web on h1"]
    finally:
        store.feed.close()
        await task


def test_violations_appearing_and_clearing_are_events_once(store: Store) -> None:
    fleet = from_tables(hosts="""
        name memory
        h1   4G
    """, vms="""
        name memory expect
        huge 64G    availability:up@dealbreaker
    """)
    store.put_many(fleet.documents())
    replanner = Replanner(store, clock=lambda: NOW)
    replanner.replan()
    replanner.replan()

    def events(kind: str) -> list[Event]:
        return [e for e in store.list(Event) if e.type == kind]

    vm = store.find_by_name("vm", "huge")
    assert [(e.target, e.message) for e in events("violation")] == [
        (vm.id, "availability:up@dealbreaker: not running")]
    # A restarted controller remembers what it reported.
    Replanner(store, clock=lambda: NOW).replan()
    assert len(events("violation")) == 1
    # Met again (the VM was made smaller and now runs on h1): one clearing event.
    store.put(store.get("vm", vm.id).evolve(memory_min=1 << 30, memory_max=1 << 30))
    store.put(VirtualMachineDynamic(id=vm.id, host_id=host_id("h1"), status=VmStatus.up))
    replanner.replan()
    replanner.replan()
    assert [(e.target, e.message) for e in events("violation-cleared")] == [
        (vm.id, "availability:up@dealbreaker: met again")]


def test_a_running_migration_raises_no_warning_for_the_vms_it_moves(store: Store) -> None:
    """An approved evacuation is under way: a VM the monitor reports migrating is not "up" for a moment,
    and its host is still the one in maintenance. Neither is a violation nor "no plan can fix" while the
    plan is at it (issue 13 item 8); what is still wrong once the plan is over is said then."""
    fleet = from_tables(hosts="""
        name memory options
        h1   16G    recycling
        h2   16G
    """, vms="""
        name memory on expect
        a    2G     h1 availability:up@dealbreaker
        b    2G     h1 availability:up@dealbreaker
    """)
    store.put_many(fleet.documents())
    replanner = Replanner(store, clock=lambda: NOW)
    [plan] = replanner.replan().proposed
    assert plan.plan_kind == "evacuate" and len(plan.steps) == 2
    approve(store, plan.id, "admin")
    store.put(store.get(Plan, plan.id).evolve(status=PlanStatus.running))
    store.put(VirtualMachineDynamic(id="vm-a", host_id=host_id("h1"), status=VmStatus.migrating))
    report = replanner.replan()
    assert report.unfixable == []
    warnings = [(e.type, e.message) for e in store.list(Event)]
    assert warnings == [], warnings
    # The plan is over and a did not land: now it is said, naming the VM.
    store.put(store.get(Plan, plan.id).evolve(status=PlanStatus.failed))
    replanner.replan()
    events = {(e.type, e.target) for e in store.list(Event)}
    assert ("violation", "vm-a") in events
    unsatisfiable = [e for e in store.list(Event) if e.type == "unsatisfiable"]
    assert all(e.target is not None for e in unsatisfiable)
