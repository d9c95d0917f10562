"""The console API's queries, written once over a store: the controller's own, or the live mirror an
attached console keeps of it (``RemoteController``). They read and change nothing.

The console asks these instead of reaching into the store or running the planner itself.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Literal, TypeVar

from .api import MAX_LISTED, listed
from .core.models import (
    Document,
    Host,
    Plan,
    Settings,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from .core.sizes import format_size
from .core.store import Store

D = TypeVar("D", bound=Document)


class StoreQueries:
    """Mixed into both controllers; ``db`` is the store the queries read."""

    @property
    @abstractmethod
    def db(self) -> Store:
        """The store of the controller this is mixed into (each controller defines it)."""

    def get(self, kind: type[D], doc_id: str) -> D | None:
        return self.db.get(kind, doc_id)

    def documents(self, kind: type[D]) -> list[D]:
        return self.db.list(kind)

    def find_by_name(self, kind: type[D], name: str) -> D | None:
        return self.db.find_by_name(kind, name)

    def vms_on_host(self, host_id: str) -> set[str]:
        return self.db.vms_on_host(host_id)

    def disks_on_host(self, host_id: str) -> set[str]:
        return self.db.disks_on_host(host_id)

    def host_of_vm(self, vm_id: str) -> str | None:
        return self.db.host_of_vm(vm_id)

    def settings(self) -> Settings:
        return self.db.get(Settings, "settings") or Settings()

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
        return impact

    def _impact_always_approve(self, kinds: list[str]) -> list[str]:
        return [line for kind in kinds for line in (
            f"From now on, every plan of kind {kind!r} runs without asking.",
            "Revoke it any time in Settings (:settings).")]


# The impacts there are (the confirmations of the console), by the name the console asks for.
IMPACTS = {
    "stop VMs": "stop_vms", "delete VMs": "delete_vms", "eject": "eject", "evacuate hosts": "evacuate_hosts",
    "remove hosts": "remove_hosts", "delete disks": "delete_disks", "delete image": "delete_image",
    "approve plan": "approve_plan", "always approve": "always_approve",
}


class StoreView(StoreQueries):
    """The queries over a store of one's own (tests, benchmarks, a read-only snapshot)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @property
    def db(self) -> Store:
        return self._store
