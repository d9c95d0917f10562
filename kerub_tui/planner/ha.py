"""High availability (issue 16 item 2): a VM with ``ha`` comes back after its host fails.

The order is always the same, and the planner's model enforces it rather than trusting the order of steps:

1. a host goes away (its connection is down or unreachable): what it ran is *lost*, but may still run there;
2. the host is **fenced** (``HostDynamic.fence``): powered off through its BMC (the restart plan's own
   ``FenceHost`` step, where the host has IPMI), seen to run none of its guests (it answered again), or
   confirmed off by the admin (``host fence NAME --confirm-off``, audited);
3. its VMs with ``ha`` whose disks survive (the live storage on another host that is up, read there or over
   a share, or a copy kept for redundancy) are restarted elsewhere: a ``restart`` plan.

Until 2, ``StartVm.blocked`` refuses a VM that may still run on the lost host, and any VM writing a disk such
a VM writes (``steps.vm.unfenced_writer``): two copies of one VM never write the same disk, whatever plan
tries it. A restart from a copy taken for redundancy (a point in time, never kept in sync) asks the admin
first (``Plan.consent``) unless the HA policy (``Settings.ha``) allows a copy of its age; no auto-approve
policy covers a plan that asks, nor a restart plan that deletes data. A VM whose only storage was on the
lost host has lost its storage: nothing restarts it (``restart_wait`` says so, and the re-planner's event).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from typing import Any

from ..core.models import HostStatus
from .state import OperationalState
from .steps import FenceHost, StartVm, Step
from .steps.host import FENCE_BY

log = logging.getLogger(__name__)

LOST_STATUSES = (HostStatus.down, HostStatus.unreachable)


def has_ha(state: OperationalState, vm_id: str) -> bool:
    vm = state.vms.get(vm_id)
    return vm is not None and any(e.type == "ha" for e in vm.expectations)


def wants_up(state: OperationalState, vm_id: str) -> bool:
    vm = state.vms.get(vm_id)
    return vm is not None and any(e.type == "availability" and e.up for e in vm.expectations)


def lost_host(state: OperationalState, vm_id: str) -> str | None:
    """The host a VM was running on when that host went away (down or unreachable), or None."""
    host_id = state.vm_host(vm_id)
    if host_id is None or state.host_status(host_id) not in LOST_STATUSES:
        return None
    return host_id


def restart_candidates(state: OperationalState, vm_id: str, host_id: str) -> list[Any]:
    """Where a VM lost with ``host_id`` may restart, best first. For a VM with ``ha`` on a host that is not
    fenced yet and has IPMI, each candidate powers the host off first (FenceHost); otherwise they apply
    only once the host is fenced (StartVm.blocked says what it waits for)."""
    from .factories import Candidate, placement_candidates

    if has_ha(state, vm_id) and not state.host_fenced(host_id):
        fence = FenceHost(host_id)
        if fence.blocked(state) is None:
            fenced = fence.take(state)
            cost = fence.cost(state)
            from .cost import scalar

            return [Candidate((fence, *c.steps), (c.rank[0] + scalar(cost), *c.rank[1:]))
                    for c in placement_candidates(fenced, vm_id, exclude=host_id)]
    return placement_candidates(state, vm_id, exclude=host_id)


def lost_storage(state: OperationalState, vm_id: str) -> list[str]:
    """The VM's disks with no storage left on a host that is up: neither its live storage nor a copy
    (each by name). A VM with one of them cannot be restarted anywhere."""
    vm = state.vms.get(vm_id)
    if vm is None:
        return []
    out = []
    for link in vm.disks:
        disk = state.disks.get(link.disk_id)
        allocs = state.allocations(link.disk_id)
        if disk is None or not allocs:
            continue  # a new disk, made where the VM starts
        if not any(state.host_up(a.host_id) for a in allocs):
            out.append(state.disk_name(link.disk_id))
    return out


def unreadable_disks(disks: Sequence[str], allocations: Callable[[str], Sequence[Any]],
                     host_up: Callable[[str], bool]) -> list[tuple[str, list[str]]]:
    """(disk id, the hosts of its live storage) for each of ``disks`` whose live storage (not a copy taken for
    redundancy) is all on hosts that are not up: a guest cannot read it wherever it runs, locally or over a
    share (a VM still up on a host that is up has lost its storage with the host that served it). The one
    rule the re-planner's ``vm-storage-lost`` event and the VM's ``storage-lost`` status share."""
    out = []
    for disk_id in disks:
        live = [a for a in allocations(disk_id) if a.copied_at is None]
        if live and not any(host_up(a.host_id) for a in live):
            out.append((disk_id, sorted({a.host_id for a in live})))
    return out


def restart_wait(state: OperationalState, vm_id: str) -> tuple[str, str] | None:
    """(event type, why) a VM lost with its host is not restarted yet, or None when nothing holds it:
    ``vm-storage-lost`` (its only storage was there: nothing restarts it), ``restart-waits-fence`` (the
    host may still run it: fence it)."""
    host_id = lost_host(state, vm_id)
    if host_id is None:
        return None
    name = state.host_name(host_id)
    vm_name = state.vm_name(vm_id)
    lost = lost_storage(state, vm_id)
    if lost:
        return ("vm-storage-lost",
                f"{vm_name} lost its storage with {name}: disk {', '.join(lost)} has no copy on a host that is "
                "up, so nothing restarts it")
    if not state.host_fenced(host_id):
        host = state.hosts.get(host_id)
        ipmi = host is not None and host.power.ipmi_address is not None
        refused = FenceHost(host_id).blocked(state) if ipmi and has_ha(state, vm_id) else "no IPMI"
        how = ("its restart plan powers it off through IPMI first" if refused is None
               else f"confirm it is off: kerub-tui host fence {name} --confirm-off; or bring it back")
        if refused is not None and ipmi and has_ha(state, vm_id):
            how = f"{refused}; or {how}"
        return ("restart-waits-fence",
                f"{vm_name} may still run on {name} ({state.host_status(host_id).value}): it restarts elsewhere "
                f"once {name} is fenced ({how})")
    return None


def _age(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def consent_lines(steps: Sequence[Step], states: Sequence[OperationalState]) -> list[str]:
    """Why a plan needs the admin's own yes: each start from a copy taken for redundancy (a point in time,
    not kept in sync) that the HA policy does not allow (older than ``copy_max_age_minutes``, unless
    ``restart_from_stale_copies``), with the copy's age and where the newer writes are."""
    out: list[str] = []
    for step, state in zip(steps, states):
        if not isinstance(step, StartVm):
            continue
        policy = state.settings.ha
        if policy.restart_from_stale_copies:
            continue
        vm = state.vms.get(step.vm)
        for link in vm.disks if vm is not None else []:
            older = state.older_copy(link.disk_id, step.host)
            if older is None or older.copied_at is None:
                continue
            age = (state.now - older.copied_at).total_seconds()
            if policy.copy_max_age_minutes and age < policy.copy_max_age_minutes * 60:
                continue
            newer = sorted({state.host_name(a.host_id) for a in state.allocations(link.disk_id)
                            if a.copied_at is None})
            limit = (f"older than the {policy.copy_max_age_minutes} min the HA policy allows"
                     if policy.copy_max_age_minutes else "the HA policy asks for every copy")
            out.append(f"{state.vm_name(step.vm)} starts on {state.host_name(step.host)} from the copy of disk "
                       f"{state.disk_name(link.disk_id)} taken {older.copied_at:%Y-%m-%d %H:%M} UTC "
                       f"({_age(age)} old, {limit}): writes since then are on {', '.join(newer) or 'no host'}, "
                       "and are lost")
    return out


