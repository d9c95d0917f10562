"""Issue 13's done-when, counted from launching the console: (c) evacuating a host and (e) seeing what changed
in the last hour each take at most 6 keys plus a name. The keys are the README's (Keys of the console)."""

from __future__ import annotations

import datetime as dt

from kerub_tui.core.models import AuditEntry, Event, Host
from kerub_tui.screens.confirm import ConfirmScreen
from kerub_tui.screens.logs import AuditScreen, EventsScreen

from .fleet_data import H1
from .helpers import running, settle

KEY_LIMIT = 6


async def press_counted(pilot, keys: list[str], name: str = "") -> int:
    """Press ``keys`` (a NAME item types ``name``); the count of keys, the name's letters left out."""
    for key in keys:
        if key == "NAME":
            await pilot.press(*name)
        else:
            await pilot.press(key)
    return sum(1 for key in keys if key != "NAME")


async def test_c_evacuating_a_host_takes_at_most_6_keys_plus_its_name(tmp_path):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        keys = ["slash", "NAME", "enter", "E"]
        count = await press_counted(pilot, keys, "h1")
        assert isinstance(app.screen, ConfirmScreen) and "Evacuate 1 host(s)?" in app.screen.title_text
        count += await press_counted(pilot, ["y"])
        await settle(app, pilot)
        assert controller.get(Host, H1).recycling
        assert count <= KEY_LIMIT, count


async def test_e_what_changed_in_the_last_hour_takes_at_most_6_keys(tmp_path):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        now = dt.datetime.now(dt.UTC)
        recent = AuditEntry(time=now - dt.timedelta(minutes=20), os_user="admin", action="vm update",
                            target="web1", outcome="memory_max: 2.0G → 4.0G")
        controller.db.put(recent)
        controller.db.put(Event(time=now - dt.timedelta(minutes=5), type="host-down", message="h3 went down"))
        await settle(app, pilot)
        count = await press_counted(pilot, ["colon", "a", "enter", "t"])
        assert isinstance(app.screen, AuditScreen)
        table = app.screen.query_one("#audit")
        assert table.shown_ids() == [recent.id]  # the fleet's own entries are from 2024: outside the hour
        assert "last hour" in str(table.border_title)
        assert count <= KEY_LIMIT, count
        # The same window on the events, and t again widens it.
        await pilot.press("colon", "e", "enter", "t")
        events = app.screen
        assert isinstance(events, EventsScreen)
        assert [e.message for e in map(lambda i: controller.get(Event, i), events.query_one("#events").shown_ids())] \
            == ["h3 went down"]
        await pilot.press("t", "t")  # last day, then everything
        assert len(events.query_one("#events").shown_ids()) > 1
