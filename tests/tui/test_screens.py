"""The other screens: VM and disk editors with the expectation editor, host detail, add host,
proposals, audit, events and settings."""

from __future__ import annotations

import datetime as dt

import pytest
from textual.widgets import Input, Select, Static

from kerub_tui.app import KerubApp
from kerub_tui.core.expectations import DISK_EXPECTATION_TYPES, VM_EXPECTATION_TYPES
from kerub_tui.core.models import (
    Host,
    Plan,
    PlanStatus,
    Settings,
    StepOutcome,
    StepRecord,
    VirtualMachine,
    VirtualStorageDevice,
)
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.expectations import ExpectationEditor
from kerub_tui.screens.forms import FormField
from kerub_tui.screens.live import LiveTable
from kerub_tui.screens.main import MainScreen

from .fleet_data import D_DB1, D_SHARED, DB1, H1, H3, P_KSM, P_START, T0, WEB1, WEB2
from .helpers import Recorder, plain, running, settle

GIB = 1 << 30


def field_error(screen, key: str) -> str | None:
    return screen.query_one(f"#field-{key}", FormField).error


async def fill(pilot, selector: str, text: str) -> None:
    widget = pilot.app.screen.query_one(selector, Input)
    widget.value = text
    await pilot.pause()


async def choose(pilot, selector: str, value) -> None:
    pilot.app.screen.query_one(selector, Select).value = value
    await pilot.pause()


# --- VM editor --------------------------------------------------------------------------------


async def test_vm_editor_shows_errors_inline_and_creates(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 60), message_hook=record) as (controller, app, pilot):
        await pilot.press("2", "n")
        screen = app.screen
        assert type(screen).__name__ == "VmEditorScreen"
        await fill(pilot, "#name", "bad name")
        await fill(pilot, "#cpus", "0")
        await fill(pilot, "#memory_min", "lots")
        await pilot.press("ctrl+s")
        assert "contains a space" in field_error(screen, "name")
        assert "at least 1" in field_error(screen, "cpus")
        assert "not understood" in field_error(screen, "memory_min")
        assert controller.db.count(VirtualMachine) == 3  # nothing saved
        # Minimum above maximum: the model's own rule, shown on the form.
        await fill(pilot, "#name", "app1")
        await fill(pilot, "#cpus", "2")
        await fill(pilot, "#memory_min", "2G")
        await fill(pilot, "#memory_max", "1G")
        await pilot.press("ctrl+s")
        assert field_error(screen, "name") is None
        assert "more than maximum" in field_error(screen, "memory_max")
        await fill(pilot, "#memory_max", "4G")
        # A new disk with a bad size, and an existing one.
        await pilot.click("#add-new-disk")
        await pilot.click("#add-existing-disk")
        rows = list(screen.query("DiskRow"))
        rows[0].query_one(".disk-name", Input).value = "app1-root"
        rows[0].query_one(".disk-size", Input).value = "-5"
        rows[1].query_one(".disk-existing", Select).value = D_SHARED
        await pilot.click("#add-nic")
        nic = screen.query_one("NicRow")
        nic.query_one(".nic-mac", Input).value = "zz:zz"
        await pilot.pause()
        await pilot.press("ctrl+s")
        assert "not understood" in plain(rows[0].query_one(".row-error", Static))
        assert "not a MAC address" in plain(nic.query_one(".row-error", Static))
        rows[0].query_one(".disk-size", Input).value = "20G"
        nic.query_one(".nic-mac", Input).value = "52:54:00:12:34:56"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert isinstance(app.screen, MainScreen)
        vm = controller.db.find_by_name(VirtualMachine, "app1")
        assert (vm.cpus, vm.memory_min, vm.memory_max) == (2, 2 * GIB, 4 * GIB)
        new_disk = controller.db.find_by_name(VirtualStorageDevice, "app1-root")
        assert new_disk.size == 20 * GIB
        assert [link.disk_id for link in vm.disks] == [D_SHARED, new_disk.id]
        assert vm.nics[0].network == "default" and vm.nics[0].mac == "52:54:00:12:34:56"
        assert record.of(KerubApp.ActionDone)[-1].action == "save VM"
        assert vm.id in app.screen.table("vms").shown_ids()


