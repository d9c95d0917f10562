"""Crashes mid-step (issue 17 item 5): intents recorded before the commands, dead writers' plans
interrupted, documents reconciled with what the hosts report, cleanup proposals for what no document
knows, and a create step adopting its own earlier work instead of failing on "already exists".

States are built from documents (the planner's test fleet) and hosts answer through the executor
tests' simulator; the real kill-and-restart runs are in tests/integration/test_crash_step_lab.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kerub_tui.core.models import (
    AuditEntry,
    AutoApprovePolicy,
    Event,
    FileAllocation,
    HostConfiguration,
    LvmAllocation,
    Plan,
    PlanStatus,
    Settings,
    StepIntent,
    StepOutcome,
    StepRecord,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
)
from kerub_tui.core.store import Store
from kerub_tui.hosts.results import OperationResult as CommandResult
from kerub_tui.planner import reconcile as rc
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import Replanner, approve
from kerub_tui.planner.state import OperationalState

from .fleet import NOW, Fleet, from_tables
from .simulator import FleetSimulator

GIB = 1 << 30
DEAD = "4194303:1:not-this-boot"  # a process identity that cannot be alive


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
    plan = repair_draft(build_state(store, now=NOW)).to_plan()
    store.put(plan)
    return plan


def lv_alloc(size: int = 10 * GIB, lv: str = "kerub-data") -> LvmAllocation:
    return LvmAllocation(host_id="host-h1", capability_id="lvm:vg0", vg="vg0", lv=lv, actual_size=size)


def killed_after_lvcreate(store: Store, plan: Plan, *, runner: str | None = DEAD) -> Plan:
    """What a controller SIGKILLed between lvcreate and its record leaves in the store."""
    record = StepRecord(step_index=0, host_id="host-h1", started_at=NOW,
                        intent=StepIntent(disk_id="disk-data", allocation=lv_alloc()))
    crashed = plan.model_copy(update={"status": PlanStatus.running, "records": [record], "runner": runner})
    store.put(crashed)
    return crashed


def lv(name: str, size: int, vg: str = "vg0", pool: str | None = None) -> rc.SeenObject:
    return rc.SeenObject("lv", name, size, vg, pool)


def reconcile_store(store: Store, report: rc.HostReport) -> rc.Outcome:
    return rc.reconcile(report, disks=[d.id for d in store.list(VirtualStorageDevice)],
                        disk_dyns=store.list(VirtualStorageDeviceDynamic), configs=store.list(HostConfiguration),
                        plans=store.list(Plan))


class LvHost(FleetSimulator):
    """The executor tests' simulated hosts, h1 with LVs in vg0 that no document records (made before a crash)."""

    def __init__(self, state, extra: dict[str, int] | None = None, **kwargs) -> None:
        super().__init__(state, **kwargs)
        for name, size in (extra or {}).items():
            self.machine("host-h1").restore_volume("vg0", name, size, None)

    @property
    def lvs(self) -> set[str]:
        return set(self.machine("host-h1").volumes["vg0"])


# --- intents ---------------------------------------------------------------------------------------


