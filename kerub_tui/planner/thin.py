"""Thin provisioning (issue 18 item 5; ARCHITECTURE.md, thin over-commit): where a new disk fits no
plain LV, a thin LV in a thin pool on a volume group, while the admin's policy allows over-commit.

The policy is two settings (``OptimisationPolicies``): ``thin_overcommit`` (off by default) and
``thin_overcommit_ratio`` (10 by default): the virtual sizes of a pool's thin LVs together are at most
that many times the pool's data size. Off, nothing here plans anything, and ``refusal`` says why a disk
too big for the free space gets no plan.

On, for a new empty disk that fits no plain LV on a host, per LVM volume group there:
- a pool kerub-tui made there already is reused: extended first where the disk would over-commit it
  past the ratio, or where it is nearly full (``problems.THIN_POOL_FULL``);
- else a pool is created, as small as the ratio allows for the disk (at least ``THIN_POOL_MIN`` where
  the VG has that much), so the rest of the VG stays free for plain LVs and for the pool to grow;
- then the thin LV in it.
A new thin LV holds no data yet; monitoring reports each pool's free space, and a pool that fills
raises the "thin pool almost full" problem, which extends it (``factories._grow_thin_pool``).

Only empty new disks are thin: a copy, a clone or an image writes its whole size, so it gains nothing.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from ..core.models import LvmAllocation, StorageTechnology, VirtualStorageDevice
from ..core.sizes import format_size
from .checkers import allocation_rejections
from .problems import THIN_POOL_FULL, THIN_POOL_GROWTH
from .state import OperationalState
from .steps import CreateThinLv, CreateThinPool, ExtendThinPool, Step, allocation_name
from .steps.lvm import thin_overcommit, thin_pool_overhead, whole_extents

# The pool kerub-tui makes on a volume group. A disk's LV is "kerub-" + its name, and a disk name starts
# with a letter or a digit: no disk's LV can be named so. Named "kerub-", a pool a crash left unrecorded
# is found and offered for cleanup like any other kerub-named LV (planner/reconcile.py).
THIN_POOL_NAME = "kerub--thin"
THIN_POOL_MIN = 1 << 30  # a new pool gets at least this where the VG has it: fewer extensions later


def thin_allowed(state: OperationalState) -> bool:
    return state.settings.optimisation.thin_overcommit


def thin_candidate(disk: VirtualStorageDevice, state: OperationalState) -> bool:
    """Whether the disk could be thin at all: new and empty (no copy yet, no clone, no image)."""
    return (disk.image is None and not state.allocations(disk.id)
            and not any(e.type == "clone-of" for e in disk.expectations))


def pool_size_for(allotted: int, ratio: float) -> int:
    """The smallest pool (whole extents) that holds ``allotted`` bytes of thin LVs within the ratio."""
    return whole_extents(math.ceil(allotted / ratio))


def grown_pool_size(state: OperationalState, host_id: str, vg: str, pool: str) -> int:
    """The size a nearly full pool is extended to: a quarter more, at least what brings its data well
    under the mark (whole extents)."""
    found = state.thin_pool(host_id, vg, pool)
    size = found.size_bytes if found is not None else 0
    used = state.thin_pool_used(host_id, vg, pool)
    needed = int(used / (THIN_POOL_FULL * 0.9)) + 1
    return whole_extents(max(needed, int(size * (1 + THIN_POOL_GROWTH))))


def _lvm_name(name: str, check: Any) -> bool:
    try:
        check(name)
    except ValueError:
        return False  # a name no LVM command of kerub-tui's will carry (a host reported it, hostile or odd)
    return True


def _vg_pool(state: OperationalState, host_id: str, vg: str) -> Any:
    """The pool kerub-tui made on this VG (its own name first), or None."""
    from ..hosts.lvm import check_lv

    pools = [p for p in state.thin_pools(host_id) if p.vg == vg and _lvm_name(p.name, check_lv)]
    return next((p for p in pools if p.name == THIN_POOL_NAME), pools[0] if pools else None)


def _largest_new_pool(free: int) -> int:
    """The biggest pool (whole extents) whose data and metadata fit in ``free`` bytes."""
    size = max(free - thin_pool_overhead(free), 0) // whole_extents(1) * whole_extents(1)
    while size > 0 and size + thin_pool_overhead(size) > free:
        size -= whole_extents(1)
    return size


def _on_capability(state: OperationalState, disk: VirtualStorageDevice, host_id: str,
                   cap: Any) -> list[Step] | str:
    """The steps giving the disk a thin LV on this LVM capability, or why it cannot have one."""
    ratio = state.thin_overcommit_limit()
    vg = cap.name
    free = state.free_storage(host_id, cap.id)
    pool = _vg_pool(state, host_id, vg)
    if pool is not None:
        lv = CreateThinLv(disk.id, host_id, cap.id, vg, pool.name, allocation_name(disk), disk.size)
        allotted = state.thin_allotted(host_id, vg, pool.name) + disk.size
        size = pool_size_for(allotted, ratio)
        if state.thin_pool_used(host_id, vg, pool.name) >= pool.size_bytes * THIN_POOL_FULL:
            size = max(size, grown_pool_size(state, host_id, vg, pool.name))
        if size <= pool.size_bytes:
            return [lv]
        if size - pool.size_bytes > free:
            return (f"its thin pool {vg}/{pool.name} would have to grow to {format_size(size)} for "
                    f"{format_size(allotted)} of thin LVs at {ratio:g}x, and {vg} has {format_size(max(free, 0))} free")
        return [ExtendThinPool(host_id, cap.id, vg, pool.name, size), lv]
    need = pool_size_for(disk.size, ratio)
    room = _largest_new_pool(free)
    if need > room:
        return (f"a thin pool for it would need {format_size(need)} at {ratio:g}x over-commit (and its metadata), "
                f"{vg} has {format_size(max(free, 0))} free")
    size = max(need, min(THIN_POOL_MIN, room))
    return [CreateThinPool(host_id, cap.id, vg, THIN_POOL_NAME, size),
            CreateThinLv(disk.id, host_id, cap.id, vg, THIN_POOL_NAME, allocation_name(disk), disk.size)]


def _lvm_capabilities(state: OperationalState, disk: VirtualStorageDevice, host_id: str) -> list[tuple[Any, float]]:
    """The host's LVM volume groups that would take a thin LV of the disk (space aside), with the soft
    penalty of the disk's wants and wishes there."""
    from ..hosts.lvm import check_vg
    from .factories import soft_penalty

    out = []
    for cap in state.capabilities(host_id):
        if cap.technology is not StorageTechnology.lvm:
            continue
        if not _lvm_name(cap.name, check_vg):
            continue
        rejections = allocation_rejections(state, disk, host_id, cap.id, 0)  # the pool holds it, not the VG
        if any(r.hard for r in rejections):
            continue
        out.append((cap, soft_penalty(rejections)))
    return out


