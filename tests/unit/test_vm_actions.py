"""The VM actions of an incident (issue 12 item 3): the key table and its parser, the paused mark of the
availability expectation and how the planner judges it, the libvirt operations' argument checks, the
read-only refusal of each action, and the controller's actions end to end over simulated hosts (the
stand-in for a host here; tests/integration/test_vm_actions_lab.py runs the same against real libvirt):
each changes the domain's state, says and does what it does to the expectation, is audited, and the
planner does not undo it."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kerub_tui.api import ACTIONS, READ_ONLY_MESSAGE, ActionError, ReadOnlyMode, refusal
from kerub_tui.control import RemoteController
from kerub_tui.controller import Controller
from kerub_tui.core import keys
from kerub_tui.core.expectations import InvalidExpectation, parse_spec
from kerub_tui.core.models import AuditEntry, Plan, PlanStatus, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.hosts.operations import OPS, OperationError, check_keys
from kerub_tui.planner.checkers import vm_violations
from kerub_tui.planner.state import OperationalState
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until

GIB = 1 << 30
HEADER = Path("/usr/include/linux/input-event-codes.h")
VM_ACTIONS = ("reboot_vm", "reset_vm", "poweroff_vm", "pause_vm", "resume_vm", "send_keys")
HOSTILE = ["web;reboot", "$(id)", "`id`", "a\nb", "../etc", "x" * 300, "web\x1b[2J", "-rf", ""]


# --- keys ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(not HEADER.exists(), reason="no linux/input-event-codes.h to compare with")
def test_every_key_name_has_the_keycode_of_the_linux_header():
    header = dict(re.findall(r"#define KEY_([A-Z0-9]+)\s+(\d+)\b", HEADER.read_text()))
    linux = {"ctrl": "LEFTCTRL", "alt": "LEFTALT", "shift": "LEFTSHIFT", "meta": "LEFTMETA", "altgr": "RIGHTALT",
             "menu": "COMPOSE"}
    for name, code in keys.KEYCODES.items():
        assert int(header[linux.get(name, name.upper())]) == code, name
    for alias, name in keys.ALIASES.items():
        assert name in keys.KEYCODES, alias


@pytest.mark.parametrize(("text", "codes"), [
    ("ctrl+alt+del", [29, 56, 111]),
    ("Ctrl+Alt+Delete", [29, 56, 111]),
    ("ctrl+alt+f2", [29, 56, 60]),
    ("alt+sysrq+b", [56, 99, 48]),
    ("enter", [28]),
    ("shift+a", [42, 30]),
])
def test_combinations_parse_to_linux_keycodes(text, codes):
    assert keys.parse_combo(text) == codes


@pytest.mark.parametrize(("text", "message"), [
    ("ctrl+alt+del;reboot", "unknown key 'del;reboot'"),
    ("$(reboot)", "unknown key '$(reboot)'"),
    ("ctrl+\x1b[2J", "unknown key '?[2J'"),
    ("ctrl++a", "empty key name"),
    ("", "empty key combination"),
    ("ctrl+ctrl", "names a key twice"),
    ("+".join("abcdefghijklmnopq"), "at most 16"),
    ("a" * 201, "more than 200"),
])
def test_bad_combinations_are_refused_with_one_line(text, message):
    with pytest.raises(keys.InvalidKeys) as error:
        keys.parse_combo(text)
    assert message in str(error.value) and "\n" not in str(error.value) and "\x1b" not in str(error.value)


def test_sequences_and_their_canonical_names():
    assert keys.parse_sequence(["ctrl+alt+f2", "r", "o", "o", "t", "enter"])[0] == [29, 56, 60]
    assert keys.canonical(["Ctrl+Alt+Del", "esc"]) == "ctrl+alt+delete esc"
    with pytest.raises(keys.InvalidKeys, match="no keys"):
        keys.parse_sequence([])
    with pytest.raises(keys.InvalidKeys, match="no keys"):
        keys.parse_sequence("ctrl+alt+del")  # type: ignore[arg-type]
    with pytest.raises(keys.InvalidKeys, match="at most 64"):
        keys.parse_sequence(["a"] * 65)


@pytest.mark.parametrize("bad", [[], "ctrl", [[]], [[29, 29]], [[9999]], [[True]], [["29"]], [[1] * 17],
                                 [[29]] * 65, None])
def test_the_send_keys_operation_refuses_anything_but_known_keycodes(bad):
    with pytest.raises(OperationError):
        check_keys(bad)
    assert check_keys([[29, 56, 111]]) == [[29, 56, 111]]


def test_the_new_libvirt_operations_are_declared():
    assert {"reboot", "reset", "request-shutdown", "send-keys"} <= set(OPS)


# --- the paused mark of availability ---------------------------------------------------------------


def test_availability_up_paused_round_trips_and_down_paused_is_refused():
    paused = parse_spec("availability:up,paused@dealbreaker", "vm")
    assert paused.paused and paused.up and paused.spec() == "availability:up,paused@dealbreaker"
    assert parse_spec(paused.spec(), "vm") == paused
    assert parse_spec("availability:up", "vm").spec() == "availability:up@want"  # no mark: as before
    assert parse_spec("availability:down@wish", "vm").spec() == "availability:down@wish"
    with pytest.raises(InvalidExpectation, match="down cannot also be expected paused"):
        parse_spec("availability:down,paused", "vm")
    with pytest.raises(InvalidExpectation, match="must be one of paused, running"):
        parse_spec("availability:up,frozen", "vm")


# --- read-only: the one refusal place -----------------------------------------------------------------


def test_each_vm_action_is_declared_as_changing_and_served_to_attached_consoles():
    for name in VM_ACTIONS:
        assert ACTIONS[name].changes and ACTIONS[name].remote, name
        assert refusal(True, name) == READ_ONLY_MESSAGE and refusal(False, name) is None
        assert hasattr(RemoteController, name), name


async def test_read_only_refuses_each_vm_action_before_anything_runs(tmp_path):
    writer = Controller(tmp_path)
    await writer.start(connect_hosts=False)
    await writer.create_vm("web", memory_min=GIB, expectations=["availability:up"])
    await writer.stop()
    c = Controller(tmp_path, readonly=True)
    await c.start(connect_hosts=False)
    try:
        calls = {"reboot_vm": c.reboot_vm("web"), "reset_vm": c.reset_vm("web"),
                 "poweroff_vm": c.poweroff_vm("web", force=True), "pause_vm": c.pause_vm("web"),
                 "resume_vm": c.resume_vm("web"), "send_keys": c.send_keys("web", ["ctrl+alt+del"])}
        for name, call in calls.items():
            with pytest.raises(ReadOnlyMode):
                await call
            assert refusal(c.readonly, name) == READ_ONLY_MESSAGE
        vm = c.find_by_name(VirtualMachine, "web")
        assert [e.spec() for e in vm.expectations] == ["availability:up@want"]
    finally:
        await c.stop()


# --- end to end over simulated hosts ------------------------------------------------------------------


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    c = Controller(tmp_path, sim_timing=Timing(scale=0))
    await c.start()
    yield c
    await c.stop()


def status(c: Controller, vm: VirtualMachine) -> VmStatus | None:
    dyn = c.db.get(VirtualMachineDynamic, vm.id)
    return dyn.status if dyn is not None else None


def availability(c: Controller, vm: VirtualMachine) -> str:
    return next(e.spec() for e in c.db.require(VirtualMachine, vm.id).expectations if e.type == "availability")


def open_plans(c: Controller) -> list[Plan]:
    return [p for p in c.db.list(Plan) if p.status in (PlanStatus.proposed, PlanStatus.approved, PlanStatus.running)]


async def running_vm(c: Controller, name: str = "web") -> VirtualMachine:
    host = await c.add_simulated_host("kvm01", "mini")
    await c.hosts.wait_up(host.id, timeout=CEILING)
    vm = await c.create_vm(name, memory_min=GIB, expectations=["availability:up@dealbreaker"])
    plan = await until(lambda: next((p for p in c.db.list(Plan) if p.status is PlanStatus.proposed), None),
                       f"a plan to start {name}")
    await c.decide_plan(plan.id, True)
    await until(lambda: status(c, vm) is VmStatus.up, f"{name} up")
    await c.replanner.wait_idle()
    return vm


async def settled(c: Controller) -> None:
    """The monitor's writes have landed and the planner has re-planned on them."""
    await c.replanner.wait_idle()


