"""Proposals: each plan with its trigger, its steps in order (host, effect, cost, exact commands) and,
while it runs, each step's progress. Approve, reject, or always approve plans of that kind."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Static

from ..core.bus import Change
from ..core.models import Cost, Plan, PlanStatus, StepOutcome, StepRecord, kind_text
from ..core.sizes import format_size
from ..core.text import printable
from .base import DetailBody, KerubScreen
from .format import SHOW_LIMIT, STATUS_STYLES, markup_safe, timestamp
from .live import LiveTable
from .rows import PlanRows

STEP_MARKS = {
    StepOutcome.done: ("✓", "green"),
    StepOutcome.running: ("⟳", "bold cyan"),
    StepOutcome.failed: ("✗", "bold red"),
    StepOutcome.interrupted: ("!", "red"),
}


def cost_text(cost: Cost) -> str:
    parts = [f"{cost.time_seconds:.0f}s"]
    if cost.cpu_seconds:
        parts.append(f"CPU {cost.cpu_seconds:.1f}s")
    if cost.io_bytes:
        parts.append(f"IO {format_size(cost.io_bytes)}")
    if cost.network_bytes:
        parts.append(f"net {format_size(cost.network_bytes)}")
    if cost.risk:
        parts.append(f"risk {cost.risk:.2f}")
    return ", ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{hours}h"] if hours else []
    parts += [f"{minutes}m"] if hours or minutes else []
    return " ".join([*parts, f"{seconds}s"])


def took(record: StepRecord) -> str | None:
    """How long a finished step took ("1m 23s"); None while it runs or when its times are not known."""
    if record.started_at is None or record.ended_at is None:
        return None
    return _duration((record.ended_at - record.started_at).total_seconds())


def _plan_took(plan: Plan) -> str | None:
    """A finished plan's whole time, from its first step's start to its last step's end."""
    if plan.status not in (PlanStatus.done, PlanStatus.failed, PlanStatus.interrupted):
        return None
    starts = [r.started_at for r in plan.records if r.started_at is not None]
    ends = [r.ended_at for r in plan.records if r.ended_at is not None]
    if not starts or not ends:
        return None
    return _duration((max(ends) - min(starts)).total_seconds())


def plan_detail(plan: Plan, host_name: Any) -> Text:
    """The whole plan as text. Everything in it that came from a document or a host (descriptions,
    commands, output tails, errors) is data: control characters visible, never markup."""

    def shown(text: object, limit: int = SHOW_LIMIT) -> str:
        return printable(text, newlines=True, limit=limit)

    head = Text()
    head.append(f"plan {plan.id}", style="bold")
    head.append("  ")
    head.append(plan.status.value, style=STATUS_STYLES.get(plan.status.value, ""))
    head.append(f"  kind {shown(plan.plan_kind, 100)} ({shown(kind_text(plan.plan_kind), 200)})"
                f"  created {timestamp(plan.created_at)}")
    if plan.decided_by:
        head.append(f"  decided by {shown(plan.decided_by, 100)} {timestamp(plan.decided_at)}", style="dim")
    if plan.status_reason:
        head.append(f"\n{shown(plan.status_reason)}", style="italic")
    parts: list[Any] = [head]
    why = Text()
    why.append("\n\nBecause\n", style="bold")
    for trigger in plan.trigger or ["(no trigger recorded)"]:
        why.append(f"  • {shown(trigger)}\n")
    parts.append(why)
    records: dict[int, StepRecord] = {r.step_index: r for r in plan.records}
    steps = Text()
    steps.append("\nSteps, in order\n", style="bold")
    for index, step in enumerate(plan.steps):
        record = records.get(index)
        if record is not None and record.outcome in STEP_MARKS:
            mark, style = STEP_MARKS[record.outcome]
        elif plan.status in (PlanStatus.running, PlanStatus.failed, PlanStatus.interrupted):
            mark, style = "·", "dim"
        else:
            mark, style = " ", ""
        steps.append(f" {mark} ", style=style)
        steps.append(f"{index + 1}. {shown(step.description)}", style="bold")
        if step.host_id:
            steps.append(f"  on {shown(host_name(step.host_id))}", style="cyan")
        # The estimate, then what it really took once it is known (or since when it runs).
        steps.append(f"  [{cost_text(step.cost)}]", style="dim")
        if record is not None and (duration := took(record)) is not None:
            steps.append(f"  took {duration}", style="bold")
        elif record is not None and record.outcome is StepOutcome.running and record.started_at is not None:
            steps.append(f"  running since {timestamp(record.started_at)}", style="cyan")
            if record.progress_done is not None and record.progress_total:
                steps.append(f"  {record.progress_done * 100 // record.progress_total}% "
                             f"({format_size(record.progress_done)} of {format_size(record.progress_total)})",
                             style="bold cyan")
        steps.append("\n")
        if step.effect:
            steps.append(f"      effect: {shown(step.effect)}\n")
        for command in step.commands:
            where = shown(host_name(command.host_id)) if command.host_id != step.host_id else ""
            steps.append(f"      $ {shown(command.command)}", style="green")
            if where:
                steps.append(f"   (on {where})", style="cyan")
            steps.append("\n")
        if record is not None:
            for ran in record.commands:
                if ran.exit_code not in (None, 0):
                    steps.append(f"      exit {ran.exit_code}: {shown(ran.stderr_tail or ran.stdout_tail)}\n",
                                 style="red")
            if record.error:
                steps.append(f"      error: {shown(record.error)}\n", style="bold red")
    parts.append(steps)
    tail = Text("\n")
    if plan.effects:
        tail.append("Predicted effects\n", style="bold")
        for effect in plan.effects:
            tail.append(f"  • {shown(effect)}\n")
    total = _plan_took(plan)
    if total is not None:
        tail.append(f"Took {total} in all (estimated {cost_text(plan.cost)})\n", style="bold")
    else:
        tail.append(f"Total cost: {cost_text(plan.cost)}\n", style="bold")
    if plan.consent:
        tail.append("Needs your consent (never approved by a policy)\n", style="bold red")
        for line in plan.consent:
            tail.append(f"  • {shown(line)}\n", style="red")
    if plan.unsatisfied:
        tail.append("Not satisfied by this plan\n", style="bold yellow")
        for item in plan.unsatisfied:
            tail.append(f"  • {shown(item)}\n", style="yellow")
    parts.append(tail)
    out = Text()
    for part in parts:
        out.append_text(part)
    out.rstrip()
    return out


