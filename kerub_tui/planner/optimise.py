"""Optimisation when nothing is wrong (the original never did this): each a policy, off by default.

- Power saving: drain dedicated hosts whose memory load is below the threshold onto the others, then
  power them down. Targets are never filled above the load-balancing threshold, so balancing has no
  reason to move anything back; a host touched by a plan within the hold time is left alone. Of hosts
  equally loaded, the one whose guests cost least to move goes first, then the one plans left alone
  longest, then by id: never by name.
- Load balancing, with hysteresis: a host above the threshold for the hold time gives one VM at a
  time to the least loaded host, only if the busier of the two ends at least ``min_gain`` below where
  the source started and the target stays under the threshold. Every move strictly lowers the peak,
  so moves cannot cycle (never ping-pong).
- KSM by benefit, from the kernel's counters: on where memory is tight and several VMs share a host;
  off where it ran a few full scans and saved too little to pay for the CPU it burns; never back on
  where the counters say it did not pay.

Load is the share of a host's VM memory capacity reserved by its VMs: what the planner predicts
exactly. A plan that would break any expectation is not proposed.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter

from ..core.models import HostStatus, VirtualMachine
from .checkers import capacity_rejection
from .cost import scalar
from .factories import relocation_candidates
from .planning import PlanDraft, draft_from_steps
from .search import Evaluation, _touched_all
from .state import MIB, OperationalState
from .steps import MigrateVm, PowerDownHost, SetKsm, Step, Touched
from .steps.host import wake_means

PAGE = 4096
KSM_TIGHT = 0.85  # memory in use at or above this share of the host's RAM: KSM may pay
KSM_MIN_VMS = 2  # merging needs at least two guests
KSM_MIN_FULL_SCANS = 2  # judge the benefit only after this many full scans
KSM_MIN_SAVING_BYTES = 256 * MIB  # saving less than this (or 2 % of RAM) does not pay for ksmd's CPU
KSM_MIN_SAVING_SHARE = 0.02
MAX_BALANCING_MOVES = 5


def optimisation_drafts(state: OperationalState) -> list[PlanDraft]:
    policies = state.settings.optimisation
    drafts: list[PlanDraft] = []
    if policies.ksm:
        draft = ksm_draft(state)
        if draft is not None:
            drafts.append(draft)
    if policies.power_saving:
        draft = power_saving_draft(state)
        if draft is not None:
            drafts.append(draft)
    if policies.load_balancing and not any(d.kind == "power-saving" for d in drafts):
        draft = load_balancing_draft(state)
        if draft is not None:
            drafts.append(draft)
    return drafts


def _recently_touched(state: OperationalState, host_id: str) -> bool:
    last = state.history.get(host_id)
    hold = dt.timedelta(seconds=state.settings.optimisation.load_balancing_hold_seconds)
    return last is not None and state.now - last < hold


def _introduces_nothing(before: OperationalState, after: OperationalState, steps: list[Step],
                        base: Evaluation) -> bool:
    """True when the steps leave no violation or problem that was not there before."""
    ev = base.update(before, after, _touched_all(steps))
    return ev.keys() <= base.keys() and ev.hard <= base.hard


# --- power saving --------------------------------------------------------------------------------


def power_saving_draft(state: OperationalState) -> PlanDraft | None:
    policies = state.settings.optimisation
    threshold = policies.power_saving_threshold
    ceiling = policies.load_balancing_threshold
    up = [h for h in state.host_ids() if state.host_up(h) and not state.hosts[h].recycling]
    # only a host that can be woken again (wake-on-LAN, IPMI) is ever powered down
    candidates = [h for h in up if state.hosts[h].dedicated and wake_means(state.hosts[h]) is not None
                  and not _recently_touched(state, h)
                  and not state.locked("host", h) and state.memory_load(h) < threshold]
    candidates = _power_down_order(state, candidates, ceiling)
    base = Evaluation.full(state)
    steps: list[Step] = []
    drained: set[str] = set()
    current = state
    triggers: list[str] = []
    for host_id in candidates:
        if len(up) - len(drained) <= 1:
            break  # keep one host up
        moves = _drain(current, host_id, drained | {host_id}, ceiling)
        if moves is None:
            continue
        trial = current
        for step in moves:
            trial = step.take(trial)
        down = PowerDownHost(host_id)
        if down.blocked(trial) is not None:
            continue
        after = down.take(trial)
        if not _introduces_nothing(current, after, [*moves, down], base.update(state, current, _touched_all(steps))):
            continue
        steps.extend([*moves, down])
        triggers.append(f"{state.host_name(host_id)} is {100 * state.memory_load(host_id):.0f}% loaded "
                        f"(below {100 * threshold:.0f}%): drain it and power it down")
        drained.add(host_id)
        current = after
    if not steps:
        return None
    return draft_from_steps(state, steps, kind="power-saving", trigger=triggers,
                            method="power saving: drain lightly loaded dedicated hosts",
                            subjects=Touched(hosts=frozenset(drained)))


def _power_down_order(state: OperationalState, candidates: list[str], ceiling: float) -> list[str]:
    """The least loaded first. Between equally loaded hosts, never their names: first the one whose guests
    cost least to move (the drain's steps by the planner's cost model: a guest taking its disk along costs
    more than one that only moves its memory; a host that cannot be drained last), then the one no plan
    touched for longest (none in the history first: it has been up, untouched, the longest, and a host
    woken a while ago is not cycled again), then the host's id (stable, whatever the admin calls it)."""
    loads = {h: state.memory_load(h) for h in candidates}
    alike = Counter(loads.values())
    tied = {h for h in candidates if alike[loads[h]] > 1}

    def drain_cost(host_id: str) -> float:
        if host_id not in tied:
            return 0.0
        moves = _drain(state, host_id, {host_id}, ceiling)
        if moves is None:
            return math.inf
        total, current = 0.0, state
        for step in moves:
            total += scalar(step.cost(current))
            current = step.take(current)
        return total

    costs = {h: drain_cost(h) for h in candidates}

    def touched(host_id: str) -> tuple[bool, dt.datetime]:
        last = state.history.get(host_id)
        return (last is not None, last if last is not None else state.now)

    return sorted(candidates, key=lambda h: (loads[h], costs[h], touched(h), h))


