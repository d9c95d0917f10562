"""A VM's status in the console says what is known (issue 13 item 4): waiting for approval, can't be
placed with the reason one key away (enter), and a rejected plan said in VM detail with how to ask
again, which `s` does (item 6). The planner's pass is run by hand: no host of the fixture is real."""

from __future__ import annotations

from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.core.models import Plan, PlanStatus, VirtualMachine
from kerub_tui.screens.main import MainScreen
from kerub_tui.screens.vms import VmDetailScreen

from ..unit.planner.fleet import from_tables
from .helpers import plain, settle, started_controller


def proposed(controller) -> list[Plan]:
    return [p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed]


async def test_waiting_unplaced_rejected_and_asked_again(tmp_path) -> None:
    controller = await started_controller(tmp_path / "data", empty=True)
    controller.db.put_many(from_tables(hosts="""
        name memory
        h1   16G
    """, vms="""
        name memory expect
        app  2G     availability:up@dealbreaker
        huge 512G   availability:up@dealbreaker
    """).documents())
    [plan] = controller.replan_once()  # the start of app; huge fits no host
    app_id = controller.find_by_name(VirtualMachine, "app").id
    huge_id = controller.find_by_name(VirtualMachine, "huge").id
    app = KerubApp(controller)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await pilot.press("2")
        await settle(app, pilot)
        vms = screen.table("vms")
        assert vms.cells_of(app_id)[1].plain == "awaits approval"
        assert vms.cells_of(huge_id)[1].plain == "can't place"
        # Why it cannot be placed: one key away.
        vms.move_cursor(row=vms.get_row_index(huge_id))
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, VmDetailScreen)
        summary = plain(app.screen.query_one("#vm-summary", Static))
        assert "can't place" in summary and "no host fits: h1: 15." in summary, summary
        await pilot.press("escape")
        await settle(app, pilot)
        # The admin rejects app's start: its detail says so, and how to ask again.
        await controller.decide_plan(plan.id, False)
        vms.move_cursor(row=vms.get_row_index(app_id))
        await pilot.press("enter")
        await settle(app, pilot)
        detail = app.screen
        assert isinstance(detail, VmDetailScreen)
        summary = plain(detail.query_one("#vm-summary", Static))
        assert f"{plan.id[:8]} (start) was rejected by" in summary and "s (or vm start) asks for it again" in summary
        assert vms.cells_of(app_id)[1].plain == "down"
        assert controller.replan_once() == [] and proposed(controller) == []  # rejected: not proposed again
        # s once more: asked again, proposed again.
        await pilot.press("s")
        await settle(app, pilot)
        [again] = controller.replan_once()
        assert again.id != plan.id and [s.description for s in again.steps] == ["start app on h1"]
        await settle(app, pilot)
        summary = plain(detail.query_one("#vm-summary", Static))
        assert f"{again.id[:8]} (start) awaits approval" in summary and "rejected" not in summary, summary
        assert vms.cells_of(app_id)[1].plain == "awaits approval"
