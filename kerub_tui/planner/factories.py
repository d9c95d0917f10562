"""Factories: for a violation or a problem, the candidate step sequences that could fix it.

A candidate is a short sequence (create the disk's LV on h2, then start the VM there), best first:
ranked by the cost of its steps plus the penalty of the wants and wishes it would break, then by the
placement policy (pack hosts when power saving is on, spread load otherwise), then by name, so the
order never depends on hashing. The search tries them; a factory never decides alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core.expectations import Level, StorageAvailability, StorageRedundancy, VmAvailability, VmDependency
from ..core.models import FileAllocation, VirtualMachine, VirtualStorageDevice
from .checkers import (
    Rejection,
    Violation,
    allocation_rejections,
    capacity_rejection,
    host_usable,
    placement_rejections,
)
from .cost import PENALTY, scalar
from .problems import THIN_POOL_FULL, THIN_POOL_GROWTH, Problem
from .state import OperationalState, vm_memory
from .steps import (
    CopyAllocation,
    ExtendFileImage,
    ExtendLv,
    ExtendThinPool,
    MigrateVm,
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

Item = Violation | Problem

MAX_CANDIDATES = 16  # per item and node: the best-ranked few; more only widens the search


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
        return [], 0.0
    found = best_capability(state, disk, host_id)
    if found is None:
        return None
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
        return [create_step(state, disk, host_id, cap)], penalty
    source = next(
        (a for a in sorted(allocs, key=lambda a: (a.host_id, a.capability_id)) if state.host_up(a.host_id)), None
    )
    if source is None:
        return None
    users_elsewhere = [v for v in state.disk_users(disk_id) if state.vm_host(v) not in (None, host_id)]
    keep_source = bool(users_elsewhere) or not move or len(allocs) > 1 or disk.image is not None  # images: copies
    return [
        *_trust_then(state, source.host_id, host_id),
        CopyAllocation(disk_id, source.host_id, source.capability_id, host_id, cap.id, move=not keep_source),
    ], penalty


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


def _placement_policy_key(state: OperationalState, vm: VirtualMachine, host_id: str) -> tuple[Any, ...]:
    free_after = state.free_memory(host_id) - (0 if state.vm_host(vm.id) == host_id else vm_memory(vm))
    capacity = max(state.memory_capacity(host_id), 1)
    share_free = free_after / capacity
    if state.settings.optimisation.power_saving:
        return (share_free,)  # best fit: fill hosts that are already busy, so others can be drained
    return (-share_free,)  # spread: the host with the most room left


def _wake_options(state: OperationalState) -> list[tuple[str, str]]:
    """Powered-down hosts that can be woken, each with a running neighbour to send the wake-up."""
    up = [h for h in state.host_ids() if state.host_up(h)]
    if not up:
        return []
    out = []
    for host_id in state.host_ids():
        host = state.hosts[host_id]
        if state.host_up(host_id) or host.recycling or (host.power.wol_mac is None and host.power.ipmi_address is None):
            continue
        out.append((host_id, up[0]))
    return out


def placement_candidates(state: OperationalState, vm_id: str, *, limit: int = MAX_CANDIDATES,
                         exclude: str | None = None) -> list[Candidate]:
    """Where to start a VM that is not running: every host that fits, best first."""
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    out: list[Candidate] = []
    fitting_up = 0
    for host_id in state.host_ids():
        if host_id == exclude or capacity_rejection(state, vm, host_id) is not None:
            continue
        candidate = _start_on(state, vm, host_id, [])
        if candidate is not None:
            out.append(candidate)
            fitting_up += 1
    if fitting_up == 0:
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


def _start_on(state: OperationalState, vm: VirtualMachine, host_id: str, prefix: list[Step],
              base: OperationalState | None = None) -> Candidate | None:
    rejections = placement_rejections(state, vm, host_id, capacity=False)
    if any(r.hard for r in rejections):
        return None
    from .image_steps import seed_steps

    steps = list(prefix)
    penalty = _penalty(rejections)
    for link in vm.disks:
        brought = bring_disk(state, link.disk_id, host_id)
        if brought is None:
            return None
        disk_steps, disk_penalty = brought
        steps.extend(disk_steps)
        penalty += disk_penalty
    steps.extend(seed_steps(state, vm.id, host_id))
    steps.append(StartVm(vm.id, host_id))
    start = base if base is not None else state
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
    out: list[Candidate] = []
    for host_id in state.host_ids():
        if host_id == source or (avoid is not None and avoid(host_id)):
            continue
        if capacity_rejection(state, vm, host_id) is not None:
            continue
        rejections = placement_rejections(state, vm, host_id, capacity=False)
        if any(r.hard for r in rejections):
            continue
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
            if local is None:
                ok = False  # reached over the network from elsewhere: not moved by the planner
                break
            found = best_capability(state, disk, host_id)
            if found is None:
                ok = False
                break
            cap, disk_penalty = found
            penalty += disk_penalty
            before.append(create_step(state, disk, host_id, cap))
            others = [v for v in state.disk_users(link.disk_id) if v != vm_id and state.vm_host(v) is not None]
            if not others:
                after.append(remove_step(link.disk_id, local))
            copy_storage = True
        if not ok:
            continue
        from .image_steps import seed_steps

        steps = [*before, *seed_steps(state, vm_id, host_id), MigrateVm(vm_id, source, host_id, copy_storage), *after]
        if not _applicable(state, steps):
            continue
        rank = (sequence_cost(state, steps) + penalty, _placement_policy_key(state, vm, host_id),
                state.host_name(host_id), host_id)
        out.append(Candidate(tuple(steps), rank))
    out.sort(key=lambda c: c.rank)
    return out[:limit]


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


def _storage_availability(state: OperationalState, v: Violation) -> list[Candidate]:
    disk = state.disks[v.subject_id]
    exp = _violated(disk.expectations, v, StorageAvailability)
    if exp.up:
        return _disk_allocation_places(state, disk)
    out = []
    for alloc in sorted(state.allocations(disk.id), key=lambda a: (a.host_id, a.capability_id)):
        out.extend(_single(state, [remove_step(disk.id, alloc)]))
    return out[:1]  # remove one at a time, in a fixed order


def _storage_redundancy(state: OperationalState, v: Violation) -> list[Candidate]:
    disk = state.disks[v.subject_id]
    exp = _violated(disk.expectations, v, StorageRedundancy)
    if not exp.out_of_box and not state.allocations(disk.id):
        out: list[Candidate] = []
        for host_id in state.host_ids():
            if host_usable(state, host_id) is not None:
                continue
            for cap in state.capabilities(host_id):
                if cap.technology.value != "lvm":
                    continue
                step = create_step(state, disk, host_id, cap, mirrors=exp.copies - 1)
                out.extend(Candidate(c.steps, (*c.rank, state.host_name(host_id))) for c in _single(state, [step]))
        out.sort(key=lambda c: c.rank)
        return out[:MAX_CANDIDATES]
    return _disk_allocation_places(state, disk)


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


def _evacuate_allocation(state: OperationalState, p: Problem) -> list[Candidate]:
    alloc = _find_allocation(state, p.subject_id, p.host_id, p.detail)
    if alloc is None:
        return []
    users_here = [v for v in state.disk_users(p.subject_id) if state.vm_host(v) == p.host_id]
    if users_here:
        # the VM using it moves with its storage
        out: list[Candidate] = []
        for vm_id in users_here:
            out.extend(relocation_candidates(state, vm_id, avoid=lambda h: h == p.host_id))
        out.sort(key=lambda c: c.rank)
        return out[:MAX_CANDIDATES]
    out = _move_allocation(state, p.subject_id, alloc, avoid_host=p.type != "allocation-on-failing-device")
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
    vg, pool_name = p.detail.split("/", 1)
    pool = state.thin_pool(p.host_id, vg, pool_name)
    if pool is None:
        return []
    used = state.thin_pool_used(p.host_id, vg, pool_name)
    needed = int(used / (THIN_POOL_FULL * 0.9)) + 1
    size = max(needed, int(pool.size_bytes * (1 + THIN_POOL_GROWTH)))
    size = -(-size // (4 << 20)) * (4 << 20)  # whole 4 MiB extents
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


def _unmount(state: OperationalState, p: Problem) -> list[Candidate]:
    return _single(state, [UnmountNfs(p.host_id, p.detail)])


def _unshare(state: OperationalState, p: Problem) -> list[Candidate]:
    return _single(state, [UnshareIscsi(p.host_id, int(p.detail))])


def _remove_seed(state: OperationalState, p: Problem) -> list[Candidate]:
    from .image_steps import RemoveSeed

    return _single(state, [RemoveSeed(p.subject_id, p.host_id, p.detail)])


def _restart_elsewhere(state: OperationalState, p: Problem) -> list[Candidate]:
    return placement_candidates(state, p.subject_id, exclude=p.host_id)


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
    "unused-mount": _unmount,
    "unused-iscsi-target": _unshare,
    "unused-seed": _remove_seed,
    "vm-lost-with-host": _restart_elsewhere,
    "undersized-allocation": _grow_allocation,
}


def candidates(state: OperationalState, item: Item) -> list[Candidate]:
    if isinstance(item, Violation):
        return VIOLATION_FACTORIES[item.type](state, item)
    return PROBLEM_FACTORIES[item.type](state, item)


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
