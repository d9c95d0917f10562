"""Simulated fleets for the tests of what a VM's status says (issue 13 items 4 and 10).

Its passing states, held for a test to look at them: starting, migrating and stopping each last a moment
on a host; here the simulated libvirt operation that makes the state waits, where its machine spends its
time, until the test releases it. No wait is for a duration."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from kerub_tui.controller import Controller
from kerub_tui.core.models import Host, Plan, PlanStatus, VirtualMachineDynamic, VmStatus
from kerub_tui.sim import Machine, Timing

from ._support import until

GIB = 1 << 30
_GATE: ContextVar[str | None] = ContextVar("held_operation", default=None)


class HeldOperations:
    """The controller's simulated libvirt operations named by ``hold(op)`` wait until ``release(op)``:
    a start before its guest runs, a shutdown before its guest stops, a migration once its guest is
    migrating (the target has it, the source still runs it)."""

    def __init__(self, controller: Controller, monkeypatch: Any) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting: set[str] = set()  # the held operations that wait now
        simulator = controller.simulator
        assert simulator is not None
        libvirt, spend = simulator.libvirt, Machine.spend

        async def held_libvirt(host_id: str, op: str, **kwargs: Any) -> Any:
            token = _GATE.set(op if op in self.gates else None)
            try:
                return await libvirt(host_id, op, **kwargs)
            finally:
                _GATE.reset(token)

        async def held_spend(machine: Machine, seconds: float, **kwargs: Any) -> None:
            op = _GATE.get()
            if op is not None and op in self.gates:
                self.waiting.add(op)
                await self.gates[op].wait()
                self.waiting.discard(op)
            await spend(machine, seconds, **kwargs)

        monkeypatch.setattr(simulator, "libvirt", held_libvirt)
        monkeypatch.setattr(Machine, "spend", held_spend)

    def hold(self, op: str) -> None:
        self.gates[op] = asyncio.Event()

    def release(self, op: str) -> None:
        self.gates.pop(op).set()


async def stored_fleet(data_dir: Path) -> str:
    """A data dir whose host kvm01 was last seen up running web, with its last figures (768M used, 12% CPU);
    no controller runs on it any more. web's id."""
    first = Controller(data_dir, sim_timing=Timing(scale=0))
    await first.start()
    try:
        host = await first.add_simulated_host("kvm01", "mini")
        await first.hosts.wait_up(host.id, timeout=60)
        vm_id = (await first.create_vm("web", memory_min=GIB, expectations=["availability:up@dealbreaker"])).id
        await approved(first, vm_id, "start")
        await until(lambda: vm_status(first, vm_id) == (host.id, VmStatus.up), "web up")
        await first.replanner.wait_idle()
    finally:
        await first.stop()
    # the figures monitoring last wrote (the simulator reports a guest's at random moments)
    store = Controller(data_dir).open_store()
    try:
        dyn = store.get(VirtualMachineDynamic, vm_id)
        assert dyn is not None
        store.put(dyn.evolve(memory_used=768 << 20, cpu_percent=12))
    finally:
        store.close()
    return vm_id


async def fleet_of_two(controller: Controller) -> None:
    """Two simulated hosts, kvm01 and kvm02, up."""
    for name in ("kvm01", "kvm02"):
        host = await controller.add_simulated_host(name, "mini")
        await controller.hosts.wait_up(host.id, timeout=60)


def vm_status(controller: Controller, vm_id: str) -> tuple[str | None, VmStatus | None]:
    dyn = controller.db.get(VirtualMachineDynamic, vm_id)
    return (dyn.host_id, dyn.status) if dyn is not None else (None, None)


async def approved(controller: Controller, vm_id: str, kind: str) -> Plan:
    """The plan of ``kind`` for the VM, approved."""
    def found() -> Plan | None:
        plans = controller.vm_plans(vm_id)
        return next((p for p in (*plans.proposed, *plans.active) if p.plan_kind == kind), None)

    plan = await until(found, f"a {kind} plan for the VM")
    if plan.status is PlanStatus.proposed:
        return await controller.decide_plan(plan.id, True)
    return plan


Look = Callable[[str, str, Plan], Awaitable[None]]


async def through_passing_states(controller: Controller, holds: HeldOperations, look: Look) -> None:
    """VM web is started, moved off its host (the host evacuated) and stopped; ``look(status, host name,
    plan)`` is awaited once web is held in each of starting ("-" for no host), migrating (on the host it
    leaves) and stopping (on the host it moved to), with the plan that does it."""

    def name(host_id: str | None) -> str:
        host = controller.db.get(Host, host_id) if host_id else None
        return host.name if host is not None else "-"

    vm_id = (await controller.create_vm("web", memory_min=GIB, expectations=["availability:up@dealbreaker"])).id
    for op, kind, wanted, arrived, act in (
        ("start", "start", "starting", VmStatus.up, None),
        ("migrate", "evacuate", "migrating", VmStatus.up, "evacuate"),
        ("shutdown", "stop", "stopping", VmStatus.down, "stop"),
    ):
        host_id, _ = vm_status(controller, vm_id)
        holds.hold(op)
        if act == "evacuate":
            await controller.evacuate_host(name(host_id))
        elif act == "stop":
            await controller.set_vm_availability("web", False)
        plan = await approved(controller, vm_id, kind)
        # held where the state lasts: the plan under way, a migrating guest reported migrating
        await until(lambda op=op: op in holds.waiting, f"{op} held")
        await until(lambda plan=plan: controller.db.get(Plan, plan.id).status is PlanStatus.running, f"{kind} running")
        if op == "migrate":
            await until(lambda: vm_status(controller, vm_id)[1] is VmStatus.migrating, "web reported migrating")
        await look(wanted, name(vm_status(controller, vm_id)[0]), plan)
        holds.release(op)
        await until(lambda arrived=arrived: vm_status(controller, vm_id)[1] is arrived, f"web {arrived.value}")
        await until(lambda plan=plan: controller.db.get(Plan, plan.id).status is PlanStatus.done, f"{kind} done")
        await controller.replanner.wait_idle()
    assert vm_status(controller, vm_id) == (None, VmStatus.down)


