"""The demo (issue 7): seeding through the controller's actions, seeding again, the tour's power loss,
and the command line around it.

The simulator runs at timing scale 0 (work happens at once, monitoring still ticks once a second).
Placement is the planner's, from documents with fresh ids each seed: the tests check what the demo
promises (counts, expectations met, one open proposal, no duplicates), never which host got what.
Waits are for a state, with a ceiling that only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
from collections import Counter

import pytest

from kerub_tui import cli
from kerub_tui.core import paths
from kerub_tui.core.models import (
    AuditEntry,
    Host,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
)
from kerub_tui.planner.steps import FenceHost, StartVm, step_from_planned
from kerub_tui.sim.demo import (
    HOSTS,
    LEGACY_HOSTS,
    LEGACY_VMS,
    SEED_ACTION,
    SEED_ACTOR,
    VMS,
    DemoError,
    Tour,
    check_data_dir,
    seed,
)
from tests.sim._support import CEILING, until
from tests.tui.demo_data import demo_controller, seeded_copy

ALL_HOSTS = {h.name for h in (*LEGACY_HOSTS, *HOSTS)}
ALL_VMS = {v.name for v in (*LEGACY_VMS, *VMS)}
ALL_DISKS = {d.name for v in (*LEGACY_VMS, *VMS) for d in v.disks}



@pytest.fixture
async def demo(tmp_path_factory, tmp_path):
    controller = demo_controller(seeded_copy(tmp_path_factory, tmp_path / "data"))
    await controller.start()
    yield controller
    await controller.stop()


def names(controller, kind) -> Counter[str]:
    return Counter(doc.name for doc in controller.db.list(kind))


def must_run(vm: VirtualMachine) -> bool:
    return any(e.type == "availability" and e.up for e in vm.expectations)


def placement(controller, vm: VirtualMachine) -> tuple[str | None, VmStatus]:
    dyn = controller.db.get(VirtualMachineDynamic, vm.id)
    return (dyn.host_id, dyn.status) if dyn is not None else (None, VmStatus.down)


def proposals(controller) -> list[Plan]:
    return [p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed]


def by_name(controller, kind, name: str):
    doc = controller.db.find_by_name(kind, name)
    assert doc is not None, f"no {name}"
    return doc


def assert_calm_fleet(controller) -> None:
    """Every VM that must run runs, the ones expected down do not, the web tier is spread out and
    the Arm guests are on Arm hosts."""
    db = controller.db
    for vm in db.list(VirtualMachine):
        host_id, status = placement(controller, vm)
        if must_run(vm):
            assert status is VmStatus.up and host_id is not None, f"{vm.name} is {status.value}"
        else:
            assert status is VmStatus.down, f"{vm.name} should be down"
        if vm.architecture == "aarch64":
            assert db.get(Host, host_id).capabilities.cpu.architecture == "aarch64"
    web_hosts = [placement(controller, by_name(controller, VirtualMachine, f"web{n:02d}"))[0] for n in range(1, 7)]
    assert len(set(web_hosts)) == 6, "two web VMs share a host"


async def test_the_seed_is_a_calm_fleet_with_one_proposal_waiting(demo) -> None:
    db = demo.db
    assert names(demo, Host) == Counter(ALL_HOSTS) and len(ALL_HOSTS) == 12
    assert all(h.simulated and h.address.endswith(".sim.invalid") for h in db.list(Host))
    assert names(demo, VirtualMachine) == Counter(ALL_VMS) and 35 <= len(ALL_VMS) <= 45
    assert names(demo, VirtualStorageDevice) == Counter(ALL_DISKS)
    assert {h.capabilities.dmi.system_product for h in db.list(Host)} >= {"PowerEdge R620", "R272-P30"}
    for host in db.list(Host):
        await demo.hosts.wait_up(host.id, timeout=CEILING)
    assert_calm_fleet(demo)
    # Every disk a VM uses sits on that VM's host.
    for vm in db.list(VirtualMachine):
        for link in vm.disks:
            assert link.disk_id in db.disks_on_host(placement(demo, vm)[0])
    # The old server is past its end of life: the one proposal moves its VMs away.
    old = by_name(demo, Host, "old01")
    assert old.end_of_life is not None and old.end_of_life < dt.datetime.now(dt.UTC).date()
    (plan,) = await until(lambda: proposals(demo), "the evacuation proposal")
    assert plan.plan_kind == "evacuate"
    assert {t.split(" runs on ")[0] for t in plan.trigger} == {v.name for v in LEGACY_VMS}
    assert [e.action for e in db.list(AuditEntry)].count(SEED_ACTION) == 1


async def test_the_set_up_records_its_own_acts_under_the_demo_not_the_admin(demo) -> None:
    """Issue 13 item 10: the plans the set-up approved, and what it added, name the demo's set-up; the
    admin's OS user appears nowhere (the admin did none of it). What the admin does next is theirs."""
    from kerub_tui.controller import os_user

    decided = [p for p in demo.db.list(Plan) if p.decided_by and p.status is not PlanStatus.withdrawn]
    assert decided and {p.decided_by for p in decided} == {SEED_ACTOR}
    approvals = [a for a in demo.db.list(AuditEntry) if a.action == "plan approve"]
    assert approvals and {a.os_user for a in approvals} == {SEED_ACTOR}
    assert {a.os_user for a in demo.db.list(AuditEntry) if a.action in ("host add", "vm create", SEED_ACTION)} \
        == {SEED_ACTOR}
    assert os_user() not in {a.os_user for a in demo.db.list(AuditEntry)}
    assert demo.actor == os_user()
    await demo.update_host(by_name(demo, Host, "old01").id, dedicated=True)
    [mine] = [a for a in demo.db.list(AuditEntry) if a.action == "host update" and a.target == "old01"
              and a.os_user != SEED_ACTOR]
    assert mine.os_user == os_user() and mine.outcome == "dedicated: False → True"


