"""Factories: for a violation or a problem, the candidate step sequences that could fix it.

A candidate is a short sequence (create the disk's LV on h2, then start the VM there), best first:
ranked by the cost of its steps plus the penalty of the wants and wishes it would break, then by the
placement policy (pack hosts when power saving is on, spread load otherwise), then by name, so the
order never depends on hashing. The search tries them; a factory never decides alone.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core.expectations import Level, StorageAvailability, StorageRedundancy, VmAvailability, VmDependency
from ..core.models import Cost, FileAllocation, VirtualMachine, VirtualStorageDevice
from ..core.sizes import format_size
from .checkers import (
    Rejection,
    Violation,
    allocation_rejections,
    capacity_rejection,
    host_usable,
    placement_rejections,
    redundancy_copies,
)
from .cost import IO_BYTES_PER_SECOND, NETWORK_BYTES_PER_SECOND, PENALTY, REMOTE_IO_SECONDS, scalar
from .problems import Problem
from .remote import share_option, share_or_copy, with_reason
from .state import MIB, OperationalState, vm_memory
from .steps import (
    ConvertLvToMirror,
    CopyAllocation,
    ExtendFileImage,
    ExtendLv,
    ExtendThinPool,
    MigrateVm,
    MovePvExtents,
    RemovePvFromVg,
    ResumeVm,
    StartVm,
    Step,
    StopVm,
    TrustHost,
    UnexportNfs,
    UnmountNfs,
    UnshareIscsi,
    WakeHost,
    _find_allocation,
    create_step,
    remove_step,
)
from .steps.host import FROM_CONTROLLER, wake_means

Item = Violation | Problem

MAX_CANDIDATES = 16  # per item and node: the best-ranked few; more only widens the search
_WANTED: ContextVar[int] = ContextVar("wanted", default=MAX_CANDIDATES)  # how many the search will try (candidates)


@dataclass(frozen=True, slots=True)
class Candidate:
    steps: tuple[Step, ...]
    rank: tuple[Any, ...]


def _penalty(rejections: Iterable[Rejection]) -> float:
    return sum(PENALTY[r.level] for r in rejections if r.level is not None and r.level is not Level.dealbreaker)


def sequence_cost(state: OperationalState, steps: Iterable[Step]) -> float:
    """Scalar cost of a sequence, each step costed on the state its predecessors leave."""
    steps = list(steps)
    total = 0.0
    for i, step in enumerate(steps):
        total += scalar(step.cost(state))
        if i < len(steps) - 1:
            state = step.take(state)
    return total


def _applicable(state: OperationalState, steps: Iterable[Step]) -> bool:
    steps = list(steps)
    for i, step in enumerate(steps):
        if step.blocked(state) is not None:
            return False
        if i < len(steps) - 1:
            state = step.take(state)
    return True


# --- storage placement ---------------------------------------------------------------------------


def best_capability(state: OperationalState, disk: VirtualStorageDevice, host_id: str,
                    size: int | None = None) -> tuple[Any, float] | None:
    """The best storage capability for a new allocation of ``disk`` on a host, with its soft penalty."""
    best = None
    for cap in state.capabilities(host_id):
        if disk.image is not None and cap.technology.value != "file":
            continue  # an image is kept as a file in an image directory
        rejections = allocation_rejections(state, disk, host_id, cap.id, size)
        if any(r.hard for r in rejections):
            continue
        rank = (_penalty(rejections), -state.free_storage(host_id, cap.id), cap.id)
        if best is None or rank < best[0]:
            best = (rank, cap)
    return (best[1], best[0][0]) if best is not None else None


def _trust_then(state: OperationalState, source: str, target: str) -> list[Step]:
    config = state.host_config.get(target)
    if source == target or (config is not None and source in config.ssh_trust):
        return []
    return [TrustHost(source, target)]


def bring_disk(
    state: OperationalState, disk_id: str, host_id: str, *, move: bool = True
) -> tuple[list[Step], float] | None:
    """Steps that give ``host_id`` a copy of the disk (create, clone, or copy/move it there)."""
    disk = state.disks.get(disk_id)
    if disk is None:
        return None
    allocs = state.allocations(disk_id)
    if any(a.host_id == host_id for a in allocs):
        if state.live_copy_reachable(disk_id, host_id):
            return None  # an older copy taken for redundancy: the VM's newer data is on a host that is up
        return [], 0.0
    found = best_capability(state, disk, host_id)
    if found is None:
        from .thin import thin_steps

        return thin_steps(state, disk, host_id)  # too big for a plain LV: thin, where the admin allows it
    cap, penalty = found
    if not allocs and disk.image is not None:
        return None  # an image with no copy left has nothing to copy from (and must not be made empty)
    if not allocs:
        clone = next((e for e in disk.expectations if e.type == "clone-of"), None)
        source = state.resolve_disk(clone.disk) if clone is not None else None
        if source is not None and state.disks[source].image is not None:
            return _image_clone(state, disk, source, host_id, cap, penalty)
        if source is not None:
            src_alloc = next(
                (
                    a
                    for a in sorted(state.allocations(source), key=lambda a: (a.host_id != host_id, a.host_id))
                    if state.host_up(a.host_id)
                ),
                None,
            )
            if src_alloc is None:
                return None
            return [*_trust_then(state, src_alloc.host_id, host_id),
                    CopyAllocation(disk_id, src_alloc.host_id, src_alloc.capability_id, host_id, cap.id,
                                   source_disk=source)], penalty
        mirror = _mirror_on(state, disk, host_id)
        if mirror is not None:
            return mirror
        return [create_step(state, disk, host_id, cap)], penalty
    source = next(  # the live storage first: an older copy taken for redundancy only when it is all there is
        (a for a in sorted(allocs, key=lambda a: (a.copied_at is not None, a.host_id, a.capability_id))
         if state.host_up(a.host_id)), None
    )
    if source is None:
        return None
    users_elsewhere = [v for v in state.disk_users(disk_id) if state.vm_host(v) not in (None, host_id)]
    keep_source = bool(users_elsewhere) or not move or len(allocs) > 1 or disk.image is not None  # images: copies
    return [
        *_trust_then(state, source.host_id, host_id),
        CopyAllocation(disk_id, source.host_id, source.capability_id, host_id, cap.id, move=not keep_source),
    ], penalty


def _mirror_on(state: OperationalState, disk: VirtualStorageDevice, host_id: str) -> tuple[list[Step], float] | None:
    """A new disk whose in-box redundancy this host can give at once: the raid1 that creates it, where it
    costs less than leaving the expectation for later (a dealbreaker: always; a want or a wish: when
    the sync costs less than its penalty); None for a plain LV."""
    asked = in_box_copies(disk)
    if asked is None or disk.image is not None:
        return None
    copies, level = asked
    best: tuple[tuple[Any, ...], Step, float] | None = None
    for cap, rejections, step in _mirror_steps(state, disk, host_id, copies):
        if step.blocked(state) is not None:
            continue
        extra = scalar(step.cost(state)) - scalar(create_step(state, disk, host_id, cap).cost(state))
        if level is not Level.dealbreaker and extra >= PENALTY[level]:
            continue
        rank = (_penalty(rejections), -state.free_storage(host_id, cap.id), cap.id)
        if best is None or rank < best[0]:
            best = (rank, step, _penalty(rejections))
    return ([best[1]], best[2]) if best is not None else None


def _image_clone(state: OperationalState, disk: VirtualStorageDevice, image_id: str, host_id: str, cap: Any,
                 penalty: float) -> tuple[list[Step], float] | None:
    """A new disk that starts as an image: the image's copy on the host first (brought there when it
    has none), then the clone: an overlay on file storage, a full copy into an LV."""
    from .image_steps import image_clone_steps

    brought = bring_disk(state, image_id, host_id, move=False)
    if brought is None:
        return None
    before, image_penalty = brought
    after = state
    for step in before:
        if step.blocked(after) is not None:
            return None
        after = step.take(after)
    clone = image_clone_steps(after, disk, image_id, host_id, cap)
    if clone is None:
        return None
    return [*before, clone], penalty + image_penalty


# --- VM placement --------------------------------------------------------------------------------


def memory_free_after(state: OperationalState, vm: VirtualMachine, host_id: str) -> float:
    """The share of the host's memory left free with the VM there: the placement policy's term."""
    return _share_free_after(state, vm, host_id, state.vm_host(vm.id))


def _share_free_after(state: OperationalState, vm: VirtualMachine, host_id: str, placed: str | None) -> float:
    free_after = state.free_memory(host_id) - (0 if placed == host_id else vm_memory(vm))
    return free_after / max(state.memory_capacity(host_id), 1)


def soft_penalty(rejections: Iterable[Rejection]) -> float:
    """What the wants and wishes a placement breaks weigh in its rank."""
    return _penalty(rejections)


def _placement_policy_key(state: OperationalState, vm: VirtualMachine, host_id: str) -> tuple[Any, ...]:
    return _policy_key(state, memory_free_after(state, vm, host_id))


def _policy_key(state: OperationalState, share_free: float) -> tuple[Any, ...]:
    if state.settings.optimisation.power_saving:
        return (share_free,)  # best fit: fill hosts that are already busy, so others can be drained
    return (-share_free,)  # spread: the host with the most room left


def _wake_options(state: OperationalState) -> list[tuple[str, str]]:
    """Powered-down hosts that can be woken, each with who sends the wake-up: a running neighbour (on
    the host's own network), or the controller itself when no host is up (a fleet entirely down)."""
    up = [h for h in state.host_ids() if state.host_up(h)]
    via = up[0] if up else FROM_CONTROLLER
    out = []
    for host_id in state.host_ids():
        host = state.hosts[host_id]
        if state.host_up(host_id) or host.recycling or wake_means(host) is None:
            continue
        if state.host_fenced(host_id) or state.vms_on(host_id):
            # a host that failed (fenced, or with VMs lost on it) is not woken for other VMs: the admin brings it back
            continue
        out.append((host_id, via))
    return out


def placement_candidates(state: OperationalState, vm_id: str, *, limit: int = MAX_CANDIDATES,
                         exclude: str | None = None) -> list[Candidate]:
    """Where to start a VM that is not running: every host that fits, best first."""
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    out = fitting_starts(state, vm, limit=limit, exclude=exclude)
    if not out:  # no host that is up takes it as things are
        out.extend(make_room_candidates(state, vm, exclude=exclude))
        out.extend(ballooned_candidates(state, vm, exclude=exclude))
        for host_id, via in _wake_options(state):
            if host_id == exclude:
                continue
            wake = WakeHost(host_id, via)
            if wake.blocked(state) is not None:
                continue
            woken = wake.take(state)
            if capacity_rejection(woken, vm, host_id) is None:
                candidate = _start_on(woken, vm, host_id, [wake], base=state)
                if candidate is not None:
                    out.append(candidate)
    out.sort(key=lambda c: c.rank)
    return out[:limit]


def fitting_starts(state: OperationalState, vm: VirtualMachine, *, limit: int = MAX_CANDIDATES,
                   exclude: str | None = None) -> list[Candidate]:
    """The ``limit`` best starts of the VM on hosts that take it as things are (no room made, no host
    woken), best first: the same list as trying every host and keeping the best, without trying every
    host (tests/unit/planner/test_indexes.py compares them; ``best_by_bound`` says how)."""
    from .steps.vm import start_cost

    def judge(host_id: str) -> Candidate | None:
        if capacity_rejection(state, vm, host_id) is not None:
            return None
        return _start_on(state, vm, host_id, [])

    return best_by_bound(state, vm, scalar(start_cost(vm)), judge, limit=limit,
                         skip=(lambda h: h == exclude) if exclude is not None else None)


def best_by_bound(state: OperationalState, vm: VirtualMachine, floor: float, judge: Callable[[str], Candidate | None],
                  *, limit: int, skip: Callable[[str], bool] | None = None) -> list[Candidate]:
    """The ``limit`` best candidates ``judge`` makes of the hosts that have room for the VM's memory (as
    ``capacity_rejection`` counts it), best first, without judging every host.

    A candidate's rank is (cost + penalties, the placement policy's share of memory left free, host name,
    host id); ``floor`` is the least the candidate's one VM step costs anywhere (``start_cost``,
    ``migrate_cost``). Each host's bound is (floor, its policy share, name, id): a rank is never below its
    host's bound, as no step costs less than nothing and no penalty is negative. Hosts come in the order
    of their bounds, from the state's index of hosts by free memory (``memory_order``: per memory
    capacity, that order is the policy's), so hosts short of memory are never looked at, and the search
    stops once ``limit`` candidates rank below the next bound: no host left can do better. So a VM at
    1,000 hosts has a few dozen judged, not 1,000."""
    placed = state.vm_host(vm.id)
    held = state.vm_reserved(vm.id) if vm.id in state.vms else vm_memory(vm)
    need = vm_memory(vm)
    pack = state.settings.optimisation.power_saving
    classes, changed = state.memory_order()
    apart = {h for h in changed if h in state.static.memory_capacity}  # judged on their own figures
    if placed is not None and placed in state.static.memory_capacity:
        apart.add(placed)  # it holds its memory there already
    streams: list[Iterator[tuple[Any, ...]]] = []
    for group in classes:
        first = bisect.bisect_left(group.free, held)  # the hosts before it are short of memory
        rows = group.hosts[first:] if pack else group.hosts[:first - 1 if first else None:-1]
        streams.append(_bounds_in_order(floor, group.capacity, need, pack, rows, apart, skip))
    own = []
    for host_id in apart:
        if (skip is not None and skip(host_id)) or (host_id != placed and state.free_memory(host_id) < held):
            continue
        own.append((floor, _policy_key(state, _share_free_after(state, vm, host_id, placed)),
                    state.host_name(host_id), host_id))
    streams.append(iter(sorted(own)))
    limit = min(limit, _WANTED.get())  # no more than the caller will try: the best come first all the same
    found: list[Candidate] = []
    trust_bounds = True
    for bound in heapq.merge(*streams):
        if trust_bounds and len(found) >= limit and found[limit - 1].rank < bound:
            break
        candidate = judge(bound[-1])
        if candidate is None:
            continue
        if candidate.rank < bound:  # a step priced below nothing: the bounds do not hold, so judge every host
            trust_bounds = False
        bisect.insort(found, candidate, key=lambda c: c.rank)
    return found[:limit]


def _bounds_in_order(floor: float, capacity: int, need: int, pack: bool, rows: Iterable[tuple[int, str, str]],
                     apart: set[str], skip: Callable[[str], bool] | None) -> Iterator[tuple[Any, ...]]:
    """Bounds of the hosts of one memory capacity, ascending, from its hosts in the policy's order of free
    memory. The share left free is a function of free memory that rounding may make equal for two
    figures: hosts of one share come sorted by name, as the bound sorts them."""
    run: list[tuple[Any, ...]] = []
    run_key: tuple[float] | None = None
    divisor = max(capacity, 1)
    for free, name, host_id in rows:
        if host_id in apart or (skip is not None and skip(host_id)):
            continue
        share = (free - need) / divisor  # as _share_free_after
        key = (share,) if pack else (-share,)
        if run and key != run_key:
            run.sort()
            yield from run
            run = []
        run_key = key
        run.append((floor, key, name, host_id))
    run.sort()
    yield from run


ROOM_HOSTS = 4  # hosts tried per VM when room must be made: the ones that lack least
ROOM_MOVES = 3  # VMs moved off one host at most to make room for one


def _movable(state: OperationalState, vm_id: str) -> tuple[Any, ...] | None:
    """How reluctantly a running VM is moved away to make room (smaller first), None when it may not be:
    a no-migration dealbreaker keeps it; a want or wish only makes it a later choice."""
    vm = state.vms[vm_id]
    levels = [e.level for e in vm.expectations if e.type == "no-migration"]
    if Level.dealbreaker in levels:
        return None
    return (max((lv.rank for lv in levels), default=-1),)


def _fits(state: OperationalState, vm: VirtualMachine, host_id: str) -> bool:
    return capacity_rejection(state, vm, host_id) is None and not any(
        r.hard for r in placement_rejections(state, vm, host_id, capacity=False))


def _in_the_way(state: OperationalState, vm: VirtualMachine, host_id: str) -> set[str]:
    """VMs on the host that a hard rejection names: they must leave whatever memory is free."""
    out = set()
    here = state.host_vms.get(host_id, frozenset())
    for exp in vm.expectations:
        if exp.type == "not-same-host" and exp.level is Level.dealbreaker:
            out |= {v for ref in exp.vms if (v := state.resolve_vm(ref)) in here}
    for other in state.static.vm_referrers.get(vm.id, ()):
        if other in here and any(e.type == "not-same-host" and e.level is Level.dealbreaker
                                 and vm.id in {state.resolve_vm(r) for r in e.vms}
                                 for e in state.vms[other].expectations):
            out.add(other)
    return out


def make_room_candidates(state: OperationalState, vm: VirtualMachine, *,
                         exclude: str | None = None) -> list[Candidate]:
    """Where a VM could start once running VMs move away (issue 18 item 1): a full fleet that could be
    rearranged. Per host that would take it but for the VMs there (their memory, a not-same-host, core
    dedication), live-migrate the fewest and cheapest of them elsewhere, respecting their own
    expectations (never one with a no-migration dealbreaker; one with a softer no-migration last),
    then start it. Each move says whom it makes room for."""
    need = vm_memory(vm)
    options: list[tuple[tuple[Any, ...], str]] = []
    free_total = 0
    for host_id in state.host_ids():
        if host_id == exclude or host_usable(state, host_id) is not None:
            continue
        free_total += max(state.free_memory(host_id), 0)
        if not state.vms_on(host_id):
            continue
        if vm.cpus > state.cpu_count(host_id) or state.memory_capacity(host_id) < need:
            continue
        own = [r for r in placement_rejections(state, vm, host_id, capacity=False)
               if r.hard and r.checker not in ("not-same-host", "core-dedication")]
        if own:
            continue  # the host itself does not suit it (architecture, ECC, ...): no move helps
        lacking = max(need - state.free_memory(host_id), 0)
        options.append(((lacking, state.host_name(host_id), host_id), host_id))
    if free_total < need:
        return []  # moves only shift free memory between hosts: there is not enough of it anywhere
    options.sort()
    out: list[Candidate] = []
    for _, host_id in options[:ROOM_HOSTS]:
        candidate = _room_on(state, vm, host_id)
        if candidate is not None:
            out.append(candidate)
    return out


def _room_on(state: OperationalState, vm: VirtualMachine, host_id: str) -> Candidate | None:
    must = _in_the_way(state, vm, host_id)
    need = vm_memory(vm)
    order: list[tuple[tuple[Any, ...], str]] = []
    for other in state.vms_on(host_id):
        reluctance = _movable(state, other)
        if reluctance is None:
            if other in must:
                return None  # it must leave, and may not
            continue
        memory = state.vm_reserved(other)
        enough = memory >= need - state.free_memory(host_id)
        # those that must leave first; then one that alone frees enough, smallest first; then the biggest
        order.append(((other not in must, reluctance, not enough, memory if enough else -memory,
                       state.vm_name(other), other), other))
    order.sort()
    movable = sorted((state.vm_reserved(v) for _, v in order), reverse=True)[:ROOM_MOVES]
    if state.free_memory(host_id) + sum(movable) < need:
        return None  # even the biggest moves allowed would not free enough
    moves: list[Step] = []
    extra = 0.0
    current = state
    moved = 0
    for _, other in order:
        if _fits(current, vm, host_id) or moved >= ROOM_MOVES:
            break
        if other not in must and current.free_memory(host_id) >= need:
            continue  # memory is there: what is left in the way is a rejection naming a VM
        found = relocation_candidates(current, other, limit=1, avoid=lambda t: t == host_id)
        if not found:
            if other in must:
                return None
            continue
        steps = [MigrateVm(s.vm, s.host, s.target, s.copy_storage, room_for=vm.id)
                 if isinstance(s, MigrateVm) else s for s in found[0].steps]
        extra += found[0].rank[0] - sequence_cost(current, steps)  # the soft penalties the move costs
        for step in steps:
            current = step.take(current)
        moves.extend(steps)
        moved += 1
    if not moves or not _fits(current, vm, host_id):
        return None
    return _start_on(current, vm, host_id, moves, base=state, extra_penalty=extra)


def ballooned_candidates(state: OperationalState, vm: VirtualMachine, *,
                         exclude: str | None = None) -> list[Candidate]:
    """Where a VM whose maximum fits no host could start with less (issue 18 item 8, the memory-range
    policy): on a host with room for at least its minimum, with as much as the host has free (whole
    MiB), the balloon holding it there. Each byte withheld is priced like a byte moved over the network,
    so making room or waking a host for its maximum wins where it costs less (StartVm.cost)."""
    if vm.memory_min >= vm.memory_max:
        return []
    out: list[Candidate] = []
    for host_id in state.host_ids():
        if host_id == exclude or capacity_rejection(state, vm, host_id, vm.memory_min) is not None:
            continue
        give = min(vm.memory_max, state.free_memory(host_id)) // MIB * MIB
        if give < vm.memory_min:
            continue
        candidate = _start_on(state, vm, host_id, [], memory=give)  # StartVm's cost prices what is withheld
        if candidate is not None:
            out.append(candidate)
    return out


def _start_on(state: OperationalState, vm: VirtualMachine, host_id: str, prefix: list[Step],
              base: OperationalState | None = None, extra_penalty: float = 0.0,
              memory: int = 0) -> Candidate | None:
    rejections = placement_rejections(state, vm, host_id, capacity=False)
    if any(r.hard for r in rejections):
        return None
    from .image_steps import seed_steps

    steps = list(prefix)
    penalty = _penalty(rejections) + extra_penalty
    current = state  # each disk is brought onto what the disks before it left (free space, a thin pool made)
    for link in vm.disks:
        # a copy of the disk here, or reading it over a share from where it is: the cheaper (issue 16)
        brought = share_or_copy(current, vm.id, link.disk_id, host_id, bring_disk(current, link.disk_id, host_id))
        if brought is None:
            return None
        disk_steps, disk_penalty = brought
        steps.extend(disk_steps)
        penalty += disk_penalty
        if len(vm.disks) > 1:
            for step in disk_steps:
                if step.blocked(current) is not None:
                    return None
                current = step.take(current)
    start = base if base is not None else state
    if len(vm.disks) > 1:
        from .thin import one_pool_each

        merged = one_pool_each(steps)  # one pool made at once for several new thin disks
        if merged != steps and _applicable(start, merged):
            steps = merged
    steps.extend(seed_steps(state, vm.id, host_id))
    steps.append(StartVm(vm.id, host_id, memory) if memory else StartVm(vm.id, host_id))
    if not _applicable(start, steps):
        return None
    rank = (
        sequence_cost(start, steps) + penalty,
        _placement_policy_key(state, vm, host_id),
        state.host_name(host_id),
        host_id,
    )
    return Candidate(tuple(steps), rank)


def relocation_candidates(state: OperationalState, vm_id: str, *, limit: int = MAX_CANDIDATES,
                          avoid: Callable[[str], bool] | None = None) -> list[Candidate]:
    """Where to move a VM that is on a host now: live migration, with its storage when it is local."""
    vm = state.vms.get(vm_id)
    source = state.vm_host(vm_id)
    if vm is None or source is None or not state.host_up(source):
        return []
    no_migration = [e for e in vm.expectations if e.type == "no-migration"]
    if any(e.level is Level.dealbreaker for e in no_migration):
        return []
    from .steps.vm import migrate_cost

    floor = scalar(migrate_cost(state.vm_reserved(vm_id)))
    return best_by_bound(state, vm, floor, lambda h: migration_to(state, vm, source, h), limit=limit,
                         skip=lambda h: h == source or (avoid is not None and avoid(h)))


def migration_to(state: OperationalState, vm: VirtualMachine, source: str, host_id: str) -> Candidate | None:
    """The VM's live migration from ``source`` to a host (with its storage where it is local, or read over a
    share), ranked; None where it cannot go."""
    vm_id = vm.id
    if capacity_rejection(state, vm, host_id) is not None:
        return None
    rejections = placement_rejections(state, vm, host_id, capacity=False)
    if any(r.hard for r in rejections):
        return None
    penalty = _penalty(rejections)
    before: list[Step] = []
    after: list[Step] = []
    copy_storage = False
    ok = True
    for link in vm.disks:
        disk = state.disks.get(link.disk_id)
        if disk is None:
            ok = False
            break
        if any(a.host_id == host_id for a in state.allocations(link.disk_id)):
            if state.live_copy_reachable(link.disk_id, host_id):
                ok = False  # only an older copy there: the VM's data is newer where it runs
                break
            continue
        if disk.image is not None:  # an image gets a checked copy there; its copies stay where they are
            brought = bring_disk(state, link.disk_id, host_id, move=False)
            if brought is None:
                ok = False
                break
            before.extend(brought[0])
            penalty += brought[1]
            continue
        local = _find_local(state, link.disk_id, source)
        option = share_option(state, link.disk_id, host_id)
        if local is None:
            # read over a share where it runs: the target reads the same share (let in first where its ACL
            # does not name the target yet), no disk data moves
            if isinstance(option, str):
                ok = False
                break
            before.extend(with_reason(option.steps, f"for {vm.name} on {state.host_name(host_id)}, "
                                                    "which reads the same share"))
            continue
        found = best_capability(state, disk, host_id)
        copy: list[Step] = []
        copy_cost = 0.0
        if found is not None:
            cap, disk_penalty = found
            copy = [create_step(state, disk, host_id, cap)]
            others = [v for v in state.disk_users(link.disk_id) if v != vm_id and state.vm_host(v) is not None]
            if not others:
                copy.append(remove_step(link.disk_id, local))
            # what the copy costs: its creation and removal, and the disk through the migration's stream
            copy_cost = (sequence_cost(state, copy) + disk_penalty + disk.size / NETWORK_BYTES_PER_SECOND
                         + 2 * disk.size / IO_BYTES_PER_SECOND)
        if not isinstance(option, str):
            share_cost = sequence_cost(state, option.steps) + REMOTE_IO_SECONDS
            if found is None or share_cost < copy_cost:
                why = (f"for {vm.name} on {state.host_name(host_id)}, " + (
                    f"cheaper than copying {format_size(disk.size)} ({share_cost:,.0f} s vs {copy_cost:,.0f} s)"
                    if found is not None else "where no copy can be made"))
                before.extend(with_reason(option.steps, why))
                continue
        if found is None:
            ok = False
            break
        penalty += disk_penalty
        before.append(copy[0])
        after.extend(copy[1:])
        copy_storage = True
    if not ok:
        return None
    from .image_steps import seed_steps

    steps = [*before, *seed_steps(state, vm_id, host_id), MigrateVm(vm_id, source, host_id, copy_storage), *after]
    if not _applicable(state, steps):
        return None
    rank = (sequence_cost(state, steps) + penalty, _placement_policy_key(state, vm, host_id),
            state.host_name(host_id), host_id)
    return Candidate(tuple(steps), rank)


def _find_local(state: OperationalState, disk_id: str, host_id: str) -> Any:
    return next((a for a in state.allocations(disk_id) if a.host_id == host_id), None)


# --- per item ------------------------------------------------------------------------------------


def _single(state: OperationalState, steps: list[Step]) -> list[Candidate]:
    if not _applicable(state, steps):
        return []
    return [Candidate(tuple(steps), (sequence_cost(state, steps),))]


_E = TypeVar("_E")


def _violated(expectations: Sequence[object], v: Violation, kind: type[_E]) -> _E:
    """The expectation ``v`` is about, as the type its factory handles."""
    exp = expectations[v.index]
    if not isinstance(exp, kind):
        raise TypeError(f"expectation {v.index} is a {type(exp).__name__}, not a {kind.__name__}")
    return exp


def _vm_availability(state: OperationalState, v: Violation) -> list[Candidate]:
    vm = state.vms[v.subject_id]
    exp = _violated(vm.expectations, v, VmAvailability)
    host_id, status = state.vm_placement(vm.id)
    if exp.up:
        if host_id is not None and state.host_up(host_id):
            if status.value == "paused":
                return _single(state, [ResumeVm(vm.id, host_id)])
            return []  # migrating: wait for it to land
        return placement_candidates(state, vm.id)
    if host_id is not None and state.host_up(host_id):
        return _single(state, [StopVm(vm.id, host_id)])
    return []


def _vm_relocate(state: OperationalState, v: Violation) -> list[Candidate]:
    out = relocation_candidates(state, v.subject_id)
    vm = state.vms[v.subject_id]
    exp = vm.expectations[v.index]
    if exp.type == "not-same-host":
        # moving the other VM away works too
        host = state.vm_host(vm.id)
        for ref in exp.vms:
            other = state.resolve_vm(ref)
            if other is not None and other != vm.id and state.vm_host(other) == host:
                out.extend(relocation_candidates(state, other))
    elif exp.type == "core-dedication":
        host = state.vm_host(vm.id)
        for other in state.vms_on(host) if host else []:
            if other != vm.id:
                out.extend(relocation_candidates(state, other, limit=4))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _vm_dependency(state: OperationalState, v: Violation) -> list[Candidate]:
    vm = state.vms[v.subject_id]
    exp = _violated(vm.expectations, v, VmDependency)
    out: list[Candidate] = []
    for ref in exp.vms:
        target = state.resolve_vm(ref)
        if target is not None and not state.vm_running(target):
            out.extend(placement_candidates(state, target, limit=4))
    host = state.vm_host(vm.id)
    if host is not None:
        out.extend(_single(state, [StopVm(vm.id, host)]))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _disk_allocation_places(state: OperationalState, disk: VirtualStorageDevice,
                            limit: int = MAX_CANDIDATES) -> list[Candidate]:
    out = []
    for host_id in state.host_ids():
        if host_usable(state, host_id) is not None:
            continue
        brought = bring_disk(state, disk.id, host_id, move=False)
        if not brought or not brought[0]:
            continue
        steps, penalty = brought
        if not _applicable(state, steps):
            continue
        free = sum(state.free_storage(host_id, c.id) for c in state.capabilities(host_id))
        out.append(
            Candidate(tuple(steps), (sequence_cost(state, steps) + penalty, -free, state.host_name(host_id), host_id))
        )
    out.sort(key=lambda c: c.rank)
    return out[:limit]


def in_box_copies(disk: VirtualStorageDevice) -> tuple[int, Level] | None:
    """The copies an in-box storage-redundancy expectation of the disk asks (the most asked), with its level."""
    asks = [(e.copies, e.level) for e in disk.expectations
            if isinstance(e, StorageRedundancy) and not e.out_of_box and e.copies > 1]
    return max(asks, key=lambda a: (a[0], a[1].rank)) if asks else None


def _mirror_steps(state: OperationalState, disk: VirtualStorageDevice, host_id: str,
                  copies: int) -> Iterator[tuple[Any, list[Any], Step]]:
    """Each VG of the host that may take the new disk as a raid1 of ``copies`` (no hard rejection): the VG,
    its soft rejections and the step that would create it there."""
    for cap in state.capabilities(host_id):
        if cap.technology.value != "lvm":
            continue
        rejections = allocation_rejections(state, disk, host_id, cap.id, disk.size * copies)
        if not any(r.hard for r in rejections):
            yield cap, rejections, create_step(state, disk, host_id, cap, mirrors=copies - 1)


def _mirror_creates(state: OperationalState, disk: VirtualStorageDevice, copies: int) -> list[Candidate]:
    """A new disk created at once as a raid1 of ``copies`` on a VG with a healthy PV per copy: its in-box
    redundancy in one step, rather than a plain LV copied or mirrored afterwards."""
    out: list[Candidate] = []
    for host_id in state.host_ids():
        if host_usable(state, host_id) is not None:
            continue
        for cap, rejections, step in _mirror_steps(state, disk, host_id, copies):
            out.extend(Candidate(c.steps, (c.rank[0] + _penalty(rejections), -state.free_storage(host_id, cap.id),
                                           state.host_name(host_id), host_id, cap.id))
                       for c in _single(state, [step]))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _storage_availability(state: OperationalState, v: Violation) -> list[Candidate]:
    disk = state.disks[v.subject_id]
    exp = _violated(disk.expectations, v, StorageAvailability)
    if exp.up:
        out = _disk_allocation_places(state, disk)
        mirrored = in_box_copies(disk)
        if mirrored is not None and not state.allocations(disk.id) and disk.image is None:
            # the disk's other expectation weighs in now: made a mirror at once, or plain and mirrored
            # (or copied) later, whichever the cost model prefers (issue 18 item 6). A plain LV is
            # ranked with what its redundancy will cost after it, so even a greedy search, which tries
            # only the first few, does not take a cheap plain LV that leaves a dear copy to make.
            mirrors = _mirror_creates(state, disk, mirrored[0])
            plain = [_with_redundancy_after(state, disk, c, *mirrored) for c in out]
            if mirrors:
                # a plain LV whose redundancy would cost more after it than a mirror now is dominated: not
                # offered, so a search that dives (few candidates, first plan wins) cannot take it either
                best = min(c.rank[0] for c in mirrors)
                plain = [c for c in plain if c.rank[0] < best]
            out = sorted(plain + mirrors, key=lambda c: c.rank)
        return out[:MAX_CANDIDATES]
    out = []
    for alloc in sorted(state.allocations(disk.id), key=lambda a: (a.host_id, a.capability_id)):
        out.extend(_single(state, [remove_step(disk.id, alloc)]))
    return out[:1]  # remove one at a time, in a fixed order


def _with_redundancy_after(state: OperationalState, disk: VirtualStorageDevice, candidate: Candidate,
                           copies: int, level: Level) -> Candidate:
    """A plain creation ranked with the cost of the copies its in-box redundancy still needs after it:
    more copies in its VG (lvconvert's sync) where the VG can hold them, else copies to another host;
    for a want or a wish at most its penalty."""
    after = state
    for step in candidate.steps:
        after = step.take(after)
    alloc = next((a for a in after.allocations(disk.id)), None)
    if alloc is None:
        return candidate
    missing = copies - 1
    if after.mirror_room(alloc.host_id, alloc.capability_id, disk.size, copies, existing=1) is None:
        io = disk.size * missing
        later = scalar(Cost(io_bytes=io, time_seconds=2.0 + io / IO_BYTES_PER_SECOND))
    else:
        later = missing * (5.0 + disk.size / NETWORK_BYTES_PER_SECOND + 2 * disk.size / IO_BYTES_PER_SECOND)
    if level is not Level.dealbreaker:
        later = min(later, PENALTY[level])
    return Candidate(candidate.steps, (candidate.rank[0] + later, *candidate.rank[1:]))


def _mirror_conversions(state: OperationalState, disk: VirtualStorageDevice, missing: int) -> list[Candidate]:
    """More copies of an existing LV in its own VG (``lvconvert -m``): in-box redundancy for a disk
    that already holds data, without copying it anywhere."""
    from ..core.models import LvmAllocation

    out: list[Candidate] = []
    for alloc in sorted(state.allocations(disk.id), key=lambda a: (a.host_id, a.capability_id)):
        if not isinstance(alloc, LvmAllocation) or alloc.thin_pool or not state.host_up(alloc.host_id):
            continue
        step = ConvertLvToMirror(disk.id, alloc.host_id, alloc.capability_id, alloc.vg, alloc.lv,
                                 alloc.mirrors + missing)
        out.extend(Candidate(c.steps, (*c.rank, -state.free_storage(alloc.host_id, alloc.capability_id),
                                       state.host_name(alloc.host_id), alloc.host_id))
                   for c in _single(state, [step]))
    return out


def _storage_redundancy(state: OperationalState, v: Violation) -> list[Candidate]:
    disk = state.disks[v.subject_id]
    exp = _violated(disk.expectations, v, StorageRedundancy)
    if not exp.out_of_box and not state.allocations(disk.id):
        return _mirror_creates(state, disk, exp.copies)
    out = _disk_allocation_places(state, disk)
    if not exp.out_of_box:
        missing = exp.copies - redundancy_copies(state, state.allocations(disk.id), False)
        if missing > 0:
            out.extend(_mirror_conversions(state, disk, missing))
    out.sort(key=lambda c: c.rank[0])
    return out[:MAX_CANDIDATES]


def _move_allocation(state: OperationalState, disk_id: str, alloc: Any, *,
                     avoid_host: bool = False) -> list[Candidate]:
    """Move one allocation elsewhere (another capability; another host when ``avoid_host``)."""
    disk = state.disks.get(disk_id)
    if disk is None:
        return []
    out = []
    for host_id in state.host_ids():
        if avoid_host and host_id == alloc.host_id:
            continue
        if host_usable(state, host_id) is not None:
            continue
        for cap in state.capabilities(host_id):
            if host_id == alloc.host_id and cap.id == alloc.capability_id:
                continue
            rejections = allocation_rejections(state, disk, host_id, cap.id)
            if any(r.hard for r in rejections):
                continue
            steps = [*_trust_then(state, alloc.host_id, host_id),
                     CopyAllocation(disk_id, alloc.host_id, alloc.capability_id, host_id, cap.id, move=True)]
            if not _applicable(state, steps):
                continue
            out.append(Candidate(tuple(steps), (sequence_cost(state, steps) + _penalty(rejections),
                                                state.host_name(host_id), cap.id)))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _allocation_misplaced(state: OperationalState, v: Violation) -> list[Candidate]:
    """not-same-storage, read/write performance: move the offending allocation."""
    out = []
    for alloc in sorted(state.allocations(v.subject_id), key=lambda a: (a.host_id, a.capability_id)):
        out.extend(_move_allocation(state, v.subject_id, alloc))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _ha_restart(state: OperationalState, v: Violation) -> list[Candidate]:
    from .ha import lost_host, restart_candidates

    host_id = lost_host(state, v.subject_id)
    return restart_candidates(state, v.subject_id, host_id) if host_id is not None else []


VIOLATION_FACTORIES: dict[str, Callable[[OperationalState, Violation], list[Candidate]]] = {
    "availability": _vm_availability,
    "not-same-host": _vm_relocate,
    "cpu-architecture": _vm_relocate,
    "cpu-flags": _vm_relocate,
    "cpu-clock-frequency": _vm_relocate,
    "memory-clock-frequency": _vm_relocate,
    "cache-size": _vm_relocate,
    "chassis-manufacturer": _vm_relocate,
    "system-manufacturer": _vm_relocate,
    "ecc-memory": _vm_relocate,
    "core-dedication": _vm_relocate,
    "host-os": _vm_relocate,
    "power-redundancy": _vm_relocate,
    "vm-dependency": _vm_dependency,
    "ha": _ha_restart,
    "no-migration": lambda state, v: [],  # only a move caused it; the search never plans the way back
    "storage-availability": _storage_availability,
    "storage-redundancy": _storage_redundancy,
    "not-same-storage": _allocation_misplaced,
    "read-performance": _allocation_misplaced,
    "write-performance": _allocation_misplaced,
    "clone-of": lambda state, v: [],  # data already written cannot be made a clone afterwards
}


# --- problems ------------------------------------------------------------------------------------


def _evacuate_vm(state: OperationalState, p: Problem) -> list[Candidate]:
    return relocation_candidates(state, p.subject_id, avoid=lambda h: h == p.host_id)


def failing_pv_evacuation(state: OperationalState, host_id: str, capability_id: str) -> list[Candidate]:
    """Take the failing PVs out of a VG where its healthy PVs have room for what they hold: ``pvmove``
    (online: the disks stay in use where they are) then ``vgreduce`` (issue 18 item 7)."""
    cap = state.capability(host_id, capability_id)
    failing = state.failing_pvs(host_id, capability_id)
    if cap is None or not failing or len(failing) >= len(state.pvs(host_id, capability_id)):
        return []
    steps: list[Step] = []
    for pv in failing:
        if pv.used_bytes:
            steps.append(MovePvExtents(host_id, capability_id, cap.name, pv.name))
        steps.append(RemovePvFromVg(host_id, capability_id, cap.name, pv.name))
    return _single(state, steps)


def _evacuate_allocation(state: OperationalState, p: Problem) -> list[Candidate]:
    alloc = _find_allocation(state, p.subject_id, p.host_id, p.detail)
    if alloc is None:
        return []
    failing_pv = (failing_pv_evacuation(state, p.host_id, p.detail)
                  if p.type == "allocation-on-failing-device" else [])
    users_here = [v for v in state.disk_users(p.subject_id) if state.vm_host(v) == p.host_id]
    if users_here:
        # the VM using it moves with its storage (or, for a failing PV, the data moves off it in the VG)
        out: list[Candidate] = list(failing_pv)
        for vm_id in users_here:
            out.extend(relocation_candidates(state, vm_id, avoid=lambda h: h == p.host_id))
        out.sort(key=lambda c: c.rank)
        return out[:MAX_CANDIDATES]
    out = failing_pv + _move_allocation(state, p.subject_id, alloc,
                                        avoid_host=p.type != "allocation-on-failing-device")
    others = [a for a in state.allocations(p.subject_id) if a != alloc and state.host_up(a.host_id)]
    if others:
        out.extend(_single(state, [remove_step(p.subject_id, alloc)]))  # another copy exists: drop this one
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _cool_down(state: OperationalState, p: Problem) -> list[Candidate]:
    out = []
    vms = sorted(state.vms_on(p.host_id), key=lambda v: (-state.vms[v].cpus, state.vm_name(v)))
    for vm_id in vms[:4]:
        out.extend(relocation_candidates(state, vm_id, limit=4))
    out.sort(key=lambda c: c.rank)
    return out[:MAX_CANDIDATES]


def _grow_thin_pool(state: OperationalState, p: Problem) -> list[Candidate]:
    from .thin import grown_pool_size

    vg, pool_name = p.detail.split("/", 1)
    pool = state.thin_pool(p.host_id, vg, pool_name)
    if pool is None:
        return []
    size = grown_pool_size(state, p.host_id, vg, pool_name)
    cap = next((c for c in state.capabilities(p.host_id) if c.technology.value == "lvm" and c.name == vg), None)
    if cap is None:
        return []
    return _single(state, [ExtendThinPool(p.host_id, cap.id, vg, pool_name, size)])


def _unexport(state: OperationalState, p: Problem) -> list[Candidate]:
    config = state.host_config.get(p.host_id)
    exports = [e for e in (config.exports if config else []) if e.path == p.detail]
    out: list[Candidate] = []
    for export in exports:
        out.extend(_single(state, [UnexportNfs(p.host_id, export.path, export.clients, export.server)]))
    return out


def _unexport_client(state: OperationalState, p: Problem) -> list[Candidate]:
    clients, _, path = p.detail.partition(" ")
    config = state.host_config.get(p.host_id)
    export = next((e for e in (config.exports if config else []) if e.path == path and e.clients == clients), None)
    if export is None:
        return []
    return _single(state, [UnexportNfs(p.host_id, export.path, export.clients, export.server)])


def _unmount(state: OperationalState, p: Problem) -> list[Candidate]:
    return _single(state, [UnmountNfs(p.host_id, p.detail)])


def _unshare(state: OperationalState, p: Problem) -> list[Candidate]:
    return _single(state, [UnshareIscsi(p.host_id, int(p.detail))])


def _disallow(state: OperationalState, p: Problem) -> list[Candidate]:
    from .steps import DisallowIscsiInitiator

    tid, _, address = p.detail.partition(" ")
    return _single(state, [DisallowIscsiInitiator(p.host_id, int(tid), address)])


def _remove_secret(state: OperationalState, p: Problem) -> list[Candidate]:
    from .steps import RemoveIscsiSecret

    return _single(state, [RemoveIscsiSecret(p.host_id, p.detail)])


def _remove_seed(state: OperationalState, p: Problem) -> list[Candidate]:
    from .image_steps import RemoveSeed

    return _single(state, [RemoveSeed(p.subject_id, p.host_id, p.detail)])


def _restart_elsewhere(state: OperationalState, p: Problem) -> list[Candidate]:
    from .ha import restart_candidates

    return restart_candidates(state, p.subject_id, p.host_id)



def _grow_allocation(state: OperationalState, p: Problem) -> list[Candidate]:
    alloc = _find_allocation(state, p.subject_id, p.host_id, p.detail)
    disk = state.disks.get(p.subject_id)
    if alloc is None or disk is None:
        return []
    from ..core.models import LvmAllocation

    if isinstance(alloc, LvmAllocation):
        return _single(state, [ExtendLv(disk.id, p.host_id, alloc.capability_id, alloc.vg, alloc.lv, disk.size)])
    if isinstance(alloc, FileAllocation):
        return _single(state, [ExtendFileImage(disk.id, p.host_id, alloc.capability_id, alloc.path, disk.size)])
    return []


PROBLEM_FACTORIES: dict[str, Callable[[OperationalState, Problem], list[Candidate]]] = {
    "vm-on-recycling-host": _evacuate_vm,
    "vm-on-end-of-life-host": _evacuate_vm,
    "allocation-on-recycling-host": _evacuate_allocation,
    "allocation-on-end-of-life-host": _evacuate_allocation,
    "allocation-on-failing-device": _evacuate_allocation,
    "cpu-overheat": _cool_down,
    "thin-pool-almost-full": _grow_thin_pool,
    "unused-export": _unexport,
    "unused-export-client": _unexport_client,
    "unused-mount": _unmount,
    "unused-iscsi-target": _unshare,
    "unused-iscsi-initiator": _disallow,
    "unused-iscsi-secret": _remove_secret,
    "unused-seed": _remove_seed,
    "vm-lost-with-host": _restart_elsewhere,
    "undersized-allocation": _grow_allocation,
}


def candidates(state: OperationalState, item: Item, *, wanted: int | None = None) -> list[Candidate]:
    """The candidates that could fix the item, best first. ``wanted``: how many of the first the caller
    will try (the greedy search: a few); a factory that finds its best without trying every host
    (``fitting_starts``) then stops there, so its first ``wanted`` are the ones it would give anyway."""
    token = _WANTED.set(wanted or MAX_CANDIDATES)
    try:
        if isinstance(item, Violation):
            return VIOLATION_FACTORIES[item.type](state, item)
        return PROBLEM_FACTORIES[item.type](state, item)
    finally:
        _WANTED.reset(token)


__all__ = [
    "Candidate",
    "PROBLEM_FACTORIES",
    "VIOLATION_FACTORIES",
    "bring_disk",
    "candidates",
    "placement_candidates",
    "relocation_candidates",
    "sequence_cost",
]
