"""An approved evacuation under way on a simulated fleet raises no warning for the VMs it moves
(issue 13 item 8): the monitor reports each VM migrating for a moment, which neither is a violation
nor "no plan can fix" while the plan is at it. And lost VMs (their host lost power) say so (item 4).

The fleet is simulated (kerub_tui.sim) at timing scale 1 for the migrations to take a moment, as on
real hosts; hosts connect and boot at once. Waits are for a state, never for a duration.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kerub_tui.controller import Controller
from kerub_tui.core.models import Event, Host, Plan, PlanStatus, VirtualMachineDynamic, VmStatus
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until

GIB = 1 << 30


@pytest.fixture
async def controller(tmp_path: Path):
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=1.0, connect=0.0, boot=0.0), sim_seed=7)
    await controller.start()
    yield controller
    await controller.stop()


def proposals(controller: Controller) -> list[Plan]:
    return sorted((p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed), key=lambda p: p.created_at)


async def carried_out(controller: Controller, plan: Plan) -> Plan:
    await controller.decide_plan(plan.id, True)
    await until(lambda: controller.db.get(Plan, plan.id).status in (PlanStatus.done, PlanStatus.failed),
                f"plan {plan.id[:8]} finished")
    done = controller.db.get(Plan, plan.id)
    assert done.status is PlanStatus.done, done.status_reason
    return done


async def test_an_evacuation_under_way_raises_no_warning_for_the_vms_it_moves(controller: Controller) -> None:
    old = (await controller.add_simulated_host("old", "r640")).id
    await controller.hosts.wait_up(old, timeout=CEILING)
    vms = [(await controller.create_vm(name, cpus=2, memory_min=4 * GIB,
                                       expectations=["availability:up@dealbreaker"])).id for name in ("a", "b", "c")]
    [start] = await until(lambda: proposals(controller), "the start proposal")
    await carried_out(controller, start)
    new = (await controller.add_simulated_host("new", "r640")).id
    await controller.hosts.wait_up(new, timeout=CEILING)
    await controller.replanner.wait_idle()
    seen = {e.id for e in controller.db.list(Event)}

    await controller.evacuate_host(old)
    [evacuation] = await until(lambda: proposals(controller), "the evacuation proposal")
    assert evacuation.plan_kind == "evacuate" and len(evacuation.steps) == 3
    await carried_out(controller, evacuation)
    await controller.replanner.wait_idle()
    for vm_id in vms:
        dyn = controller.db.get(VirtualMachineDynamic, vm_id)
        assert (dyn.host_id, dyn.status) == (new, VmStatus.up)
    warnings = [(e.type, e.message) for e in controller.db.list(Event)
                if e.id not in seen and e.type in ("violation", "unsatisfiable")]
    assert warnings == []


async def test_the_vms_of_a_host_that_lost_power_are_lost_and_it_runs_none(controller: Controller) -> None:
    host = (await controller.add_simulated_host("kvm", "r640")).id
    await controller.hosts.wait_up(host, timeout=CEILING)
    vm = (await controller.create_vm("web", cpus=2, memory_min=4 * GIB,
                                     expectations=["availability:up@dealbreaker"])).id
    [start] = await until(lambda: proposals(controller), "the start proposal")
    await carried_out(controller, start)
    assert controller.vm_state(vm).status == "up" and controller.host_vm_counts(host) == (1, 0)

    controller.simulator.fail_host(host)
    state = await until(lambda: (s := controller.vm_state(vm)).status == "lost" and s, "web lost")
    assert state.host_id == host and not state.live
    assert state.reason.startswith("its host kvm is down")
    assert controller.host_vm_counts(host) == (0, 1)
    assert controller.db.get(Host, host) is not None