async def test_vm_editor_name_in_use_is_refused_and_nothing_is_left_behind(tmp_path):
    async with running(tmp_path, (120, 60)) as (controller, app, pilot):
        await pilot.press("2", "n")
        screen = app.screen
        await fill(pilot, "#name", "web1")  # taken: the controller refuses
        await pilot.click("#add-new-disk")
        row = screen.query_one("DiskRow")
        row.query_one(".disk-name", Input).value = "web1-extra"
        row.query_one(".disk-size", Input).value = "1G"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert app.screen is screen
        # Said next to the name (the form checks it first); the controller refuses it too (test_cli).
        assert screen.query_one("#field-name").error == "a VM named 'web1' already exists"
        assert controller.db.find_by_name(VirtualStorageDevice, "web1-extra") is None


async def test_expectation_editor_offers_every_type_with_its_fields(tmp_path):
    async with running(tmp_path, (120, 60)) as (_controller, app, pilot):
        await pilot.press("2", "n")
        editor = app.screen.query_one(ExpectationEditor)
        type_select = editor.query_one("#expect-type", Select)
        assert [value for _, value in type_select._options if value is not Select.NULL] == sorted(VM_EXPECTATION_TYPES)
        for name, cls in VM_EXPECTATION_TYPES.items():
            await editor.build_form(name)
            await pilot.pause()
            shown = {f.key.removeprefix("expect-") for f in editor.query("#expect-fields FormField").results(FormField)}
            assert shown == set(cls.model_fields) - {"type", "level"}, name
            assert plain(editor.query_one("#expect-summary", Static)) == cls.summary
        assert [v for _, v in editor.query_one("#expect-level", Select)._options] == ["wish", "want", "dealbreaker"]


async def test_expectation_editor_validates_each_field(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 60), message_hook=record) as (controller, app, pilot):
        await pilot.press("2")
        table = app.screen.table("vms")
        table.move_cursor(row=table.get_row_index(WEB2))
        await pilot.press("e")
        editor = app.screen.query_one(ExpectationEditor)
        assert len(editor.expectations) == 1
        editor.query_one("#expect-type", Select).focus()
        await pilot.press("ctrl+n")
        assert "pick an expectation type" in record.of(ExpectationEditor.Invalid)[-1].errors["type"]
        await choose(pilot, "#expect-type", "cpu-clock-frequency")
        await pilot.press("ctrl+n")
        assert "min_mhz" in record.of(ExpectationEditor.Invalid)[-1].errors
        assert field_error(editor, "expect-min_mhz")
        await fill(pilot, "#expect-min_mhz", "99999")
        await pilot.press("ctrl+n")
        assert field_error(editor, "expect-min_mhz") == "must be at most 20000, not 99999"
        await choose(pilot, "#expect-type", "not-same-host")
        await fill(pilot, "#expect-vms", "web1, nosuch")
        await pilot.press("ctrl+n")
        assert "no VM named 'nosuch'" in field_error(editor, "expect-vms")
        await fill(pilot, "#expect-vms", "web1")
        await choose(pilot, "#expect-level", "dealbreaker")
        await pilot.press("ctrl+n")
        assert len(editor.expectations) == 2
        assert editor.expectations[-1].vms == [WEB1]  # stored as ids, shown as names
        assert "not-same-host:web1@dealbreaker" in str(editor.query_one("#expect-list").get_option_at_index(1).prompt)
        # A second availability replaces the first rather than contradicting it.
        await choose(pilot, "#expect-type", "availability")
        editor.query_one("#expect-up").value = False
        await pilot.press("ctrl+n")
        assert [e.type for e in editor.expectations] == ["not-same-host", "availability"]
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        vm = controller.db.get(VirtualMachine, WEB2)
        assert [e.spec() for e in vm.expectations] == [f"not-same-host:{WEB1}@dealbreaker", "availability:down@dealbreaker"]


