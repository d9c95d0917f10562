"""From a state to plan drafts: the repair plan when something is wrong, optimisation plans otherwise.

A draft holds the steps with the state each one starts from, so it can be shown (descriptions,
commands, costs), stored as a core Plan, fingerprinted (premises) and compared with open proposals
(``signature``) without planning again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.models import PLAN_KINDS, Cost, Plan
from .checkers import Violation
from .factories import Item
from .problems import Problem
from .search import Evaluation, SearchResult, describe_item, is_hard, replay, search
from .state import GIB, OperationalState
from .steps import Step, Touched

# What a plan fixing each problem is for (core.models.PLAN_KINDS): its kind.
_PROBLEM_KINDS = {
    "vm-lost-with-host": "restart",
    "vm-on-recycling-host": "evacuate", "allocation-on-recycling-host": "evacuate",
    "vm-on-end-of-life-host": "evacuate", "allocation-on-end-of-life-host": "evacuate",
    "allocation-on-failing-device": "evacuate",
    "cpu-overheat": "overheat",
    "thin-pool-almost-full": "storage", "undersized-allocation": "storage",
    "unused-export": "tidy", "unused-export-client": "tidy", "unused-iscsi-target": "tidy",
    "unused-iscsi-initiator": "tidy", "unused-mount": "tidy", "unused-seed": "tidy", "unused-iscsi-secret": "tidy",
}
_VIOLATION_KINDS = {"storage-redundancy": "redundancy", "vm-dependency": "start", "ha": "restart"}
_KIND_ORDER = {kind: n for n, kind in enumerate(PLAN_KINDS)}


def item_kind(state: OperationalState, item: Item) -> str:
    """What a plan fixing ``item`` is for: restart, evacuate, start, stop, placement, storage, ..."""
    if isinstance(item, Problem):
        return _PROBLEM_KINDS.get(item.type, "repair")
    if item.type == "availability" and item.subject_kind == "vm":
        vm = state.vms.get(item.subject_id)
        exp = vm.expectations[item.index] if vm is not None and item.index < len(vm.expectations) else None
        return "stop" if exp is not None and getattr(exp, "up", True) is False else "start"
    if item.type in _VIOLATION_KINDS:
        return _VIOLATION_KINDS[item.type]
    return "placement" if item.subject_kind == "vm" else "storage"


def joined_kind(kinds: Iterable[str]) -> str:
    """One kind for a plan of several ("start+evacuate"), in PLAN_KINDS' order."""
    return "+".join(sorted(set(kinds), key=lambda k: (_KIND_ORDER.get(k, len(_KIND_ORDER)), k))) or "repair"


@dataclass
class PlanDraft:
    kind: str
    steps: tuple[Step, ...]
    states: list[OperationalState]  # before each step, then the final state
    trigger: list[str]
    unsatisfied: list[str]
    method: str
    subjects: Touched = field(default_factory=Touched)  # what the triggers are about, for premises

    @property
    def initial(self) -> OperationalState:
        return self.states[0]

    @property
    def final(self) -> OperationalState:
        return self.states[-1]

    def signature(self) -> tuple[Any, ...]:
        """Equal for two drafts doing the same thing, whatever the wording or the ids of their plans."""
        return signature(self.kind, self.steps)

    def cost(self) -> Cost:
        total = Cost()
        for step, state in zip(self.steps, self.states):
            total = total + step.cost(state)
        return total

    def premises(self) -> str:
        return premises(self.initial, self.steps, self.subjects)

    def to_plan(self) -> Plan:
        from .ha import consent_lines

        planned = [step.to_planned(state) for step, state in zip(self.steps, self.states)]
        return Plan(
            consent=consent_lines(self.steps, self.states),
            plan_kind=self.kind,
            trigger=list(self.trigger),
            steps=planned,
            effects=[p.effect for p in planned if p.effect],
            cost=self.cost(),
            unsatisfied=list(self.unsatisfied),
            premises=self.premises(),
            method=self.method,
        )


def signature(kind: str, steps: Iterable[Step]) -> tuple[Any, ...]:
    return (kind, tuple(s.sort_key() for s in steps))


def plan_signature(plan: Plan) -> tuple[Any, ...]:
    from .steps import step_from_planned

    return signature(plan.plan_kind, [step_from_planned(p) for p in plan.steps])


def _subjects(items: Iterable[Item]) -> Touched:
    vms: set[str] = set()
    disks: set[str] = set()
    hosts: set[str] = set()
    for item in items:
        if isinstance(item, Problem):
            hosts.add(item.host_id)
            if item.subject_id:
                (vms if item.type.startswith("vm-") else disks).add(item.subject_id)
        elif item.subject_kind == "vm":
            vms.add(item.subject_id)
        else:
            disks.add(item.subject_id)
    return Touched(frozenset(vms), frozenset(disks), frozenset(hosts))


