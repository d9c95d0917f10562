"""The executor's document update when monitoring reports the same document while a step runs (seen
on the lab: a new VM's VirtualMachineDynamic, with its SPICE port, written by the libvirt events
before the start step finished): the step's prediction must not blank what monitoring reported."""

from __future__ import annotations

from typing import Any

import pytest

from kerub_tui.core.models import PlanStatus, VirtualMachineDynamic, VmStatus
from kerub_tui.core.store import Store
from kerub_tui.planner.commitments import build_state
from kerub_tui.planner.executor import Executor
from kerub_tui.planner.planning import repair_draft
from kerub_tui.planner.replanner import approve

from .planner.fleet import NOW, from_tables
from .planner.simulator import FleetSimulator


class MonitoredSimulator(FleetSimulator):
    """The planner's fleet simulator, plus what monitoring writes when a domain starts."""

    def __init__(self, store: Store, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = store

    async def libvirt(self, host_id: str, op: str, **kwargs: Any):
        result = await super().libvirt(host_id, op, **kwargs)
        if op == "start":
            self.store.put(VirtualMachineDynamic(id=kwargs["vm_id"], host_id=host_id, status=VmStatus.up,
                                                 spice_address="127.0.0.1", spice_port=5907, memory_used=123))
        return result


async def test_a_document_monitoring_wrote_during_the_step_keeps_its_report(tmp_path) -> None:
    pytest.importorskip("kerub_tui.hosts.kvm")
    fleet = from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory expect
        web  1G     availability:up@dealbreaker
    """)
    with Store.open(tmp_path) as store:
        store.put_many(fleet.documents())
        assert store.get(VirtualMachineDynamic, "vm-web") is None  # never ran: no dynamic document yet
        plan = repair_draft(build_state(store, now=NOW)).to_plan()
        store.put(plan)
        approve(store, plan.id, "admin")
        sim = MonitoredSimulator(store, fleet.state())
        done = await Executor(store, sim).execute(plan.id)
        assert done.status is PlanStatus.done, done.status_reason
        assert sim.divergence(store) == []  # the hosts have what the documents say
        dyn = store.get(VirtualMachineDynamic, "vm-web")
        assert (dyn.host_id, dyn.status) == ("host-h1", VmStatus.up)
        assert (dyn.spice_address, dyn.spice_port, dyn.memory_used) == ("127.0.0.1", 5907, 123)