def thin_steps(state: OperationalState, disk: VirtualStorageDevice, host_id: str) -> tuple[list[Step], float] | None:
    """The best way to give a new disk that fits no plain LV a thin LV on this host (with its pool
    created or grown first), with the soft penalty of the place; None where none is allowed or fits."""
    if not thin_allowed(state) or not thin_candidate(disk, state):
        return None
    best: tuple[tuple[Any, ...], list[Step], float] | None = None
    for cap, penalty in _lvm_capabilities(state, disk, host_id):
        found = _on_capability(state, disk, host_id, cap)
        if isinstance(found, str):
            continue
        rank = (penalty, len(found), -state.free_storage(host_id, cap.id), cap.id)
        if best is None or rank < best[0]:
            best = (rank, found, penalty)
    return (best[1], best[2]) if best is not None else None


def one_pool_each(steps: list[Step]) -> list[Step]:
    """A pool a sequence makes and then grows (for a VM's second new disk) is made at its final size."""
    made = {(s.host, s.vg, s.pool) for s in steps if isinstance(s, CreateThinPool)}
    final = {(s.host, s.vg, s.pool): s.size for s in steps
             if isinstance(s, ExtendThinPool) and (s.host, s.vg, s.pool) in made}
    out: list[Step] = []
    for step in steps:
        if isinstance(step, CreateThinPool) and (key := (step.host, step.vg, step.pool)) in final:
            out.append(replace(step, size=max(step.size, final[key])))
        elif not (isinstance(step, ExtendThinPool) and (step.host, step.vg, step.pool) in final):
            out.append(step)
    return out


def refusal(state: OperationalState, disk: VirtualStorageDevice, host_id: str) -> str | None:
    """Why a disk that fits no plain LV on this host gets no thin LV there either (one line), None where
    it would get one or the question does not arise (an image, a copy, a clone)."""
    if not thin_candidate(disk, state):
        return None
    caps = _lvm_capabilities(state, disk, host_id)
    if not caps:
        return None
    if not thin_allowed(state):
        return "thin over-commit is off (settings)"
    reasons = []
    for cap, _ in caps:
        found = _on_capability(state, disk, host_id, cap)
        if not isinstance(found, str):
            return None
        reasons.append(found)
    return "; ".join(reasons)


def allocation_note(state: OperationalState, disk_id: str, alloc: Any) -> str | None:
    """A thin allocation as the admin reads it: its pool, how over-committed, how full."""
    if not isinstance(alloc, LvmAllocation) or not alloc.thin_pool:
        return None
    host, vg, name = alloc.host_id, alloc.vg, alloc.thin_pool
    pool = state.thin_pool(host, vg, name)
    where = f"thin LV {vg}/{alloc.lv} in pool {vg}/{name} on {state.host_name(host)}"
    if pool is None or pool.size_bytes <= 0:
        return where
    allotted = state.thin_allotted(host, vg, name)
    used = state.thin_pool_used(host, vg, name)
    return (f"{where}: the pool's {format_size(pool.size_bytes)} hold {format_size(allotted)} of thin LVs "
            f"({thin_overcommit(allotted, pool.size_bytes):.1f}x, at most {state.thin_overcommit_limit():g}x), "
            f"{100 * used / pool.size_bytes:.0f}% of it in use (extended from {100 * THIN_POOL_FULL:.0f}%)")
