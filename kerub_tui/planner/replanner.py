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
from ..core.models import (
    AuditEntry,
    Event,
    EventSeverity,
    HostDynamic,
    Plan,
    PlanStatus,
    Settings,
    kind_parts,
    utcnow,
)
from ..core.store import StoreWriteError
from .checkers import Violation, all_violations, flap_calm_at
from .commitments import ACTIVE, build_state, lock_holders
from .optimise import KSM_TIGHT, overloaded_hosts
from .planning import PlanDraft, open_items, plan_all, plan_signature, premises
from .reconcile import CLEANUP  # also registers the cleanup steps, so their plans can be read
from .search import is_hard, replay
from .state import OperationalState
from .steps import Touched, UnknownStep, step_from_planned

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


_PLAN_VMS: dict[tuple[str, tuple[tuple[str, str], ...]], frozenset[str]] = {}


def plan_vms(plan: Plan) -> frozenset[str]:
    """The VMs a plan's steps act on (remembered per plan and steps: a plan's steps do not change)."""
    key = (plan.id, tuple((step.type, repr(step.params)) for step in plan.steps))
    found = _PLAN_VMS.get(key)
    if found is None:
        vms: set[str] = set()
        for planned in plan.steps:
            try:
                vms |= step_from_planned(planned).touched().vms
            except UnknownStep:
                vm = planned.params.get("vm")
                if isinstance(vm, str):
                    vms.add(vm)
        found = _PLAN_VMS[key] = frozenset(vms)
        if len(_PLAN_VMS) > 4 * REJECTED_MEMORY:
            _PLAN_VMS.clear()
            _PLAN_VMS[key] = found
    return found


def ask_again(store: Any, vm_id: str, user: str, *, now: dt.datetime | None = None) -> list[Plan]:
    """The admin asks again for what they rejected for a VM (``vm start`` or ``s`` once more): its
    rejected plans are no longer held against the planner's proposals, so the next pass proposes the
    plan again, even on the same facts. The rejected plans stay rejected, marked asked again."""
    now = now or utcnow()
    asked = []
    for plan in _recent_decided(store, PlanStatus.rejected):
        if vm_id in plan_vms(plan):
            asked.append(plan.evolve(asked_again_by=user, asked_again_at=now))
    if asked:
        with store.transaction():
            for plan in asked:
                store.put(plan)
                _audit(store, "plan ask again", plan, user)
    return asked


def ask_again_plan(store: Any, plan_id: str, user: str, *, now: dt.datetime | None = None) -> Plan:
    """One rejected plan asked for again (``plan ask-again``): see ``ask_again``."""
    plan: Plan = store.require(Plan, plan_id)
    asked = plan.evolve(asked_again_by=user, asked_again_at=now or utcnow())
    with store.transaction():
        store.put(asked)
        _audit(store, "plan ask again", plan, user)
    return asked


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
    # a rejected plan the admin asked for again (vm start) is no longer held against its twin
    plans = [p for p in store.list(Plan) if p.status is status and not p.asked_again_by]
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


def deletes_data(plan: Plan) -> bool:
    """Whether a step of the plan destroys data on a host (a step this version cannot read counts)."""
    try:
        return any(step.deletes_data() for step in _steps_of(plan))
    except UnknownStep:
        return True


def not_covered(settings: Settings | None, plan: Plan) -> str | None:
    """Why no auto-approve policy covers ``plan`` (None: one does). A plan of several kinds needs every
    one of them covered; a plan deleting data needs policies that say they cover deletions too."""
    policies = settings.auto_approve if settings is not None else []
    covered = {part for p in policies for part in kind_parts(p.plan_kind)}
    parts = kind_parts(plan.plan_kind)
    missing = [part for part in parts if part not in covered]
    if missing or not parts:
        return f"no auto-approve policy for {', '.join(missing) or plan.plan_kind} plans"
    if plan.consent:  # high availability: a restart from an older copy asks the admin, whatever the policy
        return f"it needs the admin's consent: {plan.consent[0]}"
    if deletes_data(plan):
        if "restart" in parts:  # a restart brings VMs back; it never deletes data without the admin
            return "it deletes data, and a restart plan is never auto-approved with a deletion"
        deleting = {part for p in policies if p.deletes for part in kind_parts(p.plan_kind)}
        if any(part not in deleting for part in parts):
            return f"it deletes data and the {plan.plan_kind} policy does not cover deletions"
    return None


