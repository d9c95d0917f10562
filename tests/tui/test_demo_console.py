"""The console on the demo (``kerub-tui --demo``): simulated hosts are labelled as such, the demo says
so, the waiting proposal and the tour's power loss reach the screens.

The demo dir is seeded once per session at timing scale 0 (tests/tui/demo_data.py); the tour fails
its host at once instead of after 25 seconds. Waits are for what the screen shows, with a ceiling.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from textual.widgets import Static
from textual.widgets._toast import Toast

from kerub_tui.app import KerubApp
from kerub_tui.core.models import Host, Plan, PlanStatus
from kerub_tui.screens.hosts import HostDetailScreen
from kerub_tui.screens.main import MainScreen, StatusBar
from kerub_tui.sim.demo import Tour

from .demo_data import demo_controller, seeded_copy
from .helpers import plain, settle

CEILING = 60.0


def status_text(app: KerubApp) -> str:
    return str(app.screen.query_one(StatusBar).render())


def toasts(app: KerubApp) -> str:
    return "\n".join(str(toast.render()) for toast in app.screen.query(Toast))


async def shown(app: KerubApp, pilot, predicate: Callable[[], object], what: str) -> object:
    """Let the console follow its change feed until ``predicate()`` holds."""
    try:
        async with asyncio.timeout(CEILING):
            while True:
                await settle(app, pilot)
                value = predicate()
                if value:
                    return value
                await pilot.pause(0.05)
    except TimeoutError:
        raise AssertionError(f"never shown: {what} (status: {status_text(app)})") from None


async def test_the_demo_console_labels_its_hosts_and_shows_the_tour(tmp_path_factory, tmp_path) -> None:
    controller = demo_controller(seeded_copy(tmp_path_factory, tmp_path / "demo"))
    tour = Tour(controller, power_loss_after=0.0, power_back_after=CEILING * 10)
    app = KerubApp(controller, demo=True, tour=tour)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(app, pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        assert "demo: simulated fleet" in status_text(app)
        assert app.sub_title.startswith("demo: simulated fleet")
        assert "A simulated fleet: no real host is contacted" in toasts(app)
        # Every host is simulated and says so; `/sim` finds them by that label.
        hosts = screen.table("hosts")
        labels = [hosts.cells_of(host_id)[0].plain for host_id in hosts.shown_ids()]
        assert len(labels) == 12 and all(label.endswith(" sim") for label in labels), labels
        # The seed left one proposal (the old server is past its end of life): the status bar says so (with
        # the restart the tour's power loss brings, once it came: two proposals, each of its own).
        await shown(app, pilot, lambda: " proposal" in status_text(app), "the waiting proposal")
        # The tour cuts one host's power: it goes down, the console says what happened, and the
        # planner proposes restarting its VMs: a restart plan of its own, apart from the evacuation
        # (independent problems are independent proposals, issue 13 item 6).
        victim = await shown(app, pilot, lambda: next((s.host for s in tour.steps if s.host), None), "the power loss")
        # said in the same call that records the step; its toast is mounted on a later refresh
        await shown(app, pilot, lambda: f"{victim} lost power" in toasts(app), "the power loss notification")
        host = controller.db.find_by_name(Host, victim)

        def restart_proposed() -> bool:
            return any(p.status is PlanStatus.proposed and any(f"its host {victim} is down" in t for t in p.trigger)
                       for p in controller.db.list(Plan))

        await shown(app, pilot, restart_proposed, "a proposal restarting the lost VMs")
        open_kinds = sorted(p.plan_kind for p in controller.db.list(Plan) if p.status is PlanStatus.proposed)
        assert "restart" in open_kinds and all("+" not in kind for kind in open_kinds), open_kinds
        assert f"{len(open_kinds)} proposal" in status_text(app)
        assert "hosts 11/12 up" in status_text(app)
        assert "down" in hosts.cells_of(host.id)[2].plain
        # Its VMs are lost, not up with their last memory figure, and it runs none (issue 13 item 4).
        lost = sorted(controller.db.vms_on_host(host.id))
        assert lost and all(controller.vm_state(vm_id).status == "lost" for vm_id in lost)
        assert hosts.cells_of(host.id)[5].plain == f"0 ({len(lost)} lost)"
        await pilot.press("2")
        await settle(app, pilot)
        vms = screen.table("vms")
        for vm_id in lost:
            cells = vms.cells_of(vm_id)
            assert cells[1].plain == "lost" and cells[4].plain.startswith("-/"), [c.plain for c in cells]
        vms.move_cursor(row=vms.get_row_index(lost[0]))
        await pilot.press("enter")
        await settle(app, pilot)
        summary = plain(app.screen.query_one("#vm-summary", Static))
        assert f"lost on {victim}" in summary and f"its host {victim} is down" in summary, summary
        assert "memory used" not in summary  # no figure passes for a live one
        assert "(restart) awaits approval" in summary  # the plan that brings it back, one key away
        await pilot.press("escape", "1")
        await settle(app, pilot)
        # The host's own screen says it is simulated, in its title and with its capabilities.
        hosts.move_cursor(row=hosts.get_row_index(host.id))
        await pilot.press("enter")
        await settle(app, pilot)
        detail = app.screen
        assert isinstance(detail, HostDetailScreen)
        assert "simulated host" in plain(detail.query_one("#host-title", Static))
        assert "kerub-tui's simulator answers for this machine" in plain(detail.query_one("#host-capabilities",
                                                                                             Static))


async def test_a_console_not_in_demo_mode_counts_its_simulated_hosts(tmp_path_factory, tmp_path) -> None:
    controller = demo_controller(seeded_copy(tmp_path_factory, tmp_path / "demo"))
    await controller.start(connect_hosts=False)
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:
        await settle(app, pilot)
        status = status_text(app)
        assert "12 simulated" in status and "demo:" not in status
        assert not app.screen.query(Toast)