async def test_disk_editor(tmp_path):
    async with running(tmp_path, (120, 60)) as (controller, app, pilot):
        await pilot.press("3", "n")
        screen = app.screen
        editor = screen.query_one(ExpectationEditor)
        assert [v for _, v in editor.query_one("#expect-type", Select)._options if v is not Select.NULL] == \
            sorted(DISK_EXPECTATION_TYPES)
        await fill(pilot, "#name", "data9")
        await pilot.press("ctrl+s")
        assert "is needed" in field_error(screen, "size")
        await fill(pilot, "#size", "5G")
        editor.query_one("#expect-type", Select).focus()
        await choose(pilot, "#expect-type", "storage-redundancy")
        await fill(pilot, "#expect-copies", "9")
        await pilot.press("ctrl+n")
        assert field_error(editor, "expect-copies") == "must be at most 8, not 9"
        await fill(pilot, "#expect-copies", "3")
        await pilot.press("ctrl+n", "ctrl+s")
        await settle(app, pilot)
        disk = controller.db.find_by_name(VirtualStorageDevice, "data9")
        assert disk.size == 5 * GIB and disk.expectations[0].copies == 3
        # Editing: shrinking is refused on the form.
        table = app.screen.table("disks")
        table.move_cursor(row=table.get_row_index(disk.id))
        await pilot.press("e")
        await fill(pilot, "#size", "1G")
        await pilot.press("ctrl+s")
        assert "can only grow" in field_error(app.screen, "size")


# --- hosts ------------------------------------------------------------------------------------


async def test_host_detail_and_its_actions(tmp_path):
    record = Recorder()
    async with running(tmp_path, (120, 40), message_hook=record) as (controller, app, pilot):
        await pilot.press("enter")  # h1
        screen = app.screen
        assert type(screen).__name__ == "HostDetailScreen"
        assert screen.query_one("#host-vms", LiveTable).shown_ids() == [WEB1]
        assert "Intel Xeon E5-2630 v4" in plain(screen.query_one("#host-capabilities", Static))
        assert "16 CPUs" in plain(screen.query_one("#host-capabilities", Static))
        assert "lvm:vg0: 50.0G" in plain(screen.query_one("#host-figures", Static))
        await pilot.press("E")
        assert isinstance(app.screen, ConfirmScreen)
        impact = plain(app.screen.query_one("#confirm-impact", Static))
        assert "1 VM(s) move away (web1)" in impact and "web1-root" in impact
        await pilot.press("y")
        await settle(app, pilot)
        assert controller.db.get(Host, H1).recycling
        assert "maintenance" in plain(screen.query_one("#host-title", Static))
        # Remove is refused by the controller while VMs run there; the confirmation said why first.
        await pilot.press("ctrl+d")
        assert "evacuate it first" in plain(app.screen.query_one("#confirm-impact", Static))
        await pilot.press("y")
        await settle(app, pilot)
        assert controller.db.get(Host, H1) is not None
        assert "evacuate it first" in record.of(KerubApp.ActionFailed)[-1].error
        await pilot.press("escape")
        # h3 has nothing on it: removing it works, and the detail screen of a removed host closes.
        await pilot.press("1")
        hosts = app.screen.table("hosts")
        hosts.move_cursor(row=hosts.get_row_index(H3))
        await pilot.press("enter", "ctrl+d", "y")
        await settle(app, pilot)
        assert controller.db.get(Host, H3) is None
        assert isinstance(app.screen, MainScreen)
        assert H3 not in app.screen.table("hosts").shown_ids()


async def test_host_detail_figures_follow_the_feed(tmp_path):
    from .fleet_data import sample_series

    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("enter")
        for doc in sample_series(H1, 64, count=12):
            controller.db.put(doc)
        await settle(app, pilot)
        cpu = app.screen.query_one("#cpu-spark").data
        assert len(cpu) == 12 and max(cpu) > min(cpu)
        # The hosts table's sparkline moved too (the main screen stays live underneath).
        assert app.overview.history.series(H1, "cpu", 60)[-1] == pytest.approx(100 - (90 - (11 * 7) % 80))


