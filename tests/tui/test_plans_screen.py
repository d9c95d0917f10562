"""The plans screen as an admin uses it during an incident (issue 13 item 14): esc steps back out of a plan's
detail, j/k scroll it, finished steps show how long they took, and a new proposal is hard to miss (a toast
naming it and one key that opens it)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from textual.widgets import Static

from kerub_tui.app import KerubApp
from kerub_tui.controller import Controller
from kerub_tui.core.models import Plan, PlannedStep, PlanStatus, StepOutcome, StepRecord, kind_text
from kerub_tui.core.sizes import format_size
from kerub_tui.screens.main import MainScreen
from kerub_tui.screens.plans import ProposalsScreen, took
from kerub_tui.sim import Timing
from tests.sim._support import CEILING, until

from .fleet_data import H1, P_DONE, P_KSM, T0, ident
from .helpers import plain, running, settle

GIB = 1 << 30


async def test_esc_in_a_plans_detail_goes_back_to_the_list_not_out_of_the_screen(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("colon", *"plans", "enter", "enter")
        screen = app.screen
        assert isinstance(screen, ProposalsScreen) and app.focused is screen.query_one("#plan-detail")
        await pilot.press("escape")
        assert app.screen is screen and app.focused is screen.query_one("#plans")
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_j_and_k_scroll_a_plans_detail(tmp_path):
    async with running(tmp_path, (80, 24)) as (_controller, app, pilot):
        await pilot.press("colon", *"plans", "enter", "enter")
        detail = app.screen.query_one("#plan-detail")
        assert detail.max_scroll_y > 2  # at 80x24 the plan is longer than its panel
        await pilot.press("j", "j")
        assert detail.scroll_y == 2
        await pilot.press("k")
        assert detail.scroll_y == 1
        await pilot.press("G")
        assert detail.scroll_y == detail.max_scroll_y
        await pilot.press("g")
        assert detail.scroll_y == 0


async def test_finished_steps_show_how_long_they_took(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        plan = controller.db.get(Plan, P_DONE)
        controller.db.put(plan.evolve(records=[StepRecord(
            step_index=0, host_id=plan.steps[0].host_id, outcome=StepOutcome.done,
            started_at=T0, ended_at=T0 + dt.timedelta(seconds=83))]))
        await settle(app, pilot)
        await pilot.press("colon", *"plans", "enter")
        table = app.screen.query_one("#plans")
        table.move_cursor(row=table.get_row_index(P_DONE))
        await pilot.pause()
        text = plain(app.screen.query_one("#plan-text", Static))
        assert "took 1m 23s" in text and "Took 1m 23s in all" in text
        table.move_cursor(row=table.get_row_index(P_KSM))  # running: its finished step took 1s, the other runs
        await pilot.pause()
        text = plain(app.screen.query_one("#plan-text", Static))
        assert "✓ 1. enable KSM on h2" in text and "took 1s" in text
        assert "running since" in text


async def test_a_running_copy_shows_how_far_it_got(tmp_path):
    async with running(tmp_path, (120, 40)) as (controller, app, pilot):
        await pilot.press("colon", *"plans", "enter")
        table = app.screen.query_one("#plans")
        table.move_cursor(row=table.get_row_index(P_KSM))
        plan = controller.db.get(Plan, P_KSM)
        step = plan.records[1]
        controller.db.put(plan.evolve(records=[plan.records[0], step.evolve(progress_done=3 << 29,
                                                                            progress_total=4 << 30)]))
        await settle(app, pilot)
        assert "37% (1.5G of 4.0G)" in plain(app.screen.query_one("#plan-text", Static))
        # the list says it too: steps done, one running, how far it got
        assert table.cells_of(P_KSM)[3].plain == "1/2 ⟳ 37%"


class HeldMigrations:
    """The controller's host operations, passed through, except that a migration's answer is held until
    ``release`` is set: the migration is done on the (simulated) hosts, its step still runs."""

    def __init__(self, ops: Any) -> None:
        self.ops = ops
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def run(self, *args: Any, **kwargs: Any) -> Any:
        return await self.ops.run(*args, **kwargs)

    async def wake(self, host_id: str) -> Any:
        return await self.ops.wake(host_id)

    async def libvirt(self, host_id: str, op: str, **kwargs: Any) -> Any:
        result = await self.ops.libvirt(host_id, op, **kwargs)
        if op == "migrate":
            self.holding.set()
            await self.release.wait()
        return result


def proposals(controller: Controller) -> list[Plan]:
    return [p for p in controller.db.list(Plan) if p.status is PlanStatus.proposed]


async def test_a_running_migration_shows_how_far_it_got(tmp_path):
    """Issue 13 item 14: a live migration under way shows its progress as its host reports it (here the
    simulated hosts', through the executor as a real host's job statistics go), like a copy's."""
    controller = Controller(tmp_path / "data", sim_timing=Timing(scale=0.0, connect=0.0, boot=0.0), sim_seed=7)
    await controller.start()
    try:
        old = (await controller.add_simulated_host("old", "r640")).id
        await controller.hosts.wait_up(old, timeout=CEILING)
        vm = await controller.create_vm("web", cpus=2, memory_min=4 * GIB, expectations=["availability:up@dealbreaker"])
        [start] = await until(lambda: proposals(controller), "the start proposal")
        await controller.decide_plan(start.id, True)
        await until(lambda: controller.db.get(Plan, start.id).status is PlanStatus.done, "web started")
        new = (await controller.add_simulated_host("new", "r640")).id
        await controller.hosts.wait_up(new, timeout=CEILING)
        await controller.replanner.wait_idle()
        memory = controller.simulator.machine(old).domains[vm.id].memory
        held = HeldMigrations(controller.executor.ops)
        controller.executor.ops = held
        await controller.evacuate_host(old)
        [evacuation] = await until(lambda: proposals(controller), "the evacuation proposal")
    except BaseException:
        await controller.stop()
        raise
    app = KerubApp(controller)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        await pilot.press("colon", *"plans", "enter")
        table = app.screen.query_one("#plans")
        await controller.decide_plan(evacuation.id, True)
        await until(held.holding.is_set, "the migration done on the hosts")
        await settle(app, pilot)
        table.move_cursor(row=table.get_row_index(evacuation.id))
        await settle(app, pilot)
        text = plain(app.screen.query_one("#plan-text", Static))
        [line] = [t for t in text.splitlines() if "live-migrate web from old to new" in t]
        assert line.lstrip().startswith("⟳ 1.") and f"100% ({format_size(memory)} of {format_size(memory)})" in line
        assert table.cells_of(evacuation.id)[3].plain == f"0/{len(evacuation.steps)} ⟳ 100%"
        held.release.set()
        await until(lambda: controller.db.get(Plan, evacuation.id).status is PlanStatus.done, "the evacuation done")
        await settle(app, pilot)
        text = plain(app.screen.query_one("#plan-text", Static))
        [line] = [t for t in text.splitlines() if "live-migrate web from old to new" in t]
        assert line.lstrip().startswith("✓ 1.") and "took" in line and "%" not in line


