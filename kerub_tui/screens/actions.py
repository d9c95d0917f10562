"""The console's actions on documents: one place, shared by tables, detail screens and the palette.

Each one asks the API whether read-only mode allows it (kerub_tui.api.refusal, through the app),
states the impact of anything destructive in a confirmation modal (the words come from the
controller's ``impact`` query), then runs the API call in a named worker so the screen never blocks;
a refusal from the controller (ActionError) is shown as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..api import ActionError, ConsoleAPI
from ..api import listed as _names
from ..core.models import (
    Host,
    Plan,
    PlanStatus,
    VirtualMachine,
    VirtualMachineDynamic,
    VirtualStorageDevice,
    VmStatus,
)
from .confirm import ConfirmScreen

if TYPE_CHECKING:
    from ..app import KerubApp


class ConsoleActions:
    """The console's actions on documents (the app's ``actions``): confirm, then call the API in a worker."""

    def __init__(self, app: KerubApp) -> None:
        self.app = app

    @property
    def controller(self) -> ConsoleAPI:
        return self.app.controller

    def _confirm(self, title: str, impact: Sequence[str], then: Callable[[], None], *,
                 label: str = "Yes", danger: bool = True) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                then()

        self.app.push_screen(ConfirmScreen(title, impact, confirm_label=label, danger=danger), answered)

    @staticmethod
    def _left_alone(impact: Sequence[str], hidden: int, noun: str) -> list[str]:
        """The impact, and how many marked rows the filter hides (a bulk action leaves them alone)."""
        if not hidden:
            return list(impact)
        return [*impact, f"{hidden} marked {noun}(s) hidden by the filter: left alone (esc clears the filter)"]

    def _each(self, label: str, action: str, ids: Sequence[str], call: Callable[[str], Awaitable[Any]],
              describe: Callable[[str], str]) -> None:
        """Run ``call`` (the API's ``action``) on every id in one worker; report what worked and what
        was refused."""
        if not ids or self.app.refuse_readonly(label, action):
            return

        async def run() -> list[str]:
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

        self.app.perform(label, run, action=action, done_message=lambda names: f"{label}: {_names(names)}")

    def _name(self, kind: type[Host | VirtualMachine | VirtualStorageDevice], doc_id: str) -> str:
        doc = self.controller.get(kind, doc_id)
        return doc.name if doc else doc_id[:8]

    def _vm_name(self, vm_id: str) -> str:
        return self._name(VirtualMachine, vm_id)

    def _host_name(self, host_id: str) -> str:
        return self._name(Host, host_id)

    def _disk_name(self, disk_id: str) -> str:
        return self._name(VirtualStorageDevice, disk_id)

    # --- VMs ----------------------------------------------------------------------------------

    def start_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("start", "set_vm_availability"):
            return
        if hidden:
            self.app.notify(self._left_alone([], hidden, "VM")[0], title="start", severity="warning")
        self._each("start", "set_vm_availability", ids, lambda i: self.controller.set_vm_availability(i, True),
                   self._vm_name)

    def stop_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("stop", "set_vm_availability"):
            return
        self._confirm(f"Stop {len(ids)} VM(s)?",
                      self._left_alone(self.controller.impact("stop VMs", ids), hidden, "VM"),
                      lambda: self._each("stop", "set_vm_availability", ids,
                                         lambda i: self.controller.set_vm_availability(i, False), self._vm_name),
                      label="Stop")

    def delete_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("delete VMs", "delete_vm"):
            return
        self._confirm(f"Delete {len(ids)} VM(s)?",
                      self._left_alone(self.controller.impact("delete VMs", ids), hidden, "VM"),
                      lambda: self._each("delete VMs", "delete_vm", ids,
                                         lambda i: self.controller.delete_vm(i, disks="keep"), self._vm_name),
                      label="Delete")

    def eject_vm(self, vm_id: str) -> None:
        """Take the ISO images out of the VM's CD-ROMs (live too when it runs), after a confirmation."""
        if self.app.refuse_readonly("eject", "eject_vm"):
            return
        vm = self.controller.get(VirtualMachine, vm_id)
        if vm is None:
            return
        if not any(link.device == "cdrom" for link in vm.disks):
            self.app.refuse("eject", f"VM {vm.name} has no CD-ROM")
            return
        self._confirm(f"Eject the CD-ROM of {vm.name}?", self.controller.impact("eject", [vm_id]),
                      lambda: self._each("eject", "eject_vm", [vm_id], self.controller.eject_vm, self._vm_name),
                      label="Eject", danger=False)

    def open_console(self, vm_id: str | None) -> None:
        if vm_id is None:
            return
        dyn = self.controller.get(VirtualMachineDynamic, vm_id)
        name = self._vm_name(vm_id)
        if dyn is None or dyn.status is not VmStatus.up:
            self.app.refuse("console", f"VM {name} is not running: its console opens once it is up")
            return

        async def run() -> str:
            return await self.controller.open_console(vm_id)

        self.app.perform(f"console {name}", run, action="open_console", done_message=lambda text: str(text))

    # --- hosts --------------------------------------------------------------------------------

    def evacuate_hosts(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("evacuate", "evacuate_host"):
            return
        self._confirm(f"Evacuate {len(ids)} host(s)?",
                      self._left_alone(self.controller.impact("evacuate hosts", ids), hidden, "host"),
                      lambda: self._each("evacuate", "evacuate_host", ids, self.controller.evacuate_host,
                                         self._host_name),
                      label="Evacuate")

    def remove_hosts(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("remove hosts", "remove_host"):
            return
        self._confirm(f"Remove {len(ids)} host(s)?",
                      self._left_alone(self.controller.impact("remove hosts", ids), hidden, "host"),
                      lambda: self._each("remove hosts", "remove_host", ids, self.controller.remove_host,
                                         self._host_name),
                      label="Remove")

    def rediscover_host(self, host_id: str | None) -> None:
        """Read the host's facts again now (Controller.rediscover_host)."""
        host = self.controller.get(Host, host_id) if host_id else None
        if host is None or self.app.refuse_readonly("rediscover", "rediscover_host"):
            return

        def said(h: Host) -> str:
            stale = sorted(s.section for s in h.capabilities.stale) if h.capabilities is not None else []
            return f"{h.name}: still stale: {', '.join(stale)}" if stale else f"{h.name}: every fact read"

        self.app.perform(f"rediscover {host.name}", lambda: self.controller.rediscover_host(host.id),
                         action="rediscover_host", done_message=said)

    def rekey_host(self, host_id: str | None) -> None:
        """Fetch the key the host presents now and, if the admin confirms it against the fingerprint
        checked out of band, accept it (Controller.rekey_host: audited, reconnects, rediscovers)."""
        host = self.controller.get(Host, host_id) if host_id else None
        if host is None or self.app.refuse_readonly("accept host key", "rekey_host"):
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
                                                   action="rekey_host",
                                                   done_message=lambda h: f"{h.name}: new key {h.fingerprint} "
                                                                          "accepted; connected and discovered"),
                          label="Accept")

        self.app.perform(f"fetch host key of {host.name}",
                         lambda: self.controller.fetch_host_key(host.address, host.port),
                         action="fetch_host_key", after=confirm)

    # --- disks --------------------------------------------------------------------------------

    def delete_disks(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("delete disks", "delete_disk"):
            return
        self._confirm(f"Delete {len(ids)} disk(s)?",
                      self._left_alone(self.controller.impact("delete disks", ids), hidden, "disk"),
                      lambda: self._each("delete disks", "delete_disk", ids, self.controller.delete_disk,
                                         self._disk_name),
                      label="Delete")

    # --- plans --------------------------------------------------------------------------------

    def approve_plan(self, plan_id: str) -> None:
        plan = self.controller.get(Plan, plan_id)
        if plan is None or self.app.refuse_readonly("approve", "decide_plan"):
            return
        if plan.status is not PlanStatus.proposed:
            self.app.refuse("approve", f"plan {plan.id[:8]} is {plan.status.value}, not proposed")
            return
        self._confirm(f"Approve plan {plan.id[:8]} ({plan.plan_kind})?",
                      self.controller.impact("approve plan", [plan_id]),
                      lambda: self._each("approve", "decide_plan", [plan_id],
                                         lambda i: self.controller.decide_plan(i, True), lambda i: i[:8]),
                      label="Approve", danger=False)

    def reject_plan(self, plan_id: str) -> None:
        self._each("reject", "decide_plan", [plan_id], lambda i: self.controller.decide_plan(i, False),
                   lambda i: i[:8])

    def always_approve(self, plan_kind: str) -> None:
        if self.app.refuse_readonly("always approve", "set_auto_approve"):
            return
        self._confirm(f"Always approve {plan_kind} plans?", self.controller.impact("always approve", [plan_kind]),
                      lambda: self._each("auto-approve", "set_auto_approve", [plan_kind],
                                         lambda k: self.controller.set_auto_approve(k, True), str),
                      label="Always approve")

    def revoke_auto_approve(self, plan_kind: str) -> None:
        self._each("revoke auto-approve", "set_auto_approve", [plan_kind],
                   lambda k: self.controller.set_auto_approve(k, False), str)