def _drain(state: OperationalState, host_id: str, avoid: set[str], ceiling: float) -> list[Step] | None:
    """Moves taking every VM off ``host_id`` without loading any target above ``ceiling``."""
    steps: list[Step] = []
    current = state
    for vm_id in sorted(state.vms_on(host_id), key=lambda v: (-state.vm_reserved(v), v)):
        vm = state.vms[vm_id]

        def too_full(target: str, vm: VirtualMachine = vm, current: OperationalState = current) -> bool:
            if target in avoid or not current.host_up(target):
                return True
            load_after = (current.mem_used.get(target, 0) + current.vm_reserved(vm.id)) / max(
                current.memory_capacity(target), 1)
            return load_after > ceiling

        options = relocation_candidates(current, vm_id, avoid=too_full, limit=1)
        if not options:
            return None
        for step in options[0].steps:
            current = step.take(current)
        steps.extend(options[0].steps)
    return steps


# --- load balancing ------------------------------------------------------------------------------


def overloaded_hosts(state: OperationalState) -> list[str]:
    threshold = state.settings.optimisation.load_balancing_threshold
    return [h for h in state.host_ids() if state.host_up(h) and state.memory_load(h) > threshold]


def load_balancing_draft(state: OperationalState) -> PlanDraft | None:
    policies = state.settings.optimisation
    threshold = policies.load_balancing_threshold
    hold = dt.timedelta(seconds=policies.load_balancing_hold_seconds)
    base = Evaluation.full(state)
    current = state
    steps: list[Step] = []
    triggers: list[str] = []
    sources: set[str] = set()
    for _ in range(MAX_BALANCING_MOVES):
        hot = []
        for h in overloaded_hosts(current):
            since = state.overloaded_since.get(h)
            held = hold.total_seconds() == 0 or (since is not None and state.now - since >= hold)
            if held and not state.locked("host", h):
                hot.append(h)
        if not hot:
            break
        # the most loaded; of equally loaded hosts the one overloaded longest, then by id (never by name)
        source = min(hot, key=lambda h: (-current.memory_load(h), state.overloaded_since.get(h, state.now), h))
        move = _best_move(current, source, threshold, policies.load_balancing_min_gain)
        if move is None:
            break
        after = move.take(current)
        if not _introduces_nothing(current, after, [move], base.update(state, current, _touched_all(steps))):
            break
        if source not in sources:
            triggers.append(f"{state.host_name(source)} is {100 * current.memory_load(source):.0f}% loaded "
                            f"(above {100 * threshold:.0f}% for at least {policies.load_balancing_hold_seconds} s)")
            sources.add(source)
        steps.append(move)
        current = after
    if not steps:
        return None
    return draft_from_steps(state, steps, kind="load-balancing", trigger=triggers,
                            method="load balancing: one VM at a time, each move lowering the peak load",
                            subjects=Touched(hosts=frozenset(sources)))


