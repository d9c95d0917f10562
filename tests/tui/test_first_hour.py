"""Defects a first hour with the console finds (issue 13), each with the test that failed before its fix."""

from __future__ import annotations

from textual.widgets import Static

from kerub_tui.core.models import VirtualMachine, VirtualStorageDevice
from kerub_tui.screens.confirm import ConfirmScreen

from .fleet_data import D_DB1, D_SHARED, DB1, WEB1, WEB2
from .helpers import plain, running, settle


def in_view(screen, selector: str) -> bool:
    """Whether the widget's top line shows inside the host detail's scrolling body."""
    body = screen.query_one("#host-body")
    widget = screen.query_one(selector)
    return body.region.y <= widget.region.y < body.region.bottom


async def test_host_detail_at_80x24_opens_at_the_live_panel_and_keys_reach_it(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("enter")  # h1
        await settle(app, pilot)
        screen = app.screen
        assert type(screen).__name__ == "HostDetailScreen"
        assert in_view(screen, "#host-live")
        # tab reaches the VM table (scrolled into view), and shift+tab, g come back up to the Live panel.
        await pilot.press("tab")
        await settle(app, pilot)
        assert app.focused is screen.query_one("#host-vms") and in_view(screen, "#host-vms")
        assert not in_view(screen, "#host-live")
        await pilot.press("shift+tab", "g")
        await settle(app, pilot)
        assert in_view(screen, "#host-live")
        await pilot.press("j")
        await settle(app, pilot)
        assert screen.query_one("#host-body").scroll_y == 1


async def test_host_detail_with_room_focuses_its_vm_table(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("enter")
        await settle(app, pilot)
        screen = app.screen
        assert in_view(screen, "#host-live") and app.focused is screen.query_one("#host-vms")


def wanted_up(controller, vm_id: str) -> list[bool]:
    return [e.up for e in controller.db.get(VirtualMachine, vm_id).expectations if e.type == "availability"]


async def test_bulk_actions_act_on_the_marks_the_filter_shows_and_say_how_many_it_hides(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2", "ctrl+a")  # db1, web1, web2 marked
        vms = app.screen.table("vms")
        assert vms.marked == {DB1, WEB1, WEB2}
        await pilot.press("slash", *"web1", "enter")
        assert vms.shown_ids() == [WEB1]
        assert "(2 hidden)" in vms.border_title
        await pilot.press("S")
        assert isinstance(app.screen, ConfirmScreen)
        assert "Stop 1 VM(s)?" in plain(app.screen.query_one("#confirm-title", Static))
        impact = plain(app.screen.query_one("#confirm-impact", Static))
        assert "2 marked VM(s) hidden by the filter: left alone" in impact
        await pilot.press("y")
        await settle(app, pilot)
        assert wanted_up(controller, WEB1) == [False]
        assert wanted_up(controller, WEB2) == [True]  # marked, hidden: untouched
        assert vms.marked == {DB1, WEB1, WEB2}  # kept, for when the filter goes
        # Without a filter every mark shows, and nothing is said about hidden ones.
        await pilot.press("escape", "S")
        assert "Stop 3 VM(s)?" in plain(app.screen.query_one("#confirm-title", Static))
        assert "hidden" not in plain(app.screen.query_one("#confirm-impact", Static))
        await pilot.press("n")


async def test_vm_delete_confirmation_says_what_happens_to_its_disks(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("2")  # db1 first: down, with its disks db1-data and shared-data
        assert app.screen.table("vms").cursor_id == DB1
        await pilot.press("ctrl+d")
        assert isinstance(app.screen, ConfirmScreen)
        impact = plain(app.screen.query_one("#confirm-impact", Static))
        assert "db1: 4 vCPU, 8.0G; its disk(s) db1-data, shared-data kept, with their data" in impact
        await pilot.press("y")
        await settle(app, pilot)
        assert controller.db.get(VirtualMachine, DB1) is None
        assert controller.db.get(VirtualStorageDevice, D_DB1) is not None
        assert controller.db.get(VirtualStorageDevice, D_SHARED) is not None


def button_text(screen, selector: str) -> str:
    return str(screen.query_one(selector).label)


async def test_ctrl_c_quits_and_asks_first_when_an_edit_would_be_lost(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("2", "n")  # the VM editor, its name field focused
        assert type(app.screen).__name__ == "VmEditorScreen"
        await settle(app, pilot)
        await pilot.press(*"app1")
        await pilot.press("ctrl+c")  # from inside a field
        assert isinstance(app.screen, ConfirmScreen) and app.is_running
        assert "Quit kerub-tui?" in plain(app.screen.query_one("#confirm-title", Static))
        impact = plain(app.screen.query_one("#confirm-impact", Static))
        assert "the VM editor: changes not saved" in impact
        assert "1 running plan(s): interrupted" in impact  # the fixture fleet's plan being carried out
        assert button_text(app.screen, "#confirm-no") == "No [n]"
        assert button_text(app.screen, "#confirm-yes") == "Quit [y]"
        await pilot.press("n")
        assert type(app.screen).__name__ == "VmEditorScreen" and app.is_running
        assert app.screen.query_one("#name").value == "app1"
        await pilot.press("ctrl+c", "ctrl+c")  # asked, and said again: quits
        await pilot.pause()
        assert app._exit


async def test_ctrl_c_quits_at_once_when_nothing_would_be_lost(tmp_path):
    async with running(tmp_path, (80, 24), empty=True) as (_controller, app, pilot):  # no plan running
        await pilot.press("2", "n")  # an editor opened, nothing typed
        await settle(app, pilot)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert app._exit


async def test_colon_quit_asks_too(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("colon", *"quit", "enter")
        assert isinstance(app.screen, ConfirmScreen)  # the fixture fleet's running plan would be cut
        await pilot.press("y")
        await pilot.pause()
        assert app._exit
