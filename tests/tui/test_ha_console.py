"""High availability in the console (issue 16 item 2): ctrl+k on a host that went away fences it after a
confirmation that says what it means; the audit log records who did it."""

from __future__ import annotations

from kerub_tui.core.models import AuditEntry, HostDynamic
from kerub_tui.screens.confirm import ConfirmScreen

from .fleet_data import H1, H3
from .helpers import running, settle


async def test_ctrl_k_confirms_an_unreachable_host_off_and_the_audit_says_who(tmp_path) -> None:
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("slash", *"h3", "enter")
        await settle(app, pilot)
        await pilot.press("ctrl+k")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert app.screen.title_text == "Confirm h3 is off?"
        impact = "\n".join(controller.impact("fence host", [H3]))
        assert "h3 is unreachable: kerub-tui cannot see whether it still runs any guest" in impact
        assert "It has no IPMI: say yes only if you made sure it is off" in impact
        await pilot.press("y")
        await settle(app, pilot)
        fence = controller.get(HostDynamic, H3).fence
        assert fence is not None and fence.method == "admin" and fence.by == controller.actor
        audit = [a for a in controller.db.list(AuditEntry) if a.action == "host fence"]
        assert [(a.target, a.os_user) for a in audit] == [("h3", controller.actor)]
        hosts = app.screen.query_one("#hosts")
        assert "fenced" in hosts.cells_of(H3)[2].plain, hosts.cells_of(H3)[2].plain


async def test_ctrl_k_on_a_host_that_is_up_fences_nothing(tmp_path) -> None:
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        await pilot.press("slash", *"h1", "enter")
        await settle(app, pilot)
        await pilot.press("ctrl+k")
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen)
        assert "h1 is up: a host that answers is never fenced (refused)" in controller.impact("fence host", [H1])
        await pilot.press("y")
        await settle(app, pilot)
        assert controller.get(HostDynamic, H1).fence is None
        assert not [a for a in controller.db.list(AuditEntry) if a.action == "host fence"]


async def test_the_ha_policy_is_set_in_settings(tmp_path) -> None:
    from textual.widgets import Input, Switch

    from kerub_tui.core.models import Settings
    from kerub_tui.screens.forms import FormField

    async with running(tmp_path, (120, 60), empty=True) as (controller, app, pilot):
        await pilot.press("colon", *"settings", "enter")
        screen = app.screen
        age = screen.query_one("#copy_max_age_minutes", Input)
        assert age.value == "0" and screen.query_one("#restart_from_stale_copies", Switch).value is False
        age.value = "-5"
        age.focus()
        await pilot.pause()
        await pilot.press("ctrl+s")  # the panel the focus is in
        await settle(app, pilot)
        assert screen.query_one("#field-copy_max_age_minutes", FormField).error
        age.value = "45"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        settings = controller.db.get(Settings, "settings")
        assert settings.ha.copy_max_age_minutes == 45 and settings.ha.restart_from_stale_copies is False
        assert settings.history == Settings().history  # the other panels untouched