async def test_the_intent_is_committed_before_the_command_runs_and_the_plan_names_its_runner(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    seen = []

    class Watching(FleetSimulator):
        async def run(self, host_id, command, *, privileged=True):
            if command.startswith("lvcreate"):
                current = store.get(Plan, plan.id)
                seen.append((store._tx_depth, current.runner, current.records[0].intent))
            return await super().run(host_id, command, privileged=privileged)

    sim = Watching(fleet.state())
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    [(depth, runner, intent)] = seen
    assert depth == 0  # committed: no transaction open while the command runs
    assert runner == rc.process_identity()
    assert intent.disk_id == "disk-data"
    assert (intent.allocation.vg, intent.allocation.lv, intent.allocation.actual_size) == ("vg0", "kerub-data", 10 * GIB)
    assert done.records[0].outcome is StepOutcome.done
    assert done.records[1].intent is None  # starting a VM makes no storage


def test_the_intent_survives_a_reopen(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    with Store.open(tmp_path, readonly=True) as again:
        assert again.get(Plan, plan.id).records[0].intent.allocation.lv == "kerub-data"


# --- dead writers ----------------------------------------------------------------------------------


def test_a_dead_writers_running_plan_is_interrupted_with_a_reason_and_an_event(store: Store) -> None:
    plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    [marked] = rc.interrupt_dead_writers(store, now=NOW)
    assert marked.id == plan.id
    stored = store.get(Plan, plan.id)
    assert stored.status is PlanStatus.interrupted
    assert "pid 4194303" in stored.status_reason and "gone" in stored.status_reason
    assert stored.records[0].outcome is StepOutcome.interrupted
    assert stored.records[0].intent is not None  # kept for the reconcile
    [event] = [e for e in store.list(Event) if e.type == "plan-interrupted"]
    assert event.target == plan.id and plan.id[:8] in event.message
    assert any(a.action == "plan interrupted" and a.plan_id == plan.id for a in store.list(AuditEntry))
    assert rc.interrupt_dead_writers(store) == []  # once


def test_a_plan_of_a_live_process_is_left_running(store: Store) -> None:
    base = proposed(store, vm_with_new_disk())
    killed_after_lvcreate(store, base, runner=rc.process_identity())  # this very process
    assert rc.interrupt_dead_writers(store) == []
    assert store.get(Plan, base.id).status is PlanStatus.running


def test_a_plan_without_a_recorded_runner_is_interrupted(store: Store) -> None:
    plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()), runner=None)
    assert [p.id for p in rc.interrupt_dead_writers(store)] == [plan.id]


def test_identity_checks_pid_and_start_time() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        identity = rc.process_identity(child.pid)
        assert rc.identity_alive(identity)
        pid, start, boot = identity.split(":")
        assert not rc.identity_alive(f"{pid}:{int(start) + 1}:{boot}")  # the pid reused by another process
        assert not rc.identity_alive(f"{pid}:{start}:another-boot")
    finally:
        child.communicate(b"")
    assert not rc.identity_alive(identity)
    assert not rc.identity_alive(None) and not rc.identity_alive("garbage") and not rc.identity_alive("1:?:x")


async def test_opening_the_store_for_writing_interrupts_a_dead_writers_plan(tmp_path: Path) -> None:
    from kerub_tui.controller import Controller

    with Store.open(tmp_path) as store:
        plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    readonly = Controller(tmp_path, readonly=True)
    readonly.open_store()
    assert readonly.db.get(Plan, plan.id).status is PlanStatus.running  # a reader changes nothing
    await readonly.stop()
    one_shot = Controller(tmp_path)
    await one_shot.start(connect_hosts=False)  # what `kerub-tui plan list` does
    try:
        assert one_shot.db.get(Plan, plan.id).status is PlanStatus.interrupted
    finally:
        await one_shot.stop()


# --- reconcile (pure) ------------------------------------------------------------------------------


def test_an_lv_an_intent_names_with_the_intended_shape_is_adopted(store: Store) -> None:
    plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    rc.interrupt_dead_writers(store, now=NOW)
    report = rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),), files=())
    outcome = reconcile_store(store, report)
    assert [(p.plan_id, size) for p, size in outcome.adopted] == [(plan.id, 10 * GIB)]
    assert outcome.orphans == [] and outcome.absent == []
    applied = rc.apply(store, outcome, now=NOW)
    assert applied.adopted == ["LV vg0/kerub-data"] and applied.cleanup is None
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert (alloc.host_id, alloc.vg, alloc.lv, alloc.actual_size) == ("host-h1", "vg0", "kerub-data", 10 * GIB)
    assert store.get(Plan, plan.id).records[0].intent.resolution == "adopted"
    assert any(e.type == "storage-adopted" for e in store.list(Event))
    # the re-plan only starts the VM: the disk's LV exists once
    assert [s.type for s in repair_draft(build_state(store, now=NOW)).steps] == ["start-vm"]
    # settled: a second reconcile finds nothing to do
    again = reconcile_store(store, report)
    assert not (again.adopted or again.absent or again.orphans)


