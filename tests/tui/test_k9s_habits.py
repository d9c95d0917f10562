"""k9s habits (issue 13 item 15): toasts never cover a confirmation's buttons, shift+letter sorts by that
column, and the panes use the room of a large terminal."""

from __future__ import annotations

from textual.widgets import Button
from textual.widgets._toast import Toast

from kerub_tui.screens.confirm import ConfirmScreen

from .fleet_data import WEB1
from .helpers import running, settle


async def test_toasts_never_cover_a_confirmations_buttons(tmp_path):
    async with running(tmp_path, (80, 24), notifications=True) as (_controller, app, pilot):
        await pilot.press("2", "ctrl+d")
        assert isinstance(app.screen, ConfirmScreen)
        for n in range(4):  # an incident: several things to say at once, long ones
            app.notify(f"host h{n} lost power: its guests are lost and a proposal is on its way " * 2,
                       title="incident", timeout=60)
        await settle(app, pilot)
        screen = app.screen
        shown = {screen.get_widget_at(x, y)[0] for x in range(80) for y in range(24)}
        assert any(isinstance(widget, Toast) or isinstance(widget.parent, Toast) for widget in shown)  # shown...
        for button in screen.query(Button):  # ... but not over an answer: each cell of a button is the button's
            region = button.region
            for x in range(region.x, region.right):
                for y in range(region.y, region.bottom):
                    assert screen.get_widget_at(x, y)[0] is button, (x, y, button.id)


async def test_shift_and_a_letter_sorts_by_the_column_of_that_letter_unless_the_key_is_an_action(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        hosts = app.screen.table("hosts")
        await pilot.press("A")  # Address
        assert hosts.sort_column == "address" and not hosts.sort_reverse
        await pilot.press("A")  # again: the other way
        assert hosts.sort_column == "address" and hosts.sort_reverse
        await pilot.press("M")
        assert hosts.sort_column == "mem"
        await pilot.press("E")  # E is Evacuate on the hosts pane: the action, not a sort by a column
        assert hosts.sort_column == "mem"
        await pilot.press("escape")
        await pilot.press("2", "H")
        assert app.screen.table("vms").sort_column == "host"


async def test_at_200x60_every_column_of_every_pane_is_in_view(tmp_path):
    async with running(tmp_path, (200, 60)) as (_controller, app, _pilot):
        screen = app.screen
        assert screen.has_class("-wide")
        for name in ("hosts", "vms", "disks"):
            table = screen.table(name)
            assert table.display and table.region.width
            assert table.max_scroll_x == 0, (name, table.virtual_size.width, table.scrollable_content_region.width)


async def test_a_palette_command_of_a_hidden_pane_shows_that_pane_before_it_acts(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        screen = app.screen
        assert screen.active_pane == "hosts" and not screen.table("vms").display  # 80x24: one pane at a time
        commands = {c.title: c for c in app.get_system_commands(screen)}
        await commands["VMs pane: Delete"].callback()
        await settle(app, pilot)
        # The admin sees what it acts on: the VMs pane is shown, and the question names its VM under the cursor.
        assert isinstance(app.screen, ConfirmScreen) and "Delete 1 VM(s)?" in app.screen.title_text
        assert screen.active_pane == "vms" and screen.table("vms").display
        await pilot.press("n")


async def test_without_a_display_the_console_key_points_at_the_serial_consoles_key(tmp_path, monkeypatch):
    from kerub_tui.api import ActionError

    async with running(tmp_path, (120, 40), notifications=True) as (controller, app, pilot):
        async def no_viewer(_vm_id):
            raise ActionError("no display here (DISPLAY is not set). From a workstation with a viewer, forward ...; "
                              "without a display, kerub-tui console web1 --serial shows its serial console in this "
                              "terminal")

        monkeypatch.setattr(controller, "open_console", no_viewer)
        await pilot.press("2")
        table = app.screen.table("vms")
        table.move_cursor(row=table.get_row_index(WEB1))
        await pilot.press("c")
        await settle(app, pilot)
        said = [n.message for n in app._notifications][-1]
        assert said.endswith("without a display, t opens its serial console here"), said
