"""Why a VM runs where it runs, and why every other host was rejected (which checker, which value).

``explain`` returns structured data (the console's VM detail and proposal screens render it);
``explain_text`` renders it for ``kerub-tui vm show``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from ..core.expectations import Level
from ..core.sizes import format_size
from .checkers import VM_CHECKERS, placement_rejections
from .state import OperationalState

TEXT_HOST_LIMIT = 12  # hosts listed one by one in the text; the rest are counted


@dataclass(frozen=True)
class Reason:
    checker: str  # the expectation type, or "capacity" for hard facts
    level: str  # dealbreaker / want / wish, or "hard"
    text: str


@dataclass(frozen=True)
class HostVerdict:
    host_id: str
    host_name: str
    current: bool
    fits: bool  # no hard reason against it
    reasons: list[Reason] = field(default_factory=list)  # every reason against it (soft ones too)
    free_memory: int = 0
    free_cores: int = 0


@dataclass(frozen=True)
class ExpectationVerdict:
    spec: str
    met: bool
    reason: str | None


@dataclass(frozen=True)
class HostScore:
    """The terms the planner ranks a host by for this VM (factories' candidates): the cost of the steps
    that put it there, plus the weight of the wants and wishes it would break; ties go to the placement
    policy (the most memory left free, or the least when power saving packs hosts)."""

    host_id: str
    host_name: str
    current: bool
    cost: float  # of the steps that bring it there (0 where it runs)
    penalty: float  # of the wants and wishes broken there
    broken: list[str]  # those, as TYPE@LEVEL
    memory_free: float  # share of the host's memory left free with the VM there
    steps: int = 0

    @property
    def score(self) -> float:
        return self.cost + self.penalty


@dataclass(frozen=True)
class Explanation:
    vm_id: str
    vm_name: str
    status: str
    host_id: str | None
    host_name: str | None
    expectations: list[ExpectationVerdict]
    hosts: list[HostVerdict]
    scores: list[HostScore] = field(default_factory=list)  # the hosts that fit, best first
    pack: bool = False  # the placement policy: pack (power saving) or spread
    plans: list[str] = field(default_factory=list)  # pending, running and rejected plans for the VM
    memory: str = ""  # the memory-range policy as it applies to this VM (memory_note)
    storage: list[str] = field(default_factory=list)  # thin provisioning of its disks (storage_notes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def explain(state: OperationalState, vm_id: str) -> Explanation:
    vm = state.vms.get(vm_id)
    if vm is None:
        raise KeyError(f"no VM {vm_id}")
    host_id, status = state.vm_placement(vm_id)
    verdicts = []
    for exp in vm.expectations:
        reason = VM_CHECKERS[exp.type].check(state, vm, exp)
        verdicts.append(ExpectationVerdict(spec_with_names(state, exp), reason is None, reason))
    hosts = []
    for other in state.host_ids():
        rejections = placement_rejections(state, vm, other)
        reasons = [Reason(r.checker, r.level.value if r.level is not None else "hard", r.reason)
                   for r in rejections]
        hosts.append(HostVerdict(
            host_id=other, host_name=state.host_name(other), current=other == host_id,
            fits=not any(r.hard for r in rejections), reasons=reasons,
            free_memory=max(state.free_memory(other), 0), free_cores=state.free_cores(other)))
    return Explanation(vm_id=vm.id, vm_name=vm.name,
                       status=status.value if host_id is not None else "down",
                       host_id=host_id, host_name=state.host_name(host_id) if host_id else None,
                       expectations=verdicts, hosts=hosts, scores=host_scores(state, vm_id),
                       pack=state.settings.optimisation.power_saving, memory=memory_note(state, vm_id),
                       storage=storage_notes(state, vm_id))


def storage_notes(state: OperationalState, vm_id: str) -> list[str]:
    """Its disks' thin provisioning (ARCHITECTURE.md, thin over-commit): a thin LV's pool, how over-committed
    and how full; for a new disk that fits no plain LV anywhere, the thin LV a start would give it, or why
    it gets none (the over-commit policy off, or no pool within the ratio)."""
    from .checkers import host_usable
    from .factories import best_capability, placement_candidates
    from .remote import share_note
    from .steps import (
        AllowIscsiInitiator,
        CopyAllocation,
        CreateThinLv,
        CreateThinPool,
        ExportNfs,
        ExtendThinPool,
        ShareIscsi,
    )
    from .thin import allocation_note, refusal, thin_candidate

    out: list[str] = []
    vm = state.vms[vm_id]
    start: tuple[Any, ...] | None = None
    here = state.vm_host(vm_id)
    for link in vm.disks:  # a disk read over the network (issue 16): from where, and why not a copy
        note = share_note(state, vm_id, link.disk_id, here) if here is not None else None
        if note is not None:
            out.append(note)
    if here is None and vm.disks:
        found = placement_candidates(state, vm_id, limit=1)
        start = found[0].steps if found else ()
        before = state
        for step in start:
            if isinstance(step, ShareIscsi | ExportNfs | AllowIscsiInitiator | CopyAllocation) and step.reason:
                target = step._target(before) if isinstance(step, AllowIscsiInitiator) else None
                disk_id = (target.disk_id if target is not None else None) if isinstance(step, AllowIscsiInitiator) \
                    else step.disk
                out.append(f"disk {state.disk_name(disk_id or '')}: a start would {step.describe(before)}")
            before = step.take(before)
    for link in vm.disks:
        disk = state.disks.get(link.disk_id)
        if disk is None:
            continue
        for alloc in state.allocations(disk.id):
            note = allocation_note(state, disk.id, alloc)
            if note:
                out.append(f"disk {disk.name}: {note}")
        if not thin_candidate(disk, state):
            continue
        hosts = [h for h in state.host_ids() if host_usable(state, h) is None]
        if any(best_capability(state, disk, h) is not None for h in hosts):
            continue  # a plain LV fits somewhere: nothing thin to say
        head = f"disk {disk.name} ({format_size(disk.size)}) fits no plain LV on any host"
        if start is None:
            found = placement_candidates(state, vm_id, limit=1) if state.vm_host(vm_id) is None else []
            start = found[0].steps if found else ()
        before = state
        thin = []
        for step in start:
            if isinstance(step, CreateThinPool | ExtendThinPool) or (
                    isinstance(step, CreateThinLv) and step.disk == disk.id):
                thin.append(step.describe(before))
            before = step.take(before)
        if thin:
            out.append(f"{head}: a start would {'; then '.join(thin)}")
            continue
        why = sorted({f"{state.host_name(h)}: {r}" for h in hosts if (r := refusal(state, disk, h))})
        if why:
            out.append(f"{head}, nor a thin LV: {'; '.join(why[:3])}" + (f"; {len(why) - 3} more hosts"
                                                                         if len(why) > 3 else ""))
    return out


def memory_note(state: OperationalState, vm_id: str) -> str:
    """How the memory-range policy places this VM (ARCHITECTURE.md, memory ranges): by its maximum where a
    host has room for it, else ballooned; and what it holds where it runs. Empty for a fixed size."""
    vm = state.vms[vm_id]
    top, low = format_size(vm.memory_max), format_size(vm.memory_min)
    if state.vm_host(vm_id) is not None and state.vm_reserved(vm_id) < vm.memory_max:
        held = format_size(state.vm_reserved(vm_id))
        return (f"memory: started with {held} of its {top} (no host had room for its maximum): the balloon "
                f"holds it there, and {held} is what it holds on its host")
    if vm.memory_min < vm.memory_max:
        return (f"memory: placed by its maximum {top} where a host has room for it; where none has, it starts "
                f"with what a host has free, at least its minimum {low}, the balloon holding it there")
    return ""  # a fixed size: nothing to say


def host_scores(state: OperationalState, vm_id: str) -> list[HostScore]:
    """The hosts that fit the VM with the terms the planner ranks them by, best first: where it runs
    (cost nothing) and where a migration would take it, or where a start would put it."""
    from .cost import scalar
    from .factories import memory_free_after, placement_candidates, relocation_candidates, soft_penalty
    from .steps import MigrateVm, StartVm

    vm = state.vms[vm_id]
    here = state.vm_host(vm_id)
    out: list[tuple[tuple[object, ...], HostScore]] = []

    def add(host_id: str, cost: float, steps: int, current: bool) -> None:
        rejections = [r for r in placement_rejections(state, vm, host_id, capacity=False) if not r.hard]
        penalty = soft_penalty(rejections)
        free = memory_free_after(state, vm, host_id)
        key = -free if not state.settings.optimisation.power_saving else free
        score = HostScore(host_id, state.host_name(host_id), current, cost, penalty,
                          [f"{r.checker}@{r.level.value}" for r in rejections if r.level is not None], free, steps)
        out.append(((score.score, key, score.host_name, host_id), score))

    if here is not None and state.host_up(here):
        add(here, 0.0, 0, True)
        candidates = relocation_candidates(state, vm_id)
    else:
        candidates = placement_candidates(state, vm_id)
    seen = {here}
    for candidate in candidates:
        target = next((s.target if isinstance(s, MigrateVm) else s.host for s in reversed(candidate.steps)
                       if isinstance(s, MigrateVm | StartVm)), None)
        if target is None or target in seen:
            continue
        seen.add(target)
        cost, before = 0.0, state
        for step in candidate.steps:
            cost += scalar(step.cost(before))
            before = step.take(before)
        add(target, cost, len(candidate.steps), False)
    out.sort(key=lambda item: item[0])
    return [score for _, score in out]


def plan_notes(store: Any, vm_id: str) -> list[str]:
    """The plans about the VM that are waiting, running, or were rejected (and how to ask again)."""
    from ..core.models import Plan, PlanStatus
    from .replanner import plan_vms

    notes = []
    plans = sorted(store.list(Plan), key=lambda p: (p.decided_at or p.created_at, p.id))
    rejected = [p for p in plans if p.status is PlanStatus.rejected and not p.asked_again_by and vm_id in plan_vms(p)]
    for plan in plans:
        if vm_id not in plan_vms(plan):
            continue
        if plan.status is PlanStatus.proposed:
            notes.append(f"plan {plan.id[:8]} ({plan.plan_kind}) awaits approval (:plans, or plan approve)")
        elif plan.status in (PlanStatus.approved, PlanStatus.running):
            notes.append(f"plan {plan.id[:8]} ({plan.plan_kind}) is {plan.status.value}")
    if rejected:
        plan = rejected[-1]
        notes.append(f"plan {plan.id[:8]} ({plan.plan_kind}) was rejected by {plan.decided_by or 'the admin'}: "
                     f"start it again (s, or vm start) to have it proposed again")
    return notes


def spec_with_names(state: OperationalState, exp: Any) -> str:
    """The expectation's SPEC with referenced VMs and disks by name (stored by id)."""
    if getattr(exp, "vms", None):
        exp = exp.evolve(vms=[state.vm_name(v) if v in state.vms else v for v in exp.vms])
    if getattr(exp, "disks", None):
        exp = exp.evolve(disks=[state.disk_name(d) if d in state.disks else d for d in exp.disks])
    if getattr(exp, "disk", None) and exp.disk in state.disks:
        exp = exp.evolve(disk=state.disk_name(exp.disk))
    spec: str = exp.spec()
    return spec


def render(explanation: Explanation, *, limit: int = TEXT_HOST_LIMIT) -> str:
    e = explanation
    lines = []
    if e.host_id is not None:
        lines.append(f"  placement: {e.status} on {e.host_name}")
    else:
        lines.append("  placement: not on any host")
    if e.memory:
        lines.append(f"    {e.memory}")
    lines += [f"    {note}" for note in e.storage]
    met = [v.spec for v in e.expectations if v.met]
    if met:
        lines.append(f"    meets {', '.join(met)}")
    for v in e.expectations:
        if not v.met:
            lines.append(f"    does not meet {v.spec}: {v.reason}")
    others = [h for h in e.hosts if not h.current]
    # Fitting hosts first, then by how hard the reasons are, so the interesting ones fit in the limit.
    others.sort(key=lambda h: (not h.fits, len(h.reasons), h.host_name))
    if others:
        lines.append("  other hosts:")
    for h in others[:limit]:
        if h.fits and not h.reasons:
            lines.append(f"    {h.host_name}: fits ({format_size(h.free_memory)} memory, "
                         f"{max(h.free_cores, 0)} cores free)")
            continue
        verdict = "fits, but" if h.fits else "rejected"
        why = "; ".join(f"{r.checker}{'' if r.level == 'hard' else '@' + r.level}: {_strip(r.text, h.host_name)}"
                        for r in h.reasons)
        lines.append(f"    {h.host_name}: {verdict}: {why}")
    rest = others[limit:]
    if rest:
        fitting = sum(1 for h in rest if h.fits)
        lines.append(f"    ... {len(rest)} more hosts ({fitting} fit)")
    lines += render_scores(e, limit=SCORE_LIMIT)
    if e.plans:
        lines.append("  plans for it:")
        lines += [f"    {note}" for note in e.plans]
    return "\n".join(lines)


SCORE_LIMIT = 5  # hosts compared one by one in "why here"


def render_scores(e: Explanation, *, limit: int = SCORE_LIMIT) -> list[str]:
    """Why this host over the others that fit: the planner's terms for each, best first."""
    if not e.scores:
        return []
    tie = "least memory free: power saving packs" if e.pack else "most memory free"
    running = e.host_id is not None and any(s.current for s in e.scores)
    head = f"why {e.host_name} over the others that fit" if running else "where a start would put it"
    lines = [f"  {head} (lowest score wins, then {tie}):",
             "    score = cost of getting there + weight of the wants and wishes it breaks"]
    for s in e.scores[:limit]:
        terms = [f"steps {s.cost:.0f}" if not s.current else "no steps (it runs here)"]
        if s.broken:
            terms.append(f"broken {', '.join(s.broken)} {s.penalty:.0f}")
        lines.append(f"    {s.host_name}{' (here)' if s.current else ''}: score {s.score:.0f} = {' + '.join(terms)}; "
                     f"{100 * s.memory_free:.0f}% memory free")
    if len(e.scores) > limit:
        lines.append(f"    ... {len(e.scores) - limit} more ranked below")
    best = e.scores[0]
    if running and not best.current:
        lines.append(f"    {best.host_name} ranks first now: a running VM is moved only to fix what is wrong "
                     f"(or by load balancing), never for a better score alone")
    elif not running:
        lines.append(f"    a start would put it on {best.host_name}")
    return lines


def _strip(text: str, host_name: str) -> str:
    prefix = f"{host_name}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def explain_text(source: Any, vm_id: str) -> str:
    """For the command line: ``source`` is a core Store (its plans for the VM are said too) or an
    OperationalState."""
    if isinstance(source, OperationalState):
        return render(explain(source, vm_id))
    explanation = explain(OperationalState.from_store(source), vm_id)
    return render(replace(explanation, plans=plan_notes(source, vm_id) + room_notes(source, vm_id)))


ROOM_STATUSES = ("proposed", "approved", "running", "done")


def room_notes(store: Any, vm_id: str) -> list[str]:
    """The moves of the latest plan that makes room for this VM, or moves it to make room for
    another (issue 18 item 1): part of why a VM runs where it runs."""
    from ..core.models import Plan

    plans = sorted((p for p in store.list(Plan) if p.status.value in ROOM_STATUSES),
                   key=lambda p: (p.created_at, p.id), reverse=True)
    for plan in plans:
        moves = [s for s in plan.steps if s.type == "migrate-vm" and s.params.get("room_for")
                 and vm_id in (s.params.get("room_for"), s.params.get("vm"))]
        if moves:
            return [f"room: {s.description} (plan {plan.id[:8]}, {plan.status.value})" for s in moves]
    return []


def no_host_reason(state: OperationalState, vm_id: str, *, limit: int = 3) -> str | None:
    """Why no host can take the VM now (one hard reason per host), or None when one can."""
    from .factories import placement_candidates

    vm = state.vms.get(vm_id)
    if vm is None or placement_candidates(state, vm_id, limit=1):
        return None
    reasons = []
    for host_id in state.host_ids():
        name = state.host_name(host_id)
        hard = [r for r in placement_rejections(state, vm, host_id) if r.hard]
        reasons.append(f"{name}: {_strip(hard[0].reason, name) if hard else disk_reason(state, vm, host_id)}")
    if not reasons:
        return "there is no host to run it"
    more = f"; {len(reasons) - limit} more hosts" if len(reasons) > limit else ""
    return "no host fits: " + "; ".join(reasons[:limit]) + more


def disk_reason(state: OperationalState, vm: Any, host_id: str) -> str:
    """Why the VM's disks cannot be brought to a host it would otherwise fit: for a new disk too big for
    the free space, what each volume group has and the thin over-commit policy's answer."""
    from .factories import best_capability, bring_disk

    for link in vm.disks:
        disk = state.disks.get(link.disk_id)
        if disk is None or bring_disk(state, disk.id, host_id) is not None:
            continue
        if state.allocations(disk.id) or best_capability(state, disk, host_id) is not None:
            return f"disk {disk.name} cannot be brought there"
        return f"disk {disk.name}: {new_disk_reason(state, disk, host_id)}"
    return "its disks cannot be brought there"


def new_disk_reason(state: OperationalState, disk: Any, host_id: str) -> str:
    """Why a new disk gets no storage on a host: its first hard reason (the most free space first: "lvm:vg0:
    200.0G free, needs 1.0T"), and the thin over-commit policy's answer where it is asked."""
    from .checkers import allocation_rejections
    from .thin import refusal

    name = state.host_name(host_id)
    caps = sorted(state.capabilities(host_id), key=lambda c: (-state.free_storage(host_id, c.id), c.id))
    hard = [r.reason for cap in caps for r in allocation_rejections(state, disk, host_id, cap.id) if r.hard]
    why = _strip(hard[0], name).removeprefix(f"{name} ") if hard else "no storage there"
    thin = refusal(state, disk, host_id)
    return why + (f"; {thin}" if thin else "")


def no_storage_reason(state: OperationalState, disk_id: str, *, limit: int = 3) -> str | None:
    """Why a new disk that must be allocated gets storage on no host (one reason per host that is up),
    None where it has storage or some host would take it."""
    from .factories import bring_disk

    disk = state.disks.get(disk_id)
    if disk is None or state.allocations(disk_id):
        return None
    hosts = [h for h in state.host_ids() if state.host_up(h)]
    if any(bring_disk(state, disk_id, h) is not None for h in hosts):
        return None
    reasons = [f"{state.host_name(h)}: {new_disk_reason(state, disk, h)}" for h in hosts]
    if not reasons:
        return "no host is up"
    more = f"; {len(reasons) - limit} more hosts" if len(reasons) > limit else ""
    return "; ".join(reasons[:limit]) + more


def worst_level(verdict: HostVerdict) -> str | None:
    levels = [r.level for r in verdict.reasons]
    for name in ("hard", Level.dealbreaker.value, Level.want.value, Level.wish.value):
        if name in levels:
            return name
    return None