def test_an_intent_whose_object_is_not_there_was_never_made(store: Store) -> None:
    plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    rc.interrupt_dead_writers(store, now=NOW)
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(), files=()))
    assert [p.plan_id for p in outcome.absent] == [plan.id] and not outcome.adopted and not outcome.orphans
    rc.apply(store, outcome, now=NOW)
    assert store.get(Plan, plan.id).records[0].intent.resolution == "absent"
    assert store.get(VirtualStorageDeviceDynamic, "disk-data") is None
    assert [s.type for s in repair_draft(build_state(store, now=NOW)).steps] == ["create-lv", "start-vm"]


def test_an_unreadable_host_settles_nothing(store: Store) -> None:
    killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    rc.interrupt_dead_writers(store, now=NOW)
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=None, files=None))
    assert not (outcome.adopted or outcome.absent or outcome.orphans or outcome.mismatched)
    # another host's report says nothing about h1's intents
    other = reconcile_store(store, rc.HostReport("host-h2", lvs=(), files=()))
    assert not (other.adopted or other.absent)


@pytest.mark.parametrize("seen, why", [
    (lv("kerub-data", 1 * GIB), "1.0G"),  # smaller than intended
    (lv("kerub-data", 10 * GIB, pool="pool0"), "pool"),  # a thin LV where a plain one was intended
])
def test_a_shape_that_does_not_match_is_not_adopted_but_offered_for_cleanup(store: Store, seen, why) -> None:
    plan = killed_after_lvcreate(store, proposed(store, vm_with_new_disk()))
    rc.interrupt_dead_writers(store, now=NOW)
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(seen,), files=()))
    assert not outcome.adopted
    [(_pending, reason)] = outcome.mismatched
    assert why in reason
    [orphan] = outcome.orphans
    assert orphan.seen == seen
    applied = rc.apply(store, outcome, now=NOW)
    assert applied.cleanup is not None
    assert store.get(Plan, plan.id).records[0].intent.resolution == "mismatch"
    assert store.get(VirtualStorageDeviceDynamic, "disk-data") is None


def test_kerub_named_storage_no_document_knows_becomes_an_event_and_a_cleanup_proposal(store: Store) -> None:
    store.put_many(vm_with_new_disk().documents())
    store.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[lv_alloc()]))
    store.put(HostConfiguration(id="host-h1", thin_pools=[{"vg": "vg0", "name": "kerub-pool", "size_bytes": GIB}]))
    report = rc.HostReport("host-h1", lvs=(
        lv("kerub-data", 10 * GIB),  # recorded: a disk's allocation
        lv("kerub-pool", GIB),  # recorded: a thin pool
        lv("kerub-lost", 2 * GIB),  # nobody knows it
    ), files=(rc.SeenObject("file", "/var/lib/kerub-tui/images/kerub-old.qcow2"),))
    outcome = reconcile_store(store, report)
    assert sorted(o.seen.name for o in outcome.orphans) == ["/var/lib/kerub-tui/images/kerub-old.qcow2", "kerub-lost"]
    applied = rc.apply(store, outcome, now=NOW)
    plan = applied.cleanup
    assert plan.plan_kind == "cleanup" and plan.status is PlanStatus.proposed
    assert [s.type for s in plan.steps] == ["remove-orphan-lv", "remove-orphan-file"]
    assert plan.steps[0].commands[0].command == "lvremove --yes vg0/kerub-lost"
    assert "rm -f -- /var/lib/kerub-tui/images/kerub-old.qcow2" in plan.steps[1].commands[0].command
    events = [e for e in store.list(Event) if e.type == "orphan-storage"]
    assert len(events) == 2 and all(plan.id[:8] in e.message for e in events)
    # never deleted without approval; and asked once, not at every reconnect
    assert all(a.action != "step command" for a in store.list(AuditEntry))
    assert rc.apply(store, reconcile_store(store, report), now=NOW).cleanup is None
    # the planner's passes leave the proposal alone (it proposes no cleanup itself)
    Replanner(store, clock=lambda: NOW).replan()
    assert store.get(Plan, plan.id).status is PlanStatus.proposed