def copy_age(now: dt.datetime, copied_at: dt.datetime) -> str:
    return _age((now - copied_at).total_seconds())




# --- the story, told as events ---------------------------------------------------------------------------


class HaNarrator:
    """The events that tell what happens to the VMs with ``ha`` of a host that fails, in order:

    ``host-down`` (the fleet's) -> ``restart-waits-fence`` (what each waits for) or ``vm-storage-lost``
    (its only storage was there: nothing restarts it) -> ``restart-planned`` (and ``restart-needs-consent``
    where it starts from an older copy) -> ``host-fenced`` (how: its restart plan powered it off through
    IPMI, or it answered again running none of them; the admin's confirmation is told by the controller
    with its audit entry) -> ``vm-restarted`` (or ``restart-failed``). Each event names the VM (target) and
    the host, so ``kerub-tui events --vm NAME`` tells one VM's story. Runs beside the re-planner."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self._away: dict[str, set[str]] = {}  # host -> its VMs with ha when it went away
        self._back: set[str] = set()  # hosts away that answered again
        self._lost_with: dict[str, str] = {}  # VM -> the host it was lost with
        self._twice: set[tuple[str, frozenset[str]]] = set()  # (VM, its two hosts) told running twice
        self._planned: dict[str, str] = {}  # VM -> the host its told restart goes to (a re-proposal is not news)
        self._subscription: Any = None  # the change feed's, while run() runs

    async def run(self) -> None:
        subscription = self._subscription = self.store.feed.subscribe(["host-dynamic", "vm-dynamic", "plan"])
        try:
            while True:
                self._tell(await subscription.get())
        except StopAsyncIteration:
            return
        finally:
            subscription.close()

    def catch_up(self) -> None:
        """Tell now what changed and is not told yet: a caller about to tell what follows (the admin's
        fence) keeps the story in the order it happened, however far behind this task is."""
        if self._subscription is not None:
            for change in self._subscription.drain_nowait():
                self._tell(change)

    def _tell(self, change: Any) -> None:
        from ..core.store import StoreWriteError

        try:
            events = self.events_for(change)
            if events:
                self.store.put_many(events)
        except StoreWriteError:
            log.info("ha events not stored: %s", self.store.write_failure)
        except Exception:
            log.exception("ha events of a %s change failed", change.kind)

    def events_for(self, change: Any) -> list[Any]:
        if change.kind == "host-dynamic":
            return self._host(change.id, change.old, change.new)
        if change.kind == "vm-dynamic":
            return self._vm(change.id, change.old, change.new)
        if change.kind == "plan" and change.new is not None:
            return self._plan(change.old, change.new)
        return []

    def _ha_vms_on(self, host_id: str) -> list[str]:
        from ..core.models import VirtualMachine

        out = []
        for vm_id in sorted(self.store.vms_on_host(host_id)):
            vm = self.store.get(VirtualMachine, vm_id)
            if vm is not None and any(e.type == "ha" for e in vm.expectations):
                out.append(vm_id)
        return out

    def _host(self, host_id: str, old: Any, new: Any) -> list[Any]:
        from ..core.models import Event, EventSeverity

        if new is None:
            return []
        out: list[Any] = []
        was = old.status if old is not None else None
        if new.status in LOST_STATUSES and was not in LOST_STATUSES:
            vms = self._ha_vms_on(host_id)
            self._away[host_id] = set(vms)
            self._back.discard(host_id)
            if vms:  # judged as the host went away (the change's own document: it may be fenced by now)
                state = OperationalState.from_store(self.store).apply([new])
                for vm_id in vms:
                    self._lost_with[vm_id] = host_id
                    waiting = restart_wait(state, vm_id)
                    if waiting is not None:
                        out.append(Event(type=waiting[0], severity=EventSeverity.warning, host_id=host_id,
                                         target=vm_id, message=waiting[1]))
            out += self._storage_lost_elsewhere(host_id)
        elif new.status is HostStatus.up and was in LOST_STATUSES and self._away.get(host_id):
            self._back.add(host_id)
        fence = new.fence
        if fence is not None and (old is None or old.fence is None) and fence.by == FENCE_BY:
            name = self._host_name(host_id)
            ran = ", ".join(self._vm_name(v) for v in sorted(self._away.get(host_id, ()))) or "none"
            out.append(Event(type="host-fenced", host_id=host_id,
                             message=f"{name} fenced: {fence.describe()}; the VMs with ha it ran ({ran}) restart "
                                     "elsewhere"))
        return out

    def _storage_lost_elsewhere(self, host_id: str) -> list[Any]:
        """``vm-storage-lost`` for each VM still up on a host that is up and reading a disk whose live storage
        was on ``host_id`` (over a share): its guest cannot read that disk any more."""
        from ..core.models import Event, EventSeverity, VirtualMachine

        state = OperationalState.from_store(self.store)
        out = []
        for vm_id in sorted(state.vms):
            placed = state.vm_host(vm_id)
            if placed is None or placed == host_id or not state.host_up(placed):
                continue
            vm = self.store.get(VirtualMachine, vm_id)
            if vm is None:
                continue
            lost = [(d, hosts) for d, hosts in unreadable_disks([link.disk_id for link in vm.disks],
                                                                 state.allocations, state.host_up)
                    if host_id in hosts]
            if not lost:
                continue
            name = self._host_name(host_id)
            disks = ", ".join(state.disk_name(d) for d, _ in lost)
            out.append(Event(type="vm-storage-lost", severity=EventSeverity.error, host_id=host_id, target=vm_id,
                             message=f"{vm.name} on {self._host_name(placed)} lost its storage with {name}: disk "
                                     f"{disks} is on {name} alone, which is {state.host_status(host_id).value}; "
                                     "its guest cannot read it"))
        return out

    def _vm(self, vm_id: str, old: Any, new: Any) -> list[Any]:
        from ..core.models import Event, VmStatus

        if old is None or old.host_id is None or old.status is VmStatus.down:
            return []
        host_id = old.host_id
        twice = self._runs_twice(vm_id, old, new)
        if twice is not None:
            return [twice]
        if host_id not in self._back or vm_id not in self._away.get(host_id, set()):
            return []
        if new is not None and new.host_id == host_id and new.status is not VmStatus.down:
            self._away[host_id].discard(vm_id)  # it still ran there (a network flap): nothing to restart
            return []
        self._away[host_id].discard(vm_id)
        name = self._host_name(host_id)
        return [Event(type="host-fenced", host_id=host_id, target=vm_id,
                      message=f"{name} answers again and runs no {self._vm_name(vm_id)} (no running guest): it "
                              "may start again")]

    def _runs_twice(self, vm_id: str, old: Any, new: Any) -> Any:
        """A VM seen running on one host that is up, then on another that is up, with no plan moving it:
        a host that was fenced (confirmed off) came back running the guest that was restarted elsewhere.
        Two copies may now write the same disks: an error event, for the admin to stop one at once."""
        from ..core.models import Event, EventSeverity, HostDynamic, VmStatus
        from .replanner import busy_subjects

        if new is None or new.host_id is None or new.host_id == old.host_id:
            return None
        if old.status is not VmStatus.up or new.status is not VmStatus.up:
            return None
        both = [self.store.get(HostDynamic, h) for h in (old.host_id, new.host_id)]
        if not all(d is not None and d.status is HostStatus.up for d in both):
            return None
        if vm_id in busy_subjects(self.store).vms:
            return None  # a plan moves it (a migration): not two copies
        pair = (vm_id, frozenset((old.host_id, new.host_id)))
        if pair in self._twice:
            return None  # told once: the two monitors may go on flipping it
        self._twice.add(pair)
        name, one, other = self._vm_name(vm_id), self._host_name(old.host_id), self._host_name(new.host_id)
        return Event(type="vm-runs-twice", severity=EventSeverity.error, host_id=new.host_id, target=vm_id,
                     message=f"{name} is seen running on {other} while it runs on {one}: two copies may write the "
                             f"same disks; stop one at once (was {other} confirmed off while it still ran it?)")

    def _plan(self, old: Any, new: Any) -> list[Any]:
        from ..core.models import Event, EventSeverity, PlanStatus, kind_parts
        from .steps import UnknownStep, step_from_planned

        if "restart" not in kind_parts(new.plan_kind):
            return []
        try:
            steps = [step_from_planned(p) for p in new.steps]
        except UnknownStep:
            return []
        starts = [s for s in steps if isinstance(s, StartVm)]
        fences = [s for s in steps if isinstance(s, FenceHost)]
        short = new.id[:8]
        out: list[Any] = []
        if old is None and new.status is PlanStatus.proposed:
            first = "".join(f"fence {self._host_name(f.host)} through IPMI, then " for f in fences)
            for step in starts:
                lost = self._lost_with.get(step.vm) or self._placed(step.vm)
                if lost is not None:
                    self._lost_with[step.vm] = lost
                if self._planned.get(step.vm) == step.host:
                    continue  # the same restart proposed again (its premises changed): told already
                self._planned[step.vm] = step.host
                out.append(Event(type="restart-planned", host_id=lost, target=step.vm,
                                 message=f"restart of {self._vm_name(step.vm)} planned (plan {short}): {first}"
                                         f"start it on {self._host_name(step.host)}"))
            for line in new.consent:
                out.append(Event(type="restart-needs-consent", severity=EventSeverity.warning,
                                 target=starts[0].vm if starts else None,
                                 message=f"plan {short} waits for the admin's consent: {line}"))
        elif old is not None and old.status is not new.status and new.status is PlanStatus.done:
            for step in starts:
                self._planned.pop(step.vm, None)
                lost = self._lost_with.pop(step.vm, None)
                after = f" after {self._host_name(lost)} failed" if lost else ""
                out.append(Event(type="vm-restarted", host_id=step.host, target=step.vm,
                                 message=f"{self._vm_name(step.vm)} restarted on {self._host_name(step.host)}"
                                         f"{after} (plan {short})"))
        elif old is not None and old.status is not new.status and new.status is PlanStatus.failed:
            for step in starts:
                self._planned.pop(step.vm, None)
                out.append(Event(type="restart-failed", severity=EventSeverity.error, target=step.vm,
                                 host_id=step.host, message=f"the restart of {self._vm_name(step.vm)} failed "
                                                            f"(plan {short}): {new.status_reason or 'see plan show'}"))
        return out

    def _placed(self, vm_id: str) -> str | None:
        from ..core.models import VirtualMachineDynamic

        dyn = self.store.get(VirtualMachineDynamic, vm_id)
        return dyn.host_id if dyn is not None else None

    def _host_name(self, host_id: str | None) -> str:
        from ..core.models import Host

        host = self.store.get(Host, host_id) if host_id else None
        return host.name if host is not None else (host_id or "-")[:8]

    def _vm_name(self, vm_id: str) -> str:
        from ..core.models import VirtualMachine

        vm = self.store.get(VirtualMachine, vm_id)
        return vm.name if vm is not None else vm_id[:8]


__all__ = ["HaNarrator", "consent_lines", "has_ha", "lost_host", "lost_storage", "restart_candidates", "restart_wait",
           "unreadable_disks"]