def auto_approve(store: Any, report: ReplanReport, *, now: dt.datetime) -> None:
    settings = store.get("settings", "settings")
    if settings is None or not settings.auto_approve:
        return
    failed = {(_plan_sig(p), p.premises) for p in _recent_decided(store, PlanStatus.failed)}
    covered = {k for p in settings.auto_approve for k in kind_parts(p.plan_kind)}
    for n, plan in enumerate(report.proposed):
        why = not_covered(settings, plan)
        if why is not None and any(part in covered for part in kind_parts(plan.plan_kind)):
            # a policy of its kind is there, yet it asks: the proposal says why (deletions, another kind)
            said = plan.evolve(status_reason=f"not auto-approved: {why}")
            store.put(said)
            report.proposed[n] = said
            log.info("plan %s not auto-approved: %s", plan.id[:8], why)
    for plan in report.proposed + report.kept:
        if not_covered(settings, plan) is not None:
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
    return (doc.status, doc.fence is not None, tuple(sorted(doc.failing_devices)), doc.ksm.available, doc.ksm.run,
            doc.ksm.full_scans >= 2, (doc.ksm.pages_sharing * 4096) >> 26,
            doc.cpu_temperature is not None and doc.cpu_temperature >= 85.0,
            tuple(sorted((k, v >> 30) for k, v in doc.storage_free.items())), tight,
            # which PVs each VG has, and whether each holds data (a failing one emptied or removed)
            tuple(sorted((k, tuple((p.name, p.used_bytes > 0) for p in v)) for k, v in doc.storage_pvs.items())))


def relevant(change: Change, *, own: set[tuple[str, str]] | None = None,
             pending_hold: set[str] | None = None, memory_total: Callable[[str], int | None] | None = None) -> bool:
    """Whether ``change`` can alter a plan. ``memory_total(host_id)``: the host's RAM in bytes."""
    if change.kind in _IGNORED_KINDS:
        return False
    if change.kind == "plan":
        new, old = change.new, change.old
        if not isinstance(new, Plan) or (own is not None and (new.id, new.status.value) in own):
            return False
        if isinstance(old, Plan) and new.asked_again_by and not old.asked_again_by:
            return True  # the admin asked again for a plan they had rejected
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
    open_hard: list[str]  # dealbreakers and problems open now that no approved plan acts on, described
    violations: list[Any]  # on what the hosts report, for the violation events
    about: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)  # line -> (subject, host)
    busy: Touched = field(default_factory=Touched)  # what approved and running plans act on
    why: dict[str, str] = field(default_factory=dict)  # line -> why no plan can fix it, where it is known


def _unfixable_reason(state: OperationalState, item: Any) -> str | None:
    """Why no plan can fix an item, where the planner can say more than the expectation's own reason: a
    new disk that fits no host's storage (issue 18 item 5: the free space, the thin over-commit policy); a
    VM lost with its host that waits for the host to be fenced, or whose storage is gone with it (issue 16)."""
    if item.type in ("vm-lost-with-host", "ha", "availability") and getattr(item, "subject_kind", "vm") == "vm":
        from .ha import restart_wait

        waiting = restart_wait(state, item.subject_id)
        return waiting[1] if waiting is not None else None
    if not isinstance(item, Violation) or item.type != "storage-availability":
        return None
    from .explain import no_storage_reason

    return no_storage_reason(state, item.subject_id)


def busy_subjects(store: Any) -> Touched:
    """The VMs, disks and hosts approved and running plans act on: what is wrong with them now is
    theirs to fix (a VM being migrated is not up, and no new plan should be sought for it)."""
    vms: set[str] = set()
    disks: set[str] = set()
    hosts: set[str] = set()
    for plan in store.list(Plan):
        if plan.status not in ACTIVE:
            continue
        try:
            steps = _steps_of(plan)
        except UnknownStep:
            continue
        for step in steps:
            touched = step.touched()
            vms |= touched.vms
            disks |= touched.disks
            hosts |= touched.hosts
    return Touched(frozenset(vms), frozenset(disks), frozenset(hosts))