def test_a_thin_pool_a_crash_left_unrecorded_is_offered_for_cleanup_unless_a_thin_lv_lives_in_it(store: Store) -> None:
    """Issue 18 item 5: kerub-tui's pool (kerub--thin) is kerub-named, so one made just before a crash is
    found like any other LV; but a pool that a recorded thin LV lives in is never removed (lvremove --yes
    of a pool takes its thin LVs with it)."""
    from kerub_tui.planner.thin import THIN_POOL_NAME

    store.put_many(vm_with_new_disk().documents())
    report = rc.HostReport("host-h1", lvs=(lv(THIN_POOL_NAME, 20 * GIB),), files=())
    plan = rc.apply(store, reconcile_store(store, report), now=NOW).cleanup
    assert [s.commands[0].command for s in plan.steps] == [f"lvremove --yes vg0/{THIN_POOL_NAME}"]
    store.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[
        lv_alloc().evolve(thin_pool=THIN_POOL_NAME)]))  # a thin LV in it was recorded meanwhile
    from kerub_tui.planner.replanner import ApprovalRefused

    with pytest.raises(ApprovalRefused, match="holds disk data's thin LV"):
        approve(store, plan.id, "admin")
    assert reconcile_store(store, report).orphans == []


async def test_an_approved_cleanup_removes_the_orphan(store: Store) -> None:
    fleet = vm_with_new_disk()
    store.put_many(fleet.documents())
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-lost", 2 * GIB),), files=()))
    plan = rc.apply(store, outcome, now=NOW).cleanup
    approve(store, plan.id, "admin")
    sim = LvHost(fleet.state(), extra={"kerub-lost": 2 * GIB})
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert "kerub-lost" not in sim.lvs
    assert next(c for _, c in sim.log) == "lvremove --yes vg0/kerub-lost"


def test_a_cleanup_step_refuses_storage_a_document_knows_by_then(store: Store) -> None:
    fleet = vm_with_new_disk()
    store.put_many(fleet.documents())
    plan = rc.apply(store, reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),),
                                                                files=())), now=NOW).cleanup
    store.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[lv_alloc()]))  # adopted meanwhile
    from kerub_tui.planner.replanner import ApprovalRefused

    with pytest.raises(ApprovalRefused, match="disk data's storage now"):
        approve(store, plan.id, "admin")


def test_a_policy_that_allows_deleting_data_approves_the_cleanup(store: Store) -> None:
    store.put_many(vm_with_new_disk().documents())
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="cleanup", created_by="admin", deletes=True)]))
    plan = rc.apply(store, reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-lost", GIB),),
                                                                files=())), now=NOW).cleanup
    assert plan.status is PlanStatus.approved


def test_a_cleanup_policy_that_does_not_say_it_deletes_approves_nothing(store: Store) -> None:
    """A cleanup removes storage: a policy for the kind alone never covers it (issue 13 item 7)."""
    store.put_many(vm_with_new_disk().documents())
    store.put(Settings(auto_approve=[AutoApprovePolicy(plan_kind="cleanup", created_by="admin")]))
    plan = rc.apply(store, reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-lost", GIB),),
                                                                files=())), now=NOW).cleanup
    assert plan.status is PlanStatus.proposed