def _best_move(state: OperationalState, source: str, threshold: float, min_gain: float) -> Step | None:
    before = state.memory_load(source)
    best: tuple[float, float, str, str, Step] | None = None
    for vm_id in state.vms_on(source):
        vm = state.vms[vm_id]
        if vm.disks or any(e.type == "no-migration" for e in vm.expectations):
            continue  # moving storage for balance is not worth it; no-migration is respected at any level
        memory = state.vm_reserved(vm_id)
        source_after = (state.mem_used.get(source, 0) - memory) / max(state.memory_capacity(source), 1)
        for target in state.host_ids():
            if target == source or not state.host_up(target) or capacity_rejection(state, vm, target) is not None:
                continue
            target_after = (state.mem_used.get(target, 0) + memory) / max(state.memory_capacity(target), 1)
            peak = max(source_after, target_after)
            if target_after > threshold or peak > before - min_gain:
                continue
            step = MigrateVm(vm_id, source, target)
            if step.blocked(state) is not None:
                continue
            # the lowest peak; at equal peaks the target left with the most room, then by id (never by name)
            key = (peak, target_after, target, vm_id, step)
            if best is None or key[:4] < best[:4]:
                best = key
    return best[4] if best is not None else None


# --- KSM -----------------------------------------------------------------------------------------


def ksm_saving(state: OperationalState, host_id: str) -> int:
    dyn = state.host_dyn.get(host_id)
    return dyn.ksm.pages_sharing * PAGE if dyn is not None else 0


def _min_saving(state: OperationalState, host_id: str) -> int:
    host = state.hosts[host_id]
    total = host.capabilities.memory_bytes if host.capabilities else 0
    return max(KSM_MIN_SAVING_BYTES, int(total * KSM_MIN_SAVING_SHARE))


def _memory_tight(state: OperationalState, host_id: str) -> bool:
    dyn = state.host_dyn.get(host_id)
    host = state.hosts[host_id]
    total = host.capabilities.memory_bytes if host.capabilities else 0
    if dyn is not None and dyn.memory_used is not None and total:
        return dyn.memory_used / total >= KSM_TIGHT
    return state.memory_load(host_id) >= KSM_TIGHT


def ksm_decision(state: OperationalState, host_id: str) -> tuple[SetKsm, str] | None:
    """Whether KSM should change on a host, and why (in words, with the counters)."""
    dyn = state.host_dyn.get(host_id)
    if dyn is None or dyn.status is not HostStatus.up or not dyn.ksm.available or state.locked("host", host_id):
        return None
    ksm = dyn.ksm
    name = state.host_name(host_id)
    saving = ksm_saving(state, host_id)
    enough = _min_saving(state, host_id)
    vms = len(state.vms_on(host_id))
    if ksm.run:
        if ksm.full_scans >= KSM_MIN_FULL_SCANS and saving < enough:
            return SetKsm(host_id, run=False), (
                f"KSM on {name} saved {saving // MIB} MiB after {ksm.full_scans} full scans "
                f"(less than {enough // MIB} MiB): not worth its CPU")
        return None
    if not _memory_tight(state, host_id) or vms < KSM_MIN_VMS:
        return None
    if ksm.full_scans > 0 and saving < enough:
        return None  # it ran here before and did not pay
    return SetKsm(host_id, run=True), f"memory on {name} is tight with {vms} VMs: KSM can merge their identical pages"


def ksm_draft(state: OperationalState) -> PlanDraft | None:
    steps: list[Step] = []
    triggers: list[str] = []
    hosts: set[str] = set()
    for host_id in state.host_ids():
        if _recently_touched(state, host_id):
            continue
        decision = ksm_decision(state, host_id)
        if decision is not None:
            steps.append(decision[0])
            triggers.append(decision[1])
            hosts.add(host_id)
    if not steps:
        return None
    return draft_from_steps(state, steps, kind="ksm", trigger=triggers,
                            method="KSM by benefit, from the kernel's counters",
                            subjects=Touched(hosts=frozenset(hosts)))
