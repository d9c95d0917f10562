"""Re-plan on change: proposals stored as Plan documents, approval with reservations, auto-approval.

The service subscribes to the store's change feed, keeps only the changes that can alter a plan
(monitoring noise such as CPU percentages, and its own writes, are ignored), waits for the feed to
go quiet for a moment (debounce, coalescing bursts), then plans on a snapshot in a worker thread and
writes the outcome. Never on a timer: no change, no re-plan.

Each pass:
- an open proposal equal to what the planner would propose now is kept, its premises refreshed
  (re-validated); any other open proposal is withdrawn with the reason;
- a new plan is stored as a proposal unless an equal one is open, being carried out, or was rejected
  by the admin on the same premises;
- a proposal whose kind has an auto-approve policy is approved at once (not when an equal plan just
  failed on the same premises: that would loop).

``approve`` refuses a plan whose steps no longer apply or whose reservations collide with a plan
already approved or running, so concurrent plans never hold conflicting reservations.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..core.bus import Change
from ..core.models import AuditEntry, Event, EventSeverity, HostDynamic, Plan, PlanStatus, utcnow
from ..core.store import StoreWriteError
from .checkers import all_violations, flap_calm_at
from .commitments import ACTIVE, build_state, lock_holders
from .optimise import KSM_TIGHT, overloaded_hosts
from .planning import PlanDraft, open_items, plan_all, plan_signature, premises
from .reconcile import CLEANUP  # also registers the cleanup steps, so their plans can be read
from .search import is_hard, replay
from .state import OperationalState
from .steps import UnknownStep, step_from_planned

log = logging.getLogger(__name__)

AUTO_USER = "kerub-tui (auto-approve)"
PLANNER_USER = "kerub-tui planner"
REJECTED_MEMORY = 200  # recent rejected/failed plans compared with new drafts


class ApprovalRefused(ValueError):
    """The plan cannot be approved as it stands; it has been withdrawn, with this reason."""


# --- approval --------------------------------------------------------------------------------------


def _audit(store: Any, action: str, plan: Plan, user: str, outcome: str = "ok") -> None:
    store.put(AuditEntry(os_user=user, action=action, target=plan.id, outcome=outcome, plan_id=plan.id))


def _steps_of(plan: Plan) -> list[Any]:
    return [step_from_planned(p) for p in plan.steps]


def validate(store: Any, plan: Plan, *, now: dt.datetime | None = None) -> str | None:
    """Why ``plan`` cannot be carried out now (a step that no longer applies, a reservation another
    plan holds), or None."""
    try:
        steps = _steps_of(plan)
    except UnknownStep as error:
        return str(error)
    holders = lock_holders(store, exclude=plan.id)
    for step in steps:
        for r in step.reservations():
            holder = holders.get(r.lock_key()) if r.exclusive else None
            if holder is not None:
                return f"{r.kind} {r.target} is held by plan {holder[:8]}"
    state = build_state(store, now=now, exclude=plan.id)
    _, reason = replay(state, steps)
    return reason


def approve(store: Any, plan_id: str, user: str, *, now: dt.datetime | None = None) -> Plan:
    """Approve a proposal: re-validated against the current state and the other plans' reservations.

    Raises ApprovalRefused (the plan is withdrawn with the reason) when it no longer applies."""
    plan: Plan | None = store.get(Plan, plan_id)
    if plan is None:
        raise ApprovalRefused(f"no plan {plan_id}")
    if plan.status is not PlanStatus.proposed:
        raise ApprovalRefused(f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
    now = now or utcnow()
    reason = validate(store, plan, now=now)
    if reason is not None:
        withdrawn = plan.evolve(status=PlanStatus.withdrawn, status_reason=f"could not be approved: {reason}",
                                decided_by=user, decided_at=now)
        with store.transaction():
            store.put(withdrawn)
            _audit(store, "plan approve", plan, user, outcome=f"refused: {reason}")
        raise ApprovalRefused(f"plan {plan.id[:8]} cannot be carried out any more: {reason}")
    approved = plan.evolve(status=PlanStatus.approved, decided_by=user, decided_at=now, status_reason=None)
    with store.transaction():
        store.put(approved)
        _audit(store, "plan approve", plan, user)
    return approved


def reject(store: Any, plan_id: str, user: str, *, now: dt.datetime | None = None) -> Plan:
    plan: Plan | None = store.get(Plan, plan_id)
    if plan is None:
        raise ApprovalRefused(f"no plan {plan_id}")
    if plan.status is not PlanStatus.proposed:
        raise ApprovalRefused(f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
    rejected = plan.evolve(status=PlanStatus.rejected, decided_by=user, decided_at=now or utcnow())
    with store.transaction():
        store.put(rejected)
        _audit(store, "plan reject", plan, user)
    return rejected


def recover_interrupted(store: Any, *, now: dt.datetime | None = None) -> list[Plan]:
    """On controller start: plans left running were cut off mid-way; mark them (and the step that was
    running) interrupted. The next re-plan starts from what the hosts report."""
    from ..core.models import StepOutcome

    now = now or utcnow()
    out = []
    for plan in sorted(store.list(Plan), key=lambda p: p.id):
        if plan.status is not PlanStatus.running:
            continue
        records = [
            r.evolve(outcome=StepOutcome.interrupted, ended_at=now, error="the controller stopped while this step ran")
            if r.outcome is StepOutcome.running
            else r
            for r in plan.records
        ]
        updated = plan.evolve(
            status=PlanStatus.interrupted,
            records=[r.model_dump() for r in records],
            status_reason="the controller stopped while the plan ran; re-planning from what the hosts report",
        )
        with store.transaction():
            store.put(updated)
            _audit(store, "plan interrupted", plan, PLANNER_USER, outcome="interrupted")
        out.append(updated)
    return out


# --- the re-planning pass --------------------------------------------------------------------------


@dataclass
class ReplanReport:
    proposed: list[Plan] = field(default_factory=list)
    kept: list[Plan] = field(default_factory=list)
    withdrawn: list[Plan] = field(default_factory=list)
    approved: list[Plan] = field(default_factory=list)
    unfixable: list[str] = field(default_factory=list)


def _plan_sig(plan: Plan) -> tuple[Any, ...] | None:
    try:
        return plan_signature(plan)
    except UnknownStep:
        return None


def _recent_decided(store: Any, status: PlanStatus) -> list[Plan]:
    plans = [p for p in store.list(Plan) if p.status is status]
    plans.sort(key=lambda p: (p.decided_at or p.created_at, p.id), reverse=True)
    return plans[:REJECTED_MEMORY]


def write_drafts(store: Any, drafts: list[PlanDraft], *, now: dt.datetime) -> ReplanReport:
    """Bring the stored proposals in line with ``drafts`` (see the module docstring)."""
    report = ReplanReport()
    by_sig = {d.signature(): d for d in drafts}
    taken: set[tuple[Any, ...]] = set()
    active_sigs = {_plan_sig(p) for p in store.list(Plan) if p.status in ACTIVE}
    rejected = {(_plan_sig(p), p.premises) for p in _recent_decided(store, PlanStatus.rejected)}
    with store.transaction():
        for plan in sorted((p for p in store.list(Plan) if p.status is PlanStatus.proposed
                            and p.plan_kind != CLEANUP),  # reconcile's proposals: the planner makes none
                           key=lambda p: (p.created_at, p.id)):
            sig = _plan_sig(plan)
            draft = by_sig.get(sig) if sig is not None else None
            if draft is not None and sig is not None and sig not in taken:
                taken.add(sig)
                fresh = draft.premises()
                if fresh != plan.premises:
                    plan = plan.evolve(premises=fresh)  # re-validated: the same plan on the new facts
                    store.put(plan)
                report.kept.append(plan)
                continue
            reason = "an equal proposal is already open" if sig in taken else (
                "its premises changed: re-planned" if sig is not None else "written by another version")
            withdrawn = plan.evolve(status=PlanStatus.withdrawn, status_reason=reason, decided_by=PLANNER_USER,
                                    decided_at=now)
            store.put(withdrawn)
            report.withdrawn.append(withdrawn)
        for draft in drafts:
            sig = draft.signature()
            if sig in taken or sig in active_sigs:
                continue
            taken.add(sig)
            if (sig, draft.premises()) in rejected:
                continue  # the admin said no to exactly this, on exactly these facts
            plan = draft.to_plan()
            store.put(plan)
            report.proposed.append(plan)
    return report


def auto_approve(store: Any, report: ReplanReport, *, now: dt.datetime) -> None:
    settings = store.get("settings", "settings")
    kinds = {p.plan_kind for p in settings.auto_approve} if settings is not None else set()
    if not kinds:
        return
    failed = {(_plan_sig(p), p.premises) for p in _recent_decided(store, PlanStatus.failed)}
    for plan in report.proposed + report.kept:
        if plan.plan_kind not in kinds:
            continue
        if (_plan_sig(plan), plan.premises) in failed:
            continue  # it failed on these very facts: a person should look first
        try:
            report.approved.append(approve(store, plan.id, f"{AUTO_USER}: {plan.plan_kind}", now=now))
        except ApprovalRefused as error:
            log.info("auto-approve refused: %s", error)


# --- which changes matter --------------------------------------------------------------------------

_IGNORED_KINDS = frozenset({"audit", "event"})
_RESTARTING_STATUSES = frozenset({PlanStatus.approved, PlanStatus.done, PlanStatus.failed,
                                  PlanStatus.interrupted, PlanStatus.rejected})


def host_dynamic_digest(doc: HostDynamic | None, memory_total: int | None = None) -> Any:
    """What of a host's monitoring the planner reads, coarsely (percent of CPU is noise to it, and
    so is the guests' memory drifting by a few MiB: only crossing the KSM "tight" line matters)."""
    if doc is None:
        return None
    tight = None
    if doc.memory_used is not None:
        tight = doc.memory_used / memory_total >= KSM_TIGHT if memory_total else doc.memory_used >> 30
    return (doc.status, tuple(sorted(doc.failing_devices)), doc.ksm.available, doc.ksm.run,
            doc.ksm.full_scans >= 2, (doc.ksm.pages_sharing * 4096) >> 26,
            doc.cpu_temperature is not None and doc.cpu_temperature >= 85.0,
            tuple(sorted((k, v >> 30) for k, v in doc.storage_free.items())), tight)


