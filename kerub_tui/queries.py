"""The console API's queries, written once over a store: the controller's own, or the live mirror an
attached console keeps of it (``RemoteController``). They read and change nothing.

The console asks these instead of reaching into the store or running the planner itself.
"""

from __future__ import annotations

import datetime as dt
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from .api import MAX_LISTED, ActionError, VmPlans, VmState, listed
from .core.metrics import Metrics, MetricSeries, MetricsError
from .core.models import (
    Accelerator,
    AuditEntry,
    Document,
    Event,
    Host,
    HostDynamic,
    HostStatus,
    Plan,
    PlanStatus,
    Settings,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
    kind_text,
)
from .core.sizes import format_size
from .core.store import Store

D = TypeVar("D", bound=Document)

_ACTIVE_PLANS = (PlanStatus.approved, PlanStatus.running)
# What a VM's placement is judged on: a change of any of these may make it placeable, or not.
_FACT_KINDS = frozenset({"host", "host-dynamic", "host-config", "vm", "vm-dynamic", "disk", "disk-dynamic",
                         "settings", "plan"})


class _StatusCache:
    """What VM statuses are derived from, kept per store until its change feed says it changed (a
    listener counts the changes): the VMs' plans, and the placement verdicts of VMs that wait to run."""

    def __init__(self, db: Store) -> None:
        self.db = db
        self.plans = 0  # changes of plan documents seen
        self.facts = 0  # changes of what a placement depends on
        self.plan_index: tuple[int, dict[str, VmPlans]] | None = None
        self.placement: dict[str, tuple[int, str | None]] = {}
        self.state: tuple[int, Any] | None = None
        db.feed.add_listener(self._changed)

    def _changed(self, change: Any) -> None:
        if change.kind == "plan":
            self.plans += 1
        if change.kind in _FACT_KINDS:
            self.facts += 1
            self.state = None


def _ago(when: dt.datetime) -> str:
    """'12s', '5m', '3h', '2d' since ``when``."""
    seconds = max(0, int((dt.datetime.now(dt.UTC) - when).total_seconds()))
    return next((f"{seconds // size}{unit}" for unit, size in (("d", 86400), ("h", 3600), ("m", 60))
                 if seconds >= size), f"{seconds}s")


