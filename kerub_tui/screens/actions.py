"""The console's actions on documents: one place, shared by tables, detail screens and the palette.

Each one checks read-only mode first, states the impact of anything destructive in a confirmation
modal, then runs the controller call in a named worker so the screen never blocks; a refusal from
the controller (ActionError) is shown as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..core.models import (
    Host,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VirtualStorageDeviceDynamic,
    VmStatus,
)
from ..core.sizes import format_size
from .confirm import ConfirmScreen

if TYPE_CHECKING:
    from ..app import KerubApp

MAX_LISTED = 8


def _names(items: Sequence[str]) -> str:
    if len(items) <= MAX_LISTED:
        return ", ".join(items)
    return ", ".join(items[:MAX_LISTED]) + f" and {len(items) - MAX_LISTED} more"


class Operations:
    def __init__(self, app: "KerubApp") -> None:
        self.app = app

    @property
    def db(self) -> Any:
        return self.app.controller.db

    @property
    def controller(self) -> Any:
        return self.app.controller

    def _confirm(self, title: str, impact: Sequence[str], then: Callable[[], None], *,
                 label: str = "Yes", danger: bool = True) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(ConfirmScreen(title, impact, confirm_label=label, danger=danger), answered)

    def _each(self, label: str, ids: Sequence[str], call: Callable[[str], Awaitable[Any]],
              describe: Callable[[str], str]) -> None:
        """Run ``call`` on every id in one worker; report what worked and what was refused."""
        if not ids or self.app.refuse_readonly(label):
            return

        async def run() -> list[str]:
            from ..controller import ActionError

            done, refused = [], []
            for doc_id in ids:
                name = describe(doc_id)  # before the call: a deleted document has no name after it
                try:
                    await call(doc_id)
                    done.append(name)
                except ActionError as error:
                    refused.append(str(error))
            if refused:
                raise ActionError("; ".join(refused) + (f" (done: {_names(done)})" if done else ""))
            return done

        self.app.perform(label, run, done_message=lambda names: f"{label}: {_names(names)}")

    def _vm_name(self, vm_id: str) -> str:
        vm = self.db.get(VirtualMachine, vm_id)
        return vm.name if vm else vm_id[:8]

    def _host_name(self, host_id: str) -> str:
        host = self.db.get(Host, host_id)
        return host.name if host else host_id[:8]

    def _disk_name(self, disk_id: str) -> str:
        disk = self.db.get(VirtualStorageDevice, disk_id)
        return disk.name if disk else disk_id[:8]

    # --- VMs ----------------------------------------------------------------------------------

    def start_vms(self, ids: Sequence[str]) -> None:
        self._each("start", ids, lambda i: self.controller.set_vm_availability(i, True), self._vm_name)

    def stop_vms(self, ids: Sequence[str]) -> None:
        if not ids or self.app.refuse_readonly("stop"):
            return
        impact = []
        for vm_id in ids:
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            if dyn is not None and dyn.status is not VmStatus.down:
                impact.append(f"{self._vm_name(vm_id)}: {dyn.status.value} on {self._host_name(dyn.host_id or '')}"
                              " — will be shut down (its guest loses whatever it did not save)")
            else:
                impact.append(f"{self._vm_name(vm_id)}: not running; stays down")
        impact.append("The planner proposes the steps; they run once approved.")
        self._confirm(f"Stop {len(ids)} VM(s)?", impact,
                      lambda: self._each("stop", ids, lambda i: self.controller.set_vm_availability(i, False),
                                         self._vm_name), label="Stop")

    def delete_vms(self, ids: Sequence[str]) -> None:
        if not ids or self.app.refuse_readonly("delete VMs"):
            return
        impact = []
        for vm_id in ids:
            vm = self.db.get(VirtualMachine, vm_id)
            if vm is None:
                continue
            dyn = self.db.get(VirtualMachineDynamic, vm_id)
            line = f"{vm.name}: {vm.cpus} vCPU, {format_size(vm.memory_max)}, {len(vm.disks)} disk(s) kept"
            if dyn is not None and dyn.status is not VmStatus.down:
                line += f" — {dyn.status.value}: refused until it is stopped"
            impact.append(line)
        impact.append("The VM documents are deleted; their disks stay (delete them in Storage).")
        self._confirm(f"Delete {len(ids)} VM(s)?", impact,
                      lambda: self._each("delete VMs", ids, self.controller.delete_vm, self._vm_name),
                      label="Delete")

    def eject_vm(self, vm_id: str) -> None:
        """Take the ISO images out of the VM's CD-ROMs (live too when it runs), after a confirmation."""
        if self.app.refuse_readonly("eject"):
            return
        vm = self.db.get(VirtualMachine, vm_id)
        if vm is None:
            return
        cdroms = [self._disk_name(link.disk_id) for link in vm.disks if link.device == "cdrom"]
        if not cdroms:
            self.app.refuse("eject", f"VM {vm.name} has no CD-ROM")
            return
        dyn = self.db.get(VirtualMachineDynamic, vm_id)
        running = dyn is not None and dyn.status is not VmStatus.down
        impact = [f"{vm.name}: {_names(cdroms)} taken out" + (" of the running guest's drive now" if running else ""),
                  "The next start has no CD-ROM; the boot order stays " + ",".join(vm.boot) + "."]
        self._confirm(f"Eject the CD-ROM of {vm.name}?", impact,
                      lambda: self._each("eject", [vm_id], self.controller.eject_vm, self._vm_name),
                      label="Eject", danger=False)

    def open_console(self, vm_id: str | None) -> None:
        if vm_id is None:
            return
        dyn = self.db.get(VirtualMachineDynamic, vm_id)
        name = self._vm_name(vm_id)
        if dyn is None or dyn.status is not VmStatus.up:
            self.app.refuse("console", f"VM {name} is not running: its console opens once it is up")
            return

        async def run() -> str:
            return await self.controller.open_console(vm_id)

        # Opening a console changes nothing, so read-only mode allows it.
        self.app.perform(f"console {name}", run, done_message=lambda text: str(text), mutating=False)

    # --- hosts --------------------------------------------------------------------------------

    def evacuate_hosts(self, ids: Sequence[str]) -> None:
        if not ids or self.app.refuse_readonly("evacuate"):
            return
        impact = []
        for host_id in ids:
            vms = sorted(self._vm_name(v) for v in self.db.vms_on_host(host_id))
            disks = sorted(self._disk_name(d) for d in self.db.disks_on_host(host_id))
            line = f"{self._host_name(host_id)}: maintenance; "
            line += f"{len(vms)} VM(s) move away ({_names(vms)})" if vms else "no VM to move"
            if disks:
                line += f"; {len(disks)} disk allocation(s) there ({_names(disks)})"
            impact.append(line)
        impact.append("The planner proposes the migrations; once drained the host may be removed.")
        self._confirm(f"Evacuate {len(ids)} host(s)?", impact,
                      lambda: self._each("evacuate", ids, self.controller.evacuate_host, self._host_name),
                      label="Evacuate")

    def remove_hosts(self, ids: Sequence[str]) -> None:
        if not ids or self.app.refuse_readonly("remove hosts"):
            return
        impact = []
        for host_id in ids:
            vms = sorted(self._vm_name(v) for v in self.db.vms_on_host(host_id))
            disks = sorted(self._disk_name(d) for d in self.db.disks_on_host(host_id))
            line = f"{self._host_name(host_id)}: disconnected and forgotten with its accepted key"
            if vms:
                line += f"; still runs {len(vms)} VM(s) ({_names(vms)}): evacuate it first"
            if disks:
                line += f"; holds {len(disks)} disk allocation(s) ({_names(disks)})"
            impact.append(line)
        impact.append("Nothing is changed on the host itself.")
        self._confirm(f"Remove {len(ids)} host(s)?", impact,
                      lambda: self._each("remove hosts", ids, self.controller.remove_host, self._host_name),
                      label="Remove")

    def rediscover_host(self, host_id: str | None) -> None:
        """Read the host's facts again now (Controller.rediscover_host)."""
        host = self.db.get(Host, host_id) if host_id else None
        if host is None:
            return

        def said(h: Host) -> str:
            stale = sorted(s.section for s in h.capabilities.stale) if h.capabilities is not None else []
            return f"{h.name}: still stale: {', '.join(stale)}" if stale else f"{h.name}: every fact read"

        self.app.perform(f"rediscover {host.name}", lambda: self.controller.rediscover_host(host.id),
                         done_message=said)

    def rekey_host(self, host_id: str | None) -> None:
        """Fetch the key the host presents now and, if the admin confirms it against the fingerprint
        checked out of band, accept it (Controller.rekey_host: audited, reconnects, rediscovers)."""
        host = self.db.get(Host, host_id) if host_id else None
        if host is None or self.app.refuse_readonly("accept host key"):
            return
        if host.simulated:
            self.app.refuse("accept host key", f"{host.name} is a simulated host: it has no host key")
            return

        def confirm(offered: tuple[str, str]) -> None:
            new = offered[1]
            if new == host.fingerprint:
                self.app.notify(f"{host.name} presents its accepted key {new}: nothing to accept",
                                title="accept host key")
                return
            impact = [f"accepted now: {host.fingerprint or '-'}", f"presented now: {new}",
                      "Accept only if the new fingerprint is the one you checked on the host itself "
                      "(ssh-keygen -lf on its host key); kerub-tui then reconnects and discovers it again."]
            self._confirm(f"Accept the new host key of {host.name}?", impact,
                          lambda: self.app.perform(f"accept host key of {host.name}",
                                                   lambda: self.controller.rekey_host(host.id, new),
                                                   done_message=lambda h: f"{h.name}: new key {h.fingerprint} "
                                                                          "accepted; connected and discovered"),
                          label="Accept")

        self.app.perform(f"fetch host key of {host.name}",
                         lambda: self.controller.fetch_host_key(host.address, host.port),
                         mutating=False, after=confirm)

    # --- disks --------------------------------------------------------------------------------

    def delete_disks(self, ids: Sequence[str]) -> None:
        if not ids or self.app.refuse_readonly("delete disks"):
            return
        impact = []
        for disk_id in ids:
            disk = self.db.get(VirtualStorageDevice, disk_id)
            if disk is None:
                continue
            users = sorted(v.name for v in self.db.list(VirtualMachine) if any(l.disk_id == disk_id for l in v.disks))
            dyn = self.db.get(VirtualStorageDeviceDynamic, disk_id)
            line = f"{disk.name}: {format_size(disk.size)}"
            if users:
                line += f"; attached to {_names(users)}: refused until detached"
            elif dyn is not None and dyn.allocations:
                hosts = sorted({self._host_name(a.host_id) for a in dyn.allocations})
                line += f"; its data on {_names(hosts)} is destroyed by a plan"
            else:
                line += "; not allocated anywhere"
            impact.append(line)
        self._confirm(f"Delete {len(ids)} disk(s)?", impact,
                      lambda: self._each("delete disks", ids, self.controller.delete_disk, self._disk_name),
                      label="Delete")

    # --- plans --------------------------------------------------------------------------------

    def approve_plan(self, plan_id: str) -> None:
        plan: Plan | None = self.db.get(Plan, plan_id)
        if plan is None or self.app.refuse_readonly("approve"):
            return
        if plan.status is not PlanStatus.proposed:
            self.app.refuse("approve", f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
            return
        hosts = sorted({self._host_name(s.host_id) for s in plan.steps if s.host_id})
        commands = sum(len(s.commands) for s in plan.steps)
        impact = [f"{len(plan.steps)} step(s), {commands} command(s) on {_names(hosts) or 'no host'}"]
        impact += [f"{n}. {s.description}" for n, s in enumerate(plan.steps, 1)][:MAX_LISTED]
        self._confirm(f"Approve plan {plan.id[:8]} ({plan.plan_kind})?", impact,
                      lambda: self._each("approve", [plan_id], lambda i: self.controller.decide_plan(i, True),
                                         lambda i: i[:8]),
                      label="Approve", danger=False)

    def reject_plan(self, plan_id: str) -> None:
        self._each("reject", [plan_id], lambda i: self.controller.decide_plan(i, False), lambda i: i[:8])

    def always_approve(self, plan_kind: str) -> None:
        if self.app.refuse_readonly("always approve"):
            return
        impact = [f"From now on, every plan of kind {plan_kind!r} runs without asking.",
                  "Revoke it any time in Settings (:settings)."]
        self._confirm(f"Always approve {plan_kind} plans?", impact,
                      lambda: self._each("auto-approve", [plan_kind],
                                         lambda k: self.controller.set_auto_approve(k, True), str),
                      label="Always approve")

    def revoke_auto_approve(self, plan_kind: str) -> None:
        self._each("revoke auto-approve", [plan_kind],
                   lambda k: self.controller.set_auto_approve(k, False), str)
