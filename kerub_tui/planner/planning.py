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

from ..core.models import Cost, Plan
from .checkers import Violation
from .factories import Item
from .problems import Problem
from .search import Evaluation, SearchResult, describe_item, is_hard, replay, search
from .state import GIB, OperationalState
from .steps import Step, Touched

# Problems whose only fix is to move things off a host: a plan answering only these is an evacuation.
_EVACUATION = {"vm-on-recycling-host", "allocation-on-recycling-host", "vm-on-end-of-life-host",
               "allocation-on-end-of-life-host"}


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
        planned = [step.to_planned(state) for step, state in zip(self.steps, self.states)]
        return Plan(
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
    """The plan that fixes what is wrong (violations, problems), or None when there is nothing to do."""
    result = search(state, **search_options)
    if not result.steps:
        return None
    return draft_from_result(result)


def draft_from_result(result: SearchResult) -> PlanDraft:
    kind = "repair"
    if result.resolved and all(isinstance(i, Problem) and i.type in _EVACUATION for i in result.resolved):
        kind = "evacuate"
    return PlanDraft(
        kind=kind,
        steps=result.steps,
        states=result.states,
        trigger=[describe_item(i) for i in result.resolved],
        unsatisfied=unsatisfied_lines(result.remaining, result.introduced),
        method=result.method,
        subjects=_subjects(result.resolved),
    )


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
    repair = repair_draft(state, **search_options)
    if repair is not None:
        return [repair]
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
    facts.append(["locks", sorted(state.locks)])
    blob = json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


__all__ = ["PlanDraft", "Violation", "draft_from_steps", "open_items", "plan_all", "premises", "repair_draft",
           "signature", "plan_signature"]