class StoreQueries:
    """Mixed into both controllers; ``db`` is the store the queries read."""

    @property
    @abstractmethod
    def db(self) -> Store:
        """The store of the controller this is mixed into (each controller defines it)."""

    @property
    def live(self) -> bool:
        """Whether a controller keeps the documents' figures current (each controller says)."""
        return True

    def get(self, kind: type[D], doc_id: str) -> D | None:
        return self.db.get(kind, doc_id)

    def documents(self, kind: type[D]) -> list[D]:
        return self.db.list(kind)

    def find_by_name(self, kind: type[D], name: str) -> D | None:
        return self.db.find_by_name(kind, name)

    def resolve(self, kind: type[D], ref: str) -> D:
        """A document by id or by name; ActionError naming what was not found."""
        doc = self.db.get(kind, ref) or self.db.find_by_name(kind, ref)
        if doc is None:
            label = kind.model_fields["kind"].default
            raise ActionError(f"no {label} named {ref!r}")
        return doc

    def plan(self, ref: str) -> Plan:
        """A plan by id or by an unambiguous prefix of it (as `plan list` shows them)."""
        plan: Plan | None = self.db.get(Plan, ref)
        if plan is not None:
            return plan
        matches = [p for p in self.db.list(Plan) if p.id.startswith(ref)]
        if len(matches) != 1:
            raise ActionError(f"no plan {ref!r}" if not matches else f"plan id {ref!r} is ambiguous: give more of it")
        return matches[0]

    def audit_log(self, since: dt.datetime | None = None, *, host_id: str | None = None,
                  subject: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        """The audit entries, oldest first, read from the history: with ``since``, those from then on; of
        one host; about one VM (``subject``, its id); with ``limit``, the newest ``limit`` of them."""
        history = self.db.history
        if history is None:
            return []
        return history.query("audit", since=since, host_id=host_id, subject=subject, limit=limit)

    def event_log(self, since: dt.datetime | None = None, *, host_id: str | None = None,
                  subject: str | None = None, limit: int | None = None) -> list[Event]:
        """The events, oldest first, read from the history (the filters as ``audit_log``'s; an event's
        subject is its target)."""
        history = self.db.history
        if history is None:
            return []
        return history.query("event", since=since, host_id=host_id, subject=subject, limit=limit)

    def history_counts(self) -> dict[str, int]:
        """How many audit entries ("audit") and events ("event") the history holds."""
        history = self.db.history
        return {kind: history.count(kind) if history is not None else 0 for kind in ("audit", "event")}

    def metrics(self, kind: Literal["host", "vm"], doc_id: str, range_name: str = "1d",
                now: dt.datetime | None = None) -> MetricSeries:
        """A host's or a VM's CPU and memory over ``range_name`` (1h, 1d, 7d, 30d, 1y) up to ``now``, read
        from the metrics history (core/metrics.py): a point per minute up to a day, per hour beyond, gaps
        as None. ActionError for an unknown range or a file that cannot be read."""
        try:
            with Metrics(self.db.data_dir) as reader:
                return reader.read(kind, doc_id, range_name, now)
        except (ValueError, MetricsError) as error:
            raise ActionError(str(error)) from None

    def open_violations(self) -> dict[str, dict[str, str]]:
        """The expectations violated now, as the planner last said: subject id -> {spec: message}."""
        history = self.db.history
        return history.open_violations() if history is not None else {}

    def image(self, ref: str) -> VirtualStorageDevice:
        """An image by id or name; ActionError when there is none, or it is a disk."""
        disk = self.resolve(VirtualStorageDevice, ref)
        if disk.image is None:
            raise ActionError(f"{disk.name} is a disk, not an image")
        return disk

    def vms_on_host(self, host_id: str) -> set[str]:
        return self.db.vms_on_host(host_id)

    def disks_on_host(self, host_id: str) -> set[str]:
        return self.db.disks_on_host(host_id)

    def host_of_vm(self, vm_id: str) -> str | None:
        return self.db.host_of_vm(vm_id)

    def settings(self) -> Settings:
        return self.db.get(Settings, "settings") or Settings()

    # --- a VM's status: what is known, derived here only ------------------------------------------

    def _status_cache(self) -> _StatusCache:
        cache: _StatusCache | None = getattr(self, "_vm_status_cache", None)
        if cache is None or cache.db is not self.db:
            cache = _StatusCache(self.db)
            self._vm_status_cache = cache
        return cache

    def _plan_index(self) -> dict[str, VmPlans]:
        """VM id -> its open, running and rejected plans; rebuilt when a plan document changes."""
        from .planner.replanner import plan_vms

        cache = self._status_cache()
        version = cache.plans
        if cache.plan_index is not None and cache.plan_index[0] == version:
            return cache.plan_index[1]
        wanted = (PlanStatus.proposed, PlanStatus.rejected, *_ACTIVE_PLANS)
        plans = [p for p in self.db.list(Plan) if p.status in wanted]
        found: dict[str, dict[str, list[Plan]]] = {}
        for plan in sorted(plans, key=lambda p: (p.decided_at or p.created_at, p.id)):
            if plan.status is PlanStatus.rejected and plan.asked_again_by:
                continue
            group = "active" if plan.status in _ACTIVE_PLANS else plan.status.value
            for vm_id in plan_vms(plan):
                found.setdefault(vm_id, {}).setdefault(group, []).append(plan)
        index = {vm_id: VmPlans(tuple(g.get("proposed", ())), tuple(g.get("active", ())),
                                g["rejected"][-1] if g.get("rejected") else None)
                 for vm_id, g in found.items()}
        cache.plan_index = (version, index)
        return index

    def vm_plans(self, vm_id: str) -> VmPlans:
        return self._plan_index().get(vm_id, VmPlans())

    def vm_state(self, vm_id: str) -> VmState:
        """What is known about the VM: up, down, paused, migrating, lost (its host is down), storage lost
        (it runs, but a disk's storage is on hosts that are down), waiting for approval, starting, stopping,
        or can't be placed (with the reason); on a host that is connecting (not seen since this controller
        started), what was last seen, with a "?" (up?), and when."""
        vm = self.db.get(VirtualMachine, vm_id)
        dyn = self.db.get(VirtualMachineDynamic, vm_id)
        plans = self.vm_plans(vm_id)
        exp = next((e for e in vm.expectations if e.type == "availability"), None) if vm is not None else None
        wants = None if exp is None else bool(exp.up)
        placed = dyn is not None and dyn.host_id is not None and dyn.status is not VmStatus.down
        if placed and dyn is not None and dyn.host_id is not None:
            host = self.db.get(HostDynamic, dyn.host_id)
            if host is None or host.status in (HostStatus.down, HostStatus.unreachable):
                where = self._name(Host, dyn.host_id)
                why = f"its host {where} is {host.status.value if host else 'unknown'}"
                if host is not None and host.status_reason:
                    why += f" ({host.status_reason})"
                if host is not None and host.fence is not None:
                    why += f"; fenced: {host.fence.describe()}"
                elif vm is not None and any(e.type == "ha" for e in vm.expectations):
                    why += (f"; ha: it restarts elsewhere once {where} is fenced (IPMI power off, or "
                            f"kerub-tui host fence {where} --confirm-off)")
                if plans.active:
                    why += f"; plan {plans.active[0].id[:8]} restarts it"
                elif plans.proposed:
                    why += f"; plan {plans.proposed[0].id[:8]} to restart it awaits approval"
                    if plans.proposed[0].consent:  # from a copy older than the HA policy allows: said here
                        why += f" (your consent: {plans.proposed[0].consent[0]})"
                return VmState("lost", dyn.host_id, why, False, plans)
            if host.status is HostStatus.connecting:  # not seen since this controller started: as last seen
                seen = (f"last seen {dyn.status.value} {_ago(host.last_seen)} ago" if host.last_seen
                        else "never seen")
                return VmState(f"{dyn.status.value}?", dyn.host_id,
                               f"its host {self._name(Host, dyn.host_id)} is connecting: {seen}", False, plans,
                               stale=True)
            if dyn.status is not VmStatus.up:
                return VmState(dyn.status.value, dyn.host_id, "", True, plans)
            if vm is not None and (gone := self._storage_gone(vm)):
                return VmState("storage-lost", dyn.host_id, gone, True, plans)
            if wants is False:
                if plans.active:
                    return VmState("stopping", dyn.host_id, f"plan {plans.active[0].id[:8]} stops it", True, plans)
                if plans.proposed:
                    return VmState("waiting", dyn.host_id, f"its stop awaits approval: plan "
                                   f"{plans.proposed[0].id[:8]}", True, plans)
            return VmState("up", dyn.host_id, self._rejected_reason(plans), True, plans)
        if plans.active and wants is not False:
            return VmState("starting", None, f"plan {plans.active[0].id[:8]} starts it", False, plans)
        if plans.proposed and wants is not False:
            return VmState("waiting", None, f"its start awaits approval: plan {plans.proposed[0].id[:8]}",
                           False, plans)
        if wants and plans.rejected is None:
            unplaced = self.placement_problem(vm_id)
            if unplaced is not None:
                return VmState("unplaced", None, unplaced, False, plans)
        return VmState("down", None, self._rejected_reason(plans), False, plans)

    def _storage_gone(self, vm: VirtualMachine) -> str:
        """Why a VM up on a host that is up cannot read a disk (its live storage is all on hosts that are down:
        it read it over a share), or ""."""
        from .planner.ha import unreadable_disks

        def allocations(disk_id: str) -> Sequence[Any]:
            dyn = self.db.get(VirtualStorageDeviceDynamic, disk_id)
            return dyn.allocations if dyn is not None else ()

        def host_up(host_id: str) -> bool:
            host = self.db.get(HostDynamic, host_id)
            return host is not None and host.status is HostStatus.up

        lost = unreadable_disks([link.disk_id for link in vm.disks], allocations, host_up)
        return "; ".join(
            f"disk {self._name(VirtualStorageDevice, disk_id)}'s storage is on "
            + ", ".join(f"{self._name(Host, h)} ({self._status(h)})" for h in hosts)
            + ": its guest cannot read it" for disk_id, hosts in lost)

    def _status(self, host_id: str) -> str:
        host = self.db.get(HostDynamic, host_id)
        return host.status.value if host is not None else "unknown"

    @staticmethod
    def _rejected_reason(plans: VmPlans) -> str:
        plan = plans.rejected
        if plan is None:
            return ""
        return (f"plan {plan.id[:8]} for it was rejected by {plan.decided_by or 'the admin'}: "
                f"start it again (s, or vm start) to have it proposed again")

    def placement_problem(self, vm_id: str) -> str | None:
        """Why no host can take the VM now, or None when one can (the planner proposes it then)."""
        cache = self._status_cache()
        version = cache.facts
        known = cache.placement.get(vm_id)
        if known is not None and known[0] == version:
            return known[1]
        try:
            from .planner.explain import no_host_reason
            from .planner.state import OperationalState

            if cache.state is None or cache.state[0] != version:  # one snapshot for every VM asked
                cache.state = (version, OperationalState.from_store(self.db))
            why = no_host_reason(cache.state[1], vm_id)
        except Exception as error:  # a help, never a reason to lose a screen
            why = f"the planner could not judge: {type(error).__name__}: {error}"
        cache.placement[vm_id] = (version, why)
        return why

    def host_vm_counts(self, host_id: str) -> tuple[int, int]:
        """(VMs running on the host, VMs lost with it): a host that is down runs nothing."""
        running = lost = 0
        for vm_id in self.db.vms_on_host(host_id):
            if self.vm_state(vm_id).status == "lost":
                lost += 1
            else:
                running += 1
        return running, lost

    def store_damage(self) -> list[str]:
        """What a read-only reader of a damaged store could not read (empty: nothing is damaged)."""
        return list(getattr(self.db, "damage", None) or [])

    def disk_users(self, disk_id: str) -> list[str]:
        """Names of the VMs that link the disk (as a disk or a CD-ROM), sorted."""
        return sorted(vm.name for vm in self.db.list(VirtualMachine)
                      if any(link.disk_id == disk_id for link in vm.disks))

    def vm_own_disks(self, vm_id: str) -> list[str]:
        """Ids of the disks only this VM uses, in its order: what ``vm delete --with-disks`` deletes.
        CD-ROMs, images and disks another VM links too are never counted (they outlive the VM)."""
        vm = self.db.get(VirtualMachine, vm_id)
        if vm is None:
            return []
        own = []
        for link in vm.disks:
            disk = self.db.get(VirtualStorageDevice, link.disk_id)
            if link.device == "cdrom" or disk is None or disk.image is not None or link.disk_id in own:
                continue
            if any(v.id != vm_id and any(other.disk_id == link.disk_id for other in v.disks)
                   for v in self.db.list(VirtualMachine)):
                continue
            own.append(link.disk_id)
        return own

    def image_users(self, image_id: str) -> list[str]:
        """Names of the VMs that link the image (as a CD-ROM or a disk)."""
        return self.disk_users(image_id)

    def image_dependants(self, image_id: str) -> list[str]:
        """Disks whose storage depends on a copy of the image: clones made from it as a qcow2 overlay
        with a copy as its backing file (FileAllocation.backing)."""
        out = []
        for dyn in self.db.list(VirtualStorageDeviceDynamic):
            if dyn.id != image_id and any(getattr(a, "backing", None) == image_id for a in dyn.allocations):
                disk = self.db.get(VirtualStorageDevice, dyn.id)
                out.append(disk.name if disk is not None else dyn.id)
        return sorted(out)

    def images(self) -> list[VirtualStorageDevice]:
        """Every image (a read-only disk with image facts), by name."""
        return sorted((d for d in self.db.list(VirtualStorageDevice) if d.image is not None), key=lambda d: d.name)

    # --- a host's detail: what the console and `host show` say of it, derived here only ---------

    def accelerator(self, host_id: str) -> Accelerator | None:
        """How the host runs its guests (kvm or tcg, and why: the admin's ``accel``, or discovery); None
        for no such host."""
        from .hosts.kvm import host_accelerator

        host = self.db.get(Host, host_id)
        return host_accelerator(host) if host is not None else None

    def unusable_storage(self, host_id: str) -> dict[str, str]:
        """The host's storage capabilities that take no new disks (a name kerub-tui never uses: a VG,
        pool or directory of the system's own), each with why: capability id -> reason."""
        from .hosts.storage_names import capability_refusal

        host = self.db.get(Host, host_id)
        caps = host.capabilities if host is not None else None
        return {storage.id: why for storage in (caps.storage if caps is not None else ())
                if (why := capability_refusal(storage.technology, storage.name)) is not None}

    def failing_pvs(self, host_id: str, capability_id: str) -> set[str]:
        """Names of an LVM capability's PVs (as monitoring last saw them, else as discovered) on a device
        whose SMART health failed, the PV's own or its whole disk's."""
        from .planner.state import device_failing

        host = self.db.get(Host, host_id)
        dyn = self.db.get(HostDynamic, host_id)
        storage = next((s for s in host.capabilities.storage if s.id == capability_id), None) \
            if host is not None and host.capabilities is not None else None
        if dyn is None or not dyn.failing_devices or storage is None:
            return set()
        seen = dyn.storage_pvs.get(capability_id)
        disks = {p.name: p.disk for p in storage.pvs}
        failing = dyn.failing_devices
        out = set()
        for pv in seen if seen is not None else storage.pvs:
            disk = pv.disk or disks.get(pv.name)
            if device_failing(pv.name, failing) or (disk is not None and device_failing(disk, failing)):
                out.add(pv.name)
        return out

    def verdicts(self, kind: Literal["vm", "disk"], doc_id: str) -> dict[int, str] | str:
        """The planner's verdict on each expectation of a VM or disk now: {index: reason} for the
        violated ones; a message instead when the planner cannot judge (the verdict is a help, never a
        reason to lose the screen)."""
        try:
            from .planner.checkers import disk_violations, vm_violations
            from .planner.state import OperationalState

            state = OperationalState.from_store(self.db)
            found = (vm_violations if kind == "vm" else disk_violations)(state, doc_id)
        except Exception as error:
            return f"the planner could not judge: {type(error).__name__}: {error}"
        return {v.index: v.reason for v in found}

    # --- the impact of a destructive action, as its confirmation states it ------------------------

    def impact(self, what: str, ids: Sequence[str]) -> list[str]:
        """What ``what`` (one of :data:`IMPACTS`) would do to the documents ``ids``, one line each, then
        what happens next. The console's confirmations show it; the words are the controller's."""
        try:
            lines = getattr(self, "_impact_" + IMPACTS[what])
        except KeyError:
            raise ValueError(f"no impact for {what!r}: one of {', '.join(IMPACTS)}") from None
        return list(lines(list(ids)))

    def _name(self, kind: type[Document], doc_id: str) -> str:
        doc = self.db.get(kind, doc_id)
        return str(getattr(doc, "name", doc_id)) if doc is not None else doc_id[:8]

    def _impact_fence_host(self, ids: list[str]) -> list[str]:
        """High availability: what fencing a host that went away means (the console's confirmation)."""
        impact = []
        for host_id in ids:
            host = self.db.get(Host, host_id)
            dyn = self.db.get(HostDynamic, host_id)
            if host is None:
                continue
            status = dyn.status.value if dyn is not None else "unknown"
            if dyn is not None and dyn.status in (HostStatus.up, HostStatus.key_mismatch):
                impact.append(f"{host.name} is {dyn.status.value}: a host that answers is never fenced (refused)")
                continue
            vms = []
            for vm_id in sorted(self.vms_on_host(host_id)):
                vm = self.db.get(VirtualMachine, vm_id)
                if vm is not None:
                    vms.append(vm.name + (" (ha)" if any(e.type == "ha" for e in vm.expectations) else ""))
            impact.append(f"{host.name} is {status}: kerub-tui cannot see whether it still runs "
                          f"{listed(vms) if vms else 'any guest'}")
            if host.power.ipmi_address is not None:
                impact.append(f"It is powered off now through its BMC ({host.power.ipmi_user or 'root'}@"
                              f"{host.power.ipmi_address}, ipmitool from this controller), and the power read back.")
            else:
                impact.append("It has no IPMI: say yes only if you made sure it is off (power pulled, or gone). If it "
                              "still runs them, two copies of each will write the same disks.")
            impact.append("Its VMs with ha then restart elsewhere (a restart plan); recorded in the audit log with "
                          "your name.")
        return impact

    def _impact_stop_vms(self, ids: list[str]) -> list[str]:
        impact = []
        for vm_id in ids:
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            if dyn is not None and dyn.status is not VmStatus.down:
                impact.append(f"{self._name(VirtualMachine, vm_id)}: {dyn.status.value} on "
                              f"{self._name(Host, dyn.host_id or '')}"
                              " — will be shut down (its guest loses whatever it did not save)")
            else:
                impact.append(f"{self._name(VirtualMachine, vm_id)}: not running; stays down")
        impact.append("The planner proposes the steps; they run once approved.")
        return impact

    def _impact_delete_vms(self, ids: list[str]) -> list[str]:
        impact = []
        for vm_id in ids:
            vm = self.db.get(VirtualMachine, vm_id)
            if vm is None:
                continue
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            own = [self._name(VirtualStorageDevice, d) for d in self.vm_own_disks(vm_id)]
            line = f"{vm.name}: {vm.cpus} vCPU, {format_size(vm.memory_max)}; "
            line += f"its disk(s) {listed(own)} kept, with their data" if own else "no disk of its own"
            if dyn is not None and dyn.status is not VmStatus.down:
                line += f" — {dyn.status.value}: refused until it is stopped"
            impact.append(line)
        impact.append("The VMs are deleted; the disks named above stay in Storage (delete them there, or use "
                      "vm delete --with-disks on the command line).")
        return impact

    def _impact_eject(self, ids: list[str]) -> list[str]:
        impact = []
        for vm_id in ids:
            vm = self.db.get(VirtualMachine, vm_id)
            if vm is None:
                continue
            cdroms = [self._name(VirtualStorageDevice, link.disk_id) for link in vm.disks if link.device == "cdrom"]
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            running = dyn is not None and dyn.status is not VmStatus.down
            impact += [f"{vm.name}: {listed(cdroms)} taken out"
                       + (" of the running guest's drive now" if running else ""),
                       "The next start has no CD-ROM; the boot order stays " + ",".join(vm.boot) + "."]
        return impact

    def _impact_evacuate_hosts(self, ids: list[str]) -> list[str]:
        impact = []
        for host_id in ids:
            vms = sorted(self._name(VirtualMachine, v) for v in self.db.vms_on_host(host_id))
            disks = sorted(self._name(VirtualStorageDevice, d) for d in self.db.disks_on_host(host_id))
            line = f"{self._name(Host, host_id)}: maintenance; "
            line += f"{len(vms)} VM(s) move away ({listed(vms)})" if vms else "no VM to move"
            if disks:
                line += f"; {len(disks)} disk allocation(s) there ({listed(disks)})"
            impact.append(line)
        impact.append("The planner proposes the migrations; once drained the host may be removed.")
        return impact

    def _impact_remove_hosts(self, ids: list[str]) -> list[str]:
        impact = []
        for host_id in ids:
            vms = sorted(self._name(VirtualMachine, v) for v in self.db.vms_on_host(host_id))
            disks = sorted(self._name(VirtualStorageDevice, d) for d in self.db.disks_on_host(host_id))
            line = f"{self._name(Host, host_id)}: disconnected and forgotten with its accepted key"
            if vms:
                line += f"; still runs {len(vms)} VM(s) ({listed(vms)}): evacuate it first"
            if disks:
                line += f"; holds {len(disks)} disk allocation(s) ({listed(disks)})"
            impact.append(line)
        impact.append("Nothing is changed on the host itself.")
        return impact

    def _impact_delete_disks(self, ids: list[str]) -> list[str]:
        impact = []
        for disk_id in ids:
            disk = self.db.get(VirtualStorageDevice, disk_id)
            if disk is None:
                continue
            users = self.disk_users(disk_id)
            dyn = self.db.get(VirtualStorageDeviceDynamic, disk_id)
            line = f"{disk.name}: {format_size(disk.size)}"
            if users:
                line += f"; attached to {listed(users)}: refused until detached"
            elif dyn is not None and dyn.allocations:
                hosts = sorted({self._name(Host, a.host_id) for a in dyn.allocations})
                line += f"; its data on {listed(hosts)} is destroyed by a plan"
            else:
                line += "; not allocated anywhere"
            impact.append(line)
        return impact

    def _impact_delete_image(self, ids: list[str]) -> list[str]:
        impact = []
        for image_id in ids:
            disk = self.db.get(VirtualStorageDevice, image_id)
            if disk is None or disk.image is None:
                continue
            dyn = self.db.get(VirtualStorageDeviceDynamic, disk.id)
            copies = len(dyn.allocations) if dyn else 0
            users = self.image_users(disk.id)
            impact += [f"image {disk.name} ({disk.image.format}, {format_size(disk.image.file_size)}) is forgotten",
                       f"its {copies} copy(ies) on hosts are removed"]
            if users:
                impact.append(f"refused: used by {', '.join(users)}")
        return impact

    def _impact_approve_plan(self, ids: list[str]) -> list[str]:
        impact = []
        for plan_id in ids:
            plan = self.db.get(Plan, plan_id)
            if plan is None:
                continue
            hosts = sorted({self._name(Host, s.host_id) for s in plan.steps if s.host_id})
            commands = sum(len(s.commands) for s in plan.steps)
            impact += [f"{len(plan.steps)} step(s), {commands} command(s) on {listed(hosts) or 'no host'}"]
            impact += [f"{n}. {s.description}" for n, s in enumerate(plan.steps, 1)][:MAX_LISTED]
            impact += [f"Your consent: {line}" for line in plan.consent]
        return impact

    def _impact_always_approve(self, kinds: list[str]) -> list[str]:
        return [line for kind in kinds for line in (
            f"From now on, every plan of kind {kind!r} runs without asking ({kind_text(kind)}).",
            "Except a plan with a step that deletes data: it still asks (d in Settings lets it delete too).",
            "Revoke it any time in Settings (:settings).")]

    # --- the VM actions of an incident (Controller.reboot_vm and friends) -------------------------

    def _vm_lines(self, ids: list[str], running: str, stopped: str, *, up: bool | None = None) -> list[str]:
        """One line per VM: ``running`` (its name, host and expectation filled in) for a running one,
        ``stopped`` for one that is not; ``up`` the availability the action sets (None: unchanged)."""
        out = []
        for vm_id in ids:
            vm = self.db.get(VirtualMachine, vm_id)
            if vm is None:
                continue
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            exp = next((e for e in vm.expectations if e.type == "availability"), None)
            before = "none" if exp is None else ("up" if exp.up else "down") + (",paused" if exp.paused else "")
            if up is None or (exp is not None and exp.up == up and not exp.paused):
                change = f"its expectation stays {before}"
            else:
                change = f"its expectation changes from {before} to {'up' if up else 'down'}"
            on = dyn is not None and dyn.status is not VmStatus.down and dyn.host_id is not None
            template = running if on else stopped
            out.append(template.format(name=vm.name, host=self._name(Host, dyn.host_id or "") if on and dyn else "-",
                                       change=change, status=dyn.status.value if dyn else "down"))
        return out

    def _impact_force_off_vms(self, ids: list[str]) -> list[str]:
        return [*self._vm_lines(
            ids, "Force off {name} on {host}: the guest loses unsaved data; {change}",
            "{name} is not running: {change}", up=False),
            "Like pulling the plug (libvirt destroy); the planner leaves the VM off (vm start brings it back)."]

    def _impact_power_off_vms(self, ids: list[str]) -> list[str]:
        return [*self._vm_lines(
            ids, "Power off {name} on {host}: the guest is asked to shut down (ACPI); {change}",
            "{name} is not running: {change}", up=False),
            "A guest that ignores the power button keeps running: force it off, or approve the planner's stop."]

    def _impact_reset_vms(self, ids: list[str]) -> list[str]:
        return [*self._vm_lines(
            ids, "Reset {name} on {host}: it restarts at once, like its reset button; the guest loses "
                 "unsaved data; {change}", "{name} is {status}: nothing to reset (refused)"),
            "The guest's disks stay; what it had not written is lost."]

    def _impact_reboot_vms(self, ids: list[str]) -> list[str]:
        return [*self._vm_lines(
            ids, "Reboot {name} on {host}: the guest is asked to restart (ACPI); {change}",
            "{name} is {status}: nothing to reboot (refused)"),
            "A guest that does not answer ACPI keeps running: reset it instead."]

    def _impact_send_keys(self, ids: list[str]) -> list[str]:
        return [*self._vm_lines(
            ids, "Keys to {name} on {host}: pressed on its keyboard now, as if typed at it; {change}",
            "{name} is {status}: no keyboard to press them on (refused)"),
            "ctrl+alt+del reboots most guests (what they had not written may be lost); other keys do what "
            "the guest makes of them."]


# The impacts there are (the confirmations of the console), by the name the console asks for.
IMPACTS = {
    "stop VMs": "stop_vms", "delete VMs": "delete_vms", "eject": "eject", "evacuate hosts": "evacuate_hosts",
    "remove hosts": "remove_hosts", "delete disks": "delete_disks", "delete image": "delete_image",
    "approve plan": "approve_plan", "always approve": "always_approve",
}
IMPACTS.update({"force off VMs": "force_off_vms", "power off VMs": "power_off_vms", "reset VMs": "reset_vms",
                "reboot VMs": "reboot_vms", "fence host": "fence_host"})
IMPACTS.update({"send keys": "send_keys"})


class StoreView(StoreQueries):
    """The queries over a store of one's own (tests, benchmarks, a read-only snapshot)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def db(self) -> Store:
        return self._store