def _item_about(item: Any) -> tuple[str | None, str | None]:
    """(the VM or disk an open item is about, its host), for the events that name them."""
    subject = getattr(item, "subject_id", "") or None
    return subject, getattr(item, "host_id", None)


def _is_busy(busy: Touched, subject: str | None, host: str | None) -> bool:
    if subject:
        return subject in busy.vms or subject in busy.disks
    return host is not None and host in busy.hosts


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
        return self._write(state, self._plan(state, reported, busy_subjects(self.store)), now)

    def _snapshots(self, now: dt.datetime) -> tuple[OperationalState, OperationalState]:
        """The state to plan on (commitments of approved plans included) and the state the hosts
        report (for violation events); one and the same when no plan is approved or running."""
        state = self._snapshot(now)
        if any(p.status in ACTIVE for p in self.store.list(Plan)):
            return state, OperationalState.from_store(self.store)
        return state, state

    def _plan(self, state: OperationalState, reported: OperationalState, busy: Touched | None = None) -> _Outcome:
        """The pure part of a pass (a worker thread runs it): drafts, open dealbreakers, violations.
        ``busy``: what approved and running plans act on (their subjects raise no warning)."""
        busy = busy or Touched()
        drafts = plan_all(state, **self.search_options)
        hard = {i.describe(): i for i in open_items(state) if is_hard(i)}
        about = {line: _item_about(i) for line, i in hard.items()}
        open_hard = sorted(line for line, (subject, host) in about.items() if not _is_busy(busy, subject, host))
        addressed = {line for d in drafts for line in d.trigger}
        why = {line: reason for line in open_hard if line not in addressed
               and (reason := _unfixable_reason(state, hard[line])) is not None}
        return _Outcome(drafts, open_hard, all_violations(reported), about, busy, why)

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
        self._report_violations(outcome.violations, outcome.busy)
        self.passes += 1
        return report

    def _report_violations(self, violations: list[Any], busy: Touched | None = None) -> None:
        """An Event when an expectation becomes violated, and one when it is met again.

        Judged on what the hosts report (the store), not on what approved plans will do. The last
        event per (subject, expectation) is the memory, so a restart does not repeat them. A subject an
        approved or running plan acts on says nothing meanwhile (a VM being migrated is not "up" for a
        moment): what is still wrong once the plan is over is reported then.
        """
        busy = busy or Touched()
        current: dict[tuple[str, str], str] = {}
        names: dict[str, str] = {}
        for violation in violations:
            subject = self.store.get(violation.subject_kind, violation.subject_id)
            if subject is None or violation.index >= len(subject.expectations):
                continue
            spec = subject.expectations[violation.index].spec()
            current[(violation.subject_id, spec)] = violation.reason
            names[violation.subject_id] = subject.name
        if self._violations is None:  # the history keeps the open ones: no event is read
            history = self.store.history
            open_ = history.open_violations() if history is not None else {}
            self._violations = {(target, spec) for target, specs in open_.items() for spec in specs}
        events = []

        def quiet(key: tuple[str, str]) -> bool:
            return key[0] in busy.vms or key[0] in busy.disks

        for key in sorted(set(current) - self._violations):
            target, spec = key
            if quiet(key):
                continue
            events.append(Event(type="violation", severity=EventSeverity.warning, target=target,
                                message=f"{spec}: {current[key]}"))
        for key in sorted(self._violations - set(current)):
            target, spec = key
            subject = self.store.get("vm", target) or self.store.get("disk", target)
            if subject is None or quiet(key):
                continue  # deleted with its expectations: nothing left to clear; or a plan is at it
            events.append(Event(type="violation-cleared", target=target, message=f"{spec}: met again"))
        self._violations = {k for k in self._violations if quiet(k)} | {k for k in current if not quiet(k)}
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
            target, host = outcome.about.get(line, (None, None))
            why = outcome.why.get(line)
            event = Event(type="unsatisfiable", severity=EventSeverity.warning,
                          message=f"no plan can fix: {line}" + (f" ({why})" if why else ""), target=target,
                          host_id=host)
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
        outcome = await asyncio.to_thread(self._plan, state, reported, busy_subjects(self.store))
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


__all__ = ["ApprovalRefused", "ReplanReport", "Replanner", "approve", "ask_again", "deletes_data", "not_covered",
           "plan_vms", "premises", "recover_interrupted", "reject", "relevant", "validate"]
