"""The console and the history (issue 15 item 4): the retention is set in :settings, the log views read
the history (entries appended while they are open included)."""

from __future__ import annotations

import datetime as dt

from textual.widgets import Input

from kerub_tui.core.models import AuditEntry, Event, Settings, utcnow
from kerub_tui.screens.forms import FormField
from kerub_tui.screens.live import LiveTable

from .helpers import running, settle


async def test_the_history_retention_is_set_in_settings(tmp_path):
    async with running(tmp_path, (120, 60), empty=True) as (controller, app, pilot):
        old = controller.db.put(AuditEntry(time=utcnow() - dt.timedelta(days=40), action="vm start", target="x"))
        await pilot.press("colon", *"settings", "enter")
        screen = app.screen
        assert screen.query_one("#audit_days", Input).value == "365"
        assert screen.query_one("#event_days", Input).value == "90"
        screen.query_one("#audit_days", Input).value = "none"
        screen.query_one("#audit_days", Input).focus()
        await pilot.pause()
        await pilot.press("ctrl+s")  # the panel the focus is in
        assert "not a whole number" in (screen.query_one("#field-audit_days", FormField).error or "")
        screen.query_one("#audit_days", Input).value = "30"
        screen.query_one("#event_days", Input).value = "0"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert "at least 1" in (screen.query_one("#field-event_days", FormField).error or "")
        screen.query_one("#event_days", Input).value = "7"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        settings = controller.db.get(Settings, "settings")
        assert settings.history.audit_days == 30 and settings.history.event_days == 7
        assert controller.db.get(AuditEntry, old.id) is None  # older than 30 days: gone at once
        assert settings.optimisation == Settings().optimisation  # the other panel untouched


async def test_the_log_views_read_the_history_live(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("colon", *"events", "enter")
        table = app.screen.query_one(LiveTable)
        before = len(table.shown_ids())
        assert before == controller.db.count(Event) > 0
        event = controller.db.put(Event(type="host-up", message="appended while shown"))
        await settle(app, pilot)
        assert event.id in table.shown_ids() and len(table.shown_ids()) == before + 1
        assert "event" not in controller.db._docs  # read from the history, not held by the store
