"""High availability (issue 16 item 2) through the whole controller, on simulated hosts: a host fails, it
is fenced (the admin's confirmation, or its BMC: the simulator's named fake of IPMI), and its VMs with ``ha``
restart elsewhere; the command line's verbs (``host fence``, ``vm set --ha``, ``ha show|set``) run as they
would through the control socket. Waits are for a state, never for a duration."""

from __future__ import annotations

from pathlib import Path

import pytest

from kerub_tui.api import ActionError
from kerub_tui.cli import run_in_controller
from kerub_tui.controller import Controller
from kerub_tui.core.models import (
    AuditEntry,
    Event,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    VirtualMachine,
    VmStatus,
    utcnow,
)
from kerub_tui.planner.steps import FenceHost, StartVm, step_from_planned
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until
from tests.sim.test_faults import approve_all, placement, proposals, running_fleet

GIB = 1 << 30


@pytest.fixture
async def controller(tmp_path: Path):
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=11)
    await controller.start()
    yield controller
    await controller.stop()


async def first_host(controller: Controller) -> dict[str, str]:
    """kvm_a alone: the VMs start there."""
    ids: dict[str, str] = {}
    await more_hosts(controller, ids, "kvm_a")
    return ids


async def more_hosts(controller: Controller, ids: dict[str, str], *names: str) -> None:
    for name in names:
        ids[name] = (await controller.add_simulated_host(name, "r640")).id
        await controller.hosts.wait_up(ids[name], timeout=CEILING)


def restart_of(controller: Controller, vm_id: str) -> Plan | None:
    for plan in proposals(controller):
        if any(isinstance(s, StartVm) and s.vm == vm_id for s in map(step_from_planned, plan.steps)):
            return plan
    return None


def events(controller: Controller, host_id: str) -> list[Event]:
    return sorted((e for e in controller.db.list(Event) if e.host_id == host_id), key=lambda e: e.time)


def story(controller: Controller, host_id: str, vm_id: str) -> list[str]:
    """The HA events of a lost host and one of its VMs, oldest first (violations left out): what
    ``kerub-tui events --vm NAME`` and ``--host NAME`` tell together."""
    return [e.type for e in sorted(controller.db.list(Event), key=lambda e: e.time)
            if (e.target == vm_id or (e.host_id == host_id and e.target is None)) and e.type not in ("violation", "violation-cleared",
                                                                              "host-up", "unsatisfiable")]


async def cli(controller: Controller, *argv: str) -> tuple[int, str, str]:
    return await run_in_controller(list(argv), controller)


async def down(controller: Controller, host_id: str) -> None:
    await until(lambda: controller.db.get(HostDynamic, host_id).status is HostStatus.down, "the host seen down")
    await controller.replanner.wait_idle()


async def test_a_vm_with_ha_waits_for_the_admin_to_confirm_its_host_off_then_restarts(controller) -> None:
    ids = await first_host(controller)
    vms = await running_fleet(controller, {"web": (4, ["availability:up@dealbreaker"])})
    code, out, err = await cli(controller, "vm", "set", "web", "--ha", "on")
    assert (code, err) == (0, ""), err
    assert "ha on" in out
    assert any(e.type == "ha" for e in controller.db.get(VirtualMachine, vms["web"]).expectations)
    await more_hosts(controller, ids, "kvm_b")
    dead = ids["kvm_a"]
    assert placement(controller, vms["web"])[0] == dead

    controller.simulator.fail_host(dead)
    await down(controller, dead)
    # kvm_a has no IPMI: nothing may say it is off but the admin; web is not started twice meanwhile
    assert restart_of(controller, vms["web"]) is None
    await until(lambda: "restart-waits-fence" in story(controller, dead, vms["web"]), "what web waits for told")
    state = controller.vm_state(vms["web"])
    assert state.status == "lost" and "restarts elsewhere once kvm_a is fenced" in state.reason, state.reason
    code, _out, err = await cli(controller, "host", "fence", "kvm_a")
    assert code != 0 and err.strip() == ("kerub-tui: host kvm_a has no IPMI to power it off: make sure it is off, "
                                         "then kerub-tui host fence kvm_a --confirm-off"), err
    code, out, err = await cli(controller, "host", "fence", "kvm_a", "--confirm-off")
    assert (code, err) == (0, ""), err
    assert out.startswith(f"host kvm_a fenced: confirmed off by {controller.actor} at "), out
    audit = [a for a in controller.db.list(AuditEntry) if a.action == "host fence"]
    assert [(a.os_user, a.target) for a in audit] == [(controller.actor, "kvm_a")]
    assert "confirmed off by" in audit[0].outcome
    code, out, _ = await cli(controller, "host", "show", "kvm_a")
    assert "  fenced: confirmed off by " in out, out

    plan = await until(lambda: restart_of(controller, vms["web"]), "the restart proposed once kvm_a is fenced")
    assert plan.plan_kind == "restart" and plan.consent == []
    assert [s.type for s in plan.steps] == ["start-vm"], "fenced already: no fencing step"
    await approve_all(controller)
    assert placement(controller, vms["web"]) == (ids["kvm_b"], VmStatus.up)
    assert controller.simulator.machine(ids["kvm_b"]).domain_state(vms["web"]) == "running"

    await until(lambda: "vm-restarted" in story(controller, dead, vms["web"]), "the restart told")
    assert story(controller, dead, vms["web"]) == [
        "host-down", "restart-waits-fence", "host-fenced", "restart-planned", "vm-restarted"]
    fenced = next(e for e in events(controller, dead) if e.type == "host-fenced")
    assert fenced.message.startswith("kvm_a fenced: confirmed off by ") and "(web)" in fenced.message
    # a host that is up is never fenced; the fence goes when the host is back
    controller.simulator.recover_host(dead, boot=0.0)
    await controller.hosts.wait_up(dead, timeout=CEILING)
    await until(lambda: controller.db.get(HostDynamic, dead).status is HostStatus.up, "kvm_a seen up")
    assert controller.db.get(HostDynamic, dead).fence is None
    with pytest.raises(ActionError, match="host kvm_a is up: only a host that is down or unreachable is fenced"):
        await controller.fence_host("kvm_a", confirm_off=True)