def audited(c: Controller, action: str) -> list[AuditEntry]:
    return [a for a in c.db.list(AuditEntry) if a.action == action]


async def test_force_off_expects_the_vm_down_first_and_the_planner_does_not_start_it_again(controller):
    c = controller
    vm = await running_vm(c)
    machine = c.simulator.machine(c.db.require(VirtualMachineDynamic, vm.id).host_id or "")
    said = await c.poweroff_vm("web", force=True)
    assert said == "web: forced off on kvm01; expectation up -> down"
    # The action returns once the host's lifecycle event is recorded: what is read next sees the VM off.
    assert status(c, vm) is VmStatus.down
    await settled(c)
    assert machine.domain_state(vm.id) == "shut off"
    assert availability(c, vm) == "availability:down@dealbreaker"
    assert not open_plans(c), [p.steps for p in open_plans(c)]
    assert not vm_violations(OperationalState.from_store(c.db), vm.id)
    [entry] = audited(c, "vm poweroff --force")
    assert entry.outcome == said and entry.command == "libvirt destroy-if-running" and entry.exit_code == 0
    # Again: it is off already, nothing to do and nothing changed.
    assert await c.poweroff_vm("web", force=True) == "web is not running"


async def test_graceful_poweroff_asks_the_guest_and_expects_the_vm_down(controller):
    c = controller
    vm = await running_vm(c)
    said = await c.poweroff_vm(vm.id)
    assert said == "web: power off requested (ACPI) on kvm01; expectation up -> down"
    await until(lambda: status(c, vm) is VmStatus.down, "the guest powered itself off")
    await settled(c)
    assert availability(c, vm) == "availability:down@dealbreaker" and not open_plans(c)
    assert audited(c, "vm poweroff")[0].command == "libvirt request-shutdown"