def unsatisfied_lines(remaining: Iterable[Item], introduced: Iterable[Item]) -> list[str]:
    out = []
    for item in remaining:
        prefix = "could not fix: " if is_hard(item) else ""
        out.append(prefix + describe_item(item))
    for item in introduced:
        out.append("accepted: " + describe_item(item))
    return out


def repair_draft(state: OperationalState, **search_options: Any) -> PlanDraft | None:
    """The one plan that fixes all that is wrong (violations, problems), or None when there is nothing
    to do. The re-planner proposes it split into independent plans (``repair_drafts``)."""
    result = search(state, **search_options)
    if not result.steps:
        return None
    return draft_from_result(result)


def repair_drafts(state: OperationalState, **search_options: Any) -> list[PlanDraft]:
    """The plans that fix what is wrong, one per independent purpose: starts the admin asked for, the
    restart of a failed host's VMs and an evacuation are separate proposals, each approved or rejected
    on its own. Steps of one purpose that cannot run without another's join that plan."""
    result = search(state, **search_options)
    if not result.steps:
        return []
    return split_result(result)


def _step_kind(state: OperationalState, step: Step, origin: Item) -> str:
    """What a step is for: its item's kind, but a running VM moved to make room for another is a
    placement (issue 18 item 1), so a policy that auto-approves starts never moves running VMs."""
    from .steps import MigrateVm

    if isinstance(step, MigrateVm) and step.room_for:
        return "placement"
    return item_kind(state, origin)


def draft_from_result(result: SearchResult) -> PlanDraft:
    state = result.initial
    # what its steps were chosen for (a lost VM's restart also meets its "up": a restart, not a start)
    kinds = [_step_kind(state, s, result.origins[s]) for s in result.steps if s in result.origins]
    kinds = kinds or [item_kind(state, i) for i in result.resolved]
    return PlanDraft(
        kind=joined_kind(kinds),
        steps=result.steps,
        states=result.states,
        trigger=[describe_item(i) for i in result.resolved],
        unsatisfied=unsatisfied_lines(result.remaining, result.introduced),
        method=result.method,
        subjects=_subjects(result.resolved),
    )


def _replays(state: OperationalState, steps: list[Step]) -> bool:
    return replay(state, steps)[1] is None


def split_result(result: SearchResult) -> list[PlanDraft]:
    """The search's plan as independent drafts, one per purpose of its steps (see ``repair_drafts``)."""
    state = result.initial
    groups: dict[str, list[int]] = {}
    last = None
    for n, step in enumerate(result.steps):
        origin = result.origins.get(step)
        kind = item_kind(state, origin) if origin is not None else (last or "repair")  # moves stay with it
        groups.setdefault(kind, []).append(n)
        last = kind
    units: list[tuple[set[str], list[int]]] = []
    for kind, indexes in groups.items():
        if _replays(state, [result.steps[i] for i in indexes]):
            units.append(({kind}, indexes))
            continue
        for kinds, taken in units:  # it needs another purpose's steps: one plan with the first that suffices
            trial = sorted(taken + indexes)
            if _replays(state, [result.steps[i] for i in trial]):
                kinds.add(kind)
                taken[:] = trial
                break
        else:
            merged = sorted({i for _, taken in units for i in taken} | set(indexes))
            units = [({k for kinds, _ in units for k in kinds} | {kind}, merged)]
    if len(units) == 1:
        return [draft_from_result(result)]
    for kinds, taken in units:  # a unit moving running VMs to make room is a placement too
        kinds.update(_step_kind(state, result.steps[i], result.origins[result.steps[i]]) for i in taken
                     if result.steps[i] in result.origins)

    def unit_of(item: Item) -> int:
        kind = item_kind(state, item)
        for n, (kinds, _) in enumerate(units):
            if kind in kinds:
                return n
        subjects = _subjects([item])
        for n, (_, taken) in enumerate(units):
            touched = [result.steps[i].touched() for i in taken]
            if any(t.vms & subjects.vms or t.disks & subjects.disks or t.hosts & subjects.hosts for t in touched):
                return n
        return 0

    drafts = []
    for n, (kinds, taken) in enumerate(units):
        steps = tuple(result.steps[i] for i in taken)
        states, _ = replay(state, steps)
        resolved = [i for i in result.resolved if unit_of(i) == n]
        remaining = [i for i in result.remaining if unit_of(i) == n]
        introduced = [i for i in result.introduced if unit_of(i) == n]
        drafts.append(PlanDraft(
            kind=joined_kind(kinds), steps=steps, states=states, trigger=[describe_item(i) for i in resolved],
            unsatisfied=unsatisfied_lines(remaining, introduced), method=result.method + "; proposed apart",
            subjects=_subjects(resolved)))
    return drafts