def test_a_half_made_copy_is_never_adopted(store: Store) -> None:
    store.put_many(vm_with_new_disk().documents())
    base = Plan(plan_kind="repair", status=PlanStatus.interrupted, records=[StepRecord(
        step_index=0, outcome=StepOutcome.interrupted,
        intent=StepIntent(disk_id="disk-data", allocation=lv_alloc(), adopt=False))])
    store.put(base)
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),), files=()))
    assert not outcome.adopted
    [(_, why)] = outcome.mismatched
    assert "partial" in why
    assert [o.seen.name for o in outcome.orphans] == ["kerub-data"]


def test_what_a_running_step_makes_now_is_neither_adopted_nor_an_orphan(store: Store) -> None:
    killed_after_lvcreate(store, proposed(store, vm_with_new_disk()), runner=rc.process_identity())
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),), files=()))
    assert not (outcome.adopted or outcome.absent or outcome.orphans)


def test_a_file_intent_is_adopted_by_its_virtual_size(store: Store) -> None:
    store.put_many(vm_with_new_disk().documents())
    path = "/var/lib/kerub-tui/images/kerub-data.qcow2"
    alloc = FileAllocation(host_id="host-h1", capability_id="file:/var/lib/kerub-tui/images", path=path,
                           format="qcow2", actual_size=10 * GIB)
    plan = Plan(status=PlanStatus.interrupted, records=[StepRecord(
        step_index=0, outcome=StepOutcome.interrupted, intent=StepIntent(disk_id="disk-data", allocation=alloc))])
    store.put(plan)
    outcome = reconcile_store(store, rc.HostReport("host-h1", lvs=(), files=(rc.SeenObject("file", path, 10 * GIB),)))
    assert [p.plan_id for p, _ in outcome.adopted] == [plan.id]


# --- the executor adopts its own earlier work --------------------------------------------------------


async def test_a_create_step_adopts_what_an_interrupted_step_made_instead_of_failing(store: Store) -> None:
    fleet = vm_with_new_disk()
    crashed = killed_after_lvcreate(store, proposed(store, fleet))
    rc.interrupt_dead_writers(store, now=NOW)
    # no reconcile ran (a one-shot `plan approve`): the planner proposes the same LV again
    plan = repair_draft(build_state(store, now=NOW)).to_plan()
    store.put(plan)
    assert [s.type for s in plan.steps] == ["create-lv", "start-vm"]
    approve(store, plan.id, "admin")
    sim = LvHost(fleet.state(), extra={"kerub-data": 10 * GIB})
    done = await Executor(store, sim).execute(plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert store.get(Plan, crashed.id).records[0].intent.resolution == "adopted"
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert alloc.lv == "kerub-data"
    assert [c for _, c in sim.log if c.startswith("lvcreate")] == [plan.steps[0].commands[0].command]
    assert any(a.action == "step adopt" for a in store.list(AuditEntry))


async def test_already_exists_without_an_intent_fails_saying_so(store: Store) -> None:
    fleet = vm_with_new_disk()
    plan = proposed(store, fleet)
    approve(store, plan.id, "admin")
    sim = LvHost(fleet.state(), extra={"kerub-data": 10 * GIB})
    failed = await Executor(store, sim).execute(plan.id)
    assert failed.status is PlanStatus.failed
    assert "already exists" in failed.status_reason
    assert "no record says kerub-tui made it" in failed.status_reason
    assert store.get(VirtualStorageDeviceDynamic, "disk-data") is None


# --- reading a host ---------------------------------------------------------------------------------


def test_image_names_are_kerub_names_only() -> None:
    text = "kerub-a.qcow2\nkerub-\nother.qcow2\nkerub-b c\n\x1b[31mkerub-x\nkerub-ok_1.raw\n"
    assert rc.parse_image_names(text) == ["kerub-a.qcow2", "kerub-ok_1.raw"]


@pytest.mark.parametrize("hostile", ["relative/dir", "/a/../b", "/x\n/y", "/tmp/a'; rm -rf / #"])
def test_the_images_listing_refuses_or_quotes_a_hostile_dir(hostile: str) -> None:
    try:
        command = rc.list_images_command(hostile)
    except ValueError:
        return
    import shlex

    assert shlex.quote(hostile) in command


async def test_read_host_reads_kerub_lvs_and_images() -> None:
    class Host:
        async def run(self, host_id, command, *, privileged=True):
            if command.startswith("lvs"):
                rows = [{"vg_name": "vg0", "lv_name": n, "lv_uuid": n, "lv_attr": "-wi-a-----", "lv_size": "1048576",
                         "lv_layout": "linear", "segtype": "linear", "pool_lv": "", "origin": "", "data_percent": "",
                         "metadata_percent": "", "devices": "/dev/sda(0)"} for n in ("kerub-a", "root")]
                return CommandResult(0, json.dumps({"report": [{"lv": rows}]}))
            if command.startswith("if [ -d"):
                return CommandResult(0, "kerub-b.qcow2\n")
            if command.startswith("qemu-img info"):
                return CommandResult(0, json.dumps({"filename": "x", "format": "qcow2", "virtual-size": 5}))
            return CommandResult(1, "", "no")

    report = await rc.read_host(Host(), "h", images_dir="/img", intended_files=["/img/kerub-b.qcow2"])
    assert report.lvs == (rc.SeenObject("lv", "kerub-a", 1048576, "vg0", None),)
    assert report.files == (rc.SeenObject("file", "/img/kerub-b.qcow2", 5),)

    class Broken:
        async def run(self, host_id, command, *, privileged=True):
            return CommandResult(255, "", "connection lost")

    assert await rc.read_host(Broken(), "h") == rc.HostReport("h", None, None)


# --- removals and resizes -----------------------------------------------------------------------------


def disk_on_h1(store: Store, size: int = 10 * GIB) -> Fleet:
    fleet = Fleet()
    fleet.host("h1")
    fleet.disk("data", size=size)
    fleet.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[lv_alloc(size)]))
    store.put_many(fleet.documents())
    return fleet