def relevant(change: Change, *, own: set[tuple[str, str]] | None = None,
             pending_hold: set[str] | None = None, memory_total: Callable[[str], int | None] | None = None) -> bool:
    """Whether ``change`` can alter a plan. ``memory_total(host_id)``: the host's RAM in bytes."""
    if change.kind in _IGNORED_KINDS:
        return False
    if change.kind == "plan":
        new, old = change.new, change.old
        if not isinstance(new, Plan) or (own is not None and (new.id, new.status.value) in own):
            return False
        return (not isinstance(old, Plan) or old.status is not new.status) and new.status in _RESTARTING_STATUSES
    if change.kind == "host-dynamic":
        if pending_hold and change.id in pending_hold:
            return True  # a host waiting out its load-balancing hold: the monitor's tick is our clock
        total = memory_total(change.id) if memory_total is not None else None
        changed: bool = host_dynamic_digest(change.old, total) != host_dynamic_digest(change.new, total)  # type: ignore[arg-type]
        return changed
    if change.kind == "vm-dynamic":
        def key(d: Any) -> object:
            return None if d is None else (d.host_id, d.status)
        return key(change.old) != key(change.new)
    if change.kind == "disk-dynamic":
        def dkey(d: Any) -> object:
            return None if d is None else (d.allocations, d.cloned_from)
        return dkey(change.old) != dkey(change.new)
    return True