async def test_a_plans_detail_says_what_its_kind_is_for(tmp_path):
    async with running(tmp_path, (120, 40)) as (_controller, app, pilot):
        await pilot.press("colon", *"plans", "enter")
        text = plain(app.screen.query_one("#plan-text", Static))
        assert f"kind start ({kind_text('start')})" in text


def test_took():
    assert took(StepRecord(step_index=0, started_at=T0, ended_at=T0 + dt.timedelta(seconds=3725))) == "1h 2m 5s"
    assert took(StepRecord(step_index=0, started_at=T0, ended_at=T0)) == "0s"
    assert took(StepRecord(step_index=0, started_at=T0)) is None


async def test_a_new_proposal_is_announced_and_one_key_opens_it(tmp_path):
    async with running(tmp_path, (80, 24)) as (controller, app, pilot):
        new = Plan(id=ident("plan0009", 9), plan_kind="restart", created_at=T0 + dt.timedelta(hours=1),
                   trigger=["h1: host down: 1 VM lost"],
                   steps=[PlannedStep(type="vm-start", description="start web1 on h2", host_id=H1)])
        controller.db.put(new)
        await settle(app, pilot)
        toasts = [n.message for n in app._notifications]
        assert any("New proposal: h1: host down: 1 VM lost" in t and app.key_for("app.newest_proposal") in t
                   for t in toasts), toasts
        await pilot.press(app.key_for("app.newest_proposal"))
        screen = app.screen
        assert isinstance(screen, ProposalsScreen)
        assert screen.query_one("#plans").cursor_id == new.id
        # a kind the planner makes, said in words (a kind it does not know would be said as itself)
        assert "kind restart (restart VMs whose host failed)" in plain(screen.query_one("#plan-text", Static))
        # An update of a proposal already seen says nothing new.
        count = len(list(app._notifications))
        controller.db.put(new.evolve(status=PlanStatus.rejected))
        await settle(app, pilot)
        assert len(list(app._notifications)) == count