def approved_plan(store: Store, *steps) -> Plan:
    state = build_state(store, now=NOW)
    planned = []
    for step in steps:
        planned.append(step.to_planned(state))
        state = step.take(state)
    plan = Plan(plan_kind="repair", steps=planned)
    store.put(plan)
    return approve(store, plan.id, "admin")


def cut_off(store: Store, plan: Plan, intent: StepIntent) -> None:
    store.put(plan.model_copy(update={"status": PlanStatus.running, "runner": DEAD, "records": [
        StepRecord(step_index=0, host_id="host-h1", started_at=NOW, intent=intent)]}))
    rc.interrupt_dead_writers(store, now=NOW)


async def test_removals_and_resizes_record_their_intent_too(store: Store) -> None:
    from kerub_tui.planner.steps import ExtendLv, RemoveLv

    fleet = disk_on_h1(store)
    seen = []

    class Watching(FleetSimulator):
        async def run(self, host_id, command, *, privileged=True):
            if command.startswith(("lvremove", "lvextend")):
                seen.append(next(p for p in store.list(Plan) if p.status is PlanStatus.running).records[0].intent)
            return await super().run(host_id, command, privileged=privileged)

    grow = approved_plan(store, ExtendLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data", 12 * GIB))
    sim = Watching(fleet.state())
    assert (await Executor(store, sim).execute(grow.id)).status is PlanStatus.done
    remove = approved_plan(store, RemoveLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data"))
    sim = Watching(OperationalState.from_store(store, now=NOW))
    assert (await Executor(store, sim).execute(remove.id)).status is PlanStatus.done
    assert [(i.change, i.allocation.lv, i.allocation.actual_size) for i in seen] == [
        ("resize", "kerub-data", 12 * GIB), ("remove", "kerub-data", 12 * GIB)]


def test_a_removal_cut_off_after_lvremove_is_recorded_on_reconcile(store: Store) -> None:
    from kerub_tui.planner.steps import RemoveLv

    disk_on_h1(store)
    plan = approved_plan(store, RemoveLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data"))
    cut_off(store, plan, StepIntent(disk_id="disk-data", allocation=lv_alloc(), change="remove"))
    # the host still has it: the removal never happened, the documents stay
    kept = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),), files=()))
    assert [p.plan_id for p in kept.absent] == [plan.id] and not kept.adopted and not kept.orphans
    # the host no longer has it: recorded as removed
    gone = reconcile_store(store, rc.HostReport("host-h1", lvs=(), files=()))
    assert [p.plan_id for p, _ in gone.adopted] == [plan.id]
    rc.apply(store, gone, now=NOW)
    assert store.get(VirtualStorageDeviceDynamic, "disk-data").allocations == []
    assert store.get(Plan, plan.id).records[0].intent.resolution == "adopted"
    assert any(e.type == "storage-adopted" and "removed" in e.message for e in store.list(Event))


