"""The state the planner plans on: the store's facts plus what approved and running plans will do.

A plan that is approved or running has committed to its remaining steps: they are applied to the
snapshot (so a re-plan does not propose them again and capacity they take is taken), and their
exclusive reservations become locks (so no other plan touches that VM, disk, host, pool or share
until they are done). Finished plans leave a history per host, for the optimiser's hold time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from ..core.models import Plan, PlanStatus, StepOutcome, utcnow
from .state import OperationalState
from .steps import Step, UnknownStep, step_from_planned

ACTIVE = (PlanStatus.approved, PlanStatus.running)
HISTORY_WINDOW = dt.timedelta(days=1)


def remaining_steps(plan: Plan) -> list[tuple[int, Step]]:
    """The steps of a plan not recorded as done, with their index."""
    done = {r.step_index for r in plan.records if r.outcome is StepOutcome.done}
    out = []
    for index, planned in enumerate(plan.steps):
        if index in done:
            continue
        try:
            out.append((index, step_from_planned(planned)))
        except UnknownStep:
            continue  # written by another version: its reservations cannot be known, nothing to apply
    return out


def active_plans(store: Any, *, exclude: str | None = None) -> list[Plan]:
    plans = [p for p in store.list(Plan) if p.status in ACTIVE and p.id != exclude]
    return sorted(plans, key=lambda p: (p.decided_at or p.created_at, p.created_at, p.id))


def _history(store: Any, now: dt.datetime) -> dict[str, dt.datetime]:
    history: dict[str, dt.datetime] = {}
    for plan in store.list(Plan):
        if plan.status not in (PlanStatus.done, PlanStatus.failed, PlanStatus.interrupted):
            continue
        ended = max((r.ended_at for r in plan.records if r.ended_at is not None), default=plan.decided_at)
        if ended is None or now - ended > HISTORY_WINDOW:
            continue
        for planned in plan.steps:
            try:
                hosts = step_from_planned(planned).touched().hosts
            except UnknownStep:
                continue
            for host_id in hosts:
                if host_id not in history or history[host_id] < ended:
                    history[host_id] = ended
    return history


def apply_commitments(state: OperationalState, plans: list[Plan]) -> OperationalState:
    """``state`` with the remaining steps of ``plans`` applied (in order) and their locks held."""
    locks: set[str] = set(state.locks)
    for plan in plans:
        for _, step in remaining_steps(plan):
            # A step that cannot be taken any more (already done by the hosts, or overtaken) is skipped:
            # monitoring has the truth, and the executor will find out when it gets there.
            if step.blocked(state.with_context(locks=frozenset())) is None:
                state = step.take(state)
            locks.update(r.lock_key() for r in step.reservations() if r.exclusive)
    return state.with_context(locks=frozenset(locks))


def build_state(store: Any, *, now: dt.datetime | None = None, exclude: str | None = None,
                overloaded_since: Mapping[str, dt.datetime] | None = None) -> OperationalState:
    now = now or utcnow()
    state = OperationalState.from_store(store, now=now)
    state = apply_commitments(state, active_plans(store, exclude=exclude))
    return state.with_context(history=_history(store, now), overloaded_since=dict(overloaded_since or {}))


def lock_holders(store: Any, *, exclude: str | None = None) -> dict[str, str]:
    """lock key -> id of the active plan holding it."""
    holders: dict[str, str] = {}
    for plan in active_plans(store, exclude=exclude):
        for _, step in remaining_steps(plan):
            for r in step.reservations():
                if r.exclusive:
                    holders.setdefault(r.lock_key(), plan.id)
    return holders