async def test_seeding_again_continues_the_same_demo(demo) -> None:
    before = {kind: sorted(d.id for d in demo.db.list(kind)) for kind in (Host, VirtualMachine, VirtualStorageDevice)}
    open_plans = sorted(p.id for p in proposals(demo))
    assert not await seed(demo)
    after = {kind: sorted(d.id for d in demo.db.list(kind)) for kind in (Host, VirtualMachine, VirtualStorageDevice)}
    assert after == before
    assert sorted(p.id for p in proposals(demo)) == open_plans, "seeding again approved or changed a proposal"


async def test_a_seed_whose_audit_entry_aged_out_of_the_history_is_still_seeded(demo) -> None:
    assert demo.settings().demo_seeded_at is not None
    await demo.set_retention(audit_days=1)
    demo.db.prune_history(dt.datetime.now(dt.UTC) + dt.timedelta(days=2))  # two days later: no audit entry left
    assert demo.db.count(AuditEntry) == 0
    assert not await seed(demo)


async def test_an_interrupted_seed_finishes_without_duplicates(tmp_path) -> None:
    controller = demo_controller(tmp_path / "data")
    await controller.start()
    try:
        # A seed cut off after its first host and VM: the next run creates only what is missing.
        await controller.add_simulated_host("old01", "legacy")
        await controller.create_vm("erp-legacy", cpus=4, memory_min=16 << 30, expectations=["availability:up"])
        assert await seed(controller)
        assert names(controller, Host) == Counter(ALL_HOSTS)
        assert names(controller, VirtualMachine) == Counter(ALL_VMS)
        assert names(controller, VirtualStorageDevice) == Counter(ALL_DISKS)
        assert_calm_fleet(controller)
    finally:
        await controller.stop()


async def test_a_data_dir_of_real_hosts_is_not_the_demo_s(tmp_path) -> None:
    controller = demo_controller(tmp_path / "data")
    controller.open_store().put(Host(name="prod1", address="10.0.0.1"))
    try:
        with pytest.raises(DemoError, match=r"holds real hosts .*prod1"):
            check_data_dir(controller)
        await controller.start(connect_hosts=False)  # prod1 is never contacted
        with pytest.raises(DemoError, match="demo needs a data dir of its own"):
            await seed(controller)
        assert names(controller, Host) == Counter({"prod1": 1})
    finally:
        await controller.stop()