async def test_add_host_form_errors(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("a")
        screen = app.screen
        await fill(pilot, "#address", "bad address!")
        await fill(pilot, "#port", "70000")
        await fill(pilot, "#user", "Root;rm")
        await fill(pilot, "#identity", str(tmp_path / "missing-key"))
        await pilot.press("ctrl+s")
        assert "neither an IP address nor a valid host name" in field_error(screen, "address")
        assert "at most 65535" in field_error(screen, "port")
        assert "not a valid login name" in field_error(screen, "user")
        assert "no key file" in field_error(screen, "identity")
        assert screen.progress == []  # nothing was attempted


@pytest.mark.skipif(not hasattr(__import__("kerub_tui.controller").controller.Controller, "fetch_host_key"),
                    reason="the controller has no fetch_host_key yet")
async def test_add_host_unreachable_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    record = Recorder()
    async with running(tmp_path, (80, 24), message_hook=record) as (controller, app, pilot):
        await pilot.press("a")
        await fill(pilot, "#address", "127.0.0.1")
        await fill(pilot, "#port", str(port))
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        error = plain(app.screen.query_one("#addhost-error", Static))
        assert error.startswith("✗") and "127.0.0.1" in error
        assert record.of(KerubApp.ActionFailed)[-1].action == "fetch host key"
        assert controller.db.count(Host) == 3


# --- proposals, audit, events, settings -------------------------------------------------------


async def test_proposals_show_steps_and_follow_a_running_plan(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("colon", *"plans", "enter")
        screen = app.screen
        table = screen.query_one("#plans", LiveTable)
        assert table.cursor_id == P_START  # the open proposal first
        text = plain(screen.query_one("#plan-text", Static))
        assert "db1: availability@dealbreaker violated" in text
        assert text.index("1. create LV vg0/db1-data") < text.index("2. start db1")
        assert "$ lvcreate --yes -n db1-data -L 53687091200b vg0" in text
        assert "effect: h1: 8.0G memory and 4 vCPUs reserved" in text
        assert "[5s, CPU 2.0s, risk 0.10]" in text
        assert "no aarch64 host" in text
        # The running plan: its second step completes while we watch.
        table.move_cursor(row=table.get_row_index(P_KSM))
        await pilot.pause()
        assert "⟳ 2. tune KSM" in plain(screen.query_one("#plan-text", Static))
        plan = controller.db.get(Plan, P_KSM)
        controller.db.put(plan.evolve(status=PlanStatus.done, records=[
            plan.records[0].model_dump(),
            StepRecord(step_index=1, host_id=plan.records[1].host_id, outcome=StepOutcome.done).model_dump()]))
        await settle(app, pilot)
        text = plain(screen.query_one("#plan-text", Static))
        assert "✓ 2. tune KSM" in text and "done" in text
        assert table.cells_of(P_KSM)[3].plain == "2/2"
        assert table.cursor_id == P_KSM


async def test_always_approve_is_listed_and_revocable_in_settings(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("colon", *"plans", "enter", "A")
        assert isinstance(app.screen, ConfirmScreen)
        assert "every plan of kind 'start' runs without asking" in plain(app.screen.query_one("#confirm-impact"))
        await pilot.press("y")
        await settle(app, pilot)
        assert [p.plan_kind for p in controller.settings().auto_approve] == ["start"]
        await pilot.press("colon", *"settings", "enter")
        policies = app.screen.query_one("#policies", LiveTable)
        assert policies.shown_ids() == ["start"]
        # A policy never covers a plan that deletes data unless it says so (issue 13 item 7): d, asked.
        assert policies.cells_of("start")[1].plain == "asks"
        assert "Except a plan with a step that deletes data" in " ".join(
            controller.impact("always approve", ["start"]))
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        assert [p.deletes for p in controller.settings().auto_approve] == [True]
        assert policies.cells_of("start")[1].plain == "yes"
        await pilot.press("d")  # taken back at once
        await settle(app, pilot)
        assert [p.deletes for p in controller.settings().auto_approve] == [False]
        await pilot.press("ctrl+d")
        await settle(app, pilot)
        assert controller.settings().auto_approve == []
        assert policies.shown_ids() == []


async def test_settings_optimisation_and_keymap(tmp_path, private_dirs):
    config, _ = private_dirs
    (config / "keymap.toml").write_text('"vms.start" = "ctrl+s"\n"no.such" = "x"\n"vms.stop" = 3\n')
    async with running(tmp_path, (120, 60)) as (controller, app, pilot):
        await pilot.press("colon", *"settings", "enter")
        keymap = plain(app.screen.query_one("#keymap", Static))
        assert "no binding with id 'no.such'" in keymap and "vms.stop: expected a key" in keymap
        assert "from keymap.toml" in keymap
        app.screen.query_one("#ksm").value = True
        await fill(pilot, "#power_saving_threshold", "half")
        await pilot.press("ctrl+s")
        assert "not a number" in field_error(app.screen, "power_saving_threshold")
        await fill(pilot, "#power_saving_threshold", "1.5")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert field_error(app.screen, "power_saving_threshold") == "must be at most 1, not 1.5"
        await fill(pilot, "#power_saving_threshold", "0.3")
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        settings = controller.db.get(Settings, "settings")
        assert settings.optimisation.ksm and settings.optimisation.power_saving_threshold == 0.3


async def test_audit_is_filterable_and_shows_the_output(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("colon", *"audit", "enter")
        table = app.screen.query_one(LiveTable)
        assert len(table.shown_ids()) == 4
        await pilot.press("slash", *"^255$", "enter")  # by exit code
        assert len(table.shown_ids()) == 1
        detail = plain(app.screen.query_one("#audit-detail", Static))
        assert "lscpu -J" in detail and "Connection refused" in detail and "h3" in detail
        await pilot.press("escape", "escape")
        await pilot.press("colon", *"events", "enter", "slash", *"violation", "enter")
        events = app.screen.query_one(LiveTable)
        assert len(events.shown_ids()) == 2
        assert "db1" in plain(app.screen.query_one("#events-detail", Static)) or \
            "db1-data" in plain(app.screen.query_one("#events-detail", Static))


async def test_vm_detail_shows_the_planner_verdicts_live(tmp_path):
    from kerub_tui.core.models import Event, VirtualMachineDynamic, VmStatus

    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2", "enter")  # db1, down
        await settle(app, pilot)
        text = plain(app.screen.query_one("#vm-expectations", Static))
        assert "✗ availability:up@dealbreaker\n    not running" in text
        assert "✓ cpu-architecture:aarch64@want" in text
        # It starts on h1 (x86_64): running satisfies availability, and the architecture wish is not met.
        controller.db.put(VirtualMachineDynamic(id=DB1, host_id=H1, status=VmStatus.up, updated_at=T0))
        await settle(app, pilot)
        text = plain(app.screen.query_one("#vm-expectations", Static))
        assert "✓ availability:up@dealbreaker" in text
        assert "✗ cpu-architecture:aarch64@want" in text and "x86_64" in text
        await pilot.press("escape")
        # The table's badge follows the planner's violation events.
        assert app.screen.table("vms").cells_of(DB1)[5].plain == "✗1/2"
        controller.db.put(Event(time=T0 + dt.timedelta(hours=1), type="violation-cleared", target=DB1,
                                message="availability:up@dealbreaker: db1 runs on h1"))
        await settle(app, pilot)
        assert app.screen.table("vms").cells_of(DB1)[5].plain == "✓2"
        await pilot.press("3")
        disks = app.screen.table("disks")
        assert disks.cells_of(D_DB1)[4].plain == "1/2 ✗"