# --- the service -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    drafts: list[PlanDraft]
    open_hard: list[str]  # dealbreakers and problems open now, described
    violations: list[Any]  # on what the hosts report, for the violation events


class Replanner:
    """Re-plans on relevant changes; hands approved plans to the executor when one is given."""

    def __init__(self, store: Any, *, debounce: float = 0.3, max_delay: float = 3.0,
                 clock: Callable[[], dt.datetime] = utcnow, executor: Any = None,
                 search_options: dict[str, Any] | None = None) -> None:
        self.store = store
        self.debounce = debounce
        self.max_delay = max_delay
        self.clock = clock
        self.executor = executor
        self.search_options = search_options or {}
        self.overloaded_since: dict[str, dt.datetime] = {}
        self.flapping: dict[str, dt.datetime] = {}  # host -> when it may take guests again
        self.passes = 0
        self._own: set[tuple[str, str]] = set()
        self._reported: frozenset[str] = frozenset()
        self._violations: set[tuple[str, str]] | None = None
        self._executions: dict[str, asyncio.Task[Any]] = {}
        self._idle = asyncio.Event()

    # one pass, synchronous: tests and the command line use it directly
    def replan(self) -> ReplanReport:
        now = self.clock()
        state, reported = self._snapshots(now)
        return self._write(state, self._plan(state, reported), now)

    def _snapshots(self, now: dt.datetime) -> tuple[OperationalState, OperationalState]:
        """The state to plan on (commitments of approved plans included) and the state the hosts
        report (for violation events); one and the same when no plan is approved or running."""
        state = self._snapshot(now)
        if any(p.status in ACTIVE for p in self.store.list(Plan)):
            return state, OperationalState.from_store(self.store)
        return state, state

    def _plan(self, state: OperationalState, reported: OperationalState) -> _Outcome:
        """The pure part of a pass (a worker thread runs it): drafts, open dealbreakers, violations."""
        drafts = plan_all(state, **self.search_options)
        open_hard = sorted(i.describe() for i in open_items(state) if is_hard(i))
        return _Outcome(drafts, open_hard, all_violations(reported))

    def _snapshot(self, now: dt.datetime) -> Any:
        state = build_state(self.store, now=now)
        hot = set(overloaded_hosts(state))
        for host_id in list(self.overloaded_since):
            if host_id not in hot:
                del self.overloaded_since[host_id]
        for host_id in sorted(hot):
            self.overloaded_since.setdefault(host_id, now)
        self.flapping = {h: t for h in state.host_ids() if (t := flap_calm_at(state, h)) is not None}
        return state.with_context(overloaded_since=dict(self.overloaded_since))

    def _write(self, state: Any, outcome: _Outcome, now: dt.datetime) -> ReplanReport:
        report = write_drafts(self.store, outcome.drafts, now=now)
        auto_approve(self.store, report, now=now)
        for plan in report.proposed + report.kept + report.withdrawn + report.approved:
            self._own.add((plan.id, plan.status.value))
        self._report_unfixable(outcome, report)
        self._report_violations(outcome.violations)
        self.passes += 1
        return report

    def _report_violations(self, violations: list[Any]) -> None:
        """An Event when an expectation becomes violated, and one when it is met again.

        Judged on what the hosts report (the store), not on what approved plans will do. The last
        event per (subject, expectation) is the memory, so a restart does not repeat them.
        """
        current: dict[tuple[str, str], str] = {}
        names: dict[str, str] = {}
        for violation in violations:
            subject = self.store.get(violation.subject_kind, violation.subject_id)
            if subject is None or violation.index >= len(subject.expectations):
                continue
            spec = subject.expectations[violation.index].spec()
            current[(violation.subject_id, spec)] = violation.reason
            names[violation.subject_id] = subject.name
        if self._violations is None:
            self._violations = set()
            for event in sorted(self.store.list(Event), key=lambda e: e.time):
                if event.type in ("violation", "violation-cleared") and event.target:
                    key = (event.target, event.message.split(": ", 1)[0])
                    if event.type == "violation":
                        self._violations.add(key)
                    else:
                        self._violations.discard(key)
        events = []
        for key in sorted(set(current) - self._violations):
            target, spec = key
            events.append(Event(type="violation", severity=EventSeverity.warning, target=target,
                                message=f"{spec}: {current[key]}"))
        for key in sorted(self._violations - set(current)):
            target, spec = key
            subject = self.store.get("vm", target) or self.store.get("disk", target)
            if subject is None:
                continue  # deleted with its expectations: nothing left to clear
            events.append(Event(type="violation-cleared", target=target, message=f"{spec}: met again"))
        self._violations = set(current)
        if events:
            self.store.put_many(events)

    def _report_unfixable(self, outcome: _Outcome, report: ReplanReport) -> None:
        """One warning event per new set of dealbreakers and problems that no plan addresses."""
        addressed = {line for d in outcome.drafts for line in d.trigger}
        unfixable = frozenset(line for line in outcome.open_hard if line not in addressed)
        report.unfixable = sorted(unfixable)
        new = sorted(unfixable - self._reported)
        self._reported = unfixable
        for line in new:
            event = Event(type="unsatisfiable", severity=EventSeverity.warning, message=f"no plan can fix: {line}")
            self.store.put(event)

    def pending_hold(self) -> set[str]:
        """Hosts whose next monitoring tick may change a plan with no other change: a load-balancing
        hold running out, a flapping host whose calm period is over. Their ticks are the clock."""
        now = self.clock()
        calm = {host_id for host_id, at in self.flapping.items() if at <= now}
        hold = self.store.get("settings", "settings")
        if hold is None or not hold.optimisation.load_balancing:
            return calm
        return calm | set(self.overloaded_since)

    async def replan_async(self) -> ReplanReport:
        """Snapshot on the loop (the store is not thread-safe), plan in a worker thread, write on the loop."""
        now = self.clock()
        state, reported = self._snapshots(now)
        outcome = await asyncio.to_thread(self._plan, state, reported)
        return self._write(state, outcome, now)

    async def run(self) -> None:
        subscription = self.store.feed.subscribe()
        try:
            # One controller per data dir: a plan still marked running was cut off by the last stop.
            for plan in recover_interrupted(self.store, now=self.clock()):
                self._own.add((plan.id, plan.status.value))
            self._start_approved()
            await self._replan_unless_unwritable()
            while True:
                self._idle.set()
                change = await subscription.get()
                if not self._handle(change):
                    continue
                self._idle.clear()
                await self._settle(subscription)
                await self._replan_unless_unwritable()
        except StopAsyncIteration:
            return
        finally:
            subscription.close()
            self._idle.set()

    async def _replan_unless_unwritable(self) -> None:
        """A pass whose proposals cannot be written (the disk is full) is dropped, not the service:
        the store has said so once, and the next change plans again."""
        try:
            await self.replan_async()
        except StoreWriteError:
            log.info("re-plan not written: %s", self.store.write_failure)

    def _handle(self, change: Change) -> bool:
        """Start executions of newly approved plans; say whether the change calls for a re-plan."""
        if isinstance(change.new, Plan) and change.new.status is PlanStatus.approved:
            self._start_execution(change.new.id)
        return self.wants(change)

    def wants(self, change: Change) -> bool:
        """Whether ``change`` calls for a re-plan, by this service's own memory (its own writes, holds)."""
        return relevant(change, own=self._own, pending_hold=self.pending_hold(), memory_total=self._memory_total)

    def _memory_total(self, host_id: str) -> int | None:
        host = self.store.get("host", host_id)
        return host.capabilities.memory_bytes if host is not None and host.capabilities is not None else None

    async def _settle(self, subscription: Any) -> None:
        """Debounce: wait until the feed is quiet for ``debounce`` seconds (at most ``max_delay``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_delay
        while True:
            remaining = min(self.debounce, deadline - loop.time())
            if remaining <= 0:
                return
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that arrives
            # just as a change does, and the controller's stop then waits for this task forever.
            try:
                async with asyncio.timeout(remaining):
                    change = await subscription.get()
            except TimeoutError:
                return
            self._handle(change)

    def _start_approved(self) -> None:
        for plan in sorted(self.store.list(Plan), key=lambda p: (p.decided_at or p.created_at, p.id)):
            if plan.status is PlanStatus.approved:
                self._start_execution(plan.id)

    def _start_execution(self, plan_id: str) -> None:
        if self.executor is None or plan_id in self._executions:
            return
        task = asyncio.get_running_loop().create_task(self.executor.execute(plan_id), name=f"plan {plan_id[:8]}")
        self._executions[plan_id] = task
        task.add_done_callback(lambda _task: self._executions.pop(plan_id, None))

    async def wait_idle(self) -> None:
        """Until the service waits for the next change with nothing being executed (for tests)."""
        while True:
            await self._idle.wait()
            if not self._executions:
                await asyncio.sleep(0)
                if self._idle.is_set() and not self._executions:
                    return
            else:
                await asyncio.gather(*list(self._executions.values()), return_exceptions=True)

    async def stop(self) -> None:
        for task in list(self._executions.values()):
            task.cancel()
        for task in list(self._executions.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


__all__ = ["ApprovalRefused", "ReplanReport", "Replanner", "approve", "premises", "recover_interrupted", "reject",
           "relevant", "validate"]
