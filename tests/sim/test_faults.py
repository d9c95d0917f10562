"""Fault tests on a simulated fleet, through the whole controller: monitoring, documents, store,
change feed, replanner, executor (issue 7).

The fleet is simulated (kerub_tui.sim) at timing scale 0: work happens at once, monitoring still
ticks once a second. Nothing here asserts a duration: waits are for a state, with a generous ceiling
that only turns a hang into a failure.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import Event, HostDynamic, HostStatus, Plan, PlanStatus, VirtualMachineDynamic, VmStatus
from kerub_tui.planner.steps import StartVm, step_from_planned
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until

GIB = 1 << 30



@pytest.fixture
async def controller(tmp_path: Path):
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=7)
    await controller.start()
    yield controller
    await controller.stop()


async def hosts(controller: Controller, **profiles: str) -> dict[str, str]:
    ids = {}
    for name, profile in profiles.items():
        ids[name] = (await controller.add_simulated_host(name, profile)).id
    for host_id in ids.values():
        await controller.hosts.wait_up(host_id, timeout=CEILING)
    return ids


def proposals(controller: Controller) -> list[Plan]:
    return sorted((p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed), key=lambda p: p.created_at)


def starts(plan: Plan) -> dict[str, str]:
    """vm id -> host id of every StartVm step of the plan."""
    out = {}
    for planned in plan.steps:
        step = step_from_planned(planned)
        if isinstance(step, StartVm):
            out[step.vm] = step.host
    return out


def placement(controller: Controller, vm_id: str) -> tuple[str | None, VmStatus]:
    dyn = controller.db.get(VirtualMachineDynamic, vm_id)
    return (dyn.host_id, dyn.status) if dyn is not None else (None, VmStatus.down)


async def approve_all(controller: Controller) -> list[Plan]:
    """Approve every open proposal and wait until each is carried out."""
    approved = []
    for plan in proposals(controller):
        approved.append(await controller.decide_plan(plan.id, True))
    for plan in approved:
        await until(lambda p=plan: controller.db.get(Plan, p.id).status in (PlanStatus.done, PlanStatus.failed),
                    f"plan {plan.id[:8]} finished")
        done = controller.db.get(Plan, plan.id)
        assert done.status is PlanStatus.done, done.status_reason
    return approved


async def running_fleet(controller: Controller, vms: dict[str, tuple[int, list[str]]]) -> dict[str, str]:
    """Create the VMs (name -> (memory GiB, expectations)), approve the start plan, wait until all run."""
    ids = {}
    for name, (memory, expect) in vms.items():
        vm = await controller.create_vm(name, cpus=2, memory_min=memory * GIB, expectations=expect)
        ids[name] = vm.id
    await until(lambda: proposals(controller), "a start proposal")
    await approve_all(controller)
    for vm_id in ids.values():
        await until(lambda v=vm_id: placement(controller, v)[1] is VmStatus.up, "every VM up")
    return ids


async def test_a_dead_host_s_vms_are_proposed_elsewhere_respecting_their_expectations(controller: Controller) -> None:
    h = await hosts(controller, kvm_a="r640")  # alone at first: web1 and db start there
    vms = await running_fleet(controller, {
        "web1": (8, ["availability:up@dealbreaker"]),
        "db": (200, ["availability:up@dealbreaker"]),
    })
    dead = h["kvm_a"]
    assert placement(controller, vms["web1"])[0] == placement(controller, vms["db"])[0] == dead
    h.update(await hosts(controller, kvm_b="r640", kvm_arm="arm", kvm_mini="mini"))
    vms.update(await running_fleet(controller, {
        "web2": (8, ["availability:up@dealbreaker", "not-same-host:web1@dealbreaker"]),
    }))
    survivors = {name: host_id for name, host_id in h.items() if host_id != dead}

    controller.simulator.fail_host(dead)
    await until(lambda: controller.db.get(HostDynamic, dead).status is HostStatus.down, "host down")
    # it may still run them for all the controller knows: nothing restarts until the admin says it is off
    await controller.replanner.wait_idle()
    assert not any(set(starts(p)) & {vms["web1"], vms["db"]} for p in proposals(controller))
    await controller.fence_host(dead, confirm_off=True)
    plan = await until(lambda: next((p for p in proposals(controller) if set(starts(p)) >= {vms["web1"], vms["db"]}),
                                    None), "a proposal restarting web1 and db")
    placed = starts(plan)
    web2_host = placement(controller, vms["web2"])[0]
    assert dead not in placed.values(), "nothing goes back to the dead host"
    assert h["kvm_arm"] not in placed.values(), "x86_64 guests never land on the aarch64 host"
    assert placed[vms["web1"]] != web2_host, "not-same-host:web1 keeps web1 and web2 apart"
    assert placed[vms["db"]] in (h["kvm_a"], h["kvm_b"]), "200 GiB fits only the r640s"
    assert placed[vms["db"]] in survivors.values()
    events = [e.type for e in controller.db.list(Event) if e.host_id == dead]
    assert "host-down" in events

    await approve_all(controller)
    assert placement(controller, vms["web1"]) == (placed[vms["web1"]], VmStatus.up)
    assert "runs web2, which must not share a host with web1" in await controller.explain(vms["web1"])
    assert placement(controller, vms["db"]) == (placed[vms["db"]], VmStatus.up)
    machine = controller.simulator.machine(placed[vms["db"]])
    assert machine.domain_state(vms["db"]) == "running", "the simulated host really runs it now"

    # The dead host comes back empty: its guests died with it and are not reported twice.
    controller.simulator.recover_host(dead, boot=0.0)
    await controller.hosts.wait_up(dead, timeout=CEILING)
    await controller.replanner.wait_idle()
    assert placement(controller, vms["web1"]) == (placed[vms["web1"]], VmStatus.up)
    assert not proposals(controller), [p.steps for p in proposals(controller)]


async def test_a_flapping_host_takes_no_guests_so_plans_do_not_ping_pong(controller: Controller) -> None:
    h = await hosts(controller, kvm_big="epyc")
    vms = await running_fleet(controller, {"app": (16, ["availability:up@dealbreaker"])})
    h.update(await hosts(controller, kvm_small="mini"))
    first = h["kvm_big"]
    assert placement(controller, vms["app"])[0] == first

    # The host loses its connection three times: each time it comes back with the guest still running (a
    # network flap). Meanwhile the guest is never proposed elsewhere: its host is not fenced, and may still
    # run it (it does), writing its disks.
    for _ in range(3):
        controller.simulator.disconnect(first)
        await until(lambda: controller.db.get(HostDynamic, first).status is HostStatus.down, "host down")
        await controller.replanner.wait_idle()
        assert not any(vms["app"] in starts(p) for p in proposals(controller)), "no second copy of app"
        controller.simulator.reconnect(first)
        await controller.hosts.wait_up(first, timeout=CEILING)
        await until(lambda: controller.db.get(HostDynamic, first).status is HostStatus.up, "the host seen back")
    assert placement(controller, vms["app"]) == (first, VmStatus.up), "the guest never moved"
    assert len(controller.db.get(HostDynamic, first).drops) == 3

    # A new guest that fits only the big host is not placed on it while it flaps...
    big = await controller.create_vm("big", cpus=4, memory_min=300 * GIB, expectations=["availability:up@dealbreaker"])
    await controller.replanner.wait_idle()
    assert not any(big.id in starts(p) for p in proposals(controller)), "no guest for a flapping host"
    assert "flapping" in await controller.explain(big.id)
    # ...and nothing moved the running guest back and forth: only its first start was carried out.
    assert placement(controller, vms["app"]) == (first, VmStatus.up)
    carried_out = [p for p in controller.db.list(Plan) if p.status is not PlanStatus.withdrawn and vms["app"] in starts(p)]
    assert len(carried_out) == 1 and starts(carried_out[0])[vms["app"]] == first
    assert all(starts(p).get(vms["app"]) == h["kvm_small"] for p in controller.db.list(Plan)
               if p.status is PlanStatus.withdrawn and vms["app"] in starts(p)), "proposals only ever moved it away"


async def test_a_flapping_host_is_usable_again_once_calm() -> None:
    """The calm period is judged on the planner's clock (a unit check of the same rule)."""
    import datetime as dt

    from kerub_tui.planner.checkers import FLAP_CALM, host_usable
    from tests.unit.planner.fleet import NOW, Fleet

    fleet = Fleet()
    host = fleet.host("kvm1")
    dyn = fleet.docs[("host-dynamic", host)]
    drops = [NOW - dt.timedelta(minutes=m) for m in (9, 6, 2)]
    fleet.put(dyn.model_copy(update={"drops": drops}))
    assert "flapping" in (host_usable(fleet.state(now=NOW), host) or "")
    later = drops[-1] + FLAP_CALM + dt.timedelta(seconds=1)
    assert host_usable(fleet.state(now=later), host) is None
    two = dyn.model_copy(update={"drops": drops[1:]})
    fleet.put(two)
    assert host_usable(fleet.state(now=NOW), host) is None, "two drops are bad luck, not flapping"