async def test_pause_is_not_a_violation_of_up_and_resume_takes_the_mark_away(controller):
    c = controller
    vm = await running_vm(c)
    assert await c.pause_vm("web") == "web: paused on kvm01; expectation up -> up,paused"
    assert status(c, vm) is VmStatus.paused
    await settled(c)
    assert availability(c, vm) == "availability:up,paused@dealbreaker"
    assert not open_plans(c), "the planner proposes resuming a VM the admin paused"
    assert not vm_violations(OperationalState.from_store(c.db), vm.id)

    assert await c.resume_vm("web") == "web: resumed on kvm01; expectation up,paused -> up"
    await until(lambda: status(c, vm) is VmStatus.up, "web up again")
    await settled(c)
    assert availability(c, vm) == "availability:up@dealbreaker" and not open_plans(c)
    assert [a.outcome for a in audited(c, "vm pause")] == ["web: paused on kvm01; expectation up -> up,paused"]


async def test_a_vm_paused_behind_the_admins_back_is_still_a_violation(controller):
    """Without the mark (a pause kerub-tui did not make: an I/O error, virsh suspend), up is violated."""
    c = controller
    vm = await running_vm(c)
    host_id = c.db.require(VirtualMachineDynamic, vm.id).host_id
    assert (await c.hosts.libvirt(host_id, "pause", vm_id=vm.id)).exit_code == 0
    await until(lambda: status(c, vm) is VmStatus.paused, "web paused in its document")
    assert [v.reason for v in vm_violations(OperationalState.from_store(c.db), vm.id)] == ["paused on kvm01"]


async def test_reboot_reset_and_keys_leave_the_expectation_and_are_audited(controller):
    c = controller
    vm = await running_vm(c)
    assert await c.reboot_vm("web") == "web: reboot requested (ACPI) on kvm01"
    assert await c.reset_vm("web") == "web: reset on kvm01"
    assert await c.send_keys("web", ["ctrl+alt+del", "Ctrl+Alt+F2"]) == \
        "web: sent ctrl+alt+delete ctrl+alt+f2 on kvm01"
    assert await c.send_keys("web", "ctrl+alt+f1 enter") == "web: sent ctrl+alt+f1 enter on kvm01"  # one text
    assert availability(c, vm) == "availability:up@dealbreaker"
    assert [len(audited(c, f"vm {a}")) for a in ("reboot", "reset", "send-keys")] == [1, 1, 2]
    with pytest.raises(ActionError, match="unknown key 'del;reboot'"):
        await c.send_keys("web", ["ctrl+alt+del;reboot"])


async def test_a_vm_that_is_not_running_is_refused_in_one_line_and_nothing_changes(controller):
    c = controller
    vm = await c.create_vm("idle", memory_min=GIB)
    for call in (c.reboot_vm, c.reset_vm, c.pause_vm, c.resume_vm):
        with pytest.raises(ActionError, match="VM idle is not running: nothing to"):
            await call("idle")
    with pytest.raises(ActionError, match="not running"):
        await c.send_keys("idle", ["enter"])
    assert c.db.require(VirtualMachine, vm.id).expectations == []
    # Power off of a VM that is off: it is expected down from now on (the planner does not start it).
    assert await c.poweroff_vm("idle", force=True) == "idle is not running; expectation none -> down"
    assert availability(c, vm) == "availability:down@dealbreaker"


async def test_a_failed_action_takes_its_expectation_change_back(controller):
    c = controller
    vm = await running_vm(c)
    await c.pause_vm("web")
    await until(lambda: status(c, vm) is VmStatus.paused, "web paused")
    # A paused guest cannot answer the power button: refused by the host, the expectation stays.
    with pytest.raises(ActionError, match=r"web on kvm01: .*paused"):
        await c.poweroff_vm("web")
    assert availability(c, vm) == "availability:up,paused@dealbreaker"
    assert audited(c, "vm poweroff")[0].outcome.startswith("failed: ")


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_vm_names_are_refused_as_unknown(controller, name):
    for call in (controller.reboot_vm, controller.reset_vm, controller.pause_vm, controller.resume_vm,
                 controller.poweroff_vm):
        with pytest.raises(ActionError, match="no vm named"):
            await call(name)
    with pytest.raises(ActionError):
        await controller.send_keys(name, ["enter"])