def test_a_resize_cut_off_after_lvextend_is_recorded_on_reconcile(store: Store) -> None:
    from kerub_tui.planner.steps import ExtendLv

    disk_on_h1(store)
    plan = approved_plan(store, ExtendLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data", 12 * GIB))
    cut_off(store, plan, StepIntent(disk_id="disk-data", allocation=lv_alloc(12 * GIB), change="resize"))
    unchanged = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 10 * GIB),), files=()))
    assert not unchanged.adopted and [p.plan_id for p in unchanged.absent] == [plan.id]
    grown = reconcile_store(store, rc.HostReport("host-h1", lvs=(lv("kerub-data", 12 * GIB),), files=()))
    assert [(p.plan_id, size) for p, size in grown.adopted] == [(plan.id, 12 * GIB)]
    rc.apply(store, grown, now=NOW)
    [alloc] = store.get(VirtualStorageDeviceDynamic, "disk-data").allocations
    assert alloc.actual_size == 12 * GIB


async def test_a_removal_or_resize_whose_effect_is_already_there_is_done(store: Store) -> None:
    from kerub_tui.planner.steps import ExtendLv, RemoveLv

    disk_on_h1(store)
    extend = ExtendLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data", 12 * GIB)
    grow = approved_plan(store, extend)
    # lvextend was run by a killed controller: the LV is 12G already and lvextend refuses
    sim = FleetSimulator(extend.take(OperationalState.from_store(store, now=NOW)), fail=lambda host, command:
                         "New size (3072 extents) matches existing size" if command.startswith("lvextend") else None)
    done = await Executor(store, sim).execute(grow.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert store.get(VirtualStorageDeviceDynamic, "disk-data").allocations[0].actual_size == 12 * GIB
    remove = RemoveLv("disk-data", "host-h1", "lvm:vg0", "vg0", "kerub-data")
    gone = approved_plan(store, remove)
    sim = FleetSimulator(remove.take(OperationalState.from_store(store, now=NOW)), fail=lambda host, command:
                         'Failed to find logical volume "vg0/kerub-data"' if command.startswith("lvremove") else None)
    done = await Executor(store, sim).execute(gone.id)
    assert done.status is PlanStatus.done, done.status_reason
    assert sim.divergence(store) == []  # the hosts have what the documents say
    assert store.get(VirtualStorageDeviceDynamic, "disk-data").allocations == []
    assert [a.action for a in store.list(AuditEntry)].count("step already done") == 2
    # a failure whose effect is not there still fails
    store.put(VirtualStorageDeviceDynamic(id="disk-data", allocations=[lv_alloc()]))
    again = approved_plan(store, remove)
    sim = FleetSimulator(OperationalState.from_store(store, now=NOW), fail=lambda host, command:
                         "  Logical volume vg0/kerub-data in use." if command.startswith("lvremove") else None)
    failed = await Executor(store, sim).execute(again.id)
    assert failed.status is PlanStatus.failed and "in use" in failed.status_reason