async def test_a_thousand_hosts_reconnecting_at_once_do_not_stall_the_console(tmp_path: Path) -> None:
    from kerub_tui.app import KerubApp
    from tests.tui.helpers import Recorder, settle

    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0), sim_seed=3)
    await controller.start()
    profiles = ["mini", "r640", "epyc", "storage", "legacy", "arm"]
    for n in range(1000):
        await controller.add_simulated_host(f"kvm{n:04d}", profiles[n % len(profiles)])
    await until(lambda: all(controller.simulator.status(h) is HostStatus.up for h in controller.simulator.host_ids),
                "all 1000 hosts up")
    recorder = Recorder()
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), message_hook=recorder) as pilot:
        await settle(app, pilot)
        await pilot.press("colon", *"hosts", "enter")
        await settle(app, pilot)
        table = app.screen.query_one("LiveTable")
        assert table.row_count == 1000
        start_row = table.cursor_row
        recorder.clear()
        writes_before = controller.fleet.writer.writes

        controller.simulator.reconnect_all()
        # Keys pressed in the middle of the storm are handled, in order, while it runs.
        await pilot.press(*["down"] * 5)
        await until(lambda: all(controller.simulator.status(h) is HostStatus.up for h in controller.simulator.host_ids),
                    "all 1000 hosts back up")
        await settle(app, pilot)
        assert table.cursor_row == start_row + 5

        applied = recorder.of(KerubApp.ChangesApplied)
        changes = sum(m.count for m in applied)
        assert changes >= 2000, "each host went down and came back up: at least 2,000 document changes"
        # The console takes the storm in batches, not change by change: that is what keeps it live.
        assert len(applied) <= changes / 20, (len(applied), changes)
        assert controller.fleet.writer.writes - writes_before >= 2000
        statuses = {controller.db.get(HostDynamic, h).status for h in controller.simulator.host_ids}
        assert statuses == {HostStatus.up}
        assert all(len(controller.db.get(HostDynamic, h).drops) == 1 for h in controller.simulator.host_ids)
    await controller.stop()