async def test_vms_without_hosts_are_not_the_demo_s_either(tmp_path) -> None:
    controller = demo_controller(tmp_path / "data")
    await controller.start(connect_hosts=False)
    try:
        await controller.create_vm("mine", memory_min=1 << 30)
        with pytest.raises(DemoError, match="already holds VMs or disks"):
            check_data_dir(controller)
    finally:
        await controller.stop()


async def test_the_tour_fails_a_host_and_the_planner_restarts_its_vms_elsewhere(demo) -> None:
    said: list[str] = []
    tour = Tour(demo, power_loss_after=0.0, power_back_after=CEILING, say=said.append)
    task = asyncio.create_task(tour.run())
    try:
        victim = await until(lambda: next((s.host for s in tour.steps if s.host), None), "the power loss")
        host = by_name(demo, Host, victim)
        assert "lost power" in said[0]
        lost = {v for v in demo.db.vms_on_host(host.id) if must_run(demo.db.get(VirtualMachine, v))}
        assert lost, "the tour failed a host with nothing that must run"

        def restarting() -> Plan | None:
            return next((p for p in proposals(demo) if lost <= {s.vm for s in map(step_from_planned, p.steps)
                                                               if isinstance(s, StartVm)}), None)

        plan = await until(restarting, "a proposal restarting the lost VMs")
        targets = {s.host for s in map(step_from_planned, plan.steps) if isinstance(s, StartVm)}
        assert host.id not in targets, "a VM goes back to the dead host"
        # high availability: its VMs have ha, so the plan powers the host off through its (simulated) BMC first
        assert step_from_planned(plan.steps[0]) == FenceHost(host.id), plan.steps[0].description
        await demo.decide_plan(plan.id, True)
        await until(lambda: demo.db.get(Plan, plan.id).status in (PlanStatus.done, PlanStatus.failed), "the plan ran")
        assert demo.db.get(Plan, plan.id).status is PlanStatus.done, demo.db.get(Plan, plan.id).status_reason
        fenced = demo.db.get(Plan, plan.id).records[0]
        assert fenced.commands[0].command.startswith("controller: ipmitool -I lanplus -H bmc."), fenced.commands
        assert "Chassis Power is off (simulated BMC)" in fenced.commands[0].stdout_tail
        # Once the host is empty its power comes back and it rejoins the fleet.
        await asyncio.wait_for(task, CEILING)
        assert "power is back" in said[-1]
        await demo.hosts.wait_up(host.id, timeout=CEILING)
        assert demo.simulator.status(host.id) is HostStatus.up
        assert_calm_fleet(demo)
    finally:
        task.cancel()


def test_the_demo_dir_is_its_own(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KERUB_TUI_DATA", str(tmp_path / "data"))
    assert paths.demo_data_dir() == tmp_path / "data" / "demo"
    assert paths.demo_data_dir(str(tmp_path / "elsewhere")) == tmp_path / "elsewhere"


@pytest.mark.parametrize("argv, message", [
    (["--demo", "--readonly"], "cannot be read-only; to look at the demo's documents without running it: "
                               "kerub-tui --readonly --data-dir"),
    (["--demo", "vm", "list"], "--demo opens the console; run vm without it"),
])
def test_the_command_line_refuses_what_the_demo_cannot_do(argv, message, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("KERUB_TUI_DATA", str(tmp_path / "data"))
    assert cli.main(argv) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "data").exists(), "a refused demo created its data dir"


async def test_preparing_seeds_once_and_refuses_real_hosts(tmp_path_factory, tmp_path) -> None:
    ready = seeded_copy(tmp_path_factory, tmp_path / "ready")
    out = io.StringIO()
    await cli.prepare_demo(ready, out)
    assert out.getvalue() == "", "an existing demo is set up again"
    real = tmp_path / "real"
    controller = demo_controller(real)
    controller.open_store().put(Host(name="prod1", address="10.0.0.1"))
    await controller.stop()
    with pytest.raises(cli.CliError, match="holds real hosts"):
        await cli.prepare_demo(real, out)


def test_host_list_says_which_hosts_are_simulated(tmp_path_factory, tmp_path, capsys) -> None:
    ready = seeded_copy(tmp_path_factory, tmp_path / "ready")
    assert cli.main(["--data-dir", str(ready), "host", "list"]) == cli.EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "SIMULATED"
    assert len(lines) == 13 and all(line.split()[-1] == "yes" for line in lines[1:])
