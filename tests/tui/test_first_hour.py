"""Defects a first hour with the console finds (issue 13), each with the test that failed before its fix."""

from __future__ import annotations

from .helpers import running, settle


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
