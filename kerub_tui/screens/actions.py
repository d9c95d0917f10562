"""The console's actions on documents: one place, shared by tables, detail screens and the palette.

Each one asks the API whether read-only mode allows it (kerub_tui.api.refusal, through the app),
states the impact of anything destructive in a confirmation modal (the words come from the
controller's ``impact`` query), then runs the API call in a named worker so the screen never blocks;
a refusal from the controller (ActionError) is shown as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from textual.binding import Binding, BindingType

from ..api import ActionError, ConsoleAPI
from ..api import listed as _names
from ..core.keys import InvalidKeys
from ..core.keys import canonical as canonical_keys
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
from .prompt import PromptScreen

KEYS_HINT = "key combinations to press, e.g. ctrl+alt+del or ctrl+alt+f2 (space between combinations)"
KEY_SUGGESTIONS = ("ctrl+alt+del", "ctrl+alt+f1", "ctrl+alt+f2", "ctrl+alt+f7", "alt+sysrq+s", "alt+sysrq+b",
                   "enter", "esc")

if TYPE_CHECKING:
    from textual.message_pump import MessagePump

    from ..app import KerubApp


def actions_of(node: MessagePump) -> ConsoleActions:
    """The console's actions (``KerubApp.actions``) seen from a widget, typed: the app is found at run
    time, never imported (screens do not depend on app.py)."""
    actions = getattr(node.app, "actions", None)
    if not isinstance(actions, ConsoleActions):
        raise TypeError(f"{type(node.app).__name__} is not the kerub-tui console: it has no ConsoleActions")
    return actions



def incident_bindings(prefix: str) -> list[BindingType]:
    """The VM actions of an incident, the same keys on the VMs pane (``vms.``) and a VM's detail (``vm.``):
    each table or screen calls the like-named ConsoleActions method on its VM(s)."""
    return [
        Binding("ctrl+k", "force_off", "Force off", id=f"{prefix}.force_off"),
        Binding("p", "poweroff", "Power off (ACPI)", show=False, id=f"{prefix}.poweroff"),
        Binding("r", "reboot", "Reboot (ACPI)", show=False, id=f"{prefix}.reboot"),
        Binding("R", "reset", "Reset", show=False, id=f"{prefix}.reset"),
        Binding("z", "pause", "Pause", show=False, id=f"{prefix}.pause"),
        Binding("Z", "resume", "Resume", show=False, id=f"{prefix}.resume"),
        Binding("x", "send_keys", "Send keys (ctrl+alt+del...)", show=False, id=f"{prefix}.send_keys"),
    ]

class ConsoleActions:
    """The console's actions on documents (the app's ``actions``): confirm, then call the API in a worker."""

    def __init__(self, app: KerubApp) -> None:
        self.app = app

    @property
    def controller(self) -> ConsoleAPI:
        return self.app.controller

    def edit_vm(self, vm_id: str | None) -> None:
        """The VM editor (None: a new VM), unless read-only mode refuses it."""
        self.app.open_vm_editor(vm_id)

    def edit_disk(self, disk_id: str | None) -> None:
        """The disk editor (None: a new disk), unless read-only mode refuses it."""
        self.app.open_disk_editor(disk_id)

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

    # --- VM actions of an incident: on the running domain at once (Controller.reboot_vm and friends) --

    def _told(self, label: str, action: str, ids: Sequence[str], call: Callable[[str], Awaitable[str]]) -> None:
        """Like ``_each``, but the notification is what the controller said of each VM (what it did to
        the VM and to its expectation), one line each."""
        if not ids or self.app.refuse_readonly(label, action):
            return

        async def run() -> list[str]:
            said, refused = [], []
            for doc_id in ids:
                try:
                    said.append(await call(doc_id))
                except ActionError as error:
                    refused.append(str(error))
            if refused:
                raise ActionError("; ".join(refused) + (f" (done: {'; '.join(said)})" if said else ""))
            return said

        self.app.perform(label, run, action=action, done_message=lambda lines: "\n".join(lines))

    def _vm_title(self, verb: str, ids: Sequence[str]) -> str:
        return f"{verb} {self._vm_name(ids[0])}?" if len(ids) == 1 else f"{verb} {len(ids)} VMs?"

    def force_off_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        """Pull the plug (libvirt destroy) and expect the VMs down, after a confirmation stating both."""
        if not ids or self.app.refuse_readonly("force off", "poweroff_vm"):
            return
        self._confirm(self._vm_title("Force off", ids),
                      self._left_alone(self.controller.impact("force off VMs", ids), hidden, "VM"),
                      lambda: self._told("force off", "poweroff_vm", ids,
                                         lambda i: self.controller.poweroff_vm(i, force=True)),
                      label="Force off")

    def poweroff_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        """Ask the guests to power off (ACPI) and expect the VMs down, after a confirmation."""
        if not ids or self.app.refuse_readonly("power off", "poweroff_vm"):
            return
        self._confirm(self._vm_title("Power off", ids),
                      self._left_alone(self.controller.impact("power off VMs", ids), hidden, "VM"),
                      lambda: self._told("power off", "poweroff_vm", ids, self.controller.poweroff_vm),
                      label="Power off")

    def reset_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("reset", "reset_vm"):
            return
        self._confirm(self._vm_title("Reset", ids),
                      self._left_alone(self.controller.impact("reset VMs", ids), hidden, "VM"),
                      lambda: self._told("reset", "reset_vm", ids, self.controller.reset_vm), label="Reset")

    def reboot_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if not ids or self.app.refuse_readonly("reboot", "reboot_vm"):
            return
        self._confirm(self._vm_title("Reboot", ids),
                      self._left_alone(self.controller.impact("reboot VMs", ids), hidden, "VM"),
                      lambda: self._told("reboot", "reboot_vm", ids, self.controller.reboot_vm),
                      label="Reboot", danger=False)

    def pause_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        """Pause at once (undone by resume, so no confirmation); the planner leaves them paused."""
        if hidden and ids:
            self.app.notify(self._left_alone([], hidden, "VM")[0], title="pause", severity="warning")
        self._told("pause", "pause_vm", ids, self.controller.pause_vm)

    def resume_vms(self, ids: Sequence[str], *, hidden: int = 0) -> None:
        if hidden and ids:
            self.app.notify(self._left_alone([], hidden, "VM")[0], title="resume", severity="warning")
        self._told("resume", "resume_vm", ids, self.controller.resume_vm)

    def send_keys(self, vm_id: str | None) -> None:
        """Ask for key combinations (ctrl+alt+del offered), then press them on the VM's keyboard."""
        if vm_id is None or self.app.refuse_readonly("send keys", "send_keys"):
            return
        name = self._vm_name(vm_id)

        def preview(text: str) -> str:
            combos = text.split()
            if not combos:
                return KEYS_HINT
            try:
                return f"→ {canonical_keys(combos)} to {name}  ⏎"
            except InvalidKeys as error:
                return str(error)

        def entered(text: str | None) -> None:
            combos = (text or "").split()
            if not combos:
                return

            def send() -> None:
                self._told("send keys", "send_keys", [vm_id], lambda i: self.controller.send_keys(i, combos))

            try:
                shown = canonical_keys(combos)
            except InvalidKeys:  # the API refuses them in one line: nothing to confirm for keys never sent
                send()
                return
            # ctrl+alt+del reboots most guests: confirmed with its impact, like reboot and reset
            self._confirm(f"Send {shown} to {name}?", self.controller.impact("send keys", [vm_id]), send,
                          label="Send", danger=False)

        self.app.push_screen(PromptScreen("keys ", "ctrl+alt+del", suggestions=KEY_SUGGESTIONS, hint=KEYS_HINT,
                                          prompt_id="keys-prompt", preview=preview,
                                          history=self.app.prompt_history.setdefault("keys", [])), entered)

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

        def failed(message: str) -> None:
            # No display here: the key of the serial console in this terminal, not the command line's flag.
            head, said, _ = message.partition("; without a display, kerub-tui console")
            if said:
                message = f"{head}; without a display, {self.app.key_for('vms.serial')} opens its serial console here"
            self.app.notify(message, title=f"console {name}", severity="error", timeout=15)

        self.app.perform(f"console {name}", run, action="open_console", done_message=lambda text: str(text),
                         on_error=failed)

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

    def fence_host(self, host_id: str | None) -> None:
        """High availability: a host that went away is fenced (powered off through its BMC, or confirmed off
        by the admin), so its VMs with ha restart elsewhere. Confirmed with what it means."""
        if host_id is None or self.app.refuse_readonly("fence", "fence_host"):
            return
        host = self.controller.get(Host, host_id)
        if host is None:
            return
        ipmi = host.power.ipmi_address is not None
        self._confirm(f"Power {host.name} off through IPMI?" if ipmi else f"Confirm {host.name} is off?",
                      self.controller.impact("fence host", [host_id]),
                      lambda: self._each("fence", "fence_host", [host_id],
                                         lambda i: self.controller.fence_host(i, confirm_off=not ipmi),
                                         self._host_name),
                      label="Power off" if ipmi else "It is off")

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

    def auto_approve_deletions(self, plan_kind: str, deletes: bool) -> None:
        """Let a kind's policy cover plans that delete data too (asked first), or stop it (at once)."""
        if self.app.refuse_readonly("auto-approve deletions", "set_auto_approve"):
            return

        def run() -> None:
            self._each("auto-approve", "set_auto_approve", [plan_kind],
                       lambda k: self.controller.set_auto_approve(k, True, deletes=deletes), str)

        if not deletes:
            run()
            return
        self._confirm(f"Let {plan_kind} plans delete data without asking?",
                      [f"From now on, a {plan_kind} plan with a step that deletes data (an LV, an image file, a "
                       "cloud-init seed, the source of a moved disk) runs without asking too.",
                       "d again takes it back; ctrl+d revokes the whole policy."],
                      run, label="Allow deletions")

    def revoke_auto_approve(self, plan_kind: str) -> None:
        self._each("revoke auto-approve", "set_auto_approve", [plan_kind],
                   lambda k: self.controller.set_auto_approve(k, False), str)
