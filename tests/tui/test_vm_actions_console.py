"""The VM actions of an incident in the console (issue 12 item 3 and its done-when): their keys on the VM
table and the VM detail, the confirmations stating the impact (what the guest loses, what the expectation
becomes), bulk on marks, the key prompt, read-only refusal, and the count of keys from launch to a
runaway VM forced off, with no X display.

The hosts are simulated (the stand-in for libvirt here; tests/integration/test_vm_actions_lab.py runs the
actions on the lab's libvirt). The status the table shows comes from the host's lifecycle events through
the change feed: nothing is polled, the waits are for what the screen shows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller
from kerub_tui.core.models import AuditEntry, Plan, PlanStatus, VirtualMachine, VirtualMachineDynamic, VmStatus
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.main import MainScreen
from kerub_tui.screens.prompt import PromptScreen
from kerub_tui.sim import Timing
from tests.sim._support import until

from .fleet_data import WEB1
from .helpers import Recorder, plain, running, settle, started_controller

GIB = 1 << 30
CEILING = 60.0
MAX_KEYS = 6  # the done-when: at most 6 keys plus the VM's name


class Keys:
    """The pilot's keyboard, counting the keys pressed (a chord such as ctrl+k is one key) apart from
    the characters of a name typed."""

    def __init__(self, pilot) -> None:
        self.pilot = pilot
        self.keys: list[str] = []
        self.typed = ""

    async def press(self, *keys: str) -> None:
        self.keys += keys
        await self.pilot.press(*keys)

    async def type(self, text: str) -> None:
        self.typed += text
        await self.pilot.press(*text)


async def shown(app: KerubApp, pilot, predicate: Callable[[], object], what: str) -> object:
    try:
        async with asyncio.timeout(CEILING):
            while not (value := predicate()):
                await settle(app, pilot)
                await pilot.pause(0.02)
            return value
    except TimeoutError:
        raise AssertionError(f"never shown: {what}") from None


def status(c: Controller, name: str) -> VmStatus | None:
    vm = c.find_by_name(VirtualMachine, name)
    dyn = c.get(VirtualMachineDynamic, vm.id) if vm else None
    return dyn.status if dyn is not None else None


def availability(c: Controller, name: str) -> str:
    vm = c.find_by_name(VirtualMachine, name)
    return next(e.spec() for e in vm.expectations if e.type == "availability")


def row_status(app: KerubApp, name: str) -> str:
    """The status cell the VMs table shows for ``name`` now."""
    table = app.screen.query_one("#vms")
    vm = app.controller.find_by_name(VirtualMachine, name)
    return " ".join(cell.plain for cell in table.cells_of(vm.id))


def audited(c: Controller, action: str) -> list[AuditEntry]:
    return [a for a in c.db.list(AuditEntry) if a.action == action]


@pytest.fixture
async def fleet(tmp_path: Path, monkeypatch) -> AsyncIterator[Controller]:
    """A simulated host running web01 and web02 (expected up) and db01 (expected down, off)."""
    for name in ("DISPLAY", "WAYLAND_DISPLAY"):  # a jump box: no X display
        monkeypatch.delenv(name, raising=False)
    c = Controller(tmp_path / "data", sim_timing=Timing(scale=0))
    await c.start()
    host = await c.add_simulated_host("kvm01", "mini")
    await c.hosts.wait_up(host.id, timeout=CEILING)
    for name in ("web01", "web02"):
        await c.create_vm(name, memory_min=GIB, expectations=["availability:up@dealbreaker"])
    await c.create_vm("db01", memory_min=GIB, expectations=["availability:down@want"])
    plan = await until(lambda: next((p for p in c.db.list(Plan) if p.status is PlanStatus.proposed), None),
                       "a plan to start web01 and web02")
    await c.decide_plan(plan.id, True)
    await until(lambda: status(c, "web01") is VmStatus.up and status(c, "web02") is VmStatus.up, "both up")
    await c.replanner.wait_idle()
    yield c
    await c.stop()


async def test_a_runaway_vm_is_forced_off_in_at_most_6_keys_plus_its_name(fleet):
    """The done-when, counted from launch: 2 (VMs pane), / web01 enter (filter), ctrl+k, y."""
    c = fleet
    app = KerubApp(c)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        keys = Keys(pilot)
        await keys.press("2", "slash")
        await keys.type("web01")
        await keys.press("enter")
        await settle(app, pilot)
        assert app.screen.query_one("#vms").cursor_id == c.find_by_name(VirtualMachine, "web01").id
        await keys.press("ctrl+k")
        await settle(app, pilot)
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen)
        assert plain(confirm.query_one("#confirm-title")) == "Force off web01?"
        assert ("Force off web01 on kvm01: the guest loses unsaved data; its expectation changes from up to down"
                in plain(confirm.query_one("#confirm-impact")))
        await keys.press("y")
        await shown(app, pilot, lambda: status(c, "web01") is VmStatus.down, "web01 off (its lifecycle event)")
        await shown(app, pilot, lambda: "down" in row_status(app, "web01"), "web01 down in the VMs table")
        assert len(keys.keys) <= MAX_KEYS and keys.typed == "web01", keys.keys
        assert keys.keys == ["2", "slash", "enter", "ctrl+k", "y"]  # the README's Incident section says these
        assert availability(c, "web01") == "availability:down@dealbreaker"
        assert status(c, "web02") is VmStatus.up  # only the one under the cursor
        await c.replanner.wait_idle()
        assert not [p for p in c.db.list(Plan) if p.status in (PlanStatus.proposed, PlanStatus.approved)]
        [entry] = audited(c, "vm poweroff --force")
        assert entry.outcome == "web01: forced off on kvm01; expectation up -> down"


async def test_bulk_on_marks_and_no_answers_no(fleet):
    c = fleet
    app = KerubApp(c)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        table = app.screen.query_one("#vms")
        for name in ("web01", "web02"):
            table.move_cursor(row=table.get_row_index(c.find_by_name(VirtualMachine, name).id))
            await pilot.press("space")
        # Reset: confirmed with its impact; "n" leaves everything as it was.
        await pilot.press("R")
        await settle(app, pilot)
        assert plain(app.screen.query_one("#confirm-title")) == "Reset 2 VMs?"
        impact = plain(app.screen.query_one("#confirm-impact"))
        assert "Reset web01 on kvm01: it restarts at once" in impact and "Reset web02 on kvm01" in impact
        assert "its expectation stays up" in impact
        await pilot.press("n")
        await settle(app, pilot)
        assert not audited(c, "vm reset")
        # Pause both: no confirmation (resume undoes it), the table follows the events.
        await pilot.press("z")
        await shown(app, pilot, lambda: all("paused" in row_status(app, n) for n in ("web01", "web02")),
                    "both paused in the table")
        assert availability(c, "web01") == availability(c, "web02") == "availability:up,paused@dealbreaker"
        await c.replanner.wait_idle()
        assert not [p for p in c.db.list(Plan) if p.status is PlanStatus.proposed], "a resume was proposed"
        await pilot.press("Z")
        await shown(app, pilot, lambda: all(status(c, n) is VmStatus.up for n in ("web01", "web02")), "resumed")
        # Power off both: the guests are asked, the expectations say down.
        await pilot.press("p")
        await settle(app, pilot)
        assert plain(app.screen.query_one("#confirm-title")) == "Power off 2 VMs?"
        assert "asked to shut down (ACPI); its expectation changes from up to down" in plain(
            app.screen.query_one("#confirm-impact"))
        await pilot.press("y")
        await shown(app, pilot, lambda: all("down" in row_status(app, n) for n in ("web01", "web02")), "both off")
        assert availability(c, "web01") == availability(c, "web02") == "availability:down@dealbreaker"


async def test_reboot_and_keys_from_the_vm_detail(fleet):
    c = fleet
    record = Recorder()
    app = KerubApp(c)
    async with app.run_test(size=(80, 24), message_hook=record) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        table = app.screen.query_one("#vms")
        table.move_cursor(row=table.get_row_index(c.find_by_name(VirtualMachine, "web02").id))
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("r")
        await settle(app, pilot)
        assert plain(app.screen.query_one("#confirm-title")) == "Reboot web02?"
        await pilot.press("y")
        await shown(app, pilot, lambda: audited(c, "vm reboot"), "the reboot audited")
        # x: the key prompt offers ctrl+alt+del; enter asks to confirm it (it reboots most guests), as
        # reboot and reset do, with its impact; no sends nothing, y sends it.
        for answer in ("n", "y"):
            await pilot.press("x")
            await settle(app, pilot)
            prompt = app.screen
            assert isinstance(prompt, PromptScreen) and prompt.input.value == "ctrl+alt+del"
            assert "ctrl+alt+delete to web02" in str(prompt.query_one("#prompt-status").render())
            await pilot.press("enter")
            await settle(app, pilot)
            confirm = app.screen
            assert isinstance(confirm, ConfirmScreen)
            assert plain(confirm.query_one("#confirm-title")) == "Send ctrl+alt+delete to web02?"
            impact = plain(confirm.query_one("#confirm-impact"))
            assert ("Keys to web02 on kvm01: pressed on its keyboard now, as if typed at it; its expectation "
                    "stays up") in impact and "ctrl+alt+del reboots most guests" in impact
            await pilot.press(answer)
            await settle(app, pilot)
            if answer == "n":
                assert not audited(c, "vm send-keys") and not isinstance(app.screen, ConfirmScreen)
        await shown(app, pilot, lambda: audited(c, "vm send-keys"), "the keys audited")
        assert audited(c, "vm send-keys")[0].outcome == "web02: sent ctrl+alt+delete on kvm01"
        # A hostile combination is refused in one line; nothing is sent.
        await pilot.press("x")
        await settle(app, pilot)
        app.screen.input.value = "ctrl+alt+del;reboot"
        await settle(app, pilot)
        assert "unknown key 'del;reboot'" in str(app.screen.query_one("#prompt-status").render())
        await pilot.press("enter")
        await settle(app, pilot)
        assert any("unknown key 'del;reboot'" in m.error for m in record.of(KerubApp.ActionFailed))
        assert len(audited(c, "vm send-keys")) == 1


async def test_consoles_of_a_vm_on_a_simulated_host_are_refused_naming_what_it_has_not(fleet):
    """A simulated host runs no qemu: each console says what is missing, in its own words (the serial
    console is not a screen)."""
    from kerub_tui.api import ActionError
    from kerub_tui.screens.preview import ScreenPreview

    c = fleet
    record = Recorder()
    app = KerubApp(c)
    async with app.run_test(size=(120, 40), message_hook=record) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        table = app.screen.query_one("#vms")
        table.move_cursor(row=table.get_row_index(c.find_by_name(VirtualMachine, "web01").id))
        await pilot.press("t")
        await shown(app, pilot, lambda: record.of(KerubApp.ActionFailed), "t refused")
        [failed] = record.of(KerubApp.ActionFailed)
        assert failed.error == "web01 runs on kvm01, a simulated host: there is no serial console to attach"
        record.clear()
        await pilot.press("c")
        await shown(app, pilot, lambda: record.of(KerubApp.ActionFailed), "c refused")
        assert record.of(KerubApp.ActionFailed)[0].error == (
            "web01 runs on kvm01, a simulated host: there is no screen for a viewer to show (no SPICE or VNC server)")
        await pilot.press("enter")
        await shown(app, pilot, lambda: "no screen:" in str(app.screen.query_one(ScreenPreview).render()),
                    "the detail's screen panel")
        assert str(app.screen.query_one(ScreenPreview).render()) == (
            "no screen: web01 runs on kvm01, a simulated host: there is no screen to take")
        with pytest.raises(ActionError, match="a simulated host: there is no SPICE or VNC server, so no console file"):
            await c.console_file("web01")


async def test_read_only_refuses_each_action_key_before_any_confirmation(tmp_path):
    await (await started_controller(tmp_path / "data")).stop()  # the store file exists
    controller = await started_controller(tmp_path / "data", readonly=True)
    before = {d.id: d for d in controller.db.all_documents()}
    record = Recorder()
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), message_hook=record) as pilot:
        await settle(app, pilot)
        await pilot.press("2")
        table = app.screen.query_one("#vms")
        table.move_cursor(row=table.get_row_index(WEB1))
        for key in ("ctrl+k", "p", "r", "R", "z", "Z", "x"):
            record.clear()
            await pilot.press(key)
            await settle(app, pilot)
            assert isinstance(app.screen, MainScreen), key
            [refused] = record.of(KerubApp.ActionRefused)
            assert "read-only mode" in refused.reason, key
        await pilot.press("enter")  # the VM detail: the same keys, the same refusal
        await settle(app, pilot)
        for key in ("ctrl+k", "p", "r", "R", "z", "Z", "x"):
            record.clear()
            await pilot.press(key)
            await settle(app, pilot)
            assert [r.reason for r in record.of(KerubApp.ActionRefused)] == [
                "read-only mode: nothing can be changed (started with --readonly)"], key
        assert {d.id: d for d in controller.db.all_documents()} == before


async def test_the_actions_are_in_the_palette_and_the_help(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("2")
        await settle(app, pilot)
        helps = " ".join(c.help for c in app.get_system_commands(app.screen))
        for binding_id in ("vms.force_off", "vms.poweroff", "vms.reboot", "vms.reset", "vms.pause", "vms.resume",
                           "vms.send_keys"):
            assert binding_id in helps, binding_id
        await pilot.press("question_mark")
        await settle(app, pilot)
        text = " ".join(plain(w) for w in app.screen.query("Static"))
        for label in ("Force off", "Power off (ACPI)", "Reboot (ACPI)", "Reset", "Pause", "Resume", "Send keys"):
            assert label in text, label
