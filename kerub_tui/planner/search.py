"""Cost-guided best-first search from the current state to one with no dealbreaker violated and no problem.

A node is a state reached by a sequence of steps. Its value, were the plan to stop there, is
``J = g + penalty``: the scalar cost of the steps so far plus the price of each want and wish left
violated. Nodes are expanded by the factories of the first open dealbreaker or problem (in a fixed
order, so independent fixes are not tried in every permutation); a node with none left may still be
expanded by the factories of its soft violations, to buy a want for less than its penalty.

Priority is ``g + penalty + H * open_hard_items`` (deeper first on ties): a dive towards a goal. In
greedy mode (many open items) H outweighs any cost or penalty, so a node with fewer open hard items always
comes first: with H about one step's cost, a fleet too small for all its pending VMs had the search
widen over siblings whose room-making moves cost more than H, until it stalled (300 nodes at 10 hosts).
Pruning uses ``g``, a true lower bound of any completion's value, against the best goal found, so in
exact mode (few open items) the result is the cheapest plan within the node budget. With many open
items (many pending VMs) the search runs greedily: first goal wins, and the plan says so.

Deterministic: items and candidates are ordered by explicit keys, the heap breaks ties by insertion
order, and the node budget (not the clock) is the bound that normally ends a search; the time limit
is a safety net far above what the budget takes.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..core.expectations import Level
from ..core.models import Cost
from .checkers import Violation, all_violations, disk_violations, vm_violations
from .cost import PENALTY, scalar
from .factories import Candidate, Item, candidates
from .problems import Problem, all_problems, host_problems
from .state import OperationalState
from .steps import Step, Touched

H_UNIT = 30.0  # priority added per open hard item: about one step's cost, so the search dives
H_GREEDY = 1e6  # the same in greedy mode: more than any plan's cost and penalties, a pure dive
EXACT_LIMIT = 6  # open hard items at the root up to which the search keeps looking for cheaper plans
GREEDY_CANDIDATES = 4  # per item in greedy mode
SOFT_ITEMS_PER_NODE = 4
DEFAULT_MAX_NODES = 4000
DEFAULT_MAX_SECONDS = 30.0
STALL_LIMIT = 300  # nodes without fewer open hard items: the rest cannot be fixed, stop looking

# Which open items are tackled first: what is already broken, then what must run, then the rest.
_TYPE_ORDER = {
    "vm-lost-with-host": 0,
    "allocation-on-failing-device": 1,
    "vm-on-recycling-host": 2,
    "allocation-on-recycling-host": 3,
    "vm-on-end-of-life-host": 4,
    "allocation-on-end-of-life-host": 5,
    "storage-availability": 6,
    "storage-redundancy": 7,
    "availability": 8,
    "vm-dependency": 9,
    "cpu-overheat": 12,
    "thin-pool-almost-full": 13,
    "undersized-allocation": 14,
}


def is_hard(item: Item) -> bool:
    return isinstance(item, Problem) or item.level is Level.dealbreaker


def item_penalty(item: Item) -> float:
    return 0.0 if is_hard(item) else PENALTY[item.level]  # type: ignore[union-attr]


def item_key(item: Item) -> tuple[str, ...]:
    if isinstance(item, Problem):
        return ("problem", *item.key)
    return ("violation", item.subject_kind, item.subject_id, str(item.index))


def describe_item(item: Item) -> str:
    return item.describe()


# --- evaluation ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """Every violation and problem of one state, by subject, with the totals the search needs."""

    vm_v: Mapping[str, tuple[Violation, ...]]
    disk_v: Mapping[str, tuple[Violation, ...]]
    host_p: Mapping[str, tuple[Problem, ...]]
    hard: int
    penalty: float

    @classmethod
    def full(cls, state: OperationalState) -> Evaluation:
        vm_v: dict[str, list[Violation]] = {}
        disk_v: dict[str, list[Violation]] = {}
        for v in all_violations(state):
            (vm_v if v.subject_kind == "vm" else disk_v).setdefault(v.subject_id, []).append(v)
        host_p: dict[str, list[Problem]] = {}
        for p in all_problems(state):
            host_p.setdefault(p.host_id, []).append(p)
        items: list[Item] = [*itertools.chain.from_iterable(vm_v.values()),
                             *itertools.chain.from_iterable(disk_v.values()),
                             *itertools.chain.from_iterable(host_p.values())]
        return cls({k: tuple(v) for k, v in vm_v.items()}, {k: tuple(v) for k, v in disk_v.items()},
                   {k: tuple(v) for k, v in host_p.items()},
                   sum(1 for i in items if is_hard(i)), sum(item_penalty(i) for i in items))

    def update(self, before: OperationalState, after: OperationalState, touched: Touched) -> Evaluation:
        vms, disks, hosts = affected(before, after, touched)
        hard, penalty = self.hard, self.penalty
        vm_v = dict(self.vm_v)
        for vm_id in vms:
            for old in vm_v.pop(vm_id, ()):
                hard -= is_hard(old)
                penalty -= item_penalty(old)
            new = vm_violations(after, vm_id)
            if new:
                vm_v[vm_id] = tuple(new)
                hard += sum(is_hard(v) for v in new)
                penalty += sum(item_penalty(v) for v in new)
        disk_v = dict(self.disk_v)
        for disk_id in disks:
            for old in disk_v.pop(disk_id, ()):
                hard -= is_hard(old)
                penalty -= item_penalty(old)
            new = disk_violations(after, disk_id)
            if new:
                disk_v[disk_id] = tuple(new)
                hard += sum(is_hard(v) for v in new)
                penalty += sum(item_penalty(v) for v in new)
        host_p = dict(self.host_p)
        for host_id in hosts:
            hard -= len(host_p.pop(host_id, ()))
            new_p = host_problems(after, host_id)
            if new_p:
                host_p[host_id] = tuple(new_p)
                hard += len(new_p)
        return Evaluation(vm_v, disk_v, host_p, hard, max(penalty, 0.0))

    def items(self) -> list[Item]:
        out: list[Item] = []
        for mapping in (self.vm_v, self.disk_v, self.host_p):
            for key in sorted(mapping):
                out.extend(mapping[key])
        return out

    def keys(self) -> set[tuple[str, ...]]:
        return {item_key(i) for i in self.items()}


def affected(
    before: OperationalState, after: OperationalState, touched: Touched
) -> tuple[list[str], list[str], list[str]]:
    """The VMs, disks and hosts whose verdicts a step touching ``touched`` may have changed."""
    vms = set(touched.vms)
    hosts = set(touched.hosts)
    disks = set(touched.disks)
    for vm_id in touched.vms:
        for st in (before, after):
            h = st.vm_host(vm_id)
            if h is not None:
                hosts.add(h)
        vm = after.vms.get(vm_id)
        for link in vm.disks if vm is not None else ():
            for alloc in after.allocations(link.disk_id):
                hosts.add(alloc.host_id)
        vms.update(after.static.vm_referrers.get(vm_id, ()))
    for disk_id in touched.disks:
        disks.update(after.static.disk_referrers.get(disk_id, ()))
        for st in (before, after):
            for alloc in st.allocations(disk_id):
                hosts.add(alloc.host_id)
        vms.update(after.disk_users(disk_id))
    hosts |= _acl_holders(before, after, hosts)
    hosts |= _share_holders(after, touched)
    for host_id in hosts:
        vms.update(after.host_vms.get(host_id, ()))
        vms.update(before.host_vms.get(host_id, ()))
        on_host = {*after.host_disks.get(host_id, ()), *before.host_disks.get(host_id, ())}
        disks.update(on_host)
        # a VM elsewhere whose disk is here: whether it can restart (ha) reads this host's status
        for disk_id in on_host:
            vms.update(after.disk_users(disk_id))
    return sorted(vms), sorted(disks), sorted(hosts)


def _share_holders(after: OperationalState, touched: Touched) -> set[str]:
    """Hosts sharing or mounting a disk of a touched VM, or a touched disk: whether such a share is still
    used reads where its VMs run (problems.unused_shares), and a share need not sit where the disk's
    storage is now (it moved, the share is left over). Found among the hosts a detector may speak of,
    only when something touched has a disk."""
    from .problems import hosts_to_check

    disks = set(touched.disks)
    for vm_id in touched.vms:
        vm = after.vms.get(vm_id)
        if vm is not None:
            disks.update(link.disk_id for link in vm.disks)
    if not disks:
        return set()
    out = set()
    for host_id in hosts_to_check(after):
        config = after.host_config.get(host_id)
        if config is not None and any(share.disk_id in disks for shares in (config.exports, config.iscsi_targets,
                                                                           config.mounts) for share in shares):
            out.add(host_id)
    return out


def _acl_holders(before: OperationalState, after: OperationalState, hosts: set[str]) -> set[str]:
    """Hosts whose problems read another host's status: an iSCSI target whose ACL names a host that went
    away or came back (problems.unused_shares keeps an away host's address until it is back). Found among
    the hosts a detector may speak of, only when one of ``hosts`` went up or down."""
    from .problems import hosts_to_check

    turned = {after.hosts[h].address for h in hosts
              if h in after.hosts and before.host_up(h) != after.host_up(h)}
    if not turned:
        return set()
    out = set()
    for host_id in hosts_to_check(after):
        config = after.host_config.get(host_id)
        if config is not None and any(a in turned for t in config.iscsi_targets for a in t.initiators):
            out.add(host_id)
    return out


# --- the search ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    state: OperationalState
    steps: tuple[Step, ...]
    g: float
    ev: Evaluation
    origins: tuple[Item, ...] = ()  # per step, the item it was chosen to fix

    @property
    def value(self) -> float:
        return self.g + self.ev.penalty


@dataclass
class SearchResult:
    steps: tuple[Step, ...]
    initial: OperationalState
    final: OperationalState
    resolved: list[Item]  # open at the start, fixed by the plan
    remaining: list[Item]  # still open at the end (dealbreakers and problems here could not be fixed)
    introduced: list[Item]  # wants and wishes the plan breaks knowingly
    method: str
    nodes: int
    complete: bool  # no dealbreaker violated and no problem left
    value: float = 0.0
    states: list[OperationalState] = field(default_factory=list)  # before each step, then the final
    origins: dict[Step, Item] = field(default_factory=dict)  # the item each step was chosen to fix

    @property
    def cost(self) -> Cost:
        total = Cost()
        for step, state in zip(self.steps, self.states):
            total = total + step.cost(state)
        return total


def _item_order(state: OperationalState, item: Item, smallest_first: bool = False) -> tuple[object, ...]:
    """Where an open item comes in the order they are tackled. It reads the item and what no step changes
    (the VMs' own documents): a search keeps each item's answer for all its nodes."""
    hard = 0 if is_hard(item) else 1
    order = _TYPE_ORDER.get(item.type, 10)
    size: tuple[object, ...] = ()
    if isinstance(item, Violation) and item.subject_kind == "vm" and item.type == "availability":
        vm = state.vms.get(item.subject_id)
        if vm is not None:
            # Biggest first (first-fit decreasing) packs best when everything fits; when it cannot all
            # fit, smallest first leaves the fewest VMs unplaced.
            sign = 1 if smallest_first else -1
            size = (-len(vm.expectations), sign * vm.memory_max, sign * vm.cpus)
    return (hard, order, size, item_key(item))


def _oversubscribed(state: OperationalState, ev: Evaluation) -> bool:
    """More memory asked by VMs waiting to start than free on the hosts that could take them."""
    from .checkers import host_usable
    from .state import vm_memory

    wanted = 0
    for vm_id, violations in ev.vm_v.items():
        if any(v.type == "availability" and v.hard for v in violations) and state.vm_host(vm_id) is None:
            wanted += vm_memory(state.vms[vm_id])
    if not wanted:
        return False
    free = 0
    for host_id in state.host_ids():
        if host_usable(state, host_id) is None:
            free += max(state.free_memory(host_id), 0)
            if free >= wanted:
                return False  # enough found: the rest of the fleet need not be counted
    return True


def replay(state: OperationalState, steps: Iterable[Step]) -> tuple[list[OperationalState], str | None]:
    """States before each step and the final one; or the reason the first blocked step cannot run."""
    states = [state]
    for step in steps:
        reason = step.blocked(state)
        if reason is not None:
            return states, f"{step.describe(state)}: {reason}"
        state = step.take(state)
        states.append(state)
    return states, None


def _touched_all(steps: Iterable[Step]) -> Touched:
    vms: set[str] = set()
    disks: set[str] = set()
    hosts: set[str] = set()
    for step in steps:
        t = step.touched()
        vms |= t.vms
        disks |= t.disks
        hosts |= t.hosts
    return Touched(frozenset(vms), frozenset(disks), frozenset(hosts))


def search(state: OperationalState, *, max_nodes: int = DEFAULT_MAX_NODES,
           max_seconds: float = DEFAULT_MAX_SECONDS, clock: Callable[[], float] = time.monotonic,
           root_eval: Evaluation | None = None) -> SearchResult:
    started = clock()
    root_ev = root_eval or Evaluation.full(state)
    root = Node(state, (), 0.0, root_ev)
    root_hard = root_ev.hard
    greedy = root_hard > EXACT_LIMIT
    per_item = GREEDY_CANDIDATES if greedy else None
    counter = itertools.count()
    heap: list[tuple[float, int, int, Node]] = []
    heapq.heappush(heap, (root.value + H_UNIT * root_ev.hard, 0, next(counter), root))
    seen: set[frozenset[Step]] = {frozenset()}
    best_goal: Node | None = root if root_ev.hard == 0 else None
    best_partial = root
    smallest_first = _oversubscribed(state, root_ev)
    order: dict[Item, tuple[object, ...]] = {}  # each item's place in the order (what it reads no step changes)
    expanded = 0
    since_better = 0
    stopped = ""
    while heap:
        if expanded >= max_nodes:
            stopped = f"node budget of {max_nodes} reached"
            break
        if clock() - started > max_seconds:
            stopped = f"time limit of {max_seconds:.0f} s reached"
            break
        if best_goal is None and since_better >= STALL_LIMIT:
            stopped = f"no progress in {STALL_LIMIT} nodes: some items cannot be fixed"
            break
        _, _, _, node = heapq.heappop(heap)
        if best_goal is not None and node.g >= best_goal.value:
            continue  # cannot beat the best plan found: every step costs something
        if node.ev.hard == 0 and (best_goal is None or node.value < best_goal.value):
            best_goal = node
            if greedy:
                break
        if (node.ev.hard, node.value) < (best_partial.ev.hard, best_partial.value):
            best_partial = node
            since_better = 0
        expanded += 1
        since_better += 1
        children, stuck = _expand(node, per_item, seen, smallest_first, order)
        if stuck and greedy and best_goal is None:
            stopped = "what is left cannot be fixed"
            break  # a greedy dive ends where nothing more can be fixed
        for child in children:
            if (child.ev.hard, child.value) < (best_partial.ev.hard, best_partial.value):
                best_partial = child
                since_better = 0
            if best_goal is not None and child.g >= best_goal.value:
                continue
            priority = child.value + (H_GREEDY if greedy else H_UNIT) * child.ev.hard
            heapq.heappush(heap, (priority, -len(child.steps), next(counter), child))
    chosen = best_goal if best_goal is not None else best_partial
    steps = prune(state, chosen.steps, root_ev) if len(chosen.steps) <= 40 and not greedy else chosen.steps
    method = "greedy best-first: first plan found" if greedy else "best-first search: cheapest plan found"
    method += f"; {expanded} nodes expanded"
    if stopped:
        method += f"; {stopped}"
    if chosen.ev.hard:
        method += f"; {chosen.ev.hard} dealbreakers or problems left open"
    origins = dict(zip(chosen.steps, chosen.origins))
    return _result(state, steps, root_ev, method, expanded, {s: origins[s] for s in steps if s in origins})


def _result(state: OperationalState, steps: tuple[Step, ...], root_ev: Evaluation, method: str,
            nodes: int, origins: dict[Step, Item] | None = None) -> SearchResult:
    states, reason = replay(state, steps)
    if reason is not None:  # pragma: no cover - the search only keeps applicable sequences
        raise AssertionError(f"planned steps do not replay: {reason}")
    final = states[-1]
    final_ev = root_ev.update(state, final, _touched_all(steps)) if steps else root_ev
    start_items = {item_key(i): i for i in root_ev.items()}
    end_items = {item_key(i): i for i in final_ev.items()}
    resolved = [start_items[k] for k in sorted(start_items) if k not in end_items]
    remaining = [end_items[k] for k in sorted(end_items) if k in start_items]
    introduced = [end_items[k] for k in sorted(end_items) if k not in start_items]
    return SearchResult(steps=steps, initial=state, final=final, resolved=resolved, remaining=remaining,
                        introduced=introduced, method=method, nodes=nodes, complete=final_ev.hard == 0,
                        value=sum(scalar(s.cost(st)) for s, st in zip(steps, states)) + final_ev.penalty,
                        states=states, origins=origins or {})


def _expand(node: Node, per_item: int | None, seen: set[frozenset[Step]],
            smallest_first: bool = False, order: dict[Item, tuple[object, ...]] | None = None,
            ) -> tuple[list[Node], bool]:
    """The node's children, and whether it is stuck: open hard items, none of which any step can fix."""
    state = node.state
    order = {} if order is None else order

    def place(item: Item) -> tuple[object, ...]:
        key = order.get(item)
        if key is None:
            key = order[item] = _item_order(state, item, smallest_first)
        return key

    items = sorted(node.ev.items(), key=place)
    chosen: list[tuple[Item, list[Candidate]]] = []
    for item in items:
        if not is_hard(item):
            break
        found = candidates(state, item, wanted=per_item)
        if found:
            chosen = [(item, found)]
            break
    stuck = node.ev.hard > 0 and not chosen
    if not chosen:
        soft = [i for i in items if not is_hard(i)]
        for item in soft[:SOFT_ITEMS_PER_NODE]:
            found = candidates(state, item, wanted=per_item)
            if found:
                chosen.append((item, found))
    in_path = set(node.steps)
    inverses = {inv for s in node.steps if (inv := s.inverse()) is not None}
    children = []
    for item, found in chosen:
        for candidate in found[:per_item] if per_item else found:
            if any(s in in_path or s in inverses for s in candidate.steps):
                continue
            key = frozenset(node.steps + candidate.steps)
            if key in seen:
                continue
            seen.add(key)
            new_state = state
            g = node.g
            for step in candidate.steps:
                g += scalar(step.cost(new_state))
                new_state = step.take(new_state)
            ev = node.ev.update(state, new_state, _touched_all(candidate.steps))
            children.append(Node(new_state, node.steps + candidate.steps, g, ev,
                                 node.origins + (item,) * len(candidate.steps)))
    return children, stuck


def _value(state: OperationalState, steps: tuple[Step, ...], root_ev: Evaluation) -> tuple[int, float] | None:
    states, reason = replay(state, steps)
    if reason is not None:
        return None
    ev = root_ev.update(state, states[-1], _touched_all(steps)) if steps else root_ev
    return ev.hard, sum(scalar(s.cost(st)) for s, st in zip(steps, states)) + ev.penalty


def prune(state: OperationalState, steps: tuple[Step, ...], root_ev: Evaluation) -> tuple[Step, ...]:
    """Drop inverse pairs and steps nothing needs: a step goes when the plan without it still runs
    and is no worse (no more open hard items, no higher value)."""
    best = _value(state, steps, root_ev)
    if best is None:
        return steps
    changed = True
    while changed:
        changed = False
        for i in range(len(steps)):
            inverse = steps[i].inverse()
            j = next((k for k in range(i + 1, len(steps)) if steps[k] == inverse), None)
            if j is None:
                continue
            trial = steps[:i] + steps[i + 1:j] + steps[j + 1:]
            value = _value(state, trial, root_ev)
            if value is not None and value <= best:
                steps, best, changed = trial, value, True
                break
        if changed:
            continue
        for i in reversed(range(len(steps))):
            trial = steps[:i] + steps[i + 1:]
            value = _value(state, trial, root_ev)
            if value is not None and value[0] <= best[0] and value[1] < best[1]:
                steps, best, changed = trial, value, True
                break
    return steps