async def test_wait_up_returns_once_the_store_says_the_host_is_up(tmp_path: Path, monkeypatch) -> None:
    """A one-shot `plan approve` waits for its hosts, then each step checks the store: with a commit of
    monitoring's still running, the host's new status waited behind it and the step failed with
    "is connecting" (seen in a full run under load)."""
    import asyncio
    import threading

    def status(host_id: str) -> HostStatus | None:
        dyn = controller.db.get(HostDynamic, host_id)
        return dyn.status if dyn is not None else None

    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0), sim_seed=3)
    await controller.start()
    gate = threading.Event()
    try:
        host = await controller.add_simulated_host("kvm_a", "mini")
        sim = controller.simulator
        await until(lambda: status(host.id) is HostStatus.up, "kvm_a up")
        sim.fail_host(host.id)
        await until(lambda: status(host.id) is HostStatus.down, "kvm_a down")
        commit = controller.db.commit_staged
        writer = sim.writer

        def says_up(staged) -> bool:
            return any(isinstance(doc, HostDynamic) and doc.id == host.id and doc.status is HostStatus.up
                       for _kind, _id, _old, doc in staged.items)

        def held(staged):
            # Only the commit that carries "up" hangs: a write made on the loop meanwhile (the "host up"
            # event) waits for a staged commit, and a hang there would hold the loop itself.
            if says_up(staged):
                gate.wait(60)
            return commit(staged)

        monkeypatch.setattr(controller.db, "commit_staged", held)
        sim.recover_host(host.id, boot=0.0)
        waiting = asyncio.create_task(sim.wait_up(host.id, timeout=60))
        await until(lambda: sim.status(host.id) is HostStatus.up, "kvm_a connected")
        await until(lambda: writer._running is not None, "the commit of 'up' in flight")
        for _ in range(20):
            await asyncio.sleep(0)
        assert not waiting.done(), "wait_up returned while the store still says the host is down"
        gate.set()
        await waiting
        assert status(host.id) is HostStatus.up
    finally:
        gate.set()
        await controller.stop()