async def test_a_host_with_a_bmc_is_powered_off_by_the_restart_plan_which_the_restart_policy_approves(
        controller) -> None:
    ids = await first_host(controller)
    vms = await running_fleet(controller, {"db": (8, ["availability:up@dealbreaker", "ha@dealbreaker"]),
                                           "cache": (2, ["availability:up@dealbreaker"])})
    dead = ids["kvm_a"]
    code, _, err = await cli(controller, "host", "set", "kvm_a", "--ipmi", "bmc-a.sim.invalid", "--ipmi-user", "admin")
    assert code == 0, err
    await more_hosts(controller, ids, "kvm_b")
    await controller.set_auto_approve("restart", True)

    controller.simulator.fail_host(dead)
    await until(lambda: controller.db.get(HostDynamic, dead).fence is not None, "kvm_a fenced by the restart plan")
    await until(lambda: placement(controller, vms["db"]) == (ids["kvm_b"], VmStatus.up), "db restarted on kvm_b")
    plan = next(p for p in controller.db.list(Plan) if p.plan_kind == "restart" and p.status is PlanStatus.done)
    assert step_from_planned(plan.steps[0]) == FenceHost(dead)
    assert plan.decided_by == "kerub-tui (auto-approve): restart"
    assert plan.records[0].commands[0].command == (
        "controller: ipmitool -I lanplus -H bmc-a.sim.invalid -U admin -E chassis power off; then ipmitool -I "
        "lanplus -H bmc-a.sim.invalid -U admin -E chassis power status until it says off (from this process)")
    fence = controller.db.get(HostDynamic, dead).fence
    assert fence.method == "ipmi" and "admin@bmc-a.sim.invalid" in fence.note
    # cache has no ha: the planner never powers a host off for it, but the fence serves it too
    await until(lambda: (placement(controller, vms["cache"])[1] is VmStatus.up and
                placement(controller, vms["cache"])[0] != dead) or restart_of(controller, vms["cache"]),
                "cache restarted or proposed once kvm_a is fenced")
    await until(lambda: "vm-restarted" in story(controller, dead, vms["db"]), "the restart told")
    assert story(controller, dead, vms["db"]) == [
        "host-down", "restart-waits-fence", "restart-planned", "host-fenced", "vm-restarted"]
    told = {e.type: e.message for e in controller.db.list(Event) if e.target == vms["db"] or e.host_id == dead}
    assert "its restart plan powers it off through IPMI first" in told["restart-waits-fence"]
    assert told["restart-planned"].endswith(": fence kvm_a through IPMI, then start it on kvm_b")
    assert told["host-fenced"].startswith("kvm_a fenced: powered off through IPMI by kerub-tui planner")


async def test_a_vm_whose_only_disk_was_on_the_failed_host_is_reported_with_lost_storage(controller) -> None:
    ids = await first_host(controller)
    vm = await controller.create_vm("db", cpus=1, memory_min=2 * GIB, disk_sizes=[GIB],
                                    expectations=["availability:up@dealbreaker", "ha@dealbreaker"])
    await until(lambda: proposals(controller), "the start proposal")
    await approve_all(controller)
    await more_hosts(controller, ids, "kvm_b")
    dead = ids["kvm_a"]
    controller.simulator.fail_host(dead)
    await down(controller, dead)
    await controller.fence_host("kvm_a", confirm_off=True)
    await controller.replanner.wait_idle()
    assert restart_of(controller, vm.id) is None, "nothing restarts it: its disk is gone with kvm_a"
    lost = [e for e in controller.db.list(Event) if e.type == "vm-storage-lost"]
    assert [(e.target, e.host_id) for e in lost] == [(vm.id, dead)]
    assert lost[0].message.startswith("db lost its storage with kvm_a: disk db-disk")
    assert lost[0].message.endswith("has no copy on a host that is up, so nothing restarts it")
    assert "lost its storage with kvm_a" in (await controller.explain(vm.id))


