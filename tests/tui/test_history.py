"""The console's audit view says what an update changed, field by field (issue 13 item 11)."""

from __future__ import annotations

from textual.widgets import Static

from kerub_tui.screens.live import LiveTable

from .fleet_data import WEB1
from .helpers import plain, running, settle


async def test_the_audit_view_shows_what_an_update_changed(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await controller.update_vm(WEB1, cpus=4, memory_max=4 << 30)  # what the VM editor's save does
        await pilot.press("colon", *"audit", "enter")
        await settle(app, pilot)
        table = app.screen.query_one(LiveTable)
        await pilot.press("slash", *"vm update", "enter")
        await settle(app, pilot)
        [entry] = table.shown_ids()
        row = " ".join(cell.plain for cell in table.get_row(entry))
        assert "vm update" in row and "web1" in row and "cpus: 2 → 4; memory_max: 2.0G → 4.0G" in row
        detail = plain(app.screen.query_one("#audit-detail", Static))
        assert "vm update web1 → cpus: 2 → 4; memory_max: 2.0G → 4.0G" in detail


async def test_the_vms_pane_reaches_the_serial_console_through_the_typed_actions(tmp_path):
    """The VMs pane's keys act through actions_of(table) (no untyped reach into the app): t on a VM that
    is down says why its serial console does not open."""
    from .fleet_data import DB1

    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("2")
        table = app.screen.query_one("#vms", LiveTable)
        table.move_cursor(row=table.get_row_index(DB1))
        await pilot.press("t")
        await settle(app, pilot)
        assert any("VM db1 is not running: its serial console opens once it is up" in n.message
                   for n in app._notifications)