class ProposalsScreen(KerubScreen, inherit_bindings=False):
    view = "plans"
    help_section = "Proposals"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="screen.back"),
        Binding("tab", "app.focus_next", "Next", show=False, id="screen.focus_next"),
        Binding("shift+tab", "app.focus_previous", "Previous", show=False, id="screen.focus_previous"),
        Binding("a", "approve", "Approve", id="plans.approve"),
        Binding("r", "reject", "Reject", id="plans.reject"),
        Binding("A", "always", "Always approve this kind", id="plans.always"),
    ]

    DEFAULT_CSS = """
    ProposalsScreen #plans { height: 1fr; max-height: 12; }
    ProposalsScreen #plan-detail { height: 2fr; border: round $panel-lighten-2; padding: 0 1; }
    """

    def __init__(self, plan_id: str | None = None) -> None:
        """``plan_id``: the plan to show first (the newest proposal's key names one)."""
        super().__init__()
        self.first_plan_id = plan_id

    def compose(self) -> ComposeResult:
        table = LiveTable(PlanRows(self.kerub.overview), id="plans")
        table.prompt_filter = self.kerub.prompt_filter
        yield table
        with DetailBody(id="plan-detail"):
            yield Static("", id="plan-text")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#plans", LiveTable)
        # The plan asked for, else the admin's queue first: the newest open proposal if there is one.
        proposed = [i for i in table.shown_ids() if (plan := self._plan(i)) and plan.status is PlanStatus.proposed]
        first = self.first_plan_id if self.first_plan_id in table.rows else (proposed[0] if proposed else None)
        if first is not None:
            table.move_cursor(row=table.get_row_index(first))
        table.focus()
        self.show_detail()

    def action_back(self) -> None:
        """Esc in a plan's detail goes back to the list of plans; in the list, as everywhere."""
        detail = self.query_one("#plan-detail", DetailBody)
        if detail.has_focus_within or detail.has_focus:
            self.query_one("#plans", LiveTable).focus()
            return
        super().action_back()

    def _plan(self, plan_id: str | None) -> Plan | None:
        return self.kerub.controller.get(Plan, plan_id) if plan_id else None

    @property
    def current(self) -> Plan | None:
        return self._plan(self.query_one("#plans", LiveTable).cursor_id)

    def on_live_table_row_highlighted(self, event: LiveTable.RowHighlighted) -> None:
        self.show_detail()

    def on_live_table_opened(self, event: LiveTable.Opened) -> None:
        event.stop()
        self.query_one("#plan-detail").focus()

    def on_changes(self, changes: Sequence[Change]) -> None:
        current = self.current
        if current is not None and any(c.kind == "plan" and c.id == current.id for c in changes):
            self.show_detail()

    def show_detail(self) -> None:
        plan = self.current
        detail = self.query_one("#plan-text", Static)
        if plan is None:
            detail.update(Text("No plans: the planner proposes one when an expectation is violated, a problem "
                               "appears, or an optimisation pays.", style="dim"))
            self.query_one("#plan-detail").border_title = "Plan"
            return
        detail.update(plan_detail(plan, self.kerub.overview.host_name))
        self.query_one("#plan-detail").border_title = markup_safe(f"Plan {plan.id[:8]} ({plan.status.value})")

    def action_approve(self) -> None:
        plan = self.current
        if plan is not None:
            self.kerub.actions.approve_plan(plan.id)

    def action_reject(self) -> None:
        plan = self.current
        if plan is None:
            return
        if plan.status is not PlanStatus.proposed:
            self.kerub.refuse("reject", f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
            return
        self.kerub.actions.reject_plan(plan.id)

    def action_always(self) -> None:
        plan = self.current
        if plan is not None:
            self.kerub.actions.always_approve(plan.plan_kind)