async def test_a_failed_host_that_answers_again_without_the_guest_lets_it_start_again(controller) -> None:
    ids = await first_host(controller)
    vms = await running_fleet(controller, {"web": (4, ["availability:up@dealbreaker", "ha@dealbreaker"])})
    await more_hosts(controller, ids, "kvm_b")
    dead = ids["kvm_a"]
    controller.simulator.fail_host(dead)
    await down(controller, dead)
    assert restart_of(controller, vms["web"]) is None
    controller.simulator.recover_host(dead, boot=0.0)  # it rebooted: libvirt there runs no web any more
    await until(lambda: placement(controller, vms["web"])[1] is VmStatus.down, "web seen not running")
    told = await until(lambda: [e for e in controller.db.list(Event) if e.type == "host-fenced"], "no guest told")
    assert told[0].message == "kvm_a answers again and runs no web (no running guest): it may start again"
    assert await until(lambda: proposals(controller), "web proposed to start again")


async def test_ha_policy_from_the_command_line(controller) -> None:
    code, out, err = await cli(controller, "ha", "show")
    assert code == 0, err
    assert out.splitlines()[0] == "policy: a restart from a copy taken for redundancy always asks first"
    code, out, err = await cli(controller, "ha", "set", "--copy-max-age", "30")
    assert code == 0, err
    assert controller.settings().ha.copy_max_age_minutes == 30
    assert out == "ha policy: a restart from a copy taken for redundancy asks first when the copy is 30 min old or " \
                  "older\n"
    code, out, err = await cli(controller, "ha", "set", "--stale-copies", "allow")
    assert controller.settings().ha.restart_from_stale_copies is True
    code, _, err = await cli(controller, "ha", "set")
    assert code != 0 and err.strip() == "kerub-tui: say what to change: --copy-max-age MINUTES, --stale-copies " \
                                        "allow|ask"
    assert [a.action for a in controller.db.list(AuditEntry) if a.action == "ha policy"] == ["ha policy"] * 2


async def test_a_host_confirmed_off_that_comes_back_running_the_guest_is_told_at_once(controller) -> None:
    """The admin's word is the one fence kerub-tui cannot check: a host confirmed off that was only cut off
    (its guests ran on) and answers again after the restart runs the VM twice. The controller says so."""
    ids = await first_host(controller)
    vms = await running_fleet(controller, {"web": (4, ["availability:up@dealbreaker", "ha@dealbreaker"])})
    await more_hosts(controller, ids, "kvm_b")
    cut = ids["kvm_a"]
    controller.simulator.disconnect(cut)  # the network goes; web runs on there
    await down(controller, cut)
    await controller.fence_host("kvm_a", confirm_off=True)  # wrongly
    await until(lambda: restart_of(controller, vms["web"]), "the restart proposed")
    await approve_all(controller)
    assert placement(controller, vms["web"]) == (ids["kvm_b"], VmStatus.up)
    controller.simulator.reconnect(cut)
    told = await until(lambda: [e for e in controller.db.list(Event) if e.type == "vm-runs-twice"],
                       "running twice told")
    assert told[0].target == vms["web"] and told[0].severity.value == "error"
    assert told[0].message.startswith("web is seen running on ")
    assert "two copies may write the same disks; stop one at once" in told[0].message


async def test_the_wait_is_told_before_an_admin_fence_that_comes_before_the_narrator_ran(controller) -> None:
    """The narrator tells what a lost host's VMs wait for from the change feed, in a task of its own;
    under load the admin's fence came first, and the story read fenced-then-waiting (seen in a full run)."""
    ids = await first_host(controller)
    vms = await running_fleet(controller, {"web": (4, ["availability:up@dealbreaker", "ha@dealbreaker"])})
    await more_hosts(controller, ids, "kvm_b")
    dead = ids["kvm_a"]
    dyn = controller.db.get(HostDynamic, dead)
    # The host's loss lands and the admin fences it with no await between: the narrator has had no turn.
    controller.db.put(dyn.with_status(HostStatus.down, "connection lost", utcnow()))
    await controller.fence_host("kvm_a", confirm_off=True)
    told = [e.type for e in sorted(controller.db.list(Event), key=lambda e: e.time)
            if e.type in ("restart-waits-fence", "host-fenced") and (e.target in (vms["web"], None))]
    assert told == ["restart-waits-fence", "host-fenced"], told