def draft_from_steps(state: OperationalState, steps: Iterable[Step], *, kind: str, trigger: list[str],
                     method: str, subjects: Touched | None = None) -> PlanDraft:
    """A draft of steps chosen by a policy (the optimiser), checked to replay on ``state``."""
    steps = tuple(steps)
    states, reason = replay(state, steps)
    if reason is not None:
        raise ValueError(f"the {kind} steps do not apply: {reason}")
    return PlanDraft(kind=kind, steps=steps, states=states, trigger=trigger, unsatisfied=[], method=method,
                     subjects=subjects or Touched())


def open_items(state: OperationalState) -> list[Item]:
    """What is wrong now, dealbreakers and problems first."""
    items = Evaluation.full(state).items()
    return sorted(items, key=lambda i: (not is_hard(i), i.type, getattr(i, "subject_id", "")))


def plan_all(state: OperationalState, **search_options: Any) -> list[PlanDraft]:
    """The repair plan if anything can be repaired; otherwise the optimisation plans the policies allow."""
    repairs = repair_drafts(state, **search_options)
    if repairs:
        return repairs
    from .optimise import optimisation_drafts

    return optimisation_drafts(state)


# --- premises --------------------------------------------------------------------------------------


def _host_facts(state: OperationalState, host_id: str) -> Any:
    host = state.hosts.get(host_id)
    dyn = state.host_dyn.get(host_id)
    config = state.host_config.get(host_id)
    static = host.model_dump(mode="json", exclude={"capabilities": {"discovered_at"}}) if host else None
    dynamic = None
    if dyn is not None:
        dynamic = {
            "status": dyn.status.value,
            "fenced": dyn.fence is not None,
            "failing": sorted(dyn.failing_devices),
            "ksm": [dyn.ksm.available, dyn.ksm.run],
            "hot": dyn.cpu_temperature is not None and dyn.cpu_temperature >= 85.0,
            # whole GiB, so that a few written blocks do not invalidate every proposal
            "storage": {k: v // GIB for k, v in sorted(dyn.storage_free.items())},
        }
    return {
        "static": static,
        "dynamic": dynamic,
        "config": config.model_dump(mode="json", exclude={"id"}) if config else None,
        "vms": state.vms_on(host_id),
    }


_NOTHING_TOUCHED = Touched()


def premises(state: OperationalState, steps: Iterable[Step], subjects: Touched = _NOTHING_TOUCHED) -> str:
    """A fingerprint of the facts a plan relies on: the hosts, VMs and disks its steps and triggers
    touch. A monitoring tick that changes none of them leaves it unchanged."""
    vms, disks, hosts = set(subjects.vms), set(subjects.disks), set(subjects.hosts)
    for step in steps:
        touched = step.touched()
        vms |= touched.vms
        disks |= touched.disks
        hosts |= touched.hosts
    for vm_id in list(vms):
        h = state.vm_host(vm_id)
        if h is not None:
            hosts.add(h)
    facts: list[Any] = []
    for host_id in sorted(hosts):
        facts.append(["host", host_id, _host_facts(state, host_id)])
    for vm_id in sorted(vms):
        vm = state.vms.get(vm_id)
        dyn = state.vm_dyn.get(vm_id)
        facts.append(["vm", vm_id, vm.model_dump(mode="json") if vm else None,
                      [dyn.host_id, dyn.status.value] if dyn else None])
    for disk_id in sorted(disks):
        disk = state.disks.get(disk_id)
        disk_dyn = state.disk_dyn.get(disk_id)
        facts.append(["disk", disk_id, disk.model_dump(mode="json") if disk else None,
                      disk_dyn.model_dump(mode="json", exclude={"updated_at", "id"}) if disk_dyn else None])
    # only the locks on what it touches: another plan approved elsewhere changes nothing it relies on
    ids = vms | disks | hosts
    facts.append(["locks", sorted(lock for lock in state.locks if any(i in lock for i in ids))])
    blob = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


__all__ = ["PlanDraft", "Violation", "draft_from_steps", "item_kind", "joined_kind", "open_items", "plan_all",
           "premises", "repair_draft", "repair_drafts", "signature", "split_result", "plan_signature"]
